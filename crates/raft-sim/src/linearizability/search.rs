//! The Wing & Gong search with Lowe's memoization over one partition. See the
//! parent module's documentation for the algorithm in words.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hash, Hasher};

use super::{CheckOptions, CheckStats, History, Model, OpId, Outcome};

/// What the search found in one partition.
pub(super) enum Verdict<S> {
    Ok,
    Illegal(Found<S>),
    Exhausted,
}

/// The deepest dead end of a failed search; see `Violation`.
pub(super) struct Found<S> {
    pub prefix: Vec<OpId>,
    pub state: S,
    pub blocked: OpId,
    pub pending: Vec<OpId>,
}

/// End of the entry list.
const NIL: usize = usize::MAX;
/// Index of the list's head sentinel; real entries follow at 1..=2n.
const HEAD: usize = 0;

#[derive(Clone, Copy)]
struct Entry {
    /// Local index of the operation in the partition.
    op: usize,
    is_call: bool,
    /// Return entry of an unknown-outcome operation (time +infinity).
    is_unknown_return: bool,
}

/// The time-ordered list of call and return entries, doubly linked so that
/// an operation's two entries can be removed and put back in O(1)
/// (Knuth's dancing links).
struct EntryList {
    entries: Vec<Entry>,
    next: Vec<usize>,
    prev: Vec<usize>,
    /// For each local operation, the index of its return entry.
    return_of: Vec<usize>,
}

impl EntryList {
    fn new<I, O>(ops: &[&super::Operation<I, O>]) -> EntryList {
        // Sort key: (infinite, time, kind, op). Calls (kind 0) sort before
        // returns (kind 1) at equal times so touching intervals count as
        // concurrent; the op index makes the order total and deterministic.
        let mut keyed: Vec<(bool, u64, u8, usize)> = Vec::with_capacity(ops.len() * 2);
        for (i, op) in ops.iter().enumerate() {
            keyed.push((false, op.call_time, 0, i));
            match &op.outcome {
                Outcome::Returned { time, .. } => {
                    debug_assert!(*time >= op.call_time, "History::push validates times");
                    keyed.push((false, *time, 1, i));
                }
                Outcome::Unknown => keyed.push((true, 0, 1, i)),
            }
        }
        keyed.sort_unstable();
        let len = keyed.len() + 1;
        let mut entries = Vec::with_capacity(len);
        let mut return_of = vec![NIL; ops.len()];
        entries.push(Entry {
            op: NIL,
            is_call: false,
            is_unknown_return: false,
        });
        for (idx, &(infinite, _, kind, op)) in keyed.iter().enumerate() {
            if kind == 1 {
                return_of[op] = idx + 1;
            }
            entries.push(Entry {
                op,
                is_call: kind == 0,
                is_unknown_return: infinite,
            });
        }
        let next = (0..len)
            .map(|i| if i + 1 < len { i + 1 } else { NIL })
            .collect();
        let prev = (0..len).map(|i| if i == 0 { NIL } else { i - 1 }).collect();
        let list = EntryList {
            entries,
            next,
            prev,
            return_of,
        };
        debug_assert!(list.validate());
        list
    }

    /// Invariant: every call entry precedes its own return entry.
    fn validate(&self) -> bool {
        let mut seen_call = vec![false; self.return_of.len()];
        let mut at = self.next[HEAD];
        while at != NIL {
            let e = self.entries[at];
            if e.is_call {
                seen_call[e.op] = true;
            } else if !seen_call[e.op] {
                return false;
            }
            at = self.next[at];
        }
        true
    }

    fn unlink(&mut self, at: usize) {
        let (p, n) = (self.prev[at], self.next[at]);
        self.next[p] = n;
        if n != NIL {
            self.prev[n] = p;
        }
    }

    fn relink(&mut self, at: usize) {
        let (p, n) = (self.prev[at], self.next[at]);
        self.next[p] = at;
        if n != NIL {
            self.prev[n] = at;
        }
    }

    /// Removes the operation whose call entry is `call` (both entries).
    fn lift(&mut self, call: usize) {
        let ret = self.return_of[self.entries[call].op];
        self.unlink(call);
        self.unlink(ret);
    }

    /// Undoes `lift(call)`; lifts must be undone in reverse order.
    fn unlift(&mut self, call: usize) {
        let ret = self.return_of[self.entries[call].op];
        self.relink(ret);
        self.relink(call);
    }
}

