//! One error enum per operation on a node, plus [`StorageFailure`], the
//! fatal error. API errors tell the caller what to do next (retry
//! elsewhere, retry later, give up); a fatal error means the node stopped
//! and every later call returns `Fatal` with the same reason.
//!
//! They live here, in the host layer, because the host decides them (the
//! simulator's clients see exactly the errors the server's do);
//! raft-runtime re-exports them.

use raft_core::{LogIndex, NodeId};

/// The storage engine failed (I/O error, fsync failure, corruption). The
/// node stops at once: it can no longer vouch for what it acknowledged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("storage failure: {0}")]
pub struct StorageFailure(pub String);

impl From<raft_core::StorageError> for StorageFailure {
    fn from(e: raft_core::StorageError) -> Self {
        StorageFailure(e.to_string())
    }
}

/// Why a proposal failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProposeError {
    /// This node is not the leader; retry at `leader_hint` if known. The
    /// command was not appended here.
    #[error("not the leader (leader hint: {leader_hint:?})")]
    NotLeader { leader_hint: Option<NodeId> },
    /// The command is larger than the engine's `max_entry_bytes`.
    #[error("command of {bytes} bytes exceeds the limit of {max_bytes}")]
    TooLarge { bytes: u64, max_bytes: u64 },
    /// Too much is queued or uncommitted; nothing was appended. Retry later.
    #[error("too many pending proposals; retry later")]
    Backpressure,
    /// The leader is handing leadership to `to`; nothing was appended.
    #[error("leadership transfer to {to} in progress")]
    TransferInProgress { to: NodeId },
    /// The entry was appended but lost to a leader change: another entry was
    /// applied at its index. It was not applied; safe to retry.
    #[error("proposal lost to a leader change; retry")]
    Dropped,
    /// No answer within the configured timeout. The outcome is unknown: the
    /// command may still be applied later. Retry only if idempotent (or with
    /// a client session).
    #[error("timed out waiting for the proposal to apply; outcome unknown")]
    Timeout,
    /// The entry's index was covered by a snapshot installed from the leader
    /// before this node could see which entry was applied there. Outcome
    /// unknown, as for `Timeout`.
    #[error("proposal covered by an installed snapshot; outcome unknown")]
    Indeterminate,
    /// The node is shutting down or stopped. Outcome unknown if the command
    /// was already appended.
    #[error("node is shutting down")]
    ShuttingDown,
    /// The node stopped on a fatal error (storage or state machine failure).
    #[error("node stopped: {0}")]
    Fatal(String),
}

/// How fresh a read must be.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize,
)]
pub enum ReadConsistency {
    /// Linearizable via ReadIndex (thesis §6.4): the leader confirms its
    /// leadership with a heartbeat round; works on followers too (the read
    /// index is fetched from the leader). The default.
    #[default]
    Linearizable,
    /// Linearizable on the leader only, from its lease, without a round
    /// trip; relies on bounded clock drift (`lease_drift_ticks`). The lease
    /// runs on the monotonic clock; when it is not valid (a new leader, or
    /// one woken from a pause longer than the lease) the read falls back to
    /// a ReadIndex round.
    Lease,
    /// Whatever this node has applied: may be arbitrarily stale.
    Stale,
}

/// Why a read could not be served.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    /// No leader is known to confirm the read; retry later or elsewhere.
    #[error("no leader known")]
    NoLeader,
    /// Lease reads are served by the leader only.
    #[error("not the leader (leader hint: {leader_hint:?})")]
    NotLeader { leader_hint: Option<NodeId> },
    /// Too many reads are waiting; retry later.
    #[error("too many pending reads; retry later")]
    Backpressure,
    /// Leadership changed before the read was confirmed; retry.
    #[error("read dropped by a leadership change; retry")]
    Dropped,
    /// No read point within the configured timeout.
    #[error("timed out waiting for a read point")]
    Timeout,
    /// The node is shutting down or stopped.
    #[error("node is shutting down")]
    ShuttingDown,
    /// The node stopped on a fatal error.
    #[error("node stopped: {0}")]
    Fatal(String),
}

/// Why a membership change failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MembershipError {
    /// Only the leader changes membership.
    #[error("not the leader (leader hint: {leader_hint:?})")]
    NotLeader { leader_hint: Option<NodeId> },
    /// Another change (or the exit from a joint configuration) is pending.
    #[error("a membership change is still pending")]
    ChangeInProgress,
    /// The change would produce an invalid configuration.
    #[error("invalid membership change: {0}")]
    Invalid(String),
    /// The learner must catch up before it can be promoted.
    #[error("learner {id} is {lag_entries} entries behind; let it catch up first")]
    LearnerLagging { id: NodeId, lag_entries: u64 },
    /// A leadership transfer is under way.
    #[error("leadership transfer in progress")]
    TransferInProgress,
    /// The change was appended but lost to a leader change; retry.
    #[error("membership change lost to a leader change; retry")]
    Dropped,
    /// Not applied within the timeout; outcome unknown.
    #[error("timed out waiting for the membership change; outcome unknown")]
    Timeout,
    /// The node is shutting down or stopped.
    #[error("node is shutting down")]
    ShuttingDown,
    /// The node stopped on a fatal error.
    #[error("node stopped: {0}")]
    Fatal(String),
}

/// Why a leadership transfer failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransferError {
    /// Only the leader hands over leadership.
    #[error("not the leader (leader hint: {leader_hint:?})")]
    NotLeader { leader_hint: Option<NodeId> },
    /// The target is not a voter.
    #[error("node {0} is not a voter")]
    NotVoter(NodeId),
    /// This node is the target and already leads.
    #[error("node is already the leader")]
    AlreadyLeader,
    /// The target did not take over within the timeout (the engine abandons
    /// a transfer after an election timeout).
    #[error("leadership transfer did not complete in time")]
    Timeout,
    /// The node is shutting down or stopped.
    #[error("node is shutting down")]
    ShuttingDown,
    /// The node stopped on a fatal error.
    #[error("node stopped: {0}")]
    Fatal(String),
}

/// Why a [`NodeHost`](crate::NodeHost) could not open.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The stored state could not be read or the engine refused it.
    #[error("engine refused the stored state: {0}")]
    Engine(#[from] raft_core::NewError),
    /// Reading the storage failed.
    #[error(transparent)]
    Storage(#[from] StorageFailure),
    /// The state machine could not be restored from the stored snapshot.
    #[error("state machine restore failed: {0}")]
    Restore(String),
    /// The state machine's applied index is not the stored snapshot's index
    /// (give the host a fresh state machine: it restores it from the
    /// snapshot and replays the log).
    #[error("state machine applied index {applied} differs from the snapshot index {snapshot}")]
    StateMachineMismatch {
        applied: LogIndex,
        snapshot: LogIndex,
    },
}
