//! Property tests: the decoders are total and the codec round-trips.

mod common;

use common::*;
use dsoftbus::announce::{Announce, MAX_ANNOUNCE_LEN};
use dsoftbus::connection::Connection;
use dsoftbus::frame::{encode_frame, FrameDecoder};
use dsoftbus::handshake::{Initiator, Responder};
use dsoftbus::session::Message;
use dsoftbus::{DeviceId, PublicKey, ServiceName};
use proptest::prelude::*;

fn device_id() -> impl Strategy<Value = DeviceId> {
    "\\PC{1,64}".prop_filter_map("id rules", |s| DeviceId::new(&s).ok())
}

fn service() -> impl Strategy<Value = ServiceName> {
    "[a-z0-9._-]{1,64}".prop_filter_map("service rules", |s| ServiceName::new(&s).ok())
}

fn announce() -> impl Strategy<Value = Announce> {
    (
        device_id(),
        1u16..,
        any::<[u8; 32]>(),
        proptest::collection::vec(service(), 0..=16),
    )
        .prop_filter_map("valid announce", |(id, port, key, svcs)| {
            Announce::new(id, port, PublicKey::from_bytes(key), svcs).ok()
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn announce_decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let r = Announce::decode(&bytes);
        if bytes.len() > MAX_ANNOUNCE_LEN {
            prop_assert_eq!(r, Err(dsoftbus::AnnounceError::Oversized));
        }
    }

    #[test]
    fn announce_roundtrip(a in announce()) {
        let bytes = a.encode();
        prop_assert!(bytes.len() <= MAX_ANNOUNCE_LEN);
        prop_assert_eq!(bytes.len(), a.encoded_len());
        prop_assert_eq!(Announce::decode(&bytes), Ok(a));
    }

    /// Mutating a valid encoding never panics, and anything that still decodes
    /// re-encodes to exactly the same bytes (one encoding per packet).
    #[test]
    fn announce_mutations_are_canonical(a in announce(), idx in any::<usize>(), val in any::<u8>(), cut in any::<usize>()) {
        let mut bytes = a.encode();
        let i = idx % bytes.len();
        bytes[i] = val;
        bytes.truncate(bytes.len() - cut % 3);
        if let Ok(d) = Announce::decode(&bytes) {
            prop_assert_eq!(d.encode(), bytes);
        }
    }

    #[test]
    fn frame_decoder_never_panics(chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..700), 0..8), max in 0usize..70000) {
        let mut d = FrameDecoder::new(max);
        for c in &chunks {
            let _ = d.feed_partial(c);
            while let Ok(Some(f)) = d.next_frame() {
                prop_assert!(!f.is_empty() && f.len() <= d.max_frame_len());
            }
            prop_assert!(d.buffered() <= d.capacity());
        }
    }

    #[test]
    fn frame_roundtrip(payloads in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 1..300), 1..6), split in 1usize..50) {
        let mut wire = Vec::new();
        for p in &payloads {
            encode_frame(p, &mut wire).unwrap();
        }
        let mut d = FrameDecoder::new(65535);
        let mut got = Vec::new();
        for c in wire.chunks(split) {
            d.feed(c).unwrap();
            while let Some(f) = d.next_frame().unwrap() {
                got.push(f);
            }
        }
        prop_assert_eq!(got, payloads);
    }

}

