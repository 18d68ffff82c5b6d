//! Test bench: an engine and a plain smoltcp "router" peer wired back-to-back
//! through in-memory Ethernet devices, a minimal DHCP server on the peer, and
//! a simulated clock. Nothing sleeps and nothing reads a wall clock.
#![allow(dead_code)]

use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;

use nexus_net::smoltcp;
use nexus_net::{
    ClientId, Completion, Engine, EngineConfig, NetEvent, Request, Response, SockAddr, Submit,
};
use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::phy::{self, Device, DeviceCapabilities, Medium};
use smoltcp::socket::{tcp, udp};
use smoltcp::time::{Duration, Instant};
use smoltcp::wire::{
    DhcpMessageType, DhcpPacket, DhcpRepr, EthernetAddress, EthernetFrame, EthernetProtocol,
    HardwareAddress, IpAddress, IpCidr, IpEndpoint, IpProtocol, Ipv4Address, Ipv4Packet,
};

pub const ENGINE_MAC: [u8; 6] = [0x02, 0x00, 0x00, 0x00, 0x00, 0x01];
pub const PEER_MAC: [u8; 6] = [0x02, 0x00, 0x00, 0x00, 0x00, 0x02];

type Queue = Rc<RefCell<VecDeque<Vec<u8>>>>;
type Filter = Rc<RefCell<Option<Box<dyn FnMut(&[u8]) -> bool>>>>;

/// One end of an in-memory Ethernet cable.
pub struct MemDevice {
    rx: Queue,
    tx: Queue,
    /// Returns true for frames to drop on transmit.
    drop_tx: Filter,
}

impl MemDevice {
    /// Installs a transmit filter (true = drop).
    pub fn set_drop(&self, f: impl FnMut(&[u8]) -> bool + 'static) {
        *self.drop_tx.borrow_mut() = Some(Box::new(f));
    }

    pub fn clear_drop(&self) {
        *self.drop_tx.borrow_mut() = None;
    }

    pub fn rx_pending(&self) -> bool {
        !self.rx.borrow().is_empty()
    }
}

/// A pair of connected devices.
pub fn cable() -> (MemDevice, MemDevice) {
    let a: Queue = Default::default();
    let b: Queue = Default::default();
    (
        MemDevice {
            rx: a.clone(),
            tx: b.clone(),
            drop_tx: Default::default(),
        },
        MemDevice {
            rx: b,
            tx: a,
            drop_tx: Default::default(),
        },
    )
}

pub struct RxTok(Vec<u8>);
pub struct TxTok {
    tx: Queue,
    drop_tx: Filter,
}

impl phy::RxToken for RxTok {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(&self.0)
    }
}

impl phy::TxToken for TxTok {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut buf = vec![0u8; len];
        let r = f(&mut buf);
        let drop = match self.drop_tx.borrow_mut().as_mut() {
            Some(filter) => filter(&buf),
            None => false,
        };
        if !drop {
            self.tx.borrow_mut().push_back(buf);
        }
        r
    }
}

impl Device for MemDevice {
    type RxToken<'a> = RxTok;
    type TxToken<'a> = TxTok;

    fn receive(&mut self, _t: Instant) -> Option<(RxTok, TxTok)> {
        let frame = self.rx.borrow_mut().pop_front()?;
        Some((
            RxTok(frame),
            TxTok {
                tx: self.tx.clone(),
                drop_tx: self.drop_tx.clone(),
            },
        ))
    }

    fn transmit(&mut self, _t: Instant) -> Option<TxTok> {
        Some(TxTok {
            tx: self.tx.clone(),
            drop_tx: self.drop_tx.clone(),
        })
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ethernet;
        caps.max_transmission_unit = 1514;
        caps
    }
}

/// True for an Ethernet frame carrying an IPv4 ICMP packet.
pub fn is_icmp(frame: &[u8]) -> bool {
    let Ok(eth) = EthernetFrame::new_checked(frame) else {
        return false;
    };
    if eth.ethertype() != EthernetProtocol::Ipv4 {
        return false;
    }
    match Ipv4Packet::new_checked(eth.payload()) {
        Ok(ip) => ip.next_header() == IpProtocol::Icmp,
        Err(_) => false,
    }
}

