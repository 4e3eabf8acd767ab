//! The host's application record: written in the same transaction as the
//! entries it goes with, bounded, durable with the data, and carried by
//! snapshots.

mod common;

use common::*;
use raft_core::StateMachine;
use raftkv_mvcc::snapshot::CHUNK_BYTES_MIN;
use raftkv_mvcc::{ApplyError, MvccStore, SnapshotReceiver, APP_BYTES_MAX};
use raftkv_state::{Command, KvConfig};

fn config() -> KvConfig {
    KvConfig::default()
}

fn put(i: u64) -> raft_core::Entry {
    normal(i, &Command::put(format!("k{}", i % 5), format!("v{i}")))
}

#[test]
fn set_with_the_batch_and_kept_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = store_path(&dir);
    let mut store = MvccStore::open(&path, config(), options()).unwrap();
    assert_eq!(store.app_state(), b"");
    store
        .apply_batch_with_app(&[put(1), put(2)], Some(b"book-1".to_vec()))
        .unwrap();
    assert_eq!(store.app_state(), b"book-1");
    // None leaves it as it is.
    store.apply_batch(&[put(3)]).unwrap();
    assert_eq!(store.app_state(), b"book-1");
    // An empty batch may set it alone; the applied index does not move.
    store
        .apply_batch_with_app(&[], Some(b"book-2".to_vec()))
        .unwrap();
    assert_eq!(
        (store.app_state(), store.applied_index()),
        (&b"book-2"[..], 3)
    );
    assert_eq!(store.checkpoint().unwrap(), 3);
    drop(store);
    let store = MvccStore::open(&path, config(), options()).unwrap();
    assert_eq!(store.app_state(), b"book-2");
    assert_eq!(store.applied_index(), 3);
}

#[test]
fn too_large_is_refused_and_nothing_is_applied() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = MvccStore::open(store_path(&dir), config(), options()).unwrap();
    store
        .apply_batch_with_app(&[put(1)], Some(b"small".to_vec()))
        .unwrap();
    let digest = store.digest().unwrap();
    let err = store
        .apply_batch_with_app(&[put(2)], Some(vec![7; APP_BYTES_MAX + 1]))
        .unwrap_err();
    assert!(
        matches!(err, ApplyError::AppTooLarge { bytes, max } if bytes == APP_BYTES_MAX as u64 + 1 && max == APP_BYTES_MAX as u64),
        "{err:?}"
    );
    assert_eq!(store.applied_index(), 1);
    assert_eq!(store.digest().unwrap(), digest);
    assert_eq!(store.app_state(), b"small");
    // Not fatal: the store goes on, and exactly the limit is accepted.
    store
        .apply_batch_with_app(&[put(2)], Some(vec![7; APP_BYTES_MAX]))
        .unwrap();
    assert_eq!(store.app_state().len(), APP_BYTES_MAX);
    assert_eq!(store.applied_index(), 2);
}

/// A process crash (the file as it is, unclosed) reopens at the durable
/// index with the application record of that index, never a later one.
#[test]
fn a_crash_keeps_the_record_of_the_durable_index() {
    let dir = tempfile::tempdir().unwrap();
    let path = store_path(&dir);
    let mut store = MvccStore::open(&path, config(), options()).unwrap();
    let mut app_at = vec![Vec::new()];
    let mut copies = Vec::new();
    for i in 1..=40u64 {
        let app = (i % 3 == 0).then(|| format!("book@{i}").into_bytes());
        store.apply_batch_with_app(&[put(i)], app).unwrap();
        app_at.push(store.app_state().to_vec());
        if i % 7 == 0 {
            store.checkpoint().unwrap();
        }
        let copy = dir.path().join(format!("copy-{i}.redb"));
        std::fs::copy(&path, &copy).unwrap();
        copies.push((copy, store.durable_applied_index()));
    }
    for (copy, durable) in copies {
        let reopened = MvccStore::open(&copy, config(), options()).unwrap();
        assert_eq!(reopened.applied_index(), durable, "{copy:?}");
        assert_eq!(
            reopened.app_state(),
            &app_at[durable as usize][..],
            "{copy:?}"
        );
    }
}

#[test]
fn snapshots_carry_the_record_of_their_view() {
    let dir = tempfile::tempdir().unwrap();
    let mut src = MvccStore::open(dir.path().join("src.redb"), config(), options()).unwrap();
    for i in 1..=50u64 {
        let app = (i % 10 == 0).then(|| vec![i as u8; 1000 + i as usize]);
        src.apply_batch_with_app(&[put(i)], app).unwrap();
    }
    let expected = src.app_state().to_vec();
    let source = src.snapshot_source(CHUNK_BYTES_MIN).unwrap();
    assert_eq!(source.app_state(), &expected[..]);
    // Changed after the view was taken: the stream still has the old one.
    src.apply_batch_with_app(&[put(51)], Some(b"later".to_vec()))
        .unwrap();
    let live = dir.path().join("dst.redb");
    let mut dst = MvccStore::open(&live, config(), options()).unwrap();
    let mut rx = SnapshotReceiver::begin(&live, &config(), &options()).unwrap();
    for chunk in source {
        rx.push(&chunk.unwrap()).unwrap();
    }
    let received = rx.finish().unwrap();
    assert_eq!(received.app_state(), &expected[..]);
    dst.install(received).unwrap();
    assert_eq!(dst.app_state(), &expected[..]);
    assert_eq!(dst.applied_index(), 50);
    drop(dst);
    let dst = MvccStore::open(&live, config(), options()).unwrap();
    assert_eq!(dst.app_state(), &expected[..]);

    // The StateMachine bridge carries it too.
    let blob = src.snapshot().unwrap();
    let mut other = MvccStore::open(dir.path().join("other.redb"), config(), options()).unwrap();
    other.restore(&blob).unwrap();
    assert_eq!(other.app_state(), b"later");
    assert_eq!(other.applied_index(), 51);
}
