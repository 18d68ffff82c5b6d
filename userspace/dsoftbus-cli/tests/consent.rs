//! Issue 12 item 4: the receiver decides (`--accept ask|known|any|none`,
//! `dsoftbus::node::consent`). Real daemons on 127.0.0.1; hostile peers
//! speak the transfer protocol through the core's codec
//! (tests/common/mod.rs). Figures are printed (`--nocapture`).

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use dsoftbus::transfer::Reason;

const T: Duration = Duration::from_secs(10);

fn transfers(n: &Node) -> serde_json::Value {
    let o = cli(&n.state, &["transfers", "--json"]);
    assert!(o.status.success(), "{}", text(&o));
    serde_json::from_str(String::from_utf8_lossy(&o.stdout).trim()).unwrap()
}

fn pending_ids(n: &Node) -> Vec<u64> {
    transfers(n)["pending"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_u64().unwrap())
        .collect()
}

fn send_bg(from: &Node, to: &str, path: &std::path::Path) -> Child {
    Command::new(BIN)
        .arg("--state-dir")
        .arg(&from.state)
        .args(["send", to, path.to_str().unwrap()])
        .env("XDG_CONFIG_HOME", "/nonexistent")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// `ask` (the default): offers from a peer nobody pinned wait; one peer
/// holds at most 4 of the 16 pending places (the rest are denied `busy` at
/// once), another peer still gets one; nobody answers, so every offer is
/// denied `expired` after the TTL (here 2 s) and the table is empty again.
#[test]
fn unanswered_offers_expire_and_one_peer_cannot_fill_the_table() {
    let dir = tempfile::tempdir().unwrap();
    let (rx, inbox) = spawn_receiver(dir.path(), &[], Some("offer_ttl_secs = 2\n"));
    rx.wait_up();
    assert_eq!(transfers(&rx)["policy"], "ask");
    let mut h = Hostile::connect("evil", &rx);
    let t0 = Instant::now();
    let offers: Vec<Vec<u8>> = (1..=6).map(|id| offer(id, b"x", "f.txt")).collect();
    h.send_all(&offers).unwrap();
    // Two over the per-peer cap: denied at once; four wait.
    let mut busy = Vec::new();
    for _ in 0..2 {
        let a = h
            .recv(T, false)
            .expect("a DENY for the offers over the cap");
        assert_eq!(a.kind, KIND_DENY);
        assert_eq!(a.reason(), Some(Reason::Busy));
        busy.push(a.id);
    }
    assert_eq!(busy, vec![5, 6]);
    wait_for("four pending offers", &[&rx], || {
        pending_ids(&rx).len() == 4
    });
    let mut h2 = Hostile::connect("evil2", &rx);
    h2.send_all(&[offer(1, b"y", "g.txt")]).unwrap();
    wait_for("a fifth pending offer", &[&rx], || {
        pending_ids(&rx).len() == 5
    });
    let v = transfers(&rx);
    let first = &v["pending"][0];
    assert_eq!(first["peer"], "evil");
    assert_eq!(first["files"], 1);
    assert_eq!(first["bytes"], 1);
    assert!(first["expires_in_s"].as_u64().unwrap() <= 2, "{v}");
    assert!(
        rx.log_text().contains("`dsoftbus accept"),
        "{}",
        rx.log_text()
    );
    // Nobody answers.
    for id in 1..=4 {
        let d = h.expect(KIND_DENY, id, T);
        assert_eq!(d.reason(), Some(Reason::Expired));
    }
    let d = h2.expect(KIND_DENY, 1, T);
    assert_eq!(d.reason(), Some(Reason::Expired));
    let secs = t0.elapsed().as_secs_f64();
    println!("ask: 6 offers from one peer -> 2 denied busy at once, 4 pending; all expired after {secs:.1} s (TTL 2 s)");
    assert!(secs < 8.0, "{secs}");
    assert!(pending_ids(&rx).is_empty());
    let v = transfers(&rx);
    let recent = v["recent"].as_array().unwrap();
    assert!(
        recent
            .iter()
            .filter(|r| r["result"].as_str().unwrap().contains("nobody answered"))
            .count()
            >= 5,
        "{v}"
    );
    assert!(files_in(&inbox).is_empty());
    // Clear errors: an expired id, an unknown id.
    let o = cli(&rx.state, &["accept", "1"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains("already answered (expired)"),
        "{}",
        text(&o)
    );
    let o = cli(&rx.state, &["deny", "9999"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("no pending offer 9999"), "{}", text(&o));
}

/// `ask` with a person answering: `dsoftbus accept <id>` lets the waiting
/// `send` finish; `dsoftbus deny <id>` makes it exit 7; answering twice
/// says so.
#[test]
fn ask_offers_are_answered_with_accept_and_deny() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b, inbox) = pair(dir.path(), &[]);
    let src = dir.path().join("note.txt");
    std::fs::write(&src, b"hello beta").unwrap();

    let child = send_bg(&a, "beta", &src);
    wait_for("a pending offer", &[&a, &b], || pending_ids(&b).len() == 1);
    let id = pending_ids(&b)[0];
    // Nothing lands before the answer.
    assert!(files_in(&inbox).is_empty());
    let o = cli(&b.state, &["accept", &id.to_string()]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("accepted offer"), "{}", text(&o));
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        std::fs::read(inbox.join("note.txt")).unwrap(),
        b"hello beta"
    );
    let o = cli(&b.state, &["accept", &id.to_string()]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains("already answered (accepted)"),
        "{}",
        text(&o)
    );

    let child = send_bg(&a, "beta", &src);
    wait_for("a second pending offer", &[&a, &b], || {
        pending_ids(&b).len() == 1
    });
    let id = pending_ids(&b)[0];
    let o = cli(&b.state, &["deny", &id.to_string()]);
    assert!(o.status.success(), "{}", text(&o));
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(7), "{}", text(&out));
    assert!(
        text(&out).contains("refused the transfer: declined"),
        "{}",
        text(&out)
    );
    assert_eq!(files_in(&inbox), vec!["note.txt"]);
    let v = transfers(&b);
    let recent = v["recent"].as_array().unwrap();
    assert!(recent.iter().any(|r| r["ok"] == true), "{v}");
    assert!(
        recent
            .iter()
            .any(|r| r["result"].as_str().unwrap().contains("denied by the user")),
        "{v}"
    );
    let v = transfers(&a);
    assert!(
        v["recent"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["direction"] == "out" && r["ok"] == true),
        "{v}"
    );
}

