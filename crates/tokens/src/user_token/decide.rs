//! The pure part of the engine: what to do with a session's token, given the
//! request and the clock. No I/O, no locks; table-tested below.
//!
//! A token is in one of three states ([`TokenState`]):
//!
//! ```text
//! issued ─────── Fresh ─────── renew_at ──── Due ──── expires_at ── Expired ──►
//!         (first half of the life at least)   (still valid)
//! ```
//!
//! `renew_at = expires_at - min(margin, lifetime / 2)`: the configured margin,
//! but never more than half the token's own lifetime, so a token is never
//! renewed in the first half of its life — a 5 s token renews at 3 s, a 60 s
//! token at 30 s, a one-hour token at 59 min with the default 60 s margin.

use crate::secret::AccessToken;
use crate::session::SessionRecord;

/// When a token issued at `issued_at` and expiring at `expires_at` is due for
/// renewal, with a refresh margin of `margin` seconds.
///
/// Without an issue time (records written by older versions) the margin
/// applies as is.
pub(crate) fn renew_at(issued_at: Option<u64>, expires_at: u64, margin: u64) -> u64 {
    let lead = match issued_at {
        Some(issued) => margin.min(expires_at.saturating_sub(issued) / 2),
        None => margin,
    };
    expires_at.saturating_sub(lead)
}

/// A token found in the session, with its expiry.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Current {
    pub(crate) token: AccessToken,
    pub(crate) expires_at: u64,
}

impl Current {
    /// Whether the token can still be used at `now`.
    pub(crate) fn is_valid_at(&self, now: u64) -> bool {
        now < self.expires_at
    }
}

/// Where a session's token stands at a moment.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum TokenState {
    /// Before its renewal point.
    Fresh(Current),
    /// Past its renewal point but still valid.
    Due(Current),
    /// Expired, or there is none (for a resource token never asked for).
    Expired,
}

impl TokenState {
    /// The state of the token `key` names in `record` (`None`: the
    /// sign-in token) at `now`.
    pub(crate) fn of(record: &SessionRecord, key: Option<&str>, now: u64, margin: u64) -> Self {
        let (token, expires_at, issued_at) = match key {
            None => (
                &record.tokens.access_token,
                record.tokens.expires_at,
                record.tokens.issued_at,
            ),
            Some(key) => match record.resource_tokens.get(key) {
                Some(t) => (&t.access_token, t.expires_at, t.issued_at),
                None => return TokenState::Expired,
            },
        };
        Self::at(token, issued_at, expires_at, now, margin)
    }

    fn at(
        token: &AccessToken,
        issued_at: Option<u64>,
        expires_at: u64,
        now: u64,
        margin: u64,
    ) -> Self {
        let current = || Current {
            token: token.clone(),
            expires_at,
        };
        if now < renew_at(issued_at, expires_at, margin) {
            TokenState::Fresh(current())
        } else if now < expires_at {
            TokenState::Due(current())
        } else {
            TokenState::Expired
        }
    }
}

/// What a request does (on the hot path, before any lock or store call).
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum OnRequest {
    /// Answer with this token; nothing else to do.
    Serve(AccessToken),
    /// Answer with this token at once, and make sure a renewal runs behind
    /// it (start one unless one is already running).
    ServeAndRenew(AccessToken),
    /// Wait for a renewal: the token is expired or missing, or renewal is
    /// forced. `seen` is the token the caller has (a forced renewal is
    /// satisfied by any other one).
    Wait { seen: Option<AccessToken> },
}

/// What a request does with a token in `state`. `cooling`: a renewal of
/// this token failed transiently moments ago (then a due token is served
/// without a new attempt until the pause is over).
pub(crate) fn on_request(state: TokenState, force_renewal: bool, cooling: bool) -> OnRequest {
    match state {
        TokenState::Fresh(c) | TokenState::Due(c) if force_renewal => OnRequest::Wait {
            seen: Some(c.token),
        },
        TokenState::Fresh(c) => OnRequest::Serve(c.token),
        TokenState::Due(c) if cooling => OnRequest::Serve(c.token),
        TokenState::Due(c) => OnRequest::ServeAndRenew(c.token),
        TokenState::Expired => OnRequest::Wait { seen: None },
    }
}

/// What a renewal does once it holds the session's lease and has re-read
/// the store.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum UnderLease {
    /// Someone renewed meanwhile (or nothing is needed): use this token.
    Use(AccessToken),
    /// Spend the refresh token. `fallback` is the still-valid token to
    /// answer with if the renewal fails transiently.
    Renew { fallback: Option<Current> },
}

