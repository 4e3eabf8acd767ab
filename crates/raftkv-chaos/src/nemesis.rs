//! The fault schedule (drawn from the seed) and its execution.
//!
//! A schedule is a list of faults, each with a quiet gap before it, a kind,
//! whether it targets the leader, and how long it lasts. The same seed
//! always gives the same schedule; *which* node is the leader when a fault
//! starts depends on the run, so a replay repeats the faults, not the exact
//! timeline. Faults never overlap: each is healed before the next starts,
//! and none is started that would not be healed before the clients stop.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use raft_core::rng::SplitMix64;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::cluster::{self, Cluster, ClusterError, ELECTION_TIMEOUT_TICKS, TICK_MS};
use crate::history::{Clock, FaultEvent, FaultKind};
use crate::net::{NetError, Netns};

/// Which faults a run injects.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scenario {
    /// Every kind of fault, mostly on the leader.
    Mixed,
    /// SIGSTOP the leader for longer than an election timeout (sometimes
    /// also cut it off), then SIGCONT, over and over, while clients write
    /// through the other nodes and read with leases on every node.
    PauseLeaderLease,
}

impl Scenario {
    /// The name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Mixed => "mixed",
            Scenario::PauseLeaderLease => "pause-leader-lease",
        }
    }
}

/// One planned fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PlannedFault {
    /// Quiet time before it starts.
    pub gap: Duration,
    /// What to do.
    pub kind: FaultKind,
    /// Target the current leader (else a node drawn at random).
    pub on_leader: bool,
    /// How long until it is healed (for a kill: until the restart).
    pub hold: Duration,
    /// Draw for the random target (and the fallback when no leader is
    /// known).
    pub draw: u64,
}

/// The longest election timeout of the nodes (twice the base timeout).
pub fn election_timeout_max() -> Duration {
    Duration::from_millis(2 * ELECTION_TIMEOUT_TICKS * TICK_MS)
}

fn ms(rng: &mut SplitMix64, lo: u64, hi: u64) -> Duration {
    Duration::from_millis(lo + rng.next_u64() % (hi - lo + 1))
}

/// The faults of `scenario` for `seed` that fit in `duration` (gaps and
/// holds included). `network`: isolation faults are possible.
pub fn plan(scenario: Scenario, seed: u64, duration: Duration, network: bool) -> Vec<PlannedFault> {
    let mut rng = SplitMix64::new(seed ^ 0x6e65_6d65_7369_7321);
    // Pauses last at least 1.5 election timeouts (of the slowest node), so
    // the others always elect a new leader meanwhile.
    let pause_min = election_timeout_max().as_millis() as u64 * 3 / 2;
    let mut out = Vec::new();
    let mut total = Duration::ZERO;
    loop {
        let f = match scenario {
            Scenario::Mixed => {
                let kinds: &[(u64, FaultKind)] = if network {
                    &[
                        (30, FaultKind::Kill),
                        (30, FaultKind::Pause),
                        (20, FaultKind::Isolate),
                        (20, FaultKind::PauseIsolated),
                    ]
                } else {
                    &[(50, FaultKind::Kill), (50, FaultKind::Pause)]
                };
                let mut x = rng.next_u64() % 100;
                let mut kind = kinds[0].1;
                for (w, k) in kinds {
                    if x < *w {
                        kind = *k;
                        break;
                    }
                    x -= w;
                }
                let hold = match kind {
                    FaultKind::Kill => ms(&mut rng, 300, 3000),
                    FaultKind::Pause => ms(&mut rng, pause_min, 4000),
                    FaultKind::Isolate | FaultKind::PauseIsolated => ms(&mut rng, 2000, 5000),
                };
                PlannedFault {
                    gap: ms(&mut rng, 1000, 3000),
                    kind,
                    on_leader: !rng.next_u64().is_multiple_of(5),
                    hold,
                    draw: rng.next_u64(),
                }
            }
            Scenario::PauseLeaderLease => {
                let kind = if network && rng.next_u64() % 10 < 3 {
                    FaultKind::PauseIsolated
                } else {
                    FaultKind::Pause
                };
                PlannedFault {
                    gap: ms(&mut rng, 1500, 3000),
                    kind,
                    on_leader: true,
                    hold: ms(&mut rng, pause_min.max(2000), 5000),
                    draw: rng.next_u64(),
                }
            }
        };
        total += f.gap + f.hold;
        if total > duration {
            return out;
        }
        out.push(f);
    }
}

/// Why the nemesis stopped early.
#[derive(Debug, thiserror::Error)]
pub enum NemesisError {
    #[error(transparent)]
    Net(#[from] NetError),
    #[error(transparent)]
    Cluster(#[from] ClusterError),
}

/// What the nemesis works on.
pub struct Nemesis<'a> {
    pub cluster: &'a mut Cluster,
    pub net: Option<&'a Netns>,
    pub clock: Clock,
    pub cancel: watch::Receiver<bool>,
    /// Bit `id - 1` set while node `id` is faulted (writers avoid it in
    /// the lease scenario).
    pub faulty: Arc<AtomicU64>,
    /// Faults injected so far.
    pub events: Vec<FaultEvent>,
}

impl Nemesis<'_> {
    /// Sleeps `d`; false if the run was cancelled meanwhile.
    async fn sleep(&mut self, d: Duration) -> bool {
        let mut cancel = self.cancel.clone();
        tokio::select! {
            () = tokio::time::sleep(d) => !*self.cancel.borrow(),
            _ = cancel.wait_for(|c| *c) => false,
        }
    }

