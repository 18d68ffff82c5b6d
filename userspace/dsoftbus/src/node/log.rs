//! Log limiting: every line a remote peer can trigger goes through here.
//!
//! One token bucket per *kind* of line (a `&'static str` chosen by the
//! caller, e.g. `"peer-found"`), refilled at `per_second` lines per second
//! up to `burst`. A refused line is counted; the next line of that kind that
//! is allowed carries the count ("(N similar suppressed)"), so nothing is
//! lost silently. The first line of every kind always passes: markers
//! printed once for the first event survive any flood.
//!
//! State is bounded: at most `max_kinds` kinds; further kinds share one
//! overflow bucket. So the **worst-case volume** over `t` seconds is
//! `(max_kinds + 1) × (burst + per_second × t)` lines, whatever the peers
//! send — with the defaults (32 kinds, burst 5, 1/s) at most 33 lines a
//! second in steady state ([`LogLimiter::worst_case_lines`]).

use alloc::vec::Vec;

use crate::ratelimit::TokenBucket;
use crate::time::Instant;

/// Bounds of a [`LogLimiter`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LogLimiterConfig {
    /// Lines per second per kind in steady state (default 1).
    pub per_second: u32,
    /// Lines of one kind that may come back to back (default 5, minimum 1).
    pub burst: u32,
    /// Distinct kinds tracked (default 32); more share one bucket.
    pub max_kinds: usize,
}

impl Default for LogLimiterConfig {
    fn default() -> Self {
        LogLimiterConfig {
            per_second: 1,
            burst: 5,
            max_kinds: 32,
        }
    }
}

#[derive(Clone, Debug)]
struct Slot {
    kind: &'static str,
    bucket: TokenBucket,
    suppressed: u64,
}

/// Per-kind log rate limiter with suppressed counts. See the module docs.
#[derive(Clone, Debug)]
pub struct LogLimiter {
    cfg: LogLimiterConfig,
    slots: Vec<Slot>,
    overflow: Option<Slot>,
    allowed: u64,
    suppressed_total: u64,
}

impl LogLimiter {
    /// A limiter with `cfg` (burst clamped to >= 1).
    pub fn new(cfg: LogLimiterConfig) -> Self {
        let cfg = LogLimiterConfig {
            burst: cfg.burst.max(1),
            ..cfg
        };
        LogLimiter {
            slots: Vec::with_capacity(cfg.max_kinds),
            cfg,
            overflow: None,
            allowed: 0,
            suppressed_total: 0,
        }
    }

    /// The configuration in force.
    pub fn config(&self) -> &LogLimiterConfig {
        &self.cfg
    }

    /// One line of `kind` wants out at `now`. `Some(n)`: log it, and say `n`
    /// similar lines were suppressed since the last one; `None`: suppressed
    /// (counted).
    pub fn allow(&mut self, kind: &'static str, now: Instant) -> Option<u64> {
        let cfg = self.cfg;
        let fresh = |kind| Slot {
            kind,
            bucket: TokenBucket::new(cfg.per_second, cfg.burst, now),
            suppressed: 0,
        };
        let slot = match self.slots.iter().position(|s| s.kind == kind) {
            Some(i) => &mut self.slots[i],
            None if self.slots.len() < self.cfg.max_kinds => {
                self.slots.push(fresh(kind));
                let last = self.slots.len() - 1;
                &mut self.slots[last]
            }
            None => self.overflow.get_or_insert_with(|| fresh("other")),
        };
        if slot.bucket.try_take(now) {
            self.allowed = self.allowed.saturating_add(1);
            Some(core::mem::take(&mut slot.suppressed))
        } else {
            slot.suppressed = slot.suppressed.saturating_add(1);
            self.suppressed_total = self.suppressed_total.saturating_add(1);
            None
        }
    }

    /// Lines allowed so far.
    pub fn allowed(&self) -> u64 {
        self.allowed
    }

    /// Lines suppressed so far.
    pub fn suppressed(&self) -> u64 {
        self.suppressed_total
    }

