//! The store: open / format / get / put / delete over a [`BlockDevice`].

use alloc::collections::BTreeMap;
use alloc::vec;
use alloc::vec::Vec;
use core::fmt;

use crate::device::{BlockDevice, SECTOR_SIZE};
use crate::layout::{
    decode_header, decode_image, encode_image, encoded_len, header_sector, payload_crc,
    payload_start, sectors_for, Header, HeaderSector, HEADER_SECTORS, MAX_KEY_LEN, MAX_RECORDS,
    MAX_SLOT_SECTORS, MAX_VALUE_LEN,
};

/// Smallest device the store accepts: four header sectors and one sector per slot.
pub const MIN_SECTORS: u64 = HEADER_SECTORS + 2;

/// Why [`Store::open`] refused a disk. `open` never writes to a disk it refuses
/// and never formats; [`Store::format`] is a separate, explicit call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenError<E> {
    /// Every header sector is zero (a new disk), or a `format` was cut before its
    /// first header write completed: nothing was ever committed here.
    Empty,
    /// No header carries our magic: another format, or random bytes.
    Foreign,
    /// Our format, but damaged in a way no power cut can produce: bit rot, a
    /// misdirected write, or tampering. Committed data may be lost; refuse.
    Corrupt(Corruption),
    /// Our magic with a format version this code does not read.
    UnsupportedVersion(u16),
    /// The device has fewer than [`MIN_SECTORS`] sectors. (A disk shrunk below the
    /// layout its headers name opens as `Corrupt`.)
    TooSmall,
    /// The device failed.
    Device(E),
}

/// Which check failed for [`OpenError::Corrupt`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Corruption {
    /// Some header sectors carry our magic but none is valid.
    NoValidHeader,
    /// One slot is valid; the other has no valid header copy but carries our magic
    /// (it might have held the newest commit).
    HeaderDamaged,
    /// Two valid copies of one slot's header name the same sequence number but
    /// disagree, or the two slots disagree on the layout.
    HeaderMismatch,
    /// Both slots claim the same sequence number.
    SameSequence,
    /// The newest slot's payload fails its checksum.
    PayloadChecksum,
    /// The newest slot's payload has a good checksum but breaks the record format.
    PayloadFormat,
}

/// Why a [`Store::put`], [`Store::delete`] or [`Store::format`] failed. On any error
/// the store's contents (in memory and on disk) are those before the call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error<E> {
    /// Key empty or longer than [`MAX_KEY_LEN`].
    InvalidKey,
    /// Value longer than [`MAX_VALUE_LEN`].
    ValueTooLong,
    /// Already [`MAX_RECORDS`] records.
    TooManyRecords,
    /// The encoded records would not fit in one slot.
    Full,
    /// The device has fewer than [`MIN_SECTORS`] sectors.
    TooSmall,
    /// An earlier write failed; the on-disk state is uncertain until the store is
    /// reopened with [`Store::open`] (which recovers it).
    Poisoned,
    /// The device failed. The store is poisoned afterwards.
    Device(E),
}

impl<E: fmt::Debug> fmt::Display for OpenError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Empty => f.write_str("store empty (never formatted)"),
            Self::Foreign => f.write_str("not a record store (foreign data)"),
            Self::Corrupt(c) => write!(f, "store corrupt: {c:?}"),
            Self::UnsupportedVersion(v) => write!(f, "store format version {v} not supported"),
            Self::TooSmall => f.write_str("device too small"),
            Self::Device(e) => write!(f, "device error: {e:?}"),
        }
    }
}

impl<E: fmt::Debug> fmt::Display for Error<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InvalidKey => write!(f, "key must be 1..={MAX_KEY_LEN} bytes"),
            Self::ValueTooLong => write!(f, "value longer than {MAX_VALUE_LEN} bytes"),
            Self::TooManyRecords => write!(f, "more than {MAX_RECORDS} records"),
            Self::Full => f.write_str("records do not fit in a slot"),
            Self::TooSmall => f.write_str("device too small"),
            Self::Poisoned => f.write_str("an earlier write failed; reopen the store"),
            Self::Device(e) => write!(f, "device error: {e:?}"),
        }
    }
}