    /// Injects `plan` in order, each fault healed before the next, until
    /// the plan ends, `deadline` would be passed, or the run is cancelled.
    /// Every fault started is healed before this returns, error or not.
    pub async fn run(
        &mut self,
        plan: &[PlannedFault],
        deadline: Instant,
    ) -> Result<(), NemesisError> {
        let addrs = self.cluster.client_addrs();
        let nodes = addrs.len() as u64;
        for f in plan {
            if Instant::now() + f.gap + f.hold > deadline {
                break;
            }
            if !self.sleep(f.gap).await {
                break;
            }
            let leader = cluster::leader(&addrs, Duration::from_millis(500)).await;
            let node = match (f.on_leader, leader) {
                (true, Some(l)) => l,
                _ => f.draw % nodes + 1,
            };
            let was_leader = leader == Some(node);
            let bit = 1u64 << (node - 1);
            self.faulty.fetch_or(bit, Ordering::Relaxed);
            let injected = self.inject(f.kind, node);
            // Taken once the fault is in place (an `ip` command takes a few
            // milliseconds): a write acknowledged meanwhile is not a
            // recovery.
            let start_us = self.clock.now_us();
            let held = match injected {
                Ok(()) => self.sleep(f.hold).await,
                Err(_) => false,
            };
            let healed = self.heal(f.kind, node);
            self.faulty.fetch_and(!bit, Ordering::Relaxed);
            let end_us = self.clock.now_us();
            injected?;
            healed?;
            self.events.push(FaultEvent {
                kind: f.kind,
                node,
                was_leader,
                start_us,
                end_us,
            });
            if !held {
                break;
            }
        }
        Ok(())
    }

    fn net(&self) -> Result<&Netns, NetError> {
        self.net.ok_or_else(|| NetError::Command {
            args: "(isolate)".into(),
            detail: "no network namespaces in this run".into(),
        })
    }

    fn inject(&mut self, kind: FaultKind, node: u64) -> Result<(), NemesisError> {
        match kind {
            FaultKind::Kill => {
                self.cluster.kill(node);
            }
            FaultKind::Pause => {
                self.cluster.pause(node);
            }
            FaultKind::Isolate => self.net()?.isolate(node)?,
            FaultKind::PauseIsolated => {
                self.net()?.isolate(node)?;
                self.cluster.pause(node);
            }
        }
        Ok(())
    }

    fn heal(&mut self, kind: FaultKind, node: u64) -> Result<(), NemesisError> {
        match kind {
            FaultKind::Kill => {
                if !self.cluster.is_running(node) {
                    self.cluster.start(node)?;
                }
            }
            FaultKind::Pause => {
                self.cluster.resume(node);
            }
            FaultKind::Isolate => self.net()?.heal(node)?,
            FaultKind::PauseIsolated => {
                // Reconnect first, then wake it: it resumes straight into a
                // cluster that moved on without it.
                let healed = self.net()?.heal(node);
                self.cluster.resume(node);
                healed?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_are_fixed_by_the_seed_and_fit_the_duration() {
        let d = Duration::from_secs(60);
        let a = plan(Scenario::Mixed, 42, d, true);
        assert_eq!(a, plan(Scenario::Mixed, 42, d, true));
        assert_ne!(a, plan(Scenario::Mixed, 43, d, true));
        let total: Duration = a.iter().map(|f| f.gap + f.hold).sum();
        assert!(total <= d && a.len() >= 5, "{} faults, {total:?}", a.len());
        for f in &a {
            if matches!(f.kind, FaultKind::Pause | FaultKind::PauseIsolated) {
                assert!(f.hold > election_timeout_max(), "{f:?}");
            }
        }
    }

    #[test]
    fn without_network_only_kill_and_pause_are_planned() {
        let p = plan(Scenario::Mixed, 7, Duration::from_secs(600), false);
        assert!(p.iter().all(|f| !f.kind.needs_network()));
        assert!(p.iter().any(|f| f.kind == FaultKind::Kill));
        assert!(p.iter().any(|f| f.kind == FaultKind::Pause));
        let lease = plan(
            Scenario::PauseLeaderLease,
            7,
            Duration::from_secs(600),
            false,
        );
        assert!(lease
            .iter()
            .all(|f| f.kind == FaultKind::Pause && f.on_leader && f.hold > election_timeout_max()));
    }

    #[test]
    fn the_mixed_plan_uses_every_kind_with_a_network() {
        let p = plan(Scenario::Mixed, 3, Duration::from_secs(600), true);
        for k in FaultKind::ALL {
            assert!(p.iter().any(|f| f.kind == k), "{k:?} missing");
        }
    }
}
