//! Any query string at `/bff/callback`: read (duplicates refused) without a
//! panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(raw) = std::str::from_utf8(data) {
        let _ = oidc_bff::fuzzing::callback_query(raw);
    }
});
