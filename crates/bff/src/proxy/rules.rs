//! Route rules: what a proxied route requires of the signed-in user's
//! claims ([`Require`]), checked before any token work.
//!
//! The language is deliberately small. A rule has up to three conditions;
//! **all** that are set must hold, and each holds when **any** of its
//! values matches:
//!
//! | condition | holds when |
//! |---|---|
//! | `groups = ["admin", "ops"]` | the `groups` claim (a string, or an array of strings) holds one of them |
//! | `email_domain = "example.com"` (or a list) | the `email` claim's domain is one of them (exactly, ignoring case; subdomains are other domains) **and** `email_verified` is `true` |
//! | `claim = "department"`, `values = ["sales"]` | the named claim (a string, number or boolean, or an array of them) equals one of the values |
//!
//! In the gateway: `require = { groups = ["admin"] }` on an `[[api]]` entry.
//! A route with a rule needs a signed-in user whatever its token policy:
//! anonymous requests get `401`, a user whose claims do not match `403`
//! (`{"error": "forbidden", ...}`), and in both cases the request goes no
//! further — no token is looked at or refreshed, the upstream is not called.
//! The claims are those of the session: the id_token's at sign-in (merged
//! with userinfo when configured), updated by refreshes that return a new
//! id_token.
//!
//! ```
//! use oidc_bff::proxy::{RemoteApi, Require};
//!
//! let admins = RemoteApi::new("/admin-api", "https://admin.internal/".parse().unwrap())
//!     .require(Require::new().groups(["admin"]).email_domain("example.com"));
//! assert!(admins.validate().is_ok());
//!
//! let claims = serde_json::json!({
//!     "groups": ["staff", "admin"],
//!     "email": "ann@Example.com",
//!     "email_verified": true,
//! });
//! let rule = Require::new().groups(["admin"]).email_domain("example.com");
//! assert!(rule.check(claims.as_object().unwrap()).is_ok());
//! assert!(Require::new().groups(["ops"]).check(claims.as_object().unwrap()).is_err());
//! ```

use axum::response::{IntoResponse, Response};
use http::request::Parts;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};

use crate::bff::Bff;
use crate::error::BffError;
use crate::session::BffSession;

/// What a route requires of the signed-in user's claims; see the
/// [module documentation](self). The default requires nothing.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
#[must_use]
#[non_exhaustive]
pub struct Require {
    /// Any of these in the `groups` claim.
    #[serde(
        default,
        deserialize_with = "one_or_many",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub groups: Vec<String>,
    /// A verified `email` in any of these domains.
    #[serde(
        default,
        rename = "email_domain",
        deserialize_with = "one_or_many",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub email_domains: Vec<String>,
    /// The claim `values` are compared with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claim: Option<String>,
    /// Any of these in `claim`.
    #[serde(
        default,
        deserialize_with = "one_or_many",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub values: Vec<String>,
}

/// Why a user was refused: the condition that failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Unmet {
    /// No listed group in the `groups` claim.
    Groups,
    /// No `email`, an unverified one, or one in another domain.
    EmailDomain,
    /// The named claim holds none of the values.
    Claim,
}

impl std::fmt::Display for Unmet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Unmet::Groups => "this route requires membership of another group",
            Unmet::EmailDomain => "this route requires a verified email address in another domain",
            Unmet::Claim => "this route requires a claim the user does not have",
        })
    }
}

impl Require {
    /// A rule that requires nothing (add conditions with the methods below).
    pub fn new() -> Self {
        Self::default()
    }

    /// Requires one of `groups` in the `groups` claim.
    pub fn groups<I, G>(mut self, groups: I) -> Self
    where
        I: IntoIterator<Item = G>,
        G: Into<String>,
    {
        self.groups = groups.into_iter().map(Into::into).collect();
        self
    }

    /// Requires a verified `email` in `domain` (call again to allow more domains).
    pub fn email_domain(mut self, domain: impl Into<String>) -> Self {
        self.email_domains.push(domain.into());
        self
    }

    /// Requires `claim` to hold one of `values`.
    pub fn claim<I, V>(mut self, claim: impl Into<String>, values: I) -> Self
    where
        I: IntoIterator<Item = V>,
        V: Into<String>,
    {
        self.claim = Some(claim.into());
        self.values = values.into_iter().map(Into::into).collect();
        self
    }

