//! Apply throughput of the state machine: puts of 100-byte values.
//!
//! `cargo bench -p raftkv-state --bench apply`

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use raft_core::{Entry, EntryPayload, StateMachine};
use raftkv_state::{Command, KvConfig, KvStore};

const KEYS: u64 = 100_000;
const BATCH: u64 = 10_000;

fn payloads(with_session: bool) -> Vec<Bytes> {
    let value = vec![b'v'; 100];
    (0..BATCH)
        .map(|i| {
            // Spread the batch over the key space with a multiplicative hash
            // so most puts update an existing key of a large map.
            let key = format!("key-{:08}", (i * 2_654_435_761) % KEYS);
            let cmd = Command::put(key, value.clone());
            let cmd = if with_session {
                cmd.with_session(i % 1_000, i)
            } else {
                cmd
            };
            cmd.encode()
        })
        .collect()
}

fn prefilled() -> KvStore {
    let mut store = KvStore::new(KvConfig::default()).unwrap();
    for i in 0..KEYS {
        let cmd = Command::put(format!("key-{i:08}"), vec![b'v'; 100]);
        store
            .apply(&Entry {
                term: 1,
                index: i + 1,
                payload: EntryPayload::Normal(cmd.encode()),
            })
            .unwrap();
    }
    store
}

fn bench_apply(c: &mut Criterion) {
    let base = prefilled();
    let mut group = c.benchmark_group("apply_put_100B");
    group.throughput(Throughput::Elements(BATCH));
    for (name, with_session) in [("no_session", false), ("session", true)] {
        let batch = payloads(with_session);
        group.bench_function(name, |b| {
            b.iter_batched(
                || base.clone(),
                |mut store| {
                    let start = store.applied_index();
                    for (i, p) in batch.iter().enumerate() {
                        store
                            .apply(&Entry {
                                term: 1,
                                index: start + 1 + i as u64,
                                payload: EntryPayload::Normal(p.clone()),
                            })
                            .unwrap();
                    }
                    store
                },
                BatchSize::LargeInput,
            )
        });
    }
    group.finish();

    let mut group = c.benchmark_group("whole_store_100k_keys");
    group.bench_function("snapshot", |b| b.iter(|| base.snapshot().unwrap()));
    let snap = base.snapshot().unwrap();
    group.bench_function("restore", |b| {
        let mut store = KvStore::new(KvConfig::default()).unwrap();
        b.iter(|| store.restore(&snap).unwrap())
    });
    group.bench_function("digest", |b| b.iter(|| base.digest()));
    group.finish();
}

criterion_group!(benches, bench_apply);
criterion_main!(benches);
