//! RFC 3927 link-local fallback, on the simulated clock: a silent DHCP
//! server, conflicts while probing and once claimed (defence, loss, rate
//! limit), a DHCP server that appears later, and two engines on one cable —
//! with different MACs and with the same MAC.

mod common;

use std::cell::RefCell;
use std::rc::Rc;

use common::{cable, Bench, LeasePlan, MemDevice, ENGINE_MAC};
use nexus_net::linklocal::{self, ArpOut, ArpSeen, ARP_FRAME_LEN};
use nexus_net::smoltcp::phy::{Device, TxToken};
use nexus_net::smoltcp::time::{Duration, Instant};
use nexus_net::smoltcp::wire::{IpAddress, IpCidr, Ipv4Address, Ipv4Cidr};
use nexus_net::{
    ClientId, Engine, EngineConfig, Ipv4, NetEvent, Request, Response, SockAddr, Submit,
};

const SEED: u64 = 0x1234_5678_9abc_def0;
const OTHER_MAC: [u8; 6] = [0x02, 0x00, 0x00, 0x00, 0x00, 0x99];

type Frames = Rc<RefCell<Vec<Vec<u8>>>>;

/// A bench whose DHCP server is silent, recording every frame the engine sends.
fn silent_bench() -> (Bench, Frames) {
    let mut b = Bench::new(LeasePlan::ten_nine());
    b.peer.dhcp.answering = false;
    let frames = record(&b);
    (b, frames)
}

fn record(b: &Bench) -> Frames {
    let frames: Frames = Default::default();
    let log = frames.clone();
    b.engine.device().set_drop(move |f| {
        log.borrow_mut().push(f.to_vec());
        false
    });
    frames
}

/// ARP packets the engine sent so far (and forget them).
fn take_arp(frames: &Frames) -> Vec<ArpSeen> {
    frames
        .borrow_mut()
        .drain(..)
        .filter_map(|f| ArpSeen::parse_frame(&f))
        .collect()
}

/// Puts a raw ARP frame on the wire towards the engine.
fn inject(dev: &mut MemDevice, op: u16, mac: [u8; 6], sender: Ipv4Address, target: Ipv4Address) {
    let tok = dev.transmit(Instant::from_millis(0)).expect("tx token");
    tok.consume(ARP_FRAME_LEN, |buf| {
        // Start from an announcement/probe and patch the fields.
        let out = if sender.is_unspecified() {
            ArpOut::Probe(target)
        } else {
            ArpOut::Announce(sender)
        };
        out.emit(mac, buf);
        buf[20..22].copy_from_slice(&op.to_be_bytes());
        buf[38..42].copy_from_slice(&target.octets());
    });
}

fn claimed(events: &[NetEvent]) -> Vec<Ipv4Cidr> {
    events
        .iter()
        .filter_map(|e| match e {
            NetEvent::LinkLocalClaimed(c) => Some(*c),
            _ => None,
        })
        .collect()
}

fn conflicts(events: &[NetEvent]) -> Vec<(Ipv4Address, bool)> {
    events
        .iter()
        .filter_map(|e| match e {
            NetEvent::LinkLocalConflict { addr, claimed } => Some((*addr, *claimed)),
            _ => None,
        })
        .collect()
}

fn status(b: &mut Bench) -> nexus_net::InterfaceStatus {
    match b.call(ClientId(1), Request::InterfaceStatus) {
        Response::Status(s) => s,
        other => panic!("status: {other:?}"),
    }
}

