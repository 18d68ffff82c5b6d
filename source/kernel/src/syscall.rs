//! The syscall entry (`syscall`/`sysret`) and the call table.
//!
//! `syscall` arrives with interrupts masked (SFMASK clears IF, DF, TF, AC),
//! on the user's stack. The entry stub saves the user stack pointer in a
//! scratch slot (one CPU, interrupts off: nothing can intervene), switches
//! to the process's kernel stack, saves the user return state and the
//! argument registers in a [`Frame`] and calls [`syscall_dispatch`]. The
//! return path restores them, clears the SIMD registers (the kernel's own
//! SSE use must not leak to user space) and `sysretq`s. The user RIP comes
//! from the `syscall` instruction itself, so it is canonical and in user
//! space; the kernel never changes it.
//!
//! Every pointer argument is checked against the caller's address space and
//! copied through the kernel's mapping (crate::vm); a bad pointer gets
//! `BAD_ARGUMENT`, never a kernel fault.

use alloc::string::String;
use alloc::vec::Vec;

use nexus_abi::bootinfo::MAX_LEN as MAX_BOOTINFO;
use nexus_abi::device::DeviceError;
use nexus_abi::entropy::EntropyError;
use nexus_abi::ipc::{IpcError, MAX_MESSAGE};
use nexus_abi::layout::{self, PAGE};
use nexus_abi::sys::{code, nr, Handle, WaitEntry, MAX_WAIT_ENTRIES};
use x86_64::registers::model_specific::{Efer, EferFlags, LStar, SFMask, Star};
use x86_64::registers::rflags::RFlags;
use x86_64::registers::segmentation::SegmentSelector;
use x86_64::{PrivilegeLevel, VirtAddr};

use crate::arch::{clock, gdt};
use crate::sched::{self, Exit};
use crate::vm::{Prot, VmError};
use crate::{console, ipc, rng};

/// Most heap pages one `map` call adds.
pub const MAX_MAP_PAGES: u64 = 4096;
/// Longest log line accepted.
pub const MAX_LOG: usize = 512;
/// Longest exit message accepted.
pub const MAX_EXIT_MSG: usize = 512;
/// Largest single entropy request.
pub const MAX_ENTROPY: usize = 4096;

#[no_mangle]
static mut SYSCALL_KERNEL_RSP: u64 = 0;
#[no_mangle]
static mut SYSCALL_USER_RSP: u64 = 0;

core::arch::global_asm!(
    r#"
.section .text
.global nexus_syscall_entry
nexus_syscall_entry:
    mov %rsp, SYSCALL_USER_RSP(%rip)
    mov SYSCALL_KERNEL_RSP(%rip), %rsp
    pushq SYSCALL_USER_RSP(%rip)
    push %r11
    push %rcx
    push %rax
    push %rdi
    push %rsi
    push %rdx
    push %r10
    push %r8
    push %r9
    mov %rsp, %rdi
    call syscall_dispatch
    pop %r9
    pop %r8
    pop %r10
    pop %rdx
    pop %rsi
    pop %rdi
    pop %rax
    pop %rcx
    pop %r11
    call nexus_clear_simd
    pop %rsp
    sysretq
"#,
    options(att_syntax)
);

extern "C" {
    fn nexus_syscall_entry();
}

/// Registers saved by the entry stub, lowest address first.
#[repr(C)]
pub struct Frame {
    r9: u64,
    r8: u64,
    r10: u64,
    rdx: u64,
    rsi: u64,
    rdi: u64,
    /// Call number in, result out.
    rax: u64,
    rcx: u64,
    r11: u64,
    user_rsp: u64,
}

