//! Admission of inbound connections: half-open caps with fair admission,
//! then the pre-DH handshake rate limiter.
//!
//! ```text
//! accept ─▶ half-open slot (per-source cap, fair) ─▶ frame 1: mac1 ─▶ HandshakeLimiter ─▶ DH
//! ```
//!
//! - **Per-source cap.** One source (IPv4 address, IPv6 /64) holds at most
//!   `per_source` half-open connections (default 4); more from it are
//!   refused at once ([`AdmitRefused::SourceCap`]).
//! - **Fair admission.** When all `max_half_open` slots (default 16) are
//!   taken, a source holding fewer slots than the busiest source is still
//!   admitted: the oldest slot of the busiest source is given up
//!   ([`Admitted::evict`], the caller closes that connection). So a source
//!   with no half-open connection is *always* admitted at once, and a
//!   slowloris from any number of addresses can delay an honest peer by at
//!   most one connect attempt per source it outnumbers.
//! - **Handshake rate limit.** After mac1 and before DH,
//!   [`Admission::gate`] hands out the core's
//!   [`HandshakeLimiter`](crate::ratelimit::HandshakeLimiter) for that source.
//!
//! Sans-IO: connections are [`Ticket`]s, the caller's clock comes in, the
//! caller closes what [`Admitted::evict`] names and calls
//! [`Admission::release`] when a connection is no longer half-open.

use alloc::vec::Vec;
use core::fmt;
use core::net::IpAddr;

use super::source_of;
use crate::ratelimit::{HandshakeLimiter, RateLimitConfig, SourceGate};
use crate::time::Instant;

/// Bounds of [`Admission`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AdmissionConfig {
    /// Half-open inbound connections at once (default 16, minimum 1).
    pub max_half_open: usize,
    /// Half-open inbound connections from one source (default 4, minimum 1).
    pub per_source: usize,
    /// The pre-DH handshake rate limits.
    pub rate: RateLimitConfig,
}

impl Default for AdmissionConfig {
    fn default() -> Self {
        AdmissionConfig {
            max_half_open: 16,
            per_source: 4,
            rate: RateLimitConfig::default(),
        }
    }
}

/// One admitted half-open connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ticket(pub u64);

/// A connection was admitted; if `evict` is set, the caller must close that
/// (older, half-open) connection — its slot already went to this one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Admitted {
    /// This connection's ticket.
    pub ticket: Ticket,
    /// The connection that gave up its slot.
    pub evict: Option<Ticket>,
}

/// Why a connection was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AdmitRefused {
    /// Its source already holds `per_source` half-open connections.
    SourceCap,
    /// All slots are held, none by a source busier than this one.
    Full,
}

impl fmt::Display for AdmitRefused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AdmitRefused::SourceCap => "too many handshakes in progress from this address",
            AdmitRefused::Full => "too many handshakes in progress",
        })
    }
}

/// Counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct AdmissionStats {
    pub admitted: u64,
    pub evicted: u64,
    pub refused_source: u64,
    pub refused_full: u64,
}

#[derive(Clone, Copy, Debug)]
struct Slot {
    ticket: Ticket,
    source: IpAddr,
    since: Instant,
}

/// Half-open slots plus the handshake limiter. See the module docs.
#[derive(Clone, Debug)]
pub struct Admission {
    cfg: AdmissionConfig,
    slots: Vec<Slot>,
    next: u64,
    limiter: HandshakeLimiter,
    stats: AdmissionStats,
}

impl Admission {
    /// Empty, with full buckets at `now`.
    pub fn new(cfg: AdmissionConfig, now: Instant) -> Self {
        let cfg = AdmissionConfig {
            max_half_open: cfg.max_half_open.max(1),
            per_source: cfg.per_source.max(1),
            ..cfg
        };
        Admission {
            slots: Vec::with_capacity(cfg.max_half_open),
            next: 1,
            limiter: HandshakeLimiter::new(cfg.rate, now),
            cfg,
            stats: AdmissionStats::default(),
        }
    }

