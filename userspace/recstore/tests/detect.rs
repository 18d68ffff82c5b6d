//! Damage no power cut can cause must be detected: bit rot in every written sector,
//! foreign disks, empty disks. `open` never writes to a disk it refuses.

mod common;

use common::*;
use nexus_recstore::sim::SimDisk;
use nexus_recstore::{OpenError, StaleSlot, Store, SECTOR_SIZE};

/// Two valid slots, multi-sector payloads in both.
fn two_slot_state() -> Vec<Op> {
    vec![
        Op::Put {
            key: 0,
            len: 32,
            fill: 1,
        },
        Op::Put {
            key: 1,
            len: 900,
            fill: 2,
        },
        Op::Put {
            key: 7,
            len: 1300,
            fill: 3,
        },
        Op::Put {
            key: 2,
            len: 200,
            fill: 4,
        },
    ]
}

/// Sectors holding data: 4 headers + the written payload sectors of both slots.
fn written_sectors(disk: &SimDisk) -> Vec<u64> {
    let slot_sectors = (DISK_SECTORS - 4) / 2;
    let mut v: Vec<u64> = (0..4).collect();
    for slot in 0..2u64 {
        let start = 4 + slot * slot_sectors;
        for i in start..start + slot_sectors {
            if disk.sector(i).is_some_and(|s| s.iter().any(|&b| b != 0)) {
                v.push(i);
            }
        }
    }
    v
}

#[derive(Default, Debug)]
struct Tally {
    refused: u64,
    repaired: u64,
    stale_damaged: u64,
}

/// Opens a damaged copy of `disk` and checks the outcome: refused as corrupt, or
/// opened to exactly `model` with the damage reported. Never foreign/empty, never a
/// silent change.
fn check_damaged(disk: &SimDisk, model: &Model, what: &str, t: &mut Tally) {
    let mut d = disk.clone();
    let w0 = d.sectors_written();
    match Store::open(&mut d) {
        Err(OpenError::Corrupt(_)) => {
            assert_eq!(d.sectors_written(), w0, "{what}: refusing open wrote");
            t.refused += 1;
        }
        Ok((s, report)) => {
            assert_eq!(&contents(&s), model, "{what}: opened to a different state");
            assert!(!report.clean(), "{what}: damage not reported ({report:?})");
            if report.header_repairs > 0 {
                t.repaired += 1;
            } else {
                assert_eq!(report.stale, StaleSlot::Damaged);
                t.stale_damaged += 1;
            }
        }
        Err(e) => panic!("{what}: {e:?}"),
    }
}

#[test]
fn bit_rot_in_every_written_sector_is_detected() {
    let (disk, model) = disk_with(&two_slot_state());
    let (_, r) = Store::open(disk.clone()).expect("open");
    assert!(r.clean());
    assert_eq!(r.stale, StaleSlot::Intact);
    let sectors = written_sectors(&disk);
    let mut t = Tally::default();
    let mut cases = 0;
    for &sec in &sectors {
        // one bit in every byte (rotating the bit position)
        for byte in 0..SECTOR_SIZE {
            let mut d = disk.clone();
            d.flip_bit(sec, byte * 8 + byte % 8);
            check_damaged(&d, &model, &format!("sector {sec} byte {byte}"), &mut t);
            cases += 1;
        }
        // the whole sector replaced by noise
        let mut d = disk.clone();
        let mut noise = [0u8; SECTOR_SIZE];
        let mut x = sec.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        for b in noise.iter_mut() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *b = x as u8;
        }
        d.set_sector(sec, &noise);
        check_damaged(&d, &model, &format!("sector {sec} noise"), &mut t);
        // the whole sector zeroed
        let mut d = disk.clone();
        d.set_sector(sec, &[0u8; SECTOR_SIZE]);
        check_damaged(&d, &model, &format!("sector {sec} zeroed"), &mut t);
        cases += 2;
    }
    eprintln!(
        "bit rot: {} written sectors, {cases} damaged disks: {} refused (Corrupt), {} header copies repaired, {} stale-slot damage reported; 0 silent",
        sectors.len(),
        t.refused,
        t.repaired,
        t.stale_damaged
    );
    assert_eq!(t.refused + t.repaired + t.stale_damaged, cases);
}

#[test]
fn newest_payload_rot_is_refused_not_rolled_back() {
    let (disk, _) = disk_with(&two_slot_state());
    // The newest commit (4 ops after format: seq 5) is in slot A (format wrote A).
    let (_, r) = Store::open(disk.clone()).expect("open");
    assert_eq!(r.seq, 5);
    let first_payload = 4 + u64::from(r.slot) * ((DISK_SECTORS - 4) / 2);
    let mut d = disk.clone();
    d.flip_bit(first_payload, 100);
    assert!(matches!(
        Store::open(d),
        Err(OpenError::Corrupt(
            nexus_recstore::Corruption::PayloadChecksum
        ))
    ));
}

