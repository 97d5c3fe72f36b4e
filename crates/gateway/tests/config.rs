//! `oidc-bff check` and `oidc-bff serve` on good and bad configuration files:
//! every error names the key and the file line or environment variable.

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::{binary, check};

const GOOD: &str = r#"listen = "127.0.0.1:8080"
public_url = "http://127.0.0.1:8080"
[oidc]
authority = "http://127.0.0.1:9000"
client_id = "bff"
client_secret = "s3cr3t-value"
scopes = ["openid", "profile", "offline_access"]
[session]
store = "memory"
[[api]]
path = "/api"
upstream = "http://127.0.0.1:7000"
token = "user"          # none | user | client | user-or-client | user-or-none
"#;

fn write(dir: &tempfile::TempDir, text: &str) -> PathBuf {
    let path = dir.path().join("bff.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// Checks `text` with `from` replaced by `to`; asserts failure and returns stderr.
fn failing(from: &str, to: &str, env: &[(&str, &str)]) -> String {
    assert!(GOOD.contains(from), "{from}");
    let dir = tempfile::tempdir().unwrap();
    let path = write(&dir, &GOOD.replace(from, to));
    let (code, stdout, stderr) = check(&path, env);
    assert_eq!(code, 2, "stdout: {stdout}\nstderr: {stderr}");
    assert!(
        !stderr.contains("s3cr3t-value"),
        "a secret in an error: {stderr}"
    );
    stderr
}

#[test]
fn a_good_file_is_printed_with_secrets_redacted() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(&dir, GOOD);
    let (code, stdout, stderr) = check(&path, &[("OIDC_BFF__OIDC__REFRESH_MARGIN", "45")]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains("client_secret = \"[redacted]\""),
        "{stdout}"
    );
    assert!(!stdout.contains("s3cr3t-value"), "{stdout}");
    assert!(
        stdout.contains("refresh_margin = 45  # from OIDC_BFF__OIDC__REFRESH_MARGIN"),
        "{stdout}"
    );
    assert!(
        stdout.contains("upstream = \"http://127.0.0.1:7000/\""),
        "{stdout}"
    );
    assert!(stdout.contains("token = \"user\""), "{stdout}");
    assert!(
        stdout.contains("http://127.0.0.1:8080/bff/callback"),
        "{stdout}"
    );
}

#[test]
fn an_unknown_key_is_named_with_its_line() {
    let err = failing("client_id = \"bff\"", "client_idd = \"bff\"", &[]);
    assert!(
        err.contains("bff.toml:5: `oidc.client_idd`: unknown key"),
        "{err}"
    );

    let err = failing("[session]\nstore", "[session]\nstores", &[]);
    assert!(
        err.contains("bff.toml:9: `session.stores`: unknown key"),
        "{err}"
    );
}

#[test]
fn a_wrong_type_is_named_with_its_line() {
    let err = failing("listen = \"127.0.0.1:8080\"", "listen = 8080", &[]);
    assert!(err.contains("bff.toml:1: `listen`: invalid type"), "{err}");

    let err = failing(
        "scopes = [\"openid\", \"profile\", \"offline_access\"]",
        "scopes = \"openid\"",
        &[],
    );
    assert!(
        err.contains("bff.toml:7: `oidc.scopes`: invalid type"),
        "{err}"
    );
}

#[test]
fn a_bad_url_is_named_with_its_line() {
    let err = failing(
        "upstream = \"http://127.0.0.1:7000\"",
        "upstream = \"not a url\"",
        &[],
    );
    assert!(err.contains("bff.toml:12: `api.0.upstream`"), "{err}");

    let err = failing(
        "authority = \"http://127.0.0.1:9000\"",
        "authority = \"http://idp.example.com\"",
        &[],
    );
    assert!(
        err.contains("bff.toml:4: `oidc.authority`: must be an https URL"),
        "{err}"
    );

    let err = failing("token = \"user\"", "token = \"usr\"", &[]);
    assert!(
        err.contains("bff.toml:13: `api.0.token`: unknown variant"),
        "{err}"
    );
}

#[test]
fn persistent_session_stores_are_urls_and_need_encryption_keys() {
    let err = failing("store = \"memory\"", "store = \"redis\"", &[]);
    assert!(err.contains("bff.toml:9: `session.store`"), "{err}");
    assert!(err.contains("as a URL"), "{err}");

    let err = failing(
        "store = \"memory\"",
        "store = \"redis://:hunter2@127.0.0.1:6379\"",
        &[],
    );
    assert!(err.contains("`session.encryption_keys`"), "{err}");
    assert!(!err.contains("hunter2"), "{err}");

    let err = failing(
        "store = \"memory\"",
        "store = \"sqlite://s.db\"\nencryption_keys = [\"k1:c2hvcnQ=\"]",
        &[],
    );
    assert!(err.contains("`session.encryption_keys`"), "{err}");
    assert!(err.contains("32 bytes"), "{err}");

    // A good one: the key and the URL's password are never printed.
    let key = "k1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        &dir,
        &GOOD.replace(
            "store = \"memory\"",
            &format!("store = \"redis://:hunter2@127.0.0.1:6379\"\nencryption_keys = [\"{key}\"]"),
        ),
    );
    let (code, stdout, stderr) = check(&path, &[]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains("encryption_keys = [\"k1:[redacted]\"]"),
        "{stdout}"
    );
    assert!(!stdout.contains("AAECAwQF"), "{stdout}");
    assert!(!stdout.contains("hunter2"), "{stdout}");
}

