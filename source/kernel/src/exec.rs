//! The task runtime: a single-core async executor with a timer queue.
//!
//! Services are futures. A task runs until it returns `Pending`; its waker
//! puts it back on the ready queue. When nothing is ready the executor arms
//! the APIC one-shot timer for the earliest deadline and halts (`sti; hlt`):
//! the CPU sleeps until a timer or device interrupt, never spins.
//!
//! Task code runs with interrupts disabled; handlers only run inside the idle
//! halt and only set flags (crate::irq). So no lock here is ever contended by
//! interrupt context.

use alloc::collections::{BTreeMap, VecDeque};
use alloc::sync::Arc;
use alloc::task::Wake;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use core::task::{Context, Poll, Waker};

use nexus_abi::ServiceFuture;
use spin::Mutex;

use crate::arch::{clock, port};
use crate::{ipc, irq, kprintln, shutdown};

/// Task index in the task table.
pub type TaskId = usize;

/// Most tasks the table holds.
pub const MAX_TASKS: usize = 64;
/// Most pending timer registrations; beyond it the earliest fires early
/// (a spurious wake-up is always allowed, a lost one never).
pub const MAX_TIMERS: usize = 4096;

/// Whether the boot is waiting for a task to finish.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Runs for the life of the system.
    Daemon,
    /// A finite job; when every one has finished, the system shuts down
    /// (success only if all of them succeeded).
    Oneshot,
}

/// A task's future. Not `Send`, and it need not be: there is one CPU and
/// futures never leave the executor.
struct TaskFuture(ServiceFuture);

// SAFETY: single core, no threads; a future is only ever polled by `run`.
unsafe impl Send for TaskFuture {}

struct Task {
    name: &'static str,
    kind: Kind,
    future: Option<TaskFuture>,
    finished: bool,
    waker: Arc<TaskWaker>,
    entropy: bool,
}

struct TaskWaker {
    id: TaskId,
    queued: AtomicBool,
}

impl Wake for TaskWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }
    fn wake_by_ref(self: &Arc<Self>) {
        if !self.queued.swap(true, Ordering::AcqRel) {
            READY.lock().push_back(self.id);
        }
    }
}

