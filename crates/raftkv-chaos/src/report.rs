//! Run summaries: counts, recovery times, verdicts, as text and JSON.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::check::{CheckReport, Verdict};
use crate::history::{FaultEvent, FaultKind, OpRecord, Outcome, Phase};

/// Ok / fail / unknown counts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    pub ok: u64,
    pub fail: u64,
    pub unknown: u64,
}

impl Counts {
    fn add(&mut self, o: &Outcome) {
        match o {
            Outcome::Ok { .. } => self.ok += 1,
            Outcome::Fail { .. } => self.fail += 1,
            Outcome::Unknown { .. } => self.unknown += 1,
        }
    }

    fn merge(&mut self, other: &Counts) {
        self.ok += other.ok;
        self.fail += other.fail;
        self.unknown += other.unknown;
    }

    /// All operations counted.
    pub fn total(&self) -> u64 {
        self.ok + self.fail + self.unknown
    }
}

/// How many faults of one kind, and how many hit the leader.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FaultCounts {
    pub total: u64,
    pub on_leader: u64,
}

/// One run, summarized.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunSummary {
    /// 1-based run number.
    pub run: u64,
    pub seed: u64,
    pub scenario: String,
    /// How the nodes were connected.
    pub network: String,
    /// Set when the run fell back to loopback.
    pub network_notice: Option<String>,
    /// Workload length, seconds.
    pub duration_s: f64,
    /// Workload operations by kind (`put`, `get`, `get_lease`, `get_stale`,
    /// `delete`, `cas`).
    pub ops: BTreeMap<String, Counts>,
    /// Final reads.
    pub final_reads: Counts,
    /// Answers that carried `x-raftkv-node`.
    pub answers_with_node_header: u64,
    /// Of those, answers naming another node than the one asked (should be
    /// none: the header names the node that answered).
    pub node_header_mismatches: u64,
    /// Failure and unknown reasons, counted.
    pub reasons: BTreeMap<String, u64>,
    /// Faults by kind.
    pub faults: BTreeMap<String, FaultCounts>,
    /// Milliseconds from each fault on the leader to the first acknowledged
    /// write invoked after it, by fault kind.
    pub recovery_ms: BTreeMap<String, Vec<u64>>,
    pub check: CheckReport,
    /// Where the run's logs and history were kept (failed runs, `--keep`).
    pub kept: Option<String>,
}

impl RunSummary {
    /// Counts and recovery times from a finished run.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        run: u64,
        seed: u64,
        scenario: &str,
        network: String,
        network_notice: Option<String>,
        duration_s: f64,
        ops: &[OpRecord],
        faults: &[FaultEvent],
        check: CheckReport,
    ) -> RunSummary {
        let mut by_kind: BTreeMap<String, Counts> = BTreeMap::new();
        let mut final_reads = Counts::default();
        let mut reasons: BTreeMap<String, u64> = BTreeMap::new();
        let (mut with_header, mut mismatches) = (0, 0);
        for op in ops {
            match op.phase {
                Phase::Workload => by_kind
                    .entry(op.kind.name().to_string())
                    .or_default()
                    .add(&op.outcome),
                Phase::Final => final_reads.add(&op.outcome),
            }
            with_header += u64::from(op.served_by.is_some());
            mismatches += u64::from(op.served_by.is_some_and(|n| n != op.node));
            let reason = match &op.outcome {
                Outcome::Ok { .. } => None,
                Outcome::Fail { reason } => Some(format!("fail: {}", reason_class(reason))),
                Outcome::Unknown { reason } => Some(format!("unknown: {}", reason_class(reason))),
            };
            if let Some(r) = reason {
                *reasons.entry(r).or_default() += 1;
            }
        }
        let mut fault_counts: BTreeMap<String, FaultCounts> = BTreeMap::new();
        for f in faults {
            let c = fault_counts.entry(f.kind.name().to_string()).or_default();
            c.total += 1;
            c.on_leader += u64::from(f.was_leader);
        }
        RunSummary {
            run,
            seed,
            scenario: scenario.to_string(),
            network,
            network_notice,
            duration_s,
            ops: by_kind,
            final_reads,
            answers_with_node_header: with_header,
            node_header_mismatches: mismatches,
            reasons,
            faults: fault_counts,
            recovery_ms: recovery_times(ops, faults),
            check,
            kept: None,
        }
    }

    /// All workload operations.
    pub fn ops_total(&self) -> Counts {
        let mut c = Counts::default();
        for v in self.ops.values() {
            c.merge(v);
        }
        c
    }

    /// All faults injected.
    pub fn faults_total(&self) -> u64 {
        self.faults.values().map(|c| c.total).sum()
    }

    /// The report of one run, for people.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "run {} | scenario {} | seed {} | {:.0} s | {}",
            self.run, self.scenario, self.seed, self.duration_s, self.network
        );
        if let Some(n) = &self.network_notice {
            let _ = writeln!(out, "  NOTE: {n}");
        }
        out.push_str(&render_ops(&self.ops, &self.final_reads));
        out.push_str(&render_faults(&self.faults));
        out.push_str(&render_recovery(&self.recovery_ms));
        if !self.reasons.is_empty() {
            let top: Vec<String> = top_reasons(&self.reasons, 6);
            let _ = writeln!(out, "  not ok:    {}", top.join(", "));
        }
        let _ = writeln!(
            out,
            "  answers with x-raftkv-node: {} ({} naming another node than the one asked)",
            self.answers_with_node_header, self.node_header_mismatches
        );
        let c = &self.check;
        let _ = writeln!(
            out,
            "  checked:   {} ops on {} keys ({} unknown writes; {} stale reads recorded, not checked), {} checker steps",
            c.ops_checked, c.keys, c.unknown_writes, c.stale_reads, c.steps
        );
        let _ = writeln!(out, "  verdict:   {}", verdict_text(c.verdict));
        if let Some(e) = &c.explanation {
            for line in e.lines() {
                let _ = writeln!(out, "    {line}");
            }
        }
        if let Some(k) = &self.kept {
            let _ = writeln!(
                out,
                "  kept:      {k} (server logs, history.json, summary.json)"
            );
        }
        out
    }
}

