//! Pin policy: which device id is bound to which static key, and who may
//! create that binding.
//!
//! Two kinds of pin, kept apart:
//!
//! - **user** pins (`dsoftbus trust`, configuration): never evicted, never
//!   replaced by anything but another user action ([`PinStore::user_pin`]
//!   with `replace`);
//! - **automatic** pins (trust on first use: the first authenticated session
//!   pins the id to its key): remember where they came from and when they
//!   were last used, and are bounded:
//!   - at most `auto_per_source` automatic pins created from one source
//!     (default 16);
//!   - created at most `auto_burst` back to back from one source (default 4),
//!     then one per `auto_interval` (default 10 s);
//!   - when the store is full, a new pin takes the place of the least
//!     recently used automatic pin **that is stale** (unused for
//!     `stale_after`, default 30 days), else of the least recently used
//!     automatic pin of the source holding the most automatic pins, if that
//!     source holds more than the newcomer's; a user pin takes the least
//!     recently used automatic pin if it must. A user pin is never evicted.
//!
//! Trust modes ([`TrustMode`]) decide whether a device with no pin may get a
//! session at all.
//!
//! Times are the caller's: a daemon that persists pins feeds wall-clock
//! milliseconds (so staleness survives restarts).

use alloc::collections::BTreeMap;
use alloc::vec::Vec;
use core::fmt;
use core::net::IpAddr;
use core::time::Duration;

use super::source_of;
use crate::announce::DeviceId;
use crate::keys::PublicKey;
use crate::time::Instant;

/// How a node treats devices it has no pin for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum TrustMode {
    /// Trust on first use: the first authenticated session pins the key
    /// (automatic pin).
    #[default]
    Tofu,
    /// Only pinned devices: announces from others are ignored.
    Known,
    /// New devices are listed (`pending`) but get no session until the
    /// user trusts them.
    Pending,
}

impl TrustMode {
    /// `tofu`, `known`, `pending`.
    pub fn name(self) -> &'static str {
        match self {
            TrustMode::Tofu => "tofu",
            TrustMode::Known => "known",
            TrustMode::Pending => "pending",
        }
    }

    /// Parses [`name`](Self::name).
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "tofu" => Some(TrustMode::Tofu),
            "known" => Some(TrustMode::Known),
            "pending" => Some(TrustMode::Pending),
            _ => None,
        }
    }

    /// Whether an unpinned device may authenticate (and be pinned
    /// automatically).
    pub fn allows_unpinned(self) -> bool {
        self == TrustMode::Tofu
    }
}

/// Who made a pin.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PinKind {
    /// The user (`trust`, configuration).
    User,
    /// Trust on first use, learned from `source`.
    Auto {
        /// Where the first session came from (IPv4, or IPv6 /64).
        source: IpAddr,
    },
}

/// One pin.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pin {
    /// The key the id is bound to.
    pub key: PublicKey,
    /// Who made it.
    pub kind: PinKind,
    /// When it was made.
    pub created: Instant,
    /// When it last authenticated a session (or was made).
    pub last_used: Instant,
}

impl Pin {
    /// A user pin.
    pub fn is_user(&self) -> bool {
        self.kind == PinKind::User
    }
}

/// Bounds of a [`PinStore`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PinConfig {
    /// Pins of both kinds (default 1024, minimum 1).
    pub max_pins: usize,
    /// Automatic pins from one source (default 16, minimum 1).
    pub auto_per_source: usize,
    /// Automatic pins one source may create back to back (default 4).
    pub auto_burst: u32,
    /// Then one per this interval (default 10 s).
    pub auto_interval: Duration,
    /// An automatic pin unused this long is stale (default 30 days).
    pub stale_after: Duration,
    /// Sources whose pin rate is tracked (default 64).
    pub max_rate_sources: usize,
}

impl Default for PinConfig {
    fn default() -> Self {
        PinConfig {
            max_pins: 1024,
            auto_per_source: 16,
            auto_burst: 4,
            auto_interval: Duration::from_secs(10),
            stale_after: Duration::from_secs(30 * 24 * 3600),
            max_rate_sources: 64,
        }
    }
}

