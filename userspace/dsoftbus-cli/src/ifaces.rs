//! Which IPv4 interfaces the daemon announces on.
//!
//! Default: every interface that is up and running, not loopback, with an
//! IPv4 address. Named interfaces (`--interface`) are used as given, loopback
//! included, but still only while up with an address. Addresses that can never
//! be dialled are skipped everywhere: 0.0.0.0, multicast, 255.255.255.255.

use std::net::Ipv4Addr;

use nix::net::if_::InterfaceFlags;

/// One usable interface address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Iface {
    pub name: String,
    pub addr: Ipv4Addr,
    /// Subnet broadcast address, when the interface has one.
    pub broadcast: Option<Ipv4Addr>,
    /// The interface supports multicast.
    pub multicast: bool,
}

/// True for addresses a peer could dial.
pub fn usable_addr(a: Ipv4Addr) -> bool {
    !(a.is_unspecified() || a.is_multicast() || a.is_broadcast())
}

/// Scans the system's interfaces and keeps the usable ones, in a stable order.
pub fn scan(selected: &[String]) -> std::io::Result<Vec<Iface>> {
    let mut out = Vec::new();
    for ifa in nix::ifaddrs::getifaddrs().map_err(std::io::Error::from)? {
        let Some(addr) = ifa
            .address
            .as_ref()
            .and_then(|a| a.as_sockaddr_in())
            .map(|s| s.ip())
        else {
            continue;
        };
        let f = ifa.flags;
        if !f.contains(InterfaceFlags::IFF_UP) || !f.contains(InterfaceFlags::IFF_RUNNING) {
            continue;
        }
        let chosen = if selected.is_empty() {
            !f.contains(InterfaceFlags::IFF_LOOPBACK) && !addr.is_loopback()
        } else {
            selected.iter().any(|s| s == &ifa.interface_name)
        };
        if !chosen || !usable_addr(addr) {
            continue;
        }
        let broadcast = if f.contains(InterfaceFlags::IFF_BROADCAST) {
            ifa.broadcast
                .as_ref()
                .and_then(|a| a.as_sockaddr_in())
                .map(|s| s.ip())
                .filter(|b| !b.is_unspecified())
        } else {
            None
        };
        out.push(Iface {
            name: ifa.interface_name.clone(),
            addr,
            broadcast,
            multicast: f.contains(InterfaceFlags::IFF_MULTICAST),
        });
    }
    out.sort_by(|a, b| (&a.name, a.addr).cmp(&(&b.name, b.addr)));
    out.dedup();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unusable_addresses_are_refused() {
        assert!(!usable_addr(Ipv4Addr::UNSPECIFIED));
        assert!(!usable_addr(Ipv4Addr::BROADCAST));
        assert!(!usable_addr(Ipv4Addr::new(239, 42, 0, 1)));
        assert!(usable_addr(Ipv4Addr::new(10, 77, 0, 2)));
    }

    #[test]
    fn default_scan_skips_loopback_and_named_scan_allows_it() {
        let all = scan(&[]).unwrap();
        assert!(all.iter().all(|i| !i.addr.is_loopback()));
        let lo = scan(&["lo".to_string()]).unwrap();
        assert!(lo.iter().all(|i| i.name == "lo"));
    }
}
