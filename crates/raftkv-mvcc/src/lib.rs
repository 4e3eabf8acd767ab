//! raftkv-mvcc: a durable, multi-version key-value state machine for
//! raftkv, on the [redb](https://docs.rs/redb) embedded engine.
//!
//! [`MvccStore`] answers every [`raftkv_state::Command`] exactly as
//! [`raftkv_state::KvStore`] does (same [`raftkv_state::Response`]s, same
//! client-session semantics, same [`ReadView::digest`]), and implements
//! [`raft_core::StateMachine`], so it can replace the in-memory store. What
//! it adds:
//!
//! - **Durable state, cheap restarts.** The data, the client sessions and
//!   the applied index, term and membership live in one redb file and
//!   change in one engine transaction per applied batch, so the file always
//!   holds the state as of exactly one applied index. Applying commits
//!   *without* fsync (the Raft log already holds the entries durably);
//!   [`MvccStore::checkpoint`] makes it all durable and returns the durable
//!   applied index, up to which the log may be compacted. Opening reads a
//!   few pages whatever the data size; memory is bounded by the redb cache
//!   ([`MvccOptions::cache_bytes`]), not by the data.
//! - **Revisions.** A key's revision is the log index of the write (as in
//!   KvStore): `create_revision`, `mod_revision`, `version` as in etcd. Past
//!   versions are kept: [`ReadView::get_at`] reads at a past revision,
//!   [`ReadView::history`] lists a key's changes, and
//!   [`MvccStore::compact`] / [`MvccStore::compact_step`] drop the versions
//!   no read at or above the compact revision can see; reading below it is
//!   [`ReadError::Compacted`], which names the compact revision.
//! - **Snapshot transfer** as a stream of bounded, checksummed chunks from
//!   a consistent view while writes continue ([`SnapshotSource`]), and a
//!   receiver that builds a new file beside the live one
//!   ([`SnapshotReceiver`]) and switches atomically
//!   ([`MvccStore::install`]).
//! - **The host's own record.** [`MvccStore::apply_batch_with_app`] also
//!   replaces a small blob of the host's (its replicated address book, at
//!   most [`APP_BYTES_MAX`] bytes) in the same transaction as the entries,
//!   so after a crash the blob and the data are of one applied index;
//!   [`MvccStore::app_state`] reads it, and snapshots carry it.
//! - **Any disk** (feature `sim`): `MvccStore::open_on_disk` runs the
//!   store on raft-storage's `Disk` seam (the simulator's `SimDisk`, whose
//!   crashes lose and tear unsynced writes), with snapshots received and
//!   installed on that disk; [`MvccStore::open_with_backend`] with
//!   [`SnapshotReceiver::begin_with_backend`] on any redb backend. See the
//!   `disk` module for what a crash leaves.
//! - **Damage is refused, never served.** Every stored record carries a
//!   CRC32C over its key and value, checked on every read; a bad record, a
//!   damaged meta record or an engine panic on a damaged page is a
//!   [`Fault`] naming the file, and the store stops.
//!
//! The on-disk layout, the compaction rule and the reasons for the choices
//! are in ARCHITECTURE.md (section raftkv-mvcc).
//!
//! ```
//! use raft_core::{Entry, EntryPayload};
//! use raftkv_mvcc::{MvccOptions, MvccStore};
//! use raftkv_state::{Command, KvConfig, Response};
//!
//! let dir = tempfile::tempdir().unwrap();
//! let mut store =
//!     MvccStore::open(dir.path().join("state.redb"), KvConfig::default(), MvccOptions::default())
//!         .unwrap();
//! let entry = |index, cmd: Command| Entry { term: 1, index, payload: EntryPayload::Normal(cmd.encode()) };
//! store.apply_batch(&[entry(1, Command::put("k", "v1")), entry(2, Command::put("k", "v2"))]).unwrap();
//! assert_eq!(store.get(b"k").unwrap().unwrap().value, "v2");
//! assert_eq!(store.get_at(b"k", 1).unwrap().unwrap().value, "v1");
//! assert_eq!(store.checkpoint().unwrap(), 2);
//! ```

mod codec;
#[cfg(feature = "sim")]
pub mod disk;
mod error;
pub mod snapshot;
mod store;
mod tables;
mod view;

pub use codec::{RecordError, StateRecord, APP_BYTES_MAX};
#[cfg(feature = "sim")]
pub use disk::DiskBackend;
pub use error::{
    ApplyError, CheckpointError, CompactError, Fault, InstallError, OpenError, ReadError,
    ReceiveError, SendError,
};
pub use snapshot::{ReceivedSnapshot, SnapshotChunk, SnapshotReceiver, SnapshotSource};
pub use store::{CompactProgress, MvccOptions, MvccStore, CACHE_BYTES_MIN};
pub use view::{EventKind, KeyEvent, KeyHistory, ReadView, VerifyReport};