/// `none` denies everything; `known` denies a peer that is only pinned
/// automatically (any LAN peer gets such a pin by connecting) and accepts
/// it once the user pinned it with `dsoftbus trust`.
#[test]
fn none_denies_and_known_needs_a_user_pin() {
    let dir = tempfile::tempdir().unwrap();
    let (pa, pb, pc) = (Ports::new(), Ports::new(), Ports::new());
    let ib = dir.path().join("inbox-b");
    let ic = dir.path().join("inbox-c");
    let a = spawn(dir.path(), "alpha", pa, &[pb.udp, pc.udp], &[], None);
    let b = spawn(
        dir.path(),
        "beta",
        pb,
        &[pa.udp],
        &["--inbox", ib.to_str().unwrap(), "--accept", "none"],
        None,
    );
    let c = spawn_with(
        dir.path(),
        "gamma",
        &dir.path().join("gamma"),
        &dir.path().join("gamma.log"),
        pc,
        &[pa.udp],
        &["--inbox", ic.to_str().unwrap()],
        Some("accept = \"known\"\n"),
        &[],
    );
    for n in [&a, &b, &c] {
        n.wait_up();
    }
    wait_for("both sessions", &[&a, &b, &c], || a.sessions() == Some(2));
    assert_eq!(transfers(&b)["policy"], "none");
    assert_eq!(b.status("accept").as_deref(), Some("none"));
    assert_eq!(transfers(&c)["policy"], "known");
    let src = dir.path().join("f.txt");
    std::fs::write(&src, b"data").unwrap();
    let o = cli(&a.state, &["send", "beta", src.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(7), "{}", text(&o));
    assert!(text(&o).contains("declined"), "{}", text(&o));
    // gamma pinned alpha automatically (first session): not consent.
    let peers = text(&cli(&c.state, &["peers", "--json"]));
    assert!(peers.contains("\"pin\":\"auto\""), "{peers}");
    let o = cli(&a.state, &["send", "gamma", src.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(7), "{}", text(&o));
    assert!(text(&o).contains("declined"), "{}", text(&o));
    assert!(files_in(&ib).is_empty() && files_in(&ic).is_empty());
    // The user pins alpha on gamma: now it is accepted without asking.
    let o = cli(&c.state, &["trust", "alpha"]);
    assert!(o.status.success(), "{}", text(&o));
    let o = cli(&a.state, &["send", "gamma", src.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(std::fs::read(ic.join("f.txt")).unwrap(), b"data");
}
