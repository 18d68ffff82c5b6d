//! UDP discovery: announce v1 out on every chosen interface, announces in
//! through one socket bound to the discovery port.
//!
//! Per interface there is a send socket bound to the interface's address
//! (so the announce's source address, which peers dial, is that interface's)
//! with `IP_MULTICAST_IF` set to it, `IP_MULTICAST_LOOP` (default on, so
//! nodes sharing a host hear each other), TTL 1 and `SO_BROADCAST`. The
//! receive socket joins 239.42.0.1 on each multicast-capable interface in
//! every mode (the mode chooses how we send, never what we hear). Interfaces are
//! rescanned every 5 s, so addresses that come and go (DHCP, hotplug) are
//! followed.
//!
//! Delivery per interface (`--discovery`): `auto` multicasts and falls back
//! to the subnet broadcast address where the interface has no multicast, the
//! join fails or a multicast send fails; `multicast`, `broadcast` and `both`
//! do what they say; `unicast` scans no interface and only sends to
//! `--announce-to` targets (which every mode also sends to).
//!
//! Schedule: an announce at start, two more 200–300 ms apart, then every
//! interval ± 25% (uniform jitter). Hearing a new peer triggers an extra
//! announce within 20–120 ms (at most one per 250 ms), so the new peer learns
//! our key before it dials us.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket as StdUdp};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dsoftbus::announce::MAX_ANNOUNCE_LEN;
use dsoftbus::node::TrustMode;
use dsoftbus::{Announce, Observe, DISCOVERY_GROUP};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::UdpSocket;
use tracing::{debug, info, warn};

use crate::cli::DiscoveryMode;
use crate::config::DaemonConfig;
use crate::control::IfaceInfo;
use crate::identity::fingerprint;
use crate::ifaces::{self, Iface};
use crate::shared::{bump, suppressed, DiscoveryCtx, LogKind};

/// Receive buffer: one byte over the largest valid announce, so oversize shows.
pub const RECV_BUF_LEN: usize = MAX_ANNOUNCE_LEN + 1;
/// How often interfaces are rescanned.
pub const RESCAN: Duration = Duration::from_secs(5);

struct Sender {
    iface: Iface,
    sock: StdUdp,
    /// Multicast is used on this interface (joined and not failed).
    multicast: bool,
    /// Broadcast is used on this interface.
    broadcast: bool,
}

impl Sender {
    fn delivery(&self) -> &'static str {
        match (self.multicast, self.broadcast) {
            (true, true) => "multicast+broadcast",
            (true, false) => "multicast",
            (false, true) => "broadcast",
            (false, false) => "none",
        }
    }
}

/// The discovery sockets.
pub struct Discovery {
    recv: UdpSocket,
    senders: Mutex<BTreeMap<(String, Ipv4Addr), Sender>>,
    mode: DiscoveryMode,
    port: u16,
}

fn send_socket(iface: &Iface, cfg: &DaemonConfig) -> std::io::Result<StdUdp> {
    let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    s.bind(&SocketAddrV4::new(iface.addr, 0).into())?;
    s.set_multicast_if_v4(&iface.addr)?;
    s.set_multicast_loop_v4(cfg.multicast_loop)?;
    s.set_multicast_ttl_v4(1)?;
    s.set_broadcast(true)?;
    s.set_nonblocking(true)?;
    Ok(s.into())
}

