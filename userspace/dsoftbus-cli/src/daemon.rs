//! `dsoftbus daemon`: wiring of discovery, sessions and the control socket.
//!
//! One `std::sync::Mutex<State>` holds the peer table, the known-peers pins
//! and the session registry; it is only ever held for short, non-async
//! critical sections. Every task is spawned on the tokio runtime:
//!
//! - `discovery::announcer` / `discovery::receiver`: UDP announces in and out;
//! - `accept_loop`: the session TCP listener (responder side);
//! - `maintenance`: expiry, and dialing peers the tie-break says we dial;
//! - one `session::run` per TCP stream;
//! - `control_server`: the unix control socket.
//!
//! Bounds (all enforced): peer table `max_peers` (default 32, at most 4 per
//! source IP); sessions `max_sessions` (32); handshakes in progress
//! `max_half_open` incoming plus `max_half_open` outgoing (16 each); control
//! clients 16; incoming transfers `max_incoming_transfers` (4); per session a
//! 32-command queue, at most 16 MiB of file data in flight, 32 pending pings.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use anyhow::Context;
use dsoftbus::transport::tcp::HostClock;
use dsoftbus::{
    should_initiate, Connection, DeviceId, HandshakeConfig, IdentityBindings, LocalIdentity,
    PeerTable, PeerTableConfig, PeerTarget, PublicKey,
};
use rand_core::{OsRng, TryRngCore, UnwrapErr};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot, watch, Notify, OwnedSemaphorePermit, Semaphore};
use tracing::{debug, info, warn};

use crate::config::DaemonConfig;
use crate::control::{self, IfaceInfo, PeerInfo, Request, Response, StatusInfo};
use crate::exit::{Failure, WithCode, CONFIG, FAILURE, IN_USE, NO_PEER, TIMEOUT};
use crate::identity::{self, fingerprint, KnownPeers};
use crate::transfer::AppMsg;
use crate::{discovery, session};

/// Most control-socket clients served at once.
pub const MAX_CONTROL_CLIENTS: usize = 16;
/// TCP connect timeout when dialing a peer.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
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

/// Redial bookkeeping for one peer.
#[derive(Clone, Copy, Debug, Default)]
pub struct Backoff {
    pub failures: u32,
    pub next: Option<std::time::Instant>,
}

/// Everything behind the lock.
pub struct State {
    pub table: PeerTable,
    pub known: KnownPeers,
    pub sessions: HashMap<DeviceId, SessionHandle>,
    pub dialing: HashSet<DeviceId>,
    pub backoff: HashMap<DeviceId, Backoff>,
    pub interfaces: Vec<IfaceInfo>,
}

/// The key a claimed id is bound to: the known-peers pin first, then (unless
/// `--require-known`) the key discovery pinned in the peer table.
pub struct Bindings<'a> {
    pub table: &'a PeerTable,
    pub known: &'a KnownPeers,
    pub require_known: bool,
}

impl IdentityBindings for Bindings<'_> {
    fn bound_key(&self, id: &DeviceId) -> Option<PublicKey> {
        if let Some(k) = self.known.get(id) {
            return Some(*k);
        }
        if self.require_known {
            return None;
        }
        self.table.bound_key(id)
    }
}

