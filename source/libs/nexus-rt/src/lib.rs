//! The user-program runtime.
//!
//! A Nexus service is a static ELF executable whose `main.rs` is
//!
//! ```ignore
//! #![no_std]
//! #![no_main]
//! nexus_rt::entry!(netstackd::main);
//! ```
//!
//! This crate supplies everything else such an executable needs on a target
//! without libc: the `_start` symbol (the kernel enters there in ring 3 with
//! a 16-byte-aligned stack and zeroed registers), a heap that grows through
//! the `map` syscall under the process's quota, the panic handler, and the
//! start-up sequence: read the boot info, set up logging, run the service's
//! future on the process's executor (`nexus_abi::rt::block_on`) and hand its
//! outcome to the kernel with `exit`.
#![no_std]

extern crate alloc;

use alloc::string::String;
use core::alloc::{GlobalAlloc, Layout};
use core::ptr::NonNull;

use nexus_abi::bootinfo::{BootInfo, MAX_LEN};
use nexus_abi::sys::{nr, syscall};
pub use nexus_abi::{Caps, ServiceFuture};
use nexus_memfns as _;

/// Heap growth step: at least this many pages per `map` call.
pub const GROW_PAGES: usize = 64;
const PAGE: usize = 4096;

/// Define the process's entry: `nexus_rt::entry!(my_service::main)` where
/// `main: fn(Caps) -> ServiceFuture`.
#[macro_export]
macro_rules! entry {
    ($main:path) => {
        #[no_mangle]
        fn __nexus_service_main(caps: $crate::Caps) -> $crate::ServiceFuture {
            $main(caps)
        }
    };
}

extern "Rust" {
    fn __nexus_service_main(caps: Caps) -> ServiceFuture;
}

core::arch::global_asm!(
    r#"
.section .text._start, "ax"
.global _start
_start:
    xor %ebp, %ebp
    and $-16, %rsp
    call nexus_rt_start
    ud2
"#,
    options(att_syntax)
);

fn exit(status: u64, msg: &str) -> ! {
    // SAFETY: a live string; `exit` does not return.
    unsafe {
        syscall(
            nr::EXIT,
            status,
            msg.as_ptr() as u64,
            msg.len() as u64,
            0,
            0,
        )
    };
    // The kernel never returns from `exit`; if it did, stop here.
    loop {
        core::hint::spin_loop();
    }
}

#[no_mangle]
extern "C" fn nexus_rt_start() -> ! {
    let mut buf = alloc::vec![0u8; MAX_LEN];
    // SAFETY: the kernel writes at most MAX_LEN bytes into `buf`.
    let n = unsafe {
        syscall(
            nr::BOOTINFO,
            buf.as_mut_ptr() as u64,
            buf.len() as u64,
            0,
            0,
            0,
        )
    };
    let info = match usize::try_from(n)
        .ok()
        .and_then(|n| buf.get(..n))
        .map(BootInfo::decode)
    {
        Some(Ok(info)) => info,
        _ => exit(2, "runtime: no valid boot info"),
    };
    drop(buf);
    let caps = Caps::from_bootinfo(info);
    let level = match caps.config("log") {
        Some("debug") => log::LevelFilter::Debug,
        Some("trace") => log::LevelFilter::Trace,
        _ => log::LevelFilter::Info,
    };
    nexus_abi::logging::init(level);
    // SAFETY: defined by the `entry!` macro in the executable.
    let fut = unsafe { __nexus_service_main(caps) };
    match nexus_abi::rt::block_on(fut) {
        Ok(()) => exit(0, ""),
        Err(e) => {
            let msg: String = e.0;
            exit(1, &msg)
        }
    }
}

/// The heap: a linked-list allocator that asks the kernel for more pages
/// (`map`, contiguous above the previous ones) when it runs out. Over the
/// quota, `map` fails and the allocation returns null: the standard
/// allocation-failure path reports it.
struct Heap(spin::Mutex<linked_list_allocator::Heap>);

#[global_allocator]
static HEAP: Heap = Heap(spin::Mutex::new(linked_list_allocator::Heap::empty()));

fn grow(heap: &mut linked_list_allocator::Heap, layout: Layout) -> bool {
    let need = layout.size() + layout.align() + 2 * core::mem::size_of::<usize>();
    let pages = need.div_ceil(PAGE).max(GROW_PAGES);
    // SAFETY: no pointer arguments.
    let at = unsafe { syscall(nr::MAP, pages as u64, 0, 0, 0, 0) };
    if at < 0 {
        return false;
    }
    let bytes = pages * PAGE;
    if heap.size() == 0 {
        // SAFETY: the kernel just mapped `bytes` fresh bytes at `at`.
        unsafe { heap.init(at as usize as *mut u8, bytes) };
        true
    } else if heap.top() as usize == at as usize {
        // SAFETY: the new pages start exactly at the heap's top.
        unsafe { heap.extend(bytes) };
        true
    } else {
        false
    }
}

// SAFETY: a single-threaded process; the mutex only guards against
// re-entrancy bugs, never contention.
unsafe impl GlobalAlloc for Heap {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let mut heap = self.0.lock();
        if let Ok(p) = heap.allocate_first_fit(layout) {
            return p.as_ptr();
        }
        if !grow(&mut heap, layout) {
            return core::ptr::null_mut();
        }
        heap.allocate_first_fit(layout)
            .map_or(core::ptr::null_mut(), |p| p.as_ptr())
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if let Some(p) = NonNull::new(ptr) {
            // SAFETY: `ptr` came from `alloc` with this layout.
            unsafe { self.0.lock().deallocate(p, layout) };
        }
    }
}

/// A fixed buffer for the panic line: the panic may be an allocation
/// failure, so the handler must not allocate.
struct Line {
    buf: [u8; 480],
    len: usize,
}

impl core::fmt::Write for Line {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        let room = self.buf.len() - self.len;
        let mut n = s.len().min(room);
        while n > 0 && !s.is_char_boundary(n) {
            n -= 1;
        }
        self.buf[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        Ok(())
    }
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    let mut line = Line {
        buf: [0; 480],
        len: 0,
    };
    let _ = core::fmt::write(&mut line, format_args!("PANIC: {info}"));
    let text = core::str::from_utf8(&line.buf[..line.len]).unwrap_or("PANIC");
    // SAFETY: a live buffer; level 1 = error.
    unsafe { syscall(nr::LOG, 1, text.as_ptr() as u64, text.len() as u64, 0, 0) };
    exit(101, text)
}

/// The prebuilt `core` references this symbol; with `panic = "abort"` it is
/// never called.
#[no_mangle]
extern "C" fn rust_eh_personality() {}

/// Referenced by landing pads in the prebuilt `alloc`; unreachable because
/// nothing ever unwinds (`panic = "abort"`).
#[no_mangle]
extern "C" fn _Unwind_Resume() -> ! {
    exit(102, "runtime: unwinding reached in an abort-only program")
}