    /// The configuration in force.
    pub fn config(&self) -> &AdmissionConfig {
        &self.cfg
    }

    /// Counters.
    pub fn stats(&self) -> AdmissionStats {
        self.stats
    }

    /// Half-open connections now.
    pub fn half_open(&self) -> usize {
        self.slots.len()
    }

    /// Half-open connections from `ip`'s source now.
    pub fn from_source(&self, ip: IpAddr) -> usize {
        let s = source_of(ip);
        self.slots.iter().filter(|x| x.source == s).count()
    }

    /// A new inbound connection from `ip` at `now`.
    pub fn admit(&mut self, ip: IpAddr, now: Instant) -> Result<Admitted, AdmitRefused> {
        let src = source_of(ip);
        let mine = self.slots.iter().filter(|s| s.source == src).count();
        if mine >= self.cfg.per_source {
            self.stats.refused_source = self.stats.refused_source.saturating_add(1);
            return Err(AdmitRefused::SourceCap);
        }
        let mut evict = None;
        if self.slots.len() >= self.cfg.max_half_open {
            // The busiest source, its oldest slot.
            let mut busiest: Option<(usize, IpAddr)> = None;
            for s in &self.slots {
                let n = self.slots.iter().filter(|x| x.source == s.source).count();
                if busiest.is_none_or(|(b, _)| n > b) {
                    busiest = Some((n, s.source));
                }
            }
            let victim = match busiest {
                Some((n, ip)) if n > mine => self
                    .slots
                    .iter()
                    .enumerate()
                    .filter(|(_, s)| s.source == ip)
                    .min_by_key(|(_, s)| (s.since, s.ticket))
                    .map(|(i, _)| i),
                _ => None,
            };
            let Some(i) = victim else {
                self.stats.refused_full = self.stats.refused_full.saturating_add(1);
                return Err(AdmitRefused::Full);
            };
            evict = Some(self.slots.swap_remove(i).ticket);
            self.stats.evicted = self.stats.evicted.saturating_add(1);
        }
        let ticket = Ticket(self.next);
        self.next = self.next.wrapping_add(1);
        self.slots.push(Slot {
            ticket,
            source: src,
            since: now,
        });
        self.stats.admitted = self.stats.admitted.saturating_add(1);
        Ok(Admitted { ticket, evict })
    }

    /// The connection is no longer half-open (established, failed, closed or
    /// evicted). Returns whether it held a slot.
    pub fn release(&mut self, t: Ticket) -> bool {
        match self.slots.iter().position(|s| s.ticket == t) {
            Some(i) => {
                self.slots.swap_remove(i);
                true
            }
            None => false,
        }
    }

