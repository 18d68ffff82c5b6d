//! Handshake and session behaviour: happy path, ping/pong, wrong keys, MITM,
//! timeouts, tie-break, framing over a bounded pipe.

mod common;

use common::*;
use dsoftbus::connection::{ConnError, Connection, Event};
use dsoftbus::handshake::{
    should_initiate, AuthError, HandshakeConfig, Initiator, PeerTarget, Responder,
};
use dsoftbus::session::{Message, SessionError};
use dsoftbus::transport::pipe::duplex;
use dsoftbus::transport::{pump, StreamIo};
use dsoftbus::{Observe, StaticKeypair};

fn discovered_pair() -> (Node, Node) {
    let mut a = Node::new("node-a", 1, 15, 34567);
    let mut b = Node::new("node-b", 2, 15, 34568);
    assert_eq!(a.hear(&b, t(0)), Observe::Inserted);
    assert_eq!(b.hear(&a, t(0)), Observe::Inserted);
    (a, b)
}

#[test]
fn handshake_happy_path_and_ping_pong_frames() {
    let (a, b) = discovered_pair();
    let mut r = rng(7);
    let (init, f1) = Initiator::start(&a.local, a.target("node-b"), &mut r, t(0), &cfg()).unwrap();
    assert_eq!(f1.len(), dsoftbus::handshake::FRAME1_LEN);
    let (resp, f2) = Responder::accept(&b.local, &f1, &mut r, t(1), &cfg()).unwrap();
    let (mut sa, f3) = init.read_frame2(&f2, t(2)).unwrap();
    let mut sb = resp.read_frame3(&f3, t(3), &b.table).unwrap();
    assert_eq!(sa.peer_id().as_str(), "node-b");
    assert_eq!(sb.peer_id().as_str(), "node-a");
    assert!(sa.is_initiator() && !sb.is_initiator());

    let ping = sa.seal(&Message::Ping(0xdead_beef)).unwrap();
    assert_eq!(sb.open(&ping), Ok(Message::Ping(0xdead_beef)));
    let pong = sb.seal(&Message::Pong(0xdead_beef)).unwrap();
    assert_eq!(sa.open(&pong), Ok(Message::Pong(0xdead_beef)));
    let data = sa.seal(&Message::Data(b"hello bus".to_vec())).unwrap();
    assert_eq!(sb.open(&data), Ok(Message::Data(b"hello bus".to_vec())));
    println!("handshake ok: node-a <-> node-b, ping/pong ok");

    // Tampering kills the session for good.
    let mut bad = sa.seal(&Message::Data(vec![1, 2, 3])).unwrap();
    bad[3] ^= 1;
    assert_eq!(sb.open(&bad), Err(SessionError::Decrypt));
    assert_eq!(sb.open(&pong), Err(SessionError::Closed));

    // Debug output never leaks secrets (it carries no key bytes at all).
    let dbg = format!("{sa:?} {:?}", a.local);
    assert!(!dbg.contains("secret\": ["));
}

