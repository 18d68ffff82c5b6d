//! Unit tests: one per frame and per rule of wire.md §11.

use super::*;
use alloc::vec;

fn t(ms: u64) -> Instant {
    Instant::from_millis(ms)
}

fn pair() -> (Mux, Mux) {
    pair_with(StreamConfig::default())
}

fn pair_with(cfg: StreamConfig) -> (Mux, Mux) {
    (
        Mux::new(cfg.clone(), true, t(0)),
        Mux::new(cfg, false, t(0)),
    )
}

/// Moves everything `from` wants to send into `to`; returns the messages.
fn flush(from: &mut Mux, to: &mut Mux) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    while let Some(m) = from.poll_transmit() {
        to.handle_input(&m, t(0)).unwrap();
        out.push(m);
    }
    out
}

fn read_all(m: &mut Mux, id: StreamId) -> (Vec<u8>, bool) {
    let mut got = Vec::new();
    let mut buf = [0u8; 1000];
    loop {
        match m.read(id, &mut buf).unwrap() {
            Read::Bytes(n) => got.extend_from_slice(&buf[..n]),
            Read::WouldBlock => return (got, false),
            Read::Fin => return (got, true),
        }
    }
}

fn events(m: &mut Mux) -> Vec<Event> {
    core::iter::from_fn(|| m.poll_event()).collect()
}

#[test]
fn every_frame_roundtrips() {
    let frames = [
        Frame::Open {
            id: StreamId(1),
            kind: 0x10,
            priority: Priority::Bulk,
        },
        Frame::Data {
            id: StreamId(2),
            payload: vec![1, 2, 3],
        },
        Frame::Window {
            id: StreamId(0),
            increment: MAX_WINDOW,
        },
        Frame::Close { id: StreamId(3) },
        Frame::Reset {
            id: StreamId(4),
            code: 0xdead_beef,
        },
        Frame::Ping(7),
        Frame::Pong(u64::MAX),
    ];
    for f in frames {
        let e = f.encode();
        assert_eq!(e[..2], [KIND_STREAM, STREAM_VERSION]);
        assert_eq!(decode(&e), Ok(f.clone()), "{f:?}");
        // Every strict prefix is refused (canonical, self-delimiting by the
        // data body length).
        for cut in 0..e.len() {
            if matches!(f, Frame::Data { .. }) && cut > HEADER_LEN {
                continue; // a shorter data frame is a valid data frame
            }
            assert!(decode(&e[..cut]).is_err(), "{f:?} cut {cut}");
        }
    }
}

#[test]
fn decode_rules() {
    let h = |t: u8, id: u32| {
        let mut v = vec![KIND_STREAM, 1, t];
        v.extend_from_slice(&id.to_be_bytes());
        v
    };
    assert_eq!(decode(&[]), Err(DecodeError::NotStream));
    assert_eq!(decode(&[0x20, 1]), Err(DecodeError::NotStream));
    assert_eq!(decode(&[0x30]), Err(DecodeError::Truncated));
    assert_eq!(
        decode(&[0x30, 2, 1]),
        Err(DecodeError::UnsupportedVersion(2))
    );
    assert_eq!(decode(&[0x30, 1, 8, 0]), Err(DecodeError::UnknownFrame(8)));
    assert_eq!(decode(&[0x30, 1, 0]), Err(DecodeError::UnknownFrame(0)));
    assert_eq!(decode(&[0x30, 1, 2, 0, 0]), Err(DecodeError::Truncated));
    // Stream id 0 only for window, ping, pong; ping/pong only on 0.
    assert_eq!(
        decode(&[h(FT_DATA, 0), vec![1]].concat()),
        Err(DecodeError::InvalidInput)
    );
    assert_eq!(
        decode(&[h(FT_OPEN, 0), vec![1, 0]].concat()),
        Err(DecodeError::InvalidInput)
    );
    assert_eq!(decode(&h(FT_CLOSE, 0)), Err(DecodeError::InvalidInput));
    assert_eq!(
        decode(&[h(FT_RESET, 0), vec![0; 4]].concat()),
        Err(DecodeError::InvalidInput)
    );
    assert_eq!(
        decode(&[h(FT_PING, 1), vec![0; 8]].concat()),
        Err(DecodeError::InvalidInput)
    );
    assert_eq!(
        decode(&[h(FT_PONG, 1), vec![0; 8]].concat()),
        Err(DecodeError::InvalidInput)
    );
    // Body lengths.
    assert_eq!(decode(&h(FT_DATA, 1)), Err(DecodeError::InvalidInput));
    assert_eq!(
        decode(&[h(FT_OPEN, 1), vec![1]].concat()),
        Err(DecodeError::Truncated)
    );
    assert_eq!(
        decode(&[h(FT_OPEN, 1), vec![1, 0, 0]].concat()),
        Err(DecodeError::InvalidInput)
    );
    assert_eq!(
        decode(&[h(FT_OPEN, 1), vec![1, 2]].concat()),
        Err(DecodeError::InvalidInput)
    );
    assert_eq!(
        decode(&[h(FT_CLOSE, 1), vec![0]].concat()),
        Err(DecodeError::InvalidInput)
    );
    assert_eq!(
        decode(&[h(FT_WINDOW, 1), vec![0; 4]].concat()),
        Err(DecodeError::InvalidInput)
    );
    assert_eq!(
        decode(&[h(FT_WINDOW, 1), vec![0x80, 0, 0, 0]].concat()),
        Err(DecodeError::InvalidInput)
    );
    assert_eq!(
        decode(&[h(FT_PING, 0), vec![0; 9]].concat()),
        Err(DecodeError::InvalidInput)
    );
    // Size on length alone.
    let mut big = h(FT_DATA, 1);
    big.resize(MAX_MESSAGE_LEN, 7);
    assert!(decode(&big).is_ok());
    big.push(7);
    assert_eq!(decode(&big), Err(DecodeError::Oversized));
}

