//! Leadership transfer.

use bytes::Bytes;

use crate::error::{ProposeError, TransferError};
use crate::message::*;
use crate::testing::Cluster;
use crate::types::*;

#[test]
fn transfer_to_caught_up_follower() {
    let mut c = Cluster::new(3, 1);
    let l = c.run_until_leader(100).unwrap();
    let target = (1..=3).find(|&i| i != l).unwrap();
    let term = c.node(l).term();
    c.node_mut(l).transfer_leadership(target).unwrap();
    c.deliver_all();
    assert_eq!(c.leader(), Some(target));
    assert_eq!(c.node(target).term(), term + 1);
    assert_eq!(c.node(l).role(), Role::Follower);
    c.propose(target, b"x");
    c.ticks(1);
    c.check_applied_consistent();
}

#[test]
fn transfer_to_lagging_follower_catches_it_up_first_and_blocks_proposals() {
    let mut c = Cluster::new(3, 2);
    let l = c.run_until_leader(100).unwrap();
    let target = (1..=3).find(|&i| i != l).unwrap();
    c.isolate(target);
    for i in 0..10u32 {
        c.propose(l, &i.to_be_bytes());
    }
    c.node_mut(l).transfer_leadership(target).unwrap();
    assert_eq!(
        c.node_mut(l).propose(Bytes::from_static(b"no")),
        Err(ProposeError::TransferInProgress { to: target })
    );
    c.heal();
    c.node_mut(l).tick(); // (nothing was delivered while cut off)
    c.node_mut(l).transfer_leadership(target).unwrap();
    // Delivery order: appends reach the target first, then TimeoutNow.
    let mut saw_timeout_now = false;
    while c.deliver_one() {
        if c.network.iter().any(|m| m.body == MessageBody::TimeoutNow) {
            saw_timeout_now = true;
        }
    }
    c.ticks(2);
    assert!(saw_timeout_now);
    assert_eq!(c.leader(), Some(target));
    assert_eq!(c.applied_data(target).len(), 10);
}

#[test]
fn transfer_is_abandoned_after_an_election_timeout() {
    let mut c = Cluster::new(3, 3);
    let l = c.run_until_leader(100).unwrap();
    let target = (1..=3).find(|&i| i != l).unwrap();
    c.crash(target);
    c.node_mut(l).transfer_leadership(target).unwrap();
    assert!(c.node_mut(l).propose(Bytes::from_static(b"no")).is_err());
    c.ticks(10);
    assert_eq!(c.leader(), Some(l));
    assert!(c.node_mut(l).propose(Bytes::from_static(b"yes")).is_ok());
}

#[test]
fn transfer_validation() {
    let mut c = Cluster::new(3, 4);
    let l = c.run_until_leader(100).unwrap();
    let f = (1..=3).find(|&i| i != l).unwrap();
    assert_eq!(
        c.node_mut(l).transfer_leadership(l),
        Err(TransferError::AlreadyLeader)
    );
    assert_eq!(
        c.node_mut(l).transfer_leadership(9),
        Err(TransferError::NotVoter(9))
    );
    assert_eq!(
        c.node_mut(f).transfer_leadership(l),
        Err(TransferError::NotLeader {
            leader_hint: Some(l)
        })
    );
}
