//! The host's contract, input by input: what comes out, and what must not
//! come out yet.

use bytes::Bytes;
use raft_core::{
    Entry, EntryPayload, LogIndex, LogStore, MemStorage, Membership, Message, MessageBody, Role,
    StateMachine,
};

use crate::*;

/// A state machine that sums the first byte of every command; a command
/// starting with 0xFF fails (fatally).
#[derive(Default)]
struct Sum {
    applied: LogIndex,
    total: u64,
}

#[derive(Debug, thiserror::Error)]
#[error("poisoned command at {0}")]
struct Poisoned(LogIndex);

impl StateMachine for Sum {
    type Response = u64;
    type Error = Poisoned;
    fn apply(&mut self, e: &Entry) -> Result<u64, Poisoned> {
        if let EntryPayload::Normal(b) = &e.payload {
            if b.first() == Some(&0xFF) {
                return Err(Poisoned(e.index));
            }
            self.total += u64::from(*b.first().unwrap_or(&0));
        }
        self.applied = e.index;
        Ok(self.total)
    }
    fn applied_index(&self) -> LogIndex {
        self.applied
    }
    fn snapshot(&self) -> Result<Vec<u8>, Poisoned> {
        let mut v = self.applied.to_le_bytes().to_vec();
        v.extend(self.total.to_le_bytes());
        Ok(v)
    }
    fn restore(&mut self, d: &[u8]) -> Result<(), Poisoned> {
        // Test data: 16 bytes written by `snapshot` above.
        self.applied = u64::from_le_bytes(d[..8].try_into().unwrap());
        self.total = u64::from_le_bytes(d[8..16].try_into().unwrap());
        Ok(())
    }
}

type Host = NodeHost<MemStorage, Sum, u64, u64>;

fn config(id: u64) -> HostConfig {
    let mut c = HostConfig::new(id);
    c.raft.election_timeout_ticks = 10;
    c.raft.heartbeat_interval_ticks = 1;
    c.snapshot_trigger_entries = 0;
    c.snapshot_trigger_bytes = 0;
    c
}

fn host(voters: &[u64], cfg: HostConfig) -> Host {
    let store = MemStorage::new_with_membership(Membership::new_voters(voters.iter().copied()));
    NodeHost::open(cfg, store, Sum::default()).unwrap()
}

/// Does every write handed out (into the host's own MemStorage) and
/// reports it durable; returns how many writes there were.
fn write_all(h: &mut Host) -> usize {
    let mut n = 0;
    while let Some(op) = h.poll_write() {
        n += 1;
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
                let index = snap.meta.last_index;
                h.store_mut().compact(snap).unwrap();
                h.handle_compacted(index);
            }
            WriteOp::Checkpoint => unreachable!("an in-memory state machine is never checkpointed"),
        }
        h.process().unwrap();
    }
    n
}

fn events(h: &mut Host) -> Vec<Event<u64, u64, u64>> {
    std::iter::from_fn(|| h.poll_event()).collect()
}

/// A single-voter node, leading, its blank entry applied.
fn leader() -> Host {
    let mut h = host(&[1], config(1));
    for _ in 0..40 {
        h.handle_tick();
        h.process().unwrap();
        write_all(&mut h);
        if h.raft().role() == Role::Leader && h.applied_index() >= 1 {
            break;
        }
    }
    assert_eq!(h.raft().role(), Role::Leader);
    events(&mut h);
    h
}

#[test]
fn a_proposal_is_answered_only_after_its_write_is_durable() {
    let mut h = leader();
    let id = h.handle_propose(Bytes::from_static(&[7]), 100).unwrap();
    h.process().unwrap();
    // The entry is handed out for writing, and nothing answers yet.
    let Some(WriteOp::Write(b)) = h.poll_write() else {
        panic!("expected a write");
    };
    assert_eq!(b.entries.last().map(|e| e.index), Some(id.index));
    assert!(b.sync, "a new entry must be fsynced");
    assert!(events(&mut h).is_empty(), "answered before durable");
    // Durable: committed (single voter), applied, answered with the
    // state machine's response.
    h.store_mut().append(&b.entries).unwrap();
    h.handle_durable(b.number).unwrap();
    h.process().unwrap();
    write_all(&mut h);
    let evs = events(&mut h);
    assert!(
        matches!(evs.as_slice(), [Event::Applied { caller: 100, index, response: 7, .. }] if *index == id.index),
        "{evs:?}"
    );
}

#[test]
fn a_vote_leaves_only_after_it_is_durable() {
    let mut h = host(&[1, 2, 3], config(2));
    h.process().unwrap();
    let m = Message {
        from: 1,
        to: 2,
        term: 5,
        body: MessageBody::VoteRequest(raft_core::VoteRequest {
            last_log_index: 10,
            last_log_term: 4,
            pre_vote: false,
            transfer: false,
        }),
    };
    h.handle_message(m).unwrap();
    h.process().unwrap();
    assert!(
        h.poll_transmit().is_none(),
        "the vote left before the hard state was written"
    );
    let Some(WriteOp::Write(b)) = h.poll_write() else {
        panic!("expected the vote to be written");
    };
    assert_eq!(
        b.hard_state.map(|hs| (hs.term, hs.vote)),
        Some((5, Some(1)))
    );
    assert!(h.poll_transmit().is_none());
    h.handle_durable(b.number).unwrap();
    let m = h.poll_transmit().expect("the vote, once durable");
    assert!(
        matches!(m.body, MessageBody::VoteResponse(ref r) if r.granted),
        "{m:?}"
    );
}