#[test]
fn open_data_close_both_directions() {
    let (mut a, mut b) = pair();
    let id = a.open(9, Priority::Bulk).unwrap();
    assert_eq!(id, StreamId(1));
    a.write(id, b"ping?").unwrap();
    flush(&mut a, &mut b);
    assert_eq!(
        events(&mut b),
        [
            Event::Opened {
                id,
                kind: 9,
                priority: Priority::Bulk
            },
            Event::Readable(id)
        ]
    );
    assert_eq!(read_all(&mut b, id), (b"ping?".to_vec(), false));
    b.write(id, b"pong!").unwrap();
    b.finish(id).unwrap();
    flush(&mut b, &mut a);
    assert_eq!(read_all(&mut a, id), (b"pong!".to_vec(), true));
    // a's receive half is done, its send half still open (half-close).
    assert!(a.is_open(id));
    a.write(id, b"more").unwrap();
    a.finish(id).unwrap();
    assert_eq!(a.write(id, b"x"), Err(StreamError::Finished));
    flush(&mut a, &mut b);
    assert!(!a.is_open(id), "both halves done: freed");
    assert_eq!(read_all(&mut b, id), (b"more".to_vec(), true));
    assert!(!b.is_open(id));
    assert_eq!(a.stats().outgoing_streams, 0);
    assert_eq!(b.stats().incoming_streams, 0);
    // Responder ids are even.
    assert_eq!(b.open(1, Priority::Control), Ok(StreamId(2)));
}

#[test]
fn reset_from_either_side() {
    let (mut a, mut b) = pair();
    let id = a.open(1, Priority::Bulk).unwrap();
    a.write(id, &[5; 100]).unwrap();
    flush(&mut a, &mut b);
    let _ = events(&mut b);
    b.reset(id, 77).unwrap();
    assert!(!b.is_open(id));
    assert_eq!(b.stats().recv_buffered, 0, "buffer dropped, credit back");
    // Data a sends before it sees the reset is discarded and credited.
    a.write(id, &[6; 50]).unwrap();
    let in_flight: Vec<_> = core::iter::from_fn(|| a.poll_transmit()).collect();
    flush(&mut b, &mut a);
    assert_eq!(events(&mut a), [Event::Reset { id, code: 77 }]);
    assert!(!a.is_open(id));
    assert_eq!(a.write(id, b"x"), Err(StreamError::UnknownStream));
    for m in in_flight {
        b.handle_input(&m, t(0)).unwrap();
    }
    assert_eq!(b.stats().discarded_bytes, 50);
    // A reset of a stream never sent sends nothing.
    let id2 = a.open(1, Priority::Bulk).unwrap();
    a.reset(id2, 0).unwrap();
    assert_eq!(a.poll_transmit(), None);
}

