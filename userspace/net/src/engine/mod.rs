//! The engine: two interfaces, DHCP, the socket table and parked requests,
//! driven entirely by the daemon's calls.
//!
//! # Driving contract
//!
//! ```text
//! loop {
//!     for each IPC message:  engine.submit(now, client, req_id, request)
//!                            -> Submit::Done(response)  (answer now)
//!                             | Submit::Pending         (answer comes from poll)
//!     on channel close:      engine.close_client(client)
//!     let out = engine.poll(now);   // completions + NetEvents
//!     sleep until engine.poll_at(now) (or an IRQ / IPC message)
//! }
//! ```
//!
//! Every request gets exactly one response: either the `Done` value, or one
//! [`Completion`] from a later [`Engine::poll`] with the same `(client,
//! req_id)` — unless the client is closed first, in which case its parked
//! requests are dropped silently (there is no one to answer).
//!
//! One module per protocol, each adding methods to [`Engine`]: `udp_sock`
//! (bind, send, receive, multicast), `tcp_sock` (listeners, connect, accept,
//! read, write, orphans), `icmp_echo` (ping) and `addr` (DHCP results,
//! link-local, the ARP tap). This file holds the engine itself: the
//! interfaces, the socket table, request dispatch and parked requests.
//!
//! The engine owns the NIC device (`D`), so the daemon cannot hand a different
//! device to different polls; it reaches the device through
//! [`Engine::device_mut`] (e.g. to acknowledge an interrupt).

use alloc::boxed::Box;
use alloc::collections::BTreeSet;
use alloc::vec;
use alloc::vec::Vec;
use core::mem;

use smoltcp::iface::{Config, Interface, PollResult, SocketSet};
use smoltcp::phy::{Device, Medium};
use smoltcp::socket::{tcp, udp, Socket};
use smoltcp::time::{Duration, Instant};
use smoltcp::wire::{
    EthernetAddress, HardwareAddress, IpAddress, IpCidr, IpEndpoint, IpListenEndpoint, Ipv4Address,
    Ipv4Cidr,
};

use crate::dhcp::{DhcpClient, DhcpEvent, Lease};
use crate::facade::{self, Error, InterfaceStatus, Ipv4, Request, Response, SockAddr, SocketId};
use crate::limits::*;
use crate::linklocal::{ArpSeen, LinkLocal, LinkLocalConfig, LinkLocalEvent, ARP_FRAME_LEN};
use crate::loopback::{self, IfaceId, LoopbackDevice, LOOPBACK_ADDR, LOOPBACK_CIDR};
use crate::ping::{PingOp, PingStatus};
use crate::sockets::{Entry, SocketKind, SocketTable, StackSocket, TcpListener, UdpSocket};

mod addr;
mod icmp_echo;
mod tcp_sock;
mod udp_sock;

use addr::ArpTap;

/// Identifies a client (one IPC channel). Chosen by the daemon; the engine
/// only compares them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ClientId(pub u32);

/// Construction parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EngineConfig {
    /// NIC MAC address (must be unicast).
    pub mac: [u8; 6],
    /// Seed for smoltcp's PRNG (TCP initial sequence numbers, DHCP
    /// transaction ids) and the first ephemeral port. Use real entropy
    /// (RDRAND) in the OS; tests use constants.
    pub random_seed: u64,
    /// Cap on the DHCP lease duration (renewal then starts at half of it).
    /// `None` follows the server.
    pub dhcp_max_lease: Option<Duration>,
    /// IPv4 link-local fallback (RFC 3927) when DHCP stays silent; `None`
    /// turns it off (the NIC then waits for DHCP forever).
    pub link_local: Option<LinkLocalConfig>,
}

impl EngineConfig {
    /// Config with no lease cap and link-local fallback at the default
    /// timings ([`LinkLocalConfig::default`]).
    pub fn new(mac: [u8; 6], random_seed: u64) -> EngineConfig {
        EngineConfig {
            mac,
            random_seed,
            dhcp_max_lease: None,
            link_local: Some(LinkLocalConfig::default()),
        }
    }
}

