//! Simulator throughput on one core: `cargo bench -p raft-sim --bench simulator`.
//!
//! Runs 5-node seeds of 1,000 and 3,000 steps (every fault enabled) on a
//! single thread, with the real storage engine over the simulated disk and
//! with the in-memory stand-in, and reports simulated message deliveries per
//! second, events per second and seeds per minute. Rates are given per
//! second of this thread's CPU time (read from `/proc/thread-self/schedstat`
//! on Linux), so that they measure one core even on a busy machine; the
//! wall-clock time is printed beside them. `RAFT_SIM_BENCH_SEEDS` sets the
//! number of seeds (default 2,000).

use std::time::Instant;

use raft_sim::{run, SimConfig, StorageKind};

/// CPU time this thread has run, in seconds (`None` where unavailable).
fn thread_cpu_secs() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let ns: u64 = s.split_whitespace().next()?.parse().ok()?;
    Some(ns as f64 / 1e9)
}

fn main() {
    // `cargo bench` passes `--bench`; any other argument is a filter we ignore.
    let seeds: u64 = std::env::var("RAFT_SIM_BENCH_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2_000);
    for storage in [StorageKind::Disk, StorageKind::Mem] {
        for (nodes, steps) in [(5, 1_000), (5, 3_000)] {
            let start = Instant::now();
            let cpu_start = thread_cpu_secs();
            let (mut deliveries, mut events, mut violations) = (0u64, 0u64, 0u64);
            for seed in 0..seeds {
                let mut cfg = SimConfig::new(seed, nodes);
                cfg.steps = steps;
                cfg.storage = storage;
                let out = run(&cfg);
                deliveries += out.stats.deliveries;
                events += out.stats.events;
                violations += u64::from(out.violation.is_some());
            }
            let wall = start.elapsed().as_secs_f64();
            let cpu = match (cpu_start, thread_cpu_secs()) {
                (Some(a), Some(b)) if b > a => b - a,
                _ => wall,
            };
            println!(
                "--storage {storage}, {nodes} nodes, {steps} steps/seed, {seeds} seeds on 1 core: \
                 {:.0} deliveries/s, {:.0} events/s, {:.0} seeds/min per CPU second \
                 ({deliveries} deliveries, {events} events, {violations} violations, \
                 {cpu:.1}s CPU, {wall:.1}s wall)",
                deliveries as f64 / cpu,
                events as f64 / cpu,
                seeds as f64 * 60.0 / cpu,
            );
        }
    }
}
