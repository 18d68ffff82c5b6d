//! One TCP stream from first byte to close, and the file sender.
//!
//! A session task owns its stream and its `dsoftbus::Connection`. It reads
//! at most `recv_space()` bytes at a time, writes what the connection queues,
//! and takes commands (ping, application data, close) only while the
//! connection has outbound room — so every buffer stays bounded and a slow
//! peer slows its senders instead of growing memory.
//!
//! "Established" differs by side (see docs/distributed/dsoftbus-os.md): the
//! listener has checked the dialer's identity binding when the handshake
//! completes; the dialer only knows the listener accepted it once an
//! authenticated frame arrives from it, so it pings at once and registers the
//! session when the first authenticated frame (the pong) comes back.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant as StdInstant};

use dsoftbus::connection::MAX_OUTBOUND;
use dsoftbus::frame::FrameDecoder;
use dsoftbus::stream::{self, KindSet, Mux, MuxError, Priority, Read, StreamConfig, StreamId};
use dsoftbus::transfer::{wire, Outcome, Side};
use dsoftbus::{
    AuthError, ConnError, Connection, DeviceId, Event, GatedError, IdentityBindings, PeerTarget,
};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, watch, Notify};
use tracing::{debug, info, warn};

use crate::control::{write_resp, Response};
use crate::exit::{FAILURE, NO_PEER, TIMEOUT, TRANSFER};
use crate::identity::fingerprint;
use crate::shared::{
    bump, suppressed, Bindings, HalfOpen, LogKind, Peers, SessionCmd, SessionCtx, SessionHandle,
};
use crate::transfer::{self, reason_text, Carrier, Engine, SendProgress, SendReq};

/// Keepalive ping interval on an idle-or-not session.
pub const KEEPALIVE: Duration = Duration::from_secs(5);
/// A session that has received nothing for this long is dead.
pub const DEAD_AFTER: Duration = Duration::from_secs(20);
/// Most user pings waiting for their pong, per session.
pub const MAX_PENDING_PINGS: usize = 32;
/// Commands queued per session.
pub const CMD_QUEUE: usize = 32;
/// Most bytes of application replies (ACCEPT, REJECT, ACK, DONE) waiting for
/// room in the connection's outbound buffer. An honest peer reads what we
/// send, so this stays near zero; a peer over it is disconnected.
pub const MAX_STASH_BYTES: usize = 256 * 1024;
/// Most bytes the connection may queue beyond its own bound: pongs the core
/// queues for a peer that pings but never reads.
pub const MAX_TRANSMIT_BYTES: usize = MAX_OUTBOUND + 64 * 1024;
/// A peer that takes none of our bytes for this long while we have some to
/// write (and so stop reading it) is disconnected as not reading.
pub const WRITE_STALL: Duration = Duration::from_secs(10);
/// Most bytes of transfer messages waiting for room in one stream's send
/// buffer (replies are small; a sender only adds data to an empty queue).
pub const MAX_STREAM_PENDING: usize = 256 * 1024;
/// How long `send` waits for the receiver to accept or deny (an `ask`
/// receiver holds offers until its user answers or the offer expires).
pub const OFFER_WAIT: Duration = Duration::from_secs(15 * 60);
/// An accepted send that makes no progress for this long fails.
pub const SEND_INACTIVITY: Duration = Duration::from_secs(60);
/// A DATA message's 2-byte stream framing and its header.
const FRAMED_DATA_HEADER: usize = 2 + wire::DATA_HEADER_LEN;
/// A transfer stream's send buffer in the mux (its default). A whole
/// framed chunk must fit in it: `pump_sends` writes a chunk only when it
/// does, so a smaller buffer would stall every send.
const STREAM_SEND_BUFFER: usize = 64 * 1024;
const _: () = assert!(transfer::CHUNK + FRAMED_DATA_HEADER <= STREAM_SEND_BUFFER);
/// Most bytes read from a transfer stream at a time.
const STREAM_READ: usize = 64 * 1024;
/// How often idle incoming transfers are looked for.
const TRANSFER_TICK: Duration = Duration::from_millis(500);

const KEEPALIVE_BIT: u64 = 1 << 63;
const CONFIRM_NONCE: u64 = KEEPALIVE_BIT | (1 << 62);

enum End {
    Eof,
    Io(std::io::Error),
    Conn(ConnError),
    Dead,
    Refused(String),
    /// The pre-DH handshake limiter refused frame 1 (no DH was done).
    Limited(dsoftbus::ratelimit::Limited),
    /// Fair admission gave this half-open connection's slot to another source.
    Evicted,
    /// The peer does not read what we send (outbound over its bound).
    Overflow(&'static str),
    /// The stream multiplexer failed (wire.md §11.4).
    Mux(MuxError),
    Shutdown,
}

struct Ctx {
    cx: SessionCtx,
    conn: Connection,
    addr: SocketAddr,
    dialed: Option<PeerTarget>,
    peer: Option<DeviceId>,
    confirmed: bool,
    /// App messages the connection had no room for (small control messages),
    /// at most [`MAX_STASH_BYTES`] in total.
    stash: VecDeque<Vec<u8>>,
    stash_bytes: usize,
    pings: HashMap<u64, (StdInstant, oneshot::Sender<Duration>)>,
    /// File transfers of this session.
    xfer: Engine,
    /// The peer's announce listed `streams/1` when the session came up:
    /// transfers go on streams (wire.md §11.2).
    streams_ok: bool,
    /// Stream state, created at confirmation (streams_ok) or by the first
    /// stream message from the peer.
    mux: Option<Mux>,
    /// Per transfer stream: the 2-byte-length message decoder.
    decoders: HashMap<StreamId, FrameDecoder>,
    /// Per stream: framed bytes the mux did not take yet
    /// (≤ [`MAX_STREAM_PENDING`]).
    pending: HashMap<StreamId, Vec<u8>>,
    /// Streams to finish once their pending bytes are written.
    closing: HashSet<StreamId>,
    conn_id: u64,
    cmd_tx: mpsc::Sender<SessionCmd>,
    permit: Option<HalfOpen>,
    keepalive_seq: u64,
}

impl Ctx {
    fn role(&self) -> &'static str {
        if self.dialed.is_some() {
            "dialer"
        } else {
            "listener"
        }
    }

    fn peer_name(&self) -> String {
        self.peer
            .as_ref()
            .or(self.conn.peer_hint())
            .map(|p| p.log_safe().to_string())
            .unwrap_or_else(|| "?".into())
    }

