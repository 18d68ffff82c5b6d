//! Handshake admission: per-source and global token buckets, bounded state.
//!
//! The responder's first line of defence is mac1 (a keyed hash checked before
//! any Diffie-Hellman work, see [`handshake`](crate::handshake)). mac1 only
//! proves the sender knows our *public* key, which every announce carries, so
//! frames that pass it are rate limited before they cost a DH:
//!
//! ```text
//! frame 1 ─▶ size + mac1 (hash) ─▶ per-source bucket ─▶ global bucket ─▶ DH
//!              junk stops here       one source's flood    many sources' flood
//! ```
//!
//! Junk (bad mac1) never reaches the buckets, so a junk flood — however
//! large — cannot use up the tokens a legitimate peer needs. A flood of
//! *valid* frame 1s from one address drains only that address's bucket; one
//! spread over many addresses is capped by the global bucket.
//!
//! Like the rest of the crate this is sans-IO: the caller passes the source
//! address and its clock. State is bounded: at most
//! [`RateLimitConfig::max_sources`] buckets, allocated once. When a new
//! source arrives and the table is full, the bucket with the most tokens is
//! evicted (a full bucket carries no information — a fresh one starts full);
//! ties go to the least recently seen. An attacker cycling through more
//! addresses than the table holds can at most refill buckets, which the
//! global bucket still caps. IPv6 sources are keyed by their /64 prefix, since
//! one host commonly controls a whole /64.
//!
//! Use it through [`Connection::handle_input_gated`](crate::connection::Connection::handle_input_gated)
//! with [`HandshakeLimiter::gate`].

use alloc::vec::Vec;
use core::fmt;
use core::net::IpAddr;

use crate::time::Instant;

/// One token, in the buckets' fixed-point unit (1/1000 token).
const TOKEN: u64 = 1000;

/// Limits; all enforced. Rates are handshakes per second, bursts how many
/// may arrive back to back after a quiet period.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimitConfig {
    /// Sustained handshakes per second from one source (default 4).
    pub per_source_rate: u32,
    /// Burst from one source (default 8, minimum 1).
    pub per_source_burst: u32,
    /// Sustained handshakes per second from everyone together (default 32).
    pub global_rate: u32,
    /// Global burst (default 64, minimum 1).
    pub global_burst: u32,
    /// Most sources tracked at once (default 64, minimum 1).
    pub max_sources: usize,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        RateLimitConfig {
            per_source_rate: 4,
            per_source_burst: 8,
            global_rate: 32,
            global_burst: 64,
            max_sources: 64,
        }
    }
}

/// Why a handshake was not admitted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Limited {
    /// This source used up its bucket.
    Source,
    /// All sources together used up the global bucket.
    Global,
}

impl fmt::Display for Limited {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Limited::Source => "per-source handshake rate limit",
            Limited::Global => "global handshake rate limit",
        })
    }
}

/// Something that decides, just before the Diffie-Hellman work of frame 1,
/// whether a handshake may proceed. [`HandshakeLimiter::gate`] is the usual
/// one; tests and daemons may supply their own.
pub trait HandshakeGate {
    /// Admit (and account for) one handshake at `now`, or say why not.
    fn admit(&mut self, now: Instant) -> Result<(), Limited>;
}

/// A token bucket on the caller's millisecond clock, in 1/1000 tokens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TokenBucket {
    milli: u64,
    last: Instant,
    rate: u64,
    cap: u64,
}

impl TokenBucket {
    /// A full bucket: `burst` tokens (at least 1), refilled at `rate` per second.
    pub fn new(rate: u32, burst: u32, now: Instant) -> Self {
        let cap = u64::from(burst.max(1)) * TOKEN;
        TokenBucket {
            milli: cap,
            last: now,
            rate: u64::from(rate),
            cap,
        }
    }

    /// Adds what accrued since the last update. A clock that steps back adds
    /// nothing (and never panics).
    fn refill(&mut self, now: Instant) {
        let ms = u64::try_from(now.saturating_since(self.last).as_millis()).unwrap_or(u64::MAX);
        // rate tokens/s = rate milli-tokens/ms.
        self.milli = self
            .milli
            .saturating_add(ms.saturating_mul(self.rate))
            .min(self.cap);
        if now > self.last {
            self.last = now;
        }
    }

    /// Whole tokens available at `now`.
    pub fn available(&mut self, now: Instant) -> u64 {
        self.refill(now);
        self.milli / TOKEN
    }

