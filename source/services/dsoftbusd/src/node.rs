//! The machinery every soft-bus node runs, whatever the mode: identity and
//! peer table, announcing, receiving announces, accepting sessions and
//! serving them. Modes (`dual`, `single`) script what happens on top.

use alloc::boxed::Box;
use alloc::format;
use alloc::vec;
use alloc::vec::Vec;
use core::cell::{Cell, RefCell};
use core::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use core::time::Duration;

use dsoftbus::ratelimit::{HandshakeLimiter, RateLimitConfig};
use dsoftbus::{
    Announce, AuthError, ConnError, Connection, DeviceId, Event, HandshakeConfig, IdentityBindings,
    LocalIdentity, Observe, PeerEntry, PeerTable, PeerTableConfig, PeerTarget, PublicKey,
    ServiceName, StaticKeypair, DISCOVERY_GROUP, DISCOVERY_PORT,
};
use futures_util::future::{select, Either};
use futures_util::stream::{FuturesUnordered, StreamExt};
use nexus_abi::time::{self, Instant};
use nexus_abi::ServiceError;
use nexus_netclient::{Ipv4, NetClient, SockAddr, SocketId};
use rand_core::RngCore;

use crate::link::{now, Gate, Link, LinkError};
use crate::rng::KernelRng;

/// Announce period; each node's phase within it comes from its device id.
pub const ANNOUNCE_INTERVAL: Duration = Duration::from_secs(1);
/// Phase spread: a node announces `fnv1a(id) % PHASE_SPREAD_MS` ms into each period.
pub const PHASE_SPREAD_MS: u64 = 100;
/// Bound on each awaited step (discovery, handshake, each negative case).
pub const STEP_TIMEOUT: Duration = Duration::from_secs(10);
/// How long to wait for the NIC's DHCP lease.
pub const LEASE_WAIT: Duration = Duration::from_secs(10);
/// How often a waiting script looks at shared state.
const POLL: Duration = Duration::from_millis(2);
/// Sessions a node serves at once; more are refused.
pub const MAX_SESSIONS_PER_NODE: usize = 8;

pub(crate) fn err(what: &str, e: impl core::fmt::Display) -> ServiceError {
    ServiceError::new(format!("{what}: {e}"))
}

/// One logical node.
pub(crate) struct Node {
    pub(crate) label: &'static str,
    pub(crate) local: LocalIdentity,
    pub(crate) port: u16,
    pub(crate) table: RefCell<PeerTable>,
    pub(crate) announce: Vec<u8>,
    /// Prints discovery markers (the impostor stays quiet).
    pub(crate) reports: bool,
    /// Announces sent so far.
    pub(crate) announced: Cell<u32>,
    /// Handshake admission for incoming sessions (per-source and global
    /// token buckets, bounded source table; defaults of the core).
    pub(crate) limiter: RefCell<HandshakeLimiter>,
}

impl Node {
    pub(crate) fn new(
        label: &'static str,
        (id, port): (&str, u16),
        reports: bool,
    ) -> Result<Self, ServiceError> {
        let mut rng = KernelRng::draw().map_err(|e| err("entropy", e))?;
        let keys = StaticKeypair::generate(&mut rng);
        if rng.overdrawn() {
            return Err(ServiceError::new("entropy pool too small for a key pair"));
        }
        let id = DeviceId::new(id).map_err(|e| err("device id", e))?;
        let local = LocalIdentity::new(id.clone(), keys);
        let services = vec![ServiceName::new("ping").map_err(|e| err("service name", e))?];
        let announce = Announce::new(id.clone(), port, *local.public_key(), services)
            .map_err(|e| err("announce", e))?
            .encode();
        let table = PeerTable::new(
            id,
            *local.public_key(),
            PeerTableConfig::for_interval(ANNOUNCE_INTERVAL),
        );
        Ok(Node {
            label,
            local,
            port,
            table: RefCell::new(table),
            announce,
            reports,
            announced: Cell::new(0),
            limiter: RefCell::new(HandshakeLimiter::new(RateLimitConfig::default(), now())),
        })
    }

