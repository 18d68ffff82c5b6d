//! Session throughput and latency over loopback TCP vs. plain TCP, same run.
//!
//! Both sides of every pair run on their own thread with blocking sockets and
//! `TCP_NODELAY`; the session side drives [`Connection`] directly over the
//! host `TcpStream` (the bytes on the wire are exactly what `transport::pump`
//! would move).
//!
//! - `throughput/{plain_tcp,session}`: 64 KiB application writes (each split
//!   into two 32 KiB data messages: one message carries at most
//!   `session::MAX_DATA_LEN` = 65 518 bytes), 1 MiB per iteration; the
//!   receiver confirms the last byte before the clock stops.
//!   Target: session ≥ 0.75× plain.
//! - `latency/{plain_tcp,session}`: one 16-byte ping-pong round trip vs. one
//!   session ping → pong (27-byte frames each way, pong queued by the
//!   peer's `Connection`). Target: session ≤ plain + 15 µs.
//!
//! The criterion groups measure plain and session one after the other; on a
//! shared 2-vCPU machine the load can change in between. The `bench-row`
//! ratios therefore come from an extra *paired* phase: rounds that alternate
//! plain and session on the same live connections, one ratio per round; the
//! row shows the median round and the spread.

mod common;

use std::hint::black_box;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant as StdInstant};

use common::*;
use criterion::Throughput;
use dsoftbus::connection::{Connection, Event};
use dsoftbus::handshake::HandshakeConfig;
use dsoftbus::session::MAX_DATA_LEN;
use dsoftbus::transport::pump;

const WRITE: usize = 64 * 1024;
const PER_ITER: usize = 16 * WRITE; // 1 MiB

fn tcp_pair() -> (TcpStream, TcpStream) {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let a = TcpStream::connect(l.local_addr().expect("addr")).expect("connect");
    let (b, _) = l.accept().expect("accept");
    a.set_nodelay(true).expect("nodelay");
    b.set_nodelay(true).expect("nodelay");
    (a, b)
}

/// A TCP pair carrying an established session (handshake over the sockets).
fn session_pair() -> ((Connection, TcpStream), (Connection, TcpStream)) {
    let (a, b) = pair();
    let (mut sa, mut sb) = tcp_pair();
    sa.set_nonblocking(true).expect("nb");
    sb.set_nonblocking(true).expect("nb");
    let mut r = rng(5);
    let cfg = HandshakeConfig::default();
    let mut ca = Connection::connect(&a.local, a.target(&b), &mut r, t(0), cfg).expect("connect");
    let mut cb = Connection::accept(&b.local, &mut r, t(0), cfg);
    for _ in 0..100_000 {
        pump(&mut ca, &mut sa, t(0), &a.table).expect("pump a");
        pump(&mut cb, &mut sb, t(0), &b.table).expect("pump b");
        if ca.is_established() && cb.is_established() && ca.transmit_buf().is_empty() {
            break;
        }
        thread::yield_now();
    }
    assert!(ca.is_established() && cb.is_established());
    while ca.poll_event().is_some() {}
    while cb.poll_event().is_some() {}
    sa.set_nonblocking(false).expect("blocking");
    sb.set_nonblocking(false).expect("blocking");
    ((ca, sa), (cb, sb))
}

/// Writes everything the connection has queued.
fn flush(c: &mut Connection, s: &mut TcpStream) {
    let n = c.transmit_buf().len();
    if n > 0 {
        s.write_all(c.transmit_buf()).expect("write");
        c.consume_transmit(n);
    }
}

/// Sends one application write as evenly sized data messages.
fn send_app_write(c: &mut Connection, s: &mut TcpStream, data: &[u8]) {
    let parts = data.len().div_ceil(MAX_DATA_LEN);
    let chunk = data.len().div_ceil(parts);
    for piece in data.chunks(chunk) {
        c.send_data(piece).expect("send");
    }
    flush(c, s);
}

