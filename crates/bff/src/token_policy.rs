//! [`TokenPolicy`]: which access token a proxied route
//! ([`RemoteApi`](crate::RemoteApi)) or a managed client
//! ([`ClientRegistration`](crate::client::ClientRegistration)) sends; the
//! parameters of those tokens, held once by both; and the one place a policy
//! is turned into a token.
//!
//! | policy | signed-in user | anonymous |
//! |---|---|---|
//! | `None` | no token | no token |
//! | `User` (default) | the user's token | 401 |
//! | `Client` | the client's token | the client's token |
//! | `UserOrClient` | the user's token | the client's token |
//! | `UserOrNone` | the user's token | no token |
//!
//! ```
//! use oidc_bff::TokenPolicy;
//! use oidc_bff::client::ClientRegistration;
//! use oidc_bff::proxy::RemoteApi;
//!
//! let route = RemoteApi::new("/api", "https://api.example.com/".parse().unwrap())
//!     .token(TokenPolicy::UserOrClient)
//!     .scope("api.read");
//! let client = ClientRegistration::new("api", "https://api.example.com/", TokenPolicy::UserOrClient)
//!     .scope("api.read");
//! # let _ = (route, client);
//! ```

use oidc_bff_tokens::{
    AccessToken, ClientCredentialsRequest, SessionId, TokenEngine, TokenError, UserTokenRequest,
    Versioned,
};

/// Which access token a proxied route or a managed client sends.
///
/// In configuration files: `"none"`, `"user"`, `"client"`,
/// `"user-or-client"`, `"user-or-none"`.
///
/// ```
/// use oidc_bff::TokenPolicy;
///
/// let t: TokenPolicy = serde_json::from_str("\"user-or-client\"").unwrap();
/// assert_eq!(t, TokenPolicy::UserOrClient);
/// assert_eq!(TokenPolicy::default(), TokenPolicy::User);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum TokenPolicy {
    /// No token: the request goes without `Authorization`.
    None,
    /// The signed-in user's token (refreshed as needed); without a signed-in
    /// user the request fails with 401 before anything is sent.
    #[default]
    User,
    /// The BFF's own token (client credentials grant, cached), whoever asks.
    Client,
    /// The user's token for signed-in users, the client's token for
    /// anonymous ones. A failure to get the user's token is an error unless
    /// `client_token_on_user_failure` is set.
    UserOrClient,
    /// The user's token when signed in, else no token.
    UserOrNone,
}

impl TokenPolicy {
    /// Whether the signed-in user's session is consulted; callers load the
    /// session only then.
    pub(crate) fn uses_session(self) -> bool {
        matches!(
            self,
            TokenPolicy::User | TokenPolicy::UserOrClient | TokenPolicy::UserOrNone
        )
    }

    /// The token this policy calls for, given the signed-in user (`None`
    /// for anonymous requests; pass `None` too when [`uses_session`]
    /// (Self::uses_session) is false). `Ok(None)`: send no token.
    pub(crate) async fn resolve(
        self,
        oidc: &TokenEngine,
        requests: &TokenRequests,
        user: Option<Holder<'_>>,
    ) -> Result<Option<(AccessToken, Used)>, Refused> {
        match (self, user) {
            (TokenPolicy::None, _) => Ok(None),
            (TokenPolicy::Client, _) | (TokenPolicy::UserOrClient, None) => {
                client_token(oidc, requests).await.map(Some)
            }
            (TokenPolicy::UserOrNone, None) => Ok(None),
            (TokenPolicy::User, None) => Err(Refused {
                error: TokenError::NotAuthenticated,
                user: true,
            }),
            (_, Some(holder)) => match holder.token(oidc, &requests.user).await {
                Ok(found) => Ok(Some(found)),
                Err(err)
                    if self == TokenPolicy::UserOrClient
                        && requests.client_token_on_user_failure =>
                {
                    tracing::info!(error = %err, "no user token; sending the client token as configured");
                    client_token(oidc, requests).await.map(Some)
                }
                Err(error) => Err(Refused { error, user: true }),
            },
        }
    }
}

async fn client_token(
    oidc: &TokenEngine,
    requests: &TokenRequests,
) -> Result<(AccessToken, Used), Refused> {
    oidc.client_access_token(&requests.client)
        .await
        .map(|token| (token, Used::Client))
        .map_err(|error| Refused { error, user: false })
}

/// The parameters of the tokens a route or a client asks for, held once by
/// [`RemoteApi`](crate::RemoteApi) and
/// [`ClientRegistration`](crate::client::ClientRegistration), whose setters
/// change it.
#[derive(Clone, Debug, Default)]
pub(crate) struct TokenRequests {
    /// The user's token.
    pub(crate) user: UserTokenRequest,
    /// The client's token.
    pub(crate) client: ClientCredentialsRequest,
    /// For [`TokenPolicy::UserOrClient`]: send the client's token when the
    /// user's cannot be had (default off).
    pub(crate) client_token_on_user_failure: bool,
}

impl TokenRequests {
    /// Scope of both the user's and the client's token.
    pub(crate) fn scope(&mut self, scope: String) {
        self.user = std::mem::take(&mut self.user).scope(scope.clone());
        self.client = std::mem::take(&mut self.client).scope(scope);
    }

    /// Resource (RFC 8707) of both the user's and the client's token.
    pub(crate) fn resource(&mut self, resource: String) {
        self.user = std::mem::take(&mut self.user).resource(resource.clone());
        self.client = std::mem::take(&mut self.client).resource(resource);
    }
}

/// The signed-in user a token is asked for.
pub(crate) enum Holder<'a> {
    /// The session loaded for the current request: its id and the record
    /// as loaded (a valid token in it costs no store read).
    Loaded {
        id: &'a SessionId,
        current: &'a Versioned,
    },
    /// A session known by id only (outside of a request); read from the store.
    Id(&'a SessionId),
}

impl Holder<'_> {
    async fn token(
        &self,
        oidc: &TokenEngine,
        request: &UserTokenRequest,
    ) -> Result<(AccessToken, Used), TokenError> {
        let (id, loaded) = match self {
            Holder::Loaded { id, current } => (*id, Some(*current)),
            Holder::Id(id) => (*id, None),
        };
        let result = oidc.user_access_token(id, loaded, request).await;
        result.map(|token| (token, Used::User(id.clone())))
    }
}

/// Which token was sent.
pub(crate) enum Used {
    /// The user's token of this session.
    User(SessionId),
    /// The client's token.
    Client,
}

/// No token could be had.
#[derive(Debug)]
pub(crate) struct Refused {
    /// Why.
    pub(crate) error: TokenError,
    /// Whether it was the user's token that was refused (then a dead
    /// session's cookie is cleared by the proxy).
    pub(crate) user: bool,
}
