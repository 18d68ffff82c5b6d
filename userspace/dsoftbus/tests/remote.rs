//! Remote service calls (`dsoftbus::rpc`): the security tests named by
//! issue 13 (`cargo test -p dsoftbus -- reject_remote --nocapture`) and the
//! behaviour tests of the client and server (`-- remote_`).

mod common;

use common::*;
use dsoftbus::connection::{Connection, Event};
use dsoftbus::node::{suppressed_suffix, LogLimiter, LogLimiterConfig};
use dsoftbus::rpc::*;
use dsoftbus::{DeviceId, ServiceName};

fn svc(s: &str) -> ServiceName {
    ServiceName::new(s).unwrap()
}

fn request(call_id: u32, service: &str, len: usize) -> Request {
    Request {
        call_id,
        timeout_ms: 1000,
        service: svc(service),
        payload: vec![0xab; len],
    }
}

fn reply_status(action: &ServerAction) -> Option<Status> {
    match action {
        ServerAction::Reply(bytes) => match decode(bytes) {
            Ok(Message::Reply(r)) => Some(r.status),
            other => panic!("refusal is not a reply: {other:?}"),
        },
        _ => None,
    }
}

/// node-a and node-b with an established session (a dialled b).
fn established() -> (Node, Node, Connection, Connection) {
    let mut a = Node::new("node-a", 1, 15, 34567);
    let mut b = Node::new("node-b", 2, 16, 34568);
    a.hear(&b, t(0));
    b.hear(&a, t(0));
    let mut r = rng(9);
    let mut ca = Connection::connect(&a.local, a.target("node-b"), &mut r, t(0), cfg()).unwrap();
    let mut cb = Connection::accept(&b.local, &mut r, t(0), cfg());
    shuttle(&mut ca, &a.table, &mut cb, &b.table, t(1));
    // The initiator knows it was accepted once the responder speaks.
    ca.send_ping(1).unwrap();
    shuttle(&mut ca, &a.table, &mut cb, &b.table, t(1));
    while ca.poll_event().is_some() {}
    while cb.poll_event().is_some() {}
    assert!(ca.is_established() && cb.is_established());
    (a, b, ca, cb)
}

/// The data messages among `events`.
fn data_events(events: Vec<Event>) -> Vec<Vec<u8>> {
    events
        .into_iter()
        .filter_map(|e| match e {
            Event::Data(d) => Some(d),
            _ => None,
        })
        .collect()
}

