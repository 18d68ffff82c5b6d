//! Bounded message channels between tasks.
//!
//! A channel is a pair of ends; each end can send to and receive from the
//! other. Each direction holds at most [`QUEUE_DEPTH`] messages of at most
//! [`MAX_MESSAGE`] bytes: a full queue makes the sender wait, it never grows.

use alloc::vec::Vec;
use core::future::poll_fn;
use core::task::{Context, Poll};

use crate::sys::{ops, Handle};

/// Largest message a channel carries, in bytes.
pub const MAX_MESSAGE: usize = 16 * 1024;
/// Messages queued per direction before senders wait.
pub const QUEUE_DEPTH: usize = 32;

/// IPC failures.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IpcError {
    /// Nothing to receive / no room to send yet (a waker was registered).
    WouldBlock,
    /// The other end was closed (or its task ended) and the queue is drained.
    Closed,
    /// The message exceeds [`MAX_MESSAGE`].
    TooLarge,
    /// The handle is not a channel end owned by the calling task.
    BadHandle,
}

impl core::fmt::Display for IpcError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            IpcError::WouldBlock => "would block",
            IpcError::Closed => "channel closed",
            IpcError::TooLarge => "message too large",
            IpcError::BadHandle => "bad channel handle",
        })
    }
}

/// One end of a channel, owned by the task it was granted to.
#[derive(Debug)]
pub struct Channel {
    handle: Handle,
}

impl Channel {
    /// Wrap a granted handle. The kernel checks ownership on every call.
    pub const fn from_handle(handle: Handle) -> Self {
        Channel { handle }
    }

    /// The underlying handle.
    pub const fn handle(&self) -> Handle {
        self.handle
    }

    /// Send without waiting.
    pub fn try_send(&self, msg: &[u8]) -> Result<(), IpcError> {
        (ops().chan_send)(self.handle, msg, None)
    }

    /// Receive without waiting.
    pub fn try_recv(&self) -> Result<Vec<u8>, IpcError> {
        (ops().chan_recv)(self.handle, None)
    }

    /// Poll-style receive for hand-written futures that watch many channels.
    pub fn poll_recv(&self, cx: &mut Context<'_>) -> Poll<Result<Vec<u8>, IpcError>> {
        match (ops().chan_recv)(self.handle, Some(cx.waker())) {
            Err(IpcError::WouldBlock) => Poll::Pending,
            other => Poll::Ready(other),
        }
    }

    /// Poll-style send.
    pub fn poll_send(&self, cx: &mut Context<'_>, msg: &[u8]) -> Poll<Result<(), IpcError>> {
        match (ops().chan_send)(self.handle, msg, Some(cx.waker())) {
            Err(IpcError::WouldBlock) => Poll::Pending,
            other => Poll::Ready(other),
        }
    }

    /// Send, waiting for queue space.
    pub async fn send(&self, msg: &[u8]) -> Result<(), IpcError> {
        poll_fn(|cx| self.poll_send(cx, msg)).await
    }

    /// Receive, waiting for a message.
    pub async fn recv(&self) -> Result<Vec<u8>, IpcError> {
        poll_fn(|cx| self.poll_recv(cx)).await
    }
}

impl Drop for Channel {
    fn drop(&mut self) {
        (ops().chan_close)(self.handle);
    }
}
