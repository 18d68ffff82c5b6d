//! Remote service calls in node mode (`dsoftbus::rpc`, wire.md §10).
//!
//! **Server.** Every data message of a session is offered to
//! [`Remote::on_data`]: an RPC request is judged by the core's
//! [`RpcServer`] (deny-by-default ACL from the boot option
//! `dsoftbusd.remote_acl=<peer>:<service>,...`; bounds: 4 calls in flight
//! per peer, 64 in total, 8 KiB request and reply payloads, deadline at most
//! 30 s). Each call gives exactly one audit line through the node's log
//! limiter, `dsoftbusd: remote call peer=<id> service=<svc> allowed|denied
//! (<reason>)`; an ACL denial also prints `dsoftbusd: remote proxy denied
//! (service=<svc>)`, an unauthenticated call `dsoftbusd: remote proxy
//! denied (unauthenticated)`. An allowed call is forwarded to samgrd as a
//! `call` request (bytes only; no capability crosses), awaited no longer
//! than the call's deadline, and answered through `RpcServer::complete`.
//!
//! **Client.** Boot options `dsoftbusd.resolve=<service>@<peer>` (ask the
//! peer's `samgr` whether `<service>` is registered) and
//! `dsoftbusd.call=<service>@<peer>` (call `<service>` on the peer with a
//! short payload), comma-separated, at most [`MAX_PLANNED`] in all: each is
//! issued once a session with that peer is up (after the first ping) and
//! reported once: `SELFTEST: remote resolve ok peer=<id> service=<svc>`
//! only for an ok answer that says the name is registered, otherwise
//! `dsoftbusd: remote resolve failed peer=<id> service=<svc>: <why>`;
//! `dsoftbusd: remote call ok|refused ...` for plain calls. A call whose
//! session ends before its answer is issued again on the next session.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::cell::RefCell;
use core::pin::pin;

use dsoftbus::node::{LogLimiter, LogSafe};
use dsoftbus::rpc::{
    self, Acl, Completion, DenyReason, Message, Origin, RpcClient, RpcClientConfig, RpcError,
    RpcServer, RpcServerConfig, ServerAction, Status, Verdict,
};
use dsoftbus::{DeviceId, ServiceName};
use futures_util::future::{select, Either};
use nexus_abi::time;
use nexus_samgrclient::{
    decode_resolution, Request as SamgrRequest, Resolution, SamgrClient, SamgrError,
    Status as SamgrStatus, SAMGR,
};

use crate::link::{now, Link, LinkError};
use crate::node::sup;

/// Most client calls the boot options may plan.
pub const MAX_PLANNED: usize = 4;
/// Time budget of each planned call.
pub const CALL_TIMEOUT_MS: u32 = 5_000;
/// Payload of a plain planned call.
const CALL_PAYLOAD: &[u8] = b"hello from nexus";

/// What a planned call asks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum What {
    /// `samgr` on the peer: is `service` registered?
    Resolve,
    /// `service` on the peer.
    Call,
}

#[derive(Clone, Debug)]
struct Planned {
    what: What,
    service: ServiceName,
    peer: DeviceId,
}

/// A node's remote-call state.
pub(crate) struct Remote {
    server: RefCell<RpcServer>,
    client: RefCell<RpcClient>,
    samgr: Option<SamgrClient>,
    /// Planned calls not issued yet (at most [`MAX_PLANNED`]).
    pending: RefCell<Vec<Planned>>,
    /// Issued calls by call id (at most [`MAX_PLANNED`]).
    issued: RefCell<Vec<(u32, Planned)>>,
}

