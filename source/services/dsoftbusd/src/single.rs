//! Single-node mode (`dsoftbusd.mode=node`): one node on the NIC, joining a
//! bus with other machines — Linux hosts running `dsoftbus daemon`, or other
//! Nexus VMs.
//!
//! The node takes its address from the DHCP lease, announces every second to
//! the multicast group (broadcast if the join fails), accepts sessions, and
//! dials every discovered peer the tie-break says it should dial, keeping
//! each session open and answering pings. Options: `dsoftbusd.id=<device id>`
//! (default `nexus-os`), `dsoftbusd.port=<tcp port>` (default 34567); file
//! transfer (`crate::files`): `dsoftbusd.accept=any|known|none` (default
//! `none`), `dsoftbusd.send=<device>:<bytes>`, `dsoftbusd.streams=on|off`
//! (default `on`: announce `streams/1`, `crate::streams`).

use alloc::collections::{BTreeSet, VecDeque};
use alloc::string::{String, ToString};
use core::cell::RefCell;

use dsoftbus::node::Candidates;
use dsoftbus::{should_initiate, Event, PeerEntry, DISCOVERY_PORT};
use futures_util::future::{select, try_join3};
use futures_util::stream::{FuturesUnordered, StreamExt};

use nexus_abi::ServiceError;
use nexus_netclient::{Ipv4, NetClient, SockAddr};

use crate::link::{Link, LinkError, Pace};
use crate::node::{
    acceptor, announcer, dial, discovery, err, has_lease, join_discovery_group, ping, sock_addr,
    Bindings, Node, Notify, Seen, Xfer, MAX_SESSIONS_PER_NODE,
};

/// Default device id in node mode.
pub const DEFAULT_ID: &str = "nexus-os";
/// Default session port in node mode.
pub const DEFAULT_PORT: u16 = 34567;
/// Most peers waiting to be dialled.
pub const MAX_DIAL_QUEUE: usize = 16;

/// Peers to dial, filled by discovery, drained by the dialer.
#[derive(Default)]
struct DialQueue {
    queue: RefCell<VecDeque<PeerEntry>>,
    /// Device ids with a dial or session in progress.
    busy: RefCell<BTreeSet<String>>,
    /// Candidate addresses per device id, each with its own dial backoff
    /// (`dsoftbus::node::candidates`: up to 4 per id, 64 ids; a failed
    /// address backs off 250 ms × 2^n ≤ 10 s, so a replayed announce from
    /// another address cannot keep us from dialling the real one).
    candidates: RefCell<Candidates>,
    notify: Notify,
}

/// Run one node until an unrecoverable error.
pub async fn run(
    net: NetClient,
    id: &str,
    port: u16,
    key: Option<crate::DeviceKey>,
    remote: crate::remote::Remote,
    files: crate::files::Files,
    streams: bool,
) -> Result<(), ServiceError> {
    if !has_lease(&net).await {
        log::error!("dsoftbusd: discovery transport unavailable (no DHCP lease on the NIC)");
        return Err(ServiceError::new("no lease"));
    }
    let addr = net
        .status()
        .await
        .ok()
        .and_then(|s| s.ipv4)
        .map_or_else(|| "?".to_string(), |c| alloc::format!("{}", c.addr));
    let mut node = Node::new("node", (id, port), true, key.as_ref())?;
    node.cross_vm = true;
    if let Some(k) = &key {
        node.keep_pins(k.client.clone());
    }
    node.remote = Some(remote);
    node.files = Some(files);
    if streams {
        node.announce_streams(port)?;
    }
    let node = node;
    let any = |port| SockAddr::new(Ipv4::UNSPECIFIED, port);
    let sockets = async {
        let (listener, _) = net.tcp_listen(any(port), 4).await?;
        let (disc, _) = net.udp_bind(any(DISCOVERY_PORT)).await?;
        let (sender, _) = net.udp_bind(any(0)).await?;
        Ok::<_, nexus_netclient::CallError>((listener, disc, sender))
    };
    let (listener, disc, sender) = match sockets.await {
        Ok(s) => s,
        Err(e) => {
            log::error!("dsoftbusd: discovery transport unavailable ({e})");
            return Err(err("sockets", e));
        }
    };
    let nic = join_discovery_group(&net, disc).await;
    log::info!(
        "dsoftbusd: node up device={id} addr={addr} port={port} discovery={}",
        nic.name()
    );

    let seen = Seen::default();
    let dials = DialQueue::default();
    let nodes = [&node];
    let senders = [(&node, sender)];
    let cross_vm_up = core::cell::Cell::new(false);
    let on_fresh = |n: &Node, entry: &PeerEntry| {
        let peer = entry.device_id();
        if !cross_vm_up.get() && !entry.session_addr().ip().is_loopback() {
            // An announce from another machine reached us over the NIC.
            cross_vm_up.set(true);
            log::info!(
                "dsoftbusd: discovery cross-vm up ({}) first peer={peer} from={}",
                nic.name(),
                entry.session_addr(),
                peer = peer.log_safe()
            );
        }
        let at = crate::link::now();
        if let Some(pinned) = n.pinned_elsewhere(peer, entry.static_key()) {
            // The id is pinned (kept by keystored) to another key: whoever
            // announces it now is not the device we know. No dial.
            if let Some(k) = n.dial_log.borrow_mut().allow("pinned-elsewhere", at) {
                log::info!(
                    "dsoftbusd: announce refused (pinned to another key) device={peer} from={} key={} pinned={}{}",
                    entry.session_addr(),
                    crate::node::fp(entry.static_key()),
                    crate::node::fp(&pinned),
                    crate::node::sup(k), peer = peer.log_safe());
            }
            return;
        }
        {
            let mut c = dials.candidates.borrow_mut();
            c.heard(peer, entry.session_addr(), at);
            if c.pick(peer, at).is_none() {
                return; // every address of it is backing off
            }
        }
        if entry.has_session()
            || !should_initiate(n.local.id(), peer)
            || dials.busy.borrow().contains(peer.as_str())
        {
            return;
        }
        let mut q = dials.queue.borrow_mut();
        if q.len() < MAX_DIAL_QUEUE && !q.iter().any(|e| e.device_id() == peer) {
            q.push_back(entry.clone());
            dials.notify.notify();
        }
    };
    try_join3(
        discovery(&net, disc, &nodes, &seen, &on_fresh),
        announcer(&net, &senders, false, nic),
        try_join3(
            acceptor(&net, &node, listener, &seen),
            dialer(&net, &node, &dials),
            futures_util::future::try_join(
                async {
                    match &node.remote {
                        Some(r) => crate::remote::timer(r).await,
                        None => Ok(()),
                    }
                },
                async {
                    match &node.files {
                        Some(f) => crate::files::timer(f, &seen.log).await,
                        None => Ok(()),
                    }
                },
            ),
        ),
    )
    .await
    .map(|_| ())
}

