//! Any bytes as the provider's JWKS document, fetched over loopback by the
//! real `JwksCache`: unusable keys are skipped, a bad document is an error,
//! never a panic. Then key look-ups for tokens of every algorithm.
#![no_main]

use std::time::Duration;

use jsonwebtoken::{Algorithm, Header};
use libfuzzer_sys::fuzz_target;
use oidc_bff_fuzz::fixture;
use oidc_bff_tokens::jwks::JwksCache;

const ALGS: [Algorithm; 8] = [
    Algorithm::RS256,
    Algorithm::PS256,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
    Algorithm::RS512,
    Algorithm::HS256,
    Algorithm::PS512,
];

fuzz_target!(|data: &[u8]| {
    let f = fixture();
    f.serve(data);
    let cache = JwksCache::new(
        f.jwks_url.clone(),
        f.http.clone(),
        f.clock(),
        Duration::from_secs(3600),
    );
    f.runtime.block_on(async {
        for (i, alg) in ALGS.into_iter().enumerate() {
            let mut header = Header::new(alg);
            // Some look-ups by a kid the document may hold, some without.
            header.kid = match i % 3 {
                0 => None,
                1 => Some("k1".to_owned()),
                _ => Some(String::new()),
            };
            let _ = cache.keys_for(&header).await;
        }
    });
});
