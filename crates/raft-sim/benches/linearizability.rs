//! Throughput of the linearizability checker: operations checked per second
//! on generated key-value histories.
//!
//! `cargo bench -p raft-sim --bench linearizability`

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use raft_sim::linearizability::{
    check_with_stats, kv_history, CheckOptions, KvHistoryShape, KvModel, KvOutput, Outcome,
};

fn bench_check(c: &mut Criterion) {
    let model = KvModel::<u64, u64>::new();
    let options = CheckOptions::default();
    let typical = KvHistoryShape::default(); // 5 clients, 1,000 ops, 10 keys.
    let one_key = KvHistoryShape {
        keys: 1,
        ..typical.clone()
    };
    let mut group = c.benchmark_group("linearizability");
    for (name, shape) in [
        ("5_clients_1000_ops_10_keys", &typical),
        ("5_clients_1000_ops_1_key", &one_key),
    ] {
        let histories: Vec<_> = (0..8).map(|seed| kv_history(seed, shape)).collect();
        for h in &histories {
            let (result, _) = check_with_stats(&model, h, &options);
            assert!(result.is_ok(), "generated histories are linearizable");
        }
        group.throughput(Throughput::Elements(shape.ops as u64));
        group.bench_with_input(
            BenchmarkId::new("legal", name),
            &histories,
            |b, histories| {
                let mut i = 0;
                b.iter(|| {
                    i = (i + 1) % histories.len();
                    black_box(check_with_stats(&model, &histories[i], &options))
                })
            },
        );

        if shape.keys == 1 {
            // Illegal single-key histories with timeouts cost far more (see
            // the module docs); they are not a throughput figure.
            continue;
        }
        // The same histories with the last read answered with a value never
        // written: the search must rule out every linearization before it.
        let broken: Vec<_> = histories
            .iter()
            .map(|h| {
                let mut ops: Vec<_> = h.ops().to_vec();
                if let Some(op) = ops.iter_mut().rev().find(|op| {
                    matches!(
                        op.outcome,
                        Outcome::Returned {
                            output: KvOutput::Get(_),
                            ..
                        }
                    )
                }) {
                    if let Outcome::Returned { output, .. } = &mut op.outcome {
                        *output = KvOutput::Get(Some(shape.values + 1));
                    }
                }
                let mut out = raft_sim::linearizability::History::new();
                for op in ops {
                    out.push(op).expect("copied from a valid history");
                }
                out
            })
            .collect();
        for h in &broken {
            assert!(check_with_stats(&model, h, &options).0.is_illegal());
        }
        group.bench_with_input(
            BenchmarkId::new("illegal", name),
            &broken,
            |b, histories| {
                let mut i = 0;
                b.iter(|| {
                    i = (i + 1) % histories.len();
                    black_box(check_with_stats(&model, &histories[i], &options))
                })
            },
        );
    }
    group.finish();
}

criterion_group!(benches, bench_check);
criterion_main!(benches);