impl Discovery {
    /// Binds the receive socket on 0.0.0.0:<discovery port>.
    pub fn bind(cfg: &DaemonConfig) -> anyhow::Result<Self> {
        let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
        s.set_reuse_address(true)?;
        s.set_reuse_port(true)?;
        s.set_broadcast(true)?;
        s.bind(&SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, cfg.discovery_port).into())
            .map_err(|e| anyhow::anyhow!("discovery port {}: {e}", cfg.discovery_port))?;
        s.set_nonblocking(true)?;
        let std: StdUdp = s.into();
        Ok(Discovery {
            recv: UdpSocket::from_std(std)?,
            senders: Mutex::new(BTreeMap::new()),
            mode: cfg.discovery,
            port: cfg.discovery_port,
        })
    }

    fn senders(&self) -> std::sync::MutexGuard<'_, BTreeMap<(String, Ipv4Addr), Sender>> {
        self.senders.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Re-reads the interfaces; opens/joins new ones, drops vanished ones.
    pub fn rescan(&self, sh: &DiscoveryCtx) {
        if self.mode == DiscoveryMode::Unicast {
            return;
        }
        let found = match ifaces::scan(&sh.cfg.interfaces) {
            Ok(f) => f,
            Err(e) => {
                if let Some(n) = sh.limiter.allow(LogKind::Scan) {
                    warn!("cannot list interfaces: {e}{}", suppressed(n));
                }
                return;
            }
        };
        let mut senders = self.senders();
        let keep: Vec<(String, Ipv4Addr)> =
            found.iter().map(|i| (i.name.clone(), i.addr)).collect();
        senders.retain(|k, s| {
            let stay = keep.contains(k);
            if !stay {
                let _ = self.recv.leave_multicast_v4(DISCOVERY_GROUP, s.iface.addr);
                info!("interface {} {} gone; no longer announcing there", k.0, k.1);
            }
            stay
        });
        for iface in found {
            let key = (iface.name.clone(), iface.addr);
            if senders.contains_key(&key) {
                continue;
            }
            let sock = match send_socket(&iface, &sh.cfg) {
                Ok(s) => s,
                Err(e) => {
                    warn!("cannot announce on {} {}: {e}", iface.name, iface.addr);
                    continue;
                }
            };
            // Receiving: join the group on every multicast-capable interface,
            // whatever we send, so multicast-only peers are always heard.
            let joined = iface.multicast
                && match self.recv.join_multicast_v4(DISCOVERY_GROUP, iface.addr) {
                    Ok(()) => true,
                    Err(e) => {
                        warn!("cannot join {DISCOVERY_GROUP} on {}: {e}", iface.name);
                        false
                    }
                };
            let send_mc = joined
                && matches!(
                    self.mode,
                    DiscoveryMode::Auto | DiscoveryMode::Multicast | DiscoveryMode::Both
                );
            let broadcast = match self.mode {
                DiscoveryMode::Broadcast | DiscoveryMode::Both => true,
                DiscoveryMode::Auto => !send_mc,
                _ => false,
            };
            let s = Sender {
                iface,
                sock,
                multicast: send_mc,
                broadcast,
            };
            info!(
                "announcing on {} {} ({})",
                s.iface.name,
                s.iface.addr,
                s.delivery()
            );
            senders.insert(key, s);
        }
        let infos: Vec<IfaceInfo> = senders
            .values()
            .map(|s| IfaceInfo {
                name: s.iface.name.clone(),
                addr: s.iface.addr.to_string(),
                delivery: s.delivery().into(),
            })
            .collect();
        drop(senders);
        if infos.is_empty() && sh.cfg.announce_to.is_empty() {
            if let Some(n) = sh.limiter.allow(LogKind::NoIface) {
                warn!(
                    "no usable interface to announce on (waiting for one){}",
                    suppressed(n)
                );
            }
        }
        sh.lock().interfaces = infos;
    }

    /// Sends one announce everywhere it should go.
    fn send_all(&self, sh: &DiscoveryCtx, bytes: &[u8]) {
        let group = SocketAddrV4::new(DISCOVERY_GROUP, self.port);
        for s in self.senders().values_mut() {
            if s.multicast {
                match s.sock.send_to(bytes, group) {
                    Ok(_) => bump(&sh.counters.announces_sent),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(e) => {
                        if self.mode == DiscoveryMode::Auto {
                            warn!(
                                "multicast on {} failed ({e}); falling back to broadcast",
                                s.iface.name
                            );
                            s.multicast = false;
                            s.broadcast = true;
                        } else if let Some(n) = sh.limiter.allow(LogKind::McSend) {
                            warn!("multicast on {} failed: {e}{}", s.iface.name, suppressed(n));
                        }
                    }
                }
            }
            if s.broadcast {
                let dst =
                    SocketAddrV4::new(s.iface.broadcast.unwrap_or(Ipv4Addr::BROADCAST), self.port);
                match s.sock.send_to(bytes, dst) {
                    Ok(_) => bump(&sh.counters.announces_sent),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(e) => {
                        if let Some(n) = sh.limiter.allow(LogKind::BcSend) {
                            warn!(
                                "broadcast on {} to {dst} failed: {e}{}",
                                s.iface.name,
                                suppressed(n)
                            );
                        }
                    }
                }
            }
        }
        for t in &sh.cfg.announce_to {
            match self.recv.try_send_to(bytes, SocketAddr::V4(*t)) {
                Ok(_) => bump(&sh.counters.announces_sent),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => {
                    if let Some(n) = sh.limiter.allow(LogKind::UcSend) {
                        warn!("announce to {t} failed: {e}{}", suppressed(n));
                    }
                }
            }
        }
    }
}

