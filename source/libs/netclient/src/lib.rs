//! The client side of the sockets facade (docs/networking/os-net.md).
//!
//! A [`NetClient`] wraps the one channel a service was granted to
//! `netstackd`. Many calls may be in flight at once from the same task —
//! a parked `TcpAccept` must not stop a `TcpConnect` — so every request
//! carries an id and responses are matched to their caller. Clones share the
//! channel; at most [`MAX_IN_FLIGHT`] calls wait at a time (the daemon parks
//! at most that many per client too).
#![no_std]

extern crate alloc;

use alloc::collections::{BTreeMap, BTreeSet};
use alloc::rc::Rc;
use alloc::vec::Vec;
use core::cell::RefCell;
use core::future::poll_fn;
use core::task::{Poll, Waker};

use nexus_abi::{Channel, IpcError};
use nexus_net::facade::{decode_response, encode_request};
pub use nexus_net::facade::{
    Error as NetError, InterfaceStatus, Ipv4, Request, Response, SockAddr, SocketId,
};
use nexus_net::limits::{MAX_PENDING_PER_CLIENT, MAX_STREAM_DATA_LEN};

/// Most stream bytes one read or write call moves (one facade message).
pub const MAX_STREAM_CHUNK: usize = MAX_STREAM_DATA_LEN;

// Every facade message must fit one IPC message.
const _: () = assert!(nexus_net::limits::MAX_MESSAGE_SIZE <= nexus_abi::ipc::MAX_MESSAGE);

/// Most calls waiting for an answer at once.
pub const MAX_IN_FLIGHT: usize = MAX_PENDING_PER_CLIENT;
/// Most abandoned calls remembered (their late answers are discarded); beyond
/// it the oldest is forgotten, and its answer, if it ever comes, is dropped as
/// unsolicited anyway.
pub const MAX_ABANDONED: usize = 64;

/// Why a call failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CallError {
    /// The daemon answered with an error.
    Net(NetError),
    /// The channel to the daemon failed (daemon gone, bad handle...).
    Ipc(IpcError),
    /// The request could not be encoded or the answer decoded.
    Codec,
    /// The daemon answered with a response of the wrong kind.
    Unexpected,
    /// Too many calls in flight.
    Busy,
}

impl core::fmt::Display for CallError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            CallError::Net(e) => write!(f, "{e:?}"),
            CallError::Ipc(e) => write!(f, "ipc: {e}"),
            CallError::Codec => f.write_str("facade codec error"),
            CallError::Unexpected => f.write_str("unexpected facade response"),
            CallError::Busy => f.write_str("too many facade calls in flight"),
        }
    }
}

struct Inner {
    chan: Channel,
    next_id: u32,
    /// Answers received for calls still waiting.
    done: BTreeMap<u32, Response>,
    /// Waiting calls and how to wake them.
    waiting: BTreeMap<u32, Option<Waker>>,
    /// Calls whose future was dropped; their answers are discarded.
    abandoned: BTreeSet<u32>,
}

/// A handle on the facade. Cheap to clone; single-task only.
#[derive(Clone)]
pub struct NetClient {
    inner: Rc<RefCell<Inner>>,
}

/// Removes a call's bookkeeping if its future is dropped before the answer.
struct CallGuard<'a> {
    client: &'a NetClient,
    id: u32,
    finished: bool,
}

impl Drop for CallGuard<'_> {
    fn drop(&mut self) {
        if !self.finished {
            let mut inner = self.client.inner.borrow_mut();
            inner.waiting.remove(&self.id);
            if inner.done.remove(&self.id).is_none() {
                if inner.abandoned.len() >= MAX_ABANDONED {
                    inner.abandoned.pop_first();
                }
                inner.abandoned.insert(self.id);
            }
            for w in inner.waiting.values().flatten() {
                w.wake_by_ref();
            }
        }
    }
}

impl NetClient {
    /// Wrap the channel granted to `netstackd`.
    pub fn new(chan: Channel) -> Self {
        NetClient {
            inner: Rc::new(RefCell::new(Inner {
                chan,
                next_id: 1,
                done: BTreeMap::new(),
                waiting: BTreeMap::new(),
                abandoned: BTreeSet::new(),
            })),
        }
    }

    /// Send one request and wait for its answer (`Response::Error` becomes
    /// `Err(CallError::Net)`).
    pub async fn call(&self, request: Request) -> Result<Response, CallError> {
        let (id, bytes) = {
            let mut inner = self.inner.borrow_mut();
            if inner.waiting.len() >= MAX_IN_FLIGHT {
                return Err(CallError::Busy);
            }
            let id = inner.next_id;
            inner.next_id = inner.next_id.wrapping_add(1).max(1);
            let bytes = encode_request(id, &request).map_err(|_| CallError::Codec)?;
            inner.waiting.insert(id, None);
            (id, bytes)
        };
        let mut guard = CallGuard {
            client: self,
            id,
            finished: false,
        };
        poll_fn(|cx| self.inner.borrow().chan.poll_send(cx, &bytes))
            .await
            .map_err(CallError::Ipc)?;
        let response = poll_fn(|cx| {
            let mut inner = self.inner.borrow_mut();
            loop {
                if let Some(r) = inner.done.remove(&id) {
                    return Poll::Ready(Ok(r));
                }
                match inner.chan.poll_recv(cx) {
                    Poll::Ready(Ok(msg)) => {
                        let Ok((rid, resp)) = decode_response(&msg) else {
                            return Poll::Ready(Err(CallError::Codec));
                        };
                        if inner.abandoned.remove(&rid) {
                            continue;
                        }
                        if let Some(slot) = inner.waiting.get_mut(&rid) {
                            if let Some(w) = slot.take() {
                                w.wake();
                            }
                            inner.done.insert(rid, resp);
                        }
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(CallError::Ipc(e))),
                    Poll::Pending => {
                        // The channel keeps one waker; remember ours so whoever
                        // receives our answer can wake us.
                        if let Some(slot) = inner.waiting.get_mut(&id) {
                            *slot = Some(cx.waker().clone());
                        }
                        return Poll::Pending;
                    }
                }
            }
        })
        .await;
        guard.finished = true;
        {
            // The channel remembers one waker, possibly ours. Wake the other
            // waiting calls so one of them registers itself for the next answer.
            let mut inner = self.inner.borrow_mut();
            inner.waiting.remove(&id);
            for w in inner.waiting.values().flatten() {
                w.wake_by_ref();
            }
        }
        drop(guard);
        match response? {
            Response::Error(e) => Err(CallError::Net(e)),
            r => Ok(r),
        }
    }

