//! A linearizability checker for client histories (Wing & Gong's search with
//! Lowe's memoization, in the style of Porcupine).
//!
//! # What it decides
//!
//! Clients call operations on a shared object (here: a key-value store) and
//! record, in (virtual) time, when each call started and when it returned
//! with which output. The history is *linearizable* if we can pick, for every
//! operation, one instant between its call and its return at which it "took
//! effect", such that running the operations one at a time in the order of
//! those instants on a simple sequential model of the object produces exactly
//! the outputs the clients saw. An operation whose outcome is unknown (the
//! client timed out or lost its connection) may have taken effect at any
//! instant after its call, or never, and its output is not checked.
//!
//! # How the search works
//!
//! 1. **Partition.** Operations on different keys never interfere, so the
//!    history is split per key ([`Model::partition`]) and each part is
//!    checked on its own. This turns one huge search into many small ones.
//! 2. **Entry list.** Each operation becomes two entries, its *call* and its
//!    *return*, and all entries are sorted by time (a call sorts before a
//!    return at the same instant, so operations that merely touch are
//!    treated as concurrent; this can only accept more histories, never
//!    report a false violation). An operation with an unknown outcome gets a
//!    return at +infinity, after everything else.
//! 3. **Search (Wing & Gong).** Walk the list from the front, keeping a model
//!    state that starts at [`Model::init`]. At a *call* entry, try to let
//!    that operation take effect now: ask the model whether it can step from
//!    the current state with this input and output. If it can, remember
//!    where we were (push onto a stack), remove the operation's call and
//!    return entries from the list, move to the new state and restart from
//!    the front of the list. If it cannot, move on to the next entry: maybe
//!    another pending operation should go first. At a *return* entry we are
//!    stuck: that operation returned to its client, so it must have taken
//!    effect already, yet we found no way to do so. Backtrack: pop the stack,
//!    put the popped operation's entries back into the list and try the next
//!    entry after its call instead. When the list is empty (or only returns
//!    at +infinity of unknown-outcome operations are left, which may simply
//!    never have happened), every operation has been placed: linearizable.
//!    When we are stuck with an empty stack, no order works: not linearizable.
//! 4. **Memoization (Lowe).** The search above can try the same thing again
//!    and again: linearizing A then B or B then A often ends in the same
//!    state. What happens next depends only on *which* operations have been
//!    linearized (a bitset) and on the model state, so every (bitset, state)
//!    pair reached is stored in a cache, and a step that leads to a pair
//!    already in the cache is skipped: that future was already explored and
//!    failed. This turns factorial blow-ups on concurrent operations into
//!    something bounded by (subsets reachable) x (distinct states).
//! 5. **Timed-out operations.** They are what makes checking expensive: each
//!    one stays a candidate forever, so k of them can multiply the search by
//!    up to 2^k. Four sound reductions keep this in check. A timed-out
//!    read-only operation ([`Model::is_read_only`]) constrains nothing and is
//!    dropped. One that would not change the state is never applied (that
//!    is the same as never happening). Of several with equal inputs, only
//!    the earliest-called unapplied one may be applied (they are otherwise
//!    interchangeable). And the cache keeps the linearized timed-out
//!    operations apart from the others: a node that failed with a set U of
//!    them applied proves that the same node with any superset of U fails
//!    too, since the extra ones might never have happened. To make such
//!    smaller nodes finish first, each node tries operations with a known
//!    outcome before timed-out ones.
//!
//! Cost: legal histories are fast (the search mostly walks straight
//! through). An illegal one costs about as many steps as there are distinct
//! ways to linearize the operations before the bad one, so a long history on
//! one hot key with many concurrent clients and dozens of timed-out writes
//! can run out of budget and come back [`CheckResult::Unknown`] rather than
//! `Illegal`. Shorter histories per key help.
//!
//! # Determinism and budget
//!
//! The checker reads no clock and uses a fixed hash function, so the same
//! history always gives the same answer after the same number of steps. Each
//! partition gets a budget of model steps and of cache memory
//! ([`CheckOptions`]); when it runs out the result is
//! [`CheckResult::Unknown`], never a guess.
//!
//! # Explanations
//!
//! When a partition is not linearizable, the checker returns the *longest
//! linearizable prefix* it found (an order of operations the model accepts),
//! the state the model is in after it, and the *blocked* operation: one that
//! had already returned to its client at that point but whose output does not
//! fit that state. Every other operation that could still have gone first
//! ([`Violation::pending`]) did not fit either. [`Violation::explain`] renders
//! all this for a human.
//!
//! [`KvModel`] is the model for the raftkv store (put, get, delete and
//! compare-and-swap, checked per key).

