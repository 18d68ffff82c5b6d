//! `dsoftbus daemon`: wiring of discovery, sessions and the control socket.
//!
//! One `std::sync::Mutex<State>` (the `Peers` handle, `crate::shared`)
//! holds the peer table, the known-peers pins, the session registry and the
//! node policy; it is only ever held for short, non-async critical sections.
//! This module alone holds the whole daemon context (`Shared`, private here);
//! discovery tasks get a `DiscoveryCtx` and session tasks a `SessionCtx`
//! (both in `crate::shared`, which imports none of daemon/discovery/session),
//! and the control-line writer lives in `control`: the module graph is
//! daemon → {discovery, session} → shared, with no cycle. Every task is
//! spawned on the tokio runtime:
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
//!
//! Node policy comes from the core (`dsoftbus::node`), the same rules the OS
//! daemon applies: inbound admission (per-source half-open cap, fair
//! admission, then the pre-DH handshake limiter), session caps (one id per
//! key, per-source cap, capacity reserved for pinned peers), pins (automatic
//! vs user, `--trust-mode`), candidate addresses with dial backoff, and the
//! log limiter every peer-triggerable line goes through.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, MutexGuard};
use std::time::Duration;

use anyhow::Context;
use dsoftbus::node::{
    AcceptError, Admission, AdmissionConfig, CandidateConfig, Candidates, Deny, OfferId,
    SessionCaps, SessionCapsConfig, TrustMode,
};
use dsoftbus::transport::tcp::HostClock;
use dsoftbus::{
    should_initiate, Connection, DeviceId, HandshakeConfig, LocalIdentity, PeerTable,
    PeerTableConfig, PeerTarget, RateLimitConfig,
};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio::sync::{oneshot, watch, Notify, OwnedSemaphorePermit, Semaphore};
use tracing::{debug, info, warn};

use crate::config::DaemonConfig;
use crate::control::{
    self, write_resp, ActiveInfo, DoneInfo, PeerInfo, PendingInfo, Request, Response, StatusInfo,
};
use crate::exit::{Failure, WithCode, CONFIG, FAILURE, IN_USE, NO_PEER, TIMEOUT};
use crate::identity::{self, fingerprint, KnownPeers};
use crate::shared::{
    bump, os_rng, suppressed, AcceptSlot, Answer, Counters, DiscoveryCtx, HalfOpen, LogKind,
    OfferRef, Peers, RateLimiter, SessionCmd, SessionCtx, SlotGuard, State, TransferCfg,
};
use crate::{discovery, session};

