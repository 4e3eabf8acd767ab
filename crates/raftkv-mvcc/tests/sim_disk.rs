//! The store on the simulator's disk (raft-storage's `SimDisk`): after a
//! crash, whatever its timing, the reopened store is at an applied index at
//! or above the durable one before the crash, and its data and application
//! record equal a replay of the log up to that index. Failed fsyncs and
//! writes stop the store with a typed error; snapshots install on the disk.

mod common;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use common::*;
use raft_core::rng::SplitMix64;
use raft_core::{Entry, StateMachine};
use raft_storage::{Disk, FaultKind, SimDisk};
use raftkv_mvcc::snapshot::CHUNK_BYTES_MIN;
use raftkv_mvcc::{ApplyError, CheckpointError, DiskBackend, Fault, MvccStore, SnapshotReceiver};
use raftkv_state::{Command, KvConfig, KvStore};

/// Small session limits (eviction and expiry happen), values large enough
/// that the workload's puts are accepted.
fn sim_config() -> KvConfig {
    KvConfig {
        key_bytes_max: 8,
        value_bytes_max: 512,
        sessions_max: 2,
        session_ttl_entries: 6,
        ..KvConfig::default()
    }
}

fn dir() -> PathBuf {
    PathBuf::from("/data")
}

fn live() -> PathBuf {
    dir().join("state.redb")
}

fn new_disk(seed: u64) -> SimDisk {
    let disk = SimDisk::new(seed);
    disk.create_dir_all(&dir()).unwrap();
    disk.sync_dir(Path::new("/")).unwrap();
    disk
}

fn open_on(disk: &SimDisk, config: &KvConfig) -> MvccStore {
    MvccStore::open_on_disk(disk.clone(), live(), config.clone(), options()).expect("open on disk")
}

/// The log and what a replay of it gives after each index.
struct Reference {
    log: Vec<Entry>,
    /// `digests[i]`: KvStore's digest after entry `i` (0: empty).
    digests: Vec<u64>,
    /// `apps[i]`: the application record after entry `i`'s batch.
    apps: Vec<Vec<u8>>,
    /// The application record set with the batch ending at an index.
    app_set_at: std::collections::BTreeMap<u64, Vec<u8>>,
    kv: KvStore,
}

impl Reference {
    fn new(config: &KvConfig) -> Reference {
        let kv = KvStore::new(config.clone()).unwrap();
        Reference {
            log: Vec::new(),
            digests: vec![kv.digest()],
            apps: vec![Vec::new()],
            app_set_at: Default::default(),
            kv,
        }
    }

    /// Appends a random batch to the log; returns its entries and app.
    fn extend(&mut self, rng: &mut SplitMix64) -> (Vec<Entry>, Option<Vec<u8>>) {
        let n = 1 + rng.next_u64() % 8;
        let mut batch = Vec::new();
        for _ in 0..n {
            let index = self.log.len() as u64 + 1;
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
            self.kv.apply(&e).unwrap();
            self.digests.push(self.kv.digest());
            self.log.push(e.clone());
            batch.push(e);
        }
        let app = rng
            .next_u64()
            .is_multiple_of(3)
            .then(|| format!("book@{}", self.log.len()).into_bytes());
        let last_app = match &app {
            Some(a) => {
                self.app_set_at.insert(self.log.len() as u64, a.clone());
                a.clone()
            }
            None => self.apps.last().unwrap().clone(),
        };
        for _ in 0..n {
            self.apps.push(last_app.clone());
        }
        (batch, app)
    }

    /// Asserts `store` holds exactly the replay up to its applied index.
    fn check(&self, store: &MvccStore, what: &str) {
        let index = store.applied_index() as usize;
        assert!(
            index <= self.log.len(),
            "{what}: index {index} beyond the log"
        );
        assert_eq!(
            store.digest().unwrap(),
            self.digests[index],
            "{what}: data at {index}"
        );
        assert_eq!(
            store.app_state(),
            &self.apps[index][..],
            "{what}: app at {index}"
        );
        store.view().unwrap().verify().unwrap();
    }

    /// Brings a reopened store up to the end of the log, as a host replays
    /// its log (with the application records of the batches replayed).
    fn replay(&self, store: &mut MvccStore) {
        let from = store.applied_index() as usize;
        for (i, e) in self.log.iter().enumerate().skip(from) {
            let index = i as u64 + 1;
            let app = self.app_set_at.get(&index).cloned();
            store
                .apply_batch_with_app(std::slice::from_ref(e), app)
                .unwrap();
        }
    }
}

