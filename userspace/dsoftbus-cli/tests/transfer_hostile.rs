//! Issues 9/11/12: the Linux node against hostile peers and careless local
//! users. Real daemons on 127.0.0.1; the hostile peer speaks the wire
//! protocol through the `dsoftbus` core crate, file transfer included
//! (docs/protocol/wire.md §12, on session data messages; see
//! tests/common/mod.rs). Figures are printed (run with `--nocapture`),
//! bounds are asserted.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use dsoftbus::transfer::Reason;

const T: Duration = Duration::from_secs(10);

/// Broken item 1: eight same-name transfers whose END messages arrive in
/// one TCP write; every verified file must survive under its own name.
/// Also: an offered name with a bidi override, or one that is not UTF-8, is
/// refused by id (DENY invalid-name / protocol), nothing is stored.
#[test]
fn same_name_transfers_ending_together_all_survive() {
    let dir = tempfile::tempdir().unwrap();
    let (rx, inbox) = spawn_receiver(
        dir.path(),
        &["--accept", "any"],
        Some("max_incoming_transfers = 16\n"),
    );
    rx.wait_up();
    let mut h = Hostile::connect("evil", &rx);

    // Eight at once (the per-peer cap is half of 16 slots).
    const WRITERS: u32 = 8;
    let rounds = 25u32;
    let mut want = Vec::new();
    for r in 0..rounds {
        let ids: Vec<u32> = (0..WRITERS).map(|i| r * 16 + i + 1).collect();
        let datas: Vec<Vec<u8>> = ids
            .iter()
            .map(|id| format!("file {id} of round {r}\n").repeat(40).into_bytes())
            .collect();
        let offers: Vec<Vec<u8>> = ids
            .iter()
            .zip(&datas)
            .map(|(id, d)| offer(*id, d, "same.txt"))
            .collect();
        h.send_all(&offers).unwrap();
        for id in &ids {
            let a = h.expect(KIND_ACCEPT, *id, T);
            assert_eq!(a.offsets(), Some(vec![0]));
        }
        let chunks: Vec<Vec<u8>> = ids
            .iter()
            .zip(&datas)
            .map(|(id, d)| data(*id, 0, 0, d))
            .collect();
        h.send_all(&chunks).unwrap();
        // All ENDs in one write: the writers store at the same moment.
        let ends: Vec<Vec<u8>> = ids.iter().map(|id| end(*id)).collect();
        h.send_all(&ends).unwrap();
        for id in &ids {
            h.expect(KIND_DONE, *id, T);
        }
        want.extend(datas);
    }
    let files = files_in(&inbox);
    println!(
        "same-name: {} DONE ok, {} files in the inbox",
        want.len(),
        files.len()
    );
    assert_eq!(
        files.len(),
        want.len(),
        "a verified file was replaced: {files:?}"
    );
    let mut got: Vec<Vec<u8>> = files
        .iter()
        .map(|f| std::fs::read(inbox.join(f)).unwrap())
        .collect();
    got.sort();
    want.sort();
    assert_eq!(got, want);
    assert!(files.iter().all(|f| f.starts_with("same.txt")), "{files:?}");

    // U+202E RIGHT-TO-LEFT OVERRIDE: the receiver never rewrites a name
    // (wire.md §12.4), it refuses it.
    let before = files_in(&inbox).len();
    let name = "invoice_\u{202E}fdp.exe";
    h.send_all(&[offer(900, b"not an exe", name)]).unwrap();
    let r = h.expect(KIND_DENY, 900, T);
    assert_eq!(r.reason(), Some(Reason::InvalidName));
    // Traversal too.
    h.send_all(&[offer(902, b"x", "../escape.txt")]).unwrap();
    assert_eq!(
        h.expect(KIND_DENY, 902, T).reason(),
        Some(Reason::InvalidName)
    );

    // A non-UTF-8 name: a clear refusal, by id.
    let mut bad = offer(901, b"abc", "bad__.txt");
    let n = bad.len();
    // The path is followed by size (8) and SHA-256 (32): patch "__".
    bad[n - 40 - 6] = 0xff;
    bad[n - 40 - 5] = 0xfe;
    h.send_all(&[bad]).unwrap();
    let r = h.expect(KIND_DENY, 901, T);
    assert_eq!(r.reason(), Some(Reason::Protocol));
    assert_eq!(files_in(&inbox).len(), before, "{:?}", files_in(&inbox));
    assert!(files_in(&inbox).iter().all(|f| !f.contains('\u{202E}')));
}

