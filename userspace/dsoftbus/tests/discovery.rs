//! Discovery behaviour through the real datagram path: de-dup, invalid
//! announces ignored, flood resistance, expiry, and discovery-driven dialing.

mod common;

use common::*;
use dsoftbus::connection::Connection;
use dsoftbus::peer_table::{PeerTable, PeerTableConfig};
use dsoftbus::{Announce, DeviceId, Observe, PublicKey};
use rand_chacha::rand_core::RngCore;

#[test]
fn discovery_dedup() {
    let mut b = Node::new("node-b", 2, 16, 34568);
    let a = Node::new("node-a", 1, 15, 34567);
    let dgram = a.announce.encode();
    let outcomes: Vec<Observe> = (0..10u64)
        .map(|i| b.table.observe_datagram(a.addr, &dgram, t(i * 100)))
        .collect();
    // Window 500 ms: first inserts, the next four are duplicates, the one at
    // 500 ms refreshes, and so on.
    assert_eq!(outcomes[0], Observe::Inserted);
    assert!(outcomes[1..5].iter().all(|o| *o == Observe::Duplicate));
    assert_eq!(outcomes[5], Observe::Refreshed);
    assert!(outcomes[6..].iter().all(|o| *o == Observe::Duplicate));
    assert_eq!(b.table.len(), 1);
    let s = b.table.stats();
    println!("discovery de-dup: {outcomes:?}");
    assert_eq!((s.inserted, s.refreshed, s.duplicates), (1, 1, 8));
}

#[test]
fn invalid_announces_ignored() {
    let mut b = Node::new("node-b", 2, 16, 34568);
    let mut r = rng(5);
    // 2000 random datagrams of random lengths, some with a valid-looking
    // header: none is accepted, none panics, the table stays empty.
    for i in 0..2000 {
        let len = (r.next_u32() % 1300) as usize;
        let mut d = vec![0u8; len];
        r.fill_bytes(&mut d);
        if i % 2 == 0 && len >= 5 {
            d[..5].copy_from_slice(b"NXSB\x01");
        }
        let out = b.table.observe_datagram(addr(9, 9), &d, t(i));
        assert!(
            matches!(out, Observe::Malformed(_) | Observe::Oversized),
            "{out:?}"
        );
    }
    assert!(b.table.is_empty());
    let s = b.table.stats();
    assert_eq!(s.malformed + s.oversized, 2000);
    println!(
        "invalid announces ignored: malformed={} oversized={}",
        s.malformed, s.oversized
    );
}

fn random_announce(r: &mut impl RngCore) -> Announce {
    let mut key = [0u8; 32];
    r.fill_bytes(&mut key);
    let id = format!("fake-{:016x}", r.next_u64());
    Announce::new(
        DeviceId::new(&id).unwrap(),
        1,
        PublicKey::from_bytes(key),
        vec![],
    )
    .unwrap()
}

/// 10 000 announces with random ids from one source leave the sessioned peer
/// in the table and the table within its bound.
#[test]
fn flood_from_one_source_keeps_sessioned_peer() {
    let mut b = Node::new("node-b", 2, 16, 34568);
    let a = Node::new("node-a", 1, 15, 34567);
    b.hear(&a, t(0));
    assert!(b.table.set_session(&id("node-a"), true));
    let mut r = rng(77);
    let attacker = addr(200, 37020);
    for i in 0..10_000u64 {
        let out = b.table.observe(attacker, &random_announce(&mut r), t(i));
        assert_ne!(out, Observe::Full);
        assert!(b.table.len() <= b.table.config().capacity);
    }
    assert!(
        b.table.get_str("node-a").is_some(),
        "sessioned peer survived"
    );
    assert!(b.table.len() <= 16);
    let from_attacker = b
        .table
        .iter()
        .filter(|e| e.source().ip() == attacker.ip())
        .count();
    assert!(from_attacker <= b.table.config().per_source_cap);
    // Binding unchanged: node-a can still authenticate to node-b.
    assert_eq!(b.table.get_str("node-a").unwrap().static_key(), &a.key());
    println!(
        "flood: table len {} (cap 16), attacker entries {}, evicted {}",
        b.table.len(),
        from_attacker,
        b.table.stats().evicted
    );
}

