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

fn new_tcp_socket() -> tcp::Socket<'static> {
    let mut s = tcp::Socket::new(
        tcp::SocketBuffer::new(vec![0u8; TCP_RX_BUFFER]),
        tcp::SocketBuffer::new(vec![0u8; TCP_TX_BUFFER]),
    );
    s.set_timeout(Some(TCP_TIMEOUT));
    s
}

fn new_udp_socket() -> udp::Socket<'static> {
    udp::Socket::new(
        udp::PacketBuffer::new(
            vec![udp::PacketMetadata::EMPTY; UDP_RX_PACKETS],
            vec![0u8; UDP_RX_BUFFER],
        ),
        udp::PacketBuffer::new(
            vec![udp::PacketMetadata::EMPTY; UDP_TX_PACKETS],
            vec![0u8; UDP_TX_BUFFER],
        ),
    )
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

    fn udp_bind(&mut self, client: ClientId, local: SockAddr) -> Result<Response, Error> {
        let ip: Ipv4Address = local.ip.into();
        if ip.is_multicast() || ip.is_broadcast() {
            return Err(Error::InvalidArgument);
        }
        let scope = loopback::bind_scope(ip, self.nic_addr());
        self.table.check_room(client, 1)?;
        self.stacks.check_room(scope.len())?;
        let port = if local.port == 0 {
            self.ephemeral_port(scope, Proto::Udp)?
        } else {
            if scope
                .iter()
                .any(|i| self.port_used(*i, local.port, Proto::Udp))
            {
                return Err(Error::AddrInUse);
            }
            local.port
        };
        let endpoint = IpListenEndpoint {
            addr: (!ip.is_unspecified()).then_some(IpAddress::Ipv4(ip)),
            port,
        };
        let mut parts = Vec::with_capacity(scope.len());
        for iface in scope {
            let mut socket = new_udp_socket();
            if socket.bind(endpoint).is_err() {
                for p in parts {
                    self.stacks.remove(p);
                }
                return Err(Error::InvalidArgument);
            }
            let handle = self.stacks.set(*iface).add(socket);
            parts.push(StackSocket {
                iface: *iface,
                handle,
            });
        }
        let local = SockAddr::new(local.ip, port);
        let kind = SocketKind::Udp(UdpSocket {
            local,
            parts: parts.clone(),
            groups: Vec::new(),
        });
        match self.table.insert(client, kind) {
            Ok(socket) => Ok(Response::Bound { socket, local }),
            Err(e) => {
                for p in parts {
                    self.stacks.remove(p);
                }
                Err(e)
            }
        }
    }

    fn udp_send_to(
        &mut self,
        client: ClientId,
        id: SocketId,
        dst: SockAddr,
        data: &[u8],
    ) -> Result<Response, Error> {
        let parts = self.udp_of(client, id)?.parts.clone();
        if data.len() > MAX_DATA_LEN {
            return Err(Error::MessageTooLarge);
        }
        let dst_ip: Ipv4Address = dst.ip.into();
        if dst.port == 0 || dst_ip.is_unspecified() {
            return Err(Error::InvalidArgument);
        }
        let iface = loopback::route(dst_ip, self.nic_addr());
        if iface == IfaceId::Nic {
            self.nic_route(dst_ip)?;
        }
        // A socket bound only to loopback cannot reach the NIC and vice versa.
        let part = parts
            .iter()
            .find(|p| p.iface == iface)
            .copied()
            .ok_or(Error::NoRoute)?;
        self.stacks
            .udp(part)
            .send_slice(data, dst.to_endpoint())
            .map_err(|e| match e {
                udp::SendError::BufferFull => Error::BufferFull,
                udp::SendError::Unaddressable => Error::InvalidArgument,
            })?;
        Ok(Response::Sent {
            len: data.len() as u32,
        })
    }

    fn join(
        &mut self,
        client: ClientId,
        id: SocketId,
        group: Ipv4Address,
    ) -> Result<Response, Error> {
        if !group.is_multicast() {
            return Err(Error::InvalidArgument);
        }
        let udp = self.udp_of(client, id)?;
        if !udp.parts.iter().any(|p| p.iface == IfaceId::Nic) {
            // Multicast is an NIC feature; a loopback-only socket cannot join.
            return Err(Error::Unsupported);
        }
        if udp.groups.contains(&group) {
            return Ok(Response::Ok);
        }
        self.nic.join_multicast_group(group).map_err(|e| match e {
            smoltcp::iface::MulticastError::GroupTableFull => Error::MulticastTableFull,
            _ => Error::InvalidArgument,
        })?;
        if let Ok(Entry {
            kind: SocketKind::Udp(u),
            ..
        }) = self.table.get_mut(client, id)
        {
            u.groups.push(group);
        }
        Ok(Response::Ok)
    }

    fn leave(
        &mut self,
        client: ClientId,
        id: SocketId,
        group: Ipv4Address,
    ) -> Result<Response, Error> {
        self.udp_of(client, id)?;
        if let Ok(Entry {
            kind: SocketKind::Udp(u),
            ..
        }) = self.table.get_mut(client, id)
        {
            let before = u.groups.len();
            u.groups.retain(|g| *g != group);
            if u.groups.len() == before {
                return Err(Error::InvalidArgument);
            }
        }
        self.leave_if_unused(group);
        Ok(Response::Ok)
    }

    /// Leaves `group` on the NIC unless another socket still joined it.
    fn leave_if_unused(&mut self, group: Ipv4Address) {
        let used = self.table.iter().any(|(_, e)| match &e.kind {
            SocketKind::Udp(u) => u.groups.contains(&group),
            _ => false,
        });
        if !used {
            let _ = self.nic.leave_multicast_group(group);
        }
    }

    fn tcp_listen(
        &mut self,
        client: ClientId,
        local: SockAddr,
        backlog: u8,
    ) -> Result<Response, Error> {
        let ip: Ipv4Address = local.ip.into();
        if local.port == 0 || ip.is_multicast() || ip.is_broadcast() {
            return Err(Error::InvalidArgument);
        }
        let scope = loopback::bind_scope(ip, self.nic_addr());
        self.table.check_room(client, 1)?;
        let clash = self.table.iter().any(|(_, e)| match &e.kind {
            SocketKind::Listener(l) => {
                l.local.port == local.port && l.scope.iter().any(|i| scope.contains(i))
            }
            _ => false,
        });
        if clash {
            return Err(Error::AddrInUse);
        }
        self.stacks.check_room(scope.len())?;
        let backlog = usize::from(backlog).clamp(1, MAX_BACKLOG);
        let endpoint = IpListenEndpoint {
            addr: (!ip.is_unspecified()).then_some(IpAddress::Ipv4(ip)),
            port: local.port,
        };
        let mut listener = TcpListener {
            local,
            scope: scope.to_vec(),
            backlog,
            listening: Vec::new(),
            ready: Default::default(),
        };
        for iface in scope {
            // The first socket per interface fits (checked above); the rest
            // of the pool is filled as the budget allows.
            for _ in 0..backlog {
                if self.stacks.check_room(1).is_err() {
                    break;
                }
                let mut socket = new_tcp_socket();
                if socket.listen(endpoint).is_err() {
                    break;
                }
                let handle = self.stacks.set(*iface).add(socket);
                listener.listening.push(StackSocket {
                    iface: *iface,
                    handle,
                });
            }
        }
        match self.table.insert(client, SocketKind::Listener(listener)) {
            Ok(socket) => Ok(Response::Bound { socket, local }),
            Err(e) => Err(e),
        }
    }

    fn tcp_connect(
        &mut self,
        now: Instant,
        client: ClientId,
        req_id: u32,
        remote: SockAddr,
    ) -> Result<Option<Response>, Error> {
        let dst: Ipv4Address = remote.ip.into();
        if remote.port == 0 || dst.is_unspecified() || dst.is_multicast() || dst.is_broadcast() {
            return Err(Error::InvalidArgument);
        }
        let nic_addr = self.nic_addr();
        let iface = loopback::route(dst, nic_addr);
        let local_ip = match iface {
            IfaceId::Nic => {
                self.nic_route(dst)?;
                nic_addr.ok_or(Error::NotConfigured)?
            }
            IfaceId::Loopback if Some(dst) == nic_addr => dst,
            IfaceId::Loopback => LOOPBACK_ADDR,
        };
        self.table.check_room(client, 1)?;
        self.check_pending_room(client)?;
        self.stacks.check_room(1)?;
        let port = self.ephemeral_port(&[iface], Proto::Tcp)?;
        let mut socket = new_tcp_socket();
        let cx = match iface {
            IfaceId::Nic => self.nic.context(),
            IfaceId::Loopback => self.lo.context(),
        };
        socket
            .connect(
                cx,
                remote.to_endpoint(),
                IpEndpoint::new(local_ip.into(), port),
            )
            .map_err(|_| Error::InvalidArgument)?;
        let stack = StackSocket {
            iface,
            handle: self.stacks.set(iface).add(socket),
        };
        let socket = match self.table.insert(client, SocketKind::Stream(stack)) {
            Ok(id) => id,
            Err(e) => {
                self.stacks.remove(stack);
                return Err(e);
            }
        };
        self.pending.push(Pending {
            client,
            req_id,
            op: Op::Connect {
                socket,
                deadline: now + CONNECT_TIMEOUT,
            },
        });
        Ok(None)
    }

    fn ping(
        &mut self,
        now: Instant,
        client: ClientId,
        req_id: u32,
        target: Ipv4Address,
        timeout_ms: u32,
    ) -> Result<Option<Response>, Error> {
        // A ping names one host: an answer to a broadcast or multicast echo
        // would come from some other address and could not be matched.
        let subnet_broadcast = self.nic_cidr().and_then(|c| c.broadcast());
        if timeout_ms == 0
            || target.is_unspecified()
            || target.is_broadcast()
            || target.is_multicast()
            || Some(target) == subnet_broadcast
        {
            return Err(Error::InvalidArgument);
        }
        let timeout = Duration::from_millis(u64::from(timeout_ms)).min(MAX_PING_TIMEOUT);
        let iface = loopback::route(target, self.nic_addr());
        if iface == IfaceId::Nic {
            self.nic_route(target)?;
        }
        self.check_pending_room(client)?;
        self.stacks.check_room(1)?;
        let ident = self.fresh_ident();
        let op = PingOp::new(self.stacks.set(iface), iface, target, ident, now, timeout);
        self.pending.push(Pending {
            client,
            req_id,
            op: Op::Ping(Box::new(op)),
        });
        Ok(None)
    }

    /// An ICMP identifier no running ping uses.
    fn fresh_ident(&mut self) -> u16 {
        loop {
            let ident = self.next_ident;
            self.next_ident = self.next_ident.wrapping_add(1);
            let used = self
                .pending
                .iter()
                .any(|p| matches!(&p.op, Op::Ping(op) if op.ident() == ident));
            // At most MAX_PENDING_TOTAL idents are in use, so this ends.
            if ident != 0 && !used {
                return ident;
            }
        }
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

    fn try_recv_from(&mut self, client: ClientId, id: SocketId) -> Option<Response> {
        let parts = match self.udp_of(client, id) {
            Ok(u) => u.parts.clone(),
            Err(e) => return Some(Response::Error(e)),
        };
        for part in parts {
            if let Ok((data, meta)) = self.stacks.udp(part).recv() {
                let n = data.len().min(MAX_DATA_LEN);
                let data = data.get(..n).unwrap_or_default().to_vec();
                return Some(Response::Datagram {
                    src: sock_addr(Some(meta.endpoint)),
                    data,
                });
            }
        }
        None
    }

    fn try_accept(&mut self, client: ClientId, id: SocketId) -> Option<Response> {
        let stack = match self.table.get_mut(client, id) {
            Ok(Entry {
                kind: SocketKind::Listener(l),
                ..
            }) => l.ready.pop_front()?,
            Ok(_) => return Some(Response::Error(Error::WrongSocketType)),
            Err(e) => return Some(Response::Error(e)),
        };
        match self.table.insert(client, SocketKind::Stream(stack)) {
            Ok(socket) => {
                let t = self.stacks.tcp(stack);
                Some(Response::Accepted {
                    socket,
                    local: sock_addr(t.local_endpoint()),
                    remote: sock_addr(t.remote_endpoint()),
                })
            }
            Err(e) => {
                // Keep the connection queued; the client may free a socket
                // and accept again.
                if let Ok(Entry {
                    kind: SocketKind::Listener(l),
                    ..
                }) = self.table.get_mut(client, id)
                {
                    l.ready.push_front(stack);
                }
                Some(Response::Error(e))
            }
        }
    }

    fn try_read(&mut self, client: ClientId, id: SocketId, max_len: usize) -> Option<Response> {
        let stack = match self.stream_of(client, id) {
            Ok(s) => s,
            Err(e) => return Some(Response::Error(e)),
        };
        let t = self.stacks.tcp(stack);
        if t.can_recv() {
            let mut buf = vec![0u8; max_len];
            let n = t.recv_slice(&mut buf).unwrap_or(0);
            buf.truncate(n);
            Some(Response::Data { data: buf })
        } else if !t.may_recv() {
            // FIN received (or the connection is gone): end of stream.
            Some(Response::Data { data: Vec::new() })
        } else {
            None
        }
    }

    fn try_write(&mut self, client: ClientId, id: SocketId, data: &[u8]) -> Option<Response> {
        let stack = match self.stream_of(client, id) {
            Ok(s) => s,
            Err(e) => return Some(Response::Error(e)),
        };
        let t = self.stacks.tcp(stack);
        if !t.may_send() {
            return Some(Response::Error(if t.state() == tcp::State::Closed {
                Error::ConnectionReset
            } else {
                Error::NotConnected
            }));
        }
        if !t.can_send() {
            return None;
        }
        match t.send_slice(data) {
            Ok(0) => None,
            Ok(n) => Some(Response::Written { len: n as u32 }),
            Err(_) => Some(Response::Error(Error::NotConnected)),
        }
    }

    fn try_connect(
        &mut self,
        client: ClientId,
        id: SocketId,
        deadline: Instant,
        now: Instant,
    ) -> Option<Response> {
        let stack = match self.stream_of(client, id) {
            Ok(s) => s,
            Err(e) => return Some(Response::Error(e)),
        };
        let t = self.stacks.tcp(stack);
        let failure = match t.state() {
            tcp::State::Established | tcp::State::CloseWait => {
                return Some(Response::Connected {
                    socket: id,
                    local: sock_addr(t.local_endpoint()),
                    remote: sock_addr(t.remote_endpoint()),
                });
            }
            tcp::State::Closed => Error::ConnectionRefused,
            _ if now >= deadline => Error::Timeout,
            _ => return None,
        };
        if let Ok(entry) = self.table.remove(client, id) {
            self.release(entry, false);
        }
        Some(Response::Error(failure))
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

    /// Moves established connections from listening pools to accept queues
    /// and refills the pools.
    fn service_listeners(&mut self) -> bool {
        let mut progressed = false;
        let stacks = &mut self.stacks;
        for (_, entry) in self.table.iter_mut() {
            let SocketKind::Listener(l) = &mut entry.kind else {
                continue;
            };
            let mut i = 0;
            while i < l.listening.len() {
                let s = l.listening[i];
                match stacks.tcp(s).state() {
                    tcp::State::Listen | tcp::State::SynReceived => i += 1,
                    tcp::State::Closed => {
                        stacks.remove(s);
                        l.listening.swap_remove(i);
                    }
                    _ => {
                        l.listening.swap_remove(i);
                        l.ready.push_back(s);
                        progressed = true;
                    }
                }
            }
            let endpoint = IpListenEndpoint {
                addr: {
                    let ip: Ipv4Address = l.local.ip.into();
                    (!ip.is_unspecified()).then_some(IpAddress::Ipv4(ip))
                },
                port: l.local.port,
            };
            let want = l.backlog.saturating_sub(l.ready.len());
            for iface in l.scope.clone() {
                let have = l.listening.iter().filter(|s| s.iface == iface).count();
                for _ in have..want {
                    if stacks.check_room(1).is_err() {
                        break;
                    }
                    let mut socket = new_tcp_socket();
                    if socket.listen(endpoint).is_err() {
                        break;
                    }
                    let handle = stacks.set(iface).add(socket);
                    l.listening.push(StackSocket { iface, handle });
                }
            }
        }
        progressed
    }

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

    /// Removes orphaned TCP sockets that finished closing; resets those past
    /// their linger deadline.
    fn reap_orphans(&mut self, now: Instant) {
        let stacks = &mut self.stacks;
        self.orphans.retain(|(s, deadline)| {
            let t = stacks.tcp(*s);
            let done = t.state() == tcp::State::Closed && t.local_endpoint().is_none();
            if done || (now >= *deadline && t.state() == tcp::State::Closed) {
                stacks.remove(*s);
                return false;
            }
            if now >= *deadline {
                // One RST goes out on the next egress, then it is reaped.
                t.abort();
            }
            true
        });
    }

    /// A DHCP change: link-local stops while a lease holds (and restarts its
    /// fallback timer when the lease is lost); then the NIC address changed.
    /// Returns the link-local address the lease replaced, if any.
    fn on_dhcp(&mut self, now: Instant, ev: &DhcpEvent) -> Option<Ipv4Cidr> {
        let (addr, replaced) = match ev {
            DhcpEvent::Bound(l) | DhcpEvent::Changed(l) => {
                let replaced = self.link_local.as_ref().and_then(LinkLocal::cidr);
                if let Some(ll) = self.link_local.as_mut() {
                    ll.stop();
                }
                (Some(l.address.address()), replaced)
            }
            DhcpEvent::Deconfigured => {
                if let Some(ll) = self.link_local.as_mut() {
                    ll.restart(now);
                }
                (None, None)
            }
        };
        self.on_nic_addr(addr);
        replaced
    }

    /// Feeds the ARP packets seen to the link-local client, runs its timers,
    /// applies what it reports and sends its frames. True if anything
    /// happened.
    fn run_link_local(&mut self, now: Instant, events: &mut Vec<NetEvent>) -> bool {
        let Some(ll) = self.link_local.as_mut() else {
            self.arp_seen.clear();
            return false;
        };
        let mut reports = Vec::new();
        for arp in self.arp_seen.drain(..) {
            reports.extend(ll.on_arp(now, &arp));
        }
        reports.extend(ll.poll(now));
        let mut progressed = !reports.is_empty();
        while ll.has_tx() {
            let Some(token) = self.device.transmit(now) else {
                break;
            };
            let Some(out) = ll.take_tx() else {
                break;
            };
            let mac = self.mac.0;
            smoltcp::phy::TxToken::consume(token, ARP_FRAME_LEN, |buf| out.emit(mac, buf));
            progressed = true;
        }
        for report in reports {
            match report {
                LinkLocalEvent::Claimed(addr) => {
                    let cidr = Ipv4Cidr::new(addr, crate::linklocal::LINK_LOCAL_PREFIX);
                    self.nic.update_ip_addrs(|addrs| {
                        addrs.clear();
                        let _ = addrs.push(IpCidr::Ipv4(cidr));
                    });
                    self.nic.routes_mut().remove_default_ipv4_route();
                    self.on_nic_addr(Some(addr));
                    events.push(NetEvent::LinkLocalClaimed(cidr));
                }
                LinkLocalEvent::CandidateConflict(addr) => {
                    events.push(NetEvent::LinkLocalConflict {
                        addr,
                        claimed: false,
                    });
                }
                LinkLocalEvent::Lost(addr) => {
                    self.nic.update_ip_addrs(|addrs| addrs.clear());
                    self.on_nic_addr(None);
                    events.push(NetEvent::LinkLocalConflict {
                        addr,
                        claimed: true,
                    });
                }
            }
        }
        progressed
    }

    /// Keeps the loopback interface's copy of the NIC address in step and
    /// resets NIC streams whose local address is gone.
    fn on_nic_addr(&mut self, addr: Option<Ipv4Address>) {
        self.lo.update_ip_addrs(|addrs| {
            addrs.clear();
            let _ = addrs.push(IpCidr::Ipv4(LOOPBACK_CIDR));
            if let Some(a) = addr {
                let _ = addrs.push(IpCidr::Ipv4(Ipv4Cidr::new(a, 32)));
            }
        });
        for (_, entry) in self.table.iter_mut() {
            let SocketKind::Stream(s) = &entry.kind else {
                continue;
            };
            if s.iface != IfaceId::Nic {
                continue;
            }
            let t = self.stacks.tcp(*s);
            let local = t.local_endpoint().map(|e| e.addr);
            if local.is_some() && local != addr.map(IpAddress::Ipv4) {
                t.abort();
            }
        }
    }
}

/// The NIC device as smoltcp sees it: every received frame is passed on
/// unchanged, and the ARP packets among them are also noted (at most
/// [`MAX_ARP_SEEN`] per interface poll; more are not noted) for the
/// link-local client, which must see ARP traffic smoltcp ignores (probes from
/// 0.0.0.0, packets for addresses not yet configured).
struct ArpTap<'d, D: Device> {
    inner: &'d mut D,
    seen: &'d mut Vec<ArpSeen>,
}

