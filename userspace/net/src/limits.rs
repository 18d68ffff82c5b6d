//! Every bound the engine enforces, in one place.
//!
//! The engine serves untrusted clients, so every resource a request can make it
//! allocate is capped here. Exceeding a cap is a typed [`Error`](crate::Error)
//! in the response (`NoSockets`, `TooManyClients`, `TooManyPending`,
//! `MessageTooLarge`, ...), never a panic and never an unbounded allocation.
//! `docs/networking/os-net.md` repeats this table; keep them in step.

use smoltcp::time::Duration;

/// Largest encoded facade message (request or response), in bytes, including
/// the version byte: the largest payload plus room for the message's header
/// fields (version, request id, variant, socket id, length prefixes — under
/// 32 bytes in postcard). Decoders reject longer input before parsing it.
pub const MAX_MESSAGE_SIZE: usize = MAX_STREAM_DATA_LEN + 64;

/// Largest payload carried by one `UdpSendTo` / `TcpWrite` request or one
/// `Datagram` / `Data` response: an Ethernet MTU (1500) minus the IPv4 (20)
/// and UDP (8) headers. IPv4 fragmentation is not enabled, so a larger UDP
/// datagram could not leave the NIC anyway.
pub const MAX_DATA_LEN: usize = 1472;

/// Largest payload of one `TcpWrite` request or `Data` response. Streams are
/// not bound by the MTU (smoltcp segments them), and every facade message is
/// an IPC round trip — in the OS two address-space switches — so streams move
/// the biggest pieces one IPC message (16 KiB) holds with the header
/// ([`MAX_MESSAGE_SIZE`] = 16 KiB).
pub const MAX_STREAM_DATA_LEN: usize = 16 * 1024 - 64;

/// Clients (IPC channels) the engine tracks at once.
pub const MAX_CLIENTS: usize = 64;

/// Facade sockets (UDP sockets, TCP listeners, TCP streams) one client may hold.
pub const MAX_SOCKETS_PER_CLIENT: usize = 16;

/// Facade sockets across all clients.
pub const MAX_SOCKETS_TOTAL: usize = 128;

/// smoltcp sockets across both interfaces: facade sockets fan out to one or two
/// stack sockets (a wildcard bind lives on both interfaces), listeners keep a
/// pool of `backlog` listening sockets per interface, gracefully closing TCP
/// sockets linger, pings hold an ICMP socket, and DHCP holds one.
pub const MAX_STACK_SOCKETS: usize = 256;

/// Requests parked (waiting on the network) per client.
pub const MAX_PENDING_PER_CLIENT: usize = 16;

/// Requests parked across all clients.
pub const MAX_PENDING_TOTAL: usize = 256;

/// Largest accepted TCP listen backlog (0 in a request means 1).
pub const MAX_BACKLOG: usize = 4;

/// TCP receive buffer per stream, bytes (also the most a peer may have in
/// flight towards us: smoltcp advertises it as the window).
pub const TCP_RX_BUFFER: usize = 32 * 1024;
/// TCP send buffer per stream, bytes.
pub const TCP_TX_BUFFER: usize = 32 * 1024;

/// UDP receive ring per socket: datagram slots and payload bytes.
pub const UDP_RX_PACKETS: usize = 16;
/// See [`UDP_RX_PACKETS`].
pub const UDP_RX_BUFFER: usize = 8 * 1024;
/// UDP send ring per socket: datagram slots and payload bytes.
pub const UDP_TX_PACKETS: usize = 16;
/// See [`UDP_TX_PACKETS`].
pub const UDP_TX_BUFFER: usize = 8 * 1024;

/// Neighbour (ARP) cache entries on the NIC interface. This is a smoltcp
/// compile-time constant selected by the `iface-neighbor-cache-count-32`
/// feature in `Cargo.toml` (smoltcp 0.12's default is 8; older releases had 4).
/// Repeated here so code and docs can name it; a unit test checks it against
/// smoltcp's own value.
pub const NEIGHBOR_CACHE_ENTRIES: usize = 32;

/// Upper bound on a ping's timeout; longer requests are clamped.
pub const MAX_PING_TIMEOUT: Duration = Duration::from_secs(30);

/// Interval between echo requests of one ping operation. The first echo is
/// often parked behind ARP resolution (and may be lost with the ARP request),
/// so a ping re-sends at this interval until a reply arrives or it times out.
pub const PING_RETRY_INTERVAL: Duration = Duration::from_millis(1000);

/// Echo payload length used by ping (bytes after the ICMP header).
pub const PING_PAYLOAD_LEN: usize = 16;

/// How long a `TcpConnect` may stay pending before it fails with `Timeout`.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);

/// smoltcp's per-socket timeout (`tcp::Socket::set_timeout`): a stream with
/// unacknowledged data whose peer stays silent this long is aborted. Idle
/// streams with nothing outstanding are not affected.
pub const TCP_TIMEOUT: Duration = Duration::from_secs(60);

/// A TCP stream closed by its client keeps finishing the FIN exchange in the
/// background for at most this long before it is aborted and freed.
pub const ORPHAN_LINGER: Duration = Duration::from_secs(30);

/// Frames the in-memory loopback device queues before it reports "no
/// transmit buffer" (smoltcp then retries on the next poll).
pub const LOOPBACK_QUEUE_FRAMES: usize = 64;

/// MTU of the loopback interface.
pub const LOOPBACK_MTU: usize = 16 * 1024;

/// Rounds of (interface poll, service) one [`Engine::poll`](crate::Engine::poll)
/// runs at most. Loopback traffic needs a round per hop (SYN, SYN-ACK, ...),
/// so a few rounds let local exchanges settle in one call; the cap keeps each
/// call bounded (further work is reported through `poll_at`).
pub const MAX_POLL_ROUNDS: usize = 16;

/// First port of the ephemeral range used for port-0 binds and outgoing
/// connects.
pub const EPHEMERAL_PORT_FIRST: u16 = 49152;
/// Last port of the ephemeral range (inclusive).
pub const EPHEMERAL_PORT_LAST: u16 = 65535;

/// DNS servers reported in the interface status (smoltcp keeps at most 3).
pub const MAX_DNS_SERVERS: usize = 3;

/// ARP packets noted for the link-local client per NIC poll; more received in
/// one poll still reach smoltcp but are not looked at for conflicts.
pub const MAX_ARP_SEEN: usize = 32;
