//! Monotonic time, sleeping and yielding.

use core::future::Future;
use core::pin::Pin;
use core::task::{Context, Poll};
use core::time::Duration;

use crate::rt;
use crate::sys::{nr, syscall};

/// A point on the kernel's monotonic clock (nanoseconds since boot).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Instant(u64);

impl Instant {
    /// The instant `ns` nanoseconds after boot.
    pub const fn from_nanos(ns: u64) -> Self {
        Instant(ns)
    }
    /// The instant `ms` milliseconds after boot (saturating).
    pub const fn from_millis(ms: u64) -> Self {
        Instant(ms.saturating_mul(1_000_000))
    }
    /// Nanoseconds since boot.
    pub const fn as_nanos(self) -> u64 {
        self.0
    }
    /// Milliseconds since boot.
    pub const fn as_millis(self) -> u64 {
        self.0 / 1_000_000
    }
    /// Microseconds since boot.
    pub const fn as_micros(self) -> u64 {
        self.0 / 1_000
    }
    /// Time elapsed from `earlier` to `self` (zero if `earlier` is later).
    pub fn saturating_duration_since(self, earlier: Instant) -> Duration {
        Duration::from_nanos(self.0.saturating_sub(earlier.0))
    }
    /// `self + d`, saturating at the end of time.
    pub fn saturating_add(self, d: Duration) -> Instant {
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        Instant(self.0.saturating_add(ns))
    }
}

/// The current monotonic time.
pub fn now() -> Instant {
    // SAFETY: no arguments.
    Instant(unsafe { syscall(nr::NOW, 0, 0, 0, 0, 0) } as u64)
}

/// Sleep for `d`.
pub fn sleep(d: Duration) -> Sleep {
    sleep_until(now().saturating_add(d))
}

/// Sleep until the clock reaches `deadline`.
pub fn sleep_until(deadline: Instant) -> Sleep {
    Sleep { deadline }
}

/// Future returned by [`sleep`]/[`sleep_until`].
#[derive(Debug)]
pub struct Sleep {
    deadline: Instant,
}

impl Future for Sleep {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if now() >= self.deadline {
            Poll::Ready(())
        } else {
            rt::register_timer(self.deadline.0, cx.waker());
            Poll::Pending
        }
    }
}

/// Let every other runnable task run once before continuing.
pub fn yield_now() -> YieldNow {
    YieldNow { yielded: false }
}

/// Future returned by [`yield_now`].
#[derive(Debug)]
pub struct YieldNow {
    yielded: bool,
}

impl Future for YieldNow {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.yielded {
            Poll::Ready(())
        } else {
            self.yielded = true;
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    }
}