#[test]
fn silent_dhcp_falls_back_to_a_probed_link_local_address() {
    let (mut b, frames) = silent_bench();
    let first = linklocal::candidate(&ENGINE_MAC, SEED, 0);
    // Nothing before the fallback bound (3 s): DHCP alone.
    b.run_for(Duration::from_millis(2990));
    assert!(b.events.is_empty(), "{:?}", b.events);
    assert!(take_arp(&frames).iter().all(|a| a.target_ip != first));

    let ok = b.run_until(Duration::from_secs(2), |b| !claimed(&b.events).is_empty());
    assert!(ok, "no link-local address; events {:?}", b.events);
    let at = b.now;
    // 3 s + probe wait (<= 0.1) + two gaps (<= 0.2 each) + announce wait (0.2).
    assert!(
        at >= Instant::from_millis(3300) && at <= Instant::from_millis(3700),
        "claimed at {at}"
    );
    let cidr = claimed(&b.events)[0];
    assert_eq!(cidr, Ipv4Cidr::new(first, 16));
    assert_eq!(
        format!(
            "net: dhcp unavailable; link-local {}/{}",
            cidr.address(),
            cidr.prefix_len()
        ),
        format!("net: dhcp unavailable; link-local {first}/16")
    );
    let arp = take_arp(&frames);
    let probes = arp
        .iter()
        .filter(|a| a.sender_ip.is_unspecified() && a.target_ip == first)
        .count();
    assert_eq!(probes, 3, "{arp:?}");
    assert!(arp.iter().all(|a| a.sender_mac == ENGINE_MAC));
    assert!(
        arp.iter()
            .any(|a| a.sender_ip == first && a.target_ip == first),
        "no announcement: {arp:?}"
    );
    // A second announcement follows 200 ms later, then silence.
    b.run_for(Duration::from_secs(2));
    let arp = take_arp(&frames);
    let announces = arp
        .iter()
        .filter(|a| a.sender_ip == first && a.target_ip == first);
    assert_eq!(announces.count(), 1, "{arp:?}");

    let st = status(&mut b);
    assert!(st.link_local);
    let ip = st.ipv4.expect("configured");
    assert_eq!(ip.addr, Ipv4::from(first));
    assert_eq!(ip.prefix_len, 16);
    assert_eq!(st.gateway, None);
    assert!(b.engine.lease().is_none());
    assert!(!b.events.iter().any(|e| matches!(e, NetEvent::DhcpBound(_))));

    // On-link destinations route; off-link ones have no router.
    let c = ClientId(2);
    let Response::Bound { socket, .. } = b.call(
        c,
        Request::UdpBind {
            local: SockAddr::new(Ipv4::UNSPECIFIED, 0),
        },
    ) else {
        panic!("bind");
    };
    let send = |b: &mut Bench, dst| {
        b.call(
            c,
            Request::UdpSendTo {
                socket,
                dst,
                data: b"x".to_vec(),
            },
        )
    };
    assert!(matches!(
        send(&mut b, SockAddr::new(Ipv4::new(169, 254, 9, 9), 9)),
        Response::Sent { .. }
    ));
    assert_eq!(
        send(&mut b, SockAddr::new(Ipv4::new(10, 9, 0, 1), 9)),
        Response::Error(nexus_net::Error::NoRoute)
    );
}

