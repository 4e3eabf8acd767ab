//! raft-storage: the durable log and snapshot store of raftkv.
//!
//! [`Store`] keeps a Raft node's log in append-only *segment* files of
//! CRC32C-framed records (entries, hard states, snapshot markers), and its
//! snapshots in checksummed files written with the temporary-file, fsync,
//! rename, fsync-directory dance. It implements [`raft_core::LogStore`] for
//! the engine's reads (from memory, or from the segment files through an
//! in-memory offset index) and offers a write API for the driver, with group
//! commit: one `fdatasync` covers every write made since the previous one,
//! and concurrent callers of [`Store::sync`] share it.
//!
//! Promises:
//! - nothing is acknowledged (a `sync` returning `Ok`) before it is durable,
//!   and nothing acknowledged is lost by a crash;
//! - the hard state never goes backwards after a crash;
//! - a torn record at the very end of the last segment (a write that was
//!   never fsynced) is cut off at recovery; any other damage makes
//!   [`Store::open`] fail with [`OpenError::Corrupt`] naming file and offset;
//! - an I/O error or a full disk fails the store: it refuses every later
//!   write and [`Store::failure`] says why; a failed fsync is never retried.
//!
//! All file operations go through the [`Disk`] trait: [`RealDisk`] for the
//! real filesystem, [`SimDisk`] for deterministic crash, corruption and
//! fault-injection testing (and the cluster simulator).
//!
//! The on-disk format is described in the repository's `ARCHITECTURE.md`
//! (section raft-storage).

mod config;
mod disk;
mod error;
mod record;
mod sim;
mod store;

pub use config::StoreConfig;
pub use disk::{Disk, DiskFile, RealDisk, RealFile};
pub use error::{OpenError, WriteError};
pub use sim::{CrashFork, FaultKind, SimDisk, SimFile, SimHook, SimOp, SimOpKind};
pub use store::{RecoveryReport, Store};

/// Compile-time proof that a store can be shared between threads.
#[allow(dead_code)]
fn assert_send_sync() {
    fn is<T: Send + Sync>() {}
    is::<Store<RealDisk>>();
    is::<Store<SimDisk>>();
    is::<SimDisk>();
}
