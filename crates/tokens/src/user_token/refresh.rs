//! The refresh grant itself: one `refresh_token` request to the provider and
//! the check of the id_token that may come back, ending in a typed
//! [`GrantOutcome`]. Nothing here touches the session store.

use crate::error::{OAuthErrorCode, TokenError, ValidationKind};
use crate::id_token::{IdTokenClaims, IdTokenExpectations};
use crate::metrics::RefreshOutcome;
use crate::provider::TokenResponse;
use crate::secret::RefreshToken;
use crate::session::SessionRecord;

use super::lease::Lease;
use super::{Host, UserTokenRequest};

/// How a refresh grant ended.
#[derive(Debug)]
pub(crate) enum GrantOutcome {
    /// New tokens; a returned id_token was valid and about the same user.
    Renewed(TokenResponse),
    /// The provider says the refresh token will never work again
    /// (`invalid_grant`, `invalid_token`, `unauthorized_client`).
    DeadGrant(OAuthErrorCode),
    /// The provider refused this request but not the grant (`invalid_scope`,
    /// `invalid_target`, ...): the session stays, this token cannot be had.
    Refused(TokenError),
    /// Nothing is known about the grant: the provider is unreachable, slow,
    /// answered 5xx or something that is not an OAuth answer, or the lease
    /// was lost before the grant was sent (then no grant was sent).
    Transient(TokenError),
    /// The provider renewed, but the id_token that came back cannot be
    /// checked now (its keys are out of reach). `rotated` is the new
    /// refresh token, which must be kept: the old one is spent.
    KeysUnreachable {
        rotated: Option<RefreshToken>,
        cause: TokenError,
    },
    /// The id_token that came back is invalid or about another user
    /// (OIDC Core 12.2). `rotated` is the refresh token the provider issued
    /// with it: the session ends, so it must be revoked, not kept.
    IdTokenRejected {
        rotated: Option<RefreshToken>,
        cause: TokenError,
    },
}

impl GrantOutcome {
    /// The `outcome` label of `oidc_bff_token_refreshes_total`.
    pub(crate) fn metric(&self) -> RefreshOutcome {
        match self {
            Self::Renewed(_) => RefreshOutcome::Renewed,
            Self::DeadGrant(_) => RefreshOutcome::DeadGrant,
            Self::Refused(_) => RefreshOutcome::Refused,
            Self::Transient(_) => RefreshOutcome::Transient,
            Self::KeysUnreachable { .. } => RefreshOutcome::KeysUnreachable,
            Self::IdTokenRejected { .. } => RefreshOutcome::IdTokenRejected,
        }
    }
}

/// Spends `refresh_token` for the token `request` asks for, unless `lease`
/// has been lost by the time the request would be sent.
pub(crate) async fn grant<H: Host>(
    host: &H,
    record: &SessionRecord,
    request: &UserTokenRequest,
    refresh_token: &RefreshToken,
    lease: &Lease,
) -> GrantOutcome {
    let metadata = match host.metadata().await {
        Ok(m) => m,
        Err(err) => return GrantOutcome::Transient(err),
    };
    let mut form = vec![
        ("grant_type", "refresh_token".to_owned()),
        ("refresh_token", refresh_token.secret().to_owned()),
    ];
    if let Some(scope) = &request.scope {
        form.push(("scope", scope.clone()));
    }
    if let Some(resource) = &request.resource {
        form.push(("resource", resource.clone()));
    }
    if !lease.is_held() {
        // Another instance may hold the lease now: spending the refresh
        // token here could use it twice.
        return GrantOutcome::Transient(TokenError::ProviderUnavailable(
            "the refresh lease was lost".into(),
        ));
    }
    // Every refresh proves possession of the session's key (RFC 9449 §5).
    let response = match host
        .token_request(&metadata, form, record.dpop_key.as_ref())
        .await
    {
        Ok(response) => response,
        Err(err) => return classify_failure(err),
    };
    let Some(id_token) = &response.id_token else {
        return GrantOutcome::Renewed(response);
    };
    // A returned id_token must be valid and about the same user (OIDC Core 12.2).
    let checked = async {
        let jwks = host.signing_keys(&metadata).await;
        let validator = host.id_token_validator(&metadata);
        let claims = validator
            .validate(
                id_token,
                &jwks,
                IdTokenExpectations {
                    nonce: None,
                    access_token: Some(&response.access_token),
                },
            )
            .await?;
        validator.validate_refreshed(&claims, &original_claims(record))
    }
    .await;
    match checked {
        Ok(()) => GrantOutcome::Renewed(response),
        Err(cause) if cannot_verify_now(&cause) => GrantOutcome::KeysUnreachable {
            rotated: response.refresh_token,
            cause,
        },
        Err(cause) => GrantOutcome::IdTokenRejected {
            rotated: response.refresh_token,
            cause,
        },
    }
}

