//! The service-registry protocol: `samgrd` keeps the table of service names
//! registered in this OS; services register at start, `dsoftbusd` resolves
//! names and forwards remote calls to it.
//!
//! One request per message, one answer per request. Both start with a
//! 4-byte big-endian tag chosen by the client and echoed in the answer, so a
//! client that gave up on a request (deadline) can drop its late answer.
//!
//! Request: `tag u32`, `op u8`, then
//! - op 1 register: `len u8`, name (`len` bytes), info (the rest, at most
//!   [`MAX_INFO`] bytes);
//! - op 2 resolve: name (the rest);
//! - op 3 call: `len u8`, name, payload (the rest, at most
//!   [`MAX_CALL_PAYLOAD`] bytes).
//!
//! Names follow the soft bus's service-name rules (`dsoftbus::ServiceName`:
//! 1..=64 bytes, printable ASCII), so a name that can be registered can be
//! named in a remote call and in an ACL.
//!
//! **Who may register what.** A service registers only its own process
//! name: samgrd knows which process is on each channel (init linked it as
//! `client:<process>`, which no process can forge) and answers
//! [`Status::Denied`] to a `register` of any other name
//! ([`Registry::handle`] takes the owner), so a compromised service cannot
//! squat the name of one that starts later. [`register_self`] registers the
//! caller under its own name.
//!
//! Answer: `tag u32`, `status u8` ([`Status`]), then for `ok` the payload
//! (the info for resolve, nothing for register, the service's answer for
//! call; at most [`MAX_CALL_PAYLOAD`] bytes). Decoding is total.
//!
//! Over a remote call, the `samgr` service takes a name as its payload and
//! answers with a [`Resolution`] ([`encode_resolution`]).

#![no_std]

extern crate alloc;

use alloc::string::String;
use alloc::vec::Vec;
use core::cell::Cell;

use dsoftbus::ServiceName;
use nexus_abi::{Caps, Channel};

/// Longest info string a registration carries.
pub const MAX_INFO: usize = 64;
/// Largest call payload (request or answer); the soft bus's default RPC
/// bound.
pub const MAX_CALL_PAYLOAD: usize = 8192;
/// Most names samgrd's table holds; a registration past it is refused
/// [`Status::Full`].
pub const MAX_SERVICES: usize = 32;
/// The registry's own name.
pub const SAMGR: &str = "samgr";

const OP_REGISTER: u8 = 1;
const OP_RESOLVE: u8 = 2;
const OP_CALL: u8 = 3;

/// A request to samgrd.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    /// Register `name` (re-registering replaces the info).
    Register {
        /// The service name.
        name: ServiceName,
        /// A short description (at most [`MAX_INFO`] bytes).
        info: Vec<u8>,
    },
    /// Is `name` registered? Ok answer: its info.
    Resolve(ServiceName),
    /// Call `name` (a service samgrd serves) with `payload`.
    Call {
        /// The service name.
        name: ServiceName,
        /// Opaque bytes (at most [`MAX_CALL_PAYLOAD`]).
        payload: Vec<u8>,
    },
}

/// Answer status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Status {
    /// Done; the payload follows.
    Ok = 0,
    /// No service of that name is registered.
    NotFound = 1,
    /// The request did not decode.
    Malformed = 2,
    /// The table is full ([`MAX_SERVICES`]).
    Full = 3,
    /// Registered, but samgrd cannot reach it for a call.
    Unavailable = 4,
    /// A register of a name that is not the registering process's own.
    Denied = 5,
}

impl Status {
    fn from_u8(b: u8) -> Option<Status> {
        Some(match b {
            0 => Status::Ok,
            1 => Status::NotFound,
            2 => Status::Malformed,
            3 => Status::Full,
            4 => Status::Unavailable,
            5 => Status::Denied,
            _ => return None,
        })
    }

    /// Short name for logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::NotFound => "not registered",
            Status::Malformed => "malformed",
            Status::Full => "registry full",
            Status::Unavailable => "unavailable",
            Status::Denied => "not this process's name",
        }
    }
}

/// Why a client call failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SamgrError {
    /// samgrd answered with a non-ok status.
    Status(Status),
    /// A malformed answer, or a request that cannot be encoded.
    Malformed,
    /// The channel failed (samgrd gone).
    Gone,
}

impl core::fmt::Display for SamgrError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            SamgrError::Status(s) => f.write_str(s.as_str()),
            SamgrError::Malformed => f.write_str("malformed samgr message"),
            SamgrError::Gone => f.write_str("samgrd channel closed"),
        }
    }
}

