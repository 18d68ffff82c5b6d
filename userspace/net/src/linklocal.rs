//! IPv4 link-local addressing (RFC 3927) for a link with no DHCP server.
//!
//! A sans-IO state machine: the engine feeds it every ARP packet the NIC
//! receives ([`LinkLocal::on_arp`]) and the time ([`LinkLocal::poll`]), sends
//! the ARP frames it asks for ([`LinkLocal::take_tx`]) and applies the
//! address it reports ([`LinkLocalEvent`]). It never touches an interface.
//!
//! ```text
//!  Waiting ──DHCP silent for `dhcp_fallback`──▶ Probing(candidate)
//!  Probing ──probe_num probes, then announce_wait with no conflict──▶ Claimed(addr)
//!  Probing ──conflict──▶ Probing(next candidate)      (rate-limited after max_conflicts)
//!  Claimed ──conflict, defended less than defend_interval ago──▶ Probing(next)
//!  any     ──DHCP lease──▶ Stopped      Stopped ──lease lost──▶ Waiting
//! ```
//!
//! * **Candidates** lie in 169.254.1.0–169.254.254.255 (RFC 3927 §2.1: the
//!   first and last 256 addresses are reserved). The first one is a hash of
//!   the MAC alone, so a host asks for the same address on every boot; every
//!   later one mixes in the engine's random seed and the attempt number, so
//!   two hosts that share a MAC (and therefore a first candidate) do not
//!   follow each other from conflict to conflict.
//! * **Conflicts while probing** (§2.2.1): any received ARP packet whose
//!   sender address is the candidate, or any ARP probe (sender 0.0.0.0) for
//!   the candidate.
//! * **Conflicts once claimed** (§2.5): any received ARP packet whose sender
//!   address is ours. The first is defended with one announcement; a second
//!   within `defend_interval` gives the address up. A probe for our address
//!   is answered with an announcement (smoltcp does not answer ARP requests
//!   whose sender is 0.0.0.0), at most once per `probe_min`.
//! * **Own MAC.** RFC 3927 ignores probes that carry the host's own hardware
//!   address, so that a link which reflects a host's frames back to it does not
//!   make it conflict with itself. A NIC does not hand a host its own
//!   transmissions (virtio-net on QEMU's netdevs and Linux bridges do not), and
//!   on a link where two hosts share a MAC that exception would hide exactly
//!   the conflict that matters, so this module counts every received packet,
//!   whatever its sender hardware address.
//!
//! Timings are RFC 3927's divided by ten ([`LinkLocalConfig::default`]); see
//! docs/networking/os-net.md for why.

use alloc::collections::VecDeque;

use smoltcp::time::{Duration, Instant};
use smoltcp::wire::{Ipv4Address, Ipv4Cidr};

/// Prefix length of the link-local network (169.254.0.0/16).
pub const LINK_LOCAL_PREFIX: u8 = 16;
/// ARP frames waiting to be sent; older ones are dropped past this.
pub const MAX_ARP_TX: usize = 4;
/// Length of an Ethernet frame carrying an Ethernet/IPv4 ARP packet.
pub const ARP_FRAME_LEN: usize = 14 + 28;

/// Timings and bounds. All times are on the engine's clock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinkLocalConfig {
    /// How long DHCP may stay silent (no lease) before probing starts.
    pub dhcp_fallback: Duration,
    /// Random delay before the first probe of an attempt: `0..probe_wait`.
    pub probe_wait: Duration,
    /// Probes per candidate.
    pub probe_num: u8,
    /// Gap between probes: `probe_min..=probe_max`.
    pub probe_min: Duration,
    /// See `probe_min`.
    pub probe_max: Duration,
    /// Quiet time after the last probe before the address is claimed.
    pub announce_wait: Duration,
    /// Announcements after claiming.
    pub announce_num: u8,
    /// Gap between announcements.
    pub announce_interval: Duration,
    /// Conflicts after which attempts are rate-limited.
    pub max_conflicts: u32,
    /// Least time between attempts once `max_conflicts` is reached.
    pub rate_limit_interval: Duration,
    /// A second conflict within this time of a defence gives the address up.
    pub defend_interval: Duration,
}

