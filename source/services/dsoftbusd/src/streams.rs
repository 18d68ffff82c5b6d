//! Streams in dsoftbusd (`dsoftbus::stream::Mux`, wire.md §11), used as the
//! stream carrier of file transfers (wire.md §12: one stream of kind `0x40`
//! per transfer, each transfer message preceded by its 2-byte length).
//!
//! Node mode announces `streams/1`. A session gets a [`Streams`] when the
//! peer's announce, as held when the session was established, lists
//! `streams/1` — our transfers to it then go on a stream — or, if it did not,
//! at the peer's first stream message (we announce streams, so we must answer
//! them; our own transfers to that peer stay on data messages).
//!
//! Bounds (besides the mux's own, `StreamConfig`): streams of kind `0x40`
//! only (others are refused by the mux), at most [`MAX_STREAMS`] opened by
//! the peer and 1 by us; per stream a length-prefix decoder of one message
//! (65 520 bytes) and at most [`MAX_STREAM_OUT`] framed bytes waiting for the
//! mux (a stream past it is reset); the session's transmit buffer is fed
//! from the mux only below [`HIGH_WATER`] (the dual-node proof), or in
//! bounded steps of one facade piece ([`Streams::write_step`], node mode).

use alloc::vec;
use alloc::vec::Vec;
use core::cell::RefCell;
use core::fmt;
use core::time::Duration;

use dsoftbus::frame::{encode_frame, FrameDecoder};
use dsoftbus::node::LogLimiter;
use dsoftbus::stream::{
    self, Event, KindSet, Mux, MuxError, Priority, Read, StreamConfig, StreamError, StreamId,
};
use dsoftbus::transfer::{self, wire::MAX_MESSAGE_LEN, Reason};
use dsoftbus::{Connection, DeviceId, Instant};

use crate::files::{Files, Outgoing, Sink};
use crate::link::{Link, LinkError, Socket, WRITE_PIECE};

/// Streams the peer may have open at once (the mux refuses more).
pub const MAX_STREAMS: usize = stream::MIN_INCOMING_STREAMS;
/// Framed transfer bytes a stream may hold waiting for the mux (the peer's
/// stream window); past it the stream is reset.
pub const MAX_STREAM_OUT: usize = 4 * (MAX_MESSAGE_LEN + 2);
/// Stream messages are moved into the session's transmit buffer only while
/// it holds less than this (one more message always fits under the
/// connection's 256 KiB bound).
pub const HIGH_WATER: usize = 128 * 1024;
/// Receive window we grant each stream once it is open (the first 256 KiB
/// are normative). Every received byte is read at once (into the length
/// decoder and on to the transfer), so the mux never holds more than one
/// message of a stream; the window only sets how much may be in flight.
pub const STREAM_WINDOW: u32 = 1 << 20;
/// Receive window we grant the session (all streams), likewise.
pub const SESSION_WINDOW: u32 = 2 << 20;
/// The mux's idle timeout. Liveness is the session's business (TCP and the
/// peer's keepalive); this only ends a mux nobody talks to.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(600);

/// The mux configuration of every session.
pub fn config() -> StreamConfig {
    StreamConfig {
        max_incoming_streams: MAX_STREAMS,
        max_outgoing_streams: 1,
        max_frame_payload: stream::MAX_DATA_PAYLOAD,
        stream_window: STREAM_WINDOW,
        session_window: SESSION_WINDOW,
        accepted_kinds: KindSet::only(&[transfer::STREAM_KIND]),
        idle_timeout: IDLE_TIMEOUT,
        ..StreamConfig::default()
    }
}

/// Why a session's streams stopped it.
#[derive(Debug)]
pub(crate) enum Stop {
    /// The mux failed (a protocol or flow-control error of the peer).
    Mux(MuxError),
    /// The session failed.
    Link(LinkError),
}

impl fmt::Display for Stop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Stop::Mux(e) => write!(f, "streams: {e}"),
            Stop::Link(e) => write!(f, "{e}"),
        }
    }
}

impl From<LinkError> for Stop {
    fn from(e: LinkError) -> Self {
        Stop::Link(e)
    }
}

impl From<MuxError> for Stop {
    fn from(e: MuxError) -> Self {
        Stop::Mux(e)
    }
}

/// Transfer messages for a stream: each preceded by its length.
struct Framed<'a>(&'a mut Vec<u8>);

