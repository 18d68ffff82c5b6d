//! Dual-node mode (`dsoftbusd.mode=dual-node`): the soft bus proven inside
//! one VM.
//!
//! Two logical nodes, `node-a` (TCP 34567) and `node-b` (TCP 34568), each
//! with its own static key from the kernel's RDRAND, its own listener,
//! announce socket, peer table and connections. They find each other through
//! UDP announces over the stack's loopback, node-a dials the address and port
//! node-b's announce gave it, both run Noise XK and bind the claimed device
//! id to the authenticated key. A third node, the impostor, has its own key
//! but claims to be `node-a`; node-b must refuse it. Then hostile datagrams
//! (malformed, oversized, a re-binding of `node-b` to another key) are sent to
//! the discovery port and must change nothing. Every marker follows the
//! event it names (docs/distributed/dsoftbus-os.md lists them).
//!
//! One discovery socket (UDP 37020) receives for all nodes, as one port on a
//! real host would, and offers each datagram to every node's peer table.

use alloc::format;
use alloc::vec;
use alloc::vec::Vec;
use core::pin::pin;
use core::time::Duration;

use core::cell::RefCell;

use dsoftbus::node::consent::AcceptPolicy;
use dsoftbus::node::LogLimiter;
use dsoftbus::transfer::Outcome;

use dsoftbus::announce::MAX_ANNOUNCE_LEN;
use dsoftbus::{should_initiate, Event, DISCOVERY_PORT};
use futures_util::future::{select, try_join, try_join3, Either};
use nexus_abi::time;
use nexus_abi::ServiceError;
use nexus_netclient::{Ipv4, NetClient, SockAddr, SocketId};

use crate::files::{Files, Outgoing};
use crate::link::{Link, Pace};
use crate::node::{
    acceptor, announcer, dial, discovery, err, has_lease, join_discovery_group, ping, send,
    sock_addr, wait_for, Bindings, NicDiscovery, Node, Seen,
};
use crate::streams::Streams;

const NODE_A: (&str, u16) = ("node-a", 34567);
const NODE_B: (&str, u16) = ("node-b", 34568);
/// The impostor's listening port is never opened; its announce is never sent.
const IMPOSTOR: (&str, u16) = ("node-a", 34569);

/// Run the dual-node proof; returns when it is complete.
pub async fn run(
    net: NetClient,
    crash_after_session: bool,
    key: Option<crate::DeviceKey>,
) -> Result<(), ServiceError> {
    let lease = has_lease(&net).await;
    // node-a is this device: its identity is keystored's (when granted).
    let a = Node::new("node-a", NODE_A, true, key.as_ref())?;
    let mut b = Node::new("node-b", NODE_B, true, None)?;
    // node-b takes the bulk file: its own inbox and consent, policy `any`,
    // and it announces streams/1, so the file goes on a stream.
    b.files = Some(Files::new(AcceptPolicy::Any));
    b.announce_streams(NODE_B.1)?;
    let b = b;
    let impostor = Node::new("impostor", IMPOSTOR, false, None)?;

    let any = |port| SockAddr::new(Ipv4::UNSPECIFIED, port);
    let transport = async {
        let (la, _) = net.tcp_listen(any(a.port), 4).await?;
        let (lb, _) = net.tcp_listen(any(b.port), 4).await?;
        let (disc, _) = net.udp_bind(any(DISCOVERY_PORT)).await?;
        let (send_a, _) = net.udp_bind(any(0)).await?;
        let (send_b, _) = net.udp_bind(any(0)).await?;
        let (hostile, _) = net.udp_bind(any(0)).await?;
        Ok::<_, nexus_netclient::CallError>((la, lb, disc, send_a, send_b, hostile))
    };
    let (la, lb, disc, send_a, send_b, hostile) = match transport.await {
        Ok(s) => s,
        Err(e) => {
            log::error!("dsoftbusd: discovery transport unavailable ({e})");
            return Err(err("discovery transport", e));
        }
    };
    let nic = if lease {
        join_discovery_group(&net, disc).await
    } else {
        NicDiscovery::Off
    };
    log::info!(
        "dsoftbusd: discovery up (udp loopback) port={} nic={}",
        DISCOVERY_PORT,
        nic.name()
    );

    let seen = Seen::default();
    let nodes = [&a, &b, &impostor];
    let senders = [(&a, send_a), (&b, send_b)];
    let background = try_join3(
        discovery(&net, disc, &nodes, &seen, &|_, _| {}),
        announcer(&net, &senders, true, nic),
        try_join(acceptor(&net, &a, la, &seen), acceptor(&net, &b, lb, &seen)),
    );
    let script = proof(&net, &a, &b, &impostor, hostile, &seen, crash_after_session);
    let result = match select(pin!(script), pin!(background)).await {
        Either::Left((result, _)) => result,
        Either::Right((Err(e), _)) => Err(e),
        Either::Right((Ok(_), _)) => Err(ServiceError::new("background tasks ended")),
    };
    result
}

