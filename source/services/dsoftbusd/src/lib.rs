//! `dsoftbusd`: the soft-bus daemon.
//!
//! Wiring only: sockets come from `netstackd` through the facade (this
//! service holds no device and no MMIO), protocol logic from the `dsoftbus`
//! core, keys from the kernel's entropy. See docs/distributed/dsoftbus-os.md.
//!
//! Modes (boot option `dsoftbusd.mode`):
//! - `dual-node`: the in-VM proof (see [`dual`]); the service ends when the
//!   proof is complete.
//! - `node`: one node on the NIC joining a bus with other machines (see
//!   [`single`]); runs until an unrecoverable error.
//! - anything else: not a mode; the daemon says so and ends without claiming
//!   anything.
#![no_std]

extern crate alloc;

mod dual;
mod link;
mod node;
mod rng;
mod single;

use alloc::boxed::Box;

use nexus_abi::{Caps, ServiceError, ServiceFuture};
use nexus_netclient::NetClient;

/// Entry point in the init table.
pub fn main(caps: Caps) -> ServiceFuture {
    Box::pin(run(caps))
}

async fn run(mut caps: Caps) -> Result<(), ServiceError> {
    let chan = caps
        .take_channel("net")
        .ok_or_else(|| ServiceError::new("no netstackd channel granted"))?;
    if !caps.has_entropy() {
        return Err(ServiceError::new("no entropy granted: cannot make keys"));
    }
    let net = NetClient::new(chan);
    match caps.config("mode") {
        Some("dual-node") => {
            // `dsoftbusd.crash=after-session` (first start only): fault on
            // purpose after the first session, so test-all can prove the
            // kill-and-restart path (init restarts dsoftbusd).
            let crash =
                caps.config("crash") == Some("after-session") && caps.config("restart").is_none();
            dual::run(net, crash).await
        }
        Some("node") => {
            let id = caps.config("id").unwrap_or(single::DEFAULT_ID);
            let port = match caps.config("port").map(str::parse::<u16>) {
                None => single::DEFAULT_PORT,
                Some(Ok(p)) if p != 0 => p,
                Some(_) => return Err(ServiceError::new("dsoftbusd.port must be 1..=65535")),
            };
            single::run(net, id, port).await
        }
        other => {
            log::info!(
                "dsoftbusd: mode {} unsupported (modes: dual-node, node); not starting",
                other.unwrap_or("(none)")
            );
            Ok(())
        }
    }
}
