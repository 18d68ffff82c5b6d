//! The client commands: they talk to the daemon over its control socket
//! (blocking std I/O; no async runtime needed).

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

use crate::config::{absolute, FileConfig, Paths};
use crate::control::{Client, PeerInfo, Request, Response};
use crate::exit::{Failure, WithCode, CONFIG, FAILURE, NO_DAEMON, NO_PEER, TIMEOUT, USAGE};
use crate::identity::{self, fingerprint, KnownPeers};

const CALL_TIMEOUT: Duration = Duration::from_secs(10);

fn fail_from(code: u8, message: String) -> Failure {
    Failure::new(code, message)
}

fn expect_ok(r: Response) -> Result<Response, Failure> {
    match r {
        Response::Error { code, message } => Err(fail_from(code, message)),
        r => Ok(r),
    }
}

fn ago(ms: Option<u64>) -> String {
    match ms {
        None => "-".into(),
        Some(ms) if ms < 10_000 => format!("{:.1}s ago", ms as f64 / 1000.0),
        Some(ms) if ms < 3_600_000 => format!("{}s ago", ms / 1000),
        Some(ms) => format!("{}h ago", ms / 3_600_000),
    }
}

fn yes(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

/// Renders the peers table.
pub fn render_peers(peers: &[PeerInfo]) -> String {
    let rows: Vec<[String; 7]> = peers
        .iter()
        .map(|p| {
            [
                p.device.clone(),
                p.addr.clone().unwrap_or_else(|| "-".into()),
                p.fingerprint.clone(),
                p.pin.clone().unwrap_or_else(|| yes(p.pinned).into()),
                yes(p.session).into(),
                ago(p.last_seen_ms),
                p.state.clone(),
            ]
        })
        .collect();
    let head = [
        "DEVICE",
        "ADDRESS",
        "KEY",
        "PINNED",
        "SESSION",
        "LAST SEEN",
        "STATE",
    ];
    let mut w: Vec<usize> = head.iter().map(|h| h.len()).collect();
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            w[i] = w[i].max(c.chars().count());
        }
    }
    let line = |cells: &[String]| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                s.push_str(c);
                s.push_str(&" ".repeat(w[i] - c.chars().count() + 2));
            }
        }
        s.push('\n');
        s
    };
    let mut out = line(&head.map(String::from));
    for r in &rows {
        out.push_str(&line(r));
    }
    out
}

pub fn peers(paths: &Paths, json: bool) -> Result<(), Failure> {
    let mut c = Client::connect(&paths.control_socket)?;
    let Response::Peers { peers } = expect_ok(c.call(&Request::Peers, CALL_TIMEOUT)?)? else {
        return Err(Failure::new(FAILURE, "unexpected reply"));
    };
    if json {
        println!("{}", serde_json::json!({ "peers": peers }));
    } else if peers.is_empty() {
        println!("no peers yet");
    } else {
        print!("{}", render_peers(&peers));
    }
    Ok(())
}

pub fn status(paths: &Paths, json: bool) -> Result<(), Failure> {
    let mut c = Client::connect(&paths.control_socket)?;
    let Response::Status(s) = expect_ok(c.call(&Request::Status, CALL_TIMEOUT)?)? else {
        return Err(Failure::new(FAILURE, "unexpected reply"));
    };
    if json {
        println!("{}", serde_json::json!({ "status": s }));
        return Ok(());
    }
    println!("device={}", s.device);
    println!("key={}", s.key);
    println!("fingerprint={}", s.fingerprint);
    println!("port={}", s.port);
    println!("discovery={} port={}", s.discovery, s.discovery_port);
    for i in &s.interfaces {
        println!(
            "interface={} addr={} delivery={}",
            i.name, i.addr, i.delivery
        );
    }
    println!("peers={}", s.peers);
    println!("sessions={}", s.sessions);
    println!("known={}", s.known);
    println!("require_known={}", s.require_known);
    println!("trust_mode={}", s.trust_mode);
    println!("inbox={}", s.inbox.as_deref().unwrap_or("none"));
    println!("accept={}", s.accept);
    println!("uptime_s={}", s.uptime_s);
    for (k, v) in &s.counters {
        println!("counter.{k}={v}");
    }
    Ok(())
}