/// Broken item 2: OFFERs that never send data take at most the per-peer
/// share of the receive slots (default 4 slots, 2 per peer; the rest are
/// denied `busy`), and another peer can still send (a daemon that announces
/// `streams/1`: the transfer goes on a stream).
#[test]
fn offer_and_stall_cannot_hold_the_receive_slots() {
    let dir = tempfile::tempdir().unwrap();
    let inbox = dir.path().join("inbox");
    let (pa, prx) = (Ports::new(), Ports::new());
    let rx = spawn(
        dir.path(),
        "rx",
        prx,
        &[pa.udp],
        &["--inbox", inbox.to_str().unwrap(), "--accept", "any"],
        None,
    );
    let alpha = spawn(dir.path(), "alpha", pa, &[prx.udp], &[], None);
    rx.wait_up();
    let mut h = Hostile::connect("evil", &rx);
    let offers: Vec<Vec<u8>> = (1..=4)
        .map(|id| offer_size(id, 1 << 20, "stall.bin"))
        .collect();
    h.send_all(&offers).unwrap();
    let (accepted, refused) = answers(&mut h, 4);
    println!("offer-and-stall: accepted {accepted:?}, refused {refused:?}");
    assert_eq!(accepted.len(), 2, "per-peer cap");
    assert_eq!(refused, vec![Reason::Busy; 2]);

    // An honest peer still gets a slot.
    wait_for("alpha's session with rx", &[&alpha, &rx], || {
        alpha.sessions() == Some(1)
    });
    let src = dir.path().join("honest.bin");
    std::fs::write(&src, vec![7u8; 100_000]).unwrap();
    let o = cli(&alpha.state, &["send", "rx", src.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(
        std::fs::read(inbox.join("honest.bin")).unwrap(),
        vec![7u8; 100_000]
    );
    // Both daemons announce streams/1: the transfer had its own stream.
    assert!(
        rx.log_text().contains("from peer=alpha on stream"),
        "{}",
        rx.log_text()
    );
}

/// The answers to `n` offers: accepted ids and refusal reasons.
fn answers(h: &mut Hostile, n: usize) -> (Vec<u32>, Vec<Reason>) {
    let mut accepted = Vec::new();
    let mut refused = Vec::new();
    for _ in 0..n {
        let a = h.recv(T, false).expect("an answer to every offer");
        match a.kind {
            KIND_ACCEPT => accepted.push(a.id),
            KIND_DENY => refused.push(a.reason().expect("a reason")),
            k => panic!("unexpected {k:#04x}"),
        }
    }
    (accepted, refused)
}

/// Broken item 2: an accepted transfer that receives nothing is cancelled
/// after the idle timeout (here 2 s), with an ABORT `expired` and its .part
/// file gone.
#[test]
fn stalled_transfers_are_cancelled_after_the_idle_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let (rx, inbox) = spawn_receiver(
        dir.path(),
        &["--accept", "any"],
        Some("transfer_idle_timeout_secs = 2\n"),
    );
    rx.wait_up();
    let mut h = Hostile::connect("evil", &rx);
    let t0 = Instant::now();
    h.send_all(&[offer_size(1, 1 << 20, "a"), offer_size(2, 1 << 20, "b")])
        .unwrap();
    let (accepted, _) = answers(&mut h, 2);
    assert_eq!(accepted.len(), 2);
    // Some data for both: the timer counts from the last data.
    h.send_all(&[data(1, 0, 0, &[1; 1000]), data(2, 0, 0, &[1; 1000])])
        .unwrap();
    wait_for("two partial files", &[&rx], || files_in(&inbox).len() == 2);
    for id in accepted {
        let d = h.expect(KIND_ABORT, id, T);
        assert_eq!(d.reason(), Some(Reason::Expired));
    }
    assert!(
        rx.log_text().contains("no data for 2 s"),
        "{}",
        rx.log_text()
    );
    let secs = t0.elapsed().as_secs_f64();
    println!("stalled transfers cancelled after {secs:.1} s (idle timeout 2 s)");
    assert!(secs < 10.0, "{secs}"); // idle timeout 2 s, slack for a loaded machine
    wait_for("partial files deleted", &[&rx], || {
        files_in(&inbox).is_empty()
    });
    // The slots are free again.
    h.send_all(&[offer(3, b"c", "c"), offer(4, b"d", "d")])
        .unwrap();
    let (accepted, refused) = answers(&mut h, 2);
    assert_eq!(accepted.len(), 2, "{refused:?}");
}

/// Broken item 3: a peer that never reads and streams OFFERs is disconnected
/// once the daemon's reply queue reaches its bound; the daemon does not grow
/// and counts the disconnect.
#[test]
fn peer_that_never_reads_is_disconnected_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let rx = spawn(dir.path(), "rx", Ports::new(), &[], &[], None);
    rx.wait_up();
    let mut h = Hostile::connect("evil", &rx);
    h.stop_reading();
    let rss0 = rx.rss_kib();
    let (sent, cut, secs) = h.flood_until_cut(2_000_000, |h, sent| {
        let msgs: Vec<Vec<u8>> = (0..2_000u32)
            .map(|i| offer(sent as u32 + i, b"x", "flood.txt"))
            .collect();
        h.send_all(&msgs).map(|()| 2_000)
    });
    let rss1 = rx.rss_kib();
    println!(
        "never-reads: {sent} OFFERs sent in {secs:.1} s, disconnected={cut}, daemon RSS {rss0} -> {rss1} KiB"
    );
    assert!(cut, "the daemon kept reading a peer that never reads");
    assert!(
        rss1 < rss0 + 32 * 1024,
        "daemon grew by {} KiB",
        rss1 - rss0
    );
    wait_for("the overflow counter", &[&rx], || {
        rx.status("counter.outbound_overflow").as_deref() == Some("1")
    });
    assert!(
        rx.log_text().contains("over its bound"),
        "{}",
        rx.log_text()
    );
    // The daemon still serves others.
    assert_eq!(rx.sessions(), Some(0));
}

