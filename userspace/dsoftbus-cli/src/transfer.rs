//! File transfer on the Linux node: the core protocol
//! (`dsoftbus::transfer`, docs/protocol/wire.md §12) driven by the session
//! task, with the file I/O on blocking threads.
//!
//! * **Carrier** (wire.md §12): when the peer's announce listed `streams/1`
//!   at session establishment, each transfer gets its own stream of kind
//!   [`STREAM_KIND`] (`0x40`, [`Priority::Bulk`](dsoftbus::stream::Priority))
//!   and every transfer message is preceded by a 2-byte length; otherwise
//!   every transfer message is one session data message. Both are received
//!   whatever this side would send.
//! * **Receiving:** the core [`Receiver`] checks the offer (names, bounds),
//!   hashes every byte and says when a file is verified; a [`WriteJob`] on a
//!   blocking thread writes the bytes into owner-only partial files
//!   (`.dsoftbus-<tag>-<entry>-<rand>.part` in the inbox) and stores each
//!   verified file under its offered path with [`store_no_replace`] (never
//!   replacing anything). The END of a transfer is held until the writer
//!   has stored every file, so DONE means "stored". Every way out that did
//!   not store a file deletes its partial file (the job's `Drop`).
//! * **Sending:** files are hashed before the offer; after the ACCEPT a
//!   reader thread reads them from the accepted offsets into a bounded
//!   channel ([`READ_AHEAD`] chunks) and the session hands the bytes to the
//!   core [`Sender`] only while the carrier has room.

use std::collections::{HashMap, VecDeque};
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::Mutex;
use std::time::{Duration, Instant as StdInstant};

use dsoftbus::node::{OfferId, Verdict};
use dsoftbus::stream::StreamId;
pub use dsoftbus::transfer::STREAM_KIND;
use dsoftbus::transfer::{
    wire, Entry, EntryKind, Outcome, Reason, Receiver, ReceiverConfig, ReceiverEvent, Sender,
    SenderConfig, SenderEvent, Side, TransferError,
};
use dsoftbus::DeviceId;
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, oneshot, watch, Notify};
use tracing::{debug, info, warn};

use crate::shared::{
    bump, suppressed, Answer, Counters, HostClock, LogKind, OfferRef, Peers, RateLimiter,
    SessionCmd, SessionCtx, SlotGuard, TransferCfg,
};

/// Chunks a reader thread may have read ahead of the session.
pub const READ_AHEAD: usize = 4;
/// Messages queued for one transfer's writer thread (each ≤ 64 KiB).
pub const WRITER_QUEUE: usize = 16;
/// Bytes of file data per DATA message this node sends.
pub const CHUNK: usize = 60 * 1024;
/// How long the partial files of an interrupted incoming transfer are kept
/// for a resume.
pub const RESUME_TTL: Duration = Duration::from_secs(10 * 60);
/// Most bytes of partial files kept for resumes, all transfers together
/// (the oldest are deleted first to make room).
pub const RESUME_MAX_BYTES: u64 = 4 << 30;
/// Most interrupted transfers kept for resumes (the oldest go first).
pub const RESUME_MAX_TRANSFERS: usize = 32;

/// What carries one transfer's messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Carrier {
    /// Session data messages; the transfer id (with the direction of the
    /// kind) names the transfer.
    Data(u32),
    /// Its own stream (one transfer per stream).
    Stream(StreamId),
}

// Name rules live in the core, in one place (shared with the core's
// transfer protocol, `dsoftbus::transfer::name`).
pub use dsoftbus::transfer::name::{candidate_name, sanitize_name};

/// Most names tried (`name`, `name.1` … `name.999`) before giving up.
pub const MAX_NAME_TRIES: u32 = 1000;

/// Moves `from` to `to` only if `to` does not exist, atomically:
/// `renameat2(RENAME_NOREPLACE)`, or `link` + `unlink` where the file
/// system lacks it. `AlreadyExists` when the name is taken.
fn rename_noreplace(from: &Path, to: &Path) -> std::io::Result<()> {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        use nix::errno::Errno;
        use nix::fcntl::{renameat2, RenameFlags};
        match renameat2(None, from, None, to, RenameFlags::RENAME_NOREPLACE) {
            Ok(()) => return Ok(()),
            Err(Errno::EEXIST) => return Err(std::io::ErrorKind::AlreadyExists.into()),
            // Not supported by this file system: fall back to link + unlink.
            Err(Errno::EINVAL) | Err(Errno::ENOSYS) | Err(Errno::EOPNOTSUPP) => {}
            Err(e) => return Err(e.into()),
        }
    }
    fs::hard_link(from, to)?;
    // The verified data now has its final name; a stale partial name is
    // harmless (and removed at the next start) if this unlink fails.
    let _ = fs::remove_file(from);
    Ok(())
}

/// Stores the verified partial file `part` in `dir` under `name`, or the
/// first free `name.N`, never replacing an existing file (even one created
/// concurrently by another transfer). Returns the final path.
pub fn store_no_replace(part: &Path, dir: &Path, name: &str) -> std::io::Result<PathBuf> {
    for i in 0..MAX_NAME_TRIES {
        let dest = dir.join(candidate_name(name, i));
        match rename_noreplace(part, &dest) {
            Ok(()) => return Ok(dest),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::AlreadyExists,
        format!(
            "no free file name ({name:?} and {} variants are taken)",
            MAX_NAME_TRIES - 1
        ),
    ))
}

/// True for our partial-file names (`.dsoftbus-<id>-<rand>.part`).
pub fn is_part_name(name: &str) -> bool {
    name.starts_with(".dsoftbus-") && name.ends_with(".part")
}

/// Deletes partial files left in `inbox` by a daemon that was killed (no
/// transfer is in progress when the daemon starts). Returns how many.
pub fn remove_stale_parts(inbox: &Path) -> std::io::Result<usize> {
    let mut n = 0;
    for e in fs::read_dir(inbox)? {
        let e = e?;
        let stale = e.file_name().to_str().is_some_and(is_part_name)
            && e.file_type().is_ok_and(|t| t.is_file());
        if stale && fs::remove_file(e.path()).is_ok() {
            n += 1;
        }
    }
    Ok(n)
}

/// Creates the inbox (mode 0700, like the state directory) if it is missing.
pub fn create_inbox(inbox: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    if inbox.is_dir() {
        return Ok(());
    }
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(inbox)
}

impl Carrier {
    /// For logs: `stream 3` or `data messages`.
    pub fn describe(&self) -> String {
        match self {
            Carrier::Data(_) => "data messages".into(),
            Carrier::Stream(id) => format!("stream {}", id.0),
        }
    }
}

/// Creates directory `name` (or the first free `name.N`) in `parent`, mode
/// 0700, never reusing an existing one. Returns its path.
pub fn create_dir_noreplace(parent: &Path, name: &str) -> std::io::Result<PathBuf> {
    for i in 0..MAX_NAME_TRIES {
        let dest = parent.join(candidate_name(name, i));
        match fs::DirBuilder::new().mode(0o700).create(&dest) {
            Ok(()) => return Ok(dest),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::AlreadyExists,
        format!("no free directory name ({name:?} and its variants are taken)"),
    ))
}

/// Work for a receive writer thread, in order.
#[derive(Debug)]
pub enum WriterMsg {
    /// Create this directory entry.
    Dir(u16),
    /// Append these (not yet verified) bytes to the entry's partial file.
    Data { entry: u16, data: Vec<u8> },
    /// The core verified the entry's SHA-256: store it.
    Verified(u16),
    /// Answer [`Report::Flushed`] once everything before is stored.
    Barrier,
    /// The carrier went away mid-transfer: keep the partial files in the
    /// resume store (`peer`'s) instead of deleting them, and end.
    Hold,
}

/// What a writer thread tells its session.
#[derive(Debug)]
pub enum Report {
    /// A verified file got its final name.
    Stored {
        carrier: Carrier,
        path: PathBuf,
        bytes: u64,
    },
    /// Every message before the barrier is done.
    Flushed(Carrier),
    /// Writing or storing failed; the job has ended (partial files deleted).
    Failed { carrier: Carrier, error: String },
}

