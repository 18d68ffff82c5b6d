//! The discovery peer table.
//!
//! Everything a node learns from announces lands here, and the responder side
//! of the handshake consults it to decide whether a claimed device id is bound
//! to the key the handshake authenticated. The rules, in the order
//! [`PeerTable::observe`] applies them:
//!
//! 1. **Oversized / malformed** datagrams never reach the table (see
//!    [`PeerTable::observe_datagram`]).
//! 2. **Self**: announces carrying our own device id or our own static key are
//!    ignored — a node must never dial itself.
//! 3. **Key pinning**: the first announce that binds a device id to a key pins
//!    that binding for the life of the entry. A later announce for the same id
//!    with a different key is refused and counted ([`Observe::KeyConflict`]);
//!    it never replaces the pinned key, refreshes it, or moves its address.
//! 4. **De-dup (the v1 replay rule)**: an identical announce from the same
//!    source within the de-dup window is a [`Observe::Duplicate`]: counted, no
//!    state change. v1 carries no sequence number or timestamp, so a replay
//!    *after* the window is indistinguishable from a fresh announce; it can at
//!    most keep an entry alive or point its address somewhere — it can never
//!    change a key binding. v2 would add a signed, monotonically increasing
//!    sequence number (see `docs/distributed/dsoftbus-os.md`).
//! 5. **Bounds and flood resistance**: at most `capacity` entries (default 16)
//!    and at most `per_source_cap` entries (default 4) learned from one source
//!    IP. A new id that would exceed a bound evicts the stalest entry that is
//!    neither pinned nor holding a session — from the same source first when
//!    the per-source cap is the bound that was hit. If nothing is evictable the
//!    announce is refused ([`Observe::Full`] / [`Observe::SourceLimited`]), so a
//!    burst of fake ids can never push out a peer we hold a session with.
//! 6. **Expiry**: entries expire by age (default 3× the announce interval since
//!    the last accepted announce), never because a connection closed. Entries
//!    that are pinned or hold a session do not expire.
//!
//! Storage is a `Vec` allocated once at `capacity`; every operation is a
//! linear scan over at most `capacity` entries, which for the intended sizes
//! (tens of peers) is faster than hashing and allocates nothing after start-up.

use alloc::vec::Vec;
use core::net::{IpAddr, SocketAddr};
use core::time::Duration;

use crate::announce::{Announce, AnnounceError, DeviceId, ServiceName};
use crate::handshake::IdentityBindings;
use crate::keys::PublicKey;
use crate::time::Instant;

/// Tunables of a [`PeerTable`]. All bounds are enforced, none is advisory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerTableConfig {
    /// Most entries held at once (default 16, minimum 1).
    pub capacity: usize,
    /// Most entries learned from one source IP (default 4, minimum 1).
    /// Dual-node mode runs two nodes behind one address, so this must be >= 2
    /// there.
    pub per_source_cap: usize,
    /// An identical announce from the same source within this window is a
    /// duplicate (default 500 ms: half the announce interval, so a peer that
    /// announces on schedule is always refreshed).
    pub dedup_window: Duration,
    /// Entries not refreshed for this long are dropped (default 3 s = 3× the
    /// default 1 s announce interval).
    pub expiry: Duration,
}

impl Default for PeerTableConfig {
    fn default() -> Self {
        Self::for_interval(Duration::from_secs(1))
    }
}

impl PeerTableConfig {
    /// Defaults derived from the announce interval: expiry 3× the interval,
    /// de-dup window half of it, capacity 16, per-source cap 4.
    pub fn for_interval(interval: Duration) -> Self {
        PeerTableConfig {
            capacity: 16,
            per_source_cap: 4,
            dedup_window: interval / 2,
            expiry: interval.saturating_mul(3),
        }
    }
}

/// What the table knows about one peer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerEntry {
    device_id: DeviceId,
    source: SocketAddr,
    port: u16,
    static_key: PublicKey,
    services: Vec<ServiceName>,
    first_seen: Instant,
    last_seen: Instant,
    pinned: bool,
    has_session: bool,
}

