//! The baseline `scripts/bench-send.sh` times `dsoftbus send` against: the
//! minimal program doing a file transfer's essential work without the soft
//! bus — read the file, SHA-256 it, send it over loopback TCP; on the other
//! end receive, SHA-256, write and fsync, and report the digest back so the
//! sender can check it. No encryption (the session's two AEAD passes are
//! added to this program's CPU time by the script to get the "essential
//! work").
//!
//! `tcp_hash_copy <file> <out>`: both ends in one process (receiver on a
//! second thread), so a whole-process timer sees all of the work. Prints
//! `tcp: <bytes> bytes in <secs> s (<MB/s> MB/s) sha256 <hex16>...`.
//!
//! `tcp_hash_copy --hash <file>`: only reads and SHA-256s the file, the
//! work the transfer protocol adds before an offer whose file's hash is not
//! known yet (the offer carries it); the script adds its CPU time to the
//! essential work of a cold send.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Instant;

use sha2::{Digest, Sha256};

const CHUNK: usize = 256 * 1024;

/// Reads `r` to its end in `CHUNK`s, hashing each and handing it to
/// `pass`: the bytes read and their SHA-256 state.
fn hash_through(
    r: &mut impl Read,
    mut pass: impl FnMut(&[u8]) -> std::io::Result<()>,
) -> std::io::Result<(u64, Sha256)> {
    let mut h = Sha256::new();
    let mut buf = vec![0u8; CHUNK];
    let mut bytes = 0u64;
    loop {
        let n = r.read(&mut buf)?;
        if n == 0 {
            return Ok((bytes, h));
        }
        h.update(&buf[..n]);
        pass(&buf[..n])?;
        bytes += n as u64;
    }
}

fn receive(l: TcpListener, out: String) -> std::io::Result<()> {
    let (mut s, _) = l.accept()?;
    let mut f = std::fs::File::create(&out)?;
    let (_, h) = hash_through(&mut s, |b| f.write_all(b))?;
    f.sync_all()?;
    s.write_all(&h.finalize())?;
    Ok(())
}

/// Reads and hashes `file` in the baseline's chunks; prints the digest.
fn hash_only(file: &str) -> std::io::Result<()> {
    let mut f = std::fs::File::open(file)?;
    let (_, h) = hash_through(&mut f, |_| Ok(()))?;
    let hex: String = h.finalize()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    println!("sha256 {hex}...");
    Ok(())
}

fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let [flag, file] = args.as_slice() {
        if flag == "--hash" {
            return hash_only(file);
        }
    }
    let [file, out] = args.as_slice() else {
        eprintln!("usage: tcp_hash_copy <file> <out> | tcp_hash_copy --hash <file>");
        std::process::exit(2);
    };
    let l = TcpListener::bind("127.0.0.1:0")?;
    let addr = l.local_addr()?;
    let out = out.clone();
    let rx = std::thread::spawn(move || receive(l, out));
    let start = Instant::now();
    let mut f = std::fs::File::open(file)?;
    let mut s = TcpStream::connect(addr)?;
    let (bytes, h) = hash_through(&mut f, |b| s.write_all(b))?;
    s.shutdown(std::net::Shutdown::Write)?;
    let mut theirs = [0u8; 32];
    s.read_exact(&mut theirs)?;
    rx.join().expect("receiver thread")?;
    let secs = start.elapsed().as_secs_f64();
    let ours = h.finalize();
    if theirs[..] != ours[..] {
        eprintln!("tcp_hash_copy: digest mismatch");
        std::process::exit(1);
    }
    let hex: String = ours[..8].iter().map(|b| format!("{b:02x}")).collect();
    println!(
        "tcp: {bytes} bytes in {secs:.2} s ({:.1} MB/s) sha256 {hex}...",
        bytes as f64 / secs / 1e6
    );
    Ok(())
}
