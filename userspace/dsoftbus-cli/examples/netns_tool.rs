//! Helpers for `scripts/tests/netns-test.sh` (not installed):
//!
//! - `tcp-recv <ip:port> <out-file>`: accept one plain TCP connection, store
//!   what arrives, fsync, close (the baseline the soft bus is compared with);
//! - `tcp-send <ip:port> <file>`: send a file over plain TCP and print
//!   `tcp: <bytes> bytes in <secs> s (<MB/s> MB/s)`, timed until the receiver
//!   has stored it and closed;
//! - `flood <count> <ip:port>...`: send `count` hostile datagrams (random
//!   bytes, oversized, truncated and wrong-version announces, valid announces
//!   with random ids and keys) round-robin to the targets, then print a
//!   summary. Bounded by `count` and by 60 s.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

fn usage() -> ! {
    eprintln!("usage: netns_tool tcp-recv <ip:port> <out> | tcp-send <ip:port> <file> | flood <count> <ip:port>...");
    std::process::exit(2)
}

fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("tcp-recv") if args.len() == 3 => tcp_recv(&args[1], &args[2]),
        Some("tcp-send") if args.len() == 3 => tcp_send(&args[1], &args[2]),
        Some("flood") if args.len() >= 3 => {
            let count: u64 = args[1].parse().unwrap_or_else(|_| usage());
            let targets: Vec<SocketAddr> = args[2..]
                .iter()
                .map(|a| a.parse().unwrap_or_else(|_| usage()))
                .collect();
            flood(count, &targets)
        }
        _ => usage(),
    }
}

fn tcp_recv(addr: &str, out: &str) -> std::io::Result<()> {
    let l = TcpListener::bind(addr)?;
    let (mut s, _) = l.accept()?;
    let mut f = std::fs::File::create(out)?;
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = s.read(&mut buf)?;
        if n == 0 {
            break;
        }
        f.write_all(&buf[..n])?;
    }
    f.sync_all()?;
    drop(s);
    Ok(())
}

fn tcp_send(addr: &str, file: &str) -> std::io::Result<()> {
    let mut f = std::fs::File::open(file)?;
    let start = Instant::now();
    let mut s = TcpStream::connect(addr)?;
    let bytes = std::io::copy(&mut f, &mut s)?;
    s.shutdown(std::net::Shutdown::Write)?;
    // The receiver closes after storing and fsyncing: wait for that.
    let mut sink = [0u8; 16];
    while s.read(&mut sink)? > 0 {}
    let secs = start.elapsed().as_secs_f64();
    println!(
        "tcp: {bytes} bytes in {secs:.2} s ({:.1} MB/s)",
        bytes as f64 / secs / 1e6
    );
    Ok(())
}

fn announce(rng: &mut fastrand::Rng) -> Vec<u8> {
    let id: String = (0..rng.usize(1..20)).map(|_| rng.alphanumeric()).collect();
    let mut v = b"NXSB\x01".to_vec();
    v.push(id.len() as u8);
    v.extend_from_slice(id.as_bytes());
    v.extend_from_slice(&rng.u16(1..).to_be_bytes());
    v.extend((0..32).map(|_| rng.u8(..)));
    v.push(0);
    v
}

fn flood(count: u64, targets: &[SocketAddr]) -> std::io::Result<()> {
    let s = UdpSocket::bind("0.0.0.0:0")?;
    s.set_broadcast(true)?;
    let mut rng = fastrand::Rng::with_seed(0x5eed);
    let start = Instant::now();
    let (mut sent, mut errors) = (0u64, 0u64);
    for i in 0..count {
        if start.elapsed() > Duration::from_secs(60) {
            break;
        }
        let d: Vec<u8> = match i % 5 {
            0 => (0..rng.usize(1..1200)).map(|_| rng.u8(..)).collect(),
            1 => vec![0xAB; 1146 + rng.usize(0..3000)],
            2 => {
                let a = announce(&mut rng);
                a[..rng.usize(1..a.len())].to_vec()
            }
            3 => {
                let mut a = announce(&mut rng);
                a[4] = 2;
                a
            }
            _ => announce(&mut rng),
        };
        match s.send_to(&d, targets[(i as usize) % targets.len()]) {
            Ok(_) => sent += 1,
            Err(_) => errors += 1,
        }
    }
    println!(
        "flood: {sent} datagrams sent ({errors} send errors) in {:.2} s",
        start.elapsed().as_secs_f64()
    );
    Ok(())
}
