//! Processes and the scheduler.
//!
//! Each process has one thread: a kernel stack, a saved kernel context and
//! an address space. User code runs in ring 3 with interrupts on; the kernel
//! runs with interrupts off (its code uses the red zone, DESIGN §3), so a
//! thread only leaves the CPU at three points: it blocks or yields in a
//! syscall, the timer ends its quantum, or it dies. Every switch goes
//! through the scheduler context (xv6's shape): the thread saves its
//! callee-saved registers and stack pointer, the scheduler picks the next
//! ready thread round-robin, loads its address space, kernel stack
//! (TSS.rsp0 and the syscall stack) and a timer deadline no later than the
//! end of its quantum, and switches to it. With nothing ready it halts
//! (`sti; hlt`) until an interrupt.
//!
//! Waking is by `Waker`: the IPC and device code keep the wakers of the
//! processes waiting on them, exactly as they did for async tasks; a
//! process's waker makes it ready (or, if it is running, makes its next
//! block return at once, so no wake-up is ever lost).

use alloc::boxed::Box;
use alloc::collections::{BTreeMap, VecDeque};
use alloc::string::String;
use alloc::sync::Arc;
use alloc::task::Wake;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use core::task::Waker;

use spin::Mutex;

use crate::arch::{clock, gdt};
use crate::irq;
use crate::vm::AddressSpace;

/// Process id: an index into the table, never reused.
pub type Pid = usize;

/// Most processes ever created (restarts included).
pub const MAX_PROCS: usize = 64;
// Every pid has its kernel-stack slot.
const _: () = assert!(MAX_PROCS <= crate::vm::KSTACK_SLOTS);
/// Longest a process runs while another is ready.
pub const QUANTUM_NS: u64 = 10_000_000;
/// Most pending timer registrations; beyond it the earliest fires early
/// (a spurious wake-up is always allowed, a lost one never).
pub const MAX_TIMERS: usize = 4096;

/// How the system treats a process's end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Runs for the life of the system.
    Daemon,
    /// A finite job; when every one has finished the system shuts down
    /// (success only if all of them succeeded).
    Oneshot,
    /// A hostile probe: it must be killed by the kernel (or refused and exit
    /// 0); any other end fails the run.
    Probe,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Ready,
    Running,
    Blocked,
    Dead,
}

/// Why a process ended.
#[derive(Debug, Clone)]
pub enum Exit {
    /// It called `exit(status, message)`.
    Status(u64, String),
    /// The kernel killed it (CPU fault, bad syscall).
    Killed(String),
}

/// Per-process data the syscall layer reads and updates.
pub struct Proc {
    /// Name from the init table.
    pub name: &'static str,
    /// Daemon, job or probe.
    pub kind: Kind,
    /// Its page tables and quota.
    pub space: AddressSpace,
    /// May draw entropy.
    pub entropy: bool,
    /// Encoded boot info (`bootinfo` syscall).
    pub bootinfo: Vec<u8>,
    /// Next heap address (`map`).
    pub heap_top: u64,
    /// Next device-window address (`mmio_map`).
    pub mmio_next: u64,
    /// Next DMA address (`dma_alloc`).
    pub dma_next: u64,
    /// Slot of its kernel stack (its pid; `vm::map_kernel_stack`), unmapped
    /// when the process is reaped.
    kstack: Option<KStack>,
    rsp: u64,
    state: State,
    notified: bool,
    cpu_ns: u64,
    exit: Option<Exit>,
    waker: Waker,
}

struct ProcWaker(Pid);

impl Wake for ProcWaker {
    fn wake(self: Arc<Self>) {
        wake_pid(self.0);
    }
    fn wake_by_ref(self: &Arc<Self>) {
        wake_pid(self.0);
    }
}

