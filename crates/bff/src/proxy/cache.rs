//! Header values the proxy builds once and keeps, so that a request whose
//! token and client address were seen before costs no allocation for them:
//! `Authorization: Bearer …` per token, `X-Forwarded-For` per client address.

use std::net::IpAddr;
use std::sync::Mutex;

use http::HeaderValue;

use crate::proxy::headers;

/// `Authorization: Bearer <token>` values, built once per token and kept:
/// a small table indexed by the token's last bytes (the signature of a JWT),
/// checked against the whole token before use. A hit costs a comparison and
/// a reference count, no allocation.
#[derive(Debug)]
pub(crate) struct BearerCache {
    slots: [Mutex<Option<HeaderValue>>; BEARER_SLOTS],
}

impl Default for BearerCache {
    fn default() -> Self {
        BearerCache {
            slots: std::array::from_fn(|_| Mutex::new(None)),
        }
    }
}

const BEARER_SLOTS: usize = 64;

impl BearerCache {
    pub(crate) fn get(&self, token: &str) -> Option<HeaderValue> {
        let bytes = token.as_bytes();
        let tail = &bytes[bytes.len().saturating_sub(8)..];
        let index = tail.iter().fold(bytes.len(), |h, b| {
            h.wrapping_mul(31).wrapping_add(usize::from(*b))
        }) % BEARER_SLOTS;
        let mut slot = self.slots[index]
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(value) = slot.as_ref()
            && value.as_bytes().get(7..) == Some(bytes)
        {
            return Some(value.clone());
        }
        let value = headers::bearer(token).ok()?;
        *slot = Some(value.clone());
        Some(value)
    }
}

/// `X-Forwarded-For` values, built once per client address and kept: a
/// small table indexed by the address. A hit costs a comparison and a
/// reference count, no allocation.
#[derive(Debug)]
pub(crate) struct PeerCache {
    slots: [Mutex<Option<(IpAddr, HeaderValue)>>; PEER_SLOTS],
}

impl Default for PeerCache {
    fn default() -> Self {
        PeerCache {
            slots: std::array::from_fn(|_| Mutex::new(None)),
        }
    }
}

const PEER_SLOTS: usize = 64;

impl PeerCache {
    pub(crate) fn get(&self, peer: IpAddr) -> Option<HeaderValue> {
        let index = match peer {
            IpAddr::V4(v4) => v4.octets().iter().fold(0usize, |h, b| {
                h.wrapping_mul(31).wrapping_add(usize::from(*b))
            }),
            IpAddr::V6(v6) => v6.octets().iter().fold(0usize, |h, b| {
                h.wrapping_mul(31).wrapping_add(usize::from(*b))
            }),
        } % PEER_SLOTS;
        let mut slot = self.slots[index]
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((ip, value)) = slot.as_ref()
            && *ip == peer
        {
            return Some(value.clone());
        }
        let value = headers::forwarded_for(peer)?;
        *slot = Some((peer, value.clone()));
        Some(value)
    }
}