#[cfg(feature = "std")]
impl<E: fmt::Debug> std::error::Error for OpenError<E> {}
#[cfg(feature = "std")]
impl<E: fmt::Debug> std::error::Error for Error<E> {}

/// The state of the slot that does not hold the newest commit, as `open` found it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StaleSlot {
    /// Never written since `format`.
    Unused,
    /// Holds the previous commit, checksum good.
    Intact,
    /// A damaged header copy or payload: an interrupted commit (power cut) or bit
    /// rot. It holds no live data and is overwritten by the next `put`/`delete`.
    Damaged,
}

/// What `open` found and fixed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenReport {
    /// Sequence number of the commit that was loaded.
    pub seq: u64,
    /// Slot (0 = A, 1 = B) that holds it.
    pub slot: u8,
    /// Header copies of the loaded slot that were missing or damaged (an
    /// interrupted commit or bit rot) and were rewritten from the good copy.
    pub header_repairs: u8,
    /// The other slot.
    pub stale: StaleSlot,
}

impl OpenReport {
    /// True when open found nothing to repair or report.
    pub fn clean(&self) -> bool {
        self.header_repairs == 0 && self.stale != StaleSlot::Damaged
    }
}

/// Write counters since the store was opened or formatted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Committed `put`/`delete` calls (no-op calls write nothing and are not counted).
    pub commits: u64,
    /// Sectors written.
    pub sectors_written: u64,
    /// Flushes issued.
    pub flushes: u64,
}

/// A crash-consistent key → value store on a block device.
///
/// All records live in memory; every `put`/`delete` writes the whole record image
/// to the slot not holding the newest commit, flushes, then commits by writing that
/// slot's two header copies (one flush each). See `docs/storage.md`.
pub struct Store<D: BlockDevice> {
    dev: D,
    records: BTreeMap<Vec<u8>, Vec<u8>>,
    seq: u64,
    active: u8,
    slot_sectors: u32,
    poisoned: bool,
    stats: Stats,
}

#[derive(Clone, Copy)]
enum SlotState {
    Valid { hdr: Header, repair: Option<u8> },
    Unused,
    Bad { ours: bool },
}

fn classify(c: [HeaderSector; 2]) -> Result<SlotState, Corruption> {
    match c {
        [HeaderSector::Valid(a), HeaderSector::Valid(b)] => {
            if a.same_commit(&b) {
                Ok(SlotState::Valid {
                    hdr: a,
                    repair: None,
                })
            } else if a.seq > b.seq {
                // Cut between the two header writes: copy 0 is the newer.
                Ok(SlotState::Valid {
                    hdr: a,
                    repair: Some(1),
                })
            } else if b.seq > a.seq {
                Ok(SlotState::Valid {
                    hdr: b,
                    repair: Some(0),
                })
            } else {
                Err(Corruption::HeaderMismatch)
            }
        }
        [HeaderSector::Valid(a), _] => Ok(SlotState::Valid {
            hdr: a,
            repair: Some(1),
        }),
        [_, HeaderSector::Valid(b)] => Ok(SlotState::Valid {
            hdr: b,
            repair: Some(0),
        }),
        // A never-written slot, or one whose first-ever header write was torn.
        [HeaderSector::Zero, HeaderSector::Zero | HeaderSector::Damaged]
        | [HeaderSector::Damaged, HeaderSector::Zero] => Ok(SlotState::Unused),
        [a, b] => {
            let ours = |h: HeaderSector| {
                matches!(h, HeaderSector::Damaged | HeaderSector::OtherVersion(_))
            };
            Ok(SlotState::Bad {
                ours: ours(a) || ours(b),
            })
        }
    }
}

