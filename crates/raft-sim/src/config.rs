//! What one simulation run does: cluster size, length, which faults are
//! allowed, and (drawn from the seed) how often each fault strikes.

use std::fmt;

use serde::Serialize;

use crate::rng::Rng;
use crate::storage::StorageKind;

/// Virtual time, in microseconds since the start of the run.
pub type Micros = u64;

/// Nominal length of one engine tick in virtual time. Each node's clock is
/// skewed around it (see [`Params::tick_skew`]).
pub const TICK_US: Micros = 1_000;
/// The engine's `election_timeout_ticks` in every simulated node.
pub const ELECTION_TIMEOUT_TICKS: u32 = 10;
/// The engine's `heartbeat_interval_ticks` in every simulated node.
pub const HEARTBEAT_INTERVAL_TICKS: u32 = 2;
/// One nominal election timeout in virtual time.
pub const ELECTION_TIMEOUT_US: Micros = ELECTION_TIMEOUT_TICKS as Micros * TICK_US;
/// The liveness bound: after faults stop, a leader must be elected and every
/// pending client operation finish within this many election timeouts.
pub const LIVENESS_ELECTION_TIMEOUTS: u64 = 20;
/// Most voters a simulated cluster starts with (ids are small so that links
/// fit in a small matrix).
pub const NODES_MAX: usize = 9;
/// Most spare nodes (started empty, added by membership changes).
pub const SPARES_MAX: usize = 2;

/// The kinds of fault a run may inject. Each enabled kind strikes with a
/// probability drawn from the seed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Faults {
    /// Crash nodes (losing unsynced writes) and restart them later.
    pub crash: bool,
    /// Symmetric, asymmetric, minority/majority and bridge partitions.
    pub partition: bool,
    /// Pause a node for a while (a long GC pause), then resume it.
    pub pause: bool,
    /// Lose messages.
    pub loss: bool,
    /// Duplicate messages.
    pub duplicate: bool,
    /// Occasionally delay a message by several election timeouts (reorders).
    pub delay: bool,
    /// Nodes' clocks tick at different rates.
    pub skew: bool,
    /// A disk write fails: the node must stop without acknowledging.
    pub disk: bool,
    /// Add/remove voters and learners, promote learners.
    pub membership: bool,
    /// Leadership transfers.
    pub transfer: bool,
    /// Compact logs into snapshots under load (forces InstallSnapshot).
    pub compaction: bool,
}

impl Faults {
    /// Every fault.
    pub const ALL: Faults = Faults {
        crash: true,
        partition: true,
        pause: true,
        loss: true,
        duplicate: true,
        delay: true,
        skew: true,
        disk: true,
        membership: true,
        transfer: true,
        compaction: true,
    };
    /// No fault: a perfect network and disks, clocks in step.
    pub const NONE: Faults = Faults {
        crash: false,
        partition: false,
        pause: false,
        loss: false,
        duplicate: false,
        delay: false,
        skew: false,
        disk: false,
        membership: false,
        transfer: false,
        compaction: false,
    };

    const NAMES: [&'static str; 11] = [
        "crash",
        "partition",
        "pause",
        "loss",
        "duplicate",
        "delay",
        "skew",
        "disk",
        "membership",
        "transfer",
        "compaction",
    ];

    fn flag_mut(&mut self, name: &str) -> Option<&mut bool> {
        Some(match name {
            "crash" => &mut self.crash,
            "partition" => &mut self.partition,
            "pause" => &mut self.pause,
            "loss" => &mut self.loss,
            "duplicate" => &mut self.duplicate,
            "delay" => &mut self.delay,
            "skew" => &mut self.skew,
            "disk" => &mut self.disk,
            "membership" => &mut self.membership,
            "transfer" => &mut self.transfer,
            "compaction" => &mut self.compaction,
            _ => return None,
        })
    }

    fn flag(&self, name: &str) -> bool {
        let mut copy = *self;
        copy.flag_mut(name).is_some_and(|f| *f)
    }