/// Why [`Engine::new`] refused a device or configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InitError {
    /// The device's medium is not Ethernet.
    NotEthernet,
    /// The MAC is a multicast or broadcast address.
    InvalidMac,
}

impl core::fmt::Display for InitError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            InitError::NotEthernet => f.write_str("device medium is not Ethernet"),
            InitError::InvalidMac => f.write_str("MAC address is not unicast"),
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for InitError {}

/// Something the daemon should know about (markers, logs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NetEvent {
    /// A lease was obtained; the NIC now has `lease.address` and a default
    /// route via `lease.gateway`. Print `net: dhcp bound <ip>/<prefix> gw=<gw>`.
    DhcpBound(Lease),
    /// The configuration changed while bound (new address or router).
    DhcpChanged(Lease),
    /// The lease was lost; the NIC has no address or default route.
    DhcpDeconfigured,
    /// No lease within the fallback bound: the NIC now has this RFC 3927
    /// link-local address (`169.254.x.y/16`, no default route). Print
    /// `net: dhcp unavailable; link-local <ip>/16`.
    LinkLocalClaimed(Ipv4Cidr),
    /// Another host uses `addr`. `claimed`: it was the NIC's address, which
    /// has been removed; otherwise it was only a candidate. Either way the
    /// next candidate is being probed.
    LinkLocalConflict {
        /// The contested address.
        addr: Ipv4Address,
        /// Whether the NIC had claimed it.
        claimed: bool,
    },
    /// A DHCP lease replaced the link-local address (reported just before
    /// the [`NetEvent::DhcpBound`] that carries the lease).
    LinkLocalReplaced(Ipv4Cidr),
}

/// Result of [`Engine::submit`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Submit {
    /// The answer, available now.
    Done(Response),
    /// Parked; the answer comes as a [`Completion`] from a later poll.
    Pending,
}

/// The answer to a parked request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Completion {
    /// Client that sent the request.
    pub client: ClientId,
    /// Its request id.
    pub req_id: u32,
    /// The answer.
    pub response: Response,
}

/// What one [`Engine::poll`] produced.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PollOutput {
    /// Answers to parked requests, in completion order.
    pub completions: Vec<Completion>,
    /// Interface events, in order.
    pub events: Vec<NetEvent>,
}

#[derive(Debug)]
enum Op {
    RecvFrom { socket: SocketId },
    Accept { socket: SocketId },
    Read { socket: SocketId, max_len: usize },
    Write { socket: SocketId, data: Vec<u8> },
    Connect { socket: SocketId, deadline: Instant },
    Ping(Box<PingOp>),
}

impl Op {
    fn socket(&self) -> Option<SocketId> {
        match self {
            Op::RecvFrom { socket }
            | Op::Accept { socket }
            | Op::Read { socket, .. }
            | Op::Write { socket, .. }
            | Op::Connect { socket, .. } => Some(*socket),
            Op::Ping(_) => None,
        }
    }

    /// Ops of the same class may not wait on one socket at the same time.
    fn is_write(&self) -> bool {
        matches!(self, Op::Write { .. })
    }
}

#[derive(Debug)]
struct Pending {
    client: ClientId,
    req_id: u32,
    op: Op,
}

/// The two socket sets, split out of [`Engine`] so that borrowing one set
/// does not borrow the socket table or the interfaces.
struct Stacks {
    nic: SocketSet<'static>,
    lo: SocketSet<'static>,
}

