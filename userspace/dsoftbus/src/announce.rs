//! Announce v1: the discovery datagram (`docs/protocol/wire.md` §2
//! "Discovery").
//!
//! ```text
//! 4  magic "NXSB"
//! 1  version = 1
//! 1  device id length, 1..=64
//! n  device id, UTF-8
//! 2  session TCP port (big-endian)
//! 32 Noise static public key (X25519)
//! 1  service count, 0..=16
//! per service: 1 length (1..=64) + UTF-8 name
//! ```
//!
//! Decoding is total: every input yields a value or an [`AnnounceError`],
//! never a panic. Datagrams longer than [`MAX_ANNOUNCE_LEN`] are refused
//! before a single field is parsed, and bytes after a complete packet make it
//! malformed, so each valid packet has exactly one encoding.
//!
//! Two rules are stricter than the bare layout, both refused as
//! [`AnnounceError::InvalidInput`]:
//! - ids and service names may not contain control characters: daemons print
//!   `peer=<id>` markers, and a newline in an id would let a remote peer forge
//!   marker lines;
//! - session port 0 and small-order public keys (see
//!   [`PublicKey::is_weak`]) are refused: neither can ever lead to a real,
//!   authenticated session.

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

use crate::keys::{PublicKey, KEY_LEN};

/// `NXSB`.
pub const MAGIC: [u8; 4] = *b"NXSB";
/// The only version this codec speaks.
pub const VERSION: u8 = 1;
/// Longest device id, in bytes.
pub const MAX_ID_LEN: usize = 64;
/// Longest service name, in bytes.
pub const MAX_SERVICE_LEN: usize = 64;
/// Most services in one announce.
pub const MAX_SERVICES: usize = 16;
/// Shortest valid packet: 1-byte id, no services.
pub const MIN_ANNOUNCE_LEN: usize = 4 + 1 + 1 + 1 + 2 + KEY_LEN + 1;
/// Largest valid v1 packet (1145 bytes). Anything longer is *oversized*.
pub const MAX_ANNOUNCE_LEN: usize =
    4 + 1 + 1 + MAX_ID_LEN + 2 + KEY_LEN + 1 + MAX_SERVICES * (1 + MAX_SERVICE_LEN);

/// Why an announce was refused. Everything but [`AnnounceError::Oversized`]
/// is "malformed" for marker purposes (see [`AnnounceError::is_oversized`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AnnounceError {
    /// The first four bytes are not `NXSB`.
    BadMagic,
    /// Magic is right but the version byte is not 1.
    UnsupportedVersion(u8),
    /// The packet ends before a field it announced.
    Truncated,
    /// A length, count, port or key is out of range, or a string holds
    /// control characters.
    InvalidInput,
    /// An id or service name is not UTF-8.
    Utf8,
    /// Bytes follow a complete packet.
    TrailingBytes,
    /// Longer than [`MAX_ANNOUNCE_LEN`]; refused before parsing.
    Oversized,
}

impl AnnounceError {
    /// True only for [`AnnounceError::Oversized`]; every other error is a
    /// malformed packet.
    pub fn is_oversized(&self) -> bool {
        matches!(self, AnnounceError::Oversized)
    }
}

impl fmt::Display for AnnounceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AnnounceError::BadMagic => f.write_str("bad magic"),
            AnnounceError::UnsupportedVersion(v) => write!(f, "unsupported version {v}"),
            AnnounceError::Truncated => f.write_str("truncated"),
            AnnounceError::InvalidInput => f.write_str("invalid input"),
            AnnounceError::Utf8 => f.write_str("invalid utf-8"),
            AnnounceError::TrailingBytes => f.write_str("trailing bytes"),
            AnnounceError::Oversized => f.write_str("oversized"),
        }
    }
}

/// Validates a wire string: 1..=max bytes, UTF-8, no control characters.
fn check_str(bytes: &[u8], max: usize) -> Result<&str, AnnounceError> {
    if bytes.is_empty() || bytes.len() > max {
        return Err(AnnounceError::InvalidInput);
    }
    let s = core::str::from_utf8(bytes).map_err(|_| AnnounceError::Utf8)?;
    if s.chars().any(char::is_control) {
        return Err(AnnounceError::InvalidInput);
    }
    Ok(s)
}

