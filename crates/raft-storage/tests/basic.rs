//! Behaviour of the store's API on the simulated disk.

mod common;

use std::path::Path;
use std::sync::Arc;

use common::*;
use raft_core::{HardState, LogStore, Ready, StorageError};
use raft_storage::{FaultKind, OpenError, SimDisk, Store, StoreConfig, WriteError};

#[test]
fn bootstrap_stores_membership_as_snapshot_at_zero() {
    let (disk, store) = new_sim_store(1, small_config());
    let st = store.initial_state().unwrap();
    assert_eq!(st.snapshot_meta.last_index, 0);
    assert_eq!(st.snapshot_meta.membership, members());
    assert_eq!(st.hard_state, HardState::default());
    assert_eq!((store.first_index(), store.last_index()), (1, 0));
    assert_eq!(store.term(0), Ok(0));
    assert_eq!(store.term(1), Err(StorageError::Unavailable));
    drop(store);
    let again = Store::bootstrap(
        disk.clone(),
        "/data",
        CLUSTER,
        NODE,
        members(),
        small_config(),
    );
    assert!(matches!(again, Err(OpenError::AlreadyInitialized { .. })));
    let s = reopen(&disk, "/data", small_config());
    assert_eq!(
        s.initial_state().unwrap().snapshot_meta.membership,
        members()
    );
}

#[test]
fn refuses_other_cluster_node_and_uninitialized_dirs() {
    let (disk, store) = new_sim_store(1, small_config());
    drop(store);
    let e = Store::open(disk.clone(), "/data", CLUSTER + 1, NODE, small_config()).unwrap_err();
    assert!(
        matches!(
            e,
            OpenError::WrongCluster {
                expected: 8,
                found: 7,
                ..
            }
        ),
        "{e}"
    );
    let e = Store::open(disk.clone(), "/data", CLUSTER, 2, small_config()).unwrap_err();
    assert!(
        matches!(
            e,
            OpenError::WrongNode {
                expected: 2,
                found: 1,
                ..
            }
        ),
        "{e}"
    );
    let e = Store::open(disk.clone(), "/nothing", CLUSTER, NODE, small_config()).unwrap_err();
    assert!(matches!(e, OpenError::NotInitialized { .. }), "{e}");
}

#[test]
fn append_read_truncate_and_reopen() {
    let (disk, store) = new_sim_store(2, small_config());
    store.append(&entries(1..=100, 1, 50)).unwrap();
    store
        .set_hard_state(HardState {
            term: 1,
            vote: Some(1),
            commit: 40,
        })
        .unwrap();
    store.sync().unwrap();
    assert!(store.segment_count() > 1, "small segments rotate");
    assert_eq!(all_entries(&store), entries(1..=100, 1, 50));
    // Replace a suffix.
    store.append(&entries(60..=70, 2, 10)).unwrap();
    assert_eq!(store.last_index(), 70);
    assert_eq!(store.term(59), Ok(1));
    assert_eq!(store.term(60), Ok(2));
    store.sync().unwrap();
    let mut want = entries(1..=59, 1, 50);
    want.extend(entries(60..=70, 2, 10));
    assert_eq!(all_entries(&store), want);
    // Size limit: at least one entry, then stop before exceeding.
    let one = store.entries(1, 71, 1).unwrap();
    assert_eq!(one.len(), 1);
    let some = store.entries(1, 71, 3 * (24 + 50)).unwrap();
    assert_eq!(some.len(), 3);
    drop(store);
    let s = reopen(&disk, "/data", small_config());
    assert_eq!(all_entries(&s), want);
    assert_eq!(
        s.hard_state(),
        HardState {
            term: 1,
            vote: Some(1),
            commit: 40
        }
    );
}

#[test]
fn api_misuse_is_refused_without_change() {
    let (_disk, store) = new_sim_store(3, small_config());
    store.append(&entries(1..=10, 2, 5)).unwrap();
    store
        .set_hard_state(HardState {
            term: 2,
            vote: Some(2),
            commit: 5,
        })
        .unwrap();
    let cases: Vec<(WriteError, &str)> = vec![
        (store.append(&entries(12..=13, 2, 1)).unwrap_err(), "gap"),
        (
            store
                .append(&[entry(11, 2, 1), entry(13, 2, 1)])
                .unwrap_err(),
            "not contiguous",
        ),
        (
            store.append(&entries(4..=12, 3, 1)).unwrap_err(),
            "conflicts with committed",
        ),
        (
            store.append(&entries(3..=4, 2, 5)).unwrap_err(),
            "truncates committed",
        ),
        (
            store
                .set_hard_state(HardState {
                    term: 1,
                    vote: None,
                    commit: 5,
                })
                .unwrap_err(),
            "term regress",
        ),
        (
            store
                .set_hard_state(HardState {
                    term: 2,
                    vote: Some(3),
                    commit: 5,
                })
                .unwrap_err(),
            "vote change",
        ),
        (
            store
                .set_hard_state(HardState {
                    term: 2,
                    vote: Some(2),
                    commit: 11,
                })
                .unwrap_err(),
            "commit beyond log",
        ),
        (
            store.compact(&snapshot_at(11, 2, "x")).unwrap_err(),
            "beyond log",
        ),
        (
            store.compact(&snapshot_at(5, 9, "x")).unwrap_err(),
            "term mismatch",
        ),
    ];
    for (e, what) in cases {
        assert!(!e.is_fatal(), "{what}: {e}");
    }
    assert_eq!(store.last_index(), 10);
    assert_eq!(store.failure(), None);
    // Same entries again at a committed index are fine (they match).
    store.append(&entries(5..=12, 2, 5)).unwrap();
    assert_eq!(store.last_index(), 12);
}

