//! The init table: which programs run, what each is granted, how they are
//! wired, and what happens when one ends. This is the only place that names
//! services; the kernel crate depends on none of them (their ELF images are
//! embedded by build.rs and looked up by name here).
//!
//! Restart policy: a program marked `restart` that dies (killed by a fault,
//! or exits with an error) is started again from its image after a backoff
//! of 50 ms × 2^(n-1), at most [`MAX_RESTARTS`] times; past that the run
//! fails loudly. The new process gets fresh channels to its live peers; a
//! peer that is already running receives its new end on its `init` channel
//! (a kernel-owned channel every process has, for grants made after it
//! started); a peer not yet started gets it in its boot info. Every reap
//! checks that the process's address space returned exactly the frames it
//! was charged with.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::sync::atomic::Ordering;

use nexus_abi::bootinfo::{BootInfo, DeviceInfo};
use nexus_abi::sys::Handle;
use spin::Mutex;

use crate::arch::clock;
use crate::bootcfg::BootConfig;
use crate::sched::{self, Exit, Kind, Pid, Reaped};
use crate::virtio::Found;
use crate::{frames, images, ipc, kprintln, loader, shutdown, vm};

/// virtio device id of a network card.
const VIRTIO_NET: u32 = 1;
/// virtio device id of a block device.
const VIRTIO_BLK: u32 = 2;

/// Most restarts of one program per boot.
pub const MAX_RESTARTS: u32 = 3;
/// First restart delay; doubles with each further attempt.
pub const RESTART_BACKOFF_NS: u64 = 50_000_000;

/// When a program is part of the boot.
#[derive(Clone, Copy, PartialEq, Eq)]
enum When {
    /// Every boot.
    Always,
    /// Only when `init.probes` lists this word (e.g. `init.probes=spin`).
    Probe(&'static str),
}

/// One program.
struct Service {
    name: &'static str,
    kind: Kind,
    /// Granted the virtio device with this id (1 net, 2 block); each found
    /// device goes to at most one service.
    device: Option<u32>,
    /// Granted the hardware RNG.
    entropy: bool,
    /// Start only after this service exited successfully (`None`: at boot).
    after: Option<&'static str>,
    /// Memory quota in MiB (pages, page tables, DMA).
    quota_mib: usize,
    /// Restarted when it dies (see the module docs).
    restart: bool,
    when: When,
}

/// A channel between two services: (service, role under which it sees it).
struct Link {
    a: (&'static str, &'static str),
    b: (&'static str, &'static str),
}

const fn svc(name: &'static str, kind: Kind, quota_mib: usize) -> Service {
    Service {
        name,
        kind,
        device: None,
        entropy: false,
        after: None,
        quota_mib,
        restart: false,
        when: When::Always,
    }
}

const SERVICES: &[Service] = &[
    svc("ipc-selftest", Kind::Oneshot, 4),
    svc("ipc-echo", Kind::Daemon, 4),
    Service {
        device: Some(VIRTIO_NET),
        entropy: true,
        restart: true,
        ..svc("netstackd", Kind::Daemon, 24)
    },
    Service {
        device: Some(VIRTIO_BLK),
        restart: true,
        ..svc("blkd", Kind::Daemon, 8)
    },
    Service {
        // Holds the device's static key; only dsoftbusd is linked to it.
        entropy: true,
        restart: true,
        ..svc("keystored", Kind::Daemon, 4)
    },
    Service {
        // The service registry; dsoftbusd, keystored, netstackd and blkd are
        // linked to it (each registers only its own name).
        restart: true,
        ..svc("samgrd", Kind::Daemon, 4)
    },
    svc("selftest-client", Kind::Oneshot, 8),
    Service {
        entropy: true,
        restart: true,
        // The soft bus starts once the network proved itself (DHCP + ping),
        // which also keeps the marker order deterministic.
        after: Some("selftest-client"),
        ..svc("dsoftbusd", Kind::Oneshot, 48)
    },
    svc("probe-mmio", Kind::Probe, 2),
    svc("probe-kread", Kind::Probe, 2),
    svc("probe-textwrite", Kind::Probe, 2),
    svc("probe-stackexec", Kind::Probe, 2),
    svc("probe-stackguard", Kind::Probe, 2),
    svc("probe-quota", Kind::Probe, 2),
    Service {
        when: When::Probe("spin"),
        ..svc("probe-spin", Kind::Daemon, 2)
    },
];

const LINKS: &[Link] = &[
    Link {
        a: ("ipc-selftest", "echo"),
        b: ("ipc-echo", "client"),
    },
    Link {
        a: ("selftest-client", "net"),
        b: ("netstackd", "client:selftest-client"),
    },
    Link {
        a: ("dsoftbusd", "net"),
        b: ("netstackd", "client:dsoftbusd"),
    },
    Link {
        a: ("keystored", "blk"),
        b: ("blkd", "client:keystored"),
    },
    Link {
        a: ("dsoftbusd", "keys"),
        b: ("keystored", "client:dsoftbusd"),
    },
    Link {
        a: ("dsoftbusd", "samgr"),
        b: ("samgrd", "client:dsoftbusd"),
    },
    Link {
        a: ("keystored", "samgr"),
        b: ("samgrd", "client:keystored"),
    },
    Link {
        a: ("netstackd", "samgr"),
        b: ("samgrd", "client:netstackd"),
    },
    Link {
        a: ("blkd", "samgr"),
        b: ("samgrd", "client:blkd"),
    },
];

/// Why init could not start the services.
#[derive(Debug)]
pub enum InitError {
    /// Process or grant table exhausted.
    Tables,
    /// A program's image is missing or was refused.
    Image(&'static str, String),
}

impl core::fmt::Display for InitError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            InitError::Tables => f.write_str("process or grant table full"),
            InitError::Image(name, why) => write!(f, "program {name}: {why}"),
        }
    }
}