pub fn ping(
    paths: &Paths,
    device: &str,
    count: u32,
    interval: f64,
    timeout: f64,
    json: bool,
) -> Result<(), Failure> {
    if !(interval.is_finite() && interval >= 0.0 && timeout.is_finite() && timeout > 0.0) {
        return Err(Failure::new(
            USAGE,
            "interval and timeout must be positive numbers",
        ));
    }
    let timeout_ms = (timeout * 1000.0) as u64;
    let mut rtts = Vec::new();
    for seq in 1..=count {
        // A fresh connection per ping: an interval longer than the daemon's
        // control idle timeout must not cost the next ping.
        let mut c = Client::connect(&paths.control_socket)?;
        let r = c.call(
            &Request::Ping {
                device: device.to_string(),
                timeout_ms,
            },
            Duration::from_millis(timeout_ms) + CALL_TIMEOUT,
        )?;
        match r {
            Response::Pong { rtt_us, .. } => {
                if !json {
                    println!(
                        "pong from {device}: seq={seq} time={:.3} ms",
                        rtt_us as f64 / 1000.0
                    );
                }
                rtts.push(rtt_us as f64 / 1000.0);
            }
            Response::Error {
                code: TIMEOUT,
                message,
            } => {
                if !json {
                    println!("seq={seq}: {message}");
                }
            }
            Response::Error { code, message } => return Err(fail_from(code, message)),
            _ => return Err(Failure::new(FAILURE, "unexpected reply")),
        }
        if seq < count {
            std::thread::sleep(Duration::from_secs_f64(interval));
        }
    }
    let n = count;
    if json {
        println!(
            "{}",
            serde_json::json!({
                "device": device,
                "sent": n,
                "received": rtts.len(),
                "rtt_ms": rtts,
            })
        );
        if rtts.is_empty() {
            return Err(Failure::new(TIMEOUT, format!("no pong from {device}")));
        }
        return Ok(());
    }
    print!("--- {device}: {n} sent, {} received", rtts.len());
    if rtts.is_empty() {
        println!();
        return Err(Failure::new(TIMEOUT, format!("no pong from {device}")));
    }
    let min = rtts.iter().cloned().fold(f64::INFINITY, f64::min);
    let max = rtts.iter().cloned().fold(0.0, f64::max);
    let avg = rtts.iter().sum::<f64>() / rtts.len() as f64;
    println!(", rtt min/avg/max = {min:.3}/{avg:.3}/{max:.3} ms");
    Ok(())
}