static PROCS: Mutex<Vec<Option<Box<Proc>>>> = Mutex::new(Vec::new());
/// Ready processes: `woken` (they were blocked: waiting for I/O or a timer)
/// run before `preempted` (their quantum ended or they yielded), each FIFO.
/// A process that computes therefore never delays one that waited; one that
/// computes forever still gets every moment nobody waits for.
struct ReadyQueue {
    woken: VecDeque<Pid>,
    preempted: VecDeque<Pid>,
}

impl ReadyQueue {
    fn pop(&mut self) -> Option<Pid> {
        self.woken
            .pop_front()
            .or_else(|| self.preempted.pop_front())
    }
    fn is_empty(&self) -> bool {
        self.woken.is_empty() && self.preempted.is_empty()
    }
}

static READY: Mutex<ReadyQueue> = Mutex::new(ReadyQueue {
    woken: VecDeque::new(),
    preempted: VecDeque::new(),
});
static TIMERS: Mutex<BTreeMap<(u64, u64), Waker>> = Mutex::new(BTreeMap::new());
static TIMER_SEQ: AtomicU64 = AtomicU64::new(0);
const NONE: usize = usize::MAX;
static CURRENT: AtomicUsize = AtomicUsize::new(NONE);
static QUANTUM_END: AtomicU64 = AtomicU64::new(u64::MAX);
static IDLE_NS: AtomicU64 = AtomicU64::new(0);
/// The scheduler context's saved stack pointer.
static mut SCHED_RSP: u64 = 0;

core::arch::global_asm!(
    r#"
.section .text
.global nexus_switch
// nexus_switch(save: *mut u64 [rdi], load: u64 [rsi])
nexus_switch:
    push %rbp
    push %rbx
    push %r12
    push %r13
    push %r14
    push %r15
    mov %rsp, (%rdi)
    mov %rsi, %rsp
    pop %r15
    pop %r14
    pop %r13
    pop %r12
    pop %rbx
    pop %rbp
    ret

// First return of a new thread: leave the kernel with nothing of it in
// the registers, through the iret frame the creator built.
.global nexus_enter_user
nexus_enter_user:
    xor %eax, %eax
    xor %ebx, %ebx
    xor %ecx, %ecx
    xor %edx, %edx
    xor %esi, %esi
    xor %edi, %edi
    xor %ebp, %ebp
    xor %r8d, %r8d
    xor %r9d, %r9d
    xor %r10d, %r10d
    xor %r11d, %r11d
    xor %r12d, %r12d
    xor %r13d, %r13d
    xor %r14d, %r14d
    xor %r15d, %r15d
    call nexus_clear_simd
    iretq

.global nexus_clear_simd
nexus_clear_simd:
    xorps %xmm0, %xmm0
    xorps %xmm1, %xmm1
    xorps %xmm2, %xmm2
    xorps %xmm3, %xmm3
    xorps %xmm4, %xmm4
    xorps %xmm5, %xmm5
    xorps %xmm6, %xmm6
    xorps %xmm7, %xmm7
    xorps %xmm8, %xmm8
    xorps %xmm9, %xmm9
    xorps %xmm10, %xmm10
    xorps %xmm11, %xmm11
    xorps %xmm12, %xmm12
    xorps %xmm13, %xmm13
    xorps %xmm14, %xmm14
    xorps %xmm15, %xmm15
    ret

// Idle: enable interrupts and halt until one arrives. A called function so
// the caller keeps nothing in its red zone while an interrupt frame is
// pushed on this stack.
.global nexus_idle_halt
nexus_idle_halt:
    sti
    hlt
    cli
    ret
"#,
    options(att_syntax)
);

extern "C" {
    fn nexus_switch(save: *mut u64, load: u64);
    fn nexus_enter_user();
    fn nexus_idle_halt();
}

/// The process running now (`None` in the scheduler or at boot).
pub fn current() -> Option<Pid> {
    let p = CURRENT.load(Ordering::Relaxed);
    (p != NONE).then_some(p)
}

/// Run `f` on the current process.
pub fn with_current<R>(f: impl FnOnce(&mut Proc) -> R) -> Option<R> {
    let pid = current()?;
    let mut t = PROCS.lock();
    t.get_mut(pid)?.as_mut().map(|p| f(p))
}

