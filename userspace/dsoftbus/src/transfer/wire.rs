//! Transfer messages: codec (`docs/protocol/wire.md` §12). Decoding is total.

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

use crate::session::MAX_DATA_LEN;

/// OFFER (sender → receiver).
pub const KIND_OFFER: u8 = 0x40;
/// ACCEPT (receiver → sender).
pub const KIND_ACCEPT: u8 = 0x41;
/// DENY (receiver → sender).
pub const KIND_DENY: u8 = 0x42;
/// DATA (sender → receiver).
pub const KIND_DATA: u8 = 0x43;
/// ACK (receiver → sender).
pub const KIND_ACK: u8 = 0x44;
/// END (sender → receiver).
pub const KIND_END: u8 = 0x45;
/// DONE (receiver → sender).
pub const KIND_DONE: u8 = 0x46;
/// CANCEL (sender → receiver).
pub const KIND_CANCEL: u8 = 0x47;
/// ABORT (receiver → sender).
pub const KIND_ABORT: u8 = 0x48;
/// First and last kind byte reserved for the transfer protocol.
pub const KIND_RANGE: core::ops::RangeInclusive<u8> = 0x40..=0x4f;
/// A transfer's version (§12.1): the version byte of every message of the
/// transfer, set by its offer. The two versions frame messages alike and
/// differ only in the hash that names each file in the offer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Version {
    /// Version 1: SHA-256 (every node speaks it).
    #[default]
    V1,
    /// Version 2: BLAKE3-256 (32 bytes, like SHA-256), about 4× cheaper
    /// per byte on the project machine (`docs/performance.md`). Offered
    /// only to a peer whose announce lists [`super::V2_SERVICE`].
    V2,
}

impl Version {
    /// The wire byte.
    pub const fn to_u8(self) -> u8 {
        match self {
            Version::V1 => 1,
            Version::V2 => 2,
        }
    }

    /// The version of a wire byte, if it is one this code knows (whether or
    /// not this build can hash it: [`Version::supported`]).
    pub const fn from_u8(b: u8) -> Option<Version> {
        match b {
            1 => Some(Version::V1),
            2 => Some(Version::V2),
            _ => None,
        }
    }

    /// The name of its file hash, for logs and output: `sha256`, `blake3`.
    pub const fn hash_name(self) -> &'static str {
        match self {
            Version::V1 => "sha256",
            Version::V2 => "blake3",
        }
    }

    /// True if this build can check files against this version's hash (a
    /// receiver denies an offer of another version `unsupported-version`).
    /// Version 2 needs the `transfer-v2` feature (the OS image leaves it
    /// out).
    pub const fn supported(self) -> bool {
        match self {
            Version::V1 => true,
            Version::V2 => cfg!(feature = "transfer-v2"),
        }
    }
}
/// Bytes before every body: kind, version, transfer id.
pub const HEADER_LEN: usize = 6;
/// Longest message: one session data message.
pub const MAX_MESSAGE_LEN: usize = MAX_DATA_LEN;
/// DATA bytes before the file bytes: header, entry, offset.
pub const DATA_HEADER_LEN: usize = HEADER_LEN + 2 + 8;
/// Most file bytes in one DATA message.
pub const MAX_CHUNK: usize = MAX_MESSAGE_LEN - DATA_HEADER_LEN;
/// Most entries in one offer.
pub const MAX_ENTRIES: usize = 1024;
/// `entry` value of CANCEL/ABORT that names no entry.
pub const NO_ENTRY: u16 = 0xffff;

/// True for kinds the sender of a transfer sends (OFFER, DATA, END,
/// CANCEL); the others go from the receiver to the sender.
pub fn from_sender(kind: u8) -> bool {
    matches!(kind, KIND_OFFER | KIND_DATA | KIND_END | KIND_CANCEL)
}

