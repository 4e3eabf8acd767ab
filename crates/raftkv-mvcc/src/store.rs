//! The store: opening, applying entries, checkpoints, compaction.

use std::ops::Bound;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use raft_core::{Entry, EntryPayload, LogIndex, StateMachine};
use raftkv_state::{
    CasAction, CasResponse, ClientSession, Command, CommandError, Condition, DeleteResponse,
    GetResponse, KvConfig, PutResponse, ReadCommand, Response, WriteCommand, WriteOp,
};
use redb::{
    Database, DatabaseError, Durability, ReadableDatabase, ReadableTable, ReadableTableMetadata,
    Table, TableHandle,
};

use crate::codec::{
    check_format, decode_app, decode_change, encode_app, encode_change, encode_format,
    CurrentRecord, HistoryRecord, SessionRecord, StateRecord, APP_BYTES_MAX,
};
use crate::error::{ApplyError, CheckpointError, CompactError, Fault, OpenError, ReadError};
use crate::tables::{
    corrupt, engine, get_current, last_history_in, list_current, CHANGES, CURRENT, HISTORY, META,
    META_APP, META_FORMAT, META_STATE, SESSIONS, SESSION_LRU,
};
use crate::view::ReadView;

/// Smallest redb cache accepted, in bytes: below it every read misses.
pub const CACHE_BYTES_MIN: usize = 1024 * 1024;

/// How a store is opened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MvccOptions {
    /// Memory redb may use to cache pages (reads and the write buffer), in
    /// bytes. This, not the data size, bounds the store's memory.
    pub cache_bytes: usize,
    /// Verify the checksum of every page of the file at open (reads the
    /// whole file: cost grows with the data). Off, an open reads a few pages
    /// and a damaged record is found when it is read (and refused, never
    /// served); on, any damaged page of the committed state refuses the
    /// open. For an operator's check, not the normal restart.
    pub verify_on_open: bool,
}

impl Default for MvccOptions {
    fn default() -> Self {
        MvccOptions {
            cache_bytes: 64 * 1024 * 1024,
            verify_on_open: false,
        }
    }
}

/// Where a compaction stands, from [`MvccStore::compact_step`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CompactProgress {
    /// Revisions (changes) processed by this step.
    pub changes_processed: u64,
    /// History records removed by this step.
    pub versions_removed: u64,
    /// No history below the compact revision is left to remove.
    pub done: bool,
}

/// A shared handle on the engine whose drop cannot unwind: redb closes the
/// file on drop and may panic there on a damaged file (it reads the
/// allocator state), which must not abort a thread already handling the
/// error that revealed the damage.
pub(crate) struct DbHandle(Option<Arc<Database>>);

impl DbHandle {
    pub(crate) fn new(db: Database) -> DbHandle {
        DbHandle(Some(Arc::new(db)))
    }

    pub(crate) fn from_arc(db: Arc<Database>) -> DbHandle {
        DbHandle(Some(db))
    }
}

impl std::ops::Deref for DbHandle {
    type Target = Arc<Database>;

    fn deref(&self) -> &Arc<Database> {
        // Taken only by `drop`.
        self.0
            .as_ref()
            .expect("the handle is present until dropped")
    }
}

impl Drop for DbHandle {
    fn drop(&mut self) {
        if let Some(db) = self.0.take() {
            let _ = catch_unwind(AssertUnwindSafe(move || drop(db)));
        }
    }
}

/// Where a store's engine file lives.
pub(crate) enum Backing {
    /// A file of the real filesystem, through `std::fs`.
    File,
    /// A backend the caller supplied ([`MvccStore::open_with_backend`]):
    /// the caller also supplies the backend a snapshot is received into.
    Backend,
    /// A file of a raft-storage [`Disk`](raft_storage::Disk)
    /// ([`MvccStore::open_on_disk`]).
    #[cfg(feature = "sim")]
    Disk(crate::disk::SharedDisk),
}

/// The durable MVCC key-value state machine. See the crate documentation.
pub struct MvccStore {
    pub(crate) db: DbHandle,
    pub(crate) file: PathBuf,
    pub(crate) config: KvConfig,
    pub(crate) options: MvccOptions,
    /// The state as of the last committed transaction.
    pub(crate) state: StateRecord,
    /// The host's application record as of the last committed transaction.
    pub(crate) app: Vec<u8>,
    /// Applied index of the last durable commit: what survives a crash.
    /// Atomic so that [`MvccStore::checkpoint`] takes `&self`: a host
    /// checkpoints under a read lock while reads go on.
    pub(crate) durable_applied_index: std::sync::atomic::AtomicU64,
    /// Where the engine's file lives: decides how snapshots are received
    /// and installed.
    pub(crate) backing: Backing,
    /// The first fatal failure; once set, every call is refused.
    pub(crate) failed: OnceLock<String>,
}

impl std::fmt::Debug for MvccStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MvccStore")
            .field("file", &self.file)
            .field("state", &self.state)
            .field("durable_applied_index", &self.durable_applied_index())
            .finish_non_exhaustive()
    }
}

/// The file a snapshot is received into, beside the live one.
pub(crate) fn incoming_path(file: &Path) -> PathBuf {
    let mut name = file.as_os_str().to_owned();
    name.push(".incoming");
    PathBuf::from(name)
}

/// Where a received snapshot waits for [`MvccStore::install`], kept across
/// a restart (see [`MvccStore::take_received`]).
pub(crate) fn received_path(file: &Path) -> PathBuf {
    let mut name = file.as_os_str().to_owned();
    name.push(".received");
    PathBuf::from(name)
}