/// A call that does not come from an established, identity-bound session
/// is refused with `unauthenticated` and audited — even when the ACL would
/// allow the id the sender claims. Nothing is dispatched.
#[test]
fn test_reject_remote_unauthenticated_remote_call() {
    let acl = Acl::parse("node-a:echo *:time").unwrap();
    let mut server = RpcServer::new(RpcServerConfig::default(), acl);
    let a = Node::new("node-a", 1, 15, 34567);
    let mut b = Node::new("node-b", 2, 16, 34568);
    let mallory = Node::new("node-a", 3, 66, 40000);
    b.hear(&a, t(0));
    let mut r = rng(11);

    // 1. Mid-handshake: node-b has only seen frame 1 (no identity yet).
    let mut a_view = Node::new("node-a", 1, 15, 34567);
    a_view.hear(&b, t(0));
    let mut ca =
        Connection::connect(&a.local, a_view.target("node-b"), &mut r, t(0), cfg()).unwrap();
    let mut cb = Connection::accept(&b.local, &mut r, t(0), cfg());
    cb.handle_input(&ca.take_transmit(), t(1), &b.table)
        .unwrap();
    assert!(!cb.is_established());
    assert_eq!(Origin::of(&cb), Origin::Unauthenticated);

    // 2. Handshake done but identity binding refused (Mallory claims node-a
    //    with her own key): the claimed id is known, the origin is not.
    let mut cm =
        Connection::connect(&mallory.local, a_view.target("node-b"), &mut r, t(0), cfg()).unwrap();
    let mut cb2 = Connection::accept(&b.local, &mut r, t(0), cfg());
    shuttle(&mut cm, &mallory.table, &mut cb2, &b.table, t(2));
    assert_eq!(cb2.peer_hint().map(DeviceId::as_str), Some("node-a"));
    assert_eq!(Origin::of(&cb2), Origin::Unauthenticated);

    for (conn, name) in [(&cb, "mid-handshake"), (&cb2, "binding refused")] {
        for (i, service) in ["echo", "time"].into_iter().enumerate() {
            let h =
                server.handle_request(Origin::of(conn), request(i as u32 + 1, service, 4), t(3));
            println!("{name}: {}", h.audit);
            assert_eq!(
                h.audit.peer, None,
                "an unverified claim is never the audited peer"
            );
            assert_eq!(h.audit.service.as_str(), service);
            assert_eq!(
                h.audit.verdict,
                Verdict::Denied(DenyReason::Unauthenticated)
            );
            assert_eq!(
                h.audit.to_string(),
                format!("remote call peer=? service={service} denied (unauthenticated)")
            );
            assert_eq!(reply_status(&h.action), Some(Status::Unauthenticated));
        }
    }
    // No call was admitted, and such a connection cannot carry a reply.
    assert_eq!(server.in_flight_total(), 0);
    assert_eq!(server.stats().allowed, 0);
    assert_eq!(server.stats().denied, 4);
    assert!(cb.send_data(b"x").is_err());
    assert!(cb2.send_data(b"x").is_err());
    println!("dsoftbusd: remote proxy denied (unauthenticated)");

    // Sanity: the same request on the established session is allowed.
    let (_, _, _ca, cb3) = established();
    let h = server.handle_request(Origin::of(&cb3), request(9, "echo", 4), t(3));
    assert!(h.audit.is_allowed(), "{}", h.audit);
    assert!(matches!(h.action, ServerAction::Dispatch(_)));
}

/// Deny by default: a service not listed for the caller is refused
/// `denied` end to end (real session, real client), before any size or
/// capacity check, and the refusal tells the caller nothing more.
#[test]
fn test_reject_remote_disallowed_service_proxy() {
    let (a, b, mut ca, mut cb) = established();
    let acl = Acl::parse("node-a:echo, node-c:*").unwrap();
    let mut server = RpcServer::new(RpcServerConfig::default(), acl);
    let mut client = RpcClient::new(RpcClientConfig::default());
    let node_b = b.local.id().clone();

    for (service, expect) in [("log", Err(Status::Denied)), ("echo", Ok(b"pong".to_vec()))] {
        let out = client
            .call(&node_b, &svc(service), b"ping", 500, t(10))
            .unwrap();
        ca.send_data(&out.bytes).unwrap();
        let (_, eb) = shuttle(&mut ca, &a.table, &mut cb, &b.table, t(11));
        let got = data_events(eb);
        assert_eq!(got.len(), 1);
        let Ok(Message::Request(req)) = decode(&got[0]) else {
            panic!("request")
        };
        let h = server.handle_request(Origin::of(&cb), req, t(11));
        println!("dsoftbusd: {}", h.audit);
        let bytes = match h.action {
            ServerAction::Dispatch(d) => {
                assert_eq!(d.service.as_str(), "echo");
                assert_eq!(d.payload, b"ping");
                server
                    .complete(&d.peer, d.call_id, Status::Ok, b"pong", t(12))
                    .unwrap()
            }
            ServerAction::Reply(bytes) => {
                println!("dsoftbusd: remote proxy denied (service={service})");
                bytes
            }
            ServerAction::Drop => panic!("no answer"),
        };
        cb.send_data(&bytes).unwrap();
        let (ea, _) = shuttle(&mut ca, &a.table, &mut cb, &b.table, t(12));
        let got = data_events(ea);
        let Ok(Message::Reply(rep)) = decode(&got[0]) else {
            panic!("reply")
        };
        let done = client.handle_reply(&node_b, &rep).unwrap();
        assert_eq!(done.service.as_str(), service);
        assert_eq!(done.result, expect, "{service}");
    }

    // The ACL is judged before size and capacity: a denied peer cannot
    // probe the bounds (its oversized call is `denied`, not `too-large`).
    let node_a = a.local.id().clone();
    let h = server.handle_request(
        Origin::Authenticated(&node_a),
        request(50, "log", 100_000),
        t(13),
    );
    assert_eq!(h.audit.verdict, Verdict::Denied(DenyReason::Acl));
    assert_eq!(reply_status(&h.action), Some(Status::Denied));

    // Peers not listed are denied everything; `node-c:*` allows node-c all.
    let stranger = id("node-z");
    let c = id("node-c");
    assert!(!server.acl().allows(&stranger, &svc("echo")));
    assert!(server.acl().allows(&c, &svc("anything")));
    let h = server.handle_request(
        Origin::Authenticated(&stranger),
        request(1, "echo", 1),
        t(13),
    );
    assert_eq!(h.audit.verdict, Verdict::Denied(DenyReason::Acl));
    // The empty ACL denies everything; `*:*` is refused, not "allow all".
    let mut closed = RpcServer::new(RpcServerConfig::default(), Acl::deny_all());
    let h = closed.handle_request(Origin::Authenticated(&node_a), request(1, "echo", 1), t(13));
    assert_eq!(reply_status(&h.action), Some(Status::Denied));
    assert_eq!(Acl::parse("*:*"), Err(AclError::WildcardBoth { entry: 1 }));
    assert_eq!(Acl::parse(""), Ok(Acl::deny_all()));
    assert_eq!(server.in_flight_total(), 0);
}

