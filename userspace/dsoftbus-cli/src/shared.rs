//! The daemon's shared state and the narrow handles tasks get.
//!
//! Nothing here imports `daemon`, `discovery` or `session`: those three used
//! to import each other in a circle through one 17-field `Shared`. Now
//! [`Peers`] is the one lock (peer table, pins, sessions, node policy);
//! discovery gets a [`DiscoveryCtx`] (config, peers, counters, log limiter,
//! two wake-ups) and never sees sessions or transfers; a session task gets a
//! [`SessionCtx`] (peers, clock, trust mode, [`TransferCfg`], counters, log
//! limiter, shutdown) and never sees the listener, the dialer or discovery.
//! Only `daemon` (accept, dial, maintenance, control) holds the whole
//! daemon context, and it is private there.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use dsoftbus::node::{
    Admission, Candidates, Consent, Deny, LogLimiter, LogLimiterConfig, SessionCaps, Slot, Ticket,
    TrustMode,
};
pub use dsoftbus::transport::tcp::HostClock;
use dsoftbus::{DeviceId, IdentityBindings, PeerTable, PublicKey};
use rand_core::{OsRng, TryRngCore, UnwrapErr};
use tokio::sync::{mpsc, oneshot, watch, Notify, OwnedSemaphorePermit};

use crate::config::DaemonConfig;
use crate::control::IfaceInfo;
use crate::identity::KnownPeers;

/// A command for a session task.
pub enum SessionCmd {
    /// Ping the peer; the RTT is sent back.
    Ping { reply: oneshot::Sender<Duration> },
    /// One application message (a DATA payload).
    App(Vec<u8>),
    /// Start an outgoing file transfer (`dsoftbus send`).
    Send(Box<crate::transfer::SendReq>),
    /// The answer to an incoming offer that waited for consent.
    Answer {
        carrier: crate::transfer::Carrier,
        answer: Answer,
    },
    /// Close the session in order.
    Close,
}

/// How other tasks reach a live, authenticated session.
#[derive(Clone)]
pub struct SessionHandle {
    pub conn_id: u64,
    pub cmd: mpsc::Sender<SessionCmd>,
    pub addr: SocketAddr,
    pub key: PublicKey,
    /// The transfer version `send` offers this peer, decided from its
    /// announce when the session came up (`transfer::version_for`).
    pub transfer: dsoftbus::transfer::Version,
}

/// Most refusal reasons remembered for `peers`.
pub const MAX_REFUSALS: usize = 256;

/// Why a device has no session, for `peers`.
#[derive(Clone, Debug)]
pub struct Refusal {
    pub why: String,
    /// The key it presented (announce or handshake), if any.
    pub key: Option<PublicKey>,
    pub at: std::time::Instant,
}

/// Everything behind the lock.
pub struct State {
    pub table: PeerTable,
    pub known: KnownPeers,
    pub sessions: HashMap<DeviceId, SessionHandle>,
    pub dialing: HashSet<DeviceId>,
    /// Candidate addresses per id, each with its own dial backoff.
    pub candidates: Candidates,
    /// Inbound half-open slots and the pre-DH handshake limiter.
    pub admission: Admission,
    /// Half-open connections that can be told to give up their slot.
    pub evictors: HashMap<Ticket, Arc<Notify>>,
    /// Session caps (one id per key, per source, reserved for pinned).
    pub caps: SessionCaps,
    /// Why devices are refused (bounded).
    pub refusals: HashMap<DeviceId, Refusal>,
    /// A pin's last use changed since the file was written.
    pub known_touched: bool,
    pub interfaces: Vec<IfaceInfo>,
}

/// The key a claimed id is bound to: the known-peers pin first, then (only
/// in `tofu` mode) the key discovery pinned in the peer table.
pub struct Bindings<'a> {
    pub table: &'a PeerTable,
    pub known: &'a KnownPeers,
    pub mode: TrustMode,
}

impl IdentityBindings for Bindings<'_> {
    fn bound_key(&self, id: &DeviceId) -> Option<PublicKey> {
        if let Some(k) = self.known.get(id) {
            return Some(*k);
        }
        if !self.mode.allows_unpinned() {
            return None;
        }
        self.table.bound_key(id)
    }
}

impl State {
    pub fn bindings(&self, mode: TrustMode) -> Bindings<'_> {
        Bindings {
            table: &self.table,
            known: &self.known,
            mode,
        }
    }

    /// Remembers why `id` is refused (bounded: the oldest reason goes).
    pub fn refuse(&mut self, id: &DeviceId, why: String, key: Option<PublicKey>) {
        if !self.refusals.contains_key(id) && self.refusals.len() >= MAX_REFUSALS {
            if let Some(old) = self
                .refusals
                .iter()
                .min_by_key(|(_, r)| r.at)
                .map(|(i, _)| i.clone())
            {
                self.refusals.remove(&old);
            }
        }
        self.refusals.insert(
            id.clone(),
            Refusal {
                why,
                key,
                at: std::time::Instant::now(),
            },
        );
    }
}

