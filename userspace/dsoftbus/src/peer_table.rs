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
//!    IP. Entries that are pinned, hold a session, or have a dial or
//!    handshake in flight ([`PeerTable::set_in_flight`]) are never evicted.
//!    A new id that would exceed the per-source cap evicts that source's
//!    stalest evictable entry. One that would exceed `capacity` evicts an
//!    entry from the **noisiest source**: every announce of a new id adds
//!    one to its source's *noise* score, which halves every second (at most
//!    `noise_sources` sources tracked, the quietest forgotten first). The
//!    victim is the evictable entry whose source is noisiest (then the
//!    stalest), and only if the newcomer's source is at most one announce
//!    noisier — so a flood of new ids from many addresses churns its own
//!    entries and cannot push out a quiet peer's entry before its handshake
//!    arrives. If nothing may be evicted the announce is refused
//!    ([`Observe::Full`] / [`Observe::SourceLimited`]).
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
    /// Sources whose new-id rate ("noise") is tracked (default 256,
    /// minimum 1).
    pub noise_sources: usize,
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
            noise_sources: 256,
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
    in_flight: bool,
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

    /// A dial or handshake with this peer is in flight (set via
    /// [`PeerTable::set_in_flight`]); such entries are never evicted.
    pub fn is_in_flight(&self) -> bool {
        self.in_flight
    }

    fn evictable(&self) -> bool {
        !self.pinned && !self.has_session && !self.in_flight
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
    noise: Vec<Noise>,
}

/// New-id announces from one source, in 1/1000, halving every second.
#[derive(Clone, Copy, Debug)]
struct Noise {
    ip: IpAddr,
    milli: u64,
    last: Instant,
}

impl Noise {
    fn at(&self, now: Instant) -> u64 {
        let secs = now.saturating_since(self.last).as_secs();
        self.milli >> secs.min(63)
    }
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
            noise: Vec::new(),
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

    /// Marks whether a dial or handshake with `id` is in flight (such an
    /// entry is never evicted or expired). Returns false if unknown.
    pub fn set_in_flight(&mut self, id: &DeviceId, in_flight: bool) -> bool {
        match self.get_mut(id) {
            Some(e) => {
                e.in_flight = in_flight;
                true
            }
            None => false,
        }
    }

    /// The noise score of `ip` at `now` (new-id announces, halving every
    /// second; 1000 = one announce).
    pub fn noise(&self, ip: IpAddr, now: Instant) -> u64 {
        let ip = crate::node::source_of(ip);
        self.noise
            .iter()
            .find(|n| n.ip == ip)
            .map_or(0, |n| n.at(now))
    }