static TASKS: Mutex<Vec<Task>> = Mutex::new(Vec::new());
/// Tasks waiting for another service to finish successfully before they start.
static DEFERRED: Mutex<Vec<(&'static str, TaskId, TaskFuture)>> = Mutex::new(Vec::new());
static READY: Mutex<VecDeque<TaskId>> = Mutex::new(VecDeque::new());
static TIMERS: Mutex<BTreeMap<(u64, u64), Waker>> = Mutex::new(BTreeMap::new());
static TIMER_SEQ: AtomicUsize = AtomicUsize::new(0);
static CURRENT: AtomicUsize = AtomicUsize::new(usize::MAX);
static IDLE_NS: AtomicUsize = AtomicUsize::new(0);

/// Why a task could not be created.
#[derive(Debug)]
pub struct TableFull;

/// Reserve a task slot (its future is attached with [`start`]).
pub fn create(name: &'static str, kind: Kind, entropy: bool) -> Result<TaskId, TableFull> {
    let mut tasks = TASKS.lock();
    if tasks.len() == MAX_TASKS {
        return Err(TableFull);
    }
    let id = tasks.len();
    tasks.push(Task {
        name,
        kind,
        future: None,
        finished: false,
        waker: Arc::new(TaskWaker {
            id,
            queued: AtomicBool::new(false),
        }),
        entropy,
    });
    Ok(id)
}

/// Attach the task's future and make it runnable.
pub fn start(id: TaskId, future: ServiceFuture) {
    let waker = {
        let mut tasks = TASKS.lock();
        let Some(task) = tasks.get_mut(id) else {
            return;
        };
        task.future = Some(TaskFuture(future));
        task.waker.clone()
    };
    waker.wake();
}

/// Start `id` once the service named `after` has exited successfully.
pub fn start_after(id: TaskId, future: ServiceFuture, after: &'static str) {
    DEFERRED.lock().push((after, id, TaskFuture(future)));
}

fn start_dependents(of: &'static str) {
    let ready: Vec<(TaskId, TaskFuture)> = {
        let mut deferred = DEFERRED.lock();
        let (now, later): (Vec<_>, Vec<_>) = core::mem::take(&mut *deferred)
            .into_iter()
            .partition(|(a, _, _)| *a == of);
        *deferred = later;
        now.into_iter().map(|(_, id, f)| (id, f)).collect()
    };
    for (id, f) in ready {
        let name = TASKS.lock().get(id).map_or("?", |t| t.name);
        kprintln!("init: starting {name} (after {of})");
        start(id, f.0);
    }
}

/// The task being polled (`None` for kernel code).
pub fn current() -> Option<TaskId> {
    let id = CURRENT.load(Ordering::Relaxed);
    (id != usize::MAX).then_some(id)
}

/// Whether the current task holds the entropy grant.
pub fn current_has_entropy() -> bool {
    let Some(id) = current() else { return false };
    TASKS.lock().get(id).is_some_and(|t| t.entropy)
}

/// Register `waker` to be woken at `deadline_ns`.
pub fn wake_at(deadline_ns: u64, waker: &Waker) {
    let mut timers = TIMERS.lock();
    // The same waker for the same deadline is registered once.
    if timers
        .range((deadline_ns, 0)..=(deadline_ns, u64::MAX))
        .any(|(_, w)| w.will_wake(waker))
    {
        return;
    }
    if timers.len() >= MAX_TIMERS {
        if let Some((_, w)) = timers.pop_first() {
            w.wake();
        }
    }
    let seq = TIMER_SEQ.fetch_add(1, Ordering::Relaxed) as u64;
    timers.insert((deadline_ns, seq), waker.clone());
}

fn fire_timers(now: u64) {
    let mut due = Vec::new();
    {
        let mut timers = TIMERS.lock();
        while let Some(entry) = timers.first_entry() {
            if entry.key().0 > now {
                break;
            }
            due.push(entry.remove());
        }
    }
    for w in due {
        w.wake();
    }
}

fn next_deadline() -> Option<u64> {
    TIMERS.lock().first_key_value().map(|(k, _)| k.0)
}

fn poll_task(id: TaskId) {
    let (mut future, waker, name) = {
        let mut tasks = TASKS.lock();
        let Some(task) = tasks.get_mut(id) else {
            return;
        };
        task.waker.queued.store(false, Ordering::Release);
        let Some(f) = task.future.take() else { return };
        (f, Waker::from(task.waker.clone()), task.name)
    };
    CURRENT.store(id, Ordering::Relaxed);
    let mut cx = Context::from_waker(&waker);
    let result = future.0.as_mut().poll(&mut cx);
    CURRENT.store(usize::MAX, Ordering::Relaxed);
    match result {
        Poll::Pending => {
            if let Some(task) = TASKS.lock().get_mut(id) {
                task.future = Some(future);
            }
        }
        Poll::Ready(outcome) => {
            drop(future);
            ipc::task_exited(id);
            let kind = {
                let mut tasks = TASKS.lock();
                let Some(task) = tasks.get_mut(id) else {
                    return;
                };
                task.finished = true;
                task.kind
            };
            match outcome {
                Ok(()) => {
                    kprintln!("init: service {name} exited ok");
                    start_dependents(name);
                }
                Err(e) => {
                    kprintln!("init: service {name} FAIL: {e}");
                    shutdown::exit(shutdown::Status::Failure);
                }
            }
            if kind == Kind::Oneshot && all_oneshots_finished() {
                let (used, free) = crate::mem::heap_usage();
                let now = clock::now_ns().max(1);
                kprintln!(
                    "kernel: all finite services done; idle {}% of {} ms, heap used {} KiB free {} KiB",
                    IDLE_NS.load(Ordering::Relaxed) as u64 * 100 / now,
                    now / 1_000_000,
                    used / 1024,
                    free / 1024
                );
                if !crate::KEEP_RUNNING.load(Ordering::Relaxed) {
                    shutdown::exit(shutdown::Status::Success);
                }
            }
        }
    }
}

fn all_oneshots_finished() -> bool {
    TASKS
        .lock()
        .iter()
        .filter(|t| t.kind == Kind::Oneshot)
        .all(|t| t.finished)
}

/// Run tasks forever. With `stats_every_ns`, print the idle share and task
/// wake-ups at that interval (boot option `kernel.stats_ms`).
pub fn run(stats_every_ns: Option<u64>) -> ! {
    let mut next_stats = stats_every_ns.map(|p| clock::now_ns() + p);
    let (mut idle_mark, mut polls_mark, mut halts_mark, mut mark_ns) =
        (0usize, 0u64, 0u64, clock::now_ns());
    let mut polls: u64 = 0;
    let mut halts: u64 = 0;
    loop {
        if let (Some(at), Some(every)) = (next_stats, stats_every_ns) {
            let now = clock::now_ns();
            if now >= at {
                let idle = IDLE_NS.load(Ordering::Relaxed);
                let span = now.saturating_sub(mark_ns).max(1);
                kprintln!(
                    "kernel: stats idle={}% task-polls={} halts={} over {} ms",
                    (idle - idle_mark) as u64 * 100 / span,
                    polls - polls_mark,
                    halts - halts_mark,
                    span / 1_000_000
                );
                (idle_mark, polls_mark, halts_mark, mark_ns) = (idle, polls, halts, now);
                next_stats = Some(now + every);
            }
        }
        let batch: Vec<TaskId> = READY.lock().drain(..).collect();
        for id in batch {
            polls += 1;
            poll_task(id);
        }
        fire_timers(clock::now_ns());
        let pins = irq::take_pending_pins();
        if pins != 0 {
            ipc::wake_device_pins(pins);
        }
        if !READY.lock().is_empty() {
            continue;
        }
        let deadline = match (next_deadline(), next_stats) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        clock::arm(deadline);
        let before = clock::now_ns();
        halts += 1;
        port::idle_until_interrupt();
        let slept = clock::now_ns().saturating_sub(before);
        IDLE_NS.fetch_add(slept as usize, Ordering::Relaxed);
        irq::take_timer();
    }
}