/// A device id: 1..=64 bytes of UTF-8 without control characters.
/// Constructing one validates it, so every `DeviceId` is encodable.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DeviceId(String);

impl DeviceId {
    /// Validates and wraps `s`.
    pub fn new(s: &str) -> Result<Self, AnnounceError> {
        check_str(s.as_bytes(), MAX_ID_LEN).map(|s| DeviceId(String::from(s)))
    }

    /// Validates raw wire bytes.
    pub fn from_bytes(b: &[u8]) -> Result<Self, AnnounceError> {
        check_str(b, MAX_ID_LEN).map(|s| DeviceId(String::from(s)))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The id as wire bytes.
    pub fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }

    /// The id for a log line. A peer chooses its id, and the wire rules
    /// allow spaces, `=` and bidi characters in it, so a log line prints it
    /// through [`LogSafe`](crate::node::LogSafe) (ordinary ids unchanged).
    pub fn log_safe(&self) -> crate::node::LogSafe<'_> {
        crate::node::LogSafe(&self.0)
    }
}

impl fmt::Debug for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl fmt::Display for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A service name: 1..=64 bytes of UTF-8 without control characters.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServiceName(String);

impl ServiceName {
    /// Validates and wraps `s`.
    pub fn new(s: &str) -> Result<Self, AnnounceError> {
        check_str(s.as_bytes(), MAX_SERVICE_LEN).map(|s| ServiceName(String::from(s)))
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ServiceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

/// A decoded (and therefore valid) announce v1.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Announce {
    device_id: DeviceId,
    port: u16,
    static_key: PublicKey,
    services: Vec<ServiceName>,
}

impl Announce {
    /// Builds an announce, enforcing the same rules as the decoder (port not
    /// 0, key not weak, at most [`MAX_SERVICES`] services).
    pub fn new(
        device_id: DeviceId,
        port: u16,
        static_key: PublicKey,
        services: Vec<ServiceName>,
    ) -> Result<Self, AnnounceError> {
        if port == 0 || static_key.is_weak() || services.len() > MAX_SERVICES {
            return Err(AnnounceError::InvalidInput);
        }
        Ok(Announce {
            device_id,
            port,
            static_key,
            services,
        })
    }

    /// The announced device id.
    pub fn device_id(&self) -> &DeviceId {
        &self.device_id
    }
    /// TCP port on which the device accepts sessions.
    pub fn port(&self) -> u16 {
        self.port
    }
    /// The device's Noise static public key.
    pub fn static_key(&self) -> &PublicKey {
        &self.static_key
    }
    /// Advertised services.
    pub fn services(&self) -> &[ServiceName] {
        &self.services
    }

    /// Exact encoded length (never above [`MAX_ANNOUNCE_LEN`]).
    pub fn encoded_len(&self) -> usize {
        MIN_ANNOUNCE_LEN - 1
            + self.device_id.as_bytes().len()
            + self.services.iter().map(|s| 1 + s.0.len()).sum::<usize>()
    }

    /// Appends the wire encoding to `out`. Infallible: every `Announce` value
    /// was validated on construction.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        out.reserve(self.encoded_len());
        out.extend_from_slice(&MAGIC);
        out.push(VERSION);
        // Lengths were bounded by the newtypes (<= 64), so the casts are exact.
        out.push(self.device_id.as_bytes().len() as u8);
        out.extend_from_slice(self.device_id.as_bytes());
        out.extend_from_slice(&self.port.to_be_bytes());
        out.extend_from_slice(self.static_key.as_bytes());
        out.push(self.services.len() as u8);
        for s in &self.services {
            out.push(s.0.len() as u8);
            out.extend_from_slice(s.0.as_bytes());
        }
    }