impl State {
    pub fn bindings(&self, require_known: bool) -> Bindings<'_> {
        Bindings {
            table: &self.table,
            known: &self.known,
            require_known,
        }
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

/// One-per-second logging for a category of noisy events (floods).
#[derive(Default)]
pub struct RateLimiter {
    slots: Mutex<HashMap<&'static str, (Option<std::time::Instant>, u64)>>,
}

impl RateLimiter {
    /// Returns `Some(suppressed_since_last)` when a line may be logged now.
    pub fn allow(&self, what: &'static str) -> Option<u64> {
        let mut m = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        let slot = m.entry(what).or_insert((None, 0));
        let now = std::time::Instant::now();
        match slot.0 {
            Some(t) if now.duration_since(t) < Duration::from_secs(1) => {
                slot.1 += 1;
                None
            }
            _ => {
                let s = slot.1;
                *slot = (Some(now), 0);
                Some(s)
            }
        }
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

/// Shared daemon context.
pub struct Shared {
    pub cfg: DaemonConfig,
    pub me: LocalIdentity,
    pub clock: HostClock,
    pub started: std::time::Instant,
    /// The session port actually bound (and announced).
    pub port: u16,
    pub state: Mutex<State>,
    pub wake_dialer: Notify,
    pub announce_soon: Notify,
    /// Our encoded announce, and a socket to send it straight to a peer we
    /// are about to dial (so it knows our key before our handshake arrives).
    pub announce_bytes: Vec<u8>,
    pub hello: std::net::UdpSocket,
    pub accept_permits: Arc<Semaphore>,
    pub dial_permits: Arc<Semaphore>,
    pub incoming_permits: Arc<Semaphore>,
    pub shutdown: watch::Receiver<bool>,
    pub counters: Counters,
    pub limiter: RateLimiter,
    conn_ids: AtomicU64,
}

impl Shared {
    pub fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock must not wedge the daemon: the state
        // is plain data and stays consistent between statements.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
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

/// Runs the daemon until SIGINT/SIGTERM.
pub async fn run(cfg: DaemonConfig) -> Result<(), Failure> {
    crate::perms::check_state(&cfg.paths.state_dir)?;
    let (keys, created) = identity::load_or_create_key(&cfg.paths.state_dir)?;
    if created {
        info!(
            "created a new static key in {}",
            cfg.paths.state_dir.join(identity::KEY_FILE).display()
        );
    }
    let known = KnownPeers::load(&cfg.paths.state_dir)?;
    let id = identity::device_id(cfg.device_id.as_deref(), keys.public())?;
    let services = cfg
        .services
        .iter()
        .map(|s| dsoftbus::ServiceName::new(s))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Failure::new(CONFIG, format!("bad service name: {e}")))?;
    if let Some(inbox) = &cfg.inbox {
        crate::perms::prepare_inbox(inbox)?;
    }

    let listener = TcpListener::bind((cfg.listen, cfg.port))
        .await
        .with_context(|| format!("session port {}:{}", cfg.listen, cfg.port))
        .code(IN_USE)?;
    let port = listener.local_addr()?.port();
    let control = bind_control(&cfg.paths.control_socket).await?;
    let disc = discovery::Discovery::bind(&cfg).code(IN_USE)?;
    let announce = dsoftbus::Announce::new(id.clone(), port, *keys.public(), services)
        .map_err(|e| Failure::new(CONFIG, format!("cannot build the announce: {e}")))?;

    let hello = std::net::UdpSocket::bind((std::net::Ipv4Addr::UNSPECIFIED, 0)).code(IN_USE)?;
    hello.set_nonblocking(true)?;

    let mut table_cfg = PeerTableConfig::for_interval(cfg.announce_interval);
    table_cfg.capacity = cfg.max_peers;
    // Jitter stretches the interval by up to 25%: expire after 3 full
    // (stretched) intervals plus one, so one lost datagram never drops a peer.
    table_cfg.expiry = cfg.announce_interval.mul_f64(4.0);
    let table = PeerTable::new(id.clone(), *keys.public(), table_cfg);

    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let sh = Arc::new(Shared {
        me: LocalIdentity::new(id.clone(), keys.clone()),
        clock: HostClock::new(),
        started: std::time::Instant::now(),
        port,
        state: Mutex::new(State {
            table,
            known,
            sessions: HashMap::new(),
            dialing: HashSet::new(),
            backoff: HashMap::new(),
            interfaces: Vec::new(),
        }),
        wake_dialer: Notify::new(),
        announce_soon: Notify::new(),
        announce_bytes: announce.encode(),
        hello,
        accept_permits: Arc::new(Semaphore::new(cfg.max_half_open)),
        dial_permits: Arc::new(Semaphore::new(cfg.max_half_open)),
        incoming_permits: Arc::new(Semaphore::new(cfg.max_incoming_transfers)),
        shutdown: shutdown_rx,
        counters: Counters::default(),
        limiter: RateLimiter::default(),
        conn_ids: AtomicU64::new(1),
        cfg,
    });
    let disc = Arc::new(disc);
    disc.rescan(&sh);
    info!(
        "node up device={} key={} port={} discovery={}:{} mode={} interfaces=[{}] require_known={} inbox={}",
        id,
        fingerprint(keys.public()),
        port,
        dsoftbus::DISCOVERY_GROUP,
        sh.cfg.discovery_port,
        sh.cfg.discovery.name(),
        sh.lock()
            .interfaces
            .iter()
            .map(|i| format!("{} {} {}", i.name, i.addr, i.delivery))
            .collect::<Vec<_>>()
            .join(", "),
        sh.cfg.require_known,
        sh.cfg
            .inbox
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "none".into()),
    );

    let tasks = vec![
        tokio::spawn(discovery::announcer(sh.clone(), disc.clone(), announce)),
        tokio::spawn(discovery::receiver(sh.clone(), disc)),
        tokio::spawn(accept_loop(sh.clone(), listener)),
        tokio::spawn(maintenance(sh.clone())),
        tokio::spawn(control_server(sh.clone(), control)),
    ];

    wait_for_signal().await;
    info!("shutting down: closing sessions");
    let _ = shutdown_tx.send(true);
    // Give sessions a moment to send their CLOSE frames.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    while !sh.lock().sessions.is_empty() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for t in tasks {
        t.abort();
    }
    let _ = std::fs::remove_file(&sh.cfg.paths.control_socket);
    info!("stopped");
    Ok(())
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// Binds the control socket with mode 0600; refuses when another daemon
/// answers on it, removes a stale socket file otherwise.
async fn bind_control(path: &std::path::Path) -> Result<UnixListener, Failure> {
    if let Some(dir) = path.parent() {
        identity::ensure_state_dir(dir)?;
    }
    if path.exists() {
        if UnixStream::connect(path).await.is_ok() {
            return Err(Failure::new(
                IN_USE,
                format!(
                    "another daemon is running (control socket {} answers)",
                    path.display()
                ),
            ));
        }
        std::fs::remove_file(path)
            .with_context(|| format!("removing stale socket {}", path.display()))
            .code(IN_USE)?;
    }
    let l = UnixListener::bind(path)
        .with_context(|| format!("control socket {}", path.display()))
        .code(IN_USE)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("chmod 600 {}", path.display()))
        .code(FAILURE)?;
    Ok(l)
}

async fn accept_loop(sh: Arc<Shared>, listener: TcpListener) {
    loop {
        let (stream, addr) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                if let Some(n) = sh.limiter.allow("accept-error") {
                    warn!("accept failed: {e}{}", suppressed(n));
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = sh.accept_permits.clone().try_acquire_owned() else {
            bump(&sh.counters.half_open_refused);
            if let Some(n) = sh.limiter.allow("half-open") {
                warn!(
                    "refusing connection from {addr}: {} handshakes already in progress{}",
                    sh.cfg.max_half_open,
                    suppressed(n)
                );
            }
            continue;
        };
        let _ = stream.set_nodelay(true);
        let conn = Connection::accept(&sh.me, &mut os_rng(), sh.clock.now(), sh.handshake_cfg());
        tokio::spawn(session::run(sh.clone(), stream, addr, conn, permit, None));
    }
}

fn backoff_delay(failures: u32) -> Duration {
    let base = 250u64.saturating_mul(1 << failures.min(6)).min(10_000);
    Duration::from_millis(base + fastrand::u64(0..=base / 2))
}

/// Expires old peers and dials the ones the tie-break says we dial.
async fn maintenance(sh: Arc<Shared>) {
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut shutdown = sh.shutdown.clone();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = sh.wake_dialer.notified() => {}
            _ = shutdown.changed() => return,
        }
        let now = std::time::Instant::now();
        let targets: Vec<(PeerTarget, SocketAddr)> = {
            let mut guard = sh.lock();
            let st = &mut *guard;
            let expired = st.table.expire(sh.clock.now());
            if expired > 0 {
                debug!("{expired} peer(s) expired");
            }
            let table = &st.table;
            st.backoff.retain(|id, _| table.get(id).is_some());
            let mut v = Vec::new();
            for e in st.table.iter() {
                let id = e.device_id();
                if !should_initiate(sh.me.id(), id)
                    || st.sessions.contains_key(id)
                    || st.dialing.contains(id)
                    || (sh.cfg.require_known && st.known.get(id).is_none())
                {
                    continue;
                }
                if let Some(next) = st.backoff.get(id).and_then(|b| b.next) {
                    if now < next {
                        continue;
                    }
                }
                v.push((PeerTarget::from(e), e.session_addr()));
            }
            for (t, _) in &v {
                st.dialing.insert(t.id.clone());
            }
            v
        };
        for (target, addr) in targets {
            match sh.dial_permits.clone().try_acquire_owned() {
                Ok(p) => {
                    tokio::spawn(dial(sh.clone(), target, addr, p));
                }
                Err(_) => {
                    sh.lock().dialing.remove(&target.id);
                }
            }
        }
    }
}

