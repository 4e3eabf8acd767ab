//! Errors of the store's API. Two families:
//! - [`OpenError`]: why a data directory could not be opened or created;
//! - [`WriteError`]: why a write was refused. Its *fatal* variants
//!   ([`WriteError::Io`], [`WriteError::Failed`]) mean the store has stopped
//!   accepting writes for good; the others are API misuse that changed
//!   nothing (see [`WriteError::is_fatal`]).

use std::io;
use std::path::PathBuf;

use raft_core::{HardState, LogIndex, StorageError, Term};

/// Why [`Store::open`](crate::Store::open) or
/// [`Store::bootstrap`](crate::Store::bootstrap) failed. Nothing on disk was
/// changed, except by a `bootstrap` of a directory that held no identity.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// `open` found no identity file: the directory was never bootstrapped
    /// (or its bootstrap did not complete).
    #[error("{dir}: not a raft-storage data directory (no identity file); bootstrap it first")]
    NotInitialized { dir: PathBuf },
    /// `bootstrap` found an identity file: the node already has state.
    #[error("{dir}: already initialized for cluster {cluster_id}, node {node_id}")]
    AlreadyInitialized {
        dir: PathBuf,
        cluster_id: u64,
        node_id: u64,
    },
    /// The directory belongs to another cluster.
    #[error("{dir}: belongs to cluster {found}, not {expected}")]
    WrongCluster {
        dir: PathBuf,
        expected: u64,
        found: u64,
    },
    /// The directory belongs to another node of the cluster.
    #[error("{dir}: belongs to node {found}, not {expected}")]
    WrongNode {
        dir: PathBuf,
        expected: u64,
        found: u64,
    },
    /// A file is damaged (checksum mismatch, impossible content) or missing.
    /// The node must not start: an operator has to look (see ARCHITECTURE.md, "Reasoning about a damaged directory").
    #[error("corruption in {file} at offset {offset}: {reason}")]
    Corrupt {
        file: PathBuf,
        offset: u64,
        reason: String,
    },
    /// An I/O operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    /// The configuration or the arguments are unusable.
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),
}

/// Why a write ([`Store::append`](crate::Store::append) and friends) failed.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// This call hit an I/O error (ENOSPC, EIO, a failed fsync). The store is
    /// now failed: every later write returns [`WriteError::Failed`]. What was
    /// acknowledged before stays durable; what was not may be lost.
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    /// The store failed earlier and refuses writes; the reason is the first
    /// failure's message.
    #[error("store failed earlier and accepts no writes: {0}")]
    Failed(String),
    /// The entries are not contiguous or their indexes do not follow.
    #[error("entry {index} does not follow entry {prev}")]
    NotContiguous { prev: LogIndex, index: LogIndex },
    /// The first entry would leave a hole after the last stored one.
    #[error("append at {first} leaves a gap after the last index {last}")]
    Gap { first: LogIndex, last: LogIndex },
    /// The first entry lies inside the snapshot.
    #[error("append at {index} is at or before the snapshot's last index {snapshot_index}")]
    Compacted {
        index: LogIndex,
        snapshot_index: LogIndex,
    },
    /// The append would replace a committed entry with another term.
    #[error("entry {index} of term {term} would replace a committed entry (commit {commit})")]
    ConflictsWithCommitted {
        index: LogIndex,
        term: Term,
        commit: LogIndex,
    },
    /// The append would drop committed entries from `from` on (its last
    /// entry is before the commit index).
    #[error("append would drop committed entries from {from} (commit {commit})")]
    TruncatesCommitted { from: LogIndex, commit: LogIndex },
    /// An entry is larger than the configured limit.
    #[error("entry {index} is {bytes} bytes, over the limit of {max_bytes}")]
    EntryTooLarge {
        index: LogIndex,
        bytes: u64,
        max_bytes: u64,
    },
    /// The hard state would go backwards (lower term, changed vote in the
    /// same term, or lower commit).
    #[error("hard state would regress from {current:?} to {new:?}")]
    HardStateRegress { current: HardState, new: HardState },
    /// The commit index points past the log.
    #[error("commit {commit} is beyond the last index {last_index}")]
    CommitBeyondLog {
        commit: LogIndex,
        last_index: LogIndex,
    },
    /// The snapshot is not newer than the one held.
    #[error("snapshot at {index} is not newer than the held snapshot at {current}")]
    SnapshotNotNewer { index: LogIndex, current: LogIndex },
    /// `compact` was given a snapshot past the last stored entry.
    #[error("snapshot at {index} is beyond the last index {last_index}")]
    SnapshotBeyondLog {
        index: LogIndex,
        last_index: LogIndex,
    },
    /// `compact` was given a snapshot whose term differs from the log's.
    #[error("snapshot at {index} has term {term} but the log has term {log_term}")]
    SnapshotTermMismatch {
        index: LogIndex,
        term: Term,
        log_term: Term,
    },
    /// The snapshot's membership is malformed.
    #[error("invalid membership: {0}")]
    InvalidMembership(&'static str),
}

impl WriteError {
    /// True if the store is failed and will accept no more writes.
    pub fn is_fatal(&self) -> bool {
        matches!(self, WriteError::Io { .. } | WriteError::Failed(_))
    }
}

impl From<WriteError> for StorageError {
    fn from(e: WriteError) -> StorageError {
        match e {
            WriteError::Compacted { .. } => StorageError::Compacted,
            e => StorageError::Fatal(e.to_string()),
        }
    }
}
