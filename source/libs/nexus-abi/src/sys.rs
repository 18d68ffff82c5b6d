//! The kernel call table ("syscalls").
//!
//! The kernel fills one [`KernelOps`] at boot and installs it with [`install`];
//! the rest of this crate calls through it. Every entry takes only plain data
//! (integers, slices, handles, a [`Waker`] for calls that may block), so each
//! could become a real trap without changing a service.

use alloc::vec::Vec;
use core::task::Waker;

use crate::device::{DeviceError, DmaRegion, MmioRegion};
use crate::entropy::EntropyError;
use crate::ipc::IpcError;

/// A capability handle: an index into the calling task's grants. Handles are
/// meaningless outside the task they were granted to — the kernel checks the
/// owner on every call.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Handle(pub u32);

/// `KernelOps::chan_send`.
pub type ChanSendFn = fn(Handle, &[u8], Option<&Waker>) -> Result<(), IpcError>;
/// `KernelOps::chan_recv`.
pub type ChanRecvFn = fn(Handle, Option<&Waker>) -> Result<Vec<u8>, IpcError>;

/// The calls a service can make. Filled in by the kernel only.
pub struct KernelOps {
    /// Write one whole log line (never interleaved with another).
    pub log: fn(log::Level, &str),
    /// Monotonic nanoseconds since boot.
    pub now_ns: fn() -> u64,
    /// Wake `waker` once the monotonic clock reaches `deadline_ns`.
    pub wake_at: fn(u64, &Waker),
    /// Fill the slice from the hardware RNG (needs the entropy grant).
    pub entropy: fn(&mut [u8]) -> Result<(), EntropyError>,
    /// Queue one message; `Err(WouldBlock)` registers `waker` for space.
    pub chan_send: ChanSendFn,
    /// Dequeue one message; `Err(WouldBlock)` registers `waker` for data.
    pub chan_recv: ChanRecvFn,
    /// Close our end; the peer sees `Closed` once the queue drains.
    pub chan_close: fn(Handle),
    /// Map a device's MMIO window (needs the device grant).
    pub mmio_map: fn(Handle) -> Result<MmioRegion, DeviceError>,
    /// `Ok(true)` if the device raised an interrupt since the last call;
    /// otherwise registers `waker` for the next one.
    pub irq_take: fn(Handle, &Waker) -> Result<bool, DeviceError>,
    /// Physically contiguous, zeroed, page-aligned memory for device DMA.
    pub dma_alloc: fn(Handle, usize) -> Result<DmaRegion, DeviceError>,
    /// Return memory from [`KernelOps::dma_alloc`].
    pub dma_free: fn(Handle, DmaRegion),
}

static OPS: spin::Once<&'static KernelOps> = spin::Once::new();

/// Install the call table. The kernel does this once, before any service runs.
pub fn install(ops: &'static KernelOps) {
    OPS.call_once(|| ops);
}

/// The installed table.
///
/// Services only run after the kernel installed it; a call before that is a
/// kernel bug, reported the only way left.
pub(crate) fn ops() -> &'static KernelOps {
    match OPS.get() {
        Some(ops) => ops,
        None => panic!("nexus-abi: kernel call table not installed"),
    }
}
