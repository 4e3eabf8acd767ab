//! The application's side of the contract: a deterministic state machine
//! that applies committed commands in log order.
//!
//! # Two kinds of state machine
//!
//! - **In memory** (the default): the host serializes the whole state with
//!   [`StateMachine::snapshot`] when the log grows, stores that snapshot
//!   beside the log and compacts the log up to it; a restart restores it
//!   and replays the log after it. Cost per snapshot grows with the state.
//! - **Durable** ([`StateMachine::durable_applied_index`] returns `Some`):
//!   the state machine keeps its own state on disk. Applying need not be
//!   durable (the log holds the entries); now and then the host asks for a
//!   [`checkpoint`](StateMachine::checkpoint) and compacts the log only up
//!   to the checkpointed index. A restart opens the state machine as of its
//!   last checkpoint and replays the log after it, so restart cost does not
//!   grow with the state. Snapshots for lagging followers are streamed in
//!   bounded chunks from a consistent view ([`SnapshotSource`]) into a
//!   [`SnapshotSink`] beside the follower's live state, off the engine's
//!   thread; what the sink's `finish` returns (a small descriptor) is what
//!   [`restore`](StateMachine::restore) later receives to switch over.

use bytes::Bytes;

use crate::types::{Entry, LogIndex, Membership, Term};

/// A replicated state machine. Every replica applies the same entries in the
/// same order and so reaches the same state; implementations must therefore
/// be deterministic: no clocks, no randomness, no iteration over unordered
/// hash maps into results.
pub trait StateMachine {
    /// What applying a command returns to the client that proposed it.
    type Response;
    /// Applying failed in a way that is not the command's fault (fatal).
    type Error: std::error::Error + Send + Sync + 'static;

    /// Applies one committed entry. Blank and membership entries are passed
    /// too (so the state machine can track the applied index); they return
    /// a response nobody waits for.
    fn apply(&mut self, entry: &Entry) -> Result<Self::Response, Self::Error>;

    /// Applies consecutive committed entries, one response per entry, in
    /// order. A durable state machine overrides it to apply the batch in
    /// one storage transaction.
    fn apply_batch(&mut self, entries: &[Entry]) -> Result<Vec<Self::Response>, Self::Error> {
        entries.iter().map(|e| self.apply(e)).collect()
    }

    /// Index of the last applied entry.
    fn applied_index(&self) -> LogIndex;

    /// In memory: serializes the whole state (including the applied index).
    /// A durable state machine streams instead (see
    /// [`snapshot_source`](Self::snapshot_source)) and may refuse.
    fn snapshot(&self) -> Result<Vec<u8>, Self::Error>;

    /// Replaces the whole state: in memory, with a snapshot's bytes;
    /// durable, with what a [`SnapshotSink`] of this state machine returned
    /// from `finish` (the received state waiting beside the live one).
    fn restore(&mut self, data: &[u8]) -> Result<(), Self::Error>;

    /// `None` for an in-memory state machine. A durable one returns the
    /// index of the last applied entry that survives a crash (as of the
    /// last [`checkpoint`](Self::checkpoint)).
    fn durable_applied_index(&self) -> Option<LogIndex> {
        None
    }

    /// Durable state machines: makes everything applied so far durable and
    /// returns the durable applied index. Takes `&self`: the host runs it
    /// off its thread under a read lock, applying nothing meanwhile, so
    /// reads go on while it flushes.
    fn checkpoint(&self) -> Result<LogIndex, Self::Error> {
        Ok(self.applied_index())
    }

    /// Durable state machines: the term of the last applied entry and the
    /// configuration of the last membership entry applied (`None` if none
    /// was, since the bootstrap configuration). What the log's compaction
    /// record must say when it compacts at the applied index.
    fn applied_meta(&self) -> (Term, Option<Membership>) {
        (0, None)
    }

    /// Durable state machines: a consistent view of the applied state as a
    /// stream of bounded chunks, readable on any thread while applying goes
    /// on. A failure only ends that transfer (the leader retries later), so
    /// it is a message, not a fatal error.
    fn snapshot_source(&self) -> Result<Box<dyn SnapshotSource>, String> {
        Err("this state machine does not stream snapshots".into())
    }

    /// Durable state machines: a sink that builds a received state beside
    /// the live one.
    fn snapshot_sink(&self) -> Result<Box<dyn SnapshotSink>, String> {
        Err("this state machine does not stream snapshots".into())
    }
}

/// What a streamed snapshot covers: the applied index, its term, and the
/// last membership applied (`None`: the bootstrap configuration).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceMeta {
    pub last_index: LogIndex,
    pub last_term: Term,
    pub membership: Option<Membership>,
}

/// A snapshot being read from a consistent view, one bounded chunk at a
/// time. Reading it may block on disk: run it off the engine's thread.
pub trait SnapshotSource: Send {
    /// What the stream covers.
    fn meta(&self) -> SourceMeta;
    /// The next chunk, `None` at the end. An error ends the transfer.
    fn next_chunk(&mut self) -> Result<Option<Bytes>, String>;
}

/// A snapshot being received, chunk by chunk, beside the live state. May
/// block on disk: run it off the engine's thread. Dropping it before
/// `finish` abandons the transfer (the partial state is discarded).
pub trait SnapshotSink: Send {
    /// Takes the next chunk, in order. An error ends the transfer.
    fn push(&mut self, chunk: &[u8]) -> Result<(), String>;
    /// All chunks pushed: checks the stream, makes the received state
    /// durable beside the live one, and returns (1) what it covers and (2)
    /// the descriptor to hand to [`StateMachine::restore`].
    fn finish(self: Box<Self>) -> Result<(SourceMeta, Bytes), String>;
}
