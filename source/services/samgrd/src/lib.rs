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
//! Its clients are the services init links to it (`client:<name>`, at most
//! [`MAX_CLIENTS`]): dsoftbusd registers `dsoftbusd` and forwards the remote
//! calls its ACL allowed as `call` requests; keystored, netstackd and blkd
//! register their own names. A client may register only its own process
//! name (the `client:<name>` role init gave its channel; anything else is
//! `denied` and logged). Requests are served one at a time, round-robin across
//! clients. Only bytes cross: no capability is ever passed on. When a client
//! is restarted, init grants its new channel on samgrd's `init` channel; the
//! table survives.

#![no_std]

extern crate alloc;

use alloc::boxed::Box;
use alloc::format;
use alloc::vec::Vec;
use core::future::poll_fn;
use core::task::Poll;

use dsoftbus::ServiceName;
use nexus_abi::{Caps, Channel, IpcError, ServiceError, ServiceFuture};
use nexus_samgrclient::{decode_answer, Registry, Request, Status, ECHO, MAX_SERVICES, SAMGR};

/// Entry point.
pub fn main(caps: Caps) -> ServiceFuture {
    Box::pin(run(caps))
}

fn name(s: &str) -> Result<ServiceName, ServiceError> {
    ServiceName::new(s).map_err(|e| ServiceError::new(format!("service name {s}: {e:?}")))
}

/// Most clients served at once.
pub const MAX_CLIENTS: usize = 8;

/// A client channel, by role (`client:<name>`); `None` while the client is
/// gone and init has not granted its next channel yet.
type Clients = Vec<(&'static str, Option<Channel>)>;

enum Woke {
    Grant(Vec<u8>),
    Message(usize, Result<Vec<u8>, IpcError>),
}

async fn run(mut caps: Caps) -> Result<(), ServiceError> {
    let init = caps.take_channel("init");
    let mut clients: Clients = caps
        .take_channels("client:")
        .into_iter()
        .take(MAX_CLIENTS)
        .map(|(role, chan)| (role, Some(chan)))
        .collect();
    let mut reg = Registry::new();
    for (n, info) in [
        (SAMGR, "service registry (samgrd)"),
        (ECHO, "echo demo (samgrd)"),
    ] {
        reg.register(name(n)?, info)
            .map_err(|e| ServiceError::new(format!("registering {n}: {}", e.as_str())))?;
    }
    log::info!(
        "samgrd: up (services: {SAMGR}, {ECHO}; at most {} names, {} clients)",
        nexus_samgrclient::MAX_SERVICES,
        clients.len()
    );
    let mut next = 0usize;
    loop {
        let woke = poll_fn(|cx| {
            if let Some(Poll::Ready(Ok(msg))) = init.as_ref().map(|c| c.poll_recv(cx)) {
                return Poll::Ready(Woke::Grant(msg));
            }
            let n = clients.len();
            for k in 0..n {
                let i = (next + k) % n;
                if let Some(chan) = clients[i].1.as_ref() {
                    if let Poll::Ready(m) = chan.poll_recv(cx) {
                        return Poll::Ready(Woke::Message(i, m));
                    }
                }
            }
            Poll::Pending
        })
        .await;
        match woke {
            Woke::Grant(msg) => take_grant(&mut clients, &msg),
            Woke::Message(i, Ok(msg)) => {
                next = (i + 1) % clients.len().max(1);
                let owner = clients[i].0.strip_prefix("client:").unwrap_or("");
                let Some(answer) = reg.handle(owner, &msg) else {
                    continue;
                };
                if let (Ok((_, Request::Register { name, .. })), Ok((_, r))) =
                    (Request::decode(&msg), decode_answer(&answer))
                {
                    match r {
                        Ok(_) => log::info!(
                            "samgrd: registered {} ({} of at most {MAX_SERVICES} names)",
                            name.as_str(),
                            reg.len()
                        ),
                        Err(Status::Denied) => log::warn!(
                            "samgrd: registration of {} by {owner} denied (a process registers only its own name)",
                            name.as_str()
                        ),
                        Err(_) => {}
                    }
                }
                let sent = match clients[i].1.as_ref() {
                    Some(chan) => chan.send(&answer).await.is_ok(),
                    None => false,
                };
                if !sent {
                    clients[i].1 = None;
                }
            }
            // The client ended (or was restarted): wait for init's grant.
            Woke::Message(i, Err(IpcError::Closed)) => clients[i].1 = None,
            Woke::Message(_, Err(e)) => {
                return Err(ServiceError::new(format!("client channel: {e}")))
            }
        }
    }
}

/// A (restarted) client's new channel, granted by init.
fn take_grant(clients: &mut Clients, msg: &[u8]) {
    let Some(grants) = Caps::decode_grant(msg) else {
        log::warn!("samgrd: undecodable grant from init");
        return;
    };
    for (role, chan) in grants {
        if !role.starts_with("client:") {
            continue;
        }
        if let Some(i) = clients.iter().position(|(r, _)| *r == role) {
            clients[i].1 = Some(chan);
        } else if clients.len() < MAX_CLIENTS {
            clients.push((role, Some(chan)));
        } else {
            log::warn!("samgrd: more than {MAX_CLIENTS} clients; {role} not served");
        }
    }
}
