//! # raft-core
//!
//! The Raft consensus protocol as a deterministic, IO-free state machine:
//! leader election with PreVote and CheckQuorum, log replication with
//! pipelining and flow control, snapshots, joint-consensus membership
//! changes, leadership transfer and linearizable reads.
//!
//! **Architecture Invariant:** this crate does no IO. It owns no sockets,
//! files, threads or timers, never reads a clock (time comes in as
//! arguments: [`RawNode::tick`] counts logical time, and clock readings
//! come through [`RawNode::observe_clock`] and [`RawNode::lease_read`])
//! and never touches OS randomness
//! (election timeouts come from an RNG seeded by [`Config::rng_seed`]).
//! Given the same inputs it produces the same outputs, bit for bit.
//!
//! ## The contract between the engine and its driver
//!
//! **Inputs** (each may produce output):
//! - [`RawNode::observe_clock`]: the driver's monotonic clock reads `now`
//!   ([`Nanos`]). Call it with a fresh reading before each batch of other
//!   inputs. Ticks may be delayed or dropped (a stopped or starved process
//!   loses them); the clock may not go back (older readings are ignored).
//!   Leases and CheckQuorum are measured on it, so a leader woken from a
//!   pause longer than an election timeout steps down here at once.
//! - [`RawNode::tick`]: one unit of logical time has passed (heartbeats,
//!   election timeouts, retransmission).
//! - [`RawNode::step`]: a message arrived from another node.
//! - [`RawNode::propose`]: the application wants a command replicated.
//! - [`RawNode::read_index`] / [`RawNode::lease_read`]: a linearizable read.
//!   A lease read takes a clock reading made after the read arrived; the
//!   lease lasts `(election_timeout_ticks - lease_drift_ticks) *
//!   tick_interval_nanos` from the latest clock reading observed before
//!   the heartbeat round that a quorum acknowledged was sent (a reading
//!   never later than the real send, so the lease errs short).
//! - [`RawNode::transfer_leadership`], [`RawNode::change_membership`].
//! - [`RawNode::on_persisted`]: the writes of a [`Ready`] are durable.
//! - [`RawNode::on_applied`]: the application applied committed entries.
//!
//! **Outputs** come in a [`Ready`] from [`RawNode::ready`] (check
//! [`RawNode::has_ready`] first). The driver handles a Ready as follows:
//!
//! 1. Send `messages` at once. They depend on nothing that is not yet
//!    durable (a leader's AppendEntries may leave before its own write:
//!    the leader counts itself towards a quorum only once durable).
//! 2. Write, in this order: `snapshot` (install it in storage, replacing the
//!    log it covers, and restore the state machine from it), `entries`
//!    (appending; an entry at an index already stored replaces that entry
//!    and everything after it), `hard_state`. Make them durable (fsync).
//!    A Ready whose only write is a new commit index
//!    (`Ready::must_sync` is false) needs no fsync of its own.
//! 3. Call `on_persisted(ready.number)`, then send `persisted_messages`
//!    (votes, vote requests, acknowledgements of entries: each is a promise
//!    about what is on this node's disk).
//! 4. Apply `committed_entries` in order to the state machine (they are
//!    already durable locally, so this may overlap step 2), then call
//!    `on_applied` with the last index applied.
//! 5. Serve each of `read_states` once the applied index reaches its
//!    `index`; fail the reads in `dropped_reads`.
//!
//! Readies may be pipelined: the driver may take the next Ready before the
//! previous one is durable, as long as writes happen in Ready order and
//! `on_persisted` is called in order (acknowledging `n` acknowledges every
//! Ready up to `n`). `persisted_messages` of Ready `n` must wait for the
//! writes of every Ready up to `n`.
//!
//! Storage is read through [`LogStore`]; the engine never writes it. A
//! [`StorageError::Fatal`] from any call means the node must stop.
//!
//! ## Starting a cluster
//!
//! Every founding member starts with storage whose snapshot metadata (at
//! index 0) holds the initial configuration; a node that will be added later
//! starts with an empty configuration and learns it from the leader. See
//! [`MemStorage::new_with_membership`].
//!
//! ## Invariants
//!
//! [`RawNode::validate`] checks, after every input in debug builds:
//! snapshot index ≤ commit; applied ≤ handed-out ≤ commit ≤ last index;
//! persisted ≤ last index; term and commit never decrease; a leader has
//! voted for itself and tracks every member; only leaders track progress.

mod bugs;
pub mod config;
mod election;
pub mod error;
mod log;
mod membership_change;
pub mod message;
mod node;
pub mod progress;
pub mod quorum;
mod read;
pub mod ready;
mod replication;
pub mod rng;
mod snapshot;
pub mod state_machine;
pub mod storage;
pub mod testing;
mod transfer;
pub mod types;

pub use bugs::Bug;
pub use config::{Config, ConfigError};
pub use error::*;
pub use message::*;
pub use node::{Counters, NewError, PeerStatus, ProposalId, RawNode, Status};
pub use progress::ProgressState;
pub use ready::{MembershipChange, ReadState, Ready};
pub use state_machine::{SnapshotSink, SnapshotSource, SourceMeta, StateMachine};
pub use storage::{InitialState, LogStore, MemStorage, StorageError};
pub use types::*;