// Each case below runs real X25519 handshakes (slow in debug builds), so they
// get fewer cases; each case still throws several hostile frames.
proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// An established session fed arbitrary frames — random bytes, or a real
    /// sealed frame with bits flipped / cut — never panics, and never yields a
    /// message other than the one that was sealed.
    #[test]
    fn session_open_never_panics(
        junk in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..200), 1..6),
        flip in any::<usize>(),
        cut in 0usize..40,
    ) {
        let mut a = Node::new("node-a", 1, 15, 34567);
        let mut b = Node::new("node-b", 2, 16, 34568);
        a.hear(&b, t(0));
        b.hear(&a, t(0));
        let mut r = rng(3);
        let (init, f1) = Initiator::start(&a.local, a.target("node-b"), &mut r, t(0), &cfg()).unwrap();
        let (resp, f2) = Responder::accept(&b.local, &f1, &mut r, t(0), &cfg()).unwrap();
        let (mut sa, f3) = init.read_frame2(&f2, t(0)).unwrap();
        let mut sb = resp.read_frame3(&f3, t(0), &b.table).unwrap();
        let msg = Message::Data(b"payload".to_vec());
        let mut sealed = sa.seal(&msg).unwrap();
        let bit = flip % (sealed.len() * 8 + 1);
        if bit < sealed.len() * 8 {
            sealed[bit / 8] ^= 1 << (bit % 8);
        }
        sealed.truncate(sealed.len().saturating_sub(cut % 3));
        match sb.open(&sealed) {
            Ok(m) => prop_assert_eq!(m, msg),
            Err(_) => prop_assert!(sb.is_closed()),
        }
        for f in &junk {
            prop_assert!(sb.open(f).is_err());
        }
    }

    /// Arbitrary bytes into a connection in every phase never panic and never
    /// establish anything.
    #[test]
    fn connection_input_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let mut a = Node::new("node-a", 1, 15, 34567);
        let mut b = Node::new("node-b", 2, 16, 34568);
        a.hear(&b, t(0));
        b.hear(&a, t(0));
        let mut r = rng(4);
        let mut resp = Connection::accept(&b.local, &mut r, t(0), cfg());
        let _ = resp.handle_input(&bytes, t(1), &b.table);
        prop_assert!(!resp.is_established());
        let mut init = Connection::connect(&a.local, a.target("node-b"), &mut r, t(0), cfg()).unwrap();
        let _ = init.handle_input(&bytes, t(1), &a.table);
        prop_assert!(!init.is_established());
        // After a real handshake, junk is refused without panicking.
        let mut ca = Connection::connect(&a.local, a.target("node-b"), &mut r, t(0), cfg()).unwrap();
        let mut cb = Connection::accept(&b.local, &mut r, t(0), cfg());
        shuttle(&mut ca, &a.table, &mut cb, &b.table, t(1));
        prop_assert!(cb.is_established());
        let _ = cb.handle_input(&bytes, t(2), &b.table);
        while let Some(e) = cb.poll_event() {
            prop_assert!(!matches!(e, dsoftbus::Event::Data(_)) || bytes.is_empty());
        }
    }
}

// Stateful properties: the peer table, the rate limiter and the connection
// state machine under arbitrary sequences (the CI-side equivalents of the
// cargo-fuzz targets in userspace/dsoftbus/fuzz/).
proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Any sequence of datagrams (valid announces, mutated ones, junk) from
    /// any sources at any times keeps the table within its bounds and never
    /// panics; whatever it accepts is a decodable announce it now holds.
    #[test]
    fn peer_table_bounded_under_arbitrary_datagrams(
        ops in proptest::collection::vec(
            (announce(), any::<u8>(), 0u64..5_000, any::<u16>(), any::<u8>(), 0u8..4),
            1..64,
        ),
    ) {
        let mut table = dsoftbus::PeerTable::new(
            id("self"),
            PublicKey::from_bytes([9; 32]),
            dsoftbus::PeerTableConfig::default(),
        );
        let mut now = 0u64;
        for (a, src, dt, idx, val, kind) in ops {
            now += dt;
            let mut bytes = a.encode();
            match kind {
                0 => {}
                1 => {
                    let i = usize::from(idx) % bytes.len();
                    bytes[i] ^= val | 1;
                }
                2 => bytes.truncate(usize::from(idx) % bytes.len()),
                _ => bytes = vec![val; usize::from(idx) % 1500],
            }
            let out = table.observe_datagram(addr(src % 8, 37020), &bytes, t(now));
            prop_assert!(table.len() <= 16);
            if out.is_accepted() {
                // Whatever was accepted decodes and is in the table.
                let d = Announce::decode(&bytes).unwrap();
                prop_assert!(table.get(d.device_id()).is_some());
            }
        }
    }

    /// Token buckets never admit more than burst + rate × elapsed, per
    /// source and globally, and the source table never exceeds its bound.
    #[test]
    fn rate_limiter_never_exceeds_its_budget(
        ops in proptest::collection::vec((0u8..40, 0u64..300), 1..400),
        rate in 1u32..20, burst in 1u32..20, grate in 1u32..50, gburst in 1u32..50, max in 1usize..16,
    ) {
        use dsoftbus::ratelimit::{HandshakeLimiter, RateLimitConfig};
        let cfg = RateLimitConfig {
            per_source_rate: rate,
            per_source_burst: burst,
            global_rate: grate,
            global_burst: gburst,
            max_sources: max,
        };
        let mut l = HandshakeLimiter::new(cfg, t(0));
        let mut now = 0u64;
        let mut admitted = 0u64;
        for (src, dt) in ops {
            now += dt;
            let ip = std::net::IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, src));
            if l.check(ip, t(now)).is_ok() {
                admitted += 1;
            }
            prop_assert!(l.tracked_sources() <= max);
            let budget = u64::from(gburst) + u64::from(grate) * now / 1000 + 1;
            prop_assert!(admitted <= budget, "admitted {} > global budget {}", admitted, budget);
        }
        let s = l.stats();
        prop_assert_eq!(s.admitted, admitted);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    /// The connection state machine is chunking-invariant: a real exchange
    /// (handshake, data, ping, close) delivered in arbitrary pieces gives
    /// exactly the events it gives when delivered whole.
    #[test]
    fn connection_is_chunking_invariant(
        cuts in proptest::collection::vec(1usize..300, 1..40),
        data in proptest::collection::vec(any::<u8>(), 1..3000),
    ) {
        let mut a = Node::new("node-a", 1, 15, 34567);
        let mut b = Node::new("node-b", 2, 16, 34568);
        a.hear(&b, t(0));
        b.hear(&a, t(0));
        let mut r = rng(5);
        let mut ca = Connection::connect(&a.local, a.target("node-b"), &mut r, t(0), cfg()).unwrap();
        let mut cb = Connection::accept(&b.local, &mut r, t(0), cfg());
        // Frame 1 whole; frame 2 whole; then frame 3 + data + ping + close
        // from node-a as one byte string delivered in the chosen pieces.
        cb.handle_input(&ca.take_transmit(), t(0), &b.table).unwrap();
        ca.handle_input(&cb.take_transmit(), t(0), &a.table).unwrap();
        ca.send_data(&data).unwrap();
        ca.send_ping(9).unwrap();
        ca.close().unwrap();
        let wire = ca.take_transmit();
        let mut off = 0;
        let mut i = 0;
        let mut events = Vec::new();
        while off < wire.len() {
            let end = (off + cuts[i % cuts.len()]).min(wire.len());
            i += 1;
            let mut piece = &wire[off..end];
            while !piece.is_empty() {
                let n = cb.handle_input(piece, t(1), &b.table).unwrap();
                piece = &piece[n..];
                while let Some(e) = cb.poll_event() {
                    events.push(e);
                }
            }
            off = end;
        }
        prop_assert_eq!(
            events,
            vec![
                dsoftbus::Event::Established { peer: id("node-a") },
                dsoftbus::Event::Data(data),
                dsoftbus::Event::Ping(9),
                dsoftbus::Event::Closed,
            ]
        );
        prop_assert!(cb.is_closed());
    }
}