/// What a failed token request says about the grant.
fn classify_failure(err: TokenError) -> GrantOutcome {
    match err {
        TokenError::Provider { error, .. } if error.is_dead_grant() => {
            GrantOutcome::DeadGrant(error)
        }
        err @ (TokenError::Provider { .. } | TokenError::DpopDowngrade) => {
            GrantOutcome::Refused(err)
        }
        // A 4xx without an OAuth error body (a proxy's or firewall's page)
        // or an unreadable 200 says nothing about the grant.
        TokenError::UnexpectedStatus { status } => GrantOutcome::Transient(
            TokenError::ProviderUnavailable(format!("the token endpoint answered {status}")),
        ),
        TokenError::InvalidResponse(why) => {
            GrantOutcome::Transient(TokenError::ProviderUnavailable(why))
        }
        other => GrantOutcome::Transient(other),
    }
}

/// Whether a refreshed id_token could not be checked *now*, as opposed to
/// being wrong: the JWKS is unreachable, or names no key for the token
/// because a refetch failed or is rate limited. The token came straight from
/// the token endpoint, so this is a provider availability problem.
fn cannot_verify_now(err: &TokenError) -> bool {
    err.is_transient()
        || matches!(err, TokenError::InvalidIdToken(e) if e.kind() == ValidationKind::UnknownKey)
}

/// The original id_token's identity claims, as kept in the session.
fn original_claims(record: &SessionRecord) -> IdTokenClaims {
    let get_str = |k: &str| {
        record
            .claims
            .get(k)
            .and_then(|v| v.as_str())
            .map(str::to_owned)
    };
    let get_u64 = |k: &str| record.claims.get(k).and_then(|v| v.as_u64());
    let aud = match record.claims.get("aud") {
        Some(serde_json::Value::String(s)) => vec![s.clone()],
        Some(serde_json::Value::Array(a)) => a
            .iter()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect(),
        _ => Vec::new(),
    };
    IdTokenClaims {
        iss: get_str("iss").unwrap_or_default(),
        sub: record.sub.clone(),
        aud,
        exp: get_u64("exp").unwrap_or_default(),
        iat: get_u64("iat").unwrap_or_default(),
        nonce: None,
        azp: get_str("azp"),
        sid: record.sid.clone(),
        auth_time: get_u64("auth_time"),
        at_hash: None,
        all: record.claims.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ValidationError;

    #[test]
    fn failures_are_classified_by_variant() {
        let provider = |code: &str| TokenError::Provider {
            error: code.into(),
            description: None,
        };
        for dead in ["invalid_grant", "invalid_token", "unauthorized_client"] {
            assert!(matches!(
                classify_failure(provider(dead)),
                GrantOutcome::DeadGrant(_)
            ));
        }
        assert!(matches!(
            classify_failure(provider("invalid_scope")),
            GrantOutcome::Refused(TokenError::Provider { .. })
        ));
        // Not an OAuth error: a proxy's 403 page, an unreadable 200, a 503.
        for transient in [
            TokenError::UnexpectedStatus { status: 403 },
            TokenError::InvalidResponse("not JSON".into()),
            TokenError::ProviderUnavailable("provider answered 503".into()),
        ] {
            match classify_failure(transient) {
                GrantOutcome::Transient(err) => assert!(err.is_transient(), "{err:?}"),
                other => panic!("expected Transient, got {other:?}"),
            }
        }
    }

    #[test]
    fn only_unknown_keys_and_outages_mean_cannot_verify_now() {
        let unknown = TokenError::InvalidIdToken(ValidationError::new(
            ValidationKind::UnknownKey,
            "no matching key in the provider's JWKS",
        ));
        assert!(cannot_verify_now(&unknown));
        assert!(cannot_verify_now(&TokenError::ProviderUnavailable(
            "timed out".into()
        )));
        // The same words in a rejection do not count: only the kind does.
        let rejected = TokenError::InvalidIdToken("no matching key, says the token".into());
        assert!(!cannot_verify_now(&rejected));
        assert!(!cannot_verify_now(&TokenError::InvalidIdToken(
            "sub differs".into()
        )));
    }
}
