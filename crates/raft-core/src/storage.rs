//! What the engine reads from durable storage, and an in-memory
//! implementation for tests, benchmarks and the simulator's stand-in.
//!
//! The engine only ever *reads* through [`LogStore`]. Writes are handed to
//! the driver in [`Ready`](crate::Ready) and the driver applies them to its
//! storage engine (for example `raft-storage`), then acknowledges them with
//! [`RawNode::on_persisted`](crate::RawNode::on_persisted). Entries the engine
//! has produced but the driver has not yet acknowledged live in the engine's
//! own unstable buffer, so a storage engine may lag behind freely.

use std::collections::VecDeque;

use crate::types::{Entry, HardState, LogIndex, Membership, Snapshot, SnapshotMeta, Term};

/// Errors a [`LogStore`] read can return.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StorageError {
    /// The requested index lies before the first index the store still
    /// holds: it was compacted into a snapshot. Not fatal; the engine sends a
    /// snapshot instead.
    #[error("index is compacted into the snapshot")]
    Compacted,
    /// The requested index lies after the last index the store holds.
    /// Not fatal for the caller that probes; a bug if the engine asked for it.
    #[error("index is beyond the last stored entry")]
    Unavailable,
    /// The storage engine failed (I/O error, corruption). Fatal: the node
    /// must stop, since it can no longer vouch for what it acknowledged.
    #[error("storage failure: {0}")]
    Fatal(String),
}

/// What a node finds on its disk when it starts.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct InitialState {
    pub hard_state: HardState,
    /// Metadata of the latest durable snapshot (index 0 and the bootstrap
    /// configuration for a new node).
    pub snapshot_meta: SnapshotMeta,
}

/// Read access to the durable log. Implementations must be cheap for
/// `term`, `first_index` and `last_index` (the engine calls them on hot
/// paths) and should serve recent `entries` from memory.
pub trait LogStore {
    /// Hard state and snapshot metadata as last made durable.
    fn initial_state(&self) -> Result<InitialState, StorageError>;

    /// Index of the first entry still held: snapshot's last index + 1.
    fn first_index(&self) -> LogIndex;

    /// Index of the last durable entry (the snapshot's last index if the log
    /// after it is empty).
    fn last_index(&self) -> LogIndex;

    /// Term of the entry at `index`, for `first_index() - 1 <= index <=
    /// last_index()` (the entry just before `first_index` is the snapshot's
    /// last entry, whose term is known).
    fn term(&self, index: LogIndex) -> Result<Term, StorageError>;

    /// Entries in `[lo, hi)`, stopping early once their total
    /// [`Entry::size_bytes`] would exceed `max_bytes` (but always at least one
    /// entry if `lo < hi`).
    fn entries(
        &self,
        lo: LogIndex,
        hi: LogIndex,
        max_bytes: u64,
    ) -> Result<Vec<Entry>, StorageError>;

    /// The latest durable snapshot, to send to a follower that fell behind
    /// the compaction point.
    fn snapshot(&self) -> Result<Snapshot, StorageError>;
}

/// An in-memory [`LogStore`] that also accepts writes, with the same
/// semantics a durable engine must have. Used by the engine's own tests, the
/// benchmark and as a stand-in in the simulator.
#[derive(Clone, Debug, Default)]
pub struct MemStorage {
    hard_state: HardState,
    snapshot: Snapshot,
    /// Entries after the snapshot; `entries[0].index == snapshot.last_index + 1`.
    entries: VecDeque<Entry>,
}

impl MemStorage {
    /// A fresh store whose bootstrap configuration is `membership`
    /// (every founding member of a new cluster starts with the same one; a
    /// node that will join later starts with an empty one).
    pub fn new_with_membership(membership: Membership) -> Self {
        MemStorage {
            snapshot: Snapshot {
                meta: SnapshotMeta {
                    last_index: 0,
                    last_term: 0,
                    membership,
                },
                data: Default::default(),
            },
            ..Default::default()
        }
    }

    pub fn hard_state(&self) -> HardState {
        self.hard_state
    }

    pub fn set_hard_state(&mut self, hs: HardState) {
        self.hard_state = hs;
    }

