//! Storage benchmarks on the real disk (issue 4).
//!
//! - `raw/fdatasync_4k_append`: append 4 KiB to a plain file + fdatasync;
//!   the disk's ceiling for durable appends.
//! - `raw/fdatasync_116b_append`: the same with 116 bytes, the size of one
//!   framed 100-byte entry record: the ceiling for `batch_1` below.
//! - `raw/seq_write_4m`: append 4 MiB + fdatasync; sequential bandwidth.
//! - `store/entries_100b/batch_N`: append N entries of 100 bytes + `sync`
//!   (group commit: one fdatasync per batch), N = 1, 64, 1024.
//! - `store/large_batch_4m`: 64 entries of 64 KiB + `sync`.
//! - `recovery/open`: `Store::open` of a log of `RAFT_STORAGE_BENCH_RECOVERY_MB`
//!   MiB (default 1024) of 1 KiB entries. The files are in the page cache
//!   after they are written, so this measures CPU (scan, CRC, index).
//!
//! Files go under `RAFT_STORAGE_BENCH_DIR` (default: the system temp dir).
//! Run: `cargo bench -p raft-storage --bench storage`.

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use raft_core::{Entry, EntryPayload, HardState, LogStore, Membership};
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

fn new_store(dir: &std::path::Path) -> Store<RealDisk> {
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

fn raw(c: &mut Criterion) {
    let mut g = c.benchmark_group("raw");
    g.sample_size(20).measurement_time(Duration::from_secs(5));
    for (name, size) in [
        ("fdatasync_4k_append", 4usize << 10),
        ("fdatasync_116b_append", 116),
        ("seq_write_4m", 4 << 20),
    ] {
        let dir = bench_dir("raw");
        let f = OpenOptions::new()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(dir.path().join("raw"))
            .expect("open");
        let buf = vec![0xA5u8; size];
        let mut off = 0u64;
        g.throughput(if size > 4096 {
            Throughput::Bytes(size as u64)
        } else {
            Throughput::Elements(1)
        });
        g.bench_function(name, |b| {
            b.iter(|| {
                f.write_all_at(&buf, off).expect("write");
                f.sync_data().expect("fdatasync");
                off += size as u64;
                // Keep the file bounded (and the test fair: always appending
                // to a growing file, like the WAL, but not forever).
                if off > 1 << 30 {
                    f.set_len(0).expect("truncate");
                    f.sync_data().expect("fdatasync");
                    off = 0;
                }
            })
        });
    }
    g.finish();
}

fn store_batches(c: &mut Criterion) {
    let mut g = c.benchmark_group("store");
    g.sample_size(20).measurement_time(Duration::from_secs(5));
    let data = Bytes::from(vec![7u8; 100]);
    for batch in [1u64, 64, 1024] {
        let dir = bench_dir("store");
        let store = new_store(dir.path());
        let mut next = 1u64;
        g.throughput(Throughput::Elements(batch));
        g.bench_with_input(
            BenchmarkId::new("entries_100b", format!("batch_{batch}")),
            &batch,
            |b, &n| {
                b.iter(|| {
                    let es: Vec<Entry> = (next..next + n).map(|i| entry(i, &data)).collect();
                    store.append(&es).expect("append");
                    store.sync().expect("sync");
                    next += n;
                })
            },
        );
    }
    let big = Bytes::from(vec![3u8; 64 << 10]);
    let dir = bench_dir("store");
    let store = new_store(dir.path());
    let mut next = 1u64;
    let mut commit = 0u64;
    g.throughput(Throughput::Bytes(64 * (64 << 10)));
    g.bench_function("large_batch_4m", |b| {
        b.iter(|| {
            let es: Vec<Entry> = (next..next + 64).map(|i| entry(i, &big)).collect();
            store.append(&es).expect("append");
            next += 64;
            commit = next - 1;
            store
                .set_hard_state(HardState {
                    term: 1,
                    vote: Some(1),
                    commit,
                })
                .expect("hard state");
            store.sync().expect("sync");
            // Bound the disk use: compact what is behind.
            if next % (64 * 64) == 1 {
                let snap = raft_core::Snapshot {
                    meta: raft_core::SnapshotMeta {
                        last_index: commit,
                        last_term: 1,
                        membership: Membership::new_voters([1, 2, 3]),
                    },
                    data: Bytes::from_static(b"s"),
                };
                store.compact(&snap).expect("compact");
            }
        })
    });
    g.finish();
}

fn recovery(c: &mut Criterion) {
    let mb: u64 = std::env::var("RAFT_STORAGE_BENCH_RECOVERY_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1024);
    let dir = bench_dir("recovery");
    let data = Bytes::from(vec![9u8; 1024]);
    let total_entries = (mb << 20) / 1024;
    {
        let store = new_store(dir.path());
        let mut next = 1;
        while next <= total_entries {
            let n = 4096.min(total_entries - next + 1);
            let es: Vec<Entry> = (next..next + n).map(|i| entry(i, &data)).collect();
            store.append(&es).expect("append");
            next += n;
        }
        store.sync().expect("sync");
    }
    let bytes: u64 = std::fs::read_dir(dir.path())
        .expect("list")
        .map(|e| e.expect("entry").metadata().expect("meta").len())
        .sum();
    let mut g = c.benchmark_group("recovery");
    g.sample_size(10).measurement_time(Duration::from_secs(20));
    g.throughput(Throughput::Bytes(bytes));
    g.bench_function(format!("open_{mb}MiB"), |b| {
        b.iter(|| {
            let s = Store::open(RealDisk, dir.path(), 1, 1, StoreConfig::default()).expect("open");
            assert_eq!(s.last_index(), total_entries);
        })
    });
    g.finish();
}

criterion_group!(benches, raw, store_batches, recovery);
criterion_main!(benches);