    /// Parses `all`, `none`, or a comma-separated list of fault names, each
    /// optionally prefixed with `-` to remove it (`all,-disk`).
    pub fn parse(spec: &str) -> Result<Faults, String> {
        let mut faults = Faults::NONE;
        for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (on, name) = match part.strip_prefix('-') {
                Some(rest) => (false, rest),
                None => (true, part),
            };
            match name {
                "all" => faults = if on { Faults::ALL } else { Faults::NONE },
                "none" => faults = Faults::NONE,
                _ => match faults.flag_mut(name) {
                    Some(flag) => *flag = on,
                    None => {
                        return Err(format!(
                            "unknown fault {name:?}; known: all, none, {}",
                            Self::NAMES.join(", ")
                        ))
                    }
                },
            }
        }
        Ok(faults)
    }
}

impl fmt::Display for Faults {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if *self == Faults::ALL {
            return f.write_str("all");
        }
        let on: Vec<&str> = Self::NAMES
            .iter()
            .copied()
            .filter(|n| self.flag(n))
            .collect();
        if on.is_empty() {
            f.write_str("none")
        } else {
            f.write_str(&on.join(","))
        }
    }
}

/// Which key-value engine the nodes' `ServerState` runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub enum StateKind {
    /// raftkv-mvcc (redb) on the node's simulated disk, what the server
    /// runs by default: applied without fsync, checkpointed, reopened
    /// after a crash at its last checkpoint, snapshots streamed.
    #[default]
    Durable,
    /// The in-memory engine (`--state-engine memory` of the server):
    /// snapshotted whole, restored from the log store's snapshot.
    Memory,
}

impl StateKind {
    /// Parses `durable` or `memory`.
    pub fn parse(s: &str) -> Result<StateKind, String> {
        match s {
            "durable" => Ok(StateKind::Durable),
            "memory" => Ok(StateKind::Memory),
            _ => Err(format!(
                "unknown state engine {s:?}; known: durable, memory"
            )),
        }
    }
}

impl fmt::Display for StateKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            StateKind::Durable => "durable",
            StateKind::Memory => "memory",
        })
    }
}

/// A planted bug: in the engine (raft-core) or in the host layer
/// (raft-host), the two layers the server runs.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum BugKind {
    Core(raft_core::Bug),
    Host(raft_host::HostBug),
}

impl BugKind {
    /// Every planted bug, the engine's first.
    pub fn all() -> Vec<BugKind> {
        let core = raft_core::Bug::ALL.into_iter().map(BugKind::Core);
        let host = raft_host::HostBug::ALL.into_iter().map(BugKind::Host);
        core.chain(host).collect()
    }

    /// The bug named `name` (as printed by `Debug`, e.g. `ForgetVote`).
    pub fn parse(name: &str) -> Option<BugKind> {
        Self::all()
            .into_iter()
            .find(|b| format!("{b:?}").eq_ignore_ascii_case(name))
    }
}

impl fmt::Debug for BugKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BugKind::Core(b) => write!(f, "{b:?}"),
            BugKind::Host(b) => write!(f, "{b:?}"),
        }
    }
}

/// A planted bug to switch on (only meaningful with the `planted-bugs`
/// feature).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PlantedBug {
    /// Which bug.
    pub bug: BugKind,
    /// `None`: on every node; `Some(id)`: on that node only.
    pub node: Option<u64>,
}

/// Everything that decides one run, together with the seed.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// Decides every random choice of the run.
    pub seed: u64,
    /// Voters the cluster starts with (1..=[`NODES_MAX`]).
    pub nodes: usize,
    /// Events processed in the fault phase.
    pub steps: u64,
    /// Which faults may strike.
    pub faults: Faults,
    /// Run the liveness phase after the fault phase.
    pub liveness: bool,
    /// Record a readable timeline (slower; for `replay`).
    pub record_trace: bool,
    /// A planted bug to switch on.
    pub bug: Option<PlantedBug>,
    /// Force this fault profile (see [`PROFILES`]) instead of drawing one.
    pub profile: Option<&'static str>,
    /// The nodes' storage: the real store over a simulated disk, or the
    /// in-memory stand-in.
    pub storage: StorageKind,
    /// The nodes' state machine engine: the server's default, durable one
    /// (raftkv-mvcc on the node's simulated disk) or the in-memory one.
    pub state: StateKind,
    /// For the simulator's own tests only: a broken driver that acknowledges
    /// writes without syncing them (`--storage disk`). The durability check
    /// must catch it.
    #[doc(hidden)]
    pub skip_sync: bool,
    /// For the simulator's own tests only: a broken driver that reports a
    /// durable state machine's checkpoints done without running them (no
    /// fsync). The reopen check must catch it.
    #[doc(hidden)]
    pub skip_checkpoint: bool,
}

