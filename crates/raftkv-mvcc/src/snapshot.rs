//! Snapshot transfer: a stream of bounded, checksummed chunks read from a
//! consistent view while writes go on, and a receiver that builds a new
//! engine file beside the live one and switches to it atomically.
//!
//! # The stream
//!
//! A byte stream of records `[tag u8][body length u32 LE][body]`, cut into
//! chunks of at most `chunk_bytes` (a record may span chunks):
//!
//! | tag | record | body |
//! |---|---|---|
//! | 1 | header | postcard `SnapshotHeader` (magic, layout version, [`StateRecord`], record count of each table, the host's application record) |
//! | 2 | live key | key length u32, key, stored `current` value |
//! | 3 | history | key length u32, key, revision u64, stored `history` value |
//! | 4 | change | revision u64, stored `changes` value |
//! | 5 | session | client id u64, stored `sessions` value |
//! | 6 | session index | last-used index u64, client id u64 |
//! | 7 | end | CRC32C of every stream byte before this record u32, number of records before it u64 |
//!
//! Tables come in this order, each in key order. The stored values travel
//! as they are on disk, with their own CRC32C (which covers the key), so a
//! record is checked end to end: when read from the sender's file, and again
//! by the receiver before it is written.
//!
//! # Chunks
//!
//! `"RKVC"`, version u8, flags u8 (bit 0: last), sequence number u64,
//! payload length u32, payload, CRC32C of everything before it. Chunks are
//! numbered from 0 and must arrive in order; any error (a bad or missing
//! chunk, an invalid stream) kills the receiver, and the transfer starts
//! over with a new one.

use std::ops::Bound;
use std::path::{Path, PathBuf};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use raft_core::LogIndex;
use raftkv_state::KvConfig;
use redb::{
    Database, Durability, ReadOnlyTable, ReadableTable, ReadableTableMetadata, WriteTransaction,
};
use serde::{Deserialize, Serialize};

use crate::codec::{
    decode_app, decode_change, encode_app, encode_format, CurrentRecord, HistoryRecord,
    SessionRecord, StateRecord, APP_BYTES_MAX, FORMAT_MAGIC, FORMAT_VERSION,
};
use crate::error::{Fault, InstallError, OpenError, ReceiveError, SendError};
use crate::store::{
    catch, incoming_path, open_db, read_meta, received_path, remove_file_if_exists, sync_parent,
    Backing, DbHandle, MvccOptions, MvccStore,
};
use crate::tables::{
    corrupt, engine, CHANGES, CURRENT, HISTORY, META, META_APP, META_FORMAT, META_STATE, SESSIONS,
    SESSION_LRU,
};
use crate::view::ReadView;

/// Default chunk size: 1 MiB.
pub const CHUNK_BYTES_DEFAULT: usize = 1024 * 1024;
/// Smallest chunk size accepted.
pub const CHUNK_BYTES_MIN: usize = 4 * 1024;
/// Largest chunk size accepted (a chunk is held whole in memory on both
/// sides and must fit a network frame).
pub const CHUNK_BYTES_MAX: usize = 16 * 1024 * 1024;

const CHUNK_MAGIC: [u8; 4] = *b"RKVC";
const CHUNK_VERSION: u8 = 1;
const CHUNK_HEADER_BYTES: usize = 4 + 1 + 1 + 8 + 4;
const CHUNK_FLAG_LAST: u8 = 1;

const TAG_HEADER: u8 = 1;
const TAG_CURRENT: u8 = 2;
const TAG_HISTORY: u8 = 3;
const TAG_CHANGE: u8 = 4;
const TAG_SESSION: u8 = 5;
const TAG_LRU: u8 = 6;
const TAG_END: u8 = 7;
const RECORD_HEADER_BYTES: usize = 5;

/// A receiver commits its engine transaction after this many bytes, so
/// memory stays bounded whatever the snapshot's size.
const RECEIVER_TXN_BYTES_MAX: u64 = 64 * 1024 * 1024;

/// One chunk of a snapshot stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotChunk {
    /// Position in the stream, from 0.
    pub seq: u64,
    /// The stream's last chunk.
    pub last: bool,
    /// At most the stream's chunk size.
    pub payload: Bytes,
    /// CRC32C over magic, version, flags, seq, length and payload.
    pub crc32c: u32,
}

impl SnapshotChunk {
    /// A chunk with its checksum computed.
    pub fn new(seq: u64, last: bool, payload: Bytes) -> SnapshotChunk {
        let crc32c = Self::compute_crc(seq, last, &payload);
        SnapshotChunk {
            seq,
            last,
            payload,
            crc32c,
        }
    }

    fn header(seq: u64, last: bool, len: usize) -> [u8; CHUNK_HEADER_BYTES] {
        let mut h = [0u8; CHUNK_HEADER_BYTES];
        h[..4].copy_from_slice(&CHUNK_MAGIC);
        h[4] = CHUNK_VERSION;
        h[5] = if last { CHUNK_FLAG_LAST } else { 0 };
        h[6..14].copy_from_slice(&seq.to_le_bytes());
        h[14..18].copy_from_slice(&(len as u32).to_le_bytes());
        h
    }

    fn compute_crc(seq: u64, last: bool, payload: &[u8]) -> u32 {
        let crc = crc32c::crc32c(&Self::header(seq, last, payload.len()));
        crc32c::crc32c_append(crc, payload)
    }

    /// Whether the checksum matches the fields.
    pub fn verify(&self) -> bool {
        self.payload.len() <= CHUNK_BYTES_MAX
            && self.crc32c == Self::compute_crc(self.seq, self.last, &self.payload)
    }

