//! The session handshake: `Noise_XK_25519_ChaChaPoly_BLAKE2s` plus mac1, hello
//! payloads and identity binding (`docs/protocol/wire.md` §4 "Handshake" and
//! §5 "Identity binding"), at frame granularity.
//!
//! ```text
//! initiator (connecting side)                     responder
//! frame 1: Noise msg 1 (e, es) ‖ mac1   ───────▶  check mac1 (a hash) before any DH
//! frame 2: ◀─────── Noise msg 2 (e, ee), payload = responder hello
//!          check hello id == the peer entry's id
//! frame 3: Noise msg 3 (s, se), payload = initiator hello ─▶
//!                                                 check the claimed id is bound to
//!                                                 exactly the authenticated static key
//! ```
//!
//! The API is typestate: [`Initiator::start`] → [`Initiator::read_frame2`] →
//! [`Session`], and [`Responder::accept`] → [`Responder::read_frame3`] →
//! [`Session`]. Each step consumes the previous state, so a failed handshake
//! leaves nothing behind, and the only way to obtain a `Session` is through a
//! step that has already checked identity binding: a mismatch is
//! [`AuthError::Identity`] and no `Session` value exists for it.
//!
//! For driving a handshake over a raw byte stream see
//! [`Connection`](crate::connection::Connection).

use alloc::boxed::Box;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::fmt;
use core::time::Duration;

use rand_core::{CryptoRng, RngCore};
use snow::HandshakeState;

use zeroize::Zeroize;

use crate::aead::CipherState;
use crate::announce::{DeviceId, MAX_ID_LEN};
use crate::crypto::{self, EntropyPool, EntropyResolver, MAC1_LEN};
use crate::keys::{PublicKey, StaticDh, StaticKeypair, KEY_LEN};
use crate::peer_table::PeerEntry;
use crate::session::Session;
use crate::time::Instant;

/// Hello payload version.
pub const HELLO_VERSION: u8 = 1;
/// Longest hello: version, length, 64-byte id.
pub const MAX_HELLO_LEN: usize = 2 + MAX_ID_LEN;
/// Noise message 1 of XK: ephemeral key + tag of the empty payload.
pub const MSG1_LEN: usize = KEY_LEN + 16;
/// Frame 1 is always exactly this long (message 1 + mac1).
pub const FRAME1_LEN: usize = MSG1_LEN + MAC1_LEN;
/// Bound on any handshake frame. The largest legitimate one (frame 3 with a
/// 64-byte id) is 130 bytes; anything above this bound is refused at the
/// framing layer before it is buffered.
pub const MAX_HANDSHAKE_FRAME: usize = 256;
/// Default handshake deadline, measured on the caller's clock.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a handshake did not produce a session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthError {
    /// Frame 1 carried a wrong mac1 (or had the wrong size). The responder
    /// drops such connections silently; no DH was computed.
    Mac1,
    /// The Noise handshake failed: the peer does not hold the key we expected
    /// (e.g. wrong responder key) or a message was tampered with.
    Handshake,
    /// Identity binding failed: the responder's hello named another device
    /// than the one we dialled, or the initiator's claimed id is unknown or
    /// bound to a different key than the one the handshake authenticated.
    Identity,
    /// An authenticated peer sent a malformed hello.
    Protocol,
    /// A handshake frame was out of bounds or the stream broke framing.
    Frame,
    /// The caller's clock passed the handshake deadline.
    Timeout,
    /// The stream closed before the handshake completed.
    Closed,
    /// Local failure: Noise engine could not be built or entropy ran out.
    Internal,
}

impl fmt::Display for AuthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AuthError::Mac1 => "mac1 check failed",
            AuthError::Handshake => "noise handshake failed",
            AuthError::Identity => "identity binding mismatch",
            AuthError::Protocol => "malformed hello",
            AuthError::Frame => "bad handshake frame",
            AuthError::Timeout => "handshake timed out",
            AuthError::Closed => "stream closed during handshake",
            AuthError::Internal => "local crypto failure",
        })
    }
}

/// Handshake tunables.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HandshakeConfig {
    /// Time from start (initiator) or accept (responder) to completion.
    pub timeout: Duration,
}

