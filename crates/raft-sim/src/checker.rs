//! The safety checkers that run while the simulation runs. Each check
//! returns `Err(explanation)` when an invariant breaks; the simulation
//! records the first one as the run's [`Violation`].

use std::collections::{BTreeMap, HashMap};
use std::ops::RangeInclusive;

use raft_core::{LogIndex, NodeId, Term};

use crate::config::Micros;
use crate::shadow::ShadowLog;

/// A broken invariant.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Violation {
    /// Which check failed: `election-safety`, `log-matching`,
    /// `leader-completeness`, `state-machine-safety`, `monotonic`,
    /// `lost-write`, `lease-safety`, `read-index`, `validate`, `panic`,
    /// `contract`, `liveness`, `linearizability`, ...
    pub check: &'static str,
    /// What exactly broke.
    pub message: String,
    /// Virtual time of the event that broke it.
    pub time_us: Micros,
}

#[derive(Clone, Copy, Debug)]
struct Committed {
    term: Term,
    hash: u64,
    /// Lowest term of a leader seen committing it (leaders of later terms
    /// must hold it); `None` if only followers were seen with it.
    commit_term: Option<Term>,
    node: NodeId,
}

/// State of the cross-node checks of one run.
#[derive(Debug, Default)]
pub struct Checker {
    /// The first violation (the run stops there).
    pub violation: Option<Violation>,
    /// Leader of each term.
    leaders: BTreeMap<Term, NodeId>,
    /// Entries known committed (by a commit index or by being applied).
    committed: BTreeMap<LogIndex, Committed>,
    /// Every (index, term) written anywhere: its payload hash and the term
    /// of the entry before it. Log matching says both are unique.
    /// (A HashMap is fine: it is only looked up, never iterated.)
    entries: HashMap<(LogIndex, Term), (u64, Term, NodeId)>,
    /// State digest at each snapshot index.
    digests: BTreeMap<LogIndex, (u64, NodeId)>,
    /// Writes acknowledged to clients: index -> term.
    acked: BTreeMap<LogIndex, Term>,
}

impl Checker {
    /// Records `v` unless a violation is already recorded.
    pub fn set(&mut self, v: Violation) {
        if self.violation.is_none() {
            self.violation = Some(v);
        }
    }

    /// Election safety: at most one leader per term.
    pub fn leader_elected(&mut self, term: Term, node: NodeId) -> Result<(), String> {
        match self.leaders.insert(term, node) {
            Some(other) if other != node => {
                Err(format!("two leaders in term {term}: n{other} and n{node}"))
            }
            _ => Ok(()),
        }
    }

    /// Leader leases: while a leader serves a read from its lease, no other
    /// node can have been elected in a later term (followers that
    /// acknowledged the lease refuse to vote until it expires).
    pub fn lease_read(&self, term: Term, node: NodeId) -> Result<(), String> {
        match self.leaders.range(term + 1..).next() {
            Some((&t, &other)) => Err(format!(
                "n{node} served a lease read as leader of term {term}, but n{other} was already elected in term {t}"
            )),
            None => Ok(()),
        }
    }

    /// Log matching: an entry written at (index, term) always has the same
    /// payload and follows an entry of the same term.
    pub fn log_entry(
        &mut self,
        index: LogIndex,
        term: Term,
        hash: u64,
        prev_term: Term,
        node: NodeId,
    ) -> Result<(), String> {
        match self.entries.get(&(index, term)) {
            Some(&(h, p, other)) => {
                if h != hash {
                    return Err(format!(
                        "n{other} and n{node} hold different entries at index {index} of term {term}"
                    ));
                }
                if p != prev_term {
                    return Err(format!(
                        "entry {index}@t{term}: n{other} has term {p} before it, n{node} term {prev_term}"
                    ));
                }
                Ok(())
            }
            None => {
                if prev_term > term {
                    return Err(format!(
                        "n{node}: entry {index}@t{term} follows an entry of later term {prev_term}"
                    ));
                }
                self.entries.insert((index, term), (hash, prev_term, node));
                Ok(())
            }
        }
    }

