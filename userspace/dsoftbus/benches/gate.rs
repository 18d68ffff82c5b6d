//! The pre-DH gate: what a junk frame 1 costs the responder vs. a real
//! handshake, same run.
//!
//! - `gate/junk_frame1`: one accepted stream receiving one frame 1 of the
//!   right size with a bad mac1, through `Connection::accept` +
//!   `handle_input_gated` with a `HandshakeLimiter` (refused by mac1, before
//!   the limiter and before any DH).
//! - `gate/real_handshake`: one complete handshake, both sides (as
//!   `handshake/xk_full`), admitted by the same limiter.
//!
//! The row compares 100 000 × junk with 1 000 × real (per-unit means from
//! criterion, scaled). Target: junk total < real total.

mod common;

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};

use common::*;
use dsoftbus::connection::{Connection, GatedError};
use dsoftbus::handshake::{HandshakeConfig, FRAME1_LEN};
use dsoftbus::ratelimit::{HandshakeLimiter, RateLimitConfig};
use rand_chacha::rand_core::RngCore;

fn main() {
    let mut c = criterion();
    let (a, b) = pair();
    let cfg = HandshakeConfig::default();
    // Limits high enough that the real handshakes are always admitted: the
    // bench measures cost, not refusal.
    let open = RateLimitConfig {
        per_source_rate: u32::MAX,
        per_source_burst: u32::MAX,
        global_rate: u32::MAX,
        global_burst: u32::MAX,
        max_sources: 64,
    };
    {
        let mut g = c.benchmark_group("gate");
        let mut r = rng(7);
        let mut limiter = HandshakeLimiter::new(open, t(0));
        let mut body = [0u8; FRAME1_LEN];
        let mut wire = Vec::with_capacity(FRAME1_LEN + 2);
        let mut n = 0u32;
        g.bench_function("junk_frame1", |bch| {
            bch.iter(|| {
                n = n.wrapping_add(1);
                let src = IpAddr::V4(Ipv4Addr::from(0x0a00_0000 | (n & 0xffff)));
                r.fill_bytes(&mut body);
                wire.clear();
                dsoftbus::frame::encode_frame(&body, &mut wire).expect("frame");
                let mut conn = Connection::accept(&b.local, &mut r, t(0), cfg);
                let out = conn.handle_input_gated(&wire, t(0), &b.table, &mut limiter.gate(src));
                debug_assert!(matches!(out, Err(GatedError::Conn(_))));
                black_box(out)
            })
        });
        let mut r = rng(8);
        let src = IpAddr::V4(Ipv4Addr::new(10, 0, 2, 15));
        g.sample_size(30);
        g.bench_function("real_handshake", |bch| {
            bch.iter(|| {
                let mut ca =
                    Connection::connect(&a.local, a.target(&b), &mut r, t(0), cfg).expect("dial");
                let mut cb = Connection::accept(&b.local, &mut r, t(0), cfg);
                let f1 = ca.take_transmit();
                cb.handle_input_gated(&f1, t(0), &b.table, &mut limiter.gate(src))
                    .expect("admitted");
                ca.handle_input(&cb.take_transmit(), t(0), &a.table)
                    .expect("frame 2");
                cb.handle_input(&ca.take_transmit(), t(0), &b.table)
                    .expect("frame 3");
                assert!(ca.is_established() && cb.is_established());
                black_box((ca, cb))
            })
        });
        g.finish();
    }
    c.final_summary();
    if !measuring() {
        return;
    }
    if let (Some(junk), Some(real)) = (
        mean_ns("gate", "junk_frame1"),
        mean_ns("gate", "real_handshake"),
    ) {
        let (jt, rt) = (junk * 100_000.0, real * 1_000.0);
        row(
            "pre-DH gate: 100 000 junk frame-1s vs 1 000 handshakes",
            &format!("{} ({} each)", fmt_time(jt), fmt_time(junk)),
            &format!("{} ({} each)", fmt_time(rt), fmt_time(real)),
            &format!("{:.2}x", jt / rt),
            "< 1.00x",
            Some(jt < rt),
        );
    }
}