    fn app_send(&mut self, msg: Vec<u8>) -> Result<(), End> {
        if self.stash.is_empty() {
            match self.conn.send_data(&msg) {
                Ok(()) => return Ok(()),
                Err(ConnError::WouldBlock) => {}
                Err(e) => return Err(End::Conn(e)),
            }
        }
        if self.stash_bytes + msg.len() > MAX_STASH_BYTES {
            return Err(End::Overflow("reply queue"));
        }
        self.stash_bytes += msg.len();
        self.stash.push_back(msg);
        Ok(())
    }

    fn flush_stash(&mut self) -> Result<(), End> {
        while let Some(m) = self.stash.pop_front() {
            match self.conn.send_data(&m) {
                Ok(()) => self.stash_bytes -= m.len(),
                Err(ConnError::WouldBlock) => {
                    self.stash.push_front(m);
                    break;
                }
                Err(e) => return Err(End::Conn(e)),
            }
        }
        Ok(())
    }

    /// The peer is authenticated and accepted us: make the session visible.
    fn confirm(&mut self) -> Result<(), End> {
        if self.confirmed {
            return Ok(());
        }
        let Some(peer) = self.peer.clone() else {
            return Ok(());
        };
        self.confirmed = true;
        self.permit = None;
        let cx = self.cx.clone();
        let mut guard = cx.lock();
        let st = &mut *guard;
        let key = match &self.dialed {
            Some(t) => Some(t.key),
            None => st.bindings(cx.trust_mode).bound_key(&peer),
        };
        let Some(key) = key else {
            return Err(End::Refused("binding vanished".into()));
        };
        // Session caps (dsoftbus::node::sessions): one id per key, per
        // source, capacity reserved for peers pinned before this session.
        let pinned_before = st.known.get(&peer) == Some(&key);
        // Hold slots back only for pinned peers that have no session now.
        let waiting = st
            .known
            .iter()
            .filter(|(id, _)| **id != peer && !st.sessions.contains_key(*id))
            .count();
        st.caps.set_pinned_waiting(waiting);
        let admit = match st
            .caps
            .admit(self.conn_id, &peer, &key, self.addr.ip(), pinned_before)
        {
            Ok(a) => a,
            Err(r) => {
                st.refuse(&peer, format!("session refused: {r}"), Some(key));
                bump(&cx.counters.sessions_refused);
                return Err(End::Refused(r.to_string()));
            }
        };
        for old in st.sessions.values() {
            if old.conn_id != self.conn_id && admit.replaces.contains(&old.conn_id) {
                if let Some(n) = cx.limiter.allow(LogKind::SessionReplaced) {
                    debug!(
                        "peer={peer}: a newer session replaces the old one{}",
                        suppressed(n),
                        peer = peer.log_safe()
                    );
                }
                let _ = old.cmd.try_send(SessionCmd::Close);
            }
        }
        // Decided once per session from the peer's announce: streams
        // (wire.md §11.2) and the transfer version to offer (§12.1).
        let services = st.table.get(&peer).map(|e| e.services()).unwrap_or(&[]);
        let streams_ok = stream::peer_supports_streams(services);
        let transfer = dsoftbus::transfer::version_for(services);
        st.sessions.insert(
            peer.clone(),
            SessionHandle {
                conn_id: self.conn_id,
                cmd: self.cmd_tx.clone(),
                addr: self.addr,
                key,
                transfer,
            },
        );
        st.table.set_session(&peer, true);
        st.refusals.remove(&peer);
        let now = cx.clock.now();
        st.candidates.succeeded(&peer, self.addr, now, 0);
        let mut pinned_now = false;
        if pinned_before {
            st.known.touch(&peer);
            st.known_touched = true;
        } else if st.known.get(&peer).is_none() && cx.trust_mode.allows_unpinned() {
            // Trust on first use, through the pin policy: automatic pins are
            // rate-limited and capped per source; a refusal leaves the
            // session up but unpinned (the table binding still holds).
            match st.known.auto_pin(&peer, key, self.addr.ip()) {
                Ok(p) => {
                    if let Some(e) = p.evicted {
                        if let Some(n) = cx.limiter.allow(LogKind::PinEvicted) {
                            debug!("automatic pin of {e} dropped to make room{}", suppressed(n));
                        }
                    }
                    match st.known.save() {
                        Ok(()) => pinned_now = true,
                        Err(e) => {
                            if let Some(n) = cx.limiter.allow(LogKind::PinSave) {
                                warn!("cannot save known peers: {e:#}{}", suppressed(n));
                            }
                        }
                    }
                }
                Err(e) => {
                    bump(&cx.counters.auto_pins_refused);
                    if let Some(n) = cx.limiter.allow(LogKind::AutoPin) {
                        info!(
                            "not pinning peer={peer} addr={}: {e}{}",
                            self.addr,
                            suppressed(n),
                            peer = peer.log_safe()
                        );
                    }
                }
            }
        }
        drop(guard);
        self.streams_ok = streams_ok;
        self.xfer.peer = peer.to_string();
        self.xfer.peer_id = Some(peer.clone());
        if streams_ok {
            self.ensure_mux();
        }
        bump(&cx.counters.sessions_opened);
        if let Some(n) = cx.limiter.allow(LogKind::AuthOk) {
            info!(
                "auth ok peer={peer} addr={} role={}{}{}",
                self.addr,
                self.role(),
                if pinned_now {
                    " (first sight: key pinned)"
                } else {
                    ""
                },
                suppressed(n),
                peer = peer.log_safe()
            );
        }
        Ok(())
    }

    fn on_event(&mut self, ev: Event) -> Result<(), End> {
        match ev {
            Event::Established { peer } => {
                if let Some(n) = self.cx.limiter.allow(LogKind::IdentityBound) {
                    info!(
                        "identity bound peer={peer} addr={} role={}{}",
                        self.addr,
                        self.role(),
                        suppressed(n),
                        peer = peer.log_safe()
                    );
                }
                self.peer = Some(peer);
                if self.dialed.is_some() {
                    // Our proof of acceptance is the answer to this ping.
                    let _ = self.conn.send_ping(CONFIRM_NONCE);
                }
            }
            Event::Ping(_) | Event::Closed | Event::Data(_) => {}
            Event::Pong(n) => {
                if let Some((t, reply)) = self.pings.remove(&n) {
                    let _ = reply.send(t.elapsed());
                }
            }
        }
        Ok(())
    }

    /// Decodes bytes read before the session is confirmed: mac1 first, then
    /// the per-source and global handshake buckets, then DH.
    fn handle_gated(&mut self, input: &[u8]) -> Result<(), End> {
        let now = self.cx.clock.now();
        let mut guard = self.cx.lock();
        let st = &mut *guard;
        let b = Bindings {
            table: &st.table,
            known: &st.known,
            mode: self.cx.trust_mode,
        };
        let mut gate = st.admission.gate(self.addr.ip());
        match self.conn.handle_input_gated(input, now, &b, &mut gate) {
            Ok(_) => Ok(()),
            Err(GatedError::Conn(e)) => Err(End::Conn(e)),
            Err(GatedError::Limited(l)) => Err(End::Limited(l)),
        }
    }

