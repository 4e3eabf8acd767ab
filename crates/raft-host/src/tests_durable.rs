//! The host with a durable state machine: checkpoints instead of
//! snapshots, the log compacted only up to a checkpoint, applying paused
//! while one runs, restarts from the checkpoint, and snapshot messages
//! handed to the shell's streamer.

use std::sync::Mutex;

use bytes::Bytes;
use raft_core::{
    Entry, EntryPayload, LogIndex, LogStore, MemStorage, Membership, Message, MessageBody, Role,
    SnapshotMeta, SnapshotRequest, StateMachine, Term,
};

use crate::*;

/// Sums the first byte of every command, like the in-memory test state
/// machine, but "durable": `checkpoint` copies the state to `durable`,
/// which is all a crash keeps.
#[derive(Default)]
struct DurableSum {
    applied: LogIndex,
    applied_term: Term,
    total: u64,
    /// (applied, term, total) as of the last checkpoint.
    durable: Mutex<(LogIndex, Term, u64)>,
    /// Restores seen: the descriptors passed.
    restored: Vec<Bytes>,
}

#[derive(Debug, thiserror::Error)]
#[error("durable sum failed")]
struct Failed;

impl DurableSum {
    /// What a crash leaves: the state as of the last checkpoint.
    fn crashed(&self) -> DurableSum {
        let (applied, applied_term, total) = *self.durable.lock().unwrap();
        DurableSum {
            applied,
            applied_term,
            total,
            durable: Mutex::new((applied, applied_term, total)),
            restored: Vec::new(),
        }
    }
}

impl StateMachine for DurableSum {
    type Response = u64;
    type Error = Failed;
    fn apply(&mut self, e: &Entry) -> Result<u64, Failed> {
        if let EntryPayload::Normal(b) = &e.payload {
            self.total += u64::from(*b.first().unwrap_or(&0));
        }
        self.applied = e.index;
        self.applied_term = e.term;
        Ok(self.total)
    }
    fn applied_index(&self) -> LogIndex {
        self.applied
    }
    fn snapshot(&self) -> Result<Vec<u8>, Failed> {
        Err(Failed) // durable state machines stream
    }
    /// The test descriptor: the installed index, 8 bytes little endian.
    fn restore(&mut self, d: &[u8]) -> Result<(), Failed> {
        self.restored.push(Bytes::copy_from_slice(d));
        self.applied = u64::from_le_bytes(d.try_into().map_err(|_| Failed)?);
        self.total = 0;
        *self.durable.lock().unwrap() = (self.applied, 0, 0);
        Ok(())
    }
    fn durable_applied_index(&self) -> Option<LogIndex> {
        Some(self.durable.lock().unwrap().0)
    }
    fn checkpoint(&self) -> Result<LogIndex, Failed> {
        *self.durable.lock().unwrap() = (self.applied, self.applied_term, self.total);
        Ok(self.applied)
    }
    fn applied_meta(&self) -> (Term, Option<Membership>) {
        (self.applied_term, None)
    }
}

type Host = NodeHost<MemStorage, DurableSum, u64, u64>;

fn config() -> HostConfig {
    let mut c = HostConfig::new(1);
    c.raft.election_timeout_ticks = 10;
    c.raft.heartbeat_interval_ticks = 1;
    c.snapshot_trigger_entries = 4;
    c.snapshot_trigger_bytes = 0;
    c.snapshot_keep_entries = 0;
    c
}

fn store() -> MemStorage {
    MemStorage::new_with_membership(Membership::new_voters([1]))
}

/// Does the log writes and compactions handed out; returns the number of
/// checkpoints handed out (not carried out: the caller decides when).
fn write_log(h: &mut Host) -> usize {
    let mut checkpoints = 0;
    while let Some(op) = h.poll_write() {
        match op {
            WriteOp::Write(b) => {
                let s = h.store_mut();
                if let Some(snap) = b.snapshot {
                    s.apply_snapshot(snap);
                }
                s.append(&b.entries).unwrap();
                if let Some(hs) = b.hard_state {
                    s.set_hard_state(hs);
                }
                h.handle_durable(b.number).unwrap();
            }
            WriteOp::Compact(snap) => {
                assert!(
                    snap.data.is_empty(),
                    "a durable state machine's compaction carries no data"
                );
                let index = snap.meta.last_index;
                h.store_mut().compact(snap).unwrap();
                h.handle_compacted(index);
            }
            WriteOp::Checkpoint => checkpoints += 1,
        }
        h.process().unwrap();
    }
    checkpoints
}