impl Sink for Framed<'_> {
    fn send(&mut self, msg: &[u8]) -> Result<(), LinkError> {
        // Transfer messages are at most 65 518 bytes: always encodable.
        let _ = encode_frame(msg, self.0);
        Ok(())
    }
}

/// One transfer stream.
struct Chan {
    id: StreamId,
    dec: FrameDecoder,
    /// Framed messages not yet taken by the mux.
    out: Vec<u8>,
    /// Our outgoing transfer's stream.
    mine: bool,
    /// A message arrived (an incoming transfer started on it).
    started: bool,
    /// Our half is finished.
    finished: bool,
    /// The peer's half is finished and read.
    fin_read: bool,
}

impl Chan {
    fn new(id: StreamId, mine: bool) -> Self {
        Chan {
            id,
            dec: FrameDecoder::new(MAX_MESSAGE_LEN),
            out: Vec::new(),
            mine,
            started: false,
            finished: false,
            fin_read: false,
        }
    }
}

/// The streams of one session.
pub(crate) struct Streams {
    mux: Mux,
    conn: u64,
    chans: Vec<Chan>,
    scratch: Vec<u8>,
}

impl Streams {
    /// Streams for session `conn`; `initiator`: we dialled it.
    pub(crate) fn new(conn: u64, initiator: bool, at: Instant) -> Self {
        Streams {
            mux: Mux::new(config(), initiator, at),
            conn,
            chans: Vec::new(),
            scratch: vec![0; MAX_MESSAGE_LEN + 2],
        }
    }

    /// Open the stream of our outgoing transfer.
    pub(crate) fn open(&mut self) -> Result<StreamId, StreamError> {
        let id = self.mux.open(transfer::STREAM_KIND, Priority::Bulk)?;
        self.chans.push(Chan::new(id, true));
        Ok(id)
    }

    /// A stream message of the session (first byte `0x30`).
    pub(crate) fn handle(
        &mut self,
        msg: &[u8],
        files: &Files,
        peer: &DeviceId,
        out: &mut Option<Outgoing>,
        log: &RefCell<LogLimiter>,
        at: Instant,
    ) -> Result<(), Stop> {
        self.mux.handle_input(msg, at)?;
        while let Some(ev) = self.mux.poll_event() {
            match ev {
                Event::Opened { id, kind, .. } => {
                    let ours = self.chans.iter().filter(|c| !c.mine).count();
                    if kind == transfer::STREAM_KIND && ours < MAX_STREAMS {
                        self.chans.push(Chan::new(id, false));
                    } else {
                        let _ = self.mux.reset(id, stream::RESET_REFUSED);
                    }
                }
                Event::Readable(id) => self.read(id, files, peer, out, log, at),
                Event::Writable(_) => {}
                Event::Reset { id, .. } => self.gone(id, files, out, log, at),
                Event::Failed(e) => return Err(Stop::Mux(e)),
            }
        }
        Ok(())
    }

    /// Read stream `id` until it blocks, handing each transfer message on.
    fn read(
        &mut self,
        id: StreamId,
        files: &Files,
        peer: &DeviceId,
        out: &mut Option<Outgoing>,
        log: &RefCell<LogLimiter>,
        at: Instant,
    ) {
        let Some(i) = self.chans.iter().position(|c| c.id == id) else {
            return;
        };
        loop {
            let c = &mut self.chans[i];
            let room = c.dec.space().min(self.scratch.len());
            if room == 0 {
                break;
            }
            let n = match self.mux.read(id, &mut self.scratch[..room]) {
                Ok(Read::Bytes(n)) if n > 0 => n,
                Ok(Read::Fin) => {
                    c.fin_read = true;
                    break;
                }
                _ => break,
            };
            let mut bad = c.dec.feed(&self.scratch[..n]).is_err();
            loop {
                let c = &mut self.chans[i];
                let m = match c.dec.next_frame() {
                    Ok(Some(m)) => m,
                    Ok(None) => break,
                    Err(_) => {
                        bad = true;
                        break;
                    }
                };
                c.started = true;
                if c.mine {
                    if let Some(o) = out.as_mut().filter(|o| o.stream() == Some(id)) {
                        o.handle(&m);
                    }
                } else {
                    let route = (self.conn, id.0);
                    let mut sink = Framed(&mut c.out);
                    if !matches!(
                        files.on_data(&mut sink, route, peer, &m, None, log, at),
                        Ok(true)
                    ) {
                        bad = true; // not a transfer message on a transfer stream
                        break;
                    }
                }
            }
            if bad {
                let _ = self.mux.reset(id, stream::RESET_CANCEL);
                self.gone(id, files, out, log, at);
                return;
            }
        }
    }