impl Default for HandshakeConfig {
    fn default() -> Self {
        HandshakeConfig {
            timeout: DEFAULT_HANDSHAKE_TIMEOUT,
        }
    }
}

/// Where the local static secret lives.
#[derive(Clone)]
pub(crate) enum LocalKey {
    /// In this process.
    Pair(StaticKeypair),
    /// In a key service: only the public half is here.
    Held {
        public: PublicKey,
        dh: Arc<dyn StaticDh>,
    },
}

impl LocalKey {
    pub(crate) fn public(&self) -> &PublicKey {
        match self {
            LocalKey::Pair(k) => k.public(),
            LocalKey::Held { public, .. } => public,
        }
    }
}

/// Who a node is: its device id and static key (a pair in this process, or
/// a public key whose secret a key service holds), plus the mac1 key
/// derived from its public key (precomputed so checking frame 1 costs one
/// keyed hash).
#[derive(Clone)]
pub struct LocalIdentity {
    id: DeviceId,
    key: LocalKey,
    mac1_key: [u8; 32],
}

impl LocalIdentity {
    /// Binds `id` to `keys` for this node.
    pub fn new(id: DeviceId, keys: StaticKeypair) -> Self {
        let mac1_key = crypto::mac1_key(keys.public());
        LocalIdentity {
            id,
            key: LocalKey::Pair(keys),
            mac1_key,
        }
    }
    /// Binds `id` to `public`, whose secret stays with a key service: every
    /// static-key Diffie-Hellman is delegated to `dh`.
    pub fn with_key_service(id: DeviceId, public: PublicKey, dh: Arc<dyn StaticDh>) -> Self {
        let mac1_key = crypto::mac1_key(&public);
        LocalIdentity {
            id,
            key: LocalKey::Held { public, dh },
            mac1_key,
        }
    }
    /// Our device id.
    pub fn id(&self) -> &DeviceId {
        &self.id
    }
    /// Our static public key.
    pub fn public_key(&self) -> &PublicKey {
        self.key.public()
    }
    /// Our key pair, if the secret is in this process (`None` when a key
    /// service holds it).
    pub fn keys(&self) -> Option<&StaticKeypair> {
        match &self.key {
            LocalKey::Pair(k) => Some(k),
            LocalKey::Held { .. } => None,
        }
    }
}

impl fmt::Debug for LocalIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalIdentity")
            .field("id", &self.id)
            .field("public", self.key.public())
            .field("held_by_key_service", &self.keys().is_none())
            .finish_non_exhaustive()
    }
}

/// The peer an initiator dials: a device id and the key discovery bound to it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerTarget {
    /// The device id the responder's hello must name.
    pub id: DeviceId,
    /// The responder's static key (Noise `rs`).
    pub key: PublicKey,
}

impl From<&PeerEntry> for PeerTarget {
    fn from(e: &PeerEntry) -> Self {
        PeerTarget {
            id: e.device_id().clone(),
            key: *e.static_key(),
        }
    }
}

/// Where the responder looks up which key a claimed device id is bound to.
/// [`PeerTable`](crate::peer_table::PeerTable) implements it; a daemon with a
/// key store can implement it too.
pub trait IdentityBindings {
    /// The key bound to `id`, if any.
    fn bound_key(&self, id: &DeviceId) -> Option<PublicKey>;
}

/// Deterministic tie-break for simultaneous discovery: the node with the
/// lexicographically smaller device id (byte order) dials, the other waits.
/// Both sides compute the same answer, so exactly one connection is made.
/// Returns false for equal ids (a node never dials itself).
pub fn should_initiate(local: &DeviceId, remote: &DeviceId) -> bool {
    local.as_bytes() < remote.as_bytes()
}

fn encode_hello(id: &DeviceId) -> Vec<u8> {
    let mut v = Vec::with_capacity(2 + id.as_bytes().len());
    v.push(HELLO_VERSION);
    // DeviceId is at most 64 bytes.
    v.push(id.as_bytes().len() as u8);
    v.extend_from_slice(id.as_bytes());
    v
}

fn decode_hello(b: &[u8]) -> Result<DeviceId, AuthError> {
    match b {
        [HELLO_VERSION, len, rest @ ..] if usize::from(*len) == rest.len() => {
            DeviceId::from_bytes(rest).map_err(|_| AuthError::Protocol)
        }
        _ => Err(AuthError::Protocol),
    }
}

