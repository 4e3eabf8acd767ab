//! The simulator's copy of each node's log as the driver was told it: what
//! the node's Readies asked to write (durable or not yet), as (term, payload
//! hash) per index. The checkers read it instead of the engine's private
//! log.

use raft_core::{Entry, EntryPayload, LogIndex, LogStore, Term};

use crate::rng::{fnv1a, FNV_OFFSET};

/// A hash of an entry's payload (its term and index are kept beside it).
pub fn payload_hash(payload: &EntryPayload) -> u64 {
    match payload {
        EntryPayload::Blank => fnv1a(FNV_OFFSET, b"blank"),
        EntryPayload::Normal(data) => fnv1a(fnv1a(FNV_OFFSET, b"normal"), data),
        EntryPayload::Membership(m) => {
            let mut h = fnv1a(FNV_OFFSET, b"membership");
            for (tag, set) in [(1u8, &m.voters), (2, &m.voters_outgoing), (3, &m.learners)] {
                h = fnv1a(h, &[tag]);
                for id in set {
                    h = fnv1a(h, &id.to_le_bytes());
                }
            }
            h
        }
    }
}

/// One node's log as emitted: a snapshot point and the entries after it.
#[derive(Clone, Debug, Default)]
pub struct ShadowLog {
    /// Index and term of the last entry covered by the snapshot.
    pub snap_index: LogIndex,
    pub snap_term: Term,
    /// `entries[k]` is the (term, payload hash) at `snap_index + 1 + k`.
    pub entries: Vec<(Term, u64)>,
}

impl ShadowLog {
    /// The log a store holds (after a crash or at start).
    pub fn from_store(store: &impl LogStore) -> ShadowLog {
        let snap_index = store.first_index() - 1;
        // The term of the snapshot index is always known to a store.
        let snap_term = store.term(snap_index).unwrap_or(0);
        let last = store.last_index();
        let entries = if last > snap_index {
            // Reading a store within its bounds fails only on an I/O error,
            // which a simulated disk does not inject on reads.
            store
                .entries(snap_index + 1, last + 1, u64::MAX)
                .unwrap_or_default()
                .iter()
                .map(|e| (e.term, payload_hash(&e.payload)))
                .collect()
        } else {
            Vec::new()
        };
        ShadowLog {
            snap_index,
            snap_term,
            entries,
        }
    }

    /// Index of the last entry.
    pub fn last_index(&self) -> LogIndex {
        self.snap_index + self.entries.len() as u64
    }

    /// Term at `index`: `Some` for the snapshot point and the entries after
    /// it, `None` below the snapshot or beyond the end.
    pub fn term(&self, index: LogIndex) -> Option<Term> {
        if index == self.snap_index {
            return Some(self.snap_term);
        }
        self.get(index).map(|(t, _)| t)
    }

    /// (term, hash) of the entry at `index`, if held.
    pub fn get(&self, index: LogIndex) -> Option<(Term, u64)> {
        if index <= self.snap_index {
            return None;
        }
        self.entries
            .get((index - self.snap_index - 1) as usize)
            .copied()
    }

    /// Replaces everything with a snapshot's point.
    pub fn install_snapshot(&mut self, index: LogIndex, term: Term) {
        self.snap_index = index;
        self.snap_term = term;
        self.entries.clear();
    }

    /// Drops entries up to `index` (compaction); `index` must be held.
    pub fn compact(&mut self, index: LogIndex) {
        if index <= self.snap_index {
            return;
        }
        if let Some(term) = self.term(index) {
            let drop = ((index - self.snap_index) as usize).min(self.entries.len());
            self.entries.drain(..drop);
            self.snap_index = index;
            self.snap_term = term;
        }
    }

    /// Writes `entries` (contiguous), replacing any suffix from the first
    /// one's index. Returns the entries replaced, as (index, term, hash), so
    /// that the caller can check no committed entry was overwritten. Entries
    /// at or below the snapshot point are skipped.
    pub fn append(&mut self, entries: &[Entry]) -> Vec<(LogIndex, Term, u64)> {
        let mut replaced = Vec::new();
        let Some(first) = entries.iter().find(|e| e.index > self.snap_index) else {
            return replaced;
        };
        let at = first.index;
        let keep = ((at - self.snap_index - 1) as usize).min(self.entries.len());
        for (k, &(t, h)) in self.entries.iter().enumerate().skip(keep) {
            replaced.push((self.snap_index + 1 + k as u64, t, h));
        }
        self.entries.truncate(keep);
        for e in entries.iter().filter(|e| e.index > self.snap_index) {
            self.entries.push((e.term, payload_hash(&e.payload)));
        }
        replaced
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn e(index: u64, term: u64, data: &'static str) -> Entry {
        Entry {
            index,
            term,
            payload: EntryPayload::Normal(Bytes::from_static(data.as_bytes())),
        }
    }

    #[test]
    fn append_replaces_suffix_and_reports_it() {
        let mut s = ShadowLog::default();
        assert!(s
            .append(&[e(1, 1, "a"), e(2, 1, "b"), e(3, 1, "c")])
            .is_empty());
        assert_eq!(s.last_index(), 3);
        let replaced = s.append(&[e(2, 2, "x")]);
        assert_eq!(replaced.len(), 2);
        assert_eq!(replaced[0].0, 2);
        assert_eq!(s.last_index(), 2);
        assert_eq!(s.term(2), Some(2));
        s.compact(1);
        assert_eq!((s.snap_index, s.snap_term), (1, 1));
        assert_eq!(s.term(2), Some(2));
        assert_eq!(s.get(1), None);
        s.install_snapshot(10, 3);
        assert_eq!(s.last_index(), 10);
        assert!(s.append(&[e(9, 3, "old")]).is_empty());
        assert_eq!(s.last_index(), 10);
    }
}