    pub(crate) fn entry(&self, id: &str) -> Option<PeerEntry> {
        self.table.borrow().get_str(id).cloned()
    }
}

/// A node's peer table as the binding authority for incoming handshakes.
pub(crate) struct Bindings<'a>(pub(crate) &'a RefCell<PeerTable>);

impl IdentityBindings for Bindings<'_> {
    fn bound_key(&self, id: &DeviceId) -> Option<PublicKey> {
        self.0.borrow().bound_key(id)
    }
}

/// What the background tasks observed, for the proof script to wait on.
#[derive(Default)]
pub(crate) struct Seen {
    pub(crate) malformed: Cell<u32>,
    pub(crate) oversized: Cell<u32>,
    pub(crate) key_conflicts: Cell<u32>,
    pub(crate) mismatches: Cell<u32>,
    /// Application bytes received over authenticated sessions.
    pub(crate) data_bytes: Cell<u64>,
    /// Rate limit for "announce ignored" lines.
    pub(crate) ignored_log: LogLimiter,
}

/// (source, kind) pairs whose ignored datagrams are tracked for log rate limiting.
pub const LOG_SOURCES: usize = 32;

/// Keeps a flood of bad datagrams from flooding the console: per source
/// address and kind, the 1st, 10th, 100th... ignored datagram is logged (with its
/// count); the rest are only counted. Bounded: the oldest source is forgotten.
#[derive(Default)]
pub(crate) struct LogLimiter {
    sources: RefCell<alloc::collections::VecDeque<((SocketAddr, &'static str), u64)>>,
}

impl LogLimiter {
    /// Count one datagram of `kind` from `src`; `Some(count)` if this one
    /// should be logged.
    pub(crate) fn admit(&self, src: SocketAddr, kind: &'static str) -> Option<u64> {
        let key = (src, kind);
        let mut sources = self.sources.borrow_mut();
        let count = match sources.iter_mut().find(|(k, _)| *k == key) {
            Some((_, n)) => {
                *n = n.saturating_add(1);
                *n
            }
            None => {
                if sources.len() >= LOG_SOURCES {
                    sources.pop_front();
                }
                sources.push_back((key, 1));
                1
            }
        };
        let mut p = 1;
        while p < count {
            p = p.saturating_mul(10);
        }
        (p == count).then_some(count)
    }
}

pub(crate) fn bump(c: &Cell<u32>) {
    c.set(c.get().saturating_add(1));
}

/// Where announces go besides loopback.
#[derive(Clone, Copy)]
pub(crate) enum NicDiscovery {
    Multicast,
    Broadcast,
    /// No lease: loopback only.
    Off,
}

impl NicDiscovery {
    pub(crate) fn dst(self) -> Option<SockAddr> {
        match self {
            NicDiscovery::Multicast => Some(SockAddr::new(
                Ipv4(DISCOVERY_GROUP.octets()),
                DISCOVERY_PORT,
            )),
            NicDiscovery::Broadcast => Some(SockAddr::new(Ipv4::BROADCAST, DISCOVERY_PORT)),
            NicDiscovery::Off => None,
        }
    }
    pub(crate) fn name(self) -> &'static str {
        match self {
            NicDiscovery::Multicast => "multicast 239.42.0.1",
            NicDiscovery::Broadcast => "broadcast (multicast join failed)",
            NicDiscovery::Off => "off (no lease)",
        }
    }
}

/// Join the discovery group on the NIC through `disc`; broadcast if the join
/// fails.
pub(crate) async fn join_discovery_group(net: &NetClient, disc: SocketId) -> NicDiscovery {
    let group = Ipv4(DISCOVERY_GROUP.octets());
    if net.udp_join_multicast(disc, group).await.is_ok() {
        NicDiscovery::Multicast
    } else {
        NicDiscovery::Broadcast
    }
}

pub(crate) fn fnv1a(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

pub(crate) fn sock_addr(a: SocketAddr) -> Result<SockAddr, ServiceError> {
    match a {
        SocketAddr::V4(v4) => Ok(SockAddr::new(Ipv4(v4.ip().octets()), v4.port())),
        SocketAddr::V6(_) => Err(ServiceError::new("IPv6 peer address (unsupported)")),
    }
}

pub(crate) async fn wait_for<T>(
    what: &str,
    mut probe: impl FnMut() -> Option<T>,
) -> Result<T, ServiceError> {
    let give_up = time::now().saturating_add(STEP_TIMEOUT);
    loop {
        if let Some(v) = probe() {
            return Ok(v);
        }
        if time::now() >= give_up {
            return Err(ServiceError::new(format!("timed out waiting for {what}")));
        }
        time::sleep(POLL).await;
    }
}

pub(crate) async fn has_lease(net: &NetClient) -> bool {
    let give_up = time::now().saturating_add(LEASE_WAIT);
    loop {
        if let Ok(s) = net.status().await {
            if s.ipv4.is_some() {
                return true;
            }
        }
        if time::now() >= give_up {
            return false;
        }
        time::sleep(Duration::from_millis(10)).await;
    }
}

pub(crate) async fn send(
    net: &NetClient,
    sock: SocketId,
    dst: SockAddr,
    bytes: &[u8],
) -> Result<(), ServiceError> {
    net.udp_send_to(sock, dst, bytes)
        .await
        .map_err(|e| err("send datagram", e))
}

pub(crate) async fn dial(
    net: &NetClient,
    node: &Node,
    entry: &PeerEntry,
    addr: SockAddr,
) -> Result<Link, ServiceError> {
    let (sock, _, _) = net.tcp_connect(addr).await.map_err(|e| err("connect", e))?;
    let started = KernelRng::draw()
        .map_err(|e| err("entropy", e))
        .and_then(|mut rng| {
            let conn = Connection::connect(
                &node.local,
                PeerTarget::from(entry),
                &mut rng,
                now(),
                HandshakeConfig::default(),
            )
            .map_err(|e| err("handshake start", e))?;
            if rng.overdrawn() {
                return Err(ServiceError::new("entropy pool too small for a handshake"));
            }
            Ok(conn)
        });
    match started {
        Ok(conn) => Ok(Link::new(net.clone(), sock, conn)),
        Err(e) => {
            // The socket is ours until a Link owns it: close it on every error.
            let _ = net.close(sock).await;
            Err(e)
        }
    }
}

pub(crate) async fn ping(
    link: &mut Link,
    bindings: &Bindings<'_>,
) -> Result<Duration, ServiceError> {
    let nonce = KernelRng::draw().map_err(|e| err("entropy", e))?.next_u64();
    let start = time::now();
    link.conn.send_ping(nonce).map_err(|e| err("ping", e))?;
    loop {
        match link.next_event(bindings).await {
            Ok(Event::Pong(n)) if n == nonce => {
                return Ok(time::now().saturating_duration_since(start))
            }
            Ok(Event::Pong(_) | Event::Ping(_)) => continue,
            Ok(other) => {
                return Err(ServiceError::new(format!(
                    "unexpected event {other:?} while pinging"
                )))
            }
            Err(e) => return Err(err("ping", e)),
        }
    }
}

/// Receive every datagram on the discovery port and offer it to each node.
/// `on_fresh` sees every entry an announce inserted, updated or refreshed.
pub(crate) async fn discovery(
    net: &NetClient,
    disc: SocketId,
    nodes: &[&Node],
    seen: &Seen,
    on_fresh: &dyn Fn(&Node, &PeerEntry),
) -> Result<(), ServiceError> {
    loop {
        let (src, data) = net
            .udp_recv_from(disc)
            .await
            .map_err(|e| err("discovery receive", e))?;
        let from = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::from(src.ip.0), src.port));
        let at = now();
        let claimed = Announce::decode(&data).ok();
        let id = claimed.as_ref().map_or("?", |a| a.device_id().as_str());
        let mut reported = false;
        for node in nodes {
            let (outcome, fresh) = {
                let mut table = node.table.borrow_mut();
                table.expire(at);
                let outcome = table.observe_datagram(from, &data, at);
                let fresh = outcome
                    .is_accepted()
                    .then(|| {
                        claimed
                            .as_ref()
                            .and_then(|a| table.get(a.device_id()).cloned())
                    })
                    .flatten();
                (outcome, fresh)
            };
            match outcome {
                Observe::Inserted if node.reports => {
                    log::info!(
                        "dsoftbusd: discovery peer found device={id} from={from} node={}",
                        node.label
                    );
                }
                Observe::KeyConflict => {
                    bump(&seen.key_conflicts);
                    log::info!(
                        "dsoftbusd: announce refused (key conflict) device={id} from={from} node={}",
                        node.label
                    );
                }
                Observe::Malformed(e) if !reported => {
                    reported = true;
                    bump(&seen.malformed);
                    if let Some(n) = seen.ignored_log.admit(from, "malformed") {
                        log::info!("dsoftbusd: announce ignored (malformed) from={from} reason={e:?} count={n}");
                    }
                }
                Observe::Oversized if !reported => {
                    reported = true;
                    bump(&seen.oversized);
                    if let Some(n) = seen.ignored_log.admit(from, "oversized") {
                        log::info!(
                            "dsoftbusd: announce ignored (oversized) from={from} len={} count={n}",
                            data.len()
                        );
                    }
                }
                _ => {}
            }
            if let Some(entry) = fresh {
                on_fresh(node, &entry);
            }
        }
    }
}