fn build(
    local: &LocalIdentity,
    remote: Option<&PublicKey>,
    pool: EntropyPool,
    initiator: bool,
) -> Result<Box<HandshakeState>, AuthError> {
    let params = crypto::noise_params().ok_or(AuthError::Internal)?;
    let resolver = Box::new(EntropyResolver::new(pool, Some(&local.key)));
    // With a key service, snow still wants "a private key" for the static
    // slot: it gets zeros, which our `X25519` recognises as the held key and
    // never uses as a scalar (every DH goes to the service).
    let held = [0u8; crate::keys::KEY_LEN];
    let secret = match &local.key {
        LocalKey::Pair(k) => k.secret().expose(),
        LocalKey::Held { .. } => &held,
    };
    let b = snow::Builder::with_resolver(params, resolver)
        .local_private_key(secret)
        .map_err(|_| AuthError::Internal)?;
    let b = match remote {
        Some(k) => b
            .remote_public_key(k.as_bytes())
            .map_err(|_| AuthError::Internal)?,
        None => b,
    };
    let hs = if initiator {
        b.build_initiator()
    } else {
        b.build_responder()
    };
    hs.map(Box::new).map_err(|_| AuthError::Internal)
}

/// The two transport cipher states from Noise `Split()`: the first key
/// protects initiator → responder, the second the reverse. Only valid once
/// the last handshake message was written or read.
fn transport_keys(
    hs: &mut HandshakeState,
    initiator: bool,
) -> Result<(CipherState, CipherState), AuthError> {
    if !hs.is_handshake_finished() {
        return Err(AuthError::Internal);
    }
    let (mut k1, mut k2) = hs.dangerously_get_raw_split();
    let c1 = CipherState::new(&k1);
    let c2 = CipherState::new(&k2);
    k1.zeroize();
    k2.zeroize();
    let (c1, c2) = (
        c1.map_err(|_| AuthError::Internal)?,
        c2.map_err(|_| AuthError::Internal)?,
    );
    Ok(if initiator { (c1, c2) } else { (c2, c1) })
}

fn check_deadline(now: Instant, deadline: Instant) -> Result<(), AuthError> {
    if now >= deadline {
        Err(AuthError::Timeout)
    } else {
        Ok(())
    }
}

/// The connecting side, waiting for frame 2.
pub struct Initiator {
    hs: Box<HandshakeState>,
    local_hello: Vec<u8>,
    target: PeerTarget,
    deadline: Instant,
}

impl fmt::Debug for Initiator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Initiator")
            .field("target", &self.target)
            .field("deadline", &self.deadline)
            .finish_non_exhaustive()
    }
}

impl Initiator {
    /// Starts a handshake towards `target` (normally built from a peer-table
    /// entry: its key becomes the Noise remote static, its id is what the
    /// responder's hello must say). Returns the state and the body of frame 1.
    pub fn start<R: RngCore + CryptoRng + ?Sized>(
        local: &LocalIdentity,
        target: PeerTarget,
        rng: &mut R,
        now: Instant,
        cfg: &HandshakeConfig,
    ) -> Result<(Self, Vec<u8>), AuthError> {
        // Never dial ourselves, never dial a key nobody can hold.
        if &target.id == local.id() || &target.key == local.public_key() {
            return Err(AuthError::Identity);
        }
        if target.key.is_weak() {
            return Err(AuthError::Handshake);
        }
        let mut hs = build(local, Some(&target.key), EntropyPool::draw(rng), true)?;
        let mut frame = alloc::vec![0u8; MAX_HANDSHAKE_FRAME];
        let n = hs
            .write_message(&[], &mut frame)
            .map_err(|_| AuthError::Internal)?;
        frame.truncate(n);
        let mac =
            crypto::mac1(&crypto::mac1_key(&target.key), &frame).ok_or(AuthError::Internal)?;
        frame.extend_from_slice(&mac);
        Ok((
            Initiator {
                hs,
                local_hello: encode_hello(local.id()),
                target,
                deadline: now.saturating_add(cfg.timeout),
            },
            frame,
        ))
    }

