//! Session throughput and latency over loopback TCP vs. plain TCP, same run.
//!
//! Both sides of every pair run on their own thread with blocking sockets and
//! `TCP_NODELAY`; the session side drives [`Connection`] directly over the
//! host `TcpStream` (the bytes on the wire are exactly what `transport::pump`
//! would move).
//!
//! - `throughput/{plain_tcp,aead_pipeline,session,session_zero_copy}`: 64 KiB
//!   application writes (each split into two 32 KiB data messages: one
//!   message carries at most `session::MAX_DATA_LEN` = 65 518 bytes), 1 MiB
//!   per iteration; the receiver confirms the last byte before the clock
//!   stops. `aead_pipeline` is the minimal program doing the same essential
//!   work (seal on one thread → loopback TCP → open on another, same cipher
//!   and record size; see `PipeCipher`). Target (issue 12): session ≥ 0.9×
//!   the pipeline on bytes per CPU second of the busier thread; plain TCP
//!   is context only.
//! - `latency/{plain_tcp,session}`: one 16-byte ping-pong round trip vs. one
//!   session ping → pong (27-byte frames each way, pong queued by the
//!   peer's `Connection`). Target: session ≤ plain + 15 µs.
//!
//! The criterion groups measure the variants one after the other; on a
//! shared 2-vCPU machine the load can change in between. The `bench-row`
//! ratios therefore come from an extra *paired* phase: rounds that alternate
//! the variants on the same live connections, one ratio per round, each
//! transfer timed by the CPU clocks of its two threads; the row shows the
//! median round and the spread.

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