fn jittered(interval: Duration) -> Duration {
    interval.mul_f64(0.75 + fastrand::f64() * 0.5)
}

/// The announce loop (also rescans interfaces).
pub async fn announcer(sh: DiscoveryCtx, disc: Arc<Discovery>, announce: Announce) {
    let bytes = announce.encode();
    let mut shutdown = sh.shutdown.clone();
    let mut burst = 2u32;
    let mut last_scan = tokio::time::Instant::now();
    let mut last_sent: Option<tokio::time::Instant> = None;
    loop {
        if last_scan.elapsed() >= RESCAN {
            disc.rescan(&sh);
            last_scan = tokio::time::Instant::now();
        }
        if let Some(t) = last_sent {
            let gap = Duration::from_millis(250).saturating_sub(t.elapsed());
            if !gap.is_zero() {
                tokio::time::sleep(gap).await;
            }
        }
        disc.send_all(&sh, &bytes);
        last_sent = Some(tokio::time::Instant::now());
        let wait = if burst > 0 {
            burst -= 1;
            Duration::from_millis(200 + fastrand::u64(0..100))
        } else {
            jittered(sh.cfg.announce_interval)
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = sh.announce_soon.notified() => {
                tokio::time::sleep(Duration::from_millis(20 + fastrand::u64(0..100))).await;
            }
            _ = shutdown.changed() => return,
        }
    }
}

/// The receive loop: every datagram goes through the known-peers pins and
/// the peer table; noisy outcomes are logged at most once a second each.
pub async fn receiver(sh: DiscoveryCtx, disc: Arc<Discovery>) {
    let mut buf = [0u8; RECV_BUF_LEN];
    let mut shutdown = sh.shutdown.clone();
    loop {
        let (n, src) = tokio::select! {
            r = disc.recv.recv_from(&mut buf) => match r {
                Ok(x) => x,
                Err(e) => {
                    if let Some(k) = sh.limiter.allow(LogKind::Recv) {
                        debug!("discovery receive error: {e}{}", suppressed(k));
                    }
                    continue;
                }
            },
            _ = shutdown.changed() => return,
        };
        bump(&sh.counters.datagrams);
        handle_datagram(&sh, src, &buf[..n]);
    }
}

