//! The Noise transport cipher, in place.
//!
//! After the handshake, `snow` hands us the two `Split()` keys
//! (`dangerously_get_raw_split`) and we run Noise's `CipherState` for
//! `ChaChaPoly` ourselves: ChaCha20-Poly1305 (RFC 8439), 96-bit nonce = 32
//! zero bits ‖ the 64-bit message counter little-endian, empty associated
//! data, the 16-byte tag appended; counter 2^64-1 is reserved, so a state
//! refuses to go past it (Noise §5.1). This is byte-for-byte what snow's
//! `TransportState` produces — `tests` below check it against snow itself —
//! but it encrypts and decrypts inside the caller's buffer, so a data
//! message costs no intermediate copies.
//!
//! Backends, chosen at build time (docs/performance.md, "Backend decision"):
//! - `openssl-aead` (hosts, in `default`): the system libssl's
//!   ChaCha20-Poly1305 (AVX-512 assembly on CPUs that have it) for messages
//!   of [`OPENSSL_MIN`] bytes and more, ring below that;
//! - `ring-aead` (hosts): ring's assembly, used when `openssl-aead` is off;
//! - neither: the pure-Rust `chacha20poly1305` crate (`no_std`, the OS).
//!
//! All produce the same bytes; `tests` below check each against snow.

use crate::session::TAG_LEN;

/// Messages shorter than this go through ring even with `openssl-aead`:
/// OpenSSL 3's per-message `EVP_CipherInit_ex` costs ~0.7 µs, which made a
/// ping/pong round trip (4 AEAD calls on 9-byte messages) ~2.8 µs slower
/// than ring, while ring's lower throughput costs only ~0.14 ns/B (about
/// 0.6 µs at 4 KiB). Same cipher, same bytes.
#[cfg(feature = "openssl-aead")]
const OPENSSL_MIN: usize = 4096;

#[cfg(feature = "openssl-aead")]
mod backend {
    use super::{openssl_backend, ring_backend, AeadError, OPENSSL_MIN, TAG_LEN};

    /// ring for short messages, OpenSSL for bulk.
    pub(super) struct Key {
        small: ring_backend::Key,
        big: openssl_backend::Key,
    }

    impl Key {
        pub(super) fn new(key: &[u8; 32]) -> Result<Self, AeadError> {
            Ok(Key {
                small: ring_backend::Key::new(key)?,
                big: openssl_backend::Key::new(key)?,
            })
        }

        #[cfg_attr(not(test), allow(dead_code))]
        pub(super) fn seal(
            &mut self,
            nonce: [u8; 12],
            buf: &mut [u8],
        ) -> Result<[u8; TAG_LEN], AeadError> {
            if buf.len() < OPENSSL_MIN {
                self.small.seal(nonce, buf)
            } else {
                self.big.seal(nonce, buf)
            }
        }

        pub(super) fn seal_to(
            &mut self,
            nonce: [u8; 12],
            head: u8,
            body: &[u8],
            out: &mut [u8],
        ) -> Result<[u8; TAG_LEN], AeadError> {
            if out.len() != 1 + body.len() {
                return Err(AeadError);
            }
            if out.len() < OPENSSL_MIN {
                out[0] = head;
                out[1..].copy_from_slice(body);
                self.small.seal(nonce, out)
            } else {
                self.big.seal_to(nonce, head, body, out)
            }
        }

        pub(super) fn open<'a>(
            &mut self,
            nonce: [u8; 12],
            msg: &'a mut [u8],
        ) -> Result<&'a mut [u8], AeadError> {
            if msg.len() < OPENSSL_MIN + TAG_LEN {
                self.small.open(nonce, msg)
            } else {
                self.big.open(nonce, msg)
            }
        }
    }
}

#[cfg(feature = "openssl-aead")]
mod openssl_backend {
    use super::{AeadError, TAG_LEN};
    use openssl::cipher::Cipher;
    use openssl::cipher_ctx::CipherCtx;

    /// One EVP context with the key loaded; each message re-initialises
    /// only the nonce (and the direction).
    pub(super) struct Key(CipherCtx);

    impl Key {
        pub(super) fn new(key: &[u8; 32]) -> Result<Self, AeadError> {
            let mut c = CipherCtx::new().map_err(|_| AeadError)?;
            c.encrypt_init(Some(Cipher::chacha20_poly1305()), Some(key), None)
                .map_err(|_| AeadError)?;
            Ok(Key(c))
        }

        #[cfg_attr(not(test), allow(dead_code))]
        pub(super) fn seal(
            &mut self,
            nonce: [u8; 12],
            buf: &mut [u8],
        ) -> Result<[u8; TAG_LEN], AeadError> {
            let c = &mut self.0;
            c.encrypt_init(None, None, Some(&nonce))
                .map_err(|_| AeadError)?;
            let n = buf.len();
            c.cipher_update_inplace(buf, n).map_err(|_| AeadError)?;
            c.cipher_final(&mut []).map_err(|_| AeadError)?;
            let mut tag = [0u8; TAG_LEN];
            c.tag(&mut tag).map_err(|_| AeadError)?;
            Ok(tag)
        }

