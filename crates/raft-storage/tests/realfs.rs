//! The store on the real filesystem, in a temporary directory.

mod common;

use std::fs::OpenOptions;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use common::*;
use raft_core::{HardState, LogStore};
use raft_storage::{OpenError, RealDisk, Store, StoreConfig};

fn config() -> StoreConfig {
    StoreConfig {
        segment_bytes_max: 16 << 10,
        ..StoreConfig::default()
    }
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "wal"))
        .collect();
    v.sort();
    v
}

#[test]
fn round_trip_compaction_and_reopen() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("node1");
    let store = Store::bootstrap(RealDisk, &dir, CLUSTER, NODE, members(), config()).unwrap();
    store.append(&entries(1..=500, 1, 100)).unwrap();
    store
        .set_hard_state(HardState {
            term: 1,
            vote: Some(1),
            commit: 400,
        })
        .unwrap();
    store.sync().unwrap();
    let before = segments(&dir).len();
    assert!(before > 2);
    store.compact(&snapshot_at(400, 1, "applied@400")).unwrap();
    assert!(segments(&dir).len() < before);
    store.append(&entries(450..=460, 2, 10)).unwrap();
    store.sync().unwrap();
    drop(store);
    let s = reopen(&RealDisk, &dir, config());
    assert_eq!(s.first_index(), 401);
    assert_eq!(s.last_index(), 460);
    let mut want = entries(401..=449, 1, 100);
    want.extend(entries(450..=460, 2, 10));
    assert_eq!(all_entries(&s), want);
    assert_eq!(s.hard_state().vote, Some(1));
    assert_eq!(s.snapshot().unwrap().data, "applied@400");
    let e = Store::open(RealDisk, &dir, CLUSTER, 9, config()).unwrap_err();
    assert!(matches!(e, OpenError::WrongNode { .. }), "{e}");
}

#[test]
fn torn_tail_cut_and_bit_flip_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    let store = Store::bootstrap(RealDisk, &dir, CLUSTER, NODE, members(), config()).unwrap();
    store.append(&entries(1..=10, 1, 100)).unwrap();
    store.sync().unwrap();
    drop(store);
    let seg = segments(&dir).pop().unwrap();
    let len = std::fs::metadata(&seg).unwrap().len();
    // Tear the last record: cut 30 bytes.
    OpenOptions::new()
        .write(true)
        .open(&seg)
        .unwrap()
        .set_len(len - 30)
        .unwrap();
    let s = reopen(&RealDisk, &dir, config());
    assert_eq!(s.last_index(), 9);
    assert!(s.recovery_report().torn_tail.is_some());
    drop(s);
    // Flip a bit in the middle of the first entry's payload.
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&seg)
        .unwrap();
    let mut all = Vec::new();
    f.read_to_end(&mut all).unwrap();
    let pos = all.len() / 2;
    f.seek(SeekFrom::Start(pos as u64)).unwrap();
    f.write_all(&[all[pos] ^ 0x10]).unwrap();
    drop(f);
    match Store::open(RealDisk, &dir, CLUSTER, NODE, config()) {
        Err(OpenError::Corrupt { file, .. }) => assert_eq!(file, seg),
        other => panic!("expected corruption, got {other:?}"),
    }
}

#[test]
fn concurrent_readers_writer_and_syncers() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Arc::new(
        Store::bootstrap(
            RealDisk,
            tmp.path(),
            CLUSTER,
            NODE,
            members(),
            StoreConfig {
                cache_bytes_max: 4096,
                ..config()
            },
        )
        .unwrap(),
    );
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let (s, stop) = (store.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut reads = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let last = s.last_index();
                if last > 0 {
                    let got = s.entries(1, last + 1, 1 << 20).unwrap();
                    for (i, e) in got.iter().enumerate() {
                        assert_eq!(e.index, i as u64 + 1);
                        assert_eq!(*e, entry(e.index, 1, 64));
                    }
                    reads += 1;
                }
            }
            reads
        })
    };
    let syncers: Vec<_> = (0..2)
        .map(|_| {
            let s = store.clone();
            std::thread::spawn(move || {
                for _ in 0..50 {
                    s.sync().unwrap();
                }
            })
        })
        .collect();
    for i in 1..=300 {
        store.append(&[entry(i, 1, 64)]).unwrap();
        if i % 16 == 0 {
            store.sync().unwrap();
        }
    }
    store.sync().unwrap();
    for t in syncers {
        t.join().unwrap();
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(reader.join().unwrap() > 0);
    drop(store);
    let s = reopen(&RealDisk, tmp.path(), config());
    assert_eq!(
        all_entries(&s),
        (1..=300).map(|i| entry(i, 1, 64)).collect::<Vec<_>>()
    );
}

#[test]
fn large_payloads_are_written_in_place_and_read_back() {
    let tmp = tempfile::tempdir().unwrap();
    let config = StoreConfig {
        cache_bytes_max: 0, // every read comes from the segment files
        ..StoreConfig::default()
    };
    let store = Store::bootstrap(
        RealDisk,
        tmp.path(),
        CLUSTER,
        NODE,
        members(),
        config.clone(),
    )
    .unwrap();
    // Sizes around the in-place threshold (4 KiB), mixed in one write.
    let sizes = [0, 100, 4095, 4096, 4097, 70_000, 3, 16_384, 5000, 1];
    let mut want: Vec<_> = sizes
        .iter()
        .enumerate()
        .map(|(i, &len)| entry(i as u64 + 1, 1, len))
        .collect();
    store.append(&want).unwrap();
    // More payloads in place than one pwritev takes (1024 iovecs).
    let next = want.len() as u64 + 1;
    let many = entries(next..=next + 699, 1, 4096);
    store.append(&many).unwrap();
    want.extend(many);
    // A suffix replacement with large entries, then a hard state.
    let replaced = entries(705..=712, 2, 9000);
    store.append(&replaced).unwrap();
    want.truncate(704);
    want.extend(replaced);
    store
        .set_hard_state(HardState {
            term: 2,
            vote: Some(1),
            commit: 712,
        })
        .unwrap();
    store.sync().unwrap();
    assert_eq!(all_entries(&store), want);
    drop(store);
    let s = reopen(&RealDisk, tmp.path(), config);
    assert_eq!(s.recovery_report().torn_tail, None);
    assert_eq!(all_entries(&s), want);
    assert_eq!(s.hard_state().commit, 712);
}