#[test]
fn connection_over_pipe_ping_pong_data_close() {
    let (a, b) = discovered_pair();
    let mut r = rng(8);
    let (mut pa, mut pb) = duplex(64); // tiny buffers force partial I/O
    let mut ca = Connection::connect(&a.local, a.target("node-b"), &mut r, t(0), cfg()).unwrap();
    let mut cb = Connection::accept(&b.local, &mut r, t(0), cfg());

    let mut ea = Vec::new();
    let mut eb = Vec::new();
    let mut pinged = false;
    for step in 0..500u64 {
        let now = t(step);
        pump(&mut ca, &mut pa, now, &a.table).unwrap();
        pump(&mut cb, &mut pb, now, &b.table).unwrap();
        while let Some(e) = ca.poll_event() {
            ea.push(e);
        }
        while let Some(e) = cb.poll_event() {
            eb.push(e);
        }
        if ca.is_established() && !pinged {
            ca.send_ping(42).unwrap();
            ca.send_data(&[9u8; 1000]).unwrap();
            pinged = true;
        }
        if ea.contains(&Event::Pong(42)) && eb.iter().any(|e| matches!(e, Event::Data(_))) {
            break;
        }
    }
    assert_eq!(ea[0], Event::Established { peer: id("node-b") });
    assert_eq!(eb[0], Event::Established { peer: id("node-a") });
    assert!(eb.contains(&Event::Ping(42)));
    assert!(ea.contains(&Event::Pong(42)), "events a: {ea:?}");
    assert!(eb.contains(&Event::Data(vec![9u8; 1000])));
    println!("pipe session ok: ping/pong + 1000 bytes of data");

    cb.close().unwrap();
    assert!(cb.is_closed());
    for step in 0..50 {
        pump(&mut cb, &mut pb, t(600 + step), &b.table).unwrap();
        pump(&mut ca, &mut pa, t(600 + step), &a.table).unwrap();
    }
    assert!(ca.is_closed());
    assert_eq!(ca.poll_event(), Some(Event::Closed));
    assert_eq!(ca.send_ping(1), Err(ConnError::Closed));
    // The closed pipe end reads EOF, not an error.
    pa.close();
    let mut buf = [0u8; 4];
    assert_eq!(pb.read(&mut buf), Ok(0));
}

#[test]
fn wrong_responder_key_fails_authentication() {
    let (a, b) = discovered_pair();
    let mut r = rng(9);
    // node-a believes node-b has some other key (e.g. stale or forged entry).
    let wrong = StaticKeypair::generate(&mut rng(99));
    let target = PeerTarget {
        id: id("node-b"),
        key: *wrong.public(),
    };
    let (init, f1) = Initiator::start(&a.local, target.clone(), &mut r, t(0), &cfg()).unwrap();
    // The honest responder drops it on mac1, before any DH.
    assert!(matches!(
        Responder::accept(&b.local, &f1, &mut r, t(1), &cfg()),
        Err(AuthError::Mac1)
    ));
    // Had it answered anyway (a responder that skips mac1), node-a could not
    // decrypt: the frame-2 from the real node-b does not authenticate.
    let (good_init, good_f1) =
        Initiator::start(&a.local, a.target("node-b"), &mut r, t(0), &cfg()).unwrap();
    let (_resp, f2) = Responder::accept(&b.local, &good_f1, &mut r, t(1), &cfg()).unwrap();
    assert!(matches!(
        init.read_frame2(&f2, t(2)),
        Err(AuthError::Handshake)
    ));
    drop(good_init);

    // Over a byte stream: the responder fails with Mac1, the initiator sees
    // the stream close and fails too. Nobody is established.
    let mut ca = Connection::connect(&a.local, target, &mut r, t(0), cfg()).unwrap();
    let mut cb = Connection::accept(&b.local, &mut r, t(0), cfg());
    shuttle(&mut ca, &a.table, &mut cb, &b.table, t(1));
    assert_eq!(cb.error(), Some(ConnError::Auth(AuthError::Mac1)));
    assert_eq!(ca.handle_eof(), Err(ConnError::Auth(AuthError::Closed)));
    assert!(!ca.is_established() && !cb.is_established());
    println!(
        "wrong responder key: responder {:?}, initiator {:?}",
        cb.error(),
        ca.error()
    );
}