/// The files of one incoming transfer: partial files and where they land.
pub struct WriteJob {
    carrier: Carrier,
    inbox: PathBuf,
    entries: Vec<Entry>,
    tag: u32,
    parts: HashMap<u16, (PathBuf, File)>,
    /// Offered top-level directory name → the directory created for it.
    roots: HashMap<String, PathBuf>,
    /// Entries stored already (by this job, or by the interrupted transfer
    /// it resumes).
    stored: HashMap<u16, PathBuf>,
    /// Where a [`WriterMsg::Hold`] puts the partial files.
    resume: Option<(Arc<Mutex<ResumeStore>>, String)>,
}

impl Drop for WriteJob {
    /// Every way out that did not store a file (errors, cancel, a lost
    /// session, a panic) deletes its partial file.
    fn drop(&mut self) {
        for (part, _) in self.parts.values() {
            let _ = fs::remove_file(part);
        }
    }
}

impl WriteJob {
    pub fn new(carrier: Carrier, inbox: &Path, entries: Vec<Entry>) -> std::io::Result<Self> {
        create_inbox(inbox)?;
        Ok(WriteJob {
            carrier,
            inbox: inbox.to_path_buf(),
            entries,
            tag: fastrand::u32(..),
            parts: HashMap::new(),
            roots: HashMap::new(),
            stored: HashMap::new(),
            resume: None,
        })
    }

    /// Lets [`WriterMsg::Hold`] keep the partial files for `peer`.
    pub fn hold_to(mut self, store: Arc<Mutex<ResumeStore>>, peer: String) -> Self {
        self.resume = Some((store, peer));
        self
    }

    /// Continues an interrupted transfer: its partial files (cut to the
    /// prefix the receiver was fed), directories and stored files.
    pub fn resume_from(mut self, held: &mut Held) -> std::io::Result<Self> {
        for (entry, (path, len)) in std::mem::take(&mut held.parts) {
            let file = OpenOptions::new().append(true).open(&path);
            match file.and_then(|f| f.set_len(len).map(|()| f)) {
                Ok(f) => {
                    self.parts.insert(entry, (path, f));
                }
                Err(e) => {
                    let _ = fs::remove_file(&path);
                    return Err(e);
                }
            }
        }
        self.roots = std::mem::take(&mut held.roots);
        self.stored = std::mem::take(&mut held.stored);
        Ok(self)
    }

    /// Runs on a blocking thread until the session drops its sender or a
    /// write fails.
    pub fn run(mut self, mut rx: mpsc::Receiver<WriterMsg>, report: mpsc::Sender<Report>) {
        while let Some(m) = rx.blocking_recv() {
            let r = match m {
                WriterMsg::Dir(e) => self.dir_entry(e),
                WriterMsg::Data { entry, data } => self.write(entry, &data),
                WriterMsg::Verified(e) => match self.store(e) {
                    Ok((path, bytes)) => {
                        let carrier = self.carrier;
                        let _ = report.blocking_send(Report::Stored {
                            carrier,
                            path,
                            bytes,
                        });
                        Ok(())
                    }
                    Err(e) => Err(e),
                },
                WriterMsg::Barrier => {
                    let _ = report.blocking_send(Report::Flushed(self.carrier));
                    Ok(())
                }
                WriterMsg::Hold => {
                    self.hold();
                    return;
                }
            };
            if let Err(error) = r {
                let carrier = self.carrier;
                drop(self); // partial files go before the session hears of it
                let _ = report.blocking_send(Report::Failed { carrier, error });
                return;
            }
        }
    }

    fn path(&self, entry: u16) -> Result<&str, String> {
        self.entries
            .get(usize::from(entry))
            .map(|e| e.path.as_str())
            .ok_or_else(|| format!("no entry {entry}"))
    }

    fn part(&mut self, entry: u16) -> Result<&mut File, String> {
        if !self.parts.contains_key(&entry) {
            let part = self.inbox.join(format!(
                ".dsoftbus-{:08x}-{entry}-{:08x}.part",
                self.tag,
                fastrand::u32(..)
            ));
            let file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&part)
                .map_err(|e| format!("cannot create a partial file in the inbox: {e}"))?;
            self.parts.insert(entry, (part, file));
        }
        self.parts
            .get_mut(&entry)
            .map(|(_, f)| f)
            .ok_or_else(|| "partial file vanished".to_string())
    }

    fn write(&mut self, entry: u16, data: &[u8]) -> Result<(), String> {
        self.part(entry)?
            .write_all(data)
            .map_err(|e| format!("write failed: {e}"))
    }

    /// The directory for the components of `path` before the last one
    /// (created on first use: the top-level one with a free name, the
    /// others inside it), and the last component.
    fn dir_for(&mut self, path: &str) -> Result<(PathBuf, String), String> {
        let parts: Vec<&str> = path.split('/').collect();
        let Some((last, dirs)) = parts.split_last() else {
            return Err("empty path".into());
        };
        let Some((root, rest)) = dirs.split_first() else {
            return Ok((self.inbox.clone(), (*last).to_string()));
        };
        let mut dir = match self.roots.get(*root) {
            Some(d) => d.clone(),
            None => {
                let d = create_dir_noreplace(&self.inbox, root)
                    .map_err(|e| format!("cannot create {root:?} in the inbox: {e}"))?;
                self.roots.insert((*root).to_string(), d.clone());
                d
            }
        };
        for c in rest {
            dir.push(c);
            match fs::DirBuilder::new().mode(0o700).create(&dir) {
                Ok(()) => {}
                // Created by an earlier entry of this transfer (inside a
                // directory this transfer created): fine unless it is not
                // a plain directory.
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    if !fs::symlink_metadata(&dir).is_ok_and(|m| m.is_dir()) {
                        return Err(format!("{} exists and is not a directory", dir.display()));
                    }
                }
                Err(e) => return Err(format!("cannot create {}: {e}", dir.display())),
            }
        }
        Ok((dir, (*last).to_string()))
    }

    fn dir_entry(&mut self, entry: u16) -> Result<(), String> {
        let p = format!("{}/.", self.path(entry)?);
        self.dir_for(&p).map(|_| ())
    }

    /// Moves the partial files (and what was stored) to the resume store.
    fn hold(&mut self) {
        let Some((store, peer)) = self.resume.take() else {
            return; // no store: Drop deletes the partial files
        };
        let mut parts = HashMap::new();
        for (entry, (path, file)) in self.parts.drain() {
            let len = file.metadata().map(|m| m.len()).unwrap_or(0);
            parts.insert(entry, (path, len));
        }
        let held = Held {
            peer,
            entries: std::mem::take(&mut self.entries),
            parts,
            stored: std::mem::take(&mut self.stored),
            roots: std::mem::take(&mut self.roots),
            at: StdInstant::now(),
        };
        store.lock().unwrap_or_else(|p| p.into_inner()).put(held);
    }

    fn store(&mut self, entry: u16) -> Result<(PathBuf, u64), String> {
        if let Some(done) = self.stored.get(&entry) {
            // Stored by the interrupted transfer this one resumes.
            let bytes = fs::metadata(done).map(|m| m.len()).unwrap_or(0);
            return Ok((done.clone(), bytes));
        }
        let path = self.path(entry)?.to_string();
        // An empty file never got data: create its (empty) partial file now.
        self.part(entry)?;
        let Some((part, file)) = self.parts.remove(&entry) else {
            return Err("partial file vanished".into());
        };
        let synced = file.sync_all();
        drop(file);
        let res = synced
            .map_err(|e| format!("fsync failed: {e}"))
            .and_then(|()| self.dir_for(&path))
            .and_then(|(dir, base)| {
                store_no_replace(&part, &dir, &base).map_err(|e| format!("storing failed: {e}"))
            });
        match res {
            Ok(dest) => {
                let bytes = fs::metadata(&dest).map(|m| m.len()).unwrap_or(0);
                self.stored.insert(entry, dest.clone());
                Ok((dest, bytes))
            }
            Err(e) => {
                let _ = fs::remove_file(&part);
                Err(e)
            }
        }
    }
}

