//! End-to-end proofs against `netstackd`, through the sockets facade only.
//!
//! 1. Wait (bounded) until DHCP configured the interface.
//! 2. Ping the gateway the lease named (10.0.2.2 under QEMU usernet):
//!    `SELFTEST: icmp ping ok` with the RTT, or `SELFTEST: icmp ping FAIL
//!    <reason>` and the remaining proofs are skipped.
//!
//! On a link without a DHCP server netstackd falls back to an RFC 3927
//! link-local address, which has no gateway: there is nothing to ping, so the
//! proof says `SELFTEST: icmp ping skipped (link-local ...)` and ends without
//! claiming anything (the soft bus then starts as usual).
#![no_std]

extern crate alloc;

use alloc::boxed::Box;
use alloc::format;
use core::future::{poll_fn, Future};
use core::pin::Pin;
use core::task::Poll;
use core::time::Duration;

use nexus_abi::time;
use nexus_abi::{Caps, Channel, ServiceError, ServiceFuture};
use nexus_netclient::{CallError, NetClient};

/// How long to wait for the DHCP lease.
pub const LEASE_WAIT: Duration = Duration::from_secs(20);
/// How often to look at the interface while waiting.
pub const LEASE_POLL: Duration = Duration::from_millis(10);
/// Ping timeout (covers ARP resolution and retries).
pub const PING_TIMEOUT_MS: u32 = 5_000;

/// Entry point in the init table.
pub fn main(caps: Caps) -> ServiceFuture {
    Box::pin(run(caps))
}

fn fail(reason: &str) -> ServiceError {
    log::error!("SELFTEST: icmp ping FAIL {reason}");
    ServiceError::new(format!("icmp ping: {reason}"))
}

async fn run(mut caps: Caps) -> Result<(), ServiceError> {
    let chan = caps
        .take_channel("net")
        .ok_or_else(|| ServiceError::new("no netstackd channel granted"))?;
    // Where init delivers a new channel if netstackd is restarted.
    let init = caps.take_channel("init");
    let mut net = NetClient::new(chan);
    let give_up = time::now().saturating_add(LEASE_WAIT);
    loop {
        match prove(&net, give_up).await {
            Ok(()) => return Ok(()),
            // The daemon is gone (killed, restarting): say so, wait for init
            // to hand us a channel to the new one, and start over.
            Err(Failed::Call(CallError::Ipc(e))) => {
                log::info!(
                    "selftest-client: netstackd connection lost ({e}); waiting for a new channel"
                );
                let chan = new_channel(init.as_ref(), give_up).await?;
                log::info!("selftest-client: reconnected to netstackd (channel granted by init)");
                net = NetClient::new(chan);
            }
            Err(Failed::Call(e)) => return Err(fail(&format!("{e}"))),
            Err(Failed::NoLease) => return Err(fail("no DHCP lease with a gateway")),
            Err(Failed::Ping(gw, e)) => return Err(fail(&format!("gw={gw}: {e}"))),
        }
    }
}

enum Failed {
    Call(CallError),
    NoLease,
    Ping(nexus_netclient::Ipv4, CallError),
}

/// Wait for the lease and ping its gateway.
async fn prove(net: &NetClient, give_up: time::Instant) -> Result<(), Failed> {
    let gateway = loop {
        let status = net.status().await.map_err(Failed::Call)?;
        if let (Some(_), Some(gw)) = (status.ipv4, status.gateway) {
            break gw;
        }
        if let (Some(ip), true) = (status.ipv4, status.link_local) {
            log::info!(
                "SELFTEST: icmp ping skipped (link-local {}/{}, no gateway to ping)",
                ip.addr,
                ip.prefix_len
            );
            return Ok(());
        }
        if time::now() >= give_up {
            return Err(Failed::NoLease);
        }
        time::sleep(LEASE_POLL).await;
    };
    match net.ping(gateway, PING_TIMEOUT_MS).await {
        Ok(rtt_us) => {
            log::info!("SELFTEST: icmp ping ok gw={gateway} rtt={rtt_us}us");
            Ok(())
        }
        Err(e @ CallError::Ipc(_)) => Err(Failed::Call(e)),
        Err(e) => Err(Failed::Ping(gateway, e)),
    }
}

/// The `net` channel init grants after netstackd restarted.
async fn new_channel(
    init: Option<&Channel>,
    give_up: time::Instant,
) -> Result<Channel, ServiceError> {
    let init = init.ok_or_else(|| fail("netstackd gone and no init channel to wait on"))?;
    let mut deadline = time::sleep_until(give_up);
    loop {
        let msg = poll_fn(|cx| {
            if let Poll::Ready(m) = init.poll_recv(cx) {
                return Poll::Ready(Some(m));
            }
            Pin::new(&mut deadline).poll(cx).map(|()| None)
        })
        .await;
        match msg {
            None => return Err(fail("netstackd did not come back")),
            Some(Err(e)) => return Err(fail(&format!("init channel: {e}"))),
            Some(Ok(bytes)) => {
                let grants = Caps::decode_grant(&bytes).unwrap_or_default();
                if let Some((_, chan)) = grants.into_iter().find(|(role, _)| *role == "net") {
                    return Ok(chan);
                }
            }
        }
    }
}
