//! The block-device protocol spoken between `blkd` (which alone holds the
//! virtio-blk device) and its clients, and the client side.
//!
//! One request per message, one answer per request, in order. Integers are
//! little-endian. Request: `op u8 | sector u64 | count u16 | data`; answer:
//! `status u8 | payload`. Sectors are [`SECTOR`] bytes; a read or write moves
//! at most [`MAX_SECTORS`] sectors (8 KiB, well inside one 16 KiB IPC
//! message). Decoding is total: malformed bytes are an error, never a panic.

#![no_std]

extern crate alloc;

use alloc::vec::Vec;

use nexus_abi::{Channel, IpcError};

/// Sector size.
pub const SECTOR: usize = 512;
/// Most sectors one read or write moves.
pub const MAX_SECTORS: u16 = 16;

const OP_INFO: u8 = 1;
const OP_READ: u8 = 2;
const OP_WRITE: u8 = 3;
const OP_FLUSH: u8 = 4;
const HEADER: usize = 1 + 8 + 2;

/// A request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    /// The disk's size in sectors.
    Info,
    /// Read `count` sectors from `sector`.
    Read {
        /// First sector.
        sector: u64,
        /// Sectors (1..=MAX_SECTORS).
        count: u16,
    },
    /// Write whole sectors from `sector`.
    Write {
        /// First sector.
        sector: u64,
        /// A multiple of SECTOR bytes, at most MAX_SECTORS sectors.
        data: Vec<u8>,
    },
    /// Make every completed write durable.
    Flush,
}

/// Why a request failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlkError {
    /// Outside the disk.
    OutOfRange,
    /// The device reported an error.
    Io,
    /// A malformed request or answer.
    Malformed,
    /// No disk is attached.
    NoDisk,
    /// The channel to blkd failed.
    Ipc(IpcError),
}

impl core::fmt::Display for BlkError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            BlkError::OutOfRange => f.write_str("sector out of range"),
            BlkError::Io => f.write_str("device I/O error"),
            BlkError::Malformed => f.write_str("malformed block request or answer"),
            BlkError::NoDisk => f.write_str("no disk attached"),
            BlkError::Ipc(e) => write!(f, "blkd channel: {e}"),
        }
    }
}

fn status_of(e: BlkError) -> u8 {
    match e {
        BlkError::OutOfRange => 1,
        BlkError::Io | BlkError::Ipc(_) => 2,
        BlkError::Malformed => 3,
        BlkError::NoDisk => 4,
    }
}

impl Request {
    /// Encode.
    pub fn encode(&self) -> Vec<u8> {
        let (op, sector, count, data): (u8, u64, u16, &[u8]) = match self {
            Request::Info => (OP_INFO, 0, 0, &[]),
            Request::Read { sector, count } => (OP_READ, *sector, *count, &[]),
            Request::Write { sector, data } => {
                (OP_WRITE, *sector, (data.len() / SECTOR) as u16, data)
            }
            Request::Flush => (OP_FLUSH, 0, 0, &[]),
        };
        let mut out = Vec::with_capacity(HEADER + data.len());
        out.push(op);
        out.extend_from_slice(&sector.to_le_bytes());
        out.extend_from_slice(&count.to_le_bytes());
        out.extend_from_slice(data);
        out
    }

    /// Decode; total.
    pub fn decode(b: &[u8]) -> Result<Request, BlkError> {
        if b.len() < HEADER {
            return Err(BlkError::Malformed);
        }
        let mut s = [0u8; 8];
        s.copy_from_slice(&b[1..9]);
        let sector = u64::from_le_bytes(s);
        let count = u16::from_le_bytes([b[9], b[10]]);
        let data = &b[HEADER..];
        let sized = |n: u16| (1..=MAX_SECTORS).contains(&n);
        match b[0] {
            OP_INFO if data.is_empty() => Ok(Request::Info),
            OP_FLUSH if data.is_empty() => Ok(Request::Flush),
            OP_READ if data.is_empty() && sized(count) => Ok(Request::Read { sector, count }),
            OP_WRITE if sized(count) && data.len() == usize::from(count) * SECTOR => {
                Ok(Request::Write {
                    sector,
                    data: data.to_vec(),
                })
            }
            _ => Err(BlkError::Malformed),
        }
    }
}

