//! Engine configuration. Every limit the engine enforces is here, with its
//! unit last in its name.

use crate::types::{LogIndex, NodeId};

/// Configuration of one node's engine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// This node's id; never 0.
    pub id: NodeId,
    /// Lower bound of the randomized election timeout. Each time the timer is
    /// reset a fresh timeout is drawn uniformly from
    /// `[election_timeout_ticks, 2 * election_timeout_ticks)`.
    pub election_timeout_ticks: u32,
    /// A leader sends heartbeats every this many ticks. Must be well below
    /// the election timeout (etcd uses 1 : 10).
    pub heartbeat_interval_ticks: u32,
    /// Run a pre-vote round before bumping the term (thesis §9.6), so a node
    /// rejoining from a partition cannot force an election.
    pub pre_vote: bool,
    /// A leader steps down if it has not heard from a quorum within an
    /// election timeout, and followers that heard from a leader within the
    /// election timeout refuse to vote (the "leader lease").
    pub check_quorum: bool,
    /// Seed of the engine's private RNG (used only for election timeouts).
    /// Give every node a different one.
    pub rng_seed: u64,
    /// The index the application's state machine has already applied when
    /// the engine starts (its snapshot index plus anything it replayed).
    pub applied: LogIndex,
    /// Largest accepted application command, in bytes.
    pub max_entry_bytes: u64,
    /// Most bytes of entries in one AppendEntries message.
    pub max_append_bytes: u64,
    /// Most AppendEntries messages in flight to one follower.
    pub max_inflight_msgs: usize,
    /// Most bytes of entries in flight to one follower.
    pub max_inflight_bytes: u64,
    /// Most bytes of proposed-but-uncommitted entries a leader holds before
    /// it refuses proposals with `Backpressure`.
    pub max_uncommitted_bytes: u64,
    /// Most bytes of committed entries handed out in one `Ready`.
    pub max_apply_bytes_per_ready: u64,
    /// Size of one InstallSnapshot chunk.
    pub snapshot_chunk_bytes: u64,
    /// Largest snapshot a follower accepts from a leader.
    pub max_snapshot_bytes: u64,
    /// Most read requests waiting for leadership confirmation at once.
    pub max_pending_reads: usize,
    /// A learner may be promoted only when it is at most this many entries
    /// behind the leader's last index.
    pub max_promotion_lag_entries: u64,
    /// Clock drift bound for lease reads, in ticks: a lease read is served
    /// only while a quorum acknowledged a heartbeat sent less than
    /// `election_timeout_ticks - lease_drift_ticks` ticks' worth of clock
    /// time ago (see `tick_interval_nanos`).
    pub lease_drift_ticks: u32,
    /// How long one tick is on the driver's clock ([`crate::Nanos`]). The
    /// engine turns tick counts into clock time with it where time must be
    /// real time: a lease lasts `(election_timeout_ticks -
    /// lease_drift_ticks) * tick_interval_nanos` of the clock from the send
    /// of the heartbeat round that a quorum acknowledged, and a leader that
    /// heard from no quorum for `election_timeout_ticks *
    /// tick_interval_nanos` steps down as soon as it sees the clock.
    pub tick_interval_nanos: u64,
}

impl Config {
    /// The election timeout as clock time.
    pub fn election_timeout_nanos(&self) -> u64 {
        u64::from(self.election_timeout_ticks).saturating_mul(self.tick_interval_nanos)
    }

    /// How long after the send of a heartbeat round that a quorum
    /// acknowledged the leader may serve lease reads, as clock time.
    pub fn lease_nanos(&self) -> u64 {
        u64::from(
            self.election_timeout_ticks
                .saturating_sub(self.lease_drift_ticks),
        )
        .saturating_mul(self.tick_interval_nanos)
    }

    /// Defaults in the spirit of etcd: heartbeat every tick, elections after
    /// 10 to 20 ticks; the driver picks the tick length (100 ms in etcd).
    pub fn new(id: NodeId) -> Self {
        Config {
            id,
            election_timeout_ticks: 10,
            heartbeat_interval_ticks: 1,
            pre_vote: true,
            check_quorum: true,
            rng_seed: id.wrapping_mul(0x9E37_79B9_7F4A_7C15),
            applied: 0,
            max_entry_bytes: 1 << 20,
            max_append_bytes: 1 << 20,
            max_inflight_msgs: 256,
            max_inflight_bytes: 32 << 20,
            max_uncommitted_bytes: 256 << 20,
            max_apply_bytes_per_ready: 16 << 20,
            snapshot_chunk_bytes: 1 << 20,
            max_snapshot_bytes: 4 << 30,
            max_pending_reads: 4096,
            max_promotion_lag_entries: 1000,
            lease_drift_ticks: 2,
            tick_interval_nanos: 100_000_000,
        }
    }

    /// Checks that the configuration makes sense.
    pub fn validate(&self) -> Result<(), ConfigError> {
        use ConfigError::*;
        if self.id == 0 {
            return Err(ZeroId);
        }
        if self.heartbeat_interval_ticks == 0 {
            return Err(ZeroLimit("heartbeat_interval_ticks"));
        }
        if self.election_timeout_ticks <= self.heartbeat_interval_ticks {
            return Err(ElectionTimeoutTooShort {
                election_timeout_ticks: self.election_timeout_ticks,
                heartbeat_interval_ticks: self.heartbeat_interval_ticks,
            });
        }
        if self.lease_drift_ticks >= self.election_timeout_ticks {
            return Err(LeaseDriftTooLarge);
        }
        for (name, value) in [
            ("max_entry_bytes", self.max_entry_bytes),
            ("max_append_bytes", self.max_append_bytes),
            ("max_inflight_msgs", self.max_inflight_msgs as u64),
            ("max_inflight_bytes", self.max_inflight_bytes),
            ("max_uncommitted_bytes", self.max_uncommitted_bytes),
            ("max_apply_bytes_per_ready", self.max_apply_bytes_per_ready),
            ("snapshot_chunk_bytes", self.snapshot_chunk_bytes),
            ("max_snapshot_bytes", self.max_snapshot_bytes),
            ("max_pending_reads", self.max_pending_reads as u64),
            ("tick_interval_nanos", self.tick_interval_nanos),
        ] {
            if value == 0 {
                return Err(ZeroLimit(name));
            }
        }
        Ok(())
    }
}

/// Why a [`Config`] was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// Node id 0 is reserved for "nobody".
    #[error("node id 0 is reserved")]
    ZeroId,
    /// A limit or interval that must be positive is zero.
    #[error("{0} must be greater than zero")]
    ZeroLimit(&'static str),
    /// Elections would fire between heartbeats.
    #[error("election timeout ({election_timeout_ticks} ticks) must exceed the heartbeat interval ({heartbeat_interval_ticks} ticks)")]
    ElectionTimeoutTooShort {
        election_timeout_ticks: u32,
        heartbeat_interval_ticks: u32,
    },
    /// The lease would be empty.
    #[error("lease_drift_ticks must be below election_timeout_ticks")]
    LeaseDriftTooLarge,
}
