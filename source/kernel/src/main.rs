//! Nexus kernel.
//!
//! Boots from QEMU's PVH entry, brings up the CPU (GDT/IDT/APICs), console,
//! memory (heap, frames, its own page tables with NX), clock, entropy and
//! the syscall entry, discovers virtio-mmio devices, then loads the programs
//! of the init table into their own address spaces and schedules them as
//! ring-3 processes. It knows nothing about networking: services drive the
//! devices they are granted, through the register windows they map.
#![no_std]
#![no_main]

extern crate alloc;

mod arch;
mod bootcfg;
mod console;
mod fault;
mod frames;
mod images;
mod init;
mod ipc;
mod irq;
mod loader;
mod mem;
mod rng;
mod sched;
mod shutdown;
mod syscall;
mod virtio;
mod vm;

use nexus_memfns as _;

use core::sync::atomic::{AtomicBool, Ordering};

use arch::{apic, clock, gdt, idt};
use shutdown::Status;

/// `init.keep_running=1`: do not shut down when the finite services finish.
pub static KEEP_RUNNING: AtomicBool = AtomicBool::new(false);

fn fail(what: core::fmt::Arguments<'_>) -> ! {
    kprintln!("kernel: boot FAIL: {}", what);
    shutdown::exit(Status::Failure)
}

#[no_mangle]
extern "C" fn kernel_main(start_info: u32) -> ! {
    clock::mark_boot();
    console::init();
    gdt::init();
    idt::init();
    apic::init();
    kprintln!("kernel: nexus {} starting", env!("CARGO_PKG_VERSION"));

    let mem = match mem::init(start_info) {
        Ok(m) => m,
        Err(e) => fail(format_args!("memory: {e:?}")),
    };
    match clock::calibrate() {
        Ok((tsc, apic_hz, src)) => kprintln!(
            "kernel: clock tsc={} MHz (calibrated by {src}) apic-timer={} MHz",
            tsc / 1_000_000,
            apic_hz / 1_000_000
        ),
        Err(e) => fail(format_args!("clock: {e:?}")),
    }
    frames::init(mem.frames_start, mem.frames_len);
    if let Err(e) = vm::init_kernel(mem.ram_end) {
        fail(format_args!("paging: {e:?}"));
    }
    syscall::init();
    kprintln!(
        "kernel: memory ram={} MiB heap={} MiB at {:#x} frames={} (4 KiB) at {:#x}; paging on (NX, supervisor-only kernel)",
        mem.ram_total >> 20,
        mem.heap_len >> 20,
        mem.heap_start,
        frames::counts().1,
        mem.frames_start
    );
    let cmdline = mem::cmdline(start_info);
    let cfg = bootcfg::BootConfig::parse(&cmdline);
    kprintln!("kernel: cmdline \"{}\" ({} options)", cmdline, cfg.len());
    match vm::check_kernel_wx() {
        Ok(r) => {
            let l = vm::image_layout();
            kprintln!(
                "kernel: W^X checked: text {:#x}..{:#x} {} pages R+X, read-only {:#x}..{:#x} {} pages, {} pages RW+NX; none writable and executable; {} stack guard pages unmapped",
                l.text_start,
                l.text_end,
                r.exec_pages,
                l.text_end,
                l.rodata_end,
                r.ro_pages,
                r.rw_pages,
                r.guard_pages
            );
        }
        Err(v) => fail(format_args!("W^X violated in the kernel's tables: {v}")),
    }
    kernel_probe(cfg.get("kernel.probe"));
    for r in &cfg.rejected {
        kprintln!("WARN kernel: boot option rejected (over bounds): {}", r);
    }
    KEEP_RUNNING.store(cfg.get("init.keep_running") == Some("1"), Ordering::Relaxed);
    kprintln!(
        "kernel: entropy {}",
        if rng::available() {
            "rdrand"
        } else {
            "unavailable (no RDRAND; use -cpu max)"
        }
    );

    let devices = virtio::discover(&cfg, mem::has_acpi(start_info));
    for d in &devices {
        kprintln!(
            "kernel: virtio-mmio slot {} at {:#x} device={} version={} irq={:?}",
            d.slot,
            d.base,
            d.device_id,
            d.version,
            d.irq
        );
    }
    kprintln!("kernel: boot ok");
    if let Err(e) = init::start(&cfg, &devices) {
        fail(format_args!("init: {e}"));
    }
    let stats = cfg
        .get("kernel.stats_ms")
        .and_then(|v| v.parse::<u64>().ok())
        .filter(|&ms| ms > 0)
        .map(|ms| ms * 1_000_000);
    let mut reporter = init::StatsReporter::new(stats);
    sched::run(
        move || match (reporter.tick(), init::tick()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        },
        init::process_exited,
    )
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    console::emergency(format_args!("PANIC: {info}"));
    shutdown::exit(Status::Failure)
}

