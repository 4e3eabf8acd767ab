//! The run's timeline: a running hash of every event (always, for the
//! determinism check) and, when asked, a readable list of the interesting
//! ones (for `replay`, also written as JSON).

use std::fmt;

use serde::Serialize;

use crate::config::Micros;
use crate::rng::FNV_OFFSET;

/// One line of the readable timeline.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TraceEvent {
    /// Virtual time, microseconds.
    pub time_us: Micros,
    /// What happened.
    pub what: TraceKind,
}

/// What happened at one point of the timeline.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum TraceKind {
    /// Run parameters and which pieces are stand-ins.
    Start { description: String },
    /// The run moved to another phase (faults, liveness, end).
    Phase { name: String },
    /// A node's role, term or known leader changed.
    Role {
        node: u64,
        role: String,
        term: u64,
        leader: Option<u64>,
    },
    /// A leader's commit index advanced (with the configuration in force).
    Commit {
        node: u64,
        index: u64,
        config: String,
    },
    /// A node crashed; `lost_writes` Readies were not yet durable.
    Crash {
        node: u64,
        lost_writes: usize,
        reason: String,
    },
    /// A node restarted from its durable state.
    Restart {
        node: u64,
        term: u64,
        commit: u64,
        snapshot: u64,
    },
    /// A node's outgoing messages are slow for a while.
    SlowLink {
        node: u64,
        until_us: Micros,
        extra_us: Micros,
    },
    /// A node was paused (a long GC pause, SIGSTOP); its clock runs on.
    /// `drops_ticks`: it will drop the ticks it misses instead of firing
    /// them at resume.
    Pause {
        node: u64,
        until_us: Micros,
        drops_ticks: bool,
    },
    /// A node's monotonic clock jumped forward by `by_us`.
    ClockJump { node: u64, by_us: Micros },
    /// A paused node resumed.
    Resume { node: u64 },
    /// The network was split; `cut` lists the directed links cut.
    Partition { kind: String, cut: Vec<(u64, u64)> },
    /// Every link works again.
    Heal,
    /// A message was lost (random loss or a cut link).
    Drop {
        from: u64,
        to: u64,
        msg: String,
        reason: String,
    },
    /// A message was duplicated.
    Duplicate { from: u64, to: u64, msg: String },
    /// A disk fault was armed on a node (its next write or fsync fails).
    DiskFault { node: u64, fault: String },
    /// A node's store failed (an injected fault hit): the node stops.
    StorageFailed { node: u64, error: String },
    /// A membership change was asked of the leader.
    Membership {
        leader: u64,
        change: String,
        result: String,
    },
    /// A leadership transfer was asked of the leader.
    Transfer {
        leader: u64,
        to: u64,
        result: String,
    },
    /// A node compacted its log into a snapshot.
    Compact { node: u64, index: u64 },
    /// A node installed a snapshot from its leader.
    InstallSnapshot { node: u64, index: u64 },
    /// A node's durable state machine completed a checkpoint at `index`.
    Checkpoint { node: u64, index: u64 },
    /// A snapshot stream of a durable state machine (start, end, failure).
    SnapshotStream { from: u64, to: u64, what: String },
    /// A client invoked an operation.
    Invoke {
        client: u64,
        op: u64,
        what: String,
        node: u64,
    },
    /// A client retried an operation at another node.
    Retry {
        client: u64,
        op: u64,
        node: u64,
        why: String,
    },
    /// A client got its answer.
    Complete {
        client: u64,
        op: u64,
        result: String,
    },
    /// An invariant broke.
    Violation { check: String, message: String },
}

