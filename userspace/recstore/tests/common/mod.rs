#![allow(dead_code)]

use std::collections::BTreeMap;

use nexus_recstore::sim::SimDisk;
use nexus_recstore::{Error, Store};

pub type Model = BTreeMap<Vec<u8>, Vec<u8>>;

/// One store operation over a small key space.
#[derive(Debug, Clone)]
pub enum Op {
    Put { key: u8, len: usize, fill: u8 },
    Delete { key: u8 },
}

/// Key `i`: short names plus one maximum-length key.
pub fn key(i: u8) -> Vec<u8> {
    if i == 7 {
        vec![b'k'; nexus_recstore::MAX_KEY_LEN]
    } else {
        format!("key-{i}").into_bytes()
    }
}

pub fn value(len: usize, fill: u8) -> Vec<u8> {
    (0..len).map(|j| fill.wrapping_add(j as u8)).collect()
}

pub fn apply_model(m: &mut Model, op: &Op) {
    match *op {
        Op::Put { key: k, len, fill } => {
            m.insert(key(k), value(len, fill));
        }
        Op::Delete { key: k } => {
            m.remove(&key(k));
        }
    }
}

pub fn apply_store<D: nexus_recstore::BlockDevice>(
    s: &mut Store<D>,
    op: &Op,
) -> Result<(), Error<D::Error>> {
    match *op {
        Op::Put { key: k, len, fill } => s.put(&key(k), &value(len, fill)),
        Op::Delete { key: k } => s.delete(&key(k)).map(|_| ()),
    }
}

pub fn contents<D: nexus_recstore::BlockDevice>(s: &Store<D>) -> Model {
    s.iter().map(|(k, v)| (k.to_vec(), v.to_vec())).collect()
}

/// Disk size used by the power-cut tests: 2 × 64 sectors of slots.
pub const DISK_SECTORS: u64 = 4 + 2 * 64;

/// A formatted disk holding the result of `ops` (no faults).
pub fn disk_with(ops: &[Op]) -> (SimDisk, Model) {
    let mut s = Store::format(SimDisk::new(DISK_SECTORS)).expect("format");
    let mut m = Model::new();
    for op in ops {
        apply_store(&mut s, op).expect("op");
        apply_model(&mut m, op);
    }
    (s.into_device(), m)
}
