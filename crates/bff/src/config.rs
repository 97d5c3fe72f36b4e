//! Former home of the [`Bff`] handle, now in `bff.rs` (its builder is in
//! `builder.rs`), all re-exported at the crate root (`oidc_bff::Bff`,
//! `oidc_bff::BffBuilder`, ...). Kept so paths written against earlier
//! versions still resolve; it re-exports from `bff.rs` only, so the files
//! that still import `crate::config::Bff` form no import cycle.

pub use crate::bff::{Bff, BffSettings, DEFAULT_COOKIE_NAME};