/// Size of the generated file node-a sends node-b over the transfer
/// protocol to measure the session's bulk throughput.
pub const BULK_BYTES: usize = 1024 * 1024;
/// TCP port of the same-boot plain baseline (never announced).
const PLAIN_PORT: u16 = 34570;

/// node-a sends node-b one generated 1 MiB file with `dsoftbus::transfer`:
/// offer, node-b's consent (`accept=any`) and inbox, data within node-b's
/// window, node-b's SHA-256 check, done. node-b announces `streams/1`, so by
/// the carrier rule (wire.md §12) the file goes on a stream of kind `0x40`:
/// that is the `bulk transfer` line. The time runs from the offer to
/// node-a's receipt of DONE, so it is delivery and verification, not
/// buffering. Then, in the same boot, the same file in session data
/// messages (the carrier towards a peer without streams; node-b takes both)
/// and the same bytes over a plain facade TCP connection (no session, no
/// transfer protocol, no hash), and the rates side by side.
async fn bulk(
    net: &NetClient,
    link: &mut Link,
    bindings: &Bindings<'_>,
    a: &Node,
    b: &Node,
) -> Result<(), ServiceError> {
    let on_stream = a
        .entry("node-b")
        .is_some_and(|e| dsoftbus::stream::peer_supports_streams(e.services()));
    // Session ping RTT idle, then while the first transfer runs.
    let mut idle = Vec::new();
    for _ in 0..IDLE_PINGS {
        idle.push(ping(link, bindings).await?.as_micros() as u64);
    }
    let mut busy = Vec::new();
    let (us, prep) = send_file(link, bindings, a, b, 1, on_stream, Some(&mut busy)).await?;
    let rate = kbs(us);
    log::info!(
        "dsoftbusd: bulk transfer {BULK_BYTES} bytes node-a->node-b in {us} us ({rate} KB/s guest time; dsoftbus::transfer over {}, window {} KiB, sha256 verified by node-b)",
        carrier(on_stream),
        crate::files::RX_WINDOW / 1024
    );
    log::info!(
        "dsoftbusd: figures ping idle median={}us under-bulk median={}us max={}us n={} (session ping/pong node-a->node-b, guest us, same boot; under bulk: one ping in flight at a time, at least {} ms apart, during the transfer over {})",
        median(&mut idle),
        median(&mut busy),
        busy.iter().max().copied().unwrap_or(0),
        busy.len(),
        BULK_PING_GAP.as_millis(),
        carrier(on_stream),
    );
    let (other, _) = send_file(link, bindings, a, b, 2, !on_stream, None).await?;
    let plain = kbs(plain_tcp_us(net).await?);
    let ratio = rate * 100 / plain.max(1);
    let other_ratio = kbs(other) * 100 / plain.max(1);
    log::info!(
        "dsoftbusd: figures bulk transfer={rate} plain-tcp={plain} ratio={}.{:02} {}={} {}-ratio={}.{:02} generate+sha256={prep}us (KB/s guest time, {BULK_BYTES} bytes each, same boot; transfer: {}; plain-tcp: facade TCP over loopback, no session, no hash; generate+sha256: node-a making the file and its hash before the offer, outside the transfer's time)",
        ratio / 100,
        ratio % 100,
        short(!on_stream),
        kbs(other),
        short(!on_stream),
        other_ratio / 100,
        other_ratio % 100,
        carrier(on_stream),
    );
    Ok(())
}

/// Session pings before the bulk transfer (the idle RTT).
const IDLE_PINGS: usize = 5;
/// Least time between two pings during the bulk transfer.
const BULK_PING_GAP: Duration = Duration::from_millis(5);