fn tmp_path(file: &Path) -> PathBuf {
    let mut name = file.as_os_str().to_owned();
    name.push(".tmp");
    PathBuf::from(name)
}

/// fsyncs the directory holding `file`, so a rename or creation in it is
/// durable.
pub(crate) fn sync_parent(file: &Path) -> std::io::Result<()> {
    let dir = match file.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    std::fs::File::open(dir)?.sync_all()
}

pub(crate) fn remove_file_if_exists(path: &Path) -> std::io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Runs `f`, turning a panic into [`Fault::Panicked`]. redb documents that
/// it may panic on a file altered outside it; a panic must not take the
/// process down with an unexplained message, nor leave a half-used store
/// running.
pub(crate) fn catch<T, E: From<Fault>>(
    file: &Path,
    f: impl FnOnce() -> Result<T, E>,
) -> Result<T, E> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(payload) => {
            let message = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "non-string panic payload".into());
            Err(E::from(Fault::Panicked {
                file: file.to_path_buf(),
                message,
            }))
        }
    }
}

fn check_options(config: &KvConfig, options: &MvccOptions) -> Result<(), OpenError> {
    config
        .validate()
        .map_err(|e| OpenError::Options(e.to_string()))?;
    if options.cache_bytes < CACHE_BYTES_MIN {
        return Err(OpenError::Options(format!(
            "cache_bytes {} is below {CACHE_BYTES_MIN}",
            options.cache_bytes
        )));
    }
    Ok(())
}

/// Opens the redb file with the options (creating it only if `create`).
pub(crate) fn open_db(
    file: &Path,
    options: &MvccOptions,
    create: bool,
) -> Result<Database, OpenError> {
    let mut builder = Database::builder();
    builder
        .set_cache_size(options.cache_bytes)
        .set_check_integrity_on_open(options.verify_on_open && !create);
    let result = catch(file, || {
        let r = if create {
            builder.create(file)
        } else {
            builder.open(file)
        };
        r.map_err(|e| match e {
            DatabaseError::DatabaseAlreadyOpen => OpenError::InUse {
                file: file.to_path_buf(),
            },
            e => OpenError::Fault(engine(file)(e)),
        })
    })?;
    Ok(result)
}

/// Creates every table and the meta records in a fresh database.
pub(crate) fn init_tables(db: &Database, file: &Path, state: &StateRecord) -> Result<(), Fault> {
    let txn = db.begin_write().map_err(engine(file))?;
    {
        let mut meta = txn.open_table(META).map_err(engine(file))?;
        meta.insert(META_FORMAT, encode_format().as_slice())
            .map_err(engine(file))?;
        meta.insert(META_STATE, state.encode().as_slice())
            .map_err(engine(file))?;
        txn.open_table(CURRENT).map_err(engine(file))?;
        txn.open_table(HISTORY).map_err(engine(file))?;
        txn.open_table(CHANGES).map_err(engine(file))?;
        txn.open_table(SESSIONS).map_err(engine(file))?;
        txn.open_table(SESSION_LRU).map_err(engine(file))?;
    }
    txn.commit().map_err(engine(file))?;
    Ok(())
}

/// Reads and checks the meta records of an open database: the state and
/// the application record (empty if absent: a store that never had one).
pub(crate) fn read_meta(db: &Database, file: &Path) -> Result<(StateRecord, Vec<u8>), OpenError> {
    let not_a_store = |detail: String| OpenError::NotAStore {
        file: file.to_path_buf(),
        detail,
    };
    let txn = db
        .begin_read()
        .map_err(|e| OpenError::Fault(engine(file)(e)))?;
    let meta = match txn.open_table(META) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => {
            return Err(not_a_store("no meta table".into()))
        }
        Err(e) => return Err(OpenError::Fault(engine(file)(e))),
    };
    let format = meta
        .get(META_FORMAT)
        .map_err(|e| OpenError::Fault(engine(file)(e)))?
        .ok_or_else(|| not_a_store("no format record".into()))?;
    check_format(format.value()).map_err(not_a_store)?;
    for name in ["current", "history", "changes", "sessions", "session_lru"] {
        let exists = txn
            .list_tables()
            .map_err(|e| OpenError::Fault(engine(file)(e)))?
            .any(|h| h.name() == name);
        if !exists {
            return Err(OpenError::Fault(Fault::Corrupt {
                file: file.to_path_buf(),
                detail: format!("table {name} is missing"),
            }));
        }
    }
    let state = meta
        .get(META_STATE)
        .map_err(|e| OpenError::Fault(engine(file)(e)))?
        .ok_or_else(|| {
            OpenError::Fault(Fault::Corrupt {
                file: file.to_path_buf(),
                detail: "the state record is missing".into(),
            })
        })?;
    let state =
        StateRecord::decode(state.value()).map_err(|e| OpenError::Fault(corrupt(file)(e)))?;
    let app = match meta
        .get(META_APP)
        .map_err(|e| OpenError::Fault(engine(file)(e)))?
    {
        Some(guard) => decode_app(guard.value())
            .map_err(|e| OpenError::Fault(corrupt(file)(e)))?
            .to_vec(),
        None => Vec::new(),
    };
    Ok((state, app))
}

