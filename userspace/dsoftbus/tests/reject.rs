//! The security audit tests named by the task contract. Run them with
//! `cargo test -p dsoftbus -- reject --nocapture`.

mod common;

use common::*;
use dsoftbus::announce::{AnnounceError, MAX_ANNOUNCE_LEN};
use dsoftbus::connection::{ConnError, Connection, Event};
use dsoftbus::handshake::{AuthError, Initiator, PeerTarget, Responder};
use dsoftbus::Observe;

/// A peer that authenticates with a key other than the one bound to the id it
/// claims is refused with a hard `AuthError::Identity`, and no session object
/// is ever produced — frame API and byte-stream API alike.
#[test]
fn test_reject_identity_mismatch() {
    let mut a = Node::new("node-a", 1, 15, 34567);
    let mut b = Node::new("node-b", 2, 16, 34568);
    // Mallory has her own key and claims to be node-a.
    let mallory = Node::new("node-a", 3, 66, 40000);

    a.hear(&b, t(0));
    assert_eq!(b.hear(&a, t(0)), Observe::Inserted);
    assert_eq!(b.table.get_str("node-a").unwrap().static_key(), &a.key());

    // Frame level: Mallory knows node-b's public key from its announce, so
    // the Noise handshake itself completes; binding must refuse it.
    let mut r = rng(10);
    let target = a.target("node-b");
    let (init, f1) =
        Initiator::start(&mallory.local, target.clone(), &mut r, t(0), &cfg()).unwrap();
    let (resp, f2) = Responder::accept(&b.local, &f1, &mut r, t(1), &cfg()).unwrap();
    let (_mallory_session, f3) = init.read_frame2(&f2, t(2)).unwrap();
    let verdict = resp.read_frame3(&f3, t(3), &b.table);
    println!(
        "identity mismatch (claimed node-a, wrong key): {:?}",
        verdict.as_ref().err()
    );
    assert!(
        matches!(verdict, Err(AuthError::Identity)),
        "must be a hard Identity error"
    );

    // Unknown claimed id is the same hard error.
    let ghost = Node::new("ghost", 4, 67, 40001);
    let (init, f1) = Initiator::start(&ghost.local, target.clone(), &mut r, t(0), &cfg()).unwrap();
    let (resp, f2) = Responder::accept(&b.local, &f1, &mut r, t(1), &cfg()).unwrap();
    let (_, f3) = init.read_frame2(&f2, t(2)).unwrap();
    assert!(matches!(
        resp.read_frame3(&f3, t(3), &b.table),
        Err(AuthError::Identity)
    ));

    // Byte-stream level: the responder's Connection fails with Identity and
    // never reports Established.
    let mut cm = Connection::connect(&mallory.local, target.clone(), &mut r, t(0), cfg()).unwrap();
    let mut cb = Connection::accept(&b.local, &mut r, t(0), cfg());
    let (_, eb) = shuttle(&mut cm, &mallory.table, &mut cb, &b.table, t(5));
    assert_eq!(cb.error(), Some(ConnError::Auth(AuthError::Identity)));
    // The daemon can name the claimed id in its marker.
    println!(
        "dsoftbusd: identity mismatch peer={}",
        cb.peer_hint().unwrap()
    );
    assert_eq!(cb.peer_hint().map(|d| d.as_str()), Some("node-a"));
    assert!(!cb.is_established());
    assert!(cb.peer_id().is_none());
    assert!(!eb.iter().any(|e| matches!(e, Event::Established { .. })));
    assert!(cb.send_data(b"x").is_err());

    // Initiator direction: node-a dials an entry "node-c" that (spoofed)
    // carries node-b's key and address; node-b's hello names node-b, so
    // node-a refuses with Identity.
    let spoof = PeerTarget {
        id: id("node-c"),
        key: b.key(),
    };
    let (init, f1) = Initiator::start(&a.local, spoof, &mut r, t(0), &cfg()).unwrap();
    let (_resp, f2) = Responder::accept(&b.local, &f1, &mut r, t(1), &cfg()).unwrap();
    let verdict = init.read_frame2(&f2, t(2));
    assert!(matches!(verdict, Err(AuthError::Identity)));

    // Sanity: the honest node-a with the bound key is accepted by the same table.
    let (init, f1) = Initiator::start(&a.local, target, &mut r, t(0), &cfg()).unwrap();
    let (resp, f2) = Responder::accept(&b.local, &f1, &mut r, t(1), &cfg()).unwrap();
    let (_, f3) = init.read_frame2(&f2, t(2)).unwrap();
    let s = resp
        .read_frame3(&f3, t(3), &b.table)
        .expect("honest peer accepted");
    assert_eq!(s.peer_id().as_str(), "node-a");
    assert_eq!(s.peer_key(), &a.key());
}

