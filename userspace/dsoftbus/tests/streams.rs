//! Streams (`dsoftbus::stream`, wire.md §11): property tests over two
//! endpoints, reset/close at every step, hostile peers, and a deterministic
//! measurement of control-stream latency under a saturating bulk stream.

mod common;

use std::collections::{BTreeMap, VecDeque};

use dsoftbus::connection::{Connection, Event as ConnEvent};
use dsoftbus::stream::*;
use dsoftbus::{Instant, ServiceName};
use proptest::prelude::*;

fn t(ms: u64) -> Instant {
    Instant::from_millis(ms)
}

/// Byte `i` of what side `side` writes on stream `id`: position-dependent,
/// so a reordered, lost or duplicated byte shows.
fn pattern(side: usize, id: StreamId, i: usize) -> u8 {
    (i.wrapping_mul(31) ^ (id.0 as usize).wrapping_mul(7) ^ side.wrapping_mul(101)) as u8
}

/// Two muxes, the messages in flight between them (FIFO, as the session
/// delivers them), and what every side wrote and read per stream.
struct Pair {
    m: [Mux; 2],
    link: [VecDeque<Vec<u8>>; 2],
    known: [Vec<StreamId>; 2],
    sent: BTreeMap<(usize, StreamId), Vec<u8>>,
    finished: BTreeMap<(usize, StreamId), bool>,
    recv: BTreeMap<(usize, StreamId), Vec<u8>>,
    fin_seen: BTreeMap<(usize, StreamId), bool>,
    reset: BTreeMap<StreamId, ()>,
}

impl Pair {
    fn new(cfg: StreamConfig) -> Self {
        Pair {
            m: [
                Mux::new(cfg.clone(), true, t(0)),
                Mux::new(cfg, false, t(0)),
            ],
            link: [VecDeque::new(), VecDeque::new()],
            known: [Vec::new(), Vec::new()],
            sent: BTreeMap::new(),
            finished: BTreeMap::new(),
            recv: BTreeMap::new(),
            fin_seen: BTreeMap::new(),
            reset: BTreeMap::new(),
        }
    }

    fn events(&mut self, side: usize) {
        while let Some(e) = self.m[side].poll_event() {
            match e {
                Event::Opened { id, .. } => self.known[side].push(id),
                Event::Reset { id, .. } => {
                    self.reset.insert(id, ());
                }
                Event::Failed(e) => panic!("side {side} failed: {e}"),
                Event::Readable(_) | Event::Writable(_) => {}
            }
        }
    }

    fn pick(&self, side: usize, idx: usize) -> Option<StreamId> {
        let k = &self.known[side];
        (!k.is_empty()).then(|| k[idx % k.len()])
    }

    fn open(&mut self, side: usize, prio: Priority) {
        if let Ok(id) = self.m[side].open(side as u8, prio) {
            self.known[side].push(id);
        }
    }

    fn write(&mut self, side: usize, idx: usize, len: usize) {
        let Some(id) = self.pick(side, idx) else {
            return;
        };
        let sent = self.sent.entry((side, id)).or_default();
        let start = sent.len();
        let data: Vec<u8> = (start..start + len).map(|i| pattern(side, id, i)).collect();
        if let Ok(n) = self.m[side].write(id, &data) {
            assert!(n <= len);
            sent.extend_from_slice(&data[..n]);
        }
    }

    fn finish(&mut self, side: usize, idx: usize) {
        if let Some(id) = self.pick(side, idx) {
            if self.m[side].finish(id).is_ok() {
                self.finished.insert((side, id), true);
            }
        }
    }

    fn reset(&mut self, side: usize, idx: usize) {
        if let Some(id) = self.pick(side, idx) {
            if self.m[side].reset(id, 42).is_ok() {
                self.reset.insert(id, ());
            }
        }
    }

    fn read(&mut self, side: usize, idx: usize, buf_len: usize) {
        let Some(id) = self.pick(side, idx) else {
            return;
        };
        let mut buf = vec![0u8; buf_len];
        loop {
            match self.m[side].read(id, &mut buf) {
                Ok(Read::Bytes(n)) => {
                    assert!(n > 0);
                    assert!(
                        !self.fin_seen.contains_key(&(side, id)),
                        "data after fin on {id}"
                    );
                    self.recv
                        .entry((side, id))
                        .or_default()
                        .extend_from_slice(&buf[..n]);
                }
                Ok(Read::Fin) => {
                    self.fin_seen.insert((side, id), true);
                    return;
                }
                Ok(Read::WouldBlock) | Err(StreamError::UnknownStream) => return,
                Err(e) => panic!("read: {e}"),
            }
        }
    }

