//! oidc-bff (in progress)