/// Same flood, but every announce from a different (spoofed) source: the
/// per-source cap no longer helps, global eviction must still spare the
/// sessioned and the pinned peer.
#[test]
fn flood_from_many_sources_spares_sessioned_and_pinned() {
    let mut b = Node::new("node-b", 2, 16, 34568);
    let a = Node::new("node-a", 1, 15, 34567);
    let c = Node::new("node-c", 3, 17, 34569);
    b.hear(&a, t(0));
    b.table.insert_pinned(c.addr, &c.announce, t(0));
    b.table.set_session(&id("node-a"), true);
    let mut r = rng(78);
    for i in 0..10_000u64 {
        let src = std::net::SocketAddr::from(([192, 168, (i >> 8) as u8, i as u8], 37020));
        b.table.observe(src, &random_announce(&mut r), t(i));
        assert!(b.table.len() <= 16);
    }
    assert!(b.table.get_str("node-a").is_some());
    assert!(b.table.get_str("node-c").is_some());
    assert!(b.table.get_str("node-c").unwrap().is_pinned());
}

/// The flood spoofs the sessioned peer's own source address: the per-source
/// cap then counts the sessioned entry, which still cannot be evicted.
#[test]
fn flood_from_sessioned_peers_address_keeps_it() {
    let mut b = Node::new("node-b", 2, 16, 34568);
    let a = Node::new("node-a", 1, 15, 34567);
    b.hear(&a, t(0));
    b.table.set_session(&id("node-a"), true);
    let mut r = rng(79);
    for i in 0..10_000u64 {
        b.table.observe(a.addr, &random_announce(&mut r), t(i));
    }
    assert!(b.table.get_str("node-a").is_some());
    assert!(b.table.len() <= b.table.config().per_source_cap);
}

#[test]
fn full_table_of_sessions_refuses_newcomers() {
    let cfg = PeerTableConfig {
        capacity: 2,
        ..PeerTableConfig::default()
    };
    let me = Node::new("me", 9, 9, 1);
    let mut table = PeerTable::new(id("me"), me.key(), cfg);
    let a = Node::new("node-a", 1, 15, 34567);
    let c = Node::new("node-c", 3, 17, 34569);
    table.observe(a.addr, &a.announce, t(0));
    table.observe(c.addr, &c.announce, t(0));
    table.set_session(&id("node-a"), true);
    table.set_session(&id("node-c"), true);
    let mut r = rng(1);
    assert_eq!(
        table.observe(addr(99, 1), &random_announce(&mut r), t(5)),
        Observe::Full
    );
    assert_eq!(table.stats().full, 1);
}

/// Dial target comes from discovery: source IP of the announce + announced port.
#[test]
fn discovery_driven_dial_target() {
    let mut a = Node::new("node-a", 1, 15, 34567);
    let b = Node::new("node-b", 2, 16, 34568);
    a.hear(&b, t(0));
    let e = a.table.get_str("node-b").unwrap();
    assert_eq!(e.session_addr(), addr(16, 34568));
    let mut r = rng(2);
    let c = Connection::connect(&a.local, e.into(), &mut r, t(0), cfg()).unwrap();
    assert!(!c.transmit_buf().is_empty());
}

#[test]
fn entries_expire_by_age() {
    let mut b = Node::new("node-b", 2, 16, 34568);
    let a = Node::new("node-a", 1, 15, 34567);
    b.hear(&a, t(0));
    assert_eq!(b.table.expire(t(2_999)), 0);
    assert_eq!(b.table.expire(t(3_000)), 1);
    assert_eq!(b.table.stats().expired, 1);
    // After expiry the id may be bound afresh (documented v1 TOFU limit).
    assert_eq!(b.hear(&a, t(3_001)), Observe::Inserted);
}