pub fn send(
    paths: &Paths,
    device: &str,
    files: &[PathBuf],
    no_progress: bool,
    json: bool,
) -> Result<(), Failure> {
    let mut abs = Vec::with_capacity(files.len());
    for f in files {
        let path = absolute(f).code(FAILURE)?;
        if let Err(e) = std::fs::metadata(&path) {
            return Err(Failure::new(
                FAILURE,
                format!("cannot send {}: {e}", f.display()),
            ));
        }
        abs.push(path);
    }
    let mut c = Client::connect(&paths.control_socket)?;
    c.send(&Request::Send {
        device: device.to_string(),
        paths: abs,
    })?;
    let show = !no_progress && !json && std::io::stderr().is_terminal();
    let mut bar: Option<ProgressBar> = None;
    let what = match files {
        [one] => one.display().to_string(),
        many => format!("{} paths", many.len()),
    };
    let mut accepted = false;
    let mut told = false;
    loop {
        // The daemon reports progress at least once a minute, or fails
        // itself; an offer may wait for the receiver's user (15 min). On a
        // terminal, say so when the answer takes a moment.
        if show && !accepted && !told && !c.readable(Duration::from_secs(2))? {
            told = true;
            eprintln!(
                "dsoftbus: waiting for {device} to accept (on {device}: `dsoftbus transfers`, then `dsoftbus accept <id>`)"
            );
        }
        let r = c.recv(Some(Duration::from_secs(20 * 60)))?;
        if matches!(r, Response::Accepted { .. }) {
            accepted = true;
        }
        match r {
            Response::Warning { message } => eprintln!("dsoftbus: warning: {message}"),
            Response::Accepted { total, .. } => {
                if show {
                    let b = ProgressBar::new(total);
                    if let Ok(style) = ProgressStyle::with_template(
                        "{spinner} {bytes}/{total_bytes} [{wide_bar}] {bytes_per_sec} eta {eta}",
                    ) {
                        b.set_style(style.progress_chars("=> "));
                    }
                    bar = Some(b);
                }
            }
            Response::Progress { acked, .. } => {
                if let Some(b) = &bar {
                    b.set_position(acked);
                }
            }
            Response::Sent {
                bytes,
                secs,
                sha256,
                hash,
                digest,
                files: n,
                sent,
                resumed,
                ..
            } => {
                if let Some(b) = &bar {
                    b.finish_and_clear();
                }
                if json {
                    let v = serde_json::json!({
                        "device": device,
                        "files": n,
                        "bytes": bytes,
                        "sent_bytes": sent,
                        "resumed_bytes": resumed,
                        "secs": secs,
                        "sha256": sha256,
                        "hash": hash,
                        "digest": digest,
                        "verified": true,
                    });
                    println!("{v}");
                    return Ok(());
                }
                let mbps = if secs > 0.0 {
                    sent as f64 / secs / 1e6
                } else {
                    0.0
                };
                let resumed = if resumed > 0 {
                    format!(" ({resumed} resumed, {sent} sent)")
                } else {
                    String::new()
                };
                let digest = if digest.is_empty() {
                    format!("{n} files")
                } else {
                    format!("{hash} {digest}")
                };
                println!(
                    "sent {what} to {device}: {bytes} bytes{resumed} in {secs:.2} s ({mbps:.1} MB/s); {digest} verified by the receiver"
                );
                return Ok(());
            }
            Response::Error { code, message } => {
                if let Some(b) = &bar {
                    b.abandon();
                }
                return Err(fail_from(code, message));
            }
            _ => return Err(Failure::new(FAILURE, "unexpected reply")),
        }
    }
}

/// `trust`/`forget` go through the daemon when one runs (so it applies at
/// once), else edit the known-peers file directly.
pub fn trust(paths: &Paths, device: &str, key: Option<&str>, replace: bool) -> Result<(), Failure> {
    let k = key
        .map(|key| identity::parse_public_key(key).code(USAGE))
        .transpose()?;
    let id = dsoftbus::DeviceId::new(device)
        .map_err(|e| Failure::new(USAGE, format!("bad device id {device:?}: {e}")))?;
    match Client::connect(&paths.control_socket) {
        Ok(mut c) => {
            let request = Request::Trust {
                device: device.into(),
                key: key.map(|k| k.trim().into()),
                replace,
            };
            call_and_print(&mut c, &request)
        }
        Err(f) if f.code == NO_DAEMON => {
            let Some(k) = k else {
                return Err(Failure::new(
                    USAGE,
                    "no daemon running: give the key (`dsoftbus trust <device> <key-hex>`)",
                ));
            };
            identity::ensure_state_dir(&paths.state_dir)?;
            let mut known = KnownPeers::load(&paths.state_dir)?;
            known
                .trust(&id, k, replace)
                .map_err(|e| identity::trust_failure(&id, &e))?;
            known.save().code(CONFIG)?;
            println!(
                "{id} pinned to key {} (no daemon running; file updated)",
                fingerprint(&k)
            );
            Ok(())
        }
        Err(f) => Err(f),
    }
}

