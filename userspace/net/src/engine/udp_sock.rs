//! UDP sockets: bind (per interface or both), send, receive, multicast
//! groups. Methods of [`Engine`] that `dispatch` and the pending-request
//! service call.

use super::*;

pub(super) fn new_udp_socket() -> udp::Socket<'static> {
    udp::Socket::new(
        udp::PacketBuffer::new(
            vec![udp::PacketMetadata::EMPTY; UDP_RX_PACKETS],
            vec![0u8; UDP_RX_BUFFER],
        ),
        udp::PacketBuffer::new(
            vec![udp::PacketMetadata::EMPTY; UDP_TX_PACKETS],
            vec![0u8; UDP_TX_BUFFER],
        ),
    )
}

impl<D: Device> Engine<D> {
    pub(super) fn udp_bind(
        &mut self,
        client: ClientId,
        local: SockAddr,
    ) -> Result<Response, Error> {
        let ip: Ipv4Address = local.ip.into();
        if ip.is_multicast() || ip.is_broadcast() {
            return Err(Error::InvalidArgument);
        }
        let scope = loopback::bind_scope(ip, self.nic_addr());
        self.table.check_room(client, 1)?;
        self.stacks.check_room(scope.len())?;
        let port = if local.port == 0 {
            self.ephemeral_port(scope, Proto::Udp)?
        } else {
            if scope
                .iter()
                .any(|i| self.port_used(*i, local.port, Proto::Udp))
            {
                return Err(Error::AddrInUse);
            }
            local.port
        };
        let endpoint = IpListenEndpoint {
            addr: (!ip.is_unspecified()).then_some(IpAddress::Ipv4(ip)),
            port,
        };
        let mut parts = Vec::with_capacity(scope.len());
        for iface in scope {
            let mut socket = new_udp_socket();
            if socket.bind(endpoint).is_err() {
                for p in parts {
                    self.stacks.remove(p);
                }
                return Err(Error::InvalidArgument);
            }
            let handle = self.stacks.set(*iface).add(socket);
            parts.push(StackSocket {
                iface: *iface,
                handle,
            });
        }
        let local = SockAddr::new(local.ip, port);
        let kind = SocketKind::Udp(UdpSocket {
            local,
            parts: parts.clone(),
            groups: Vec::new(),
        });
        match self.table.insert(client, kind) {
            Ok(socket) => Ok(Response::Bound { socket, local }),
            Err(e) => {
                for p in parts {
                    self.stacks.remove(p);
                }
                Err(e)
            }
        }
    }

    pub(super) fn udp_send_to(
        &mut self,
        client: ClientId,
        id: SocketId,
        dst: SockAddr,
        data: &[u8],
    ) -> Result<Response, Error> {
        let parts = self.udp_of(client, id)?.parts.clone();
        if data.len() > MAX_DATA_LEN {
            return Err(Error::MessageTooLarge);
        }
        let dst_ip: Ipv4Address = dst.ip.into();
        if dst.port == 0 || dst_ip.is_unspecified() {
            return Err(Error::InvalidArgument);
        }
        let iface = loopback::route(dst_ip, self.nic_addr());
        if iface == IfaceId::Nic {
            self.nic_route(dst_ip)?;
        }
        // A socket bound only to loopback cannot reach the NIC and vice versa.
        let part = parts
            .iter()
            .find(|p| p.iface == iface)
            .copied()
            .ok_or(Error::NoRoute)?;
        self.stacks
            .udp(part)
            .send_slice(data, dst.to_endpoint())
            .map_err(|e| match e {
                udp::SendError::BufferFull => Error::BufferFull,
                udp::SendError::Unaddressable => Error::InvalidArgument,
            })?;
        Ok(Response::Sent {
            len: data.len() as u32,
        })
    }

    pub(super) fn join(
        &mut self,
        client: ClientId,
        id: SocketId,
        group: Ipv4Address,
    ) -> Result<Response, Error> {
        if !group.is_multicast() {
            return Err(Error::InvalidArgument);
        }
        let udp = self.udp_of(client, id)?;
        if !udp.parts.iter().any(|p| p.iface == IfaceId::Nic) {
            // Multicast is an NIC feature; a loopback-only socket cannot join.
            return Err(Error::Unsupported);
        }
        if udp.groups.contains(&group) {
            return Ok(Response::Ok);
        }
        self.nic.join_multicast_group(group).map_err(|e| match e {
            smoltcp::iface::MulticastError::GroupTableFull => Error::MulticastTableFull,
            _ => Error::InvalidArgument,
        })?;
        if let Ok(Entry {
            kind: SocketKind::Udp(u),
            ..
        }) = self.table.get_mut(client, id)
        {
            u.groups.push(group);
        }
        Ok(Response::Ok)
    }

    pub(super) fn leave(
        &mut self,
        client: ClientId,
        id: SocketId,
        group: Ipv4Address,
    ) -> Result<Response, Error> {
        self.udp_of(client, id)?;
        if let Ok(Entry {
            kind: SocketKind::Udp(u),
            ..
        }) = self.table.get_mut(client, id)
        {
            let before = u.groups.len();
            u.groups.retain(|g| *g != group);
            if u.groups.len() == before {
                return Err(Error::InvalidArgument);
            }
        }
        self.leave_if_unused(group);
        Ok(Response::Ok)
    }

    /// Leaves `group` on the NIC unless another socket still joined it.
    pub(super) fn leave_if_unused(&mut self, group: Ipv4Address) {
        let used = self.table.iter().any(|(_, e)| match &e.kind {
            SocketKind::Udp(u) => u.groups.contains(&group),
            _ => false,
        });
        if !used {
            let _ = self.nic.leave_multicast_group(group);
        }
    }

    pub(super) fn try_recv_from(&mut self, client: ClientId, id: SocketId) -> Option<Response> {
        let parts = match self.udp_of(client, id) {
            Ok(u) => u.parts.clone(),
            Err(e) => return Some(Response::Error(e)),
        };
        for part in parts {
            if let Ok((data, meta)) = self.stacks.udp(part).recv() {
                let n = data.len().min(MAX_DATA_LEN);
                let data = data.get(..n).unwrap_or_default().to_vec();
                return Some(Response::Datagram {
                    src: sock_addr(Some(meta.endpoint)),
                    data,
                });
            }
        }
        None
    }
}