/// True for an Ethernet frame carrying an ARP packet.
pub fn is_arp(frame: &[u8]) -> bool {
    EthernetFrame::new_checked(frame)
        .map(|e| e.ethertype() == EthernetProtocol::Arp)
        .unwrap_or(false)
}

/// Lease parameters the test DHCP server hands out.
#[derive(Clone, Debug)]
pub struct LeasePlan {
    pub server: Ipv4Address,
    pub client: Ipv4Address,
    pub netmask: Ipv4Address,
    pub router: Option<Ipv4Address>,
    pub dns: Vec<Ipv4Address>,
    pub lease_secs: u32,
}

impl LeasePlan {
    /// The 10.9.0.0/24 plan used by most tests (deliberately not QEMU's
    /// 10.0.2.0/24, so the event values provably come from the lease).
    pub fn ten_nine() -> LeasePlan {
        LeasePlan {
            server: Ipv4Address::new(10, 9, 0, 1),
            client: Ipv4Address::new(10, 9, 0, 50),
            netmask: Ipv4Address::new(255, 255, 255, 0),
            router: Some(Ipv4Address::new(10, 9, 0, 1)),
            dns: vec![Ipv4Address::new(10, 9, 0, 3)],
            lease_secs: 3600,
        }
    }
}

/// Counters of what the DHCP server saw.
#[derive(Clone, Copy, Debug, Default)]
pub struct DhcpStats {
    pub discovers: u32,
    pub requests: u32,
    /// REQUESTs with `ciaddr` set: renewals (unicast) and rebinds (broadcast).
    pub renewals: u32,
    pub acks: u32,
}

/// A minimal DHCP server: answers DISCOVER with OFFER and REQUEST with ACK,
/// always for the planned address, broadcast to port 68.
pub struct DhcpServer {
    pub plan: LeasePlan,
    pub answering: bool,
    pub stats: DhcpStats,
    handle: SocketHandle,
}

impl DhcpServer {
    fn serve(&mut self, sockets: &mut SocketSet<'static>) {
        let socket = sockets.get_mut::<udp::Socket>(self.handle);
        let mut replies = Vec::new();
        while let Ok((data, _meta)) = socket.recv() {
            let Ok(packet) = DhcpPacket::new_checked(data) else {
                continue;
            };
            let Ok(req) = DhcpRepr::parse(&packet) else {
                continue;
            };
            let reply_type = match req.message_type {
                DhcpMessageType::Discover => {
                    self.stats.discovers += 1;
                    DhcpMessageType::Offer
                }
                DhcpMessageType::Request => {
                    self.stats.requests += 1;
                    if !req.client_ip.is_unspecified() {
                        self.stats.renewals += 1;
                    }
                    DhcpMessageType::Ack
                }
                _ => continue,
            };
            if !self.answering {
                continue;
            }
            if reply_type == DhcpMessageType::Ack {
                self.stats.acks += 1;
            }
            let mut dns = heapless::Vec::new();
            for d in &self.plan.dns {
                let _ = dns.push(*d);
            }
            let reply = DhcpRepr {
                message_type: reply_type,
                transaction_id: req.transaction_id,
                secs: 0,
                client_hardware_address: req.client_hardware_address,
                client_ip: Ipv4Address::UNSPECIFIED,
                your_ip: self.plan.client,
                server_ip: self.plan.server,
                router: self.plan.router,
                subnet_mask: Some(self.plan.netmask),
                relay_agent_ip: Ipv4Address::UNSPECIFIED,
                broadcast: false,
                requested_ip: None,
                client_identifier: None,
                server_identifier: Some(self.plan.server),
                parameter_request_list: None,
                dns_servers: Some(dns),
                max_size: None,
                lease_duration: Some(self.plan.lease_secs),
                renew_duration: None,
                rebind_duration: None,
                additional_options: &[],
            };
            let mut buf = vec![0u8; reply.buffer_len()];
            let mut out = DhcpPacket::new_unchecked(&mut buf);
            reply.emit(&mut out).expect("emit dhcp reply");
            replies.push(buf);
        }
        for buf in replies {
            socket
                .send_slice(
                    &buf,
                    IpEndpoint::new(IpAddress::Ipv4(Ipv4Address::BROADCAST), 68),
                )
                .expect("queue dhcp reply");
        }
    }
}