async fn dial(sh: Arc<Shared>, target: PeerTarget, addr: SocketAddr, permit: OwnedSemaphorePermit) {
    let id = target.id.clone();
    debug!("session connect peer={id} addr={addr}");
    // The listener binds our claimed id to the key it learned from our
    // announce: make sure it has one, straight to its discovery port, just
    // before the handshake (its first multicast one may not have arrived yet).
    let _ = sh.hello.send_to(
        &sh.announce_bytes,
        SocketAddr::new(addr.ip(), sh.cfg.discovery_port),
    );
    tokio::time::sleep(Duration::from_millis(10)).await;
    let confirmed = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
        Ok(Ok(stream)) => {
            let _ = stream.set_nodelay(true);
            match Connection::connect(
                &sh.me,
                target.clone(),
                &mut os_rng(),
                sh.clock.now(),
                sh.handshake_cfg(),
            ) {
                Ok(conn) => {
                    session::run(sh.clone(), stream, addr, conn, permit, Some(target)).await
                }
                Err(e) => {
                    warn!("cannot start a handshake with peer={id}: {e}");
                    false
                }
            }
        }
        Ok(Err(e)) => {
            debug!("connect to peer={id} addr={addr} failed: {e}");
            false
        }
        Err(_) => {
            debug!("connect to peer={id} addr={addr} timed out");
            false
        }
    };
    let mut st = sh.lock();
    st.dialing.remove(&id);
    let b = st.backoff.entry(id).or_default();
    if confirmed {
        // The session ran and ended: redial soon, but not in a hot loop.
        *b = Backoff {
            failures: 0,
            next: Some(std::time::Instant::now() + backoff_delay(0)),
        };
    } else {
        b.failures = b.failures.saturating_add(1);
        b.next = Some(std::time::Instant::now() + backoff_delay(b.failures));
    }
    drop(st);
    sh.wake_dialer.notify_one();
}

