//! The clients: a bounded number of tasks doing put / get / cas / delete on
//! a small key set until a deadline, recording every operation.
//!
//! Two kinds of task:
//!
//! - **clients**: each issues one operation at a time (a Jepsen "process"),
//!   with a short random pause between operations;
//! - **probers** (one per node, when enabled): every 100-250 ms each sends a
//!   read to its node without waiting for the previous one, up to
//!   [`PROBES_IN_FLIGHT_MAX`] in flight. While that node is paused its reads
//!   queue up in the kernel, each invoked at a different moment of the
//!   pause; when it resumes they are all answered at once. A read invoked
//!   after a write was acknowledged elsewhere that still returns the old
//!   value is exactly the stale lease read the checker must catch.
//!
//! Values are unique per write (`c<client>-<n>`), so a read names the write
//! it saw.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use raft_core::rng::SplitMix64;
use tokio::sync::{watch, Semaphore};

use crate::client::{execute, Timeouts};
use crate::history::{
    Clock, OpKind, OpRecord, OpResult, Outcome, Phase, ReadConsistency, Recorder,
};

/// Most reads one prober has in flight.
pub const PROBES_IN_FLIGHT_MAX: usize = 16;

/// Relative weights of the operations a client draws.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mix {
    pub put: u32,
    pub get: u32,
    pub cas: u32,
    pub delete: u32,
    /// Of the gets: linearizable, lease, stale.
    pub linearizable: u32,
    pub lease: u32,
    pub stale: u32,
}

impl Mix {
    /// This mix with its lease reads turned into linearizable ones.
    pub fn without_lease(self) -> Mix {
        Mix {
            linearizable: self.linearizable + self.lease,
            lease: 0,
            ..self
        }
    }

    /// A bit of everything.
    pub const MIXED: Mix = Mix {
        put: 30,
        get: 40,
        cas: 20,
        delete: 10,
        linearizable: 50,
        lease: 30,
        stale: 20,
    };

    /// Mostly lease reads, with enough writes to make stale answers visible.
    pub const LEASE: Mix = Mix {
        put: 35,
        get: 45,
        cas: 15,
        delete: 5,
        linearizable: 20,
        lease: 70,
        stale: 10,
    };
}

/// What the clients do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkloadConfig {
    /// Sequential clients.
    pub clients: u64,
    /// Keys `k0..k{keys-1}`.
    pub keys: u64,
    /// Operation mix of the clients.
    pub mix: Mix,
    /// Timeouts of reads and of the heartbeat writes: longer than any
    /// pause, so a read queued at a paused node is answered (and checked)
    /// once it resumes.
    pub timeouts: Timeouts,
    /// Request timeout of the clients' writes: short, so a client whose
    /// write hangs at a paused leader gives up (unknown) and goes on
    /// writing through the new one.
    pub write_timeout: Duration,
    /// Pause between one client's operations, drawn from `0..=think_ms_max`.
    pub think_ms_max: u64,
    /// Writes go only to nodes the nemesis is not currently faulting.
    pub writes_avoid_faulty: bool,
    /// Client `c` sends its reads to node `c % nodes + 1` rather than a
    /// random node.
    pub reads_on_home_node: bool,
    /// One prober per node (see the module docs).
    pub probers: bool,
    /// Upper bound on operations per client (a safety net for the
    /// deadline).
    pub ops_per_client_max: u64,
}

/// The key names.
pub fn key_name(i: u64) -> String {
    format!("k{i}")
}

/// Shared state of one run's tasks.
#[derive(Clone)]
pub struct Shared {
    pub addrs: Arc<Vec<SocketAddr>>,
    pub clock: Clock,
    pub deadline: Instant,
    pub cancel: watch::Receiver<bool>,
    /// Bit `id - 1` set while the nemesis faults node `id`.
    pub faulty: Arc<AtomicU64>,
    pub recorder: Recorder,
}

impl Shared {
    fn over(&self) -> bool {
        Instant::now() >= self.deadline || *self.cancel.borrow()
    }

    fn nodes(&self) -> u64 {
        self.addrs.len() as u64
    }

