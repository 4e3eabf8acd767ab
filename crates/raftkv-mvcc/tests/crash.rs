//! Crash consistency: whatever instant the process or the machine dies at,
//! the reopened store is exactly the state at its durable applied index
//! (compared with KvStore's digest after that many entries), and that index
//! is the last checkpoint's (or the one in progress).

mod common;

use std::sync::{Arc, Mutex};

use common::*;
use raft_core::rng::SplitMix64;
use raft_core::StateMachine;
use raftkv_mvcc::MvccStore;
use raftkv_state::{Command, KvStore};
use redb::{BackendError, StorageBackend};

/// A random workload: `steps` batches of 1-8 entries, with a checkpoint
/// after some batches. Calls `observe` after every batch and checkpoint.
fn run(
    seed: u64,
    steps: usize,
    store: &mut MvccStore,
    kv: &mut KvStore,
    digests: &mut Vec<u64>,
    mut observe: impl FnMut(&MvccStore, Phase),
) {
    let mut rng = SplitMix64::new(seed);
    for _ in 0..steps {
        let n = 1 + rng.next_u64() % 8;
        let mut batch = Vec::new();
        for _ in 0..n {
            let index = kv.applied_index() + 1;
            let key = format!("k{}", rng.next_u64() % 12);
            let cmd = match rng.next_u64() % 4 {
                0 => Command::delete(key),
                _ => Command::put(
                    key,
                    format!("v{index}-{}", "x".repeat((rng.next_u64() % 300) as usize)),
                ),
            }
            .with_session(rng.next_u64() % 3, index);
            let e = normal(index, &cmd);
            kv.apply(&e).unwrap();
            digests.push(kv.digest());
            batch.push(e);
        }
        store.apply_batch(&batch).unwrap();
        observe(store, Phase::Applied);
        if rng.next_u64().is_multiple_of(5) {
            observe(store, Phase::BeforeCheckpoint);
            store.checkpoint().unwrap();
            observe(store, Phase::AfterCheckpoint);
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Applied,
    BeforeCheckpoint,
    AfterCheckpoint,
}

/// The process dies (SIGKILL): everything written to the file stays, in
/// the page cache, but the store is not closed. Copying the file between
/// calls is that crash's disk image.
#[test]
fn process_crash_at_any_call_reopens_at_the_durable_index() {
    let config = small_config();
    for seed in 0..4 {
        let dir = tempfile::tempdir().unwrap();
        let path = store_path(&dir);
        let mut store = open(&path, &config);
        let mut kv = KvStore::new(config.clone()).unwrap();
        let mut digests = vec![kv.digest()];
        let mut images = Vec::new();
        let mut copies = 0;
        run(seed, 40, &mut store, &mut kv, &mut digests, |s, _| {
            copies += 1;
            let copy = dir.path().join(format!("copy-{copies}.redb"));
            std::fs::copy(&path, &copy).unwrap();
            images.push((copy, s.durable_applied_index()));
        });
        assert!(
            store.durable_applied_index() > 0,
            "seed {seed}: some checkpoint happened"
        );
        for (copy, durable) in images {
            let reopened = open(&copy, &config);
            assert_eq!(reopened.applied_index(), durable, "seed {seed} {copy:?}");
            assert_eq!(
                reopened.digest().unwrap(),
                digests[durable as usize],
                "seed {seed} {copy:?}: state at index {durable}"
            );
            reopened.view().unwrap().verify().unwrap();
        }
    }
}

/// A disk in memory that knows what was synced: a power loss keeps the
/// synced image plus any subset of the later writes, some of them torn.
#[derive(Debug, Default)]
struct DiskState {
    visible: Vec<u8>,
    durable: Vec<u8>,
    /// Writes since the last sync, in order: (offset, bytes) or a length.
    pending: Vec<Op>,
    /// When set, each sync first records (durable image, pending writes):
    /// the power-loss images possible just before that sync returned.
    capture: bool,
    captured: Vec<(Vec<u8>, Vec<Op>)>,
}

#[derive(Clone, Debug)]
enum Op {
    Write(u64, Vec<u8>),
    SetLen(u64),
}

#[derive(Clone, Debug)]
struct MemDisk(Arc<Mutex<DiskState>>);

impl MemDisk {
    fn from_image(image: Vec<u8>) -> MemDisk {
        MemDisk(Arc::new(Mutex::new(DiskState {
            visible: image.clone(),
            durable: image,
            ..DiskState::default()
        })))
    }

    /// A power-loss image: the synced bytes, then each later write kept,
    /// dropped or torn (a prefix kept, at a 512-byte boundary) at random.
    fn power_loss_image(durable: &[u8], pending: &[Op], rng: &mut SplitMix64) -> Vec<u8> {
        let mut image = durable.to_vec();
        for op in pending {
            match op {
                Op::SetLen(len) => {
                    if rng.next_u64().is_multiple_of(2) {
                        image.resize(*len as usize, 0);
                    }
                }
                Op::Write(offset, data) => {
                    let keep = match rng.next_u64() % 3 {
                        0 => 0,
                        1 => data.len(),
                        _ => ((rng.next_u64() as usize % data.len().max(1)) / 512) * 512,
                    };
                    let end = *offset as usize + keep;
                    if image.len() < end {
                        image.resize(end, 0);
                    }
                    image[*offset as usize..end].copy_from_slice(&data[..keep]);
                }
            }
        }
        image
    }
}

impl StorageBackend for MemDisk {
    fn len(&self) -> Result<u64, BackendError> {
        Ok(self.0.lock().unwrap().visible.len() as u64)
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), BackendError> {
        let d = self.0.lock().unwrap();
        let end = offset as usize + out.len();
        if end > d.visible.len() {
            return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into());
        }
        out.copy_from_slice(&d.visible[offset as usize..end]);
        Ok(())
    }

    fn set_len(&self, len: u64) -> Result<(), BackendError> {
        let mut d = self.0.lock().unwrap();
        d.visible.resize(len as usize, 0);
        d.pending.push(Op::SetLen(len));
        Ok(())
    }

    fn sync_data(&self) -> Result<(), BackendError> {
        let mut d = self.0.lock().unwrap();
        if d.capture {
            let point = (d.durable.clone(), d.pending.clone());
            d.captured.push(point);
        }
        d.durable = d.visible.clone();
        d.pending.clear();
        Ok(())
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), BackendError> {
        let mut d = self.0.lock().unwrap();
        let end = offset as usize + data.len();
        if d.visible.len() < end {
            d.visible.resize(end, 0);
        }
        d.visible[offset as usize..end].copy_from_slice(data);
        d.pending.push(Op::Write(offset, data.to_vec()));
        Ok(())
    }
}

/// The machine loses power: only synced writes are sure to be on disk; any
/// subset of the others may be, torn or whole. Crash points: after every
/// call, and inside every checkpoint just before each of its syncs.
#[test]
fn power_loss_at_any_point_reopens_at_the_durable_index() {
    let config = small_config();
    let mut reopened_images = 0;
    for seed in 0..3 {
        let disk = MemDisk::from_image(Vec::new());
        let mut store =
            MvccStore::open_with_backend(disk.clone(), "mem-disk", config.clone(), options())
                .unwrap();
        let mut kv = KvStore::new(config.clone()).unwrap();
        let mut digests = vec![kv.digest()];
        let mut rng = SplitMix64::new(seed ^ 0xdead_beef);
        // (image, indexes the reopened store may be at)
        let mut images: Vec<(Vec<u8>, Vec<u64>)> = Vec::new();
        let mut durable_before = 0;
        run(seed, 30, &mut store, &mut kv, &mut digests, |s, phase| {
            let mut d = disk.0.lock().unwrap();
            match phase {
                Phase::BeforeCheckpoint => {
                    durable_before = s.durable_applied_index();
                    d.capture = true;
                }
                Phase::AfterCheckpoint => {
                    d.capture = false;
                    let captured = std::mem::take(&mut d.captured);
                    for (durable, pending) in captured {
                        for _ in 0..3 {
                            let image = MemDisk::power_loss_image(&durable, &pending, &mut rng);
                            images.push((image, vec![durable_before, s.durable_applied_index()]));
                        }
                    }
                }
                Phase::Applied => {}
            }
            for _ in 0..2 {
                let image = MemDisk::power_loss_image(&d.durable, &d.pending, &mut rng);
                images.push((image, vec![s.durable_applied_index()]));
            }
        });
        for (image, allowed) in images {
            let reopened = MvccStore::open_with_backend(
                MemDisk::from_image(image),
                "mem-disk-copy",
                config.clone(),
                options(),
            )
            .unwrap();
            let index = reopened.applied_index();
            assert!(
                allowed.contains(&index),
                "seed {seed}: reopened at {index}, allowed {allowed:?}"
            );
            assert_eq!(
                reopened.digest().unwrap(),
                digests[index as usize],
                "seed {seed} at {index}"
            );
            reopened.view().unwrap().verify().unwrap();
            reopened_images += 1;
        }
    }
    assert!(reopened_images > 100, "{reopened_images}");
}

/// Replaying the log after a crash brings the store back exactly: entries
/// at or below the durable index are ignored, the rest applied.
#[test]
fn replay_after_crash_converges() {
    let config = small_config();
    let dir = tempfile::tempdir().unwrap();
    let path = store_path(&dir);
    let mut store = open(&path, &config);
    let mut kv = KvStore::new(config.clone()).unwrap();
    let mut log = Vec::new();
    for i in 1..=60u64 {
        let e = normal(
            i,
            &Command::put(format!("k{}", i % 7), format!("{i}")).with_session(i % 3, i),
        );
        kv.apply(&e).unwrap();
        log.push(e);
    }
    store.apply_batch(&log[..25]).unwrap();
    assert_eq!(store.checkpoint().unwrap(), 25);
    store.apply_batch(&log[25..40]).unwrap();
    let crash_copy = dir.path().join("crash.redb");
    std::fs::copy(&path, &crash_copy).unwrap();
    let mut reopened = open(&crash_copy, &config);
    assert_eq!(reopened.durable_applied_index(), 25);
    // The host replays its log from an older point than needed: harmless.
    let responses = reopened.apply_batch(&log[10..]).unwrap();
    assert!(responses[..15].iter().all(|r| matches!(
        r,
        raftkv_state::Response::AlreadyApplied { applied_index: 25 }
    )));
    assert_eq!(reopened.applied_index(), 60);
    assert_eq!(reopened.digest().unwrap(), kv.digest());
}
