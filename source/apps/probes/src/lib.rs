//! Hostile probes, not features. Each is its own process with no grants and
//! tries one thing the process model must stop; init runs them as `Probe`s,
//! which pass only when the kernel kills them (or, for refusals, when the
//! refusal came back). A probe that survives its attempt reports it and
//! exits with an error, failing the run.
//!
//! | probe | attempt | expected |
//! | --- | --- | --- |
//! | `probe-mmio` | `mmio_map` without a grant, then read the virtio-mmio window directly | `kernel: mmio denied (no grant)`, then killed (page fault) |
//! | `probe-kread` | read the kernel image at 1 MiB | killed (page fault: supervisor page) |
//! | `probe-textwrite` | write into its own text | killed (page fault: read-only page) |
//! | `probe-stackexec` | jump into its stack | killed (NX violation) |
//! | `probe-stackguard` | touch the guard page below its stack | killed (page fault: unmapped guard) |
//! | `probe-quota` | grow its heap with `map` until refused | `NO_MEMORY` at its quota (2 MiB), then exit 0; the kernel is unharmed |
//! | `probe-spin` | spin forever (`init.probes=spin`) | preempted; the rest of the boot completes |
#![no_std]

extern crate alloc;

use alloc::boxed::Box;
use alloc::format;

use nexus_abi::device::{Device, DeviceError, DeviceKind};
use nexus_abi::layout;
use nexus_abi::sys::{code, nr, syscall, Handle};
use nexus_abi::{Caps, ServiceError, ServiceFuture};

/// Base of QEMU microvm's virtio-mmio window (physical; kernel-only).
pub const VIRTIO_MMIO: usize = 0xfeb0_0000;
/// The kernel image's load address (kernel-only).
pub const KERNEL_IMAGE: usize = 0x10_0000;

fn survived(what: &str) -> Result<(), ServiceError> {
    log::error!("probe: {what} succeeded: isolation FAILED");
    Err(ServiceError::new(format!("{what} was not stopped")))
}

/// `probe-mmio`.
pub fn mmio(_caps: Caps) -> ServiceFuture {
    Box::pin(async {
        // A handle this process was never granted, presented as a device.
        for h in 0..2 {
            let forged = Device::new(Handle(h), DeviceKind::Net, VIRTIO_MMIO as u64, None);
            match forged.map_mmio() {
                Err(DeviceError::NotGranted) => {}
                Ok(r) => return survived(&format!("mmio_map with forged handle {h} ({r:?})")),
                Err(e) => {
                    return Err(ServiceError::new(format!(
                        "mmio_map with forged handle {h}: unexpected {e}"
                    )))
                }
            }
        }
        log::info!(
            "probe-mmio: mmio_map refused without a grant; reading the device window directly"
        );
        // SAFETY: none: this read must fault.
        let v = unsafe { core::ptr::read_volatile(VIRTIO_MMIO as *const u32) };
        survived(&format!("direct read of the virtio-mmio window ({v:#x})"))
    })
}

/// `probe-kread`.
pub fn kread(_caps: Caps) -> ServiceFuture {
    Box::pin(async {
        log::info!("probe-kread: reading kernel memory at {KERNEL_IMAGE:#x}");
        // SAFETY: none: this read must fault.
        let v = unsafe { core::ptr::read_volatile(KERNEL_IMAGE as *const u64) };
        survived(&format!("kernel read ({v:#x})"))
    })
}

/// `probe-textwrite`.
pub fn textwrite(_caps: Caps) -> ServiceFuture {
    Box::pin(async {
        let target = textwrite as *const () as *mut u8;
        log::info!("probe-textwrite: writing into its own text at {target:p}");
        // SAFETY: none: this write must fault.
        unsafe { core::ptr::write_volatile(target, 0xcc) };
        survived("write to own text")
    })
}

/// `probe-stackexec`.
pub fn stackexec(_caps: Caps) -> ServiceFuture {
    Box::pin(async {
        // `ret`: harmless if it ran.
        let code = [0xc3u8; 16];
        let at = code.as_ptr();
        log::info!("probe-stackexec: jumping into its stack at {at:p}");
        // SAFETY: none: this call must fault (the stack is NX).
        let f: extern "C" fn() = unsafe { core::mem::transmute(at) };
        f();
        core::hint::black_box(&code);
        survived("execute from the stack")
    })
}

/// `probe-stackguard`.
pub fn stackguard(_caps: Caps) -> ServiceFuture {
    Box::pin(async {
        let guard = (layout::STACK_TOP - layout::STACK_SIZE - 8) as *const u64;
        log::info!("probe-stackguard: reading the guard page below its stack at {guard:p}");
        // SAFETY: none: this read must fault.
        let v = unsafe { core::ptr::read_volatile(guard) };
        survived(&format!("read of the stack guard page ({v:#x})"))
    })
}

/// `probe-quota`: the kernel must refuse heap growth past the quota with an
/// error, not run out of memory itself.
pub fn quota(_caps: Caps) -> ServiceFuture {
    Box::pin(async {
        let mut pages = 0u64;
        loop {
            // SAFETY: no pointer arguments.
            let r = unsafe { syscall(nr::MAP, 16, 0, 0, 0, 0) };
            if r == code::NO_MEMORY {
                log::info!(
                    "probe-quota: map refused past the quota (NO_MEMORY) after {pages} pages ({} KiB); quota holds",
                    pages * 4
                );
                return Ok(());
            }
            if r < 0 {
                return Err(ServiceError::new(format!(
                    "map failed with {r}, not NO_MEMORY"
                )));
            }
            pages += 16;
            if pages > 1 << 20 {
                return survived("growing the heap past 4 GiB");
            }
        }
    })
}

/// `probe-spin`: never yields, never ends.
pub fn spin(_caps: Caps) -> ServiceFuture {
    Box::pin(async {
        log::info!("probe-spin: spinning forever without yielding");
        let mut n: u64 = 0;
        loop {
            n = core::hint::black_box(n.wrapping_add(1));
        }
    })
}
