//! The engine's view of the log: what storage holds durably plus what the
//! engine has produced but the driver has not yet acknowledged as durable.
//!
//! ```text
//!  store (durable)            unstable (in memory, handed out in Ready)
//!  [first_index .. unstable_offset)  [unstable_offset .. last_index]
//! ```
//!
//! A snapshot received from the leader and not yet acknowledged replaces
//! everything: until it is acknowledged, `first_index` is right after it.

use std::collections::VecDeque;

use crate::storage::{LogStore, StorageError};
use crate::types::{Entry, LogIndex, Snapshot, Term};

pub(crate) struct RaftLog<S> {
    pub(crate) store: S,
    /// Entries not yet acknowledged durable; `unstable[0].index == unstable_offset`.
    unstable: VecDeque<Entry>,
    unstable_offset: LogIndex,
    /// A snapshot from the leader waiting to be installed by the driver.
    pub(crate) pending_snapshot: Option<Snapshot>,
    /// Highest unstable index already handed out in a Ready.
    emitted_index: LogIndex,
    pub(crate) snapshot_emitted: bool,
    /// Highest index known durable *and* part of this log.
    pub(crate) persisted: LogIndex,
    pub(crate) committed: LogIndex,
    /// Highest index handed to the application for applying.
    pub(crate) applying: LogIndex,
    /// Highest index the application acknowledged as applied.
    pub(crate) applied: LogIndex,
}

impl<S: LogStore> RaftLog<S> {
    pub(crate) fn new(store: S, committed: LogIndex, applied: LogIndex) -> Self {
        let last = store.last_index();
        RaftLog {
            store,
            unstable: VecDeque::new(),
            unstable_offset: last + 1,
            pending_snapshot: None,
            emitted_index: last,
            snapshot_emitted: false,
            persisted: last,
            committed,
            applying: applied,
            applied,
        }
    }

    /// Index of the last entry the snapshot (pending or stored) covers.
    pub(crate) fn snapshot_index(&self) -> LogIndex {
        self.first_index() - 1
    }

    pub(crate) fn first_index(&self) -> LogIndex {
        match &self.pending_snapshot {
            Some(s) => s.meta.last_index + 1,
            None => self.store.first_index(),
        }
    }

    pub(crate) fn last_index(&self) -> LogIndex {
        if let Some(last) = self.unstable.back() {
            return last.index;
        }
        match &self.pending_snapshot {
            Some(s) => s.meta.last_index,
            None => self.unstable_offset - 1,
        }
    }

    pub(crate) fn last_term(&self) -> Result<Term, StorageError> {
        self.term(self.last_index())
    }

    pub(crate) fn term(&self, index: LogIndex) -> Result<Term, StorageError> {
        if let Some(s) = &self.pending_snapshot {
            if index == s.meta.last_index {
                return Ok(s.meta.last_term);
            }
            if index < s.meta.last_index {
                return Err(StorageError::Compacted);
            }
        }
        if index > self.last_index() {
            return Err(StorageError::Unavailable);
        }
        if index >= self.unstable_offset {
            return Ok(self.unstable[(index - self.unstable_offset) as usize].term);
        }
        self.store.term(index)
    }

