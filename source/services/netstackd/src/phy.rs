//! virtio-net as a `smoltcp::phy::Device`.
//!
//! Received frames are copied out of the virtio receive buffer and the buffer
//! is handed straight back to the device, so the receive ring never runs dry
//! while smoltcp holds a frame. Transmit writes into a fresh buffer and hands
//! it to the device.

use alloc::vec::Vec;

use smoltcp::phy::{self, DeviceCapabilities, Medium};
use smoltcp::time::Instant;
use virtio_drivers::device::net::VirtIONet;
use virtio_drivers::transport::mmio::MmioTransport;

use nexus_virtio::NexusHal;

/// Virtqueue depth.
pub const QUEUE_SIZE: usize = 16;
/// Receive buffer size: an Ethernet frame plus the virtio-net header.
pub const RX_BUF_LEN: usize = 2048;
/// MTU (Ethernet payload + header) reported to smoltcp.
pub const MTU: usize = 1514;

/// The driver type.
pub type Net = VirtIONet<NexusHal, MmioTransport<'static>, QUEUE_SIZE>;

/// Frame counters, for the status line.
#[derive(Default, Debug, Clone, Copy)]
pub struct Counters {
    /// Frames received.
    pub rx: u64,
    /// Frames sent.
    pub tx: u64,
    /// Frames the device refused to send.
    pub tx_errors: u64,
    /// Receive buffers the device refused to take back.
    pub rx_errors: u64,
}

/// The NIC as smoltcp sees it.
pub struct VirtioPhy {
    net: Net,
    /// Counters since start.
    pub counters: Counters,
}

impl VirtioPhy {
    /// Wrap a driver.
    pub fn new(net: Net) -> Self {
        VirtioPhy {
            net,
            counters: Counters::default(),
        }
    }

    /// The driver (for interrupt acknowledgement).
    pub fn net(&mut self) -> &mut Net {
        &mut self.net
    }
}

/// A received frame.
pub struct RxToken(Vec<u8>);

/// Permission to send one frame.
pub struct TxToken<'a> {
    net: &'a mut Net,
    counters: &'a mut Counters,
}

impl phy::RxToken for RxToken {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(&self.0)
    }
}

impl phy::TxToken for TxToken<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut buf = self.net.new_tx_buffer(len);
        let r = f(buf.packet_mut());
        match self.net.send(buf) {
            Ok(()) => self.counters.tx += 1,
            Err(_) => self.counters.tx_errors += 1,
        }
        r
    }
}

impl phy::Device for VirtioPhy {
    type RxToken<'a> = RxToken;
    type TxToken<'a> = TxToken<'a>;

    fn receive(&mut self, _ts: Instant) -> Option<(RxToken, TxToken<'_>)> {
        if !self.net.can_send() {
            return None;
        }
        let rx = self.net.receive().ok()?;
        let frame = rx.packet().to_vec();
        if self.net.recycle_rx_buffer(rx).is_err() {
            self.counters.rx_errors += 1;
        }
        self.counters.rx += 1;
        Some((
            RxToken(frame),
            TxToken {
                net: &mut self.net,
                counters: &mut self.counters,
            },
        ))
    }

    fn transmit(&mut self, _ts: Instant) -> Option<TxToken<'_>> {
        let ready = self.net.can_send();
        ready.then_some(TxToken {
            net: &mut self.net,
            counters: &mut self.counters,
        })
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ethernet;
        caps.max_transmission_unit = MTU;
        caps.max_burst_size = Some(QUEUE_SIZE);
        caps
    }
}