#[test]
fn empty_disk_is_empty_and_never_formatted_by_open() {
    for sectors in [6u64, 132, 4096] {
        let mut d = SimDisk::new(sectors);
        assert!(matches!(Store::open(&mut d), Err(OpenError::Empty)));
        assert_eq!(d.sectors_written(), 0);
        assert!(d.to_bytes().iter().all(|&b| b == 0));
        // format is explicit, then open works
        let s = Store::format(&mut d).expect("format");
        assert!(s.is_empty());
        let (s, r) = Store::open(&mut d).expect("open");
        assert!(s.is_empty() && r.clean() && r.seq == 1);
    }
    assert!(matches!(
        Store::open(SimDisk::new(5)),
        Err(OpenError::TooSmall)
    ));
}

#[test]
fn foreign_disks_are_foreign() {
    let mut cases = 0;
    // random bytes
    for seed in 1..=64u64 {
        let mut x = seed.wrapping_mul(0x2545_f491_4f6c_dd1d);
        let bytes: Vec<u8> = (0..DISK_SECTORS as usize * SECTOR_SIZE)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        let mut d = SimDisk::from_bytes(&bytes);
        assert!(
            matches!(Store::open(&mut d), Err(OpenError::Foreign)),
            "seed {seed}"
        );
        assert_eq!(d.to_bytes(), bytes, "open changed a foreign disk");
        cases += 1;
    }
    // A store written by another program with the same layout but another magic.
    let (disk, _) = disk_with(&two_slot_state());
    let mut bytes = disk.to_bytes();
    for s in 0..4 {
        bytes[s * SECTOR_SIZE..s * SECTOR_SIZE + 8].copy_from_slice(b"OTHERDB1");
        bytes[s * SECTOR_SIZE + 500..s * SECTOR_SIZE + 508].copy_from_slice(b"OTHERDB1");
    }
    assert!(matches!(
        Store::open(SimDisk::from_bytes(&bytes)),
        Err(OpenError::Foreign)
    ));
    cases += 1;
    // An MBR with boot code and a partition table; a bare ext-style superblock at 1 KiB.
    let mut mbr = vec![0u8; DISK_SECTORS as usize * SECTOR_SIZE];
    for (i, b) in mbr[..440].iter_mut().enumerate() {
        *b = (i as u8).wrapping_mul(7) | 1;
    }
    mbr[446..462].copy_from_slice(&[
        0x80, 1, 1, 0, 0x83, 0xfe, 0xff, 0xff, 63, 0, 0, 0, 0, 0x10, 0, 0,
    ]);
    mbr[510] = 0x55;
    mbr[511] = 0xaa;
    assert!(matches!(
        Store::open(SimDisk::from_bytes(&mbr)),
        Err(OpenError::Foreign)
    ));
    let mut ext = vec![0u8; DISK_SECTORS as usize * SECTOR_SIZE];
    ext[1024..1028].copy_from_slice(&1000u32.to_le_bytes());
    ext[1024 + 56..1024 + 58].copy_from_slice(&0xef53u16.to_le_bytes());
    assert!(matches!(
        Store::open(SimDisk::from_bytes(&ext)),
        Err(OpenError::Foreign)
    ));
    cases += 2;
    // Our header layout with a future version: refused by version, not as foreign.
    let mut d = disk.clone();
    for s in 0..4u64 {
        let mut sec = d.sector(s).expect("sector");
        sec[8] = 2;
        let crc = crc::Crc::<u32>::new(&crc::CRC_32_ISCSI).checksum(&sec[..508]);
        sec[508..].copy_from_slice(&crc.to_le_bytes());
        d.set_sector(s, &sec);
    }
    assert!(matches!(
        Store::open(d),
        Err(OpenError::UnsupportedVersion(2))
    ));
    eprintln!("foreign: {cases} disks (64 random, other magic, MBR, ext superblock) -> Foreign");
}

#[test]
fn slots_swapped_or_duplicated_are_corrupt() {
    // Copy slot A's header sectors over slot B's: slot/copy fields no longer match
    // their position, so B has only damaged-ours copies.
    let (disk, _) = disk_with(&two_slot_state());
    let mut d = disk.clone();
    let a0 = d.sector(0).expect("s");
    let a1 = d.sector(1).expect("s");
    d.set_sector(2, &a0);
    d.set_sector(3, &a1);
    assert!(matches!(Store::open(d), Err(OpenError::Corrupt(_))));
}
