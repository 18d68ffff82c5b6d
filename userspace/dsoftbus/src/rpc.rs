//! Remote service calls: a small request/reply protocol carried in session
//! `data` messages (`docs/protocol/wire.md` §10), and the policy both daemons
//! apply to it, in one place.
//!
//! * **Wire** — [`decode`], [`Request`], [`Reply`], [`Status`]. A data
//!   message whose first byte is [`KIND_RPC`] (`0x20`) is RPC; anything else
//!   is [`RpcError::NotRpc`] and belongs to another data user (the Linux file
//!   transfer uses `0x10`–`0x17`). Decoding is total.
//! * **Server** — [`RpcServer`]: deny-by-default [`Acl`] (peer id × service
//!   name), a bound on calls in flight per peer and in total, request and
//!   reply size bounds, deadlines on the caller's clock, and exactly one
//!   [`AuditEvent`] per call (`remote call peer=<id> service=<svc>
//!   allowed|denied (<reason>)`). The server never touches a local service:
//!   it hands the daemon a [`Dispatch`] (bytes only — no capability, handle
//!   or file descriptor ever crosses) and takes the answer back through
//!   [`RpcServer::complete`].
//! * **Client** — [`RpcClient`]: issue a call, match replies by (peer, call
//!   id), time out at the deadline.
//!
//! A daemon demultiplexes each data message of an established session with
//! peer `p`:
//!
//! ```
//! use dsoftbus::rpc::*;
//! use dsoftbus::{DeviceId, Instant, ServiceName};
//! let now = Instant::from_millis(0);
//! let a = DeviceId::new("node-a").unwrap();
//! let b = DeviceId::new("node-b").unwrap();
//! let echo = ServiceName::new("echo").unwrap();
//! let mut client = RpcClient::new(RpcClientConfig::default());
//! let mut server = RpcServer::new(RpcServerConfig::default(), Acl::parse("node-a:echo").unwrap());
//!
//! // node-a calls echo on node-b; `out.bytes` goes into one data message.
//! let out = client.call(&b, &echo, b"hi", 1000, now).unwrap();
//!
//! // node-b: the data message came from the authenticated peer node-a.
//! let Ok(Message::Request(req)) = decode(&out.bytes) else { unreachable!() };
//! let handled = server.handle_request(Origin::Authenticated(&a), req, now);
//! assert_eq!(handled.audit.to_string(), "remote call peer=node-a service=echo allowed");
//! let ServerAction::Dispatch(d) = handled.action else { unreachable!() };
//! // ... forward d.payload to the local service, then:
//! let reply = server.complete(&d.peer, d.call_id, Status::Ok, b"hi", now).unwrap();
//!
//! // node-a: the reply data message came from node-b.
//! let Ok(Message::Reply(rep)) = decode(&reply) else { unreachable!() };
//! let done = client.handle_reply(&b, &rep).unwrap();
//! assert_eq!(done.result, Ok(b"hi".to_vec()));
//! ```
//!
//! Every queue here is bounded and the bound is in the config: the server's
//! in-flight table holds at most [`RpcServerConfig::max_in_flight_total`]
//! calls (at most [`RpcServerConfig::max_in_flight_per_peer`] per peer), the
//! client's at most [`RpcClientConfig::max_in_flight`]; the ACL at most
//! [`MAX_ACL_ENTRIES`] entries.

use alloc::vec::Vec;
use core::fmt;
use core::time::Duration;

use crate::announce::{DeviceId, ServiceName, MAX_SERVICE_LEN};
use crate::connection::Connection;
use crate::session::MAX_DATA_LEN;
use crate::time::Instant;

/// First byte of every RPC data message (wire.md §10.1).
pub const KIND_RPC: u8 = 0x20;
/// The RPC framing version this code speaks.
pub const RPC_VERSION: u8 = 1;
/// Op byte of a request.
pub const OP_REQUEST: u8 = 0x01;
/// Op byte of a reply.
pub const OP_REPLY: u8 = 0x02;
/// Request bytes before the service name: kind, version, op, call id,
/// timeout, service length.
pub const REQUEST_HEADER_LEN: usize = 3 + 4 + 4 + 1;
/// Reply bytes before the payload: kind, version, op, call id, status.
pub const REPLY_HEADER_LEN: usize = 3 + 4 + 1;
/// Longest RPC message: one session data message.
pub const MAX_RPC_LEN: usize = MAX_DATA_LEN;
/// Largest request payload the wire can carry (longest service name).
pub const MAX_WIRE_REQUEST_PAYLOAD: usize = MAX_RPC_LEN - REQUEST_HEADER_LEN - MAX_SERVICE_LEN;
/// Largest reply payload the wire can carry.
pub const MAX_WIRE_REPLY_PAYLOAD: usize = MAX_RPC_LEN - REPLY_HEADER_LEN;
/// Most entries an [`Acl`] holds.
pub const MAX_ACL_ENTRIES: usize = 256;

