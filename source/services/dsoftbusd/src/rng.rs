//! The kernel's entropy as a `rand_core` RNG for the protocol core.
//!
//! `RngCore` cannot report failure, and we must never make keys from
//! predictable bytes. So each use draws a bounded pool from the kernel first
//! (where failure is an ordinary error) and serves the core from that pool.
//! If the core asks for more than was drawn, the pool is marked spent and the
//! caller discards whatever was built with it.

use nexus_abi::entropy::{self, EntropyError};
use rand_core::{CryptoRng, RngCore};

/// Bytes drawn per use: a static key pair or a handshake needs 32.
pub const POOL_BYTES: usize = 128;

/// A pool of kernel (RDRAND) entropy.
pub struct KernelRng {
    buf: [u8; POOL_BYTES],
    used: usize,
    overdrawn: bool,
}

impl KernelRng {
    /// Draw a fresh pool.
    pub fn draw() -> Result<Self, EntropyError> {
        let mut buf = [0u8; POOL_BYTES];
        entropy::fill(&mut buf)?;
        Ok(KernelRng {
            buf,
            used: 0,
            overdrawn: false,
        })
    }

    /// Whether the core asked for more than the pool held (results built
    /// from this RNG must then be thrown away).
    pub fn overdrawn(&self) -> bool {
        self.overdrawn
    }
}

impl RngCore for KernelRng {
    fn next_u32(&mut self) -> u32 {
        let mut b = [0u8; 4];
        self.fill_bytes(&mut b);
        u32::from_le_bytes(b)
    }

    fn next_u64(&mut self) -> u64 {
        let mut b = [0u8; 8];
        self.fill_bytes(&mut b);
        u64::from_le_bytes(b)
    }

    fn fill_bytes(&mut self, dst: &mut [u8]) {
        let avail = self.buf.get(self.used..).unwrap_or(&[]);
        let take = dst.len().min(avail.len());
        dst[..take].copy_from_slice(&avail[..take]);
        self.used += take;
        if take < dst.len() {
            // Never hand out a predictable byte silently: mark and zero.
            self.overdrawn = true;
            dst[take..].fill(0);
        }
    }
}

impl CryptoRng for KernelRng {}
