//! Streams: many ordered, flow-controlled byte streams inside one
//! authenticated session (`docs/protocol/wire.md` §11).
//!
//! Every stream message is one session `data` message whose first byte is
//! [`KIND_STREAM`] (`0x30`). The layout is
//! `30 ‖ version 01 ‖ frame type ‖ stream id (4, BE) ‖ body`:
//! open (kind, priority), data, window update, close (half-close), reset
//! (code), and ping / pong for keepalive. [`decode`] is total.
//!
//! [`Mux`] is the sans-IO state machine for one session, in the shape of
//! quinn-proto: feed each received stream message to
//! [`Mux::handle_input`], send whatever [`Mux::poll_transmit`] returns as one
//! data message each, drain [`Mux::poll_event`], and arm a timer at
//! [`Mux::poll_timeout`] that calls [`Mux::handle_timeout`]. The clock is the
//! caller's.
//!
//! **Negotiation.** A node that speaks this protocol lists the service
//! [`STREAMS_SERVICE`] (`streams/1`) in its announce; a node creates a `Mux`
//! for a session (and sends kind `0x30`) only when the peer's announce said
//! so ([`peer_supports_streams`]). A v1-only peer never sees a stream message.
//!
//! **Bounds** (all in [`StreamConfig`], checked by tests):
//! * receive: bytes buffered for a stream ≤ [`StreamConfig::stream_window`],
//!   for all streams together ≤ [`StreamConfig::session_window`] — the
//!   sender may only send what these windows grant, and data past a window
//!   is a fatal [`MuxError::FlowControl`];
//! * send: bytes accepted by [`Mux::write`] and not yet sent ≤
//!   [`StreamConfig::send_buffer`] per stream and ≤
//!   [`StreamConfig::max_send_buffered`] in total; `poll_transmit` only
//!   produces data the peer's windows allow, so a peer that never reads stops
//!   the sender at (its windows + our send buffers), never more;
//! * streams: ≤ [`StreamConfig::max_incoming_streams`] opened by the peer
//!   (more are refused with reset [`RESET_REFUSED`]) and ≤
//!   [`StreamConfig::max_outgoing_streams`] opened here;
//! * queued control frames (resets of refused streams) ≤
//!   [`StreamConfig::max_pending_control`], undelivered events ≤
//!   [`StreamConfig::max_events`]; past either the mux fails with
//!   [`MuxError::Overloaded`] rather than grow;
//! * one frame ≤ [`MAX_MESSAGE_LEN`] (one data body), data payload ≤
//!   [`StreamConfig::max_frame_payload`] ≤ [`MAX_DATA_PAYLOAD`].
//!
//! ```
//! use dsoftbus::stream::*;
//! use dsoftbus::Instant;
//! let now = Instant::from_millis(0);
//! let mut a = Mux::new(StreamConfig::default(), true, now);
//! let mut b = Mux::new(StreamConfig::default(), false, now);
//! let id = a.open(7, Priority::Control).unwrap();
//! assert_eq!(a.write(id, b"hello").unwrap(), 5);
//! a.finish(id).unwrap();
//! while let Some(msg) = a.poll_transmit() {
//!     b.handle_input(&msg, now).unwrap(); // each msg is one session data message
//! }
//! assert_eq!(b.poll_event(), Some(Event::Opened { id, kind: 7, priority: Priority::Control }));
//! let mut buf = [0u8; 16];
//! assert_eq!(b.read(id, &mut buf), Ok(Read::Bytes(5)));
//! assert_eq!(&buf[..5], b"hello");
//! assert_eq!(b.read(id, &mut buf), Ok(Read::Fin));
//! ```

use alloc::collections::{BTreeMap, BTreeSet, VecDeque};
use alloc::vec::Vec;
use core::fmt;
use core::time::Duration;

use crate::announce::ServiceName;
use crate::session::MAX_DATA_LEN;
use crate::time::Instant;

/// First byte of every stream message (wire.md §11.1).
pub const KIND_STREAM: u8 = 0x30;
/// The stream framing version this code speaks.
pub const STREAM_VERSION: u8 = 1;
/// The announce service name that advertises stream support (wire.md §11.2).
pub const STREAMS_SERVICE: &str = "streams/1";
/// Bytes before the body: kind, version, frame type, stream id.
pub const HEADER_LEN: usize = 3 + 4;
/// Longest stream message: one session data body (65 518 bytes).
pub const MAX_MESSAGE_LEN: usize = MAX_DATA_LEN;
/// Largest data payload one frame can carry (65 511 bytes).
pub const MAX_DATA_PAYLOAD: usize = MAX_MESSAGE_LEN - HEADER_LEN;
/// Receive window of every stream when it opens, in each direction
/// (normative: both sides start from it; more is granted by window updates).
pub const INITIAL_STREAM_WINDOW: u32 = 256 * 1024;
/// Session-wide receive window when the mux starts, in each direction.
pub const INITIAL_SESSION_WINDOW: u32 = 1024 * 1024;
/// Largest window a sender may ever hold (2^31 − 1); more is a
/// flow-control error.
pub const MAX_WINDOW: u32 = 0x7fff_ffff;
/// A receiver accepts at least this many concurrent peer-opened streams.
pub const MIN_INCOMING_STREAMS: usize = 16;

/// Frame type: open a stream (body: kind, priority).
pub const FT_OPEN: u8 = 0x01;
/// Frame type: stream data (body: 1.. bytes).
pub const FT_DATA: u8 = 0x02;
/// Frame type: window update (body: increment, 4 bytes BE); id 0 = session.
pub const FT_WINDOW: u8 = 0x03;
/// Frame type: the sender's half of the stream is finished (empty body).
pub const FT_CLOSE: u8 = 0x04;
/// Frame type: abort both halves (body: code, 4 bytes BE).
pub const FT_RESET: u8 = 0x05;
/// Frame type: keepalive probe (id 0, body: 8 opaque bytes).
pub const FT_PING: u8 = 0x06;
/// Frame type: answer to a ping (id 0, the same 8 bytes).
pub const FT_PONG: u8 = 0x07;

