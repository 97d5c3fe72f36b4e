//! The examples' surroundings: a tiny API on loopback that greets the
//! token's subject, and a cookie-keeping "browser" that signs in without a
//! form (the dev IdP needs none).
#![allow(dead_code)]

use axum::http::{HeaderMap, StatusCode, Uri};
use base64::Engine as _;

type Error = Box<dyn std::error::Error>;

/// An API on loopback that greets the token's subject.
pub async fn start_api() -> Result<String, Error> {
    async fn greet(uri: Uri, headers: HeaderMap) -> (StatusCode, String) {
        let token = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        let sub = token
            .and_then(|t| t.split('.').nth(1))
            .and_then(|p| {
                base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .decode(p)
                    .ok()
            })
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .and_then(|c| c["sub"].as_str().map(str::to_owned));
        match sub {
            Some(sub) => (
                StatusCode::OK,
                format!("API says hello to {sub} at {}", uri.path()),
            ),
            None => (StatusCode::UNAUTHORIZED, "no token".into()),
        }
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    let app = axum::Router::new().fallback(greet);
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(url)
}

/// Signs in like a browser would, minus the browser: the dev IdP signs
/// the user in without a form.
pub struct Browser {
    base: String,
    http: reqwest::Client,
    session: std::sync::Mutex<Option<String>>,
}

impl Browser {
    pub fn new(base: &str) -> Result<Self, Error> {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(Self {
            base: base.to_owned(),
            http,
            session: Default::default(),
        })
    }

    pub async fn sign_in(&self) -> Result<(), Error> {
        let login = self
            .http
            .get(format!("{}/bff/login", self.base))
            .send()
            .await?;
        let login_cookie = cookie(&login, "__Host-bff-login").ok_or("no login cookie")?;
        let at_idp = self.http.get(location(&login)?).send().await?;
        let callback = self
            .http
            .get(location(&at_idp)?)
            .header("cookie", login_cookie)
            .send()
            .await?;
        *self.session.lock().map_err(|_| "lock")? =
            Some(cookie(&callback, "__Host-bff").ok_or("no session cookie")?);
        Ok(())
    }

    pub async fn api(&self, path: &str) -> Result<(StatusCode, String), Error> {
        let mut request = self
            .http
            .get(format!("{}{path}", self.base))
            .header("x-csrf", "1");
        if let Some(session) = self.session.lock().map_err(|_| "lock")?.clone() {
            request = request.header("cookie", session);
        }
        let response = request.send().await?;
        Ok((response.status(), response.text().await?))
    }
}

fn location(response: &reqwest::Response) -> Result<String, Error> {
    Ok(response
        .headers()
        .get("location")
        .ok_or("no redirect")?
        .to_str()?
        .to_owned())
}

/// `name=value` of the cookie `name` set by a response.
fn cookie(response: &reqwest::Response, name: &str) -> Option<String> {
    response
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|v| v.split(';').next())
        .find(|pair| pair.starts_with(&format!("{name}=")))
        .map(str::to_owned)
}

/// Fails the example unless `got` is `expected`: CI runs every example, so a
/// broken one fails the build instead of printing a wrong answer.
pub fn expect(what: &str, got: StatusCode, expected: StatusCode) -> Result<(), Error> {
    if got == expected {
        Ok(())
    } else {
        Err(format!("{what}: expected {expected}, got {got}").into())
    }
}