#[test]
fn a_dhcp_server_that_appears_later_replaces_the_link_local_address() {
    let (mut b, frames) = silent_bench();
    assert!(b.run_until(Duration::from_secs(5), |b| !claimed(&b.events).is_empty()));
    let ll = claimed(&b.events)[0];

    // A TCP stream over the link-local address (the peer also holds one).
    b.peer.iface.update_ip_addrs(|a| {
        a.push(IpCidr::new(IpAddress::v4(169, 254, 9, 9), 16))
            .expect("room for a second address");
    });
    let c = ClientId(3);
    let Response::Connected { socket, local, .. } = b.call(
        c,
        Request::TcpConnect {
            remote: SockAddr::new(Ipv4::new(169, 254, 9, 9), 7),
        },
    ) else {
        panic!("connect over link-local");
    };
    assert_eq!(local.ip, Ipv4::from(ll.address()));
    let write = |b: &mut Bench| {
        b.call(
            c,
            Request::TcpWrite {
                socket,
                data: b"ping".to_vec(),
            },
        )
    };
    assert_eq!(write(&mut b), Response::Written { len: 4 });
    let read = |b: &mut Bench| {
        b.call(
            c,
            Request::TcpRead {
                socket,
                max_len: 64,
            },
        )
    };
    assert_eq!(
        read(&mut b),
        Response::Data {
            data: b"ping".to_vec()
        }
    );

    b.peer.dhcp.answering = true;
    let lease = b.bind();
    // The stream lost its local address: it was reset, and its client sees
    // the end of it (a reset reads as end of stream, writes fail).
    assert_eq!(read(&mut b), Response::Data { data: vec![] });
    assert!(
        matches!(write(&mut b), Response::Error(_)),
        "write after reset"
    );
    assert_eq!(
        lease.address,
        Ipv4Cidr::new(Ipv4Address::new(10, 9, 0, 50), 24)
    );
    let pos_replaced = b
        .events
        .iter()
        .position(|e| *e == NetEvent::LinkLocalReplaced(ll))
        .expect("replaced event");
    let pos_bound = b
        .events
        .iter()
        .position(|e| matches!(e, NetEvent::DhcpBound(_)))
        .expect("bound event");
    assert_eq!(pos_bound, pos_replaced + 1, "{:?}", b.events);

    // Clients see the lease, not the link-local address.
    let st = status(&mut b);
    assert!(!st.link_local);
    assert_eq!(st.ipv4.expect("lease").addr, Ipv4::new(10, 9, 0, 50));
    assert_eq!(st.gateway, Some(Ipv4::new(10, 9, 0, 1)));

    // Link-local is quiet while the lease holds.
    take_arp(&frames);
    b.run_for(Duration::from_secs(20));
    let arp = take_arp(&frames);
    assert!(
        arp.iter().all(|a| !linklocal::is_link_local(a.target_ip)),
        "{arp:?}"
    );
}

#[test]
fn lost_lease_falls_back_to_link_local_again() {
    let plan = LeasePlan {
        lease_secs: 20,
        ..LeasePlan::ten_nine()
    };
    let mut b = Bench::new(plan);
    b.bind();
    b.peer.dhcp.answering = false;
    let ok = b.run_until(Duration::from_secs(40), |b| {
        b.events.contains(&NetEvent::DhcpDeconfigured)
    });
    assert!(ok, "{:?}", b.events);
    let lost_at = b.now;
    assert!(b.run_until(Duration::from_secs(5), |b| !claimed(&b.events).is_empty()));
    assert!(
        b.now >= lost_at + Duration::from_secs(3),
        "{} {}",
        b.now,
        lost_at
    );
    assert!(status(&mut b).link_local);
}

#[test]
fn a_host_claiming_the_candidate_makes_the_engine_pick_another() {
    let (mut b, frames) = silent_bench();
    let first = linklocal::candidate(&ENGINE_MAC, SEED, 0);
    // Wait for the first probe, then answer it as the owner of the address.
    let ok = b.run_until(Duration::from_secs(5), |_| {
        take_arp(&frames).iter().any(|a| a.target_ip == first)
    });
    assert!(ok);
    inject(&mut b.peer.dev, 2, OTHER_MAC, first, first);
    assert!(b.run_until(Duration::from_secs(2), |b| !claimed(&b.events).is_empty()));
    assert_eq!(conflicts(&b.events), vec![(first, false)]);
    let second = linklocal::candidate(&ENGINE_MAC, SEED, 1);
    assert_ne!(second, first);
    assert_eq!(claimed(&b.events), vec![Ipv4Cidr::new(second, 16)]);
    assert_eq!(b.engine.nic_addr(), Some(second));
}

