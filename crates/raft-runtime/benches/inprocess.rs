//! The runtime's own cost, without disk or sockets: a 3-node cluster in
//! one process on `MemStore` (in-memory log, `sync` a no-op) over the
//! in-process `LocalNetwork`, with the KV state machine. N client tasks
//! each await one 16-byte write at a time on the leader. Prints writes/s,
//! p50/p99 latency and the process's CPU time per write (user + system,
//! all three nodes and the clients together), so that the cost of handing
//! each Ready to the writer thread and back shows up at low concurrency.
//!
//! Run: `cargo bench -p raft-runtime --bench inprocess`
//! Knobs: BENCH_SECS (per level, default 5), BENCH_LEVELS (comma-separated
//! client counts, default 1,64,256,1024).

use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use raft_core::{Membership, Role};
use raft_runtime::local::LocalNetwork;
use raft_runtime::{start, MemStore, Metrics, ProposeError, RaftHandle, RuntimeConfig};
use raftkv_state::{Command, KvConfig, KvStore};

/// Key and value of each write: 16 bytes of payload in all.
const KEY_BYTES: usize = 8;
const VALUE_BYTES: usize = 8;
/// Distinct keys written. Small on purpose: this measures the runtime, and
/// a state that grows makes each snapshot (a full copy of the state, taken
/// on the driver task) stall a node longer and longer; that cost is the
/// durable state machine issue's, not this benchmark's.
const KEYS: u64 = 10_000;

/// The server binary's allocator (see raftkv's main.rs): measure what runs.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// User + system CPU time of this process so far, from /proc/self/stat
/// (fields 14 and 15, in clock ticks of 1/100 s on Linux).
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("Linux /proc");
    // The command name (field 2) may hold spaces; fields are counted after
    // its closing parenthesis.
    let rest = &stat[stat.rfind(')').expect("stat has a command name") + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields[i - 3].parse::<u64>().expect("numeric stat field");
    Duration::from_millis((ticks(14) + ticks(15)) * 10)
}

fn start_cluster() -> Vec<RaftHandle<KvStore>> {
    let net = LocalNetwork::new();
    (1..=3u64)
        .map(|id| {
            let metrics = Metrics::new();
            let mut cfg = RuntimeConfig::new(id);
            cfg.tick_interval = Duration::from_millis(20);
            let (t, inbound) = net.join(id, cfg.inbound_queue_max, metrics.clone());
            let store = Arc::new(MemStore::new(Membership::new_voters(1..=3)));
            let sm = KvStore::new(KvConfig::default()).expect("default KV config is valid");
            start(cfg, store, sm, t, inbound, metrics).expect("in-memory node starts")
        })
        .collect()
}

async fn leader(handles: &[RaftHandle<KvStore>]) -> RaftHandle<KvStore> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        for h in handles {
            if h.status().await.expect("status").role == Role::Leader {
                return h.clone();
            }
        }
        assert!(Instant::now() < deadline, "no leader");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Runs `clients` tasks for `secs`; returns writes done and their latency.
async fn run_level(
    leader: &RaftHandle<KvStore>,
    clients: usize,
    secs: u64,
) -> (u64, Histogram<u64>) {
    let stop_at = Instant::now() + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for w in 0..clients {
        let h = leader.clone();
        tasks.push(tokio::spawn(async move {
            let mut hist = Histogram::<u64>::new(3).expect("valid histogram");
            let mut ok = 0u64;
            let value = vec![b'v'; VALUE_BYTES];
            let mut i = 0u64;
            while Instant::now() < stop_at {
                let key = format!(
                    "{:0width$}",
                    (w as u64 * 7919 + i) % KEYS,
                    width = KEY_BYTES
                );
                let cmd = Command::put(key, value.clone()).encode();
                i += 1;
                let t = Instant::now();
                match h.propose(cmd).await {
                    Ok(_) => {
                        hist.record(t.elapsed().as_micros() as u64)
                            .expect("in range");
                        ok += 1;
                    }
                    Err(ProposeError::Backpressure) => tokio::task::yield_now().await,
                    Err(e) => panic!("write failed: {e}"),
                }
            }
            (hist, ok)
        }));
    }
    let mut hist = Histogram::<u64>::new(3).expect("valid histogram");
    let mut ok = 0;
    for t in tasks {
        let (h, o) = t.await.expect("client task");
        hist.add(h).expect("same bounds");
        ok += o;
    }
    (ok, hist)
}

fn main() {
    // RUST_LOG=info shows the runtime's snapshots and elections.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .try_init();
    let secs = env_u64("BENCH_SECS", 5);
    let levels: Vec<usize> = std::env::var("BENCH_LEVELS")
        .unwrap_or_else(|_| "1,64,256,1024".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(async {
        let handles = start_cluster();
        let leader = leader(&handles).await;
        let _ = run_level(&leader, 16, 1).await; // warm up
        println!(
            "{:>8} {:>10} {:>8} {:>8} {:>14}",
            "clients", "writes/s", "p50 us", "p99 us", "CPU us/write"
        );
        for &c in &levels {
            let cpu0 = cpu_time();
            let t = Instant::now();
            let (ok, hist) = run_level(&leader, c, secs).await;
            let elapsed = t.elapsed().as_secs_f64();
            let cpu = (cpu_time() - cpu0).as_secs_f64();
            println!(
                "{:>8} {:>10.0} {:>8} {:>8} {:>14.1}",
                c,
                ok as f64 / elapsed,
                hist.value_at_quantile(0.5),
                hist.value_at_quantile(0.99),
                cpu * 1e6 / ok.max(1) as f64,
            );
        }
        for h in &handles {
            h.shutdown().await.expect("shutdown");
        }
    });
}
