//! On-disk format: header sectors and the record image. Pure functions, total on
//! any input (bad bytes give `None`/an error, never a panic).
//!
//! ```text
//! sector 0      slot A header, copy 0      ┐ each a full sector, CRC-32C over
//! sector 1      slot A header, copy 1      │ bytes 0..508 stored at 508..512
//! sector 2      slot B header, copy 0      │
//! sector 3      slot B header, copy 1      ┘
//! sector 4 ..   slot A payload (slot_sectors sectors)
//! then          slot B payload (slot_sectors sectors)
//! ```
//!
//! Header (little-endian): `magic[8] = "NXRECST1"`, `version u16 = 1`, `slot u8`,
//! `copy u8`, `seq u64`, `slot_sectors u32`, `payload_len u32`, `payload_crc u32`,
//! zeros, the magic again at 500..508, `header_crc u32` at 508..512. The magic at
//! both ends means a header write torn over any old contents still carries our
//! magic at one end (or, over a zeroed sector, has non-zero bytes only in the
//! magic/CRC fields), so `open` calls it damaged-ours, never foreign.
//!
//! Payload: `count u32`, then `count` records sorted by key, each `key_len u8`,
//! `value_len u16`, key, value; zero-padded to whole sectors. `payload_crc` is
//! CRC-32C over `seq` (8 bytes LE) followed by every payload sector *including the
//! padding*, so a flipped bit anywhere in a written sector is caught.

use alloc::collections::BTreeMap;
use alloc::vec::Vec;

use crc::{Crc, CRC_32_ISCSI};

use crate::device::SECTOR_SIZE;

/// Magic at the start of every header sector.
pub const MAGIC: [u8; 8] = *b"NXRECST1";
/// Format version written and accepted.
pub const VERSION: u16 = 1;
/// Number of header sectors at the start of the disk.
pub const HEADER_SECTORS: u64 = 4;
/// Longest key in bytes (keys are 1..=64 bytes).
pub const MAX_KEY_LEN: usize = 64;
/// Longest value in bytes.
pub const MAX_VALUE_LEN: usize = 4096;
/// Most records the store holds.
pub const MAX_RECORDS: usize = 128;
/// Largest slot `format` lays out (128 KiB); the encoded image must fit in one slot.
pub const MAX_SLOT_SECTORS: u32 = 256;

pub(crate) const CRC32C: Crc<u32> = Crc::<u32>::new(&CRC_32_ISCSI);
const CRC_AT: usize = SECTOR_SIZE - 4;
const TRAILER_AT: usize = CRC_AT - 8;

/// A decoded, checked header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Header {
    pub slot: u8,
    pub copy: u8,
    pub seq: u64,
    pub slot_sectors: u32,
    pub payload_len: u32,
    pub payload_crc: u32,
}

impl Header {
    /// The same header for the other copy.
    pub fn with_copy(self, copy: u8) -> Self {
        Self { copy, ..self }
    }

    /// Same commit (ignoring which copy it is).
    pub fn same_commit(&self, other: &Self) -> bool {
        self.with_copy(0) == other.with_copy(0)
    }

    pub fn encode(&self) -> [u8; SECTOR_SIZE] {
        let mut s = [0u8; SECTOR_SIZE];
        s[0..8].copy_from_slice(&MAGIC);
        s[8..10].copy_from_slice(&VERSION.to_le_bytes());
        s[10] = self.slot;
        s[11] = self.copy;
        s[12..20].copy_from_slice(&self.seq.to_le_bytes());
        s[20..24].copy_from_slice(&self.slot_sectors.to_le_bytes());
        s[24..28].copy_from_slice(&self.payload_len.to_le_bytes());
        s[28..32].copy_from_slice(&self.payload_crc.to_le_bytes());
        s[TRAILER_AT..CRC_AT].copy_from_slice(&MAGIC);
        let crc = CRC32C.checksum(&s[..CRC_AT]);
        s[CRC_AT..].copy_from_slice(&crc.to_le_bytes());
        s
    }
}

/// What one header sector holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HeaderSector {
    /// All zero bytes: never written.
    Zero,
    /// A valid header of a version we read.
    Valid(Header),
    /// Our magic, but a bad checksum or impossible fields: torn write or rot.
    Damaged,
    /// Our magic and a good checksum, but a format version we do not know.
    OtherVersion(u16),
    /// Neither zero nor our magic: another format, or noise.
    Alien,
}

