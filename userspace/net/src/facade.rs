//! The sockets facade: protocol types and their byte encoding.
//!
//! This module is the wire layer of the facade, in the smoltcp sense: plain
//! data types plus a total codec, no state. Clients send a [`Request`] tagged
//! with a client-chosen `req_id`; the engine answers each request exactly once
//! with a [`Response`] carrying the same `req_id` (immediately, or later from
//! [`Engine::poll`](crate::Engine::poll) when the request had to wait).
//!
//! # Encoding (v1)
//!
//! A message is one byte [`FACADE_VERSION`] followed by the
//! [postcard](https://docs.rs/postcard) encoding of the pair `(req_id: u32,
//! body)`, where `body` is a [`Request`] or a [`Response`]. postcard encodes
//! integers as LEB128 varints, enums as a varint variant index, byte vectors as
//! a varint length and the bytes. **Variant order is therefore part of the wire
//! format**: new variants are appended, never inserted or reordered; a test
//! pins the exact bytes of a few messages.
//!
//! Messages are at most [`MAX_MESSAGE_SIZE`](crate::limits::MAX_MESSAGE_SIZE)
//! bytes; payloads at most [`MAX_DATA_LEN`](crate::limits::MAX_DATA_LEN).
//! Decoding is total: any byte string yields a value or a [`CodecError`],
//! never a panic, and never allocates more than the input length.

use alloc::vec::Vec;
use core::fmt;

use serde::{Deserialize, Serialize};
use smoltcp::wire::{IpAddress, IpEndpoint, Ipv4Address};

use crate::limits::{MAX_DATA_LEN, MAX_MESSAGE_SIZE, MAX_STREAM_DATA_LEN};

/// Version byte that starts every facade message.
pub const FACADE_VERSION: u8 = 1;

/// An IPv4 address on the wire (network byte order octets).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ipv4(pub [u8; 4]);

impl Ipv4 {
    /// `0.0.0.0`: "any address" in binds.
    pub const UNSPECIFIED: Ipv4 = Ipv4([0, 0, 0, 0]);
    /// `127.0.0.1`.
    pub const LOCALHOST: Ipv4 = Ipv4([127, 0, 0, 1]);
    /// `255.255.255.255`.
    pub const BROADCAST: Ipv4 = Ipv4([255, 255, 255, 255]);

    /// Builds an address from its four octets.
    pub const fn new(a: u8, b: u8, c: u8, d: u8) -> Ipv4 {
        Ipv4([a, b, c, d])
    }
}

impl From<Ipv4Address> for Ipv4 {
    fn from(a: Ipv4Address) -> Ipv4 {
        Ipv4(a.octets())
    }
}

impl From<Ipv4> for Ipv4Address {
    fn from(a: Ipv4) -> Ipv4Address {
        Ipv4Address::from(a.0)
    }
}

impl fmt::Display for Ipv4 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d] = self.0;
        write!(f, "{a}.{b}.{c}.{d}")
    }
}

/// An IPv4 socket address on the wire.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SockAddr {
    /// Address.
    pub ip: Ipv4,
    /// Port.
    pub port: u16,
}

impl SockAddr {
    /// Builds a socket address.
    pub const fn new(ip: Ipv4, port: u16) -> SockAddr {
        SockAddr { ip, port }
    }

    /// Converts a smoltcp endpoint; `None` for a non-IPv4 endpoint.
    pub fn from_endpoint(ep: IpEndpoint) -> Option<SockAddr> {
        match ep.addr {
            IpAddress::Ipv4(a) => Some(SockAddr::new(a.into(), ep.port)),
            #[allow(unreachable_patterns)]
            _ => None,
        }
    }

    /// The smoltcp endpoint for this address.
    pub fn to_endpoint(self) -> IpEndpoint {
        IpEndpoint::new(IpAddress::Ipv4(self.ip.into()), self.port)
    }
}

impl fmt::Display for SockAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.ip, self.port)
    }
}

/// Opaque socket handle. Valid only for the client that received it: the
/// engine looks handles up by `(client, handle)`, so another client's handle is
/// indistinguishable from a made-up number (`Error::InvalidSocket`).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SocketId(pub u32);

/// An IPv4 address with its prefix length.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ipv4Cidr {
    /// Address.
    pub addr: Ipv4,
    /// Prefix length, 0..=32.
    pub prefix_len: u8,
}