/// Requests over the server's bound are refused `too-large` (exactly the
/// bound passes); the client refuses to send them; a message over one data
/// message is not even RPC-decodable; an oversized answer from the local
/// service is replaced by `too-large`.
#[test]
fn test_reject_remote_oversized_remote_request() {
    let cfg = RpcServerConfig::default();
    let max = cfg.max_request_payload;
    let mut server = RpcServer::new(cfg, Acl::parse("node-a:echo").unwrap());
    let a = id("node-a");

    let h = server.handle_request(Origin::Authenticated(&a), request(1, "echo", max + 1), t(0));
    println!("dsoftbusd: {} ({} bytes)", h.audit, max + 1);
    assert_eq!(h.audit.verdict, Verdict::Denied(DenyReason::TooLarge));
    assert_eq!(reply_status(&h.action), Some(Status::TooLarge));
    assert_eq!(server.in_flight(&a), 0);

    let h = server.handle_request(Origin::Authenticated(&a), request(2, "echo", max), t(0));
    let ServerAction::Dispatch(d) = h.action else {
        panic!("bound itself passes")
    };
    assert_eq!(d.payload.len(), max);

    // The answer is bounded too.
    let big = vec![0u8; cfg.max_reply_payload + 1];
    let r = server.complete(&a, 2, Status::Ok, &big, t(1)).unwrap();
    let Ok(Message::Reply(rep)) = decode(&r) else {
        panic!("reply")
    };
    assert_eq!((rep.status, rep.payload.len()), (Status::TooLarge, 0));
    assert_eq!(server.stats().replies_too_large, 1);

    // Client side: refused locally, nothing sent.
    let mut client = RpcClient::new(RpcClientConfig::default());
    let too_big = vec![0u8; RpcClientConfig::default().max_request_payload + 1];
    assert_eq!(
        client.call(&a, &svc("echo"), &too_big, 100, t(0)),
        Err(CallError::TooLarge)
    );
    assert_eq!(client.in_flight(), 0);
    // And a client reply bound: an oversized reply completes `too-large`.
    let out = client.call(&a, &svc("echo"), b"", 100, t(0)).unwrap();
    let rep = Reply {
        call_id: out.call_id,
        status: Status::Ok,
        payload: vec![0; 8193],
    };
    assert_eq!(
        client.handle_reply(&a, &rep).unwrap().result,
        Err(Status::TooLarge)
    );

    // Wire: more than one data message is refused before parsing.
    let mut huge = request(3, "echo", 0).encode();
    huge.resize(MAX_RPC_LEN + 1, 0);
    assert_eq!(decode(&huge), Err(RpcError::Oversized));
    let mut fits = request(3, "echo", 0).encode();
    fits.resize(MAX_RPC_LEN, 0);
    assert!(matches!(decode(&fits), Ok(Message::Request(_))));
}

