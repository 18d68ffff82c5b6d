//! The test vectors of `docs/protocol/wire.md`, checked against the code.
//!
//! The spec is read at compile time; every fenced block tagged
//! `wire-vector <name>` is parsed and checked here, so the document cannot
//! drift from the implementation silently. A block this file does not know,
//! or a known block that is missing, fails [`every_vector_is_checked`].
//!
//! Where a value can be recomputed without the crate (mac1 with `blake2`,
//! Noise with plain `snow`, the transport AEAD with `chacha20poly1305`), it is,
//! so a vector is checked against an independent computation as well as
//! against the code.

use std::collections::BTreeMap;

use dsoftbus::announce::{Announce, DeviceId, ServiceName};
use dsoftbus::connection::Connection;
use dsoftbus::frame::{encode_frame, FrameDecoder, MAX_FRAME_LEN};
use dsoftbus::handshake::{
    AuthError, HandshakeConfig, IdentityBindings, Initiator, LocalIdentity, PeerTarget, Responder,
};
use dsoftbus::session::{Message, Session, SessionError};
use dsoftbus::{Instant, PublicKey, SecretKey, StaticKeypair};

const WIRE_MD: &str = include_str!("../../../docs/protocol/wire.md");

/// Every vector name this file checks.
const KNOWN: &[&str] = &[
    "announce-node-a",
    "announce-minimal",
    "announce-invalid-magic",
    "announce-invalid-version",
    "announce-invalid-empty-id",
    "announce-invalid-control-char",
    "announce-invalid-utf8",
    "announce-invalid-port-zero",
    "announce-invalid-weak-key",
    "announce-invalid-service-count",
    "announce-invalid-truncated",
    "announce-invalid-trailing",
    "announce-invalid-oversized",
    "x25519-keys",
    "mac1",
    "hello-node-a",
    "hello-node-b",
    "handshake",
    "transport-ping",
    "transport-pong",
    "transport-data",
    "transport-close",
    "transport-invalid-unknown-type",
    "transport-invalid-short-ping",
    "transport-invalid-close-with-body",
    "transport-invalid-bad-tag",
    "rpc-request",
    "rpc-reply-ok",
    "rpc-reply-denied",
    "rpc-invalid-other-kind",
    "rpc-invalid-version",
    "rpc-invalid-op",
    "rpc-invalid-zero-timeout",
    "rpc-invalid-empty-service",
    "rpc-invalid-control-char",
    "rpc-invalid-truncated-service",
    "rpc-invalid-status",
    "rpc-invalid-payload-on-error",
    "rpc-invalid-oversized",
    "stream-open",
    "stream-data",
    "stream-window-session",
    "stream-window-stream",
    "stream-close",
    "stream-reset",
    "stream-ping",
    "stream-pong",
    "announce-streams",
    "stream-invalid-other-kind",
    "stream-invalid-version",
    "stream-invalid-unknown-frame",
    "stream-invalid-truncated-header",
    "stream-invalid-truncated-open",
    "stream-invalid-priority",
    "stream-invalid-empty-data",
    "stream-invalid-data-on-session",
    "stream-invalid-zero-window",
    "stream-invalid-window-too-large",
    "stream-invalid-close-with-body",
    "stream-invalid-ping-on-stream",
    "stream-invalid-oversized",
    "transfer-offer",
    "transfer-v2-offer",
    "transfer-accept",
    "transfer-deny",
    "transfer-data",
    "transfer-ack",
    "transfer-end",
    "transfer-done",
    "transfer-cancel",
    "transfer-abort",
    "transfer-deny-traversal",
    "transfer-deny-bidi",
    "transfer-invalid-other-kind",
    "transfer-invalid-version",
    "transfer-invalid-kind",
    "transfer-invalid-no-entries",
    "transfer-invalid-utf8-path",
    "transfer-invalid-truncated-offer",
    "transfer-invalid-empty-data",
    "transfer-invalid-window-zero",
    "transfer-invalid-trailing",
    "transfer-invalid-oversized",
];

// ---------------------------------------------------------------------------
// Parsing the document
// ---------------------------------------------------------------------------

/// One `wire-vector` block: its name and its fields in order.
#[derive(Debug)]
struct Vector {
    name: String,
    fields: BTreeMap<String, String>,
}

/// All `wire-vector` blocks of the spec, in document order.
fn parse_all() -> Vec<Vector> {
    let mut out = Vec::new();
    let mut current: Option<(Vector, Option<String>)> = None;
    for (lineno, line) in WIRE_MD.lines().enumerate() {
        let trimmed = line.trim();
        match current.as_mut() {
            None => {
                if let Some(name) = trimmed.strip_prefix("```wire-vector ") {
                    current = Some((
                        Vector {
                            name: name.trim().to_string(),
                            fields: BTreeMap::new(),
                        },
                        None,
                    ));
                }
            }
            Some((v, last)) => {
                if trimmed == "```" {
                    let (v, _) = current.take().unwrap();
                    out.push(v);
                } else if trimmed.is_empty() || trimmed.starts_with('#') {
                    continue;
                } else if line.starts_with(char::is_whitespace) {
                    let key = last
                        .as_ref()
                        .unwrap_or_else(|| panic!("line {}: continuation first", lineno + 1));
                    let val = v.fields.get_mut(key).unwrap();
                    val.push(' ');
                    val.push_str(trimmed);
                } else {
                    let (k, val) = trimmed
                        .split_once('=')
                        .unwrap_or_else(|| panic!("line {}: expected `field = value`", lineno + 1));
                    let k = k.trim().to_string();
                    assert!(
                        v.fields.insert(k.clone(), val.trim().to_string()).is_none(),
                        "line {}: field {k} twice in {}",
                        lineno + 1,
                        v.name
                    );
                    *last = Some(k);
                }
            }
        }
    }
    assert!(current.is_none(), "unterminated wire-vector block");
    out
}