/// Receiver loop for the session side: counts data bytes, reports each
/// completed target through `done`.
fn session_sink(
    mut c: Connection,
    mut s: TcpStream,
    expect: mpsc::Receiver<usize>,
    done: mpsc::Sender<()>,
) {
    let table = dsoftbus::peer_table::PeerTable::new(
        dsoftbus::DeviceId::new("sink").expect("id"),
        dsoftbus::PublicKey::from_bytes([7; 32]),
        Default::default(),
    );
    let mut buf = vec![0u8; 128 * 1024];
    let mut pending: usize = 0;
    let mut filled = 0usize;
    let mut start = 0usize;
    while let Ok(want) = expect.recv() {
        let mut got = 0usize;
        while got < want {
            if start == filled {
                start = 0;
                filled = match s.read(&mut buf) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
            }
            let used = c
                .handle_input(&buf[start..filled], t(0), &table)
                .expect("input");
            start += used;
            while let Some(e) = c.poll_event() {
                if let Event::Data(d) = e {
                    got += d.len();
                }
            }
        }
        pending += got - want;
        let _ = pending;
        let _ = done.send(());
    }
}

fn plain_sink(mut s: TcpStream, expect: mpsc::Receiver<usize>, done: mpsc::Sender<()>) {
    let mut buf = vec![0u8; WRITE];
    while let Ok(want) = expect.recv() {
        let mut got = 0usize;
        while got < want {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => got += n,
            }
        }
        let _ = done.send(());
    }
}

fn echo_plain(mut s: TcpStream) {
    let mut buf = [0u8; 16];
    while s.read_exact(&mut buf).is_ok() {
        if s.write_all(&buf).is_err() {
            return;
        }
    }
}

fn echo_session(mut c: Connection, mut s: TcpStream) {
    let table = dsoftbus::peer_table::PeerTable::new(
        dsoftbus::DeviceId::new("echo").expect("id"),
        dsoftbus::PublicKey::from_bytes([7; 32]),
        Default::default(),
    );
    let mut buf = [0u8; 4096];
    loop {
        let n = match s.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if c.handle_input(&buf[..n], t(0), &table).is_err() {
            return;
        }
        while c.poll_event().is_some() {}
        flush(&mut c, &mut s);
    }
}

const MSG: usize = 32 * 1024;

/// AEAD backends and the session's in-memory send path, same run: which
/// backend to use, and how close the session gets to its AEAD floor.
fn aead_group(c: &mut criterion::Criterion) {
    let mut g = c.benchmark_group("aead");
    g.throughput(Throughput::Bytes(MSG as u64));
    let mut buf = vec![0x5au8; MSG];
    let mut n = 0u64;
    {
        use chacha20poly1305::{AeadInPlace, ChaCha20Poly1305, KeyInit};
        let k = ChaCha20Poly1305::new(&[7u8; 32].into());
        g.bench_function("rustcrypto_seal", |b| {
            b.iter(|| {
                n += 1;
                let mut nonce = [0u8; 12];
                nonce[4..].copy_from_slice(&n.to_le_bytes());
                black_box(k.encrypt_in_place_detached(&nonce.into(), &[], &mut buf))
            })
        });
    }
    {
        use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305};
        let k = LessSafeKey::new(UnboundKey::new(&CHACHA20_POLY1305, &[7u8; 32]).expect("key"));
        g.bench_function("ring_seal", |b| {
            b.iter(|| {
                n += 1;
                let mut nonce = [0u8; 12];
                nonce[4..].copy_from_slice(&n.to_le_bytes());
                black_box(k.seal_in_place_separate_tag(
                    Nonce::assume_unique_for_key(nonce),
                    Aad::empty(),
                    &mut buf,
                ))
            })
        });
    }
    {
        use openssl::cipher::Cipher;
        let mut k = openssl::cipher_ctx::CipherCtx::new().expect("ctx");
        k.encrypt_init(Some(Cipher::chacha20_poly1305()), Some(&[7u8; 32]), None)
            .expect("key");
        g.bench_function("openssl_seal", |b| {
            b.iter(|| {
                n += 1;
                let mut nonce = [0u8; 12];
                nonce[4..].copy_from_slice(&n.to_le_bytes());
                k.encrypt_init(None, None, Some(&nonce)).expect("nonce");
                k.cipher_update_inplace(&mut buf, MSG).expect("seal");
                k.cipher_final(&mut []).expect("final");
                let mut tag = [0u8; 16];
                k.tag(&mut tag).expect("tag");
                black_box(tag)
            })
        });
    }
    let (a, b) = pair();
    let (mut ca, _cb) = handshake_in_memory(&a, &b, &mut rng(3));
    let data = vec![0x5au8; MSG];
    g.bench_function("session_send", |bch| {
        bch.iter(|| {
            ca.send_data(black_box(&data)).expect("send");
            let k = ca.transmit_buf().len();
            ca.consume_transmit(k);
        })
    });
    g.finish();
}