/// Encode an answer: `Ok(payload)` or an error.
pub fn encode_answer(r: &Result<Vec<u8>, BlkError>) -> Vec<u8> {
    match r {
        Ok(payload) => {
            let mut out = Vec::with_capacity(1 + payload.len());
            out.push(0);
            out.extend_from_slice(payload);
            out
        }
        Err(e) => alloc::vec![status_of(*e)],
    }
}

/// Decode an answer; total.
pub fn decode_answer(b: &[u8]) -> Result<Vec<u8>, BlkError> {
    match b.first() {
        Some(0) => Ok(b[1..].to_vec()),
        Some(1) => Err(BlkError::OutOfRange),
        Some(2) => Err(BlkError::Io),
        Some(4) => Err(BlkError::NoDisk),
        _ => Err(BlkError::Malformed),
    }
}

/// The client side: one call at a time over the channel granted as `blk`.
#[derive(Debug)]
pub struct BlkClient {
    chan: Channel,
}

impl BlkClient {
    /// Wrap the channel to blkd.
    pub fn new(chan: Channel) -> Self {
        BlkClient { chan }
    }

    /// One request, its answer.
    pub async fn call(&self, req: &Request) -> Result<Vec<u8>, BlkError> {
        self.chan.send(&req.encode()).await.map_err(BlkError::Ipc)?;
        let answer = self.chan.recv().await.map_err(BlkError::Ipc)?;
        decode_answer(&answer)
    }

    /// The same, blocking the process (for synchronous storage code).
    pub fn call_blocking(&self, req: &Request) -> Result<Vec<u8>, BlkError> {
        nexus_abi::rt::block_on(self.call(req))
    }

    /// Disk size in sectors.
    pub fn sectors(&self) -> Result<u64, BlkError> {
        let p = self.call_blocking(&Request::Info)?;
        let a: [u8; 8] = p
            .get(..8)
            .and_then(|s| s.try_into().ok())
            .ok_or(BlkError::Malformed)?;
        Ok(u64::from_le_bytes(a))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    #[test]
    fn requests_round_trip() {
        for r in [
            Request::Info,
            Request::Flush,
            Request::Read {
                sector: 7,
                count: 16,
            },
            Request::Write {
                sector: u64::MAX,
                data: vec![0xab; 2 * SECTOR],
            },
        ] {
            assert_eq!(Request::decode(&r.encode()), Ok(r));
        }
    }

    #[test]
    fn bounds_are_enforced() {
        let big = Request::Read {
            sector: 0,
            count: MAX_SECTORS + 1,
        };
        assert_eq!(Request::decode(&big.encode()), Err(BlkError::Malformed));
        let zero = Request::Read {
            sector: 0,
            count: 0,
        };
        assert_eq!(Request::decode(&zero.encode()), Err(BlkError::Malformed));
        let mut partial = Request::Write {
            sector: 0,
            data: vec![1; SECTOR],
        }
        .encode();
        partial.pop();
        assert_eq!(Request::decode(&partial), Err(BlkError::Malformed));
    }

    #[test]
    fn answers_round_trip() {
        for a in [
            Ok(vec![1, 2, 3]),
            Err(BlkError::OutOfRange),
            Err(BlkError::Io),
            Err(BlkError::NoDisk),
            Err(BlkError::Malformed),
        ] {
            assert_eq!(decode_answer(&encode_answer(&a)), a);
        }
    }

    proptest::proptest! {
        #[test]
        fn decode_is_total(b in proptest::collection::vec(proptest::num::u8::ANY, 0..1200)) {
            let _ = Request::decode(&b);
            let _ = decode_answer(&b);
        }
    }
}
