//! Replication and commitment: exact outputs for given inputs, plus a
//! randomized multi-node run with crashes, partitions and message loss.

use bytes::Bytes;

use crate::bugs::Bug;
use crate::error::{ProposeError, StepError};
use crate::message::*;
use crate::testing::Cluster;
use crate::types::*;
use crate::{Config, LogStore, MemStorage, RawNode, Ready};

fn entry(index: LogIndex, term: Term) -> Entry {
    Entry {
        term,
        index,
        payload: EntryPayload::Normal(Bytes::from(format!("{index}@{term}"))),
    }
}

fn log_with(terms: &[Term]) -> Vec<Entry> {
    terms
        .iter()
        .enumerate()
        .map(|(i, &t)| entry(i as u64 + 1, t))
        .collect()
}

fn store_with(voters: &[NodeId], entries: &[Entry], term: Term, commit: LogIndex) -> MemStorage {
    let mut s = MemStorage::new_with_membership(Membership::new_voters(voters.iter().copied()));
    s.append(entries).unwrap();
    s.set_hard_state(HardState {
        term,
        vote: None,
        commit,
    });
    s
}

/// A leader of a 3-node cluster at term 1 with its blank entry at index 1,
/// built from direct inputs (no harness), with everything durable.
fn leader_of_three() -> RawNode<MemStorage> {
    let mut n = RawNode::new(
        Config {
            pre_vote: false,
            ..Config::new(1)
        },
        store_with(&[1, 2, 3], &[], 0, 0),
    )
    .unwrap();
    n.campaign().unwrap();
    drain(&mut n);
    for from in [2, 3] {
        n.step(Message {
            from,
            to: 1,
            term: 1,
            body: MessageBody::VoteResponse(VoteResponse {
                pre_vote: false,
                granted: true,
            }),
        })
        .unwrap();
    }
    assert_eq!(n.role(), Role::Leader);
    drain(&mut n);
    n
}

/// A granted vote for node 1.
pub(crate) fn vote_from(from: NodeId, term: Term) -> Message {
    Message {
        from,
        to: 1,
        term,
        body: MessageBody::VoteResponse(VoteResponse {
            pre_vote: false,
            granted: true,
        }),
    }
}

/// Handles Readies like a driver with an instant disk; returns them.
fn drain(n: &mut RawNode<MemStorage>) -> Vec<Ready> {
    let mut out = Vec::new();
    while n.has_ready() {
        let rd = n.ready().unwrap();
        let store = n.store_mut();
        if let Some(s) = &rd.snapshot {
            store.apply_snapshot(s.clone());
        }
        store.append(&rd.entries).unwrap();
        if let Some(hs) = rd.hard_state {
            store.set_hard_state(hs);
        }
        n.on_persisted(rd.number).unwrap();
        if let Some(e) = rd.committed_entries.last() {
            n.on_applied(e.index);
        }
        out.push(rd);
    }
    out
}

fn appends_to(rds: &[Ready], to: NodeId) -> Vec<AppendRequest> {
    rds.iter()
        .flat_map(|rd| rd.messages.iter().chain(&rd.persisted_messages))
        .filter(|m| m.to == to)
        .filter_map(|m| match &m.body {
            MessageBody::AppendRequest(a) => Some(a.clone()),
            _ => None,
        })
        .collect()
}

fn ack(from: NodeId, match_index: LogIndex, term: Term) -> Message {
    Message {
        from,
        to: 1,
        term,
        body: MessageBody::AppendResponse(AppendResponse {
            outcome: AppendOutcome::Success { match_index },
            round: 0,
        }),
    }
}

#[test]
fn replication_commits_and_applies_everywhere() {
    let mut c = Cluster::new(3, 1);
    let l = c.run_until_leader(100).unwrap();
    for i in 0..50u32 {
        c.propose(l, &i.to_be_bytes());
    }
    c.ticks(2);
    let expected: Vec<Bytes> = (0..50u32)
        .map(|i| Bytes::copy_from_slice(&i.to_be_bytes()))
        .collect();
    for id in 1..=3 {
        assert_eq!(c.applied_data(id), expected, "node {id}");
        assert_eq!(c.node(id).commit_index(), 51);
    }
    c.check_applied_consistent();
}

