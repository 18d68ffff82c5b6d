//! The daemon's shared state and the narrow handles tasks get.
//!
//! Nothing here imports `daemon`, `discovery` or `session`: those three used
//! to import each other in a circle through one 17-field `Shared`. Now
//! [`Peers`] is the one lock (peer table, pins, sessions, node policy),
//! discovery gets a [`DiscoveryCtx`] (config, peers, counters, log limiter,
//! two wake-ups) and never sees sessions or transfers; session, accept, dial
//! and control tasks get [`Shared`], whose fields are themselves handles.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use dsoftbus::node::{
    Admission, Candidates, LogLimiter, LogLimiterConfig, SessionCaps, Ticket, TrustMode,
};
use dsoftbus::transport::tcp::HostClock;
use dsoftbus::{DeviceId, HandshakeConfig, IdentityBindings, LocalIdentity, PeerTable, PublicKey};
use rand_core::{OsRng, TryRngCore, UnwrapErr};
use tokio::sync::{mpsc, oneshot, watch, Notify, OwnedSemaphorePermit, Semaphore};

use crate::config::DaemonConfig;
use crate::control::IfaceInfo;
use crate::identity::KnownPeers;
use crate::transfer::AppMsg;

/// Handshake deadline (from connect / accept to the last handshake frame).
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// A command for a session task.
pub enum SessionCmd {
    /// Ping the peer; the RTT is sent back.
    Ping { reply: oneshot::Sender<Duration> },
    /// One application message (a DATA payload).
    App(Vec<u8>),
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
    /// Outgoing transfers: transfer id → the sender task's inbox.
    pub routes: Arc<Mutex<HashMap<u32, mpsc::Sender<AppMsg>>>>,
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

/// The log limiter of `dsoftbus::node::log` on the host clock: per kind of
/// line, a burst of [`LOG_BURST`] then one a second, with suppressed counts.
/// Every line a remote peer can trigger goes through it, so the worst case
/// is (32 kinds + 1) × (8 + t) lines in t seconds (≈ 33 lines/s, about
/// 6 KB/s at 200 bytes a line) whatever the network sends.
pub struct RateLimiter {
    inner: Mutex<LogLimiter>,
    clock: HostClock,
}

/// Lines of one kind that may come back to back (then 1/s).
pub const LOG_BURST: u32 = 8;

impl Default for RateLimiter {
    fn default() -> Self {
        RateLimiter {
            inner: Mutex::new(LogLimiter::new(LogLimiterConfig {
                per_second: 1,
                burst: LOG_BURST,
                max_kinds: 32,
            })),
            clock: HostClock::new(),
        }
    }
}

impl RateLimiter {
    /// Returns `Some(suppressed_since_last)` when a line may be logged now.
    pub fn allow(&self, what: &'static str) -> Option<u64> {
        let now = self.clock.now();
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .allow(what, now)
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

/// The daemon context handed to session, accept, dial and control tasks.
/// Each field is a narrow handle (an `Arc` or a `Copy` value) that can be
/// given on its own to a task needing only that — see [`Shared::discovery`].
pub struct Shared {
    pub cfg: Arc<DaemonConfig>,
    pub me: LocalIdentity,
    pub clock: HostClock,
    pub started: std::time::Instant,
    /// The session port actually bound (and announced).
    pub port: u16,
    pub state: Peers,
    pub wake_dialer: Arc<Notify>,
    pub announce_soon: Arc<Notify>,
    /// Our encoded announce, and a socket to send it straight to a peer we
    /// are about to dial (so it knows our key before our handshake arrives).
    pub announce_bytes: Vec<u8>,
    pub hello: std::net::UdpSocket,
    pub dial_permits: Arc<Semaphore>,
    pub incoming_permits: Arc<Semaphore>,
    pub shutdown: watch::Receiver<bool>,
    pub counters: Arc<Counters>,
    pub limiter: Arc<RateLimiter>,
    pub conn_ids: AtomicU64,
    /// Remote service calls (`crate::remote`).
    pub remote: Arc<crate::remote::Remote>,
}

impl Shared {
    pub fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock()
    }

    /// The discovery tasks' handle.
    pub fn discovery(&self) -> DiscoveryCtx {
        DiscoveryCtx {
            cfg: self.cfg.clone(),
            peers: self.state.clone(),
            clock: self.clock,
            counters: self.counters.clone(),
            limiter: self.limiter.clone(),
            wake_dialer: self.wake_dialer.clone(),
            announce_soon: self.announce_soon.clone(),
            shutdown: self.shutdown.clone(),
        }
    }

    pub fn next_conn_id(&self) -> u64 {
        self.conn_ids.fetch_add(1, Ordering::Relaxed)
    }

    pub fn session(&self, id: &DeviceId) -> Option<SessionHandle> {
        self.lock().sessions.get(id).cloned()
    }

    pub fn handshake_cfg(&self) -> HandshakeConfig {
        HandshakeConfig {
            timeout: HANDSHAKE_TIMEOUT,
        }
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