#[test]
fn environment_overrides_are_named_by_variable() {
    let err = failing("", "", &[("OIDC_BFF__OIDC__REFRESH_MARGIN", "soon")]);
    assert!(
        err.contains("environment variable OIDC_BFF__OIDC__REFRESH_MARGIN: `oidc.refresh_margin`"),
        "{err}"
    );
    let err = failing("", "", &[("OIDC_BFF__API__0__UPSTREAM", "ftp://x")]);
    assert!(
        err.contains("environment variable OIDC_BFF__API__0__UPSTREAM: `api.0.upstream`"),
        "{err}"
    );
    let err = failing("", "", &[("OIDC_BFF__LISTN", "x")]);
    assert!(err.contains("`listn`: unknown key"), "{err}");
}

#[test]
fn semantic_errors_name_the_key() {
    let err = failing("path = \"/api\"", "path = \"/bff/api\"", &[]);
    assert!(err.contains("bff.toml:11: `api.0.path`"), "{err}");
    let err = failing("token = \"user\"", "token = \"client\"\ntimeout = 0", &[]);
    assert!(
        err.contains("bff.toml:14: `api.0.timeout`: must be greater than zero"),
        "{err}"
    );
    let err = failing(
        "public_url = \"http://127.0.0.1:8080\"",
        "public_url = \"http://app.example.com\"",
        &[],
    );
    assert!(err.contains("bff.toml:2: `public_url`"), "{err}");
}

#[test]
fn the_client_secret_can_come_from_a_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("secret.txt"), "from-a-file\n").unwrap();
    let text = GOOD.replace(
        "client_secret = \"s3cr3t-value\"",
        "client_secret_file = \"secret.txt\"",
    );
    let path = write(&dir, &text);
    // Relative to the config file, not the working directory.
    let (code, stdout, stderr) = check(&path, &[]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains("client_secret = \"[redacted]\""),
        "{stdout}"
    );
    assert!(!stdout.contains("from-a-file"));

    let missing = write(&dir, &text.replace("secret.txt", "nope.txt"));
    let (code, _, stderr) = check(&missing, &[]);
    assert_eq!(code, 2);
    assert!(
        stderr.contains("`oidc.client_secret_file`: cannot read"),
        "{stderr}"
    );

    let both = write(
        &dir,
        &GOOD.replace(
            "client_id = \"bff\"",
            "client_id = \"bff\"\nclient_secret_file = \"secret.txt\"",
        ),
    );
    let (code, _, stderr) = check(&both, &[]);
    assert_eq!(code, 2);
    assert!(
        stderr.contains("`oidc.client_secret_file`: give either"),
        "{stderr}"
    );
}

#[test]
fn serve_refuses_a_bad_file_before_listening() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(&dir, &GOOD.replace("client_id = \"bff\"", "client_id = 7"));
    let out = Command::new(binary())
        .arg("serve")
        .arg("--config")
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("bff.toml:5: `oidc.client_id`"), "{stderr}");
}

