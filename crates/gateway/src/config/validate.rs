//! Validation: one check per section of the file, every problem reported at
//! once. What the checks build on the way (the key ring, the proxy routes)
//! is kept, so the gateway does not build it a second time.

use oidc_bff::proxy::RemoteApi;
use oidc_bff::tokens::store::KeyRing;
use oidc_bff::{OidcConfig, TokenPolicy};
use url::Url;

use super::{ApiConfig, Built, GatewayConfig, StoreKind};

/// The problems found so far: dotted key and message.
#[derive(Default)]
pub(super) struct Found(Vec<(String, String)>);

impl Found {
    pub(super) fn add(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.0.push((key.into(), message.into()));
    }

    pub(super) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Checks every section of `c`: the objects built from it, or all problems
/// found (dotted key and message), in the order of the file's sections.
pub(super) fn validate(c: &GatewayConfig) -> Result<Built, Vec<(String, String)>> {
    let mut found = Found::default();
    public_url(c, &mut found);
    oidc(&c.oidc, "oidc", &mut found);
    let key_ring = session(c, &mut found);
    csrf(c, &mut found);
    server(c, &mut found);
    static_files(c, &mut found);
    log(c, &mut found);
    metrics(c, &mut found);
    let remote_apis = api(&c.api, &c.oidc, "api", "/bff", &mut found);
    metrics_and_admin(c, &mut found);
    let frontend_apis = super::frontend::validate(c, &mut found);
    if found.is_empty() {
        Ok(Built {
            key_ring,
            remote_apis,
            admin_token: None,
            frontend_apis,
            oidc_digests: Vec::new(),
        })
    } else {
        Err(found.0)
    }
}

/// `[metrics]`: its own listener, never the public one.
fn metrics(c: &GatewayConfig, found: &mut Found) {
    if let Some(listen) = c.metrics.listen {
        if listen.port() == 0 {
            found.add("metrics.listen", "needs a port (0 would pick a random one)");
        } else if listen.port() == c.listen.port()
            && (listen.ip() == c.listen.ip()
                || listen.ip().is_unspecified()
                || c.listen.ip().is_unspecified())
        {
            found.add(
                "metrics.listen",
                "must differ from `listen`: metrics are never served on the public port",
            );
        }
    }
}

/// `public_url`.
fn public_url(c: &GatewayConfig, found: &mut Found) {
    match c.public_url.scheme() {
        "https" => {}
        "http" if is_loopback(&c.public_url) => {}
        "http" => found.add(
            "public_url",
            "must be an https URL (http only for loopback): the session cookie is Secure",
        ),
        _ => found.add("public_url", "must be an http(s) URL"),
    }
    if c.public_url.query().is_some() || c.public_url.fragment().is_some() {
        found.add("public_url", "must not have a query or fragment");
    }
}

/// `[oidc]`; the token engine's own checks run when nothing else is wrong.
pub(super) fn oidc(o: &OidcConfig, at: &str, found: &mut Found) {
    let before = found.0.len();
    match o.authority.scheme() {
        "https" => {}
        "http" if is_loopback(&o.authority) => {}
        _ => found.add(
            format!("{at}.authority"),
            "must be an https URL (http is accepted for loopback only)",
        ),
    }
    if o.client_id.is_empty() {
        found.add(format!("{at}.client_id"), "must not be empty");
    }
    if !o.scopes.iter().any(|s| s == "openid") {
        found.add(format!("{at}.scopes"), "must include \"openid\"");
    }
    for (key, value) in [
        ("connect_timeout", o.connect_timeout),
        ("request_timeout", o.request_timeout),
    ] {
        if value.is_zero() {
            found.add(format!("{at}.{key}"), "must be greater than zero");
        }
    }
    // Client authentication: `client_auth`, `client_key`, `client_key_id`,
    // `client_key_alg` and the secret fit together.
    for (key, why) in o.client_authentication_problems() {
        found.add(format!("{at}.{key}"), why);
    }
    if o.allow_bearer_downgrade && !o.dpop {
        found.add(
            format!("{at}.allow_bearer_downgrade"),
            "has no effect without `oidc.dpop = true`",
        );
    }
    // The engine's own checks, when nothing else is wrong (with the
    // file's other sections too, for the top-level `[oidc]`).
    let clean = if at == "oidc" {
        found.is_empty()
    } else {
        found.0.len() == before
    };
    if clean && let Err(err) = o.validate() {
        found.add(at, err.to_string());
    }
}

/// `[session]`: the key ring of a persistent store.
fn session(c: &GatewayConfig, found: &mut Found) -> Option<KeyRing> {
    let mut key_ring = None;
    if c.session.store != StoreKind::Memory {
        if c.session.encryption_keys.is_empty() {
            found.add(
                "session.encryption_keys",
                "a persistent session store needs at least one key (\"id:base64 of 32 random \
                 bytes\", e.g. from `openssl rand -base64 32`): tokens are encrypted at rest",
            );
        } else {
            match KeyRing::from_config(&c.session.encryption_keys) {
                Ok(keys) => key_ring = Some(keys),
                Err(err) => found.add("session.encryption_keys", err.to_string()),
            }
        }
    }
    if c.session.operation_timeout.is_zero() {
        found.add("session.operation_timeout", "must be greater than zero");
    }
    let cookie = &c.session.cookie_name;
    if cookie.is_empty()
        || !cookie
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    {
        found.add(
            "session.cookie_name",
            "may only hold letters, digits, '-', '_' and '.'",
        );
    }
    key_ring
}

/// `[csrf]`.
fn csrf(c: &GatewayConfig, found: &mut Found) {
    if let Err(why) = oidc_bff::csrf::check_header_name(&c.csrf.header) {
        found.add("csrf.header", why);
    }
    if let Err(why) = oidc_bff::csrf::check_header_value(&c.csrf.value) {
        found.add("csrf.value", why);
    }
}

/// `[server]`.
fn server(c: &GatewayConfig, found: &mut Found) {
    if c.server.request_timeout.is_zero() {
        found.add("server.request_timeout", "must be greater than zero");
    }
    if let Some(tls) = &c.server.tls {
        if let Err(problem) = crate::tls::load_certified_key(tls) {
            found.add(problem.key, problem.message);
        }
        // A non-loopback http URL is refused by `public_url` already.
        if c.public_url.scheme() == "http" && is_loopback(&c.public_url) {
            found.add(
                "public_url",
                "must be an https URL when the gateway serves TLS (`[server.tls]`)",
            );
        }
        if let Some(redirect) = tls.redirect_http
            && redirect.port() == c.listen.port()
            && (redirect.ip() == c.listen.ip()
                || redirect.ip().is_unspecified()
                || c.listen.ip().is_unspecified())
        {
            found.add(
                "server.tls.redirect_http",
                "must differ from `listen`, which serves HTTPS",
            );
        }
    }
}

/// `[static]`.
fn static_files(c: &GatewayConfig, found: &mut Found) {
    if let Some(s) = &c.static_files
        && !s.dir.is_dir()
    {
        found.add(
            "static.dir",
            format!("{} is not a directory", s.dir.display()),
        );
    }
}

/// `[log]`.
fn log(c: &GatewayConfig, found: &mut Found) {
    if let Err(e) = tracing_subscriber::EnvFilter::try_new(&c.log.level) {
        found.add("log.level", format!("not a valid filter: {e}"));
    }
}

/// `[[api]]`: the proxy route of each entry.
pub(super) fn api(
    apis: &[ApiConfig],
    oidc: &OidcConfig,
    at: &str,
    base_path: &str,
    found: &mut Found,
) -> Vec<RemoteApi> {
    let mut seen = Vec::new();
    let mut routes = Vec::with_capacity(apis.len());
    for (i, api) in apis.iter().enumerate() {
        let key = |k: &str| format!("{at}.{i}.{k}");
        let path = api.path.as_str();
        if !path.starts_with('/') || path.len() < 2 {
            found.add(key("path"), "must be a path like \"/api\"");
        } else if path.ends_with('/')
            || path.contains(['?', '#', '%', '*', '{', '}', ' '])
            || path.split('/').any(|s| s == "." || s == "..")
            || path.contains("//")
        {
            found.add(
                key("path"),
                "must be a plain path like \"/api\" (no trailing '/', no '..', '%', '*', '?' or '#')",
            );
        } else if is_under(path, base_path)
            || is_under(base_path, path)
            || is_under(path, "/healthz")
            || is_under(path, "/readyz")
        {
            found.add(
                key("path"),
                format!(
                    "collides with the gateway's own endpoints ({base_path}, /healthz, /readyz)"
                ),
            );
        } else if let Some(j) = seen
            .iter()
            .position(|p: &&str| is_under(path, p) || is_under(p, path))
        {
            found.add(key("path"), format!("overlaps with {at}.{j}.path"));
        }
        seen.push(path);
        if !matches!(api.upstream.scheme(), "http" | "https") || api.upstream.host().is_none() {
            found.add(key("upstream"), "must be an http(s) URL");
        }
        if api.upstream.query().is_some() || api.upstream.fragment().is_some() {
            found.add(key("upstream"), "must not have a query or fragment");
        }
        if matches!(api.token, TokenPolicy::Client | TokenPolicy::UserOrClient)
            && oidc.client_secret.is_none()
            && oidc.client_key.is_none()
        {
            found.add(
                key("token"),
                "client tokens need `oidc.client_secret` (or `oidc.client_secret_file`) or `oidc.client_key`",
            );
        }
        if !api.upstream.username().is_empty() || api.upstream.password().is_some() {
            found.add(key("upstream"), "must not hold credentials");
        }
        if api.timeout.is_zero() {
            found.add(key("timeout"), "must be greater than zero");
        }
        if api.connect_timeout.is_zero() {
            found.add(key("connect_timeout"), "must be greater than zero");
        }
        if let Err((field, why)) = api.require.validate() {
            found.add(key(&format!("require.{field}")), why);
        }
        if api.websocket_session_check.is_zero() {
            found.add(key("websocket_session_check"), "must be greater than zero");
        }
        if let Some(methods) = &api.methods {
            if methods.is_empty() {
                found.add(key("methods"), "must name at least one method");
            }
            for (j, method) in methods.iter().enumerate() {
                if !super::KNOWN_METHODS.contains(&method.as_str()) {
                    found.add(
                        key(&format!("methods.{j}")),
                        format!(
                            "unknown method {method:?}; expected one of {}",
                            super::KNOWN_METHODS.join(", ")
                        ),
                    );
                }
            }
        }
        let route = api.remote_api();
        if found.is_empty() {
            // The proxy's own checks, as a backstop.
            if let Err(err) = route.validate() {
                found.add(format!("{at}.{i}"), err.to_string());
            }
        }
        routes.push(route);
    }
    routes
}

/// `[metrics]` and `[admin]`: the operations listener is never the public
/// one, and the admin API needs it.
fn metrics_and_admin(c: &GatewayConfig, found: &mut Found) {
    if let Some(ops) = c.metrics.listen {
        let public = c.listen;
        let same_ip =
            ops.ip() == public.ip() || ops.ip().is_unspecified() || public.ip().is_unspecified();
        if ops.port() != 0 && ops.port() == public.port() && same_ip {
            found.add(
                "metrics.listen",
                "must differ from `listen`: the operations endpoints are never served on the public port",
            );
        }
    }
    if !c.admin.is_off() && c.metrics.listen.is_none() {
        found.add(
            "admin",
            "the admin API is served on the operations listener only: set `metrics.listen`",
        );
    }
}

pub(super) fn is_under(path: &str, prefix: &str) -> bool {
    path == prefix
        || path
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.starts_with('/'))
}

pub(super) fn is_loopback(url: &Url) -> bool {
    match url.host() {
        // RFC 6761: `localhost` and names under it are loopback.
        Some(url::Host::Domain(d)) => d == "localhost" || d.ends_with(".localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}
