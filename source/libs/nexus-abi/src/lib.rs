//! The service API: the only door a Nexus service has into the kernel.
//!
//! Services are `async` tasks started from the kernel's init table. They never
//! name a kernel type: everything they may do — log, read the clock, sleep,
//! exchange IPC messages, draw entropy, touch the devices they were handed —
//! goes through the [`sys::KernelOps`] table the kernel installs at boot.
//!
//! The table is deliberately shaped like a syscall ABI: plain functions over
//! integers, byte slices and handles, every call checked by the kernel against
//! the *calling task's* grants. Today services run in ring 0 in one address
//! space, so the checks stop honest mistakes rather than hostile code; the
//! boundary is where a ring-3 trap would go (docs/architecture.md).
#![no_std]

extern crate alloc;

pub mod caps;
pub mod device;
pub mod entropy;
pub mod ipc;
pub mod logging;
pub mod sys;
pub mod time;

pub use caps::{Caps, ServiceError, ServiceFuture, ServiceMain};
pub use ipc::{Channel, IpcError};