    /// Decodes `n` bytes read into the connection's receive buffer (once
    /// confirmed). Stream messages go into the mux where they lie, with no
    /// copy into an [`Event::Data`]; other data messages, and stream
    /// messages behind one of them (order kept), are copied out for
    /// [`on_data`](Self::on_data).
    async fn commit_recv(&mut self, n: usize) -> Result<(), End> {
        let now = self.cx.clock.now();
        let mut others: Vec<Vec<u8>> = Vec::new();
        let mut mux_err = None;
        let res = {
            let guard = self.cx.lock();
            let b = Bindings {
                table: &guard.table,
                known: &guard.known,
                mode: self.cx.trust_mode,
            };
            let mux = &mut self.mux;
            self.conn
                .commit_recv_with(n, now, &b, |d| match mux.as_mut() {
                    Some(m) if others.is_empty() && d.first() == Some(&stream::KIND_STREAM) => {
                        if mux_err.is_none() {
                            mux_err = m.handle_input(d, now).err();
                        }
                    }
                    _ => others.push(d.to_vec()),
                })
        };
        res.map_err(End::Conn)?;
        if let Some(e) = mux_err {
            return Err(End::Mux(e));
        }
        self.mux_events().await?;
        for d in others {
            self.on_data(d).await?;
        }
        self.flush_xfer()
    }

    /// One authenticated data message, by its first byte: remote calls
    /// (0x20), streams (0x30), file transfer (0x40–0x4f).
    async fn on_data(&mut self, d: Vec<u8>) -> Result<(), End> {
        match d.first().copied() {
            Some(dsoftbus::rpc::KIND_RPC) => {
                if let crate::remote::OnData::Send(r) =
                    crate::remote::on_data(&self.cx.remote, &self.conn, &d)
                {
                    self.app_send(r)?;
                }
            }
            Some(stream::KIND_STREAM) => {
                let now = self.cx.clock.now();
                let mux = self.ensure_mux();
                mux.handle_input(&d, now).map_err(End::Mux)?;
                self.mux_events().await?;
            }
            Some(k) if dsoftbus::transfer::wire::KIND_RANGE.contains(&k) => {
                self.xfer.on_message(None, &d).await;
            }
            _ => {
                if let Some(n) = self.cx.limiter.allow(LogKind::AppDecode) {
                    debug!(
                        "peer={}: ignoring a data message of unknown kind{}",
                        self.peer_name(),
                        suppressed(n)
                    );
                }
            }
        }
        self.flush_xfer()
    }

    fn ensure_mux(&mut self) -> &mut Mux {
        let now = self.cx.clock.now();
        let initiator = self.dialed.is_some();
        self.mux.get_or_insert_with(|| {
            let cfg = StreamConfig {
                accepted_kinds: KindSet::only(&[transfer::STREAM_KIND]),
                // Whole-message frames: a 60 KiB chunk is one sealed
                // session message instead of four (15 % less CPU per byte
                // for both daemons, bench-send); a control frame waits at
                // most one such frame (about 60 µs here).
                max_frame_payload: dsoftbus::stream::MAX_DATA_PAYLOAD,
                send_buffer: STREAM_SEND_BUFFER,
                ..StreamConfig::default()
            };
            Mux::new(cfg, initiator, now)
        })
    }

    /// Handles what the mux reports: transfer streams opened by the peer,
    /// readable and writable streams, resets.
    async fn mux_events(&mut self) -> Result<(), End> {
        loop {
            let Some(ev) = self.mux.as_mut().and_then(|m| m.poll_event()) else {
                return Ok(());
            };
            match ev {
                stream::Event::Opened { id, .. } => {
                    // Only kind 0x40 is accepted (the mux refuses others).
                    self.decoders
                        .insert(id, FrameDecoder::new(dsoftbus::frame::MAX_FRAME_LEN));
                }
                stream::Event::Readable(id) => self.read_stream(id).await?,
                stream::Event::Writable(id) => self.flush_stream(id)?,
                stream::Event::Reset { id, .. } => {
                    self.decoders.remove(&id);
                    self.pending.remove(&id);
                    self.closing.remove(&id);
                    self.xfer.carrier_gone(Carrier::Stream(id)).await;
                }
                stream::Event::Failed(e) => return Err(End::Mux(e)),
            }
        }
    }

    /// Reads a transfer stream and hands its messages to the transfers:
    /// the mux reads straight into the stream's frame decoder, and each
    /// message is handed over where it lies (no copy per message).
    async fn read_stream(&mut self, id: StreamId) -> Result<(), End> {
        loop {
            let Some(mux) = self.mux.as_mut() else {
                return Ok(());
            };
            let dec = self
                .decoders
                .entry(id)
                .or_insert_with(|| FrameDecoder::new(dsoftbus::frame::MAX_FRAME_LEN));
            // Every complete frame was taken below, so there is room.
            let r = match mux.read(id, dec.spare_mut(STREAM_READ)) {
                Ok(r) => r,
                Err(_) => return Ok(()),
            };
            let mut bad = match r {
                Read::Bytes(0) => return Ok(()),
                Read::Bytes(n) => dec.commit(n).is_err(),
                Read::WouldBlock => return Ok(()),
                Read::Fin => {
                    self.decoders.remove(&id);
                    self.xfer.carrier_gone(Carrier::Stream(id)).await;
                    return Ok(());
                }
            };
            while !bad {
                match dec.next_frame_ref() {
                    Ok(Some(m)) => self.xfer.on_message(Some(id), m).await,
                    Ok(None) => break,
                    Err(_) => bad = true,
                }
            }
            self.flush_xfer()?;
            if bad {
                // Framing broken: that stream's transfer ends.
                self.decoders.remove(&id);
                if let Some(m) = self.mux.as_mut() {
                    let _ = m.reset(id, stream::RESET_CANCEL);
                }
                self.xfer.carrier_gone(Carrier::Stream(id)).await;
                return Ok(());
            }
        }
    }

    /// Queues a transfer message on its carrier.
    fn send_on(&mut self, c: Carrier, msg: Vec<u8>) -> Result<(), End> {
        match c {
            Carrier::Data(_) => self.app_send(msg),
            Carrier::Stream(id) => {
                if !self.mux.as_ref().is_some_and(|m| m.is_open(id)) {
                    return Ok(()); // the stream is gone: so is its transfer
                }
                let p = self.pending.entry(id).or_default();
                if dsoftbus::frame::encode_frame(&msg, p).is_err() {
                    return Ok(()); // cannot happen: messages fit a frame
                }
                if p.len() > MAX_STREAM_PENDING {
                    return Err(End::Overflow("transfer stream queue"));
                }
                self.flush_stream(id)
            }
        }
    }

