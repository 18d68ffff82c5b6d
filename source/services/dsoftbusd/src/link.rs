//! One session stream: a `dsoftbus::Connection` pumped over a facade TCP
//! socket. The connection is sans-IO; this is the thin I/O shell around it.
//!
//! **Reading without losing bytes.** A facade read is a request to
//! netstackd that it parks until data arrives and then answers; the answer
//! carries the bytes, already taken out of the socket. A read future that is
//! dropped half-way (a `select` that went the other way) does not cancel the
//! request: netstackd still answers, and the client drops the answer as
//! abandoned — those bytes are gone and the session's stream is broken. And
//! netstackd parks at most one read per socket (a second is `Busy`).
//!
//! So the link owns its read: at most one is in flight ([`InFlight`]), it is
//! started when the inbox is empty and kept across calls until its answer is
//! taken. [`Link::next_event`] waits on it; [`Link::try_event`] polls it once
//! and returns at once when nothing has arrived, leaving it in flight. This
//! is what lets a sender do bounded work between looks at its input (the
//! transfer pump, `crate::files::Outgoing::pump_step`) without abandoning a
//! read. A facade request answering "what is buffered now" without parking
//! would need a new request in the facade protocol (and still race with the
//! parked read of `next_event`); the persistent read needs none.

use alloc::boxed::Box;
use alloc::vec::Vec;
use core::future::poll_fn;
use core::pin::pin;
use core::task::Poll;

use core::cell::RefCell;
use core::net::IpAddr;

use dsoftbus::connection::GatedError;
use dsoftbus::node::Admission;
use dsoftbus::ratelimit::Limited;
use dsoftbus::{ConnError, Connection, Event, IdentityBindings};
use futures_util::future::{select, Either, LocalBoxFuture};
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

/// The byte stream under a link: a facade TCP socket ([`Facade`]), or a
/// test's in-memory pipe.
pub trait Socket {
    /// Start a read of at most `max_len` bytes (empty at end of stream).
    /// The future owns what it needs: the link keeps it across calls.
    fn read(&self, max_len: usize) -> LocalBoxFuture<'static, Result<Vec<u8>, CallError>>;
    /// Write all of `data`.
    fn write_all<'a>(&'a self, data: &'a [u8]) -> LocalBoxFuture<'a, Result<(), CallError>>;
    /// Close the socket.
    fn close(&self) -> LocalBoxFuture<'_, Result<(), CallError>>;
}

/// A facade TCP stream of `netstackd`.
pub struct Facade {
    net: NetClient,
    sock: SocketId,
}

impl Socket for Facade {
    fn read(&self, max_len: usize) -> LocalBoxFuture<'static, Result<Vec<u8>, CallError>> {
        let (net, sock) = (self.net.clone(), self.sock);
        Box::pin(async move { net.tcp_read(sock, max_len).await })
    }
    fn write_all<'a>(&'a self, data: &'a [u8]) -> LocalBoxFuture<'a, Result<(), CallError>> {
        Box::pin(self.net.tcp_write_all(self.sock, data))
    }
    fn close(&self) -> LocalBoxFuture<'_, Result<(), CallError>> {
        Box::pin(self.net.close(self.sock))
    }
}

/// At most one operation in flight, kept until its result is taken: waiting
/// on it ([`wait`](Self::wait)) and dropping the wait half-way, or looking
/// at it ([`poll_now`](Self::poll_now)), never drops the operation itself.
pub struct InFlight<T> {
    op: Option<LocalBoxFuture<'static, T>>,
}

impl<T> Default for InFlight<T> {
    fn default() -> Self {
        InFlight { op: None }
    }
}

impl<T> InFlight<T> {
    /// No operation in flight.
    #[cfg(test)]
    pub fn is_idle(&self) -> bool {
        self.op.is_none()
    }

    /// Start the operation `make` builds, if none is in flight (`make` is
    /// not called otherwise). True if it was started.
    pub fn start(&mut self, make: impl FnOnce() -> LocalBoxFuture<'static, T>) -> bool {
        if self.op.is_some() {
            return false;
        }
        self.op = Some(make());
        true
    }