        /// Seals `[head] ‖ body` into `out` (same length) as it reads it.
        pub(super) fn seal_to(
            &mut self,
            nonce: [u8; 12],
            head: u8,
            body: &[u8],
            out: &mut [u8],
        ) -> Result<[u8; TAG_LEN], AeadError> {
            if out.len() != 1 + body.len() {
                return Err(AeadError);
            }
            let c = &mut self.0;
            c.encrypt_init(None, None, Some(&nonce))
                .map_err(|_| AeadError)?;
            let (o1, o2) = out.split_at_mut(1);
            c.cipher_update(&[head], Some(o1)).map_err(|_| AeadError)?;
            if !body.is_empty() {
                c.cipher_update(body, Some(o2)).map_err(|_| AeadError)?;
            }
            c.cipher_final(&mut []).map_err(|_| AeadError)?;
            let mut tag = [0u8; TAG_LEN];
            c.tag(&mut tag).map_err(|_| AeadError)?;
            Ok(tag)
        }

        pub(super) fn open<'a>(
            &mut self,
            nonce: [u8; 12],
            msg: &'a mut [u8],
        ) -> Result<&'a mut [u8], AeadError> {
            let c = &mut self.0;
            let ct_len = msg.len().checked_sub(TAG_LEN).ok_or(AeadError)?;
            let (ct, tag) = msg.split_at_mut(ct_len);
            c.decrypt_init(None, None, Some(&nonce))
                .map_err(|_| AeadError)?;
            c.set_tag(tag).map_err(|_| AeadError)?;
            c.cipher_update_inplace(ct, ct_len).map_err(|_| AeadError)?;
            // The tag is checked here; on failure the caller drops the
            // (already decrypted) bytes and closes the session.
            c.cipher_final(&mut []).map_err(|_| AeadError)?;
            Ok(ct)
        }
    }
}

#[cfg(all(feature = "ring-aead", not(feature = "openssl-aead")))]
use ring_backend as backend;

#[cfg(any(feature = "ring-aead", feature = "openssl-aead"))]
mod ring_backend {
    use super::{AeadError, TAG_LEN};
    use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305};

    pub(super) struct Key(LessSafeKey);

    impl Key {
        pub(super) fn new(key: &[u8; 32]) -> Result<Self, AeadError> {
            Ok(Key(LessSafeKey::new(
                UnboundKey::new(&CHACHA20_POLY1305, key).map_err(|_| AeadError)?,
            )))
        }

        pub(super) fn seal(
            &mut self,
            nonce: [u8; 12],
            buf: &mut [u8],
        ) -> Result<[u8; TAG_LEN], AeadError> {
            let t = self
                .0
                .seal_in_place_separate_tag(Nonce::assume_unique_for_key(nonce), Aad::empty(), buf)
                .map_err(|_| AeadError)?;
            let mut out = [0u8; TAG_LEN];
            out.copy_from_slice(t.as_ref());
            Ok(out)
        }

        pub(super) fn open<'a>(
            &mut self,
            nonce: [u8; 12],
            msg: &'a mut [u8],
        ) -> Result<&'a mut [u8], AeadError> {
            self.0
                .open_in_place(Nonce::assume_unique_for_key(nonce), Aad::empty(), msg)
                .map_err(|_| AeadError)
        }
    }
}

#[cfg(not(any(feature = "ring-aead", feature = "openssl-aead")))]
mod backend {
    use super::{AeadError, TAG_LEN};
    use chacha20poly1305::{AeadInPlace, ChaCha20Poly1305, KeyInit, Tag};

    pub(super) struct Key(ChaCha20Poly1305);

    impl Key {
        pub(super) fn new(key: &[u8; 32]) -> Result<Self, AeadError> {
            Ok(Key(ChaCha20Poly1305::new(key.into())))
        }

        pub(super) fn seal(
            &mut self,
            nonce: [u8; 12],
            buf: &mut [u8],
        ) -> Result<[u8; TAG_LEN], AeadError> {
            Ok(self
                .0
                .encrypt_in_place_detached(&nonce.into(), &[], buf)
                .map_err(|_| AeadError)?
                .into())
        }

        pub(super) fn open<'a>(
            &mut self,
            nonce: [u8; 12],
            msg: &'a mut [u8],
        ) -> Result<&'a mut [u8], AeadError> {
            let ct_len = msg.len().checked_sub(TAG_LEN).ok_or(AeadError)?;
            let (ct, tag) = msg.split_at_mut(ct_len);
            let tag = Tag::clone_from_slice(tag);
            self.0
                .decrypt_in_place_detached(&nonce.into(), &[], ct, &tag)
                .map_err(|_| AeadError)?;
            Ok(ct)
        }
    }
}