/// Pins the calling thread to core `cpu`, or lets it run anywhere (`None`).
/// Latency is measured pinned — the measuring thread on core 0, its peer on
/// core 1 — because the scheduler otherwise sometimes co-locates the two
/// threads and sometimes not, which on a VM moves a round trip between ~5 and
/// ~80 µs regardless of protocol. Throughput is reported both ways.
fn pin(cpu: Option<usize>) {
    #[cfg(target_os = "linux")]
    {
        let cores = thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        if cores < 2 {
            return;
        }
        // SAFETY: plain libc calls on a zeroed, correctly sized cpu_set_t,
        // for the calling thread (pid 0).
        unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            match cpu {
                Some(c) => libc::CPU_SET(c % cores, &mut set),
                None => (0..cores).for_each(|c| libc::CPU_SET(c, &mut set)),
            }
            libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
        }
    }
}

/// Spawns a peer thread, pinned to core 1 if `pinned`.
fn spawn_peer<F: FnOnce() + Send + 'static>(pinned: bool, f: F) -> thread::JoinHandle<()> {
    thread::spawn(move || {
        pin(if pinned { Some(1) } else { None });
        f()
    })
}

/// Plain TCP: a writer here, a counting reader thread there.
struct PlainLink {
    tx: TcpStream,
    expect: mpsc::Sender<usize>,
    done: mpsc::Receiver<()>,
    sink: Option<thread::JoinHandle<()>>,
}

impl PlainLink {
    fn new(pinned: bool) -> Self {
        let (tx, rx) = tcp_pair();
        let (etx, erx) = mpsc::channel();
        let (dtx, drx) = mpsc::channel();
        let sink = spawn_peer(pinned, move || plain_sink(rx, erx, dtx));
        PlainLink {
            tx,
            expect: etx,
            done: drx,
            sink: Some(sink),
        }
    }

    /// Sends `writes` × 64 KiB and waits until the reader has it all.
    fn transfer(&mut self, payload: &[u8], writes: u64) -> Duration {
        self.expect
            .send(payload.len() * writes as usize)
            .expect("sink alive");
        let start = StdInstant::now();
        for _ in 0..writes {
            self.tx.write_all(black_box(payload)).expect("write");
        }
        self.done.recv().expect("sink done");
        start.elapsed()
    }
}

impl Drop for PlainLink {
    fn drop(&mut self) {
        let _ = self.tx.shutdown(std::net::Shutdown::Both);
        let (etx, _) = mpsc::channel();
        self.expect = etx;
        if let Some(h) = self.sink.take() {
            let _ = h.join();
        }
    }
}

/// A session over TCP: our `Connection` here, the peer's in a thread.
struct SessionLink {
    conn: Connection,
    tx: TcpStream,
    expect: mpsc::Sender<usize>,
    done: mpsc::Receiver<()>,
    sink: Option<thread::JoinHandle<()>>,
}

impl SessionLink {
    fn new(pinned: bool) -> Self {
        let ((ca, sa), (cb, sb)) = session_pair();
        let (etx, erx) = mpsc::channel();
        let (dtx, drx) = mpsc::channel();
        let sink = spawn_peer(pinned, move || session_sink(cb, sb, erx, dtx));
        SessionLink {
            conn: ca,
            tx: sa,
            expect: etx,
            done: drx,
            sink: Some(sink),
        }
    }

    fn transfer(&mut self, payload: &[u8], writes: u64) -> Duration {
        self.expect
            .send(payload.len() * writes as usize)
            .expect("sink alive");
        let start = StdInstant::now();
        for _ in 0..writes {
            send_app_write(&mut self.conn, &mut self.tx, black_box(payload));
        }
        self.done.recv().expect("sink done");
        start.elapsed()
    }
}

