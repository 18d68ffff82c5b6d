//! # dsoftbus — the Nexus soft-bus protocol core
//!
//! Devices announce themselves over UDP (device id, session port, Noise static
//! public key, services); a device that hears an announcement dials the
//! sender over TCP, runs `Noise_XK_25519_ChaChaPoly_BLAKE2s` and accepts the
//! session only when the key the handshake authenticated is the key bound to
//! the device id the peer claims (*identity binding*).
//!
//! The crate is a **sans-IO** core in the style of smoltcp, rustls and
//! quinn-proto: every state machine here takes `&mut self`, input bytes and the
//! caller's clock ([`Instant`]) and produces output bytes. Nothing in the core
//! reads a socket, a clock or an entropy source, so the very same code runs in
//! the bare-metal OS daemon (`no_std` + `alloc`) and on Linux hosts (`std`
//! feature, which only adds host transports).
//!
//! Module map (each one small and total — bad input yields an error, never a
//! panic):
//!
//! | module | what |
//! | --- | --- |
//! | [`announce`] | announce v1 wire codec (`docs/protocol/wire.md` §2) |
//! | [`peer_table`] | bounded discovery table: pinning, de-dup, flood resistance |
//! | [`frame`] | 2-byte length framing of the session stream |
//! | [`handshake`] | Noise XK + mac1 + hello + identity binding, frame level |
//! | [`ratelimit`] | handshake admission: per-source and global token buckets |
//! | [`node`] | node policy: admission, session caps, pins, candidate addresses, log limits |
//! | [`session`] | transport messages (ping/pong/data/close) after the handshake |
//! | [`connection`] | byte-stream driver tying frames, handshake and session together |
//! | [`rpc`] | remote service calls in data messages: codec, ACL, server policy + audit, client |
//! | [`stream`] | multiplexed, flow-controlled streams in data messages (sans-IO `Mux`) |
//! | [`transfer`] | file transfer: offer/accept/data/resume/hash check, sans-IO sender and receiver, name rules |
//! | [`keys`] | static key pairs from injected entropy; redacted secrets |
//! | [`time`] | the caller-supplied clock type |
//! | [`transport`] | the I/O seam plus in-memory pipe and (with `std`) TCP/UDP |
//!
//! ## Quick start
//!
//! Two nodes discover each other, node-a dials, both sides authenticate and
//! bind identities, then ping/pong — all through plain byte buffers:
//!
//! ```
//! use dsoftbus::*;
//! use core::net::SocketAddr;
//! # use rand_chacha::{ChaCha20Rng, rand_core::SeedableRng};
//! # let mut rng = ChaCha20Rng::seed_from_u64(7); // any RngCore + CryptoRng
//! let now = Instant::from_millis(0);
//! let node = |name: &str, rng: &mut ChaCha20Rng| {
//!     let keys = StaticKeypair::generate(rng);
//!     let id = DeviceId::new(name).unwrap();
//!     let table = PeerTable::new(id.clone(), *keys.public(), PeerTableConfig::default());
//!     let ann = Announce::new(id.clone(), 34567, *keys.public(), vec![]).unwrap();
//!     (LocalIdentity::new(id, keys), table, ann)
//! };
//! let (a, mut table_a, ann_a) = node("node-a", &mut rng);
//! let (b, mut table_b, ann_b) = node("node-b", &mut rng);
//! let (addr_a, addr_b): (SocketAddr, SocketAddr) =
//!     ("10.0.2.15:37020".parse().unwrap(), "10.0.2.16:37020".parse().unwrap());
//!
//! // Discovery: each side decodes the other's datagram into its table.
//! assert_eq!(table_a.observe_datagram(addr_b, &ann_b.encode(), now), Observe::Inserted);
//! assert_eq!(table_b.observe_datagram(addr_a, &ann_a.encode(), now), Observe::Inserted);
//!
//! // The smaller id dials the discovered entry; the other side accepts.
//! assert!(should_initiate(a.id(), b.id()));
//! let entry = table_a.get(b.id()).unwrap();
//! let mut ca = Connection::connect(&a, entry.into(), &mut rng, now, HandshakeConfig::default()).unwrap();
//! let mut cb = Connection::accept(&b, &mut rng, now, HandshakeConfig::default());
//!
//! // Shuttle bytes (a real daemon reads/writes sockets here).
//! for _ in 0..4 {
//!     let to_b = ca.take_transmit();
//!     cb.handle_input(&to_b, now, &table_b).unwrap();
//!     let to_a = cb.take_transmit();
//!     ca.handle_input(&to_a, now, &table_a).unwrap();
//!     if ca.is_established() && cb.is_established() { break; }
//! }
//! assert_eq!(cb.poll_event(), Some(Event::Established { peer: a.id().clone() }));
//! ca.send_ping(1).unwrap();
//! cb.handle_input(&ca.take_transmit(), now, &table_b).unwrap();
//! ca.handle_input(&cb.take_transmit(), now, &table_a).unwrap();
//! assert_eq!(ca.poll_event(), Some(Event::Established { peer: b.id().clone() }));
//! assert_eq!(ca.poll_event(), Some(Event::Pong(1)));
//! ```
//!
//! The wire contract (wire v1, with test vectors) is `docs/protocol/wire.md`;
//! the binding rule, peer-table bounds and the threat model are written up in
//! `docs/distributed/dsoftbus-os.md`.
#![no_std]
#![forbid(unsafe_code)]
#![warn(missing_docs)]
// Bad input must never reach a panic: no unwrap/expect/panic outside tests.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

extern crate alloc;
#[cfg(feature = "std")]
extern crate std;

// Deterministic bring-up keys must never reach a release image.
#[cfg(all(feature = "bringup-test-keys", not(debug_assertions)))]
compile_error!(
    "feature `bringup-test-keys` is for debug bring-up only; it must not be enabled in a release build"
);

mod aead;
pub mod announce;
pub mod connection;
mod crypto;
pub mod frame;
pub mod handshake;
pub mod keys;
pub mod node;
pub mod peer_table;
pub mod ratelimit;
pub mod rpc;
pub mod session;
pub mod stream;
pub mod time;
pub mod transfer;
pub mod transport;

pub use announce::{Announce, AnnounceError, DeviceId, ServiceName};
pub use connection::{ConnError, Connection, Event, GatedError};
pub use frame::{FrameDecoder, FrameError};
pub use handshake::{
    should_initiate, AuthError, HandshakeConfig, IdentityBindings, Initiator, LocalIdentity,
    PeerTarget, Rejection, Responder,
};
pub use keys::{KeyServiceError, PublicKey, SecretKey, StaticDh, StaticKeypair};
pub use peer_table::{Observe, PeerEntry, PeerTable, PeerTableConfig, PeerTableStats};
pub use ratelimit::{HandshakeGate, HandshakeLimiter, Limited, RateLimitConfig};
pub use session::{Message, Session, SessionError};
pub use time::Instant;

/// UDP port for discovery announcements (`docs/protocol/wire.md` §2.1
/// "Transport").
pub const DISCOVERY_PORT: u16 = 37020;
/// IPv4 multicast group for discovery announcements (`docs/protocol/wire.md`
/// §2.1 "Transport").
pub const DISCOVERY_GROUP: core::net::Ipv4Addr = core::net::Ipv4Addr::new(239, 42, 0, 1);