impl Stacks {
    fn set(&mut self, iface: IfaceId) -> &mut SocketSet<'static> {
        match iface {
            IfaceId::Nic => &mut self.nic,
            IfaceId::Loopback => &mut self.lo,
        }
    }

    fn count(&self) -> usize {
        self.nic.iter().count() + self.lo.iter().count()
    }

    fn check_room(&self, n: usize) -> Result<(), Error> {
        if self.count() + n > MAX_STACK_SOCKETS {
            Err(Error::NoSockets)
        } else {
            Ok(())
        }
    }

    fn tcp(&mut self, s: StackSocket) -> &mut tcp::Socket<'static> {
        self.set(s.iface).get_mut::<tcp::Socket>(s.handle)
    }

    fn udp(&mut self, s: StackSocket) -> &mut udp::Socket<'static> {
        self.set(s.iface).get_mut::<udp::Socket>(s.handle)
    }

    fn remove(&mut self, s: StackSocket) {
        self.set(s.iface).remove(s.handle);
    }

    /// Is a TCP socket on `iface` using local `port` (listening or connected)?
    fn tcp_port_used(&self, iface: IfaceId, port: u16) -> bool {
        let set = match iface {
            IfaceId::Nic => &self.nic,
            IfaceId::Loopback => &self.lo,
        };
        set.iter().any(|(_, s)| match s {
            Socket::Tcp(t) => {
                t.listen_endpoint().port == port || t.local_endpoint().map(|e| e.port) == Some(port)
            }
            _ => false,
        })
    }

    /// Is a UDP socket on `iface` bound to `port`?
    fn udp_port_used(&self, iface: IfaceId, port: u16) -> bool {
        let set = match iface {
            IfaceId::Nic => &self.nic,
            IfaceId::Loopback => &self.lo,
        };
        set.iter().any(|(_, s)| match s {
            Socket::Udp(u) => u.endpoint().port == port,
            _ => false,
        })
    }
}

fn sock_addr(ep: Option<IpEndpoint>) -> SockAddr {
    ep.and_then(SockAddr::from_endpoint)
        .unwrap_or(SockAddr::new(Ipv4::UNSPECIFIED, 0))
}

/// UDP port of the DHCP client on the NIC; clients may not bind it there.
const DHCP_CLIENT_PORT: u16 = 68;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Proto {
    Tcp,
    Udp,
}

/// The network-stack engine. See the [module docs](self) for the driving
/// contract and [`crate::limits`] for its bounds.
pub struct Engine<D: Device> {
    device: D,
    mac: EthernetAddress,
    nic: Interface,
    lo_dev: LoopbackDevice,
    lo: Interface,
    stacks: Stacks,
    dhcp: DhcpClient,
    link_local: Option<LinkLocal>,
    /// ARP packets seen on the NIC during one interface poll (bounded by
    /// [`MAX_ARP_SEEN`]); fed to the link-local client.
    arp_seen: Vec<ArpSeen>,
    table: SocketTable,
    clients: BTreeSet<ClientId>,
    pending: Vec<Pending>,
    completions: Vec<Completion>,
    /// TCP sockets closed by their client (or torn down) that are finishing
    /// the FIN/RST exchange, with the time they must be gone by.
    orphans: Vec<(StackSocket, Instant)>,
    next_port: u16,
    next_ident: u16,
    /// Latest time seen in `submit`/`poll`, for calls that take no clock.
    now: Instant,
}