// ---------------------------------------------------------------------------
// Wire
// ---------------------------------------------------------------------------

/// Status of a reply (wire.md §10.3). Unknown values are a decode error.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Status {
    /// The service answered; the payload is its answer.
    Ok = 0,
    /// The ACL does not allow this peer to call this service.
    Denied = 1,
    /// Allowed, but no local service has that name.
    UnknownService = 2,
    /// Request or reply payload over the receiver's bound.
    TooLarge = 3,
    /// Too many calls in flight (per peer or in total).
    Busy = 4,
    /// The deadline passed before the service answered.
    Deadline = 5,
    /// The call did not arrive on an authenticated, identity-bound session.
    Unauthenticated = 6,
    /// The service (or the session to it) failed or went away.
    Unavailable = 7,
}

impl Status {
    /// The status for a wire byte.
    pub fn from_u8(b: u8) -> Option<Status> {
        Some(match b {
            0 => Status::Ok,
            1 => Status::Denied,
            2 => Status::UnknownService,
            3 => Status::TooLarge,
            4 => Status::Busy,
            5 => Status::Deadline,
            6 => Status::Unauthenticated,
            7 => Status::Unavailable,
            _ => return None,
        })
    }

    /// Short name for logs (`too-large`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Denied => "denied",
            Status::UnknownService => "unknown-service",
            Status::TooLarge => "too-large",
            Status::Busy => "busy",
            Status::Deadline => "deadline",
            Status::Unauthenticated => "unauthenticated",
            Status::Unavailable => "unavailable",
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a data message is not a valid RPC message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RpcError {
    /// Empty, or the first byte is not [`KIND_RPC`]: not ours, hand it on.
    NotRpc,
    /// Longer than [`MAX_RPC_LEN`]; refused before parsing.
    Oversized,
    /// Ends before a field.
    Truncated,
    /// Version byte other than [`RPC_VERSION`].
    UnsupportedVersion(u8),
    /// Op byte other than request or reply.
    UnknownOp(u8),
    /// Status byte above 7.
    UnknownStatus(u8),
    /// Service name not UTF-8.
    Utf8,
    /// Timeout 0, service length 0 or > 64, a control character in the
    /// service, or a payload on a non-ok reply.
    InvalidInput,
}

impl fmt::Display for RpcError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RpcError::NotRpc => f.write_str("not rpc"),
            RpcError::Oversized => f.write_str("oversized"),
            RpcError::Truncated => f.write_str("truncated"),
            RpcError::UnsupportedVersion(v) => write!(f, "unsupported version {v}"),
            RpcError::UnknownOp(o) => write!(f, "unknown op {o}"),
            RpcError::UnknownStatus(s) => write!(f, "unknown status {s}"),
            RpcError::Utf8 => f.write_str("invalid utf-8"),
            RpcError::InvalidInput => f.write_str("invalid input"),
        }
    }
}

/// A call request (wire.md §10.2).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    /// Chosen by the caller; echoed in the reply.
    pub call_id: u32,
    /// The caller's remaining time budget in milliseconds (1..).
    pub timeout_ms: u32,
    /// The service called (announce service-name rules).
    pub service: ServiceName,
    /// Opaque bytes for the service.
    pub payload: Vec<u8>,
}

/// A call reply (wire.md §10.3).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    /// The request's call id.
    pub call_id: u32,
    /// Outcome.
    pub status: Status,
    /// The service's answer; always empty unless `status` is `Ok`.
    pub payload: Vec<u8>,
}

/// A decoded RPC message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    /// A call.
    Request(Request),
    /// An answer.
    Reply(Reply),
}