#[test]
fn replication_leader_sends_before_its_own_write_but_counts_itself_only_once_durable() {
    let mut n = leader_of_three();
    n.step(ack(2, 1, 1)).unwrap();
    n.step(ack(3, 1, 1)).unwrap();
    drain(&mut n);
    assert_eq!(n.commit_index(), 1);
    n.propose(Bytes::from_static(b"a")).unwrap();
    let rd = n.ready().unwrap();
    assert_eq!(rd.entries.len(), 1, "the leader must write the entry");
    let sent: Vec<_> = rd
        .messages
        .iter()
        .filter_map(|m| match &m.body {
            MessageBody::AppendRequest(a) if !a.entries.is_empty() => Some(m.to),
            _ => None,
        })
        .collect();
    assert_eq!(
        sent,
        vec![2, 3],
        "appends leave before the leader's write is durable"
    );
    // One follower acknowledges; with the leader's write not yet durable
    // that is one of three: no commit.
    n.step(ack(2, 2, 1)).unwrap();
    assert_eq!(n.commit_index(), 1);
    n.store_mut().append(&rd.entries).unwrap();
    n.on_persisted(rd.number).unwrap();
    assert_eq!(
        n.commit_index(),
        2,
        "leader's durable copy makes the quorum"
    );
}

#[test]
fn replication_batches_many_proposals_into_one_append_per_follower() {
    let mut n = leader_of_three();
    for from in [2, 3] {
        n.step(ack(from, 1, 1)).unwrap();
    }
    drain(&mut n);
    for i in 0..256u32 {
        n.propose(Bytes::copy_from_slice(&i.to_be_bytes())).unwrap();
    }
    let rds = drain(&mut n);
    for to in [2, 3] {
        let appends = appends_to(&rds, to);
        assert_eq!(appends.len(), 1, "one message for 256 proposals to {to}");
        assert_eq!(appends[0].entries.len(), 256);
        assert_eq!(appends[0].prev_log_index, 1);
    }
}

#[test]
fn replication_respects_message_size_and_inflight_bounds() {
    let mut n = RawNode::new(
        Config {
            pre_vote: false,
            max_append_bytes: 3 * (Entry::OVERHEAD_BYTES + 4),
            max_inflight_msgs: 2,
            ..Config::new(1)
        },
        store_with(&[1, 2], &[], 0, 0),
    )
    .unwrap();
    n.campaign().unwrap();
    drain(&mut n);
    n.step(vote_from(2, 1)).unwrap();
    drain(&mut n);
    n.step(ack(2, 1, 1)).unwrap();
    drain(&mut n);
    for i in 0..30u32 {
        n.propose(Bytes::copy_from_slice(&i.to_be_bytes())).unwrap();
    }
    let rds = drain(&mut n);
    let appends = appends_to(&rds, 2);
    assert_eq!(appends.len(), 2, "at most two messages in flight");
    for a in &appends {
        assert_eq!(
            a.entries.len(),
            3,
            "each message holds at most 3 entries by size"
        );
    }
    // An acknowledgement frees room for more.
    n.step(ack(2, 4, 1)).unwrap();
    let rds = drain(&mut n);
    assert_eq!(appends_to(&rds, 2).len(), 1);
}

