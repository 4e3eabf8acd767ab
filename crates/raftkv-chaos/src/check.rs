//! Checking a recorded history.
//!
//! 1. **Every value seen was written.** Every value a read (of any
//!    consistency, stale included), a failed compare-and-swap or a final
//!    read observed must come from a put or swap of that value to that key
//!    whose outcome is ok or unknown. A value from a write recorded as a
//!    definite failure means the server applied a write it said it had not
//!    (a wrong `not_applied`, say); a value nobody wrote is corruption.
//! 2. **Linearizability, per key**, with raft-sim's Wing-Gong/Lowe checker
//!    ([`raft_sim::linearizability`]) on its key-value model. Checked: every
//!    write that is ok or unknown (unknown ones may or may not have taken
//!    effect), every linearizable and lease read, and the final reads.
//!    Stale reads are left out (they may be stale by contract), and so are
//!    failed operations (they did not happen).
//!
//!    Two sound reductions keep unknown writes (each a "maybe, at any time
//!    later" candidate for the rest of the search) cheap: an unknown write
//!    whose value a checked operation observed certainly happened by then
//!    and is checked as such (`resolved_by_observation`), and values no
//!    other operation ever mentions are checked as one value
//!    (`mentioned_values`), so such unknown writes become interchangeable.
//! 3. **No acknowledged write lost.** The final linearizable read of every
//!    key, after all faults are healed, is part of the checked history: if
//!    it cannot be explained (the last acknowledged write vanished, or an
//!    old value came back), the violation names that final read.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use raft_sim::linearizability::{
    self, CheckOptions, CheckResult, History, KvInput, KvModel, KvOutput, OpId, Operation,
    Outcome as LinOutcome,
};
use serde::{Deserialize, Serialize};

use crate::history::{FaultEvent, OpKind, OpRecord, OpResult, Outcome, Phase, ReadConsistency};

/// The verdict on one run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Every check passed.
    Linearizable,
    /// A check failed; see the explanation.
    NotLinearizable,
    /// No violation found, but the checker ran out of budget on a key.
    Inconclusive,
}

/// What the check found.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckReport {
    pub verdict: Verdict,
    /// The first violation, for people.
    pub explanation: Option<String>,
    /// Keys checked.
    pub keys: u64,
    /// Operations given to the linearizability checker.
    pub ops_checked: u64,
    /// Writes with an unknown outcome among them.
    pub unknown_writes: u64,
    /// Of those, writes whose value a checked operation observed: they
    /// certainly took effect, and are checked as returning by then.
    pub unknown_writes_observed: u64,
    /// Stale reads recorded (and left out of the linearizability check).
    pub stale_reads: u64,
    /// Model steps the checker took.
    pub steps: u64,
    /// Each key's value in the final reads.
    pub final_values: BTreeMap<String, Option<String>>,
}

// Keys and values are interned to integers for the search: states and
// inputs are hashed and cloned millions of times, and a `u64` costs a
// fraction of a `String` there. Explanations use the records themselves.
type Input = KvInput<u64, u64>;
type Output = KvOutput<u64>;

/// Strings to dense integers, and back.
#[derive(Default)]
struct Interner {
    ids: std::collections::HashMap<String, u64>,
    names: Vec<String>,
}

impl Interner {
    fn id(&mut self, s: &str) -> u64 {
        if let Some(&id) = self.ids.get(s) {
            return id;
        }
        let id = self.names.len() as u64;
        self.ids.insert(s.to_string(), id);
        self.names.push(s.to_string());
        id
    }

    fn opt(&mut self, s: &Option<String>) -> Option<u64> {
        s.as_deref().map(|s| self.id(s))
    }

    fn name(&self, id: u64) -> &str {
        self.names.get(id as usize).map_or("?", String::as_str)
    }
}

/// The interned value standing for every value written but never
/// mentioned by any other operation (see [`mentioned_values`]).
const UNMENTIONED: u64 = u64::MAX;

