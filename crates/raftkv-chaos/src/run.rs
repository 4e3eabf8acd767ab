//! One run: network, cluster, clients and nemesis, healing, final reads,
//! teardown, check, summary.

use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::check::{self, Verdict};
use crate::client::Timeouts;
use crate::cluster::{self, Cluster, ClusterError};
use crate::history::{Clock, OpKind, Outcome, Phase, ReadConsistency, Recorder, FINAL_CLIENT};
use crate::nemesis::{self, Nemesis, NemesisError, Scenario};
use crate::net::{self, NetError, Netns};
use crate::report::RunSummary;
use crate::workload::{self, key_name, Mix, Shared, WorkloadConfig};

/// How the nodes are connected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NetChoice {
    /// Namespaces if possible, else loopback (and say so).
    Auto,
    /// Namespaces or fail.
    Netns,
    /// Loopback: kill and pause faults only.
    Loopback,
}

/// Everything one run needs.
#[derive(Clone, Debug)]
pub struct RunConfig {
    pub scenario: Scenario,
    pub seed: u64,
    /// 1-based, for the report and the run directory.
    pub run: u64,
    /// How long clients run (faults happen within it).
    pub duration: Duration,
    pub clients: u64,
    pub keys: u64,
    pub raftkv_bin: PathBuf,
    /// Run directories go here (`<pid>-run<n>-seed<s>`).
    pub work_dir: PathBuf,
    pub net: NetChoice,
    /// Timeout of reads and heartbeat writes (longer than any pause).
    pub read_timeout: Duration,
    /// Timeout of the clients' writes.
    pub write_timeout: Duration,
    /// Keep the run directory even when the run passes.
    pub keep: bool,
    /// Checker budget per key.
    pub checker_steps: u64,
    /// Issue lease reads (off: they become linearizable reads, to test
    /// everything else while a lease bug is open).
    pub lease_reads: bool,
}

impl RunConfig {
    /// Defaults for `scenario` and `seed`: 30 s, 6 clients, 5 keys.
    pub fn new(scenario: Scenario, seed: u64, raftkv_bin: PathBuf) -> RunConfig {
        RunConfig {
            scenario,
            seed,
            run: 1,
            duration: Duration::from_secs(30),
            clients: 6,
            keys: 5,
            raftkv_bin,
            work_dir: std::env::temp_dir().join("raftkv-chaos"),
            net: NetChoice::Auto,
            read_timeout: Duration::from_secs(8),
            write_timeout: Duration::from_secs(2),
            keep: false,
            checker_steps: 20_000_000,
            lease_reads: true,
        }
    }
}

