//! What a process learns at start (`bootinfo` syscall): its name, boot
//! options, channel and device grants. The kernel encodes, the runtime
//! decodes; the decoder is total (errors, never panics) because the bytes
//! cross a trust boundary, even if only from the kernel.
//!
//! Layout (integers little-endian): `u8` version (1); name (`u8` length,
//! bytes); `u8` option count, each (`u8` key length, key, `u16` value length,
//! value); `u8` channel count, each (`u8` role length, role, `u32` handle);
//! `u8` device count, each (`u32` handle, `u32` virtio id, `u64` base, `u32`
//! irq or `u32::MAX`); `u8` entropy flag (0/1). Nothing may follow.

use alloc::string::String;
use alloc::vec::Vec;

/// Encoding version.
pub const VERSION: u8 = 1;
/// Largest encoded boot info.
pub const MAX_LEN: usize = 16 * 1024;

/// A device grant as the process sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceInfo {
    /// Grant handle.
    pub handle: u32,
    /// virtio device id (1 = net).
    pub virtio_id: u32,
    /// Physical base of the register window (diagnostics only; the process
    /// reaches it through `mmio_map`).
    pub mmio_base: u64,
    /// Interrupt line, if wired.
    pub irq: Option<u32>,
}

/// Everything the kernel tells a new process.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BootInfo {
    /// Name in the init table.
    pub name: String,
    /// `<name>.<key>=<value>` boot options, as `(key, value)`.
    pub config: Vec<(String, String)>,
    /// Channel grants: `(role, handle)`.
    pub channels: Vec<(String, u32)>,
    /// Device grants.
    pub devices: Vec<DeviceInfo>,
    /// Whether the process may draw entropy.
    pub entropy: bool,
}

/// Why boot info did not decode or encode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BootInfoError {
    /// Ran out of bytes.
    Truncated,
    /// Unknown version byte.
    Version,
    /// A string is not UTF-8.
    Utf8,
    /// Bytes after the last field.
    Trailing,
    /// A field over its length bound (encode side).
    TooLong,
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], BootInfoError> {
        if self.0.len() < n {
            return Err(BootInfoError::Truncated);
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }
    fn u8(&mut self) -> Result<u8, BootInfoError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, BootInfoError> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Result<u32, BootInfoError> {
        let mut a = [0; 4];
        a.copy_from_slice(self.take(4)?);
        Ok(u32::from_le_bytes(a))
    }
    fn u64(&mut self) -> Result<u64, BootInfoError> {
        let mut a = [0; 8];
        a.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(a))
    }
    fn str(&mut self, len: usize) -> Result<String, BootInfoError> {
        let b = self.take(len)?;
        core::str::from_utf8(b)
            .map(String::from)
            .map_err(|_| BootInfoError::Utf8)
    }
}

fn put_str(out: &mut Vec<u8>, s: &str, wide: bool) -> Result<(), BootInfoError> {
    if wide {
        let n = u16::try_from(s.len()).map_err(|_| BootInfoError::TooLong)?;
        out.extend_from_slice(&n.to_le_bytes());
    } else {
        out.push(u8::try_from(s.len()).map_err(|_| BootInfoError::TooLong)?);
    }
    out.extend_from_slice(s.as_bytes());
    Ok(())
}

fn count(n: usize) -> Result<u8, BootInfoError> {
    u8::try_from(n).map_err(|_| BootInfoError::TooLong)
}

impl BootInfo {
    /// Encode; fails only when a field exceeds its bound.
    pub fn encode(&self) -> Result<Vec<u8>, BootInfoError> {
        let mut out = Vec::new();
        out.push(VERSION);
        put_str(&mut out, &self.name, false)?;
        out.push(count(self.config.len())?);
        for (k, v) in &self.config {
            put_str(&mut out, k, false)?;
            put_str(&mut out, v, true)?;
        }
        out.push(count(self.channels.len())?);
        for (role, h) in &self.channels {
            put_str(&mut out, role, false)?;
            out.extend_from_slice(&h.to_le_bytes());
        }
        out.push(count(self.devices.len())?);
        for d in &self.devices {
            out.extend_from_slice(&d.handle.to_le_bytes());
            out.extend_from_slice(&d.virtio_id.to_le_bytes());
            out.extend_from_slice(&d.mmio_base.to_le_bytes());
            out.extend_from_slice(&d.irq.unwrap_or(u32::MAX).to_le_bytes());
        }
        out.push(u8::from(self.entropy));
        if out.len() > MAX_LEN {
            return Err(BootInfoError::TooLong);
        }
        Ok(out)
    }

    /// Decode; total.
    pub fn decode(bytes: &[u8]) -> Result<BootInfo, BootInfoError> {
        let mut r = Reader(bytes);
        if r.u8()? != VERSION {
            return Err(BootInfoError::Version);
        }
        let n = r.u8()? as usize;
        let name = r.str(n)?;
        let mut config = Vec::new();
        for _ in 0..r.u8()? {
            let kl = r.u8()? as usize;
            let k = r.str(kl)?;
            let vl = r.u16()? as usize;
            config.push((k, r.str(vl)?));
        }
        let mut channels = Vec::new();
        for _ in 0..r.u8()? {
            let rl = r.u8()? as usize;
            let role = r.str(rl)?;
            channels.push((role, r.u32()?));
        }
        let mut devices = Vec::new();
        for _ in 0..r.u8()? {
            let handle = r.u32()?;
            let virtio_id = r.u32()?;
            let mmio_base = r.u64()?;
            let irq = r.u32()?;
            devices.push(DeviceInfo {
                handle,
                virtio_id,
                mmio_base,
                irq: (irq != u32::MAX).then_some(irq),
            });
        }
        let entropy = r.u8()? != 0;
        if !r.0.is_empty() {
            return Err(BootInfoError::Trailing);
        }
        Ok(BootInfo {
            name,
            config,
            channels,
            devices,
            entropy,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;
    use alloc::vec;

    fn sample() -> BootInfo {
        BootInfo {
            name: "netstackd".to_string(),
            config: vec![("mode".to_string(), "dual-node".to_string())],
            channels: vec![("client:dsoftbusd".to_string(), 7)],
            devices: vec![DeviceInfo {
                handle: 9,
                virtio_id: 1,
                mmio_base: 0xfeb0_2e00,
                irq: Some(47),
            }],
            entropy: true,
        }
    }

    #[test]
    fn round_trip() {
        let b = sample();
        let bytes = b.encode().unwrap_or_default();
        assert_eq!(BootInfo::decode(&bytes), Ok(b));
    }

    #[test]
    fn every_truncation_is_an_error() {
        let bytes = sample().encode().unwrap_or_default();
        for n in 0..bytes.len() {
            assert_eq!(
                BootInfo::decode(&bytes[..n]),
                Err(BootInfoError::Truncated),
                "{n}"
            );
        }
        let mut long = bytes.clone();
        long.push(0);
        assert_eq!(BootInfo::decode(&long), Err(BootInfoError::Trailing));
    }

    #[test]
    fn over_bound_fields_do_not_encode() {
        let mut b = sample();
        b.name = "x".repeat(300);
        assert_eq!(b.encode(), Err(BootInfoError::TooLong));
    }

    proptest::proptest! {
        #[test]
        fn decode_is_total(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
            let _ = BootInfo::decode(&bytes);
        }
    }
}
