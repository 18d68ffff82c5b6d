//! Helpers for the hostile-peer tests: real `dsoftbus` daemons on 127.0.0.1
//! and a scripted peer that speaks the wire protocol through the `dsoftbus`
//! core crate's public API (announce, Noise XK, sessions) and the file
//! transfer protocol of docs/protocol/wire.md §12 through the core's
//! vector-checked codec (`dsoftbus::transfer::wire`), independently of the
//! daemon's engine. The scripted peer announces no `streams/1`, so the
//! daemon carries transfers on session data messages with it.
#![allow(dead_code)]

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use dsoftbus::transport::tcp::HostClock;
use dsoftbus::{
    Announce, Connection, DeviceId, Event, HandshakeConfig, IdentityBindings, LocalIdentity,
    PeerTarget, PublicKey, StaticKeypair,
};
use rand_core::{OsRng, TryRngCore};

pub const BIN: &str = env!("CARGO_BIN_EXE_dsoftbus");

/// A port free for TCP and UDP right now, below the kernel's ephemeral range
/// (32768–60999 by default) so that sockets bound to port 0 — the hostile
/// tests' flood sources, clients — never take it before its daemon binds it,
/// and never the same twice in one test process (tests run in parallel).
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64);
    let mut x = (u64::from(std::process::id()) << 32) ^ now | 1;
    let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        // xorshift over 20000..32000
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let p = 20_000 + (x % 12_000) as u16;
        if given.contains(&p) {
            continue;
        }
        let tcp = TcpListener::bind(("127.0.0.1", p)).is_ok();
        if tcp && UdpSocket::bind(("0.0.0.0", p)).is_ok() {
            given.push(p);
            return p;
        }
    }
}

#[derive(Clone, Copy)]
pub struct Ports {
    pub tcp: u16,
    pub udp: u16,
}

impl Ports {
    pub fn new() -> Ports {
        Ports {
            tcp: free_port(),
            udp: free_port(),
        }
    }
}

pub struct Node {
    pub child: Child,
    pub id: String,
    pub state: PathBuf,
    pub log: PathBuf,
    pub ports: Ports,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Node {
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// A `status` value (`sessions`, `counter.outbound_overflow`, ...).
    pub fn status(&self, key: &str) -> Option<String> {
        let o = cli(&self.state, &["status"]);
        let prefix = format!("{key}=");
        text(&o)
            .lines()
            .find_map(|l| l.strip_prefix(&prefix).map(str::to_string))
    }

    pub fn sessions(&self) -> Option<usize> {
        self.status("sessions").and_then(|v| v.parse().ok())
    }

    pub fn key(&self) -> PublicKey {
        let t = text(&cli(&self.state, &["id"]));
        let hex_key = t
            .lines()
            .find_map(|l| l.strip_prefix("key "))
            .unwrap_or_else(|| panic!("no key in {t}"));
        let mut b = [0u8; 32];
        hex::decode_to_slice(hex_key.trim(), &mut b).unwrap();
        PublicKey::from_bytes(b)
    }

    /// Resident set size of the daemon process, in KiB.
    pub fn rss_kib(&self) -> u64 {
        let s = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        s.lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap()
    }

    pub fn wait_up(&self) {
        wait_for("the daemon's control socket", &[self], || {
            self.sessions().is_some()
        });
    }
}

/// Starts a daemon. `config` is written to a config file it reads.
pub fn spawn(
    dir: &Path,
    id: &str,
    me: Ports,
    announce_to: &[u16],
    extra: &[&str],
    config: Option<&str>,
) -> Node {
    let state = dir.join(id);
    let log = dir.join(format!("{id}.log"));
    spawn_with(dir, id, &state, &log, me, announce_to, extra, config, &[])
}

/// A receiving daemon `rx` on fresh ports with its inbox at `<dir>/inbox`
/// (returned) and `extra` arguments (`--accept any`, ...).
pub fn spawn_receiver(dir: &Path, extra: &[&str], config: Option<&str>) -> (Node, PathBuf) {
    let inbox = dir.join("inbox");
    let mut args = vec!["--inbox", inbox.to_str().unwrap()];
    args.extend_from_slice(extra);
    let rx = spawn(dir, "rx", Ports::new(), &[], &args, config);
    (rx, inbox)
}

/// Two daemons that announce to each other, `alpha` (dials, since it sorts
/// first) and `beta` with its inbox at `<dir>/inbox` (returned) and
/// `beta_extra` arguments; returns once both hold the session.
pub fn pair(dir: &Path, beta_extra: &[&str]) -> (Node, Node, PathBuf) {
    let inbox = dir.join("inbox");
    let (pa, pb) = (Ports::new(), Ports::new());
    let mut args = vec!["--inbox", inbox.to_str().unwrap()];
    args.extend_from_slice(beta_extra);
    let a = spawn(dir, "alpha", pa, &[pb.udp], &[], None);
    let b = spawn(dir, "beta", pb, &[pa.udp], &args, None);
    a.wait_up();
    b.wait_up();
    wait_for("a session on both sides", &[&a, &b], || {
        a.sessions() == Some(1) && b.sessions() == Some(1)
    });
    (a, b, inbox)
}

#[allow(clippy::too_many_arguments)]
pub fn spawn_with(
    dir: &Path,
    id: &str,
    state: &Path,
    log: &Path,
    me: Ports,
    announce_to: &[u16],
    extra: &[&str],
    config: Option<&str>,
    env: &[(&str, &str)],
) -> Node {
    let mut targets: Vec<String> = announce_to
        .iter()
        .map(|p| format!("127.0.0.1:{p}"))
        .collect();
    if targets.is_empty() {
        targets.push("127.0.0.1:9".into());
    }
    let mut cmd = Command::new(BIN);
    cmd.arg("--state-dir").arg(state);
    if let Some(c) = config {
        let path = dir.join(format!("{id}.toml"));
        std::fs::write(&path, c).unwrap();
        cmd.arg("--config").arg(path);
    }
    cmd.args(["daemon", "--device-id", id, "--listen", "127.0.0.1"])
        .args(["--port", &me.tcp.to_string()])
        .args(["--discovery", "unicast"])
        .args(["--discovery-port", &me.udp.to_string()])
        .args(["--announce-to", &targets.join(",")])
        .args(["--announce-interval-ms", "300"])
        .args(extra)
        .env_remove("DSOFTBUS_CONFIG")
        .env_remove("DSOFTBUS_REQUIRE_KNOWN")
        .env_remove("RUST_LOG")
        .env_remove("DSOFTBUS_LOG")
        .env("XDG_CONFIG_HOME", dir.join("no-config"))
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(log)
                .unwrap(),
        );
    Node {
        child: cmd.spawn().unwrap(),
        id: id.to_string(),
        state: state.to_path_buf(),
        log: log.to_path_buf(),
        ports: me,
    }
}