/// Why a transfer was refused or ended (DENY, CANCEL, ABORT).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reason {
    /// The user (or its policy) said no, or gave up.
    Declined,
    /// Nobody answered in time, or the transfer stalled.
    Expired,
    /// A path in the offer breaks the name rules (§12.4).
    InvalidName,
    /// Over a bound: entries, total size.
    TooLarge,
    /// Too many transfers in progress.
    Busy,
    /// A malformed or unexpected message.
    Protocol,
    /// A file's bytes do not match its offered digest.
    HashMismatch,
    /// Local storage or reading failed.
    Io,
    /// The peer's transfer version is not supported.
    UnsupportedVersion,
    /// A code this implementation does not know (kept, not an error).
    Other(u8),
}

impl Reason {
    /// The wire byte.
    pub fn to_u8(self) -> u8 {
        match self {
            Reason::Declined => 0,
            Reason::Expired => 1,
            Reason::InvalidName => 2,
            Reason::TooLarge => 3,
            Reason::Busy => 4,
            Reason::Protocol => 5,
            Reason::HashMismatch => 6,
            Reason::Io => 7,
            Reason::UnsupportedVersion => 8,
            Reason::Other(b) => b,
        }
    }

    /// The reason for a wire byte (total).
    pub fn from_u8(b: u8) -> Reason {
        match b {
            0 => Reason::Declined,
            1 => Reason::Expired,
            2 => Reason::InvalidName,
            3 => Reason::TooLarge,
            4 => Reason::Busy,
            5 => Reason::Protocol,
            6 => Reason::HashMismatch,
            7 => Reason::Io,
            8 => Reason::UnsupportedVersion,
            b => Reason::Other(b),
        }
    }

    /// Short name for logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Declined => "declined",
            Reason::Expired => "expired",
            Reason::InvalidName => "invalid-name",
            Reason::TooLarge => "too-large",
            Reason::Busy => "busy",
            Reason::Protocol => "protocol",
            Reason::HashMismatch => "hash-mismatch",
            Reason::Io => "io",
            Reason::UnsupportedVersion => "unsupported-version",
            Reason::Other(_) => "other",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::Other(b) => write!(f, "other({b})"),
            r => f.write_str(r.as_str()),
        }
    }
}

/// What an offered entry is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntryKind {
    /// A regular file of `size` bytes with this digest.
    File {
        /// Bytes.
        size: u64,
        /// The transfer version's hash of the whole file: SHA-256 (v1) or
        /// BLAKE3-256 (v2).
        digest: [u8; 32],
    },
    /// A directory (so that empty ones arrive too).
    Dir,
}

/// One entry of an offer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Relative `/`-separated path (the name rules of §12.4).
    pub path: String,
    /// File or directory.
    pub kind: EntryKind,
}

impl Entry {
    /// File size (0 for a directory).
    pub fn size(&self) -> u64 {
        match self.kind {
            EntryKind::File { size, .. } => size,
            EntryKind::Dir => 0,
        }
    }

    /// True for a directory.
    pub fn is_dir(&self) -> bool {
        self.kind == EntryKind::Dir
    }
}

/// A decoded message. DATA borrows its bytes from the input.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message<'a> {
    /// Offer of entries, in the order their data will come.
    Offer {
        /// Transfer id (chosen by the sender).
        id: u32,
        /// 1..=[`MAX_ENTRIES`] entries.
        entries: Vec<Entry>,
    },
    /// The receiver accepts; the sender sends each file from `offsets[i]`.
    Accept {
        /// Transfer id.
        id: u32,
        /// Most unacknowledged data bytes the sender may have in flight (≥ 1).
        window: u32,
        /// Most bytes per DATA (1..=[`MAX_CHUNK`]).
        max_chunk: u32,
        /// Per entry: the verified prefix the receiver already holds.
        offsets: Vec<u64>,
    },
    /// The receiver refuses the offer.
    Deny {
        /// Transfer id.
        id: u32,
        /// Why.
        reason: Reason,
    },
    /// File bytes.
    Data {
        /// Transfer id.
        id: u32,
        /// Entry index in the offer.
        entry: u16,
        /// Byte offset in the file.
        offset: u64,
        /// 1..=[`MAX_CHUNK`] bytes.
        data: &'a [u8],
    },
    /// Data bytes the receiver has consumed since ACCEPT (cumulative).
    Ack {
        /// Transfer id.
        id: u32,
        /// Cumulative count.
        received: u64,
    },
    /// The sender has sent everything.
    End {
        /// Transfer id.
        id: u32,
    },
    /// The receiver verified every file.
    Done {
        /// Transfer id.
        id: u32,
    },
    /// The sender gives up.
    Cancel {
        /// Transfer id.
        id: u32,
        /// Why.
        reason: Reason,
        /// The entry concerned, if any.
        entry: Option<u16>,
    },
    /// The receiver gives up.
    Abort {
        /// Transfer id.
        id: u32,
        /// Why.
        reason: Reason,
        /// The entry concerned, if any.
        entry: Option<u16>,
    },
}

