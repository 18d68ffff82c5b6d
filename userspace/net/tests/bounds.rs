//! Client isolation, teardown and every resource bound: exceeding one is a
//! typed error, never a panic.

mod common;

use common::{sa, Bench, LeasePlan, ENGINE_MAC};
use nexus_net::limits::*;
use nexus_net::smoltcp::phy::{Device, DeviceCapabilities, Medium};
use nexus_net::smoltcp::time::{Duration, Instant};
use nexus_net::{
    ClientId, Engine, EngineConfig, Error, InitError, Ipv4, Request, Response, SocketId, Submit,
};

fn udp_bind(b: &mut Bench, c: ClientId, port: u16) -> Response {
    b.call(
        c,
        Request::UdpBind {
            local: sa(127, 0, 0, 1, port),
        },
    )
}

#[test]
fn a_client_cannot_touch_another_clients_sockets() {
    let mut b = Bench::new(LeasePlan::ten_nine());
    b.bind();
    let alice = ClientId(1);
    let mallory = ClientId(2);
    let Response::Bound { socket: u, local } = udp_bind(&mut b, alice, 6000) else {
        panic!("bind");
    };
    let Response::Bound { socket: l, .. } = b.call(
        alice,
        Request::TcpListen {
            local: sa(127, 0, 0, 1, 6001),
            backlog: 1,
        },
    ) else {
        panic!("listen");
    };
    let Response::Connected { socket: s, .. } = b.call(
        alice,
        Request::TcpConnect {
            remote: sa(127, 0, 0, 1, 6001),
        },
    ) else {
        panic!("connect");
    };

    let stolen = [
        Request::UdpSendTo {
            socket: u,
            dst: local,
            data: b"x".to_vec(),
        },
        Request::UdpRecvFrom { socket: u },
        Request::UdpJoinMulticast {
            socket: u,
            group: Ipv4::new(239, 1, 1, 1),
        },
        Request::TcpAccept { socket: l },
        Request::TcpRead {
            socket: s,
            max_len: 10,
        },
        Request::TcpWrite {
            socket: s,
            data: b"x".to_vec(),
        },
        Request::LocalAddr { socket: s },
        Request::Close { socket: s },
        Request::Close { socket: l },
        Request::Close { socket: u },
    ];
    for req in stolen {
        assert_eq!(
            b.call(mallory, req.clone()),
            Response::Error(Error::InvalidSocket),
            "{req:?}"
        );
    }
    // A made-up handle looks exactly the same.
    assert_eq!(
        b.call(
            mallory,
            Request::Close {
                socket: SocketId(0xdead_beef)
            }
        ),
        Response::Error(Error::InvalidSocket)
    );
    // Alice's sockets are untouched.
    assert!(matches!(
        b.call(alice, Request::LocalAddr { socket: s }),
        Response::Addr { .. }
    ));
    assert_eq!(b.call(alice, Request::Close { socket: u }), Response::Ok);
    assert_eq!(
        b.call(alice, Request::Close { socket: u }),
        Response::Error(Error::InvalidSocket)
    );
}

#[test]
fn wrong_socket_kind_is_typed() {
    let mut b = Bench::new(LeasePlan::ten_nine());
    let c = ClientId(1);
    let Response::Bound { socket: u, .. } = udp_bind(&mut b, c, 6000) else {
        panic!()
    };
    assert_eq!(
        b.call(
            c,
            Request::TcpRead {
                socket: u,
                max_len: 1
            }
        ),
        Response::Error(Error::WrongSocketType)
    );
    assert_eq!(
        b.call(c, Request::TcpAccept { socket: u }),
        Response::Error(Error::WrongSocketType)
    );
}

#[test]
fn close_client_tears_down_everything_and_the_peer_sees_it() {
    let mut b = Bench::new(LeasePlan::ten_nine());
    b.bind();
    let baseline = b.engine.stack_socket_count();
    let server = ClientId(1);
    let doomed = ClientId(2);
    let Response::Bound { socket: l, .. } = b.call(
        server,
        Request::TcpListen {
            local: sa(127, 0, 0, 1, 7100),
            backlog: 2,
        },
    ) else {
        panic!()
    };
    let server_sockets = b.engine.stack_socket_count();
    let Response::Connected { .. } = b.call(
        doomed,
        Request::TcpConnect {
            remote: sa(127, 0, 0, 1, 7100),
        },
    ) else {
        panic!()
    };
    let Response::Accepted { socket: ss, .. } = b.call(server, Request::TcpAccept { socket: l })
    else {
        panic!()
    };
    udp_bind(&mut b, doomed, 7101);
    b.call(
        doomed,
        Request::TcpListen {
            local: sa(0, 0, 0, 0, 7102),
            backlog: 4,
        },
    );
    let (ping_id, ping) = b.submit(
        doomed,
        Request::Ping {
            target: Ipv4::new(10, 9, 0, 66),
            timeout_ms: 10_000,
        },
    );
    assert_eq!(ping, Submit::Pending);
    let (recv_id, _) = b.submit(
        doomed,
        Request::TcpAccept {
            socket: SocketId(999),
        },
    );
    let _ = recv_id;
    assert_eq!(b.engine.client_count(), 2);

    b.engine.close_client(doomed);
    b.run_for(Duration::from_secs(1));
    assert_eq!(b.engine.client_count(), 1);
    assert_eq!(b.engine.pending_count(), 0);
    // Only the server's listener and accepted stream remain.
    assert_eq!(b.engine.socket_count(), 2);
    // The server's stream was reset by the teardown: reads end.
    assert_eq!(
        b.call(
            server,
            Request::TcpRead {
                socket: ss,
                max_len: 10
            }
        ),
        Response::Data { data: vec![] }
    );
    assert!(
        b.take_completion(doomed, ping_id).is_none(),
        "answered a closed client"
    );
    assert_eq!(b.call(server, Request::Close { socket: ss }), Response::Ok);
    b.run_for(Duration::from_secs(40));
    // All stack sockets of the closed client are freed (the listener pool
    // of the server refilled to its backlog).
    assert_eq!(b.engine.stack_socket_count(), server_sockets);
    assert!(server_sockets > baseline);
}

