//! Services on one machine talking through the 127.0.0.1/8 interface (and the
//! NIC's own address) with real TCP/UDP, through the facade.

mod common;

use common::{sa, Bench, LeasePlan};
use nexus_net::smoltcp::time::Duration;
use nexus_net::{ClientId, Error, Ipv4, Request, Response, SockAddr, SocketId, Submit};

fn read_exact(b: &mut Bench, c: ClientId, socket: SocketId, n: usize) -> Vec<u8> {
    let mut got = Vec::new();
    while got.len() < n {
        match b.call(
            c,
            Request::TcpRead {
                socket,
                max_len: 4096,
            },
        ) {
            Response::Data { data } if !data.is_empty() => got.extend(data),
            other => panic!("read: {other:?} after {} bytes", got.len()),
        }
    }
    got
}

fn write_all(b: &mut Bench, c: ClientId, socket: SocketId, data: &[u8]) {
    for chunk in data.chunks(nexus_net::limits::MAX_DATA_LEN) {
        let mut off = 0;
        while off < chunk.len() {
            match b.call(
                c,
                Request::TcpWrite {
                    socket,
                    data: chunk[off..].to_vec(),
                },
            ) {
                Response::Written { len } => off += len as usize,
                other => panic!("write: {other:?}"),
            }
        }
    }
}

/// Streams `data` from `from` to `to` with one write and one read in flight
/// at a time, as two independent clients would.
fn pump(
    b: &mut Bench,
    (wc, ws): (ClientId, SocketId),
    (rc, rs): (ClientId, SocketId),
    data: &[u8],
) -> Vec<u8> {
    let mut sent = 0;
    let mut got = Vec::new();
    let mut wr: Option<u32> = None;
    let mut rd: Option<u32> = None;
    let mut parked_writes = 0;
    let mut short_writes = 0;
    for _ in 0..10_000 {
        if wr.is_none() && sent < data.len() {
            let end = (sent + nexus_net::limits::MAX_DATA_LEN).min(data.len());
            let (id, r) = b.submit(
                wc,
                Request::TcpWrite {
                    socket: ws,
                    data: data[sent..end].to_vec(),
                },
            );
            match r {
                Submit::Done(Response::Written { len }) => {
                    if (len as usize) < end - sent {
                        short_writes += 1;
                    }
                    sent += len as usize
                }
                Submit::Pending => {
                    parked_writes += 1;
                    wr = Some(id)
                }
                Submit::Done(other) => panic!("write: {other:?}"),
            }
        }
        if rd.is_none() {
            let (id, r) = b.submit(
                rc,
                Request::TcpRead {
                    socket: rs,
                    max_len: 512,
                },
            );
            match r {
                Submit::Done(Response::Data { data }) if !data.is_empty() => got.extend(data),
                Submit::Pending => rd = Some(id),
                Submit::Done(other) => panic!("read: {other:?}"),
            }
        }
        if got.len() >= data.len() {
            assert!(
                parked_writes + short_writes > 0,
                "the writer never met a full buffer"
            );
            return got;
        }
        b.run_for(Duration::from_millis(5));
        if let Some(id) = wr {
            if let Some(r) = b.take_completion(wc, id) {
                let Response::Written { len } = r else {
                    panic!("write: {r:?}")
                };
                sent += len as usize;
                wr = None;
            }
        }
        if let Some(id) = rd {
            if let Some(r) = b.take_completion(rc, id) {
                let Response::Data { data } = r else {
                    panic!("read: {r:?}")
                };
                assert!(!data.is_empty(), "early EOF");
                got.extend(data);
                rd = None;
            }
        }
    }
    panic!("stream stalled at {} of {} bytes", got.len(), data.len());
}

/// Server client `s` listens on `listen`; client `c` connects to `target`;
/// they exchange data both ways and close.
fn tcp_exchange(b: &mut Bench, listen: SockAddr, target: SockAddr, expect_local_ip: Ipv4) {
    let s = ClientId(1);
    let c = ClientId(2);
    let Response::Bound { socket: l, .. } = b.call(
        s,
        Request::TcpListen {
            local: listen,
            backlog: 2,
        },
    ) else {
        panic!("listen");
    };
    let (acc_id, acc) = b.submit(s, Request::TcpAccept { socket: l });
    assert_eq!(acc, Submit::Pending, "no connection yet");

    let Response::Connected {
        socket: cs,
        local,
        remote,
    } = b.call(c, Request::TcpConnect { remote: target })
    else {
        panic!("connect");
    };
    assert_eq!(remote, target);
    assert_eq!(local.ip, expect_local_ip);

    let Some(Response::Accepted {
        socket: ss,
        local: al,
        remote: ar,
    }) = b.wait(s, acc_id, Duration::from_secs(5))
    else {
        panic!("accept");
    };
    assert_eq!(ar, local);
    assert_eq!(al, target);

    // More than the send + receive buffers hold, so the writer must wait for
    // the reader: exercises parked writes and window updates over loopback.
    let n = 2 * (nexus_net::limits::TCP_RX_BUFFER + nexus_net::limits::TCP_TX_BUFFER) as u32;
    let payload: Vec<u8> = (0..n).map(|i| (i * 7 + 3) as u8).collect();
    let got = pump(b, (c, cs), (s, ss), &payload);
    assert_eq!(got, payload);
    write_all(b, s, ss, b"pong");
    assert_eq!(read_exact(b, c, cs, 4), b"pong");

    // Client closes: the server reads end of stream.
    assert_eq!(b.call(c, Request::Close { socket: cs }), Response::Ok);
    assert_eq!(
        b.call(
            s,
            Request::TcpRead {
                socket: ss,
                max_len: 10
            }
        ),
        Response::Data { data: vec![] }
    );
    assert_eq!(b.call(s, Request::Close { socket: ss }), Response::Ok);
    assert_eq!(b.call(s, Request::Close { socket: l }), Response::Ok);
}

