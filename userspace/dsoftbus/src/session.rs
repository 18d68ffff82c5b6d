//! Transport messages after the handshake.
//!
//! Every frame is one Noise transport message whose plaintext starts with a
//! type byte: `1` ping (8-byte nonce), `2` pong (the same nonce), `3` data,
//! `4` close (`docs/protocol/wire.md` §6 "Transport messages"). A
//! [`Session`] exists only after a handshake that
//! passed identity binding (see [`handshake`](crate::handshake)).
//!
//! Any failure to open a frame — bad tag, unknown type, wrong length — is
//! fatal: the session refuses all further traffic, because after a decrypt
//! failure the two sides' nonces can no longer be trusted to agree.

use alloc::vec::Vec;
use core::fmt;

use crate::aead::CipherState;

use crate::announce::DeviceId;
use crate::frame::{self, MAX_FRAME_LEN};
use crate::keys::PublicKey;

/// ChaCha20-Poly1305 tag length.
pub const TAG_LEN: usize = 16;
/// Largest plaintext one frame carries (65535 - tag).
pub const MAX_PLAINTEXT: usize = MAX_FRAME_LEN - TAG_LEN;
/// Largest data payload in one message (minus the type byte).
pub const MAX_DATA_LEN: usize = MAX_PLAINTEXT - 1;

pub(crate) const T_PING: u8 = 1;
pub(crate) const T_PONG: u8 = 2;
pub(crate) const T_DATA: u8 = 3;
pub(crate) const T_CLOSE: u8 = 4;

/// A transport message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    /// Liveness probe carrying a nonce the peer echoes.
    Ping(u64),
    /// Answer to a ping, same nonce.
    Pong(u64),
    /// Application bytes (at most [`MAX_DATA_LEN`]).
    Data(Vec<u8>),
    /// Orderly shutdown; nothing follows.
    Close,
}

/// A transport message borrowing its data from the decrypted frame
/// ([`Session::open_in_place`]): no copy of the payload.
#[derive(Debug, PartialEq, Eq)]
pub enum MessageRef<'a> {
    /// Liveness probe carrying a nonce the peer echoes.
    Ping(u64),
    /// Answer to a ping, same nonce.
    Pong(u64),
    /// Application bytes, inside the caller's frame buffer.
    Data(&'a [u8]),
    /// Orderly shutdown; nothing follows.
    Close,
}

impl MessageRef<'_> {
    /// The owned message (copies the data).
    pub fn to_owned(&self) -> Message {
        match *self {
            MessageRef::Ping(n) => Message::Ping(n),
            MessageRef::Pong(n) => Message::Pong(n),
            MessageRef::Data(d) => Message::Data(d.to_vec()),
            MessageRef::Close => Message::Close,
        }
    }
}

/// Session failures. All are fatal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SessionError {
    /// Authentication tag did not verify (tampering, wrong key, reordering).
    Decrypt,
    /// Decrypted, but the message is malformed (bad length, empty).
    Malformed,
    /// Decrypted, but the type byte is not 1..=4.
    UnknownType(u8),
    /// Data larger than [`MAX_DATA_LEN`].
    TooLarge,
    /// The session was closed (by either side) or failed earlier.
    Closed,
    /// Local encryption failure.
    Internal,
}

impl fmt::Display for SessionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SessionError::Decrypt => f.write_str("decrypt failed"),
            SessionError::Malformed => f.write_str("malformed message"),
            SessionError::UnknownType(t) => write!(f, "unknown message type {t}"),
            SessionError::TooLarge => f.write_str("message too large"),
            SessionError::Closed => f.write_str("session closed"),
            SessionError::Internal => f.write_str("local crypto failure"),
        }
    }
}

/// An authenticated, identity-bound session.
pub struct Session {
    /// Our sending and receiving Noise cipher states (see `aead`).
    tx: CipherState,
    rx: CipherState,
    peer_id: DeviceId,
    peer_key: PublicKey,
    initiator: bool,
    done: bool,
}

impl fmt::Debug for Session {
    /// Never prints key material: only who the peer is and our role.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("peer_id", &self.peer_id)
            .field("peer_key", &self.peer_key)
            .field("initiator", &self.initiator)
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

impl Session {
    pub(crate) fn new(
        tx: CipherState,
        rx: CipherState,
        peer_id: DeviceId,
        peer_key: PublicKey,
        initiator: bool,
    ) -> Self {
        Session {
            tx,
            rx,
            peer_id,
            peer_key,
            initiator,
            done: false,
        }
    }

    /// The peer's device id, as bound to its authenticated key.
    pub fn peer_id(&self) -> &DeviceId {
        &self.peer_id
    }

    /// The peer's authenticated static key.
    pub fn peer_key(&self) -> &PublicKey {
        &self.peer_key
    }

    /// True if we dialled.
    pub fn is_initiator(&self) -> bool {
        self.initiator
    }

    /// True once a close was sent or received, or a frame failed to open.
    pub fn is_closed(&self) -> bool {
        self.done
    }

    /// Encrypts `msg` into one frame body. Sending [`Message::Close`] closes
    /// the session for further sends and receives.
    pub fn seal(&mut self, msg: &Message) -> Result<Vec<u8>, SessionError> {
        let mut out = Vec::new();
        self.seal_into(msg_type(msg), &msg_body(msg), &mut out)?;
        Ok(out)
    }

