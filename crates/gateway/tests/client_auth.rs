//! `[oidc] client_auth`, `client_key`, `client_key_id`, `client_key_alg`
//! and `par`: `oidc-bff check` accepts good settings and names the key of
//! each bad one without ever printing key material; `oidc-bff serve` signs
//! in with pushed authorization requests and `private_key_jwt` against the
//! dev IdP and gets user and client tokens with them.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::KeySize;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, RsaKeyPair};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use common::{Browser, CLIENT_ID, Gateway, Upstream, check};
use oidc_bff::tokens::ClientKey;
use oidc_bff_dev_idp::DevIdp;
use reqwest::Method;

/// A fresh test-only private key as PKCS#8 PEM.
fn pem(rsa: bool) -> String {
    let der = if rsa {
        RsaKeyPair::generate(KeySize::Rsa2048)
            .unwrap()
            .as_der()
            .unwrap()
            .as_ref()
            .to_vec()
    } else {
        EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
            .unwrap()
            .as_ref()
            .to_vec()
    };
    let body = STANDARD.encode(der);
    let lines: Vec<&str> = body
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    format!(
        "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
        lines.join("\n")
    )
}

/// A line of the key's base64 body: must never appear in any output.
fn material(pem: &str) -> &str {
    pem.lines().nth(2).unwrap()
}

const BASE: &str = r#"listen = "127.0.0.1:8080"
public_url = "http://127.0.0.1:8080"
[oidc]
authority = "http://127.0.0.1:9000"
client_id = "bff"
OIDC_EXTRA
[session]
store = "memory"
[[api]]
path = "/svc"
upstream = "http://127.0.0.1:7000"
token = "client"
"#;

fn write(dir: &Path, oidc: &str) -> PathBuf {
    let path = dir.join("bff.toml");
    std::fs::write(&path, BASE.replace("OIDC_EXTRA", oidc)).unwrap();
    path
}

#[test]
fn check_accepts_private_key_jwt_and_par_and_shows_no_key() {
    for rsa in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let pem = pem(rsa);
        std::fs::write(dir.path().join("client-key.pem"), &pem).unwrap();
        let thumbprint = ClientKey::from_pem(pem.as_bytes())
            .unwrap()
            .thumbprint()
            .to_owned();
        // Relative to the file's directory.
        let path = write(
            dir.path(),
            "client_auth = \"private_key_jwt\"\nclient_key = \"client-key.pem\"\npar = true",
        );
        let (code, stdout, stderr) = check(&path, &[]);
        assert_eq!(code, 0, "{stderr}");
        assert!(
            stdout.contains("client_auth = \"private_key_jwt\""),
            "{stdout}"
        );
        let kty = if rsa { "RSA" } else { "EC" };
        assert!(
            stdout.contains(&format!("client-key.pem\"  # {kty} key, kid {thumbprint}")),
            "{stdout}"
        );
        assert!(stdout.contains("par = true"), "{stdout}");
        assert!(!stdout.contains(material(&pem)) && !stderr.contains(material(&pem)));
        assert!(!stdout.contains("PRIVATE KEY"), "{stdout}");
    }
    // A configured kid and algorithm are shown as given.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("k.pem"), pem(true)).unwrap();
    let path = write(
        dir.path(),
        "client_key = \"k.pem\"\nclient_key_id = \"key-1\"\nclient_key_alg = \"PS256\"",
    );
    let (code, stdout, stderr) = check(&path, &[]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("client_key_id = \"key-1\""), "{stdout}");
    assert!(stdout.contains("client_key_alg = \"PS256\""), "{stdout}");
    assert!(stdout.contains("RSA key, kid key-1"), "{stdout}");
}

/// Checks `oidc` settings that must fail; stderr.
fn failing(dir: &Path, oidc: &str) -> String {
    let path = write(dir, oidc);
    let (code, stdout, stderr) = check(&path, &[]);
    assert_eq!(code, 2, "{oidc}\nstdout: {stdout}\nstderr: {stderr}");
    stderr
}