/// CPU time of the calling thread, in seconds.
fn thread_cpu() -> f64 {
    // SAFETY: clock_gettime on a valid, zeroed timespec.
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

/// One measured transfer: wall time and the CPU time of the sending and the
/// receiving thread.
#[derive(Clone, Copy)]
struct Sample {
    wall: Duration,
    tx_cpu: f64,
    rx_cpu: f64,
}

impl Sample {
    /// The busier thread's CPU seconds: what a pipeline of two threads is
    /// bound by when each has a core.
    fn busier(&self) -> f64 {
        self.tx_cpu.max(self.rx_cpu)
    }
}

/// Receiver loop for the session side: counts data bytes, reports each
/// completed target (with its thread's cumulative CPU time) through `done`.
/// `zero_copy`: read into the connection (`recv_buf`) and take data as
/// slices (`commit_recv_with`) instead of `handle_input` + `Event::Data`.
fn session_sink(
    mut c: Connection,
    mut s: TcpStream,
    expect: mpsc::Receiver<usize>,
    done: mpsc::Sender<f64>,
    zero_copy: bool,
) {
    let table = dsoftbus::peer_table::PeerTable::new(
        dsoftbus::DeviceId::new("sink").expect("id"),
        dsoftbus::PublicKey::from_bytes([7; 32]),
        Default::default(),
    );
    let mut buf = vec![0u8; 128 * 1024];
    let mut filled = 0usize;
    let mut start = 0usize;
    while let Ok(want) = expect.recv() {
        let mut got = 0usize;
        while got < want {
            if zero_copy {
                let b = c.recv_buf(128 * 1024);
                let n = match s.read(b) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                c.commit_recv_with(n, t(0), &table, |d| got += d.len())
                    .expect("input");
                while c.poll_event().is_some() {}
                continue;
            }
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
        let _ = done.send(thread_cpu());
    }
}

fn plain_sink(mut s: TcpStream, expect: mpsc::Receiver<usize>, done: mpsc::Sender<f64>) {
    let mut buf = vec![0u8; WRITE];
    while let Ok(want) = expect.recv() {
        let mut got = 0usize;
        while got < want {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => got += n,
            }
        }
        let _ = done.send(thread_cpu());
    }
}

/// The minimal pipeline the session is judged against: the same cipher
/// (the host backend, OpenSSL ChaCha20-Poly1305) and record size (32 KiB,
/// two per 64 KiB write), a 2-byte length in front of each record, sealed
/// out of place straight into the send buffer on this thread, one
/// `write_all` per 64 KiB write; the receiver reads each record (and the
/// next length) with one `read_exact` into one buffer and opens it in
/// place. No framing layer, no event queue, no message types, no copies
/// beyond the kernel's.
struct PipeCipher {
    ctx: openssl::cipher_ctx::CipherCtx,
    n: u64,
}

impl PipeCipher {
    fn new(encrypt: bool) -> Self {
        let mut ctx = openssl::cipher_ctx::CipherCtx::new().expect("ctx");
        let c = openssl::cipher::Cipher::chacha20_poly1305();
        if encrypt {
            ctx.encrypt_init(Some(c), Some(&[9u8; 32]), None)
        } else {
            ctx.decrypt_init(Some(c), Some(&[9u8; 32]), None)
        }
        .expect("key");
        PipeCipher { ctx, n: 0 }
    }

    fn nonce(&mut self) -> [u8; 12] {
        let mut x = [0u8; 12];
        x[4..].copy_from_slice(&self.n.to_le_bytes());
        self.n += 1;
        x
    }

    /// Seals `plain` into `out` (`plain.len() + 16 + 1` bytes of room);
    /// returns the record length.
    fn seal(&mut self, plain: &[u8], out: &mut [u8]) -> usize {
        let nonce = self.nonce();
        let c = &mut self.ctx;
        c.encrypt_init(None, None, Some(&nonce)).expect("nonce");
        let n = c.cipher_update(plain, Some(out)).expect("seal");
        c.cipher_final(&mut []).expect("final");
        c.tag(&mut out[n..n + 16]).expect("tag");
        n + 16
    }

    fn open(&mut self, rec: &mut [u8]) -> usize {
        let nonce = self.nonce();
        let c = &mut self.ctx;
        let len = rec.len() - 16;
        let (ct, tag) = rec.split_at_mut(len);
        c.decrypt_init(None, None, Some(&nonce)).expect("nonce");
        c.set_tag(tag).expect("tag");
        c.cipher_update_inplace(ct, len).expect("open");
        c.cipher_final(&mut []).expect("tag check");
        len
    }
}

fn pipe_sink(mut s: TcpStream, expect: mpsc::Receiver<usize>, done: mpsc::Sender<f64>) {
    let mut k = PipeCipher::new(false);
    let mut buf = vec![0u8; 2 + 65_535 + 2];
    let mut next: Option<usize> = None;
    while let Ok(want) = expect.recv() {
        let mut got = 0usize;
        while got < want {
            let len = match next.take() {
                Some(l) => l,
                None => {
                    let mut h = [0u8; 2];
                    if s.read_exact(&mut h).is_err() {
                        return;
                    }
                    usize::from(u16::from_be_bytes(h))
                }
            };
            // Read the record and, unless it ends this round, the next
            // record's length with it.
            let last = got + len - 16 >= want;
            let take = if last { len } else { len + 2 };
            if s.read_exact(&mut buf[..take]).is_err() {
                return;
            }
            if !last {
                next = Some(usize::from(u16::from_be_bytes([buf[len], buf[len + 1]])));
            }
            got += k.open(&mut buf[..len]);
        }
        let _ = done.send(thread_cpu());
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
    done: mpsc::Receiver<f64>,
    rx_cpu: f64,
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
            rx_cpu: 0.0,
            sink: Some(sink),
        }
    }

    /// Sends `writes` × 64 KiB and waits until the reader has it all.
    fn transfer(&mut self, payload: &[u8], writes: u64) -> Sample {
        self.expect
            .send(payload.len() * writes as usize)
            .expect("sink alive");
        let (start, cpu) = (StdInstant::now(), thread_cpu());
        for _ in 0..writes {
            self.tx.write_all(black_box(payload)).expect("write");
        }
        let rx = self.done.recv().expect("sink done");
        let s = Sample {
            wall: start.elapsed(),
            tx_cpu: thread_cpu() - cpu,
            rx_cpu: rx - self.rx_cpu,
        };
        self.rx_cpu = rx;
        s
    }
}

