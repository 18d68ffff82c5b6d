//! A byte-stream driver: framing + handshake + session in one sans-IO object.
//!
//! [`Connection`] is what a daemon holds per TCP stream. It never touches a
//! socket: the caller feeds it bytes it read ([`Connection::handle_input`]),
//! writes out the bytes it produces ([`Connection::transmit_buf`] /
//! [`Connection::consume_transmit`]), reports EOF and time, and polls
//! [`Event`]s. All it needs is `&mut self`, input bytes and `now`, so it runs
//! the same way under a single-threaded async OS daemon, a blocking host
//! loop, or a deterministic test pipe.
//!
//! Bounds: the inbound frame buffer holds at most one header plus one frame
//! (256 bytes during the handshake, 65 537 after), the outbound buffer at most
//! [`MAX_OUTBOUND`] bytes, and the event queue at most [`MAX_EVENTS`] events.
//! When outbound or events are full the connection stops taking input (it
//! reports zero [`space`](Connection::recv_space)) until the caller drains
//! them — backpressure instead of unbounded growth. Bytes already taken are
//! decoded in full, so either may overshoot its bound by what one frame
//! buffer held (≤ 65 537 bytes of frames: their events, their pongs).
//!
//! Input is decoded in [`handle_input`](Connection::handle_input) (and
//! [`commit_recv`](Connection::commit_recv)) one frame at a time, so no
//! complete frame is ever left waiting behind a full queue: the `poll_*` and
//! `take_*` methods only hand out what is there and decode nothing.
//!
//! Copies on the receive path: [`recv_buf`](Connection::recv_buf) +
//! [`commit_recv`](Connection::commit_recv) let the caller read from the
//! socket straight into the frame buffer (no feed copy), frames are
//! decrypted where they lie, and
//! [`commit_recv_with`](Connection::commit_recv_with) hands data messages to
//! a closure as slices of that buffer instead of copying them into
//! [`Event::Data`]. On the send path data is encrypted in the transmit
//! buffer, and partial writes advance an offset instead of moving the rest.

use alloc::collections::VecDeque;
use alloc::vec::Vec;
use core::fmt;

use rand_core::{CryptoRng, RngCore};

use crate::announce::DeviceId;
use crate::crypto::EntropyPool;
use crate::frame::{self, FrameDecoder, FrameError, MAX_FRAME_LEN};
use crate::handshake::{
    AuthError, HandshakeConfig, IdentityBindings, Initiator, LocalIdentity, PeerTarget, Responder,
    MAX_HANDSHAKE_FRAME,
};
use crate::ratelimit::{HandshakeGate, Limited};
use crate::session::{Message, MessageRef, Session, SessionError, MAX_DATA_LEN};
use crate::time::Instant;

/// Bound on bytes queued for the peer but not yet taken by the caller.
/// Application sends are refused beyond it; input processing stops at it, so
/// automatic pongs can overshoot by at most one 27-byte frame.
pub const MAX_OUTBOUND: usize = 256 * 1024;
/// Bound on undelivered events.
pub const MAX_EVENTS: usize = 64;

/// Something the application should know about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// Handshake and identity binding succeeded with `peer`.
    Established {
        /// The authenticated, bound device id.
        peer: DeviceId,
    },
    /// The peer pinged us; the pong is already queued.
    Ping(u64),
    /// The peer answered one of our pings.
    Pong(u64),
    /// Application data.
    Data(Vec<u8>),
    /// The peer closed the session in order.
    Closed,
}

/// Where [`Connection::commit_recv_with`] hands data messages.
type DataSink<'r, 's> = &'r mut (dyn FnMut(&[u8]) + 's);

/// Why a connection failed. Once failed, every call returns the same error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnError {
    /// The handshake did not authenticate (includes identity mismatch).
    Auth(AuthError),
    /// A transport frame failed to open.
    Session(SessionError),
    /// The byte stream broke framing.
    Frame(FrameError),
    /// Sending would exceed [`MAX_OUTBOUND`]; drain and retry.
    WouldBlock,
    /// Not established yet (sending before the handshake finished).
    NotEstablished,
    /// The session was closed in order.
    Closed,
}