    /// Term at `index`, or `None` if it is compacted or beyond the log.
    /// Storage failures still propagate.
    pub(crate) fn term_opt(&self, index: LogIndex) -> Result<Option<Term>, StorageError> {
        match self.term(index) {
            Ok(t) => Ok(Some(t)),
            Err(StorageError::Compacted | StorageError::Unavailable) => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub(crate) fn matches(&self, index: LogIndex, term: Term) -> Result<bool, StorageError> {
        Ok(self.term_opt(index)? == Some(term))
    }

    /// Entries in `[lo, hi)`, at most `max_bytes` (at least one entry).
    pub(crate) fn entries(
        &self,
        lo: LogIndex,
        hi: LogIndex,
        max_bytes: u64,
    ) -> Result<Vec<Entry>, StorageError> {
        if lo >= hi {
            return Ok(Vec::new());
        }
        if lo < self.first_index() {
            return Err(StorageError::Compacted);
        }
        if hi > self.last_index() + 1 {
            return Err(StorageError::Unavailable);
        }
        let mut out = if lo < self.unstable_offset {
            self.store
                .entries(lo, hi.min(self.unstable_offset), max_bytes)?
        } else {
            Vec::new()
        };
        let mut bytes: u64 = out.iter().map(Entry::size_bytes).sum();
        let stored_complete = out.last().map_or(lo, |e| e.index + 1) >= self.unstable_offset;
        if hi > self.unstable_offset && stored_complete {
            let from = lo.max(self.unstable_offset);
            for e in self
                .unstable
                .range((from - self.unstable_offset) as usize..(hi - self.unstable_offset) as usize)
            {
                bytes += e.size_bytes();
                if !out.is_empty() && bytes > max_bytes {
                    break;
                }
                out.push(e.clone());
            }
        }
        Ok(out)
    }

    /// Appends entries produced by this node as leader.
    pub(crate) fn append(&mut self, entries: impl IntoIterator<Item = Entry>) {
        for e in entries {
            debug_assert_eq!(e.index, self.last_index() + 1);
            self.unstable.push_back(e);
        }
    }

    /// Replaces the suffix from `entries[0].index` with `entries`.
    /// The caller has checked that `entries[0].index <= last_index + 1`
    /// and that nothing committed is overwritten.
    pub(crate) fn truncate_and_append(&mut self, entries: &[Entry]) {
        let Some(first) = entries.first() else {
            return;
        };
        let at = first.index;
        debug_assert!(at > self.committed, "overwriting committed entry {at}");
        debug_assert!(at <= self.last_index() + 1);
        if at < self.unstable_offset {
            // The overwritten part is in storage: the new entries become the
            // whole unstable buffer and storage truncates when it writes them.
            self.unstable.clear();
            self.unstable_offset = at;
        } else {
            self.unstable.truncate((at - self.unstable_offset) as usize);
        }
        self.unstable.extend(entries.iter().cloned());
        self.emitted_index = self.emitted_index.min(at - 1);
        self.persisted = self.persisted.min(at - 1);
    }

    /// Installs a snapshot from the leader; everything before it is gone and
    /// the log after it is discarded (the caller checked it does not match).
    pub(crate) fn restore(&mut self, snapshot: Snapshot) {
        let idx = snapshot.meta.last_index;
        self.unstable.clear();
        self.unstable_offset = idx + 1;
        self.emitted_index = idx;
        self.persisted = self.persisted.min(idx);
        self.committed = self.committed.max(idx);
        self.pending_snapshot = Some(snapshot);
        self.snapshot_emitted = false;
    }

    /// Unstable entries not yet handed out.
    pub(crate) fn take_unemitted(&mut self) -> Vec<Entry> {
        let start = (self.emitted_index + 1).max(self.unstable_offset);
        let last = self.last_index();
        // Most Readies carry no new entries: skip building an empty range.
        let out: Vec<Entry> = if start > last {
            Vec::new()
        } else {
            self.unstable
                .range((start - self.unstable_offset) as usize..)
                .cloned()
                .collect()
        };
        self.emitted_index = last;
        out
    }

    pub(crate) fn has_unemitted(&self) -> bool {
        self.last_index() > self.emitted_index.max(self.unstable_offset - 1)
            || (self.pending_snapshot.is_some() && !self.snapshot_emitted)
    }

    /// The driver made everything up to `(index, term)` durable. Ignored if
    /// the log has since changed at `index` (a newer write replaced it).
    pub(crate) fn stable_to(&mut self, index: LogIndex, term: Term) -> Result<(), StorageError> {
        if !self.matches(index, term)? {
            return Ok(());
        }
        self.persisted = self.persisted.max(index);
        if index >= self.unstable_offset {
            let n = (index + 1 - self.unstable_offset) as usize;
            self.unstable.drain(..n);
            self.unstable_offset = index + 1;
        }
        Ok(())
    }

    /// The driver installed the pending snapshot at `index` (and restored
    /// the state machine from it).
    pub(crate) fn snapshot_stable(&mut self, index: LogIndex) {
        if self
            .pending_snapshot
            .as_ref()
            .is_some_and(|s| s.meta.last_index == index)
        {
            self.pending_snapshot = None;
        }
        self.persisted = self.persisted.max(index);
        self.applying = self.applying.max(index);
        self.applied = self.applied.max(index);
    }

    /// Highest committed index the application may apply now: it must be
    /// durable locally, and nothing is applied while a snapshot is pending.
    pub(crate) fn applicable_index(&self) -> LogIndex {
        if self.pending_snapshot.is_some() {
            return self.applying;
        }
        self.committed.min(self.persisted).max(self.applying)
    }

    pub(crate) fn has_applicable(&self) -> bool {
        self.applicable_index() > self.applying
    }

    /// Committed, durable entries not yet handed out for applying. With
    /// `uncommitted` (the planted bug `ApplyBeforeCommit`) everything durable
    /// is handed out, committed or not.
    pub(crate) fn take_applicable(
        &mut self,
        max_bytes: u64,
        uncommitted: bool,
    ) -> Result<Vec<Entry>, StorageError> {
        let hi = if uncommitted && self.pending_snapshot.is_none() {
            self.persisted.max(self.applying)
        } else {
            self.applicable_index()
        };
        if hi <= self.applying {
            return Ok(Vec::new());
        }
        let out = self.entries(self.applying + 1, hi + 1, max_bytes)?;
        if let Some(last) = out.last() {
            self.applying = last.index;
        }
        Ok(out)
    }

    /// Checks the log's internal invariants. `applying_may_pass_commit` is
    /// only true under the planted bug `ApplyBeforeCommit`.
    pub(crate) fn validate(&self, applying_may_pass_commit: bool) -> Result<(), String> {
        let last = self.last_index();
        if self.committed > last {
            return Err(format!("commit {} > last index {last}", self.committed));
        }
        if self.applied > self.applying
            || (self.applying > self.committed && !applying_may_pass_commit)
        {
            return Err(format!(
                "applied {} <= applying {} <= commit {} violated",
                self.applied, self.applying, self.committed
            ));
        }
        if self.persisted > last {
            return Err(format!("persisted {} > last index {last}", self.persisted));
        }
        if self.snapshot_index() > self.committed {
            return Err(format!(
                "snapshot index {} > commit {}",
                self.snapshot_index(),
                self.committed
            ));
        }
        for (i, e) in self.unstable.iter().enumerate() {
            if e.index != self.unstable_offset + i as u64 {
                return Err(format!("unstable entry {} out of place", e.index));
            }
        }
        Ok(())
    }
}

impl<S: LogStore> RaftLog<S> {
    /// Drops entries after `index` without replacing them. Only the planted
    /// bug `TruncateOnHeartbeat` does this; correct Raft never truncates
    /// without a conflicting replacement.
    pub(crate) fn truncate_after(&mut self, index: LogIndex) {
        if index >= self.last_index() {
            return;
        }
        if index + 1 >= self.unstable_offset {
            self.unstable
                .truncate((index + 1 - self.unstable_offset) as usize);
        } else {
            self.unstable.clear();
            self.unstable_offset = index + 1;
        }
        self.emitted_index = self.emitted_index.min(index);
        self.persisted = self.persisted.min(index);
    }
}
