//! The receiving side of a transfer.

use alloc::vec::Vec;

use super::wire::{self, Entry, EntryKind, Message, Reason, Version, WireError, MAX_CHUNK};
use super::{check_offer, FileHasher, Outcome, Queues, Side, TransferError};

/// Receiver bounds (all enforced before anything is exposed).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReceiverConfig {
    /// Most entries in an offer (at most [`wire::MAX_ENTRIES`]).
    pub max_entries: usize,
    /// Most bytes an offer may add up to.
    pub max_total_size: u64,
    /// Largest DATA payload accepted (1..=[`MAX_CHUNK`]), sent in ACCEPT.
    pub max_chunk: u32,
    /// Most data bytes received but not yet taken by the caller
    /// ([`ReceiverEvent::Data`]) plus in flight; sent in ACCEPT. A sender
    /// going past it is a protocol error.
    pub window: u32,
    /// The caller hashes each file's bytes itself (on the thread that
    /// writes them, say, so hashing does not hold up the connection): the
    /// receiver reports [`ReceiverEvent::Complete`] once a file's bytes have
    /// all arrived, and verifies the digest the caller then gives to
    /// [`Receiver::file_hashed`] (computed with [`FileHasher`] of
    /// [`Receiver::version`]). False (the default): the receiver hashes.
    pub caller_hashes: bool,
}

impl Default for ReceiverConfig {
    fn default() -> Self {
        ReceiverConfig {
            max_entries: wire::MAX_ENTRIES,
            max_total_size: 1 << 40,
            max_chunk: MAX_CHUNK as u32,
            window: 4 << 20,
            caller_hashes: false,
        }
    }
}

/// What happened on the receiving side.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReceiverEvent {
    /// A valid offer is pending: read it with [`Receiver::offer`], answer
    /// with [`Receiver::accept`] or [`Receiver::deny`].
    Offered,
    /// After ACCEPT: create this directory entry.
    Dir {
        /// Entry index.
        entry: u16,
    },
    /// File bytes to write at `offset` of `entry`. Taking this event is
    /// what acknowledges them to the sender. They are **not** verified yet:
    /// keep them apart (a partial file) until [`ReceiverEvent::FileVerified`].
    Data {
        /// Entry index.
        entry: u16,
        /// Byte offset.
        offset: u64,
        /// The bytes.
        data: Vec<u8>,
    },
    /// With [`ReceiverConfig::caller_hashes`] only: every byte of `entry`
    /// (resumed prefix included) has arrived; hand its digest to
    /// [`Receiver::file_hashed`]. Data of later entries may follow first.
    Complete {
        /// Entry index.
        entry: u16,
    },
    /// Every byte of `entry` (resumed prefix included) has arrived and
    /// matches the offered digest: the file may be stored.
    FileVerified {
        /// Entry index.
        entry: u16,
    },
    /// The transfer ended (exactly once); also [`Receiver::outcome`].
    Finished(Outcome),
}

/// File bytes handed out by [`Receiver::handle_ref`], borrowed from the
/// message they came in: the same bytes a [`ReceiverEvent::Data`] would
/// carry, without the copy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DataRef<'m> {
    /// Entry index.
    pub entry: u16,
    /// Byte offset.
    pub offset: u64,
    /// The bytes (not verified yet, as for [`ReceiverEvent::Data`]).
    pub data: &'m [u8],
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    AwaitOffer,
    Pending,
    Receiving,
    Finished,
}

/// The receiving state machine: one per incoming OFFER.
#[derive(Debug)]
pub struct Receiver {
    cfg: ReceiverConfig,
    state: State,
    id: Option<u32>,
    /// The offer's version (v1 until an offer came): every message this
    /// side sends carries it, and every later message must.
    version: Version,
    entries: Vec<Entry>,
    /// Per entry: bytes held (resumed prefix + received).
    have: Vec<u64>,
    hashers: Vec<Option<FileHasher>>,
    /// Per entry: complete, waiting for [`Receiver::file_hashed`]
    /// (`caller_hashes`).
    unchecked: Vec<bool>,
    /// END came while files were unchecked: DONE once they all are.
    end_seen: bool,
    cur: usize,
    /// Data bytes received since ACCEPT, taken by the caller, acknowledged.
    received: u64,
    taken: u64,
    acked: u64,
    q: Queues<ReceiverEvent>,
}

