//! The machinery every soft-bus node runs, whatever the mode: identity and
//! peer table, announcing, receiving announces, accepting sessions and
//! serving them. Modes (`dual`, `single`) script what happens on top.

use alloc::boxed::Box;
use alloc::format;
use alloc::rc::Rc;
use alloc::sync::Arc;
use alloc::vec;
use alloc::vec::Vec;
use core::cell::{Cell, RefCell};
use core::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use core::time::Duration;

use dsoftbus::node::pins::{PinConfig, PinStore};
use dsoftbus::node::{
    Admission, AdmissionConfig, LogLimiter, LogLimiterConfig, LogSafe, SessionCaps,
    SessionCapsConfig, Ticket,
};
use dsoftbus::{
    Announce, AuthError, ConnError, Connection, DeviceId, Event, HandshakeConfig, IdentityBindings,
    LocalIdentity, Observe, PeerEntry, PeerTable, PeerTableConfig, PeerTarget, PublicKey,
    ServiceName, StaticKeypair, DISCOVERY_GROUP, DISCOVERY_PORT,
};
use futures_util::future::{select, Either};
use futures_util::stream::{FuturesUnordered, StreamExt};
use nexus_abi::time::{self, Instant};
use nexus_abi::ServiceError;
use nexus_keyclient::KeyClient;
use nexus_netclient::{Ipv4, NetClient, SockAddr, SocketId};
use rand_core::RngCore;

use crate::link::{now, Gate, Link, LinkError, Pace};
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
/// Half-open inbound connections a node holds at once, and from one source.
pub const MAX_HALF_OPEN: usize = 8;
/// Half-open inbound connections from one source address.
pub const HALF_OPEN_PER_SOURCE: usize = 2;

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
    /// Admission for incoming connections (`dsoftbus::node::admission`):
    /// half-open slots per source with fair admission, then the pre-DH
    /// handshake limiter (per-source and global token buckets).
    pub(crate) admission: RefCell<Admission>,
    /// Half-open connections that can be told to give up their slot.
    pub(crate) evictors: RefCell<Vec<(Ticket, Rc<Notify>)>>,
    /// Session caps (`dsoftbus::node::sessions`): one id per key, per
    /// source, capacity reserved for pinned peers.
    pub(crate) caps: RefCell<SessionCaps>,
    /// Connection ids for the session caps.
    pub(crate) next_conn: Cell<u64>,
    /// Log limiter for the dialling side's peer-triggered lines.
    pub(crate) dial_log: RefCell<LogLimiter>,
    /// Sessions are with other machines (node mode): the responder prints
    /// `cross-vm session ok` once it has answered a session's first ping.
    pub(crate) cross_vm: bool,
    /// Persistent pins (node mode with keystored): the core's pin policy,
    /// saved through keystored after every new pin.
    pub(crate) pins: Option<RefCell<PinStore>>,
    /// Where the pins are saved.
    pub(crate) pin_keeper: Option<Arc<KeyClient>>,
    /// Remote service calls (node mode; `crate::remote`).
    pub(crate) remote: Option<crate::remote::Remote>,
    /// File transfer (`crate::files`): node mode, and node-b of the proof.
    pub(crate) files: Option<crate::files::Files>,
    /// The node announces `streams/1` and runs a `dsoftbus::stream::Mux`
    /// per session for transfers (`crate::streams`; node mode).
    pub(crate) streams: bool,
}

