//! File transfer inside session DATA messages.
//!
//! Every application message is one `Connection::send_data` payload (at most
//! 65 518 bytes) whose first byte is its kind; integers are big-endian, `id`
//! is the sender's transfer id (u32):
//!
//! | kind | name | body |
//! | --- | --- | --- |
//! | 0x10 | OFFER  | id, size u64, name length u16, name (UTF-8) |
//! | 0x11 | ACCEPT | id |
//! | 0x12 | REJECT | id, reason (UTF-8, rest of message) |
//! | 0x13 | CHUNK  | id, offset u64, bytes (1..=65 504) |
//! | 0x14 | END    | id, size u64, SHA-256 of the whole file (32) |
//! | 0x15 | ACK    | id, bytes written so far u64 (receiver → sender) |
//! | 0x16 | DONE   | id, status u8 (0 ok, 1 integrity mismatch, 2 I/O error, 3 protocol error), message |
//! | 0x17 | CANCEL | id (sender gives up; receiver deletes the partial file) |
//!
//! Flow: OFFER → ACCEPT | REJECT; CHUNKs in order (offset = bytes sent
//! before), never more than [`WINDOW`] bytes ahead of the last ACK; END with
//! the SHA-256; the receiver compares size and hash and answers DONE. On a
//! mismatch, an error, a CANCEL or a lost session the receiver deletes its
//! partial file; only a verified file is renamed into the inbox.
//! Unknown kinds are ignored (logged), so later versions can add messages.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, Notify};

pub const K_OFFER: u8 = 0x10;
pub const K_ACCEPT: u8 = 0x11;
pub const K_REJECT: u8 = 0x12;
pub const K_CHUNK: u8 = 0x13;
pub const K_END: u8 = 0x14;
pub const K_ACK: u8 = 0x15;
pub const K_DONE: u8 = 0x16;
pub const K_CANCEL: u8 = 0x17;

/// Bytes of file data per CHUNK (fits one DATA message with its 13-byte header).
pub const CHUNK_LEN: usize = 65_504;
/// Most unacknowledged bytes a sender keeps in flight.
pub const WINDOW: u64 = 16 << 20;
/// The receiver acknowledges at least every this many bytes.
pub const ACK_EVERY: u64 = 1 << 20;
/// Longest file name in an OFFER.
pub const MAX_NAME: usize = 255;

/// DONE statuses.
pub const DONE_OK: u8 = 0;
pub const DONE_MISMATCH: u8 = 1;
pub const DONE_IO: u8 = 2;
pub const DONE_PROTOCOL: u8 = 3;

/// A decoded application message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AppMsg {
    Offer {
        id: u32,
        size: u64,
        name: String,
    },
    Accept {
        id: u32,
    },
    Reject {
        id: u32,
        reason: String,
    },
    Chunk {
        id: u32,
        offset: u64,
        data: Vec<u8>,
    },
    End {
        id: u32,
        size: u64,
        sha256: [u8; 32],
    },
    Ack {
        id: u32,
        received: u64,
    },
    Done {
        id: u32,
        status: u8,
        message: String,
    },
    Cancel {
        id: u32,
    },
}

/// Why a message did not decode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("empty message")]
    Empty,
    #[error("unknown kind {0:#04x}")]
    UnknownKind(u8),
    #[error("truncated or malformed {0:#04x} message")]
    Malformed(u8),
    /// An OFFER that is well formed except that its name is not UTF-8: the
    /// receiver refuses it by id (a REJECT), instead of ignoring it.
    #[error("offer {0:08x}: the file name is not valid UTF-8")]
    NonUtf8Name(u32),
}

impl AppMsg {
    /// The transfer this message belongs to.
    pub fn id(&self) -> u32 {
        match self {
            AppMsg::Offer { id, .. }
            | AppMsg::Accept { id }
            | AppMsg::Reject { id, .. }
            | AppMsg::Chunk { id, .. }
            | AppMsg::End { id, .. }
            | AppMsg::Ack { id, .. }
            | AppMsg::Done { id, .. }
            | AppMsg::Cancel { id } => *id,
        }
    }