impl Request {
    /// The encoding (one data message). The caller keeps the payload within
    /// [`MAX_WIRE_REQUEST_PAYLOAD`]; [`RpcClient::call`] does.
    pub fn encode(&self) -> Vec<u8> {
        let svc = self.service.as_str().as_bytes();
        let mut out = Vec::with_capacity(REQUEST_HEADER_LEN + svc.len() + self.payload.len());
        out.extend_from_slice(&[KIND_RPC, RPC_VERSION, OP_REQUEST]);
        out.extend_from_slice(&self.call_id.to_be_bytes());
        out.extend_from_slice(&self.timeout_ms.to_be_bytes());
        // A ServiceName is 1..=64 bytes, so this never saturates.
        out.push(u8::try_from(svc.len()).unwrap_or(u8::MAX));
        out.extend_from_slice(svc);
        out.extend_from_slice(&self.payload);
        out
    }
}

impl Reply {
    /// The encoding (one data message). A non-ok reply is encoded without
    /// payload whatever `payload` holds.
    pub fn encode(&self) -> Vec<u8> {
        encode_reply(self.call_id, self.status, &self.payload)
    }
}

fn encode_reply(call_id: u32, status: Status, payload: &[u8]) -> Vec<u8> {
    let payload = if status == Status::Ok { payload } else { &[] };
    let mut out = Vec::with_capacity(REPLY_HEADER_LEN + payload.len());
    out.extend_from_slice(&[KIND_RPC, RPC_VERSION, OP_REPLY]);
    out.extend_from_slice(&call_id.to_be_bytes());
    out.push(status as u8);
    out.extend_from_slice(payload);
    out
}

struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], RpcError> {
        if self.buf.len() < n {
            return Err(RpcError::Truncated);
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }
    fn u8(&mut self) -> Result<u8, RpcError> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> Result<u32, RpcError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
}

/// Decodes one data message body. Total: every input is a message or an
/// error; checks run in the order of wire.md §10.4.
pub fn decode(buf: &[u8]) -> Result<Message, RpcError> {
    if buf.first() != Some(&KIND_RPC) {
        return Err(RpcError::NotRpc);
    }
    if buf.len() > MAX_RPC_LEN {
        return Err(RpcError::Oversized);
    }
    let mut r = Reader { buf: &buf[1..] };
    let version = r.u8()?;
    if version != RPC_VERSION {
        return Err(RpcError::UnsupportedVersion(version));
    }
    match r.u8()? {
        OP_REQUEST => {
            let call_id = r.u32()?;
            let timeout_ms = r.u32()?;
            if timeout_ms == 0 {
                return Err(RpcError::InvalidInput);
            }
            let len = usize::from(r.u8()?);
            if len == 0 || len > MAX_SERVICE_LEN {
                return Err(RpcError::InvalidInput);
            }
            let raw = r.take(len)?;
            let text = core::str::from_utf8(raw).map_err(|_| RpcError::Utf8)?;
            let service = ServiceName::new(text).map_err(|_| RpcError::InvalidInput)?;
            Ok(Message::Request(Request {
                call_id,
                timeout_ms,
                service,
                payload: r.buf.to_vec(),
            }))
        }
        OP_REPLY => {
            let call_id = r.u32()?;
            let s = r.u8()?;
            let status = Status::from_u8(s).ok_or(RpcError::UnknownStatus(s))?;
            if status != Status::Ok && !r.buf.is_empty() {
                return Err(RpcError::InvalidInput);
            }
            Ok(Message::Reply(Reply {
                call_id,
                status,
                payload: r.buf.to_vec(),
            }))
        }
        op => Err(RpcError::UnknownOp(op)),
    }
}

// ---------------------------------------------------------------------------
// ACL
// ---------------------------------------------------------------------------

/// Why an ACL text was refused. `entry` is 1-based.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AclError {
    /// Entry without `:`.
    MissingColon {
        /// Which entry.
        entry: usize,
    },
    /// Peer part is not `*` and not a valid device id.
    BadPeer {
        /// Which entry.
        entry: usize,
    },
    /// Service part is not `*` and not a valid service name.
    BadService {
        /// Which entry.
        entry: usize,
    },
    /// `*:*` (allow everything) is refused; list peers or services.
    WildcardBoth {
        /// Which entry.
        entry: usize,
    },
    /// More than [`MAX_ACL_ENTRIES`] entries.
    TooMany,
}

impl fmt::Display for AclError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AclError::MissingColon { entry } => {
                write!(f, "acl entry {entry}: expected peer:service")
            }
            AclError::BadPeer { entry } => write!(f, "acl entry {entry}: invalid peer id"),
            AclError::BadService { entry } => write!(f, "acl entry {entry}: invalid service name"),
            AclError::WildcardBoth { entry } => {
                write!(f, "acl entry {entry}: *:* is not allowed")
            }
            AclError::TooMany => write!(f, "acl: more than {MAX_ACL_ENTRIES} entries"),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct AclEntry {
    /// `None` = `*` (any authenticated peer).
    peer: Option<DeviceId>,
    /// `None` = `*` (any service).
    service: Option<ServiceName>,
}

