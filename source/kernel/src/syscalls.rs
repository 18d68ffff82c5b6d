//! The kernel's side of the service API: the `KernelOps` table.

use alloc::vec::Vec;
use core::task::Waker;

use nexus_abi::entropy::EntropyError;
use nexus_abi::ipc::IpcError;
use nexus_abi::sys::{Handle, KernelOps};

use crate::arch::clock;
use crate::{console, exec, ipc, rng};

fn log(level: log::Level, msg: &str) {
    match level {
        log::Level::Error => console::line(format_args!("ERROR {msg}")),
        log::Level::Warn => console::line(format_args!("WARN {msg}")),
        log::Level::Info => console::line(format_args!("{msg}")),
        log::Level::Debug | log::Level::Trace => console::line(format_args!("debug {msg}")),
    }
}

fn entropy(buf: &mut [u8]) -> Result<(), EntropyError> {
    if !exec::current_has_entropy() {
        return Err(EntropyError::NotGranted);
    }
    rng::fill(buf)
}

fn chan_recv(h: Handle, w: Option<&Waker>) -> Result<Vec<u8>, IpcError> {
    ipc::recv(h, w)
}

/// The table installed at boot.
pub static OPS: KernelOps = KernelOps {
    log,
    now_ns: clock::now_ns,
    wake_at: exec::wake_at,
    entropy,
    chan_send: ipc::send,
    chan_recv,
    chan_close: ipc::close,
    mmio_map: ipc::mmio_map,
    irq_take: ipc::irq_take,
    dma_alloc: ipc::dma_alloc,
    dma_free: ipc::dma_free,
};
