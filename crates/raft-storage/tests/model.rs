//! Property test: the store behaves like raft-core's in-memory `MemStorage`
//! under random appends (with suffix replacement), hard state changes,
//! compactions, snapshot installs, reads with random byte limits, and
//! sync-crash-reopen cycles.

mod common;

use common::*;
use proptest::prelude::*;
use raft_core::{HardState, LogStore, MemStorage};
use raft_storage::{SimDisk, Store, StoreConfig};

#[derive(Clone, Debug)]
enum Op {
    /// Append `n` entries starting `back` entries before the end (0: after
    /// the last one), payload `len` bytes.
    Append { back: u64, n: u64, len: usize },
    /// Advance the term (maybe) and the commit index by a fraction.
    Hard { bump_term: bool, commit_pct: u64 },
    /// Compact at a fraction of the committed range.
    Compact { pct: u64 },
    /// Install a snapshot at `ahead` entries past the last (may be negative
    /// via `back`), matching or not.
    Install {
        back: u64,
        ahead: u64,
        matching: bool,
    },
    /// Read a random window with a random byte limit.
    Read {
        lo_pct: u64,
        hi_pct: u64,
        max_bytes: u64,
    },
    /// Sync, crash, reopen.
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => (0u64..6, 1u64..10, prop_oneof![9 => 0usize..120, 1 => 4096usize..4200]).prop_map(|(back, n, len)| Op::Append { back, n, len }),
        2 => (any::<bool>(), 0u64..=100).prop_map(|(bump_term, commit_pct)| Op::Hard { bump_term, commit_pct }),
        1 => (0u64..=100).prop_map(|pct| Op::Compact { pct }),
        1 => (0u64..4, 0u64..4, any::<bool>()).prop_map(|(back, ahead, matching)| Op::Install { back, ahead, matching }),
        3 => (0u64..=100, 0u64..=100, 1u64..600).prop_map(|(lo_pct, hi_pct, max_bytes)| Op::Read { lo_pct, hi_pct, max_bytes }),
        1 => Just(Op::Reopen),
    ]
}

fn pct(lo: u64, hi: u64, p: u64) -> u64 {
    lo + (hi - lo) * p / 100
}

fn check_same(store: &Store<SimDisk>, model: &MemStorage) -> Result<(), TestCaseError> {
    prop_assert_eq!(
        store.initial_state().unwrap(),
        model.initial_state().unwrap()
    );
    prop_assert_eq!(store.first_index(), model.first_index());
    prop_assert_eq!(store.last_index(), model.last_index());
    prop_assert_eq!(all_entries(store), all_entries(model));
    prop_assert_eq!(store.snapshot().unwrap(), model.snapshot().unwrap());
    Ok(())
}

