//! End-to-end proofs against `netstackd`, through the sockets facade only.
//!
//! 1. Wait (bounded) until DHCP configured the interface.
//! 2. Ping the gateway the lease named (10.0.2.2 under QEMU usernet):
//!    `SELFTEST: icmp ping ok` with the RTT, or `SELFTEST: icmp ping FAIL
//!    <reason>` and the remaining proofs are skipped.
#![no_std]

extern crate alloc;

use alloc::boxed::Box;
use alloc::format;
use core::time::Duration;

use nexus_abi::time;
use nexus_abi::{Caps, ServiceError, ServiceFuture};
use nexus_netclient::NetClient;

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
    let net = NetClient::new(chan);

    let give_up = time::now().saturating_add(LEASE_WAIT);
    let gateway = loop {
        let status = net
            .status()
            .await
            .map_err(|e| fail(&format!("status: {e}")))?;
        if let (Some(_), Some(gw)) = (status.ipv4, status.gateway) {
            break gw;
        }
        if time::now() >= give_up {
            return Err(fail("no DHCP lease with a gateway"));
        }
        time::sleep(LEASE_POLL).await;
    };
    match net.ping(gateway, PING_TIMEOUT_MS).await {
        Ok(rtt_us) => {
            log::info!("SELFTEST: icmp ping ok gw={gateway} rtt={rtt_us}us");
            Ok(())
        }
        Err(e) => Err(fail(&format!("gw={gateway}: {e}"))),
    }
}