/// Mallory sits between node-a and node-b with her own keys. She can relay
/// bytes verbatim (and then learns nothing: the session is a-b end to end),
/// but every attempt to terminate either side herself fails.
#[test]
fn mitm_relay_with_own_keys_gets_no_session() {
    let (a, b) = discovered_pair();
    let mallory = Node::new("mallory", 66, 66, 40000);
    let mut r = rng(11);

    // 1. Mallory answers node-a's dial as if she were node-b.
    let (init, f1) = Initiator::start(&a.local, a.target("node-b"), &mut r, t(0), &cfg()).unwrap();
    assert_eq!(
        Responder::accept(&mallory.local, &f1, &mut r, t(1), &cfg()).err(),
        Some(AuthError::Mac1)
    );
    // Even ignoring mac1, her own key cannot open message 1 (es uses node-b's key):
    // she forwards it to node-b instead and relays node-b's reply...
    let (resp_b, f2) = Responder::accept(&b.local, &f1, &mut r, t(1), &cfg()).unwrap();
    // ...but swaps in a frame 2 built with her own key: node-a refuses.
    let (_m_init, m_f1) = Initiator::start(
        &mallory.local,
        PeerTarget {
            id: id("node-b"),
            key: b.key(),
        },
        &mut r,
        t(0),
        &cfg(),
    )
    .unwrap();
    let (_m_resp_b, m_f2) = Responder::accept(&b.local, &m_f1, &mut r, t(1), &cfg()).unwrap();
    let (init2, _) = Initiator::start(&a.local, a.target("node-b"), &mut r, t(0), &cfg()).unwrap();
    assert_eq!(
        init2.read_frame2(&m_f2, t(2)).err(),
        Some(AuthError::Handshake)
    );

    // 2. Mallory dials node-b claiming node-a (she knows both public keys):
    // binding refuses her.
    let (m_init, m_f1) = Initiator::start(
        &mallory.local,
        PeerTarget {
            id: id("node-b"),
            key: b.key(),
        },
        &mut r,
        t(0),
        &cfg(),
    )
    .unwrap();
    let (m_resp, m_f2) = Responder::accept(&b.local, &m_f1, &mut r, t(1), &cfg()).unwrap();
    let (_, m_f3) = m_init.read_frame2(&m_f2, t(2)).unwrap();
    assert_eq!(
        m_resp.read_frame3(&m_f3, t(3), &b.table).err(),
        Some(AuthError::Identity)
    );

    // 3. Pure relay: a and b get their session; Mallory, holding only the
    // ciphertext and her own keys, cannot open a single transport frame.
    let (mut sa, f3) = init.read_frame2(&f2, t(2)).unwrap();
    let mut sb = resp_b.read_frame3(&f3, t(3), &b.table).unwrap();
    let secret = sa
        .seal(&Message::Data(b"for node-b only".to_vec()))
        .unwrap();
    // Mallory's best try: treat it as a frame 1/3 with her own state.
    assert!(Responder::accept(&mallory.local, &secret, &mut r, t(4), &cfg()).is_err());
    assert_eq!(
        sb.open(&secret),
        Ok(Message::Data(b"for node-b only".to_vec()))
    );

    // 4. Relay that tampers a single bit of frame 3: node-b refuses.
    let (i3, f1) = Initiator::start(&a.local, a.target("node-b"), &mut r, t(0), &cfg()).unwrap();
    let (r3, f2) = Responder::accept(&b.local, &f1, &mut r, t(1), &cfg()).unwrap();
    let (_, mut f3) = i3.read_frame2(&f2, t(2)).unwrap();
    f3[40] ^= 0x80;
    assert_eq!(
        r3.read_frame3(&f3, t(3), &b.table).err(),
        Some(AuthError::Handshake)
    );
    println!("mitm: no session for the relay");
}

#[test]
fn handshake_deadline_uses_caller_clock() {
    let (a, b) = discovered_pair();
    let mut r = rng(12);
    let c = HandshakeConfig::default();
    assert_eq!(c.timeout.as_secs(), 10);
    let (init, f1) = Initiator::start(&a.local, a.target("node-b"), &mut r, t(0), &c).unwrap();
    let (_resp, f2) = Responder::accept(&b.local, &f1, &mut r, t(1), &c).unwrap();
    assert_eq!(
        init.read_frame2(&f2, t(10_000)).err(),
        Some(AuthError::Timeout)
    );

    let mut ca = Connection::connect(&a.local, a.target("node-b"), &mut r, t(0), c).unwrap();
    assert_eq!(ca.poll_timeout(), Some(t(10_000)));
    assert_eq!(ca.handle_timeout(t(9_999)), Ok(()));
    assert_eq!(
        ca.handle_timeout(t(10_000)),
        Err(ConnError::Auth(AuthError::Timeout))
    );
    // A silent responder-side connection times out the same way.
    let mut cb = Connection::accept(&b.local, &mut r, t(0), c);
    assert_eq!(
        cb.handle_input(&[], t(10_001), &b.table),
        Err(ConnError::Auth(AuthError::Timeout))
    );
}