/// Reset code: the application cancelled the stream.
pub const RESET_CANCEL: u32 = 0;
/// Reset code: the receiver is at its stream limit; retry later.
pub const RESET_REFUSED: u32 = 1;
/// Reset code: the receiver does not accept streams of this kind.
pub const RESET_UNKNOWN_KIND: u32 = 2;

/// True if a peer's announced services include [`STREAMS_SERVICE`]: only
/// then may a node send stream messages to it (wire.md §11.2).
pub fn peer_supports_streams(services: &[ServiceName]) -> bool {
    services.iter().any(|s| s.as_str() == STREAMS_SERVICE)
}

// ---------------------------------------------------------------------------
// Wire
// ---------------------------------------------------------------------------

/// A stream id. 0 names the session (window updates, ping, pong); the
/// session initiator opens odd ids, the responder even ids.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StreamId(pub u32);

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Scheduling class of a stream, fixed at open, for both directions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Priority {
    /// Sent before any bulk stream's data when both have something to send.
    Control = 0,
    /// Everything else.
    Bulk = 1,
}

impl Priority {
    fn from_u8(b: u8) -> Option<Priority> {
        match b {
            0 => Some(Priority::Control),
            1 => Some(Priority::Bulk),
            _ => None,
        }
    }
}

/// One stream frame (wire.md §11.1).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    /// Open stream `id` carrying application `kind`.
    Open {
        /// New stream id (opener's parity, increasing).
        id: StreamId,
        /// Application protocol on the stream (opaque to the mux).
        kind: u8,
        /// Scheduling class.
        priority: Priority,
    },
    /// Bytes on a stream (1..=[`MAX_DATA_PAYLOAD`]).
    Data {
        /// Stream.
        id: StreamId,
        /// The bytes.
        payload: Vec<u8>,
    },
    /// Grant the peer `increment` more bytes on `id` (0: the session).
    Window {
        /// Stream, or 0 for the session window.
        id: StreamId,
        /// 1..=[`MAX_WINDOW`].
        increment: u32,
    },
    /// The sender will send no more data on `id`.
    Close {
        /// Stream.
        id: StreamId,
    },
    /// Abort `id` in both directions.
    Reset {
        /// Stream.
        id: StreamId,
        /// Why ([`RESET_CANCEL`], [`RESET_REFUSED`], [`RESET_UNKNOWN_KIND`],
        /// or an application code).
        code: u32,
    },
    /// Keepalive probe.
    Ping(u64),
    /// Keepalive answer.
    Pong(u64),
}

/// Why a data message is not a valid stream message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// Empty, or the first byte is not [`KIND_STREAM`]: not ours.
    NotStream,
    /// Longer than [`MAX_MESSAGE_LEN`]; refused before parsing.
    Oversized,
    /// Shorter than the header or the frame type's body.
    Truncated,
    /// Version byte other than [`STREAM_VERSION`].
    UnsupportedVersion(u8),
    /// Frame type not 1..=7 (ignored by a [`Mux`], not fatal).
    UnknownFrame(u8),
    /// A rule of §11.1 broken: wrong body length, id 0 where a stream is
    /// needed (or not 0 on ping/pong), priority > 1, empty data, window
    /// increment 0 or > [`MAX_WINDOW`].
    InvalidInput,
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::NotStream => f.write_str("not a stream message"),
            DecodeError::Oversized => f.write_str("oversized"),
            DecodeError::Truncated => f.write_str("truncated"),
            DecodeError::UnsupportedVersion(v) => write!(f, "unsupported version {v}"),
            DecodeError::UnknownFrame(t) => write!(f, "unknown frame type {t}"),
            DecodeError::InvalidInput => f.write_str("invalid input"),
        }
    }
}

impl Frame {
    fn parts(&self) -> (u8, u32) {
        match self {
            Frame::Open { id, .. } => (FT_OPEN, id.0),
            Frame::Data { id, .. } => (FT_DATA, id.0),
            Frame::Window { id, .. } => (FT_WINDOW, id.0),
            Frame::Close { id } => (FT_CLOSE, id.0),
            Frame::Reset { id, .. } => (FT_RESET, id.0),
            Frame::Ping(_) => (FT_PING, 0),
            Frame::Pong(_) => (FT_PONG, 0),
        }
    }

    /// Appends the encoding to `out`. The caller builds only valid frames
    /// (a [`Mux`] does); [`decode`] checks them on the other side.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        let (t, id) = self.parts();
        out.extend_from_slice(&[KIND_STREAM, STREAM_VERSION, t]);
        out.extend_from_slice(&id.to_be_bytes());
        match self {
            Frame::Open { kind, priority, .. } => out.extend_from_slice(&[*kind, *priority as u8]),
            Frame::Data { payload, .. } => out.extend_from_slice(payload),
            Frame::Window { increment, .. } => out.extend_from_slice(&increment.to_be_bytes()),
            Frame::Close { .. } => {}
            Frame::Reset { code, .. } => out.extend_from_slice(&code.to_be_bytes()),
            Frame::Ping(n) | Frame::Pong(n) => out.extend_from_slice(&n.to_be_bytes()),
        }
    }

    /// The encoding: the body of one session data message.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode_into(&mut out);
        out
    }
}

fn be32(b: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(b.try_into().ok()?))
}

