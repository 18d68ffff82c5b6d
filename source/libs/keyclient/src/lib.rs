//! The key-service protocol: `keystored` holds the device's static X25519
//! secret and answers two questions for `dsoftbusd` — "what is the public
//! key" and "X25519(secret, this peer key)" — so the secret never leaves
//! keystored's address space. Only dsoftbusd has a channel to keystored
//! (init links nobody else), so the grant is the access check.
//!
//! One request per message, one answer per request, in order. Request:
//! `op u8` (1 public key, 2 DH) then, for DH, the peer's 32-byte public key.
//! Answer: `status u8` (0 ok, 1 refused: no usable identity, 2 malformed)
//! then, when ok, 32 bytes. Decoding is total.

#![no_std]

extern crate alloc;

use alloc::vec::Vec;

use dsoftbus::{KeyServiceError, PublicKey, StaticDh};
use nexus_abi::Channel;

/// Key length (X25519).
pub const KEY_LEN: usize = 32;
const OP_PUBLIC: u8 = 1;
const OP_DH: u8 = 2;

/// A request to keystored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    /// The device's static public key.
    Public,
    /// `X25519(device secret, peer)`.
    Dh([u8; KEY_LEN]),
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
            _ => Err(KeyError::Malformed),
        }
    }
}

/// Encode an answer.
pub fn encode_answer(r: &Result<[u8; KEY_LEN], KeyError>) -> Vec<u8> {
    match r {
        Ok(k) => {
            let mut v = alloc::vec![0];
            v.extend_from_slice(k);
            v
        }
        Err(KeyError::Refused) => alloc::vec![1],
        Err(_) => alloc::vec![2],
    }
}

/// Decode an answer; total.
pub fn decode_answer(b: &[u8]) -> Result<[u8; KEY_LEN], KeyError> {
    match b {
        [0, rest @ ..] => rest.try_into().map_err(|_| KeyError::Malformed),
        [1] => Err(KeyError::Refused),
        _ => Err(KeyError::Malformed),
    }
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
    pub async fn call(&self, req: &Request) -> Result<[u8; KEY_LEN], KeyError> {
        self.chan
            .send(&req.encode())
            .await
            .map_err(|_| KeyError::Gone)?;
        let answer = self.chan.recv().await.map_err(|_| KeyError::Gone)?;
        decode_answer(&answer)
    }

    /// The device's public key.
    pub async fn public_key(&self) -> Result<PublicKey, KeyError> {
        self.call(&Request::Public).await.map(PublicKey::from_bytes)
    }
}

impl StaticDh for KeyClient {
    fn dh(&self, peer: &[u8; KEY_LEN]) -> Result<[u8; KEY_LEN], KeyServiceError> {
        nexus_abi::rt::block_on(self.call(&Request::Dh(*peer))).map_err(|_| KeyServiceError)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        for r in [Request::Public, Request::Dh([7; KEY_LEN])] {
            assert_eq!(Request::decode(&r.encode()), Ok(r));
        }
        for a in [
            Ok([9; KEY_LEN]),
            Err(KeyError::Refused),
            Err(KeyError::Malformed),
        ] {
            assert_eq!(decode_answer(&encode_answer(&a)), a);
        }
        assert_eq!(Request::decode(&[2; 32]), Err(KeyError::Malformed));
        assert_eq!(decode_answer(&[0; 32]), Err(KeyError::Malformed));
    }

    proptest::proptest! {
        #[test]
        fn decode_is_total(b in proptest::collection::vec(proptest::num::u8::ANY, 0..80)) {
            let _ = Request::decode(&b);
            let _ = decode_answer(&b);
        }
    }
}
