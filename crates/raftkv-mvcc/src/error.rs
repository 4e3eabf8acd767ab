//! Errors, one enum per operation. What they share, a failure of the engine
//! or its file, is [`Fault`].

use std::path::PathBuf;

use raft_core::LogIndex;
use raftkv_state::CommandError;

/// The engine or its file failed. Every `Fault` is fatal for the store: it
/// refuses every later call with [`Fault::Failed`] and must be reopened
/// (which either succeeds on a consistent state or refuses the file).
#[derive(Debug, thiserror::Error)]
pub enum Fault {
    /// redb reported an error (I/O, a full disk, a damaged page it noticed).
    #[error("storage engine error on {file}: {source}")]
    Engine {
        /// The engine file.
        file: PathBuf,
        #[source]
        source: redb::Error,
    },
    /// A record in the file fails its checksum or is impossible: the file
    /// was damaged outside the engine. Nothing from it was served.
    #[error("{file} is corrupt: {detail}")]
    Corrupt {
        /// The engine file.
        file: PathBuf,
        /// Which record or structure, and how.
        detail: String,
    },
    /// The engine panicked (redb may panic on a file damaged outside it
    /// rather than return an error); the panic was caught at this crate's
    /// boundary and the store stopped.
    #[error("storage engine panicked on {file}: {message}")]
    Panicked {
        /// The engine file.
        file: PathBuf,
        /// The panic's message.
        message: String,
    },
    /// An earlier call failed fatally; this store does nothing more.
    #[error("store {file} stopped after an earlier failure: {reason}")]
    Failed {
        /// The engine file.
        file: PathBuf,
        /// The first failure.
        reason: String,
    },
}