fn handle_datagram(sh: &DiscoveryCtx, src: SocketAddr, d: &[u8]) {
    let now = sh.clock.now();
    let mut st = sh.lock();
    let (outcome, ann) = match Announce::decode(d) {
        Err(_) => (st.table.observe_datagram(src, d, now), None),
        Ok(a) => {
            if let Some(pin) = st.known.get(a.device_id()).copied() {
                if &pin != a.static_key() {
                    // Only pinned ids get a refusal record: bounded by pins.
                    st.refuse(
                        a.device_id(),
                        format!(
                            "key changed: announced key {} from {src}, pinned {} (`dsoftbus trust {} --replace` to accept the new key)",
                            fingerprint(a.static_key()),
                            fingerprint(&pin),
                            a.device_id()
                        ),
                        Some(*a.static_key()),
                    );
                    drop(st);
                    bump(&sh.counters.key_conflicts);
                    if let Some(n) = sh.limiter.allow(LogKind::PinConflict) {
                        warn!(
                            "announce refused (key conflict) peer={} from={src} key={} pinned={}{}",
                            a.device_id().log_safe(),
                            fingerprint(a.static_key()),
                            fingerprint(&pin),
                            suppressed(n)
                        );
                    }
                    return;
                }
            } else if sh.cfg.trust_mode == TrustMode::Known {
                drop(st);
                bump(&sh.counters.unknown_ignored);
                if let Some(n) = sh.limiter.allow(LogKind::Unknown) {
                    info!(
                        "announce ignored (unknown device; --require-known) peer={} from={src} key={}{}",
                        a.device_id().log_safe(),
                        hex::encode(a.static_key().as_bytes()),
                        suppressed(n)
                    );
                }
                return;
            }
            let out = st.table.observe(src, &a, now);
            if out.is_accepted() {
                st.candidates
                    .heard(a.device_id(), SocketAddr::new(src.ip(), a.port()), now);
            }
            (out, Some(a))
        }
    };
    drop(st);
    match (outcome, ann) {
        (Observe::Inserted, Some(a)) => {
            let pending = sh.cfg.trust_mode == TrustMode::Pending
                && sh.lock().known.get(a.device_id()).is_none();
            if pending {
                if let Some(n) = sh.limiter.allow(LogKind::PeerPending) {
                    info!(
                        "discovery peer pending device={} addr={} key={} (accept it with `dsoftbus trust {}`){}",
                        a.device_id().log_safe(),
                        SocketAddr::new(src.ip(), a.port()),
                        hex::encode(a.static_key().as_bytes()),
                        a.device_id().log_safe(),
                        suppressed(n)
                    );
                }
            } else if let Some(n) = sh.limiter.allow(LogKind::PeerFound) {
                info!(
                    "discovery peer found device={} addr={} key={}{}",
                    a.device_id().log_safe(),
                    SocketAddr::new(src.ip(), a.port()),
                    fingerprint(a.static_key()),
                    suppressed(n)
                );
            }
            sh.wake_dialer.notify_one();
            sh.announce_soon.notify_one();
        }
        (Observe::Updated, Some(a)) => {
            if let Some(n) = sh.limiter.allow(LogKind::PeerUpdated) {
                debug!(
                    "peer updated device={} addr={}{}",
                    a.device_id().log_safe(),
                    SocketAddr::new(src.ip(), a.port()),
                    suppressed(n)
                );
            }
            sh.wake_dialer.notify_one();
        }
        (Observe::KeyConflict, Some(a)) => {
            bump(&sh.counters.key_conflicts);
            if let Some(n) = sh.limiter.allow(LogKind::KeyConflict) {
                warn!(
                    "announce refused (key conflict) peer={} from={src} key={}{}",
                    a.device_id().log_safe(),
                    fingerprint(a.static_key()),
                    suppressed(n)
                );
            }
        }
        (Observe::Malformed(e), _) => {
            bump(&sh.counters.malformed);
            if let Some(n) = sh.limiter.allow(LogKind::Malformed) {
                info!(
                    "announce ignored (malformed: {e}) from={src}{}",
                    suppressed(n)
                );
            }
        }
        (Observe::Oversized, _) => {
            bump(&sh.counters.oversized);
            if let Some(n) = sh.limiter.allow(LogKind::Oversized) {
                info!(
                    "announce ignored (oversized, over {MAX_ANNOUNCE_LEN} bytes) from={src}{}",
                    suppressed(n)
                );
            }
        }
        (Observe::Full | Observe::SourceLimited, Some(a)) => {
            if let Some(n) = sh.limiter.allow(LogKind::Full) {
                debug!(
                    "announce refused (peer table bound) peer={} from={src}{}",
                    a.device_id().log_safe(),
                    suppressed(n)
                );
            }
        }
        _ => {}
    }
}