#[test]
fn id_rules_are_enforced() {
    // Wrong parity: the responder receiving an open with an even id.
    let (_, mut b) = pair();
    let open = |id| {
        Frame::Open {
            id: StreamId(id),
            kind: 0,
            priority: Priority::Bulk,
        }
        .encode()
    };
    assert_eq!(b.handle_input(&open(2), t(0)), Err(MuxError::Protocol));
    assert_eq!(b.poll_event(), Some(Event::Failed(MuxError::Protocol)));
    assert_eq!(b.poll_transmit(), None);
    assert_eq!(b.open(0, Priority::Bulk), Err(StreamError::Failed));
    // Not increasing.
    let (_, mut b) = pair();
    b.handle_input(&open(3), t(0)).unwrap();
    assert_eq!(b.handle_input(&open(1), t(0)), Err(MuxError::Protocol));
    // Data on a stream never opened.
    let (_, mut b) = pair();
    let data = Frame::Data {
        id: StreamId(5),
        payload: vec![1],
    }
    .encode();
    assert_eq!(b.handle_input(&data, t(0)), Err(MuxError::Protocol));
    // A window for one of our own ids we never opened.
    let (_, mut b) = pair();
    let w = Frame::Window {
        id: StreamId(2),
        increment: 1,
    }
    .encode();
    assert_eq!(b.handle_input(&w, t(0)), Err(MuxError::Protocol));
    // A frame for our stream whose open we have not sent yet.
    let (mut a, _) = pair();
    let id = a.open(0, Priority::Bulk).unwrap();
    let w = Frame::Window { id, increment: 1 }.encode();
    assert_eq!(a.handle_input(&w, t(0)), Err(MuxError::Protocol));
    // Data after the peer's close.
    let (mut a, mut b) = pair();
    let id = a.open(0, Priority::Bulk).unwrap();
    a.finish(id).unwrap();
    flush(&mut a, &mut b);
    let data = Frame::Data {
        id,
        payload: vec![1],
    }
    .encode();
    assert_eq!(b.handle_input(&data, t(0)), Err(MuxError::Protocol));
}

#[test]
fn not_stream_is_not_an_error_of_the_mux() {
    let (_, mut b) = pair();
    assert_eq!(
        b.handle_input(&[0x20, 1, 1], t(0)),
        Err(MuxError::NotStream)
    );
    assert!(!MuxError::NotStream.is_fatal());
    assert_eq!(b.error(), None);
    assert_eq!(b.poll_event(), None);
}

#[test]
fn unknown_frame_types_are_ignored_unknown_versions_fatal() {
    let (_, mut b) = pair();
    b.handle_input(&[0x30, 1, 0x42, 0, 0, 0, 1, 9, 9], t(0))
        .unwrap();
    assert_eq!(b.stats().unknown_frames, 1);
    assert_eq!(b.error(), None);
    assert_eq!(
        b.handle_input(&[0x30, 2, 1, 0, 0, 0, 1, 0, 0], t(0)),
        Err(MuxError::Malformed(DecodeError::UnsupportedVersion(2)))
    );
}

#[test]
fn unaccepted_kind_is_refused() {
    let cfg = StreamConfig {
        accepted_kinds: KindSet::only(&[0x11]),
        ..Default::default()
    };
    let (mut a, mut b) = pair_with(cfg);
    let bad = a.open(0x12, Priority::Bulk).unwrap();
    let good = a.open(0x11, Priority::Bulk).unwrap();
    flush(&mut a, &mut b);
    assert_eq!(
        events(&mut b),
        [Event::Opened {
            id: good,
            kind: 0x11,
            priority: Priority::Bulk
        }]
    );
    assert_eq!(b.stats().refused, 1);
    flush(&mut b, &mut a);
    assert_eq!(
        events(&mut a),
        [Event::Reset {
            id: bad,
            code: RESET_UNKNOWN_KIND
        }]
    );
    assert!(KindSet::all().contains(255) && !KindSet::none().contains(0));
}

#[test]
fn stream_limits() {
    let cfg = StreamConfig {
        max_incoming_streams: 16,
        max_outgoing_streams: 20,
        ..Default::default()
    };
    let (mut a, mut b) = pair_with(cfg);
    let ids: Vec<_> = (0..20)
        .map(|_| a.open(0, Priority::Bulk).unwrap())
        .collect();
    assert_eq!(a.open(0, Priority::Bulk), Err(StreamError::TooManyStreams));
    flush(&mut a, &mut b);
    assert_eq!(b.stats().incoming_streams, 16);
    assert_eq!(b.stats().refused, 4);
    flush(&mut b, &mut a);
    let resets: Vec<_> = events(&mut a);
    assert_eq!(resets.len(), 4);
    for (e, id) in resets.iter().zip(&ids[16..]) {
        assert_eq!(
            *e,
            Event::Reset {
                id: *id,
                code: RESET_REFUSED
            }
        );
    }
    // Refused slots are free again on a.
    assert!(a.open(0, Priority::Bulk).is_ok());
    // The configured minimum is enforced.
    let m = Mux::new(
        StreamConfig {
            max_incoming_streams: 1,
            ..Default::default()
        },
        true,
        t(0),
    );
    assert_eq!(m.config().max_incoming_streams, MIN_INCOMING_STREAMS);
}