/// Dial queued peers, each session held by its own future.
async fn dialer(net: &NetClient, node: &Node, dials: &DialQueue) -> Result<(), ServiceError> {
    let mut sessions = FuturesUnordered::new();
    loop {
        loop {
            let Some(entry) = dials.queue.borrow_mut().pop_front() else {
                break;
            };
            if sessions.len() >= MAX_SESSIONS_PER_NODE {
                break;
            }
            dials
                .busy
                .borrow_mut()
                .insert(entry.device_id().as_str().to_string());
            sessions.push(hold(net, node, entry, dials));
        }
        if sessions.is_empty() {
            dials.notify.wait().await;
        } else {
            let wait = core::pin::pin!(dials.notify.wait());
            let _ = select(wait, sessions.next()).await;
        }
    }
}

/// Dial one peer and keep the session until it ends; the socket is closed on
/// every path.
async fn hold(net: &NetClient, node: &Node, entry: PeerEntry, dials: &DialQueue) {
    let peer = entry.device_id().clone();
    // Never evicted by unverified announces while we dial it.
    node.table.borrow_mut().set_in_flight(&peer, true);
    let addr = dials
        .candidates
        .borrow()
        .pick(&peer, crate::link::now())
        .unwrap_or_else(|| entry.session_addr());
    let result = match sock_addr(addr) {
        Ok(target) => {
            if let Some(n) = node
                .dial_log
                .borrow_mut()
                .allow("connect", crate::link::now())
            {
                log::info!(
                    "dsoftbusd: session connect peer={peer} addr={target}{}",
                    crate::node::sup(n),
                    peer = peer.log_safe()
                );
            }
            match dial(net, node, &entry, target).await {
                Ok(mut link) => {
                    let r = session(&mut link, node, &entry, addr.ip()).await;
                    link.shutdown().await;
                    r
                }
                Err(e) => Err(e),
            }
        }
        Err(e) => Err(e),
    };
    let at = crate::link::now();
    let jitter = crate::node::fnv1a(peer.as_str()) ^ at.as_millis();
    match result {
        Ok(()) => dials
            .candidates
            .borrow_mut()
            .succeeded(&peer, addr, at, jitter),
        Err(e) => {
            let mut c = dials.candidates.borrow_mut();
            c.failed(&peer, addr, at, jitter);
            let wait = c
                .next_retry(&peer)
                .map_or(0, |r| r.as_millis().saturating_sub(at.as_millis()));
            drop(c);
            if let Some(n) = node.dial_log.borrow_mut().allow("dial-ended", at) {
                log::warn!(
                    "dsoftbusd: session with {peer} at {addr} ended: {e}; retrying in {wait} ms{}",
                    crate::node::sup(n),
                    peer = peer.log_safe()
                );
            }
        }
    }
    node.table.borrow_mut().set_session(&peer, false);
    node.table.borrow_mut().set_in_flight(&peer, false);
    dials.busy.borrow_mut().remove(peer.as_str());
}

