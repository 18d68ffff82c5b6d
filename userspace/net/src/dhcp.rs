//! DHCPv4 client glue: applies smoltcp's DHCP socket events to the NIC.
//!
//! smoltcp's [`dhcpv4::Socket`] runs the protocol (DISCOVER → OFFER → REQUEST
//! → ACK, then RENEWING at T1 unicast to the server, REBINDING at T2 broadcast,
//! expiry at the lease end, with RFC 2131 retransmission back-off). It only
//! *reports* configuration; this module applies it:
//!
//! * `Configured(cfg)` → replace the NIC's addresses with `cfg.address`, replace
//!   the default route with `cfg.router` (or remove it), and flush the neighbour
//!   cache. smoltcp's `Interface::update_ip_addrs` flushes the cache itself;
//!   entries learned on a previous network must not survive a new lease.
//! * `Deconfigured` → remove the address and the default route. Before the
//!   first lease this is the socket's normal start-up state, not an error, and
//!   it is not reported (nothing changed).
//!
//! Every change is returned as a [`DhcpEvent`] so the daemon can print its
//! markers. A renewal that returns the same configuration produces no smoltcp
//! event and therefore no `DhcpEvent`: the interface simply stays bound.
//!
//! Lease policy: times come from the server (T1/T2 options, else 50 % / 87.5 %
//! of the lease); [`EngineConfig::dhcp_max_lease`](crate::EngineConfig) can
//! cap the lease so that renewals happen sooner (tests use it).

use alloc::vec::Vec;

use smoltcp::iface::{Interface, SocketHandle, SocketSet};
use smoltcp::socket::dhcpv4;
use smoltcp::time::Duration;
use smoltcp::wire::{IpCidr, Ipv4Address, Ipv4Cidr};

use crate::limits::MAX_DNS_SERVERS;

/// The lease currently applied to the NIC.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lease {
    /// Address and prefix.
    pub address: Ipv4Cidr,
    /// Default gateway, if the server sent one.
    pub gateway: Option<Ipv4Address>,
    /// DNS servers (at most [`MAX_DNS_SERVERS`]).
    pub dns: Vec<Ipv4Address>,
    /// The DHCP server that granted the lease.
    pub server: Ipv4Address,
}

/// A DHCP transition, reported through
/// [`NetEvent::Dhcp`](crate::NetEvent::Dhcp).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DhcpEvent {
    /// First lease (or first after a loss): the NIC is now configured.
    Bound(Lease),
    /// A new ACK changed the configuration while bound (e.g. a different
    /// address after a NAK and rediscovery, or a new router).
    Changed(Lease),
    /// The lease was lost (expired, NAKed, or the client was reset); the NIC
    /// address and default route have been removed.
    Deconfigured,
}

/// The engine's DHCP state: the socket handle plus the applied lease.
#[derive(Debug)]
pub struct DhcpClient {
    handle: SocketHandle,
    lease: Option<Lease>,
}

impl DhcpClient {
    /// Adds a DHCP socket to `sockets` (the NIC's set).
    pub fn new(sockets: &mut SocketSet<'static>, max_lease: Option<Duration>) -> DhcpClient {
        let mut socket = dhcpv4::Socket::new();
        socket.set_max_lease_duration(max_lease);
        let handle = sockets.add(socket);
        DhcpClient {
            handle,
            lease: None,
        }
    }

    /// The lease currently applied, if any.
    pub fn lease(&self) -> Option<&Lease> {
        self.lease.as_ref()
    }

    /// Restarts discovery (e.g. after a link flap). The current lease, if any,
    /// is reported as lost on the next [`DhcpClient::poll`].
    pub fn reset(&mut self, sockets: &mut SocketSet<'static>) {
        sockets.get_mut::<dhcpv4::Socket>(self.handle).reset();
    }

    /// Applies a pending socket event to `iface`; call after every
    /// `Interface::poll` of the NIC.
    pub fn poll(
        &mut self,
        iface: &mut Interface,
        sockets: &mut SocketSet<'static>,
    ) -> Option<DhcpEvent> {
        let event = sockets.get_mut::<dhcpv4::Socket>(self.handle).poll()?;
        match event {
            dhcpv4::Event::Configured(cfg) => {
                let lease = Lease {
                    address: cfg.address,
                    gateway: cfg.router,
                    dns: cfg
                        .dns_servers
                        .iter()
                        .copied()
                        .take(MAX_DNS_SERVERS)
                        .collect(),
                    server: cfg.server.address,
                };
                apply(iface, Some(&lease));
                let was_bound = self.lease.is_some();
                self.lease = Some(lease.clone());
                Some(if was_bound {
                    DhcpEvent::Changed(lease)
                } else {
                    DhcpEvent::Bound(lease)
                })
            }
            dhcpv4::Event::Deconfigured => {
                // Before the first lease this is the initial state: nothing to
                // undo and nothing to report.
                self.lease.take()?;
                apply(iface, None);
                Some(DhcpEvent::Deconfigured)
            }
        }
    }
}

/// Writes `lease` (or its absence) into the interface. smoltcp's
/// `update_ip_addrs` flushes the neighbour cache as part of the update.
fn apply(iface: &mut Interface, lease: Option<&Lease>) {
    iface.update_ip_addrs(|addrs| {
        addrs.clear();
        if let Some(lease) = lease {
            // Capacity is IFACE_MAX_ADDR_COUNT (>= 1); the list was just
            // cleared, so this cannot fail.
            let _ = addrs.push(IpCidr::Ipv4(lease.address));
        }
    });
    iface.routes_mut().remove_default_ipv4_route();
    if let Some(gw) = lease.and_then(|l| l.gateway) {
        // The route table was just emptied of its default route, so there
        // is room for one.
        let _ = iface.routes_mut().add_default_ipv4_route(gw);
    }
}
