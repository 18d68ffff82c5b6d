//! Issue 12: `dsoftbus send` of folders and several files between two real
//! daemons on 127.0.0.1 (a transfer stream each: both announce `streams/1`),
//! and a hostile sender whose offer paths the receiver must keep inside its
//! inbox. Figures are printed (`--nocapture`).

mod common;

use std::os::unix::fs::symlink;
use std::path::Path;
use std::time::Duration;

use common::*;
use dsoftbus::transfer::wire::{Entry, EntryKind};
use dsoftbus::transfer::Reason;

const T: Duration = Duration::from_secs(10);

fn tree(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    fn go(base: &Path, d: &Path, out: &mut Vec<String>) {
        for e in std::fs::read_dir(d).unwrap() {
            let e = e.unwrap();
            let rel = e.path().strip_prefix(base).unwrap().display().to_string();
            if e.file_type().unwrap().is_dir() {
                out.push(format!("{rel}/"));
                go(base, &e.path(), out);
            } else {
                out.push(rel);
            }
        }
    }
    go(root, root, &mut out);
    out.sort();
    out
}

#[test]
fn folders_and_several_files_land_in_the_inbox() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b, inbox) = pair(dir.path(), &["--accept", "any"]);
    let src = dir.path().join("src");
    let docs = src.join("docs");
    std::fs::create_dir_all(docs.join("sub/deeper")).unwrap();
    std::fs::create_dir_all(docs.join("empty")).unwrap();
    std::fs::write(docs.join("a.txt"), b"alpha").unwrap();
    let big: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(docs.join("sub/big.bin"), &big).unwrap();
    std::fs::write(docs.join("sub/deeper/z"), b"").unwrap();
    symlink("/etc/passwd", docs.join("link")).unwrap();
    std::fs::write(src.join("single.txt"), b"one").unwrap();

    let o = cli(
        &a.state,
        &[
            "send",
            "beta",
            docs.to_str().unwrap(),
            src.join("single.txt").to_str().unwrap(),
            "--json",
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    let v: serde_json::Value = serde_json::from_str(out.trim()).expect("one JSON object");
    println!("folder send: {v}");
    assert_eq!(v["files"], 4);
    assert_eq!(v["bytes"], 300_000 + 5 + 3);
    assert_eq!(v["verified"], true);
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("symbolic links are not followed"),
        "{}",
        text(&o)
    );
    assert_eq!(
        tree(&inbox),
        vec![
            "docs/",
            "docs/a.txt",
            "docs/empty/",
            "docs/sub/",
            "docs/sub/big.bin",
            "docs/sub/deeper/",
            "docs/sub/deeper/z",
            "single.txt",
        ]
    );
    assert_eq!(std::fs::read(inbox.join("docs/sub/big.bin")).unwrap(), big);
    assert_eq!(std::fs::read(inbox.join("single.txt")).unwrap(), b"one");
    assert!(
        b.log_text().contains("from peer=alpha on stream"),
        "{}",
        b.log_text()
    );

    // Again: nothing is replaced; the folder lands as docs.1, the file as
    // single.txt.1.
    let o = cli(
        &a.state,
        &[
            "send",
            "beta",
            docs.to_str().unwrap(),
            src.join("single.txt").to_str().unwrap(),
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("4 files verified"), "{}", text(&o));
    assert_eq!(
        std::fs::read(inbox.join("docs.1/sub/big.bin")).unwrap(),
        big
    );
    assert_eq!(std::fs::read(inbox.join("single.txt.1")).unwrap(), b"one");
    assert_eq!(std::fs::read(inbox.join("docs/a.txt")).unwrap(), b"alpha");
    assert!(!tree(&inbox).iter().any(|f| f.contains(".part")));
}

#[test]
fn offered_paths_stay_inside_the_inbox() {
    let dir = tempfile::tempdir().unwrap();
    let (rx, inbox) = spawn_receiver(dir.path(), &["--accept", "any"], None);
    rx.wait_up();
    let mut h = Hostile::connect("evil", &rx);
    let body = b"payload".to_vec();
    // Every one of these is denied before anything touches the disk.
    let bad = [
        "../x",
        "a/../../x",
        "/etc/passwd",
        "a//b",
        ".hidden/x",
        "a/\u{202E}b",
        "a\\..\\b",
    ];
    for (i, p) in bad.iter().enumerate() {
        let id = 100 + i as u32;
        h.send_all(&[offer(id, &body, p)]).unwrap();
        let r = h.expect(KIND_DENY, id, T);
        assert_eq!(r.reason(), Some(Reason::InvalidName), "{p:?}");
    }
    assert!(files_in(&inbox).is_empty(), "{:?}", files_in(&inbox));
    // A file and a path below it in one offer conflict.
    let e = vec![file("a", &body), file("a/b", &body)];
    h.send_all(&[offer_entries(7, e)]).unwrap();
    assert_eq!(
        h.expect(KIND_DENY, 7, T).reason(),
        Some(Reason::InvalidName)
    );
    // A valid nested offer lands under a directory created for it, even
    // when the inbox already holds a *file* of that name.
    std::fs::write(inbox.join("pics"), b"not a dir").unwrap();
    let e = vec![
        Entry {
            path: "pics".into(),
            kind: EntryKind::Dir,
        },
        file("pics/2024/cat.jpg", &body),
    ];
    h.send_all(&[offer_entries(8, e)]).unwrap();
    assert_eq!(h.expect(KIND_ACCEPT, 8, T).offsets(), Some(vec![0, 0]));
    h.send_all(&[data(8, 1, 0, &body), end(8)]).unwrap();
    h.expect(KIND_DONE, 8, T);
    assert_eq!(std::fs::read(inbox.join("pics")).unwrap(), b"not a dir");
    assert_eq!(
        std::fs::read(inbox.join("pics.1/2024/cat.jpg")).unwrap(),
        body
    );
}

/// Item 5: the sender's daemon is killed (SIGKILL) mid-transfer; the
/// receiver keeps the partial file; `send` again after the restart sends
/// only the rest, and the file is correct.
#[test]
fn interrupted_send_resumes_with_fewer_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let (mut a, b, inbox) = pair(dir.path(), &["--accept", "any"]);
    let src = dir.path().join("big.bin");
    let size: usize = 48 << 20;
    let mut x: u32 = 1;
    let body: Vec<u8> = (0..size)
        .map(|_| {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            (x >> 16) as u8
        })
        .collect();
    std::fs::write(&src, &body).unwrap();
    let child = std::process::Command::new(BIN)
        .arg("--state-dir")
        .arg(&a.state)
        .args(["send", "beta", src.to_str().unwrap()])
        .env("XDG_CONFIG_HOME", "/nonexistent")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let part_len = || -> u64 {
        files_in(&inbox)
            .iter()
            .filter(|f| f.ends_with(".part"))
            .map(|f| {
                std::fs::metadata(inbox.join(f))
                    .map(|m| m.len())
                    .unwrap_or(0)
            })
            .sum()
    };
    wait_for("a partial file of 8 MiB", &[&a, &b], || {
        part_len() >= 8 << 20
    });
    a.child.kill().unwrap(); // SIGKILL: the sender's daemon is gone
    a.child.wait().unwrap();
    let out = child.wait_with_output().unwrap();
    assert_ne!(out.status.code(), Some(0), "{}", text(&out));
    wait_for("the receiver to keep the partial file", &[&b], || {
        b.log_text().contains("kept 10 min for a resume")
    });
    // The writer thread still writes what the session had batched for it
    // (≤ 5 × 256 KiB) before it hands the partial file to the resume store:
    // wait until the size stops moving.
    let mut last = u64::MAX;
    wait_for("the partial file to stop growing", &[&b], || {
        let now = part_len();
        let stable = now == last;
        last = now;
        std::thread::sleep(Duration::from_millis(200));
        stable
    });
    let held = part_len();
    assert!(held >= 8 << 20, "{held}");
    assert!(!inbox.join("big.bin").exists());

    let a2 = spawn_with(
        dir.path(),
        "alpha",
        &a.state,
        &a.log,
        a.ports,
        &[b.ports.udp],
        &[],
        None,
        &[],
    );
    a2.wait_up();
    wait_for("the new session", &[&a2, &b], || a2.sessions() == Some(1));
    let o = cli(
        &a2.state,
        &["send", "beta", src.to_str().unwrap(), "--json"],
    );
    assert!(o.status.success(), "{}", text(&o));
    let v: serde_json::Value =
        serde_json::from_str(String::from_utf8_lossy(&o.stdout).trim()).unwrap();
    let (sent, resumed) = (
        v["sent_bytes"].as_u64().unwrap(),
        v["resumed_bytes"].as_u64().unwrap(),
    );
    println!(
        "resume: {held} bytes held after the kill; second send: {sent} bytes sent, {resumed} resumed, of {size}"
    );
    assert_eq!(resumed, held);
    assert_eq!(sent + resumed, size as u64);
    assert!(sent < size as u64);
    assert!(std::fs::read(inbox.join("big.bin")).unwrap() == body);
    assert_eq!(files_in(&inbox), vec!["big.bin"]);
    assert!(b.log_text().contains("resuming:"), "{}", b.log_text());
}

