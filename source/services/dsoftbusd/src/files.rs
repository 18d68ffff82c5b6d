//! File transfer in dsoftbusd: the core's `dsoftbus::transfer` (wire.md §12)
//! over session data messages.
//!
//! **Carrier** (wire.md §12 rule). A transfer to a peer that announced
//! `streams/1` (when node mode announces it too) goes on a stream of kind
//! `0x40` (`crate::streams`), any other in session data messages, one
//! transfer message each. Both arrive here as messages on a [`Route`]: data
//! messages whose first byte is `0x40..=0x4f` are transfer messages;
//! everything else goes on to the other data users (remote calls).
//!
//! **Receiving** ([`Files::on_data`]): an OFFER creates a core `Receiver`
//! (bounds [`receiver_config`]: at most [`MAX_OFFER_ENTRIES`] entries and
//! [`INBOX_MAX_BYTES`] in all, [`RX_WINDOW`] in flight; the core denies
//! `too-large` / `invalid-name` before anything is exposed). The decision is
//! the core's consent policy (`dsoftbus::node::consent`, boot option
//! `dsoftbusd.accept=any|known|none`, default `none`); an OS node has no user
//! pins, so `user_pinned` is always `false` (`known` therefore accepts
//! nobody today) and there is no user to `ask`. An accepted offer reserves its
//! size in the in-memory [`Inbox`] (bounds [`INBOX_MAX_BYTES`],
//! [`INBOX_MAX_FILES`]; the oldest verified files make room, unfinished
//! transfers never do: an offer that does not fit is denied `busy`). File
//! bytes are kept apart until the core reports the file's SHA-256 verified,
//! then stored with the line `dsoftbusd: file received from=<id> name=<n>
//! bytes=<b> ok`. An accepted transfer with no data for [`STALL_TIMEOUT`] is
//! cancelled (`expired`) by [`timer`].
//!
//! **Sending** ([`Outgoing`]): a deterministic generated file
//! (`nexus-<our id>-<bytes>.bin`, [`generate`]) offered with its SHA-256,
//! bytes produced on demand within the receiver's window. Node mode sends one
//! after the boot option `dsoftbusd.send=<device>:<bytes>` once a session with
//! that device is up; the dual-node proof sends its 1 MiB bulk this way.

use alloc::collections::VecDeque;
use alloc::format;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;
use core::cell::{Cell, RefCell};
use core::time::Duration;

use dsoftbus::node::consent::{AcceptPolicy, Consent, ConsentConfig, Slot, Verdict};
use dsoftbus::node::{LogLimiter, LogSafe};
use dsoftbus::transfer::{
    self, name, wire, Entry, EntryKind, FileHasher, Outcome, Reason, Receiver, ReceiverConfig,
    ReceiverEvent, Sender, SenderConfig, SenderEvent, Side, Version,
};
use dsoftbus::{DeviceId, Instant};

use crate::link::{now, Link, LinkError, Socket};
use crate::node::sup;

/// Bytes the inbox holds: verified files plus the full size of every
/// accepted transfer not finished yet.
pub const INBOX_MAX_BYTES: u64 = 8 << 20;
/// Files the inbox holds (verified ones plus those of unfinished transfers).
pub const INBOX_MAX_FILES: usize = 16;
/// Entries (files and directories) in one offer.
pub const MAX_OFFER_ENTRIES: usize = INBOX_MAX_FILES;
/// Receive window of each incoming transfer (bytes in flight, unacknowledged).
pub const RX_WINDOW: u32 = 256 << 10;
/// Accepted incoming transfers in progress (consent's active table).
pub const MAX_ACTIVE: usize = 4;
/// Accepted incoming transfers in progress from one peer.
pub const MAX_ACTIVE_PER_PEER: usize = 2;
/// Incoming transfer state machines held at once (active ones, plus a
/// finished one whose last message waits for its session): an offer beyond
/// it is denied `busy` at once.
pub const MAX_RECEIVERS: usize = 2 * MAX_ACTIVE;
/// An accepted incoming transfer without data for this long is cancelled.
pub const STALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest file `dsoftbusd.send` generates.
pub const MAX_SEND_BYTES: u64 = INBOX_MAX_BYTES;
/// File bytes per DATA message we send: a DATA message with its 2-byte
/// length prefix fits one stream frame (65 511 bytes), so on the stream
/// carrier each is one session data message, not two.
pub const CHUNK: usize = dsoftbus::stream::MAX_DATA_PAYLOAD - 2 - wire::DATA_HEADER_LEN;
/// Sessions the planned send is tried on before it gives up.
pub const MAX_SEND_TRIES: u32 = 3;

/// The receiver bounds of every incoming transfer.
pub fn receiver_config() -> ReceiverConfig {
    ReceiverConfig {
        max_entries: MAX_OFFER_ENTRIES,
        max_total_size: INBOX_MAX_BYTES,
        window: RX_WINDOW,
        ..ReceiverConfig::default()
    }
}

/// `dsoftbusd.accept`: the policy, and the line to log about the option.
pub fn parse_accept(opt: Option<&str>) -> (AcceptPolicy, Option<String>) {
    match opt.map(|s| (s, AcceptPolicy::parse(s))) {
        None => (AcceptPolicy::None, None),
        Some((_, Some(AcceptPolicy::Ask))) => (
            AcceptPolicy::None,
            Some(String::from(
                "dsoftbusd.accept=ask refused: an OS node has no user to ask; incoming files are denied (accept=none)",
            )),
        ),
        Some((_, Some(p))) => (p, None),
        Some((s, None)) => (
            AcceptPolicy::None,
            Some(format!(
                "dsoftbusd.accept={s} is not any|known|none; incoming files are denied (accept=none)"
            )),
        ),
    }
}

/// `dsoftbusd.send=<device>:<bytes>` (1..=[`MAX_SEND_BYTES`]).
pub fn parse_send(opt: &str) -> Result<(DeviceId, u64), String> {
    let (dev, bytes) = opt
        .rsplit_once(':')
        .ok_or_else(|| format!("'{opt}' is not <device>:<bytes>"))?;
    let dev = DeviceId::new(dev).map_err(|e| format!("device '{dev}': {e:?}"))?;
    match bytes.parse::<u64>() {
        Ok(b) if (1..=MAX_SEND_BYTES).contains(&b) => Ok((dev, b)),
        _ => Err(format!("bytes '{bytes}' must be 1..={MAX_SEND_BYTES}")),
    }
}

