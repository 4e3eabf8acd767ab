//! Joint consensus: learners, promotion, removal (of the leader too), one
//! change at a time, both majorities while joint, and rollback of an
//! uncommitted configuration.

use std::collections::BTreeSet;

use bytes::Bytes;

use crate::error::MembershipError;
use crate::message::*;
use crate::ready::MembershipChange::*;
use crate::testing::Cluster;
use crate::types::*;
use crate::{Config, MemStorage, RawNode};

fn configs_in_log(c: &Cluster, id: NodeId) -> Vec<Membership> {
    c.applied[&id]
        .iter()
        .filter_map(|e| match &e.payload {
            EntryPayload::Membership(m) => Some(m.clone()),
            _ => None,
        })
        .collect()
}

fn set(ids: &[NodeId]) -> BTreeSet<NodeId> {
    ids.iter().copied().collect()
}

#[test]
fn membership_add_learner_catch_up_then_promote_through_joint() {
    let mut c = Cluster::new(3, 1);
    let l = c.run_until_leader(100).unwrap();
    for i in 0..10u32 {
        c.propose(l, &i.to_be_bytes());
    }
    c.add_empty_node(4);
    c.node_mut(l).change_membership(&[AddLearner(4)]).unwrap();
    c.deliver_all();
    // Followers learn the last commit index with the next heartbeat.
    c.ticks(10);
    assert_eq!(c.node(4).membership().learners, set(&[4]));
    assert_eq!(
        c.applied_data(4),
        c.applied_data(l),
        "the learner receives the log"
    );
    assert_eq!(c.node(4).role(), Role::Follower);
    c.ticks(60);
    assert_eq!(
        c.node(4).term(),
        c.node(l).term(),
        "a learner never campaigns"
    );

    c.node_mut(l).change_membership(&[AddVoter(4)]).unwrap();
    c.deliver_all();
    c.ticks(10);
    let configs = configs_in_log(&c, 4);
    let joint = &configs[configs.len() - 2];
    assert_eq!(joint.voters, set(&[1, 2, 3, 4]));
    assert_eq!(joint.voters_outgoing, set(&[1, 2, 3]));
    let last = configs.last().unwrap();
    assert_eq!(
        last,
        &Membership::new_voters([1, 2, 3, 4]),
        "joint left automatically"
    );
    for n in c.nodes.values() {
        assert_eq!(n.membership(), last);
    }
    c.check_applied_consistent();
}

#[test]
fn membership_remove_follower_and_it_stops_campaigning() {
    let mut c = Cluster::new(3, 2);
    let l = c.run_until_leader(100).unwrap();
    let gone = (1..=3).find(|&i| i != l).unwrap();
    c.node_mut(l).change_membership(&[Remove(gone)]).unwrap();
    c.deliver_all();
    c.ticks(3);
    let remaining: BTreeSet<NodeId> = (1..=3).filter(|&i| i != gone).collect();
    assert_eq!(
        c.node(l).membership(),
        &Membership {
            voters: remaining.clone(),
            ..Default::default()
        }
    );
    let term = c.node(l).term();
    c.ticks(100);
    // The removed node may never learn the final configuration (the leader
    // stops replicating to it), so it may try pre-votes, but it cannot
    // disrupt: its pre-votes are refused within the leader's lease.
    assert_eq!(c.leader(), Some(l));
    assert_eq!(c.node(l).term(), term);
    c.propose(l, b"with two");
    assert_eq!(
        c.applied_data(l).last().unwrap(),
        &Bytes::from_static(b"with two")
    );
}

#[test]
fn membership_removed_leader_steps_down_after_the_change_commits() {
    let mut c = Cluster::new(3, 3);
    let l = c.run_until_leader(100).unwrap();
    c.node_mut(l).change_membership(&[Remove(l)]).unwrap();
    c.deliver_all();
    c.ticks(2);
    assert_ne!(c.node(l).role(), Role::Leader);
    let new = c.run_until_leader(100).expect("the others elect a leader");
    assert_ne!(new, l);
    assert!(!c.node(new).membership().is_voter(l));
    c.propose(new, b"after");
    c.ticks(1);
    c.check_applied_consistent();
}