fn vector(name: &str) -> Vector {
    parse_all()
        .into_iter()
        .find(|v| v.name == name)
        .unwrap_or_else(|| panic!("wire.md has no vector {name}"))
}

impl Vector {
    fn raw(&self, field: &str) -> &str {
        self.fields
            .get(field)
            .unwrap_or_else(|| panic!("vector {}: no field {field}", self.name))
    }

    fn has(&self, field: &str) -> bool {
        self.fields.contains_key(field)
    }

    fn hex(&self, field: &str) -> Vec<u8> {
        unhex(self.raw(field)).unwrap_or_else(|e| panic!("vector {} {field}: {e}", self.name))
    }

    fn key(&self, field: &str) -> [u8; 32] {
        self.hex(field)
            .try_into()
            .unwrap_or_else(|_| panic!("vector {} {field}: not 32 bytes", self.name))
    }

    fn text(&self, field: &str) -> String {
        let mut l = texts(self.raw(field));
        assert_eq!(l.len(), 1, "vector {} {field}: one string", self.name);
        l.remove(0)
    }

    fn texts(&self, field: &str) -> Vec<String> {
        texts(self.raw(field))
    }

    fn num(&self, field: &str) -> u64 {
        number(self.raw(field)).unwrap_or_else(|| panic!("vector {} {field}: number", self.name))
    }
}