impl MvccStore {
    /// Opens the store in `file`, creating an empty one (applied index 0) if
    /// the file does not exist. Reads only the meta records: the cost does
    /// not depend on the data size (except with
    /// [`MvccOptions::verify_on_open`], or after a crash that redb must
    /// repair without its quick-repair record). The state is the last
    /// durable one; [`MvccStore::durable_applied_index`] says its index, and
    /// the log must be replayed from the entry after it.
    ///
    /// A leftover `<file>.incoming` (an unfinished snapshot transfer) or
    /// `<file>.tmp` (an unfinished creation) is removed; a finished transfer
    /// not yet installed (`<file>.received`) is kept: see
    /// [`MvccStore::take_received`].
    pub fn open(
        file: impl AsRef<Path>,
        config: KvConfig,
        options: MvccOptions,
    ) -> Result<MvccStore, OpenError> {
        let file = file.as_ref().to_path_buf();
        check_options(&config, &options)?;
        let io = |f: &Path| {
            let f = f.to_path_buf();
            move |source| OpenError::Io { file: f, source }
        };
        let incoming = incoming_path(&file);
        remove_file_if_exists(&incoming).map_err(io(&incoming))?;
        let tmp = tmp_path(&file);
        remove_file_if_exists(&tmp).map_err(io(&tmp))?;
        if !file.exists() {
            // Built under a temporary name and renamed, so a crash never
            // leaves a half-initialized file under the real name (which the
            // next open would have to tell apart from a damaged one).
            let db = open_db(&tmp, &options, true)?;
            catch(&tmp, || init_tables(&db, &tmp, &StateRecord::empty()))?;
            drop(db);
            std::fs::rename(&tmp, &file).map_err(io(&file))?;
            sync_parent(&file).map_err(io(&file))?;
        }
        let db = open_db(&file, &options, false)?;
        let (state, app) = catch(&file, || read_meta(&db, &file))?;
        Ok(MvccStore {
            db: DbHandle::new(db),
            durable_applied_index: state.applied_index.into(),
            state,
            app,
            file,
            config,
            options,
            backing: Backing::File,
            failed: OnceLock::new(),
        })
    }

    /// Opens (or, if `backend` is empty, creates) a store on a redb
    /// [`redb::StorageBackend`] instead of a file: how the simulator runs it
    /// on its simulated disk, and how the crash tests model power loss.
    /// `label` names the store in errors. Such a store cannot
    /// [`install`](MvccStore::install) a received snapshot (which renames
    /// files); the rest is identical.
    pub fn open_with_backend(
        backend: impl redb::StorageBackend,
        label: impl Into<PathBuf>,
        config: KvConfig,
        options: MvccOptions,
    ) -> Result<MvccStore, OpenError> {
        Self::open_backend(backend, label.into(), config, options, true)
    }

    /// [`MvccStore::open_with_backend`]; an empty backend is initialized
    /// only if `create`, else refused as damaged.
    pub(crate) fn open_backend(
        backend: impl redb::StorageBackend,
        file: PathBuf,
        config: KvConfig,
        options: MvccOptions,
        create: bool,
    ) -> Result<MvccStore, OpenError> {
        check_options(&config, &options)?;
        let fresh = backend
            .len()
            .map_err(|e| OpenError::Fault(engine(&file)(redb::StorageError::from(e))))?
            == 0;
        if fresh && !create {
            return Err(OpenError::Fault(Fault::Corrupt {
                file,
                detail: "the file is empty (it was created and made durable before it was \
                         named, so it was truncated or damaged since)"
                    .into(),
            }));
        }
        let mut builder = Database::builder();
        builder
            .set_cache_size(options.cache_bytes)
            .set_check_integrity_on_open(options.verify_on_open && !fresh);
        let db = catch(&file, || {
            builder
                .create_with_backend(backend)
                .map_err(|e| OpenError::Fault(engine(&file)(e)))
        })?;
        if fresh {
            catch(&file, || init_tables(&db, &file, &StateRecord::empty()))?;
        }
        let (state, app) = catch(&file, || read_meta(&db, &file))?;
        Ok(MvccStore {
            db: DbHandle::new(db),
            durable_applied_index: state.applied_index.into(),
            state,
            app,
            file,
            config,
            options,
            backing: Backing::Backend,
            failed: OnceLock::new(),
        })
    }

    /// Opens the store in `file` on a raft-storage
    /// [`Disk`](raft_storage::Disk) (the simulator's
    /// [`SimDisk`](raft_storage::SimDisk), or the real one), creating an
    /// empty store if the file does not exist, exactly as
    /// [`MvccStore::open`] does on the real filesystem: a new file is built
    /// and made durable under `<file>.tmp`, then renamed and the directory
    /// fsynced; leftovers of an interrupted creation or snapshot transfer
    /// are removed. The directory must exist.
    ///
    /// After a crash of the disk the store reopens at the last durable
    /// checkpoint (see the `disk` module documentation); a failed write or
    /// fsync is a [`Fault::Engine`] that stops the store. Snapshots are
    /// received with [`MvccStore::snapshot_receiver`] and installed with
    /// [`MvccStore::install`] (a rename on the same disk).
    #[cfg(feature = "sim")]
    pub fn open_on_disk<D: raft_storage::Disk>(
        disk: D,
        file: impl AsRef<Path>,
        config: KvConfig,
        options: MvccOptions,
    ) -> Result<MvccStore, OpenError> {
        let disk: crate::disk::SharedDisk = Arc::new(disk);
        let file = file.as_ref().to_path_buf();
        check_options(&config, &options)?;
        let io = |f: &Path| {
            let f = f.to_path_buf();
            move |source| OpenError::Io { file: f, source }
        };
        let incoming = incoming_path(&file);
        disk.remove_if_exists(&incoming).map_err(io(&incoming))?;
        let tmp = tmp_path(&file);
        disk.remove_if_exists(&tmp).map_err(io(&tmp))?;
        if !disk.exists(&file).map_err(io(&file))? {
            let backend = disk.backend(&tmp, true).map_err(io(&tmp))?;
            // Initialized with a durable commit before it gets its name.
            let created =
                Self::open_backend(backend, tmp.clone(), config.clone(), options.clone(), true)?;
            drop(created);
            disk.rename(&tmp, &file).map_err(io(&file))?;
            disk.sync_parent(&file).map_err(io(&file))?;
        }
        let backend = disk.backend(&file, false).map_err(io(&file))?;
        let mut store = Self::open_backend(backend, file, config, options, false)?;
        store.backing = Backing::Disk(disk);
        Ok(store)
    }

