//! Shared bench fixtures and the `bench-row` reporter.
//!
//! Every bench target measures its subject and its baseline in the same run,
//! then prints one line per metric:
//!
//! ```text
//! bench-row|metric|value|baseline|ratio|target|met
//! ```
//!
//! `scripts/bench.sh` collects those lines into the table kept in
//! `docs/performance.md`. Nothing here asserts on time: targets are reported,
//! never enforced.
#![allow(dead_code)]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use criterion::Criterion;
use dsoftbus::connection::Connection;
use dsoftbus::handshake::{HandshakeConfig, IdentityBindings, LocalIdentity, PeerTarget};
use dsoftbus::peer_table::{PeerTable, PeerTableConfig};
use dsoftbus::{Announce, DeviceId, Instant, StaticKeypair};
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;

pub fn rng(seed: u64) -> ChaCha20Rng {
    ChaCha20Rng::seed_from_u64(seed)
}

pub fn t(ms: u64) -> Instant {
    Instant::from_millis(ms)
}

/// A simulated node: identity, announce, peer table.
pub struct Node {
    pub local: LocalIdentity,
    pub announce: Announce,
    pub table: PeerTable,
    pub addr: SocketAddr,
}

impl Node {
    pub fn new(name: &str, seed: u64, last_octet: u8) -> Node {
        let keys = StaticKeypair::generate(&mut rng(seed));
        let id = DeviceId::new(name).expect("id");
        let announce = Announce::new(id.clone(), 34567, *keys.public(), vec![]).expect("announce");
        let table = PeerTable::new(id.clone(), *keys.public(), PeerTableConfig::default());
        Node {
            local: LocalIdentity::new(id, keys),
            announce,
            table,
            addr: SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, 2, last_octet)), 37020),
        }
    }

    pub fn hear(&mut self, other: &Node) {
        let _ = self
            .table
            .observe_datagram(other.addr, &other.announce.encode(), t(0));
    }

    pub fn target(&self, peer: &Node) -> PeerTarget {
        PeerTarget::from(self.table.get(peer.local.id()).expect("peer known"))
    }
}

/// Two nodes that heard each other: (initiator, responder).
pub fn pair() -> (Node, Node) {
    let mut a = Node::new("node-a", 1, 15);
    let mut b = Node::new("node-b", 2, 16);
    a.hear(&b);
    b.hear(&a);
    (a, b)
}

/// One complete in-memory handshake, both sides, including identity binding.
pub fn handshake_in_memory<R>(a: &Node, b: &Node, r: &mut R) -> (Connection, Connection)
where
    R: rand_chacha::rand_core::RngCore + rand_chacha::rand_core::CryptoRng,
{
    let now = t(0);
    let mut ca = Connection::connect(&a.local, a.target(b), r, now, HandshakeConfig::default())
        .expect("connect");
    let mut cb = Connection::accept(&b.local, r, now, HandshakeConfig::default());
    shuttle_until_established(&mut ca, &a.table, &mut cb, &b.table);
    (ca, cb)
}

pub fn shuttle_until_established<BA: IdentityBindings, BB: IdentityBindings>(
    ca: &mut Connection,
    ta: &BA,
    cb: &mut Connection,
    tb: &BB,
) {
    let now = t(0);
    for _ in 0..4 {
        let to_b = ca.take_transmit();
        if !to_b.is_empty() {
            cb.handle_input(&to_b, now, tb).expect("responder");
        }
        let to_a = cb.take_transmit();
        if !to_a.is_empty() {
            ca.handle_input(&to_a, now, ta).expect("initiator");
        }
        if ca.is_established() && cb.is_established() {
            // Frame 3 reached the responder: both sides hold a session.
            return;
        }
    }
    panic!("handshake did not complete");
}

/// Criterion configured for this crate: results under `target/criterion`,
/// no plots; command-line flags (`--quick`, `--warm-up-time`, ...) apply.
pub fn criterion() -> Criterion {
    Criterion::default()
        .output_directory(&criterion_home())
        .without_plots()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args()
}

pub fn criterion_home() -> PathBuf {
    if let Some(h) = std::env::var_os("CRITERION_HOME") {
        return PathBuf::from(h);
    }
    // CARGO_TARGET_TMPDIR is `<target>/tmp`; keep reports next to it.
    let tmp = PathBuf::from(option_env!("CARGO_TARGET_TMPDIR").unwrap_or("target/tmp"));
    tmp.parent().map(|p| p.join("criterion")).unwrap_or(tmp)
}

/// Median time per iteration, in nanoseconds, of `group/id` from this run's
/// criterion estimates. The median, not the mean: on a shared 2-vCPU VM a few
/// preempted samples would otherwise move the mean by tens of percent.
pub fn mean_ns(group: &str, id: &str) -> Option<f64> {
    let path = criterion_home()
        .join(group)
        .join(id)
        .join("new")
        .join("estimates.json");
    let text = std::fs::read_to_string(path).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    v.get("median")?.get("point_estimate")?.as_f64()
}

/// Prints one `bench-row` line (and a human-readable echo).
pub fn row(
    metric: &str,
    value: &str,
    baseline: &str,
    ratio: &str,
    target: &str,
    met: Option<bool>,
) {
    let met = match met {
        Some(true) => "yes",
        Some(false) => "NO",
        None => "n/a",
    };
    println!("bench-row|{metric}|{value}|{baseline}|{ratio}|{target}|{met}");
}

/// Whether criterion was asked to run benchmarks (not `--list`, not a test run).
pub fn measuring() -> bool {
    let args: Vec<String> = std::env::args().collect();
    args.iter().any(|a| a == "--bench") && !args.iter().any(|a| a == "--list" || a == "--test")
}

pub fn fmt_rate(per_sec: f64, unit: &str) -> String {
    if per_sec >= 1e6 {
        format!("{:.2} M {unit}/s", per_sec / 1e6)
            .replace("  ", " ")
            .replace(" /s", "/s")
    } else if per_sec >= 1e3 {
        format!("{:.1} k {unit}/s", per_sec / 1e3).replace(" /s", "/s")
    } else {
        format!("{per_sec:.0} {unit}/s")
    }
}

pub fn fmt_time(ns: f64) -> String {
    if ns >= 1e9 {
        format!("{:.2} s", ns / 1e9)
    } else if ns >= 1e6 {
        format!("{:.2} ms", ns / 1e6)
    } else if ns >= 1e3 {
        format!("{:.1} µs", ns / 1e3)
    } else {
        format!("{ns:.0} ns")
    }
}
