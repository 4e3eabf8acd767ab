//! The engine's output: everything the driver must do after feeding inputs.

use bytes::Bytes;

use crate::message::Message;
use crate::types::{Entry, HardState, LogIndex, NodeId, Snapshot, SoftState};

/// A batch of work for the driver, produced by
/// [`RawNode::ready`](crate::RawNode::ready). See the crate documentation for
/// the order in which its parts must be handled.
#[derive(Debug, Default)]
#[must_use = "a Ready holds messages and writes that must be handled"]
pub struct Ready {
    /// Sequence number to pass to
    /// [`RawNode::on_persisted`](crate::RawNode::on_persisted) once this
    /// Ready's `snapshot`, `entries` and `hard_state` are durable.
    pub number: u64,
    /// Role, leader or term changed since the last Ready.
    pub soft_state: Option<SoftState>,
    /// Snapshot received from the leader: install it in storage (replacing
    /// the log it covers) and restore the state machine from it.
    pub snapshot: Option<Snapshot>,
    /// Entries to append to the log. If the first one's index is at or below
    /// the stored last index, the stored suffix from that index is replaced.
    pub entries: Vec<Entry>,
    /// New hard state to persist; make it durable together with or after
    /// `entries` (never before: its commit index may point into them).
    pub hard_state: Option<HardState>,
    /// True if this Ready's writes must be fsynced before `on_persisted`.
    ///
    /// False when the only write is a hard state that changes nothing but
    /// the commit index. The commit index is volatile in Raft: nothing
    /// promised to another node or a client depends on it being durable
    /// (acknowledgements promise entries, votes promise term and vote,
    /// clients are answered once a quorum made the entries durable). If a
    /// crash loses it, the node restarts with a lower commit index (never
    /// below its snapshot) and learns the rest from the leader. Such a Ready
    /// may be acknowledged once written, provided every earlier Ready that
    /// needed a sync got one; its record becomes durable with the next sync,
    /// and since records stay in order a durable commit index never points
    /// past entries that are not. This saves an fsync on every commit
    /// advance (etcd's `MustSync`).
    pub must_sync: bool,
    /// Messages that may be sent right away, before or while this Ready's
    /// writes happen (a leader's AppendEntries, heartbeats, rejections).
    pub messages: Vec<Message>,
    /// Messages that may be sent only after this Ready's writes are durable
    /// (votes, vote requests, acknowledgements of appended entries).
    pub persisted_messages: Vec<Message>,
    /// Committed entries to apply to the state machine, in order. They are
    /// already durable locally.
    pub committed_entries: Vec<Entry>,
    /// Reads that became safe: serve each once the state machine has applied
    /// `index`.
    pub read_states: Vec<ReadState>,
    /// Reads that will never complete here (leadership lost, forwarded read
    /// refused); fail them or retry elsewhere.
    pub dropped_reads: Vec<Bytes>,
}

impl Ready {
    /// True if the Ready carries anything at all.
    pub fn is_empty(&self) -> bool {
        self.soft_state.is_none()
            && self.snapshot.is_none()
            && self.entries.is_empty()
            && self.hard_state.is_none()
            && self.messages.is_empty()
            && self.persisted_messages.is_empty()
            && self.committed_entries.is_empty()
            && self.read_states.is_empty()
            && self.dropped_reads.is_empty()
    }

    /// True if the Ready asks for a write (and so for `on_persisted`).
    pub fn must_persist(&self) -> bool {
        self.snapshot.is_some() || !self.entries.is_empty() || self.hard_state.is_some()
    }
}

/// A read that the leader has confirmed: it reflects every write committed
/// before the read was requested once `index` is applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadState {
    /// The context the application passed to `read_index`.
    pub ctx: Bytes,
    /// Serve the read once `applied >= index`.
    pub index: LogIndex,
}

/// One step of a membership change. Several can be combined in one call.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum MembershipChange {
    /// Add a voter, or promote a learner to voter.
    AddVoter(NodeId),
    /// Add a learner (a non-voting member that receives the log).
    AddLearner(NodeId),
    /// Remove a voter or learner.
    Remove(NodeId),
}