/// Run `f` on process `pid`.
pub fn with_proc<R>(pid: Pid, f: impl FnOnce(&mut Proc) -> R) -> Option<R> {
    let mut t = PROCS.lock();
    t.get_mut(pid)?.as_mut().map(|p| f(p))
}

/// The name of process `pid`.
pub fn name_of(pid: Pid) -> &'static str {
    with_proc(pid, |p| p.name).unwrap_or("?")
}

/// The current process's waker.
pub fn current_waker() -> Option<Waker> {
    with_current(|p| p.waker.clone())
}

fn wake_pid(pid: Pid) {
    let mut t = PROCS.lock();
    let Some(Some(p)) = t.get_mut(pid) else {
        return;
    };
    match p.state {
        State::Blocked => {
            p.state = State::Ready;
            drop(t);
            READY.lock().woken.push_back(pid);
        }
        State::Running | State::Ready => p.notified = true,
        State::Dead => {}
    }
}

/// Why a process could not be created.
#[derive(Debug)]
pub enum SpawnError {
    /// The process table is full.
    TableFull,
    /// No frames for its kernel stack.
    NoMemory,
}

/// A process's kernel stack in the guarded region (`vm`); unmapped on drop.
#[derive(Debug)]
struct KStack {
    slot: usize,
    top: u64,
}

impl Drop for KStack {
    fn drop(&mut self) {
        crate::vm::unmap_kernel_stack(self.slot);
    }
}

/// Create a process around a prepared address space, ready to enter user
/// mode at `entry` with stack pointer `user_sp`. It does not run until
/// [`start`].
pub fn create(
    name: &'static str,
    kind: Kind,
    space: AddressSpace,
    entry: u64,
    user_sp: u64,
    entropy: bool,
) -> Result<Pid, SpawnError> {
    let mut t = PROCS.lock();
    if t.len() >= MAX_PROCS {
        return Err(SpawnError::TableFull);
    }
    let pid = t.len();
    let top = crate::vm::map_kernel_stack(pid).map_err(|_| SpawnError::NoMemory)?;
    let kstack = KStack { slot: pid, top };
    // Initial kernel stack, lowest address first: the six callee-saved
    // registers `nexus_switch` pops, its return address, then the iret frame.
    let frame: [u64; 12] = [
        0,
        0,
        0,
        0,
        0,
        0,
        nexus_enter_user as *const () as u64,
        entry,
        u64::from(gdt::USER_CODE),
        0x202, // IF
        user_sp,
        u64::from(gdt::USER_DATA),
    ];
    let rsp = top - (frame.len() * 8) as u64;
    // SAFETY: the 96 bytes below `top` lie inside the new stack.
    unsafe {
        core::ptr::copy_nonoverlapping(frame.as_ptr(), rsp as usize as *mut u64, frame.len())
    };
    t.push(Some(Box::new(Proc {
        name,
        kind,
        space,
        entropy,
        bootinfo: Vec::new(),
        heap_top: nexus_abi::layout::HEAP_START,
        mmio_next: nexus_abi::layout::MMIO_START,
        dma_next: nexus_abi::layout::DMA_START,
        kstack: Some(kstack),
        rsp,
        state: State::Blocked,
        notified: false,
        cpu_ns: 0,
        exit: None,
        waker: Waker::from(Arc::new(ProcWaker(pid))),
    })));
    Ok(pid)
}

/// Make a created process runnable.
pub fn start(pid: Pid) {
    wake_pid(pid);
}

