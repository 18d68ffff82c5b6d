//! Entropy from RDRAND. There is no software fallback: without RDRAND the
//! caller gets `Unavailable` and must refuse to make keys.

use nexus_abi::entropy::EntropyError;

use crate::arch::port::cpuid;

/// Whether the CPU offers RDRAND (CPUID.1:ECX bit 30; QEMU `-cpu max`).
pub fn available() -> bool {
    let (_, _, ecx, _) = cpuid(1, 0);
    ecx & (1 << 30) != 0
}

fn rdrand64() -> Option<u64> {
    // Intel recommends up to 10 retries before declaring failure.
    for _ in 0..10 {
        let value: u64;
        let ok: u8;
        // SAFETY: only called after `available()`; rdrand has no memory effects.
        unsafe {
            core::arch::asm!("rdrand {v}", "setc {ok}", v = out(reg) value, ok = out(reg_byte) ok, options(nomem, nostack));
        }
        if ok == 1 {
            return Some(value);
        }
    }
    None
}

/// Fill `buf` with RDRAND output.
pub fn fill(buf: &mut [u8]) -> Result<(), EntropyError> {
    if !available() {
        return Err(EntropyError::Unavailable);
    }
    for chunk in buf.chunks_mut(8) {
        let v = rdrand64().ok_or(EntropyError::Exhausted)?;
        chunk.copy_from_slice(&v.to_le_bytes()[..chunk.len()]);
    }
    Ok(())
}
