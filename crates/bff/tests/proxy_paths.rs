//! Property test of the proxy's path safety, end to end over real HTTP: for
//! any request path under a mounted prefix, built from the pieces traversal
//! payloads are made of, the BFF either refuses it with a 4xx or forwards a
//! path that stays below the upstream's base path in every decoding.
//!
//! Bounded in CI (64 cases); `PROPTEST_CASES=5000 cargo test -p oidc-bff
//! --test proxy_paths` runs a longer campaign.

mod common;

use std::sync::OnceLock;

use common::proxy_support::{self, ProxyBff};
use proptest::prelude::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn fixture() -> &'static (tokio::runtime::Runtime, ProxyBff) {
    static FIXTURE: OnceLock<(tokio::runtime::Runtime, ProxyBff)> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let bff = runtime.block_on(proxy_support::start());
        (runtime, bff)
    })
}

/// Sends `GET {target}` verbatim and returns the status code.
async fn status_of(bff: &ProxyBff, target: &str) -> u16 {
    let mut stream = tokio::net::TcpStream::connect(bff.addr).await.unwrap();
    let request = format!(
        "GET {target} HTTP/1.1\r\nHost: {}\r\nX-CSRF: 1\r\nConnection: close\r\n\r\n",
        bff.addr
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    let text = String::from_utf8_lossy(&response);
    text.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line for {target:?}: {text:?}"))
}

/// Percent-decodes until nothing changes (bounded), lossily.
fn fully_decoded(path: &str) -> String {
    let mut current = path.to_owned();
    for _ in 0..8 {
        let next: String =
            url::form_urlencoded::parse(format!("x={}", current.replace('+', "%2B")).as_bytes())
                .next()
                .map(|(_, v)| v.into_owned())
                .unwrap_or_default();
        if next == current {
            break;
        }
        current = next;
    }
    current
}

fn piece() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec![
        "a",
        "b.txt",
        "..",
        ".",
        "...",
        "%2e",
        "%2E",
        "%2e%2e",
        ".%2e",
        "%252e%252e",
        "%25252e",
        "%2f",
        "%2F",
        "%252f",
        "%5c",
        "%5C",
        "\\",
        "%00",
        "%0a",
        "%",
        "%zz",
        "%c0%ae",
        "%e0%80%ae",
        ";",
        "..;x=1",
        "~",
        "%7e",
        "@",
        ":",
        "%3a",
        "v1",
        "%20",
        "+",
    ])
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(64),
        ..ProptestConfig::default()
    })]

    #[test]
    fn forwarded_paths_never_leave_the_upstream_base_path(
        pieces in prop::collection::vec(piece(), 1..6),
        separators in prop::collection::vec(prop::sample::select(vec!["/", "/", "/", "//", ""]), 6),
        trailing_slash in any::<bool>(),
    ) {
        let (runtime, bff) = fixture();
        let mut rest = String::new();
        for (piece, sep) in pieces.iter().zip(&separators) {
            rest.push_str(sep);
            rest.push_str(piece);
        }
        if trailing_slash {
            rest.push('/');
        }
        let target = format!("/open/{}", rest.trim_start_matches('/'));
        let hits_before = bff.upstream.state.hits();
        let status = runtime.block_on(status_of(bff, &target));
        let forwarded = bff.upstream.state.hits() > hits_before;
        prop_assert!(status < 500, "{} -> {}", target, status);
        if forwarded {
            let seen = bff.upstream.state.last().target;
            let path = seen.split('?').next().unwrap_or_default().to_owned();
            prop_assert!(path.starts_with("/v1/"), "{} -> {}", target, seen);
            let decoded = fully_decoded(&path);
            prop_assert!(decoded.starts_with("/v1/"), "{} -> {}", target, decoded);
            for segment in decoded["/v1/".len()..].split('/') {
                prop_assert!(segment != ".." && segment != ".", "{} -> {}", target, decoded);
            }
            prop_assert!(!decoded.contains('\\'), "{} -> {}", target, decoded);
            prop_assert!(!decoded["/v1".len()..].contains("//"), "{} -> {}", target, decoded);
        } else {
            prop_assert!((400..500).contains(&status), "{} -> {}", target, status);
        }
    }
}

/// The property would pass vacuously if nothing were ever forwarded. Its own
/// BFF and upstream: the property test runs in parallel on the shared
/// fixture, and its requests would count here.
#[tokio::test]
async fn plain_paths_are_forwarded_and_traversal_is_refused() {
    let bff = proxy_support::start().await;
    let hits = bff.upstream.state.hits();
    assert_eq!(status_of(&bff, "/open/a/b.txt").await, 200);
    assert_eq!(bff.upstream.state.hits(), hits + 1);
    assert_eq!(bff.upstream.state.last().target, "/v1/a/b.txt");
    assert_eq!(status_of(&bff, "/open/a/%2e%2e/%2e%2e/x").await, 400);
    assert_eq!(bff.upstream.state.hits(), hits + 1);
}
