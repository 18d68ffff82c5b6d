//! The baseline `scripts/bench-send.sh` times `dsoftbus send` against: the
//! minimal program doing a file transfer's essential work without the soft
//! bus — read the file, hash it, send it over loopback TCP; on the other
//! end receive, hash, write and fsync, and report the digest back so the
//! sender can check it. No encryption unless `--seal` (below). The hash is
//! SHA-256 (transfer v1), or BLAKE3 with `--blake3` (transfer v2: what two
//! Linux daemons use), through the core's `transfer::FileHasher`, the same
//! code the daemons hash with.
//!
//! `tcp_hash_copy [--blake3] [--seal] <file> <out>`: both ends in one
//! process (receiver on a second thread), so a whole-process timer sees all
//! of the work. Prints `tcp: <bytes> bytes in <secs> s (<MB/s> MB/s) <hash> <hex16>...`.
//!
//! `--seal` adds the session's cipher, and nothing else of the soft bus:
//! the sender seals each 64 KiB of the file as one ChaCha20-Poly1305 record
//! (OpenSSL, the daemons' backend for messages of this size) behind a
//! 4-byte length, the receiver opens it in place before hashing and
//! writing. That is the minimal program doing all of a `send`'s essential
//! work, for a bound on what encryption alone costs against the plain copy.
//!
//! `tcp_hash_copy [--blake3] --hash <file>`: only reads and hashes the
//! file, the work the transfer protocol adds before an offer whose file's
//! digest is not known yet (the offer carries it); the script adds its CPU
//! time to the essential work of a cold send.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Instant;

use dsoftbus::transfer::{FileHasher, Version};

const CHUNK: usize = 256 * 1024;
/// Plaintext bytes per sealed record (`--seal`).
const RECORD: usize = 64 * 1024;
const TAG: usize = 16;

/// One direction of ChaCha20-Poly1305 with a counter nonce (a fixed test
/// key: this measures work, it protects nothing).
struct Cipher {
    ctx: openssl::cipher_ctx::CipherCtx,
    n: u64,
}

impl Cipher {
    fn new(encrypt: bool) -> std::io::Result<Cipher> {
        let mut ctx = openssl::cipher_ctx::CipherCtx::new().map_err(std::io::Error::other)?;
        let c = openssl::cipher::Cipher::chacha20_poly1305();
        let key = Some(&[9u8; 32][..]);
        if encrypt {
            ctx.encrypt_init(Some(c), key, None)
        } else {
            ctx.decrypt_init(Some(c), key, None)
        }
        .map_err(std::io::Error::other)?;
        Ok(Cipher { ctx, n: 0 })
    }

    fn nonce(&mut self) -> [u8; 12] {
        let mut x = [0u8; 12];
        x[4..].copy_from_slice(&self.n.to_le_bytes());
        self.n += 1;
        x
    }

    /// Seals `plain` into `out` (`plain.len() + TAG` bytes).
    fn seal(&mut self, plain: &[u8], out: &mut [u8]) -> std::io::Result<()> {
        let nonce = self.nonce();
        let c = &mut self.ctx;
        let e = std::io::Error::other;
        c.encrypt_init(None, None, Some(&nonce)).map_err(e)?;
        let n = c.cipher_update(plain, Some(out)).map_err(e)?;
        c.cipher_final(&mut []).map_err(e)?;
        c.tag(&mut out[n..n + TAG]).map_err(e)
    }

    /// Opens a record in place; the plaintext is its first `len - TAG` bytes.
    fn open(&mut self, rec: &mut [u8]) -> std::io::Result<usize> {
        let nonce = self.nonce();
        let c = &mut self.ctx;
        let e = std::io::Error::other;
        let len = rec
            .len()
            .checked_sub(TAG)
            .ok_or_else(|| std::io::Error::other("short record"))?;
        let (ct, tag) = rec.split_at_mut(len);
        c.decrypt_init(None, None, Some(&nonce)).map_err(e)?;
        c.set_tag(tag).map_err(e)?;
        c.cipher_update_inplace(ct, len).map_err(e)?;
        c.cipher_final(&mut []).map_err(e)?;
        Ok(len)
    }
}

/// A hasher for `version` (both are in the host build of the core).
fn hasher(version: Version) -> std::io::Result<FileHasher> {
    FileHasher::new(version)
        .ok_or_else(|| std::io::Error::other(format!("no {} in this build", version.hash_name())))
}

