//! Glue between our injected entropy and `snow`, plus the mac1 primitive.
//!
//! `snow` asks its `CryptoResolver` for an RNG when a handshake is built. With
//! `default-features = false` its default resolver has none (that is what keeps
//! `getrandom` out of the image), so [`EntropyResolver`] supplies one: a small
//! pool pre-filled from the caller's `RngCore + CryptoRng`. Hash and cipher
//! are delegated to snow's pure-Rust `DefaultResolver`; X25519 is our own thin
//! wrapper over the same `curve25519-dalek` ([`X25519`]) that knows the local
//! static key pair, so building a handshake does not re-derive a public key
//! we already hold (snow's `Dh::set` would: one base-point multiplication per
//! side per handshake, about 10 % of a handshake's X25519 budget).

use alloc::boxed::Box;
use alloc::sync::Arc;
use core::cell::Cell;

use blake2::digest::consts::U16;
use blake2::digest::{KeyInit, Mac};
use blake2::{Blake2s256, Blake2sMac, Digest};
use rand_core::{CryptoRng, RngCore};
use snow::params::{CipherChoice, DHChoice, HashChoice, NoiseParams};
use snow::resolvers::{CryptoResolver, DefaultResolver};
use snow::types::{Cipher, Dh, Hash, Random};
use zeroize::Zeroize;

use crate::handshake::LocalKey;
use crate::keys::{PublicKey, StaticDh, KEY_LEN};
use curve25519_dalek::montgomery::MontgomeryPoint;

/// The one Noise protocol this crate speaks (`docs/protocol/wire.md` §4.1
/// "Noise protocol").
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

/// X25519 for snow, over `curve25519-dalek` exactly as snow's own `Dh25519`
/// (clamped scalar multiplication), plus a cache: when snow sets the private
/// key of the local static pair (`Dh::set`), the public half is taken from
/// the pair instead of being recomputed. Secrets are zeroized on drop.
///
/// When a key service holds the local static secret, snow sets the static
/// slot with a placeholder; this type then reports the service's public key
/// and sends every DH of that slot to the service (`StaticDh`).
pub(crate) struct X25519 {
    privkey: [u8; KEY_LEN],
    pubkey: [u8; KEY_LEN],
    /// The local static pair, if known: (secret, public).
    known: Option<([u8; KEY_LEN], [u8; KEY_LEN])>,
    /// The local static key when a key service holds its secret.
    held: Option<([u8; KEY_LEN], Arc<dyn StaticDh>)>,
    /// This instance is the static slot and the secret is held elsewhere.
    use_held: bool,
}

impl X25519 {
    pub(crate) fn new(local: Option<&LocalKey>) -> Self {
        let (known, held) = match local {
            Some(LocalKey::Pair(k)) => (Some((*k.secret().expose(), *k.public().as_bytes())), None),
            Some(LocalKey::Held { public, dh }) => (None, Some((*public.as_bytes(), dh.clone()))),
            None => (None, None),
        };
        X25519 {
            privkey: [0; KEY_LEN],
            pubkey: [0; KEY_LEN],
            known,
            held,
            use_held: false,
        }
    }

    fn derive_pubkey(&mut self) {
        self.pubkey = MontgomeryPoint::mul_base_clamped(self.privkey).to_bytes();
    }
}

impl Drop for X25519 {
    fn drop(&mut self) {
        self.privkey.zeroize();
        if let Some((s, _)) = self.known.as_mut() {
            s.zeroize();
        }
    }
}

