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
//! Backends: `ring` (assembly, feature `ring-aead`, hosts only) or the
//! pure-Rust `chacha20poly1305` crate (always available, `no_std`).

use crate::session::TAG_LEN;

/// One direction's cipher state.
pub(crate) struct CipherState {
    #[cfg(feature = "ring-aead")]
    key: ring::aead::LessSafeKey,
    #[cfg(not(feature = "ring-aead"))]
    key: chacha20poly1305::ChaCha20Poly1305,
    n: u64,
}

/// Any failure: bad tag, short input, counter exhausted, backend error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct AeadError;

impl CipherState {
    pub(crate) fn new(key: &[u8; 32]) -> Result<Self, AeadError> {
        #[cfg(feature = "ring-aead")]
        let key = ring::aead::LessSafeKey::new(
            ring::aead::UnboundKey::new(&ring::aead::CHACHA20_POLY1305, key)
                .map_err(|_| AeadError)?,
        );
        #[cfg(not(feature = "ring-aead"))]
        let key = {
            use chacha20poly1305::KeyInit;
            chacha20poly1305::ChaCha20Poly1305::new(key.into())
        };
        Ok(CipherState { key, n: 0 })
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
    pub(crate) fn seal_in_place(&mut self, buf: &mut [u8]) -> Result<[u8; TAG_LEN], AeadError> {
        let nonce = self.next_nonce()?;
        #[cfg(feature = "ring-aead")]
        let tag: [u8; TAG_LEN] = {
            let t = self
                .key
                .seal_in_place_separate_tag(
                    ring::aead::Nonce::assume_unique_for_key(nonce),
                    ring::aead::Aad::empty(),
                    buf,
                )
                .map_err(|_| AeadError)?;
            let mut out = [0u8; TAG_LEN];
            out.copy_from_slice(t.as_ref());
            out
        };
        #[cfg(not(feature = "ring-aead"))]
        let tag: [u8; TAG_LEN] = {
            use chacha20poly1305::AeadInPlace;
            self.key
                .encrypt_in_place_detached(&nonce.into(), &[], buf)
                .map_err(|_| AeadError)?
                .into()
        };
        self.n += 1;
        Ok(tag)
    }

    /// Decrypts `msg` (ciphertext ‖ tag) in place; returns the plaintext
    /// prefix. On failure the counter does not advance (and the session
    /// using it closes anyway).
    pub(crate) fn open_in_place<'a>(
        &mut self,
        msg: &'a mut [u8],
    ) -> Result<&'a mut [u8], AeadError> {
        let nonce = self.next_nonce()?;
        let ct_len = msg.len().checked_sub(TAG_LEN).ok_or(AeadError)?;
        #[cfg(feature = "ring-aead")]
        let plain = {
            let p = self
                .key
                .open_in_place(
                    ring::aead::Nonce::assume_unique_for_key(nonce),
                    ring::aead::Aad::empty(),
                    msg,
                )
                .map_err(|_| AeadError)?;
            debug_assert_eq!(p.len(), ct_len);
            p
        };
        #[cfg(not(feature = "ring-aead"))]
        let plain = {
            use chacha20poly1305::AeadInPlace;
            let (ct, tag) = msg.split_at_mut(ct_len);
            let tag = chacha20poly1305::Tag::clone_from_slice(tag);
            self.key
                .decrypt_in_place_detached(&nonce.into(), &[], ct, &tag)
                .map_err(|_| AeadError)?;
            ct
        };
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
        for round in 0..5u8 {
            let msg: Vec<u8> = (0..(round as usize * 300 + 1))
                .map(|x| x as u8 ^ round)
                .collect();
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
