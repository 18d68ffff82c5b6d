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

/// The reader behind an outgoing transfer (a blocking thread): reads every
/// file from its accepted offset in [`CHUNK`] pieces into `tx`.
pub fn read_files(
    files: Vec<Option<(PathBuf, u64)>>,
    offsets: Vec<u64>,
    tx: mpsc::Sender<Result<Piece, String>>,
    wake: Arc<Notify>,
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
            let want = (size - offset).min(CHUNK as u64) as usize;
            let mut buf = vec![0u8; want];
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

/// Size and SHA-256 of a file (before it is offered).
pub fn hash_file(path: &Path) -> std::io::Result<(u64, [u8; 32])> {
    let mut f = File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut n: u64 = 0;
    loop {
        match f.read(&mut buf) {
            Ok(0) => break,
            Ok(k) => {
                h.update(&buf[..k]);
                n += k as u64;
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok((n, h.finalize().into()))
}

/// Builds the entry of one regular file (hashing it): `name` is its offered
/// path.
pub fn file_entry(path: &Path, name: String) -> std::io::Result<(Entry, (PathBuf, u64))> {
    let (size, sha256) = hash_file(path)?;
    Ok((
        Entry {
            path: name,
            kind: EntryKind::File { size, sha256 },
        },
        (path.to_path_buf(), size),
    ))
}