mod generate;
mod kv;
mod search;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::fmt::{self, Debug, Write as _};
use std::hash::Hash;

pub use generate::{kv_history, KvHistoryShape};
pub use kv::{KvInput, KvModel, KvOutput};

/// A point in (virtual) time, in whatever unit the recorder uses.
pub type Time = u64;

/// The most operations one [`History`] may hold. Bounds memory and lets
/// operation ids fit in a `u32`.
pub const HISTORY_OPS_MAX: usize = 1 << 24;

/// A sequential specification of the object under test.
///
/// The model must be deterministic: from one state, one input with one output
/// leads to at most one next state, and an input whose output is unknown
/// leads to exactly one next state ([`Model::step_unknown`]).
pub trait Model {
    /// The state of one partition (for a key-value store: one key's value).
    /// Hashed for the memoization cache, so keep it small.
    type State: Clone + Eq + Hash + Debug;
    /// What a client asked for. Equality lets the search treat timed-out
    /// operations with equal inputs as interchangeable.
    type Input: Clone + Debug + PartialEq;
    /// What the client got back.
    type Output: Clone + Debug;
    /// Names an independent part of the history (for a key-value store: the
    /// key). Operations with different partition keys must never affect each
    /// other's outputs.
    type PartitionKey: Clone + Ord + Debug;

    /// The state every partition starts in.
    fn init(&self) -> Self::State;

    /// If `input` can take effect in `state` and return `output`, the state
    /// after it; otherwise `None`. Only ever called with operations of one
    /// partition.
    fn step(
        &self,
        state: &Self::State,
        input: &Self::Input,
        output: &Self::Output,
    ) -> Option<Self::State>;

    /// The state after `input` takes effect in `state` when its output was
    /// never seen (the client timed out).
    fn step_unknown(&self, state: &Self::State, input: &Self::Input) -> Self::State;

    /// The partition `input` belongs to.
    fn partition(&self, input: &Self::Input) -> Self::PartitionKey;

    /// True if `input` never changes the state. Such operations with an
    /// unknown outcome constrain nothing and are dropped before the search.
    /// Returning `false` is always correct, merely slower.
    fn is_read_only(&self, _input: &Self::Input) -> bool {
        false
    }
}

/// Identifies an operation inside its [`History`] (its position).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct OpId(u32);

impl OpId {
    /// The position of the operation in [`History::ops`].
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

impl fmt::Display for OpId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// How an operation ended, as far as its client knows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome<O> {
    /// The client received `output` at `time`.
    Returned {
        /// When the response arrived; never before the call.
        time: Time,
        /// What the response said.
        output: O,
    },
    /// No response (timed out, connection lost, or still in flight when the
    /// history was cut): the operation may have taken effect at any time
    /// after its call, or never.
    Unknown,
}

/// One client operation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Operation<I, O> {
    /// Which client issued it (only used in explanations).
    pub client: u64,
    /// What was asked.
    pub input: I,
    /// When the request was sent.
    pub call_time: Time,
    /// How it ended.
    pub outcome: Outcome<O>,
}

impl<I, O> Operation<I, O> {
    fn validate(&self) -> Result<(), HistoryError> {
        match &self.outcome {
            Outcome::Returned { time, .. } if *time < self.call_time => {
                Err(HistoryError::ReturnBeforeCall {
                    call_time: self.call_time,
                    return_time: *time,
                })
            }
            _ => Ok(()),
        }
    }
}

/// Why a [`History`] refused to record something. The history is unchanged
/// after any of these.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HistoryError {
    /// The history already holds [`HISTORY_OPS_MAX`] operations.
    Full,
    /// No operation has this id in this history.
    NoSuchOperation(OpId),
    /// The operation already has a return recorded.
    AlreadyReturned(OpId),
    /// The return time is earlier than the call time.
    ReturnBeforeCall {
        /// The operation's call time.
        call_time: Time,
        /// The return time that was refused.
        return_time: Time,
    },
}

impl fmt::Display for HistoryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HistoryError::Full => write!(f, "history full ({HISTORY_OPS_MAX} operations)"),
            HistoryError::NoSuchOperation(id) => write!(f, "no operation {id} in history"),
            HistoryError::AlreadyReturned(id) => write!(f, "operation {id} already returned"),
            HistoryError::ReturnBeforeCall {
                call_time,
                return_time,
            } => write!(
                f,
                "return time {return_time} is before call time {call_time}"
            ),
        }
    }
}

impl std::error::Error for HistoryError {}

/// A client history: every operation with its call and (maybe) its return.
///
/// Record it incrementally with [`History::invoke`] and
/// [`History::complete`]; operations never completed count as unknown
/// outcome.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct History<I, O> {
    ops: Vec<Operation<I, O>>,
}