/// Snapshot of the interfaces, answered to [`Request::InterfaceStatus`].
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct InterfaceStatus {
    /// NIC MAC address.
    pub mac: [u8; 6],
    /// NIC address from the DHCP lease, else the link-local address;
    /// `None` while unconfigured.
    pub ipv4: Option<Ipv4Cidr>,
    /// Default gateway from the lease.
    pub gateway: Option<Ipv4>,
    /// DNS servers from the lease (at most
    /// [`MAX_DNS_SERVERS`](crate::limits::MAX_DNS_SERVERS)).
    pub dns: Vec<Ipv4>,
    /// The loopback interface's address (always `127.0.0.1/8`).
    pub loopback: Ipv4Cidr,
    /// `ipv4` is an RFC 3927 link-local address (169.254/16): no DHCP
    /// server answered. A later lease replaces it and clears this flag.
    pub link_local: bool,
}

/// A facade request. Variant order is wire format (append only).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub enum Request {
    /// Open a UDP socket bound to `local`. `0.0.0.0` binds on the NIC and the
    /// loopback interface, a `127/8` address on loopback only, any other
    /// address on the NIC only. Port 0 picks an ephemeral port.
    /// Answer: [`Response::Bound`].
    UdpBind {
        /// Local address.
        local: SockAddr,
    },
    /// Queue one datagram to `dst` (unicast, `255.255.255.255`, the subnet
    /// broadcast, or a multicast group). Answer: [`Response::Sent`].
    UdpSendTo {
        /// Socket from `UdpBind`.
        socket: SocketId,
        /// Destination.
        dst: SockAddr,
        /// Payload, at most `MAX_DATA_LEN` bytes.
        data: Vec<u8>,
    },
    /// Receive one datagram; waits until one arrives.
    /// Answer: [`Response::Datagram`].
    UdpRecvFrom {
        /// Socket from `UdpBind`.
        socket: SocketId,
    },
    /// Join an IPv4 multicast group on the NIC (IGMPv2 report). The socket
    /// then receives datagrams sent to `group` on its port. Answer: `Ok`.
    UdpJoinMulticast {
        /// Socket from `UdpBind`.
        socket: SocketId,
        /// Group address (224.0.0.0/4).
        group: Ipv4,
    },
    /// Leave a group joined through this socket. Answer: `Ok`.
    UdpLeaveMulticast {
        /// Socket from `UdpBind`.
        socket: SocketId,
        /// Group address.
        group: Ipv4,
    },
    /// Listen for TCP connections on `local` (same address rules as
    /// `UdpBind`; port must be non-zero). Answer: [`Response::Bound`].
    TcpListen {
        /// Local address.
        local: SockAddr,
        /// Connections accepted by the stack ahead of `TcpAccept`,
        /// 1..=`MAX_BACKLOG` (0 means 1, larger values are clamped).
        backlog: u8,
    },
    /// Take one established connection from a listener; waits for one.
    /// Answer: [`Response::Accepted`].
    TcpAccept {
        /// Listener from `TcpListen`.
        socket: SocketId,
    },
    /// Connect to `remote` (`127/8` through loopback, anything else through
    /// the NIC); waits until established. Answer: [`Response::Connected`].
    TcpConnect {
        /// Peer address.
        remote: SockAddr,
    },
    /// Read up to `max_len` bytes (capped at `MAX_STREAM_DATA_LEN`); waits for data.
    /// Answer: [`Response::Data`], empty at end of stream.
    TcpRead {
        /// Stream socket.
        socket: SocketId,
        /// Most bytes wanted.
        max_len: u32,
    },
    /// Queue bytes for sending; waits only while the send buffer is full.
    /// May accept a prefix. Answer: [`Response::Written`].
    TcpWrite {
        /// Stream socket.
        socket: SocketId,
        /// Bytes, at most `MAX_STREAM_DATA_LEN`.
        data: Vec<u8>,
    },
    /// Close any socket. TCP streams send FIN and finish in the background;
    /// requests still waiting on the socket complete with `Error::Closed`.
    /// Answer: `Ok`.
    Close {
        /// Socket to close.
        socket: SocketId,
    },
    /// Local (and, for streams, remote) address of a socket.
    /// Answer: [`Response::Addr`].
    LocalAddr {
        /// Socket.
        socket: SocketId,
    },
    /// Interface status. Answer: [`Response::Status`].
    InterfaceStatus,
    /// ICMP echo to `target`, re-sent every `PING_RETRY_INTERVAL` until a reply
    /// or `timeout_ms` (1..=`MAX_PING_TIMEOUT`, clamped).
    /// Answer: [`Response::Pong`] or `Error(Timeout | NoRoute | NotConfigured)`.
    Ping {
        /// Target address.
        target: Ipv4,
        /// Overall timeout in milliseconds.
        timeout_ms: u32,
    },
}

