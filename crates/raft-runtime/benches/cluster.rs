//! Throughput and commit latency of a 3-node cluster in one process over
//! loopback TCP, on the real storage engine (raft-storage, fsync on) in a
//! temporary directory, with the KV state machine. Prints proposals/s and
//! p50/p99 commit latency for 1, 64 and 256 concurrent proposers, next to
//! the raw `fdatasync` latency of the same disk measured in the same run.
//!
//! Run: `cargo bench -p raft-runtime --bench cluster`
//! Knobs: BENCH_SECS (per level, default 5), BENCH_DIR (default: TMPDIR),
//! BENCH_LEVELS (comma-separated concurrencies, default 1,64,256).

use std::collections::BTreeMap;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use raft_core::{Membership, Role};
use raft_runtime::{
    start, Metrics, ProposeError, RaftHandle, RuntimeConfig, TcpConfig, TcpTransport, Transport,
};
use raft_storage::{RealDisk, Store, StoreConfig};
use raftkv_state::{Command, KvConfig, KvStore};

const CLUSTER_ID: u64 = 7;
const VALUE_BYTES: usize = 100;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Raw fdatasync latency: append `block_bytes` to a file and fdatasync, like
/// a WAL. Small appends mostly stay within an allocated block (on ext4 only
/// the size changes); 4 KiB appends allocate a block every time.
fn raw_fdatasync(dir: &std::path::Path, n: usize, block_bytes: usize) -> Histogram<u64> {
    let mut h = Histogram::<u64>::new(3).unwrap();
    let path = dir.join("fdatasync-probe");
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .unwrap();
    let block = vec![0xABu8; block_bytes];
    for _ in 0..n {
        f.write_all(&block).unwrap();
        let t = Instant::now();
        f.sync_data().unwrap();
        h.record(t.elapsed().as_micros() as u64).unwrap();
    }
    drop(f);
    let _ = std::fs::remove_file(&path);
    h
}

async fn start_cluster(dir: &std::path::Path) -> Vec<RaftHandle<KvStore>> {
    let mut parts = Vec::new();
    for id in 1..=3u64 {
        let metrics = Metrics::new();
        let (t, inbound) = TcpTransport::start(
            TcpConfig::new(CLUSTER_ID, id, "127.0.0.1:0".parse().unwrap()),
            metrics.clone(),
        )
        .await
        .unwrap();
        parts.push((id, metrics, t, inbound));
    }
    let addrs: BTreeMap<u64, SocketAddr> = parts
        .iter()
        .map(|(id, _, t, _)| (*id, t.local_addr()))
        .collect();
    let mut handles = Vec::new();
    for (id, metrics, mut t, inbound) in parts {
        for (&p, &a) in &addrs {
            t.set_peer_addr(p, Some(a.into()));
        }
        let store = Store::open_or_bootstrap(
            RealDisk,
            dir.join(format!("node{id}")),
            CLUSTER_ID,
            id,
            Membership::new_voters(1..=3),
            StoreConfig::default(),
        )
        .unwrap();
        let mut cfg = RuntimeConfig::new(id);
        cfg.tick_interval = Duration::from_millis(20);
        let sm = KvStore::new(KvConfig::default()).unwrap();
        handles.push(start(cfg, Arc::new(store), sm, t, inbound, metrics).unwrap());
    }
    handles
}

async fn leader(handles: &[RaftHandle<KvStore>]) -> RaftHandle<KvStore> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        for h in handles {
            if h.status().await.unwrap().role == Role::Leader {
                return h.clone();
            }
        }
        assert!(Instant::now() < deadline, "no leader");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn run_level(
    leader: &RaftHandle<KvStore>,
    concurrency: usize,
    secs: u64,
) -> (f64, Histogram<u64>, u64) {
    let stop_at = Instant::now() + Duration::from_secs(secs);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..concurrency {
        let h = leader.clone();
        tasks.push(tokio::spawn(async move {
            let mut hist = Histogram::<u64>::new(3).unwrap();
            let mut ok = 0u64;
            let mut failed = 0u64;
            let value = vec![b'v'; VALUE_BYTES];
            let mut i = 0u64;
            while Instant::now() < stop_at {
                let cmd = Command::put(format!("k{w}-{}", i % 1000), value.clone()).encode();
                i += 1;
                let t = Instant::now();
                match h.propose(cmd).await {
                    Ok(_) => {
                        hist.record(t.elapsed().as_micros() as u64).unwrap();
                        ok += 1;
                    }
                    Err(ProposeError::Backpressure) => {
                        failed += 1;
                        tokio::task::yield_now().await;
                    }
                    Err(e) => panic!("proposal failed: {e}"),
                }
            }
            (hist, ok, failed)
        }));
    }
    let mut hist = Histogram::<u64>::new(3).unwrap();
    let mut ok = 0;
    let mut failed = 0;
    for t in tasks {
        let (h, o, f) = t.await.unwrap();
        hist.add(h).unwrap();
        ok += o;
        failed += f;
    }
    let rate = ok as f64 / started.elapsed().as_secs_f64();
    (rate, hist, failed)
}