/// The median of `v` (0 when empty).
fn median(v: &mut [u64]) -> u64 {
    v.sort_unstable();
    v.get(v.len() / 2).copied().unwrap_or(0)
}

/// KB/s of `BULK_BYTES` in `us` microseconds.
fn kbs(us: u64) -> u128 {
    (BULK_BYTES as u128) * 1_000_000 / u128::from(us.max(1)) / 1000
}

fn carrier(on_stream: bool) -> &'static str {
    if on_stream {
        "a stream of kind 0x40"
    } else {
        "session data messages"
    }
}

fn short(on_stream: bool) -> &'static str {
    if on_stream {
        "stream"
    } else {
        "data-messages"
    }
}

/// One generated `BULK_BYTES` file node-a → node-b as transfer `id`, on a
/// stream or in data messages; checks that node-b's inbox holds exactly one
/// such file more. Guest microseconds from the offer to DONE, and of
/// making the file and its SHA-256 before the offer. With `rtts`, node-a
/// also pings node-b over the session while the transfer runs (one ping in
/// flight, [`BULK_PING_GAP`] apart) and pushes each RTT in guest us.
async fn send_file(
    link: &mut Link,
    bindings: &Bindings<'_>,
    a: &Node,
    b: &Node,
    id: u32,
    on_stream: bool,
    mut rtts: Option<&mut Vec<u64>>,
) -> Result<(u64, u64), ServiceError> {
    let inbox = b
        .files
        .as_ref()
        .ok_or_else(|| ServiceError::new("bulk: node-b has no inbox"))?;
    let before = inbox.inbox_usage();
    let prep = time::now();
    let mut o = Outgoing::generated(id, a.local.id(), b.local.id(), BULK_BYTES as u64)
        .map_err(|e| ServiceError::new(format!("bulk: {e}")))?;
    let prep = time::now().saturating_duration_since(prep).as_micros() as u64;
    let mut streams = on_stream.then(|| Streams::new(0, true, crate::link::now()));
    if let Some(s) = streams.as_mut() {
        o.set_stream(s.open().map_err(|e| err("bulk stream", e))?);
    }
    // node-a receives nothing: its side of the streams has no inbox.
    let none = Files::new(AcceptPolicy::None);
    let lg = RefCell::new(LogLimiter::default());
    let peer = b.local.id();
    o.start_clock();
    let mut out = Some(o);
    // Pings under bulk: the one in flight (nonce, sent), the last sent.
    let mut in_flight: Option<(u64, time::Instant)> = None;
    let mut last_ping: Option<time::Instant> = None;
    let mut ping_nonce = 0x5000_0000_0000_0000u64;
    let mut pace = Pace::default();
    let end = loop {
        if pace.step_due() {
            if let Some(s) = streams.as_mut() {
                s.service(&none, &mut out, &lg, crate::link::now())
                    .map_err(|e| err("bulk", e))?;
            }
            let Some(o) = out.as_mut() else {
                return Err(ServiceError::new("bulk: the transfer's stream was reset"));
            };
            let more = o
                .pump_step(link, streams.as_mut())
                .await
                .map_err(|e| err("bulk send", e))?;
            if let Some(end) = o.outcome() {
                break end;
            }
            pace.stepped(more);
            if rtts.is_some() && in_flight.is_none() {
                let now = time::now();
                if last_ping.is_none_or(|t| now.saturating_duration_since(t) >= BULK_PING_GAP) {
                    ping_nonce += 1;
                    // Written behind what the session holds: by the next
                    // steps, or by next_event's flush.
                    link.conn
                        .send_ping(ping_nonce)
                        .map_err(|e| err("ping under bulk", e))?;
                    in_flight = Some((ping_nonce, now));
                    last_ping = Some(now);
                }
            }
        }
        // More to send: only the events that are ready, then the next step;
        // otherwise wait for one (an acknowledgement opens the window).
        let next = if pace.more() {
            match link.ready_event(bindings, &mut pace).await {
                Some(r) => r,
                None => continue,
            }
        } else {
            link.next_event(bindings).await
        };
        match next {
            Ok(Event::Data(d)) if d.first() == Some(&dsoftbus::stream::KIND_STREAM) => {
                if let Some(s) = streams.as_mut() {
                    s.handle(&d, &none, peer, &mut out, &lg, crate::link::now())
                        .map_err(|e| err("bulk", e))?;
                }
            }
            Ok(Event::Data(d)) => {
                if let Some(o) = out.as_mut() {
                    o.handle(&d);
                }
            }
            Ok(Event::Pong(n)) => {
                if let (Some((nonce, sent)), Some(r)) = (in_flight, rtts.as_deref_mut()) {
                    if n == nonce {
                        r.push(time::now().saturating_duration_since(sent).as_micros() as u64);
                        in_flight = None;
                    }
                }
            }
            Ok(Event::Ping(_)) => {}
            Ok(other) => {
                return Err(ServiceError::new(format!(
                    "bulk: unexpected event {other:?}"
                )))
            }
            Err(e) => return Err(err("bulk", e)),
        }
    };
    let us = out.as_ref().map_or(1, Outgoing::elapsed_us);
    // Close our half of the stream (node-b closes its own).
    out = None;
    if let Some(s) = streams.as_mut() {
        s.service(&none, &mut out, &lg, crate::link::now())
            .map_err(|e| err("bulk", e))?;
        while s.pull(&mut link.conn).map_err(|e| err("bulk", e))? > 0 {
            link.flush().await.map_err(|e| err("bulk", e))?;
        }
    }
    if end != Outcome::Done {
        return Err(ServiceError::new(format!(
            "bulk: transfer over {} ended {end:?}",
            carrier(on_stream)
        )));
    }
    let after = inbox.inbox_usage();
    if (after.0, after.1) != (before.0 + 1, before.1 + BULK_BYTES as u64) {
        return Err(ServiceError::new(format!(
            "bulk: node-b's inbox went from {before:?} to {after:?}, not one {BULK_BYTES}-byte file more"
        )));
    }
    Ok((us, prep))
}