/// A plain smoltcp host on the other end of the cable: the router/gateway,
/// DHCP server, TCP echo (port 7), UDP echo (port 7) and a UDP sink (5000).
pub struct Peer {
    pub iface: Interface,
    pub sockets: SocketSet<'static>,
    pub dev: MemDevice,
    pub dhcp: DhcpServer,
    pub tcp_echo: SocketHandle,
    pub udp_echo: SocketHandle,
    pub udp_sink: SocketHandle,
    pub sink: Vec<(IpEndpoint, Vec<u8>)>,
}

fn udp_socket() -> udp::Socket<'static> {
    udp::Socket::new(
        udp::PacketBuffer::new(vec![udp::PacketMetadata::EMPTY; 16], vec![0; 16384]),
        udp::PacketBuffer::new(vec![udp::PacketMetadata::EMPTY; 16], vec![0; 16384]),
    )
}

impl Peer {
    pub fn new(mut dev: MemDevice, plan: LeasePlan, now: Instant) -> Peer {
        let mut cfg = Config::new(HardwareAddress::Ethernet(EthernetAddress(PEER_MAC)));
        cfg.random_seed = 0x5eed;
        let mut iface = Interface::new(cfg, &mut dev, now);
        let prefix = IpAddress::Ipv4(plan.netmask).prefix_len().expect("mask");
        iface.update_ip_addrs(|a| {
            a.push(IpCidr::new(IpAddress::Ipv4(plan.server), prefix))
                .expect("addr");
        });
        let mut sockets = SocketSet::new(Vec::new());

        let mut dhcp_sock = udp_socket();
        dhcp_sock.bind(67).expect("bind 67");
        let dhcp_handle = sockets.add(dhcp_sock);

        let mut tcp_echo = tcp::Socket::new(
            tcp::SocketBuffer::new(vec![0; 16384]),
            tcp::SocketBuffer::new(vec![0; 16384]),
        );
        tcp_echo.listen(7).expect("listen 7");
        let tcp_echo = sockets.add(tcp_echo);

        let mut udp_echo = udp_socket();
        udp_echo.bind(7).expect("bind 7");
        let udp_echo = sockets.add(udp_echo);

        let mut sink = udp_socket();
        sink.bind(5000).expect("bind 5000");
        let udp_sink = sockets.add(sink);

        Peer {
            iface,
            sockets,
            dev,
            dhcp: DhcpServer {
                plan,
                answering: true,
                stats: DhcpStats::default(),
                handle: dhcp_handle,
            },
            tcp_echo,
            udp_echo,
            udp_sink,
            sink: Vec::new(),
        }
    }

    pub fn poll(&mut self, now: Instant) {
        for _ in 0..4 {
            self.iface.poll(now, &mut self.dev, &mut self.sockets);
            self.dhcp.serve(&mut self.sockets);
            self.services();
        }
    }

    fn services(&mut self) {
        let t = self.sockets.get_mut::<tcp::Socket>(self.tcp_echo);
        if t.can_recv() {
            let mut buf = [0u8; 4096];
            let room = t.send_capacity() - t.send_queue();
            let n = t.recv_slice(&mut buf[..room.min(4096)]).unwrap_or(0);
            let _ = t.send_slice(&buf[..n]);
        } else if t.state() == tcp::State::CloseWait {
            t.close();
        } else if !t.is_open() {
            t.listen(7).expect("relisten");
        }

        let u = self.sockets.get_mut::<udp::Socket>(self.udp_echo);
        while let Ok((data, meta)) = u.recv() {
            let data = data.to_vec();
            let _ = u.send_slice(&data, meta.endpoint);
        }

        let s = self.sockets.get_mut::<udp::Socket>(self.udp_sink);
        while let Ok((data, meta)) = s.recv() {
            self.sink.push((meta.endpoint, data.to_vec()));
        }
    }

    pub fn poll_at(&mut self, now: Instant) -> Option<Instant> {
        self.iface.poll_at(now, &self.sockets)
    }
}

/// Engine + peer + simulated clock.
pub struct Bench {
    pub engine: Engine<MemDevice>,
    pub peer: Peer,
    pub now: Instant,
    pub events: Vec<NetEvent>,
    pub completions: Vec<Completion>,
    next_req: u32,
}

/// Longest the bench lets simulated time jump in one step, so that a wrong
/// `poll_at` shows up as slowness rather than skipped work.
const MAX_STEP: Duration = Duration::from_millis(1000);