    fn add_noise(&mut self, ip: IpAddr, now: Instant) -> u64 {
        let ip = crate::node::source_of(ip);
        let i = match self.noise.iter().position(|n| n.ip == ip) {
            Some(i) => i,
            None => {
                let fresh = Noise {
                    ip,
                    milli: 0,
                    last: now,
                };
                if self.noise.len() < self.cfg.noise_sources.max(1) {
                    self.noise.push(fresh);
                    self.noise.len() - 1
                } else {
                    let q = (0..self.noise.len())
                        .min_by_key(|&i| self.noise[i].at(now))
                        .unwrap_or(0);
                    self.noise[q] = fresh;
                    q
                }
            }
        };
        let n = &mut self.noise[i];
        let secs = now.saturating_since(n.last).as_secs();
        if secs > 0 {
            n.milli >>= secs.min(63);
            n.last = n.last.saturating_add(Duration::from_secs(secs));
        }
        n.milli = n.milli.saturating_add(1000);
        n.milli
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
        let my_noise = self.add_noise(src_ip, now);
        if self.count_from(src_ip) >= self.cfg.per_source_cap {
            match self.stalest_evictable(Some(src_ip)) {
                Some(i) => self.evict(i),
                None => return Observe::SourceLimited,
            }
        }
        if self.entries.len() >= self.cfg.capacity {
            match self.noisiest_evictable(now) {
                Some((i, noise)) if my_noise <= noise.saturating_add(1000) => self.evict(i),
                _ => return Observe::Full,
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
            in_flight: false,
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

    /// Index and source noise of the evictable entry from the noisiest
    /// source (then the stalest).
    fn noisiest_evictable(&self, now: Instant) -> Option<(usize, u64)> {
        self.entries
            .iter()
            .enumerate()
            .filter(|(_, e)| e.evictable())
            .map(|(i, e)| (i, self.noise(e.source.ip(), now), e.last_seen))
            .max_by_key(|&(_, noise, seen)| (noise, core::cmp::Reverse(seen)))
            .map(|(i, noise, _)| (i, noise))
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

    /// Item 5: an announce flood of new ids from 200 source addresses at
    /// 5 000/s into a 32-entry table (the Linux default). Before, a new,
    /// unpinned honest peer's entry was evicted within milliseconds of
    /// every announce, so its handshake never found it. Now it stays from
    /// its first announce to the end of the flood.
    #[test]
    fn node_peer_table_flood_from_200_sources_keeps_a_quiet_new_peer() {
        let cfg = PeerTableConfig {
            capacity: 32,
            ..PeerTableConfig::for_interval(core::time::Duration::from_secs(1))
        };
        let mut pt = PeerTable::new(
            DeviceId::new("me").unwrap(),
            PublicKey::from_bytes([0xee; 32]),
            cfg,
        );
        let honest = ann("honest", 7);
        let honest_src = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(192, 168, 1, 7)), 37020);
        let mut present = 0u64;
        let mut checks = 0u64;
        let mut first = None;
        // 10 s of flood: 5 per ms, each a new id from one of 200 addresses.
        for i in 0..50_000u64 {
            let ms = i / 5;
            let src = SocketAddr::new(
                IpAddr::V4(Ipv4Addr::new(10, 1, (i % 200 / 100) as u8, (i % 100) as u8)),
                37020,
            );
            let id = alloc::format!("fake{i}");
            let a = Announce::new(
                DeviceId::new(&id).unwrap(),
                4000,
                PublicKey::from_bytes([(i % 251) as u8 + 1; 32]),
                vec![],
            )
            .unwrap();
            pt.observe(src, &a, t(ms));
            // The honest peer announces once a second from 1 s on.
            if i % 5 == 0 && ms >= 1000 && ms % 1000 == 0 {
                let o = pt.observe(honest_src, &honest, t(ms));
                first.get_or_insert((ms, o));
            }
            if first.is_some() {
                checks += 1;
                if pt.get_str("honest").is_some() {
                    present += 1;
                }
            }
            assert!(pt.len() <= 32);
        }
        assert_eq!(first.map(|f| f.1), Some(Observe::Inserted));
        assert_eq!(present, checks, "honest entry evicted during the flood");
    }

    #[test]
    fn node_peer_table_in_flight_entries_are_never_evicted() {
        let cfg = PeerTableConfig {
            capacity: 2,
            per_source_cap: 1,
            ..PeerTableConfig::default()
        };
        let mut pt = PeerTable::new(
            DeviceId::new("me").unwrap(),
            PublicKey::from_bytes([0xee; 32]),
            cfg,
        );
        pt.observe(addr(1, 1), &ann("a", 1), t(0));
        pt.observe(addr(2, 1), &ann("b", 2), t(0));
        assert!(pt.set_in_flight(&DeviceId::new("a").unwrap(), true));
        assert!(pt.set_in_flight(&DeviceId::new("b").unwrap(), true));
        assert_eq!(pt.observe(addr(3, 1), &ann("c", 3), t(10)), Observe::Full);
        assert_eq!(
            pt.observe(addr(1, 1), &ann("d", 4), t(10)),
            Observe::SourceLimited
        );
        assert_eq!(pt.expire(t(60_000)), 0, "in-flight entries do not expire");
        pt.set_in_flight(&DeviceId::new("b").unwrap(), false);
        assert_eq!(
            pt.observe(addr(3, 1), &ann("c", 3), t(60_001)),
            Observe::Inserted
        );
        assert!(pt.get_str("a").is_some());
    }

    /// The noisy source loses: a table full of one flooder's and one quiet
    /// peer's entries evicts the flooder's.
    #[test]
    fn node_peer_table_eviction_prefers_the_noisiest_source() {
        let cfg = PeerTableConfig {
            capacity: 4,
            per_source_cap: 4,
            ..PeerTableConfig::default()
        };
        let mut pt = PeerTable::new(
            DeviceId::new("me").unwrap(),
            PublicKey::from_bytes([0xee; 32]),
            cfg,
        );
        pt.observe(addr(1, 1), &ann("quiet", 1), t(0));
        for i in 0..3u8 {
            pt.observe(
                addr(9, 1),
                &ann(&alloc::format!("n{i}"), 10 + i),
                t(500 + u64::from(i)),
            );
        }
        // A new id from a third source: a flooder entry goes, not "quiet"
        // (the stalest).
        assert_eq!(
            pt.observe(addr(3, 1), &ann("new", 3), t(600)),
            Observe::Inserted
        );
        assert!(pt.get_str("quiet").is_some());
        // The flooder cannot push out the quiet entries with more new ids.
        for i in 3..50u8 {
            pt.observe(addr(9, 1), &ann(&alloc::format!("n{i}"), 10 + i), t(700));
        }
        assert!(pt.get_str("quiet").is_some() && pt.get_str("new").is_some());
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(128))]
        /// Item 5 as a state machine: under any sequence of new-id announces
        /// from any sources and times, an entry that is pinned, in session
        /// or in flight is never evicted or expired, and the bounds hold.
        #[test]
        fn node_peer_table_protected_entries_survive_any_flood(
            ops in proptest::collection::vec((0u8..40, 0u16..2000, 0u64..50), 1..400),
            protect in 0u8..3,
        ) {
            let cfg = PeerTableConfig { capacity: 8, per_source_cap: 3, ..PeerTableConfig::default() };
            let mut pt = PeerTable::new(DeviceId::new("me").unwrap(), PublicKey::from_bytes([0xee; 32]), cfg);
            let honest = DeviceId::new("honest").unwrap();
            pt.observe(addr(200, 1), &ann("honest", 7), t(0));
            match protect {
                0 => { pt.pin(&honest); }
                1 => { pt.set_session(&honest, true); }
                _ => { pt.set_in_flight(&honest, true); }
            }
            let mut now = 0u64;
            for (src, id, dt) in ops {
                now += dt;
                let a = ann(&alloc::format!("f{id}"), (id % 200) as u8 + 10);
                pt.observe(addr(src, 1), &a, t(now));
                proptest::prop_assert!(pt.get(&honest).is_some(), "protected entry evicted");
                proptest::prop_assert!(pt.len() <= 8);
                for s in 0..40u8 {
                    proptest::prop_assert!(pt.iter().filter(|e| e.source() == addr(s, 1)).count() <= 3);
                }
            }
        }
    }
}