fn name_of(b: &[u8]) -> Option<ServiceName> {
    core::str::from_utf8(b)
        .ok()
        .and_then(|s| ServiceName::new(s).ok())
}

fn push_name(v: &mut Vec<u8>, name: &ServiceName) {
    let s = name.as_str().as_bytes();
    // A ServiceName is 1..=64 bytes.
    v.push(u8::try_from(s.len()).unwrap_or(u8::MAX));
    v.extend_from_slice(s);
}

/// Split `len u8, name, rest`.
fn split_name(b: &[u8]) -> Option<(ServiceName, &[u8])> {
    let (&len, rest) = b.split_first()?;
    let len = usize::from(len);
    if rest.len() < len {
        return None;
    }
    let (name, rest) = rest.split_at(len);
    Some((name_of(name)?, rest))
}

fn split_tag(b: &[u8]) -> Option<(u32, &[u8])> {
    let (tag, rest) = b.split_first_chunk::<4>()?;
    Some((u32::from_be_bytes(*tag), rest))
}

impl Request {
    /// Encode with `tag`.
    pub fn encode(&self, tag: u32) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&tag.to_be_bytes());
        match self {
            Request::Register { name, info } => {
                v.push(OP_REGISTER);
                push_name(&mut v, name);
                v.extend_from_slice(info);
            }
            Request::Resolve(name) => {
                v.push(OP_RESOLVE);
                v.extend_from_slice(name.as_str().as_bytes());
            }
            Request::Call { name, payload } => {
                v.push(OP_CALL);
                push_name(&mut v, name);
                v.extend_from_slice(payload);
            }
        }
        v
    }

    /// Decode; total. `Err` carries the tag when there is one, so the
    /// server can still answer `malformed` to the right request.
    pub fn decode(b: &[u8]) -> Result<(u32, Request), Option<u32>> {
        let (tag, rest) = split_tag(b).ok_or(None)?;
        let bad = Err(Some(tag));
        let Some((&op, body)) = rest.split_first() else {
            return bad;
        };
        let req = match op {
            OP_REGISTER => match split_name(body) {
                Some((name, info)) if info.len() <= MAX_INFO => Request::Register {
                    name,
                    info: info.to_vec(),
                },
                _ => return bad,
            },
            OP_RESOLVE => match name_of(body) {
                Some(name) => Request::Resolve(name),
                None => return bad,
            },
            OP_CALL => match split_name(body) {
                Some((name, payload)) if payload.len() <= MAX_CALL_PAYLOAD => Request::Call {
                    name,
                    payload: payload.to_vec(),
                },
                _ => return bad,
            },
            _ => return bad,
        };
        Ok((tag, req))
    }
}

/// Encode an answer. A non-ok answer carries no payload.
pub fn encode_answer(tag: u32, r: &Result<Vec<u8>, Status>) -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(&tag.to_be_bytes());
    match r {
        Ok(payload) => {
            v.push(Status::Ok as u8);
            v.extend_from_slice(payload);
        }
        Err(s) => v.push(*s as u8),
    }
    v
}

/// Decode an answer; total. A non-ok status with a payload, an `Ok` status
/// code inside `Err`, or an oversized payload is malformed.
pub fn decode_answer(b: &[u8]) -> Result<(u32, Result<Vec<u8>, Status>), SamgrError> {
    let (tag, rest) = split_tag(b).ok_or(SamgrError::Malformed)?;
    match rest.split_first() {
        Some((&0, payload)) if payload.len() <= MAX_CALL_PAYLOAD => Ok((tag, Ok(payload.to_vec()))),
        Some((&s, [])) => match Status::from_u8(s) {
            Some(st) if st != Status::Ok => Ok((tag, Err(st))),
            _ => Err(SamgrError::Malformed),
        },
        _ => Err(SamgrError::Malformed),
    }
}

/// What the `samgr` service answers a remote resolve with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Resolution {
    /// Registered, with its info.
    Registered(String),
    /// No such name.
    Unknown,
}

/// Encode a resolution: `1` then the info, or `0`.
pub fn encode_resolution(r: &Resolution) -> Vec<u8> {
    match r {
        Resolution::Registered(info) => {
            let mut v = alloc::vec![1];
            v.extend_from_slice(info.as_bytes());
            v
        }
        Resolution::Unknown => alloc::vec![0],
    }
}

/// Decode a resolution; total (`None`: not one). The info must be printable
/// ASCII of at most [`MAX_INFO`] bytes (it is logged).
pub fn decode_resolution(b: &[u8]) -> Option<Resolution> {
    match b {
        [0] => Some(Resolution::Unknown),
        [1, info @ ..]
            if info.len() <= MAX_INFO && info.iter().all(|c| (0x20..0x7f).contains(c)) =>
        {
            core::str::from_utf8(info)
                .ok()
                .map(|s| Resolution::Registered(String::from(s)))
        }
        _ => None,
    }
}

