//! Any bytes as the provider's discovery document: parsed and checked
//! against the configured issuer, or refused, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use oidc_bff_tokens::discovery::ProviderMetadata;

fuzz_target!(|data: &[u8]| {
    for issuer in ["https://idp.example", "https://idp.example/realms/a/"] {
        if let Ok(metadata) = ProviderMetadata::from_json(data, issuer) {
            let _ = metadata.prefers_basic_auth();
        }
    }
});
