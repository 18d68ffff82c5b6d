use embedded_storage_async::nor_flash::{
    ErrorType, MultiwriteNorFlash, NorFlash, NorFlashError, NorFlashErrorKind, ReadNorFlash,
};
use sequential_storage::cache::{Cache, Uncached};
use sequential_storage::map::{MapConfig, MapStorage};
use std::hint::black_box;
#[derive(Debug)]
struct E;
impl NorFlashError for E {
    fn kind(&self) -> NorFlashErrorKind {
        NorFlashErrorKind::Other
    }
}
struct Mem(Vec<u8>);
impl ErrorType for Mem {
    type Error = E;
}
impl ReadNorFlash for Mem {
    const READ_SIZE: usize = 1;
    async fn read(&mut self, o: u32, b: &mut [u8]) -> Result<(), E> {
        let o = o as usize;
        b.copy_from_slice(self.0.get(o..o + b.len()).ok_or(E)?);
        Ok(())
    }
    fn capacity(&self) -> usize {
        self.0.len()
    }
}
impl NorFlash for Mem {
    const WRITE_SIZE: usize = 4;
    const ERASE_SIZE: usize = 4096;
    async fn erase(&mut self, f: u32, t: u32) -> Result<(), E> {
        for b in self.0.get_mut(f as usize..t as usize).ok_or(E)? {
            *b = 0xff
        }
        Ok(())
    }
    async fn write(&mut self, o: u32, b: &[u8]) -> Result<(), E> {
        let o = o as usize;
        self.0.get_mut(o..o + b.len()).ok_or(E)?.copy_from_slice(b);
        Ok(())
    }
}
impl MultiwriteNorFlash for Mem {}
// minimal block_on (no futures crate): poll with a no-op waker
fn block_on<F: std::future::Future>(f: F) -> F::Output {
    let w = std::task::Waker::noop();
    let mut cx = std::task::Context::from_waker(w);
    let mut f = std::pin::pin!(f);
    loop {
        if let std::task::Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
    }
}
fn main() {
    block_on(async {
        let d = Mem(vec![0xffu8; black_box(65536)]);
        let mut m: MapStorage<Vec<u8>, Mem, Cache<Uncached, Uncached, Uncached, Vec<u8>>> =
            MapStorage::new(d, MapConfig::new(0..65536), Cache::new_uncached());
        let mut buf = vec![0u8; 4200];
        let _ = m
            .store_item(
                &mut buf,
                &black_box(b"k".to_vec()),
                &black_box(&[1u8; 32][..]),
            )
            .await;
        let _ = m.remove_item(&mut buf, &black_box(b"x".to_vec())).await;
        let r: Result<Option<&[u8]>, _> = m.fetch_item(&mut buf, &b"k".to_vec()).await;
        println!("{:?}", r.map(|o| o.map(|v| v.len())));
    });
}
