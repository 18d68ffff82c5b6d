//! Candidate addresses and dial backoff.
//!
//! An announce carries no proof of where it came from, so a replayed
//! announce from another address can point a peer's entry anywhere. Instead
//! of one address per device id, keep up to `per_id` candidates (default 4)
//! — every address an accepted announce came from — and dial the best one:
//! not in backoff, fewest failed attempts, most recently heard. An address
//! whose connect or handshake fails backs off (250 ms × 2^n, ≤ 10 s, plus
//! jitter), so the real address is tried next: a replayer at any rate can
//! delay a dial by at most one failed attempt per backoff period.
//!
//! When the candidate list is full, a new address replaces the one with the
//! most failures, then the least recently heard.

use alloc::vec::Vec;
use core::net::SocketAddr;
use core::time::Duration;

use crate::announce::DeviceId;
use crate::time::Instant;

/// First retry delay after a failure.
pub const BACKOFF_BASE: Duration = Duration::from_millis(250);
/// Longest retry delay (before jitter).
pub const BACKOFF_MAX: Duration = Duration::from_secs(10);

/// Retry delay after `failures` consecutive failures: 250 ms × 2^n capped
/// at 10 s, plus `jitter` (any u64, e.g. random) mapped onto 0..=50 %.
pub fn backoff_delay(failures: u32, jitter: u64) -> Duration {
    let base_ms = (BACKOFF_BASE.as_millis() as u64)
        .saturating_mul(1u64 << failures.min(6))
        .min(BACKOFF_MAX.as_millis() as u64);
    Duration::from_millis(base_ms + jitter % (base_ms / 2 + 1))
}

/// Bounds of [`Candidates`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CandidateConfig {
    /// Addresses kept per id (default 4, minimum 1).
    pub per_id: usize,
    /// Ids tracked (default 64, minimum 1); the least recently heard id is
    /// forgotten first.
    pub max_ids: usize,
}

impl Default for CandidateConfig {
    fn default() -> Self {
        CandidateConfig {
            per_id: 4,
            max_ids: 64,
        }
    }
}

/// One candidate address of a device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Candidate {
    /// Where to dial.
    pub addr: SocketAddr,
    /// Last accepted announce pointing here.
    pub last_heard: Instant,
    /// Consecutive failed attempts.
    pub failures: u32,
    /// Not before this instant.
    pub retry_at: Instant,
}

#[derive(Clone, Debug)]
struct Entry {
    id: DeviceId,
    cands: Vec<Candidate>,
    last_heard: Instant,
}

/// Candidate addresses per device id. See the module docs.
#[derive(Clone, Debug)]
pub struct Candidates {
    cfg: CandidateConfig,
    entries: Vec<Entry>,
}

impl Candidates {
    /// Empty.
    pub fn new(cfg: CandidateConfig) -> Self {
        let cfg = CandidateConfig {
            per_id: cfg.per_id.max(1),
            max_ids: cfg.max_ids.max(1),
        };
        Candidates {
            entries: Vec::new(),
            cfg,
        }
    }

    /// Ids tracked.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Nothing tracked.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The candidates of `id`.
    pub fn of(&self, id: &DeviceId) -> &[Candidate] {
        self.entries
            .iter()
            .find(|e| e.id == *id)
            .map_or(&[], |e| e.cands.as_slice())
    }

    /// An accepted announce for `id` pointed at `addr`.
    pub fn heard(&mut self, id: &DeviceId, addr: SocketAddr, now: Instant) {
        let i = match self.entries.iter().position(|e| e.id == *id) {
            Some(i) => i,
            None => {
                if self.entries.len() >= self.cfg.max_ids {
                    if let Some(v) =
                        (0..self.entries.len()).min_by_key(|&i| self.entries[i].last_heard)
                    {
                        self.entries.swap_remove(v);
                    }
                }
                self.entries.push(Entry {
                    id: id.clone(),
                    cands: Vec::with_capacity(self.cfg.per_id),
                    last_heard: now,
                });
                self.entries.len() - 1
            }
        };
        let per_id = self.cfg.per_id;
        let e = &mut self.entries[i];
        e.last_heard = now;
        if let Some(c) = e.cands.iter_mut().find(|c| c.addr == addr) {
            c.last_heard = c.last_heard.max(now);
            return;
        }
        let fresh = Candidate {
            addr,
            last_heard: now,
            failures: 0,
            retry_at: Instant::ZERO,
        };
        if e.cands.len() < per_id {
            e.cands.push(fresh);
        } else if let Some(v) = (0..e.cands.len()).max_by_key(|&j| {
            let c = &e.cands[j];
            (c.failures, core::cmp::Reverse(c.last_heard))
        }) {
            e.cands[v] = fresh;
        }
    }

    /// The address to dial for `id` at `now`: among candidates whose retry
    /// time has come, fewest failures, then most recently heard. `None`
    /// when every candidate is backing off (see [`next_retry`](Self::next_retry)).
    pub fn pick(&self, id: &DeviceId, now: Instant) -> Option<SocketAddr> {
        self.of(id)
            .iter()
            .filter(|c| c.retry_at <= now)
            .min_by_key(|c| (c.failures, core::cmp::Reverse(c.last_heard)))
            .map(|c| c.addr)
    }

    /// When the earliest candidate of `id` may be dialled again.
    pub fn next_retry(&self, id: &DeviceId) -> Option<Instant> {
        self.of(id).iter().map(|c| c.retry_at).min()
    }