#[test]
fn compaction_drops_covered_segments_and_survives_reopen() {
    let (disk, store) = new_sim_store(4, small_config());
    store.append(&entries(1..=300, 1, 40)).unwrap();
    store
        .set_hard_state(HardState {
            term: 1,
            vote: None,
            commit: 250,
        })
        .unwrap();
    store.sync().unwrap();
    let before = store.segment_count();
    store.compact(&snapshot_at(250, 1, "state@250")).unwrap();
    assert!(
        store.segment_count() < before,
        "{} !< {before}",
        store.segment_count()
    );
    assert_eq!(store.first_index(), 251);
    assert_eq!(store.term(250), Ok(1));
    assert_eq!(store.term(249), Err(StorageError::Compacted));
    assert_eq!(
        store.entries(200, 260, u64::MAX),
        Err(StorageError::Compacted)
    );
    assert_eq!(store.snapshot().unwrap().data, "state@250");
    drop(store);
    let s = reopen(&disk, "/data", small_config());
    assert_eq!(s.first_index(), 251);
    assert_eq!(s.snapshot().unwrap(), snapshot_at(250, 1, "state@250"));
    assert_eq!(all_entries(&s), entries(251..=300, 1, 40));
    let snaps: Vec<_> = disk_files(&disk)
        .into_iter()
        .filter(|n| n.ends_with(".snap"))
        .collect();
    assert_eq!(snaps.len(), 1, "{snaps:?}");
}

fn disk_files(disk: &SimDisk) -> Vec<String> {
    use raft_storage::Disk;
    disk.list_dir(Path::new("/data")).unwrap()
}

#[test]
fn install_snapshot_keeps_matching_suffix_or_clears() {
    let (disk, store) = new_sim_store(5, small_config());
    store.append(&entries(1..=20, 1, 10)).unwrap();
    // Matching: keep 16..=20.
    store.install_snapshot(&snapshot_at(15, 1, "a")).unwrap();
    assert_eq!((store.first_index(), store.last_index()), (16, 20));
    assert_eq!(store.hard_state().commit, 15);
    // Conflicting term: the log is discarded.
    store.install_snapshot(&snapshot_at(18, 3, "b")).unwrap();
    assert_eq!((store.first_index(), store.last_index()), (19, 18));
    store.append(&entries(19..=25, 3, 10)).unwrap();
    store.sync().unwrap();
    assert!(matches!(
        store.install_snapshot(&snapshot_at(10, 1, "old")),
        Err(WriteError::SnapshotNotNewer { .. })
    ));
    drop(store);
    let s = reopen(&disk, "/data", small_config());
    assert_eq!(s.snapshot().unwrap(), snapshot_at(18, 3, "b"));
    assert_eq!(all_entries(&s), entries(19..=25, 3, 10));
    assert_eq!(s.hard_state().commit, 18);
}

#[test]
fn write_ready_persists_in_order() {
    let (disk, store) = new_sim_store(6, small_config());
    let ready = Ready {
        number: 1,
        snapshot: Some(snapshot_at(5, 2, "snap")),
        entries: entries(6..=8, 2, 3),
        hard_state: Some(HardState {
            term: 2,
            vote: Some(3),
            commit: 7,
        }),
        ..Default::default()
    };
    store.persist_ready(&ready).unwrap();
    disk.crash();
    let s = reopen(&disk, "/data", small_config());
    assert_eq!(
        s.hard_state(),
        HardState {
            term: 2,
            vote: Some(3),
            commit: 7
        }
    );
    assert_eq!(all_entries(&s), entries(6..=8, 2, 3));
    assert_eq!(s.snapshot().unwrap().meta.last_index, 5);
}

#[test]
fn io_errors_fail_the_store_for_good() {
    for (i, kind) in [FaultKind::NoSpace, FaultKind::Io].into_iter().enumerate() {
        let (disk, store) = new_sim_store(10 + i as u64, small_config());
        store.append(&entries(1..=3, 1, 10)).unwrap();
        store.sync().unwrap();
        disk.fail_next_writes(1, kind);
        let e = store.append(&entries(4..=5, 1, 10)).unwrap_err();
        assert!(e.is_fatal(), "{e}");
        assert!(store.failure().is_some());
        // The fault is gone but the store stays failed.
        assert!(matches!(
            store.append(&entries(4..=5, 1, 10)),
            Err(WriteError::Failed(_))
        ));
        assert!(matches!(store.sync(), Err(WriteError::Failed(_))));
        disk.crash();
        let s = reopen(&disk, "/data", small_config());
        // Acknowledged entries survive; of the failed write, at most whole
        // entries of a prefix (a short write) may be there.
        let got = all_entries(&s);
        assert!(got.len() >= 3, "acknowledged data lost: {got:?}");
        assert_eq!(got[..], entries(1..=5, 1, 10)[..got.len()]);
    }
}