/// Send a request the daemon answers with `Ok { message }`, and print it.
/// `dsoftbus accept <id>` / `dsoftbus deny <id>`.
pub fn answer(paths: &Paths, id: u32, accept: bool) -> Result<(), Failure> {
    let mut c = Client::connect(&paths.control_socket)?;
    let request = if accept {
        Request::Accept { id }
    } else {
        Request::Deny { id }
    };
    call_and_print(&mut c, &request)
}

fn human_bytes(n: u64) -> String {
    const U: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1024.0 && i < U.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", U[i])
    }
}

/// `dsoftbus transfers [--json]`.
pub fn transfers(paths: &Paths, json: bool) -> Result<(), Failure> {
    let mut c = Client::connect(&paths.control_socket)?;
    let r = expect_ok(c.call(&Request::Transfers, CALL_TIMEOUT)?)?;
    let Response::Transfers {
        policy,
        pending,
        active,
        recent,
    } = r
    else {
        return Err(Failure::new(FAILURE, "unexpected reply"));
    };
    if json {
        let v = serde_json::json!({
            "policy": policy,
            "pending": pending,
            "active": active,
            "recent": recent,
        });
        println!("{v}");
        return Ok(());
    }
    println!("accept policy: {policy}");
    if pending.is_empty() {
        println!("pending offers: none");
    } else {
        println!("pending offers (`dsoftbus accept <id>` / `dsoftbus deny <id>`):");
        println!(
            "  {:>4}  {:<20} {:>6} {:>10} {:>6} {:>8}  NAME",
            "ID", "PEER", "FILES", "SIZE", "AGE", "EXPIRES"
        );
        for p in &pending {
            println!(
                "  {:>4}  {:<20} {:>6} {:>10} {:>5}s {:>7}s  {}",
                p.id,
                p.peer,
                p.files,
                human_bytes(p.bytes),
                p.age_s,
                p.expires_in_s,
                p.name
            );
        }
    }
    if active.is_empty() {
        println!("in flight: none");
    } else {
        println!("in flight:");
        for a in &active {
            let pct = if a.total > 0 {
                a.done as f64 * 100.0 / a.total as f64
            } else {
                100.0
            };
            println!(
                "  {:<3} {:<20} {} / {} ({pct:.0}%) {}/s  {}",
                a.direction,
                a.peer,
                human_bytes(a.done),
                human_bytes(a.total),
                human_bytes(a.rate),
                a.name
            );
        }
    }
    if !recent.is_empty() {
        println!("recent (newest last):");
        for r in &recent {
            println!(
                "  {:<3} {:<20} {} {:>10}  {}s ago  {}: {}",
                r.direction,
                r.peer,
                if r.ok { "ok    " } else { "FAILED" },
                human_bytes(r.total),
                r.ago_s,
                r.name,
                r.result
            );
        }
    }
    Ok(())
}

fn call_and_print(c: &mut Client, request: &Request) -> Result<(), Failure> {
    if let Response::Ok { message } = expect_ok(c.call(request, CALL_TIMEOUT)?)? {
        println!("{message}");
    }
    Ok(())
}

pub fn forget(paths: &Paths, devices: &[String], auto: bool) -> Result<(), Failure> {
    if devices.is_empty() && !auto {
        return Err(Failure::new(
            USAGE,
            "name the devices to forget, or --auto for every automatic pin",
        ));
    }
    match Client::connect(&paths.control_socket) {
        Ok(mut c) => {
            let request = Request::Forget {
                device: None,
                devices: devices.to_vec(),
                auto,
            };
            call_and_print(&mut c, &request)
        }
        Err(f) if f.code == NO_DAEMON => {
            let ids = devices
                .iter()
                .map(|d| {
                    dsoftbus::DeviceId::new(d)
                        .map_err(|e| Failure::new(USAGE, format!("bad device id {d:?}: {e}")))
                })
                .collect::<Result<Vec<_>, _>>()?;
            let mut known = KnownPeers::load(&paths.state_dir)?;
            let mut gone = if auto { known.remove_auto() } else { vec![] };
            for id in ids {
                if known.remove(&id).is_some() {
                    gone.push(id);
                } else if !auto && devices.len() == 1 {
                    return Err(Failure::new(NO_PEER, format!("{id} is not pinned")));
                }
            }
            known.save().code(CONFIG)?;
            println!(
                "forgot {} pin(s) (no daemon running; file updated)",
                gone.len()
            );
            Ok(())
        }
        Err(f) => Err(f),
    }
}

