//! `raftkv bench`: a closed-loop load generator against running endpoints.
//!
//! `--clients` tasks each send one request at a time for `--duration`:
//! a read with probability `--read-ratio`, else a write, of a key drawn
//! uniformly from `--keys` keys, with `--value-size`-byte values. Each
//! client keeps one keep-alive connection (a lean HTTP/1.1 transport, see
//! `http1`, so the bench takes little CPU from the cluster it shares the
//! machine with), starts at the leader, follows the leader hints of
//! `not_applied` (and other 503) answers, moves
//! to the next endpoint when a node refuses connections, and never retries:
//! a failed request is counted by kind and the client goes on. Writes carry
//! an exactly-once session `(client_id, seq)` per client unless
//! `--no-sessions`, so the server's session path is measured too.
//! Latencies go to HDR histograms (microseconds, 3 significant digits),
//! reads and writes apart. Prints throughput and p50/p90/p99/p99.9/max,
//! optionally as JSON.
//!
//! `--fill N` first writes keys `0..N` once each, in order, across the
//! clients (a failed write is retried), and reports that fill per decile
//! (see `fill`); then the timed run writes (and reads) those N keys for
//! `--duration` (`0s`: stop after the fill).

pub mod fill;
pub mod http1;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use hdrhistogram::Histogram;
use raft_core::rng::SplitMix64;
use serde::Serialize;

use crate::cli::{parse_duration, ConnOpts};
use crate::client::{Client, ClientError, Consistency};

/// Most concurrent clients: each is a task with its own connection; beyond
/// this the bench measures its own scheduling, not the cluster.
const CLIENTS_MAX: usize = 10_000;
/// Largest value the bench generates (the server's default limit is 64 KiB).
const VALUE_SIZE_MAX: usize = 16 * 1024 * 1024;
/// Largest key space (keys are generated, not stored, but `--prefill`
/// writes each one).
const KEYS_MAX: u64 = 1 << 32;
/// Highest latency the histograms track: 10 minutes, in microseconds.
const LATENCY_US_MAX: u64 = 600_000_000;
/// After a failed request a client pauses this long, so a cluster without
/// a leader is not hammered in a tight loop.
const ERROR_PAUSE: Duration = Duration::from_millis(10);
/// A fill write is tried this many times before its key is given up
/// (counted in `keys_failed`): enough to ride out a leader election.
const FILL_ATTEMPTS_MAX: u32 = 1000;

/// Arguments of `raftkv bench`.
#[derive(clap::Args, Debug, Clone)]
pub struct BenchArgs {
    /// Concurrent clients (each one request at a time).
    #[arg(long, default_value_t = 16)]
    pub clients: usize,
    /// How long to run, e.g. 10s.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Bytes per value.
    #[arg(long, default_value_t = 100)]
    pub value_size: usize,
    /// Fraction of requests that are reads, 0.0..=1.0.
    #[arg(long, default_value_t = 0.0)]
    pub read_ratio: f64,
    /// Number of distinct keys (chosen uniformly).
    #[arg(long, default_value_t = 10_000)]
    pub keys: u64,
    /// Consistency of the reads.
    #[arg(long, value_enum, default_value_t = Consistency::Linearizable)]
    pub consistency: Consistency,
    /// Prefix of every key written or read.
    #[arg(long, default_value = "bench/")]
    pub key_prefix: String,
    /// Write every key once before measuring (so reads find values).
    #[arg(long)]
    pub prefill: bool,
    /// Fill: write keys 0..N once each, in order across the clients, and
    /// report the fill per decile (throughput, latency, writes over
    /// 100 ms); then run for --duration (`0s`: not at all) on those N keys
    /// (replaces --keys).
    #[arg(long, value_name = "N", conflicts_with = "prefill")]
    pub fill: Option<u64>,
    /// Send writes without exactly-once sessions.
    #[arg(long)]
    pub no_sessions: bool,
    /// Also write the results as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    #[command(flatten)]
    pub conn: ConnOpts,
}

