//! The election suite (`cargo test -p raft-core election`): the ideas of the
//! Go lab this project grew from, plus PreVote and CheckQuorum.

use std::collections::BTreeMap;

use crate::message::*;
use crate::testing::Cluster;
use crate::types::*;
use crate::{Config, MemStorage, RawNode};

fn no_prevote(id: NodeId) -> Config {
    Config {
        pre_vote: false,
        ..Config::new(id)
    }
}

/// Every node agrees on one leader and one term.
fn assert_agreement(c: &Cluster) -> (NodeId, Term) {
    let leader = c.leader().expect("a leader");
    let term = c.node(leader).term();
    for n in c.nodes.values() {
        assert_eq!(n.term(), term, "node {} term", n.id());
        assert_eq!(n.leader(), Some(leader), "node {} leader", n.id());
    }
    (leader, term)
}

#[test]
fn election_initial_in_3_5_7_node_clusters() {
    for n in [3, 5, 7] {
        for seed in 0..20 {
            let mut c = Cluster::new(n, seed);
            let leader = c.run_until_leader(100).expect("leader elected");
            c.ticks(5);
            assert_eq!(c.leaders_by_term().len(), 1);
            let (l, term) = assert_agreement(&c);
            assert_eq!(
                l, leader,
                "n={n} seed={seed}: leadership changed without faults"
            );
            // PreVote never bumps a term; the first real election wins term 1.
            assert_eq!(term, 1, "n={n} seed={seed}");
            for node in c.nodes.values() {
                assert_eq!(node.role() == Role::Leader, node.id() == leader);
            }
        }
    }
}

#[test]
fn election_at_most_one_leader_per_term_under_loss_and_reordering() {
    for seed in 0..30 {
        let mut c = Cluster::new(5, seed);
        c.drop_ppm = 200_000;
        c.reorder = true;
        let mut seen: BTreeMap<Term, NodeId> = BTreeMap::new();
        for step in 0..300 {
            if step % 50 == 10 {
                let victim = 1 + (seed + step) % 5;
                c.isolate(victim);
            }
            if step % 50 == 30 {
                c.heal();
            }
            c.tick();
            for (term, leaders) in c.leaders_by_term() {
                assert_eq!(leaders.len(), 1, "seed {seed}: two leaders in term {term}");
                let prev = seen.insert(term, leaders[0]);
                assert!(
                    prev.is_none() || prev == Some(leaders[0]),
                    "seed {seed}: term {term} led by {prev:?} and {}",
                    leaders[0]
                );
            }
        }
        c.drop_ppm = 0;
        c.heal();
        assert!(
            c.run_until_leader(200).is_some(),
            "seed {seed}: no leader after healing"
        );
    }
}

#[test]
fn election_reelection_after_leader_is_cut_off() {
    let mut c = Cluster::new(3, 7);
    let old = c.run_until_leader(100).unwrap();
    let old_term = c.node(old).term();
    c.isolate(old);
    let mut new = None;
    for _ in 0..200 {
        c.tick();
        new = c
            .nodes
            .values()
            .find(|n| n.role() == Role::Leader && n.id() != old)
            .map(|n| n.id());
        if new.is_some() {
            break;
        }
    }
    let new = new.expect("the connected majority elects a new leader");
    assert!(c.node(new).term() > old_term);
    // CheckQuorum: the cut-off leader notices it lost its quorum.
    c.ticks(25);
    assert_ne!(c.node(old).role(), Role::Leader);
    c.heal();
    c.ticks(5);
    let (leader, _) = assert_agreement(&c);
    assert_eq!(leader, new, "the old leader rejoins as a follower");
}

