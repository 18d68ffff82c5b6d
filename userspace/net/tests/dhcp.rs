//! DHCP flow against the in-memory test server: lease → configure, event
//! values, renewal with a short lease, expiry when the server goes silent.

mod common;

use common::{Bench, LeasePlan, ENGINE_MAC};
use nexus_net::smoltcp::time::Duration;
use nexus_net::smoltcp::wire::{Ipv4Address, Ipv4Cidr};
use nexus_net::{ClientId, EngineConfig, Ipv4, NetEvent, Request, Response};

fn bound_events(events: &[NetEvent]) -> usize {
    events
        .iter()
        .filter(|e| matches!(e, NetEvent::DhcpBound(_)))
        .count()
}

#[test]
fn lease_configures_nic_with_values_from_the_lease() {
    // Link-local fallback off: this test is about DHCP alone (the fallback
    // has its own tests in tests/linklocal.rs).
    let config = EngineConfig {
        link_local: None,
        ..EngineConfig::new(ENGINE_MAC, 0x1234_5678_9abc_def0)
    };
    let mut b = Bench::with_config(LeasePlan::ten_nine(), config);
    // Before any lease the NIC is unconfigured, and smoltcp's initial
    // `Deconfigured` is neither an error nor an event.
    b.peer.dhcp.answering = false;
    b.run_for(Duration::from_secs(15));
    assert!(b.engine.lease().is_none());
    assert!(b.peer.dhcp.stats.discovers >= 2, "{:?}", b.peer.dhcp.stats);
    assert!(b.events.is_empty(), "{:?}", b.events);
    b.peer.dhcp.answering = true;

    let lease = b.bind();
    assert_eq!(
        lease.address,
        Ipv4Cidr::new(Ipv4Address::new(10, 9, 0, 50), 24)
    );
    assert_eq!(lease.gateway, Some(Ipv4Address::new(10, 9, 0, 1)));
    assert_eq!(lease.dns, vec![Ipv4Address::new(10, 9, 0, 3)]);
    assert_eq!(lease.server, Ipv4Address::new(10, 9, 0, 1));

    // Exactly one event, carrying the same values (the daemon prints the
    // `net: dhcp bound 10.9.0.50/24 gw=10.9.0.1` marker from it).
    assert_eq!(b.events.len(), 1, "{:?}", b.events);
    let NetEvent::DhcpBound(ev) = &b.events[0] else {
        panic!("expected DhcpBound, got {:?}", b.events[0]);
    };
    assert_eq!(ev, &lease);
    let marker = format!(
        "net: dhcp bound {}/{} gw={}",
        ev.address.address(),
        ev.address.prefix_len(),
        ev.gateway.expect("gw")
    );
    assert_eq!(marker, "net: dhcp bound 10.9.0.50/24 gw=10.9.0.1");

    // The facade reports the same configuration.
    let c = ClientId(1);
    let Response::Status(st) = b.call(c, Request::InterfaceStatus) else {
        panic!("status");
    };
    assert_eq!(st.mac, ENGINE_MAC);
    let cidr = st.ipv4.expect("configured");
    assert_eq!(cidr.addr, Ipv4::new(10, 9, 0, 50));
    assert_eq!(cidr.prefix_len, 24);
    assert_eq!(st.gateway, Some(Ipv4::new(10, 9, 0, 1)));
    assert_eq!(st.dns, vec![Ipv4::new(10, 9, 0, 3)]);
    assert_eq!(st.loopback.addr, Ipv4::LOCALHOST);
    assert_eq!(st.loopback.prefix_len, 8);
}

#[test]
fn other_subnet_lease_is_reported_verbatim() {
    let plan = LeasePlan {
        server: Ipv4Address::new(192, 168, 77, 254),
        client: Ipv4Address::new(192, 168, 77, 9),
        netmask: Ipv4Address::new(255, 255, 252, 0),
        router: Some(Ipv4Address::new(192, 168, 77, 254)),
        dns: vec![],
        lease_secs: 600,
    };
    let mut b = Bench::new(plan);
    let lease = b.bind();
    assert_eq!(lease.address.address(), Ipv4Address::new(192, 168, 77, 9));
    assert_eq!(lease.address.prefix_len(), 22);
    assert_eq!(lease.gateway, Some(Ipv4Address::new(192, 168, 77, 254)));
    assert!(lease.dns.is_empty());
}