impl BenchArgs {
    fn validate(&self) -> anyhow::Result<()> {
        if self.clients == 0 || self.clients > CLIENTS_MAX {
            anyhow::bail!("--clients must be between 1 and {CLIENTS_MAX}");
        }
        if self.value_size > VALUE_SIZE_MAX {
            anyhow::bail!("--value-size must be at most {VALUE_SIZE_MAX}");
        }
        if !(0.0..=1.0).contains(&self.read_ratio) {
            anyhow::bail!("--read-ratio must be between 0.0 and 1.0");
        }
        if self.keys == 0 || self.keys > KEYS_MAX {
            anyhow::bail!("--keys must be between 1 and {KEYS_MAX}");
        }
        if let Some(n) = self.fill {
            if n == 0 || n > KEYS_MAX {
                anyhow::bail!("--fill must be between 1 and {KEYS_MAX}");
            }
        } else if self.duration.is_zero() {
            anyhow::bail!("--duration must be positive (it may be 0s only with --fill)");
        }
        Ok(())
    }
}

/// Latency summary of one kind of operation.
#[derive(Debug, Clone, Serialize)]
pub struct OpStats {
    /// Successful operations.
    pub count: u64,
    /// Successful operations per second.
    pub throughput_per_sec: f64,
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
    pub mean_us: f64,
}

impl OpStats {
    fn from(h: &Histogram<u64>, elapsed: Duration) -> OpStats {
        OpStats {
            count: h.len(),
            throughput_per_sec: h.len() as f64 / elapsed.as_secs_f64(),
            p50_us: h.value_at_quantile(0.50),
            p90_us: h.value_at_quantile(0.90),
            p99_us: h.value_at_quantile(0.99),
            p999_us: h.value_at_quantile(0.999),
            max_us: h.max(),
            mean_us: h.mean(),
        }
    }
}

/// What `--json` writes.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    pub clients: usize,
    pub duration_secs: f64,
    pub value_size: usize,
    pub read_ratio: f64,
    pub keys: u64,
    pub consistency: Consistency,
    pub sessions: bool,
    pub endpoints: Vec<String>,
    pub writes: OpStats,
    pub reads: OpStats,
    /// Reads of keys that did not exist (successful reads, counted apart).
    pub read_misses: u64,
    /// Failed operations by kind: the server's code, with the reason of a
    /// 5xx (`not_applied:no_leader`, `indeterminate:timeout`...), or the
    /// transport's (`unreachable`, `timeout`, `connection_broken`).
    /// `indeterminate:*`, `timeout` and `connection_broken` writes may or
    /// may not have been applied.
    pub errors: BTreeMap<String, u64>,
    /// Successful operations per second, reads and writes together.
    pub total_throughput_per_sec: f64,
    /// The fill (`--fill`), before the timed run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fill: Option<fill::FillReport>,
}

/// What one client measured.
struct ClientResult {
    writes: Histogram<u64>,
    reads: Histogram<u64>,
    misses: u64,
    errors: BTreeMap<String, u64>,
}

fn new_histogram() -> Histogram<u64> {
    // Bounds are constants that satisfy the constructor's rules
    // (low >= 1, high >= 2 * low, sigfig <= 5).
    Histogram::new_with_bounds(1, LATENCY_US_MAX, 3).expect("valid histogram bounds")
}