    /// Stream `id` is gone (reset by either side): its transfer ends.
    fn gone(
        &mut self,
        id: StreamId,
        files: &Files,
        out: &mut Option<Outgoing>,
        log: &RefCell<LogLimiter>,
        at: Instant,
    ) {
        let Some(i) = self.chans.iter().position(|c| c.id == id) else {
            return;
        };
        let c = self.chans.remove(i);
        if c.mine {
            if let Some(o) = out.as_mut().filter(|o| o.stream() == Some(id)) {
                o.cancel(Reason::Io);
            }
        } else {
            files.route_gone(self.conn, Some(id.0), log, at);
        }
    }

    /// Move what the transfers on streams have to say into the mux, finish
    /// the streams whose transfer ended, run the mux's timers.
    pub(crate) fn service(
        &mut self,
        files: &Files,
        out: &mut Option<Outgoing>,
        log: &RefCell<LogLimiter>,
        at: Instant,
    ) -> Result<(), Stop> {
        let mut reset = Vec::new();
        for c in self.chans.iter_mut() {
            let ended = if c.mine {
                match out.as_mut().filter(|o| o.stream() == Some(c.id)) {
                    Some(o) => {
                        o.frame_into(&mut c.out);
                        false
                    }
                    None => true,
                }
            } else {
                let route = (self.conn, c.id.0);
                files.transmit(&mut Framed(&mut c.out), route)?;
                c.started && !files.on_route(route)
            };
            if !c.out.is_empty() {
                match self.mux.write(c.id, &c.out) {
                    Ok(n) => {
                        c.out.drain(..n);
                    }
                    Err(_) => c.out.clear(),
                }
            }
            if c.out.len() > MAX_STREAM_OUT {
                reset.push(c.id);
            } else if ended && c.out.is_empty() && !c.finished {
                c.finished = true;
                let _ = self.mux.finish(c.id);
            }
        }
        for id in reset {
            let _ = self.mux.reset(id, stream::RESET_CANCEL);
            self.gone(id, files, out, log, at);
        }
        self.chans.retain(|c| !(c.finished && c.fin_read));
        if self.mux.poll_timeout().is_some_and(|t| t <= at) {
            self.mux.handle_timeout(at)?;
        }
        Ok(())
    }

    /// Our outgoing transfer's stream: frame its messages and hand them to
    /// the mux. True if the mux took everything (room for more data).
    pub(crate) fn write_mine(&mut self, o: &mut Outgoing) -> bool {
        let Some(c) = self.chans.iter_mut().find(|c| Some(c.id) == o.stream()) else {
            return false;
        };
        o.frame_into(&mut c.out);
        if let Ok(n) = self.mux.write(c.id, &c.out) {
            c.out.drain(..n);
        }
        c.out.is_empty()
    }

    /// Move stream messages into the session's transmit buffer while it is
    /// below [`HIGH_WATER`]; how many were moved.
    pub(crate) fn pull(&mut self, conn: &mut Connection) -> Result<usize, LinkError> {
        self.pull_below(conn, HIGH_WATER)
    }

    /// One bounded step of the mux's output: messages into the session's
    /// transmit buffer while it holds less than one facade piece, then one
    /// piece ([`WRITE_PIECE`]) written. True if output is left for the next
    /// step. The session loop takes its ready input between steps, so a
    /// window's worth of stream data (up to 256 KiB: about 60 ms of TCG
    /// time) never goes out ahead of a pong that has arrived.
    pub(crate) async fn write_step<S: Socket>(
        &mut self,
        link: &mut Link<S>,
    ) -> Result<bool, LinkError> {
        let moved = self.pull_below(&mut link.conn, WRITE_PIECE)?;
        let wrote = link.write_piece().await?;
        Ok(moved > 0 || wrote || !link.conn.transmit_buf().is_empty())
    }