    /// Moves pending framed bytes of `id` into the mux.
    fn flush_stream(&mut self, id: StreamId) -> Result<(), End> {
        let Some(mux) = self.mux.as_mut() else {
            return Ok(());
        };
        if let Some(p) = self.pending.get_mut(&id) {
            match mux.write(id, p) {
                Ok(n) => {
                    p.drain(..n);
                }
                Err(_) => p.clear(),
            }
            if !p.is_empty() {
                return Ok(());
            }
            self.pending.remove(&id);
        }
        if self.closing.remove(&id) {
            let _ = mux.finish(id);
        }
        Ok(())
    }

    /// Sends what the transfers queued; closes the streams of ended ones.
    fn flush_xfer(&mut self) -> Result<(), End> {
        while let Some((c, m)) = self.xfer.out.pop_front() {
            self.send_on(c, m)?;
        }
        for c in std::mem::take(&mut self.xfer.ended) {
            if let Carrier::Stream(id) = c {
                self.closing.insert(id);
                self.flush_stream(id)?;
            }
        }
        Ok(())
    }

    fn has_room(&self, c: Carrier) -> bool {
        let conn_room = self.stash.is_empty() && self.conn.transmit_buf().len() < MAX_OUTBOUND / 2;
        match c {
            Carrier::Data(_) => conn_room,
            Carrier::Stream(id) => !self.pending.contains_key(&id),
        }
    }

    /// Feeds outgoing transfers file bytes while their carriers have room.
    /// On a stream with nothing queued, each chunk goes into the mux from
    /// the reader's buffer with its 2-byte length and DATA header in front
    /// (no message built, no framed copy kept).
    async fn pump_sends(&mut self) -> Result<(), End> {
        for c in self.xfer.outgoing() {
            while self.has_room(c) {
                let moved = match (c, self.mux.as_mut()) {
                    (Carrier::Stream(id), Some(mux)) => {
                        let room = mux.writable(id).saturating_sub(FRAMED_DATA_HEADER);
                        let mut whole = true;
                        let mut write = |h: &[u8], d: &[u8]| {
                            let len = u16::try_from(h.len() + d.len()).unwrap_or(u16::MAX);
                            // `room` was checked: each write is taken whole.
                            for part in [&len.to_be_bytes()[..], h, d] {
                                whole &= mux.write(id, part).is_ok_and(|n| n == part.len());
                            }
                        };
                        let sink = transfer::Sink::Direct {
                            room: room.min(dsoftbus::frame::MAX_FRAME_LEN - wire::DATA_HEADER_LEN),
                            write: &mut write,
                        };
                        let moved = self.xfer.pump(c, sink);
                        if !whole {
                            // Cannot happen (room was checked); if it did,
                            // the stream's framing is lost: end its transfer.
                            if let Some(m) = self.mux.as_mut() {
                                let _ = m.reset(id, stream::RESET_CANCEL);
                            }
                            self.xfer.carrier_gone(c).await;
                            return Ok(());
                        }
                        moved
                    }
                    _ => self.xfer.pump(c, transfer::Sink::Queue),
                };
                if !moved {
                    break;
                }
                self.flush_xfer()?;
            }
        }
        Ok(())
    }

    /// Moves stream messages from the mux into the connection while it has
    /// room.
    fn flush_mux(&mut self) -> Result<(), End> {
        while self.stash.is_empty() && self.conn.transmit_buf().len() < MAX_OUTBOUND / 2 {
            let Some(m) = self.mux.as_mut().and_then(|m| m.poll_transmit()) else {
                break;
            };
            self.app_send(m)?;
        }
        Ok(())
    }

    /// Starts a `send` on this session: on a new stream when the peer
    /// supports streams, else on data messages.
    fn start_send(&mut self, req: SendReq) -> Result<(), End> {
        let id = self.xfer.new_id();
        let carrier = if self.streams_ok {
            match self
                .ensure_mux()
                .open(transfer::STREAM_KIND, Priority::Bulk)
            {
                Ok(sid) => Carrier::Stream(sid),
                Err(e) => {
                    let _ = req.done.send((
                        Outcome::Cancelled {
                            by: Side::Local,
                            reason: dsoftbus::transfer::Reason::Busy,
                            entry: None,
                        },
                        Some(format!("cannot open a stream: {e}")),
                    ));
                    return Ok(());
                }
            }
        } else {
            Carrier::Data(id)
        };
        if let Carrier::Stream(sid) = carrier {
            self.decoders
                .insert(sid, FrameDecoder::new(dsoftbus::frame::MAX_FRAME_LEN));
        }
        self.xfer.start_send(carrier, id, req);
        self.flush_xfer()
    }

    async fn on_cmd(&mut self, cmd: SessionCmd) -> Result<bool, End> {
        match cmd {
            SessionCmd::Ping { reply } => {
                if self.pings.len() >= MAX_PENDING_PINGS {
                    return Ok(false); // reply dropped: the caller sees a closed channel
                }
                let mut nonce = fastrand::u64(..) & !KEEPALIVE_BIT;
                while self.pings.contains_key(&nonce) {
                    nonce = fastrand::u64(..) & !KEEPALIVE_BIT;
                }
                self.conn.send_ping(nonce).map_err(End::Conn)?;
                self.pings.insert(nonce, (StdInstant::now(), reply));
                Ok(false)
            }
            SessionCmd::App(m) => {
                self.app_send(m)?;
                Ok(false)
            }
            SessionCmd::Send(req) => {
                self.start_send(*req)?;
                Ok(false)
            }
            SessionCmd::Answer { carrier, answer } => {
                self.xfer.on_answer(carrier, answer).await;
                self.flush_xfer()?;
                Ok(false)
            }
            SessionCmd::Close => Ok(true),
        }
    }

    fn unregister(&mut self) {
        let cx = self.cx.clone();
        let mut st = cx.lock();
        if let Some(peer) = &self.peer {
            if st
                .sessions
                .get(peer)
                .is_some_and(|h| h.conn_id == self.conn_id)
            {
                st.sessions.remove(peer);
                st.table.set_session(peer, false);
                crate::remote::peer_gone(&cx.remote, peer);
            }
        }
        st.caps.remove(self.conn_id);
    }