#[test]
fn passwords_in_the_store_urls_query_are_redacted() {
    let key = "k1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        &dir,
        &GOOD.replace(
            "store = \"memory\"",
            &format!(
                "store = \"postgres://u@127.0.0.1:5432/db?password=hunter2&sslmode=disable\
                 &PASS=hunter3&api_Token=hunter4&SecretKey=hunter5\"\n\
                 encryption_keys = [\"{key}\"]"
            ),
        ),
    );
    let (code, stdout, stderr) = check(&path, &[]);
    assert_eq!(code, 0, "{stderr}");
    for secret in ["hunter2", "hunter3", "hunter4", "hunter5"] {
        assert!(!stdout.contains(secret), "{secret} printed: {stdout}");
    }
    assert!(
        stdout.contains(
            "store = \"postgres://u@127.0.0.1:5432/db?password=[redacted]&sslmode=disable\
             &PASS=[redacted]&api_Token=[redacted]&SecretKey=[redacted]\""
        ),
        "{stdout}"
    );

    // From a variable too.
    let path = write(
        &dir,
        &GOOD.replace(
            "store = \"memory\"",
            &format!("store = \"memory\"\nencryption_keys = [\"{key}\"]"),
        ),
    );
    let (code, stdout, stderr) = check(
        &path,
        &[(
            "OIDC_BFF__SESSION__STORE",
            "redis://127.0.0.1:6379/0?password=hunter6",
        )],
    );
    assert_eq!(code, 0, "{stderr}");
    assert!(!stdout.contains("hunter6"), "{stdout}");
    assert!(!stdout.contains("AAECAwQF"), "{stdout}");
}

#[test]
fn debug_output_redacts_secrets() {
    let key = "k1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
    let text = GOOD.replace(
        "store = \"memory\"",
        &format!(
            "store = \"redis://:hunter2@127.0.0.1:6379/0?token=hunter3\"\n\
             encryption_keys = [\"{key}\"]"
        ),
    );
    let config =
        oidc_bff_gateway::GatewayConfig::from_toml_str(&text, std::iter::empty::<(&str, &str)>())
            .unwrap();
    for debug in [
        format!("{config:?}"),
        format!("{config:#?}"),
        format!("{:?}", config.session),
        format!("{:?}", config.session.store),
    ] {
        for secret in ["hunter2", "hunter3", "AAECAwQF", "s3cr3t-value"] {
            assert!(!debug.contains(secret), "{secret} in {debug}");
        }
    }
    let debug = format!("{config:?}");
    assert!(debug.contains("k1:[redacted]"), "{debug}");
    assert!(debug.contains("127.0.0.1:6379"), "{debug}");
}

#[test]
fn the_anti_forgery_header_is_configurable_and_checked() {
    let dir = tempfile::tempdir().unwrap();
    // The default is printed.
    let (code, stdout, stderr) = check(&write(&dir, GOOD), &[]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains("[csrf]\nheader = \"X-CSRF\"\nvalue = \"1\""),
        "{stdout}"
    );

    let custom =
        "[session]\nstore = \"memory\"\n[csrf]\nheader = \"X-Requested-By\"\nvalue = \"my-app\"";
    let (code, stdout, stderr) = check(
        &write(&dir, &GOOD.replace("[session]\nstore = \"memory\"", custom)),
        &[],
    );
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains("[csrf]\nheader = \"X-Requested-By\"\nvalue = \"my-app\""),
        "{stdout}"
    );
    let (code, stdout, _) = check(&write(&dir, GOOD), &[("OIDC_BFF__CSRF__VALUE", "from-env")]);
    assert_eq!(code, 0);
    assert!(
        stdout.contains("value = \"from-env\"  # from OIDC_BFF__CSRF__VALUE"),
        "{stdout}"
    );

    // A header another site may send without a preflight protects nothing.
    let err = failing(
        "[session]\nstore = \"memory\"",
        "[session]\nstore = \"memory\"\n[csrf]\nheader = \"Content-Type\"",
        &[],
    );
    assert!(
        err.contains("bff.toml:11: `csrf.header`: another site's page may send"),
        "{err}"
    );
    let err = failing(
        "[session]\nstore = \"memory\"",
        "[session]\nstore = \"memory\"\n[csrf]\nheader = \"Sec-Fetch-Site\"",
        &[],
    );
    assert!(err.contains("`csrf.header`: only the browser"), "{err}");
    let err = failing(
        "[session]\nstore = \"memory\"",
        "[session]\nstore = \"memory\"\n[csrf]\nheader = \"bad header\"",
        &[],
    );
    assert!(
        err.contains("`csrf.header`: not a valid header name"),
        "{err}"
    );
    let err = failing(
        "[session]\nstore = \"memory\"",
        "[session]\nstore = \"memory\"\n[csrf]\nvalue = \"\"",
        &[],
    );
    assert!(err.contains("bff.toml:11: `csrf.value`"), "{err}");
    let err = failing(
        "[session]\nstore = \"memory\"",
        "[session]\nstore = \"memory\"\n[csrf]\nheadr = \"X\"",
        &[],
    );
    assert!(err.contains("`csrf.headr`: unknown key"), "{err}");
}