/// Most control-socket clients served at once.
pub const MAX_CONTROL_CLIENTS: usize = 16;
/// TCP connect timeout when dialing a peer.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Handshake deadline (from connect / accept to the last handshake frame).
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// The daemon context of the accept, dial, maintenance and control tasks
/// (private to this module). Each field is a narrow handle (an `Arc` or a
/// `Copy` value); discovery and session tasks get only theirs, through
/// [`Shared::discovery`] and [`Shared::session_ctx`].
struct Shared {
    cfg: Arc<DaemonConfig>,
    me: LocalIdentity,
    clock: HostClock,
    started: std::time::Instant,
    /// The session port actually bound (and announced).
    port: u16,
    state: Peers,
    wake_dialer: Arc<Notify>,
    announce_soon: Arc<Notify>,
    /// Our encoded announce, and a socket to send it straight to a peer we
    /// are about to dial (so it knows our key before our handshake arrives).
    announce_bytes: Vec<u8>,
    hello: std::net::UdpSocket,
    dial_permits: Arc<Semaphore>,
    /// Incoming-transfer settings and slots, handed to sessions.
    transfer: Arc<TransferCfg>,
    shutdown: watch::Receiver<bool>,
    counters: Arc<Counters>,
    limiter: Arc<RateLimiter>,
    /// Remote service calls (`crate::remote`).
    remote: Arc<crate::remote::Remote>,
    conn_ids: AtomicU64,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock()
    }

    /// The discovery tasks' handle.
    fn discovery(&self) -> DiscoveryCtx {
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

    fn next_conn_id(&self) -> u64 {
        self.conn_ids.fetch_add(1, Ordering::Relaxed)
    }

    /// A session task's handle.
    fn session_ctx(&self) -> SessionCtx {
        SessionCtx {
            peers: self.state.clone(),
            remote: self.remote_ctx(),
            clock: self.clock,
            trust_mode: self.cfg.trust_mode,
            transfer: self.transfer.clone(),
            counters: self.counters.clone(),
            limiter: self.limiter.clone(),
            shutdown: self.shutdown.clone(),
        }
    }

    fn remote_ctx(&self) -> crate::remote::RemoteCtx {
        crate::remote::RemoteCtx {
            remote: self.remote.clone(),
            peers: self.state.clone(),
            clock: self.clock,
            limiter: self.limiter.clone(),
        }
    }

    fn handshake_cfg(&self) -> HandshakeConfig {
        HandshakeConfig {
            timeout: HANDSHAKE_TIMEOUT,
        }
    }
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
    let mut known = KnownPeers::load(&cfg.paths.state_dir)?;
    let stale = known.evict_stale();
    if !stale.is_empty() {
        info!(
            "{} automatic pin(s) unused for 30 days removed from known peers",
            stale.len()
        );
        if let Err(e) = known.save() {
            warn!("cannot save known peers: {e:#}");
        }
    }
    let id = identity::device_id(cfg.device_id.as_deref(), keys.public())?;
    // This node speaks streams (wire.md §11.2) and receives transfer v2
    // (§12.1): say so in the announce.
    let mut names: Vec<&str> = cfg.services.iter().map(String::as_str).collect();
    let mut speaks = vec![dsoftbus::stream::STREAMS_SERVICE];
    if dsoftbus::transfer::Version::V2.supported() {
        speaks.push(dsoftbus::transfer::V2_SERVICE);
    }
    for s in speaks {
        if !names.contains(&s) {
            names.push(s);
        }
    }
    let services = names
        .into_iter()
        .map(dsoftbus::ServiceName::new)
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
    let clock = HostClock::new();
    let admission = Admission::new(
        AdmissionConfig {
            max_half_open: cfg.max_half_open,
            per_source: (cfg.max_half_open / 4).max(1),
            rate: RateLimitConfig::default(),
        },
        clock.now(),
    );
    let caps = SessionCaps::new(SessionCapsConfig::for_max(cfg.max_sessions));
    let candidates = Candidates::new(CandidateConfig {
        per_id: 4,
        max_ids: cfg.max_peers.saturating_mul(2),
    });

    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let sh = Arc::new(Shared {
        me: LocalIdentity::new(id.clone(), keys.clone()),
        clock,
        started: std::time::Instant::now(),
        port,
        state: Peers::new(State {
            table,
            known,
            sessions: HashMap::new(),
            dialing: HashSet::new(),
            candidates,
            admission,
            evictors: HashMap::new(),
            caps,
            refusals: HashMap::new(),
            known_touched: false,
            interfaces: Vec::new(),
        }),
        wake_dialer: Arc::new(Notify::new()),
        announce_soon: Arc::new(Notify::new()),
        announce_bytes: announce.encode(),
        hello,
        dial_permits: Arc::new(Semaphore::new(cfg.max_half_open)),
        transfer: Arc::new(TransferCfg::new(&cfg)),
        shutdown: shutdown_rx,
        counters: Arc::new(Counters::default()),
        limiter: Arc::new(RateLimiter::default()),
        remote: Arc::new(crate::remote::Remote::new(cfg.remote_acl.clone())),
        conn_ids: AtomicU64::new(1),
        cfg: Arc::new(cfg),
    });
    let disc = Arc::new(disc);
    disc.rescan(&sh.discovery());
    info!(
        "node up device={} key={} port={} discovery={}:{} mode={} interfaces=[{}] trust_mode={} inbox={} accept={}",
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
        sh.cfg.trust_mode.name(),
        sh.cfg
            .inbox
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "none".into()),
        sh.cfg.consent.policy.name(),
    );

    let tasks = vec![
        tokio::spawn(discovery::announcer(sh.discovery(), disc.clone(), announce)),
        tokio::spawn(discovery::receiver(sh.discovery(), disc)),
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
                if let Some(n) = sh.limiter.allow(LogKind::AcceptError) {
                    warn!("accept failed: {e}{}", suppressed(n));
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let admitted = {
            let mut guard = sh.lock();
            let st = &mut *guard;
            match st.admission.admit(addr.ip(), sh.clock.now()) {
                Ok(a) => {
                    if let Some(victim) = a.evict {
                        if let Some(n) = st.evictors.remove(&victim) {
                            n.notify_one();
                        }
                    }
                    let evicted = Arc::new(Notify::new());
                    st.evictors.insert(a.ticket, evicted.clone());
                    Ok((a, evicted))
                }
                Err(r) => Err(r),
            }
        };
        let (admitted, evicted) = match admitted {
            Ok(x) => x,
            Err(r) => {
                bump(&sh.counters.half_open_refused);
                if let Some(n) = sh.limiter.allow(LogKind::HalfOpen) {
                    warn!("refusing connection from {addr}: {r}{}", suppressed(n));
                }
                continue;
            }
        };
        if admitted.evict.is_some() {
            bump(&sh.counters.half_open_evicted);
            if let Some(n) = sh.limiter.allow(LogKind::HalfOpenEvict) {
                debug!(
                    "handshake slots full: {addr} takes the oldest slot of the busiest address{}",
                    suppressed(n)
                );
            }
        }
        let slot = HalfOpen::Accept(AcceptSlot {
            peers: sh.state.clone(),
            ticket: admitted.ticket,
            evicted,
        });
        let _ = stream.set_nodelay(true);
        let conn = Connection::accept(&sh.me, &mut os_rng(), sh.clock.now(), sh.handshake_cfg());
        tokio::spawn(session::run(
            sh.session_ctx(),
            sh.next_conn_id(),
            stream,
            addr,
            conn,
            slot,
            None,
        ));
    }
}

