//! File transfer (`dsoftbus::transfer`, wire.md §12): both state machines
//! driven together through arbitrary interleavings and chunk boundaries,
//! fault injection on the carrier, cancel at every step, resume after a cut
//! at every chunk boundary, and the name rules at the offer level.
//!
//! The invariant every test checks (`Run::check`): no panic; each side ends
//! at most once; a receiver reports `FileVerified` only for a file whose
//! bytes equal the sender's, and reports `Done` only when every file is
//! verified.

use std::collections::VecDeque;

use dsoftbus::transfer::name::{dedup_paths, sanitize_path, validate_path, MAX_NAME};
use dsoftbus::transfer::wire::{self, KIND_DATA, MAX_CHUNK};
use dsoftbus::transfer::*;
use proptest::prelude::*;

/// The digest of `body` under `v` (both versions: the tests run with the
/// core's default features, which include `transfer-v2`).
fn digest(v: Version, body: &[u8]) -> [u8; 32] {
    FileHasher::digest(v, body).expect("this build has both versions")
}

fn file(path: &str, body: &[u8]) -> (Entry, Vec<u8>) {
    file_v(Version::V1, path, body)
}

fn file_v(v: Version, path: &str, body: &[u8]) -> (Entry, Vec<u8>) {
    (
        Entry {
            path: path.into(),
            kind: EntryKind::File {
                size: body.len() as u64,
                digest: digest(v, body),
            },
        },
        body.to_vec(),
    )
}

fn dir(path: &str) -> (Entry, Vec<u8>) {
    (
        Entry {
            path: path.into(),
            kind: EntryKind::Dir,
        },
        Vec::new(),
    )
}

/// A folder with an empty directory, an empty file and three files (v1).
fn tree(seed: u64, max_len: usize) -> Vec<(Entry, Vec<u8>)> {
    tree_v(Version::V1, seed, max_len)
}

/// [`tree`] with the digests of version `v`.
fn tree_v(v: Version, seed: u64, max_len: usize) -> Vec<(Entry, Vec<u8>)> {
    let file = |p: &str, b: &[u8]| file_v(v, p, b);
    let mut rng = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut body = |n: usize| -> Vec<u8> {
        (0..n)
            .map(|_| {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                rng as u8
            })
            .collect()
    };
    let n = max_len.max(1);
    vec![
        dir("album"),
        dir("album/empty"),
        file("album/a.bin", &body(n)),
        file("album/zero", b""),
        file("album/sub/b.txt", &body(n / 2 + 1)),
        file("c", &body(n / 3)),
    ]
}

/// Both sides, the two carrier directions (ordered queues) and what the
/// receiver's caller stored.
struct Run {
    tx: Sender,
    rx: Receiver,
    src: Vec<Vec<u8>>,
    to_rx: VecDeque<Vec<u8>>,
    to_tx: VecDeque<Vec<u8>>,
    /// Per entry: bytes written by the receiver's caller.
    store: Vec<Vec<u8>>,
    verified: Vec<bool>,
    rx_end: Vec<Outcome>,
    tx_end: Vec<Outcome>,
    accepted: Option<Vec<u64>>,
    /// Accept offers automatically (the consent decision of a test).
    auto_accept: bool,
    /// Chunk cut: push at most this many bytes per `push_data` (≥ 1).
    cut: usize,
    /// Send data through `push_data_header` (the caller sends the header
    /// and its own bytes) whenever nothing else is queued.
    direct: bool,
    /// Receive through `handle_ref` (file bytes as slices of the message).
    by_ref: bool,
    /// The receiver's window, and the most it ever held undelivered.
    window: u32,
    max_buffered: u64,
}

impl Run {
    fn new(files: &[(Entry, Vec<u8>)], rcfg: ReceiverConfig, chunk: usize) -> Run {
        Run::with_version(Version::V1, files, rcfg, chunk)
    }

    /// A run whose sender offers version `version` (the files' digests
    /// must be of that version: [`tree_v`]).
    fn with_version(
        version: Version,
        files: &[(Entry, Vec<u8>)],
        rcfg: ReceiverConfig,
        chunk: usize,
    ) -> Run {
        let entries = files.iter().map(|f| f.0.clone()).collect();
        Run {
            tx: Sender::new(1, entries, SenderConfig { chunk, version }).unwrap(),
            rx: Receiver::new(rcfg),
            src: files.iter().map(|f| f.1.clone()).collect(),
            to_rx: VecDeque::new(),
            to_tx: VecDeque::new(),
            store: vec![Vec::new(); files.len()],
            verified: vec![false; files.len()],
            rx_end: Vec::new(),
            tx_end: Vec::new(),
            accepted: None,
            auto_accept: true,
            cut: usize::MAX,
            direct: false,
            by_ref: false,
            window: rcfg.window,
            max_buffered: 0,
        }
    }

    /// One step of kind `op` (0..7); false if it had nothing to do.
    fn step(&mut self, op: u8) -> bool {
        let moved = self.step_inner(op);
        assert!(
            self.rx.buffered() <= u64::from(self.window),
            "receiver holds {} undelivered bytes, window {}",
            self.rx.buffered(),
            self.window
        );
        self.max_buffered = self.max_buffered.max(self.rx.buffered());
        moved
    }

    fn step_inner(&mut self, op: u8) -> bool {
        match op % 7 {
            0 => match self.tx.poll_transmit() {
                Some(m) => {
                    self.to_rx.push_back(m);
                    true
                }
                None => false,
            },
            1 => match self.to_rx.pop_front() {
                Some(m) => {
                    if self.by_ref {
                        if let Ok(Some(d)) = self.rx.handle_ref(&m) {
                            self.store_data(d.entry, d.offset, d.data);
                        }
                    } else {
                        let _ = self.rx.handle(&m);
                    }
                    true
                }
                None => false,
            },
            2 => match self.rx.poll_event() {
                Some(ev) => {
                    self.on_rx_event(ev);
                    true
                }
                None => false,
            },
            3 => match self.rx.poll_transmit() {
                Some(m) => {
                    self.to_tx.push_back(m);
                    true
                }
                None => false,
            },
            4 => match self.to_tx.pop_front() {
                Some(m) => {
                    let _ = self.tx.handle(&m);
                    true
                }
                None => false,
            },
            5 => match self.tx.poll_need() {
                Some(n) => {
                    let body = &self.src[usize::from(n.entry)];
                    let start = n.offset as usize;
                    let end = body.len().min(start + n.len.min(self.cut));
                    let data = &body[start..end];
                    if self.direct {
                        match self.tx.push_data_header(n.entry, n.offset, data.len()) {
                            Ok(h) => self.to_rx.push_back([&h[..], data].concat()),
                            // Queued messages go first.
                            Err(e) => {
                                assert_eq!(e, TransferError::Misuse);
                                return false;
                            }
                        }
                    } else {
                        self.tx.push_data(n.entry, n.offset, data).unwrap();
                    }
                    true
                }
                None => false,
            },
            _ => match self.tx.poll_event() {
                Some(ev) => {
                    match ev {
                        SenderEvent::Finished(o) => self.tx_end.push(o),
                        SenderEvent::Accepted { offsets } => self.accepted = Some(offsets),
                        SenderEvent::FileSent { .. } => {}
                    }
                    true
                }
                None => false,
            },
        }
    }

