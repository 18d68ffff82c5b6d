//! A simulated disk for tests and benchmarks: records every sector write, can cut
//! power after write N (optionally tearing the sector being written) and can lose
//! writes that were not flushed.
//!
//! Plain `alloc` code, so it builds in the `no_std` configuration too.

use alloc::vec;
use alloc::vec::Vec;

use crate::device::{BlockDevice, SECTOR_SIZE};

/// Errors from [`SimDisk`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SimError {
    /// The power was cut during this call.
    PowerLost,
    /// The device is off (after a cut, until [`SimDisk::restart`]).
    PowerOff,
    /// A buffer that is not a whole number of sectors, or a range past the end.
    BadRequest,
}

/// How the sector being written at the moment of a cut ends up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tear {
    /// The sector keeps its old contents.
    Old,
    /// The first `n` bytes are new, the rest old (`n` in `1..SECTOR_SIZE`).
    NewPrefix(usize),
    /// The last `n` bytes are new, the rest old.
    NewSuffix(usize),
}

/// A planned power cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PowerCut {
    /// The cut happens during the sector write with this index (0 = the first sector
    /// write after the plan is armed); that sector is torn according to `tear`.
    pub at_write: u64,
    /// What happens to the sector being written.
    pub tear: Tear,
    /// Model a volatile write cache: writes not yet flushed are kept or lost
    /// independently, chosen by this seed (`None`: every completed write is durable).
    pub lose_unflushed: Option<u64>,
}

/// An in-memory disk with fault injection.
#[derive(Debug, Clone)]
pub struct SimDisk {
    durable: Vec<[u8; SECTOR_SIZE]>,
    /// Completed but unflushed writes, in order (only kept when a cut may drop them).
    pending: Vec<(u64, [u8; SECTOR_SIZE])>,
    cut: Option<PowerCut>,
    powered: bool,
    writes: u64,
    writes_since_arm: u64,
    flushes: u64,
    reads: u64,
    log: Vec<u64>,
    record: bool,
}

impl SimDisk {
    /// A zeroed disk of `sectors` sectors.
    pub fn new(sectors: u64) -> Self {
        let n = usize::try_from(sectors).unwrap_or(0);
        Self {
            durable: vec![[0u8; SECTOR_SIZE]; n],
            pending: Vec::new(),
            cut: None,
            powered: true,
            writes: 0,
            writes_since_arm: 0,
            flushes: 0,
            reads: 0,
            log: Vec::new(),
            record: false,
        }
    }

    /// A disk with the given contents (truncated to whole sectors).
    pub fn from_bytes(bytes: &[u8]) -> Self {
        let mut d = Self::new((bytes.len() / SECTOR_SIZE) as u64);
        for (s, chunk) in d.durable.iter_mut().zip(bytes.chunks_exact(SECTOR_SIZE)) {
            s.copy_from_slice(chunk);
        }
        d
    }

    /// Arms a power cut; the write counter for `at_write` starts now.
    pub fn arm(&mut self, cut: PowerCut) {
        self.cut = Some(cut);
        self.writes_since_arm = 0;
    }

    /// Disarms a planned cut that has not happened.
    pub fn disarm(&mut self) {
        self.cut = None;
    }

    /// Whether the power is on.
    pub fn powered(&self) -> bool {
        self.powered
    }

    /// Turns the power back on after a cut (the volatile cache is already resolved).
    pub fn restart(&mut self) {
        self.powered = true;
        self.pending.clear();
    }

    /// Records the index of every sector written from now on (see [`log`](Self::log)).
    pub fn record_writes(&mut self, on: bool) {
        self.record = on;
    }

    /// Sector indices written while recording, in order.
    pub fn log(&self) -> &[u64] {
        &self.log
    }

    /// Total sector writes attempted.
    pub fn sectors_written(&self) -> u64 {
        self.writes
    }

    /// Total flushes.
    pub fn flushes(&self) -> u64 {
        self.flushes
    }

    /// Total sector reads.
    pub fn sectors_read(&self) -> u64 {
        self.reads
    }

    /// The current contents of a sector (as a reader would see it).
    pub fn sector(&self, i: u64) -> Option<[u8; SECTOR_SIZE]> {
        let i = usize::try_from(i).ok()?;
        let mut s = *self.durable.get(i)?;
        for (p, data) in &self.pending {
            if *p as usize == i {
                s = *data;
            }
        }
        Some(s)
    }