    fn read_everything(&mut self, side: usize) {
        for i in 0..self.known[side].len() {
            self.read(side, i, 4096);
        }
    }

    /// Side `side` puts up to `n` messages on its link.
    fn pump(&mut self, side: usize, n: usize) {
        for _ in 0..n {
            match self.m[side].poll_transmit() {
                Some(msg) => self.link[side].push_back(msg),
                None => break,
            }
        }
    }

    /// Up to `n` messages from `side`'s link arrive at the other side.
    fn deliver(&mut self, side: usize, n: usize) {
        for _ in 0..n {
            let Some(msg) = self.link[side].pop_front() else {
                break;
            };
            self.m[1 - side]
                .handle_input(&msg, t(0))
                .unwrap_or_else(|e| panic!("side {} refused a message: {e}", 1 - side));
        }
        self.events(1 - side);
    }

    /// The bounds of the module docs, after every step.
    fn check_bounds(&self) {
        for m in &self.m {
            let s = m.stats();
            let c = m.config();
            assert!(s.recv_buffered <= c.session_window as usize);
            assert!(s.max_stream_recv_buffered <= c.stream_window as usize);
            assert!(s.send_buffered <= c.max_send_buffered);
            assert!(s.max_stream_send_buffered <= c.send_buffer);
            assert!(s.pending_control <= c.max_pending_control);
            assert!(s.incoming_streams <= c.max_incoming_streams);
            assert!(s.outgoing_streams <= c.max_outgoing_streams);
            assert_eq!(m.error(), None);
        }
        // What was read is a prefix of what was written: in order, no
        // duplicate, nothing invented.
        for ((reader, id), got) in &self.recv {
            let sent = self.sent.get(&(1 - reader, *id)).map_or(&[][..], |v| v);
            assert!(
                got.len() <= sent.len(),
                "stream {id}: more read than written"
            );
            assert_eq!(&sent[..got.len()], &got[..], "stream {id}: bytes differ");
        }
    }

    /// Moves and reads everything until neither side has anything to send.
    fn settle(&mut self) {
        for _ in 0..100_000 {
            self.pump(0, usize::MAX);
            self.pump(1, usize::MAX);
            let moved = self.link[0].len() + self.link[1].len();
            self.deliver(0, usize::MAX);
            self.deliver(1, usize::MAX);
            self.read_everything(0);
            self.read_everything(1);
            self.check_bounds();
            if moved == 0 {
                return;
            }
        }
        panic!("no quiescence");
    }

    /// After [`Pair::settle`]: every stream nobody reset delivered all its
    /// bytes, and its close if the writer finished it.
    fn check_complete(&self) {
        for ((writer, id), sent) in &self.sent {
            if self.reset.contains_key(id) {
                continue;
            }
            let got = self.recv.get(&(1 - writer, *id)).map_or(&[][..], |v| v);
            assert_eq!(
                got.len(),
                sent.len(),
                "stream {id} from {writer}: all bytes"
            );
        }
        for (writer, id) in self.finished.keys() {
            if !self.reset.contains_key(id) {
                assert!(
                    self.fin_seen.contains_key(&(1 - writer, *id)),
                    "stream {id}: close delivered"
                );
            }
        }
    }
}

#[derive(Clone, Debug)]
enum Op {
    Open(usize, bool),
    Write(usize, usize, usize),
    Finish(usize, usize),
    Reset(usize, usize),
    Read(usize, usize, usize),
    Pump(usize, usize),
    Deliver(usize, usize),
}

fn op(resets: bool) -> impl Strategy<Value = Op> {
    let side = 0usize..2;
    prop_oneof![
        1 => (side.clone(), any::<bool>()).prop_map(|(s, c)| Op::Open(s, c)),
        6 => (side.clone(), any::<usize>(), 1usize..100_000).prop_map(|(s, i, n)| Op::Write(s, i, n)),
        1 => (side.clone(), any::<usize>()).prop_map(|(s, i)| Op::Finish(s, i)),
        (if resets { 1 } else { 0 }) => (side.clone(), any::<usize>()).prop_map(|(s, i)| Op::Reset(s, i)),
        3 => (side.clone(), any::<usize>(), 1usize..70_000).prop_map(|(s, i, n)| Op::Read(s, i, n)),
        4 => (side.clone(), 1usize..20).prop_map(|(s, n)| Op::Pump(s, n)),
        4 => (side, 1usize..20).prop_map(|(s, n)| Op::Deliver(s, n)),
    ]
}