#[test]
fn a_probe_from_a_host_with_the_same_mac_is_a_conflict() {
    let (mut b, frames) = silent_bench();
    let first = linklocal::candidate(&ENGINE_MAC, SEED, 0);
    assert!(b.run_until(Duration::from_secs(5), |_| {
        take_arp(&frames).iter().any(|a| a.target_ip == first)
    }));
    // Another host with our MAC probes for the same candidate.
    inject(
        &mut b.peer.dev,
        1,
        ENGINE_MAC,
        Ipv4Address::UNSPECIFIED,
        first,
    );
    assert!(b.run_until(Duration::from_secs(2), |b| !claimed(&b.events).is_empty()));
    assert_eq!(conflicts(&b.events), vec![(first, false)]);
    assert_ne!(b.engine.nic_addr(), Some(first));
}

#[test]
fn a_claimed_address_is_defended_once_then_given_up() {
    let (mut b, frames) = silent_bench();
    assert!(b.run_until(Duration::from_secs(5), |b| !claimed(&b.events).is_empty()));
    let ours = claimed(&b.events)[0].address();
    b.run_for(Duration::from_secs(1));
    take_arp(&frames);

    // First conflicting packet: defended with one announcement.
    inject(&mut b.peer.dev, 2, OTHER_MAC, ours, ours);
    b.run_for(Duration::from_millis(10));
    let arp = take_arp(&frames);
    assert_eq!(
        arp.iter()
            .filter(|a| a.sender_ip == ours && a.target_ip == ours)
            .count(),
        1,
        "{arp:?}"
    );
    assert_eq!(b.engine.nic_addr(), Some(ours));
    assert!(conflicts(&b.events).is_empty());

    // A second one within the defend interval (1 s): the address is lost.
    b.run_for(Duration::from_millis(500));
    inject(&mut b.peer.dev, 2, OTHER_MAC, ours, ours);
    b.run_for(Duration::from_millis(10));
    assert_eq!(conflicts(&b.events), vec![(ours, true)]);
    assert_eq!(b.engine.nic_addr(), None);
    assert!(status(&mut b).ipv4.is_none());
    // ... and a new one is claimed.
    assert!(b.run_until(Duration::from_secs(2), |b| claimed(&b.events).len() == 2));
    let next = claimed(&b.events)[1].address();
    assert_ne!(next, ours);
    assert_eq!(b.engine.nic_addr(), Some(next));
}

#[test]
fn a_probe_for_the_claimed_address_is_answered() {
    let (mut b, frames) = silent_bench();
    assert!(b.run_until(Duration::from_secs(5), |b| !claimed(&b.events).is_empty()));
    let ours = claimed(&b.events)[0].address();
    b.run_for(Duration::from_secs(1));
    take_arp(&frames);
    inject(
        &mut b.peer.dev,
        1,
        OTHER_MAC,
        Ipv4Address::UNSPECIFIED,
        ours,
    );
    b.run_for(Duration::from_millis(10));
    let arp = take_arp(&frames);
    assert!(
        arp.iter()
            .any(|a| a.sender_ip == ours && a.target_ip == ours),
        "{arp:?}"
    );
    // Answering is not a conflict for us.
    assert_eq!(b.engine.nic_addr(), Some(ours));
    assert!(conflicts(&b.events).is_empty());
}

#[test]
fn endless_conflicts_are_rate_limited() {
    let (mut b, frames) = silent_bench();
    // A hostile host claims every candidate the engine probes for.
    let mut probes_seen = 0u32;
    b.run_until(Duration::from_secs(60), |b| {
        for a in take_arp(&frames) {
            if a.sender_ip.is_unspecified() && linklocal::is_link_local(a.target_ip) {
                probes_seen += 1;
                inject(&mut b.peer.dev, 2, OTHER_MAC, a.target_ip, a.target_ip);
            }
        }
        false
    });
    let n = conflicts(&b.events).len() as u32;
    assert!(claimed(&b.events).is_empty());
    // 10 quick attempts, then at most one every 6 s over the ~57 s left.
    assert!((10..=10 + 57 / 6 + 1).contains(&n), "{n} conflicts");
    assert!(probes_seen >= n);
}