    fn on_rx_event(&mut self, ev: ReceiverEvent) {
        match ev {
            ReceiverEvent::Offered => {
                // (A CANCEL may have ended it since.)
                if self.auto_accept && self.rx.is_pending() {
                    self.rx.accept().unwrap();
                }
            }
            ReceiverEvent::Dir { .. } => {}
            ReceiverEvent::Data {
                entry,
                offset,
                data,
            } => self.store_data(entry, offset, &data),
            ReceiverEvent::Complete { entry } => {
                // `caller_hashes`: this caller hashes what it stored.
                let i = usize::from(entry);
                assert_eq!(self.store[i].len() as u64, self.tx.entries()[i].size());
                assert_eq!(self.rx.version(), self.tx.version());
                let h = digest(self.rx.version(), &self.store[i]);
                let _ = self.rx.file_hashed(entry, h);
            }
            ReceiverEvent::FileVerified { entry } => {
                let i = usize::from(entry);
                assert!(!self.verified[i], "verified twice");
                assert_eq!(self.store[i], self.src[i], "verified with wrong bytes");
                self.verified[i] = true;
            }
            ReceiverEvent::Finished(o) => self.rx_end.push(o),
        }
    }

    /// The receiver's caller writes file bytes (from an event or a slice).
    fn store_data(&mut self, entry: u16, offset: u64, data: &[u8]) {
        let f = &mut self.store[usize::from(entry)];
        assert_eq!(f.len() as u64, offset, "data in order for the caller");
        f.extend_from_slice(data);
    }

    /// Runs the ops in order, then round-robin until nothing moves.
    fn run(&mut self, ops: &[u8]) {
        for &op in ops {
            self.step(op);
        }
        self.settle();
    }

    fn settle(&mut self) {
        loop {
            let mut moved = false;
            for op in 0..7 {
                moved |= self.step(op);
            }
            if !moved {
                break;
            }
        }
    }

    fn check(&self) {
        assert!(
            self.rx_end.len() <= 1 && self.tx_end.len() <= 1,
            "ended twice"
        );
        if self.rx_end.first() == Some(&Outcome::Done) {
            for (i, (s, f)) in self.store.iter().zip(&self.src).enumerate() {
                let is_dir = self.tx.entries()[i].is_dir();
                assert!(is_dir || self.verified[i], "done without verifying {i}");
                assert_eq!(s, f, "done with wrong bytes in {i}");
            }
        }
    }

    fn assert_done(&self) {
        self.check();
        assert_eq!(self.rx_end, vec![Outcome::Done]);
        assert_eq!(self.tx_end, vec![Outcome::Done]);
        assert_eq!(self.store, self.src);
    }
}

fn small(window: u32, max_chunk: u32) -> ReceiverConfig {
    ReceiverConfig {
        window,
        max_chunk,
        ..ReceiverConfig::default()
    }
}

/// `cfg`, with the files hashed by the caller or not.
fn hashed_by(caller: bool, cfg: ReceiverConfig) -> ReceiverConfig {
    ReceiverConfig {
        caller_hashes: caller,
        ..cfg
    }
}

#[test]
fn whole_tree_round_robin() {
    let files = tree(1, 100_000);
    let mut r = Run::new(&files, ReceiverConfig::default(), MAX_CHUNK);
    r.run(&[]);
    r.assert_done();
    // Small window and chunks: many ACKs, the sender is window-bound.
    let mut r = Run::new(&files, small(1000, 333), MAX_CHUNK);
    r.run(&[]);
    r.assert_done();
    // Data sent from where it lies (header from the sender), and taken
    // as slices of the messages on the receiving side.
    let mut r = Run::new(&files, small(1000, 333), MAX_CHUNK);
    r.direct = true;
    r.by_ref = true;
    r.run(&[]);
    r.assert_done();
}

/// `handle_ref` hands out the bytes as slices and acknowledges them as
/// taking a `Data` event would; while an event waits, the bytes become a
/// `Data` event behind it, so the caller sees the same order either way.
#[test]
fn handle_ref_keeps_the_order_of_bytes_and_events() {
    let files = [dir("d"), file("d/a", &[5u8; 300])];
    let entries: Vec<Entry> = files.iter().map(|f| f.0.clone()).collect();
    let mut tx = Sender::new(2, entries, SenderConfig::default()).unwrap();
    let mut rx = Receiver::new(small(400, 100));
    rx.handle(&tx.poll_transmit().unwrap()).unwrap();
    assert_eq!(rx.poll_event(), Some(ReceiverEvent::Offered));
    rx.accept().unwrap();
    tx.handle(&rx.poll_transmit().unwrap()).unwrap();
    let data = |tx: &mut Sender| {
        let n = tx.poll_need().unwrap();
        tx.push_data(n.entry, n.offset, &[5u8; 100]).unwrap();
        tx.poll_transmit().unwrap()
    };
    // The Dir event of the accept is still waiting: the bytes queue behind it.
    let m = data(&mut tx);
    assert_eq!(rx.handle_ref(&m), Ok(None));
    assert_eq!(rx.poll_event(), Some(ReceiverEvent::Dir { entry: 0 }));
    assert!(matches!(
        rx.poll_event(),
        Some(ReceiverEvent::Data { offset: 0, .. })
    ));
    let ack = rx.poll_transmit().unwrap();
    assert_eq!(
        wire::decode(&ack),
        Ok(Message::Ack {
            id: 2,
            received: 100
        })
    );
    // Nothing waits now: a slice of the message, acknowledged at once (the
    // receiver had taken everything it received).
    let m = data(&mut tx);
    let d = rx.handle_ref(&m).unwrap().unwrap();
    assert_eq!((d.entry, d.offset, d.data), (1, 100, &[5u8; 100][..]));
    assert_eq!(&m[m.len() - 100..], d.data, "borrowed from the message");
    assert_eq!(rx.buffered(), 0);
    let ack = rx.poll_transmit().unwrap();
    assert_eq!(
        wire::decode(&ack),
        Ok(Message::Ack {
            id: 2,
            received: 200
        })
    );
    // The last bytes complete the file: the slice, then FileVerified.
    let m = data(&mut tx);
    assert!(rx.handle_ref(&m).unwrap().is_some());
    assert_eq!(
        rx.poll_event(),
        Some(ReceiverEvent::FileVerified { entry: 1 })
    );
    assert_eq!(rx.poll_event(), None);
}

