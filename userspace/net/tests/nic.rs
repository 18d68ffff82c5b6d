//! End to end over the in-memory cable: lease → configure → ping → TCP echo →
//! UDP echo, plus ICMP error paths, broadcast and multicast.

mod common;

use common::{is_arp, is_icmp, sa, Bench, LeasePlan};
use nexus_net::smoltcp::iface::SocketHandle;
use nexus_net::smoltcp::phy::ChecksumCapabilities;
use nexus_net::smoltcp::socket::icmp;
use nexus_net::smoltcp::time::Duration;
use nexus_net::smoltcp::wire::{Icmpv4Packet, Icmpv4Repr, IpAddress, Ipv4Address};
use nexus_net::{ClientId, Error, Ipv4, Request, Response, SocketId, Submit};

const GW: Ipv4 = Ipv4::new(10, 9, 0, 1);

fn ping(b: &mut Bench, c: ClientId, target: Ipv4, timeout_ms: u32) -> Response {
    b.call(c, Request::Ping { target, timeout_ms })
}

#[test]
fn lease_then_ping_then_tcp_echo_then_udp_echo() {
    let mut b = Bench::new(LeasePlan::ten_nine());
    let lease = b.bind();
    assert_eq!(lease.address.address(), Ipv4Address::new(10, 9, 0, 50));
    let c = ClientId(7);

    // Ping the gateway: the ARP cache is empty, the echo waits for ARP.
    let Response::Pong { rtt_us } = ping(&mut b, c, GW, 3000) else {
        panic!("ping failed");
    };
    assert!(rtt_us < 3_000_000);

    // TCP echo through the peer's port 7.
    let Response::Connected {
        socket,
        local,
        remote,
    } = b.call(
        c,
        Request::TcpConnect {
            remote: sa(10, 9, 0, 1, 7),
        },
    )
    else {
        panic!("connect failed");
    };
    assert_eq!(remote, sa(10, 9, 0, 1, 7));
    assert_eq!(local.ip, Ipv4::new(10, 9, 0, 50));
    assert!(local.port >= 49152);
    let msg = b"hello over tcp".to_vec();
    assert_eq!(
        b.call(
            c,
            Request::TcpWrite {
                socket,
                data: msg.clone()
            }
        ),
        Response::Written {
            len: msg.len() as u32
        }
    );
    let mut got = Vec::new();
    while got.len() < msg.len() {
        let Response::Data { data } = b.call(
            c,
            Request::TcpRead {
                socket,
                max_len: 1024,
            },
        ) else {
            panic!("read failed");
        };
        assert!(!data.is_empty(), "unexpected EOF");
        got.extend(data);
    }
    assert_eq!(got, msg);
    assert_eq!(b.call(c, Request::Close { socket }), Response::Ok);

    // UDP echo through the peer's port 7.
    let Response::Bound { socket: u, local } = b.call(
        c,
        Request::UdpBind {
            local: sa(0, 0, 0, 0, 0),
        },
    ) else {
        panic!("bind failed");
    };
    assert_ne!(local.port, 0);
    let msg = b"hello over udp".to_vec();
    assert_eq!(
        b.call(
            c,
            Request::UdpSendTo {
                socket: u,
                dst: sa(10, 9, 0, 1, 7),
                data: msg.clone()
            }
        ),
        Response::Sent {
            len: msg.len() as u32
        }
    );
    let Response::Datagram { src, data } = b.call(c, Request::UdpRecvFrom { socket: u }) else {
        panic!("recv failed");
    };
    assert_eq!(src, sa(10, 9, 0, 1, 7));
    assert_eq!(data, msg);
}

#[test]
fn ping_retries_when_the_first_echo_is_lost() {
    let mut b = Bench::new(LeasePlan::ten_nine());
    b.bind();
    // Drop the first echo request on the wire.
    let mut dropped = 0;
    b.engine.device().set_drop(move |f| {
        if is_icmp(f) && dropped == 0 {
            dropped += 1;
            true
        } else {
            false
        }
    });
    let t0 = b.now;
    let Response::Pong { rtt_us } = ping(&mut b, ClientId(1), GW, 5000) else {
        panic!("ping should succeed on a retry");
    };
    // The answered echo is a retry, sent about PING_RETRY_INTERVAL later, and
    // its own RTT is reported (not the time since the first attempt).
    assert!(b.now - t0 >= Duration::from_millis(1000));
    assert!(rtt_us < 1_000_000, "rtt {rtt_us}");
}

#[test]
fn ping_survives_a_lost_arp_request() {
    let mut b = Bench::new(LeasePlan::ten_nine());
    b.bind();
    let mut dropped = false;
    b.engine.device().set_drop(move |f| {
        if is_arp(f) && !dropped {
            dropped = true;
            true
        } else {
            false
        }
    });
    assert!(matches!(
        ping(&mut b, ClientId(1), GW, 5000),
        Response::Pong { .. }
    ));
}