impl Node {
    /// A node; `key`: the device identity held by keystored, or `None` for
    /// a key made here (the proof's other nodes, or no key service).
    pub(crate) fn new(
        label: &'static str,
        (id, port): (&str, u16),
        reports: bool,
        key: Option<&crate::DeviceKey>,
    ) -> Result<Self, ServiceError> {
        let id = DeviceId::new(id).map_err(|e| err("device id", e))?;
        let local = match key {
            Some(k) => LocalIdentity::with_key_service(id.clone(), k.public, k.dh.clone()),
            None => {
                let mut rng = KernelRng::draw().map_err(|e| err("entropy", e))?;
                let keys = StaticKeypair::generate(&mut rng);
                if rng.overdrawn() {
                    return Err(ServiceError::new("entropy pool too small for a key pair"));
                }
                LocalIdentity::new(id.clone(), keys)
            }
        };
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
            admission: RefCell::new(Admission::new(
                AdmissionConfig {
                    max_half_open: MAX_HALF_OPEN,
                    per_source: HALF_OPEN_PER_SOURCE,
                    ..AdmissionConfig::default()
                },
                now(),
            )),
            evictors: RefCell::new(Vec::new()),
            caps: RefCell::new(SessionCaps::new(SessionCapsConfig::for_max(
                MAX_SESSIONS_PER_NODE,
            ))),
            next_conn: Cell::new(1),
            dial_log: RefCell::new(LogLimiter::default()),
            cross_vm: false,
            pins: None,
            pin_keeper: None,
            remote: None,
            files: None,
            streams: false,
        })
    }

    /// Node mode with keystored: load the pins it keeps and save new ones
    /// there. A blob that does not decode is reported and starts empty (the
    /// pins are lost, never the identity).
    pub(crate) fn keep_pins(&mut self, keeper: Arc<KeyClient>) {
        let mut store = PinStore::new(PinConfig {
            max_pins: crate::pins::MAX_PINS,
            ..PinConfig::default()
        });
        match keeper.load_pins() {
            Ok(blob) => match crate::pins::decode(&blob, now()) {
                Ok(pins) => {
                    let n = pins.len();
                    for (id, pin) in pins {
                        let _ = store.load(id, pin);
                    }
                    log::info!("dsoftbusd: {n} known-peer pins loaded from keystored");
                }
                Err(e) => {
                    log::error!("dsoftbusd: stored pins unreadable ({e:?}); starting with none")
                }
            },
            Err(e) => log::warn!("dsoftbusd: no stored pins ({e}); starting with none"),
        }
        self.pins = Some(RefCell::new(store));
        self.pin_keeper = Some(keeper);
    }

    /// Announce `streams/1` (and serve streams, `crate::streams`).
    pub(crate) fn announce_streams(&mut self, port: u16) -> Result<(), ServiceError> {
        let services = vec![
            ServiceName::new("ping").map_err(|e| err("service name", e))?,
            ServiceName::new(dsoftbus::stream::STREAMS_SERVICE)
                .map_err(|e| err("service name", e))?,
        ];
        self.announce = Announce::new(
            self.local.id().clone(),
            port,
            *self.local.public_key(),
            services,
        )
        .map_err(|e| err("announce", e))?
        .encode();
        self.streams = true;
        Ok(())
    }

    /// The key `id` is pinned to, if it is pinned to one other than `key`.
    pub(crate) fn pinned_elsewhere(&self, id: &DeviceId, key: &PublicKey) -> Option<PublicKey> {
        self.pins
            .as_ref()
            .and_then(|p| p.borrow().key(id))
            .filter(|k| k != key)
    }

    /// Trust on first use after an authenticated session: pin `id` to
    /// `key` through the pin policy and save the pins if that made a new
    /// one. Lines go through `log` (a peer triggers them).
    pub(crate) fn pin_on_session(
        &self,
        id: &DeviceId,
        key: &PublicKey,
        from: IpAddr,
        log: &RefCell<LogLimiter>,
    ) {
        let (Some(pins), Some(keeper)) = (self.pins.as_ref(), self.pin_keeper.as_ref()) else {
            return;
        };
        let known = pins.borrow().key(id).is_some();
        let made = pins.borrow_mut().auto_pin(id, key, from, now());
        match made {
            Ok(_) if known => {}
            Ok(_) => {
                let blob = crate::pins::encode(&pins.borrow());
                let saved = keeper.save_pins(blob);
                if let Some(n) = log.borrow_mut().allow("pin", now()) {
                    match saved {
                        Ok(()) => log::info!(
                            "dsoftbusd: pinned peer={id} key={} (kept by keystored){}",
                            fp(key),
                            sup(n),
                            id = id.log_safe()
                        ),
                        Err(e) => log::warn!(
                            "dsoftbusd: pinned peer={id} for this boot only (keystored: {e}){}",
                            sup(n),
                            id = id.log_safe()
                        ),
                    }
                }
            }
            Err(e) => {
                if let Some(n) = log.borrow_mut().allow("pin-refused", now()) {
                    log::info!(
                        "dsoftbusd: not pinning peer={id} from={from}: {e}{}",
                        sup(n),
                        id = id.log_safe()
                    );
                }
            }
        }
    }

    /// An inbound connection is no longer half-open: free its slot.
    pub(crate) fn release(&self, t: Ticket) {
        self.admission.borrow_mut().release(t);
        self.evictors.borrow_mut().retain(|(x, _)| *x != t);
    }

    pub(crate) fn entry(&self, id: &str) -> Option<PeerEntry> {
        self.table.borrow().get_str(id).cloned()
    }
}

