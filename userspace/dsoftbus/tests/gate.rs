//! Pre-DH gate and handshake rate limits, deterministic and in memory.

mod common;

use std::net::{IpAddr, Ipv4Addr};

use common::*;
use dsoftbus::connection::{ConnError, Connection, Event, GatedError};
use dsoftbus::handshake::{AuthError, Initiator, FRAME1_LEN};
use dsoftbus::ratelimit::{HandshakeLimiter, Limited, RateLimitConfig};
use rand_chacha::rand_core::RngCore;

fn ip(a: u8, b: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 0, a, b))
}

fn framed(body: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    dsoftbus::frame::encode_frame(body, &mut v).unwrap();
    v
}

/// 100 000 junk frame-1s (right size, bad mac1) from 1 000 addresses —
/// including the legitimate peer's — plus a flood of *valid* frame-1s from
/// one attacker address, interleaved with a legitimate handshake: the
/// legitimate handshake completes, junk never reaches the limiter (so it
/// costs no DH and no tokens), and the valid-mac1 flood is cut at its
/// source's burst.
#[test]
fn legit_handshake_completes_during_junk_flood() {
    let (a, b) = {
        let mut a = Node::new("node-a", 1, 15, 34567);
        let mut b = Node::new("node-b", 2, 16, 34568);
        a.hear(&b, t(0));
        b.hear(&a, t(0));
        (a, b)
    };
    let cfg_rl = RateLimitConfig::default();
    let mut limiter = HandshakeLimiter::new(cfg_rl, t(0));
    let mut r = rng(70);
    let legit_ip = ip(2, 15);
    let attacker_ip = ip(66, 6);
    const JUNK: u32 = 100_000;
    let mut junk_refused = 0u32;
    let mut valid_limited = 0u32;
    let mut valid_admitted = 0u32;
    let mut legit: Option<(Connection, Connection)> = None;
    let mut legit_done = false;
    let mut body = [0u8; FRAME1_LEN];
    for i in 0..JUNK {
        // Simulated clock: 100 junk connections per millisecond (1 s total).
        let now = t(u64::from(i / 100));
        let src = if i % 7 == 0 {
            legit_ip
        } else {
            ip((i % 250) as u8, (i / 250 % 4) as u8)
        };
        r.fill_bytes(&mut body);
        let mut c = Connection::accept(&b.local, &mut r, now, cfg());
        let out = c.handle_input_gated(&framed(&body), now, &b.table, &mut limiter.gate(src));
        assert_eq!(out, Err(GatedError::Conn(ConnError::Auth(AuthError::Mac1))));
        assert!(!c.is_established() && c.transmit_buf().is_empty());
        junk_refused += 1;

        // Every 1000 junk frames, the attacker also sends a real frame 1
        // (it knows node-b's public key from the announce).
        if i % 1000 == 0 {
            let (_init, f1) =
                Initiator::start(&a.local, a.target("node-b"), &mut r, now, &cfg()).unwrap();
            let mut c = Connection::accept(&b.local, &mut r, now, cfg());
            match c.handle_input_gated(&framed(&f1), now, &b.table, &mut limiter.gate(attacker_ip))
            {
                Ok(_) => valid_admitted += 1,
                Err(GatedError::Limited(Limited::Source)) => {
                    assert!(c.is_admission_pending() && c.transmit_buf().is_empty());
                    valid_limited += 1;
                }
                other => panic!("unexpected {other:?}"),
            }
        }

        // The legitimate peer dials in the middle of the flood and the bytes
        // of its handshake are interleaved with the junk.
        if i == JUNK / 2 {
            let ca = Connection::connect(&a.local, a.target("node-b"), &mut r, now, cfg()).unwrap();
            let cb = Connection::accept(&b.local, &mut r, now, cfg());
            legit = Some((ca, cb));
        }
        if let Some((ca, cb)) = legit.as_mut() {
            if !legit_done && i % 10 == 0 {
                let to_b = ca.take_transmit();
                if !to_b.is_empty() {
                    cb.handle_input_gated(&to_b, now, &b.table, &mut limiter.gate(legit_ip))
                        .expect("legit frame admitted");
                }
                let to_a = cb.take_transmit();
                if !to_a.is_empty() {
                    ca.handle_input(&to_a, now, &a.table).unwrap();
                }
                legit_done = ca.is_established() && cb.is_established();
            }
        }
    }
    let (mut ca, mut cb) = legit.expect("legit started");
    assert!(
        legit_done,
        "legitimate handshake completed during the flood"
    );
    assert_eq!(
        cb.poll_event(),
        Some(Event::Established {
            peer: a.local.id().clone()
        })
    );
    assert!(ca.poll_event().is_some());
    let s = limiter.stats();
    println!(
        "flood: {junk_refused} junk frame-1s refused by mac1 (never reached the limiter); \
         valid-mac1 flood: {valid_admitted} admitted, {valid_limited} rate-limited; limiter {s:?}"
    );
    assert_eq!(junk_refused, JUNK);
    // Only the valid frames reached the limiter: junk is invisible to it.
    assert_eq!(
        s.admitted + s.limited_source + s.limited_global,
        u64::from(valid_admitted + valid_limited) + 1
    );
    assert!(valid_limited > 0, "the valid-mac1 flood was limited");
    assert!(limiter.tracked_sources() <= cfg_rl.max_sources);
}