    /// Logs why a session that never came up failed (every line through
    /// the log limiter: a remote peer triggers all of them), and records
    /// the reason for `peers`.
    fn log_failure(&self, why: &End) {
        let cx = &self.cx;
        let peer = self.peer_name();
        let addr = self.addr;
        let lim = |kind| cx.limiter.allow(kind);
        match why {
            End::Conn(ConnError::Auth(AuthError::Identity)) => {
                if let Some(t) = &self.dialed {
                    bump(&cx.counters.identity_mismatch);
                    cx.lock().refuse(
                        &t.id,
                        format!("refused: the listener at {addr} named another device"),
                        None,
                    );
                    if let Some(n) = lim(LogKind::Mismatch) {
                        warn!("identity mismatch peer={peer} addr={addr} (the listener named another device){}", suppressed(n));
                    }
                    return;
                }
                let hint = self.conn.peer_hint().cloned();
                let mut st = cx.lock();
                let known = hint
                    .as_ref()
                    .and_then(|p| st.bindings(cx.trust_mode).bound_key(p));
                if let (Some(p), Some(k)) = (&hint, known) {
                    bump(&cx.counters.identity_mismatch);
                    if st.known.get(p).is_some() {
                        st.refuse(
                            p,
                            format!(
                                "key changed: a handshake from {addr} used another key than the pinned {} (`dsoftbus trust {p} <key> --replace` if expected)",
                                fingerprint(&k)
                            ),
                            None,
                        );
                    }
                    drop(st);
                    if let Some(n) = lim(LogKind::Mismatch) {
                        warn!("identity mismatch peer={peer} addr={addr} (its key is not the one bound to that id); closed{}", suppressed(n));
                    }
                } else {
                    bump(&cx.counters.identity_unknown);
                    let why = match cx.trust_mode {
                        dsoftbus::node::TrustMode::Known => {
                            "not in known_peers.toml (--trust-mode known)"
                        }
                        dsoftbus::node::TrustMode::Pending => {
                            "pending: not trusted yet (`dsoftbus trust <id>`)"
                        }
                        dsoftbus::node::TrustMode::Tofu => "no announce from it yet",
                    };
                    drop(st);
                    if let Some(n) = lim(LogKind::UnknownId) {
                        info!(
                            "identity unknown peer={peer} addr={addr} ({why}); closed{}",
                            suppressed(n)
                        );
                    }
                }
            }
            End::Conn(ConnError::Auth(AuthError::Mac1)) => {
                bump(&cx.counters.handshake_failed);
                if let Some(n) = lim(LogKind::Mac1) {
                    debug!(
                        "dropped a connection from {addr}: bad mac1 (not meant for our key){}",
                        suppressed(n)
                    );
                }
            }
            End::Conn(ConnError::Auth(AuthError::Handshake)) => {
                bump(&cx.counters.handshake_failed);
                if let Some(n) = lim(LogKind::Hs) {
                    warn!(
                        "handshake failed peer={peer} addr={addr} (wrong key or tampering){}",
                        suppressed(n)
                    );
                }
            }
            End::Conn(ConnError::Auth(e)) => {
                bump(&cx.counters.handshake_failed);
                if let Some(n) = lim(LogKind::HsOther) {
                    debug!(
                        "handshake with peer={peer} addr={addr} ended: {e}{}",
                        suppressed(n)
                    );
                }
            }
            End::Eof | End::Io(_) => {
                if let Some(t) = &self.dialed {
                    if self.peer.is_some() {
                        // We sent frame 3 and the listener hung up: it
                        // refused the id/key we presented.
                        cx.lock().refuse(
                            &t.id,
                            "refused by the peer after our handshake (it holds another key for us, or does not trust us yet)".into(),
                            None,
                        );
                    }
                }
                if let Some(n) = lim(LogKind::HsEof) {
                    debug!(
                        "peer={peer} addr={addr} closed during the handshake{}",
                        suppressed(n)
                    );
                }
            }
            End::Limited(l) => {
                bump(&cx.counters.handshake_limited);
                if let Some(n) = lim(LogKind::HsLimited) {
                    info!(
                        "handshake from {addr} refused before DH ({l}); closed{}",
                        suppressed(n)
                    );
                }
            }
            End::Evicted => {
                if let Some(n) = lim(LogKind::Evicted) {
                    debug!(
                        "half-open connection from {addr} gave its slot to another address{}",
                        suppressed(n)
                    );
                }
            }
            End::Conn(e) => {
                if let Some(n) = lim(LogKind::Conn) {
                    debug!("peer={peer} addr={addr}: {e}{}", suppressed(n));
                }
            }
            End::Dead | End::Shutdown | End::Mux(_) => {}
            End::Refused(r) => {
                if let Some(n) = lim(LogKind::Refused) {
                    warn!("session with peer={peer} refused: {r}{}", suppressed(n));
                }
            }
            End::Overflow(q) => {
                if let Some(n) = lim(LogKind::Overflow) {
                    warn!(
                        "peer={peer} addr={addr} disconnected: {q} over its bound{}",
                        suppressed(n)
                    );
                }
            }
        }
    }
}

