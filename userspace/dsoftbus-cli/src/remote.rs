//! Remote service calls on the Linux node (issue 13 item 4): the daemon side
//! of `dsoftbus call` and `dsoftbus serve`, over the core's `dsoftbus::rpc`
//! (wire: docs/protocol/wire.md §10; policy: docs/distributed/dsoftbus-os.md
//! "Remote calls (core)").
//!
//! * **Serving.** `dsoftbus serve <name> --unix <path>` registers `name` for
//!   as long as that control connection stays open (at most
//!   [`MAX_SERVED`] names). An allowed call (deny-by-default ACL from
//!   `--remote-acl` / `remote_acl`) is forwarded to the Unix socket: the
//!   daemon connects, writes the request payload, shuts its write half,
//!   and reads the answer until EOF — all before the call's deadline. A
//!   service is therefore as simple as `socat UNIX-LISTEN:p,fork EXEC:cat`.
//!   Only bytes cross; the local service never sees a peer's socket, key or
//!   anything but the payload.
//! * **Calling.** `dsoftbus call <device> <service> [payload]` sends one
//!   request on the session with `device` and waits for the reply or the
//!   deadline.
//! * **Audit.** Every call is logged once through the daemon's log limiter:
//!   `remote call peer=<id> service=<svc> allowed|denied (<reason>)`.
//!
//! Bounds: the core's (`RpcServerConfig`/`RpcClientConfig` defaults: 8 KiB
//! request and reply, 4 calls in flight per peer, 64 in total, 16 outgoing),
//! [`MAX_SERVED`] services, and one task per served call in flight (≤ 64:
//! a slot is freed only when its task ends, see [`peer_gone`]).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use dsoftbus::node::LogSafe;
use dsoftbus::rpc::{self, Acl, Completion, Dispatch, Origin, RpcClient, RpcServer, Status};
use dsoftbus::{Connection, DeviceId, ServiceName};
use tokio::io::{AsyncBufRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::sync::oneshot;
use tracing::{debug, info};

use crate::control::write_resp;
use crate::control::Response;
use crate::exit::{FAILURE, IN_USE, NO_PEER, TIMEOUT, USAGE};
use crate::shared::{
    suppressed, HostClock, LogKind, Peers, RateLimiter, SessionCmd, SessionHandle,
};

/// Most local services exposed at once.
pub const MAX_SERVED: usize = 32;
/// Longest timeout a `call` may ask for (ms).
pub const MAX_CALL_TIMEOUT_MS: u64 = 60_000;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// What remote calls need from the daemon, and nothing else: the call
/// state, the peers (to find a session), the clock and the log limiter.
#[derive(Clone)]
pub struct RemoteCtx {
    pub remote: Arc<Remote>,
    pub peers: Peers,
    pub clock: HostClock,
    pub limiter: Arc<RateLimiter>,
}

impl RemoteCtx {
    fn session(&self, id: &DeviceId) -> Option<SessionHandle> {
        self.peers.lock().sessions.get(id).cloned()
    }
}

/// The daemon's remote-call state (one per daemon).
pub struct Remote {
    server: Mutex<RpcServer>,
    client: Mutex<RpcClient>,
    /// Outgoing call id → the control client waiting for it (≤ the
    /// client's `max_in_flight`).
    waiters: Mutex<HashMap<u32, oneshot::Sender<Completion>>>,
    /// Served name → Unix socket path (≤ [`MAX_SERVED`]).
    services: Mutex<HashMap<String, PathBuf>>,
}

impl Remote {
    pub fn new(acl: Acl) -> Self {
        Remote {
            server: Mutex::new(RpcServer::new(rpc::RpcServerConfig::default(), acl)),
            client: Mutex::new(RpcClient::new(rpc::RpcClientConfig::default())),
            waiters: Mutex::new(HashMap::new()),
            services: Mutex::new(HashMap::new()),
        }
    }

    fn finish(&self, done: Completion) {
        if let Some(tx) = lock(&self.waiters).remove(&done.call_id) {
            let _ = tx.send(done);
        }
    }
}

/// What the session does with a data message.
pub enum OnData {
    /// Not a remote-call message: hand it to the other data users.
    NotRpc,
    /// Handled; nothing to send now.
    Done,
    /// Send these bytes back on this session (a refusal).
    Send(Vec<u8>),
}

/// One data message of the session `conn`.
pub fn on_data(sh: &RemoteCtx, conn: &Connection, data: &[u8]) -> OnData {
    let msg = match rpc::decode(data) {
        Ok(m) => m,
        Err(rpc::RpcError::NotRpc) => return OnData::NotRpc,
        Err(e) => {
            if let Some(n) = sh.limiter.allow(LogKind::RpcMalformed) {
                debug!(
                    "peer={}: ignoring malformed remote-call message: {e}{}",
                    LogSafe(conn.peer_hint().map_or("?", |p| p.as_str())),
                    suppressed(n)
                );
            }
            return OnData::Done;
        }
    };
    match msg {
        rpc::Message::Request(req) => {
            let h = lock(&sh.remote.server).handle_request(Origin::of(conn), req, sh.clock.now());
            if let Some(n) = sh.limiter.allow(if h.audit.is_allowed() {
                LogKind::RemoteCallAllowed
            } else {
                LogKind::RemoteCallDenied
            }) {
                info!("{}{}", h.audit, suppressed(n));
            }
            match h.action {
                rpc::ServerAction::Dispatch(d) => {
                    tokio::spawn(run_local(sh.clone(), d));
                    OnData::Done
                }
                rpc::ServerAction::Reply(r) => OnData::Send(r),
                rpc::ServerAction::Drop => OnData::Done,
            }
        }
        rpc::Message::Reply(rep) => {
            let Some(peer) = conn.peer_id() else {
                return OnData::Done;
            };
            let done = lock(&sh.remote.client).handle_reply(peer, &rep);
            if let Some(done) = done {
                sh.remote.finish(done);
            }
            OnData::Done
        }
    }
}

/// The session with `peer` ended: our calls to it fail at once. Its calls
/// to us keep their server slots until their local exchange ends (at the
/// latest at the call's deadline; the answer is then dropped), so the
/// forwarding tasks never outnumber `max_in_flight_total`, however often a
/// peer reconnects.
pub fn peer_gone(sh: &RemoteCtx, peer: &DeviceId) {
    let gone = lock(&sh.remote.client).peer_gone(peer);
    for done in gone {
        sh.remote.finish(done);
    }
}

/// Forwards an allowed call to the local service and sends the reply.
async fn run_local(sh: RemoteCtx, d: Dispatch) {
    let path = lock(&sh.remote.services).get(d.service.as_str()).cloned();
    let max_reply = lock(&sh.remote.server).config().max_reply_payload;
    let left = d
        .deadline
        .as_millis()
        .saturating_sub(sh.clock.now().as_millis());
    let (status, answer) = match path {
        None => (Status::UnknownService, Vec::new()),
        Some(p) => {
            let io = exchange(&p, &d.payload, max_reply + 1);
            match tokio::time::timeout(Duration::from_millis(left), io).await {
                Ok(Ok(a)) => (Status::Ok, a),
                Ok(Err(e)) => {
                    debug!(
                        "remote call service={}: {}: {e}",
                        LogSafe(d.service.as_str()),
                        p.display()
                    );
                    (Status::Unavailable, Vec::new())
                }
                Err(_) => (Status::Deadline, Vec::new()),
            }
        }
    };
    let reply =
        lock(&sh.remote.server).complete(&d.peer, d.call_id, status, &answer, sh.clock.now());
    if let (Some(r), Some(h)) = (reply, sh.session(&d.peer)) {
        let _ = tokio::time::timeout(Duration::from_secs(1), h.cmd.send(SessionCmd::App(r))).await;
    }
}

/// One exchange with a local service: payload in, EOF, answer out (at
/// most `limit` bytes read).
async fn exchange(path: &Path, payload: &[u8], limit: usize) -> std::io::Result<Vec<u8>> {
    let mut s = UnixStream::connect(path).await?;
    s.write_all(payload).await?;
    s.shutdown().await?;
    let mut out = Vec::new();
    (&mut s).take(limit as u64).read_to_end(&mut out).await?;
    Ok(out)
}

/// `dsoftbus call`: one call on the session with `device`.
pub async fn call(
    sh: &RemoteCtx,
    device: &str,
    service: &str,
    payload_hex: &str,
    timeout_ms: u64,
) -> Response {
    let Ok(id) = DeviceId::new(device) else {
        return Response::error(USAGE, format!("{device:?} is not a valid device id"));
    };
    let Ok(svc) = ServiceName::new(service) else {
        return Response::error(USAGE, format!("{service:?} is not a valid service name"));
    };
    let Ok(payload) = hex::decode(payload_hex) else {
        return Response::error(USAGE, "payload is not hex");
    };
    let Some(h) = sh.session(&id) else {
        return Response::error(
            NO_PEER,
            format!("no session with {device:?} (see `dsoftbus peers`)"),
        );
    };
    let timeout_ms = timeout_ms.clamp(1, MAX_CALL_TIMEOUT_MS);
    let issued = {
        let mut c = lock(&sh.remote.client);
        c.call(&id, &svc, &payload, timeout_ms as u32, sh.clock.now())
    };
    let out = match issued {
        Ok(o) => o,
        Err(rpc::CallError::TooLarge) => {
            return Response::error(
                USAGE,
                format!("payload of {} bytes is too large", payload.len()),
            )
        }
        Err(e) => return Response::error(FAILURE, format!("cannot call: {e}")),
    };
    let (tx, rx) = oneshot::channel();
    lock(&sh.remote.waiters).insert(out.call_id, tx);
    let forget = |sh: &RemoteCtx| {
        lock(&sh.remote.client).cancel(out.call_id);
        lock(&sh.remote.waiters).remove(&out.call_id);
    };
    if h.cmd.send(SessionCmd::App(out.bytes)).await.is_err() {
        forget(sh);
        return Response::error(NO_PEER, format!("the session with {device} just closed"));
    }
    match tokio::time::timeout(Duration::from_millis(timeout_ms), rx).await {
        Ok(Ok(done)) => match done.result {
            Ok(answer) => Response::Reply {
                payload: hex::encode(answer),
            },
            Err(Status::Deadline) => Response::error(
                TIMEOUT,
                format!("remote call {service} on {device}: deadline ({timeout_ms} ms)"),
            ),
            Err(Status::Unavailable) if sh.session(&id).is_none() => {
                Response::error(NO_PEER, format!("the session with {device} closed"))
            }
            Err(s) => Response::error(FAILURE, format!("remote call {service} on {device}: {s}")),
        },
        Ok(Err(_)) => {
            forget(sh);
            Response::error(NO_PEER, format!("the session with {device} closed"))
        }
        Err(_) => {
            forget(sh);
            Response::error(
                TIMEOUT,
                format!("remote call {service} on {device}: no reply within {timeout_ms} ms"),
            )
        }
    }
}

/// `dsoftbus serve`: exposes `service` (Unix socket `path`) while the
/// control connection `r`/`w` stays open.
pub async fn serve<R, W>(
    sh: &RemoteCtx,
    service: &str,
    path: &Path,
    r: &mut R,
    w: &mut W,
) -> std::io::Result<()>
where
    R: AsyncBufRead + Unpin,
    W: AsyncWrite + Unpin,
{
    if ServiceName::new(service).is_err() {
        let e = Response::error(USAGE, format!("{service:?} is not a valid service name"));
        return write_resp(w, &e).await;
    }
    if !path.is_absolute() {
        return write_resp(
            w,
            &Response::error(USAGE, "the socket path must be absolute"),
        )
        .await;
    }
    let refused = {
        let mut s = lock(&sh.remote.services);
        if s.contains_key(service) {
            Some(Response::error(
                IN_USE,
                format!("{service} is already served"),
            ))
        } else if s.len() >= MAX_SERVED {
            Some(Response::error(
                FAILURE,
                format!("already serving {MAX_SERVED} services"),
            ))
        } else {
            s.insert(service.to_string(), path.to_path_buf());
            None
        }
    };
    if let Some(e) = refused {
        return write_resp(w, &e).await;
    }
    info!("serving {service} for remote calls via {}", path.display());
    let ok = Response::Ok {
        message: format!("serving {service} via {}", path.display()),
    };
    let res = async {
        write_resp(w, &ok).await?;
        // Held until the client goes away (its input is ignored).
        let mut sink = [0u8; 256];
        while r.read(&mut sink).await? > 0 {}
        Ok(())
    }
    .await;
    lock(&sh.remote.services).remove(service);
    info!("no longer serving {service}");
    res
}
