//! The gateway's own TLS (`[server.tls]`), through the real binary: HTTP/2
//! and HTTP/1.1 chosen by ALPN, sign-in and the proxy over HTTPS, a
//! WebSocket upgrade, the certificate replaced on disk without a restart,
//! and key-precise refusals of bad certificate settings.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Browser, Gateway, Upstream};
use futures_util::{SinkExt as _, StreamExt as _};
use http::StatusCode;
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, SanType, SerialNumber};
use tokio_tungstenite::tungstenite::{Message, client::IntoClientRequest as _};

/// A test CA.
struct Ca {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
    der: Vec<u8>,
}

/// A server certificate and its key.
struct Leaf {
    cert: String,
    key: String,
    der: Vec<u8>,
}

impl Ca {
    fn new() -> Ca {
        let key = KeyPair::generate().expect("CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "oidc-bff gateway test CA");
        let cert = params.self_signed(&key).expect("CA certificate");
        Ca {
            pem: cert.pem(),
            der: cert.der().to_vec(),
            issuer: Issuer::new(params, key),
        }
    }

    /// A certificate for 127.0.0.1 and `dns`, with `serial`, and a new key.
    fn leaf(&self, serial: u64, dns: &str) -> Leaf {
        let key = KeyPair::generate().expect("server key");
        let mut params = CertificateParams::new(vec![dns.to_owned()]).expect("server params");
        params
            .subject_alt_names
            .push(SanType::IpAddress(std::net::Ipv4Addr::LOCALHOST.into()));
        params.serial_number = Some(SerialNumber::from(serial));
        let cert = params
            .signed_by(&key, &self.issuer)
            .expect("server certificate");
        Leaf {
            cert: cert.pem(),
            key: key.serialize_pem(),
            der: cert.der().to_vec(),
        }
    }
}

/// The certificate files of one gateway, in a directory of their own.
struct Files {
    _dir: tempfile::TempDir,
    cert: PathBuf,
    key: PathBuf,
    leaf: Leaf,
}

impl Files {
    fn new(ca: &Ca) -> Files {
        let dir = tempfile::tempdir().expect("temp dir");
        let leaf = ca.leaf(1, "localhost");
        let cert = dir.path().join("cert.pem");
        let key = dir.path().join("key.pem");
        std::fs::write(&cert, &leaf.cert).expect("write cert");
        std::fs::write(&key, &leaf.key).expect("write key");
        Files {
            _dir: dir,
            cert,
            key,
            leaf,
        }
    }