/// The stream carrier at wire level (wire.md §11/§12): a peer that
/// announces `streams/1` gets the daemon's files on a stream of kind 0x40
/// and may send its own on one; a stream of another kind is refused
/// (reset `unknown kind`). The test side runs the core's `stream::Mux`.
#[test]
fn transfers_on_streams_with_a_scripted_peer() {
    use dsoftbus::frame::{encode_frame, FrameDecoder};
    use dsoftbus::stream::{self, Event as SEvent, Mux, Priority, Read, StreamConfig};
    use dsoftbus::Event;

    let dir = tempfile::tempdir().unwrap();
    let (rx, inbox) = spawn_receiver(dir.path(), &["--accept", "any"], None);
    rx.wait_up();
    let mut h = Hostile::connect_with("peer", &rx, &["streams/1"]);
    let t0 = dsoftbus::Instant::from_millis(0);
    let mut mux = Mux::new(StreamConfig::default(), true, t0);
    // Pumps the session: stream messages to the mux, its output back.
    fn pump(h: &mut Hostile, mux: &mut Mux, ms: u64) {
        let mut msgs = Vec::new();
        while let Some(m) = mux.poll_transmit() {
            h.send_all(&[m]).unwrap();
        }
        h.pump_until(Duration::from_millis(ms), |_, ev| {
            if let Event::Data(d) = ev {
                if d.first() == Some(&stream::KIND_STREAM) {
                    msgs.push(d.clone());
                }
            }
            false
        });
        for m in msgs {
            mux.handle_input(&m, dsoftbus::Instant::from_millis(1))
                .unwrap();
        }
        while let Some(m) = mux.poll_transmit() {
            h.send_all(&[m]).unwrap();
        }
    }
    let framed = |msgs: &[Vec<u8>]| {
        let mut out = Vec::new();
        for m in msgs {
            encode_frame(m, &mut out).unwrap();
        }
        out
    };
    let read_msgs = |mux: &mut Mux, id, dec: &mut FrameDecoder| {
        let mut out = Vec::new();
        let mut buf = vec![0u8; 65_536];
        loop {
            let n = dec.space().min(buf.len());
            match mux.read(id, &mut buf[..n]) {
                Ok(Read::Bytes(k)) => {
                    dec.feed(&buf[..k]).unwrap();
                    while let Some(m) = dec.next_frame().unwrap() {
                        out.push(m);
                    }
                }
                _ => return out,
            }
        }
    };

    // Our offer on a stream of kind 0x40.
    let body = b"over a stream".to_vec();
    let sid = mux.open(0x40, Priority::Bulk).unwrap();
    mux.write(sid, &framed(&[offer(1, &body, "s.txt")]))
        .unwrap();
    // And a stream of a kind the daemon does not take.
    let other = mux.open(0x41, Priority::Bulk).unwrap();
    mux.write(other, b"xx").unwrap();
    let mut dec = FrameDecoder::new(65_535);
    let mut got = Vec::new();
    let mut reset = None;
    for _ in 0..50 {
        pump(&mut h, &mut mux, 100);
        while let Some(ev) = mux.poll_event() {
            match ev {
                SEvent::Readable(id) if id == sid => got.extend(read_msgs(&mut mux, sid, &mut dec)),
                SEvent::Reset { id, code } if id == other => reset = Some(code),
                _ => {}
            }
        }
        if !got.is_empty() && reset.is_some() {
            break;
        }
    }
    assert_eq!(reset, Some(stream::RESET_UNKNOWN_KIND));
    let accept = got.first().expect("an ACCEPT on the stream");
    assert_eq!(accept[0], KIND_ACCEPT);
    mux.write(sid, &framed(&[data(1, 0, 0, &body), end(1)]))
        .unwrap();
    let mut done = false;
    for _ in 0..50 {
        pump(&mut h, &mut mux, 100);
        while let Some(ev) = mux.poll_event() {
            if ev == SEvent::Readable(sid) {
                done |= read_msgs(&mut mux, sid, &mut dec)
                    .iter()
                    .any(|m| m[0] == KIND_DONE);
            }
        }
        if done {
            break;
        }
    }
    assert!(done, "no DONE on the stream\n{}", rx.log_text());
    assert_eq!(std::fs::read(inbox.join("s.txt")).unwrap(), body);
    assert!(
        rx.log_text().contains("from peer=peer on stream 1"),
        "{}",
        rx.log_text()
    );

    // The daemon sends to us: it opens a stream of kind 0x40 (bulk).
    let src = dir.path().join("out.bin");
    std::fs::write(&src, vec![9u8; 5000]).unwrap();
    let state = rx.state.clone();
    let srcs = src.to_str().unwrap().to_string();
    let sender = std::thread::spawn(move || cli(&state, &["send", "peer", &srcs]));
    let mut opened = None;
    let mut dec2 = FrameDecoder::new(65_535);
    let mut msgs = Vec::new();
    for _ in 0..50 {
        pump(&mut h, &mut mux, 100);
        while let Some(ev) = mux.poll_event() {
            match ev {
                SEvent::Opened { id, kind, priority } => {
                    assert_eq!((kind, priority), (0x40, Priority::Bulk));
                    opened = Some(id);
                }
                SEvent::Readable(id) if Some(id) == opened => {
                    msgs.extend(read_msgs(&mut mux, id, &mut dec2))
                }
                _ => {}
            }
        }
        if !msgs.is_empty() {
            break;
        }
    }
    let id = opened.expect("the daemon opened a stream");
    assert_eq!(msgs[0][0], KIND_OFFER);
    let tid = u32::from_be_bytes([msgs[0][2], msgs[0][3], msgs[0][4], msgs[0][5]]);
    // Deny it: the sender exits 7 with the reason.
    let deny = dsoftbus::transfer::wire::Message::Deny {
        id: tid,
        reason: Reason::Declined,
    }
    .encode(dsoftbus::transfer::Version::V1);
    mux.write(id, &framed(&[deny])).unwrap();
    pump(&mut h, &mut mux, 300);
    let o = sender.join().unwrap();
    assert_eq!(o.status.code(), Some(7), "{}", text(&o));
    assert!(text(&o).contains("declined"), "{}", text(&o));
}