    /// A node drawn uniformly from those whose bit (`id - 1`) is clear in
    /// `avoid`; from all of them if that leaves none.
    fn pick_except(&self, rng: &mut SplitMix64, avoid: u64) -> u64 {
        let allowed: Vec<u64> = (1..=self.nodes())
            .filter(|id| avoid & (1 << (id - 1)) == 0)
            .collect();
        if allowed.is_empty() {
            pick(rng, self.nodes())
        } else {
            allowed[pick(rng, allowed.len() as u64) as usize - 1]
        }
    }

    /// Sleeps `d` unless the run is cancelled first.
    async fn sleep(&self, d: Duration) {
        let mut cancel = self.cancel.clone();
        tokio::select! {
            () = tokio::time::sleep(d) => {}
            _ = cancel.wait_for(|c| *c) => {}
        }
    }
}

/// A uniform draw from `1..=n`.
fn pick(rng: &mut SplitMix64, n: u64) -> u64 {
    rng.next_u64() % n.max(1) + 1
}

fn weighted<T: Copy>(rng: &mut SplitMix64, choices: &[(u32, T)]) -> T {
    let total: u64 = choices.iter().map(|(w, _)| u64::from(*w)).sum();
    let mut x = rng.next_u64() % total.max(1);
    for (w, c) in choices {
        if x < u64::from(*w) {
            return *c;
        }
        x -= u64::from(*w);
    }
    choices[choices.len() - 1].1
}

/// Sends one operation to `node`, records it and returns its outcome.
/// The run's cancellation turns a pending operation into an unknown one.
pub async fn run_op(
    shared: &Shared,
    client: u64,
    node: u64,
    key: &str,
    kind: OpKind,
    timeouts: Timeouts,
    phase: Phase,
) -> Outcome {
    let addr = shared.addrs[(node - 1) as usize];
    let invoke_us = shared.clock.now_us();
    let mut cancel = shared.cancel.clone();
    let answer = tokio::select! {
        a = execute(addr, key, &kind, timeouts) => a,
        _ = cancel.wait_for(|c| *c) => crate::client::Answer {
            outcome: Outcome::Unknown { reason: "run cancelled".into() },
            status: None,
            served_by: None,
        },
    };
    let complete_us = shared.clock.now_us();
    shared.recorder.record(OpRecord {
        client,
        key: key.to_string(),
        kind,
        node,
        invoke_us,
        complete_us,
        outcome: answer.outcome.clone(),
        status: answer.status,
        served_by: answer.served_by,
        phase,
    });
    answer.outcome
}