/// Decodes one stream message (a whole data body). Total: every input gives
/// a frame or an error, checked in the order of wire.md §11.4.
pub fn decode(msg: &[u8]) -> Result<Frame, DecodeError> {
    if msg.first() != Some(&KIND_STREAM) {
        return Err(DecodeError::NotStream);
    }
    if msg.len() > MAX_MESSAGE_LEN {
        return Err(DecodeError::Oversized);
    }
    let Some(&version) = msg.get(1) else {
        return Err(DecodeError::Truncated);
    };
    if version != STREAM_VERSION {
        return Err(DecodeError::UnsupportedVersion(version));
    }
    let Some(&t) = msg.get(2) else {
        return Err(DecodeError::Truncated);
    };
    if !(FT_OPEN..=FT_PONG).contains(&t) {
        return Err(DecodeError::UnknownFrame(t));
    }
    let id = msg.get(3..7).and_then(be32).ok_or(DecodeError::Truncated)?;
    let body = msg.get(7..).unwrap_or(&[]);
    let sid = StreamId(id);
    let need = |n: usize| -> Result<(), DecodeError> {
        match body.len().cmp(&n) {
            core::cmp::Ordering::Less => Err(DecodeError::Truncated),
            core::cmp::Ordering::Greater => Err(DecodeError::InvalidInput),
            core::cmp::Ordering::Equal => Ok(()),
        }
    };
    let session_level = matches!(t, FT_PING | FT_PONG);
    let may_be_zero = t == FT_WINDOW;
    if (id == 0 && !session_level && !may_be_zero) || (id != 0 && session_level) {
        return Err(DecodeError::InvalidInput);
    }
    Ok(match t {
        FT_OPEN => {
            need(2)?;
            let priority = body
                .get(1)
                .copied()
                .and_then(Priority::from_u8)
                .ok_or(DecodeError::InvalidInput)?;
            Frame::Open {
                id: sid,
                kind: body[0],
                priority,
            }
        }
        FT_DATA => {
            if body.is_empty() {
                return Err(DecodeError::InvalidInput);
            }
            Frame::Data {
                id: sid,
                payload: body.to_vec(),
            }
        }
        FT_WINDOW => {
            need(4)?;
            let increment = be32(body).ok_or(DecodeError::Truncated)?;
            if increment == 0 || increment > MAX_WINDOW {
                return Err(DecodeError::InvalidInput);
            }
            Frame::Window { id: sid, increment }
        }
        FT_CLOSE => {
            need(0)?;
            Frame::Close { id: sid }
        }
        FT_RESET => {
            need(4)?;
            Frame::Reset {
                id: sid,
                code: be32(body).ok_or(DecodeError::Truncated)?,
            }
        }
        _ => {
            need(8)?;
            let n = u64::from_be_bytes(body.try_into().map_err(|_| DecodeError::Truncated)?);
            if t == FT_PING {
                Frame::Ping(n)
            } else {
                Frame::Pong(n)
            }
        }
    })
}

// ---------------------------------------------------------------------------
// Mux
// ---------------------------------------------------------------------------

/// The set of stream kinds a node accepts from peers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KindSet([u64; 4]);

impl KindSet {
    /// Every kind.
    pub const fn all() -> Self {
        KindSet([u64::MAX; 4])
    }

    /// No kind (the peer cannot open streams).
    pub const fn none() -> Self {
        KindSet([0; 4])
    }

    /// Exactly these kinds.
    pub fn only(kinds: &[u8]) -> Self {
        let mut s = KindSet::none();
        for &k in kinds {
            s.0[usize::from(k / 64)] |= 1 << (k % 64);
        }
        s
    }

    /// True if `kind` is in the set.
    pub fn contains(&self, kind: u8) -> bool {
        self.0[usize::from(kind / 64)] & (1 << (kind % 64)) != 0
    }
}

/// Local limits of a [`Mux`]. Every buffer and queue is bounded by one of
/// these.
#[derive(Clone, Debug)]
pub struct StreamConfig {
    /// Peer-opened streams alive at once; more are refused
    /// ([`RESET_REFUSED`]). At least [`MIN_INCOMING_STREAMS`]. Default 64.
    pub max_incoming_streams: usize,
    /// Streams this side may have open at once. Default 64.
    pub max_outgoing_streams: usize,
    /// Receive window per stream = the most bytes buffered for one stream
    /// (≥ [`INITIAL_STREAM_WINDOW`], ≤ [`MAX_WINDOW`]). Default 256 KiB.
    pub stream_window: u32,
    /// Receive window of the session = the most bytes buffered for all
    /// streams (≥ [`INITIAL_SESSION_WINDOW`], ≤ [`MAX_WINDOW`]). Default 1 MiB.
    pub session_window: u32,
    /// Largest data payload this side sends in one frame (1..=
    /// [`MAX_DATA_PAYLOAD`]); smaller frames let control streams overtake
    /// bulk ones sooner. Default 16 KiB.
    pub max_frame_payload: usize,
    /// Bytes [`Mux::write`] accepts per stream before they are sent.
    /// Default 64 KiB.
    pub send_buffer: usize,
    /// Bytes accepted and not yet sent, all streams together. Default 1 MiB.
    pub max_send_buffered: usize,
    /// Control frames (resets) queued for sending; more is
    /// [`MuxError::Overloaded`]. Default 256.
    pub max_pending_control: usize,
    /// Events not yet taken by [`Mux::poll_event`]; more is
    /// [`MuxError::Overloaded`]. Default 1024.
    pub max_events: usize,
    /// Send a ping when nothing arrived for this long. Default 15 s.
    pub keepalive: Duration,
    /// Fail with [`MuxError::IdleTimeout`] when nothing arrived for this
    /// long. Default 60 s.
    pub idle_timeout: Duration,
    /// Kinds peers may open; others are refused ([`RESET_UNKNOWN_KIND`]).
    /// Default: all.
    pub accepted_kinds: KindSet,
}

