//! Static key pairs and public keys.
//!
//! Secrets are generated from entropy the caller injects (`rand_core`
//! `RngCore + CryptoRng`), never from an OS source, so the OS daemon can feed
//! RDRAND and tests can feed a seeded generator. Secret material is zeroized
//! on drop and never printed: every `Debug` impl here redacts it.

use core::fmt;

use curve25519_dalek::montgomery::MontgomeryPoint;
use rand_core::{CryptoRng, RngCore};
use zeroize::Zeroize;

/// Length of an X25519 key, public or secret.
pub const KEY_LEN: usize = 32;

/// An X25519 public key (a Noise static key as carried in announces).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PublicKey([u8; KEY_LEN]);

/// Canonical encodings of the Curve25519 points of small order (libsodium's
/// blocklist). Bit 255 is ignored by X25519, so the comparison masks it.
/// A peer advertising one of these could "authenticate" without knowing a
/// private key (every DH with it is predictable), so we never bind one.
const SMALL_ORDER: [[u8; KEY_LEN]; 7] = [
    [0; 32],
    [
        1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        0, 0,
    ],
    [
        0xe0, 0xeb, 0x7a, 0x7c, 0x3b, 0x41, 0xb8, 0xae, 0x16, 0x56, 0xe3, 0xfa, 0xf1, 0x9f, 0xc4,
        0x6a, 0xda, 0x09, 0x8d, 0xeb, 0x9c, 0x32, 0xb1, 0xfd, 0x86, 0x62, 0x05, 0x16, 0x5f, 0x49,
        0xb8, 0x00,
    ],
    [
        0x5f, 0x9c, 0x95, 0xbc, 0xa3, 0x50, 0x8c, 0x24, 0xb1, 0xd0, 0xb1, 0x55, 0x9c, 0x83, 0xef,
        0x5b, 0x04, 0x44, 0x5c, 0xc4, 0x58, 0x1c, 0x8e, 0x86, 0xd8, 0x22, 0x4e, 0xdd, 0xd0, 0x9f,
        0x11, 0x57,
    ],
    [
        0xec, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        0xff, 0x7f,
    ],
    [
        0xed, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        0xff, 0x7f,
    ],
    [
        0xee, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        0xff, 0x7f,
    ],
];

impl PublicKey {
    /// Wraps raw key bytes. No validation: see [`PublicKey::is_weak`].
    pub const fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
        PublicKey(bytes)
    }

    /// The raw key bytes, as sent on the wire.
    pub const fn as_bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }

    /// True for points of small order (including all-zero). Such keys are
    /// refused by the announce decoder and by the handshake.
    pub fn is_weak(&self) -> bool {
        let mut k = self.0;
        k[31] &= 0x7f;
        SMALL_ORDER.contains(&k)
    }
}

impl fmt::Debug for PublicKey {
    /// Public keys are not secret; print a short hex prefix so logs stay
    /// readable and comparable.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey(")?;
        for b in &self.0[..8] {
            write!(f, "{b:02x}")?;
        }
        write!(f, "…)")
    }
}

/// An X25519 secret key. Zeroized on drop; `Debug` never shows it.
#[derive(Clone)]
pub struct SecretKey([u8; KEY_LEN]);

impl SecretKey {
    /// Wraps raw secret bytes (e.g. loaded from a key store). X25519 clamps
    /// on use, so any 32 bytes are a valid secret.
    pub const fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
        SecretKey(bytes)
    }

    /// Draws a fresh secret from the caller's cryptographic RNG.
    pub fn generate<R: RngCore + CryptoRng + ?Sized>(rng: &mut R) -> Self {
        let mut bytes = [0u8; KEY_LEN];
        rng.fill_bytes(&mut bytes);
        SecretKey(bytes)
    }

    /// Raw secret bytes, for handing to the Noise engine only.
    pub(crate) fn expose(&self) -> &[u8; KEY_LEN] {
        &self.0
    }

    /// `X25519(self, peer)`: what a key service computes for the soft-bus
    /// daemon ([`StaticDh`]) without ever handing the secret out.
    pub fn diffie_hellman(&self, peer: &[u8; KEY_LEN]) -> [u8; KEY_LEN] {
        MontgomeryPoint(*peer).mul_clamped(self.0).to_bytes()
    }

    /// The public key matching this secret.
    pub fn public_key(&self) -> PublicKey {
        PublicKey(MontgomeryPoint::mul_base_clamped(self.0).to_bytes())
    }
}

impl Drop for SecretKey {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretKey(<redacted>)")
    }
}

/// A device's long-term Noise static key pair.
#[derive(Clone)]
pub struct StaticKeypair {
    secret: SecretKey,
    public: PublicKey,
}

impl StaticKeypair {
    /// Generates a fresh key pair from the caller's cryptographic RNG.
    pub fn generate<R: RngCore + CryptoRng + ?Sized>(rng: &mut R) -> Self {
        Self::from_secret(SecretKey::generate(rng))
    }

