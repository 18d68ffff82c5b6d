//! The service API: the only door a Nexus service has into the kernel.
//!
//! Services are ring-3 processes, each in its own address space. Everything
//! they may do — log, read the clock, sleep, exchange IPC messages, draw
//! entropy, touch the devices they were granted — is a system call (the
//! [`sys`] table: integers, handles and checked (pointer, length) pairs).
//! The API services see is unchanged from when they were in-kernel tasks:
//! `Channel::recv().await`, `time::sleep`, `Device::wait_irq`. Waiting is
//! done by the process's own executor ([`rt`]), which blocks in the kernel's
//! `wait(handles, deadline)` call; no waker ever crosses the boundary.
//!
//! The kernel uses this crate only for the numbers, error types, the
//! address-space layout and the boot-info codec.
#![no_std]

extern crate alloc;

pub mod bootinfo;
pub mod caps;
pub mod device;
pub mod entropy;
pub mod ipc;
pub mod layout;
pub mod logging;
pub mod rt;
pub mod sys;
pub mod time;

pub use caps::{Caps, ServiceError, ServiceFuture, ServiceMain};
pub use ipc::{Channel, IpcError};
