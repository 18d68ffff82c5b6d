//! Sectors written per update and behaviour on damaged disks: sequential-storage
//! (Map) over a NOR-flash adapter on 512-byte sectors. See docs/storage.md.
use embedded_storage_async::nor_flash::{
    ErrorType, NorFlash, NorFlashError, NorFlashErrorKind, ReadNorFlash,
};
use sequential_storage::cache::{Cache, Uncached};
type NoCache = Cache<Uncached, Uncached, Uncached, u8>;
use sequential_storage::map::{MapConfig, MapStorage};
use std::collections::BTreeSet;

#[derive(Debug)]
struct E;
impl NorFlashError for E {
    fn kind(&self) -> NorFlashErrorKind {
        NorFlashErrorKind::Other
    }
}

struct Dev {
    mem: Vec<u8>,
    sectors_written: u64,
    write_calls: u64,
}
impl ErrorType for Dev {
    type Error = E;
}
impl ReadNorFlash for Dev {
    const READ_SIZE: usize = 1;
    async fn read(&mut self, off: u32, b: &mut [u8]) -> Result<(), E> {
        let o = off as usize;
        b.copy_from_slice(&self.mem[o..o + b.len()]);
        Ok(())
    }
    fn capacity(&self) -> usize {
        self.mem.len()
    }
}
impl NorFlash for Dev {
    const WRITE_SIZE: usize = WS;
    const ERASE_SIZE: usize = 4096;
    async fn erase(&mut self, from: u32, to: u32) -> Result<(), E> {
        for b in &mut self.mem[from as usize..to as usize] {
            *b = 0xff;
        }
        self.sectors_written += ((to - from) / 512) as u64;
        self.write_calls += 1;
        Ok(())
    }
    async fn write(&mut self, off: u32, b: &[u8]) -> Result<(), E> {
        let o = off as usize;
        // a block device rewrites whole sectors: count each sector touched
        let s: BTreeSet<usize> = (o..o + b.len()).map(|x| x / 512).collect();
        self.sectors_written += s.len() as u64;
        self.write_calls += 1;
        for (i, x) in b.iter().enumerate() {
            self.mem[o + i] &= *x;
        }
        Ok(())
    }
}
const WS: usize = 4;

fn main() {
    futures::executor::block_on(async {
        for &(vlen, keys) in &[(32usize, 1usize), (32, 16), (1024, 16)] {
            let dev = Dev {
                mem: vec![0xff; 64 * 1024],
                sectors_written: 0,
                write_calls: 0,
            };
            let mut map: MapStorage<u8, Dev, NoCache> =
                MapStorage::new(dev, MapConfig::new(0..64 * 1024), NoCache::new_uncached());
            let mut buf = vec![0u8; 4096 + 64];
            let n = 1000;
            for i in 0..n {
                let v = vec![(i % 251) as u8; vlen];
                map.store_item(&mut buf, &((i % keys) as u8), &&v[..])
                    .await
                    .unwrap();
            }
            let dev = map.destroy().0;
            println!("sequential-storage WRITE_SIZE={WS} value={vlen}B keys={keys}: {:.2} sectors written per store ({} write calls/store)",
                dev.sectors_written as f64 / n as f64, dev.write_calls as f64 / n as f64);
        }
        // corruption: flip a byte in the newest item's data; does fetch notice?
        let dev = Dev {
            mem: vec![0xff; 64 * 1024],
            sectors_written: 0,
            write_calls: 0,
        };
        let mut map: MapStorage<u8, Dev, NoCache> =
            MapStorage::new(dev, MapConfig::new(0..64 * 1024), NoCache::new_uncached());
        let mut buf = vec![0u8; 4096];
        map.store_item(&mut buf, &1u8, &&[1u8; 32][..])
            .await
            .unwrap();
        map.store_item(&mut buf, &1u8, &&[2u8; 32][..])
            .await
            .unwrap();
        let mut dev = map.destroy().0;
        let pos = dev.mem.iter().rposition(|&b| b == 2).unwrap();
        dev.mem[pos] ^= 0x01;
        let mut map: MapStorage<u8, Dev, NoCache> =
            MapStorage::new(dev, MapConfig::new(0..64 * 1024), NoCache::new_uncached());
        let r: Result<Option<&[u8]>, _> = map.fetch_item(&mut buf, &1u8).await;
        println!(
            "after a bit flip in the newest value: fetch -> {:?}",
            r.map(|o| o.map(|v| v[0]))
        );
        // foreign disk: random bytes
        let mut mem = vec![0u8; 64 * 1024];
        let mut x = 12345u32;
        for b in &mut mem {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            *b = x as u8;
        }
        let dev = Dev {
            mem,
            sectors_written: 0,
            write_calls: 0,
        };
        let mut map: MapStorage<u8, Dev, NoCache> =
            MapStorage::new(dev, MapConfig::new(0..64 * 1024), NoCache::new_uncached());
        let r: Result<Option<&[u8]>, _> = map.fetch_item(&mut buf, &1u8).await;
        println!(
            "random-bytes disk: fetch -> {:?}",
            r.map(|o| o.map(|v| v.len()))
        );
        let dev = Dev {
            mem: vec![0u8; 64 * 1024],
            sectors_written: 0,
            write_calls: 0,
        };
        let mut map: MapStorage<u8, Dev, NoCache> =
            MapStorage::new(dev, MapConfig::new(0..64 * 1024), NoCache::new_uncached());
        let r: Result<Option<&[u8]>, _> = map.fetch_item(&mut buf, &1u8).await;
        println!("zeroed disk: fetch -> {:?}", r.map(|o| o.map(|v| v.len())));
    });
}