/// The set of linearized operations.
#[derive(Clone, PartialEq, Eq)]
struct Bitset(Box<[u64]>);

impl Hash for Bitset {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // Word by word: the length is fixed within a partition.
        for &word in self.0.iter() {
            state.write_u64(word);
        }
    }
}

impl Bitset {
    fn new(bits: usize) -> Bitset {
        Bitset(vec![0; bits.div_ceil(64)].into_boxed_slice())
    }
    fn set(&mut self, bit: usize) {
        self.0[bit / 64] |= 1 << (bit % 64);
    }
    fn clear(&mut self, bit: usize) {
        self.0[bit / 64] &= !(1 << (bit % 64));
    }
    fn get(&self, bit: usize) -> bool {
        self.0[bit / 64] & (1 << (bit % 64)) != 0
    }
}

/// A fixed, fast hash (the multiply-rotate scheme of rustc's FxHash, written
/// here): deterministic across runs, unlike std's randomly seeded one.
#[derive(Default)]
struct FxHasher(u64);

impl Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(word));
        }
    }
    fn write_u8(&mut self, v: u8) {
        self.write_u64(u64::from(v));
    }
    fn write_u32(&mut self, v: u32) {
        self.write_u64(u64::from(v));
    }
    fn write_usize(&mut self, v: usize) {
        self.write_u64(v as u64);
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = (self.0.rotate_left(5) ^ v).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

/// Lowe's memoization, extended with dominance on unknown-outcome
/// operations. Nodes are grouped by (set of linearized known-outcome
/// operations, model state); each group lists the sets of linearized
/// unknown-outcome operations seen with it (its *variants*), and whether
/// each variant's subtree is fully explored (*finished*: since the search
/// goes on, it holds no linearization).
///
/// A node (K, U, s) whose exploration failed also proves that every
/// (K, U', s) with U' a superset of U fails: any way to finish from the
/// latter also finishes from the former, since the extra unknown-outcome
/// operations there may simply never have happened, and they impose no
/// real-time constraint (their returns are at +infinity). Without this, k
/// timed-out writes multiply the search by up to 2^k.
///
/// Only *finished* variants may dominate: a variant still being explored
/// is an ancestor of the current node, and pruning against it could hide
/// the only way to finish.
struct Cache<S> {
    /// (known set, state) -> offset in `arena` of the group's newest variant.
    groups: HashMap<(Bitset, S), usize, BuildHasherDefault<FxHasher>>,
    /// Variant records, linked per group, each `2 + words` u64s: offset of
    /// the group's next (older) variant or `NO_VARIANT`, finished flag (0 or
    /// 1), then the unknown set. One arena instead of a vector per group
    /// keeps allocations off the hot path.
    arena: Vec<u64>,
    /// u64 words per unknown set.
    words: usize,
    variants: usize,
    /// Estimated heap bytes held (see `visit`).
    bytes: u64,
}

/// Names a variant: its offset in `Cache::arena`.
type VariantId = usize;

/// What the cache says about a node about to be entered.
enum Visit {
    /// New: explore it.
    New(VariantId),
    /// Same node seen before (so explored and failed).
    Seen,
    /// A finished node with fewer unknown-outcome operations covers it.
    Dominated,
}

impl<S: Hash + Eq> Cache<S> {
    fn new(words: usize) -> Self {
        Cache {
            groups: HashMap::default(),
            arena: Vec::new(),
            words,
            variants: 0,
            bytes: 0,
        }
    }

    fn visit(&mut self, known: &Bitset, state: S, unknown: &Bitset) -> Visit {
        debug_assert_eq!(unknown.0.len(), self.words);
        let offset = self.arena.len();
        let head = self
            .groups
            .entry((known.clone(), state))
            .or_insert(NO_VARIANT);
        if *head == NO_VARIANT {
            // The key (bitset box and state) and its hash slot. States that
            // own heap memory are undercounted.
            let key_bytes = known.0.len() * 8 + std::mem::size_of::<(Bitset, S, usize)>() + 8;
            self.bytes += key_bytes as u64;
        }
        let mut at = *head;
        while at != NO_VARIANT {
            let record = &self.arena[at..at + 2 + self.words];
            let (mut equal, mut subset) = (true, true);
            for (&a, &b) in record[2..].iter().zip(unknown.0.iter()) {
                equal &= a == b;
                subset &= a & !b == 0;
            }
            if equal {
                return Visit::Seen;
            }
            if subset && record[1] == 1 {
                return Visit::Dominated;
            }
            // Cannot truncate: offsets index `arena`, which fits in memory.
            at = record[0] as usize;
        }
        self.arena.push(*head as u64);
        self.arena.push(0);
        self.arena.extend_from_slice(&unknown.0);
        *head = offset;
        self.variants += 1;
        self.bytes += ((2 + self.words) * 8) as u64;
        Visit::New(offset)
    }

    fn finish(&mut self, variant: VariantId) {
        self.arena[variant + 1] = 1;
    }

    fn len(&self) -> usize {
        self.variants
    }
}

/// One linearized operation on the search stack.
struct Frame<S> {
    /// Its call entry (lifted from the list).
    call: usize,
    /// The state before it.
    state_before: S,
    /// The phase the walk was in when it was chosen.
    unknown_phase: bool,
    /// Its node's variant in the cache (`NO_VARIANT` without memoization).
    variant: VariantId,
}

const NO_VARIANT: VariantId = usize::MAX;

/// Checks the operations `ids` of `history` (one partition) against `model`.
///
/// At each node the walk over the entry list runs twice: first trying only
/// operations with a known outcome, then only those with an unknown one.
/// Trying to do without the unknown ones first means the nodes with the
/// fewest of them finish first, which is what lets them dominate (see
/// [`Cache`]).
pub(super) fn check_partition<M: Model>(
    model: &M,
    history: &History<M::Input, M::Output>,
    ids: &[OpId],
    options: &CheckOptions,
    stats: &mut CheckStats,
) -> Verdict<M::State> {
    let ops: Vec<&super::Operation<M::Input, M::Output>> = ids
        .iter()
        // Cannot fail: the caller built `ids` from `history`.
        .map(|&id| {
            history
                .get(id)
                .expect("partition ids come from this history")
        })
        .collect();
    let mut list = EntryList::new(&ops);
    // Each operation's bit in the known or the unknown set.
    let mut slot = vec![0; ops.len()];
    let (mut known_count, mut unknown_count) = (0, 0);
    for (i, op) in ops.iter().enumerate() {
        if matches!(op.outcome, Outcome::Unknown) {
            slot[i] = unknown_count;
            unknown_count += 1;
        } else {
            slot[i] = known_count;
            known_count += 1;
        }
    }
    // Symmetry: unknown-outcome operations with equal inputs are
    // interchangeable, except that one called earlier can take effect at
    // more points. So only ever apply the earliest-called unapplied one of
    // each such group: `twin_before[i]` must be applied before `i` may be.
    let mut twin_before = vec![NIL; ops.len()];
    let mut unknown_ops: Vec<usize> = (0..ops.len())
        .filter(|&i| matches!(ops[i].outcome, Outcome::Unknown))
        .collect();
    // Call order, ties broken by index, exactly as in the entry list.
    unknown_ops.sort_unstable_by_key(|&i| (ops[i].call_time, i));
    for (n, &i) in unknown_ops.iter().enumerate() {
        twin_before[i] = unknown_ops[..n]
            .iter()
            .rev()
            .copied()
            .find(|&j| ops[j].input == ops[i].input)
            .unwrap_or(NIL);
    }
    let mut known = Bitset::new(known_count);
    let mut unknown = Bitset::new(unknown_count);
    let mut known_linearized = 0usize;
    let mut cache: Cache<M::State> = Cache::new(unknown.0.len());
    let cache_bytes_max = options.cache_bytes_per_partition_max;

    let mut state = model.init();
    let mut stack: Vec<Frame<M::State>> = Vec::with_capacity(ops.len());
    let mut best: Option<(usize, Found<M::State>)> = None;
    let mut steps: u64 = 0;

    let verdict = 'search: {
        let mut at = list.next[HEAD];
        let mut unknown_phase = false;
        loop {
            if at == NIL {
                break 'search Verdict::Ok; // Every operation linearized.
            }
            let entry = list.entries[at];
            if entry.is_call {
                let op = ops[entry.op];
                let op_unknown = matches!(op.outcome, Outcome::Unknown);
                if op_unknown != unknown_phase {
                    at = list.next[at];
                    continue;
                }
                if op_unknown
                    && twin_before[entry.op] != NIL
                    && !unknown.get(slot[twin_before[entry.op]])
                {
                    at = list.next[at];
                    continue;
                }
                if steps >= options.steps_per_partition_max {
                    break 'search Verdict::Exhausted;
                }
                steps += 1;
                let next_state = match &op.outcome {
                    Outcome::Returned { output, .. } => model.step(&state, &op.input, output),
                    Outcome::Unknown => {
                        let next = model.step_unknown(&state, &op.input);
                        // Taking effect without changing anything is the
                        // same as never taking effect (which the sibling
                        // nodes cover), only with fewer options left.
                        (next != state).then_some(next)
                    }
                };
                if let Some(next_state) = next_state {
                    if op_unknown {
                        unknown.set(slot[entry.op]);
                    } else {
                        known.set(slot[entry.op]);
                    }
                    let visit = if options.memoize {
                        cache.visit(&known, next_state.clone(), &unknown)
                    } else {
                        Visit::New(NO_VARIANT)
                    };
                    match visit {
                        Visit::New(variant) => {
                            if cache.bytes > cache_bytes_max {
                                break 'search Verdict::Exhausted;
                            }
                            stack.push(Frame {
                                call: at,
                                state_before: std::mem::replace(&mut state, next_state),
                                unknown_phase,
                                variant,
                            });
                            known_linearized += usize::from(!op_unknown);
                            list.lift(at);
                            at = list.next[HEAD];
                            unknown_phase = false;
                            continue;
                        }
                        Visit::Seen => {}
                        Visit::Dominated => stats.dominated += 1,
                    }
                    if op_unknown {
                        unknown.clear(slot[entry.op]);
                    } else {
                        known.clear(slot[entry.op]);
                    }
                }
                at = list.next[at];
            } else {
                if entry.is_unknown_return {
                    // Only +infinity returns are left: every operation with a
                    // known outcome is linearized, and the remaining ones may
                    // never have taken effect.
                    break 'search Verdict::Ok;
                }
                if !unknown_phase {
                    // Known-outcome candidates exhausted; now the others.
                    unknown_phase = true;
                    at = list.next[HEAD];
                    continue;
                }
                // Dead end: this operation returned but could not be placed.
                let deeper = match &best {
                    None => true,
                    Some((depth, _)) => known_linearized > *depth,
                };
                if deeper {
                    best = Some((
                        known_linearized,
                        dead_end(&list, &ops, &stack, ids, &state, at),
                    ));
                }
                let Some(frame) = stack.pop() else {
                    // Cannot fail: the dead end above set `best`.
                    let (_, found) = best.take().expect("a dead end was recorded");
                    break 'search Verdict::Illegal(found);
                };
                stats.backtracks += 1;
                if frame.variant != NO_VARIANT {
                    cache.finish(frame.variant);
                }
                state = frame.state_before;
                let op = list.entries[frame.call].op;
                if matches!(ops[op].outcome, Outcome::Unknown) {
                    unknown.clear(slot[op]);
                } else {
                    known.clear(slot[op]);
                    known_linearized -= 1;
                }
                list.unlift(frame.call);
                at = list.next[frame.call];
                unknown_phase = frame.unknown_phase;
            }
        }
    };
    stats.steps += steps;
    stats.steps_partition_max = stats.steps_partition_max.max(steps);
    stats.cache_entries += cache.len() as u64;
    verdict
}

/// Describes the dead end reached at return entry `at`.
fn dead_end<I, O, S: Clone>(
    list: &EntryList,
    ops: &[&super::Operation<I, O>],
    stack: &[Frame<S>],
    ids: &[OpId],
    state: &S,
    at: usize,
) -> Found<S> {
    let prefix = stack
        .iter()
        .map(|frame| ids[list.entries[frame.call].op])
        .collect();
    let mut pending = Vec::new();
    let mut walk = list.next[HEAD];
    while walk != at && walk != NIL {
        let e = list.entries[walk];
        if e.is_call && matches!(ops[e.op].outcome, Outcome::Returned { .. }) {
            pending.push(ids[e.op]);
        }
        walk = list.next[walk];
    }
    Found {
        prefix,
        state: state.clone(),
        blocked: ids[list.entries[at].op],
        pending,
    }
}
