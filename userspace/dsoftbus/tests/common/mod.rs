//! Shared fixtures for the integration tests. Everything is deterministic:
//! seeded RNGs, a caller-driven clock, in-memory byte transfer.
#![allow(dead_code)]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use dsoftbus::connection::{Connection, Event};
use dsoftbus::handshake::{HandshakeConfig, IdentityBindings, LocalIdentity, PeerTarget};
use dsoftbus::peer_table::{PeerTable, PeerTableConfig};
use dsoftbus::{Announce, DeviceId, Instant, PublicKey, ServiceName, StaticKeypair};
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;

pub fn rng(seed: u64) -> ChaCha20Rng {
    ChaCha20Rng::seed_from_u64(seed)
}

pub fn id(s: &str) -> DeviceId {
    DeviceId::new(s).expect("valid id")
}

pub fn t(ms: u64) -> Instant {
    Instant::from_millis(ms)
}

pub fn addr(last: u8, port: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, 2, last)), port)
}

/// A simulated node: identity, its announce, its peer table.
pub struct Node {
    pub local: LocalIdentity,
    pub announce: Announce,
    pub table: PeerTable,
    pub addr: SocketAddr,
}

impl Node {
    pub fn new(name: &str, seed: u64, last_octet: u8, port: u16) -> Node {
        let keys = StaticKeypair::generate(&mut rng(seed));
        let announce = Announce::new(
            id(name),
            port,
            *keys.public(),
            vec![ServiceName::new("echo").unwrap()],
        )
        .unwrap();
        let table = PeerTable::new(id(name), *keys.public(), PeerTableConfig::default());
        Node {
            local: LocalIdentity::new(id(name), keys),
            announce,
            table,
            addr: addr(last_octet, 37020),
        }
    }

    pub fn key(&self) -> PublicKey {
        *self.local.public_key()
    }

    /// Hear `other`'s announce (as a datagram, through the real decoder).
    pub fn hear(&mut self, other: &Node, now: Instant) -> dsoftbus::Observe {
        self.table
            .observe_datagram(other.addr, &other.announce.encode(), now)
    }

    pub fn target(&self, peer: &str) -> PeerTarget {
        PeerTarget::from(self.table.get_str(peer).expect("peer known"))
    }
}

/// Moves bytes both ways until quiescent (bounded rounds). Returns all events
/// seen by each side.
pub fn shuttle<BA: IdentityBindings + ?Sized, BB: IdentityBindings + ?Sized>(
    a: &mut Connection,
    a_bind: &BA,
    b: &mut Connection,
    b_bind: &BB,
    now: Instant,
) -> (Vec<Event>, Vec<Event>) {
    let (mut ea, mut eb) = (Vec::new(), Vec::new());
    for _ in 0..64 {
        let to_b = a.take_transmit();
        let to_a = b.take_transmit();
        if to_b.is_empty() && to_a.is_empty() {
            break;
        }
        if !to_b.is_empty() && b.error().is_none() {
            let _ = b.handle_input(&to_b, now, b_bind);
        }
        if !to_a.is_empty() && a.error().is_none() {
            let _ = a.handle_input(&to_a, now, a_bind);
        }
        while let Some(e) = a.poll_event() {
            ea.push(e);
        }
        while let Some(e) = b.poll_event() {
            eb.push(e);
        }
    }
    (ea, eb)
}

pub fn cfg() -> HandshakeConfig {
    HandshakeConfig::default()
}
