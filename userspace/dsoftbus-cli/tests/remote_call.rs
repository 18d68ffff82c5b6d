//! `dsoftbus call` / `dsoftbus serve` end to end on loopback: two daemons,
//! a Unix-socket service on each, calls in both directions, allowed and
//! denied by each daemon's remote ACL, and the audit lines in the logs.

mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{cli, free_port, text, wait_for, Node, Ports, BIN};

/// A `dsoftbus serve` process, killed when dropped.
struct Proc {
    child: Child,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A daemon announcing to one peer, with a remote ACL.
fn spawn(dir: &Path, id: &str, me: (u16, u16), peer_udp: u16, acl: &str) -> Node {
    let me = Ports {
        tcp: me.0,
        udp: me.1,
    };
    common::spawn(dir, id, me, &[peer_udp], &["--remote-acl", acl], None)
}

/// A local service: reads the request to EOF, answers `prefix ‖ request`.
fn service(path: &Path, prefix: &'static str) {
    let l = UnixListener::bind(path).unwrap();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            let mut req = Vec::new();
            let _ = s.read_to_end(&mut req);
            let _ = s.write_all(prefix.as_bytes());
            let _ = s.write_all(&req);
        }
    });
}

fn serve(n: &Node, name: &str, path: &Path) -> Proc {
    let child = Command::new(BIN)
        .arg("--state-dir")
        .arg(&n.state)
        .args(["serve", name, "--unix"])
        .arg(path)
        .env("XDG_CONFIG_HOME", "/nonexistent")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    Proc { child }
}

#[test]
fn remote_call_both_ways_allowed_and_denied() {
    let dir = tempfile::tempdir().unwrap();
    let (pa, pb) = ((free_port(), free_port()), (free_port(), free_port()));
    // alpha lets beta call `time`, `slow` and `gone` (never served); beta
    // lets alpha call `echo` only.
    let a = spawn(
        dir.path(),
        "alpha",
        pa,
        pb.1,
        "beta:time beta:gone,beta:slow",
    );
    let b = spawn(dir.path(), "beta", pb, pa.1, "alpha:echo");
    let (echo_sock, time_sock, log_sock) = (
        dir.path().join("echo.sock"),
        dir.path().join("time.sock"),
        dir.path().join("log.sock"),
    );
    service(&echo_sock, "echo:");
    service(&time_sock, "12:00 ");
    service(&log_sock, "log:");
    // A service that never answers.
    let slow_sock = dir.path().join("slow.sock");
    let slow = UnixListener::bind(&slow_sock).unwrap();
    std::thread::spawn(move || {
        let held: Vec<_> = slow.incoming().take(4).collect();
        std::thread::sleep(Duration::from_secs(30));
        drop(held);
    });
    wait_for("a session on both sides", &[&a, &b], || {
        a.sessions() == Some(1) && b.sessions() == Some(1)
    });
    let _s1 = serve(&b, "echo", &echo_sock);
    let _s2 = serve(&b, "log", &log_sock);
    let _s3 = serve(&a, "time", &time_sock);
    let _s4 = serve(&a, "slow", &slow_sock);
    wait_for("services registered", &[&a, &b], || {
        b.log_text().matches("serving ").count() >= 2
            && a.log_text().matches("serving ").count() >= 2
    });

    // alpha → beta: echo allowed, log denied (served, but not in beta's ACL).
    let o = cli(&a.state, &["call", "beta", "echo", "hello"]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(String::from_utf8_lossy(&o.stdout), "echo:hello");
    let o = cli(&a.state, &["call", "beta", "echo", "hi", "--json"]);
    assert!(o.status.success(), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["answer"], "echo:hi", "{v}");
    assert_eq!(v["answer_hex"], hex::encode("echo:hi"), "{v}");
    assert_eq!(
        (v["bytes"].as_u64(), v["service"].as_str()),
        (Some(7), Some("echo"))
    );
    let o = cli(&a.state, &["call", "beta", "log", "x"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("denied"), "{}", text(&o));

    // beta → alpha: time allowed, echo denied (alpha's ACL lists only time).
    let o = cli(&b.state, &["call", "alpha", "time", "?"]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(String::from_utf8_lossy(&o.stdout), "12:00 ?");
    let o = cli(&b.state, &["call", "alpha", "echo"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("denied"), "{}", text(&o));

    // Not in the ACL and not served: denied (the ACL comes first). Allowed
    // but not served: unknown-service. No session: exit 5.
    let o = cli(&b.state, &["call", "alpha", "nope"]);
    assert!(text(&o).contains("denied"), "{}", text(&o));
    let o = cli(&b.state, &["call", "alpha", "gone"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("unknown-service"), "{}", text(&o));
    assert_eq!(
        cli(&a.state, &["call", "nobody", "echo"]).status.code(),
        Some(5)
    );
    // A service that does not answer: the deadline, exit 6, within bounds.
    let t0 = Instant::now();
    let o = cli(&b.state, &["call", "alpha", "slow", "-W", "0.5"]);
    assert_eq!(o.status.code(), Some(6), "{}", text(&o));
    assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());

    // One audit line per call, on the receiving daemon.
    wait_for("audit lines", &[&a, &b], || {
        let (la, lb) = (a.log_text(), b.log_text());
        lb.contains("remote call peer=alpha service=echo allowed")
            && lb.contains("remote call peer=alpha service=log denied (acl)")
            && la.contains("remote call peer=beta service=time allowed")
            && la.contains("remote call peer=beta service=echo denied (acl)")
            && la.contains("remote call peer=beta service=nope denied (acl)")
            && la.contains("remote call peer=beta service=gone allowed")
            && la.contains("remote call peer=beta service=slow allowed")
    });
    assert_eq!(b.log_text().matches("remote call peer=").count(), 3);
    assert_eq!(a.log_text().matches("remote call peer=").count(), 5);

    // A second `serve` of the same name is refused; the first stays.
    let o = cli(
        &b.state,
        &["serve", "echo", "--unix", echo_sock.to_str().unwrap()],
    );
    assert_eq!(o.status.code(), Some(8), "{}", text(&o));
    let o = cli(&a.state, &["call", "beta", "echo", "again"]);
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        "echo:again",
        "{}",
        text(&o)
    );
}

#[test]
fn remote_acl_config_errors_refuse_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let o = Command::new(BIN)
        .arg("--state-dir")
        .arg(dir.path().join("s"))
        .args(["daemon", "--device-id", "x", "--remote-acl", "*:*"])
        .env("XDG_CONFIG_HOME", dir.path())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    assert!(text(&o).contains("remote ACL"), "{}", text(&o));
}