/// `push_data_header` + the caller's bytes is the very message
/// `push_data` queues, and it refuses while other messages wait.
#[test]
fn data_header_matches_push_data() {
    let files = [file("a", &[7u8; 300])];
    let entries: Vec<Entry> = files.iter().map(|f| f.0.clone()).collect();
    let cfg = SenderConfig {
        chunk: 100,
        ..SenderConfig::default()
    };
    let mut a = Sender::new(9, entries.clone(), cfg).unwrap();
    let mut b = Sender::new(9, entries, cfg).unwrap();
    let accept = Message::Accept {
        id: 9,
        window: 1 << 20,
        max_chunk: 100,
        offsets: vec![0],
    }
    .encode(Version::V1);
    for s in [&mut a, &mut b] {
        while s.poll_transmit().is_some() {}
        s.handle(&accept).unwrap();
    }
    // Nothing queued after the ACCEPT: both ways work from here.
    a.push_data(0, 0, &[7; 100]).unwrap();
    // `b` has nothing queued: the header comes back, the bytes are ours.
    let h = b.push_data_header(0, 0, 100).unwrap();
    assert_eq!(
        a.poll_transmit().unwrap(),
        [&h[..], &[7u8; 100][..]].concat()
    );
    assert_eq!(a.poll_need(), b.poll_need());
    // Wrong offset, empty or oversized: refused, nothing changed.
    assert_eq!(b.push_data_header(0, 0, 100), Err(TransferError::Misuse));
    assert_eq!(b.push_data_header(0, 100, 0), Err(TransferError::Misuse));
    assert_eq!(b.push_data_header(0, 100, 101), Err(TransferError::Misuse));
    // A queued message (the CANCEL of a second sender) must go first.
    b.cancel(Reason::Declined);
    assert_eq!(b.push_data_header(0, 100, 100), Err(TransferError::Misuse));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Any interleaving of the two machines and the carrier, any chunk
    /// boundaries (window, receiver chunk bound, sender cut): identical
    /// bytes, every file verified, both sides Done.
    #[test]
    fn any_interleaving_and_chunking_completes(
        seed in any::<u64>(),
        len in 0usize..3000,
        window in 1u32..4000,
        max_chunk in 1u32..700,
        cut in 1usize..900,
        direct in any::<bool>(),
        caller_hashes in any::<bool>(),
        v2 in any::<bool>(),
        by_ref in any::<bool>(),
        ops in proptest::collection::vec(any::<u8>(), 0..400),
    ) {
        let v = if v2 { Version::V2 } else { Version::V1 };
        let files = tree_v(v, seed, len);
        let cfg = hashed_by(caller_hashes, small(window, max_chunk));
        let mut r = Run::with_version(v, &files, cfg, MAX_CHUNK);
        r.cut = cut;
        r.direct = direct;
        r.by_ref = by_ref;
        r.run(&ops);
        r.assert_done();
    }

    /// One fault on the sender → receiver carrier at message `at`: never a
    /// panic, never a verified file with wrong bytes; the receiver ends in an
    /// error (or, for a drop that leaves both waiting, nothing — the
    /// daemon's timeout ends it), unless the fault changed nothing.
    #[test]
    fn faults_end_in_errors_not_wrong_files(
        seed in any::<u64>(),
        len in 1usize..2000,
        at in 0usize..40,
        fault in 0u8..6,
        byte in any::<usize>(),
        caller_hashes in any::<bool>(),
        v2 in any::<bool>(),
        by_ref in any::<bool>(),
    ) {
        let v = if v2 { Version::V2 } else { Version::V1 };
        let files = tree_v(v, seed, len);
        let (r, _) = run_with_fault(v, &files, at, fault, byte, (caller_hashes, by_ref));
        r.check();
    }
}

/// Runs an honest transfer with a fault at the `at`-th sender message:
/// 0 drop, 1 duplicate, 2 swap with the next, 3 flip a byte, 4 cut the
/// message short, 5 drop every message from it on (truncation).
/// Returns the run and the kind of the faulted message (if it came).
fn run_with_fault(
    version: Version,
    files: &[(Entry, Vec<u8>)],
    at: usize,
    fault: u8,
    byte: usize,
    (caller_hashes, by_ref): (bool, bool),
) -> (Run, Option<u8>) {
    let mut faulted = None;
    let rcfg = hashed_by(caller_hashes, small(700, 97));
    let mut r = Run::with_version(version, files, rcfg, MAX_CHUNK);
    r.by_ref = by_ref;
    let mut n = 0usize;
    let mut held: Option<Vec<u8>> = None;
    loop {
        let mut moved = false;
        for op in 1..7 {
            moved |= r.step(op);
        }
        while let Some(m) = r.tx.poll_transmit() {
            moved = true;
            let k = n;
            n += 1;
            if let Some(h) = held.take() {
                r.to_rx.push_back(m);
                r.to_rx.push_back(h);
                continue;
            }
            if k < at || (fault != 5 && k > at) {
                r.to_rx.push_back(m);
                continue;
            }
            if k == at {
                faulted = m.first().copied();
            }
            match fault {
                0 | 5 => {}
                1 => {
                    r.to_rx.push_back(m.clone());
                    r.to_rx.push_back(m);
                }
                2 => held = Some(m),
                3 => {
                    let mut m = m;
                    let i = byte % m.len();
                    m[i] ^= 0x01;
                    r.to_rx.push_back(m);
                }
                _ => {
                    let mut m = m;
                    m.truncate(byte % m.len());
                    r.to_rx.push_back(m);
                }
            }
        }
        if !moved {
            break;
        }
    }
    if let Some(h) = held.take() {
        r.to_rx.push_back(h);
        r.settle();
    }
    (r, faulted)
}

#[test]
fn every_fault_at_every_message() {
    let trees = [Version::V1, Version::V2].map(|v| (v, tree_v(v, 7, 600)));
    let mut counts = [0usize; 4]; // done, failed/cancelled, stalled, total
    let mut msgs = 0;
    let mut data_faults = 0;
    let mut hit = 0;
    for fault in 0..6u8 {
        for at in 0..40 {
            for byte in [0usize, 1, 5, 6, 9, 13, 20, 1000] {
                // Odd positions: the caller hashes; every other pair of
                // positions: version 2; every other four: bytes by slice.
                let (v, files) = &trees[(at / 2) % 2];
                let how = (at % 2 == 1, (at / 4) % 2 == 1);
                let (r, kind) = run_with_fault(*v, files, at, fault, byte, how);
                r.check();
                hit += usize::from(kind.is_some());
                msgs = msgs.max(at);
                counts[3] += 1;
                match r.rx_end.first() {
                    Some(Outcome::Done) => {
                        counts[0] += 1;
                        assert_eq!(r.store, r.src);
                    }
                    Some(_) => counts[1] += 1,
                    None => {
                        // Only losing a message can leave both sides
                        // waiting — a flip or cut that changes the kind or
                        // id, or empties it, makes it another transfer's.
                        assert!(
                            matches!(fault, 0 | 3 | 4 | 5),
                            "fault {fault} at {at} stalled"
                        );
                        counts[2] += 1;
                    }
                }
                // Any fault on a DATA message (lost, duplicated, reordered,
                // a flipped byte, cut short) is never taken for a good
                // transfer.
                if kind == Some(KIND_DATA) {
                    data_faults += 1;
                    assert_ne!(
                        r.rx_end.first(),
                        Some(&Outcome::Done),
                        "fault {fault} at {at}"
                    );
                }
            }
        }
    }
    println!(
        "transfer faults: {} runs ({hit} hit a message): {} done, {} ended in an error, {} stalled (lost messages); {data_faults} faults hit DATA, none done",
        counts[3], counts[0], counts[1], counts[2]
    );
}