/// Parse `service@peer,...` of option `key`; errors are logged and the
/// option ignored.
fn plans(key: &str, text: Option<&str>, what: What, out: &mut Vec<Planned>) {
    let Some(text) = text else {
        return;
    };
    for item in text.split(',').filter(|s| !s.is_empty()) {
        let parsed = item.split_once('@').and_then(|(s, p)| {
            Some(Planned {
                what,
                service: ServiceName::new(s).ok()?,
                peer: DeviceId::new(p).ok()?,
            })
        });
        match parsed {
            Some(p) if out.len() < MAX_PLANNED => out.push(p),
            Some(_) => log::warn!(
                "dsoftbusd: {key}: more than {MAX_PLANNED} planned calls; '{item}' ignored"
            ),
            None => log::warn!("dsoftbusd: {key}: '{item}' is not <service>@<peer>; ignored"),
        }
    }
}

impl Remote {
    /// From the boot options: `acl` (`dsoftbusd.remote_acl`), `resolve`,
    /// `call`; `samgr`: the channel to samgrd, if granted.
    pub(crate) fn new(
        acl: Option<&str>,
        resolve: Option<&str>,
        call: Option<&str>,
        samgr: Option<SamgrClient>,
    ) -> Self {
        let acl = match acl.map(Acl::parse) {
            None => {
                log::info!("dsoftbusd: remote calls: no dsoftbusd.remote_acl; every call denied");
                Acl::deny_all()
            }
            Some(Ok(a)) => {
                log::info!("dsoftbusd: remote calls: acl {a} ({} entries)", a.len());
                a
            }
            Some(Err(e)) => {
                log::error!("dsoftbusd: dsoftbusd.remote_acl refused ({e}); every call denied");
                Acl::deny_all()
            }
        };
        let mut pending = Vec::new();
        plans("dsoftbusd.resolve", resolve, What::Resolve, &mut pending);
        plans("dsoftbusd.call", call, What::Call, &mut pending);
        Remote {
            server: RefCell::new(RpcServer::new(RpcServerConfig::default(), acl)),
            client: RefCell::new(RpcClient::new(RpcClientConfig {
                max_in_flight: MAX_PLANNED,
                ..RpcClientConfig::default()
            })),
            samgr,
            pending: RefCell::new(pending),
            issued: RefCell::new(Vec::new()),
        }
    }

    /// A session with `peer` is up (both directions proven): issue the
    /// calls planned for it.
    pub(crate) async fn on_session_up(
        &self,
        link: &mut Link,
        peer: &DeviceId,
    ) -> Result<(), LinkError> {
        let mine: Vec<Planned> = {
            let mut p = self.pending.borrow_mut();
            let (mine, rest) = p.drain(..).partition(|x| &x.peer == peer);
            *p = rest;
            mine
        };
        for plan in mine {
            let (service, payload) = match plan.what {
                What::Resolve => (
                    ServiceName::new(SAMGR).ok(),
                    plan.service.as_str().as_bytes(),
                ),
                What::Call => (Some(plan.service.clone()), CALL_PAYLOAD),
            };
            let Some(service) = service else { continue };
            let out =
                self.client
                    .borrow_mut()
                    .call(peer, &service, payload, CALL_TIMEOUT_MS, now());
            match out {
                Ok(out) => {
                    link.conn.send_data(&out.bytes).map_err(LinkError::Conn)?;
                    log::info!(
                        "dsoftbusd: remote {} {} sent to peer={peer} (call {})",
                        match plan.what {
                            What::Resolve => "resolve of",
                            What::Call => "call of",
                        },
                        plan.service.as_str(),
                        out.call_id
                    );
                    self.issued.borrow_mut().push((out.call_id, plan));
                }
                Err(e) => log::warn!(
                    "dsoftbusd: remote call to peer={peer} service={} not issued: {e}",
                    service.as_str()
                ),
            }
        }
        link.flush().await
    }