impl PeerEntry {
    /// The peer's device id.
    pub fn device_id(&self) -> &DeviceId {
        &self.device_id
    }
    /// Where its last accepted announce came from.
    pub fn source(&self) -> SocketAddr {
        self.source
    }
    /// Its announced session TCP port.
    pub fn port(&self) -> u16 {
        self.port
    }
    /// Where to dial: the announce's source IP and its announced session port.
    pub fn session_addr(&self) -> SocketAddr {
        SocketAddr::new(self.source.ip(), self.port)
    }
    /// The pinned static key bound to the device id.
    pub fn static_key(&self) -> &PublicKey {
        &self.static_key
    }
    /// Advertised services.
    pub fn services(&self) -> &[ServiceName] {
        &self.services
    }
    /// When the entry was created.
    pub fn first_seen(&self) -> Instant {
        self.first_seen
    }
    /// When the entry was last refreshed by an accepted announce.
    pub fn last_seen(&self) -> Instant {
        self.last_seen
    }
    /// Pinned entries (configured or confirmed by the daemon) are never
    /// evicted or expired.
    pub fn is_pinned(&self) -> bool {
        self.pinned
    }
    /// The daemon holds a session with this peer (set via
    /// [`PeerTable::set_session`]); such entries are never evicted or expired.
    pub fn has_session(&self) -> bool {
        self.has_session
    }

    fn evictable(&self) -> bool {
        !self.pinned && !self.has_session
    }

    fn same_content(&self, src: SocketAddr, a: &Announce) -> bool {
        self.source == src && self.port == a.port() && self.services.as_slice() == a.services()
    }
}

/// The outcome of offering an announce to the table. Every decision is
/// explicit so daemons can print honest markers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Observe {
    /// A new device id was bound to its key.
    Inserted,
    /// Known id and key; address, port or services changed.
    Updated,
    /// Known id and key, identical content, outside the de-dup window:
    /// `last_seen` refreshed.
    Refreshed,
    /// Identical announce from the same source within the de-dup window;
    /// counted, nothing changed.
    Duplicate,
    /// Known id announced with a different key; refused, pinned key kept.
    KeyConflict,
    /// New id, table at capacity and nothing evictable; refused.
    Full,
    /// New id, its source at its per-source cap and none of that source's
    /// entries evictable; refused.
    SourceLimited,
    /// Our own device id or static key; ignored.
    SelfAnnounce,
    /// The datagram did not decode.
    Malformed(AnnounceError),
    /// The datagram was longer than any valid announce; not parsed.
    Oversized,
}

impl Observe {
    /// True when the table now holds fresh information from this announce
    /// (`Inserted`, `Updated`, `Refreshed`).
    pub fn is_accepted(&self) -> bool {
        matches!(
            self,
            Observe::Inserted | Observe::Updated | Observe::Refreshed
        )
    }
}

/// Counters, one per outcome plus evictions and expiries. Saturating.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct PeerTableStats {
    pub inserted: u64,
    pub updated: u64,
    pub refreshed: u64,
    pub duplicates: u64,
    pub key_conflicts: u64,
    pub full: u64,
    pub source_limited: u64,
    pub self_announces: u64,
    pub malformed: u64,
    pub oversized: u64,
    /// Entries pushed out to make room for a new id.
    pub evicted: u64,
    /// Entries dropped by age.
    pub expired: u64,
}

/// The bounded discovery table. See the module docs for the rules.
#[derive(Debug)]
pub struct PeerTable {
    local_id: DeviceId,
    local_key: PublicKey,
    cfg: PeerTableConfig,
    entries: Vec<PeerEntry>,
    stats: PeerTableStats,
}

fn bump(c: &mut u64) {
    *c = c.saturating_add(1);
}

impl PeerTable {
    /// A table for the node `local_id` whose static key is `local_key`.
    pub fn new(local_id: DeviceId, local_key: PublicKey, mut cfg: PeerTableConfig) -> Self {
        cfg.capacity = cfg.capacity.max(1);
        cfg.per_source_cap = cfg.per_source_cap.max(1);
        PeerTable {
            local_id,
            local_key,
            entries: Vec::with_capacity(cfg.capacity),
            cfg,
            stats: PeerTableStats::default(),
        }
    }

    /// The configuration in force (bounds already clamped to >= 1).
    pub fn config(&self) -> &PeerTableConfig {
        &self.cfg
    }

    /// Counters since creation.
    pub fn stats(&self) -> &PeerTableStats {
        &self.stats
    }