/// Guest microseconds to move `BULK_BYTES` over a plain facade TCP
/// connection on loopback: the writer sends them in transfer-sized writes,
/// the reader reads them all and answers one byte; the clock stops when the
/// writer has that byte.
async fn plain_tcp_us(net: &NetClient) -> Result<u64, ServiceError> {
    let any = SockAddr::new(Ipv4::UNSPECIFIED, PLAIN_PORT);
    let (listener, _) = net
        .tcp_listen(any, 1)
        .await
        .map_err(|e| err("plain tcp listen", e))?;
    let reader = async {
        let (s, _, _) = net.tcp_accept(listener).await?;
        let mut got = 0;
        while got < BULK_BYTES {
            let d = net.tcp_read(s, crate::link::READ_CHUNK).await?;
            if d.is_empty() {
                break;
            }
            got += d.len();
        }
        net.tcp_write_all(s, &[1]).await?;
        Ok::<_, nexus_netclient::CallError>((s, got))
    };
    let writer = async {
        let (s, _, _) = net
            .tcp_connect(SockAddr::new(Ipv4::LOCALHOST, PLAIN_PORT))
            .await?;
        let mut chunk = vec![0u8; dsoftbus::transfer::wire::MAX_CHUNK];
        crate::files::generate(1, 0, &mut chunk);
        let start = time::now();
        let mut sent = 0;
        while sent < BULK_BYTES {
            let n = (BULK_BYTES - sent).min(chunk.len());
            net.tcp_write_all(s, &chunk[..n]).await?;
            sent += n;
        }
        let ack = net.tcp_read(s, 1).await?;
        let us = time::now().saturating_duration_since(start).as_micros() as u64;
        Ok((s, ack.len(), us.max(1)))
    };
    let result = try_join(reader, writer).await;
    let _ = net.close(listener).await;
    let ((r, got), (w, acked, us)) = result.map_err(|e| err("plain tcp", e))?;
    let _ = net.close(r).await;
    let _ = net.close(w).await;
    if got != BULK_BYTES || acked != 1 {
        return Err(ServiceError::new(format!(
            "plain tcp: {got} of {BULK_BYTES} bytes arrived"
        )));
    }
    Ok(us)
}