#[test]
fn wrong_hash_is_never_verified() {
    // The sender offers a hash that does not match what it sends (its file
    // changed after hashing): HashMismatch, ABORT, the sender sees it.
    for (v, caller) in [
        (Version::V1, false),
        (Version::V1, true),
        (Version::V2, false),
        (Version::V2, true),
    ] {
        let mut files = tree_v(v, 3, 500);
        if let EntryKind::File { digest, .. } = &mut files[2].0.kind {
            digest[0] ^= 1;
        }
        let mut r = Run::with_version(
            v,
            &files,
            hashed_by(caller, ReceiverConfig::default()),
            MAX_CHUNK,
        );
        r.run(&[]);
        r.check();
        assert_eq!(
            r.rx_end,
            vec![Outcome::Failed(TransferError::HashMismatch { entry: 2 })]
        );
        assert_eq!(
            r.tx_end,
            vec![Outcome::Cancelled {
                by: Side::Peer,
                reason: Reason::HashMismatch,
                entry: Some(2)
            }]
        );
        assert!(!r.verified[2]);
    }
}

/// `caller_hashes`: END waits for the caller's hashes (DONE only once
/// every file is verified), a hash for a file not complete or given twice
/// is `Misuse`, and a wrong one ends the transfer.
#[test]
fn caller_hashes_hold_done_until_every_hash_is_in() {
    let files = [file("a", b"hello"), file("b", b"world")];
    let entries: Vec<Entry> = files.iter().map(|f| f.0.clone()).collect();
    let digest = |b: &[u8]| digest(Version::V1, b);
    for wrong in [false, true] {
        let mut tx = Sender::new(5, entries.clone(), SenderConfig::default()).unwrap();
        let mut rx = Receiver::new(hashed_by(true, ReceiverConfig::default()));
        let mut to_rx = Vec::new();
        while let Some(m) = tx.poll_transmit() {
            rx.handle(&m).unwrap();
        }
        rx.accept().unwrap();
        // Nothing is complete yet.
        assert_eq!(
            rx.file_hashed(0, digest(b"hello")),
            Err(TransferError::Misuse)
        );
        while let Some(m) = rx.poll_transmit() {
            tx.handle(&m).unwrap();
        }
        for body in [&b"hello"[..], b"world"] {
            let n = tx.poll_need().unwrap();
            tx.push_data(n.entry, n.offset, body).unwrap();
        }
        while let Some(m) = tx.poll_transmit() {
            to_rx.push(m);
        }
        // Every DATA and the END arrive before the caller hashed anything.
        for m in &to_rx {
            rx.handle(m).unwrap();
        }
        let mut complete = Vec::new();
        while let Some(ev) = rx.poll_event() {
            if let ReceiverEvent::Complete { entry } = ev {
                complete.push(entry);
            }
            assert!(!matches!(ev, ReceiverEvent::FileVerified { .. }));
        }
        assert_eq!(complete, vec![0, 1]);
        assert_eq!(rx.outcome(), None, "no DONE before the hashes");
        while let Some(m) = rx.poll_transmit() {
            assert_ne!(m[0], dsoftbus::transfer::wire::KIND_DONE);
        }
        rx.file_hashed(0, digest(b"hello")).unwrap();
        assert_eq!(
            rx.file_hashed(0, digest(b"hello")),
            Err(TransferError::Misuse)
        );
        assert_eq!(
            rx.poll_event(),
            Some(ReceiverEvent::FileVerified { entry: 0 })
        );
        assert_eq!(rx.outcome(), None);
        let second = if wrong {
            digest(b"w0rld")
        } else {
            digest(b"world")
        };
        let r = rx.file_hashed(1, second);
        if wrong {
            assert_eq!(r, Err(TransferError::HashMismatch { entry: 1 }));
            assert_eq!(
                rx.outcome(),
                Some(&Outcome::Failed(TransferError::HashMismatch { entry: 1 }))
            );
            assert_eq!(
                rx.poll_transmit().unwrap()[0],
                dsoftbus::transfer::wire::KIND_ABORT
            );
        } else {
            r.unwrap();
            assert_eq!(
                rx.poll_event(),
                Some(ReceiverEvent::FileVerified { entry: 1 })
            );
            assert_eq!(rx.outcome(), Some(&Outcome::Done));
            assert_eq!(
                rx.poll_transmit().unwrap()[0],
                dsoftbus::transfer::wire::KIND_DONE
            );
        }
        // Once ended, a late hash is ignored.
        assert_eq!(rx.file_hashed(1, second), Ok(()));
    }
}

#[test]
fn cancel_at_every_step_from_either_side() {
    let files = tree(11, 900);
    // Count the steps of an honest run.
    let mut honest = Run::new(&files, small(600, 128), MAX_CHUNK);
    let mut steps = 0;
    loop {
        let mut moved = false;
        for op in 0..7 {
            if honest.step(op) {
                moved = true;
                steps += 1;
            }
        }
        if !moved {
            break;
        }
    }
    honest.assert_done();
    let mut runs = 0;
    for side in [Side::Local, Side::Peer] {
        for at in 0..=steps {
            let mut r = Run::new(&files, small(600, 128), MAX_CHUNK);
            let mut s = 0;
            let mut cancelled = false;
            loop {
                let mut moved = false;
                for op in 0..7 {
                    if s == at && !cancelled {
                        cancelled = true;
                        match side {
                            Side::Local => r.tx.cancel(Reason::Declined),
                            Side::Peer => r.rx.cancel(Reason::Declined),
                        }
                    }
                    if r.step(op) {
                        moved = true;
                        s += 1;
                    }
                }
                if !moved {
                    break;
                }
            }
            r.check();
            runs += 1;
            // Both sides end, exactly once; Done only if it was already done.
            assert_eq!(r.rx_end.len(), 1, "receiver, cancel at {at}");
            assert_eq!(r.tx_end.len(), 1, "sender, cancel at {at}");
            let done = |o: &Outcome| *o == Outcome::Done;
            if !done(&r.rx_end[0]) {
                assert!(!done(&r.tx_end[0]), "sender done, receiver not, at {at}");
            }
        }
    }
    println!(
        "transfer cancel: {runs} runs ({steps} steps × 2 sides + 2), every one ended on both sides"
    );
}

