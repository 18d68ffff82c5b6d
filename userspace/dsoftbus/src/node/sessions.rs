//! Session caps: who may hold an authenticated session.
//!
//! Checked when a session is about to become visible (after identity
//! binding), in this order:
//!
//! 1. **One id per key.** A static key binds one device id at a time: while
//!    a session authenticated by key K as id A is live, K cannot open a
//!    session as B ([`SessionRefused::KeyInUse`]). One key can no longer
//!    fill the table with made-up ids.
//! 2. **Same id again** (a reconnect): the newer session replaces the older
//!    one ([`SessionAdmit::replaces`]); it takes no new capacity.
//! 3. **Per-source cap** on sessions of *unpinned* peers from one source
//!    (default 8) — pinned peers behind one NAT are not limited by it.
//! 4. **Reserved capacity.** Of `max_sessions` (default 32), up to
//!    `reserved_for_pinned` (default 8) are only for peers pinned *before*
//!    this session (a user-trusted or earlier automatic pin), so unpinned
//!    newcomers can never lock a pinned peer out. The caller says how many
//!    pinned peers are without a session ([`SessionCaps::set_pinned_waiting`]);
//!    only that many slots (at most `reserved_for_pinned`) are held back, so a
//!    fresh network with no pins yet can still use every slot.
//!
//! Sans-IO: sessions are identified by the caller's connection id.

use alloc::vec::Vec;
use core::fmt;
use core::net::IpAddr;

use super::source_of;
use crate::announce::DeviceId;
use crate::keys::PublicKey;

/// Bounds of [`SessionCaps`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SessionCapsConfig {
    /// Sessions at once (default 32, minimum 1).
    pub max_sessions: usize,
    /// Sessions of unpinned peers from one source (default 8, minimum 1).
    pub per_source: usize,
    /// Sessions only pinned peers may use (default 8, at most `max_sessions`).
    pub reserved_for_pinned: usize,
}

impl Default for SessionCapsConfig {
    fn default() -> Self {
        SessionCapsConfig::for_max(32)
    }
}

impl SessionCapsConfig {
    /// `max` sessions, a quarter of them (at least one when `max` > 1)
    /// reserved for pinned peers, per-source cap a quarter (at least 1).
    pub fn for_max(max: usize) -> Self {
        let max = max.max(1);
        SessionCapsConfig {
            max_sessions: max,
            per_source: (max / 4).max(1),
            reserved_for_pinned: if max > 1 { (max / 4).max(1) } else { 0 },
        }
    }
}

/// Why a session was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SessionRefused {
    /// The key already authenticates a live session as another id.
    KeyInUse {
        /// The id the key is bound to now.
        bound_to: DeviceId,
    },
    /// Too many sessions of unpinned peers from this source.
    SourceCap,
    /// The rest of the capacity is reserved for pinned peers.
    ReservedForPinned,
    /// All sessions are in use.
    Full,
}

impl fmt::Display for SessionRefused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SessionRefused::KeyInUse { bound_to } => {
                write!(f, "its key is bound to {bound_to} in a live session")
            }
            SessionRefused::SourceCap => f.write_str("per-address session limit reached"),
            SessionRefused::ReservedForPinned => {
                f.write_str("remaining sessions are reserved for pinned peers")
            }
            SessionRefused::Full => f.write_str("session limit reached"),
        }
    }
}

/// A session was admitted; close the sessions listed (same id, older).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SessionAdmit {
    /// Connection ids of older sessions with the same id.
    pub replaces: Vec<u64>,
}

#[derive(Clone, Debug)]
struct Live {
    conn: u64,
    id: DeviceId,
    key: PublicKey,
    source: IpAddr,
    pinned: bool,
}

/// Live sessions and the caps on them. See the module docs.
#[derive(Clone, Debug)]
pub struct SessionCaps {
    cfg: SessionCapsConfig,
    live: Vec<Live>,
    pinned_waiting: usize,
}

impl SessionCaps {
    /// No sessions yet.
    pub fn new(cfg: SessionCapsConfig) -> Self {
        let max = cfg.max_sessions.max(1);
        let cfg = SessionCapsConfig {
            max_sessions: max,
            per_source: cfg.per_source.max(1),
            reserved_for_pinned: cfg.reserved_for_pinned.min(max),
        };
        SessionCaps {
            live: Vec::with_capacity(max),
            cfg,
            pinned_waiting: usize::MAX,
        }
    }