/// The binding authority for handshakes: a node's persistent pins first
/// (node mode with keystored), then its peer table (trust on first sight).
pub(crate) struct Bindings<'a> {
    table: &'a RefCell<PeerTable>,
    pins: Option<&'a RefCell<PinStore>>,
}

impl<'a> Bindings<'a> {
    /// The bindings of `node`.
    pub(crate) fn of(node: &'a Node) -> Self {
        Bindings {
            table: &node.table,
            pins: node.pins.as_ref(),
        }
    }
}

impl IdentityBindings for Bindings<'_> {
    fn bound_key(&self, id: &DeviceId) -> Option<PublicKey> {
        if let Some(k) = self.pins.and_then(|p| p.borrow().key(id)) {
            return Some(k);
        }
        self.table.borrow().bound_key(id)
    }
}

/// What the background tasks observed, for the proof script to wait on.
pub(crate) struct Seen {
    pub(crate) malformed: Cell<u32>,
    pub(crate) oversized: Cell<u32>,
    pub(crate) key_conflicts: Cell<u32>,
    pub(crate) mismatches: Cell<u32>,
    /// Application bytes received over authenticated sessions.
    pub(crate) data_bytes: Cell<u64>,
    /// Every line a remote peer can trigger goes through this
    /// (`dsoftbus::node::log`): per kind, a burst of 5 then 1 a second,
    /// with suppressed counts. Worst case (32 kinds + 1) × (5 + t) lines in
    /// t seconds — about 33 UART lines a second under any flood.
    pub(crate) log: RefCell<LogLimiter>,
}

impl Default for Seen {
    fn default() -> Self {
        Seen {
            malformed: Cell::new(0),
            oversized: Cell::new(0),
            key_conflicts: Cell::new(0),
            mismatches: Cell::new(0),
            data_bytes: Cell::new(0),
            log: RefCell::new(LogLimiter::new(LogLimiterConfig::default())),
        }
    }
}

impl Seen {
    /// May a line of `kind` be logged now? `Some(suppressed)` if so.
    pub(crate) fn allow(&self, kind: &'static str) -> Option<u64> {
        self.log.borrow_mut().allow(kind, now())
    }
}

/// The log kind for an event from `ip`: events from this machine (the
/// proof's own loopback traffic, whose lines are contract markers) are
/// counted apart from the network's, so a flood from outside can never
/// use up the budget of a marker.
pub(crate) fn kind(ip: IpAddr, local: &'static str, remote: &'static str) -> &'static str {
    if ip.is_loopback() {
        local
    } else {
        remote
    }
}

