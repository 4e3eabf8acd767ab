//! `raft-sim`: run many seeds, or replay one with a readable timeline.

use std::io::IsTerminal;
use std::ops::Range;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use raft_sim::{
    run, run_many, stand_ins, BugKind, Faults, PlantedBug, SimConfig, StateKind, StorageKind,
};

#[derive(Parser)]
#[command(
    name = "raft-sim",
    about = "Deterministic cluster simulator for raft-core"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run a range of seeds; exit code 0 only if none broke an invariant.
    Run {
        /// Seeds to run, as `A..B` (B excluded) or a single number.
        #[arg(long, default_value = "0..1000")]
        seeds: String,
        #[command(flatten)]
        common: Common,
        /// Worker threads (default: available cores).
        #[arg(long)]
        threads: Option<usize>,
        /// Stop at the first (lowest) failing seed.
        #[arg(long)]
        stop_at_first: bool,
    },
    /// Replay one seed and print its timeline and first violation.
    Replay {
        #[arg(long)]
        seed: u64,
        #[command(flatten)]
        common: Common,
        /// Also write the trace (timeline, history, outcome) as JSON here.
        #[arg(long)]
        json: Option<PathBuf>,
        /// Print only the summary, not the timeline.
        #[arg(long)]
        quiet: bool,
    },
}

#[derive(Args, Clone)]
struct Common {
    /// Voters the cluster starts with (1..=9).
    #[arg(long, default_value_t = 5)]
    nodes: usize,
    /// Events simulated in the fault phase of each seed.
    #[arg(long, default_value_t = 3000)]
    steps: u64,
    /// Faults: `all`, `none`, or a list such as `crash,partition,loss`
    /// (`all,-disk` removes one). Known: crash, partition, pause, loss,
    /// duplicate, delay, skew, disk, membership, transfer, compaction.
    #[arg(long, default_value = "all")]
    faults: String,
    /// Skip the liveness phase.
    #[arg(long)]
    no_liveness: bool,
    /// Switch on a planted bug (needs `--features planted-bugs`), e.g.
    /// `CommitEarlierTerm`.
    #[arg(long)]
    bug: Option<String>,
    /// Plant the bug on this node only (default: every node).
    #[arg(long)]
    bug_node: Option<u64>,
    /// Force one fault profile for every seed instead of drawing it:
    /// chaos, leader-churn, partitions, reconfig, elections, leases, figure8.
    #[arg(long)]
    profile: Option<String>,
    /// Storage of the nodes: `disk` (raft-storage's Store over a simulated
    /// disk) or `mem` (raft-core's MemStorage behind a simulated fsync;
    /// faster, for protocol work).
    #[arg(long, default_value = "disk")]
    storage: String,
    /// The nodes' key-value engine: `durable` (the server's default:
    /// raftkv-mvcc on the node's simulated disk, checkpointed, snapshots
    /// streamed) or `memory` (the in-memory engine, snapshotted whole).
    #[arg(long, default_value = "durable")]
    state: String,
}

impl Common {
    fn config(&self, seed: u64) -> Result<SimConfig> {
        let mut cfg = SimConfig::new(seed, self.nodes);
        cfg.steps = self.steps;
        cfg.faults = Faults::parse(&self.faults).map_err(anyhow::Error::msg)?;
        cfg.liveness = !self.no_liveness;
        cfg.storage = StorageKind::parse(&self.storage).map_err(anyhow::Error::msg)?;
        cfg.state = StateKind::parse(&self.state).map_err(anyhow::Error::msg)?;
        if let Some(name) = &self.bug {
            if !cfg!(feature = "planted-bugs") {
                bail!("--bug needs a build with `--features planted-bugs`");
            }
            let bug = BugKind::parse(name)
                .with_context(|| format!("unknown bug {name:?}; known: {:?}", BugKind::all()))?;
            cfg.bug = Some(PlantedBug {
                bug,
                node: self.bug_node,
            });
        }
        if let Some(p) = &self.profile {
            cfg.profile = Some(
                raft_sim::config::PROFILES
                    .into_iter()
                    .find(|known| known == p)
                    .with_context(|| {
                        format!(
                            "unknown profile {p:?}; known: {:?}",
                            raft_sim::config::PROFILES
                        )
                    })?,
            );
        }
        cfg.validate().map_err(anyhow::Error::msg)?;
        Ok(cfg)
    }
}

