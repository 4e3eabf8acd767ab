//! Reads at past revisions, key histories and compaction, against a model
//! that keeps every version of every key.

mod common;

use common::*;
use proptest::prelude::*;
use raftkv_mvcc::{CompactError, EventKind, MvccStore, ReadError};
use raftkv_state::{Command, KvConfig};

const KEYS: [&str; 4] = ["a", "b", "c", "d"];

fn config() -> KvConfig {
    KvConfig {
        list_limit_max: 100,
        ..KvConfig::default()
    }
}

/// Every write: revision, key, value (`None`: delete of a live key).
#[derive(Default)]
struct Model {
    writes: Vec<(u64, &'static str, Option<String>)>,
}

impl Model {
    /// The key's value as of `rev`.
    fn at(&self, key: &str, rev: u64) -> Option<String> {
        self.writes
            .iter()
            .rfind(|(r, k, _)| *k == key && *r <= rev)
            .and_then(|(_, _, v)| v.clone())
    }

    /// (revision, value) of the key's changes at revisions >= from.
    fn history(&self, key: &str, from: u64) -> Vec<(u64, Option<String>)> {
        self.writes
            .iter()
            .filter(|(r, k, _)| *k == key && *r >= from)
            .map(|(r, _, v)| (*r, v.clone()))
            .collect()
    }

    /// History records left once compaction at `c` is complete: every
    /// version but the live one, minus those superseded at or below `c`,
    /// minus tombstones below `c`.
    fn history_records_after_compaction(&self, c: u64) -> u64 {
        let mut n = 0;
        for key in KEYS {
            let versions: Vec<_> = self.writes.iter().filter(|(_, k, _)| *k == key).collect();
            for (i, (r, _, v)) in versions.iter().enumerate() {
                let next = versions.get(i + 1).map(|(r, _, _)| *r);
                let live = next.is_none() && v.is_some();
                let superseded = next.is_some_and(|n| n <= c);
                let dead_tombstone = v.is_none() && *r < c;
                if !live && !superseded && !dead_tombstone {
                    n += 1;
                }
            }
        }
        n
    }
}

fn check_reads(store: &MvccStore, model: &Model, compacted: u64) {
    let applied = store.applied_index();
    for rev in compacted..=applied {
        for key in KEYS {
            let got = store.get_at(key.as_bytes(), rev).unwrap();
            assert_eq!(
                got.as_ref()
                    .map(|kv| String::from_utf8(kv.value.to_vec()).unwrap()),
                model.at(key, rev),
                "{key} at {rev}"
            );
            if let Some(kv) = got {
                assert!(kv.mod_revision <= rev && kv.create_revision <= kv.mod_revision);
            }
        }
    }
    for key in KEYS {
        let h = store.history(key.as_bytes(), compacted, 100).unwrap();
        assert!(!h.more);
        let got: Vec<(u64, Option<String>)> = h
            .events
            .iter()
            .map(|e| match &e.kind {
                EventKind::Put(kv) => {
                    assert_eq!(kv.mod_revision, e.revision);
                    (
                        e.revision,
                        Some(String::from_utf8(kv.value.to_vec()).unwrap()),
                    )
                }
                EventKind::Delete => (e.revision, None),
            })
            .collect();
        assert_eq!(
            got,
            model.history(key, compacted),
            "history of {key} from {compacted}"
        );
    }
    if compacted > 0 {
        let err = store.get_at(b"a", compacted - 1).unwrap_err();
        assert!(
            matches!(err, ReadError::Compacted { requested, compact_revision }
                if requested == compacted - 1 && compact_revision == compacted),
            "{err}"
        );
        assert!(err
            .to_string()
            .contains(&format!("compact revision {compacted}")));
    }
}

#[derive(Clone, Debug)]
enum Step {
    Put(usize, u8),
    Delete(usize),
    Compact(u8),
    Reopen,
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn past_reads_history_and_compaction_match_the_model(
        steps in prop::collection::vec(prop_oneof![
            6 => (0..KEYS.len(), any::<u8>()).prop_map(|(k, v)| Step::Put(k, v)),
            2 => (0..KEYS.len()).prop_map(Step::Delete),
            1 => any::<u8>().prop_map(Step::Compact),
            1 => Just(Step::Reopen),
        ], 1..60),
        step_changes in 1u64..5,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let path = store_path(&dir);
        let mut store = MvccStore::open(&path, config(), options()).unwrap();
        let mut model = Model::default();
        let mut index = 0u64;
        let mut compacted = 0u64;
        for step in steps {
            match step {
                Step::Put(k, v) => {
                    index += 1;
                    let value = format!("v{v}-{index}");
                    store.apply_batch(&[normal(index, &Command::put(KEYS[k], value.clone()))]).unwrap();
                    model.writes.push((index, KEYS[k], Some(value)));
                }
                Step::Delete(k) => {
                    index += 1;
                    store.apply_batch(&[normal(index, &Command::delete(KEYS[k]))]).unwrap();
                    // Deleting an absent key is no write (no revision).
                    if model.at(KEYS[k], index).is_some() {
                        model.writes.push((index, KEYS[k], None));
                    }
                }
                Step::Compact(c) => {
                    let target = u64::from(c) % (index + 1);
                    match store.compact(target) {
                        Ok(()) => {
                            prop_assert!(target > compacted && target <= index);
                            compacted = target;
                            // Physical removal in small steps, as a host
                            // would run it between batches.
                            while !store.compact_step(step_changes).unwrap().done {}
                            let report = store.view().unwrap().verify().unwrap();
                            prop_assert_eq!(
                                report.history_records,
                                model.history_records_after_compaction(compacted)
                            );
                            let changes_left = model.writes.iter().filter(|(r, _, _)| *r >= compacted).count();
                            prop_assert_eq!(report.changes, changes_left as u64);
                        }
                        Err(CompactError::AlreadyCompacted { requested, compact_revision }) => {
                            prop_assert!(requested <= compacted);
                            prop_assert_eq!(compact_revision, compacted);
                        }
                        Err(e) => prop_assert!(false, "unexpected {e}"),
                    }
                }
                Step::Reopen => {
                    drop(store);
                    store = MvccStore::open(&path, config(), options()).unwrap();
                    prop_assert_eq!(store.compact_revision(), compacted);
                }
            }
            check_reads(&store, &model, compacted);
        }
    }
}

#[test]
fn compaction_bounds_space_under_overwrites() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = MvccStore::open(store_path(&dir), config(), options()).unwrap();
    // 100 keys each written 20 times: 2,000 versions, 1,900 in history.
    let mut index = 0;
    for round in 0..20 {
        let batch: Vec<_> = (0..100)
            .map(|k| {
                index += 1;
                normal(
                    index,
                    &Command::put(format!("k{k:03}"), format!("round {round}")),
                )
            })
            .collect();
        store.apply_batch(&batch).unwrap();
    }
    assert_eq!(
        store.view().unwrap().verify().unwrap().history_records,
        1900
    );
    store.compact(index).unwrap();
    let mut steps = 0;
    while !store.compact_step(256).unwrap().done {
        steps += 1;
    }
    assert!(steps >= 7, "bounded steps of 256 changes: {steps}");
    let report = store.view().unwrap().verify().unwrap();
    assert_eq!(report.history_records, 0);
    // Only the change at exactly the compact revision is kept (for the next
    // compaction to finish).
    assert_eq!(report.changes, 1);
    assert_eq!(store.get(b"k050").unwrap().unwrap().value, "round 19");
    assert_eq!(store.get_at(b"k099", index).unwrap().unwrap().version, 20);
    assert!(matches!(
        store.get_at(b"k099", index - 1),
        Err(ReadError::Compacted { .. })
    ));
    // Compaction refusals.
    assert!(matches!(
        store.compact(index),
        Err(CompactError::AlreadyCompacted { requested, compact_revision }) if requested == index && compact_revision == index
    ));
    assert!(matches!(
        store.compact(index + 5),
        Err(CompactError::AlreadyCompacted { .. }) | Err(CompactError::FutureRevision { .. })
    ));
    assert!(matches!(
        store.get_at(b"k000", index + 1),
        Err(ReadError::FutureRevision { requested, applied_index }) if requested == index + 1 && applied_index == index
    ));
}

