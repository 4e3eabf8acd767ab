//! Proof that the simulator has teeth: with each planted bug switched on,
//! in the engine (raft-core) or in the host layer the server runs
//! (raft-host), the checkers find a violation within 2,000 seeds.
//! Runs only with `cargo test -p raft-sim --features planted-bugs`.
//!
//! Every hunt uses the default configuration (every fault, a fault profile
//! drawn per seed) and stops at the first failing seed, so a bug caught
//! early costs little. The lowest failing seed does not depend on thread
//! timing, so the counts printed are reproducible. Seeds are shorter than
//! the CLI's default (`STEPS`) to keep this test within the CI budget in
//! debug builds; the bound asserted is still the 2,000 seeds.

use raft_core::Bug;
use raft_sim::{run_many, BugKind, PlantedBug, SimConfig};

/// The budget the issue allows per bug.
const SEEDS_MAX: u64 = 2_000;

/// Events per seed in the fault phase.
const STEPS: u64 = 2_000;

/// Hunts `bug` on `nodes` voters (on every node, or on n1 only); returns
/// the number of seeds it took and what was violated.
fn hunt(bug: BugKind, nodes: usize, on_one_node: bool) -> (u64, String) {
    let mut cfg = SimConfig::new(0, nodes);
    cfg.steps = STEPS;
    cfg.bug = Some(PlantedBug {
        bug,
        node: on_one_node.then_some(1),
    });
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let out = run_many(&cfg, 0..SEEDS_MAX, threads, true, &|_| {});
    match out.failures.first() {
        Some(f) => (
            f.config.seed + 1,
            format!(
                "{}: {}",
                f.violation.check,
                f.violation.message.lines().next().unwrap_or("")
            ),
        ),
        None => panic!("{bug:?} ({nodes} nodes) was not caught within {SEEDS_MAX} seeds"),
    }
}

#[test]
fn every_planted_bug_is_caught_within_2000_seeds() {
    let mut report = Vec::new();
    for bug in BugKind::all() {
        let (seeds, what) = hunt(bug, 5, false);
        report.push(format!("{bug:?}: caught after {seeds} seeds ({what})"));
    }
    for line in &report {
        println!("{line}");
    }
}

#[test]
fn a_bug_on_a_single_node_is_caught_too() {
    // Bugs in a voter's vote handling need only one faulty node.
    let (seeds, what) = hunt(BugKind::Core(Bug::VoteWithoutUpToDateCheck), 3, true);
    println!("VoteWithoutUpToDateCheck on n1 only: caught after {seeds} seeds ({what})");
}