impl<D: Device> Engine<D> {
    /// Builds the engine around `device` (an Ethernet NIC): the NIC interface
    /// with `config.mac`, a DHCP client on it, and the `127.0.0.1/8` loopback
    /// interface. The NIC has no address until the first lease
    /// ([`NetEvent::DhcpBound`]).
    pub fn new(mut device: D, config: EngineConfig, now: Instant) -> Result<Self, InitError> {
        if device.capabilities().medium != Medium::Ethernet {
            return Err(InitError::NotEthernet);
        }
        let mac = EthernetAddress(config.mac);
        if !mac.is_unicast() {
            return Err(InitError::InvalidMac);
        }
        let mut nic_cfg = Config::new(HardwareAddress::Ethernet(mac));
        nic_cfg.random_seed = config.random_seed;
        let nic = Interface::new(nic_cfg, &mut device, now);
        let mut nic_sockets = SocketSet::new(Vec::new());
        let dhcp = DhcpClient::new(&mut nic_sockets, config.dhcp_max_lease);

        let mut lo_dev = LoopbackDevice::new();
        let mut lo_cfg = Config::new(HardwareAddress::Ip);
        lo_cfg.random_seed = config.random_seed.rotate_left(17) ^ 0x6e65_7875_735f_6c6f;
        let mut lo = Interface::new(lo_cfg, &mut lo_dev, now);
        lo.update_ip_addrs(|addrs| {
            // Fresh interface: the list is empty and has room.
            let _ = addrs.push(IpCidr::Ipv4(LOOPBACK_CIDR));
        });

        let span = u64::from(EPHEMERAL_PORT_LAST - EPHEMERAL_PORT_FIRST) + 1;
        let next_port = EPHEMERAL_PORT_FIRST + (config.random_seed % span) as u16;
        Ok(Engine {
            device,
            mac,
            nic,
            lo_dev,
            lo,
            stacks: Stacks {
                nic: nic_sockets,
                lo: SocketSet::new(Vec::new()),
            },
            dhcp,
            link_local: config
                .link_local
                .map(|cfg| LinkLocal::new(cfg, config.mac, config.random_seed, now)),
            arp_seen: Vec::new(),
            table: SocketTable::new(),
            clients: BTreeSet::new(),
            pending: Vec::new(),
            completions: Vec::new(),
            orphans: Vec::new(),
            next_port,
            next_ident: (config.random_seed >> 16) as u16 | 1,
            now,
        })
    }

    /// The NIC device.
    pub fn device(&self) -> &D {
        &self.device
    }

    /// The NIC device, mutably (interrupt acknowledgement and the like).
    pub fn device_mut(&mut self) -> &mut D {
        &mut self.device
    }

    /// The lease currently applied to the NIC.
    pub fn lease(&self) -> Option<&Lease> {
        self.dhcp.lease()
    }

    /// The NIC's address, if configured (DHCP lease or link-local).
    pub fn nic_addr(&self) -> Option<Ipv4Address> {
        self.nic_cidr().map(|c| c.address())
    }

    /// The NIC's address and prefix: the lease's, else the link-local one.
    pub fn nic_cidr(&self) -> Option<Ipv4Cidr> {
        match self.dhcp.lease() {
            Some(l) => Some(l.address),
            None => self.link_local.as_ref().and_then(LinkLocal::cidr),
        }
    }

    /// The link-local client, if enabled (state, conflicts).
    pub fn link_local(&self) -> Option<&LinkLocal> {
        self.link_local.as_ref()
    }

    /// Interface status (also served as `Request::InterfaceStatus`).
    pub fn status(&self) -> InterfaceStatus {
        let lease = self.dhcp.lease();
        InterfaceStatus {
            mac: self.mac.0,
            ipv4: self.nic_cidr().map(|c| facade::Ipv4Cidr {
                addr: c.address().into(),
                prefix_len: c.prefix_len(),
            }),
            gateway: lease.and_then(|l| l.gateway).map(Ipv4::from),
            dns: lease
                .map(|l| l.dns.iter().map(|a| Ipv4::from(*a)).collect())
                .unwrap_or_default(),
            loopback: facade::Ipv4Cidr {
                addr: LOOPBACK_ADDR.into(),
                prefix_len: LOOPBACK_CIDR.prefix_len(),
            },
            link_local: lease.is_none() && self.nic_cidr().is_some(),
        }
    }

    /// Restarts DHCP discovery (e.g. after the link came back). A current
    /// lease is reported lost on the next poll.
    pub fn dhcp_reset(&mut self) {
        self.dhcp.reset(&mut self.stacks.nic);
    }

    /// Number of clients the engine currently tracks.
    pub fn client_count(&self) -> usize {
        self.clients.len()
    }