    /// Entries currently held (never above `config().capacity`).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when no peer is known.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// All entries, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = &PeerEntry> {
        self.entries.iter()
    }

    /// The entry for `id`, if known.
    pub fn get(&self, id: &DeviceId) -> Option<&PeerEntry> {
        self.entries.iter().find(|e| &e.device_id == id)
    }

    /// The entry for an id given as text.
    pub fn get_str(&self, id: &str) -> Option<&PeerEntry> {
        self.entries.iter().find(|e| e.device_id.as_str() == id)
    }

    fn get_mut(&mut self, id: &DeviceId) -> Option<&mut PeerEntry> {
        self.entries.iter_mut().find(|e| &e.device_id == id)
    }

    /// Marks whether the daemon holds a session with `id`. Returns false if
    /// the id is unknown. Clearing it does not remove the entry: entries go by
    /// age only.
    pub fn set_session(&mut self, id: &DeviceId, has_session: bool) -> bool {
        match self.get_mut(id) {
            Some(e) => {
                e.has_session = has_session;
                true
            }
            None => false,
        }
    }

    /// Pins `id` (never evicted or expired). Returns false if unknown.
    pub fn pin(&mut self, id: &DeviceId) -> bool {
        match self.get_mut(id) {
            Some(e) => {
                e.pinned = true;
                true
            }
            None => false,
        }
    }

    /// Removes `id` (e.g. operator action). Returns the entry if it existed.
    pub fn remove(&mut self, id: &DeviceId) -> Option<PeerEntry> {
        let i = self.entries.iter().position(|e| &e.device_id == id)?;
        Some(self.entries.swap_remove(i))
    }

    /// Drops entries older than the expiry that are neither pinned nor hold a
    /// session. Returns how many were dropped.
    pub fn expire(&mut self, now: Instant) -> usize {
        let expiry = self.cfg.expiry;
        let before = self.entries.len();
        self.entries
            .retain(|e| !e.evictable() || now.saturating_since(e.last_seen) < expiry);
        let n = before - self.entries.len();
        self.stats.expired = self.stats.expired.saturating_add(n as u64);
        n
    }

    /// Decodes a datagram received from `src` and offers it to the table.
    /// Oversized datagrams are refused on length alone, before parsing.
    pub fn observe_datagram(&mut self, src: SocketAddr, datagram: &[u8], now: Instant) -> Observe {
        match Announce::decode(datagram) {
            Ok(a) => self.observe(src, &a, now),
            Err(AnnounceError::Oversized) => {
                bump(&mut self.stats.oversized);
                Observe::Oversized
            }
            Err(e) => {
                bump(&mut self.stats.malformed);
                Observe::Malformed(e)
            }
        }
    }

    /// Offers a decoded announce received from `src` at `now`.
    pub fn observe(&mut self, src: SocketAddr, a: &Announce, now: Instant) -> Observe {
        let out = self.observe_inner(src, a, now, false);
        self.count(out);
        out
    }

    /// Inserts a statically configured peer, pinned from the start (it is
    /// never evicted or expired). Follows the same key-pinning rule: an id
    /// already bound to another key is a `KeyConflict`.
    pub fn insert_pinned(&mut self, src: SocketAddr, a: &Announce, now: Instant) -> Observe {
        let out = self.observe_inner(src, a, now, true);
        if out.is_accepted() || out == Observe::Duplicate {
            self.pin(a.device_id());
        }
        self.count(out);
        out
    }

    fn count(&mut self, out: Observe) {
        let s = &mut self.stats;
        bump(match out {
            Observe::Inserted => &mut s.inserted,
            Observe::Updated => &mut s.updated,
            Observe::Refreshed => &mut s.refreshed,
            Observe::Duplicate => &mut s.duplicates,
            Observe::KeyConflict => &mut s.key_conflicts,
            Observe::Full => &mut s.full,
            Observe::SourceLimited => &mut s.source_limited,
            Observe::SelfAnnounce => &mut s.self_announces,
            Observe::Malformed(_) => &mut s.malformed,
            Observe::Oversized => &mut s.oversized,
        });
    }

    fn observe_inner(&mut self, src: SocketAddr, a: &Announce, now: Instant, pin: bool) -> Observe {
        if a.device_id() == &self.local_id || a.static_key() == &self.local_key {
            return Observe::SelfAnnounce;
        }
        let window = self.cfg.dedup_window;
        if let Some(e) = self.get_mut(a.device_id()) {
            if &e.static_key != a.static_key() {
                return Observe::KeyConflict;
            }
            if e.same_content(src, a) {
                // `last_seen` only moves on accepted announces, so a stream of
                // duplicates cannot stretch the window forever.
                if now.saturating_since(e.last_seen) < window {
                    return Observe::Duplicate;
                }
                e.last_seen = now;
                return Observe::Refreshed;
            }
            e.source = src;
            e.port = a.port();
            e.services = a.services().to_vec();
            e.last_seen = now;
            return Observe::Updated;
        }

        // A new id: make room within both bounds, or refuse.
        self.expire(now);
        let src_ip = src.ip();
        if self.count_from(src_ip) >= self.cfg.per_source_cap {
            match self.stalest_evictable(Some(src_ip)) {
                Some(i) => self.evict(i),
                None => return Observe::SourceLimited,
            }
        }
        if self.entries.len() >= self.cfg.capacity {
            match self.stalest_evictable(None) {
                Some(i) => self.evict(i),
                None => return Observe::Full,
            }
        }
        self.entries.push(PeerEntry {
            device_id: a.device_id().clone(),
            source: src,
            port: a.port(),
            static_key: *a.static_key(),
            services: a.services().to_vec(),
            first_seen: now,
            last_seen: now,
            pinned: pin,
            has_session: false,
        });
        Observe::Inserted
    }

    fn count_from(&self, ip: IpAddr) -> usize {
        self.entries.iter().filter(|e| e.source.ip() == ip).count()
    }

    /// Index of the least recently refreshed evictable entry, optionally only
    /// among entries from `ip`.
    fn stalest_evictable(&self, ip: Option<IpAddr>) -> Option<usize> {
        self.entries
            .iter()
            .enumerate()
            .filter(|(_, e)| e.evictable() && ip.is_none_or(|ip| e.source.ip() == ip))
            .min_by_key(|(_, e)| e.last_seen)
            .map(|(i, _)| i)
    }

    fn evict(&mut self, i: usize) {
        if i < self.entries.len() {
            self.entries.swap_remove(i);
            bump(&mut self.stats.evicted);
        }
    }
}