fn verdict_text(v: Verdict) -> &'static str {
    match v {
        Verdict::Linearizable => "PASS (linearizable, no acknowledged write lost)",
        Verdict::NotLinearizable => "FAIL",
        Verdict::Inconclusive => "INCONCLUSIVE (checker budget exhausted)",
    }
}

/// Drops addresses and numbers from a reason so equal causes count together.
fn reason_class(reason: &str) -> String {
    if let Some(rest) = reason.strip_prefix("HTTP ") {
        return format!("HTTP {rest}");
    }
    if reason.starts_with("not sent") {
        return "not sent (connect failed)".into();
    }
    if reason.contains("within") {
        return "timeout".into();
    }
    if reason.contains("closed") || reason.contains("reset") || reason.contains("read:") {
        return "connection lost".into();
    }
    reason.split(':').next().unwrap_or(reason).to_string()
}

fn top_reasons(reasons: &BTreeMap<String, u64>, n: usize) -> Vec<String> {
    let mut v: Vec<(&String, &u64)> = reasons.iter().collect();
    v.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    v.into_iter()
        .take(n)
        .map(|(r, c)| format!("{c} {r}"))
        .collect()
}

fn render_ops(ops: &BTreeMap<String, Counts>, final_reads: &Counts) -> String {
    let mut total = Counts::default();
    let mut parts = Vec::new();
    for (k, c) in ops {
        total.merge(c);
        parts.push(format!("{k} {}/{}/{}", c.ok, c.fail, c.unknown));
    }
    format!(
        "  ops:       {} ({} ok, {} fail, {} unknown); by kind ok/fail/unknown: {}; final reads {}/{}/{}\n",
        total.total(),
        total.ok,
        total.fail,
        total.unknown,
        parts.join(", "),
        final_reads.ok,
        final_reads.fail,
        final_reads.unknown
    )
}

fn render_faults(faults: &BTreeMap<String, FaultCounts>) -> String {
    let total: u64 = faults.values().map(|c| c.total).sum();
    let parts: Vec<String> = FaultKind::ALL
        .iter()
        .filter_map(|k| {
            faults
                .get(k.name())
                .map(|c| format!("{} {} ({} on the leader)", k.name(), c.total, c.on_leader))
        })
        .collect();
    format!("  faults:    {total}: {}\n", parts.join(", "))
}

fn render_recovery(recovery: &BTreeMap<String, Vec<u64>>) -> String {
    let mut out = String::new();
    for k in FaultKind::ALL {
        let Some(times) = recovery.get(k.name()) else {
            continue;
        };
        let _ = writeln!(
            out,
            "  recovery after a leader {:<15} {}",
            format!("{}:", k.name()),
            describe_times(times)
        );
    }
    out
}

/// `median X ms, max Y ms (n = N)`.
pub fn describe_times(times: &[u64]) -> String {
    if times.is_empty() {
        return "no samples".into();
    }
    let mut t = times.to_vec();
    t.sort_unstable();
    format!(
        "first acknowledged write after median {} ms, max {} ms (n = {})",
        t[(t.len() - 1) / 2],
        t[t.len() - 1],
        t.len()
    )
}