/// samgrd's table and the services it serves itself, sans-IO: every
/// request in, one answer out. Holds at most [`MAX_SERVICES`] names.
#[derive(Clone, Debug, Default)]
pub struct Registry {
    entries: Vec<(ServiceName, String)>,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Registry::default()
    }

    /// Register `name` (replacing its info if it is already there).
    pub fn register(&mut self, name: ServiceName, info: &str) -> Result<(), Status> {
        let info = String::from(info);
        if let Some(e) = self.entries.iter_mut().find(|(n, _)| *n == name) {
            e.1 = info;
            return Ok(());
        }
        if self.entries.len() >= MAX_SERVICES {
            return Err(Status::Full);
        }
        self.entries.push((name, info));
        Ok(())
    }

    /// The info of `name`, if registered.
    pub fn resolve(&self, name: &ServiceName) -> Option<&str> {
        self.entries
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, i)| i.as_str())
    }

    /// Names registered.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when nothing is registered.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Answer one request message from the process `owner` (the process
    /// name init linked the channel to; total: any bytes get an answer, or
    /// `None` when not even a tag can be read). `owner` may register only
    /// the name `owner` ([`Status::Denied`] otherwise).
    ///
    /// Services samgrd serves for calls: `samgr` (payload: a name; answer:
    /// an encoded [`Resolution`]) and `echo` (answer: the payload), each
    /// only while registered. Any other registered name is
    /// [`Status::Unavailable`] for calls (samgrd has no channel to it).
    pub fn handle(&mut self, owner: &str, msg: &[u8]) -> Option<Vec<u8>> {
        let (tag, req) = match Request::decode(msg) {
            Ok(x) => x,
            Err(Some(tag)) => return Some(encode_answer(tag, &Err(Status::Malformed))),
            Err(None) => return None,
        };
        let r = match req {
            Request::Register { name, .. } if name.as_str() != owner => Err(Status::Denied),
            Request::Register { name, info } => match core::str::from_utf8(&info) {
                Ok(i) if i.bytes().all(|c| (0x20..0x7f).contains(&c)) => {
                    self.register(name, i).map(|()| Vec::new())
                }
                _ => Err(Status::Malformed),
            },
            Request::Resolve(name) => self
                .resolve(&name)
                .map(|i| i.as_bytes().to_vec())
                .ok_or(Status::NotFound),
            Request::Call { name, payload } => self.call(&name, payload),
        };
        Some(encode_answer(tag, &r))
    }

    fn call(&self, name: &ServiceName, payload: Vec<u8>) -> Result<Vec<u8>, Status> {
        self.resolve(name).ok_or(Status::NotFound)?;
        match name.as_str() {
            SAMGR => {
                let res = core::str::from_utf8(&payload)
                    .ok()
                    .and_then(|s| ServiceName::new(s).ok())
                    .map(|n| match self.resolve(&n) {
                        Some(i) => Resolution::Registered(String::from(i)),
                        None => Resolution::Unknown,
                    })
                    .ok_or(Status::Malformed)?;
                Ok(encode_resolution(&res))
            }
            ECHO => Ok(payload),
            _ => Err(Status::Unavailable),
        }
    }
}

/// Registers the calling process under its own name ([`Caps::name`]) with
/// `info`, on the channel init granted it as `samgr`. `Ok(false)` when it
/// has no such channel (init did not link it to samgrd).
pub async fn register_self(caps: &mut Caps, info: &str) -> Result<bool, SamgrError> {
    match connect_and_register(caps, info).await {
        None => Ok(false),
        Some((_, r)) => r.map(|()| true),
    }
}

/// [`register_self`] for a service that keeps talking to samgrd afterwards
/// (dsoftbusd forwards calls): the client, and how the registration went.
/// `None` when init did not link the process to samgrd.
pub async fn connect_and_register(
    caps: &mut Caps,
    info: &str,
) -> Option<(SamgrClient, Result<(), SamgrError>)> {
    let chan = caps.take_channel("samgr")?;
    let client = SamgrClient::new(chan);
    let r = match ServiceName::new(caps.name()) {
        Ok(name) => client.register(&name, info).await,
        Err(_) => Err(SamgrError::Malformed),
    };
    Some((client, r))
}

/// The demo service samgrd serves itself.
pub const ECHO: &str = "echo";