#[test]
fn ids_exhaust_without_wrapping() {
    let (mut a, _) = pair();
    a.next_local = Some(u32::MAX);
    assert_eq!(a.open(0, Priority::Bulk), Ok(StreamId(u32::MAX)));
    a.reset(StreamId(u32::MAX), 0).unwrap();
    assert_eq!(a.open(0, Priority::Bulk), Err(StreamError::IdsExhausted));
}

#[test]
fn slow_reader_bounds_the_sender() {
    let (mut a, mut b) = pair();
    let id = a.open(0, Priority::Bulk).unwrap();
    let chunk = [0xaa; 4096];
    let mut accepted = 0usize;
    for _ in 0..1000 {
        accepted += a.write(id, &chunk).unwrap();
        flush(&mut a, &mut b);
        assert!(a.stats().send_buffered <= a.config().send_buffer);
        assert!(b.stats().recv_buffered <= INITIAL_STREAM_WINDOW as usize);
    }
    // The reader never read: exactly one stream window arrived, one send
    // buffer waits, and the writer was told no.
    assert_eq!(b.stats().recv_buffered, INITIAL_STREAM_WINDOW as usize);
    assert_eq!(
        accepted,
        INITIAL_STREAM_WINDOW as usize + a.config().send_buffer
    );
    assert_eq!(a.write(id, &chunk), Ok(0));
    // Reading frees credit, and the writer becomes writable again.
    let (got, _) = read_all(&mut b, id);
    assert_eq!(got.len(), INITIAL_STREAM_WINDOW as usize);
    flush(&mut b, &mut a);
    flush(&mut a, &mut b);
    assert!(events(&mut a).contains(&Event::Writable(id)));
}

#[test]
fn session_window_bounds_all_streams() {
    let (mut a, mut b) = pair();
    let ids: Vec<_> = (0..8).map(|_| a.open(0, Priority::Bulk).unwrap()).collect();
    for _ in 0..100 {
        for &id in &ids {
            let _ = a.write(id, &[1; 8192]).unwrap();
        }
        flush(&mut a, &mut b);
    }
    assert_eq!(b.stats().recv_buffered, INITIAL_SESSION_WINDOW as usize);
    assert!(b.stats().max_stream_recv_buffered <= INITIAL_STREAM_WINDOW as usize);
}

#[test]
fn data_past_a_window_is_fatal() {
    // Stream window.
    let (mut a, mut b) = pair();
    let id = a.open(0, Priority::Bulk).unwrap();
    flush(&mut a, &mut b);
    let big = Frame::Data {
        id,
        payload: vec![0; MAX_DATA_PAYLOAD],
    }
    .encode();
    for _ in 0..4 {
        b.handle_input(&big, t(0)).unwrap();
    }
    assert_eq!(b.handle_input(&big, t(0)), Err(MuxError::FlowControl));
    // Session window: 5 streams × 4 max frames = 1.25 MiB > 1 MiB.
    let (mut a, mut b) = pair();
    let ids: Vec<_> = (0..5).map(|_| a.open(0, Priority::Bulk).unwrap()).collect();
    flush(&mut a, &mut b);
    let mut r = Ok(());
    'outer: for id in ids {
        for _ in 0..4 {
            let m = Frame::Data {
                id,
                payload: vec![0; 60_000],
            }
            .encode();
            r = b.handle_input(&m, t(0));
            if r.is_err() {
                break 'outer;
            }
        }
    }
    assert_eq!(r, Err(MuxError::FlowControl));
    assert!(b.stats().recv_buffered <= INITIAL_SESSION_WINDOW as usize);
}