/// A facade response. Variant order is wire format (append only).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub enum Response {
    /// Success without data.
    Ok,
    /// A UDP socket or TCP listener was created.
    Bound {
        /// New handle.
        socket: SocketId,
        /// Bound address (the port is filled in for port-0 binds).
        local: SockAddr,
    },
    /// A datagram was queued.
    Sent {
        /// Bytes queued.
        len: u32,
    },
    /// A datagram was received.
    Datagram {
        /// Sender.
        src: SockAddr,
        /// Payload.
        data: Vec<u8>,
    },
    /// A connection was accepted; `socket` is a new stream handle.
    Accepted {
        /// New stream handle.
        socket: SocketId,
        /// Local address of the connection.
        local: SockAddr,
        /// Peer address.
        remote: SockAddr,
    },
    /// An outgoing connection is established.
    Connected {
        /// New stream handle.
        socket: SocketId,
        /// Local address.
        local: SockAddr,
        /// Peer address.
        remote: SockAddr,
    },
    /// Bytes read; empty means the peer closed its side (end of stream).
    Data {
        /// Bytes.
        data: Vec<u8>,
    },
    /// Bytes accepted into the send buffer (may be fewer than offered).
    Written {
        /// Bytes queued.
        len: u32,
    },
    /// Socket addresses.
    Addr {
        /// Local address.
        local: SockAddr,
        /// Peer address, for connected streams.
        remote: Option<SockAddr>,
    },
    /// Interface status.
    Status(InterfaceStatus),
    /// Echo reply received.
    Pong {
        /// Round-trip time of the echo that was answered, microseconds.
        rtt_us: u64,
    },
    /// The request failed.
    Error(Error),
}

/// Typed facade errors (on the wire; append only).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Error {
    /// Unknown handle, or a handle of another client.
    InvalidSocket,
    /// The handle names a socket of another kind (e.g. `TcpRead` on UDP).
    WrongSocketType,
    /// A socket bound was hit (`MAX_SOCKETS_PER_CLIENT`, `MAX_SOCKETS_TOTAL`
    /// or `MAX_STACK_SOCKETS`).
    NoSockets,
    /// `MAX_CLIENTS` clients are already known to the engine.
    TooManyClients,
    /// `MAX_PENDING_PER_CLIENT` or `MAX_PENDING_TOTAL` requests are waiting.
    TooManyPending,
    /// A request of the same kind is already waiting on this socket.
    Busy,
    /// The socket's send buffer is full; retry after the engine has polled.
    BufferFull,
    /// Address/port already bound by another socket, or no free ephemeral port.
    AddrInUse,
    /// A malformed argument (port 0 where one is needed, non-multicast group,
    /// zero timeout, ...).
    InvalidArgument,
    /// Payload longer than `MAX_DATA_LEN`.
    MessageTooLarge,
    /// The NIC has no address yet (no DHCP lease).
    NotConfigured,
    /// No route to the destination (not on-link and no default gateway).
    NoRoute,
    /// The destination is unreachable.
    Unreachable,
    /// The operation's deadline passed.
    Timeout,
    /// The peer refused or reset the connection attempt.
    ConnectionRefused,
    /// The connection was reset or aborted.
    ConnectionReset,
    /// The stream is not connected (or its sending side is shut).
    NotConnected,
    /// The socket was closed while the request was waiting.
    Closed,
    /// The interface's multicast group table is full.
    MulticastTableFull,
    /// Not supported by this engine.
    Unsupported,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            Error::InvalidSocket => "invalid socket",
            Error::WrongSocketType => "wrong socket type",
            Error::NoSockets => "no sockets left",
            Error::TooManyClients => "too many clients",
            Error::TooManyPending => "too many pending requests",
            Error::Busy => "request already pending on socket",
            Error::BufferFull => "send buffer full",
            Error::AddrInUse => "address in use",
            Error::InvalidArgument => "invalid argument",
            Error::MessageTooLarge => "message too large",
            Error::NotConfigured => "interface not configured",
            Error::NoRoute => "no route to host",
            Error::Unreachable => "destination unreachable",
            Error::Timeout => "timed out",
            Error::ConnectionRefused => "connection refused",
            Error::ConnectionReset => "connection reset",
            Error::NotConnected => "not connected",
            Error::Closed => "socket closed",
            Error::MulticastTableFull => "multicast group table full",
            Error::Unsupported => "unsupported",
        };
        f.write_str(s)
    }
}

#[cfg(feature = "std")]
impl std::error::Error for Error {}

/// Why a byte string is not a valid facade message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CodecError {
    /// Zero-length input.
    Empty,
    /// Input or output longer than `MAX_MESSAGE_SIZE`.
    TooLarge,
    /// First byte is not [`FACADE_VERSION`].
    UnsupportedVersion(u8),
    /// The body does not parse as the expected type.
    Malformed,
    /// Bytes left over after a complete message.
    TrailingBytes,
    /// A payload field exceeds `MAX_DATA_LEN`.
    PayloadTooLarge,
}

