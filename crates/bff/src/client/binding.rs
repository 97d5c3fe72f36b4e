//! What a managed client's request tells its token middleware, as request
//! extensions: whose token to send ([`BoundTo`]) and whether the URL was
//! refused before anything is sent ([`Refused`]).

use std::sync::Arc;

use oidc_bff_tokens::{SessionId, Versioned};

/// Whose token a managed client's requests carry.
#[derive(Clone, Debug)]
pub(crate) enum Binding {
    /// Nobody is signed in (or no request at all: a background job).
    Anonymous,
    /// The session loaded in the current request, as loaded.
    Request { id: SessionId, current: Versioned },
    /// A session known by id only (background jobs); read from the store.
    Session(SessionId),
}

/// Request extension that tells the middleware whose token to send.
#[derive(Clone, Debug)]
pub(crate) struct BoundTo(pub(crate) Arc<Binding>);

/// Request extension: the URL was refused, the middleware fails the request
/// before anything is sent.
#[derive(Clone, Debug)]
pub(crate) struct Refused(pub(crate) &'static str);