/// The minimal AEAD pipeline (see [`PipeCipher`]): seal here, open there.
struct PipeLink {
    tx: TcpStream,
    key: PipeCipher,
    buf: Vec<u8>,
    expect: mpsc::Sender<usize>,
    done: mpsc::Receiver<f64>,
    rx_cpu: f64,
    sink: Option<thread::JoinHandle<()>>,
}

impl PipeLink {
    fn new(pinned: bool) -> Self {
        let (tx, rx) = tcp_pair();
        let (etx, erx) = mpsc::channel();
        let (dtx, drx) = mpsc::channel();
        let sink = spawn_peer(pinned, move || pipe_sink(rx, erx, dtx));
        PipeLink {
            tx,
            key: PipeCipher::new(true),
            buf: vec![0u8; 2 * (2 + 65_535 + 1)],
            expect: etx,
            done: drx,
            rx_cpu: 0.0,
            sink: Some(sink),
        }
    }

    fn transfer(&mut self, payload: &[u8], writes: u64) -> Sample {
        self.expect
            .send(payload.len() * writes as usize)
            .expect("sink alive");
        let (start, cpu) = (StdInstant::now(), thread_cpu());
        let half = payload.len() / 2;
        for _ in 0..writes {
            let mut at = 0;
            for piece in black_box(payload).chunks(half) {
                let n = self.key.seal(piece, &mut self.buf[at + 2..]);
                self.buf[at..at + 2].copy_from_slice(&(n as u16).to_be_bytes());
                at += 2 + n;
            }
            self.tx.write_all(&self.buf[..at]).expect("write");
        }
        let rx = self.done.recv().expect("sink done");
        let s = Sample {
            wall: start.elapsed(),
            tx_cpu: thread_cpu() - cpu,
            rx_cpu: rx - self.rx_cpu,
        };
        self.rx_cpu = rx;
        s
    }
}

impl Drop for PipeLink {
    fn drop(&mut self) {
        let _ = self.tx.shutdown(std::net::Shutdown::Both);
        let (etx, _) = mpsc::channel();
        self.expect = etx;
        if let Some(h) = self.sink.take() {
            let _ = h.join();
        }
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
    done: mpsc::Receiver<f64>,
    rx_cpu: f64,
    sink: Option<thread::JoinHandle<()>>,
}

impl SessionLink {
    fn new(pinned: bool, zero_copy: bool) -> Self {
        let ((ca, sa), (cb, sb)) = session_pair();
        let (etx, erx) = mpsc::channel();
        let (dtx, drx) = mpsc::channel();
        let sink = spawn_peer(pinned, move || session_sink(cb, sb, erx, dtx, zero_copy));
        SessionLink {
            conn: ca,
            tx: sa,
            expect: etx,
            done: drx,
            rx_cpu: 0.0,
            sink: Some(sink),
        }
    }