// ---------------------------------------------------------------------------
// Remote calls (dsoftbus::rpc)
// ---------------------------------------------------------------------------

use dsoftbus::rpc;

/// One step of an arbitrary interleaving against an `RpcServer`.
#[derive(Clone, Debug)]
enum RpcOp {
    /// A request from peer `peer` (or unauthenticated when `auth` is false).
    Request {
        peer: u8,
        call_id: u32,
        len: usize,
        timeout_ms: u32,
        auth: bool,
    },
    /// The local service answers call `call_id` of `peer`.
    Complete { peer: u8, call_id: u32 },
    /// The clock advances and expired calls are collected.
    Advance(u64),
    /// The session with `peer` ends.
    Gone(u8),
}

fn rpc_op() -> impl Strategy<Value = RpcOp> {
    prop_oneof![
        4 => (0u8..4, 0u32..6, 0usize..64, 1u32..500, proptest::bool::weighted(0.9)).prop_map(
            |(peer, call_id, len, timeout_ms, auth)| RpcOp::Request { peer, call_id, len, timeout_ms, auth }
        ),
        2 => (0u8..4, 0u32..6).prop_map(|(peer, call_id)| RpcOp::Complete { peer, call_id }),
        1 => (0u64..300).prop_map(RpcOp::Advance),
        1 => (0u8..4).prop_map(RpcOp::Gone),
    ]
}