/// How often stale automatic pins are swept and pin ages written.
const PIN_SWEEP: Duration = Duration::from_secs(3600);

/// Expires old peers and dials the ones the tie-break says we dial.
async fn maintenance(sh: Arc<Shared>) {
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut shutdown = sh.shutdown.clone();
    let mut last_sweep = std::time::Instant::now();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = sh.wake_dialer.notified() => {}
            _ = shutdown.changed() => return,
        }
        expire_offers(&sh);
        if last_sweep.elapsed() >= PIN_SWEEP {
            last_sweep = std::time::Instant::now();
            sweep_pins(&sh);
        }
        let now = sh.clock.now();
        let targets: Vec<(PeerTarget, SocketAddr)> = {
            let mut guard = sh.lock();
            let st = &mut *guard;
            let expired = st.table.expire(now);
            if expired > 0 {
                if let Some(n) = sh.limiter.allow(LogKind::Expired) {
                    debug!("{expired} peer(s) expired{}", suppressed(n));
                }
            }
            let table = &st.table;
            st.candidates.retain(|id| table.get(id).is_some());
            let mut v = Vec::new();
            for e in st.table.iter() {
                let id = e.device_id();
                if !should_initiate(sh.me.id(), id)
                    || st.sessions.contains_key(id)
                    || st.dialing.contains(id)
                    || (!sh.cfg.trust_mode.allows_unpinned() && st.known.get(id).is_none())
                {
                    continue;
                }
                let addr = if st.candidates.of(id).is_empty() {
                    Some(e.session_addr())
                } else {
                    st.candidates.pick(id, now)
                };
                let Some(addr) = addr else {
                    continue; // every candidate is backing off
                };
                v.push((PeerTarget::from(e), addr));
            }
            for (t, _) in &v {
                st.dialing.insert(t.id.clone());
                st.table.set_in_flight(&t.id, true);
            }
            v
        };
        for (target, addr) in targets {
            match sh.dial_permits.clone().try_acquire_owned() {
                Ok(p) => {
                    tokio::spawn(dial(sh.clone(), target, addr, p));
                }
                Err(_) => {
                    let mut st = sh.lock();
                    st.dialing.remove(&target.id);
                    st.table.set_in_flight(&target.id, false);
                }
            }
        }
    }
}