/// Deny-by-default access list: peer id × service name.
///
/// Text form (the same in the OS boot option and the Linux TOML config):
/// entries `peer:service` separated by commas and/or whitespace. Each entry
/// is split at its **first** `:`. `*` may stand for the peer (any
/// authenticated peer may call that service) or for the service (that peer
/// may call any service), not for both. The empty text is the empty ACL,
/// which denies everything. A text with any bad entry is refused as a whole
/// (fail closed). Consequence of the syntax: a device id containing `:`,
/// `,` or whitespace, or a service name containing `,` or whitespace, cannot
/// be named in an ACL.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Acl {
    entries: Vec<AclEntry>,
}

impl Acl {
    /// The empty ACL: denies every call.
    pub fn deny_all() -> Self {
        Acl::default()
    }

    /// Parses the text form (see the type docs).
    pub fn parse(text: &str) -> Result<Self, AclError> {
        let mut entries = Vec::new();
        let items = text
            .split(|c: char| c == ',' || c.is_ascii_whitespace())
            .filter(|s| !s.is_empty());
        for (i, item) in items.enumerate() {
            let entry = i + 1;
            if entries.len() == MAX_ACL_ENTRIES {
                return Err(AclError::TooMany);
            }
            let (p, s) = item
                .split_once(':')
                .ok_or(AclError::MissingColon { entry })?;
            let peer = match p {
                "*" => None,
                _ => Some(DeviceId::new(p).map_err(|_| AclError::BadPeer { entry })?),
            };
            let service = match s {
                "*" => None,
                _ => Some(ServiceName::new(s).map_err(|_| AclError::BadService { entry })?),
            };
            if peer.is_none() && service.is_none() {
                return Err(AclError::WildcardBoth { entry });
            }
            let e = AclEntry { peer, service };
            if !entries.contains(&e) {
                entries.push(e);
            }
        }
        Ok(Acl { entries })
    }

    /// Whether `peer` may call `service`.
    pub fn allows(&self, peer: &DeviceId, service: &ServiceName) -> bool {
        self.entries.iter().any(|e| {
            e.peer.as_ref().is_none_or(|p| p == peer)
                && e.service.as_ref().is_none_or(|s| s == service)
        })
    }

    /// Number of (distinct) entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True for the deny-all ACL.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// Canonical text form: `peer:service` entries joined by `,`.
impl fmt::Display for Acl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.entries.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            match &e.peer {
                Some(p) => f.write_str(p.as_str())?,
                None => f.write_str("*")?,
            }
            f.write_str(":")?;
            match &e.service {
                Some(s) => f.write_str(s.as_str())?,
                None => f.write_str("*")?,
            }
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// Audit
// ---------------------------------------------------------------------------

/// Why a call was denied (audit reason).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DenyReason {
    /// Not on an authenticated, identity-bound session.
    Unauthenticated,
    /// The ACL does not list (peer, service).
    Acl,
    /// Request payload over [`RpcServerConfig::max_request_payload`].
    TooLarge,
    /// The peer's (or the server's) in-flight bound is reached.
    Busy,
    /// The peer reused the id of one of its calls still in flight.
    DuplicateId,
}

impl DenyReason {
    /// Short name for logs.
    pub fn as_str(self) -> &'static str {
        match self {
            DenyReason::Unauthenticated => "unauthenticated",
            DenyReason::Acl => "acl",
            DenyReason::TooLarge => "too-large",
            DenyReason::Busy => "busy",
            DenyReason::DuplicateId => "duplicate-id",
        }
    }

    /// The status the caller is told, if any (a duplicate id is dropped:
    /// a reply would be mistaken for the answer to the original call).
    pub fn status(self) -> Option<Status> {
        match self {
            DenyReason::Unauthenticated => Some(Status::Unauthenticated),
            DenyReason::Acl => Some(Status::Denied),
            DenyReason::TooLarge => Some(Status::TooLarge),
            DenyReason::Busy => Some(Status::Busy),
            DenyReason::DuplicateId => None,
        }
    }
}

/// The server's decision on a call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Dispatched to the local service.
    Allowed,
    /// Refused.
    Denied(DenyReason),
}