    /// Encodes the message (one DATA payload).
    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(64);
        let head = |v: &mut Vec<u8>, k: u8, id: u32| {
            v.push(k);
            v.extend_from_slice(&id.to_be_bytes());
        };
        match self {
            AppMsg::Offer { id, size, name } => {
                head(&mut v, K_OFFER, *id);
                v.extend_from_slice(&size.to_be_bytes());
                let n = &name.as_bytes()[..name.len().min(MAX_NAME)];
                v.extend_from_slice(&(n.len() as u16).to_be_bytes());
                v.extend_from_slice(n);
            }
            AppMsg::Accept { id } => head(&mut v, K_ACCEPT, *id),
            AppMsg::Reject { id, reason } => {
                head(&mut v, K_REJECT, *id);
                v.extend_from_slice(&reason.as_bytes()[..reason.len().min(1024)]);
            }
            AppMsg::Chunk { id, offset, data } => return encode_chunk(*id, *offset, data),
            AppMsg::End { id, size, sha256 } => {
                head(&mut v, K_END, *id);
                v.extend_from_slice(&size.to_be_bytes());
                v.extend_from_slice(sha256);
            }
            AppMsg::Ack { id, received } => {
                head(&mut v, K_ACK, *id);
                v.extend_from_slice(&received.to_be_bytes());
            }
            AppMsg::Done {
                id,
                status,
                message,
            } => {
                head(&mut v, K_DONE, *id);
                v.push(*status);
                v.extend_from_slice(&message.as_bytes()[..message.len().min(1024)]);
            }
            AppMsg::Cancel { id } => head(&mut v, K_CANCEL, *id),
        }
        v
    }

    /// Decodes one DATA payload. Total: every input gives a value or an error.
    pub fn decode(b: &[u8]) -> Result<AppMsg, DecodeError> {
        let (&kind, rest) = b.split_first().ok_or(DecodeError::Empty)?;
        if !(K_OFFER..=K_CANCEL).contains(&kind) {
            return Err(DecodeError::UnknownKind(kind));
        }
        let bad = DecodeError::Malformed(kind);
        let u32_at =
            |s: &[u8]| -> Option<u32> { Some(u32::from_be_bytes(s.get(..4)?.try_into().ok()?)) };
        let u64_at =
            |s: &[u8]| -> Option<u64> { Some(u64::from_be_bytes(s.get(..8)?.try_into().ok()?)) };
        let id = u32_at(rest).ok_or(bad)?;
        let body = &rest[4..];
        let text = |s: &[u8]| String::from_utf8_lossy(s).into_owned();
        Ok(match kind {
            K_OFFER => {
                let size = u64_at(body).ok_or(bad)?;
                let len = body
                    .get(8..10)
                    .map(|l| usize::from(u16::from_be_bytes([l[0], l[1]])))
                    .ok_or(bad)?;
                let name = body.get(10..).filter(|n| n.len() == len).ok_or(bad)?;
                let name = std::str::from_utf8(name)
                    .map_err(|_| DecodeError::NonUtf8Name(id))?
                    .to_string();
                AppMsg::Offer { id, size, name }
            }
            K_ACCEPT if body.is_empty() => AppMsg::Accept { id },
            K_REJECT => AppMsg::Reject {
                id,
                reason: text(body),
            },
            K_CHUNK => {
                let offset = u64_at(body).ok_or(bad)?;
                let data = &body[8..];
                if data.is_empty() || data.len() > CHUNK_LEN {
                    return Err(bad);
                }
                AppMsg::Chunk {
                    id,
                    offset,
                    data: data.to_vec(),
                }
            }
            K_END if body.len() == 40 => {
                let size = u64_at(body).ok_or(bad)?;
                let mut sha256 = [0u8; 32];
                sha256.copy_from_slice(&body[8..40]);
                AppMsg::End { id, size, sha256 }
            }
            K_ACK if body.len() == 8 => AppMsg::Ack {
                id,
                received: u64_at(body).ok_or(bad)?,
            },
            K_DONE if !body.is_empty() => AppMsg::Done {
                id,
                status: body[0],
                message: text(&body[1..]),
            },
            K_CANCEL if body.is_empty() => AppMsg::Cancel { id },
            _ => return Err(bad),
        })
    }
}