/// Drops automatic pins unused for 30 days and writes pin ages.
fn sweep_pins(sh: &Shared) {
    let mut st = sh.lock();
    let gone = st.known.evict_stale();
    if gone.is_empty() && !st.known_touched {
        return;
    }
    st.known_touched = false;
    if !gone.is_empty() {
        info!("{} stale automatic pin(s) removed", gone.len());
    }
    if let Err(e) = st.known.save() {
        warn!("cannot save known peers: {e:#}");
    }
}

async fn dial(sh: Arc<Shared>, target: PeerTarget, addr: SocketAddr, permit: OwnedSemaphorePermit) {
    let id = target.id.clone();
    // The id the peer announced, for the log lines below.
    let log_id = id.log_safe();
    if let Some(n) = sh.limiter.allow(LogKind::Dial) {
        debug!("session connect peer={log_id} addr={addr}{}", suppressed(n));
    }
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
                    session::run(
                        sh.session_ctx(),
                        sh.next_conn_id(),
                        stream,
                        addr,
                        conn,
                        HalfOpen::Dial(permit),
                        Some(target),
                    )
                    .await
                }
                Err(e) => {
                    if let Some(n) = sh.limiter.allow(LogKind::HsStart) {
                        warn!(
                            "cannot start a handshake with peer={log_id}: {e}{}",
                            suppressed(n)
                        );
                    }
                    false
                }
            }
        }
        Ok(Err(e)) => {
            if let Some(n) = sh.limiter.allow(LogKind::DialFailed) {
                debug!(
                    "connect to peer={log_id} addr={addr} failed: {e}{}",
                    suppressed(n)
                );
            }
            false
        }
        Err(_) => {
            if let Some(n) = sh.limiter.allow(LogKind::DialFailed) {
                debug!(
                    "connect to peer={log_id} addr={addr} timed out{}",
                    suppressed(n)
                );
            }
            false
        }
    };
    let mut st = sh.lock();
    st.dialing.remove(&id);
    st.table.set_in_flight(&id, false);
    let now = sh.clock.now();
    if st.candidates.of(&id).iter().all(|c| c.addr != addr) {
        // Dialled the table's address before any candidate was recorded.
        st.candidates.heard(&id, addr, now);
    }
    if confirmed {
        // The session ran and ended: redial soon, but not in a hot loop.
        st.candidates.succeeded(&id, addr, now, fastrand::u64(..));
    } else {
        // This address failed: back it off, so another candidate (e.g. the
        // real one, when a replayed announce pointed us elsewhere) goes next.
        st.candidates.failed(&id, addr, now, fastrand::u64(..));
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
            Request::Send { device, paths } => match DeviceId::new(&device) {
                Ok(id) => session::send_paths(&sh.state, &id, paths, &mut w).await,
                Err(_) => Response::error(NO_PEER, format!("{device:?} is not a valid device id")),
            },
            Request::Trust {
                device,
                key,
                replace,
            } => trust(&sh, &device, key.as_deref(), replace),
            Request::Transfers => transfers(&sh),
            Request::Accept { id } => answer(&sh, id, true).await,
            Request::Deny { id } => answer(&sh, id, false).await,
            Request::Forget {
                device,
                devices,
                auto,
            } => forget(&sh, device.into_iter().chain(devices).collect(), auto),
            Request::Call {
                device,
                service,
                payload,
                timeout_ms,
            } => {
                crate::remote::call(&sh.remote_ctx(), &device, &service, &payload, timeout_ms).await
            }
            Request::Serve { service, unix } => {
                return crate::remote::serve(&sh.remote_ctx(), &service, &unix, &mut r, &mut w)
                    .await;
            }
        };
        write_resp(&mut w, &resp).await?;
    }
}