impl fmt::Display for TraceEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let t = self.time_us as f64 / 1000.0;
        write!(f, "{t:>10.3}ms  ")?;
        match &self.what {
            TraceKind::Start { description } => write!(f, "start: {description}"),
            TraceKind::Phase { name } => write!(f, "=== phase: {name} ==="),
            TraceKind::Role {
                node,
                role,
                term,
                leader,
            } => match leader {
                Some(l) if *l == *node => write!(f, "n{node} LEADS term {term}"),
                Some(l) => write!(f, "n{node} {role} in term {term}, leader n{l}"),
                None => write!(f, "n{node} {role} in term {term}, no leader"),
            },
            TraceKind::Commit {
                node,
                index,
                config,
            } => {
                write!(
                    f,
                    "n{node} (leader) committed up to {index}; config {config}"
                )
            }
            TraceKind::Crash {
                node,
                lost_writes,
                reason,
            } => {
                write!(
                    f,
                    "n{node} CRASHED ({reason}), {lost_writes} unsynced writes lost"
                )
            }
            TraceKind::Restart {
                node,
                term,
                commit,
                snapshot,
            } => write!(
                f,
                "n{node} restarted: term {term}, commit {commit}, snapshot {snapshot}"
            ),
            TraceKind::Pause {
                node,
                until_us,
                drops_ticks,
            } => write!(
                f,
                "n{node} paused until {:.3}ms ({})",
                *until_us as f64 / 1000.0,
                if *drops_ticks {
                    "drops the ticks it misses"
                } else {
                    "fires missed ticks at resume"
                }
            ),
            TraceKind::ClockJump { node, by_us } => write!(
                f,
                "n{node}'s clock jumped forward by {:.3}ms",
                *by_us as f64 / 1000.0
            ),
            TraceKind::Resume { node } => write!(f, "n{node} resumed"),
            TraceKind::SlowLink {
                node,
                until_us,
                extra_us,
            } => write!(
                f,
                "n{node}'s outgoing messages delayed by {:.3}ms until {:.3}ms",
                *extra_us as f64 / 1000.0,
                *until_us as f64 / 1000.0
            ),
            TraceKind::Partition { kind, cut } => {
                write!(f, "PARTITION ({kind}), cut links:")?;
                for (a, b) in cut {
                    write!(f, " {a}->{b}")?;
                }
                Ok(())
            }
            TraceKind::Heal => write!(f, "network healed"),
            TraceKind::Drop {
                from,
                to,
                msg,
                reason,
            } => {
                write!(f, "dropped {msg} n{from}->n{to} ({reason})")
            }
            TraceKind::Duplicate { from, to, msg } => write!(f, "duplicated {msg} n{from}->n{to}"),
            TraceKind::DiskFault { node, fault } => write!(f, "n{node}: {fault}"),
            TraceKind::StorageFailed { node, error } => {
                write!(f, "n{node}: STORAGE FAILED ({error}); the node stops")
            }
            TraceKind::Membership {
                leader,
                change,
                result,
            } => {
                write!(
                    f,
                    "membership change {change} at leader n{leader}: {result}"
                )
            }
            TraceKind::Transfer { leader, to, result } => {
                write!(f, "leadership transfer n{leader} -> n{to}: {result}")
            }
            TraceKind::Compact { node, index } => write!(f, "n{node} compacted log up to {index}"),
            TraceKind::InstallSnapshot { node, index } => {
                write!(f, "n{node} installed snapshot at {index}")
            }
            TraceKind::Checkpoint { node, index } => {
                write!(f, "n{node} checkpointed its state machine at {index}")
            }
            TraceKind::SnapshotStream { from, to, what } => {
                write!(f, "snapshot stream n{from}->n{to} {what}")
            }
            TraceKind::Invoke {
                client,
                op,
                what,
                node,
            } => {
                write!(f, "client c{client} op#{op} invokes {what} at n{node}")
            }
            TraceKind::Retry {
                client,
                op,
                node,
                why,
            } => {
                write!(f, "client c{client} op#{op} retries at n{node} ({why})")
            }
            TraceKind::Complete { client, op, result } => {
                write!(f, "client c{client} op#{op} -> {result}")
            }
            TraceKind::Violation { check, message } => {
                write!(f, "!!! VIOLATION [{check}]: {message}")
            }
        }
    }
}

/// Records the timeline and hashes every event.
#[derive(Debug)]
pub struct Trace {
    hash: u64,
    events: Option<Vec<TraceEvent>>,
}

impl Trace {
    /// A trace that hashes always and keeps events only if `record`.
    pub fn new(record: bool) -> Self {
        Trace {
            hash: FNV_OFFSET,
            events: record.then(Vec::new),
        }
    }

    /// True if readable events are kept (callers skip formatting otherwise).
    pub fn recording(&self) -> bool {
        self.events.is_some()
    }

    /// Mixes raw words into the hash.
    pub fn mix(&mut self, words: &[u64]) {
        // One multiply per word (it runs for every event): an FNV-style step
        // on whole words, with a rotation so that high bits feed back.
        for &w in words {
            self.hash = (self.hash ^ w)
                .wrapping_mul(0x0000_0100_0000_01B3)
                .rotate_left(29);
        }
    }

    /// Adds a readable event (and hashes its kind's text).
    pub fn push(&mut self, time_us: Micros, what: TraceKind) {
        if let Some(events) = &mut self.events {
            events.push(TraceEvent { time_us, what });
        }
    }

    /// The hash of everything that happened so far.
    pub fn hash(&self) -> u64 {
        self.hash
    }

    /// The readable events (empty unless recording).
    pub fn into_events(self) -> Vec<TraceEvent> {
        self.events.unwrap_or_default()
    }
}