    /// One data message of a session with `peer` (`None`: not yet
    /// authenticated). Returns false when it is not RPC (another data user).
    pub(crate) async fn on_data(
        &self,
        link: &mut Link,
        peer: Option<&DeviceId>,
        data: &[u8],
        log: &RefCell<LogLimiter>,
    ) -> Result<bool, LinkError> {
        let msg = match rpc::decode(data) {
            Ok(m) => m,
            Err(RpcError::NotRpc) => return Ok(false),
            Err(e) => {
                if let Some(n) = log.borrow_mut().allow("remote-malformed", now()) {
                    log::info!(
                        "dsoftbusd: remote call message ignored (malformed: {e}) peer={}{}",
                        LogSafe(peer.map_or("?", |p| p.as_str())),
                        sup(n)
                    );
                }
                return Ok(true);
            }
        };
        match msg {
            Message::Request(req) => self.serve(link, req, log).await?,
            Message::Reply(rep) => {
                let done = peer.and_then(|p| self.client.borrow_mut().handle_reply(p, &rep));
                if let Some(done) = done {
                    self.finish(done);
                }
            }
        }
        Ok(true)
    }

    async fn serve(
        &self,
        link: &mut Link,
        req: rpc::Request,
        log: &RefCell<LogLimiter>,
    ) -> Result<(), LinkError> {
        let handled = self
            .server
            .borrow_mut()
            .handle_request(Origin::of(&link.conn), req, now());
        let audit = &handled.audit;
        if let Some(n) = log.borrow_mut().allow(audit.log_kind(), now()) {
            log::info!("dsoftbusd: {audit}{}", sup(n));
            match audit.verdict {
                Verdict::Denied(DenyReason::Acl) => log::info!(
                    "dsoftbusd: remote proxy denied (service={})",
                    LogSafe(audit.service.as_str())
                ),
                Verdict::Denied(DenyReason::Unauthenticated) => {
                    log::info!("dsoftbusd: remote proxy denied (unauthenticated)")
                }
                _ => {}
            }
        }
        let d = match handled.action {
            ServerAction::Reply(bytes) => {
                // An unauthenticated origin has no session to answer on.
                if link.conn.is_established() {
                    link.conn.send_data(&bytes).map_err(LinkError::Conn)?;
                }
                return link.flush().await;
            }
            ServerAction::Drop => return Ok(()),
            ServerAction::Dispatch(d) => d,
        };
        let (status, payload) = match &self.samgr {
            None => (Status::Unavailable, Vec::new()),
            Some(samgr) => {
                let req = SamgrRequest::Call {
                    name: d.service.clone(),
                    payload: d.payload.clone(),
                };
                let call = pin!(samgr.call(&req));
                let deadline = pin!(time::sleep_until(time::Instant::from_millis(
                    d.deadline.as_millis()
                )));
                match select(call, deadline).await {
                    Either::Left((Ok(answer), _)) => (Status::Ok, answer),
                    Either::Left((Err(SamgrError::Status(SamgrStatus::NotFound)), _)) => {
                        (Status::UnknownService, Vec::new())
                    }
                    Either::Left((Err(_), _)) => (Status::Unavailable, Vec::new()),
                    // `complete` at or after the deadline answers `deadline`.
                    Either::Right(_) => (Status::Deadline, Vec::new()),
                }
            }
        };
        let reply = self
            .server
            .borrow_mut()
            .complete(&d.peer, d.call_id, status, &payload, now());
        if let Some(reply) = reply {
            link.conn.send_data(&reply).map_err(LinkError::Conn)?;
            link.flush().await?;
        }
        Ok(())
    }

    /// The session with `peer` ended: forget its calls in flight here, and
    /// plan our unanswered calls to it again for the next session.
    pub(crate) fn peer_gone(&self, peer: &DeviceId) {
        self.server.borrow_mut().peer_gone(peer);
        let gone = self.client.borrow_mut().peer_gone(peer);
        for done in gone {
            if let Some(plan) = self.take_issued(done.call_id) {
                log::info!(
                    "dsoftbusd: remote call to peer={peer} service={} lost with its session; will retry",
                    plan.service.as_str()
                );
                self.pending.borrow_mut().push(plan);
            }
        }
    }