#[test]
fn replication_backs_up_a_divergent_follower_in_one_round_trip_per_term() {
    // Figure 7-like: the leader's log has terms 1 1 1 4 4 5 5 6 6 6, the
    // follower diverged with a long run of term 2 and term 3 entries.
    let leader_log = log_with(&[1, 1, 1, 4, 4, 5, 5, 6, 6, 6]);
    let mut follower_terms = vec![1, 1, 1];
    follower_terms.extend(std::iter::repeat_n(2, 300));
    follower_terms.extend(std::iter::repeat_n(3, 300));
    let follower_log = log_with(&follower_terms);
    let mut c = Cluster::with_config(3, 1, |id| Config {
        pre_vote: false,
        ..Config::new(id)
    });
    for (id, log) in [(1, &leader_log), (2, &follower_log), (3, &leader_log)] {
        // Restarted nodes keep CheckQuorum's vote guard for one election
        // timeout; this test elects node 1 at once, so it goes without.
        let cfg = Config {
            pre_vote: false,
            check_quorum: false,
            ..Config::new(id)
        };
        let node = RawNode::new(cfg, store_with(&[1, 2, 3], log, 6, 3)).unwrap();
        c.nodes.insert(id, node);
    }
    c.node_mut(1).campaign().unwrap();
    let mut rejections = 0;
    while let Some(m) = {
        c.process_all();
        c.network.pop_front()
    } {
        if let MessageBody::AppendResponse(AppendResponse {
            outcome: AppendOutcome::Conflict { .. },
            ..
        }) = &m.body
        {
            if m.from == 2 {
                rejections += 1;
            }
        }
        let to = m.to;
        let _ = c.node_mut(to).step(m);
    }
    c.process_all();
    assert_eq!(c.leader(), Some(1));
    c.tick(); // the next heartbeat carries the commit index
    assert!(
        rejections <= 2,
        "took {rejections} rejections for 600 divergent entries"
    );
    let l = c.node(1).last_index();
    assert_eq!(c.node(2).last_index(), l);
    assert_eq!(c.node(2).commit_index(), l);
    c.check_applied_consistent();
}

#[test]
fn replication_new_leader_never_commits_earlier_term_entry_by_counting_replicas() {
    // Figure 8: entry 2 of term 2 is on a majority, but a leader of term 4
    // may commit it only through an entry of its own term.
    let entries = log_with(&[1, 2]);
    let mut n = RawNode::new(
        Config {
            pre_vote: false,
            ..Config::new(1)
        },
        store_with(&[1, 2, 3], &entries, 3, 1),
    )
    .unwrap();
    n.campaign().unwrap();
    drain(&mut n);
    n.step(vote_from(2, 4)).unwrap();
    drain(&mut n);
    assert_eq!(n.role(), Role::Leader);
    assert_eq!(n.last_index(), 3, "blank entry of term 4 at index 3");
    n.step(ack(2, 2, 4)).unwrap();
    drain(&mut n);
    assert_eq!(
        n.commit_index(),
        1,
        "index 2 (term 2) is on 2 of 3 nodes but must not commit yet"
    );
    n.step(ack(2, 3, 4)).unwrap();
    drain(&mut n);
    assert_eq!(
        n.commit_index(),
        3,
        "the term-4 entry commits and carries index 2 with it"
    );
}

#[cfg(feature = "planted-bugs")]
#[test]
fn replication_planted_figure8_bug_commits_early() {
    let entries = log_with(&[1, 2]);
    let mut n = RawNode::new(
        Config {
            pre_vote: false,
            ..Config::new(1)
        },
        store_with(&[1, 2, 3], &entries, 3, 1),
    )
    .unwrap();
    n.plant_bug(Bug::CommitEarlierTerm);
    n.campaign().unwrap();
    drain(&mut n);
    n.step(vote_from(2, 4)).unwrap();
    drain(&mut n);
    n.step(ack(2, 2, 4)).unwrap();
    assert_eq!(n.commit_index(), 2);
}

#[test]
fn replication_delayed_short_append_never_truncates_newer_entries() {
    let mut n = RawNode::new(Config::new(2), store_with(&[1, 2, 3], &[], 1, 0)).unwrap();
    let append = |entries: Vec<Entry>| Message {
        from: 1,
        to: 2,
        term: 1,
        body: MessageBody::AppendRequest(AppendRequest {
            prev_log_index: 0,
            prev_log_term: 0,
            entries,
            leader_commit: 0,
            round: 0,
        }),
    };
    n.step(append(log_with(&[1, 1, 1, 1, 1]))).unwrap();
    drain(&mut n);
    n.step(append(log_with(&[1, 1, 1]))).unwrap();
    let rds = drain(&mut n);
    assert_eq!(n.last_index(), 5);
    assert!(
        rds.iter().all(|rd| rd.entries.is_empty()),
        "nothing rewritten"
    );
    let acks: Vec<_> = rds
        .iter()
        .flat_map(|rd| &rd.persisted_messages)
        .map(|m| m.body.clone())
        .collect();
    assert_eq!(
        acks,
        vec![MessageBody::AppendResponse(AppendResponse {
            outcome: AppendOutcome::Success { match_index: 3 },
            round: 0
        })],
        "acknowledges exactly what the message proved"
    );
}

