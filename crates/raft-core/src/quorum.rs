//! Quorum arithmetic for simple and joint configurations (thesis §4.3).
//!
//! A joint configuration needs a majority of the incoming voters **and** a
//! majority of the outgoing voters for every decision: commitment, elections
//! and leadership confirmation for reads.

use std::collections::BTreeSet;

use crate::types::{Membership, NodeId};

/// Outcome of counting votes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VoteResult {
    /// A quorum granted.
    Won,
    /// Enough voters refused that a quorum can no longer be reached.
    Lost,
    /// Still waiting for responses.
    Pending,
}

/// The largest value that a majority of `voters` has reached, where
/// `value_of` gives each voter's value (its match index, or the last
/// heartbeat round it acknowledged). An empty voter set imposes no
/// constraint and returns `u64::MAX`, so that the outgoing half of a
/// non-joint configuration never holds anything back.
pub fn majority_value(voters: &BTreeSet<NodeId>, value_of: impl Fn(NodeId) -> u64) -> u64 {
    if voters.is_empty() {
        return u64::MAX;
    }
    // Runs on every acknowledgement a leader receives: configurations of
    // up to 16 voters are sorted on the stack, larger ones on the heap.
    let n = voters.len();
    let mut small = [0u64; 16];
    let mut large = Vec::new();
    let values: &mut [u64] = if n <= small.len() {
        for (slot, &v) in small.iter_mut().zip(voters) {
            *slot = value_of(v);
        }
        &mut small[..n]
    } else {
        large.extend(voters.iter().map(|&v| value_of(v)));
        &mut large
    };
    values.sort_unstable_by(|a, b| b.cmp(a));
    // With n voters, the (n/2)-th largest (0-based) is held by n/2 + 1 of them.
    values[n / 2]
}

/// Like [`majority_value`] for a possibly joint configuration.
pub fn joint_value(membership: &Membership, value_of: impl Fn(NodeId) -> u64) -> u64 {
    majority_value(&membership.voters, &value_of)
        .min(majority_value(&membership.voters_outgoing, &value_of))
}

/// Counts votes in one voter set; `vote_of` is `Some(granted)` for voters
/// that answered.
pub fn majority_vote(
    voters: &BTreeSet<NodeId>,
    vote_of: impl Fn(NodeId) -> Option<bool>,
) -> VoteResult {
    if voters.is_empty() {
        return VoteResult::Won;
    }
    let (mut yes, mut missing) = (0, 0);
    for &v in voters {
        match vote_of(v) {
            Some(true) => yes += 1,
            Some(false) => {}
            None => missing += 1,
        }
    }
    let quorum = voters.len() / 2 + 1;
    if yes >= quorum {
        VoteResult::Won
    } else if yes + missing >= quorum {
        VoteResult::Pending
    } else {
        VoteResult::Lost
    }
}