    fn poll_op(&mut self, cx: &mut core::task::Context<'_>) -> Poll<Option<T>> {
        let Some(op) = self.op.as_mut() else {
            return Poll::Ready(None);
        };
        match op.as_mut().poll(cx) {
            Poll::Ready(v) => {
                self.op = None;
                Poll::Ready(Some(v))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    /// Poll the operation once: its result if it has one now, else `None`
    /// and it stays in flight (the task is woken when it progresses).
    pub async fn poll_now(&mut self) -> Option<T> {
        poll_fn(|cx| match self.poll_op(cx) {
            Poll::Ready(v) => Poll::Ready(v),
            Poll::Pending => Poll::Ready(None),
        })
        .await
    }

    /// Wait for the operation's result (`None` if none is in flight).
    /// Cancel-safe: dropping this future leaves the operation in flight.
    pub async fn wait(&mut self) -> Option<T> {
        poll_fn(|cx| self.poll_op(cx)).await
    }
}

/// Events a session loop takes between two steps of its sender, at most.
pub const MAX_EVENTS_PER_STEP: usize = 16;

/// How a session loop alternates its sender's bounded steps
/// (`crate::files::Outgoing::pump_step`) with its input. After a step that
/// left more to send, the loop takes every event that is ready now
/// ([`Link::try_event`]) — acknowledgements, window updates, pongs: cheap —
/// and steps again once none is (or after [`MAX_EVENTS_PER_STEP`], so a
/// peer that keeps us busy reading cannot stop our sending). One event per
/// step would leave a pong behind every acknowledgement that arrived with
/// it, a step each. With nothing more to send the loop steps before every
/// event and waits for events ([`Link::next_event`]), as without a sender.
#[derive(Default)]
pub struct Pace {
    /// The last step left more to send.
    more: bool,
    /// Ready events taken since the last step.
    taken: usize,
    /// The next step is due (no event was ready, or enough were taken).
    due: bool,
}

impl Pace {
    /// Run a step now?
    pub fn step_due(&self) -> bool {
        !self.more || self.due
    }

    /// A step ran; `more`: it left more to send.
    pub fn stepped(&mut self, more: bool) {
        self.more = more;
        self.taken = 0;
        self.due = false;
    }

    /// Take only ready events until the next step (never wait for input)?
    pub fn more(&self) -> bool {
        self.more
    }

    /// A ready event was taken.
    pub fn took(&mut self) {
        self.taken += 1;
        if self.taken >= MAX_EVENTS_PER_STEP {
            self.due = true;
        }
    }

    /// No event was ready: step next.
    pub fn none_ready(&mut self) {
        self.due = true;
    }
}

/// Whether [`Link::event`] may wait for input.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Wait {
    /// Until an event (or the handshake deadline).
    Block,
    /// Never: `None` when no event is ready.
    No,
}

/// A connection and its socket.
pub struct Link<S: Socket = Facade> {
    socket: S,
    /// The protocol state machine (public for `peer_id`, `send_ping`...).
    pub conn: Connection,
    /// Bytes read but not yet taken by the connection: at most one read
    /// (`READ_CHUNK`), since no read is started while it holds anything.
    inbox: Vec<u8>,
    /// The socket read in flight, if any (at most one: see the module doc).
    read: InFlight<Result<Vec<u8>, CallError>>,
}

impl Link<Facade> {
    /// Pair a connection with its facade socket.
    pub fn new(net: NetClient, sock: SocketId, conn: Connection) -> Self {
        Link::with_socket(Facade { net, sock }, conn)
    }
}

impl<S: Socket> Link<S> {
    /// Pair a connection with a socket.
    pub fn with_socket(socket: S, conn: Connection) -> Self {
        Link {
            socket,
            conn,
            inbox: Vec::new(),
            read: InFlight::default(),
        }
    }

    /// Write out everything the connection queued.
    pub async fn flush(&mut self) -> Result<(), LinkError> {
        while !self.conn.transmit_buf().is_empty() {
            let out = self.conn.take_transmit();
            self.socket.write_all(&out).await?;
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

    /// The next protocol event if one is ready without waiting for input:
    /// what is buffered, and the answer of the read in flight if it has
    /// come. `None` otherwise; a read then stays in flight (started here if
    /// none was), so nothing that arrives meanwhile is lost or reordered.
    /// Writing out what the connection queued may still wait for the
    /// socket's room. Established sessions only (no handshake gate).
    pub async fn try_event<B: IdentityBindings + ?Sized>(
        &mut self,
        bindings: &B,
    ) -> Result<Option<Event>, LinkError> {
        self.event(bindings, None, Wait::No).await
    }

    /// [`next_event`](Self::next_event) with handshake admission: frame 1
    /// must pass mac1 and then `gate` before any Diffie-Hellman work.
    pub async fn next_event_gated<B: IdentityBindings + ?Sized>(
        &mut self,
        bindings: &B,
        gate: Option<&Gate<'_>>,
    ) -> Result<Event, LinkError> {
        match self.event(bindings, gate, Wait::Block).await? {
            Some(ev) => Ok(ev),
            // `Wait::Block` returns only with an event or an error.
            None => Err(LinkError::Conn(ConnError::WouldBlock)),
        }
    }

    async fn event<B: IdentityBindings + ?Sized>(
        &mut self,
        bindings: &B,
        gate: Option<&Gate<'_>>,
        wait: Wait,
    ) -> Result<Option<Event>, LinkError> {
        loop {
            if let Some(ev) = self.conn.poll_event() {
                return Ok(Some(ev));
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
                    return Ok(Some(ev));
                }
                if n > 0 || !self.conn.transmit_buf().is_empty() {
                    continue;
                }
                // Buffered input, no events, nothing to send, and the
                // connection takes nothing: it cannot make progress. Never
                // grow the inbox behind it.
                return Err(LinkError::Conn(ConnError::WouldBlock));
            }
            // The inbox is empty: one read in flight (kept if one is).
            let want = self.conn.recv_space().clamp(1, READ_CHUNK);
            let socket = &self.socket;
            self.read.start(|| socket.read(want));
            let data = match (wait, self.conn.poll_timeout()) {
                (Wait::No, _) => match self.read.poll_now().await {
                    Some(r) => r?,
                    None => return Ok(None),
                },
                (Wait::Block, None) => match self.read.wait().await {
                    Some(r) => r?,
                    None => continue,
                },
                (Wait::Block, Some(deadline)) => {
                    let read = pin!(self.read.wait());
                    let timer = time::sleep_until(time::Instant::from_millis(deadline.as_millis()));
                    match select(read, pin!(timer)).await {
                        Either::Left((Some(r), _)) => r?,
                        Either::Left((None, _)) => continue,
                        // The read stays in flight; its answer is taken later.
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
        let _ = self.socket.close().await;
    }
}
