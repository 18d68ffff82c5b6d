//! `nexus-net`: the Nexus network-stack engine.
//!
//! A sans-IO-style engine around [smoltcp] that a single-threaded daemon
//! (`netstackd`) drives. The engine owns:
//!
//! * the NIC [`Interface`](smoltcp::iface::Interface) (Ethernet, MAC given by
//!   the caller) over any [`smoltcp::phy::Device`],
//! * a DHCPv4 client that configures that interface ([`dhcp`]), with an
//!   RFC 3927 link-local fallback when no server answers ([`linklocal`]),
//! * a second, Medium::Ip interface holding `127.0.0.1/8` over an in-memory
//!   loopback device ([`loopback`]) so that services on one machine talk
//!   through real TCP/UDP,
//! * the sockets facade: a request/response protocol with a stable byte
//!   encoding ([`facade`]) served by [`Engine::submit`] / [`Engine::poll`].
//!
//! Nothing here blocks, sleeps, spawns or reads a clock: the daemon passes the
//! current [`Instant`](smoltcp::time::Instant) into every call and asks
//! [`Engine::poll_at`] when it must call again. Requests that would block
//! (accept, recv_from, read, connect, ping, a write into a full buffer) are
//! parked and completed from a later [`Engine::poll`].
//!
//! The crate is `#![no_std]` + `alloc`; the `std` feature only adds
//! `std::error::Error` impls for host code.
//!
//! Layering follows smoltcp's: [`facade`] is the wire (types + codec, no
//! state), [`sockets`] the handle table, [`dhcp`] / [`ping`] small state
//! machines, [`engine`] the glue that polls interfaces and completes work.
#![no_std]
#![deny(missing_docs)]
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

extern crate alloc;
#[cfg(feature = "std")]
extern crate std;

pub mod dhcp;
pub mod engine;
pub mod facade;
pub mod limits;
pub mod linklocal;
pub mod loopback;
pub mod ping;
pub mod sockets;

pub use engine::{
    ClientId, Completion, Engine, EngineConfig, InitError, NetEvent, PollOutput, Submit,
};
pub use facade::{
    decode_request, decode_response, encode_request, encode_response, CodecError, Error,
    InterfaceStatus, Ipv4, Request, Response, SockAddr, SocketId,
};

/// Re-export of the smoltcp version this crate is built against, so the daemon
/// names the same `Device`, `Instant` and wire types.
pub use smoltcp;