/// A client of samgrd on one channel. Requests are serialised (one in
/// flight at a time, in order); a caller that stops waiting (its future is
/// dropped at a deadline) releases the channel, and the late answer is
/// dropped by tag on the next call.
#[derive(Debug)]
pub struct SamgrClient {
    chan: Channel,
    next_tag: Cell<u32>,
    busy: Cell<bool>,
}

/// Releases the client's one slot when the call ends or is dropped.
struct Slot<'a>(&'a Cell<bool>);

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.0.set(false);
    }
}

impl SamgrClient {
    /// Wrap the channel granted as `samgr`.
    pub fn new(chan: Channel) -> Self {
        SamgrClient {
            chan,
            next_tag: Cell::new(1),
            busy: Cell::new(false),
        }
    }

    /// One request, its answer's payload.
    pub async fn call(&self, req: &Request) -> Result<Vec<u8>, SamgrError> {
        while self.busy.replace(true) {
            nexus_abi::time::yield_now().await;
        }
        let _slot = Slot(&self.busy);
        let tag = self.next_tag.get();
        self.next_tag.set(tag.wrapping_add(1));
        self.chan
            .send(&req.encode(tag))
            .await
            .map_err(|_| SamgrError::Gone)?;
        loop {
            let msg = self.chan.recv().await.map_err(|_| SamgrError::Gone)?;
            match decode_answer(&msg) {
                // A late answer to a request given up on: drop it.
                Ok((t, _)) if t != tag => continue,
                Ok((_, r)) => return r.map_err(SamgrError::Status),
                Err(e) => return Err(e),
            }
        }
    }