fn unhex(s: &str) -> Result<Vec<u8>, String> {
    let digits: Vec<u8> = s.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    if digits.len() % 2 != 0 {
        return Err(format!("odd number of hex digits in {s:?}"));
    }
    digits
        .chunks(2)
        .map(|p| {
            let p = std::str::from_utf8(p).map_err(|e| e.to_string())?;
            u8::from_str_radix(p, 16).map_err(|e| format!("{p:?}: {e}"))
        })
        .collect()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// `"a", "b"` → `[a, b]`; empty → `[]`. No escapes (vectors need none).
fn texts(s: &str) -> Vec<String> {
    if s.trim().is_empty() {
        return Vec::new();
    }
    s.split(',')
        .map(|part| {
            let p = part.trim();
            assert!(
                p.len() >= 2 && p.starts_with('"') && p.ends_with('"'),
                "not a quoted string: {p:?}"
            );
            p[1..p.len() - 1].to_string()
        })
        .collect()
}

fn number(s: &str) -> Option<u64> {
    let s = s.trim();
    match s.strip_prefix("0x") {
        Some(h) => u64::from_str_radix(h, 16).ok(),
        None => s.parse().ok(),
    }
}

#[test]
fn every_vector_is_checked() {
    let all = parse_all();
    let names: Vec<&str> = all.iter().map(|v| v.name.as_str()).collect();
    for n in &names {
        assert!(
            KNOWN.contains(n),
            "wire.md vector {n} is not checked by tests/wire_vectors.rs"
        );
    }
    for k in KNOWN {
        assert_eq!(
            names.iter().filter(|n| *n == k).count(),
            1,
            "vector {k} must appear exactly once in wire.md"
        );
    }
}

// ---------------------------------------------------------------------------
// Announces
// ---------------------------------------------------------------------------

fn check_valid_announce(name: &str) {
    let v = vector(name);
    let services = v
        .texts("services")
        .iter()
        .map(|s| ServiceName::new(s).unwrap())
        .collect();
    let a = Announce::new(
        DeviceId::new(&v.text("device_id")).unwrap(),
        u16::try_from(v.num("port")).unwrap(),
        PublicKey::from_bytes(v.key("static_key")),
        services,
    )
    .unwrap();
    let encoded = v.hex("encoded");
    assert_eq!(hex(&a.encode()), hex(&encoded), "{name}: encoding");
    assert_eq!(a.encoded_len(), encoded.len());
    assert_eq!(Announce::decode(&encoded), Ok(a), "{name}: decoding");
}

#[test]
fn announce_valid_vectors() {
    check_valid_announce("announce-node-a");
    check_valid_announce("announce-minimal");
    assert_eq!(
        vector("announce-minimal").hex("encoded").len(),
        dsoftbus::announce::MIN_ANNOUNCE_LEN
    );
}

#[test]
fn announce_invalid_vectors() {
    let all = parse_all();
    let invalid: Vec<&Vector> = all
        .iter()
        .filter(|v| v.name.starts_with("announce-invalid-"))
        .collect();
    assert!(invalid.len() >= 11);
    for v in invalid {
        let input = if v.has("input_len") {
            let fill = v.hex("input_byte");
            assert_eq!(fill.len(), 1);
            vec![fill[0]; usize::try_from(v.num("input_len")).unwrap()]
        } else {
            v.hex("input")
        };
        let err = Announce::decode(&input).expect_err(&v.name);
        assert_eq!(format!("{err:?}"), v.raw("error"), "{}", v.name);
    }
    // The oversized vector sits exactly one byte past the largest valid packet.
    assert_eq!(
        vector("announce-invalid-oversized").num("input_len"),
        dsoftbus::announce::MAX_ANNOUNCE_LEN as u64 + 1
    );
}

// ---------------------------------------------------------------------------
// Keys, mac1, hellos
// ---------------------------------------------------------------------------

#[test]
fn x25519_key_vectors() {
    let v = vector("x25519-keys");
    for who in [
        "initiator_static",
        "responder_static",
        "initiator_ephemeral",
        "responder_ephemeral",
    ] {
        let pair =
            StaticKeypair::from_secret(SecretKey::from_bytes(v.key(&format!("{who}_secret"))));
        assert_eq!(
            hex(pair.public().as_bytes()),
            hex(&v.key(&format!("{who}_public"))),
            "{who}"
        );
    }
}

#[test]
fn mac1_vector() {
    use blake2::digest::consts::U16;
    use blake2::digest::{KeyInit, Mac};
    use blake2::{Blake2s256, Blake2sMac, Digest};

    let v = vector("mac1");
    let label = v.hex("label");
    assert_eq!(label, b"mac1----");
    let rs = v.key("responder_static_public");
    assert_eq!(rs, vector("x25519-keys").key("responder_static_public"));

    // Independent computation of the documented formula.
    let mut h = Blake2s256::new();
    h.update(&label);
    h.update(rs);
    let key: [u8; 32] = h.finalize().into();
    assert_eq!(hex(&key), hex(&v.hex("mac1_key")), "mac1_key");
    let msg1 = v.hex("msg1");
    assert_eq!(msg1.len(), dsoftbus::handshake::MSG1_LEN);
    let mut m = <Blake2sMac<U16> as KeyInit>::new_from_slice(&key).unwrap();
    m.update(&msg1);
    let tag: [u8; 16] = m.finalize().into_bytes().into();
    assert_eq!(hex(&tag), hex(&v.hex("mac1")), "mac1");

    // The code: frame 1 is msg1 ‖ mac1, and the responder checks exactly it.
    let hs = Fixture::new();
    let (_, frame1) = hs.start();
    assert_eq!(hex(&frame1), hex(&[msg1, tag.to_vec()].concat()));
    assert!(Responder::accept(&hs.b, &frame1, &mut hs.r_eph(), t0(), &cfg()).is_ok());
    for bit in 0..128 {
        let mut bad = frame1.clone();
        bad[48 + bit / 8] ^= 1 << (bit % 8);
        assert_eq!(
            Responder::accept(&hs.b, &bad, &mut hs.r_eph(), t0(), &cfg()).err(),
            Some(AuthError::Mac1),
            "bit {bit}"
        );
    }
    assert_eq!(
        Responder::accept(&hs.b, &frame1[..63], &mut hs.r_eph(), t0(), &cfg()).err(),
        Some(AuthError::Mac1),
        "frame 1 must be exactly 64 bytes"
    );
}

#[test]
fn hello_vectors() {
    for name in ["hello-node-a", "hello-node-b"] {
        let v = vector(name);
        let id = v.text("device_id");
        let mut want = vec![1u8, u8::try_from(id.len()).unwrap()];
        want.extend_from_slice(id.as_bytes());
        assert_eq!(hex(&v.hex("hello")), hex(&want), "{name}");
    }
    // That the code sends exactly these payloads is checked by
    // `handshake_vector`: plain snow, given these hellos, produces the same
    // frames as the code.
}

// ---------------------------------------------------------------------------
// Handshake
// ---------------------------------------------------------------------------

/// An RNG that serves fixed bytes: the handshake draws exactly one 32-byte
/// ephemeral secret per side, so this makes it deterministic.
struct FixedRng([u8; 32]);

impl rand_core::RngCore for FixedRng {
    fn next_u32(&mut self) -> u32 {
        unreachable!("the handshake only fills byte buffers")
    }
    fn next_u64(&mut self) -> u64 {
        unreachable!("the handshake only fills byte buffers")
    }
    fn fill_bytes(&mut self, dest: &mut [u8]) {
        assert!(dest.len() <= 32, "more entropy than one ephemeral key");
        dest.copy_from_slice(&self.0[..dest.len()]);
    }
}
impl rand_core::CryptoRng for FixedRng {}

struct Bindings(DeviceId, PublicKey);

impl IdentityBindings for Bindings {
    fn bound_key(&self, id: &DeviceId) -> Option<PublicKey> {
        (id == &self.0).then_some(self.1)
    }
}

fn t0() -> Instant {
    Instant::from_millis(0)
}

fn cfg() -> HandshakeConfig {
    HandshakeConfig::default()
}

/// Both identities of the handshake vector, from the documented keys.
struct Fixture {
    a: LocalIdentity,
    b: LocalIdentity,
    keys: Vector,
}

impl Fixture {
    fn new() -> Self {
        let keys = vector("x25519-keys");
        let hs = vector("handshake");
        let pair = |who: &str| {
            StaticKeypair::from_secret(SecretKey::from_bytes(keys.key(&format!("{who}_secret"))))
        };
        let a = LocalIdentity::new(
            DeviceId::new(&hs.text("initiator_id")).unwrap(),
            pair("initiator_static"),
        );
        let b = LocalIdentity::new(
            DeviceId::new(&hs.text("responder_id")).unwrap(),
            pair("responder_static"),
        );
        Fixture { a, b, keys }
    }

    fn i_eph(&self) -> FixedRng {
        FixedRng(self.keys.key("initiator_ephemeral_secret"))
    }

    fn r_eph(&self) -> FixedRng {
        FixedRng(self.keys.key("responder_ephemeral_secret"))
    }

    fn target(&self) -> PeerTarget {
        PeerTarget {
            id: self.b.id().clone(),
            key: *self.b.public_key(),
        }
    }

    fn start(&self) -> (Initiator, Vec<u8>) {
        Initiator::start(&self.a, self.target(), &mut self.i_eph(), t0(), &cfg()).unwrap()
    }

    /// Runs the whole handshake through the code; returns the frames and
    /// both sessions (initiator, responder).
    fn run(&self) -> ([Vec<u8>; 3], Session, Session) {
        let (init, f1) = self.start();
        let (resp, f2) = Responder::accept(&self.b, &f1, &mut self.r_eph(), t0(), &cfg()).unwrap();
        let (si, f3) = init.read_frame2(&f2, t0()).unwrap();
        let binds = Bindings(self.a.id().clone(), *self.a.public_key());
        let sr = resp.read_frame3(&f3, t0(), &binds).unwrap();
        assert_eq!(si.peer_id(), self.b.id());
        assert_eq!(sr.peer_id(), self.a.id());
        ([f1, f2, f3], si, sr)
    }
}

#[test]
fn handshake_vector() {
    let v = vector("handshake");
    let fx = Fixture::new();
    let ([f1, f2, f3], _, _) = fx.run();
    assert_eq!(hex(&f1), hex(&v.hex("frame1")), "frame 1 (code)");
    assert_eq!(hex(&f2), hex(&v.hex("frame2")), "frame 2 (code)");
    assert_eq!(hex(&f3), hex(&v.hex("frame3")), "frame 3 (code)");

    // Frame 1 on the stream, as a Connection queues it.
    let conn = Connection::connect(&fx.a, fx.target(), &mut fx.i_eph(), t0(), cfg()).unwrap();
    assert_eq!(hex(conn.transmit_buf()), hex(&v.hex("frame1_stream")));
    let mut framed = Vec::new();
    encode_frame(&f1, &mut framed).unwrap();
    assert_eq!(framed, v.hex("frame1_stream"));

    // Plain snow, with the documented keys, prologue and hellos, agrees.
    let mac1 = vector("mac1");
    let msgs = snow_handshake(&fx.keys, &v);
    assert_eq!(hex(&msgs.m1), hex(&mac1.hex("msg1")), "msg1 (snow)");
    assert_eq!(
        hex(&[msgs.m1.clone(), mac1.hex("mac1")].concat()),
        hex(&v.hex("frame1"))
    );
    assert_eq!(hex(&msgs.m2), hex(&v.hex("frame2")), "frame 2 (snow)");
    assert_eq!(hex(&msgs.m3), hex(&v.hex("frame3")), "frame 3 (snow)");
    assert_eq!(hex(&msgs.h), hex(&v.hex("h")), "handshake hash");
    assert_eq!(hex(&msgs.k1), hex(&v.hex("k1")), "k1");
    assert_eq!(hex(&msgs.k2), hex(&v.hex("k2")), "k2");
    // The ephemeral public keys lead messages 1 and 2.
    assert_eq!(msgs.m1[..32], fx.keys.key("initiator_ephemeral_public"));
    assert_eq!(msgs.m2[..32], fx.keys.key("responder_ephemeral_public"));
    // Frame sizes of §4.6.
    assert_eq!(f1.len(), 64);
    assert_eq!(f2.len(), 50 + fx.b.id().as_bytes().len());
    assert_eq!(f3.len(), 66 + fx.a.id().as_bytes().len());
}

struct SnowRun {
    m1: Vec<u8>,
    m2: Vec<u8>,
    m3: Vec<u8>,
    h: Vec<u8>,
    k1: [u8; 32],
    k2: [u8; 32],
}

/// snow's RNG trait, serving a fixed ephemeral secret.
struct SnowFixed([u8; 32]);

impl snow::types::Random for SnowFixed {
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), snow::Error> {
        dest.copy_from_slice(self.0.get(..dest.len()).ok_or(snow::Error::Rng)?);
        Ok(())
    }
}

