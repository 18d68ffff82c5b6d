//! The sending side of a transfer.

use alloc::vec::Vec;

use super::wire::{self, Entry, Message, Reason, Version, MAX_CHUNK};
use super::{check_offer, OfferError, Outcome, Queues, Side, TransferError};

/// Sender settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SenderConfig {
    /// Largest DATA payload this side sends (cut to the receiver's
    /// `max_chunk`, and to [`MAX_CHUNK`]). A carrier with a smaller message
    /// bound (a stream frame) sets it lower.
    pub chunk: usize,
    /// The transfer's version: what the offered digests are (v1 SHA-256,
    /// v2 BLAKE3-256; the caller computed them). Offer v2 only to a peer
    /// that listed [`super::V2_SERVICE`] ([`super::version_for`]).
    pub version: Version,
}

impl Default for SenderConfig {
    fn default() -> Self {
        SenderConfig {
            chunk: MAX_CHUNK,
            version: Version::V1,
        }
    }
}

/// File bytes the sender wants next: `len` bytes (or fewer) of `entry`
/// from `offset`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Need {
    /// Entry index in the offer.
    pub entry: u16,
    /// Byte offset in that file.
    pub offset: u64,
    /// At most this many bytes (≥ 1).
    pub len: usize,
}

/// What happened on the sending side.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SenderEvent {
    /// The receiver accepted; each file is sent from `offsets[i]` (what it
    /// already holds, verified).
    Accepted {
        /// Per entry.
        offsets: Vec<u64>,
    },
    /// The last byte of `entry` was handed to the carrier.
    FileSent {
        /// Entry index.
        entry: u16,
    },
    /// The transfer ended (exactly once); also [`Sender::outcome`].
    Finished(Outcome),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Offered,
    Sending,
    /// END queued; waiting for DONE.
    Ending,
    Finished,
}

/// The sending state machine: queues the OFFER at creation, then asks for
/// file bytes ([`Sender::poll_need`]) while the receiver's window allows.
#[derive(Debug)]
pub struct Sender {
    id: u32,
    entries: Vec<Entry>,
    cfg: SenderConfig,
    state: State,
    chunk: usize,
    window: u64,
    sent: u64,
    acked: u64,
    cur: usize,
    off: u64,
    q: Queues<SenderEvent>,
}

impl Sender {
    /// A new transfer `id` (unique among this side's transfers on the
    /// carrier) offering `entries` in the order their data will be sent.
    /// The entries must pass [`check_offer`] (use
    /// [`super::name::sanitize_path`] and [`super::name::dedup_paths`] on
    /// local names); sizes and digests are the caller's (it read the files,
    /// with the hash of `cfg.version`).
    pub fn new(id: u32, entries: Vec<Entry>, cfg: SenderConfig) -> Result<Sender, OfferError> {
        check_offer(&entries, wire::MAX_ENTRIES, u64::MAX)?;
        let mut q = Queues::default();
        q.out.push_back(
            Message::Offer {
                id,
                entries: entries.clone(),
            }
            .encode(cfg.version),
        );
        Ok(Sender {
            id,
            entries,
            cfg,
            state: State::Offered,
            chunk: cfg.chunk.clamp(1, MAX_CHUNK),
            window: 0,
            sent: 0,
            acked: 0,
            cur: 0,
            off: 0,
            q,
        })
    }

    /// The transfer id.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// The transfer's version.
    pub fn version(&self) -> Version {
        self.cfg.version
    }

    /// The offered entries.
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// How the transfer ended, once it has.
    pub fn outcome(&self) -> Option<&Outcome> {
        self.q.outcome.as_ref()
    }

    /// Data bytes handed to the carrier since ACCEPT, and acknowledged.
    pub fn progress(&self) -> (u64, u64) {
        (self.sent, self.acked)
    }

