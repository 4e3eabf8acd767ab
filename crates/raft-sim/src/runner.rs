//! Runs many seeds on several threads and collects the violations.

use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::checker::Violation;
use crate::config::SimConfig;
use crate::sim::{run, LinVerdict};

/// A seed that broke an invariant.
#[derive(Clone, Debug)]
pub struct Failure {
    /// The exact configuration of the run (replay it with this).
    pub config: SimConfig,
    pub violation: Violation,
}

impl Failure {
    /// One line: seed, check, replay command.
    pub fn summary(&self) -> String {
        format!(
            "seed {} violated {}: {}\n  replay: {}",
            self.config.seed,
            self.violation.check,
            self.violation.message.lines().next().unwrap_or(""),
            self.config.replay_command()
        )
    }
}

/// Totals of a multi-seed run.
#[derive(Clone, Debug, Default)]
pub struct ManyOutcome {
    pub seeds_run: u64,
    pub events: u64,
    pub deliveries: u64,
    pub ops_completed: u64,
    /// Seeds whose linearizability check ran out of budget.
    pub linearizability_unknown: u64,
    /// Failures, sorted by seed.
    pub failures: Vec<Failure>,
    pub elapsed: Duration,
}

/// Runs every seed of `seeds` with `base` (its `seed` field is replaced) on
/// `threads` threads. With `stop_at_first`, seeds after the lowest failing
/// one are skipped (the lowest failing seed is still found exactly: it does
/// not depend on thread timing). `progress` is called after every seed.
pub fn run_many(
    base: &SimConfig,
    seeds: Range<u64>,
    threads: usize,
    stop_at_first: bool,
    progress: &(dyn Fn(u64) + Sync),
) -> ManyOutcome {
    let start = Instant::now();
    let next = AtomicU64::new(seeds.start);
    let limit = AtomicU64::new(seeds.end);
    let total = Mutex::new(ManyOutcome::default());
    std::thread::scope(|s| {
        for _ in 0..threads.max(1) {
            s.spawn(|| {
                let mut mine = ManyOutcome::default();
                loop {
                    let seed = next.fetch_add(1, Ordering::Relaxed);
                    if seed >= limit.load(Ordering::Relaxed) {
                        break;
                    }
                    let mut cfg = base.clone();
                    cfg.seed = seed;
                    let out = run(&cfg);
                    mine.seeds_run += 1;
                    mine.events += out.stats.events;
                    mine.deliveries += out.stats.deliveries;
                    mine.ops_completed += out.stats.ops_completed;
                    if out.linearizability == LinVerdict::Unknown {
                        mine.linearizability_unknown += 1;
                    }
                    if let Some(v) = out.violation {
                        if stop_at_first {
                            limit.fetch_min(seed + 1, Ordering::Relaxed);
                        }
                        mine.failures.push(Failure {
                            config: cfg,
                            violation: v,
                        });
                    }
                    progress(1);
                }
                // A poisoned lock means another worker panicked outside the
                // simulation's catch_unwind: propagate that panic.
                let mut t = total.lock().expect("worker panicked");
                t.seeds_run += mine.seeds_run;
                t.events += mine.events;
                t.deliveries += mine.deliveries;
                t.ops_completed += mine.ops_completed;
                t.linearizability_unknown += mine.linearizability_unknown;
                t.failures.extend(mine.failures);
            });
        }
    });
    let mut out = total.into_inner().expect("worker panicked");
    out.failures.sort_by_key(|f| f.config.seed);
    if stop_at_first {
        out.failures.truncate(1);
    }
    out.elapsed = start.elapsed();
    out
}