impl Drop for SessionLink {
    fn drop(&mut self) {
        let _ = self.tx.shutdown(std::net::Shutdown::Both);
        let (etx, _) = mpsc::channel();
        self.expect = etx;
        if let Some(h) = self.sink.take() {
            let _ = h.join();
        }
    }
}

/// Plain 16-byte ping-pong against an echo thread.
struct PlainEcho {
    s: TcpStream,
    peer: Option<thread::JoinHandle<()>>,
}

impl PlainEcho {
    fn new() -> Self {
        let (a, b) = tcp_pair();
        PlainEcho {
            s: a,
            peer: Some(spawn_peer(true, move || echo_plain(b))),
        }
    }

    fn rtt(&mut self) {
        let msg = [0x5au8; 16];
        let mut back = [0u8; 16];
        self.s.write_all(&msg).expect("write");
        self.s.read_exact(&mut back).expect("read");
        black_box(back[0]);
    }
}

impl Drop for PlainEcho {
    fn drop(&mut self) {
        let _ = self.s.shutdown(std::net::Shutdown::Both);
        if let Some(h) = self.peer.take() {
            let _ = h.join();
        }
    }
}

/// Session ping → pong against a peer `Connection` in a thread.
struct SessionEcho {
    conn: Connection,
    s: TcpStream,
    table: dsoftbus::peer_table::PeerTable,
    buf: Vec<u8>,
    nonce: u64,
    peer: Option<thread::JoinHandle<()>>,
}

impl SessionEcho {
    fn new() -> Self {
        let ((ca, sa), (cb, sb)) = session_pair();
        SessionEcho {
            conn: ca,
            s: sa,
            table: dsoftbus::peer_table::PeerTable::new(
                dsoftbus::DeviceId::new("pinger").expect("id"),
                dsoftbus::PublicKey::from_bytes([7; 32]),
                Default::default(),
            ),
            buf: vec![0u8; 4096],
            nonce: 0,
            peer: Some(spawn_peer(true, move || echo_session(cb, sb))),
        }
    }

    fn rtt(&mut self) {
        self.nonce += 1;
        self.conn.send_ping(self.nonce).expect("ping");
        flush(&mut self.conn, &mut self.s);
        loop {
            let n = self.s.read(&mut self.buf).expect("read");
            assert!(n > 0, "peer closed");
            self.conn
                .handle_input(&self.buf[..n], t(0), &self.table)
                .expect("input");
            if let Some(Event::Pong(p)) = self.conn.poll_event() {
                assert_eq!(p, self.nonce);
                break;
            }
        }
    }
}

