//! Unit tests of loading, locating and redacting.

use super::redact::redact_query;
use super::*;
use oidc_bff::proxy::Require;

const BASE: &str = r#"
listen = "127.0.0.1:8080"
public_url = "http://127.0.0.1:8080"
oidc = { authority = "http://127.0.0.1:9000", client_id = "bff" }

[[api]]
path = "/api"
upstream = "http://127.0.0.1:7000"
"#;

fn load(env: &[(&str, &str)]) -> Result<GatewayConfig, ConfigError> {
    GatewayConfig::from_toml_str(BASE, env.iter().copied())
}

#[test]
fn numeric_env_values_stay_strings_for_string_keys() {
    let c = load(&[
        ("OIDC_BFF__OIDC__CLIENT_SECRET", "12345"),
        ("OIDC_BFF__OIDC__REFRESH_MARGIN", "45"),
        ("OIDC_BFF__OIDC__LOAD_USERINFO", "true"),
    ])
    .unwrap();
    assert_eq!(c.oidc.client_secret.unwrap().secret(), "12345");
    assert_eq!(c.oidc.refresh_margin, Duration::from_secs(45));
    assert!(c.oidc.load_userinfo);
}

#[test]
fn api_entries_are_overridden_and_added_by_index() {
    let mut env = vec![
        ("OIDC_BFF__API__0__TOKEN", "none".to_owned()),
        ("OIDC_BFF__OIDC__CLIENT_SECRET", "s".to_owned()),
    ];
    // Indexes 1..=10, given out of numeric order.
    let names: Vec<(String, String)> = (1..=10)
        .rev()
        .flat_map(|i| {
            [
                (format!("OIDC_BFF__API__{i}__PATH"), format!("/p{i}")),
                (
                    format!("OIDC_BFF__API__{i}__UPSTREAM"),
                    "http://127.0.0.1:1".to_owned(),
                ),
            ]
        })
        .collect();
    let c = GatewayConfig::from_toml_str(
        BASE,
        env.drain(..).map(|(k, v)| (k.to_owned(), v)).chain(names),
    )
    .unwrap();
    assert_eq!(c.api.len(), 11);
    assert_eq!(c.api[0].token, TokenPolicy::None);
    assert_eq!(c.api[10].path, "/p10");
    assert_eq!(c.from_env["api.0.token"], "OIDC_BFF__API__0__TOKEN");
}

#[test]
fn inline_tables_are_located() {
    let err = GatewayConfig::from_toml_str(
        &BASE.replace("client_id = \"bff\"", "client_id = \"bff\", nope = 1"),
        std::iter::empty::<(String, String)>(),
    )
    .unwrap_err();
    assert_eq!(err.problems[0].key.as_deref(), Some("oidc.nope"));
    assert!(
        matches!(err.problems[0].origin, Some(Origin::File { line: 4, .. })),
        "{err}"
    );
}

#[test]
fn secret_query_parameters_are_redacted() {
    assert_eq!(
        redact_query("password=a&sslmode=disable&PassWord=b&x&api%5Fkey=c&Token=d&user=u"),
        "password=[redacted]&sslmode=disable&PassWord=[redacted]&x&api%5Fkey=[redacted]\
         &Token=[redacted]&user=u"
    );
    let store = StoreKind::Postgres(
        "postgres://u:pw1@h:5432/db?password=pw2&application_name=bff&client_secret=pw3".to_owned(),
    );
    let shown = store.shown();
    for secret in ["pw1", "pw2", "pw3"] {
        assert!(!shown.contains(secret), "{shown}");
    }
    assert!(shown.contains("application_name=bff"), "{shown}");
    let debug = format!("{store:?}");
    assert!(debug.starts_with("Postgres(\"postgres://u:"), "{debug}");
    for secret in ["pw1", "pw2", "pw3"] {
        assert!(!debug.contains(secret), "{debug}");
    }
    for url in [
        "redis+sentinel://u:pw5@h1:26379,h2:26379/primary?wait_replicas=1",
        "rediss+cluster://:pw5@h1:7000,h2:7001?ca=/ca.pem&token=pw5",
    ] {
        let store = StoreKind::try_from(url.to_owned()).expect(url);
        let shown = store.shown();
        assert!(!shown.contains("pw5"), "{shown}");
        assert!(shown.contains("h2:"), "{shown}");
    }
    let sqlite = StoreKind::Sqlite("sqlite://s.db?mode=rwc&key=pw4".to_owned());
    assert_eq!(sqlite.shown(), "sqlite://s.db?mode=rwc&key=[redacted]");
}

#[test]
fn secrets_are_not_quoted_in_errors() {
    let err = load(&[("OIDC_BFF__OIDC__CLIENT_SECRET", "[hunter2]")]).unwrap_err();
    assert!(!err.to_string().contains("hunter2"), "{err}");
    assert_eq!(err.problems[0].key.as_deref(), Some("oidc.client_secret"));
}

#[test]
fn rendered_settings_are_toml_from_the_schema_with_env_comments() {
    let c = load(&[
        ("OIDC_BFF__OIDC__REFRESH_MARGIN", "45"),
        ("OIDC_BFF__API__0__SCOPE", "api.read"),
    ])
    .unwrap();
    let text = c.to_string();
    let doc: toml_edit::DocumentMut = text.parse().expect("valid TOML");
    // Every section of the schema is there, defaults included.
    for section in ["oidc", "session", "csrf", "server", "log"] {
        assert!(doc.get(section).is_some_and(|s| s.is_table()), "{text}");
    }
    assert_eq!(doc["api"][0]["scope"].as_str(), Some("api.read"));
    assert_eq!(doc["oidc"]["refresh_margin"].as_integer(), Some(45));
    assert!(text.contains("refresh_margin = 45  # from OIDC_BFF__OIDC__REFRESH_MARGIN"));
    assert!(text.contains("scope = \"api.read\"  # from OIDC_BFF__API__0__SCOPE"));
    assert!(
        text.contains("client_secret = \"\"  # none: public client"),
        "{text}"
    );
    assert!(text.contains("# default: one per core"), "{text}");
    assert!(!text.contains("[static]"), "{text}");
}