/// One sequential client, until the deadline.
pub async fn client(id: u64, cfg: Arc<WorkloadConfig>, shared: Shared, seed: u64) {
    let mut rng = SplitMix64::new(seed ^ id.wrapping_mul(0x9e37_79b9_7f4a_7c15));
    // The value this client last saw in each key (for CAS expectations).
    let mut seen: Vec<Option<String>> = vec![None; cfg.keys as usize];
    let mut written = 0u64;
    // Consecutive operations that did not end ok.
    let mut failures = 0u32;
    // Per node: no writes there until this instant, and how many answers
    // in a row from it were not ok. A node that answers writes with 5xx
    // (isolated, no leader known) is left alone for a while, doubling up
    // to 2 s: with today's conservative classification each such answer is
    // an unknown write, and every unknown write stays a candidate for the
    // rest of the check.
    let mut cooldown: Vec<(Instant, u32)> = vec![(Instant::now(), 0); shared.nodes() as usize];
    let home = id % shared.nodes() + 1;
    let m = cfg.mix;
    for _ in 0..cfg.ops_per_client_max {
        if shared.over() {
            break;
        }
        let k = rng.next_u64() % cfg.keys.max(1);
        let key = key_name(k);
        #[derive(Clone, Copy)]
        enum Pick {
            Put,
            Get,
            Cas,
            Delete,
        }
        let choice = weighted(
            &mut rng,
            &[
                (m.put, Pick::Put),
                (m.get, Pick::Get),
                (m.cas, Pick::Cas),
                (m.delete, Pick::Delete),
            ],
        );
        let mut fresh = || {
            written += 1;
            format!("c{id}-{written}")
        };
        let kind = match choice {
            Pick::Put => OpKind::Put { value: fresh() },
            Pick::Get => OpKind::Get {
                consistency: weighted(
                    &mut rng,
                    &[
                        (m.linearizable, ReadConsistency::Linearizable),
                        (m.lease, ReadConsistency::Lease),
                        (m.stale, ReadConsistency::Stale),
                    ],
                ),
            },
            Pick::Cas => OpKind::Cas {
                expected: seen[k as usize].clone(),
                new: if rng.next_u64().is_multiple_of(5) {
                    None
                } else {
                    Some(fresh())
                },
            },
            Pick::Delete => OpKind::Delete,
        };
        let now = Instant::now();
        let cooling = cooldown
            .iter()
            .enumerate()
            .filter(|(_, (until, _))| *until > now)
            .fold(0u64, |mask, (i, _)| mask | 1 << i);
        let node = if kind.is_write() {
            let faulty = if cfg.writes_avoid_faulty {
                shared.faulty.load(Ordering::Relaxed)
            } else {
                0
            };
            shared.pick_except(&mut rng, faulty | cooling)
        } else if cfg.reads_on_home_node {
            home
        } else {
            pick(&mut rng, shared.nodes())
        };
        let timeouts = if kind.is_write() {
            Timeouts {
                request: cfg.write_timeout,
                ..cfg.timeouts
            }
        } else {
            cfg.timeouts
        };
        let outcome = run_op(
            &shared,
            id,
            node,
            &key,
            kind.clone(),
            timeouts,
            Phase::Workload,
        )
        .await;
        let cool = &mut cooldown[(node - 1) as usize];
        if matches!(outcome, Outcome::Ok { .. }) {
            cool.1 = 0;
        } else if kind.is_write() {
            cool.1 = (cool.1 + 1).min(5);
            cool.0 = Instant::now() + Duration::from_millis((100u64 << cool.1).min(2000));
        }
        if let Outcome::Ok { result } = &outcome {
            match (result, &kind) {
                (OpResult::Value { value }, _) | (OpResult::CasMismatch { current: value }, _) => {
                    seen[k as usize] = value.clone();
                }
                (OpResult::Put, OpKind::Put { value }) => seen[k as usize] = Some(value.clone()),
                (OpResult::Swapped, OpKind::Cas { new, .. }) => seen[k as usize] = new.clone(),
                (OpResult::Deleted { .. }, _) => seen[k as usize] = None,
                _ => {}
            }
            failures = 0;
        } else {
            // After a failure (often an election) back off, doubling up to
            // a second, so an election does not fill the history with
            // failed or unknown attempts: every unknown write stays a
            // candidate for the rest of the check and costs it time.
            failures = (failures + 1).min(5);
            let pause = (50u64 << failures).min(1000);
            shared
                .sleep(Duration::from_millis(
                    pause / 2 + rng.next_u64() % (pause / 2),
                ))
                .await;
        }
        if cfg.think_ms_max > 0 {
            shared
                .sleep(Duration::from_millis(
                    rng.next_u64() % (cfg.think_ms_max + 1),
                ))
                .await;
        }
    }
}