/// Partial: a daemon killed mid-transfer leaves a .part file; the next
/// start removes it.
#[test]
fn killed_mid_transfer_leaves_no_part_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    let inbox = dir.path().join("inbox");
    let ports = Ports::new();
    let args = ["--inbox", inbox.to_str().unwrap(), "--accept", "any"];
    let mut rx = spawn(dir.path(), "rx", ports, &[], &args, None);
    rx.wait_up();
    let mut h = Hostile::connect("evil", &rx);
    h.send_all(&[offer_size(1, 100 << 20, "big.bin")]).unwrap();
    h.expect(KIND_ACCEPT, 1, T);
    let bytes = vec![0x5a; 60_000];
    let chunks: Vec<Vec<u8>> = (0..20u64).map(|i| data(1, 0, i * 60_000, &bytes)).collect();
    h.send_all(&chunks).unwrap();
    wait_for("a growing partial file", &[&rx], || {
        files_in(&inbox)
            .iter()
            .any(|f| f.ends_with(".part") && std::fs::metadata(inbox.join(f)).unwrap().len() > 0)
    });
    rx.child.kill().unwrap(); // SIGKILL: no cleanup runs
    rx.child.wait().unwrap();
    let left = files_in(&inbox);
    assert_eq!(left.len(), 1, "{left:?}");
    drop(h);
    let rx2 = spawn_with(
        dir.path(),
        "rx",
        &rx.state,
        &rx.log,
        ports,
        &[],
        &args,
        None,
        &[],
    );
    rx2.wait_up();
    println!(
        "killed mid-transfer: before restart {left:?}, after {:?}",
        files_in(&inbox)
    );
    assert!(files_in(&inbox).is_empty(), "{:?}", files_in(&inbox));
    assert!(rx2.log_text().contains("removed 1 partial file"));
}

