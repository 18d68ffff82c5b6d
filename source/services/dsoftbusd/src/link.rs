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
/// Largest piece [`Link::write_piece`] writes (one facade message).
pub const WRITE_PIECE: usize = nexus_netclient::MAX_STREAM_CHUNK;

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

/// The byte stream under a link — a facade TCP socket ([`Facade`]), or a
/// test's in-memory pipe — and the clock its connection runs on.
pub trait Socket {
    /// The protocol core's clock (the kernel's by default).
    fn now(&self) -> dsoftbus::Instant {
        now()
    }
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

    /// Write one facade-sized piece ([`WRITE_PIECE`]) of what the
    /// connection queued; false if it queued nothing. The sender's bounded
    /// step (`crate::files::Outgoing::pump_step`) writes this way, so it
    /// looks at its input after every piece, not only after a whole
    /// message (up to 64 KiB, four facade writes that each may wait for
    /// room in the socket).
    pub async fn write_piece(&mut self) -> Result<bool, LinkError> {
        let queued = self.conn.transmit_buf();
        if queued.is_empty() {
            return Ok(false);
        }
        let n = queued.len().min(WRITE_PIECE);
        self.socket.write_all(&queued[..n]).await?;
        self.conn.consume_transmit(n);
        Ok(true)
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
    /// Writes nothing: it is called between a sender's steps, and the next
    /// step writes what the connection queued (answers to this input
    /// included), a piece at a time ([`write_piece`](Self::write_piece)).
    /// Established sessions only (no handshake gate).
    pub async fn try_event<B: IdentityBindings + ?Sized>(
        &mut self,
        bindings: &B,
    ) -> Result<Option<Event>, LinkError> {
        self.event(bindings, None, Wait::No).await
    }

    /// For a loop with more to send ([`Pace::more`]): the event that is
    /// ready now, counted in `pace`, or `None` when none is (`pace` then
    /// says step next). The three sending loops (dual-node proof, node
    /// responder, dialler) share this.
    pub async fn ready_event<B: IdentityBindings + ?Sized>(
        &mut self,
        bindings: &B,
        pace: &mut Pace,
    ) -> Option<Result<Event, LinkError>> {
        match self.try_event(bindings).await {
            Ok(None) => {
                pace.none_ready();
                None
            }
            Ok(Some(ev)) => {
                pace.took();
                Some(Ok(ev))
            }
            Err(e) => Some(Err(e)),
        }
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
            if wait == Wait::Block {
                self.flush().await?;
            }
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
                        .handle_input(&self.inbox, self.socket.now(), bindings)
                        .map_err(LinkError::Conn)?,
                    Some(g) => {
                        let mut admission = g.admission.borrow_mut();
                        let mut admit = admission.gate(g.source);
                        match self.conn.handle_input_gated(
                            &self.inbox,
                            self.socket.now(),
                            bindings,
                            &mut admit,
                        ) {
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
                if n > 0 {
                    continue;
                }
                if !self.conn.transmit_buf().is_empty() {
                    // It takes more once its output is written: here
                    // (waiting), or by the caller's next step.
                    if wait == Wait::No {
                        return Ok(None);
                    }
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
                            let at = self.socket.now();
                            self.conn.handle_timeout(at).map_err(LinkError::Conn)?;
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

#[cfg(test)]
mod tests {
    use super::*;

    use alloc::collections::{BTreeSet, VecDeque};
    use alloc::rc::Rc;
    use core::future::Future;
    use core::task::{Context, Waker};

    use dsoftbus::node::consent::AcceptPolicy;
    use dsoftbus::node::LogLimiter;
    use dsoftbus::transfer::Outcome;
    use dsoftbus::{
        DeviceId, HandshakeConfig, LocalIdentity, PeerTarget, PublicKey, StaticKeypair,
    };
    use rand_core::{CryptoRng, RngCore};

    use crate::files::{Files, Outgoing};
    use crate::fixtures::id;

    /// Poll `f` once: everything here completes without waiting (the fake
    /// socket's writes are immediate, reads are only ever polled).
    fn run<F: Future>(f: F) -> F::Output {
        let mut f = pin!(f);
        match f.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
            Poll::Ready(v) => v,
            Poll::Pending => panic!("waited"),
        }
    }

    /// One end's socket as netstackd keeps it: bytes received and not
    /// yet read, at most one parked read (a second is `Busy`), answered by
    /// [`deliver`] — the "daemon" — and taken by the read future when it is
    /// next polled. A read future dropped before taking its answer is
    /// abandoned, as in netclient: the answer is discarded, its bytes lost.
    #[derive(Default)]
    struct Wire {
        rx: VecDeque<u8>,
        parked: Option<(u32, usize)>,
        answers: Vec<(u32, Vec<u8>)>,
        abandoned: BTreeSet<u32>,
        next: u32,
        written: Vec<u8>,
        busy: usize,
        lost: usize,
    }

    impl Wire {
        /// The daemon answers the parked read with what it can take now,
        /// at most `limit` bytes.
        fn deliver(&mut self, limit: usize) {
            let Some((rid, max)) = self.parked else {
                return;
            };
            let n = self.rx.len().min(max).min(limit);
            if n == 0 {
                return;
            }
            self.parked = None;
            let bytes: Vec<u8> = self.rx.drain(..n).collect();
            if self.abandoned.remove(&rid) {
                self.lost += n;
            } else {
                self.answers.push((rid, bytes));
            }
        }
    }

    struct ReadCall {
        wire: Rc<RefCell<Wire>>,
        max: usize,
        id: Option<u32>,
        done: bool,
    }

    impl Future for ReadCall {
        type Output = Result<Vec<u8>, CallError>;
        fn poll(
            mut self: core::pin::Pin<&mut Self>,
            _: &mut core::task::Context<'_>,
        ) -> Poll<Self::Output> {
            let wire = self.wire.clone();
            let mut w = wire.borrow_mut();
            let rid = match self.id {
                Some(rid) => rid,
                None => {
                    // The request goes out on the first poll.
                    if w.parked.is_some() {
                        w.busy += 1;
                        self.done = true;
                        return Poll::Ready(Err(CallError::Busy));
                    }
                    w.next += 1;
                    let rid = w.next;
                    w.parked = Some((rid, self.max));
                    self.id = Some(rid);
                    rid
                }
            };
            match w.answers.iter().position(|(r, _)| *r == rid) {
                Some(i) => {
                    self.done = true;
                    Poll::Ready(Ok(w.answers.remove(i).1))
                }
                None => Poll::Pending,
            }
        }
    }

    impl Drop for ReadCall {
        fn drop(&mut self) {
            if let (Some(rid), false) = (self.id, self.done) {
                self.wire.borrow_mut().abandoned.insert(rid);
            }
        }
    }

    struct Fake(Rc<RefCell<Wire>>);

    impl Socket for Fake {
        fn now(&self) -> dsoftbus::Instant {
            dsoftbus::Instant::from_millis(0)
        }
        fn read(&self, max_len: usize) -> LocalBoxFuture<'static, Result<Vec<u8>, CallError>> {
            Box::pin(ReadCall {
                wire: self.0.clone(),
                max: max_len,
                id: None,
                done: false,
            })
        }
        fn write_all<'a>(&'a self, data: &'a [u8]) -> LocalBoxFuture<'a, Result<(), CallError>> {
            self.0.borrow_mut().written.extend_from_slice(data);
            Box::pin(async { Ok(()) })
        }
        fn close(&self) -> LocalBoxFuture<'_, Result<(), CallError>> {
            Box::pin(async { Ok(()) })
        }
    }

    /// A deterministic RNG (tests only: the keys protect nothing).
    struct TestRng(u64);

    impl RngCore for TestRng {
        fn next_u32(&mut self) -> u32 {
            self.next_u64() as u32
        }
        fn next_u64(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        }
        fn fill_bytes(&mut self, dst: &mut [u8]) {
            for c in dst.chunks_mut(8) {
                let w = self.next_u64().to_le_bytes();
                c.copy_from_slice(&w[..c.len()]);
            }
        }
    }

    impl CryptoRng for TestRng {}

    /// Binds "a" and "b" to their keys.
    struct Both([(DeviceId, PublicKey); 2]);

    impl IdentityBindings for Both {
        fn bound_key(&self, d: &DeviceId) -> Option<PublicKey> {
            self.0.iter().find(|(i, _)| i == d).map(|(_, k)| *k)
        }
    }

    struct Pair {
        a: Link<Fake>,
        b: Link<Fake>,
        wa: Rc<RefCell<Wire>>,
        wb: Rc<RefCell<Wire>>,
        bind: Both,
    }

    impl Pair {
        /// Move what each end wrote into the other's receive buffer, at
        /// most `limit` bytes each way (a slow network), and let the
        /// daemon answer parked reads with at most `piece` bytes.
        fn net(&self, limit: usize, piece: usize) {
            for (from, to) in [(&self.wa, &self.wb), (&self.wb, &self.wa)] {
                let mut f = from.borrow_mut();
                let n = f.written.len().min(limit);
                let bytes: Vec<u8> = f.written.drain(..n).collect();
                to.borrow_mut().rx.extend(bytes);
            }
            self.wa.borrow_mut().deliver(piece);
            self.wb.borrow_mut().deliver(piece);
        }
    }

    /// Two links with an established session a → b over fake sockets.
    fn pair() -> Pair {
        let mut rng = TestRng(7);
        let la = LocalIdentity::new(id("a"), StaticKeypair::generate(&mut rng));
        let lb = LocalIdentity::new(id("b"), StaticKeypair::generate(&mut rng));
        let bind = Both([(id("a"), *la.public_key()), (id("b"), *lb.public_key())]);
        let t0 = dsoftbus::Instant::from_millis(0);
        let target = PeerTarget {
            id: id("b"),
            key: *lb.public_key(),
        };
        let ca = Connection::connect(&la, target, &mut rng, t0, HandshakeConfig::default());
        let cb = Connection::accept(&lb, &mut rng, t0, HandshakeConfig::default());
        let (wa, wb) = (Rc::default(), Rc::default());
        let mut p = Pair {
            a: Link::with_socket(Fake(Rc::clone(&wa)), ca.unwrap()),
            b: Link::with_socket(Fake(Rc::clone(&wb)), cb),
            wa,
            wb,
            bind,
        };
        let (mut up_a, mut up_b) = (false, false);
        for _ in 0..100 {
            match run(p.a.try_event(&p.bind)) {
                Ok(Some(Event::Established { .. })) => up_a = true,
                Ok(_) => {}
                Err(e) => panic!("a: {e}"),
            }
            match run(p.b.try_event(&p.bind)) {
                Ok(Some(Event::Established { .. })) => up_b = true,
                Ok(_) => {}
                Err(e) => panic!("b: {e}"),
            }
            if up_a && up_b {
                return p;
            }
            // try_event writes nothing: the handshake's frames go out here.
            run(p.a.flush()).unwrap();
            run(p.b.flush()).unwrap();
            p.net(usize::MAX, usize::MAX);
        }
        panic!("no session");
    }

    /// A message of b's own: kind 0x01 (not a transfer kind) and a number.
    fn numbered(n: u32) -> Vec<u8> {
        let mut m = alloc::vec![0x01];
        m.extend_from_slice(&n.to_be_bytes());
        m
    }

    #[test]
    fn the_fake_loses_an_abandoned_read_as_the_facade_does() {
        // The hazard the link avoids, shown on the fake: a read dropped
        // after it was sent loses the bytes the daemon answered it with.
        let w = Rc::new(RefCell::new(Wire::default()));
        let s = Fake(Rc::clone(&w));
        let mut r = s.read(100);
        assert!(run(poll_fn(|cx| Poll::Ready(
            r.as_mut().poll(cx).is_pending()
        ))));
        assert_eq!(run(s.read(100)), Err(CallError::Busy));
        drop(r);
        w.borrow_mut().rx.extend([1, 2, 3]);
        w.borrow_mut().deliver(usize::MAX);
        assert_eq!(w.borrow().lost, 3);
    }

    #[test]
    fn a_dropped_wait_keeps_the_read_in_flight() {
        let w = Rc::new(RefCell::new(Wire::default()));
        let s = Fake(Rc::clone(&w));
        let mut slot: InFlight<Result<Vec<u8>, CallError>> = InFlight::default();
        assert!(slot.start(|| s.read(100)));
        assert!(!slot.start(|| panic!("a second read must not be made")));
        // A select that went the other way: the wait is dropped pending.
        {
            let mut wait = pin!(slot.wait());
            let polled = wait.as_mut().poll(&mut Context::from_waker(Waker::noop()));
            assert!(polled.is_pending());
        }
        assert_eq!(run(slot.poll_now()), None);
        w.borrow_mut().rx.extend([1, 2, 3]);
        w.borrow_mut().deliver(usize::MAX);
        assert_eq!(run(slot.poll_now()), Some(Ok(alloc::vec![1, 2, 3])));
        assert!(slot.is_idle());
        assert_eq!((w.borrow().lost, w.borrow().busy), (0, 0));
    }

    #[test]
    fn pace_steps_after_the_ready_events_and_never_waits_while_sending() {
        let mut p = Pace::default();
        assert!(p.step_due() && !p.more());
        p.stepped(true);
        assert!(!p.step_due() && p.more());
        for _ in 1..MAX_EVENTS_PER_STEP {
            p.took();
            assert!(!p.step_due());
        }
        p.took();
        assert!(p.step_due(), "a busy input must not stop the sender");
        p.stepped(true);
        p.took();
        p.none_ready();
        assert!(p.step_due());
        p.stepped(false);
        assert!(p.step_due() && !p.more());
    }

    /// Hostile timing: while a sends b a file one bounded step at a time
    /// and looks only at ready input between steps, b sends numbered
    /// messages that arrive in small pieces at any moment (mid-read, while
    /// a pumps). Every one must reach a once and in order, the file must
    /// arrive whole, no read may be abandoned or refused, and a's inbox
    /// never holds more than one read.
    /// Node mode's stream output goes out in bounded steps
    /// (`Streams::write_step`: at most one facade piece per step, input
    /// looked at between steps), and a transfer on a stream still completes
    /// with every byte verified.
    #[test]
    fn stream_output_goes_out_a_piece_per_step() {
        use crate::streams::Streams;
        let mut p = pair();
        let inbox_b = Files::new(AcceptPolicy::Any);
        let none = Files::new(AcceptPolicy::None);
        let lg = RefCell::new(LogLimiter::default());
        let at = dsoftbus::Instant::from_millis(0);
        let (mut sa, mut sb) = (Streams::new(1, true, at), Streams::new(1, false, at));
        let size = 200_003;
        let mut o = Some(Outgoing::generated(1, &id("a"), &id("b"), size).unwrap());
        let sid = sa.open().unwrap();
        o.as_mut().unwrap().set_stream(sid);
        let mut no_out = None;
        let (mut steps, mut max_step, mut end) = (0, 0, None);
        for round in 0..20_000 {
            // a: one bounded step of the mux's output, one of the transfer,
            // then every event that is ready.
            sa.service(&none, &mut o, &lg, at).unwrap();
            let before = p.wa.borrow().written.len();
            if run(sa.write_step(&mut p.a)).unwrap() {
                steps += 1;
            }
            max_step = max_step.max(p.wa.borrow().written.len() - before);
            if let Some(out) = o.as_mut() {
                run(out.pump_step(&mut p.a, Some(&mut sa))).unwrap();
                if let Some(e) = out.outcome() {
                    end = Some(e);
                }
            }
            loop {
                match run(p.a.try_event(&p.bind)) {
                    Ok(None) => break,
                    Ok(Some(Event::Data(d))) => {
                        sa.handle(&d, &none, &id("b"), &mut o, &lg, at).unwrap();
                    }
                    Ok(Some(other)) => panic!("a got {other:?}"),
                    Err(e) => panic!("a: {e}"),
                }
            }
            // b: takes the stream, answers everything at once.
            loop {
                match run(p.b.try_event(&p.bind)) {
                    Ok(None) => break,
                    Ok(Some(Event::Data(d))) => {
                        sb.handle(&d, &inbox_b, &id("a"), &mut no_out, &lg, at)
                            .unwrap();
                    }
                    Ok(Some(other)) => panic!("b got {other:?}"),
                    Err(e) => panic!("b: {e}"),
                }
            }
            sb.service(&inbox_b, &mut no_out, &lg, at).unwrap();
            while run(sb.write_step(&mut p.b)).unwrap() {}
            p.net(1 + (round * 7919) % 40_000, READ_CHUNK);
            if end.is_some() {
                break;
            }
        }
        assert_eq!(end, Some(Outcome::Done));
        assert_eq!(inbox_b.inbox_usage(), (1, size, 0, 0));
        assert!(max_step <= WRITE_PIECE, "one step wrote {max_step} bytes");
        assert!(steps > 0, "the mux never had output for a step");
    }

    #[test]
    fn input_arriving_while_pumping_is_neither_lost_nor_reordered() {
        let mut p = pair();
        let inbox_b = Files::new(AcceptPolicy::Any);
        let lg = RefCell::new(LogLimiter::default());
        let size = 300_001;
        let mut o = Outgoing::generated(1, &id("a"), &id("b"), size).unwrap();
        let (mut sent, mut got) = (0u32, Vec::new());
        let mut end = None;
        for round in 0..20_000 {
            // a: one step, then every event that is ready.
            let more = run(o.pump_step(&mut p.a, None)).unwrap();
            if let Some(e) = o.outcome() {
                end = Some(e);
            }
            loop {
                assert!(p.a.inbox.len() <= READ_CHUNK);
                match run(p.a.try_event(&p.bind)) {
                    Ok(None) => break,
                    Ok(Some(Event::Data(d))) if d.first() == Some(&0x01) => {
                        got.push(u32::from_be_bytes([d[1], d[2], d[3], d[4]]));
                    }
                    Ok(Some(Event::Data(d))) => o.handle(&d),
                    Ok(Some(other)) => panic!("a got {other:?}"),
                    Err(e) => panic!("a: {e}"),
                }
            }
            // b: its own messages, a few per round, and the transfer.
            if sent < 500 && round % 3 == 0 {
                for _ in 0..1 + round % 4 {
                    sent += 1;
                    p.b.conn.send_data(&numbered(sent)).unwrap();
                }
            }
            loop {
                match run(p.b.try_event(&p.bind)) {
                    Ok(None) => break,
                    Ok(Some(Event::Data(d))) => {
                        let at = dsoftbus::Instant::from_millis(0);
                        let r = inbox_b.on_data(&mut p.b.conn, (1, 0), &id("a"), &d, None, &lg, at);
                        assert_eq!(r, Ok(true));
                    }
                    Ok(Some(other)) => panic!("b got {other:?}"),
                    Err(e) => panic!("b: {e}"),
                }
            }
            run(p.b.flush()).unwrap();
            // The network: odd-sized pieces, reads answered short.
            p.net(
                1 + (round as usize * 7919) % 20_000,
                1 + (round as usize * 104_729) % READ_CHUNK,
            );
            if end.is_some() && sent == 500 && got.len() == 500 && !more {
                break;
            }
        }
        assert_eq!(end, Some(Outcome::Done));
        assert_eq!(got, (1..=500).collect::<Vec<u32>>());
        assert_eq!(inbox_b.inbox_usage(), (1, size, 0, 0));
        for w in [&p.wa, &p.wb] {
            let w = w.borrow();
            assert_eq!((w.lost, w.busy), (0, 0), "a read was lost or refused");
        }
    }
}