/// Run an outgoing session: handshake, first ping, then answer until it ends.
///
/// On the dialling side the XK handshake completes before the peer has
/// judged us: `identity bound` means our check of the peer passed; `auth ok`
/// waits for the first authenticated reply (the pong), which proves the peer
/// accepted us.
async fn session(
    link: &mut Link,
    node: &Node,
    target: &PeerEntry,
    from: core::net::IpAddr,
) -> Result<(), ServiceError> {
    let bindings = Bindings::of(node);
    let peer = match link.next_event(&bindings).await {
        Ok(Event::Established { peer }) => {
            if let Some(n) = node
                .dial_log
                .borrow_mut()
                .allow("bound", crate::link::now())
            {
                log::info!(
                    "dsoftbusd: identity bound peer={peer} node={}{}",
                    node.label,
                    crate::node::sup(n),
                    peer = peer.log_safe()
                );
            }
            peer
        }
        Ok(other) => {
            return Err(ServiceError::new(alloc::format!(
                "unexpected event {other:?}"
            )))
        }
        Err(e) => return Err(err("handshake", e)),
    };
    let rtt = match ping(link, &bindings).await {
        Ok(rtt) => rtt,
        Err(e) => {
            if let Some(n) = node
                .dial_log
                .borrow_mut()
                .allow("refused-by-peer", crate::link::now())
            {
                log::info!(
                    "dsoftbusd: session refused by peer={peer} node={} ({e}){}",
                    node.label,
                    crate::node::sup(n),
                    peer = peer.log_safe()
                );
            }
            return Err(e);
        }
    };
    node.table.borrow_mut().set_session(&peer, true);
    if let Some(n) = node.dial_log.borrow_mut().allow("auth", crate::link::now()) {
        log::info!(
            "dsoftbusd: auth ok peer={peer} node={}",
            node.label,
            peer = peer.log_safe()
        );
        log::info!(
            "dsoftbusd: session ping ok peer={peer} rtt={}us{}",
            rtt.as_micros(),
            crate::node::sup(n),
            peer = peer.log_safe()
        );
        log::info!(
            "dsoftbusd: cross-vm session ok peer={peer} rtt={}us (dialler)",
            rtt.as_micros(),
            peer = peer.log_safe()
        );
    }
    // The peer accepted us and answered under the session keys: trust on
    // first use (persistent pins, node mode with keystored).
    node.pin_on_session(&peer, target.static_key(), from, &node.dial_log);
    if let Some(r) = &node.remote {
        if let Err(e) = r.on_session_up(link, &peer).await {
            r.peer_gone(&peer);
            return Err(err("remote calls", e));
        }
    }
    // Hold the session, answering pings, remote calls and transfers, until
    // the peer goes away.
    let conn_id = node.next_conn.get();
    node.next_conn.set(conn_id.wrapping_add(1));
    let mut xfer = Xfer::new(node, conn_id, true, &peer);
    if let Some(f) = &node.files {
        xfer.start(f, node, &peer);
    }
    let mut pace = Pace::default();
    let result = loop {
        if let (Some(f), true) = (&node.files, pace.step_due()) {
            match xfer.step(f, link, &node.dial_log).await {
                Ok(more) => pace.stepped(more),
                Err(e) => break Err(err("session", e)),
            }
        }
        let next = if pace.more() {
            // The transfer has more to send: only what is ready now.
            match link.ready_event(&bindings, &mut pace).await {
                Some(r) => r,
                None => continue,
            }
        } else {
            link.next_event(&bindings).await
        };
        match next {
            Ok(Event::Closed) | Err(LinkError::Eof) => break Ok(()),
            Ok(Event::Data(d)) => {
                if let Some(f) = &node.files {
                    match xfer.on_data(f, node, link, &peer, &d, &node.dial_log) {
                        Ok(true) => continue,
                        Ok(false) => {}
                        Err(e) => break Err(err("session", e)),
                    }
                }
                if let Some(r) = &node.remote {
                    if let Err(e) = r.on_data(link, Some(&peer), &d, &node.dial_log).await {
                        break Err(err("session", e));
                    }
                }
            }
            Ok(_) => {}
            Err(e) => break Err(err("session", e)),
        }
    };
    if let Some(r) = &node.remote {
        r.peer_gone(&peer);
    }
    if let Some(f) = &node.files {
        xfer.end(f, &node.dial_log);
    }
    result
}