/// snow's default primitives plus a fixed-entropy RNG.
struct SnowResolver([u8; 32]);

impl snow::resolvers::CryptoResolver for SnowResolver {
    fn resolve_rng(&self) -> Option<Box<dyn snow::types::Random>> {
        Some(Box::new(SnowFixed(self.0)))
    }
    fn resolve_dh(&self, c: &snow::params::DHChoice) -> Option<Box<dyn snow::types::Dh>> {
        snow::resolvers::DefaultResolver.resolve_dh(c)
    }
    fn resolve_hash(&self, c: &snow::params::HashChoice) -> Option<Box<dyn snow::types::Hash>> {
        snow::resolvers::DefaultResolver.resolve_hash(c)
    }
    fn resolve_cipher(
        &self,
        c: &snow::params::CipherChoice,
    ) -> Option<Box<dyn snow::types::Cipher>> {
        snow::resolvers::DefaultResolver.resolve_cipher(c)
    }
}

/// The documented handshake with snow alone: no mac1, no identity logic,
/// hellos taken from the document.
fn snow_handshake(keys: &Vector, hs: &Vector) -> SnowRun {
    let params: snow::params::NoiseParams = hs.text("protocol").parse().unwrap();
    let prologue = hs.hex("prologue");
    assert!(prologue.is_empty());
    let mut i = snow::Builder::with_resolver(
        params.clone(),
        Box::new(SnowResolver(keys.key("initiator_ephemeral_secret"))),
    )
    .prologue(&prologue)
    .unwrap()
    .local_private_key(&keys.key("initiator_static_secret"))
    .unwrap()
    .remote_public_key(&keys.key("responder_static_public"))
    .unwrap()
    .build_initiator()
    .unwrap();
    let mut r = snow::Builder::with_resolver(
        params,
        Box::new(SnowResolver(keys.key("responder_ephemeral_secret"))),
    )
    .prologue(&prologue)
    .unwrap()
    .local_private_key(&keys.key("responder_static_secret"))
    .unwrap()
    .build_responder()
    .unwrap();
    let hello_a = vector("hello-node-a").hex("hello");
    let hello_b = vector("hello-node-b").hex("hello");
    let mut buf = [0u8; 256];
    let mut payload = [0u8; 256];

    let n = i.write_message(&[], &mut buf).unwrap();
    let m1 = buf[..n].to_vec();
    assert_eq!(r.read_message(&m1, &mut payload).unwrap(), 0);
    let n = r.write_message(&hello_b, &mut buf).unwrap();
    let m2 = buf[..n].to_vec();
    let p = i.read_message(&m2, &mut payload).unwrap();
    assert_eq!(payload[..p], hello_b[..]);
    let n = i.write_message(&hello_a, &mut buf).unwrap();
    let m3 = buf[..n].to_vec();
    let p = r.read_message(&m3, &mut payload).unwrap();
    assert_eq!(payload[..p], hello_a[..]);
    assert_eq!(i.get_handshake_hash(), r.get_handshake_hash());
    let h = i.get_handshake_hash().to_vec();
    let (k1, k2) = i.dangerously_get_raw_split();
    assert_eq!((k1, k2), r.dangerously_get_raw_split());
    SnowRun {
        m1,
        m2,
        m3,
        h,
        k1,
        k2,
    }
}