/// Entry point of `raftkv bench`.
pub fn main(args: BenchArgs) -> anyhow::Result<ExitCode> {
    args.validate()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let report = runtime.block_on(run(args.clone()))?;
    if let Some(f) = &report.fill {
        fill::print_fill(f);
    }
    if !args.duration.is_zero() {
        print_report(&report);
    }
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&report)?;
        std::fs::write(path, text + "\n")
            .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
        println!("results written to {}", path.display());
    }
    let filled = report.fill.as_ref().map_or(0, |f| f.keys - f.keys_failed);
    if report.writes.count + report.reads.count + filled == 0 {
        anyhow::bail!("no request succeeded");
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs the benchmark and returns its report.
pub async fn run(mut args: BenchArgs) -> anyhow::Result<BenchReport> {
    args.validate()?;
    if let Some(n) = args.fill {
        args.keys = n;
    }
    let client = args.conn.client()?;
    // Send everything to the leader: it would forward writes anyway.
    let leader = client.find_leader().await;
    match leader {
        Some(id) => eprintln!("leader: node {id} at {}", client.preferred_endpoint()),
        None => {
            // Nothing answered as leader: fail early with the clear
            // "unreachable" message when nothing answers at all.
            if let Err(e @ ClientError::Unreachable { .. }) =
                client.list("", 1, Consistency::Stale).await
            {
                return Err(e.into());
            }
            eprintln!("no leader known yet; starting anyway");
        }
    }
    if args.prefill {
        prefill(&client, &args).await?;
    }

    let targets = Arc::new(Targets::discover(&client, args.conn.tls.config()?).await);
    let mut workers: Vec<Worker> = (0..args.clients)
        .map(|i| Worker::new(&args, targets.clone(), i))
        .collect();
    let fill_report = match args.fill {
        Some(n) => {
            let (report, back) = run_fill(&args, n, workers).await?;
            workers = back;
            Some(report)
        }
        None => None,
    };
    // The fill's failures were counted in the fill's report and in the
    // workers' error counts; the timed run starts its own.
    for w in &mut workers {
        w.result.errors.clear();
    }
    if args.duration.is_zero() {
        return Ok(BenchReport {
            clients: args.clients,
            duration_secs: 0.0,
            value_size: args.value_size,
            read_ratio: args.read_ratio,
            keys: args.keys,
            consistency: args.consistency,
            sessions: !args.no_sessions,
            endpoints: client.endpoints().to_vec(),
            total_throughput_per_sec: 0.0,
            writes: OpStats::from(&new_histogram(), Duration::from_secs(1)),
            reads: OpStats::from(&new_histogram(), Duration::from_secs(1)),
            read_misses: 0,
            // The fill's failures are in its own report.
            errors: BTreeMap::new(),
            fill: fill_report,
        });
    }

    let stop = Arc::new(AtomicBool::new(false));
    let done_ops = Arc::new(AtomicU64::new(0));
    let done_errors = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for mut worker in workers {
        let stop = stop.clone();
        let done_ops = done_ops.clone();
        let done_errors = done_errors.clone();
        let args = args.clone();
        tasks.spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                match worker.one_op(&args).await {
                    Ok(()) => {
                        done_ops.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(()) => {
                        done_errors.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(ERROR_PAUSE).await;
                    }
                }
            }
            worker.result
        });
    }

    // Progress display on stderr (hidden when stderr is not a terminal).
    let total_ms = args.duration.as_millis() as u64;
    let bar = indicatif::ProgressBar::new(total_ms.max(1));
    bar.set_style(
        indicatif::ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bar:30} {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let mut last_ops = 0u64;
    let mut last_at = Instant::now();
    let deadline = started + args.duration;
    loop {
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        tokio::time::sleep((deadline - now).min(Duration::from_millis(200))).await;
        let ops = done_ops.load(Ordering::Relaxed);
        let rate = (ops - last_ops) as f64 / last_at.elapsed().as_secs_f64().max(1e-6);
        last_ops = ops;
        last_at = Instant::now();
        bar.set_position(started.elapsed().as_millis() as u64);
        bar.set_message(format!(
            "{ops} ok, {} errors, {rate:.0} ops/s",
            done_errors.load(Ordering::Relaxed)
        ));
    }
    stop.store(true, Ordering::Relaxed);
    let mut writes = new_histogram();
    let mut reads = new_histogram();
    let mut misses = 0;
    let mut errors: BTreeMap<String, u64> = BTreeMap::new();
    while let Some(joined) = tasks.join_next().await {
        let r = joined.map_err(|e| anyhow::anyhow!("a bench client failed: {e}"))?;
        // Same bounds on both sides: adding cannot fail.
        let _ = writes.add(&r.writes);
        let _ = reads.add(&r.reads);
        misses += r.misses;
        for (k, v) in r.errors {
            *errors.entry(k).or_insert(0) += v;
        }
    }
    // In-flight requests finish after the deadline; throughput counts the
    // time until the last one ended.
    let elapsed = started.elapsed();
    bar.finish_and_clear();
    let w = OpStats::from(&writes, elapsed);
    let r = OpStats::from(&reads, elapsed);
    Ok(BenchReport {
        clients: args.clients,
        duration_secs: elapsed.as_secs_f64(),
        value_size: args.value_size,
        read_ratio: args.read_ratio,
        keys: args.keys,
        consistency: args.consistency,
        sessions: !args.no_sessions,
        endpoints: client.endpoints().to_vec(),
        total_throughput_per_sec: w.throughput_per_sec + r.throughput_per_sec,
        writes: w,
        reads: r,
        read_misses: misses,
        errors,
        fill: fill_report,
    })
}