#[test]
fn window_overflow_is_fatal() {
    let (mut a, mut b) = pair();
    let id = b.open(0, Priority::Bulk).unwrap();
    flush(&mut b, &mut a);
    let w = |id: u32, inc| {
        Frame::Window {
            id: StreamId(id),
            increment: inc,
        }
        .encode()
    };
    let room = MAX_WINDOW - INITIAL_STREAM_WINDOW;
    b.handle_input(&w(id.0, room), t(0)).unwrap();
    assert_eq!(
        b.handle_input(&w(id.0, 1), t(0)),
        Err(MuxError::FlowControl)
    );
    let (_, mut b) = pair();
    b.handle_input(&w(0, MAX_WINDOW - INITIAL_SESSION_WINDOW), t(0))
        .unwrap();
    assert_eq!(b.handle_input(&w(0, 1), t(0)), Err(MuxError::FlowControl));
}

#[test]
fn larger_configured_windows_are_granted_after_open() {
    let cfg = StreamConfig {
        stream_window: 2 * INITIAL_STREAM_WINDOW,
        session_window: 4 * INITIAL_SESSION_WINDOW,
        ..Default::default()
    };
    let (mut a, mut b) = pair_with(cfg);
    let id = a.open(0, Priority::Bulk).unwrap();
    let sent: Vec<_> = flush(&mut a, &mut b)
        .iter()
        .map(|m| decode(m).unwrap())
        .collect();
    assert_eq!(
        sent,
        [
            Frame::Window {
                id: StreamId(0),
                increment: 3 * INITIAL_SESSION_WINDOW
            },
            Frame::Open {
                id,
                kind: 0,
                priority: Priority::Bulk
            },
            Frame::Window {
                id,
                increment: INITIAL_STREAM_WINDOW
            },
        ]
    );
    flush(&mut b, &mut a);
    // b may now send 2× the initial stream window on it.
    let _ = events(&mut b);
    let mut n = 0;
    for _ in 0..100 {
        n += b.write(id, &[0; 65536]).unwrap();
        flush(&mut b, &mut a);
    }
    assert_eq!(a.stats().recv_buffered, 2 * INITIAL_STREAM_WINDOW as usize);
    assert!(n > a.stats().recv_buffered);
}

#[test]
fn control_priority_goes_first_round_robin_within() {
    let (mut a, mut b) = pair();
    let bulk1 = a.open(0, Priority::Bulk).unwrap();
    let bulk2 = a.open(0, Priority::Bulk).unwrap();
    let ctl = a.open(0, Priority::Control).unwrap();
    flush(&mut a, &mut b); // the opens: control first
    a.write(bulk1, &[1; 40_000]).unwrap();
    a.write(bulk2, &[2; 40_000]).unwrap();
    let next = |a: &mut Mux| match decode(&a.poll_transmit().unwrap()).unwrap() {
        Frame::Data { id, .. } => id,
        f => panic!("{f:?}"),
    };
    assert_eq!(next(&mut a), bulk1);
    assert_eq!(next(&mut a), bulk2);
    a.write(ctl, b"urgent").unwrap();
    assert_eq!(next(&mut a), ctl, "control overtakes queued bulk data");
    assert_eq!(next(&mut a), bulk1);
    assert_eq!(next(&mut a), bulk2);
}

#[test]
fn opens_go_out_in_id_order_whatever_their_priority() {
    let (mut a, mut b) = pair();
    let bulk = a.open(0, Priority::Bulk).unwrap();
    let ctl = a.open(0, Priority::Control).unwrap();
    a.write(ctl, b"x").unwrap();
    let sent: Vec<_> = flush(&mut a, &mut b)
        .iter()
        .map(|m| decode(m).unwrap())
        .collect();
    assert_eq!(
        sent,
        [
            Frame::Open {
                id: bulk,
                kind: 0,
                priority: Priority::Bulk
            },
            Frame::Open {
                id: ctl,
                kind: 0,
                priority: Priority::Control
            },
            Frame::Data {
                id: ctl,
                payload: b"x".to_vec()
            },
        ]
    );
}