    /// The engine file.
    pub fn path(&self) -> &Path {
        &self.file
    }

    pub fn config(&self) -> &KvConfig {
        &self.config
    }

    /// Applied index, term, membership, compact revision and data size as
    /// of the last applied batch.
    pub fn state(&self) -> &StateRecord {
        &self.state
    }

    /// The host's application record as of the last applied batch (empty
    /// until [`MvccStore::apply_batch_with_app`] set one). It is part of the
    /// state: durable with it, restored with it after a crash, and carried
    /// by snapshots.
    pub fn app_state(&self) -> &[u8] {
        &self.app
    }

    /// Index of the last applied entry.
    pub fn applied_index(&self) -> LogIndex {
        self.state.applied_index
    }

    /// Index of the last entry whose effects are durable: after a crash the
    /// store reopens exactly at this index (or, if a later checkpoint
    /// completed, that one's). The Raft log may be compacted up to it.
    pub fn durable_applied_index(&self) -> LogIndex {
        self.durable_applied_index
            .load(std::sync::atomic::Ordering::Acquire)
    }

    /// Reads below this revision are refused.
    pub fn compact_revision(&self) -> LogIndex {
        self.state.compact_revision
    }

    pub(crate) fn check_failed(&self) -> Result<(), Fault> {
        match self.failed.get() {
            Some(reason) => Err(Fault::Failed {
                file: self.file.clone(),
                reason: reason.clone(),
            }),
            None => Ok(()),
        }
    }

    /// Records the first fatal failure (a `Fault` other than `Failed`).
    pub(crate) fn note_fault(&self, fault: &Fault) {
        if !matches!(fault, Fault::Failed { .. }) {
            let _ = self.failed.set(fault.to_string());
        }
    }

    /// A consistent read view of the last committed state. Cheap (no data
    /// is copied); it pins the pages it can see, so keep it short-lived
    /// except for a snapshot transfer.
    pub fn view(&self) -> Result<ReadView, Fault> {
        self.check_failed()?;
        let r = catch(&self.file, || {
            ReadView::new(self.db.clone(), self.file.clone(), self.config.clone())
        });
        if let Err(e) = &r {
            self.note_fault(e);
        }
        r
    }

    fn read<T>(&self, f: impl FnOnce(&ReadView) -> Result<T, ReadError>) -> Result<T, ReadError> {
        let view = self.view()?;
        let r = catch(&self.file, || f(&view));
        if let Err(ReadError::Fault(e)) = &r {
            self.note_fault(e);
        }
        r
    }

    /// The key's live version. See [`ReadView::get`].
    pub fn get(&self, key: &[u8]) -> Result<Option<raftkv_state::KeyValue>, ReadError> {
        self.read(|v| v.get(key))
    }

    /// The key as of `revision`. See [`ReadView::get_at`].
    pub fn get_at(
        &self,
        key: &[u8],
        revision: LogIndex,
    ) -> Result<Option<raftkv_state::KeyValue>, ReadError> {
        self.read(|v| v.get_at(key, revision))
    }

    /// Live keys with a prefix. See [`ReadView::list`].
    pub fn list(&self, prefix: &[u8], limit: u64) -> Result<raftkv_state::ListResponse, ReadError> {
        self.read(|v| v.list(prefix, limit))
    }

    /// A key's versions from a revision on. See [`ReadView::history`].
    pub fn history(
        &self,
        key: &[u8],
        from_revision: LogIndex,
        limit: u64,
    ) -> Result<crate::view::KeyHistory, ReadError> {
        self.read(|v| v.history(key, from_revision, limit))
    }

    /// Runs a read as applying it through the log would. See
    /// [`ReadView::execute_read`].
    pub fn execute_read(&self, read: &ReadCommand) -> Result<Response, ReadError> {
        self.read(|v| v.execute_read(read))
    }

    /// The KvStore-compatible digest. See [`ReadView::digest`].
    pub fn digest(&self) -> Result<u64, ReadError> {
        self.read(|v| v.digest().map_err(ReadError::from))
    }

    /// Applies committed entries in one engine transaction, committed
    /// without fsync (the Raft log already holds them durably; a crash
    /// loses at most what the log replays). Returns one response per entry,
    /// exactly as [`raftkv_state::KvStore`] would answer them.
    ///
    /// On error nothing of the batch is applied; an [`ApplyError::Fault`]
    /// stops the store.
    pub fn apply_batch(&mut self, entries: &[Entry]) -> Result<Vec<Response>, ApplyError> {
        self.apply_batch_with_app(entries, None)
    }

