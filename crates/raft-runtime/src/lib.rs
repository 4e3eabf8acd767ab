//! # raft-runtime
//!
//! Runs one [`raft_core`] node on tokio over a real network and disk: ticks
//! the engine, writes what it says to storage, sends what it says to peers,
//! applies what commits, and gives the application an async
//! [`RaftHandle`].
//!
//! ## Starting a node
//!
//! ```text
//! let metrics = Metrics::new();
//! let store = raft_storage::Store::open_or_bootstrap(RealDisk, dir, cluster_id, id,
//!                                                    founding_members, StoreConfig::default())?;
//! let mut tcp = TcpConfig::new(cluster_id, id, listen_addr);
//! tcp.peers = peer_addrs;                       // NodeId -> PeerAddr (IP or host:port)
//! let (transport, inbound) = TcpTransport::start(tcp, metrics.clone()).await?;
//! let handle = raft_runtime::start(RuntimeConfig::new(id), Arc::new(store),
//!                                  KvStore::new(kv_config)?, transport, inbound, metrics)?;
//! let response = handle.propose(command).await?;        // applied, with the SM's response
//! let value = handle.read_with(ReadConsistency::Linearizable, |sm| sm.get(key)).await?;
//! ```
//!
//! **Reads.** [`RaftHandle::read`] returns once the local state machine has
//! applied the read point (ReadIndex by default; `Lease` on the leader;
//! `Stale` at once). The state machine lives in an `Arc<RwLock<SM>>`
//! ([`RaftHandle::state_machine`]) that the driver write-locks only while
//! applying one batch of entries, so the caller reads it directly
//! afterwards, or uses [`RaftHandle::read_with`] for both steps.
//!
//! **Who leads, and is the node still running?** [`RaftHandle::leader_watch`]
//! is a `tokio::sync::watch` of [`LeaderInfo`] (role, term, known leader)
//! that the driver publishes on every change, so the application can route
//! requests or wait for a leader without a round trip to the driver
//! ([`RaftHandle::leader_info`] and [`RaftHandle::current_leader`] read it
//! once). [`RaftHandle::stopped`] resolves when the driver task ends,
//! however it ends (graceful shutdown, fatal error, even a panic), with the
//! fatal reason if there was one.
//!
//! **Storage implementations.** [`RaftStorage`] is implemented for
//! `raft_storage::Store<D>` (the real engine: any of its errors is fatal)
//! and for [`MemStore`] (tests, simulator).
//!
//! **Metrics.** [`Metrics`] holds `prometheus-client` counters, gauges and
//! histograms (proposals, commits, applies, append and fsync latency, commit
//! latency, messages sent/dropped per peer, refused connections and peer
//! TLS refusals by reason,
//! elections started/won, leader changes, snapshots). [`Metrics::register`]
//! adds them to a server's registry; [`Metrics::render`] renders them alone.
//!
//! ## How the driver honours the engine's contract
//!
//! One tokio task (the *driver*) owns the `RawNode`; nothing else touches it.
//! It works in *turns*: it waits for one input (writer acknowledgement,
//! tick, admin request, peer message, proposal or read), then takes every
//! other input already queued without waiting (each kind up to a per-turn
//! limit), then takes the Readies. So concurrent proposals share one Ready:
//! one append, one AppendEntries per follower, one write, one fsync. When a
//! turn accepted proposals it first yields to the scheduler and drains the
//! proposal queue again (and again, up to four times, while each yield
//! brought more), so that application tasks woken by the same I/O poll
//! (e.g. HTTP handlers) can join the batch; each yield costs a trip
//! through tokio's run queue (microseconds), not a timer. Readies are never
//! held back waiting for the writer: the leader's AppendEntries leave at
//! once and overlap its own fsync. For each `Ready`:
//!
//! 1. `messages` go to the [`Transport`] at once (never blocking: per-peer
//!    bounded queues that drop when full).
//! 2. `snapshot`, `entries`, `hard_state` go, as one batch, to a dedicated
//!    **writer thread** through a queue in Ready order. The writer takes
//!    every batch that queued up, folds consecutive ones into one
//!    [`RaftStorage::write`] where that changes nothing (contiguous entries,
//!    newest hard state last; a snapshot or a replaced suffix starts a new
//!    write), then calls [`RaftStorage::sync`] once (group commit) and
//!    reports the highest Ready number durable.
//! 3. The Ready's `persisted_messages` wait in an in-flight queue. Only when
//!    the writer reports Ready `n` durable does the driver restore the state
//!    machine from any snapshot in those Readies, call `on_persisted(n)`, and
//!    send their persisted messages (votes, vote requests, append and
//!    snapshot acknowledgements). Nothing that promises durability leaves
//!    before the fsync that makes it true.
//! 4. `committed_entries` (already durable locally, the engine guarantees)
//!    are applied at once, in order, under the state machine's write lock;
//!    waiting proposals complete with the state machine's response if the
//!    entry applied at their index has their term, else fail with
//!    `Dropped`. Then `on_applied`.
//! 5. `read_states` complete once the applied index reaches their index;
//!    `dropped_reads` fail.
//!
//! **Commit index advances are not fsynced on their own.** A Ready whose
//! only write is a hard state with the term and vote already written (the
//! commit index moved) is written but does not make its group sync (metric
//! `raft_syncs_skipped`); it becomes durable with the next fsync. The commit
//! index is volatile in Raft: no acknowledgement, vote or client answer
//! depends on it being on disk, a node that loses it restarts with a lower
//! one (never below its snapshot) and learns the rest from the leader, and
//! the store keeps records in order, so a durable commit index never points
//! past entries that are not. Without this, every proposal at low load cost
//! every node two fsyncs (the entry, then the commit that follows it).
//!
//! While the writer syncs, the driver keeps stepping messages, ticking and
//! taking new proposals; the next Readies queue behind the sync and share
//! the next one. At most `inflight_writes_max` Readies are in flight; beyond
//! that the driver stops taking Readies until the disk catches up.
//!
//! Any storage error (write, sync, compaction, or an engine read) is fatal:
//! the driver stops, records the reason (every later call returns
//! `Fatal(reason)`), fails everything pending and acknowledges nothing more.
//!
//! **Restarts never apply an entry twice.** The state machine is in-memory;
//! at start it is restored from the store's latest snapshot and the engine
//! is started with `applied` = that snapshot's index, so it hands out exactly
//! the entries after it for replay. A snapshot from a leader is restored
//! into the state machine only once durable in storage.
//!
//! **Snapshots.** When `snapshot_trigger_entries` entries or
//! `snapshot_trigger_bytes` bytes were applied since the last snapshot, the
//! driver serializes the state machine (under its read lock, in the driver
//! task), and the writer thread records it with [`RaftStorage::compact`]
//! after the pending sync. One compaction at a time.
//!
//! **A tail of entries survives compaction.** `compact` discards the log up
//! to the snapshot's index (and the engine requires the log to start right
//! after its snapshot), so compacting at the snapshot just taken would
//! leave no entries behind: any follower a little behind would need the
//! whole snapshot. The driver therefore holds the snapshot it took (in
//! memory) until `snapshot_keep_entries` (default 1,000) more entries are
//! applied, or `snapshot_keep_ticks_max` ticks pass, and only then compacts
//! up to it: at least that many recent entries stay in the log for lagging
//! followers. Costs: one serialized snapshot in memory meanwhile, and up to
//! that many more entries replayed after a restart. A snapshot installed
//! from the leader replaces a held one it covers.
//!
//! ## Threading model
//!
//! - the driver task (tokio): the engine, applying, proposals and reads;
//! - the writer thread (std): storage writes and fsyncs, so a slow disk
//!   never stalls the event loop;
//! - transport tasks (tokio): one listener, one task per inbound connection,
//!   one task per outbound peer (see [`tcp`] for framing, handshake, queues
//!   and backoff, and [`tls`] for the optional mutual TLS between peers);
//! - the application: any number of [`RaftHandle`] clones; inputs reach the
//!   driver over bounded channels (proposals, reads, admin, peer messages).
//!
//! ## Seams, and what could run under the simulator
//!
//! Storage ([`RaftStorage`]) and transport ([`Transport`]) are traits with
//! in-memory implementations ([`MemStore`], [`local::LocalNetwork`]). Time is
//! tokio's clock (`tokio::time::interval`), which tokio can pause and advance
//! virtually (`start_paused`). The order of Ready handling is therefore
//! reusable, but the driver as a whole is not deterministic: the writer is
//! an OS thread and tokio's scheduler interleaves tasks freely, so
//! `raft-sim` drives `raft-core` directly with its own single-threaded loop
//! and copies this crate's Ready ordering rather than running this code.
//! The TCP framing, handshake and connection management cannot run under
//! the simulator at all (they are real sockets); they are covered by the
//! loopback tests in this crate instead.

pub mod addr;
pub mod config;
mod driver;
pub mod error;
pub mod frame;
mod handle;
pub mod local;
pub mod metrics;
pub mod storage;
mod stream;
pub mod tcp;
pub mod tls;
pub mod transport;

pub use addr::{AddrParseError, PeerAddr};
pub use config::{ConfigError, RuntimeConfig};
pub use driver::start;
pub use error::*;
pub use handle::{LeaderInfo, NodeStatus, PeerProgress, RaftHandle};
pub use metrics::Metrics;
pub use storage::{MemStore, RaftStorage, WriteParts};
pub use tcp::{TcpConfig, TcpTransport};
pub use tls::{PeerTls, TlsCerts, TlsError, TlsFiles};
pub use transport::{
    inbound_channel, Inbound, IncomingSnapshot, SnapshotFrame, Transport,
    INCOMING_SNAPSHOTS_QUEUED_MAX, SNAPSHOT_FRAMES_QUEUED_MAX,
};
