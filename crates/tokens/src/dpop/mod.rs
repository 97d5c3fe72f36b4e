//! DPoP: sender-constrained tokens (RFC 9449).
//!
//! With [`OidcConfig::dpop`](crate::OidcConfig::dpop) on, every token this
//! engine obtains is bound to a key pair it holds, and every use of the token
//! carries a fresh *proof* signed with that key. A stolen token is then
//! useless without the key.
//!
//! * [`DpopKey`] ([`key`]): an ECDSA key pair (ES256 by default, ES384 on
//!   request), parsed once and kept ready; its `Debug` is redacted and its
//!   serialized form only ever goes into sealed or encrypted places.
//! * [`DpopKey::proof`] ([`proof`]): a proof JWT for one request (`typ`
//!   `dpop+jwt`, the public `jwk` in the header, a random `jti`, `htm`,
//!   `htu` without query and fragment, `iat`, `ath` for a resource call,
//!   `nonce` when the server gave one).
//! * [`NonceCache`] ([`nonce`]): the latest `DPoP-Nonce` each origin sent,
//!   from any response, successful or not.
//!
//! Where the keys live: a user session's key is made when the sign-in
//! starts, travels sealed inside the `state` (see [`crate::login`]), is
//! announced as `dpop_jkt` on the authorization request, proves the code
//! exchange and then stays in the [`SessionRecord`](crate::SessionRecord)
//! (encrypted by every persistent store, never in a cookie). The client
//! credentials tokens of an instance group share one key through the store.
//!
//! ```
//! use oidc_bff_tokens::dpop::{DpopAlg, DpopKey};
//! use oidc_bff_tokens::AccessToken;
//!
//! let key = DpopKey::generate(DpopAlg::Es256).unwrap();
//! let url = "https://api.example.com/orders?page=2".parse().unwrap();
//! let proof = key
//!     .proof("GET", &url, Some(&AccessToken::new("token")), None, 1_700_000_000)
//!     .unwrap();
//! assert_eq!(proof.split('.').count(), 3);
//! assert_eq!(key.thumbprint().len(), 43);
//! assert_eq!(format!("{key:?}"), "DpopKey(ES256, [redacted])");
//! ```

pub mod key;
pub mod nonce;
pub mod proof;

pub use key::{DpopAlg, DpopKey};
pub use nonce::NonceCache;
pub use proof::{htu, is_nonce_challenge, www_authenticate_error};

/// The request header that carries a proof, and the response header that
/// carries a server's nonce.
pub const DPOP_HEADER: &str = "dpop";
/// The response header with a server-provided nonce.
pub const DPOP_NONCE_HEADER: &str = "dpop-nonce";
/// The token type of DPoP-bound tokens and the `Authorization` scheme.
pub const DPOP_TOKEN_TYPE: &str = "DPoP";
