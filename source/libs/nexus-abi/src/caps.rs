//! What a service is handed at start: its name, its boot configuration and
//! its capabilities. A service can do nothing its `Caps` does not allow.

use alloc::boxed::Box;
use alloc::string::String;
use alloc::vec::Vec;
use core::future::Future;
use core::pin::Pin;

use crate::bootinfo::BootInfo;
use crate::device::{Device, DeviceKind};
use crate::ipc::Channel;
use crate::sys::Handle;

/// The future a service's entry point returns.
pub type ServiceFuture = Pin<Box<dyn Future<Output = Result<(), ServiceError>>>>;

/// A service entry point, as listed in the kernel's init table.
pub type ServiceMain = fn(Caps) -> ServiceFuture;

/// Why a service stopped. The runtime hands it to the kernel with `exit`;
/// init logs it and decides (fail the run, restart a daemon).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceError(pub String);

impl ServiceError {
    /// An error with a human-readable reason.
    pub fn new(reason: impl Into<String>) -> Self {
        ServiceError(reason.into())
    }
}

impl core::fmt::Display for ServiceError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A service's grants.
#[derive(Debug)]
pub struct Caps {
    name: &'static str,
    config: Vec<(String, String)>,
    channels: Vec<(&'static str, Channel)>,
    devices: Vec<Device>,
    entropy: bool,
}

fn leak(s: String) -> &'static str {
    alloc::boxed::Box::leak(s.into_boxed_str())
}

impl Caps {
    /// Built by the runtime from the kernel's boot info. Names are leaked
    /// once per process start (a few hundred bytes) so they can be
    /// `&'static`, as services have always seen them.
    pub fn from_bootinfo(info: BootInfo) -> Self {
        let channels = info
            .channels
            .into_iter()
            .map(|(role, h)| (leak(role), Channel::from_handle(Handle(h))))
            .collect();
        let devices = info
            .devices
            .into_iter()
            .map(|d| {
                let kind = match d.virtio_id {
                    1 => DeviceKind::Net,
                    n => DeviceKind::Other(n),
                };
                Device::new(Handle(d.handle), kind, d.mmio_base, d.irq)
            })
            .collect();
        Caps {
            name: leak(info.name),
            config: info.config,
            channels,
            devices,
            entropy: info.entropy,
        }
    }

    /// Decode a grant init delivered on the `init` channel after start
    /// (a restarted peer's new channel): `(role, channel)` pairs.
    pub fn decode_grant(msg: &[u8]) -> Option<Vec<(&'static str, Channel)>> {
        let info = BootInfo::decode(msg).ok()?;
        Some(
            info.channels
                .into_iter()
                .map(|(role, h)| (leak(role), Channel::from_handle(Handle(h))))
                .collect(),
        )
    }

    /// The service's name in the init table.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// A boot option addressed to this service: `<service>.<key>=<value>` on
    /// the kernel command line is seen here as `key`.
    pub fn config(&self, key: &str) -> Option<&str> {
        self.config
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Take the channel granted under `role` (each can be taken once).
    pub fn take_channel(&mut self, role: &str) -> Option<Channel> {
        let idx = self.channels.iter().position(|(r, _)| *r == role)?;
        Some(self.channels.swap_remove(idx).1)
    }

    /// Take every channel whose role starts with `prefix`, with their roles.
    pub fn take_channels(&mut self, prefix: &str) -> Vec<(&'static str, Channel)> {
        let (taken, kept) = core::mem::take(&mut self.channels)
            .into_iter()
            .partition(|(r, _)| r.starts_with(prefix));
        self.channels = kept;
        taken
    }

    /// Take the first granted device of `kind`.
    pub fn take_device(&mut self, kind: DeviceKind) -> Option<Device> {
        let idx = self.devices.iter().position(|d| d.kind() == kind)?;
        Some(self.devices.swap_remove(idx))
    }

    /// Whether the service may draw entropy.
    pub fn has_entropy(&self) -> bool {
        self.entropy
    }
}
