//! Storage benchmarks on the real disk (issue 4), each store figure measured
//! *interleaved* with the raw-disk figure it is compared to.
//!
//! This machine (and CI) is shared, so absolute numbers drift by 2x between
//! runs. Every benchmark therefore times the store operation and the raw
//! operations it is judged against inside the same criterion sample,
//! alternating them operation by operation (and alternating which goes
//! first), so load affects both alike. After each benchmark a `paired:`
//! summary prints, over all of criterion's calls (samples): the throughput
//! of every operation (median and min..max), and the store relative to each
//! raw operation as `raw time / store time` (1.00 = as fast as the raw disk;
//! median, min..max over calls, and pooled over the whole run). Criterion's
//! own line reports the store operation alone.
//!
//! - `batch_1`: one 100-byte entry + `sync`, against a raw `pwrite` of the
//!   same record size + `fdatasync` (`raw_same`) and a raw 4 KiB `pwrite` +
//!   `fdatasync` (`raw_4k`, the "raw fdatasync rate"). Latency
//!   percentiles of each durable append are printed too.
//! - `batch_64`, `batch_1024`: N 100-byte entries + `sync` (group commit),
//!   against a raw `pwrite` of the same bytes + `fdatasync`.
//! - `large_batch_4m`: 64 entries of 64 KiB (distinct buffers, 4 MiB in all)
//!   and a hard state through `Store::write` (as the runtime calls it), then
//!   `sync`, against a raw 4 MiB `pwrite` + `fdatasync` (the disk's sequential
//!   write bandwidth). Segments rotate every 64 MiB and the store compacts
//!   every 256 MiB (deleting covered segments); the raw file is truncated
//!   every 256 MiB. CPU time per operation (from /proc) is printed too.
//! - `recovery`: `Store::open` of a log of `RAFT_STORAGE_BENCH_RECOVERY_MB`
//!   MiB (default 1024) of 1 KiB entries, against reading the same files
//!   whole (`raw_read`). The files are in the page cache after being
//!   written, so this measures CPU (scan, CRC, index), not the disk.
//!
//! Files go under `RAFT_STORAGE_BENCH_DIR` (default: the system temp dir).
//! Run: `cargo bench -p raft-storage --bench storage` (a filter such as
//! `-- large_batch` runs one benchmark; setups are lazy).

use std::cell::RefCell;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Bencher, Criterion, Throughput};
use raft_core::{Entry, EntryPayload, HardState, LogStore, Membership, Snapshot, SnapshotMeta};
use raft_storage::{RealDisk, Store, StoreConfig};

fn bench_dir(name: &str) -> tempfile::TempDir {
    let base = std::env::var("RAFT_STORAGE_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| std::env::temp_dir());
    tempfile::Builder::new()
        .prefix(name)
        .tempdir_in(base)
        .expect("create bench dir")
}

fn entry(index: u64, data: &Bytes) -> Entry {
    Entry {
        term: 1,
        index,
        payload: EntryPayload::Normal(data.clone()),
    }
}

fn new_store(dir: &Path) -> Store<RealDisk> {
    Store::bootstrap(
        RealDisk,
        dir,
        1,
        1,
        Membership::new_voters([1, 2, 3]),
        StoreConfig::default(),
    )
    .expect("bootstrap")
}

/// Size of the WAL record of a 100-byte entry with a 2-byte index varint:
/// 16 header + 1 term + 2 index + 1 kind + 1 length + 100.
const RECORD_100B_BYTES: usize = 121;

/// A plain file appended to with `pwrite` + `fdatasync`, wrapping (truncate +
/// fdatasync, counted in its time) at `wrap_bytes` so the disk use stays
/// bounded, like the store's compaction.
struct RawAppender {
    _dir: tempfile::TempDir,
    file: File,
    buf: Vec<u8>,
    off: u64,
    wrap_bytes: u64,
}

impl RawAppender {
    fn new(bytes: usize, wrap_bytes: u64) -> Self {
        let dir = bench_dir("raw");
        let file = OpenOptions::new()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(dir.path().join("raw"))
            .expect("open");
        RawAppender {
            _dir: dir,
            file,
            buf: (0..bytes).map(|i| (i * 31) as u8).collect(),
            off: 0,
            wrap_bytes,
        }
    }

    fn append_sync(&mut self) {
        self.file.write_all_at(&self.buf, self.off).expect("write");
        self.file.sync_data().expect("fdatasync");
        self.off += self.buf.len() as u64;
        if self.off >= self.wrap_bytes {
            self.file.set_len(0).expect("truncate");
            self.file.sync_data().expect("fdatasync");
            self.off = 0;
        }
    }
}

/// Nanoseconds this thread has spent on a CPU (user + system), from
/// /proc/thread-self/schedstat; `None` where unavailable.
fn thread_cpu_ns() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    s.split_whitespace().next()?.parse().ok()
}