    /// Number of facade sockets open across all clients.
    pub fn socket_count(&self) -> usize {
        self.table.len()
    }

    /// Number of smoltcp sockets on both interfaces (facade sockets, listener
    /// pools, lingering closes, pings and the DHCP socket).
    pub fn stack_socket_count(&self) -> usize {
        self.stacks.count()
    }

    /// Number of parked requests.
    pub fn pending_count(&self) -> usize {
        self.pending.len()
    }

    // ------------------------------------------------------------------
    // Driving
    // ------------------------------------------------------------------

    /// Runs the stack at time `now`: receives and transmits on both
    /// interfaces, applies DHCP changes, moves established connections to
    /// their listeners, completes parked requests and frees finished sockets.
    ///
    /// Bounded: at most [`MAX_POLL_ROUNDS`] rounds; leftover work shows up in
    /// [`Engine::poll_at`] as "now".
    pub fn poll(&mut self, now: Instant) -> PollOutput {
        self.now = now;
        let mut events = Vec::new();
        for _ in 0..MAX_POLL_ROUNDS {
            let mut progressed = false;
            let lo = self.lo.poll(now, &mut self.lo_dev, &mut self.stacks.lo);
            progressed |= matches!(lo, PollResult::SocketStateChanged);
            let mut tap = ArpTap {
                inner: &mut self.device,
                seen: &mut self.arp_seen,
            };
            let nic = self.nic.poll(now, &mut tap, &mut self.stacks.nic);
            progressed |= matches!(nic, PollResult::SocketStateChanged);

            if let Some(ev) = self.dhcp.poll(&mut self.nic, &mut self.stacks.nic) {
                let replaced = self.on_dhcp(now, &ev);
                if let Some(old) = replaced {
                    events.push(NetEvent::LinkLocalReplaced(old));
                }
                events.push(match ev {
                    DhcpEvent::Bound(l) => NetEvent::DhcpBound(l),
                    DhcpEvent::Changed(l) => NetEvent::DhcpChanged(l),
                    DhcpEvent::Deconfigured => NetEvent::DhcpDeconfigured,
                });
                progressed = true;
            }
            progressed |= self.run_link_local(now, &mut events);
            progressed |= self.service_listeners();
            progressed |= self.service_pending(now);
            self.reap_orphans(now);

            if !progressed && self.lo_dev.is_empty() {
                break;
            }
        }
        PollOutput {
            completions: mem::take(&mut self.completions),
            events,
        }
    }

    /// When [`Engine::poll`] must run next (`None`: only on new input — a
    /// received frame, a request). Never later than any stack timer, parked
    /// request deadline or ping retransmission.
    pub fn poll_at(&mut self, now: Instant) -> Option<Instant> {
        if !self.lo_dev.is_empty() || !self.completions.is_empty() {
            return Some(now);
        }
        let mut at = self.nic.poll_at(now, &self.stacks.nic);
        let mut take = |t: Instant| {
            at = Some(at.map_or(t, |a| a.min(t)));
        };
        if let Some(ll) = &self.link_local {
            if ll.has_tx() {
                take(now);
            }
            if let Some(t) = ll.poll_at() {
                take(t);
            }
        }
        if let Some(t) = self.lo.poll_at(now, &self.stacks.lo) {
            take(t);
        }
        for p in &self.pending {
            match &p.op {
                Op::Ping(op) => take(op.poll_at()),
                Op::Connect { deadline, .. } => take(*deadline),
                _ => {}
            }
        }
        for (_, deadline) in &self.orphans {
            take(*deadline);
        }
        at
    }

    /// [`Engine::poll_at`] as a delay from `now` (zero if already due).
    pub fn poll_delay(&mut self, now: Instant) -> Option<Duration> {
        self.poll_at(now)
            .map(|at| if at > now { at - now } else { Duration::ZERO })
    }