#[test]
fn history_pages_and_recreated_keys() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = MvccStore::open(store_path(&dir), config(), options()).unwrap();
    let cmds = [
        Command::put("k", "1"), // 1: create
        Command::put("k", "2"), // 2
        Command::delete("k"),   // 3
        Command::put("x", "x"), // 4: another key
        Command::put("k", "3"), // 5: re-created
    ];
    let entries: Vec<_> = cmds
        .iter()
        .enumerate()
        .map(|(i, c)| normal(i as u64 + 1, c))
        .collect();
    store.apply_batch(&entries).unwrap();
    let kv = store.get(b"k").unwrap().unwrap();
    assert_eq!((kv.create_revision, kv.mod_revision, kv.version), (5, 5, 1));
    let old = store.get_at(b"k", 2).unwrap().unwrap();
    assert_eq!(
        (old.create_revision, old.mod_revision, old.version),
        (1, 2, 2)
    );
    assert_eq!(store.get_at(b"k", 3).unwrap(), None);
    assert_eq!(store.get_at(b"k", 4).unwrap(), None);
    let page = store.history(b"k", 0, 2).unwrap();
    assert_eq!(
        page.events.iter().map(|e| e.revision).collect::<Vec<_>>(),
        [1, 2]
    );
    assert!(page.more);
    let rest = store.history(b"k", 3, 2).unwrap();
    assert_eq!(
        rest.events.iter().map(|e| e.revision).collect::<Vec<_>>(),
        [3, 5]
    );
    assert_eq!(rest.events[0].kind, EventKind::Delete);
    assert!(!rest.more);
    assert!(matches!(
        store.history(b"k", 0, 0),
        Err(ReadError::Rejected(_))
    ));
}
