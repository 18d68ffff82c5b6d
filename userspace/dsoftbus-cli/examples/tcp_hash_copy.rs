//! The baseline `scripts/bench-send.sh` times `dsoftbus send` against: the
//! minimal program doing a file transfer's essential work without the soft
//! bus — read the file, hash it, send it over loopback TCP; on the other
//! end receive, hash, write and fsync, and report the digest back so the
//! sender can check it. No encryption (the session's two AEAD passes are
//! added to this program's CPU time by the script to get the "essential
//! work"). The hash is SHA-256 (transfer v1), or BLAKE3 with `--blake3`
//! (transfer v2: what two Linux daemons use), from the `sha2` and `blake3`
//! crates directly.
//!
//! `tcp_hash_copy [--blake3] <file> <out>`: both ends in one process
//! (receiver on a second thread), so a whole-process timer sees all of the
//! work. Prints `tcp: <bytes> bytes in <secs> s (<MB/s> MB/s) <hash> <hex16>...`.
//!
//! `tcp_hash_copy [--blake3] --hash <file>`: only reads and hashes the
//! file, the work the transfer protocol adds before an offer whose file's
//! digest is not known yet (the offer carries it); the script adds its CPU
//! time to the essential work of a cold send.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Instant;

use sha2::{Digest, Sha256};

const CHUNK: usize = 256 * 1024;

/// The file hash of either transfer version.
#[derive(Clone)]
enum Hash {
    Sha256(Sha256),
    Blake3(Box<blake3::Hasher>),
}

impl Hash {
    fn new(blake3: bool) -> Hash {
        if blake3 {
            Hash::Blake3(Box::default())
        } else {
            Hash::Sha256(Sha256::new())
        }
    }
    fn name(&self) -> &'static str {
        match self {
            Hash::Sha256(_) => "sha256",
            Hash::Blake3(_) => "blake3",
        }
    }
    fn update(&mut self, b: &[u8]) {
        match self {
            Hash::Sha256(h) => h.update(b),
            Hash::Blake3(h) => {
                h.update(b);
            }
        }
    }
    fn finalize(self) -> [u8; 32] {
        match self {
            Hash::Sha256(h) => h.finalize().into(),
            Hash::Blake3(h) => h.finalize().into(),
        }
    }
}

/// Reads `r` to its end in `CHUNK`s, hashing each and handing it to
/// `pass`: the bytes read and their hash state.
fn hash_through(
    r: &mut impl Read,
    mut h: Hash,
    mut pass: impl FnMut(&[u8]) -> std::io::Result<()>,
) -> std::io::Result<(u64, Hash)> {
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

fn receive(l: TcpListener, out: String, h: Hash) -> std::io::Result<()> {
    let (mut s, _) = l.accept()?;
    let mut f = std::fs::File::create(&out)?;
    let (_, h) = hash_through(&mut s, h, |b| f.write_all(b))?;
    f.sync_all()?;
    s.write_all(&h.finalize())?;
    Ok(())
}

/// Reads and hashes `file` in the baseline's chunks; prints the digest.
fn hash_only(file: &str, h: Hash) -> std::io::Result<()> {
    let mut f = std::fs::File::open(file)?;
    let (_, h) = hash_through(&mut f, h, |_| Ok(()))?;
    let name = h.name();
    let hex: String = h.finalize()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    println!("{name} {hex}...");
    Ok(())
}

fn main() -> std::io::Result<()> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let blake3 = args.first().is_some_and(|a| a == "--blake3");
    if blake3 {
        args.remove(0);
    }
    let hash = Hash::new(blake3);
    if let [flag, file] = args.as_slice() {
        if flag == "--hash" {
            return hash_only(file, hash);
        }
    }
    let [file, out] = args.as_slice() else {
        eprintln!(
            "usage: tcp_hash_copy [--blake3] <file> <out> | tcp_hash_copy [--blake3] --hash <file>"
        );
        std::process::exit(2);
    };
    let l = TcpListener::bind("127.0.0.1:0")?;
    let addr = l.local_addr()?;
    let out = out.clone();
    let theirs_hash = hash.clone();
    let rx = std::thread::spawn(move || receive(l, out, theirs_hash));
    let start = Instant::now();
    let mut f = std::fs::File::open(file)?;
    let mut s = TcpStream::connect(addr)?;
    let (bytes, h) = hash_through(&mut f, hash, |b| s.write_all(b))?;
    s.shutdown(std::net::Shutdown::Write)?;
    let mut theirs = [0u8; 32];
    s.read_exact(&mut theirs)?;
    rx.join().expect("receiver thread")?;
    let secs = start.elapsed().as_secs_f64();
    let name = h.name();
    let ours = h.finalize();
    if theirs[..] != ours[..] {
        eprintln!("tcp_hash_copy: digest mismatch");
        std::process::exit(1);
    }
    let hex: String = ours[..8].iter().map(|b| format!("{b:02x}")).collect();
    println!(
        "tcp: {bytes} bytes in {secs:.2} s ({:.1} MB/s) {name} {hex}...",
        bytes as f64 / secs / 1e6
    );
    Ok(())
}