/// The fault profiles a seed may draw (see [`Params::profile`]).
pub const PROFILES: [&str; 7] = [
    "chaos",
    "leader-churn",
    "partitions",
    "reconfig",
    "elections",
    "leases",
    "figure8",
];

impl SimConfig {
    /// A run of `nodes` voters with every fault, 3,000 steps.
    pub fn new(seed: u64, nodes: usize) -> Self {
        SimConfig {
            seed,
            nodes,
            steps: 3_000,
            faults: Faults::ALL,
            liveness: true,
            record_trace: false,
            bug: None,
            profile: None,
            storage: StorageKind::Disk,
            state: StateKind::Durable,
            skip_sync: false,
            skip_checkpoint: false,
        }
    }

    /// Checks the parts a user can get wrong.
    pub fn validate(&self) -> Result<(), String> {
        if self.nodes == 0 || self.nodes > NODES_MAX {
            return Err(format!(
                "--nodes must be in 1..={NODES_MAX}, not {}",
                self.nodes
            ));
        }
        if self.steps == 0 {
            return Err("--steps must be positive".into());
        }
        Ok(())
    }

    /// The command line that replays this run.
    pub fn replay_command(&self) -> String {
        let mut cmd = String::new();
        if self.bug.is_some() {
            cmd.push_str("cargo run -p raft-sim --features planted-bugs -- ");
        } else {
            cmd.push_str("raft-sim ");
        }
        cmd.push_str(&format!(
            "replay --seed {} --nodes {} --steps {} --faults {}",
            self.seed, self.nodes, self.steps, self.faults
        ));
        if !self.liveness {
            cmd.push_str(" --no-liveness");
        }
        if let Some(p) = self.profile {
            cmd.push_str(&format!(" --profile {p}"));
        }
        if self.storage != StorageKind::Disk {
            cmd.push_str(&format!(" --storage {}", self.storage));
        }
        if self.state != StateKind::Durable {
            cmd.push_str(&format!(" --state {}", self.state));
        }
        if let Some(b) = self.bug {
            cmd.push_str(&format!(" --bug {:?}", b.bug));
            if let Some(n) = b.node {
                cmd.push_str(&format!(" --bug-node {n}"));
            }
        }
        cmd
    }
}