struct ArpTapRx<'a, R> {
    inner: R,
    seen: &'a mut Vec<ArpSeen>,
}

impl<R: smoltcp::phy::RxToken> smoltcp::phy::RxToken for ArpTapRx<'_, R> {
    fn consume<T, F>(self, f: F) -> T
    where
        F: FnOnce(&[u8]) -> T,
    {
        let seen = self.seen;
        self.inner.consume(|frame| {
            if seen.len() < MAX_ARP_SEEN {
                if let Some(arp) = ArpSeen::parse_frame(frame) {
                    seen.push(arp);
                }
            }
            f(frame)
        })
    }

    fn meta(&self) -> smoltcp::phy::PacketMeta {
        self.inner.meta()
    }
}

impl<D: Device> Device for ArpTap<'_, D> {
    type RxToken<'a>
        = ArpTapRx<'a, D::RxToken<'a>>
    where
        Self: 'a;
    type TxToken<'a>
        = D::TxToken<'a>
    where
        Self: 'a;

    fn receive(&mut self, t: Instant) -> Option<(Self::RxToken<'_>, Self::TxToken<'_>)> {
        let (rx, tx) = self.inner.receive(t)?;
        Some((
            ArpTapRx {
                inner: rx,
                seen: self.seen,
            },
            tx,
        ))
    }

    fn transmit(&mut self, t: Instant) -> Option<Self::TxToken<'_>> {
        self.inner.transmit(t)
    }

    fn capabilities(&self) -> smoltcp::phy::DeviceCapabilities {
        self.inner.capabilities()
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