    /// How many pinned peers have no session now (default: unknown, so the
    /// whole reservation holds). The reservation is the smaller of this and
    /// `reserved_for_pinned`.
    pub fn set_pinned_waiting(&mut self, n: usize) {
        self.pinned_waiting = n;
    }

    /// Slots held back for pinned peers now.
    pub fn reserved(&self) -> usize {
        self.cfg.reserved_for_pinned.min(self.pinned_waiting)
    }

    /// The configuration in force.
    pub fn config(&self) -> &SessionCapsConfig {
        &self.cfg
    }

    /// Live sessions.
    pub fn len(&self) -> usize {
        self.live.len()
    }

    /// No live session.
    pub fn is_empty(&self) -> bool {
        self.live.is_empty()
    }

    /// Connection `conn`, authenticated by `key` as `id`, from `source`,
    /// wants to become a session; `pinned` = `id` was pinned to `key` before.
    pub fn admit(
        &mut self,
        conn: u64,
        id: &DeviceId,
        key: &PublicKey,
        source: IpAddr,
        pinned: bool,
    ) -> Result<SessionAdmit, SessionRefused> {
        let source = source_of(source);
        if let Some(other) = self
            .live
            .iter()
            .find(|l| l.conn != conn && l.key == *key && l.id != *id)
        {
            return Err(SessionRefused::KeyInUse {
                bound_to: other.id.clone(),
            });
        }
        let replaces: Vec<u64> = self
            .live
            .iter()
            .filter(|l| l.conn != conn && l.id == *id)
            .map(|l| l.conn)
            .collect();
        let others = || {
            self.live
                .iter()
                .filter(|l| l.conn != conn && !replaces.contains(&l.conn))
        };
        if !pinned {
            if others().filter(|l| !l.pinned && l.source == source).count() >= self.cfg.per_source {
                return Err(SessionRefused::SourceCap);
            }
            let unpinned_room = self.cfg.max_sessions - self.reserved();
            if others().filter(|l| !l.pinned).count() >= unpinned_room {
                return Err(SessionRefused::ReservedForPinned);
            }
        }
        if others().count() >= self.cfg.max_sessions {
            return Err(SessionRefused::Full);
        }
        self.live
            .retain(|l| l.conn != conn && !replaces.contains(&l.conn));
        self.live.push(Live {
            conn,
            id: id.clone(),
            key: *key,
            source,
            pinned,
        });
        Ok(SessionAdmit { replaces })
    }

    /// The session `conn` ended. Returns whether it was live.
    pub fn remove(&mut self, conn: u64) -> bool {
        let before = self.live.len();
        self.live.retain(|l| l.conn != conn);
        before != self.live.len()
    }

