//! The caller's clock.
//!
//! The core never reads a clock: every call that cares about time takes an
//! [`Instant`] the caller produced from whatever monotonic source it has (the
//! kernel timer in the OS, `std::time::Instant` on hosts, a plain counter in
//! tests). That keeps the state machines deterministic and testable without
//! wall-clock sleeps.

use core::time::Duration;

/// A point on the caller's monotonic clock, in milliseconds since an
/// arbitrary, caller-chosen epoch. Only differences between instants mean
/// anything.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Instant(u64);

impl Instant {
    /// The epoch of the caller's clock.
    pub const ZERO: Instant = Instant(0);

    /// An instant `ms` milliseconds after the caller's epoch.
    pub const fn from_millis(ms: u64) -> Self {
        Instant(ms)
    }

    /// Milliseconds since the caller's epoch.
    pub const fn as_millis(self) -> u64 {
        self.0
    }

    /// Time elapsed from `earlier` to `self`, zero if `earlier` is later
    /// (a clock that steps back must not underflow or panic).
    pub fn saturating_since(self, earlier: Instant) -> Duration {
        Duration::from_millis(self.0.saturating_sub(earlier.0))
    }

    /// `self + d`, saturating at the end of time instead of overflowing.
    pub fn saturating_add(self, d: Duration) -> Instant {
        let ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        Instant(self.0.saturating_add(ms))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arithmetic_saturates() {
        let a = Instant::from_millis(10);
        let b = Instant::from_millis(4);
        assert_eq!(a.saturating_since(b), Duration::from_millis(6));
        assert_eq!(b.saturating_since(a), Duration::ZERO);
        assert_eq!(
            Instant::from_millis(u64::MAX - 1).saturating_add(Duration::from_secs(5)),
            Instant::from_millis(u64::MAX)
        );
    }
}