#[test]
fn per_client_and_total_socket_bounds() {
    let mut b = Bench::new(LeasePlan::ten_nine());
    let c = ClientId(1);
    for i in 0..MAX_SOCKETS_PER_CLIENT {
        assert!(matches!(
            udp_bind(&mut b, c, 10_000 + i as u16),
            Response::Bound { .. }
        ));
    }
    assert_eq!(
        udp_bind(&mut b, c, 11_000),
        Response::Error(Error::NoSockets)
    );
    assert_eq!(
        b.call(
            c,
            Request::TcpConnect {
                remote: sa(127, 0, 0, 1, 80)
            }
        ),
        Response::Error(Error::NoSockets)
    );
    // Other clients still have room, up to the global bound.
    let mut opened = MAX_SOCKETS_PER_CLIENT;
    let mut client = 2;
    let mut port = 20_000u16;
    while opened < MAX_SOCKETS_TOTAL {
        let r = udp_bind(&mut b, ClientId(client), port);
        assert!(matches!(r, Response::Bound { .. }), "{r:?} at {opened}");
        opened += 1;
        port += 1;
        if opened % MAX_SOCKETS_PER_CLIENT == 0 {
            client += 1;
        }
    }
    assert_eq!(
        udp_bind(&mut b, ClientId(999), port),
        Response::Error(Error::NoSockets)
    );
    assert_eq!(b.engine.socket_count(), MAX_SOCKETS_TOTAL);
}

#[test]
fn stack_socket_bound_caps_listener_pools() {
    let mut b = Bench::new(LeasePlan::ten_nine());
    // Wildcard listeners with full backlogs use 2 * MAX_BACKLOG stack sockets
    // each; the stack budget runs out before the facade budget does.
    let mut last = Response::Ok;
    for i in 0..MAX_SOCKETS_TOTAL {
        let c = ClientId((i / MAX_SOCKETS_PER_CLIENT) as u32 + 1);
        last = b.call(
            c,
            Request::TcpListen {
                local: sa(0, 0, 0, 0, 30_000 + i as u16),
                backlog: 255,
            },
        );
        if last == Response::Error(Error::NoSockets) {
            break;
        }
    }
    assert_eq!(last, Response::Error(Error::NoSockets));
    assert!(b.engine.stack_socket_count() <= MAX_STACK_SOCKETS);
}

#[test]
fn client_bound() {
    let mut b = Bench::new(LeasePlan::ten_nine());
    for i in 0..MAX_CLIENTS as u32 {
        assert!(matches!(
            b.call(ClientId(i), Request::InterfaceStatus),
            Response::Status(_)
        ));
    }
    assert_eq!(
        b.call(ClientId(10_000), Request::InterfaceStatus),
        Response::Error(Error::TooManyClients)
    );
    b.engine.close_client(ClientId(0));
    assert!(matches!(
        b.call(ClientId(10_000), Request::InterfaceStatus),
        Response::Status(_)
    ));
}

#[test]
fn pending_bounds_and_busy() {
    let mut b = Bench::new(LeasePlan::ten_nine());
    let c = ClientId(1);
    let mut socks = Vec::new();
    for i in 0..MAX_SOCKETS_PER_CLIENT {
        let Response::Bound { socket, .. } = udp_bind(&mut b, c, 12_000 + i as u16) else {
            panic!()
        };
        socks.push(socket);
    }
    // One receive may wait per socket; a second is Busy.
    let (_, first) = b.submit(c, Request::UdpRecvFrom { socket: socks[0] });
    assert_eq!(first, Submit::Pending);
    let (_, second) = b.submit(c, Request::UdpRecvFrom { socket: socks[0] });
    assert_eq!(second, Submit::Done(Response::Error(Error::Busy)));
    for s in &socks[1..] {
        let (_, r) = b.submit(c, Request::UdpRecvFrom { socket: *s });
        assert_eq!(r, Submit::Pending);
    }
    assert_eq!(b.engine.pending_count(), MAX_PENDING_PER_CLIENT);
    let (_, r) = b.submit(
        c,
        Request::Ping {
            target: Ipv4::LOCALHOST,
            timeout_ms: 100,
        },
    );
    assert_eq!(r, Submit::Done(Response::Error(Error::TooManyPending)));

    // Closing a socket answers its parked request with Closed.
    assert_eq!(b.call(c, Request::Close { socket: socks[3] }), Response::Ok);
    b.settle();
    assert!(b
        .completions
        .iter()
        .any(|x| x.client == c && x.response == Response::Error(Error::Closed)));
    assert_eq!(b.engine.pending_count(), MAX_PENDING_PER_CLIENT - 1);
}

