//! Secret newtypes: tokens, codes and client secrets.
//!
//! Every secret the engine handles is wrapped in a type whose `Debug` and
//! `Display` print `[redacted]`, so a secret cannot reach a log line or an
//! error message by accident. The raw value is only reachable through an
//! explicit call to [`secret()`](AccessToken::secret).
//!
//! ```
//! use oidc_bff_tokens::AccessToken;
//!
//! let token = AccessToken::new("eyJhbGciOi...");
//! assert_eq!(format!("{token:?}"), "AccessToken([redacted])");
//! assert_eq!(token.secret(), "eyJhbGciOi...");
//! ```

use std::sync::Arc;

use serde::{Deserialize, Serialize};

macro_rules! secret_type {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// Wraps a raw value.
            pub fn new(value: impl Into<String>) -> Self {
                Self(value.into())
            }

            /// The raw value. Handle with care: never log it.
            pub fn secret(&self) -> &str {
                &self.0
            }

            /// Consumes the wrapper and returns the raw value.
            pub fn into_secret(self) -> String {
                self.0
            }
        }

        impl std::fmt::Debug for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(concat!(stringify!($name), "([redacted])"))
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("[redacted]")
            }
        }
    };
}

/// An OAuth 2.0 access token.
///
/// Cloning it shares the value rather than copying it: a session's token
/// is handed to every request that sends it (with a ~1 KB JWT, a copy and
/// an allocation per proxied request before; docs/BENCHMARKS.md).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct AccessToken(Arc<str>);

impl AccessToken {
    /// Wraps a raw value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(Arc::from(value.into()))
    }

    /// The raw value. Handle with care: never log it.
    pub fn secret(&self) -> &str {
        &self.0
    }

    /// Consumes the wrapper and returns the raw value.
    pub fn into_secret(self) -> String {
        self.0.as_ref().to_owned()
    }
}

impl std::fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AccessToken([redacted])")
    }
}

impl std::fmt::Display for AccessToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

/// As a plain string, like the other secrets (`#[serde(transparent)]`).
impl Serialize for AccessToken {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for AccessToken {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(AccessToken::new)
    }
}
secret_type!(
    /// An OAuth 2.0 refresh token.
    RefreshToken
);
secret_type!(
    /// An OpenID Connect id_token (a signed JWT, kept as received).
    IdToken
);
secret_type!(
    /// The client secret shared with the provider.
    ClientSecret
);
secret_type!(
    /// An authorization code received at the callback.
    AuthorizationCode
);
secret_type!(
    /// A PKCE code verifier (RFC 7636).
    PkceVerifier
);

/// Compares two secrets (or values derived from them: a `state`, a nonce, a
/// hash) in time independent of their contents; only the length may leak.
/// The one comparison of secrets in this workspace, on `aws-lc-rs`.
///
/// ```
/// use oidc_bff_tokens::secret::constant_time_eq;
///
/// assert!(constant_time_eq(b"abc", b"abc"));
/// assert!(!constant_time_eq(b"abc", b"abd"));
/// ```
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    aws_lc_rs::constant_time::verify_slices_are_equal(a, b).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_never_show_the_value() {
        let secret = ClientSecret::new("hunter2");
        assert!(!format!("{secret:?}").contains("hunter2"));
        assert!(!format!("{secret}").contains("hunter2"));
        assert_eq!(secret.secret(), "hunter2");
    }

    #[test]
    fn serializes_transparently() {
        let token = RefreshToken::new("abc");
        assert_eq!(serde_json::to_string(&token).unwrap(), "\"abc\"");
        let back: RefreshToken = serde_json::from_str("\"abc\"").unwrap();
        assert_eq!(back, token);
        let token = AccessToken::new("abc");
        assert_eq!(serde_json::to_string(&token).unwrap(), "\"abc\"");
        let back: AccessToken = serde_json::from_str("\"abc\"").unwrap();
        assert_eq!(back, token);
        assert!(!format!("{token:?}{token}").contains("abc"));
    }
}