impl fmt::Display for CodecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CodecError::Empty => f.write_str("empty message"),
            CodecError::TooLarge => f.write_str("message exceeds MAX_MESSAGE_SIZE"),
            CodecError::UnsupportedVersion(v) => write!(f, "unsupported facade version {v}"),
            CodecError::Malformed => f.write_str("malformed message"),
            CodecError::TrailingBytes => f.write_str("trailing bytes after message"),
            CodecError::PayloadTooLarge => f.write_str("payload exceeds MAX_DATA_LEN"),
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for CodecError {}

impl Request {
    /// Length of the payload this request carries (0 for most).
    pub fn payload_len(&self) -> usize {
        match self {
            Request::UdpSendTo { data, .. } | Request::TcpWrite { data, .. } => data.len(),
            _ => 0,
        }
    }

    /// Largest payload this kind of request may carry: `MAX_DATA_LEN` for a
    /// datagram, `MAX_STREAM_DATA_LEN` for a stream write.
    pub fn payload_limit(&self) -> usize {
        match self {
            Request::TcpWrite { .. } => MAX_STREAM_DATA_LEN,
            _ => MAX_DATA_LEN,
        }
    }
}

impl Response {
    /// Length of the payload this response carries (0 for most).
    pub fn payload_len(&self) -> usize {
        match self {
            Response::Datagram { data, .. } | Response::Data { data } => data.len(),
            _ => 0,
        }
    }

    /// Largest payload this kind of response may carry: `MAX_DATA_LEN` for a
    /// datagram, `MAX_STREAM_DATA_LEN` for stream data.
    pub fn payload_limit(&self) -> usize {
        match self {
            Response::Data { .. } => MAX_STREAM_DATA_LEN,
            _ => MAX_DATA_LEN,
        }
    }
}

fn encode<T: Serialize>(
    req_id: u32,
    body: &T,
    payload_len: usize,
    payload_limit: usize,
) -> Result<Vec<u8>, CodecError> {
    if payload_len > payload_limit {
        return Err(CodecError::PayloadTooLarge);
    }
    let mut buf = alloc::vec![0u8; MAX_MESSAGE_SIZE];
    buf[0] = FACADE_VERSION;
    let used = match buf.get_mut(1..) {
        Some(rest) => postcard::to_slice(&(req_id, body), rest)
            .map_err(|_| CodecError::TooLarge)?
            .len(),
        None => return Err(CodecError::TooLarge),
    };
    buf.truncate(1 + used);
    Ok(buf)
}

fn decode<'de, T: Deserialize<'de>>(bytes: &'de [u8]) -> Result<(u32, T), CodecError> {
    let (&version, body) = bytes.split_first().ok_or(CodecError::Empty)?;
    if bytes.len() > MAX_MESSAGE_SIZE {
        return Err(CodecError::TooLarge);
    }
    if version != FACADE_VERSION {
        return Err(CodecError::UnsupportedVersion(version));
    }
    let (value, rest) =
        postcard::take_from_bytes::<(u32, T)>(body).map_err(|_| CodecError::Malformed)?;
    if !rest.is_empty() {
        return Err(CodecError::TrailingBytes);
    }
    Ok(value)
}

/// Encodes a request message (version byte + postcard body).
pub fn encode_request(req_id: u32, request: &Request) -> Result<Vec<u8>, CodecError> {
    encode(
        req_id,
        request,
        request.payload_len(),
        request.payload_limit(),
    )
}

/// Decodes a request message. Total: never panics on any input.
pub fn decode_request(bytes: &[u8]) -> Result<(u32, Request), CodecError> {
    let (id, req): (u32, Request) = decode(bytes)?;
    if req.payload_len() > req.payload_limit() {
        return Err(CodecError::PayloadTooLarge);
    }
    Ok((id, req))
}

/// Encodes a response message (version byte + postcard body).
pub fn encode_response(req_id: u32, response: &Response) -> Result<Vec<u8>, CodecError> {
    encode(
        req_id,
        response,
        response.payload_len(),
        response.payload_limit(),
    )
}

/// Decodes a response message. Total: never panics on any input.
pub fn decode_response(bytes: &[u8]) -> Result<(u32, Response), CodecError> {
    let (id, resp): (u32, Response) = decode(bytes)?;
    if resp.payload_len() > resp.payload_limit() {
        return Err(CodecError::PayloadTooLarge);
    }
    Ok((id, resp))
}