fn print_id(device: &str, key: &str, fp: &str, json: bool) {
    if json {
        println!(
            "{}",
            serde_json::json!({ "device": device, "key": key, "fingerprint": fp })
        );
    } else {
        println!("device {device}");
        println!("key {key}");
        println!("fingerprint {fp}");
    }
}

pub fn id(paths: &Paths, file: &FileConfig, json: bool) -> Result<(), Failure> {
    if let Ok(mut c) = Client::connect(&paths.control_socket) {
        if let Ok(Response::Status(s)) = c.call(&Request::Status, CALL_TIMEOUT) {
            print_id(&s.device, &s.key, &s.fingerprint, json);
            return Ok(());
        }
    }
    let (keys, created) = identity::load_or_create_key(&paths.state_dir)?;
    let configured = std::env::var("DSOFTBUS_DEVICE_ID")
        .ok()
        .or_else(|| file.device_id.clone());
    let id = identity::device_id(configured.as_deref(), keys.public())?;
    print_id(
        id.as_str(),
        &hex::encode(keys.public().as_bytes()),
        &fingerprint(keys.public()),
        json,
    );
    if created {
        eprintln!(
            "(created a new static key in {})",
            paths.state_dir.join(identity::KEY_FILE).display()
        );
    }
    Ok(())
}

/// `dsoftbus call`: prints the answer's bytes as they are.
pub fn call(
    paths: &Paths,
    device: &str,
    service: &str,
    payload: Option<&str>,
    timeout: f64,
    json: bool,
) -> Result<(), Failure> {
    if !(timeout.is_finite() && timeout > 0.0) {
        return Err(Failure::new(USAGE, "timeout must be a positive number"));
    }
    let timeout_ms = (timeout * 1000.0) as u64;
    let mut c = Client::connect(&paths.control_socket)?;
    let r = c.call(
        &Request::Call {
            device: device.to_string(),
            service: service.to_string(),
            payload: hex::encode(payload.unwrap_or("")),
            timeout_ms,
        },
        Duration::from_millis(timeout_ms) + CALL_TIMEOUT,
    )?;
    match expect_ok(r)? {
        Response::Reply { payload } => {
            let bytes = hex::decode(&payload)
                .map_err(|e| Failure::new(FAILURE, format!("bad daemon reply: {e}")))?;
            if json {
                let v = serde_json::json!({
                    "device": device,
                    "service": service,
                    "bytes": bytes.len(),
                    "answer": std::str::from_utf8(&bytes).ok(),
                    "answer_hex": payload,
                });
                println!("{v}");
                return Ok(());
            }
            use std::io::Write;
            let mut out = std::io::stdout().lock();
            out.write_all(&bytes)?;
            out.flush()?;
            Ok(())
        }
        _ => Err(Failure::new(FAILURE, "unexpected reply")),
    }
}

/// `dsoftbus serve`: registers the service and holds it until the daemon
/// goes away or this process is stopped.
pub fn serve(paths: &Paths, name: &str, unix: &Path) -> Result<(), Failure> {
    let unix = absolute(unix)?;
    let mut c = Client::connect(&paths.control_socket)?;
    let r = c.call(
        &Request::Serve {
            service: name.to_string(),
            unix: unix.clone(),
        },
        CALL_TIMEOUT,
    )?;
    match expect_ok(r)? {
        Response::Ok { message } => eprintln!("{message} (until stopped)"),
        _ => return Err(Failure::new(FAILURE, "unexpected reply")),
    }
    // The registration lives as long as this connection.
    let _ = c.recv(None);
    Err(Failure::new(FAILURE, "the daemon went away"))
}