#[test]
fn ping_times_out_within_its_bound() {
    let mut b = Bench::new(LeasePlan::ten_nine());
    b.bind();
    let c = ClientId(1);
    let t0 = b.now;
    // On-link address nobody answers for.
    let r = ping(&mut b, c, Ipv4::new(10, 9, 0, 77), 2500);
    assert_eq!(r, Response::Error(Error::Timeout));
    let took = b.now - t0;
    assert!(
        took >= Duration::from_millis(2500) && took < Duration::from_millis(3600),
        "{took:?}"
    );
    // The ICMP socket is gone again.
    assert_eq!(b.engine.pending_count(), 0);
}

#[test]
fn ping_errors_are_typed() {
    let mut plan = LeasePlan::ten_nine();
    plan.router = None;
    let mut b = Bench::new(plan);
    let c = ClientId(1);
    // No lease: the NIC has no address.
    b.peer.dhcp.answering = false;
    assert_eq!(
        ping(&mut b, c, GW, 1000),
        Response::Error(Error::NotConfigured)
    );
    b.peer.dhcp.answering = true;
    b.bind();
    // Off-link target and no default route.
    assert_eq!(
        ping(&mut b, c, Ipv4::new(8, 8, 8, 8), 1000),
        Response::Error(Error::NoRoute)
    );
    assert_eq!(
        ping(&mut b, c, Ipv4::UNSPECIFIED, 1000),
        Response::Error(Error::InvalidArgument)
    );
    assert_eq!(
        ping(&mut b, c, GW, 0),
        Response::Error(Error::InvalidArgument)
    );
    // On-link still works without a router.
    assert!(matches!(ping(&mut b, c, GW, 2000), Response::Pong { .. }));
}

#[test]
fn engine_answers_echo_requests() {
    let mut b = Bench::new(LeasePlan::ten_nine());
    b.bind();
    // A ping from the peer to the engine's leased address.
    let rx = icmp::PacketBuffer::new(vec![icmp::PacketMetadata::EMPTY; 4], vec![0; 512]);
    let tx = icmp::PacketBuffer::new(vec![icmp::PacketMetadata::EMPTY; 4], vec![0; 512]);
    let mut s = icmp::Socket::new(rx, tx);
    s.bind(icmp::Endpoint::Ident(0x4242)).expect("bind");
    let h: SocketHandle = b.peer.sockets.add(s);
    let repr = Icmpv4Repr::EchoRequest {
        ident: 0x4242,
        seq_no: 1,
        data: b"abcd",
    };
    {
        let s = b.peer.sockets.get_mut::<icmp::Socket>(h);
        let buf = s
            .send(repr.buffer_len(), IpAddress::v4(10, 9, 0, 50))
            .expect("send");
        repr.emit(
            &mut Icmpv4Packet::new_unchecked(buf),
            &ChecksumCapabilities::default(),
        );
    }
    let got = b.run_until(Duration::from_secs(5), |b| {
        let s = b.peer.sockets.get_mut::<icmp::Socket>(h);
        let Ok((payload, from)) = s.recv() else { return false };
        let pkt = Icmpv4Packet::new_checked(payload).expect("icmp");
        let r = Icmpv4Repr::parse(&pkt, &ChecksumCapabilities::default()).expect("repr");
        from == IpAddress::v4(10, 9, 0, 50)
            && matches!(r, Icmpv4Repr::EchoReply { ident: 0x4242, seq_no: 1, data } if data == b"abcd")
    });
    assert!(got, "no echo reply from the engine");
}

#[test]
fn udp_broadcast_reaches_the_subnet() {
    let mut b = Bench::new(LeasePlan::ten_nine());
    b.bind();
    let c = ClientId(1);
    let Response::Bound { socket, .. } = b.call(
        c,
        Request::UdpBind {
            local: sa(0, 0, 0, 0, 4000),
        },
    ) else {
        panic!("bind");
    };
    for dst in [sa(255, 255, 255, 255, 5000), sa(10, 9, 0, 255, 5000)] {
        assert_eq!(
            b.call(
                c,
                Request::UdpSendTo {
                    socket,
                    dst,
                    data: b"hi all".to_vec()
                }
            ),
            Response::Sent { len: 6 }
        );
    }
    b.run_for(Duration::from_millis(100));
    assert_eq!(b.peer.sink.len(), 2, "{:?}", b.peer.sink);
    for (from, data) in &b.peer.sink {
        assert_eq!(from.port, 4000);
        assert_eq!(from.addr, IpAddress::v4(10, 9, 0, 50));
        assert_eq!(data, b"hi all");
    }
}