    /// Interface status (address, gateway, MAC).
    pub async fn status(&self) -> Result<InterfaceStatus, CallError> {
        match self.call(Request::InterfaceStatus).await? {
            Response::Status(s) => Ok(s),
            _ => Err(CallError::Unexpected),
        }
    }

    /// ICMP echo; returns the round-trip time in microseconds.
    pub async fn ping(&self, target: Ipv4, timeout_ms: u32) -> Result<u64, CallError> {
        match self.call(Request::Ping { target, timeout_ms }).await? {
            Response::Pong { rtt_us } => Ok(rtt_us),
            _ => Err(CallError::Unexpected),
        }
    }

    /// Bind a UDP socket.
    pub async fn udp_bind(&self, local: SockAddr) -> Result<(SocketId, SockAddr), CallError> {
        match self.call(Request::UdpBind { local }).await? {
            Response::Bound { socket, local } => Ok((socket, local)),
            _ => Err(CallError::Unexpected),
        }
    }

    /// Send one datagram.
    pub async fn udp_send_to(
        &self,
        socket: SocketId,
        dst: SockAddr,
        data: &[u8],
    ) -> Result<(), CallError> {
        let data = data.to_vec();
        match self.call(Request::UdpSendTo { socket, dst, data }).await? {
            Response::Sent { .. } => Ok(()),
            _ => Err(CallError::Unexpected),
        }
    }

    /// Receive one datagram.
    pub async fn udp_recv_from(&self, socket: SocketId) -> Result<(SockAddr, Vec<u8>), CallError> {
        match self.call(Request::UdpRecvFrom { socket }).await? {
            Response::Datagram { src, data } => Ok((src, data)),
            _ => Err(CallError::Unexpected),
        }
    }

    /// Join a multicast group on a UDP socket.
    pub async fn udp_join_multicast(&self, socket: SocketId, group: Ipv4) -> Result<(), CallError> {
        match self
            .call(Request::UdpJoinMulticast { socket, group })
            .await?
        {
            Response::Ok => Ok(()),
            _ => Err(CallError::Unexpected),
        }
    }

    /// Listen for TCP connections.
    pub async fn tcp_listen(
        &self,
        local: SockAddr,
        backlog: u8,
    ) -> Result<(SocketId, SockAddr), CallError> {
        match self.call(Request::TcpListen { local, backlog }).await? {
            Response::Bound { socket, local } => Ok((socket, local)),
            _ => Err(CallError::Unexpected),
        }
    }

    /// Accept one connection: (stream, local, remote).
    pub async fn tcp_accept(
        &self,
        socket: SocketId,
    ) -> Result<(SocketId, SockAddr, SockAddr), CallError> {
        match self.call(Request::TcpAccept { socket }).await? {
            Response::Accepted {
                socket,
                local,
                remote,
            } => Ok((socket, local, remote)),
            _ => Err(CallError::Unexpected),
        }
    }

    /// Connect: (stream, local, remote).
    pub async fn tcp_connect(
        &self,
        remote: SockAddr,
    ) -> Result<(SocketId, SockAddr, SockAddr), CallError> {
        match self.call(Request::TcpConnect { remote }).await? {
            Response::Connected {
                socket,
                local,
                remote,
            } => Ok((socket, local, remote)),
            _ => Err(CallError::Unexpected),
        }
    }

    /// Read up to `max_len` bytes; empty at end of stream.
    pub async fn tcp_read(&self, socket: SocketId, max_len: usize) -> Result<Vec<u8>, CallError> {
        let max_len = max_len.min(MAX_STREAM_DATA_LEN) as u32;
        match self.call(Request::TcpRead { socket, max_len }).await? {
            Response::Data { data } => Ok(data),
            _ => Err(CallError::Unexpected),
        }
    }

    /// Write all of `data`, in facade-sized pieces.
    pub async fn tcp_write_all(&self, socket: SocketId, mut data: &[u8]) -> Result<(), CallError> {
        while !data.is_empty() {
            let piece = &data[..data.len().min(MAX_STREAM_DATA_LEN)];
            let written = match self
                .call(Request::TcpWrite {
                    socket,
                    data: piece.to_vec(),
                })
                .await?
            {
                Response::Written { len } => len as usize,
                _ => return Err(CallError::Unexpected),
            };
            if written == 0 || written > piece.len() {
                return Err(CallError::Unexpected);
            }
            data = &data[written..];
        }
        Ok(())
    }

    /// Close any socket.
    pub async fn close(&self, socket: SocketId) -> Result<(), CallError> {
        match self.call(Request::Close { socket }).await? {
            Response::Ok => Ok(()),
            _ => Err(CallError::Unexpected),
        }
    }
}
