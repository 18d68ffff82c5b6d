//! The send side's file I/O: hashing files for the offer and a reader
//! thread that reads them from the accepted offsets.

use super::*;

/// File bytes read for a sender.
#[derive(Debug)]
pub struct Piece {
    pub entry: u16,
    pub offset: u64,
    pub data: Vec<u8>,
}

/// The buffers of a reader thread and its session.
pub type ReadBuffers = Buffers<READ_AHEAD>;

/// The reader behind an outgoing transfer (a blocking thread): reads every
/// file from its accepted offset in [`READ_PIECE`] pieces into `tx`.
///
/// Pieces are many chunks long because each one costs a thread wake-up on
/// both ends (the reader's channel and the session's [`Notify`]): on the
/// project machine a wake-up costs about as much as copying 40 KiB.
pub fn read_files(
    files: Vec<Option<(PathBuf, u64)>>,
    offsets: Vec<u64>,
    tx: mpsc::Sender<Result<Piece, String>>,
    wake: Arc<Notify>,
    buffers: ReadBuffers,
) {
    let send = |p: Result<Piece, String>| {
        let ok = tx.blocking_send(p).is_ok();
        wake.notify_one();
        ok
    };
    for (i, f) in files.into_iter().enumerate() {
        let Some((path, size)) = f else { continue };
        let mut offset = offsets.get(i).copied().unwrap_or(0);
        if offset >= size {
            continue;
        }
        let entry = i as u16; // ≤ wire::MAX_ENTRIES
        let mut file = match File::open(&path) {
            Ok(f) => f,
            Err(e) => {
                send(Err(format!("cannot open {}: {e}", path.display())));
                return;
            }
        };
        if let Err(e) = file.seek(SeekFrom::Start(offset)) {
            send(Err(format!("{}: {e}", path.display())));
            return;
        }
        while offset < size {
            let want = (size - offset).min(READ_PIECE as u64) as usize;
            let mut buf = buffers.take();
            // Zeroes only what this buffer never held.
            buf.resize(want, 0);
            let mut n = 0;
            while n < want {
                match file.read(&mut buf[n..]) {
                    Ok(0) => break,
                    Ok(k) => n += k,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        send(Err(format!("reading {}: {e}", path.display())));
                        return;
                    }
                }
            }
            if n < want {
                send(Err(format!(
                    "{} shrank while it was being sent",
                    path.display()
                )));
                return;
            }
            let data = buf;
            if !send(Ok(Piece {
                entry,
                offset,
                data,
            })) {
                return;
            }
            offset += want as u64;
        }
    }
}

/// Size and digest (`version`'s hash) of a file, before it is offered.
#[cfg(test)]
pub fn hash_file(path: &Path, version: Version) -> std::io::Result<(u64, [u8; 32])> {
    hash_open(File::open(path)?, version)
}

