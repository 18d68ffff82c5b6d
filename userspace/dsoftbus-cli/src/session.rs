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

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant as StdInstant};

use dsoftbus::connection::MAX_OUTBOUND;
use dsoftbus::{
    AuthError, ConnError, Connection, DeviceId, Event, GatedError, IdentityBindings, PeerTarget,
};
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, Notify, OwnedSemaphorePermit};
use tracing::{debug, info, warn};

use crate::control::{write_resp, Response};
use crate::exit::{FAILURE, NO_PEER, TIMEOUT, TRANSFER};
use crate::identity::fingerprint;
use crate::shared::{
    bump, suppressed, Bindings, Counters, HalfOpen, LogKind, Peers, SessionCmd, SessionCtx,
    SessionHandle,
};
use crate::transfer::{
    self, encode_chunk, AppMsg, ReadPiece, ReceiveJob, WriterDone, WriterMsg, CHUNK_LEN, DONE_OK,
    DONE_PROTOCOL, WINDOW,
};

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
/// How often idle incoming transfers are looked for.
const TRANSFER_TICK: Duration = Duration::from_millis(500);

const KEEPALIVE_BIT: u64 = 1 << 63;
const CONFIRM_NONCE: u64 = KEEPALIVE_BIT | (1 << 62);

struct Incoming {
    tx: mpsc::Sender<WriterMsg>,
    written: Arc<std::sync::atomic::AtomicU64>,
    acked: u64,
    next: u64,
    size: u64,
    name: String,
    /// Last CHUNK/END (or the ACCEPT) for the idle timeout.
    last: StdInstant,
    /// END arrived: the writer verifies and stores; no idle timeout.
    ended: bool,
    _permit: OwnedSemaphorePermit,
}

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
    incoming: HashMap<u32, Incoming>,
    routes: Arc<Mutex<HashMap<u32, mpsc::Sender<AppMsg>>>>,
    ack_notify: Arc<Notify>,
    done_tx: mpsc::Sender<WriterDone>,
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
            .map(|p| p.to_string())
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

    /// Cancels accepted incoming transfers that received nothing for the
    /// configured idle time, freeing their slots.
    fn expire_transfers(&mut self) -> Result<(), End> {
        let idle = self.cx.transfer.idle;
        let stale: Vec<u32> = self
            .incoming
            .iter()
            .filter(|(_, inc)| !inc.ended && inc.last.elapsed() >= idle)
            .map(|(id, _)| *id)
            .collect();
        let peer = self.peer_name();
        for id in stale {
            if let Some(inc) = self.incoming.remove(&id) {
                // Dropping the writer's channel deletes the partial file.
                let _ = inc.tx.try_send(WriterMsg::Cancel);
                bump(&self.cx.counters.transfers_failed);
                if let Some(n) = self.cx.limiter.allow(LogKind::TransferIdle) {
                    warn!(
                        "transfer {id:08x} ({:?}) from peer={peer}: no data for {} s; cancelled, partial file deleted{}",
                        inc.name,
                        idle.as_secs(),
                        suppressed(n)
                    );
                }
                self.app_send(
                    AppMsg::Done {
                        id,
                        status: DONE_PROTOCOL,
                        message: format!("no data for {} s; transfer cancelled", idle.as_secs()),
                    }
                    .encode(),
                )?;
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
                        suppressed(n)
                    );
                }
                let _ = old.cmd.try_send(SessionCmd::Close);
            }
        }
        st.sessions.insert(
            peer.clone(),
            SessionHandle {
                conn_id: self.conn_id,
                cmd: self.cmd_tx.clone(),
                addr: self.addr,
                key,
                routes: self.routes.clone(),
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
                            suppressed(n)
                        );
                    }
                }
            }
        }
        drop(guard);
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
                suppressed(n)
            );
        }
        Ok(())
    }

    fn on_event(&mut self, ev: Event) -> Result<Option<AppMsg>, End> {
        Ok(match ev {
            Event::Established { peer } => {
                if let Some(n) = self.cx.limiter.allow(LogKind::IdentityBound) {
                    info!(
                        "identity bound peer={peer} addr={} role={}{}",
                        self.addr,
                        self.role(),
                        suppressed(n)
                    );
                }
                self.peer = Some(peer);
                if self.dialed.is_some() {
                    // Our proof of acceptance is the answer to this ping.
                    let _ = self.conn.send_ping(CONFIRM_NONCE);
                }
                None
            }
            Event::Ping(_) => None,
            Event::Pong(n) => {
                if let Some((t, reply)) = self.pings.remove(&n) {
                    let _ = reply.send(t.elapsed());
                }
                None
            }
            // Remote service calls (kind 0x20): crate::remote.
            Event::Data(d) if d.first() == Some(&dsoftbus::rpc::KIND_RPC) => {
                if let crate::remote::OnData::Send(r) =
                    crate::remote::on_data(&self.cx.remote, &self.conn, &d)
                {
                    self.app_send(r)?;
                }
                None
            }
            Event::Data(d) => match AppMsg::decode(&d) {
                Ok(m) => Some(m),
                Err(e @ transfer::DecodeError::NonUtf8Name(id)) => {
                    // Refused by id so the sender learns why (not silence).
                    let reason = e.to_string();
                    self.app_send(AppMsg::Reject { id, reason }.encode())?;
                    None
                }
                Err(e) => {
                    if let Some(n) = self.cx.limiter.allow(LogKind::AppDecode) {
                        debug!(
                            "peer={}: ignoring application message: {e}{}",
                            self.peer_name(),
                            suppressed(n)
                        );
                    }
                    None
                }
            },
            Event::Closed => None,
        })
    }

    /// Handles one application message from the peer.
    async fn on_app(&mut self, m: AppMsg) -> Result<(), End> {
        let peer = self.peer_name();
        match m {
            AppMsg::Offer { id, size, name } => {
                let refuse = |reason: String| AppMsg::Reject { id, reason }.encode();
                let Some(inbox) = self.cx.transfer.inbox.clone() else {
                    if let Some(n) = self.cx.limiter.allow(LogKind::NoInbox) {
                        info!(
                            "refused a file from peer={peer}: no --inbox configured{}",
                            suppressed(n)
                        );
                    }
                    return self.app_send(refuse(
                        "the receiver has no inbox (start its daemon with --inbox DIR)".into(),
                    ));
                };
                if size > self.cx.transfer.max_receive_bytes {
                    return self.app_send(refuse(format!(
                        "file too large ({size} bytes; limit {})",
                        self.cx.transfer.max_receive_bytes
                    )));
                }
                let Some(clean) = transfer::sanitize_name(&name) else {
                    return self.app_send(refuse("unusable file name".into()));
                };
                if self.incoming.contains_key(&id) {
                    return self.app_send(refuse("duplicate transfer id".into()));
                }
                let per_peer = self.cx.transfer.max_incoming_per_peer;
                if self.incoming.len() >= per_peer {
                    // One peer never holds every slot: others can still send.
                    return self.app_send(refuse(format!(
                        "receiver busy ({per_peer} transfers from you in progress; the limit per peer)"
                    )));
                }
                let Ok(permit) = self.cx.transfer.permits.clone().try_acquire_owned() else {
                    return self.app_send(refuse("receiver busy (too many transfers)".into()));
                };
                let job = match ReceiveJob::create(
                    &inbox,
                    id,
                    clean.clone(),
                    size,
                    self.ack_notify.clone(),
                ) {
                    Ok(j) => j,
                    Err(e) => {
                        if let Some(n) = self.cx.limiter.allow(LogKind::InboxError) {
                            warn!(
                                "cannot store a file from peer={peer} in {}: {e}{}",
                                inbox.display(),
                                suppressed(n)
                            );
                        }
                        return self
                            .app_send(refuse(format!("receiver cannot write its inbox: {e}")));
                    }
                };
                let (tx, rx) = mpsc::channel(16);
                let written = job.written.clone();
                let done = self.done_tx.clone();
                tokio::task::spawn_blocking(move || {
                    if let Some(d) = job.run(rx) {
                        let _ = done.blocking_send(d);
                    }
                });
                if let Some(n) = self.cx.limiter.allow(LogKind::Receiving) {
                    info!(
                        "receiving {clean:?} ({size} bytes) from peer={peer}{}",
                        suppressed(n)
                    );
                }
                self.incoming.insert(
                    id,
                    Incoming {
                        tx,
                        written,
                        acked: 0,
                        next: 0,
                        size,
                        name: clean,
                        last: StdInstant::now(),
                        ended: false,
                        _permit: permit,
                    },
                );
                self.app_send(AppMsg::Accept { id }.encode())
            }
            AppMsg::Chunk { id, offset, data } => {
                let Some(inc) = self.incoming.get_mut(&id) else {
                    return Ok(());
                };
                if offset != inc.next || inc.next + data.len() as u64 > inc.size {
                    let _ = inc.tx.send(WriterMsg::Cancel).await;
                    self.incoming.remove(&id);
                    if let Some(n) = self.cx.limiter.allow(LogKind::ChunkOrder) {
                        warn!(
                            "transfer {id:08x} from peer={peer}: chunk out of order or past the offered size; aborted{}",
                            suppressed(n)
                        );
                    }
                    return self.app_send(
                        AppMsg::Done {
                            id,
                            status: DONE_PROTOCOL,
                            message: "chunk out of order or past the offered size".into(),
                        }
                        .encode(),
                    );
                }
                inc.next += data.len() as u64;
                // Bounded channel: a slow disk slows the socket, not memory.
                let _ = inc.tx.send(WriterMsg::Data(data)).await;
                // Idle counts from here: time waiting for our disk is not
                // the peer's idleness.
                inc.last = StdInstant::now();
                Ok(())
            }
            AppMsg::End { id, size, sha256 } => {
                if let Some(inc) = self.incoming.get_mut(&id) {
                    inc.ended = true;
                    let _ = inc.tx.send(WriterMsg::End { size, sha256 }).await;
                }
                Ok(())
            }
            AppMsg::Cancel { id } => {
                if let Some(inc) = self.incoming.remove(&id) {
                    let _ = inc.tx.send(WriterMsg::Cancel).await;
                    if let Some(n) = self.cx.limiter.allow(LogKind::PeerCancel) {
                        info!(
                            "transfer {id:08x} ({:?}) cancelled by peer={peer}; partial file deleted{}",
                            inc.name,
                            suppressed(n)
                        );
                    }
                }
                Ok(())
            }
            m @ (AppMsg::Accept { .. }
            | AppMsg::Reject { .. }
            | AppMsg::Ack { .. }
            | AppMsg::Done { .. }) => {
                let route = self
                    .routes
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .get(&m.id())
                    .cloned();
                if let Some(r) = route {
                    // Cannot overflow for an honest peer (at most WINDOW /
                    // ACK_EVERY acks outstanding); a flood is dropped.
                    let _ = r.try_send(m);
                }
                Ok(())
            }
        }
    }

    fn on_writer_done(&mut self, d: WriterDone) -> Result<(), End> {
        let peer = self.peer_name();
        if let Some(inc) = self.incoming.remove(&d.id) {
            if d.status == DONE_OK {
                bump(&self.cx.counters.files_received);
                if let Some(n) = self.cx.limiter.allow(LogKind::Received) {
                    info!(
                        "received {:?} ({} bytes) from peer={peer}: {}{}",
                        inc.name,
                        inc.size,
                        d.message,
                        suppressed(n)
                    );
                }
            } else {
                bump(&self.cx.counters.transfers_failed);
                if let Some(n) = self.cx.limiter.allow(LogKind::ReceiveFailed) {
                    warn!(
                        "receive of {:?} from peer={peer} failed: {}{}",
                        inc.name,
                        d.message,
                        suppressed(n)
                    );
                }
            }
        }
        self.app_send(
            AppMsg::Done {
                id: d.id,
                status: d.status,
                message: d.message,
            }
            .encode(),
        )
    }

    fn send_acks(&mut self) -> Result<(), End> {
        let mut acks = Vec::new();
        for (id, inc) in self.incoming.iter_mut() {
            let w = inc.written.load(std::sync::atomic::Ordering::Acquire);
            if w > inc.acked {
                inc.acked = w;
                acks.push(
                    AppMsg::Ack {
                        id: *id,
                        received: w,
                    }
                    .encode(),
                );
            }
        }
        for a in acks {
            self.app_send(a)?;
        }
        Ok(())
    }

    fn on_cmd(&mut self, cmd: SessionCmd) -> Result<bool, End> {
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
            End::Dead | End::Shutdown => {}
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
    let (mut rd, mut wr) = stream.into_split();
    let (cmd_tx, mut cmd_rx) = mpsc::channel(CMD_QUEUE);
    let (done_tx, mut done_rx) = mpsc::channel(64);
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
        incoming: HashMap::new(),
        routes: Arc::new(Mutex::new(HashMap::new())),
        ack_notify: Arc::new(Notify::new()),
        done_tx,
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
    let ack_notify = c.ack_notify.clone();
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
        let deadline = c.conn.poll_timeout().map(|d| {
            clock_base.0
                + Duration::from_millis(d.as_millis().saturating_sub(clock_base.1.as_millis()))
        });
        let can_cmd = c.confirmed
            && !closing
            && c.stash.is_empty()
            && c.conn.transmit_buf().len() < MAX_OUTBOUND / 2;
        let step: Result<(), End> = tokio::select! {
            r = rd.read(&mut rbuf[..space]), if space > 0 && !closing => match r {
                Ok(0) => {
                    let _ = c.conn.handle_eof();
                    Err(End::Eof)
                }
                Ok(n) => {
                    last_rx = StdInstant::now();
                    let now = cx.clock.now();
                    let res = {
                        let mut guard = cx.lock();
                        let st = &mut *guard;
                        let b = Bindings {
                            table: &st.table,
                            known: &st.known,
                            mode: cx.trust_mode,
                        };
                        // mac1 first, then the per-source and global
                        // handshake buckets, then DH.
                        let mut gate = st.admission.gate(addr.ip());
                        c.conn.handle_input_gated(&rbuf[..n], now, &b, &mut gate)
                    };
                    match res {
                        Ok(_) => Ok(()),
                        Err(GatedError::Conn(e)) => Err(End::Conn(e)),
                        Err(GatedError::Limited(l)) => Err(End::Limited(l)),
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
                Some(cmd) => match c.on_cmd(cmd) {
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
            Some(d) = done_rx.recv() => c.on_writer_done(d),
            _ = ack_notify.notified() => c.send_acks(),
            _ = transfer_tick.tick(), if !c.incoming.is_empty() => c.expire_transfers(),
            _ = sleep_until_opt(deadline) => {
                c.conn.handle_timeout(cx.clock.now()).map_err(End::Conn)
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
            let app = match c.on_event(ev) {
                Ok(app) => app,
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            };
            if c.peer.is_some() && (c.dialed.is_none() || authenticated_from_peer) {
                if let Err(e) = c.confirm() {
                    failed = Some(e);
                    break;
                }
            }
            if let Some(m) = app {
                if let Err(e) = c.on_app(m).await {
                    failed = Some(e);
                    break;
                }
            }
            if closed {
                closing = true;
            }
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
    // Senders waiting on this session learn at once that it is gone.
    c.routes.lock().unwrap_or_else(|p| p.into_inner()).clear();
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
    if !c.incoming.is_empty() {
        if let Some(n) = cx.limiter.allow(LogKind::TransfersAborted) {
            info!(
                "{} incoming transfer(s) from peer={peer} aborted; partial files deleted{}",
                c.incoming.len(),
                suppressed(n)
            );
        }
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

/// Removes the route and cancels the transfer unless it finished.
struct SendGuard {
    routes: Arc<Mutex<HashMap<u32, mpsc::Sender<AppMsg>>>>,
    cmd: mpsc::Sender<SessionCmd>,
    id: u32,
    finished: bool,
}

impl Drop for SendGuard {
    fn drop(&mut self) {
        self.routes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.id);
        if !self.finished {
            let _ = self
                .cmd
                .try_send(SessionCmd::App(AppMsg::Cancel { id: self.id }.encode()));
        }
    }
}

/// Sends `path` to `device`, writing `Accepted`/`Progress` lines to the
/// control client `out`; returns the final response.
pub async fn send_file<W: AsyncWrite + Unpin>(
    peers: &Peers,
    counters: &Counters,
    device: &DeviceId,
    path: &Path,
    out: &mut W,
) -> Response {
    let Some(h) = peers.session(device) else {
        return Response::error(
            NO_PEER,
            format!("no session with {device} (see `dsoftbus peers`)"),
        );
    };
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) => return Response::error(FAILURE, format!("cannot open {}: {e}", path.display())),
    };
    let size = match file.metadata() {
        Ok(m) if m.is_file() => m.len(),
        Ok(m) if m.is_dir() => return Response::error(FAILURE, directory_message(path)),
        Ok(_) => {
            return Response::error(FAILURE, format!("{} is not a regular file", path.display()))
        }
        Err(e) => return Response::error(FAILURE, format!("{}: {e}", path.display())),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .and_then(|n| transfer::sanitize_name(&n))
        .unwrap_or_else(|| "file".into());
    let id = fastrand::u32(..);
    let (rtx, mut rrx) = mpsc::channel(64);
    h.routes
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(id, rtx);
    let mut guard = SendGuard {
        routes: h.routes.clone(),
        cmd: h.cmd.clone(),
        id,
        finished: false,
    };
    // Exit 7 at once; after END the receiver may have stored the file and
    // only its DONE was lost, so say so instead of guessing.
    let lost = |after_end: bool| {
        let what = if after_end {
            "closed before the receiver confirmed the file (it may have been stored: check its inbox)"
        } else {
            "closed during the transfer; the file was not stored"
        };
        Response::error(TRANSFER, format!("the session with {device} {what}"))
    };
    let offer = AppMsg::Offer {
        id,
        size,
        name: name.clone(),
    };
    if h.cmd.send(SessionCmd::App(offer.encode())).await.is_err() {
        return lost(false);
    }
    info!("offering {name:?} ({size} bytes) to peer={device}");
    match tokio::time::timeout(Duration::from_secs(30), rrx.recv()).await {
        Ok(Some(AppMsg::Accept { .. })) => {}
        Ok(Some(AppMsg::Reject { reason, .. })) => {
            guard.finished = true;
            return Response::error(TRANSFER, format!("{device} refused the file: {reason}"));
        }
        Ok(Some(other)) => {
            return Response::error(
                TRANSFER,
                format!("unexpected answer to the offer: {other:?}"),
            )
        }
        Ok(None) => return lost(false),
        Err(_) => return Response::error(TIMEOUT, format!("{device} did not answer the offer")),
    }
    if write_resp(
        out,
        &Response::Accepted {
            total: size,
            name: name.clone(),
        },
    )
    .await
    .is_err()
    {
        return Response::error(FAILURE, "control client went away");
    }
    let start = StdInstant::now();
    let (ftx, mut frx) = mpsc::channel(8);
    tokio::task::spawn_blocking(move || transfer::read_file(file, ftx));
    let mut sent: u64 = 0;
    let mut acked: u64 = 0;
    let mut digest: Option<[u8; 32]> = None;
    let mut last_progress = StdInstant::now();
    let inactivity = Duration::from_secs(60);
    loop {
        let reading = digest.is_none() && sent.saturating_sub(acked) < WINDOW;
        let msg = tokio::select! {
            p = frx.recv(), if reading => {
                match p {
                    Some(ReadPiece::Data(d)) => {
                        if sent + d.len() as u64 > size {
                            return Response::error(FAILURE, format!("{} grew while it was being sent", path.display()));
                        }
                        debug_assert!(d.len() <= CHUNK_LEN);
                        let chunk = encode_chunk(id, sent, &d);
                        sent += d.len() as u64;
                        if h.cmd.send(SessionCmd::App(chunk)).await.is_err() {
                            return lost(false);
                        }
                    }
                    Some(ReadPiece::Eof(sha)) => {
                        if sent != size {
                            return Response::error(FAILURE, format!("{} shrank while it was being sent", path.display()));
                        }
                        let end = AppMsg::End { id, size, sha256: sha };
                        if h.cmd.send(SessionCmd::App(end.encode())).await.is_err() {
                            return lost(false);
                        }
                        digest = Some(sha);
                    }
                    Some(ReadPiece::Error(e)) => {
                        return Response::error(FAILURE, format!("reading {}: {e}", path.display()));
                    }
                    None => return Response::error(FAILURE, "file reader stopped"),
                }
                continue;
            }
            m = tokio::time::timeout(inactivity, rrx.recv()) => m,
        };
        match msg {
            Err(_) => {
                return Response::error(
                    TIMEOUT,
                    format!("{device} made no progress for {} s", inactivity.as_secs()),
                )
            }
            Ok(None) => return lost(digest.is_some()),
            Ok(Some(AppMsg::Ack { received, .. })) => {
                acked = acked.max(received.min(sent));
                if last_progress.elapsed() >= Duration::from_millis(100) || acked == size {
                    last_progress = StdInstant::now();
                    if write_resp(out, &Response::Progress { acked, total: size })
                        .await
                        .is_err()
                    {
                        return Response::error(
                            FAILURE,
                            "control client went away; transfer cancelled",
                        );
                    }
                }
            }
            Ok(Some(AppMsg::Done {
                status, message, ..
            })) => {
                guard.finished = true;
                if status == DONE_OK && digest.is_some() {
                    let secs = start.elapsed().as_secs_f64();
                    bump(&counters.files_sent);
                    info!(
                        "sent {name:?} ({size} bytes) to peer={device} in {secs:.2} s: receiver verified sha256"
                    );
                    return Response::Sent {
                        bytes: size,
                        secs,
                        sha256: hex::encode(digest.unwrap_or_default()),
                        message,
                    };
                }
                bump(&counters.transfers_failed);
                warn!("send of {name:?} to peer={device} failed: {message}");
                return Response::error(TRANSFER, format!("{device}: {message}"));
            }
            Ok(Some(_)) => {}
        }
    }
}

/// What `send` says about a directory (folders are not supported yet).
pub fn directory_message(path: &Path) -> String {
    format!(
        "{} is a directory; sending folders is not supported yet (send the files one by one, or an archive of the folder)",
        path.display()
    )
}