    fn record(
        &mut self,
        index: LogIndex,
        term: Term,
        hash: u64,
        commit_term: Option<Term>,
        node: NodeId,
        how: &str,
    ) -> Result<(), String> {
        match self.committed.get_mut(&index) {
            Some(c) => {
                if c.term != term || c.hash != hash {
                    return Err(format!(
                        "n{node} {how} entry {index}@t{term} but n{} had entry {index}@t{} there",
                        c.node, c.term
                    ));
                }
                c.commit_term = match (c.commit_term, commit_term) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
                Ok(())
            }
            None => {
                self.committed.insert(
                    index,
                    Committed {
                        term,
                        hash,
                        commit_term,
                        node,
                    },
                );
                Ok(())
            }
        }
    }

    /// The highest index known committed (by any node's commit index or
    /// application) so far.
    pub fn highest_committed(&self) -> LogIndex {
        self.committed.last_key_value().map_or(0, |(&i, _)| i)
    }

    /// State machine safety: no two nodes apply different entries at the
    /// same index.
    pub fn applied(
        &mut self,
        index: LogIndex,
        term: Term,
        hash: u64,
        node: NodeId,
    ) -> Result<(), String> {
        self.record(index, term, hash, None, node, "applied")
    }

    /// A node's commit index covers this entry (`commit_term`: the node
    /// leads that term).
    pub fn committed(
        &mut self,
        index: LogIndex,
        term: Term,
        hash: u64,
        commit_term: Option<Term>,
        node: NodeId,
    ) -> Result<(), String> {
        self.record(index, term, hash, commit_term, node, "committed")
    }

    /// A leader of `commit_term` committed the entry at `index`, which it
    /// has already compacted away (so its term and payload are known only
    /// from when it was applied): leaders of later terms must hold it.
    pub fn committed_compacted(&mut self, index: LogIndex, commit_term: Term) {
        if let Some(c) = self.committed.get_mut(&index) {
            c.commit_term = Some(c.commit_term.map_or(commit_term, |t| t.min(commit_term)));
        }
    }

    /// A node's log replaced this entry with one of `by_term`: it must not
    /// have been committed by a leader of `by_term` or earlier. A leader of
    /// an older term (deposed, not knowing it yet) may overwrite a
    /// committed entry on a follower that never learned of the commit
    /// either (still in that term, e.g. a removed node or one cut off):
    /// Leader Completeness binds only leaders of later terms, and neither
    /// node can apply the entry it got (the follower never truncates below
    /// its own commit index, and the old leader cannot commit at that index
    /// any more: a majority has moved to the later term). A leader of the
    /// commit term or later overwriting it is the violation. With the
    /// commit term unknown (no leader was seen committing it), any
    /// overwrite is.
    pub fn overwritten(
        &self,
        index: LogIndex,
        term: Term,
        hash: u64,
        by_term: Term,
        node: NodeId,
    ) -> Result<(), String> {
        match self.committed.get(&index) {
            Some(c)
                if c.term == term
                    && c.hash == hash
                    && c.commit_term.is_none_or(|ct| by_term >= ct) =>
            {
                Err(format!(
                    "n{node} overwrote committed entry {index}@t{term} with an entry of term {by_term}"
                ))
            }
            _ => Ok(()),
        }
    }

    /// Leader completeness: a leader of `leader_term` holds every entry in
    /// `range` committed by a leader of an earlier term.
    pub fn leader_holds(
        &self,
        shadow: &ShadowLog,
        node: NodeId,
        leader_term: Term,
        range: RangeInclusive<LogIndex>,
    ) -> Result<(), String> {
        for (&index, c) in self.committed.range(range) {
            let Some(ct) = c.commit_term else { continue };
            if ct >= leader_term || index < shadow.snap_index {
                continue;
            }
            let holds = if index == shadow.snap_index {
                shadow.snap_term == c.term
            } else {
                shadow.get(index) == Some((c.term, c.hash))
            };
            if !holds {
                return Err(format!(
                    "leader n{node} of term {leader_term} lacks entry {index}@t{} committed in term {ct} (its log: last {}, term there {:?})",
                    c.term,
                    shadow.last_index(),
                    shadow.term(index)
                ));
            }
        }
        Ok(())
    }

