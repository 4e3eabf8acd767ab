//! Crash at every point: a random workload of appends, truncations, hard
//! state changes, syncs, compactions and snapshot installs runs against the
//! simulated disk. After *every* mutating disk operation (each write, each
//! fsync, each create, rename, removal and directory fsync) a crashed copy of
//! the disk is taken (unsynced data lost or torn at a random byte), recovered,
//! and checked: the recovered store must equal the state acknowledged by the
//! last successful `sync` plus some prefix of the operations issued after it
//! (whole entries, never half of one), so everything acknowledged is there
//! exactly, nothing later is half there, and the hard state never regresses.
//!
//! Size: `RAFT_STORAGE_CRASH_STEPS` (default 1500 steps per seed) and
//! `RAFT_STORAGE_CRASH_SEEDS` (default 2 seeds).

mod common;

use std::sync::{Arc, Mutex};

use common::*;
use raft_core::{Entry, HardState, LogStore, MemStorage, Snapshot};
use raft_storage::{SimDisk, Store, StoreConfig};

#[derive(Clone, Debug)]
enum Op {
    /// One entry; the store replaces the suffix from its index.
    Append(Entry),
    Hard(HardState),
    /// Snapshot install without its commit bump (a separate `Hard`).
    Install(Snapshot),
    Compact(Snapshot),
}

fn apply(m: &mut MemStorage, op: &Op) {
    match op {
        Op::Append(e) => m.append(std::slice::from_ref(e)).unwrap(),
        Op::Hard(hs) => m.set_hard_state(*hs),
        Op::Install(s) => {
            let hs = m.hard_state();
            m.apply_snapshot(s.clone());
            m.set_hard_state(hs);
        }
        Op::Compact(s) => m.compact(s.clone()).unwrap(),
    }
}

/// What the test knows: the acknowledged state and what was issued since.
struct Tracker {
    synced: MemStorage,
    pending: Vec<Op>,
    checks: u64,
}

impl Tracker {
    fn current(&self) -> MemStorage {
        let mut m = self.synced.clone();
        for op in &self.pending {
            apply(&mut m, op);
        }
        m
    }

    fn acknowledge(&mut self) {
        for op in std::mem::take(&mut self.pending) {
            apply(&mut self.synced, &op);
        }
    }
}

fn same<S: LogStore>(got: &S, want: &MemStorage) -> bool {
    got.initial_state().unwrap() == want.initial_state().unwrap()
        && got.first_index() == want.first_index()
        && got.last_index() == want.last_index()
        && all_entries(got) == all_entries(want)
        && got.snapshot().unwrap() == want.snapshot().unwrap()
}

fn describe<S: LogStore>(s: &S) -> String {
    let st = s.initial_state().unwrap();
    let ents: Vec<_> = all_entries(s).iter().map(|e| (e.index, e.term)).collect();
    format!(
        "hs={:?} snap=({}, {}) log={:?}",
        st.hard_state, st.snapshot_meta.last_index, st.snapshot_meta.last_term, ents
    )
}

fn check_recovered(disk: SimDisk, tracker: &Tracker, config: &StoreConfig, what: &str) {
    let store = match Store::open(disk, "/data", CLUSTER, NODE, config.clone()) {
        Ok(s) => s,
        Err(e) => panic!("{what}: recovery failed: {e}"),
    };
    let mut m = tracker.synced.clone();
    if same(&store, &m) {
        return;
    }
    for op in &tracker.pending {
        apply(&mut m, op);
        if same(&store, &m) {
            return;
        }
    }
    panic!(
        "{what}: recovered state is not the acknowledged state plus a prefix of later writes\n\
         recovered: {}\nacknowledged: {}\nissued since: {:?}",
        describe(&store),
        describe(&tracker.synced),
        tracker.pending.iter().map(short).collect::<Vec<_>>()
    );
}