#[test]
fn resume_after_a_cut_at_every_chunk_boundary() {
    let files = tree(5, 300);
    let total: u64 = files.iter().map(|f| f.0.size()).sum();
    let chunk = 41u32;
    let chunks: usize = files
        .iter()
        .map(|f| f.1.len().div_ceil(chunk as usize))
        .sum();
    for cut_after in 0..=chunks {
        // First session: cut after the receiver's caller took `cut_after`
        // data events (everything in flight is lost).
        let mut r = Run::new(&files, small(1 << 20, chunk), MAX_CHUNK);
        let mut taken = 0;
        'outer: loop {
            let mut moved = false;
            for op in 0..7 {
                if op == 2 {
                    if let Some(ev) = r.rx.poll_event() {
                        moved = true;
                        let is_data = matches!(ev, ReceiverEvent::Data { .. });
                        r.on_rx_event(ev);
                        if is_data {
                            taken += 1;
                            if taken >= cut_after {
                                break 'outer;
                            }
                        }
                    }
                } else {
                    moved |= r.step(op);
                }
            }
            if !moved {
                break;
            }
        }
        r.check();
        let partial = r.store.clone();
        // Second session: a new sender (new id) offers the same entries;
        // the receiver feeds what it holds and accepts.
        let entries: Vec<Entry> = files.iter().map(|f| f.0.clone()).collect();
        let mut r2 = Run::new(&files, small(1 << 20, chunk), MAX_CHUNK);
        r2.tx = Sender::new(2, entries, SenderConfig::default()).unwrap();
        r2.auto_accept = false;
        r2.store = partial.clone();
        // Deliver the offer.
        r2.step(0);
        r2.step(1);
        assert_eq!(r2.rx.poll_event(), Some(ReceiverEvent::Offered));
        for (i, p) in partial.iter().enumerate() {
            if !p.is_empty() {
                // In pieces, to show prefixes need no alignment.
                for piece in p.chunks(13) {
                    r2.rx.resume_prefix(i as u16, piece).unwrap();
                }
            }
        }
        r2.rx.accept().unwrap();
        r2.run(&[]);
        r2.assert_done();
        let offsets = r2.accepted.clone().unwrap();
        let held: Vec<u64> = partial.iter().map(|p| p.len() as u64).collect();
        assert_eq!(offsets, held, "the sender restarts at the verified prefix");
        let resent = r2.tx.progress().0;
        assert_eq!(resent, total - held.iter().sum::<u64>(), "cut {cut_after}");
    }
    println!(
        "transfer resume: {} cut points, each resumed to identical bytes",
        chunks + 1
    );
}

#[test]
fn a_corrupt_partial_is_caught_at_the_end() {
    let files = tree(9, 200);
    let mut r = Run::new(&files, ReceiverConfig::default(), MAX_CHUNK);
    r.auto_accept = false;
    r.step(0);
    r.step(1);
    assert_eq!(r.rx.poll_event(), Some(ReceiverEvent::Offered));
    let mut bad = files[2].1[..50].to_vec();
    bad[10] ^= 0x80;
    r.rx.resume_prefix(2, &bad).unwrap();
    r.store[2] = bad;
    r.rx.accept().unwrap();
    r.run(&[]);
    r.check();
    assert_eq!(
        r.rx_end,
        vec![Outcome::Failed(TransferError::HashMismatch { entry: 2 })]
    );
    // A prefix longer than the file is refused without harm.
    let mut rx = Receiver::new(ReceiverConfig::default());
    let mut tx = Sender::new(3, vec![files[2].0.clone()], SenderConfig::default()).unwrap();
    rx.handle(&tx.poll_transmit().unwrap()).unwrap();
    let too_long = vec![0u8; files[2].1.len() + 1];
    assert_eq!(rx.resume_prefix(0, &too_long), Err(TransferError::Misuse));
    assert_eq!(rx.resume_prefix(1, b"x"), Err(TransferError::Misuse));
}

#[test]
fn deny_and_unanswered_offers() {
    let files = tree(2, 10);
    let mut r = Run::new(&files, ReceiverConfig::default(), MAX_CHUNK);
    r.auto_accept = false;
    r.run(&[]);
    assert!(r.rx.is_pending());
    assert_eq!(r.rx.offer().unwrap().len(), files.len());
    assert!(
        r.rx_end.is_empty() && r.tx_end.is_empty(),
        "waits for consent"
    );
    r.rx.deny(Reason::Expired).unwrap();
    r.run(&[]);
    assert_eq!(
        r.tx_end,
        vec![Outcome::Denied {
            by: Side::Peer,
            reason: Reason::Expired
        }]
    );
    assert_eq!(r.store.iter().map(Vec::len).sum::<usize>(), 0);
    assert_eq!(r.rx.accept(), Err(TransferError::Misuse));
}

/// The receiver's verdict on an offer of these paths (files of 1 byte).
fn verdict(paths: &[&str]) -> Option<Outcome> {
    let entries = paths
        .iter()
        .map(|p| Entry {
            path: (*p).into(),
            kind: EntryKind::File {
                size: 1,
                digest: [0; 32],
            },
        })
        .collect();
    let bytes = Message::Offer { id: 9, entries }.encode(Version::V1);
    let mut rx = Receiver::new(ReceiverConfig::default());
    let _ = rx.handle(&bytes);
    rx.outcome().cloned()
}

fn denied_name(o: Option<Outcome>) -> bool {
    matches!(
        o,
        Some(Outcome::Failed(TransferError::Offer(
            OfferError::Name { .. } | OfferError::Conflict { .. }
        )))
    )
}

#[test]
fn traversal_names_are_denied() {
    for p in [
        "..",
        "../x",
        "a/../../x",
        "a/..",
        "./a",
        "/etc/passwd",
        "a//b",
        "a/",
        "a\\..\\b",
        "C:\\x",
    ] {
        assert!(denied_name(verdict(&[p])), "{p:?}");
    }
    assert_eq!(verdict(&["a/b/c.txt"]), None, "valid names are pending");
}

