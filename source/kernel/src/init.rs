//! The init table: which programs run, what each is granted, how they are
//! wired, and what happens when one ends. This is the only place that names
//! services; the kernel crate depends on none of them (their ELF images are
//! embedded by build.rs and looked up by name here).

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::sync::atomic::Ordering;

use nexus_abi::bootinfo::{BootInfo, DeviceInfo};
use spin::Mutex;

use crate::arch::clock;
use crate::bootcfg::BootConfig;
use crate::sched::{self, Exit, Kind, Pid};
use crate::virtio::Found;
use crate::{frames, images, ipc, kprintln, loader, shutdown};

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
    /// Granted the virtio-net device (at most one service may be).
    nic: bool,
    /// Granted the hardware RNG.
    entropy: bool,
    /// Start only after this service exited successfully (`None`: at boot).
    after: Option<&'static str>,
    /// Memory quota in MiB (pages, page tables, DMA).
    quota_mib: usize,
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
        nic: false,
        entropy: false,
        after: None,
        quota_mib,
        when: When::Always,
    }
}

const SERVICES: &[Service] = &[
    svc("ipc-selftest", Kind::Oneshot, 4),
    svc("ipc-echo", Kind::Daemon, 4),
    Service {
        nic: true,
        entropy: true,
        ..svc("netstackd", Kind::Daemon, 24)
    },
    svc("selftest-client", Kind::Oneshot, 8),
    Service {
        entropy: true,
        // The soft bus starts once the network proved itself (DHCP + ping),
        // which also keeps the marker order deterministic.
        after: Some("selftest-client"),
        ..svc("dsoftbusd", Kind::Oneshot, 48)
    },
    svc("probe-mmio", Kind::Probe, 2),
    svc("probe-kread", Kind::Probe, 2),
    svc("probe-textwrite", Kind::Probe, 2),
    svc("probe-stackexec", Kind::Probe, 2),
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
];

/// Why init could not start the services.
#[derive(Debug)]
pub enum InitError {
    /// Process or grant table exhausted.
    Tables,
    /// A link names a service not in the table.
    UnknownService,
    /// A program's image is missing or was refused.
    Image(&'static str, String),
}

impl core::fmt::Display for InitError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            InitError::Tables => f.write_str("process or grant table full"),
            InitError::UnknownService => f.write_str("a link names an unknown service"),
            InitError::Image(name, why) => write!(f, "program {name}: {why}"),
        }
    }
}

struct Started {
    name: &'static str,
    pid: Pid,
    kind: Kind,
    after: Option<&'static str>,
    finished: bool,
}

static STATE: Mutex<Vec<Started>> = Mutex::new(Vec::new());

fn enabled(s: &Service, cfg: &BootConfig) -> bool {
    match s.when {
        When::Always => true,
        When::Probe(word) => cfg
            .get("init.probes")
            .is_some_and(|v| v.split(',').any(|w| w == word)),
    }
}