impl<D: BlockDevice> Store<D> {
    /// Opens a formatted store: finds the newest valid commit, checks it, and
    /// rewrites a missing or damaged header copy of that commit (the only write
    /// `open` ever makes). Refuses empty, foreign and corrupt disks.
    pub fn open(mut dev: D) -> Result<(Self, OpenReport), OpenError<D::Error>> {
        let n = dev.sector_count();
        if n < MIN_SECTORS {
            return Err(OpenError::TooSmall);
        }
        let mut raw = [0u8; SECTOR_SIZE * HEADER_SECTORS as usize];
        dev.read(0, &mut raw).map_err(OpenError::Device)?;
        let mut hs = [HeaderSector::Zero; 4];
        for (i, h) in hs.iter_mut().enumerate() {
            let mut s = [0u8; SECTOR_SIZE];
            s.copy_from_slice(&raw[i * SECTOR_SIZE..(i + 1) * SECTOR_SIZE]);
            *h = decode_header(&s, (i / 2) as u8, (i % 2) as u8, n);
        }
        let slots = [
            classify([hs[0], hs[1]]).map_err(OpenError::Corrupt)?,
            classify([hs[2], hs[3]]).map_err(OpenError::Corrupt)?,
        ];
        let (chosen, repair, stale) = match slots {
            [SlotState::Valid { hdr: a, repair: ra }, SlotState::Valid { hdr: b, repair: rb }] => {
                if a.slot_sectors != b.slot_sectors {
                    return Err(OpenError::Corrupt(Corruption::HeaderMismatch));
                }
                if a.seq == b.seq {
                    return Err(OpenError::Corrupt(Corruption::SameSequence));
                }
                if a.seq > b.seq {
                    (a, ra, Some((b, rb.is_some())))
                } else {
                    (b, rb, Some((a, ra.is_some())))
                }
            }
            [SlotState::Valid { hdr, repair }, other]
            | [other, SlotState::Valid { hdr, repair }] => match other {
                SlotState::Bad { ours: true } => {
                    return Err(OpenError::Corrupt(Corruption::HeaderDamaged))
                }
                _ => (hdr, repair, None),
            },
            [SlotState::Unused, SlotState::Unused] => return Err(OpenError::Empty),
            _ => {
                if let Some(v) = hs.iter().find_map(|h| match h {
                    HeaderSector::OtherVersion(v) => Some(*v),
                    _ => None,
                }) {
                    return Err(OpenError::UnsupportedVersion(v));
                }
                let foreign = hs
                    .iter()
                    .all(|h| matches!(h, HeaderSector::Zero | HeaderSector::Alien));
                return Err(if foreign {
                    OpenError::Foreign
                } else {
                    OpenError::Corrupt(Corruption::NoValidHeader)
                });
            }
        };
        let stale_bad_junk = matches!(slots[usize::from(1 - chosen.slot)], SlotState::Bad { .. });

        let padded = read_payload(&mut dev, &chosen).map_err(OpenError::Device)?;
        if payload_crc(chosen.seq, &padded) != chosen.payload_crc {
            return Err(OpenError::Corrupt(Corruption::PayloadChecksum));
        }
        let records = decode_image(&padded, chosen.payload_len as usize)
            .ok_or(OpenError::Corrupt(Corruption::PayloadFormat))?;

        let stale = match stale {
            Some((h, header_damaged)) => {
                let p = read_payload(&mut dev, &h).map_err(OpenError::Device)?;
                if !header_damaged && payload_crc(h.seq, &p) == h.payload_crc {
                    StaleSlot::Intact
                } else {
                    StaleSlot::Damaged
                }
            }
            None if stale_bad_junk => StaleSlot::Damaged,
            None => StaleSlot::Unused,
        };

        let mut stats = Stats::default();
        let mut header_repairs = 0;
        if let Some(copy) = repair {
            let s = chosen.with_copy(copy).encode();
            dev.write(header_sector(chosen.slot, copy), &s)
                .map_err(OpenError::Device)?;
            dev.flush().map_err(OpenError::Device)?;
            stats.sectors_written += 1;
            stats.flushes += 1;
            header_repairs = 1;
        }
        let report = OpenReport {
            seq: chosen.seq,
            slot: chosen.slot,
            header_repairs,
            stale,
        };
        Ok((
            Self {
                dev,
                records,
                seq: chosen.seq,
                active: chosen.slot,
                slot_sectors: chosen.slot_sectors,
                poisoned: false,
                stats,
            },
            report,
        ))
    }

