//! Fills a store with N keys of V bytes through `apply_batch`, as a host
//! would apply committed entries, and measures what issue 11 asks about:
//! apply throughput in the first and last 10% of the fill, apply-batch
//! latency percentiles, checkpoint times, reopen time (clean and after a
//! crash), the snapshot stream and receive rates, and memory (RSS).
//!
//! Quick run (200,000 keys x 1 KiB, about 200 MB):
//!
//! ```text
//! cargo bench -p raftkv-mvcc --bench fill
//! ```
//!
//! The 1 GiB run of ARCHITECTURE.md:
//!
//! ```text
//! nice -n 10 cargo bench -p raftkv-mvcc --bench fill -- --keys 1000000
//! ```
//!
//! Options: `--keys N`, `--value-bytes B` (1024), `--batch E` (entries per
//! apply batch, 64), `--checkpoint-mib M` (a checkpoint after every M MiB
//! of applied values, 16; `--checkpoint-every E` counts entries instead),
//! `--cache-mib M` (64), `--dir D` (a temporary directory by default,
//! removed at the end), `--chunk-kib K` (snapshot chunk size, 1024).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use raft_core::rng::SplitMix64;
use raft_core::{Entry, EntryPayload};
use raftkv_mvcc::{MvccOptions, MvccStore, SnapshotReceiver};
use raftkv_state::{Command, KvConfig};

struct Args {
    keys: u64,
    value_bytes: usize,
    batch: u64,
    checkpoint_every: u64,
    checkpoint_mib: u64,
    cache_mib: usize,
    dir: Option<PathBuf>,
    chunk_kib: usize,
    child_crash: Option<PathBuf>,
}

fn parse_args() -> Args {
    let mut args = Args {
        keys: 200_000,
        value_bytes: 1024,
        batch: 64,
        checkpoint_every: 0,
        checkpoint_mib: 16,
        cache_mib: 64,
        dir: None,
        chunk_kib: 1024,
        child_crash: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut val = || it.next().unwrap_or_else(|| panic!("{a} needs a value"));
        match a.as_str() {
            "--keys" => args.keys = val().parse().expect("--keys N"),
            "--value-bytes" => args.value_bytes = val().parse().expect("--value-bytes B"),
            "--batch" => args.batch = val().parse().expect("--batch E"),
            "--checkpoint-every" => {
                args.checkpoint_every = val().parse().expect("--checkpoint-every E");
                args.checkpoint_mib = 0;
            }
            "--checkpoint-mib" => {
                let mib: u64 = val().parse().expect("--checkpoint-mib M");
                args.checkpoint_mib = mib;
            }
            "--cache-mib" => args.cache_mib = val().parse().expect("--cache-mib M"),
            "--dir" => args.dir = Some(PathBuf::from(val())),
            "--chunk-kib" => args.chunk_kib = val().parse().expect("--chunk-kib K"),
            "--child-crash" => args.child_crash = Some(PathBuf::from(val())),
            // cargo bench passes --bench; ignore it and other harness flags.
            _ => {}
        }
    }
    if args.checkpoint_every == 0 {
        // Entries per checkpoint from the data size.
        args.checkpoint_every =
            (args.checkpoint_mib.max(1) * 1024 * 1024 / args.value_bytes.max(1) as u64).max(1);
    }
    args
}

fn config() -> KvConfig {
    KvConfig {
        value_bytes_max: 1024 * 1024,
        ..KvConfig::default()
    }
}

fn options(args: &Args) -> MvccOptions {
    MvccOptions {
        cache_bytes: args.cache_mib * 1024 * 1024,
        verify_on_open: false,
    }
}

/// Keys in a random order (a hash of the sequence number), the worst case
/// for a B-tree: every insert lands on a different leaf.
fn key(i: u64) -> String {
    let mut rng = SplitMix64::new(i);
    format!("key-{:016x}", rng.next_u64())
}

fn rss() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .map_or(0, |kib| kib / 1024)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// CPU time (user + system) of the calling thread: on a shared machine
/// wall time measures the neighbours too.
fn thread_cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap_or_default();
    // Fields after the command name (which may hold spaces): utime is the
    // 14th field overall, stime the 15th, in clock ticks of 10 ms.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    Duration::from_millis((ticks(11) + ticks(12)) * 10)
}

