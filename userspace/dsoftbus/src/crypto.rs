//! Glue between our injected entropy and `snow`, plus the mac1 primitive.
//!
//! `snow` asks its `CryptoResolver` for an RNG when a handshake is built. With
//! `default-features = false` its default resolver has none (that is what keeps
//! `getrandom` out of the image), so [`EntropyResolver`] supplies one: a small
//! pool pre-filled from the caller's `RngCore + CryptoRng`. DH, cipher and hash
//! are delegated to snow's pure-Rust `DefaultResolver`.

use alloc::boxed::Box;
use core::cell::Cell;

use blake2::digest::consts::U16;
use blake2::digest::{KeyInit, Mac};
use blake2::{Blake2s256, Blake2sMac, Digest};
use rand_core::{CryptoRng, RngCore};
use snow::params::{CipherChoice, DHChoice, HashChoice, NoiseParams};
use snow::resolvers::{CryptoResolver, DefaultResolver};
use snow::types::{Cipher, Dh, Hash, Random};
use zeroize::Zeroize;

use crate::keys::PublicKey;

/// The one Noise protocol this crate speaks (DESIGN §4).
pub(crate) const NOISE_PATTERN: &str = "Noise_XK_25519_ChaChaPoly_BLAKE2s";

/// Entropy one handshake needs: XK generates exactly one ephemeral X25519
/// secret per side (32 bytes). The pool is sized for that and no more; a
/// second draw fails with `snow::Error::Rng` instead of repeating bytes.
pub(crate) const HANDSHAKE_ENTROPY: usize = 32;

/// Length of the mac1 tag appended to Noise message 1.
pub(crate) const MAC1_LEN: usize = 16;

pub(crate) fn noise_params() -> Option<NoiseParams> {
    NOISE_PATTERN.parse().ok()
}

/// Entropy drawn up front from the caller's RNG, served once to snow.
pub(crate) struct EntropyPool {
    bytes: [u8; HANDSHAKE_ENTROPY],
    used: usize,
}

impl EntropyPool {
    pub(crate) fn draw<R: RngCore + CryptoRng + ?Sized>(rng: &mut R) -> Self {
        let mut bytes = [0u8; HANDSHAKE_ENTROPY];
        rng.fill_bytes(&mut bytes);
        EntropyPool { bytes, used: 0 }
    }
}

impl Drop for EntropyPool {
    fn drop(&mut self) {
        self.bytes.zeroize();
    }
}

impl Random for EntropyPool {
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), snow::Error> {
        let end = self.used.checked_add(dest.len()).ok_or(snow::Error::Rng)?;
        let src = self.bytes.get(self.used..end).ok_or(snow::Error::Rng)?;
        dest.copy_from_slice(src);
        // Burn what we handed out so it cannot be served twice.
        if let Some(s) = self.bytes.get_mut(self.used..end) {
            s.zeroize();
        }
        self.used = end;
        Ok(())
    }
}

/// A `CryptoResolver` whose RNG is the caller's injected entropy.
pub(crate) struct EntropyResolver {
    pool: Cell<Option<EntropyPool>>,
}

impl EntropyResolver {
    pub(crate) fn new(pool: EntropyPool) -> Self {
        EntropyResolver {
            pool: Cell::new(Some(pool)),
        }
    }
}

impl CryptoResolver for EntropyResolver {
    fn resolve_rng(&self) -> Option<Box<dyn Random>> {
        // Handed out once; a second resolve gets nothing, so entropy is never reused.
        self.pool.take().map(|p| Box::new(p) as Box<dyn Random>)
    }

    fn resolve_dh(&self, choice: &DHChoice) -> Option<Box<dyn Dh>> {
        DefaultResolver.resolve_dh(choice)
    }

    fn resolve_hash(&self, choice: &HashChoice) -> Option<Box<dyn Hash>> {
        DefaultResolver.resolve_hash(choice)
    }

    fn resolve_cipher(&self, choice: &CipherChoice) -> Option<Box<dyn Cipher>> {
        DefaultResolver.resolve_cipher(choice)
    }
}

/// `BLAKE2s-256("mac1----" ‖ responder static public key)`, as in WireGuard.
/// Computed once per local identity; anyone who knows the responder's public
/// key can compute it — mac1 proves the sender knows *which* key it dials, it
/// is not a secret.
pub(crate) fn mac1_key(responder: &PublicKey) -> [u8; 32] {
    let mut h = Blake2s256::new();
    h.update(b"mac1----");
    h.update(responder.as_bytes());
    h.finalize().into()
}

fn mac1_state(key: &[u8; 32]) -> Option<Blake2sMac<U16>> {
    <Blake2sMac<U16> as KeyInit>::new_from_slice(key).ok()
}

/// `keyed-BLAKE2s-128(key, msg1)`.
pub(crate) fn mac1(key: &[u8; 32], msg1: &[u8]) -> Option<[u8; MAC1_LEN]> {
    let mut m = mac1_state(key)?;
    m.update(msg1);
    Some(m.finalize().into_bytes().into())
}

/// Constant-time check of a received mac1.
pub(crate) fn verify_mac1(key: &[u8; 32], msg1: &[u8], tag: &[u8]) -> bool {
    match mac1_state(key) {
        Some(mut m) => {
            m.update(msg1);
            m.verify_slice(tag).is_ok()
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_serves_once() {
        let mut p = EntropyPool {
            bytes: [7; HANDSHAKE_ENTROPY],
            used: 0,
        };
        let mut a = [0u8; 32];
        assert!(p.try_fill_bytes(&mut a).is_ok());
        assert_eq!(a, [7; 32]);
        let mut b = [0u8; 1];
        assert!(p.try_fill_bytes(&mut b).is_err());
    }

    #[test]
    fn resolver_hands_rng_out_once() {
        let r = EntropyResolver::new(EntropyPool {
            bytes: [1; HANDSHAKE_ENTROPY],
            used: 0,
        });
        assert!(r.resolve_rng().is_some());
        assert!(r.resolve_rng().is_none());
        assert!(noise_params().is_some());
    }

    #[test]
    fn mac1_detects_tampering() {
        let key = mac1_key(&PublicKey::from_bytes([9; 32]));
        let tag = mac1(&key, b"hello").expect("mac");
        assert!(verify_mac1(&key, b"hello", &tag));
        assert!(!verify_mac1(&key, b"hellp", &tag));
        assert!(!verify_mac1(&key, b"hello", &tag[..15]));
        let other = mac1_key(&PublicKey::from_bytes([8; 32]));
        assert!(!verify_mac1(&other, b"hello", &tag));
    }
}