/// Runs the core's own `Receiver` (accepting) over what the daemon sends
/// `h` until the transfer ends; every message must be in version `want`.
/// The receiver (outcome, offered entries) and the bytes it handed out.
fn receive_with_core(
    h: &mut Hostile,
    want: dsoftbus::transfer::Version,
) -> (dsoftbus::transfer::Receiver, Vec<u8>) {
    use dsoftbus::transfer::{Receiver, ReceiverConfig, ReceiverEvent};
    let mut rx = Receiver::new(ReceiverConfig::default());
    let mut got = Vec::new();
    while rx.outcome().is_none() {
        let m = h.recv(T, true).expect("the sender's next message");
        assert_eq!(m.version, want, "every message in the offer's version");
        let _ = rx.handle(&m.msg);
        while let Some(ev) = rx.poll_event() {
            match ev {
                ReceiverEvent::Offered => rx.accept().unwrap(),
                ReceiverEvent::Data { data, .. } => got.extend_from_slice(&data),
                _ => {}
            }
        }
        let out: Vec<Vec<u8>> = std::iter::from_fn(|| rx.poll_transmit()).collect();
        h.send_all(&out).unwrap();
    }
    (rx, got)
}

/// A daemon `tx` up, and a `len`-byte file in `dir` for it to send.
fn sender_and_file(dir: &Path, len: u32) -> (Node, Vec<u8>, String) {
    let tx = spawn(dir, "tx", Ports::new(), &[], &[], None);
    tx.wait_up();
    let body: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
    let src = dir.join("f.bin");
    std::fs::write(&src, &body).unwrap();
    (tx, body, src.to_str().unwrap().to_string())
}