impl Default for LinkLocalConfig {
    /// RFC 3927 §9 constants divided by ten (counts unchanged); DHCP fallback
    /// after 3 s.
    fn default() -> Self {
        LinkLocalConfig {
            dhcp_fallback: Duration::from_millis(3000),
            probe_wait: Duration::from_millis(100),
            probe_num: 3,
            probe_min: Duration::from_millis(100),
            probe_max: Duration::from_millis(200),
            announce_wait: Duration::from_millis(200),
            announce_num: 2,
            announce_interval: Duration::from_millis(200),
            max_conflicts: 10,
            rate_limit_interval: Duration::from_millis(6000),
            defend_interval: Duration::from_millis(1000),
        }
    }
}

/// The fields of a received Ethernet/IPv4 ARP packet that matter here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ArpSeen {
    /// Operation code (1 request, 2 reply; others are ignored).
    pub operation: u16,
    /// Sender hardware address.
    pub sender_mac: [u8; 6],
    /// Sender protocol address (0.0.0.0 in a probe).
    pub sender_ip: Ipv4Address,
    /// Target protocol address.
    pub target_ip: Ipv4Address,
}

impl ArpSeen {
    /// Parses an Ethernet frame; `None` unless it is a well-formed
    /// Ethernet/IPv4 ARP request or reply. Total: never panics.
    pub fn parse_frame(frame: &[u8]) -> Option<ArpSeen> {
        let ethertype = u16::from_be_bytes([*frame.get(12)?, *frame.get(13)?]);
        if ethertype != 0x0806 {
            return None;
        }
        let arp = frame.get(14..14 + 28)?;
        // htype 1 (Ethernet), ptype 0x0800 (IPv4), hlen 6, plen 4.
        if arp[0..6] != [0, 1, 8, 0, 6, 4] {
            return None;
        }
        let operation = u16::from_be_bytes([arp[6], arp[7]]);
        if operation != 1 && operation != 2 {
            return None;
        }
        let mut sender_mac = [0u8; 6];
        sender_mac.copy_from_slice(&arp[8..14]);
        let ip = |b: &[u8]| Ipv4Address::new(b[0], b[1], b[2], b[3]);
        Some(ArpSeen {
            operation,
            sender_mac,
            sender_ip: ip(&arp[14..18]),
            target_ip: ip(&arp[24..28]),
        })
    }

    fn is_probe(&self) -> bool {
        self.operation == 1 && self.sender_ip.is_unspecified()
    }
}

/// An ARP packet to broadcast.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArpOut {
    /// "Who has `0`?" from 0.0.0.0.
    Probe(Ipv4Address),
    /// "`0` is at my MAC" (request with sender = target = the address).
    Announce(Ipv4Address),
}

impl ArpOut {
    /// Writes the broadcast Ethernet frame into `buf` (at least
    /// [`ARP_FRAME_LEN`] bytes; shorter buffers are left untouched).
    pub fn emit(&self, mac: [u8; 6], buf: &mut [u8]) {
        let Some(buf) = buf.get_mut(..ARP_FRAME_LEN) else {
            return;
        };
        let (sender, target) = match *self {
            ArpOut::Probe(a) => (Ipv4Address::UNSPECIFIED, a),
            ArpOut::Announce(a) => (a, a),
        };
        buf[0..6].copy_from_slice(&[0xff; 6]);
        buf[6..12].copy_from_slice(&mac);
        buf[12..14].copy_from_slice(&[0x08, 0x06]);
        buf[14..22].copy_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
        buf[22..28].copy_from_slice(&mac);
        buf[28..32].copy_from_slice(&sender.octets());
        buf[32..38].copy_from_slice(&[0; 6]);
        buf[38..42].copy_from_slice(&target.octets());
    }
}