/// Why a pin was not made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PinError {
    /// The id is already pinned to another key (`trust --replace` for users).
    KeyConflict {
        /// The key it is pinned to.
        pinned: PublicKey,
        /// Whether that pin is a user pin.
        user: bool,
    },
    /// This source created automatic pins too fast.
    RateLimited,
    /// This source holds `auto_per_source` automatic pins.
    SourceCap,
    /// The store is full and nothing may be evicted.
    Full,
}

impl fmt::Display for PinError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PinError::KeyConflict { pinned, .. } => {
                write!(f, "already pinned to another key ({pinned:?})")
            }
            PinError::RateLimited => f.write_str("automatic pins from this address too fast"),
            PinError::SourceCap => f.write_str("too many automatic pins from this address"),
            PinError::Full => f.write_str("known peers full (all user-trusted)"),
        }
    }
}

/// A pin was made.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Pinned {
    /// The key it replaced (user pins with `replace`), if any.
    pub old: Option<PublicKey>,
    /// An automatic pin evicted to make room.
    pub evicted: Option<DeviceId>,
}

#[derive(Clone, Copy, Debug)]
struct Rate {
    source: IpAddr,
    tokens: u32,
    last: Instant,
}

/// The pins and their policy. See the module docs.
#[derive(Clone, Debug)]
pub struct PinStore {
    cfg: PinConfig,
    pins: BTreeMap<DeviceId, Pin>,
    rates: Vec<Rate>,
}

impl PinStore {
    /// An empty store.
    pub fn new(cfg: PinConfig) -> Self {
        let cfg = PinConfig {
            max_pins: cfg.max_pins.max(1),
            auto_per_source: cfg.auto_per_source.max(1),
            max_rate_sources: cfg.max_rate_sources.max(1),
            ..cfg
        };
        PinStore {
            cfg,
            pins: BTreeMap::new(),
            rates: Vec::new(),
        }
    }

    /// The configuration in force.
    pub fn config(&self) -> &PinConfig {
        &self.cfg
    }

    /// The pin of `id`.
    pub fn get(&self, id: &DeviceId) -> Option<&Pin> {
        self.pins.get(id)
    }

    /// The key `id` is pinned to.
    pub fn key(&self, id: &DeviceId) -> Option<PublicKey> {
        self.pins.get(id).map(|p| p.key)
    }

    /// All pins, by id.
    pub fn iter(&self) -> impl Iterator<Item = (&DeviceId, &Pin)> {
        self.pins.iter()
    }

    /// Number of pins.
    pub fn len(&self) -> usize {
        self.pins.len()
    }

    /// No pins.
    pub fn is_empty(&self) -> bool {
        self.pins.is_empty()
    }

    /// Automatic pins created from `ip`'s source.
    pub fn auto_from(&self, ip: IpAddr) -> usize {
        let s = source_of(ip);
        self.pins
            .values()
            .filter(|p| p.kind == PinKind::Auto { source: s })
            .count()
    }

    /// Adds a pin read from storage, as is (no rate limit). Refuses only
    /// when full; a later duplicate id replaces the earlier one.
    pub fn load(&mut self, id: DeviceId, pin: Pin) -> Result<(), PinError> {
        if !self.pins.contains_key(&id) && self.pins.len() >= self.cfg.max_pins {
            return Err(PinError::Full);
        }
        let pin = match pin.kind {
            PinKind::Auto { source } => Pin {
                kind: PinKind::Auto {
                    source: source_of(source),
                },
                ..pin
            },
            PinKind::User => pin,
        };
        self.pins.insert(id, pin);
        Ok(())
    }

    /// Trust on first use: pins `id` to `key`, learned from `source`.
    /// Idempotent for the same key (refreshes `last_used`).
    pub fn auto_pin(
        &mut self,
        id: &DeviceId,
        key: &PublicKey,
        source: IpAddr,
        now: Instant,
    ) -> Result<Pinned, PinError> {
        let source = source_of(source);
        if let Some(p) = self.pins.get_mut(id) {
            if p.key != *key {
                return Err(PinError::KeyConflict {
                    pinned: p.key,
                    user: p.is_user(),
                });
            }
            p.last_used = now;
            return Ok(Pinned::default());
        }
        if self.auto_from(source) >= self.cfg.auto_per_source {
            return Err(PinError::SourceCap);
        }
        if !self.rate_ok(source, now) {
            return Err(PinError::RateLimited);
        }
        let evicted = if self.pins.len() >= self.cfg.max_pins {
            match self.victim_for_auto(source, now) {
                Some(v) => {
                    self.pins.remove(&v);
                    Some(v)
                }
                None => return Err(PinError::Full),
            }
        } else {
            None
        };
        self.take_token(source, now);
        self.pins.insert(
            id.clone(),
            Pin {
                key: *key,
                kind: PinKind::Auto { source },
                created: now,
                last_used: now,
            },
        );
        Ok(Pinned { old: None, evicted })
    }