impl Default for StreamConfig {
    fn default() -> Self {
        StreamConfig {
            max_incoming_streams: 64,
            max_outgoing_streams: 64,
            stream_window: INITIAL_STREAM_WINDOW,
            session_window: INITIAL_SESSION_WINDOW,
            max_frame_payload: 16 * 1024,
            send_buffer: 64 * 1024,
            max_send_buffered: 1024 * 1024,
            max_pending_control: 256,
            max_events: 1024,
            keepalive: Duration::from_secs(15),
            idle_timeout: Duration::from_secs(60),
            accepted_kinds: KindSet::all(),
        }
    }
}

impl StreamConfig {
    /// The config with every field clamped into its documented range.
    fn clamped(mut self) -> Self {
        self.max_incoming_streams = self.max_incoming_streams.max(MIN_INCOMING_STREAMS);
        self.stream_window = self.stream_window.clamp(INITIAL_STREAM_WINDOW, MAX_WINDOW);
        self.session_window = self
            .session_window
            .clamp(INITIAL_SESSION_WINDOW, MAX_WINDOW);
        self.max_frame_payload = self.max_frame_payload.clamp(1, MAX_DATA_PAYLOAD);
        self.send_buffer = self.send_buffer.max(1);
        self.max_pending_control = self.max_pending_control.max(1);
        self.max_events = self.max_events.max(1);
        self
    }
}

/// Fatal mux failures (except [`MuxError::NotStream`]): the session should
/// be closed, the mux refuses everything afterwards.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MuxError {
    /// Not a stream message (first byte not `0x30`): not an error of the
    /// mux, nothing changed; hand the message to another data user.
    NotStream,
    /// The message does not decode (§11.4).
    Malformed(DecodeError),
    /// A stream-id rule of §11.3 broken (wrong parity, not increasing, data
    /// after close, a frame for a stream never opened).
    Protocol,
    /// Data past a window, or a window grown past [`MAX_WINDOW`].
    FlowControl,
    /// Nothing arrived for [`StreamConfig::idle_timeout`].
    IdleTimeout,
    /// A bounded queue (control frames, events) is full: the peer produces
    /// work faster than this side drains it.
    Overloaded,
}

impl MuxError {
    /// Whether the mux is dead after this error.
    pub fn is_fatal(&self) -> bool {
        !matches!(self, MuxError::NotStream)
    }
}

impl fmt::Display for MuxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MuxError::NotStream => f.write_str("not a stream message"),
            MuxError::Malformed(e) => write!(f, "malformed stream message: {e}"),
            MuxError::Protocol => f.write_str("stream protocol violation"),
            MuxError::FlowControl => f.write_str("flow-control violation"),
            MuxError::IdleTimeout => f.write_str("idle timeout"),
            MuxError::Overloaded => f.write_str("overloaded"),
        }
    }
}

/// Errors of the local stream API (never fatal by themselves).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamError {
    /// No such live stream (never opened, finished, or reset).
    UnknownStream,
    /// [`Mux::finish`] was called; no more writes.
    Finished,
    /// [`StreamConfig::max_outgoing_streams`] are open.
    TooManyStreams,
    /// All stream ids of this side are used; make a new session.
    IdsExhausted,
    /// The mux failed ([`Mux::error`]).
    Failed,
}

impl fmt::Display for StreamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            StreamError::UnknownStream => "unknown stream",
            StreamError::Finished => "stream finished",
            StreamError::TooManyStreams => "too many streams",
            StreamError::IdsExhausted => "stream ids exhausted",
            StreamError::Failed => "mux failed",
        })
    }
}

/// What the mux tells the application.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// The peer opened a stream (accepted: kind and limits allowed it).
    Opened {
        /// The stream.
        id: StreamId,
        /// Its application kind.
        kind: u8,
        /// Its priority.
        priority: Priority,
    },
    /// Data (or the peer's close) arrived on a stream with an empty buffer:
    /// call [`Mux::read`] until it blocks.
    Readable(StreamId),
    /// A write that was cut short can now take more bytes.
    Writable(StreamId),
    /// The peer reset the stream; it is gone.
    Reset {
        /// The stream.
        id: StreamId,
        /// The peer's code.
        code: u32,
    },
    /// The mux failed; close the session.
    Failed(MuxError),
}

/// Result of [`Mux::read`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Read {
    /// This many bytes were copied (≥ 1 unless `buf` was empty).
    Bytes(usize),
    /// Nothing buffered yet; wait for [`Event::Readable`].
    WouldBlock,
    /// The peer closed its half and every byte was read.
    Fin,
}

/// Counters and current buffer levels, for bounds checks and logs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MuxStats {
    /// Received bytes buffered, all streams.
    pub recv_buffered: usize,
    /// Largest receive buffer of one stream.
    pub max_stream_recv_buffered: usize,
    /// Accepted, not yet sent bytes, all streams.
    pub send_buffered: usize,
    /// Largest send buffer of one stream.
    pub max_stream_send_buffered: usize,
    /// Live streams opened by the peer.
    pub incoming_streams: usize,
    /// Live streams opened here.
    pub outgoing_streams: usize,
    /// Queued control frames.
    pub pending_control: usize,
    /// Peer opens refused (limit or kind).
    pub refused: u64,
    /// Frames of unknown type ignored.
    pub unknown_frames: u64,
    /// Data bytes received for streams already gone (discarded, credited).
    pub discarded_bytes: u64,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum SendFin {
    Open,
    Queued,
    Sent,
}