/// `dsoftbus send --json <device> <path>` from `tx`, on a thread.
fn send_json(tx: &Node, device: &str, path: &str) -> std::thread::JoinHandle<std::process::Output> {
    let (state, device, path) = (tx.state.clone(), device.to_string(), path.to_string());
    std::thread::spawn(move || cli(&state, &["send", "--json", &device, &path]))
}

/// Transfer v2 (wire.md §12.1): `send` offers BLAKE3 only to a peer whose
/// announce lists `transfer/2`, SHA-256 (v1) to one that does not; each
/// transfer runs to DONE against the core's own `Receiver`, the offered
/// digest is the one an independent implementation computes, and `--json`
/// says which hash it was.
#[test]
fn send_offers_v2_only_to_a_peer_that_announces_it() {
    use dsoftbus::transfer::{Outcome, Version};
    use sha2::Digest;
    let dir = tempfile::tempdir().unwrap();
    let (tx, body, path) = sender_and_file(dir.path(), 300_007);
    let sha256 = hex::encode(sha2::Sha256::digest(&body));
    let blake3 = blake3::hash(&body).to_hex().to_string();
    let cases: [(&str, &[&str], Version, &str); 2] = [
        ("old", &[], Version::V1, &sha256),
        ("new", &["transfer/2"], Version::V2, &blake3),
    ];
    for (id, services, want, digest) in cases {
        let mut h = Hostile::connect_with(id, &tx, services);
        let sender = send_json(&tx, id, &path);
        let (rx, got) = receive_with_core(&mut h, want);
        match rx.offer().map(|e| e[0].kind) {
            Some(EntryKind::File { digest: d, .. }) => {
                assert_eq!(hex::encode(d), digest, "{id}: offered digest")
            }
            k => panic!("{id}: offered {k:?}"),
        }
        assert_eq!(rx.outcome(), Some(&Outcome::Done), "{id}");
        assert_eq!(got, body, "{id}");
        let o = sender.join().unwrap();
        assert!(o.status.success(), "{id}: {}", text(&o));
        let v: serde_json::Value = serde_json::from_str(text(&o).trim()).unwrap();
        assert_eq!(v["hash"], want.hash_name(), "{id}: {v}");
        assert_eq!(v["digest"], digest, "{id}: {v}");
        let sha_field = if want == Version::V1 { digest } else { "" };
        assert_eq!(v["sha256"], sha_field, "{id}: {v}");
        println!(
            "send to a peer announcing {services:?}: transfer {want:?}, {} {digest}",
            want.hash_name()
        );
    }
}