/// One audit record per call. `Display` gives the log line (without the
/// daemon prefix): `remote call peer=<id> service=<svc> allowed`, or
/// `... denied (<reason>)`. An unauthenticated caller is printed as
/// `peer=?`: its claimed id proves nothing and is not echoed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditEvent {
    /// The authenticated peer; `None` when the call was unauthenticated.
    pub peer: Option<DeviceId>,
    /// The service named in the request.
    pub service: ServiceName,
    /// The request's call id.
    pub call_id: u32,
    /// Decision.
    pub verdict: Verdict,
}

impl AuditEvent {
    /// Log-limiter kind for this line (`node::LogLimiter::allow`).
    pub fn log_kind(&self) -> &'static str {
        match self.verdict {
            Verdict::Allowed => "remote-call-allowed",
            Verdict::Denied(_) => "remote-call-denied",
        }
    }

    /// True when the call was allowed.
    pub fn is_allowed(&self) -> bool {
        self.verdict == Verdict::Allowed
    }
}

impl fmt::Display for AuditEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Both are the caller's choice (the peer's id and the service it
        // asked for): one escaped token each (`node::logsafe`).
        let peer = crate::node::LogSafe(self.peer.as_ref().map_or("?", |p| p.as_str()));
        write!(
            f,
            "remote call peer={peer} service={}",
            crate::node::LogSafe(self.service.as_str())
        )?;
        match self.verdict {
            Verdict::Allowed => f.write_str(" allowed"),
            Verdict::Denied(r) => write!(f, " denied ({})", r.as_str()),
        }
    }
}

// ---------------------------------------------------------------------------
// Server
// ---------------------------------------------------------------------------

/// Where a request came from. Only an established [`Connection`] (Noise XK
/// done *and* identity bound) gives [`Origin::Authenticated`]; use
/// [`Origin::of`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin<'a> {
    /// An established session with this authenticated, bound peer.
    Authenticated(&'a DeviceId),
    /// Anything else (handshake not finished, binding not checked, closed).
    Unauthenticated,
}

impl<'a> Origin<'a> {
    /// The origin of data read from `conn`: authenticated exactly when the
    /// connection is established.
    pub fn of(conn: &'a Connection) -> Self {
        match conn.peer_id() {
            Some(p) if conn.is_established() => Origin::Authenticated(p),
            _ => Origin::Unauthenticated,
        }
    }
}

/// Server bounds. Defaults in parentheses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RpcServerConfig {
    /// Calls in flight per peer (4); more are refused `busy`.
    pub max_in_flight_per_peer: usize,
    /// Calls in flight over all peers (64); more are refused `busy`.
    pub max_in_flight_total: usize,
    /// Request payload bound (8192 bytes); more is refused `too-large`.
    pub max_request_payload: usize,
    /// Reply payload bound (8192 bytes); a longer answer from the local
    /// service is replaced by `too-large`.
    pub max_reply_payload: usize,
    /// Longest deadline the server grants (30 000 ms); a request's timeout
    /// is clamped to it.
    pub max_deadline_ms: u32,
}

impl Default for RpcServerConfig {
    fn default() -> Self {
        RpcServerConfig {
            max_in_flight_per_peer: 4,
            max_in_flight_total: 64,
            max_request_payload: 8192,
            max_reply_payload: 8192,
            max_deadline_ms: 30_000,
        }
    }
}

/// An allowed call for the daemon to forward to the local service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dispatch {
    /// The authenticated caller.
    pub peer: DeviceId,
    /// Its call id (pass back to [`RpcServer::complete`]).
    pub call_id: u32,
    /// The local service to call.
    pub service: ServiceName,
    /// The request bytes (within the request bound).
    pub payload: Vec<u8>,
    /// When the server gives up (caller's clock): the request's timeout,
    /// clamped to `max_deadline_ms`, from arrival.
    pub deadline: Instant,
}

/// What the daemon does with a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServerAction {
    /// Forward to the local service; answer with [`RpcServer::complete`].
    Dispatch(Dispatch),
    /// Send these bytes back as one data message on the session the
    /// request came on (a refusal). For an unauthenticated origin there is
    /// no such session; the reference daemons never see that case, since a
    /// connection delivers no data before it is established.
    Reply(Vec<u8>),
    /// Send nothing.
    Drop,
}

/// Result of [`RpcServer::handle_request`]: always exactly one audit event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Handled {
    /// Log it (through the log limiter).
    pub audit: AuditEvent,
    /// Then do this.
    pub action: ServerAction,
}