/// Counts votes in a possibly joint configuration: won only if both halves
/// are won, lost if either half is lost.
pub fn joint_vote(membership: &Membership, vote_of: impl Fn(NodeId) -> Option<bool>) -> VoteResult {
    let incoming = majority_vote(&membership.voters, &vote_of);
    let outgoing = majority_vote(&membership.voters_outgoing, &vote_of);
    match (incoming, outgoing) {
        (VoteResult::Won, VoteResult::Won) => VoteResult::Won,
        (VoteResult::Lost, _) | (_, VoteResult::Lost) => VoteResult::Lost,
        _ => VoteResult::Pending,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn set(ids: &[NodeId]) -> BTreeSet<NodeId> {
        ids.iter().copied().collect()
    }

    type ValueCase<'a> = (&'a [NodeId], &'a [(NodeId, u64)], u64);
    type VoteCase<'a> = (&'a [NodeId], &'a [(NodeId, bool)], VoteResult);

    #[test]
    fn majority_value_of_large_configurations() {
        // Past the stack buffer (16 voters) the heap path gives the same.
        for n in [15u64, 16, 17, 20, 33] {
            let voters: BTreeSet<NodeId> = (1..=n).collect();
            // Voter i has value i: a majority (n/2 + 1 voters) holds n - n/2.
            assert_eq!(majority_value(&voters, |id| id), n - n / 2, "{n} voters");
        }
    }

    #[test]
    fn majority_value_table() {
        // (voters, values by voter, expected committed value)
        let cases: &[ValueCase] = &[
            (&[1], &[(1, 5)], 5),
            (&[1, 2], &[(1, 5), (2, 3)], 3),
            (&[1, 2, 3], &[(1, 5), (2, 3), (3, 1)], 3),
            (&[1, 2, 3], &[(1, 5), (2, 5), (3, 1)], 5),
            (&[1, 2, 3, 4], &[(1, 9), (2, 8), (3, 1), (4, 0)], 1),
            (
                &[1, 2, 3, 4, 5],
                &[(1, 9), (2, 8), (3, 7), (4, 0), (5, 0)],
                7,
            ),
            (&[1, 2, 3, 4, 5], &[(1, 9), (2, 8)], 0),
            (
                &[1, 2, 3, 4, 5, 6, 7],
                &[(1, 1), (2, 2), (3, 3), (4, 4), (5, 5), (6, 6), (7, 7)],
                4,
            ),
            (&[], &[], u64::MAX),
        ];
        for (voters, values, expected) in cases {
            let map: BTreeMap<_, _> = values.iter().copied().collect();
            let got = majority_value(&set(voters), |id| map.get(&id).copied().unwrap_or(0));
            assert_eq!(got, *expected, "voters {voters:?} values {values:?}");
        }
    }

    #[test]
    fn joint_value_needs_both_halves() {
        let m = Membership {
            voters: set(&[1, 2, 3]),
            voters_outgoing: set(&[3, 4, 5]),
            learners: set(&[]),
        };
        let values: BTreeMap<NodeId, u64> = [(1, 10), (2, 10), (3, 10), (4, 2), (5, 1)].into();
        // Incoming majority has 10, outgoing only 2.
        assert_eq!(joint_value(&m, |id| values[&id]), 2);
        let simple = Membership::new_voters([1, 2, 3]);
        assert_eq!(joint_value(&simple, |id| values[&id]), 10);
    }

    #[test]
    fn vote_table() {
        use VoteResult::*;
        // (voters, votes, expected)
        let cases: &[VoteCase] = &[
            (&[1], &[(1, true)], Won),
            (&[1], &[], Pending),
            (&[1], &[(1, false)], Lost),
            (&[1, 2, 3], &[(1, true)], Pending),
            (&[1, 2, 3], &[(1, true), (2, true)], Won),
            (&[1, 2, 3], &[(1, true), (2, false)], Pending),
            (&[1, 2, 3], &[(1, true), (2, false), (3, false)], Lost),
            (&[1, 2, 3, 4], &[(1, true), (2, true)], Pending),
            (
                &[1, 2, 3, 4],
                &[(1, true), (2, true), (3, false), (4, false)],
                Lost,
            ),
            (&[1, 2, 3, 4, 5], &[(1, true), (2, true), (3, true)], Won),
            (
                &[1, 2, 3, 4, 5],
                &[(4, false), (5, false), (3, false)],
                Lost,
            ),
        ];
        for (voters, votes, expected) in cases {
            let map: BTreeMap<_, _> = votes.iter().copied().collect();
            assert_eq!(
                majority_vote(&set(voters), |id| map.get(&id).copied()),
                *expected,
                "voters {voters:?} votes {votes:?}"
            );
        }
    }

    #[test]
    fn joint_vote_table() {
        use VoteResult::*;
        let m = Membership {
            voters: set(&[1, 2, 3]),
            voters_outgoing: set(&[1, 4, 5]),
            learners: set(&[]),
        };
        let cases: &[(&[(NodeId, bool)], VoteResult)] = &[
            (&[(1, true), (2, true)], Pending),
            (&[(1, true), (2, true), (4, true)], Won),
            (&[(1, true), (2, true), (4, false), (5, false)], Lost),
            (&[(2, false), (3, false)], Lost),
            (&[(1, true), (4, true)], Pending),
        ];
        for (votes, expected) in cases {
            let map: BTreeMap<_, _> = votes.iter().copied().collect();
            assert_eq!(
                joint_vote(&m, |id| map.get(&id).copied()),
                *expected,
                "{votes:?}"
            );
        }
    }
}