/// Malformed announces are ignored: explicit error, table untouched, no panic.
#[test]
fn test_reject_malformed_announce() {
    let mut b = Node::new("node-b", 2, 16, 34568);
    let a = Node::new("node-a", 1, 15, 34567);
    let good = a.announce.encode();

    let mut bad_version = good.clone();
    bad_version[4] = 2;
    let mut bad_magic = good.clone();
    bad_magic[0] = b'Q';
    let mut zero_id = good.clone();
    zero_id[5] = 0;
    let mut bad_utf8 = good.clone();
    bad_utf8[6] = 0xff;
    let mut trailing = good.clone();
    trailing.push(0);
    let mut newline_id = good.clone();
    newline_id[6] = b'\n';

    let cases: Vec<(&str, Vec<u8>, AnnounceError)> = vec![
        ("empty", vec![], AnnounceError::Truncated),
        ("bad magic", bad_magic, AnnounceError::BadMagic),
        (
            "bad version",
            bad_version,
            AnnounceError::UnsupportedVersion(2),
        ),
        ("zero id len", zero_id, AnnounceError::InvalidInput),
        ("bad utf8", bad_utf8, AnnounceError::Utf8),
        ("control char id", newline_id, AnnounceError::InvalidInput),
        (
            "truncated",
            good[..good.len() - 1].to_vec(),
            AnnounceError::Truncated,
        ),
        ("trailing bytes", trailing, AnnounceError::TrailingBytes),
    ];
    for (name, bytes, want) in cases {
        let out = b.table.observe_datagram(a.addr, &bytes, t(0));
        println!("announce ignored (malformed): {name} -> {out:?}");
        assert_eq!(out, Observe::Malformed(want), "{name}");
        assert!(!out.is_accepted());
    }
    assert!(b.table.is_empty());
    assert_eq!(b.table.stats().malformed, 8);
    // The valid one still goes through afterwards.
    assert_eq!(
        b.table.observe_datagram(a.addr, &good, t(0)),
        Observe::Inserted
    );
}

/// Datagrams longer than the largest valid v1 packet are refused on length
/// alone, before parsing — even when they start with a valid announce.
#[test]
fn test_reject_oversized_announce() {
    let mut b = Node::new("node-b", 2, 16, 34568);
    let a = Node::new("node-a", 1, 15, 34567);

    let mut padded = a.announce.encode();
    padded.resize(MAX_ANNOUNCE_LEN + 1, 0);
    assert_eq!(
        b.table.observe_datagram(a.addr, &padded, t(0)),
        Observe::Oversized
    );
    let huge = vec![0x41u8; 64 * 1024];
    assert_eq!(
        b.table.observe_datagram(a.addr, &huge, t(0)),
        Observe::Oversized
    );
    assert_eq!(
        dsoftbus::Announce::decode(&huge),
        Err(AnnounceError::Oversized)
    );
    println!(
        "oversized refused: {} bytes and {} bytes",
        padded.len(),
        huge.len()
    );
    assert!(b.table.is_empty());
    assert_eq!(b.table.stats().oversized, 2);
    assert_eq!(b.table.stats().malformed, 0);
    // Exactly at the bound is parsed (and here malformed, not oversized).
    padded.truncate(MAX_ANNOUNCE_LEN);
    assert_eq!(
        b.table.observe_datagram(a.addr, &padded, t(0)),
        Observe::Malformed(AnnounceError::TrailingBytes)
    );
}

/// A replayed announce within the de-dup window changes nothing; a replay
/// carrying a different key never displaces the pinned key; after the window
/// a replay can only refresh `last_seen` (the documented v1 limit).
#[test]
fn test_reject_replay_announce() {
    let mut b = Node::new("node-b", 2, 16, 34568);
    let a = Node::new("node-a", 1, 15, 34567);
    let bytes = a.announce.encode();

    assert_eq!(
        b.table.observe_datagram(a.addr, &bytes, t(1000)),
        Observe::Inserted
    );
    let before = b.table.get_str("node-a").unwrap().clone();
    for i in 0..50 {
        let out = b.table.observe_datagram(a.addr, &bytes, t(1000 + i * 9));
        assert_eq!(out, Observe::Duplicate, "replay #{i}");
    }
    assert_eq!(
        b.table.get_str("node-a").unwrap(),
        &before,
        "duplicates change no state"
    );
    assert_eq!(b.table.stats().duplicates, 50);
    println!(
        "replayed announces de-duplicated: {}",
        b.table.stats().duplicates
    );

    // An attacker replaying node-a's id with its own key is refused.
    let mallory = Node::new("node-a", 3, 66, 40000);
    assert_eq!(
        b.table
            .observe_datagram(mallory.addr, &mallory.announce.encode(), t(1200)),
        Observe::KeyConflict
    );
    assert_eq!(b.table.get_str("node-a").unwrap(), &before);
    assert_eq!(b.table.stats().key_conflicts, 1);

    // After the window, an identical announce refreshes (v1 cannot tell a
    // late replay from a fresh announce) but binds nothing new.
    assert_eq!(
        b.table.observe_datagram(a.addr, &bytes, t(1600)),
        Observe::Refreshed
    );
    let after = b.table.get_str("node-a").unwrap();
    assert_eq!(after.static_key(), before.static_key());
    assert_eq!(after.last_seen(), t(1600));
}