/// A call the server gave up on at its deadline.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Expired {
    /// The caller.
    pub peer: DeviceId,
    /// Its call id.
    pub call_id: u32,
    /// A `deadline` reply to send to `peer`.
    pub reply: Vec<u8>,
}

#[derive(Clone, Debug)]
struct ServerCall {
    peer: DeviceId,
    call_id: u32,
    deadline: Instant,
}

/// Server counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RpcServerStats {
    /// Calls dispatched.
    pub allowed: u64,
    /// Calls refused (any reason).
    pub denied: u64,
    /// Calls that hit their deadline.
    pub expired: u64,
    /// Replies replaced by `too-large`.
    pub replies_too_large: u64,
}

/// The receiving side's policy: ACL, bounds, deadlines, audit. Sans-IO.
#[derive(Clone, Debug)]
pub struct RpcServer {
    cfg: RpcServerConfig,
    acl: Acl,
    calls: Vec<ServerCall>,
    stats: RpcServerStats,
}

impl RpcServer {
    /// A server with `cfg` and `acl`.
    pub fn new(cfg: RpcServerConfig, acl: Acl) -> Self {
        RpcServer {
            cfg,
            acl,
            calls: Vec::new(),
            stats: RpcServerStats::default(),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &RpcServerConfig {
        &self.cfg
    }

    /// The ACL in force.
    pub fn acl(&self) -> &Acl {
        &self.acl
    }

    /// Replaces the ACL (calls in flight are not revisited).
    pub fn set_acl(&mut self, acl: Acl) {
        self.acl = acl;
    }

    /// Counters.
    pub fn stats(&self) -> RpcServerStats {
        self.stats
    }

    /// Calls in flight from `peer`.
    pub fn in_flight(&self, peer: &DeviceId) -> usize {
        self.calls.iter().filter(|c| &c.peer == peer).count()
    }

    /// Calls in flight in total.
    pub fn in_flight_total(&self) -> usize {
        self.calls.len()
    }

    /// Judges one request. Checks, in order: authenticated origin, ACL,
    /// request size, duplicate call id, in-flight bounds. Allowed calls
    /// are recorded in flight until [`complete`](Self::complete),
    /// [`handle_timeout`](Self::handle_timeout) or
    /// [`peer_gone`](Self::peer_gone).
    pub fn handle_request(&mut self, origin: Origin<'_>, req: Request, now: Instant) -> Handled {
        let peer = match origin {
            Origin::Authenticated(p) => p,
            Origin::Unauthenticated => {
                return self.deny(None, req, DenyReason::Unauthenticated);
            }
        };
        if !self.acl.allows(peer, &req.service) {
            return self.deny(Some(peer), req, DenyReason::Acl);
        }
        if req.payload.len() > self.cfg.max_request_payload {
            return self.deny(Some(peer), req, DenyReason::TooLarge);
        }
        if self
            .calls
            .iter()
            .any(|c| &c.peer == peer && c.call_id == req.call_id)
        {
            return self.deny(Some(peer), req, DenyReason::DuplicateId);
        }
        if self.in_flight(peer) >= self.cfg.max_in_flight_per_peer
            || self.calls.len() >= self.cfg.max_in_flight_total
        {
            return self.deny(Some(peer), req, DenyReason::Busy);
        }
        let ms = req.timeout_ms.min(self.cfg.max_deadline_ms);
        let deadline = now.saturating_add(Duration::from_millis(u64::from(ms)));
        self.calls.push(ServerCall {
            peer: peer.clone(),
            call_id: req.call_id,
            deadline,
        });
        self.stats.allowed = self.stats.allowed.saturating_add(1);
        Handled {
            audit: AuditEvent {
                peer: Some(peer.clone()),
                service: req.service.clone(),
                call_id: req.call_id,
                verdict: Verdict::Allowed,
            },
            action: ServerAction::Dispatch(Dispatch {
                peer: peer.clone(),
                call_id: req.call_id,
                service: req.service,
                payload: req.payload,
                deadline,
            }),
        }
    }

    fn deny(&mut self, peer: Option<&DeviceId>, req: Request, reason: DenyReason) -> Handled {
        self.stats.denied = self.stats.denied.saturating_add(1);
        let action = match reason.status() {
            Some(st) => ServerAction::Reply(encode_reply(req.call_id, st, &[])),
            None => ServerAction::Drop,
        };
        Handled {
            audit: AuditEvent {
                peer: peer.cloned(),
                service: req.service,
                call_id: req.call_id,
                verdict: Verdict::Denied(reason),
            },
            action,
        }
    }

    /// The local service answered call `call_id` of `peer` with `status`
    /// (`Ok` with `payload`, or e.g. `UnknownService` / `Unavailable`).
    /// Returns the reply to send to `peer`, or `None` if that call is not
    /// in flight (already expired, peer gone, or never dispatched). A
    /// payload over `max_reply_payload` becomes `too-large`; an answer at
    /// or after the deadline becomes `deadline`.
    pub fn complete(
        &mut self,
        peer: &DeviceId,
        call_id: u32,
        status: Status,
        payload: &[u8],
        now: Instant,
    ) -> Option<Vec<u8>> {
        let i = self
            .calls
            .iter()
            .position(|c| &c.peer == peer && c.call_id == call_id)?;
        let call = self.calls.swap_remove(i);
        let status = if now >= call.deadline {
            self.stats.expired = self.stats.expired.saturating_add(1);
            Status::Deadline
        } else if status == Status::Ok && payload.len() > self.cfg.max_reply_payload {
            self.stats.replies_too_large = self.stats.replies_too_large.saturating_add(1);
            Status::TooLarge
        } else {
            status
        };
        Some(encode_reply(call_id, status, payload))
    }

    /// The earliest deadline in flight.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.calls.iter().map(|c| c.deadline).min()
    }

    /// Expires every call whose deadline is at or before `now`; the daemon
    /// sends each reply and abandons the local call. At most
    /// `max_in_flight_total` entries.
    pub fn handle_timeout(&mut self, now: Instant) -> Vec<Expired> {
        let mut out = Vec::new();
        let mut i = 0;
        while i < self.calls.len() {
            if self.calls[i].deadline <= now {
                let c = self.calls.swap_remove(i);
                self.stats.expired = self.stats.expired.saturating_add(1);
                out.push(Expired {
                    reply: encode_reply(c.call_id, Status::Deadline, &[]),
                    peer: c.peer,
                    call_id: c.call_id,
                });
            } else {
                i += 1;
            }
        }
        out
    }

    /// The session with `peer` ended: forget its calls (their answers, if
    /// any come, are dropped by `complete`). Returns how many were dropped.
    pub fn peer_gone(&mut self, peer: &DeviceId) -> usize {
        let before = self.calls.len();
        self.calls.retain(|c| &c.peer != peer);
        before - self.calls.len()
    }
}

// ---------------------------------------------------------------------------
// Client
// ---------------------------------------------------------------------------

/// Client bounds. Defaults in parentheses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RpcClientConfig {
    /// Calls in flight over all peers (16); more are refused locally.
    pub max_in_flight: usize,
    /// Request payload bound (8192 bytes; never above
    /// [`MAX_WIRE_REQUEST_PAYLOAD`]).
    pub max_request_payload: usize,
    /// Reply payload bound (8192 bytes); a longer reply completes the call
    /// with `too-large`.
    pub max_reply_payload: usize,
}