#[test]
fn fsync_failure_is_fatal_and_never_acknowledged() {
    let (disk, store) = new_sim_store(12, small_config());
    store.append(&entries(1..=3, 1, 10)).unwrap();
    disk.fail_next_syncs(1, FaultKind::Io);
    assert!(store.sync().unwrap_err().is_fatal());
    // No retry may succeed: the data may be gone from the page cache.
    assert!(matches!(store.sync(), Err(WriteError::Failed(_))));
    assert!(store.failure().unwrap().contains("fsync"));
}

#[test]
fn concurrent_writers_and_syncers_share_fsyncs() {
    let (disk, store) = new_sim_store(13, StoreConfig::default());
    let store = Arc::new(store);
    let ops_before = disk.op_count();
    let threads: Vec<_> = (0..4u64)
        .map(|_| {
            let s = store.clone();
            std::thread::spawn(move || {
                for _ in 0..50 {
                    s.sync().unwrap();
                }
            })
        })
        .collect();
    for i in 1..=200u64 {
        store.append(&[entry(i, 1, 8)]).unwrap();
        if i % 10 == 0 {
            store.sync().unwrap();
        }
    }
    for t in threads {
        t.join().unwrap();
    }
    store.sync().unwrap();
    let ops = disk.op_count() - ops_before;
    // 200 writes plus at most one fsync per write (shared or skipped).
    assert!(ops <= 400, "{ops} ops");
    disk.crash();
    let s = reopen(&disk, "/data", StoreConfig::default());
    assert_eq!(s.last_index(), 200);
}

#[test]
fn entries_read_back_from_segments_when_not_cached() {
    let config = StoreConfig {
        cache_bytes_max: 0,
        ..small_config()
    };
    let (disk, store) = new_sim_store(14, config.clone());
    store.append(&entries(1..=200, 1, 30)).unwrap();
    store.append(&entries(150..=180, 2, 30)).unwrap();
    store.sync().unwrap();
    let mut want = entries(1..=149, 1, 30);
    want.extend(entries(150..=180, 2, 30));
    assert_eq!(all_entries(&store), want);
    // Corrupt a cached-out entry: the read reports it as fatal.
    drop(store);
    let s = reopen(&disk, "/data", config);
    assert_eq!(all_entries(&s), want);
}

#[test]
fn readers_are_not_held_up_by_a_write_in_progress() {
    use raft_storage::SimOpKind;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::mpsc;
    use std::time::Duration;

    let (disk, store) = new_sim_store(15, small_config());
    let store = Arc::new(store);
    store.append(&entries(1..=3, 1, 100)).unwrap();
    store.sync().unwrap();
    let armed = Arc::new(AtomicBool::new(false));
    let seen: Arc<std::sync::Mutex<Vec<(SimOpKind, u64, usize)>>> = Arc::default();
    {
        let (weak, armed, seen) = (Arc::downgrade(&store), armed.clone(), seen.clone());
        disk.set_hook(Some(Box::new(move |op, _fork| {
            if !armed.load(Ordering::SeqCst) {
                return;
            }
            let store = weak.upgrade().expect("store alive during the write");
            // In the middle of the write's disk operation (the disk's lock is
            // held, so the reader must not touch the disk: these reads are
            // served from memory), another thread reads the log.
            let (tx, rx) = mpsc::channel();
            std::thread::spawn(move || {
                let last = store.last_index();
                let cached = store.entries(1, last + 1, u64::MAX).unwrap().len();
                let _ = tx.send((last, cached));
            });
            let (last, cached) = rx
                .recv_timeout(Duration::from_secs(20))
                .expect("a reader was blocked by the write in progress");
            seen.lock().unwrap().push((op.kind, last, cached));
        })));
    }
    armed.store(true, Ordering::SeqCst);
    // 60 records of ~120 bytes: the 4 KiB segment rotates during the write.
    store.append(&entries(4..=60, 1, 100)).unwrap();
    armed.store(false, Ordering::SeqCst);
    disk.set_hook(None);
    let seen = seen.lock().unwrap();
    let kinds: Vec<SimOpKind> = seen.iter().map(|s| s.0).collect();
    assert!(kinds.contains(&SimOpKind::Write), "{kinds:?}");
    assert!(
        kinds.contains(&SimOpKind::SyncData),
        "no rotation: {kinds:?}"
    );
    // Every reader saw the log as before the write: it is published whole
    // once the write is done, never in part.
    for &(kind, last, cached) in seen.iter() {
        assert_eq!((last, cached), (3, 3), "during {kind:?}");
    }
    assert_eq!(store.last_index(), 60);
    store.sync().unwrap();
    drop(seen);
    let s = reopen(&disk, "/data", small_config());
    assert_eq!(all_entries(&s), entries(1..=60, 1, 100));
}