/// Runs one session stream to its end. `permit` bounds handshakes in
/// progress and is released once the session is confirmed. Returns whether
/// the session was ever confirmed.
pub async fn run(
    cx: SessionCtx,
    conn_id: u64,
    stream: TcpStream,
    addr: SocketAddr,
    conn: Connection,
    slot: HalfOpen,
    dialed: Option<PeerTarget>,
) -> bool {
    let evicted = slot.evicted();
    let (rd, mut wr) = stream.into_split();
    let (cmd_tx, mut cmd_rx) = mpsc::channel(CMD_QUEUE);
    let (report_tx, mut report_rx) = mpsc::channel(64);
    let xfer = Engine::new(&cx, cmd_tx.clone(), report_tx);
    let xfer_wake = xfer.wake.clone();
    let mut c = Ctx {
        conn_id,
        cx: cx.clone(),
        conn,
        addr,
        dialed,
        peer: None,
        confirmed: false,
        stash: VecDeque::new(),
        stash_bytes: 0,
        pings: HashMap::new(),
        xfer,
        streams_ok: false,
        mux: None,
        decoders: HashMap::new(),
        pending: HashMap::new(),
        closing: HashSet::new(),
        cmd_tx,
        permit: Some(slot),
        keepalive_seq: 0,
    };
    let mut rbuf = vec![0u8; 64 * 1024];
    let mut out: Vec<u8> = Vec::new();
    let mut off = 0usize;
    let mut closing = false;
    let mut last_rx = StdInstant::now();
    let mut last_tx = StdInstant::now();
    let mut shutdown = cx.shutdown.clone();
    let mut keepalive =
        tokio::time::interval_at(tokio::time::Instant::now() + KEEPALIVE, KEEPALIVE);
    let mut transfer_tick = tokio::time::interval(TRANSFER_TICK);
    transfer_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let clock_base = (tokio::time::Instant::now(), cx.clock.now());

    let end: End = loop {
        if off >= out.len() {
            out = c.conn.take_transmit();
            off = 0;
            // The stall clock starts when bytes become pending.
            last_tx = StdInstant::now();
        }
        if closing && off >= out.len() {
            break End::Shutdown;
        }
        let space = c.conn.recv_space().min(rbuf.len());
        let to_tokio = |d: dsoftbus::Instant| {
            clock_base.0
                + Duration::from_millis(d.as_millis().saturating_sub(clock_base.1.as_millis()))
        };
        let deadline = c.conn.poll_timeout().map(to_tokio);
        let mux_deadline = c.mux.as_ref().and_then(|m| m.poll_timeout()).map(to_tokio);
        let can_cmd = c.confirmed
            && !closing
            && c.stash.is_empty()
            && c.conn.transmit_buf().len() < MAX_OUTBOUND / 2;
        let step: Result<(), End> = tokio::select! {
            // Once confirmed, straight into the connection's frame buffer;
            // before, through a buffer and the handshake gate.
            r = rd.readable(), if space > 0 && !closing => match r {
                Ok(()) => {
                    let read = if c.confirmed {
                        // At least one byte: space > 0 is this branch's guard.
                        rd.try_read(c.conn.recv_buf(space))
                    } else {
                        rd.try_read(&mut rbuf[..space])
                    };
                    match read {
                        Ok(0) => {
                            let _ = c.conn.handle_eof();
                            Err(End::Eof)
                        }
                        Ok(n) => {
                            last_rx = StdInstant::now();
                            if c.confirmed {
                                c.commit_recv(n).await
                            } else {
                                c.handle_gated(&rbuf[..n])
                            }
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(()),
                        Err(e) => Err(End::Io(e)),
                    }
                }
                Err(e) => Err(End::Io(e)),
            },
            w = wr.write(&out[off..]), if off < out.len() => match w {
                Ok(0) => Err(End::Eof),
                Ok(n) => {
                    off += n;
                    last_tx = StdInstant::now();
                    Ok(())
                }
                Err(e) => Err(End::Io(e)),
            },
            cmd = cmd_rx.recv(), if can_cmd => match cmd {
                Some(cmd) => match c.on_cmd(cmd).await {
                    Ok(true) => {
                        let _ = c.conn.close();
                        closing = true;
                        Ok(())
                    }
                    Ok(false) => Ok(()),
                    Err(e) => Err(e),
                },
                None => Ok(()),
            },
            _ = notified_opt(evicted.as_deref()), if !c.confirmed => Err(End::Evicted),
            Some(r) = report_rx.recv() => {
                c.xfer.on_report(r).await;
                c.flush_xfer()
            },
            _ = xfer_wake.notified() => Ok(()),
            _ = transfer_tick.tick() => {
                c.xfer.tick().await;
                c.flush_xfer()
            },
            _ = sleep_until_opt(deadline) => {
                c.conn.handle_timeout(cx.clock.now()).map_err(End::Conn)
            },
            _ = sleep_until_opt(mux_deadline) => {
                let now = cx.clock.now();
                match c.mux.as_mut() {
                    Some(m) => m.handle_timeout(now).map_err(End::Mux),
                    None => Ok(()),
                }
            },
            _ = keepalive.tick() => {
                if off < out.len() && last_tx.elapsed() > WRITE_STALL {
                    Err(End::Overflow("transmit buffer: nothing written for 10 s"))
                } else if c.confirmed && last_rx.elapsed() > DEAD_AFTER {
                    Err(End::Dead)
                } else if c.confirmed {
                    c.keepalive_seq += 1;
                    let _ = c.conn.send_ping(KEEPALIVE_BIT | (c.keepalive_seq & 0x3fff_ffff));
                    Ok(())
                } else {
                    Ok(())
                }
            },
            _ = shutdown.changed() => {
                let _ = c.conn.close();
                closing = true;
                Ok(())
            },
        };
        if let Err(e) = step {
            break e;
        }
        if let Err(e) = c.flush_stash() {
            break e;
        }
        let mut failed = None;
        while let Some(ev) = c.conn.poll_event() {
            let authenticated_from_peer =
                matches!(ev, Event::Ping(_) | Event::Pong(_) | Event::Data(_));
            let closed = matches!(ev, Event::Closed);
            let data = match ev {
                Event::Data(d) => Some(d),
                ev => {
                    if let Err(e) = c.on_event(ev) {
                        failed = Some(e);
                        break;
                    }
                    None
                }
            };
            if c.peer.is_some() && (c.dialed.is_none() || authenticated_from_peer) {
                if let Err(e) = c.confirm() {
                    failed = Some(e);
                    break;
                }
            }
            if let Some(d) = data {
                if c.confirmed {
                    if let Err(e) = c.on_data(d).await {
                        failed = Some(e);
                        break;
                    }
                }
            }
            if closed {
                closing = true;
            }
        }
        if failed.is_none() && c.confirmed {
            failed = match c.pump_sends().await {
                Ok(()) => c.flush_mux().err(),
                Err(e) => Some(e),
            };
        }
        if let Some(e) = failed {
            break e;
        }
        if let Some(e) = c.conn.error() {
            break End::Conn(e);
        }
        if c.conn.transmit_buf().len() > MAX_TRANSMIT_BYTES {
            break End::Overflow("transmit buffer");
        }
    };
    // Senders waiting on this session learn at once that it is gone, and
    // partial files of incoming transfers are deleted (their writers end).
    c.xfer.session_lost().await;
    drop(std::mem::replace(
        &mut c.xfer,
        Engine::new(&cx, mpsc::channel(1).0, mpsc::channel(1).0),
    ));
    if matches!(end, End::Overflow(_)) {
        bump(&cx.counters.outbound_overflow);
    }

    // Best effort: let a queued CLOSE (or REJECT/DONE) reach the peer.
    let rest = [&out[off.min(out.len())..], c.conn.transmit_buf()].concat();
    if !rest.is_empty() {
        let _ = tokio::time::timeout(Duration::from_millis(500), wr.write_all(&rest)).await;
    }
    let _ = wr.shutdown().await;
    c.unregister();
    let peer = c.peer_name();
    if c.confirmed {
        bump(&cx.counters.sessions_closed);
        let why = match &end {
            End::Eof => "peer went away".to_string(),
            End::Io(e) => format!("i/o error: {e}"),
            End::Conn(ConnError::Closed) | End::Shutdown => "closed".to_string(),
            End::Conn(e) => e.to_string(),
            End::Dead => format!("no traffic for {} s", DEAD_AFTER.as_secs()),
            End::Refused(r) => r.clone(),
            End::Limited(l) => l.to_string(),
            End::Evicted => "evicted".to_string(),
            End::Overflow(q) => {
                format!("disconnected: {q} over its bound; the peer does not read what we send")
            }
            End::Mux(e) => format!("stream error: {e}"),
        };
        if let Some(n) = cx.limiter.allow(LogKind::SessionClosed) {
            info!(
                "session closed peer={peer} addr={} ({why}){}",
                c.addr,
                suppressed(n)
            );
        }
    } else {
        c.log_failure(&end);
    }
    c.confirmed
}

async fn notified_opt(n: Option<&Notify>) {
    match n {
        Some(n) => n.notified().await,
        None => std::future::pending().await,
    }
}

async fn sleep_until_opt(t: Option<tokio::time::Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

/// Most directory levels `send` walks below an argument.
pub const MAX_WALK_DEPTH: usize = 64;

/// The offer for `paths`: each file under its base name, each directory
/// as its base name and everything below it (sorted; symbolic links and
/// special files are skipped with a warning, never followed), names made
/// valid (`name::sanitize_path`) and distinct (`name::dedup_paths`).
/// Runs on a blocking thread (it hashes every file, with `version`'s hash).
pub fn build_offer(
    paths: &[PathBuf],
    version: dsoftbus::transfer::Version,
    warnings: &mut Vec<String>,
) -> Result<SendReqParts, String> {
    use dsoftbus::transfer::name::{dedup_paths, sanitize_path};
    // (offered path, local path, is a directory)
    let mut items: Vec<(String, PathBuf, bool)> = Vec::new();
    for path in paths {
        let meta =
            std::fs::metadata(path).map_err(|e| format!("cannot open {}: {e}", path.display()))?;
        let base = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .and_then(|n| transfer::sanitize_name(&n))
            .unwrap_or_else(|| {
                if meta.is_dir() {
                    "folder".into()
                } else {
                    "file".into()
                }
            });
        if meta.is_file() {
            items.push((base, path.clone(), false));
        } else if meta.is_dir() {
            items.push((base.clone(), path.clone(), true));
            walk(path, &base, 1, &mut items, warnings)?;
        } else {
            return Err(format!(
                "{} is not a regular file or a directory",
                path.display()
            ));
        }
        if items.len() > dsoftbus::transfer::wire::MAX_ENTRIES {
            break;
        }
    }
    if items.len() > dsoftbus::transfer::wire::MAX_ENTRIES {
        return Err(format!(
            "too many files and folders (more than {} in one send; send an archive, or fewer paths)",
            dsoftbus::transfer::wire::MAX_ENTRIES
        ));
    }
    let mut named = Vec::with_capacity(items.len());
    let mut locals = Vec::with_capacity(items.len());
    for (p, local, dir) in items {
        match sanitize_path(&p) {
            Some(clean) => {
                named.push((clean, dir));
                locals.push((local, dir));
            }
            None => warnings.push(format!("skipping {}: no usable name", local.display())),
        }
    }
    let names =
        dedup_paths(&named).ok_or_else(|| "cannot give the entries distinct names".to_string())?;
    let mut entries = Vec::new();
    let mut files = Vec::new();
    for ((local, dir), name) in locals.into_iter().zip(names) {
        if dir {
            entries.push(dsoftbus::transfer::Entry {
                path: name,
                kind: dsoftbus::transfer::EntryKind::Dir,
            });
            files.push(None);
        } else {
            let (e, f) = transfer::file_entry(&local, name, version)
                .map_err(|e| format!("reading {}: {e}", local.display()))?;
            entries.push(e);
            files.push(Some(f));
        }
    }
    if entries.is_empty() {
        return Err("nothing to send".into());
    }
    dsoftbus::transfer::check_offer(&entries, dsoftbus::transfer::wire::MAX_ENTRIES, u64::MAX)
        .map_err(|e| match e {
            dsoftbus::transfer::OfferError::TooLong => {
                "the paths are too long to fit one offer (64 KiB); send fewer files or an archive"
                    .to_string()
            }
            e => format!("cannot offer these files: {e:?}"),
        })?;
    Ok((entries, files))
}

/// Adds what is below directory `dir` (offered as `prefix`) to `items`.
fn walk(
    dir: &Path,
    prefix: &str,
    depth: usize,
    items: &mut Vec<(String, PathBuf, bool)>,
    warnings: &mut Vec<String>,
) -> Result<(), String> {
    if depth > MAX_WALK_DEPTH {
        warnings.push(format!(
            "skipping {}: more than {MAX_WALK_DEPTH} levels deep",
            dir.display()
        ));
        return Ok(());
    }
    let mut children: Vec<_> = std::fs::read_dir(dir)
        .map_err(|e| format!("cannot read {}: {e}", dir.display()))?
        .filter_map(|e| e.ok())
        .collect();
    children.sort_by_key(|e| e.file_name());
    for c in children {
        if items.len() > dsoftbus::transfer::wire::MAX_ENTRIES {
            return Ok(());
        }
        let path = c.path();
        let name = c.file_name().to_string_lossy().into_owned();
        let offered = format!("{prefix}/{name}");
        // file_type() does not follow symbolic links.
        match c.file_type() {
            Ok(t) if t.is_symlink() => warnings.push(format!(
                "skipping {}: symbolic links are not followed",
                path.display()
            )),
            Ok(t) if t.is_dir() => {
                items.push((offered.clone(), path.clone(), true));
                walk(&path, &offered, depth + 1, items, warnings)?;
            }
            Ok(t) if t.is_file() => items.push((offered, path, false)),
            Ok(_) => warnings.push(format!(
                "skipping {}: not a regular file or directory",
                path.display()
            )),
            Err(e) => warnings.push(format!("skipping {}: {e}", path.display())),
        }
    }
    Ok(())
}

/// Entries of an offer and, per entry, the local file and its size.
pub type SendReqParts = (Vec<dsoftbus::transfer::Entry>, Vec<Option<(PathBuf, u64)>>);

/// Sends `paths` to `device`, writing `Accepted`/`Progress` lines to the
/// control client `out`; returns the final response.
pub async fn send_paths<W: AsyncWrite + Unpin>(
    peers: &Peers,
    device: &DeviceId,
    paths: Vec<PathBuf>,
    out: &mut W,
) -> Response {
    use dsoftbus::transfer::Version;
    let Some(h) = peers.session(device) else {
        return Response::error(
            NO_PEER,
            format!("no session with {device} (see `dsoftbus peers`)"),
        );
    };
    let mut refused = false;
    let r = send_once(&h, device, paths.clone(), h.transfer, out, &mut refused).await;
    if !refused {
        return r;
    }
    // The peer listed transfer/2 but refused a v2 offer (a build without
    // it behind a stale announce, or another implementation): once more
    // in v1, which every node receives.
    warn!("peer={device} refused a transfer v2 offer (unsupported version); offering again in v1 (SHA-256)");
    send_once(&h, device, paths, Version::V1, out, &mut refused).await
}

/// One offer of `paths` to `device` in transfer `version`, through its
/// session `h`, to the end. Sets `refused_v2` when the peer denied a v2
/// offer `unsupported-version` (the caller may offer again in v1).
async fn send_once<W: AsyncWrite + Unpin>(
    h: &SessionHandle,
    device: &DeviceId,
    paths: Vec<PathBuf>,
    version: dsoftbus::transfer::Version,
    out: &mut W,
    refused_v2: &mut bool,
) -> Response {
    let built = tokio::task::spawn_blocking(move || {
        let mut warnings = Vec::new();
        build_offer(&paths, version, &mut warnings).map(|p| (p, warnings))
    })
    .await;
    let ((entries, files), warnings) = match built {
        Ok(Ok(p)) => p,
        Ok(Err(e)) => return Response::error(FAILURE, e),
        Err(e) => return Response::error(FAILURE, format!("reading the files failed: {e}")),
    };
    for w in warnings {
        warn!("send to {device}: {w}");
        if write_resp(out, &Response::Warning { message: w })
            .await
            .is_err()
        {
            return Response::error(FAILURE, "control client went away");
        }
    }
    let file_count = entries.iter().filter(|e| !e.is_dir()).count();
    let name = transfer::summary(&entries);
    let single_digest = match entries.as_slice() {
        [dsoftbus::transfer::Entry {
            kind: dsoftbus::transfer::EntryKind::File { digest, .. },
            ..
        }] => hex::encode(digest),
        _ => String::new(),
    };
    let hash = version.hash_name();
    let total: u64 = entries.iter().map(|e| e.size()).sum();
    let (ptx, mut prx) = watch::channel(SendProgress::default());
    let (dtx, mut drx) = oneshot::channel();
    let req = SendReq {
        version,
        entries,
        files,
        progress: ptx,
        done: dtx,
    };
    // Exit 7 at once; after END the receiver may have stored the files and
    // only its DONE was lost, so say so instead of guessing.
    let lost = |after_end: bool| {
        let what = if after_end {
            "closed before the receiver confirmed the file (it may have been stored: check its inbox)"
        } else {
            "closed during the transfer; the file was not stored (send again within 10 min to resume)"
        };
        Response::error(TRANSFER, format!("the session with {device} {what}"))
    };
    if h.cmd.send(SessionCmd::Send(Box::new(req))).await.is_err() {
        return lost(false);
    }
    info!("offering {name} ({total} bytes) to peer={device}");
    let start = StdInstant::now();
    let mut accepted_at: Option<StdInstant> = None;
    let mut last_change = StdInstant::now();
    let mut last_progress = StdInstant::now() - Duration::from_secs(1);
    let mut watching = true;
    loop {
        let wait = if accepted_at.is_some() {
            SEND_INACTIVITY
        } else {
            OFFER_WAIT
        };
        let left = wait.saturating_sub(last_change.elapsed());
        tokio::select! {
            r = &mut drx => {
                let all_sent = prx.borrow().all_sent;
                let Ok((outcome, detail)) = r else { return lost(all_sent) };
                let p = prx.borrow().clone();
                return match outcome {
                    Outcome::Done => {
                        // The time the data took (not the wait for an answer).
                        let secs = accepted_at.unwrap_or(start).elapsed().as_secs_f64();
                        info!("sent {name} ({total} bytes) to peer={device} in {secs:.2} s: receiver verified {hash}");
                        Response::Sent {
                            bytes: total,
                            secs,
                            sha256: if version == dsoftbus::transfer::Version::V1 {
                                single_digest.clone()
                            } else {
                                String::new()
                            },
                            hash: hash.to_string(),
                            digest: single_digest,
                            message: format!(
                                "{} bytes sent, {} resumed",
                                p.sent, p.resumed
                            ),
                            files: file_count,
                            sent: p.sent,
                            resumed: p.resumed,
                        }
                    }
                    o => {
                        let unsupported = Outcome::Denied {
                            by: Side::Peer,
                            reason: dsoftbus::transfer::Reason::UnsupportedVersion,
                        };
                        if version == dsoftbus::transfer::Version::V2 && o == unsupported {
                            *refused_v2 = true;
                        }
                        let why = match (&o, detail) {
                            (_, Some(d)) => d,
                            (Outcome::Denied { reason, .. }, None) => {
                                format!("refused the transfer: {}", reason_text(*reason))
                            }
                            (Outcome::Cancelled { by: Side::Peer, reason, .. }, None) => {
                                format!("aborted the transfer: {}", reason_text(*reason))
                            }
                            (Outcome::Cancelled { reason, .. }, None) => {
                                format!("transfer cancelled: {}", reason_text(*reason))
                            }
                            (Outcome::Failed(e), None) => format!("transfer failed: {e}"),
                            (Outcome::Done, None) => String::new(),
                        };
                        warn!("send of {name} to peer={device} failed: {why}");
                        Response::error(TRANSFER, format!("{device}: {why}"))
                    }
                };
            }
            c = prx.changed(), if watching => {
                if c.is_err() {
                    // The session ended; its answer on `drx` follows.
                    watching = false;
                    continue;
                }
                let p = prx.borrow_and_update().clone();
                if p.accepted && accepted_at.is_none() {
                    accepted_at = Some(StdInstant::now());
                    let r = Response::Accepted { total: p.total, name: name.clone() };
                    if write_resp(out, &r).await.is_err() {
                        return Response::error(FAILURE, "control client went away");
                    }
                    if p.resumed > 0 {
                        let r = Response::Progress { acked: p.resumed, total: p.total };
                        if write_resp(out, &r).await.is_err() {
                            return Response::error(FAILURE, "control client went away");
                        }
                    }
                }
                last_change = StdInstant::now();
                if last_progress.elapsed() >= Duration::from_millis(100) {
                    last_progress = StdInstant::now();
                    let r = Response::Progress { acked: p.resumed + p.acked, total: p.total };
                    if write_resp(out, &r).await.is_err() {
                        return Response::error(FAILURE, "control client went away; transfer cancelled");
                    }
                }
            }
            _ = tokio::time::sleep(left) => {
                return if accepted_at.is_none() {
                    Response::error(TIMEOUT, format!("{device} did not answer the offer"))
                } else {
                    Response::error(
                        TIMEOUT,
                        format!("{device} made no progress for {} s", SEND_INACTIVITY.as_secs()),
                    )
                };
            }
        }
    }
}
