//! Engine throughput: three nodes in one thread, in-memory logs, messages
//! passed by function call, 16-byte proposals. Reports committed entries
//! per second for batches of 1 and 256 proposals, and allocations and
//! live heap bytes per committed entry (counted by a wrapping allocator).
//!
//! Run: `cargo bench -p raft-core --bench throughput`

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use raft_core::{
    Config, LogStore, MemStorage, Membership, Message, RawNode, Role, Snapshot, SnapshotMeta,
};

struct Counting;
static ALLOCS: AtomicU64 = AtomicU64::new(0);
static LIVE_BYTES: AtomicU64 = AtomicU64::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Relaxed);
        LIVE_BYTES.fetch_add(layout.size() as u64, Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE_BYTES.fetch_sub(layout.size() as u64, Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Relaxed);
        LIVE_BYTES.fetch_add(new_size as u64, Relaxed);
        LIVE_BYTES.fetch_sub(layout.size() as u64, Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Compact every this many applied entries, so memory stays bounded.
const COMPACT_EVERY_ENTRIES: u64 = 16_384;

struct Bench {
    nodes: Vec<RawNode<MemStorage>>,
    net: VecDeque<Message>,
    applied: u64,
    payload: Bytes,
}

impl Bench {
    fn new() -> Self {
        let membership = Membership::new_voters([1, 2, 3]);
        let mut nodes: Vec<RawNode<MemStorage>> = (1..=3)
            .map(|id| {
                let cfg = Config {
                    max_append_bytes: 4 << 20,
                    ..Config::new(id)
                };
                RawNode::new(cfg, MemStorage::new_with_membership(membership.clone())).unwrap()
            })
            .collect();
        nodes[0].campaign().unwrap();
        let mut b = Bench {
            nodes,
            net: VecDeque::new(),
            applied: 0,
            payload: Bytes::from_static(b"0123456789abcdef"),
        };
        b.settle();
        assert_eq!(b.nodes[0].role(), Role::Leader);
        b
    }

    /// A synchronous driver: write, acknowledge, send, apply, until quiet.
    fn settle(&mut self) {
        loop {
            let mut progressed = false;
            for i in 0..self.nodes.len() {
                let n = &mut self.nodes[i];
                while n.has_ready() {
                    progressed = true;
                    let rd = n.ready().unwrap();
                    self.net.extend(rd.messages);
                    let store = n.store_mut();
                    if let Some(s) = rd.snapshot {
                        store.apply_snapshot(s);
                    }
                    store.append(&rd.entries).unwrap();
                    if let Some(hs) = rd.hard_state {
                        store.set_hard_state(hs);
                    }
                    n.on_persisted(rd.number).unwrap();
                    self.net.extend(rd.persisted_messages);
                    if let Some(last) = rd.committed_entries.last() {
                        let last = last.index;
                        if i == 0 {
                            self.applied += rd.committed_entries.len() as u64;
                        }
                        n.on_applied(last);
                        if last % COMPACT_EVERY_ENTRIES < rd.committed_entries.len() as u64 {
                            let term = n.store().term(last).unwrap();
                            let membership = n.membership().clone();
                            n.store_mut()
                                .compact(Snapshot {
                                    meta: SnapshotMeta {
                                        last_index: last,
                                        last_term: term,
                                        membership,
                                    },
                                    data: Bytes::new(),
                                })
                                .unwrap();
                        }
                    }
                }
            }
            while let Some(m) = self.net.pop_front() {
                progressed = true;
                let to = (m.to - 1) as usize;
                self.nodes[to].step(m).unwrap();
            }
            if !progressed {
                return;
            }
        }
    }

    /// Proposes `batch` entries, then drives the cluster until they apply.
    fn round(&mut self, batch: usize) {
        for _ in 0..batch {
            self.nodes[0].propose(self.payload.clone()).unwrap();
        }
        self.settle();
    }
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("commit");
    for batch in [1usize, 256] {
        group.throughput(Throughput::Elements(batch as u64));
        group.bench_function(format!("batch_{batch}"), |b| {
            let mut bench = Bench::new();
            b.iter_custom(|iters| {
                let start = Instant::now();
                for _ in 0..iters {
                    bench.round(batch);
                }
                start.elapsed()
            });
        });
    }
    group.finish();

    // Allocation and memory figures, outside criterion's timing.
    for batch in [1usize, 256] {
        let mut bench = Bench::new();
        for _ in 0..(65_536 / batch) {
            bench.round(batch);
        }
        let (a0, live0, e0) = (
            ALLOCS.load(Relaxed),
            LIVE_BYTES.load(Relaxed),
            bench.applied,
        );
        let start = Instant::now();
        let mut rounds = 0;
        while start.elapsed() < Duration::from_secs(2) || rounds < 4 {
            for _ in 0..(65_536 / batch) {
                bench.round(batch);
            }
            rounds += 1;
        }
        let elapsed = start.elapsed();
        let entries = bench.applied - e0;
        let allocs = ALLOCS.load(Relaxed) - a0;
        let live1 = LIVE_BYTES.load(Relaxed);
        println!(
            "batch {batch:>3}: {entries} entries committed in {:.2?} = {:.0} entries/s, \
             {:.2} allocations per committed entry, live heap {} KiB -> {} KiB",
            elapsed,
            entries as f64 / elapsed.as_secs_f64(),
            allocs as f64 / entries as f64,
            live0 / 1024,
            live1 / 1024,
        );
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