    /// Lays out an empty store, destroying whatever the disk held. Call it only on
    /// purpose (first boot after `open` said [`OpenError::Empty`], or an explicit
    /// reset). A power cut during `format` leaves the old contents, an empty disk
    /// ([`OpenError::Empty`]), the new empty store, or — when the old contents were
    /// foreign or corrupt — a refusal; never a mix of old records.
    pub fn format(mut dev: D) -> Result<Self, Error<D::Error>> {
        let n = dev.sector_count();
        if n < MIN_SECTORS {
            return Err(Error::TooSmall);
        }
        let slot_sectors = u32::try_from((n - HEADER_SECTORS) / 2)
            .unwrap_or(MAX_SLOT_SECTORS)
            .min(MAX_SLOT_SECTORS);
        let mut stats = Stats::default();

        // 1. Erase the four header sectors, older commit first, so that a cut leaves
        //    the newest old commit readable or nothing at all (never an older one).
        let mut raw = [0u8; SECTOR_SIZE * HEADER_SECTORS as usize];
        dev.read(0, &mut raw).map_err(Error::Device)?;
        let seq_of = |slot: usize| {
            (0..2)
                .filter_map(|c| {
                    let i = slot * 2 + c;
                    let mut s = [0u8; SECTOR_SIZE];
                    s.copy_from_slice(&raw[i * SECTOR_SIZE..(i + 1) * SECTOR_SIZE]);
                    match decode_header(&s, slot as u8, c as u8, n) {
                        HeaderSector::Valid(h) => Some(h.seq),
                        _ => None,
                    }
                })
                .max()
                .unwrap_or(0)
        };
        let order: [u8; 2] = if seq_of(0) > seq_of(1) {
            [1, 0]
        } else {
            [0, 1]
        };
        let zero = [0u8; SECTOR_SIZE];
        for slot in order {
            let mut wrote = false;
            for copy in 0..2u8 {
                let i = header_sector(slot, copy) as usize;
                if raw[i * SECTOR_SIZE..(i + 1) * SECTOR_SIZE]
                    .iter()
                    .any(|&b| b != 0)
                {
                    dev.write(header_sector(slot, copy), &zero)
                        .map_err(Error::Device)?;
                    stats.sectors_written += 1;
                    wrote = true;
                }
            }
            if wrote {
                dev.flush().map_err(Error::Device)?;
                stats.flushes += 1;
            }
        }

        // 2. Commit an empty image to slot A with sequence number 1.
        let mut store = Self {
            dev,
            records: BTreeMap::new(),
            seq: 0,
            active: 1,
            slot_sectors,
            poisoned: false,
            stats,
        };
        let image = encode_image(&store.records);
        store.commit(&image, encoded_len(&store.records))?;
        Ok(store)
    }

    /// The value stored under `key`.
    pub fn get(&self, key: &[u8]) -> Option<&[u8]> {
        self.records.get(key).map(Vec::as_slice)
    }

