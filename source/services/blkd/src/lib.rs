//! blkd: the only service granted the virtio-blk device. It drives the disk
//! with `virtio-drivers` (DMA through the shared HAL in `nexus-virtio`) and
//! serves whole sectors to the clients init linked to it
//! (`nexus-blkclient`'s protocol: info, read, write, flush). It knows nothing
//! about what is stored: the key store (keystored) is a client.
//!
//! Requests are served one at a time, in arrival order per client and
//! round-robin across clients; each is bounded (at most 16 sectors) and the
//! answer is sent before the next request is read, so a client that never
//! reads its answers only blocks itself (its channel fills).

#![no_std]

extern crate alloc;

use alloc::boxed::Box;
use alloc::format;
use alloc::vec::Vec;
use core::future::poll_fn;
use core::ptr::NonNull;
use core::task::Poll;

use nexus_abi::device::{Device, DeviceKind};
use nexus_abi::{Caps, Channel, IpcError, ServiceError, ServiceFuture};
use nexus_blkclient::{encode_answer, BlkError, Request, SECTOR};
use nexus_virtio::NexusHal;
use virtio_drivers::device::blk::VirtIOBlk;
use virtio_drivers::transport::mmio::{MmioTransport, VirtIOHeader};

/// virtio device id of a block device.
pub const VIRTIO_BLK: u32 = 2;

type Disk = VirtIOBlk<NexusHal, MmioTransport<'static>>;

/// Entry point.
pub fn main(caps: Caps) -> ServiceFuture {
    Box::pin(run(caps))
}

fn err(what: &str, e: impl core::fmt::Display) -> ServiceError {
    ServiceError::new(format!("{what}: {e}"))
}

fn open(dev: Device) -> Result<Disk, ServiceError> {
    let mmio = dev.map_mmio().map_err(|e| err("map disk registers", e))?;
    nexus_virtio::install(dev);
    let header = NonNull::new(mmio.vaddr as *mut VirtIOHeader)
        .ok_or_else(|| ServiceError::new("disk window at address 0"))?;
    // SAFETY: the kernel mapped this window for us alone (we hold the only
    // disk grant); it stays mapped for the life of the process.
    let transport = unsafe { MmioTransport::new(header, mmio.len) }
        .map_err(|e| err("virtio-mmio transport", e))?;
    VirtIOBlk::new(transport).map_err(|e| err("virtio-blk init", e))
}

fn serve(disk: Option<&mut Disk>, req: Request) -> Result<Vec<u8>, BlkError> {
    let disk = disk.ok_or(BlkError::NoDisk)?;
    let in_range = |sector: u64, count: usize| {
        sector
            .checked_add(count as u64)
            .is_some_and(|end| end <= disk.capacity())
    };
    match req {
        Request::Info => Ok(disk.capacity().to_le_bytes().to_vec()),
        Request::Read { sector, count } => {
            if !in_range(sector, usize::from(count)) {
                return Err(BlkError::OutOfRange);
            }
            let mut buf = alloc::vec![0u8; usize::from(count) * SECTOR];
            let at = usize::try_from(sector).map_err(|_| BlkError::OutOfRange)?;
            disk.read_blocks(at, &mut buf).map_err(|_| BlkError::Io)?;
            Ok(buf)
        }
        Request::Write { sector, data } => {
            if !in_range(sector, data.len() / SECTOR) {
                return Err(BlkError::OutOfRange);
            }
            let at = usize::try_from(sector).map_err(|_| BlkError::OutOfRange)?;
            disk.write_blocks(at, &data).map_err(|_| BlkError::Io)?;
            Ok(Vec::new())
        }
        Request::Flush => {
            disk.flush().map_err(|_| BlkError::Io)?;
            Ok(Vec::new())
        }
    }
}

async fn run(mut caps: Caps) -> Result<(), ServiceError> {
    let mut disk = match caps.take_device(DeviceKind::Other(VIRTIO_BLK)) {
        Some(dev) => {
            let d = open(dev)?;
            log::info!(
                "blkd: virtio-blk up sectors={} ({} KiB)",
                d.capacity(),
                d.capacity() / 2
            );
            Some(d)
        }
        None => {
            log::warn!("blkd: no disk attached; every request is answered NoDisk");
            None
        }
    };
    if let Err(e) = nexus_samgrclient::register_self(&mut caps, "block device (virtio-blk)").await {
        log::warn!("blkd: samgrd registration refused ({e})");
    }
    let clients: Vec<(&'static str, Channel)> = caps.take_channels("client:");
    let mut open = alloc::vec![true; clients.len()];
    let mut next = 0usize;
    while open.iter().any(|o| *o) {
        // Round-robin: look from the client after the last one served.
        let (i, msg) = poll_fn(|cx| {
            for k in 0..clients.len() {
                let i = (next + k) % clients.len();
                if !open[i] {
                    continue;
                }
                if let Poll::Ready(m) = clients[i].1.poll_recv(cx) {
                    return Poll::Ready((i, m));
                }
            }
            Poll::Pending
        })
        .await;
        next = (i + 1) % clients.len();
        let (name, chan) = &clients[i];
        let answer = match msg {
            Ok(bytes) => Request::decode(&bytes).and_then(|r| serve(disk.as_mut(), r)),
            Err(IpcError::Closed) => {
                log::info!("blkd: client {} gone", name.trim_start_matches("client:"));
                open[i] = false;
                continue;
            }
            Err(e) => return Err(err("client channel", e)),
        };
        if chan.send(&encode_answer(&answer)).await.is_err() {
            open[i] = false;
        }
    }
    Ok(())
}
