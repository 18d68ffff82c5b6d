//! Device capabilities: MMIO windows, interrupts and DMA memory.
//!
//! The kernel discovers devices (virtio-mmio slots) but drives none of them;
//! it hands each to at most one service as a [`Device`]. Holding a `Device` is
//! the only way to map its registers, wait for its interrupt or obtain DMA
//! memory on its behalf.

use core::future::poll_fn;
use core::task::{Context, Poll};

use crate::sys::{ops, Handle};

/// What kind of device a capability names (virtio device ids).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceKind {
    /// virtio-net (virtio device id 1).
    Net,
    /// Any other virtio device id.
    Other(u32),
}

/// Device-call failures.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceError {
    /// The handle is not a device granted to the calling task.
    NotGranted,
    /// The device has no interrupt line the kernel knows of.
    NoIrq,
    /// No physically contiguous memory of that size is left.
    OutOfMemory,
    /// A request the kernel refuses (zero pages, too large, bad region).
    InvalidArgument,
}

impl core::fmt::Display for DeviceError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            DeviceError::NotGranted => "device not granted to this service",
            DeviceError::NoIrq => "device has no interrupt line",
            DeviceError::OutOfMemory => "out of DMA memory",
            DeviceError::InvalidArgument => "invalid device request",
        })
    }
}

/// A mapped MMIO register window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MmioRegion {
    /// Virtual address of the first register.
    pub vaddr: usize,
    /// Window length in bytes.
    pub len: usize,
}

/// DMA memory: what the CPU uses (`vaddr`) and what the device uses (`paddr`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DmaRegion {
    /// Physical (bus) address handed to the device.
    pub paddr: u64,
    /// Virtual address the CPU reads and writes.
    pub vaddr: usize,
    /// Number of 4 KiB pages.
    pub pages: usize,
}

/// Page size for DMA allocations.
pub const PAGE_SIZE: usize = 4096;

/// A device granted to this service.
#[derive(Debug)]
pub struct Device {
    handle: Handle,
    kind: DeviceKind,
    mmio_base: u64,
    irq: Option<u32>,
}

impl Device {
    /// Built by the kernel when it grants the device.
    #[doc(hidden)]
    pub const fn new(handle: Handle, kind: DeviceKind, mmio_base: u64, irq: Option<u32>) -> Self {
        Device {
            handle,
            kind,
            mmio_base,
            irq,
        }
    }

    /// The device kind.
    pub const fn kind(&self) -> DeviceKind {
        self.kind
    }

    /// Physical base of the register window (for logs and diagnostics).
    pub const fn mmio_base(&self) -> u64 {
        self.mmio_base
    }

    /// The interrupt line, if the kernel wired one.
    pub const fn irq(&self) -> Option<u32> {
        self.irq
    }

    /// Map the register window.
    pub fn map_mmio(&self) -> Result<MmioRegion, DeviceError> {
        (ops().mmio_map)(self.handle)
    }

    /// Poll for an interrupt: `Ready` if one fired since the last call,
    /// otherwise the line is unmasked and `cx` woken on the next one.
    pub fn poll_irq(&self, cx: &mut Context<'_>) -> Poll<Result<(), DeviceError>> {
        match (ops().irq_take)(self.handle, cx.waker()) {
            Ok(true) => Poll::Ready(Ok(())),
            Ok(false) => Poll::Pending,
            Err(e) => Poll::Ready(Err(e)),
        }
    }

    /// Wait for the next interrupt (returns at once if one is pending).
    pub async fn wait_irq(&self) -> Result<(), DeviceError> {
        poll_fn(|cx| self.poll_irq(cx)).await
    }

    /// Allocate `pages` zeroed, contiguous pages of DMA memory.
    pub fn dma_alloc(&self, pages: usize) -> Result<DmaRegion, DeviceError> {
        (ops().dma_alloc)(self.handle, pages)
    }

    /// Free memory from [`Device::dma_alloc`].
    pub fn dma_free(&self, region: DmaRegion) {
        (ops().dma_free)(self.handle, region)
    }
}