impl Default for RpcClientConfig {
    fn default() -> Self {
        RpcClientConfig {
            max_in_flight: 16,
            max_request_payload: 8192,
            max_reply_payload: 8192,
        }
    }
}

/// Why [`RpcClient::call`] refused to issue a call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CallError {
    /// `max_in_flight` calls are outstanding.
    Busy,
    /// Payload over the request bound.
    TooLarge,
    /// Timeout of 0 ms.
    ZeroTimeout,
}

impl fmt::Display for CallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CallError::Busy => "too many calls in flight",
            CallError::TooLarge => "request too large",
            CallError::ZeroTimeout => "zero timeout",
        })
    }
}

/// An issued call: send `bytes` as one data message to the peer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outgoing {
    /// The call id chosen.
    pub call_id: u32,
    /// The encoded request.
    pub bytes: Vec<u8>,
    /// When the client gives up (caller's clock).
    pub deadline: Instant,
}

/// A finished call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Completion {
    /// The peer called.
    pub peer: DeviceId,
    /// The call id.
    pub call_id: u32,
    /// The service called.
    pub service: ServiceName,
    /// The answer, or why there is none (`Deadline` when the client's own
    /// deadline passed, `Unavailable` when the session ended).
    pub result: Result<Vec<u8>, Status>,
}

#[derive(Clone, Debug)]
struct ClientCall {
    peer: DeviceId,
    call_id: u32,
    service: ServiceName,
    deadline: Instant,
}

