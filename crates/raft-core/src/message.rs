//! Messages exchanged between nodes. The engine produces them in
//! [`Ready`](crate::Ready) and consumes them in
//! [`RawNode::step`](crate::RawNode::step); how they travel is the driver's
//! business.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::types::{Entry, LogIndex, NodeId, SnapshotMeta, Term};

/// One message between two nodes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    pub from: NodeId,
    pub to: NodeId,
    /// The sender's term (for pre-vote requests: the term it *would* campaign
    /// in; for granted pre-vote responses: the term of the request).
    pub term: Term,
    pub body: MessageBody,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MessageBody {
    VoteRequest(VoteRequest),
    VoteResponse(VoteResponse),
    AppendRequest(AppendRequest),
    AppendResponse(AppendResponse),
    SnapshotRequest(SnapshotRequest),
    SnapshotResponse(SnapshotResponse),
    /// Leadership transfer: "start an election now, ignoring your timer".
    TimeoutNow,
    /// A follower asks the leader for a read index on behalf of its client.
    ReadIndexRequest(ReadIndexRequest),
    /// The leader's answer to a forwarded read.
    ReadIndexResponse(ReadIndexResponse),
}

/// RequestVote RPC (Raft §5.2), also used for pre-votes (thesis §9.6).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VoteRequest {
    pub pre_vote: bool,
    pub last_log_index: LogIndex,
    pub last_log_term: Term,
    /// Set when the election was triggered by a leadership transfer: voters
    /// then ignore their leader lease (the old leader asked for this).
    pub transfer: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VoteResponse {
    pub pre_vote: bool,
    pub granted: bool,
}

/// AppendEntries RPC (Raft §5.3). With no entries it is a heartbeat.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppendRequest {
    pub prev_log_index: LogIndex,
    pub prev_log_term: Term,
    pub entries: Vec<Entry>,
    pub leader_commit: LogIndex,
    /// Heartbeat round this message belongs to; echoed back so the leader
    /// can confirm its leadership for ReadIndex (thesis §6.4).
    pub round: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppendResponse {
    pub outcome: AppendOutcome,
    /// Echo of [`AppendRequest::round`].
    pub round: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AppendOutcome {
    /// The follower's log matches the leader's up to and including `match_index`.
    Success { match_index: LogIndex },
    /// The consistency check failed at `prev_log_index`.
    ///
    /// The hint lets the leader skip a whole term per round trip (thesis
    /// §5.3): if the follower's log is shorter, `conflict_term` is `None`
    /// and `conflict_index` is its last index + 1; otherwise `conflict_term`
    /// is the term the follower has at `prev_log_index` and `conflict_index`
    /// the first index it holds of that term.
    Conflict {
        prev_log_index: LogIndex,
        conflict_term: Option<Term>,
        conflict_index: LogIndex,
    },
    /// The request carried a stale term; the response's term tells the
    /// sender the current one so it steps down.
    StaleTerm,
}

/// One chunk of an InstallSnapshot RPC (Raft §7), sent in bounded pieces.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotRequest {
    pub meta: SnapshotMeta,
    /// Total length of the snapshot data in bytes.
    pub total_bytes: u64,
    /// Byte offset of `data` within the snapshot.
    pub offset: u64,
    pub data: Bytes,
    /// True on the last chunk.
    pub done: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SnapshotResponse {
    /// Chunks up to `next_offset` are held; send from there.
    Accepted {
        last_index: LogIndex,
        next_offset: u64,
    },
    /// The whole snapshot is durable and installed (or the follower already
    /// had everything it covers, up to `last_index`).
    Installed { last_index: LogIndex },
    /// The chunk could not be used (stale, out of order or malformed);
    /// restart from `next_offset` (usually 0).
    Rejected {
        last_index: LogIndex,
        next_offset: u64,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadIndexRequest {
    pub ctx: Bytes,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadIndexResponse {
    pub ctx: Bytes,
    /// `None` when the receiver was not (or stopped being) the leader.
    pub index: Option<LogIndex>,
}

impl Message {
    /// Approximate size for flow control and frame limits.
    pub fn size_bytes(&self) -> u64 {
        64 + match &self.body {
            MessageBody::AppendRequest(a) => a.entries.iter().map(Entry::size_bytes).sum(),
            MessageBody::SnapshotRequest(s) => s.data.len() as u64,
            MessageBody::ReadIndexRequest(r) => r.ctx.len() as u64,
            MessageBody::ReadIndexResponse(r) => r.ctx.len() as u64,
            _ => 0,
        }
    }

    /// Short name of the message kind, for logs and traces.
    pub fn kind(&self) -> &'static str {
        match &self.body {
            MessageBody::VoteRequest(v) if v.pre_vote => "PreVote",
            MessageBody::VoteRequest(_) => "Vote",
            MessageBody::VoteResponse(v) if v.pre_vote => "PreVoteResp",
            MessageBody::VoteResponse(_) => "VoteResp",
            MessageBody::AppendRequest(a) if a.entries.is_empty() => "Heartbeat",
            MessageBody::AppendRequest(_) => "Append",
            MessageBody::AppendResponse(_) => "AppendResp",
            MessageBody::SnapshotRequest(_) => "Snapshot",
            MessageBody::SnapshotResponse(_) => "SnapshotResp",
            MessageBody::TimeoutNow => "TimeoutNow",
            MessageBody::ReadIndexRequest(_) => "ReadIndex",
            MessageBody::ReadIndexResponse(_) => "ReadIndexResp",
        }
    }
}
