//! The syscall table: numbers, error codes and the raw `syscall` stubs.
//!
//! A service enters the kernel only through the `syscall` instruction with
//! the call number in `rax` and up to five arguments in `rdi`, `rsi`, `rdx`,
//! `r10`, `r8` (the Linux convention, so tools read it naturally). The result
//! comes back in `rax`: a non-negative value, or a negative [`code`]. Arguments
//! are integers, handles and (pointer, length) pairs; the kernel checks every
//! pointer against the caller's address space and copies through its own
//! mapping of the frames, never through the user pointer.
//!
//! The kernel uses this module for the numbers and codes only; the stubs are
//! what the rest of this crate calls.

/// A capability handle: an index into the kernel's grant table. Handles are
/// meaningless outside the process they were granted to — the kernel checks
/// the owner on every call.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Handle(pub u32);

/// Call numbers.
pub mod nr {
    /// `log(level, ptr, len)`: one whole console line.
    pub const LOG: u64 = 0;
    /// `now() -> ns`: monotonic nanoseconds since boot.
    pub const NOW: u64 = 1;
    /// `yield()`: let every other ready process run first.
    pub const YIELD: u64 = 2;
    /// `exit(status, msg_ptr, msg_len)`: end the process (0 = success).
    pub const EXIT: u64 = 3;
    /// `entropy(ptr, len)`: fill from the hardware RNG (entropy grant).
    pub const ENTROPY: u64 = 4;
    /// `chan_send(handle, ptr, len)`: queue one message.
    pub const CHAN_SEND: u64 = 5;
    /// `chan_recv(handle, ptr, cap) -> len`: dequeue one message.
    pub const CHAN_RECV: u64 = 6;
    /// `chan_close(handle)`.
    pub const CHAN_CLOSE: u64 = 7;
    /// `wait(entries_ptr, count, deadline_ns) -> ready`: block until one
    /// entry is ready or the deadline passes.
    pub const WAIT: u64 = 8;
    /// `mmio_map(handle, offset, len, prot) -> vaddr`.
    pub const MMIO_MAP: u64 = 9;
    /// `irq_take(handle) -> 0|1`: 1 if the device interrupted.
    pub const IRQ_TAKE: u64 = 10;
    /// `dma_alloc(handle, pages, out_ptr)`: writes a `DmaRegion`.
    pub const DMA_ALLOC: u64 = 11;
    /// `dma_free(handle, vaddr, pages)`.
    pub const DMA_FREE: u64 = 12;
    /// `map(pages) -> vaddr`: grow the heap (counted against the quota).
    pub const MAP: u64 = 13;
    /// `bootinfo(ptr, cap) -> len`: the encoded [`crate::caps::Caps`].
    pub const BOOTINFO: u64 = 14;
    /// `stats(ptr, cap) -> len`: the process's memory and CPU counters.
    pub const STATS: u64 = 15;
}

/// Negative results.
pub mod code {
    /// The handle is not a live grant of the right kind owned by the caller.
    pub const BAD_HANDLE: i64 = -1;
    /// Nothing to receive, or no room to send.
    pub const WOULD_BLOCK: i64 = -2;
    /// The other end is closed and the queue drained.
    pub const CLOSED: i64 = -3;
    /// A message or request over the bound.
    pub const TOO_LARGE: i64 = -4;
    /// The caller lacks the grant (device, entropy).
    pub const NOT_GRANTED: i64 = -5;
    /// A pointer outside the caller's mapped memory, or a bad argument.
    pub const BAD_ARGUMENT: i64 = -6;
    /// Over the process's memory quota, or no frames left.
    pub const NO_MEMORY: i64 = -7;
    /// The hardware RNG is absent.
    pub const UNAVAILABLE: i64 = -8;
    /// The hardware RNG kept failing.
    pub const EXHAUSTED: i64 = -9;
    /// The device has no interrupt line.
    pub const NO_IRQ: i64 = -10;
    /// An MMIO request outside the granted window.
    pub const OUTSIDE_WINDOW: i64 = -11;
    /// An MMIO request asking for execute permission.
    pub const EXEC_DENIED: i64 = -12;
    /// No such call.
    pub const NO_SYSCALL: i64 = -13;
}

/// `wait` interest: the channel has a message (or is closed).
pub const WAIT_READ: u32 = 1;
/// `wait` interest: the channel has room (or is closed).
pub const WAIT_WRITE: u32 = 2;
/// `wait` interest: the device interrupted.
pub const WAIT_IRQ: u32 = 4;
/// Most entries one `wait` takes.
pub const MAX_WAIT_ENTRIES: usize = 256;

/// One `wait` entry; the kernel sets `ready` to the interests that hold.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WaitEntry {
    /// The handle watched.
    pub handle: u32,
    /// `WAIT_READ | WAIT_WRITE | WAIT_IRQ`.
    pub interest: u32,
    /// Set by the kernel.
    pub ready: u32,
    /// Zero.
    pub reserved: u32,
}

/// `mmio_map` protection: readable and writable (always uncached, never
/// executable).
pub const PROT_RW: u64 = 3;
/// `mmio_map` protection bit the kernel refuses.
pub const PROT_EXEC: u64 = 4;

/// Raw system call with up to five arguments.
///
/// # Safety
/// Pointer arguments must satisfy the call's contract (the kernel checks
/// them against the address space, so a wrong pointer yields
/// `BAD_ARGUMENT`, not memory corruption in the kernel; but the kernel does
/// write where an out-pointer says).
#[inline(always)]
pub unsafe fn syscall(nr: u64, a0: u64, a1: u64, a2: u64, a3: u64, a4: u64) -> i64 {
    let ret: i64;
    // SAFETY: the kernel preserves rbx, rbp, rsp, r12-r15 and the red zone;
    // rcx and r11 are overwritten by the instruction itself; everything
    // else the C ABI lets a call clobber is declared clobbered.
    unsafe {
        core::arch::asm!(
            "syscall",
            inlateout("rax") nr as i64 => ret,
            in("rdi") a0,
            in("rsi") a1,
            in("rdx") a2,
            in("r10") a3,
            in("r8") a4,
            lateout("rcx") _,
            lateout("r11") _,
            clobber_abi("sysv64"),
            options(nostack),
        );
    }
    ret
}