/// The fill: every client takes the next key of `0..n` and writes it
/// (again after a failure, up to `FILL_ATTEMPTS_MAX` times) until none is
/// left. Returns the report and the workers (their connections kept for
/// the timed run).
async fn run_fill(
    args: &BenchArgs,
    n: u64,
    workers: Vec<Worker>,
) -> anyhow::Result<(fill::FillReport, Vec<Worker>)> {
    let next = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for mut worker in workers {
        let next = next.clone();
        let done = done.clone();
        let args = args.clone();
        tasks.spawn(async move {
            let mut rec = fill::FillRecorder::new(n);
            loop {
                let key = next.fetch_add(1, Ordering::Relaxed);
                if key >= n {
                    break;
                }
                let mut attempts = 0;
                loop {
                    let (start, start_wall) = (Instant::now(), SystemTime::now());
                    if worker.send(&args, key, false).await.is_ok() {
                        rec.record(key, start, start_wall, Instant::now());
                        break;
                    }
                    attempts += 1;
                    if attempts >= FILL_ATTEMPTS_MAX {
                        rec.key_failed();
                        break;
                    }
                    tokio::time::sleep(ERROR_PAUSE).await;
                }
                done.fetch_add(1, Ordering::Relaxed);
            }
            (worker, rec)
        });
    }
    let bar = indicatif::ProgressBar::new(n);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "fill {spinner} [{elapsed_precise}] {bar:30} {pos}/{len} keys {per_sec}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    // Progress on stderr, and when stderr is not a terminal (the bar is
    // hidden then) a plain line every 10 s, for logs of long fills.
    let mut rec = fill::FillRecorder::new(n);
    let mut workers = Vec::with_capacity(args.clients);
    let mut errors: BTreeMap<String, u64> = BTreeMap::new();
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    let (mut line_at, mut line_done) = (Instant::now(), 0u64);
    loop {
        tokio::select! {
            joined = tasks.join_next() => {
                let Some(joined) = joined else { break };
                let (w, r) = joined.map_err(|e| anyhow::anyhow!("a fill client failed: {e}"))?;
                rec.merge(r);
                for (k, v) in &w.result.errors {
                    *errors.entry(k.clone()).or_insert(0) += v;
                }
                workers.push(w);
            }
            _ = tick.tick() => {
                let d = done.load(Ordering::Relaxed);
                bar.set_position(d);
                if bar.is_hidden() && line_at.elapsed() >= Duration::from_secs(10) {
                    eprintln!(
                        "fill: {d}/{n} keys, {:.0} writes/s, {:.0}s",
                        (d - line_done) as f64 / line_at.elapsed().as_secs_f64(),
                        started.elapsed().as_secs_f64()
                    );
                    (line_at, line_done) = (Instant::now(), d);
                }
            }
        }
    }
    bar.finish_and_clear();
    let mut report = rec.report(started.elapsed());
    report.errors = errors;
    Ok((report, workers))
}

/// Where the bench's requests go: every endpoint as `host:port`, the
/// node id -> address map (to follow leader hints), and the first target.
struct Targets {
    addrs: Vec<String>,
    by_id: HashMap<u64, String>,
    first: usize,
    /// TLS settings of `https://` endpoints (`--ca`, `--cert`, `--key`).
    tls: Option<Arc<rustls::ClientConfig>>,
}

impl Targets {
    /// A connection to `addr` (`host:port`), over TLS when the endpoints
    /// are `https://`.
    fn conn(&self, addr: String, timeout: Duration) -> http1::Conn {
        http1::Conn::with_tls(addr, timeout, self.tls.clone())
    }

    /// The endpoints' addresses (the first one the leader, if known) and
    /// the members' client addresses. `https://` endpoints (the first one
    /// decides) are reached over TLS with `tls`.
    async fn discover(client: &Client, tls: Option<Arc<rustls::ClientConfig>>) -> Targets {
        let addrs: Vec<String> = client.endpoints().iter().map(|e| host_port(e)).collect();
        let first = addrs
            .iter()
            .position(|a| *a == host_port(&client.preferred_endpoint()))
            .unwrap_or(0);
        let mut by_id = HashMap::new();
        if let Ok(members) = client.members().await {
            for m in members {
                by_id.insert(m.id, m.client_addr);
            }
        }
        let https = client
            .endpoints()
            .first()
            .is_some_and(|e| e.starts_with("https://"));
        Targets {
            addrs,
            by_id,
            first,
            tls: if https { tls } else { None },
        }
    }
}

fn host_port(endpoint: &str) -> String {
    endpoint
        .trim_start_matches("http://")
        .trim_start_matches("https://")
        .to_string()
}