/// Why a run could not produce a verdict.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("network: {0}")]
    Net(#[from] NetError),
    #[error("cluster: {0}")]
    Cluster(#[from] ClusterError),
    #[error("nemesis: {0}")]
    Nemesis(#[from] NemesisError),
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    /// The cluster never elected a leader at startup.
    #[error("no leader within {secs} s of starting the cluster (logs in {dir})\n{logs}")]
    NoLeader {
        secs: u64,
        dir: String,
        logs: String,
    },
    /// Ctrl-C / SIGTERM.
    #[error("cancelled")]
    Cancelled,
}

/// Nodes per cluster.
pub const NODES: u64 = 3;

/// How long the healed cluster gets to agree on a leader and catch up.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs once; `cancel` becoming true stops it early (everything is torn
/// down, then [`RunError::Cancelled`]). `say` gets progress lines.
pub async fn run_once(
    cfg: &RunConfig,
    cancel: watch::Receiver<bool>,
    say: &(dyn Fn(&str) + Sync),
) -> Result<RunSummary, RunError> {
    let dir = cfg.work_dir.join(format!(
        "{}-run{}-seed{}",
        std::process::id(),
        cfg.run,
        cfg.seed
    ));
    let io = |what: String| move |source| RunError::Io { what, source };
    if dir.exists() {
        std::fs::remove_dir_all(&dir).map_err(io(format!("remove {}", dir.display())))?;
    }
    std::fs::create_dir_all(&dir).map_err(io(format!("create {}", dir.display())))?;
    let result = run_in(cfg, &dir, cancel, say).await;
    if matches!(result, Err(RunError::Cancelled)) {
        // Nothing to look at: an interrupted run has no verdict.
        let _ = std::fs::remove_dir_all(&dir);
    }
    result
}

/// [`run_once`] in its run directory `dir`.
async fn run_in(
    cfg: &RunConfig,
    dir: &std::path::Path,
    cancel: watch::Receiver<bool>,
    say: &(dyn Fn(&str) + Sync),
) -> Result<RunSummary, RunError> {
    let dir = dir.to_path_buf();

    // The network.
    let (netns, notice) = match cfg.net {
        NetChoice::Loopback => (None, None),
        NetChoice::Netns => (Some(Netns::setup(NODES)?), None),
        NetChoice::Auto => match Netns::setup(NODES) {
            Ok(n) => (Some(n), None),
            Err(e) => (
                None,
                Some(format!(
                    "network namespaces unavailable ({e}): running on loopback with kill and \
                     pause faults only (no isolation)"
                )),
            ),
        },
    };
    if let Some(n) = &notice {
        say(&format!("NOTE: {n}"));
    }
    let network = match &netns {
        Some(n) => n.describe(),
        None => "loopback (127.0.0.1)".to_string(),
    };
    let addrs = match &netns {
        Some(n) => cluster::netns_layout(n, NODES),
        None => cluster::loopback_layout(NODES)?,
    };
    let cluster_id = (cfg.seed ^ 0x7261_6674_6b76).max(1);
    let mut cluster = Cluster::new(cfg.raftkv_bin.clone(), dir.clone(), cluster_id, addrs);
    let client_addrs = cluster.client_addrs();
    cluster.start_all()?;
    say(&format!(
        "run {}: {} nodes up ({network}), waiting for a leader",
        cfg.run, NODES
    ));
    if cluster::wait_leader(&client_addrs, Duration::from_secs(30))
        .await
        .is_none()
    {
        let logs = (1..=NODES)
            .map(|id| format!("--- node {id} ---\n{}", cluster.log_tail(id, 15)))
            .collect::<Vec<_>>()
            .join("\n");
        return Err(RunError::NoLeader {
            secs: 30,
            dir: dir.display().to_string(),
            logs,
        });
    }
    if *cancel.borrow() {
        return Err(RunError::Cancelled);
    }

    // Clients and nemesis.
    let lease = cfg.scenario == Scenario::PauseLeaderLease;
    let wcfg = Arc::new(WorkloadConfig {
        clients: cfg.clients,
        keys: cfg.keys,
        mix: match (lease, cfg.lease_reads) {
            (true, true) => Mix::LEASE,
            (true, false) => Mix::LEASE.without_lease(),
            (false, true) => Mix::MIXED,
            (false, false) => Mix::MIXED.without_lease(),
        },
        timeouts: Timeouts {
            connect: Duration::from_secs(1),
            request: cfg.read_timeout,
        },
        write_timeout: cfg.write_timeout,
        think_ms_max: 20,
        writes_avoid_faulty: lease,
        reads_on_home_node: lease,
        probers: true,
        ops_per_client_max: 1_000_000,
    });
    let clock = Clock::start();
    let deadline = Instant::now() + cfg.duration;
    let faulty = Arc::new(AtomicU64::new(0));
    let recorder = Recorder::new();
    let shared = Shared {
        addrs: Arc::new(client_addrs.clone()),
        clock,
        deadline,
        cancel: cancel.clone(),
        faulty: faulty.clone(),
        recorder: recorder.clone(),
    };
    let mut tasks = Vec::new();
    for c in 1..=cfg.clients {
        tasks.push(tokio::spawn(workload::client(
            c,
            wcfg.clone(),
            shared.clone(),
            cfg.seed,
        )));
    }
    if wcfg.probers {
        for node in 1..=NODES {
            tasks.push(tokio::spawn(workload::prober(
                node,
                wcfg.clone(),
                shared.clone(),
                cfg.seed,
            )));
        }
    }
    tasks.push(tokio::spawn(workload::heartbeat_writer(
        wcfg.clone(),
        shared.clone(),
        cfg.seed,
    )));
    let plan = nemesis::plan(cfg.scenario, cfg.seed, cfg.duration, netns.is_some());
    say(&format!(
        "run {}: {} s of {} clients, {} read probers and a heartbeat writer, {} faults planned (seed {})",
        cfg.run,
        cfg.duration.as_secs(),
        cfg.clients,
        NODES,
        plan.len(),
        cfg.seed
    ));
    let mut nemesis = Nemesis {
        cluster: &mut cluster,
        net: netns.as_ref(),
        clock,
        cancel: cancel.clone(),
        faulty,
        events: Vec::new(),
    };
    let nemesis_result = nemesis.run(&plan, deadline).await;
    let faults = std::mem::take(&mut nemesis.events);
    for t in tasks {
        let _ = t.await;
    }
    nemesis_result?;
    if *cancel.borrow() {
        return Err(RunError::Cancelled);
    }

    // Heal everything, let it settle, read every key.
    if let Some(n) = &netns {
        for id in 1..=NODES {
            n.heal(id)?;
        }
    }
    cluster.heal_all()?;
    say(&format!(
        "run {}: {} faults injected; healed, waiting for the cluster to settle",
        cfg.run,
        faults.len()
    ));
    let settled = cluster::wait_settled(&client_addrs, SETTLE_TIMEOUT).await;
    let final_shared = Shared {
        deadline: Instant::now() + Duration::from_secs(3600),
        ..shared
    };
    let mut unreadable = Vec::new();
    let keys = (0..cfg.keys)
        .map(key_name)
        .chain([workload::HEARTBEAT_KEY.to_string()]);
    for key in keys {
        if !final_read(&final_shared, settled.unwrap_or(1), &key, cfg).await {
            unreadable.push(key);
        }
    }
    if *cancel.borrow() {
        return Err(RunError::Cancelled);
    }
    let ops = recorder.snapshot();
    let logs_if_stuck = if settled.is_none() || !unreadable.is_empty() {
        (1..=NODES)
            .map(|id| format!("--- node {id} ---\n{}", cluster.log_tail(id, 10)))
            .collect::<Vec<_>>()
            .join("\n")
    } else {
        String::new()
    };
    drop(cluster);
    drop(netns);

    // Check and summarize. The history is on disk first, so a check that
    // is interrupted (or too slow) can be redone with `--check-history`.
    let write = |name: &str, v: &dyn erased::Json| {
        let _ = std::fs::write(dir.join(name), v.to_json());
    };
    write("history.json", &ops);
    write("faults.json", &faults);
    say(&format!(
        "run {}: checking {} operations (history in {})",
        cfg.run,
        ops.len(),
        dir.join("history.json").display()
    ));
    // On a blocking thread, so Ctrl-C is answered during a long check.
    let steps = cfg.checker_steps;
    let checking = tokio::task::spawn_blocking(move || {
        let report = check::check(&ops, &faults, steps);
        (ops, faults, report)
    });
    let mut cancelled = cancel.clone();
    let (ops, faults, mut report) = tokio::select! {
        done = checking => done.map_err(|e| RunError::Io {
            what: "the checker".into(),
            source: std::io::Error::other(e.to_string()),
        })?,
        _ = cancelled.wait_for(|c| *c) => return Err(RunError::Cancelled),
    };
    if report.verdict == Verdict::Linearizable && (settled.is_none() || !unreadable.is_empty()) {
        report.verdict = Verdict::NotLinearizable;
        report.explanation = Some(format!(
            "the healed cluster did not recover: {}{}\n{logs_if_stuck}",
            if settled.is_none() {
                format!(
                    "no agreed leader with every node caught up within {} s; ",
                    SETTLE_TIMEOUT.as_secs()
                )
            } else {
                String::new()
            },
            if unreadable.is_empty() {
                String::new()
            } else {
                format!("key(s) {} could not be read", unreadable.join(", "))
            }
        ));
    }
    let mut summary = RunSummary::new(
        cfg.run,
        cfg.seed,
        cfg.scenario.name(),
        network,
        notice,
        cfg.duration.as_secs_f64(),
        &ops,
        &faults,
        report,
    );
    if summary.check.verdict != Verdict::Linearizable || cfg.keep {
        summary.kept = Some(dir.display().to_string());
        write("summary.json", &summary);
    } else {
        let _ = std::fs::remove_dir_all(&dir);
    }
    Ok(summary)
}

/// Pretty JSON of anything serializable, behind one object-safe trait.
mod erased {
    pub trait Json {
        fn to_json(&self) -> Vec<u8>;
    }
    impl<T: serde::Serialize> Json for T {
        fn to_json(&self) -> Vec<u8> {
            serde_json::to_vec_pretty(self).unwrap_or_default()
        }
    }
}

/// Reads `key` linearizably after healing, trying the leader first, then
/// each node in turn, up to 20 attempts 250 ms apart. True once one
/// answered.
async fn final_read(shared: &Shared, leader: u64, key: &str, cfg: &RunConfig) -> bool {
    let timeouts = Timeouts {
        connect: Duration::from_secs(1),
        request: cfg.read_timeout,
    };
    for attempt in 0..20u64 {
        let node = (leader - 1 + attempt) % NODES + 1;
        let outcome = workload::run_op(
            shared,
            FINAL_CLIENT,
            node,
            key,
            OpKind::Get {
                consistency: ReadConsistency::Linearizable,
            },
            timeouts,
            Phase::Final,
        )
        .await;
        if matches!(outcome, Outcome::Ok { .. }) {
            return true;
        }
        if *shared.cancel.borrow() {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    false
}

/// Removes leftovers of harness processes that died without cleaning up:
/// namespaces and links ([`net::cleanup_stale`]) and run directories of
/// dead pids under `work_dir` that hold no `summary.json` (kept failures
/// stay). Returns what was removed.
pub fn cleanup_stale(work_dir: &std::path::Path) -> Vec<String> {
    let mut removed = net::cleanup_stale();
    let me = std::process::id();
    if let Ok(entries) = std::fs::read_dir(work_dir) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(pid) = name.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
                continue;
            };
            let alive = pid == me || net::alive(pid);
            if !alive
                && !e.path().join("summary.json").exists()
                && std::fs::remove_dir_all(e.path()).is_ok()
            {
                removed.push(e.path().display().to_string());
            }
        }
    }
    removed
}