    fn transfer(&mut self, payload: &[u8], writes: u64) -> Sample {
        self.expect
            .send(payload.len() * writes as usize)
            .expect("sink alive");
        let (start, cpu) = (StdInstant::now(), thread_cpu());
        for _ in 0..writes {
            send_app_write(&mut self.conn, &mut self.tx, black_box(payload));
        }
        let rx = self.done.recv().expect("sink done");
        let s = Sample {
            wall: start.elapsed(),
            tx_cpu: thread_cpu() - cpu,
            rx_cpu: rx - self.rx_cpu,
        };
        self.rx_cpu = rx;
        s
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
            b.iter_custom(|iters| plain.transfer(&payload, iters * writes_per_iter).wall)
        });
        drop(plain);
        let mut pipe = PipeLink::new(false);
        g.bench_function("aead_pipeline", |b| {
            b.iter_custom(|iters| pipe.transfer(&payload, iters * writes_per_iter).wall)
        });
        drop(pipe);
        let mut sess = SessionLink::new(false, false);
        g.bench_function("session", |b| {
            b.iter_custom(|iters| sess.transfer(&payload, iters * writes_per_iter).wall)
        });
        drop(sess);
        let mut sess = SessionLink::new(false, true);
        g.bench_function("session_zero_copy", |b| {
            b.iter_custom(|iters| sess.transfer(&payload, iters * writes_per_iter).wall)
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

    // Paired phase: round by round, the minimal AEAD pipeline, the session
    // (handle_input + Event::Data), the session reading into the connection
    // and taking data as slices, and plain TCP (context); first with the
    // scheduler placing threads, then pinned to separate cores. Judged on
    // the CPU-normalised rate: bytes / CPU seconds of the busier thread.
    for pinned in [false, true] {
        pin(if pinned { Some(0) } else { None });
        let mut plain = PlainLink::new(pinned);
        let mut pipe = PipeLink::new(pinned);
        let mut sess = SessionLink::new(pinned, false);
        let mut zc = SessionLink::new(pinned, true);
        let writes = 128u64; // 8 MiB per round and side
        let bytes = (WRITE as u64 * writes) as f64;
        plain.transfer(&payload, writes);
        pipe.transfer(&payload, writes);
        sess.transfer(&payload, writes);
        zc.transfer(&payload, writes);
        // Per variant: CPU-normalised rates, wall rates.
        let mut cpu: [Vec<f64>; 4] = Default::default();
        let mut wall: [Vec<f64>; 4] = Default::default();
        let mut ratio: [Vec<f64>; 4] = Default::default();
        // ns per byte of the sending and the receiving thread.
        let mut txns: [Vec<f64>; 4] = Default::default();
        let mut rxns: [Vec<f64>; 4] = Default::default();
        for _ in 0..ROUNDS {
            let r = [
                pipe.transfer(&payload, writes),
                sess.transfer(&payload, writes),
                zc.transfer(&payload, writes),
                plain.transfer(&payload, writes),
            ];
            for (i, x) in r.iter().enumerate() {
                cpu[i].push(bytes / x.busier());
                wall[i].push(bytes / x.wall.as_secs_f64());
                ratio[i].push(r[0].busier() / x.busier());
                txns[i].push(x.tx_cpu / bytes * 1e9);
                rxns[i].push(x.rx_cpu / bytes * 1e9);
            }
        }
        drop((plain, pipe, sess, zc));
        let spread = |v: &[f64]| {
            (
                v.iter().copied().fold(f64::INFINITY, f64::min),
                v.iter().copied().fold(0.0, f64::max),
            )
        };
        let place = if pinned { ", pinned to 2 cores" } else { "" };
        let base_cpu = median(&mut cpu[0].clone());
        let threads = |i: usize| {
            format!(
                "send {:.2} / receive {:.2} ns/B",
                median(&mut txns[i].clone()),
                median(&mut rxns[i].clone())
            )
        };
        let base_wall = median(&mut wall[0].clone());
        for (i, name) in [
            (1, "session (handle_input + Event::Data)"),
            (2, "session (recv_buf + commit_recv_with)"),
        ] {
            let (lo, hi) = spread(&ratio[i]);
            let r = median(&mut ratio[i].clone());
            row(
                &format!(
                    "session throughput vs minimal AEAD pipeline, CPU-normalised{place}: {name}"
                ),
                &format!(
                    "{:.0} MB/CPU-s (wall {:.0} MB/s; {})",
                    median(&mut cpu[i].clone()) / 1e6,
                    median(&mut wall[i].clone()) / 1e6,
                    threads(i)
                ),
                &format!(
                    "{:.0} MB/CPU-s (wall {:.0} MB/s; {}) seal→TCP→open",
                    base_cpu / 1e6,
                    base_wall / 1e6,
                    threads(0)
                ),
                &format!("{r:.2}x (rounds {lo:.2}-{hi:.2})"),
                ">= 0.9x",
                Some(r >= 0.9),
            );
        }
        let (lo, hi) = spread(&ratio[3]);
        let r = median(&mut ratio[3].clone());
        row(
            &format!("plain loopback TCP (context){place}"),
            &format!(
                "{:.0} MB/CPU-s (wall {:.0} MB/s)",
                median(&mut cpu[3].clone()) / 1e6,
                median(&mut wall[3].clone()) / 1e6
            ),
            &format!("{:.0} MB/CPU-s seal→TCP→open", base_cpu / 1e6),
            &format!("{r:.2}x (rounds {lo:.2}-{hi:.2})"),
            "report",
            None,
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