/// Denies the offers nobody answered in time (the sessions holding them
/// send the DENY `expired`).
fn expire_offers(sh: &Shared) {
    let now = sh.clock.now();
    let expired = sh
        .transfer
        .consent
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .expire(now);
    for p in expired {
        sh.transfer
            .board
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .answered(p.id.0, "expired");
        info!(
            "offer {} from peer={} ({}) expired: nobody answered",
            p.id,
            p.peer.log_safe(),
            p.payload.name
        );
        send_answer(p.payload, Answer::Deny(Deny::Expired));
    }
}

/// Hands an answer to the session holding the offer (bounded wait: a
/// session whose queue stays full is about to end, and its end forgets the
/// offer anyway).
fn send_answer(p: OfferRef, answer: Answer) {
    let cmd = SessionCmd::Answer {
        carrier: p.carrier,
        answer,
    };
    tokio::spawn(async move {
        let _ = tokio::time::timeout(Duration::from_secs(5), p.cmd.send(cmd)).await;
    });
}

/// `dsoftbus accept <id>` / `dsoftbus deny <id>`.
async fn answer(sh: &Shared, id: u32, accept: bool) -> Response {
    let now = sh.clock.now();
    let consent = sh.transfer.consent.clone();
    let unknown = |sh: &Shared| {
        let board = sh.transfer.board.lock().unwrap_or_else(|e| e.into_inner());
        match board.was_answered(id) {
            Some(how) => {
                Response::error(FAILURE, format!("offer {id} was already answered ({how})"))
            }
            None => Response::error(
                FAILURE,
                format!("no pending offer {id} (see `dsoftbus transfers`)"),
            ),
        }
    };
    if !accept {
        let p = consent
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .deny(OfferId(id));
        let Some(p) = p else {
            return unknown(sh);
        };
        sh.transfer
            .board
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .answered(id, "denied");
        let msg = format!("denied offer {id} from {} ({})", p.peer, p.payload.name);
        info!("{msg}");
        send_answer(p.payload, Answer::Deny(Deny::User));
        return Response::Ok { message: msg };
    }
    let r = consent
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .accept(OfferId(id), now);
    match r {
        Ok((p, slot)) => {
            let slot = SlotGuard::new(consent.clone(), slot);
            sh.transfer
                .board
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .answered(id, "accepted");
            let cmd = SessionCmd::Answer {
                carrier: p.payload.carrier,
                answer: Answer::Accept(slot),
            };
            let sent =
                tokio::time::timeout(Duration::from_secs(5), p.payload.cmd.send(cmd)).await;
            if !matches!(sent, Ok(Ok(()))) {
                return Response::error(
                    NO_PEER,
                    format!("{} went away; offer {id} is gone", p.peer),
                );
            }
            let msg = format!(
                "accepted offer {id} from {}: {} ({} files, {} bytes)",
                p.peer, p.payload.name, p.payload.files, p.payload.bytes
            );
            info!("{msg}");
            Response::Ok { message: msg }
        }
        Err(AcceptError::Unknown) => unknown(sh),
        Err(AcceptError::Busy) => Response::error(
            FAILURE,
            format!(
                "too many incoming transfers in progress; offer {id} stays pending: accept it again when one ends"
            ),
        ),
        Err(AcceptError::Expired(p)) => {
            sh.transfer
                .board
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .answered(id, "expired");
            send_answer(p.payload, Answer::Deny(Deny::Expired));
            Response::error(FAILURE, format!("offer {id} expired before the answer"))
        }
    }
}

