//! One short `mixed` run of the fault test against a real three-node
//! cluster (network namespaces when run as root, else loopback with kill
//! and pause faults only): about a minute in all.
//!
//! The `raftkv` binary comes from `cargo build -p raftkv` with this test's
//! profile (a no-op when `cargo test --workspace` already built it), or from
//! `RAFTKV_BIN` if set.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use raftkv_chaos::{run_once, RunConfig, Scenario, Verdict};

/// Fixed, so a failure here replays with
/// `cargo run --release -p raftkv-chaos -- --seed 20261128 --duration 40`.
const SEED: u64 = 20_261_128;

#[test]
fn a_short_mixed_run_is_linearizable() {
    let explicit = std::env::var_os("RAFTKV_BIN").map(PathBuf::from);
    let bin = raftkv_chaos::locate::raftkv_binary(explicit, |s| eprintln!("{s}"))
        .unwrap_or_else(|e| panic!("no raftkv binary: {e}"));
    let mut cfg = RunConfig::new(Scenario::Mixed, SEED, bin);
    cfg.duration = Duration::from_secs(40);
    cfg.work_dir = std::env::temp_dir().join("raftkv-chaos-test");
    for r in raftkv_chaos::run::cleanup_stale(&cfg.work_dir) {
        eprintln!("removed a leftover of an earlier, killed run: {r}");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    // Never cancelled: the sender lives until the run is over.
    let (_cancel_tx, cancel) = tokio::sync::watch::channel(false);
    let started = Instant::now();
    let summary = runtime
        .block_on(run_once(&cfg, cancel, &|s| eprintln!("{s}")))
        .unwrap_or_else(|e| panic!("the run could not complete: {e}"));
    let report = summary.render();
    eprintln!("{report}\n(took {:.0?})", started.elapsed());

    assert_eq!(summary.check.verdict, Verdict::Linearizable, "{report}");
    assert!(summary.faults_total() >= 4, "too few faults: {report}");
    let on_leader: u64 = summary.faults.values().map(|c| c.on_leader).sum();
    assert!(on_leader >= 2, "too few faults hit the leader: {report}");
    let ops = summary.ops_total();
    assert!(ops.ok >= 500, "too few operations completed: {report}");
    let writes_ok: u64 = ["put", "cas", "delete"]
        .iter()
        .filter_map(|k| summary.ops.get(*k))
        .map(|c| c.ok)
        .sum();
    assert!(writes_ok >= 100, "too few writes acknowledged: {report}");
    // Every key and the heartbeat key read back after healing.
    assert_eq!(summary.final_reads.ok, cfg.keys + 1, "{report}");
    assert!(summary.check.ops_checked >= 500, "{report}");
}