    /// Handles one request from `client`. Answers at once when it can;
    /// otherwise parks it and answers from a later [`Engine::poll`]. Call
    /// `poll` (or re-read `poll_at`) after submitting: a request may have
    /// queued packets.
    pub fn submit(
        &mut self,
        now: Instant,
        client: ClientId,
        req_id: u32,
        request: Request,
    ) -> Submit {
        self.now = now;
        if !self.clients.contains(&client) {
            if self.clients.len() >= MAX_CLIENTS {
                return Submit::Done(Response::Error(Error::TooManyClients));
            }
            self.clients.insert(client);
        }
        match self.dispatch(now, client, req_id, request) {
            Ok(Some(response)) => Submit::Done(response),
            Ok(None) => Submit::Pending,
            Err(e) => Submit::Done(Response::Error(e)),
        }
    }

    /// Forgets `client` (its channel closed): drops its parked requests
    /// without answering them and tears down all its sockets (TCP streams are
    /// reset, listeners and UDP sockets removed, multicast groups left when no
    /// other socket uses them).
    pub fn close_client(&mut self, client: ClientId) {
        let (mine, rest): (Vec<_>, Vec<_>) = mem::take(&mut self.pending)
            .into_iter()
            .partition(|p| p.client == client);
        self.pending = rest;
        for p in mine {
            self.finish_op(p.op);
        }
        for id in self.table.ids_of(client) {
            if let Ok(entry) = self.table.remove(client, id) {
                self.release(entry, false);
            }
        }
        self.completions.retain(|c| c.client != client);
        self.clients.remove(&client);
    }

    // ------------------------------------------------------------------
    // Requests
    // ------------------------------------------------------------------

    fn dispatch(
        &mut self,
        now: Instant,
        client: ClientId,
        req_id: u32,
        request: Request,
    ) -> Result<Option<Response>, Error> {
        match request {
            Request::UdpBind { local } => self.udp_bind(client, local).map(Some),
            Request::UdpSendTo { socket, dst, data } => {
                self.udp_send_to(client, socket, dst, &data).map(Some)
            }
            Request::UdpRecvFrom { socket } => {
                self.udp_of(client, socket)?;
                self.park(now, client, req_id, Op::RecvFrom { socket })
            }
            Request::UdpJoinMulticast { socket, group } => {
                self.join(client, socket, group.into()).map(Some)
            }
            Request::UdpLeaveMulticast { socket, group } => {
                self.leave(client, socket, group.into()).map(Some)
            }
            Request::TcpListen { local, backlog } => {
                self.tcp_listen(client, local, backlog).map(Some)
            }
            Request::TcpAccept { socket } => {
                match &self.table.get(client, socket)?.kind {
                    SocketKind::Listener(_) => {}
                    _ => return Err(Error::WrongSocketType),
                }
                self.park(now, client, req_id, Op::Accept { socket })
            }
            Request::TcpConnect { remote } => self.tcp_connect(now, client, req_id, remote),
            Request::TcpRead { socket, max_len } => {
                self.stream_of(client, socket)?;
                if max_len == 0 {
                    return Err(Error::InvalidArgument);
                }
                let max_len = (max_len as usize).min(MAX_STREAM_DATA_LEN);
                self.park(now, client, req_id, Op::Read { socket, max_len })
            }
            Request::TcpWrite { socket, data } => {
                self.stream_of(client, socket)?;
                if data.len() > MAX_STREAM_DATA_LEN {
                    return Err(Error::MessageTooLarge);
                }
                if data.is_empty() {
                    return Ok(Some(Response::Written { len: 0 }));
                }
                self.park(now, client, req_id, Op::Write { socket, data })
            }
            Request::Close { socket } => {
                let entry = self.table.remove(client, socket)?;
                self.release(entry, true);
                self.cancel_ops_on(client, socket);
                Ok(Some(Response::Ok))
            }
            Request::LocalAddr { socket } => self.local_addr(client, socket).map(Some),
            Request::InterfaceStatus => Ok(Some(Response::Status(self.status()))),
            Request::Ping { target, timeout_ms } => {
                self.ping(now, client, req_id, target.into(), timeout_ms)
            }
        }
    }