/// The bytes of a generated file: a SplitMix64 stream keyed by `seed`,
/// byte `i` is byte `i % 8` (little-endian) of word `i / 8`; any range can
/// be produced without the rest.
pub fn generate(seed: u64, offset: u64, out: &mut [u8]) {
    let mut i = 0;
    while i < out.len() {
        let pos = offset + i as u64;
        let word = splitmix(seed ^ (pos / 8).wrapping_mul(0x9e37_79b9_7f4a_7c15)).to_le_bytes();
        let from = (pos % 8) as usize;
        let n = (8 - from).min(out.len() - i);
        out[i..i + n].copy_from_slice(&word[from..from + n]);
        i += n;
    }
}

fn splitmix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Seed of a generated file (its name).
fn seed_of(name: &str) -> u64 {
    crate::node::fnv1a(name)
}

/// Verified files kept in memory, and the room reserved for unfinished
/// transfers. Invariant: `stored + reserved ≤ INBOX_MAX_BYTES`, `files +
/// reserved_files ≤ INBOX_MAX_FILES`.
#[derive(Default, Debug)]
pub struct Inbox {
    files: VecDeque<Stored>,
    stored: u64,
    reserved: u64,
    reserved_files: usize,
}

/// A verified file in the inbox: who sent it, its name, its bytes.
#[derive(Debug)]
pub struct Stored {
    /// The sender.
    pub from: DeviceId,
    /// Its path in the offer.
    pub name: String,
    /// Its bytes (SHA-256 verified by the core).
    pub bytes: Vec<u8>,
}

impl Inbox {
    /// Reserve room for an accepted offer of `bytes` in `files` files,
    /// evicting the oldest verified files as needed (they are returned, so
    /// the caller can say which). `Err` (nothing changed) if unfinished
    /// transfers alone leave no room.
    pub fn reserve(&mut self, bytes: u64, files: usize) -> Result<Vec<Stored>, ()> {
        let bytes_ok = self
            .reserved
            .checked_add(bytes)
            .is_some_and(|b| b <= INBOX_MAX_BYTES);
        if !bytes_ok || self.reserved_files + files > INBOX_MAX_FILES {
            return Err(());
        }
        let mut evicted = Vec::new();
        while self.stored + self.reserved + bytes > INBOX_MAX_BYTES
            || self.files.len() + self.reserved_files + files > INBOX_MAX_FILES
        {
            let Some(old) = self.files.pop_front() else {
                break;
            };
            self.stored -= old.bytes.len() as u64;
            evicted.push(old);
        }
        self.reserved += bytes;
        self.reserved_files += files;
        Ok(evicted)
    }

    /// Give back a reservation (the transfer ended without these files).
    pub fn unreserve(&mut self, bytes: u64, files: usize) {
        self.reserved = self.reserved.saturating_sub(bytes);
        self.reserved_files = self.reserved_files.saturating_sub(files);
    }

    /// Store a verified file; its reservation (`bytes.len()`, one file)
    /// becomes stored bytes.
    pub fn store(&mut self, from: DeviceId, name: String, bytes: Vec<u8>) {
        self.unreserve(bytes.len() as u64, 1);
        self.stored += bytes.len() as u64;
        self.files.push_back(Stored { from, name, bytes });
    }

    /// (verified files, their bytes, reserved bytes, reserved files).
    pub fn usage(&self) -> (usize, u64, u64, usize) {
        (
            self.files.len(),
            self.stored,
            self.reserved,
            self.reserved_files,
        )
    }
}

/// Where a transfer's messages go: the session's data messages (the only
/// carrier today), or a test's queue.
pub(crate) trait Sink {
    /// Queue one transfer message.
    fn send(&mut self, msg: &[u8]) -> Result<(), LinkError>;
}

impl Sink for dsoftbus::Connection {
    fn send(&mut self, msg: &[u8]) -> Result<(), LinkError> {
        self.send_data(msg).map_err(LinkError::Conn)
    }
}

/// Where a transfer runs: (session, stream id), stream 0 = the session's
/// data messages (stream ids start at 1).
pub(crate) type Route = (u64, u32);

/// For the accept line: which verified files made room (at most 3 named; a
/// peer's offer can push out other peers' files, so it is said).
fn dropped_note(evicted: &[Stored]) -> String {
    if evicted.is_empty() {
        return String::new();
    }
    let mut s = format!("; {} older files dropped from the inbox:", evicted.len());
    for e in evicted.iter().take(3) {
        s.push_str(&format!(
            " {} from={} ({} bytes)",
            LogSafe(&e.name),
            e.from.log_safe(),
            e.bytes.len()
        ));
    }
    if evicted.len() > 3 {
        s.push_str(" ...");
    }
    s
}

/// One incoming transfer.
struct Incoming {
    /// The session (and stream) carrying it.
    route: Route,
    peer: DeviceId,
    rx: Receiver,
    /// Its place in consent's active table, once accepted.
    slot: Option<Slot>,
    /// Reserved in the inbox and not stored yet: (bytes, files).
    reserved: (u64, usize),
    /// Bytes of each entry so far (kept apart until verified).
    parts: Vec<Vec<u8>>,
    /// Last data (or the accept).
    last: Instant,
}

/// A node's transfer state: consent, inbox, incoming transfers, the planned
/// send.
pub(crate) struct Files {
    /// Pending offers carry the session (`conn`) that made them, so a
    /// session's end withdraws its offers only.
    consent: RefCell<Consent<u64>>,
    inbox: RefCell<Inbox>,
    incoming: RefCell<Vec<Incoming>>,
    plan: RefCell<Option<Plan>>,
    next_id: Cell<u32>,
}

/// `dsoftbusd.send`: what to send to whom, and how it went.
struct Plan {
    to: DeviceId,
    bytes: u64,
    tries: u32,
    /// A session is sending it now.
    busy: bool,
    /// Sent, denied, or given up.
    over: bool,
}

/// Logs a line of `kind` if the limiter allows; `$fmt` gets the suffix.
macro_rules! limited {
    ($log:expr, $at:expr, $kind:expr, $lvl:ident, $($fmt:tt)*) => {
        if let Some(n) = $log.borrow_mut().allow($kind, $at) {
            log::$lvl!("{}{}", format_args!($($fmt)*), sup(n));
        }
    };
}