/// (CPU time, time spent runnable but waiting for a CPU) of the calling
/// thread, from the scheduler's statistics (nanoseconds): wall time minus
/// both is the time the thread was blocked, waiting for the disk.
fn thread_sched() -> (Duration, Duration) {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat").unwrap_or_default();
    let mut fields = stat
        .split_whitespace()
        .map(|v| v.parse::<u64>().unwrap_or(0));
    let cpu = fields.next().unwrap_or(0);
    let waiting = fields.next().unwrap_or(0);
    (Duration::from_nanos(cpu), Duration::from_nanos(waiting))
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn put_entry(index: u64, key: String, value: &Bytes) -> Entry {
    let cmd = Command::put(key, value.clone()).with_session(index % 64, index);
    Entry {
        term: 1,
        index,
        payload: EntryPayload::Normal(cmd.encode()),
    }
}

/// Child mode: open, apply a batch, checkpoint, apply one more batch and
/// exit without closing, as a crash would (no destructor runs).
fn child_crash(path: &Path, args: &Args) -> ! {
    let mut store = MvccStore::open(path, config(), options(args)).expect("child open");
    let value = Bytes::from(vec![b'c'; args.value_bytes]);
    for _ in 0..2 {
        let start = store.applied_index() + 1;
        let batch: Vec<_> = (start..start + args.batch)
            .map(|i| put_entry(i, key(i + 1_000_000_000), &value))
            .collect();
        store.apply_batch(&batch).expect("child apply");
        if store.durable_applied_index() < start {
            store.checkpoint().expect("child checkpoint");
        }
    }
    std::process::exit(0);
}

fn main() {
    let args = parse_args();
    if let Some(path) = &args.child_crash {
        child_crash(path, &args);
    }
    let tmp;
    let dir = match &args.dir {
        Some(d) => {
            std::fs::create_dir_all(d).expect("create --dir");
            d.clone()
        }
        None => {
            tmp = tempfile::tempdir().expect("temp dir");
            tmp.path().to_path_buf()
        }
    };
    let path = dir.join("state.redb");
    let _ = std::fs::remove_file(&path);
    println!(
        "fill: {} keys x {} B, batches of {}, checkpoint every {} entries, cache {} MiB, file {}",
        args.keys,
        args.value_bytes,
        args.batch,
        args.checkpoint_every,
        args.cache_mib,
        path.display()
    );

    let mut store = MvccStore::open(&path, config(), options(&args)).expect("open");
    let value = Bytes::from(vec![b'v'; args.value_bytes]);
    let mut batch_us = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram");
    let tenth = (args.keys / 10).max(1);
    // Time spent in apply_batch and in checkpoints, per tenth of the fill.
    let mut apply_in_tenth = [Duration::ZERO; 10];
    let mut checkpoint_in_tenth = [Duration::ZERO; 10];
    let mut checkpoints: Vec<Duration> = Vec::new();
    let mut checkpoint_cpu = Duration::ZERO;
    let mut checkpoint_waiting = Duration::ZERO;
    let fill_start = Instant::now();
    // CPU time of this thread (apply and checkpoints) per tenth of the fill.
    let mut cpu_in_tenth = [Duration::ZERO; 10];
    let mut cpu_mark = (0usize, thread_cpu());
    let mut index = 0;
    while index < args.keys {
        let n = args.batch.min(args.keys - index);
        let batch: Vec<_> = (index + 1..=index + n)
            .map(|i| put_entry(i, key(i), &value))
            .collect();
        let decile = ((index * 10) / args.keys).min(9) as usize;
        if decile != cpu_mark.0 {
            let now = thread_cpu();
            cpu_in_tenth[cpu_mark.0] += now - cpu_mark.1;
            cpu_mark = (decile, now);
        }
        let t = Instant::now();
        store.apply_batch(&batch).expect("apply");
        let took = t.elapsed();
        apply_in_tenth[decile] += took;
        batch_us
            .record(took.as_micros().max(1) as u64)
            .expect("in range");
        let before = index;
        index += n;
        if index / args.checkpoint_every != before / args.checkpoint_every {
            let t = Instant::now();
            let (cpu, waiting) = thread_sched();
            store.checkpoint().expect("checkpoint");
            let took = t.elapsed();
            let (cpu_after, waiting_after) = thread_sched();
            checkpoint_cpu += cpu_after - cpu;
            checkpoint_waiting += waiting_after - waiting;
            checkpoint_in_tenth[decile] += took;
            checkpoints.push(took);
        }
    }
    let fill = fill_start.elapsed();
    let fill_cpu = thread_cpu();
    cpu_in_tenth[cpu_mark.0] += fill_cpu - cpu_mark.1;
    let mb = |entries: u64| (entries * args.value_bytes as u64) as f64 / 1e6;
    println!(
        "fill: {:.1} s, {:.0} entries/s ({:.1} MB/s) overall, checkpoints included; main thread CPU {:.1} s",
        fill.as_secs_f64(),
        args.keys as f64 / fill.as_secs_f64(),
        mb(args.keys) / fill.as_secs_f64(),
        fill_cpu.as_secs_f64()
    );
    let rate = |d: Duration| tenth as f64 / d.as_secs_f64();
    for (name, i) in [("first", 0), ("last", 9)] {
        let with = apply_in_tenth[i] + checkpoint_in_tenth[i];
        println!(
            "{name} 10%: apply {:.0} entries/s ({:.1} MB/s); with its checkpoints {:.0} entries/s",
            rate(apply_in_tenth[i]),
            mb(tenth) / apply_in_tenth[i].as_secs_f64(),
            rate(with)
        );
    }
    println!(
        "ratio last/first 10%: apply {:.2}, with checkpoints {:.2}",
        apply_in_tenth[0].as_secs_f64() / apply_in_tenth[9].as_secs_f64(),
        (apply_in_tenth[0] + checkpoint_in_tenth[0]).as_secs_f64()
            / (apply_in_tenth[9] + checkpoint_in_tenth[9]).as_secs_f64()
    );
    let rates: Vec<String> = apply_in_tenth
        .iter()
        .map(|d| format!("{:.0}", rate(*d)))
        .collect();
    println!("apply entries/s per tenth: {}", rates.join(" "));
    let cpu: Vec<String> = cpu_in_tenth
        .iter()
        .map(|d| format!("{:.2}", d.as_secs_f64()))
        .collect();
    println!(
        "CPU s per tenth (apply + checkpoints): {}; ratio first/last {:.2}",
        cpu.join(" "),
        cpu_in_tenth[0].as_secs_f64() / cpu_in_tenth[9].as_secs_f64().max(0.01)
    );
    println!(
        "apply batch ({} entries) latency: p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms",
        args.batch,
        batch_us.value_at_quantile(0.5) as f64 / 1000.0,
        batch_us.value_at_quantile(0.99) as f64 / 1000.0,
        batch_us.value_at_quantile(0.999) as f64 / 1000.0,
        batch_us.max() as f64 / 1000.0
    );
    if !checkpoints.is_empty() {
        let mut sorted = checkpoints.clone();
        sorted.sort();
        let at = |q: f64| sorted[((sorted.len() - 1) as f64 * q).round() as usize];
        let mean = checkpoints.iter().sum::<Duration>() / checkpoints.len() as u32;
        println!(
            "checkpoints during the fill (every {} entries = {:.1} MiB of values): {}, mean {:.1} ms, p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
            args.checkpoint_every,
            (args.checkpoint_every * args.value_bytes as u64) as f64 / (1024.0 * 1024.0),
            checkpoints.len(),
            ms(mean),
            ms(at(0.5)),
            ms(at(0.99)),
            ms(*sorted.last().expect("not empty"))
        );
        let n = checkpoints.len() as f64;
        let wall: Duration = checkpoints.iter().sum();
        println!(
            "per checkpoint: CPU {:.1} ms, runnable waiting for a CPU {:.1} ms, blocked (disk) {:.1} ms",
            ms(checkpoint_cpu) / n,
            ms(checkpoint_waiting) / n,
            ms(wall.saturating_sub(checkpoint_cpu + checkpoint_waiting)) / n
        );
    }
    let t = Instant::now();
    let durable = store.checkpoint().expect("final checkpoint");
    println!(
        "final checkpoint: {:.1} ms (durable applied index {durable})",
        ms(t.elapsed())
    );
    let file_bytes = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    let (rss_now, rss_peak) = rss();
    println!(
        "file: {:.1} MB for {:.1} MB of values; RSS after fill {rss_now} MiB (peak {rss_peak} MiB)",
        file_bytes as f64 / 1e6,
        mb(args.keys)
    );

    // Snapshot stream: read every chunk from a view while the store stays
    // writable.
    let chunk_bytes = args.chunk_kib * 1024;
    let t = Instant::now();
    let mut streamed = 0u64;
    let mut chunks = 0u64;
    for chunk in store.snapshot_source(chunk_bytes).expect("source") {
        let chunk = chunk.expect("chunk");
        streamed += chunk.payload.len() as u64;
        chunks += 1;
    }
    let stream = t.elapsed();
    println!(
        "snapshot stream: {:.1} MB in {chunks} chunks in {:.2} s = {:.0} MB/s",
        streamed as f64 / 1e6,
        stream.as_secs_f64(),
        streamed as f64 / 1e6 / stream.as_secs_f64()
    );

    // Snapshot receive: the same stream into a new file beside a second
    // store, then the atomic switch.
    let peer_path = dir.join("peer.redb");
    let _ = std::fs::remove_file(&peer_path);
    let mut peer = MvccStore::open(&peer_path, config(), options(&args)).expect("peer open");
    let t = Instant::now();
    let cpu = thread_cpu();
    let mut rx = SnapshotReceiver::begin(&peer_path, &config(), &options(&args)).expect("begin");
    for chunk in store.snapshot_source(chunk_bytes).expect("source") {
        rx.push(&chunk.expect("chunk")).expect("push");
    }
    peer.install(rx.finish().expect("finish")).expect("install");
    let receive = t.elapsed();
    let cpu = thread_cpu() - cpu;
    assert_eq!(peer.applied_index(), durable);
    println!(
        "snapshot send+receive+install (one thread): {:.2} s = {:.0} MB/s; CPU {:.2} s = {:.0} MB/s per CPU second",
        receive.as_secs_f64(),
        streamed as f64 / 1e6 / receive.as_secs_f64(),
        cpu.as_secs_f64(),
        streamed as f64 / 1e6 / cpu.as_secs_f64().max(0.01)
    );
    drop(peer);
    let _ = std::fs::remove_file(&peer_path);

    // The same with the sender on its own thread, as between two nodes:
    // chunks through a bounded channel (4 chunks in flight).
    let mut peer = MvccStore::open(&peer_path, config(), options(&args)).expect("peer open");
    let t = Instant::now();
    let cpu = thread_cpu();
    let mut rx = SnapshotReceiver::begin(&peer_path, &config(), &options(&args)).expect("begin");
    let source = store.snapshot_source(chunk_bytes).expect("source");
    let (tx, chunks_rx) = std::sync::mpsc::sync_channel(4);
    let sender = std::thread::spawn(move || {
        for chunk in source {
            if tx.send(chunk.expect("chunk")).is_err() {
                break;
            }
        }
    });
    for chunk in chunks_rx {
        rx.push(&chunk).expect("push");
    }
    sender.join().expect("sender thread");
    peer.install(rx.finish().expect("finish")).expect("install");
    let receive = t.elapsed();
    let cpu = thread_cpu() - cpu;
    assert_eq!(peer.applied_index(), durable);
    let (rss_now, rss_peak) = rss();
    println!(
        "snapshot send+receive+install (sender thread, receiver thread): {:.2} s = {:.0} MB/s; receiver CPU {:.2} s; RSS {rss_now} MiB (peak {rss_peak} MiB)",
        receive.as_secs_f64(),
        streamed as f64 / 1e6 / receive.as_secs_f64(),
        cpu.as_secs_f64()
    );
    drop(peer);
    let _ = std::fs::remove_file(&peer_path);

    // Clean reopen, then the first read.
    drop(store);
    let t = Instant::now();
    let store = MvccStore::open(&path, config(), options(&args)).expect("reopen");
    let opened = t.elapsed();
    let kv = store.get(key(args.keys / 2).as_bytes()).expect("read");
    assert!(kv.is_some());
    println!(
        "clean reopen: {:.1} ms, first read after {:.1} ms (applied index {})",
        ms(opened),
        ms(t.elapsed()),
        store.applied_index()
    );
    // Random reads with the page cache warm and redb's cache cold.
    let mut get_us = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram");
    let mut rng = SplitMix64::new(42);
    for _ in 0..10_000 {
        let k = key(1 + rng.next_u64() % args.keys);
        let t = Instant::now();
        assert!(store.get(k.as_bytes()).expect("get").is_some());
        get_us
            .record(t.elapsed().as_micros().max(1) as u64)
            .expect("in range");
    }
    println!(
        "random get: p50 {} us, p99 {} us, p99.9 {} us",
        get_us.value_at_quantile(0.5),
        get_us.value_at_quantile(0.99),
        get_us.value_at_quantile(0.999)
    );
    drop(store);

    // Reopen after a crash: a child process applies, checkpoints, applies
    // again and exits without closing the store.
    let exe = std::env::current_exe().expect("current exe");
    let status = std::process::Command::new(exe)
        .arg("--child-crash")
        .arg(&path)
        .args(["--value-bytes", &args.value_bytes.to_string()])
        .args(["--batch", &args.batch.to_string()])
        .args(["--cache-mib", &args.cache_mib.to_string()])
        .status()
        .expect("run the crashing child");
    assert!(status.success(), "child: {status}");
    let t = Instant::now();
    let store = MvccStore::open(&path, config(), options(&args)).expect("reopen after crash");
    let opened = t.elapsed();
    let _ = store.get(key(1).as_bytes()).expect("read");
    println!(
        "reopen after a crash: {:.1} ms, first read after {:.1} ms (durable applied index {} = the child's checkpoint)",
        ms(opened),
        ms(t.elapsed()),
        store.durable_applied_index()
    );
    let (rss_now, rss_peak) = rss();
    println!("RSS at the end: {rss_now} MiB (peak {rss_peak} MiB)");
}