    /// The wire form (see the module documentation).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(CHUNK_HEADER_BYTES + self.payload.len() + 4);
        out.extend_from_slice(&Self::header(self.seq, self.last, self.payload.len()));
        out.extend_from_slice(&self.payload);
        out.extend_from_slice(&self.crc32c.to_le_bytes());
        out
    }

    /// Decodes one chunk from the front of `bytes`; returns it and the
    /// number of bytes it took. Checks the magic, version, length (at most
    /// [`CHUNK_BYTES_MAX`]) and checksum; never panics.
    pub fn decode_prefix(bytes: &[u8]) -> Result<(SnapshotChunk, usize), ReceiveError> {
        let bad = |seq, detail: String| ReceiveError::BadChunk { seq, detail };
        if bytes.len() < CHUNK_HEADER_BYTES + 4 {
            return Err(bad(
                0,
                format!("{} bytes is shorter than a chunk header", bytes.len()),
            ));
        }
        if bytes[..4] != CHUNK_MAGIC || bytes[4] != CHUNK_VERSION {
            return Err(bad(0, "bad magic or version".into()));
        }
        let flags = bytes[5];
        let seq = u64::from_le_bytes(bytes[6..14].try_into().expect("8 bytes"));
        let len = u32::from_le_bytes(bytes[14..18].try_into().expect("4 bytes")) as usize;
        if flags & !CHUNK_FLAG_LAST != 0 {
            return Err(bad(seq, format!("unknown flags {flags:#04x}")));
        }
        if len > CHUNK_BYTES_MAX {
            return Err(bad(
                seq,
                format!("payload of {len} bytes exceeds {CHUNK_BYTES_MAX}"),
            ));
        }
        let total = CHUNK_HEADER_BYTES + len + 4;
        if bytes.len() < total {
            return Err(bad(
                seq,
                format!("truncated: {} of {total} bytes", bytes.len()),
            ));
        }
        let payload = Bytes::copy_from_slice(&bytes[CHUNK_HEADER_BYTES..CHUNK_HEADER_BYTES + len]);
        let crc32c = u32::from_le_bytes(
            bytes[CHUNK_HEADER_BYTES + len..total]
                .try_into()
                .expect("4 bytes"),
        );
        let chunk = SnapshotChunk {
            seq,
            last: flags & CHUNK_FLAG_LAST != 0,
            payload,
            crc32c,
        };
        if !chunk.verify() {
            return Err(bad(seq, "checksum mismatch".into()));
        }
        Ok((chunk, total))
    }
}

/// Record counts, sent in the header and checked at the end.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
struct TableCounts {
    current: u64,
    history: u64,
    changes: u64,
    sessions: u64,
    lru: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct SnapshotHeader {
    magic: [u8; 8],
    format_version: u32,
    state: StateRecord,
    counts: TableCounts,
    /// The host's application record ([`MvccStore::app_state`]), at most
    /// [`APP_BYTES_MAX`] bytes.
    app: Vec<u8>,
}

/// Which table the source is reading, and where it stands in it.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Phase {
    Header,
    Current(Option<Vec<u8>>),
    History(Option<(Vec<u8>, u64)>),
    Changes(Option<u64>),
    Sessions(Option<u64>),
    Lru(Option<u64>),
    End,
    Done,
}

/// Produces a snapshot stream from a consistent view, one chunk at a time:
/// an iterator of [`SnapshotChunk`]s. It owns its read view, so it can run
/// on any thread while the store keeps applying entries; memory is one
/// chunk plus one record. The engine keeps the pages the view sees until
/// the source is dropped, so the file may grow while a transfer runs.
pub struct SnapshotSource {
    view: ReadView,
    changes: ReadOnlyTable<u64, &'static [u8]>,
    sessions: ReadOnlyTable<u64, &'static [u8]>,
    lru: ReadOnlyTable<u64, u64>,
    /// The application record of the view, read once.
    app: Vec<u8>,
    chunk_bytes: usize,
    phase: Phase,
    buf: BytesMut,
    stream_crc: u32,
    records: u64,
    next_seq: u64,
    finished: bool,
}

impl MvccStore {
    /// A snapshot source reading the last committed state. `chunk_bytes`
    /// within [`CHUNK_BYTES_MIN`]..=[`CHUNK_BYTES_MAX`].
    pub fn snapshot_source(&self, chunk_bytes: usize) -> Result<SnapshotSource, SendError> {
        SnapshotSource::new(self.view()?, chunk_bytes)
    }

    /// A receiver for a snapshot to install into this store: on the real
    /// filesystem [`SnapshotReceiver::begin`] beside the live file, on a
    /// disk (`MvccStore::open_on_disk`) the same on that disk. A store on
    /// a caller's backend cannot make one (the caller supplies the new
    /// backend: [`SnapshotReceiver::begin_with_backend`]).
    pub fn snapshot_receiver(&self) -> Result<SnapshotReceiver, ReceiveError> {
        match &self.backing {
            Backing::File => SnapshotReceiver::begin(&self.file, &self.config, &self.options),
            #[cfg(feature = "sim")]
            Backing::Disk(disk) => SnapshotReceiver::begin_on_shared_disk(
                disk.clone(),
                &self.file,
                &self.config,
                &self.options,
            ),
            Backing::Backend => Err(ReceiveError::Io {
                file: self.file.clone(),
                source: std::io::Error::new(
                    std::io::ErrorKind::Unsupported,
                    "a store on a caller's backend receives snapshots into a backend the \
                     caller supplies (SnapshotReceiver::begin_with_backend)",
                ),
            }),
        }
    }