impl Files {
    /// A node's transfers under `policy`, sending nothing.
    pub(crate) fn new(policy: AcceptPolicy) -> Self {
        Files {
            consent: RefCell::new(Consent::new(ConsentConfig {
                policy,
                max_active: MAX_ACTIVE,
                max_active_per_peer: MAX_ACTIVE_PER_PEER,
                ..ConsentConfig::default()
            })),
            inbox: RefCell::new(Inbox::default()),
            incoming: RefCell::new(Vec::new()),
            plan: RefCell::new(None),
            next_id: Cell::new(1),
        }
    }

    /// Plan one generated file of `bytes` for `to`.
    pub(crate) fn plan_send(&self, to: DeviceId, bytes: u64) {
        *self.plan.borrow_mut() = Some(Plan {
            to,
            bytes,
            tries: 0,
            busy: false,
            over: false,
        });
    }

    /// The inbox (for the proof's checks and the docs' figures).
    pub(crate) fn inbox_usage(&self) -> (usize, u64, u64, usize) {
        self.inbox.borrow().usage()
    }

    /// A session with `peer` is up: the planned send, if it is for `peer`
    /// and not under way or over. `me`: our device id (names the file).
    pub(crate) fn start_send(
        &self,
        peer: &DeviceId,
        me: &DeviceId,
        on_stream: bool,
    ) -> Option<Outgoing> {
        let mut plan = self.plan.borrow_mut();
        let p = plan.as_mut()?;
        if &p.to != peer || p.busy || p.over {
            return None;
        }
        let id = self.next_id.get();
        self.next_id.set(id.wrapping_add(1).max(1));
        match Outgoing::generated(id, me, peer, p.bytes) {
            Ok(mut o) => {
                o.start_clock();
                p.busy = true;
                p.tries += 1;
                log::info!(
                    "dsoftbusd: file offered to={peer} name={} bytes={} sha256={} (try {} of {MAX_SEND_TRIES}; carrier {})",
                    LogSafe(o.name()),
                    p.bytes,
                    o.sha256_hex(),
                    p.tries,
                    if on_stream {
                        "a stream of kind 0x40"
                    } else {
                        "session data messages"
                    }
                );
                Some(o)
            }
            Err(e) => {
                p.over = true;
                log::warn!("dsoftbusd: file send to={peer} not started: {e}");
                None
            }
        }
    }

    /// The planned send ended on its session: `Ok(outcome)`, or `Err(why)`
    /// when the session ended first. Reports it; retried on the next session
    /// unless it was done, denied or out of tries.
    pub(crate) fn send_ended(&self, o: &Outgoing, end: Result<&Outcome, &str>) {
        let mut plan = self.plan.borrow_mut();
        let Some(p) = plan.as_mut() else {
            return;
        };
        p.busy = false;
        let head = format!("to={} name={} bytes={}", o.to, LogSafe(o.name()), o.size);
        let why = match end {
            Ok(Outcome::Done) => {
                p.over = true;
                let us = o.elapsed_us();
                log::info!(
                    "dsoftbusd: file sent {head} ok (sha256 verified by the receiver; {us} us, {} KB/s guest time)",
                    u128::from(o.size) * 1_000_000 / u128::from(us) / 1000
                );
                return;
            }
            Ok(Outcome::Denied { reason, .. }) => {
                p.over = true;
                log::warn!("dsoftbusd: file send {head} failed: denied ({reason})");
                return;
            }
            Ok(other) => describe(other),
            Err(e) => String::from(e),
        };
        if p.tries >= MAX_SEND_TRIES {
            p.over = true;
            log::warn!(
                "dsoftbusd: file send {head} failed: {why}; giving up after {MAX_SEND_TRIES} tries"
            );
        } else {
            log::warn!("dsoftbusd: file send {head} failed: {why}; will retry on the next session");
        }
    }

