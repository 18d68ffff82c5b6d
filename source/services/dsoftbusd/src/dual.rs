//! Dual-node mode (`dsoftbusd.mode=dual-node`): the soft bus proven inside
//! one VM.
//!
//! Two logical nodes, `node-a` (TCP 34567) and `node-b` (TCP 34568), each
//! with its own static key from the kernel's RDRAND, its own listener,
//! announce socket, peer table and connections. They find each other through
//! UDP announces over the stack's loopback, node-a dials the address and port
//! node-b's announce gave it, both run Noise XK and bind the claimed device
//! id to the authenticated key. A third node, the impostor, has its own key
//! but claims to be `node-a`; node-b must refuse it. Then hostile datagrams
//! (malformed, oversized, a re-binding of `node-b` to another key) are sent to
//! the discovery port and must change nothing. Every marker follows the
//! event it names (docs/distributed/dsoftbus-os.md lists them).
//!
//! One discovery socket (UDP 37020) receives for all nodes, as one port on a
//! real host would, and offers each datagram to every node's peer table.

use alloc::boxed::Box;
use alloc::format;
use alloc::vec;
use alloc::vec::Vec;
use core::cell::{Cell, RefCell};
use core::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use core::pin::pin;
use core::time::Duration;

use dsoftbus::announce::MAX_ANNOUNCE_LEN;
use dsoftbus::{
    should_initiate, Announce, AuthError, ConnError, Connection, DeviceId, Event, HandshakeConfig,
    IdentityBindings, LocalIdentity, Observe, PeerEntry, PeerTable, PeerTableConfig, PeerTarget,
    PublicKey, ServiceName, StaticKeypair, DISCOVERY_GROUP, DISCOVERY_PORT,
};
use futures_util::future::{select, try_join3, Either};
use futures_util::stream::{FuturesUnordered, StreamExt};
use nexus_abi::time::{self, Instant};
use nexus_abi::ServiceError;
use nexus_netclient::{Ipv4, NetClient, SockAddr, SocketId};
use rand_core::RngCore;

use crate::link::{now, Link, LinkError};
use crate::rng::KernelRng;

/// Announce period; each node's phase within it comes from its device id.
pub const ANNOUNCE_INTERVAL: Duration = Duration::from_secs(1);
/// Phase spread: a node announces `fnv1a(id) % PHASE_SPREAD_MS` ms into each period.
pub const PHASE_SPREAD_MS: u64 = 100;
/// Bound on each step of the proof (discovery, handshake, each negative case).
pub const STEP_TIMEOUT: Duration = Duration::from_secs(10);
/// How long to wait for the NIC's DHCP lease before going on with loopback only.
pub const LEASE_WAIT: Duration = Duration::from_secs(10);
/// How often the proof script looks at shared state while it waits.
const POLL: Duration = Duration::from_millis(2);
/// Sessions a node serves at once; more are refused.
pub const MAX_SESSIONS_PER_NODE: usize = 8;

const NODE_A: (&str, u16) = ("node-a", 34567);
const NODE_B: (&str, u16) = ("node-b", 34568);
/// The impostor's listening port is never opened; its announce is never sent.
const IMPOSTOR: (&str, u16) = ("node-a", 34569);

fn err(what: &str, e: impl core::fmt::Display) -> ServiceError {
    ServiceError::new(format!("{what}: {e}"))
}

/// One logical node.
struct Node {
    label: &'static str,
    local: LocalIdentity,
    port: u16,
    table: RefCell<PeerTable>,
    announce: Vec<u8>,
    /// Prints discovery markers (the impostor stays quiet).
    reports: bool,
    /// Announces sent so far.
    announced: Cell<u32>,
}

impl Node {
    fn new(
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
        })
    }

    fn entry(&self, id: &str) -> Option<PeerEntry> {
        self.table.borrow().get_str(id).cloned()
    }
}

/// A node's peer table as the binding authority for incoming handshakes.
struct Bindings<'a>(&'a RefCell<PeerTable>);

impl IdentityBindings for Bindings<'_> {
    fn bound_key(&self, id: &DeviceId) -> Option<PublicKey> {
        self.0.borrow().bound_key(id)
    }
}

/// What the background tasks observed, for the proof script to wait on.
#[derive(Default)]
struct Seen {
    malformed: Cell<u32>,
    oversized: Cell<u32>,
    key_conflicts: Cell<u32>,
    mismatches: Cell<u32>,
}