    /// Switches to a received snapshot. Read views and snapshot sources
    /// opened before keep reading the old state.
    ///
    /// - A store on the real filesystem, with a snapshot received by
    ///   [`SnapshotReceiver::begin`] for it: renames the new file over the
    ///   live one (atomic), fsyncs the directory, and reopens. A crash before
    ///   the rename leaves the old state (and an `.incoming` file the next
    ///   open removes); after it, the new one.
    /// - A store on a disk (`MvccStore::open_on_disk`), with a snapshot
    ///   received by [`MvccStore::snapshot_receiver`]: the same rename and
    ///   directory fsync on that disk, then the received engine (still open)
    ///   becomes the store's.
    /// - A store on a caller's backend ([`MvccStore::open_with_backend`]),
    ///   with a snapshot received by [`SnapshotReceiver::begin_with_backend`]:
    ///   the received engine (on the caller's new backend, durable) becomes
    ///   the store's; which backend a restart opens is the caller's to
    ///   record.
    ///
    /// Any other pairing is [`InstallError::Mismatch`], and nothing changes.
    pub fn install(&mut self, received: ReceivedSnapshot) -> Result<(), InstallError> {
        let ReceivedSnapshot {
            file: from,
            live,
            state: _,
            app: _,
            target,
            db,
        } = received;
        let io = |source| InstallError::Io {
            from: from.clone(),
            to: self.file.clone(),
            source,
        };
        let mismatch = |detail: &str| InstallError::Mismatch {
            detail: detail.to_string(),
        };
        match (&self.backing, &target) {
            (Backing::File, RxTarget::File) => {
                if live != self.file {
                    return Err(mismatch("the snapshot was received for another store"));
                }
                std::fs::rename(&from, &self.file).map_err(io)?;
                sync_parent(&self.file).map_err(io)?;
                // The old database object still holds the old (now
                // unlinked) file; the new one is a different file, so the
                // two do not conflict.
                let db = open_db(&self.file, &self.options, false).map_err(InstallError::Open)?;
                self.switch_to(DbHandle::new(db))
            }
            #[cfg(feature = "sim")]
            (Backing::Disk(disk), RxTarget::Disk(_)) => {
                if live != self.file {
                    return Err(mismatch("the snapshot was received for another store"));
                }
                let db = db.ok_or_else(|| mismatch("the received engine is closed"))?;
                disk.rename(&from, &self.file).map_err(io)?;
                disk.sync_parent(&self.file).map_err(io)?;
                self.switch_to(db)
            }
            (Backing::Backend, RxTarget::Backend) => {
                let db = db.ok_or_else(|| mismatch("the received engine is closed"))?;
                self.switch_to(db)
            }
            _ => Err(mismatch(
                "the snapshot was received into another kind of storage than the store's",
            )),
        }
    }

    /// The snapshot received before and not installed, kept as
    /// `<file>.received` (also across a restart), if there is one. A host
    /// whose log recorded a received snapshot before a crash installs it
    /// from here; one whose log did not may [`discard`](Self::discard_received)
    /// it. Stores on a caller's backend keep nothing across a restart.
    pub fn take_received(&self) -> Result<Option<ReceivedSnapshot>, OpenError> {
        let path = received_path(&self.file);
        let io = |source| OpenError::Io {
            file: path.clone(),
            source,
        };
        match &self.backing {
            Backing::File => {
                if !path.exists() {
                    return Ok(None);
                }
                let db = open_db(&path, &self.options, false)?;
                let (state, app) = catch(&path, || read_meta(&db, &path))?;
                drop(db); // reopened by path after the rename
                Ok(Some(ReceivedSnapshot {
                    file: path.clone(),
                    live: self.file.clone(),
                    state,
                    app,
                    target: RxTarget::File,
                    db: None,
                }))
            }
            #[cfg(feature = "sim")]
            Backing::Disk(disk) => {
                if !disk.exists(&path).map_err(io)? {
                    return Ok(None);
                }
                let backend = disk.backend(&path, false).map_err(io)?;
                let store = MvccStore::open_backend(
                    backend,
                    path.clone(),
                    self.config.clone(),
                    self.options.clone(),
                    false,
                )?;
                Ok(Some(ReceivedSnapshot {
                    file: path.clone(),
                    live: self.file.clone(),
                    state: store.state.clone(),
                    app: store.app.clone(),
                    target: RxTarget::Disk(disk.clone()),
                    db: Some(store.db),
                }))
            }
            Backing::Backend => {
                let _ = io;
                Ok(None)
            }
        }
    }

    /// Removes a received snapshot that will not be installed.
    pub fn discard_received(&self) -> std::io::Result<()> {
        let path = received_path(&self.file);
        match &self.backing {
            Backing::File => remove_file_if_exists(&path),
            #[cfg(feature = "sim")]
            Backing::Disk(disk) => disk.remove_if_exists(&path),
            Backing::Backend => Ok(()),
        }
    }

    /// Makes `db` (holding a complete, durable state) the store's engine.
    fn switch_to(&mut self, db: DbHandle) -> Result<(), InstallError> {
        let (state, app) =
            catch(&self.file, || read_meta(&db, &self.file)).map_err(InstallError::Open)?;
        self.db = db;
        self.durable_applied_index
            .store(state.applied_index, std::sync::atomic::Ordering::Release);
        self.state = state;
        self.app = app;
        // A store that failed before is healthy again only by reopening.
        Ok(())
    }
}

/// The history table in a write transaction.
type HistoryTable<'t> = redb::Table<'t, (&'static [u8], u64), &'static [u8]>;

/// The tables a receiver writes, each opened at its first record of a chunk.
struct RxTables<'t> {
    txn: &'t WriteTransaction,
    current: Option<redb::Table<'t, &'static [u8], &'static [u8]>>,
    history: Option<HistoryTable<'t>>,
    changes: Option<redb::Table<'t, u64, &'static [u8]>>,
    sessions: Option<redb::Table<'t, u64, &'static [u8]>>,
    lru: Option<redb::Table<'t, u64, u64>>,
}

/// Opens `slot`'s table if not open yet.
fn open_in<'s, 't, K: redb::Key + 'static, V: redb::Value + 'static>(
    slot: &'s mut Option<redb::Table<'t, K, V>>,
    txn: &'t WriteTransaction,
    def: redb::TableDefinition<'static, K, V>,
    file: &Path,
) -> Result<&'s mut redb::Table<'t, K, V>, ReceiveError> {
    if slot.is_none() {
        *slot = Some(txn.open_table(def).map_err(engine(file))?);
    }
    // Set just above.
    Ok(slot.as_mut().expect("opened above"))
}

impl<'t> RxTables<'t> {
    fn new(txn: &'t WriteTransaction) -> RxTables<'t> {
        RxTables {
            txn,
            current: None,
            history: None,
            changes: None,
            sessions: None,
            lru: None,
        }
    }

    fn current(
        &mut self,
        file: &Path,
    ) -> Result<&mut redb::Table<'t, &'static [u8], &'static [u8]>, ReceiveError> {
        open_in(&mut self.current, self.txn, CURRENT, file)
    }