    /// A transfer message from `peer` on `route` (a session data message,
    /// or a message of a transfer stream): true if it was one (handled here:
    /// answers are queued on `sink`, to go out with the session's next
    /// flush), false to hand it to the other data users. `out`: our
    /// outgoing transfer on this route, if any.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn on_data(
        &self,
        sink: &mut dyn Sink,
        route: Route,
        peer: &DeviceId,
        data: &[u8],
        out: Option<&mut Outgoing>,
        log: &RefCell<LogLimiter>,
        at: Instant,
    ) -> Result<bool, LinkError> {
        if !data.first().is_some_and(|k| wire::KIND_RANGE.contains(k)) {
            return Ok(false);
        }
        match wire::header(data) {
            Ok(wire::Header { kind, id, .. }) if !wire::from_sender(kind) => {
                // For a sender: ours, or nobody's (§12.6: ignore).
                if let Some(o) = out.filter(|o| o.tx.id() == id) {
                    let _ = o.tx.handle(data);
                }
            }
            // Any version: the core denies an offer of one this build does
            // not have (v2: no `transfer-v2` in the image) by itself.
            Ok(wire::Header { id, .. }) => self.to_receiver(route, peer, Some(id), data, log, at),
            // An unreadable header: the core answers an offer it can read
            // the id of (e.g. an unknown version); anything else is ignored.
            Err(_) if data[0] == wire::KIND_OFFER => {
                self.to_receiver(route, peer, None, data, log, at)
            }
            Err(_) => {}
        }
        self.transmit(sink, route)?;
        Ok(true)
    }

    fn to_receiver(
        &self,
        route: Route,
        peer: &DeviceId,
        id: Option<u32>,
        data: &[u8],
        log: &RefCell<LogLimiter>,
        at: Instant,
    ) {
        let mut incoming = self.incoming.borrow_mut();
        let known = id.and_then(|id| {
            incoming
                .iter()
                .position(|t| t.route == route && t.rx.id() == Some(id))
        });
        let i = match known {
            Some(i) => i,
            None if data[0] != wire::KIND_OFFER => return, // not a transfer we know
            None => {
                incoming.push(Incoming {
                    route,
                    peer: peer.clone(),
                    rx: Receiver::new(receiver_config()),
                    slot: None,
                    reserved: (0, 0),
                    parts: Vec::new(),
                    last: at,
                });
                incoming.len() - 1
            }
        };
        let t = &mut incoming[i];
        // File bytes straight from the message into the entry's part (no
        // copy into a Data event; the events that follow keep their order).
        if let Ok(d) = t.rx.handle_ref(data) {
            t.last = at;
            if let Some(d) = d {
                if let Some(p) = t.parts.get_mut(usize::from(d.entry)) {
                    p.extend_from_slice(d.data);
                }
            }
        }
        let over = known.is_none() && incoming.len() > MAX_RECEIVERS;
        drop(incoming);
        self.settle(i, over, log, at);
    }

    /// Takes the events of incoming transfer `i`: decides offers (`busy`
    /// first: deny as busy whatever the policy), keeps data, stores verified
    /// files, releases what a finished transfer held.
    fn settle(&self, i: usize, busy: bool, log: &RefCell<LogLimiter>, at: Instant) {
        let mut incoming = self.incoming.borrow_mut();
        let Some(t) = incoming.get_mut(i) else {
            return;
        };
        while let Some(ev) = t.rx.poll_event() {
            match ev {
                ReceiverEvent::Offered => self.decide(t, busy, log, at),
                ReceiverEvent::Data { entry, data, .. } => {
                    t.last = at;
                    if let Some(p) = t.parts.get_mut(usize::from(entry)) {
                        p.extend_from_slice(&data);
                    }
                }
                ReceiverEvent::FileVerified { entry } => {
                    let e = usize::from(entry);
                    let bytes = t.parts.get_mut(e).map(core::mem::take).unwrap_or_default();
                    let (name, hash) =
                        t.rx.offer()
                            .and_then(|o| o.get(e))
                            .map(|x| (x.path.clone(), sha256_hex(&x.kind)))
                            .unwrap_or_default();
                    t.reserved.0 = t.reserved.0.saturating_sub(bytes.len() as u64);
                    t.reserved.1 = t.reserved.1.saturating_sub(1);
                    let n = bytes.len();
                    self.inbox
                        .borrow_mut()
                        .store(t.peer.clone(), name.clone(), bytes);
                    limited!(
                        log,
                        at,
                        "file-received",
                        info,
                        "dsoftbusd: file received from={} name={} bytes={n} ok (sha256 {hash} verified)",
                        t.peer.log_safe(),
                        LogSafe(&name)
                    );
                }
                // Dir: the in-memory inbox keeps files only (a directory
                // entry leaves nothing to store). Complete: only with
                // `caller_hashes`, which this node leaves off.
                ReceiverEvent::Dir { .. } | ReceiverEvent::Complete { .. } => {}
                ReceiverEvent::Finished(o) => {
                    if let Some(s) = t.slot.take() {
                        self.consent.borrow_mut().release(s);
                    }
                    let (b, f) = core::mem::take(&mut t.reserved);
                    self.inbox.borrow_mut().unreserve(b, f);
                    t.parts = Vec::new();
                    match o {
                        Outcome::Done | Outcome::Denied { .. } => {}
                        // The core refused the offer against our bounds
                        // before exposing it (and sent the DENY).
                        Outcome::Failed(transfer::TransferError::Offer(e)) => limited!(
                            log,
                            at,
                            "file-denied",
                            info,
                            "dsoftbusd: file offer denied from={} reason={} (over the inbox bounds or the name rules: {e:?}; accept={})",
                            t.peer.log_safe(),
                            e.reason(),
                            self.consent.borrow().config().policy
                        ),
                        other => limited!(
                            log,
                            at,
                            "file-ended",
                            warn,
                            "dsoftbusd: file transfer from={} ended: {}",
                            t.peer.log_safe(),
                            describe(&other)
                        ),
                    }
                }
            }
        }
    }

    /// An offer is pending on `t`: the consent policy decides, then the
    /// inbox must have room.
    fn decide(&self, t: &mut Incoming, busy: bool, log: &RefCell<LogLimiter>, at: Instant) {
        let (bytes, files, first) = match t.rx.offer() {
            Some(o) => (
                o.iter().map(Entry::size).sum::<u64>(),
                o.iter().filter(|e| !e.is_dir()).count(),
                o.first().map(|e| e.path.clone()).unwrap_or_default(),
            ),
            None => return,
        };
        let verdict = if busy {
            Verdict::Deny(dsoftbus::node::consent::Deny::Busy)
        } else {
            self.consent
                .borrow_mut()
                .offer(&t.peer, false, t.route.0, at)
        };
        let denied = match verdict {
            Verdict::Accept(slot) => match self.inbox.borrow_mut().reserve(bytes, files) {
                Ok(evicted) => {
                    // Room for every file up front, so growth never doubles
                    // it; an allocation failure denies (`io`), never aborts.
                    let sizes: Vec<u64> =
                        t.rx.offer()
                            .map_or(Vec::new(), |o| o.iter().map(Entry::size).collect());
                    let mut parts = Vec::new();
                    let room = parts.try_reserve_exact(sizes.len()).is_ok()
                        && sizes.iter().all(|&n| {
                            let mut v = Vec::new();
                            let ok =
                                usize::try_from(n).is_ok_and(|n| v.try_reserve_exact(n).is_ok());
                            parts.push(v);
                            ok
                        });
                    if !room {
                        self.inbox.borrow_mut().unreserve(bytes, files);
                        self.consent.borrow_mut().release(slot);
                        let _ = t.rx.deny(Reason::Io);
                        limited!(
                            log,
                            at,
                            "file-denied",
                            warn,
                            "dsoftbusd: file offer denied from={} name={} bytes={bytes} reason=io (out of memory)",
                            t.peer.log_safe(),
                            LogSafe(&first)
                        );
                        return;
                    }
                    t.slot = Some(slot);
                    t.reserved = (bytes, files);
                    t.parts = parts;
                    t.last = at;
                    if t.rx.accept().is_ok() {
                        limited!(
                            log,
                            at,
                            "file-accepted",
                            info,
                            "dsoftbusd: file offer accepted from={} name={} bytes={bytes} files={files}{}",
                            t.peer.log_safe(),
                            LogSafe(&first),
                            dropped_note(&evicted)
                        );
                    }
                    return;
                }
                Err(()) => {
                    self.consent.borrow_mut().release(slot);
                    (Reason::Busy, "the inbox is held by unfinished transfers")
                }
            },
            Verdict::Pending(id) => {
                // Not reachable (`ask` is refused at boot); never leave an
                // offer nobody can answer.
                let _ = self.consent.borrow_mut().deny(id);
                (Reason::Declined, "no user to ask")
            }
            Verdict::Deny(d) => (d.reason(), d.as_str()),
        };
        let _ = t.rx.deny(denied.0);
        limited!(
            log,
            at,
            "file-denied",
            info,
            "dsoftbusd: file offer denied from={} name={} bytes={bytes} reason={} ({}; accept={})",
            t.peer.log_safe(),
            LogSafe(&first),
            denied.0,
            denied.1,
            self.consent.borrow().config().policy
        );
    }

    /// Queue on `sink` what the incoming transfers on `route` have to
    /// send; forget those that ended and said everything.
    pub(crate) fn transmit(&self, sink: &mut dyn Sink, route: Route) -> Result<(), LinkError> {
        let mut incoming = self.incoming.borrow_mut();
        for t in incoming.iter_mut().filter(|t| t.route == route) {
            while let Some(m) = t.rx.poll_transmit() {
                sink.send(&m)?;
            }
        }
        incoming.retain(|t| t.route != route || t.rx.outcome().is_none());
        Ok(())
    }

    /// True while an incoming transfer runs (or has something to say) on
    /// `route`.
    pub(crate) fn on_route(&self, route: Route) -> bool {
        self.incoming.borrow().iter().any(|t| t.route == route)
    }

    /// Cancel accepted transfers stalled for [`STALL_TIMEOUT`] (their slot
    /// and room are free at once; the ABORT goes out with their session's
    /// next traffic).
    pub(crate) fn tick(&self, log: &RefCell<LogLimiter>, at: Instant) {
        let stalled: Vec<usize> = self
            .incoming
            .borrow()
            .iter()
            .enumerate()
            .filter(|(_, t)| {
                t.rx.outcome().is_none()
                    && !t.rx.is_pending()
                    && at.saturating_since(t.last) >= STALL_TIMEOUT
            })
            .map(|(i, _)| i)
            .collect();
        for i in stalled {
            if let Some(t) = self.incoming.borrow_mut().get_mut(i) {
                t.rx.cancel(Reason::Expired);
            }
            self.settle(i, false, log, at);
        }
    }

    /// The carrier of session `conn`'s stream `stream` is gone (reset), or
    /// for `None` the whole session: the transfers on it end.
    pub(crate) fn route_gone(
        &self,
        conn: u64,
        stream: Option<u32>,
        log: &RefCell<LogLimiter>,
        at: Instant,
    ) {
        let hit = |r: Route| r.0 == conn && stream.is_none_or(|s| r.1 == s);
        loop {
            let i = self
                .incoming
                .borrow()
                .iter()
                .position(|t| hit(t.route) && t.rx.outcome().is_none());
            let Some(i) = i else { break };
            if let Some(t) = self.incoming.borrow_mut().get_mut(i) {
                t.rx.cancel(Reason::Io);
            }
            self.settle(i, false, log, at);
        }
        self.incoming.borrow_mut().retain(|t| !hit(t.route));
    }

    /// Session `conn` ended: its transfers and its pending offers end with
    /// it (a newer session of the same peer keeps its own).
    pub(crate) fn session_gone(&self, conn: u64, log: &RefCell<LogLimiter>, at: Instant) {
        self.route_gone(conn, None, log, at);
        let _ = self
            .consent
            .borrow_mut()
            .withdraw_where(|p| p.payload == conn);
    }
}