fn short(op: &Op) -> String {
    match op {
        Op::Append(e) => format!("E{}@{}", e.index, e.term),
        Op::Hard(h) => format!("H{h:?}"),
        Op::Install(s) => format!("I{}@{}", s.meta.last_index, s.meta.last_term),
        Op::Compact(s) => format!("C{}@{}", s.meta.last_index, s.meta.last_term),
    }
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }
}

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn run(seed: u64, steps: u64) -> u64 {
    let config = StoreConfig {
        segment_bytes_max: 4096,
        cache_bytes_max: 1500,
        entry_bytes_max: 1 << 16,
    };
    let disk = SimDisk::new(seed);
    let store = Store::bootstrap(
        disk.clone(),
        "/data",
        CLUSTER,
        NODE,
        members(),
        config.clone(),
    )
    .unwrap();
    let tracker = Arc::new(Mutex::new(Tracker {
        synced: MemStorage::new_with_membership(members()),
        pending: Vec::new(),
        checks: 0,
    }));
    {
        let tracker = tracker.clone();
        let config = config.clone();
        disk.set_hook(Some(Box::new(move |op, fork| {
            let mut t = tracker.lock().unwrap();
            t.checks += 1;
            let crashed = fork.crashed(seed.wrapping_mul(1_000_003) ^ op.number);
            let what = format!(
                "seed {seed}, crash after op {} {:?} {:?}",
                op.number, op.kind, op.path
            );
            check_recovered(crashed, &t, &config, &what);
        })));
    }
    let mut rng = Rng(seed);
    let issue = |ops: Vec<Op>| tracker.lock().unwrap().pending.extend(ops);
    for _ in 0..steps {
        let cur = tracker.lock().unwrap().current();
        let hs = cur.hard_state();
        let (first, last) = (cur.first_index(), cur.last_index());
        let last_term = cur.term(last).unwrap();
        match rng.below(100) {
            0..=44 => {
                // Append, sometimes replacing a suffix after the commit index.
                let lo = hs.commit.max(first - 1) + 1;
                let start = if lo <= last && rng.below(5) == 0 {
                    rng.range(lo, last)
                } else {
                    last + 1
                };
                let term = hs.term.max(last_term) + u64::from(start <= last);
                let n = rng.range(1, 8);
                let batch: Vec<Entry> = (start..start + n)
                    .map(|i| {
                        // Now and then a payload large enough to be written
                        // in place (not copied into the encoding buffer).
                        let len = if rng.below(40) == 0 {
                            rng.range(4096, 4600)
                        } else {
                            rng.below(300)
                        };
                        entry(i, term, len as usize)
                    })
                    .collect();
                issue(batch.iter().cloned().map(Op::Append).collect());
                store.append(&batch).unwrap();
            }
            45..=64 => {
                let mut new = hs;
                if rng.below(3) == 0 {
                    new.term += 1;
                    new.vote = None;
                }
                if new.vote.is_none() && rng.below(2) == 0 {
                    new.vote = Some(rng.range(1, 3));
                }
                new.commit = rng.range(hs.commit, last);
                issue(vec![Op::Hard(new)]);
                store.set_hard_state(new).unwrap();
            }
            65..=89 => {
                store.sync().unwrap();
                tracker.lock().unwrap().acknowledge();
            }
            90..=95 => {
                let hi = hs.commit.min(last);
                if hi >= first {
                    let idx = rng.range(first, hi);
                    let snap = snapshot_at(idx, cur.term(idx).unwrap(), &format!("s{idx}"));
                    issue(vec![Op::Compact(snap.clone())]);
                    store.compact(&snap).unwrap();
                    // compact syncs.
                    tracker.lock().unwrap().acknowledge();
                }
            }
            _ => {
                // A snapshot from the leader: matching, conflicting or ahead.
                let idx = rng.range(first, last + 5);
                let term = if idx <= hs.commit || (idx <= last && rng.below(2) == 0) {
                    match cur.term(idx) {
                        Ok(t) => t,
                        Err(_) => continue,
                    }
                } else {
                    hs.term.max(last_term) + 1
                };
                let snap = snapshot_at(idx, term, &format!("leader{idx}"));
                let mut ops = vec![Op::Install(snap.clone())];
                if hs.commit < idx {
                    ops.push(Op::Hard(HardState { commit: idx, ..hs }));
                }
                issue(ops);
                store.install_snapshot(&snap).unwrap();
            }
        }
    }
    store.sync().unwrap();
    tracker.lock().unwrap().acknowledge();
    disk.set_hook(None);
    // Final: a real crash of the live disk and a reopen.
    disk.crash();
    let t = tracker.lock().unwrap();
    check_recovered(disk.clone(), &t, &config, "final crash");
    assert!(same(&reopen(&disk, "/data", config), &t.synced));
    t.checks
}

#[test]
fn crash_at_every_point() {
    let steps = env("RAFT_STORAGE_CRASH_STEPS", 1500);
    let seeds = env("RAFT_STORAGE_CRASH_SEEDS", 2);
    let mut checks = 0;
    for seed in 1..=seeds {
        checks += run(seed, steps);
    }
    // Every step issues at least one disk operation most of the time.
    assert!(
        checks > steps * seeds / 2,
        "only {checks} crash points checked"
    );
    eprintln!("checked {checks} crash points");
}

#[test]
#[ignore = "long: run with --ignored (several minutes in debug)"]
fn crash_at_every_point_long() {
    let mut checks = 0;
    for seed in 100..110 {
        checks += run(seed, 20_000);
    }
    eprintln!("checked {checks} crash points");
}