async fn control_server(sh: Arc<Shared>, listener: UnixListener) {
    let permits = Arc::new(Semaphore::new(MAX_CONTROL_CLIENTS));
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let Ok(p) = permits.clone().try_acquire_owned() else {
            debug!("control socket: too many clients");
            let busy = format!("daemon busy: {MAX_CONTROL_CLIENTS} control clients connected; try again in a few seconds");
            control::refuse_busy(stream, busy);
            continue;
        };
        let sh = sh.clone();
        tokio::spawn(async move {
            if let Err(e) = control_client(sh, stream).await {
                debug!("control client: {e}");
            }
            drop(p);
        });
    }
}

pub async fn write_resp<W: AsyncWriteExt + Unpin>(w: &mut W, r: &Response) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(r).map_err(std::io::Error::other)?;
    line.push(b'\n');
    // A control client that stops reading is dropped instead of holding
    // its slot (and a transfer) forever.
    tokio::time::timeout(control::WRITE_TIMEOUT, w.write_all(&line))
        .await
        .map_err(|_| {
            std::io::Error::new(std::io::ErrorKind::TimedOut, "control client not reading")
        })?
}

async fn control_client(sh: Arc<Shared>, stream: UnixStream) -> std::io::Result<()> {
    let (r, mut w) = stream.into_split();
    let mut r = BufReader::new(r);
    loop {
        let mut line = Vec::new();
        let mut limited = (&mut r).take(control::MAX_LINE as u64 + 1);
        let read = limited.read_until(b'\n', &mut line);
        let Ok(n) = tokio::time::timeout(control::IDLE_TIMEOUT, read).await else {
            return Ok(()); // idle: free the slot
        };
        let n = n?;
        if n == 0 {
            return Ok(());
        }
        if line.len() > control::MAX_LINE {
            write_resp(&mut w, &Response::error(FAILURE, "request too long")).await?;
            return Ok(());
        }
        let req: Request = match serde_json::from_slice(&line) {
            Ok(r) => r,
            Err(e) => {
                write_resp(
                    &mut w,
                    &Response::error(FAILURE, format!("bad request: {e}")),
                )
                .await?;
                continue;
            }
        };
        let resp = match req {
            Request::Status => Response::Status(status(&sh)),
            Request::Peers => Response::Peers { peers: peers(&sh) },
            Request::Ping { device, timeout_ms } => ping(&sh, &device, timeout_ms).await,
            Request::Send { device, path } => match DeviceId::new(&device) {
                Ok(id) => session::send_file(&sh, &id, &path, &mut w).await,
                Err(_) => Response::error(NO_PEER, format!("{device:?} is not a valid device id")),
            },
            Request::Trust { device, key } => trust(&sh, &device, &key),
            Request::Forget { device } => forget(&sh, &device),
        };
        write_resp(&mut w, &resp).await?;
    }
}