    fn has_token(&mut self, now: Instant) -> bool {
        self.refill(now);
        self.milli >= TOKEN
    }

    fn take(&mut self) {
        self.milli = self.milli.saturating_sub(TOKEN);
    }

    /// Takes one token if there is one.
    pub fn try_take(&mut self, now: Instant) -> bool {
        let ok = self.has_token(now);
        if ok {
            self.take();
        }
        ok
    }
}

/// Counters, for logs and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LimiterStats {
    /// Handshakes admitted.
    pub admitted: u64,
    /// Refused by a per-source bucket.
    pub limited_source: u64,
    /// Refused by the global bucket.
    pub limited_global: u64,
    /// Source buckets evicted to make room.
    pub evictions: u64,
}

/// The key a source is accounted under: IPv4 address, or IPv6 /64 prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SourceKey {
    V4([u8; 4]),
    V6Prefix([u8; 8]),
}

impl From<IpAddr> for SourceKey {
    fn from(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(a) => SourceKey::V4(a.octets()),
            IpAddr::V6(a) => match a.to_ipv4_mapped() {
                Some(v4) => SourceKey::V4(v4.octets()),
                None => {
                    let o = a.octets();
                    SourceKey::V6Prefix([o[0], o[1], o[2], o[3], o[4], o[5], o[6], o[7]])
                }
            },
        }
    }
}

#[derive(Clone, Debug)]
struct SourceBucket {
    key: SourceKey,
    bucket: TokenBucket,
    last_seen: Instant,
}

/// Per-source and global handshake rate limits with bounded state.
#[derive(Clone, Debug)]
pub struct HandshakeLimiter {
    cfg: RateLimitConfig,
    global: TokenBucket,
    sources: Vec<SourceBucket>,
    stats: LimiterStats,
}

impl HandshakeLimiter {
    /// A limiter whose buckets start full at `now`.
    pub fn new(cfg: RateLimitConfig, now: Instant) -> Self {
        let cfg = RateLimitConfig {
            max_sources: cfg.max_sources.max(1),
            ..cfg
        };
        HandshakeLimiter {
            global: TokenBucket::new(cfg.global_rate, cfg.global_burst, now),
            sources: Vec::with_capacity(cfg.max_sources),
            cfg,
            stats: LimiterStats::default(),
        }
    }

    /// The configuration in force.
    pub fn config(&self) -> &RateLimitConfig {
        &self.cfg
    }

    /// Counters so far.
    pub fn stats(&self) -> LimiterStats {
        self.stats
    }

    /// Sources currently tracked (never more than `max_sources`).
    pub fn tracked_sources(&self) -> usize {
        self.sources.len()
    }

    /// Admits one handshake from `source` at `now`, taking a token from its
    /// bucket and from the global one, or refuses it (taking nothing).
    pub fn check(&mut self, source: IpAddr, now: Instant) -> Result<(), Limited> {
        let idx = self.slot(SourceKey::from(source), now);
        let entry = self.sources.get_mut(idx);
        let Some(entry) = entry else {
            // Unreachable: `slot` always returns a valid index.
            self.stats.limited_global += 1;
            return Err(Limited::Global);
        };
        entry.last_seen = now;
        if !entry.bucket.has_token(now) {
            self.stats.limited_source += 1;
            return Err(Limited::Source);
        }
        if !self.global.has_token(now) {
            self.stats.limited_global += 1;
            return Err(Limited::Global);
        }
        entry.bucket.take();
        self.global.take();
        self.stats.admitted += 1;
        Ok(())
    }

    /// A [`HandshakeGate`] that admits on behalf of `source`.
    pub fn gate(&mut self, source: IpAddr) -> SourceGate<'_> {
        SourceGate {
            limiter: self,
            source,
        }
    }

    /// Index of `key`'s bucket, creating it (evicting if full).
    fn slot(&mut self, key: SourceKey, now: Instant) -> usize {
        if let Some(i) = self.sources.iter().position(|s| s.key == key) {
            return i;
        }
        let fresh = SourceBucket {
            key,
            bucket: TokenBucket::new(self.cfg.per_source_rate, self.cfg.per_source_burst, now),
            last_seen: now,
        };
        if self.sources.len() < self.cfg.max_sources {
            self.sources.push(fresh);
            return self.sources.len() - 1;
        }
        // Full: evict the bucket with the most tokens, then the stalest.
        let mut victim = 0;
        let mut best = (0u64, Instant::ZERO);
        for (i, s) in self.sources.iter_mut().enumerate() {
            s.bucket.refill(now);
            let score = (s.bucket.milli, s.last_seen);
            let better = i == 0 || score.0 > best.0 || (score.0 == best.0 && score.1 < best.1);
            if better {
                victim = i;
                best = score;
            }
        }
        self.stats.evictions += 1;
        if let Some(slot) = self.sources.get_mut(victim) {
            *slot = fresh;
        }
        victim
    }
}

