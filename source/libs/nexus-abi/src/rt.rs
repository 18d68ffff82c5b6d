//! The process's own executor and reactor.
//!
//! A future that cannot make progress registers what it waits for here
//! (a channel readable or writable, a device interrupt, a deadline) with its
//! waker; the kernel never sees a waker. When the main future is pending,
//! [`block_on`] hands the registrations to the kernel's `wait(entries,
//! deadline)` call, which blocks the process until one holds, then wakes the
//! matching wakers and polls again.
//!
//! Registrations are keyed by (handle, interest) and keep the newest waker,
//! as the kernel's queues did; their number is therefore bounded by the
//! handles a process holds. Timers are bounded by [`MAX_TIMERS`]: past it
//! the earliest fires early (a spurious wake-up is allowed, a lost one never).

use alloc::collections::BTreeMap;
use alloc::sync::Arc;
use alloc::task::Wake;
use alloc::vec::Vec;
use core::future::Future;
use core::pin::pin;
use core::sync::atomic::{AtomicBool, Ordering};
use core::task::{Context, Poll, Waker};

use spin::Mutex;

use crate::sys::{nr, syscall, Handle, WaitEntry, MAX_WAIT_ENTRIES};

/// Most pending timers per process.
pub const MAX_TIMERS: usize = 4096;

struct Reactor {
    /// (handle, interest bit) → waker.
    io: BTreeMap<(u32, u32), Waker>,
    /// (deadline, sequence) → waker.
    timers: BTreeMap<(u64, u64), Waker>,
    seq: u64,
}

static REACTOR: Mutex<Reactor> = Mutex::new(Reactor {
    io: BTreeMap::new(),
    timers: BTreeMap::new(),
    seq: 0,
});

/// Wake `waker` when `interest` (one of `sys::WAIT_*`) holds for `h`.
pub fn register(h: Handle, interest: u32, waker: &Waker) {
    let mut r = REACTOR.lock();
    match r.io.get_mut(&(h.0, interest)) {
        Some(w) if w.will_wake(waker) => {}
        Some(w) => *w = waker.clone(),
        None => {
            r.io.insert((h.0, interest), waker.clone());
        }
    }
}

/// Drop every registration for a handle being closed.
pub fn forget(h: Handle) {
    REACTOR.lock().io.retain(|(hh, _), _| *hh != h.0);
}

/// Wake `waker` once the clock reaches `deadline_ns`.
pub fn register_timer(deadline_ns: u64, waker: &Waker) {
    let early = {
        let mut r = REACTOR.lock();
        if r.timers
            .range((deadline_ns, 0)..=(deadline_ns, u64::MAX))
            .any(|(_, w)| w.will_wake(waker))
        {
            return;
        }
        let early = if r.timers.len() >= MAX_TIMERS {
            r.timers.pop_first().map(|(_, w)| w)
        } else {
            None
        };
        r.seq += 1;
        let seq = r.seq;
        r.timers.insert((deadline_ns, seq), waker.clone());
        early
    };
    if let Some(w) = early {
        w.wake();
    }
}

/// Block in the kernel until a registration holds or the first timer is
/// due, then wake whoever waited for it.
fn wait_for_events() {
    let (mut entries, deadline) = {
        let r = REACTOR.lock();
        let mut entries: Vec<WaitEntry> = Vec::new();
        for &(h, interest) in r.io.keys() {
            match entries.last_mut() {
                Some(e) if e.handle == h => e.interest |= interest,
                _ => entries.push(WaitEntry {
                    handle: h,
                    interest,
                    ready: 0,
                    reserved: 0,
                }),
            }
        }
        let deadline = r.timers.first_key_value().map_or(u64::MAX, |(k, _)| k.0);
        (entries, deadline)
    };
    // More handles than one call takes: wait on the first batch with a
    // short deadline so the rest are looked at soon (never hit today: a
    // process holds a handful of handles).
    let mut deadline = deadline;
    if entries.len() > MAX_WAIT_ENTRIES {
        entries.truncate(MAX_WAIT_ENTRIES);
        deadline = deadline.min(crate::time::now().as_nanos() + 1_000_000);
    }
    // SAFETY: `entries` is a live array the kernel reads and writes back.
    let r = unsafe {
        syscall(
            nr::WAIT,
            entries.as_mut_ptr() as u64,
            entries.len() as u64,
            deadline,
            0,
            0,
        )
    };
    let mut wake = Vec::new();
    {
        let mut reactor = REACTOR.lock();
        if r > 0 {
            for e in &entries {
                let mut bits = e.ready;
                while bits != 0 {
                    let bit = bits & bits.wrapping_neg();
                    bits &= !bit;
                    wake.extend(reactor.io.remove(&(e.handle, bit)));
                }
            }
        }
        let now = crate::time::now().as_nanos();
        while let Some(t) = reactor.timers.first_entry() {
            if t.key().0 > now {
                break;
            }
            wake.push(t.remove());
        }
    }
    wake.into_iter().for_each(Waker::wake);
}

struct Flag(AtomicBool);

impl Wake for Flag {
    fn wake(self: Arc<Self>) {
        self.0.store(true, Ordering::Release);
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.0.store(true, Ordering::Release);
    }
}

/// Run `fut` to completion on this process's only thread.
pub fn block_on<F: Future>(fut: F) -> F::Output {
    let flag = Arc::new(Flag(AtomicBool::new(false)));
    let waker = Waker::from(flag.clone());
    let mut cx = Context::from_waker(&waker);
    let mut fut = pin!(fut);
    loop {
        flag.0.store(false, Ordering::Release);
        if let Poll::Ready(v) = fut.as_mut().poll(&mut cx) {
            return v;
        }
        if flag.0.load(Ordering::Acquire) {
            // Woken while polling (e.g. `yield_now`): let others run once.
            // SAFETY: no arguments.
            unsafe { syscall(nr::YIELD, 0, 0, 0, 0, 0) };
            continue;
        }
        wait_for_events();
    }
}
