//! `dsoftbusd`: the soft-bus daemon.
//!
//! Wiring only: sockets come from `netstackd` through the facade (this
//! service holds no device and no MMIO), protocol logic from the `dsoftbus`
//! core, keys from the kernel's entropy. See docs/distributed/dsoftbus-os.md.
//!
//! Modes (boot option `dsoftbusd.mode`):
//! - `dual-node`: the in-VM proof (see [`dual`]); the service ends when the
//!   proof is complete.
//! - anything else: not implemented yet; the daemon says so (`placeholder`)
//!   and ends without claiming anything.
#![no_std]

extern crate alloc;

mod dual;
mod link;
mod rng;

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
        Some("dual-node") => dual::run(net).await,
        other => {
            log::info!(
                "dsoftbusd: mode {} is a placeholder: only dsoftbusd.mode=dual-node is implemented",
                other.unwrap_or("(none)")
            );
            Ok(())
        }
    }
}