/// Partial: a state directory (or key / known-peers file) writable by others
/// or owned by another user is refused with exit 3, as ssh's StrictModes.
#[test]
fn planted_world_writable_state_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let run = |state: &std::path::Path| {
        let p = Ports::new();
        let mut child = Command::new(BIN)
            .arg("--state-dir")
            .arg(state)
            .args(["daemon", "--device-id", "x", "--listen", "127.0.0.1"])
            .args(["--port", &p.tcp.to_string()])
            .args(["--discovery", "unicast", "--announce-to", "127.0.0.1:9"])
            .args(["--discovery-port", &p.udp.to_string()])
            .env("XDG_CONFIG_HOME", "/nonexistent")
            .env_remove("DSOFTBUS_CONFIG")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(10) {
            if child.try_wait().unwrap().is_some() {
                return child.wait_with_output().unwrap();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("the daemon started on a state dir it should refuse");
    };
    // A local user made the state dir world-writable and planted a key.
    let state = dir.path().join("s");
    std::fs::create_dir(&state).unwrap();
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o777)).unwrap();
    std::fs::write(state.join("static.key"), "11".repeat(32)).unwrap();
    std::fs::set_permissions(
        state.join("static.key"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    let o = run(&state);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    assert!(text(&o).contains("writable by everyone"), "{}", text(&o));
    assert!(!state.join("control.sock").exists());
    // A writable known-peers file in a private dir.
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::fs::write(state.join("known_peers.toml"), "[peers]\n").unwrap();
    std::fs::set_permissions(
        state.join("known_peers.toml"),
        std::fs::Permissions::from_mode(0o666),
    )
    .unwrap();
    let o = run(&state);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    assert!(text(&o).contains("known-peers file"), "{}", text(&o));
    // Owned by another user (only testable as root).
    std::fs::set_permissions(
        state.join("known_peers.toml"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    if nix::unistd::geteuid().is_root() {
        nix::unistd::chown(
            &state.join("static.key"),
            Some(nix::unistd::Uid::from_raw(4321)),
            None,
        )
        .unwrap();
        let o = run(&state);
        assert_eq!(o.status.code(), Some(3), "{}", text(&o));
        assert!(text(&o).contains("owned by uid 4321"), "{}", text(&o));
    }
    // The client commands that read the files refuse them too.
    let o = cli(&state, &["id"]);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
}

/// Partial: when the session dies after END the sender exits at once with
/// exit 7, instead of waiting 60 s and reporting "no progress".
#[test]
fn sender_exits_at_once_when_the_session_dies_after_end() {
    let dir = tempfile::tempdir().unwrap();
    let tx = spawn(dir.path(), "tx", Ports::new(), &[], &[], None);
    tx.wait_up();
    let mut h = Hostile::connect("evil", &tx);
    let src = dir.path().join("f.bin");
    std::fs::write(&src, vec![1u8; 200_000]).unwrap();
    let t0 = Instant::now();
    let child = Command::new(BIN)
        .arg("--state-dir")
        .arg(&tx.state)
        .args(["send", "evil", src.to_str().unwrap()])
        .env("XDG_CONFIG_HOME", "/nonexistent")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let o = h.recv(T, false).expect("an OFFER");
    assert_eq!(o.kind, KIND_OFFER);
    let entries = o.entries().expect("entries");
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].path, "f.bin");
    h.send_all(&[accept(o.id, 1)]).unwrap();
    // Read (and acknowledge) until END, then vanish without a DONE.
    let mut got = 0u64;
    loop {
        let m = h.recv(T, true).expect("data and END");
        if let Some((_, _, d)) = m.data() {
            got += d.len() as u64;
            h.send_all(&[ack(o.id, got)]).unwrap();
        }
        if m.kind == KIND_END {
            break;
        }
    }
    assert_eq!(got, 200_000);
    drop(h);
    let out = child.wait_with_output().unwrap();
    let secs = t0.elapsed().as_secs_f64();
    println!(
        "session died after END: sender exited {:?} after {secs:.2} s",
        out.status.code()
    );
    assert_eq!(out.status.code(), Some(7), "{}", text(&out));
    assert!(
        text(&out).contains("closed before the receiver confirmed the file"),
        "{}",
        text(&out)
    );
    assert!(secs < 10.0, "sender waited {secs:.1} s");
}

/// Partial: idle control clients no longer block every CLI command: one more
/// than the 16 slots gets a clear "busy", and every idle one is disconnected
/// after the idle timeout.
#[test]
fn idle_control_clients_are_dropped() {
    use std::io::Read;
    let dir = tempfile::tempdir().unwrap();
    let n = spawn(dir.path(), "n", Ports::new(), &[], &[], None);
    n.wait_up();
    let sock = n.state.join("control.sock");
    // One more than the slots: whatever the order (the `wait_up` client may
    // still hold a slot for a moment), at least one is told "busy" at once.
    let mut idle: Vec<UnixStream> = (0..17)
        .map(|_| UnixStream::connect(&sock).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let mut busy = 0;
    for s in &mut idle {
        s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        let mut b = Vec::new();
        if let Ok(k) = s.read_to_end(&mut b) {
            assert!(k == 0 || String::from_utf8_lossy(&b).contains("daemon busy"));
            busy += usize::from(k > 0);
        }
    }
    assert!(busy >= 1, "17 clients, 16 slots: nobody was told busy");
    let t0 = Instant::now();
    wait_for("status to work again", &[&n], || {
        cli(&n.state, &["status"]).status.success()
    });
    let secs = t0.elapsed().as_secs_f64();
    println!("17 idle control clients: {busy} told busy at once; status works after {secs:.1} s");
    assert!(secs < 15.0, "{secs}"); // idle timeout 5 s, slack for a loaded machine
                                    // Every idle client was disconnected (EOF after at most a busy line).
    for mut s in idle {
        s.set_read_timeout(Some(Duration::from_secs(8))).unwrap();
        let mut b = Vec::new();
        s.read_to_end(&mut b).unwrap();
    }
}

/// Partial (first use): DSOFTBUS_REQUIRE_KNOWN=0 overrides `require_known =
/// true` from the config file; `ping -c 0` is a usage error; sending a
/// path that does not exist says so.
#[test]
fn first_use_papercuts() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("s");
    let log = dir.path().join("s.log");
    let n = spawn_with(
        dir.path(),
        "n",
        &state,
        &log,
        Ports::new(),
        &[],
        &[],
        Some("require_known = true\n"),
        &[("DSOFTBUS_REQUIRE_KNOWN", "0")],
    );
    n.wait_up();
    assert_eq!(n.status("require_known").as_deref(), Some("false"));
    drop(n);
    let n = spawn_with(
        dir.path(),
        "n",
        &state,
        &log,
        Ports::new(),
        &[],
        &[],
        Some("require_known = false\n"),
        &[("DSOFTBUS_REQUIRE_KNOWN", "1")],
    );
    n.wait_up();
    assert_eq!(n.status("require_known").as_deref(), Some("true"));
    drop(n);

    let o = cli(&state, &["ping", "x", "-c", "0"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    // A path that does not exist: a clear error before the daemon is asked.
    let missing = dir.path().join("missing.bin");
    let o = cli(&state, &["send", "x", missing.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("cannot send"), "{}", text(&o));
    assert!(text(&o).contains("missing.bin"), "{}", text(&o));
    // `send` needs at least one path.
    let o = cli(&state, &["send", "x"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));

    // RUST_LOG is honoured: at `warn` the daemon's info lines are gone.
    let quiet = dir.path().join("quiet.log");
    let n = spawn_with(
        dir.path(),
        "q",
        &dir.path().join("q"),
        &quiet,
        Ports::new(),
        &[],
        &[],
        None,
        &[("RUST_LOG", "warn")],
    );
    n.wait_up();
    drop(n);
    let t = std::fs::read_to_string(&quiet).unwrap();
    assert!(!t.contains("node up"), "{t}");
}

/// Broken item 3, second queue: the core answers every PING with a PONG;
/// a peer that pings without reading is disconnected once the transmit
/// buffer passes its bound, instead of growing it.
#[test]
fn pinging_peer_that_never_reads_is_disconnected() {
    let dir = tempfile::tempdir().unwrap();
    let rx = spawn(dir.path(), "rx", Ports::new(), &[], &[], None);
    rx.wait_up();
    let mut h = Hostile::connect("evil", &rx);
    h.stop_reading();
    let rss0 = rx.rss_kib();
    let (sent, cut, secs) = h.flood_until_cut(3_000_000, |h, sent| {
        for i in 0..2_000u64 {
            if h.conn.send_ping(sent + i).is_err() {
                break;
            }
        }
        h.flush().map(|()| 2_000)
    });
    let rss1 = rx.rss_kib();
    println!(
        "never-reads pings: {sent} PINGs in {secs:.1} s, disconnected={cut}, daemon RSS {rss0} -> {rss1} KiB"
    );
    assert!(
        cut,
        "the daemon kept queueing pongs for a peer that never reads"
    );
    assert!(
        rss1 < rss0 + 32 * 1024,
        "daemon grew by {} KiB",
        rss1 - rss0
    );
    wait_for("the overflow counter", &[&rx], || {
        rx.status("counter.outbound_overflow").as_deref() == Some("1")
    });
}

/// Partial (control socket): a client that sends requests but never reads
/// the answers is dropped after the write timeout instead of holding its
/// slot forever.
#[test]
fn control_client_that_never_reads_is_dropped() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let n = spawn(dir.path(), "n", Ports::new(), &[], &[], None);
    n.wait_up();
    let mut s = UnixStream::connect(n.state.join("control.sock")).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
    let req = b"{\"cmd\":\"status\"}\n".repeat(2000);
    s.write_all(&req).unwrap();
    let t0 = Instant::now();
    let closed = loop {
        std::thread::sleep(Duration::from_millis(500));
        if s.write_all(b"{\"cmd\":\"status\"}\n").is_err() {
            break true;
        }
        if t0.elapsed() > Duration::from_secs(30) {
            break false;
        }
    };
    println!(
        "control client not reading: dropped={closed} after {:.1} s",
        t0.elapsed().as_secs_f64()
    );
    assert!(closed, "the daemon kept a client that never reads");
    assert!(cli(&n.state, &["status"]).status.success());
}

/// Item 6 (transfer lines): a peer that streams OFFERs, each followed by an
/// out-of-order DATA, or OFFERs to a daemon without an inbox, gets each
/// reply but the daemon logs at most a burst then one line a second per
/// kind ("receiving", "chunk out of order", "refused a file"), with the
/// suppressed count. Before: one line of each per OFFER.
#[test]
fn transfer_lines_a_peer_triggers_are_rate_limited() {
    const N: u32 = 200;
    let dir = tempfile::tempdir().unwrap();
    let (rx, _inbox) = spawn_receiver(dir.path(), &["--accept", "any"], None);
    let bare = spawn(dir.path(), "bare", Ports::new(), &[], &[], None);
    rx.wait_up();
    bare.wait_up();
    let t0 = Instant::now();

    let mut h = Hostile::connect("evil", &rx);
    for batch in 0..N / 50 {
        let msgs: Vec<Vec<u8>> = (0..50)
            .flat_map(|i| {
                let id = batch * 50 + i + 1;
                [offer_size(id, 1000, "f.bin"), data(id, 0, 5, &[0; 10])]
            })
            .collect();
        h.send_all(&msgs).unwrap();
        let mut done = 0;
        while done < 50 {
            let a = h.recv(T, false).expect("an answer to every offer");
            match a.kind {
                KIND_ACCEPT => {}
                KIND_ABORT => {
                    assert_eq!(a.reason(), Some(Reason::Protocol));
                    done += 1;
                }
                k => panic!("unexpected {k:#04x}: {a:?}"),
            }
        }
    }

    let mut b = Hostile::connect("evil2", &bare);
    let offers: Vec<Vec<u8>> = (1..=N).map(|id| offer(id, b"x", "f.bin")).collect();
    b.send_all(&offers).unwrap();
    let (accepted, refused) = answers(&mut b, N as usize);
    assert!(accepted.is_empty());
    assert!(
        refused.iter().all(|r| *r == Reason::Declined),
        "{refused:?}"
    );

    let secs = t0.elapsed().as_secs() + 2;
    std::thread::sleep(Duration::from_millis(300));
    let (log, bare_log) = (rx.log_text(), bare.log_text());
    let receiving = log.matches("receiving f.bin ").count() as u64;
    let order = log.matches("data out of order").count() as u64;
    let no_inbox = bare_log.matches("refused a transfer").count() as u64;
    println!(
        "transfer log flood: {N} offers each; {receiving} 'receiving', {order} 'data out of order', {no_inbox} 'refused a transfer' lines in {secs} s"
    );
    for (what, n) in [
        ("receiving", receiving),
        ("data out of order", order),
        ("refused a transfer", no_inbox),
    ] {
        assert!(n >= 1, "no {what:?} line at all");
        assert!(n <= 8 + secs, "{n} {what:?} lines in {secs} s");
    }
    // Suppressed lines are counted (and carried by the next allowed one).
    let suppressed = |n: &Node| {
        n.status("counter.log_suppressed")
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    assert!(suppressed(&rx) >= 2 * u64::from(N) - receiving - order);
    assert!(suppressed(&bare) >= u64::from(N) - no_inbox);
}
