//! What the clients did: one record per operation, with its invoke and
//! complete times and how it ended, plus the faults the nemesis injected.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde::{Deserialize, Serialize};

/// The consistency a read asked for (`?consistency=`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReadConsistency {
    /// ReadIndex, confirmed with a quorum (the default).
    Linearizable,
    /// Served by the leader under its lease.
    Lease,
    /// Served locally by whichever node answers; may be stale by contract.
    Stale,
}

impl ReadConsistency {
    /// The query parameter value.
    pub fn as_str(self) -> &'static str {
        match self {
            ReadConsistency::Linearizable => "linearizable",
            ReadConsistency::Lease => "lease",
            ReadConsistency::Stale => "stale",
        }
    }
}

/// What a client asked for, on one key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum OpKind {
    /// `PUT /v1/kv/{key}` with `value`.
    Put { value: String },
    /// `GET /v1/kv/{key}?consistency=...`.
    Get { consistency: ReadConsistency },
    /// `DELETE /v1/kv/{key}`.
    Delete,
    /// `POST /v1/kv/{key}/cas`: if the key holds `expected` (`None`:
    /// absent), set it to `new` (`None`: delete it).
    Cas {
        expected: Option<String>,
        new: Option<String>,
    },
}

impl OpKind {
    /// True for put, delete and compare-and-swap.
    pub fn is_write(&self) -> bool {
        !matches!(self, OpKind::Get { .. })
    }

    /// A short name for counting: `put`, `get`, `get_lease`, `get_stale`,
    /// `delete`, `cas`.
    pub fn name(&self) -> &'static str {
        match self {
            OpKind::Put { .. } => "put",
            OpKind::Get {
                consistency: ReadConsistency::Linearizable,
            } => "get",
            OpKind::Get {
                consistency: ReadConsistency::Lease,
            } => "get_lease",
            OpKind::Get {
                consistency: ReadConsistency::Stale,
            } => "get_stale",
            OpKind::Delete => "delete",
            OpKind::Cas { .. } => "cas",
        }
    }

    /// The value this operation may store, if it writes one.
    pub fn written_value(&self) -> Option<&str> {
        match self {
            OpKind::Put { value } => Some(value),
            OpKind::Cas { new: Some(v), .. } => Some(v),
            _ => None,
        }
    }
}

/// What a completed operation returned.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum OpResult {
    /// The put was applied.
    Put,
    /// The value read (`None`: 404 key_not_found).
    Value { value: Option<String> },
    /// The delete was applied; `existed` is false for a 404 key_not_found.
    Deleted { existed: bool },
    /// The compare-and-swap swapped.
    Swapped,
    /// 409 cas_mismatch: the condition did not hold; the key held `current`.
    CasMismatch { current: Option<String> },
}

impl OpResult {
    /// The value this answer shows the key holding, if it shows one.
    pub fn observed_value(&self) -> Option<&Option<String>> {
        match self {
            OpResult::Value { value } => Some(value),
            OpResult::CasMismatch { current } => Some(current),
            _ => None,
        }
    }
}

/// How an operation ended, as far as its client can tell.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Outcome {
    /// A definite answer.
    Ok { result: OpResult },
    /// Certainly not applied (refused before sending, a 4xx, a 5xx
    /// `not_applied`, or a failed read).
    Fail { reason: String },
    /// May or may not have taken effect (timeout, connection lost after
    /// sending, 5xx `indeterminate` or an unknown 5xx code on a write).
    Unknown { reason: String },
}

impl Outcome {
    /// `ok`, `fail` or `unknown`.
    pub fn name(&self) -> &'static str {
        match self {
            Outcome::Ok { .. } => "ok",
            Outcome::Fail { .. } => "fail",
            Outcome::Unknown { .. } => "unknown",
        }
    }
}

/// When an operation was issued.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// By a client while faults were being injected.
    Workload,
    /// The final linearizable read of every key, after everything healed.
    Final,
}

/// One operation, as recorded.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpRecord {
    /// Which client issued it (final reads use [`FINAL_CLIENT`]).
    pub client: u64,
    /// The key.
    pub key: String,
    /// What was asked.
    #[serde(flatten)]
    pub kind: OpKind,
    /// The node the request was sent to.
    pub node: u64,
    /// Microseconds since the run started, when the request was issued.
    pub invoke_us: u64,
    /// Microseconds since the run started, when the client gave up waiting
    /// or got the answer.
    pub complete_us: u64,
    /// How it ended.
    #[serde(flatten)]
    pub outcome: Outcome,
    /// HTTP status, when an answer came.
    pub status: Option<u16>,
    /// `x-raftkv-node` of the answer (the node that answered), when
    /// present.
    pub served_by: Option<u64>,
    /// Workload or final read.
    pub phase: Phase,
}

