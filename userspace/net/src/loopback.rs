//! The loopback interface and the routing rule between it and the NIC.
//!
//! # Why a second interface
//!
//! smoltcp cannot send a packet from an Ethernet interface to one of its own
//! addresses, and services on one machine must reach each other through real
//! TCP/UDP (same code path as remote peers). The engine therefore runs a
//! second smoltcp [`Interface`](smoltcp::iface::Interface) with
//! `Medium::Ip`, holding `127.0.0.1/8`, over [`LoopbackDevice`].
//!
//! # Routing
//!
//! Each interface has its own `SocketSet`, so a stack socket lives on exactly
//! one interface and the choice is made when it is created:
//!
//! * destination (connect, send_to, ping) in `127.0.0.0/8` **or equal to the
//!   NIC's own leased address** → loopback; everything else → NIC ([`route`]).
//!   smoltcp's Ethernet interface cannot deliver to itself, so the engine also
//!   assigns the leased address (as a `/32`) to the loopback interface;
//! * bind/listen address `0.0.0.0` or the NIC's own address → one stack socket
//!   on **each** interface (the facade socket fans in both); `127/8` →
//!   loopback only; any other address → NIC only ([`bind_scope`]).
//!
//! Only `127.0.0.1` (and the leased address) are assigned; other 127/8
//! destinations are routed to the loopback interface but nothing answers.
//!
//! # Why not `smoltcp::phy::Loopback`
//!
//! Its queue is crate-private, so the engine could not tell whether frames are
//! still queued when computing `poll_at`, and it is unbounded. This device is
//! the same FIFO with `is_empty` and a [`LOOPBACK_QUEUE_FRAMES`] bound.

use alloc::collections::VecDeque;
use alloc::vec::Vec;

use smoltcp::phy::{self, ChecksumCapabilities, DeviceCapabilities, Medium};
use smoltcp::time::Instant;
use smoltcp::wire::{Ipv4Address, Ipv4Cidr};

use crate::limits::{LOOPBACK_MTU, LOOPBACK_QUEUE_FRAMES};

/// Address of the loopback interface.
pub const LOOPBACK_ADDR: Ipv4Address = Ipv4Address::new(127, 0, 0, 1);
/// The loopback interface's CIDR, `127.0.0.1/8`.
pub const LOOPBACK_CIDR: Ipv4Cidr = Ipv4Cidr::new(LOOPBACK_ADDR, 8);

/// Which interface a stack socket lives on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum IfaceId {
    /// The Ethernet NIC (DHCP-configured).
    Nic,
    /// The `127.0.0.1/8` loopback interface.
    Loopback,
}

/// Interface that carries traffic toward `dst`, given the NIC's current
/// address (`None` while unconfigured).
pub fn route(dst: Ipv4Address, nic_addr: Option<Ipv4Address>) -> IfaceId {
    if dst.is_loopback() || Some(dst) == nic_addr {
        IfaceId::Loopback
    } else {
        IfaceId::Nic
    }
}

/// Interfaces a socket bound to `local` must listen on, given the NIC's
/// current address.
pub fn bind_scope(local: Ipv4Address, nic_addr: Option<Ipv4Address>) -> &'static [IfaceId] {
    if local.is_unspecified() || Some(local) == nic_addr {
        &[IfaceId::Nic, IfaceId::Loopback]
    } else if local.is_loopback() {
        &[IfaceId::Loopback]
    } else {
        &[IfaceId::Nic]
    }
}

/// In-memory, Medium::Ip loopback device: every transmitted frame is received
/// back in FIFO order.
#[derive(Debug, Default)]
pub struct LoopbackDevice {
    queue: VecDeque<Vec<u8>>,
}

impl LoopbackDevice {
    /// An empty device.
    pub fn new() -> LoopbackDevice {
        LoopbackDevice::default()
    }

    /// True when no frame is waiting to be received.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Frames waiting to be received.
    pub fn len(&self) -> usize {
        self.queue.len()
    }
}

impl phy::Device for LoopbackDevice {
    type RxToken<'a> = RxToken;
    type TxToken<'a> = TxToken<'a>;

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ip;
        caps.max_transmission_unit = LOOPBACK_MTU;
        // Frames never leave memory; checksums cannot be corrupted.
        caps.checksum = ChecksumCapabilities::ignored();
        caps
    }

    fn receive(&mut self, _now: Instant) -> Option<(RxToken, TxToken<'_>)> {
        let buffer = self.queue.pop_front()?;
        Some((
            RxToken { buffer },
            TxToken {
                queue: &mut self.queue,
            },
        ))
    }

    fn transmit(&mut self, _now: Instant) -> Option<TxToken<'_>> {
        if self.queue.len() >= LOOPBACK_QUEUE_FRAMES {
            return None;
        }
        Some(TxToken {
            queue: &mut self.queue,
        })
    }
}

/// Receive token of [`LoopbackDevice`].
#[doc(hidden)]
pub struct RxToken {
    buffer: Vec<u8>,
}

impl phy::RxToken for RxToken {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(&self.buffer)
    }
}

/// Transmit token of [`LoopbackDevice`].
#[doc(hidden)]
pub struct TxToken<'a> {
    queue: &'a mut VecDeque<Vec<u8>>,
}

impl phy::TxToken for TxToken<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut buffer = alloc::vec![0u8; len];
        let result = f(&mut buffer);
        // The bound is checked in `transmit`; a token handed out by `receive`
        // (a reply to the frame just taken) may exceed it by one frame.
        self.queue.push_back(buffer);
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routing_rule() {
        let me = Some(Ipv4Address::new(10, 0, 2, 15));
        assert_eq!(route(Ipv4Address::new(127, 0, 0, 1), me), IfaceId::Loopback);
        assert_eq!(
            route(Ipv4Address::new(127, 9, 9, 9), None),
            IfaceId::Loopback
        );
        assert_eq!(route(Ipv4Address::new(10, 0, 2, 2), me), IfaceId::Nic);
        assert_eq!(route(Ipv4Address::new(10, 0, 2, 15), me), IfaceId::Loopback);
        assert_eq!(route(Ipv4Address::new(10, 0, 2, 15), None), IfaceId::Nic);
        assert_eq!(bind_scope(Ipv4Address::UNSPECIFIED, None).len(), 2);
        assert_eq!(bind_scope(LOOPBACK_ADDR, me), &[IfaceId::Loopback]);
        assert_eq!(bind_scope(Ipv4Address::new(10, 0, 2, 15), me).len(), 2);
        assert_eq!(
            bind_scope(Ipv4Address::new(10, 0, 2, 16), me),
            &[IfaceId::Nic]
        );
    }
}