    /// The wire encoding as a new buffer.
    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::new();
        self.encode_into(&mut v);
        v
    }

    /// Decodes one datagram. Total: never panics, never reads past `buf`.
    pub fn decode(buf: &[u8]) -> Result<Self, AnnounceError> {
        // Oversize is decided on length alone, before any parsing work.
        if buf.len() > MAX_ANNOUNCE_LEN {
            return Err(AnnounceError::Oversized);
        }
        let mut r = Reader(buf);
        let magic = r.take(4)?;
        if magic != MAGIC {
            return Err(AnnounceError::BadMagic);
        }
        let version = r.u8()?;
        if version != VERSION {
            return Err(AnnounceError::UnsupportedVersion(version));
        }
        let id_len = usize::from(r.u8()?);
        if id_len == 0 || id_len > MAX_ID_LEN {
            return Err(AnnounceError::InvalidInput);
        }
        let device_id = DeviceId::from_bytes(r.take(id_len)?)?;
        let port_bytes = r.take(2)?;
        let port = u16::from_be_bytes([port_bytes[0], port_bytes[1]]);
        let mut key = [0u8; KEY_LEN];
        key.copy_from_slice(r.take(KEY_LEN)?);
        let static_key = PublicKey::from_bytes(key);
        let count = usize::from(r.u8()?);
        if count > MAX_SERVICES {
            return Err(AnnounceError::InvalidInput);
        }
        let mut services = Vec::with_capacity(count);
        for _ in 0..count {
            let len = usize::from(r.u8()?);
            if len == 0 || len > MAX_SERVICE_LEN {
                return Err(AnnounceError::InvalidInput);
            }
            let name = check_str(r.take(len)?, MAX_SERVICE_LEN)?;
            services.push(ServiceName(String::from(name)));
        }
        if !r.0.is_empty() {
            return Err(AnnounceError::TrailingBytes);
        }
        Announce::new(device_id, port, static_key, services)
    }
}

