//! Announce decoder + peer table: never panics; anything that decodes
//! re-encodes to the same bytes; the table stays within its bounds.
#![no_main]

use core::net::{IpAddr, Ipv4Addr, SocketAddr};

use dsoftbus::{Announce, DeviceId, Instant, PeerTable, PeerTableConfig, PublicKey};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(a) = Announce::decode(data) {
        assert_eq!(a.encode(), data);
    }
    let id = DeviceId::new("fuzz-self").unwrap();
    let mut table = PeerTable::new(id, PublicKey::from_bytes([9; 32]), PeerTableConfig::default());
    // The same datagram from a few sources and times.
    for i in 0..4u8 {
        let src = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, i)), 37020);
        let _ = table.observe_datagram(src, data, Instant::from_millis(u64::from(i) * 700));
        assert!(table.len() <= 16);
    }
});