// ---------------------------------------------------------------------------
// Transport
// ---------------------------------------------------------------------------

/// `ping 0x..`, `pong 0x..`, `data "…"`, `close`.
fn parse_message(s: &str) -> Message {
    let (kind, arg) = s.split_once(' ').unwrap_or((s, ""));
    match kind {
        "ping" => Message::Ping(number(arg).unwrap()),
        "pong" => Message::Pong(number(arg).unwrap()),
        "data" => Message::Data(texts(arg).concat().into_bytes()),
        "close" => Message::Close,
        _ => panic!("unknown message {s:?}"),
    }
}

/// §6.2: the plaintext of a message.
fn plaintext_of(m: &Message) -> Vec<u8> {
    match m {
        Message::Ping(n) => [&[1u8][..], &n.to_be_bytes()].concat(),
        Message::Pong(n) => [&[2u8][..], &n.to_be_bytes()].concat(),
        Message::Data(d) => [&[3u8][..], d].concat(),
        Message::Close => vec![4],
    }
}

/// §6.1: 4 zero bytes ‖ counter little-endian.
fn nonce_of(counter: u64) -> [u8; 12] {
    let mut n = [0u8; 12];
    n[4..].copy_from_slice(&counter.to_le_bytes());
    n
}

fn aead_seal(key: &[u8; 32], counter: u64, plaintext: &[u8]) -> Vec<u8> {
    use chacha20poly1305::{AeadInPlace, ChaCha20Poly1305, KeyInit};
    let cipher = ChaCha20Poly1305::new(key.into());
    let mut buf = plaintext.to_vec();
    let tag = cipher
        .encrypt_in_place_detached(&nonce_of(counter).into(), &[], &mut buf)
        .unwrap();
    buf.extend_from_slice(&tag);
    buf
}