    /// The standard test configuration with `[server.tls]` (and `extra`
    /// after it) and an https `public_url`.
    fn config(&self, idp: &oidc_bff_dev_idp::RunningIdp, up: &Upstream, extra: &str) -> String {
        let tls = format!(
            "[server.tls]\ncert = {:?}\nkey = {:?}\n{extra}",
            self.cert, self.key
        );
        common::config_with(idp, up, 60, &tls)
            .replace("public_url = \"http://", "public_url = \"https://")
    }
}

async fn wait_for(what: &str, gateway: &Gateway, mut done: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done().await {
        assert!(
            Instant::now() < deadline,
            "{what} did not happen:\n{}",
            gateway.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn browsers_get_http2_sign_in_and_call_the_api_over_tls() {
    let idp = common::idp(Duration::from_secs(300)).await;
    let upstream = Upstream::start().await;
    let ca = Ca::new();
    let files = Files::new(&ca);
    let redirect = common::free_port();
    let config = files.config(
        &idp,
        &upstream,
        &format!("redirect_http = \"127.0.0.1:{redirect}\"\n"),
    );
    let gateway = Gateway::start_tls(&config, &ca.pem).await;
    assert!(gateway.url.starts_with("https://"));

    // A client offering h2 and http/1.1 (ALPN) gets HTTP/2.
    let client = common::trusting(&ca.pem).build().expect("client");
    let response = client
        .get(format!("{}/healthz", gateway.url))
        .send()
        .await
        .expect("GET /healthz over TLS");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.version(), reqwest::Version::HTTP_2);

    // One that only offers HTTP/1.1 gets it.
    let h1 = common::trusting(&ca.pem)
        .http1_only()
        .build()
        .expect("client");
    let response = h1
        .get(format!("{}/healthz", gateway.url))
        .send()
        .await
        .expect("GET /healthz over TLS, HTTP/1.1");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.version(), reqwest::Version::HTTP_11);

    // Sign-in through the dev IdP, then the BFF's and the proxy's routes, over HTTP/2.
    let mut browser = Browser::trusting(&ca.pem);
    browser.login(&gateway).await;
    let (status, user) = browser.get_json(&format!("{}/bff/user", gateway.url)).await;
    assert_eq!(status, StatusCode::OK, "{user}");
    let response = browser
        .api(
            reqwest::Method::GET,
            &format!("{}/api/orders?x=1", gateway.url),
        )
        .send()
        .await
        .expect("API call");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.version(), reqwest::Version::HTTP_2);
    let seen = upstream.last();
    assert_eq!(seen.target, "/base/orders?x=1");
    assert!(seen.bearer().is_some(), "the user's token is forwarded");
    // The TCP peer (ConnectInfo) and the public scheme reach the upstream.
    assert_eq!(seen.headers["x-forwarded-for"], "127.0.0.1");
    assert_eq!(seen.headers["x-forwarded-proto"], "https");

    // `redirect_http`: plain HTTP is sent to the same path at the https URL.
    let plain = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let response = plain
        .get(format!("http://127.0.0.1:{redirect}/bff/user?a=b"))
        .send()
        .await
        .expect("plain HTTP");
    assert_eq!(response.status(), StatusCode::PERMANENT_REDIRECT);
    assert_eq!(
        response.headers()["location"],
        format!("{}/bff/user?a=b", gateway.url).as_str()
    );
}

#[tokio::test]
async fn a_client_that_does_not_trust_the_certificate_fails_the_handshake() {
    let idp = common::idp(Duration::from_secs(300)).await;
    let upstream = Upstream::start().await;
    let ca = Ca::new();
    let files = Files::new(&ca);
    let gateway = Gateway::start_tls(&files.config(&idp, &upstream, ""), &ca.pem).await;
    let url = format!("{}/healthz", gateway.url);

    for client in [
        // The platform's roots.
        reqwest::Client::new(),
        // Another CA.
        common::trusting(&Ca::new().pem).build().expect("client"),
    ] {
        let err = client
            .get(&url)
            .send()
            .await
            .expect_err("an untrusted certificate must fail the handshake");
        assert!(err.is_connect(), "{err:?}");
    }
    // Plain HTTP on the TLS port gets no HTTP answer.
    assert!(
        reqwest::get(format!("http://127.0.0.1:{}/healthz", gateway.port))
            .await
            .is_err()
    );
    // The gateway still serves the clients that trust it.
    let trusted = common::trusting(&ca.pem).build().expect("client");
    assert_eq!(
        trusted.get(&url).send().await.expect("trusted").status(),
        StatusCode::OK
    );
}

/// The DER of the certificate the gateway serves to a new connection.
async fn served_certificate(gateway: &Gateway, ca: &Ca) -> Vec<u8> {
    let client = common::trusting(&ca.pem)
        .tls_info(true)
        .pool_max_idle_per_host(0)
        .build()
        .expect("client");
    let response = client
        .get(format!("{}/healthz", gateway.url))
        .send()
        .await
        .expect("GET /healthz");
    response
        .extensions()
        .get::<reqwest::tls::TlsInfo>()
        .and_then(|info| info.peer_certificate())
        .expect("the peer's certificate")
        .to_vec()
}

#[tokio::test]
async fn a_replaced_certificate_is_served_without_a_restart() {
    let idp = common::idp(Duration::from_secs(300)).await;
    let upstream = Upstream::start().await;
    let ca = Ca::new();
    let files = Files::new(&ca);
    let gateway = Gateway::start_tls(&files.config(&idp, &upstream, ""), &ca.pem).await;
    assert_eq!(served_certificate(&gateway, &ca).await, files.leaf.der);

    // A broken file is logged; the certificate in use stays.
    std::fs::write(&files.cert, "not a certificate\n").expect("write");
    wait_for("the broken certificate's warning", &gateway, async || {
        gateway.logs().contains("does not load")
    })
    .await;
    assert!(
        gateway.logs().contains("server.tls.cert"),
        "{}",
        gateway.logs()
    );
    assert_eq!(served_certificate(&gateway, &ca).await, files.leaf.der);

    // A new pair (new key, serial and name), written key first.
    let next = ca.leaf(2, "next.test");
    assert_ne!(next.der, files.leaf.der);
    std::fs::write(&files.key, &next.key).expect("write key");
    std::fs::write(&files.cert, &next.cert).expect("write cert");
    wait_for("the new certificate", &gateway, async || {
        served_certificate(&gateway, &ca).await == next.der
    })
    .await;
    assert!(gateway.logs().contains("TLS certificate reloaded"));
}

#[tokio::test]
async fn websockets_still_upgrade_through_the_proxy_over_tls() {
    let idp = common::idp(Duration::from_secs(300)).await;
    let upstream = Upstream::start().await;
    // An echoing WebSocket server.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let ws_addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
                    return;
                };
                while let Some(Ok(message)) = ws.next().await {
                    if message.is_text() && ws.send(message).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    let ca = Ca::new();
    let files = Files::new(&ca);
    let extra = format!(
        "\n[[api]]\npath = \"/ws\"\nupstream = \"http://{ws_addr}\"\ntoken = \"user\"\nwebsockets = true\n"
    );
    let gateway = Gateway::start_tls(&files.config(&idp, &upstream, &extra), &ca.pem).await;
    let mut browser = Browser::trusting(&ca.pem);
    browser.login(&gateway).await;

    // WebSockets run over HTTP/1.1 (ALPN), on the gateway's TLS.
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls::pki_types::CertificateDer::from(ca.der.clone()))
        .expect("CA");
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("TLS versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", gateway.port))
        .await
        .expect("connect");
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").expect("name");
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .expect("TLS handshake");
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    let mut request = format!("wss://127.0.0.1:{}/ws/echo", gateway.port)
        .into_client_request()
        .expect("request");
    let headers = request.headers_mut();
    headers.insert("cookie", browser.cookie_header().parse().expect("cookie"));
    headers.insert("x-csrf", "1".parse().expect("header"));
    let (mut ws, response) = tokio_tungstenite::client_async(request, tls)
        .await
        .expect("WebSocket handshake over TLS");
    assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
    for text in ["hello", "over tls"] {
        ws.send(Message::text(text)).await.expect("send");
        let echoed = ws.next().await.expect("an answer").expect("a message");
        assert_eq!(echoed.into_text().expect("text").as_str(), text);
    }
    ws.close(None).await.expect("close");
}