impl Drop for SessionEcho {
    fn drop(&mut self) {
        let _ = self.s.shutdown(std::net::Shutdown::Both);
        if let Some(h) = self.peer.take() {
            let _ = h.join();
        }
    }
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

const ROUNDS: usize = 15;

fn main() {
    let mut c = criterion();
    let payload = vec![0xa5u8; WRITE];
    aead_group(&mut c);
    let writes_per_iter = (PER_ITER / WRITE) as u64;
    {
        let mut g = c.benchmark_group("throughput");
        g.throughput(Throughput::Bytes(PER_ITER as u64));
        g.sample_size(20);
        pin(None);
        let mut plain = PlainLink::new(false);
        g.bench_function("plain_tcp", |b| {
            b.iter_custom(|iters| plain.transfer(&payload, iters * writes_per_iter))
        });
        drop(plain);
        let mut sess = SessionLink::new(false);
        g.bench_function("session", |b| {
            b.iter_custom(|iters| sess.transfer(&payload, iters * writes_per_iter))
        });
        g.finish();
    }
    {
        let mut g = c.benchmark_group("latency");
        g.sample_size(30);
        pin(Some(0));
        let mut plain = PlainEcho::new();
        g.bench_function("plain_tcp", |b| b.iter(|| plain.rtt()));
        drop(plain);
        let mut sess = SessionEcho::new();
        g.bench_function("session", |b| b.iter(|| sess.rtt()));
        g.finish();
    }
    c.final_summary();
    if !measuring() {
        return;
    }
    aead_rows();

    // Paired phase: alternate plain and session round by round, first with
    // the scheduler placing threads, then pinned to separate cores.
    for pinned in [false, true] {
        pin(if pinned { Some(0) } else { None });
        let (mut plain, mut sess) = (PlainLink::new(pinned), SessionLink::new(pinned));
        let writes = 128u64; // 8 MiB per round and side
        plain.transfer(&payload, writes);
        sess.transfer(&payload, writes);
        let (mut pr, mut sr, mut ratio) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..ROUNDS {
            let bytes = (WRITE as u64 * writes) as f64;
            let p = bytes / plain.transfer(&payload, writes).as_secs_f64();
            let s = bytes / sess.transfer(&payload, writes).as_secs_f64();
            pr.push(p);
            sr.push(s);
            ratio.push(s / p);
        }
        drop((plain, sess));
        let lo = ratio.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = ratio.iter().copied().fold(0.0, f64::max);
        let r = median(&mut ratio);
        let (name, target, met) = if pinned {
            (
                "session throughput, threads pinned to 2 cores (context)",
                "report",
                None,
            )
        } else {
            (
                "session throughput (64 KiB writes, loopback TCP)",
                ">= 0.75x",
                Some(r >= 0.75),
            )
        };
        row(
            name,
            &format!("{:.0} MB/s", median(&mut sr) / 1e6),
            &format!("{:.0} MB/s plain TCP", median(&mut pr) / 1e6),
            &format!("{r:.2}x (rounds {lo:.2}-{hi:.2})"),
            target,
            met,
        );
    }

    pin(Some(0));
    let (mut plain, mut sess) = (PlainEcho::new(), SessionEcho::new());
    let pings = 2000u32;
    let (mut pr, mut sr, mut diff) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        let t0 = StdInstant::now();
        for _ in 0..pings {
            plain.rtt();
        }
        let p = t0.elapsed().as_nanos() as f64 / f64::from(pings);
        let t0 = StdInstant::now();
        for _ in 0..pings {
            sess.rtt();
        }
        let s = t0.elapsed().as_nanos() as f64 / f64::from(pings);
        pr.push(p);
        sr.push(s);
        diff.push((s - p) / 1e3);
    }
    drop((plain, sess));
    let spread = (
        diff.iter().copied().fold(f64::INFINITY, f64::min),
        diff.iter().copied().fold(f64::NEG_INFINITY, f64::max),
    );
    let d = median(&mut diff);
    row(
        "session ping/pong RTT (loopback TCP, pinned to 2 cores)",
        &fmt_time(median(&mut sr)),
        &format!("{} plain TCP", fmt_time(median(&mut pr))),
        &format!("{d:+.1} µs (rounds {:+.1} to {:+.1})", spread.0, spread.1),
        "<= plain + 15 µs",
        Some(d <= 15.0),
    );
}

fn aead_rows() {
    let msg = MSG as f64;
    let rc = mean_ns("aead", "rustcrypto_seal");
    let (active, active_name) = if cfg!(feature = "openssl-aead") {
        (mean_ns("aead", "openssl_seal"), "OpenSSL")
    } else if cfg!(feature = "ring-aead") {
        (mean_ns("aead", "ring_seal"), "ring")
    } else {
        (rc, "RustCrypto")
    };
    if let (Some(r), Some(p), true) = (active, mean_ns("aead", "ring_seal"), active_name != "ring")
    {
        row(
            &format!("AEAD backend: ChaCha20-Poly1305 seal, 32 KiB ({active_name})"),
            &format!("{:.0} MB/s", msg / r * 1e3),
            &format!("{:.0} MB/s ring", msg / p * 1e3),
            &format!("{:.2}x", p / r),
            "faster backend wins (see crypto bench)",
            Some(r <= p),
        );
    }
    if let (Some(sn), Some(fl)) = (mean_ns("aead", "session_send"), active) {
        row(
            &format!("session send path in memory, 32 KiB ({active_name})"),
            &format!("{:.0} MB/s", msg / sn * 1e3),
            &format!("{:.0} MB/s raw AEAD", msg / fl * 1e3),
            &format!("{:.2}x", fl / sn),
            "report (AEAD floor)",
            None,
        );
    }
}