struct Stream {
    kind: u8,
    priority: Priority,
    local: bool,
    // send half
    open_pending: bool,
    send_buf: VecDeque<u8>,
    send_window: u32,
    fin: SendFin,
    write_blocked: bool,
    // receive half
    recv_buf: VecDeque<u8>,
    /// Bytes the peer may still send on this stream.
    recv_remaining: u32,
    /// Bytes read by the application and not yet granted back.
    recv_consumed: u32,
    remote_fin: bool,
    fin_read: bool,
    readable_signalled: bool,
}

impl Stream {
    fn new(kind: u8, priority: Priority, local: bool, open_pending: bool) -> Self {
        Stream {
            kind,
            priority,
            local,
            open_pending,
            send_buf: VecDeque::new(),
            send_window: INITIAL_STREAM_WINDOW,
            fin: SendFin::Open,
            write_blocked: false,
            recv_buf: VecDeque::new(),
            recv_remaining: INITIAL_STREAM_WINDOW,
            recv_consumed: 0,
            remote_fin: false,
            fin_read: false,
            readable_signalled: false,
        }
    }

    fn done(&self) -> bool {
        self.fin == SendFin::Sent && self.fin_read
    }
}

/// The stream multiplexer of one session. See the [module docs](self).
pub struct Mux {
    cfg: StreamConfig,
    initiator: bool,
    streams: BTreeMap<u32, Stream>,
    next_local: Option<u32>,
    /// Highest id the peer opened (0: none).
    last_peer: u32,
    incoming: usize,
    outgoing: usize,
    // session flow control
    send_window: u32,
    recv_remaining: u32,
    recv_consumed: u32,
    /// Credit freed by dropping data (a reset stream's buffer, data for a
    /// gone stream): return it at once, whatever the threshold, or unread
    /// streams reset to make room would not make any.
    session_credit_due: bool,
    send_buffered: usize,
    recv_buffered: usize,
    // transmit
    control: VecDeque<Frame>,
    window_updates: BTreeSet<u32>,
    pong_owed: Option<u64>,
    ping_due: Option<u64>,
    ping_outstanding: bool,
    ping_counter: u64,
    cursor: [u32; 2],
    // receive side
    events: VecDeque<Event>,
    last_rx: Instant,
    error: Option<MuxError>,
    refused: u64,
    unknown_frames: u64,
    discarded: u64,
}

impl fmt::Debug for Mux {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Mux")
            .field("initiator", &self.initiator)
            .field("stats", &self.stats())
            .field("error", &self.error)
            .finish_non_exhaustive()
    }
}

impl Mux {
    /// A mux for one session. `initiator`: this side dialled the session
    /// (it opens odd stream ids). `now` starts the idle clock.
    pub fn new(cfg: StreamConfig, initiator: bool, now: Instant) -> Self {
        let cfg = cfg.clamped();
        let extra = cfg.session_window - INITIAL_SESSION_WINDOW;
        let mut m = Mux {
            initiator,
            streams: BTreeMap::new(),
            next_local: Some(if initiator { 1 } else { 2 }),
            last_peer: 0,
            incoming: 0,
            outgoing: 0,
            send_window: INITIAL_SESSION_WINDOW,
            recv_remaining: INITIAL_SESSION_WINDOW,
            recv_consumed: 0,
            session_credit_due: false,
            send_buffered: 0,
            recv_buffered: 0,
            control: VecDeque::new(),
            window_updates: BTreeSet::new(),
            pong_owed: None,
            ping_due: None,
            ping_outstanding: false,
            ping_counter: 0,
            cursor: [0; 2],
            events: VecDeque::new(),
            last_rx: now,
            error: None,
            refused: 0,
            unknown_frames: 0,
            discarded: 0,
            cfg,
        };
        if extra > 0 {
            // Grant the larger configured session window right away.
            m.recv_remaining += extra;
            m.control.push_back(Frame::Window {
                id: StreamId(0),
                increment: extra,
            });
        }
        m
    }

    /// The config in force (clamped into its documented ranges).
    pub fn config(&self) -> &StreamConfig {
        &self.cfg
    }

    /// The fatal error, if the mux failed.
    pub fn error(&self) -> Option<MuxError> {
        self.error
    }

    /// Current buffer levels and counters.
    pub fn stats(&self) -> MuxStats {
        MuxStats {
            recv_buffered: self.recv_buffered,
            max_stream_recv_buffered: self
                .streams
                .values()
                .map(|s| s.recv_buf.len())
                .max()
                .unwrap_or(0),
            send_buffered: self.send_buffered,
            max_stream_send_buffered: self
                .streams
                .values()
                .map(|s| s.send_buf.len())
                .max()
                .unwrap_or(0),
            incoming_streams: self.incoming,
            outgoing_streams: self.outgoing,
            pending_control: self.control.len(),
            refused: self.refused,
            unknown_frames: self.unknown_frames,
            discarded_bytes: self.discarded,
        }
    }

    /// True if `id` is a live stream.
    pub fn is_open(&self, id: StreamId) -> bool {
        self.streams.contains_key(&id.0)
    }

    fn is_local_id(&self, id: u32) -> bool {
        (id % 2 == 1) == self.initiator
    }

    fn fail(&mut self, e: MuxError) -> MuxError {
        if self.error.is_none() {
            self.error = Some(e);
            self.events.push_back(Event::Failed(e));
        }
        e
    }

    fn push_event(&mut self, e: Event) -> Result<(), MuxError> {
        if self.events.len() >= self.cfg.max_events {
            return Err(self.fail(MuxError::Overloaded));
        }
        self.events.push_back(e);
        Ok(())
    }

    fn push_control(&mut self, f: Frame) -> Result<(), MuxError> {
        if self.control.len() >= self.cfg.max_pending_control {
            return Err(self.fail(MuxError::Overloaded));
        }
        self.control.push_back(f);
        Ok(())
    }

    // --- local API --------------------------------------------------------