impl Dh for X25519 {
    fn name(&self) -> &'static str {
        "25519"
    }

    fn pub_len(&self) -> usize {
        KEY_LEN
    }

    fn priv_len(&self) -> usize {
        KEY_LEN
    }

    fn set(&mut self, privkey: &[u8]) {
        let mut bytes = [0u8; KEY_LEN];
        for (d, s) in bytes.iter_mut().zip(privkey) {
            *d = *s;
        }
        self.privkey = bytes;
        bytes.zeroize();
        // Only the static slot is ever `set` (ephemerals are generated).
        if let Some((public, _)) = &self.held {
            self.pubkey = *public;
            self.use_held = true;
            return;
        }
        // Both values are our own secret, so a plain comparison leaks nothing
        // to a peer.
        match &self.known {
            Some((s, p)) if *s == self.privkey => self.pubkey = *p,
            _ => self.derive_pubkey(),
        }
    }

    fn generate(&mut self, rng: &mut dyn Random) -> Result<(), snow::Error> {
        let mut bytes = [0u8; KEY_LEN];
        rng.try_fill_bytes(&mut bytes)?;
        self.privkey = bytes;
        bytes.zeroize();
        self.use_held = false;
        self.derive_pubkey();
        Ok(())
    }

    fn pubkey(&self) -> &[u8] {
        &self.pubkey
    }

    fn privkey(&self) -> &[u8] {
        &self.privkey
    }

    fn dh(&self, pubkey: &[u8], out: &mut [u8]) -> Result<(), snow::Error> {
        let theirs = <[u8; KEY_LEN]>::try_from(pubkey.get(..KEY_LEN).ok_or(snow::Error::Dh)?)
            .map_err(|_| snow::Error::Dh)?;
        let shared = match (&self.held, self.use_held) {
            (Some((_, service)), true) => service.dh(&theirs).map_err(|_| snow::Error::Dh)?,
            _ => MontgomeryPoint(theirs).mul_clamped(self.privkey).to_bytes(),
        };
        out.get_mut(..KEY_LEN)
            .ok_or(snow::Error::Dh)?
            .copy_from_slice(&shared);
        Ok(())
    }
}

/// A `CryptoResolver` whose RNG is the caller's injected entropy.
pub(crate) struct EntropyResolver {
    pool: Cell<Option<EntropyPool>>,
    local: Option<LocalKey>,
}

impl EntropyResolver {
    /// `local` is the static pair the handshake will be built with (its
    /// public half is then never recomputed).
    pub(crate) fn new(pool: EntropyPool, local: Option<&LocalKey>) -> Self {
        EntropyResolver {
            pool: Cell::new(Some(pool)),
            local: local.cloned(),
        }
    }
}

impl CryptoResolver for EntropyResolver {
    fn resolve_rng(&self) -> Option<Box<dyn Random>> {
        // Handed out once; a second resolve gets nothing, so entropy is never reused.
        self.pool.take().map(|p| Box::new(p) as Box<dyn Random>)
    }

    fn resolve_dh(&self, choice: &DHChoice) -> Option<Box<dyn Dh>> {
        match choice {
            DHChoice::Curve25519 => Some(Box::new(X25519::new(self.local.as_ref()))),
            other => DefaultResolver.resolve_dh(other),
        }
    }

    fn resolve_hash(&self, choice: &HashChoice) -> Option<Box<dyn Hash>> {
        DefaultResolver.resolve_hash(choice)
    }

    fn resolve_cipher(&self, choice: &CipherChoice) -> Option<Box<dyn Cipher>> {
        // Handshake messages only (a few short ones, dominated by DH). The
        // session's transport cipher is `aead::CipherState`.
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
        let r = EntropyResolver::new(
            EntropyPool {
                bytes: [1; HANDSHAKE_ENTROPY],
                used: 0,
            },
            None,
        );
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

#[cfg(test)]
mod dh_tests {
    use super::*;
    use crate::keys::StaticKeypair;

    /// Our X25519 agrees with snow's own implementation, with and without
    /// the cached static pair, and refuses short keys instead of panicking.
    #[test]
    fn x25519_matches_snow_default() {
        let pair = StaticKeypair::from_secret(crate::keys::SecretKey::from_bytes([3; 32]));
        let local = LocalKey::Pair(pair.clone());
        let mut ours = X25519::new(Some(&local));
        ours.set(pair.secret().expose());
        assert_eq!(ours.pubkey(), pair.public().as_bytes());
        let mut theirs = DefaultResolver
            .resolve_dh(&DHChoice::Curve25519)
            .expect("snow x25519");
        theirs.set(pair.secret().expose());
        assert_eq!(ours.pubkey(), theirs.pubkey());
        // A different secret is derived, not served from the cache.
        let mut other = X25519::new(Some(&local));
        other.set(&[5; 32]);
        theirs.set(&[5; 32]);
        assert_eq!(other.pubkey(), theirs.pubkey());
        let peer = [9u8; 32];
        let (mut a, mut b) = ([0u8; 32], [0u8; 32]);
        other.dh(&peer, &mut a).expect("dh");
        theirs.dh(&peer, &mut b).expect("dh");
        assert_eq!(a, b);
        assert!(other.dh(&[1; 31], &mut a).is_err());
    }
}