#[test]
fn election_no_leader_without_majority_and_recovery_when_it_returns() {
    let mut c = Cluster::new(5, 3);
    let leader = c.run_until_leader(100).unwrap();
    let mut others: Vec<NodeId> = (1..=5).filter(|&i| i != leader).collect();
    // Crash three nodes including the leader: two remain, no majority.
    c.crash(leader);
    let down = [others.pop().unwrap(), others.pop().unwrap()];
    for &d in &down {
        c.crash(d);
    }
    for _ in 0..300 {
        c.tick();
        assert!(c.leader().is_none(), "a leader without a majority");
    }
    c.restart(down[0]);
    let l = c.run_until_leader(300).expect("majority is back");
    assert!(l != leader);
    c.restart(leader);
    c.restart(down[1]);
    c.ticks(5);
    assert_agreement(&c);
}

#[test]
fn election_split_vote_resolves() {
    let mut c = Cluster::with_config(4, 11, no_prevote);
    // Node 3 hears only node 1, node 4 hears only node 2: 2 votes each.
    c.cut(2, 3);
    c.cut(1, 4);
    c.cut(1, 2);
    c.node_mut(1).campaign().unwrap();
    c.node_mut(2).campaign().unwrap();
    c.deliver_all();
    assert_eq!(
        c.node(1).role(),
        Role::Candidate,
        "split: 2 of 4 votes is no majority"
    );
    assert_eq!(c.node(2).role(), Role::Candidate);
    assert_eq!(c.node(3).hard_state().vote, Some(1));
    assert_eq!(c.node(4).hard_state().vote, Some(2));
    let split_term = c.node(1).term();
    c.heal();
    let leader = c
        .run_until_leader(200)
        .expect("a fresh random timeout breaks the tie");
    assert!(c.node(leader).term() > split_term);
    c.ticks(3);
    assert_agreement(&c);
}

fn vote_request(
    from: NodeId,
    to: NodeId,
    term: Term,
    last_index: LogIndex,
    last_term: Term,
) -> Message {
    Message {
        from,
        to,
        term,
        body: MessageBody::VoteRequest(VoteRequest {
            pre_vote: false,
            last_log_index: last_index,
            last_log_term: last_term,
            transfer: false,
        }),
    }
}

fn granted_votes(rd: &crate::Ready) -> Vec<(NodeId, bool)> {
    rd.messages
        .iter()
        .chain(&rd.persisted_messages)
        .filter_map(|m| match &m.body {
            MessageBody::VoteResponse(v) => Some((m.to, v.granted)),
            _ => None,
        })
        .collect()
}

#[test]
fn election_one_vote_per_term_even_across_restart() {
    let storage = MemStorage::new_with_membership(Membership::new_voters([1, 2, 3]));
    let mut n = RawNode::new(no_prevote(3), storage).unwrap();
    n.step(vote_request(1, 3, 5, 0, 0)).unwrap();
    let rd = n.ready().unwrap();
    assert_eq!(granted_votes(&rd), vec![(1, true)]);
    assert!(rd.must_sync, "a vote must be synced");
    // The grant may leave only after the vote is durable.
    assert!(rd.messages.is_empty());
    assert_eq!(rd.hard_state.unwrap().vote, Some(1));
    assert_eq!(rd.hard_state.unwrap().term, 5);
    // The driver persists, then the node crashes and restarts.
    let mut store = n.store().clone();
    store.set_hard_state(rd.hard_state.unwrap());
    let mut n = RawNode::new(no_prevote(3), store).unwrap();
    assert_eq!(n.hard_state().vote, Some(1));
    n.step(vote_request(2, 3, 5, 0, 0)).unwrap();
    let rd = n.ready().unwrap();
    assert_eq!(
        granted_votes(&rd),
        vec![(2, false)],
        "second vote in term 5"
    );
    // The same candidate asking again gets the same answer.
    n.step(vote_request(1, 3, 5, 0, 0)).unwrap();
    let rd = n.ready().unwrap();
    assert_eq!(granted_votes(&rd), vec![(1, true)]);
}