/// Encodes a CHUNK without an intermediate `AppMsg`.
pub fn encode_chunk(id: u32, offset: u64, data: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(13 + data.len());
    v.push(K_CHUNK);
    v.extend_from_slice(&id.to_be_bytes());
    v.extend_from_slice(&offset.to_be_bytes());
    v.extend_from_slice(data);
    v
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

/// Work for a receive writer thread.
pub enum WriterMsg {
    Data(Vec<u8>),
    End { size: u64, sha256: [u8; 32] },
    Cancel,
}

/// How a receive ended, reported back to the session.
#[derive(Debug)]
pub struct WriterDone {
    pub id: u32,
    pub status: u8,
    pub message: String,
}

/// An incoming transfer: its partial file and where it will go.
pub struct ReceiveJob {
    pub id: u32,
    pub inbox: PathBuf,
    pub name: String,
    pub size: u64,
    pub part: PathBuf,
    pub file: File,
    /// Bytes written so far (read by the session to send ACKs).
    pub written: Arc<AtomicU64>,
    /// Poked every [`ACK_EVERY`] bytes.
    pub ack_notify: Arc<Notify>,
    /// Set once the partial file got its final name.
    stored: bool,
}

impl Drop for ReceiveJob {
    /// Every way out that did not store the file (errors, cancel, a lost
    /// session, a panic in the writer) deletes the partial file.
    fn drop(&mut self) {
        if !self.stored {
            let _ = fs::remove_file(&self.part);
        }
    }
}

impl ReceiveJob {
    /// Creates the partial file `<inbox>/.dsoftbus-<id>-<n>.part` (0600).
    pub fn create(
        inbox: &Path,
        id: u32,
        name: String,
        size: u64,
        ack_notify: Arc<Notify>,
    ) -> std::io::Result<Self> {
        create_inbox(inbox)?;
        let part = inbox.join(format!(".dsoftbus-{id:08x}-{:08x}.part", fastrand::u32(..)));
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&part)?;
        Ok(ReceiveJob {
            id,
            inbox: inbox.to_path_buf(),
            name,
            size,
            part,
            file,
            written: Arc::new(AtomicU64::new(0)),
            ack_notify,
            stored: false,
        })
    }

    /// Runs on a blocking thread: writes and hashes chunks, verifies at END,
    /// renames on success, deletes the partial file otherwise. Returns `None`
    /// when the transfer was cancelled or the session went away.
    pub fn run(mut self, mut rx: mpsc::Receiver<WriterMsg>) -> Option<WriterDone> {
        let mut hasher = Sha256::new();
        let mut written: u64 = 0;
        let mut last_ack: u64 = 0;
        let done = |s: &Self, status, message: String, _path: Option<PathBuf>| WriterDone {
            id: s.id,
            status,
            message,
        };
        loop {
            match rx.blocking_recv() {
                Some(WriterMsg::Data(d)) => {
                    if let Err(e) = self.file.write_all(&d) {
                        let _ = fs::remove_file(&self.part);
                        return Some(done(&self, DONE_IO, format!("write failed: {e}"), None));
                    }
                    hasher.update(&d);
                    written += d.len() as u64;
                    self.written.store(written, Ordering::Release);
                    if written - last_ack >= ACK_EVERY {
                        last_ack = written;
                        self.ack_notify.notify_one();
                    }
                }
                Some(WriterMsg::End { size, sha256 }) => {
                    let sync = self.file.sync_all();
                    let got: [u8; 32] = hasher.finalize().into();
                    if size != written || size != self.size {
                        let _ = fs::remove_file(&self.part);
                        let m = format!(
                            "size mismatch: offered {}, announced {size}, received {written}",
                            self.size
                        );
                        return Some(done(&self, DONE_PROTOCOL, m, None));
                    }
                    if got != sha256 {
                        let _ = fs::remove_file(&self.part);
                        let m = format!(
                            "integrity check failed: sha256 {} != sent {}; partial file deleted",
                            hex::encode(got),
                            hex::encode(sha256)
                        );
                        return Some(done(&self, DONE_MISMATCH, m, None));
                    }
                    if let Err(e) = sync {
                        let _ = fs::remove_file(&self.part);
                        return Some(done(&self, DONE_IO, format!("fsync failed: {e}"), None));
                    }
                    let dest = match store_no_replace(&self.part, &self.inbox, &self.name) {
                        Ok(dest) => dest,
                        Err(e) => {
                            let _ = fs::remove_file(&self.part);
                            return Some(done(
                                &self,
                                DONE_IO,
                                format!("storing failed: {e}"),
                                None,
                            ));
                        }
                    };
                    self.stored = true;
                    let m = format!("stored {} (sha256 {})", dest.display(), hex::encode(got));
                    return Some(done(&self, DONE_OK, m, Some(dest)));
                }
                Some(WriterMsg::Cancel) | None => {
                    let _ = fs::remove_file(&self.part);
                    return None;
                }
            }
        }
    }
}

