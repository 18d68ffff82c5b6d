//! Discovery receive path: announce decode + peer-table update, per second on
//! one core.
//!
//! - `discovery/observe`: `PeerTable::observe_datagram` on real announce
//!   bytes from 16 peers (2 services each) whose announces arrive far enough
//!   apart to be fresh (`Observe::Refreshed`, the steady state): decode,
//!   self/pin/de-dup checks, update.
//! - `discovery/decode_only`: `Announce::decode` of the same bytes — the
//!   share of the codec in the total.

mod common;

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use common::*;
use criterion::Throughput;
use dsoftbus::peer_table::{PeerTable, PeerTableConfig};
use dsoftbus::{Announce, DeviceId, Observe, ServiceName, StaticKeypair};

const PEERS: usize = 16;

fn main() {
    let mut c = criterion();
    let me = StaticKeypair::generate(&mut rng(1));
    let mut r = rng(2);
    let peers: Vec<(SocketAddr, Vec<u8>)> = (0..PEERS)
        .map(|i| {
            let k = StaticKeypair::generate(&mut r);
            let a = Announce::new(
                DeviceId::new(&format!("node-{i:02}")).expect("id"),
                34567,
                *k.public(),
                vec![
                    ServiceName::new("echo").expect("svc"),
                    ServiceName::new("fs.share").expect("svc"),
                ],
            )
            .expect("announce");
            let src = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, 2, 20 + i as u8)), 37020);
            (src, a.encode())
        })
        .collect();
    let cfg = PeerTableConfig {
        capacity: PEERS,
        ..PeerTableConfig::default()
    };
    let mut table = PeerTable::new(DeviceId::new("me").expect("id"), *me.public(), cfg.clone());
    {
        let mut g = c.benchmark_group("discovery");
        g.throughput(Throughput::Elements(1));
        // Each peer is seen every 16 × 40 ms = 640 ms: past the 500 ms de-dup
        // window and well within the 3 s expiry.
        let mut i = 0usize;
        let mut now_ms = 0u64;
        g.bench_function("observe", |bch| {
            bch.iter(|| {
                let (src, bytes) = &peers[i % PEERS];
                i += 1;
                now_ms += 40;
                let o = table.observe_datagram(*src, black_box(bytes), t(now_ms));
                debug_assert!(matches!(o, Observe::Inserted | Observe::Refreshed));
                black_box(o)
            })
        });
        let mut j = 0usize;
        g.bench_function("decode_only", |bch| {
            bch.iter(|| {
                let (_, bytes) = &peers[j % PEERS];
                j += 1;
                black_box(Announce::decode(black_box(bytes)))
            })
        });
        g.finish();
    }
    c.final_summary();
    if !measuring() {
        return;
    }
    if let (Some(obs), Some(dec)) = (
        mean_ns("discovery", "observe"),
        mean_ns("discovery", "decode_only"),
    ) {
        row(
            "discovery: announce decode + peer-table update",
            &fmt_rate(1e9 / obs, "announces"),
            &format!("{} decode only", fmt_rate(1e9 / dec, "")),
            &format!("{:.2}x of decode time", obs / dec),
            "report (no target)",
            None,
        );
    }
}