/// Every call — allowed or denied for any reason — yields exactly one audit
/// event naming the peer and the service, in the marker format the daemons
/// print through their log limiter.
#[test]
fn test_reject_remote_audit_remote_call_logged() {
    let cfg = RpcServerConfig {
        max_in_flight_per_peer: 2,
        ..RpcServerConfig::default()
    };
    let mut server = RpcServer::new(cfg, Acl::parse("node-a:echo node-b:*").unwrap());
    let (a, b) = (id("node-a"), id("node-b"));
    let big = cfg.max_request_payload + 1;
    // (origin, call id, service, payload length, expected verdict)
    let calls: Vec<(Option<&DeviceId>, u32, &str, usize, Verdict)> = vec![
        (Some(&a), 1, "echo", 3, Verdict::Allowed),
        (Some(&a), 2, "log", 3, Verdict::Denied(DenyReason::Acl)),
        (
            Some(&a),
            3,
            "echo",
            big,
            Verdict::Denied(DenyReason::TooLarge),
        ),
        (
            Some(&a),
            1,
            "echo",
            3,
            Verdict::Denied(DenyReason::DuplicateId),
        ),
        (Some(&a), 4, "echo", 3, Verdict::Allowed),
        (Some(&a), 5, "echo", 3, Verdict::Denied(DenyReason::Busy)),
        (
            None,
            6,
            "echo",
            3,
            Verdict::Denied(DenyReason::Unauthenticated),
        ),
        (Some(&b), 1, "time", 3, Verdict::Allowed),
    ];
    let mut limiter = LogLimiter::new(LogLimiterConfig::default());
    let mut events = Vec::new();
    let mut printed = 0;
    for (peer, call_id, service, len, verdict) in &calls {
        let origin = peer.map_or(Origin::Unauthenticated, Origin::Authenticated);
        let h = server.handle_request(origin, request(*call_id, service, *len), t(0));
        assert_eq!(h.audit.peer.as_ref(), *peer);
        assert_eq!(h.audit.service.as_str(), *service);
        assert_eq!(h.audit.call_id, *call_id);
        assert_eq!(h.audit.verdict, *verdict, "call {call_id} {service}");
        let line = h.audit.to_string();
        let who = peer.map_or("?", |p| p.as_str());
        assert!(
            line.starts_with(&format!("remote call peer={who} service={service} ")),
            "{line}"
        );
        assert!(
            line.ends_with(" allowed") || line.contains(" denied ("),
            "{line}"
        );
        if let Some(n) = limiter.allow(h.audit.log_kind(), t(0)) {
            println!("dsoftbusd: {line}{}", suppressed_suffix(n));
            printed += 1;
        }
        events.push(h.audit);
    }
    // Exactly one event per call, and the allowed/denied counters agree.
    assert_eq!(events.len(), calls.len());
    let allowed = events.iter().filter(|e| e.is_allowed()).count() as u64;
    assert_eq!(server.stats().allowed, allowed);
    assert_eq!(server.stats().denied, calls.len() as u64 - allowed);
    // Both kinds fit the limiter's default burst (5): all 8 were printed.
    assert_eq!(printed, calls.len());
    // Completing or expiring a call makes no second audit event (no API
    // for it): completion yields only the reply bytes.
    assert!(server.complete(&a, 1, Status::Ok, b"x", t(1)).is_some());
    assert!(server.complete(&a, 1, Status::Ok, b"x", t(1)).is_none());
}

// ---------------------------------------------------------------------------
// Behaviour
// ---------------------------------------------------------------------------