    /// The user trusts `id` with `key`. An existing pin to another key is a
    /// [`PinError::KeyConflict`] unless `replace`. An automatic pin to the
    /// same key becomes a user pin. When full, the least recently used
    /// automatic pin makes room.
    pub fn user_pin(
        &mut self,
        id: &DeviceId,
        key: &PublicKey,
        replace: bool,
        now: Instant,
    ) -> Result<Pinned, PinError> {
        let mut old = None;
        if let Some(p) = self.pins.get(id) {
            if p.key != *key {
                if !replace {
                    return Err(PinError::KeyConflict {
                        pinned: p.key,
                        user: p.is_user(),
                    });
                }
                old = Some(p.key);
            }
        }
        let mut evicted = None;
        if !self.pins.contains_key(id) && self.pins.len() >= self.cfg.max_pins {
            let v = self
                .pins
                .iter()
                .filter(|(_, p)| !p.is_user())
                .min_by_key(|(_, p)| p.last_used)
                .map(|(i, _)| i.clone());
            match v {
                Some(v) => {
                    self.pins.remove(&v);
                    evicted = Some(v);
                }
                None => return Err(PinError::Full),
            }
        }
        let created = self.pins.get(id).map_or(now, |p| p.created);
        self.pins.insert(
            id.clone(),
            Pin {
                key: *key,
                kind: PinKind::User,
                created,
                last_used: now,
            },
        );
        Ok(Pinned { old, evicted })
    }

    /// A session authenticated `id` under its pin: refresh `last_used`.
    pub fn touch(&mut self, id: &DeviceId, now: Instant) {
        if let Some(p) = self.pins.get_mut(id) {
            p.last_used = p.last_used.max(now);
        }
    }

    /// Removes the pin of `id`.
    pub fn remove(&mut self, id: &DeviceId) -> Option<Pin> {
        self.pins.remove(id)
    }

    /// Removes every automatic pin; returns their ids.
    pub fn remove_auto(&mut self) -> Vec<DeviceId> {
        let ids: Vec<DeviceId> = self
            .pins
            .iter()
            .filter(|(_, p)| !p.is_user())
            .map(|(i, _)| i.clone())
            .collect();
        for i in &ids {
            self.pins.remove(i);
        }
        ids
    }

    /// Removes automatic pins unused for `stale_after`; returns their ids.
    /// User pins are never touched.
    pub fn evict_stale(&mut self, now: Instant) -> Vec<DeviceId> {
        let stale = self.cfg.stale_after;
        let ids: Vec<DeviceId> = self
            .pins
            .iter()
            .filter(|(_, p)| !p.is_user() && now.saturating_since(p.last_used) >= stale)
            .map(|(i, _)| i.clone())
            .collect();
        for i in &ids {
            self.pins.remove(i);
        }
        ids
    }

    fn victim_for_auto(&self, source: IpAddr, now: Instant) -> Option<DeviceId> {
        let stale = self.cfg.stale_after;
        let autos = || self.pins.iter().filter(|(_, p)| !p.is_user());
        if let Some((i, _)) = autos()
            .filter(|(_, p)| now.saturating_since(p.last_used) >= stale)
            .min_by_key(|(_, p)| p.last_used)
        {
            return Some(i.clone());
        }
        let mine = self.auto_from(source);
        let mut busiest: Option<(usize, IpAddr)> = None;
        for (_, p) in autos() {
            if let PinKind::Auto { source: s } = p.kind {
                let n = self.auto_from(s);
                if busiest.is_none_or(|(b, _)| n > b) {
                    busiest = Some((n, s));
                }
            }
        }
        let (n, s) = busiest?;
        if n <= mine {
            return None;
        }
        autos()
            .filter(|(_, p)| p.kind == PinKind::Auto { source: s })
            .min_by_key(|(_, p)| p.last_used)
            .map(|(i, _)| i.clone())
    }

