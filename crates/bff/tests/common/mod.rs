//! Helpers shared by the integration tests: a dev IdP, a BFF app on
//! loopback, and a cookie-keeping "browser" that signs in without a form.
#![allow(dead_code)]

pub mod api;
pub mod harness;
pub mod proxy_support;