fn config() -> impl Strategy<Value = StreamConfig> {
    (
        1usize..20_000,
        1usize..100_000,
        1usize..400_000,
        16usize..20,
    )
        .prop_map(|(frame, buf, total, streams)| StreamConfig {
            max_frame_payload: frame,
            send_buffer: buf,
            max_send_buffered: total,
            max_incoming_streams: streams,
            max_outgoing_streams: streams,
            ..StreamConfig::default()
        })
}

fn run(cfg: StreamConfig, ops: &[Op]) -> Pair {
    let mut p = Pair::new(cfg);
    for o in ops {
        match *o {
            Op::Open(s, c) => p.open(s, if c { Priority::Control } else { Priority::Bulk }),
            Op::Write(s, i, n) => p.write(s, i, n),
            Op::Finish(s, i) => p.finish(s, i),
            Op::Reset(s, i) => p.reset(s, i),
            Op::Read(s, i, n) => p.read(s, i, n),
            Op::Pump(s, n) => p.pump(s, n),
            Op::Deliver(s, n) => p.deliver(s, n),
        }
        p.check_bounds();
    }
    p.settle();
    p
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Decoding is total, and whatever decodes re-encodes to the same bytes
    /// (one encoding per frame).
    #[test]
    fn stream_decode_is_total(
        mut bytes in proptest::collection::vec(any::<u8>(), 0..64),
        forced in 0u8..3,
        t in 0u8..10,
    ) {
        if forced > 0 && bytes.len() >= 3 {
            bytes[0] = KIND_STREAM;
            bytes[1] = STREAM_VERSION;
            if forced == 2 {
                bytes[2] = t;
            }
        }
        if let Ok(f) = decode(&bytes) {
            prop_assert_eq!(f.encode(), bytes.clone());
        }
        // The mux survives it too: it either takes it or fails typed.
        let mut m = Mux::new(StreamConfig::default(), false, Instant::ZERO);
        let _ = m.handle_input(&bytes, Instant::ZERO);
    }

    /// A hostile peer's arbitrary message sequence (each message forced to
    /// the stream header, bodies shaped like real ones half of the time, so
    /// they reach the mux's rules): the mux takes
    /// each or fails typed, and never exceeds a bound. (The CI-side twin of
    /// the `stream_mux` fuzz target.)
    #[test]
    fn mux_survives_arbitrary_message_sequences(
        msgs in proptest::collection::vec(
            (
                0u8..9,
                any::<u32>().prop_map(|x| x % 8),
                // Bodies shaped like each frame type's, and junk.
                prop_oneof![
                    Just(Vec::new()),
                    (any::<u8>(), 0u8..3).prop_map(|(k, p)| vec![k, p]),
                    (0u32..70_000).prop_map(|x| x.to_be_bytes().to_vec()),
                    any::<u64>().prop_map(|x| x.to_be_bytes().to_vec()),
                    proptest::collection::vec(any::<u8>(), 1..12),
                ],
            ),
            1..60,
        ),
        initiator in any::<bool>(),
    ) {
        let mut mux = Mux::new(StreamConfig::default(), initiator, Instant::ZERO);
        for (i, (t, id, body)) in msgs.iter().enumerate() {
            let mut msg = vec![KIND_STREAM, STREAM_VERSION, *t];
            msg.extend_from_slice(&id.to_be_bytes());
            msg.extend_from_slice(body);
            let now = Instant::from_millis(i as u64 * 1000);
            let r = mux.handle_input(&msg, now);
            prop_assert!(r.is_ok() || mux.error().is_some());
            let _ = mux.handle_timeout(now);
            while mux.poll_transmit().is_some() {}
            while mux.poll_event().is_some() {}
            let s = mux.stats();
            let c = mux.config();
            prop_assert!(s.recv_buffered <= c.session_window as usize);
            prop_assert!(s.max_stream_recv_buffered <= c.stream_window as usize);
            prop_assert!(s.incoming_streams <= c.max_incoming_streams);
            prop_assert!(s.pending_control <= c.max_pending_control);
        }
    }

    /// Arbitrary interleavings of opens, writes, reads, closes and message
    /// delivery between two endpoints (no resets): every stream delivers
    /// every byte in order exactly once, then its close; the bounds hold
    /// after every step.
    #[test]
    fn streams_deliver_everything_in_order_once(
        cfg in config(),
        ops in proptest::collection::vec(op(false), 1..200),
    ) {
        let p = run(cfg, &ops);
        p.check_complete();
    }

    /// The same with resets from either side at any step: no error, the
    /// bounds hold, a reset stream delivered a prefix, others everything.
    #[test]
    fn streams_survive_resets_anywhere(
        cfg in config(),
        ops in proptest::collection::vec(op(true), 1..200),
    ) {
        let p = run(cfg, &ops);
        p.check_complete();
    }
}