/// A cursor that can only move forward and reports `Truncated` instead of
/// indexing out of bounds.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], AnnounceError> {
        if self.0.len() < n {
            return Err(AnnounceError::Truncated);
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, AnnounceError> {
        self.take(1).map(|b| b[0])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    fn key(b: u8) -> PublicKey {
        PublicKey::from_bytes([b; 32])
    }

    /// Golden vector, written out by hand from the announce table of
    /// `docs/protocol/wire.md` §2.2 "Announce v1".
    #[rustfmt::skip]
    const GOLDEN_NODE_A: &[u8] = &[
        b'N', b'X', b'S', b'B',             // magic
        0x01,                               // version
        0x06,                               // id length
        b'n', b'o', b'd', b'e', b'-', b'a', // "node-a"
        0x87, 0x07,                         // port 34567 (0x8707), big-endian
        0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, // static key: 32 x 0x11
        0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11,
        0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11,
        0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11,
        0x02,                               // two services
        0x04, b'e', b'c', b'h', b'o',       // "echo"
        0x03, b'l', b'o', b'g',             // "log"
    ];

    #[rustfmt::skip]
    const GOLDEN_MINIMAL: &[u8] = &[
        0x4e, 0x58, 0x53, 0x42, // "NXSB"
        0x01,                   // version
        0x01, b'b',             // id "b"
        0x00, 0x01,             // port 1
        0xab, 0xab, 0xab, 0xab, 0xab, 0xab, 0xab, 0xab,
        0xab, 0xab, 0xab, 0xab, 0xab, 0xab, 0xab, 0xab,
        0xab, 0xab, 0xab, 0xab, 0xab, 0xab, 0xab, 0xab,
        0xab, 0xab, 0xab, 0xab, 0xab, 0xab, 0xab, 0xab,
        0x00,                   // no services
    ];

    fn node_a() -> Announce {
        Announce::new(
            DeviceId::new("node-a").unwrap(),
            34567,
            key(0x11),
            vec![
                ServiceName::new("echo").unwrap(),
                ServiceName::new("log").unwrap(),
            ],
        )
        .unwrap()
    }

    #[test]
    fn golden_encode_and_decode() {
        assert_eq!(node_a().encode(), GOLDEN_NODE_A);
        assert_eq!(Announce::decode(GOLDEN_NODE_A), Ok(node_a()));
        assert_eq!(node_a().encoded_len(), GOLDEN_NODE_A.len());

        let min = Announce::new(DeviceId::new("b").unwrap(), 1, key(0xab), vec![]).unwrap();
        assert_eq!(min.encode(), GOLDEN_MINIMAL);
        assert_eq!(GOLDEN_MINIMAL.len(), MIN_ANNOUNCE_LEN);
        assert_eq!(Announce::decode(GOLDEN_MINIMAL), Ok(min));
    }

    #[test]
    fn largest_packet_is_exactly_max_len() {
        let id = "i".repeat(MAX_ID_LEN);
        let services = (0..MAX_SERVICES)
            .map(|i| ServiceName::new(&alloc::format!("{i:0>64}")).unwrap())
            .collect();
        let a = Announce::new(DeviceId::new(&id).unwrap(), 9, key(3), services).unwrap();
        let bytes = a.encode();
        assert_eq!(bytes.len(), MAX_ANNOUNCE_LEN);
        assert_eq!(MAX_ANNOUNCE_LEN, 1145);
        assert_eq!(Announce::decode(&bytes), Ok(a));
    }

    #[test]
    fn error_classes() {
        let good = GOLDEN_NODE_A.to_vec();
        let with = |i: usize, v: u8| {
            let mut b = good.clone();
            b[i] = v;
            Announce::decode(&b)
        };
        assert_eq!(with(0, b'X'), Err(AnnounceError::BadMagic));
        assert_eq!(with(4, 2), Err(AnnounceError::UnsupportedVersion(2)));
        assert_eq!(with(5, 0), Err(AnnounceError::InvalidInput));
        assert_eq!(with(5, 65), Err(AnnounceError::InvalidInput));
        assert_eq!(with(6, 0xff), Err(AnnounceError::Utf8));
        assert_eq!(with(6, b'\n'), Err(AnnounceError::InvalidInput));
        // port 0
        let mut b = good.clone();
        b[12] = 0;
        b[13] = 0;
        assert_eq!(Announce::decode(&b), Err(AnnounceError::InvalidInput));
        // weak key
        let mut b = good.clone();
        b[14..46].fill(0);
        assert_eq!(Announce::decode(&b), Err(AnnounceError::InvalidInput));
        assert_eq!(with(46, 17), Err(AnnounceError::InvalidInput)); // service count
        assert_eq!(with(47, 0), Err(AnnounceError::InvalidInput)); // service len 0
        assert_eq!(with(48, 0xc3), Err(AnnounceError::Utf8));
        // Every strict prefix is truncated (or bad magic never: prefix of good magic).
        for n in 0..good.len() {
            assert_eq!(
                Announce::decode(&good[..n]),
                Err(AnnounceError::Truncated),
                "n={n}"
            );
        }
        let mut b = good.clone();
        b.push(0);
        assert_eq!(Announce::decode(&b), Err(AnnounceError::TrailingBytes));
        assert_eq!(
            Announce::decode(&vec![0u8; MAX_ANNOUNCE_LEN + 1]),
            Err(AnnounceError::Oversized)
        );
        assert!(AnnounceError::Oversized.is_oversized());
        assert!(!AnnounceError::TrailingBytes.is_oversized());
    }

    #[test]
    fn constructors_validate() {
        assert!(DeviceId::new("").is_err());
        assert!(DeviceId::new(&"x".repeat(65)).is_err());
        assert!(DeviceId::new("a\u{7}b").is_err());
        assert!(DeviceId::new("设备-1").is_ok());
        assert!(Announce::new(DeviceId::new("a").unwrap(), 0, key(1), vec![]).is_err());
        let too_many = (0..17).map(|_| ServiceName::new("s").unwrap()).collect();
        assert!(Announce::new(DeviceId::new("a").unwrap(), 1, key(1), too_many).is_err());
    }
}
