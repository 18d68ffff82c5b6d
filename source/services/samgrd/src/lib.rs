//! samgrd: the OS's service registry (after OpenHarmony's system ability
//! manager, kept minimal).
//!
//! Services register their names at start over IPC; `resolve(name)` answers
//! whether a name is registered, with its short info string. The table and
//! the protocol are `nexus-samgrclient` (`Registry`: at most
//! `MAX_SERVICES` = 32 names, info at most 64 bytes, decoding total).
//!
//! At start samgrd registers itself as `samgr` and the demo service `echo`
//! (both served here), and prints `samgrd: up (services: samgr, echo; at most
//! 32 names)`; each registration over IPC prints `samgrd: registered <name>
//! (<n> of at most 32 names)`.
//! Its one client is dsoftbusd (`client:dsoftbusd`; init links nobody
//! else): dsoftbusd registers `dsoftbus`, and forwards the remote calls its
//! ACL allowed as `call` requests. Only bytes cross: no capability is ever
//! passed on. When dsoftbusd is restarted, init grants the new channel on
//! samgrd's `init` channel; the table survives.

#![no_std]

extern crate alloc;

use alloc::boxed::Box;
use alloc::format;

use dsoftbus::ServiceName;
use nexus_abi::{Caps, Channel, IpcError, ServiceError, ServiceFuture};
use nexus_samgrclient::{decode_answer, Registry, Request, ECHO, MAX_SERVICES, SAMGR};

/// Entry point.
pub fn main(caps: Caps) -> ServiceFuture {
    Box::pin(run(caps))
}

fn name(s: &str) -> Result<ServiceName, ServiceError> {
    ServiceName::new(s).map_err(|e| ServiceError::new(format!("service name {s}: {e:?}")))
}

async fn run(mut caps: Caps) -> Result<(), ServiceError> {
    let init = caps.take_channel("init");
    let mut client = caps.take_channel("client:dsoftbusd");
    let mut reg = Registry::new();
    for (n, info) in [
        (SAMGR, "service registry (samgrd)"),
        (ECHO, "echo demo (samgrd)"),
    ] {
        reg.register(name(n)?, info)
            .map_err(|e| ServiceError::new(format!("registering {n}: {}", e.as_str())))?;
    }
    log::info!(
        "samgrd: up (services: {SAMGR}, {ECHO}; at most {} names)",
        nexus_samgrclient::MAX_SERVICES
    );
    loop {
        let Some(chan) = client.as_ref() else {
            client = next_client(init.as_ref()).await?;
            continue;
        };
        match chan.recv().await {
            Ok(msg) => {
                let Some(answer) = reg.handle(&msg) else {
                    continue;
                };
                if let (Ok((_, Request::Register { name, .. })), Ok((_, Ok(_)))) =
                    (Request::decode(&msg), decode_answer(&answer))
                {
                    log::info!(
                        "samgrd: registered {} ({} of at most {MAX_SERVICES} names)",
                        name.as_str(),
                        reg.len()
                    );
                }
                if chan.send(&answer).await.is_err() {
                    client = None;
                }
            }
            // dsoftbusd ended (or was restarted): wait for init's grant.
            Err(IpcError::Closed) => client = None,
            Err(e) => return Err(ServiceError::new(format!("client channel: {e}"))),
        }
    }
}

/// The next dsoftbusd channel init grants (after a restart of dsoftbusd).
async fn next_client(init: Option<&Channel>) -> Result<Option<Channel>, ServiceError> {
    let Some(init) = init else {
        return Err(ServiceError::new("client gone and no init channel"));
    };
    loop {
        let msg = init
            .recv()
            .await
            .map_err(|e| ServiceError::new(format!("init channel: {e}")))?;
        if let Some(grants) = Caps::decode_grant(&msg) {
            if let Some((_, chan)) = grants.into_iter().find(|(r, _)| *r == "client:dsoftbusd") {
                return Ok(Some(chan));
            }
        }
    }
}
