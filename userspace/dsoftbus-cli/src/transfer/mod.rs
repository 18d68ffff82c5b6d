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
//! * **Receiving:** the core [`Receiver`] checks the offer (names, bounds)
//!   and says when a file is verified; a [`WriteJob`] on a blocking thread
//!   hashes the bytes as it writes them (the core runs with
//!   `caller_hashes` and checks each file's SHA-256 against the offer, so
//!   hashing stays off the session task) into owner-only partial files
//!   (`.dsoftbus-<tag>-<entry>-<rand>.part` in the inbox) and stores each
//!   verified file under its offered path with [`store_no_replace`] (never
//!   replacing anything). The END of a transfer is held until the writer
//!   has stored every file, so DONE means "stored". Every way out that did
//!   not store a file deletes its partial file (the job's `Drop`).
//! * **Sending:** files are hashed before the offer; after the ACCEPT a
//!   reader thread reads them from the accepted offsets into a bounded
//!   channel ([`READ_AHEAD`] pieces of [`READ_PIECE`] bytes, in reused
//!   [`Buffers`]) and the session hands the bytes to the core [`Sender`]
//!   only while the carrier has room (on a stream, straight from the
//!   piece into the mux).
//!
//! Modules: `engine` (the per-session engine, consent, routing), `writer`
//! (the receive writer thread), `inbox` (files on disk that never replace),
//! `resume` (held partial files), `reader` (hashing and the send reader
//! thread), `board` (what `dsoftbus transfers` lists). This file keeps the
//! bounds, the carrier and the texts shown to users.

use std::collections::{HashMap, VecDeque};
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::Mutex;
use std::time::{Duration, Instant as StdInstant};

use dsoftbus::node::{LogSafe, OfferId, Verdict};
use dsoftbus::stream::StreamId;
pub use dsoftbus::transfer::STREAM_KIND;
use dsoftbus::transfer::{
    wire, Entry, EntryKind, FileHasher, Outcome, Reason, Receiver, ReceiverConfig, ReceiverEvent,
    Sender, SenderConfig, SenderEvent, Side, TransferError, Version,
};
use dsoftbus::DeviceId;
use tokio::sync::{mpsc, oneshot, watch, Notify};
use tracing::{debug, info, warn};

use crate::shared::{
    bump, suppressed, Answer, Counters, HostClock, LogKind, OfferRef, Peers, RateLimiter,
    SessionCmd, SessionCtx, SlotGuard, TransferCfg,
};

/// Pieces a reader thread may have read ahead of the session.
pub const READ_AHEAD: usize = 4;
/// Bytes of one piece a reader thread reads (the session cuts it into
/// [`CHUNK`]s). Pieces are several chunks long because each costs a
/// thread wake-up on both ends, and no longer because a piece read into a
/// buffer that has left the cache costs more to copy than it saves.
pub const READ_PIECE: usize = 256 * 1024;
/// Messages queued for one transfer's writer thread (data messages are at
/// most [`WRITE_BATCH`] bytes).
pub const WRITER_QUEUE: usize = 4;
/// File bytes the session gathers before handing them to the writer
/// thread: one wake-up per batch instead of one per chunk. A batch also
/// goes at the next event of its transfer and at the session's transfer
/// tick (500 ms), so a paused sender's bytes do not wait in memory.
pub const WRITE_BATCH: usize = 256 * 1024;

/// Buffers passed between a transfer's session and its reader or writer
/// thread and given back once used, so bulk data does not go through a
/// fresh allocation (page faults and zeroing) for every piece. Holds at
/// most `QUEUE + 2` idle buffers: one per message the channel holds, the
/// one being filled and the one being used.
#[derive(Clone, Default)]
pub struct Buffers<const QUEUE: usize>(Arc<Mutex<Vec<Vec<u8>>>>);

impl<const QUEUE: usize> Buffers<QUEUE> {
    /// An idle buffer (its old bytes still in it, so resizing it zeroes
    /// nothing it already held), or a new one.
    pub fn take(&self) -> Vec<u8> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop()
            .unwrap_or_default()
    }

    /// Gives a used buffer back.
    pub fn give(&self, b: Vec<u8>) {
        let mut g = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if g.len() < QUEUE + 2 {
            g.push(b);
        }
    }
}
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

impl Carrier {
    /// For logs: `stream 3` or `data messages`.
    pub fn describe(&self) -> String {
        match self {
            Carrier::Data(_) => "data messages".into(),
            Carrier::Stream(id) => format!("stream {}", id.0),
        }
    }
}

/// A hasher for `version`'s file hash. An error only if this build lacks
/// it, which the core never lets through (it denies such offers).
pub fn hasher(version: Version) -> Result<FileHasher, String> {
    FileHasher::new(version).ok_or_else(|| format!("no {} in this build", version.hash_name()))
}

