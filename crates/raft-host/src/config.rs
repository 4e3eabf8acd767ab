//! The host's limits and snapshot policy. Every limit has its unit last.

use raft_core::NodeId;

/// Configuration of one [`NodeHost`](crate::NodeHost).
#[derive(Clone, Debug)]
pub struct HostConfig {
    /// The engine's configuration. `applied` is overwritten by the host
    /// with the state machine's applied index at open.
    pub raft: raft_core::Config,
    /// Most proposals (and membership changes) waiting for their entry to
    /// be applied. Beyond it, proposing fails with `Backpressure`.
    pub pending_proposals_max: usize,
    /// Most reads waiting for a read point.
    pub pending_reads_max: usize,
    /// Most writes handed out and not yet reported durable. When reached,
    /// the host takes no Ready until the disk catches up, which bounds the
    /// memory held by writes in flight.
    pub inflight_writes_max: usize,
    /// Take a state machine snapshot once this many entries were applied
    /// since the last one. 0 disables the trigger.
    pub snapshot_trigger_entries: u64,
    /// Take a snapshot once this many bytes of entries (by
    /// `Entry::size_bytes`) were applied since the last one. 0 disables it.
    pub snapshot_trigger_bytes: u64,
    /// Entries kept in the log after a compaction: the host holds a
    /// snapshot it took until this many more entries are applied, and only
    /// then compacts up to it (see `NodeHost::maybe_snapshot`). 0 compacts
    /// as soon as the snapshot is taken.
    pub snapshot_keep_entries: u64,
    /// Longest a taken snapshot is held for `snapshot_keep_entries`, in
    /// ticks. 0 never holds one.
    pub snapshot_keep_ticks_max: u64,
    /// The first read context. A context names one ReadIndex request in
    /// the messages to and from the leader; a context used again after a
    /// restart could match a delayed answer to the previous run's request
    /// and serve a read at that older read point (a stale read: found by
    /// raft-sim, seed 128431). Give every start a fresh random value (the
    /// runtime draws one from the OS; the simulator from its seed).
    pub read_ctx_start: u64,
}

impl HostConfig {
    /// Defaults for node `id` (those of raft-runtime's `RuntimeConfig`).
    pub fn new(id: NodeId) -> Self {
        HostConfig {
            raft: raft_core::Config::new(id),
            pending_proposals_max: 65_536,
            pending_reads_max: 65_536,
            inflight_writes_max: 64,
            snapshot_trigger_entries: 100_000,
            snapshot_trigger_bytes: 256 << 20,
            snapshot_keep_entries: 1_000,
            snapshot_keep_ticks_max: 300,
            read_ctx_start: 1,
        }
    }
}