/// `" (N similar suppressed)"` or nothing.
/// A key's fingerprint (first 8 bytes in hex, as `dsoftbus id` prints it).
pub(crate) fn fp(k: &PublicKey) -> alloc::string::String {
    k.as_bytes()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// `dsoftbusd: <node> session from <remote> ended: <why>`, within the log
/// limit of its kind (loopback peers counted apart): the one line every way
/// a served session can end takes.
fn log_ended(
    seen: &Seen,
    node: &Node,
    remote: &SockAddr,
    ip: IpAddr,
    why: &dyn core::fmt::Display,
) {
    if let Some(n) = seen.allow(kind(ip, "ended-lo", "ended")) {
        log::warn!(
            "dsoftbusd: {} session from {remote} ended: {why}{}",
            node.label,
            sup(n)
        );
    }
}

pub(crate) fn sup(n: u64) -> alloc::string::String {
    dsoftbus::node::suppressed_suffix(n)
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
            // A stream frame still in flight for a transfer that ended (its
            // close, a window update): nothing to answer.
            Ok(Event::Data(d)) if d.first() == Some(&dsoftbus::stream::KIND_STREAM) => continue,
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
        // Unauthenticated: anyone on the LAN chooses this id.
        let id = LogSafe(claimed.as_ref().map_or("?", |a| a.device_id().as_str()));
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
            let ip = from.ip();
            match outcome {
                Observe::Inserted if node.reports => {
                    if let Some(n) = seen.allow(kind(ip, "peer-found-lo", "peer-found")) {
                        log::info!(
                            "dsoftbusd: discovery peer found device={id} from={from} node={}{}",
                            node.label,
                            sup(n)
                        );
                    }
                }
                Observe::KeyConflict => {
                    bump(&seen.key_conflicts);
                    if let Some(n) = seen.allow(kind(ip, "key-conflict-lo", "key-conflict")) {
                        log::info!(
                            "dsoftbusd: announce refused (key conflict) device={id} from={from} node={}{}",
                            node.label,
                            sup(n)
                        );
                    }
                }
                Observe::Malformed(e) if !reported => {
                    reported = true;
                    bump(&seen.malformed);
                    if let Some(n) = seen.allow(kind(ip, "malformed-lo", "malformed")) {
                        log::info!(
                            "dsoftbusd: announce ignored (malformed) from={from} reason={e:?}{}",
                            sup(n)
                        );
                    }
                }
                Observe::Oversized if !reported => {
                    reported = true;
                    bump(&seen.oversized);
                    if let Some(n) = seen.allow(kind(ip, "oversized-lo", "oversized")) {
                        log::info!(
                            "dsoftbusd: announce ignored (oversized) from={from} len={}{}",
                            data.len(),
                            sup(n)
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
        let ip = IpAddr::V4(Ipv4Addr::from(remote.ip.0));
        if sessions.len() >= MAX_SESSIONS_PER_NODE {
            if let Some(n) = seen.allow(kind(ip, "accept-full-lo", "accept-full")) {
                log::warn!(
                    "dsoftbusd: {} refuses a session from {remote}: too many sessions{}",
                    node.label,
                    sup(n)
                );
            }
            let _ = net.close(sock).await;
            continue;
        }
        // Half-open slots: per-source cap, fair admission (a source with no
        // slot always gets one; the busiest source's oldest gives way).
        let admitted = node.admission.borrow_mut().admit(ip, now());
        let admitted = match admitted {
            Ok(a) => a,
            Err(r) => {
                if let Some(n) = seen.allow(kind(ip, "half-open-lo", "half-open")) {
                    log::info!(
                        "dsoftbusd: {} refuses a connection from {remote}: {r}{}",
                        node.label,
                        sup(n)
                    );
                }
                let _ = net.close(sock).await;
                continue;
            }
        };
        if let Some(victim) = admitted.evict {
            let evictors = node.evictors.borrow();
            if let Some((_, n)) = evictors.iter().find(|(t, _)| *t == victim) {
                n.notify();
            }
        }
        let evicted = Rc::new(Notify::default());
        node.evictors
            .borrow_mut()
            .push((admitted.ticket, evicted.clone()));
        sessions.push(serve(
            net,
            node,
            sock,
            remote,
            seen,
            admitted.ticket,
            evicted,
        ));
    }
}

/// The responder side of one session. `ticket` is its half-open slot,
/// released once the session is established or ends; `evicted` fires when
/// fair admission gives the slot to another source.
pub(crate) async fn serve(
    net: &NetClient,
    node: &Node,
    sock: SocketId,
    remote: SockAddr,
    seen: &Seen,
    ticket: Ticket,
    evicted: Rc<Notify>,
) {
    let ip = IpAddr::V4(Ipv4Addr::from(remote.ip.0));
    let conn = match KernelRng::draw() {
        Ok(mut rng) => {
            let c = Connection::accept(&node.local, &mut rng, now(), HandshakeConfig::default());
            if rng.overdrawn() {
                log::warn!(
                    "dsoftbusd: {} dropped a session from {remote}: entropy pool too small",
                    node.label
                );
                node.release(ticket);
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
            node.release(ticket);
            let _ = net.close(sock).await;
            return;
        }
    };
    let mut link = Link::new(net.clone(), sock, conn);
    let bindings = Bindings::of(node);
    let mut peer: Option<DeviceId> = None;
    let conn_id = node.next_conn.get();
    node.next_conn.set(conn_id.wrapping_add(1));
    let mut pinged = false;
    let gate = Gate {
        admission: &node.admission,
        source: ip,
    };
    // This session's transfers, once it is established.
    let mut xfer: Option<Xfer> = None;
    let mut pace = Pace::default();
    loop {
        if let (Some(f), Some(x), true) = (&node.files, xfer.as_mut(), pace.step_due()) {
            match x.step(f, &mut link, &seen.log).await {
                Ok(more) => pace.stepped(more),
                Err(e) => {
                    log_ended(seen, node, &remote, ip, &e);
                    break;
                }
            }
        }
        let next = if pace.more() {
            // The transfer has more to send: only what is ready now.
            match link.ready_event(&bindings, &mut pace).await {
                Some(r) => r,
                None => continue,
            }
        } else if peer.is_some() {
            link.next_event_gated(&bindings, None).await
        } else {
            let step = core::pin::pin!(link.next_event_gated(&bindings, Some(&gate)));
            let evict = core::pin::pin!(evicted.wait());
            match select(step, evict).await {
                Either::Left((r, _)) => r,
                Either::Right(_) => {
                    if let Some(n) = seen.allow(kind(ip, "evicted-lo", "evicted")) {
                        log::info!(
                            "dsoftbusd: {} closed a half-open connection from {remote}: its slot went to another address{}",
                            node.label,
                            sup(n)
                        );
                    }
                    break;
                }
            }
        };
        match next {
            Err(LinkError::Limited(l)) => {
                if let Some(n) = seen.allow(kind(ip, "hs-limited-lo", "hs-limited")) {
                    log::info!(
                        "dsoftbusd: handshake refused ({l}) node={} from={remote}; connection closed{}",
                        node.label,
                        sup(n)
                    );
                }
                break;
            }
            Ok(Event::Established { peer: p }) => {
                node.release(ticket);
                // Session caps: one id per key, per source, reserved for
                // pinned peers.
                let bound = node
                    .table
                    .borrow()
                    .get(&p)
                    .map(|e| (*e.static_key(), e.is_pinned()));
                let Some((key, pinned)) = bound else {
                    break;
                };
                let waiting = node
                    .table
                    .borrow()
                    .iter()
                    .filter(|e| e.is_pinned() && !e.has_session() && *e.device_id() != p)
                    .count();
                let mut caps = node.caps.borrow_mut();
                caps.set_pinned_waiting(waiting);
                let admitted = caps.admit(conn_id, &p, &key, ip, pinned);
                drop(caps);
                if let Err(r) = admitted {
                    if let Some(n) = seen.allow(kind(ip, "caps-lo", "caps")) {
                        log::info!(
                            "dsoftbusd: session refused peer={p} node={} from={remote}: {r}{}",
                            node.label,
                            sup(n),
                            p = p.log_safe()
                        );
                    }
                    break;
                }
                // Responder side of the binding: the claimed id is pinned to
                // exactly the key the handshake authenticated. Both lines
                // share one log decision, so their counts stay equal.
                node.table.borrow_mut().set_session(&p, true);
                if let Some(n) = seen.allow(kind(ip, "session-lo", "session")) {
                    log::info!(
                        "dsoftbusd: identity bound peer={} node={}",
                        p.log_safe(),
                        node.label
                    );
                    log::info!(
                        "dsoftbusd: auth ok peer={} node={}{}",
                        p.log_safe(),
                        node.label,
                        sup(n)
                    );
                }
                node.pin_on_session(&p, &key, ip, &node.dial_log);
                xfer = Some(Xfer::new(node, conn_id, false, &p));
                peer = Some(p);
            }
            Ok(Event::Closed) | Err(LinkError::Eof) => break,
            Ok(Event::Data(d)) => {
                seen.data_bytes
                    .set(seen.data_bytes.get().saturating_add(d.len() as u64));
                if let (Some(f), Some(p), Some(x)) = (&node.files, &peer, xfer.as_mut()) {
                    match x.on_data(f, node, &mut link, p, &d, &seen.log) {
                        Ok(true) => continue,
                        Ok(false) => {}
                        Err(e) => {
                            log_ended(seen, node, &remote, ip, &e);
                            break;
                        }
                    }
                }
                if let Some(r) = &node.remote {
                    if let Err(e) = r
                        .on_data(&mut link, peer.as_ref(), &d, &node.dial_log)
                        .await
                    {
                        log_ended(seen, node, &remote, ip, &e);
                        break;
                    }
                }
            }
            Ok(Event::Ping(_)) if node.cross_vm && !pinged => {
                // The dialler's first authenticated ping arrived and its pong
                // is queued: both directions of the session work.
                pinged = true;
                if let (Some(p), Some(n)) = (&peer, seen.allow(kind(ip, "crossvm-lo", "crossvm"))) {
                    log::info!(
                        "dsoftbusd: cross-vm session ok peer={p} from={remote} (responder){}",
                        sup(n),
                        p = p.log_safe()
                    );
                }
                if let (Some(r), Some(p)) = (&node.remote, &peer) {
                    if let Err(e) = r.on_session_up(&mut link, p).await {
                        log::warn!(
                            "dsoftbusd: remote calls to peer={p} not sent: {e}",
                            p = p.log_safe()
                        );
                    }
                }
                if let (Some(f), Some(p), Some(x)) = (&node.files, &peer, xfer.as_mut()) {
                    x.start(f, node, p);
                }
            }
            Ok(_) => {}
            Err(LinkError::Conn(ConnError::Auth(AuthError::Identity))) => {
                // Claimed in the hello, never bound: anyone chooses it.
                let claimed = LogSafe(link.conn.peer_hint().map_or("?", |d| d.as_str()));
                let known = link
                    .conn
                    .peer_hint()
                    .is_some_and(|d| node.table.borrow().get(d).is_some());
                if known {
                    // The id is pinned to another key: someone claims it.
                    bump(&seen.mismatches);
                    if let Some(n) = seen.allow(kind(ip, "mismatch-lo", "mismatch")) {
                        log::info!(
                            "dsoftbusd: identity mismatch peer={claimed} node={} from={remote}; connection closed{}",
                            node.label,
                            sup(n)
                        );
                    }
                } else if let Some(n) = seen.allow(kind(ip, "unknown-lo", "unknown")) {
                    // Never announced to us (yet): nothing to bind the key to.
                    log::info!(
                        "dsoftbusd: identity unknown peer={claimed} node={} from={remote}; connection closed{}",
                        node.label,
                        sup(n)
                    );
                }
                break;
            }
            Err(e) => {
                log_ended(seen, node, &remote, ip, &e);
                break;
            }
        }
    }
    node.release(ticket);
    node.caps.borrow_mut().remove(conn_id);
    if let (Some(f), Some(_), Some(x)) = (&node.files, &peer, xfer.as_mut()) {
        x.end(f, &seen.log);
    }
    if let Some(p) = peer {
        node.table.borrow_mut().set_session(&p, false);
        if let Some(r) = &node.remote {
            r.peer_gone(&p);
        }
    }
    link.shutdown().await;
}

/// A session's file transfers: the outgoing one (the planned send), the
/// session's streams (the stream carrier), and its key in the node's
/// transfer tables.
pub(crate) struct Xfer {
    conn: u64,
    initiator: bool,
    /// The peer announced `streams/1` when the session was established: our
    /// transfers to it go on a stream (wire.md §12 carrier rule).
    peer_streams: bool,
    out: Option<crate::files::Outgoing>,
    streams: Option<crate::streams::Streams>,
}

impl Xfer {
    /// Session `conn` with `peer` is established.
    pub(crate) fn new(node: &Node, conn: u64, initiator: bool, peer: &DeviceId) -> Self {
        let peer_streams = node.streams
            && node
                .table
                .borrow()
                .get(peer)
                .is_some_and(|e| dsoftbus::stream::peer_supports_streams(e.services()));
        Xfer {
            conn,
            initiator,
            peer_streams,
            out: None,
            streams: None,
        }
    }

    fn streams(&mut self) -> &mut crate::streams::Streams {
        let (conn, initiator) = (self.conn, self.initiator);
        self.streams
            .get_or_insert_with(|| crate::streams::Streams::new(conn, initiator, now()))
    }

    /// The session is up both ways: start the planned send if it is for
    /// `peer`, on a stream if the peer announced them.
    pub(crate) fn start(&mut self, files: &crate::files::Files, node: &Node, peer: &DeviceId) {
        if self.out.is_some() {
            return;
        }
        let on_stream = self.peer_streams;
        let Some(mut o) = files.start_send(peer, node.local.id(), on_stream) else {
            return;
        };
        if on_stream {
            match self.streams().open() {
                Ok(id) => o.set_stream(id),
                Err(e) => log::warn!(
                    "dsoftbusd: no stream for the file to {peer} ({e}); sending it in session data messages"
                ),
            }
        }
        self.out = Some(o);
    }

    /// Before the session looks at its next event: send what the
    /// transfers have to say and one bounded step of the outgoing one
    /// (`Outgoing::pump_step`); report and drop the outgoing one once it
    /// ended. True if the outgoing transfer has more to send now: the
    /// caller then only looks for a ready event (`Link::try_event`) and
    /// comes back, instead of waiting for one.
    pub(crate) async fn step(
        &mut self,
        files: &crate::files::Files,
        link: &mut Link,
        log: &RefCell<LogLimiter>,
    ) -> Result<bool, crate::streams::Stop> {
        files.transmit(&mut link.conn, (self.conn, 0))?;
        let mut more = self.service(files, link, log).await?;
        if let Some(o) = self.out.as_mut() {
            more |= o.pump_step(link, self.streams.as_mut()).await?;
            if let Some(end) = o.outcome() {
                files.send_ended(o, Ok(&end));
                self.out = None;
                // Finish its stream now, not at the next event.
                more = self.service(files, link, log).await?;
            }
        }
        Ok(more)
    }

    /// What the transfers on streams have to say goes into the mux, and one
    /// bounded step of the mux's output to the socket
    /// (`Streams::write_step`); true if output is left. Before, this wrote
    /// out everything the mux would give (a stream's whole window) before
    /// the session looked at its input again.
    async fn service(
        &mut self,
        files: &crate::files::Files,
        link: &mut Link,
        log: &RefCell<LogLimiter>,
    ) -> Result<bool, crate::streams::Stop> {
        let Some(s) = self.streams.as_mut() else {
            return Ok(false);
        };
        s.service(files, &mut self.out, log, now())?;
        Ok(s.write_step(link).await?)
    }

    /// A data message from `peer`: true if it was a stream or transfer
    /// message (handled), false for the other data users.
    pub(crate) fn on_data(
        &mut self,
        files: &crate::files::Files,
        node: &Node,
        link: &mut Link,
        peer: &DeviceId,
        d: &[u8],
        log: &RefCell<LogLimiter>,
    ) -> Result<bool, crate::streams::Stop> {
        if d.first() == Some(&dsoftbus::stream::KIND_STREAM) {
            if !node.streams {
                return Ok(false);
            }
            let mut out = self.out.take();
            let r = self.streams().handle(d, files, peer, &mut out, log, now());
            self.out = out;
            return r.map(|()| true);
        }
        let out = self.out.as_mut().filter(|o| o.stream().is_none());
        Ok(files.on_data(&mut link.conn, (self.conn, 0), peer, d, out, log, now())?)
    }

    /// The session ended: its transfers end with it.
    pub(crate) fn end(&mut self, files: &crate::files::Files, log: &RefCell<LogLimiter>) {
        if let Some(o) = self.out.take() {
            files.send_ended(&o, Err("the session ended first"));
        }
        files.session_gone(self.conn, log, now());
    }
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