/// Crashes at random moments (between calls), many seeds: the property of
/// the module documentation, and the replay brings the store back.
#[test]
fn crash_and_reopen_over_many_seeds() {
    let config = sim_config();
    let mut above_durable = 0;
    for seed in 0..32u64 {
        let disk = new_disk(seed);
        let mut store = open_on(&disk, &config);
        let mut reference = Reference::new(&config);
        let mut rng = SplitMix64::new(seed);
        for _round in 0..4 {
            for _ in 0..(5 + rng.next_u64() % 20) {
                let (batch, app) = reference.extend(&mut rng);
                store.apply_batch_with_app(&batch, app).unwrap();
                if rng.next_u64().is_multiple_of(4) {
                    store.checkpoint().unwrap();
                }
            }
            let durable = store.durable_applied_index();
            disk.crash();
            // Every call on the old store now fails (stale handles); it is
            // dropped as a crashed process's would be.
            drop(store);
            store = open_on(&disk, &config);
            let index = store.applied_index();
            assert!(
                index >= durable,
                "seed {seed}: reopened at {index} < durable {durable}"
            );
            if index > durable {
                above_durable += 1;
            }
            assert_eq!(store.durable_applied_index(), index);
            reference.check(&store, &format!("seed {seed} after crash"));
            reference.replay(&mut store);
            reference.check(&store, &format!("seed {seed} after replay"));
        }
    }
    // redb never makes a commit without fsync the recovered one: see the
    // disk module documentation.
    assert_eq!(above_durable, 0);
}

/// Crashes inside checkpoints: after every disk operation of a checkpoint,
/// a crashed copy of the disk reopens at the index before or the one after.
#[test]
fn crash_inside_a_checkpoint_reopens_before_or_after_it() {
    let config = sim_config();
    let mut images = 0;
    let mut after = 0;
    for seed in 0..24u64 {
        let disk = new_disk(seed);
        let mut store = open_on(&disk, &config);
        let mut reference = Reference::new(&config);
        let mut rng = SplitMix64::new(seed ^ 0x5eed);
        for step in 0..12 {
            let (batch, app) = reference.extend(&mut rng);
            store.apply_batch_with_app(&batch, app).unwrap();
            if step % 3 != 2 {
                continue;
            }
            let before = store.durable_applied_index();
            let forks: Arc<Mutex<Vec<SimDisk>>> = Arc::default();
            let sink = forks.clone();
            let mut fork_seed = seed * 1000 + step;
            disk.set_hook(Some(Box::new(move |_op, fork| {
                fork_seed += 1;
                sink.lock().unwrap().push(fork.crashed(fork_seed));
            })));
            let target = store.checkpoint().unwrap();
            disk.set_hook(None);
            for crashed in forks.lock().unwrap().drain(..) {
                let reopened = open_on(&crashed, &config);
                let index = reopened.applied_index();
                assert!(
                    index == before || index == target,
                    "seed {seed}: reopened at {index}, expected {before} or {target}"
                );
                after += u64::from(index == target && target != before);
                reference.check(&reopened, &format!("seed {seed} step {step}"));
                images += 1;
            }
        }
    }
    assert!(images > 100, "{images} crash images");
    assert!(
        after > 0,
        "some crash after the header write kept the checkpoint"
    );
}