    /// A connect or handshake to `addr` for `id` failed at `now`.
    pub fn failed(&mut self, id: &DeviceId, addr: SocketAddr, now: Instant, jitter: u64) {
        if let Some(c) = self.cand_mut(id, addr) {
            c.failures = c.failures.saturating_add(1);
            c.retry_at = now.saturating_add(backoff_delay(c.failures, jitter));
        }
    }

    /// A session through `addr` came up (or ended after having come up: the
    /// next dial waits `backoff_delay(0)` so it is never a hot loop).
    pub fn succeeded(&mut self, id: &DeviceId, addr: SocketAddr, now: Instant, jitter: u64) {
        if let Some(c) = self.cand_mut(id, addr) {
            c.failures = 0;
            c.retry_at = now.saturating_add(backoff_delay(0, jitter));
        }
    }

    /// Forgets `id`.
    pub fn remove(&mut self, id: &DeviceId) {
        self.entries.retain(|e| e.id != *id);
    }

    /// Keeps only the ids `keep` says yes to.
    pub fn retain(&mut self, mut keep: impl FnMut(&DeviceId) -> bool) {
        self.entries.retain(|e| keep(&e.id));
    }

    fn cand_mut(&mut self, id: &DeviceId, addr: SocketAddr) -> Option<&mut Candidate> {
        self.entries
            .iter_mut()
            .find(|e| e.id == *id)?
            .cands
            .iter_mut()
            .find(|c| c.addr == addr)
    }
}

impl Default for Candidates {
    fn default() -> Self {
        Candidates::new(CandidateConfig::default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::fixtures::{id, t};
    use core::net::{IpAddr, Ipv4Addr};
    use proptest::prelude::*;

    fn a(n: u8) -> SocketAddr {
        SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, n)), 4000)
    }

    #[test]
    fn node_candidates_backoff_delay_bounds() {
        assert_eq!(backoff_delay(0, 0), Duration::from_millis(250));
        assert_eq!(backoff_delay(1, 0), Duration::from_millis(500));
        assert_eq!(backoff_delay(40, 0), Duration::from_secs(10));
        assert!(backoff_delay(40, u64::MAX) <= Duration::from_secs(15));
        assert!(backoff_delay(0, u64::MAX) <= Duration::from_millis(375));
    }

    /// Partial item "replayed announce": the replayer's address is heard
    /// every 5 ms, the real one every second. Before, the single address
    /// pointed at the replayer nearly always and every dial failed. Now the
    /// failed address backs off and the next dial goes to the real one.
    #[test]
    fn node_candidates_replayed_announce_cannot_stop_dialling_the_real_address() {
        let mut c = Candidates::default();
        let b = id("b");
        let (real, replay) = (a(1), a(66));
        c.heard(&b, real, t(0));
        let mut dials_to_real = 0;
        let mut first_real = None;
        for ms in (1..10_000u64).step_by(5) {
            c.heard(&b, replay, t(ms));
            if ms % 1000 == 1 {
                c.heard(&b, real, t(ms));
            }
            if ms % 250 == 1 {
                if let Some(addr) = c.pick(&b, t(ms)) {
                    if addr == real {
                        dials_to_real += 1;
                        first_real.get_or_insert(ms);
                        c.succeeded(&b, real, t(ms), 0);
                    } else {
                        c.failed(&b, addr, t(ms), 0);
                    }
                }
            }
        }
        assert!(first_real.is_some_and(|ms| ms <= 251), "{first_real:?}");
        assert!(dials_to_real >= 20, "{dials_to_real}");
    }

    #[test]
    fn node_candidates_bounded_and_worst_replaced() {
        let mut c = Candidates::new(CandidateConfig {
            per_id: 2,
            max_ids: 2,
        });
        c.heard(&id("x"), a(1), t(0));
        c.heard(&id("x"), a(2), t(1));
        c.failed(&id("x"), a(2), t(2), 0);
        c.heard(&id("x"), a(3), t(3));
        let addrs: Vec<SocketAddr> = c.of(&id("x")).iter().map(|c| c.addr).collect();
        assert_eq!(addrs, alloc::vec![a(1), a(3)], "the failing one went");
        c.heard(&id("y"), a(4), t(4));
        c.heard(&id("z"), a(5), t(5));
        assert_eq!(c.len(), 2);
        assert!(
            c.of(&id("x")).is_empty(),
            "least recently heard id forgotten"
        );
        assert_eq!(c.pick(&id("nobody"), t(0)), None);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]
        /// Any sequence: bounded; pick never returns an address in backoff
        /// while a fresh one exists, and returns something whenever any
        /// candidate's retry time has come.
        #[test]
        fn node_candidates_state_machine_invariants(
            ops in proptest::collection::vec((0u8..3, 0u8..4, 0u8..8, 0u64..700, any::<u64>()), 1..300),
        ) {
            let cfg = CandidateConfig { per_id: 3, max_ids: 3 };
            let mut c = Candidates::new(cfg);
            let mut now = 0u64;
            for (op, i, n, dt, j) in ops {
                now += dt;
                let d = id(&alloc::format!("d{i}"));
                match op {
                    0 => c.heard(&d, a(n), t(now)),
                    1 => c.failed(&d, a(n), t(now), j),
                    _ => c.succeeded(&d, a(n), t(now), j),
                }
                prop_assert!(c.len() <= 3);
                for e in &c.entries { prop_assert!(e.cands.len() <= 3); }
                let ready = c.of(&d).iter().any(|x| x.retry_at <= t(now));
                let picked = c.pick(&d, t(now));
                prop_assert_eq!(ready, picked.is_some());
                if let Some(p) = picked {
                    let pc = c.of(&d).iter().find(|x| x.addr == p).copied().unwrap();
                    prop_assert!(pc.retry_at <= t(now));
                }
            }
        }
    }
}