/// One direction's cipher state.
pub(crate) struct CipherState {
    key: backend::Key,
    n: u64,
}

/// Any failure: bad tag, short input, counter exhausted, backend error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct AeadError;

impl CipherState {
    pub(crate) fn new(key: &[u8; 32]) -> Result<Self, AeadError> {
        Ok(CipherState {
            key: backend::Key::new(key)?,
            n: 0,
        })
    }

    /// The nonce for the next message, consuming it.
    fn next_nonce(&mut self) -> Result<[u8; 12], AeadError> {
        if self.n == u64::MAX {
            return Err(AeadError);
        }
        let mut nonce = [0u8; 12];
        nonce[4..].copy_from_slice(&self.n.to_le_bytes());
        Ok(nonce)
    }

    /// Encrypts `buf` in place and returns the tag to append.
    #[cfg_attr(all(feature = "openssl-aead", not(test)), allow(dead_code))]
    pub(crate) fn seal_in_place(&mut self, buf: &mut [u8]) -> Result<[u8; TAG_LEN], AeadError> {
        let nonce = self.next_nonce()?;
        let tag = self.key.seal(nonce, buf)?;
        self.n += 1;
        Ok(tag)
    }

    /// Encrypts `[head] ‖ body` into `out` (exactly `1 + body.len()` bytes)
    /// and returns the tag: one pass where the backend can write elsewhere
    /// than it reads (OpenSSL), else a copy and [`seal_in_place`](Self::seal_in_place).
    pub(crate) fn seal_to(
        &mut self,
        head: u8,
        body: &[u8],
        out: &mut [u8],
    ) -> Result<[u8; TAG_LEN], AeadError> {
        if out.len() != 1 + body.len() {
            return Err(AeadError);
        }
        #[cfg(feature = "openssl-aead")]
        {
            let nonce = self.next_nonce()?;
            let tag = self.key.seal_to(nonce, head, body, out)?;
            self.n += 1;
            Ok(tag)
        }
        #[cfg(not(feature = "openssl-aead"))]
        {
            out[0] = head;
            out[1..].copy_from_slice(body);
            self.seal_in_place(out)
        }
    }