fn bump(c: &Cell<u32>) {
    c.set(c.get().saturating_add(1));
}

/// Where announces go besides loopback.
#[derive(Clone, Copy)]
enum NicDiscovery {
    Multicast,
    Broadcast,
    /// No lease: loopback only.
    Off,
}

impl NicDiscovery {
    fn dst(self) -> Option<SockAddr> {
        match self {
            NicDiscovery::Multicast => Some(SockAddr::new(
                Ipv4(DISCOVERY_GROUP.octets()),
                DISCOVERY_PORT,
            )),
            NicDiscovery::Broadcast => Some(SockAddr::new(Ipv4::BROADCAST, DISCOVERY_PORT)),
            NicDiscovery::Off => None,
        }
    }
    fn name(self) -> &'static str {
        match self {
            NicDiscovery::Multicast => "multicast 239.42.0.1",
            NicDiscovery::Broadcast => "broadcast (multicast join failed)",
            NicDiscovery::Off => "off (no lease)",
        }
    }
}

fn fnv1a(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

fn sock_addr(a: SocketAddr) -> Result<SockAddr, ServiceError> {
    match a {
        SocketAddr::V4(v4) => Ok(SockAddr::new(Ipv4(v4.ip().octets()), v4.port())),
        SocketAddr::V6(_) => Err(ServiceError::new("IPv6 peer address (unsupported)")),
    }
}

async fn wait_for<T>(what: &str, mut probe: impl FnMut() -> Option<T>) -> Result<T, ServiceError> {
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

async fn has_lease(net: &NetClient) -> bool {
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

/// Run the dual-node proof; returns when it is complete.
pub async fn run(net: NetClient) -> Result<(), ServiceError> {
    let lease = has_lease(&net).await;
    let a = Node::new("node-a", NODE_A, true)?;
    let b = Node::new("node-b", NODE_B, true)?;
    let impostor = Node::new("impostor", IMPOSTOR, false)?;

    let any = |port| SockAddr::new(Ipv4::UNSPECIFIED, port);
    let transport = async {
        let (la, _) = net.tcp_listen(any(a.port), 4).await?;
        let (lb, _) = net.tcp_listen(any(b.port), 4).await?;
        let (disc, _) = net.udp_bind(any(DISCOVERY_PORT)).await?;
        let (send_a, _) = net.udp_bind(any(0)).await?;
        let (send_b, _) = net.udp_bind(any(0)).await?;
        let (hostile, _) = net.udp_bind(any(0)).await?;
        Ok::<_, nexus_netclient::CallError>((la, lb, disc, send_a, send_b, hostile))
    };
    let (la, lb, disc, send_a, send_b, hostile) = match transport.await {
        Ok(s) => s,
        Err(e) => {
            log::error!("dsoftbusd: discovery transport unavailable ({e})");
            return Err(err("discovery transport", e));
        }
    };
    let nic = if !lease {
        NicDiscovery::Off
    } else if net
        .udp_join_multicast(disc, Ipv4(DISCOVERY_GROUP.octets()))
        .await
        .is_ok()
    {
        NicDiscovery::Multicast
    } else {
        NicDiscovery::Broadcast
    };
    log::info!(
        "dsoftbusd: discovery up (udp loopback) port={} nic={}",
        DISCOVERY_PORT,
        nic.name()
    );

    let seen = Seen::default();
    let nodes = [&a, &b, &impostor];
    let background = try_join3(
        discovery(&net, disc, &nodes, &seen),
        announcer(&net, [(&a, send_a), (&b, send_b)], nic),
        futures_util::future::try_join(
            acceptor(&net, &a, la, &seen),
            acceptor(&net, &b, lb, &seen),
        ),
    );
    let script = proof(&net, &a, &b, &impostor, hostile, &seen);
    let result = match select(pin!(script), pin!(background)).await {
        Either::Left((result, _)) => result,
        Either::Right((Err(e), _)) => Err(e),
        Either::Right((Ok(_), _)) => Err(ServiceError::new("background tasks ended")),
    };
    result
}

/// The proof, step by step. Each step waits (bounded) for the real event.
async fn proof(
    net: &NetClient,
    a: &Node,
    b: &Node,
    impostor: &Node,
    hostile: SocketId,
    seen: &Seen,
) -> Result<(), ServiceError> {
    // Discovery-driven connect: the target comes from node-a's peer table.
    // node-a dials only once its own announce is out, so node-b can bind the
    // id node-a will claim (it refuses ids it has never seen).
    wait_for("node-a's first announce", || {
        (a.announced.get() > 0).then_some(())
    })
    .await?;
    let entry = wait_for("node-a to discover node-b", || a.entry("node-b")).await?;
    if !should_initiate(a.local.id(), entry.device_id()) {
        return Err(ServiceError::new(
            "tie-break says node-b dials; node-a would not",
        ));
    }
    let target = sock_addr(entry.session_addr())?;
    log::info!(
        "dsoftbusd: session connect peer={} addr={}",
        entry.device_id(),
        target
    );
    let mut link = dial(net, a, &entry, target).await?;
    let bindings = Bindings(&a.table);
    match link.next_event(&bindings).await {
        Ok(Event::Established { peer }) => {
            // Initiator side of the binding: the handshake authenticated the
            // key from node-b's announce and node-b's hello named node-b.
            log::info!("dsoftbusd: identity bound peer={} node={}", peer, a.label);
            a.table.borrow_mut().set_session(&peer, true);
            log::info!("dsoftbusd: auth ok peer={} node={}", peer, a.label);
        }
        Ok(other) => {
            return Err(ServiceError::new(format!(
                "unexpected first event {other:?}"
            )))
        }
        Err(e) => return Err(err("session with node-b", e)),
    }
    let rtt = ping(&mut link, &bindings).await?;
    log::info!(
        "dsoftbusd: dual-node session ok peer=node-b rtt={}us",
        rtt.as_micros()
    );

    // Negative proof 1: an impostor with its own key claims to be node-a.
    let before = seen.mismatches.get();
    let b_seen_by_impostor = wait_for("the impostor to discover node-b", || {
        impostor.entry("node-b")
    })
    .await?;
    let addr = sock_addr(b_seen_by_impostor.session_addr())?;
    log::info!("dsoftbusd: impostor (own key, claims node-a) connecting to node-b at {addr}");
    let mut fake = dial(net, impostor, &b_seen_by_impostor, addr).await?;
    let fake_bindings = Bindings(&impostor.table);
    // XK lets the initiator finish first; node-b decides on message 3. The
    // impostor must then see its stream end without a single byte of data.
    let outcome = loop {
        match fake.next_event(&fake_bindings).await {
            Ok(Event::Established { .. }) => continue,
            Ok(other) => break Err(format!("impostor got {other:?}")),
            Err(e) => break Ok(e),
        }
    };
    let end = outcome.map_err(ServiceError::new)?;
    wait_for("node-b to refuse the impostor", || {
        (seen.mismatches.get() > before).then_some(())
    })
    .await?;
    log::info!("dsoftbusd: impostor refused, its stream ended ({end})");
    fake.shutdown().await;

    // Negative proof 2: hostile datagrams at the discovery port.
    let disc = SockAddr::new(Ipv4::LOCALHOST, DISCOVERY_PORT);
    let a_key_before = a.entry("node-b").map(|e| *e.static_key());
    let peers_before = (a.table.borrow().len(), b.table.borrow().len());

    let m = seen.malformed.get();
    send(net, hostile, disc, b"NXSB\x01\x40truncated announce").await?;
    wait_for("the malformed announce to be ignored", || {
        (seen.malformed.get() > m).then_some(())
    })
    .await?;

    let o = seen.oversized.get();
    send(net, hostile, disc, &[0x5a; MAX_ANNOUNCE_LEN + 1]).await?;
    wait_for("the oversized announce to be ignored", || {
        (seen.oversized.get() > o).then_some(())
    })
    .await?;

    let k = seen.key_conflicts.get();
    let rebind = Node::new("rebinder", NODE_B, false)?;
    send(net, hostile, disc, &rebind.announce).await?;
    wait_for("the re-binding of node-b to be refused", || {
        (seen.key_conflicts.get() > k).then_some(())
    })
    .await?;

    // Nothing else changed: same pinned key, same peers, and the session lives.
    if a.entry("node-b").map(|e| *e.static_key()) != a_key_before {
        return Err(ServiceError::new(
            "node-b's pinned key changed after hostile input",
        ));
    }
    if (a.table.borrow().len(), b.table.borrow().len()) != peers_before {
        return Err(ServiceError::new("peer tables changed after hostile input"));
    }
    let rtt = ping(&mut link, &bindings).await?;
    log::info!(
        "dsoftbusd: session still ok after hostile input rtt={}us",
        rtt.as_micros()
    );

    link.conn.close().map_err(|e| err("close", e))?;
    link.flush().await.map_err(|e| err("close", e))?;
    link.shutdown().await;
    a.table.borrow_mut().set_session(b.local.id(), false);
    let stats = *a.table.borrow().stats();
    log::info!(
        "dsoftbusd: dual-node proof complete (node-a table: {} inserted, {} duplicates, {} key conflicts, {} malformed, {} oversized)",
        stats.inserted,
        stats.duplicates,
        stats.key_conflicts,
        stats.malformed,
        stats.oversized
    );
    Ok(())
}

async fn send(
    net: &NetClient,
    sock: SocketId,
    dst: SockAddr,
    bytes: &[u8],
) -> Result<(), ServiceError> {
    net.udp_send_to(sock, dst, bytes)
        .await
        .map_err(|e| err("send datagram", e))
}

async fn dial(
    net: &NetClient,
    node: &Node,
    entry: &PeerEntry,
    addr: SockAddr,
) -> Result<Link, ServiceError> {
    let (sock, _, _) = net.tcp_connect(addr).await.map_err(|e| err("connect", e))?;
    let mut rng = KernelRng::draw().map_err(|e| err("entropy", e))?;
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
    Ok(Link::new(net.clone(), sock, conn))
}

async fn ping(link: &mut Link, bindings: &Bindings<'_>) -> Result<Duration, ServiceError> {
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
async fn discovery(
    net: &NetClient,
    disc: SocketId,
    nodes: &[&Node; 3],
    seen: &Seen,
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
            let mut table = node.table.borrow_mut();
            table.expire(at);
            match table.observe_datagram(from, &data, at) {
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
                    log::info!("dsoftbusd: announce ignored (malformed) from={from} reason={e:?}");
                }
                Observe::Oversized if !reported => {
                    reported = true;
                    bump(&seen.oversized);
                    log::info!(
                        "dsoftbusd: announce ignored (oversized) from={from} len={}",
                        data.len()
                    );
                }
                _ => {}
            }
        }
    }
}

/// Announce each node on its deterministic schedule: over loopback always,
/// and to the multicast group (or broadcast) on the NIC when it has a lease.
async fn announcer(
    net: &NetClient,
    senders: [(&Node, SocketId); 2],
    nic: NicDiscovery,
) -> Result<(), ServiceError> {
    let start = time::now();
    let mut next: [Instant; 2] = senders.map(|(n, _)| {
        start.saturating_add(Duration::from_millis(
            fnv1a(n.local.id().as_str()) % PHASE_SPREAD_MS,
        ))
    });
    let mut nic_warned = false;
    loop {
        let i = usize::from(next[1] < next[0]);
        time::sleep_until(next[i]).await;
        let (node, sock) = senders[i];
        let lo = SockAddr::new(Ipv4::LOCALHOST, DISCOVERY_PORT);
        net.udp_send_to(sock, lo, &node.announce)
            .await
            .map_err(|e| err("announce over loopback", e))?;
        bump(&node.announced);
        if let Some(dst) = nic.dst() {
            if let Err(e) = net.udp_send_to(sock, dst, &node.announce).await {
                if !nic_warned {
                    nic_warned = true;
                    log::warn!("dsoftbusd: announce to {dst} failed ({e}); loopback only");
                }
            }
        }
        next[i] = next[i].saturating_add(ANNOUNCE_INTERVAL);
    }
}

/// Accept sessions for `node`, each served concurrently (at most
/// `MAX_SESSIONS_PER_NODE`).
async fn acceptor(
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
async fn serve(net: &NetClient, node: &Node, sock: SocketId, remote: SockAddr, seen: &Seen) {
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
    loop {
        match link.next_event(&bindings).await {
            Ok(Event::Established { peer: p }) => {
                // Responder side of the binding: the claimed id is pinned to
                // exactly the key the handshake authenticated.
                log::info!("dsoftbusd: identity bound peer={} node={}", p, node.label);
                node.table.borrow_mut().set_session(&p, true);
                log::info!("dsoftbusd: auth ok peer={} node={}", p, node.label);
                peer = Some(p);
            }
            Ok(Event::Closed) | Err(LinkError::Eof) => break,
            Ok(_) => {}
            Err(LinkError::Conn(ConnError::Auth(AuthError::Identity))) => {
                let claimed = link.conn.peer_hint().map_or("?", |d| d.as_str());
                log::info!(
                    "dsoftbusd: identity mismatch peer={claimed} node={} from={remote}; connection closed",
                    node.label
                );
                bump(&seen.mismatches);
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