fn status(sh: &Shared) -> StatusInfo {
    let st = sh.lock();
    StatusInfo {
        device: sh.me.id().to_string(),
        key: hex::encode(sh.me.public_key().as_bytes()),
        fingerprint: fingerprint(sh.me.public_key()),
        port: sh.port,
        discovery_port: sh.cfg.discovery_port,
        discovery: sh.cfg.discovery.name().into(),
        interfaces: st.interfaces.clone(),
        peers: st.table.len(),
        sessions: st.sessions.len(),
        known: st.known.len(),
        require_known: sh.cfg.require_known,
        inbox: sh.cfg.inbox.as_ref().map(|p| p.display().to_string()),
        uptime_s: sh.started.elapsed().as_secs(),
        counters: sh.counters.snapshot(),
    }
}

fn peers(sh: &Shared) -> Vec<PeerInfo> {
    let st = sh.lock();
    let now = sh.clock.now();
    let mut out: Vec<PeerInfo> = st
        .table
        .iter()
        .map(|e| PeerInfo {
            device: e.device_id().to_string(),
            addr: Some(e.session_addr().to_string()),
            key: hex::encode(e.static_key().as_bytes()),
            fingerprint: fingerprint(e.static_key()),
            pinned: st.known.get(e.device_id()).is_some(),
            session: st.sessions.contains_key(e.device_id()),
            last_seen_ms: Some(now.saturating_since(e.last_seen()).as_millis() as u64),
            services: e
                .services()
                .iter()
                .map(|s| s.as_str().to_string())
                .collect(),
        })
        .collect();
    for (id, h) in &st.sessions {
        if st.table.get(id).is_none() {
            out.push(PeerInfo {
                device: id.to_string(),
                addr: Some(h.addr.to_string()),
                key: hex::encode(h.key.as_bytes()),
                fingerprint: fingerprint(&h.key),
                pinned: st.known.get(id).is_some(),
                session: true,
                last_seen_ms: None,
                services: vec![],
            });
        }
    }
    for (id, k) in st.known.iter() {
        if st.table.get(id).is_none() && !st.sessions.contains_key(id) {
            out.push(PeerInfo {
                device: id.to_string(),
                addr: None,
                key: hex::encode(k.as_bytes()),
                fingerprint: fingerprint(k),
                pinned: true,
                session: false,
                last_seen_ms: None,
                services: vec![],
            });
        }
    }
    out.sort_by(|a, b| a.device.cmp(&b.device));
    out
}