    fn check_pending_room(&self, client: ClientId) -> Result<(), Error> {
        let mine = self.pending.iter().filter(|p| p.client == client).count();
        if mine >= MAX_PENDING_PER_CLIENT || self.pending.len() >= MAX_PENDING_TOTAL {
            return Err(Error::TooManyPending);
        }
        Ok(())
    }

    /// Completes `op` now if possible, else parks it (bounded, one op per
    /// socket and direction).
    fn park(
        &mut self,
        now: Instant,
        client: ClientId,
        req_id: u32,
        op: Op,
    ) -> Result<Option<Response>, Error> {
        let busy = self.pending.iter().any(|p| {
            p.client == client && p.op.socket() == op.socket() && p.op.is_write() == op.is_write()
        });
        if busy {
            return Err(Error::Busy);
        }
        let mut pending = Pending { client, req_id, op };
        if let Some(response) = self.try_complete(&mut pending, now) {
            self.finish_op(pending.op);
            return Ok(Some(response));
        }
        self.check_pending_room(client)?;
        self.pending.push(pending);
        Ok(None)
    }

    fn udp_of(&self, client: ClientId, id: SocketId) -> Result<&UdpSocket, Error> {
        match &self.table.get(client, id)?.kind {
            SocketKind::Udp(u) => Ok(u),
            _ => Err(Error::WrongSocketType),
        }
    }

    fn stream_of(&self, client: ClientId, id: SocketId) -> Result<StackSocket, Error> {
        match &self.table.get(client, id)?.kind {
            SocketKind::Stream(s) => Ok(*s),
            _ => Err(Error::WrongSocketType),
        }
    }

    /// Checks that the NIC can carry a packet to `dst`.
    fn nic_route(&self, dst: Ipv4Address) -> Result<(), Error> {
        let cidr = self.nic_cidr().ok_or(Error::NotConfigured)?;
        let gateway = self.dhcp.lease().and_then(|l| l.gateway);
        if dst.is_broadcast() || dst.is_multicast() || cidr.contains_addr(&dst) || gateway.is_some()
        {
            Ok(())
        } else {
            Err(Error::NoRoute)
        }
    }

    fn port_used(&self, iface: IfaceId, port: u16, proto: Proto) -> bool {
        match proto {
            Proto::Tcp => self.stacks.tcp_port_used(iface, port),
            Proto::Udp => {
                self.stacks.udp_port_used(iface, port)
                    || (iface == IfaceId::Nic && port == DHCP_CLIENT_PORT)
            }
        }
    }

    fn ephemeral_port(&mut self, scope: &[IfaceId], proto: Proto) -> Result<u16, Error> {
        let span = u32::from(EPHEMERAL_PORT_LAST - EPHEMERAL_PORT_FIRST) + 1;
        for _ in 0..span {
            let port = self.next_port;
            self.next_port = if port == EPHEMERAL_PORT_LAST {
                EPHEMERAL_PORT_FIRST
            } else {
                port + 1
            };
            if !scope.iter().any(|i| self.port_used(*i, port, proto)) {
                return Ok(port);
            }
        }
        Err(Error::AddrInUse)
    }

    fn local_addr(&mut self, client: ClientId, id: SocketId) -> Result<Response, Error> {
        match &self.table.get(client, id)?.kind {
            SocketKind::Udp(u) => Ok(Response::Addr {
                local: u.local,
                remote: None,
            }),
            SocketKind::Listener(l) => Ok(Response::Addr {
                local: l.local,
                remote: None,
            }),
            SocketKind::Stream(s) => {
                let s = *s;
                let t = self.stacks.tcp(s);
                Ok(Response::Addr {
                    local: sock_addr(t.local_endpoint()),
                    remote: t.remote_endpoint().and_then(SockAddr::from_endpoint),
                })
            }
        }
    }