/// Reads `r` to its end in `CHUNK`s, hashing each and handing it to
/// `pass`: the bytes read and their hash state.
fn hash_through(
    r: &mut impl Read,
    mut h: FileHasher,
    mut pass: impl FnMut(&[u8]) -> std::io::Result<()>,
) -> std::io::Result<(u64, FileHasher)> {
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

fn receive(l: TcpListener, out: String, h: FileHasher, sealed: bool) -> std::io::Result<()> {
    let (mut s, _) = l.accept()?;
    let mut f = std::fs::File::create(&out)?;
    let h = if sealed {
        open_through(&mut s, h, |b| f.write_all(b))?
    } else {
        hash_through(&mut s, h, |b| f.write_all(b))?.1
    };
    f.sync_all()?;
    s.write_all(&h.finalize())?;
    Ok(())
}

/// The receiving end of `--seal`: each record read whole, opened in place,
/// hashed and handed to `pass`, until the sender's end of stream.
fn open_through(
    s: &mut TcpStream,
    mut h: FileHasher,
    mut pass: impl FnMut(&[u8]) -> std::io::Result<()>,
) -> std::io::Result<FileHasher> {
    let mut k = Cipher::new(false)?;
    let mut rec = vec![0u8; RECORD + TAG];
    loop {
        let mut len = [0u8; 4];
        match s.read_exact(&mut len) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(h),
            Err(e) => return Err(e),
        }
        let len = u32::from_be_bytes(len) as usize;
        let rec = rec
            .get_mut(..len)
            .ok_or_else(|| std::io::Error::other("record too long"))?;
        s.read_exact(rec)?;
        let n = k.open(rec)?;
        h.update(&rec[..n]);
        pass(&rec[..n])?;
    }
}

/// Reads and hashes `file` in the baseline's chunks; prints the digest.
fn hash_only(file: &str, version: Version) -> std::io::Result<()> {
    let mut f = std::fs::File::open(file)?;
    let (_, h) = hash_through(&mut f, hasher(version)?, |_| Ok(()))?;
    let name = version.hash_name();
    let hex: String = h.finalize()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    println!("{name} {hex}...");
    Ok(())
}

fn main() -> std::io::Result<()> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let mut flag = |name: &str| match args.iter().position(|a| a == name) {
        Some(i) => {
            args.remove(i);
            true
        }
        None => false,
    };
    let blake3 = flag("--blake3");
    let sealed = flag("--seal");
    let version = if blake3 { Version::V2 } else { Version::V1 };
    if let [flag, file] = args.as_slice() {
        if flag == "--hash" {
            return hash_only(file, version);
        }
    }
    let hash = hasher(version)?;
    let [file, out] = args.as_slice() else {
        eprintln!(
            "usage: tcp_hash_copy [--blake3] [--seal] <file> <out> | tcp_hash_copy [--blake3] --hash <file>"
        );
        std::process::exit(2);
    };
    let l = TcpListener::bind("127.0.0.1:0")?;
    let addr = l.local_addr()?;
    let out = out.clone();
    let theirs_hash = hash.clone();
    let rx = std::thread::spawn(move || receive(l, out, theirs_hash, sealed));
    let start = Instant::now();
    let mut f = std::fs::File::open(file)?;
    let mut s = TcpStream::connect(addr)?;
    let (bytes, h) = if sealed {
        let mut k = Cipher::new(true)?;
        let mut rec = vec![0u8; 4 + RECORD + TAG];
        hash_through(&mut f, hash, |b| {
            for p in b.chunks(RECORD) {
                let len = p.len() + TAG;
                rec[..4].copy_from_slice(&(len as u32).to_be_bytes());
                k.seal(p, &mut rec[4..4 + len])?;
                s.write_all(&rec[..4 + len])?;
            }
            Ok(())
        })?
    } else {
        hash_through(&mut f, hash, |b| s.write_all(b))?
    };
    s.shutdown(std::net::Shutdown::Write)?;
    let mut theirs = [0u8; 32];
    s.read_exact(&mut theirs)?;
    rx.join().expect("receiver thread")?;
    let secs = start.elapsed().as_secs_f64();
    let name = version.hash_name();
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