/// What the engine must do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkLocalEvent {
    /// Probing found no other user: configure `addr`/16 now.
    Claimed(Ipv4Address),
    /// Another host uses (or probes for) the candidate; another is tried.
    CandidateConflict(Ipv4Address),
    /// The claimed address was lost to another host: remove it; another
    /// candidate is tried.
    Lost(Ipv4Address),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// DHCP has `at` to bind before probing starts.
    Waiting { at: Instant },
    /// Probing `addr`; `sent` probes out, the next action due at `next`.
    Probing {
        addr: Ipv4Address,
        sent: u8,
        next: Instant,
    },
    /// `addr` is ours; `announced` announcements out, the next due at `next`.
    Claimed {
        addr: Ipv4Address,
        announced: u8,
        next: Instant,
        defended: Option<Instant>,
        answered: Option<Instant>,
    },
    /// DHCP holds the interface.
    Stopped,
}

/// The link-local client of one interface.
#[derive(Debug)]
pub struct LinkLocal {
    cfg: LinkLocalConfig,
    mac: [u8; 6],
    seed: u64,
    rng: u64,
    state: State,
    /// Candidates tried so far (picks the next one).
    attempts: u32,
    /// Conflicts so far (rate limiting).
    conflicts: u32,
    /// When the current attempt started (rate limiting).
    attempt_started: Option<Instant>,
    tx: VecDeque<ArpOut>,
}

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

fn mac_hash(mac: &[u8; 6]) -> u64 {
    mac.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3)
    })
}

/// Maps a hash onto 169.254.1.0–169.254.254.255.
fn address_from(h: u64) -> Ipv4Address {
    let n = h % (254 * 256);
    Ipv4Address::new(169, 254, 1 + (n / 256) as u8, (n % 256) as u8)
}

/// Candidate number `attempt` for `mac`: attempt 0 depends on the MAC only.
pub fn candidate(mac: &[u8; 6], seed: u64, attempt: u32) -> Ipv4Address {
    let h = mac_hash(mac);
    if attempt == 0 {
        address_from(splitmix(h))
    } else {
        address_from(splitmix(h ^ splitmix(seed ^ u64::from(attempt))))
    }
}

/// True for 169.254.0.0/16.
pub fn is_link_local(a: Ipv4Address) -> bool {
    let o = a.octets();
    o[0] == 169 && o[1] == 254
}

impl LinkLocal {
    /// A client that starts probing `cfg.dhcp_fallback` after `now` unless
    /// [`LinkLocal::stop`] is called first.
    pub fn new(cfg: LinkLocalConfig, mac: [u8; 6], seed: u64, now: Instant) -> LinkLocal {
        LinkLocal {
            cfg,
            mac,
            seed,
            rng: splitmix(seed ^ mac_hash(&mac)),
            state: State::Waiting {
                at: now + cfg.dhcp_fallback,
            },
            attempts: 0,
            conflicts: 0,
            attempt_started: None,
            tx: VecDeque::new(),
        }
    }

    /// The claimed address, if any.
    pub fn address(&self) -> Option<Ipv4Address> {
        match self.state {
            State::Claimed { addr, .. } => Some(addr),
            _ => None,
        }
    }

    /// The claimed address as a /16.
    pub fn cidr(&self) -> Option<Ipv4Cidr> {
        self.address().map(|a| Ipv4Cidr::new(a, LINK_LOCAL_PREFIX))
    }

    /// The candidate being probed, if any.
    pub fn probing(&self) -> Option<Ipv4Address> {
        match self.state {
            State::Probing { addr, .. } => Some(addr),
            _ => None,
        }
    }

    /// Conflicts seen so far.
    pub fn conflicts(&self) -> u32 {
        self.conflicts
    }

    /// DHCP bound: stop (a claimed address is simply dropped; the lease
    /// replaces it on the interface).
    pub fn stop(&mut self) {
        self.state = State::Stopped;
        self.tx.clear();
    }

    /// DHCP lost its lease: wait `dhcp_fallback` again, then probe.
    pub fn restart(&mut self, now: Instant) {
        if self.state == State::Stopped {
            self.state = State::Waiting {
                at: now + self.cfg.dhcp_fallback,
            };
        }
    }

    /// Next ARP frame to send.
    pub fn take_tx(&mut self) -> Option<ArpOut> {
        self.tx.pop_front()
    }

    /// True if frames are waiting to be sent.
    pub fn has_tx(&self) -> bool {
        !self.tx.is_empty()
    }

