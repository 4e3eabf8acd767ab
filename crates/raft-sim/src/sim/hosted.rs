//! What a simulated node runs: raft-host's [`NodeHost`] (the layer the
//! server's driver runs) over the simulated store, applying to the server's
//! own state machine, [`raftkv::server::state::ServerState`]. The only sim
//! code in between is [`Checked`], which forwards every call to the
//! server's state machine unchanged and records what the checkers need.

use raft_core::{Entry, LogIndex, StateMachine, Term};
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
}

impl Checked {
    pub(super) fn new(inner: ServerState) -> Self {
        Checked {
            inner,
            applied: Vec::new(),
            snapshots: Vec::new(),
            out_of_turn: None,
        }
    }
}

impl StateMachine for Checked {
    type Response = ServerResponse;
    type Error = ServerStateError;

    fn apply(&mut self, entry: &Entry) -> Result<ServerResponse, ServerStateError> {
        let at = self.inner.applied_index();
        if entry.index != at + 1 && self.out_of_turn.is_none() {
            self.out_of_turn = Some(format!(
                "entry {} handed out for applying with the state machine at {at}",
                entry.index
            ));
        }
        self.applied
            .push((entry.index, entry.term, payload_hash(&entry.payload)));
        self.inner.apply(entry)
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
}

/// The key-value digest of a server snapshot's bytes (restored into a
/// scratch state machine).
pub(super) fn snapshot_digest(data: &[u8]) -> Result<(LogIndex, u64), String> {
    let (mut s, _book) = ServerState::new(Default::default()).map_err(|e| e.to_string())?;
    s.restore(data).map_err(|e| e.to_string())?;
    let digest = s.kv().digest().map_err(|e| e.to_string())?;
    Ok((s.applied_index(), digest))
}