#[test]
fn payload_and_argument_checks() {
    let mut b = Bench::new(LeasePlan::ten_nine());
    b.peer.dhcp.answering = false;
    let c = ClientId(1);
    let Response::Bound { socket: u, local } = udp_bind(&mut b, c, 6000) else {
        panic!()
    };
    assert_eq!(
        b.call(
            c,
            Request::UdpSendTo {
                socket: u,
                dst: local,
                data: vec![0; MAX_DATA_LEN + 1]
            }
        ),
        Response::Error(Error::MessageTooLarge)
    );
    assert_eq!(
        b.call(
            c,
            Request::UdpSendTo {
                socket: u,
                dst: sa(127, 0, 0, 1, 0),
                data: vec![1]
            }
        ),
        Response::Error(Error::InvalidArgument)
    );
    assert_eq!(
        b.call(
            c,
            Request::TcpListen {
                local: sa(127, 0, 0, 1, 0),
                backlog: 1
            }
        ),
        Response::Error(Error::InvalidArgument)
    );
    assert_eq!(
        b.call(
            c,
            Request::UdpBind {
                local: sa(224, 0, 0, 1, 5)
            }
        ),
        Response::Error(Error::InvalidArgument)
    );
    // Off-machine traffic before a lease.
    assert_eq!(
        b.call(
            c,
            Request::TcpConnect {
                remote: sa(10, 9, 0, 1, 7)
            }
        ),
        Response::Error(Error::NotConfigured)
    );
    // The DHCP client's port is reserved on the NIC.
    assert_eq!(
        b.call(
            c,
            Request::UdpBind {
                local: sa(0, 0, 0, 0, 68)
            }
        ),
        Response::Error(Error::AddrInUse)
    );
    // A second listener on the same port and interface.
    b.call(
        c,
        Request::TcpListen {
            local: sa(0, 0, 0, 0, 80),
            backlog: 1,
        },
    );
    assert_eq!(
        b.call(
            c,
            Request::TcpListen {
                local: sa(127, 0, 0, 1, 80),
                backlog: 1
            }
        ),
        Response::Error(Error::AddrInUse)
    );
}

#[test]
fn udp_send_buffer_full_is_typed() {
    let mut b = Bench::new(LeasePlan::ten_nine());
    let c = ClientId(1);
    let Response::Bound { socket: u, local } = udp_bind(&mut b, c, 6000) else {
        panic!()
    };
    // Without polling in between, the send ring fills up.
    let mut last = Submit::Pending;
    for i in 0..=UDP_TX_PACKETS {
        let (_, r) = b.submit(
            c,
            Request::UdpSendTo {
                socket: u,
                dst: local,
                data: vec![i as u8; 400],
            },
        );
        last = r;
    }
    assert_eq!(last, Submit::Done(Response::Error(Error::BufferFull)));
}

struct NotEthernet;
impl Device for NotEthernet {
    type RxToken<'a> = nexus_net::loopback::RxToken;
    type TxToken<'a> = nexus_net::loopback::TxToken<'a>;
    fn receive(&mut self, _t: Instant) -> Option<(Self::RxToken<'_>, Self::TxToken<'_>)> {
        None
    }
    fn transmit(&mut self, _t: Instant) -> Option<Self::TxToken<'_>> {
        None
    }
    fn capabilities(&self) -> DeviceCapabilities {
        let mut c = DeviceCapabilities::default();
        c.medium = Medium::Ip;
        c
    }
}

#[test]
fn construction_rejects_bad_input_without_panicking() {
    let (dev, _) = common::cable();
    let r = Engine::new(
        dev,
        EngineConfig::new([0x01, 0, 0, 0, 0, 1], 1),
        Instant::ZERO,
    );
    assert_eq!(r.err(), Some(InitError::InvalidMac));
    let (dev, _) = common::cable();
    let r = Engine::new(dev, EngineConfig::new([0xff; 6], 1), Instant::ZERO);
    assert_eq!(r.err(), Some(InitError::InvalidMac));
    let r = Engine::new(NotEthernet, EngineConfig::new(ENGINE_MAC, 1), Instant::ZERO);
    assert_eq!(r.err(), Some(InitError::NotEthernet));
}