    /// Stores `value` under `key`, atomically and durably: when this returns `Ok`
    /// the record is on disk; after a power cut during the call, reopening yields
    /// either the old or the new value, and every other record unchanged. Storing
    /// the value a key already has writes nothing.
    pub fn put(&mut self, key: &[u8], value: &[u8]) -> Result<(), Error<D::Error>> {
        if self.poisoned {
            return Err(Error::Poisoned);
        }
        if key.is_empty() || key.len() > MAX_KEY_LEN {
            return Err(Error::InvalidKey);
        }
        if value.len() > MAX_VALUE_LEN {
            return Err(Error::ValueTooLong);
        }
        if self.records.get(key).is_some_and(|v| v == value) {
            return Ok(());
        }
        if !self.records.contains_key(key) && self.records.len() >= MAX_RECORDS {
            return Err(Error::TooManyRecords);
        }
        let old = self.records.insert(key.to_vec(), value.to_vec());
        let result = self.commit_records();
        if result.is_err() {
            match old {
                Some(v) => self.records.insert(key.to_vec(), v),
                None => self.records.remove(key),
            };
        }
        result
    }

    /// Removes `key`, atomically and durably (as [`put`](Self::put)). Returns
    /// whether it was present; removing an absent key writes nothing.
    pub fn delete(&mut self, key: &[u8]) -> Result<bool, Error<D::Error>> {
        if self.poisoned {
            return Err(Error::Poisoned);
        }
        let Some(old) = self.records.remove(key) else {
            return Ok(false);
        };
        match self.commit_records() {
            Ok(()) => Ok(true),
            Err(e) => {
                self.records.insert(key.to_vec(), old);
                Err(e)
            }
        }
    }

    /// All records, sorted by key.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.records
            .iter()
            .map(|(k, v)| (k.as_slice(), v.as_slice()))
    }

    /// Number of records.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// True when the store holds no records.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Sequence number of the newest commit (1 after `format`).
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// Bytes one slot can hold (the bound on the encoded records).
    pub fn capacity_bytes(&self) -> usize {
        self.slot_sectors as usize * SECTOR_SIZE
    }

    /// Bytes the current records take encoded (`4 + Σ (3 + key + value)`).
    pub fn used_bytes(&self) -> usize {
        encoded_len(&self.records)
    }

    /// Write counters.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Gives the device back.
    pub fn into_device(self) -> D {
        self.dev
    }

    fn commit_records(&mut self) -> Result<(), Error<D::Error>> {
        let len = encoded_len(&self.records);
        if sectors_for(len) > self.slot_sectors as usize {
            return Err(Error::Full);
        }
        let image = encode_image(&self.records);
        self.commit(&image, len)
    }

    /// Writes `padded` to the inactive slot, flushes, then writes its two header
    /// copies (flush after each). The commit point is the first header copy.
    fn commit(&mut self, padded: &[u8], len: usize) -> Result<(), Error<D::Error>> {
        let target = 1 - self.active;
        let seq = self.seq + 1;
        let hdr = Header {
            slot: target,
            copy: 0,
            seq,
            slot_sectors: self.slot_sectors,
            payload_len: len as u32,
            payload_crc: payload_crc(seq, padded),
        };
        let start = payload_start(target, self.slot_sectors);
        let r = self.write_all(start, padded).and_then(|()| {
            self.write_all(header_sector(target, 0), &hdr.encode())?;
            self.write_all(header_sector(target, 1), &hdr.with_copy(1).encode())
        });
        match r {
            Ok(()) => {
                self.seq = seq;
                self.active = target;
                self.stats.commits += 1;
                Ok(())
            }
            Err(e) => {
                self.poisoned = true;
                Err(Error::Device(e))
            }
        }
    }

    fn write_all(&mut self, first: u64, buf: &[u8]) -> Result<(), D::Error> {
        self.dev.write(first, buf)?;
        self.stats.sectors_written += (buf.len() / SECTOR_SIZE) as u64;
        self.dev.flush()?;
        self.stats.flushes += 1;
        Ok(())
    }
}

fn read_payload<D: BlockDevice>(dev: &mut D, h: &Header) -> Result<Vec<u8>, D::Error> {
    let sectors = sectors_for(h.payload_len as usize);
    let mut buf = vec![0u8; sectors * SECTOR_SIZE];
    dev.read(payload_start(h.slot, h.slot_sectors), &mut buf)?;
    Ok(buf)
}