/// The running hash of `entry` in `hashers`, started for `version` on
/// first use ([`hasher`]).
pub fn running_hash(
    hashers: &mut HashMap<u16, FileHasher>,
    entry: u16,
    version: Version,
) -> Result<&mut FileHasher, String> {
    match hashers.entry(entry) {
        std::collections::hash_map::Entry::Occupied(o) => Ok(o.into_mut()),
        std::collections::hash_map::Entry::Vacant(v) => Ok(v.insert(hasher(version)?)),
    }
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
            "integrity check failed (digest mismatch); the file was not stored".into()
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

/// A short description of an offer for logs and listings; the peer chose
/// the name, so it goes through the core's log rule (`node::logsafe`).
pub fn summary(entries: &[Entry]) -> String {
    let files = entries.iter().filter(|e| !e.is_dir()).count();
    let first = dsoftbus::node::LogSafe(entries.first().map_or("", |e| e.path.as_str()));
    if entries.len() == 1 {
        format!("{first}")
    } else {
        format!("{first} and {} more ({files} files)", entries.len() - 1)
    }
}

mod board;
mod engine;
mod inbox;
mod reader;
mod resume;
mod writer;

pub use board::*;
pub use engine::*;
pub use inbox::*;
pub use reader::*;
pub use resume::*;
pub use writer::*;

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
        run_job(WriteJob::new(Carrier::Data(1), dir, entries, Version::V1).unwrap())
    }

    /// Runs `j` on a thread: its message sender, its reports, the thread.
    fn run_job(
        j: WriteJob,
    ) -> (
        mpsc::Sender<WriterMsg>,
        mpsc::Receiver<Report>,
        std::thread::JoinHandle<()>,
    ) {
        let (tx, rx) = mpsc::channel(64);
        let (rtx, rrx) = mpsc::channel(64);
        let h = std::thread::spawn(move || j.run(rx, rtx));
        (tx, rrx, h)
    }

    fn file(path: &str, data: &[u8]) -> Entry {
        file_v(Version::V1, path, data)
    }

    fn file_v(v: Version, path: &str, data: &[u8]) -> Entry {
        Entry {
            path: path.into(),
            kind: EntryKind::File {
                size: data.len() as u64,
                digest: FileHasher::digest(v, data).unwrap(),
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
                Report::Flushed(_) | Report::Hashed { .. } => {}
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

    /// The resume half of the test above, for a transfer of version `v`
    /// into `inbox`.
    fn resume_in(v: Version, inbox: &Path) {
        let body: Vec<u8> = (0..100_000u32).map(|i| (i % 253) as u8).collect();
        let entries = vec![file_v(v, "done.txt", b"first"), file_v(v, "big.bin", &body)];
        let store = Arc::new(Mutex::new(ResumeStore::default()));
        // First attempt: one file stored, 40 000 bytes of the other, then
        // the session is lost.
        let (tx, _rx, h) = run_job(
            WriteJob::new(Carrier::Data(1), inbox, entries.clone(), v)
                .unwrap()
                .hold_to(store.clone(), "alpha".into()),
        );
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
        .encode(v);
        let mut rx = Receiver::new(ReceiverConfig {
            caller_hashes: true,
            ..ReceiverConfig::default()
        });
        rx.handle(&offer).unwrap();
        let mut hashers = HashMap::new();
        assert_eq!(
            feed_prefix(&mut rx, &mut held, &mut hashers),
            Some(5 + 40_000)
        );
        rx.accept().unwrap();
        let accept = rx.poll_transmit().unwrap();
        match wire::decode(&accept).unwrap() {
            wire::Message::Accept { offsets, .. } => assert_eq!(offsets, vec![5, 40_000]),
            m => panic!("{m:?}"),
        }
        // The writer continues the partial file; the stored file is not
        // stored twice.
        let j = WriteJob::new(Carrier::Data(2), inbox, entries, v)
            .unwrap()
            .resume_from(&mut held)
            .unwrap()
            .with_hashes(hashers);
        drop(held);
        let (tx, mut rrx, h) = run_job(j);
        tx.blocking_send(WriterMsg::Hash(0)).unwrap();
        tx.blocking_send(WriterMsg::Verified(0)).unwrap();
        tx.blocking_send(WriterMsg::Data {
            entry: 1,
            data: body[40_000..].to_vec(),
        })
        .unwrap();
        tx.blocking_send(WriterMsg::Hash(1)).unwrap();
        tx.blocking_send(WriterMsg::Verified(1)).unwrap();
        drop(tx);
        h.join().unwrap();
        // The writer's hashes cover the resumed prefixes too.
        let mut hashed = Vec::new();
        while let Ok(r) = rrx.try_recv() {
            if let Report::Hashed { entry, digest, .. } = r {
                hashed.push((entry, digest));
            }
        }
        let d = |b: &[u8]| FileHasher::digest(v, b).unwrap();
        assert_eq!(hashed, vec![(0, d(b"first")), (1, d(&body))]);
        assert_eq!(inbox_files(inbox), vec!["big.bin", "done.txt"]);
        assert_eq!(fs::read(inbox.join("big.bin")).unwrap(), body);
    }

    #[test]
    fn a_held_transfer_resumes_its_prefix_and_the_store_is_bounded() {
        let dir = tempfile::tempdir().unwrap();
        for v in [Version::V1, Version::V2] {
            resume_in(v, &dir.path().join(v.hash_name()));
        }
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
            ReadBuffers::default(),
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
            ReadBuffers::default(),
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
