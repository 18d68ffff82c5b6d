use nexus_recstore::{BlockDevice, Store};
use std::hint::black_box;
struct Mem(Vec<u8>);
impl BlockDevice for Mem {
    type Error = ();
    fn sector_count(&self) -> u64 {
        (self.0.len() / 512) as u64
    }
    fn read(&mut self, f: u64, b: &mut [u8]) -> Result<(), ()> {
        let o = f as usize * 512;
        b.copy_from_slice(self.0.get(o..o + b.len()).ok_or(())?);
        Ok(())
    }
    fn write(&mut self, f: u64, b: &[u8]) -> Result<(), ()> {
        let o = f as usize * 512;
        self.0.get_mut(o..o + b.len()).ok_or(())?.copy_from_slice(b);
        Ok(())
    }
    fn flush(&mut self) -> Result<(), ()> {
        Ok(())
    }
}
fn main() {
    let d = Mem(vec![0u8; black_box(65536)]);
    let d = match Store::open(d) {
        Ok((s, _)) => s.into_device(),
        Err(_) => Mem(vec![0u8; 65536]),
    };
    let mut s = match Store::format(d) {
        Ok(s) => s,
        Err(_) => return,
    };
    let _ = s.put(black_box(b"k"), black_box(&[1u8; 32]));
    let _ = s.delete(black_box(b"x"));
    println!("{:?}", s.get(b"k").map(|v| v.len()));
}