    /// Opens a stream of application `kind`. Nothing is sent until
    /// [`Mux::poll_transmit`]; the id is usable at once.
    pub fn open(&mut self, kind: u8, priority: Priority) -> Result<StreamId, StreamError> {
        if self.error.is_some() {
            return Err(StreamError::Failed);
        }
        if self.outgoing >= self.cfg.max_outgoing_streams {
            return Err(StreamError::TooManyStreams);
        }
        let id = self.next_local.ok_or(StreamError::IdsExhausted)?;
        self.next_local = id.checked_add(2);
        self.streams
            .insert(id, Stream::new(kind, priority, true, true));
        self.outgoing += 1;
        Ok(StreamId(id))
    }

    fn grant_extra_stream_window(&mut self, id: u32) {
        let extra = self.cfg.stream_window - INITIAL_STREAM_WINDOW;
        if let Some(s) = self.streams.get_mut(&id) {
            if extra > 0 {
                // Sent as a window update after the open (never before it).
                s.recv_consumed += extra;
                self.window_updates.insert(id);
            }
        }
    }

    /// How many bytes [`Mux::write`] would take on `id` now (0 for an
    /// unknown or finished stream, or a failed mux): lets a caller write a
    /// message whole instead of keeping a copy of what did not fit.
    pub fn writable(&self, id: StreamId) -> usize {
        match self.streams.get(&id.0) {
            Some(s) if self.error.is_none() && s.fin == SendFin::Open => {
                self.cfg.send_buffer.saturating_sub(s.send_buf.len()).min(
                    self.cfg
                        .max_send_buffered
                        .saturating_sub(self.send_buffered),
                )
            }
            _ => 0,
        }
    }

    /// Accepts up to the stream's free send-buffer space of `data`; returns
    /// how many bytes it took (0 when full: wait for [`Event::Writable`]).
    pub fn write(&mut self, id: StreamId, data: &[u8]) -> Result<usize, StreamError> {
        if self.error.is_some() {
            return Err(StreamError::Failed);
        }
        let total_free = self
            .cfg
            .max_send_buffered
            .saturating_sub(self.send_buffered);
        let s = self
            .streams
            .get_mut(&id.0)
            .ok_or(StreamError::UnknownStream)?;
        if s.fin != SendFin::Open {
            return Err(StreamError::Finished);
        }
        let free = self
            .cfg
            .send_buffer
            .saturating_sub(s.send_buf.len())
            .min(total_free);
        let n = free.min(data.len());
        s.send_buf.extend(&data[..n]);
        if n < data.len() {
            s.write_blocked = true;
        }
        self.send_buffered += n;
        Ok(n)
    }

    /// Closes this side's half of the stream after the buffered bytes.
    pub fn finish(&mut self, id: StreamId) -> Result<(), StreamError> {
        if self.error.is_some() {
            return Err(StreamError::Failed);
        }
        let s = self
            .streams
            .get_mut(&id.0)
            .ok_or(StreamError::UnknownStream)?;
        if s.fin == SendFin::Open {
            s.fin = SendFin::Queued;
        }
        Ok(())
    }

    /// Aborts the stream in both directions; buffered bytes are dropped and
    /// their session credit returned. The peer gets a reset with `code`.
    pub fn reset(&mut self, id: StreamId, code: u32) -> Result<(), StreamError> {
        if self.error.is_some() {
            return Err(StreamError::Failed);
        }
        let s = self.remove(id.0).ok_or(StreamError::UnknownStream)?;
        if !s.open_pending {
            self.push_control(Frame::Reset { id, code })
                .map_err(|_| StreamError::Failed)?;
        }
        Ok(())
    }

    /// Copies received bytes of `id` into `buf`.
    pub fn read(&mut self, id: StreamId, buf: &mut [u8]) -> Result<Read, StreamError> {
        if self.error.is_some() {
            return Err(StreamError::Failed);
        }
        let half = self.cfg.stream_window / 2;
        let s = self
            .streams
            .get_mut(&id.0)
            .ok_or(StreamError::UnknownStream)?;
        if s.recv_buf.is_empty() {
            s.readable_signalled = false;
            if s.remote_fin {
                s.fin_read = true;
                if s.done() {
                    self.remove(id.0);
                }
                return Ok(Read::Fin);
            }
            return Ok(Read::WouldBlock);
        }
        let n = buf.len().min(s.recv_buf.len());
        let (a, b) = s.recv_buf.as_slices();
        let from_a = n.min(a.len());
        buf[..from_a].copy_from_slice(&a[..from_a]);
        buf[from_a..n].copy_from_slice(&b[..n - from_a]);
        s.recv_buf.drain(..n);
        if s.recv_buf.is_empty() {
            s.readable_signalled = false;
        }
        // n ≤ the stream window ≤ MAX_WINDOW, so these fit in u32.
        let n32 = u32::try_from(n).unwrap_or(MAX_WINDOW);
        s.recv_consumed = s.recv_consumed.saturating_add(n32);
        if !s.remote_fin && s.recv_consumed >= half {
            self.window_updates.insert(id.0);
        }
        self.recv_buffered -= n;
        self.recv_consumed = self.recv_consumed.saturating_add(n32);
        Ok(Read::Bytes(n))
    }

    /// Removes a stream, returning its buffered receive bytes to the
    /// session window and releasing its send buffer.
    fn remove(&mut self, id: u32) -> Option<Stream> {
        let s = self.streams.remove(&id)?;
        self.window_updates.remove(&id);
        let buffered = s.recv_buf.len();
        self.recv_buffered -= buffered;
        if buffered > 0 {
            self.session_credit_due = true;
        }
        self.recv_consumed = self
            .recv_consumed
            .saturating_add(u32::try_from(buffered).unwrap_or(MAX_WINDOW));
        self.send_buffered -= s.send_buf.len();
        if s.local {
            self.outgoing -= 1;
        } else {
            self.incoming -= 1;
        }
        Some(s)
    }