/// Server deadlines: the request's timeout, clamped, from arrival on the
/// caller's clock; an expired call answers `deadline` once and frees its
/// slot; a late answer from the service is dropped.
#[test]
fn remote_server_deadline_on_callers_clock() {
    let cfg = RpcServerConfig {
        max_deadline_ms: 2000,
        ..RpcServerConfig::default()
    };
    let mut server = RpcServer::new(cfg, Acl::parse("*:echo").unwrap());
    let a = id("node-a");
    let mut req = request(7, "echo", 1);
    req.timeout_ms = 60_000; // clamped to 2 s
    let h = server.handle_request(Origin::Authenticated(&a), req, t(1000));
    let ServerAction::Dispatch(d) = h.action else {
        panic!()
    };
    assert_eq!(d.deadline, t(3000));
    assert_eq!(server.poll_timeout(), Some(t(3000)));
    assert!(server.handle_timeout(t(2999)).is_empty());
    let exp = server.handle_timeout(t(3000));
    assert_eq!(exp.len(), 1);
    assert_eq!((exp[0].peer.as_str(), exp[0].call_id), ("node-a", 7));
    let Ok(Message::Reply(r)) = decode(&exp[0].reply) else {
        panic!()
    };
    assert_eq!(r.status, Status::Deadline);
    assert_eq!(server.in_flight(&a), 0);
    assert!(server
        .complete(&a, 7, Status::Ok, b"late", t(3001))
        .is_none());
    // An answer at the deadline but before handle_timeout ran: `deadline`.
    let h = server.handle_request(Origin::Authenticated(&a), request(8, "echo", 1), t(0));
    assert!(matches!(h.action, ServerAction::Dispatch(_)));
    let r = server.complete(&a, 8, Status::Ok, b"x", t(1000)).unwrap();
    assert_eq!(
        decode(&r),
        Ok(Message::Reply(Reply {
            call_id: 8,
            status: Status::Deadline,
            payload: vec![]
        }))
    );
    // A peer that goes away takes its calls with it.
    server.handle_request(Origin::Authenticated(&a), request(9, "echo", 1), t(0));
    assert_eq!(server.peer_gone(&a), 1);
    assert_eq!(server.in_flight_total(), 0);
}

/// Client: ids are matched per peer (a reply from another peer with the
/// same id is ignored), the client deadline fires on the caller's clock,
/// late replies are counted and dropped, a lost session fails its calls.
#[test]
fn remote_client_matches_replies_and_times_out() {
    let mut client = RpcClient::new(RpcClientConfig {
        max_in_flight: 2,
        ..RpcClientConfig::default()
    });
    let (a, b) = (id("node-a"), id("node-b"));
    let c1 = client.call(&a, &svc("echo"), b"1", 100, t(0)).unwrap();
    let c2 = client.call(&b, &svc("echo"), b"2", 300, t(0)).unwrap();
    assert_ne!(c1.call_id, c2.call_id);
    assert_eq!(
        client.call(&a, &svc("echo"), b"3", 100, t(0)),
        Err(CallError::Busy)
    );
    assert_eq!(
        client.call(&a, &svc("echo"), b"3", 0, t(0)),
        Err(CallError::ZeroTimeout)
    );
    // Reply to c1's id, but from node-b: not c1's.
    let wrong = Reply {
        call_id: c1.call_id,
        status: Status::Ok,
        payload: vec![],
    };
    assert_eq!(client.handle_reply(&b, &wrong), None);
    assert_eq!(client.unmatched_replies(), 1);
    assert_eq!(client.poll_timeout(), Some(t(100)));
    let done = client.handle_timeout(t(100));
    assert_eq!(done.len(), 1);
    assert_eq!(
        (done[0].call_id, &done[0].result),
        (c1.call_id, &Err(Status::Deadline))
    );
    // The real reply comes late: dropped.
    let late = Reply {
        call_id: c1.call_id,
        status: Status::Ok,
        payload: b"1".to_vec(),
    };
    assert_eq!(client.handle_reply(&a, &late), None);
    // A call the caller abandons frees its slot; its reply is unmatched.
    let c3 = client.call(&a, &svc("echo"), b"3", 100, t(200)).unwrap();
    assert!(client.cancel(c3.call_id));
    assert!(!client.cancel(c3.call_id));
    let rep = Reply {
        call_id: c3.call_id,
        status: Status::Ok,
        payload: vec![],
    };
    assert_eq!(client.handle_reply(&a, &rep), None);
    assert_eq!(client.unmatched_replies(), 3);
    let gone = client.peer_gone(&b);
    assert_eq!(gone.len(), 1);
    assert_eq!(gone[0].result, Err(Status::Unavailable));
    assert_eq!(client.in_flight(), 0);
}