impl IdentityBindings for PeerTable {
    fn bound_key(&self, id: &DeviceId) -> Option<PublicKey> {
        self.get(id).map(|e| e.static_key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;
    use core::net::Ipv4Addr;

    fn addr(last: u8, port: u16) -> SocketAddr {
        SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, 2, last)), port)
    }

    fn ann(id: &str, key: u8) -> Announce {
        Announce::new(
            DeviceId::new(id).unwrap(),
            4000,
            PublicKey::from_bytes([key; 32]),
            vec![],
        )
        .unwrap()
    }

    fn table() -> PeerTable {
        PeerTable::new(
            DeviceId::new("me").unwrap(),
            PublicKey::from_bytes([0xee; 32]),
            PeerTableConfig::default(),
        )
    }

    fn t(ms: u64) -> Instant {
        Instant::from_millis(ms)
    }

    #[test]
    fn insert_update_refresh_duplicate() {
        let mut pt = table();
        let a = ann("a", 1);
        assert_eq!(pt.observe(addr(1, 37020), &a, t(0)), Observe::Inserted);
        assert_eq!(pt.observe(addr(1, 37020), &a, t(100)), Observe::Duplicate);
        assert_eq!(pt.get_str("a").unwrap().last_seen(), t(0));
        assert_eq!(pt.observe(addr(1, 37020), &a, t(600)), Observe::Refreshed);
        assert_eq!(pt.get_str("a").unwrap().last_seen(), t(600));
        assert_eq!(pt.observe(addr(9, 37020), &a, t(650)), Observe::Updated);
        assert_eq!(pt.get_str("a").unwrap().session_addr(), addr(9, 4000));
        let s = pt.stats();
        assert_eq!(
            (s.inserted, s.duplicates, s.refreshed, s.updated),
            (1, 1, 1, 1)
        );
    }

    #[test]
    fn key_conflict_keeps_pinned_key_and_address() {
        let mut pt = table();
        assert_eq!(
            pt.observe(addr(1, 1), &ann("a", 1), t(0)),
            Observe::Inserted
        );
        assert_eq!(
            pt.observe(addr(66, 1), &ann("a", 2), t(5000)),
            Observe::KeyConflict
        );
        let e = pt.get_str("a").unwrap();
        assert_eq!(e.static_key(), &PublicKey::from_bytes([1; 32]));
        assert_eq!(e.source(), addr(1, 1));
        assert_eq!(e.last_seen(), t(0));
        assert_eq!(pt.stats().key_conflicts, 1);
    }

    #[test]
    fn self_announces_ignored() {
        let mut pt = table();
        assert_eq!(
            pt.observe(addr(1, 1), &ann("me", 1), t(0)),
            Observe::SelfAnnounce
        );
        assert_eq!(
            pt.observe(addr(1, 1), &ann("other", 0xee), t(0)),
            Observe::SelfAnnounce
        );
        assert!(pt.is_empty());
        assert_eq!(pt.stats().self_announces, 2);
    }

    #[test]
    fn expiry_by_age_not_session_close() {
        let mut pt = table();
        pt.observe(addr(1, 1), &ann("a", 1), t(0));
        pt.observe(addr(2, 1), &ann("b", 2), t(0));
        pt.set_session(&DeviceId::new("b").unwrap(), true);
        assert_eq!(pt.expire(t(2999)), 0);
        assert_eq!(pt.expire(t(3000)), 1);
        assert!(pt.get_str("a").is_none());
        assert!(pt.get_str("b").is_some(), "sessioned entries do not expire");
        // Closing the session does not remove it...
        pt.set_session(&DeviceId::new("b").unwrap(), false);
        assert!(pt.get_str("b").is_some());
        // ...age does.
        assert_eq!(pt.expire(t(3001)), 1);
        assert!(pt.is_empty());
    }

    #[test]
    fn per_source_cap_churns_only_that_source() {
        let mut pt = table();
        pt.observe(addr(2, 1), &ann("honest", 2), t(0));
        for i in 0..10u8 {
            let o = pt.observe(
                addr(1, 1),
                &ann(&alloc::format!("fake{i}"), 100 + i),
                t(u64::from(i)),
            );
            assert_eq!(o, Observe::Inserted);
        }
        assert_eq!(pt.len(), 1 + 4);
        assert!(pt.get_str("honest").is_some());
        // The newest four fakes remain.
        assert!(pt.get_str("fake9").is_some() && pt.get_str("fake5").is_none());
    }

    #[test]
    fn full_when_nothing_evictable() {
        let cfg = PeerTableConfig {
            capacity: 2,
            ..PeerTableConfig::default()
        };
        let mut pt = PeerTable::new(
            DeviceId::new("me").unwrap(),
            PublicKey::from_bytes([0xee; 32]),
            cfg,
        );
        pt.observe(addr(1, 1), &ann("a", 1), t(0));
        pt.observe(addr(2, 1), &ann("b", 2), t(0));
        pt.set_session(&DeviceId::new("a").unwrap(), true);
        pt.pin(&DeviceId::new("b").unwrap());
        assert_eq!(pt.observe(addr(3, 1), &ann("c", 3), t(10)), Observe::Full);
        assert_eq!(pt.len(), 2);
        let cfg = PeerTableConfig {
            per_source_cap: 1,
            ..PeerTableConfig::default()
        };
        let mut pt = PeerTable::new(
            DeviceId::new("me").unwrap(),
            PublicKey::from_bytes([0xee; 32]),
            cfg,
        );
        pt.observe(addr(1, 1), &ann("a", 1), t(0));
        pt.set_session(&DeviceId::new("a").unwrap(), true);
        assert_eq!(
            pt.observe(addr(1, 2), &ann("c", 3), t(10)),
            Observe::SourceLimited
        );
    }

    #[test]
    fn eviction_prefers_stalest() {
        let cfg = PeerTableConfig {
            capacity: 3,
            ..PeerTableConfig::default()
        };
        let mut pt = PeerTable::new(
            DeviceId::new("me").unwrap(),
            PublicKey::from_bytes([0xee; 32]),
            cfg,
        );
        pt.observe(addr(1, 1), &ann("old", 1), t(0));
        pt.observe(addr(2, 1), &ann("mid", 2), t(100));
        pt.observe(addr(3, 1), &ann("new", 3), t(200));
        assert_eq!(
            pt.observe(addr(4, 1), &ann("x", 4), t(300)),
            Observe::Inserted
        );
        assert!(pt.get_str("old").is_none());
        assert_eq!(pt.stats().evicted, 1);
    }

    #[test]
    fn malformed_and_oversized_datagrams_counted() {
        let mut pt = table();
        assert_eq!(
            pt.observe_datagram(addr(1, 1), b"NXSB\x02", t(0)),
            Observe::Malformed(AnnounceError::UnsupportedVersion(2))
        );
        assert_eq!(
            pt.observe_datagram(addr(1, 1), &[0u8; 2000], t(0)),
            Observe::Oversized
        );
        assert_eq!((pt.stats().malformed, pt.stats().oversized), (1, 1));
        assert!(pt.is_empty());
    }
}
