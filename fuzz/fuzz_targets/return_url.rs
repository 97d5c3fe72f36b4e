//! Any text as a `returnUrl` (login) : the result is always a local path
//! that no browser reads as another origin.
#![no_main]

use libfuzzer_sys::fuzz_target;
use oidc_bff_tokens::login::sanitize_return_url;

fuzz_target!(|data: &[u8]| {
    let Ok(raw) = std::str::from_utf8(data) else {
        return;
    };
    let url = sanitize_return_url(Some(raw));
    assert!(url.starts_with('/'), "{url:?}");
    assert!(!url.starts_with("//") && !url.starts_with("/\\"), "{url:?}");
    assert!(!url.chars().any(|c| c.is_control() || c == '\\'), "{url:?}");
    // Resolved against the BFF's origin, it stays there.
    let base = url::Url::parse("https://app.example/").expect("base");
    if let Ok(resolved) = base.join(&url) {
        assert_eq!(resolved.origin(), base.origin(), "{url:?}");
    }
});