#[test]
fn transport_vectors() {
    let hs = vector("handshake");
    let (k1, k2) = (hs.key("k1"), hs.key("k2"));
    let all = parse_all();
    let mut msgs: Vec<&Vector> = all
        .iter()
        .filter(|v| v.name.starts_with("transport-") && !v.name.contains("invalid"))
        .collect();
    assert_eq!(msgs.len(), 4, "ping, pong, data, close");
    // Per direction in counter order; responder → initiator first, because
    // the initiator's close ends the responder's session.
    msgs.sort_by_key(|v| (v.raw("direction") == "i2r", v.num("counter")));

    let (_, mut si, mut sr) = Fixture::new().run();
    let mut next = [0u64; 2];
    for v in msgs {
        let name = &v.name;
        let i2r = match v.raw("direction") {
            "i2r" => true,
            "r2i" => false,
            d => panic!("{name}: direction {d}"),
        };
        let counter = v.num("counter");
        assert_eq!(counter, next[usize::from(i2r)], "{name}: counters in order");
        next[usize::from(i2r)] += 1;
        let msg = parse_message(v.raw("message"));
        let plaintext = v.hex("plaintext");
        let ciphertext = v.hex("ciphertext");
        let stream = v.hex("stream");

        // Document consistency: §6.2 plaintext, §6.1 nonce, §3 framing.
        assert_eq!(
            hex(&plaintext),
            hex(&plaintext_of(&msg)),
            "{name}: plaintext"
        );
        assert_eq!(
            hex(&v.hex("nonce")),
            hex(&nonce_of(counter)),
            "{name}: nonce"
        );
        assert_eq!(ciphertext.len(), plaintext.len() + 16, "{name}: tag");
        let mut framed = Vec::new();
        encode_frame(&ciphertext, &mut framed).unwrap();
        assert_eq!(hex(&framed), hex(&stream), "{name}: stream");

        // Independent AEAD.
        let key = if i2r { &k1 } else { &k2 };
        assert_eq!(
            hex(&aead_seal(key, counter, &plaintext)),
            hex(&ciphertext),
            "{name}: ChaCha20-Poly1305"
        );

        // The code seals exactly the stream bytes, and the peer opens them.
        let (tx, rx) = if i2r {
            (&mut si, &mut sr)
        } else {
            (&mut sr, &mut si)
        };
        let mut out = Vec::new();
        tx.seal_framed(&msg, &mut out).unwrap();
        assert_eq!(hex(&out), hex(&stream), "{name}: code seal");
        let mut dec = FrameDecoder::new(MAX_FRAME_LEN);
        dec.feed(&stream).unwrap();
        let body = dec.next_frame().unwrap().unwrap();
        assert_eq!(rx.open(&body), Ok(msg), "{name}: code open");
    }
    assert!(si.is_closed() && sr.is_closed(), "close ends both sides");
}

#[test]
fn transport_invalid_vectors() {
    let hs = vector("handshake");
    let k1 = hs.key("k1");
    let all = parse_all();
    let invalid: Vec<&Vector> = all
        .iter()
        .filter(|v| v.name.starts_with("transport-invalid-"))
        .collect();
    assert_eq!(invalid.len(), 4);
    let fx = Fixture::new();
    for v in invalid {
        let name = &v.name;
        let ciphertext = v.hex("ciphertext");
        if v.has("plaintext") {
            assert_eq!(
                hex(&aead_seal(&k1, 0, &v.hex("plaintext"))),
                hex(&ciphertext),
                "{name}: ChaCha20-Poly1305"
            );
        }
        let (_, _, mut sr) = fx.run();
        let err = sr.open(&ciphertext).expect_err(name);
        assert_eq!(format!("{err:?}"), v.raw("error"), "{name}");
        // Fatal: even the valid first ping is refused afterwards.
        let ping = vector("transport-ping").hex("ciphertext");
        assert_eq!(sr.open(&ping), Err(SessionError::Closed), "{name}: sticky");
    }
}

// ---------------------------------------------------------------------------
// Remote calls (§8.7, §10)
// ---------------------------------------------------------------------------

#[test]
fn rpc_vectors() {
    use dsoftbus::rpc::{self, Reply, Request, Status};
    let v = vector("rpc-request");
    let req = Request {
        call_id: u32::try_from(v.num("call_id")).unwrap(),
        timeout_ms: u32::try_from(v.num("timeout_ms")).unwrap(),
        service: ServiceName::new(&v.text("service")).unwrap(),
        payload: v.hex("payload"),
    };
    let encoded = v.hex("encoded");
    assert_eq!(hex(&req.encode()), hex(&encoded), "rpc-request: encoding");
    assert_eq!(rpc::decode(&encoded), Ok(rpc::Message::Request(req)));
    assert_eq!(
        hex(&plaintext_of(&Message::Data(encoded))),
        hex(&v.hex("data_plaintext"))
    );
    for name in ["rpc-reply-ok", "rpc-reply-denied"] {
        let v = vector(name);
        let rep = Reply {
            call_id: u32::try_from(v.num("call_id")).unwrap(),
            status: Status::from_u8(u8::try_from(v.num("status")).unwrap()).unwrap(),
            payload: v.hex("payload"),
        };
        let encoded = v.hex("encoded");
        assert_eq!(hex(&rep.encode()), hex(&encoded), "{name}: encoding");
        assert_eq!(
            rpc::decode(&encoded),
            Ok(rpc::Message::Reply(rep)),
            "{name}"
        );
        assert_eq!(
            hex(&plaintext_of(&Message::Data(encoded))),
            hex(&v.hex("data_plaintext"))
        );
    }
}