    fn history(&mut self, file: &Path) -> Result<&mut HistoryTable<'t>, ReceiveError> {
        open_in(&mut self.history, self.txn, HISTORY, file)
    }

    fn changes(
        &mut self,
        file: &Path,
    ) -> Result<&mut redb::Table<'t, u64, &'static [u8]>, ReceiveError> {
        open_in(&mut self.changes, self.txn, CHANGES, file)
    }

    fn sessions(
        &mut self,
        file: &Path,
    ) -> Result<&mut redb::Table<'t, u64, &'static [u8]>, ReceiveError> {
        open_in(&mut self.sessions, self.txn, SESSIONS, file)
    }

    fn lru(&mut self, file: &Path) -> Result<&mut redb::Table<'t, u64, u64>, ReceiveError> {
        open_in(&mut self.lru, self.txn, SESSION_LRU, file)
    }
}

/// A fresh engine on an empty backend, for a receiver.
fn open_backend_db(
    backend: impl redb::StorageBackend,
    file: &Path,
    options: &MvccOptions,
) -> Result<Database, ReceiveError> {
    let mut builder = Database::builder();
    builder.set_cache_size(options.cache_bytes);
    catch(file, || {
        builder
            .create_with_backend(backend)
            .map_err(|e| ReceiveError::Fault(engine(file)(e)))
    })
}

impl SnapshotSource {
    fn new(view: ReadView, chunk_bytes: usize) -> Result<SnapshotSource, SendError> {
        if !(CHUNK_BYTES_MIN..=CHUNK_BYTES_MAX).contains(&chunk_bytes) {
            return Err(SendError::ChunkSize {
                chunk_bytes: chunk_bytes as u64,
                min: CHUNK_BYTES_MIN as u64,
                max: CHUNK_BYTES_MAX as u64,
            });
        }
        let file = view.file.clone();
        let changes = view.txn.open_table(CHANGES).map_err(engine(&file))?;
        let sessions = view.txn.open_table(SESSIONS).map_err(engine(&file))?;
        let lru = view.txn.open_table(SESSION_LRU).map_err(engine(&file))?;
        let app = {
            let meta = view.txn.open_table(META).map_err(engine(&file))?;
            let guard = meta.get(META_APP).map_err(engine(&file))?;
            match guard {
                Some(g) => decode_app(g.value()).map_err(corrupt(&file))?.to_vec(),
                None => Vec::new(),
            }
        };
        Ok(SnapshotSource {
            view,
            changes,
            sessions,
            lru,
            app,
            chunk_bytes,
            phase: Phase::Header,
            buf: BytesMut::with_capacity(chunk_bytes * 2),
            stream_crc: 0,
            records: 0,
            next_seq: 0,
            finished: false,
        })
    }

    /// Applied index, term, membership... of the state being sent: what the
    /// Raft snapshot metadata must say.
    pub fn state(&self) -> &StateRecord {
        &self.view.state
    }

    /// The application record of the state being sent.
    pub fn app_state(&self) -> &[u8] {
        &self.app
    }

    fn push_record(&mut self, tag: u8, parts: &[&[u8]]) {
        let len: usize = parts.iter().map(|p| p.len()).sum();
        let start = self.buf.len();
        self.buf.put_u8(tag);
        self.buf.put_u32_le(len as u32);
        for p in parts {
            self.buf.put_slice(p);
        }
        if tag != TAG_END {
            self.stream_crc = crc32c::crc32c_append(self.stream_crc, &self.buf[start..]);
            self.records += 1;
        }
    }

    fn full(&self) -> bool {
        self.buf.len() >= self.chunk_bytes
    }

    /// Appends records until the buffer holds a chunk or the stream ends.
    fn fill(&mut self) -> Result<(), Fault> {
        let file = self.view.file.clone();
        let file = file.as_path();
        while !self.full() {
            match std::mem::replace(&mut self.phase, Phase::Done) {
                Phase::Header => {
                    let counts = TableCounts {
                        current: self.view.current.len().map_err(engine(file))?,
                        history: self.view.history.len().map_err(engine(file))?,
                        changes: self.changes.len().map_err(engine(file))?,
                        sessions: self.sessions.len().map_err(engine(file))?,
                        lru: self.lru.len().map_err(engine(file))?,
                    };
                    let header = SnapshotHeader {
                        magic: FORMAT_MAGIC,
                        format_version: FORMAT_VERSION,
                        state: self.view.state.clone(),
                        counts,
                        app: self.app.clone(),
                    };
                    // A plain derived struct into a Vec cannot fail.
                    let body = postcard::to_allocvec(&header).expect("postcard into a Vec");
                    self.push_record(TAG_HEADER, &[&body]);
                    self.phase = Phase::Current(None);
                }
                Phase::Current(after) => {
                    let lower = match &after {
                        Some(k) => Bound::Excluded(k.as_slice()),
                        None => Bound::Unbounded,
                    };
                    let mut last = after.clone();
                    let mut exhausted = true;
                    let range = self
                        .view
                        .current
                        .range((lower, Bound::Unbounded))
                        .map_err(engine(file))?;
                    for item in range {
                        let (k, v) = item.map_err(engine(file))?;
                        let (key, value) = (k.value(), v.value());
                        // A damaged record is never sent.
                        CurrentRecord::check(key, value).map_err(corrupt(file))?;
                        let klen = (key.len() as u32).to_le_bytes();
                        let start = self.buf.len();
                        self.buf.put_u8(TAG_CURRENT);
                        self.buf.put_u32_le((4 + key.len() + value.len()) as u32);
                        self.buf.put_slice(&klen);
                        self.buf.put_slice(key);
                        self.buf.put_slice(value);
                        self.stream_crc =
                            crc32c::crc32c_append(self.stream_crc, &self.buf[start..]);
                        self.records += 1;
                        last = Some(key.to_vec());
                        if self.full() {
                            exhausted = false;
                            break;
                        }
                    }
                    self.phase = if exhausted {
                        Phase::History(None)
                    } else {
                        Phase::Current(last)
                    };
                }
                Phase::History(after) => {
                    let lower = match &after {
                        Some((k, r)) => Bound::Excluded((k.as_slice(), *r)),
                        None => Bound::Unbounded,
                    };
                    let mut last = after.clone();
                    let mut exhausted = true;
                    let range = self
                        .view
                        .history
                        .range((lower, Bound::Unbounded))
                        .map_err(engine(file))?;
                    for item in range {
                        let (k, v) = item.map_err(engine(file))?;
                        let ((key, rev), value) = (k.value(), v.value());
                        HistoryRecord::check(key, rev, value).map_err(corrupt(file))?;
                        let start = self.buf.len();
                        self.buf.put_u8(TAG_HISTORY);
                        self.buf
                            .put_u32_le((4 + key.len() + 8 + value.len()) as u32);
                        self.buf.put_u32_le(key.len() as u32);
                        self.buf.put_slice(key);
                        self.buf.put_u64_le(rev);
                        self.buf.put_slice(value);
                        self.stream_crc =
                            crc32c::crc32c_append(self.stream_crc, &self.buf[start..]);
                        self.records += 1;
                        last = Some((key.to_vec(), rev));
                        if self.full() {
                            exhausted = false;
                            break;
                        }
                    }
                    self.phase = if exhausted {
                        Phase::Changes(None)
                    } else {
                        Phase::History(last)
                    };
                }
                Phase::Changes(after) => {
                    let (next, exhausted) =
                        self.fill_u64(&after, TAG_CHANGE, file, Table::Changes)?;
                    self.phase = if exhausted {
                        Phase::Sessions(None)
                    } else {
                        Phase::Changes(next)
                    };
                }
                Phase::Sessions(after) => {
                    let (next, exhausted) =
                        self.fill_u64(&after, TAG_SESSION, file, Table::Sessions)?;
                    self.phase = if exhausted {
                        Phase::Lru(None)
                    } else {
                        Phase::Sessions(next)
                    };
                }
                Phase::Lru(after) => {
                    let lower = match after {
                        Some(k) => Bound::Excluded(k),
                        None => Bound::Unbounded,
                    };
                    let mut last = after;
                    let mut exhausted = true;
                    let mut batch = Vec::new();
                    for item in self
                        .lru
                        .range((lower, Bound::Unbounded))
                        .map_err(engine(file))?
                    {
                        let (k, v) = item.map_err(engine(file))?;
                        batch.push((k.value(), v.value()));
                        last = Some(k.value());
                        if self.buf.len() + batch.len() * 21 >= self.chunk_bytes {
                            exhausted = false;
                            break;
                        }
                    }
                    for (k, v) in batch {
                        self.push_record(TAG_LRU, &[&k.to_le_bytes(), &v.to_le_bytes()]);
                    }
                    self.phase = if exhausted {
                        Phase::End
                    } else {
                        Phase::Lru(last)
                    };
                }
                Phase::End => {
                    let crc = self.stream_crc.to_le_bytes();
                    let records = self.records.to_le_bytes();
                    self.push_record(TAG_END, &[&crc, &records]);
                    self.phase = Phase::Done;
                }
                Phase::Done => return Ok(()),
            }
        }
        Ok(())
    }

