//! TCP: listeners (a pool of listening smoltcp sockets per interface),
//! connect, accept, read, write, and orphaned sockets lingering after a
//! close. Methods of [`Engine`].

use super::*;

pub(super) fn new_tcp_socket() -> tcp::Socket<'static> {
    let mut s = tcp::Socket::new(
        tcp::SocketBuffer::new(vec![0u8; TCP_RX_BUFFER]),
        tcp::SocketBuffer::new(vec![0u8; TCP_TX_BUFFER]),
    );
    s.set_timeout(Some(TCP_TIMEOUT));
    s
}

impl<D: Device> Engine<D> {
    pub(super) fn tcp_listen(
        &mut self,
        client: ClientId,
        local: SockAddr,
        backlog: u8,
    ) -> Result<Response, Error> {
        let ip: Ipv4Address = local.ip.into();
        if local.port == 0 || ip.is_multicast() || ip.is_broadcast() {
            return Err(Error::InvalidArgument);
        }
        let scope = loopback::bind_scope(ip, self.nic_addr());
        self.table.check_room(client, 1)?;
        let clash = self.table.iter().any(|(_, e)| match &e.kind {
            SocketKind::Listener(l) => {
                l.local.port == local.port && l.scope.iter().any(|i| scope.contains(i))
            }
            _ => false,
        });
        if clash {
            return Err(Error::AddrInUse);
        }
        self.stacks.check_room(scope.len())?;
        let backlog = usize::from(backlog).clamp(1, MAX_BACKLOG);
        let endpoint = IpListenEndpoint {
            addr: (!ip.is_unspecified()).then_some(IpAddress::Ipv4(ip)),
            port: local.port,
        };
        let mut listener = TcpListener {
            local,
            scope: scope.to_vec(),
            backlog,
            listening: Vec::new(),
            ready: Default::default(),
        };
        for iface in scope {
            // The first socket per interface fits (checked above); the rest
            // of the pool is filled as the budget allows.
            for _ in 0..backlog {
                if self.stacks.check_room(1).is_err() {
                    break;
                }
                let mut socket = new_tcp_socket();
                if socket.listen(endpoint).is_err() {
                    break;
                }
                let handle = self.stacks.set(*iface).add(socket);
                listener.listening.push(StackSocket {
                    iface: *iface,
                    handle,
                });
            }
        }
        match self.table.insert(client, SocketKind::Listener(listener)) {
            Ok(socket) => Ok(Response::Bound { socket, local }),
            Err(e) => Err(e),
        }
    }

    pub(super) fn tcp_connect(
        &mut self,
        now: Instant,
        client: ClientId,
        req_id: u32,
        remote: SockAddr,
    ) -> Result<Option<Response>, Error> {
        let dst: Ipv4Address = remote.ip.into();
        if remote.port == 0 || dst.is_unspecified() || dst.is_multicast() || dst.is_broadcast() {
            return Err(Error::InvalidArgument);
        }
        let nic_addr = self.nic_addr();
        let iface = loopback::route(dst, nic_addr);
        let local_ip = match iface {
            IfaceId::Nic => {
                self.nic_route(dst)?;
                nic_addr.ok_or(Error::NotConfigured)?
            }
            IfaceId::Loopback if Some(dst) == nic_addr => dst,
            IfaceId::Loopback => LOOPBACK_ADDR,
        };
        self.table.check_room(client, 1)?;
        self.check_pending_room(client)?;
        self.stacks.check_room(1)?;
        let port = self.ephemeral_port(&[iface], Proto::Tcp)?;
        let mut socket = new_tcp_socket();
        let cx = match iface {
            IfaceId::Nic => self.nic.context(),
            IfaceId::Loopback => self.lo.context(),
        };
        socket
            .connect(
                cx,
                remote.to_endpoint(),
                IpEndpoint::new(local_ip.into(), port),
            )
            .map_err(|_| Error::InvalidArgument)?;
        let stack = StackSocket {
            iface,
            handle: self.stacks.set(iface).add(socket),
        };
        let socket = match self.table.insert(client, SocketKind::Stream(stack)) {
            Ok(id) => id,
            Err(e) => {
                self.stacks.remove(stack);
                return Err(e);
            }
        };
        self.pending.push(Pending {
            client,
            req_id,
            op: Op::Connect {
                socket,
                deadline: now + CONNECT_TIMEOUT,
            },
        });
        Ok(None)
    }

    pub(super) fn try_accept(&mut self, client: ClientId, id: SocketId) -> Option<Response> {
        let stack = match self.table.get_mut(client, id) {
            Ok(Entry {
                kind: SocketKind::Listener(l),
                ..
            }) => l.ready.pop_front()?,
            Ok(_) => return Some(Response::Error(Error::WrongSocketType)),
            Err(e) => return Some(Response::Error(e)),
        };
        match self.table.insert(client, SocketKind::Stream(stack)) {
            Ok(socket) => {
                let t = self.stacks.tcp(stack);
                Some(Response::Accepted {
                    socket,
                    local: sock_addr(t.local_endpoint()),
                    remote: sock_addr(t.remote_endpoint()),
                })
            }
            Err(e) => {
                // Keep the connection queued; the client may free a socket
                // and accept again.
                if let Ok(Entry {
                    kind: SocketKind::Listener(l),
                    ..
                }) = self.table.get_mut(client, id)
                {
                    l.ready.push_front(stack);
                }
                Some(Response::Error(e))
            }
        }
    }