    /// When this handshake gives up.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// The peer being dialled.
    pub fn target(&self) -> &PeerTarget {
        &self.target
    }

    /// Processes frame 2 (the responder's message and hello). On success the
    /// handshake is complete on our side: returns the session and the body of
    /// frame 3, which must be sent before any transport frame.
    pub fn read_frame2(
        mut self,
        frame: &[u8],
        now: Instant,
    ) -> Result<(Session, Vec<u8>), AuthError> {
        check_deadline(now, self.deadline)?;
        if frame.len() > MAX_HANDSHAKE_FRAME {
            return Err(AuthError::Frame);
        }
        let mut payload = [0u8; MAX_HANDSHAKE_FRAME];
        let n = self
            .hs
            .read_message(frame, &mut payload)
            .map_err(|_| AuthError::Handshake)?;
        let claimed = decode_hello(payload.get(..n).ok_or(AuthError::Protocol)?)?;
        // Binding, initiator direction: the authenticated responder must be
        // the device we dialled. (In XK `rs` is fixed up front, so the key half
        // holds by construction; we check it anyway.)
        let rs_ok = self.hs.get_remote_static() == Some(self.target.key.as_bytes().as_slice());
        if claimed != self.target.id || !rs_ok {
            return Err(AuthError::Identity);
        }
        let mut out = alloc::vec![0u8; MAX_HANDSHAKE_FRAME];
        let n = self
            .hs
            .write_message(&self.local_hello, &mut out)
            .map_err(|_| AuthError::Internal)?;
        out.truncate(n);
        let (tx, rx) = transport_keys(&mut self.hs, true)?;
        Ok((
            Session::new(tx, rx, self.target.id, self.target.key, true),
            out,
        ))
    }
}

/// The accepting side, having answered frame 1 and waiting for frame 3.
pub struct Responder {
    hs: Box<HandshakeState>,
    deadline: Instant,
}

impl fmt::Debug for Responder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Responder")
            .field("deadline", &self.deadline)
            .finish_non_exhaustive()
    }
}

impl Responder {
    /// Processes frame 1. mac1 is verified first — a keyed hash — and only a
    /// frame that passes it costs a DH or any entropy. Returns the state and
    /// the body of frame 2 (which carries our hello). On
    /// [`AuthError::Mac1`] the caller should close the stream silently.
    pub fn accept<R: RngCore + CryptoRng + ?Sized>(
        local: &LocalIdentity,
        frame1: &[u8],
        rng: &mut R,
        now: Instant,
        cfg: &HandshakeConfig,
    ) -> Result<(Self, Vec<u8>), AuthError> {
        Self::precheck(local, frame1)?;
        Self::accept_checked(local, frame1, EntropyPool::draw(rng), now, cfg)
    }

    /// The DH-free part of [`accept`](Self::accept): size and mac1.
    pub(crate) fn precheck(local: &LocalIdentity, frame1: &[u8]) -> Result<(), AuthError> {
        if frame1.len() != FRAME1_LEN {
            return Err(AuthError::Mac1);
        }
        let (msg1, tag) = frame1.split_at(MSG1_LEN);
        if !crypto::verify_mac1(&local.mac1_key, msg1, tag) {
            return Err(AuthError::Mac1);
        }
        Ok(())
    }

    pub(crate) fn accept_checked(
        local: &LocalIdentity,
        frame1: &[u8],
        pool: EntropyPool,
        now: Instant,
        cfg: &HandshakeConfig,
    ) -> Result<(Self, Vec<u8>), AuthError> {
        Self::precheck(local, frame1)?;
        let msg1 = frame1.get(..MSG1_LEN).ok_or(AuthError::Mac1)?;
        let mut hs = build(local, None, pool, false)?;
        let mut scratch = [0u8; MAX_HANDSHAKE_FRAME];
        let n = hs
            .read_message(msg1, &mut scratch)
            .map_err(|_| AuthError::Handshake)?;
        if n != 0 {
            return Err(AuthError::Protocol);
        }
        let mut out = alloc::vec![0u8; MAX_HANDSHAKE_FRAME];
        let n = hs
            .write_message(&encode_hello(local.id()), &mut out)
            .map_err(|_| AuthError::Internal)?;
        out.truncate(n);
        Ok((
            Responder {
                hs,
                deadline: now.saturating_add(cfg.timeout),
            },
            out,
        ))
    }