    /// Builds the pair from a stored secret.
    pub fn from_secret(secret: SecretKey) -> Self {
        let public = secret.public_key();
        StaticKeypair { secret, public }
    }

    /// The public half, as announced.
    pub fn public(&self) -> &PublicKey {
        &self.public
    }

    /// The secret half.
    pub fn secret(&self) -> &SecretKey {
        &self.secret
    }
}

impl fmt::Debug for StaticKeypair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StaticKeypair")
            .field("public", &self.public)
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// Deterministic key pair derived from `(tag, port)`, so two bring-up nodes
/// can know each other's keys without a key store.
///
/// Anyone who knows the tag and port knows the secret: this is for QEMU
/// bring-up and tests only. The crate refuses to compile with this feature in
/// a release build (see `lib.rs`).
// SECURITY: bring-up test keys, NOT production custody
#[cfg(feature = "bringup-test-keys")]
pub fn bringup_keypair(tag: &str, port: u16) -> StaticKeypair {
    use blake2::{Blake2s256, Digest};
    // SECURITY: bring-up test keys, NOT production custody
    let mut h = Blake2s256::new();
    h.update(b"nexus-dsoftbus-bringup-key-v1");
    h.update((tag.len() as u64).to_be_bytes());
    h.update(tag.as_bytes());
    h.update(port.to_be_bytes());
    let mut secret = [0u8; KEY_LEN];
    secret.copy_from_slice(&h.finalize());
    // SECURITY: bring-up test keys, NOT production custody
    let pair = StaticKeypair::from_secret(SecretKey::from_bytes(secret));
    secret.zeroize();
    pair
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::format;
    use rand_chacha::rand_core::SeedableRng;
    use rand_chacha::ChaCha20Rng;

    #[test]
    fn debug_redacts_secrets() {
        let mut rng = ChaCha20Rng::seed_from_u64(1);
        let kp = StaticKeypair::generate(&mut rng);
        let secret_hex: alloc::string::String = kp
            .secret()
            .expose()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let dbg = format!("{kp:?} {:?}", kp.secret());
        assert!(dbg.contains("redacted"));
        assert!(!dbg.contains(&secret_hex[..16]));
    }

    #[test]
    fn public_key_matches_rfc7748_vector() {
        // RFC 7748 §6.1, Alice.
        let sk: [u8; 32] = [
            0x77, 0x07, 0x6d, 0x0a, 0x73, 0x18, 0xa5, 0x7d, 0x3c, 0x16, 0xc1, 0x72, 0x51, 0xb2,
            0x66, 0x45, 0xdf, 0x4c, 0x2f, 0x87, 0xeb, 0xc0, 0x99, 0x2a, 0xb1, 0x77, 0xfb, 0xa5,
            0x1d, 0xb9, 0x2c, 0x2a,
        ];
        let pk: [u8; 32] = [
            0x85, 0x20, 0xf0, 0x09, 0x89, 0x30, 0xa7, 0x54, 0x74, 0x8b, 0x7d, 0xdc, 0xb4, 0x3e,
            0xf7, 0x5a, 0x0d, 0xbf, 0x3a, 0x0d, 0x26, 0x38, 0x1a, 0xf4, 0xeb, 0xa4, 0xa9, 0x8e,
            0xaa, 0x9b, 0x4e, 0x6a,
        ];
        let kp = StaticKeypair::from_secret(SecretKey::from_bytes(sk));
        assert_eq!(kp.public().as_bytes(), &pk);
        assert!(!kp.public().is_weak());
    }

    #[test]
    fn weak_keys_detected_with_high_bit() {
        assert!(PublicKey::from_bytes([0; 32]).is_weak());
        let mut k = SMALL_ORDER[4];
        k[31] |= 0x80;
        assert!(PublicKey::from_bytes(k).is_weak());
    }

    #[cfg(feature = "bringup-test-keys")]
    #[test]
    fn bringup_keys_are_deterministic_and_distinct() {
        // SECURITY: bring-up test keys, NOT production custody
        let a = bringup_keypair("nexus", 34567);
        let b = bringup_keypair("nexus", 34567);
        let c = bringup_keypair("nexus", 34568);
        assert_eq!(a.public(), b.public());
        assert_ne!(a.public(), c.public());
    }
}

/// X25519 with the local static secret, performed by whoever holds it — in
/// the OS, the key service `keystored`, so the device's private key never
/// enters the soft-bus daemon. A [`crate::LocalIdentity`] built with
/// [`crate::LocalIdentity::with_key_service`] calls it for every
/// Diffie-Hellman that involves the local static key (two per handshake on
/// either side of XK); ephemeral keys stay in-process.
pub trait StaticDh: Send + Sync {
    /// `X25519(local static secret, peer)`. An error fails the handshake
    /// (`AuthError::Internal`), it never falls back to anything.
    fn dh(&self, peer: &[u8; KEY_LEN]) -> Result<[u8; KEY_LEN], KeyServiceError>;
}

/// The key service could not perform the operation (gone, refused, or
/// answered garbage).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeyServiceError;

impl core::fmt::Display for KeyServiceError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("key service unavailable")
    }
}
