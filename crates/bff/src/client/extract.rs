//! Managed clients in handlers and background jobs: the [`ApiClients`] and
//! [`Api<T>`] extractors.

use std::sync::Arc;

use axum::extract::FromRequestParts;
use http::request::Parts;
use oidc_bff_tokens::SessionId;

use super::binding::Binding;
use super::managed::ManagedClient;
use super::registry::TypedClient;
use crate::bff::Bff;
use crate::error::BffError;
use crate::session::BffSession;

/// The registered API clients, bound to a user: in a handler the current
/// request's user (or nobody, for anonymous requests).
///
/// As an extractor it never rejects anonymous requests: a
/// [`TokenPolicy::User`](crate::TokenPolicy::User) client then fails at `send()`
/// with 401, while client-token clients work.
///
/// ```
/// use oidc_bff::BffError;
/// use oidc_bff::client::ApiClients;
///
/// async fn handler(clients: ApiClients) -> Result<String, BffError> {
///     let response = clients.get("apiClient")?.get("remoteApi").send().await?;
///     Ok(response.error_for_status()?.text().await?)
/// }
/// ```
///
/// Outside of any request (background jobs), use [`Bff::api_clients`] for
/// client-token clients and [`Bff::api_clients_for`] to act for a session.
#[derive(Clone)]
pub struct ApiClients {
    bff: Bff,
    binding: Arc<Binding>,
}

impl std::fmt::Debug for ApiClients {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiClients")
            .field("clients", &self.bff.inner.clients)
            .finish_non_exhaustive()
    }
}

impl ApiClients {
    fn new(bff: Bff, binding: Binding) -> Self {
        Self {
            bff,
            binding: Arc::new(binding),
        }
    }

    /// The clients acting for the user of a session loaded in a request.
    pub fn for_session(session: &BffSession) -> Self {
        Self::new(session.bff().clone(), bound_to(session))
    }

    /// The client registered under `name`.
    ///
    /// An unknown name is a programming error: [`BffError::UnknownClient`]
    /// (500), never a panic.
    pub fn get(&self, name: &str) -> Result<ManagedClient, BffError> {
        let shared = self
            .bff
            .inner
            .clients
            .named(name)
            .ok_or_else(|| BffError::UnknownClient(name.chars().take(64).collect()))?;
        Ok(ManagedClient::new(shared.clone(), self.binding.clone()))
    }

    /// The typed client `T`, registered with
    /// [`BffBuilder::typed_client`](crate::BffBuilder::typed_client).
    pub fn typed<T: TypedClient>(&self) -> Result<T, BffError> {
        let shared = self.bff.inner.clients.typed::<T>().ok_or_else(|| {
            BffError::UnknownClient(format!("typed client {}", std::any::type_name::<T>()))
        })?;
        Ok(T::from_managed(ManagedClient::new(
            shared.clone(),
            self.binding.clone(),
        )))
    }
}

impl Bff {
    /// The API clients acting for nobody: for client-token clients, e.g. in
    /// background jobs. User-token clients fail with 401.
    ///
    /// ```no_run
    /// # async fn job(bff: oidc_bff::Bff) -> Result<(), oidc_bff::BffError> {
    /// let catalog = bff.api_clients().get("catalog")?;
    /// let items = catalog.get("items").send().await?.error_for_status()?.text().await?;
    /// # let _ = items; Ok(()) }
    /// ```
    pub fn api_clients(&self) -> ApiClients {
        ApiClients::new(self.clone(), Binding::Anonymous)
    }

    /// The API clients acting for the user of session `id`, outside of any
    /// request (background jobs). The session is read from the store at each
    /// request; once it has ended, user tokens fail with 401.
    pub fn api_clients_for(&self, id: SessionId) -> ApiClients {
        ApiClients::new(self.clone(), Binding::Session(id))
    }
}

impl<S: Send + Sync> FromRequestParts<S> for ApiClients {
    type Rejection = BffError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let bff = Bff::from_parts(parts)?;
        let binding = match BffSession::from_parts(parts).await? {
            Some(session) => bound_to(&session),
            None => Binding::Anonymous,
        };
        Ok(ApiClients::new(bff, binding))
    }
}

/// A [typed client](TypedClient) as a handler argument, bound to the current
/// request's user.
///
/// Rust's orphan rules keep this crate from implementing axum's extractor
/// traits for your type, so it arrives wrapped: destructure it in the
/// argument list.
///
/// ```
/// use oidc_bff::BffError;
/// use oidc_bff::client::{Api, ManagedClient, TypedClient};
///
/// pub struct MyTypedApiClient(ManagedClient);
///
/// impl TypedClient for MyTypedApiClient {
///     fn from_managed(client: ManagedClient) -> Self {
///         Self(client)
///     }
/// }
///
/// impl MyTypedApiClient {
///     pub async fn get_data(&self) -> Result<String, BffError> {
///         Ok(self.0.get("data").send().await?.error_for_status()?.text().await?)
///     }
/// }
///
/// async fn handler(Api(api): Api<MyTypedApiClient>) -> Result<String, BffError> {
///     api.get_data().await
/// }
/// ```
///
/// Rejects with [`BffError::UnknownClient`] (500) when `T` was not
/// registered.
#[derive(Clone, Debug)]
pub struct Api<T>(pub T);

impl<S: Send + Sync, T: TypedClient> FromRequestParts<S> for Api<T> {
    type Rejection = BffError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let clients = ApiClients::from_request_parts(parts, state).await?;
        clients.typed::<T>().map(Api)
    }
}

/// The binding to the session loaded in the current request.
fn bound_to(session: &BffSession) -> Binding {
    Binding::Request {
        id: session.id().clone(),
        current: session.versioned().clone(),
    }
}
