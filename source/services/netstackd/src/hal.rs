//! The DMA HAL for `virtio-drivers`.
//!
//! Nexus identity-maps all memory below 4 GiB, so a buffer's virtual address
//! is also the address the device must use: sharing is the identity and
//! needs no bounce buffer. Queue memory comes from the kernel's DMA
//! allocator through the NIC capability, so only the holder of the NIC can
//! obtain it.

use core::ptr::NonNull;

use nexus_abi::device::{Device, DmaRegion};
use virtio_drivers::{BufferDirection, Hal, PhysAddr};

/// The NIC capability, set once before the driver is created. The HAL's
/// functions are associated functions (no `self`), hence the static.
pub static NIC: spin::Once<Device> = spin::Once::new();

/// The HAL type handed to `virtio-drivers`.
pub struct NexusHal;

// SAFETY: allocations are zeroed, page-aligned and physically contiguous
// (kernel DMA allocator); identity mapping makes `paddr == vaddr` correct
// for both queue memory and shared buffers.
unsafe impl Hal for NexusHal {
    fn dma_alloc(pages: usize, _direction: BufferDirection) -> (PhysAddr, NonNull<u8>) {
        let region = NIC.get().map(|nic| nic.dma_alloc(pages));
        match region {
            Some(Ok(r)) => match NonNull::new(r.vaddr as *mut u8) {
                Some(ptr) => (r.paddr as PhysAddr, ptr),
                None => panic!("netstackd: kernel returned a null DMA region"),
            },
            // The trait offers no error path; this only happens while the
            // driver is being created, and the daemon cannot run without it.
            Some(Err(e)) => panic!("netstackd: DMA allocation of {pages} pages failed: {e}"),
            None => panic!("netstackd: DMA requested before the NIC capability was installed"),
        }
    }

    unsafe fn dma_dealloc(paddr: PhysAddr, vaddr: NonNull<u8>, pages: usize) -> i32 {
        match NIC.get() {
            Some(nic) => {
                nic.dma_free(DmaRegion {
                    paddr,
                    vaddr: vaddr.as_ptr() as usize,
                    pages,
                });
                0
            }
            None => -1,
        }
    }

    unsafe fn mmio_phys_to_virt(paddr: PhysAddr, _size: usize) -> NonNull<u8> {
        // Identity-mapped; MMIO windows are never at address 0.
        NonNull::new(paddr as usize as *mut u8).unwrap_or(NonNull::dangling())
    }

    unsafe fn share(buffer: NonNull<[u8]>, _direction: BufferDirection) -> PhysAddr {
        buffer.as_ptr() as *mut u8 as usize as PhysAddr
    }

    unsafe fn unshare(_paddr: PhysAddr, _buffer: NonNull<[u8]>, _direction: BufferDirection) {}
}