impl<I, O> Default for History<I, O> {
    fn default() -> Self {
        History { ops: Vec::new() }
    }
}

impl<I, O> History<I, O> {
    /// An empty history.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records a call; its outcome is [`Outcome::Unknown`] until completed.
    pub fn invoke(&mut self, client: u64, input: I, call_time: Time) -> Result<OpId, HistoryError> {
        self.push(Operation {
            client,
            input,
            call_time,
            outcome: Outcome::Unknown,
        })
    }

    /// Records that operation `id` returned `output` at `return_time`.
    pub fn complete(&mut self, id: OpId, return_time: Time, output: O) -> Result<(), HistoryError> {
        let op = self
            .ops
            .get_mut(id.index())
            .ok_or(HistoryError::NoSuchOperation(id))?;
        if matches!(op.outcome, Outcome::Returned { .. }) {
            return Err(HistoryError::AlreadyReturned(id));
        }
        if return_time < op.call_time {
            return Err(HistoryError::ReturnBeforeCall {
                call_time: op.call_time,
                return_time,
            });
        }
        op.outcome = Outcome::Returned {
            time: return_time,
            output,
        };
        Ok(())
    }

    /// Appends a whole operation.
    pub fn push(&mut self, op: Operation<I, O>) -> Result<OpId, HistoryError> {
        op.validate()?;
        if self.ops.len() >= HISTORY_OPS_MAX {
            return Err(HistoryError::Full);
        }
        // Cannot truncate: len < HISTORY_OPS_MAX = 2^24 < 2^32.
        let id = OpId(self.ops.len() as u32);
        self.ops.push(op);
        Ok(id)
    }

    /// All operations, in the order they were recorded (index = [`OpId`]).
    pub fn ops(&self) -> &[Operation<I, O>] {
        &self.ops
    }

    /// The operation with this id, if any.
    pub fn get(&self, id: OpId) -> Option<&Operation<I, O>> {
        self.ops.get(id.index())
    }

    /// Number of operations.
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// True if no operation was recorded.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// Ids of all operations, in recording order.
    pub fn ids(&self) -> impl Iterator<Item = OpId> + '_ {
        // Cannot truncate: push() keeps len <= HISTORY_OPS_MAX.
        (0..self.ops.len()).map(|i| OpId(i as u32))
    }
}

/// Limits for one check. All are counted, never timed, so a result can be
/// reproduced exactly.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckOptions {
    /// Model steps one partition may take before giving up with
    /// [`CheckResult::Unknown`]. About 10-50 million steps per second in a
    /// release build for small states.
    pub steps_per_partition_max: u64,
    /// Estimated bytes the memoization cache of one partition may hold
    /// (bitset + state + overhead per entry) before giving up with
    /// [`CheckResult::Unknown`]. Bounds memory on histories with thousands of
    /// concurrent operations.
    pub cache_bytes_per_partition_max: u64,
    /// Lowe's memoization. Only switched off to measure what it saves.
    pub memoize: bool,
}

impl Default for CheckOptions {
    fn default() -> Self {
        CheckOptions {
            steps_per_partition_max: 20_000_000,
            cache_bytes_per_partition_max: 256 << 20,
            memoize: true,
        }
    }
}

/// The verdict on a whole history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CheckResult<K, S> {
    /// Every partition is linearizable.
    Ok,
    /// A partition is not linearizable (the first one found, in key order).
    Illegal(Box<Violation<K, S>>),
    /// No partition is proven illegal, but these partitions ran out of
    /// budget before the search finished.
    Unknown {
        /// Partitions whose search hit a limit of [`CheckOptions`].
        partitions: Vec<K>,
    },
}

impl<K, S> CheckResult<K, S> {
    /// True for [`CheckResult::Ok`].
    pub fn is_ok(&self) -> bool {
        matches!(self, CheckResult::Ok)
    }

    /// True for [`CheckResult::Illegal`].
    pub fn is_illegal(&self) -> bool {
        matches!(self, CheckResult::Illegal(_))
    }
}

/// [`CheckResult`] for a model.
pub type ModelCheckResult<M> = CheckResult<<M as Model>::PartitionKey, <M as Model>::State>;

/// Why one partition is not linearizable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation<K, S> {
    /// The partition (key) whose history is not linearizable.
    pub partition: K,
    /// The longest sequence of operations of this partition that the search
    /// could linearize, in linearization order.
    pub prefix: Vec<OpId>,
    /// The model state after `prefix`.
    pub state: S,
    /// An operation that had already returned to its client after `prefix`
    /// but whose output does not fit `state`: it cannot be linearized.
    pub blocked: OpId,
    /// Every operation (including `blocked`) that was called before
    /// `blocked` returned and is not in `prefix`; none of them can take
    /// effect in `state`, so no operation can go next.
    pub pending: Vec<OpId>,
}