/// A refused frame 1 is held, not failed: once tokens refill, the same
/// connection completes its handshake; past the deadline it times out.
#[test]
fn limited_handshake_can_retry_then_complete() {
    let mut a = Node::new("node-a", 1, 15, 34567);
    let mut b = Node::new("node-b", 2, 16, 34568);
    a.hear(&b, t(0));
    b.hear(&a, t(0));
    let cfg_rl = RateLimitConfig {
        per_source_rate: 1,
        per_source_burst: 1,
        ..RateLimitConfig::default()
    };
    let mut limiter = HandshakeLimiter::new(cfg_rl, t(0));
    let src = ip(2, 15);
    let mut r = rng(71);
    // Use up the source's only token.
    limiter.check(src, t(0)).unwrap();
    let mut ca = Connection::connect(&a.local, a.target("node-b"), &mut r, t(0), cfg()).unwrap();
    let mut cb = Connection::accept(&b.local, &mut r, t(0), cfg());
    let f1 = ca.take_transmit();
    assert_eq!(
        cb.handle_input_gated(&f1, t(10), &b.table, &mut limiter.gate(src)),
        Err(GatedError::Limited(Limited::Source))
    );
    assert!(cb.is_admission_pending());
    assert_eq!(cb.error(), None);
    assert_eq!(cb.recv_space(), 0, "nothing more is read while held");
    // Still refused a little later; admitted once a token accrued (1/s).
    assert!(cb
        .handle_input_gated(&[], t(500), &b.table, &mut limiter.gate(src))
        .is_err());
    assert_eq!(
        cb.handle_input_gated(&[], t(1000), &b.table, &mut limiter.gate(src)),
        Ok(0)
    );
    assert!(!cb.is_admission_pending());
    ca.handle_input(&cb.take_transmit(), t(1001), &a.table)
        .unwrap();
    cb.handle_input(&ca.take_transmit(), t(1002), &b.table)
        .unwrap();
    assert!(ca.is_established() && cb.is_established());

    // A held frame past the deadline: typed timeout, nothing established.
    let mut ca = Connection::connect(&a.local, a.target("node-b"), &mut r, t(0), cfg()).unwrap();
    let mut cb = Connection::accept(&b.local, &mut r, t(2000), cfg());
    limiter.check(src, t(2000)).unwrap();
    let f1 = ca.take_transmit();
    assert!(cb
        .handle_input_gated(&f1, t(2000), &b.table, &mut limiter.gate(src))
        .is_err());
    assert_eq!(
        cb.handle_timeout(t(12_000)),
        Err(ConnError::Auth(AuthError::Timeout))
    );
    assert!(!cb.is_established());
}