/// The digest of a file entry in hex (empty for a directory): a SHA-256,
/// since this node speaks transfer v1 only (it neither announces
/// `transfer/2` nor offers v2, and the core denies v2 offers).
fn sha256_hex(k: &EntryKind) -> String {
    match k {
        EntryKind::File { digest, .. } => digest.iter().map(|b| format!("{b:02x}")).collect(),
        EntryKind::Dir => String::new(),
    }
}

/// Why a transfer ended, for a log line.
fn describe(o: &Outcome) -> String {
    match o {
        Outcome::Done => String::from("done"),
        Outcome::Denied { by, reason } => format!("denied by {} ({reason})", side(*by)),
        Outcome::Cancelled { by, reason, .. } => {
            format!("cancelled by {} ({reason})", side(*by))
        }
        Outcome::Failed(e) => format!("{e}"),
    }
}

fn side(s: Side) -> &'static str {
    match s {
        Side::Local => "us",
        Side::Peer => "the peer",
    }
}

/// Our side of one outgoing transfer of a generated file.
pub(crate) struct Outgoing {
    tx: Sender,
    seed: u64,
    size: u64,
    to: DeviceId,
    /// When the offer went out (runtime only: the kernel's clock).
    started: Option<nexus_abi::time::Instant>,
    /// Its stream (the stream carrier), or `None`: session data messages.
    stream: Option<dsoftbus::stream::StreamId>,
    buf: Vec<u8>,
}

impl Outgoing {
    /// The generated file `nexus-<me>-<bytes>.bin` for `to`, as transfer
    /// `id` (its SHA-256 is computed here, before the clock starts).
    pub(crate) fn generated(
        id: u32,
        me: &DeviceId,
        to: &DeviceId,
        size: u64,
    ) -> Result<Outgoing, String> {
        let name = name::sanitize_name(&format!("nexus-{me}-{size}.bin"))
            .ok_or_else(|| String::from("no valid file name"))?;
        let seed = seed_of(&name);
        let mut h = FileHasher::new(Version::V1).ok_or("no SHA-256 in this build")?;
        let mut buf = vec![0u8; wire::MAX_CHUNK];
        let mut off = 0u64;
        while off < size {
            let n = (size - off).min(buf.len() as u64) as usize;
            generate(seed, off, &mut buf[..n]);
            h.update(&buf[..n]);
            off += n as u64;
        }
        let entries = vec![Entry {
            path: name,
            kind: EntryKind::File {
                size,
                digest: h.finalize(),
            },
        }];
        let cfg = SenderConfig {
            chunk: CHUNK,
            version: Version::V1,
        };
        let tx = Sender::new(id, entries, cfg).map_err(|e| format!("offer refused: {e:?}"))?;
        Ok(Outgoing {
            tx,
            seed,
            size,
            to: to.clone(),
            started: None,
            stream: None,
            buf,
        })
    }

    /// The offered name.
    pub(crate) fn name(&self) -> &str {
        self.tx.entries().first().map_or("", |e| e.path.as_str())
    }

