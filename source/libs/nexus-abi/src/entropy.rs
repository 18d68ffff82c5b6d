//! Entropy from the hardware RNG (RDRAND), for tasks granted it.

use crate::sys::{code, nr, syscall};

/// Largest request the kernel serves in one call.
const CHUNK: usize = 4096;

/// Why entropy could not be delivered. There is no fallback: a caller that
/// needs keys must fail rather than run on predictable bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntropyError {
    /// The CPU has no RDRAND (run QEMU with `-cpu max`).
    Unavailable,
    /// RDRAND kept reporting failure after bounded retries.
    Exhausted,
    /// The calling task was not granted entropy.
    NotGranted,
}

impl core::fmt::Display for EntropyError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            EntropyError::Unavailable => "no hardware RNG (RDRAND absent)",
            EntropyError::Exhausted => "hardware RNG failed repeatedly",
            EntropyError::NotGranted => "entropy not granted to this service",
        })
    }
}

/// Fill `buf` with hardware random bytes.
pub fn fill(buf: &mut [u8]) -> Result<(), EntropyError> {
    for chunk in buf.chunks_mut(CHUNK) {
        // SAFETY: the kernel writes at most `chunk.len()` bytes into it.
        let r = unsafe {
            syscall(
                nr::ENTROPY,
                chunk.as_mut_ptr() as u64,
                chunk.len() as u64,
                0,
                0,
                0,
            )
        };
        match r {
            0.. => {}
            code::NOT_GRANTED => return Err(EntropyError::NotGranted),
            code::UNAVAILABLE => return Err(EntropyError::Unavailable),
            _ => return Err(EntropyError::Exhausted),
        }
    }
    Ok(())
}