#[test]
fn renewal_keeps_the_lease_with_a_short_lease_time() {
    // The server offers an hour; the engine caps it at 20 s
    // (smoltcp's set_max_lease_duration), so T1 is at 10 s.
    let mut cfg = EngineConfig::new(ENGINE_MAC, 7);
    cfg.dhcp_max_lease = Some(Duration::from_secs(20));
    let mut b = Bench::with_config(LeasePlan::ten_nine(), cfg);
    b.bind();
    let before = b.peer.dhcp.stats;
    assert_eq!(before.renewals, 0);

    // Five minutes: far past several lease lifetimes.
    b.run_for(Duration::from_secs(300));
    let after = b.peer.dhcp.stats;
    assert!(
        after.renewals >= 5,
        "expected repeated renewals, server saw {after:?}"
    );
    assert!(after.acks > before.acks);
    assert!(b.engine.lease().is_some(), "lease lost despite renewals");
    assert_eq!(bound_events(&b.events), 1);
    assert!(
        !b.events
            .iter()
            .any(|e| matches!(e, NetEvent::DhcpDeconfigured)),
        "{:?}",
        b.events
    );
}

#[test]
fn renewal_follows_server_lease_time() {
    // No cap on the client: the server's 30 s lease drives the timers.
    let mut plan = LeasePlan::ten_nine();
    plan.lease_secs = 30;
    let mut b = Bench::new(plan);
    b.bind();
    let t0 = b.now;
    // T1 = 15 s: no renewal before it...
    b.run_for(Duration::from_secs(14));
    assert_eq!(b.peer.dhcp.stats.renewals, 0);
    // ...one right after it.
    b.run_for(Duration::from_secs(2));
    assert_eq!(b.peer.dhcp.stats.renewals, 1, "at {:?}", b.now - t0);
    b.run_for(Duration::from_secs(120));
    assert!(b.engine.lease().is_some());
}

#[test]
fn lease_expiry_deconfigures_and_a_returning_server_rebinds() {
    let mut plan = LeasePlan::ten_nine();
    plan.lease_secs = 40;
    let mut b = Bench::new(plan);
    b.bind();
    let c = ClientId(1);

    // The server goes silent: renew (T1 = 20 s), rebind (T2 = 35 s) and
    // expiry (40 s) follow.
    b.peer.dhcp.answering = false;
    b.run_for(Duration::from_secs(39));
    assert!(b.engine.lease().is_some(), "deconfigured before expiry");
    b.run_for(Duration::from_secs(2));
    assert!(b.engine.lease().is_none(), "lease survived expiry");
    assert_eq!(b.events.last(), Some(&NetEvent::DhcpDeconfigured));
    assert!(b.peer.dhcp.stats.renewals >= 2, "{:?}", b.peer.dhcp.stats);

    // Deconfigured means unconfigured everywhere.
    let Response::Status(st) = b.call(c, Request::InterfaceStatus) else {
        panic!("status");
    };
    assert_eq!(st.ipv4, None);
    assert_eq!(st.gateway, None);
    assert_eq!(
        b.call(
            c,
            Request::Ping {
                target: Ipv4::new(10, 9, 0, 1),
                timeout_ms: 1000
            }
        ),
        Response::Error(nexus_net::Error::NotConfigured)
    );

    // The server comes back: discovery starts over and binds again.
    b.peer.dhcp.answering = true;
    let ok = b.run_until(Duration::from_secs(60), |b| b.engine.lease().is_some());
    assert!(ok, "no new lease after the server returned");
    assert_eq!(bound_events(&b.events), 2);
}

#[test]
fn idle_engine_sleeps_until_the_next_dhcp_timer() {
    let mut b = Bench::new(LeasePlan::ten_nine());
    b.bind();
    b.settle();
    let at = b.engine.poll_at(b.now).expect("DHCP renewal timer");
    // Lease 3600 s → T1 at 1800 s: nothing to do much sooner than that.
    assert!(
        at > b.now + Duration::from_secs(1000),
        "{at:?} vs {:?}",
        b.now
    );
}