#[test]
fn rpc_invalid_vectors() {
    let all = parse_all();
    let invalid: Vec<&Vector> = all
        .iter()
        .filter(|v| v.name.starts_with("rpc-invalid-"))
        .collect();
    assert_eq!(invalid.len(), 10);
    for v in invalid {
        let input = if v.has("input_len") {
            let fill = v.hex("input_byte");
            vec![fill[0]; usize::try_from(v.num("input_len")).unwrap()]
        } else {
            v.hex("input")
        };
        let err = dsoftbus::rpc::decode(&input).expect_err(&v.name);
        assert_eq!(format!("{err:?}"), v.raw("error"), "{}", v.name);
    }
    assert_eq!(
        vector("rpc-invalid-oversized").num("input_len"),
        dsoftbus::rpc::MAX_RPC_LEN as u64 + 1
    );
}

// ---------------------------------------------------------------------------
// Streams (§8.8, §11)
// ---------------------------------------------------------------------------

#[test]
fn stream_vectors() {
    use dsoftbus::stream::{self, Frame, Priority, StreamId};
    let all = parse_all();
    let valid: Vec<&Vector> = all
        .iter()
        .filter(|v| v.name.starts_with("stream-") && !v.name.contains("invalid"))
        .collect();
    assert_eq!(valid.len(), 8);
    let mut types = std::collections::BTreeSet::new();
    for v in valid {
        let name = &v.name;
        let id = || StreamId(u32::try_from(v.num("id")).unwrap());
        let u32f = |f: &str| u32::try_from(v.num(f)).unwrap();
        let frame = match v.text("frame").as_str() {
            "open" => Frame::Open {
                id: id(),
                kind: u8::try_from(v.num("kind")).unwrap(),
                priority: match v.num("priority") {
                    0 => Priority::Control,
                    1 => Priority::Bulk,
                    p => panic!("{name}: priority {p}"),
                },
            },
            "data" => Frame::Data {
                id: id(),
                payload: v.hex("payload"),
            },
            "window" => Frame::Window {
                id: id(),
                increment: u32f("increment"),
            },
            "close" => Frame::Close { id: id() },
            "reset" => Frame::Reset {
                id: id(),
                code: u32f("code"),
            },
            "ping" => Frame::Ping(v.num("nonce")),
            "pong" => Frame::Pong(v.num("nonce")),
            f => panic!("{name}: frame {f}"),
        };
        let encoded = v.hex("encoded");
        assert_eq!(hex(&frame.encode()), hex(&encoded), "{name}: encoding");
        assert_eq!(stream::decode(&encoded), Ok(frame), "{name}: decoding");
        types.insert(encoded[2]);
        assert_eq!(
            hex(&plaintext_of(&Message::Data(encoded))),
            hex(&v.hex("data_plaintext")),
            "{name}"
        );
    }
    assert_eq!(types.len(), 7, "every frame type has a vector");

    // Negotiation: the service name in an announce.
    check_valid_announce("announce-streams");
    let with = vector("announce-streams");
    let services: Vec<ServiceName> = with
        .texts("services")
        .iter()
        .map(|s| ServiceName::new(s).unwrap())
        .collect();
    assert_eq!(with.texts("services"), [stream::STREAMS_SERVICE]);
    assert!(stream::peer_supports_streams(&services));
    let without: Vec<ServiceName> = vector("announce-node-a")
        .texts("services")
        .iter()
        .map(|s| ServiceName::new(s).unwrap())
        .collect();
    assert!(!stream::peer_supports_streams(&without));
}

#[test]
fn stream_invalid_vectors() {
    let all = parse_all();
    let invalid: Vec<&Vector> = all
        .iter()
        .filter(|v| v.name.starts_with("stream-invalid-"))
        .collect();
    assert_eq!(invalid.len(), 13);
    for v in invalid {
        let input = if v.has("input_len") {
            let fill = v.hex("input_byte");
            vec![fill[0]; usize::try_from(v.num("input_len")).unwrap()]
        } else {
            v.hex("input")
        };
        let err = dsoftbus::stream::decode(&input).expect_err(&v.name);
        assert_eq!(format!("{err:?}"), v.raw("error"), "{}", v.name);
    }
    assert_eq!(
        vector("stream-invalid-oversized").num("input_len"),
        dsoftbus::stream::MAX_MESSAGE_LEN as u64 + 1
    );
}

// ---------------------------------------------------------------------------
// File transfer (§8.9, §12)
// ---------------------------------------------------------------------------