/// The proof, step by step. Each step waits (bounded) for the real event.
async fn proof(
    net: &NetClient,
    a: &Node,
    b: &Node,
    impostor: &Node,
    hostile: SocketId,
    seen: &Seen,
    crash_after_session: bool,
) -> Result<(), ServiceError> {
    // Discovery-driven connect: the target comes from node-a's peer table.
    // node-a dials only once its own announce is out, so node-b can bind the
    // id node-a will claim (it refuses ids it has never seen).
    wait_for("node-a's first announce", || {
        (a.announced.get() > 0).then_some(())
    })
    .await?;
    let entry = wait_for("node-a to discover node-b", || a.entry("node-b")).await?;
    if !should_initiate(a.local.id(), entry.device_id()) {
        return Err(ServiceError::new(
            "tie-break says node-b dials; node-a would not",
        ));
    }
    let target = sock_addr(entry.session_addr())?;
    log::info!(
        "dsoftbusd: session connect peer={} addr={}",
        entry.device_id(),
        target
    );
    let mut link = dial(net, a, &entry, target).await?;
    let bindings = Bindings::of(a);
    let peer = match link.next_event(&bindings).await {
        Ok(Event::Established { peer }) => {
            // Initiator side of the binding: the handshake authenticated the
            // key from node-b's announce and node-b's hello named node-b.
            log::info!("dsoftbusd: identity bound peer={} node={}", peer, a.label);
            peer
        }
        Ok(other) => {
            return Err(ServiceError::new(format!(
                "unexpected first event {other:?}"
            )))
        }
        Err(e) => return Err(err("session with node-b", e)),
    };
    // XK completes on the dialling side before node-b has judged message 3:
    // node-a's session is authenticated once node-b's first reply (the pong)
    // opens under the session keys.
    let rtt = ping(&mut link, &bindings).await?;
    a.table.borrow_mut().set_session(&peer, true);
    log::info!("dsoftbusd: auth ok peer={} node={}", peer, a.label);
    log::info!(
        "dsoftbusd: dual-node session ok peer=node-b rtt={}us",
        rtt.as_micros()
    );
    if crash_after_session {
        log::info!("dsoftbusd: crashing on purpose (dsoftbusd.crash=after-session)");
        // SAFETY: none: this read must fault (nothing is mapped below 1 GiB).
        let v = unsafe { core::ptr::read_volatile(0x1000 as *const u64) };
        return Err(ServiceError::new(format!(
            "the deliberate fault did not fault ({v:#x})"
        )));
    }
    bulk(net, &mut link, &bindings, a, b).await?;

    // Negative proof 1: an impostor with its own key claims to be node-a.
    let before = seen.mismatches.get();
    let b_seen_by_impostor = wait_for("the impostor to discover node-b", || {
        impostor.entry("node-b")
    })
    .await?;
    let addr = sock_addr(b_seen_by_impostor.session_addr())?;
    log::info!("dsoftbusd: impostor (own key, claims node-a) connecting to node-b at {addr}");
    let mut fake = dial(net, impostor, &b_seen_by_impostor, addr).await?;
    let fake_bindings = Bindings::of(impostor);
    // XK lets the initiator finish first; node-b decides on message 3. The
    // impostor must then see its stream end without a single byte of data.
    let outcome = loop {
        match fake.next_event(&fake_bindings).await {
            Ok(Event::Established { .. }) => continue,
            Ok(other) => break Err(format!("impostor got {other:?}")),
            Err(e) => break Ok(e),
        }
    };
    let end = outcome.map_err(ServiceError::new)?;
    wait_for("node-b to refuse the impostor", || {
        (seen.mismatches.get() > before).then_some(())
    })
    .await?;
    log::info!("dsoftbusd: impostor refused, its stream ended ({end})");
    fake.shutdown().await;

    // Negative proof 2: hostile datagrams at the discovery port.
    let disc = SockAddr::new(Ipv4::LOCALHOST, DISCOVERY_PORT);
    let a_key_before = a.entry("node-b").map(|e| *e.static_key());
    let peers_before = (a.table.borrow().len(), b.table.borrow().len());

    let m = seen.malformed.get();
    send(net, hostile, disc, b"NXSB\x01\x40truncated announce").await?;
    wait_for("the malformed announce to be ignored", || {
        (seen.malformed.get() > m).then_some(())
    })
    .await?;

    let o = seen.oversized.get();
    send(net, hostile, disc, &[0x5a; MAX_ANNOUNCE_LEN + 1]).await?;
    wait_for("the oversized announce to be ignored", || {
        (seen.oversized.get() > o).then_some(())
    })
    .await?;

    let k = seen.key_conflicts.get();
    let rebind = Node::new("rebinder", NODE_B, false, None)?;
    send(net, hostile, disc, &rebind.announce).await?;
    wait_for("the re-binding of node-b to be refused", || {
        (seen.key_conflicts.get() > k).then_some(())
    })
    .await?;

    // Nothing else changed: same pinned key, same peers, and the session lives.
    if a.entry("node-b").map(|e| *e.static_key()) != a_key_before {
        return Err(ServiceError::new(
            "node-b's pinned key changed after hostile input",
        ));
    }
    if (a.table.borrow().len(), b.table.borrow().len()) != peers_before {
        return Err(ServiceError::new("peer tables changed after hostile input"));
    }
    let rtt = ping(&mut link, &bindings).await?;
    log::info!(
        "dsoftbusd: session still ok after hostile input rtt={}us",
        rtt.as_micros()
    );

    link.conn.close().map_err(|e| err("close", e))?;
    link.flush().await.map_err(|e| err("close", e))?;
    link.shutdown().await;
    a.table.borrow_mut().set_session(b.local.id(), false);
    handshake_figures(a, b, impostor)?;
    let stats = *a.table.borrow().stats();
    log::info!(
        "dsoftbusd: dual-node proof complete (node-a table: {} inserted, {} duplicates, {} key conflicts, {} malformed, {} oversized)",
        stats.inserted,
        stats.duplicates,
        stats.key_conflicts,
        stats.malformed,
        stats.oversized
    );
    Ok(())
}