#[test]
fn validation_builds_the_routes_and_the_key_ring_once() {
    let c = load(&[("OIDC_BFF__API__0__TOKEN", "user-or-none")]).unwrap();
    assert_eq!(c.remote_apis().len(), 1);
    assert_eq!(c.remote_apis()[0].local_prefix(), "/api");
    assert!(c.key_ring().is_none(), "memory store: no keys");

    let c = load(&[
        ("OIDC_BFF__SESSION__STORE", "sqlite://sessions.db"),
        (
            "OIDC_BFF__SESSION__ENCRYPTION_KEYS",
            "[\"k1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\"]",
        ),
    ])
    .unwrap();
    assert!(c.key_ring().is_some());
}

fn keys_of(err: &ConfigError) -> Vec<String> {
    err.problems.iter().filter_map(|p| p.key.clone()).collect()
}

#[test]
fn route_rules_load_and_bad_ones_name_their_key() {
    let text = BASE.replace(
        "upstream = \"http://127.0.0.1:7000\"",
        "upstream = \"http://127.0.0.1:7000\"\nrequire = { groups = [\"admin\"], email_domain = \"example.com\" }",
    );
    let c = GatewayConfig::from_toml_str(&text, [("", "")]).unwrap();
    assert_eq!(
        c.api[0].require,
        Require::new().groups(["admin"]).email_domain("example.com")
    );
    assert!(c.to_string().contains("require"), "{c}");
    for (rule, key) in [
        ("{ group = [\"admin\"] }", "api.0.require.group"),
        ("{ groups = 3 }", "api.0.require.groups"),
        (
            "{ email_domain = \"a@example.com\" }",
            "api.0.require.email_domain",
        ),
        ("{ claim = \"dept\" }", "api.0.require.values"),
        ("{ values = [\"x\"] }", "api.0.require.claim"),
        ("{ groups = [\"\"] }", "api.0.require.groups"),
    ] {
        let text = BASE.replace(
            "upstream = \"http://127.0.0.1:7000\"",
            &format!("upstream = \"http://127.0.0.1:7000\"\nrequire = {rule}"),
        );
        let err = GatewayConfig::from_toml_str(&text, [("", "")]).unwrap_err();
        assert!(keys_of(&err).contains(&key.to_owned()), "{rule}: {err}");
    }
}

#[test]
fn the_admin_api_needs_the_ops_listener_and_a_token_from_outside_the_file() {
    let token = "t".repeat(40);
    let ops = "[metrics]\nlisten = \"127.0.0.1:9464\"\n";
    let admin_env = "[admin]\ntoken_env = \"MY_ADMIN_TOKEN\"\n";
    let text = |extra: &str| {
        // `[[api]]` comes last in BASE; tables after it would belong to it,
        // so the sections go first, after the top-level keys.
        let (head, tail) = BASE.split_at(BASE.find("[[api]]").unwrap());
        format!("{head}{extra}\n{tail}")
    };
    let c = GatewayConfig::from_toml_str(
        &text(&format!("{ops}{admin_env}")),
        [("MY_ADMIN_TOKEN", token.as_str())],
    )
    .unwrap();
    assert!(c.admin_token().is_some());
    assert_eq!(c.metrics.listen.unwrap().port(), 9464);
    let shown = c.to_string();
    assert!(
        shown.contains("MY_ADMIN_TOKEN") && !shown.contains(&token),
        "{shown}"
    );
    assert!(!format!("{c:?}").contains(&token));

    // From a file, trailing newline ignored.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("admin-token");
    std::fs::write(&file, format!("{token}\n")).unwrap();
    let c = GatewayConfig::from_toml_str(
        &text(&format!(
            "{ops}[admin]\ntoken_file = \"{}\"\n",
            file.display()
        )),
        [("", "")],
    )
    .unwrap();
    assert!(c.admin_token().is_some());

    for (extra, env, key) in [
        (
            admin_env.to_owned(),
            vec![("MY_ADMIN_TOKEN", token.as_str())],
            "admin",
        ),
        (format!("{ops}{admin_env}"), vec![], "admin.token_env"),
        (
            format!("{ops}{admin_env}"),
            vec![("MY_ADMIN_TOKEN", "short")],
            "admin.token_env",
        ),
        (
            format!("{ops}[admin]\ntoken_file = \"/nonexistent/admin-token\"\n"),
            vec![],
            "admin.token_file",
        ),
        (
            format!("{ops}[admin]\ntoken_env = \"A\"\ntoken_file = \"f\"\n"),
            vec![("A", token.as_str())],
            "admin.token_env",
        ),
        (
            format!("{ops}[admin]\ntoken = \"{token}\"\n"),
            vec![],
            "admin.token",
        ),
        (
            "[metrics]\nlisten = \"127.0.0.1:8080\"\n".to_owned(),
            vec![],
            "metrics.listen",
        ),
        (
            "[metrics]\nlisten = \"0.0.0.0:8080\"\n".to_owned(),
            vec![],
            "metrics.listen",
        ),
    ] {
        let err = GatewayConfig::from_toml_str(&text(&extra), env.clone()).unwrap_err();
        assert!(keys_of(&err).contains(&key.to_owned()), "{extra}: {err}");
        assert!(!err.to_string().contains(&token), "{err}");
    }
}
