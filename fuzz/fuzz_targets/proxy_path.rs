//! Any request path under a proxied prefix: what the proxy accepts never
//! climbs out of the upstream's base path, in any decoding.
//!
//! Input: `path 0xff prefix`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use oidc_bff_fuzz::split2;

/// Percent-decodes `s` once (lossily).
fn decode(s: &str) -> String {
    percent_decode(s.as_bytes())
}

fn percent_decode(bytes: &[u8]) -> String {
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2]))
        {
            out.push(h * 16 + l);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

fuzz_target!(|data: &[u8]| {
    let (path, prefix) = split2(data);
    let (Ok(path), Ok(prefix)) = (std::str::from_utf8(path), std::str::from_utf8(prefix)) else {
        return;
    };
    let Some(rest) = oidc_bff::fuzzing::proxy_path(path, prefix) else {
        return;
    };
    assert!(rest.is_empty() || rest.starts_with('/'), "{rest:?}");
    // Whatever decoding the upstream applies, no segment climbs.
    let mut reading = rest.clone();
    for _ in 0..4 {
        for segment in reading.split(['/', '\\']) {
            assert!(segment != ".." && segment != ".", "{path:?} -> {rest:?}");
        }
        let next = decode(&reading);
        if next == reading {
            break;
        }
        reading = next;
    }
});
