//! Deliberately wrong protocol variants, for proving that `raft-sim`'s
//! checkers catch real bugs. The `Bug` names always exist so call sites
//! compile in every build; only with the `planted-bugs` feature can one be
//! switched on (`RawNode::plant_bug`). Without the feature every check is a
//! constant `false` and compiles away.

/// A switchable protocol bug.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Bug {
    /// Commit an entry of an earlier term by counting replicas (Figure 8).
    CommitEarlierTerm = 0,
    /// Grant votes without the §5.4.1 up-to-date check.
    VoteWithoutUpToDateCheck,
    /// Do not persist the vote before answering (it is kept in memory only
    /// and lost on restart).
    ForgetVote,
    /// Accept AppendEntries from a leader of a stale term.
    AcceptStaleTerm,
    /// Hand out entries for applying before they commit.
    ApplyBeforeCommit,
    /// Serve ReadIndex reads without confirming leadership.
    ReadWithoutQuorum,
    /// Leave the joint configuration before it commits.
    LeaveJointEarly,
    /// Truncate the log on a heartbeat even when nothing conflicts.
    TruncateOnHeartbeat,
    /// Ignore the leader lease when voting (check_quorum's vote guard).
    IgnoreLease,
    /// Count the leader's lease and CheckQuorum in ticks instead of on the
    /// clock: a leader paused past its lease (which drops ticks, not time)
    /// still believes it holds the lease when it wakes.
    LeaseInTicks,
}

impl Bug {
    pub const ALL: [Bug; 10] = [
        Bug::CommitEarlierTerm,
        Bug::VoteWithoutUpToDateCheck,
        Bug::ForgetVote,
        Bug::AcceptStaleTerm,
        Bug::ApplyBeforeCommit,
        Bug::ReadWithoutQuorum,
        Bug::LeaveJointEarly,
        Bug::TruncateOnHeartbeat,
        Bug::IgnoreLease,
        Bug::LeaseInTicks,
    ];
}

/// The set of bugs switched on in one node.
#[cfg(feature = "planted-bugs")]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PlantedBugs(u32);

#[cfg(feature = "planted-bugs")]
impl PlantedBugs {
    pub fn is_on(&self, bug: Bug) -> bool {
        self.0 & (1 << bug as u8) != 0
    }
    pub fn set(&mut self, bug: Bug) {
        self.0 |= 1 << bug as u8;
    }
}

#[cfg(feature = "planted-bugs")]
impl<S: crate::storage::LogStore> crate::node::RawNode<S> {
    /// Switches on a planted bug in this node.
    pub fn plant_bug(&mut self, bug: Bug) {
        self.bugs.set(bug);
    }
}
