//! Any text as a compact JWT: an id_token (sign-in) and a logout token
//! (back-channel logout) must be refused cleanly, never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use oidc_bff_fuzz::fixture;
use oidc_bff_tokens::IdToken;
use oidc_bff_tokens::id_token::IdTokenExpectations;

fuzz_target!(|data: &[u8]| {
    let Ok(token) = std::str::from_utf8(data) else {
        return;
    };
    let f = fixture();
    f.runtime.block_on(async {
        let id = IdToken::new(token.to_owned());
        let expected = IdTokenExpectations {
            nonce: Some("n-0S6_WzA2Mj"),
            access_token: None,
        };
        let _ = f.id_tokens.validate(&id, &f.jwks, expected).await;
        let _ = f.logout_tokens.validate(token, &f.jwks).await;
    });
});