fn checkpoint(h: &mut Host) {
    let index = h.state_machine().read().unwrap().checkpoint().unwrap();
    h.handle_checkpointed(Ok(index)).unwrap();
    h.process().unwrap();
}

fn lead(h: &mut Host) {
    for _ in 0..40 {
        h.handle_tick();
        h.process().unwrap();
        write_log(h);
        if h.raft().role() == Role::Leader && h.applied_index() >= 1 {
            break;
        }
    }
    assert_eq!(h.raft().role(), Role::Leader);
    while h.poll_event().is_some() {}
}

fn propose(h: &mut Host, byte: u8) -> usize {
    h.handle_propose(Bytes::from(vec![byte]), u64::from(byte))
        .unwrap();
    h.process().unwrap();
    write_log(h)
}

#[test]
fn a_durable_state_machine_is_checkpointed_and_the_log_compacted_only_up_to_it() {
    let mut h = NodeHost::open(config(), store(), DurableSum::default()).unwrap();
    lead(&mut h);
    // The blank entry and 3 proposals reach the trigger (4 entries).
    let mut checkpoints = 0;
    for b in 1..=3 {
        checkpoints += propose(&mut h, b);
    }
    assert_eq!(checkpoints, 1, "one checkpoint at the trigger");
    assert_eq!(h.applied_index(), 4);
    // While it runs, new entries commit but wait to be applied.
    assert_eq!(propose(&mut h, 10), 0);
    assert_eq!(h.committed(), 5);
    assert_eq!(h.applied_index(), 4, "applied during a checkpoint");
    let early: Vec<_> = std::iter::from_fn(|| h.poll_event()).collect();
    assert!(
        !early
            .iter()
            .any(|e| matches!(e, Event::Applied { caller: 10, .. })),
        "answered before applied: {early:?}"
    );
    h.validate().unwrap();
    assert_eq!(
        h.store().first_index(),
        1,
        "compacted before the checkpoint"
    );
    // Done: the queued entry is applied and answered, and the log is
    // compacted up to the checkpoint (keep_entries = 0), not beyond.
    let index = h.state_machine().read().unwrap().checkpoint().unwrap();
    assert_eq!(index, 4);
    h.handle_checkpointed(Ok(index)).unwrap();
    h.process().unwrap();
    let evs: Vec<_> = std::iter::from_fn(|| h.poll_event()).collect();
    assert!(
        matches!(
            evs.as_slice(),
            [Event::Applied {
                caller: 10,
                index: 5,
                response: 16,
                ..
            }]
        ),
        "{evs:?}"
    );
    write_log(&mut h);
    assert_eq!(
        h.store().first_index(),
        5,
        "log compacted to the checkpoint"
    );
    h.validate().unwrap();
}

#[test]
fn a_restart_opens_at_the_checkpoint_and_replays_only_the_rest() {
    let mut h = NodeHost::open(config(), store(), DurableSum::default()).unwrap();
    lead(&mut h);
    for b in 1..=3 {
        propose(&mut h, b);
    }
    checkpoint(&mut h); // durable at 4: total 6
    write_log(&mut h);
    for b in [20, 30] {
        propose(&mut h, b); // applied, not durable in the state machine
    }
    assert_eq!(h.applied_index(), 6);
    assert_eq!(h.state_machine().read().unwrap().total, 56);
    // Crash: the state machine keeps its checkpoint, the log everything.
    let sm = h.state_machine().read().unwrap().crashed();
    let log = h.store().clone();
    let mut r = NodeHost::open(config(), log, sm).unwrap();
    assert_eq!(r.applied_index(), 4, "opens at the checkpoint");
    lead(&mut r);
    // The log after the checkpoint is replayed once, plus the new term's
    // blank entry.
    let sm = r.state_machine().read().unwrap();
    assert_eq!((sm.applied, sm.total), (7, 56));
    assert!(sm.restored.is_empty(), "nothing to restore");
}