#[test]
fn membership_one_change_at_a_time_and_validation() {
    let mut c = Cluster::new(3, 4);
    let l = c.run_until_leader(100).unwrap();
    let f = (1..=3).find(|&i| i != l).unwrap();
    assert_eq!(
        c.node_mut(f).change_membership(&[AddLearner(9)]),
        Err(MembershipError::NotLeader {
            leader_hint: Some(l)
        })
    );
    c.node_mut(l).change_membership(&[AddVoter(4)]).unwrap();
    // Not delivered yet: the joint configuration is pending.
    assert_eq!(
        c.node_mut(l).change_membership(&[AddLearner(5)]),
        Err(MembershipError::ChangeInProgress)
    );
    c.deliver_all();
    // Node 4 does not exist: the joint configuration needs a majority of
    // {1,2,3,4}, so it still commits with three of them.
    c.ticks(2);
    assert!(!c.node(l).membership().is_joint());
    assert!(matches!(
        c.node_mut(l).change_membership(&[]),
        Err(MembershipError::Invalid(_))
    ));
    assert!(matches!(
        c.node_mut(l).change_membership(&[Remove(7)]),
        Err(MembershipError::Invalid(_))
    ));
    assert!(matches!(
        c.node_mut(l).change_membership(&[AddLearner(1)]),
        Err(MembershipError::Invalid(_))
    ));
    assert!(matches!(
        c.node_mut(l)
            .change_membership(&[Remove(1), Remove(2), Remove(3), Remove(4)]),
        Err(MembershipError::Invalid(_))
    ));
}

#[test]
fn membership_lagging_learner_is_not_promoted() {
    let mut c = Cluster::with_config(3, 5, |id| Config {
        max_promotion_lag_entries: 5,
        ..Config::new(id)
    });
    let l = c.run_until_leader(100).unwrap();
    c.add_empty_node(4);
    c.node_mut(l).change_membership(&[AddLearner(4)]).unwrap();
    c.deliver_all();
    c.isolate(4);
    for i in 0..20u32 {
        c.propose(l, &i.to_be_bytes());
    }
    assert!(matches!(
        c.node_mut(l).change_membership(&[AddVoter(4)]),
        Err(MembershipError::LearnerLagging { id: 4, .. })
    ));
    c.heal();
    c.ticks(10); // stalled appends are resent after a few ticks
    c.node_mut(l).change_membership(&[AddVoter(4)]).unwrap();
}

#[test]
fn membership_joint_config_needs_both_majorities() {
    // Replace {1,2,3} by {1,4,5}: while joint, the old majority alone
    // ({1,2,3}) cannot commit.
    let mut c = Cluster::new(3, 6);
    c.elect(1);
    assert_eq!(c.leader(), Some(1));
    c.add_empty_node(4);
    c.add_empty_node(5);
    c.node_mut(1)
        .change_membership(&[AddLearner(4), AddLearner(5)])
        .unwrap();
    c.deliver_all();
    c.ticks(2);
    c.node_mut(1)
        .change_membership(&[AddVoter(4), AddVoter(5), Remove(2), Remove(3)])
        .unwrap();
    // Nodes 4 and 5 never hear of the joint configuration.
    c.cut(1, 4);
    c.cut(1, 5);
    c.deliver_all();
    let joint_index = c.node(1).last_index();
    assert!(c.node(1).membership().is_joint());
    c.ticks(3);
    assert!(
        c.node(1).commit_index() < joint_index,
        "old majority alone cannot commit C(old,new)"
    );
    c.heal();
    c.ticks(3);
    assert!(c.node(1).commit_index() > joint_index);
    assert_eq!(c.node(1).membership(), &Membership::new_voters([1, 4, 5]));
}

#[test]
fn membership_uncommitted_config_rolls_back_when_truncated() {
    let mut s = MemStorage::new_with_membership(Membership::new_voters([1, 2, 3]));
    s.set_hard_state(HardState {
        term: 1,
        vote: None,
        commit: 0,
    });
    let mut n = RawNode::new(Config::new(3), s).unwrap();
    let append = |term, entries: Vec<Entry>| Message {
        from: 1,
        to: 3,
        term,
        body: MessageBody::AppendRequest(AppendRequest {
            prev_log_index: 0,
            prev_log_term: 0,
            entries,
            leader_commit: 0,
            round: 0,
        }),
    };
    let joint = Membership {
        voters: set(&[1, 2, 3, 4]),
        voters_outgoing: set(&[1, 2, 3]),
        learners: set(&[]),
    };
    n.step(append(
        1,
        vec![Entry {
            term: 1,
            index: 1,
            payload: EntryPayload::Membership(joint.clone()),
        }],
    ))
    .unwrap();
    assert_eq!(n.membership(), &joint, "takes effect when appended");
    n.step(append(
        2,
        vec![Entry {
            term: 2,
            index: 1,
            payload: EntryPayload::Blank,
        }],
    ))
    .unwrap();
    assert_eq!(
        n.membership(),
        &Membership::new_voters([1, 2, 3]),
        "rolled back"
    );
}