fn peer_name(i: u8) -> DeviceId {
    DeviceId::new(&format!("peer-{i}")).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// The RPC decoder is total, and anything it accepts re-encodes to the
    /// same bytes (one encoding per message).
    #[test]
    fn rpc_decode_is_total(mut bytes in proptest::collection::vec(any::<u8>(), 0..200), rpc_prefix in any::<bool>(), op in 0u8..4) {
        if rpc_prefix && bytes.len() >= 3 {
            bytes[0] = rpc::KIND_RPC;
            bytes[1] = rpc::RPC_VERSION;
            bytes[2] = op;
        }
        match rpc::decode(&bytes) {
            Ok(rpc::Message::Request(r)) => prop_assert_eq!(r.encode(), bytes),
            Ok(rpc::Message::Reply(r)) => prop_assert_eq!(r.encode(), bytes),
            Err(rpc::RpcError::NotRpc) => prop_assert!(bytes.first() != Some(&rpc::KIND_RPC)),
            Err(_) => {}
        }
    }

    /// The ACL parser is total; an accepted text prints canonically and
    /// parses back to the same ACL; an empty one allows nothing.
    #[test]
    fn rpc_acl_parse_is_total(text in prop_oneof![
        "([a-c*]{1,3}:[a-c*:]{1,3}[ ,\\n]{1,2}){0,6}",
        "[a-c*:, \\n\\PC]{0,40}",
    ]) {
        if let Ok(acl) = rpc::Acl::parse(&text) {
            prop_assert!(acl.len() <= rpc::MAX_ACL_ENTRIES);
            prop_assert_eq!(rpc::Acl::parse(&acl.to_string()), Ok(acl.clone()));
            if acl.is_empty() {
                let (p, s) = (peer_name(0), ServiceName::new("echo").unwrap());
                prop_assert!(!acl.allows(&p, &s));
            }
        }
    }

    /// Valid requests and replies round-trip, and every cut of one is refused.
    #[test]
    fn rpc_roundtrip(call_id in any::<u32>(), timeout_ms in 1u32.., svc in service(), payload in proptest::collection::vec(any::<u8>(), 0..100), status in 0u8..8) {
        let req = rpc::Request { call_id, timeout_ms, service: svc, payload: payload.clone() };
        let bytes = req.encode();
        prop_assert_eq!(rpc::decode(&bytes), Ok(rpc::Message::Request(req)));
        let hdr = rpc::REQUEST_HEADER_LEN + bytes[rpc::REQUEST_HEADER_LEN - 1] as usize;
        for cut in 0..hdr {
            prop_assert!(rpc::decode(&bytes[..cut]).is_err());
        }
        let status = rpc::Status::from_u8(status).unwrap();
        let payload = if status == rpc::Status::Ok { payload } else { vec![] };
        let rep = rpc::Reply { call_id, status, payload };
        prop_assert_eq!(rpc::decode(&rep.encode()), Ok(rpc::Message::Reply(rep)));
    }

    /// Under any interleaving of requests (authenticated or not, duplicate
    /// ids, oversized), answers, clock advances and lost sessions, the calls
    /// in flight never exceed the per-peer or the total bound, every request
    /// yields exactly one audit event, and every allowed call is answered at
    /// most once.
    #[test]
    fn rpc_in_flight_never_exceeds_bound(
        per_peer in 1usize..4,
        total in 1usize..8,
        ops in proptest::collection::vec(rpc_op(), 1..200),
    ) {
        let cfg = rpc::RpcServerConfig {
            max_in_flight_per_peer: per_peer,
            max_in_flight_total: total,
            max_request_payload: 48,
            ..rpc::RpcServerConfig::default()
        };
        let acl = rpc::Acl::parse("peer-0:* peer-1:* peer-2:echo").unwrap();
        let mut server = rpc::RpcServer::new(cfg, acl);
        let mut client = rpc::RpcClient::new(rpc::RpcClientConfig { max_in_flight: total, ..Default::default() });
        let echo = ServiceName::new("echo").unwrap();
        let mut now = 0u64;
        let mut requests = 0u64;
        let mut audits = 0u64;
        let mut answered = std::collections::BTreeSet::new();
        for op in ops {
            match op {
                RpcOp::Request { peer, call_id, len, timeout_ms, auth } => {
                    let p = peer_name(peer);
                    let origin = if auth { rpc::Origin::Authenticated(&p) } else { rpc::Origin::Unauthenticated };
                    let req = rpc::Request { call_id, timeout_ms, service: echo.clone(), payload: vec![0; len] };
                    let h = server.handle_request(origin, req, t(now));
                    requests += 1;
                    audits += 1;
                    prop_assert_eq!(h.audit.call_id, call_id);
                    if let rpc::ServerAction::Dispatch(d) = h.action {
                        prop_assert!(auth && peer <= 2 && len <= 48);
                        answered.remove(&(peer, d.call_id));
                    }
                    // The client under the same pressure.
                    let _ = client.call(&p, &echo, &[], timeout_ms, t(now));
                }
                RpcOp::Complete { peer, call_id } => {
                    let p = peer_name(peer);
                    if server.complete(&p, call_id, rpc::Status::Ok, b"ok", t(now)).is_some() {
                        prop_assert!(answered.insert((peer, call_id)), "answered twice");
                    }
                    let rep = rpc::Reply { call_id, status: rpc::Status::Ok, payload: vec![] };
                    let _ = client.handle_reply(&p, &rep);
                }
                RpcOp::Advance(ms) => {
                    now += ms;
                    for e in server.handle_timeout(t(now)) {
                        prop_assert!(e.reply.len() == rpc::REPLY_HEADER_LEN);
                    }
                    for c in client.handle_timeout(t(now)) {
                        prop_assert_eq!(c.result, Err(rpc::Status::Deadline));
                    }
                }
                RpcOp::Gone(peer) => {
                    server.peer_gone(&peer_name(peer));
                    client.peer_gone(&peer_name(peer));
                }
            }
            prop_assert!(server.in_flight_total() <= total);
            for i in 0..4 {
                prop_assert!(server.in_flight(&peer_name(i)) <= per_peer);
            }
            prop_assert!(client.in_flight() <= total);
        }
        let s = server.stats();
        prop_assert_eq!(audits, requests);
        prop_assert_eq!(s.allowed + s.denied, requests);
    }
}