impl From<AuthError> for ConnError {
    fn from(e: AuthError) -> Self {
        ConnError::Auth(e)
    }
}

impl fmt::Display for ConnError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConnError::Auth(e) => write!(f, "auth: {e}"),
            ConnError::Session(e) => write!(f, "session: {e}"),
            ConnError::Frame(e) => write!(f, "framing: {e}"),
            ConnError::WouldBlock => f.write_str("outbound buffer full"),
            ConnError::NotEstablished => f.write_str("not established"),
            ConnError::Closed => f.write_str("closed"),
        }
    }
}

/// What [`Connection::handle_input_gated`] can report: a connection error,
/// or that frame 1 passed mac1 but the gate refused its handshake for now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GatedError {
    /// The connection failed (same as [`Connection::handle_input`]).
    Conn(ConnError),
    /// The handshake was not admitted; no DH was computed and the connection
    /// has not failed. Frame 1 is held: drop the connection (recommended
    /// under load — the initiator retries), or call `handle_input_gated`
    /// again later to retry admission before the handshake deadline.
    Limited(Limited),
}

impl From<ConnError> for GatedError {
    fn from(e: ConnError) -> Self {
        GatedError::Conn(e)
    }
}

impl fmt::Display for GatedError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GatedError::Conn(e) => e.fmt(f),
            GatedError::Limited(l) => l.fmt(f),
        }
    }
}

enum State {
    /// Responder before frame 1; holds what it needs to answer it.
    AwaitFrame1 {
        local: LocalIdentity,
        pool: Option<EntropyPool>,
        deadline: Instant,
    },
    Initiating(Initiator),
    Responding(Responder),
    /// Boxed: the cipher states are large (ring precomputes key schedules).
    Established(alloc::boxed::Box<Session>),
    Closed,
    Failed(ConnError),
    /// Transient while a state is moved out.
    Poisoned,
}

/// The transmit buffer. Bytes `off..end` wait to be written; `..off` were
/// written. The vector's length is the allocated window (zero-filled once,
/// grown only when a frame does not fit), so frames are sealed straight
/// into it without initialising their bytes first; written bytes are
/// dropped by resetting the indices when everything was written, or moved
/// out only when at least as many bytes were written as are left (each
/// byte moves at most once, and usually never).
#[derive(Default)]
struct OutBuf {
    buf: Vec<u8>,
    off: usize,
    end: usize,
}

impl OutBuf {
    fn pending(&self) -> usize {
        self.end - self.off
    }

    fn bytes(&self) -> &[u8] {
        &self.buf[self.off..self.end]
    }

    fn consume(&mut self, n: usize) {
        self.off += n.min(self.pending());
        if self.off == self.end {
            self.off = 0;
            self.end = 0;
        }
    }

    fn take(&mut self) -> Vec<u8> {
        let mut v = core::mem::take(&mut self.buf);
        v.truncate(self.end);
        v.drain(..self.off);
        self.off = 0;
        self.end = 0;
        v
    }

    /// `n` writable bytes at the end (commit what was written).
    fn reserve(&mut self, n: usize) -> &mut [u8] {
        if self.off > 0 && self.off >= self.pending() {
            self.buf.copy_within(self.off..self.end, 0);
            self.end -= self.off;
            self.off = 0;
        }
        if self.end + n > self.buf.len() {
            self.buf.resize(self.end + n, 0);
        }
        &mut self.buf[self.end..self.end + n]
    }

    fn commit(&mut self, n: usize) {
        self.end += n;
    }

    /// Seals `[ty] ‖ body` as one frame at the end.
    fn seal(&mut self, s: &mut Session, ty: u8, body: &[u8]) -> Result<(), SessionError> {
        let n = crate::session::framed_len(body.len())?;
        s.seal_frame_into(ty, body, self.reserve(n))?;
        self.commit(n);
        Ok(())
    }
}

