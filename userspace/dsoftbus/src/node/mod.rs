//! Node policy: one sans-IO place for the rules both daemons (the OS
//! `dsoftbusd` and the Linux `dsoftbus`) apply to a hostile network.
//!
//! | module | rule |
//! | --- | --- |
//! | [`admission`] | per-source cap on half-open inbound connections, fair admission, the pre-DH handshake limiter |
//! | [`sessions`] | one id per static key, per-source session cap, capacity reserved for pinned peers |
//! | [`pins`] | automatic (TOFU) vs user pins, automatic pins rate-limited and capped per source, stale ones evicted; trust modes `tofu`, `known`, `pending` |
//! | [`candidates`] | several candidate addresses per id, move on from one that fails; dial backoff |
//! | [`consent`] | who may send files (`ask`/`known`/`any`/`none`), bounded pending offers with expiry, caps on incoming transfers |
//! | [`log`] | per-kind log rate limit with suppressed counts and a stated worst case |
//! | [`logsafe`] | how a peer-chosen string (file name, device id, service) is printed in a log line: one escaped token of at most 128 bytes |
//!
//! The peer table's eviction rules (entries with a dial or handshake in
//! flight, a session or a pin are never evicted by unverified ones; the
//! noisiest sources lose first) live in [`peer_table`](crate::peer_table).
//!
//! Like the rest of the crate: no I/O, no clock (the caller passes
//! [`Instant`](crate::Instant)s), bounded state, errors instead of panics.
//! Every rule has a deterministic test whose name starts with `node_`
//! (`cargo test -p dsoftbus -- node`).

pub mod admission;
pub mod candidates;
pub mod consent;
pub mod log;
pub mod logsafe;
pub mod pins;
pub mod sessions;

#[cfg(test)]
mod fixtures;

use core::net::{IpAddr, Ipv6Addr};

pub use admission::{Admission, AdmissionConfig, AdmitRefused, Admitted, Ticket};
pub use candidates::{backoff_delay, CandidateConfig, Candidates};
pub use consent::{
    AcceptError, AcceptPolicy, Consent, ConsentConfig, Deny, OfferId, Pending, Slot, Verdict,
};
pub use log::{suppressed_suffix, LogLimiter, LogLimiterConfig};
pub use logsafe::{log_safe, LogSafe, LOG_NAME_MAX};
pub use pins::{Pin, PinConfig, PinError, PinKind, PinStore, Pinned, TrustMode};
pub use sessions::{SessionAdmit, SessionCaps, SessionCapsConfig, SessionRefused};

/// The address a source is accounted under: IPv4 as is (IPv4-mapped IPv6
/// too), IPv6 by its /64 (one host commonly controls a whole /64).
pub fn source_of(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(a) => match a.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = a.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::net::Ipv4Addr;

    #[test]
    fn node_source_of_maps_v6_to_its_64() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::9".parse().unwrap();
        assert_eq!(source_of(a), source_of(b));
        let m: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        assert_eq!(source_of(m), IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)));
    }
}