    // ------------------------------------------------------------------
    // Parked requests
    // ------------------------------------------------------------------

    fn try_complete(&mut self, p: &mut Pending, now: Instant) -> Option<Response> {
        let client = p.client;
        match &mut p.op {
            Op::RecvFrom { socket } => self.try_recv_from(client, *socket),
            Op::Accept { socket } => self.try_accept(client, *socket),
            Op::Read { socket, max_len } => self.try_read(client, *socket, *max_len),
            Op::Write { socket, data } => self.try_write(client, *socket, data),
            Op::Connect { socket, deadline } => self.try_connect(client, *socket, *deadline, now),
            Op::Ping(op) => match op.poll(self.stacks.set(op.iface), now) {
                PingStatus::Pending => None,
                PingStatus::Reply { rtt } => Some(Response::Pong {
                    rtt_us: rtt.total_micros(),
                }),
                PingStatus::Timeout => Some(Response::Error(Error::Timeout)),
            },
        }
    }

    /// Frees what a finished (or dropped) op held.
    fn finish_op(&mut self, op: Op) {
        if let Op::Ping(ping) = op {
            let ping = *ping;
            let iface = ping.iface;
            ping.close(self.stacks.set(iface));
        }
    }

    fn service_pending(&mut self, now: Instant) -> bool {
        let mut progressed = false;
        let ops = mem::take(&mut self.pending);
        let mut keep = Vec::with_capacity(ops.len());
        for mut p in ops {
            match self.try_complete(&mut p, now) {
                Some(response) => {
                    self.completions.push(Completion {
                        client: p.client,
                        req_id: p.req_id,
                        response,
                    });
                    self.finish_op(p.op);
                    progressed = true;
                }
                None => keep.push(p),
            }
        }
        // Nothing parks new ops while servicing, but keep any just in case.
        keep.append(&mut self.pending);
        self.pending = keep;
        progressed
    }

    /// Completes every op parked on `(client, id)` with `Error::Closed`.
    fn cancel_ops_on(&mut self, client: ClientId, id: SocketId) {
        let (hit, rest): (Vec<_>, Vec<_>) = mem::take(&mut self.pending)
            .into_iter()
            .partition(|p| p.client == client && p.op.socket() == Some(id));
        self.pending = rest;
        for p in hit {
            self.completions.push(Completion {
                client: p.client,
                req_id: p.req_id,
                response: Response::Error(Error::Closed),
            });
            self.finish_op(p.op);
        }
    }

    // ------------------------------------------------------------------
    // Background work
    // ------------------------------------------------------------------

    /// Frees a facade socket's stack resources. `graceful` closes TCP streams
    /// with FIN (lingering up to [`ORPHAN_LINGER`]); otherwise they are reset.
    fn release(&mut self, entry: Entry, graceful: bool) {
        let deadline = self.now + ORPHAN_LINGER;
        match entry.kind {
            SocketKind::Udp(u) => {
                for p in u.parts {
                    self.stacks.remove(p);
                }
                for g in u.groups {
                    self.leave_if_unused(g);
                }
            }
            SocketKind::Listener(l) => {
                for s in l.listening.into_iter().chain(l.ready) {
                    self.stacks.tcp(s).abort();
                    self.orphans.push((s, deadline));
                }
            }
            SocketKind::Stream(s) => {
                let t = self.stacks.tcp(s);
                if graceful {
                    t.close();
                } else {
                    t.abort();
                }
                self.orphans.push((s, deadline));
            }
        }
    }
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn neighbor_cache_bound_matches_smoltcp() {
        assert_eq!(
            NEIGHBOR_CACHE_ENTRIES,
            smoltcp::config::IFACE_NEIGHBOR_CACHE_COUNT
        );
    }
}