    /// The pre-DH gate for a connection from `ip` (use with
    /// [`Connection::handle_input_gated`](crate::Connection::handle_input_gated)).
    pub fn gate(&mut self, ip: IpAddr) -> SourceGate<'_> {
        self.limiter.gate(ip)
    }

    /// The handshake limiter (counters).
    pub fn limiter(&self) -> &HandshakeLimiter {
        &self.limiter
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::fixtures::{ip, t};
    use crate::ratelimit::HandshakeGate;
    use proptest::prelude::*;

    /// Item 4: 64 reconnecting connections from one address, no key needed.
    /// Before: 16 global slots, first come first served, so the attacker
    /// held all of them (no honest session for 38 s). Now it holds at most
    /// 4, and the honest peer is admitted at its first attempt.
    #[test]
    fn node_admission_slowloris_from_one_source_cannot_hold_all_slots() {
        let mut a = Admission::new(AdmissionConfig::default(), t(0));
        let mut held = Vec::new();
        for i in 0..64u64 {
            if let Ok(x) = a.admit(ip(66), t(i)) {
                held.push(x.ticket);
            }
        }
        assert_eq!(held.len(), 4);
        assert_eq!(a.stats().refused_source, 60);
        let honest = a.admit(ip(1), t(100)).unwrap();
        assert_eq!(honest.evict, None, "free slots remain");
    }

    /// Item 4 across many addresses: 16 attacker addresses fill every slot;
    /// an honest source with none is still admitted at once, displacing the
    /// oldest slot of the busiest source.
    #[test]
    fn node_admission_fair_admission_displaces_the_busiest_source() {
        let mut a = Admission::new(AdmissionConfig::default(), t(0));
        for i in 0..16u64 {
            a.admit(ip(100 + (i % 4) as u8), t(i)).unwrap();
        }
        assert_eq!(a.half_open(), 16);
        let x = a.admit(ip(1), t(50)).unwrap();
        assert_eq!(x.evict, Some(Ticket(1)), "oldest slot of a 4-slot source");
        assert_eq!(a.half_open(), 16);
        assert_eq!(a.from_source(ip(1)), 1);
        // 16 sources with one slot each: a newcomer still gets in.
        let mut a = Admission::new(AdmissionConfig::default(), t(0));
        for i in 0..16u8 {
            a.admit(ip(100 + i), t(u64::from(i))).unwrap();
        }
        assert_eq!(a.admit(ip(1), t(50)).unwrap().evict, Some(Ticket(1)));
        // ...but a source that already holds as many as everyone does not.
        assert_eq!(a.admit(ip(1), t(51)), Err(AdmitRefused::Full));
    }

    #[test]
    fn node_admission_release_frees_and_gate_limits_after_mac1() {
        let mut a = Admission::new(AdmissionConfig::default(), t(0));
        let x = a.admit(ip(1), t(0)).unwrap();
        assert!(a.release(x.ticket));
        assert!(!a.release(x.ticket));
        assert_eq!(a.half_open(), 0);
        // The limiter: burst 8 from one source, then refused until refill.
        let mut ok = 0;
        for _ in 0..20 {
            if a.gate(ip(1)).admit(t(0)).is_ok() {
                ok += 1;
            }
        }
        assert_eq!(ok, 8);
        assert!(a.gate(ip(1)).admit(t(250)).is_ok(), "4/s refill");
    }

    #[test]
    fn node_admission_ipv6_counts_per_64() {
        let cfg = AdmissionConfig {
            per_source: 2,
            ..AdmissionConfig::default()
        };
        let mut a = Admission::new(cfg, t(0));
        let v6 =
            |last: u16| IpAddr::V6(core::net::Ipv6Addr::new(0x2001, 0xdb8, 0, 1, 0, 0, 0, last));
        a.admit(v6(1), t(0)).unwrap();
        a.admit(v6(2), t(0)).unwrap();
        assert_eq!(a.admit(v6(3), t(0)), Err(AdmitRefused::SourceCap));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]
        /// Under any sequence of admits and releases from up to 24 sources:
        /// slots <= max, per source <= cap, and a source holding no slot is
        /// always admitted.
        #[test]
        fn node_admission_state_machine_invariants(
            ops in proptest::collection::vec((any::<bool>(), 0u8..24, 0usize..32), 1..400),
            max in 1usize..20, per in 1usize..6,
        ) {
            let cfg = AdmissionConfig { max_half_open: max, per_source: per, ..AdmissionConfig::default() };
            let mut a = Admission::new(cfg, t(0));
            let mut live: Vec<Ticket> = Vec::new();
            for (k, (admit, src, pick)) in ops.into_iter().enumerate() {
                if admit {
                    let had = a.from_source(ip(src));
                    match a.admit(ip(src), t(k as u64)) {
                        Ok(x) => {
                            if let Some(e) = x.evict {
                                prop_assert!(live.contains(&e));
                                live.retain(|l| *l != e);
                            }
                            live.push(x.ticket);
                        }
                        Err(_) => prop_assert!(had > 0, "a source with no slot was refused"),
                    }
                } else if !live.is_empty() {
                    let tk = live.remove(pick % live.len());
                    prop_assert!(a.release(tk));
                }
                prop_assert!(a.half_open() <= max);
                prop_assert_eq!(a.half_open(), live.len());
                for s in 0..24u8 {
                    prop_assert!(a.from_source(ip(s)) <= per);
                }
            }
        }
    }
}
