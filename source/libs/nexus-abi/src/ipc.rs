//! Bounded message channels between tasks.
//!
//! A channel is a pair of ends; each end can send to and receive from the
//! other. Each direction holds at most [`QUEUE_DEPTH`] messages of at most
//! [`MAX_MESSAGE`] bytes: a full queue makes the sender wait, it never grows.

use alloc::vec::Vec;
use core::future::poll_fn;
use core::task::{Context, Poll};

use spin::Mutex;

use crate::rt;
use crate::sys::{code, nr, syscall, Handle, WAIT_READ, WAIT_WRITE};

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
    /// A buffer outside the caller's memory (a bug in the caller).
    BadAddress,
}

impl core::fmt::Display for IpcError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            IpcError::WouldBlock => "would block",
            IpcError::Closed => "channel closed",
            IpcError::TooLarge => "message too large",
            IpcError::BadHandle => "bad channel handle",
            IpcError::BadAddress => "bad buffer address",
        })
    }
}

fn from_code(r: i64) -> IpcError {
    match r {
        code::WOULD_BLOCK => IpcError::WouldBlock,
        code::CLOSED => IpcError::Closed,
        code::TOO_LARGE => IpcError::TooLarge,
        code::BAD_ARGUMENT => IpcError::BadAddress,
        _ => IpcError::BadHandle,
    }
}

/// Receive buffer: one process, one thread, so one buffer serves every
/// channel; each message is copied out at its exact length.
static RECV_BUF: Mutex<[u8; MAX_MESSAGE]> = Mutex::new([0; MAX_MESSAGE]);

/// One end of a channel, owned by the process it was granted to.
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
        if msg.len() > MAX_MESSAGE {
            return Err(IpcError::TooLarge);
        }
        // SAFETY: `msg` is a live slice; the kernel copies it in.
        let r = unsafe {
            syscall(
                nr::CHAN_SEND,
                u64::from(self.handle.0),
                msg.as_ptr() as u64,
                msg.len() as u64,
                0,
                0,
            )
        };
        if r < 0 {
            Err(from_code(r))
        } else {
            Ok(())
        }
    }

    /// Receive without waiting.
    pub fn try_recv(&self) -> Result<Vec<u8>, IpcError> {
        let mut buf = RECV_BUF.lock();
        // SAFETY: the buffer is ours and MAX_MESSAGE bytes long.
        let r = unsafe {
            syscall(
                nr::CHAN_RECV,
                u64::from(self.handle.0),
                buf.as_mut_ptr() as u64,
                MAX_MESSAGE as u64,
                0,
                0,
            )
        };
        if r < 0 {
            return Err(from_code(r));
        }
        Ok(buf[..(r as usize).min(MAX_MESSAGE)].to_vec())
    }

    /// Poll-style receive for hand-written futures that watch many channels.
    pub fn poll_recv(&self, cx: &mut Context<'_>) -> Poll<Result<Vec<u8>, IpcError>> {
        match self.try_recv() {
            Err(IpcError::WouldBlock) => {
                rt::register(self.handle, WAIT_READ, cx.waker());
                Poll::Pending
            }
            other => Poll::Ready(other),
        }
    }

    /// Poll-style send.
    pub fn poll_send(&self, cx: &mut Context<'_>, msg: &[u8]) -> Poll<Result<(), IpcError>> {
        match self.try_send(msg) {
            Err(IpcError::WouldBlock) => {
                rt::register(self.handle, WAIT_WRITE, cx.waker());
                Poll::Pending
            }
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
        rt::forget(self.handle);
        // SAFETY: no pointer arguments.
        unsafe { syscall(nr::CHAN_CLOSE, u64::from(self.handle.0), 0, 0, 0, 0) };
    }
}