#[test]
fn replication_follower_ack_waits_for_durability_and_rejection_does_not() {
    let mut n = RawNode::new(Config::new(2), store_with(&[1, 2, 3], &[], 1, 0)).unwrap();
    n.step(Message {
        from: 1,
        to: 2,
        term: 1,
        body: MessageBody::AppendRequest(AppendRequest {
            prev_log_index: 0,
            prev_log_term: 0,
            entries: log_with(&[1]),
            leader_commit: 0,
            round: 3,
        }),
    })
    .unwrap();
    let rd = n.ready().unwrap();
    assert!(rd.messages.is_empty());
    assert_eq!(rd.persisted_messages.len(), 1);
    assert_eq!(rd.entries.len(), 1);
    n.step(Message {
        from: 1,
        to: 2,
        term: 1,
        body: MessageBody::AppendRequest(AppendRequest {
            prev_log_index: 7,
            prev_log_term: 1,
            entries: vec![],
            leader_commit: 0,
            round: 4,
        }),
    })
    .unwrap();
    let rd = n.ready().unwrap();
    assert_eq!(
        rd.messages
            .iter()
            .map(|m| m.body.clone())
            .collect::<Vec<_>>(),
        vec![MessageBody::AppendResponse(AppendResponse {
            outcome: AppendOutcome::Conflict {
                prev_log_index: 7,
                conflict_term: None,
                conflict_index: 2
            },
            round: 4
        })]
    );
}

#[test]
fn replication_proposal_errors() {
    let mut c = Cluster::new(3, 4);
    let l = c.run_until_leader(100).unwrap();
    let f = (1..=3).find(|&i| i != l).unwrap();
    assert_eq!(
        c.node_mut(f).propose(Bytes::from_static(b"x")),
        Err(ProposeError::NotLeader {
            leader_hint: Some(l)
        })
    );
    let big = Bytes::from(vec![0u8; (1 << 20) + 1]);
    assert!(matches!(
        c.node_mut(l).propose(big),
        Err(ProposeError::TooLarge { .. })
    ));

    let mut n = RawNode::new(
        Config {
            pre_vote: false,
            max_uncommitted_bytes: 200,
            ..Config::new(1)
        },
        store_with(&[1, 2], &[], 0, 0),
    )
    .unwrap();
    n.campaign().unwrap();
    n.step(vote_from(2, 1)).unwrap();
    let mut accepted = 0;
    while n.propose(Bytes::from_static(b"0123456789")).is_ok() {
        accepted += 1;
        assert!(accepted < 100, "uncommitted bytes are bounded");
    }
    assert_eq!(
        n.propose(Bytes::from_static(b"x")),
        Err(ProposeError::Backpressure)
    );
}

#[test]
fn replication_bad_input_is_refused_and_changes_nothing() {
    let mut n = leader_of_three();
    let before = n.status();
    assert!(matches!(
        n.step(ack(2, 99, 1)),
        Err(StepError::Malformed { .. })
    ));
    assert!(matches!(
        n.step(ack(9, 1, 1)),
        Err(StepError::UnknownPeer(9))
    ));
    let mut m = ack(2, 1, 1);
    m.to = 5;
    assert!(matches!(n.step(m), Err(StepError::Misdelivered { .. })));
    let mut m = ack(2, 1, 1);
    m.from = 1;
    assert!(matches!(n.step(m), Err(StepError::Malformed { .. })));
    assert_eq!(n.status(), before);

    let mut f = RawNode::new(Config::new(2), store_with(&[1, 2, 3], &[], 1, 0)).unwrap();
    let before = f.status();
    let gap = Message {
        from: 1,
        to: 2,
        term: 1,
        body: MessageBody::AppendRequest(AppendRequest {
            prev_log_index: 0,
            prev_log_term: 0,
            entries: vec![entry(1, 1), entry(3, 1)],
            leader_commit: 0,
            round: 0,
        }),
    };
    assert!(matches!(f.step(gap), Err(StepError::Malformed { .. })));
    let future_term = Message {
        from: 1,
        to: 2,
        term: 1,
        body: MessageBody::AppendRequest(AppendRequest {
            prev_log_index: 0,
            prev_log_term: 0,
            entries: vec![entry(1, 7)],
            leader_commit: 0,
            round: 0,
        }),
    };
    assert!(matches!(
        f.step(future_term),
        Err(StepError::Malformed { .. })
    ));
    let s = f.status();
    assert_eq!(
        (s.last_index, s.commit_index, s.term),
        (before.last_index, before.commit_index, before.term)
    );
}