/// A fixed exchange — a opens a stream, sends 100 000 bytes in 7 000-byte
/// writes, b echoes them, both close — with one reset or close injected by
/// either side at every step. Every run ends with no error, no live stream,
/// and (for a close) everything written before it delivered.
#[test]
fn reset_or_close_at_every_step() {
    const TOTAL: usize = 100_000;
    let script = |p: &mut Pair, step: usize| -> bool {
        // Returns false when the script has no step `step`.
        match step {
            0 => p.open(0, Priority::Bulk),
            s if s <= 15 => {
                p.write(0, 0, 7_000);
                p.pump(0, 3);
                p.deliver(0, 2);
            }
            s if s <= 30 => {
                p.read(1, 0, 5_000);
                p.write(1, 0, 9_000);
                p.pump(1, 2);
                p.deliver(1, 3);
                p.pump(0, 2);
                p.deliver(0, 3);
            }
            31 => {
                p.finish(0, 0);
                p.finish(1, 0);
            }
            _ => return false,
        }
        true
    };
    let mut runs = 0;
    for at in 0..32 {
        for action in 0..4 {
            let mut p = Pair::new(StreamConfig::default());
            let mut step = 0;
            while script(&mut p, step) {
                if step == at {
                    match action {
                        0 => p.reset(0, 0),
                        1 => p.reset(1, 0),
                        2 => p.finish(0, 0),
                        _ => p.finish(1, 0),
                    }
                }
                p.check_bounds();
                step += 1;
            }
            p.finish(0, 0);
            p.finish(1, 0);
            p.settle();
            p.check_complete();
            for m in &p.m {
                let s = m.stats();
                assert_eq!(
                    s.incoming_streams + s.outgoing_streams,
                    0,
                    "at {at} action {action}"
                );
                assert_eq!(s.recv_buffered + s.send_buffered, 0);
            }
            runs += 1;
        }
    }
    assert_eq!(runs, 128);
    let _ = TOTAL;
}

/// A peer that never reads: the sender's memory stays at its send buffer
/// and the receiver's at its windows, however long the writer tries.
#[test]
fn peer_that_never_reads_bounds_both_sides() {
    let mut p = Pair::new(StreamConfig::default());
    for _ in 0..8 {
        p.open(0, Priority::Bulk);
    }
    let mut offered = 0usize;
    for round in 0..2_000 {
        for i in 0..8 {
            p.write(0, i, 8_192);
            offered += 8_192;
        }
        p.pump(0, usize::MAX);
        p.deliver(0, usize::MAX);
        p.pump(1, usize::MAX);
        p.deliver(1, usize::MAX);
        p.check_bounds();
        if round > 100 {
            assert_eq!(p.m[0].poll_transmit(), None, "nothing more may be sent");
        }
    }
    let (a, b) = (p.m[0].stats(), p.m[1].stats());
    println!(
        "never-reading peer: offered {offered} B; receiver holds {} B (session window {}), sender holds {} B (bound {})",
        b.recv_buffered, INITIAL_SESSION_WINDOW, a.send_buffered, 8 * 64 * 1024
    );
    assert_eq!(b.recv_buffered, INITIAL_SESSION_WINDOW as usize);
    assert!(a.send_buffered <= 8 * 64 * 1024);
}

// ---------------------------------------------------------------------------
// Measurement: control latency while bulk saturates the link
// ---------------------------------------------------------------------------

/// One direction of a simulated full-duplex link carrying session frames:
/// a send buffer below the mux (like a socket's) of `cap` wire bytes, and a
/// wire that moves one byte per time unit.
struct Wire {
    queue: VecDeque<(Vec<u8>, usize)>,
    queued: usize,
    cap: usize,
    held: Option<Vec<u8>>,
}

