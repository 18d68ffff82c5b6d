//! The facade byte encoding: round trips, pinned bytes, limits, and decoding
//! arbitrary input never panics.

use nexus_net::facade::{Ipv4Cidr, FACADE_VERSION};
use nexus_net::limits::{MAX_DATA_LEN, MAX_DNS_SERVERS, MAX_MESSAGE_SIZE, MAX_STREAM_DATA_LEN};
use nexus_net::{
    decode_request, decode_response, encode_request, encode_response, CodecError, Error,
    InterfaceStatus, Ipv4, Request, Response, SockAddr, SocketId,
};
use proptest::prelude::*;

fn addr() -> SockAddr {
    SockAddr::new(Ipv4::new(10, 0, 2, 2), 34567)
}

fn all_requests() -> Vec<Request> {
    let s = SocketId(42);
    vec![
        Request::UdpBind { local: addr() },
        Request::UdpSendTo {
            socket: s,
            dst: addr(),
            data: b"datagram".to_vec(),
        },
        Request::UdpRecvFrom { socket: s },
        Request::UdpJoinMulticast {
            socket: s,
            group: Ipv4::new(239, 42, 0, 1),
        },
        Request::UdpLeaveMulticast {
            socket: s,
            group: Ipv4::new(239, 42, 0, 1),
        },
        Request::TcpListen {
            local: addr(),
            backlog: 4,
        },
        Request::TcpAccept { socket: s },
        Request::TcpConnect { remote: addr() },
        Request::TcpRead {
            socket: s,
            max_len: 1472,
        },
        Request::TcpWrite {
            socket: s,
            data: vec![0xab; MAX_DATA_LEN],
        },
        Request::Close { socket: s },
        Request::LocalAddr { socket: s },
        Request::InterfaceStatus,
        Request::Ping {
            target: Ipv4::new(10, 0, 2, 2),
            timeout_ms: 5000,
        },
    ]
}

fn all_responses() -> Vec<Response> {
    let s = SocketId(u32::MAX);
    vec![
        Response::Ok,
        Response::Bound {
            socket: s,
            local: addr(),
        },
        Response::Sent { len: 8 },
        Response::Datagram {
            src: addr(),
            data: vec![7; MAX_DATA_LEN],
        },
        Response::Accepted {
            socket: s,
            local: addr(),
            remote: addr(),
        },
        Response::Connected {
            socket: s,
            local: addr(),
            remote: addr(),
        },
        Response::Data { data: vec![] },
        Response::Written { len: 1472 },
        Response::Addr {
            local: addr(),
            remote: Some(addr()),
        },
        Response::Status(InterfaceStatus {
            mac: [2, 0, 0, 0, 0, 1],
            ipv4: Some(Ipv4Cidr {
                addr: Ipv4::new(10, 0, 2, 15),
                prefix_len: 24,
            }),
            gateway: Some(Ipv4::new(10, 0, 2, 2)),
            dns: vec![Ipv4::new(10, 0, 2, 3); MAX_DNS_SERVERS],
            loopback: Ipv4Cidr {
                addr: Ipv4::LOCALHOST,
                prefix_len: 8,
            },
            link_local: false,
        }),
        Response::Pong { rtt_us: 1234 },
        Response::Error(Error::Timeout),
    ]
}

#[test]
fn every_message_round_trips_within_the_size_limit() {
    for (i, req) in all_requests().into_iter().enumerate() {
        let bytes = encode_request(i as u32, &req).expect("encode");
        assert!(bytes.len() <= MAX_MESSAGE_SIZE);
        assert_eq!(bytes[0], FACADE_VERSION);
        assert_eq!(decode_request(&bytes), Ok((i as u32, req)));
    }
    for (i, resp) in all_responses().into_iter().enumerate() {
        let bytes = encode_response(u32::MAX - i as u32, &resp).expect("encode");
        assert!(bytes.len() <= MAX_MESSAGE_SIZE);
        assert_eq!(decode_response(&bytes), Ok((u32::MAX - i as u32, resp)));
    }
}

/// The encoding is a contract with other processes: these bytes must not
/// change (append variants, never reorder them).
#[test]
fn encoding_is_pinned() {
    assert_eq!(
        encode_request(1, &Request::InterfaceStatus).unwrap(),
        [1, 1, 12]
    );
    assert_eq!(
        encode_request(
            300,
            &Request::Ping {
                target: Ipv4::new(10, 0, 2, 2),
                timeout_ms: 1000
            }
        )
        .unwrap(),
        [1, 0xac, 0x02, 13, 10, 0, 2, 2, 0xe8, 0x07]
    );
    assert_eq!(
        encode_request(
            2,
            &Request::UdpSendTo {
                socket: SocketId(3),
                dst: SockAddr::new(Ipv4::new(127, 0, 0, 1), 37020),
                data: vec![0xaa, 0xbb],
            }
        )
        .unwrap(),
        [1, 2, 1, 3, 127, 0, 0, 1, 0x9c, 0xa1, 0x02, 2, 0xaa, 0xbb]
    );
    assert_eq!(
        encode_response(7, &Response::Pong { rtt_us: 5 }).unwrap(),
        [1, 7, 10, 5]
    );
    assert_eq!(
        encode_response(0, &Response::Error(Error::Timeout)).unwrap(),
        [1, 0, 11, 13]
    );
    assert_eq!(
        encode_response(0, &Response::Error(Error::NoSockets)).unwrap(),
        [1, 0, 11, 2]
    );
}