impl<K: Debug, S: Debug> Violation<K, S> {
    /// A readable account of the violation, using `history` (the one that
    /// was checked) for the operations' details.
    pub fn explain<I: Debug, O: Debug>(&self, history: &History<I, O>) -> String {
        let mut out = String::new();
        let describe = |out: &mut String, id: OpId| {
            // Writing to a String cannot fail.
            let _ = match history.get(id) {
                Some(op) => match &op.outcome {
                    Outcome::Returned { time, output } => writeln!(
                        out,
                        "  {id} client {} [{}, {}] {:?} -> {:?}",
                        op.client, op.call_time, time, op.input, output
                    ),
                    Outcome::Unknown => writeln!(
                        out,
                        "  {id} client {} [{}, ?] {:?} -> unknown",
                        op.client, op.call_time, op.input
                    ),
                },
                None => writeln!(out, "  {id} (not in this history)"),
            };
        };
        let _ = writeln!(
            out,
            "partition {:?} is not linearizable.\nlongest linearizable prefix ({} ops):",
            self.partition,
            self.prefix.len()
        );
        for &id in &self.prefix {
            describe(&mut out, id);
        }
        let _ = writeln!(out, "state after prefix: {:?}", self.state);
        let _ = writeln!(
            out,
            "blocked (returned, but its output does not fit that state):"
        );
        describe(&mut out, self.blocked);
        let others: Vec<OpId> = self
            .pending
            .iter()
            .copied()
            .filter(|&id| id != self.blocked)
            .collect();
        if !others.is_empty() {
            let _ = writeln!(
                out,
                "no other pending operation could take effect first either:"
            );
            for id in others {
                describe(&mut out, id);
            }
        }
        out
    }
}

/// Counters from one check.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CheckStats {
    /// Partitions checked (with at least one operation to check).
    pub partitions: u64,
    /// Operations given to the search (after dropping unknown-outcome reads).
    pub operations: u64,
    /// Model steps taken, over all partitions.
    pub steps: u64,
    /// Most steps taken by one partition.
    pub steps_partition_max: u64,
    /// Memoization cache entries created, over all partitions.
    pub cache_entries: u64,
    /// Backtracks (pops of the search stack), over all partitions.
    pub backtracks: u64,
    /// Nodes skipped because a finished node with the same linearized
    /// known-outcome operations and state, but fewer linearized
    /// unknown-outcome ones, covers them.
    pub dominated: u64,
}

/// Checks `history` against `model`. See the module documentation.
pub fn check<M: Model>(
    model: &M,
    history: &History<M::Input, M::Output>,
    options: &CheckOptions,
) -> ModelCheckResult<M> {
    check_with_stats(model, history, options).0
}

/// [`check`], also returning counters (for budgets, benchmarks and tests).
///
/// Partitions are checked in key order. The first illegal partition ends the
/// check; a partition that runs out of budget does not, so a later illegal
/// one is still found.
pub fn check_with_stats<M: Model>(
    model: &M,
    history: &History<M::Input, M::Output>,
    options: &CheckOptions,
) -> (ModelCheckResult<M>, CheckStats) {
    let mut partitions: BTreeMap<M::PartitionKey, Vec<OpId>> = BTreeMap::new();
    for (id, op) in history.ids().zip(history.ops()) {
        if matches!(op.outcome, Outcome::Unknown) && model.is_read_only(&op.input) {
            continue; // Constrains nothing: it may never have happened.
        }
        partitions
            .entry(model.partition(&op.input))
            .or_default()
            .push(id);
    }
    let mut stats = CheckStats::default();
    let mut exhausted = Vec::new();
    for (key, ids) in partitions {
        stats.partitions += 1;
        stats.operations += ids.len() as u64;
        match search::check_partition(model, history, &ids, options, &mut stats) {
            search::Verdict::Ok => {}
            search::Verdict::Exhausted => exhausted.push(key),
            search::Verdict::Illegal(found) => {
                let violation = Violation {
                    partition: key,
                    prefix: found.prefix,
                    state: found.state,
                    blocked: found.blocked,
                    pending: found.pending,
                };
                return (CheckResult::Illegal(Box::new(violation)), stats);
            }
        }
    }
    if exhausted.is_empty() {
        (CheckResult::Ok, stats)
    } else {
        (
            CheckResult::Unknown {
                partitions: exhausted,
            },
            stats,
        )
    }
}