/// Program STAR/LSTAR/SFMASK and enable `syscall`.
pub fn init() {
    // SAFETY: the selectors match the GDT layout (arch::gdt) and the entry
    // point is the stub above.
    unsafe {
        Efer::update(|f| f.insert(EferFlags::SYSTEM_CALL_EXTENSIONS));
        LStar::write(VirtAddr::new(nexus_syscall_entry as *const () as u64));
        SFMask::write(
            RFlags::INTERRUPT_FLAG
                | RFlags::DIRECTION_FLAG
                | RFlags::TRAP_FLAG
                | RFlags::ALIGNMENT_CHECK,
        );
        // Star::write checks the selectors' relationship itself.
        let _ = Star::write(
            SegmentSelector(gdt::USER_CODE),
            SegmentSelector(gdt::USER_DATA),
            SegmentSelector(gdt::KERNEL_CODE),
            SegmentSelector::new(2, PrivilegeLevel::Ring0),
        );
    }
}

/// The stack `syscall` switches to (the running process's kernel stack).
pub fn set_kernel_stack(top: u64) {
    // SAFETY: one CPU, interrupts off.
    unsafe { SYSCALL_KERNEL_RSP = top };
}

#[no_mangle]
extern "C" fn syscall_dispatch(f: &mut Frame) {
    // `sysretq` to a non-canonical RIP faults in ring 0 with the user's stack
    // loaded. RCX is the address after the process's `syscall` instruction,
    // and no process can map anything near the top of the lower half (its
    // pages all lie below `USER_END`), so this never holds; if it ever did,
    // end the process instead of returning.
    if f.rcx >= layout::USER_END {
        crate::kprintln!(
            "kernel: syscall from rip={:#x} outside user space; process killed",
            f.rcx
        );
        sched::exit_current(Exit::Killed(String::from(
            "syscall from outside user space",
        )));
    }
    let r = call(f.rax, [f.rdi, f.rsi, f.rdx, f.r10, f.r8]);
    f.rax = r as u64;
    sched::maybe_preempt();
}

fn ipc_code(e: IpcError) -> i64 {
    match e {
        IpcError::WouldBlock => code::WOULD_BLOCK,
        IpcError::Closed => code::CLOSED,
        IpcError::TooLarge => code::TOO_LARGE,
        IpcError::BadHandle => code::BAD_HANDLE,
        IpcError::BadAddress => code::BAD_ARGUMENT,
    }
}

fn dev_code(e: DeviceError) -> i64 {
    match e {
        DeviceError::NotGranted => code::NOT_GRANTED,
        DeviceError::NoIrq => code::NO_IRQ,
        DeviceError::OutOfMemory => code::NO_MEMORY,
        DeviceError::InvalidArgument => code::BAD_ARGUMENT,
        DeviceError::OutsideWindow => code::OUTSIDE_WINDOW,
        DeviceError::ExecDenied => code::EXEC_DENIED,
    }
}

fn vm_code(e: VmError) -> i64 {
    match e {
        VmError::Quota | VmError::NoFrames => code::NO_MEMORY,
        VmError::Mapped | VmError::BadAddress => code::BAD_ARGUMENT,
    }
}

fn copy_in(ptr: u64, len: usize) -> Result<Vec<u8>, i64> {
    sched::with_current(|p| p.space.copy_in(ptr, len))
        .unwrap_or(Err(VmError::BadAddress))
        .map_err(vm_code)
}

fn copy_out(ptr: u64, data: &[u8]) -> Result<(), i64> {
    sched::with_current(|p| p.space.copy_out(ptr, data))
        .unwrap_or(Err(VmError::BadAddress))
        .map_err(vm_code)
}