/// One closed-loop client: its connection, session, value and results.
struct Worker {
    targets: Arc<Targets>,
    conn: http1::Conn,
    index: usize,
    rng: SplitMix64,
    /// The value as a JSON string literal, quotes included.
    value_json: String,
    client_id: u64,
    seq: u64,
    sessions: bool,
    path: String,
    body: Vec<u8>,
    result: ClientResult,
}

/// The parts of an error body the bench looks at.
#[derive(serde::Deserialize, Default)]
struct ErrorBody {
    #[serde(default)]
    error: ErrorDetail,
}

#[derive(serde::Deserialize, Default)]
struct ErrorDetail {
    #[serde(default)]
    code: String,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    leader_hint: Option<u64>,
}

impl Worker {
    fn new(args: &BenchArgs, targets: Arc<Targets>, worker: usize) -> Worker {
        let mut rng = SplitMix64::new(crate::client::random_u64() ^ worker as u64);
        let value: String = (0..args.value_size)
            .map(|_| char::from(b'a' + (rng.next_u64() % 26) as u8))
            .collect();
        let index = targets.first % targets.addrs.len().max(1);
        let conn = targets.conn(targets.addrs[index].clone(), args.conn.timeout);
        Worker {
            conn,
            index,
            targets,
            // Lowercase letters only: no JSON escaping needed.
            value_json: format!("\"{value}\""),
            client_id: crate::client::random_u64() | 1,
            seq: 0,
            sessions: !args.no_sessions,
            rng,
            path: String::with_capacity(128),
            body: Vec::with_capacity(args.value_size + 64),
            result: ClientResult {
                writes: new_histogram(),
                reads: new_histogram(),
                misses: 0,
                errors: BTreeMap::new(),
            },
        }
    }

    /// One request; Ok if it succeeded (its latency recorded), Err if it
    /// failed (its kind counted).
    async fn one_op(&mut self, args: &BenchArgs) -> Result<(), ()> {
        let key = self.rng.next_u64() % args.keys;
        let read = args.read_ratio > 0.0 && self.rng.unit() < args.read_ratio;
        let us = self.send(args, key, read).await?;
        let h = if read {
            &mut self.result.reads
        } else {
            &mut self.result.writes
        };
        h.saturating_record(us.max(1));
        Ok(())
    }

    /// Reads or writes `key`; Ok(latency in µs) if it succeeded, Err if it
    /// failed (its kind counted).
    async fn send(&mut self, args: &BenchArgs, key: u64, read: bool) -> Result<u64, ()> {
        use std::fmt::Write as _;
        self.path.clear();
        self.body.clear();
        let _ = write!(
            self.path,
            "/v1/kv/{}{key}",
            crate::client::encode_path_segment(&args.key_prefix)
        );
        if read {
            let _ = write!(self.path, "?consistency={}", args.consistency.as_str());
        } else {
            self.body.extend_from_slice(b"{\"value\":");
            self.body.extend_from_slice(self.value_json.as_bytes());
            if self.sessions {
                self.seq += 1;
                let _ = write!(
                    VecWriter(&mut self.body),
                    ",\"client_id\":{},\"seq\":{}",
                    self.client_id,
                    self.seq
                );
            }
            self.body.push(b'}');
        }
        let method = if read { "GET" } else { "PUT" };
        let t0 = Instant::now();
        let answer = self.conn.request(method, &self.path, &self.body).await;
        let us = t0.elapsed().as_micros().min(u128::from(LATENCY_US_MAX)) as u64;
        let kind = match answer {
            Ok(a) if a.status == 200 => None,
            Ok(a) if a.status == 404 && read => {
                self.result.misses += 1;
                None
            }
            Ok(a) => {
                let body: ErrorBody = serde_json::from_slice(&a.body).unwrap_or_default();
                let e = body.error;
                if a.status == 503 || e.code == crate::client::NOT_APPLIED {
                    self.follow(e.leader_hint);
                }
                Some(match (e.code.is_empty(), e.reason) {
                    (true, _) => format!("http_{}", a.status),
                    (false, Some(reason)) => format!("{}:{reason}", e.code),
                    (false, None) => e.code,
                })
            }
            Err(http1::TransportError::Connect { .. }) => {
                self.rotate();
                Some("unreachable".to_string())
            }
            Err(http1::TransportError::Timeout { .. }) => Some("timeout".to_string()),
            Err(http1::TransportError::Tls { .. }) => {
                self.rotate();
                Some("tls".to_string())
            }
            Err(http1::TransportError::Broken { .. }) => Some("connection_broken".to_string()),
        };
        match kind {
            None => Ok(us),
            Some(kind) => {
                *self.result.errors.entry(kind).or_insert(0) += 1;
                Err(())
            }
        }
    }

