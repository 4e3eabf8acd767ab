//! The simulated nodes' storage: the real `raft-storage` [`Store`] over a
//! [`SimDisk`] (the default), or `raft_core::MemStorage` behind a simulated
//! fsync (`--storage mem`, faster, for protocol work). Also the check that
//! a node never acknowledged anything its disk then lost.

use std::fmt;

use raft_core::{
    Entry, HardState, InitialState, LogIndex, LogStore, MemStorage, Snapshot, StorageError, Term,
};
use raft_storage::{SimDisk, Store};

use crate::shadow::ShadowLog;

/// Which storage the simulated nodes run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub enum StorageKind {
    /// `raft-storage`'s `Store` over a `SimDisk`: real record encoding,
    /// segments, snapshots, recovery; crashes lose unsynced writes and tear
    /// the last one at a random byte; disk faults are ENOSPC/EIO.
    #[default]
    Disk,
    /// `raft_core::MemStorage` with a simulated fsync (writes become durable
    /// when their fsync completes; a crash keeps a random prefix of the
    /// unsynced Readies, torn at entry granularity).
    Mem,
}

impl StorageKind {
    /// Parses `disk` or `mem`.
    pub fn parse(s: &str) -> Result<StorageKind, String> {
        match s {
            "disk" => Ok(StorageKind::Disk),
            "mem" => Ok(StorageKind::Mem),
            _ => Err(format!("unknown storage {s:?}; known: disk, mem")),
        }
    }
}

impl fmt::Display for StorageKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            StorageKind::Disk => "disk",
            StorageKind::Mem => "mem",
        })
    }
}

/// One node's storage as the engine reads it.
// One per running node, inside its engine: the size difference costs
// nothing, while a box would add an indirection to every engine read.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub(crate) enum SimStore {
    Mem(MemStorage),
    Disk(Store<SimDisk>),
}

impl SimStore {
    /// The hard state as last written (durable or not).
    pub(crate) fn hard_state(&self) -> HardState {
        match self {
            SimStore::Mem(m) => m.hard_state(),
            SimStore::Disk(d) => d.hard_state(),
        }
    }
}

impl LogStore for SimStore {
    fn initial_state(&self) -> Result<InitialState, StorageError> {
        match self {
            SimStore::Mem(m) => m.initial_state(),
            SimStore::Disk(d) => d.initial_state(),
        }
    }
    fn first_index(&self) -> LogIndex {
        match self {
            SimStore::Mem(m) => m.first_index(),
            SimStore::Disk(d) => d.first_index(),
        }
    }
    fn last_index(&self) -> LogIndex {
        match self {
            SimStore::Mem(m) => m.last_index(),
            SimStore::Disk(d) => d.last_index(),
        }
    }
    fn term(&self, index: LogIndex) -> Result<Term, StorageError> {
        match self {
            SimStore::Mem(m) => m.term(index),
            SimStore::Disk(d) => d.term(index),
        }
    }
    fn entries(
        &self,
        lo: LogIndex,
        hi: LogIndex,
        max_bytes: u64,
    ) -> Result<Vec<Entry>, StorageError> {
        match self {
            SimStore::Mem(m) => m.entries(lo, hi, max_bytes),
            SimStore::Disk(d) => d.entries(lo, hi, max_bytes),
        }
    }
    fn snapshot(&self) -> Result<Snapshot, StorageError> {
        match self {
            SimStore::Mem(m) => m.snapshot(),
            SimStore::Disk(d) => d.snapshot(),
        }
    }
}

/// What a node has acknowledged as durable (`on_persisted` called, so
/// votes and acknowledgements of entries may have left): after a crash its
/// disk must still hold all of it, except what a later write (issued, not
/// yet synced) legitimately replaced.
#[derive(Clone, Debug, Default)]
pub(crate) struct Acked {
    pub(crate) log: ShadowLog,
    pub(crate) hard_state: HardState,
    /// Lowest index that a write issued since the last successful sync may
    /// have replaced (entries from here on may differ after a crash).
    pub(crate) replaced_from: Option<LogIndex>,
}

impl Acked {
    /// A write was handed to the disk (not yet synced).
    pub(crate) fn issued(&mut self, snapshot: Option<&Snapshot>, entries: &[Entry]) {
        let from = match (snapshot, entries.first()) {
            // A snapshot from the leader replaces every entry it covers
            // (an acknowledged but uncommitted one may differ from the
            // leader's at the same index), and the entries after it unless
            // the log matches it there.
            (Some(_), _) => Some(self.log.snap_index + 1),
            (None, Some(e)) => Some(e.index),
            (None, None) => None,
        };
        if let Some(f) = from {
            self.replaced_from = Some(self.replaced_from.map_or(f, |r| r.min(f)));
        }
    }

    /// Every write issued so far is durable and acknowledged.
    pub(crate) fn synced(
        &mut self,
        snapshot: Option<&Snapshot>,
        entries: &[Entry],
        hard_state: Option<HardState>,
    ) {
        if let Some(s) = snapshot {
            self.log
                .install_snapshot(s.meta.last_index, s.meta.last_term);
        }
        self.log.append(entries);
        if let Some(hs) = hard_state {
            self.hard_state = hs;
        }
    }