    /// The most lines this limiter can ever allow within `secs` seconds.
    pub fn worst_case_lines(&self, secs: u64) -> u64 {
        let kinds = self.cfg.max_kinds as u64 + 1;
        kinds.saturating_mul(
            u64::from(self.cfg.burst)
                .saturating_add(u64::from(self.cfg.per_second).saturating_mul(secs)),
        )
    }
}

impl Default for LogLimiter {
    fn default() -> Self {
        LogLimiter::new(LogLimiterConfig::default())
    }
}

/// `" (N similar suppressed)"`, or nothing when `n` is 0.
pub fn suppressed_suffix(n: u64) -> alloc::string::String {
    if n == 0 {
        alloc::string::String::new()
    } else {
        alloc::format!(" ({n} similar suppressed)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn t(ms: u64) -> Instant {
        Instant::from_millis(ms)
    }

    #[test]
    fn node_log_first_line_of_every_kind_passes_and_counts_suppressed() {
        let mut l = LogLimiter::default();
        assert_eq!(l.allow("peer-found", t(0)), Some(0));
        assert_eq!(
            l.allow("key-conflict", t(0)),
            Some(0),
            "kinds are independent"
        );
        for _ in 0..4 {
            assert_eq!(l.allow("peer-found", t(0)), Some(0));
        }
        for _ in 0..100 {
            assert_eq!(l.allow("peer-found", t(1)), None);
        }
        assert_eq!(l.allow("peer-found", t(1001)), Some(100));
        assert_eq!(l.suppressed(), 100);
    }

    /// Item 6: 148 k "peer found" lines in 30 s before; at most
    /// burst + 30 now, whatever the flood.
    #[test]
    fn node_log_flood_of_peer_found_is_bounded() {
        let mut l = LogLimiter::default();
        let mut lines = 0u64;
        // 5 000 inserts a second for 30 s (the measured flood rate).
        for i in 0..150_000u64 {
            if l.allow("peer-found", t(i * 30_000 / 150_000)).is_some() {
                lines += 1;
            }
        }
        assert!(lines <= 5 + 30, "{lines} lines");
        assert_eq!(l.suppressed(), 150_000 - lines);
    }

    #[test]
    fn node_log_kinds_beyond_the_bound_share_one_bucket() {
        let cfg = LogLimiterConfig {
            max_kinds: 2,
            burst: 1,
            per_second: 1,
        };
        let mut l = LogLimiter::new(cfg);
        assert!(l.allow("a", t(0)).is_some());
        assert!(l.allow("b", t(0)).is_some());
        assert!(l.allow("c", t(0)).is_some());
        assert!(
            l.allow("d", t(0)).is_none(),
            "c and d share the overflow bucket"
        );
        assert_eq!(l.slots.len(), 2);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]
        /// Whatever the sequence of kinds and times, the lines allowed never
        /// exceed the stated worst case and allowed + suppressed = offered.
        #[test]
        fn node_log_never_exceeds_worst_case(
            events in proptest::collection::vec((0usize..40, 0u64..200), 1..600),
            burst in 1u32..8, rate in 0u32..4, kinds in 1usize..8,
        ) {
            const KINDS: [&str; 40] = ["k0","k1","k2","k3","k4","k5","k6","k7","k8","k9",
                "k10","k11","k12","k13","k14","k15","k16","k17","k18","k19","k20","k21","k22",
                "k23","k24","k25","k26","k27","k28","k29","k30","k31","k32","k33","k34","k35",
                "k36","k37","k38","k39"];
            let mut l = LogLimiter::new(LogLimiterConfig { per_second: rate, burst, max_kinds: kinds });
            let mut now = 0u64;
            for (k, dt) in &events {
                now += dt;
                let _ = l.allow(KINDS[*k], t(now));
            }
            let secs = now / 1000 + 1;
            prop_assert!(l.allowed() <= l.worst_case_lines(secs));
            prop_assert_eq!(l.allowed() + l.suppressed(), events.len() as u64);
            prop_assert!(l.slots.len() <= kinds);
        }
    }
}
