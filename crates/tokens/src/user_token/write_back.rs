//! Storing renewed tokens: a versioned (fenced) write that never rolls newer
//! tokens back, retried when the store fails — the provider has already
//! rotated the refresh token, so giving up early would lose the only one
//! that still works.

use std::time::Duration;

use crate::error::TokenError;
use crate::provider::TokenResponse;
use crate::session::{ResourceToken, SessionId, SessionRecord, UserTokens};
use crate::store::{StoreError, UpdateOutcome, Versioned};

use super::Host;

/// Pauses between attempts when the store fails.
const WRITE_BACK_RETRIES: [Duration; 3] = [
    Duration::from_millis(50),
    Duration::from_millis(200),
    Duration::from_millis(800),
];

/// How many conflicts with changes that left the tokens alone are merged
/// before giving up.
const MAX_CONFLICTS: u32 = 5;

/// Writes a change to the session's tokens with a versioned write: `apply`
/// runs on the latest record, again after a conflict with a change that
/// left the tokens alone. A conflict with newer tokens keeps those (a slow
/// writer never rolls them back). Store failures are retried a few times.
pub(crate) async fn write_back<H: Host>(
    host: &H,
    session_id: &SessionId,
    mut current: Versioned,
    apply: impl Fn(&mut SessionRecord),
) -> Result<(), TokenError> {
    let mut retries = WRITE_BACK_RETRIES.iter();
    let mut conflicts = 0;
    loop {
        let mut record = SessionRecord::clone(&current.record);
        apply(&mut record);
        let outcome = match host
            .store()
            .update(session_id, record, current.version)
            .await
        {
            Ok(outcome) => outcome,
            Err(err) => match retries.next() {
                Some(pause) => {
                    tracing::warn!(error = %err, "storing refreshed tokens failed; retrying");
                    tokio::time::sleep(*pause).await;
                    continue;
                }
                None => return Err(err.into()),
            },
        };
        match outcome {
            UpdateOutcome::Updated(_) => {
                tracing::debug!("tokens refreshed and stored");
                return Ok(());
            }
            UpdateOutcome::Missing => return Err(TokenError::NotAuthenticated),
            UpdateOutcome::Conflict => {
                conflicts += 1;
                if conflicts > MAX_CONFLICTS {
                    return Err(TokenError::Store(StoreError::Unavailable(
                        "the session kept changing during the token update".into(),
                    )));
                }
                let latest = host
                    .load_latest_session(session_id)
                    .await?
                    .ok_or(TokenError::NotAuthenticated)?;
                if latest.record.tokens.refresh_token != current.record.tokens.refresh_token {
                    // Someone stored newer tokens: never overwrite them
                    // with ours. Our access token is still valid to use.
                    tracing::warn!("tokens changed during the refresh; kept the newer ones");
                    return Ok(());
                }
                // Something else changed (not the tokens): merge and retry.
                current = latest;
            }
        }
    }
}

/// The session's token set from a token response that arrived at `now`;
/// values the response lacks are kept from `previous` (none at sign-in).
pub(crate) fn user_tokens(
    response: TokenResponse,
    previous: Option<&UserTokens>,
    now: u64,
    default_lifetime: Duration,
) -> UserTokens {
    let lifetime = response.expires_in.unwrap_or(default_lifetime.as_secs());
    UserTokens {
        access_token: response.access_token,
        expires_at: now.saturating_add(lifetime),
        token_type: response.token_type,
        refresh_token: response
            .refresh_token
            .or_else(|| previous.and_then(|p| p.refresh_token.clone())),
        id_token: response
            .id_token
            .or_else(|| previous.and_then(|p| p.id_token.clone())),
        scope: response
            .scope
            .or_else(|| previous.and_then(|p| p.scope.clone())),
        refreshed_at: previous.map(|_| now),
        refresh_count: previous.map_or(0, |p| p.refresh_count + 1),
        issued_at: Some(now),
    }
}

/// Puts a renewal's answer into `record`: the sign-in token set when `key`
/// is `None`, else the resource token `key` (and the rotated refresh token,
/// which all of the session's tokens share).
pub(crate) fn apply_renewal(
    record: &mut SessionRecord,
    key: Option<&str>,
    response: &TokenResponse,
    now: u64,
    default_lifetime: Duration,
) {
    match key {
        None => {
            record.tokens = user_tokens(
                response.clone(),
                Some(&record.tokens),
                now,
                default_lifetime,
            );
        }
        Some(key) => {
            let lifetime = response.expires_in.unwrap_or(default_lifetime.as_secs());
            if let Some(rotated) = &response.refresh_token {
                record.tokens.refresh_token = Some(rotated.clone());
            }
            record.tokens.refreshed_at = Some(now);
            record.tokens.refresh_count += 1;
            record.resource_tokens.insert(
                key.to_owned(),
                ResourceToken {
                    access_token: response.access_token.clone(),
                    expires_at: now.saturating_add(lifetime),
                    token_type: response.token_type.clone(),
                    issued_at: Some(now),
                },
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(json: &str) -> TokenResponse {
        TokenResponse::from_json(json.as_bytes()).unwrap()
    }

    #[test]
    fn a_renewal_keeps_what_the_answer_lacks_and_records_when_it_arrived() {
        let first = user_tokens(
            response(
                r#"{"access_token":"a1","token_type":"Bearer","expires_in":5,"refresh_token":"r1"}"#,
            ),
            None,
            1000,
            Duration::from_secs(300),
        );
        assert_eq!((first.issued_at, first.expires_at), (Some(1000), 1005));
        assert_eq!(first.refresh_count, 0);
        let second = user_tokens(
            response(r#"{"access_token":"a2","token_type":"Bearer"}"#),
            Some(&first),
            1004,
            Duration::from_secs(300),
        );
        assert_eq!((second.issued_at, second.expires_at), (Some(1004), 1304));
        assert_eq!(second.refresh_token, first.refresh_token);
        assert_eq!((second.refreshed_at, second.refresh_count), (Some(1004), 1));
    }
}