#[test]
fn election_vote_requires_up_to_date_log() {
    let mut store = MemStorage::new_with_membership(Membership::new_voters([1, 2, 3]));
    store
        .append(&[
            Entry {
                term: 1,
                index: 1,
                payload: EntryPayload::Blank,
            },
            Entry {
                term: 2,
                index: 2,
                payload: EntryPayload::Blank,
            },
        ])
        .unwrap();
    store.set_hard_state(HardState {
        term: 2,
        vote: None,
        commit: 0,
    });
    // Without CheckQuorum: a restarted node (term 2) would otherwise refuse
    // every vote for one election timeout (tested below).
    let cfg = Config {
        check_quorum: false,
        ..no_prevote(3)
    };
    let mut n = RawNode::new(cfg, store).unwrap();
    // Lower last term loses even with a longer log (§5.4.1).
    n.step(vote_request(1, 3, 3, 10, 1)).unwrap();
    assert_eq!(granted_votes(&n.ready().unwrap()), vec![(1, false)]);
    // Same last term, shorter log loses.
    n.step(vote_request(2, 3, 4, 1, 2)).unwrap();
    assert_eq!(granted_votes(&n.ready().unwrap()), vec![(2, false)]);
    // Same last term, same length wins.
    n.step(vote_request(1, 3, 5, 2, 2)).unwrap();
    assert_eq!(granted_votes(&n.ready().unwrap()), vec![(1, true)]);
}

fn heartbeat(from: NodeId, to: NodeId, term: Term) -> Message {
    Message {
        from,
        to,
        term,
        body: MessageBody::AppendRequest(AppendRequest {
            prev_log_index: 0,
            prev_log_term: 0,
            entries: vec![],
            leader_commit: 0,
            round: 1,
        }),
    }
}

fn candidate(id: NodeId) -> RawNode<MemStorage> {
    let storage = MemStorage::new_with_membership(Membership::new_voters([1, 2, 3]));
    let mut n = RawNode::new(no_prevote(id), storage).unwrap();
    n.campaign().unwrap();
    assert_eq!(n.role(), Role::Candidate);
    assert_eq!(n.term(), 1);
    let rd = n.ready().unwrap();
    assert!(rd.must_sync, "a new term and vote must be synced");
    assert_eq!(
        rd.persisted_messages.len(),
        2,
        "vote requests wait for the vote to be durable"
    );
    assert!(rd.messages.is_empty());
    n.store_mut().set_hard_state(rd.hard_state.unwrap());
    n.on_persisted(rd.number).unwrap();
    n
}

#[test]
fn election_candidate_steps_down_on_append_of_equal_or_higher_term() {
    for term in [1, 2] {
        let mut n = candidate(1);
        n.step(heartbeat(2, 1, term)).unwrap();
        assert_eq!(n.role(), Role::Follower);
        assert_eq!(n.leader(), Some(2));
        assert_eq!(n.term(), term);
    }
}

#[test]
fn election_candidate_rejects_append_of_lower_term_with_its_term() {
    let mut n = candidate(1);
    n.campaign().unwrap(); // term 2
    assert_eq!(n.term(), 2);
    let _ = n.ready().unwrap();
    n.step(heartbeat(2, 1, 1)).unwrap();
    assert_eq!(
        n.role(),
        Role::Candidate,
        "a stale leader does not unseat a candidate"
    );
    let rd = n.ready().unwrap();
    let reply = rd.messages.iter().find(|m| m.to == 2).expect("a rejection");
    assert_eq!(reply.term, 2);
    assert!(matches!(
        reply.body,
        MessageBody::AppendResponse(AppendResponse {
            outcome: AppendOutcome::StaleTerm,
            ..
        })
    ));
}

#[test]
fn election_restarted_stale_leader_cannot_disrupt() {
    let mut c = Cluster::new(3, 21);
    let old = c.run_until_leader(100).unwrap();
    c.propose(old, b"x");
    c.crash(old);
    let new = c.run_until_leader(200).unwrap();
    let term = c.node(new).term();
    c.propose(new, b"y");
    c.restart(old);
    c.ticks(40);
    let (leader, t) = assert_agreement(&c);
    assert_eq!(
        (leader, t),
        (new, term),
        "the restarted node simply follows"
    );
    assert_eq!(c.applied_data(old), c.applied_data(new));
}