    /// When this handshake gives up.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// Never later than `d`: a connection's deadline runs from accept, not
    /// from frame 1, so a slow frame 1 cannot stretch the handshake.
    pub(crate) fn cap_deadline(mut self, d: Instant) -> Self {
        self.deadline = self.deadline.min(d);
        self
    }

    /// Processes frame 3 and enforces identity binding, responder direction:
    /// the initiator's claimed device id must be bound in `bindings` to
    /// exactly the static key the handshake authenticated. Anything else —
    /// unknown id, different key — is [`AuthError::Identity`] and no session
    /// is created.
    pub fn read_frame3<B: IdentityBindings + ?Sized>(
        self,
        frame: &[u8],
        now: Instant,
        bindings: &B,
    ) -> Result<Session, AuthError> {
        self.read_frame3_detailed(frame, now, bindings)
            .map_err(|r| r.error)
    }

    /// [`read_frame3`](Self::read_frame3), but a failure also reports the
    /// device id the initiator claimed, when its hello was readable — so a
    /// daemon can print `identity mismatch peer=<id>`. That id is the peer's
    /// *claim*, not an authenticated identity (it passed the same character
    /// rules as announces, so it is safe to print).
    pub fn read_frame3_detailed<B: IdentityBindings + ?Sized>(
        mut self,
        frame: &[u8],
        now: Instant,
        bindings: &B,
    ) -> Result<Session, Rejection> {
        check_deadline(now, self.deadline)?;
        if frame.len() > MAX_HANDSHAKE_FRAME {
            return Err(AuthError::Frame.into());
        }
        let mut payload = [0u8; MAX_HANDSHAKE_FRAME];
        let n = self
            .hs
            .read_message(frame, &mut payload)
            .map_err(|_| AuthError::Handshake)?;
        let rs = self
            .hs
            .get_remote_static()
            .and_then(|k| <[u8; KEY_LEN]>::try_from(k).ok())
            .map(PublicKey::from_bytes)
            .ok_or(AuthError::Handshake)?;
        if rs.is_weak() {
            return Err(AuthError::Handshake.into());
        }
        let claimed = decode_hello(payload.get(..n).ok_or(AuthError::Protocol)?)?;
        match bindings.bound_key(&claimed) {
            Some(bound) if bound == rs => {}
            _ => {
                return Err(Rejection {
                    error: AuthError::Identity,
                    claimed: Some(claimed),
                })
            }
        }
        let (tx, rx) = transport_keys(&mut self.hs, false)?;
        Ok(Session::new(tx, rx, claimed, rs, false))
    }
}

/// A failed responder handshake, with the id the initiator claimed if its
/// hello could be read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejection {
    /// Why no session was created.
    pub error: AuthError,
    /// The claimed (unauthenticated) device id, if known.
    pub claimed: Option<DeviceId>,
}

impl From<AuthError> for Rejection {
    fn from(error: AuthError) -> Self {
        Rejection {
            error,
            claimed: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hello_codec() {
        let id = DeviceId::new("node-a").unwrap();
        let h = encode_hello(&id);
        assert_eq!(h, [1, 6, b'n', b'o', b'd', b'e', b'-', b'a']);
        assert_eq!(decode_hello(&h), Ok(id));
        assert_eq!(decode_hello(&[]), Err(AuthError::Protocol));
        assert_eq!(decode_hello(&[2, 1, b'a']), Err(AuthError::Protocol));
        assert_eq!(decode_hello(&[1, 2, b'a']), Err(AuthError::Protocol));
        assert_eq!(decode_hello(&[1, 0]), Err(AuthError::Protocol));
        assert_eq!(decode_hello(&[1, 1, 0xff]), Err(AuthError::Protocol));
    }

    #[test]
    fn tie_break_is_antisymmetric() {
        let a = DeviceId::new("node-a").unwrap();
        let b = DeviceId::new("node-b").unwrap();
        assert!(should_initiate(&a, &b));
        assert!(!should_initiate(&b, &a));
        assert!(!should_initiate(&a, &a));
    }
}