/// Bytes on TCP for one stream message: length (2) + type (1) + tag (16).
fn wire_len(msg: &[u8]) -> usize {
    msg.len() + 2 + 1 + 16
}

impl Wire {
    fn new(cap: usize) -> Self {
        Wire {
            queue: VecDeque::new(),
            queued: 0,
            cap,
            held: None,
        }
    }

    /// Takes messages from the mux while the send buffer has room (one
    /// message at a time when empty, whatever `cap`).
    fn fill(&mut self, m: &mut Mux) {
        loop {
            let msg = match self.held.take() {
                Some(h) => h,
                None => match m.poll_transmit() {
                    Some(x) => x,
                    None => return,
                },
            };
            let n = wire_len(&msg);
            if self.queued > 0 && self.queued + n > self.cap {
                self.held = Some(msg);
                return;
            }
            self.queued += n;
            self.queue.push_back((msg, n));
        }
    }

    fn next_done(&self) -> Option<usize> {
        self.queue.front().map(|(_, rem)| *rem)
    }

    /// Moves `dt` byte times; returns the messages that arrived.
    fn advance(&mut self, mut dt: usize) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        while dt > 0 {
            let Some((_, rem)) = self.queue.front_mut() else {
                break;
            };
            let step = dt.min(*rem);
            *rem -= step;
            self.queued -= step;
            dt -= step;
            if *rem == 0 {
                if let Some((m, _)) = self.queue.pop_front() {
                    out.push(m);
                }
            }
        }
        out
    }
}

/// Round trip of a 64-byte message on a control stream (a writes, b reads
/// and echoes, a reads), in byte times of the wire, while `bulk` bulk
/// streams keep a's send buffers full. `ctl_prio` is the echo stream's
/// priority. Median of 15 samples.
fn control_rtt(bulk: usize, ctl_prio: Priority, below_mux: usize) -> usize {
    let now = Instant::ZERO;
    let mut a = Mux::new(StreamConfig::default(), true, now);
    let mut b = Mux::new(StreamConfig::default(), false, now);
    let mut ab = Wire::new(below_mux);
    let mut ba = Wire::new(below_mux);
    let ctl = a.open(1, ctl_prio).unwrap_or(StreamId(0));
    let bulks: Vec<StreamId> = (0..bulk)
        .filter_map(|_| a.open(2, Priority::Bulk).ok())
        .collect();
    let chunk = vec![0x55u8; 16_384];
    let mut clock = 0usize;
    let mut samples = Vec::new();
    let mut started: Option<usize> = None;
    let mut echo_pending = 0usize;
    let mut got_back = 0usize;
    let mut buf = vec![0u8; 70_000];
    let warmup = 4 * 1024 * 1024;
    while samples.len() < 15 {
        // Applications: a keeps every bulk stream full; b reads everything
        // at once and echoes the control stream; a reads the echo.
        for &id in &bulks {
            while a.write(id, &chunk).unwrap_or(0) > 0 {}
        }
        if started.is_none() && clock >= warmup + samples.len() * 50_000 {
            assert_eq!(a.write(ctl, &[7u8; 64]), Ok(64));
            started = Some(clock);
            got_back = 0;
        }
        while let Some(e) = b.poll_event() {
            if let Event::Readable(id) = e {
                while let Ok(Read::Bytes(n)) = b.read(id, &mut buf) {
                    if id == ctl {
                        echo_pending += n;
                    }
                }
            }
        }
        if echo_pending > 0 {
            echo_pending -= b.write(ctl, &vec![8u8; echo_pending]).unwrap_or(0);
        }
        while let Some(e) = a.poll_event() {
            if let Event::Readable(id) = e {
                while let Ok(Read::Bytes(n)) = a.read(id, &mut buf) {
                    got_back += n;
                }
            }
        }
        if let Some(s) = started {
            if got_back >= 64 {
                samples.push(clock - s);
                started = None;
            }
        }
        ab.fill(&mut a);
        ba.fill(&mut b);
        let dt = match (ab.next_done(), ba.next_done()) {
            (Some(x), Some(y)) => x.min(y),
            (Some(x), None) | (None, Some(x)) => x,
            // Idle link: jump to the next sample's start.
            (None, None) => (warmup + samples.len() * 50_000)
                .saturating_sub(clock)
                .max(1),
        };
        clock += dt;
        for m in ab.advance(dt) {
            b.handle_input(&m, now).ok();
        }
        for m in ba.advance(dt) {
            a.handle_input(&m, now).ok();
        }
        assert!(a.error().is_none() && b.error().is_none());
    }
    samples.sort_unstable();
    samples[samples.len() / 2]
}