    /// The records of a u64-keyed byte-valued table after `after`, until the
    /// buffer is full; returns the last key and whether the table ended.
    fn fill_u64(
        &mut self,
        after: &Option<u64>,
        tag: u8,
        file: &Path,
        table: Table,
    ) -> Result<(Option<u64>, bool), Fault> {
        let lower = match after {
            Some(k) => Bound::Excluded(*k),
            None => Bound::Unbounded,
        };
        let t = match table {
            Table::Changes => &self.changes,
            Table::Sessions => &self.sessions,
        };
        let mut last = *after;
        let mut exhausted = true;
        let mut out = BytesMut::new();
        let mut records = 0;
        let room = self.chunk_bytes.saturating_sub(self.buf.len());
        for item in t.range((lower, Bound::Unbounded)).map_err(engine(file))? {
            let (k, v) = item.map_err(engine(file))?;
            let (key, value) = (k.value(), v.value());
            match table {
                Table::Changes => {
                    decode_change(key, value).map_err(corrupt(file))?;
                }
                Table::Sessions => {
                    SessionRecord::decode(key, value).map_err(corrupt(file))?;
                }
            }
            out.put_u8(tag);
            out.put_u32_le((8 + value.len()) as u32);
            out.put_u64_le(key);
            out.put_slice(value);
            records += 1;
            last = Some(key);
            if out.len() >= room {
                exhausted = false;
                break;
            }
        }
        self.stream_crc = crc32c::crc32c_append(self.stream_crc, &out);
        self.records += records;
        self.buf.put_slice(&out);
        Ok((last, exhausted))
    }
}

#[derive(Clone, Copy)]
enum Table {
    Changes,
    Sessions,
}

impl Iterator for SnapshotSource {
    type Item = Result<SnapshotChunk, SendError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.finished {
            return None;
        }
        let file = self.view.file.clone();
        if let Err(e) = catch(&file, || self.fill()) {
            self.finished = true;
            return Some(Err(SendError::Fault(e)));
        }
        let n = self.chunk_bytes.min(self.buf.len());
        let payload = self.buf.split_to(n).freeze();
        let last = self.phase == Phase::Done && self.buf.is_empty();
        self.finished = last;
        let chunk = SnapshotChunk::new(self.next_seq, last, payload);
        self.next_seq += 1;
        Some(Ok(chunk))
    }
}

/// Where a receiver writes.
#[derive(Clone)]
pub(crate) enum RxTarget {
    /// `<live>.incoming` on the real filesystem.
    File,
    /// A backend the caller supplied.
    Backend,
    /// `<live>.incoming` on a raft-storage disk.
    #[cfg(feature = "sim")]
    Disk(crate::disk::SharedDisk),
}

/// A snapshot fully received and durable (beside the live file, or on the
/// caller's backend), ready for [`MvccStore::install`].
pub struct ReceivedSnapshot {
    file: PathBuf,
    live: PathBuf,
    state: StateRecord,
    app: Vec<u8>,
    target: RxTarget,
    /// The engine, kept open, unless the target is a real file (reopened by
    /// path after the rename).
    db: Option<DbHandle>,
}

impl std::fmt::Debug for ReceivedSnapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReceivedSnapshot")
            .field("file", &self.file)
            .field("live", &self.live)
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

impl ReceivedSnapshot {
    /// Applied index, term, membership of the received state.
    pub fn state(&self) -> &StateRecord {
        &self.state
    }

