//! Any `Cookie` headers: the session cookie is read (or not) without a
//! panic, and a session id is accepted only in its exact shape.
//!
//! Input: header values separated by `0xff`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use oidc_bff_tokens::SessionId;

fuzz_target!(|data: &[u8]| {
    let values: Vec<&[u8]> = data.split(|b| *b == 0xff).collect();
    for name in ["__Host-bff", "__Host-bff-login"] {
        if let Some(value) = oidc_bff::fuzzing::read_cookie(&values, name) {
            if let Some(id) = SessionId::parse(&value) {
                assert_eq!(id.as_str().len(), SessionId::LEN);
                assert!(
                    id.as_str()
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                );
            }
        }
    }
    if let Ok(raw) = std::str::from_utf8(data) {
        let _ = SessionId::parse(raw);
    }
});