/// `dsoftbus transfers`.
fn transfers(sh: &Shared) -> Response {
    let now = sh.clock.now();
    let secs = |d: core::time::Duration| d.as_secs();
    let (policy, pending) = {
        let c = sh
            .transfer
            .consent
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let pending = c
            .pending()
            .map(|p| PendingInfo {
                id: p.id.0,
                peer: p.peer.to_string(),
                name: p.payload.name.clone(),
                files: p.payload.files,
                bytes: p.payload.bytes,
                age_s: secs(now.saturating_since(p.since)),
                expires_in_s: secs(p.deadline.saturating_since(now)),
            })
            .collect();
        (c.config().policy.name().to_string(), pending)
    };
    let b = sh.transfer.board.lock().unwrap_or_else(|e| e.into_inner());
    let dir = |incoming: bool| if incoming { "in" } else { "out" }.to_string();
    let active = b
        .active
        .values()
        .map(|a| {
            let t = a.started.elapsed().as_secs_f64();
            let fresh = a.done.saturating_sub(a.resumed);
            ActiveInfo {
                direction: dir(a.incoming),
                peer: a.peer.clone(),
                name: a.name.clone(),
                done: a.done,
                total: a.total,
                resumed: a.resumed,
                rate: if t > 0.0 {
                    (fresh as f64 / t) as u64
                } else {
                    0
                },
                secs: t,
            }
        })
        .collect();
    let recent = b
        .history
        .iter()
        .map(|r| DoneInfo {
            direction: dir(r.incoming),
            peer: r.peer.clone(),
            name: r.name.clone(),
            done: r.done,
            total: r.total,
            ok: r.ok,
            result: r.result.clone(),
            secs: r.secs,
            ago_s: r.ended.elapsed().as_secs(),
        })
        .collect();
    Response::Transfers {
        policy,
        pending,
        active,
        recent,
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
        require_known: sh.cfg.trust_mode == TrustMode::Known,
        trust_mode: sh.cfg.trust_mode.name().into(),
        inbox: sh.cfg.inbox.as_ref().map(|p| p.display().to_string()),
        accept: sh.cfg.consent.policy.name().to_string(),
        uptime_s: sh.started.elapsed().as_secs(),
        counters: {
            let mut c = sh.counters.snapshot();
            c.push(("known_auto".into(), st.known.auto_count() as u64));
            c.push(("half_open".into(), st.admission.half_open() as u64));
            c.push(("log_suppressed".into(), sh.limiter.suppressed()));
            c
        },
    }
}

/// Why `id` has no session (or `session`), for the STATE column.
fn peer_state(sh: &Shared, st: &State, id: &DeviceId, in_table: bool) -> String {
    if st.sessions.contains_key(id) {
        return "session".into();
    }
    if let Some(r) = st.refusals.get(id) {
        return r.why.clone();
    }
    if !in_table {
        return "-".into();
    }
    if st.known.get(id).is_none() {
        match sh.cfg.trust_mode {
            TrustMode::Pending => return format!("pending: `dsoftbus trust {id}` to accept it"),
            TrustMode::Known => return "not trusted (--trust-mode known)".into(),
            TrustMode::Tofu => {}
        }
    }
    if should_initiate(sh.me.id(), id) {
        if st.dialing.contains(id) {
            return "connecting".into();
        }
        return "no session (dialling with backoff)".into();
    }
    "no session (waiting for it to dial us; it may hold another key for us)".into()
}

fn pin_kind(st: &State, id: &DeviceId) -> Option<String> {
    st.known
        .pin(id)
        .map(|p| if p.is_user() { "user" } else { "auto" }.to_string())
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
            pin: pin_kind(&st, e.device_id()),
            state: peer_state(sh, &st, e.device_id(), true),
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
                pin: pin_kind(&st, id),
                state: "session".into(),
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
                pin: pin_kind(&st, id),
                state: peer_state(sh, &st, id, false),
            });
        }
    }
    out.sort_by(|a, b| a.device.cmp(&b.device));
    out
}