    /// Expire our calls past their deadline (reported as failures).
    pub(crate) fn tick(&self) {
        let done = self.client.borrow_mut().handle_timeout(now());
        for d in done {
            self.finish(d);
        }
    }

    fn take_issued(&self, call_id: u32) -> Option<Planned> {
        let mut issued = self.issued.borrow_mut();
        let i = issued.iter().position(|(id, _)| *id == call_id)?;
        Some(issued.swap_remove(i).1)
    }

    /// Report one of our calls, once.
    fn finish(&self, done: Completion) {
        let Some(plan) = self.take_issued(done.call_id) else {
            return;
        };
        let (peer, svc) = (&done.peer, plan.service.as_str());
        match (plan.what, done.result) {
            (What::Resolve, Ok(answer)) => match decode_resolution(&answer) {
                Some(Resolution::Registered(info)) => log::info!(
                    "SELFTEST: remote resolve ok peer={peer} service={svc} (info: {info})"
                ),
                Some(Resolution::Unknown) => log::info!(
                    "dsoftbusd: remote resolve failed peer={peer} service={svc}: not registered there"
                ),
                None => log::info!(
                    "dsoftbusd: remote resolve failed peer={peer} service={svc}: malformed answer"
                ),
            },
            (What::Resolve, Err(s)) => log::info!(
                "dsoftbusd: remote resolve failed peer={peer} service={svc}: {}",
                status_text(s)
            ),
            (What::Call, Ok(answer)) => log::info!(
                "dsoftbusd: remote call ok peer={peer} service={svc} ({} bytes answered)",
                answer.len()
            ),
            (What::Call, Err(s)) => log::info!(
                "dsoftbusd: remote call refused peer={peer} service={svc}: {}",
                status_text(s)
            ),
        }
    }
}

fn status_text(s: Status) -> String {
    format!("{s}")
}

/// Expire our calls at their deadlines, forever (a task beside the
/// sessions; every deadline is at least `CALL_TIMEOUT_MS` away when set, so
/// a 100 ms period reports a timeout at most 100 ms late).
pub(crate) async fn timer(remote: &Remote) -> Result<(), nexus_abi::ServiceError> {
    loop {
        time::sleep(core::time::Duration::from_millis(100)).await;
        remote.tick();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::fixtures::id;

    #[test]
    fn acl_option_fails_closed() {
        let none = Remote::new(None, None, None, None);
        assert!(none.server.borrow().acl().is_empty());
        let bad = Remote::new(Some("os2vm-b:samgr,*:*"), None, None, None);
        assert!(bad.server.borrow().acl().is_empty());
        let good = Remote::new(Some("os2vm-b:samgr"), None, None, None);
        let samgr = ServiceName::new(SAMGR).ok();
        let echo = ServiceName::new("echo").ok();
        let allows = |svc: &Option<ServiceName>| {
            svc.as_ref()
                .is_some_and(|s| good.server.borrow().acl().allows(&id("os2vm-b"), s))
        };
        assert!(allows(&samgr));
        assert!(!allows(&echo));
    }

    #[test]
    fn planned_calls_are_parsed_and_bounded() {
        let r = Remote::new(
            None,
            Some("echo@os2vm-b,,bad,@x,echo@"),
            Some("echo@os2vm-b,a@p,b@p,c@p"),
            None,
        );
        let p = r.pending.borrow();
        // 1 resolve + the first 3 calls: at most MAX_PLANNED.
        assert_eq!(p.len(), MAX_PLANNED);
        assert_eq!(p[0].what, What::Resolve);
        assert_eq!(p[0].peer, id("os2vm-b"));
        assert_eq!(p[0].service.as_str(), "echo");
        assert!(p[1..].iter().all(|x| x.what == What::Call));
        assert_eq!(p[3].service.as_str(), "b");
    }
}
