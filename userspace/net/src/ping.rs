//! ICMP echo: replies and the ping operation.
//!
//! # Echo replies
//!
//! smoltcp 0.12 answers every ICMPv4 echo request addressed to one of an
//! interface's unicast addresses inside `InterfaceInner::process_icmpv4`,
//! unconditionally: there is no `auto-icmp-echo-reply` feature in 0.12 (older
//! releases had one), and no socket is needed. Both the NIC and the loopback
//! interface therefore answer pings as soon as they have an address. An echo
//! request sent to a broadcast address is answered too (from the interface's
//! own address); other ICMP replies are never sent to or for broadcasts, and
//! nothing is sent to a non-unicast source. Incoming echo replies are only
//! delivered to an ICMP socket bound to their identifier, i.e. to a ping.
//!
//! # Ping
//!
//! [`PingOp`] is one `Request::Ping`: an ICMP socket bound to a unique
//! identifier on the interface [`route`](crate::loopback::route) picks. It is
//! cooperative: it never waits, it only acts when the engine polls it, and
//! [`PingOp::poll_at`] tells the engine when that must next happen.
//!
//! The first echo to a neighbour not yet in the ARP cache is parked by smoltcp
//! while it sends an ARP request (retried at most once a second); if that ARP
//! exchange or the echo is lost, nothing re-sends it. The op therefore sends a
//! new echo (next sequence number) every
//! [`PING_RETRY_INTERVAL`](crate::limits::PING_RETRY_INTERVAL) until a reply
//! to any of its echoes arrives or the deadline passes. The RTT reported is
//! that of the echo that was answered.

use alloc::vec;

use smoltcp::iface::{SocketHandle, SocketSet};
use smoltcp::phy::ChecksumCapabilities;
use smoltcp::socket::icmp;
use smoltcp::time::{Duration, Instant};
use smoltcp::wire::{Icmpv4Packet, Icmpv4Repr, IpAddress, Ipv4Address};

use crate::limits::{PING_PAYLOAD_LEN, PING_RETRY_INTERVAL};
use crate::loopback::IfaceId;

/// Echoes remembered for RTT matching; older ones no longer count.
const SENT_SLOTS: usize = 8;

/// Outcome of polling a [`PingOp`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PingStatus {
    /// Still waiting.
    Pending,
    /// A reply arrived.
    Reply {
        /// Round-trip time of the answered echo.
        rtt: Duration,
    },
    /// The deadline passed without a reply.
    Timeout,
}

/// One ping in progress.
#[derive(Debug)]
pub struct PingOp {
    /// Target address.
    pub target: Ipv4Address,
    /// Interface the ICMP socket lives on.
    pub iface: IfaceId,
    /// The ICMP socket in that interface's set.
    pub handle: SocketHandle,
    ident: u16,
    next_seq: u16,
    sent: [Option<(u16, Instant)>; SENT_SLOTS],
    next_send: Instant,
    deadline: Instant,
}

impl PingOp {
    /// Creates the ICMP socket (bound to `ident`) in `sockets` and schedules
    /// the first echo for the next poll.
    pub fn new(
        sockets: &mut SocketSet<'static>,
        iface: IfaceId,
        target: Ipv4Address,
        ident: u16,
        now: Instant,
        timeout: Duration,
    ) -> PingOp {
        let rx = icmp::PacketBuffer::new(vec![icmp::PacketMetadata::EMPTY; 4], vec![0u8; 512]);
        let tx = icmp::PacketBuffer::new(vec![icmp::PacketMetadata::EMPTY; 4], vec![0u8; 512]);
        let mut socket = icmp::Socket::new(rx, tx);
        // Binding to a non-zero ident on a fresh socket cannot fail; if it
        // somehow did, the op would simply time out.
        let _ = socket.bind(icmp::Endpoint::Ident(ident));
        let handle = sockets.add(socket);
        PingOp {
            target,
            iface,
            handle,
            ident,
            next_seq: 0,
            sent: [None; SENT_SLOTS],
            next_send: now,
            deadline: now + timeout,
        }
    }

    /// The ICMP identifier of this op.
    pub fn ident(&self) -> u16 {
        self.ident
    }

    /// When the op next needs a poll (next echo or the deadline).
    pub fn poll_at(&self) -> Instant {
        self.next_send.min(self.deadline)
    }

    /// Consumes replies, then times out or sends the next echo when due.
    pub fn poll(&mut self, sockets: &mut SocketSet<'static>, now: Instant) -> PingStatus {
        let socket = sockets.get_mut::<icmp::Socket>(self.handle);
        while let Ok((payload, from)) = socket.recv() {
            if from != IpAddress::Ipv4(self.target) {
                continue;
            }
            let Ok(packet) = Icmpv4Packet::new_checked(payload) else {
                continue;
            };
            let Ok(repr) = Icmpv4Repr::parse(&packet, &ChecksumCapabilities::ignored()) else {
                continue;
            };
            if let Icmpv4Repr::EchoReply { ident, seq_no, .. } = repr {
                if ident != self.ident {
                    continue;
                }
                let sent_at = self
                    .sent
                    .iter()
                    .flatten()
                    .find(|(seq, _)| *seq == seq_no)
                    .map(|(_, at)| *at);
                if let Some(at) = sent_at {
                    return PingStatus::Reply { rtt: now - at };
                }
            }
        }
        if now >= self.deadline {
            return PingStatus::Timeout;
        }
        if now >= self.next_send {
            if socket.can_send() {
                let seq = self.next_seq;
                let payload = [0x4e_u8; PING_PAYLOAD_LEN];
                let repr = Icmpv4Repr::EchoRequest {
                    ident: self.ident,
                    seq_no: seq,
                    data: &payload,
                };
                if let Ok(buf) = socket.send(repr.buffer_len(), IpAddress::Ipv4(self.target)) {
                    repr.emit(
                        &mut Icmpv4Packet::new_unchecked(buf),
                        &ChecksumCapabilities::default(),
                    );
                    self.sent[usize::from(seq) % SENT_SLOTS] = Some((seq, now));
                    self.next_seq = seq.wrapping_add(1);
                }
            }
            self.next_send = now + PING_RETRY_INTERVAL;
        }
        PingStatus::Pending
    }

    /// Removes the op's socket.
    pub fn close(self, sockets: &mut SocketSet<'static>) {
        sockets.remove(self.handle);
    }
}
