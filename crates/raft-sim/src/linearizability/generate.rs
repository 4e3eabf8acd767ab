//! Random key-value histories that are linearizable by construction, for
//! testing and benchmarking the checker (and for the simulator to self-test
//! its oracle).
//!
//! Each operation gets a call and a return time, and a *linearization point*
//! somewhere in between. The operations are then run one at a time, in order
//! of their points, against a real map, and record the outputs that map
//! gives. The result is a history whose linearizability is witnessed by the
//! points. Operations picked to have an unknown outcome either take effect at
//! a point after their call (possibly long after the client gave up) or not at
//! all.

use std::collections::BTreeMap;

use super::{History, KvInput, KvOutput, Operation, Outcome, Time};

/// The shape of a generated history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KvHistoryShape {
    /// Concurrent clients; each runs its operations one after another.
    pub clients: u32,
    /// Operations in the history.
    pub ops: usize,
    /// Keys are drawn from `0..keys`.
    pub keys: u64,
    /// Values are drawn from `1..=values`; a small number makes
    /// compare-and-swap succeed often.
    pub values: u64,
    /// Latency of one operation is drawn from `1..=duration_max`.
    pub duration_max: Time,
    /// Pause of a client between two operations, from `0..=think_max`.
    pub think_max: Time,
    /// Share of operations, in thousandths, whose outcome is unknown.
    pub unknown_per_mille: u32,
}

impl Default for KvHistoryShape {
    /// 5 clients, 1,000 operations on 10 keys, 2% timeouts.
    fn default() -> Self {
        KvHistoryShape {
            clients: 5,
            ops: 1_000,
            keys: 10,
            values: 5,
            duration_max: 20,
            think_max: 10,
            unknown_per_mille: 20,
        }
    }
}

/// A small deterministic generator (SplitMix64).
#[derive(Clone, Debug)]
pub(crate) struct SplitMix64(u64);

impl SplitMix64 {
    pub(crate) fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`0` if `n == 0`); the tiny modulo bias is fine for
    /// tests.
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next_u64() % n
        }
    }

    pub(crate) fn chance_per_mille(&mut self, per_mille: u32) -> bool {
        self.below(1000) < u64::from(per_mille)
    }
}

struct Planned {
    op: Operation<KvInput<u64, u64>, KvOutput<u64>>,
    /// When it takes effect; `None`: never (unknown outcome only).
    point: Option<Time>,
    /// A failed compare-and-swap reports the value it found.
    cas_reports_current: bool,
}

/// A linearizable history of `shape.ops` key-value operations, decided by
/// `seed` alone.
pub fn kv_history(seed: u64, shape: &KvHistoryShape) -> History<KvInput<u64, u64>, KvOutput<u64>> {
    let mut rng = SplitMix64::new(seed);
    let clients = u64::from(shape.clients.max(1));
    let mut client_free: Vec<Time> = vec![0; clients as usize];
    let mut planned = Vec::with_capacity(shape.ops);
    for _ in 0..shape.ops {
        let client = rng.below(clients);
        let call_time = client_free[client as usize] + rng.below(shape.think_max + 1);
        let duration = 1 + rng.below(shape.duration_max.max(1));
        let key = rng.below(shape.keys.max(1));
        let values = shape.values.max(1);
        let value = |rng: &mut SplitMix64| 1 + rng.below(values);
        let input = match rng.below(20) {
            0..=5 => KvInput::Put {
                key,
                value: value(&mut rng),
            },
            6..=12 => KvInput::Get { key },
            13..=14 => KvInput::Delete { key },
            _ => {
                let expected = if rng.below(values + 1) == 0 {
                    None
                } else {
                    Some(value(&mut rng))
                };
                let new = if rng.below(8) == 0 {
                    None
                } else {
                    Some(value(&mut rng))
                };
                KvInput::Cas { key, expected, new }
            }
        };
        let unknown = rng.chance_per_mille(shape.unknown_per_mille);
        let point = if !unknown {
            Some(call_time + rng.below(duration + 1))
        } else if rng.below(2) == 0 {
            // Took effect, maybe long after the client gave up.
            Some(call_time + rng.below(duration * 4 + 1))
        } else {
            None
        };
        let cas_reports_current = rng.below(2) == 0;
        // A client that times out moves on after `duration` too.
        client_free[client as usize] = call_time + duration;
        planned.push(Planned {
            op: Operation {
                client,
                input,
                call_time,
                outcome: if unknown {
                    Outcome::Unknown
                } else {
                    Outcome::Returned {
                        time: call_time + duration,
                        output: KvOutput::Put, // Replaced below.
                    }
                },
            },
            point,
            cas_reports_current,
        });
    }

    // Run the effective operations in order of their points on a real map.
    let mut order: Vec<(Time, usize)> = planned
        .iter()
        .enumerate()
        .filter_map(|(i, p)| p.point.map(|t| (t, i)))
        .collect();
    order.sort_unstable();
    let mut store: BTreeMap<u64, u64> = BTreeMap::new();
    for (_, i) in order {
        let p = &mut planned[i];
        let output = match &p.op.input {
            KvInput::Put { key, value } => {
                store.insert(*key, *value);
                KvOutput::Put
            }
            KvInput::Get { key } => KvOutput::Get(store.get(key).copied()),
            KvInput::Delete { key } => KvOutput::Delete {
                existed: store.remove(key).is_some(),
            },
            KvInput::Cas { key, expected, new } => {
                let current = store.get(key).copied();
                if current == *expected {
                    match new {
                        Some(v) => store.insert(*key, *v),
                        None => store.remove(key),
                    };
                    KvOutput::Cas { succeeded: true }
                } else if p.cas_reports_current {
                    KvOutput::CasMismatch { current }
                } else {
                    KvOutput::Cas { succeeded: false }
                }
            }
        };
        if let Outcome::Returned { output: slot, .. } = &mut p.op.outcome {
            *slot = output;
        }
    }

    let mut history = History::new();
    for p in planned {
        // Cannot fail: return time = call time + duration >= call time, and
        // callers ask for far fewer than HISTORY_OPS_MAX operations.
        history
            .push(p.op)
            .expect("generated operations are well formed");
    }
    history
}