/// Announce each node on its deterministic schedule (phase from its device
/// id): over loopback when `loopback`, and to the multicast group (or
/// broadcast) on the NIC when it has a lease.
pub(crate) async fn announcer(
    net: &NetClient,
    senders: &[(&Node, SocketId)],
    loopback: bool,
    nic: NicDiscovery,
) -> Result<(), ServiceError> {
    let start = time::now();
    let mut next: Vec<Instant> = senders
        .iter()
        .map(|(n, _)| {
            let phase = fnv1a(n.local.id().as_str()) % PHASE_SPREAD_MS;
            start.saturating_add(Duration::from_millis(phase))
        })
        .collect();
    let mut nic_warned = false;
    loop {
        let Some((i, at)) = next.iter().copied().enumerate().min_by_key(|(_, t)| *t) else {
            return Ok(());
        };
        time::sleep_until(at).await;
        let (node, sock) = senders[i];
        if loopback {
            let lo = SockAddr::new(Ipv4::LOCALHOST, DISCOVERY_PORT);
            net.udp_send_to(sock, lo, &node.announce)
                .await
                .map_err(|e| err("announce over loopback", e))?;
        }
        bump(&node.announced);
        if let Some(dst) = nic.dst() {
            if let Err(e) = net.udp_send_to(sock, dst, &node.announce).await {
                if !nic_warned {
                    nic_warned = true;
                    log::warn!("dsoftbusd: announce to {dst} failed ({e})");
                }
            }
        }
        next[i] = at.saturating_add(ANNOUNCE_INTERVAL);
    }
}

