//! Runtime configuration: the engine's [`raft_core::Config`] plus the
//! driver's own limits and timeouts. Every limit has its unit last.

use std::time::Duration;

use raft_core::NodeId;

/// Configuration of one node's driver.
#[derive(Clone, Debug)]
pub struct RuntimeConfig {
    /// The engine's configuration (node id, election timeout in ticks, ...).
    pub raft: raft_core::Config,
    /// Length of one engine tick. With the engine's default of 10 to 20
    /// ticks per election timeout, 100 ms gives 1–2 s elections.
    pub tick_interval: Duration,
    /// How long `propose` waits for its command to be applied. On timeout the
    /// outcome is unknown (the command may still commit later).
    pub propose_timeout: Duration,
    /// How long `read` waits for a read point.
    pub read_timeout: Duration,
    /// How long membership changes, transfers, status and shutdown wait.
    pub admin_timeout: Duration,
    /// Capacity of the proposal queue into the driver. A full queue makes
    /// `propose` fail fast with `Backpressure` instead of queueing without
    /// bound.
    pub proposal_queue_max: usize,
    /// Most proposals drained from the queue into one engine Ready (and so
    /// one append): bounds the latency one batch adds to the loop.
    pub proposal_batch_max: usize,
    /// Capacity of the inbound peer message queue. The transport drops (and
    /// counts) messages when it is full; Raft retransmits.
    pub inbound_queue_max: usize,
    /// Capacity of the read request queue.
    pub read_queue_max: usize,
    /// Capacity of the admin request queue (membership, transfer, status).
    pub admin_queue_max: usize,
    /// Most proposals waiting for their entry to be applied. Beyond it,
    /// `propose` fails with `Backpressure`.
    pub pending_proposals_max: usize,
    /// Most reads waiting for a read point.
    pub pending_reads_max: usize,
    /// Most Readies handed to the writer thread and not yet durable. When
    /// reached, the driver stops taking Readies until the disk catches up,
    /// which bounds memory held by in-flight writes.
    pub inflight_writes_max: usize,
    /// Most Readies the writer folds into one fsync (group commit).
    pub write_batch_max: usize,
    /// Take a state machine snapshot and compact the log once this many
    /// entries were applied since the last snapshot. 0 disables the trigger.
    pub snapshot_trigger_entries: u64,
    /// Take a snapshot once this many bytes of entries (by
    /// `Entry::size_bytes`) were applied since the last one. 0 disables it.
    pub snapshot_trigger_bytes: u64,
    /// Entries kept in the log after a compaction. The store discards the
    /// log up to a snapshot's index, so the driver holds a snapshot it took
    /// (in memory) until this many more entries are applied, and only then
    /// compacts up to it: a follower lagging by fewer entries catches up
    /// from the log instead of receiving the whole snapshot. 0 compacts as
    /// soon as the snapshot is taken.
    pub snapshot_keep_entries: u64,
    /// Longest a taken snapshot is held for `snapshot_keep_entries`, in
    /// ticks: bounds how long its memory stays in use when writes stop.
    /// 0 never holds one (like `snapshot_keep_entries` = 0).
    pub snapshot_keep_ticks_max: u64,
}

impl RuntimeConfig {
    /// Production-leaning defaults for node `id`.
    pub fn new(id: NodeId) -> Self {
        RuntimeConfig {
            raft: raft_core::Config::new(id),
            tick_interval: Duration::from_millis(100),
            propose_timeout: Duration::from_secs(10),
            read_timeout: Duration::from_secs(10),
            admin_timeout: Duration::from_secs(10),
            proposal_queue_max: 8192,
            proposal_batch_max: 1024,
            inbound_queue_max: 8192,
            read_queue_max: 8192,
            admin_queue_max: 64,
            pending_proposals_max: 65_536,
            pending_reads_max: 65_536,
            inflight_writes_max: 64,
            write_batch_max: 256,
            snapshot_trigger_entries: 100_000,
            snapshot_trigger_bytes: 256 << 20,
            snapshot_keep_entries: 1_000,
            // 30 s at the default 100 ms tick.
            snapshot_keep_ticks_max: 300,
        }
    }

    /// The node's id.
    pub fn id(&self) -> NodeId {
        self.raft.id
    }

    /// Checks that every limit is usable.
    /// The host layer's part of this configuration. The engine measures
    /// leases and CheckQuorum on the clock in units of this driver's tick.
    pub fn host_config(&self) -> raft_host::HostConfig {
        let mut raft = self.raft.clone();
        raft.tick_interval_nanos = u64::try_from(self.tick_interval.as_nanos()).unwrap_or(u64::MAX);
        raft_host::HostConfig {
            raft,
            pending_proposals_max: self.pending_proposals_max,
            pending_reads_max: self.pending_reads_max,
            inflight_writes_max: self.inflight_writes_max,
            snapshot_trigger_entries: self.snapshot_trigger_entries,
            snapshot_trigger_bytes: self.snapshot_trigger_bytes,
            snapshot_keep_entries: self.snapshot_keep_entries,
            snapshot_keep_ticks_max: self.snapshot_keep_ticks_max,
            read_ctx_start: fresh_random_u64(),
        }
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        self.raft.validate()?;
        if self.tick_interval.is_zero() {
            return Err(ConfigError::Zero("tick_interval"));
        }
        for (name, v) in [
            ("proposal_queue_max", self.proposal_queue_max),
            ("proposal_batch_max", self.proposal_batch_max),
            ("inbound_queue_max", self.inbound_queue_max),
            ("read_queue_max", self.read_queue_max),
            ("admin_queue_max", self.admin_queue_max),
            ("pending_proposals_max", self.pending_proposals_max),
            ("pending_reads_max", self.pending_reads_max),
            ("inflight_writes_max", self.inflight_writes_max),
            ("write_batch_max", self.write_batch_max),
        ] {
            if v == 0 {
                return Err(ConfigError::Zero(name));
            }
        }
        for (name, d) in [
            ("propose_timeout", self.propose_timeout),
            ("read_timeout", self.read_timeout),
            ("admin_timeout", self.admin_timeout),
        ] {
            if d.is_zero() {
                return Err(ConfigError::Zero(name));
            }
        }
        Ok(())
    }
}

/// Why a [`RuntimeConfig`] (or transport configuration) was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The engine's configuration is invalid.
    #[error(transparent)]
    Raft(#[from] raft_core::ConfigError),
    /// A limit, capacity or duration that must be positive is zero.
    #[error("{0} must be greater than zero")]
    Zero(&'static str),
    /// The peer transport's TLS certificate does not carry this node's
    /// name ([`crate::tls::peer_name`]), so peers would refuse it.
    #[error(
        "the peer TLS certificate must name {expected}, this node's identity (it names {found})"
    )]
    TlsIdentity { expected: String, found: String },
    /// A limit is outside its allowed range.
    #[error("{name} is {value}, allowed {min}..={max}")]
    OutOfRange {
        name: &'static str,
        value: u64,
        min: u64,
        max: u64,
    },
}

/// 64 random bits from the OS (through std's per-process hash keys, which
/// std seeds from the OS's random source): unique per start, so read
/// contexts never repeat across restarts (see
/// `raft_host::HostConfig::read_ctx_start`).
fn fresh_random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.finish()
}