fn run(ops: Vec<Op>, seed: u64) -> Result<(), TestCaseError> {
    let config = StoreConfig {
        segment_bytes_max: 4096,
        cache_bytes_max: 700,
        entry_bytes_max: 1 << 16,
    };
    let disk = SimDisk::new(seed);
    let mut store = Store::bootstrap(
        disk.clone(),
        "/data",
        CLUSTER,
        NODE,
        members(),
        config.clone(),
    )
    .unwrap();
    let mut model = MemStorage::new_with_membership(members());
    for op in ops {
        let hs = model.hard_state();
        let (first, last) = (model.first_index(), model.last_index());
        let last_term = model.term(last).unwrap();
        match op {
            Op::Append { back, n, len } => {
                let start = (last + 1)
                    .saturating_sub(back)
                    .max(hs.commit + 1)
                    .max(first);
                let term = hs.term.max(last_term) + u64::from(start <= last);
                let batch = entries(start..=start + n - 1, term, len);
                store.append(&batch).unwrap();
                model.append(&batch).unwrap();
            }
            Op::Hard {
                bump_term,
                commit_pct,
            } => {
                let new = HardState {
                    term: hs.term + u64::from(bump_term),
                    vote: if bump_term { None } else { hs.vote },
                    commit: pct(hs.commit, last, commit_pct),
                };
                store.set_hard_state(new).unwrap();
                model.set_hard_state(new);
            }
            Op::Compact { pct: p } => {
                let hi = hs.commit.min(last);
                if hi >= first {
                    let idx = pct(first, hi, p);
                    let snap = snapshot_at(idx, model.term(idx).unwrap(), "c");
                    store.compact(&snap).unwrap();
                    model.compact(snap).unwrap();
                }
            }
            Op::Install {
                back,
                ahead,
                matching,
            } => {
                let idx = (last + ahead)
                    .saturating_sub(back)
                    .max(first)
                    .max(hs.commit);
                let term = match model.term(idx) {
                    Ok(t) if matching || idx <= hs.commit => t,
                    _ => hs.term.max(last_term) + 1,
                };
                let snap = snapshot_at(idx, term, "leader");
                store.install_snapshot(&snap).unwrap();
                model.apply_snapshot(snap);
            }
            Op::Read {
                lo_pct,
                hi_pct,
                max_bytes,
            } => {
                let lo = pct(first, last + 1, lo_pct);
                let hi = pct(lo, last + 1, hi_pct);
                prop_assert_eq!(
                    store.entries(lo, hi, max_bytes),
                    model.entries(lo, hi, max_bytes),
                    "entries({}, {}, {})",
                    lo,
                    hi,
                    max_bytes
                );
                prop_assert_eq!(store.term(lo), model.term(lo));
            }
            Op::Reopen => {
                store.sync().unwrap();
                drop(store);
                disk.crash();
                store = reopen(&disk, "/data", config.clone());
            }
        }
        check_same(&store, &model)?;
    }
    store.sync().unwrap();
    drop(store);
    disk.crash();
    check_same(&reopen(&disk, "/data", config), &model)
}

/// 128 cases unless `PROPTEST_CASES` asks for more (a soak).
fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(128)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    #[test]
    fn store_matches_mem_storage(ops in prop::collection::vec(op(), 1..120), seed in any::<u64>()) {
        run(ops, seed)?;
    }
}

/// Found by CI (proptest seed 4684722451038870561): installing a snapshot
/// that matches an entry in the middle of the log after a reopen and a
/// compaction.
#[test]
fn regression_install_matching_after_reopen_and_compact() {
    use Op::*;
    let ops = vec![
        Install {
            back: 0,
            ahead: 0,
            matching: false,
        },
        Append {
            back: 0,
            n: 5,
            len: 0,
        },
        Append {
            back: 0,
            n: 2,
            len: 4096,
        },
        Hard {
            bump_term: false,
            commit_pct: 15,
        },
        Append {
            back: 0,
            n: 1,
            len: 0,
        },
        Append {
            back: 0,
            n: 1,
            len: 4096,
        },
        Append {
            back: 2,
            n: 2,
            len: 0,
        },
        Append {
            back: 0,
            n: 5,
            len: 0,
        },
        Append {
            back: 0,
            n: 1,
            len: 0,
        },
        Compact { pct: 0 },
        Reopen,
        Hard {
            bump_term: false,
            commit_pct: 86,
        },
        Compact { pct: 46 },
        Append {
            back: 0,
            n: 9,
            len: 4096,
        },
        Append {
            back: 5,
            n: 1,
            len: 4096,
        },
        Append {
            back: 2,
            n: 1,
            len: 0,
        },
        Append {
            back: 2,
            n: 3,
            len: 0,
        },
        Append {
            back: 3,
            n: 5,
            len: 4096,
        },
        Append {
            back: 4,
            n: 1,
            len: 0,
        },
        Install {
            back: 2,
            ahead: 2,
            matching: true,
        },
        Read {
            lo_pct: 0,
            hi_pct: 0,
            max_bytes: 1,
        },
    ];
    run(ops, 4684722451038870561).unwrap();
}
