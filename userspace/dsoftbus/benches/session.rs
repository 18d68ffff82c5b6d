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
    #[cfg(feature = "ring-aead")]
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

fn main() {
    let mut c = criterion();
    let payload = vec![0xa5u8; WRITE];
    aead_group(&mut c);
    {
        let mut g = c.benchmark_group("throughput");
        g.throughput(Throughput::Bytes(PER_ITER as u64));
        g.sample_size(20);
        // Plain TCP.
        {
            let (mut tx, rx) = tcp_pair();
            let (etx, erx) = mpsc::channel();
            let (dtx, drx) = mpsc::channel();
            let h = thread::spawn(move || plain_sink(rx, erx, dtx));
            g.bench_function("plain_tcp", |b| {
                b.iter_custom(|iters| {
                    let total = PER_ITER * iters as usize;
                    etx.send(total).expect("sink alive");
                    let start = StdInstant::now();
                    for _ in 0..iters * (PER_ITER / WRITE) as u64 {
                        tx.write_all(black_box(&payload)).expect("write");
                    }
                    drx.recv().expect("sink done");
                    start.elapsed()
                })
            });
            drop(etx);
            drop(tx);
            let _ = h.join();
        }
        // Session.
        {
            let ((mut ca, mut sa), (cb, sb)) = session_pair();
            let (etx, erx) = mpsc::channel();
            let (dtx, drx) = mpsc::channel();
            let h = thread::spawn(move || session_sink(cb, sb, erx, dtx));
            g.bench_function("session", |b| {
                b.iter_custom(|iters| {
                    let total = PER_ITER * iters as usize;
                    etx.send(total).expect("sink alive");
                    let start = StdInstant::now();
                    for _ in 0..iters * (PER_ITER / WRITE) as u64 {
                        send_app_write(&mut ca, &mut sa, black_box(&payload));
                    }
                    drx.recv().expect("sink done");
                    start.elapsed()
                })
            });
            drop(etx);
            drop(sa);
            let _ = h.join();
        }
        g.finish();
    }
    {
        let mut g = c.benchmark_group("latency");
        g.sample_size(30);
        {
            let (mut a, b) = tcp_pair();
            let h = thread::spawn(move || echo_plain(b));
            let msg = [0x5au8; 16];
            let mut back = [0u8; 16];
            g.bench_function("plain_tcp", |bch| {
                bch.iter(|| {
                    a.write_all(&msg).expect("write");
                    a.read_exact(&mut back).expect("read");
                    black_box(back[0])
                })
            });
            drop(a);
            let _ = h.join();
        }
        {
            let ((mut ca, mut sa), (cb, sb)) = session_pair();
            let h = thread::spawn(move || echo_session(cb, sb));
            let table = dsoftbus::peer_table::PeerTable::new(
                dsoftbus::DeviceId::new("pinger").expect("id"),
                dsoftbus::PublicKey::from_bytes([7; 32]),
                Default::default(),
            );
            let mut buf = [0u8; 4096];
            let mut nonce = 0u64;
            g.bench_function("session", |bch| {
                bch.iter(|| {
                    nonce += 1;
                    ca.send_ping(nonce).expect("ping");
                    flush(&mut ca, &mut sa);
                    loop {
                        let n = sa.read(&mut buf).expect("read");
                        assert!(n > 0, "peer closed");
                        ca.handle_input(&buf[..n], t(0), &table).expect("input");
                        if let Some(Event::Pong(p)) = ca.poll_event() {
                            assert_eq!(p, nonce);
                            break;
                        }
                    }
                })
            });
            drop(sa);
            let _ = h.join();
        }
        g.finish();
    }
    c.final_summary();
    let _ = Duration::ZERO;
    if !measuring() {
        return;
    }
    let msg = MSG as f64;
    let rc = mean_ns("aead", "rustcrypto_seal");
    #[cfg(feature = "ring-aead")]
    let (active, active_name) = (mean_ns("aead", "ring_seal"), "ring");
    #[cfg(not(feature = "ring-aead"))]
    let (active, active_name) = (rc, "RustCrypto");
    #[cfg(feature = "ring-aead")]
    if let (Some(r), Some(p)) = (active, rc) {
        row(
            "AEAD backend: ChaCha20-Poly1305 seal, 32 KiB (ring)",
            &format!("{:.0} MB/s", msg / r * 1e3),
            &format!("{:.0} MB/s RustCrypto", msg / p * 1e3),
            &format!("{:.2}x", p / r),
            "faster backend wins",
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
    let mib = PER_ITER as f64;
    if let (Some(s), Some(p)) = (
        mean_ns("throughput", "session"),
        mean_ns("throughput", "plain_tcp"),
    ) {
        let (sbps, pbps) = (mib / s * 1e9, mib / p * 1e9);
        let ratio = sbps / pbps;
        row(
            "session throughput (64 KiB writes, loopback TCP)",
            &format!("{:.0} MB/s", sbps / 1e6),
            &format!("{:.0} MB/s plain TCP", pbps / 1e6),
            &format!("{ratio:.2}x"),
            ">= 0.75x",
            Some(ratio >= 0.75),
        );
    }
    if let (Some(s), Some(p)) = (
        mean_ns("latency", "session"),
        mean_ns("latency", "plain_tcp"),
    ) {
        let extra = (s - p) / 1e3;
        row(
            "session ping/pong RTT (loopback TCP)",
            &fmt_time(s),
            &format!("{} plain TCP", fmt_time(p)),
            &format!("{:+.1} µs ({:.2}x)", extra, s / p),
            "<= plain + 15 µs",
            Some(extra <= 15.0),
        );
    }
}