// ---------------------------------------------------------------------------
// Two engines on one cable, no DHCP server: the host version of scripts/os2vm.sh.

struct Pair {
    a: Engine<MemDevice>,
    b: Engine<MemDevice>,
    now: Instant,
    events_a: Vec<NetEvent>,
    events_b: Vec<NetEvent>,
    done_b: Vec<Response>,
}

impl Pair {
    fn new(mac_a: [u8; 6], mac_b: [u8; 6]) -> Pair {
        let now = Instant::from_millis(0);
        let (da, db) = cable();
        let a = Engine::new(da, EngineConfig::new(mac_a, 0xaaaa_1111), now).expect("a");
        let b = Engine::new(db, EngineConfig::new(mac_b, 0xbbbb_2222), now).expect("b");
        Pair {
            a,
            b,
            now,
            events_a: Vec::new(),
            events_b: Vec::new(),
            done_b: Vec::new(),
        }
    }

    fn run_until(&mut self, limit: Duration, mut pred: impl FnMut(&mut Pair) -> bool) -> bool {
        let end = self.now + limit;
        loop {
            for _ in 0..16 {
                self.events_a.extend(self.a.poll(self.now).events);
                let out = self.b.poll(self.now);
                self.events_b.extend(out.events);
                self.done_b
                    .extend(out.completions.into_iter().map(|c| c.response));
                if !self.a.device().rx_pending() && !self.b.device().rx_pending() {
                    break;
                }
            }
            if pred(self) {
                return true;
            }
            if self.now >= end {
                return false;
            }
            let mut next = self.now + Duration::from_millis(100);
            for t in [self.a.poll_at(self.now), self.b.poll_at(self.now)]
                .into_iter()
                .flatten()
            {
                next = next.min(t);
            }
            self.now = next.max(self.now + Duration::from_millis(1));
        }
    }

    /// A datagram from A to B's link-local address arrives.
    fn udp_a_to_b(&mut self) {
        let c = ClientId(1);
        let bind = |e: &mut Engine<MemDevice>, now| match e.submit(
            now,
            c,
            1,
            Request::UdpBind {
                local: SockAddr::new(Ipv4::UNSPECIFIED, 4242),
            },
        ) {
            Submit::Done(Response::Bound { socket, .. }) => socket,
            other => panic!("bind: {other:?}"),
        };
        let sa = bind(&mut self.a, self.now);
        let sb = bind(&mut self.b, self.now);
        let dst = SockAddr::new(Ipv4::from(self.b.nic_addr().expect("b addr")), 4242);
        let sent = self.a.submit(
            self.now,
            c,
            2,
            Request::UdpSendTo {
                socket: sa,
                dst,
                data: b"hello over link-local".to_vec(),
            },
        );
        assert!(
            matches!(sent, Submit::Done(Response::Sent { .. })),
            "{sent:?}"
        );
        assert_eq!(
            self.b
                .submit(self.now, c, 3, Request::UdpRecvFrom { socket: sb }),
            Submit::Pending
        );
        let ok = self.run_until(Duration::from_secs(5), |p| !p.done_b.is_empty());
        assert!(ok, "no datagram");
        let got = self.done_b.pop();
        let Some(Response::Datagram { src, data }) = got else {
            panic!("{got:?}");
        };
        assert_eq!(data, b"hello over link-local");
        assert_eq!(src.ip, Ipv4::from(self.a.nic_addr().expect("a addr")));
    }
}

#[test]
fn two_engines_without_dhcp_talk_over_link_local() {
    let mut p = Pair::new(ENGINE_MAC, OTHER_MAC);
    let ok = p.run_until(Duration::from_secs(10), |p| {
        p.a.nic_addr().is_some() && p.b.nic_addr().is_some()
    });
    assert!(ok, "a {:?} b {:?}", p.events_a, p.events_b);
    assert_eq!(
        p.a.nic_addr(),
        Some(linklocal::candidate(&ENGINE_MAC, 1, 0))
    );
    assert_eq!(p.b.nic_addr(), Some(linklocal::candidate(&OTHER_MAC, 1, 0)));
    p.udp_a_to_b();
}

