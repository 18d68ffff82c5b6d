//! Test fixtures shared by the node policy modules' unit tests: short
//! constructors for addresses, ids, keys and instants.

use core::net::{IpAddr, Ipv4Addr};

use crate::{DeviceId, Instant, PublicKey};

/// 10.0.0.`n`.
pub(crate) fn ip(n: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 0, 0, n))
}

pub(crate) fn id(s: &str) -> DeviceId {
    DeviceId::new(s).unwrap()
}

/// A public key of 32 bytes `n`.
pub(crate) fn key(n: u8) -> PublicKey {
    PublicKey::from_bytes([n; 32])
}

pub(crate) fn t(ms: u64) -> Instant {
    Instant::from_millis(ms)
}