/// The prober of `node`: reads (70% lease, 30% linearizable; only
/// linearizable if the mix has no lease reads) every
/// 100-250 ms without waiting for earlier ones, at most
/// [`PROBES_IN_FLIGHT_MAX`] in flight, until the deadline.
pub async fn prober(node: u64, cfg: Arc<WorkloadConfig>, shared: Shared, seed: u64) {
    let mut rng = SplitMix64::new(seed ^ 0x5eed_0000 ^ node);
    let slots = Arc::new(Semaphore::new(PROBES_IN_FLIGHT_MAX));
    let mut tasks = Vec::new();
    let client = 100 + node;
    while !shared.over() {
        if let Ok(permit) = slots.clone().try_acquire_owned() {
            let key = key_name(rng.next_u64() % cfg.keys.max(1));
            let consistency = if cfg.mix.lease > 0 && rng.next_u64() % 10 < 7 {
                ReadConsistency::Lease
            } else {
                ReadConsistency::Linearizable
            };
            let shared2 = shared.clone();
            let timeouts = cfg.timeouts;
            tasks.push(tokio::spawn(async move {
                run_op(
                    &shared2,
                    client,
                    node,
                    &key,
                    OpKind::Get { consistency },
                    timeouts,
                    Phase::Workload,
                )
                .await;
                drop(permit);
            }));
        }
        shared
            .sleep(Duration::from_millis(100 + rng.next_u64() % 151))
            .await;
        tasks.retain(|t| !t.is_finished());
    }
    for t in tasks {
        let _ = t.await;
    }
}

/// The key of the heartbeat writer.
pub const HEARTBEAT_KEY: &str = "hb";

/// Client id of the heartbeat writer.
pub const HEARTBEAT_CLIENT: u64 = 99;

/// Most heartbeat writes in flight.
pub const HEARTBEATS_IN_FLIGHT_MAX: usize = 64;

/// The heartbeat writer: a put of a fresh value to [`HEARTBEAT_KEY`] every
/// 100 ms to a node the nemesis is not faulting, without waiting for
/// earlier ones (at most [`HEARTBEATS_IN_FLIGHT_MAX`] in flight), until the
/// deadline. Sequential clients all end up waiting on writes stuck at a
/// paused leader; this one keeps knocking, so the first acknowledged write
/// after a fault is found to within about 100 ms. Its own key keeps the
/// writes that hang (unknown outcome) out of the other keys' histories.
pub async fn heartbeat_writer(cfg: Arc<WorkloadConfig>, shared: Shared, seed: u64) {
    let mut rng = SplitMix64::new(seed ^ 0x6865_6172_7462_6561);
    let slots = Arc::new(Semaphore::new(HEARTBEATS_IN_FLIGHT_MAX));
    let mut tasks = Vec::new();
    let mut n = 0u64;
    while !shared.over() {
        if let Ok(permit) = slots.clone().try_acquire_owned() {
            n += 1;
            let node = shared.pick_except(&mut rng, shared.faulty.load(Ordering::Relaxed));
            let shared2 = shared.clone();
            let timeouts = cfg.timeouts;
            tasks.push(tokio::spawn(async move {
                let kind = OpKind::Put {
                    value: format!("hb-{n}"),
                };
                run_op(
                    &shared2,
                    HEARTBEAT_CLIENT,
                    node,
                    HEARTBEAT_KEY,
                    kind,
                    timeouts,
                    Phase::Workload,
                )
                .await;
                drop(permit);
            }));
        }
        shared.sleep(Duration::from_millis(100)).await;
        tasks.retain(|t| !t.is_finished());
    }
    for t in tasks {
        let _ = t.await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weighted_draws_respect_zero_weights_and_cover_the_rest() {
        let mut rng = SplitMix64::new(7);
        let mut seen = [0u32; 3];
        for _ in 0..1000 {
            let i: usize = weighted(&mut rng, &[(1, 0), (0, 1), (3, 2)]);
            seen[i] += 1;
        }
        assert_eq!(seen[1], 0);
        assert!(seen[0] > 150 && seen[2] > 600, "{seen:?}");
    }

    #[tokio::test]
    async fn avoided_nodes_are_skipped_unless_all_are() {
        let (_tx, cancel) = watch::channel(false);
        let shared = Shared {
            addrs: Arc::new(vec!["127.0.0.1:1".parse().unwrap(); 3]),
            clock: Clock::start(),
            deadline: Instant::now(),
            cancel,
            faulty: Arc::new(AtomicU64::new(0)),
            recorder: Recorder::new(),
        };
        let mut rng = SplitMix64::new(1);
        for _ in 0..50 {
            assert_eq!(shared.pick_except(&mut rng, 0b101), 2);
        }
        let n = shared.pick_except(&mut rng, 0b111);
        assert!((1..=3).contains(&n));
    }
}