    fn refill(&self, r: &mut Rate, now: Instant) {
        let step = self.cfg.auto_interval.as_millis().max(1) as u64;
        let elapsed = now.saturating_since(r.last).as_millis() as u64;
        let add = elapsed / step;
        if add > 0 {
            r.tokens = r
                .tokens
                .saturating_add(u32::try_from(add).unwrap_or(u32::MAX))
                .min(self.cfg.auto_burst);
            r.last = r.last.saturating_add(Duration::from_millis(add * step));
        }
        if r.tokens >= self.cfg.auto_burst {
            r.last = now;
        }
    }

    fn rate_ok(&mut self, source: IpAddr, now: Instant) -> bool {
        match self.rates.iter().position(|r| r.source == source) {
            Some(i) => {
                let mut r = self.rates[i];
                self.refill(&mut r, now);
                self.rates[i] = r;
                r.tokens > 0
            }
            None => self.cfg.auto_burst > 0,
        }
    }

    fn take_token(&mut self, source: IpAddr, now: Instant) {
        if let Some(r) = self.rates.iter_mut().find(|r| r.source == source) {
            r.tokens = r.tokens.saturating_sub(1);
            return;
        }
        let fresh = Rate {
            source,
            tokens: self.cfg.auto_burst.saturating_sub(1),
            last: now,
        };
        if self.rates.len() >= self.cfg.max_rate_sources {
            // Forget the fullest (least informative) bucket.
            if let Some(i) = (0..self.rates.len()).max_by_key(|&i| self.rates[i].tokens) {
                self.rates[i] = fresh;
            }
        } else {
            self.rates.push(fresh);
        }
    }
}

