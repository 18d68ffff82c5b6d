//! Addressing: DHCP results, the RFC 3927 link-local fallback, and the ARP
//! tap that lets link-local see ARP frames before smoltcp does.

use super::*;

impl<D: Device> Engine<D> {
    /// A DHCP change: link-local stops while a lease holds (and restarts its
    /// fallback timer when the lease is lost); then the NIC address changed.
    /// Returns the link-local address the lease replaced, if any.
    pub(super) fn on_dhcp(&mut self, now: Instant, ev: &DhcpEvent) -> Option<Ipv4Cidr> {
        let (addr, replaced) = match ev {
            DhcpEvent::Bound(l) | DhcpEvent::Changed(l) => {
                let replaced = self.link_local.as_ref().and_then(LinkLocal::cidr);
                if let Some(ll) = self.link_local.as_mut() {
                    ll.stop();
                }
                (Some(l.address.address()), replaced)
            }
            DhcpEvent::Deconfigured => {
                if let Some(ll) = self.link_local.as_mut() {
                    ll.restart(now);
                }
                (None, None)
            }
        };
        self.on_nic_addr(addr);
        replaced
    }

    /// Feeds the ARP packets seen to the link-local client, runs its timers,
    /// applies what it reports and sends its frames. True if anything
    /// happened.
    pub(super) fn run_link_local(&mut self, now: Instant, events: &mut Vec<NetEvent>) -> bool {
        let Some(ll) = self.link_local.as_mut() else {
            self.arp_seen.clear();
            return false;
        };
        let mut reports = Vec::new();
        for arp in self.arp_seen.drain(..) {
            reports.extend(ll.on_arp(now, &arp));
        }
        reports.extend(ll.poll(now));
        let mut progressed = !reports.is_empty();
        while ll.has_tx() {
            let Some(token) = self.device.transmit(now) else {
                break;
            };
            let Some(out) = ll.take_tx() else {
                break;
            };
            let mac = self.mac.0;
            smoltcp::phy::TxToken::consume(token, ARP_FRAME_LEN, |buf| out.emit(mac, buf));
            progressed = true;
        }
        for report in reports {
            match report {
                LinkLocalEvent::Claimed(addr) => {
                    let cidr = Ipv4Cidr::new(addr, crate::linklocal::LINK_LOCAL_PREFIX);
                    self.nic.update_ip_addrs(|addrs| {
                        addrs.clear();
                        let _ = addrs.push(IpCidr::Ipv4(cidr));
                    });
                    self.nic.routes_mut().remove_default_ipv4_route();
                    self.on_nic_addr(Some(addr));
                    events.push(NetEvent::LinkLocalClaimed(cidr));
                }
                LinkLocalEvent::CandidateConflict(addr) => {
                    events.push(NetEvent::LinkLocalConflict {
                        addr,
                        claimed: false,
                    });
                }
                LinkLocalEvent::Lost(addr) => {
                    self.nic.update_ip_addrs(|addrs| addrs.clear());
                    self.on_nic_addr(None);
                    events.push(NetEvent::LinkLocalConflict {
                        addr,
                        claimed: true,
                    });
                }
            }
        }
        progressed
    }

    /// Keeps the loopback interface's copy of the NIC address in step and
    /// resets NIC streams whose local address is gone.
    pub(super) fn on_nic_addr(&mut self, addr: Option<Ipv4Address>) {
        self.lo.update_ip_addrs(|addrs| {
            addrs.clear();
            let _ = addrs.push(IpCidr::Ipv4(LOOPBACK_CIDR));
            if let Some(a) = addr {
                let _ = addrs.push(IpCidr::Ipv4(Ipv4Cidr::new(a, 32)));
            }
        });
        for (_, entry) in self.table.iter_mut() {
            let SocketKind::Stream(s) = &entry.kind else {
                continue;
            };
            if s.iface != IfaceId::Nic {
                continue;
            }
            let t = self.stacks.tcp(*s);
            let local = t.local_endpoint().map(|e| e.addr);
            if local.is_some() && local != addr.map(IpAddress::Ipv4) {
                t.abort();
            }
        }
    }
}

/// The NIC device as smoltcp sees it: every received frame is passed on
/// unchanged, and the ARP packets among them are also noted (at most
/// [`MAX_ARP_SEEN`] per interface poll; more are not noted) for the
/// link-local client, which must see ARP traffic smoltcp ignores (probes from
/// 0.0.0.0, packets for addresses not yet configured).
pub(super) struct ArpTap<'d, D: Device> {
    pub(super) inner: &'d mut D,
    pub(super) seen: &'d mut Vec<ArpSeen>,
}

pub(super) struct ArpTapRx<'a, R> {
    inner: R,
    seen: &'a mut Vec<ArpSeen>,
}

impl<R: smoltcp::phy::RxToken> smoltcp::phy::RxToken for ArpTapRx<'_, R> {
    fn consume<T, F>(self, f: F) -> T
    where
        F: FnOnce(&[u8]) -> T,
    {
        let seen = self.seen;
        self.inner.consume(|frame| {
            if seen.len() < MAX_ARP_SEEN {
                if let Some(arp) = ArpSeen::parse_frame(frame) {
                    seen.push(arp);
                }
            }
            f(frame)
        })
    }

    fn meta(&self) -> smoltcp::phy::PacketMeta {
        self.inner.meta()
    }
}

impl<D: Device> Device for ArpTap<'_, D> {
    type RxToken<'a>
        = ArpTapRx<'a, D::RxToken<'a>>
    where
        Self: 'a;
    type TxToken<'a>
        = D::TxToken<'a>
    where
        Self: 'a;

    fn receive(&mut self, t: Instant) -> Option<(Self::RxToken<'_>, Self::TxToken<'_>)> {
        let (rx, tx) = self.inner.receive(t)?;
        Some((
            ArpTapRx {
                inner: rx,
                seen: self.seen,
            },
            tx,
        ))
    }

    fn transmit(&mut self, t: Instant) -> Option<Self::TxToken<'_>> {
        self.inner.transmit(t)
    }

    fn capabilities(&self) -> smoltcp::phy::DeviceCapabilities {
        self.inner.capabilities()
    }
}
