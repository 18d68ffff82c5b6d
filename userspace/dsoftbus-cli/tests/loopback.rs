//! End-to-end tests of the `dsoftbus` binary on loopback (no root, no
//! namespaces): daemons discover each other through unicast announces to
//! 127.0.0.1, then the client commands are run against them.
//! Network traffic stays on 127.0.0.1.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;

#[test]
fn two_nodes_peers_ping_send_trust_forget() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b, inbox) = pair(dir.path(), &["--accept", "any"]);
    let pb = b.ports;

    // peers: the table row for beta, pinned on first sight ("auto"), with a session.
    let o = cli(&a.state, &["peers"]);
    assert!(o.status.success(), "{}", text(&o));
    let t = text(&o);
    assert!(t.starts_with("DEVICE"), "{t}");
    let row = t.lines().find(|l| l.starts_with("beta")).expect("beta row");
    assert!(row.contains(&format!("127.0.0.1:{}", pb.tcp)), "{row}");
    let cols: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(&cols[3..5], &["auto", "yes"], "{row}");
    let json = text(&cli(&a.state, &["peers", "--json"]));
    assert!(json.contains("\"device\":\"beta\""), "{json}");

    // ping: RTT over the session; an unknown device is exit 5.
    let o = cli(&a.state, &["ping", "beta", "-c", "2", "-i", "0.05"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("2 sent, 2 received"), "{}", text(&o));
    assert_eq!(
        cli(&a.state, &["ping", "nobody", "-c", "1"]).status.code(),
        Some(5)
    );

    // --json on every command that prints data: one JSON object each.
    for args in [
        &["peers", "--json"][..],
        &["status", "--json"],
        &["id", "--json"],
        &["ping", "beta", "-c", "1", "--json"],
    ] {
        let o = cli(&a.state, args);
        assert!(o.status.success(), "{args:?}: {}", text(&o));
        let v: serde_json::Value = serde_json::from_slice(&o.stdout)
            .unwrap_or_else(|e| panic!("{args:?}: not JSON ({e}): {}", text(&o)));
        assert!(v.is_object(), "{args:?}: {v}");
    }
    let ping = text(&cli(&a.state, &["ping", "beta", "-c", "1", "--json"]));
    assert!(ping.contains("\"received\":1"), "{ping}");

    // send: stored in the inbox, byte for byte; a receiver without inbox: exit 7.
    let src = dir.path().join("payload.bin");
    let data: Vec<u8> = (0..700_000u32).map(|i| (i * 31 % 251) as u8).collect();
    std::fs::write(&src, &data).unwrap();
    let o = cli(&a.state, &["send", "beta", src.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("verified by the receiver"),
        "{}",
        text(&o)
    );
    assert_eq!(std::fs::read(inbox.join("payload.bin")).unwrap(), data);
    let o = cli(&b.state, &["send", "alpha", src.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(7), "{}", text(&o));
    assert!(text(&o).contains("no inbox"), "{}", text(&o));
    // No partial files left behind on either side.
    let names: Vec<_> = std::fs::read_dir(&inbox)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 1, "{names:?}");

    // The known-peers file holds beta's key, the same `id` reports.
    let id_b = text(&cli(&b.state, &["id"]));
    let key_b = id_b
        .lines()
        .find_map(|l| l.strip_prefix("key "))
        .unwrap()
        .to_string();
    let known = std::fs::read_to_string(a.state.join("known_peers.toml")).unwrap();
    assert!(known.contains(&key_b), "{known}");

    // forget drops the pin and the session; TOFU pins it again on next sight.
    let o = cli(&a.state, &["forget", "beta"]);
    assert!(o.status.success(), "{}", text(&o));
    wait_for("re-session after forget", &[&a, &b], || {
        a.sessions() == Some(1)
            && std::fs::read_to_string(a.state.join("known_peers.toml"))
                .unwrap()
                .contains(&key_b)
    });

    // trust with a different key needs --replace (exit 2 and why, before).
    let wrong = "11".repeat(32);
    let o = cli(&a.state, &["trust", "beta", &wrong]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("--replace"), "{}", text(&o));
    // With --replace: beta's announces are refused, its session goes, and
    // `peers` says why (key changed) instead of only "no session".
    let o = cli(&a.state, &["trust", "beta", &wrong, "--replace"]);
    assert!(o.status.success(), "{}", text(&o));
    wait_for("beta refused under the wrong pin", &[&a, &b], || {
        a.sessions() == Some(0)
            && std::fs::read_to_string(&a.log)
                .unwrap()
                .contains("announce refused (key conflict) peer=beta")
    });
    let t = text(&cli(&a.state, &["peers"]));
    let row = t.lines().find(|l| l.starts_with("beta")).expect("beta row");
    assert!(row.contains("key changed"), "{t}");
    // trust the right key (again --replace): back to a session.
    let o = cli(&a.state, &["trust", "beta", &key_b, "--replace"]);
    assert!(o.status.success(), "{}", text(&o));
    wait_for("session under the right pin", &[&a, &b], || {
        a.sessions() == Some(1)
    });
    assert_eq!(
        cli(&a.state, &["trust", "beta", "zz"]).status.code(),
        Some(2)
    );
}

#[test]
fn require_known_refuses_until_trusted() {
    let dir = tempfile::tempdir().unwrap();
    let (pd, pg) = (Ports::new(), Ports::new());
    // "delta" < "gamma": delta dials; strict gamma does not know it.
    let d = spawn(dir.path(), "delta", pd, &[pg.udp], &[], None);
    let g = spawn(
        dir.path(),
        "gamma",
        pg,
        &[pd.udp],
        &["--require-known"],
        None,
    );
    wait_for("gamma ignoring the unknown delta", &[&d, &g], || {
        std::fs::read_to_string(&g.log)
            .unwrap()
            .contains("announce ignored (unknown device; --require-known) peer=delta")
    });
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(g.sessions(), Some(0));
    let key_d = text(&cli(&d.state, &["id"]))
        .lines()
        .find_map(|l| l.strip_prefix("key "))
        .unwrap()
        .to_string();
    let o = cli(&g.state, &["trust", "delta", &key_d]);
    assert!(o.status.success(), "{}", text(&o));
    wait_for("a session once delta is trusted", &[&d, &g], || {
        g.sessions() == Some(1) && d.sessions() == Some(1)
    });
}

#[test]
fn completions_and_manual_are_generated() {
    let dir = tempfile::tempdir().unwrap();
    for (args, want) in [
        (&["completions", "bash"][..], "_dsoftbus()"),
        (&["completions", "zsh"], "#compdef dsoftbus"),
        (&["completions", "fish"], "complete -c dsoftbus"),
        (&["man"], ".TH dsoftbus 1"),
    ] {
        let o = cli(dir.path(), args);
        assert!(o.status.success(), "{args:?}: {}", text(&o));
        assert!(text(&o).contains(want), "{args:?}: {}", text(&o));
    }
}

#[test]
fn exit_codes_without_daemon_busy_socket_and_bad_config() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("s");
    // No daemon: 4.
    assert_eq!(cli(&state, &["peers"]).status.code(), Some(4));
    // trust/forget without a daemon edit the file.
    let key = "22".repeat(32);
    assert!(cli(&state, &["trust", "x", &key]).status.success());
    assert!(std::fs::read_to_string(state.join("known_peers.toml"))
        .unwrap()
        .contains(&key));
    assert!(cli(&state, &["forget", "x"]).status.success());
    assert_eq!(cli(&state, &["forget", "x"]).status.code(), Some(5));
    // Bad config file: 3.
    let cfg = dir.path().join("bad.toml");
    std::fs::write(&cfg, "prot = 1\n").unwrap();
    let o = Command::new(BIN)
        .args(["--config", cfg.to_str().unwrap(), "peers"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    assert!(text(&o).contains("unknown field"), "{}", text(&o));
    // A second daemon on the same state dir (same control socket): 8.
    let p = Ports::new();
    let q = Ports::new();
    let n = spawn(dir.path(), "one", p, &[q.udp], &[], None);
    wait_for("the first daemon", &[&n], || n.sessions() == Some(0));
    let o = Command::new(BIN)
        .arg("--state-dir")
        .arg(&n.state)
        .args([
            "daemon",
            "--listen",
            "127.0.0.1",
            "--port",
            &q.tcp.to_string(),
        ])
        .args(["--discovery", "unicast", "--announce-to", "127.0.0.1:9"])
        .args(["--discovery-port", &q.udp.to_string()])
        .env("XDG_CONFIG_HOME", "/nonexistent")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(8), "{}", text(&o));
    assert!(
        text(&o).contains("another daemon is running"),
        "{}",
        text(&o)
    );
    // The control socket is owner-only.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(n.state.join("control.sock"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
}