#[test]
fn a_failed_fsync_is_fatal_and_typed() {
    let config = sim_config();
    let disk = new_disk(7);
    let mut store = open_on(&disk, &config);
    let mut reference = Reference::new(&config);
    let mut rng = SplitMix64::new(7);
    let (batch, app) = reference.extend(&mut rng);
    store.apply_batch_with_app(&batch, app).unwrap();
    let durable = store.checkpoint().unwrap();
    let (batch, app) = reference.extend(&mut rng);
    store.apply_batch_with_app(&batch, app).unwrap();
    disk.fail_next_syncs(1, FaultKind::Io);
    let err = store.checkpoint().unwrap_err();
    let CheckpointError::Fault(Fault::Engine { file, source }) = &err else {
        panic!("expected an engine fault, got {err:?}");
    };
    assert_eq!(file, &live());
    assert!(source.to_string().contains("error"), "{source}");
    assert_eq!(store.durable_applied_index(), durable, "not advanced");
    // Never retried, never ignored: every later call is refused.
    assert!(matches!(
        store.checkpoint(),
        Err(CheckpointError::Fault(Fault::Failed { .. }))
    ));
    let (batch, _) = reference.extend(&mut rng);
    assert!(matches!(
        store.apply_batch(&batch),
        Err(ApplyError::Fault(Fault::Failed { .. }))
    ));
    assert!(store.get(b"k1").is_err());
    // The disk may have dropped the data the failed fsync covered; a crash
    // and a reopen give a consistent state at or above the durable index.
    disk.crash();
    drop(store);
    let mut store = open_on(&disk, &config);
    assert!(store.applied_index() >= durable);
    reference.check(&store, "after the failed fsync");
    reference.replay(&mut store);
    reference.check(&store, "replayed");
}

#[test]
fn failed_writes_stop_the_store_and_a_reopen_recovers() {
    let config = sim_config();
    let mut stopped = 0;
    for seed in 0..16u64 {
        let disk = new_disk(seed);
        let mut store = open_on(&disk, &config);
        let mut reference = Reference::new(&config);
        let mut rng = SplitMix64::new(seed);
        let kind = if seed % 2 == 0 {
            FaultKind::NoSpace
        } else {
            FaultKind::Io
        };
        let mut durable = 0;
        let mut first_error = None;
        for step in 0..40 {
            if step == 10 {
                disk.fail_next_writes(1 + seed % 3, kind);
            }
            let (batch, app) = reference.extend(&mut rng);
            if let Err(e) = store.apply_batch_with_app(&batch, app) {
                first_error = Some(format!("{e}"));
                assert!(
                    matches!(e, ApplyError::Fault(Fault::Engine { .. })),
                    "{e:?}"
                );
                break;
            }
            match store.checkpoint() {
                Ok(d) => durable = d,
                Err(e) => {
                    first_error = Some(format!("{e}"));
                    assert!(
                        matches!(e, CheckpointError::Fault(Fault::Engine { .. })),
                        "{e:?}"
                    );
                    break;
                }
            }
        }
        let message =
            first_error.expect("an injected write failure surfaces by the next checkpoint");
        assert!(message.contains("state.redb"), "names the file: {message}");
        assert!(matches!(
            store.checkpoint(),
            Err(CheckpointError::Fault(Fault::Failed { .. }))
        ));
        stopped += 1;
        // The injected faults not consumed yet would fail the reopen too.
        disk.fail_next_writes(0, kind);
        disk.crash();
        drop(store);
        let mut store = open_on(&disk, &config);
        assert!(store.applied_index() >= durable, "seed {seed}");
        reference.check(&store, &format!("seed {seed} reopened"));
        reference.replay(&mut store);
        reference.check(&store, &format!("seed {seed} replayed"));
    }
    assert_eq!(stopped, 16);
}

