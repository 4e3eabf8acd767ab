//! The host layer: one [`raft_core::RawNode`] with everything between the
//! engine and the outside world that decides durability and
//! acknowledgement, written once, sans-IO, and run by both the production
//! driver (raft-runtime, a thin tokio shell) and the simulator (raft-sim).
//! What the simulator proves is what the server runs.
//!
//! [`NodeHost`] owns: the order in which a Ready's parts are handled; the
//! pipeline of writes in flight (bounded); the callers waiting for their
//! proposal to apply or their read to be servable, keyed by the index or
//! read context the engine gave them; applying committed entries to the
//! state machine; restoring snapshots installed from the leader; the
//! snapshot trigger and the keep policy for log compaction; the typed
//! errors callers see. The shell owns the clock, the timer, the network,
//! the disk, and the callers' channels.
//!
//! # Contract
//!
//! **Inputs** (`handle_*`, any number between two `process` calls):
//!
//! - `observe_clock(now)`: a monotonic clock reading; before each batch
//!   of inputs (after a pause the engine must see the time that passed
//!   before anything else).
//! - `handle_tick()`: one tick of logical time.
//! - `handle_message(m)`: a message from a peer.
//! - `handle_propose(data, caller)`, `handle_change_membership(changes,
//!   caller)`: refused at once (the caller comes back with the error) or
//!   answered later by an event.
//! - `handle_read(consistency, caller, now)`: `now` read after the read
//!   arrived.
//! - `handle_transfer(to)`.
//! - `handle_durable(number)`: every write up to Ready `number` is durable
//!   (synced where its `sync` asked for it).
//! - `handle_compacted(index)`: the compaction handed out is done.
//! - Durable state machines only (see raft-core's `state_machine` docs):
//!   `handle_checkpointed(result)`: the checkpoint handed out is done
//!   (`Ok(durable applied index)`) or failed (fatal);
//!   `handle_snapshot_received(m)`: a streamed snapshot is durable beside
//!   the live state, `m` the leader's snapshot message with its data set
//!   to the sink's descriptor. Snapshot messages arriving through
//!   `handle_message` are dropped: they carry no data to install.
//!
//! **Processing**: `process()` after every batch of inputs. It takes the
//! engine's Readies (while fewer than `inflight_writes_max` writes are in
//! flight) and for each, in this order: (1) queues its `messages` for
//! transmission (they depend on nothing unwritten: a leader's
//! AppendEntries leave before its own write, which they overlap); (2)
//! queues its write (snapshot, entries, hard state); (3) holds its
//! `persisted_messages` (votes, vote requests, append acknowledgements:
//! each is a promise about the disk) until `handle_durable` covers it;
//! (4) applies its committed entries (already durable locally) and
//! answers their proposals; (5) answers reads whose read index is
//! applied, holding the others until it is. Then it takes a snapshot if
//! one is due (durable: hands out a checkpoint; while one runs, committed
//! entries wait in a bounded queue and no more Readies are taken past it).
//!
//! **Outputs** (drain all three after `process` and after
//! `handle_durable`):
//!
//! - `poll_transmit()`: send every message, in order, at once.
//! - `poll_write()`: do every [`WriteOp`] in order. A `Write` need not be
//!   durable before the next starts (writes may be pipelined and merged:
//!   see [`merge`]), but `handle_durable(n)` may be called only when every
//!   write up to `n` is durable. A `Compact` comes only after the writes
//!   before it.
//! - `poll_event()`: answers to callers ([`Event`]) and role changes.
//! - `poll_snapshot_send()` (durable state machines): snapshot messages
//!   for followers; the shell streams the state machine's
//!   `snapshot_source()` to the follower beside the message stream and
//!   delivers the message last, its metadata set to what the stream
//!   covers. One stream per follower at a time (the engine's resends are
//!   ignored while one runs).
//!
//! A `WriteOp::Checkpoint` runs off the host's thread (under the state
//! machine's read lock) and never behind or in front of log writes: it
//! only makes applied state durable. A `Compact` of a durable state
//! machine carries no data and never passes the last checkpoint, so a
//! restart finds the log from the state machine's durable index on.
//!
//! **The shell must never**: send a held message itself, report a write
//! durable before its fsync (an fsync failure is fatal: stop, answer
//! nothing more), or reorder writes. With that, nothing is acknowledged
//! before it is durable on a majority. Any `Err(StorageFailure)` is fatal:
//! call `shut_down(Some(reason))`, drain the events (every waiting caller
//! gets `Fatal`), and stop.

pub mod bugs;
pub mod config;
pub mod error;
mod host;
pub mod merge;
pub mod status;
pub mod stream;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_durable;

pub use bugs::HostBug;
pub use config::HostConfig;
pub use error::*;
pub use host::{Caller, Event, HostCounters, NodeHost, ReadPath, WriteBatch, WriteOp};
pub use merge::{Merger, WriteParts};
pub use status::{NodeStatus, PeerProgress};