fn parse_seeds(s: &str) -> Result<Range<u64>> {
    if let Some((a, b)) = s.split_once("..") {
        let a: u64 = a.trim().parse().context("bad start of --seeds")?;
        let b: u64 = b.trim().parse().context("bad end of --seeds")?;
        if b <= a {
            bail!("--seeds range {a}..{b} is empty");
        }
        Ok(a..b)
    } else {
        let a: u64 = s
            .trim()
            .parse()
            .context("--seeds must be A..B or a number")?;
        Ok(a..a.saturating_add(1))
    }
}

fn main() -> ExitCode {
    match real_main() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("raft-sim: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn real_main() -> Result<ExitCode> {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Run {
            seeds,
            common,
            threads,
            stop_at_first,
        } => {
            let seeds = parse_seeds(&seeds)?;
            let base = common.config(seeds.start)?;
            let threads = threads
                .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
            eprintln!("stand-ins: {}", stand_ins(base.storage, base.state));
            let count = seeds.end - seeds.start;
            let bar = if std::io::stderr().is_terminal() {
                let bar = ProgressBar::new(count);
                bar.set_style(
                    ProgressStyle::with_template(
                        "{bar:40} {pos}/{len} seeds  {per_sec}  eta {eta}",
                    )
                    .unwrap_or_else(|_| ProgressStyle::default_bar()),
                );
                Some(bar)
            } else {
                None
            };
            let progress = |n: u64| {
                if let Some(b) = &bar {
                    b.inc(n);
                }
            };
            let out = run_many(&base, seeds, threads, stop_at_first, &progress);
            if let Some(b) = &bar {
                b.finish_and_clear();
            }
            for f in &out.failures {
                println!("{}", f.summary());
            }
            let secs = out.elapsed.as_secs_f64().max(1e-9);
            println!(
                "seeds run: {}, simulated steps/s: {:.0}, deliveries/s: {:.0}, seeds/min: {:.0}, client ops completed: {}, linearizability unknown (budget): {}, violations: {}  ({} nodes, {} steps, faults {}, {} threads, {:.1}s)",
                out.seeds_run,
                out.events as f64 / secs,
                out.deliveries as f64 / secs,
                out.seeds_run as f64 * 60.0 / secs,
                out.ops_completed,
                out.linearizability_unknown,
                out.failures.len(),
                base.nodes,
                base.steps,
                base.faults,
                threads,
                secs
            );
            Ok(if out.failures.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Cmd::Replay {
            seed,
            common,
            json,
            quiet,
        } => {
            let mut cfg = common.config(seed)?;
            cfg.record_trace = true;
            let out = run(&cfg);
            if !quiet {
                for e in &out.trace {
                    println!("{e}");
                }
            }
            println!("stats: {}", serde_json::to_string(&out.stats)?);
            println!("linearizability: {:?}", out.linearizability);
            println!("trace hash: {:016x}", out.trace_hash);
            match &out.violation {
                Some(v) => println!(
                    "FIRST VIOLATION at {:.3}ms [{}]:\n{}",
                    v.time_us as f64 / 1000.0,
                    v.check,
                    v.message
                ),
                None => println!("no violation"),
            }
            if let Some(path) = json {
                let ops: Vec<serde_json::Value> = out
                    .history
                    .ops()
                    .iter()
                    .map(|o| {
                        serde_json::json!({
                            "client": o.client,
                            "input": format!("{:?}", o.input),
                            "call_us": o.call_time,
                            "outcome": format!("{:?}", o.outcome),
                        })
                    })
                    .collect();
                let doc = serde_json::json!({
                    "seed": cfg.seed,
                    "replay": cfg.replay_command(),
                    "stand_ins": stand_ins(cfg.storage, cfg.state),
                    "params": out.params,
                    "stats": out.stats,
                    "trace_hash": format!("{:016x}", out.trace_hash),
                    "violation": out.violation,
                    "timeline": out.trace,
                    "history": ops,
                });
                std::fs::write(&path, serde_json::to_vec_pretty(&doc)?)
                    .with_context(|| format!("writing {}", path.display()))?;
                println!("trace written to {}", path.display());
            }
            Ok(if out.violation.is_some() {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            })
        }
    }
}