#[test]
fn udp_multicast_join_receives_group_traffic() {
    let mut b = Bench::new(LeasePlan::ten_nine());
    b.bind();
    let c = ClientId(1);
    let group = Ipv4::new(239, 42, 0, 1);
    let Response::Bound { socket, .. } = b.call(
        c,
        Request::UdpBind {
            local: sa(0, 0, 0, 0, 37020),
        },
    ) else {
        panic!("bind");
    };
    assert_eq!(
        b.call(c, Request::UdpJoinMulticast { socket, group }),
        Response::Ok
    );
    assert_eq!(
        b.call(
            c,
            Request::UdpJoinMulticast {
                socket,
                group: Ipv4::new(10, 0, 0, 1)
            }
        ),
        Response::Error(Error::InvalidArgument)
    );

    // The peer sends to the group.
    {
        let s = b
            .peer
            .sockets
            .get_mut::<nexus_net::smoltcp::socket::udp::Socket>(b.peer.udp_echo);
        s.send_slice(b"announce", (IpAddress::v4(239, 42, 0, 1), 37020))
            .expect("send");
    }
    let (id, sub) = b.submit(c, Request::UdpRecvFrom { socket });
    let r = match sub {
        Submit::Done(r) => r,
        Submit::Pending => b
            .wait(c, id, Duration::from_secs(2))
            .expect("multicast datagram"),
    };
    assert_eq!(
        r,
        Response::Datagram {
            src: sa(10, 9, 0, 1, 7),
            data: b"announce".to_vec()
        }
    );
    assert_eq!(
        b.call(c, Request::UdpLeaveMulticast { socket, group }),
        Response::Ok
    );
    assert_eq!(
        b.call(c, Request::UdpLeaveMulticast { socket, group }),
        Response::Error(Error::InvalidArgument)
    );
}

#[test]
fn tcp_connect_to_closed_port_is_refused_and_silent_host_times_out() {
    let mut b = Bench::new(LeasePlan::ten_nine());
    b.bind();
    let c = ClientId(1);
    assert_eq!(
        b.call(
            c,
            Request::TcpConnect {
                remote: sa(10, 9, 0, 1, 9)
            }
        ),
        Response::Error(Error::ConnectionRefused)
    );
    let (id, sub) = b.submit(
        c,
        Request::TcpConnect {
            remote: sa(10, 9, 0, 99, 80),
        },
    );
    assert_eq!(sub, Submit::Pending);
    let r = b
        .wait(c, id, Duration::from_secs(60))
        .expect("connect completion");
    assert_eq!(r, Response::Error(Error::Timeout));
    // Failed connects leave no socket behind.
    assert_eq!(b.engine.socket_count(), 0);
}

#[test]
fn peer_close_reads_as_end_of_stream() {
    let mut b = Bench::new(LeasePlan::ten_nine());
    b.bind();
    let c = ClientId(1);
    let Response::Connected { socket, .. } = b.call(
        c,
        Request::TcpConnect {
            remote: sa(10, 9, 0, 1, 7),
        },
    ) else {
        panic!("connect");
    };
    // The peer closes its end.
    b.peer
        .sockets
        .get_mut::<nexus_net::smoltcp::socket::tcp::Socket>(b.peer.tcp_echo)
        .close();
    b.run_for(Duration::from_millis(100));
    assert_eq!(
        b.call(
            c,
            Request::TcpRead {
                socket,
                max_len: 100
            }
        ),
        Response::Data { data: vec![] }
    );
    let _: SocketId = socket;
}

#[test]
fn peer_connects_to_a_wildcard_listener_over_the_nic() {
    use nexus_net::smoltcp::socket::tcp;
    let mut b = Bench::new(LeasePlan::ten_nine());
    // Listen before the lease: the NIC side starts accepting once bound.
    let c = ClientId(1);
    b.peer.dhcp.answering = false;
    let Response::Bound { socket: l, .. } = b.call(
        c,
        Request::TcpListen {
            local: common::sa(0, 0, 0, 0, 8080),
            backlog: 2,
        },
    ) else {
        panic!("listen");
    };
    let (acc, r) = b.submit(c, Request::TcpAccept { socket: l });
    assert_eq!(r, Submit::Pending);
    b.peer.dhcp.answering = true;
    b.bind();

    let mut t = tcp::Socket::new(
        tcp::SocketBuffer::new(vec![0; 4096]),
        tcp::SocketBuffer::new(vec![0; 4096]),
    );
    t.connect(
        b.peer.iface.context(),
        (IpAddress::v4(10, 9, 0, 50), 8080),
        (IpAddress::v4(10, 9, 0, 1), 40000),
    )
    .expect("connect");
    let h = b.peer.sockets.add(t);
    let Some(Response::Accepted {
        socket: s,
        local,
        remote,
    }) = b.wait(c, acc, Duration::from_secs(5))
    else {
        panic!("accept");
    };
    assert_eq!(local, common::sa(10, 9, 0, 50, 8080));
    assert_eq!(remote, common::sa(10, 9, 0, 1, 40000));

    b.peer
        .sockets
        .get_mut::<tcp::Socket>(h)
        .send_slice(b"GET")
        .expect("send");
    assert_eq!(
        b.call(
            c,
            Request::TcpRead {
                socket: s,
                max_len: 100
            }
        ),
        Response::Data {
            data: b"GET".to_vec()
        }
    );
    assert_eq!(
        b.call(
            c,
            Request::TcpWrite {
                socket: s,
                data: b"OK".to_vec()
            }
        ),
        Response::Written { len: 2 }
    );
    b.run_for(Duration::from_millis(50));
    let mut buf = [0u8; 8];
    let n = b
        .peer
        .sockets
        .get_mut::<tcp::Socket>(h)
        .recv_slice(&mut buf)
        .expect("recv");
    assert_eq!(&buf[..n], b"OK");
}
