//! The storage seam: the writes the driver makes, on top of the engine's
//! read-only [`LogStore`]. One writer thread calls these in Ready order; the
//! engine reads concurrently through `LogStore` (so implementations take
//! `&self` and synchronise internally).
//!
//! Every error is fatal ([`StorageFailure`]): the driver stops the node and
//! never acknowledges anything that was not reported durable by `sync`.

use std::sync::{Mutex, MutexGuard};

use raft_core::{
    Entry, InitialState, LogIndex, LogStore, MemStorage, Membership, Snapshot, StorageError, Term,
};

use crate::error::StorageFailure;

pub use raft_host::WriteParts;

/// What the driver needs from a storage engine besides reading.
pub trait RaftStorage: LogStore + Send + Sync + 'static {
    /// Applies one Ready's writes in order: snapshot, entries, hard state.
    /// They need not be durable until [`sync`](Self::sync) returns.
    fn write(&self, parts: WriteParts<'_>) -> Result<(), StorageFailure>;

    /// Makes every preceding `write` durable (fsync). Called once per group
    /// of Readies: this is where group commit happens.
    fn sync(&self) -> Result<(), StorageFailure>;

    /// Records an application snapshot taken at `snapshot.meta.last_index`
    /// (already durable in the log) and discards the log up to it. Must make
    /// the snapshot durable before dropping any entry it replaces.
    fn compact(&self, snapshot: Snapshot) -> Result<(), StorageFailure>;

    /// True if [`sync`](Self::sync) does nothing (an in-memory store). The
    /// driver then writes a Ready on its own task when the writer thread
    /// is idle, instead of paying two thread wake-ups to hand it over and
    /// hear back.
    fn sync_is_noop(&self) -> bool {
        false
    }
}

/// [`MemStorage`] behind a mutex: the in-memory storage for tests and the
/// simulator. `sync` is a no-op: nothing here survives a process crash, but
/// it follows the same write semantics as a durable engine.
#[derive(Debug, Default)]
pub struct MemStore {
    inner: Mutex<MemStorage>,
}

impl MemStore {
    /// A store whose bootstrap configuration is `membership`.
    pub fn new(membership: Membership) -> Self {
        MemStore {
            inner: Mutex::new(MemStorage::new_with_membership(membership)),
        }
    }

    /// Wraps an existing store (e.g. one kept across a simulated restart).
    pub fn from_storage(storage: MemStorage) -> Self {
        MemStore {
            inner: Mutex::new(storage),
        }
    }

    /// A copy of the stored state.
    pub fn to_storage(&self) -> MemStorage {
        self.lock().clone()
    }

    fn lock(&self) -> MutexGuard<'_, MemStorage> {
        // A poisoned lock means a writer panicked mid-update: a broken local
        // invariant, so propagating the panic is right.
        self.inner.lock().expect("MemStore lock poisoned")
    }
}

/// Applies `parts` to a [`MemStorage`] (shared by the stores in this crate).
pub(crate) fn write_mem(s: &mut MemStorage, parts: WriteParts<'_>) -> Result<(), StorageFailure> {
    if let Some(snap) = parts.snapshot {
        s.apply_snapshot(snap.clone());
    }
    s.append(parts.entries)?;
    if let Some(hs) = parts.hard_state {
        s.set_hard_state(hs);
    }
    Ok(())
}

impl RaftStorage for MemStore {
    fn write(&self, parts: WriteParts<'_>) -> Result<(), StorageFailure> {
        write_mem(&mut self.lock(), parts)
    }

    fn sync(&self) -> Result<(), StorageFailure> {
        Ok(())
    }

    fn sync_is_noop(&self) -> bool {
        true
    }

    fn compact(&self, snapshot: Snapshot) -> Result<(), StorageFailure> {
        Ok(self.lock().compact(snapshot)?)
    }
}

impl LogStore for MemStore {
    fn initial_state(&self) -> Result<InitialState, StorageError> {
        self.lock().initial_state()
    }
    fn first_index(&self) -> LogIndex {
        self.lock().first_index()
    }
    fn last_index(&self) -> LogIndex {
        self.lock().last_index()
    }
    fn term(&self, index: LogIndex) -> Result<Term, StorageError> {
        self.lock().term(index)
    }
    fn entries(&self, lo: LogIndex, hi: LogIndex, max: u64) -> Result<Vec<Entry>, StorageError> {
        self.lock().entries(lo, hi, max)
    }
    fn snapshot(&self) -> Result<Snapshot, StorageError> {
        self.lock().snapshot()
    }
}

/// The real storage engine. Every [`raft_storage::WriteError`] is treated
/// as fatal here, including the validation ones: the engine only emits
/// consistent writes, so a refused write means a broken invariant
/// somewhere and the node must not go on acknowledging anything.
impl<D: raft_storage::Disk> RaftStorage for raft_storage::Store<D> {
    fn write(&self, parts: WriteParts<'_>) -> Result<(), StorageFailure> {
        raft_storage::Store::write(self, parts.snapshot, parts.entries, parts.hard_state)
            .map_err(|e| StorageFailure(e.to_string()))
    }

    fn sync(&self) -> Result<(), StorageFailure> {
        raft_storage::Store::sync(self).map_err(|e| StorageFailure(e.to_string()))
    }

    fn compact(&self, snapshot: Snapshot) -> Result<(), StorageFailure> {
        raft_storage::Store::compact(self, &snapshot).map_err(|e| StorageFailure(e.to_string()))
    }
}
