//! The per-route method allow-list.
//!
//! A route given [`RemoteApi::methods`](crate::proxy::RemoteApi::methods)
//! answers any other method with `405 Method Not Allowed` and an `Allow`
//! header listing the route's methods. The check is the first thing the
//! handler does: before the anti-forgery header, the session and any token
//! work, so a refused method never reaches the store, the provider or the
//! upstream (an anonymous caller gets 405, not 401).
//!
//! The list is exact: `GET` does not imply `HEAD`, nor anything `OPTIONS`.
//!
//! ```
//! use http::Method;
//! use oidc_bff::proxy::RemoteApi;
//!
//! let api = RemoteApi::new("/api", "https://api.example.com/".parse().unwrap())
//!     .methods([Method::GET, Method::POST]);
//! assert!(api.validate().is_ok());
//! ```

use axum::Json;
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, Method, StatusCode, header};

/// The methods a route accepts: every method (the default) or a list.
#[derive(Clone, Debug, Default)]
pub(crate) struct Methods {
    /// `None`: every method.
    allowed: Option<Vec<Method>>,
    /// The `Allow` value, built once.
    allow: Option<HeaderValue>,
}

impl Methods {
    /// Only these methods (duplicates are ignored).
    pub(crate) fn only(methods: impl IntoIterator<Item = Method>) -> Methods {
        let mut allowed: Vec<Method> = Vec::new();
        for m in methods {
            if !allowed.contains(&m) {
                allowed.push(m);
            }
        }
        let joined = allowed
            .iter()
            .map(Method::as_str)
            .collect::<Vec<_>>()
            .join(", ");
        Methods {
            allow: HeaderValue::from_str(&joined).ok(),
            allowed: Some(allowed),
        }
    }

    /// Whether the list is empty (a route that accepts nothing).
    pub(crate) fn is_empty(&self) -> bool {
        self.allowed.as_ref().is_some_and(Vec::is_empty)
    }

    /// The 405 answer for a method the route does not accept, or `None`.
    pub(crate) fn refuse(&self, method: &Method) -> Option<Response> {
        let allowed = self.allowed.as_ref()?;
        if allowed.contains(method) {
            return None;
        }
        let body = serde_json::json!({
            "error": "method_not_allowed",
            "message": format!("this route does not accept {method}"),
        });
        let mut response = (StatusCode::METHOD_NOT_ALLOWED, Json(body)).into_response();
        let headers = response.headers_mut();
        if let Some(allow) = &self.allow {
            headers.insert(header::ALLOW, allow.clone());
        }
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        Some(response)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_other_methods_with_allow() {
        let m = Methods::only([Method::GET, Method::POST, Method::GET]);
        assert!(m.refuse(&Method::GET).is_none());
        assert!(m.refuse(&Method::POST).is_none());
        let refused = m.refuse(&Method::DELETE).unwrap();
        assert_eq!(refused.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(refused.headers()[header::ALLOW], "GET, POST");
        assert!(Methods::default().refuse(&Method::DELETE).is_none());
        assert!(Methods::only([]).is_empty());
    }
}