#[test]
fn a_checkpoint_beyond_the_stored_commit_index_opens_there() {
    // The log is not compacted up to the checkpoint yet.
    let mut cfg = config();
    cfg.snapshot_keep_entries = 100;
    cfg.snapshot_keep_ticks_max = 1_000_000;
    let mut h = NodeHost::open(cfg.clone(), store(), DurableSum::default()).unwrap();
    lead(&mut h);
    for b in 1..=3 {
        propose(&mut h, b);
    }
    checkpoint(&mut h); // durable at 4: total 6
    write_log(&mut h);
    // Crash: a commit-index-only write is not fsynced, so the stored
    // commit index can be older than the checkpoint (found by raft-sim).
    let sm = h.state_machine().read().unwrap().crashed();
    let mut log = h.store().clone();
    let mut hs = log.hard_state();
    hs.commit = 2;
    log.set_hard_state(hs);
    assert_eq!(log.first_index(), 1, "not compacted");
    let mut r = NodeHost::open(cfg, log, sm).unwrap();
    assert_eq!(r.applied_index(), 4, "opens at the checkpoint");
    assert_eq!(r.raft().applied_index(), 4, "the engine agrees");
    assert!(r.raft().commit_index() >= 4, "applied means committed");
    r.validate().unwrap();
    lead(&mut r);
    let sm = r.state_machine().read().unwrap();
    assert_eq!((sm.applied, sm.total), (5, 6), "nothing applied twice");
}

#[test]
fn checkpoints_more_frequent_than_the_keep_window_still_compact() {
    let mut cfg = config();
    cfg.snapshot_trigger_entries = 2;
    cfg.snapshot_keep_entries = 5;
    cfg.snapshot_keep_ticks_max = 1_000_000;
    let mut h = NodeHost::open(cfg, store(), DurableSum::default()).unwrap();
    lead(&mut h);
    for b in 1..=20 {
        if propose(&mut h, b) > 0 {
            checkpoint(&mut h);
            write_log(&mut h);
        }
    }
    // Checkpoints every 2 entries, each compaction 5 entries behind.
    let first = h.store().first_index();
    assert!(first > 1, "never compacted");
    assert!(
        h.applied_index() + 1 - first >= 5,
        "compacted inside the keep window: first {first}, applied {}",
        h.applied_index()
    );
    h.validate().unwrap();
}

#[test]
fn a_failed_checkpoint_is_fatal() {
    let mut h = NodeHost::open(config(), store(), DurableSum::default()).unwrap();
    lead(&mut h);
    for b in 1..=3 {
        propose(&mut h, b);
    }
    let e = h.handle_checkpointed(Err("disk full".into())).unwrap_err();
    assert!(e.to_string().contains("disk full"), "{e}");
    assert!(h.process().is_err(), "the host stays stopped");
}

#[test]
fn snapshot_messages_go_to_the_streamer_and_only_streamed_ones_are_installed() {
    let mut h = NodeHost::open(config(), store(), DurableSum::default()).unwrap();
    let req = |data: Vec<u8>| Message {
        from: 2,
        to: 1,
        term: 5,
        body: MessageBody::SnapshotRequest(SnapshotRequest {
            meta: SnapshotMeta {
                last_index: 10,
                last_term: 4,
                membership: Membership::new_voters([1, 2]),
            },
            total_bytes: data.len() as u64,
            offset: 0,
            data: Bytes::from(data),
            done: true,
        }),
    };
    // On the message stream: no data to install, dropped.
    h.handle_message(req(Vec::new())).unwrap();
    h.process().unwrap();
    write_log(&mut h);
    assert!(h.state_machine().read().unwrap().restored.is_empty());
    assert_eq!(h.applied_index(), 0);
    // Through the streamer: installed with the sink's descriptor.
    h.handle_snapshot_received(req(10u64.to_le_bytes().to_vec()))
        .unwrap();
    h.process().unwrap();
    write_log(&mut h);
    assert_eq!(
        h.state_machine().read().unwrap().restored,
        vec![Bytes::copy_from_slice(&10u64.to_le_bytes())]
    );
    assert_eq!(h.applied_index(), 10);
    assert_eq!(h.store().first_index(), 11);
}

/// Three durable hosts and a network that delivers everything except what
/// `drop` refuses.
struct Trio {
    hosts: Vec<Host>,
}

impl Trio {
    fn new(cfg: impl Fn(u64) -> HostConfig) -> Trio {
        let hosts = (1..=3)
            .map(|id| {
                let store = MemStorage::new_with_membership(Membership::new_voters([1, 2, 3]));
                NodeHost::open(cfg(id), store, DurableSum::default()).unwrap()
            })
            .collect();
        Trio { hosts }
    }