/// One session stream, from first byte to close. See the module docs.
pub struct Connection {
    state: State,
    decoder: FrameDecoder,
    outbound: OutBuf,
    events: VecDeque<Event>,
    cfg: HandshakeConfig,
    initiator: bool,
    /// Who the peer is or claims to be: the dialled id (initiator) or the id
    /// from the initiator's hello (responder). Authenticated only while
    /// established.
    peer_hint: Option<DeviceId>,
    /// Frame 1 that passed mac1 but was refused by a gate (at most 74 bytes).
    held_frame1: Option<Vec<u8>>,
    /// Set by `process` when a gate refused; reported by `handle_input_gated`.
    refused: Option<Limited>,
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::AwaitFrame1 { .. } => "await-frame1",
            State::Initiating(_) => "initiating",
            State::Responding(_) => "responding",
            State::Established(_) => "established",
            State::Closed => "closed",
            State::Failed(_) => "failed",
            State::Poisoned => "poisoned",
        };
        f.debug_struct("Connection")
            .field("state", &state)
            .field("initiator", &self.initiator)
            .field("outbound", &self.outbound.pending())
            .field("events", &self.events.len())
            .finish()
    }
}

impl Connection {
    /// The connecting side: dials `target` (from a peer-table entry). Frame 1
    /// is queued for transmission immediately.
    pub fn connect<R: RngCore + CryptoRng + ?Sized>(
        local: &LocalIdentity,
        target: PeerTarget,
        rng: &mut R,
        now: Instant,
        cfg: HandshakeConfig,
    ) -> Result<Self, ConnError> {
        let hint = target.id.clone();
        let (init, frame1) = Initiator::start(local, target, rng, now, &cfg)?;
        let mut c = Connection::with_state(State::Initiating(init), cfg, true);
        c.peer_hint = Some(hint);
        c.queue_frame(&frame1)?;
        Ok(c)
    }

    /// The accepting side of a freshly accepted stream. Entropy for our
    /// ephemeral key is drawn now (32 bytes), but nothing else happens until
    /// frame 1 arrives and passes its mac1 check.
    pub fn accept<R: RngCore + CryptoRng + ?Sized>(
        local: &LocalIdentity,
        rng: &mut R,
        now: Instant,
        cfg: HandshakeConfig,
    ) -> Self {
        let state = State::AwaitFrame1 {
            local: local.clone(),
            pool: Some(EntropyPool::draw(rng)),
            deadline: now.saturating_add(cfg.timeout),
        };
        Connection::with_state(state, cfg, false)
    }

    fn with_state(state: State, cfg: HandshakeConfig, initiator: bool) -> Self {
        Connection {
            state,
            decoder: FrameDecoder::new(MAX_HANDSHAKE_FRAME),
            outbound: OutBuf::default(),
            events: VecDeque::new(),
            cfg,
            initiator,
            peer_hint: None,
            held_frame1: None,
            refused: None,
        }
    }

    /// True if we dialled.
    pub fn is_initiator(&self) -> bool {
        self.initiator
    }

    /// True once the handshake and identity binding succeeded and until close.
    pub fn is_established(&self) -> bool {
        matches!(self.state, State::Established(_))
    }

    /// True after an orderly close, either side.
    pub fn is_closed(&self) -> bool {
        matches!(self.state, State::Closed)
    }

    /// The failure, if the connection failed.
    pub fn error(&self) -> Option<ConnError> {
        match self.state {
            State::Failed(e) => Some(e),
            _ => None,
        }
    }

    /// The authenticated peer, once established.
    pub fn peer_id(&self) -> Option<&DeviceId> {
        match &self.state {
            State::Established(s) => Some(s.peer_id()),
            _ => None,
        }
    }

    /// Who the peer is or claims to be, for log markers such as
    /// `identity mismatch peer=<id>`: the dialled id on the initiator, the id
    /// from the initiator's hello on the responder (once frame 3 was
    /// decrypted). Authenticated only while [`is_established`](Self::is_established);
    /// otherwise it is a claim. Safe to print (no control characters).
    pub fn peer_hint(&self) -> Option<&DeviceId> {
        self.peer_hint.as_ref()
    }

