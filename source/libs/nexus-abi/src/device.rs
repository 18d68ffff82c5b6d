//! Device capabilities: MMIO windows, interrupts and DMA memory.
//!
//! The kernel discovers devices (virtio-mmio slots) but drives none of them;
//! it hands each to at most one service as a [`Device`]. Holding a `Device` is
//! the only way to map its registers, wait for its interrupt or obtain DMA
//! memory on its behalf.

use core::future::poll_fn;
use core::task::{Context, Poll};

use crate::rt;
use crate::sys::{code, nr, syscall, Handle, PROT_RW, WAIT_IRQ};

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
    /// An MMIO request outside the device's register window.
    OutsideWindow,
    /// An MMIO request asking for an executable mapping.
    ExecDenied,
}

impl core::fmt::Display for DeviceError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            DeviceError::NotGranted => "device not granted to this service",
            DeviceError::NoIrq => "device has no interrupt line",
            DeviceError::OutOfMemory => "out of DMA memory",
            DeviceError::InvalidArgument => "invalid device request",
            DeviceError::OutsideWindow => "outside the device's register window",
            DeviceError::ExecDenied => "executable device mapping refused",
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
/// Length of a device's register window (one virtio-mmio slot).
pub const WINDOW_LEN: usize = 0x200;

fn from_code(r: i64) -> DeviceError {
    match r {
        code::NOT_GRANTED | code::BAD_HANDLE => DeviceError::NotGranted,
        code::NO_IRQ => DeviceError::NoIrq,
        code::NO_MEMORY => DeviceError::OutOfMemory,
        code::OUTSIDE_WINDOW => DeviceError::OutsideWindow,
        code::EXEC_DENIED => DeviceError::ExecDenied,
        _ => DeviceError::InvalidArgument,
    }
}

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

    /// Map the whole register window (uncached, read-write, never
    /// executable) into this process.
    pub fn map_mmio(&self) -> Result<MmioRegion, DeviceError> {
        self.map_mmio_range(0, WINDOW_LEN, PROT_RW)
    }

    /// Map `[offset, offset + len)` of the window with `prot`
    /// (`sys::PROT_RW`, optionally `sys::PROT_EXEC`, which the kernel
    /// refuses). The kernel refuses and logs anything outside the window.
    pub fn map_mmio_range(
        &self,
        offset: usize,
        len: usize,
        prot: u64,
    ) -> Result<MmioRegion, DeviceError> {
        // SAFETY: no pointer arguments.
        let r = unsafe {
            syscall(
                nr::MMIO_MAP,
                u64::from(self.handle.0),
                offset as u64,
                len as u64,
                prot,
                0,
            )
        };
        if r < 0 {
            return Err(from_code(r));
        }
        Ok(MmioRegion {
            vaddr: r as usize,
            len,
        })
    }

    /// Poll for an interrupt: `Ready` if one fired since the last call,
    /// otherwise the line is unmasked and `cx` woken on the next one.
    pub fn poll_irq(&self, cx: &mut Context<'_>) -> Poll<Result<(), DeviceError>> {
        // SAFETY: no pointer arguments.
        let r = unsafe { syscall(nr::IRQ_TAKE, u64::from(self.handle.0), 0, 0, 0, 0) };
        match r {
            1 => Poll::Ready(Ok(())),
            0 => {
                rt::register(self.handle, WAIT_IRQ, cx.waker());
                Poll::Pending
            }
            e => Poll::Ready(Err(from_code(e))),
        }
    }

    /// Wait for the next interrupt (returns at once if one is pending).
    pub async fn wait_irq(&self) -> Result<(), DeviceError> {
        poll_fn(|cx| self.poll_irq(cx)).await
    }

    /// Allocate `pages` zeroed, physically contiguous pages of DMA memory,
    /// mapped into this process.
    pub fn dma_alloc(&self, pages: usize) -> Result<DmaRegion, DeviceError> {
        let mut out = [0u64; 3];
        // SAFETY: the kernel writes 24 bytes into `out`.
        let r = unsafe {
            syscall(
                nr::DMA_ALLOC,
                u64::from(self.handle.0),
                pages as u64,
                out.as_mut_ptr() as u64,
                0,
                0,
            )
        };
        if r < 0 {
            return Err(from_code(r));
        }
        Ok(DmaRegion {
            paddr: out[0],
            vaddr: out[1] as usize,
            pages: out[2] as usize,
        })
    }

    /// Free memory from [`Device::dma_alloc`].
    pub fn dma_free(&self, region: DmaRegion) {
        // SAFETY: no pointer is dereferenced by the kernel; it checks that
        // the range is this process's DMA memory.
        unsafe {
            syscall(
                nr::DMA_FREE,
                u64::from(self.handle.0),
                region.vaddr as u64,
                region.pages as u64,
                0,
                0,
            )
        };
    }
}