    fn host(&mut self, id: u64) -> &mut Host {
        &mut self.hosts[(id - 1) as usize]
    }

    /// Runs every host's writes (checkpoints at once) and delivers the
    /// messages, until quiet.
    fn settle(&mut self, drop: &impl Fn(&Message) -> bool) {
        for _ in 0..100 {
            let mut moved = false;
            for i in 0..3 {
                let h = &mut self.hosts[i];
                h.process().unwrap();
                for _ in 0..write_log(h) {
                    checkpoint(h);
                    write_log(h);
                }
            }
            for i in 0..3 {
                while let Some(m) = self.hosts[i].poll_transmit() {
                    moved = true;
                    if !drop(&m) {
                        self.hosts[(m.to - 1) as usize].handle_message(m).unwrap();
                    }
                }
            }
            if !moved {
                return;
            }
        }
        panic!("the trio never settled");
    }

    /// One tick on every host (node 1 alone if `only_1`), then settle.
    fn tick(&mut self, only_1: bool, drop: &impl Fn(&Message) -> bool) {
        for h in self.hosts.iter_mut().take(if only_1 { 1 } else { 3 }) {
            h.handle_tick();
        }
        self.settle(drop);
    }
}

#[test]
fn a_due_compaction_waits_for_a_live_follower_still_needing_the_entries() {
    let cfg = |id| {
        let mut c = HostConfig::new(id);
        c.raft.election_timeout_ticks = 10;
        c.raft.heartbeat_interval_ticks = 1;
        c.snapshot_trigger_entries = 4;
        c.snapshot_trigger_bytes = 0;
        c.snapshot_keep_entries = 0;
        c.snapshot_keep_ticks_max = 1_000;
        c
    };
    let mut t = Trio::new(cfg);
    let deliver_all = |_: &Message| false;
    // Node 1 campaigns first (only it ticks) and wins.
    for _ in 0..40 {
        t.tick(true, &deliver_all);
        if t.host(1).raft().role() == Role::Leader {
            break;
        }
    }
    assert_eq!(t.host(1).raft().role(), Role::Leader);
    // Node 3 is alive (heartbeats arrive, it answers) but gets no entries:
    // a follower falling behind.
    let starve_3 = |m: &Message| {
        m.to == 3 && matches!(&m.body, MessageBody::AppendRequest(a) if !a.entries.is_empty())
    };
    for b in 1..=8u8 {
        t.host(1)
            .handle_propose(Bytes::from(vec![b]), u64::from(b))
            .unwrap();
        t.tick(true, &starve_3);
    }
    let leader_applied = t.host(1).applied_index();
    assert!(leader_applied >= 9, "applied {leader_applied}");
    let match_3 = t.host(3).raft().last_index();
    assert!(match_3 < 4, "node 3 got entries: {match_3}");
    // Checkpoints were taken and are due (keep_entries = 0), but node 3 is
    // heard from and still needs the log: nothing is compacted.
    for _ in 0..30 {
        t.tick(true, &starve_3);
    }
    assert_eq!(
        t.host(1).store().first_index(),
        1,
        "compacted what a live follower still needs"
    );
    // Node 3 gets the entries: the compaction goes ahead.
    for _ in 0..5 {
        t.tick(true, &deliver_all);
    }
    assert!(t.host(3).raft().last_index() >= leader_applied);
    assert!(
        t.host(1).store().first_index() > 1,
        "never compacted once node 3 caught up"
    );
    t.host(1).validate().unwrap();

    // Node 3 goes silent (down): after two rounds without a word from it,
    // it no longer holds the log, however far behind it is.
    let down_3 = |m: &Message| m.to == 3 || m.from == 3;
    let first_before = t.host(1).store().first_index();
    for b in 20..=30u8 {
        t.host(1)
            .handle_propose(Bytes::from(vec![b]), u64::from(b))
            .unwrap();
        t.tick(true, &down_3);
    }
    for _ in 0..30 {
        t.tick(true, &down_3);
    }
    let first_after = t.host(1).store().first_index();
    assert!(
        first_after > first_before && first_after > t.host(3).raft().last_index() + 1,
        "a down follower held the log: first {first_before} -> {first_after}, node 3 at {}",
        t.host(3).raft().last_index()
    );
    t.host(1).validate().unwrap();
}