    /// Move stream messages into the session's transmit buffer while it
    /// holds less than `mark` bytes (1: one message, and only into an empty
    /// buffer); how many were moved.
    pub(crate) fn pull_below(
        &mut self,
        conn: &mut Connection,
        mark: usize,
    ) -> Result<usize, LinkError> {
        let mut n = 0;
        while conn.transmit_buf().len() < mark {
            let Some(m) = self.mux.poll_transmit() else {
                break;
            };
            conn.send_data(&m).map_err(LinkError::Conn)?;
            n += 1;
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dsoftbus::node::consent::AcceptPolicy;
    use dsoftbus::transfer::{Outcome, Side};

    use crate::fixtures::id;

    fn t() -> Instant {
        Instant::from_millis(0)
    }

    impl Streams {
        /// What the mux would put in the session's data messages.
        fn take(&mut self) -> Vec<Vec<u8>> {
            core::iter::from_fn(|| self.mux.poll_transmit()).collect()
        }
    }

    /// `a` sends `bytes` to `b`'s node (policy `policy`) on a stream; both
    /// muxes talk through in-memory queues. The sender's outcome, and b's
    /// node.
    fn over_a_stream(policy: AcceptPolicy, bytes: u64) -> (Outcome, Files) {
        let files = Files::new(policy);
        let none = Files::new(AcceptPolicy::None);
        let lg = RefCell::new(LogLimiter::default());
        let (pa, pb) = (id("a"), id("b"));
        let mut a = Streams::new(1, true, t());
        let mut b = Streams::new(1, false, t());
        let mut o = Some(Outgoing::generated(1, &pa, &pb, bytes).unwrap());
        let sid = a.open().unwrap();
        o.as_mut().unwrap().set_stream(sid);
        let mut no_out = None;
        for _ in 0..10_000 {
            let out = o.as_mut().unwrap();
            while a.write_mine(out) && out.push_next() {}
            for m in a.take() {
                b.handle(&m, &files, &pa, &mut no_out, &lg, t()).unwrap();
            }
            b.service(&files, &mut no_out, &lg, t()).unwrap();
            for m in b.take() {
                a.handle(&m, &none, &pb, &mut o, &lg, t()).unwrap();
            }
            a.service(&none, &mut o, &lg, t()).unwrap();
            if let Some(end) = o.as_mut().unwrap().outcome() {
                return (end, files);
            }
        }
        panic!("stalled");
    }

    #[test]
    fn a_transfer_on_a_stream_is_verified_and_stored() {
        let (end, files) = over_a_stream(AcceptPolicy::Any, 700_001);
        assert_eq!(end, Outcome::Done);
        assert_eq!(files.inbox_usage(), (1, 700_001, 0, 0));
    }

    #[test]
    fn a_denied_transfer_on_a_stream_stores_nothing() {
        let (end, files) = over_a_stream(AcceptPolicy::None, 1000);
        assert_eq!(
            end,
            Outcome::Denied {
                by: Side::Peer,
                reason: Reason::Declined
            }
        );
        assert_eq!(files.inbox_usage(), (0, 0, 0, 0));
    }

    #[test]
    fn other_kinds_and_garbage_streams_are_refused_or_reset() {
        let files = Files::new(AcceptPolicy::Any);
        let lg = RefCell::new(LogLimiter::default());
        let mut a = Mux::new(StreamConfig::default(), true, t());
        let mut b = Streams::new(1, false, t());
        let mut out = None;
        // A stream of another kind: refused by the mux.
        let other = a.open(0x41, Priority::Bulk).unwrap();
        // A transfer stream carrying a length-prefixed non-transfer message.
        let junk = a.open(transfer::STREAM_KIND, Priority::Bulk).unwrap();
        let mut bytes = Vec::new();
        encode_frame(&[0x20, 1, 2, 3], &mut bytes).unwrap();
        assert_eq!(a.write(junk, &bytes), Ok(bytes.len()));
        while let Some(m) = a.poll_transmit() {
            b.handle(&m, &files, &id("a"), &mut out, &lg, t()).unwrap();
        }
        b.service(&files, &mut out, &lg, t()).unwrap();
        assert!(b.chans.is_empty());
        for m in b.take() {
            a.handle_input(&m, t()).unwrap();
        }
        let resets: Vec<_> = core::iter::from_fn(|| a.poll_event())
            .filter_map(|e| match e {
                Event::Reset { id, .. } => Some(id),
                _ => None,
            })
            .collect();
        assert_eq!(resets, [other, junk]);
    }
}
