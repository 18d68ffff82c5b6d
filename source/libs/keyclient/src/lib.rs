//! The key-service protocol: `keystored` holds the device's static X25519
//! secret and answers two questions for `dsoftbusd` — "what is the public
//! key" and "X25519(secret, this peer key)" — so the secret never leaves
//! keystored's address space. Only dsoftbusd has a channel to keystored
//! (init links nobody else), so the grant is the access check.
//!
//! It also keeps dsoftbusd's known-peer pins on the same disk, as one opaque
//! blob (at most [`MAX_PINS_BLOB`] bytes) that dsoftbusd encodes.
//!
//! One request per message, one answer per request, in order. Request:
//! `op u8` (1 public key, 2 DH, 3 load pins, 4 save pins) then, for DH, the
//! peer's 32-byte public key, for save, the blob. Answer: `status u8` (0 ok,
//! 1 refused: no usable identity or store, 2 malformed) then, when ok, the
//! payload (32 bytes for a key, the blob for load, nothing for save).
//! Decoding is total.

#![no_std]

extern crate alloc;

use alloc::vec::Vec;

use dsoftbus::{KeyServiceError, PublicKey, StaticDh};
use nexus_abi::Channel;

/// Key length (X25519).
pub const KEY_LEN: usize = 32;
/// Largest pins blob keystored stores (one record of the record store).
pub const MAX_PINS_BLOB: usize = 4096;
const OP_PUBLIC: u8 = 1;
const OP_DH: u8 = 2;
const OP_PINS_LOAD: u8 = 3;
const OP_PINS_SAVE: u8 = 4;

/// A request to keystored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    /// The device's static public key.
    Public,
    /// `X25519(device secret, peer)`.
    Dh([u8; KEY_LEN]),
    /// The stored pins blob (empty if none).
    PinsLoad,
    /// Replace the stored pins blob.
    PinsSave(Vec<u8>),
}

/// Why keystored did not answer with a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyError {
    /// keystored has no usable identity (corrupt or foreign store).
    Refused,
    /// A malformed request or answer.
    Malformed,
    /// The channel failed (keystored gone).
    Gone,
}

impl core::fmt::Display for KeyError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            KeyError::Refused => "keystored refuses: no usable identity",
            KeyError::Malformed => "malformed key-service message",
            KeyError::Gone => "keystored channel closed",
        })
    }
}

impl Request {
    /// Encode.
    pub fn encode(&self) -> Vec<u8> {
        match self {
            Request::Public => alloc::vec![OP_PUBLIC],
            Request::Dh(k) => {
                let mut v = alloc::vec![OP_DH];
                v.extend_from_slice(k);
                v
            }
            Request::PinsLoad => alloc::vec![OP_PINS_LOAD],
            Request::PinsSave(blob) => {
                let mut v = alloc::vec![OP_PINS_SAVE];
                v.extend_from_slice(blob);
                v
            }
        }
    }

    /// Decode; total.
    pub fn decode(b: &[u8]) -> Result<Request, KeyError> {
        match b {
            [OP_PUBLIC] => Ok(Request::Public),
            [OP_DH, rest @ ..] => rest
                .try_into()
                .map(Request::Dh)
                .map_err(|_| KeyError::Malformed),
            [OP_PINS_LOAD] => Ok(Request::PinsLoad),
            [OP_PINS_SAVE, rest @ ..] if rest.len() <= MAX_PINS_BLOB => {
                Ok(Request::PinsSave(rest.to_vec()))
            }
            _ => Err(KeyError::Malformed),
        }
    }
}

/// Encode an answer.
pub fn encode_answer(r: &Result<Vec<u8>, KeyError>) -> Vec<u8> {
    match r {
        Ok(payload) => {
            let mut v = alloc::vec![0];
            v.extend_from_slice(payload);
            v
        }
        Err(KeyError::Refused) => alloc::vec![1],
        Err(_) => alloc::vec![2],
    }
}

/// Decode an answer; total.
pub fn decode_answer(b: &[u8]) -> Result<Vec<u8>, KeyError> {
    match b {
        [0, rest @ ..] if rest.len() <= MAX_PINS_BLOB => Ok(rest.to_vec()),
        [1] => Err(KeyError::Refused),
        _ => Err(KeyError::Malformed),
    }
}

fn key_of(payload: Vec<u8>) -> Result<[u8; KEY_LEN], KeyError> {
    payload.try_into().map_err(|_| KeyError::Malformed)
}

/// dsoftbusd's side: asks keystored, one call at a time. As a
/// [`StaticDh`] it blocks the (single-threaded) process for the duration of
/// one call, which is what snow's synchronous DH interface needs.
#[derive(Debug)]
pub struct KeyClient {
    chan: Channel,
}

impl KeyClient {
    /// Wrap the channel granted as `keys`.
    pub fn new(chan: Channel) -> Self {
        KeyClient { chan }
    }

    /// One request, its answer.
    pub async fn call(&self, req: &Request) -> Result<Vec<u8>, KeyError> {
        self.chan
            .send(&req.encode())
            .await
            .map_err(|_| KeyError::Gone)?;
        let answer = self.chan.recv().await.map_err(|_| KeyError::Gone)?;
        decode_answer(&answer)
    }

    /// The device's public key.
    pub async fn public_key(&self) -> Result<PublicKey, KeyError> {
        let k = key_of(self.call(&Request::Public).await?)?;
        Ok(PublicKey::from_bytes(k))
    }

    /// The stored pins blob, blocking (startup).
    pub fn load_pins(&self) -> Result<Vec<u8>, KeyError> {
        nexus_abi::rt::block_on(self.call(&Request::PinsLoad))
    }

    /// Store the pins blob, blocking (a new pin is rare and must be durable
    /// before the session is reported).
    pub fn save_pins(&self, blob: Vec<u8>) -> Result<(), KeyError> {
        if blob.len() > MAX_PINS_BLOB {
            return Err(KeyError::Malformed);
        }
        nexus_abi::rt::block_on(self.call(&Request::PinsSave(blob))).map(|_| ())
    }
}

impl StaticDh for KeyClient {
    fn dh(&self, peer: &[u8; KEY_LEN]) -> Result<[u8; KEY_LEN], KeyServiceError> {
        nexus_abi::rt::block_on(self.call(&Request::Dh(*peer)))
            .and_then(key_of)
            .map_err(|_| KeyServiceError)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        for r in [
            Request::Public,
            Request::Dh([7; KEY_LEN]),
            Request::PinsLoad,
            Request::PinsSave(alloc::vec![1, 2, 3]),
        ] {
            assert_eq!(Request::decode(&r.encode()), Ok(r));
        }
        for a in [
            Ok(alloc::vec![9; KEY_LEN]),
            Ok(alloc::vec![]),
            Err(KeyError::Refused),
            Err(KeyError::Malformed),
        ] {
            assert_eq!(decode_answer(&encode_answer(&a)), a);
        }
        assert_eq!(Request::decode(&[2; 32]), Err(KeyError::Malformed));
        assert_eq!(key_of(alloc::vec![0; 31]), Err(KeyError::Malformed));
        let big = Request::PinsSave(alloc::vec![0; MAX_PINS_BLOB + 1]).encode();
        assert_eq!(Request::decode(&big), Err(KeyError::Malformed));
    }

    proptest::proptest! {
        #[test]
        fn decode_is_total(b in proptest::collection::vec(proptest::num::u8::ANY, 0..80)) {
            let _ = Request::decode(&b);
            let _ = decode_answer(&b);
        }
    }
}
