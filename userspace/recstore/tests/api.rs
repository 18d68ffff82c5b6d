//! Bounds, no-op writes, device errors, and the write-cost figures quoted in
//! docs/reliability.md (`--nocapture`).

use nexus_recstore::sim::{PowerCut, SimDisk, Tear};
use nexus_recstore::{
    Error, OpenError, Store, MAX_KEY_LEN, MAX_RECORDS, MAX_SLOT_SECTORS, MAX_VALUE_LEN,
};

#[test]
fn bounds_are_enforced() {
    let mut s = Store::format(SimDisk::new(4 + 2 * 256)).expect("format");
    assert_eq!(s.put(b"", b"v"), Err(Error::InvalidKey));
    assert_eq!(s.put(&[1; MAX_KEY_LEN + 1], b"v"), Err(Error::InvalidKey));
    assert_eq!(
        s.put(b"k", &vec![0; MAX_VALUE_LEN + 1]),
        Err(Error::ValueTooLong)
    );
    s.put(&[1; MAX_KEY_LEN], &vec![9; MAX_VALUE_LEN])
        .expect("max key and value");
    assert_eq!(
        s.get(&[1; MAX_KEY_LEN]).map(<[u8]>::len),
        Some(MAX_VALUE_LEN)
    );
    assert_eq!(s.capacity_bytes(), MAX_SLOT_SECTORS as usize * 512);
    // Fill to MAX_RECORDS with small values.
    for i in 1..MAX_RECORDS {
        s.put(format!("r{i}").as_bytes(), b"x").expect("put");
    }
    assert_eq!(s.len(), MAX_RECORDS);
    assert_eq!(s.put(b"one-more", b"x"), Err(Error::TooManyRecords));
    // replacing an existing key is still fine at the limit
    s.put(b"r1", b"y").expect("replace");
    let (s2, _) = Store::open(s.into_device()).expect("open");
    assert_eq!(s2.len(), MAX_RECORDS);
    assert_eq!(s2.get(b"r1"), Some(&b"y"[..]));
}

#[test]
fn full_slot_is_refused_and_nothing_changes() {
    // 2 sectors per slot: 1 KiB of records.
    let mut s = Store::format(SimDisk::new(4 + 4)).expect("format");
    s.put(b"a", &[1; 600]).expect("fits");
    assert_eq!(s.put(b"b", &[2; 600]), Err(Error::Full));
    assert_eq!(s.get(b"b"), None);
    assert_eq!(s.len(), 1);
    let (s, _) = Store::open(s.into_device()).expect("open");
    assert_eq!(s.len(), 1);
}

#[test]
fn no_op_writes_write_nothing() {
    let mut s = Store::format(SimDisk::new(64)).expect("format");
    s.put(b"k", b"v").expect("put");
    let before = s.stats();
    s.put(b"k", b"v").expect("same value");
    assert_eq!(s.delete(b"absent"), Ok(false));
    assert_eq!(s.stats(), before);
    assert_eq!(s.delete(b"k"), Ok(true));
    assert_eq!(s.get(b"k"), None);
}

#[test]
fn device_error_poisons_until_reopen() {
    let mut s = Store::format(SimDisk::new(64)).expect("format");
    s.put(b"k", b"v1").expect("put");
    let mut d = s.into_device();
    d.arm(PowerCut {
        at_write: 1,
        tear: Tear::Old,
        lose_unflushed: None,
    });
    let (mut s, _) = Store::open(d).expect("open");
    assert!(matches!(s.put(b"k", b"v2"), Err(Error::Device(_))));
    // the in-memory view is the old one
    assert_eq!(s.get(b"k"), Some(&b"v1"[..]));
    assert_eq!(s.put(b"x", b"y"), Err(Error::Poisoned));
    assert_eq!(s.delete(b"k"), Err(Error::Poisoned));
    let mut d = s.into_device();
    d.restart();
    let (mut s, _) = Store::open(d).expect("reopen");
    assert_eq!(s.get(b"k"), Some(&b"v1"[..]));
    s.put(b"k", b"v3").expect("works again");
}

#[test]
fn device_errors_on_open_are_reported() {
    let mut d = SimDisk::new(64);
    d.arm(PowerCut {
        at_write: 0,
        tear: Tear::Old,
        lose_unflushed: None,
    });
    // power is on until a write; make it off by failing a format
    assert!(Store::format(&mut d).is_err());
    assert!(matches!(Store::open(&mut d), Err(OpenError::Device(_))));
}

/// Sectors written and flushes per put, for the shapes the OS will use.
#[test]
fn sectors_per_put_figures() {
    let shapes: &[(&str, usize, usize)] = &[
        ("keystored: 1 key of 32 B", 1, 32),
        ("17 records of 36 B (identity + 16 pins)", 17, 36),
        ("64 records of 100 B", 64, 100),
        ("16 records of 1 KiB", 16, 1024),
        ("8 records of 4 KiB", 8, 4096),
    ];
    for &(name, n, vlen) in shapes {
        let mut s = Store::format(SimDisk::new(4 + 2 * 256)).expect("format");
        for i in 0..n {
            s.put(format!("key{i:03}").as_bytes(), &vec![i as u8; vlen])
                .expect("fill");
        }
        let before = s.stats();
        let rounds = 20u64;
        for r in 0..rounds {
            s.put(b"key000", &vec![(r + 1) as u8; vlen]).expect("put");
        }
        let after = s.stats();
        let per_put = (after.sectors_written - before.sectors_written) as f64 / rounds as f64;
        let flushes = (after.flushes - before.flushes) as f64 / rounds as f64;
        eprintln!(
            "write cost: {name}: image {} B, {per_put:.1} sectors and {flushes:.0} flushes per put ({:.1}x the record's own sectors)",
            s.used_bytes(),
            per_put / (3 + 6 + vlen).div_ceil(512) as f64
        );
    }
}
