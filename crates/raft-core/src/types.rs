//! The plain data of the protocol: identifiers, log entries, hard state,
//! snapshots. Everything here is `serde`-serializable so that the runtime's
//! transport and the storage engine can encode it without wrapper types.

use std::collections::BTreeSet;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// A node's identity in the cluster. `0` is reserved and never a valid id
/// (the seed's "voted for -1" is `Option<NodeId>::None` here).
pub type NodeId = u64;
/// A Raft term. Terms only ever grow on a node, across restarts too.
pub type Term = u64;
/// A position in the replicated log. The first real entry has index 1;
/// index 0 with term 0 is the empty prefix every log shares.
pub type LogIndex = u64;

/// A reading of the driver's monotonic clock, in nanoseconds from an
/// origin the driver picks (process start, say). The engine never reads a
/// clock: readings come in through [`crate::RawNode::observe_clock`] and
/// [`crate::RawNode::lease_read`]. Unlike ticks, which a stopped or starved
/// process skips, the clock keeps running while the process does not.
pub type Nanos = u64;

/// What a log entry carries.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum EntryPayload {
    /// No-op appended by a newly elected leader, so that it can commit an
    /// entry of its own term (Raft §5.4.2 / Figure 8) and serve reads.
    Blank,
    /// An application command, opaque to Raft.
    Normal(Bytes),
    /// A new cluster configuration. It takes effect on every node as soon as
    /// it is appended to that node's log, not when it commits (thesis §4.1).
    Membership(Membership),
}

/// One entry of the replicated log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub term: Term,
    pub index: LogIndex,
    pub payload: EntryPayload,
}

impl Entry {
    /// Fixed per-entry overhead counted towards byte limits, so that a flood
    /// of empty entries is bounded too.
    pub const OVERHEAD_BYTES: u64 = 24;

    /// Approximate encoded size, used for every byte limit in the engine.
    pub fn size_bytes(&self) -> u64 {
        Self::OVERHEAD_BYTES
            + match &self.payload {
                EntryPayload::Blank => 0,
                EntryPayload::Normal(data) => data.len() as u64,
                EntryPayload::Membership(m) => 8 * m.node_count() as u64,
            }
    }
}

/// The state that must be durable before the node answers anything that
/// depends on it (Raft Figure 2, "persistent state on all servers", plus the
/// commit index so that a restart does not forget what it already applied).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HardState {
    /// Latest term this node has seen.
    pub term: Term,
    /// The candidate this node voted for in `term`, if any.
    pub vote: Option<NodeId>,
    /// Highest log index known to be committed.
    pub commit: LogIndex,
}

/// A cluster configuration. It is *joint* while `voters_outgoing` is not
/// empty: then every decision needs a majority of `voters` **and** a majority
/// of `voters_outgoing` (thesis §4.3).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Membership {
    /// Voters of the (incoming) configuration.
    pub voters: BTreeSet<NodeId>,
    /// Voters of the outgoing configuration while joint; empty otherwise.
    pub voters_outgoing: BTreeSet<NodeId>,
    /// Non-voting members that receive the log.
    pub learners: BTreeSet<NodeId>,
}

impl Membership {
    /// A simple (non-joint) configuration of voters only.
    pub fn new_voters(voters: impl IntoIterator<Item = NodeId>) -> Self {
        Membership {
            voters: voters.into_iter().collect(),
            ..Default::default()
        }
    }

    pub fn is_joint(&self) -> bool {
        !self.voters_outgoing.is_empty()
    }

    /// True if `id` votes in either half of the configuration.
    pub fn is_voter(&self, id: NodeId) -> bool {
        self.voters.contains(&id) || self.voters_outgoing.contains(&id)
    }

    pub fn is_learner(&self, id: NodeId) -> bool {
        self.learners.contains(&id)
    }

    pub fn contains(&self, id: NodeId) -> bool {
        self.is_voter(id) || self.is_learner(id)
    }

    /// Every node that must receive the log: voters of both halves and learners.
    pub fn members(&self) -> BTreeSet<NodeId> {
        self.member_ids().collect()
    }

    /// The ids of [`members`](Self::members) without building a set: a node
    /// that votes in both halves of a joint configuration comes twice. For
    /// hot paths (the engine checks its invariants after every input).
    pub fn member_ids(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.voters
            .iter()
            .chain(&self.voters_outgoing)
            .chain(&self.learners)
            .copied()
    }

    pub fn node_count(&self) -> usize {
        self.voters.len() + self.voters_outgoing.len() + self.learners.len()
    }

    /// Structural sanity of a configuration received from the network or the
    /// disk: no reserved id, learners disjoint from voters.
    pub fn check(&self) -> Result<(), &'static str> {
        // 0 is the smallest id: it is present iff it comes first (cheaper
        // than three lookups; this runs after every input of the engine).
        let zero = |set: &BTreeSet<NodeId>| set.first() == Some(&0);
        if zero(&self.voters) || zero(&self.voters_outgoing) || zero(&self.learners) {
            return Err("node id 0 is reserved");
        }
        if self.learners.iter().any(|l| self.is_voter(*l)) {
            return Err("a node is both voter and learner");
        }
        if self.voters.is_empty() && self.is_joint() {
            return Err("joint configuration with no incoming voters");
        }
        Ok(())
    }
}

/// Describes what a snapshot covers.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotMeta {
    /// Index of the last entry the snapshot includes.
    pub last_index: LogIndex,
    /// Term of that entry.
    pub last_term: Term,
    /// The configuration in force at `last_index`.
    pub membership: Membership,
}

/// A snapshot of the application state plus its metadata. The data is
/// opaque to Raft; it is held as `Bytes` so chunks can be sliced for free.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    pub meta: SnapshotMeta,
    pub data: Bytes,
}

/// The role a node currently plays.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Role {
    Follower,
    /// Asking for pre-votes without having bumped its term (thesis §9.6).
    PreCandidate,
    Candidate,
    Leader,
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Role::Follower => "follower",
            Role::PreCandidate => "pre-candidate",
            Role::Candidate => "candidate",
            Role::Leader => "leader",
        })
    }
}

/// Volatile state worth reporting to the application when it changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SoftState {
    pub role: Role,
    pub leader: Option<NodeId>,
    pub term: Term,
}