pub fn cli(state: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .arg("--state-dir")
        .arg(state)
        .args(args)
        .env("XDG_CONFIG_HOME", "/nonexistent")
        .env_remove("DSOFTBUS_CONFIG")
        .output()
        .unwrap()
}

pub fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

pub fn wait_for(what: &str, nodes: &[&Node], mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(20) {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let logs: Vec<String> = nodes.iter().map(|n| n.log_text()).collect();
    panic!("timed out waiting for {what}\n{}", logs.join("\n----\n"));
}

pub fn files_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

// ---- file transfer (docs/protocol/wire.md §12, on session data messages) ----
// The test side encodes with `dsoftbus::transfer::wire` (checked against
// the vectors of wire.md §8.9), independently of the daemon's engine.

use dsoftbus::transfer::wire::{Entry, EntryKind, Message, Reason, Version};
#[allow(unused_imports)]
pub use dsoftbus::transfer::wire::{
    KIND_ABORT, KIND_ACCEPT, KIND_ACK, KIND_CANCEL, KIND_DATA, KIND_DENY, KIND_DONE, KIND_END,
    KIND_OFFER,
};

/// An offer of one file `name` holding `data`.
pub fn offer(id: u32, data: &[u8], name: &str) -> Vec<u8> {
    offer_entries(id, vec![file(name, data)])
}

/// An offer of one file of `size` bytes (content never sent).
pub fn offer_size(id: u32, size: u64, name: &str) -> Vec<u8> {
    offer_entries(
        id,
        vec![Entry {
            path: name.into(),
            kind: EntryKind::File {
                size,
                digest: [0; 32],
            },
        }],
    )
}

/// A file entry with its SHA-256: the scripted peers speak transfer v1
/// (every message they build is v1).
pub fn file(name: &str, data: &[u8]) -> Entry {
    use sha2::{Digest, Sha256};
    Entry {
        path: name.into(),
        kind: EntryKind::File {
            size: data.len() as u64,
            digest: Sha256::digest(data).into(),
        },
    }
}

pub fn offer_entries(id: u32, entries: Vec<Entry>) -> Vec<u8> {
    Message::Offer { id, entries }.encode(Version::V1)
}

/// An accept with a 4 MiB window and no resumed bytes.
pub fn accept(id: u32, entries: usize) -> Vec<u8> {
    Message::Accept {
        id,
        window: 4 << 20,
        max_chunk: dsoftbus::transfer::wire::MAX_CHUNK as u32,
        offsets: vec![0; entries],
    }
    .encode(Version::V1)
}

pub fn data(id: u32, entry: u16, offset: u64, bytes: &[u8]) -> Vec<u8> {
    dsoftbus::transfer::wire::encode_data(Version::V1, id, entry, offset, bytes)
}

pub fn end(id: u32) -> Vec<u8> {
    Message::End { id }.encode(Version::V1)
}

pub fn ack(id: u32, received: u64) -> Vec<u8> {
    Message::Ack { id, received }.encode(Version::V1)
}

/// A received transfer message: kind, version, id, the whole message.
#[derive(Debug, Clone)]
pub struct App {
    pub kind: u8,
    pub version: Version,
    pub id: u32,
    pub msg: Vec<u8>,
}

impl App {
    /// The reason of a DENY, ABORT or CANCEL.
    pub fn reason(&self) -> Option<Reason> {
        match dsoftbus::transfer::wire::decode(&self.msg).ok()? {
            Message::Deny { reason, .. }
            | Message::Abort { reason, .. }
            | Message::Cancel { reason, .. } => Some(reason),
            _ => None,
        }
    }
    /// The offsets of an ACCEPT.
    pub fn offsets(&self) -> Option<Vec<u64>> {
        match dsoftbus::transfer::wire::decode(&self.msg).ok()? {
            Message::Accept { offsets, .. } => Some(offsets),
            _ => None,
        }
    }
    /// The bytes of a DATA.
    pub fn data(&self) -> Option<(u16, u64, Vec<u8>)> {
        match dsoftbus::transfer::wire::decode(&self.msg).ok()? {
            Message::Data {
                entry,
                offset,
                data,
                ..
            } => Some((entry, offset, data.to_vec())),
            _ => None,
        }
    }
    /// The entries of an OFFER.
    pub fn entries(&self) -> Option<Vec<Entry>> {
        match dsoftbus::transfer::wire::decode(&self.msg).ok()? {
            Message::Offer { entries, .. } => Some(entries),
            _ => None,
        }
    }
}

struct NoBindings;
impl IdentityBindings for NoBindings {
    fn bound_key(&self, _: &DeviceId) -> Option<PublicKey> {
        None
    }
}

/// A scripted peer that dials a daemon and runs a real session with it.
pub struct Hostile {
    pub conn: Connection,
    pub stream: TcpStream,
    clock: HostClock,
    apps: VecDeque<App>,
}

impl Hostile {
    /// Announces `id` to the daemon (so it binds our key on first use),
    /// dials its session port and completes the handshake.
    pub fn connect(id: &str, daemon: &Node) -> Hostile {
        Hostile::connect_with(id, daemon, &[])
    }

    /// As [`Hostile::connect`], announcing `services` (e.g. `streams/1`).
    pub fn connect_with(id: &str, daemon: &Node, services: &[&str]) -> Hostile {
        let mut rng = OsRng.unwrap_err();
        let keys = StaticKeypair::generate(&mut rng);
        let local = LocalIdentity::new(DeviceId::new(id).unwrap(), keys.clone());
        let services = services
            .iter()
            .map(|s| dsoftbus::ServiceName::new(s).unwrap())
            .collect();
        let ann = Announce::new(DeviceId::new(id).unwrap(), 9, *keys.public(), services).unwrap();
        let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
        let target = PeerTarget {
            id: DeviceId::new(&daemon.id).unwrap(),
            key: daemon.key(),
        };
        let clock = HostClock::new();
        let start = Instant::now();
        loop {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "no session with {}\n{}",
                daemon.id,
                daemon.log_text()
            );
            udp.send_to(&ann.encode(), ("127.0.0.1", daemon.ports.udp))
                .unwrap();
            std::thread::sleep(Duration::from_millis(100));
            let stream = TcpStream::connect(("127.0.0.1", daemon.ports.tcp)).unwrap();
            stream.set_nodelay(true).unwrap();
            let conn = Connection::connect(
                &local,
                target.clone(),
                &mut rng,
                clock.now(),
                HandshakeConfig::default(),
            )
            .unwrap();
            let mut h = Hostile {
                conn,
                stream,
                clock,
                apps: VecDeque::new(),
            };
            // Established, then a pong: the daemon has registered us.
            let ok = h.pump_until(Duration::from_secs(3), |h, ev| {
                if matches!(ev, Event::Established { .. }) {
                    let _ = h.conn.send_ping(42);
                }
                matches!(ev, Event::Pong(42))
            });
            if ok {
                return h;
            }
        }
    }

    pub fn flush(&mut self) -> std::io::Result<()> {
        let out = self.conn.take_transmit();
        self.stream.write_all(&out)
    }

    /// Stops reading: a 4 KiB receive buffer nobody drains, and writes that
    /// give up after 20 s (for the never-reads tests).
    pub fn stop_reading(&mut self) {
        socket2::SockRef::from(&self.stream)
            .set_recv_buffer_size(4096)
            .unwrap();
        self.stream
            .set_write_timeout(Some(Duration::from_secs(20)))
            .unwrap();
    }

    /// Floods the daemon with `batch(self, sent)` (it queues and writes a
    /// batch, returning how many messages) until a write fails — the daemon
    /// cut us: `true` — or `max` messages or 60 s went by (`false`).
    /// Returns (messages sent, cut, seconds).
    pub fn flood_until_cut(
        &mut self,
        max: u64,
        mut batch: impl FnMut(&mut Hostile, u64) -> std::io::Result<u64>,
    ) -> (u64, bool, f64) {
        let t0 = Instant::now();
        let mut sent = 0u64;
        let cut = loop {
            match batch(self, sent) {
                Ok(n) => sent += n,
                Err(_) => break true,
            }
            if sent >= max || t0.elapsed() > Duration::from_secs(60) {
                break false;
            }
        };
        (sent, cut, t0.elapsed().as_secs_f64())
    }

    /// Queues application messages and writes them in one go (one TCP write,
    /// so they arrive together).
    pub fn send_all(&mut self, msgs: &[Vec<u8>]) -> std::io::Result<()> {
        for m in msgs {
            if self.conn.send_data(m).is_err() {
                self.flush()?;
                self.conn.send_data(m).unwrap();
            }
        }
        self.flush()
    }

    /// Reads until `stop` says so (true) or the timeout passes (false).
    pub fn pump_until(
        &mut self,
        timeout: Duration,
        mut stop: impl FnMut(&mut Self, &Event) -> bool,
    ) -> bool {
        let deadline = Instant::now() + timeout;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            if self.flush().is_err() {
                return false;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            self.stream
                .set_read_timeout(Some(left.min(Duration::from_millis(200))))
                .unwrap();
            let n = match self.stream.read(&mut buf) {
                Ok(0) => return false,
                Ok(n) => n,
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    continue
                }
                Err(_) => return false,
            };
            let now = self.clock.now();
            if self.conn.handle_input(&buf[..n], now, &NoBindings).is_err() {
                return false;
            }
            // Drain every event (none may wait for the next input).
            let mut done = false;
            while let Some(ev) = self.conn.poll_event() {
                if let Event::Data(d) = &ev {
                    if let Ok(h) = dsoftbus::transfer::wire::header(d) {
                        self.apps.push_back(App {
                            kind: h.kind,
                            version: h.version,
                            id: h.id,
                            msg: d.clone(),
                        });
                    }
                }
                done |= stop(self, &ev);
            }
            if done {
                let _ = self.flush();
                return true;
            }
        }
    }

    /// The next application message from the daemon (ACKs skipped unless
    /// `acks`), within `timeout`.
    pub fn recv(&mut self, timeout: Duration, acks: bool) -> Option<App> {
        let deadline = Instant::now() + timeout;
        loop {
            while let Some(a) = self.apps.pop_front() {
                if acks || a.kind != KIND_ACK {
                    return Some(a);
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            if !self.pump_until(left, |_, ev| matches!(ev, Event::Data(_))) && self.apps.is_empty()
            {
                return None;
            }
        }
    }

    /// Waits for a message of `kind` for `id`, skipping ACKs.
    pub fn expect(&mut self, kind: u8, id: u32, timeout: Duration) -> App {
        let deadline = Instant::now() + timeout;
        let mut seen = Vec::new();
        while let Some(a) = self.recv(deadline.saturating_duration_since(Instant::now()), false) {
            if a.kind == kind && a.id == id {
                // Keep the others for later calls, in order.
                for s in seen.into_iter().rev() {
                    self.apps.push_front(s);
                }
                return a;
            }
            seen.push(a);
        }
        panic!("no message {kind:#04x} for {id:08x}; saw {seen:?}");
    }
}
