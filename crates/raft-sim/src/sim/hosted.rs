//! What a simulated node runs: raft-host's [`NodeHost`] (the layer the
//! server's driver runs) over the simulated store, applying to the server's
//! own state machine, [`raftkv::server::state::ServerState`] (with the
//! server's default durable engine on the node's simulated disk, or the
//! in-memory one). The only sim code in between is [`Checked`], which
//! forwards every call to the server's state machine unchanged and records
//! what the checkers need.

use std::sync::Mutex;

use raft_core::{Entry, LogIndex, Membership, SnapshotSink, SnapshotSource, StateMachine, Term};
use raft_host::{Caller, NodeHost};
use raftkv::server::state::{ServerResponse, ServerState, ServerStateError};

use crate::shadow::payload_hash;
use crate::storage::SimStore;

use super::Waiter;

/// One simulated node's host.
pub(super) type SimHost = NodeHost<SimStore, Checked, ProposalCaller, ReadCaller>;

/// Who waits for a proposal.
#[derive(Clone, Copy, Debug)]
pub(super) enum ProposalCaller {
    /// A client's write (or read through the log).
    Client(Waiter),
    /// A membership change the nemesis proposed: nobody waits.
    Nemesis,
}

impl Caller for ProposalCaller {}

/// A client's read: its waiter, the key, and the highest index known
/// committed anywhere when the read arrived (the read point must not be
/// lower: a linearizable read sees every write committed before it began).
#[derive(Clone, Copy, Debug)]
pub(super) struct ReadCaller {
    pub(super) waiter: Waiter,
    pub(super) key: u64,
    pub(super) floor: LogIndex,
}

impl Caller for ReadCaller {}

/// A snapshot the state machine produced or restored.
#[derive(Clone, Copy, Debug)]
pub(super) struct SnapshotSeen {
    pub(super) index: LogIndex,
    pub(super) digest: u64,
    /// Restored (from the leader, or from the disk at start), not taken.
    pub(super) restored: bool,
}

/// The server's state machine, observed: every call goes to
/// [`ServerState`] unchanged; what the checkers need is recorded on the
/// way and drained by the simulator after each input.
pub(super) struct Checked {
    pub(super) inner: ServerState,
    /// (index, term, payload hash) of every entry applied.
    pub(super) applied: Vec<(LogIndex, Term, u64)>,
    pub(super) snapshots: Vec<SnapshotSeen>,
    /// The first entry handed out of turn (not `applied + 1`).
    pub(super) out_of_turn: Option<String>,
    /// Durable engine: every completed checkpoint, (durable applied index,
    /// state digest there). Behind a mutex because `checkpoint` takes
    /// `&self` (the runtime runs it under the read lock).
    pub(super) checkpoints: Mutex<Vec<Result<(LogIndex, u64), String>>>,
}

impl Checked {
    pub(super) fn new(inner: ServerState) -> Self {
        Checked {
            inner,
            applied: Vec::new(),
            snapshots: Vec::new(),
            out_of_turn: None,
            checkpoints: Mutex::new(Vec::new()),
        }
    }

    /// Notes the first entry handed out of turn and records every entry.
    fn note_applying(&mut self, entries: &[Entry]) {
        let mut at = self.inner.applied_index();
        for entry in entries {
            if entry.index != at + 1 && self.out_of_turn.is_none() {
                self.out_of_turn = Some(format!(
                    "entry {} handed out for applying with the state machine at {at}",
                    entry.index
                ));
            }
            at = entry.index;
            self.applied
                .push((entry.index, entry.term, payload_hash(&entry.payload)));
        }
    }

    /// The state's digest (what replicas at one applied index share).
    pub(super) fn digest(&self) -> Result<u64, String> {
        self.inner.kv().digest().map_err(|e| e.to_string())
    }
}

impl StateMachine for Checked {
    type Response = ServerResponse;
    type Error = ServerStateError;

    fn apply(&mut self, entry: &Entry) -> Result<ServerResponse, ServerStateError> {
        self.note_applying(std::slice::from_ref(entry));
        self.inner.apply(entry)
    }

    /// The host applies through this: the durable engine applies a batch
    /// in one transaction, so forwarding it whole keeps what is simulated
    /// what the server does.
    fn apply_batch(&mut self, entries: &[Entry]) -> Result<Vec<ServerResponse>, ServerStateError> {
        self.note_applying(entries);
        self.inner.apply_batch(entries)
    }

    fn applied_index(&self) -> LogIndex {
        self.inner.applied_index()
    }

    fn snapshot(&self) -> Result<Vec<u8>, ServerStateError> {
        // `&self`: the record is made by the simulator when the host hands
        // out the compaction (see `Sim::compact`), from the snapshot's own
        // bytes.
        self.inner.snapshot()
    }

    fn restore(&mut self, data: &[u8]) -> Result<(), ServerStateError> {
        self.inner.restore(data)?;
        self.snapshots.push(SnapshotSeen {
            index: self.inner.applied_index(),
            digest: self
                .inner
                .kv()
                .digest()
                .map_err(|e| ServerStateError::Engine(e.to_string()))?,
            restored: true,
        });
        Ok(())
    }

    fn durable_applied_index(&self) -> Option<LogIndex> {
        self.inner.durable_applied_index()
    }

    /// Records the checkpointed index with the state's digest there, for
    /// the check after a restart (the reopened state must be the state
    /// this node had at its reopened index).
    fn checkpoint(&self) -> Result<LogIndex, ServerStateError> {
        let result = self.inner.checkpoint();
        let record = match &result {
            Ok(index) => self.digest().map(|d| (*index, d)),
            Err(e) => Err(e.to_string()),
        };
        self.checkpoints
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(record);
        result
    }

    fn applied_meta(&self) -> (Term, Option<Membership>) {
        self.inner.applied_meta()
    }

    fn snapshot_source(&self) -> Result<Box<dyn SnapshotSource>, String> {
        self.inner.snapshot_source()
    }

    fn snapshot_sink(&self) -> Result<Box<dyn SnapshotSink>, String> {
        self.inner.snapshot_sink()
    }
}

/// The key-value digest of a server snapshot's bytes (restored into a
/// scratch state machine).
pub(super) fn snapshot_digest(data: &[u8]) -> Result<(LogIndex, u64), String> {
    let (mut s, _book) = ServerState::new(Default::default()).map_err(|e| e.to_string())?;
    s.restore(data).map_err(|e| e.to_string())?;
    let digest = s.kv().digest().map_err(|e| e.to_string())?;
    Ok((s.applied_index(), digest))
}