impl Receiver {
    /// A receiver waiting for an OFFER. Bounds out of range are clamped
    /// (`max_chunk` to 1..=[`MAX_CHUNK`], `window` to at least 1).
    pub fn new(mut cfg: ReceiverConfig) -> Receiver {
        cfg.max_chunk = cfg.max_chunk.clamp(1, MAX_CHUNK as u32);
        cfg.window = cfg.window.max(1);
        cfg.max_entries = cfg.max_entries.min(wire::MAX_ENTRIES);
        Receiver {
            cfg,
            state: State::AwaitOffer,
            id: None,
            version: Version::V1,
            entries: Vec::new(),
            have: Vec::new(),
            hashers: Vec::new(),
            unchecked: Vec::new(),
            end_seen: false,
            cur: 0,
            received: 0,
            taken: 0,
            acked: 0,
            q: Queues::default(),
        }
    }

    /// The transfer id, once an offer came.
    pub fn id(&self) -> Option<u32> {
        self.id
    }

    /// The transfer's version (its offer's; v1 before an offer): the hash
    /// of the offered digests.
    pub fn version(&self) -> Version {
        self.version
    }

    /// The offered entries, once a valid offer came (pending or later).
    pub fn offer(&self) -> Option<&[Entry]> {
        (!self.entries.is_empty()).then_some(&self.entries[..])
    }

    /// True while an offer waits for accept or deny.
    pub fn is_pending(&self) -> bool {
        self.state == State::Pending
    }

    /// How the transfer ended, once it has.
    pub fn outcome(&self) -> Option<&Outcome> {
        self.q.outcome.as_ref()
    }

    /// Per entry, the bytes held so far (resumed prefix and received).
    pub fn held(&self) -> &[u64] {
        &self.have
    }

    /// Data bytes received and not yet taken by the caller (≤ the window).
    pub fn buffered(&self) -> u64 {
        self.received - self.taken
    }