fn probe(dir: &std::path::Path, when: &str) {
    for block in [128, 4096] {
        let raw = raw_fdatasync(dir, 500, block);
        println!(
            "raw fdatasync ({when}) after {block}-byte appends (n={}): p50 {} us, p99 {} us, mean {:.0} us",
            raw.len(),
            raw.value_at_quantile(0.5),
            raw.value_at_quantile(0.99),
            raw.mean()
        );
    }
}

/// Counters of one node, to report work per proposal.
struct Counts {
    proposals: u64,
    readies: u64,
    syncs: u64,
}

impl Counts {
    fn of(h: &RaftHandle<KvStore>) -> Self {
        let m = h.metrics();
        Counts {
            proposals: m.proposals.get(),
            readies: m.readies_written.get(),
            syncs: m.syncs.get(),
        }
    }

    fn minus(&self, o: &Counts) -> Counts {
        Counts {
            proposals: self.proposals - o.proposals,
            readies: self.readies - o.readies,
            syncs: self.syncs - o.syncs,
        }
    }
}

/// Mean of a histogram from the Prometheus text (sum / count).
fn metric_mean(text: &str, name: &str) -> f64 {
    let get = |suffix: &str| -> f64 {
        text.lines()
            .find(|l| l.starts_with(&format!("{name}_{suffix} ")))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    };
    get("sum") / get("count").max(1.0)
}

fn main() {
    let secs = env_u64("BENCH_SECS", 5);
    let levels: Vec<usize> = std::env::var("BENCH_LEVELS")
        .unwrap_or_else(|_| "1,64,256".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let base = std::env::var("BENCH_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| std::env::temp_dir());
    let tmp = tempfile::tempdir_in(base).unwrap();
    println!("data dir: {}", tmp.path().display());

    probe(tmp.path(), "before");

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let handles = start_cluster(tmp.path()).await;
        let leader = leader(&handles).await;
        // Warm up: connections, caches.
        let _ = run_level(&leader, 16, 1).await;
        println!(
            "{:>11} {:>12} {:>10} {:>10} {:>10} {:>9}",
            "proposers", "proposals/s", "p50 us", "p99 us", "max us", "refused"
        );
        for &c in &levels {
            let before: Vec<Counts> = handles.iter().map(Counts::of).collect();
            let t = Instant::now();
            let (rate, hist, refused) = run_level(&leader, c, secs).await;
            let elapsed = t.elapsed().as_secs_f64();
            let after: Vec<Counts> = handles.iter().map(Counts::of).collect();
            let lead = leader.id() as usize - 1;
            let d = |i: usize| after[i].minus(&before[i]);
            let l = d(lead);
            println!(
                "{:>11} {:>12.0} {:>10} {:>10} {:>10} {:>9}",
                c,
                rate,
                hist.value_at_quantile(0.5),
                hist.value_at_quantile(0.99),
                hist.max(),
                refused,
            );
            let props = l.proposals.max(1) as f64;
            let followers: Vec<String> = (0..handles.len())
                .filter(|&i| i != lead)
                .map(|i| {
                    let f = d(i);
                    format!(
                        "{:.2} readies/{:.2} fsyncs",
                        f.readies as f64 / props,
                        f.syncs as f64 / props
                    )
                })
                .collect();
            println!(
                "{:>11} per proposal: leader {:.2} readies/{:.2} fsyncs ({:.0} fsyncs/s); followers {}",
                "",
                l.readies as f64 / props,
                l.syncs as f64 / props,
                l.syncs as f64 / elapsed,
                followers.join(", "),
            );
        }
        let text = leader.metrics().render();
        println!(
            "leader's own storage: mean fsync {:.0} us, mean write before fsync {:.0} us",
            metric_mean(&text, "raft_fsync_latency_seconds") * 1e6,
            metric_mean(&text, "raft_append_latency_seconds") * 1e6,
        );
        for h in &handles {
            h.shutdown().await.unwrap();
        }
    });
    probe(tmp.path(), "after");
}