#[test]
fn tie_break_leaves_exactly_one_dialer() {
    let (a, b) = discovered_pair();
    let a_dials = should_initiate(a.local.id(), b.local.id());
    let b_dials = should_initiate(b.local.id(), a.local.id());
    assert!(a_dials ^ b_dials, "exactly one side dials");
    // Simulate simultaneous discovery: each side acts on the tie-break only.
    let mut r = rng(13);
    let (dialer, listener) = if a_dials { (&a, &b) } else { (&b, &a) };
    let listener_name = listener.local.id().as_str().to_owned();
    let mut c1 = Connection::connect(
        &dialer.local,
        dialer.target(&listener_name),
        &mut r,
        t(0),
        cfg(),
    )
    .unwrap();
    let mut c2 = Connection::accept(&listener.local, &mut r, t(0), cfg());
    shuttle(&mut c1, &dialer.table, &mut c2, &listener.table, t(1));
    assert!(c1.is_established() && c2.is_established());
}

#[test]
fn never_dials_itself() {
    let (a, _b) = discovered_pair();
    let mut r = rng(14);
    let me = PeerTarget {
        id: a.local.id().clone(),
        key: a.key(),
    };
    assert_eq!(
        Initiator::start(&a.local, me, &mut r, t(0), &cfg()).err(),
        Some(AuthError::Identity)
    );
}

#[test]
fn junk_before_handshake_is_refused_cheaply() {
    let (_a, b) = discovered_pair();
    let mut r = rng(15);
    let mut cb = Connection::accept(&b.local, &mut r, t(0), cfg());
    // A frame of the right size but random content: mac1 fails.
    let mut junk = vec![0u8, 64];
    junk.extend_from_slice(&[0x5a; 64]);
    assert_eq!(
        cb.handle_input(&junk, t(1), &b.table),
        Err(ConnError::Auth(AuthError::Mac1))
    );
    // A header announcing a frame larger than any handshake frame is refused
    // as soon as the header arrives.
    let mut cb = Connection::accept(&b.local, &mut r, t(0), cfg());
    assert!(matches!(
        cb.handle_input(&[0xff, 0xff], t(1), &b.table),
        Err(ConnError::Frame(_))
    ));
}

/// A burst of more frames than the event queue holds is not lost: input
/// stops at the bound and resumes as events are drained.
#[test]
fn event_queue_backpressure_loses_nothing() {
    let (a, b) = discovered_pair();
    let mut r = rng(16);
    let mut ca = Connection::connect(&a.local, a.target("node-b"), &mut r, t(0), cfg()).unwrap();
    let mut cb = Connection::accept(&b.local, &mut r, t(0), cfg());
    shuttle(&mut ca, &a.table, &mut cb, &b.table, t(1));
    while cb.poll_event().is_some() {}
    let n = dsoftbus::connection::MAX_EVENTS * 3;
    for i in 0..n {
        ca.send_data(&(i as u32).to_be_bytes()).unwrap();
    }
    let wire = ca.take_transmit();
    let mut off = cb.handle_input(&wire, t(2), &b.table).unwrap();
    // Input stops at the event bound (`recv_space` is 0 until events are
    // drained); what one call took is decoded in full, the rest waits with
    // the caller.
    let mut got = Vec::new();
    let mut max_seen = 0;
    loop {
        let mut batch = 0;
        while let Some(ev) = cb.poll_event() {
            match ev {
                Event::Data(d) => got.push(u32::from_be_bytes(d.try_into().unwrap())),
                other => panic!("unexpected {other:?}"),
            }
            batch += 1;
        }
        max_seen = max_seen.max(batch);
        if off == wire.len() {
            break;
        }
        off += cb.handle_input(&wire[off..], t(2), &b.table).unwrap();
    }
    assert!(max_seen >= dsoftbus::connection::MAX_EVENTS);
    assert_eq!(got, (0..n as u32).collect::<Vec<_>>());
}