/// ACL text: commas and whitespace separate entries, the first `:` splits
/// peer from service, bad entries refuse the whole list (fail closed).
#[test]
fn remote_acl_parse_rules() {
    let acl = Acl::parse(" node-a:echo,node-a:echo\nnode-b:*  *:time ,").unwrap();
    assert_eq!(acl.len(), 3);
    assert_eq!(acl.to_string(), "node-a:echo,node-b:*,*:time");
    assert_eq!(Acl::parse(&acl.to_string()), Ok(acl.clone()));
    assert!(acl.allows(&id("node-a"), &svc("echo")));
    assert!(acl.allows(&id("node-a"), &svc("time")));
    assert!(!acl.allows(&id("node-a"), &svc("log")));
    assert!(acl.allows(&id("node-b"), &svc("log")));
    // The service may contain ':' (split at the first one).
    assert!(Acl::parse("node-a:x:y")
        .unwrap()
        .allows(&id("node-a"), &svc("x:y")));
    assert_eq!(
        Acl::parse("node-a"),
        Err(AclError::MissingColon { entry: 1 })
    );
    assert_eq!(Acl::parse("a:b :echo"), Err(AclError::BadPeer { entry: 2 }));
    assert_eq!(Acl::parse("a:"), Err(AclError::BadService { entry: 1 }));
    let long = "x".repeat(65);
    assert_eq!(
        Acl::parse(&format!("a:{long}")),
        Err(AclError::BadService { entry: 1 })
    );
    let many: Vec<String> = (0..=MAX_ACL_ENTRIES).map(|i| format!("p{i}:s")).collect();
    assert_eq!(Acl::parse(&many.join(",")), Err(AclError::TooMany));
    assert_eq!(
        Acl::parse(&many[..MAX_ACL_ENTRIES].join(","))
            .unwrap()
            .len(),
        MAX_ACL_ENTRIES
    );
}

/// Other data users are left alone: anything not starting with 0x20 is
/// `NotRpc` (e.g. the Linux file-transfer kinds 0x10..=0x17).
#[test]
fn remote_decode_passes_other_data_through() {
    for k in [0x00u8, 0x10, 0x17, 0x21, 0xff] {
        assert_eq!(decode(&[k, 1, 1]), Err(RpcError::NotRpc));
    }
    assert_eq!(decode(&[]), Err(RpcError::NotRpc));
    assert_eq!(decode(&[0x20]), Err(RpcError::Truncated));
    assert_eq!(decode(&[0x20, 2, 1]), Err(RpcError::UnsupportedVersion(2)));
    assert_eq!(decode(&[0x20, 1, 3]), Err(RpcError::UnknownOp(3)));
}

/// The audit line names a peer-chosen id and service: neither can add
/// fields to it or fake a line (`node::logsafe`).
#[test]
fn reject_remote_audit_names_cannot_add_fields() {
    let audit = AuditEvent {
        peer: Some(DeviceId::new("evil allowed\u{202e}").unwrap()),
        service: svc("echo denied x=1"),
        call_id: 1,
        verdict: Verdict::Denied(DenyReason::Acl),
    };
    let line = audit.to_string();
    let want = format!(
        "remote call peer=evil\\u{{20}}allowed\\u{{202e}} service=echo\\u{{20}}denied\\u{{20}}x=1 denied ({})",
        DenyReason::Acl.as_str()
    );
    assert_eq!(line, want);
    let fields: Vec<&str> = line.split(' ').take(5).collect();
    assert_eq!(fields[4], "denied", "{line}");
}