#[test]
fn loopback_tcp_without_any_lease() {
    let mut b = Bench::new(LeasePlan::ten_nine());
    b.peer.dhcp.answering = false;
    tcp_exchange(
        &mut b,
        sa(127, 0, 0, 1, 9000),
        sa(127, 0, 0, 1, 9000),
        Ipv4::LOCALHOST,
    );
    assert!(b.engine.lease().is_none());
}

#[test]
fn loopback_tcp_to_wildcard_listener() {
    let mut b = Bench::new(LeasePlan::ten_nine());
    b.bind();
    tcp_exchange(
        &mut b,
        sa(0, 0, 0, 0, 9001),
        sa(127, 0, 0, 1, 9001),
        Ipv4::LOCALHOST,
    );
}

#[test]
fn own_nic_address_is_routed_through_loopback() {
    let mut b = Bench::new(LeasePlan::ten_nine());
    b.bind();
    // smoltcp's Ethernet interface cannot talk to itself; the engine routes
    // the leased address through the loopback interface.
    tcp_exchange(
        &mut b,
        sa(0, 0, 0, 0, 9002),
        sa(10, 9, 0, 50, 9002),
        Ipv4::new(10, 9, 0, 50),
    );
    let c = ClientId(3);
    assert!(matches!(
        b.call(
            c,
            Request::Ping {
                target: Ipv4::new(10, 9, 0, 50),
                timeout_ms: 1000
            }
        ),
        Response::Pong { .. }
    ));
}

#[test]
fn loopback_udp_between_clients() {
    let mut b = Bench::new(LeasePlan::ten_nine());
    b.bind();
    let a = ClientId(1);
    let z = ClientId(2);
    let Response::Bound {
        socket: sa_,
        local: la,
    } = b.call(
        a,
        Request::UdpBind {
            local: sa(127, 0, 0, 1, 7000),
        },
    )
    else {
        panic!("bind a");
    };
    let Response::Bound {
        socket: sz,
        local: lz,
    } = b.call(
        z,
        Request::UdpBind {
            local: sa(0, 0, 0, 0, 0),
        },
    )
    else {
        panic!("bind z");
    };
    assert_eq!(la, sa(127, 0, 0, 1, 7000));
    assert_eq!(lz.ip, Ipv4::UNSPECIFIED);

    // z → a, then a answers to the source it saw.
    let (rid, r) = b.submit(a, Request::UdpRecvFrom { socket: sa_ });
    assert_eq!(r, Submit::Pending);
    assert_eq!(
        b.call(
            z,
            Request::UdpSendTo {
                socket: sz,
                dst: la,
                data: b"ping".to_vec()
            }
        ),
        Response::Sent { len: 4 }
    );
    let Some(Response::Datagram { src, data }) = b.wait(a, rid, Duration::from_secs(1)) else {
        panic!("a got nothing");
    };
    assert_eq!(data, b"ping");
    assert_eq!(src, sa(127, 0, 0, 1, lz.port));
    assert_eq!(
        b.call(
            a,
            Request::UdpSendTo {
                socket: sa_,
                dst: src,
                data: b"pong".to_vec()
            }
        ),
        Response::Sent { len: 4 }
    );
    assert_eq!(
        b.call(z, Request::UdpRecvFrom { socket: sz }),
        Response::Datagram {
            src: la,
            data: b"pong".to_vec()
        }
    );

    // A loopback-only socket has no route off the machine.
    assert_eq!(
        b.call(
            a,
            Request::UdpSendTo {
                socket: sa_,
                dst: sa(10, 9, 0, 1, 7),
                data: vec![1]
            }
        ),
        Response::Error(Error::NoRoute)
    );
    // The port is taken on loopback.
    assert_eq!(
        b.call(
            z,
            Request::UdpBind {
                local: sa(0, 0, 0, 0, 7000)
            }
        ),
        Response::Error(Error::AddrInUse)
    );
}

#[test]
fn loopback_ping_and_closed_port() {
    let mut b = Bench::new(LeasePlan::ten_nine());
    let c = ClientId(1);
    assert!(matches!(
        b.call(
            c,
            Request::Ping {
                target: Ipv4::LOCALHOST,
                timeout_ms: 1000
            }
        ),
        Response::Pong { .. }
    ));
    assert_eq!(
        b.call(
            c,
            Request::TcpConnect {
                remote: sa(127, 0, 0, 1, 1)
            }
        ),
        Response::Error(Error::ConnectionRefused)
    );
}