/// The initiator is established after frame 2 and may send data at once; a
/// large data frame that arrives in the same read as frame 3 must be judged
/// by the transport frame limit, not the handshake one.
#[test]
fn data_coalesced_with_frame3_is_accepted() {
    let (a, b) = discovered_pair();
    let mut r = rng(17);
    let mut ca = Connection::connect(&a.local, a.target("node-b"), &mut r, t(0), cfg()).unwrap();
    let mut cb = Connection::accept(&b.local, &mut r, t(0), cfg());
    cb.handle_input(&ca.take_transmit(), t(1), &b.table)
        .unwrap();
    ca.handle_input(&cb.take_transmit(), t(1), &a.table)
        .unwrap();
    assert!(ca.is_established());
    let big = vec![0x42u8; 4000];
    ca.send_data(&big).unwrap();
    let wire = ca.take_transmit(); // frame 3 ‖ data frame
    let mut off = 0;
    while off < wire.len() {
        let n = cb.handle_input(&wire[off..], t(2), &b.table).unwrap();
        assert!(n > 0, "stalled at {off}");
        off += n;
    }
    assert!(matches!(cb.poll_event(), Some(Event::Established { .. })));
    assert_eq!(cb.poll_event(), Some(Event::Data(big)));
}

/// A stand-in for the OS's keystored: holds a pair, answers DH, counts calls.
struct KeyService {
    pair: StaticKeypair,
    calls: std::sync::atomic::AtomicUsize,
    broken: bool,
}

impl dsoftbus::StaticDh for KeyService {
    fn dh(&self, peer: &[u8; 32]) -> Result<[u8; 32], dsoftbus::KeyServiceError> {
        self.calls
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if self.broken {
            return Err(dsoftbus::KeyServiceError);
        }
        Ok(self.pair.secret().diffie_hellman(peer))
    }
}

fn held(node: &mut Node, broken: bool) -> std::sync::Arc<KeyService> {
    // Same identity, but the secret now lives in the "service".
    let public = *node.local.public_key();
    let existing = node.local.keys().cloned().unwrap();
    let svc = std::sync::Arc::new(KeyService {
        pair: existing,
        calls: std::sync::atomic::AtomicUsize::new(0),
        broken,
    });
    node.local = dsoftbus::handshake::LocalIdentity::with_key_service(
        node.local.id().clone(),
        public,
        svc.clone(),
    );
    assert!(node.local.keys().is_none());
    svc
}

#[test]
fn key_service_identities_handshake_and_bind() {
    let (mut a, mut b) = discovered_pair();
    let sa_svc = held(&mut a, false);
    let sb_svc = held(&mut b, false);
    let mut r = rng(17);
    let (init, f1) = Initiator::start(&a.local, a.target("node-b"), &mut r, t(0), &cfg()).unwrap();
    let (resp, f2) = Responder::accept(&b.local, &f1, &mut r, t(1), &cfg()).unwrap();
    let (mut sa, f3) = init.read_frame2(&f2, t(2)).unwrap();
    let mut sb = resp.read_frame3(&f3, t(3), &b.table).unwrap();
    assert_eq!(sa.peer_id().as_str(), "node-b");
    assert_eq!(sb.peer_id().as_str(), "node-a");
    let ping = sa.seal(&Message::Ping(5)).unwrap();
    assert_eq!(sb.open(&ping), Ok(Message::Ping(5)));
    // XK: each static key takes part in exactly one DH (the responder's in
    // `es` on frame 1, the initiator's in `se` on frame 3); the rest use
    // ephemerals, which stay in-process.
    let (ca, cb) = (
        sa_svc.calls.load(std::sync::atomic::Ordering::Relaxed),
        sb_svc.calls.load(std::sync::atomic::Ordering::Relaxed),
    );
    assert!(
        ca >= 1 && cb >= 1,
        "initiator {ca} responder {cb} service calls"
    );
}