#[test]
fn keepalive_and_idle_timeout_on_the_callers_clock() {
    let (mut a, mut b) = pair();
    assert_eq!(a.poll_timeout(), Some(t(15_000)));
    a.handle_timeout(t(14_999)).unwrap();
    assert_eq!(a.poll_transmit(), None);
    a.handle_timeout(t(15_000)).unwrap();
    let ping = a.poll_transmit().unwrap();
    assert_eq!(decode(&ping), Ok(Frame::Ping(1)));
    assert_eq!(
        a.poll_timeout(),
        Some(t(60_000)),
        "ping outstanding: idle only"
    );
    b.handle_input(&ping, t(15_001)).unwrap();
    let pong = b.poll_transmit().unwrap();
    assert_eq!(decode(&pong), Ok(Frame::Pong(1)));
    a.handle_input(&pong, t(15_002)).unwrap();
    assert_eq!(a.poll_timeout(), Some(t(30_002)));
    // A silent peer: one ping, then idle timeout.
    a.handle_timeout(t(30_002)).unwrap();
    assert!(a.poll_transmit().is_some());
    a.handle_timeout(t(60_000)).unwrap();
    assert_eq!(a.poll_transmit(), None, "one ping per silence");
    assert_eq!(a.handle_timeout(t(75_002)), Err(MuxError::IdleTimeout));
    assert_eq!(a.poll_event(), Some(Event::Failed(MuxError::IdleTimeout)));
    assert_eq!(a.poll_timeout(), None);
    // A clock that steps back does not panic or fire.
    let (mut c, _) = pair();
    c.handle_timeout(t(0)).unwrap();
}

#[test]
fn refused_resets_and_events_are_bounded() {
    // A peer that opens streams we refuse while we never transmit.
    let cfg = StreamConfig {
        accepted_kinds: KindSet::none(),
        max_pending_control: 8,
        ..Default::default()
    };
    let mut b = Mux::new(cfg, false, t(0));
    let mut r = Ok(());
    for i in 0..100u32 {
        let m = Frame::Open {
            id: StreamId(2 * i + 1),
            kind: 0,
            priority: Priority::Bulk,
        }
        .encode();
        r = b.handle_input(&m, t(0));
        assert!(b.stats().pending_control <= 8);
        if r.is_err() {
            break;
        }
    }
    assert_eq!(r, Err(MuxError::Overloaded));
    // A peer that opens and resets streams while we never poll events.
    let cfg = StreamConfig {
        max_events: 10,
        ..Default::default()
    };
    let mut b = Mux::new(cfg, false, t(0));
    let mut r = Ok(());
    for i in 0..100u32 {
        let id = StreamId(2 * i + 1);
        r = b
            .handle_input(
                &Frame::Open {
                    id,
                    kind: 0,
                    priority: Priority::Bulk,
                }
                .encode(),
                t(0),
            )
            .and_then(|()| b.handle_input(&Frame::Reset { id, code: 0 }.encode(), t(0)));
        if r.is_err() {
            break;
        }
    }
    assert_eq!(r, Err(MuxError::Overloaded));
}

#[test]
fn streams_service_negotiation() {
    let s = |n: &str| ServiceName::new(n).unwrap();
    assert!(ServiceName::new(STREAMS_SERVICE).is_ok());
    assert!(peer_supports_streams(&[s("echo"), s("streams/1")]));
    assert!(!peer_supports_streams(&[
        s("echo"),
        s("streams/2"),
        s("streams")
    ]));
    assert!(!peer_supports_streams(&[]));
}

#[test]
fn ping_flood_owes_one_pong() {
    let (_, mut b) = pair();
    for n in 1..=1000u64 {
        b.handle_input(&Frame::Ping(n).encode(), t(0)).unwrap();
    }
    assert_eq!(
        b.poll_transmit().map(|m| decode(&m)),
        Some(Ok(Frame::Pong(1000)))
    );
    assert_eq!(b.poll_transmit(), None);
}

/// The documented known limit: four unread streams hold the whole session
/// window; resetting one returns its credit.
#[test]
fn unread_streams_can_stall_the_session_until_reset() {
    let (mut a, mut b) = pair();
    let ids: Vec<_> = (0..5).map(|_| a.open(0, Priority::Bulk).unwrap()).collect();
    for _ in 0..40 {
        for &id in &ids[..4] {
            let _ = a.write(id, &[1; 16384]).unwrap();
        }
        flush(&mut a, &mut b);
        flush(&mut b, &mut a);
    }
    assert_eq!(b.stats().recv_buffered, INITIAL_SESSION_WINDOW as usize);
    a.write(ids[4], b"stuck").unwrap();
    flush(&mut a, &mut b);
    assert_eq!(read_all(&mut b, ids[4]), (Vec::new(), false));
    b.reset(ids[0], RESET_CANCEL).unwrap();
    flush(&mut b, &mut a);
    flush(&mut a, &mut b);
    assert_eq!(read_all(&mut b, ids[4]), (b"stuck".to_vec(), false));
}
