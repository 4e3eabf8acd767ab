//! Snapshot transfer: chunk round trip while writes continue, bounded and
//! checksummed chunks, refused damage, interrupted transfers, atomic switch.

mod common;

use common::*;
use raft_core::StateMachine;
use raft_core::{Entry, EntryPayload, Membership};
use raftkv_mvcc::snapshot::CHUNK_BYTES_MIN;
use raftkv_mvcc::{MvccStore, ReceiveError, SendError, SnapshotChunk, SnapshotReceiver};
use raftkv_state::{Command, KvConfig, KvStore};

fn config() -> KvConfig {
    KvConfig {
        sessions_max: 50,
        ..KvConfig::default()
    }
}

/// A store (and its KvStore twin) with live keys, history, tombstones,
/// sessions, a membership, a compaction and one value larger than a chunk.
fn populated(path: &std::path::Path, entries: u64) -> (MvccStore, KvStore) {
    let mut store = MvccStore::open(path, config(), options()).unwrap();
    let mut kv = KvStore::new(config()).unwrap();
    let mut batch = Vec::new();
    for i in 1..=entries {
        let e = match i % 7 {
            0 => normal(i, &Command::delete(format!("key-{}", i % 50))),
            3 => Entry {
                term: 2,
                index: i,
                payload: EntryPayload::Membership(Membership::new_voters([1, 2, i % 5 + 3])),
            },
            _ => {
                let value = if i == 5 {
                    vec![b'L'; 10_000]
                } else {
                    format!("value-{i}").into_bytes()
                };
                normal(
                    i,
                    &Command::put(format!("key-{}", i % 50), value).with_session(i % 20, i),
                )
            }
        };
        kv.apply(&e).unwrap();
        batch.push(e);
        if batch.len() == 16 {
            store.apply_batch(&batch).unwrap();
            batch.clear();
        }
    }
    store.apply_batch(&batch).unwrap();
    store.compact(entries / 3).unwrap();
    (store, kv)
}

fn transfer(chunks: &[SnapshotChunk], live: &std::path::Path) -> MvccStore {
    let mut dst = MvccStore::open(live, config(), options()).unwrap();
    let mut rx = SnapshotReceiver::begin(live, &config(), &options()).unwrap();
    for c in chunks {
        rx.push(c).unwrap();
    }
    let received = rx.finish().unwrap();
    dst.install(received).unwrap();
    dst
}

#[test]
fn round_trip_while_writes_continue() {
    let dir = tempfile::tempdir().unwrap();
    let (mut src, kv) = populated(&dir.path().join("src.redb"), 400);
    let digest_at_start = src.digest().unwrap();
    let state_at_start = src.state().clone();
    let source = src.snapshot_source(CHUNK_BYTES_MIN).unwrap();
    assert_eq!(source.state(), &state_at_start);
    let mut chunks = Vec::new();
    // Writes keep going between chunks; the stream is the state as of its
    // start all the same.
    let mut index = src.applied_index();
    for chunk in source {
        let chunk = chunk.unwrap();
        assert!(chunk.payload.len() <= CHUNK_BYTES_MIN);
        assert!(chunk.verify());
        index += 1;
        src.apply_batch(&[normal(
            index,
            &Command::put("key-1", "written during the transfer"),
        )])
        .unwrap();
        chunks.push(chunk);
    }
    assert!(chunks.len() > 3, "several chunks: {}", chunks.len());
    assert!(chunks.last().unwrap().last);
    assert!(chunks[..chunks.len() - 1].iter().all(|c| !c.last));
    let dst = transfer(&chunks, &dir.path().join("dst.redb"));
    assert_eq!(dst.state(), &state_at_start);
    assert_eq!(dst.digest().unwrap(), digest_at_start);
    assert_eq!(dst.digest().unwrap(), kv.digest());
    assert_eq!(dst.durable_applied_index(), state_at_start.applied_index);
    // History and compaction came along.
    let c = state_at_start.compact_revision;
    assert_eq!(dst.compact_revision(), c);
    for key in ["key-1", "key-5", "key-33"] {
        for rev in [c, c + 10, state_at_start.applied_index] {
            assert_eq!(
                dst.get_at(key.as_bytes(), rev).unwrap(),
                src.get_at(key.as_bytes(), rev).unwrap(),
                "{key} at {rev}"
            );
        }
    }
    dst.view().unwrap().verify().unwrap();
    // The wire form round-trips.
    for c in &chunks {
        let bytes = c.encode();
        let (back, used) = SnapshotChunk::decode_prefix(&bytes).unwrap();
        assert_eq!((&back, used), (c, bytes.len()));
    }
}