/// Fault rates and workload shape, drawn from the seed at the start of a
/// run (so that different seeds explore different mixes). Each seed first
/// draws a *profile* that concentrates on one kind of trouble (like
/// FoundationDB's test specs): most protocol bugs need a specific fault to
/// show, and a uniform mix makes each too rare.
#[derive(Clone, Debug, Serialize)]
pub struct Params {
    /// The seed's focus: `chaos`, `leader-churn`, `partitions`, `reconfig`,
    /// `elections` or `leases`.
    pub profile: &'static str,
    /// Spare nodes, started with an empty configuration.
    pub spares: usize,
    /// Probability that a message is lost.
    pub drop_prob: f64,
    /// Probability that a message is delivered twice.
    pub dup_prob: f64,
    /// Normal one-way delay range.
    pub delay_min_us: Micros,
    pub delay_max_us: Micros,
    /// Probability of a long delay (up to [`Params::long_delay_max_us`]).
    pub long_delay_prob: f64,
    pub long_delay_max_us: Micros,
    /// Per-node clock rate factor (1.0 = nominal), index = node id - 1.
    pub tick_skew: Vec<f64>,
    /// Time from starting an fsync to its completion.
    pub fsync_min_us: Micros,
    pub fsync_max_us: Micros,
    /// Mean time between fault actions.
    pub nemesis_interval_us: Micros,
    /// Relative weights of fault actions (crash, partition, pause, disk,
    /// membership, transfer).
    pub weights: [u32; 6],
    /// Probability that a crash picks the leader.
    pub crash_leader_bias: f64,
    /// Downtime of a crashed node.
    pub restart_min_us: Micros,
    pub restart_max_us: Micros,
    /// Probability that a node crashes right after granting a vote (before
    /// the vote is durable) and restarts at once: elections are where
    /// forgotten votes hurt.
    pub crash_after_vote_prob: f64,
    /// Chance that a follower crashes right after acknowledging new
    /// entries (before anything else happens to it).
    pub crash_after_ack_prob: f64,
    /// How long a partition lasts.
    pub heal_min_us: Micros,
    pub heal_max_us: Micros,
    /// Probability that a partition is centred on the leader.
    pub partition_leader_bias: f64,
    /// Probability that a membership change replaces several voters at once.
    pub swap_prob: f64,
    /// Probability that the leader crashes shortly after proposing a
    /// membership change.
    pub crash_after_membership_prob: f64,
    /// Probability that a new leader crashes right after its election.
    pub crash_after_elected_prob: f64,
    /// Probability that a leader's outgoing messages become slow (by a few
    /// election timeouts, for a while) right after it accepts a proposal.
    pub slow_leader_after_propose_prob: f64,
    /// Probability that a membership change is followed at once by a
    /// partition between a majority of the new voters (with the leader)
    /// and a majority of the old ones.
    pub split_after_membership_prob: f64,
    /// Share of partitions that cut just one link (often the leader's to a
    /// follower), on top of the uniform choice among all kinds.
    pub link_cut_share: f64,
    /// Probability that a leader still in office when a leader of a later
    /// term is elected goes deaf (it can still send and serve clients).
    pub deafen_old_leader_prob: f64,
    /// Probability that a proposal accepted by a leader starts the
    /// scripted Figure 8 schedule (when it is not already running).
    pub figure8_prob: f64,
    /// Percent of operations that write.
    pub write_share_pct: u64,
    /// Clients issuing operations.
    pub clients: usize,
    /// Keys clients operate on.
    pub keys: u64,
    /// Pause between a client's operations.
    pub think_max_us: Micros,
    /// A client gives up on an attempt after this and retries elsewhere.
    pub client_timeout_us: Micros,
    /// Share of reads served from the leader's lease (0 when clocks drift
    /// too much for leases to be safe).
    pub lease_read_share: f64,
    /// Applied entries beyond the snapshot before a node compacts.
    pub compact_every_entries: u64,
    /// Entries kept in the log after a compaction (the host holds a
    /// snapshot until this many more are applied).
    pub snapshot_keep_entries: u64,
    /// InstallSnapshot chunk size.
    pub snapshot_chunk_bytes: u64,
    /// Most AppendEntries in flight per follower.
    pub max_inflight_msgs: usize,
    /// `--storage disk`: segment files rotate at this size (small, so that
    /// rotation and segment deletion after compaction happen).
    pub segment_bytes_max: u64,
    /// `--storage disk`: budget of the store's entry cache (small, so that
    /// reads from the segment files happen).
    pub cache_bytes_max: u64,
}