/// Why bytes are not a valid transfer message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WireError {
    /// Empty, or the first byte is outside 0x40..=0x4f: not ours.
    NotTransfer,
    /// Longer than [`MAX_MESSAGE_LEN`]; refused before parsing.
    Oversized,
    /// Ends before a field.
    Truncated,
    /// A version byte that is no [`Version`].
    UnsupportedVersion(u8),
    /// A kind in 0x40..=0x4f that is not assigned.
    UnknownKind(u8),
    /// A path that is not UTF-8.
    Utf8,
    /// A field out of range (no entries, too many, a path length 0 or over
    /// the bound, an entry type, an empty or oversized chunk, window 0, ...)
    /// or bytes after the last field.
    InvalidInput,
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WireError::NotTransfer => f.write_str("not transfer"),
            WireError::Oversized => f.write_str("oversized"),
            WireError::Truncated => f.write_str("truncated"),
            WireError::UnsupportedVersion(v) => write!(f, "unsupported version {v}"),
            WireError::UnknownKind(k) => write!(f, "unknown kind {k:#04x}"),
            WireError::Utf8 => f.write_str("invalid utf-8"),
            WireError::InvalidInput => f.write_str("invalid input"),
        }
    }
}

/// The header every message starts with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// The kind byte (`0x40..=0x4f`).
    pub kind: u8,
    /// The transfer's version.
    pub version: Version,
    /// The transfer id.
    pub id: u32,
}

/// The header of a message, for routing it to its sender or receiver state
/// machine. Checks kind range, length and version only.
pub fn header(b: &[u8]) -> Result<Header, WireError> {
    let kind = *b.first().ok_or(WireError::NotTransfer)?;
    if !KIND_RANGE.contains(&kind) {
        return Err(WireError::NotTransfer);
    }
    if b.len() > MAX_MESSAGE_LEN {
        return Err(WireError::Oversized);
    }
    let h = b.get(..HEADER_LEN).ok_or(WireError::Truncated)?;
    let version = Version::from_u8(h[1]).ok_or(WireError::UnsupportedVersion(h[1]))?;
    Ok(Header {
        kind,
        version,
        id: u32::from_be_bytes([h[2], h[3], h[4], h[5]]),
    })
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        if self.0.len() < n {
            return Err(WireError::Truncated);
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }
    fn u8(&mut self) -> Result<u8, WireError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, WireError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Result<u32, WireError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self) -> Result<u64, WireError> {
        let mut a = [0u8; 8];
        a.copy_from_slice(self.take(8)?);
        Ok(u64::from_be_bytes(a))
    }
    fn end(&self) -> Result<(), WireError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(WireError::InvalidInput)
        }
    }
}

fn entry_opt(e: u16) -> Option<u16> {
    (e != NO_ENTRY).then_some(e)
}