/// A peer that lists `transfer/2` but denies a v2 offer `unsupported-version`
/// (a stale announce, another implementation) gets the same files again
/// in v1, and the send succeeds.
#[test]
fn a_refused_v2_offer_is_offered_again_in_v1() {
    use dsoftbus::transfer::{Message, Outcome, Version};
    let dir = tempfile::tempdir().unwrap();
    let (tx, body, path) = sender_and_file(dir.path(), 100_003);
    let mut h = Hostile::connect_with("liar", &tx, &["transfer/2"]);
    let sender = send_json(&tx, "liar", &path);
    // The v2 offer: denied as a v1-only node would (its DENY in v1).
    let o = h.recv(T, false).expect("the v2 offer");
    assert_eq!((o.kind, o.version), (KIND_OFFER, Version::V2));
    let deny = Message::Deny {
        id: o.id,
        reason: Reason::UnsupportedVersion,
    };
    h.send_all(&[deny.encode(Version::V1)]).unwrap();
    // The same file again, in v1, run to DONE by the core's receiver.
    let (rx, got) = receive_with_core(&mut h, Version::V1);
    assert_eq!(rx.outcome(), Some(&Outcome::Done));
    assert_eq!(got, body);
    let o = sender.join().unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_str(text(&o).trim()).unwrap();
    assert_eq!(v["hash"], "sha256", "{v}");
}