impl Params {
    /// Draws the parameters of a run from `rng`.
    pub fn draw(rng: &mut Rng, cfg: &SimConfig) -> Params {
        let f = cfg.faults;
        let total = cfg.nodes + if f.membership { SPARES_MAX } else { 0 };
        let drawn = PROFILES[rng.range(0, PROFILES.len() as u64) as usize];
        let profile = cfg.profile.unwrap_or(drawn);
        // Half the skewed seeds drift little enough for leader leases to be
        // safe (lease reads on); the other half drift up to 20%.
        let big_skew = f.skew && profile != "leases" && rng.chance(0.5);
        let skew_max = if big_skew {
            0.2
        } else if f.skew {
            0.04
        } else {
            0.0
        };
        let tick_skew = (0..total)
            .map(|_| 1.0 + rng.float(-skew_max, skew_max + f64::EPSILON))
            .collect();
        let delay_min_us = rng.range(50, 300);
        let on = |b: bool, w: u64| if b { w as u32 } else { 0 };
        let mut p = Params {
            profile,
            spares: if f.membership { SPARES_MAX } else { 0 },
            drop_prob: if f.loss { rng.float(0.0, 0.08) } else { 0.0 },
            dup_prob: if f.duplicate {
                rng.float(0.0, 0.05)
            } else {
                0.0
            },
            delay_min_us,
            delay_max_us: delay_min_us + rng.range(200, 3_000),
            long_delay_prob: if f.delay { rng.float(0.0, 0.03) } else { 0.0 },
            long_delay_max_us: 3 * ELECTION_TIMEOUT_US,
            tick_skew,
            fsync_min_us: 50,
            fsync_max_us: rng.range(100, 3_000),
            nemesis_interval_us: rng.range(2_000, 30_000),
            weights: [
                on(f.crash, rng.range(1, 5)),
                on(f.partition, rng.range(1, 5)),
                on(f.pause, rng.range(0, 3)),
                on(f.disk, rng.range(1, 3)),
                on(f.membership, rng.range(1, 4)),
                on(f.transfer, rng.range(0, 3)),
            ],
            crash_leader_bias: 0.5,
            restart_min_us: TICK_US,
            restart_max_us: 6 * ELECTION_TIMEOUT_US,
            crash_after_vote_prob: if f.crash { rng.float(0.0, 0.1) } else { 0.0 },
            heal_min_us: 2 * TICK_US,
            heal_max_us: 10 * ELECTION_TIMEOUT_US,
            partition_leader_bias: 0.3,
            swap_prob: 0.3,
            crash_after_membership_prob: 0.0,
            crash_after_elected_prob: if f.crash { 0.05 } else { 0.0 },
            figure8_prob: 0.0,
            deafen_old_leader_prob: if f.partition { 0.1 } else { 0.0 },
            link_cut_share: 0.0,
            split_after_membership_prob: if f.partition { 0.1 } else { 0.0 },
            slow_leader_after_propose_prob: if f.delay { 0.003 } else { 0.0 },
            write_share_pct: 60,
            clients: rng.range(2, 9) as usize,
            keys: rng.range(1, 5),
            think_max_us: rng.range(100, 2_000),
            client_timeout_us: rng.range(2, 5) * ELECTION_TIMEOUT_US,
            lease_read_share: if big_skew { 0.0 } else { 0.3 },
            compact_every_entries: if f.compaction {
                rng.range(4, 64)
            } else {
                u64::MAX
            },
            snapshot_chunk_bytes: rng.range(32, 512),
            max_inflight_msgs: rng.range(2, 32) as usize,
            segment_bytes_max: rng.range(4 << 10, 64 << 10),
            cache_bytes_max: rng.range(0, 32 << 10),
            snapshot_keep_entries: rng.range(0, 3) * 8,
            crash_after_ack_prob: if f.crash { rng.float(0.0, 0.05) } else { 0.0 },
        };
        match profile {
            "leader-churn" => {
                // Leaders die with writes half replicated and slow disks:
                // old-term entries linger for the next leaders (Figure 8).
                p.weights = [
                    on(f.crash, 8),
                    on(f.partition, 1),
                    on(f.pause, 1),
                    0,
                    0,
                    on(f.transfer, 1),
                ];
                p.crash_leader_bias = 0.9;
                p.restart_min_us = 500;
                p.restart_max_us = 2 * ELECTION_TIMEOUT_US;
                p.fsync_max_us = rng.range(1_000, 5_000);
                p.nemesis_interval_us = rng.range(3_000, 15_000);
                p.drop_prob = p.drop_prob.min(0.02);
                p.think_max_us = 300;
                p.clients = rng.range(4, 9) as usize;
                p.crash_after_elected_prob = if f.crash { 0.3 } else { 0.0 };
            }
            "partitions" => {
                // Short partitions around the leader while clients keep
                // talking to it: stale leaders, stale reads, stale terms.
                p.weights = [
                    on(f.crash, 1),
                    on(f.partition, 8),
                    on(f.pause, 1),
                    0,
                    0,
                    on(f.transfer, 1),
                ];
                p.heal_min_us = TICK_US;
                p.heal_max_us = 3 * ELECTION_TIMEOUT_US;
                p.partition_leader_bias = 0.8;
                p.nemesis_interval_us = rng.range(3_000, 20_000);
                p.lease_read_share = 0.6;
                p.drop_prob = p.drop_prob.min(0.02);
                if f.delay {
                    p.slow_leader_after_propose_prob = 0.03;
                }
                if f.partition {
                    p.deafen_old_leader_prob = 0.5;
                }
            }
            "reconfig" => {
                // Membership changes, often replacing several voters at once,
                // with the leader dying in the middle.
                p.weights = [
                    on(f.crash, 2),
                    on(f.partition, 1),
                    0,
                    0,
                    on(f.membership, 8),
                    on(f.transfer, 1),
                ];
                p.swap_prob = 0.7;
                if f.partition {
                    p.split_after_membership_prob = 0.4;
                }
                p.crash_after_membership_prob = if f.crash { 0.4 } else { 0.0 };
                p.nemesis_interval_us = rng.range(2_000, 10_000);
                p.restart_max_us = 2 * ELECTION_TIMEOUT_US;
            }
            "elections" => {
                // Split votes and voters that crash right after voting and
                // come back at once.
                p.crash_after_vote_prob = if f.crash { rng.float(0.2, 0.6) } else { 0.0 };
                p.weights = [
                    on(f.crash, 2),
                    on(f.partition, 3),
                    on(f.pause, 1),
                    0,
                    0,
                    on(f.transfer, 3),
                ];
                p.nemesis_interval_us = rng.range(3_000, 15_000);
                p.crash_after_elected_prob = if f.crash { 0.2 } else { 0.0 };
            }
            "leases" => {
                // Read-mostly load on leader leases while partitions let some
                // followers time out and others still hear the leader.
                p.weights = [on(f.crash, 1), on(f.partition, 8), 0, 0, 0, 0];
                p.heal_min_us = TICK_US;
                p.heal_max_us = 5 * ELECTION_TIMEOUT_US;
                p.partition_leader_bias = 0.9;
                p.link_cut_share = 0.5;
                p.lease_read_share = 0.9;
                // Often almost read-only: a follower cut off from the leader
                // then stays as up to date as the others, so only the lease
                // keeps them from electing it while the leader serves reads.
                if rng.chance(0.5) {
                    p.write_share_pct = 1;
                    p.lease_read_share = 1.0;
                } else {
                    p.write_share_pct = 10;
                }
                if f.partition {
                    p.deafen_old_leader_prob = 0.6;
                }
                p.drop_prob = 0.0;
                p.long_delay_prob = 0.0;
                p.nemesis_interval_us = rng.range(10_000, 40_000);
            }
            "figure8" => {
                // Raft's Figure 8: entries stranded on a minority by leaders
                // cut off right after they append, new leaders that crash
                // right after their first commit while their own no-op is
                // still unsynced (slow disks, fast network), and short
                // partitions around elections, so that a leader of a later
                // term re-replicates an old entry and a leader without it
                // comes next. Only the current-term commit rule keeps this
                // safe.
                p.weights = [
                    on(f.crash, 3),
                    on(f.partition, 3),
                    0,
                    0,
                    0,
                    on(f.transfer, 1),
                ];
                p.crash_leader_bias = 0.8;
                p.restart_min_us = 500;
                p.restart_max_us = 2 * ELECTION_TIMEOUT_US;
                p.heal_min_us = 2 * TICK_US;
                p.heal_max_us = 3 * ELECTION_TIMEOUT_US;
                p.partition_leader_bias = 0.8;
                p.fsync_min_us = 500;
                p.fsync_max_us = rng.range(2_000, 6_000);
                p.delay_max_us = p.delay_min_us + rng.range(100, 800);
                p.drop_prob = p.drop_prob.min(0.02);
                p.long_delay_prob = p.long_delay_prob.min(0.005);
                p.nemesis_interval_us = rng.range(3_000, 15_000);
                p.think_max_us = 300;
                p.clients = rng.range(3, 9) as usize;
                p.crash_after_elected_prob = if f.crash { 0.15 } else { 0.0 };
                if f.crash && f.partition {
                    p.figure8_prob = 0.05;
                }
            }
            _ => {}
        }
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_parse_and_display_round_trip() {
        assert_eq!(Faults::parse("all").unwrap(), Faults::ALL);
        assert_eq!(Faults::parse("none").unwrap(), Faults::NONE);
        let f = Faults::parse("crash,partition").unwrap();
        assert!(f.crash && f.partition && !f.loss);
        assert_eq!(Faults::parse(&f.to_string()).unwrap(), f);
        let g = Faults::parse("all,-disk").unwrap();
        assert!(!g.disk && g.crash);
        assert_eq!(Faults::parse(&g.to_string()).unwrap(), g);
        assert!(Faults::parse("crash,bogus").is_err());
    }

    #[test]
    fn config_validation_rejects_bad_sizes() {
        assert!(SimConfig::new(1, 0).validate().is_err());
        assert!(SimConfig::new(1, NODES_MAX + 1).validate().is_err());
        assert!(SimConfig::new(1, 5).validate().is_ok());
    }
}