/// Decodes one message (of either [`Version`]: they frame alike; the
/// version is [`header`]'s). Total: every input gives a message or an
/// error. Checks, in order: kind range (`NotTransfer`), length
/// (`Oversized`), header (`Truncated`), version, kind assigned, then fields
/// in order.
pub fn decode(b: &[u8]) -> Result<Message<'_>, WireError> {
    let Header { kind, id, .. } = header(b)?;
    if kind > KIND_ABORT {
        return Err(WireError::UnknownKind(kind));
    }
    let mut r = Reader(&b[HEADER_LEN..]);
    let m = match kind {
        KIND_OFFER => {
            let n = usize::from(r.u16()?);
            if n == 0 || n > MAX_ENTRIES {
                return Err(WireError::InvalidInput);
            }
            let mut entries = Vec::with_capacity(n.min(64));
            for _ in 0..n {
                let t = r.u8()?;
                let len = usize::from(r.u16()?);
                if len == 0 || len > super::name::MAX_PATH_LEN {
                    return Err(WireError::InvalidInput);
                }
                let raw = r.take(len)?;
                let path = core::str::from_utf8(raw).map_err(|_| WireError::Utf8)?;
                let kind = match t {
                    0 => {
                        let size = r.u64()?;
                        let mut digest = [0u8; 32];
                        digest.copy_from_slice(r.take(32)?);
                        EntryKind::File { size, digest }
                    }
                    1 => EntryKind::Dir,
                    _ => return Err(WireError::InvalidInput),
                };
                entries.push(Entry {
                    path: String::from(path),
                    kind,
                });
            }
            Message::Offer { id, entries }
        }
        KIND_ACCEPT => {
            let window = r.u32()?;
            let max_chunk = r.u32()?;
            if window == 0 || max_chunk == 0 || max_chunk as usize > MAX_CHUNK {
                return Err(WireError::InvalidInput);
            }
            let n = usize::from(r.u16()?);
            if n == 0 || n > MAX_ENTRIES {
                return Err(WireError::InvalidInput);
            }
            let mut offsets = Vec::with_capacity(n.min(64));
            for _ in 0..n {
                offsets.push(r.u64()?);
            }
            Message::Accept {
                id,
                window,
                max_chunk,
                offsets,
            }
        }
        KIND_DENY => Message::Deny {
            id,
            reason: Reason::from_u8(r.u8()?),
        },
        KIND_DATA => {
            let entry = r.u16()?;
            let offset = r.u64()?;
            let data = r.0;
            if data.is_empty() {
                return Err(WireError::InvalidInput);
            }
            r.0 = &[];
            Message::Data {
                id,
                entry,
                offset,
                data,
            }
        }
        KIND_ACK => Message::Ack {
            id,
            received: r.u64()?,
        },
        KIND_END => Message::End { id },
        KIND_DONE => Message::Done { id },
        KIND_CANCEL | KIND_ABORT => {
            let reason = Reason::from_u8(r.u8()?);
            let entry = entry_opt(r.u16()?);
            if kind == KIND_CANCEL {
                Message::Cancel { id, reason, entry }
            } else {
                Message::Abort { id, reason, entry }
            }
        }
        k => return Err(WireError::UnknownKind(k)),
    };
    r.end()?;
    Ok(m)
}

fn head(v: &mut Vec<u8>, kind: u8, version: Version, id: u32) {
    v.push(kind);
    v.push(version.to_u8());
    v.extend_from_slice(&id.to_be_bytes());
}

/// The first [`DATA_HEADER_LEN`] bytes of a DATA message; its file bytes
/// follow them.
pub fn data_header(version: Version, id: u32, entry: u16, offset: u64) -> [u8; DATA_HEADER_LEN] {
    let mut h = [0u8; DATA_HEADER_LEN];
    h[0] = KIND_DATA;
    h[1] = version.to_u8();
    h[2..6].copy_from_slice(&id.to_be_bytes());
    h[6..8].copy_from_slice(&entry.to_be_bytes());
    h[8..].copy_from_slice(&offset.to_be_bytes());
    h
}

/// Encodes a DATA message without building a [`Message`].
pub fn encode_data(version: Version, id: u32, entry: u16, offset: u64, data: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(DATA_HEADER_LEN + data.len());
    v.extend_from_slice(&data_header(version, id, entry, offset));
    v.extend_from_slice(data);
    v
}

