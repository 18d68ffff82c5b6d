//! put/get on the simulated disk (criterion). `cargo bench -p nexus-recstore`.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use nexus_recstore::sim::SimDisk;
use nexus_recstore::Store;

fn bench(c: &mut Criterion) {
    // The keystore's expected shape: one 32-byte identity key and 16 pins.
    let mut store = Store::format(SimDisk::new(2048)).expect("format");
    store.put(b"identity.x25519", &[7u8; 32]).expect("put");
    for i in 0..16u8 {
        store.put(&[b'p', i], &[i; 40]).expect("put");
    }
    let mut i = 0u8;
    c.bench_function("put 32 B (17 records)", |b| {
        b.iter(|| {
            i = i.wrapping_add(1);
            store.put(b"identity.x25519", &[i; 32]).expect("put");
        })
    });
    c.bench_function("get (17 records)", |b| {
        b.iter(|| black_box(store.get(black_box(b"identity.x25519"))))
    });
    let disk = store.into_device();
    c.bench_function("open (17 records)", |b| {
        b.iter_batched(
            || disk.clone(),
            |d| {
                let (s, _) = Store::open(d).expect("open");
                black_box(s.len())
            },
            BatchSize::LargeInput,
        )
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