/// Register `waker` to be woken at `deadline_ns`.
pub fn wake_at(deadline_ns: u64, waker: &Waker) {
    let mut timers = TIMERS.lock();
    if timers
        .range((deadline_ns, 0)..=(deadline_ns, u64::MAX))
        .any(|(_, w)| w.will_wake(waker))
    {
        return;
    }
    let early = if timers.len() >= MAX_TIMERS {
        timers.pop_first().map(|(_, w)| w)
    } else {
        None
    };
    let seq = TIMER_SEQ.fetch_add(1, Ordering::Relaxed);
    timers.insert((deadline_ns, seq), waker.clone());
    drop(timers);
    if let Some(w) = early {
        w.wake();
    }
}

fn next_deadline() -> Option<u64> {
    TIMERS.lock().first_key_value().map(|(k, _)| k.0)
}

/// Fire due timers and deliver device interrupts: wake whoever waits.
/// Returns whether anything was due (someone may have become ready).
fn process_events() -> bool {
    let now = clock::now_ns();
    let mut due = Vec::new();
    {
        let mut timers = TIMERS.lock();
        while let Some(e) = timers.first_entry() {
            if e.key().0 > now {
                break;
            }
            due.push(e.remove());
        }
    }
    let woke = !due.is_empty();
    due.into_iter().for_each(Waker::wake);
    let pins = irq::take_pending_pins();
    if pins != 0 {
        crate::ipc::wake_device_pins(pins);
    }
    woke || pins != 0
}

fn arm_for_current() {
    let q = QUANTUM_END.load(Ordering::Relaxed);
    let d = next_deadline().map_or(q, |d| d.min(q));
    clock::arm((d != u64::MAX).then_some(d));
}

/// Leave the CPU to the scheduler, in state `to` (the caller holds no lock).
fn switch_out(to: State) {
    let Some(pid) = current() else { return };
    let save = {
        let mut t = PROCS.lock();
        let Some(Some(p)) = t.get_mut(pid) else {
            return;
        };
        if to == State::Blocked && p.notified {
            p.notified = false;
            return;
        }
        p.notified = false;
        p.state = to;
        &raw mut p.rsp
    };
    if to == State::Ready {
        READY.lock().preempted.push_back(pid);
    }
    // SAFETY: `save` points into the boxed process, which is only freed by
    // the scheduler after it is dead and switched out; SCHED_RSP was saved by
    // the scheduler's own `nexus_switch`.
    unsafe { nexus_switch(save, SCHED_RSP) };
}

/// Block the current process until its waker is called.
pub fn block() {
    switch_out(State::Blocked);
}

/// Let every other ready process run first.
pub fn yield_now() {
    switch_out(State::Ready);
}

/// End the current process; never returns.
pub fn exit_current(why: Exit) -> ! {
    if let Some(pid) = current() {
        if let Some(Some(p)) = PROCS.lock().get_mut(pid) {
            p.exit = Some(why);
        }
        switch_out(State::Dead);
    }
    // Only reachable if called outside a process: a kernel bug.
    crate::console::emergency(format_args!("PANIC: exit_current outside a process"));
    crate::shutdown::exit(crate::shutdown::Status::Failure)
}

/// Called by the interrupt path after an interrupt taken in user mode:
/// deliver events, and give the CPU away if the quantum is over or the
/// interrupt woke someone (a process that was waiting for a timer or a device
/// runs before one that was computing: I/O latency does not depend on how
/// long a spinner's quantum is).
pub fn after_user_interrupt(device: bool) {
    let woke = process_events();
    let others = !READY.lock().is_empty();
    let expired = clock::now_ns() >= QUANTUM_END.load(Ordering::Relaxed);
    if others && (expired || device || woke) {
        yield_now();
    } else {
        if expired {
            QUANTUM_END.store(clock::now_ns() + QUANTUM_NS, Ordering::Relaxed);
        }
        arm_for_current();
    }
}

/// At the end of a syscall: give the CPU away if the quantum is over.
pub fn maybe_preempt() {
    if clock::now_ns() >= QUANTUM_END.load(Ordering::Relaxed) && !READY.lock().is_empty() {
        yield_now();
    }
}