/// What one benchmark's interleaved operations measured.
struct Paired {
    names: Vec<&'static str>,
    /// Units (elements or bytes) per operation, per operation kind.
    units: Vec<f64>,
    unit: &'static str,
    /// One row per criterion call: iterations, then total time per op kind.
    calls: Vec<(u64, Vec<Duration>)>,
    /// Latency of every single operation, per op kind (if kept).
    latencies: Option<Vec<Vec<Duration>>>,
    /// CPU time per op kind, summed (if measured).
    cpu_ns: Option<Vec<u64>>,
    ops: Vec<u64>,
}

impl Paired {
    fn new(names: &[&'static str], units: &[f64], unit: &'static str) -> RefCell<Self> {
        RefCell::new(Paired {
            names: names.to_vec(),
            units: units.to_vec(),
            unit,
            calls: Vec::new(),
            latencies: None,
            cpu_ns: None,
            ops: vec![0; names.len()],
        })
    }

    fn keep_latencies(self_: &RefCell<Self>) {
        let n = self_.borrow().names.len();
        self_.borrow_mut().latencies = Some(vec![Vec::new(); n]);
    }

    fn measure_cpu(self_: &RefCell<Self>) {
        let n = self_.borrow().names.len();
        if thread_cpu_ns().is_some() {
            self_.borrow_mut().cpu_ns = Some(vec![0; n]);
        }
    }
}

/// The body of a criterion `iter_custom`: runs every operation `iters`
/// times, interleaved (the first one to go rotates each iteration), and
/// returns the total time of operation 0 (the store's) to criterion.
fn interleaved(b: &mut Bencher, paired: &RefCell<Paired>, ops: &mut [&mut dyn FnMut()]) {
    b.iter_custom(|iters| {
        let n = ops.len();
        let mut totals = vec![Duration::ZERO; n];
        let mut p = paired.borrow_mut();
        let with_cpu = p.cpu_ns.is_some();
        for i in 0..iters {
            for k in 0..n {
                let op = (i as usize + k) % n;
                let cpu0 = if with_cpu { thread_cpu_ns() } else { None };
                let t0 = Instant::now();
                (ops[op])();
                let dt = t0.elapsed();
                if let (Some(c0), Some(cpu)) = (cpu0, &mut p.cpu_ns) {
                    let c1 = thread_cpu_ns().unwrap_or(c0);
                    cpu[op] += c1.saturating_sub(c0);
                }
                totals[op] += dt;
                p.ops[op] += 1;
                if let Some(l) = &mut p.latencies {
                    l[op].push(dt);
                }
            }
        }
        p.calls.push((iters, totals.clone()));
        totals[0]
    });
}

fn median_min_max(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() {
        return (f64::NAN, f64::NAN, f64::NAN);
    }
    (v[v.len() / 2], v[0], v[v.len() - 1])
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// Prints the paired summary of one benchmark and forgets its samples.
fn report(title: &str, paired: &RefCell<Paired>) {
    let mut guard = paired.borrow_mut();
    let p = &mut *guard;
    // Criterion's warm-up calls are included: they are interleaved too.
    let calls: Vec<_> = p.calls.iter().filter(|c| c.0 > 0).cloned().collect();
    println!("paired: {title} ({} calls)", calls.len());
    for (k, name) in p.names.iter().enumerate() {
        let rates: Vec<f64> = calls
            .iter()
            .map(|(iters, t)| *iters as f64 * p.units[k] / t[k].as_secs_f64())
            .collect();
        let (med, lo, hi) = median_min_max(rates);
        let mut line = format!(
            "  {name:<10} {med:>12.1} {unit} (min {lo:.1}, max {hi:.1})",
            unit = p.unit
        );
        if let Some(l) = &mut p.latencies {
            let lat = &mut l[k];
            lat.sort();
            line += &format!(
                "  latency p50 {:.3} ms p99 {:.3} ms",
                percentile(lat, 0.5).as_secs_f64() * 1e3,
                percentile(lat, 0.99).as_secs_f64() * 1e3
            );
        }
        if let Some(cpu) = &p.cpu_ns {
            line += &format!(
                "  cpu {:.3} ms/op",
                cpu[k] as f64 / p.ops[k].max(1) as f64 / 1e6
            );
        }
        println!("{line}");
    }
    for k in 1..p.names.len() {
        // Throughput relative to the raw operation, per unit of work.
        let scale = p.units[0] / p.units[k];
        let ratios: Vec<f64> = calls
            .iter()
            .map(|(_, t)| scale * t[k].as_secs_f64() / t[0].as_secs_f64())
            .collect();
        let (med, lo, hi) = median_min_max(ratios);
        let pooled = scale * calls.iter().map(|c| c.1[k].as_secs_f64()).sum::<f64>()
            / calls.iter().map(|c| c.1[0].as_secs_f64()).sum::<f64>();
        println!(
            "  {} / {}: median {med:.3} (min {lo:.3}, max {hi:.3}), pooled {pooled:.3}",
            p.names[0], p.names[k]
        );
    }
    p.calls.clear();
    if let Some(l) = &mut p.latencies {
        l.iter_mut().for_each(Vec::clear);
    }
}

struct BatchState {
    _dir: tempfile::TempDir,
    store: Store<RealDisk>,
    next: u64,
    es: Vec<Entry>,
    raw_same: RawAppender,
    raw_4k: RawAppender,
}

fn batches(c: &mut Criterion) {
    let mut g = c.benchmark_group("store");
    g.sample_size(20).measurement_time(Duration::from_secs(10));
    let data = Bytes::from(vec![7u8; 100]);
    for batch in [1u64, 64, 1024] {
        let name = format!("batch_{batch}");
        let n = batch as f64;
        let paired = if batch == 1 {
            let p = Paired::new(&["store", "raw_same", "raw_4k"], &[n, n, 1.0], "ops/s");
            Paired::keep_latencies(&p);
            p
        } else {
            Paired::new(&["store", "raw_same"], &[n, n], "entries/s")
        };
        // Set up lazily (only if the filter selects this benchmark) and once
        // (criterion calls the closure once per sample).
        let mut state: Option<BatchState> = None;
        g.throughput(Throughput::Elements(batch));
        g.bench_function(&name, |b| {
            let st = state.get_or_insert_with(|| {
                let dir = bench_dir("store");
                let store = new_store(dir.path());
                BatchState {
                    _dir: dir,
                    store,
                    next: 1,
                    es: Vec::with_capacity(batch as usize),
                    raw_same: RawAppender::new(RECORD_100B_BYTES * batch as usize, 256 << 20),
                    raw_4k: RawAppender::new(4 << 10, 256 << 20),
                }
            });
            let BatchState {
                store,
                next,
                es,
                raw_same,
                raw_4k,
                ..
            } = st;
            let mut store_op = || {
                es.clear();
                es.extend((*next..*next + batch).map(|i| entry(i, &data)));
                store.append(es).expect("append");
                store.sync().expect("sync");
                *next += batch;
            };
            let mut raw_same_op = || raw_same.append_sync();
            let mut raw_4k_op = || raw_4k.append_sync();
            if batch == 1 {
                interleaved(
                    b,
                    &paired,
                    &mut [&mut store_op, &mut raw_same_op, &mut raw_4k_op],
                );
            } else {
                interleaved(b, &paired, &mut [&mut store_op, &mut raw_same_op]);
            }
        });
        if state.is_some() {
            report(&name, &paired);
        }
    }
    g.finish();
}

const LARGE_ENTRIES: u64 = 64;
const LARGE_ENTRY_BYTES: usize = 64 << 10;
const LARGE_BATCH_BYTES: u64 = LARGE_ENTRIES * LARGE_ENTRY_BYTES as u64;

struct LargeState {
    _dir: tempfile::TempDir,
    store: Store<RealDisk>,
    payloads: Vec<Bytes>,
    next: u64,
    es: Vec<Entry>,
    raw: RawAppender,
}

fn large_batch(c: &mut Criterion) {
    let mut g = c.benchmark_group("store");
    g.sample_size(20).measurement_time(Duration::from_secs(15));
    g.throughput(Throughput::Bytes(LARGE_BATCH_BYTES));
    let mib = LARGE_BATCH_BYTES as f64 / (1 << 20) as f64;
    let paired = Paired::new(&["store", "raw_seq"], &[mib, mib], "MiB/s");
    Paired::measure_cpu(&paired);
    let mut state: Option<LargeState> = None;
    g.bench_function("large_batch_4m", |b| {
        let st = state.get_or_insert_with(|| {
            let dir = bench_dir("store");
            let store = new_store(dir.path());
            LargeState {
                _dir: dir,
                store,
                // Distinct payload buffers, as many bytes as the raw buffer:
                // neither side writes from memory hot in the CPU's caches.
                payloads: (0..LARGE_ENTRIES)
                    .map(|k| Bytes::from(vec![k as u8; LARGE_ENTRY_BYTES]))
                    .collect(),
                next: 1,
                es: Vec::with_capacity(LARGE_ENTRIES as usize),
                raw: RawAppender::new(LARGE_BATCH_BYTES as usize, 256 << 20),
            }
        });
        let LargeState {
            store,
            payloads,
            next,
            es,
            raw,
            ..
        } = st;
        let mut store_op = || {
            es.clear();
            es.extend((0..LARGE_ENTRIES).map(|k| entry(*next + k, &payloads[k as usize])));
            *next += LARGE_ENTRIES;
            let commit = *next - 1;
            let hs = HardState {
                term: 1,
                vote: Some(1),
                commit,
            };
            store.write(None, es, Some(hs)).expect("write");
            store.sync().expect("sync");
            // Bound the disk use: compact what is behind every 256 MiB.
            if commit % (LARGE_ENTRIES * 64) == 0 {
                let snap = Snapshot {
                    meta: SnapshotMeta {
                        last_index: commit,
                        last_term: 1,
                        membership: Membership::new_voters([1, 2, 3]),
                    },
                    data: Bytes::from_static(b"s"),
                };
                store.compact(&snap).expect("compact");
            }
        };
        let mut raw_op = || raw.append_sync();
        interleaved(b, &paired, &mut [&mut store_op, &mut raw_op]);
    });
    if state.is_some() {
        report("large_batch_4m", &paired);
    }
    g.finish();
}

struct RecoveryState {
    dir: tempfile::TempDir,
    files: Vec<PathBuf>,
    buf: Vec<u8>,
}

fn recovery(c: &mut Criterion) {
    let mb: u64 = std::env::var("RAFT_STORAGE_BENCH_RECOVERY_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1024);
    let mut g = c.benchmark_group("recovery");
    g.sample_size(10).measurement_time(Duration::from_secs(40));
    // Criterion wants the byte count before the (lazy) setup: the log is
    // `mb` MiB of 1 KiB payloads, plus ~2% of framing not counted here
    // (the paired summary counts the files' real size).
    let total_entries = (mb << 20) / 1024;
    g.throughput(Throughput::Bytes(mb << 20));
    let paired = Paired::new(&["open", "raw_read"], &[1.0, 1.0], "MiB/s");
    Paired::measure_cpu(&paired);
    let mut state: Option<RecoveryState> = None;
    g.bench_function(format!("open_{mb}MiB"), |b| {
        let st = state.get_or_insert_with(|| {
            let dir = bench_dir("recovery");
            let data = Bytes::from(vec![9u8; 1024]);
            let store = new_store(dir.path());
            let mut next = 1;
            while next <= total_entries {
                let n = 4096.min(total_entries - next + 1);
                let es: Vec<Entry> = (next..next + n).map(|i| entry(i, &data)).collect();
                store.append(&es).expect("append");
                next += n;
            }
            store.sync().expect("sync");
            drop(store);
            let files: Vec<PathBuf> = std::fs::read_dir(dir.path())
                .expect("list")
                .map(|e| e.expect("entry").path())
                .collect();
            let bytes: u64 = files
                .iter()
                .map(|p| std::fs::metadata(p).expect("meta").len())
                .sum();
            let mib = bytes as f64 / (1 << 20) as f64;
            paired.borrow_mut().units = vec![mib, mib];
            RecoveryState {
                dir,
                files,
                buf: Vec::new(),
            }
        });
        let RecoveryState { dir, files, buf } = st;
        let mut open_op = || {
            let s = Store::open(RealDisk, dir.path(), 1, 1, StoreConfig::default()).expect("open");
            assert_eq!(s.last_index(), total_entries);
        };
        let mut read_op = || {
            for p in files.iter() {
                let f = File::open(p).expect("open");
                let len = f.metadata().expect("meta").len() as usize;
                buf.resize(len, 0);
                f.read_exact_at(buf, 0).expect("read");
            }
        };
        interleaved(b, &paired, &mut [&mut open_op, &mut read_op]);
    });
    if state.is_some() {
        report(&format!("recovery_{mb}MiB"), &paired);
    }
    g.finish();
}

criterion_group!(benches, batches, large_batch, recovery);
criterion_main!(benches);