    /// Checks that `recovered` (the log and hard state a crashed node's
    /// store recovered) holds everything acknowledged.
    pub(crate) fn check_recovered(
        &self,
        recovered: &ShadowLog,
        hs: HardState,
    ) -> Result<(), String> {
        let acked = self.hard_state;
        if hs.term < acked.term {
            return Err(format!(
                "recovered term {} but term {} was acknowledged",
                hs.term, acked.term
            ));
        }
        if hs.term == acked.term && acked.vote.is_some() && hs.vote != acked.vote {
            return Err(format!(
                "recovered vote {:?} in term {} but {:?} was acknowledged",
                hs.vote, hs.term, acked.vote
            ));
        }
        if hs.commit.max(recovered.snap_index) < acked.commit {
            return Err(format!(
                "recovered commit {} but {} was acknowledged",
                hs.commit, acked.commit
            ));
        }
        if recovered.snap_index < self.log.snap_index {
            return Err(format!(
                "recovered snapshot at {} but one at {} was acknowledged",
                recovered.snap_index, self.log.snap_index
            ));
        }
        let mut limit = self.log.last_index();
        if let Some(r) = self.replaced_from {
            limit = limit.min(r.saturating_sub(1));
        }
        if recovered.snap_index <= limit {
            if let Some(t) = self.log.term(recovered.snap_index) {
                if t != recovered.snap_term {
                    return Err(format!(
                        "recovered snapshot at {}@t{} but entry {}@t{t} was acknowledged",
                        recovered.snap_index, recovered.snap_term, recovered.snap_index
                    ));
                }
            }
        }
        for index in recovered.snap_index + 1..=limit {
            let want = self.log.get(index);
            let got = recovered.get(index);
            if want.is_some() && got != want {
                return Err(format!(
                    "acknowledged entry {index}@t{} recovered as {:?}",
                    want.map_or(0, |(t, _)| t),
                    got.map(|(t, _)| format!("{index}@t{t}"))
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use raft_core::EntryPayload;

    fn e(index: u64, term: u64, data: &'static str) -> Entry {
        Entry {
            index,
            term,
            payload: EntryPayload::Normal(Bytes::from_static(data.as_bytes())),
        }
    }

    fn log(entries: &[Entry]) -> ShadowLog {
        let mut s = ShadowLog::default();
        s.append(entries);
        s
    }

    #[test]
    fn recovered_state_must_hold_what_was_acknowledged() {
        let mut a = Acked::default();
        let hs = HardState {
            term: 2,
            vote: Some(1),
            commit: 2,
        };
        a.synced(None, &[e(1, 1, "a"), e(2, 2, "b"), e(3, 2, "c")], Some(hs));
        let full = log(&[e(1, 1, "a"), e(2, 2, "b"), e(3, 2, "c")]);
        a.check_recovered(&full, hs).unwrap();
        // A lost acknowledged entry, vote, term or commit is caught.
        let short = log(&[e(1, 1, "a"), e(2, 2, "b")]);
        assert!(a.check_recovered(&short, hs).is_err());
        let other_vote = HardState {
            vote: Some(3),
            ..hs
        };
        assert!(a.check_recovered(&full, other_vote).is_err());
        let old_term = HardState {
            term: 1,
            vote: None,
            commit: 2,
        };
        assert!(a.check_recovered(&full, old_term).is_err());
        let low_commit = HardState { commit: 1, ..hs };
        assert!(a.check_recovered(&full, low_commit).is_err());
        let changed = log(&[e(1, 1, "a"), e(2, 2, "b"), e(3, 2, "X")]);
        assert!(a.check_recovered(&changed, hs).is_err());
        // An issued (unsynced) write from index 3 may have replaced entry 3.
        a.issued(None, &[e(3, 3, "d")]);
        a.check_recovered(&short, hs).unwrap();
        let replaced = log(&[e(1, 1, "a"), e(2, 2, "b"), e(3, 3, "d")]);
        a.check_recovered(&replaced, hs).unwrap();
        // ... but not entry 2.
        let one = log(&[e(1, 1, "a")]);
        assert!(a.check_recovered(&one, hs).is_err());
    }

    #[test]
    fn an_unsynced_snapshot_may_replace_acknowledged_entries() {
        let mut a = Acked::default();
        let hs = HardState {
            term: 3,
            vote: None,
            commit: 1,
        };
        a.synced(None, &[e(1, 1, "a"), e(2, 2, "b")], Some(hs));
        // Entry 2@t2 was never committed; the leader of term 3 sends a
        // snapshot at 2@t3, whose install lands before the crash.
        let mut snap = ShadowLog::default();
        snap.install_snapshot(2, 3);
        assert!(a.check_recovered(&snap, hs).is_err());
        let s = Snapshot {
            meta: raft_core::SnapshotMeta {
                last_index: 2,
                last_term: 3,
                membership: Default::default(),
            },
            data: Bytes::new(),
        };
        a.issued(Some(&s), &[]);
        a.check_recovered(&snap, hs).unwrap();
        // Without it landing, the old log is still there.
        a.check_recovered(&log(&[e(1, 1, "a"), e(2, 2, "b")]), hs)
            .unwrap();
    }
}