impl Message<'_> {
    /// The transfer id.
    pub fn id(&self) -> u32 {
        match self {
            Message::Offer { id, .. }
            | Message::Accept { id, .. }
            | Message::Deny { id, .. }
            | Message::Data { id, .. }
            | Message::Ack { id, .. }
            | Message::End { id }
            | Message::Done { id }
            | Message::Cancel { id, .. }
            | Message::Abort { id, .. } => *id,
        }
    }

    /// Encodes the message as one of a transfer of `version`. Lengths are
    /// written as given (an entry count, path length or offset count over
    /// `u16` is cut): build messages through the state machines, which only
    /// make valid ones.
    pub fn encode(&self, version: Version) -> Vec<u8> {
        let mut v = Vec::with_capacity(64);
        match self {
            Message::Offer { id, entries } => {
                head(&mut v, KIND_OFFER, version, *id);
                v.extend_from_slice(&(entries.len() as u16).to_be_bytes());
                for e in entries {
                    v.push(u8::from(e.is_dir()));
                    let p = e.path.as_bytes();
                    v.extend_from_slice(&(p.len() as u16).to_be_bytes());
                    v.extend_from_slice(p);
                    if let EntryKind::File { size, digest } = e.kind {
                        v.extend_from_slice(&size.to_be_bytes());
                        v.extend_from_slice(&digest);
                    }
                }
            }
            Message::Accept {
                id,
                window,
                max_chunk,
                offsets,
            } => {
                head(&mut v, KIND_ACCEPT, version, *id);
                v.extend_from_slice(&window.to_be_bytes());
                v.extend_from_slice(&max_chunk.to_be_bytes());
                v.extend_from_slice(&(offsets.len() as u16).to_be_bytes());
                for o in offsets {
                    v.extend_from_slice(&o.to_be_bytes());
                }
            }
            Message::Deny { id, reason } => {
                head(&mut v, KIND_DENY, version, *id);
                v.push(reason.to_u8());
            }
            Message::Data {
                id,
                entry,
                offset,
                data,
            } => return encode_data(version, *id, *entry, *offset, data),
            Message::Ack { id, received } => {
                head(&mut v, KIND_ACK, version, *id);
                v.extend_from_slice(&received.to_be_bytes());
            }
            Message::End { id } => head(&mut v, KIND_END, version, *id),
            Message::Done { id } => head(&mut v, KIND_DONE, version, *id),
            Message::Cancel { id, reason, entry } | Message::Abort { id, reason, entry } => {
                let k = if matches!(self, Message::Cancel { .. }) {
                    KIND_CANCEL
                } else {
                    KIND_ABORT
                };
                head(&mut v, k, version, *id);
                v.push(reason.to_u8());
                v.extend_from_slice(&entry.unwrap_or(NO_ENTRY).to_be_bytes());
            }
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all() -> Vec<Vec<u8>> {
        let e = |p: &str, kind| Entry {
            path: p.into(),
            kind,
        };
        let msgs = [
            Message::Offer {
                id: 7,
                entries: alloc::vec![
                    e("d", EntryKind::Dir),
                    e(
                        "d/f",
                        EntryKind::File {
                            size: 1 << 40,
                            digest: [3; 32],
                        },
                    ),
                ],
            },
            Message::Accept {
                id: 7,
                window: 9,
                max_chunk: 5,
                offsets: alloc::vec![0, 4],
            },
            Message::Deny {
                id: 7,
                reason: Reason::Other(200),
            },
            Message::Data {
                id: 7,
                entry: 1,
                offset: 4,
                data: b"abc",
            },
            Message::Ack { id: 7, received: 3 },
            Message::End { id: 7 },
            Message::Done { id: 7 },
            Message::Cancel {
                id: 7,
                reason: Reason::Io,
                entry: Some(1),
            },
            Message::Abort {
                id: 7,
                reason: Reason::HashMismatch,
                entry: None,
            },
        ];
        let mut out = Vec::new();
        for m in msgs {
            for v in [Version::V1, Version::V2] {
                let b = m.encode(v);
                assert_eq!(decode(&b), Ok(m.clone()), "round trip");
                let h = header(&b).unwrap();
                assert_eq!((h.kind, h.version, h.id), (b[0], v, 7));
                out.push(b);
            }
        }
        out
    }

    #[test]
    fn versions_differ_in_the_version_byte_only() {
        let b: Vec<(Vec<u8>, Vec<u8>)> = all()
            .chunks(2)
            .map(|p| (p[0].clone(), p[1].clone()))
            .collect();
        for (v1, v2) in b {
            assert_eq!((v1[1], v2[1]), (1, 2));
            assert_eq!((&v1[..1], &v1[2..]), (&v2[..1], &v2[2..]));
        }
        for b in 0..=255u8 {
            assert_eq!(
                Version::from_u8(b).map(Version::to_u8),
                (1..=2).contains(&b).then_some(b)
            );
        }
        assert_eq!(data_header(Version::V2, 7, 1, 4)[1], 2);
    }

    #[test]
    fn every_kind_round_trips_and_every_cut_is_an_error() {
        for b in all() {
            for n in 0..b.len() {
                // A DATA cut after its header is a shorter DATA (the
                // carrier delimits messages); the receiver's offset check
                // catches the gap.
                let shorter_data = b[0] == KIND_DATA && n > DATA_HEADER_LEN;
                assert_eq!(decode(&b[..n]).is_ok(), shorter_data, "{b:02x?} cut at {n}");
            }
            let mut longer = b.clone();
            longer.push(0);
            // DATA takes the rest as bytes; everything else refuses a tail.
            assert_eq!(decode(&longer).is_ok(), b[0] == KIND_DATA);
        }
    }

    #[test]
    fn header_rules_in_order() {
        assert_eq!(decode(&[]), Err(WireError::NotTransfer));
        assert_eq!(decode(&[0x20, 1]), Err(WireError::NotTransfer));
        assert_eq!(decode(&[0x50]), Err(WireError::NotTransfer));
        assert_eq!(decode(&[0x40; 70_000]), Err(WireError::Oversized));
        assert_eq!(decode(&[0x40, 1, 0]), Err(WireError::Truncated));
        assert_eq!(
            decode(&[0x45, 3, 0, 0, 0, 1]),
            Err(WireError::UnsupportedVersion(3))
        );
        assert_eq!(
            decode(&[0x45, 0, 0, 0, 0, 1]),
            Err(WireError::UnsupportedVersion(0))
        );
        assert_eq!(
            decode(&[0x49, 1, 0, 0, 0, 1]),
            Err(WireError::UnknownKind(0x49))
        );
        assert_eq!(
            header(&[0x4f, 2, 0, 0, 1, 0]),
            Ok(Header {
                kind: 0x4f,
                version: Version::V2,
                id: 256
            })
        );
        for r in 0..=255u8 {
            assert_eq!(Reason::from_u8(r).to_u8(), r);
        }
    }

    #[test]
    fn field_rules() {
        // Zero entries, entry type 2, empty path, non-UTF-8 path.
        assert_eq!(
            decode(&[0x40, 1, 0, 0, 0, 1, 0, 0]),
            Err(WireError::InvalidInput)
        );
        let bad_type = [0x40, 1, 0, 0, 0, 1, 0, 1, 2, 0, 1, b'a'];
        assert_eq!(decode(&bad_type), Err(WireError::InvalidInput));
        let empty_path = [0x40, 1, 0, 0, 0, 1, 0, 1, 1, 0, 0];
        assert_eq!(decode(&empty_path), Err(WireError::InvalidInput));
        let non_utf8 = [0x40, 1, 0, 0, 0, 1, 0, 1, 1, 0, 1, 0xff];
        assert_eq!(decode(&non_utf8), Err(WireError::Utf8));
        // Empty DATA; ACCEPT with window 0 or chunk over the bound.
        assert_eq!(
            decode(&encode_data(Version::V1, 1, 0, 0, &[])),
            Err(WireError::InvalidInput)
        );
        let acc = |w: u32, c: u32| {
            Message::Accept {
                id: 1,
                window: w,
                max_chunk: c,
                offsets: alloc::vec![0],
            }
            .encode(Version::V1)
        };
        assert_eq!(decode(&acc(0, 1)), Err(WireError::InvalidInput));
        assert_eq!(decode(&acc(1, 0)), Err(WireError::InvalidInput));
        assert_eq!(
            decode(&acc(1, MAX_CHUNK as u32 + 1)),
            Err(WireError::InvalidInput)
        );
        assert!(decode(&acc(1, MAX_CHUNK as u32)).is_ok());
        // The largest DATA fits exactly one message.
        let big = encode_data(Version::V2, 1, 0, 0, &[0; MAX_CHUNK]);
        assert_eq!(big.len(), MAX_MESSAGE_LEN);
        assert!(decode(&big).is_ok());
    }
}
