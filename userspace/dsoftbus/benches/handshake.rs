//! Handshake cost vs. its X25519 floor, measured in the same run.
//!
//! - `handshake/xk_full`: one complete `Noise_XK_25519_ChaChaPoly_BLAKE2s`
//!   handshake through [`Connection`] on both sides — mac1, hellos, identity
//!   binding against the peer tables, framing.
//! - `handshake/x25519_floor`: the X25519 work XK cannot avoid: 2 ephemeral
//!   key generations and 6 Diffie-Hellman operations (es, ee, se on each side),
//!   with the same `curve25519-dalek` build the handshake uses.
//!
//! Target: full ≤ 1.2× floor.

mod common;

use std::hint::black_box;

use common::*;
use curve25519_dalek::montgomery::MontgomeryPoint;
use rand_chacha::rand_core::RngCore;

fn floor_once(r: &mut impl RngCore, peer_pub: &MontgomeryPoint) -> [u8; 32] {
    let mut acc = [0u8; 32];
    for _ in 0..2 {
        let mut sk = [0u8; 32];
        r.fill_bytes(&mut sk);
        let pk = MontgomeryPoint::mul_base_clamped(black_box(sk));
        acc[0] ^= pk.0[0];
    }
    for i in 0..6u8 {
        let mut sk = [0u8; 32];
        sk[0] = i;
        r.fill_bytes(&mut sk);
        let shared = black_box(*peer_pub).mul_clamped(black_box(sk));
        acc[1] ^= shared.0[1];
    }
    acc
}

fn main() {
    let mut c = criterion();
    let (a, b) = pair();
    let peer_pub = MontgomeryPoint(*b.local.public_key().as_bytes());
    {
        let mut g = c.benchmark_group("handshake");
        g.sample_size(30);
        let mut r = rng(99);
        g.bench_function("x25519_floor", |bch| {
            bch.iter(|| black_box(floor_once(&mut r, &peer_pub)))
        });
        let mut r = rng(100);
        g.bench_function("xk_full", |bch| {
            bch.iter(|| {
                let (ca, cb) = handshake_in_memory(&a, &b, &mut r);
                black_box((ca, cb))
            })
        });
        g.finish();
    }
    c.final_summary();
    if !measuring() {
        return;
    }
    if let (Some(full), Some(floor)) = (
        mean_ns("handshake", "xk_full"),
        mean_ns("handshake", "x25519_floor"),
    ) {
        let ratio = full / floor;
        row(
            "handshake (XK + binding, both sides)",
            &format!("{} ({})", fmt_time(full), fmt_rate(1e9 / full, "")),
            &format!("{} (6 DH + 2 keygen)", fmt_time(floor)),
            &format!("{ratio:.2}x"),
            "<= 1.20x",
            Some(ratio <= 1.2),
        );
    }
}