    /// `true` when the rule requires nothing.
    pub fn is_empty(&self) -> bool {
        self.groups.is_empty()
            && self.email_domains.is_empty()
            && self.claim.is_none()
            && self.values.is_empty()
    }

    /// Checks the rule itself: the key at fault (`groups`, `email_domain`,
    /// `claim`, `values`) and why.
    ///
    /// ```
    /// use oidc_bff::proxy::Require;
    ///
    /// assert!(Require::new().email_domain("example.com").validate().is_ok());
    /// assert_eq!(Require::new().email_domain("a@example.com").validate().unwrap_err().0, "email_domain");
    /// assert_eq!(Require::new().claim("dept", Vec::<String>::new()).validate().unwrap_err().0, "values");
    /// ```
    pub fn validate(&self) -> Result<(), (&'static str, &'static str)> {
        if self.groups.iter().any(|g| g.trim().is_empty()) {
            return Err(("groups", "group names must not be empty"));
        }
        for domain in &self.email_domains {
            let plain = |c: char| c.is_alphanumeric() || c == '-' || c == '.';
            if domain.is_empty()
                || !domain.chars().all(plain)
                || domain.starts_with('.')
                || domain.ends_with('.')
                || domain.contains("..")
            {
                return Err((
                    "email_domain",
                    "must be a domain name such as \"example.com\" (no '@', no wildcard)",
                ));
            }
        }
        match (&self.claim, self.values.is_empty()) {
            (Some(claim), _) if claim.trim().is_empty() => Err(("claim", "must name a claim")),
            (Some(_), true) => Err(("values", "`claim` needs at least one value")),
            (None, false) => Err(("claim", "`values` needs the `claim` they are compared with")),
            _ => Ok(()),
        }
    }

    /// Checks a user's claims against the rule.
    pub fn check(&self, claims: &Map<String, Value>) -> Result<(), Unmet> {
        if !self.groups.is_empty() && !holds_any(claims.get("groups"), &self.groups) {
            return Err(Unmet::Groups);
        }
        if !self.email_domains.is_empty() && !self.email_matches(claims) {
            return Err(Unmet::EmailDomain);
        }
        if let Some(claim) = &self.claim
            && !holds_any(claims.get(claim), &self.values)
        {
            return Err(Unmet::Claim);
        }
        Ok(())
    }

    fn email_matches(&self, claims: &Map<String, Value>) -> bool {
        // Some providers send the flag as a string.
        let verified = matches!(claims.get("email_verified"), Some(Value::Bool(true)))
            || matches!(claims.get("email_verified"), Some(Value::String(s)) if s == "true");
        let Some(Value::String(email)) = claims.get("email") else {
            return false;
        };
        let Some((local, domain)) = email.rsplit_once('@') else {
            return false;
        };
        verified
            && !local.is_empty()
            && self
                .email_domains
                .iter()
                .any(|wanted| wanted.eq_ignore_ascii_case(domain))
    }
}

/// Whether a claim (a scalar, or an array of scalars) holds one of `wanted`.
fn holds_any(claim: Option<&Value>, wanted: &[String]) -> bool {
    let one = |v: &Value| match v {
        Value::String(s) => wanted.iter().any(|w| w == s),
        Value::Number(n) => wanted.iter().any(|w| *w == n.to_string()),
        Value::Bool(b) => wanted.iter().any(|w| *w == b.to_string()),
        _ => false,
    };
    match claim {
        Some(Value::Array(items)) => items.iter().any(one),
        Some(other) => one(other),
        None => false,
    }
}

/// A string or a list of strings.
fn one_or_many<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    match OneOrMany::deserialize(d) {
        Ok(OneOrMany::One(one)) => Ok(vec![one]),
        Ok(OneOrMany::Many(many)) => Ok(many),
        Err(_) => Err(serde::de::Error::custom(
            "expected a string or a list of strings",
        )),
    }
}

