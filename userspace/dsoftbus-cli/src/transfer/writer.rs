//! The receive writer: a blocking thread per incoming transfer that writes
//! the verified stream of bytes into partial files and stores each file
//! once the core verified it; every way out that did not store a file
//! deletes its partial file.

use super::*;

/// Work for a receive writer thread, in order.
#[derive(Debug)]
pub enum WriterMsg {
    /// Create this directory entry.
    Dir(u16),
    /// Append these (not yet verified) bytes to the entry's partial file.
    Data { entry: u16, data: Vec<u8> },
    /// Every byte of the entry has come: report their digest
    /// ([`Report::Hashed`]) for the core to check.
    Hash(u16),
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
    /// The digest of every byte of `entry` (a resumed prefix included),
    /// with the transfer version's hash.
    Hashed {
        carrier: Carrier,
        entry: u16,
        digest: [u8; 32],
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
    /// Where written data buffers go back to the session.
    buffers: WriteBuffers,
    /// The transfer's version: which hash `hashers` run.
    version: Version,
    /// Per file entry: the digest of its bytes so far. Hashing here, as
    /// the bytes are written, keeps it off the session's thread (the core
    /// runs with `caller_hashes` and checks the result).
    hashers: HashMap<u16, FileHasher>,
    /// Per file entry: bytes written since writeback was last started, and
    /// where that range begins.
    unsynced: HashMap<u16, (u64, u64)>,
}

/// Written bytes of a partial file after which the writer asks the kernel
/// to start writing them to disk (and not to keep them cached once
/// written), so the fsync before a file is stored waits for the last few
/// MiB instead of the whole file: on the project machine fsync of 256 MiB
/// written at once took 0.1 s, a seventh of a whole `send`.
pub const WRITEBACK_STEP: u64 = 8 << 20;

/// The buffers of a writer thread and its session.
pub type WriteBuffers = Buffers<WRITER_QUEUE>;

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
    /// The job of a transfer of `version` (its offer's: the hash the
    /// writer computes).
    pub fn new(
        carrier: Carrier,
        inbox: &Path,
        entries: Vec<Entry>,
        version: Version,
    ) -> std::io::Result<Self> {
        create_inbox(inbox)?;
        Ok(WriteJob {
            carrier,
            version,
            inbox: inbox.to_path_buf(),
            entries,
            tag: fastrand::u32(..),
            parts: HashMap::new(),
            roots: HashMap::new(),
            stored: HashMap::new(),
            resume: None,
            buffers: WriteBuffers::default(),
            hashers: HashMap::new(),
            unsynced: HashMap::new(),
        })
    }

    /// Starts the entries' hashes from the prefixes a resume fed the
    /// receiver ([`feed_prefix`]).
    pub fn with_hashes(mut self, hashers: HashMap<u16, FileHasher>) -> Self {
        self.hashers = hashers;
        self
    }

    /// The pool the session takes data buffers from (given back once
    /// written).
    pub fn buffers(&self) -> WriteBuffers {
        self.buffers.clone()
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
                WriterMsg::Data { entry, data } => {
                    let r = self.write(entry, &data);
                    self.buffers.give(data);
                    r
                }
                WriterMsg::Hash(entry) => {
                    // An empty file was never written: its hash starts here.
                    let h = match self.hashers.remove(&entry) {
                        Some(h) => Ok(h),
                        None => hasher(self.version),
                    };
                    h.map(|h| {
                        let _ = report.blocking_send(Report::Hashed {
                            carrier: self.carrier,
                            entry,
                            digest: h.finalize(),
                        });
                    })
                }
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
        running_hash(&mut self.hashers, entry, self.version)?.update(data);
        use std::os::fd::AsRawFd;
        let file = self.part(entry)?;
        file.write_all(data)
            .map_err(|e| format!("write failed: {e}"))?;
        let fd = file.as_raw_fd();
        let (start, len) = self.unsynced.entry(entry).or_insert((0, 0));
        *len += data.len() as u64;
        if *len >= WRITEBACK_STEP {
            // DONTNEED starts writeback of the dirty range without waiting
            // (WB_SYNC_NONE) and drops pages already written. Advice only:
            // an error changes nothing (the fsync at store time is what
            // makes the file durable).
            if let (Ok(off), Ok(n)) = (i64::try_from(*start), i64::try_from(*len)) {
                let _ = nix::fcntl::posix_fadvise(
                    fd,
                    off,
                    n,
                    nix::fcntl::PosixFadviseAdvice::POSIX_FADV_DONTNEED,
                );
            }
            *start += *len;
            *len = 0;
        }
        Ok(())
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
