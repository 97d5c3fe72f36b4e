//! Former home of the [`Bff`] handle and its builder, now in `bff.rs` and
//! `builder.rs` and re-exported at the crate root (`oidc_bff::Bff`,
//! `oidc_bff::BffBuilder`, ...). Kept so paths written against earlier
//! versions still resolve.

pub use crate::bff::{Bff, BffSettings};
pub use crate::builder::{BffBuilder, DEFAULT_COOKIE_NAME};