#[test]
fn reads_are_answered_at_their_read_point() {
    let mut h = leader();
    // A proposal in flight (not durable yet), then a read: its read index
    // covers the leader's commit, which is already applied.
    h.handle_read(ReadConsistency::Linearizable, 1, 0).unwrap();
    h.process().unwrap();
    write_all(&mut h);
    let evs = events(&mut h);
    assert!(
        matches!(evs.as_slice(), [Event::ReadReady { caller: 1, .. }]),
        "{evs:?}"
    );
    // Stale reads are answered at once with the applied index.
    assert_eq!(
        h.handle_read(ReadConsistency::Stale, 2, 0).unwrap(),
        ReadPath::Stale
    );
    let applied = h.applied_index();
    let evs = events(&mut h);
    assert!(
        matches!(evs.as_slice(), [Event::ReadReady { caller: 2, index }] if *index == applied),
        "{evs:?}"
    );
}

#[test]
fn proposals_beyond_the_limit_are_refused_and_come_back() {
    let mut cfg = config(1);
    cfg.pending_proposals_max = 2;
    let mut h = host(&[1], cfg);
    for _ in 0..40 {
        h.handle_tick();
        h.process().unwrap();
        write_all(&mut h);
    }
    assert!(h.handle_propose(Bytes::from_static(&[1]), 1).is_ok());
    assert!(h.handle_propose(Bytes::from_static(&[1]), 2).is_ok());
    let Err((caller, err)) = h.handle_propose(Bytes::from_static(&[1]), 3) else {
        panic!("the third proposal was accepted");
    };
    assert_eq!((caller, err), (3, ProposeError::Backpressure));
    assert_eq!(h.pending_proposals(), 2);
}

#[test]
fn a_snapshot_is_taken_and_compacted_after_the_keep_window() {
    let mut cfg = config(1);
    cfg.snapshot_trigger_entries = 4;
    cfg.snapshot_keep_entries = 2;
    cfg.snapshot_keep_ticks_max = 1_000;
    let mut h = host(&[1], cfg);
    for _ in 0..40 {
        h.handle_tick();
        h.process().unwrap();
        write_all(&mut h);
    }
    let mut compacted_at = Vec::new();
    for i in 0..8u8 {
        h.handle_propose(Bytes::from(vec![i]), u64::from(i))
            .unwrap();
        h.process().unwrap();
        while let Some(op) = h.poll_write() {
            match op {
                WriteOp::Write(b) => {
                    h.store_mut().append(&b.entries).unwrap();
                    if let Some(hs) = b.hard_state {
                        h.store_mut().set_hard_state(hs);
                    }
                    h.handle_durable(b.number).unwrap();
                }
                WriteOp::Compact(s) => {
                    let index = s.meta.last_index;
                    compacted_at.push((index, h.applied_index()));
                    h.store_mut().compact(s).unwrap();
                    h.handle_compacted(index);
                }
                WriteOp::Checkpoint => unreachable!("in-memory state machine"),
            }
            h.process().unwrap();
        }
    }
    // The blank entry and 3 proposals reach the trigger at index 4; the
    // compaction waits until 2 more entries are applied.
    assert_eq!(compacted_at.first(), Some(&(4, 6)), "{compacted_at:?}");
    assert_eq!(h.store().first_index(), 5);
}

#[test]
fn a_failing_state_machine_is_fatal_and_every_caller_hears_it() {
    let mut h = leader();
    h.handle_propose(Bytes::from_static(&[1]), 1).unwrap();
    h.handle_propose(Bytes::from_static(&[0xFF]), 2).unwrap();
    h.handle_propose(Bytes::from_static(&[1]), 3).unwrap();
    h.process().unwrap();
    let Some(WriteOp::Write(b)) = h.poll_write() else {
        panic!("expected a write");
    };
    h.store_mut().append(&b.entries).unwrap();
    h.handle_durable(b.number).unwrap();
    let err = h.process().unwrap_err();
    assert!(err.0.contains("poisoned"), "{err}");
    h.shut_down(Some(err.0.clone()));
    let evs = events(&mut h);
    // The batch (all three entries) failed as a whole: no answer says
    // applied, every caller hears the fatal reason.
    assert!(
        !evs.iter().any(|e| matches!(e, Event::Applied { .. })),
        "{evs:?}"
    );
    let failed: Vec<u64> = evs
        .iter()
        .filter_map(|e| match e {
            Event::ProposalFailed {
                caller,
                error: ProposeError::Fatal(_),
            } => Some(*caller),
            Event::ReadFailed {
                caller,
                error: ReadError::Fatal(_),
            } => Some(*caller),
            _ => None,
        })
        .collect();
    assert_eq!(failed, vec![1, 2, 3]);
    // And every later input is refused with it.
    assert!(matches!(
        h.handle_propose(Bytes::from_static(&[1]), 4),
        Err((4, ProposeError::Fatal(_)))
    ));
}
