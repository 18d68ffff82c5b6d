//! The block-device seam: fixed 512-byte sectors, errors returned, never panics.

use core::fmt;

/// Size of one sector in bytes. Every transfer is a whole number of sectors.
pub const SECTOR_SIZE: usize = 512;

/// A disk of fixed-size sectors (virtio-blk in the OS, [`crate::sim::SimDisk`] in tests).
///
/// Contract the store relies on:
/// - `read`/`write` move `buf.len() / SECTOR_SIZE` whole sectors starting at sector
///   `first`; the store only passes non-empty buffers whose length is a multiple of
///   [`SECTOR_SIZE`] and ranges inside [`sector_count`](Self::sector_count). A device
///   returns an error (it must not panic) for anything else.
/// - A write may be torn by a power cut: any sector being written may end up with part
///   of its bytes new and part old, and sectors of one multi-sector write may land in
///   any subset. Writes issued before a successful `flush` are durable.
/// - Any error is reported; the store then refuses further writes until reopened.
pub trait BlockDevice {
    /// The device's error type.
    type Error: fmt::Debug;

    /// Number of sectors on the device.
    fn sector_count(&self) -> u64;

    /// Reads whole sectors starting at `first` into `buf`.
    fn read(&mut self, first: u64, buf: &mut [u8]) -> Result<(), Self::Error>;

    /// Writes whole sectors starting at `first` from `buf`.
    fn write(&mut self, first: u64, buf: &[u8]) -> Result<(), Self::Error>;

    /// Makes every write issued so far durable (virtio-blk `VIRTIO_BLK_T_FLUSH`).
    fn flush(&mut self) -> Result<(), Self::Error>;
}

impl<T: BlockDevice + ?Sized> BlockDevice for &mut T {
    type Error = T::Error;

    fn sector_count(&self) -> u64 {
        (**self).sector_count()
    }

    fn read(&mut self, first: u64, buf: &mut [u8]) -> Result<(), Self::Error> {
        (**self).read(first, buf)
    }

    fn write(&mut self, first: u64, buf: &[u8]) -> Result<(), Self::Error> {
        (**self).write(first, buf)
    }

    fn flush(&mut self) -> Result<(), Self::Error> {
        (**self).flush()
    }
}