impl Default for PinStore {
    fn default() -> Self {
        PinStore::new(PinConfig::default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::fixtures::{id, ip, key, t};
    use proptest::prelude::*;

    /// Item 8: one LAN host pinned 1 024 made-up ids in 5 s, then `trust`
    /// failed (known peers full). Now it gets 4 pins in 5 s (burst), 16 at
    /// most ever, and `trust` always succeeds.
    #[test]
    fn node_pins_squatting_is_rate_limited_capped_and_trust_still_works() {
        let mut s = PinStore::default();
        let mut made = 0;
        for i in 0..1024u64 {
            let r = s.auto_pin(&id(&alloc::format!("sq{i}")), &key(66), ip(66), t(i * 5));
            if r.is_ok() {
                made += 1;
            }
        }
        assert_eq!(made, 4, "burst of 4 in 5 s");
        // An hour later: capped at 16 from that source.
        for i in 0..1000u64 {
            let _ = s.auto_pin(
                &id(&alloc::format!("later{i}")),
                &key(66),
                ip(66),
                t(10_000 + i * 10_000),
            );
        }
        assert_eq!(s.auto_from(ip(66)), 16);
        assert!(s.user_pin(&id("lab-pc"), &key(1), false, t(99)).is_ok());
    }

    /// Many sources fill the store: user pins still fit (they evict
    /// automatic ones) and user pins are never evicted.
    #[test]
    fn node_pins_user_pins_evict_auto_never_the_reverse() {
        let cfg = PinConfig {
            max_pins: 8,
            ..PinConfig::default()
        };
        let mut s = PinStore::new(cfg);
        for i in 0..4u8 {
            s.user_pin(&id(&alloc::format!("u{i}")), &key(i), false, t(0))
                .unwrap();
        }
        for i in 0..4u8 {
            s.auto_pin(&id(&alloc::format!("a{i}")), &key(10 + i), ip(i), t(1))
                .unwrap();
        }
        // Full: a new automatic pin from a source as busy as any may not
        // evict (no stale pin, no busier source), a user pin may.
        assert_eq!(
            s.auto_pin(&id("x"), &key(50), ip(0), t(2)),
            Err(PinError::Full)
        );
        let r = s.user_pin(&id("u9"), &key(99), false, t(3)).unwrap();
        assert!(r.evicted.is_some());
        for i in 0..10 {
            let _ = s.user_pin(&id(&alloc::format!("v{i}")), &key(98), false, t(4));
        }
        assert_eq!(s.iter().filter(|(_, p)| p.is_user()).count(), 8);
        assert_eq!(
            s.user_pin(&id("w"), &key(97), false, t(5)),
            Err(PinError::Full)
        );
        assert!(s.get(&id("u0")).is_some());
    }

    #[test]
    fn node_pins_stale_auto_pins_go_user_pins_stay() {
        let mut s = PinStore::default();
        s.user_pin(&id("u"), &key(1), false, t(0)).unwrap();
        s.auto_pin(&id("a"), &key(2), ip(2), t(0)).unwrap();
        s.auto_pin(&id("b"), &key(3), ip(3), t(0)).unwrap();
        let day = 24 * 3600 * 1000;
        s.touch(&id("b"), t(20 * day));
        assert_eq!(s.evict_stale(t(31 * day)), alloc::vec![id("a")]);
        assert!(s.get(&id("u")).is_some() && s.get(&id("b")).is_some());
        assert_eq!(s.evict_stale(t(100 * day)), alloc::vec![id("b")]);
        assert!(s.get(&id("u")).is_some());
        // A stale automatic pin makes room for a new one when full.
        let mut s = PinStore::new(PinConfig {
            max_pins: 1,
            ..PinConfig::default()
        });
        s.auto_pin(&id("old"), &key(2), ip(2), t(0)).unwrap();
        let r = s.auto_pin(&id("new"), &key(3), ip(3), t(31 * day)).unwrap();
        assert_eq!(r.evicted, Some(id("old")));
    }

    /// Partial item "key changed": trust with another key needs replace.
    #[test]
    fn node_pins_trust_with_another_key_needs_replace() {
        let mut s = PinStore::default();
        s.auto_pin(&id("a"), &key(1), ip(1), t(0)).unwrap();
        assert_eq!(
            s.user_pin(&id("a"), &key(2), false, t(1)),
            Err(PinError::KeyConflict {
                pinned: key(1),
                user: false
            })
        );
        let r = s.user_pin(&id("a"), &key(2), true, t(1)).unwrap();
        assert_eq!(r.old, Some(key(1)));
        assert!(s.get(&id("a")).unwrap().is_user());
        // Same key: automatic becomes user, no replace needed.
        s.auto_pin(&id("b"), &key(3), ip(1), t(0)).unwrap();
        assert_eq!(
            s.user_pin(&id("b"), &key(3), false, t(2)).unwrap().old,
            None
        );
        assert_eq!(s.remove_auto(), alloc::vec![]);
        assert!(matches!(
            s.auto_pin(&id("a"), &key(9), ip(1), t(3)),
            Err(PinError::KeyConflict { user: true, .. })
        ));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]
        /// Under any mix of automatic and user pins from any sources: never
        /// above max; per source never above its cap; a user pin, once
        /// made, stays until removed by the user.
        #[test]
        fn node_pins_state_machine_invariants(
            ops in proptest::collection::vec((0u8..4, 0u8..40, 0u8..6, 0u64..20_000), 1..300),
            max in 1usize..24, per in 1usize..6,
        ) {
            let cfg = PinConfig { max_pins: max, auto_per_source: per, ..PinConfig::default() };
            let mut s = PinStore::new(cfg);
            let mut users: Vec<DeviceId> = Vec::new();
            let mut now = 0u64;
            for (op, i, src, dt) in ops {
                now += dt;
                let d = id(&alloc::format!("d{i}"));
                match op {
                    0 | 1 => { let _ = s.auto_pin(&d, &key(i), ip(src), t(now)); }
                    2 => if s.user_pin(&d, &key(i), true, t(now)).is_ok() && !users.contains(&d) { users.push(d) },
                    _ => { let _ = s.evict_stale(t(now)); }
                }
                prop_assert!(s.len() <= max);
                for x in 0..6u8 { prop_assert!(s.auto_from(ip(x)) <= per); }
                for u in &users { prop_assert!(s.get(u).is_some_and(|p| p.is_user())); }
            }
        }
    }
}