    /// Decrypts `msg` (ciphertext ‖ tag) in place; returns the plaintext
    /// prefix. On failure the counter does not advance (and the session
    /// using it closes anyway).
    pub(crate) fn open_in_place<'a>(
        &mut self,
        msg: &'a mut [u8],
    ) -> Result<&'a mut [u8], AeadError> {
        let nonce = self.next_nonce()?;
        if msg.len() < TAG_LEN {
            return Err(AeadError);
        }
        let plain = self.key.open(nonce, msg)?;
        self.n += 1;
        Ok(plain)
    }

    #[cfg(test)]
    pub(crate) fn set_counter(&mut self, n: u64) {
        self.n = n;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;
    use alloc::vec::Vec;

    /// A snow handshake pair; one side's transport is snow's own
    /// `TransportState`, the other ours from the raw split. Messages both
    /// ways must be identical on the wire and open on the other side.
    #[test]
    fn interoperates_with_snow_transport() {
        let params: snow::params::NoiseParams =
            crate::crypto::NOISE_PATTERN.parse().expect("params");
        let mk = |seed: u8| {
            let sk = [seed; 32];
            let pk = curve25519_dalek::montgomery::MontgomeryPoint::mul_base_clamped(sk).to_bytes();
            (sk, pk)
        };
        let (isk, _ipk) = mk(1);
        let (rsk, rpk) = mk(2);
        let resolver = |seed: u8| {
            let mut pool = crate::crypto::EntropyPool::draw(&mut FixedRng(seed));
            let _ = &mut pool;
            alloc::boxed::Box::new(crate::crypto::EntropyResolver::new(pool, None))
        };
        let mut i = snow::Builder::with_resolver(params.clone(), resolver(3))
            .local_private_key(&isk)
            .expect("key")
            .remote_public_key(&rpk)
            .expect("rs")
            .build_initiator()
            .expect("init");
        let mut r = snow::Builder::with_resolver(params, resolver(4))
            .local_private_key(&rsk)
            .expect("key")
            .build_responder()
            .expect("resp");
        let mut buf = [0u8; 256];
        let mut pl = [0u8; 256];
        let n = i.write_message(&[], &mut buf).expect("m1");
        r.read_message(&buf[..n], &mut pl).expect("m1");
        let n = r.write_message(b"hello", &mut buf).expect("m2");
        i.read_message(&buf[..n], &mut pl).expect("m2");
        let n = i.write_message(b"world", &mut buf).expect("m3");
        r.read_message(&buf[..n], &mut pl).expect("m3");
        // Initiator: ours (raw split). Responder: snow's TransportState.
        let (k1, k2) = i.dangerously_get_raw_split();
        let mut tx = CipherState::new(&k1).expect("k1");
        let mut rx = CipherState::new(&k2).expect("k2");
        let mut snow_r = r.into_transport_mode().expect("transport");
        for round in 0..7u8 {
            // Short messages and, from round 5, bulk-sized ones (each
            // backend of `openssl-aead` is checked against snow).
            let len = match round {
                5 => 4095,
                6 => 40_000,
                r => r as usize * 300 + 1,
            };
            let msg: Vec<u8> = (0..len).map(|x| x as u8 ^ round).collect();
            // ours → snow
            let mut wire = msg.clone();
            let tag = tx.seal_in_place(&mut wire).expect("seal");
            wire.extend_from_slice(&tag);
            let mut out = vec![0u8; wire.len()];
            let n = snow_r
                .read_message(&wire, &mut out)
                .expect("snow opens ours");
            assert_eq!(&out[..n], &msg[..]);
            // snow → ours
            let mut wire = vec![0u8; msg.len() + TAG_LEN];
            let n = snow_r.write_message(&msg, &mut wire).expect("snow seals");
            wire.truncate(n);
            let plain = rx.open_in_place(&mut wire).expect("ours opens snow's");
            assert_eq!(plain, &msg[..]);
        }
        // Tampering and replays fail.
        let mut wire = vec![0u8; 10 + TAG_LEN];
        let n = snow_r.write_message(&[7; 10], &mut wire).expect("seal");
        wire.truncate(n);
        let mut bad = wire.clone();
        bad[3] ^= 1;
        assert!(rx.open_in_place(&mut bad).is_err());
        assert!(rx.open_in_place(&mut wire.clone()).is_ok());
        assert!(rx.open_in_place(&mut wire).is_err(), "replay");
        assert!(
            rx.open_in_place(&mut [0u8; 15]).is_err(),
            "shorter than a tag"
        );
    }

    /// One state sealing and opening in turn (a backend that keeps a
    /// direction in its context must switch it per message).
    #[test]
    fn one_state_seals_and_opens_in_turn() {
        let mut a = CipherState::new(&[9; 32]).expect("key");
        let mut b = CipherState::new(&[9; 32]).expect("key");
        for len in [0usize, 1, 63, 64, 65, 1000, 16 * 1024 + 3] {
            let msg: Vec<u8> = (0..len).map(|x| x as u8).collect();
            let mut wire = msg.clone();
            let tag = a.seal_in_place(&mut wire).expect("seal");
            wire.extend_from_slice(&tag);
            assert_eq!(b.open_in_place(&mut wire).expect("open"), &msg[..]);
            let mut wire = msg.clone();
            let tag = b.seal_in_place(&mut wire).expect("seal");
            wire.extend_from_slice(&tag);
            assert_eq!(a.open_in_place(&mut wire).expect("open"), &msg[..]);
        }
    }

    /// `seal_to` (one pass on OpenSSL) writes the same record as a copy
    /// and `seal_in_place`.
    #[test]
    fn seal_to_matches_seal_in_place() {
        let mut a = CipherState::new(&[3; 32]).expect("key");
        let mut b = CipherState::new(&[3; 32]).expect("key");
        for len in [0usize, 1, 15, 64, 1000, 65_518] {
            let body: Vec<u8> = (0..len).map(|x| (x * 7) as u8).collect();
            let mut out = vec![0u8; 1 + len];
            let t1 = a.seal_to(3, &body, &mut out).expect("seal_to");
            let mut ip = vec![3u8];
            ip.extend_from_slice(&body);
            let t2 = b.seal_in_place(&mut ip).expect("seal");
            assert_eq!(out, ip);
            assert_eq!(t1, t2);
        }
        assert!(a.seal_to(3, &[1, 2], &mut [0u8; 2]).is_err());
    }

    #[test]
    fn counter_exhaustion_is_an_error() {
        let mut c = CipherState::new(&[5; 32]).expect("key");
        c.set_counter(u64::MAX - 1);
        assert!(c.seal_in_place(&mut [1, 2, 3]).is_ok());
        assert!(c.seal_in_place(&mut [1, 2, 3]).is_err());
        assert!(c.open_in_place(&mut [0u8; 20]).is_err());
    }

    struct FixedRng(u8);
    impl rand_core::RngCore for FixedRng {
        fn next_u32(&mut self) -> u32 {
            u32::from(self.0)
        }
        fn next_u64(&mut self) -> u64 {
            u64::from(self.0)
        }
        fn fill_bytes(&mut self, d: &mut [u8]) {
            d.fill(self.0);
        }
    }
    impl rand_core::CryptoRng for FixedRng {}
}