/// A minimal configuration with `[server.tls]` naming `cert` and `key`
/// (relative to the file's directory).
fn minimal(public_url: &str, cert: &str, key: &str) -> String {
    format!(
        r#"
listen = "127.0.0.1:1"
public_url = "{public_url}"

[oidc]
authority = "http://127.0.0.1:9"
client_id = "bff"
client_secret = "secret"

[server.tls]
cert = "{cert}"
key = "{key}"
"#
    )
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write");
    path
}

#[test]
fn bad_certificate_settings_are_refused_with_the_key_named() {
    let ca = Ca::new();
    let dir = tempfile::tempdir().expect("temp dir");
    let leaf = ca.leaf(1, "localhost");
    let other = ca.leaf(2, "other.test");
    write(dir.path(), "cert.pem", &leaf.cert);
    write(dir.path(), "key.pem", &leaf.key);
    write(dir.path(), "other.key", &other.key);
    write(dir.path(), "garbage.pem", "hello\n");
    let https = "https://127.0.0.1:8443";

    // The relative paths resolve against the file's directory: this one loads.
    let config = write(
        dir.path(),
        "good.toml",
        &minimal(https, "cert.pem", "key.pem"),
    );
    let (code, stdout, stderr) = common::check(&config, &[]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains("[server.tls]"), "{stdout}");

    for (name, public_url, cert, key, wanted_key, wanted) in [
        (
            "missing",
            https,
            "missing.pem",
            "key.pem",
            "`server.tls.cert`",
            "cannot read",
        ),
        (
            "not-pem",
            https,
            "garbage.pem",
            "key.pem",
            "`server.tls.cert`",
            "no PEM certificate",
        ),
        (
            "key-not-pem",
            https,
            "cert.pem",
            "garbage.pem",
            "`server.tls.key`",
            "no PEM private key",
        ),
        (
            "mismatch",
            https,
            "cert.pem",
            "other.key",
            "`server.tls.key`",
            "does not match the certificate",
        ),
        (
            "http",
            "http://127.0.0.1:8443",
            "cert.pem",
            "key.pem",
            "`public_url`",
            "https",
        ),
    ] {
        let config = write(
            dir.path(),
            &format!("{name}.toml"),
            &minimal(public_url, cert, key),
        );
        let (code, stdout, stderr) = common::check(&config, &[]);
        assert_ne!(code, 0, "{name}: {stdout}");
        assert!(
            stderr.contains(wanted_key) && stderr.contains(wanted),
            "{name}: wanted {wanted_key} and {wanted:?} in:\n{stderr}"
        );
        assert!(!stderr.contains("PRIVATE KEY"), "{name}: {stderr}");
    }

    // `serve` refuses to start on the same errors.
    let config = dir.path().join("mismatch.toml");
    let out = Command::new(common::binary())
        .arg("serve")
        .arg("--config")
        .arg(&config)
        .env_remove("RUST_LOG")
        .output()
        .expect("run serve");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("`server.tls.key`") && stderr.contains("does not match"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_http2_requests_in_flight_complete() {
    let idp = common::idp(Duration::from_secs(300)).await;
    let upstream = Upstream::start().await;
    let ca = Ca::new();
    let files = Files::new(&ca);
    let mut gateway = Gateway::start_tls(&files.config(&idp, &upstream, ""), &ca.pem).await;
    let mut browser = Browser::trusting(&ca.pem);
    browser.login(&gateway).await;

    let started = upstream.slow_started.notified();
    let request = browser
        .api(reqwest::Method::GET, &format!("{}/api/slow", gateway.url))
        .send();
    let in_flight = tokio::spawn(async move {
        let response = request.await.expect("the request in flight completes");
        (
            response.version(),
            response.status(),
            response.text().await.unwrap_or_default(),
        )
    });
    started.await;
    gateway.sigterm();

    let (version, status, body) = in_flight.await.expect("task");
    assert_eq!(version, reqwest::Version::HTTP_2);
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, "slow done");
    let exit = gateway.wait_exit(Duration::from_secs(15)).await;
    assert!(exit.success(), "exit status {exit}:\n{}", gateway.logs());
    assert!(gateway.logs().contains("shutting down"));
    assert!(
        common::trusting(&ca.pem)
            .build()
            .expect("client")
            .get(format!("{}/healthz", gateway.url))
            .send()
            .await
            .is_err(),
        "new connections are refused once it is gone"
    );
}