#[test]
fn replication_followers_learn_commit_index() {
    let mut c = Cluster::new(5, 2);
    let l = c.run_until_leader(100).unwrap();
    c.propose(l, b"v");
    c.ticks(1);
    for n in c.nodes.values() {
        assert_eq!(n.commit_index(), 2, "node {}", n.id());
        assert_eq!(n.applied_index(), 2);
    }
}

/// Randomized faults: crashes, partitions, loss, reordering. Checks that
/// every node applies the same entry at each index, that every entry the
/// leader reported committed survives every later leader, and that logs
/// agree on their committed prefix.
#[test]
fn replication_randomized_faults_keep_state_machine_safety() {
    for seed in 0..25u64 {
        let mut c = Cluster::new(5, seed);
        let mut rng = crate::rng::SplitMix64::new(seed);
        c.drop_ppm = 50_000;
        c.reorder = true;
        let mut committed: Vec<(LogIndex, Term)> = Vec::new();
        for step in 0..400u32 {
            match rng.next_u64() % 40 {
                0 => {
                    let id = 1 + rng.next_u64() % 5;
                    if c.nodes.contains_key(&id) && c.nodes.len() > 3 {
                        c.crash(id);
                    }
                }
                1 => {
                    let down: Vec<NodeId> = (1..=5).filter(|i| !c.nodes.contains_key(i)).collect();
                    if let Some(&id) = down.first() {
                        c.restart(id);
                    }
                }
                2 => c.isolate(1 + rng.next_u64() % 5),
                3 | 4 => c.heal(),
                5 => {
                    for id in c.nodes.keys().copied().collect::<Vec<_>>() {
                        if c.node(id).applied_index() > c.node(id).store().first_index() {
                            c.compact(id);
                        }
                    }
                }
                _ => {}
            }
            if let Some(l) = c.leader() {
                let _ = c.node_mut(l).propose(Bytes::from(format!("{seed}-{step}")));
                let n = c.node(l);
                let ci = n.commit_index();
                if let Ok(t) = LogStore::term(n.store(), ci) {
                    committed.push((ci, t));
                }
            }
            c.tick();
            c.check_applied_consistent();
        }
        c.heal();
        c.drop_ppm = 0;
        for id in 1..=5 {
            if !c.nodes.contains_key(&id) {
                c.restart(id);
            }
        }
        let l = c
            .run_until_leader(300)
            .unwrap_or_else(|| panic!("seed {seed}: no leader after heal"));
        c.propose(l, b"final");
        c.ticks(30);
        c.check_applied_consistent();
        let leader = c.node(c.leader().unwrap());
        for &(i, t) in &committed {
            if i >= leader.store().first_index() {
                assert_eq!(
                    LogStore::term(leader.store(), i).unwrap(),
                    t,
                    "seed {seed}: committed entry {i} lost"
                );
            }
        }
        let last = leader.last_index();
        for n in c.nodes.values() {
            assert_eq!(n.commit_index(), last, "seed {seed}: node {} lags", n.id());
        }
    }
}

#[allow(dead_code)]
fn _uses_bug(_: Bug) {}

#[test]
fn replication_a_commit_only_ready_needs_no_sync() {
    let mut n = leader_of_three();
    n.step(ack(2, 1, 1)).unwrap();
    n.step(ack(3, 1, 1)).unwrap();
    drain(&mut n);
    n.propose(Bytes::from_static(b"a")).unwrap();
    let rd = n.ready().unwrap();
    assert!(rd.must_sync, "new entries must be synced");
    n.store_mut().append(&rd.entries).unwrap();
    n.on_persisted(rd.number).unwrap();
    n.step(ack(2, 2, 1)).unwrap();
    let rd = n.ready().unwrap();
    assert_eq!(rd.hard_state.map(|h| h.commit), Some(2));
    assert!(rd.entries.is_empty());
    assert!(!rd.must_sync, "only the commit index changed");
}
