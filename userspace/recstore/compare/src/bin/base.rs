use std::hint::black_box;
fn main() {
    let mut v = vec![0u8; black_box(4096)];
    v[black_box(3)] = 1;
    println!("{}", black_box(&v).len());
}
