//! One error enum per operation. Storage failures are always the separate
//! `Storage` variant: they are fatal and the driver must stop the node.

use crate::storage::StorageError;
use crate::types::{LogIndex, NodeId};

/// Why [`RawNode::propose`](crate::RawNode::propose) refused a command.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProposeError {
    /// Only the leader accepts proposals; retry at `leader_hint` if known.
    #[error("not the leader (leader hint: {leader_hint:?})")]
    NotLeader { leader_hint: Option<NodeId> },
    /// The leader is handing over leadership and accepts nothing meanwhile.
    #[error("leadership transfer to {to} in progress")]
    TransferInProgress { to: NodeId },
    /// The command is larger than `Config::max_entry_bytes`.
    #[error("entry of {bytes} bytes exceeds the limit of {max_bytes}")]
    TooLarge { bytes: u64, max_bytes: u64 },
    /// Too many bytes are proposed but not yet committed; retry later.
    #[error("too many uncommitted bytes; retry later")]
    Backpressure,
    /// Reading the log failed; the node must stop.
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// Why [`RawNode::step`](crate::RawNode::step) dropped a message. Every
/// variant but `Storage` is harmless: the message is dropped and counted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StepError {
    /// The message is addressed to another node.
    #[error("message for node {to} delivered to node {me}")]
    Misdelivered { to: NodeId, me: NodeId },
    /// A response or request that only members may send came from a node
    /// this leader does not track.
    #[error("message from unknown node {0}")]
    UnknownPeer(NodeId),
    /// The message's content is inconsistent (non-contiguous entries, an
    /// index beyond what was sent, an impossible term, a bad snapshot chunk).
    #[error("malformed message from {from}: {reason}")]
    Malformed { from: NodeId, reason: &'static str },
    /// Reading the log failed; the node must stop.
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// Why a read could not be started.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    /// No known leader to confirm the read with; retry later or elsewhere.
    #[error("no leader known")]
    NoLeader,
    /// Lease reads are served by the leader only.
    #[error("not the leader (leader hint: {leader_hint:?})")]
    NotLeader { leader_hint: Option<NodeId> },
    /// Too many reads are waiting for confirmation.
    #[error("too many pending reads")]
    Backpressure,
    /// A lease read was asked for but the lease is not held (CheckQuorum off,
    /// or no quorum heard from recently enough); use ReadIndex instead.
    #[error("no valid leader lease")]
    NoLease,
}

/// Why a membership change was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MembershipError {
    #[error("not the leader (leader hint: {leader_hint:?})")]
    NotLeader { leader_hint: Option<NodeId> },
    /// Another change (or the automatic exit from a joint configuration) has
    /// not committed yet; one change at a time.
    #[error("a membership change is still pending")]
    ChangeInProgress,
    /// The change would produce an invalid configuration.
    #[error("invalid membership change: {0}")]
    Invalid(&'static str),
    /// The learner is too far behind to be promoted safely.
    #[error("learner {id} is {lag_entries} entries behind; let it catch up first")]
    LearnerLagging { id: NodeId, lag_entries: u64 },
    #[error("leadership transfer in progress")]
    TransferInProgress,
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// Why a leadership transfer was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransferError {
    #[error("not the leader (leader hint: {leader_hint:?})")]
    NotLeader { leader_hint: Option<NodeId> },
    /// The target is not a voter of the current configuration.
    #[error("node {0} is not a voter")]
    NotVoter(NodeId),
    /// The target is this node.
    #[error("node is already the leader")]
    AlreadyLeader,
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// Why the application's compaction request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CompactError {
    /// The snapshot index is beyond what has been applied.
    #[error("snapshot index {index} is beyond applied index {applied}")]
    NotApplied { index: LogIndex, applied: LogIndex },
    #[error(transparent)]
    Storage(#[from] StorageError),
}
