//! Group commit's write merging: consecutive [`WriteBatch`]es folded into
//! one storage write when that changes nothing observable.
//!
//! A batch joins the pending write unless it carries a snapshot, or its
//! first entry does not directly follow the pending entries (a conflicting
//! suffix being replaced): then the pending write goes first. Folding keeps
//! the order of every entry, and keeps only the newest hard state, written
//! after all the entries. That changes nothing that can be observed: the
//! whole group becomes durable at the same fsync (or, for commit-only hard
//! states, at a later one), and no hard state's commit index ever points
//! past entries that are kept (committed entries are never replaced).

use raft_core::{Entry, HardState, Snapshot};

use crate::host::WriteBatch;

/// The writes of one storage call, in the order they must be applied.
#[derive(Clone, Copy, Debug)]
pub struct WriteParts<'a> {
    /// A snapshot from the leader: install it, replacing the log it covers.
    pub snapshot: Option<&'a Snapshot>,
    /// Entries to append; an entry at an index already stored replaces that
    /// entry and everything after it.
    pub entries: &'a [Entry],
    /// The hard state to record (after the entries).
    pub hard_state: Option<HardState>,
}

/// Batches being folded into one write; see the module docs.
#[derive(Debug, Default)]
pub struct Merger {
    snapshot: Option<Snapshot>,
    entries: Vec<Entry>,
    hard_state: Option<HardState>,
}

impl Merger {
    /// Folds `b` in, first writing what is pending through `write` if `b`
    /// cannot join it.
    pub fn add<E>(
        &mut self,
        b: WriteBatch,
        write: &mut impl FnMut(WriteParts<'_>) -> Result<(), E>,
    ) -> Result<(), E> {
        let follows = match (self.entries.last(), b.entries.first()) {
            (Some(last), Some(first)) => first.index == last.index + 1,
            _ => true,
        };
        if b.snapshot.is_some() || !follows {
            self.flush(write)?;
        }
        if b.snapshot.is_some() {
            self.snapshot = b.snapshot;
        }
        if self.entries.is_empty() {
            self.entries = b.entries;
        } else {
            self.entries.extend(b.entries);
        }
        if b.hard_state.is_some() {
            self.hard_state = b.hard_state;
        }
        Ok(())
    }

    /// Writes what is pending (nothing if nothing is).
    pub fn flush<E>(
        &mut self,
        write: &mut impl FnMut(WriteParts<'_>) -> Result<(), E>,
    ) -> Result<(), E> {
        if self.snapshot.is_none() && self.entries.is_empty() && self.hard_state.is_none() {
            return Ok(());
        }
        let m = std::mem::take(self);
        write(WriteParts {
            snapshot: m.snapshot.as_ref(),
            entries: &m.entries,
            hard_state: m.hard_state,
        })
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use raft_core::{EntryPayload, LogIndex, Membership, SnapshotMeta, Term};

    use super::*;

    fn entry(index: LogIndex) -> Entry {
        Entry {
            term: 1,
            index,
            payload: EntryPayload::Normal(Bytes::from_static(b"x")),
        }
    }

    fn hs(term: Term, vote: Option<u64>, commit: LogIndex) -> HardState {
        HardState { term, vote, commit }
    }

    /// One write call: snapshot index, entry indexes, hard state.
    type Recorded = (Option<LogIndex>, Vec<LogIndex>, Option<HardState>);

    fn batch(
        snapshot: Option<LogIndex>,
        entries: &[LogIndex],
        hard_state: Option<HardState>,
    ) -> WriteBatch {
        WriteBatch {
            number: 0,
            snapshot: snapshot.map(|i| Snapshot {
                meta: SnapshotMeta {
                    last_index: i,
                    last_term: 1,
                    membership: Membership::new_voters([1]),
                },
                data: Bytes::new(),
            }),
            entries: entries.iter().map(|&i| entry(i)).collect(),
            hard_state,
            sync: true,
        }
    }

    fn recorder(out: &mut Vec<Recorded>) -> impl FnMut(WriteParts<'_>) -> Result<(), ()> + '_ {
        |p| {
            out.push((
                p.snapshot.map(|s| s.meta.last_index),
                p.entries.iter().map(|e| e.index).collect(),
                p.hard_state,
            ));
            Ok(())
        }
    }

    #[test]
    fn consecutive_batches_fold_into_one_write_in_order() {
        let mut out = Vec::new();
        let mut w = recorder(&mut out);
        let mut m = Merger::default();
        m.add(batch(None, &[1, 2], Some(hs(1, Some(1), 0))), &mut w)
            .unwrap();
        m.add(batch(None, &[], Some(hs(1, Some(1), 2))), &mut w)
            .unwrap();
        m.add(batch(None, &[3], None), &mut w).unwrap();
        m.add(batch(None, &[4, 5], Some(hs(1, Some(1), 3))), &mut w)
            .unwrap();
        m.flush(&mut w).unwrap();
        m.flush(&mut w).unwrap(); // nothing left: no empty write
        drop(w);
        assert_eq!(
            out,
            vec![(None, vec![1, 2, 3, 4, 5], Some(hs(1, Some(1), 3)))]
        );
    }

    #[test]
    fn a_replaced_suffix_or_a_snapshot_starts_a_new_write() {
        let mut out = Vec::new();
        let mut w = recorder(&mut out);
        let mut m = Merger::default();
        m.add(batch(None, &[4, 5, 6], None), &mut w).unwrap();
        // A conflicting suffix from index 5: the earlier write goes first.
        m.add(batch(None, &[5], Some(hs(2, None, 4))), &mut w)
            .unwrap();
        // A snapshot from the leader: written separately, in order.
        m.add(batch(Some(10), &[], Some(hs(2, None, 10))), &mut w)
            .unwrap();
        m.add(batch(None, &[11], None), &mut w).unwrap();
        m.flush(&mut w).unwrap();
        drop(w);
        assert_eq!(
            out,
            vec![
                (None, vec![4, 5, 6], None),
                (None, vec![5], Some(hs(2, None, 4))),
                (Some(10), vec![11], Some(hs(2, None, 10))),
            ]
        );
    }
}