    pub(super) fn try_read(
        &mut self,
        client: ClientId,
        id: SocketId,
        max_len: usize,
    ) -> Option<Response> {
        let stack = match self.stream_of(client, id) {
            Ok(s) => s,
            Err(e) => return Some(Response::Error(e)),
        };
        let t = self.stacks.tcp(stack);
        if t.can_recv() {
            let mut buf = vec![0u8; max_len];
            let n = t.recv_slice(&mut buf).unwrap_or(0);
            buf.truncate(n);
            Some(Response::Data { data: buf })
        } else if !t.may_recv() {
            // FIN received (or the connection is gone): end of stream.
            Some(Response::Data { data: Vec::new() })
        } else {
            None
        }
    }

    pub(super) fn try_write(
        &mut self,
        client: ClientId,
        id: SocketId,
        data: &[u8],
    ) -> Option<Response> {
        let stack = match self.stream_of(client, id) {
            Ok(s) => s,
            Err(e) => return Some(Response::Error(e)),
        };
        let t = self.stacks.tcp(stack);
        if !t.may_send() {
            return Some(Response::Error(if t.state() == tcp::State::Closed {
                Error::ConnectionReset
            } else {
                Error::NotConnected
            }));
        }
        if !t.can_send() {
            return None;
        }
        match t.send_slice(data) {
            Ok(0) => None,
            Ok(n) => Some(Response::Written { len: n as u32 }),
            Err(_) => Some(Response::Error(Error::NotConnected)),
        }
    }

    pub(super) fn try_connect(
        &mut self,
        client: ClientId,
        id: SocketId,
        deadline: Instant,
        now: Instant,
    ) -> Option<Response> {
        let stack = match self.stream_of(client, id) {
            Ok(s) => s,
            Err(e) => return Some(Response::Error(e)),
        };
        let t = self.stacks.tcp(stack);
        let failure = match t.state() {
            tcp::State::Established | tcp::State::CloseWait => {
                return Some(Response::Connected {
                    socket: id,
                    local: sock_addr(t.local_endpoint()),
                    remote: sock_addr(t.remote_endpoint()),
                });
            }
            tcp::State::Closed => Error::ConnectionRefused,
            _ if now >= deadline => Error::Timeout,
            _ => return None,
        };
        if let Ok(entry) = self.table.remove(client, id) {
            self.release(entry, false);
        }
        Some(Response::Error(failure))
    }

    /// Moves established connections from listening pools to accept queues
    /// and refills the pools.
    pub(super) fn service_listeners(&mut self) -> bool {
        let mut progressed = false;
        let stacks = &mut self.stacks;
        for (_, entry) in self.table.iter_mut() {
            let SocketKind::Listener(l) = &mut entry.kind else {
                continue;
            };
            let mut i = 0;
            while i < l.listening.len() {
                let s = l.listening[i];
                match stacks.tcp(s).state() {
                    tcp::State::Listen | tcp::State::SynReceived => i += 1,
                    tcp::State::Closed => {
                        stacks.remove(s);
                        l.listening.swap_remove(i);
                    }
                    _ => {
                        l.listening.swap_remove(i);
                        l.ready.push_back(s);
                        progressed = true;
                    }
                }
            }
            let endpoint = IpListenEndpoint {
                addr: {
                    let ip: Ipv4Address = l.local.ip.into();
                    (!ip.is_unspecified()).then_some(IpAddress::Ipv4(ip))
                },
                port: l.local.port,
            };
            let want = l.backlog.saturating_sub(l.ready.len());
            for iface in l.scope.clone() {
                let have = l.listening.iter().filter(|s| s.iface == iface).count();
                for _ in have..want {
                    if stacks.check_room(1).is_err() {
                        break;
                    }
                    let mut socket = new_tcp_socket();
                    if socket.listen(endpoint).is_err() {
                        break;
                    }
                    let handle = stacks.set(iface).add(socket);
                    l.listening.push(StackSocket { iface, handle });
                }
            }
        }
        progressed
    }

    /// Removes orphaned TCP sockets that finished closing; resets those past
    /// their linger deadline.
    pub(super) fn reap_orphans(&mut self, now: Instant) {
        let stacks = &mut self.stacks;
        self.orphans.retain(|(s, deadline)| {
            let t = stacks.tcp(*s);
            let done = t.state() == tcp::State::Closed && t.local_endpoint().is_none();
            if done || (now >= *deadline && t.state() == tcp::State::Closed) {
                stacks.remove(*s);
                return false;
            }
            if now >= *deadline {
                // One RST goes out on the next egress, then it is reaped.
                t.abort();
            }
            true
        });
    }
}