fn call(n: u64, a: [u64; 5]) -> i64 {
    let r = match n {
        nr::LOG => sys_log(a[0], a[1], a[2]),
        nr::NOW => Ok(clock::now_ns() as i64),
        nr::YIELD => {
            sched::yield_now();
            Ok(0)
        }
        nr::EXIT => sys_exit(a[0], a[1], a[2]),
        nr::ENTROPY => sys_entropy(a[0], a[1]),
        nr::CHAN_SEND => sys_send(a[0], a[1], a[2]),
        nr::CHAN_RECV => sys_recv(a[0], a[1], a[2]),
        nr::CHAN_CLOSE => {
            ipc::close(Handle(a[0] as u32));
            Ok(0)
        }
        nr::WAIT => sys_wait(a[0], a[1], a[2]),
        nr::MMIO_MAP => ipc::mmio_map(Handle(a[0] as u32), a[1], a[2], a[3])
            .map(|v| v as i64)
            .map_err(dev_code),
        nr::IRQ_TAKE => sys_irq_take(a[0]),
        nr::DMA_ALLOC => sys_dma_alloc(a[0], a[1], a[2]),
        nr::DMA_FREE => ipc::dma_free(Handle(a[0] as u32), a[1], a[2])
            .map(|()| 0)
            .map_err(dev_code),
        nr::MAP => sys_map(a[0]),
        nr::BOOTINFO => sys_bootinfo(a[0], a[1]),
        _ => Err(code::NO_SYSCALL),
    };
    r.unwrap_or_else(|e| e)
}

fn sys_log(level: u64, ptr: u64, len: u64) -> Result<i64, i64> {
    let len = (len as usize).min(MAX_LOG);
    let bytes = copy_in(ptr, len)?;
    let text = String::from_utf8_lossy(&bytes);
    match level {
        1 => console::line(format_args!("ERROR {text}")),
        2 => console::line(format_args!("WARN {text}")),
        3 => console::line(format_args!("{text}")),
        _ => console::line(format_args!("debug {text}")),
    }
    Ok(0)
}

fn sys_exit(status: u64, ptr: u64, len: u64) -> Result<i64, i64> {
    let len = (len as usize).min(MAX_EXIT_MSG);
    let msg = copy_in(ptr, len).unwrap_or_default();
    let msg = String::from_utf8_lossy(&msg).into_owned();
    sched::exit_current(Exit::Status(status, msg))
}

fn sys_entropy(ptr: u64, len: u64) -> Result<i64, i64> {
    if !sched::with_current(|p| p.entropy).unwrap_or(false) {
        return Err(code::NOT_GRANTED);
    }
    let len = len as usize;
    if len > MAX_ENTROPY {
        return Err(code::TOO_LARGE);
    }
    let mut buf = alloc::vec![0u8; len];
    rng::fill(&mut buf).map_err(|e| match e {
        EntropyError::Unavailable => code::UNAVAILABLE,
        EntropyError::Exhausted => code::EXHAUSTED,
        EntropyError::NotGranted => code::NOT_GRANTED,
    })?;
    copy_out(ptr, &buf)?;
    Ok(0)
}

fn sys_send(h: u64, ptr: u64, len: u64) -> Result<i64, i64> {
    let len = len as usize;
    if len > MAX_MESSAGE {
        return Err(code::TOO_LARGE);
    }
    let msg = copy_in(ptr, len)?;
    ipc::send(Handle(h as u32), &msg, None).map_err(ipc_code)?;
    Ok(0)
}

fn sys_recv(h: u64, ptr: u64, cap: u64) -> Result<i64, i64> {
    // The whole buffer must be writable before a message is dequeued, so a
    // bad buffer can never lose one.
    if (cap as usize) < MAX_MESSAGE {
        return Err(code::BAD_ARGUMENT);
    }
    sched::with_current(|p| p.space.check_writable(ptr, cap))
        .unwrap_or(Err(VmError::BadAddress))
        .map_err(vm_code)?;
    let msg = ipc::recv(Handle(h as u32), None).map_err(ipc_code)?;
    copy_out(ptr, &msg)?;
    Ok(msg.len() as i64)
}

