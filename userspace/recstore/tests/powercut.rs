//! Power cuts at every sector write: exhaustive over fixed scenarios, and proptest
//! over random operation sequences. After every cut the store must reopen to the
//! state before or after the interrupted operation (never a mix, never older),
//! keep working, and reopen again to the same state.
//!
//! Counts are printed with `--nocapture` and quoted in docs/reliability.md.

mod common;

use std::cell::Cell;

use common::*;
use nexus_recstore::sim::{PowerCut, SimDisk, Tear};
use nexus_recstore::{OpenError, Store};
use proptest::prelude::*;

/// Tear variants tried at every cut point.
fn tears() -> Vec<(Tear, Option<u64>)> {
    vec![
        (Tear::Old, None),
        (Tear::NewPrefix(256), None),
        (Tear::NewSuffix(256), None),
        (Tear::NewPrefix(8), None),
        (Tear::NewSuffix(4), None),
        // volatile write cache: unflushed writes kept or lost at random
        (Tear::NewPrefix(256), Some(0x9e37_79b9_7f4a_7c15)),
        (Tear::Old, Some(0x2545_f491_4f6c_dd1d)),
    ]
}

/// Runs `ops` on a freshly formatted disk with a power cut at write `at` (counted
/// from the first op). Returns `None` if the ops finished before write `at`.
/// Otherwise checks recovery and returns the number of the interrupted op.
fn cut_and_check(ops: &[Op], at: u64, tear: Tear, lose: Option<u64>) -> Option<usize> {
    let mut s = Store::format(SimDisk::new(DISK_SECTORS)).expect("format");
    let mut before = Model::new();
    let mut interrupted = None;
    // Arm through the device after format: take it out and back.
    let mut disk = s.into_device();
    disk.arm(PowerCut {
        at_write: at,
        tear,
        lose_unflushed: lose,
    });
    s = Store::open(disk).expect("reopen after format").0;
    for (i, op) in ops.iter().enumerate() {
        match apply_store(&mut s, op) {
            Ok(()) => apply_model(&mut before, op),
            Err(e) => {
                // The store must refuse further writes until reopened.
                assert!(matches!(
                    apply_store(&mut s, op),
                    Err(nexus_recstore::Error::Poisoned)
                ));
                let _ = e;
                interrupted = Some(i);
                break;
            }
        }
    }
    let k = interrupted?;
    let mut after = before.clone();
    apply_model(&mut after, &ops[k]);

    let mut disk = s.into_device();
    assert!(!disk.powered());
    disk.restart();
    // A second cut during open's header repair (its only write) changes nothing.
    let mut again = disk.clone();
    again.arm(PowerCut {
        at_write: 0,
        tear: Tear::NewPrefix(100),
        lose_unflushed: None,
    });
    let repaired_state = match Store::open(&mut again) {
        Ok((s, _)) => contents(&s),
        Err(_) => {
            again.restart();
            contents(&Store::open(&mut again).expect("open after cut in repair").0)
        }
    };
    let (mut s, report) = match Store::open(disk) {
        Ok(x) => x,
        Err(e) => panic!("open after cut at write {at} ({tear:?}, lose {lose:?}) in op {k}: {e:?}"),
    };
    let got = contents(&s);
    let mut model = if got == after {
        after
    } else if got == before {
        before
    } else {
        panic!("cut at write {at} ({tear:?}) in op {k}: state is neither before nor after\n got {got:?}");
    };
    assert_eq!(report.seq, s.seq());
    assert_eq!(
        repaired_state, model,
        "a cut during open's repair changed the state"
    );
    // The store keeps working after recovery: finish the remaining ops.
    for op in &ops[k + 1..] {
        apply_store(&mut s, op).expect("op after recovery");
        apply_model(&mut model, op);
    }
    let (s2, _) = Store::open(s.into_device()).expect("second reopen");
    assert_eq!(contents(&s2), model);
    Some(k)
}

/// Writes the ops make after format, without faults.
fn total_writes(ops: &[Op]) -> u64 {
    let s = Store::format(SimDisk::new(DISK_SECTORS)).expect("format");
    let base = s.into_device();
    let w0 = base.sectors_written();
    let (mut s, _) = Store::open(base).expect("open");
    for op in ops {
        apply_store(&mut s, op).expect("op");
    }
    s.into_device().sectors_written() - w0
}

fn scenario() -> Vec<Op> {
    vec![
        Op::Put {
            key: 0,
            len: 32,
            fill: 1,
        }, // first commit into the never-used slot B
        Op::Put {
            key: 1,
            len: 40,
            fill: 2,
        }, // back to A
        Op::Put {
            key: 0,
            len: 32,
            fill: 3,
        }, // overwrite
        Op::Put {
            key: 7,
            len: 4096,
            fill: 4,
        }, // max key, max value: 9 payload sectors
        Op::Delete { key: 1 },
        Op::Put {
            key: 2,
            len: 0,
            fill: 0,
        }, // empty value
        Op::Delete { key: 7 },
    ]
}

