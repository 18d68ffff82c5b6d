//! Interrupt bookkeeping between handlers and the executor.
//!
//! Handlers only set flags and acknowledge hardware; wakers are called later
//! by the scheduler (or right after an interrupt taken in user mode), always
//! with interrupts off, so kernel code never races interrupt context.

use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::arch::apic::{self, GSI_COUNT, IRQ_VECTOR_BASE, SPURIOUS_VECTOR, TIMER_VECTOR};

static TIMER_FIRED: AtomicBool = AtomicBool::new(false);
/// Bit `n` set: GSI `n` fired since the executor last looked.
static PINS_PENDING: AtomicU64 = AtomicU64::new(0);

/// Called from `interrupt_dispatch` for every non-exception vector.
/// Returns whether a device line fired (someone may now be ready to run).
pub fn handle(vector: u8) -> bool {
    match vector {
        TIMER_VECTOR => {
            TIMER_FIRED.store(true, Ordering::Release);
            apic::eoi();
            false
        }
        v if (IRQ_VECTOR_BASE..IRQ_VECTOR_BASE + GSI_COUNT).contains(&v) => {
            let gsi = v - IRQ_VECTOR_BASE;
            // Level-triggered: keep the line masked until the driver has
            // acknowledged the device and asked for the next interrupt.
            apic::mask_gsi(gsi);
            PINS_PENDING.fetch_or(1 << gsi, Ordering::Release);
            apic::eoi();
            true
        }
        SPURIOUS_VECTOR => false,
        // Remapped legacy PIC vectors (masked; only spurious ones arrive).
        0x20..=0x2F => false,
        _ => {
            apic::eoi();
            false
        }
    }
}

/// Take (and clear) the set of GSIs that fired.
pub fn take_pending_pins() -> u64 {
    PINS_PENDING.swap(0, Ordering::Acquire)
}

/// Take (and clear) the timer flag.
pub fn take_timer() -> bool {
    TIMER_FIRED.swap(false, Ordering::Acquire)
}