    /// The application record of the received state.
    pub fn app_state(&self) -> &[u8] {
        &self.app
    }
}

/// Builds a new engine file, `<live>.incoming`, from a snapshot's chunks.
/// The live store is not touched until [`MvccStore::install`].
pub struct SnapshotReceiver {
    // Field order is drop order: the transaction before the database.
    txn: Option<WriteTransaction>,
    db: Option<Database>,
    live: PathBuf,
    file: PathBuf,
    target: RxTarget,
    next_seq: u64,
    buf: BytesMut,
    stream_crc: u32,
    records: u64,
    header: Option<SnapshotHeader>,
    counts: TableCounts,
    last_tag: u8,
    last_key: Vec<u8>,
    last_rev: u64,
    data_bytes: u64,
    txn_bytes: u64,
    record_bytes_max: usize,
    ended: bool,
    complete: bool,
    /// `finish` succeeded: the file belongs to the `ReceivedSnapshot`.
    handed_over: bool,
    failed: Option<String>,
}

impl SnapshotReceiver {
    /// Starts a transfer for the store whose file is `live`: removes any
    /// earlier `<live>.incoming` (an interrupted transfer) and creates a
    /// fresh one.
    pub fn begin(
        live: &Path,
        config: &KvConfig,
        options: &MvccOptions,
    ) -> Result<SnapshotReceiver, ReceiveError> {
        let file = incoming_path(live);
        let io = |source| ReceiveError::Io {
            file: file.clone(),
            source,
        };
        remove_file_if_exists(&file).map_err(io)?;
        let db = open_db(&file, options, true).map_err(|e| match e {
            OpenError::Fault(f) => ReceiveError::Fault(f),
            other => ReceiveError::Io {
                file: file.clone(),
                source: std::io::Error::other(other.to_string()),
            },
        })?;
        Self::with_db(db, live, file, RxTarget::File, config)
    }

    /// Starts a transfer into `backend`, which must be empty: how a store
    /// opened with [`MvccStore::open_with_backend`] receives a snapshot.
    /// `label` names it in errors. The receiver writes without fsync until
    /// [`finish`](SnapshotReceiver::finish), whose commit is durable.
    pub fn begin_with_backend(
        backend: impl redb::StorageBackend,
        label: impl Into<PathBuf>,
        config: &KvConfig,
        options: &MvccOptions,
    ) -> Result<SnapshotReceiver, ReceiveError> {
        let file = label.into();
        let len = backend
            .len()
            .map_err(|e| ReceiveError::Fault(engine(&file)(redb::StorageError::from(e))))?;
        if len != 0 {
            return Err(ReceiveError::Io {
                source: std::io::Error::new(
                    std::io::ErrorKind::AlreadyExists,
                    format!("the backend to receive into is not empty ({len} bytes)"),
                ),
                file,
            });
        }
        let db = open_backend_db(backend, &file, options)?;
        Self::with_db(db, &file.clone(), file, RxTarget::Backend, config)
    }

    /// Starts a transfer into `<live>.incoming` on a raft-storage disk
    /// (removing an earlier one). [`MvccStore::snapshot_receiver`] of a store
    /// opened with `MvccStore::open_on_disk` is this.
    #[cfg(feature = "sim")]
    pub fn begin_on_disk<D: raft_storage::Disk>(
        disk: D,
        live: &Path,
        config: &KvConfig,
        options: &MvccOptions,
    ) -> Result<SnapshotReceiver, ReceiveError> {
        Self::begin_on_shared_disk(std::sync::Arc::new(disk), live, config, options)
    }

    #[cfg(feature = "sim")]
    pub(crate) fn begin_on_shared_disk(
        disk: crate::disk::SharedDisk,
        live: &Path,
        config: &KvConfig,
        options: &MvccOptions,
    ) -> Result<SnapshotReceiver, ReceiveError> {
        let file = incoming_path(live);
        let io = |source| ReceiveError::Io {
            file: file.clone(),
            source,
        };
        disk.remove_if_exists(&file).map_err(io)?;
        let backend = disk.backend(&file, true).map_err(io)?;
        let db = open_backend_db(backend, &file, options)?;
        Self::with_db(db, live, file, RxTarget::Disk(disk), config)
    }

    fn with_db(
        db: Database,
        live: &Path,
        file: PathBuf,
        target: RxTarget,
        config: &KvConfig,
    ) -> Result<SnapshotReceiver, ReceiveError> {
        let txn = Self::begin_txn(&db, &file)?;
        // The largest record: a session whose cached answer holds a key and
        // its value twice over (a put's previous value), with room for the
        // header (a membership and the application record).
        let record_bytes_max = 2 * (config.key_bytes_max + config.value_bytes_max) as usize
            + 64 * 1024
            + APP_BYTES_MAX;
        Ok(SnapshotReceiver {
            txn: Some(txn),
            db: Some(db),
            live: live.to_path_buf(),
            file,
            target,
            next_seq: 0,
            buf: BytesMut::new(),
            stream_crc: 0,
            records: 0,
            header: None,
            counts: TableCounts::default(),
            last_tag: 0,
            last_key: Vec::new(),
            last_rev: 0,
            data_bytes: 0,
            txn_bytes: 0,
            record_bytes_max,
            ended: false,
            complete: false,
            handed_over: false,
            failed: None,
        })
    }

    fn begin_txn(db: &Database, file: &Path) -> Result<WriteTransaction, Fault> {
        let mut txn = db.begin_write().map_err(engine(file))?;
        // Durable only at the end: a crash discards the whole file anyway.
        txn.set_durability(Durability::None).map_err(engine(file))?;
        Ok(txn)
    }

    /// The file being written.
    pub fn path(&self) -> &Path {
        &self.file
    }