#[test]
fn exhaustive_cuts_in_fixed_scenario() {
    let ops = scenario();
    let w = total_writes(&ops);
    let mut cases = 0u64;
    let mut tears = tears();
    for n in [1usize, 31, 255, 257, 480, 508, 511] {
        tears.push((Tear::NewPrefix(n), None));
        tears.push((Tear::NewSuffix(n), None));
    }
    for at in 0..w {
        for &(tear, lose) in &tears {
            assert!(cut_and_check(&ops, at, tear, lose).is_some());
            cases += 1;
        }
    }
    assert!(cut_and_check(&ops, w, Tear::Old, None).is_none());
    eprintln!(
        "exhaustive: {} ops, {w} cut points x {} tear variants = {cases} power cuts, all recovered",
        ops.len(),
        tears.len()
    );
}

#[test]
fn cuts_during_format() {
    let mut cases = 0;
    // On a zeroed disk: Empty, or the new empty store.
    let base = SimDisk::new(DISK_SECTORS);
    let fw = {
        let s = Store::format(base.clone()).expect("format");
        s.into_device().sectors_written()
    };
    for at in 0..fw {
        for &(tear, lose) in &tears() {
            let mut d = base.clone();
            d.arm(PowerCut {
                at_write: at,
                tear,
                lose_unflushed: lose,
            });
            assert!(Store::format(&mut d).is_err());
            d.restart();
            match Store::open(&mut d) {
                Err(OpenError::Empty) => {}
                Ok((s, _)) => assert!(s.is_empty()),
                Err(e) => panic!("format cut at {at} on a zeroed disk: {e:?}"),
            }
            cases += 1;
        }
    }
    // Over an existing store (reset): the old state, the new empty store, or a refusal;
    // never a mix or an older state.
    let (old_disk, old) = disk_with(&scenario()[..4]);
    let fw2 = {
        let mut d = old_disk.clone();
        let w0 = d.sectors_written();
        let _ = Store::format(&mut d).expect("format");
        d.sectors_written() - w0
    };
    for at in 0..fw2 {
        for &(tear, lose) in &tears() {
            let mut d = old_disk.clone();
            d.arm(PowerCut {
                at_write: at,
                tear,
                lose_unflushed: lose,
            });
            assert!(Store::format(&mut d).is_err());
            d.restart();
            match Store::open(&mut d) {
                Ok((s, _)) => {
                    let c = contents(&s);
                    assert!(
                        c == old || c.is_empty(),
                        "format cut at {at}: mixed state {c:?}"
                    );
                }
                Err(OpenError::Empty | OpenError::Corrupt(_) | OpenError::Foreign) => {}
                Err(e) => panic!("format cut at {at}: {e:?}"),
            }
            cases += 1;
        }
    }
    eprintln!("format: {fw} + {fw2} cut points, {cases} power cuts, none left a mixed state");
}

fn op_strategy() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u8..8, 0usize..700, any::<u8>()).prop_map(|(key, len, fill)| Op::Put { key, len, fill }),
        1 => (0u8..8).prop_map(|key| Op::Delete { key }),
    ]
}

/// Random op sequences (1..12 ops over 8 keys, values 0..700 bytes), a power cut at
/// every write index, each tear variant.
#[test]
fn random_ops_survive_a_cut_at_every_write() {
    use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
    // Deterministic (fixed seed) so the counts in docs/reliability.md reproduce.
    let mut runner = TestRunner::new_with_rng(
        Config {
            cases: 256,
            failure_persistence: None,
            ..Config::default()
        },
        TestRng::deterministic_rng(RngAlgorithm::ChaCha),
    );
    let cases = Cell::new(0u64);
    let cuts = Cell::new(0u64);
    let points = Cell::new(0u64);
    let result = runner.run(&prop::collection::vec(op_strategy(), 1..12), |ops| {
        let w = total_writes(&ops);
        for at in 0..w {
            for &(tear, lose) in &tears() {
                prop_assert!(cut_and_check(&ops, at, tear, lose).is_some());
                cuts.set(cuts.get() + 1);
            }
        }
        points.set(points.get() + w);
        cases.set(cases.get() + 1);
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    eprintln!(
        "proptest: {} sequences, {} cut points x {} tear variants = {} power cuts, all recovered",
        cases.get(),
        points.get(),
        tears().len(),
        cuts.get()
    );
}
