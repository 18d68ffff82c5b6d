//! The init table: which services run, what each is granted, how they are
//! wired. This is the only place that names services; the rest of the
//! kernel knows nothing about networking.

use alloc::format;
use alloc::vec::Vec;

use nexus_abi::device::{Device, DeviceKind};
use nexus_abi::{Caps, Channel, ServiceMain};

use crate::bootcfg::BootConfig;
use crate::exec::{self, Kind, TaskId};
use crate::virtio::Found;
use crate::{ipc, kprintln};

/// One service.
struct Service {
    name: &'static str,
    main: ServiceMain,
    kind: Kind,
    /// Granted the virtio-net device (at most one service may be).
    nic: bool,
    /// Granted the hardware RNG.
    entropy: bool,
    /// Start only after this service exited successfully (`None`: at boot).
    after: Option<&'static str>,
}

/// A channel between two services: (service, role under which it sees it).
struct Link {
    a: (&'static str, &'static str),
    b: (&'static str, &'static str),
}

const SERVICES: &[Service] = &[
    Service {
        name: "ipc-selftest",
        main: ipc_selftest::client_main,
        kind: Kind::Oneshot,
        nic: false,
        entropy: false,
        after: None,
    },
    Service {
        name: "ipc-echo",
        main: ipc_selftest::echo_main,
        kind: Kind::Daemon,
        nic: false,
        entropy: false,
        after: None,
    },
    Service {
        name: "netstackd",
        main: netstackd::main,
        kind: Kind::Daemon,
        nic: true,
        entropy: true,
        after: None,
    },
    Service {
        name: "selftest-client",
        main: selftest_client::main,
        kind: Kind::Oneshot,
        nic: false,
        entropy: false,
        after: None,
    },
    Service {
        name: "dsoftbusd",
        main: dsoftbusd::main,
        kind: Kind::Oneshot,
        nic: false,
        entropy: true,
        // The soft bus starts once the network proved itself (DHCP + ping),
        // which also keeps the marker order deterministic.
        after: Some("selftest-client"),
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

/// A task being assembled: its id, channels and devices.
type Pending = (TaskId, Vec<(&'static str, Channel)>, Vec<Device>);

/// Why init could not start the services.
#[derive(Debug)]
pub enum InitError {
    /// Task or grant table exhausted.
    Tables,
    /// A link names a service not in the table.
    UnknownService,
}

/// Create every task, wire channels and devices, and start them.
pub fn start(cfg: &BootConfig, devices: &[Found]) -> Result<(), InitError> {
    let mut ids: Vec<Pending> = Vec::new();
    for s in SERVICES {
        let id = exec::create(s.name, s.kind, s.entropy).map_err(|_| InitError::Tables)?;
        ids.push((id, Vec::new(), Vec::new()));
    }
    let index = |name: &'static str| {
        SERVICES
            .iter()
            .position(|s| s.name == name)
            .ok_or(InitError::UnknownService)
    };
    for link in LINKS {
        let (ia, ib) = (index(link.a.0)?, index(link.b.0)?);
        let (ha, hb) = ipc::channel(ids[ia].0, ids[ib].0).map_err(|_| InitError::Tables)?;
        ids[ia].1.push((link.a.1, Channel::from_handle(ha)));
        ids[ib].1.push((link.b.1, Channel::from_handle(hb)));
    }
    let mut nic_granted = false;
    for (i, s) in SERVICES.iter().enumerate() {
        if !s.nic || nic_granted {
            continue;
        }
        if let Some(nic) = devices.iter().find(|d| d.device_id == 1) {
            let h = ipc::device(ids[i].0, nic.base, nic.irq).map_err(|_| InitError::Tables)?;
            ids[i].2.push(Device::new(
                h,
                DeviceKind::Net,
                nic.base,
                nic.irq.map(u32::from),
            ));
            nic_granted = true;
            kprintln!("init: granted virtio-net at {:#x} to {}", nic.base, s.name);
        }
    }
    for (s, (id, channels, devs)) in SERVICES.iter().zip(ids) {
        let caps = Caps::new(s.name, cfg.for_service(s.name), channels, devs, s.entropy);
        match s.after {
            None => exec::start(id, (s.main)(caps)),
            Some(after) => exec::start_after(id, (s.main)(caps), after),
        }
    }
    let now: Vec<_> = SERVICES
        .iter()
        .filter(|s| s.after.is_none())
        .map(|s| s.name)
        .collect();
    let later: Vec<_> = SERVICES
        .iter()
        .filter_map(|s| s.after.map(|a| format!("{} after {}", s.name, a)))
        .collect();
    if later.is_empty() {
        kprintln!("init: services started ({})", now.join(", "));
    } else {
        kprintln!(
            "init: services started ({}; {})",
            now.join(", "),
            later.join(", ")
        );
    }
    Ok(())
}