/// What a renewal does with the token it finds in `state` under the lease;
/// `seen` is the token the renewal was started over.
pub(crate) fn under_lease(
    state: TokenState,
    force_renewal: bool,
    seen: Option<&AccessToken>,
) -> UnderLease {
    match state {
        // A forced renewal is satisfied by any token other than the one the
        // caller saw (someone renewed in the meantime).
        TokenState::Fresh(c) if !force_renewal || seen != Some(&c.token) => {
            UnderLease::Use(c.token)
        }
        TokenState::Fresh(c) | TokenState::Due(c) => UnderLease::Renew { fallback: Some(c) },
        TokenState::Expired => UnderLease::Renew { fallback: None },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: u64 = 1_700_000_000;

    fn state(lifetime: u64, margin: u64, age: u64) -> TokenState {
        TokenState::at(
            &AccessToken::new("at"),
            Some(T0),
            T0 + lifetime,
            T0 + age,
            margin,
        )
    }

    fn name(s: &TokenState) -> &'static str {
        match s {
            TokenState::Fresh(_) => "fresh",
            TokenState::Due(_) => "due",
            TokenState::Expired => "expired",
        }
    }

    /// (lifetime, margin, age) → state. The default margin is 60 s.
    #[test]
    fn the_renewal_point_adapts_to_the_lifetime() {
        let cases: &[(u64, u64, u64, &str)] = &[
            // 5 s tokens: renew at 3 s whatever the margin.
            (5, 60, 0, "fresh"),
            (5, 60, 2, "fresh"),
            (5, 60, 3, "due"),
            (5, 60, 4, "due"),
            (5, 60, 5, "expired"),
            (5, 1, 3, "fresh"),
            (5, 1, 4, "due"),
            // 20 s: renew at 10 s.
            (20, 60, 9, "fresh"),
            (20, 60, 10, "due"),
            (20, 60, 19, "due"),
            (20, 60, 20, "expired"),
            // 60 s, as long as the margin: renew at 30 s.
            (60, 60, 0, "fresh"),
            (60, 60, 29, "fresh"),
            (60, 60, 30, "due"),
            (60, 60, 60, "expired"),
            // One hour: the margin rules (renew at 59 min).
            (3600, 60, 1800, "fresh"),
            (3600, 60, 3539, "fresh"),
            (3600, 60, 3540, "due"),
            (3600, 60, 3599, "due"),
            (3600, 60, 3600, "expired"),
            (3600, 0, 3599, "fresh"),
            // Five minutes with a margin larger than half of it.
            (300, 200, 149, "fresh"),
            (300, 200, 150, "due"),
            (300, 60, 239, "fresh"),
            (300, 60, 240, "due"),
            // Degenerate lifetimes: 1 s is never due, 0 s is expired at once.
            (1, 60, 0, "fresh"),
            (1, 60, 1, "expired"),
            (0, 60, 0, "expired"),
        ];
        for &(lifetime, margin, age, expected) in cases {
            let got = state(lifetime, margin, age);
            assert_eq!(
                name(&got),
                expected,
                "lifetime {lifetime}, margin {margin}, age {age}"
            );
        }
    }

    #[test]
    fn never_due_in_the_first_half_of_the_life() {
        for lifetime in [2u64, 3, 5, 7, 20, 30, 60, 61, 119, 120, 300, 3600, 86_400] {
            for margin in [0u64, 1, 5, 30, 60, 300, 3600, 100_000] {
                for age in 0..lifetime.div_ceil(2) {
                    assert_eq!(
                        name(&state(lifetime, margin, age)),
                        "fresh",
                        "lifetime {lifetime}, margin {margin}, age {age}"
                    );
                }
                // And due from where the margin (or the half) says, until expiry.
                let renew = T0 + lifetime - margin.min(lifetime / 2);
                assert_eq!(renew_at(Some(T0), T0 + lifetime, margin), renew);
            }
        }
    }

    #[test]
    fn records_without_an_issue_time_keep_the_margin_rule() {
        assert_eq!(renew_at(None, T0 + 300, 60), T0 + 240);
        assert_eq!(renew_at(None, 30, 60), 0);
    }

    #[test]
    fn what_a_request_does() {
        let at = AccessToken::new("at");
        let fresh = || state(300, 60, 10);
        let due = || state(300, 60, 250);
        let expired = || state(300, 60, 300);
        // (state, force, cooling) → action
        let cases = [
            (fresh(), false, false, OnRequest::Serve(at.clone())),
            (fresh(), false, true, OnRequest::Serve(at.clone())),
            (
                fresh(),
                true,
                false,
                OnRequest::Wait {
                    seen: Some(at.clone()),
                },
            ),
            (due(), false, false, OnRequest::ServeAndRenew(at.clone())),
            (due(), false, true, OnRequest::Serve(at.clone())),
            (
                due(),
                true,
                true,
                OnRequest::Wait {
                    seen: Some(at.clone()),
                },
            ),
            (expired(), false, false, OnRequest::Wait { seen: None }),
            (expired(), false, true, OnRequest::Wait { seen: None }),
            (expired(), true, false, OnRequest::Wait { seen: None }),
        ];
        for (state, force, cooling, expected) in cases {
            let shown = format!("{state:?}, force {force}, cooling {cooling}");
            assert_eq!(on_request(state, force, cooling), expected, "{shown}");
        }
    }

    #[test]
    fn what_a_renewal_does_under_the_lease() {
        let at = AccessToken::new("at");
        let other = AccessToken::new("other");
        let current = Current {
            token: at.clone(),
            expires_at: T0 + 300,
        };
        let fresh = || state(300, 60, 10);
        let due = || state(300, 60, 250);
        let renew_with = |c: Option<Current>| UnderLease::Renew { fallback: c };
        let cases = [
            // Someone renewed while this renewal waited for the lease.
            (fresh(), false, Some(&at), UnderLease::Use(at.clone())),
            (fresh(), false, None, UnderLease::Use(at.clone())),
            // Forced: only a token other than the one seen will do.
            (fresh(), true, Some(&at), renew_with(Some(current.clone()))),
            (fresh(), true, Some(&other), UnderLease::Use(at.clone())),
            (due(), false, Some(&at), renew_with(Some(current.clone()))),
            (due(), true, Some(&at), renew_with(Some(current.clone()))),
            (state(300, 60, 300), false, None, renew_with(None)),
        ];
        for (state, force, seen, expected) in cases {
            let shown = format!("{state:?}, force {force}, seen {seen:?}");
            assert_eq!(under_lease(state, force, seen), expected, "{shown}");
        }
    }

    #[test]
    fn a_fallback_is_used_only_while_valid() {
        let c = Current {
            token: AccessToken::new("at"),
            expires_at: T0 + 5,
        };
        assert!(c.is_valid_at(T0 + 4));
        assert!(!c.is_valid_at(T0 + 5));
    }
}