    /// [`MvccStore::apply_batch`], and with `Some(app)` also replaces the
    /// host's application record ([`MvccStore::app_state`]), in the same
    /// engine transaction: after a crash the record and the data are of the
    /// same applied index. `app` is at most [`APP_BYTES_MAX`] bytes
    /// ([`ApplyError::AppTooLarge`] otherwise, with nothing applied). With
    /// an empty `entries` it sets the record alone (the applied index does
    /// not move).
    pub fn apply_batch_with_app(
        &mut self,
        entries: &[Entry],
        app: Option<Vec<u8>>,
    ) -> Result<Vec<Response>, ApplyError> {
        self.check_failed()?;
        if let Some(app) = &app {
            if app.len() > APP_BYTES_MAX {
                return Err(ApplyError::AppTooLarge {
                    bytes: app.len() as u64,
                    max: APP_BYTES_MAX as u64,
                });
            }
        }
        let file = self.file.clone();
        let r = catch(&file, || self.apply_batch_inner(entries, app.as_deref()));
        match r {
            Ok(responses) => {
                if let Some(app) = app {
                    self.app = app;
                }
                Ok(responses)
            }
            Err(e) => {
                if let ApplyError::Fault(f) = &e {
                    self.note_fault(f);
                }
                Err(e)
            }
        }
    }

    fn apply_batch_inner(
        &mut self,
        entries: &[Entry],
        app: Option<&[u8]>,
    ) -> Result<Vec<Response>, ApplyError> {
        let file = &self.file;
        let mut txn = self.db.begin_write().map_err(engine(file))?;
        txn.set_durability(Durability::None).map_err(engine(file))?;
        let mut state = self.state.clone();
        let mut responses = Vec::with_capacity(entries.len());
        {
            let mut w = Writer::open(&txn, file, &self.config)?;
            for entry in entries {
                responses.push(w.apply_entry(&mut state, entry)?);
            }
            w.meta
                .insert(META_STATE, state.encode().as_slice())
                .map_err(engine(file))?;
            if let Some(app) = app {
                w.meta
                    .insert(META_APP, encode_app(app).as_slice())
                    .map_err(engine(file))?;
            }
        }
        txn.commit().map_err(engine(file))?;
        self.state = state;
        Ok(responses)
    }

    /// Makes every applied entry durable (one engine commit with fsync) and
    /// returns the durable applied index: the Raft log may be compacted up
    /// to it. The commit records redb's allocator state ("quick repair"),
    /// so reopening after a crash does not walk the file.
    pub fn checkpoint(&self) -> Result<LogIndex, CheckpointError> {
        self.check_failed()?;
        let file = self.file.clone();
        let r = catch(&file, || -> Result<LogIndex, CheckpointError> {
            let mut txn = self.db.begin_write().map_err(engine(&file))?;
            txn.set_quick_repair(true);
            txn.commit().map_err(engine(&file))?;
            Ok(self.state.applied_index)
        });
        match &r {
            Ok(index) => self
                .durable_applied_index
                .store(*index, std::sync::atomic::Ordering::Release),
            Err(CheckpointError::Fault(e)) => self.note_fault(e),
        }
        r
    }

    /// Sets the compact revision to `revision`: reads and histories below it
    /// are refused from now on. The history it makes unreachable is removed
    /// by [`MvccStore::compact_step`], in bounded steps (call it until
    /// `done`). Not durable until the next checkpoint, like a write.
    ///
    /// Deterministic: the same compactions at the same applied indexes give
    /// every replica the same answers. (Issue 12 makes it a log command.)
    pub fn compact(&mut self, revision: LogIndex) -> Result<(), CompactError> {
        self.check_failed()?;
        if revision <= self.state.compact_revision {
            return Err(CompactError::AlreadyCompacted {
                requested: revision,
                compact_revision: self.state.compact_revision,
            });
        }
        if revision > self.state.applied_index {
            return Err(CompactError::FutureRevision {
                requested: revision,
                applied_index: self.state.applied_index,
            });
        }
        let file = self.file.clone();
        let r = catch(&file, || -> Result<StateRecord, CompactError> {
            let mut txn = self.db.begin_write().map_err(engine(&file))?;
            txn.set_durability(Durability::None)
                .map_err(engine(&file))?;
            let mut state = self.state.clone();
            state.compact_revision = revision;
            {
                let mut w = Writer::open(&txn, &file, &self.config)?;
                // The writes at exactly the compact revision: what they
                // replaced is unreachable now; their own records (even
                // tombstones) stay readable, and their change record stays
                // for the next compaction to finish.
                let keys: Vec<Vec<u8>> = match w.changes.get(revision).map_err(engine(&file))? {
                    Some(guard) => decode_change(revision, guard.value())
                        .map_err(corrupt(&file))?
                        .into_iter()
                        .map(<[u8]>::to_vec)
                        .collect(),
                    None => Vec::new(),
                };
                for key in keys {
                    w.remove_predecessor(&key, revision)?;
                }
                w.meta
                    .insert(META_STATE, state.encode().as_slice())
                    .map_err(engine(&file))?;
            }
            txn.commit().map_err(engine(&file))?;
            Ok(state)
        });
        match r {
            Ok(state) => {
                self.state = state;
                Ok(())
            }
            Err(e) => {
                if let CompactError::Fault(f) = &e {
                    self.note_fault(f);
                }
                Err(e)
            }
        }
    }