/// Trusts one key for any id (the figures' in-memory handshakes).
struct Trust(dsoftbus::PublicKey);

impl dsoftbus::handshake::IdentityBindings for Trust {
    fn bound_key(&self, _id: &dsoftbus::DeviceId) -> Option<dsoftbus::PublicKey> {
        Some(self.0)
    }
}

/// Paired rounds per figure (each round: one handshake of each kind).
const FIGURE_ROUNDS: u32 = 8;

/// Guest time in microseconds of `n` complete in-memory XK handshakes (both
/// sides in this process) from `from` to `to`.
fn handshakes_us(from: &Node, to: &Node, n: u32) -> Result<u64, ServiceError> {
    use dsoftbus::handshake::{HandshakeConfig, Initiator, PeerTarget, Responder};
    let cfg = HandshakeConfig::default();
    let target = PeerTarget {
        id: to.local.id().clone(),
        key: *to.local.public_key(),
    };
    let bindings = Trust(*from.local.public_key());
    let start = time::now();
    for _ in 0..n {
        let mut rng = crate::rng::KernelRng::draw().map_err(|e| err("entropy", e))?;
        let t = crate::link::now();
        let (init, f1) = Initiator::start(&from.local, target.clone(), &mut rng, t, &cfg)
            .map_err(|e| err("figure handshake", e))?;
        let (resp, f2) = Responder::accept(&to.local, &f1, &mut rng, t, &cfg)
            .map_err(|e| err("figure handshake", e))?;
        let (_, f3) = init
            .read_frame2(&f2, t)
            .map_err(|e| err("figure handshake", e))?;
        resp.read_frame3(&f3, t, &bindings)
            .map_err(|e| err("figure handshake", e))?;
    }
    Ok(time::now().saturating_duration_since(start).as_micros() as u64)
}

/// docs/performance.md: what it costs that node-a's static key lives in
/// keystored. Same boot, same handshake, both sides here: node-b dials
/// node-a (node-a's static-key DH goes to keystored over IPC: one call per
/// handshake) against node-b dialling the impostor (all in-process).
/// The two kinds alternate round by round, so load on the (TCG) host hits
/// both alike; the means are reported.
fn handshake_figures(a: &Node, b: &Node, impostor: &Node) -> Result<(), ServiceError> {
    let (mut in_process, mut held) = (0, 0);
    for _ in 0..FIGURE_ROUNDS {
        in_process += handshakes_us(b, impostor, 1)?;
        held += handshakes_us(b, a, 1)?;
    }
    let (in_process, held) = (
        in_process / u64::from(FIGURE_ROUNDS),
        held / u64::from(FIGURE_ROUNDS),
    );
    log::info!(
        "dsoftbusd: figures handshake in-process={in_process}us node-a-key-in-keystored={held}us ({FIGURE_ROUNDS} paired rounds, same boot{})",
        if a.local.keys().is_none() { "" } else { "; no key service: both in-process" }
    );
    Ok(())
}