#[test]
fn worker_threads_is_shown_and_zero_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(&dir, GOOD);
    let (code, stdout, stderr) = check(&path, &[]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains("worker_threads = ") && stdout.contains("# default: one per core"),
        "{stdout}"
    );
    let (code, stdout, stderr) = check(&path, &[("OIDC_BFF__SERVER__WORKER_THREADS", "1")]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains("worker_threads = 1  # from OIDC_BFF__SERVER__WORKER_THREADS"),
        "{stdout}"
    );
    let err = failing("", "", &[("OIDC_BFF__SERVER__WORKER_THREADS", "0")]);
    assert!(err.contains("`server.worker_threads`"), "{err}");
}

#[test]
fn dpop_keys_are_checked_and_shown_without_key_material() {
    // Off by default, and shown.
    let dir = tempfile::tempdir().unwrap();
    let path = write(&dir, GOOD);
    let (code, stdout, stderr) = check(&path, &[]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("dpop = false"), "{stdout}");
    assert!(stdout.contains("dpop_alg = \"ES256\""), "{stdout}");
    assert!(
        stdout.contains("allow_bearer_downgrade = false"),
        "{stdout}"
    );

    let path = write(
        &dir,
        &GOOD.replace(
            "client_id = \"bff\"",
            "client_id = \"bff\"\ndpop = true\ndpop_alg = \"ES384\"\nallow_bearer_downgrade = true",
        ),
    );
    let (code, stdout, stderr) = check(&path, &[]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("dpop = true"), "{stdout}");
    assert!(stdout.contains("dpop_alg = \"ES384\""), "{stdout}");
    assert!(stdout.contains("allow_bearer_downgrade = true"), "{stdout}");

    let err = failing(
        "client_id = \"bff\"",
        "client_id = \"bff\"\ndpop = [true]",
        &[],
    );
    assert!(err.contains("`oidc.dpop`: invalid type"), "{err}");
    let err = failing(
        "client_id = \"bff\"",
        "client_id = \"bff\"\ndpop = true\ndpop_alg = \"HS256\"",
        &[],
    );
    assert!(err.contains("`oidc.dpop_alg`"), "{err}");
    let err = failing(
        "client_id = \"bff\"",
        "client_id = \"bff\"\nallow_bearer_downgrade = true",
        &[],
    );
    assert!(
        err.contains("`oidc.allow_bearer_downgrade`: has no effect without `oidc.dpop = true`"),
        "{err}"
    );
}

#[test]
fn api_methods_are_checked_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let good = GOOD.replace(
        "token = \"user\" ",
        "methods = [\"GET\", \"POST\"]\nwebsocket_session_check = 5\nwebsocket_close_on_token_expiry = true\ntoken = \"user\" ",
    );
    assert!(good.contains("methods"));
    let (code, stdout, stderr) = check(&write(&dir, &good), &[]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("methods = [\"GET\", \"POST\"]"), "{stdout}");

    let err = failing(
        "token = \"user\" ",
        "methods = [\"GET\", \"FETCH\", \"post\"]\ntoken = \"user\" ",
        &[],
    );
    assert!(
        err.contains("`api.0.methods.1`: unknown method \"FETCH\""),
        "{err}"
    );
    assert!(
        err.contains("`api.0.methods.2`: unknown method \"post\""),
        "{err}"
    );
    let err = failing("token = \"user\" ", "methods = []\ntoken = \"user\" ", &[]);
    assert!(
        err.contains("`api.0.methods`: must name at least one method"),
        "{err}"
    );
    let err = failing(
        "token = \"user\" ",
        "websocket_session_check = 0\ntoken = \"user\" ",
        &[],
    );
    assert!(
        err.contains("`api.0.websocket_session_check`: must be greater than zero"),
        "{err}"
    );
}