async fn ping(sh: &Shared, device: &str, timeout_ms: u64) -> Response {
    let Some(h) = DeviceId::new(device).ok().and_then(|id| sh.session(&id)) else {
        return Response::error(
            NO_PEER,
            format!("no session with {device:?} (see `dsoftbus peers`)"),
        );
    };
    let (tx, rx) = oneshot::channel();
    if h.cmd.send(SessionCmd::Ping { reply: tx }).await.is_err() {
        return Response::error(NO_PEER, format!("the session with {device} just closed"));
    }
    match tokio::time::timeout(Duration::from_millis(timeout_ms.clamp(1, 600_000)), rx).await {
        Ok(Ok(rtt)) => Response::Pong {
            device: device.to_string(),
            rtt_us: rtt.as_micros() as u64,
        },
        Ok(Err(_)) => Response::error(NO_PEER, format!("the session with {device} closed")),
        Err(_) => Response::error(
            TIMEOUT,
            format!("no pong from {device} within {timeout_ms} ms"),
        ),
    }
}

fn trust(sh: &Shared, device: &str, key: &str) -> Response {
    let id = match DeviceId::new(device) {
        Ok(id) => id,
        Err(e) => return Response::error(crate::exit::USAGE, format!("bad device id: {e}")),
    };
    let key = match identity::parse_public_key(key) {
        Ok(k) => k,
        Err(e) => return Response::error(crate::exit::USAGE, format!("{e:#}")),
    };
    let mut st = sh.lock();
    let old = match st.known.insert(id.clone(), key) {
        Ok(old) => old,
        Err(e) => return Response::error(CONFIG, format!("{e:#}")),
    };
    if let Err(e) = st.known.save() {
        return Response::error(CONFIG, format!("{e:#}"));
    }
    // A different key than the one we know: drop what we learned under the
    // old key (table entry, session) so it is learned again under the pin.
    if st.table.get(&id).is_some_and(|e| *e.static_key() != key) {
        st.table.remove(&id);
    }
    if let Some(h) = st.sessions.get(&id) {
        if h.key != key {
            let _ = h.cmd.try_send(SessionCmd::Close);
        }
    }
    info!("pinned peer={id} key={}", fingerprint(&key));
    let what = match old {
        Some(o) if o == key => "already pinned to",
        Some(_) => "re-pinned to",
        None => "pinned to",
    };
    Response::Ok {
        message: format!("{id} {what} key {}", hex::encode(key.as_bytes())),
    }
}

fn forget(sh: &Shared, device: &str) -> Response {
    let Ok(id) = DeviceId::new(device) else {
        return Response::error(
            crate::exit::USAGE,
            format!("{device:?} is not a valid device id"),
        );
    };
    let mut st = sh.lock();
    let had = st.known.remove(&id).is_some();
    if had {
        if let Err(e) = st.known.save() {
            return Response::error(CONFIG, format!("{e:#}"));
        }
    }
    let in_table = st.table.remove(&id).is_some();
    let session = st
        .sessions
        .get(&id)
        .map(|h| h.cmd.try_send(SessionCmd::Close))
        .is_some();
    if !had && !in_table && !session {
        return Response::error(NO_PEER, format!("{id} is not known"));
    }
    info!("forgot peer={id}");
    Response::Ok {
        message: format!("forgot {id}; it will be learned again from its next announce"),
    }
}