/// For each fault on the leader: milliseconds from its start to the
/// completion of the first write invoked after it that was acknowledged.
pub fn recovery_times(ops: &[OpRecord], faults: &[FaultEvent]) -> BTreeMap<String, Vec<u64>> {
    let mut out: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for f in faults.iter().filter(|f| f.was_leader) {
        let first = ops
            .iter()
            .filter(|o| o.phase == Phase::Workload && o.kind.is_write())
            .filter(|o| matches!(o.outcome, Outcome::Ok { .. }) && o.invoke_us >= f.start_us)
            .map(|o| o.complete_us)
            .min();
        if let Some(done) = first {
            out.entry(f.kind.name().to_string())
                .or_default()
                .push((done - f.start_us) / 1000);
        }
    }
    out
}

/// Several runs together.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Totals {
    pub runs: u64,
    pub passed: u64,
    pub failed: u64,
    pub inconclusive: u64,
    pub ops: Counts,
    pub faults: BTreeMap<String, FaultCounts>,
    pub recovery_ms: BTreeMap<String, Vec<u64>>,
}

impl Totals {
    /// Sums `runs`.
    pub fn of(runs: &[RunSummary]) -> Totals {
        let mut t = Totals {
            runs: runs.len() as u64,
            passed: 0,
            failed: 0,
            inconclusive: 0,
            ops: Counts::default(),
            faults: BTreeMap::new(),
            recovery_ms: BTreeMap::new(),
        };
        for r in runs {
            match r.check.verdict {
                Verdict::Linearizable => t.passed += 1,
                Verdict::NotLinearizable => t.failed += 1,
                Verdict::Inconclusive => t.inconclusive += 1,
            }
            t.ops.merge(&r.ops_total());
            for (k, c) in &r.faults {
                let e = t.faults.entry(k.clone()).or_default();
                e.total += c.total;
                e.on_leader += c.on_leader;
            }
            for (k, v) in &r.recovery_ms {
                t.recovery_ms.entry(k.clone()).or_default().extend(v);
            }
        }
        t
    }

    /// The totals, for people.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{} run(s): {} passed, {} failed, {} inconclusive",
            self.runs, self.passed, self.failed, self.inconclusive
        );
        let _ = writeln!(
            out,
            "  ops:       {} ({} ok, {} fail, {} unknown)",
            self.ops.total(),
            self.ops.ok,
            self.ops.fail,
            self.ops.unknown
        );
        out.push_str(&render_faults(&self.faults));
        out.push_str(&render_recovery(&self.recovery_ms));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::{OpKind, OpResult};

    fn write(invoke: u64, complete: u64, ok: bool) -> OpRecord {
        OpRecord {
            client: 1,
            key: "k0".into(),
            kind: OpKind::Put { value: "v".into() },
            node: 1,
            invoke_us: invoke,
            complete_us: complete,
            outcome: if ok {
                Outcome::Ok {
                    result: OpResult::Put,
                }
            } else {
                Outcome::Unknown {
                    reason: "no answer within 8s".into(),
                }
            },
            status: None,
            served_by: None,
            phase: Phase::Workload,
        }
    }

    #[test]
    fn recovery_is_measured_to_the_first_acknowledged_write_after_the_fault() {
        let faults = [
            FaultEvent {
                kind: FaultKind::Kill,
                node: 1,
                was_leader: true,
                start_us: 1_000_000,
                end_us: 2_000_000,
            },
            FaultEvent {
                kind: FaultKind::Pause,
                node: 2,
                was_leader: false,
                start_us: 5_000_000,
                end_us: 6_000_000,
            },
        ];
        let ops = vec![
            write(900_000, 3_000_000, true),    // invoked before: ignored
            write(1_100_000, 1_900_000, false), // not acknowledged
            write(1_200_000, 2_500_000, true),
            write(1_300_000, 2_200_000, true), // the first to complete
        ];
        let r = recovery_times(&ops, &faults);
        assert_eq!(r.get("kill"), Some(&vec![1200]));
        assert_eq!(r.get("pause"), None, "not the leader: not measured");
        assert_eq!(
            describe_times(&[300, 100, 200]),
            "first acknowledged write after median 200 ms, max 300 ms (n = 3)"
        );
    }

    #[test]
    fn reasons_are_grouped() {
        assert_eq!(
            reason_class("not sent: connect 1.2.3.4:7: refused"),
            "not sent (connect failed)"
        );
        assert_eq!(
            reason_class("10.0.0.1:7000: no answer within 8s"),
            "timeout"
        );
        assert_eq!(reason_class("HTTP 503 no_leader"), "HTTP 503 no_leader");
    }
}