#[test]
fn election_prevote_keeps_rejoining_partitioned_node_from_bumping_term() {
    let mut c = Cluster::new(5, 5);
    let leader = c.run_until_leader(100).unwrap();
    let term = c.node(leader).term();
    let follower = (1..=5).find(|&i| i != leader).unwrap();
    c.isolate(follower);
    c.ticks(200);
    assert_eq!(
        c.node(follower).term(),
        term,
        "pre-votes fail, so the term stays"
    );
    c.heal();
    c.ticks(10);
    assert_eq!(
        assert_agreement(&c),
        (leader, term),
        "the healthy leader is undisturbed"
    );
}

#[test]
fn election_without_prevote_a_partitioned_node_bumps_its_term() {
    // The contrast that motivates PreVote.
    let mut c = Cluster::with_config(3, 5, no_prevote);
    let leader = c.run_until_leader(100).unwrap();
    let term = c.node(leader).term();
    let follower = (1..=3).find(|&i| i != leader).unwrap();
    c.isolate(follower);
    c.ticks(100);
    assert!(c.node(follower).term() > term);
}

#[test]
fn election_check_quorum_makes_isolated_leader_step_down() {
    let mut c = Cluster::new(3, 9);
    let leader = c.run_until_leader(100).unwrap();
    c.isolate(leader);
    // One election timeout without a quorum (10 ticks) plus slack.
    c.ticks(21);
    assert_eq!(c.node(leader).role(), Role::Follower);
}

#[test]
fn election_single_node_elects_itself() {
    let mut c = Cluster::new(1, 1);
    assert_eq!(c.run_until_leader(40), Some(1));
    c.propose(1, b"solo");
    assert_eq!(c.applied_data(1), vec![bytes::Bytes::from_static(b"solo")]);
}

#[test]
fn election_is_deterministic_for_a_seed() {
    let run = |seed| {
        let mut c = Cluster::new(5, seed);
        c.drop_ppm = 100_000;
        c.reorder = true;
        c.ticks(200);
        c.nodes
            .values()
            .map(|n| (n.term(), n.role(), n.last_index()))
            .collect::<Vec<_>>()
    };
    assert_eq!(run(42), run(42));
}

#[test]
fn election_learner_never_campaigns() {
    let mut store = MemStorage::new_with_membership(Membership {
        voters: [1, 2].into(),
        voters_outgoing: Default::default(),
        learners: [3].into(),
    });
    store.set_hard_state(HardState::default());
    let mut n = RawNode::new(Config::new(3), store).unwrap();
    for _ in 0..100 {
        n.tick();
    }
    assert_eq!(n.role(), Role::Follower);
    assert_eq!(n.term(), 0);
    assert!(n.ready().unwrap().messages.is_empty());
}

#[test]
fn election_vote_guard_survives_a_term_learned_without_a_leader() {
    // Found by the simulator (seed 40639, 3 nodes): a follower acknowledged
    // leader 1's heartbeat, then learned a higher term from a refused
    // pre-vote response, which cleared its leader; it then voted for node 3
    // while leader 1, partitioned, still served lease reads counting on it.
    let et = Config::new(2).election_timeout_ticks;
    let storage = MemStorage::new_with_membership(Membership::new_voters([1, 2, 3]));
    let mut n = RawNode::new(no_prevote(2), storage).unwrap();
    n.step(heartbeat(1, 2, 1)).unwrap();
    assert_eq!(n.leader(), Some(1));
    let _ = n.ready().unwrap();
    n.step(Message {
        from: 3,
        to: 2,
        term: 3,
        body: MessageBody::VoteResponse(VoteResponse {
            pre_vote: true,
            granted: false,
        }),
    })
    .unwrap();
    assert_eq!((n.term(), n.leader()), (3, None));
    // A candidate of the term just learned: refused.
    n.step(vote_request(3, 2, 3, 0, 0)).unwrap();
    assert_eq!(granted_votes(&n.ready().unwrap()), vec![(3, false)]);
    // A candidate of a later term: ignored, the term does not move.
    n.step(vote_request(3, 2, 4, 0, 0)).unwrap();
    assert!(granted_votes(&n.ready().unwrap()).is_empty());
    assert_eq!(n.term(), 3);
    // One election timeout after the heartbeat the promise has expired.
    for _ in 0..et {
        n.tick();
    }
    n.step(vote_request(3, 2, 10, 0, 0)).unwrap();
    assert_eq!(granted_votes(&n.ready().unwrap()), vec![(3, true)]);
}