    /// The next message to send, if any.
    #[must_use]
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        self.q.out.pop_front()
    }

    /// The next event, if any.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<SenderEvent> {
        self.q.events.pop_front()
    }

    /// The file bytes wanted next, if the window has room. `None` while
    /// waiting for the ACCEPT or an ACK, and once everything was sent.
    #[must_use]
    pub fn poll_need(&self) -> Option<Need> {
        if self.state != State::Sending {
            return None;
        }
        let e = self.entries.get(self.cur)?;
        let room = self.window.saturating_sub(self.sent - self.acked);
        let left = e.size() - self.off;
        let len = (self.chunk as u64).min(room).min(left);
        (len > 0).then_some(Need {
            entry: self.cur as u16,
            offset: self.off,
            len: len as usize,
        })
    }

    /// Sends `data` (1..=`need.len` bytes) for the current [`Need`]: entry
    /// and offset must be the ones asked for. `Misuse` otherwise, nothing
    /// changed.
    pub fn push_data(&mut self, entry: u16, offset: u64, data: &[u8]) -> Result<(), TransferError> {
        self.check_data(entry, offset, data.len())?;
        self.q.out.push_back(wire::encode_data(
            self.cfg.version,
            self.id,
            entry,
            offset,
            data,
        ));
        self.sent_data(entry, data.len());
        Ok(())
    }

    /// [`push_data`](Self::push_data) for a caller that sends the bytes
    /// from where they lie: returns the DATA message's header, and the
    /// caller sends it followed by exactly those `len` bytes as the next
    /// message. `Misuse` (nothing changed) as for `push_data`, or while
    /// [`poll_transmit`](Self::poll_transmit) still has messages, which
    /// must go first.
    pub fn push_data_header(
        &mut self,
        entry: u16,
        offset: u64,
        len: usize,
    ) -> Result<[u8; wire::DATA_HEADER_LEN], TransferError> {
        if !self.q.out.is_empty() {
            return Err(TransferError::Misuse);
        }
        self.check_data(entry, offset, len)?;
        self.sent_data(entry, len);
        Ok(wire::data_header(self.cfg.version, self.id, entry, offset))
    }

    fn check_data(&self, entry: u16, offset: u64, len: usize) -> Result<(), TransferError> {
        let need = self.poll_need().ok_or(TransferError::Misuse)?;
        if entry != need.entry || offset != need.offset || len == 0 || len > need.len {
            return Err(TransferError::Misuse);
        }
        Ok(())
    }

    fn sent_data(&mut self, entry: u16, len: usize) {
        self.off += len as u64;
        self.sent += len as u64;
        if self.off == self.entries[self.cur].size() {
            self.q.events.push_back(SenderEvent::FileSent { entry });
            self.cur += 1;
            self.advance(None);
        }
    }

    /// Gives up (the user cancelled, a file could not be read, ...): queues a
    /// CANCEL. Nothing happens once the transfer has ended.
    pub fn cancel(&mut self, reason: Reason) {
        if self.state == State::Finished {
            return;
        }
        let entry = (self.state == State::Sending).then_some(self.cur as u16);
        self.q.out.push_back(
            Message::Cancel {
                id: self.id,
                reason,
                entry,
            }
            .encode(self.cfg.version),
        );
        self.finish(Outcome::Cancelled {
            by: Side::Local,
            reason,
            entry,
        });
    }

    /// Handles one message from the receiver. After the transfer has ended
    /// everything is ignored (`Ok`). A fatal error also ends the transfer
    /// (a CANCEL to the peer and [`Outcome::Failed`]). Every message must
    /// carry the transfer's version, except a DENY of the offer: a receiver
    /// that does not know the offered version answers in one it knows.
    pub fn handle(&mut self, msg: &[u8]) -> Result<(), TransferError> {
        let wire::Header { kind, version, id } = match wire::header(msg) {
            Ok(h) => h,
            Err(wire::WireError::NotTransfer) => return Err(TransferError::NotMine),
            Err(e) => return self.fail(TransferError::Wire(e)),
        };
        if id != self.id || wire::from_sender(kind) {
            return Err(TransferError::NotMine);
        }
        if self.state == State::Finished {
            return Ok(());
        }
        let deny_of_offer = self.state == State::Offered && kind == wire::KIND_DENY;
        if version != self.cfg.version && !deny_of_offer {
            return self.fail(TransferError::Unexpected { kind });
        }
        let m = match wire::decode(msg) {
            Ok(m) => m,
            Err(e) => return self.fail(TransferError::Wire(e)),
        };
        match (self.state, m) {
            (_, Message::Abort { reason, entry, .. }) => {
                self.finish(Outcome::Cancelled {
                    by: Side::Peer,
                    reason,
                    entry,
                });
                Ok(())
            }
            (State::Offered, Message::Deny { reason, .. }) => {
                self.finish(Outcome::Denied {
                    by: Side::Peer,
                    reason,
                });
                Ok(())
            }
            (
                State::Offered,
                Message::Accept {
                    window,
                    max_chunk,
                    offsets,
                    ..
                },
            ) => {
                let fits = offsets.len() == self.entries.len()
                    && self
                        .entries
                        .iter()
                        .zip(&offsets)
                        .all(|(e, o)| *o <= e.size());
                if !fits {
                    return self.fail(TransferError::BadAnswer);
                }
                self.window = u64::from(window);
                self.chunk = self.chunk.min(max_chunk as usize);
                self.state = State::Sending;
                self.cur = 0;
                self.advance(Some(&offsets));
                self.q.events.push_back(SenderEvent::Accepted { offsets });
                Ok(())
            }
            (State::Sending | State::Ending, Message::Ack { received, .. }) => {
                if received < self.acked || received > self.sent {
                    return self.fail(TransferError::BadAnswer);
                }
                self.acked = received;
                Ok(())
            }
            (State::Ending, Message::Done { .. }) => {
                self.finish(Outcome::Done);
                Ok(())
            }
            (_, _) => self.fail(TransferError::Unexpected { kind }),
        }
    }

    /// Moves `cur` to the next entry with bytes left (from `offsets` when
    /// just accepted); queues END when none is left.
    fn advance(&mut self, offsets: Option<&[u64]>) {
        while let Some(e) = self.entries.get(self.cur) {
            let start = match offsets {
                Some(o) => o.get(self.cur).copied().unwrap_or(0),
                None => 0,
            };
            if start < e.size() {
                self.off = start;
                return;
            }
            self.cur += 1;
        }
        self.off = 0;
        self.q
            .out
            .push_back(Message::End { id: self.id }.encode(self.cfg.version));
        self.state = State::Ending;
    }

    fn fail(&mut self, err: TransferError) -> Result<(), TransferError> {
        if self.state != State::Finished {
            self.q.out.push_back(
                Message::Cancel {
                    id: self.id,
                    reason: err.reason(),
                    entry: err.entry(),
                }
                .encode(self.cfg.version),
            );
            self.finish(Outcome::Failed(err));
        }
        Err(err)
    }

    fn finish(&mut self, o: Outcome) {
        self.state = State::Finished;
        self.q.outcome = Some(o.clone());
        self.q.events.push_back(SenderEvent::Finished(o));
    }

    /// The configuration this sender was built with.
    pub fn config(&self) -> SenderConfig {
        self.cfg
    }
}