    /// When [`LinkLocal::poll`] must run next.
    pub fn poll_at(&self) -> Option<Instant> {
        match self.state {
            State::Waiting { at } => Some(at),
            State::Probing { next, .. } => Some(next),
            State::Claimed {
                announced, next, ..
            } if announced < self.cfg.announce_num => Some(next),
            State::Claimed { .. } | State::Stopped => None,
        }
    }

    fn random(&mut self, max: Duration) -> Duration {
        self.rng = splitmix(self.rng);
        let span = max.total_micros();
        if span == 0 {
            Duration::ZERO
        } else {
            Duration::from_micros(self.rng % (span + 1))
        }
    }

    fn send(&mut self, out: ArpOut) {
        if self.tx.len() >= MAX_ARP_TX {
            self.tx.pop_front();
        }
        self.tx.push_back(out);
    }

    /// Starts probing the next candidate.
    fn next_attempt(&mut self, now: Instant) {
        let addr = candidate(&self.mac, self.seed, self.attempts);
        self.attempts = self.attempts.saturating_add(1);
        let mut start = now + self.random(self.cfg.probe_wait);
        if self.conflicts >= self.cfg.max_conflicts {
            if let Some(prev) = self.attempt_started {
                start = start.max(prev + self.cfg.rate_limit_interval);
            }
        }
        self.attempt_started = Some(start);
        self.state = State::Probing {
            addr,
            sent: 0,
            next: start,
        };
    }

    fn conflict(&mut self, now: Instant) {
        self.conflicts = self.conflicts.saturating_add(1);
        self.next_attempt(now);
    }

    /// Runs the timers.
    pub fn poll(&mut self, now: Instant) -> Option<LinkLocalEvent> {
        match self.state {
            State::Waiting { at } if now >= at => {
                self.next_attempt(now);
                self.poll(now)
            }
            State::Probing { addr, sent, next } if now >= next => {
                if sent < self.cfg.probe_num {
                    self.send(ArpOut::Probe(addr));
                    let sent = sent + 1;
                    let gap = if sent < self.cfg.probe_num {
                        self.cfg.probe_min + self.random(self.cfg.probe_max - self.cfg.probe_min)
                    } else {
                        self.cfg.announce_wait
                    };
                    self.state = State::Probing {
                        addr,
                        sent,
                        next: now + gap,
                    };
                    None
                } else {
                    self.send(ArpOut::Announce(addr));
                    self.state = State::Claimed {
                        addr,
                        announced: 1,
                        next: now + self.cfg.announce_interval,
                        defended: None,
                        answered: None,
                    };
                    Some(LinkLocalEvent::Claimed(addr))
                }
            }
            State::Claimed {
                addr,
                announced,
                next,
                defended,
                answered,
            } if announced < self.cfg.announce_num && now >= next => {
                self.send(ArpOut::Announce(addr));
                self.state = State::Claimed {
                    addr,
                    announced: announced + 1,
                    next: now + self.cfg.announce_interval,
                    defended,
                    answered,
                };
                None
            }
            _ => None,
        }
    }

