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
//! | [`announce`] | announce v1 wire codec (DESIGN §4) |
//! | [`peer_table`] | bounded discovery table: pinning, de-dup, flood resistance |
//! | [`frame`] | 2-byte length framing of the session stream |
//! | [`handshake`] | Noise XK + mac1 + hello + identity binding, frame level |
//! | [`session`] | transport messages (ping/pong/data/close) after the handshake |
//! | [`connection`] | byte-stream driver tying frames, handshake and session together |
//! | [`keys`] | static key pairs from injected entropy; redacted secrets |
//! | [`time`] | the caller-supplied clock type |
//! | [`transport`] | the I/O seam plus in-memory pipe and (with `std`) TCP/UDP |
//!
//! Wire format, binding rule, peer-table bounds and the threat model are
//! written up in `docs/distributed/dsoftbus-os.md`.
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

pub mod announce;
pub mod connection;
mod crypto;
pub mod frame;
pub mod handshake;
pub mod keys;
pub mod peer_table;
pub mod session;
pub mod time;
pub mod transport;

pub use announce::{Announce, AnnounceError, DeviceId, ServiceName};
pub use connection::{ConnError, Connection, Event};
pub use frame::{FrameDecoder, FrameError};
pub use handshake::{
    should_initiate, AuthError, HandshakeConfig, IdentityBindings, Initiator, LocalIdentity,
    PeerTarget, Rejection, Responder,
};
pub use keys::{PublicKey, SecretKey, StaticKeypair};
pub use peer_table::{Observe, PeerEntry, PeerTable, PeerTableConfig, PeerTableStats};
pub use session::{Message, Session, SessionError};
pub use time::Instant;

/// UDP port for discovery announcements (DESIGN §4).
pub const DISCOVERY_PORT: u16 = 37020;
/// IPv4 multicast group for discovery announcements (DESIGN §4).
pub const DISCOVERY_GROUP: core::net::Ipv4Addr = core::net::Ipv4Addr::new(239, 42, 0, 1);