    /// Removes up to `changes_max` revisions' worth of unreachable history
    /// (one transaction, without fsync). Work is proportional to the writes
    /// below the compact revision, each visited once over all compactions;
    /// a revision that changed many keys (a delete-range) is done whole in
    /// one step, as its own apply was one transaction.
    pub fn compact_step(&mut self, changes_max: u64) -> Result<CompactProgress, CompactError> {
        self.check_failed()?;
        let file = self.file.clone();
        let compact_revision = self.state.compact_revision;
        let r = catch(&file, || -> Result<CompactProgress, CompactError> {
            let mut txn = self.db.begin_write().map_err(engine(&file))?;
            txn.set_durability(Durability::None)
                .map_err(engine(&file))?;
            let mut progress = CompactProgress {
                changes_processed: 0,
                versions_removed: 0,
                done: false,
            };
            {
                let mut w = Writer::open(&txn, &file, &self.config)?;
                loop {
                    if progress.changes_processed == changes_max {
                        break;
                    }
                    let first = w.changes.first().map_err(engine(&file))?;
                    let Some((rev, keys)) = first
                        .map(|(k, v)| {
                            let rev = k.value();
                            decode_change(rev, v.value()).map(|keys| {
                                let keys: Vec<Vec<u8>> =
                                    keys.into_iter().map(<[u8]>::to_vec).collect();
                                (rev, keys)
                            })
                        })
                        .transpose()
                        .map_err(corrupt(&file))?
                    else {
                        progress.done = true;
                        break;
                    };
                    if rev >= compact_revision {
                        progress.done = true;
                        break;
                    }
                    for key in keys {
                        if w.remove_predecessor(&key, rev)? {
                            progress.versions_removed += 1;
                        }
                        // A delete below the compact revision: reading "no
                        // version at or below R" already means absent.
                        if let Some((r, HistoryRecord::Tombstone)) =
                            last_history_in(&w.history, &key, Bound::Included(rev), &file)?
                        {
                            if r == rev {
                                w.history
                                    .remove((key.as_slice(), rev))
                                    .map_err(engine(&file))?;
                                progress.versions_removed += 1;
                            }
                        }
                    }
                    w.changes.remove(rev).map_err(engine(&file))?;
                    progress.changes_processed += 1;
                }
            }
            txn.commit().map_err(engine(&file))?;
            Ok(progress)
        });
        if let Err(CompactError::Fault(f)) = &r {
            self.note_fault(f);
        }
        r
    }
}

/// The tables of one write transaction, and the command semantics.
pub(crate) struct Writer<'t> {
    pub(crate) meta: Table<'t, &'static str, &'static [u8]>,
    pub(crate) current: Table<'t, &'static [u8], &'static [u8]>,
    pub(crate) history: Table<'t, (&'static [u8], u64), &'static [u8]>,
    pub(crate) changes: Table<'t, u64, &'static [u8]>,
    pub(crate) sessions: Table<'t, u64, &'static [u8]>,
    pub(crate) lru: Table<'t, u64, u64>,
    /// The keys the entry being applied has changed so far, in order; one
    /// `changes` record lists them when the entry is done.
    changed_keys: Vec<Vec<u8>>,
    file: &'t Path,
    config: &'t KvConfig,
}