/// Reads a file in [`CHUNK_LEN`] pieces on a blocking thread, hashing as it
/// goes; the last message carries the digest.
pub enum ReadPiece {
    Data(Vec<u8>),
    Eof([u8; 32]),
    Error(String),
}

/// The file reader behind `dsoftbus send` (runs on a blocking thread).
pub fn read_file(mut f: File, tx: mpsc::Sender<ReadPiece>) {
    let mut hasher = Sha256::new();
    loop {
        let mut buf = vec![0u8; CHUNK_LEN];
        let mut n = 0;
        while n < CHUNK_LEN {
            match f.read(&mut buf[n..]) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    let _ = tx.blocking_send(ReadPiece::Error(e.to_string()));
                    return;
                }
            }
        }
        if n == 0 {
            let _ = tx.blocking_send(ReadPiece::Eof(hasher.finalize().into()));
            return;
        }
        buf.truncate(n);
        hasher.update(&buf);
        if tx.blocking_send(ReadPiece::Data(buf)).is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all() -> Vec<AppMsg> {
        vec![
            AppMsg::Offer {
                id: 7,
                size: 1 << 33,
                name: "a b.bin".into(),
            },
            AppMsg::Accept { id: 7 },
            AppMsg::Reject {
                id: 7,
                reason: "no inbox".into(),
            },
            AppMsg::Chunk {
                id: 7,
                offset: 99,
                data: vec![1, 2, 3],
            },
            AppMsg::End {
                id: 7,
                size: 3,
                sha256: [5; 32],
            },
            AppMsg::Ack { id: 7, received: 3 },
            AppMsg::Done {
                id: 7,
                status: DONE_MISMATCH,
                message: "bad".into(),
            },
            AppMsg::Cancel { id: 7 },
        ]
    }

    #[test]
    fn round_trip_every_kind() {
        for m in all() {
            assert_eq!(AppMsg::decode(&m.encode()), Ok(m));
        }
    }

    #[test]
    fn truncations_and_junk_are_errors_not_panics() {
        for m in all() {
            let e = m.encode();
            for n in 0..e.len() {
                let _ = AppMsg::decode(&e[..n]);
            }
        }
        assert_eq!(AppMsg::decode(&[]), Err(DecodeError::Empty));
        assert_eq!(AppMsg::decode(&[0x42]), Err(DecodeError::UnknownKind(0x42)));
        assert!(AppMsg::decode(&[K_ACCEPT, 0, 0, 0, 1, 9]).is_err());
        let mut big = encode_chunk(1, 0, &[0; CHUNK_LEN]);
        assert!(AppMsg::decode(&big).is_ok());
        big.push(0);
        assert!(AppMsg::decode(&big).is_err());
        for seed in 0..2000u64 {
            let mut rng = fastrand::Rng::with_seed(seed);
            let len = rng.usize(0..64);
            let v: Vec<u8> = (0..len).map(|_| rng.u8(..)).collect();
            let _ = AppMsg::decode(&v);
        }
    }

    #[test]
    fn names_are_sanitized() {
        assert_eq!(sanitize_name("../../etc/passwd").as_deref(), Some("passwd"));
        assert_eq!(sanitize_name("..").as_deref(), None);
        assert_eq!(sanitize_name(".bashrc").as_deref(), Some("bashrc"));
        assert_eq!(sanitize_name(" .bashrc").as_deref(), Some("bashrc"));
        assert_eq!(sanitize_name("\u{202E}.x ").as_deref(), Some("x"));
        assert_eq!(sanitize_name(". . ").as_deref(), None);
        assert_eq!(sanitize_name("a\nb").as_deref(), Some("ab"));
        assert_eq!(sanitize_name("C:\\x\\y.txt").as_deref(), Some("y.txt"));
        assert!(sanitize_name(&"é".repeat(200)).unwrap().len() <= MAX_NAME);
    }

    fn job(dir: &Path, size: u64) -> ReceiveJob {
        ReceiveJob::create(dir, 1, "f.bin".into(), size, Arc::new(Notify::new())).unwrap()
    }

    fn inbox_files(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn verified_file_is_renamed_into_the_inbox() {
        let dir = tempfile::tempdir().unwrap();
        let (tx, rx) = mpsc::channel(8);
        tx.try_send(WriterMsg::Data(b"hello ".to_vec())).unwrap();
        tx.try_send(WriterMsg::Data(b"world".to_vec())).unwrap();
        let sha: [u8; 32] = Sha256::digest(b"hello world").into();
        tx.try_send(WriterMsg::End {
            size: 11,
            sha256: sha,
        })
        .unwrap();
        let d = job(dir.path(), 11).run(rx).unwrap();
        assert_eq!(d.status, DONE_OK, "{}", d.message);
        assert_eq!(fs::read(dir.path().join("f.bin")).unwrap(), b"hello world");
        assert_eq!(inbox_files(dir.path()), vec!["f.bin"]);
    }

    #[test]
    fn hash_mismatch_deletes_the_partial_file() {
        let dir = tempfile::tempdir().unwrap();
        let (tx, rx) = mpsc::channel(8);
        tx.try_send(WriterMsg::Data(b"hello world".to_vec()))
            .unwrap();
        tx.try_send(WriterMsg::End {
            size: 11,
            sha256: [0; 32],
        })
        .unwrap();
        let d = job(dir.path(), 11).run(rx).unwrap();
        assert_eq!(d.status, DONE_MISMATCH);
        assert!(d.message.contains("integrity check failed"));
        assert!(
            inbox_files(dir.path()).is_empty(),
            "partial file left behind"
        );
    }

    #[test]
    fn lost_session_deletes_the_partial_file() {
        let dir = tempfile::tempdir().unwrap();
        let (tx, rx) = mpsc::channel(8);
        tx.try_send(WriterMsg::Data(b"hel".to_vec())).unwrap();
        drop(tx);
        assert!(job(dir.path(), 11).run(rx).is_none());
        assert!(inbox_files(dir.path()).is_empty());
    }

    #[test]
    fn bidi_and_format_characters_are_dropped() {
        // U+202E RIGHT-TO-LEFT OVERRIDE would display "invoice_exe.pdf" as
        // "invoice_fdp.exe"; zero-width and BOM characters hide in names.
        assert_eq!(
            sanitize_name("invoice_\u{202E}fdp.exe").as_deref(),
            Some("invoice_fdp.exe")
        );
        assert_eq!(
            sanitize_name("\u{FEFF}a\u{200B}b\u{2066}c\u{2069}\u{E0041}.txt").as_deref(),
            Some("abc.txt")
        );
        // C1 controls (U+0080..U+009F) and DEL go too.
        assert_eq!(sanitize_name("a\u{85}b\u{7f}c").as_deref(), Some("abc"));
        assert_eq!(sanitize_name("\u{202E}\u{202C}").as_deref(), None);
        // Ordinary non-ASCII letters stay.
        assert_eq!(sanitize_name("résumé.pdf").as_deref(), Some("résumé.pdf"));
    }

    #[test]
    fn non_utf8_offer_name_is_its_own_error() {
        let mut m = AppMsg::Offer {
            id: 0x0102_0304,
            size: 3,
            name: "ab".into(),
        }
        .encode();
        let n = m.len();
        m[n - 1] = 0xff;
        assert_eq!(
            AppMsg::decode(&m),
            Err(DecodeError::NonUtf8Name(0x0102_0304))
        );
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

    #[test]
    fn a_panicking_or_dropped_job_deletes_its_partial_file() {
        let dir = tempfile::tempdir().unwrap();
        let j = job(dir.path(), 11);
        assert_eq!(inbox_files(dir.path()).len(), 1);
        drop(j);
        assert!(inbox_files(dir.path()).is_empty());
    }
}