    /// [`seal`](Self::seal) and append the framed result to `out`.
    pub fn seal_framed(&mut self, msg: &Message, out: &mut Vec<u8>) -> Result<(), SessionError> {
        let body = msg_body(msg);
        let n = framed_len(body.len())?;
        let start = out.len();
        out.resize(start + n, 0);
        let r = self.seal_frame_into(msg_type(msg), &body, &mut out[start..]);
        if r.is_err() {
            out.truncate(start);
        }
        r
    }

    /// Seals `[ty] ‖ body` as one frame (header, ciphertext, tag) into
    /// `out`, which must be exactly [`framed_len`]`(body.len())` bytes: the
    /// plaintext is encrypted on its way in (no intermediate copy where the
    /// backend can write elsewhere than it reads).
    pub(crate) fn seal_frame_into(
        &mut self,
        ty: u8,
        body: &[u8],
        out: &mut [u8],
    ) -> Result<(), SessionError> {
        if self.done {
            return Err(SessionError::Closed);
        }
        let n = framed_len(body.len())?;
        if out.len() != n {
            return Err(SessionError::Internal);
        }
        let (hdr, rest) = out.split_at_mut(frame::HEADER_LEN);
        let (ct, tag) = rest.split_at_mut(1 + body.len());
        hdr.copy_from_slice(&((1 + body.len() + TAG_LEN) as u16).to_be_bytes());
        let t = self
            .tx
            .seal_to(ty, body, ct)
            .map_err(|_| SessionError::Internal)?;
        tag.copy_from_slice(&t);
        if ty == T_CLOSE {
            self.done = true;
        }
        Ok(())
    }

    /// Encrypts `[ty] ‖ body` into one frame body appended to `out`.
    fn seal_into(&mut self, ty: u8, body: &[u8], out: &mut Vec<u8>) -> Result<(), SessionError> {
        let n = framed_len(body.len())?;
        let mut framed = alloc::vec![0u8; n];
        self.seal_frame_into(ty, body, &mut framed)?;
        out.extend_from_slice(&framed[frame::HEADER_LEN..]);
        Ok(())
    }

    /// Decrypts and parses one frame body. Total: arbitrary input yields an
    /// error, never a panic; any error closes the session.
    /// Copies `frame` once; [`open_in_place`](Self::open_in_place) does not.
    pub fn open(&mut self, frame: &[u8]) -> Result<Message, SessionError> {
        let mut buf = frame.to_vec();
        self.open_in_place(&mut buf).map(|m| m.to_owned())
    }

    /// [`open`](Self::open) decrypting inside `frame` (which is
    /// overwritten), without copying: data borrows from `frame`. Used by the
    /// connection on its receive buffer.
    pub fn open_in_place<'a>(
        &mut self,
        frame: &'a mut [u8],
    ) -> Result<MessageRef<'a>, SessionError> {
        if self.done {
            return Err(SessionError::Closed);
        }
        let r = self.open_inner(frame);
        if matches!(r, Err(_) | Ok(MessageRef::Close)) {
            self.done = true;
        }
        r
    }

    fn open_inner<'a>(&mut self, frame: &'a mut [u8]) -> Result<MessageRef<'a>, SessionError> {
        if frame.len() < TAG_LEN || frame.len() > MAX_FRAME_LEN {
            return Err(SessionError::Decrypt);
        }
        let plain = self
            .rx
            .open_in_place(frame)
            .map_err(|_| SessionError::Decrypt)?;
        let (ty, body) = plain.split_first().ok_or(SessionError::Malformed)?;
        let nonce = |b: &[u8]| -> Result<u64, SessionError> {
            <[u8; 8]>::try_from(b)
                .map(u64::from_be_bytes)
                .map_err(|_| SessionError::Malformed)
        };
        match *ty {
            T_PING => Ok(MessageRef::Ping(nonce(body)?)),
            T_PONG => Ok(MessageRef::Pong(nonce(body)?)),
            T_DATA => Ok(MessageRef::Data(body)),
            T_CLOSE if body.is_empty() => Ok(MessageRef::Close),
            T_CLOSE => Err(SessionError::Malformed),
            t => Err(SessionError::UnknownType(t)),
        }
    }
}

/// Bytes one frame carrying `body_len` bytes of message body takes on the
/// wire: header, type byte, body, tag. `TooLarge` past [`MAX_DATA_LEN`].
pub(crate) fn framed_len(body_len: usize) -> Result<usize, SessionError> {
    if body_len > MAX_DATA_LEN {
        return Err(SessionError::TooLarge);
    }
    Ok(frame::HEADER_LEN + 1 + body_len + TAG_LEN)
}

fn msg_type(msg: &Message) -> u8 {
    match msg {
        Message::Ping(_) => T_PING,
        Message::Pong(_) => T_PONG,
        Message::Data(_) => T_DATA,
        Message::Close => T_CLOSE,
    }
}

/// The bytes after the type byte; nonces travel big-endian.
fn msg_body(msg: &Message) -> MsgBody<'_> {
    match msg {
        Message::Ping(n) | Message::Pong(n) => MsgBody::Nonce(n.to_be_bytes()),
        Message::Data(d) => MsgBody::Slice(d),
        Message::Close => MsgBody::Slice(&[]),
    }
}

enum MsgBody<'a> {
    Nonce([u8; 8]),
    Slice(&'a [u8]),
}

impl core::ops::Deref for MsgBody<'_> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            MsgBody::Nonce(n) => n,
            MsgBody::Slice(s) => s,
        }
    }
}