    /// The handshake deadline while handshaking; `None` afterwards.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        match &self.state {
            State::AwaitFrame1 { deadline, .. } => Some(*deadline),
            State::Initiating(i) => Some(i.deadline()),
            State::Responding(r) => Some(r.deadline()),
            _ => None,
        }
    }

    /// Advances the clock: fails a handshake whose deadline has passed.
    pub fn handle_timeout(&mut self, now: Instant) -> Result<(), ConnError> {
        self.check_failed()?;
        match self.poll_timeout() {
            Some(d) if now >= d => Err(self.fail(ConnError::Auth(AuthError::Timeout))),
            _ => Ok(()),
        }
    }

    /// The peer closed its side of the stream (EOF).
    pub fn handle_eof(&mut self) -> Result<(), ConnError> {
        self.check_failed()?;
        match self.state {
            State::Closed => Ok(()),
            State::Established(_) => Err(self.fail(ConnError::Session(SessionError::Closed))),
            _ => Err(self.fail(ConnError::Auth(AuthError::Closed))),
        }
    }

    /// How many bytes [`handle_input`](Self::handle_input) will take now.
    /// Read at most this much from the socket to never hold bytes aside.
    pub fn recv_space(&self) -> usize {
        if self.pending_out() >= MAX_OUTBOUND || self.events.len() >= MAX_EVENTS {
            return 0;
        }
        self.frame_room()
    }

    /// Room in the frame buffer, regardless of the queue bounds.
    fn frame_room(&self) -> usize {
        if self.held_frame1.is_some() {
            return 0;
        }
        match self.state {
            State::Closed | State::Failed(_) | State::Poisoned => 0,
            _ => self.decoder.space(),
        }
    }

    /// Feeds bytes read from the stream. Takes at most
    /// [`recv_space`](Self::recv_space) bytes and returns how many it took;
    /// feed the rest after draining events/outbound. `bindings` is consulted
    /// only when the initiator's frame 3 arrives (responder side).
    pub fn handle_input<B: IdentityBindings + ?Sized>(
        &mut self,
        bytes: &[u8],
        now: Instant,
        bindings: &B,
    ) -> Result<usize, ConnError> {
        self.input(
            bytes,
            now,
            bindings,
            None::<&mut crate::ratelimit::AdmitAll>,
        )
    }

    /// Where the next input goes, for reading from the stream without a
    /// copy: at most [`recv_space`](Self::recv_space) bytes (and at most
    /// `max`), inside the connection's frame buffer. Write into it, then
    /// call [`commit_recv`](Self::commit_recv) with the count.
    ///
    /// All of the room, not just the rest of the current frame: a read that
    /// ends inside a frame costs one move of that partial frame later, while
    /// reading one frame per call made a peer that sends many small
    /// messages stall: the Linux daemon took one 79-byte frame per `read`,
    /// and on loopback the sender's data then stopped arriving (its socket
    /// queue empty, the peer's writes blocked; the kernel mechanism was not
    /// pinned down), so the "never reads" hostile tests ended on the
    /// dead-peer timeout instead of the reply bound.
    pub fn recv_buf(&mut self, max: usize) -> &mut [u8] {
        let room = self.recv_space().min(max);
        self.decoder.spare_mut(room)
    }

    /// Takes `n` bytes written into [`recv_buf`](Self::recv_buf) and decodes
    /// them, like [`handle_input`](Self::handle_input).
    pub fn commit_recv<B: IdentityBindings + ?Sized>(
        &mut self,
        n: usize,
        now: Instant,
        bindings: &B,
    ) -> Result<(), ConnError> {
        self.commit_inner(n, now, bindings, None)
    }

    /// [`commit_recv`](Self::commit_recv), but each data message is passed
    /// to `on_data` as a slice of the receive buffer, in order, instead of
    /// being copied into an [`Event::Data`]. Other events are queued as
    /// usual (so a ping or `Established` may be polled after data that
    /// followed it on the wire).
    pub fn commit_recv_with<B: IdentityBindings + ?Sized, F: FnMut(&[u8])>(
        &mut self,
        n: usize,
        now: Instant,
        bindings: &B,
        mut on_data: F,
    ) -> Result<(), ConnError> {
        self.commit_inner(n, now, bindings, Some(&mut on_data))
    }

    fn commit_inner<'s, B: IdentityBindings + ?Sized>(
        &mut self,
        n: usize,
        now: Instant,
        bindings: &B,
        sink: Option<DataSink<'_, 's>>,
    ) -> Result<(), ConnError> {
        self.check_failed()?;
        if matches!(self.state, State::Closed) {
            return Err(ConnError::Closed);
        }
        self.handle_timeout(now)?;
        if let Err(e) = self.decoder.commit(n) {
            return Err(self.fail(ConnError::Frame(e)));
        }
        let none = None::<&mut crate::ratelimit::AdmitAll>;
        self.process(now, bindings, none, sink)?;
        Ok(())
    }

    /// [`handle_input`](Self::handle_input) with handshake admission: when
    /// frame 1 has passed its size and mac1 checks — and only then, so junk
    /// costs no tokens — `gate` decides whether the Diffie-Hellman work may
    /// start (normally [`HandshakeLimiter::gate`](crate::ratelimit::HandshakeLimiter::gate)
    /// with the stream's source address). A refusal is
    /// [`GatedError::Limited`]: no DH, connection not failed, frame 1 held.
    /// On an initiator, or after frame 1, this is exactly `handle_input`.
    pub fn handle_input_gated<B: IdentityBindings + ?Sized, G: HandshakeGate + ?Sized>(
        &mut self,
        bytes: &[u8],
        now: Instant,
        bindings: &B,
        gate: &mut G,
    ) -> Result<usize, GatedError> {
        self.refused = None;
        let used = self.input(bytes, now, bindings, Some(gate))?;
        match self.refused.take() {
            Some(l) => Err(GatedError::Limited(l)),
            None => Ok(used),
        }
    }

    /// True while frame 1 waits for admission after a gate refused it.
    pub fn is_admission_pending(&self) -> bool {
        self.held_frame1.is_some()
    }

    fn input<B: IdentityBindings + ?Sized, G: HandshakeGate + ?Sized>(
        &mut self,
        bytes: &[u8],
        now: Instant,
        bindings: &B,
        mut gate: Option<&mut G>,
    ) -> Result<usize, ConnError> {
        self.check_failed()?;
        if matches!(self.state, State::Closed) {
            return Err(ConnError::Closed);
        }
        self.handle_timeout(now)?;
        // What `recv_space` promised before this call is taken in full (a
        // caller may have read exactly that much); past it, input stops at
        // the queue bounds.
        let promised = self.recv_space();
        let mut used = 0;
        loop {
            // One frame at a time: the rest of the current header or body.
            // Each complete frame is decoded before more is taken, so none
            // waits undecoded and none leaves a tail to move.
            let room = if used < promised {
                self.frame_room()
            } else {
                self.recv_space()
            };
            let n = (bytes.len() - used).min(room).min(self.decoder.need());
            if n > 0 {
                if let Err(e) = self.decoder.feed(&bytes[used..used + n]) {
                    return Err(self.fail(ConnError::Frame(e)));
                }
                used += n;
            }
            let progressed = self.process(now, bindings, gate.as_deref_mut(), None)?;
            if self.refused.is_some() {
                break;
            }
            if !progressed && (n == 0 || used == bytes.len()) {
                break;
            }
        }
        Ok(used)
    }

    /// Frame 1 on the responder: mac1 (a hash) first, then the gate; true if
    /// the DH may proceed. On refusal the frame is held and `refused` set.
    fn admit_frame1<G: HandshakeGate + ?Sized>(
        &mut self,
        frame: &[u8],
        now: Instant,
        gate: Option<&mut G>,
    ) -> Result<bool, ConnError> {
        let (State::AwaitFrame1 { local, .. }, Some(gate)) = (&self.state, gate) else {
            return Ok(true);
        };
        Responder::precheck(local, frame).map_err(|e| self.fail(e.into()))?;
        match gate.admit(now) {
            Ok(()) => Ok(true),
            Err(l) => {
                self.held_frame1 = Some(frame.to_vec());
                self.refused = Some(l);
                Ok(false)
            }
        }
    }

    /// Decodes buffered frames while there is room for their results.
    /// Returns whether any frame was consumed.
    fn process<'s, B: IdentityBindings + ?Sized, G: HandshakeGate + ?Sized>(
        &mut self,
        now: Instant,
        bindings: &B,
        mut gate: Option<&mut G>,
        mut sink: Option<DataSink<'_, 's>>,
    ) -> Result<bool, ConnError> {
        let mut progressed = false;
        if let Some(mut f) = self.held_frame1.take() {
            if !self.admit_frame1(&f, now, gate.as_deref_mut())? {
                return Ok(false);
            }
            progressed = true;
            if let Err(e) = self.on_frame(&mut f, now, bindings, None) {
                return Err(self.fail(e));
            }
        }
        // Every complete frame is decoded, also past the queue bounds: the
        // bounds stop *input* (`recv_space`), and what was taken is at most
        // one frame buffer, so the overshoot is bounded by that.
        loop {
            if matches!(self.state, State::Closed) {
                break;
            }
            let range = match self.decoder.pop_frame() {
                Ok(Some(r)) => r,
                Ok(None) => break,
                Err(e) => return Err(self.fail(ConnError::Frame(e))),
            };
            progressed = true;
            // Decode the frame in place: lend the decoder out while the
            // state machine (which never touches it) runs.
            let mut decoder = core::mem::replace(&mut self.decoder, FrameDecoder::new(1));
            let frame = decoder.frame_mut(range);
            let r = match self.admit_frame1(frame, now, gate.as_deref_mut()) {
                Ok(true) => self.on_frame(frame, now, bindings, sink.as_deref_mut()),
                Ok(false) => Ok(()),
                Err(e) => Err(e),
            };
            self.decoder = decoder;
            if self.is_established() {
                self.decoder.set_max_frame_len(MAX_FRAME_LEN);
            }
            if let Err(e) = r {
                return Err(self.fail(e));
            }
            if self.refused.is_some() {
                break;
            }
        }
        Ok(progressed)
    }

    /// Handles one frame body. Transport frames are decrypted in place, so
    /// `frame` is overwritten.
    fn on_frame<B: IdentityBindings + ?Sized>(
        &mut self,
        frame: &mut [u8],
        now: Instant,
        bindings: &B,
        sink: Option<DataSink<'_, '_>>,
    ) -> Result<(), ConnError> {
        match core::mem::replace(&mut self.state, State::Poisoned) {
            State::AwaitFrame1 {
                local,
                mut pool,
                deadline,
            } => {
                if now >= deadline {
                    return Err(AuthError::Timeout.into());
                }
                // mac1 first: junk costs a hash, not a DH.
                Responder::precheck(&local, frame)?;
                let pool = pool.take().ok_or(AuthError::Internal)?;
                let (resp, frame2) =
                    Responder::accept_checked(&local, frame, pool, now, &self.cfg)?;
                self.queue_frame(&frame2)?;
                self.state = State::Responding(resp.cap_deadline(deadline));
            }
            State::Initiating(init) => {
                let (session, frame3) = init.read_frame2(frame, now)?;
                self.queue_frame(&frame3)?;
                self.establish(session);
            }
            State::Responding(resp) => match resp.read_frame3_detailed(frame, now, bindings) {
                Ok(session) => {
                    self.peer_hint = Some(session.peer_id().clone());
                    self.establish(session);
                }
                Err(rej) => {
                    if rej.claimed.is_some() {
                        self.peer_hint = rej.claimed;
                    }
                    return Err(rej.error.into());
                }
            },
            State::Established(mut s) => {
                let msg = s.open_in_place(frame).map_err(ConnError::Session);
                match msg? {
                    MessageRef::Ping(n) => {
                        let r =
                            self.outbound
                                .seal(&mut s, crate::session::T_PONG, &n.to_be_bytes());
                        r.map_err(ConnError::Session)?;
                        self.events.push_back(Event::Ping(n));
                        self.state = State::Established(s);
                    }
                    MessageRef::Pong(n) => {
                        self.events.push_back(Event::Pong(n));
                        self.state = State::Established(s);
                    }
                    MessageRef::Data(d) => {
                        match sink {
                            Some(f) => f(d),
                            None => self.events.push_back(Event::Data(d.to_vec())),
                        }
                        self.state = State::Established(s);
                    }
                    MessageRef::Close => {
                        self.events.push_back(Event::Closed);
                        self.state = State::Closed;
                    }
                }
            }
            other => self.state = other,
        }
        Ok(())
    }

    fn establish(&mut self, session: Session) {
        // The frame limit is raised by `process` once the decoder is back.
        self.events.push_back(Event::Established {
            peer: session.peer_id().clone(),
        });
        self.state = State::Established(alloc::boxed::Box::new(session));
    }

    fn queue_frame(&mut self, body: &[u8]) -> Result<(), ConnError> {
        let len = u16::try_from(body.len())
            .ok()
            .filter(|&l| l > 0)
            .ok_or(ConnError::Frame(FrameError::BadPayload))?;
        let w = self.outbound.reserve(frame::HEADER_LEN + body.len());
        w[..frame::HEADER_LEN].copy_from_slice(&len.to_be_bytes());
        w[frame::HEADER_LEN..].copy_from_slice(body);
        self.outbound.commit(frame::HEADER_LEN + body.len());
        Ok(())
    }

    /// Records a fatal error. Events already queued stay: they are facts
    /// about what happened before the failure.
    fn fail(&mut self, e: ConnError) -> ConnError {
        self.state = State::Failed(e);
        e
    }

    fn check_failed(&self) -> Result<(), ConnError> {
        match self.state {
            State::Failed(e) => Err(e),
            _ => Ok(()),
        }
    }

    /// The next event, if any. Draining events makes room for more input
    /// (see [`recv_space`](Self::recv_space)); it decodes nothing itself —
    /// [`handle_input`](Self::handle_input) never leaves a complete frame
    /// undecoded.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    fn pending_out(&self) -> usize {
        self.outbound.pending()
    }

    /// Bytes waiting to be written to the stream.
    pub fn transmit_buf(&self) -> &[u8] {
        self.outbound.bytes()
    }

    /// Marks the first `n` bytes of [`transmit_buf`](Self::transmit_buf) as
    /// written (for partial socket writes). Moves no memory.
    pub fn consume_transmit(&mut self, n: usize) {
        self.outbound.consume(n);
    }

    /// Takes all bytes waiting to be written.
    #[must_use]
    pub fn take_transmit(&mut self) -> Vec<u8> {
        self.outbound.take()
    }

    fn send(&mut self, msg: &Message, extra: usize) -> Result<(), ConnError> {
        let (ty, body) = match msg {
            Message::Ping(n) => (crate::session::T_PING, n.to_be_bytes()),
            Message::Pong(n) => (crate::session::T_PONG, n.to_be_bytes()),
            Message::Close => return self.send_raw(crate::session::T_CLOSE, &[]),
            Message::Data(d) => return self.send_raw(crate::session::T_DATA, d),
        };
        debug_assert_eq!(extra, body.len());
        self.send_raw(ty, &body)
    }

    fn send_raw(&mut self, ty: u8, body: &[u8]) -> Result<(), ConnError> {
        self.check_failed()?;
        if self.pending_out().saturating_add(body.len() + 64) > MAX_OUTBOUND {
            return Err(ConnError::WouldBlock);
        }
        let close = ty == crate::session::T_CLOSE;
        let r = match &mut self.state {
            State::Established(s) => self.outbound.seal(s, ty, body),
            State::Closed => return Err(ConnError::Closed),
            _ => return Err(ConnError::NotEstablished),
        };
        if let Err(e) = r {
            return Err(match e {
                SessionError::TooLarge => ConnError::Session(e),
                _ => self.fail(ConnError::Session(e)),
            });
        }
        if close {
            self.state = State::Closed;
        }
        Ok(())
    }

    /// Queues a ping carrying `nonce`.
    pub fn send_ping(&mut self, nonce: u64) -> Result<(), ConnError> {
        self.send(&Message::Ping(nonce), 8)
    }

    /// Queues application data (at most
    /// [`MAX_DATA_LEN`] bytes per call). The data is encrypted straight into
    /// the transmit buffer.
    pub fn send_data(&mut self, data: &[u8]) -> Result<(), ConnError> {
        if data.len() > MAX_DATA_LEN {
            return Err(ConnError::Session(SessionError::TooLarge));
        }
        self.send_raw(crate::session::T_DATA, data)
    }

    /// Queues an orderly close; the connection is closed afterwards (flush
    /// [`transmit_buf`](Self::transmit_buf), then shut the socket).
    pub fn close(&mut self) -> Result<(), ConnError> {
        self.send(&Message::Close, 0)
    }
}
