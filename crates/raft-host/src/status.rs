//! What a node reports about itself (`NodeHost::status`).

use raft_core::{LogIndex, Membership, NodeId, Role, Term};
use serde::Serialize;

/// Progress of one follower, as the leader sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PeerProgress {
    pub id: NodeId,
    /// Highest index known replicated on the peer.
    pub match_index: LogIndex,
    /// Next index the leader will send.
    pub next_index: LogIndex,
    /// Replication state ("Probe", "Replicate", "Snapshot").
    pub state: String,
}

/// What a node knows about itself and the cluster.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct NodeStatus {
    pub id: NodeId,
    pub role: Role,
    pub term: Term,
    pub vote: Option<NodeId>,
    pub leader: Option<NodeId>,
    pub commit_index: LogIndex,
    /// Applied to the state machine.
    pub applied_index: LogIndex,
    pub last_index: LogIndex,
    /// Durable on this node's disk.
    pub persisted_index: LogIndex,
    /// Last index covered by the latest snapshot.
    pub snapshot_index: LogIndex,
    pub membership: Membership,
    /// Per follower (leader only).
    pub peers: Vec<PeerProgress>,
    pub transfer_target: Option<NodeId>,
    /// Ticks since the election timer was last reset (leader contact, a
    /// vote granted, an election started).
    pub election_elapsed_ticks: u32,
    /// The randomized timeout `election_elapsed_ticks` counts towards.
    pub election_timeout_ticks: u32,
    /// Writes handed out and not yet durable.
    pub inflight_writes: usize,
    /// Proposals and membership changes waiting to be applied.
    pub pending_proposals: usize,
    /// Reads waiting for a read point.
    pub pending_reads: usize,
}