    // --- input ------------------------------------------------------------

    /// Processes one received data message. `Err(NotStream)` changes
    /// nothing; every other error is fatal (also reported as
    /// [`Event::Failed`]).
    pub fn handle_input(&mut self, msg: &[u8], now: Instant) -> Result<(), MuxError> {
        if msg.first() != Some(&KIND_STREAM) {
            return Err(MuxError::NotStream);
        }
        if let Some(e) = self.error {
            return Err(e);
        }
        let frame = match decode(msg) {
            Ok(f) => f,
            Err(DecodeError::UnknownFrame(_)) => {
                self.unknown_frames += 1;
                self.last_rx = now;
                self.ping_outstanding = false;
                return Ok(());
            }
            Err(e) => return Err(self.fail(MuxError::Malformed(e))),
        };
        self.last_rx = now;
        self.ping_outstanding = false;
        self.ping_due = None;
        match frame {
            Frame::Ping(n) => self.pong_owed = Some(n),
            Frame::Pong(_) => {}
            Frame::Open { id, kind, priority } => self.on_open(id.0, kind, priority)?,
            Frame::Data { id, payload } => self.on_data(id.0, payload)?,
            Frame::Window { id, increment } => self.on_window(id.0, increment)?,
            Frame::Close { id } => self.on_close(id.0)?,
            Frame::Reset { id, code } => {
                self.check_known(id.0)?;
                if self.remove(id.0).is_some() {
                    self.push_event(Event::Reset { id, code })?;
                }
            }
        }
        Ok(())
    }

    /// A frame for a stream id: it must be one that was opened (live or
    /// gone); ids never opened are a protocol error.
    fn check_known(&mut self, id: u32) -> Result<(), MuxError> {
        let opened = if self.is_local_id(id) {
            // Allocated here, and its open already sent.
            self.next_local.is_none_or(|next| id < next)
                && !self.streams.get(&id).is_some_and(|s| s.open_pending)
        } else {
            id <= self.last_peer
        };
        if opened {
            Ok(())
        } else {
            Err(self.fail(MuxError::Protocol))
        }
    }

    fn on_open(&mut self, id: u32, kind: u8, priority: Priority) -> Result<(), MuxError> {
        if self.is_local_id(id) || id <= self.last_peer {
            return Err(self.fail(MuxError::Protocol));
        }
        self.last_peer = id;
        let code = if !self.cfg.accepted_kinds.contains(kind) {
            Some(RESET_UNKNOWN_KIND)
        } else if self.incoming >= self.cfg.max_incoming_streams {
            Some(RESET_REFUSED)
        } else {
            None
        };
        if let Some(code) = code {
            self.refused += 1;
            return self.push_control(Frame::Reset {
                id: StreamId(id),
                code,
            });
        }
        self.streams
            .insert(id, Stream::new(kind, priority, false, false));
        self.incoming += 1;
        self.grant_extra_stream_window(id);
        self.push_event(Event::Opened {
            id: StreamId(id),
            kind,
            priority,
        })
    }

    fn on_data(&mut self, id: u32, payload: Vec<u8>) -> Result<(), MuxError> {
        self.check_known(id)?;
        let n = u32::try_from(payload.len()).unwrap_or(u32::MAX);
        // Session window first: it counts data of dead streams too.
        if n > self.recv_remaining {
            return Err(self.fail(MuxError::FlowControl));
        }
        self.recv_remaining -= n;
        let Some(s) = self.streams.get_mut(&id) else {
            // Stream already gone (we reset it, or it finished): discard,
            // credit the session window back.
            self.discarded += u64::from(n);
            self.recv_consumed = self.recv_consumed.saturating_add(n);
            self.session_credit_due = true;
            return Ok(());
        };
        if s.remote_fin {
            return Err(self.fail(MuxError::Protocol));
        }
        if n > s.recv_remaining {
            return Err(self.fail(MuxError::FlowControl));
        }
        s.recv_remaining -= n;
        let len = payload.len();
        s.recv_buf.extend(payload);
        self.recv_buffered += len;
        if !s.readable_signalled {
            s.readable_signalled = true;
            self.push_event(Event::Readable(StreamId(id)))?;
        }
        Ok(())
    }

    fn on_window(&mut self, id: u32, inc: u32) -> Result<(), MuxError> {
        if id == 0 {
            return match self.send_window.checked_add(inc) {
                Some(w) if w <= MAX_WINDOW => {
                    self.send_window = w;
                    Ok(())
                }
                _ => Err(self.fail(MuxError::FlowControl)),
            };
        }
        self.check_known(id)?;
        let Some(s) = self.streams.get_mut(&id) else {
            return Ok(());
        };
        match s.send_window.checked_add(inc) {
            Some(w) if w <= MAX_WINDOW => {
                s.send_window = w;
                Ok(())
            }
            _ => Err(self.fail(MuxError::FlowControl)),
        }
    }

    fn on_close(&mut self, id: u32) -> Result<(), MuxError> {
        self.check_known(id)?;
        let Some(s) = self.streams.get_mut(&id) else {
            return Ok(());
        };
        if s.remote_fin {
            return Err(self.fail(MuxError::Protocol));
        }
        s.remote_fin = true;
        self.window_updates.remove(&id);
        if !s.readable_signalled {
            s.readable_signalled = true;
            self.push_event(Event::Readable(StreamId(id)))?;
        }
        Ok(())
    }

    // --- output -----------------------------------------------------------