/// The proxy's rule check, in its pre-token sequence: `Ok` when the route
/// has no rule (`None`: the session is not read) or the signed-in user meets
/// it (the session, handed on to the token step); else the finished
/// response, 401 (not signed in) or 403. Reads the session and nothing
/// else: no token is looked at.
pub(crate) async fn enforce(
    bff: &Bff,
    require: &Require,
    parts: &Parts,
) -> Result<Option<BffSession>, Box<Response>> {
    if require.is_empty() {
        return Ok(None);
    }
    let refused = |e: BffError| Box::new(e.into_response());
    let cookie = crate::cookies::read(&parts.headers, &bff.settings().cookie_name);
    let session = BffSession::for_request(bff, parts, cookie)
        .await
        .map_err(refused)?;
    let Some(session) = session else {
        return Err(refused(BffError::Token(
            oidc_bff_tokens::TokenError::NotAuthenticated,
        )));
    };
    require.check(session.claims()).map_err(|unmet| {
        tracing::info!(sub = session.sub(), reason = ?unmet, "route rule refused the user");
        refused(BffError::Forbidden(unmet.to_string()))
    })?;
    Ok(Some(session))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn claims(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn groups_match_a_string_or_an_array() {
        let rule = Require::new().groups(["admin", "ops"]);
        assert!(rule.check(&claims(json!({"groups": ["x", "ops"]}))).is_ok());
        assert!(rule.check(&claims(json!({"groups": "admin"}))).is_ok());
        for refused in [
            json!({}),
            json!({"groups": []}),
            json!({"groups": ["Admin"]}),
            json!({"groups": "admins"}),
            json!({"groups": {"admin": true}}),
            json!({"groups": [["admin"]]}),
        ] {
            assert_eq!(
                rule.check(&claims(refused.clone())),
                Err(Unmet::Groups),
                "{refused}"
            );
        }
        assert!(Require::new().check(&claims(json!({}))).is_ok());
    }

    #[test]
    fn email_domain_needs_a_verified_address_in_that_very_domain() {
        let rule = Require::new().email_domain("example.com");
        assert!(
            rule.check(&claims(
                json!({"email": "a@EXAMPLE.com", "email_verified": true})
            ))
            .is_ok()
        );
        assert!(
            rule.check(&claims(
                json!({"email": "a@example.com", "email_verified": "true"})
            ))
            .is_ok()
        );
        for refused in [
            json!({"email": "a@example.com"}),
            json!({"email": "a@example.com", "email_verified": false}),
            json!({"email": "a@sub.example.com", "email_verified": true}),
            json!({"email": "a@example.com.evil.org", "email_verified": true}),
            json!({"email": "a@evil.org@example.co", "email_verified": true}),
            json!({"email": "@example.com", "email_verified": true}),
            json!({"email": "example.com", "email_verified": true}),
            json!({"email": ["a@example.com"], "email_verified": true}),
        ] {
            assert_eq!(
                rule.check(&claims(refused.clone())),
                Err(Unmet::EmailDomain),
                "{refused}"
            );
        }
    }

    #[test]
    fn any_claim_and_all_conditions() {
        let rule = Require::new().claim("level", ["3", "true"]).groups(["a"]);
        assert!(
            rule.check(&claims(json!({"level": 3, "groups": ["a"]})))
                .is_ok()
        );
        assert!(
            rule.check(&claims(json!({"level": [true], "groups": "a"})))
                .is_ok()
        );
        assert_eq!(
            rule.check(&claims(json!({"level": 4, "groups": "a"}))),
            Err(Unmet::Claim)
        );
        assert_eq!(rule.check(&claims(json!({"level": 3}))), Err(Unmet::Groups));
    }

    #[test]
    fn deserializes_one_or_many_and_refuses_unknown_keys() {
        let r: Require =
            serde_json::from_value(json!({"groups": "admin", "email_domain": ["a.org", "b.org"]}))
                .unwrap();
        assert_eq!(
            r,
            Require::new()
                .groups(["admin"])
                .email_domain("a.org")
                .email_domain("b.org")
        );
        assert!(serde_json::from_value::<Require>(json!({"group": "admin"})).is_err());
        assert!(serde_json::from_value::<Require>(json!({"groups": 3})).is_err());
        assert!(Require::new().validate().is_ok());
        assert_eq!(
            Require::new().groups([""]).validate().unwrap_err().0,
            "groups"
        );
        assert_eq!(
            Require {
                values: vec!["x".into()],
                ..Require::new()
            }
            .validate()
            .unwrap_err()
            .0,
            "claim"
        );
        for bad in [
            "",
            "*.example.com",
            "a@b.c",
            ".example.com",
            "example..com",
            "exa mple.com",
        ] {
            assert!(
                Require::new().email_domain(bad).validate().is_err(),
                "{bad}"
            );
        }
    }
}