    /// Looks at one received ARP packet.
    pub fn on_arp(&mut self, now: Instant, arp: &ArpSeen) -> Option<LinkLocalEvent> {
        match self.state {
            State::Probing { addr, .. } => {
                let claims = arp.sender_ip == addr;
                let probes = arp.is_probe() && arp.target_ip == addr;
                if claims || probes {
                    self.conflict(now);
                    return Some(LinkLocalEvent::CandidateConflict(addr));
                }
                None
            }
            State::Claimed {
                addr,
                announced,
                next,
                defended,
                answered,
            } => {
                if arp.sender_ip == addr {
                    let recent = defended.is_some_and(|t| now < t + self.cfg.defend_interval);
                    if recent {
                        self.conflict(now);
                        return Some(LinkLocalEvent::Lost(addr));
                    }
                    self.send(ArpOut::Announce(addr));
                    self.state = State::Claimed {
                        addr,
                        announced,
                        next,
                        defended: Some(now),
                        answered,
                    };
                } else if arp.is_probe() && arp.target_ip == addr {
                    let allowed = answered.is_none_or(|t| now >= t + self.cfg.probe_min);
                    if allowed {
                        self.send(ArpOut::Announce(addr));
                        self.state = State::Claimed {
                            addr,
                            announced,
                            next,
                            defended,
                            answered: Some(now),
                        };
                    }
                }
                None
            }
            State::Waiting { .. } | State::Stopped => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;
    use alloc::vec::Vec;

    const MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];
    const OTHER: [u8; 6] = [0x52, 0x54, 0x00, 0x65, 0x43, 0x21];

    fn t(ms: i64) -> Instant {
        Instant::from_millis(ms)
    }

    fn run(ll: &mut LinkLocal, from: i64, to: i64) -> (Vec<(i64, ArpOut)>, Vec<LinkLocalEvent>) {
        let mut out = Vec::new();
        let mut ev = Vec::new();
        for ms in from..=to {
            if let Some(e) = ll.poll(t(ms)) {
                ev.push(e);
            }
            while let Some(f) = ll.take_tx() {
                out.push((ms, f));
            }
        }
        (out, ev)
    }

    #[test]
    fn candidates_stay_in_the_usable_range() {
        for attempt in 0..2000 {
            let a = candidate(&MAC, 0xdead_beef, attempt).octets();
            assert_eq!((a[0], a[1]), (169, 254));
            assert!((1..=254).contains(&a[2]), "{a:?}");
        }
    }

    #[test]
    fn first_candidate_depends_on_the_mac_only() {
        assert_eq!(candidate(&MAC, 1, 0), candidate(&MAC, 2, 0));
        assert_ne!(candidate(&MAC, 1, 0), candidate(&OTHER, 1, 0));
        // Later candidates differ between hosts that share a MAC.
        assert_ne!(candidate(&MAC, 1, 1), candidate(&MAC, 2, 1));
    }

    #[test]
    fn probes_then_claims_on_a_quiet_link() {
        let cfg = LinkLocalConfig::default();
        let mut ll = LinkLocal::new(cfg, MAC, 7, t(0));
        let (out, ev) = run(&mut ll, 0, 5000);
        let addr = candidate(&MAC, 7, 0);
        let probes: Vec<_> = out
            .iter()
            .filter(|(_, f)| *f == ArpOut::Probe(addr))
            .collect();
        assert_eq!(probes.len(), 3);
        assert!(probes[0].0 >= 3000 && probes[0].0 <= 3100, "{probes:?}");
        for w in probes.windows(2) {
            let gap = w[1].0 - w[0].0;
            assert!((100..=200).contains(&gap), "{probes:?}");
        }
        let announces: Vec<_> = out
            .iter()
            .filter(|(_, f)| *f == ArpOut::Announce(addr))
            .collect();
        assert_eq!(announces.len(), 2);
        assert_eq!(announces[0].0 - probes[2].0, 200);
        assert_eq!(announces[1].0 - announces[0].0, 200);
        assert_eq!(ev, vec![LinkLocalEvent::Claimed(addr)]);
        assert_eq!(ll.address(), Some(addr));
        assert_eq!(ll.poll_at(), None);
    }

    #[test]
    fn garbage_frames_parse_to_nothing() {
        assert_eq!(ArpSeen::parse_frame(&[]), None);
        assert_eq!(ArpSeen::parse_frame(&[0u8; 13]), None);
        let mut f = [0u8; ARP_FRAME_LEN];
        ArpOut::Probe(Ipv4Address::new(169, 254, 3, 4)).emit(MAC, &mut f);
        let seen = ArpSeen::parse_frame(&f).expect("own probe parses");
        assert!(seen.is_probe());
        assert_eq!(seen.sender_mac, MAC);
        assert_eq!(seen.target_ip, Ipv4Address::new(169, 254, 3, 4));
        for len in 0..ARP_FRAME_LEN {
            assert_eq!(ArpSeen::parse_frame(&f[..len]), None, "len {len}");
        }
        let mut bad = f;
        bad[21] = 3; // operation 3
        assert_eq!(ArpSeen::parse_frame(&bad), None);
    }
}
