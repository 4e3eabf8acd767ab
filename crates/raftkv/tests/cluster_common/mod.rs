//! Shared helpers of the cli_*, cluster_* and faults_* process tests: a
//! local cluster of real `raftkv serve` processes on random free ports,
//! started through the same [`LocalCluster`] that `raftkv cluster` uses,
//! plus a write load that records every acknowledged write.
#![allow(dead_code)] // each test binary uses a different subset

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use raftkv::client::{Client, ClientConfig, ClientError, Consistency, NodeStatus};
use raftkv::cluster::{free_base_port, load_or_create_manifest, LocalCluster};

/// The `raftkv` binary under test.
pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_raftkv"))
}

/// Server flags every test cluster gets: a 50 ms tick makes elections take
/// 0.5-1 s instead of 1-2 s (still far above a debug build's hiccups on a
/// busy 2-core machine), and quiet logs keep server.log small (the access
/// log is off by default: one line per request of the write loads would
/// bury the lines a failing test's log tail is printed for).
pub const TEST_SERVE_ARGS: &[&str] = &["--tick-ms", "50", "--log-level", "info"];

/// A running test cluster and the temporary directory holding its data.
pub struct TestCluster {
    pub cluster: LocalCluster,
    pub dir: tempfile::TempDir,
}

impl TestCluster {
    /// Starts `nodes` founding voters with `extra` serve flags on ports with
    /// room for `spare` more nodes (for membership tests), and waits until
    /// a leader is elected.
    pub async fn start(nodes: u64, spare: u64, extra: &[&str]) -> TestCluster {
        let dir = tempfile::tempdir().unwrap();
        let data_dir = dir.path().join("data");
        let base = free_base_port(nodes + spare);
        let (manifest, created) =
            load_or_create_manifest(&data_dir, Some(nodes), Some(base)).unwrap();
        assert!(created);
        let mut args: Vec<String> = TEST_SERVE_ARGS.iter().map(|s| s.to_string()).collect();
        args.extend(extra.iter().map(|s| s.to_string()));
        let mut cluster = LocalCluster::new(manifest, data_dir, bin(), args);
        cluster.start_all().unwrap();
        let tc = TestCluster { cluster, dir };
        tc.wait_for_leader(Duration::from_secs(30)).await;
        tc
    }

    /// Endpoints of the founding voters.
    pub fn endpoints(&self) -> Vec<String> {
        self.cluster.manifest().endpoints()
    }

    /// `--endpoints` value for the CLI.
    pub fn endpoints_flag(&self) -> String {
        self.endpoints().join(",")
    }

    /// A client of the founding voters with test-friendly timeouts.
    pub fn client(&self) -> Client {
        client_for(self.endpoints())
    }

    /// The status of node `id`, if it answers.
    pub async fn status(&self, id: u64) -> Option<NodeStatus> {
        let ep = self.cluster.manifest().endpoint(id);
        let probe = client_for(vec![ep.clone()]);
        probe.status_of(&ep).await.ok()
    }

    /// Waits until one node leads and every running node that answers
    /// names it; returns (leader, term). Panics with every node's log tail
    /// after `timeout`.
    pub async fn wait_for_leader(&self, timeout: Duration) -> (u64, u64) {
        self.wait_for_leader_where(timeout, |_, _| true).await
    }

