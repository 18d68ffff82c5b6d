//! File transfer as a core protocol (`docs/protocol/wire.md` §12): sans-IO
//! sender and receiver state machines that consume and produce messages
//! (byte vectors). Whatever carries them must deliver them reliably, in
//! order, with their boundaries: one session `data` message each, or, on a
//! [`crate::stream`] stream (stream kind [`STREAM_KIND`]), each preceded by
//! a 2-byte length ([`crate::frame::encode_frame`] /
//! [`crate::frame::FrameDecoder`]).
//!
//! * [`name`] — path rules, in one place: [`name::validate_path`] on the
//!   receiver, [`name::sanitize_path`] / [`name::dedup_paths`] on the sender.
//! * [`wire`] — the codec: kinds `0x40`–`0x48`, version byte `1` or `2`
//!   ([`Version`]: the file hash, SHA-256 or BLAKE3-256).
//! * [`FileHasher`] — the file hash of a version, for every place that
//!   hashes file bytes.
//! * [`Sender`] — offer, then feed file bytes on demand ([`Sender::poll_need`],
//!   [`Sender::push_data`], or [`Sender::push_data_header`] for a caller that
//!   sends the bytes from where they lie) within the receiver's window.
//! * [`Receiver`] — exposes the pending offer; the caller decides
//!   ([`Receiver::accept`] / [`Receiver::deny`]; consent policy is the
//!   daemon's), optionally after feeding the prefix it already holds
//!   ([`Receiver::resume_prefix`]); then hands out file bytes and reports each
//!   file verified against its digest (computed by the receiver, or with
//!   [`ReceiverConfig::caller_hashes`] by the caller, who hands it to
//!   [`Receiver::file_hashed`]; the receiver compares either way).
//!
//! **Versions.** A transfer's version is its offer's ([`SenderConfig::version`]);
//! every later message of the transfer carries it. v1 names files by
//! SHA-256, v2 by BLAKE3-256 (feature `transfer-v2`). A node whose build has
//! v2 lists [`V2_SERVICE`] in its announce, and a sender offers v2 only to a
//! peer that listed it ([`version_for`]); a receiver without v2 denies a v2
//! offer `unsupported-version`.
//!
//! A whole transfer, both sides in one process:
//!
//! ```
//! use dsoftbus::transfer::*;
//! let body = b"hello world".to_vec();
//! let version = Version::V1; // or version_for(the peer's announced services)
//! let digest = FileHasher::digest(version, &body).unwrap();
//! let entries = vec![
//!     Entry { path: "docs".into(), kind: EntryKind::Dir },
//!     Entry {
//!         path: "docs/a.txt".into(),
//!         kind: EntryKind::File { size: body.len() as u64, digest },
//!     },
//! ];
//! let cfg = SenderConfig { version, ..SenderConfig::default() };
//! let mut tx = Sender::new(7, entries, cfg).unwrap();
//! let mut rx = Receiver::new(ReceiverConfig::default());
//! let mut got = Vec::new();
//! for _ in 0..10 {
//!     while let Some(m) = tx.poll_transmit() { rx.handle(&m).unwrap(); }
//!     while let Some(ev) = rx.poll_event() {
//!         match ev {
//!             ReceiverEvent::Offered => rx.accept().unwrap(), // ask the user here
//!             ReceiverEvent::Data { data, .. } => got.extend_from_slice(&data),
//!             _ => {}
//!         }
//!     }
//!     while let Some(m) = rx.poll_transmit() { tx.handle(&m).unwrap(); }
//!     while let Some(need) = tx.poll_need() {
//!         let start = need.offset as usize;
//!         let end = body.len().min(start + need.len);
//!         tx.push_data(need.entry, need.offset, &body[start..end]).unwrap();
//!     }
//! }
//! assert_eq!(got, body);
//! assert_eq!(tx.outcome(), Some(&Outcome::Done));
//! assert_eq!(rx.outcome(), Some(&Outcome::Done));
//! ```
//!
//! Bounds: entries per offer ([`ReceiverConfig::max_entries`], at most
//! [`wire::MAX_ENTRIES`]), path length ([`name::MAX_PATH_LEN`]) and
//! component length ([`name::MAX_NAME`]), total size
//! ([`ReceiverConfig::max_total_size`]), chunk size
//! ([`ReceiverConfig::max_chunk`], at most [`wire::MAX_CHUNK`]), and the
//! bytes a receiver holds undelivered ([`ReceiverConfig::window`]: a sender
//! that goes past it is a protocol error). Every message fits one session
//! data message ([`wire::MAX_MESSAGE_LEN`]).