impl<'t> Writer<'t> {
    pub(crate) fn open(
        txn: &'t redb::WriteTransaction,
        file: &'t Path,
        config: &'t KvConfig,
    ) -> Result<Writer<'t>, Fault> {
        Ok(Writer {
            meta: txn.open_table(META).map_err(engine(file))?,
            current: txn.open_table(CURRENT).map_err(engine(file))?,
            history: txn.open_table(HISTORY).map_err(engine(file))?,
            changes: txn.open_table(CHANGES).map_err(engine(file))?,
            sessions: txn.open_table(SESSIONS).map_err(engine(file))?,
            lru: txn.open_table(SESSION_LRU).map_err(engine(file))?,
            changed_keys: Vec::new(),
            file,
            config,
        })
    }

    fn corrupt(&self, detail: impl Into<String>) -> Fault {
        Fault::Corrupt {
            file: self.file.to_path_buf(),
            detail: detail.into(),
        }
    }

    /// Removes the newest history record of `key` below `rev` (superseded
    /// by the write at `rev`); whether there was one.
    fn remove_predecessor(&mut self, key: &[u8], rev: LogIndex) -> Result<bool, Fault> {
        let Some((p, _)) = last_history_in(&self.history, key, Bound::Excluded(rev), self.file)?
        else {
            return Ok(false);
        };
        self.history.remove((key, p)).map_err(engine(self.file))?;
        Ok(true)
    }

    /// One entry, with KvStore's semantics (see raftkv-state).
    fn apply_entry(
        &mut self,
        state: &mut StateRecord,
        entry: &Entry,
    ) -> Result<Response, ApplyError> {
        let index = entry.index;
        if index <= state.applied_index {
            return Ok(Response::AlreadyApplied {
                applied_index: state.applied_index,
            });
        }
        if index != state.applied_index + 1 {
            return Err(ApplyError::IndexGap {
                applied_index: state.applied_index,
                entry_index: index,
            });
        }
        state.applied_index = index;
        state.applied_term = entry.term;
        self.expire_sessions(index)?;
        debug_assert!(self.changed_keys.is_empty());
        let response = match &entry.payload {
            EntryPayload::Blank => Response::Noop,
            EntryPayload::Membership(m) => {
                state.membership = Some(m.clone());
                Response::Noop
            }
            EntryPayload::Normal(bytes) => match Command::decode(bytes) {
                Err(e) => Response::Rejected(CommandError::Undecodable(e)),
                Ok(Command::Read(read)) => self.execute_read(state, &read)?,
                Ok(Command::Write(write)) => self.apply_write_command(state, write, index)?,
            },
        };
        if !self.changed_keys.is_empty() {
            let keys = std::mem::take(&mut self.changed_keys);
            self.changes
                .insert(index, encode_change(index, &keys).as_slice())
                .map_err(engine(self.file))?;
        }
        Ok(response)
    }

    fn execute_read(&self, state: &StateRecord, read: &ReadCommand) -> Result<Response, Fault> {
        if let Err(e) = read.check(self.config) {
            return Ok(Response::Rejected(e));
        }
        Ok(match read {
            ReadCommand::Get { key } => Response::Get(GetResponse {
                revision: state.applied_index,
                kv: get_current(&self.current, key, self.file)?.map(|r| r.to_kv(key)),
            }),
            ReadCommand::List {
                prefix,
                limit,
                start,
                end,
            } => Response::List(list_current(
                &self.current,
                prefix,
                *limit,
                start.as_deref(),
                end.as_deref(),
                state.applied_index,
                self.file,
            )?),
        })
    }

    /// Evicts every session last used more than `session_ttl_entries`
    /// entries before `index`.
    fn expire_sessions(&mut self, index: LogIndex) -> Result<(), Fault> {
        loop {
            let first = self.lru.first().map_err(engine(self.file))?;
            let Some((last_used, client_id)) = first.map(|(k, v)| (k.value(), v.value())) else {
                return Ok(());
            };
            if last_used.saturating_add(self.config.session_ttl_entries) >= index {
                return Ok(());
            }
            self.lru.remove(last_used).map_err(engine(self.file))?;
            self.sessions.remove(client_id).map_err(engine(self.file))?;
        }
    }

    fn get_session(&self, client_id: u64) -> Result<Option<SessionRecord>, Fault> {
        let Some(guard) = self.sessions.get(client_id).map_err(engine(self.file))? else {
            return Ok(None);
        };
        SessionRecord::decode(client_id, guard.value())
            .map(Some)
            .map_err(corrupt(self.file))
    }

    fn apply_write_command(
        &mut self,
        state: &mut StateRecord,
        write: WriteCommand,
        index: LogIndex,
    ) -> Result<Response, Fault> {
        let Some(ClientSession { client_id, seq }) = write.session else {
            return self.apply_write(state, &write.op, index);
        };
        if let Some(mut session) = self.get_session(client_id)? {
            // Any use keeps the session alive, retries included.
            let removed = self
                .lru
                .remove(session.last_used_index)
                .map_err(engine(self.file))?
                .map(|g| g.value());
            if removed != Some(client_id) {
                return Err(self.corrupt(format!(
                    "session {client_id} is not in the eviction index at {}",
                    session.last_used_index
                )));
            }
            session.last_used_index = index;
            self.lru
                .insert(index, client_id)
                .map_err(engine(self.file))?;
            if seq <= session.last_seq {
                let response = if seq == session.last_seq {
                    // A retry of the last write: answer it again.
                    session.response.clone()
                } else {
                    Response::Rejected(CommandError::StaleSequence {
                        client_id,
                        seq,
                        latest_seq: session.last_seq,
                    })
                };
                self.sessions
                    .insert(client_id, session.encode(client_id).as_slice())
                    .map_err(engine(self.file))?;
                return Ok(response);
            }
        }
        let response = self.apply_write(state, &write.op, index)?;
        let record = SessionRecord {
            last_seq: seq,
            last_used_index: index,
            response: response.clone(),
        };
        let existed = self
            .sessions
            .insert(client_id, record.encode(client_id).as_slice())
            .map_err(engine(self.file))?
            .is_some();
        if !existed {
            self.lru
                .insert(index, client_id)
                .map_err(engine(self.file))?;
            // Over the cap: evict the least recently used (never the one
            // just inserted, which has the highest index).
            while self.sessions.len().map_err(engine(self.file))? > self.config.sessions_max {
                let oldest = self.lru.pop_first().map_err(engine(self.file))?;
                let Some(oldest) = oldest.map(|(_, c)| c.value()) else {
                    break;
                };
                self.sessions.remove(oldest).map_err(engine(self.file))?;
            }
        }
        Ok(response)
    }

    /// Makes `new` the live version of `key` at `index` (or removes it, with
    /// `None`), moving the replaced version into the history and recording
    /// the change.
    ///
    /// A command may change several keys at one index (all at one
    /// revision), but each key at most once: a second write would push a
    /// version no read can see into the history under the same revision.
    /// Commands refuse such input before they apply (`WriteOp::check`).
    fn write_version(
        &mut self,
        state: &mut StateRecord,
        key: &[u8],
        old: Option<&CurrentRecord>,
        new: Option<(&[u8], LogIndex, u64)>,
        index: LogIndex,
    ) -> Result<(), Fault> {
        debug_assert!(
            old.is_none_or(|o| o.mod_revision < index),
            "a key written twice at revision {index}"
        );
        if let Some(old) = old {
            self.history
                .insert(
                    (key, old.mod_revision),
                    HistoryRecord::encode_put(
                        key,
                        old.mod_revision,
                        old.create_revision,
                        old.version,
                        &old.value,
                    )
                    .as_slice(),
                )
                .map_err(engine(self.file))?;
            state.data_bytes -= (key.len() + old.value.len()) as u64;
        }
        match new {
            Some((value, create, version)) => {
                self.current
                    .insert(
                        key,
                        CurrentRecord::encode(key, create, index, version, value).as_slice(),
                    )
                    .map_err(engine(self.file))?;
                state.data_bytes += (key.len() + value.len()) as u64;
            }
            None => {
                self.current.remove(key).map_err(engine(self.file))?;
                self.history
                    .insert(
                        (key, index),
                        HistoryRecord::encode_tombstone(key, index).as_slice(),
                    )
                    .map_err(engine(self.file))?;
            }
        }
        self.changed_keys.push(key.to_vec());
        Ok(())
    }

    fn apply_write(
        &mut self,
        state: &mut StateRecord,
        op: &WriteOp,
        index: LogIndex,
    ) -> Result<Response, Fault> {
        if let Err(e) = op.check(self.config) {
            return Ok(Response::Rejected(e));
        }
        match op {
            WriteOp::Put {
                key,
                value,
                prev_kv,
            } => {
                let old = get_current(&self.current, key, self.file)?;
                let (create_revision, version) = match &old {
                    Some(o) => (o.create_revision, o.version + 1),
                    None => (index, 1),
                };
                let prev = old.as_ref().filter(|_| *prev_kv).map(|o| o.to_kv(key));
                self.write_version(
                    state,
                    key,
                    old.as_ref(),
                    Some((value, create_revision, version)),
                    index,
                )?;
                Ok(Response::Put(PutResponse {
                    revision: index,
                    create_revision,
                    version,
                    prev,
                }))
            }
            WriteOp::Delete { key, prev_kv } => {
                let old = get_current(&self.current, key, self.file)?;
                if let Some(o) = &old {
                    self.write_version(state, key, Some(o), None, index)?;
                }
                Ok(Response::Delete(DeleteResponse {
                    revision: index,
                    deleted: old.is_some(),
                    prev: old.filter(|_| *prev_kv).map(|o| o.to_kv(key)),
                }))
            }
            WriteOp::CompareAndSwap {
                key,
                condition,
                action,
            } => {
                let current = get_current(&self.current, key, self.file)?;
                let holds = match (condition, &current) {
                    (Condition::Absent, current) => current.is_none(),
                    (Condition::ValueEquals(expected), Some(r)) => r.value == expected,
                    (Condition::ValueEquals(_), None) => false,
                    (Condition::ModRevisionEquals(rev), current) => {
                        current.as_ref().map_or(0, |r| r.mod_revision) == *rev
                    }
                };
                if !holds {
                    return Ok(Response::CompareAndSwap(CasResponse {
                        revision: index,
                        succeeded: false,
                        current: current.map(|r| r.to_kv(key)),
                    }));
                }
                let after = match action {
                    CasAction::Put(value) => {
                        let (create, version) = match &current {
                            Some(c) => (c.create_revision, c.version + 1),
                            None => (index, 1),
                        };
                        self.write_version(
                            state,
                            key,
                            current.as_ref(),
                            Some((value, create, version)),
                            index,
                        )?;
                        Some(raftkv_state::KeyValue {
                            key: key.clone(),
                            value: value.clone(),
                            create_revision: create,
                            mod_revision: index,
                            version,
                        })
                    }
                    CasAction::Delete => {
                        // Deleting an absent key is a no-op: no revision.
                        if let Some(c) = &current {
                            self.write_version(state, key, Some(c), None, index)?;
                        }
                        None
                    }
                };
                Ok(Response::CompareAndSwap(CasResponse {
                    revision: index,
                    succeeded: true,
                    current: after,
                }))
            }
        }
    }
}