    /// Overwrites a sector directly (no counters, no faults): for planting bad data.
    pub fn set_sector(&mut self, i: u64, data: &[u8; SECTOR_SIZE]) {
        self.pending.retain(|(p, _)| *p != i);
        if let Some(s) = usize::try_from(i)
            .ok()
            .and_then(|i| self.durable.get_mut(i))
        {
            *s = *data;
        }
    }

    /// Flips one bit of one sector (bit rot).
    pub fn flip_bit(&mut self, sector: u64, bit: usize) {
        if let Some(mut s) = self.sector(sector) {
            s[(bit / 8) % SECTOR_SIZE] ^= 1 << (bit % 8);
            self.set_sector(sector, &s);
        }
    }

    /// The whole disk as bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.durable.len() * SECTOR_SIZE);
        for i in 0..self.durable.len() as u64 {
            if let Some(s) = self.sector(i) {
                out.extend_from_slice(&s);
            }
        }
        out
    }

    fn check(&self, first: u64, len: usize) -> Result<(), SimError> {
        if !self.powered {
            return Err(SimError::PowerOff);
        }
        if len == 0 || len % SECTOR_SIZE != 0 {
            return Err(SimError::BadRequest);
        }
        let end = first
            .checked_add((len / SECTOR_SIZE) as u64)
            .ok_or(SimError::BadRequest)?;
        if end > self.durable.len() as u64 {
            return Err(SimError::BadRequest);
        }
        Ok(())
    }

    fn lose_power(&mut self, seed: Option<u64>) {
        self.powered = false;
        let pending = core::mem::take(&mut self.pending);
        let mut x = seed.unwrap_or(0) | 1;
        for (i, data) in pending {
            // xorshift64: each unflushed write survives with probability 1/2.
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            if seed.is_none() || x & 1 == 1 {
                self.durable[i as usize] = data;
            }
        }
    }

    fn store(&mut self, i: u64, data: [u8; SECTOR_SIZE], volatile: bool) {
        if volatile {
            self.pending.push((i, data));
        } else {
            self.durable[i as usize] = data;
        }
    }
}

impl BlockDevice for SimDisk {
    type Error = SimError;

    fn sector_count(&self) -> u64 {
        self.durable.len() as u64
    }

    fn read(&mut self, first: u64, buf: &mut [u8]) -> Result<(), SimError> {
        self.check(first, buf.len())?;
        for (k, chunk) in buf.chunks_exact_mut(SECTOR_SIZE).enumerate() {
            let s = self.sector(first + k as u64).ok_or(SimError::BadRequest)?;
            chunk.copy_from_slice(&s);
            self.reads += 1;
        }
        Ok(())
    }

    fn write(&mut self, first: u64, buf: &[u8]) -> Result<(), SimError> {
        self.check(first, buf.len())?;
        let volatile = matches!(
            self.cut,
            Some(PowerCut {
                lose_unflushed: Some(_),
                ..
            })
        );
        for (k, chunk) in buf.chunks_exact(SECTOR_SIZE).enumerate() {
            let i = first + k as u64;
            let mut new = [0u8; SECTOR_SIZE];
            new.copy_from_slice(chunk);
            self.writes += 1;
            if self.record {
                self.log.push(i);
            }
            let now = self.writes_since_arm;
            self.writes_since_arm += 1;
            if let Some(cut) = self.cut {
                if now == cut.at_write {
                    let old = self.sector(i).ok_or(SimError::BadRequest)?;
                    let torn = match cut.tear {
                        Tear::Old => old,
                        Tear::NewPrefix(n) => {
                            let n = n.min(SECTOR_SIZE);
                            let mut t = old;
                            t[..n].copy_from_slice(&new[..n]);
                            t
                        }
                        Tear::NewSuffix(n) => {
                            let n = n.min(SECTOR_SIZE);
                            let mut t = old;
                            t[SECTOR_SIZE - n..].copy_from_slice(&new[SECTOR_SIZE - n..]);
                            t
                        }
                    };
                    self.store(i, torn, volatile);
                    self.cut = None;
                    self.lose_power(cut.lose_unflushed);
                    return Err(SimError::PowerLost);
                }
            }
            self.store(i, new, volatile);
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), SimError> {
        if !self.powered {
            return Err(SimError::PowerOff);
        }
        self.flushes += 1;
        for (i, data) in core::mem::take(&mut self.pending) {
            self.durable[i as usize] = data;
        }
        Ok(())
    }
}