#[test]
fn chunk_size_is_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let (src, _) = populated(&dir.path().join("src.redb"), 50);
    assert!(matches!(
        src.snapshot_source(100),
        Err(SendError::ChunkSize { .. })
    ));
    assert!(matches!(
        src.snapshot_source(64 << 20),
        Err(SendError::ChunkSize { .. })
    ));
}

#[test]
fn damaged_or_misordered_chunks_are_refused_and_the_live_store_is_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let (src, _) = populated(&dir.path().join("src.redb"), 300);
    let chunks: Vec<_> = src
        .snapshot_source(CHUNK_BYTES_MIN)
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let live = dir.path().join("dst.redb");
    let mut dst = MvccStore::open(&live, config(), options()).unwrap();
    dst.apply_batch(&[normal(1, &Command::put("mine", "kept"))])
        .unwrap();

    // A flipped byte in a chunk's wire form.
    let mut wire = chunks[1].encode();
    wire[30] ^= 0x01;
    assert!(matches!(
        SnapshotChunk::decode_prefix(&wire),
        Err(ReceiveError::BadChunk { seq: 1, .. })
    ));

    // A chunk whose payload no longer matches its checksum.
    let mut rx = SnapshotReceiver::begin(&live, &config(), &options()).unwrap();
    rx.push(&chunks[0]).unwrap();
    let mut bad = chunks[1].clone();
    let mut payload = bad.payload.to_vec();
    payload[10] ^= 0x80;
    bad.payload = payload.into();
    assert!(matches!(rx.push(&bad), Err(ReceiveError::BadChunk { .. })));
    // The receiver is dead; its file is gone once dropped.
    assert!(matches!(
        rx.push(&chunks[1]),
        Err(ReceiveError::Failed { .. })
    ));
    drop(rx);
    assert!(!dir.path().join("dst.redb.incoming").exists());

    // A missing chunk.
    let mut rx = SnapshotReceiver::begin(&live, &config(), &options()).unwrap();
    rx.push(&chunks[0]).unwrap();
    assert!(matches!(
        rx.push(&chunks[2]),
        Err(ReceiveError::OutOfOrder {
            expected: 1,
            got: 2
        })
    ));
    drop(rx);

    // A stream cut short (the last chunk never came).
    let mut rx = SnapshotReceiver::begin(&live, &config(), &options()).unwrap();
    for c in &chunks[..chunks.len() - 1] {
        rx.push(c).unwrap();
    }
    assert!(matches!(rx.finish(), Err(ReceiveError::Sequence { .. })));

    // A chunk re-signed after tampering passes the chunk check but not the
    // record checksums / stream checksum.
    let mut rx = SnapshotReceiver::begin(&live, &config(), &options()).unwrap();
    let mut refused = false;
    for c in &chunks {
        let c = if c.seq == 2 {
            let mut p = c.payload.to_vec();
            p[100] ^= 0x01;
            SnapshotChunk::new(c.seq, c.last, p.into())
        } else {
            c.clone()
        };
        if let Err(e) = rx.push(&c) {
            assert!(matches!(e, ReceiveError::BadStream { .. }), "{e}");
            refused = true;
            break;
        }
    }
    assert!(refused);
    drop(rx);

    // Through it all, the live store never changed.
    assert_eq!(dst.applied_index(), 1);
    assert_eq!(dst.get(b"mine").unwrap().unwrap().value, "kept");
    // And a clean transfer afterwards works.
    let mut rx = SnapshotReceiver::begin(&live, &config(), &options()).unwrap();
    for c in &chunks {
        rx.push(c).unwrap();
    }
    dst.install(rx.finish().unwrap()).unwrap();
    assert_eq!(dst.digest().unwrap(), src.digest().unwrap());
    assert_eq!(dst.get(b"mine").unwrap(), None);
}