/// Why [`MvccStore::open`](crate::MvccStore::open) failed. Nothing was
/// changed on disk except, possibly, the removal of an unfinished snapshot
/// file (`<file>.incoming`), which is always garbage.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The file is damaged, not a store, or the engine failed reading it.
    #[error(transparent)]
    Fault(#[from] Fault),
    /// Another process (or another handle in this one) has the file open.
    #[error("{file} is in use by another process or handle")]
    InUse {
        /// The engine file.
        file: PathBuf,
    },
    /// The file exists and is a redb database, but not one this crate wrote
    /// (or of a layout version this build does not read).
    #[error("{file} is not a raftkv-mvcc store: {detail}")]
    NotAStore {
        /// The engine file.
        file: PathBuf,
        /// What was found.
        detail: String,
    },
    /// Creating a new store, or removing a leftover, failed.
    #[error("cannot create or clean up {file}: {source}")]
    Io {
        /// The file concerned.
        file: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The options are unusable (a cache below its floor, say).
    #[error("invalid options: {0}")]
    Options(String),
}

/// Why applying entries failed. Every variant is fatal for the replica (a
/// command's own faults are answers, `Response::Rejected`); on error none
/// of the batch's entries was applied.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// The driver skipped entries (a driver bug): `entry_index` came after
    /// `applied_index`.
    #[error("entry {entry_index} applied after {applied_index}: entries skipped")]
    IndexGap {
        /// The store's applied index.
        applied_index: LogIndex,
        /// The entry that came next.
        entry_index: LogIndex,
    },
    /// The application record given to
    /// [`MvccStore::apply_batch_with_app`](crate::MvccStore::apply_batch_with_app)
    /// is larger than [`APP_BYTES_MAX`](crate::APP_BYTES_MAX). Not fatal:
    /// nothing was applied and the store goes on.
    #[error("application record of {bytes} bytes exceeds the limit of {max}")]
    AppTooLarge {
        /// Size given.
        bytes: u64,
        /// The limit.
        max: u64,
    },
    /// The engine or its file failed.
    #[error(transparent)]
    Fault(#[from] Fault),
    /// `StateMachine::restore` was given a snapshot that does not decode or
    /// verify; the state was not changed.
    #[error("snapshot refused: {0}")]
    Snapshot(#[from] ReceiveError),
    /// `StateMachine::restore` verified the snapshot but switching to it
    /// failed.
    #[error("installing the snapshot failed: {0}")]
    Install(#[from] InstallError),
}

/// Why a read failed.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The revision asked for was compacted away.
    #[error("revision {requested} is compacted (compact revision {compact_revision})")]
    Compacted {
        /// The revision asked for.
        requested: LogIndex,
        /// The oldest revision still readable.
        compact_revision: LogIndex,
    },
    /// The revision asked for is above the applied index.
    #[error("revision {requested} is in the future (applied index {applied_index})")]
    FutureRevision {
        /// The revision asked for.
        requested: LogIndex,
        /// The newest revision there is.
        applied_index: LogIndex,
    },
    /// The read breaks a limit of the configuration (key size, list limit).
    #[error("read refused: {0}")]
    Rejected(#[from] CommandError),
    /// The engine or its file failed.
    #[error(transparent)]
    Fault(#[from] Fault),
}

/// Why a checkpoint failed (the store is then failed: an fsync failure is
/// never retried, the page cache may already have dropped the data).
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// The engine or its file failed.
    #[error(transparent)]
    Fault(#[from] Fault),
}

/// Why a compaction was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum CompactError {
    /// The store is already compacted at or beyond that revision.
    #[error("revision {requested} is already compacted (compact revision {compact_revision})")]
    AlreadyCompacted {
        /// The revision asked for.
        requested: LogIndex,
        /// The current compact revision.
        compact_revision: LogIndex,
    },
    /// Compacting above the applied index would hide writes not made yet.
    #[error("revision {requested} is in the future (applied index {applied_index})")]
    FutureRevision {
        /// The revision asked for.
        requested: LogIndex,
        /// The newest revision there is.
        applied_index: LogIndex,
    },
    /// The engine or its file failed.
    #[error(transparent)]
    Fault(#[from] Fault),
}

/// Why producing a snapshot stream failed.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// The chunk size is outside the accepted range.
    #[error("chunk size {chunk_bytes} is outside {min}..={max} bytes")]
    ChunkSize {
        /// Asked for.
        chunk_bytes: u64,
        /// Smallest accepted.
        min: u64,
        /// Largest accepted.
        max: u64,
    },
    /// The engine or its file failed (or a record fails its checksum: a
    /// damaged record is never sent).
    #[error(transparent)]
    Fault(#[from] Fault),
}

/// Why a snapshot transfer was refused. After any error the receiver is
/// dead (every later push is refused) and its file is garbage: start a new
/// transfer. The live store is never touched by a receiver.
#[derive(Debug, thiserror::Error)]
pub enum ReceiveError {
    /// A chunk does not decode or fails its checksum.
    #[error("chunk {seq}: {detail}")]
    BadChunk {
        /// Sequence number of the chunk (as received, if readable).
        seq: u64,
        /// What is wrong.
        detail: String,
    },
    /// A chunk arrived out of order (lost, duplicated or reordered chunks
    /// restart the transfer; a resumable transfer is a later refinement).
    #[error("chunk {got} received, chunk {expected} expected")]
    OutOfOrder {
        /// The chunk expected next.
        expected: u64,
        /// The chunk received.
        got: u64,
    },
    /// The chunks are intact but the stream they carry is not a valid
    /// snapshot (bad record, wrong order, counts or stream checksum that do
    /// not match, a record beyond its size limit).
    #[error("invalid snapshot stream: {detail}")]
    BadStream {
        /// What is wrong.
        detail: String,
    },
    /// A chunk after the last one, or `finish` before it.
    #[error("snapshot stream {detail}")]
    Sequence {
        /// What happened.
        detail: &'static str,
    },
    /// The receiver failed earlier; start a new transfer.
    #[error("receiver stopped after an earlier error: {reason}")]
    Failed {
        /// The first error.
        reason: String,
    },
    /// Creating or removing the incoming file failed.
    #[error("cannot write {file}: {source}")]
    Io {
        /// The incoming file.
        file: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The engine failed writing the incoming file.
    #[error(transparent)]
    Fault(#[from] Fault),
}

/// Why switching to a received snapshot failed.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    /// The rename of the new file over the live one, or the directory
    /// fsync, failed. If the rename failed, the old file is still in place.
    #[error("cannot switch {from} to {to}: {source}")]
    Io {
        /// The received file.
        from: PathBuf,
        /// The live file.
        to: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The new file is in place but does not open.
    #[error("the installed snapshot does not open: {0}")]
    Open(#[from] OpenError),
    /// The snapshot was received for another store, or into another kind
    /// of storage than the store's (see
    /// [`MvccStore::install`](crate::MvccStore::install)). Nothing changed.
    #[error("snapshot cannot be installed here: {detail}")]
    Mismatch {
        /// What does not match.
        detail: String,
    },
}