impl Bench {
    pub fn new(plan: LeasePlan) -> Bench {
        Bench::with_config(plan, EngineConfig::new(ENGINE_MAC, 0x1234_5678_9abc_def0))
    }

    pub fn with_config(plan: LeasePlan, config: EngineConfig) -> Bench {
        let now = Instant::from_millis(0);
        let (a, b) = cable();
        let engine = Engine::new(a, config, now).expect("engine");
        let peer = Peer::new(b, plan, now);
        Bench {
            engine,
            peer,
            now,
            events: Vec::new(),
            completions: Vec::new(),
            next_req: 1,
        }
    }

    /// Polls both sides at the current instant until the cable is quiet.
    pub fn settle(&mut self) {
        for _ in 0..64 {
            let out = self.engine.poll(self.now);
            self.events.extend(out.events);
            self.completions.extend(out.completions);
            self.peer.poll(self.now);
            let busy = self.engine.device().rx_pending()
                || self.peer.dev.rx_pending()
                || self.engine.poll_at(self.now) == Some(self.now);
            if !busy {
                return;
            }
        }
    }

    /// Advances simulated time by `d`, waking at every `poll_at` deadline of
    /// either side (capped at `MAX_STEP`).
    pub fn run_for(&mut self, d: Duration) {
        let end = self.now + d;
        loop {
            self.settle();
            if self.now >= end {
                return;
            }
            let mut next = (self.now + MAX_STEP).min(end);
            if let Some(t) = self.engine.poll_at(self.now) {
                next = next.min(t);
            }
            if let Some(t) = self.peer.poll_at(self.now) {
                next = next.min(t);
            }
            if next <= self.now {
                next = self.now + Duration::from_millis(1);
            }
            self.now = next;
        }
    }

    /// Runs until `pred` holds or `limit` of simulated time passes.
    pub fn run_until(&mut self, limit: Duration, mut pred: impl FnMut(&mut Bench) -> bool) -> bool {
        let end = self.now + limit;
        loop {
            self.settle();
            if pred(self) {
                return true;
            }
            if self.now >= end {
                return false;
            }
            let mut next = (self.now + MAX_STEP).min(end);
            if let Some(t) = self.engine.poll_at(self.now) {
                next = next.min(t);
            }
            if let Some(t) = self.peer.poll_at(self.now) {
                next = next.min(t);
            }
            if next <= self.now {
                next = self.now + Duration::from_millis(1);
            }
            self.now = next;
        }
    }

    /// Runs until the engine reports a DHCP lease.
    pub fn bind(&mut self) -> nexus_net::dhcp::Lease {
        let ok = self.run_until(Duration::from_secs(60), |b| b.engine.lease().is_some());
        assert!(ok, "no DHCP lease; events: {:?}", self.events);
        self.engine.lease().cloned().expect("lease")
    }

    /// Submits a request without waiting.
    pub fn submit(&mut self, client: ClientId, req: Request) -> (u32, Submit) {
        let id = self.next_req;
        self.next_req += 1;
        (id, self.engine.submit(self.now, client, id, req))
    }

    /// Takes the completion for `(client, id)` if it arrived.
    pub fn take_completion(&mut self, client: ClientId, id: u32) -> Option<Response> {
        let pos = self
            .completions
            .iter()
            .position(|c| c.client == client && c.req_id == id)?;
        Some(self.completions.remove(pos).response)
    }

    /// Waits (in simulated time, at most `limit`) for a submitted request.
    pub fn wait(&mut self, client: ClientId, id: u32, limit: Duration) -> Option<Response> {
        let mut got = None;
        self.run_until(limit, |b| {
            got = b.take_completion(client, id);
            got.is_some()
        });
        got
    }

    /// Submits and waits up to 30 s of simulated time for the answer.
    pub fn call(&mut self, client: ClientId, req: Request) -> Response {
        let (id, submit) = self.submit(client, req.clone());
        match submit {
            Submit::Done(r) => {
                // Let the stack transmit whatever the request queued.
                self.settle();
                r
            }
            Submit::Pending => self
                .wait(client, id, Duration::from_secs(30))
                .unwrap_or_else(|| panic!("no completion for {req:?}")),
        }
    }
}

pub fn sa(a: u8, b: u8, c: u8, d: u8, port: u16) -> SockAddr {
    SockAddr::new(nexus_net::Ipv4::new(a, b, c, d), port)
}