use alloc::vec::Vec;
use core::fmt;

mod hash;
pub mod name;
mod receiver;
mod sender;
pub mod wire;

pub use hash::FileHasher;
pub use name::NameError;
pub use receiver::{DataRef, Receiver, ReceiverConfig, ReceiverEvent};
pub use sender::{Need, Sender, SenderConfig, SenderEvent};
pub use wire::{decode, header, Entry, EntryKind, Header, Message, Reason, Version, WireError};

/// The stream kind (in a stream's `open`) of a stream carrying one transfer.
pub const STREAM_KIND: u8 = 0x40;

/// The announce service of a node that receives transfer version 2
/// (wire.md §12.1). Nodes without it speak v1 only.
pub const V2_SERVICE: &str = "transfer/2";

/// The version to offer a peer that announced `services`: v2 if this build
/// has it and the peer listed [`V2_SERVICE`], else v1.
pub fn version_for(services: &[crate::ServiceName]) -> Version {
    let v2 = Version::V2.supported() && services.iter().any(|s| s.as_str() == V2_SERVICE);
    if v2 {
        Version::V2
    } else {
        Version::V1
    }
}

/// Which side ended a transfer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// This state machine's caller.
    Local,
    /// The other end.
    Peer,
}

/// How a transfer ended. Every transfer ends exactly once.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Every file arrived and matched its digest.
    Done,
    /// The receiver refused the offer.
    Denied {
        /// Who refused (the receiver's caller is `Local` on the receiver).
        by: Side,
        /// Why.
        reason: Reason,
    },
    /// One side gave up (CANCEL or ABORT).
    Cancelled {
        /// Who.
        by: Side,
        /// Why.
        reason: Reason,
        /// The entry concerned, if any.
        entry: Option<u16>,
    },
    /// This side detected an error; the peer was told (CANCEL/ABORT).
    Failed(TransferError),
}

/// Why an offer is not acceptable (sender: refused to build; receiver: denied).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OfferError {
    /// No entries, or more than the bound.
    EntryCount,
    /// The sizes add up to more than the bound (or overflow).
    TotalSize,
    /// A path breaks the name rules.
    Name {
        /// Entry index.
        entry: u16,
        /// Which rule.
        error: NameError,
    },
    /// Two entries collide (same path, or a file another path needs as a
    /// directory).
    Conflict {
        /// The later entry's index.
        entry: u16,
    },
    /// The offer does not fit one message.
    TooLong,
}

impl OfferError {
    /// The DENY reason for this error.
    pub fn reason(self) -> Reason {
        match self {
            OfferError::EntryCount | OfferError::TotalSize | OfferError::TooLong => {
                Reason::TooLarge
            }
            OfferError::Name { .. } | OfferError::Conflict { .. } => Reason::InvalidName,
        }
    }
}

/// Errors of the state machines.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TransferError {
    /// Not a message of this transfer (another kind, id or direction):
    /// nothing changed. Not fatal.
    NotMine,
    /// The caller used the API out of turn (e.g. data nobody asked for,
    /// accept twice): nothing changed. Not fatal.
    Misuse,
    /// The message did not decode.
    Wire(WireError),
    /// A valid message at a point of the protocol where it may not come.
    Unexpected {
        /// Its kind byte.
        kind: u8,
    },
    /// DATA other than the next expected bytes (reordered, duplicated,
    /// skipped, past the end of the file, or over the chunk bound).
    OutOfOrder {
        /// Entry of the DATA.
        entry: u16,
        /// Offset of the DATA.
        offset: u64,
    },
    /// More unacknowledged data than the window allows.
    WindowExceeded,
    /// An ACCEPT whose offsets do not fit the offer, or an ACK that goes
    /// backwards or past what was sent.
    BadAnswer,
    /// END while a file is still incomplete.
    Truncated {
        /// The first incomplete entry.
        entry: u16,
    },
    /// A file's bytes do not match the offered digest.
    HashMismatch {
        /// The entry.
        entry: u16,
    },
    /// The offer was refused (receiver side: denied with its reason).
    Offer(OfferError),
}