    /// The next message to send, if any.
    #[must_use]
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        self.q.out.pop_front()
    }

    /// The next event. Taking a [`ReceiverEvent::Data`] counts its bytes as
    /// consumed and may queue an ACK.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<ReceiverEvent> {
        let ev = self.q.events.pop_front()?;
        if let ReceiverEvent::Data { data, .. } = &ev {
            self.took(data.len());
        }
        Some(ev)
    }

    /// The caller took `n` data bytes: they count as consumed, and an ACK
    /// may be queued.
    fn took(&mut self, n: usize) {
        self.taken += n as u64;
        let owed = self.taken - self.acked;
        // Ack every quarter window, and whatever is owed once nothing
        // else is buffered (so a sender blocked on the window resumes).
        let idle = self.taken == self.received;
        if self.state == State::Receiving
            && (owed >= u64::from(self.cfg.window / 4).max(1) || (idle && owed > 0))
        {
            self.acked = self.taken;
            let id = self.id.unwrap_or(0);
            self.q.out.push_back(
                Message::Ack {
                    id,
                    received: self.acked,
                }
                .encode(self.version),
            );
        }
    }

    /// Before [`Receiver::accept`]: the caller already holds the first bytes
    /// of file `entry` (a partial file from an interrupted transfer of the
    /// same entry); it feeds them here, in order, so they are hashed and
    /// the sender is asked to start after them (with `caller_hashes`, only
    /// counted: the caller hashes them too). `Misuse` (nothing changed)
    /// when not pending, not a file, or past its size.
    pub fn resume_prefix(&mut self, entry: u16, bytes: &[u8]) -> Result<(), TransferError> {
        let i = usize::from(entry);
        if self.state != State::Pending {
            return Err(TransferError::Misuse);
        }
        let Some(e) = self.entries.get(i).filter(|e| !e.is_dir()) else {
            return Err(TransferError::Misuse);
        };
        let held = self.have[i].checked_add(bytes.len() as u64);
        if held.is_none_or(|h| h > e.size()) {
            return Err(TransferError::Misuse);
        }
        if let Some(Some(h)) = self.hashers.get_mut(i) {
            h.update(bytes);
        }
        self.have[i] += bytes.len() as u64;
        Ok(())
    }

    /// With [`ReceiverConfig::caller_hashes`]: the digest the caller
    /// computed over every byte of `entry` after [`ReceiverEvent::Complete`]
    /// (with [`FileHasher`] of [`Receiver::version`]).
    /// Queues [`ReceiverEvent::FileVerified`] if it is the offered one, ends
    /// the transfer (`HashMismatch`, ABORT to the sender) if not, and sends
    /// DONE once END has come and every file is verified. Ignored (`Ok`)
    /// once the transfer has ended; `Misuse` (nothing changed) for an entry
    /// not waiting for its hash.
    pub fn file_hashed(&mut self, entry: u16, digest: [u8; 32]) -> Result<(), TransferError> {
        let i = usize::from(entry);
        if self.state == State::Finished {
            return Ok(());
        }
        let offered = match self.entries.get(i).map(|e| e.kind) {
            Some(EntryKind::File { digest, .. }) => digest,
            _ => return Err(TransferError::Misuse),
        };
        if self.state != State::Receiving || !self.unchecked.get(i).copied().unwrap_or(false) {
            return Err(TransferError::Misuse);
        }
        self.unchecked[i] = false;
        if digest != offered {
            return self.fail(TransferError::HashMismatch { entry });
        }
        self.q
            .events
            .push_back(ReceiverEvent::FileVerified { entry });
        if self.end_seen && !self.unchecked.contains(&true) {
            self.done();
        }
        Ok(())
    }

    /// Accepts the pending offer: queues ACCEPT with the held prefixes as
    /// offsets, reports directories, verifies files already complete.
    pub fn accept(&mut self) -> Result<(), TransferError> {
        if self.state != State::Pending {
            return Err(TransferError::Misuse);
        }
        let id = self.id.unwrap_or(0);
        self.q.out.push_back(
            Message::Accept {
                id,
                window: self.cfg.window,
                max_chunk: self.cfg.max_chunk,
                offsets: self.have.clone(),
            }
            .encode(self.version),
        );
        self.state = State::Receiving;
        for (i, e) in self.entries.iter().enumerate() {
            if e.is_dir() {
                self.q
                    .events
                    .push_back(ReceiverEvent::Dir { entry: i as u16 });
            }
        }
        self.cur = 0;
        match self.settle() {
            Ok(()) => Ok(()),
            Err(e) => self.fail(e),
        }
    }

    /// Refuses the pending offer (queues DENY). `Misuse` if none is pending.
    pub fn deny(&mut self, reason: Reason) -> Result<(), TransferError> {
        if self.state != State::Pending {
            return Err(TransferError::Misuse);
        }
        self.send_deny(reason);
        self.finish(Outcome::Denied {
            by: Side::Local,
            reason,
        });
        Ok(())
    }

    /// Gives up: DENY while pending, ABORT after accepting. Nothing happens
    /// before an offer or once the transfer has ended.
    pub fn cancel(&mut self, reason: Reason) {
        match self.state {
            State::Pending => {
                let _ = self.deny(reason);
            }
            State::Receiving => {
                let entry = self.current_entry();
                self.send_abort(reason, entry);
                self.finish(Outcome::Cancelled {
                    by: Side::Local,
                    reason,
                    entry,
                });
            }
            State::AwaitOffer | State::Finished => {}
        }
    }

    /// Handles one message from the sender. Ignored (`Ok`) once ended; a
    /// fatal error also ends the transfer (DENY or ABORT to the peer and
    /// [`Outcome::Failed`]). An offer of a version this build does not have
    /// ([`Version::supported`]) is denied `unsupported-version`, in that
    /// version; a later message in another version than the offer's is
    /// out of turn (`Unexpected`).
    pub fn handle(&mut self, msg: &[u8]) -> Result<(), TransferError> {
        self.handle_inner(msg, false).map(|_| ())
    }

    /// [`handle`](Self::handle), but the file bytes of a DATA come back as a
    /// slice of `msg` instead of a copy in a [`ReceiverEvent::Data`]: they
    /// count as taken (consumed, and acknowledged) now, so write or copy
    /// them before the next call. Events the message causes (a file
    /// complete or verified, the end) follow them in
    /// [`poll_event`](Self::poll_event). While an earlier event is still
    /// waiting there, the bytes go into a `Data` event behind it instead
    /// (`Ok(None)`), so bytes and events keep their order either way.
    pub fn handle_ref<'m>(&mut self, msg: &'m [u8]) -> Result<Option<DataRef<'m>>, TransferError> {
        self.handle_inner(msg, true)
    }

    fn handle_inner<'m>(
        &mut self,
        msg: &'m [u8],
        by_ref: bool,
    ) -> Result<Option<DataRef<'m>>, TransferError> {
        let wire::Header { kind, version, id } = match wire::header(msg) {
            Ok(h) => h,
            Err(WireError::NotTransfer) => return Err(TransferError::NotMine),
            Err(e) => {
                // An unreadable header: ours only if we have nothing else.
                if self.state != State::AwaitOffer {
                    return self.fail(TransferError::Wire(e));
                }
                if self.refuse_before_offer(msg, TransferError::Wire(e)) {
                    return Err(TransferError::Wire(e));
                }
                return Err(TransferError::NotMine);
            }
        };
        if !wire::from_sender(kind) || self.id.is_some_and(|mine| mine != id) {
            return Err(TransferError::NotMine);
        }
        if self.state == State::Finished {
            return Ok(None);
        }
        if self.state == State::AwaitOffer {
            if kind != wire::KIND_OFFER {
                return Err(TransferError::NotMine);
            }
            // The answer to the offer goes in its version.
            self.version = version;
            if !version.supported() {
                self.id = Some(id);
                let e = WireError::UnsupportedVersion(version.to_u8());
                return self.fail(TransferError::Wire(e));
            }
        } else if version != self.version {
            return self.fail(TransferError::Unexpected { kind });
        }
        let m = match wire::decode(msg) {
            Ok(m) => m,
            Err(e) => {
                self.id = Some(id);
                return self.fail(TransferError::Wire(e));
            }
        };
        match (self.state, m) {
            (State::AwaitOffer, Message::Offer { id, entries }) => {
                self.id = Some(id);
                if let Err(e) = check_offer(&entries, self.cfg.max_entries, self.cfg.max_total_size)
                {
                    return self.fail(TransferError::Offer(e));
                }
                self.have = alloc::vec![0; entries.len()];
                self.unchecked = alloc::vec![false; entries.len()];
                let hash = !self.cfg.caller_hashes;
                self.hashers = entries
                    .iter()
                    .map(|e| {
                        (hash && !e.is_dir())
                            .then(|| FileHasher::new(self.version))
                            .flatten()
                    })
                    .collect();
                self.entries = entries;
                self.state = State::Pending;
                self.q.events.push_back(ReceiverEvent::Offered);
                Ok(None)
            }
            (_, Message::Cancel { reason, entry, .. }) => {
                self.finish(Outcome::Cancelled {
                    by: Side::Peer,
                    reason,
                    entry,
                });
                Ok(None)
            }
            (
                State::Receiving,
                Message::Data {
                    entry,
                    offset,
                    data,
                    ..
                },
            ) => self.on_data(entry, offset, data, by_ref),
            (State::Receiving, Message::End { .. }) => {
                if self.cur < self.entries.len() {
                    let entry = self.cur as u16;
                    return self.fail(TransferError::Truncated { entry });
                }
                if self.unchecked.contains(&true) {
                    // DONE once the caller's hashes are in (file_hashed).
                    self.end_seen = true;
                } else {
                    self.done();
                }
                Ok(None)
            }
            _ => self.fail(TransferError::Unexpected { kind }),
        }
    }

    fn on_data<'m>(
        &mut self,
        entry: u16,
        offset: u64,
        data: &'m [u8],
        by_ref: bool,
    ) -> Result<Option<DataRef<'m>>, TransferError> {
        let i = usize::from(entry);
        let in_order = i == self.cur
            && self.have.get(i) == Some(&offset)
            && data.len() <= self.cfg.max_chunk as usize
            && self.entries.get(i).is_some_and(|e| {
                offset
                    .checked_add(data.len() as u64)
                    .is_some_and(|end| end <= e.size())
            });
        if !in_order {
            return self.fail(TransferError::OutOfOrder { entry, offset });
        }
        if self.received + data.len() as u64 - self.acked > u64::from(self.cfg.window) {
            return self.fail(TransferError::WindowExceeded);
        }
        if let Some(Some(h)) = self.hashers.get_mut(i) {
            h.update(data);
        }
        self.have[i] += data.len() as u64;
        self.received += data.len() as u64;
        let out = if by_ref && self.q.events.is_empty() {
            self.took(data.len());
            Some(DataRef {
                entry,
                offset,
                data,
            })
        } else {
            self.q.events.push_back(ReceiverEvent::Data {
                entry,
                offset,
                data: data.to_vec(),
            });
            None
        };
        match self.settle() {
            Ok(()) => Ok(out),
            // The transfer failed (a hash mismatch): its bytes are of no use.
            Err(e) => self.fail(e),
        }
    }

    /// Verifies every complete file from `cur` on and moves `cur` to the
    /// first incomplete one.
    fn settle(&mut self) -> Result<(), TransferError> {
        while let Some(e) = self.entries.get(self.cur) {
            let i = self.cur;
            if let EntryKind::File { size, digest } = e.kind {
                if self.have[i] < size {
                    return Ok(());
                }
                if self.cfg.caller_hashes {
                    self.unchecked[i] = true;
                    self.q
                        .events
                        .push_back(ReceiverEvent::Complete { entry: i as u16 });
                    self.cur += 1;
                    continue;
                }
                let got = self.hashers[i].take().map(FileHasher::finalize);
                if got != Some(digest) {
                    return Err(TransferError::HashMismatch { entry: i as u16 });
                }
                self.q
                    .events
                    .push_back(ReceiverEvent::FileVerified { entry: i as u16 });
            }
            self.cur += 1;
        }
        Ok(())
    }

    /// Every file is stored and verified: DONE, and the transfer ends.
    fn done(&mut self) {
        let id = self.id.unwrap_or(0);
        self.q
            .out
            .push_back(Message::Done { id }.encode(self.version));
        self.finish(Outcome::Done);
    }

    fn current_entry(&self) -> Option<u16> {
        (self.cur < self.entries.len()).then_some(self.cur as u16)
    }

    /// An OFFER whose header does not parse (another version, oversized):
    /// answered by id with a DENY when the id is readable. True if it was
    /// an offer (the transfer has then ended).
    fn refuse_before_offer(&mut self, msg: &[u8], err: TransferError) -> bool {
        match (msg.first(), msg.get(2..6)) {
            (Some(&wire::KIND_OFFER), Some(h)) => {
                self.id = Some(u32::from_be_bytes([h[0], h[1], h[2], h[3]]));
                self.send_deny(err.reason());
                self.finish(Outcome::Failed(err));
                true
            }
            _ => false,
        }
    }

    fn send_deny(&mut self, reason: Reason) {
        let id = self.id.unwrap_or(0);
        self.q
            .out
            .push_back(Message::Deny { id, reason }.encode(self.version));
    }

    fn send_abort(&mut self, reason: Reason, entry: Option<u16>) {
        let id = self.id.unwrap_or(0);
        self.q
            .out
            .push_back(Message::Abort { id, reason, entry }.encode(self.version));
    }

    /// Ends the transfer on `err` (DENY or ABORT to the peer) and returns
    /// it, as any result type the caller has.
    fn fail<T>(&mut self, err: TransferError) -> Result<T, TransferError> {
        match self.state {
            State::Finished => {}
            State::AwaitOffer | State::Pending => {
                self.send_deny(err.reason());
                self.finish(Outcome::Failed(err));
            }
            State::Receiving => {
                self.send_abort(err.reason(), err.entry());
                self.finish(Outcome::Failed(err));
            }
        }
        Err(err)
    }

    fn finish(&mut self, o: Outcome) {
        // Events already queued stay (in order: a FileVerified only ever
        // follows all the data of its file); data of an unverified file is
        // the caller's to discard when the outcome is not Done.
        self.state = State::Finished;
        self.q.outcome = Some(o.clone());
        self.q.events.push_back(ReceiverEvent::Finished(o));
    }
}