    /// The next event for the application, if any.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// The next stream message to send, as the body of one session data
    /// message; `None` when nothing may be sent now (idle, or every stream
    /// with data is out of window). Order: pong, ping, session window,
    /// resets, stream windows, opens (in id order), then control-priority
    /// streams round-robin, then bulk streams round-robin.
    #[must_use]
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        if self.error.is_some() {
            return None;
        }
        self.next_message()
    }

    /// The next message: a data frame is encoded straight from the stream's
    /// send buffer (one copy of the payload), any other frame by
    /// [`Frame::encode`].
    fn next_message(&mut self) -> Option<Vec<u8>> {
        if let Some(f) = self.next_control_frame() {
            return Some(f.encode());
        }
        for p in [Priority::Control, Priority::Bulk] {
            if let Some(m) = self.next_stream_message(p) {
                return Some(m);
            }
        }
        None
    }

    fn next_control_frame(&mut self) -> Option<Frame> {
        if let Some(n) = self.pong_owed.take() {
            return Some(Frame::Pong(n));
        }
        if let Some(n) = self.ping_due.take() {
            return Some(Frame::Ping(n));
        }
        if self.recv_consumed > 0
            && (self.recv_consumed >= self.cfg.session_window / 2 || self.session_credit_due)
        {
            self.session_credit_due = false;
            let increment = core::mem::take(&mut self.recv_consumed);
            self.recv_remaining += increment;
            return Some(Frame::Window {
                id: StreamId(0),
                increment,
            });
        }
        if let Some(f) = self.control.pop_front() {
            return Some(f);
        }
        while let Some(id) = self.window_updates.pop_first() {
            if let Some(s) = self.streams.get_mut(&id) {
                let increment = core::mem::take(&mut s.recv_consumed);
                if increment > 0 && !s.remote_fin {
                    s.recv_remaining += increment;
                    return Some(Frame::Window {
                        id: StreamId(id),
                        increment,
                    });
                }
            }
        }
        // Opens go out in id order (the peer requires increasing ids),
        // whatever their priority; they are 9 bytes each.
        if let Some((&id, s)) = self.streams.iter_mut().find(|(_, s)| s.open_pending) {
            s.open_pending = false;
            let f = Frame::Open {
                id: StreamId(id),
                kind: s.kind,
                priority: s.priority,
            };
            self.grant_extra_stream_window(id);
            return Some(f);
        }
        None
    }

    /// Round-robin over the streams of priority `p`, starting after the
    /// last one served.
    fn next_stream_message(&mut self, p: Priority) -> Option<Vec<u8>> {
        let cur = self.cursor[p as usize];
        let session_window = self.send_window;
        let ready = |s: &Stream| {
            s.priority == p
                && !s.open_pending
                && ((!s.send_buf.is_empty() && s.send_window > 0 && session_window > 0)
                    || (s.fin == SendFin::Queued && s.send_buf.is_empty()))
        };
        let id = self
            .streams
            .range(cur.saturating_add(1)..)
            .chain(self.streams.range(..=cur))
            .find(|(_, s)| ready(s))
            .map(|(id, _)| *id)?;
        self.cursor[p as usize] = id;
        let max = self.cfg.max_frame_payload;
        let s = self.streams.get_mut(&id)?;
        let sid = StreamId(id);
        if !s.send_buf.is_empty() {
            let n = s
                .send_buf
                .len()
                .min(max)
                .min(window_len(s.send_window))
                .min(window_len(self.send_window));
            let mut msg = Vec::with_capacity(HEADER_LEN + n);
            msg.extend_from_slice(&[KIND_STREAM, STREAM_VERSION, FT_DATA]);
            msg.extend_from_slice(&id.to_be_bytes());
            let (a, b) = s.send_buf.as_slices();
            let from_a = n.min(a.len());
            msg.extend_from_slice(&a[..from_a]);
            msg.extend_from_slice(&b[..n - from_a]);
            s.send_buf.drain(..n);
            let n32 = u32::try_from(n).unwrap_or(MAX_WINDOW);
            s.send_window -= n32;
            self.send_window -= n32;
            self.send_buffered -= n;
            let writable = s.write_blocked;
            s.write_blocked = false;
            if writable {
                // Bounded: one per stream per drain, and the application
                // asked for it by writing into a full buffer.
                let _ = self.push_event(Event::Writable(sid));
            }
            return Some(msg);
        }
        s.fin = SendFin::Sent;
        if s.done() {
            self.remove(id);
        }
        Some(Frame::Close { id: sid }.encode())
    }

    // --- time -------------------------------------------------------------

    /// When [`Mux::handle_timeout`] must next be called (keepalive or idle
    /// deadline); `None` after failure.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.error.is_some() {
            return None;
        }
        let idle = self.last_rx.saturating_add(self.cfg.idle_timeout);
        if self.ping_outstanding {
            Some(idle)
        } else {
            Some(idle.min(self.last_rx.saturating_add(self.cfg.keepalive)))
        }
    }

    /// Advances the caller's clock: queues a keepalive ping, or fails with
    /// [`MuxError::IdleTimeout`].
    pub fn handle_timeout(&mut self, now: Instant) -> Result<(), MuxError> {
        if let Some(e) = self.error {
            return Err(e);
        }
        let quiet = now.saturating_since(self.last_rx);
        if quiet >= self.cfg.idle_timeout {
            return Err(self.fail(MuxError::IdleTimeout));
        }
        if quiet >= self.cfg.keepalive && !self.ping_outstanding {
            self.ping_outstanding = true;
            self.ping_counter = self.ping_counter.wrapping_add(1);
            self.ping_due = Some(self.ping_counter);
        }
        Ok(())
    }
}

fn window_len(w: u32) -> usize {
    usize::try_from(w).unwrap_or(usize::MAX)
}

#[cfg(test)]
mod tests;
