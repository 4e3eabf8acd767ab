//! Simulator throughput on one core: `cargo bench -p raft-sim --bench simulator`.
//!
//! Runs 5-node seeds of 1,000 steps each (every fault enabled) on a single
//! thread and reports simulated message deliveries per second, events per
//! second and seeds per minute. `RAFT_SIM_BENCH_SEEDS` sets the number of
//! seeds (default 2,000).

use std::time::Instant;

use raft_sim::{run, SimConfig};

fn main() {
    // `cargo bench` passes `--bench`; any other argument is a filter we ignore.
    let seeds: u64 = std::env::var("RAFT_SIM_BENCH_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2_000);
    for (nodes, steps) in [(5, 1_000), (5, 3_000)] {
        let start = Instant::now();
        let (mut deliveries, mut events, mut violations) = (0u64, 0u64, 0u64);
        for seed in 0..seeds {
            let mut cfg = SimConfig::new(seed, nodes);
            cfg.steps = steps;
            let out = run(&cfg);
            deliveries += out.stats.deliveries;
            events += out.stats.events;
            violations += u64::from(out.violation.is_some());
        }
        let secs = start.elapsed().as_secs_f64();
        println!(
            "{nodes} nodes, {steps} steps/seed, {seeds} seeds on 1 core: {:.0} deliveries/s, {:.0} events/s, {:.0} seeds/min ({violations} violations, {:.1}s)",
            deliveries as f64 / secs,
            events as f64 / secs,
            seeds as f64 * 60.0 / secs,
            secs
        );
    }
}