fn sys_wait(ptr: u64, count: u64, deadline: u64) -> Result<i64, i64> {
    let count = count as usize;
    if count > MAX_WAIT_ENTRIES {
        return Err(code::TOO_LARGE);
    }
    let size = core::mem::size_of::<WaitEntry>();
    let raw = copy_in(ptr, count * size)?;
    let mut entries: Vec<WaitEntry> = raw
        .chunks_exact(size)
        .map(|c| {
            let w = |i: usize| u32::from_le_bytes([c[i], c[i + 1], c[i + 2], c[i + 3]]);
            WaitEntry {
                handle: w(0),
                interest: w(4),
                ready: 0,
                reserved: 0,
            }
        })
        .collect();
    let waker = sched::current_waker().ok_or(code::BAD_ARGUMENT)?;
    loop {
        let mut ready = 0;
        for e in entries.iter_mut() {
            e.ready = ipc::poll_ready(Handle(e.handle), e.interest, &waker);
            if e.ready != 0 {
                ready += 1;
            }
        }
        if ready > 0 || clock::now_ns() >= deadline {
            let mut out = Vec::with_capacity(raw.len());
            for e in &entries {
                for v in [e.handle, e.interest, e.ready, e.reserved] {
                    out.extend_from_slice(&v.to_le_bytes());
                }
            }
            copy_out(ptr, &out)?;
            return Ok(ready);
        }
        if deadline != u64::MAX {
            sched::wake_at(deadline, &waker);
        }
        sched::block();
    }
}

fn sys_irq_take(h: u64) -> Result<i64, i64> {
    let waker = sched::current_waker().ok_or(code::BAD_ARGUMENT)?;
    ipc::irq_take(Handle(h as u32), &waker)
        .map(i64::from)
        .map_err(dev_code)
}

fn sys_dma_alloc(h: u64, pages: u64, out: u64) -> Result<i64, i64> {
    let region = ipc::dma_alloc(Handle(h as u32), pages).map_err(dev_code)?;
    let mut bytes = Vec::with_capacity(24);
    bytes.extend_from_slice(&region.paddr.to_le_bytes());
    bytes.extend_from_slice(&(region.vaddr as u64).to_le_bytes());
    bytes.extend_from_slice(&(region.pages as u64).to_le_bytes());
    if let Err(e) = copy_out(out, &bytes) {
        // The caller cannot learn where its memory is: take it back.
        let _ = ipc::dma_free(Handle(h as u32), region.vaddr as u64, region.pages as u64);
        return Err(e);
    }
    Ok(0)
}

fn sys_map(pages: u64) -> Result<i64, i64> {
    if pages == 0 || pages > MAX_MAP_PAGES {
        return Err(code::BAD_ARGUMENT);
    }
    sched::with_current(|p| {
        let at = p.heap_top;
        let end = at + pages * PAGE;
        if end > layout::HEAP_END {
            return Err(code::NO_MEMORY);
        }
        // The pages plus, at worst, one page table per 512 pages and a new
        // directory and table at the start: refuse up front, so a call
        // over the quota maps nothing.
        if !p
            .space
            .can_charge(pages as usize + pages.div_ceil(512) as usize + 2)
        {
            return Err(code::NO_MEMORY);
        }
        let mapped = p.space.map_zeroed(at, pages, Prot::RW);
        // Even a failed call (the allocator ran out of frames) moves the
        // break past what it tried: pages it did map stay charged and are
        // freed with the process, and the next call never hits them.
        p.heap_top = end;
        mapped.map_err(vm_code)?;
        Ok(at as i64)
    })
    .unwrap_or(Err(code::BAD_ARGUMENT))
}

fn sys_bootinfo(ptr: u64, cap: u64) -> Result<i64, i64> {
    let info = sched::with_current(|p| p.bootinfo.clone()).unwrap_or_default();
    if info.len() > MAX_BOOTINFO || info.len() as u64 > cap {
        return Err(code::TOO_LARGE);
    }
    copy_out(ptr, &info)?;
    Ok(info.len() as i64)
}