#[test]
fn bidi_control_and_format_names_are_denied() {
    for p in [
        "invoice_\u{202E}fdp.exe",
        "a\u{2066}b",
        "\u{FEFF}x",
        "zero\u{200B}width",
        "tag\u{E0041}",
        "line\nbreak",
        "c1\u{85}",
        "del\u{7f}",
        "nul\0",
        " lead",
        "trail ",
        ".hidden",
        "dir/sub\u{200F}/f",
    ] {
        assert!(denied_name(verdict(&[p])), "{p:?}");
    }
    // Sanitizing the same names makes them acceptable, never traversing.
    for p in [
        "invoice_\u{202E}fdp.exe",
        "../../etc/passwd",
        " .bashrc",
        "a\\b",
    ] {
        let s = sanitize_path(p).unwrap();
        assert_eq!(validate_path(&s), Ok(()), "{p:?} → {s:?}");
        assert!(!s.split('/').any(|c| c == ".."));
    }
    assert_eq!(
        sanitize_path("invoice_\u{202E}fdp.exe").unwrap(),
        "invoice_fdp.exe"
    );
    assert_eq!(sanitize_path("../../etc/passwd").unwrap(), "etc/passwd");
    assert_eq!(sanitize_path("\u{202E}\u{202C}/.."), None);
}

#[test]
fn name_max_and_collisions() {
    let at_max = "n".repeat(MAX_NAME);
    let over = "n".repeat(MAX_NAME + 1);
    assert_eq!(verdict(&[&at_max]), None);
    assert!(denied_name(verdict(&[&over])));
    // Multi-byte: 128 × "é" is 256 bytes.
    assert!(denied_name(verdict(&[&"é".repeat(128)])));
    // Duplicates and file-vs-directory conflicts.
    assert!(denied_name(verdict(&["a", "a"])));
    assert!(denied_name(verdict(&["a", "a/b"])));
    assert!(denied_name(verdict(&["a/b", "a"])));
    assert_eq!(verdict(&["a/b", "a/c", "ab"]), None);
    // Two long names that only differ after byte 255 collide once cut; the
    // sender's dedup renames the second within NAME_MAX.
    let long1 = format!("{}1", "x".repeat(300));
    let long2 = format!("{}2", "x".repeat(300));
    let a = sanitize_path(&long1).unwrap();
    let b = sanitize_path(&long2).unwrap();
    assert_eq!(a, b);
    let d = dedup_paths(&[(a.clone(), false), (b, false)]).unwrap();
    assert_eq!(d[0], a);
    assert_ne!(d[0], d[1]);
    assert!(d[1].len() <= MAX_NAME && d[1].ends_with(".1"));
    let refs: Vec<&str> = d.iter().map(String::as_str).collect();
    assert_eq!(verdict(&refs), None, "deduplicated names are accepted");
    // Wide characters are cut on a boundary.
    let wide = sanitize_path(&"é".repeat(200)).unwrap();
    assert!(wide.len() <= MAX_NAME && validate_path(&wide).is_ok());
    // A file that another path needs as its directory is renamed too.
    let d = dedup_paths(&[("a".into(), false), ("a/b".into(), false)]);
    assert_eq!(d, None, "a/b cannot be renamed out of a file's way");
    let d = dedup_paths(&[("a/b".into(), false), ("a".into(), false)]).unwrap();
    assert_eq!(d, vec!["a/b".to_string(), "a.1".to_string()]);
}

#[test]
fn bounds_deny_before_anything_is_exposed() {
    let files = tree(4, 100);
    let entries: Vec<Entry> = files.iter().map(|f| f.0.clone()).collect();
    let offer = Message::Offer {
        id: 5,
        entries: entries.clone(),
    }
    .encode(Version::V1);
    let total: u64 = entries.iter().map(Entry::size).sum();
    for (cfg, want) in [
        (
            ReceiverConfig {
                max_entries: entries.len() - 1,
                ..ReceiverConfig::default()
            },
            OfferError::EntryCount,
        ),
        (
            ReceiverConfig {
                max_total_size: total - 1,
                ..ReceiverConfig::default()
            },
            OfferError::TotalSize,
        ),
    ] {
        let mut rx = Receiver::new(cfg);
        assert_eq!(rx.handle(&offer), Err(TransferError::Offer(want)));
        assert_eq!(
            rx.poll_event(),
            Some(ReceiverEvent::Finished(Outcome::Failed(
                TransferError::Offer(want)
            )))
        );
        assert!(!rx.is_pending());
        let out = rx.poll_transmit().unwrap();
        let deny = decode(&out).unwrap();
        assert_eq!(
            deny,
            Message::Deny {
                id: 5,
                reason: Reason::TooLarge
            }
        );
    }
    // Sizes that overflow u64 together.
    let huge = vec![
        Entry {
            path: "a".into(),
            kind: EntryKind::File {
                size: u64::MAX,
                digest: [0; 32],
            },
        },
        Entry {
            path: "b".into(),
            kind: EntryKind::File {
                size: 1,
                digest: [0; 32],
            },
        },
    ];
    assert_eq!(check_offer(&huge, 10, u64::MAX), Err(OfferError::TotalSize));
    assert!(Sender::new(1, huge, SenderConfig::default()).is_err());
    assert_eq!(
        Sender::new(1, Vec::new(), SenderConfig::default()).err(),
        Some(OfferError::EntryCount)
    );
}

#[test]
fn window_and_chunk_bounds_are_enforced() {
    let files = vec![file("f", &[7u8; 5000])];
    let mut r = Run::new(&files, small(1000, 100), MAX_CHUNK);
    r.auto_accept = true;
    // Offer → accept.
    for op in [0, 1, 2, 3, 4] {
        r.step(op);
    }
    // A rogue sender: a chunk over max_chunk.
    let mut rx = Receiver::new(small(1000, 100));
    let offer = Message::Offer {
        id: 1,
        entries: vec![files[0].0.clone()],
    }
    .encode(Version::V1);
    rx.handle(&offer).unwrap();
    rx.accept().unwrap();
    let big = wire::encode_data(Version::V1, 1, 0, 0, &[7u8; 101]);
    assert_eq!(
        rx.handle(&big),
        Err(TransferError::OutOfOrder {
            entry: 0,
            offset: 0
        })
    );
    // A rogue sender: past the window without waiting for ACKs.
    let mut rx = Receiver::new(small(1000, 100));
    rx.handle(&offer).unwrap();
    rx.accept().unwrap();
    let mut res = Ok(());
    for k in 0..11u64 {
        res = rx.handle(&wire::encode_data(Version::V1, 1, 0, k * 100, &[7u8; 100]));
        if res.is_err() {
            break;
        }
    }
    assert_eq!(res, Err(TransferError::WindowExceeded));
    // An honest sender never exceeds the receiver's window.
    r.run(&[]);
    r.assert_done();
}

