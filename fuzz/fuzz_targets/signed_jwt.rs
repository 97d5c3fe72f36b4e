//! A JWS header and claims of the fuzzer's choosing, correctly signed with
//! the provider's key: the checks behind the signature (header parameters,
//! `iss`, `aud`, `azp`, `exp`, `iat`, `nonce`, `at_hash`, `events`, `sid`,
//! duplicate keys, odd JSON) must refuse or accept cleanly, never panic.
//!
//! Input: `header-json 0xff claims-json`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use oidc_bff_fuzz::{fixture, split2};
use oidc_bff_tokens::id_token::IdTokenExpectations;
use oidc_bff_tokens::{AccessToken, IdToken};

fuzz_target!(|data: &[u8]| {
    let (header, claims) = split2(data);
    let f = fixture();
    let token = f.sign(header, claims);
    let access = AccessToken::new("fuzz-access-token".to_owned());
    f.runtime.block_on(async {
        let id = IdToken::new(token.clone());
        for expected in [
            IdTokenExpectations {
                nonce: Some("n-0S6_WzA2Mj"),
                access_token: Some(&access),
            },
            IdTokenExpectations::default(),
        ] {
            if let Ok(claims) = f.id_tokens.validate(&id, &f.jwks, expected).await {
                // What passed is what the checks promise.
                assert_eq!(claims.iss, oidc_bff_fuzz::ISSUER);
                assert!(claims.aud.iter().any(|aud| aud == oidc_bff_fuzz::CLIENT_ID));
                let _ = f.id_tokens.validate_refreshed(&claims, &claims);
            }
        }
        if let Ok(claims) = f.logout_tokens.validate(&token, &f.jwks).await {
            assert!(claims.sub.is_some() || claims.sid.is_some());
        }
    });
});
