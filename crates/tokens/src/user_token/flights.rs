//! Single flight: one renewal at a time per token of a session, in this
//! process.
//!
//! [`Flights`] owns three maps:
//!
//! * the running renewals, one spawned task per `(session, token key)`;
//!   callers join it (or do not wait at all), so a caller that goes away
//!   cannot cut a renewal in half, and the task removes its own entry when
//!   it ends — also by a panic — so a finished flight is never joined;
//! * one lock per session: renewals of different tokens of a session (the
//!   sign-in token and resource tokens) spend the same refresh token, so
//!   they take turns;
//! * the tokens whose last renewal failed transiently, with the time until
//!   which a still-valid token is served without a new attempt.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};

use dashmap::DashMap;
use futures_util::FutureExt as _;
use futures_util::future::{BoxFuture, Shared};

use crate::error::TokenError;
use crate::secret::AccessToken;
use crate::session::SessionId;

/// How long a token that is still valid is served without a new renewal
/// attempt after one failed transiently (provider down or slow, JWKS
/// unreachable). Without it, every request past the renewal point would
/// start a new attempt while the provider is down.
pub(crate) const RETRY_AFTER_TRANSIENT_FAILURE_SECS: u64 = 5;

/// Which token a flight renews: the session and the token key (`None`: the
/// sign-in token; see [`UserTokenRequest::token_key`](super::UserTokenRequest::token_key)).
pub(crate) type FlightKey = (SessionId, Option<String>);

/// What a flight ends with.
pub(crate) type FlightResult = Result<AccessToken, TokenError>;

/// A running renewal; clone it to wait for the result.
pub(crate) type Flight = Shared<BoxFuture<'static, FlightResult>>;

type Running = Arc<Mutex<HashMap<FlightKey, Flight>>>;
type SessionLocks = Arc<DashMap<SessionId, Arc<tokio::sync::Mutex<()>>>>;

/// In-flight renewals, per-session locks, and the tokens whose last renewal
/// failed transiently.
#[derive(Debug, Default)]
pub(crate) struct Flights {
    running: Running,
    session_locks: SessionLocks,
    /// Until when (Unix seconds) a still-valid token is served without a
    /// new attempt.
    cooling: DashMap<FlightKey, u64>,
}

fn lock(running: &Running) -> MutexGuard<'_, HashMap<FlightKey, Flight>> {
    running
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Flights {
    /// The running flight for `key`, or a new one: `renewal()` spawned as a
    /// task of its own, which runs to completion whether or not anyone
    /// waits for it.
    pub(crate) fn join_or_start<F>(&self, key: FlightKey, renewal: impl FnOnce() -> F) -> Flight
    where
        F: Future<Output = FlightResult> + Send + 'static,
    {
        let mut running = lock(&self.running);
        if let Some(flight) = running.get(&key) {
            return flight.clone();
        }
        // Leaves the map when the task ends, even by a panic. It cannot
        // leave before it is inserted: that needs the lock held here.
        let landed = Landed {
            running: Arc::clone(&self.running),
            key: key.clone(),
        };
        let task = renewal();
        let handle = tokio::spawn(async move {
            let _landed = landed;
            task.await
        });
        let flight: Flight = async move {
            handle.await.unwrap_or_else(|_| {
                Err(TokenError::ProviderUnavailable(
                    "the refresh task failed".into(),
                ))
            })
        }
        .boxed()
        .shared();
        running.insert(key, flight.clone());
        flight
    }

    /// Whether a renewal of `key` is running in this process.
    #[cfg(test)]
    pub(crate) fn is_running(&self, key: &FlightKey) -> bool {
        lock(&self.running).contains_key(key)
    }

    /// Takes the session's refresh lock (waits for the renewal of another
    /// token of the session to finish).
    pub(crate) async fn lock_session(&self, id: &SessionId) -> SessionLock {
        let mutex = Arc::clone(&*self.session_locks.entry(id.clone()).or_default());
        SessionLock {
            guard: Some(mutex.lock_owned().await),
            locks: Arc::clone(&self.session_locks),
            id: id.clone(),
        }
    }

    /// Whether a renewal of this token failed transiently a moment ago.
    pub(crate) fn is_cooling(&self, key: &FlightKey, now: u64) -> bool {
        match self.cooling.get(key).map(|until| *until) {
            Some(until) if now < until => true,
            Some(_) => {
                self.cooling.remove_if(key, |_, until| now >= *until);
                false
            }
            None => false,
        }
    }

    /// Serves this token's still-valid value without new attempts for a few
    /// seconds.
    pub(crate) fn cool_down(&self, key: FlightKey, now: u64) {
        // Entries of sessions that never come back are dropped once the map
        // grows; a live entry lasts a few seconds anyway.
        if self.cooling.len() >= 10_000 {
            self.cooling.retain(|_, until| now < *until);
        }
        self.cooling
            .insert(key, now.saturating_add(RETRY_AFTER_TRANSIENT_FAILURE_SECS));
    }

    /// Forgets a pause after a successful renewal.
    pub(crate) fn warm_up(&self, key: &FlightKey) {
        self.cooling.remove(key);
    }
}