#[test]
fn sender_refuses_bad_answers() {
    let files = tree(6, 50);
    let entries: Vec<Entry> = files.iter().map(|f| f.0.clone()).collect();
    let n = entries.len();
    for offsets in [vec![0; n - 1], {
        let mut o = vec![0; n];
        o[2] = 1_000_000;
        o
    }] {
        let mut tx = Sender::new(1, entries.clone(), SenderConfig::default()).unwrap();
        let _ = tx.poll_transmit();
        let acc = Message::Accept {
            id: 1,
            window: 100,
            max_chunk: 10,
            offsets,
        }
        .encode(Version::V1);
        assert_eq!(tx.handle(&acc), Err(TransferError::BadAnswer));
        assert!(matches!(tx.outcome(), Some(Outcome::Failed(_))));
    }
    // An ACK for bytes never sent.
    let mut tx = Sender::new(1, entries.clone(), SenderConfig::default()).unwrap();
    let _ = tx.poll_transmit();
    let acc = Message::Accept {
        id: 1,
        window: 100,
        max_chunk: 10,
        offsets: vec![0; n],
    }
    .encode(Version::V1);
    tx.handle(&acc).unwrap();
    let ack = Message::Ack { id: 1, received: 5 }.encode(Version::V1);
    assert_eq!(tx.handle(&ack), Err(TransferError::BadAnswer));
    // Messages of another transfer or direction change nothing.
    let mut tx = Sender::new(1, entries, SenderConfig::default()).unwrap();
    let other = Message::Done { id: 2 }.encode(Version::V1);
    assert_eq!(tx.handle(&other), Err(TransferError::NotMine));
    let own_kind = Message::End { id: 1 }.encode(Version::V1);
    assert_eq!(tx.handle(&own_kind), Err(TransferError::NotMine));
    assert_eq!(tx.handle(&[0x20, 1, 1]), Err(TransferError::NotMine));
    assert_eq!(tx.outcome(), None);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Arbitrary bytes into a fresh and an accepting receiver, and into a
    /// sender: never a panic, never a verified file.
    #[test]
    fn machines_take_arbitrary_bytes(
        msgs in proptest::collection::vec(
            (0x40u8..0x4a, proptest::collection::vec(any::<u8>(), 0..80)), 0..12),
    ) {
        let files = tree(1, 64);
        let entries: Vec<Entry> = files.iter().map(|f| f.0.clone()).collect();
        let mut rx = Receiver::new(ReceiverConfig::default());
        let mut rx2 = Receiver::new(ReceiverConfig::default());
        rx2.handle(&Message::Offer { id: 1, entries: entries.clone() }.encode(Version::V1)).unwrap();
        rx2.accept().unwrap();
        let mut tx = Sender::new(1, entries, SenderConfig::default()).unwrap();
        for (k, body) in msgs {
            let mut m = vec![k, 1, 0, 0, 0, 1];
            m.extend_from_slice(&body);
            let _ = rx.handle(&m);
            let _ = rx2.handle(&m);
            let _ = tx.handle(&m);
            let _ = tx.handle(&body);
        }
        for r in [&mut rx, &mut rx2] {
            while let Some(ev) = r.poll_event() {
                let verified = matches!(ev, ReceiverEvent::FileVerified { .. });
                prop_assert!(!verified);
            }
        }
    }

    /// The sender's sanitizer always yields a valid path, and leaves valid
    /// paths alone.
    #[test]
    fn sanitize_yields_valid_paths(s in "\\PC{0,300}|[a-z./\\\\ ]{0,40}") {
        if let Some(p) = sanitize_path(&s) {
            prop_assert_eq!(validate_path(&p), Ok(()));
            prop_assert_eq!(sanitize_path(&p), Some(p.clone()));
        }
        if validate_path(&s).is_ok() {
            prop_assert_eq!(sanitize_path(&s), Some(s.clone()));
        }
    }
}

/// Reads what the stream has into the frame decoder and hands every whole
/// transfer message to `handle`. Reads at most the decoder's free space, so
/// nothing is buffered beyond one message.
fn pump_stream(
    mux: &mut dsoftbus::stream::Mux,
    id: dsoftbus::stream::StreamId,
    dec: &mut dsoftbus::frame::FrameDecoder,
    mut handle: impl FnMut(&[u8]),
) {
    use dsoftbus::stream::Read;
    let mut buf = vec![0u8; 8192];
    loop {
        while let Some(m) = dec.next_frame().unwrap() {
            handle(&m);
        }
        let room = dec.space().min(buf.len());
        match mux.read(id, &mut buf[..room]).unwrap() {
            Read::Bytes(n) if n > 0 => dec.feed(&buf[..n]).unwrap(),
            _ => break,
        }
    }
}

#[test]
fn transfer_over_a_stream() {
    // The §12.1 stream carrier: one stream of kind STREAM_KIND, each
    // transfer message preceded by a 2-byte length (the §3 framing). The
    // transfer's bounds sit inside the stream's flow control.
    use dsoftbus::frame::{encode_frame, FrameDecoder};
    use dsoftbus::stream::{Event, Mux, Priority, StreamConfig};
    use dsoftbus::transfer::wire::MAX_MESSAGE_LEN;
    use dsoftbus::Instant;

    let now = Instant::from_millis(0);
    let files = tree(21, 300_000);
    let entries: Vec<Entry> = files.iter().map(|f| f.0.clone()).collect();
    let mut a = Mux::new(StreamConfig::default(), true, now);
    let mut b = Mux::new(StreamConfig::default(), false, now);
    let a_id = a.open(STREAM_KIND, Priority::Bulk).unwrap();
    let mut b_id = None;
    let mut tx = Sender::new(1, entries, SenderConfig::default()).unwrap();
    let mut rx = Receiver::new(ReceiverConfig {
        window: 256 << 10,
        ..ReceiverConfig::default()
    });
    let (mut a_out, mut b_out) = (Vec::new(), Vec::new());
    let mut a_dec = FrameDecoder::new(MAX_MESSAGE_LEN);
    let mut b_dec = FrameDecoder::new(MAX_MESSAGE_LEN);
    let mut store = vec![Vec::new(); files.len()];
    let mut rounds = 0;
    while tx.outcome().is_none() || rx.outcome().is_none() {
        rounds += 1;
        assert!(rounds < 100_000, "stalled");
        while let Some(n) = tx.poll_need() {
            let body = &files[usize::from(n.entry)].1;
            let s = n.offset as usize;
            tx.push_data(n.entry, n.offset, &body[s..body.len().min(s + n.len)])
                .unwrap();
            if a_out.len() > 1 << 20 {
                break;
            }
            while let Some(m) = tx.poll_transmit() {
                encode_frame(&m, &mut a_out).unwrap();
            }
        }
        while let Some(m) = tx.poll_transmit() {
            encode_frame(&m, &mut a_out).unwrap();
        }
        let k = a.write(a_id, &a_out).unwrap_or(0);
        a_out.drain(..k);
        while let Some(m) = rx.poll_transmit() {
            encode_frame(&m, &mut b_out).unwrap();
        }
        if let Some(id) = b_id {
            let k = b.write(id, &b_out).unwrap_or(0);
            b_out.drain(..k);
        }
        while let Some(m) = a.poll_transmit() {
            b.handle_input(&m, now).unwrap();
        }
        while let Some(m) = b.poll_transmit() {
            a.handle_input(&m, now).unwrap();
        }
        while let Some(ev) = b.poll_event() {
            if let Event::Opened { id, kind, .. } = ev {
                assert_eq!(kind, STREAM_KIND);
                b_id = Some(id);
            }
        }
        while a.poll_event().is_some() {}
        if let Some(id) = b_id {
            pump_stream(&mut b, id, &mut b_dec, |m| {
                let _ = rx.handle(m);
            });
        }
        pump_stream(&mut a, a_id, &mut a_dec, |m| {
            let _ = tx.handle(m);
        });
        while let Some(ev) = rx.poll_event() {
            match ev {
                ReceiverEvent::Offered => rx.accept().unwrap(),
                ReceiverEvent::Data {
                    entry,
                    offset,
                    data,
                } => {
                    let f = &mut store[usize::from(entry)];
                    assert_eq!(f.len() as u64, offset);
                    f.extend_from_slice(&data);
                }
                _ => {}
            }
        }
        while tx.poll_event().is_some() {}
    }
    assert_eq!(tx.outcome(), Some(&Outcome::Done));
    assert_eq!(rx.outcome(), Some(&Outcome::Done));
    let want: Vec<Vec<u8>> = files.iter().map(|f| f.1.clone()).collect();
    assert_eq!(store, want);
    println!(
        "transfer over a stream: {} bytes in {rounds} rounds",
        tx.progress().0
    );
}