/// Client id of the final reads.
pub const FINAL_CLIENT: u64 = 1_000_000;

/// The kinds of fault the nemesis injects.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultKind {
    /// SIGKILL, then restart from the same data directory.
    Kill,
    /// SIGSTOP for longer than an election timeout, then SIGCONT.
    Pause,
    /// Cut the node off from its peers (its port on the bridge goes down),
    /// then heal. Clients can still reach it.
    Isolate,
    /// Isolate and SIGSTOP, then heal and SIGCONT.
    PauseIsolated,
}

impl FaultKind {
    /// Every kind, in report order.
    pub const ALL: [FaultKind; 4] = [
        FaultKind::Kill,
        FaultKind::Pause,
        FaultKind::Isolate,
        FaultKind::PauseIsolated,
    ];

    /// A short name.
    pub fn name(self) -> &'static str {
        match self {
            FaultKind::Kill => "kill",
            FaultKind::Pause => "pause",
            FaultKind::Isolate => "isolate",
            FaultKind::PauseIsolated => "pause_isolated",
        }
    }

    /// True if this fault needs network namespaces.
    pub fn needs_network(self) -> bool {
        matches!(self, FaultKind::Isolate | FaultKind::PauseIsolated)
    }
}

/// One injected fault.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FaultEvent {
    /// What was done.
    pub kind: FaultKind,
    /// To which node.
    pub node: u64,
    /// Whether the node led (by its own status) when the fault started.
    pub was_leader: bool,
    /// Microseconds since the run started, when the fault was in place
    /// (the signal sent, the link down).
    pub start_us: u64,
    /// When it was healed (restart, SIGCONT, link up).
    pub end_us: u64,
}

/// The run's clock: microseconds since the run started (monotonic).
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    start: Instant,
}

impl Clock {
    /// A clock starting now.
    pub fn start() -> Clock {
        Clock {
            start: Instant::now(),
        }
    }

    /// Microseconds since the start.
    pub fn now_us(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_micros()).unwrap_or(u64::MAX)
    }
}

/// Where clients put their records (shared by every client task).
#[derive(Clone, Debug, Default)]
pub struct Recorder {
    ops: Arc<Mutex<Vec<OpRecord>>>,
}

impl Recorder {
    /// An empty recorder.
    pub fn new() -> Recorder {
        Recorder::default()
    }

    /// Adds one completed (or given-up) operation.
    pub fn record(&self, op: OpRecord) {
        // A poisoned lock means a client panicked while pushing; the vector
        // itself is still whole (push either happened or not).
        self.ops.lock().unwrap_or_else(|e| e.into_inner()).push(op);
    }

    /// Every record so far, sorted by invoke time.
    pub fn snapshot(&self) -> Vec<OpRecord> {
        let mut ops = self.ops.lock().unwrap_or_else(|e| e.into_inner()).clone();
        ops.sort_by_key(|o| (o.invoke_us, o.client));
        ops
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_serialize_flat_and_round_trip() {
        let op = OpRecord {
            client: 3,
            key: "k1".into(),
            kind: OpKind::Cas {
                expected: None,
                new: Some("v".into()),
            },
            node: 2,
            invoke_us: 10,
            complete_us: 20,
            outcome: Outcome::Ok {
                result: OpResult::CasMismatch {
                    current: Some("w".into()),
                },
            },
            status: Some(409),
            served_by: Some(1),
            phase: Phase::Workload,
        };
        let json = serde_json::to_value(&op).unwrap();
        assert_eq!(json["op"], "cas");
        assert_eq!(json["outcome"], "ok");
        assert_eq!(json["result"]["result"], "cas_mismatch");
        let back: OpRecord = serde_json::from_value(json).unwrap();
        assert_eq!(back, op);
    }

    #[test]
    fn recorder_sorts_by_invoke_time() {
        let r = Recorder::new();
        for (client, t) in [(1, 30), (2, 10), (3, 20)] {
            r.record(OpRecord {
                client,
                key: "k".into(),
                kind: OpKind::Delete,
                node: 1,
                invoke_us: t,
                complete_us: t + 1,
                outcome: Outcome::Fail { reason: "x".into() },
                status: None,
                served_by: None,
                phase: Phase::Workload,
            });
        }
        let clients: Vec<u64> = r.snapshot().iter().map(|o| o.client).collect();
        assert_eq!(clients, vec![2, 3, 1]);
    }
}
