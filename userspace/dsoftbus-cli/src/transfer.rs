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
                let name = std::str::from_utf8(name).map_err(|_| bad)?.to_string();
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

/// Makes an offered name safe to store: its last path component, no control
/// characters, no leading dot, at most 255 bytes. `None` if nothing is left.
pub fn sanitize_name(name: &str) -> Option<String> {
    let base = name.rsplit(['/', '\\']).next().unwrap_or("");
    let clean: String = base
        .chars()
        .filter(|c| !c.is_control())
        .collect::<String>()
        .trim_start_matches('.')
        .trim()
        .to_string();
    if clean.is_empty() {
        return None;
    }
    let mut end = clean.len().min(MAX_NAME);
    while !clean.is_char_boundary(end) {
        end -= 1;
    }
    Some(clean[..end].to_string())
}

/// A free name in `dir` for `name`: `name`, else `name.1`, `name.2`, ...
fn free_name(dir: &Path, name: &str) -> Option<PathBuf> {
    let p = dir.join(name);
    if !p.exists() {
        return Some(p);
    }
    (1..1000)
        .map(|i| dir.join(format!("{name}.{i}")))
        .find(|p| !p.exists())
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
        fs::create_dir_all(inbox)?;
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
                    let Some(dest) = free_name(&self.inbox, &self.name) else {
                        let _ = fs::remove_file(&self.part);
                        return Some(done(&self, DONE_IO, "no free file name".into(), None));
                    };
                    if let Err(e) = fs::rename(&self.part, &dest) {
                        let _ = fs::remove_file(&self.part);
                        return Some(done(&self, DONE_IO, format!("rename failed: {e}"), None));
                    }
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
}
