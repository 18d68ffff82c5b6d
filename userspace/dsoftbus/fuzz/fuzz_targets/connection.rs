//! The connection state machine, both roles and every phase: the fuzzer's
//! bytes are fed to a responder awaiting frame 1, to an initiator awaiting
//! frame 2, and to both sides of an established session (optionally after
//! a prefix of the genuine exchange), in fuzzer-chosen chunks. Never a
//! panic; never an authenticated session from forged input; never data
//! that was not sent.
#![no_main]

use core::net::{IpAddr, Ipv4Addr, SocketAddr};

use dsoftbus::{
    Announce, Connection, DeviceId, Event, HandshakeConfig, Instant, LocalIdentity, PeerTable,
    PeerTableConfig, PeerTarget, StaticKeypair,
};
use libfuzzer_sys::fuzz_target;
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;

struct Node {
    local: LocalIdentity,
    table: PeerTable,
    announce: Announce,
}

/// Static keys are generated once per process (X25519 work the fuzzer need
/// not repeat); tables are fresh per input.
fn node(name: &str, seed: u64) -> Node {
    static KEYS: std::sync::OnceLock<[StaticKeypair; 2]> = std::sync::OnceLock::new();
    let keys = KEYS.get_or_init(|| {
        [1u64, 2].map(|s| StaticKeypair::generate(&mut ChaCha20Rng::seed_from_u64(s)))
    })[usize::from(seed == 2)]
    .clone();
    let id = DeviceId::new(name).unwrap();
    Node {
        table: PeerTable::new(id.clone(), *keys.public(), PeerTableConfig::default()),
        announce: Announce::new(id.clone(), 34567, *keys.public(), vec![]).unwrap(),
        local: LocalIdentity::new(id, keys),
    }
}

fn feed(c: &mut Connection, data: &[u8], step: usize, t: &PeerTable) {
    for chunk in data.chunks(step.max(1)) {
        let mut off = 0;
        while off < chunk.len() {
            match c.handle_input(&chunk[off..], Instant::from_millis(1), t) {
                Ok(0) => {
                    if c.poll_event().is_none() {
                        return;
                    }
                }
                Ok(n) => off += n,
                Err(_) => return,
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&ctl, data)) = data.split_first() else {
        return;
    };
    let step = usize::from(ctl >> 2) + 1;
    let mut a = node("node-a", 1);
    let mut b = node("node-b", 2);
    let src = |o| SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, 2, o)), 37020);
    let now = Instant::ZERO;
    a.table.observe_datagram(src(16), &b.announce.encode(), now);
    b.table.observe_datagram(src(15), &a.announce.encode(), now);
    let target = PeerTarget::from(a.table.get(b.local.id()).unwrap());
    let mut r = ChaCha20Rng::seed_from_u64(u64::from(ctl));
    let cfg = HandshakeConfig::default();

    // Responder awaiting frame 1 / initiator awaiting frame 2: forged bytes
    // can never authenticate (they would need node-a's or node-b's key).
    let mut resp = Connection::accept(&b.local, &mut r, now, cfg);
    feed(&mut resp, data, step, &b.table);
    assert!(!resp.is_established());
    let mut init = Connection::connect(&a.local, target.clone(), &mut r, now, cfg).unwrap();
    feed(&mut init, data, step, &a.table);
    assert!(!init.is_established());

    // Established on both sides, then fuzz bytes into each.
    let mut ca = Connection::connect(&a.local, target, &mut r, now, cfg).unwrap();
    let mut cb = Connection::accept(&b.local, &mut r, now, cfg);
    for _ in 0..3 {
        let x = ca.take_transmit();
        let _ = cb.handle_input(&x, now, &b.table);
        let y = cb.take_transmit();
        let _ = ca.handle_input(&y, now, &a.table);
    }
    assert!(ca.is_established() && cb.is_established());
    while cb.poll_event().is_some() {}
    while ca.poll_event().is_some() {}
    feed(&mut cb, data, step, &b.table);
    while let Some(e) = cb.poll_event() {
        assert!(!matches!(e, Event::Data(_) | Event::Ping(_) | Event::Pong(_)));
    }
    feed(&mut ca, data, step, &a.table);
    while let Some(e) = ca.poll_event() {
        assert!(!matches!(e, Event::Data(_) | Event::Ping(_) | Event::Pong(_)));
    }
});
