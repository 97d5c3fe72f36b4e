//! In-memory grant state: authorization codes, refresh and access tokens,
//! grant families and IdP sessions.
//!
//! A *family* is everything issued from one authorization code (its access
//! tokens and the chain of rotated refresh tokens). Revoking a family
//! invalidates all of it at once.

use std::collections::{BTreeSet, HashMap, HashSet};

use serde_json::Value;

/// Identifies a grant family.
pub(crate) type FamilyId = u64;

/// A pending (or redeemed) authorization code.
#[derive(Debug, Clone)]
pub(crate) struct CodeEntry {
    pub(crate) client_id: String,
    pub(crate) redirect_uri: String,
    pub(crate) code_challenge: String,
    pub(crate) nonce: Option<String>,
    pub(crate) scope: String,
    pub(crate) sid: String,
    pub(crate) auth_time: u64,
    pub(crate) expires_at: u64,
    pub(crate) family: FamilyId,
    pub(crate) redeemed: bool,
    /// The `dpop_jkt` of the authorization request: the code exchange must
    /// prove this key.
    pub(crate) dpop_jkt: Option<String>,
}

/// An issued refresh token.
#[derive(Debug, Clone)]
pub(crate) struct RefreshEntry {
    pub(crate) client_id: String,
    pub(crate) family: FamilyId,
    /// The scope originally granted (refresh requests may narrow it).
    pub(crate) scope: String,
    pub(crate) sub: String,
    pub(crate) sid: String,
    pub(crate) auth_time: u64,
    pub(crate) used: bool,
    /// The DPoP key the refresh token is bound to.
    pub(crate) jkt: Option<String>,
}

/// An issued access token (the JWT claims are kept for introspection).
#[derive(Debug, Clone)]
pub(crate) struct AccessEntry {
    pub(crate) family: Option<FamilyId>,
    pub(crate) exp: u64,
    pub(crate) revoked: bool,
    pub(crate) claims: Value,
}

/// A sign-in at the IdP.
#[derive(Debug, Clone, Default)]
pub(crate) struct Session {
    pub(crate) sub: String,
    pub(crate) clients: BTreeSet<String>,
    pub(crate) ended: bool,
}

/// All mutable grant state of one IdP.
#[derive(Debug, Default)]
pub(crate) struct Store {
    next_family: FamilyId,
    pub(crate) codes: HashMap<String, CodeEntry>,
    pub(crate) refresh: HashMap<String, RefreshEntry>,
    pub(crate) access: HashMap<String, AccessEntry>,
    pub(crate) sessions: HashMap<String, Session>,
    revoked_families: HashSet<FamilyId>,
    /// The time of each user's latest sign-in (any client, any browser).
    pub(crate) last_sign_in: HashMap<String, u64>,
    /// `jti`s of accepted client assertions, with their `exp` (replay check).
    pub(crate) assertion_jtis: HashMap<String, u64>,
    /// Pushed authorization requests by `request_uri`.
    pub(crate) pushed: HashMap<String, PushedRequest>,
}

/// A pushed authorization request (RFC 9126), waiting for the browser.
#[derive(Debug, Clone)]
pub(crate) struct PushedRequest {
    pub(crate) client_id: String,
    /// The authorization request's parameters, form-encoded.
    pub(crate) params: String,
    pub(crate) expires_at: u64,
}

impl Store {
    pub(crate) fn new_family(&mut self) -> FamilyId {
        self.next_family += 1;
        self.next_family
    }

    pub(crate) fn revoke_family(&mut self, family: FamilyId) {
        self.revoked_families.insert(family);
    }

    pub(crate) fn family_revoked(&self, family: FamilyId) -> bool {
        self.revoked_families.contains(&family)
    }

    /// The claims of a currently valid access token.
    pub(crate) fn active_access(&self, token: &str, now: u64) -> Option<&Value> {
        let entry = self.access.get(token)?;
        let family_ok = entry.family.is_none_or(|f| !self.family_revoked(f));
        (family_ok && !entry.revoked && entry.exp > now).then_some(&entry.claims)
    }

    /// A currently usable refresh token.
    pub(crate) fn active_refresh(&self, token: &str) -> Option<&RefreshEntry> {
        let entry = self.refresh.get(token)?;
        (!entry.used && !self.family_revoked(entry.family)).then_some(entry)
    }

    /// Drops expired codes and access tokens so long-running demos stay small.
    pub(crate) fn purge(&mut self, now: u64) {
        self.codes.retain(|_, c| c.expires_at + 600 > now);
        self.access.retain(|_, a| a.exp + 600 > now);
        self.assertion_jtis.retain(|_, exp| *exp + 600 > now);
        self.pushed.retain(|_, p| p.expires_at + 600 > now);
    }
}