#[test]
fn check_names_the_key_of_each_client_authentication_problem() {
    let dir = tempfile::tempdir().unwrap();
    let rsa = pem(true);
    std::fs::write(dir.path().join("rsa.pem"), &rsa).unwrap();
    // A file that looks like a key but is not one: its content never shows.
    let fake = "-----BEGIN PRIVATE KEY-----\nc2VjcmV0LWtleS1tYXRlcmlhbC1kby1ub3QtcHJpbnQ=\n-----END PRIVATE KEY-----\n";
    std::fs::write(dir.path().join("fake.pem"), fake).unwrap();
    std::fs::write(
        dir.path().join("encrypted.pem"),
        "-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n",
    )
    .unwrap();
    for (oidc, expected) in [
        (
            "client_auth = \"private_key_jwt\"",
            "`oidc.client_key`: client_auth = \"private_key_jwt\" needs a client_key",
        ),
        (
            "client_auth = \"private_key_jwt\"\nclient_key = \"missing.pem\"",
            "bff.toml:7: `oidc.client_key`: client key",
        ),
        (
            "client_key = \"fake.pem\"",
            "bff.toml:6: `oidc.client_key`: client key",
        ),
        ("client_key = \"encrypted.pem\"", "encrypted"),
        (
            "client_auth = \"client_secret_post\"",
            "`oidc.client_secret`: client_auth = \"client_secret_post\" needs a client_secret",
        ),
        (
            "client_auth = \"client_secret_basic\"\nclient_secret = \"x\"\nclient_key = \"rsa.pem\"",
            "`oidc.client_key`: a client_key is only used with client_auth = \"private_key_jwt\"",
        ),
        (
            "client_auth = \"mutual_tls\"",
            "bff.toml:6: `oidc.client_auth`",
        ),
        (
            "client_secret = \"x\"\nclient_key_id = \"k\"",
            "`oidc.client_key_id`: needs a client_key",
        ),
        (
            "client_key = \"rsa.pem\"\nclient_key_alg = \"ES256\"",
            "`oidc.client_key_alg`: ES256 does not fit the RSA client key",
        ),
    ] {
        let stderr = failing(dir.path(), oidc);
        assert!(stderr.contains(expected), "{oidc}\n{stderr}");
        assert!(!stderr.contains("c2VjcmV0"), "key material shown: {stderr}");
        assert!(
            !stderr.contains(material(&rsa)),
            "key material shown: {stderr}"
        );
    }
    // The file name is named for an unreadable key.
    let stderr = failing(dir.path(), "client_key = \"missing.pem\"");
    assert!(stderr.contains("missing.pem"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_signs_in_with_par_and_private_key_jwt() {
    let pem = pem(false);
    let key = ClientKey::from_pem(pem.as_bytes()).unwrap();
    let jwk = key.public_jwk(key.thumbprint(), key.default_alg());
    // The provider requires PAR and knows the client by its key only.
    let idp = DevIdp::builder()
        .client_jwks(CLIENT_ID, jwk)
        .require_par(true)
        .start()
        .await
        .unwrap();
    let upstream = Upstream::start().await;
    let keys = tempfile::tempdir().unwrap();
    let key_path = keys.path().join("client-key.pem");
    std::fs::write(&key_path, &pem).unwrap();
    let config = format!(
        r#"
listen = "127.0.0.1:{{port}}"
public_url = "http://127.0.0.1:{{port}}"

[oidc]
authority = "{issuer}"
client_id = "{CLIENT_ID}"
client_auth = "private_key_jwt"
client_key = "{key}"
scopes = ["openid", "profile", "offline_access"]

[session]
store = "memory"

[[api]]
path = "/api"
upstream = "{api}"
token = "user"

[[api]]
path = "/svc"
upstream = "{svc}"
token = "client"
"#,
        issuer = idp.issuer(),
        key = key_path.display(),
        api = upstream.url("/base"),
        svc = upstream.url("/svc-base"),
    );
    let gateway = Gateway::start(&config).await;
    let mut browser = Browser::new();
    browser.login(&gateway).await;
    let counters = idp.counters();
    assert_eq!(counters.pushed_authorization_requests, 1);
    assert_eq!(counters.code_grants, 1);
    for path in ["/api/x", "/svc/y"] {
        let response = browser
            .api(Method::GET, &format!("{}{path}", gateway.url))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{path}");
    }
    // PAR, code exchange and client credentials: one assertion each.
    assert_eq!(idp.counters().client_assertions, 3);
    assert_eq!(idp.counters().client_credentials_grants, 1);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!gateway.logs().contains(material(&pem)));
}
