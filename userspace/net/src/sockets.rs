//! The facade socket table: opaque handles → stack sockets, per client.
//!
//! A facade socket is what a client holds ([`SocketId`]); it maps to one or
//! more smoltcp sockets ([`StackSocket`]) on one or both interfaces. Every
//! lookup is keyed by `(owner, id)`: a handle presented by a client that does
//! not own it fails exactly like a handle that never existed
//! ([`Error::InvalidSocket`]), so clients cannot probe or touch each other's
//! sockets. Handle numbers are never 0 and are not reused while the engine
//! runs (a 32-bit counter that skips live values on wrap-around), so a stale
//! handle cannot silently alias a newer socket.

use alloc::collections::{BTreeMap, VecDeque};
use alloc::vec::Vec;

use smoltcp::iface::SocketHandle;
use smoltcp::wire::Ipv4Address;

use crate::engine::ClientId;
use crate::facade::{Error, SockAddr, SocketId};
use crate::limits::{MAX_SOCKETS_PER_CLIENT, MAX_SOCKETS_TOTAL};
use crate::loopback::IfaceId;

/// One smoltcp socket and the interface whose `SocketSet` holds it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StackSocket {
    /// Interface (and so socket set).
    pub iface: IfaceId,
    /// Handle in that set.
    pub handle: SocketHandle,
}

/// A UDP facade socket: one stack socket per interface in its bind scope.
#[derive(Debug)]
pub struct UdpSocket {
    /// Bound address (port resolved).
    pub local: SockAddr,
    /// Stack sockets, one per interface.
    pub parts: Vec<StackSocket>,
    /// Multicast groups joined through this socket.
    pub groups: Vec<Ipv4Address>,
}

/// A TCP listener: a pool of listening stack sockets per interface plus the
/// connections the stack completed that the client has not accepted yet.
#[derive(Debug)]
pub struct TcpListener {
    /// Listen address.
    pub local: SockAddr,
    /// Interfaces listened on.
    pub scope: Vec<IfaceId>,
    /// Maximum of `ready` + listening sockets per interface.
    pub backlog: usize,
    /// Sockets in LISTEN / SYN-RECEIVED.
    pub listening: Vec<StackSocket>,
    /// Established connections waiting for `TcpAccept`.
    pub ready: VecDeque<StackSocket>,
}

/// What a facade socket is.
#[derive(Debug)]
pub enum SocketKind {
    /// UDP socket.
    Udp(UdpSocket),
    /// TCP listener.
    Listener(TcpListener),
    /// TCP stream (accepted or connected).
    Stream(StackSocket),
}

/// A facade socket and its owner.
#[derive(Debug)]
pub struct Entry {
    /// Owning client.
    pub owner: ClientId,
    /// The socket.
    pub kind: SocketKind,
}

/// All facade sockets, bounded by [`MAX_SOCKETS_PER_CLIENT`] and
/// [`MAX_SOCKETS_TOTAL`].
#[derive(Debug, Default)]
pub struct SocketTable {
    entries: BTreeMap<u32, Entry>,
    next: u32,
}

impl SocketTable {
    /// An empty table.
    pub fn new() -> SocketTable {
        SocketTable {
            entries: BTreeMap::new(),
            next: 1,
        }
    }

    /// Sockets held by `owner`.
    pub fn count_for(&self, owner: ClientId) -> usize {
        self.entries.values().filter(|e| e.owner == owner).count()
    }

    /// Sockets held by everyone.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when no socket exists.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// `Err(NoSockets)` unless `owner` may open `n` more sockets.
    pub fn check_room(&self, owner: ClientId, n: usize) -> Result<(), Error> {
        if self.entries.len() + n > MAX_SOCKETS_TOTAL
            || self.count_for(owner) + n > MAX_SOCKETS_PER_CLIENT
        {
            return Err(Error::NoSockets);
        }
        Ok(())
    }

    /// Adds a socket for `owner`, enforcing the bounds.
    pub fn insert(&mut self, owner: ClientId, kind: SocketKind) -> Result<SocketId, Error> {
        self.check_room(owner, 1)?;
        // At most MAX_SOCKETS_TOTAL ids are live, so this finds a free one
        // within MAX_SOCKETS_TOTAL + 1 steps.
        let mut id = self.next;
        while id == 0 || self.entries.contains_key(&id) {
            id = id.wrapping_add(1);
        }
        self.next = id.wrapping_add(1);
        self.entries.insert(id, Entry { owner, kind });
        Ok(SocketId(id))
    }

    /// The socket `id` if `owner` holds it.
    pub fn get(&self, owner: ClientId, id: SocketId) -> Result<&Entry, Error> {
        match self.entries.get(&id.0) {
            Some(e) if e.owner == owner => Ok(e),
            _ => Err(Error::InvalidSocket),
        }
    }

    /// Mutable access to the socket `id` if `owner` holds it.
    pub fn get_mut(&mut self, owner: ClientId, id: SocketId) -> Result<&mut Entry, Error> {
        match self.entries.get_mut(&id.0) {
            Some(e) if e.owner == owner => Ok(e),
            _ => Err(Error::InvalidSocket),
        }
    }

    /// Removes the socket `id` if `owner` holds it.
    pub fn remove(&mut self, owner: ClientId, id: SocketId) -> Result<Entry, Error> {
        self.get(owner, id)?;
        self.entries.remove(&id.0).ok_or(Error::InvalidSocket)
    }

    /// Ids of every socket `owner` holds.
    pub fn ids_of(&self, owner: ClientId) -> Vec<SocketId> {
        self.entries
            .iter()
            .filter(|(_, e)| e.owner == owner)
            .map(|(id, _)| SocketId(*id))
            .collect()
    }

    /// All sockets.
    pub fn iter(&self) -> impl Iterator<Item = (SocketId, &Entry)> {
        self.entries.iter().map(|(id, e)| (SocketId(*id), e))
    }

    /// All sockets, mutably.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = (SocketId, &mut Entry)> {
        self.entries.iter_mut().map(|(id, e)| (SocketId(*id), e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream() -> SocketKind {
        SocketKind::Udp(UdpSocket {
            local: SockAddr::new(crate::facade::Ipv4::LOCALHOST, 1),
            parts: Vec::new(),
            groups: Vec::new(),
        })
    }

    #[test]
    fn handles_are_scoped_to_their_owner() {
        let mut t = SocketTable::new();
        let a = ClientId(1);
        let b = ClientId(2);
        let id = t.insert(a, stream()).unwrap();
        assert!(t.get(a, id).is_ok());
        assert_eq!(t.get(b, id).err(), Some(Error::InvalidSocket));
        assert_eq!(t.remove(b, id).err(), Some(Error::InvalidSocket));
        assert!(t.remove(a, id).is_ok());
    }

    #[test]
    fn per_client_bound() {
        let mut t = SocketTable::new();
        for _ in 0..MAX_SOCKETS_PER_CLIENT {
            assert!(t.insert(ClientId(1), stream()).is_ok());
        }
        assert_eq!(
            t.insert(ClientId(1), stream()).err(),
            Some(Error::NoSockets)
        );
        assert!(t.insert(ClientId(2), stream()).is_ok());
    }
}