/// Accept sessions for `node`, each served concurrently (at most
/// `MAX_SESSIONS_PER_NODE`).
pub(crate) async fn acceptor(
    net: &NetClient,
    node: &Node,
    listener: SocketId,
    seen: &Seen,
) -> Result<(), ServiceError> {
    let mut sessions = FuturesUnordered::new();
    let mut accept = Box::pin(net.tcp_accept(listener));
    loop {
        let accepted = if sessions.is_empty() {
            (&mut accept).await
        } else {
            match select(&mut accept, sessions.next()).await {
                Either::Left((r, _)) => r,
                Either::Right(_) => continue,
            }
        };
        accept = Box::pin(net.tcp_accept(listener));
        let (sock, _, remote) = accepted.map_err(|e| err("accept", e))?;
        if sessions.len() >= MAX_SESSIONS_PER_NODE {
            log::warn!(
                "dsoftbusd: {} refuses a session from {remote}: too many sessions",
                node.label
            );
            let _ = net.close(sock).await;
            continue;
        }
        sessions.push(serve(net, node, sock, remote, seen));
    }
}

/// The responder side of one session.
pub(crate) async fn serve(
    net: &NetClient,
    node: &Node,
    sock: SocketId,
    remote: SockAddr,
    seen: &Seen,
) {
    let conn = match KernelRng::draw() {
        Ok(mut rng) => {
            let c = Connection::accept(&node.local, &mut rng, now(), HandshakeConfig::default());
            if rng.overdrawn() {
                log::warn!(
                    "dsoftbusd: {} dropped a session from {remote}: entropy pool too small",
                    node.label
                );
                let _ = net.close(sock).await;
                return;
            }
            c
        }
        Err(e) => {
            log::warn!(
                "dsoftbusd: {} dropped a session from {remote}: entropy: {e}",
                node.label
            );
            let _ = net.close(sock).await;
            return;
        }
    };
    let mut link = Link::new(net.clone(), sock, conn);
    let bindings = Bindings(&node.table);
    let mut peer: Option<DeviceId> = None;
    let gate = Gate {
        limiter: &node.limiter,
        source: IpAddr::V4(Ipv4Addr::from(remote.ip.0)),
    };
    loop {
        match link.next_event_gated(&bindings, Some(&gate)).await {
            Err(LinkError::Limited(l)) => {
                log::info!(
                    "dsoftbusd: handshake refused ({l}) node={} from={remote}; connection closed",
                    node.label
                );
                break;
            }
            Ok(Event::Established { peer: p }) => {
                // Responder side of the binding: the claimed id is pinned to
                // exactly the key the handshake authenticated.
                log::info!("dsoftbusd: identity bound peer={} node={}", p, node.label);
                node.table.borrow_mut().set_session(&p, true);
                log::info!("dsoftbusd: auth ok peer={} node={}", p, node.label);
                peer = Some(p);
            }
            Ok(Event::Closed) | Err(LinkError::Eof) => break,
            Ok(Event::Data(d)) => {
                seen.data_bytes
                    .set(seen.data_bytes.get().saturating_add(d.len() as u64));
            }
            Ok(_) => {}
            Err(LinkError::Conn(ConnError::Auth(AuthError::Identity))) => {
                let claimed = link.conn.peer_hint().map_or("?", |d| d.as_str());
                let known = link
                    .conn
                    .peer_hint()
                    .is_some_and(|d| node.table.borrow().get(d).is_some());
                if known {
                    // The id is pinned to another key: someone claims it.
                    log::info!(
                        "dsoftbusd: identity mismatch peer={claimed} node={} from={remote}; connection closed",
                        node.label
                    );
                    bump(&seen.mismatches);
                } else {
                    // Never announced to us (yet): nothing to bind the key to.
                    log::info!(
                        "dsoftbusd: identity unknown peer={claimed} node={} from={remote}; connection closed",
                        node.label
                    );
                }
                break;
            }
            Err(e) => {
                log::warn!("dsoftbusd: {} session from {remote} ended: {e}", node.label);
                break;
            }
        }
    }
    if let Some(p) = peer {
        node.table.borrow_mut().set_session(&p, false);
    }
    link.shutdown().await;
}

/// A one-slot wake-up between tasks of the same service.
#[derive(Default)]
pub(crate) struct Notify {
    flag: Cell<bool>,
    waker: RefCell<Option<core::task::Waker>>,
}

impl Notify {
    /// Wake the waiter (or let its next wait return at once).
    pub(crate) fn notify(&self) {
        self.flag.set(true);
        if let Some(w) = self.waker.borrow_mut().take() {
            w.wake();
        }
    }

    /// Wait for the next `notify`.
    pub(crate) async fn wait(&self) {
        core::future::poll_fn(|cx| {
            if self.flag.replace(false) {
                core::task::Poll::Ready(())
            } else {
                *self.waker.borrow_mut() = Some(cx.waker().clone());
                core::task::Poll::Pending
            }
        })
        .await
    }
}