impl StateMachine for MvccStore {
    type Response = Response;
    type Error = ApplyError;

    /// One entry in its own transaction; a host should prefer
    /// [`MvccStore::apply_batch`] (one transaction per batch).
    fn apply(&mut self, entry: &Entry) -> Result<Response, ApplyError> {
        let mut responses = self.apply_batch(std::slice::from_ref(entry))?;
        // apply_batch returns one response per entry.
        Ok(responses.pop().expect("one entry, one response"))
    }

    fn applied_index(&self) -> LogIndex {
        self.state.applied_index
    }

    /// The whole snapshot stream, chunks concatenated, in memory: a bridge
    /// for hosts that still move snapshots as one blob. Prefer
    /// [`MvccStore::snapshot_source`].
    fn snapshot(&self) -> Result<Vec<u8>, ApplyError> {
        let mut out = Vec::new();
        let source = self
            .snapshot_source(crate::snapshot::CHUNK_BYTES_DEFAULT)
            .map_err(|e| match e {
                crate::error::SendError::Fault(f) => ApplyError::Fault(f),
                other => ApplyError::Fault(Fault::Corrupt {
                    file: self.file.clone(),
                    detail: other.to_string(),
                }),
            })?;
        for chunk in source {
            let chunk = chunk.map_err(|e| match e {
                crate::error::SendError::Fault(f) => ApplyError::Fault(f),
                other => ApplyError::Fault(Fault::Corrupt {
                    file: self.file.clone(),
                    detail: other.to_string(),
                }),
            })?;
            out.extend_from_slice(&chunk.encode());
        }
        Ok(out)
    }

    /// Receives a blob made by [`StateMachine::snapshot`] into a new file
    /// and switches to it. On a refused snapshot nothing changes.
    fn restore(&mut self, data: &[u8]) -> Result<(), ApplyError> {
        let mut receiver = self.snapshot_receiver()?;
        let mut rest = data;
        while !rest.is_empty() {
            let (chunk, used) = crate::snapshot::SnapshotChunk::decode_prefix(rest)?;
            receiver.push(&chunk)?;
            rest = &rest[used..];
        }
        let received = receiver.finish()?;
        self.install(received)?;
        Ok(())
    }
}