    /// The offered SHA-256, in hex.
    pub(crate) fn sha256_hex(&self) -> String {
        self.tx
            .entries()
            .first()
            .map_or_else(String::new, |e| sha256_hex(&e.kind))
    }

    /// Microseconds since the offer (at least 1).
    pub(crate) fn elapsed_us(&self) -> u64 {
        self.started.map_or(1, |s| {
            (nexus_abi::time::now()
                .saturating_duration_since(s)
                .as_micros() as u64)
                .max(1)
        })
    }

    /// Restart the clock (the offer goes out now).
    pub(crate) fn start_clock(&mut self) {
        self.started = Some(nexus_abi::time::now());
    }

    /// A message from the receiver (not a transfer message: ignored).
    pub(crate) fn handle(&mut self, msg: &[u8]) {
        let _ = self.tx.handle(msg);
    }

    /// The stream carrying it, if it goes on a stream.
    pub(crate) fn stream(&self) -> Option<dsoftbus::stream::StreamId> {
        self.stream
    }

    /// Carry it on stream `id` (before anything was sent).
    pub(crate) fn set_stream(&mut self, id: dsoftbus::stream::StreamId) {
        self.stream = Some(id);
    }

    /// Its queued messages, each preceded by its length (the stream carrier).
    pub(crate) fn frame_into(&mut self, out: &mut Vec<u8>) {
        while let Some(m) = self.tx.poll_transmit() {
            // At most 65 518 bytes: always encodable.
            let _ = dsoftbus::frame::encode_frame(&m, out);
        }
    }

    /// Tests: make the next data message the window allows; false if none.
    #[cfg(test)]
    pub(crate) fn push_next(&mut self) -> bool {
        let Some(need) = self.tx.poll_need() else {
            return false;
        };
        let n = need.len.min(self.buf.len());
        generate(self.seed, need.offset, &mut self.buf[..n]);
        self.tx
            .push_data(need.entry, need.offset, &self.buf[..n])
            .is_ok()
    }

    /// Give up (its carrier is gone).
    pub(crate) fn cancel(&mut self, reason: Reason) {
        self.tx.cancel(reason);
    }

    /// One bounded step of sending: one facade write
    /// ([`Link::write_piece`]) of what the session holds; if it holds
    /// nothing, the next queued message moved into it (one session message
    /// at most), or else one DATA message (at most [`CHUNK`] file bytes)
    /// made within the receiver's window — and its first piece written.
    /// True if another step has something to do now; false while the
    /// window (or, on a stream, the stream's window) is full or nothing is
    /// left to send.
    ///
    /// Why a step and not "until the window is full": the session loop
    /// looks at its input between steps ([`Link::try_event`],
    /// [`crate::link::Pace`]), so a pong or an acknowledgement that arrived
    /// waits for one facade write, not for up to [`RX_WINDOW`] of
    /// generating, sealing and writing. And why only one message in the
    /// session at a time: a ping or pong the session queues goes out behind
    /// what it already holds.
    pub(crate) async fn pump_step<S: Socket>(
        &mut self,
        link: &mut Link<S>,
        streams: Option<&mut crate::streams::Streams>,
    ) -> Result<bool, LinkError> {
        let mut streams = streams;
        if link.write_piece().await? {
            return Ok(true);
        }
        let room = self.queue(link, streams.as_deref_mut())?;
        if link.write_piece().await? {
            return Ok(true);
        }
        if !room {
            return Ok(false);
        }
        let Some(need) = self.tx.poll_need() else {
            return Ok(false);
        };
        let n = need.len.min(self.buf.len());
        generate(self.seed, need.offset, &mut self.buf[..n]);
        if self
            .tx
            .push_data(need.entry, need.offset, &self.buf[..n])
            .is_err()
        {
            self.tx.cancel(Reason::Io);
        }
        self.queue(link, streams)?;
        link.write_piece().await?;
        Ok(true)
    }

    /// Move our next queued message into the session if it holds nothing
    /// (on a stream: frame our messages for the mux, then take one session
    /// message from it). True if there is room for more data: on a stream,
    /// false while the stream's window is full.
    fn queue<S: Socket>(
        &mut self,
        link: &mut Link<S>,
        streams: Option<&mut crate::streams::Streams>,
    ) -> Result<bool, LinkError> {
        match (self.stream, streams) {
            (Some(_), Some(s)) => {
                let room = s.write_mine(self);
                s.pull_below(&mut link.conn, 1)?;
                Ok(room)
            }
            // A stream transfer without the session's streams: nothing
            // can carry it.
            (Some(_), None) => Ok(false),
            (None, _) => {
                if link.conn.transmit_buf().is_empty() {
                    if let Some(m) = self.tx.poll_transmit() {
                        link.conn.send_data(&m).map_err(LinkError::Conn)?;
                    }
                }
                Ok(true)
            }
        }
    }

    /// How the transfer ended, once it has (its events are drained here).
    pub(crate) fn outcome(&mut self) -> Option<Outcome> {
        while let Some(ev) = self.tx.poll_event() {
            if let SenderEvent::Finished(o) = ev {
                return Some(o);
            }
        }
        self.tx.outcome().cloned()
    }
}