/// Deterministic (simulated wire, byte-time units): never wall-clock. The
/// figures go to docs/performance.md ("Streams").
#[test]
fn stream_control_latency_under_bulk() {
    for (label, below) in [
        ("one message below the mux", 0usize),
        ("64 KiB socket buffer", 65_536),
    ] {
        let idle = control_rtt(0, Priority::Control, below);
        let busy_ctl = control_rtt(8, Priority::Control, below);
        let busy_same = control_rtt(8, Priority::Bulk, below);
        println!(
            "bench-row stream control RTT ({label}): idle {idle} byte-times; \
             8 bulk streams saturating: control priority {busy_ctl} ({:.1}x idle), \
             same priority {busy_same} ({:.1}x idle)",
            busy_ctl as f64 / idle as f64,
            busy_same as f64 / idle as f64
        );
        // Deterministic bounds, not timings: with priority the message
        // waits at most for what is already below the mux plus one bulk
        // frame in each direction.
        let frame = wire_len(&[0u8; 7 + 16_384]);
        assert!(busy_ctl <= idle + 2 * (below + frame), "{busy_ctl}");
        assert!(busy_ctl < busy_same);
    }
}

// ---------------------------------------------------------------------------
// Over real sessions: negotiation and byte-level chunking
// ---------------------------------------------------------------------------

/// node-a advertises `streams/1`, node-b is a v1 node (its announce lists
/// only `echo`). They authenticate and ping as before; node-a's rule says
/// no streams to node-b; and even a stream message sent by mistake is just
/// an unknown data kind to node-b, whose session carries on.
#[test]
fn v1_peer_authenticates_and_pings_with_a_streams_node() {
    use common::*;
    let mut a = Node::new("node-a", 1, 15, 34567);
    let b_v1 = Node::new("node-b", 2, 16, 34568);
    let mut b = b_v1;
    a.announce = dsoftbus::Announce::new(
        id("node-a"),
        34567,
        a.key(),
        vec![
            ServiceName::new("echo").unwrap(),
            ServiceName::new(STREAMS_SERVICE).unwrap(),
        ],
    )
    .unwrap();
    a.hear(&b, t(0));
    b.hear(&a, t(0));
    // The rule of wire.md §11.2, from each side's peer table.
    assert!(!peer_supports_streams(
        a.table.get_str("node-b").unwrap().services()
    ));
    assert!(peer_supports_streams(
        b.table.get_str("node-a").unwrap().services()
    ));

    let mut r = rng(3);
    let mut ca = Connection::connect(&a.local, a.target("node-b"), &mut r, t(0), cfg()).unwrap();
    let mut cb = Connection::accept(&b.local, &mut r, t(0), cfg());
    shuttle(&mut ca, &a.table, &mut cb, &b.table, t(0));
    assert!(ca.is_established() && cb.is_established());
    ca.send_ping(1).unwrap();
    cb.send_ping(2).unwrap();
    // A stream message by mistake: to node-b it is data of an unknown kind.
    let mut mux = Mux::new(StreamConfig::default(), true, t(0));
    let _ = mux.open(1, Priority::Control).unwrap();
    ca.send_data(&mux.poll_transmit().unwrap()).unwrap();
    ca.send_ping(3).unwrap();
    let (ea, eb) = shuttle(&mut ca, &a.table, &mut cb, &b.table, t(1));
    assert!(ea.contains(&ConnEvent::Pong(1)) && ea.contains(&ConnEvent::Ping(2)));
    assert!(eb.contains(&ConnEvent::Pong(2)) && eb.contains(&ConnEvent::Ping(3)));
    assert!(ca.is_established() && cb.is_established());
}