/// A snapshot received on the simulated disk and installed there; a crash
/// at any point of the transfer leaves the old state or the new one, and a
/// crash after `install` returned leaves the new one.
#[test]
fn snapshot_install_on_the_disk_survives_crashes() {
    let config = KvConfig {
        sessions_max: 10,
        ..KvConfig::default()
    };
    for seed in 0..8u64 {
        // The source, on its own disk.
        let src_disk = new_disk(1000 + seed);
        let mut src = open_on(&src_disk, &config);
        let mut reference = Reference::new(&config);
        let mut rng = SplitMix64::new(seed);
        for _ in 0..30 {
            let (batch, app) = reference.extend(&mut rng);
            src.apply_batch_with_app(&batch, app).unwrap();
        }
        let chunks: Vec<_> = src
            .snapshot_source(CHUNK_BYTES_MIN)
            .unwrap()
            .map(|c| c.unwrap())
            .collect();
        assert!(chunks.len() > 1);
        // The destination, with a state of its own (a short prefix).
        let disk = new_disk(seed);
        let mut dst = open_on(&disk, &config);
        dst.apply_batch_with_app(&reference.log[..3], Some(b"old".to_vec()))
            .unwrap();
        dst.checkpoint().unwrap();
        let old_digest = dst.digest().unwrap();
        let mut forks = Vec::new();
        let mut rx = dst.snapshot_receiver().unwrap();
        for (i, c) in chunks.iter().enumerate() {
            rx.push(c).unwrap();
            if i % 3 == 0 {
                forks.push((disk.crashed_copy(seed * 77 + i as u64), false));
            }
        }
        let received = rx.finish().unwrap();
        forks.push((disk.crashed_copy(seed * 77 + 1000), false));
        dst.install(received).unwrap();
        forks.push((disk.crashed_copy(seed * 77 + 2000), true));
        assert_eq!(dst.applied_index(), src.applied_index());
        reference.check(&dst, "installed");
        assert_eq!(dst.durable_applied_index(), dst.applied_index());
        for (crashed, installed) in forks {
            let reopened = open_on(&crashed, &config);
            if installed || reopened.applied_index() != 3 {
                assert_eq!(reopened.applied_index(), src.applied_index(), "seed {seed}");
                reference.check(&reopened, "new state after a crash");
            } else {
                assert_eq!(reopened.digest().unwrap(), old_digest);
                assert_eq!(reopened.app_state(), b"old");
            }
            assert!(
                crashed
                    .read_file(&dir().join("state.redb.incoming"))
                    .is_err(),
                "the open removed the leftover transfer"
            );
        }
        // The installed store goes on: more entries, a checkpoint, a crash.
        reference.replay(&mut dst);
        let (batch, app) = reference.extend(&mut rng);
        dst.apply_batch_with_app(&batch, app).unwrap();
        let durable = dst.checkpoint().unwrap();
        disk.crash();
        drop(dst);
        let dst = open_on(&disk, &config);
        assert!(dst.applied_index() >= durable);
        reference.check(&dst, "after install, apply, crash");
    }
}

/// The generic path: a store on a caller's backend receives into a fresh
/// backend the caller supplies, and `install` swaps the engine.
#[test]
fn install_into_a_callers_backend() {
    let config = sim_config();
    let disk = new_disk(3);
    let open_file = |name: &str, create: bool| {
        let path = dir().join(name);
        let f = if create {
            disk.create(&path)
        } else {
            disk.open(&path)
        }
        .unwrap();
        DiskBackend::new(f, path)
    };
    let mut src = MvccStore::open(
        tempfile::tempdir().unwrap().path().join("src.redb"),
        config.clone(),
        options(),
    )
    .unwrap();
    let mut reference = Reference::new(&config);
    let mut rng = SplitMix64::new(3);
    for _ in 0..20 {
        let (batch, app) = reference.extend(&mut rng);
        src.apply_batch_with_app(&batch, app).unwrap();
    }
    let mut dst =
        MvccStore::open_with_backend(open_file("a.redb", true), "a", config.clone(), options())
            .unwrap();
    // A non-empty backend is refused.
    assert!(SnapshotReceiver::begin_with_backend(
        open_file("a.redb", false),
        "a",
        &config,
        &options()
    )
    .is_err());
    // So is installing a file-system snapshot into a backend store.
    assert!(dst.snapshot_receiver().is_err());
    let mut rx =
        SnapshotReceiver::begin_with_backend(open_file("b.redb", true), "b", &config, &options())
            .unwrap();
    for c in src.snapshot_source(CHUNK_BYTES_MIN).unwrap() {
        rx.push(&c.unwrap()).unwrap();
    }
    dst.install(rx.finish().unwrap()).unwrap();
    reference.check(&dst, "installed");
    assert_eq!(dst.applied_index(), 20.max(dst.applied_index()));
    // Durable on its backend: a crash and a reopen of b.redb give it back.
    disk.crash();
    drop(dst);
    let reopened =
        MvccStore::open_with_backend(open_file("b.redb", false), "b", config.clone(), options())
            .unwrap();
    assert_eq!(reopened.applied_index(), src.applied_index());
    reference.check(&reopened, "reopened");
}

/// Opens the store on `disk` and reads everything; the state, or the
/// error's message. A panic escaping the store fails the test.
fn read_all(disk: &SimDisk, config: &KvConfig) -> Result<(u64, Vec<u8>, u64), String> {
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let s = |e: &dyn std::fmt::Display| e.to_string();
        let store = MvccStore::open_on_disk(disk.clone(), live(), config.clone(), options())
            .map_err(|e| s(&e))?;
        store
            .view()
            .map_err(|e| s(&e))?
            .verify()
            .map_err(|e| s(&e))?;
        for k in 0..12 {
            store.get(format!("k{k}").as_bytes()).map_err(|e| s(&e))?;
        }
        let digest = store.digest().map_err(|e| s(&e))?;
        Ok::<_, String>((digest, store.app_state().to_vec(), store.applied_index()))
    }));
    outcome.unwrap_or_else(|_| panic!("a panic escaped the store"))
}

