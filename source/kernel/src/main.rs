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