/// Moves `conn_from`'s transmit bytes into `conn_to` in pieces of the given
/// sizes; data messages go to `mux_to`.
fn carry(
    from: &mut Connection,
    to: &mut Connection,
    to_bind: &dsoftbus::PeerTable,
    mux_to: &mut Mux,
    cuts: &[usize],
    turn: &mut usize,
) {
    let wire = from.take_transmit();
    let mut off = 0;
    while off < wire.len() {
        let end = (off + cuts[*turn % cuts.len()]).min(wire.len());
        *turn += 1;
        let mut piece = &wire[off..end];
        while !piece.is_empty() {
            let n = to.handle_input(piece, t(0), to_bind).unwrap();
            piece = &piece[n..];
            while let Some(e) = to.poll_event() {
                if let ConnEvent::Data(d) = e {
                    mux_to.handle_input(&d, t(0)).unwrap();
                }
            }
        }
        off = end;
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// Two streams of each priority from each side over a real Noise
    /// session, its byte stream cut at arbitrary points: every stream's
    /// bytes arrive in order, exactly once, then the close.
    #[test]
    fn streams_over_a_session_are_chunking_invariant(
        cuts in proptest::collection::vec(1usize..5000, 1..20),
        sizes in proptest::collection::vec(0usize..300_000, 4),
        frame in 1000usize..20_000,
    ) {
        use common::*;
        let mut a = Node::new("node-a", 1, 15, 34567);
        let mut b = Node::new("node-b", 2, 16, 34568);
        a.hear(&b, t(0));
        b.hear(&a, t(0));
        let mut r = rng(4);
        let mut ca = Connection::connect(&a.local, a.target("node-b"), &mut r, t(0), cfg()).unwrap();
        let mut cb = Connection::accept(&b.local, &mut r, t(0), cfg());
        shuttle(&mut ca, &a.table, &mut cb, &b.table, t(0));
        prop_assert!(ca.is_established() && cb.is_established());
        let _ = (ca.poll_event(), cb.poll_event());
        let scfg = StreamConfig { max_frame_payload: frame, ..StreamConfig::default() };
        let mut m = [
            Mux::new(scfg.clone(), ca.is_initiator(), t(0)),
            Mux::new(scfg, cb.is_initiator(), t(0)),
        ];
        // (side, id, bytes to send, offset written)
        let mut plan = Vec::new();
        for (i, &n) in sizes.iter().enumerate() {
            let side = i % 2;
            let prio = if i < 2 { Priority::Control } else { Priority::Bulk };
            let id = m[side].open(i as u8, prio).unwrap();
            let data: Vec<u8> = (0..n).map(|k| pattern(side, id, k)).collect();
            plan.push((side, id, data, 0usize));
        }
        let mut got: BTreeMap<StreamId, (Vec<u8>, bool)> = BTreeMap::new();
        let mut turn = 0;
        let mut buf = vec![0u8; 50_000];
        for _ in 0..10_000 {
            for (side, id, data, off) in plan.iter_mut() {
                if *off < data.len() {
                    *off += m[*side].write(*id, &data[*off..]).unwrap();
                    if *off == data.len() {
                        m[*side].finish(*id).unwrap();
                    }
                } else if data.is_empty() && *off == 0 {
                    m[*side].finish(*id).unwrap();
                    *off = 1; // finished
                }
            }
            let mut moved = false;
            while let Some(msg) = m[0].poll_transmit() {
                ca.send_data(&msg).unwrap();
                moved = true;
            }
            while let Some(msg) = m[1].poll_transmit() {
                cb.send_data(&msg).unwrap();
                moved = true;
            }
            carry(&mut ca, &mut cb, &b.table, &mut m[1], &cuts, &mut turn);
            carry(&mut cb, &mut ca, &a.table, &mut m[0], &cuts, &mut turn);
            for (side, id, _, _) in &plan {
                let reader = 1 - side;
                let e = got.entry(*id).or_default();
                loop {
                    match m[reader].read(*id, &mut buf) {
                        Ok(Read::Bytes(n)) => e.0.extend_from_slice(&buf[..n]),
                        Ok(Read::Fin) => { e.1 = true; break; }
                        Ok(Read::WouldBlock) | Err(StreamError::UnknownStream) => break,
                        Err(err) => panic!("{err}"),
                    }
                }
            }
            while m[0].poll_event().is_some() {}
            while m[1].poll_event().is_some() {}
            if !moved && got.values().all(|(_, fin)| *fin) {
                break;
            }
        }
        for (_, id, data, _) in &plan {
            let (bytes, fin) = &got[id];
            prop_assert_eq!(bytes.len(), data.len());
            prop_assert!(bytes == data, "stream {} differs", id);
            prop_assert!(*fin, "stream {} closed", id);
        }
        prop_assert!(m[0].error().is_none() && m[1].error().is_none());
    }
}