macro_rules! counters {
    ($($name:ident),* $(,)?) => {
        /// Event counters shown by `dsoftbus status`.
        #[derive(Default)]
        pub struct Counters { $(pub $name: AtomicU64,)* }
        impl Counters {
            pub fn snapshot(&self) -> Vec<(String, u64)> {
                vec![$((stringify!($name).to_string(), self.$name.load(Ordering::Relaxed)),)*]
            }
        }
    };
}

counters!(
    datagrams,
    announces_sent,
    malformed,
    oversized,
    key_conflicts,
    unknown_ignored,
    identity_mismatch,
    identity_unknown,
    handshake_failed,
    half_open_refused,
    half_open_evicted,
    handshake_limited,
    sessions_refused,
    auto_pins_refused,
    sessions_opened,
    sessions_closed,
    files_received,
    files_sent,
    transfers_failed,
    outbound_overflow,
);

pub fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

macro_rules! log_kinds {
    ($($(#[$doc:meta])* $v:ident = $s:literal,)*) => {
        /// Every kind of line that goes through the [`RateLimiter`]: each
        /// has its own bucket (the limiter tracks exactly this many kinds).
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum LogKind { $($(#[$doc])* $v,)* }

        impl LogKind {
            /// All kinds, in declaration order.
            pub const ALL: &'static [LogKind] = &[$(LogKind::$v,)*];

            /// The kind's name in the core limiter.
            pub fn as_str(self) -> &'static str {
                match self { $(LogKind::$v => $s,)* }
            }
        }
    };
}

log_kinds!(
    // Accept and dial (daemon.rs).
    AcceptError = "accept-error",
    HalfOpen = "half-open",
    HalfOpenEvict = "half-open-evict",
    HsStart = "hs-start",
    Expired = "expired",
    Dial = "dial",
    DialFailed = "dial-failed",
    /// Local (control socket), limited all the same.
    Forget = "forget",
    // Discovery (discovery.rs).
    Scan = "scan",
    NoIface = "no-iface",
    McSend = "mc-send",
    BcSend = "bc-send",
    UcSend = "uc-send",
    Recv = "recv",
    PinConflict = "pin-conflict",
    Unknown = "unknown",
    PeerPending = "peer-pending",
    PeerFound = "peer-found",
    PeerUpdated = "peer-updated",
    KeyConflict = "key-conflict",
    Malformed = "malformed",
    Oversized = "oversized",
    Full = "full",
    // Sessions (session.rs).
    SessionReplaced = "session-replaced",
    PinSave = "pin-save",
    PinEvicted = "pin-evicted",
    AutoPin = "auto-pin",
    AuthOk = "auth-ok",
    IdentityBound = "identity-bound",
    AppDecode = "app-decode",
    Mismatch = "mismatch",
    UnknownId = "unknown-id",
    Mac1 = "mac1",
    Hs = "hs",
    HsOther = "hs-other",
    HsEof = "hs-eof",
    HsLimited = "hs-limited",
    Evicted = "evicted",
    Conn = "conn",
    Refused = "refused",
    Overflow = "overflow",
    SessionClosed = "session-closed",
    // Incoming transfers (session.rs).
    NoInbox = "no-inbox",
    InboxError = "inbox-error",
    Receiving = "receiving",
    ChunkOrder = "chunk-order",
    PeerCancel = "peer-cancel",
    Received = "received",
    ReceiveFailed = "receive-failed",
    TransferIdle = "transfer-idle",
    TransfersAborted = "transfers-aborted",
    OfferPending = "offer-pending",
    // Remote service calls (remote.rs).
    RpcMalformed = "rpc-malformed",
    RemoteCallAllowed = "remote-call-allowed",
    RemoteCallDenied = "remote-call-denied",
);

/// The log limiter of `dsoftbus::node::log` on the host clock: per
/// [`LogKind`], a burst of [`LOG_BURST`] then one a second, with suppressed
/// counts. Every line a remote peer can trigger goes through it, each kind
/// in its own bucket (`max_kinds` is the number of kinds, so none shares
/// the overflow bucket), so the worst case is the core's
/// `(max_kinds + 1) × (burst + t)` = (55 + 1) × (8 + t) lines in t seconds
/// (≈ 56 lines/s, about 11 KB/s at 200 bytes a line) whatever the network
/// sends; [`LOG_KINDS`] is checked against the kinds at compile time.
pub struct RateLimiter {
    inner: Mutex<LogLimiter>,
    clock: HostClock,
}

/// Lines of one kind that may come back to back (then 1/s).
pub const LOG_BURST: u32 = 8;

/// Kinds of limited lines (the figure in the worst case above and in
/// docs/reliability.md).
pub const LOG_KINDS: usize = 55;
const _: () = assert!(LogKind::ALL.len() == LOG_KINDS, "update LOG_KINDS and docs");

/// The limiter's configuration: one bucket per [`LogKind`].
pub fn log_config() -> LogLimiterConfig {
    LogLimiterConfig {
        per_second: 1,
        burst: LOG_BURST,
        max_kinds: LogKind::ALL.len(),
    }
}

impl Default for RateLimiter {
    fn default() -> Self {
        RateLimiter {
            inner: Mutex::new(LogLimiter::new(log_config())),
            clock: HostClock::new(),
        }
    }
}

impl RateLimiter {
    /// Returns `Some(suppressed_since_last)` when a line may be logged now.
    pub fn allow(&self, kind: LogKind) -> Option<u64> {
        let now = self.clock.now();
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .allow(kind.as_str(), now)
    }

    /// Lines suppressed so far.
    pub fn suppressed(&self) -> u64 {
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .suppressed()
    }
}

/// Formats the "(N similar suppressed)" tail.
pub fn suppressed(n: u64) -> String {
    if n == 0 {
        String::new()
    } else {
        format!(" ({n} similar suppressed)")
    }
}

/// The peer state behind one lock (peer table, pins, sessions, node
/// policy): a cheap, cloneable handle.
#[derive(Clone)]
pub struct Peers(Arc<Mutex<State>>);

impl Peers {
    pub fn new(st: State) -> Self {
        Peers(Arc::new(Mutex::new(st)))
    }

    pub fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock must not wedge the daemon: the state
        // is plain data and stays consistent between statements.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The live session with `id`, if any.
    pub fn session(&self, id: &DeviceId) -> Option<SessionHandle> {
        self.lock().sessions.get(id).cloned()
    }
}

/// What the discovery tasks need, and nothing else: discovery never sees
/// sessions, transfers or the control socket.
#[derive(Clone)]
pub struct DiscoveryCtx {
    pub cfg: Arc<DaemonConfig>,
    pub peers: Peers,
    pub clock: HostClock,
    pub counters: Arc<Counters>,
    pub limiter: Arc<RateLimiter>,
    /// Wakes the dialer (a peer was found or moved).
    pub wake_dialer: Arc<Notify>,
    /// Asks the announcer for an early announce (a new peer).
    pub announce_soon: Arc<Notify>,
    pub shutdown: watch::Receiver<bool>,
}

impl DiscoveryCtx {
    pub fn lock(&self) -> MutexGuard<'_, State> {
        self.peers.lock()
    }
}

/// The settings and slots of incoming transfers (shared by all sessions).
/// What the user (or the expiry) decided about a pending offer.
pub enum Answer {
    /// Accepted; the transfer holds this slot until it ends.
    Accept(SlotGuard),
    /// Denied (by the user, or expired).
    Deny(Deny),
}

/// A pending offer's handle in the consent table: the session to answer
/// and what to show in `dsoftbus transfers`.
#[derive(Clone, Debug)]
pub struct OfferRef {
    pub cmd: mpsc::Sender<SessionCmd>,
    pub carrier: crate::transfer::Carrier,
    pub name: String,
    pub files: usize,
    pub bytes: u64,
}

/// The consent table shared by every session (`dsoftbus::node::consent`).
pub type ConsentTable = Arc<Mutex<Consent<OfferRef>>>;

/// An accepted incoming transfer's slot; released when dropped.
pub struct SlotGuard {
    consent: ConsentTable,
    slot: Option<Slot>,
}

impl SlotGuard {
    pub fn new(consent: ConsentTable, slot: Slot) -> Self {
        SlotGuard {
            consent,
            slot: Some(slot),
        }
    }
}

impl Drop for SlotGuard {
    fn drop(&mut self) {
        if let Some(s) = self.slot.take() {
            self.consent
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .release(s);
        }
    }
}

/// Incoming-transfer settings, the consent table, the resume store and the
/// transfer board, shared by the sessions.
pub struct TransferCfg {
    /// Where received files go (`None`: every OFFER is refused).
    pub inbox: Option<PathBuf>,
    pub max_receive_bytes: u64,
    /// Idle timeout of an accepted incoming transfer.
    pub idle: Duration,
    /// Who may send files, pending offers and the incoming-transfer slots.
    pub consent: ConsentTable,
    /// Partial files of interrupted incoming transfers, kept for a resume.
    pub resume: Arc<Mutex<crate::transfer::ResumeStore>>,
    /// In flight and recent transfers, for `dsoftbus transfers`.
    pub board: Arc<Mutex<crate::transfer::Board>>,
}

impl TransferCfg {
    pub fn new(cfg: &DaemonConfig) -> Self {
        TransferCfg {
            inbox: cfg.inbox.clone(),
            max_receive_bytes: cfg.max_receive_bytes,
            idle: cfg.transfer_idle,
            consent: Arc::new(Mutex::new(Consent::new(cfg.consent))),
            resume: Arc::new(Mutex::new(crate::transfer::ResumeStore::default())),
            board: Arc::new(Mutex::new(crate::transfer::Board::default())),
        }
    }
}

#[derive(Clone)]
pub struct SessionCtx {
    pub peers: Peers,
    /// Remote service calls carried by the session.
    pub remote: crate::remote::RemoteCtx,
    pub clock: HostClock,
    pub trust_mode: TrustMode,
    pub transfer: Arc<TransferCfg>,
    pub counters: Arc<Counters>,
    pub limiter: Arc<RateLimiter>,
    pub shutdown: watch::Receiver<bool>,
}

impl SessionCtx {
    pub fn lock(&self) -> MutexGuard<'_, State> {
        self.peers.lock()
    }
}

/// The OS entropy source as the core's `RngCore + CryptoRng`.
pub fn os_rng() -> UnwrapErr<OsRng> {
    OsRng.unwrap_err()
}

/// An admitted inbound connection's half-open slot: released when dropped;
/// `evicted` fires when fair admission gives the slot to another source.
pub struct AcceptSlot {
    pub peers: Peers,
    pub ticket: Ticket,
    pub evicted: Arc<Notify>,
}

impl Drop for AcceptSlot {
    fn drop(&mut self) {
        let mut st = self.peers.lock();
        st.admission.release(self.ticket);
        st.evictors.remove(&self.ticket);
    }
}

/// What bounds a connection while it is half-open.
pub enum HalfOpen {
    /// An outgoing dial (the permit is held for its `Drop`).
    Dial(#[allow(dead_code)] OwnedSemaphorePermit),
    /// An accepted connection.
    Accept(AcceptSlot),
}

impl HalfOpen {
    pub fn evicted(&self) -> Option<Arc<Notify>> {
        match self {
            HalfOpen::Dial(_) => None,
            HalfOpen::Accept(a) => Some(a.evicted.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dsoftbus::time::Instant;

    #[test]
    fn every_log_kind_has_its_own_bucket() {
        let names: HashSet<&str> = LogKind::ALL.iter().map(|k| k.as_str()).collect();
        assert_eq!(names.len(), LogKind::ALL.len(), "two kinds share a name");
        assert!(!names.contains("other"), "the core's overflow kind");
        assert_eq!(log_config().max_kinds, LogKind::ALL.len());
        // A full burst of every kind at one instant: none is suppressed, so
        // no kind shares a bucket with another (with 32 buckets for 38
        // kinds, the last kinds seen shared the overflow bucket).
        let mut l = LogLimiter::new(log_config());
        let t0 = Instant::from_millis(0);
        for k in LogKind::ALL {
            for i in 0..LOG_BURST {
                assert!(l.allow(k.as_str(), t0).is_some(), "{k:?} line {i}");
            }
        }
        assert_eq!(l.suppressed(), 0);
    }

    #[test]
    fn log_volume_is_bounded_as_documented() {
        assert_eq!(
            LogKind::ALL.len(),
            LOG_KINDS,
            "update LOG_KINDS and docs/reliability.md"
        );
        let mut l = LogLimiter::new(log_config());
        // 30 s of every kind flooded 100 times a second.
        let secs = 30u64;
        let mut allowed = 0u64;
        for ms in (0..secs * 1000).step_by(10) {
            for k in LogKind::ALL {
                if l.allow(k.as_str(), Instant::from_millis(ms)).is_some() {
                    allowed += 1;
                }
            }
        }
        let bound = (LOG_KINDS as u64 + 1) * (u64::from(LOG_BURST) + secs);
        assert_eq!(l.worst_case_lines(secs), bound);
        assert!(allowed <= bound, "{allowed} > {bound}");
        // Each kind got its burst plus about one a second.
        assert!(allowed >= LOG_KINDS as u64 * (u64::from(LOG_BURST) + secs - 1));
    }
}
