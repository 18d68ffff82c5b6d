//! virtio-mmio discovery on QEMU's microvm.
//!
//! The kernel only *finds* devices — magic, version, device id, interrupt
//! line — and turns each into a capability for init to grant. Drivers live in
//! services. Slots sit at `0xfeb00000 + i * 0x200`; QEMU appends a
//! `virtio_mmio.device=512@<base>:<irq>` option per transport to the command
//! line, which is where the interrupt line comes from.

use alloc::vec::Vec;
use core::ptr::read_volatile;

use crate::bootcfg::BootConfig;

/// First slot's base address.
pub const MMIO_BASE: u64 = 0xFEB0_0000;
/// Distance between slots.
pub const SLOT_SIZE: u64 = 0x200;
/// Slots probed (microvm has at most this many transports).
pub const MAX_SLOTS: u64 = 32;
const MAGIC: u32 = 0x7472_6976; // "virt"

/// One discovered device.
#[derive(Clone, Copy, Debug)]
pub struct Found {
    /// Slot index.
    pub slot: u64,
    /// Register window base.
    pub base: u64,
    /// virtio device id (1 = net).
    pub device_id: u32,
    /// virtio-mmio version (1 legacy, 2 modern).
    pub version: u32,
    /// Interrupt line (GSI).
    pub irq: Option<u8>,
}

fn irq_from_cmdline(cfg: &BootConfig, base: u64) -> Option<u8> {
    // Format: 512@0xfeb00e00:12
    cfg.all("virtio_mmio.device").find_map(|v| {
        let (_, rest) = v.split_once('@')?;
        let (addr, irq) = rest.split_once(':')?;
        let addr = u64::from_str_radix(addr.trim_start_matches("0x"), 16).ok()?;
        (addr == base).then(|| irq.parse().ok()).flatten()
    })
}

/// The GSI of `slot`, following QEMU's microvm wiring (hw/i386/microvm.c):
/// with a second IOAPIC there are 24 transports on GSIs 24..48; otherwise 8,
/// on GSIs 16..24 when ACPI is on, 5..13 when it is off. The PVH loader does
/// not pass QEMU's `virtio_mmio.device=` hints to us, so we derive the same
/// numbers; an explicit hint on the command line still wins.
fn microvm_gsi(slot: u64, transports: u64, acpi: bool) -> Option<u8> {
    let base = match (transports, acpi) {
        (24, _) => 24,
        (8, true) => 16,
        (8, false) => 5,
        _ => return None,
    };
    u8::try_from(base + slot).ok()
}

/// Probe every slot. `acpi`: the PVH start info carried an RSDP.
pub fn discover(cfg: &BootConfig, acpi: bool) -> Vec<Found> {
    let mut found = Vec::new();
    let mut transports = 0;
    for slot in 0..MAX_SLOTS {
        let base = MMIO_BASE + slot * SLOT_SIZE;
        // SAFETY: the virtio-mmio window is identity-mapped; reading the
        // magic, version and device-id registers has no side effects.
        let (magic, version, device_id) = unsafe {
            let p = base as usize as *const u32;
            (
                read_volatile(p),
                read_volatile(p.add(1)),
                read_volatile(p.add(2)),
            )
        };
        if magic == MAGIC {
            transports += 1;
        }
        if magic == MAGIC && device_id != 0 {
            found.push(Found {
                slot,
                base,
                device_id,
                version,
                irq: irq_from_cmdline(cfg, base),
            });
        }
    }
    for f in found.iter_mut() {
        if f.irq.is_none() {
            f.irq = microvm_gsi(f.slot, transports, acpi);
        }
    }
    found
}
