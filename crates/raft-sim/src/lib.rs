//! # raft-sim
//!
//! A deterministic simulator for whole raft-core clusters: 1 to 9 voters
//! (plus spares for membership changes) running the real engine, the real
//! storage engine (`raft-storage` over its simulated disk) and the real
//! key-value state machine (`raftkv-state`), with the network, the disks and
//! the clocks simulated in virtual time. One `u64` seed decides everything;
//! the same seed replays the same run bit for bit.
//!
//! While a run goes, checkers verify election safety, log matching, leader
//! completeness, state machine safety, monotonic commit/applied indexes,
//! that acknowledged writes are never lost, and every node's `validate()`;
//! at the end, the client history is checked for linearizability
//! ([`linearizability`]) after a liveness phase in which the healed cluster
//! must elect a leader and finish every pending operation.
//!
//! Entry points: [`run`] for one seed, [`run_many`] for a range of seeds
//! on several threads. See `SIMULATOR.md` for how to use it when changing
//! the protocol.

pub mod checker;
pub mod config;
pub mod linearizability;
mod panics;
pub mod queue;
pub mod rng;
mod runner;
pub mod shadow;
pub mod sim;
pub mod storage;
pub mod trace;

/// Every binary that runs the simulator (the CLI, its tests and benchmarks)
/// allocates through mimalloc: the simulated nodes allocate for every
/// message, entry and Ready: with the system allocator, allocating and
/// freeing took about 16% of the simulator's instructions, with mimalloc
/// about 6%. The only other crate depending on `raft-sim` is
/// `raftkv-chaos` (for the linearizability checker), whose binary and test
/// inherit this too; that is harmless (it allocates little) and no library
/// depends on `raft-sim`.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

pub use checker::Violation;
pub use config::{BugKind, Faults, Params, PlantedBug, SimConfig, StateKind};
pub use runner::{run_many, Failure, ManyOutcome};
pub use sim::{
    run, stand_ins, LinVerdict, SeedOutcome, Stats, STAND_INS, STAND_INS_MEM, STATE_DURABLE,
    STATE_MEMORY,
};
pub use storage::StorageKind;
pub use trace::{TraceEvent, TraceKind};