    /// Takes the next chunk. Any error kills the receiver.
    pub fn push(&mut self, chunk: &SnapshotChunk) -> Result<(), ReceiveError> {
        if let Some(reason) = &self.failed {
            return Err(ReceiveError::Failed {
                reason: reason.clone(),
            });
        }
        let file = self.file.clone();
        let r = catch(&file, || self.push_inner(chunk));
        if let Err(e) = &r {
            self.failed = Some(e.to_string());
            // Free the engine at once; the file is garbage.
            let txn = self.txn.take();
            let db = self.db.take();
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
                drop(txn);
                drop(db);
            }));
        }
        r
    }

    fn push_inner(&mut self, chunk: &SnapshotChunk) -> Result<(), ReceiveError> {
        if self.complete {
            return Err(ReceiveError::Sequence {
                detail: "continues after its last chunk",
            });
        }
        if !chunk.verify() {
            return Err(ReceiveError::BadChunk {
                seq: chunk.seq,
                detail: "checksum mismatch".into(),
            });
        }
        if chunk.seq != self.next_seq {
            return Err(ReceiveError::OutOfOrder {
                expected: self.next_seq,
                got: chunk.seq,
            });
        }
        self.next_seq += 1;
        self.buf.extend_from_slice(&chunk.payload);
        // The tables stay open for the whole chunk (opening one per record
        // cost more than the insert); they borrow the transaction, taken
        // out of `self` meanwhile.
        let txn = self.txn.take().expect("a live receiver has a transaction");
        let result = {
            let mut tables = RxTables::new(&txn);
            self.records_of_chunk(&mut tables)
        };
        self.txn = Some(txn);
        result?;
        if self.txn_bytes >= RECEIVER_TXN_BYTES_MAX {
            let txn = self.txn.take().expect("a live receiver has a transaction");
            txn.commit().map_err(engine(&self.file))?;
            let db = self.db.as_ref().expect("a live receiver has a database");
            self.txn = Some(Self::begin_txn(db, &self.file)?);
            self.txn_bytes = 0;
        }
        if chunk.last {
            if !self.ended || !self.buf.is_empty() {
                return Err(self.bad("the last chunk ends before the end record".into()));
            }
            self.complete = true;
        }
        Ok(())
    }

    /// Writes every complete record in the buffer.
    fn records_of_chunk(&mut self, tables: &mut RxTables<'_>) -> Result<(), ReceiveError> {
        while self.buf.len() >= RECORD_HEADER_BYTES {
            let tag = self.buf[0];
            let len = u32::from_le_bytes(self.buf[1..5].try_into().expect("4 bytes")) as usize;
            if len > self.record_bytes_max {
                return Err(self.bad(format!(
                    "record of {len} bytes exceeds the limit of {}",
                    self.record_bytes_max
                )));
            }
            if self.buf.len() < RECORD_HEADER_BYTES + len {
                break;
            }
            let record = self.buf.split_to(RECORD_HEADER_BYTES + len).freeze();
            if self.ended {
                return Err(self.bad("records after the end record".into()));
            }
            self.record(tag, &record, tables)?;
        }
        Ok(())
    }

    fn bad(&self, detail: String) -> ReceiveError {
        ReceiveError::BadStream { detail }
    }

    /// Checks that records come in table order and in key order within a
    /// table (so the file built is the one sent, and duplicates are refused).
    fn check_order(&mut self, tag: u8, key: &[u8], rev: u64) -> Result<(), ReceiveError> {
        let ascending = if tag != self.last_tag {
            tag > self.last_tag
        } else {
            (key, rev) > (self.last_key.as_slice(), self.last_rev)
        };
        if !ascending {
            return Err(self.bad(format!("record of tag {tag} out of order")));
        }
        self.last_tag = tag;
        self.last_key.clear();
        self.last_key.extend_from_slice(key);
        self.last_rev = rev;
        Ok(())
    }

    fn record(
        &mut self,
        tag: u8,
        record: &Bytes,
        tables: &mut RxTables<'_>,
    ) -> Result<(), ReceiveError> {
        if tag != TAG_END {
            self.stream_crc = crc32c::crc32c_append(self.stream_crc, record);
        }
        let mut body = record.slice(RECORD_HEADER_BYTES..);
        let file = self.file.clone();
        let short = |what: &str| ReceiveError::BadStream {
            detail: format!("{what} record is truncated"),
        };
        if tag != TAG_HEADER && self.header.is_none() {
            return Err(self.bad("the stream does not start with a header".into()));
        }
        let applied = self.header.as_ref().map_or(0, |h| h.state.applied_index);
        let beyond = |rev: LogIndex| ReceiveError::BadStream {
            detail: format!("revision {rev} beyond the applied index {applied}"),
        };
        self.txn_bytes += record.len() as u64;
        match tag {
            TAG_HEADER => {
                if self.header.is_some() {
                    return Err(self.bad("a second header".into()));
                }
                let header: SnapshotHeader =
                    postcard::from_bytes(&body).map_err(|e| self.bad(format!("header: {e}")))?;
                if header.magic != FORMAT_MAGIC || header.format_version != FORMAT_VERSION {
                    return Err(self.bad(format!(
                        "header of layout version {}, this build reads {FORMAT_VERSION}",
                        header.format_version
                    )));
                }
                if header.app.len() > APP_BYTES_MAX {
                    return Err(self.bad(format!(
                        "application record of {} bytes exceeds {APP_BYTES_MAX}",
                        header.app.len()
                    )));
                }
                self.check_order(tag, &[], 0)?;
                self.header = Some(header);
            }
            TAG_CURRENT => {
                if body.len() < 4 {
                    return Err(short("live key"));
                }
                let klen = body.get_u32_le() as usize;
                if body.len() < klen {
                    return Err(short("live key"));
                }
                let key = body.split_to(klen);
                self.check_order(tag, &key, 0)?;
                let (_, mod_revision, _) = CurrentRecord::check(&key, &body)
                    .map_err(|e| self.bad(format!("live key: {e}")))?;
                if mod_revision > applied {
                    return Err(beyond(mod_revision));
                }
                self.data_bytes += (key.len() + CurrentRecord::value_len(body.len())) as u64;
                self.counts.current += 1;
                tables
                    .current(&file)?
                    .insert(&key[..], &body[..])
                    .map_err(engine(&file))?;
            }
            TAG_HISTORY => {
                if body.len() < 4 {
                    return Err(short("history"));
                }
                let klen = body.get_u32_le() as usize;
                if body.len() < klen + 8 {
                    return Err(short("history"));
                }
                let key = body.split_to(klen);
                let rev = body.get_u64_le();
                self.check_order(tag, &key, rev)?;
                HistoryRecord::check(&key, rev, &body)
                    .map_err(|e| self.bad(format!("history: {e}")))?;
                if rev > applied {
                    return Err(beyond(rev));
                }
                self.counts.history += 1;
                tables
                    .history(&file)?
                    .insert((&key[..], rev), &body[..])
                    .map_err(engine(&file))?;
            }
            TAG_CHANGE | TAG_SESSION => {
                if body.len() < 8 {
                    return Err(short("change or session"));
                }
                let k = body.get_u64_le();
                self.check_order(tag, &[], k)?;
                let table = if tag == TAG_CHANGE {
                    decode_change(k, &body).map_err(|e| self.bad(format!("change: {e}")))?;
                    if k > applied {
                        return Err(beyond(k));
                    }
                    self.counts.changes += 1;
                    tables.changes(&file)?
                } else {
                    let s = SessionRecord::decode(k, &body)
                        .map_err(|e| self.bad(format!("session: {e}")))?;
                    if s.last_used_index > applied {
                        return Err(beyond(s.last_used_index));
                    }
                    self.counts.sessions += 1;
                    tables.sessions(&file)?
                };
                table.insert(k, &body[..]).map_err(engine(&file))?;
            }
            TAG_LRU => {
                if body.len() != 16 {
                    return Err(short("session index"));
                }
                let last_used = body.get_u64_le();
                let client = body.get_u64_le();
                self.check_order(tag, &[], last_used)?;
                self.counts.lru += 1;
                tables
                    .lru(&file)?
                    .insert(last_used, client)
                    .map_err(engine(&file))?;
            }
            TAG_END => {
                if body.len() != 12 {
                    return Err(short("end"));
                }
                let crc = body.get_u32_le();
                let records = body.get_u64_le();
                if crc != self.stream_crc || records != self.records {
                    return Err(self.bad(format!(
                        "stream checksum {crc:#010x} over {records} records, received {:#010x} over {}",
                        self.stream_crc, self.records
                    )));
                }
                let header = self.header.as_ref().expect("checked above");
                if header.counts != self.counts {
                    return Err(self.bad(format!(
                        "header announced {:?}, received {:?}",
                        header.counts, self.counts
                    )));
                }
                if header.state.data_bytes != self.data_bytes {
                    return Err(self.bad("data size does not match the header".into()));
                }
                self.ended = true;
                return Ok(());
            }
            other => return Err(self.bad(format!("unknown record tag {other}"))),
        }
        self.records += 1;
        Ok(())
    }

    /// After the last chunk: writes the meta records, commits with fsync,
    /// closes the new file and returns it, ready to install.
    pub fn finish(mut self) -> Result<ReceivedSnapshot, ReceiveError> {
        if let Some(reason) = &self.failed {
            return Err(ReceiveError::Failed {
                reason: reason.clone(),
            });
        }
        if !self.complete {
            return Err(ReceiveError::Sequence {
                detail: "finished before its last chunk",
            });
        }
        let file = self.file.clone();
        let header = self.header.take().expect("a complete stream has a header");
        let txn = self.txn.take().expect("a live receiver has a transaction");
        let db = self.db.take().expect("a live receiver has a database");
        catch(&file, || -> Result<(), ReceiveError> {
            let mut txn = txn;
            txn.set_durability(Durability::Immediate)
                .map_err(engine(&file))?;
            txn.set_quick_repair(true);
            {
                let mut meta = txn.open_table(META).map_err(engine(&file))?;
                meta.insert(META_FORMAT, encode_format().as_slice())
                    .map_err(engine(&file))?;
                meta.insert(META_STATE, header.state.encode().as_slice())
                    .map_err(engine(&file))?;
                meta.insert(META_APP, encode_app(&header.app).as_slice())
                    .map_err(engine(&file))?;
                // Tables the stream had no record for still must exist.
                txn.open_table(CURRENT).map_err(engine(&file))?;
                txn.open_table(HISTORY).map_err(engine(&file))?;
                txn.open_table(CHANGES).map_err(engine(&file))?;
                txn.open_table(SESSIONS).map_err(engine(&file))?;
                txn.open_table(SESSION_LRU).map_err(engine(&file))?;
            }
            txn.commit().map_err(engine(&file))?;
            Ok(())
        })?;
        let db = match self.target {
            // Reopened by path after the rename.
            RxTarget::File => {
                drop(db);
                None
            }
            _ => Some(DbHandle::new(db)),
        };
        // Durable now: renamed to `.received`, which an open keeps, so a
        // crash between the Raft log recording this snapshot and the
        // install finds it again (`MvccStore::take_received`).
        let received = received_path(&self.live);
        let io = |source| ReceiveError::Io {
            file: received.clone(),
            source,
        };
        let file = match &self.target {
            RxTarget::File => {
                std::fs::rename(&file, &received).map_err(io)?;
                sync_parent(&received).map_err(io)?;
                received.clone()
            }
            #[cfg(feature = "sim")]
            RxTarget::Disk(disk) => {
                disk.rename(&file, &received).map_err(io)?;
                disk.sync_parent(&received).map_err(io)?;
                received.clone()
            }
            RxTarget::Backend => file,
        };
        self.handed_over = true;
        Ok(ReceivedSnapshot {
            file,
            live: self.live.clone(),
            state: header.state,
            app: header.app,
            target: self.target.clone(),
            db,
        })
    }
}

impl Drop for SnapshotReceiver {
    fn drop(&mut self) {
        // An unfinished (or failed) transfer's file is garbage; a finished
        // one belongs to the `ReceivedSnapshot` and stays for `install`.
        // Dropping the engine may panic on a damaged file: never unwind
        // out of a drop.
        let txn = self.txn.take();
        let db = self.db.take();
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
            drop(txn);
            drop(db);
        }));
        if !self.handed_over {
            match &self.target {
                RxTarget::File => {
                    let _ = remove_file_if_exists(&self.file);
                }
                #[cfg(feature = "sim")]
                RxTarget::Disk(disk) => {
                    let _ = disk.remove_if_exists(&self.file);
                }
                // The caller's backend is the caller's to reuse or drop.
                RxTarget::Backend => {}
            }
        }
    }
}
