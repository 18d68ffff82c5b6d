//! `dsoftbus call` / `dsoftbus serve` end to end on loopback: two daemons,
//! a Unix-socket service on each, calls in both directions, allowed and
//! denied by each daemon's remote ACL, and the audit lines in the logs.

use std::io::{Read, Write};
use std::net::{TcpListener, UdpSocket};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_dsoftbus");

fn free_port() -> u16 {
    loop {
        let t = TcpListener::bind("127.0.0.1:0").unwrap();
        let p = t.local_addr().unwrap().port();
        if UdpSocket::bind(("0.0.0.0", p)).is_ok() {
            return p;
        }
    }
}

struct Proc {
    child: Child,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Node {
    _proc: Proc,
    state: PathBuf,
    log: PathBuf,
}

fn spawn(dir: &Path, id: &str, me: (u16, u16), peer_udp: u16, acl: &str) -> Node {
    let state = dir.join(id);
    let log = dir.join(format!("{id}.log"));
    let mut cmd = Command::new(BIN);
    cmd.arg("--state-dir")
        .arg(&state)
        .args(["daemon", "--device-id", id, "--listen", "127.0.0.1"])
        .args(["--port", &me.0.to_string()])
        .args(["--discovery", "unicast"])
        .args(["--discovery-port", &me.1.to_string()])
        .args(["--announce-to", &format!("127.0.0.1:{peer_udp}")])
        .args(["--announce-interval-ms", "300"])
        .args(["--remote-acl", acl])
        .env_remove("DSOFTBUS_CONFIG")
        .env("XDG_CONFIG_HOME", dir.join("no-config"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap());
    Node {
        _proc: Proc {
            child: cmd.spawn().unwrap(),
        },
        state,
        log,
    }
}

fn cli(state: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .arg("--state-dir")
        .arg(state)
        .args(args)
        .env("XDG_CONFIG_HOME", "/nonexistent")
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn log_of(n: &Node) -> String {
    std::fs::read_to_string(&n.log).unwrap_or_default()
}

fn wait_for(what: &str, nodes: &[&Node], mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(20) {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let logs: Vec<String> = nodes.iter().map(|n| log_of(n)).collect();
    panic!("timed out waiting for {what}\n{}", logs.join("\n----\n"));
}

fn sessions(n: &Node) -> Option<usize> {
    text(&cli(&n.state, &["status"]))
        .lines()
        .find_map(|l| l.strip_prefix("sessions="))
        .and_then(|v| v.parse().ok())
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
        sessions(&a) == Some(1) && sessions(&b) == Some(1)
    });
    let _s1 = serve(&b, "echo", &echo_sock);
    let _s2 = serve(&b, "log", &log_sock);
    let _s3 = serve(&a, "time", &time_sock);
    let _s4 = serve(&a, "slow", &slow_sock);
    wait_for("services registered", &[&a, &b], || {
        log_of(&b).matches("serving ").count() >= 2 && log_of(&a).matches("serving ").count() >= 2
    });

    // alpha → beta: echo allowed, log denied (served, but not in beta's ACL).
    let o = cli(&a.state, &["call", "beta", "echo", "hello"]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(String::from_utf8_lossy(&o.stdout), "echo:hello");
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
        let (la, lb) = (log_of(&a), log_of(&b));
        lb.contains("remote call peer=alpha service=echo allowed")
            && lb.contains("remote call peer=alpha service=log denied (acl)")
            && la.contains("remote call peer=beta service=time allowed")
            && la.contains("remote call peer=beta service=echo denied (acl)")
            && la.contains("remote call peer=beta service=nope denied (acl)")
            && la.contains("remote call peer=beta service=gone allowed")
            && la.contains("remote call peer=beta service=slow allowed")
    });
    assert_eq!(log_of(&b).matches("remote call peer=").count(), 2);
    assert_eq!(log_of(&a).matches("remote call peer=").count(), 5);

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