fn input_of(
    op: &OpRecord,
    keys: &mut Interner,
    values: &mut Interner,
    mentioned: &BTreeSet<(&str, &str)>,
) -> Input {
    let key = keys.id(&op.key);
    let mut written = |v: &String| {
        if mentioned.contains(&(op.key.as_str(), v.as_str())) {
            values.id(v)
        } else {
            UNMENTIONED
        }
    };
    match &op.kind {
        OpKind::Put { value } => KvInput::Put {
            key,
            value: written(value),
        },
        OpKind::Get { .. } => KvInput::Get { key },
        OpKind::Delete => KvInput::Delete { key },
        OpKind::Cas { expected, new } => {
            let new = new.as_ref().map(&mut written);
            KvInput::Cas {
                key,
                expected: values.opt(expected),
                new,
            }
        }
    }
}

/// Every (key, value) some operation other than its writer mentions: a
/// read of any consistency or a final read returned it, a compare-and-swap
/// expected it or reported it as the current value.
///
/// A value nobody mentions is indistinguishable from any other such value
/// to every operation: no read returned it, no compare-and-swap compared
/// against it, and a delete only sees that *some* value is there. So all of
/// them are checked as one value, [`UNMENTIONED`]. That changes no verdict,
/// and it makes writes with an unknown outcome of such values
/// interchangeable, which the checker exploits (it only tries the earliest
/// of equal unknown operations, and skips one that changes nothing): a
/// dozen writes that failed with a 5xx during an election no longer
/// multiply the search.
fn mentioned_values(ops: &[OpRecord]) -> BTreeSet<(&str, &str)> {
    let mut out = BTreeSet::new();
    for op in ops {
        if let OpKind::Cas {
            expected: Some(v), ..
        } = &op.kind
        {
            out.insert((op.key.as_str(), v.as_str()));
        }
        if let Outcome::Ok { result } = &op.outcome {
            if let Some(Some(v)) = result.observed_value() {
                out.insert((op.key.as_str(), v.as_str()));
            }
        }
    }
    out
}

fn output_of(result: &OpResult, values: &mut Interner) -> Output {
    match result {
        OpResult::Put => KvOutput::Put,
        OpResult::Value { value } => KvOutput::Get(values.opt(value)),
        OpResult::Deleted { existed } => KvOutput::Delete { existed: *existed },
        OpResult::Swapped => KvOutput::Cas { succeeded: true },
        OpResult::CasMismatch { current } => KvOutput::CasMismatch {
            current: values.opt(current),
        },
    }
}

fn is_stale_read(op: &OpRecord) -> bool {
    matches!(
        op.kind,
        OpKind::Get {
            consistency: ReadConsistency::Stale
        }
    )
}

