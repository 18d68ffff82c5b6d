//! Resume: the partial files of an interrupted incoming transfer, kept
//! (bounded in time, bytes and count) for the same peer offering the same
//! entries, and fed back through `Receiver::resume_prefix`.

use super::*;

/// The partial files of an interrupted incoming transfer, kept for a
/// resume by the same peer with the same entries (paths, sizes, digests:
/// an offer in the other transfer version does not match).
/// Dropping it deletes its partial files.
#[derive(Debug)]
pub struct Held {
    pub peer: String,
    pub entries: Vec<Entry>,
    /// Entry → partial file and the bytes it holds.
    pub parts: HashMap<u16, (PathBuf, u64)>,
    /// Entries already verified and stored (not resent).
    pub stored: HashMap<u16, PathBuf>,
    pub roots: HashMap<String, PathBuf>,
    pub at: StdInstant,
}

impl Held {
    /// Bytes of partial files held.
    pub fn bytes(&self) -> u64 {
        self.parts.values().map(|(_, n)| n).sum()
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        for (part, _) in self.parts.values() {
            let _ = fs::remove_file(part);
        }
    }
}

/// Interrupted incoming transfers kept for a resume, within one daemon's
/// lifetime (a restart deletes every partial file): at most
/// [`RESUME_MAX_TRANSFERS`] transfers and [`RESUME_MAX_BYTES`] bytes, each
/// for [`RESUME_TTL`]; when full, the oldest is deleted first.
#[derive(Debug, Default)]
pub struct ResumeStore {
    pub(super) held: Vec<Held>,
}

impl ResumeStore {
    /// Keeps `h` (deleting the oldest held transfers to make room).
    pub fn put(&mut self, h: Held) {
        self.expire();
        if (h.parts.is_empty() && h.stored.is_empty()) || h.bytes() > RESUME_MAX_BYTES {
            return; // dropped: its partial files are deleted
        }
        self.held.push(h);
        while self.held.len() > RESUME_MAX_TRANSFERS || self.bytes() > RESUME_MAX_BYTES {
            self.held.remove(0);
        }
    }

    /// Takes the held transfer of `peer` with exactly these entries.
    pub fn take(&mut self, peer: &str, entries: &[Entry]) -> Option<Held> {
        self.expire();
        let i = self
            .held
            .iter()
            .position(|h| h.peer == peer && h.entries == entries)?;
        Some(self.held.remove(i))
    }

    /// Deletes what is older than [`RESUME_TTL`].
    pub fn expire(&mut self) {
        self.held.retain(|h| h.at.elapsed() < RESUME_TTL);
    }

    /// Bytes held, all transfers.
    pub fn bytes(&self) -> u64 {
        self.held.iter().map(Held::bytes).sum()
    }
}

/// Feeds the prefixes `held` has (partial files, and files it stored) to a
/// pending receiver, so the sender only sends the rest. Runs on a blocking
/// thread. A partial file that cannot be read to its end is cut to what was
/// fed. `None` when a stored file could not be fed whole (gone, changed
/// size, unreadable): the receiver then holds a prefix nothing backs, and
/// the caller starts over without a resume.
pub fn feed_prefix(
    rx: &mut Receiver,
    held: &mut Held,
    hashers: &mut HashMap<u16, FileHasher>,
) -> Option<u64> {
    let version = rx.version();
    let mut total = 0;
    let mut buf = vec![0u8; 256 * 1024];
    let mut feed = |rx: &mut Receiver, entry: u16, path: &Path, want: u64| -> u64 {
        let Ok(mut f) = File::open(path) else {
            return 0;
        };
        let mut fed = 0u64;
        while fed < want {
            let n = (want - fed).min(buf.len() as u64) as usize;
            match f.read(&mut buf[..n]) {
                Ok(0) | Err(_) => break,
                Ok(k) => {
                    let Ok(h) = running_hash(hashers, entry, version) else {
                        break;
                    };
                    if rx.resume_prefix(entry, &buf[..k]).is_err() {
                        break;
                    }
                    h.update(&buf[..k]);
                    fed += k as u64;
                }
            }
        }
        fed
    };
    let sizes: Vec<u64> = held.entries.iter().map(|e| e.size()).collect();
    let stored: Vec<(u16, PathBuf)> = held.stored.iter().map(|(e, p)| (*e, p.clone())).collect();
    for (entry, path) in stored {
        let size = sizes.get(usize::from(entry)).copied().unwrap_or(0);
        let ok = fs::symlink_metadata(&path).is_ok_and(|m| m.is_file() && m.len() == size);
        if !ok {
            // Moved away or changed: received again (under a free name).
            held.stored.remove(&entry);
            continue;
        }
        let fed = feed(rx, entry, &path, size);
        total += fed;
        if fed != size {
            return None;
        }
    }
    for (entry, (path, len)) in held.parts.iter_mut() {
        if held.stored.contains_key(entry) {
            continue;
        }
        let fed = feed(rx, *entry, path, *len);
        *len = fed;
        total += fed;
    }
    Some(total)
}
