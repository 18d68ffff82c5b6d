//! Host transports over real loopback sockets (std only): UDP discovery feeds
//! the peer table, and the discovered entry drives a TCP session. Loops are
//! bounded in iterations; nothing asserts on wall-clock time.
#![cfg(feature = "std")]

mod common;

use std::net::{TcpListener, TcpStream};
use std::time::Duration;

use common::*;
use dsoftbus::connection::{Connection, Event};
use dsoftbus::transport::pump;
use dsoftbus::transport::tcp::HostClock;
use dsoftbus::transport::udp::{DiscoveryMode, DiscoverySocket, UdpConfig, RECV_BUF_LEN};
use dsoftbus::Observe;

fn loopback_socket(dest_port: u16) -> DiscoverySocket {
    DiscoverySocket::bind(&UdpConfig {
        bind_port: 0,
        dest_port,
        loopback_only: true,
        nonblocking: false,
        ..UdpConfig::default()
    })
    .expect("bind loopback udp")
}

#[test]
fn udp_loopback_discovery_then_tcp_session() {
    let mut a = Node::new("node-a", 1, 15, 1);
    let b_listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let b_port = b_listener.local_addr().unwrap().port();
    let mut b = Node::new("node-b", 2, 16, b_port);
    b.announce = dsoftbus::Announce::new(b.local.id().clone(), b_port, b.key(), vec![]).unwrap();

    // Discovery over UDP loopback: b sends, a receives into its table.
    let a_udp = loopback_socket(9); // a only receives here
    let a_udp_port = a_udp.socket().local_addr().unwrap().port();
    a_udp
        .socket()
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let b_udp = loopback_socket(a_udp_port);
    assert_eq!(b_udp.mode(), DiscoveryMode::Loopback);
    b_udp.send_raw(b"junk that is not an announce").unwrap();
    b_udp.send_announce(&b.announce).unwrap();
    b_udp.send_announce(&b.announce).unwrap();
    let mut outcomes = Vec::new();
    for _ in 0..3 {
        let (_, o) = a_udp
            .recv_into(&mut a.table, t(0))
            .unwrap()
            .expect("datagram");
        outcomes.push(o);
    }
    assert!(matches!(outcomes[0], Observe::Malformed(_)));
    assert_eq!(outcomes[1], Observe::Inserted);
    assert_eq!(outcomes[2], Observe::Duplicate);
    let entry = a.table.get_str("node-b").unwrap().clone();
    assert_eq!(entry.session_addr().port(), b_port);
    // b learns a too (needed for the responder-side binding check).
    b.hear(&a, t(0));

    // Discovery-driven TCP connect to the entry's address.
    let clock = HostClock::new();
    let mut sa = TcpStream::connect(entry.session_addr()).unwrap();
    let (mut sb, _) = b_listener.accept().unwrap();
    sa.set_nonblocking(true).unwrap();
    sb.set_nonblocking(true).unwrap();
    let mut r = rng(21);
    let mut ca =
        Connection::connect(&a.local, (&entry).into(), &mut r, clock.now(), cfg()).unwrap();
    let mut cb = Connection::accept(&b.local, &mut r, clock.now(), cfg());

    let mut pinged = false;
    let mut got_pong = false;
    for _ in 0..20_000 {
        pump(&mut ca, &mut sa, clock.now(), &a.table).unwrap();
        pump(&mut cb, &mut sb, clock.now(), &b.table).unwrap();
        while let Some(e) = ca.poll_event() {
            if e == Event::Pong(7) {
                got_pong = true;
            }
        }
        while cb.poll_event().is_some() {}
        if ca.is_established() && !pinged {
            ca.send_ping(7).unwrap();
            pinged = true;
        }
        if got_pong {
            break;
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    assert!(ca.is_established() && cb.is_established());
    assert_eq!(cb.peer_id().unwrap().as_str(), "node-a");
    assert!(got_pong, "ping/pong over TCP");
    println!(
        "tcp session ok: node-a -> node-b at {}",
        entry.session_addr()
    );
}

#[test]
fn udp_bind_picks_multicast_or_broadcast() {
    let s = DiscoverySocket::bind(&UdpConfig {
        bind_port: 0,
        ..UdpConfig::default()
    })
    .expect("bind");
    assert!(matches!(
        s.mode(),
        DiscoveryMode::Multicast | DiscoveryMode::Broadcast
    ));
    println!(
        "discovery mode on this host: {:?} -> {}",
        s.mode(),
        s.dest()
    );
    assert_eq!(RECV_BUF_LEN, dsoftbus::announce::MAX_ANNOUNCE_LEN + 1);
}