fn le_u16(b: &[u8]) -> u16 {
    let mut a = [0u8; 2];
    a.copy_from_slice(&b[..2]);
    u16::from_le_bytes(a)
}

pub(crate) fn le_u32(b: &[u8]) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[..4]);
    u32::from_le_bytes(a)
}

fn le_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_le_bytes(a)
}

/// Classifies the header sector found at position (`slot`, `copy`) of a disk with
/// `sector_count` sectors.
pub(crate) fn decode_header(
    s: &[u8; SECTOR_SIZE],
    slot: u8,
    copy: u8,
    sector_count: u64,
) -> HeaderSector {
    if s.iter().all(|&b| b == 0) {
        return HeaderSector::Zero;
    }
    let torn_over_zero = s[8..TRAILER_AT].iter().all(|&b| b == 0);
    if s[0..8] != MAGIC && s[TRAILER_AT..CRC_AT] != MAGIC {
        // Non-zero bytes only where a header has magic and CRC: a header write torn
        // over a zeroed sector (a tear of fewer than 8 bytes at the front or 12 at
        // the back). Anything else without our magic is someone else's.
        return if torn_over_zero {
            HeaderSector::Damaged
        } else {
            HeaderSector::Alien
        };
    }
    if CRC32C.checksum(&s[..CRC_AT]) != le_u32(&s[CRC_AT..]) {
        return HeaderSector::Damaged;
    }
    let version = le_u16(&s[8..10]);
    if version != VERSION {
        return HeaderSector::OtherVersion(version);
    }
    let h = Header {
        slot: s[10],
        copy: s[11],
        seq: le_u64(&s[12..20]),
        slot_sectors: le_u32(&s[20..24]),
        payload_len: le_u32(&s[24..28]),
        payload_crc: le_u32(&s[28..32]),
    };
    let fits = u64::from(h.slot_sectors)
        .checked_mul(2)
        .and_then(|n| n.checked_add(HEADER_SECTORS))
        .is_some_and(|end| end <= sector_count);
    let ok = h.slot == slot
        && h.copy == copy
        && h.seq >= 1
        && h.slot_sectors >= 1
        && h.slot_sectors <= MAX_SLOT_SECTORS
        && fits
        && u64::from(h.payload_len) >= 4
        && u64::from(h.payload_len) <= u64::from(h.slot_sectors) * SECTOR_SIZE as u64
        && s[0..8] == MAGIC
        && s[TRAILER_AT..CRC_AT] == MAGIC
        && s[32..TRAILER_AT].iter().all(|&b| b == 0);
    if ok {
        HeaderSector::Valid(h)
    } else {
        HeaderSector::Damaged
    }
}

/// Sector index of a header copy.
pub(crate) fn header_sector(slot: u8, copy: u8) -> u64 {
    u64::from(slot) * 2 + u64::from(copy)
}

/// First sector of a slot's payload area.
pub(crate) fn payload_start(slot: u8, slot_sectors: u32) -> u64 {
    HEADER_SECTORS + u64::from(slot) * u64::from(slot_sectors)
}

/// Whole sectors needed for `len` payload bytes.
pub(crate) fn sectors_for(len: usize) -> usize {
    len.div_ceil(SECTOR_SIZE)
}

/// CRC-32C over the sequence number and the padded payload sectors.
pub(crate) fn payload_crc(seq: u64, padded: &[u8]) -> u32 {
    let mut d = CRC32C.digest();
    d.update(&seq.to_le_bytes());
    d.update(padded);
    d.finalize()
}

/// Encoded length of a record set (without padding).
pub(crate) fn encoded_len(records: &BTreeMap<Vec<u8>, Vec<u8>>) -> usize {
    4 + records
        .iter()
        .map(|(k, v)| 3 + k.len() + v.len())
        .sum::<usize>()
}

/// Encodes a record set, zero-padded to whole sectors. The caller has checked the
/// bounds (key and value lengths fit their length fields).
pub(crate) fn encode_image(records: &BTreeMap<Vec<u8>, Vec<u8>>) -> Vec<u8> {
    let len = encoded_len(records);
    let mut out = Vec::with_capacity(sectors_for(len) * SECTOR_SIZE);
    out.extend_from_slice(&(records.len() as u32).to_le_bytes());
    for (k, v) in records {
        out.push(k.len() as u8);
        out.extend_from_slice(&(v.len() as u16).to_le_bytes());
        out.extend_from_slice(k);
        out.extend_from_slice(v);
    }
    out.resize(sectors_for(len) * SECTOR_SIZE, 0);
    out
}