/// Versions (wire.md §12.1): the receiver answers in the offer's version;
/// a v2 sender takes an old receiver's v1 DENY; a message in another
/// version than its transfer's ends it; an unknown version is denied in
/// v1; and the digest is the version's (a SHA-256 in a v2 offer fails).
#[test]
fn versions_are_per_transfer_and_checked() {
    let files = tree_v(Version::V2, 4, 300);
    let entries: Vec<Entry> = files.iter().map(|f| f.0.clone()).collect();
    let v2 = SenderConfig {
        version: Version::V2,
        ..SenderConfig::default()
    };

    // Every message of a v2 transfer is in v2, both ways.
    let mut tx = Sender::new(1, entries.clone(), v2).unwrap();
    let mut rx = Receiver::new(small(300, 100));
    let mut seen = Vec::new();
    for _ in 0..1000 {
        while let Some(m) = tx.poll_transmit() {
            seen.push(m[1]);
            rx.handle(&m).unwrap();
        }
        while let Some(ev) = rx.poll_event() {
            if ev == ReceiverEvent::Offered {
                rx.accept().unwrap();
            }
        }
        while let Some(m) = rx.poll_transmit() {
            seen.push(m[1]);
            tx.handle(&m).unwrap();
        }
        while let Some(n) = tx.poll_need() {
            let body = &files[usize::from(n.entry)].1;
            let at = n.offset as usize;
            tx.push_data(n.entry, n.offset, &body[at..at + n.len])
                .unwrap();
        }
        if tx.outcome().is_some() {
            break;
        }
    }
    assert_eq!(tx.outcome(), Some(&Outcome::Done));
    assert_eq!(rx.outcome(), Some(&Outcome::Done));
    assert!(seen.len() > 10 && seen.iter().all(|v| *v == 2), "{seen:?}");

    // An old receiver (v1 only) denies in v1: the v2 sender sees the denial.
    let mut tx = Sender::new(1, entries.clone(), v2).unwrap();
    let offer = tx.poll_transmit().unwrap();
    assert_eq!(offer[1], 2);
    let deny = Message::Deny {
        id: 1,
        reason: Reason::UnsupportedVersion,
    }
    .encode(Version::V1);
    tx.handle(&deny).unwrap();
    assert_eq!(
        tx.outcome(),
        Some(&Outcome::Denied {
            by: Side::Peer,
            reason: Reason::UnsupportedVersion
        })
    );

    // After the offer, another version is out of turn: the receiver aborts
    // (in the transfer's version), the sender cancels.
    let mut rx = Receiver::new(ReceiverConfig::default());
    let mut tx = Sender::new(1, entries.clone(), v2).unwrap();
    rx.handle(&tx.poll_transmit().unwrap()).unwrap();
    assert_eq!(rx.version(), Version::V2);
    rx.accept().unwrap();
    let accept = rx.poll_transmit().unwrap();
    assert_eq!(accept[1], 2);
    let v1_data = wire::encode_data(Version::V1, 1, 2, 0, &[1]);
    assert_eq!(
        rx.handle(&v1_data),
        Err(TransferError::Unexpected { kind: KIND_DATA })
    );
    let abort = rx.poll_transmit().unwrap();
    assert_eq!((abort[0], abort[1]), (wire::KIND_ABORT, 2));
    let mut v1_accept = accept.clone();
    v1_accept[1] = 1;
    assert_eq!(
        tx.handle(&v1_accept),
        Err(TransferError::Unexpected {
            kind: wire::KIND_ACCEPT
        })
    );
    let cancel = tx.poll_transmit().unwrap();
    assert_eq!((cancel[0], cancel[1], cancel[6]), (wire::KIND_CANCEL, 2, 5));

    // A version this code does not know: denied unsupported-version, in v1.
    let mut v3 = Message::Offer {
        id: 4,
        entries: entries.clone(),
    }
    .encode(Version::V1);
    v3[1] = 3;
    let mut rx = Receiver::new(ReceiverConfig::default());
    assert_eq!(
        rx.handle(&v3),
        Err(TransferError::Wire(WireError::UnsupportedVersion(3)))
    );
    assert_eq!(
        rx.poll_transmit().unwrap(),
        Message::Deny {
            id: 4,
            reason: Reason::UnsupportedVersion
        }
        .encode(Version::V1)
    );

    // SHA-256 digests offered as v2: the bytes are right, the hash is not.
    let v1_files = tree_v(Version::V1, 4, 300);
    for caller in [false, true] {
        let cfg = hashed_by(caller, ReceiverConfig::default());
        let mut r = Run::with_version(Version::V2, &v1_files, cfg, MAX_CHUNK);
        r.run(&[]);
        r.check();
        assert_eq!(
            r.rx_end,
            vec![Outcome::Failed(TransferError::HashMismatch { entry: 2 })]
        );
    }
}

/// The announce decides: v2 only to a peer that lists `transfer/2`.
#[test]
fn version_for_follows_the_announce() {
    let s = |n: &str| dsoftbus::ServiceName::new(n).unwrap();
    assert_eq!(version_for(&[]), Version::V1);
    assert_eq!(version_for(&[s("streams/1")]), Version::V1);
    assert_eq!(version_for(&[s("transfer/3")]), Version::V1);
    assert_eq!(version_for(&[s("streams/1"), s(V2_SERVICE)]), Version::V2);
}