    /// Like [`wait_for_leader`], for a leader accepted by `accept(id, term)`.
    pub async fn wait_for_leader_where(
        &self,
        timeout: Duration,
        accept: impl Fn(u64, u64) -> bool,
    ) -> (u64, u64) {
        let deadline = Instant::now() + timeout;
        let max_id = self.cluster.manifest().nodes + 4;
        loop {
            let mut statuses = Vec::new();
            for id in 1..=max_id {
                if let Some(s) = self.status(id).await {
                    statuses.push(s);
                }
            }
            let leader = statuses
                .iter()
                .filter(|s| s.role == "leader")
                .max_by_key(|s| s.term);
            if let Some(l) = leader {
                let agreed = statuses
                    .iter()
                    .filter(|s| s.members.voters.contains(&s.id))
                    .all(|s| s.leader == Some(l.id) && s.term == l.term);
                if agreed && accept(l.id, l.term) {
                    return (l.id, l.term);
                }
            }
            if Instant::now() >= deadline {
                panic!(
                    "no agreed leader within {timeout:?}; statuses: {statuses:#?}\n{}",
                    self.log_tails()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until node `id` has applied at least `index`.
    pub async fn wait_applied(&self, id: u64, index: u64, timeout: Duration) -> NodeStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.status(id).await {
                if s.applied_index >= index {
                    return s;
                }
                if Instant::now() >= deadline {
                    panic!(
                        "node {id} applied {} < {index} after {timeout:?}",
                        s.applied_index
                    );
                }
            } else if Instant::now() >= deadline {
                panic!(
                    "node {id} does not answer after {timeout:?}\n{}",
                    self.log_tails()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The last lines of every node's log, for failure messages.
    pub fn log_tails(&self) -> String {
        let mut out = String::new();
        for id in 1..=self.cluster.manifest().nodes + 4 {
            let tail = self.cluster.log_tail(id, 20);
            if !tail.is_empty() {
                out.push_str(&format!("--- node {id} server.log ---\n{tail}\n"));
            }
        }
        out
    }
}

/// A client with short timeouts and a long retry window (tests ride
/// through elections).
pub fn client_for(endpoints: Vec<String>) -> Client {
    let mut config = ClientConfig::new(endpoints);
    config.request_timeout = Duration::from_secs(3);
    config.connect_timeout = Duration::from_millis(300);
    config.retry_deadline = Duration::from_secs(15);
    Client::new(config).unwrap()
}

/// A background write load: `writers` tasks, each with its own session,
/// writing unique keys `<prefix><writer>-<n>` and recording every write the
/// cluster acknowledged.
pub struct WriteLoad {
    stop: Arc<AtomicBool>,
    pub acked: Arc<Mutex<BTreeMap<String, String>>>,
    pub acked_count: Arc<AtomicU64>,
    pub errors: Arc<Mutex<BTreeMap<String, u64>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl WriteLoad {
    /// Starts the load. Failed writes (maybe applied, maybe not) are not
    /// recorded; the writer pauses briefly and goes on with a new key.
    pub fn start(client: &Client, writers: usize, prefix: &str) -> WriteLoad {
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(Mutex::new(BTreeMap::new()));
        let acked_count = Arc::new(AtomicU64::new(0));
        let errors = Arc::new(Mutex::new(BTreeMap::new()));
        let mut tasks = Vec::new();
        for w in 0..writers {
            let client = client.clone();
            let stop = stop.clone();
            let acked = acked.clone();
            let acked_count = acked_count.clone();
            let errors = errors.clone();
            let prefix = prefix.to_string();
            tasks.push(tokio::spawn(async move {
                let mut session = client.random_session();
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    let key = format!("{prefix}{w}-{n}");
                    let value = format!("v{n}-{}", session.client_id());
                    match session.put(&key, &value).await {
                        Ok(_) => {
                            acked.lock().unwrap().insert(key, value);
                            acked_count.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => {
                            *errors.lock().unwrap().entry(e.kind()).or_insert(0) += 1;
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                    }
                }
            }));
        }
        WriteLoad {
            stop,
            acked,
            acked_count,
            errors,
            tasks,
        }
    }

    /// Acknowledged writes so far.
    pub fn count(&self) -> u64 {
        self.acked_count.load(Ordering::Relaxed)
    }

    /// Waits until at least `n` more writes are acknowledged than now.
    pub async fn wait_progress(&self, n: u64, timeout: Duration) {
        let start = self.count();
        let deadline = Instant::now() + timeout;
        while self.count() < start + n {
            assert!(
                Instant::now() < deadline,
                "writes stalled: {} acknowledged in {timeout:?} (errors {:?})",
                self.count() - start,
                self.errors.lock().unwrap()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops the writers and returns every acknowledged write.
    pub async fn stop(self) -> BTreeMap<String, String> {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            t.await.unwrap();
        }
        let acked = self.acked.lock().unwrap().clone();
        acked
    }
}

/// Reads every acknowledged write back (linearizable) and asserts each
/// holds its value; `readers` requests in flight.
pub async fn assert_all_present(client: &Client, acked: &BTreeMap<String, String>) {
    let entries: Vec<(String, String)> =
        acked.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    let chunks: Vec<Vec<(String, String)>> = entries
        .chunks(entries.len().div_ceil(8).max(1))
        .map(|c| c.to_vec())
        .collect();
    let mut tasks = Vec::new();
    for chunk in chunks {
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            let mut missing = Vec::new();
            for (k, v) in chunk {
                match client.get(&k, Consistency::Linearizable).await {
                    Ok(kv) if kv.value == v => {}
                    Ok(kv) => missing.push(format!("{k}: {:?} instead of {v:?}", kv.value)),
                    Err(ClientError::KeyNotFound { .. }) => missing.push(format!("{k}: absent")),
                    Err(e) => panic!("reading {k} back failed: {e}"),
                }
            }
            missing
        }));
    }
    let mut missing = Vec::new();
    for t in tasks {
        missing.extend(t.await.unwrap());
    }
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged writes lost, e.g. {:?}",
        missing.len(),
        acked.len(),
        &missing[..missing.len().min(10)]
    );
}

/// Endpoints on 127.0.0.1 ports where nothing listens (bound, then freed).
pub fn free_port_endpoints(n: usize) -> Vec<String> {
    let listeners: Vec<std::net::TcpListener> = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    listeners
        .iter()
        .map(|l| format!("http://{}", l.local_addr().unwrap()))
        .collect()
}
