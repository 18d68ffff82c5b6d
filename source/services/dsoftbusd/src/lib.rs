//! `dsoftbusd`: the soft-bus daemon.
//!
//! Wiring only: sockets come from `netstackd` through the facade (this
//! service holds no device and no MMIO), protocol logic from the `dsoftbus`
//! core. The device's identity key lives in `keystored`: this process only
//! learns its public half and asks keystored for every Diffie-Hellman with it
//! (`nexus-keyclient`); the other nodes of the dual-node proof make their
//! keys here from the kernel's entropy. See docs/distributed/dsoftbus-os.md.
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
mod files;
#[cfg(test)]
mod fixtures;
mod link;
mod node;
mod pins;
mod remote;
mod rng;
mod single;
mod streams;

use alloc::boxed::Box;
use alloc::format;
use alloc::sync::Arc;

use dsoftbus::{PublicKey, StaticDh};
use nexus_abi::{Caps, ServiceError, ServiceFuture};
use nexus_keyclient::{KeyClient, KeyError};
use nexus_netclient::NetClient;
use nexus_samgrclient::SamgrClient;

/// The device's identity: its public key and the key service that holds
/// the secret.
#[derive(Clone)]
pub(crate) struct DeviceKey {
    pub(crate) public: PublicKey,
    pub(crate) dh: Arc<dyn StaticDh>,
    /// The same client, for the pins keystored keeps (node mode).
    pub(crate) client: Arc<KeyClient>,
}

/// Ask keystored for the device's public key. No key service granted: the
/// nodes make their keys in-process (said once). keystored refusing (its
/// store is corrupt): no session at all.
async fn device_key(caps: &mut Caps) -> Result<Option<DeviceKey>, ServiceError> {
    let Some(chan) = caps.take_channel("keys") else {
        log::warn!(
            "dsoftbusd: no key service granted; node keys are made in-process for this boot"
        );
        return Ok(None);
    };
    let client = KeyClient::new(chan);
    match client.public_key().await {
        Ok(public) => {
            let fp: alloc::string::String = public.as_bytes()[..8]
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            log::info!(
                "dsoftbusd: device identity from keystored key={fp} (static-key DH done by keystored)"
            );
            let client = Arc::new(client);
            Ok(Some(DeviceKey {
                public,
                dh: client.clone(),
                client,
            }))
        }
        Err(KeyError::Refused) => {
            log::error!("dsoftbusd: keystored refuses (no usable identity); no session");
            Err(ServiceError::new("keystored has no usable identity"))
        }
        Err(e) => Err(ServiceError::new(format!("key service: {e}"))),
    }
}

/// Register with samgrd as `dsoftbusd` (the service registry; remote calls
/// are forwarded there). No registry granted, or it refuses: said once, and
/// remote calls are answered `unavailable`.
async fn register(caps: &mut Caps) -> Option<SamgrClient> {
    let Some((client, r)) = nexus_samgrclient::connect_and_register(caps, "soft bus daemon").await
    else {
        log::warn!("dsoftbusd: no service registry granted; remote calls answer unavailable");
        return None;
    };
    match r {
        Ok(()) => log::info!("dsoftbusd: registered with samgrd as {}", caps.name()),
        Err(e) => log::warn!("dsoftbusd: samgrd registration refused ({e})"),
    }
    Some(client)
}

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
    let key = device_key(&mut caps).await?;
    let samgr = register(&mut caps).await;
    match caps.config("mode") {
        Some("dual-node") => {
            // `dsoftbusd.crash=after-session` (first start only): fault on
            // purpose after the first session, so test-all can prove the
            // kill-and-restart path (init restarts dsoftbusd).
            let crash =
                caps.config("crash") == Some("after-session") && caps.config("restart").is_none();
            dual::run(net, crash, key).await
        }
        Some("node") => {
            let id = caps.config("id").unwrap_or(single::DEFAULT_ID);
            let port = match caps.config("port").map(str::parse::<u16>) {
                None => single::DEFAULT_PORT,
                Some(Ok(p)) if p != 0 => p,
                Some(_) => return Err(ServiceError::new("dsoftbusd.port must be 1..=65535")),
            };
            let remote = remote::Remote::new(
                caps.config("remote_acl"),
                caps.config("resolve"),
                caps.config("call"),
                samgr,
            );
            let (policy, why) = files::parse_accept(caps.config("accept"));
            if let Some(why) = why {
                log::warn!("dsoftbusd: {why}");
            }
            let transfers = files::Files::new(policy);
            let streams = match caps.config("streams") {
                None | Some("on") => true,
                Some("off") => false,
                Some(other) => {
                    log::warn!("dsoftbusd: dsoftbusd.streams={other} is not on|off; on");
                    true
                }
            };
            log::info!(
                "dsoftbusd: file transfer: accept={policy} (no user pins on an OS node), inbox {} bytes / {} files in memory, {} transfers in progress ({} per peer), carrier {}",
                files::INBOX_MAX_BYTES,
                files::INBOX_MAX_FILES,
                files::MAX_ACTIVE,
                files::MAX_ACTIVE_PER_PEER,
                if streams {
                    "a stream to peers announcing streams/1 (announced here), else session data messages"
                } else {
                    "session data messages (dsoftbusd.streams=off: streams/1 not announced)"
                }
            );
            if let Some(opt) = caps.config("send") {
                match files::parse_send(opt) {
                    Ok((to, bytes)) => {
                        log::info!(
                            "dsoftbusd: file send planned to={to} bytes={bytes} (a generated file, sent once a session with {to} is up)"
                        );
                        transfers.plan_send(to, bytes);
                    }
                    Err(e) => log::warn!("dsoftbusd: dsoftbusd.send refused: {e}; nothing is sent"),
                }
            }
            single::run(net, id, port, key, remote, transfers, streams).await
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