/// The calling side: issues calls, matches replies, times out. Sans-IO.
#[derive(Clone, Debug)]
pub struct RpcClient {
    cfg: RpcClientConfig,
    next_id: u32,
    calls: Vec<ClientCall>,
    unmatched: u64,
}

impl RpcClient {
    /// A client with `cfg`.
    pub fn new(cfg: RpcClientConfig) -> Self {
        RpcClient {
            cfg,
            next_id: 1,
            calls: Vec::new(),
            unmatched: 0,
        }
    }

    /// Calls in flight.
    pub fn in_flight(&self) -> usize {
        self.calls.len()
    }

    /// Replies that matched no call in flight (late, unknown, wrong peer).
    pub fn unmatched_replies(&self) -> u64 {
        self.unmatched
    }

    /// Issues a call of `service` on `peer` with `payload`, giving up
    /// `timeout_ms` after `now`. The request tells the server the same
    /// budget.
    pub fn call(
        &mut self,
        peer: &DeviceId,
        service: &ServiceName,
        payload: &[u8],
        timeout_ms: u32,
        now: Instant,
    ) -> Result<Outgoing, CallError> {
        if timeout_ms == 0 {
            return Err(CallError::ZeroTimeout);
        }
        if payload.len() > self.cfg.max_request_payload.min(MAX_WIRE_REQUEST_PAYLOAD) {
            return Err(CallError::TooLarge);
        }
        if self.calls.len() >= self.cfg.max_in_flight {
            return Err(CallError::Busy);
        }
        // Ids in flight are at most max_in_flight, so this ends quickly.
        let mut call_id = self.next_id;
        while self.calls.iter().any(|c| c.call_id == call_id) {
            call_id = call_id.wrapping_add(1);
        }
        self.next_id = call_id.wrapping_add(1);
        let deadline = now.saturating_add(Duration::from_millis(u64::from(timeout_ms)));
        let bytes = Request {
            call_id,
            timeout_ms,
            service: service.clone(),
            payload: payload.to_vec(),
        }
        .encode();
        self.calls.push(ClientCall {
            peer: peer.clone(),
            call_id,
            service: service.clone(),
            deadline,
        });
        Ok(Outgoing {
            call_id,
            bytes,
            deadline,
        })
    }

    /// A reply arrived on the session with `peer`. Completes the matching
    /// call, or returns `None` (counted) if no call of that peer has that id.
    pub fn handle_reply(&mut self, peer: &DeviceId, reply: &Reply) -> Option<Completion> {
        let Some(i) = self
            .calls
            .iter()
            .position(|c| &c.peer == peer && c.call_id == reply.call_id)
        else {
            self.unmatched = self.unmatched.saturating_add(1);
            return None;
        };
        let c = self.calls.swap_remove(i);
        let result = match reply.status {
            Status::Ok if reply.payload.len() > self.cfg.max_reply_payload => Err(Status::TooLarge),
            Status::Ok => Ok(reply.payload.clone()),
            s => Err(s),
        };
        Some(Completion {
            peer: c.peer,
            call_id: c.call_id,
            service: c.service,
            result,
        })
    }

    /// Forgets call `call_id` (the caller gave up on it, or could not send
    /// it); a reply that comes later is counted as unmatched. Returns
    /// whether it was in flight.
    pub fn cancel(&mut self, call_id: u32) -> bool {
        let before = self.calls.len();
        self.calls.retain(|c| c.call_id != call_id);
        before != self.calls.len()
    }

    /// The earliest client deadline.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.calls.iter().map(|c| c.deadline).min()
    }

    /// Completes every call whose deadline is at or before `now` with
    /// `Err(Deadline)`.
    pub fn handle_timeout(&mut self, now: Instant) -> Vec<Completion> {
        self.drain(|c| c.deadline <= now, Status::Deadline)
    }

    /// The session with `peer` ended: its calls complete `Unavailable`.
    pub fn peer_gone(&mut self, peer: &DeviceId) -> Vec<Completion> {
        self.drain(|c| &c.peer == peer, Status::Unavailable)
    }

    fn drain(&mut self, pred: impl Fn(&ClientCall) -> bool, status: Status) -> Vec<Completion> {
        let mut out = Vec::new();
        let mut i = 0;
        while i < self.calls.len() {
            if pred(&self.calls[i]) {
                let c = self.calls.swap_remove(i);
                out.push(Completion {
                    peer: c.peer,
                    call_id: c.call_id,
                    service: c.service,
                    result: Err(status),
                });
            } else {
                i += 1;
            }
        }
        out
    }
}
