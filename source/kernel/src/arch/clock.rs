//! The monotonic clock: the TSC, calibrated against the 8254 PIT.
//!
//! Why the TSC: it is readable without a trap in one instruction and, under
//! QEMU TCG, advances with host time. Why the PIT as reference: its input
//! clock is architecturally fixed at 1.193182 MHz and QEMU's microvm has one
//! by default. We program channel 0 as a free-running rate generator with its
//! output routed nowhere (PIC and IOAPIC pins masked) and read it back with
//! latch commands. If the PIT does not count, we fall back to CPUID leaf
//! 0x15/0x16; if that is absent too, boot fails rather than invent a rate.

use core::sync::atomic::{AtomicU64, Ordering};

use super::apic;
use super::port::{cpuid, inb, outb, rdtsc};

const PIT_HZ: u64 = 1_193_182;
/// Calibration window in PIT ticks (~10 ms).
const CALIBRATION_PIT_TICKS: u64 = 11_932;

static TSC_BOOT: AtomicU64 = AtomicU64::new(0);
static TSC_HZ: AtomicU64 = AtomicU64::new(0);
static APIC_TIMER_HZ: AtomicU64 = AtomicU64::new(0);

/// Remember the TSC at kernel entry: time zero of the monotonic clock.
pub fn mark_boot() {
    TSC_BOOT.store(rdtsc(), Ordering::Relaxed);
}

/// Why the clock could not be calibrated.
#[derive(Debug)]
pub enum ClockError {
    /// Neither the PIT nor CPUID gave a TSC frequency.
    NoReference,
    /// The APIC timer did not count.
    ApicTimerStuck,
}

fn pit_read_ch0() -> u16 {
    outb(0x43, 0x00); // latch channel 0
    let lo = inb(0x40);
    let hi = inb(0x40);
    u16::from_le_bytes([lo, hi])
}

/// Measure TSC ticks over `CALIBRATION_PIT_TICKS` PIT ticks. `None` if the
/// PIT does not count within a bounded number of reads.
fn tsc_hz_from_pit() -> Option<u64> {
    outb(0x43, 0x34); // channel 0, lo/hi, mode 2, binary
    outb(0x40, 0xFF);
    outb(0x40, 0xFF);
    let mut last = pit_read_ch0();
    let mut elapsed: u64 = 0;
    let mut reads: u64 = 0;
    let start = rdtsc();
    while elapsed < CALIBRATION_PIT_TICKS {
        let now = pit_read_ch0();
        // Counts down, reloading at 0xFFFF.
        elapsed += u64::from(last.wrapping_sub(now));
        last = now;
        reads += 1;
        if reads > 50_000_000 || (elapsed == 0 && reads > 1_000_000) {
            return None;
        }
    }
    let tsc = rdtsc().wrapping_sub(start);
    Some(tsc * PIT_HZ / elapsed)
}

fn tsc_hz_from_cpuid() -> Option<u64> {
    let (max, ..) = cpuid(0, 0);
    if max >= 0x15 {
        let (den, num, crystal, _) = cpuid(0x15, 0);
        if den != 0 && num != 0 && crystal != 0 {
            return Some(u64::from(crystal) * u64::from(num) / u64::from(den));
        }
    }
    if max >= 0x16 {
        let (base_mhz, ..) = cpuid(0x16, 0);
        if base_mhz != 0 {
            return Some(u64::from(base_mhz) * 1_000_000);
        }
    }
    None
}

/// Calibrate the TSC and the local APIC timer. Returns (tsc_hz, apic_hz, source).
pub fn calibrate() -> Result<(u64, u64, &'static str), ClockError> {
    let (tsc_hz, source) = match tsc_hz_from_pit() {
        Some(hz) => (hz, "pit"),
        None => (tsc_hz_from_cpuid().ok_or(ClockError::NoReference)?, "cpuid"),
    };
    TSC_HZ.store(tsc_hz, Ordering::Relaxed);

    // APIC timer ticks over ~2 ms of TSC time.
    apic::timer_start_free_running();
    let window = tsc_hz / 500;
    let t0 = rdtsc();
    let c0 = apic::timer_current();
    while rdtsc().wrapping_sub(t0) < window {}
    let c1 = apic::timer_current();
    let t1 = rdtsc();
    apic::timer_oneshot(0);
    let ticks = u64::from(c0.wrapping_sub(c1));
    if ticks == 0 {
        return Err(ClockError::ApicTimerStuck);
    }
    let apic_hz = ticks * tsc_hz / t1.wrapping_sub(t0).max(1);
    APIC_TIMER_HZ.store(apic_hz, Ordering::Relaxed);
    Ok((tsc_hz, apic_hz, source))
}

/// Nanoseconds since kernel entry (0 until calibrated).
pub fn now_ns() -> u64 {
    let hz = TSC_HZ.load(Ordering::Relaxed);
    if hz == 0 {
        return 0;
    }
    let ticks = rdtsc().wrapping_sub(TSC_BOOT.load(Ordering::Relaxed));
    (u128::from(ticks) * 1_000_000_000 / u128::from(hz)) as u64
}

/// Arm the APIC one-shot timer to fire at `deadline_ns` (or disarm on `None`).
/// Deadlines beyond the 32-bit counter range fire early and are re-armed.
pub fn arm(deadline_ns: Option<u64>) {
    let Some(deadline) = deadline_ns else {
        apic::timer_oneshot(0);
        return;
    };
    let hz = APIC_TIMER_HZ.load(Ordering::Relaxed);
    let delta = deadline.saturating_sub(now_ns());
    let ticks = (u128::from(delta) * u128::from(hz) / 1_000_000_000).clamp(1, u128::from(u32::MAX));
    apic::timer_oneshot(ticks as u32);
}
