//! Local APIC (timer, EOI) and IOAPIC (device interrupt routing).
//!
//! The legacy 8259 PICs are remapped out of the exception range and masked:
//! all interrupts come through the APICs.

use core::ptr::{read_volatile, write_volatile};

use super::port::{outb, rdmsr, wrmsr};

const LAPIC_BASE: usize = 0xFEE0_0000;
/// IOAPIC windows and their first GSI. microvm adds a second IOAPIC (GSIs
/// 24..48, where its virtio-mmio lines live) when ACPI is on.
const IOAPICS: [(usize, u8); 2] = [(0xFEC0_0000, 0), (0xFEC1_0000, 24)];
/// Pins per IOAPIC.
const PINS_PER_IOAPIC: u8 = 24;

const LAPIC_ID: usize = 0x20;
const LAPIC_EOI: usize = 0xB0;
const LAPIC_SVR: usize = 0xF0;
const LAPIC_LVT_TIMER: usize = 0x320;
const LAPIC_LVT_LINT0: usize = 0x350;
const LAPIC_LVT_LINT1: usize = 0x360;
const LAPIC_TIMER_INIT: usize = 0x380;
const LAPIC_TIMER_CURRENT: usize = 0x390;
const LAPIC_TIMER_DIVIDE: usize = 0x3E0;

const LVT_MASKED: u32 = 1 << 16;

/// Vector of the local APIC timer.
pub const TIMER_VECTOR: u8 = 0x40;
/// First vector used for device interrupts: GSI `n` arrives on `IRQ_VECTOR_BASE + n`.
pub const IRQ_VECTOR_BASE: u8 = 0x50;
/// Number of GSIs we can route (two IOAPICs of 24 pins).
pub const GSI_COUNT: u8 = 48;
/// Spurious-interrupt vector (no EOI needed).
pub const SPURIOUS_VECTOR: u8 = 0xFF;

fn lapic_read(reg: usize) -> u32 {
    // SAFETY: the LAPIC page is identity-mapped by the boot page tables.
    unsafe { read_volatile((LAPIC_BASE + reg) as *const u32) }
}

fn lapic_write(reg: usize, value: u32) {
    // SAFETY: as for `lapic_read`.
    unsafe { write_volatile((LAPIC_BASE + reg) as *mut u32, value) }
}

fn ioapic_write(base: usize, reg: u32, value: u32) {
    // SAFETY: the IOAPIC windows are identity-mapped; IOREGSEL then IOWIN.
    unsafe {
        write_volatile(base as *mut u32, reg);
        write_volatile((base + 0x10) as *mut u32, value);
    }
}

fn ioapic_read(base: usize, reg: u32) -> u32 {
    // SAFETY: as for `ioapic_write`.
    unsafe {
        write_volatile(base as *mut u32, reg);
        read_volatile((base + 0x10) as *const u32)
    }
}

/// Whether an IOAPIC answers at `base` (its version register reads sanely).
fn ioapic_present(base: usize) -> bool {
    let v = ioapic_read(base, 1);
    v != 0 && v != u32::MAX
}

/// The IOAPIC window and pin for a GSI.
fn gsi_location(gsi: u8) -> Option<(usize, u32)> {
    let (base, first) = IOAPICS.iter().rev().find(|(_, first)| gsi >= *first)?;
    let pin = gsi - first;
    (pin < PINS_PER_IOAPIC && ioapic_present(*base)).then_some((*base, u32::from(pin)))
}

fn write_redirection(gsi: u8, low: u32) {
    if let Some((base, pin)) = gsi_location(gsi) {
        let apic_id = lapic_read(LAPIC_ID) >> 24;
        ioapic_write(base, 0x11 + 2 * pin, apic_id << 24);
        ioapic_write(base, 0x10 + 2 * pin, low);
    }
}

/// Remap and mask the legacy PICs, enable the local APIC, mask every IOAPIC pin.
pub fn init() {
    // ICW1..ICW4: remap to 0x20/0x28 so a spurious PIC IRQ never looks like a
    // CPU exception, then mask everything.
    for (port, val) in [
        (0x20, 0x11),
        (0xA0, 0x11),
        (0x21, 0x20),
        (0xA1, 0x28),
        (0x21, 0x04),
        (0xA1, 0x02),
        (0x21, 0x01),
        (0xA1, 0x01),
        (0x21, 0xFF),
        (0xA1, 0xFF),
    ] {
        outb(port, val);
    }
    // IA32_APIC_BASE: global enable.
    let base = rdmsr(0x1B);
    wrmsr(0x1B, base | (1 << 11));
    lapic_write(LAPIC_SVR, 0x100 | u32::from(SPURIOUS_VECTOR));
    lapic_write(LAPIC_LVT_LINT0, LVT_MASKED);
    lapic_write(LAPIC_LVT_LINT1, LVT_MASKED);
    lapic_write(LAPIC_LVT_TIMER, LVT_MASKED | u32::from(TIMER_VECTOR));
    lapic_write(LAPIC_TIMER_DIVIDE, 0xB); // divide by 1
    for gsi in 0..GSI_COUNT {
        write_redirection(gsi, LVT_MASKED);
    }
}

/// Route `gsi` (level-triggered, active-high: virtio-mmio lines) to this CPU
/// on `IRQ_VECTOR_BASE + gsi`.
pub fn route_gsi(gsi: u8) {
    if gsi < GSI_COUNT {
        write_redirection(gsi, u32::from(IRQ_VECTOR_BASE + gsi) | (1 << 15));
    }
}

/// Mask `gsi`. Level-triggered lines stay asserted until the driver
/// acknowledges the device, so the line stays masked until then.
pub fn mask_gsi(gsi: u8) {
    if gsi < GSI_COUNT {
        write_redirection(
            gsi,
            u32::from(IRQ_VECTOR_BASE + gsi) | (1 << 15) | LVT_MASKED,
        );
    }
}

/// Signal end of interrupt to the local APIC.
pub fn eoi() {
    lapic_write(LAPIC_EOI, 0);
}

/// Arm the one-shot timer to fire after `ticks` APIC timer ticks (0 disarms).
pub fn timer_oneshot(ticks: u32) {
    if ticks == 0 {
        lapic_write(LAPIC_LVT_TIMER, LVT_MASKED | u32::from(TIMER_VECTOR));
        lapic_write(LAPIC_TIMER_INIT, 0);
    } else {
        lapic_write(LAPIC_LVT_TIMER, u32::from(TIMER_VECTOR));
        lapic_write(LAPIC_TIMER_INIT, ticks);
    }
}

/// Start the timer counting down from `u32::MAX`, masked (for calibration).
pub fn timer_start_free_running() {
    lapic_write(LAPIC_LVT_TIMER, LVT_MASKED | u32::from(TIMER_VECTOR));
    lapic_write(LAPIC_TIMER_INIT, u32::MAX);
}

/// The timer's current count.
pub fn timer_current() -> u32 {
    lapic_read(LAPIC_TIMER_CURRENT)
}