impl TransferError {
    /// False for [`TransferError::NotMine`] and [`TransferError::Misuse`]
    /// (nothing changed); every other error ended the transfer.
    pub fn is_fatal(self) -> bool {
        !matches!(self, TransferError::NotMine | TransferError::Misuse)
    }

    /// The reason sent to the peer when this error ends a transfer.
    pub fn reason(self) -> Reason {
        match self {
            TransferError::HashMismatch { .. } => Reason::HashMismatch,
            TransferError::Offer(o) => o.reason(),
            TransferError::Wire(WireError::UnsupportedVersion(_)) => Reason::UnsupportedVersion,
            _ => Reason::Protocol,
        }
    }

    fn entry(self) -> Option<u16> {
        match self {
            TransferError::HashMismatch { entry }
            | TransferError::Truncated { entry }
            | TransferError::OutOfOrder { entry, .. } => Some(entry),
            _ => None,
        }
    }
}

impl fmt::Display for TransferError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TransferError::NotMine => f.write_str("not a message of this transfer"),
            TransferError::Misuse => f.write_str("call out of turn"),
            TransferError::Wire(e) => write!(f, "malformed message: {e}"),
            TransferError::Unexpected { kind } => write!(f, "unexpected message {kind:#04x}"),
            TransferError::OutOfOrder { entry, offset } => {
                write!(f, "data out of order (entry {entry}, offset {offset})")
            }
            TransferError::WindowExceeded => f.write_str("window exceeded"),
            TransferError::BadAnswer => f.write_str("invalid accept or ack"),
            TransferError::Truncated { entry } => write!(f, "end before entry {entry} complete"),
            TransferError::HashMismatch { entry } => write!(f, "entry {entry}: digest mismatch"),
            TransferError::Offer(o) => write!(f, "offer refused: {o:?}"),
        }
    }
}

/// Checks an offer against the protocol and the given bounds: entry count,
/// total size, every path ([`name::validate_path`]), no two entries in
/// conflict ([`name::conflicts`]), fits one message. The receiver applies it
/// to what it is offered, the sender to what it offers.
pub fn check_offer(
    entries: &[Entry],
    max_entries: usize,
    max_total_size: u64,
) -> Result<(), OfferError> {
    if entries.is_empty() || entries.len() > max_entries.min(wire::MAX_ENTRIES) {
        return Err(OfferError::EntryCount);
    }
    let mut total: u64 = 0;
    let mut len = wire::HEADER_LEN + 2;
    for (i, e) in entries.iter().enumerate() {
        let entry = i as u16; // i < MAX_ENTRIES ≤ u16::MAX
        total = total
            .checked_add(e.size())
            .filter(|t| *t <= max_total_size)
            .ok_or(OfferError::TotalSize)?;
        name::validate_path(&e.path).map_err(|error| OfferError::Name { entry, error })?;
        if entries[..i]
            .iter()
            .any(|o| name::conflicts(&o.path, o.is_dir(), &e.path, e.is_dir()))
        {
            return Err(OfferError::Conflict { entry });
        }
        len += 3 + e.path.len() + if e.is_dir() { 0 } else { 40 };
    }
    if len > wire::MAX_MESSAGE_LEN {
        return Err(OfferError::TooLong);
    }
    Ok(())
}

/// Outbound messages and events of one side, with the terminal outcome.
#[derive(Debug)]
struct Queues<E> {
    out: alloc::collections::VecDeque<Vec<u8>>,
    events: alloc::collections::VecDeque<E>,
    outcome: Option<Outcome>,
}

impl<E> Default for Queues<E> {
    fn default() -> Self {
        Queues {
            out: Default::default(),
            events: Default::default(),
            outcome: None,
        }
    }
}
