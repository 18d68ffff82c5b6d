//! Host UDP discovery socket (`docs/protocol/wire.md` §2.1 "Transport": port
//! 37020, group 239.42.0.1, broadcast fallback).
//!
//! [`DiscoverySocket::bind`] tries, in order of preference:
//! - **loopback** when asked for ([`UdpConfig::loopback_only`]): announces go
//!   to `127.0.0.1`, as in the QEMU single-VM bring-up;
//! - **multicast**: join `239.42.0.1` on the configured interface, TTL 1,
//!   optional multicast loopback so co-located nodes hear each other;
//! - **broadcast** to `255.255.255.255` when the join fails.
//!
//! The socket is non-blocking by default; receive buffers are one byte larger
//! than the largest valid announce so oversize is visible to the decoder.

use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};

use socket2::{Domain, Protocol, Socket, Type};

use crate::announce::{Announce, MAX_ANNOUNCE_LEN};
use crate::peer_table::{Observe, PeerTable};
use crate::time::Instant;
use crate::{DISCOVERY_GROUP, DISCOVERY_PORT};

/// How announces are delivered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DiscoveryMode {
    /// To `239.42.0.1` (group joined).
    Multicast,
    /// To `255.255.255.255` (multicast join failed).
    Broadcast,
    /// To `127.0.0.1` only.
    Loopback,
}

/// Discovery socket settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UdpConfig {
    /// Port to bind (default 37020; 0 picks a free port, for tests).
    pub bind_port: u16,
    /// Port announces are sent to (default 37020).
    pub dest_port: u16,
    /// Multicast group (default 239.42.0.1).
    pub group: Ipv4Addr,
    /// Interface address for the multicast join (default any).
    pub interface: Ipv4Addr,
    /// Deliver our multicast announces to local sockets too.
    pub multicast_loop: bool,
    /// Use 127.0.0.1 only (no multicast, no broadcast).
    pub loopback_only: bool,
    /// Non-blocking socket (default true).
    pub nonblocking: bool,
}

impl Default for UdpConfig {
    fn default() -> Self {
        UdpConfig {
            bind_port: DISCOVERY_PORT,
            dest_port: DISCOVERY_PORT,
            group: DISCOVERY_GROUP,
            interface: Ipv4Addr::UNSPECIFIED,
            multicast_loop: true,
            loopback_only: false,
            nonblocking: true,
        }
    }
}

/// A bound discovery socket.
#[derive(Debug)]
pub struct DiscoverySocket {
    sock: UdpSocket,
    mode: DiscoveryMode,
    dest: SocketAddrV4,
}

/// Receive buffer size: one byte over the largest valid announce.
pub const RECV_BUF_LEN: usize = MAX_ANNOUNCE_LEN + 1;

impl DiscoverySocket {
    /// Binds per `cfg`, choosing multicast, broadcast or loopback delivery.
    pub fn bind(cfg: &UdpConfig) -> io::Result<Self> {
        let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
        s.set_reuse_address(true)?;
        #[cfg(unix)]
        s.set_reuse_port(true)?;
        let bind_ip = if cfg.loopback_only {
            Ipv4Addr::LOCALHOST
        } else {
            Ipv4Addr::UNSPECIFIED
        };
        s.bind(&SocketAddrV4::new(bind_ip, cfg.bind_port).into())?;
        let (mode, dest_ip) = if cfg.loopback_only {
            (DiscoveryMode::Loopback, Ipv4Addr::LOCALHOST)
        } else if s.join_multicast_v4(&cfg.group, &cfg.interface).is_ok() {
            s.set_multicast_loop_v4(cfg.multicast_loop)?;
            s.set_multicast_ttl_v4(1)?;
            (DiscoveryMode::Multicast, cfg.group)
        } else {
            s.set_broadcast(true)?;
            (DiscoveryMode::Broadcast, Ipv4Addr::BROADCAST)
        };
        s.set_nonblocking(cfg.nonblocking)?;
        Ok(DiscoverySocket {
            sock: s.into(),
            mode,
            dest: SocketAddrV4::new(dest_ip, cfg.dest_port),
        })
    }

    /// The delivery mode chosen at bind time.
    pub fn mode(&self) -> DiscoveryMode {
        self.mode
    }

    /// Where announces are sent.
    pub fn dest(&self) -> SocketAddrV4 {
        self.dest
    }

    /// The underlying socket (for timeouts, polling registration).
    pub fn socket(&self) -> &UdpSocket {
        &self.sock
    }

    /// Sends one announce to the discovery destination.
    pub fn send_announce(&self, a: &Announce) -> io::Result<usize> {
        self.sock.send_to(&a.encode(), self.dest)
    }

    /// Sends raw bytes (tests of the receive path use this for junk).
    pub fn send_raw(&self, bytes: &[u8]) -> io::Result<usize> {
        self.sock.send_to(bytes, self.dest)
    }

    /// Receives one datagram into `buf`. `Ok(None)` when nothing is pending
    /// on a non-blocking socket.
    pub fn recv(&self, buf: &mut [u8; RECV_BUF_LEN]) -> io::Result<Option<(usize, SocketAddr)>> {
        match self.sock.recv_from(buf) {
            Ok(r) => Ok(Some(r)),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Receives one datagram and offers it to `table`.
    pub fn recv_into(
        &self,
        table: &mut PeerTable,
        now: Instant,
    ) -> io::Result<Option<(SocketAddr, Observe)>> {
        let mut buf = [0u8; RECV_BUF_LEN];
        Ok(self.recv(&mut buf)?.map(|(n, src)| {
            let datagram = buf.get(..n).unwrap_or(&[]);
            (src, table.observe_datagram(src, datagram, now))
        }))
    }
}