/// The prebuilt `core` for this target is compiled with unwinding and
/// references this symbol; with `panic = "abort"` it is never called.
#[no_mangle]
extern "C" fn rust_eh_personality() {}

/// Referenced by landing pads in the prebuilt `alloc`; unreachable because
/// nothing ever starts unwinding (`panic = "abort"`). If it is reached, the
/// kernel is broken: say so and stop.
#[no_mangle]
extern "C" fn _Unwind_Resume() -> ! {
    console::emergency(format_args!(
        "PANIC: unwinding reached in an abort-only kernel"
    ));
    shutdown::exit(Status::Failure)
}

/// Bytes of a `ret` in writable data, for the `data-exec` probe.
static mut RET_IN_DATA: [u8; 16] = [0xc3; 16];

/// `kernel.probe=text-write|data-exec`: the kernel attacks its own W^X, and
/// the MMU must stop it with a page fault (which ends the run as a kernel
/// fault; `scripts/tests/kernel-wx-test.sh` checks the fault line). Reaching
/// the line after the attack is a failure.
fn kernel_probe(probe: Option<&str>) {
    match probe {
        None => {}
        Some("text-write") => {
            let target = kernel_probe as *const () as u64;
            kprintln!("kernel: probe text-write at {target:#x}: the MMU must fault");
            // SAFETY: deliberately invalid: a write to the kernel's own text,
            // which the page tables map read-only; it must fault.
            unsafe { core::ptr::write_volatile(target as *mut u8, 0xcc) };
            fail(format_args!(
                "probe text-write: the write to text went through"
            ));
        }
        Some("data-exec") => {
            let target = core::ptr::addr_of!(RET_IN_DATA) as u64;
            kprintln!("kernel: probe data-exec at {target:#x}: the MMU must fault");
            // SAFETY: deliberately invalid: a call into writable data, which
            // the page tables map NX; it must fault before the `ret` runs.
            let f: extern "C" fn() = unsafe { core::mem::transmute(target as usize) };
            f();
            fail(format_args!("probe data-exec: code in data ran"));
        }
        Some("stack-overflow") => {
            kprintln!(
                "kernel: probe stack-overflow: recursing on the boot stack (guard at {:#x}); the MMU must fault",
                vm::image_layout().boot_guard
            );
            let depth = recurse(0);
            fail(format_args!(
                "probe stack-overflow: {depth} frames deep and no fault"
            ));
        }
        Some(other) => kprintln!(
            "WARN kernel: unknown kernel.probe={other} (text-write, data-exec, stack-overflow)"
        ),
    }
}

/// 1 KiB of stack per call, without end (bounded only so the compiler
/// cannot prove it infinite): 64 KiB of boot stack last about 64 calls.
#[inline(never)]
fn recurse(depth: u64) -> u64 {
    let mut pad = [0u8; 1024];
    pad[0] = depth as u8;
    let pad = core::hint::black_box(pad);
    if depth > 1 << 20 {
        return depth;
    }
    recurse(depth + 1) + u64::from(pad[depth as usize % 1024])
}
