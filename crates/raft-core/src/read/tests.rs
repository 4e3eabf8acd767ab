//! Linearizable reads: ReadIndex, lease reads, follower reads.

use bytes::Bytes;

use crate::error::ReadError;
use crate::message::*;
use crate::replication::tests::vote_from;
use crate::testing::Cluster;
use crate::types::*;
use crate::{Config, MemStorage, RawNode, ReadState};

fn ctx(s: &'static str) -> Bytes {
    Bytes::from_static(s.as_bytes())
}

/// A lease read at node `id`, at the cluster's clock.
fn lease(c: &mut Cluster, id: NodeId, ctx: Bytes) -> Result<(), ReadError> {
    let now = c.clock_nanos;
    c.node_mut(id).lease_read(ctx, now)
}

/// One tick of the test configuration, as clock time.
const TICK_NANOS: u64 = 100_000_000;

#[test]
fn read_index_confirms_leadership_with_a_quorum_round() {
    let mut c = Cluster::new(3, 1);
    let l = c.run_until_leader(100).unwrap();
    c.propose(l, b"v");
    let commit = c.node(l).commit_index();
    c.node_mut(l).read_index(ctx("r1")).unwrap();
    c.process(l);
    assert!(
        c.reads.get(&l).is_none_or(|r| r.is_empty()),
        "not before a quorum answers"
    );
    c.deliver_all();
    assert_eq!(
        c.reads[&l],
        vec![ReadState {
            ctx: ctx("r1"),
            index: commit
        }]
    );
}

#[test]
fn read_index_on_isolated_leader_never_completes_and_is_dropped_on_step_down() {
    let mut c = Cluster::new(3, 2);
    let l = c.run_until_leader(100).unwrap();
    c.isolate(l);
    c.node_mut(l).read_index(ctx("stale?")).unwrap();
    c.ticks(5);
    assert!(c.reads.get(&l).is_none_or(|r| r.is_empty()));
    c.ticks(20); // CheckQuorum steps it down
    assert_ne!(c.node(l).role(), Role::Leader);
    assert_eq!(c.dropped_reads[&l], vec![ctx("stale?")]);
}

#[test]
fn read_index_waits_for_the_new_leaders_first_commit() {
    let mut s = MemStorage::new_with_membership(Membership::new_voters([1, 2, 3]));
    s.set_hard_state(HardState {
        term: 0,
        vote: None,
        commit: 0,
    });
    let mut n = RawNode::new(
        Config {
            pre_vote: false,
            ..Config::new(1)
        },
        s,
    )
    .unwrap();
    n.campaign().unwrap();
    n.step(vote_from(2, 1)).unwrap();
    assert_eq!(n.role(), Role::Leader);
    n.read_index(ctx("early")).unwrap();
    // Heartbeat acks arrive, but the blank entry is not committed.
    let rd = n.ready().unwrap();
    n.store_mut().append(&rd.entries).unwrap();
    n.on_persisted(rd.number).unwrap();
    let round = rd
        .messages
        .iter()
        .filter_map(|m| match &m.body {
            MessageBody::AppendRequest(a) => Some(a.round),
            _ => None,
        })
        .max()
        .unwrap_or(0);
    n.step(Message {
        from: 2,
        to: 1,
        term: 1,
        body: MessageBody::AppendResponse(AppendResponse {
            outcome: AppendOutcome::Conflict {
                prev_log_index: 1,
                conflict_term: None,
                conflict_index: 1,
            },
            round,
        }),
    })
    .unwrap();
    let rd = n.ready().unwrap();
    assert!(
        rd.read_states.is_empty(),
        "no read before an entry of this term commits"
    );
    n.step(Message {
        from: 2,
        to: 1,
        term: 1,
        body: MessageBody::AppendResponse(AppendResponse {
            outcome: AppendOutcome::Success { match_index: 1 },
            round,
        }),
    })
    .unwrap();
    assert_eq!(n.commit_index(), 1);
    // Now a fresh round is needed; acknowledge it.
    let rd = n.ready().unwrap();
    let round = rd
        .messages
        .iter()
        .filter_map(|m| match &m.body {
            MessageBody::AppendRequest(a) => Some(a.round),
            _ => None,
        })
        .max()
        .unwrap();
    n.step(Message {
        from: 3,
        to: 1,
        term: 1,
        body: MessageBody::AppendResponse(AppendResponse {
            outcome: AppendOutcome::Success { match_index: 1 },
            round,
        }),
    })
    .unwrap();
    let rd = n.ready().unwrap();
    assert_eq!(
        rd.read_states,
        vec![ReadState {
            ctx: ctx("early"),
            index: 1
        }]
    );
}

#[test]
fn read_index_at_follower_is_forwarded_to_the_leader() {
    let mut c = Cluster::new(3, 3);
    let l = c.run_until_leader(100).unwrap();
    c.propose(l, b"v");
    let f = (1..=3).find(|&i| i != l).unwrap();
    c.node_mut(f).read_index(ctx("at-follower")).unwrap();
    c.deliver_all();
    assert_eq!(
        c.reads[&f],
        vec![ReadState {
            ctx: ctx("at-follower"),
            index: c.node(l).commit_index()
        }]
    );
}

#[test]
fn read_index_without_leader_fails_fast() {
    let mut s = MemStorage::new_with_membership(Membership::new_voters([1, 2, 3]));
    s.set_hard_state(HardState::default());
    let mut n = RawNode::new(Config::new(2), s).unwrap();
    assert_eq!(n.read_index(ctx("x")), Err(ReadError::NoLeader));
}