    /// Moves to the hinted leader if its address is known, else to the
    /// next endpoint.
    fn follow(&mut self, hint: Option<u64>) {
        let hinted = hint.and_then(|id| self.targets.by_id.get(&id)).cloned();
        match hinted {
            Some(addr) if addr != self.conn.addr() => {
                if let Some(i) = self.targets.addrs.iter().position(|a| *a == addr) {
                    self.index = i;
                }
                self.conn = self.targets.conn(addr, self.conn_timeout());
            }
            _ => self.rotate(),
        }
    }

    fn rotate(&mut self) {
        self.index = (self.index + 1) % self.targets.addrs.len().max(1);
        self.conn = self
            .targets
            .conn(self.targets.addrs[self.index].clone(), self.conn_timeout());
    }

    fn conn_timeout(&self) -> Duration {
        self.conn.timeout()
    }
}

/// `fmt::Write` into a byte vector (numbers into the request body).
struct VecWriter<'a>(&'a mut Vec<u8>);

impl std::fmt::Write for VecWriter<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

async fn prefill(client: &Client, args: &BenchArgs) -> anyhow::Result<()> {
    let value = "p".repeat(args.value_size);
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..args.clients.min(64) {
        let client = client.clone();
        let next = next.clone();
        let value = value.clone();
        let prefix = args.key_prefix.clone();
        let keys = args.keys;
        tasks.spawn(async move {
            let mut session = client.random_session();
            loop {
                let k = next.fetch_add(1, Ordering::Relaxed);
                if k >= keys {
                    return Ok::<(), ClientError>(());
                }
                session.put(&format!("{prefix}{k}"), &value).await?;
            }
        });
    }
    while let Some(joined) = tasks.join_next().await {
        joined.map_err(|e| anyhow::anyhow!("prefill task failed: {e}"))??;
    }
    eprintln!("prefilled {} keys", args.keys);
    Ok(())
}

fn ms(us: u64) -> String {
    format!("{:.3} ms", us as f64 / 1000.0)
}

/// Prints the human-readable summary.
pub fn print_report(r: &BenchReport) {
    println!(
        "raftkv bench: {} clients, {:.1}s, {}-byte values, read ratio {:.2}, {} keys, {} reads, sessions {}",
        r.clients,
        r.duration_secs,
        r.value_size,
        r.read_ratio,
        r.keys,
        r.consistency.as_str(),
        if r.sessions { "on" } else { "off" }
    );
    for (name, s) in [("writes", &r.writes), ("reads", &r.reads)] {
        if s.count == 0 {
            continue;
        }
        println!(
            "{name:<7} {:>9} ok  {:>10.1}/s  p50 {}  p90 {}  p99 {}  p99.9 {}  max {}",
            s.count,
            s.throughput_per_sec,
            ms(s.p50_us),
            ms(s.p90_us),
            ms(s.p99_us),
            ms(s.p999_us),
            ms(s.max_us)
        );
    }
    if r.read_misses > 0 {
        println!("reads of absent keys: {}", r.read_misses);
    }
    println!("total   {:>10.1} ops/s", r.total_throughput_per_sec);
    let failed: u64 = r.errors.values().sum();
    if failed == 0 {
        println!("errors  none");
    } else {
        let kinds: Vec<String> = r.errors.iter().map(|(k, v)| format!("{k}: {v}")).collect();
        println!("errors  {failed} ({})", kinds.join(", "));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_come_from_the_histogram() {
        let mut h = new_histogram();
        for v in 1..=1000u64 {
            h.record(v).unwrap();
        }
        let s = OpStats::from(&h, Duration::from_secs(2));
        assert_eq!(s.count, 1000);
        assert!((s.throughput_per_sec - 500.0).abs() < 1e-9);
        assert!((495..=505).contains(&s.p50_us), "{}", s.p50_us);
        assert!((985..=995).contains(&s.p99_us), "{}", s.p99_us);
        assert_eq!(s.max_us, 1000);
    }
}