    /// The live session's connection id for `id`.
    pub fn conn_of(&self, id: &DeviceId) -> Option<u64> {
        self.live.iter().find(|l| l.id == *id).map(|l| l.conn)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::fixtures::{id, ip, key};
    use proptest::prelude::*;

    /// Item 7: one static key authenticating as 32 made-up ids filled
    /// max_sessions and the pinned honest peer was refused. Now the key
    /// gets one session, and the pinned peer always gets in.
    #[test]
    fn node_sessions_one_key_many_ids_cannot_lock_out_a_pinned_peer() {
        let mut s = SessionCaps::new(SessionCapsConfig::default());
        let mut ok = 0;
        for i in 0..32u64 {
            let fake = id(&alloc::format!("fake{i}"));
            if s.admit(i, &fake, &key(66), ip(66), false).is_ok() {
                ok += 1;
            }
        }
        assert_eq!(ok, 1, "a key binds one id at a time");
        assert_eq!(
            s.admit(100, &id("honest"), &key(1), ip(1), true),
            Ok(SessionAdmit::default())
        );
    }

    /// Item 7 with many keys from many sources: unpinned sessions stop at
    /// max − reserved; pinned peers still get the reserved ones.
    #[test]
    fn node_sessions_reserved_capacity_and_per_source_cap() {
        let mut s = SessionCaps::new(SessionCapsConfig::default());
        // Per source: 8 unpinned.
        for i in 0..8u8 {
            s.admit(
                u64::from(i),
                &id(&alloc::format!("a{i}")),
                &key(i),
                ip(9),
                false,
            )
            .unwrap();
        }
        assert_eq!(
            s.admit(8, &id("a8"), &key(8), ip(9), false),
            Err(SessionRefused::SourceCap)
        );
        // Fill unpinned room from other sources: 24 in all.
        for i in 8..24u8 {
            s.admit(
                u64::from(i),
                &id(&alloc::format!("b{i}")),
                &key(i),
                ip(100 + i),
                false,
            )
            .unwrap();
        }
        assert_eq!(
            s.admit(99, &id("c"), &key(99), ip(99), false),
            Err(SessionRefused::ReservedForPinned)
        );
        for i in 0..8u8 {
            s.admit(
                200 + u64::from(i),
                &id(&alloc::format!("p{i}")),
                &key(200 + i),
                ip(1),
                true,
            )
            .unwrap();
        }
        assert_eq!(s.len(), 32);
        assert_eq!(
            s.admit(300, &id("p9"), &key(250), ip(1), true),
            Err(SessionRefused::Full)
        );
    }

    /// A fresh mesh (no pins yet) may use every slot; once a pinned peer is
    /// waiting, one slot is held back for it.
    #[test]
    fn node_sessions_reservation_follows_the_pinned_peers_waiting() {
        let mut s = SessionCaps::new(SessionCapsConfig::for_max(8));
        s.set_pinned_waiting(0);
        for i in 0..8u8 {
            s.admit(
                u64::from(i),
                &id(&alloc::format!("n{i}")),
                &key(i),
                ip(i),
                false,
            )
            .unwrap();
        }
        let mut s = SessionCaps::new(SessionCapsConfig::for_max(8));
        s.set_pinned_waiting(1);
        for i in 0..7u8 {
            s.admit(
                u64::from(i),
                &id(&alloc::format!("n{i}")),
                &key(i),
                ip(i),
                false,
            )
            .unwrap();
        }
        assert_eq!(
            s.admit(7, &id("n7"), &key(7), ip(7), false),
            Err(SessionRefused::ReservedForPinned)
        );
        s.admit(8, &id("pinned"), &key(9), ip(9), true).unwrap();
    }

    #[test]
    fn node_sessions_same_id_replaces_and_key_unbinds_when_session_ends() {
        let mut s = SessionCaps::new(SessionCapsConfig::for_max(2));
        s.admit(1, &id("a"), &key(1), ip(1), true).unwrap();
        assert_eq!(
            s.admit(2, &id("a"), &key(1), ip(1), true).unwrap().replaces,
            alloc::vec![1]
        );
        assert_eq!(s.len(), 1);
        assert_eq!(
            s.admit(3, &id("b"), &key(1), ip(1), true),
            Err(SessionRefused::KeyInUse { bound_to: id("a") })
        );
        assert!(s.remove(2));
        s.admit(3, &id("b"), &key(1), ip(1), true).unwrap();
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]
        /// Any sequence of admits/removes: never above max, unpinned never
        /// above max − reserved, one id per key, one session per id.
        #[test]
        fn node_sessions_state_machine_invariants(
            ops in proptest::collection::vec((any::<bool>(), 0u8..12, 0u8..6, 0u8..4, any::<bool>()), 1..300),
            max in 1usize..12,
        ) {
            let cfg = SessionCapsConfig::for_max(max);
            let mut s = SessionCaps::new(cfg);
            for (conn, (add, i, k, src, pinned)) in ops.into_iter().enumerate() {
                if add {
                    let _ = s.admit(conn as u64, &id(&alloc::format!("d{i}")), &key(k), ip(src), pinned);
                } else {
                    let c = s.live.get(usize::from(i) % s.live.len().max(1)).map(|l| l.conn);
                    if let Some(c) = c { s.remove(c); }
                }
                prop_assert!(s.len() <= s.cfg.max_sessions);
                prop_assert!(s.live.iter().filter(|l| !l.pinned).count() <= s.cfg.max_sessions - s.cfg.reserved_for_pinned);
                for a in &s.live {
                    prop_assert_eq!(s.live.iter().filter(|b| b.key == a.key).count(), 1);
                    prop_assert_eq!(s.live.iter().filter(|b| b.id == a.id).count(), 1);
                }
            }
        }
    }
}
