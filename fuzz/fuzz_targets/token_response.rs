//! Any bytes as a token endpoint answer: parsed, or refused, never a panic;
//! what is accepted is a usable bearer token.
#![no_main]

use libfuzzer_sys::fuzz_target;
use oidc_bff_tokens::provider::TokenResponse;

fuzz_target!(|data: &[u8]| {
    if let Ok(response) = TokenResponse::from_json(data) {
        assert!(!response.access_token.secret().is_empty());
        assert_eq!(response.token_type, "Bearer");
    }
});