#[test]
fn interrupted_transfer_restarts_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let (src, _) = populated(&dir.path().join("src.redb"), 300);
    let chunks: Vec<_> = src
        .snapshot_source(CHUNK_BYTES_MIN)
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let live = dir.path().join("dst.redb");
    let incoming = dir.path().join("dst.redb.incoming");
    let dst = MvccStore::open(&live, config(), options()).unwrap();
    // A process that died mid-transfer leaves a partial file behind (here:
    // the receiver is leaked, as a crash would, so nothing cleans up).
    let mut rx = SnapshotReceiver::begin(&live, &config(), &options()).unwrap();
    for c in &chunks[..chunks.len() / 2] {
        rx.push(c).unwrap();
    }
    std::mem::forget(rx);
    assert!(incoming.exists());
    // The restarted node opens its live file (the partial one is removed)...
    drop(dst);
    let mut dst = MvccStore::open(&live, config(), options()).unwrap();
    assert!(!incoming.exists());
    assert_eq!(dst.applied_index(), 0);
    // ...and a new transfer, from the start, completes.
    std::fs::write(&incoming, b"garbage from an older attempt").unwrap();
    let mut rx = SnapshotReceiver::begin(&live, &config(), &options()).unwrap();
    for c in &chunks {
        rx.push(c).unwrap();
    }
    dst.install(rx.finish().unwrap()).unwrap();
    assert_eq!(dst.digest().unwrap(), src.digest().unwrap());
    assert!(!incoming.exists());
    // The switch is durable: reopening finds the new state.
    drop(dst);
    let dst = MvccStore::open(&live, config(), options()).unwrap();
    assert_eq!(dst.digest().unwrap(), src.digest().unwrap());
}

#[test]
fn a_finished_but_uninstalled_snapshot_is_discarded_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let (src, _) = populated(&dir.path().join("src.redb"), 100);
    let live = dir.path().join("dst.redb");
    let dst = MvccStore::open(&live, config(), options()).unwrap();
    let mut rx = SnapshotReceiver::begin(&live, &config(), &options()).unwrap();
    for c in src.snapshot_source(CHUNK_BYTES_MIN).unwrap() {
        rx.push(&c.unwrap()).unwrap();
    }
    let received = rx.finish().unwrap();
    assert_eq!(received.state().applied_index, 100);
    // Crash before install: the old state stays.
    drop(received);
    drop(dst);
    let dst = MvccStore::open(&live, config(), options()).unwrap();
    assert_eq!(dst.applied_index(), 0);
    assert!(!dir.path().join("dst.redb.incoming").exists());
}

#[test]
fn views_opened_before_an_install_keep_the_old_state() {
    let dir = tempfile::tempdir().unwrap();
    let (src, _) = populated(&dir.path().join("src.redb"), 100);
    let chunks: Vec<_> = src
        .snapshot_source(CHUNK_BYTES_MIN)
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let live = dir.path().join("dst.redb");
    let mut dst = MvccStore::open(&live, config(), options()).unwrap();
    dst.apply_batch(&[normal(1, &Command::put("old", "1"))])
        .unwrap();
    let old_view = dst.view().unwrap();
    let dst = {
        let mut rx = SnapshotReceiver::begin(&live, &config(), &options()).unwrap();
        for c in &chunks {
            rx.push(c).unwrap();
        }
        dst.install(rx.finish().unwrap()).unwrap();
        dst
    };
    assert_eq!(old_view.get(b"old").unwrap().unwrap().value, "1");
    assert_eq!(dst.get(b"old").unwrap(), None);
    assert_eq!(dst.applied_index(), 100);
}