/// Load every program, wire channels and devices, and start those that do
/// not wait for another.
pub fn start(cfg: &BootConfig, devices: &[Found]) -> Result<(), InitError> {
    let services: Vec<&Service> = SERVICES.iter().filter(|s| enabled(s, cfg)).collect();
    let mut infos: Vec<(Pid, BootInfo)> = Vec::new();
    for s in &services {
        let image = images::find(s.name)
            .ok_or_else(|| InitError::Image(s.name, String::from("no such image")))?;
        let quota = s.quota_mib * 256;
        let prog =
            loader::load(image, quota).map_err(|e| InitError::Image(s.name, format!("{e}")))?;
        let pid = sched::create(
            s.name,
            s.kind,
            prog.space,
            prog.entry,
            prog.stack_top,
            s.entropy,
        )
        .map_err(|_| InitError::Tables)?;
        let mut config = Vec::new();
        if let Some(level) = cfg.get("log") {
            config.push((String::from("log"), String::from(level)));
        }
        config.extend(cfg.for_service(s.name));
        infos.push((
            pid,
            BootInfo {
                name: String::from(s.name),
                config,
                entropy: s.entropy,
                ..BootInfo::default()
            },
        ));
    }
    let index = |name: &'static str| {
        services
            .iter()
            .position(|s| s.name == name)
            .ok_or(InitError::UnknownService)
    };
    for link in LINKS {
        let (ia, ib) = (index(link.a.0)?, index(link.b.0)?);
        let (ha, hb) = ipc::channel(infos[ia].0, infos[ib].0).map_err(|_| InitError::Tables)?;
        infos[ia].1.channels.push((String::from(link.a.1), ha.0));
        infos[ib].1.channels.push((String::from(link.b.1), hb.0));
    }
    if let Some(i) = services.iter().position(|s| s.nic) {
        if let Some(nic) = devices.iter().find(|d| d.device_id == 1) {
            let h = ipc::device(infos[i].0, nic.base, nic.irq).map_err(|_| InitError::Tables)?;
            infos[i].1.devices.push(DeviceInfo {
                handle: h.0,
                virtio_id: 1,
                mmio_base: nic.base,
                irq: nic.irq.map(u32::from),
            });
            kprintln!(
                "init: granted virtio-net at {:#x} to {}",
                nic.base,
                services[i].name
            );
        }
    }
    let mut state = STATE.lock();
    for (s, (pid, info)) in services.iter().zip(infos) {
        let bytes = info
            .encode()
            .map_err(|e| InitError::Image(s.name, format!("boot info: {e:?}")))?;
        sched::with_proc(pid, |p| p.bootinfo = bytes);
        state.push(Started {
            name: s.name,
            pid,
            kind: s.kind,
            after: s.after,
            finished: false,
        });
        if s.after.is_none() {
            sched::start(pid);
        }
    }
    let now: Vec<_> = state
        .iter()
        .filter(|s| s.after.is_none())
        .map(|s| s.name)
        .collect();
    let later: Vec<_> = state
        .iter()
        .filter_map(|s| s.after.map(|a| format!("{} after {}", s.name, a)))
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
    kprintln!(
        "init: {} processes, frames free {free} of {total}",
        state.len()
    );
    Ok(())
}

fn fail_run() -> ! {
    shutdown::exit(shutdown::Status::Failure)
}

/// Called by the scheduler after a process ended and its grants and frames
/// were returned.
pub fn process_exited(pid: Pid, name: &'static str, kind: Kind, why: Exit) {
    let dependents: Vec<(Pid, &'static str)> = {
        let mut state = STATE.lock();
        if let Some(s) = state.iter_mut().find(|s| s.pid == pid) {
            s.finished = true;
        }
        state
            .iter()
            .filter(|s| s.after == Some(name))
            .map(|s| (s.pid, s.name))
            .collect()
    };
    match (kind, why) {
        (Kind::Probe, Exit::Killed(how)) => {
            kprintln!("init: probe {name} stopped by the kernel ({how}), as required");
        }
        (_, Exit::Status(0, _)) => {
            kprintln!("init: service {name} exited ok");
            for (dep, dep_name) in dependents {
                kprintln!("init: starting {dep_name} (after {name})");
                sched::start(dep);
            }
        }
        (_, Exit::Status(code, msg)) => {
            kprintln!("init: service {name} FAIL: {msg} (exit status {code})");
            fail_run();
        }
        (_, Exit::Killed(how)) => {
            kprintln!("init: service {name} FAIL: killed by the kernel ({how})");
            fail_run();
        }
    }
    if kind == Kind::Oneshot && all_oneshots_finished() {
        let (used, free) = crate::mem::heap_usage();
        let (frames_free, frames_total) = frames::counts();
        let now = clock::now_ns().max(1);
        let idle = sched::stats().idle_ns;
        kprintln!(
            "kernel: all finite services done; idle {}% of {} ms, heap used {} KiB free {} KiB, frames free {} of {}",
            idle * 100 / now,
            now / 1_000_000,
            used / 1024,
            free / 1024,
            frames_free,
            frames_total
        );
        if !crate::KEEP_RUNNING.load(Ordering::Relaxed) {
            shutdown::exit(shutdown::Status::Success);
        }
    }
}

fn all_oneshots_finished() -> bool {
    STATE
        .lock()
        .iter()
        .filter(|s| s.kind == Kind::Oneshot)
        .all(|s| s.finished)
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