/// Decodes a checksummed image of `len` meaningful bytes; `None` if it breaks any
/// rule (bounds, order, duplicates, trailing bytes, non-zero padding).
pub(crate) fn decode_image(padded: &[u8], len: usize) -> Option<BTreeMap<Vec<u8>, Vec<u8>>> {
    let body = padded.get(..len)?;
    if padded[len..].iter().any(|&b| b != 0) {
        return None;
    }
    let count = le_u32(body.get(..4)?) as usize;
    if count > MAX_RECORDS {
        return None;
    }
    let mut records = BTreeMap::new();
    let mut at = 4usize;
    let mut last: Option<&[u8]> = None;
    for _ in 0..count {
        let klen = usize::from(*body.get(at)?);
        let vlen = usize::from(le_u16(body.get(at + 1..at + 3)?));
        at += 3;
        if klen == 0 || klen > MAX_KEY_LEN || vlen > MAX_VALUE_LEN {
            return None;
        }
        let key = body.get(at..at + klen)?;
        let value = body.get(at + klen..at + klen + vlen)?;
        at += klen + vlen;
        if last.is_some_and(|l| l >= key) {
            return None;
        }
        last = Some(key);
        records.insert(key.to_vec(), value.to_vec());
    }
    if at != len {
        return None;
    }
    Some(records)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hdr() -> Header {
        Header {
            slot: 1,
            copy: 0,
            seq: 7,
            slot_sectors: 8,
            payload_len: 45,
            payload_crc: 0xdead_beef,
        }
    }

    #[test]
    fn header_round_trips_and_checks_position() {
        let s = hdr().encode();
        assert_eq!(decode_header(&s, 1, 0, 20), HeaderSector::Valid(hdr()));
        // wrong position, or a disk too small for the layout: damaged, not valid
        assert_eq!(decode_header(&s, 0, 0, 20), HeaderSector::Damaged);
        assert_eq!(decode_header(&s, 1, 1, 20), HeaderSector::Damaged);
        assert_eq!(decode_header(&s, 1, 0, 19), HeaderSector::Damaged);
        assert_eq!(
            decode_header(&[0; SECTOR_SIZE], 0, 0, 20),
            HeaderSector::Zero
        );
    }

    #[test]
    fn torn_header_over_zero_is_ours_at_any_split() {
        let new = hdr().encode();
        for n in 1..SECTOR_SIZE {
            let mut prefix = [0u8; SECTOR_SIZE];
            prefix[..n].copy_from_slice(&new[..n]);
            let mut suffix = [0u8; SECTOR_SIZE];
            suffix[SECTOR_SIZE - n..].copy_from_slice(&new[SECTOR_SIZE - n..]);
            for s in [prefix, suffix] {
                let h = decode_header(&s, 1, 0, 20);
                assert!(
                    matches!(h, HeaderSector::Damaged | HeaderSector::Zero),
                    "split {n}: {h:?}"
                );
            }
        }
    }

    #[test]
    fn image_round_trips_and_rejects_bad_encodings() {
        let mut m = BTreeMap::new();
        m.insert(b"a".to_vec(), b"1".to_vec());
        m.insert(b"bb".to_vec(), alloc::vec![2; 600]);
        let img = encode_image(&m);
        let len = encoded_len(&m);
        assert_eq!(img.len(), 2 * SECTOR_SIZE);
        assert_eq!(decode_image(&img, len), Some(m));
        // unsorted keys
        let mut bad = img.clone();
        bad[7] = b'c';
        assert_eq!(decode_image(&bad, len), None);
        // non-zero padding, trailing bytes, truncation, absurd count
        let mut bad = img.clone();
        bad[len] = 1;
        assert_eq!(decode_image(&bad, len), None);
        assert_eq!(decode_image(&img, len + 1), None);
        assert_eq!(decode_image(&img, len - 1), None);
        let mut bad = img.clone();
        bad[0] = 200;
        assert_eq!(decode_image(&bad, len), None);
        assert_eq!(decode_image(&img, 2 * SECTOR_SIZE + 1), None);
    }
}