async fn ping(sh: &Shared, device: &str, timeout_ms: u64) -> Response {
    let Some(h) = DeviceId::new(device)
        .ok()
        .and_then(|id| sh.state.session(&id))
    else {
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

fn trust(sh: &Shared, device: &str, key: Option<&str>, replace: bool) -> Response {
    let id = match DeviceId::new(device) {
        Ok(id) => id,
        Err(e) => return Response::error(crate::exit::USAGE, format!("bad device id: {e}")),
    };
    let mut st = sh.lock();
    let key = match key {
        Some(k) => match identity::parse_public_key(k) {
            Ok(k) => k,
            Err(e) => return Response::error(crate::exit::USAGE, format!("{e:#}")),
        },
        // The key we heard: a pending device's announce, or the new key of
        // a device whose key changed.
        None => match st
            .refusals
            .get(&id)
            .and_then(|r| r.key)
            .or_else(|| st.table.get(&id).map(|e| *e.static_key()))
        {
            Some(k) => k,
            None => {
                return Response::error(
                    NO_PEER,
                    format!("no key heard for {id}: give it (`dsoftbus trust {id} <key-hex>`)"),
                )
            }
        },
    };
    let pinned = match st.known.trust(&id, key, replace) {
        Ok(p) => p,
        Err(e) => {
            let f = identity::trust_failure(&id, &e);
            return Response::error(f.code, format!("{:#}", f.error));
        }
    };
    if let Err(e) = st.known.save() {
        return Response::error(CONFIG, format!("{e:#}"));
    }
    // A different key than the one we know: drop what we learned under the
    // old key (table entry, session) so it is learned again under the pin.
    if st.table.get(&id).is_some_and(|e| *e.static_key() != key) {
        st.table.remove(&id);
        st.candidates.remove(&id);
    }
    if let Some(h) = st.sessions.get(&id) {
        if h.key != key {
            let _ = h.cmd.try_send(SessionCmd::Close);
        }
    }
    st.refusals.remove(&id);
    drop(st);
    sh.wake_dialer.notify_one();
    info!(
        "pinned peer={id} key={} (trusted by the user)",
        fingerprint(&key)
    );
    let what = match pinned.old {
        Some(_) => "re-pinned to",
        None => "pinned to",
    };
    let evicted = pinned
        .evicted
        .map(|e| format!(" (automatic pin of {e} dropped to make room)"))
        .unwrap_or_default();
    Response::Ok {
        message: format!("{id} {what} key {}{evicted}", hex::encode(key.as_bytes())),
    }
}

fn forget(sh: &Shared, devices: Vec<String>, auto: bool) -> Response {
    let mut ids = Vec::new();
    for d in &devices {
        match DeviceId::new(d) {
            Ok(id) => ids.push(id),
            Err(_) => {
                return Response::error(
                    crate::exit::USAGE,
                    format!("{d:?} is not a valid device id"),
                )
            }
        }
    }
    if ids.is_empty() && !auto {
        return Response::error(
            crate::exit::USAGE,
            "name the devices to forget, or --auto for every automatic pin",
        );
    }
    let mut st = sh.lock();
    let mut pins_removed = 0usize;
    let mut forgotten = Vec::new();
    if auto {
        let gone = st.known.remove_auto();
        pins_removed += gone.len();
        ids.extend(gone);
    }
    for id in ids {
        let had = st.known.remove(&id).is_some();
        pins_removed += usize::from(had);
        let in_table = st.table.remove(&id).is_some();
        st.candidates.remove(&id);
        st.refusals.remove(&id);
        let session = st
            .sessions
            .get(&id)
            .map(|h| h.cmd.try_send(SessionCmd::Close))
            .is_some();
        if had || in_table || session || auto {
            forgotten.push(id);
        }
    }
    if pins_removed > 0 {
        if let Err(e) = st.known.save() {
            return Response::error(CONFIG, format!("{e:#}"));
        }
    }
    drop(st);
    if forgotten.is_empty() {
        return Response::error(NO_PEER, format!("{} is not known", devices.join(", ")));
    }
    if let Some(n) = sh.limiter.allow(LogKind::Forget) {
        info!("forgot {} peer(s){}", forgotten.len(), suppressed(n));
    }
    let names: Vec<String> = forgotten.iter().map(|i| i.to_string()).collect();
    Response::Ok {
        message: if let [one] = names.as_slice() {
            format!("forgot {one}; it will be learned again from its next announce")
        } else {
            format!(
                "forgot {} device(s) ({} pin(s) removed): {}",
                forgotten.len(),
                pins_removed,
                names.join(", ")
            )
        },
    }
}