#[test]
fn malformed_input_gets_typed_errors() {
    assert_eq!(decode_request(&[]), Err(CodecError::Empty));
    assert_eq!(
        decode_request(&[2, 1, 12]),
        Err(CodecError::UnsupportedVersion(2))
    );
    assert_eq!(
        decode_request(&[1, 1, 12, 0]),
        Err(CodecError::TrailingBytes)
    );
    assert_eq!(decode_request(&[1, 1, 200]), Err(CodecError::Malformed));
    assert_eq!(decode_request(&[1, 1]), Err(CodecError::Malformed));
    let mut big = encode_request(1, &Request::InterfaceStatus).unwrap();
    big.resize(MAX_MESSAGE_SIZE + 1, 0);
    assert_eq!(decode_request(&big), Err(CodecError::TooLarge));
    // A length prefix claiming far more bytes than present.
    assert_eq!(
        decode_request(&[1, 1, 9, 3, 0xff, 0xff, 0xff, 0xff, 0x0f]),
        Err(CodecError::Malformed)
    );
    // Over-long payloads are refused both ways: datagrams above MAX_DATA_LEN,
    // stream writes above MAX_STREAM_DATA_LEN.
    let fat_datagram = Request::UdpSendTo {
        socket: SocketId(1),
        dst: SockAddr::new(Ipv4::LOCALHOST, 9),
        data: vec![0; MAX_DATA_LEN + 1],
    };
    assert_eq!(
        encode_request(1, &fat_datagram),
        Err(CodecError::PayloadTooLarge)
    );
    let fat = Request::TcpWrite {
        socket: SocketId(1),
        data: vec![0; MAX_STREAM_DATA_LEN + 1],
    };
    assert_eq!(encode_request(1, &fat), Err(CodecError::PayloadTooLarge));
    let fat_data = Response::Data {
        data: vec![0; MAX_STREAM_DATA_LEN + 1],
    };
    assert_eq!(
        encode_response(1, &fat_data),
        Err(CodecError::PayloadTooLarge)
    );
    let mut bytes = encode_request(
        1,
        &Request::TcpWrite {
            socket: SocketId(1),
            data: vec![0; MAX_STREAM_DATA_LEN],
        },
    )
    .unwrap();
    // Hand-build the same message with one more byte.
    bytes.truncate(4);
    let len = (MAX_STREAM_DATA_LEN + 1) as u32;
    bytes.extend([(len & 0x7f) as u8 | 0x80, (len >> 7) as u8]);
    bytes.extend(vec![0; MAX_STREAM_DATA_LEN + 1]);
    assert_eq!(decode_request(&bytes), Err(CodecError::PayloadTooLarge));
}

fn ipv4() -> impl Strategy<Value = Ipv4> {
    any::<[u8; 4]>().prop_map(Ipv4)
}

fn sockaddr() -> impl Strategy<Value = SockAddr> {
    (ipv4(), any::<u16>()).prop_map(|(ip, port)| SockAddr::new(ip, port))
}

fn request() -> impl Strategy<Value = Request> {
    let sock = any::<u32>().prop_map(SocketId);
    let data = proptest::collection::vec(any::<u8>(), 0..=MAX_DATA_LEN);
    prop_oneof![
        sockaddr().prop_map(|local| Request::UdpBind { local }),
        (sock.clone(), sockaddr(), data.clone())
            .prop_map(|(socket, dst, data)| Request::UdpSendTo { socket, dst, data }),
        sock.clone()
            .prop_map(|socket| Request::UdpRecvFrom { socket }),
        (sock.clone(), ipv4())
            .prop_map(|(socket, group)| Request::UdpJoinMulticast { socket, group }),
        (sockaddr(), any::<u8>())
            .prop_map(|(local, backlog)| Request::TcpListen { local, backlog }),
        sock.clone()
            .prop_map(|socket| Request::TcpAccept { socket }),
        sockaddr().prop_map(|remote| Request::TcpConnect { remote }),
        (sock.clone(), any::<u32>())
            .prop_map(|(socket, max_len)| Request::TcpRead { socket, max_len }),
        (sock.clone(), data).prop_map(|(socket, data)| Request::TcpWrite { socket, data }),
        sock.clone().prop_map(|socket| Request::Close { socket }),
        sock.prop_map(|socket| Request::LocalAddr { socket }),
        Just(Request::InterfaceStatus),
        (ipv4(), any::<u32>())
            .prop_map(|(target, timeout_ms)| Request::Ping { target, timeout_ms }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn decode_never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..3000)) {
        let _ = decode_request(&bytes);
        let _ = decode_response(&bytes);
    }

    #[test]
    fn decode_never_panics_on_versioned_garbage(body in proptest::collection::vec(any::<u8>(), 0..64)) {
        let mut bytes = vec![FACADE_VERSION];
        bytes.extend(body);
        let _ = decode_request(&bytes);
        let _ = decode_response(&bytes);
    }

    #[test]
    fn requests_round_trip(id in any::<u32>(), req in request()) {
        let bytes = encode_request(id, &req).unwrap();
        prop_assert!(bytes.len() <= MAX_MESSAGE_SIZE);
        prop_assert_eq!(decode_request(&bytes), Ok((id, req)));
    }

    #[test]
    fn truncations_are_errors(req in request()) {
        let bytes = encode_request(9, &req).unwrap();
        for cut in 0..bytes.len() {
            prop_assert!(decode_request(&bytes[..cut]).is_err());
        }
    }
}