/// Node mode: cancel stalled incoming transfers once a second.
pub(crate) async fn timer(
    files: &Files,
    log: &RefCell<LogLimiter>,
) -> Result<(), nexus_abi::ServiceError> {
    loop {
        nexus_abi::time::sleep(Duration::from_secs(1)).await;
        files.tick(log, now());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::fixtures::id;

    fn t(ms: u64) -> Instant {
        Instant::from_millis(ms)
    }

    /// The session's data messages towards the sender.
    #[derive(Default)]
    struct Queue(Vec<Vec<u8>>);

    impl Sink for Queue {
        fn send(&mut self, msg: &[u8]) -> Result<(), LinkError> {
            self.0.push(msg.to_vec());
            Ok(())
        }
    }

    fn log() -> RefCell<LogLimiter> {
        RefCell::new(LogLimiter::default())
    }

    /// One round: the sender's messages (with data the window allows, each
    /// DATA through `tamper`) into `files` as session `conn`'s, the answers
    /// back to the sender.
    fn round(
        files: &Files,
        conn: u64,
        peer: &DeviceId,
        o: &mut Outgoing,
        tamper: &mut dyn FnMut(&mut Vec<u8>),
        at: Instant,
    ) {
        let mut q = Queue::default();
        let lg = log();
        while let Some(need) = o.tx.poll_need() {
            let mut b = vec![0u8; need.len];
            generate(o.seed, need.offset, &mut b);
            assert!(o.tx.push_data(need.entry, need.offset, &b).is_ok());
        }
        while let Some(mut m) = o.tx.poll_transmit() {
            if m[0] == wire::KIND_DATA {
                tamper(&mut m);
            }
            assert_eq!(
                files.on_data(&mut q, (conn, 0), peer, &m, None, &lg, at),
                Ok(true)
            );
        }
        for m in q.0 {
            o.handle(&m);
        }
    }

    fn send(files: &Files, conn: u64, from: &str, bytes: u64) -> Outcome {
        let mut o = Outgoing::generated(conn as u32, &id(from), &id("me"), bytes).unwrap();
        for _ in 0..200 {
            round(files, conn, &id(from), &mut o, &mut |_| {}, t(0));
            if let Some(end) = o.outcome() {
                return end;
            }
        }
        panic!("no outcome");
    }

    #[test]
    fn any_stores_the_verified_file_and_frees_its_slot() {
        let f = Files::new(AcceptPolicy::Any);
        assert_eq!(send(&f, 1, "a", 300_000), Outcome::Done);
        assert_eq!(f.inbox_usage(), (1, 300_000, 0, 0));
        assert_eq!(f.consent.borrow().active(), 0);
        assert!(f.incoming.borrow().is_empty());
    }

    #[test]
    fn none_and_known_deny_declined_and_store_nothing() {
        for p in [AcceptPolicy::None, AcceptPolicy::Known] {
            let f = Files::new(p);
            let end = send(&f, 1, "a", 1000);
            assert_eq!(
                end,
                Outcome::Denied {
                    by: Side::Peer,
                    reason: Reason::Declined
                },
                "{p}"
            );
            assert_eq!(f.inbox_usage(), (0, 0, 0, 0));
            assert!(f.incoming.borrow().is_empty());
        }
    }

    #[test]
    fn over_the_inbox_bound_is_denied_too_large_by_the_core() {
        let f = Files::new(AcceptPolicy::Any);
        let end = send(&f, 1, "a", INBOX_MAX_BYTES + 1);
        assert_eq!(
            end,
            Outcome::Denied {
                by: Side::Peer,
                reason: Reason::TooLarge
            }
        );
        assert_eq!(f.inbox_usage(), (0, 0, 0, 0));
    }

    #[test]
    fn a_wrong_byte_is_never_stored_and_everything_is_released() {
        let f = Files::new(AcceptPolicy::Any);
        let mut o = Outgoing::generated(1, &id("a"), &id("me"), 100_000).unwrap();
        let mut flip = |m: &mut Vec<u8>| {
            if let Some(b) = m.last_mut() {
                *b ^= 1;
            }
        };
        let mut end = None;
        for _ in 0..50 {
            round(&f, 1, &id("a"), &mut o, &mut flip, t(0));
            end = o.outcome();
            if end.is_some() {
                break;
            }
        }
        assert!(
            matches!(
                end,
                Some(Outcome::Cancelled {
                    by: Side::Peer,
                    reason: Reason::HashMismatch,
                    ..
                })
            ),
            "{end:?}"
        );
        assert_eq!(f.inbox_usage(), (0, 0, 0, 0));
        assert_eq!(f.consent.borrow().active(), 0);
        assert!(f.incoming.borrow().is_empty());
    }

    /// Offers only (no data yet) from `from` on session `conn`.
    fn offer(f: &Files, conn: u64, from: &str, bytes: u64) -> Outgoing {
        let mut o = Outgoing::generated(conn as u32, &id(from), &id("me"), bytes).unwrap();
        let mut q = Queue::default();
        while let Some(m) = o.tx.poll_transmit() {
            assert_eq!(
                f.on_data(&mut q, (conn, 0), &id(from), &m, None, &log(), t(0)),
                Ok(true)
            );
        }
        for m in q.0 {
            o.handle(&m);
        }
        o
    }

    fn denied(o: &mut Outgoing) -> Option<Reason> {
        match o.outcome() {
            Some(Outcome::Denied { reason, .. }) => Some(reason),
            _ => None,
        }
    }

    #[test]
    fn per_peer_caps_and_unfinished_reservations_deny_busy() {
        let f = Files::new(AcceptPolicy::Any);
        // Two from one peer are in progress; its third is busy, another
        // peer still gets in.
        let mut a1 = offer(&f, 1, "a", 1000);
        let mut a2 = offer(&f, 2, "a", 1000);
        let mut a3 = offer(&f, 3, "a", 1000);
        assert_eq!((denied(&mut a1), denied(&mut a2)), (None, None));
        assert_eq!(denied(&mut a3), Some(Reason::Busy));
        // Unfinished transfers hold their room: 2 × 4 MiB fill the inbox.
        let mut b = offer(&f, 4, "b", INBOX_MAX_BYTES / 2);
        let mut c = offer(&f, 5, "c", INBOX_MAX_BYTES / 2);
        assert_eq!((denied(&mut b), denied(&mut c)), (None, Some(Reason::Busy)));
        assert_eq!(f.consent.borrow().active(), 3);
        // A session that ends gives everything of it back.
        f.session_gone(4, &log(), t(1));
        let mut d = offer(&f, 6, "d", INBOX_MAX_BYTES / 2);
        assert_eq!(denied(&mut d), None);
        assert_eq!(f.consent.borrow().active(), 3);
    }

    #[test]
    fn a_stalled_transfer_is_cancelled_and_frees_its_room() {
        let f = Files::new(AcceptPolicy::Any);
        let mut o = offer(&f, 1, "a", 1000);
        assert_eq!(f.inbox_usage().2, 1000);
        f.tick(&log(), t(STALL_TIMEOUT.as_millis() as u64 - 1));
        assert_eq!(f.consent.borrow().active(), 1);
        f.tick(&log(), t(STALL_TIMEOUT.as_millis() as u64));
        assert_eq!(f.consent.borrow().active(), 0);
        assert_eq!(f.inbox_usage(), (0, 0, 0, 0));
        // The ABORT goes out with the session's next traffic.
        let mut q = Queue::default();
        assert_eq!(f.transmit(&mut q, (1, 0)), Ok(()));
        for m in q.0 {
            o.handle(&m);
        }
        assert!(matches!(
            o.outcome(),
            Some(Outcome::Cancelled {
                reason: Reason::Expired,
                ..
            })
        ));
        assert!(f.incoming.borrow().is_empty());
    }

    /// The image has no `transfer-v2`: a v2 offer (what a Linux node sends
    /// a peer that announced `transfer/2`; this node does not) is denied
    /// `unsupported-version` in v2, holds nothing, and v1 still works.
    #[test]
    fn a_version_2_offer_is_denied_cleanly() {
        assert!(!Version::V2.supported(), "the OS build speaks v1 only");
        let f = Files::new(AcceptPolicy::Any);
        let entries = vec![Entry {
            path: String::from("a.bin"),
            kind: EntryKind::File {
                size: 5,
                digest: [7; 32],
            },
        }];
        let cfg = SenderConfig {
            version: Version::V2,
            ..SenderConfig::default()
        };
        let mut tx = Sender::new(3, entries, cfg).unwrap();
        let mut q = Queue::default();
        while let Some(m) = tx.poll_transmit() {
            assert_eq!(
                f.on_data(&mut q, (1, 0), &id("linux"), &m, None, &log(), t(0)),
                Ok(true)
            );
        }
        assert_eq!(f.transmit(&mut q, (1, 0)), Ok(()));
        assert_eq!(q.0.len(), 1);
        assert_eq!((q.0[0][0], q.0[0][1]), (wire::KIND_DENY, 2));
        assert_eq!(tx.handle(&q.0[0]), Ok(()));
        assert_eq!(
            tx.outcome(),
            Some(&Outcome::Denied {
                by: Side::Peer,
                reason: Reason::UnsupportedVersion
            })
        );
        assert_eq!(f.consent.borrow().active(), 0);
        assert_eq!(f.inbox_usage(), (0, 0, 0, 0));
        let mut o = offer(&f, 2, "linux", 1000);
        assert_eq!(denied(&mut o), None);
    }

    #[test]
    fn other_data_kinds_are_not_ours() {
        let f = Files::new(AcceptPolicy::Any);
        let mut q = Queue::default();
        for m in [&[0x20u8, 1, 2][..], &[0x30, 1], &[], &[0x50]] {
            assert_eq!(
                f.on_data(&mut q, (1, 0), &id("a"), m, None, &log(), t(0)),
                Ok(false)
            );
        }
        // A transfer kind for no known transfer: taken, ignored.
        let stray = wire::encode_data(Version::V1, 9, 0, 0, b"x");
        assert_eq!(
            f.on_data(&mut q, (1, 0), &id("a"), &stray, None, &log(), t(0)),
            Ok(true)
        );
        assert!(q.0.is_empty() && f.incoming.borrow().is_empty());
    }

    #[test]
    fn accept_option() {
        assert_eq!(parse_accept(None), (AcceptPolicy::None, None));
        assert_eq!(parse_accept(Some("any")).0, AcceptPolicy::Any);
        assert_eq!(parse_accept(Some("known")).0, AcceptPolicy::Known);
        assert_eq!(parse_accept(Some("none")), (AcceptPolicy::None, None));
        let (p, why) = parse_accept(Some("ask"));
        assert_eq!(p, AcceptPolicy::None);
        assert!(why.is_some_and(|w| w.contains("no user to ask")));
        let (p, why) = parse_accept(Some("yes"));
        assert_eq!(p, AcceptPolicy::None);
        assert!(why.is_some());
    }

    #[test]
    fn send_option() {
        assert_eq!(parse_send("os2vm-b:65536"), Ok((id("os2vm-b"), 65536)));
        assert!(parse_send("os2vm-b").is_err());
        assert!(parse_send("os2vm-b:0").is_err());
        assert!(parse_send(&format!("b:{}", MAX_SEND_BYTES + 1)).is_err());
        assert!(parse_send(":5").is_err());
    }

    #[test]
    fn generated_bytes_do_not_depend_on_the_split() {
        let mut whole = vec![0u8; 1000];
        generate(7, 3, &mut whole);
        let mut parts = vec![0u8; 1000];
        for (i, c) in parts.chunks_mut(13).enumerate() {
            generate(7, 3 + (i * 13) as u64, c);
        }
        assert_eq!(whole, parts);
        let mut other = vec![0u8; 1000];
        generate(8, 3, &mut other);
        assert_ne!(whole, other);
    }

    #[test]
    fn inbox_evicts_verified_files_never_reservations() {
        let mut ib = Inbox::default();
        let half = INBOX_MAX_BYTES / 2;
        assert_eq!(ib.reserve(half, 1).map(|v| v.len()), Ok(0));
        ib.store(id("a"), "1".into(), vec![0; half as usize]);
        assert_eq!(ib.reserve(half, 1).map(|v| v.len()), Ok(0));
        // Full: the verified file makes room, the unfinished one cannot.
        let dropped = ib.reserve(half, 1).unwrap();
        assert_eq!(dropped.len(), 1);
        assert_eq!(
            (dropped[0].name.as_str(), dropped[0].from.as_str()),
            ("1", "a")
        );
        assert!(dropped_note(&dropped)
            .contains("1 older files dropped from the inbox: 1 from=a (4194304 bytes)"));
        assert!(ib.reserve(1, 1).is_err());
        assert_eq!(ib.usage(), (0, 0, INBOX_MAX_BYTES, 2));
        ib.unreserve(half, 1);
        assert_eq!(ib.reserve(half, 1).map(|v| v.len()), Ok(0));
        assert!(ib.reserve(INBOX_MAX_BYTES + 1, 1).is_err());
    }

    #[test]
    fn inbox_file_count_bound() {
        let mut ib = Inbox::default();
        for i in 0..INBOX_MAX_FILES {
            assert_eq!(ib.reserve(1, 1).map(|v| v.len()), Ok(0));
            ib.store(id("a"), format!("{i}"), vec![1]);
        }
        assert_eq!(ib.reserve(1, 2).map(|v| v.len()), Ok(2));
        assert_eq!(ib.usage().0 + ib.usage().3, INBOX_MAX_FILES);
        assert!(ib.reserve(1, INBOX_MAX_FILES).is_err());
    }
}