/// What reaping a process gave back.
#[derive(Clone, Copy, Debug)]
pub struct Reaped {
    /// Free frames just before its address space was dropped.
    pub free_before: usize,
    /// Free frames just after.
    pub free_after: usize,
    /// Frames its address space was charged with.
    pub charged: usize,
}

/// Frames charged to every live process.
pub fn charged_frames() -> usize {
    PROCS
        .lock()
        .iter()
        .flatten()
        .map(|p| p.space.used_frames())
        .sum()
}

/// Idle share and per-process CPU time since boot.
pub struct Stats {
    /// Nanoseconds halted.
    pub idle_ns: u64,
    /// `(name, cpu ns)` of every live process.
    pub procs: Vec<(&'static str, u64)>,
}

/// A snapshot for `kernel.stats_ms`.
pub fn stats() -> Stats {
    let procs = PROCS
        .lock()
        .iter()
        .flatten()
        .filter(|p| p.state != State::Dead)
        .map(|p| (p.name, p.cpu_ns))
        .collect();
    Stats {
        idle_ns: IDLE_NS.load(Ordering::Relaxed),
        procs,
    }
}

/// The scheduler loop. `tick` runs on every pass and says when it next
/// wants to run (the idle halt wakes for it); `on_exit` is told about every
/// process that ended, after its resources were returned.
pub fn run(
    mut tick: impl FnMut() -> Option<u64>,
    on_exit: fn(Pid, &'static str, Kind, Exit, Reaped),
) -> ! {
    loop {
        let want = tick();
        let _ = process_events();
        let next = READY.lock().pop();
        let Some(pid) = next else {
            let deadline = match (next_deadline(), want) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            clock::arm(deadline);
            let before = clock::now_ns();
            // SAFETY: see the asm: interrupts are handled on this stack and
            // only set flags.
            unsafe { nexus_idle_halt() };
            IDLE_NS.fetch_add(clock::now_ns().saturating_sub(before), Ordering::Relaxed);
            irq::take_timer();
            continue;
        };
        let load = {
            let mut t = PROCS.lock();
            let Some(Some(p)) = t.get_mut(pid) else {
                continue;
            };
            if p.state != State::Ready {
                continue;
            }
            let Some(top) = p.kstack.as_ref().map(|k| k.top) else {
                continue;
            };
            p.state = State::Running;
            gdt::set_kernel_stack(top);
            crate::syscall::set_kernel_stack(top);
            p.space.activate();
            p.rsp
        };
        CURRENT.store(pid, Ordering::Relaxed);
        let start = clock::now_ns();
        QUANTUM_END.store(start + QUANTUM_NS, Ordering::Relaxed);
        arm_for_current();
        // SAFETY: `load` is the saved kernel stack of a ready process; the
        // scheduler's own context is saved in SCHED_RSP.
        unsafe { nexus_switch(&raw mut SCHED_RSP, load) };
        CURRENT.store(NONE, Ordering::Relaxed);
        let ran = clock::now_ns().saturating_sub(start);
        let dead = {
            let mut t = PROCS.lock();
            match t.get_mut(pid) {
                Some(slot) => {
                    if let Some(p) = slot.as_mut() {
                        p.cpu_ns += ran;
                    }
                    if slot.as_ref().is_some_and(|p| p.state == State::Dead) {
                        slot.take()
                    } else {
                        None
                    }
                }
                None => None,
            }
        };
        if let Some(mut p) = dead {
            // Its kernel stack is kernel memory, not charged to the process:
            // freed after the reap's frame check.
            let kstack = p.kstack.take();
            let (name, kind) = (p.name, p.kind);
            let why = p
                .exit
                .clone()
                .unwrap_or(Exit::Killed(String::from("no exit reason")));
            crate::ipc::task_exited(pid);
            let charged = p.space.used_frames();
            let free_before = crate::frames::counts().0;
            drop(p);
            let reaped = Reaped {
                free_before,
                free_after: crate::frames::counts().0,
                charged,
            };
            drop(kstack);
            on_exit(pid, name, kind, why, reaped);
        }
    }
}