/// [`HandshakeLimiter::gate`]: the limiter plus the source being admitted.
#[derive(Debug)]
pub struct SourceGate<'a> {
    limiter: &'a mut HandshakeLimiter,
    source: IpAddr,
}

impl HandshakeGate for SourceGate<'_> {
    fn admit(&mut self, now: Instant) -> Result<(), Limited> {
        self.limiter.check(self.source, now)
    }
}

/// Admits everything (the ungated behaviour).
#[derive(Clone, Copy, Debug, Default)]
pub struct AdmitAll;

impl HandshakeGate for AdmitAll {
    fn admit(&mut self, _now: Instant) -> Result<(), Limited> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::net::{Ipv4Addr, Ipv6Addr};

    fn v4(last: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(10, 0, 2, last))
    }
    fn t(ms: u64) -> Instant {
        Instant::from_millis(ms)
    }

    #[test]
    fn bucket_refills_at_rate_and_caps_at_burst() {
        let mut b = TokenBucket::new(4, 2, t(0));
        assert!(b.try_take(t(0)) && b.try_take(t(0)));
        assert!(!b.try_take(t(0)));
        assert!(!b.try_take(t(249)), "4/s = one token per 250 ms");
        assert!(b.try_take(t(250)));
        assert_eq!(b.available(t(100_000)), 2, "capped at burst");
        // A clock that steps back adds nothing and does not panic.
        assert_eq!(b.available(t(5)), 2);
    }

    #[test]
    fn per_source_then_global() {
        let cfg = RateLimitConfig {
            per_source_rate: 1,
            per_source_burst: 2,
            global_rate: 1,
            global_burst: 3,
            max_sources: 8,
        };
        let mut l = HandshakeLimiter::new(cfg, t(0));
        assert_eq!(l.check(v4(1), t(0)), Ok(()));
        assert_eq!(l.check(v4(1), t(0)), Ok(()));
        assert_eq!(l.check(v4(1), t(0)), Err(Limited::Source));
        assert_eq!(l.check(v4(2), t(0)), Ok(()));
        assert_eq!(l.check(v4(3), t(0)), Err(Limited::Global));
        // A refusal takes nothing: source 3 still has its burst later.
        assert_eq!(l.check(v4(3), t(1000)), Ok(()));
        let s = l.stats();
        assert_eq!((s.admitted, s.limited_source, s.limited_global), (4, 1, 1));
    }

    #[test]
    fn table_is_bounded_and_evicts_fullest() {
        let cfg = RateLimitConfig {
            max_sources: 4,
            global_burst: 1000,
            global_rate: 1000,
            ..RateLimitConfig::default()
        };
        let mut l = HandshakeLimiter::new(cfg, t(0));
        // Drain source 1 completely.
        while l.check(v4(1), t(0)).is_ok() {}
        for i in 2..200u8 {
            let _ = l.check(v4(i), t(0));
            assert!(l.tracked_sources() <= 4);
        }
        // Source 1 was the emptiest bucket, so it was never the victim.
        assert_eq!(l.check(v4(1), t(0)), Err(Limited::Source));
        assert!(l.stats().evictions > 0);
    }

    #[test]
    fn ipv6_keyed_by_prefix_and_mapped_v4_by_address() {
        let cfg = RateLimitConfig {
            per_source_burst: 1,
            ..RateLimitConfig::default()
        };
        let mut l = HandshakeLimiter::new(cfg, t(0));
        let a = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 1, 0, 0, 0, 1));
        let b = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 1, 9, 9, 9, 9));
        assert_eq!(l.check(a, t(0)), Ok(()));
        assert_eq!(l.check(b, t(0)), Err(Limited::Source), "same /64");
        let mapped = IpAddr::V6(Ipv4Addr::new(10, 0, 2, 7).to_ipv6_mapped());
        assert_eq!(l.check(v4(7), t(0)), Ok(()));
        assert_eq!(l.check(mapped, t(0)), Err(Limited::Source));
    }
}