    /// Register `name` with `info`.
    pub async fn register(&self, name: &ServiceName, info: &str) -> Result<(), SamgrError> {
        if info.len() > MAX_INFO {
            return Err(SamgrError::Malformed);
        }
        self.call(&Request::Register {
            name: name.clone(),
            info: info.as_bytes().to_vec(),
        })
        .await
        .map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> ServiceName {
        match ServiceName::new(s) {
            Ok(n) => n,
            Err(e) => panic!("{s}: {e:?}"),
        }
    }

    #[test]
    fn round_trips() {
        for r in [
            Request::Register {
                name: n("echo"),
                info: b"served by samgrd".to_vec(),
            },
            Request::Resolve(n("samgr")),
            Request::Call {
                name: n("echo"),
                payload: alloc::vec![1, 2, 3],
            },
            Request::Call {
                name: n("echo"),
                payload: alloc::vec![],
            },
        ] {
            assert_eq!(Request::decode(&r.encode(7)), Ok((7, r)));
        }
        for a in [
            Ok(alloc::vec![9; 40]),
            Ok(alloc::vec![]),
            Err(Status::NotFound),
            Err(Status::Malformed),
            Err(Status::Full),
            Err(Status::Unavailable),
        ] {
            assert_eq!(
                decode_answer(&encode_answer(0xdead_beef, &a)),
                Ok((0xdead_beef, a))
            );
        }
        for r in [
            Resolution::Registered(String::from("x y")),
            Resolution::Unknown,
        ] {
            assert_eq!(decode_resolution(&encode_resolution(&r)), Some(r));
        }
    }

    #[test]
    fn refuses_bad_input() {
        assert_eq!(Request::decode(&[0, 0, 0]), Err(None));
        assert_eq!(Request::decode(&[0, 0, 0, 5]), Err(Some(5)));
        assert_eq!(Request::decode(&[0, 0, 0, 5, 9]), Err(Some(5)));
        // Empty name, name length past the end, bad name bytes.
        assert_eq!(Request::decode(&[0, 0, 0, 1, OP_RESOLVE]), Err(Some(1)));
        assert_eq!(
            Request::decode(&[0, 0, 0, 1, OP_CALL, 9, b'a']),
            Err(Some(1))
        );
        assert_eq!(
            Request::decode(&[0, 0, 0, 1, OP_RESOLVE, 0xff]),
            Err(Some(1))
        );
        let mut long_info = Request::Register {
            name: n("a"),
            info: alloc::vec![],
        }
        .encode(1);
        long_info.extend_from_slice(&[b'x'; MAX_INFO + 1]);
        assert_eq!(Request::decode(&long_info), Err(Some(1)));
        let big = Request::Call {
            name: n("a"),
            payload: alloc::vec![0; MAX_CALL_PAYLOAD + 1],
        }
        .encode(1);
        assert_eq!(Request::decode(&big), Err(Some(1)));
        // Non-ok status with payload, unknown status, Ok code as an error.
        assert_eq!(
            decode_answer(&[0, 0, 0, 1, 1, 0]),
            Err(SamgrError::Malformed)
        );
        assert_eq!(decode_answer(&[0, 0, 0, 1, 99]), Err(SamgrError::Malformed));
        assert_eq!(decode_answer(&[0, 0, 0, 1]), Err(SamgrError::Malformed));
        assert_eq!(decode_resolution(&[1, b'\n']), None);
        assert_eq!(decode_resolution(&[2]), None);
        assert_eq!(decode_resolution(&[]), None);
    }

    #[test]
    fn registry_serves() {
        let mut r = Registry::new();
        assert_eq!(r.register(n(SAMGR), "the registry"), Ok(()));
        assert_eq!(r.register(n(ECHO), "echo"), Ok(()));
        let ask = |r: &mut Registry, req: Request| {
            r.handle("dsoftbus", &req.encode(3))
                .map(|a| decode_answer(&a))
        };
        assert_eq!(
            ask(&mut r, Request::Resolve(n("echo"))),
            Some(Ok((3, Ok(b"echo".to_vec()))))
        );
        assert_eq!(
            ask(&mut r, Request::Resolve(n("nope"))),
            Some(Ok((3, Err(Status::NotFound))))
        );
        let call = |name: &str, p: &[u8]| Request::Call {
            name: n(name),
            payload: p.to_vec(),
        };
        assert_eq!(
            ask(&mut r, call(SAMGR, b"echo")),
            Some(Ok((
                3,
                Ok(encode_resolution(&Resolution::Registered(String::from(
                    "echo"
                ))))
            )))
        );
        assert_eq!(
            ask(&mut r, call(SAMGR, b"nope")),
            Some(Ok((3, Ok(encode_resolution(&Resolution::Unknown)))))
        );
        assert_eq!(
            ask(&mut r, call(ECHO, b"hi")),
            Some(Ok((3, Ok(b"hi".to_vec()))))
        );
        assert_eq!(
            ask(&mut r, call("nope", b"")),
            Some(Ok((3, Err(Status::NotFound))))
        );
        let reg = Request::Register {
            name: n("dsoftbus"),
            info: b"soft bus".to_vec(),
        };
        assert_eq!(ask(&mut r, reg), Some(Ok((3, Ok(alloc::vec![])))));
        assert_eq!(
            ask(&mut r, call("dsoftbus", b"")),
            Some(Ok((3, Err(Status::Unavailable))))
        );
        assert_eq!(r.handle("dsoftbus", &[1, 2]), None);
        assert_eq!(
            r.handle("dsoftbus", &[0, 0, 0, 4, 77])
                .map(|a| decode_answer(&a)),
            Some(Ok((4, Err(Status::Malformed))))
        );
        // A process registers only its own name: no squatting.
        let squat = Request::Register {
            name: n("keystored"),
            info: b"mine now".to_vec(),
        };
        assert_eq!(ask(&mut r, squat), Some(Ok((3, Err(Status::Denied)))));
        assert_eq!(r.resolve(&n("keystored")), None);
        assert_eq!(
            r.handle(
                "keystored",
                &Request::Register {
                    name: n("keystored"),
                    info: b"keys".to_vec()
                }
                .encode(9)
            )
            .map(|a| decode_answer(&a)),
            Some(Ok((9, Ok(alloc::vec![]))))
        );
        let overwrite = Request::Register {
            name: n("keystored"),
            info: b"hijacked".to_vec(),
        };
        assert_eq!(ask(&mut r, overwrite), Some(Ok((3, Err(Status::Denied)))));
        assert_eq!(r.resolve(&n("keystored")), Some("keys"));
        assert_eq!(
            decode_answer(&[0, 0, 0, 1, 5]),
            Ok((1, Err(Status::Denied)))
        );
        // Bounded: MAX_SERVICES names, then full; re-registering still works.
        for i in r.len()..MAX_SERVICES {
            assert_eq!(r.register(n(&alloc::format!("s{i}")), ""), Ok(()));
        }
        assert_eq!(r.register(n("one-more"), ""), Err(Status::Full));
        assert_eq!(r.register(n(ECHO), "again"), Ok(()));
        assert_eq!(r.len(), MAX_SERVICES);
    }

    proptest::proptest! {
        #[test]
        fn decode_is_total(b in proptest::collection::vec(proptest::num::u8::ANY, 0..120)) {
            if let Ok((tag, r)) = Request::decode(&b) {
                proptest::prop_assert_eq!(Request::decode(&r.encode(tag)), Ok((tag, r)));
            }
            let _ = decode_answer(&b);
            let _ = decode_resolution(&b);
            let mut r = Registry::new();
            let _ = r.handle("any", &b);
        }
    }
}