#[test]
fn lease_read_is_served_within_the_lease_only() {
    let mut c = Cluster::new(3, 4);
    let l = c.run_until_leader(100).unwrap();
    c.ticks(2);
    lease(&mut c, l, ctx("lease")).unwrap();
    c.process(l);
    assert_eq!(c.reads[&l].last().unwrap().ctx, ctx("lease"));
    c.isolate(l);
    // Lease = election timeout (10) - drift (2) ticks after the last
    // acknowledged heartbeat was sent.
    c.ticks(9);
    assert_eq!(lease(&mut c, l, ctx("late")), Err(ReadError::NoLease));
    let f = (1..=3).find(|&i| i != l).unwrap();
    assert!(matches!(
        lease(&mut c, f, ctx("f")),
        Err(ReadError::NotLeader { .. })
    ));

    let mut c = Cluster::with_config(3, 4, |id| Config {
        check_quorum: false,
        ..Config::new(id)
    });
    let l = c.run_until_leader(100).unwrap();
    c.ticks(2);
    assert_eq!(lease(&mut c, l, ctx("no-cq")), Err(ReadError::NoLease));
}

#[test]
fn lease_read_refused_after_a_pause_that_dropped_ticks() {
    // A process stopped (SIGSTOP, a long GC) loses ticks, not time: when
    // it wakes its tick count says the lease is young, the clock does not.
    let mut c = Cluster::new(3, 6);
    let l = c.run_until_leader(100).unwrap();
    c.ticks(2);
    lease(&mut c, l, ctx("before")).unwrap();
    // Stopped for 8.5 ticks' worth of time with no tick delivered: past
    // the lease (8 ticks) but short of CheckQuorum's election timeout (10),
    // also after the next tick.
    c.advance_clock(8 * TICK_NANOS + TICK_NANOS / 2);
    assert_eq!(lease(&mut c, l, ctx("woken")), Err(ReadError::NoLease));
    assert_eq!(c.node(l).role(), Role::Leader);
    // A fresh round acknowledged by a quorum renews the lease.
    c.tick();
    lease(&mut c, l, ctx("renewed")).unwrap();
    c.process(l);
    assert_eq!(c.reads[&l].last().unwrap().ctx, ctx("renewed"));
}

#[test]
fn leader_paused_past_an_election_timeout_steps_down_when_it_sees_the_clock() {
    let mut c = Cluster::new(3, 7);
    let l = c.run_until_leader(100).unwrap();
    c.ticks(2);
    c.advance_clock(10 * TICK_NANOS);
    let now = c.clock_nanos;
    c.node_mut(l).observe_clock(now);
    assert_eq!(c.node(l).role(), Role::Follower);
    // A lease read at wake-up finds no leader either way.
    assert!(matches!(
        lease(&mut c, l, ctx("x")),
        Err(ReadError::NotLeader { .. })
    ));
}

#[test]
fn a_clock_reading_older_than_the_last_is_ignored() {
    let mut c = Cluster::new(3, 8);
    let l = c.run_until_leader(100).unwrap();
    c.ticks(2);
    c.advance_clock(9 * TICK_NANOS);
    let late = c.clock_nanos;
    c.node_mut(l).observe_clock(late);
    // A reading from before the pause (a driver that read the clock early)
    // cannot bring the lease back.
    assert_eq!(
        c.node_mut(l).lease_read(ctx("old"), late - 9 * TICK_NANOS),
        Err(ReadError::NoLease)
    );
}

#[test]
fn lease_read_refused_for_the_rest_of_the_term_after_timeout_now() {
    // Found by raft-sim (seed 18210, 3 nodes): a transfer is abandoned, the
    // leader resumes lease reads, then the delayed TimeoutNow lets the
    // target win an election that bypasses the followers' lease guard.
    let mut c = Cluster::new(3, 5);
    let l = c.run_until_leader(100).unwrap();
    let target = (1..=3).find(|&i| i != l).unwrap();
    c.ticks(2);
    c.cut(l, target); // TimeoutNow will not arrive in time
    c.node_mut(l).transfer_leadership(target).unwrap();
    c.ticks(12); // abandoned after an election timeout
    assert_eq!(c.node(l).status().transfer_target, None);
    assert_eq!(c.leader(), Some(l));
    assert_eq!(lease(&mut c, l, ctx("after")), Err(ReadError::NoLease));
    // ReadIndex still works.
    c.node_mut(l).read_index(ctx("ri")).unwrap();
    c.deliver_all();
    assert_eq!(c.reads[&l].last().unwrap().ctx, ctx("ri"));
}

#[test]
fn read_index_forwarded_in_a_stale_term_is_refused_and_teaches_the_term() {
    let mut s = MemStorage::new_with_membership(Membership::new_voters([1, 2, 3]));
    s.set_hard_state(HardState {
        term: 4,
        vote: None,
        commit: 0,
    });
    let mut n = RawNode::new(Config::new(1), s).unwrap();
    n.step(Message {
        from: 3,
        to: 1,
        term: 1,
        body: MessageBody::ReadIndexRequest(ReadIndexRequest { ctx: ctx("old") }),
    })
    .unwrap();
    let rd = n.ready().unwrap();
    assert_eq!(
        rd.messages,
        vec![Message {
            from: 1,
            to: 3,
            term: 4,
            body: MessageBody::ReadIndexResponse(ReadIndexResponse {
                ctx: ctx("old"),
                index: None
            }),
        }]
    );
}