    /// Appends entries, first truncating any stored suffix they overwrite.
    /// Entries must be contiguous and start at most at `last_index() + 1`.
    pub fn append(&mut self, entries: &[Entry]) -> Result<(), StorageError> {
        let Some(first) = entries.first() else {
            return Ok(());
        };
        if first.index > self.last_index() + 1 {
            return Err(StorageError::Fatal(format!(
                "append at {} leaves a gap after {}",
                first.index,
                self.last_index()
            )));
        }
        if first.index < self.first_index() {
            return Err(StorageError::Compacted);
        }
        let keep = (first.index - self.first_index()) as usize;
        self.entries.truncate(keep);
        self.entries.extend(entries.iter().cloned());
        Ok(())
    }

    /// Installs a snapshot, discarding every entry it covers; entries after
    /// it are kept only if the snapshot's last entry matches ours.
    pub fn apply_snapshot(&mut self, snapshot: Snapshot) {
        let idx = snapshot.meta.last_index;
        let keep_suffix = self.term(idx).ok() == Some(snapshot.meta.last_term);
        if keep_suffix {
            while self.entries.front().is_some_and(|e| e.index <= idx) {
                self.entries.pop_front();
            }
        } else {
            self.entries.clear();
        }
        self.hard_state.commit = self.hard_state.commit.max(idx);
        self.snapshot = snapshot;
    }

    /// Records an application snapshot taken at `meta.last_index` and
    /// discards the log up to it.
    pub fn compact(&mut self, snapshot: Snapshot) -> Result<(), StorageError> {
        let idx = snapshot.meta.last_index;
        if idx <= self.snapshot.meta.last_index {
            return Ok(());
        }
        if idx > self.last_index() {
            return Err(StorageError::Unavailable);
        }
        while self.entries.front().is_some_and(|e| e.index <= idx) {
            self.entries.pop_front();
        }
        self.snapshot = snapshot;
        Ok(())
    }
}

impl LogStore for MemStorage {
    fn initial_state(&self) -> Result<InitialState, StorageError> {
        Ok(InitialState {
            hard_state: self.hard_state,
            snapshot_meta: self.snapshot.meta.clone(),
        })
    }

    fn first_index(&self) -> LogIndex {
        self.snapshot.meta.last_index + 1
    }

    fn last_index(&self) -> LogIndex {
        self.snapshot.meta.last_index + self.entries.len() as u64
    }

    fn term(&self, index: LogIndex) -> Result<Term, StorageError> {
        let snap = self.snapshot.meta.last_index;
        if index == snap {
            return Ok(self.snapshot.meta.last_term);
        }
        if index < snap {
            return Err(StorageError::Compacted);
        }
        self.entries
            .get((index - snap - 1) as usize)
            .map(|e| e.term)
            .ok_or(StorageError::Unavailable)
    }

    fn entries(
        &self,
        lo: LogIndex,
        hi: LogIndex,
        max_bytes: u64,
    ) -> Result<Vec<Entry>, StorageError> {
        if lo < self.first_index() {
            return Err(StorageError::Compacted);
        }
        if hi > self.last_index() + 1 {
            return Err(StorageError::Unavailable);
        }
        let mut out = Vec::new();
        let mut bytes = 0;
        let start = (lo - self.first_index()) as usize;
        for e in self
            .entries
            .range(start..(hi - self.first_index()) as usize)
        {
            bytes += e.size_bytes();
            if !out.is_empty() && bytes > max_bytes {
                break;
            }
            out.push(e.clone());
        }
        Ok(out)
    }

    fn snapshot(&self) -> Result<Snapshot, StorageError> {
        Ok(self.snapshot.clone())
    }
}

/// Lets a driver share one store between the engine (reads) and its writer.
impl<T: LogStore + ?Sized> LogStore for std::sync::Arc<T> {
    fn initial_state(&self) -> Result<InitialState, StorageError> {
        (**self).initial_state()
    }
    fn first_index(&self) -> LogIndex {
        (**self).first_index()
    }
    fn last_index(&self) -> LogIndex {
        (**self).last_index()
    }
    fn term(&self, index: LogIndex) -> Result<Term, StorageError> {
        (**self).term(index)
    }
    fn entries(&self, lo: LogIndex, hi: LogIndex, max: u64) -> Result<Vec<Entry>, StorageError> {
        (**self).entries(lo, hi, max)
    }
    fn snapshot(&self) -> Result<Snapshot, StorageError> {
        (**self).snapshot()
    }
}