/// Removes a flight from the map when its task ends.
struct Landed {
    running: Running,
    key: FlightKey,
}

impl Drop for Landed {
    fn drop(&mut self) {
        lock(&self.running).remove(&self.key);
    }
}

/// A session's refresh lock, held; the map entry goes when nobody else
/// holds or waits for it.
pub(crate) struct SessionLock {
    guard: Option<tokio::sync::OwnedMutexGuard<()>>,
    locks: SessionLocks,
    id: SessionId,
}

impl Drop for SessionLock {
    fn drop(&mut self) {
        // Unlock first: the guard holds a reference to the mutex.
        drop(self.guard.take());
        self.locks
            .remove_if(&self.id, |_, mutex| Arc::strong_count(mutex) == 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn one_flight_per_key_and_it_lands() {
        let flights = Flights::default();
        let key: FlightKey = (SessionId::generate(), None);
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let first = flights.join_or_start(key.clone(), || async move {
            let _ = rx.await;
            Ok(AccessToken::new("one"))
        });
        let second = flights.join_or_start(key.clone(), || async {
            unreachable!("joined the running flight")
        });
        assert!(flights.is_running(&key));
        tx.send(()).unwrap();
        assert_eq!(first.await.unwrap(), AccessToken::new("one"));
        assert_eq!(second.await.unwrap(), AccessToken::new("one"));
        tokio::task::yield_now().await;
        assert!(!flights.is_running(&key));
    }

    #[tokio::test]
    async fn a_flight_nobody_waits_for_runs_to_completion() {
        let flights = Flights::default();
        let key: FlightKey = (SessionId::generate(), Some("r|".into()));
        let (tx, rx) = tokio::sync::oneshot::channel();
        drop(flights.join_or_start(key.clone(), || async move {
            tokio::task::yield_now().await;
            let _ = tx.send(());
            Ok(AccessToken::new("done"))
        }));
        rx.await.expect("the flight ran");
    }

    #[tokio::test]
    async fn a_panicking_flight_fails_and_lands() {
        let flights = Flights::default();
        let key: FlightKey = (SessionId::generate(), None);
        let flight = flights.join_or_start(key.clone(), || async { panic!("boom") });
        assert!(flight.await.unwrap_err().is_transient());
        assert!(!flights.is_running(&key));
    }

    #[tokio::test]
    async fn session_locks_are_dropped_when_unused() {
        let flights = Flights::default();
        let id = SessionId::generate();
        let held = flights.lock_session(&id).await;
        assert_eq!(flights.session_locks.len(), 1);
        drop(held);
        assert_eq!(flights.session_locks.len(), 0);
    }

    #[test]
    fn cooling_lasts_a_few_seconds() {
        let flights = Flights::default();
        let key: FlightKey = (SessionId::generate(), None);
        flights.cool_down(key.clone(), 100);
        assert!(flights.is_cooling(&key, 104));
        assert!(!flights.is_cooling(&key, 105));
        flights.cool_down(key.clone(), 200);
        flights.warm_up(&key);
        assert!(!flights.is_cooling(&key, 200));
    }
}