/// One program's current process and state.
struct Entry {
    svc: &'static Service,
    pid: Pid,
    /// Its boot info, until it is launched.
    info: Option<BootInfo>,
    /// The kernel's end of its `init` channel.
    init_end: Handle,
    launched: bool,
    /// Ended for good (exited, or a probe that was killed).
    finished: bool,
    restarts: u32,
    /// A restart is due at this time.
    restart_at: Option<u64>,
}

struct State {
    entries: Vec<Entry>,
    devices: Vec<Found>,
    /// Boot options, per program (kept for restarts).
    config: Vec<(&'static str, Vec<(String, String)>)>,
}

static STATE: Mutex<State> = Mutex::new(State {
    entries: Vec::new(),
    devices: Vec::new(),
    config: Vec::new(),
});

fn enabled(s: &Service, cfg: &BootConfig) -> bool {
    match s.when {
        When::Always => true,
        When::Probe(word) => cfg
            .get("init.probes")
            .is_some_and(|v| v.split(',').any(|w| w == word)),
    }
}

/// Load `svc`'s image into a new process with an `init` channel.
fn spawn(svc: &'static Service, config: Vec<(String, String)>) -> Result<Entry, InitError> {
    let image = images::find(svc.name)
        .ok_or_else(|| InitError::Image(svc.name, String::from("no such image")))?;
    let prog = loader::load(image, svc.quota_mib * 256)
        .map_err(|e| InitError::Image(svc.name, format!("{e}")))?;
    let pid = sched::create(
        svc.name,
        svc.kind,
        prog.space,
        prog.entry,
        prog.stack_top,
        svc.entropy,
    )
    .map_err(|_| InitError::Tables)?;
    let (kernel_end, proc_end) = ipc::channel(ipc::KERNEL, pid).map_err(|_| InitError::Tables)?;
    Ok(Entry {
        svc,
        pid,
        info: Some(BootInfo {
            name: String::from(svc.name),
            config,
            channels: alloc::vec![(String::from("init"), proc_end.0)],
            entropy: svc.entropy,
            ..BootInfo::default()
        }),
        init_end: kernel_end,
        launched: false,
        finished: false,
        restarts: 0,
        restart_at: None,
    })
}

/// Grant entry `e` the device its service names, if one was found.
fn grant_device(e: &mut Entry, devices: &[Found]) -> Result<(), InitError> {
    let Some(id) = e.svc.device else {
        return Ok(());
    };
    let Some(d) = devices.iter().find(|d| d.device_id == id) else {
        return Ok(());
    };
    let h = ipc::device(e.pid, d.base, d.irq).map_err(|_| InitError::Tables)?;
    if let Some(info) = e.info.as_mut() {
        info.devices.push(DeviceInfo {
            handle: h.0,
            virtio_id: id,
            mmio_base: d.base,
            irq: d.irq.map(u32::from),
        });
    }
    let kind = match id {
        VIRTIO_NET => "virtio-net",
        VIRTIO_BLK => "virtio-blk",
        _ => "virtio device",
    };
    kprintln!("init: granted {kind} at {:#x} to {}", d.base, e.svc.name);
    Ok(())
}

/// Give `role` (a channel end) to entry `i`: in its boot info if it has not
/// started, else as a grant message on its `init` channel.
fn give(entries: &mut [Entry], i: usize, role: &str, h: Handle) {
    let e = &mut entries[i];
    if let Some(info) = e.info.as_mut() {
        info.channels.retain(|(r, _)| r != role);
        info.channels.push((String::from(role), h.0));
        return;
    }
    let grant = BootInfo {
        name: String::from("grant"),
        channels: alloc::vec![(String::from(role), h.0)],
        ..BootInfo::default()
    };
    let sent = grant
        .encode()
        .ok()
        .map(|bytes| ipc::send_from_kernel(e.init_end, &bytes));
    if !matches!(sent, Some(Ok(()))) {
        kprintln!(
            "init: could not deliver {role} to {} ({sent:?})",
            e.svc.name
        );
    }
}

/// Wire entry `i`'s links to every live peer (all links at boot).
fn link(entries: &mut [Entry], i: usize) -> Result<(), InitError> {
    let name = entries[i].svc.name;
    for l in LINKS {
        let (mine, theirs) = if l.a.0 == name {
            (l.a, l.b)
        } else if l.b.0 == name {
            (l.b, l.a)
        } else {
            continue;
        };
        let Some(j) = entries
            .iter()
            .position(|e| e.svc.name == theirs.0 && !e.finished && e.restart_at.is_none())
        else {
            continue;
        };
        let (hm, ht) =
            ipc::channel(entries[i].pid, entries[j].pid).map_err(|_| InitError::Tables)?;
        give(entries, i, mine.1, hm);
        give(entries, j, theirs.1, ht);
    }
    Ok(())
}

fn launch(e: &mut Entry) -> Result<(), InitError> {
    let Some(info) = e.info.take() else {
        return Ok(());
    };
    let bytes = info
        .encode()
        .map_err(|err| InitError::Image(e.svc.name, format!("boot info: {err:?}")))?;
    sched::with_proc(e.pid, |p| p.bootinfo = bytes);
    e.launched = true;
    sched::start(e.pid);
    Ok(())
}

/// Load every program, wire channels and devices, and start those that do
/// not wait for another.
pub fn start(cfg: &BootConfig, devices: &[Found]) -> Result<(), InitError> {
    let mut st = STATE.lock();
    st.devices = devices.to_vec();
    for s in SERVICES.iter().filter(|s| enabled(s, cfg)) {
        let mut config = Vec::new();
        if let Some(level) = cfg.get("log") {
            config.push((String::from("log"), String::from(level)));
        }
        config.extend(cfg.for_service(s.name));
        st.config.push((s.name, config.clone()));
        let e = spawn(s, config)?;
        st.entries.push(e);
    }
    // Links: wire each pair once, from its first side.
    let n = st.entries.len();
    for l in LINKS {
        let find = |st: &State, name: &str| st.entries.iter().position(|e| e.svc.name == name);
        let (Some(i), Some(j)) = (find(&st, l.a.0), find(&st, l.b.0)) else {
            continue;
        };
        let (ha, hb) =
            ipc::channel(st.entries[i].pid, st.entries[j].pid).map_err(|_| InitError::Tables)?;
        give(&mut st.entries, i, l.a.1, ha);
        give(&mut st.entries, j, l.b.1, hb);
    }
    let devices = st.devices.clone();
    for e in st.entries.iter_mut() {
        grant_device(e, &devices)?;
    }
    for i in 0..n {
        if st.entries[i].svc.after.is_none() {
            launch(&mut st.entries[i])?;
        }
    }
    let now: Vec<_> = st
        .entries
        .iter()
        .filter(|e| e.svc.after.is_none())
        .map(|e| e.svc.name)
        .collect();
    let later: Vec<_> = st
        .entries
        .iter()
        .filter_map(|e| e.svc.after.map(|a| format!("{} after {}", e.svc.name, a)))
        .collect();
    let (free, total) = frames::counts();
    if later.is_empty() {
        kprintln!("init: services started ({})", now.join(", "));
    } else {
        kprintln!(
            "init: services started ({}; {})",
            now.join(", "),
            later.join(", ")
        );
    }
    kprintln!("init: {n} processes, frames free {free} of {total}");
    Ok(())
}

fn fail_run() -> ! {
    shutdown::exit(shutdown::Status::Failure)
}

/// Every frame is free, charged to a live process, one of the kernel's own
/// tables, or a live process's kernel stack; anything else is a leak.
fn frames_balance() -> (usize, usize, usize, bool) {
    let (free, total) = frames::counts();
    let charged = sched::charged_frames();
    (
        free,
        charged,
        total,
        free + charged + vm::kernel_table_frames() + vm::kernel_stack_frames() == total,
    )
}

/// Called by the scheduler after a process ended and its grants and frames
/// were returned.
pub fn process_exited(pid: Pid, name: &'static str, kind: Kind, why: Exit, reaped: Reaped) {
    let mut st = STATE.lock();
    let Some(i) = st.entries.iter().position(|e| e.pid == pid) else {
        return;
    };
    ipc::close_kernel_end(st.entries[i].init_end);
    let returned = reaped.free_after.saturating_sub(reaped.free_before);
    let balanced = returned == reaped.charged;
    let failed = !matches!(why, Exit::Status(0, _));
    if failed || !balanced {
        kprintln!(
            "init: {name} reaped: frames free {} -> {} ({returned} returned, {} charged){}",
            reaped.free_before,
            reaped.free_after,
            reaped.charged,
            if balanced { "" } else { " LEAK" }
        );
        if !balanced {
            drop(st);
            fail_run();
        }
    }
    let svc = st.entries[i].svc;
    if svc.restart && failed && kind != Kind::Probe {
        let how = match &why {
            Exit::Status(code, msg) => format!("exit status {code}: {msg}"),
            Exit::Killed(how) => format!("killed: {how}"),
        };
        let e = &mut st.entries[i];
        if e.restarts >= MAX_RESTARTS {
            kprintln!(
                "init: service {name} FAIL: gave up after {MAX_RESTARTS} restarts (last: {how})"
            );
            drop(st);
            fail_run();
        }
        e.restarts += 1;
        let delay = RESTART_BACKOFF_NS << (e.restarts - 1);
        e.restart_at = Some(clock::now_ns() + delay);
        kprintln!(
            "init: {name} ended ({how}); restart {}/{MAX_RESTARTS} in {} ms",
            e.restarts,
            delay / 1_000_000
        );
        return;
    }
    st.entries[i].finished = true;
    let dependents: Vec<usize> = (0..st.entries.len())
        .filter(|&j| st.entries[j].svc.after == Some(name) && !st.entries[j].launched)
        .collect();
    match (kind, why) {
        (Kind::Probe, Exit::Killed(how)) => {
            kprintln!("init: probe {name} stopped by the kernel ({how}), as required");
        }
        (_, Exit::Status(0, _)) => {
            kprintln!("init: service {name} exited ok");
            for j in dependents {
                kprintln!("init: starting {} (after {name})", st.entries[j].svc.name);
                if let Err(e) = launch(&mut st.entries[j]) {
                    kprintln!("init: FAIL starting {}: {e}", st.entries[j].svc.name);
                    drop(st);
                    fail_run();
                }
            }
        }
        (_, Exit::Status(code, msg)) => {
            kprintln!("init: service {name} FAIL: {msg} (exit status {code})");
            drop(st);
            fail_run();
        }
        (_, Exit::Killed(how)) => {
            kprintln!("init: service {name} FAIL: killed by the kernel ({how})");
            drop(st);
            fail_run();
        }
    }
    let all_done = st
        .entries
        .iter()
        .filter(|e| e.svc.kind == Kind::Oneshot)
        .all(|e| e.finished);
    drop(st);
    if kind == Kind::Oneshot && all_done {
        let (used, free) = crate::mem::heap_usage();
        let (frames_free, charged, total, ok) = frames_balance();
        let now = clock::now_ns().max(1);
        let idle = sched::stats().idle_ns;
        kprintln!(
            "kernel: all finite services done; idle {}% of {} ms, heap used {} KiB free {} KiB, frames free {} + charged {} + kernel {} + kernel stacks {} of {}{}",
            idle * 100 / now,
            now / 1_000_000,
            used / 1024,
            free / 1024,
            frames_free,
            charged,
            vm::kernel_table_frames(),
            vm::kernel_stack_frames(),
            total,
            if ok { " (balanced)" } else { " LEAK" }
        );
        if !ok {
            fail_run();
        }
        if !crate::KEEP_RUNNING.load(Ordering::Relaxed) {
            shutdown::exit(shutdown::Status::Success);
        }
    }
}

/// Start due restarts; returns when the next one is due.
pub fn tick() -> Option<u64> {
    let now = clock::now_ns();
    let mut st = STATE.lock();
    let due: Vec<usize> = (0..st.entries.len())
        .filter(|&i| st.entries[i].restart_at.is_some_and(|t| t <= now))
        .collect();
    for i in due {
        st.entries[i].restart_at = None;
        let svc = st.entries[i].svc;
        let attempt = st.entries[i].restarts;
        kprintln!(
            "init: restarting {} (attempt {attempt}/{MAX_RESTARTS})",
            svc.name
        );
        let mut config = st
            .config
            .iter()
            .find(|(n, _)| *n == svc.name)
            .map(|(_, c)| c.clone())
            .unwrap_or_default();
        config.push((String::from("restart"), format!("{attempt}")));
        let mut e = match spawn(svc, config) {
            Ok(e) => e,
            Err(err) => {
                kprintln!("init: service {} FAIL: restart: {err}", svc.name);
                drop(st);
                fail_run();
            }
        };
        e.restarts = attempt;
        st.entries[i] = e;
        let devices = st.devices.clone();
        let wired =
            link(&mut st.entries, i).and_then(|()| grant_device(&mut st.entries[i], &devices));
        if let Err(err) = wired.and_then(|()| launch(&mut st.entries[i])) {
            kprintln!("init: service {} FAIL: restart: {err}", svc.name);
            drop(st);
            fail_run();
        }
    }
    st.entries.iter().filter_map(|e| e.restart_at).min()
}

/// `kernel.stats_ms`: every interval, the idle share and each process's
/// CPU share over the interval.
pub struct StatsReporter {
    every: Option<u64>,
    next: u64,
    mark_ns: u64,
    mark_idle: u64,
    mark_cpu: Vec<(&'static str, u64)>,
}

impl StatsReporter {
    /// Report every `every_ns` (never with `None`).
    pub fn new(every_ns: Option<u64>) -> Self {
        let now = clock::now_ns();
        StatsReporter {
            every: every_ns,
            next: every_ns.map_or(u64::MAX, |e| now + e),
            mark_ns: now,
            mark_idle: 0,
            mark_cpu: Vec::new(),
        }
    }

    /// Called on every scheduler pass; returns when it next wants to run.
    pub fn tick(&mut self) -> Option<u64> {
        let every = self.every?;
        let now = clock::now_ns();
        if now < self.next {
            return Some(self.next);
        }
        let st = sched::stats();
        let span = now.saturating_sub(self.mark_ns).max(1);
        let mut line = format!(
            "kernel: stats idle={}% over {} ms; cpu",
            st.idle_ns.saturating_sub(self.mark_idle) * 100 / span,
            span / 1_000_000
        );
        for (name, cpu) in &st.procs {
            let before = self
                .mark_cpu
                .iter()
                .find(|(n, _)| n == name)
                .map_or(0, |(_, c)| *c);
            let share = cpu.saturating_sub(before) * 100 / span;
            if share > 0 {
                line.push_str(&format!(" {name}={share}%"));
            }
        }
        kprintln!("{line}");
        self.mark_ns = now;
        self.mark_idle = st.idle_ns;
        self.mark_cpu = st.procs;
        self.next = now + every;
        Some(self.next)
    }
}