/// Size and digest of what `f` reads, with the reading on a second thread
/// so it overlaps the hashing: on the project machine reading a 256 MiB file
/// from the page cache costs about as much CPU as hashing it with SHA-256
/// (v1), and the offer waits for both.
fn hash_open(mut f: File, version: Version) -> std::io::Result<(u64, [u8; 32])> {
    const PIECE: usize = 256 * 1024;
    if f.metadata()?.len() < 4 * PIECE as u64 {
        // Small files (most of a folder) are read and hashed inline: below
        // 1 MiB there is little to overlap, and a folder would start a
        // thread per file (a chosen threshold, not a measured optimum).
        let mut h = hasher(version).map_err(std::io::Error::other)?;
        let mut buf = vec![0u8; PIECE];
        let mut total: u64 = 0;
        loop {
            match f.read(&mut buf) {
                Ok(0) => return Ok((total, h.finalize())),
                Ok(n) => {
                    h.update(&buf[..n]);
                    total += n as u64;
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
    let mut h = hasher(version).map_err(std::io::Error::other)?;
    // Full buffers to the hasher; empty ones back. Two in flight.
    let (full_tx, full_rx) = std::sync::mpsc::sync_channel::<(Vec<u8>, usize)>(2);
    let (empty_tx, empty_rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(3);
    for _ in 0..3 {
        let _ = empty_tx.send(vec![0u8; PIECE]);
    }
    std::thread::scope(|scope| {
        let reader = scope.spawn(move || -> std::io::Result<()> {
            while let Ok(mut buf) = empty_rx.recv() {
                let n = loop {
                    match f.read(&mut buf) {
                        Ok(n) => break n,
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(e),
                    }
                };
                if n == 0 || full_tx.send((buf, n)).is_err() {
                    return Ok(());
                }
            }
            Ok(())
        });
        let mut total: u64 = 0;
        for (buf, n) in full_rx {
            h.update(&buf[..n]);
            total += n as u64;
            let _ = empty_tx.send(buf);
        }
        drop(empty_tx);
        match reader.join() {
            Ok(r) => r.map(|()| (total, h.finalize())),
            Err(_) => Err(std::io::Error::other("the file reader thread panicked")),
        }
    })
}

/// Files hashed for offers that one daemon remembers ([`hash_file_cached`]).
pub const HASH_CACHE_MAX: usize = 4096;

/// What changes when a file is written or replaced: device, inode, size,
/// modification and change times (ns).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct FileKey {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl FileKey {
    fn of(m: &fs::Metadata) -> FileKey {
        use std::os::unix::fs::MetadataExt;
        FileKey {
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
        }
    }
}

/// The digests this daemon computed for offers (per file and transfer
/// version: a file sent to a v1 and a v2 peer has two), at most [`HASH_CACHE_MAX`]
/// (the oldest go first), so sending a file again (a resume after a broken
/// session, or the same file to another device) does not read it twice
/// before the first byte goes out. A stale entry can never put wrong bytes
/// anywhere: the receiver checks every file against the offered hash, so a
/// file changed without changing any of [`FileKey`] fails `hash-mismatch`.
#[derive(Default)]
struct HashCache {
    map: HashMap<(FileKey, Version), [u8; 32]>,
    order: VecDeque<(FileKey, Version)>,
}

static HASH_CACHE: Mutex<Option<HashCache>> = Mutex::new(None);

/// `hash_file` through the daemon's [`HashCache`]: a file whose key
/// changed while it was being hashed is not remembered.
pub fn hash_file_cached(path: &Path, version: Version) -> std::io::Result<(u64, [u8; 32])> {
    let f = File::open(path)?;
    let key = FileKey::of(&f.metadata()?);
    let lock = || HASH_CACHE.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(h) = lock()
        .as_ref()
        .and_then(|c| c.map.get(&(key, version)).copied())
    {
        return Ok((key.size, h));
    }
    let meta_before = key;
    let (n, h) = hash_open(f, version)?;
    let after = fs::metadata(path).map(|m| FileKey::of(&m));
    if after.is_ok_and(|k| k == meta_before) && n == key.size {
        let mut g = lock();
        let c = g.get_or_insert_with(HashCache::default);
        if c.map.insert((key, version), h).is_none() {
            c.order.push_back((key, version));
        }
        while c.order.len() > HASH_CACHE_MAX {
            if let Some(old) = c.order.pop_front() {
                c.map.remove(&old);
            }
        }
    }
    Ok((n, h))
}

/// Builds the entry of one regular file for a transfer of `version`
/// (hashing it, or taking its digest from [`hash_file_cached`]): `name` is
/// its offered path.
pub fn file_entry(
    path: &Path,
    name: String,
    version: Version,
) -> std::io::Result<(Entry, (PathBuf, u64))> {
    let (size, digest) = hash_file_cached(path, version)?;
    Ok((
        Entry {
            path: name,
            kind: EntryKind::File { size, digest },
        },
        (path.to_path_buf(), size),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_hashing_paths_give_the_file_digest() {
        let dir = tempfile::tempdir().unwrap();
        // Below and above the size where reading moves to a second thread,
        // and not a whole number of pieces.
        // Each version against an independent implementation of its hash.
        for len in [0usize, 5, (1 << 20) - 1, (3 << 20) + 12_345] {
            let body: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let p = dir.path().join(format!("f{len}"));
            fs::write(&p, &body).unwrap();
            use sha2::Digest;
            let v1: [u8; 32] = sha2::Sha256::digest(&body).into();
            let v2: [u8; 32] = blake3::hash(&body).into();
            assert_eq!(
                hash_file(&p, Version::V1).unwrap(),
                (len as u64, v1),
                "{len}"
            );
            assert_eq!(
                hash_file(&p, Version::V2).unwrap(),
                (len as u64, v2),
                "{len}"
            );
        }
    }

    #[test]
    fn cached_hashes_follow_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        fs::write(&p, b"one").unwrap();
        let first = hash_file_cached(&p, Version::V1).unwrap();
        assert_eq!(first, hash_file(&p, Version::V1).unwrap());
        assert_eq!(hash_file_cached(&p, Version::V1).unwrap(), first);
        // The same file for a v2 transfer: its own digest, cached apart.
        let b3 = hash_file_cached(&p, Version::V2).unwrap();
        assert_eq!(b3, hash_file(&p, Version::V2).unwrap());
        assert_ne!(b3.1, first.1);
        assert_eq!(hash_file_cached(&p, Version::V1).unwrap(), first);
        // Same size, new bytes: the mtime (ns) or ctime moves, so no stale hash.
        std::thread::sleep(Duration::from_millis(5));
        fs::write(&p, b"two").unwrap();
        let second = hash_file_cached(&p, Version::V1).unwrap();
        assert_eq!(second, hash_file(&p, Version::V1).unwrap());
        assert_ne!(second.1, first.1);
        // Replaced by another file (new inode) of the same size and mtime.
        let q = dir.path().join("g");
        fs::write(&q, b"six").unwrap();
        let t = fs::metadata(&p).unwrap().modified().unwrap();
        fs::File::options()
            .write(true)
            .open(&q)
            .unwrap()
            .set_modified(t)
            .unwrap();
        fs::rename(&q, &p).unwrap();
        for v in [Version::V1, Version::V2] {
            assert_eq!(hash_file_cached(&p, v).unwrap(), hash_file(&p, v).unwrap());
        }
    }
}