/// Node 3 of {1, 2, 3}, restarting with term 2 and no vote.
fn restarted_at_term_2() -> RawNode<MemStorage> {
    let mut store = MemStorage::new_with_membership(Membership::new_voters([1, 2, 3]));
    store.set_hard_state(HardState {
        term: 2,
        vote: None,
        commit: 0,
    });
    RawNode::new(no_prevote(3), store).unwrap()
}

#[test]
fn election_restarted_node_keeps_the_vote_guard_for_one_election_timeout() {
    // It may have acknowledged a leader's heartbeat just before crashing.
    let et = Config::new(3).election_timeout_ticks;
    let mut n = restarted_at_term_2();
    n.step(vote_request(1, 3, 3, 0, 0)).unwrap();
    assert!(granted_votes(&n.ready().unwrap()).is_empty());
    assert_eq!(n.term(), 2);
    for _ in 0..et {
        n.tick();
    }
    n.step(vote_request(1, 3, 10, 0, 0)).unwrap();
    assert_eq!(granted_votes(&n.ready().unwrap()), vec![(1, true)]);
    // A leadership transfer's election is never held back.
    let mut n = restarted_at_term_2();
    let mut m = vote_request(1, 3, 3, 0, 0);
    if let MessageBody::VoteRequest(req) = &mut m.body {
        req.transfer = true;
    }
    n.step(m).unwrap();
    assert_eq!(granted_votes(&n.ready().unwrap()), vec![(1, true)]);
}

#[test]
fn election_restart_raises_the_term_to_the_last_entrys() {
    // Found by the simulator (seed 252186, 3 nodes): a crash tore the write
    // that held entries of term 4 and the hard state raising the term to 4;
    // the entries survived, the hard state did not. Back at term 3, the node
    // took a delayed append from the deposed leader of term 3 over a
    // committed entry of term 4.
    let mut store = MemStorage::new_with_membership(Membership::new_voters([1, 2, 3]));
    store
        .append(&[
            Entry {
                term: 3,
                index: 1,
                payload: EntryPayload::Blank,
            },
            Entry {
                term: 4,
                index: 2,
                payload: EntryPayload::Blank,
            },
        ])
        .unwrap();
    store.set_hard_state(HardState {
        term: 3,
        vote: Some(1),
        commit: 1,
    });
    let mut n = RawNode::new(no_prevote(3), store).unwrap();
    assert_eq!(n.term(), 4);
    assert_eq!(n.hard_state().vote, None, "no vote cast in term 4 yet");
    let rd = n.ready().unwrap();
    assert_eq!(
        rd.hard_state.map(|hs| hs.term),
        Some(4),
        "the raise is persisted"
    );
    // The deposed leader of term 3 is refused with the current term.
    let mut stale = heartbeat(1, 3, 3);
    if let MessageBody::AppendRequest(req) = &mut stale.body {
        req.prev_log_index = 1;
        req.prev_log_term = 3;
        req.entries = vec![Entry {
            term: 3,
            index: 2,
            payload: EntryPayload::Blank,
        }];
    }
    n.step(stale).unwrap();
    let rd = n.ready().unwrap();
    let replies: Vec<_> = rd
        .messages
        .iter()
        .chain(&rd.persisted_messages)
        .map(|m| (m.to, m.term, m.body.clone()))
        .collect();
    assert_eq!(
        replies,
        vec![(
            1,
            4,
            MessageBody::AppendResponse(AppendResponse {
                outcome: AppendOutcome::StaleTerm,
                round: 0,
            })
        )]
    );
    assert_eq!(n.last_index(), 2);
    assert_eq!(crate::LogStore::term(n.store(), 2), Ok(4));
}