/// Checks `ops` (the whole run: workload and final reads); `faults` only
/// enrich the explanation. `steps_per_key_max` bounds the search per key.
pub fn check(ops: &[OpRecord], faults: &[FaultEvent], steps_per_key_max: u64) -> CheckReport {
    let mut report = CheckReport {
        verdict: Verdict::Linearizable,
        explanation: None,
        keys: 0,
        ops_checked: 0,
        unknown_writes: 0,
        unknown_writes_observed: 0,
        stale_reads: ops.iter().filter(|o| is_stale_read(o)).count() as u64,
        steps: 0,
        final_values: BTreeMap::new(),
    };
    for op in ops.iter().filter(|o| o.phase == Phase::Final) {
        if let Outcome::Ok {
            result: OpResult::Value { value },
        } = &op.outcome
        {
            report.final_values.insert(op.key.clone(), value.clone());
        }
    }
    if let Some(e) = check_values_were_written(ops, faults) {
        report.verdict = Verdict::NotLinearizable;
        report.explanation = Some(e);
        return report;
    }

    // The linearizability check.
    let seen_by = first_observations(ops);
    let mentioned = mentioned_values(ops);
    let mut history: History<Input, Output> = History::new();
    let (mut keys, mut values) = (Interner::default(), Interner::default());
    // Keys interned in name order: partitions are checked (and the first
    // violation reported) in that order.
    for key in ops.iter().map(|o| o.key.as_str()).collect::<BTreeSet<_>>() {
        keys.id(key);
    }
    let mut index_of: Vec<usize> = Vec::new();
    for (i, op) in ops.iter().enumerate() {
        if is_stale_read(op) {
            continue;
        }
        let outcome = match &op.outcome {
            Outcome::Fail { .. } => continue,
            Outcome::Unknown { .. } => {
                if op.kind.is_write() {
                    report.unknown_writes += 1;
                }
                match resolved_by_observation(op, &seen_by) {
                    Some((time, result)) => {
                        report.unknown_writes_observed += 1;
                        LinOutcome::Returned {
                            time,
                            output: output_of(&result, &mut values),
                        }
                    }
                    None => LinOutcome::Unknown,
                }
            }
            Outcome::Ok { result } => LinOutcome::Returned {
                time: op.complete_us,
                output: output_of(result, &mut values),
            },
        };
        let pushed = history.push(Operation {
            client: op.client,
            input: input_of(op, &mut keys, &mut values, &mentioned),
            call_time: op.invoke_us,
            outcome,
        });
        // Cannot fail: complete_us >= invoke_us by construction, and a run
        // records far fewer than HISTORY_OPS_MAX operations.
        if pushed.is_ok() {
            index_of.push(i);
        }
    }
    let options = CheckOptions {
        steps_per_partition_max: steps_per_key_max,
        ..CheckOptions::default()
    };
    let (result, stats) = linearizability::check_with_stats(&KvModel::new(), &history, &options);
    report.keys = stats.partitions;
    report.ops_checked = stats.operations;
    report.steps = stats.steps;
    match result {
        CheckResult::Ok => {}
        CheckResult::Unknown { partitions } => {
            report.verdict = Verdict::Inconclusive;
            report.explanation = Some(format!(
                "the checker ran out of budget ({steps_per_key_max} steps per key) on key(s) {}; \
                 no violation was found before that",
                partitions
                    .iter()
                    .map(|&k| keys.name(k))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        CheckResult::Illegal(v) => {
            report.verdict = Verdict::NotLinearizable;
            let rec = |id: OpId| &ops[index_of[id.index()]];
            let key = keys.name(v.partition);
            let state = v.state.map(|x| match x {
                UNMENTIONED => "(a value no other operation ever saw)".to_string(),
                x => values.name(x).to_string(),
            });
            let mut out = String::new();
            let blocked = rec(v.blocked);
            let headline = if blocked.phase == Phase::Final {
                format!(
                    "key {}: the final state is not explained by the history \
                     (an acknowledged write was lost, or an overwritten value came back)",
                    key
                )
            } else {
                format!("key {} is not linearizable", key)
            };
            let _ = writeln!(out, "{headline}.");
            let _ = writeln!(
                out,
                "This operation returned, but its answer fits no order of the operations before it:"
            );
            let _ = writeln!(out, "  {}", describe(blocked));
            out.push_str(&context(blocked, ops));
            let _ = writeln!(
                out,
                "The longest order the checker could build for {} ({} ops) ends with:",
                key,
                v.prefix.len()
            );
            let tail = v.prefix.len().saturating_sub(5);
            for &id in &v.prefix[tail..] {
                let _ = writeln!(out, "  {}", describe(rec(id)));
            }
            let _ = writeln!(out, "after which {} holds {}.", key, show(&state));
            let others: Vec<OpId> = v
                .pending
                .iter()
                .copied()
                .filter(|&id| id != v.blocked)
                .collect();
            if !others.is_empty() {
                let _ = writeln!(
                    out,
                    "No other pending operation could go first ({} of them), e.g.:",
                    others.len()
                );
                for &id in others.iter().take(6) {
                    let _ = writeln!(out, "  {}", describe(rec(id)));
                }
            }
            let nearby = faults_near(faults, blocked.invoke_us, blocked.complete_us);
            if !nearby.is_empty() {
                let _ = writeln!(out, "Faults around it:");
                for f in nearby {
                    let _ = writeln!(out, "  {}", describe_fault(f));
                }
            }
            report.explanation = Some(out);
        }
    }
    report
}

/// For each (key, value): the earliest completion time of a checked
/// operation whose answer proves the value was stored in the key by then:
/// a linearizable, lease or final read that returned it, a compare-and-swap
/// that found it (409 with it as the current value), or one that swapped
/// on it as the expected value.
fn first_observations(ops: &[OpRecord]) -> BTreeMap<(&str, &str), u64> {
    let mut seen: BTreeMap<(&str, &str), u64> = BTreeMap::new();
    for op in ops.iter().filter(|o| !is_stale_read(o)) {
        let Outcome::Ok { result } = &op.outcome else {
            continue;
        };
        let value = match (result, &op.kind) {
            (OpResult::Value { value: Some(v) }, _) => v,
            (OpResult::CasMismatch { current: Some(v) }, _) => v,
            (
                OpResult::Swapped,
                OpKind::Cas {
                    expected: Some(v), ..
                },
            ) => v,
            _ => continue,
        };
        let t = seen
            .entry((op.key.as_str(), value.as_str()))
            .or_insert(u64::MAX);
        *t = (*t).min(op.complete_us);
    }
    seen
}

/// An unknown-outcome write whose (unique) value a checked operation
/// observed certainly took effect, no later than that operation returned:
/// it becomes an operation that returned then, with the answer it must have
/// had (put: ok; compare-and-swap: swapped). Sound, since values are unique
/// per write, and it spares the search from carrying the write as "maybe,
/// at any time later" through the rest of the history, which is what makes
/// unknown writes expensive. `None` if it was not observed (or only before
/// it was even invoked, which the check reports).
fn resolved_by_observation(
    op: &OpRecord,
    seen_by: &BTreeMap<(&str, &str), u64>,
) -> Option<(u64, OpResult)> {
    let value = op.kind.written_value()?;
    let t = *seen_by.get(&(op.key.as_str(), value))?;
    if t < op.invoke_us {
        return None;
    }
    let result = match op.kind {
        OpKind::Put { .. } => OpResult::Put,
        _ => OpResult::Swapped,
    };
    Some((t, result))
}

/// Check 1 of the module docs; the first problem found, explained.
fn check_values_were_written(ops: &[OpRecord], faults: &[FaultEvent]) -> Option<String> {
    // (key, value) -> the writes of that value.
    let mut writes: BTreeMap<(&str, &str), Vec<&OpRecord>> = BTreeMap::new();
    for op in ops {
        if let Some(v) = op.kind.written_value() {
            writes.entry((&op.key, v)).or_default().push(op);
        }
    }
    for op in ops {
        let Outcome::Ok { result } = &op.outcome else {
            continue;
        };
        let Some(Some(value)) = result.observed_value() else {
            continue;
        };
        let by = writes
            .get(&(op.key.as_str(), value.as_str()))
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        if by
            .iter()
            .any(|w| !matches!(w.outcome, Outcome::Fail { .. }))
        {
            continue;
        }
        let mut out = String::new();
        match by.first() {
            Some(w) => {
                let _ = writeln!(
                    out,
                    "key {}: a write recorded as a definite failure took effect.",
                    op.key
                );
                let _ = writeln!(out, "  the write: {}", describe(w));
                let _ = writeln!(out, "  seen by:   {}", describe(op));
            }
            None => {
                let _ = writeln!(
                    out,
                    "key {}: a read returned a value no client ever wrote.",
                    op.key
                );
                let _ = writeln!(out, "  {}", describe(op));
            }
        }
        for f in faults_near(faults, op.invoke_us, op.complete_us) {
            let _ = writeln!(out, "  fault around it: {}", describe_fault(f));
        }
        return Some(out);
    }
    None
}

/// What a human wants to see next to a blocked operation: who wrote the
/// value it saw, and what was already acknowledged (or read) before it was
/// even invoked.
fn context(blocked: &OpRecord, ops: &[OpRecord]) -> String {
    let mut out = String::new();
    let same_key = || {
        ops.iter()
            .filter(move |o| o.key == blocked.key && !std::ptr::eq(*o, blocked))
    };
    if let Outcome::Ok { result } = &blocked.outcome {
        if let Some(Some(seen)) = result.observed_value() {
            for w in same_key().filter(|o| o.kind.written_value() == Some(seen.as_str())) {
                let _ = writeln!(out, "The value it saw was written by:\n  {}", describe(w));
            }
        }
    }
    let mut before: Vec<&OpRecord> = same_key()
        .filter(|o| o.complete_us < blocked.invoke_us && !is_stale_read(o))
        .filter(|o| matches!(o.outcome, Outcome::Ok { .. }))
        .collect();
    before.sort_by_key(|o| o.complete_us);
    let writes: Vec<&&OpRecord> = before.iter().filter(|o| o.kind.is_write()).collect();
    if !writes.is_empty() {
        let _ = writeln!(
            out,
            "Acknowledged before it was invoked (the last {} writes of {}):",
            writes.len().min(3),
            blocked.key
        );
        for w in &writes[writes.len().saturating_sub(3)..] {
            let _ = writeln!(out, "  {}", describe(w));
        }
    }
    let reads: Vec<&&OpRecord> = before.iter().filter(|o| !o.kind.is_write()).collect();
    if !reads.is_empty() {
        let _ = writeln!(
            out,
            "The last reads of {} answered before it was invoked:",
            blocked.key
        );
        for r in &reads[reads.len().saturating_sub(2)..] {
            let _ = writeln!(out, "  {}", describe(r));
        }
    }
    out
}

fn show(v: &Option<String>) -> String {
    match v {
        Some(v) => format!("{v:?}"),
        None => "nothing (absent)".into(),
    }
}

fn secs(us: u64) -> String {
    format!("{:.3}s", us as f64 / 1e6)
}

/// One operation on one line: when, who, where, what, and what came back.
pub fn describe(op: &OpRecord) -> String {
    let what = match &op.kind {
        OpKind::Put { value } => format!("put {} = {value:?}", op.key),
        OpKind::Get { consistency } => format!("{} read of {}", consistency.as_str(), op.key),
        OpKind::Delete => format!("delete {}", op.key),
        OpKind::Cas { expected, new } => format!(
            "cas {} if {} then {}",
            op.key,
            show(expected),
            match new {
                Some(v) => format!("set {v:?}"),
                None => "delete".into(),
            }
        ),
    };
    let answer = match &op.outcome {
        Outcome::Ok { result } => match result {
            OpResult::Put => "ok".to_string(),
            OpResult::Value { value } => format!("returned {}", show(value)),
            OpResult::Deleted { existed: true } => "deleted".into(),
            OpResult::Deleted { existed: false } => "404 (was absent)".into(),
            OpResult::Swapped => "swapped".into(),
            OpResult::CasMismatch { current } => format!("409 mismatch, held {}", show(current)),
        },
        Outcome::Fail { reason } => format!("failed ({reason})"),
        Outcome::Unknown { reason } => format!("unknown ({reason})"),
    };
    let served = match op.served_by {
        Some(n) if n != op.node => format!(", answered by node {n}"),
        _ => String::new(),
    };
    let who = if op.phase == Phase::Final {
        "final read".to_string()
    } else {
        format!("client {}", op.client)
    };
    format!(
        "[{} .. {}] {who} via node {}{served}: {what} -> {answer}",
        secs(op.invoke_us),
        secs(op.complete_us),
        op.node
    )
}

/// A fault on one line.
pub fn describe_fault(f: &FaultEvent) -> String {
    format!(
        "[{} .. {}] {} node {}{}",
        secs(f.start_us),
        secs(f.end_us),
        f.kind.name(),
        f.node,
        if f.was_leader { " (the leader)" } else { "" }
    )
}

/// Faults active within 10 s before `from` up to `to`.
fn faults_near(faults: &[FaultEvent], from: u64, to: u64) -> Vec<&FaultEvent> {
    faults
        .iter()
        .filter(|f| f.end_us + 10_000_000 >= from && f.start_us <= to)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(
        client: u64,
        key: &str,
        kind: OpKind,
        t: (u64, u64),
        outcome: Outcome,
        phase: Phase,
    ) -> OpRecord {
        OpRecord {
            client,
            key: key.into(),
            kind,
            node: 1,
            invoke_us: t.0,
            complete_us: t.1,
            outcome,
            status: None,
            served_by: None,
            phase,
        }
    }

    fn ok(result: OpResult) -> Outcome {
        Outcome::Ok { result }
    }

    fn put(v: &str) -> OpKind {
        OpKind::Put { value: v.into() }
    }

    fn get(c: ReadConsistency) -> OpKind {
        OpKind::Get { consistency: c }
    }

    fn val(v: &str) -> OpResult {
        OpResult::Value {
            value: Some(v.into()),
        }
    }

    const W: Phase = Phase::Workload;

    #[test]
    fn a_clean_history_passes_and_counts() {
        let ops = vec![
            op(1, "k0", put("a"), (0, 10), ok(OpResult::Put), W),
            op(
                2,
                "k0",
                get(ReadConsistency::Lease),
                (20, 30),
                ok(val("a")),
                W,
            ),
            op(
                3,
                "k0",
                put("b"),
                (40, 50),
                Outcome::Unknown { reason: "t".into() },
                W,
            ),
            op(
                2,
                "k0",
                get(ReadConsistency::Stale),
                (60, 70),
                ok(val("a")),
                W,
            ),
            op(
                9,
                "k0",
                get(ReadConsistency::Linearizable),
                (80, 90),
                ok(val("b")),
                Phase::Final,
            ),
        ];
        let r = check(&ops, &[], 1_000_000);
        assert_eq!(r.verdict, Verdict::Linearizable, "{:?}", r.explanation);
        assert_eq!(
            (r.keys, r.ops_checked, r.unknown_writes, r.stale_reads),
            (1, 4, 1, 1)
        );
        assert_eq!(r.final_values["k0"], Some("b".to_string()));
    }

    #[test]
    fn a_stale_lease_read_is_caught_and_explained() {
        let faults = [FaultEvent {
            kind: crate::history::FaultKind::Pause,
            node: 1,
            was_leader: true,
            start_us: 5,
            end_us: 100,
        }];
        let ops = vec![
            op(1, "k0", put("a"), (0, 10), ok(OpResult::Put), W),
            op(2, "k0", put("b"), (20, 30), ok(OpResult::Put), W),
            op(
                3,
                "k0",
                get(ReadConsistency::Lease),
                (40, 110),
                ok(val("a")),
                W,
            ),
        ];
        let r = check(&ops, &faults, 1_000_000);
        assert_eq!(r.verdict, Verdict::NotLinearizable);
        let e = r.explanation.unwrap();
        assert!(e.contains("key k0 is not linearizable"), "{e}");
        assert!(e.contains("lease read of k0 -> returned \"a\""), "{e}");
        assert!(e.contains("pause node 1 (the leader)"), "{e}");
        assert!(
            e.contains("The value it saw was written by:\n  [0.000s .. 0.000s] client 1"),
            "{e}"
        );
        assert!(e.contains("the last 2 writes of k0"), "{e}");
        // The same read with stale consistency is allowed.
        let mut ops = ops;
        ops[2].kind = get(ReadConsistency::Stale);
        assert_eq!(
            check(&ops, &faults, 1_000_000).verdict,
            Verdict::Linearizable
        );
    }

    #[test]
    fn a_lost_acknowledged_write_is_named_by_the_final_read() {
        let ops = vec![
            op(1, "k1", put("a"), (0, 10), ok(OpResult::Put), W),
            op(1, "k1", put("b"), (20, 30), ok(OpResult::Put), W),
            op(
                9,
                "k1",
                get(ReadConsistency::Linearizable),
                (50, 60),
                ok(val("a")),
                Phase::Final,
            ),
        ];
        let r = check(&ops, &[], 1_000_000);
        assert_eq!(r.verdict, Verdict::NotLinearizable);
        assert!(r
            .explanation
            .unwrap()
            .contains("final state is not explained"));
    }

    #[test]
    fn values_of_failed_or_unknown_writes_are_told_apart() {
        let failed = Outcome::Fail {
            reason: "HTTP 503 not_applied".into(),
        };
        let ops = vec![
            op(1, "k2", put("x"), (0, 10), failed, W),
            op(
                2,
                "k2",
                get(ReadConsistency::Stale),
                (20, 30),
                ok(val("x")),
                W,
            ),
        ];
        let r = check(&ops, &[], 1_000_000);
        assert_eq!(r.verdict, Verdict::NotLinearizable);
        assert!(r
            .explanation
            .unwrap()
            .contains("a write recorded as a definite failure took effect"));
        let phantom = vec![op(
            2,
            "k2",
            get(ReadConsistency::Stale),
            (20, 30),
            ok(val("y")),
            W,
        )];
        let e = check(&phantom, &[], 1_000_000).explanation.unwrap();
        assert!(e.contains("no client ever wrote"), "{e}");
        // An unknown write may have happened: seeing its value is fine.
        let ops = vec![
            op(
                1,
                "k2",
                put("x"),
                (0, 10),
                Outcome::Unknown { reason: "t".into() },
                W,
            ),
            op(
                2,
                "k2",
                get(ReadConsistency::Linearizable),
                (20, 30),
                ok(val("x")),
                W,
            ),
        ];
        assert_eq!(check(&ops, &[], 1_000_000).verdict, Verdict::Linearizable);
    }

    fn unknown(kind: OpKind, t: (u64, u64)) -> OpRecord {
        op(
            7,
            "k5",
            kind,
            t,
            Outcome::Unknown {
                reason: "HTTP 503 no_leader".into(),
            },
            W,
        )
    }

    #[test]
    fn an_unread_unknown_write_still_explains_a_delete_that_found_a_value() {
        let ops = vec![
            unknown(put("never-read"), (0, 10)),
            op(
                1,
                "k5",
                OpKind::Delete,
                (40, 50),
                ok(OpResult::Deleted { existed: true }),
                W,
            ),
            op(
                1,
                "k5",
                get(ReadConsistency::Linearizable),
                (60, 70),
                ok(OpResult::Value { value: None }),
                W,
            ),
        ];
        let r = check(&ops, &[], 1_000_000);
        assert_eq!(r.verdict, Verdict::Linearizable, "{:?}", r.explanation);
        // Without that write, the delete found nothing to delete.
        let r = check(&ops[1..], &[], 1_000_000);
        assert_eq!(r.verdict, Verdict::NotLinearizable);
    }

    #[test]
    fn an_unknown_write_whose_value_was_read_is_resolved_and_bounded() {
        let ops = vec![
            op(1, "k5", put("a"), (0, 10), ok(OpResult::Put), W),
            unknown(put("b"), (20, 30)),
            op(
                2,
                "k5",
                get(ReadConsistency::Lease),
                (40, 50),
                ok(val("b")),
                W,
            ),
            // After b was seen, a read of the older value is a violation
            // (it would be even if b stayed "unknown"; resolving it must not
            // hide that).
            op(
                3,
                "k5",
                get(ReadConsistency::Linearizable),
                (60, 70),
                ok(val("a")),
                W,
            ),
        ];
        let r = check(&ops[..3], &[], 1_000_000);
        assert_eq!(r.verdict, Verdict::Linearizable, "{:?}", r.explanation);
        assert_eq!((r.unknown_writes, r.unknown_writes_observed), (1, 1));
        assert_eq!(
            check(&ops, &[], 1_000_000).verdict,
            Verdict::NotLinearizable
        );
        // A cas expecting a value proves it was there, too.
        let cas = op(
            4,
            "k5",
            OpKind::Cas {
                expected: Some("b".into()),
                new: Some("c".into()),
            },
            (40, 50),
            ok(OpResult::Swapped),
            W,
        );
        let r = check(&[ops[0].clone(), ops[1].clone(), cas], &[], 1_000_000);
        assert_eq!(r.verdict, Verdict::Linearizable, "{:?}", r.explanation);
        assert_eq!(r.unknown_writes_observed, 1);
    }

    /// A legal single-key history of `n` operations by 5 overlapping
    /// clients: each operation takes effect at a random instant of its
    /// interval, except that about 5% are writes that failed with a 5xx
    /// (recorded unknown) and never took effect.
    fn concurrent_history(n: usize, seed: u64) -> Vec<OpRecord> {
        let mut rng = raft_core::rng::SplitMix64::new(seed);
        let mut next_free = [0u64; 5];
        let mut applied: Vec<(u64, usize)> = Vec::new();
        let mut ops = Vec::new();
        for i in 0..n {
            let c = (rng.next_u64() % 5) as usize;
            let invoke = next_free[c];
            let took = 1 + rng.next_u64() % 40;
            next_free[c] = invoke + took + rng.next_u64() % 6;
            let r = rng.next_u64() % 100;
            let mut o = op(
                c as u64,
                "k5",
                OpKind::Delete,
                (invoke, invoke + took),
                ok(OpResult::Swapped),
                W,
            );
            if r < 5 {
                o.kind = if r < 3 {
                    put(&format!("lost{i}"))
                } else {
                    OpKind::Delete
                };
                o.outcome = Outcome::Unknown {
                    reason: "HTTP 503 no_leader".into(),
                };
            } else {
                o.kind = match r {
                    5..=34 => put(&format!("v{i}")),
                    35..=44 => OpKind::Delete,
                    _ => get(ReadConsistency::Linearizable),
                };
                applied.push((invoke + rng.next_u64() % (took + 1), ops.len()));
            }
            ops.push(o);
        }
        applied.sort_unstable();
        let mut state: Option<String> = None;
        for (_, i) in applied {
            let o = &mut ops[i];
            o.outcome = ok(match &o.kind {
                OpKind::Put { value } => {
                    state = Some(value.clone());
                    OpResult::Put
                }
                OpKind::Delete => OpResult::Deleted {
                    existed: state.take().is_some(),
                },
                _ => OpResult::Value {
                    value: state.clone(),
                },
            });
        }
        ops
    }

    #[test]
    fn many_unread_unknown_writes_stay_cheap_to_check() {
        // An election's worth of 5xx writes (unknown by the conservative
        // rule) in overlapping traffic multiplied the search before writes
        // of values nobody read were checked as one value.
        let ops = concurrent_history(1500, 3);
        let r = check(&ops, &[], 10_000_000);
        assert_eq!(r.verdict, Verdict::Linearizable, "{:?}", r.explanation);
        assert!(r.unknown_writes >= 50, "{}", r.unknown_writes);
        assert!(r.steps < 200_000, "{} steps", r.steps);
    }

    #[test]
    fn cas_and_delete_answers_are_checked() {
        let cas = |e: Option<&str>, n: Option<&str>| OpKind::Cas {
            expected: e.map(Into::into),
            new: n.map(Into::into),
        };
        let ops = vec![
            op(
                1,
                "k3",
                cas(None, Some("a")),
                (0, 10),
                ok(OpResult::Swapped),
                W,
            ),
            op(
                2,
                "k3",
                cas(None, Some("b")),
                (20, 30),
                ok(OpResult::CasMismatch {
                    current: Some("a".into()),
                }),
                W,
            ),
            op(
                3,
                "k3",
                OpKind::Delete,
                (40, 50),
                ok(OpResult::Deleted { existed: true }),
                W,
            ),
            op(
                3,
                "k3",
                OpKind::Delete,
                (60, 70),
                ok(OpResult::Deleted { existed: false }),
                W,
            ),
        ];
        assert_eq!(check(&ops, &[], 1_000_000).verdict, Verdict::Linearizable);
        let mut bad = ops;
        bad[3].outcome = ok(OpResult::Deleted { existed: true });
        assert_eq!(
            check(&bad, &[], 1_000_000).verdict,
            Verdict::NotLinearizable
        );
    }
}