#[test]
fn transfer_vectors() {
    use dsoftbus::transfer::{self, Entry, EntryKind, FileHasher, Message, Reason, Version};

    let offer_of = |name: &str, version: Version, field: &str| {
        let v = vector(name);
        let content = v.hex("content");
        let digest = FileHasher::digest(version, &content).unwrap();
        assert_eq!(
            hex(&digest),
            hex(&v.hex(field)),
            "{name}: {field} of content"
        );
        Message::Offer {
            id: u32::try_from(v.num("id")).unwrap(),
            entries: vec![
                Entry {
                    path: v.text("dir"),
                    kind: EntryKind::Dir,
                },
                Entry {
                    path: v.text("file"),
                    kind: EntryKind::File {
                        size: content.len() as u64,
                        digest,
                    },
                },
            ],
        }
    };
    let offer = offer_of("transfer-offer", Version::V1, "sha256");
    // Version 2: the same layout, version byte 02, a BLAKE3-256 digest.
    let v2 = offer_of("transfer-v2-offer", Version::V2, "blake3");
    let encoded = vector("transfer-v2-offer").hex("encoded");
    assert_eq!(
        hex(&v2.encode(Version::V2)),
        hex(&encoded),
        "v2 offer: encoding"
    );
    assert_eq!(transfer::decode(&encoded), Ok(v2), "v2 offer: decoding");
    assert_eq!(
        transfer::header(&encoded).map(|h| h.version),
        Ok(Version::V2)
    );
    let data = vector("transfer-data");
    let data_bytes = data.hex("data");
    let entry = |v: &Vector| match v.raw("entry") {
        "none" => None,
        _ => Some(u16::try_from(v.num("entry")).unwrap()),
    };
    let reason = |v: &Vector| Reason::from_u8(u8::try_from(v.num("reason")).unwrap());
    let acc = vector("transfer-accept");
    let cases: Vec<(&str, Message)> = vec![
        ("transfer-offer", offer),
        (
            "transfer-accept",
            Message::Accept {
                id: 1,
                window: u32::try_from(acc.num("window")).unwrap(),
                max_chunk: u32::try_from(acc.num("max_chunk")).unwrap(),
                offsets: acc
                    .raw("offsets")
                    .split_whitespace()
                    .map(|o| number(o).unwrap())
                    .collect(),
            },
        ),
        (
            "transfer-deny",
            Message::Deny {
                id: 1,
                reason: reason(&vector("transfer-deny")),
            },
        ),
        (
            "transfer-data",
            Message::Data {
                id: 1,
                entry: u16::try_from(data.num("entry")).unwrap(),
                offset: data.num("offset"),
                data: &data_bytes,
            },
        ),
        (
            "transfer-ack",
            Message::Ack {
                id: 1,
                received: vector("transfer-ack").num("received"),
            },
        ),
        ("transfer-end", Message::End { id: 1 }),
        ("transfer-done", Message::Done { id: 1 }),
        (
            "transfer-cancel",
            Message::Cancel {
                id: 1,
                reason: reason(&vector("transfer-cancel")),
                entry: entry(&vector("transfer-cancel")),
            },
        ),
        (
            "transfer-abort",
            Message::Abort {
                id: 1,
                reason: reason(&vector("transfer-abort")),
                entry: entry(&vector("transfer-abort")),
            },
        ),
    ];
    for (name, m) in cases {
        let encoded = vector(name).hex("encoded");
        assert_eq!(
            hex(&m.encode(Version::V1)),
            hex(&encoded),
            "{name}: encoding"
        );
        // A v2 transfer's message: the same bytes, version byte 02 (§12.1).
        let mut v2 = encoded.clone();
        v2[1] = 2;
        assert_eq!(hex(&m.encode(Version::V2)), hex(&v2), "{name}: v2 encoding");
        assert_eq!(
            transfer::decode(&v2).as_ref(),
            Ok(&m),
            "{name}: v2 decoding"
        );
        assert_eq!(transfer::decode(&encoded), Ok(m), "{name}: decoding");
    }
    // Reason names the document uses.
    assert_eq!(Reason::from_u8(0).as_str(), "declined");
    assert_eq!(Reason::from_u8(6).as_str(), "hash-mismatch");
    assert_eq!(Reason::from_u8(7).as_str(), "io");
}

#[test]
fn transfer_deny_vectors() {
    use dsoftbus::transfer::{Receiver, ReceiverConfig};
    for name in ["transfer-deny-traversal", "transfer-deny-bidi"] {
        let v = vector(name);
        let input = v.hex("input");
        assert!(dsoftbus::transfer::decode(&input).is_ok(), "{name} decodes");
        let mut rx = Receiver::new(ReceiverConfig::default());
        assert!(rx.handle(&input).is_err(), "{name}");
        assert!(
            rx.offer().is_none() && !rx.is_pending(),
            "{name}: not exposed"
        );
        assert_eq!(
            hex(&rx.poll_transmit().unwrap()),
            hex(&v.hex("deny")),
            "{name}: deny"
        );
        assert!(rx.poll_transmit().is_none());
    }
}

#[test]
fn transfer_invalid_vectors() {
    let all = parse_all();
    let invalid: Vec<&Vector> = all
        .iter()
        .filter(|v| v.name.starts_with("transfer-invalid-"))
        .collect();
    assert_eq!(invalid.len(), 10);
    for v in invalid {
        let input = if v.has("input_len") {
            let fill = v.hex("input_byte");
            vec![fill[0]; usize::try_from(v.num("input_len")).unwrap()]
        } else {
            v.hex("input")
        };
        let err = dsoftbus::transfer::decode(&input).expect_err(&v.name);
        assert_eq!(format!("{err:?}"), v.raw("error"), "{}", v.name);
    }
    assert_eq!(
        vector("transfer-invalid-oversized").num("input_len"),
        dsoftbus::transfer::wire::MAX_MESSAGE_LEN as u64 + 1
    );
}