fn filled_disk(seed: u64, config: &KvConfig) -> (SimDisk, Reference) {
    let disk = new_disk(seed);
    let mut store = open_on(&disk, config);
    let mut reference = Reference::new(config);
    let mut rng = SplitMix64::new(seed);
    for _ in 0..20 {
        let (batch, app) = reference.extend(&mut rng);
        store.apply_batch_with_app(&batch, app).unwrap();
    }
    store.checkpoint().unwrap();
    drop(store);
    (disk, reference)
}

/// A flipped bit in a live value on the simulated disk is refused with an
/// error naming the file, never served. (The bit is flipped in every copy
/// of the value in the file, stale page copies included, so the live one
/// is surely hit.)
#[test]
fn a_flipped_bit_in_a_live_value_is_refused() {
    let config = sim_config();
    for seed in 0..16u64 {
        let (disk, reference) = filled_disk(seed, &config);
        // The newest put's value: live unless deleted or overwritten since.
        let store = open_on(&disk, &config);
        let value = (1..=12)
            .filter_map(|k| store.get(format!("k{k}").as_bytes()).unwrap())
            .max_by_key(|kv| kv.mod_revision)
            .expect("some key is live")
            .value;
        drop(store);
        let image = disk.read_file(&live()).unwrap();
        let hits: Vec<usize> = image
            .windows(value.len())
            .enumerate()
            .filter(|(_, w)| *w == &value[..])
            .map(|(i, _)| i)
            .collect();
        assert!(!hits.is_empty(), "seed {seed}: the value is in the file");
        for at in hits {
            disk.corrupt(&live(), (at + value.len() / 2) as u64, (seed % 8) as u8)
                .unwrap();
        }
        let message = read_all(&disk, &config).expect_err("a damaged live value is refused");
        assert!(message.contains("state.redb"), "seed {seed}: {message}");
        let _ = reference;
    }
}

/// Random bit flips in the used bytes of the file: every open and read
/// either refuses with an error naming the file or serves exactly the real
/// state (the flip hit a stale page copy or unused bytes).
#[test]
fn random_bit_flips_on_the_disk_are_refused_or_harmless() {
    let config = sim_config();
    let (mut refused, mut harmless) = (0, 0);
    for flip in 0..60u64 {
        let (disk, reference) = filled_disk(flip % 3, &config);
        let image = disk.read_file(&live()).unwrap();
        // Most of a small file is zeroed free space, where a flip is
        // harmless by construction: flip bytes in use.
        let used: Vec<u64> = (0..image.len() as u64)
            .filter(|&i| image[i as usize] != 0)
            .collect();
        let offset = used[(SplitMix64::new(flip ^ 0xbad).next_u64() % used.len() as u64) as usize];
        disk.corrupt(&live(), offset, (flip % 8) as u8).unwrap();
        match read_all(&disk, &config) {
            Err(message) => {
                assert!(message.contains("state.redb"), "flip {flip}: {message}");
                refused += 1;
            }
            Ok((digest, app, index)) => {
                assert_eq!(digest, reference.digests[index as usize], "flip {flip}");
                assert_eq!(app, reference.apps[index as usize], "flip {flip}");
                harmless += 1;
            }
        }
    }
    assert_eq!(refused + harmless, 60);
}

/// A live file found empty (it is always made durable before it is named,
/// so it was truncated since) is refused, never re-initialized as an empty
/// store.
#[test]
fn an_empty_live_file_on_the_disk_is_refused() {
    let config = sim_config();
    let (disk, _) = filled_disk(5, &config);
    let f = disk.open(&live()).unwrap();
    raft_storage::DiskFile::set_len(&f, 0).unwrap();
    let err = MvccStore::open_on_disk(disk.clone(), live(), config.clone(), options()).unwrap_err();
    assert!(err.to_string().contains("state.redb"), "{err}");
    assert!(err.to_string().contains("empty"), "{err}");
}