#[test]
fn a_failing_key_service_fails_the_handshake_cleanly() {
    let (a, mut b) = discovered_pair();
    let _svc = held(&mut b, true);
    let mut r = rng(18);
    let (_init, f1) = Initiator::start(&a.local, a.target("node-b"), &mut r, t(0), &cfg()).unwrap();
    assert!(Responder::accept(&b.local, &f1, &mut r, t(1), &cfg()).is_err());
}

/// Partial writes advance an offset: the bytes that reach the peer are the
/// same whatever the write sizes, with sends interleaved between writes.
#[test]
fn partial_writes_and_interleaved_sends_keep_the_stream() {
    let (a, b) = discovered_pair();
    let mut r = rng(18);
    let mut ca = Connection::connect(&a.local, a.target("node-b"), &mut r, t(0), cfg()).unwrap();
    let mut cb = Connection::accept(&b.local, &mut r, t(0), cfg());
    shuttle(&mut ca, &a.table, &mut cb, &b.table, t(1));
    while cb.poll_event().is_some() {}
    let mut wire = Vec::new();
    let mut sent = Vec::new();
    for i in 0..200u32 {
        let msg: Vec<u8> = (0..(i as usize * 37 % 3000 + 1))
            .map(|x| (x as u32 ^ i) as u8)
            .collect();
        ca.send_data(&msg).unwrap();
        sent.push(msg);
        // Write an odd-sized piece of what is queued.
        let n = ca.transmit_buf().len().min(i as usize * 13 % 977 + 1);
        wire.extend_from_slice(&ca.transmit_buf()[..n]);
        ca.consume_transmit(n);
    }
    wire.extend_from_slice(&ca.take_transmit());
    assert!(ca.transmit_buf().is_empty());
    let mut got = Vec::new();
    let mut off = 0;
    while off < wire.len() {
        off += cb.handle_input(&wire[off..], t(2), &b.table).unwrap();
        while let Some(ev) = cb.poll_event() {
            match ev {
                Event::Data(d) => got.push(d),
                other => panic!("unexpected {other:?}"),
            }
        }
    }
    assert_eq!(got, sent);
}

/// Reading straight into the connection (`recv_buf` / `commit_recv_with`)
/// delivers the same data, in order, as slices — no `Event::Data`.
#[test]
fn zero_copy_receive_delivers_the_same_data() {
    let (a, b) = discovered_pair();
    let mut r = rng(19);
    let mut ca = Connection::connect(&a.local, a.target("node-b"), &mut r, t(0), cfg()).unwrap();
    let mut cb = Connection::accept(&b.local, &mut r, t(0), cfg());
    shuttle(&mut ca, &a.table, &mut cb, &b.table, t(1));
    while cb.poll_event().is_some() {}
    let mut sent = Vec::new();
    for i in 0..40usize {
        let msg = vec![i as u8; i * 1311 % 9_000 + 1];
        ca.send_data(&msg).unwrap();
        sent.push(msg);
    }
    ca.send_ping(7).unwrap();
    let wire = ca.take_transmit();
    let mut got: Vec<Vec<u8>> = Vec::new();
    let mut off = 0;
    let mut reads = 0;
    while off < wire.len() {
        let buf = cb.recv_buf(usize::MAX);
        let n = buf.len().min(wire.len() - off);
        assert!(n > 0);
        buf[..n].copy_from_slice(&wire[off..off + n]);
        off += n;
        reads += 1;
        cb.commit_recv_with(n, t(2), &b.table, |d| got.push(d.to_vec()))
            .unwrap();
    }
    assert_eq!(got, sent);
    assert_eq!(cb.poll_event(), Some(Event::Ping(7)));
    assert_eq!(cb.poll_event(), None);
    // One read per frame (each read ends with the next frame's header).
    assert!(reads <= sent.len() + 2, "{reads} reads");
}