#[test]
fn two_engines_with_the_same_mac_end_up_on_different_addresses() {
    let mut p = Pair::new(ENGINE_MAC, ENGINE_MAC);
    let ok = p.run_until(Duration::from_secs(10), |p| {
        p.a.nic_addr().is_some() && p.b.nic_addr().is_some()
    });
    assert!(ok, "a {:?} b {:?}", p.events_a, p.events_b);
    let (a, b) = (p.a.nic_addr(), p.b.nic_addr());
    assert_ne!(a, b);
    // Both started from the MAC's candidate; at least one saw the other.
    let first = linklocal::candidate(&ENGINE_MAC, 0, 0);
    let seen = conflicts(&p.events_a).len() + conflicts(&p.events_b).len();
    assert!(seen >= 1, "a {:?} b {:?}", p.events_a, p.events_b);
    assert!(a != Some(first) || b != Some(first));
    // Stable: no conflict later on.
    let before = seen;
    p.run_until(Duration::from_secs(5), |_| false);
    let after = conflicts(&p.events_a).len() + conflicts(&p.events_b).len();
    assert_eq!(before, after);
    p.udp_a_to_b();
}

#[test]
fn a_late_host_with_the_same_mac_yields_to_the_one_holding_the_address() {
    // A claims first; B (same MAC) boots 10 s later, probes A's address, is
    // answered and moves on; A keeps its address.
    let now = Instant::from_millis(0);
    let (da, db) = cable();
    let mut a = Engine::new(da, EngineConfig::new(ENGINE_MAC, 1), now).expect("a");
    let mut t = now;
    while a.nic_addr().is_none() && t < Instant::from_secs(6) {
        a.poll(t);
        t += Duration::from_millis(5);
    }
    let held = a.nic_addr().expect("a claimed");
    let mut b = Engine::new(db, EngineConfig::new(ENGINE_MAC, 2), t).expect("b");
    let mut ev_a = Vec::new();
    let mut ev_b = Vec::new();
    let end = t + Duration::from_secs(8);
    while t < end {
        ev_a.extend(a.poll(t).events);
        ev_b.extend(b.poll(t).events);
        t += Duration::from_millis(5);
    }
    assert_eq!(a.nic_addr(), Some(held), "{ev_a:?}");
    assert!(conflicts(&ev_a).is_empty(), "{ev_a:?}");
    assert_eq!(conflicts(&ev_b), vec![(held, false)]);
    let got = b.nic_addr().expect("b claimed");
    assert_ne!(got, held);
}

mod parser {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// Any byte string parses to nothing or to a request/reply; never a panic.
        #[test]
        fn arp_parser_is_total(bytes in proptest::collection::vec(any::<u8>(), 0..128)) {
            if let Some(arp) = ArpSeen::parse_frame(&bytes) {
                prop_assert!(arp.operation == 1 || arp.operation == 2);
                prop_assert!(bytes.len() >= ARP_FRAME_LEN);
            }
        }

        /// ARP-shaped frames with random fields round-trip through the parser.
        #[test]
        fn arp_frames_parse(mac in any::<[u8; 6]>(), ip in any::<[u8; 4]>(), probe in any::<bool>()) {
            let addr = Ipv4Address::from(ip);
            let out = if probe { ArpOut::Probe(addr) } else { ArpOut::Announce(addr) };
            let mut buf = [0u8; ARP_FRAME_LEN];
            out.emit(mac, &mut buf);
            let seen = ArpSeen::parse_frame(&buf).expect("parses");
            prop_assert_eq!(seen.sender_mac, mac);
            prop_assert_eq!(seen.target_ip, addr);
            prop_assert_eq!(seen.sender_ip, if probe { Ipv4Address::UNSPECIFIED } else { addr });
        }
    }
}
