//! Property tests: the decoders are total and the codec round-trips.

mod common;

use common::*;
use dsoftbus::announce::{Announce, MAX_ANNOUNCE_LEN};
use dsoftbus::connection::Connection;
use dsoftbus::frame::{encode_frame, FrameDecoder};
use dsoftbus::handshake::{Initiator, Responder};
use dsoftbus::session::Message;
use dsoftbus::{DeviceId, PublicKey, ServiceName};
use proptest::prelude::*;

fn device_id() -> impl Strategy<Value = DeviceId> {
    "\\PC{1,64}".prop_filter_map("id rules", |s| DeviceId::new(&s).ok())
}

fn service() -> impl Strategy<Value = ServiceName> {
    "[a-z0-9._-]{1,64}".prop_filter_map("service rules", |s| ServiceName::new(&s).ok())
}

fn announce() -> impl Strategy<Value = Announce> {
    (
        device_id(),
        1u16..,
        any::<[u8; 32]>(),
        proptest::collection::vec(service(), 0..=16),
    )
        .prop_filter_map("valid announce", |(id, port, key, svcs)| {
            Announce::new(id, port, PublicKey::from_bytes(key), svcs).ok()
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn announce_decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let r = Announce::decode(&bytes);
        if bytes.len() > MAX_ANNOUNCE_LEN {
            prop_assert_eq!(r, Err(dsoftbus::AnnounceError::Oversized));
        }
    }

    #[test]
    fn announce_roundtrip(a in announce()) {
        let bytes = a.encode();
        prop_assert!(bytes.len() <= MAX_ANNOUNCE_LEN);
        prop_assert_eq!(bytes.len(), a.encoded_len());
        prop_assert_eq!(Announce::decode(&bytes), Ok(a));
    }

    /// Mutating a valid encoding never panics, and anything that still decodes
    /// re-encodes to exactly the same bytes (one encoding per packet).
    #[test]
    fn announce_mutations_are_canonical(a in announce(), idx in any::<usize>(), val in any::<u8>(), cut in any::<usize>()) {
        let mut bytes = a.encode();
        let i = idx % bytes.len();
        bytes[i] = val;
        bytes.truncate(bytes.len() - cut % 3);
        if let Ok(d) = Announce::decode(&bytes) {
            prop_assert_eq!(d.encode(), bytes);
        }
    }

    #[test]
    fn frame_decoder_never_panics(chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..700), 0..8), max in 0usize..70000) {
        let mut d = FrameDecoder::new(max);
        for c in &chunks {
            let _ = d.feed_partial(c);
            while let Ok(Some(f)) = d.next_frame() {
                prop_assert!(!f.is_empty() && f.len() <= d.max_frame_len());
            }
            prop_assert!(d.buffered() <= d.capacity());
        }
    }

    #[test]
    fn frame_roundtrip(payloads in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 1..300), 1..6), split in 1usize..50) {
        let mut wire = Vec::new();
        for p in &payloads {
            encode_frame(p, &mut wire).unwrap();
        }
        let mut d = FrameDecoder::new(65535);
        let mut got = Vec::new();
        for c in wire.chunks(split) {
            d.feed(c).unwrap();
            while let Some(f) = d.next_frame().unwrap() {
                got.push(f);
            }
        }
        prop_assert_eq!(got, payloads);
    }

}

// Each case below runs real X25519 handshakes (slow in debug builds), so they
// get fewer cases; each case still throws several hostile frames.
proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// An established session fed arbitrary frames — random bytes, or a real
    /// sealed frame with bits flipped / cut — never panics, and never yields a
    /// message other than the one that was sealed.
    #[test]
    fn session_open_never_panics(
        junk in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..200), 1..6),
        flip in any::<usize>(),
        cut in 0usize..40,
    ) {
        let mut a = Node::new("node-a", 1, 15, 34567);
        let mut b = Node::new("node-b", 2, 16, 34568);
        a.hear(&b, t(0));
        b.hear(&a, t(0));
        let mut r = rng(3);
        let (init, f1) = Initiator::start(&a.local, a.target("node-b"), &mut r, t(0), &cfg()).unwrap();
        let (resp, f2) = Responder::accept(&b.local, &f1, &mut r, t(0), &cfg()).unwrap();
        let (mut sa, f3) = init.read_frame2(&f2, t(0)).unwrap();
        let mut sb = resp.read_frame3(&f3, t(0), &b.table).unwrap();
        let msg = Message::Data(b"payload".to_vec());
        let mut sealed = sa.seal(&msg).unwrap();
        let bit = flip % (sealed.len() * 8 + 1);
        if bit < sealed.len() * 8 {
            sealed[bit / 8] ^= 1 << (bit % 8);
        }
        sealed.truncate(sealed.len().saturating_sub(cut % 3));
        match sb.open(&sealed) {
            Ok(m) => prop_assert_eq!(m, msg),
            Err(_) => prop_assert!(sb.is_closed()),
        }
        for f in &junk {
            prop_assert!(sb.open(f).is_err());
        }
    }

    /// Arbitrary bytes into a connection in every phase never panic and never
    /// establish anything.
    #[test]
    fn connection_input_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let mut a = Node::new("node-a", 1, 15, 34567);
        let mut b = Node::new("node-b", 2, 16, 34568);
        a.hear(&b, t(0));
        b.hear(&a, t(0));
        let mut r = rng(4);
        let mut resp = Connection::accept(&b.local, &mut r, t(0), cfg());
        let _ = resp.handle_input(&bytes, t(1), &b.table);
        prop_assert!(!resp.is_established());
        let mut init = Connection::connect(&a.local, a.target("node-b"), &mut r, t(0), cfg()).unwrap();
        let _ = init.handle_input(&bytes, t(1), &a.table);
        prop_assert!(!init.is_established());
        // After a real handshake, junk is refused without panicking.
        let mut ca = Connection::connect(&a.local, a.target("node-b"), &mut r, t(0), cfg()).unwrap();
        let mut cb = Connection::accept(&b.local, &mut r, t(0), cfg());
        shuttle(&mut ca, &a.table, &mut cb, &b.table, t(1));
        prop_assert!(cb.is_established());
        let _ = cb.handle_input(&bytes, t(2), &b.table);
        while let Some(e) = cb.poll_event() {
            prop_assert!(!matches!(e, dsoftbus::Event::Data(_)) || bytes.is_empty());
        }
    }
}
