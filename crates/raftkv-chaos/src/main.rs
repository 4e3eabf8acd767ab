//! `raftkv-chaos`: runs the fault test (see the crate docs and the README).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, ValueEnum};
use raftkv_chaos::{
    run_once, NetChoice, RunConfig, RunError, RunSummary, Scenario, Totals, Verdict,
};

#[derive(Clone, Copy, Debug, ValueEnum)]
enum ScenarioArg {
    /// SIGKILL, SIGSTOP, isolation and pause-while-isolated, mostly on the leader.
    Mixed,
    /// Repeatedly SIGSTOP the leader (sometimes cut off too) while clients
    /// write through the other nodes and read with leases everywhere.
    PauseLeaderLease,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum NetArg {
    /// Network namespaces if possible, else loopback (says so).
    Auto,
    /// Network namespaces, or fail.
    Netns,
    /// Loopback only: kill and pause faults, no isolation.
    Loopback,
}

/// Jepsen-style fault test of a real three-node raftkv cluster.
///
/// Exit status: 0 every run linearizable; 1 a run failed a check; 2 a run
/// was inconclusive or could not run; 130 interrupted.
#[derive(Parser, Debug)]
#[command(name = "raftkv-chaos", version)]
struct Args {
    /// Which faults to inject.
    #[arg(long, value_enum, default_value = "mixed")]
    scenario: ScenarioArg,
    /// Runs, each with a fresh cluster and seed; stops at the first failure.
    #[arg(long, default_value_t = 1)]
    runs: u64,
    /// Seed of the first run (later runs use seed+1, seed+2, ...); random
    /// if not given. Replays a run's fault schedule and client choices.
    #[arg(long)]
    seed: Option<u64>,
    /// Seconds of client load (faults happen within it) per run.
    #[arg(long, default_value_t = 30)]
    duration: u64,
    /// Concurrent sequential clients (plus one reader probe per node).
    #[arg(long, default_value_t = 6)]
    clients: u64,
    /// Keys k0..k{N-1}.
    #[arg(long, default_value_t = 5)]
    keys: u64,
    /// The raftkv binary (default: `cargo build -p raftkv` with this
    /// binary's profile, then target/<profile>/raftkv).
    #[arg(long)]
    raftkv_bin: Option<PathBuf>,
    /// How the nodes are connected.
    #[arg(long, value_enum, default_value = "auto")]
    net: NetArg,
    /// Where run directories go (kept for failed runs).
    #[arg(long)]
    work_dir: Option<PathBuf>,
    /// Timeout of reads and heartbeat writes, milliseconds (longer than any
    /// pause, so reads queued at a paused node are answered after it
    /// resumes).
    #[arg(long, default_value_t = 8000)]
    read_timeout_ms: u64,
    /// Timeout of the clients' writes, milliseconds (short, so clients stuck
    /// at a paused leader move on).
    #[arg(long, default_value_t = 2000)]
    write_timeout_ms: u64,
    /// Keep every run's directory (logs, history), not only failed ones.
    #[arg(long)]
    keep: bool,
    /// Send linearizable reads where lease reads would go (to test
    /// everything else while a lease bug is open).
    #[arg(long)]
    no_lease_reads: bool,
    /// Write a JSON summary of all runs here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Run nothing: check a history a run left behind (its history.json;
    /// faults.json next to it is used for the explanation if present).
    #[arg(long, value_name = "HISTORY_JSON")]
    check_history: Option<PathBuf>,
    /// Checker budget: model steps per key before giving up (inconclusive).
    #[arg(long, default_value_t = 20_000_000)]
    checker_steps: u64,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match real_main(args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn real_main(args: Args) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(args.runs >= 1, "--runs must be at least 1");
    anyhow::ensure!(
        (5..=3600).contains(&args.duration),
        "--duration must be 5..=3600 seconds"
    );
    anyhow::ensure!((1..=64).contains(&args.clients), "--clients must be 1..=64");
    anyhow::ensure!((1..=100).contains(&args.keys), "--keys must be 1..=100");
    anyhow::ensure!(
        (1000..=60_000).contains(&args.read_timeout_ms),
        "--read-timeout-ms must be 1000..=60000"
    );
    anyhow::ensure!(
        (500..=60_000).contains(&args.write_timeout_ms),
        "--write-timeout-ms must be 500..=60000"
    );
    if let Some(path) = &args.check_history {
        return check_history(path, args.checker_steps);
    }
    let say = |s: &str| eprintln!("{s}");
    let bin = raftkv_chaos::locate::raftkv_binary(args.raftkv_bin.clone(), say)
        .context("cannot find the raftkv binary")?;
    let work_dir = args
        .work_dir
        .clone()
        .unwrap_or_else(|| std::env::temp_dir().join("raftkv-chaos"));
    for r in raftkv_chaos::run::cleanup_stale(&work_dir) {
        eprintln!("removed a leftover of an earlier, killed run: {r}");
    }
    let scenario = match args.scenario {
        ScenarioArg::Mixed => Scenario::Mixed,
        ScenarioArg::PauseLeaderLease => Scenario::PauseLeaderLease,
    };
    let first_seed = args.seed.unwrap_or_else(random_seed);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let (cancel_tx, cancel) = tokio::sync::watch::channel(false);
    runtime.spawn(async move {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        for n in 0u32.. {
            let sigterm = async {
                match term.as_mut() {
                    Some(t) => t.recv().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                Some(()) = sigterm => {}
            }
            if n > 0 {
                // The nodes die with this process (their parent-death
                // signal); namespaces left behind are removed by the next run.
                eprintln!("interrupted again: exiting now");
                std::process::exit(130);
            }
            eprintln!("interrupted: stopping clients, healing and tearing down...");
            let _ = cancel_tx.send(true);
        }
    });

    let mut summaries: Vec<RunSummary> = Vec::new();
    let mut code = ExitCode::SUCCESS;
    for i in 0..args.runs {
        let mut cfg = RunConfig::new(scenario, first_seed.wrapping_add(i), bin.clone());
        cfg.run = i + 1;
        cfg.duration = Duration::from_secs(args.duration);
        cfg.clients = args.clients;
        cfg.keys = args.keys;
        cfg.work_dir = work_dir.clone();
        cfg.net = match args.net {
            NetArg::Auto => NetChoice::Auto,
            NetArg::Netns => NetChoice::Netns,
            NetArg::Loopback => NetChoice::Loopback,
        };
        cfg.read_timeout = Duration::from_millis(args.read_timeout_ms);
        cfg.write_timeout = Duration::from_millis(args.write_timeout_ms);
        cfg.keep = args.keep;
        cfg.checker_steps = args.checker_steps;
        cfg.lease_reads = !args.no_lease_reads;
        let result = runtime.block_on(run_once(&cfg, cancel.clone(), &say));
        match result {
            Ok(s) => {
                println!("{}", s.render());
                let verdict = s.check.verdict;
                summaries.push(s);
                match verdict {
                    Verdict::Linearizable => {}
                    Verdict::NotLinearizable => {
                        code = ExitCode::FAILURE;
                        println!(
                            "stopping at the first failure; replay with --seed {} --scenario {}",
                            cfg.seed,
                            scenario.name()
                        );
                        break;
                    }
                    Verdict::Inconclusive => code = ExitCode::from(2),
                }
            }
            Err(RunError::Cancelled) => {
                code = ExitCode::from(130);
                break;
            }
            Err(e) => {
                eprintln!("run {} (seed {}) could not run: {e}", cfg.run, cfg.seed);
                code = ExitCode::from(2);
                break;
            }
        }
    }
    // A check abandoned by Ctrl-C may still run on a blocking thread.
    runtime.shutdown_timeout(Duration::from_millis(200));
    let totals = Totals::of(&summaries);
    if summaries.len() > 1 {
        println!("{}", totals.render());
    }
    if let Some(path) = &args.json {
        let doc = serde_json::json!({ "totals": totals, "runs": summaries });
        std::fs::write(path, serde_json::to_vec_pretty(&doc)?)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(code)
}

/// `--check-history`: checks a saved history and prints the verdict.
fn check_history(path: &std::path::Path, steps: u64) -> anyhow::Result<ExitCode> {
    let read = |p: &std::path::Path| {
        std::fs::read(p).with_context(|| format!("cannot read {}", p.display()))
    };
    let ops: Vec<raftkv_chaos::history::OpRecord> = serde_json::from_slice(&read(path)?)
        .with_context(|| format!("{} is not a history", path.display()))?;
    let faults_path = path.with_file_name("faults.json");
    let faults: Vec<raftkv_chaos::history::FaultEvent> = if faults_path.is_file() {
        serde_json::from_slice(&read(&faults_path)?)
            .with_context(|| format!("{} is not a fault list", faults_path.display()))?
    } else {
        Vec::new()
    };
    let started = std::time::Instant::now();
    let report = raftkv_chaos::check::check(&ops, &faults, steps);
    println!(
        "{} operations, {} checked on {} keys, {} steps in {:.1?}: {:?}",
        ops.len(),
        report.ops_checked,
        report.keys,
        report.steps,
        started.elapsed(),
        report.verdict
    );
    if let Some(e) = &report.explanation {
        println!("{e}");
    }
    Ok(match report.verdict {
        Verdict::Linearizable => ExitCode::SUCCESS,
        Verdict::NotLinearizable => ExitCode::FAILURE,
        Verdict::Inconclusive => ExitCode::from(2),
    })
}

/// A seed from the clock and pid (not cryptographic; printed with every run).
fn random_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.finish() % 1_000_000_000
}