    /// Replicas agree on the state at a snapshot index.
    pub fn snapshot_digest(
        &mut self,
        index: LogIndex,
        digest: u64,
        node: NodeId,
    ) -> Result<(), String> {
        match self.digests.get(&index) {
            Some(&(d, other)) if d != digest => Err(format!(
                "state digests at index {index} differ: n{other} {d:016x}, n{node} {digest:016x}"
            )),
            Some(_) => Ok(()),
            None => {
                self.digests.insert(index, (digest, node));
                Ok(())
            }
        }
    }

    /// A client got an acknowledgement for the write applied at (index, term).
    pub fn acked(&mut self, index: LogIndex, term: Term) -> Result<(), String> {
        match self.committed.get(&index) {
            Some(c) if c.term == term => {
                self.acked.insert(index, term);
                Ok(())
            }
            Some(c) => Err(format!(
                "write acknowledged at {index}@t{term} but entry {index}@t{} is the committed one",
                c.term
            )),
            None => Err(format!(
                "write acknowledged at {index}@t{term} was never applied"
            )),
        }
    }

    /// Every acknowledged write is still in `node`'s log (or its snapshot).
    pub fn acked_in(&self, shadow: &ShadowLog, node: NodeId) -> Result<(), String> {
        for (&index, &term) in self.acked.range(shadow.snap_index..) {
            if shadow.term(index) != Some(term) {
                return Err(format!(
                    "acknowledged write {index}@t{term} is missing from the final leader n{node}'s log (term there: {:?})",
                    shadow.term(index)
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn election_safety_flags_second_leader() {
        let mut c = Checker::default();
        c.leader_elected(3, 1).unwrap();
        c.leader_elected(3, 1).unwrap();
        assert!(c.leader_elected(3, 2).is_err());
        c.leader_elected(4, 2).unwrap();
    }

    #[test]
    fn log_matching_flags_different_payload_or_prefix() {
        let mut c = Checker::default();
        c.log_entry(5, 2, 0xaa, 1, 1).unwrap();
        c.log_entry(5, 2, 0xaa, 1, 2).unwrap();
        assert!(c.log_entry(5, 2, 0xbb, 1, 3).is_err());
        assert!(c.log_entry(5, 2, 0xaa, 2, 3).is_err());
        assert!(c.log_entry(6, 1, 0xcc, 2, 3).is_err());
    }

    #[test]
    fn state_machine_safety_and_lost_writes() {
        let mut c = Checker::default();
        c.applied(1, 1, 7, 1).unwrap();
        assert!(c.applied(1, 2, 7, 2).is_err());
        assert!(c.overwritten(1, 1, 7, 2, 3).is_err());
        c.overwritten(1, 2, 9, 2, 3).unwrap();
        // Committed by the leader of term 4: a deposed leader of term 3 may
        // overwrite it on a follower that never learned of the commit; a
        // leader of term 4 or later may not (seed 222476, 5 nodes).
        c.committed(2, 2, 0xdd, Some(4), 1).unwrap();
        c.overwritten(2, 2, 0xdd, 3, 5).unwrap();
        assert!(c.overwritten(2, 2, 0xdd, 4, 5).is_err());
        assert!(c.overwritten(2, 2, 0xdd, 6, 5).is_err());
        c.acked(1, 1).unwrap();
        assert!(c.acked(1, 2).is_err());
        assert!(c.acked(2, 1).is_err());
        let mut s = ShadowLog::default();
        assert!(c.acked_in(&s, 1).is_err());
        s.install_snapshot(1, 1);
        c.acked_in(&s, 1).unwrap();
    }

    #[test]
    fn leader_completeness_only_for_earlier_commit_terms() {
        let mut c = Checker::default();
        c.committed(1, 1, 7, Some(2), 1).unwrap();
        let empty = ShadowLog::default();
        // A leader of term 2 (same term) need not be checked against it...
        c.leader_holds(&empty, 2, 2, 1..=10).unwrap();
        // ... one of term 3 must hold it.
        assert!(c.leader_holds(&empty, 2, 3, 1..=10).is_err());
    }

    #[test]
    fn digests_must_agree() {
        let mut c = Checker::default();
        c.snapshot_digest(4, 1, 1).unwrap();
        c.snapshot_digest(4, 1, 2).unwrap();
        assert!(c.snapshot_digest(4, 2, 3).is_err());
    }
}