/// The partial files of an interrupted incoming transfer, kept for a
/// resume by the same peer with the same entries (paths, sizes, SHA-256).
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
    held: Vec<Held>,
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
pub fn feed_prefix(rx: &mut Receiver, held: &mut Held) -> Option<u64> {
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
                    if rx.resume_prefix(entry, &buf[..k]).is_err() {
                        break;
                    }
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

/// What the user is told about a reason a peer gave.
pub fn reason_text(r: Reason) -> String {
    match r {
        Reason::Declined => {
            "declined (its user or its --accept policy said no, or it has no inbox)".into()
        }
        Reason::Expired => "expired (not answered in time, or the transfer stalled)".into(),
        Reason::InvalidName => "a path breaks the receiver's name rules".into(),
        Reason::TooLarge => "too large for the receiver".into(),
        Reason::Busy => "the receiver is busy (too many transfers in progress)".into(),
        Reason::Protocol => "protocol error".into(),
        Reason::HashMismatch => {
            "integrity check failed (sha256 mismatch); the file was not stored".into()
        }
        Reason::Io => "the receiver could not store the files".into(),
        Reason::UnsupportedVersion => "unsupported transfer protocol version".into(),
        Reason::Other(b) => format!("reason {b:#04x}"),
    }
}

/// How a transfer ended, for `dsoftbus transfers`.
pub fn outcome_text(o: &Outcome) -> String {
    match o {
        Outcome::Done => "done: every file verified".into(),
        Outcome::Denied {
            by: Side::Peer,
            reason,
        } => {
            format!("refused by the receiver: {}", reason_text(*reason))
        }
        Outcome::Denied { reason, .. } => format!("refused: {}", reason.as_str()),
        Outcome::Cancelled {
            by: Side::Peer,
            reason,
            ..
        } => {
            format!("cancelled by the peer: {}", reason.as_str())
        }
        Outcome::Cancelled { reason, .. } => format!("cancelled here: {}", reason.as_str()),
        Outcome::Failed(e) => format!("failed: {e}"),
    }
}

/// A short description of an offer for logs and listings.
pub fn summary(entries: &[Entry]) -> String {
    let files = entries.iter().filter(|e| !e.is_dir()).count();
    let first = entries.first().map(|e| e.path.as_str()).unwrap_or("");
    if entries.len() == 1 {
        format!("{first:?}")
    } else {
        format!("{first:?} and {} more ({files} files)", entries.len() - 1)
    }
}

/// Progress of an outgoing transfer, for the control client.
#[derive(Clone, Debug, Default)]
pub struct SendProgress {
    pub accepted: bool,
    /// Bytes of all files.
    pub total: u64,
    /// Bytes the receiver already held (resumed).
    pub resumed: u64,
    /// Data bytes sent since the accept, and acknowledged.
    pub sent: u64,
    pub acked: u64,
    /// Everything (END included) was handed to the carrier.
    pub all_sent: bool,
}

/// How an outgoing transfer ended, with a local detail (a read error).
pub type SendDone = (Outcome, Option<String>);

/// A `send` request handed to the session.
pub struct SendReq {
    pub entries: Vec<Entry>,
    /// Per entry: the local file and its size (None for directories).
    pub files: Vec<Option<(PathBuf, u64)>>,
    pub progress: watch::Sender<SendProgress>,
    pub done: oneshot::Sender<SendDone>,
}

struct Outgoing {
    tx: Sender,
    files: Vec<Option<(PathBuf, u64)>>,
    pieces: Option<mpsc::Receiver<Result<Piece, String>>>,
    held: Option<(Piece, usize)>,
    progress: watch::Sender<SendProgress>,
    done: Option<oneshot::Sender<SendDone>>,
    detail: Option<String>,
    /// Its row on the transfer board.
    key: u64,
}

struct Incoming {
    rx: Receiver,
    writer: Option<mpsc::Sender<WriterMsg>>,
    held_end: Option<Vec<u8>>,
    last: StdInstant,
    name: String,
    total: u64,
    /// Its row on the transfer board, and the bytes it holds so far.
    key: u64,
    done: u64,
    /// Its place among the accepted incoming transfers (consent).
    _slot: SlotGuard,
}

/// An offer waiting for consent (`ask`).
struct Waiting {
    rx: Receiver,
    id: OfferId,
    /// The offer as received (to start over when a resume fails).
    msg: Vec<u8>,
    since: StdInstant,
    ttl: Duration,
}

/// Most finished transfers (and refused offers) `dsoftbus transfers`
/// remembers; the oldest is dropped first.
pub const HISTORY: usize = 32;
/// Most answered offer ids remembered, so `accept` of one already answered
/// says so.
pub const ANSWERED: usize = 256;

/// A transfer in flight, for `dsoftbus transfers`.
#[derive(Clone, Debug)]
pub struct Active {
    pub incoming: bool,
    pub peer: String,
    pub name: String,
    pub total: u64,
    /// Bytes done (received and handed to the writer, or acknowledged by
    /// the receiver), resumed bytes included.
    pub done: u64,
    /// Bytes resumed at the start (not counted in the rate).
    pub resumed: u64,
    pub started: StdInstant,
}

/// A finished transfer or a refused offer.
#[derive(Clone, Debug)]
pub struct Record {
    pub incoming: bool,
    pub peer: String,
    pub name: String,
    pub total: u64,
    pub done: u64,
    pub ok: bool,
    pub result: String,
    pub secs: f64,
    pub ended: StdInstant,
}

impl Record {
    /// An incoming offer refused before any data.
    pub fn offer(peer: &str, name: &str, total: u64, why: &str) -> Record {
        Record {
            incoming: true,
            peer: peer.into(),
            name: name.into(),
            total,
            done: 0,
            ok: false,
            result: format!("refused: {why}"),
            secs: 0.0,
            ended: StdInstant::now(),
        }
    }
}

/// What `dsoftbus transfers` shows besides pending offers: transfers in
/// flight (one row each; bounded by the transfers themselves) and the last
/// [`HISTORY`] finished ones.
#[derive(Debug, Default)]
pub struct Board {
    next: u64,
    pub active: std::collections::BTreeMap<u64, Active>,
    pub history: VecDeque<Record>,
    answered: VecDeque<(u32, &'static str)>,
}

impl Board {
    pub fn start(
        &mut self,
        incoming: bool,
        peer: &str,
        name: &str,
        total: u64,
        resumed: u64,
    ) -> u64 {
        self.next += 1;
        self.active.insert(
            self.next,
            Active {
                incoming,
                peer: peer.into(),
                name: name.into(),
                total,
                done: resumed,
                resumed,
                started: StdInstant::now(),
            },
        );
        self.next
    }

    pub fn progress(&mut self, key: u64, done: u64) {
        if let Some(a) = self.active.get_mut(&key) {
            a.done = done;
        }
    }

    pub fn finish(&mut self, key: u64, ok: bool, result: String) {
        if let Some(a) = self.active.remove(&key) {
            self.record(Record {
                incoming: a.incoming,
                peer: a.peer,
                name: a.name,
                total: a.total,
                done: a.done,
                ok,
                result,
                secs: a.started.elapsed().as_secs_f64(),
                ended: StdInstant::now(),
            });
        }
    }

    pub fn record(&mut self, r: Record) {
        if self.history.len() >= HISTORY {
            self.history.pop_front();
        }
        self.history.push_back(r);
    }

    /// Remembers how offer `id` was answered.
    pub fn answered(&mut self, id: u32, how: &'static str) {
        if self.answered.len() >= ANSWERED {
            self.answered.pop_front();
        }
        self.answered.push_back((id, how));
    }

    /// How offer `id` was answered, if it was (recently).
    pub fn was_answered(&self, id: u32) -> Option<&'static str> {
        self.answered
            .iter()
            .rev()
            .find(|(i, _)| *i == id)
            .map(|(_, h)| *h)
    }
}

/// The transfers of one session.
pub struct Engine {
    cfg: Arc<TransferCfg>,
    counters: Arc<Counters>,
    limiter: Arc<RateLimiter>,
    peers: Peers,
    clock: HostClock,
    cmd: mpsc::Sender<SessionCmd>,
    /// The peer's name for logs.
    pub peer: String,
    /// The peer, once the session is confirmed.
    pub peer_id: Option<DeviceId>,
    inbound: HashMap<Carrier, Incoming>,
    waiting: HashMap<Carrier, Waiting>,
    outbound: HashMap<Carrier, Outgoing>,
    /// Messages to send, in order.
    pub out: VecDeque<(Carrier, Vec<u8>)>,
    /// Carriers whose transfer ended (the session closes their streams).
    pub ended: Vec<Carrier>,
    report_tx: mpsc::Sender<Report>,
    /// Poked when a reader has bytes.
    pub wake: Arc<Notify>,
}

impl Engine {
    pub fn new(
        cx: &SessionCtx,
        cmd: mpsc::Sender<SessionCmd>,
        report_tx: mpsc::Sender<Report>,
    ) -> Self {
        Engine {
            cfg: cx.transfer.clone(),
            counters: cx.counters.clone(),
            limiter: cx.limiter.clone(),
            peers: cx.peers.clone(),
            clock: cx.clock,
            cmd,
            peer: "?".into(),
            peer_id: None,
            inbound: HashMap::new(),
            waiting: HashMap::new(),
            outbound: HashMap::new(),
            out: VecDeque::new(),
            ended: Vec::new(),
            report_tx,
            wake: Arc::new(Notify::new()),
        }
    }

    /// Carriers of outgoing transfers.
    pub fn outgoing(&self) -> Vec<Carrier> {
        self.outbound.keys().copied().collect()
    }

    /// A transfer id not used by an outgoing transfer on the data carrier.
    pub fn new_id(&self) -> u32 {
        loop {
            let id = fastrand::u32(..);
            if !self.outbound.contains_key(&Carrier::Data(id)) {
                return id;
            }
        }
    }

    /// Starts an outgoing transfer on `carrier`.
    pub fn start_send(&mut self, carrier: Carrier, id: u32, req: SendReq) {
        let total = req.entries.iter().map(|e| e.size()).sum();
        let tx = match Sender::new(id, req.entries, SenderConfig { chunk: CHUNK }) {
            Ok(tx) => tx,
            Err(e) => {
                let _ = req
                    .done
                    .send((Outcome::Failed(TransferError::Offer(e)), None));
                return;
            }
        };
        req.progress.send_modify(|p| p.total = total);
        let name = summary(tx.entries());
        let key = self.board().start(false, &self.peer, &name, total, 0);
        self.outbound.insert(
            carrier,
            Outgoing {
                tx,
                files: req.files,
                pieces: None,
                held: None,
                progress: req.progress,
                done: Some(req.done),
                detail: None,
                key,
            },
        );
        self.drain_outgoing(carrier);
    }

    /// One transfer message from the peer (on a stream, or a data message).
    pub async fn on_message(&mut self, stream: Option<StreamId>, msg: &[u8]) {
        let (kind, id) = match wire::header(msg) {
            Ok(h) => h,
            Err(e) => {
                // An offer in another version (id readable): a fresh
                // receiver answers it by id. Anything else is dropped.
                if msg.first() == Some(&wire::KIND_OFFER) {
                    let id = msg
                        .get(2..6)
                        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
                        .unwrap_or(0);
                    let carrier = stream.map(Carrier::Stream).unwrap_or(Carrier::Data(id));
                    let mut rx = Receiver::new(self.receiver_config());
                    let _ = rx.handle(msg);
                    while let Some(m) = rx.poll_transmit() {
                        self.out.push_back((carrier, m));
                    }
                }
                self.log_decode(&format!("transfer message: {e:?}"));
                return;
            }
        };
        let carrier = stream.map(Carrier::Stream).unwrap_or(Carrier::Data(id));
        if wire::from_sender(kind) {
            if let Some(w) = self.waiting.get_mut(&carrier) {
                // A pending offer: only a CANCEL (or garbage) can come.
                let _ = w.rx.handle(msg);
                while let Some(m) = w.rx.poll_transmit() {
                    self.out.push_back((carrier, m));
                }
                if w.rx.outcome().is_some() {
                    self.drop_waiting(carrier, "cancelled by the sender");
                }
                return;
            }
            if !self.inbound.contains_key(&carrier) {
                if kind == wire::KIND_OFFER {
                    self.new_incoming(carrier, msg).await;
                }
                return;
            }
            if let Some(inc) = self.inbound.get_mut(&carrier) {
                if kind == wire::KIND_END && inc.held_end.is_none() && !inc.rx.is_pending() {
                    // DONE only once the writer has stored every file.
                    if let Some(w) = &inc.writer {
                        inc.held_end = Some(msg.to_vec());
                        let _ = w.send(WriterMsg::Barrier).await;
                        return;
                    }
                }
                if let Err(e) = inc.rx.handle(msg) {
                    if e.is_fatal() {
                        self.log_receive_error(carrier, e);
                    }
                }
            }
            self.drain_incoming(carrier).await;
        } else {
            if let Some(o) = self.outbound.get_mut(&carrier) {
                let _ = o.tx.handle(msg);
            }
            self.drain_outgoing(carrier);
        }
    }

    fn receiver_config(&self) -> ReceiverConfig {
        ReceiverConfig {
            max_total_size: self.cfg.max_receive_bytes,
            ..ReceiverConfig::default()
        }
    }

    fn log_decode(&self, what: &str) {
        if let Some(n) = self.limiter.allow(LogKind::AppDecode) {
            debug!("peer={}: ignoring a {what}{}", self.peer, suppressed(n));
        }
    }

    fn log_receive_error(&self, carrier: Carrier, e: TransferError) {
        let name = self
            .inbound
            .get(&carrier)
            .map(|i| i.name.clone())
            .unwrap_or_default();
        if let Some(n) = self.limiter.allow(LogKind::ChunkOrder) {
            warn!(
                "transfer {name} from peer={}: {e}; aborted, partial files deleted{}",
                self.peer,
                suppressed(n)
            );
        }
    }

    async fn new_incoming(&mut self, carrier: Carrier, msg: &[u8]) {
        let mut rx = Receiver::new(self.receiver_config());
        let res = rx.handle(msg);
        let peer = self.peer.clone();
        if !rx.is_pending() {
            // Malformed, or over a bound, or a bad name: the core denied it.
            while let Some(m) = rx.poll_transmit() {
                self.out.push_back((carrier, m));
            }
            if let Some(n) = self.limiter.allow(LogKind::NoInbox) {
                info!(
                    "refused a transfer from peer={peer}: {}{}",
                    res.err()
                        .map(|e| e.to_string())
                        .unwrap_or_else(|| "invalid offer".into()),
                    suppressed(n)
                );
            }
            return;
        }
        let entries = rx.offer().map(|e| e.to_vec()).unwrap_or_default();
        let name = summary(&entries);
        let total: u64 = entries.iter().map(|e| e.size()).sum();
        let files = entries.iter().filter(|e| !e.is_dir()).count();
        if self.cfg.inbox.is_none() {
            return self.refuse(carrier, rx, Reason::Declined, "no --inbox configured");
        }
        let Some(peer_id) = self.peer_id.clone() else {
            return self.refuse(carrier, rx, Reason::Declined, "peer not confirmed");
        };
        // Consent is the core's (dsoftbus::node::consent): the policy, the
        // pending table and the incoming slots, daemon-wide.
        let user_pinned = self
            .peers
            .lock()
            .known
            .pin(&peer_id)
            .is_some_and(|p| p.is_user());
        let payload = OfferRef {
            cmd: self.cmd.clone(),
            carrier,
            name: name.clone(),
            files,
            bytes: total,
        };
        let now = self.clock.now();
        let verdict = self
            .cfg
            .consent
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .offer(&peer_id, user_pinned, payload, now);
        match verdict {
            Verdict::Accept(slot) => {
                let slot = SlotGuard::new(self.cfg.consent.clone(), slot);
                self.accept_incoming(carrier, rx, msg.to_vec(), slot).await;
            }
            Verdict::Pending(id) => {
                let ttl = self
                    .cfg
                    .consent
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .config()
                    .ask_ttl;
                if let Some(n) = self.limiter.allow(LogKind::OfferPending) {
                    info!(
                        "offer {id} from peer={peer}: {name} ({files} files, {total} bytes) waits for an answer: `dsoftbus accept {id}` or `dsoftbus deny {id}` (expires in {} s){}",
                        ttl.as_secs(),
                        suppressed(n)
                    );
                }
                self.waiting.insert(
                    carrier,
                    Waiting {
                        rx,
                        id,
                        msg: msg.to_vec(),
                        since: StdInstant::now(),
                        ttl,
                    },
                );
            }
            Verdict::Deny(d) => {
                let why = d.as_str();
                self.board().record(Record::offer(&peer, &name, total, why));
                self.refuse(carrier, rx, d.reason(), why)
            }
        }
    }

    /// Forgets a pending offer (the peer cancelled it, or went away): out
    /// of the consent table, into the history.
    fn drop_waiting(&mut self, carrier: Carrier, why: &str) {
        let Some(w) = self.waiting.remove(&carrier) else {
            return;
        };
        self.cfg
            .consent
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .deny(w.id);
        let name = w.rx.offer().map(summary).unwrap_or_default();
        let total =
            w.rx.offer()
                .map(|e| e.iter().map(|e| e.size()).sum())
                .unwrap_or(0);
        let mut b = self.board();
        b.answered(w.id.0, "withdrawn");
        b.record(Record::offer(&self.peer, &name, total, why));
    }

    fn board(&self) -> std::sync::MutexGuard<'_, Board> {
        self.cfg.board.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn refuse(&mut self, carrier: Carrier, mut rx: Receiver, reason: Reason, why: &str) {
        let _ = rx.deny(reason);
        while let Some(m) = rx.poll_transmit() {
            self.out.push_back((carrier, m));
        }
        let name = rx.offer().map(summary).unwrap_or_default();
        if let Some(n) = self.limiter.allow(LogKind::NoInbox) {
            info!(
                "refused a transfer of {name} from peer={}: {why}{}",
                self.peer,
                suppressed(n)
            );
        }
    }

    /// The answer to an offer that waited (`dsoftbus accept` / `deny`, or
    /// expiry).
    pub async fn on_answer(&mut self, carrier: Carrier, answer: Answer) {
        let Some(w) = self.waiting.remove(&carrier) else {
            return; // gone meanwhile (cancelled by the peer): a slot is released
        };
        match answer {
            Answer::Accept(slot) => self.accept_incoming(carrier, w.rx, w.msg, slot).await,
            Answer::Deny(d) => {
                let name = w.rx.offer().map(summary).unwrap_or_default();
                let total =
                    w.rx.offer()
                        .map(|e| e.iter().map(|e| e.size()).sum())
                        .unwrap_or(0);
                let peer = self.peer.clone();
                self.board()
                    .record(Record::offer(&peer, &name, total, d.as_str()));
                self.refuse(carrier, w.rx, d.reason(), d.as_str());
            }
        }
    }

    /// Accepts an offer (with its slot): resumes what an interrupted
    /// transfer left, starts the writer, sends ACCEPT.
    async fn accept_incoming(
        &mut self,
        carrier: Carrier,
        mut rx: Receiver,
        msg: Vec<u8>,
        slot: SlotGuard,
    ) {
        let msg = &msg[..];
        let peer = self.peer.clone();
        let entries = rx.offer().map(|e| e.to_vec()).unwrap_or_default();
        let name = summary(&entries);
        let total: u64 = entries.iter().map(|e| e.size()).sum();
        let Some(inbox) = self.cfg.inbox.clone() else {
            return self.refuse(carrier, rx, Reason::Declined, "no --inbox configured");
        };
        // The same peer offering the same entries again resumes what an
        // interrupted transfer left (RESUME_TTL, RESUME_MAX_BYTES).
        let held = self
            .cfg
            .resume
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take(&peer, &entries);
        let mut resumed = None;
        let mut held = match held {
            Some(mut h) => {
                let fed = tokio::task::spawn_blocking(move || {
                    let f = feed_prefix(&mut rx, &mut h);
                    (rx, h, f)
                })
                .await;
                match fed {
                    Ok((r, h, Some(n))) => {
                        rx = r;
                        resumed = Some(n);
                        Some(h)
                    }
                    _ => {
                        // Start over without the resume.
                        rx = Receiver::new(self.receiver_config());
                        let _ = rx.handle(msg);
                        None
                    }
                }
            }
            None => None,
        };
        let job = WriteJob::new(carrier, &inbox, entries).and_then(|j| match held.as_mut() {
            Some(h) => j.resume_from(h),
            None => Ok(j),
        });
        drop(held);
        let job = match job {
            Ok(j) => j.hold_to(self.cfg.resume.clone(), peer.clone()),
            Err(e) => {
                if let Some(n) = self.limiter.allow(LogKind::InboxError) {
                    warn!(
                        "cannot store files from peer={peer} in {}: {e}{}",
                        inbox.display(),
                        suppressed(n)
                    );
                }
                return self.refuse(carrier, rx, Reason::Io, &format!("inbox: {e}"));
            }
        };
        let (wtx, wrx) = mpsc::channel(WRITER_QUEUE);
        let report = self.report_tx.clone();
        tokio::task::spawn_blocking(move || job.run(wrx, report));
        if let Some(n) = self.limiter.allow(LogKind::Receiving) {
            let resumed = match resumed {
                Some(b) => format!(", resuming: {b} bytes held"),
                None => String::new(),
            };
            info!(
                "receiving {name} ({total} bytes) from peer={peer} on {}{resumed}{}",
                carrier.describe(),
                suppressed(n)
            );
        }
        let _ = rx.accept();
        let key = self
            .board()
            .start(true, &peer, &name, total, resumed.unwrap_or(0));
        self.inbound.insert(
            carrier,
            Incoming {
                rx,
                writer: Some(wtx),
                held_end: None,
                last: StdInstant::now(),
                name,
                total,
                key,
                done: resumed.unwrap_or(0),
                _slot: slot,
            },
        );
        self.drain_incoming(carrier).await;
    }

    /// Moves an incoming transfer's messages out and its events to its
    /// writer; removes it once it has ended.
    async fn drain_incoming(&mut self, carrier: Carrier) {
        let Some(inc) = self.inbound.get_mut(&carrier) else {
            return;
        };
        let mut finished = None;
        loop {
            while let Some(m) = inc.rx.poll_transmit() {
                self.out.push_back((carrier, m));
            }
            let Some(ev) = inc.rx.poll_event() else { break };
            let w = match ev {
                ReceiverEvent::Offered => None,
                ReceiverEvent::Dir { entry } => Some(WriterMsg::Dir(entry)),
                ReceiverEvent::Data { entry, data, .. } => {
                    inc.done += data.len() as u64;
                    Some(WriterMsg::Data { entry, data })
                }
                ReceiverEvent::FileVerified { entry } => Some(WriterMsg::Verified(entry)),
                ReceiverEvent::Finished(o) => {
                    finished = Some(o);
                    None
                }
            };
            if let (Some(m), Some(writer)) = (w, &inc.writer) {
                // Bounded: a slow disk slows the peer, not memory. Time
                // spent here is not the peer's idleness.
                let _ = writer.send(m).await;
                inc.last = StdInstant::now();
            }
        }
        let Some(o) = finished else {
            let (key, done) = (inc.key, inc.done);
            self.board().progress(key, done);
            return;
        };
        let Some(inc) = self.inbound.remove(&carrier) else {
            return;
        };
        self.ended.push(carrier);
        let result = outcome_text(&o);
        self.board().finish(inc.key, o == Outcome::Done, result);
        let peer = &self.peer;
        match o {
            Outcome::Done => {
                if let Some(n) = self.limiter.allow(LogKind::Received) {
                    info!(
                        "received {} ({} bytes) from peer={peer}: every file sha256-verified and stored{}",
                        inc.name,
                        inc.total,
                        suppressed(n)
                    );
                }
            }
            Outcome::Cancelled { by: Side::Peer, .. } => {
                bump(&self.counters.transfers_failed);
                if let Some(n) = self.limiter.allow(LogKind::PeerCancel) {
                    info!(
                        "transfer {} cancelled by peer={peer}; partial files deleted{}",
                        inc.name,
                        suppressed(n)
                    );
                }
            }
            o => {
                bump(&self.counters.transfers_failed);
                if let Some(n) = self.limiter.allow(LogKind::ReceiveFailed) {
                    warn!(
                        "receive of {} from peer={peer} failed: {o:?}; partial files deleted{}",
                        inc.name,
                        suppressed(n)
                    );
                }
            }
        }
        // Dropping the writer's channel ends it; what it did not store is
        // deleted.
    }

    /// A report from a writer thread.
    pub async fn on_report(&mut self, r: Report) {
        match r {
            Report::Stored {
                carrier,
                path,
                bytes,
            } => {
                bump(&self.counters.files_received);
                if let Some(inc) = self.inbound.get_mut(&carrier) {
                    inc.last = StdInstant::now();
                }
                debug!(
                    "stored {} ({bytes} bytes) from peer={}",
                    path.display(),
                    self.peer
                );
            }
            Report::Flushed(carrier) => {
                if let Some(inc) = self.inbound.get_mut(&carrier) {
                    if let Some(end) = inc.held_end.take() {
                        if let Err(e) = inc.rx.handle(&end) {
                            if e.is_fatal() {
                                self.log_receive_error(carrier, e);
                            }
                        }
                    }
                }
                self.drain_incoming(carrier).await;
            }
            Report::Failed { carrier, error } => {
                if let Some(inc) = self.inbound.get_mut(&carrier) {
                    inc.writer = None;
                    inc.rx.cancel(Reason::Io);
                    if let Some(n) = self.limiter.allow(LogKind::InboxError) {
                        warn!(
                            "receive of {} from peer={}: {error}; cancelled{}",
                            inc.name,
                            self.peer,
                            suppressed(n)
                        );
                    }
                }
                self.drain_incoming(carrier).await;
            }
        }
    }

    fn drain_outgoing(&mut self, carrier: Carrier) {
        let Some(o) = self.outbound.get_mut(&carrier) else {
            return;
        };
        let mut finished = None;
        loop {
            while let Some(m) = o.tx.poll_transmit() {
                self.out.push_back((carrier, m));
            }
            let Some(ev) = o.tx.poll_event() else { break };
            match ev {
                SenderEvent::Accepted { offsets } => {
                    let resumed =
                        o.tx.entries()
                            .iter()
                            .zip(&offsets)
                            .map(|(e, off)| (*off).min(e.size()))
                            .sum();
                    o.progress.send_modify(|p| {
                        p.accepted = true;
                        p.resumed = resumed;
                    });
                    let (ptx, prx) = mpsc::channel(READ_AHEAD);
                    let files = std::mem::take(&mut o.files);
                    let wake = self.wake.clone();
                    tokio::task::spawn_blocking(move || read_files(files, offsets, ptx, wake));
                    o.pieces = Some(prx);
                }
                SenderEvent::FileSent { .. } => {}
                SenderEvent::Finished(out) => finished = Some(out),
            }
        }
        let (sent, acked) = o.tx.progress();
        let all_sent = o.tx.poll_need().is_none() && o.pieces.is_some();
        let (key, resumed) = (o.key, o.progress.borrow().resumed);
        if let Some(a) = self
            .cfg
            .board
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .active
            .get_mut(&key)
        {
            a.resumed = resumed;
            a.done = resumed + acked;
        }
        o.progress.send_if_modified(|p| {
            let changed = p.sent != sent || p.acked != acked || (all_sent && !p.all_sent);
            p.sent = sent;
            p.acked = acked;
            p.all_sent |= all_sent && p.accepted;
            changed
        });
        if let Some(out) = finished {
            if let Some(mut o) = self.outbound.remove(&carrier) {
                let text = match &o.detail {
                    Some(d) => d.clone(),
                    None => outcome_text(&out),
                };
                self.board().finish(o.key, out == Outcome::Done, text);
                if out == Outcome::Done {
                    bump(&self.counters.files_sent);
                } else {
                    bump(&self.counters.transfers_failed);
                }
                if let Some(d) = o.done.take() {
                    let _ = d.send((out, o.detail.take()));
                }
            }
            self.ended.push(carrier);
        }
    }

    /// Hands the next file bytes of the transfer on `carrier` to its sender
    /// (the caller checked the carrier has room). False when nothing was
    /// ready (waiting for the window or the reader).
    pub fn pump(&mut self, carrier: Carrier) -> bool {
        let Some(o) = self.outbound.get_mut(&carrier) else {
            return false;
        };
        let Some(need) = o.tx.poll_need() else {
            return false;
        };
        let (piece, start) = match o.held.take() {
            Some(h) => h,
            None => {
                let Some(rx) = o.pieces.as_mut() else {
                    return false;
                };
                match rx.try_recv() {
                    Ok(Ok(p)) => (p, 0),
                    Ok(Err(e)) => {
                        o.detail = Some(e);
                        o.tx.cancel(Reason::Io);
                        self.drain_outgoing(carrier);
                        return true;
                    }
                    Err(mpsc::error::TryRecvError::Empty) => return false,
                    Err(mpsc::error::TryRecvError::Disconnected) => {
                        o.detail = Some("the file reader stopped".into());
                        o.tx.cancel(Reason::Io);
                        self.drain_outgoing(carrier);
                        return true;
                    }
                }
            }
        };
        let offset = piece.offset + start as u64;
        if piece.entry != need.entry || offset != need.offset {
            o.detail = Some("file reader out of step".into());
            o.tx.cancel(Reason::Io);
            self.drain_outgoing(carrier);
            return true;
        }
        let n = need.len.min(piece.data.len() - start);
        if o.tx
            .push_data(need.entry, need.offset, &piece.data[start..start + n])
            .is_err()
        {
            o.detail = Some("sender refused the data".into());
            o.tx.cancel(Reason::Protocol);
        } else if start + n < piece.data.len() {
            o.held = Some((piece, start + n));
        }
        self.drain_outgoing(carrier);
        true
    }

    /// The carrier of a transfer went away (its stream was reset or closed
    /// early): the transfer ends without further messages.
    pub async fn carrier_gone(&mut self, carrier: Carrier) {
        if self.waiting.contains_key(&carrier) {
            self.drop_waiting(carrier, "its stream closed");
        }
        if let Some(inc) = self.inbound.remove(&carrier) {
            self.board().finish(
                inc.key,
                false,
                "interrupted: its stream closed (partial files kept for a resume)".into(),
            );
            bump(&self.counters.transfers_failed);
            if let Some(w) = &inc.writer {
                let _ = w.send(WriterMsg::Hold).await;
            }
            if let Some(n) = self.limiter.allow(LogKind::TransfersAborted) {
                info!(
                    "transfer {} from peer={}: its stream closed early; partial files kept {} min for a resume{}",
                    inc.name,
                    self.peer,
                    RESUME_TTL.as_secs() / 60,
                    suppressed(n)
                );
            }
        }
        if let Some(mut o) = self.outbound.remove(&carrier) {
            bump(&self.counters.transfers_failed);
            self.board()
                .finish(o.key, false, "the receiver closed the stream".into());
            if let Some(d) = o.done.take() {
                let detail = Some("the receiver closed the transfer's stream".to_string());
                let _ = d.send((
                    Outcome::Cancelled {
                        by: Side::Peer,
                        reason: Reason::Protocol,
                        entry: None,
                    },
                    detail,
                ));
            }
        }
    }

    /// Periodic work: cancels accepted incoming transfers idle for the
    /// configured time, and outgoing ones whose control client went away.
    pub async fn tick(&mut self) {
        self.cfg
            .resume
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .expire();
        // The daemon's expiry task answers expired offers; should its
        // answer be lost, an offer still waiting well past its TTL is
        // denied here.
        let late: Vec<Carrier> = self
            .waiting
            .iter()
            .filter(|(_, w)| w.since.elapsed() > w.ttl + Duration::from_secs(10))
            .map(|(c, _)| *c)
            .collect();
        for c in late {
            if let Some(w) = self.waiting.get(&c) {
                let id = w.id;
                self.cfg
                    .consent
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .deny(id);
            }
            self.on_answer(c, Answer::Deny(dsoftbus::node::Deny::Expired))
                .await;
        }
        let idle = self.cfg.idle;
        let stale: Vec<Carrier> = self
            .inbound
            .iter()
            .filter(|(_, i)| i.held_end.is_none() && i.last.elapsed() >= idle)
            .map(|(c, _)| *c)
            .collect();
        for c in stale {
            if let Some(inc) = self.inbound.get_mut(&c) {
                inc.rx.cancel(Reason::Expired);
                if let Some(n) = self.limiter.allow(LogKind::TransferIdle) {
                    warn!(
                        "transfer {} from peer={}: no data for {} s; cancelled, partial files deleted{}",
                        inc.name,
                        self.peer,
                        idle.as_secs(),
                        suppressed(n)
                    );
                }
            }
            self.drain_incoming(c).await;
        }
        let gone: Vec<Carrier> = self
            .outbound
            .iter()
            .filter(|(_, o)| o.done.as_ref().is_none_or(|d| d.is_closed()))
            .map(|(c, _)| *c)
            .collect();
        for c in gone {
            if let Some(o) = self.outbound.get_mut(&c) {
                o.tx.cancel(Reason::Declined);
            }
            self.drain_outgoing(c);
        }
    }

    /// The session is gone: incoming transfers keep their partial files in
    /// the resume store; outgoing ones learn it when the engine is dropped.
    pub async fn session_lost(&mut self) {
        let waiting: Vec<Carrier> = self.waiting.keys().copied().collect();
        for c in waiting {
            self.drop_waiting(c, "the session ended");
        }
        for c in self.outgoing() {
            if let Some(o) = self.outbound.get(&c) {
                let key = o.key;
                self.board().finish(key, false, "the session ended".into());
            }
        }
        if self.inbound.is_empty() {
            return;
        }
        for inc in self.inbound.values() {
            if let Some(w) = &inc.writer {
                let _ = w.send(WriterMsg::Hold).await;
            }
            self.board().finish(
                inc.key,
                false,
                "interrupted: the session ended (partial files kept for a resume)".into(),
            );
        }
        if let Some(n) = self.limiter.allow(LogKind::TransfersAborted) {
            info!(
                "{} incoming transfer(s) from peer={} interrupted; partial files kept {} min for a resume (send again){}",
                self.inbound.len(),
                self.peer,
                RESUME_TTL.as_secs() / 60,
                suppressed(n)
            );
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use dsoftbus::transfer::name::MAX_NAME;

    fn inbox_files(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    fn job(
        dir: &Path,
        entries: Vec<Entry>,
    ) -> (
        mpsc::Sender<WriterMsg>,
        mpsc::Receiver<Report>,
        std::thread::JoinHandle<()>,
    ) {
        let j = WriteJob::new(Carrier::Data(1), dir, entries).unwrap();
        let (tx, rx) = mpsc::channel(64);
        let (rtx, rrx) = mpsc::channel(64);
        let h = std::thread::spawn(move || j.run(rx, rtx));
        (tx, rrx, h)
    }

    fn file(path: &str, data: &[u8]) -> Entry {
        Entry {
            path: path.into(),
            kind: EntryKind::File {
                size: data.len() as u64,
                sha256: Sha256::digest(data).into(),
            },
        }
    }

    #[test]
    fn verified_files_land_under_their_paths_and_a_taken_root_gets_a_new_name() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("docs")).unwrap();
        let entries = vec![
            Entry {
                path: "docs".into(),
                kind: EntryKind::Dir,
            },
            Entry {
                path: "docs/empty".into(),
                kind: EntryKind::Dir,
            },
            file("docs/sub/a.txt", b"hello"),
            file("top.txt", b""),
        ];
        let (tx, mut rx, h) = job(dir.path(), entries);
        tx.blocking_send(WriterMsg::Dir(0)).unwrap();
        tx.blocking_send(WriterMsg::Dir(1)).unwrap();
        tx.blocking_send(WriterMsg::Data {
            entry: 2,
            data: b"hel".to_vec(),
        })
        .unwrap();
        tx.blocking_send(WriterMsg::Data {
            entry: 2,
            data: b"lo".to_vec(),
        })
        .unwrap();
        tx.blocking_send(WriterMsg::Verified(2)).unwrap();
        tx.blocking_send(WriterMsg::Verified(3)).unwrap();
        tx.blocking_send(WriterMsg::Barrier).unwrap();
        drop(tx);
        h.join().unwrap();
        let mut stored = Vec::new();
        while let Ok(r) = rx.try_recv() {
            match r {
                Report::Stored { path, .. } => stored.push(path),
                Report::Flushed(_) => {}
                Report::Failed { error, .. } => panic!("{error}"),
            }
        }
        assert_eq!(stored.len(), 2);
        // "docs" was taken: the transfer's tree went to "docs.1".
        assert_eq!(
            fs::read(dir.path().join("docs.1/sub/a.txt")).unwrap(),
            b"hello"
        );
        assert!(dir.path().join("docs.1/empty").is_dir());
        assert_eq!(fs::read(dir.path().join("top.txt")).unwrap(), b"");
        assert_eq!(inbox_files(dir.path()), vec!["docs", "docs.1", "top.txt"]);
    }

    #[test]
    fn an_unverified_file_leaves_no_partial_file() {
        let dir = tempfile::tempdir().unwrap();
        let (tx, _rx, h) = job(dir.path(), vec![file("f.bin", b"hello world")]);
        tx.blocking_send(WriterMsg::Data {
            entry: 0,
            data: b"hello".to_vec(),
        })
        .unwrap();
        tx.blocking_send(WriterMsg::Barrier).unwrap();
        // The session goes away (cancel, lost session, hash mismatch).
        drop(tx);
        h.join().unwrap();
        assert!(
            inbox_files(dir.path()).is_empty(),
            "{:?}",
            inbox_files(dir.path())
        );
    }

    #[test]
    fn a_failed_store_reports_and_cleans_up() {
        let dir = tempfile::tempdir().unwrap();
        // "a" is a file, so "a/b" cannot be created... inside a fresh root
        // this cannot happen, so plant a file where a subdirectory goes
        // after the root was created.
        let (tx, mut rx, h) = job(dir.path(), vec![file("r/x/b", b"1"), file("r/x", b"2")]);
        tx.blocking_send(WriterMsg::Data {
            entry: 1,
            data: b"2".to_vec(),
        })
        .unwrap();
        tx.blocking_send(WriterMsg::Verified(1)).unwrap();
        tx.blocking_send(WriterMsg::Data {
            entry: 0,
            data: b"1".to_vec(),
        })
        .unwrap();
        tx.blocking_send(WriterMsg::Verified(0)).unwrap();
        drop(tx);
        h.join().unwrap();
        let mut failed = false;
        while let Ok(r) = rx.try_recv() {
            failed |= matches!(r, Report::Failed { .. });
        }
        assert!(failed);
        assert!(!inbox_files(dir.path()).iter().any(|f| is_part_name(f)));
    }

    #[test]
    fn a_held_transfer_resumes_its_prefix_and_the_store_is_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let body: Vec<u8> = (0..100_000u32).map(|i| (i % 253) as u8).collect();
        let entries = vec![file("done.txt", b"first"), file("big.bin", &body)];
        let store = Arc::new(Mutex::new(ResumeStore::default()));
        // First attempt: one file stored, 40 000 bytes of the other, then
        // the session is lost.
        let (tx, _rx, h) = {
            let j = WriteJob::new(Carrier::Data(1), dir.path(), entries.clone())
                .unwrap()
                .hold_to(store.clone(), "alpha".into());
            let (tx, rx) = mpsc::channel(64);
            let (rtx, rrx) = mpsc::channel(64);
            (tx, rrx, std::thread::spawn(move || j.run(rx, rtx)))
        };
        tx.blocking_send(WriterMsg::Data {
            entry: 0,
            data: b"first".to_vec(),
        })
        .unwrap();
        tx.blocking_send(WriterMsg::Verified(0)).unwrap();
        tx.blocking_send(WriterMsg::Data {
            entry: 1,
            data: body[..40_000].to_vec(),
        })
        .unwrap();
        tx.blocking_send(WriterMsg::Hold).unwrap();
        drop(tx);
        h.join().unwrap();
        assert_eq!(store.lock().unwrap().bytes(), 40_000);
        // Another peer, or other entries: nothing to resume.
        assert!(store.lock().unwrap().take("beta", &entries).is_none());
        assert!(store.lock().unwrap().take("alpha", &entries[1..]).is_none());
        let mut held = store.lock().unwrap().take("alpha", &entries).unwrap();
        let offer = wire::Message::Offer {
            id: 9,
            entries: entries.clone(),
        }
        .encode();
        let mut rx = Receiver::new(ReceiverConfig::default());
        rx.handle(&offer).unwrap();
        assert_eq!(feed_prefix(&mut rx, &mut held), Some(5 + 40_000));
        rx.accept().unwrap();
        let accept = rx.poll_transmit().unwrap();
        match wire::decode(&accept).unwrap() {
            wire::Message::Accept { offsets, .. } => assert_eq!(offsets, vec![5, 40_000]),
            m => panic!("{m:?}"),
        }
        // The writer continues the partial file; the stored file is not
        // stored twice.
        let j = WriteJob::new(Carrier::Data(2), dir.path(), entries)
            .unwrap()
            .resume_from(&mut held)
            .unwrap();
        drop(held);
        let (tx, rxw) = mpsc::channel(64);
        let (rtx, _rrx) = mpsc::channel(64);
        let h = std::thread::spawn(move || j.run(rxw, rtx));
        tx.blocking_send(WriterMsg::Verified(0)).unwrap();
        tx.blocking_send(WriterMsg::Data {
            entry: 1,
            data: body[40_000..].to_vec(),
        })
        .unwrap();
        tx.blocking_send(WriterMsg::Verified(1)).unwrap();
        drop(tx);
        h.join().unwrap();
        assert_eq!(inbox_files(dir.path()), vec!["big.bin", "done.txt"]);
        assert_eq!(fs::read(dir.path().join("big.bin")).unwrap(), body);

        // Bounded: the oldest held transfers go first.
        let mut s = ResumeStore::default();
        for i in 0..RESUME_MAX_TRANSFERS + 5 {
            let part = dir.path().join(format!(".dsoftbus-x-{i}.part"));
            fs::write(&part, b"x").unwrap();
            let mut parts = HashMap::new();
            parts.insert(0, (part, 1));
            s.put(Held {
                peer: format!("p{i}"),
                entries: vec![],
                parts,
                stored: HashMap::new(),
                roots: HashMap::new(),
                at: StdInstant::now(),
            });
        }
        assert_eq!(s.held.len(), RESUME_MAX_TRANSFERS);
        assert!(s.take("p0", &[]).is_none());
        assert!(s
            .take(&format!("p{}", RESUME_MAX_TRANSFERS + 4), &[])
            .is_some());
        // Evicted and taken-and-dropped partial files are deleted.
        let parts = inbox_files(dir.path())
            .iter()
            .filter(|f| f.starts_with(".dsoftbus-x-"))
            .count();
        assert_eq!(parts, RESUME_MAX_TRANSFERS - 1);
    }

    #[test]
    fn the_board_keeps_bounded_history_and_answers() {
        let mut b = Board::default();
        let keys: Vec<u64> = (0..HISTORY as u64 + 10)
            .map(|i| b.start(i % 2 == 0, "p", &format!("f{i}"), 100, 10))
            .collect();
        assert_eq!(b.active.len(), HISTORY + 10);
        b.progress(keys[0], 60);
        assert_eq!(b.active[&keys[0]].done, 60);
        for k in &keys {
            b.finish(*k, true, "done".into());
        }
        assert!(b.active.is_empty());
        assert_eq!(b.history.len(), HISTORY);
        // The oldest went first.
        assert_eq!(b.history.front().map(|r| r.name.as_str()), Some("f10"));
        for id in 0..ANSWERED as u32 + 5 {
            b.answered(id, "denied");
        }
        assert_eq!(b.was_answered(0), None);
        assert_eq!(b.was_answered(ANSWERED as u32 + 4), Some("denied"));
        assert_eq!(b.answered.len(), ANSWERED);
    }

    #[test]
    fn reader_sends_files_from_their_offsets_and_notices_a_shrunk_file() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a");
        let body: Vec<u8> = (0..150_000u32).map(|i| i as u8).collect();
        fs::write(&a, &body).unwrap();
        let (tx, mut rx) = mpsc::channel(1024);
        read_files(
            vec![Some((a.clone(), body.len() as u64)), None],
            vec![1000, 0],
            tx,
            Arc::new(Notify::new()),
        );
        let mut got = Vec::new();
        let mut next = 1000u64;
        while let Ok(Ok(p)) = rx.try_recv() {
            assert_eq!((p.entry, p.offset), (0, next));
            next += p.data.len() as u64;
            got.extend(p.data);
        }
        assert_eq!(got, body[1000..]);
        let (tx, mut rx) = mpsc::channel(1024);
        read_files(
            vec![Some((a, body.len() as u64 + 1))],
            vec![0],
            tx,
            Arc::new(Notify::new()),
        );
        let mut err = None;
        while let Ok(p) = rx.try_recv() {
            if let Err(e) = p {
                err = Some(e);
            }
        }
        assert!(err.unwrap().contains("shrank"));
    }

    #[test]
    fn candidates_fit_name_max() {
        let long = "a".repeat(MAX_NAME);
        assert_eq!(candidate_name(&long, 0), long);
        for i in [1, 9, 10, 999] {
            let c = candidate_name(&long, i);
            assert!(c.len() <= MAX_NAME, "{i}: {}", c.len());
            assert!(c.ends_with(&format!(".{i}")));
        }
        // Multi-byte stems are cut on a character boundary.
        let wide = "é".repeat(127) + "x"; // 255 bytes
        let c = candidate_name(&wide, 1);
        assert!(c.len() <= MAX_NAME && c.ends_with(".1"), "{c}");
        assert_eq!(candidate_name("f.txt", 2), "f.txt.2");
    }

    #[test]
    fn a_255_byte_name_that_collides_is_stored_as_name_dot_1() {
        let dir = tempfile::tempdir().unwrap();
        let name = "n".repeat(MAX_NAME);
        fs::write(dir.path().join(&name), b"first").unwrap();
        let part = dir.path().join(".dsoftbus-1-1.part");
        fs::write(&part, b"second").unwrap();
        let dest = store_no_replace(&part, dir.path(), &name).unwrap();
        assert_eq!(fs::read(dir.path().join(&name)).unwrap(), b"first");
        assert_eq!(fs::read(&dest).unwrap(), b"second");
        assert!(!part.exists());
    }

    #[test]
    fn concurrent_same_name_stores_never_replace_each_other() {
        // The race of issue 11: several verified files for one name stored
        // at the same moment. Each must end up under its own name.
        let dir = tempfile::tempdir().unwrap();
        let rounds = 100;
        let writers = 8;
        for round in 0..rounds {
            let barrier = Arc::new(std::sync::Barrier::new(writers));
            let threads: Vec<_> = (0..writers)
                .map(|w| {
                    let dir = dir.path().to_path_buf();
                    let barrier = barrier.clone();
                    std::thread::spawn(move || {
                        let part = dir.join(format!(".dsoftbus-{round}-{w}.part"));
                        fs::write(&part, format!("{round}/{w}")).unwrap();
                        barrier.wait();
                        store_no_replace(&part, &dir, "same.txt").unwrap()
                    })
                })
                .collect();
            for t in threads {
                t.join().unwrap();
            }
        }
        let files = inbox_files(dir.path());
        assert_eq!(files.len(), rounds * writers, "a stored file was replaced");
        let mut contents: Vec<String> = files
            .iter()
            .map(|f| fs::read_to_string(dir.path().join(f)).unwrap())
            .collect();
        contents.sort();
        contents.dedup();
        assert_eq!(contents.len(), rounds * writers);
    }

    #[test]
    fn stale_partial_files_are_removed_and_others_kept() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(".dsoftbus-0000002a-12345678.part"), b"x").unwrap();
        fs::write(dir.path().join("keep.part"), b"x").unwrap();
        fs::write(dir.path().join("keep.txt"), b"x").unwrap();
        assert_eq!(remove_stale_parts(dir.path()).unwrap(), 1);
        assert_eq!(inbox_files(dir.path()), vec!["keep.part", "keep.txt"]);
    }

    #[test]
    fn inbox_is_created_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let inbox = dir.path().join("a/inbox");
        create_inbox(&inbox).unwrap();
        let mode = fs::metadata(&inbox).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
    }
}
