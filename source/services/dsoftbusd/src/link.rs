//! One session stream: a `dsoftbus::Connection` pumped over a facade TCP
//! socket. The connection is sans-IO; this is the thin I/O shell around it.

use alloc::vec::Vec;
use core::pin::pin;

use core::cell::RefCell;
use core::net::IpAddr;

use dsoftbus::connection::GatedError;
use dsoftbus::node::Admission;
use dsoftbus::ratelimit::Limited;
use dsoftbus::{ConnError, Connection, Event, IdentityBindings};
use futures_util::future::{select, Either};
use nexus_abi::time;
use nexus_netclient::{CallError, NetClient, SocketId};

/// Largest read asked of the facade at once (one facade message).
pub const READ_CHUNK: usize = nexus_netclient::MAX_STREAM_CHUNK;

/// Why a link stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkError {
    /// The protocol core failed the connection (auth, identity, framing...).
    Conn(ConnError),
    /// The socket failed.
    Net(CallError),
    /// The peer closed the stream.
    Eof,
    /// The handshake was not admitted (rate limit); no DH was computed.
    Limited(Limited),
}

/// Handshake admission for an accepted stream: the node's admission (its
/// pre-DH limiter) and the stream's source address.
pub struct Gate<'a> {
    /// The node's admission (per-source and global token buckets).
    pub admission: &'a RefCell<Admission>,
    /// Where the stream came from.
    pub source: IpAddr,
}

impl core::fmt::Display for LinkError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            LinkError::Conn(e) => write!(f, "{e}"),
            LinkError::Net(e) => write!(f, "socket: {e}"),
            LinkError::Eof => f.write_str("peer closed the stream"),
            LinkError::Limited(l) => write!(f, "{l}"),
        }
    }
}

impl From<CallError> for LinkError {
    fn from(e: CallError) -> Self {
        LinkError::Net(e)
    }
}

/// The protocol core's clock, from the kernel's.
pub fn now() -> dsoftbus::Instant {
    dsoftbus::Instant::from_millis(time::now().as_millis())
}

/// A connection and its socket.
pub struct Link {
    net: NetClient,
    sock: SocketId,
    /// The protocol state machine (public for `peer_id`, `send_ping`...).
    pub conn: Connection,
    /// Bytes read but not yet taken by the connection: at most one read
    /// (`READ_CHUNK`), since nothing is read while it holds anything.
    inbox: Vec<u8>,
}

impl Link {
    /// Pair a connection with its socket.
    pub fn new(net: NetClient, sock: SocketId, conn: Connection) -> Self {
        Link {
            net,
            sock,
            conn,
            inbox: Vec::new(),
        }
    }

    /// Write out everything the connection queued.
    pub async fn flush(&mut self) -> Result<(), LinkError> {
        while !self.conn.transmit_buf().is_empty() {
            let out = self.conn.take_transmit();
            self.net.tcp_write_all(self.sock, &out).await?;
        }
        Ok(())
    }

    /// The next protocol event, reading from the socket as needed. The
    /// handshake deadline is enforced here with the kernel clock.
    pub async fn next_event<B: IdentityBindings + ?Sized>(
        &mut self,
        bindings: &B,
    ) -> Result<Event, LinkError> {
        self.next_event_gated(bindings, None).await
    }

    /// [`next_event`](Self::next_event) with handshake admission: frame 1
    /// must pass mac1 and then `gate` before any Diffie-Hellman work.
    pub async fn next_event_gated<B: IdentityBindings + ?Sized>(
        &mut self,
        bindings: &B,
        gate: Option<&Gate<'_>>,
    ) -> Result<Event, LinkError> {
        loop {
            if let Some(ev) = self.conn.poll_event() {
                return Ok(ev);
            }
            self.flush().await?;
            if let Some(e) = self.conn.error() {
                return Err(LinkError::Conn(e));
            }
            if self.conn.is_closed() {
                return Err(LinkError::Eof);
            }
            if !self.inbox.is_empty() {
                let n = match gate {
                    None => self
                        .conn
                        .handle_input(&self.inbox, now(), bindings)
                        .map_err(LinkError::Conn)?,
                    Some(g) => {
                        let mut admission = g.admission.borrow_mut();
                        let mut admit = admission.gate(g.source);
                        match self
                            .conn
                            .handle_input_gated(&self.inbox, now(), bindings, &mut admit)
                        {
                            Ok(n) => n,
                            Err(GatedError::Conn(e)) => return Err(LinkError::Conn(e)),
                            Err(GatedError::Limited(l)) => return Err(LinkError::Limited(l)),
                        }
                    }
                };
                self.inbox.drain(..n);
                if let Some(ev) = self.conn.poll_event() {
                    return Ok(ev);
                }
                if n > 0 || !self.conn.transmit_buf().is_empty() {
                    continue;
                }
                // Buffered input, no events, nothing to send, and the
                // connection takes nothing: it cannot make progress. Never
                // grow the inbox behind it.
                return Err(LinkError::Conn(ConnError::WouldBlock));
            }
            let want = self.conn.recv_space().clamp(1, READ_CHUNK);
            let data = match self.conn.poll_timeout() {
                None => self.net.tcp_read(self.sock, want).await?,
                Some(deadline) => {
                    let read = pin!(self.net.tcp_read(self.sock, want));
                    let wait = time::sleep_until(time::Instant::from_millis(deadline.as_millis()));
                    match select(read, pin!(wait)).await {
                        Either::Left((r, _)) => r?,
                        Either::Right(_) => {
                            self.conn.handle_timeout(now()).map_err(LinkError::Conn)?;
                            continue;
                        }
                    }
                }
            };
            if data.is_empty() {
                return Err(match self.conn.handle_eof() {
                    Ok(()) => LinkError::Eof,
                    Err(e) => LinkError::Conn(e),
                });
            }
            self.inbox.extend_from_slice(&data);
        }
    }

    /// Close the socket (after an orderly `conn.close()` and `flush`, or to
    /// drop a failed connection).
    pub async fn shutdown(self) {
        // The socket is gone either way; a failure here changes nothing.
        let _ = self.net.close(self.sock).await;
    }
}
