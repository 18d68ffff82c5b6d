//! The OS node's known-peer pins, kept by keystored on the disk.
//!
//! The pin policy is the core's (`dsoftbus::node::pins::PinStore`: automatic
//! pins rate-limited and capped per source, user pins never evicted), the
//! same the Linux daemon uses; this module only turns a store into the blob
//! keystored saves and back. Blob: `version u8 (1) | count u8`, then per pin
//! `kind u8 (0 user, 4 auto from IPv4, 6 auto from IPv6) | source (4 or 16
//! bytes, auto only) | id length u8 | id | key (32)`. Decoding is total; a
//! blob that does not decode is reported and ignored (the pins are lost, the
//! identity is not). Times are not stored (the guest clock restarts at
//! boot): loaded pins count as used at load.

use alloc::vec::Vec;
use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use dsoftbus::node::pins::{Pin, PinKind, PinStore};
use dsoftbus::{DeviceId, Instant, PublicKey};

/// Blob version.
pub const VERSION: u8 = 1;
/// Most pins the OS node keeps (the blob stays under one 4 KiB record:
/// 32 × (1 + 16 + 1 + 64 + 32) + 2 bytes).
pub const MAX_PINS: usize = 32;

/// Why a blob did not decode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlobError {
    /// Unknown version.
    Version,
    /// Ran out of bytes or bytes left over.
    Length,
    /// An unknown kind byte.
    Kind,
    /// A device id that is not a valid id.
    Id,
    /// More than [`MAX_PINS`].
    TooMany,
}

/// Encode the store (at most [`MAX_PINS`] pins; the store's own bound).
pub fn encode(store: &PinStore) -> Vec<u8> {
    let mut out = alloc::vec![VERSION, 0];
    let mut n = 0u8;
    for (id, pin) in store.iter().take(MAX_PINS) {
        match pin.kind {
            PinKind::User => out.push(0),
            PinKind::Auto {
                source: IpAddr::V4(a),
            } => {
                out.push(4);
                out.extend_from_slice(&a.octets());
            }
            PinKind::Auto {
                source: IpAddr::V6(a),
            } => {
                out.push(6);
                out.extend_from_slice(&a.octets());
            }
        }
        let id = id.as_str().as_bytes();
        out.push(id.len() as u8);
        out.extend_from_slice(id);
        out.extend_from_slice(pin.key.as_bytes());
        n += 1;
    }
    out[1] = n;
    out
}

fn take<'a>(b: &mut &'a [u8], n: usize) -> Result<&'a [u8], BlobError> {
    if b.len() < n {
        return Err(BlobError::Length);
    }
    let (head, rest) = b.split_at(n);
    *b = rest;
    Ok(head)
}

/// Decode a blob into pins (an empty blob is no pins).
pub fn decode(blob: &[u8], now: Instant) -> Result<Vec<(DeviceId, Pin)>, BlobError> {
    if blob.is_empty() {
        return Ok(Vec::new());
    }
    let mut b = blob;
    if take(&mut b, 1)?[0] != VERSION {
        return Err(BlobError::Version);
    }
    let count = usize::from(take(&mut b, 1)?[0]);
    if count > MAX_PINS {
        return Err(BlobError::TooMany);
    }
    let mut out = Vec::with_capacity(count);
    for _ in 0..count {
        let kind = match take(&mut b, 1)?[0] {
            0 => PinKind::User,
            4 => {
                let o: [u8; 4] = take(&mut b, 4)?.try_into().map_err(|_| BlobError::Length)?;
                PinKind::Auto {
                    source: IpAddr::V4(Ipv4Addr::from(o)),
                }
            }
            6 => {
                let o: [u8; 16] = take(&mut b, 16)?
                    .try_into()
                    .map_err(|_| BlobError::Length)?;
                PinKind::Auto {
                    source: IpAddr::V6(Ipv6Addr::from(o)),
                }
            }
            _ => return Err(BlobError::Kind),
        };
        let len = usize::from(take(&mut b, 1)?[0]);
        let id = core::str::from_utf8(take(&mut b, len)?).map_err(|_| BlobError::Id)?;
        let id = DeviceId::new(id).map_err(|_| BlobError::Id)?;
        let key: [u8; 32] = take(&mut b, 32)?
            .try_into()
            .map_err(|_| BlobError::Length)?;
        out.push((
            id,
            Pin {
                key: PublicKey::from_bytes(key),
                kind,
                created: now,
                last_used: now,
            },
        ));
    }
    if !b.is_empty() {
        return Err(BlobError::Length);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use dsoftbus::node::pins::PinConfig;

    fn t(ms: u64) -> Instant {
        Instant::from_millis(ms)
    }

    #[test]
    fn round_trip_of_both_kinds() {
        let mut s = PinStore::new(PinConfig::default());
        let a = DeviceId::new("linux-a").unwrap_or_else(|_| unreachable!());
        let b = DeviceId::new("nexus-os-2").unwrap_or_else(|_| unreachable!());
        let _ = s.auto_pin(
            &a,
            &PublicKey::from_bytes([1; 32]),
            "10.77.1.2"
                .parse()
                .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST)),
            t(5),
        );
        let _ = s.user_pin(&b, &PublicKey::from_bytes([2; 32]), false, t(6));
        let blob = encode(&s);
        let pins = decode(&blob, t(100)).unwrap_or_default();
        assert_eq!(pins.len(), 2);
        for (id, pin) in pins {
            assert_eq!(Some(pin.key), s.key(&id));
            assert_eq!(s.get(&id).map(|p| p.kind), Some(pin.kind));
        }
    }

    #[test]
    fn bad_blobs_are_errors() {
        assert_eq!(decode(&[], t(0)), Ok(Vec::new()));
        assert_eq!(decode(&[2, 0], t(0)), Err(BlobError::Version));
        assert_eq!(decode(&[1, 1], t(0)), Err(BlobError::Length));
        assert_eq!(decode(&[1, 1, 9], t(0)), Err(BlobError::Kind));
        assert_eq!(decode(&[1, 33], t(0)), Err(BlobError::TooMany));
        assert_eq!(decode(&[1, 0, 0], t(0)), Err(BlobError::Length));
        // Every truncation of a valid blob is an error, never a panic.
        let mut s = PinStore::new(PinConfig::default());
        let a = DeviceId::new("a").unwrap_or_else(|_| unreachable!());
        let _ = s.user_pin(&a, &PublicKey::from_bytes([3; 32]), false, t(0));
        let blob = encode(&s);
        for n in 1..blob.len() {
            assert!(decode(&blob[..n], t(0)).is_err(), "{n}");
        }
    }
}
