//! The store: WAL segments, snapshot files and the in-memory view of the log.

use std::collections::{BTreeMap, VecDeque};
use std::io::{self, IoSlice};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use bytes::Bytes;
use raft_core::{
    Entry, HardState, InitialState, LogIndex, LogStore, Membership, Ready, Snapshot, SnapshotMeta,
    StorageError, Term,
};

use crate::config::StoreConfig;
use crate::disk::{Disk, DiskFile};
use crate::error::{OpenError, WriteError};
use crate::record::{self, Parsed, RecordType, SegmentHeader, SnapshotMarker};

const IDENTITY_FILE: &str = "identity";
const TMP_SUFFIX: &str = ".tmp";
const SEGMENT_SUFFIX: &str = ".wal";
const SNAP_PREFIX: &str = "snap-";
const SNAP_SUFFIX: &str = ".snap";

/// `{seq:020}-{first_index:020}.wal`
fn segment_name(seq: u64, first_index: u64) -> String {
    format!("{seq:020}-{first_index:020}{SEGMENT_SUFFIX}")
}

fn parse_segment_name(name: &str) -> Option<(u64, u64)> {
    let stem = name.strip_suffix(SEGMENT_SUFFIX)?;
    let (a, b) = stem.split_once('-')?;
    if a.len() != 20 || b.len() != 20 {
        return None;
    }
    Some((a.parse().ok()?, b.parse().ok()?))
}

/// `snap-{index:020}-{term:020}.snap`
fn snapshot_name(index: u64, term: u64) -> String {
    format!("{SNAP_PREFIX}{index:020}-{term:020}{SNAP_SUFFIX}")
}

fn parse_snapshot_name(name: &str) -> Option<(u64, u64)> {
    let stem = name.strip_prefix(SNAP_PREFIX)?.strip_suffix(SNAP_SUFFIX)?;
    let (a, b) = stem.split_once('-')?;
    if a.len() != 20 || b.len() != 20 {
        return None;
    }
    Some((a.parse().ok()?, b.parse().ok()?))
}

fn tmp_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(TMP_SUFFIX);
    PathBuf::from(s)
}

/// Where an entry's record lives. 24 bytes per live entry.
#[derive(Clone, Copy, Debug)]
struct Loc {
    term: Term,
    /// Segment sequence number (segments are bounded, so u32 suffices).
    seq: u32,
    /// Offset of the record header in the segment (segments are < 4 GiB).
    offset: u32,
    /// Record length including its header.
    len: u32,
}

struct Segment<F> {
    seq: u64,
    path: PathBuf,
    file: Arc<F>,
    /// Bytes written so far (the next record goes here).
    len: u64,
    /// Highest entry index with a record in this segment (0 if none): the
    /// segment may be deleted once the snapshot covers it.
    max_entry_index: u64,
}

/// What recovery found and did, for logs and for operators.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    pub segments: usize,
    pub bytes_scanned: u64,
    pub records: u64,
    /// The last segment ended in a record that was never completely written
    /// (a write that was not fsynced before the crash): `(file, offset,
    /// bytes cut off)`.
    pub torn_tail: Option<(PathBuf, u64, u64)>,
    /// Leftover files removed: temporaries, unreferenced snapshots.
    pub removed: Vec<PathBuf>,
}

struct Inner<F> {
    snapshot: Snapshot,
    snapshot_path: PathBuf,
    /// Locations of entries `base + 1 ..= last`.
    locs: VecDeque<Loc>,
    /// The most recent entries (a suffix of the log).
    cache: VecDeque<Entry>,
    cache_bytes: u64,
    hard_state: HardState,
    segments: BTreeMap<u64, Segment<F>>,
    /// Bumped by every published write; `sync` makes everything up to the
    /// value it read durable.
    written_seq: u64,
    /// Once `written_seq` up to this value is durable, the files in
    /// `obsolete_snapshots` and the segments the snapshot covers go.
    cleanup_after_seq: Option<u64>,
    obsolete_snapshots: Vec<PathBuf>,
}

impl<F> Inner<F> {
    fn base_index(&self) -> LogIndex {
        self.snapshot.meta.last_index
    }

    fn base_term(&self) -> Term {
        self.snapshot.meta.last_term
    }

    fn last_index(&self) -> LogIndex {
        self.base_index() + self.locs.len() as u64
    }

    fn term_at(&self, index: LogIndex) -> Option<Term> {
        let base = self.base_index();
        if index == base {
            return Some(self.base_term());
        }
        if index < base {
            return None;
        }
        self.locs.get((index - base - 1) as usize).map(|l| l.term)
    }

    fn cache_first_index(&self) -> LogIndex {
        self.last_index() + 1 - self.cache.len() as u64
    }

    fn active(&self) -> &Segment<F> {
        // Recovery refuses a directory without segments and nothing removes
        // the active (last) one.
        self.segments
            .values()
            .next_back()
            .expect("there is always an active segment")
    }

    /// Drops entries from `index` on from the in-memory view.
    fn truncate_from(&mut self, index: LogIndex) {
        let cache_first = self.cache_first_index();
        let keep = (index - self.base_index() - 1) as usize;
        self.locs.truncate(keep);
        let cache_keep = index.saturating_sub(cache_first) as usize;
        while self.cache.len() > cache_keep {
            let e = self.cache.pop_back().expect("len > keep >= 0");
            self.cache_bytes -= e.size_bytes();
        }
    }

    /// Drops entries up to `index` (now in the snapshot) from memory.
    fn drop_prefix_through(&mut self, index: LogIndex) {
        // Called before the snapshot meta moves: count from the old base.
        let n = (index - self.base_index()).min(self.locs.len() as u64) as usize;
        self.locs.drain(..n);
        while self.cache.front().is_some_and(|e| e.index <= index) {
            let e = self.cache.pop_front().expect("front exists");
            self.cache_bytes -= e.size_bytes();
        }
    }

    fn clear_log(&mut self) {
        self.locs.clear();
        self.cache.clear();
        self.cache_bytes = 0;
    }

    fn push_cache(&mut self, e: &Entry, cache_bytes_max: u64) {
        self.cache_bytes += e.size_bytes();
        self.cache.push_back(e.clone());
        while self.cache_bytes > cache_bytes_max {
            match self.cache.pop_front() {
                Some(old) => self.cache_bytes -= old.size_bytes(),
                None => break,
            }
        }
    }

    /// Executable invariants of the in-memory view.
    fn validate(&self) {
        debug_assert!(self.cache.len() <= self.locs.len());
        debug_assert!(self.cache_bytes <= self.cache.iter().map(Entry::size_bytes).sum());
        if let (Some(first), Some(last)) = (self.cache.front(), self.cache.back()) {
            debug_assert_eq!(last.index, self.last_index());
            debug_assert_eq!(first.index, self.cache_first_index());
        }
        debug_assert!(
            self.hard_state.commit <= self.last_index(),
            "commit {} beyond last index {}",
            self.hard_state.commit,
            self.last_index()
        );
        debug_assert!(!self.segments.is_empty());
    }
}

/// Group-commit state: who is fsyncing and how far durability reaches.
struct SyncState {
    synced_seq: u64,
    in_progress: bool,
    /// Threads waiting on `sync_done` (so a lone syncer skips the notify).
    waiters: usize,
}

/// Capacity a [`Batch`] keeps between writes. A larger write's buffers are
/// freed after it, so one burst does not pin its memory for good.
const BATCH_RETAIN_BYTES: usize = 1 << 20;

/// The writer's scratch space, reused by every write. It lives behind
/// `Store::writer`, whose lock also serializes every change to the log.
#[derive(Default)]
struct Batch {
    /// Encoded records not yet written, except the payloads of large
    /// entries, which are written from the caller's memory (see `splices`).
    buf: Vec<u8>,
    /// `(position in buf, position in the call's entries)`: in the file,
    /// that entry's payload comes between `buf[..position]` and the rest.
    splices: Vec<(usize, usize)>,
    /// Bytes of the pending chunk in the file: `buf` plus spliced payloads.
    chunk_len: u64,
    /// Entry records of the whole write: `(position in entries, location)`.
    locs: Vec<(usize, Loc)>,
}

impl Batch {
    fn clear(&mut self) {
        self.clear_chunk();
        self.locs.clear();
    }

    fn clear_chunk(&mut self) {
        self.buf.clear();
        self.splices.clear();
        self.chunk_len = 0;
    }

    /// Frees buffers a large write grew past the retained size.
    fn trim(&mut self) {
        if self.buf.capacity() > BATCH_RETAIN_BYTES {
            self.buf = Vec::new();
        }
        let splices_max = BATCH_RETAIN_BYTES / std::mem::size_of::<(usize, usize)>();
        if self.splices.capacity() > splices_max {
            self.splices = Vec::new();
        }
        let locs_max = BATCH_RETAIN_BYTES / std::mem::size_of::<(usize, Loc)>();
        if self.locs.capacity() > locs_max {
            self.locs = Vec::new();
        }
    }

    /// Encodes entry `entries[pos]` at the end of the pending chunk of `seg`.
    fn push_entry(&mut self, pos: usize, e: &Entry, seg: &mut Active<impl Sized>) {
        // Sizes were validated against entry_bytes_max, below the record
        // limit, so encoding cannot fail here.
        let (len, in_place) =
            record::encode_entry_record(&mut self.buf, e).expect("validated entry encodes");
        if in_place.is_some() {
            self.splices.push((self.buf.len(), pos));
        }
        let loc = Loc {
            term: e.term,
            seq: seg.seq as u32,
            // Segments are rotated below 1 GiB + one record (< 4 GiB).
            offset: (seg.len + self.chunk_len) as u32,
            len: len as u32,
        };
        self.locs.push((pos, loc));
        self.chunk_len += len as u64;
        seg.max_entry_index = seg.max_entry_index.max(e.index);
    }

    /// Encodes a small record (hard state, snapshot marker).
    fn push_record<T: serde::Serialize>(&mut self, ty: RecordType, value: &T) {
        let len = record::encode_record(&mut self.buf, ty, value).expect("small record encodes");
        self.chunk_len += len as u64;
    }
}

/// The writer's view of a segment it appends to. Only a writer (holding
/// `Store::writer`) changes the active segment, so this stays accurate
/// while `inner` is unlocked.
struct Active<F> {
    seq: u64,
    file: Arc<F>,
    /// Where the next byte goes.
    len: u64,
    max_entry_index: u64,
}

/// One write in progress: what it appended to the active segment and the
/// segments it started, published to `Inner` in one step at the end so that
/// readers see all of a write or none of it.
struct Append<F> {
    /// The active segment when the write began.
    first: Active<F>,
    /// Segments started by rotations during the write, in order, with their
    /// paths; the last one is the active segment once published.
    started: Vec<(Active<F>, PathBuf)>,
    /// The preamble of a new segment refers to the log's base and hard state
    /// as they were when the write began (both change only after it).
    base: (LogIndex, Term),
    hard_state: HardState,
}

impl<F> Append<F> {
    fn begin(inner: &Inner<F>) -> Self {
        let a = inner.active();
        Append {
            first: Active {
                seq: a.seq,
                file: a.file.clone(),
                len: a.len,
                max_entry_index: a.max_entry_index,
            },
            started: Vec::new(),
            base: (inner.base_index(), inner.base_term()),
            hard_state: inner.hard_state,
        }
    }

    fn current(&self) -> &Active<F> {
        self.started.last().map_or(&self.first, |(a, _)| a)
    }

    fn current_mut(&mut self) -> &mut Active<F> {
        match self.started.last_mut() {
            Some((a, _)) => a,
            None => &mut self.first,
        }
    }
}

/// A durable Raft log and snapshot store over a [`Disk`].
///
/// All methods take `&self`; share it as `Arc<Store<D>>` between the engine
/// (which reads through [`LogStore`]) and a writer thread. Writes are
/// buffered in the OS until [`Store::sync`]; reads see everything written,
/// synced or not (the engine only relies on what it was told is persisted,
/// and what was written came from its own `Ready`).
///
/// Write API (each returns once the data is handed to the OS; call
/// [`Store::sync`] before acknowledging anything):
/// - [`Store::append`]: entries, replacing a conflicting suffix;
/// - [`Store::set_hard_state`];
/// - [`Store::install_snapshot`]: a snapshot received from the leader;
/// - [`Store::write_ready`] / [`Store::persist_ready`]: the three above in
///   the order a [`Ready`] requires (the latter also syncs);
/// - [`Store::compact`]: an application snapshot; this one syncs.
pub struct Store<D: Disk> {
    disk: D,
    dir: PathBuf,
    config: StoreConfig,
    cluster_id: u64,
    node_id: u64,
    inner: Mutex<Inner<D::File>>,
    /// Serializes writers and owns their scratch space. Every change to the
    /// log (entries, hard state, markers, rotation) happens with it held;
    /// `inner` is taken only briefly to validate and to publish, never
    /// during I/O, so readers are not held up by a write. Lock order:
    /// `snapshot_lock`, `writer`, `inner`, `failure`.
    writer: Mutex<Batch>,
    sync_state: Mutex<SyncState>,
    sync_done: Condvar,
    /// The first fatal failure; once set, every write is refused. A leaf
    /// lock: never held while taking another.
    failure: Mutex<Option<String>>,
    /// Serializes snapshot installation and compaction (each writes a file
    /// outside the `inner` lock).
    snapshot_lock: Mutex<()>,
    report: RecoveryReport,
}

impl<D: Disk> std::fmt::Debug for Store<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("dir", &self.dir)
            .field("cluster_id", &self.cluster_id)
            .field("node_id", &self.node_id)
            .field("first_index", &self.first_index())
            .field("last_index", &self.last_index())
            .field("failure", &self.failure())
            .finish()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Poisoning means a panic while holding the lock: a broken invariant.
    // The panicking thread has already reported it; continuing to serve the
    // data as it is avoids cascading panics in unrelated threads.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn open_io<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> OpenError + 'a {
    move |source| OpenError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// Reads a whole file.
fn read_all<F: DiskFile>(file: &F) -> io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    read_all_into(file, &mut buf)?;
    Ok(buf)
}

/// Reads a whole file into `buf`, reusing its memory: recovery reads many
/// segments of about the same size, and a fresh buffer for each costs a
/// page fault per 4 KiB (as much CPU as the read itself).
fn read_all_into<F: DiskFile>(file: &F, buf: &mut Vec<u8>) -> io::Result<()> {
    let len = file.size()?;
    let len = usize::try_from(len).map_err(|_| io::Error::other("file too large"))?;
    // Zero-fills only a part that grows; the read overwrites the rest.
    buf.resize(len, 0);
    file.read_exact_at(buf, 0)
}

/// Writes a whole file durably under `path`: temporary file, fsync, rename,
/// fsync of the directory.
fn write_file_durably<D: Disk>(
    disk: &D,
    dir: &Path,
    path: &Path,
    parts: &[&[u8]],
) -> Result<D::File, (&'static str, PathBuf, io::Error)> {
    let tmp = tmp_path(path);
    let f = disk.create(&tmp).map_err(|e| ("create", tmp.clone(), e))?;
    let mut off = 0u64;
    for p in parts {
        f.write_all_at(p, off)
            .map_err(|e| ("write", tmp.clone(), e))?;
        off += p.len() as u64;
    }
    f.sync_data().map_err(|e| ("fsync", tmp.clone(), e))?;
    disk.rename(&tmp, path)
        .map_err(|e| ("rename", tmp.clone(), e))?;
    disk.sync_dir(dir)
        .map_err(|e| ("fsync dir", dir.to_path_buf(), e))?;
    Ok(f)
}

fn write_snapshot_file<D: Disk>(
    disk: &D,
    dir: &Path,
    snapshot: &Snapshot,
) -> Result<PathBuf, (&'static str, PathBuf, io::Error)> {
    let path = dir.join(snapshot_name(
        snapshot.meta.last_index,
        snapshot.meta.last_term,
    ));
    let head = record::encode_snapshot_head(&snapshot.meta, &snapshot.data);
    let trailer = record::snapshot_trailer(&snapshot.data);
    write_file_durably(disk, dir, &path, &[&head, &snapshot.data, &trailer])?;
    Ok(path)
}

/// The records every segment starts with: header, the snapshot it builds
/// on, and the hard state at its creation. With them, any prefix of older
/// segments can be deleted without losing the hard state.
fn segment_preamble(
    cluster_id: u64,
    node_id: u64,
    seq: u64,
    first_index: u64,
    base: (LogIndex, Term),
    hs: &HardState,
) -> Vec<u8> {
    let mut buf = Vec::new();
    let header = SegmentHeader {
        magic: record::SEGMENT_MAGIC,
        version: record::FORMAT_VERSION,
        cluster_id,
        node_id,
        seq,
        first_index,
    };
    let marker = SnapshotMarker {
        index: base.0,
        term: base.1,
        kept_suffix: true,
    };
    // These small fixed-shape values always encode (far below the limit).
    record::encode_record(&mut buf, RecordType::SegmentHeader, &header).expect("header encodes");
    record::encode_record(&mut buf, RecordType::SnapshotMarker, &marker).expect("marker encodes");
    record::encode_record(&mut buf, RecordType::HardState, hs).expect("hard state encodes");
    buf
}

/// In-memory state rebuilt by replaying the WAL.
struct Replay {
    /// `(index, term)` of the log's base; term unknown after a hole (entries
    /// of deleted segments), until a snapshot marker covers it.
    base: Option<(LogIndex, Option<Term>)>,
    locs: VecDeque<Loc>,
    hard_state: Option<HardState>,
}

impl Replay {
    fn last(&self) -> LogIndex {
        self.base.map_or(0, |b| b.0) + self.locs.len() as u64
    }

    fn entry(&mut self, index: LogIndex, loc: Loc) -> Result<(), String> {
        let Some((base, base_term)) = self.base else {
            return Err("entry before any snapshot marker".into());
        };
        if index <= base {
            if base_term.is_some() {
                return Ok(()); // inside the snapshot
            }
            // The base only marks a hole (entries of deleted segments), so
            // this entry is not covered by a snapshot yet: it truncates the
            // log from its index on, including the entries after the hole,
            // and a later marker must cover what comes before it. (Skipping
            // it would resurrect the truncated suffix.)
            self.locs.clear();
            self.base = Some((index - 1, None));
            self.locs.push_back(loc);
            return Ok(());
        }
        if index <= self.last() + 1 {
            self.locs.truncate((index - base - 1) as usize);
        } else {
            // The entries before it were in deleted segments; a later marker
            // must cover them.
            self.locs.clear();
            self.base = Some((index - 1, None));
        }
        self.locs.push_back(loc);
        Ok(())
    }

    fn marker(&mut self, m: SnapshotMarker) -> Result<(), String> {
        let Some((base, base_term)) = self.base else {
            self.base = Some((m.index, Some(m.term)));
            return Ok(());
        };
        if m.index < base {
            return Ok(()); // an older snapshot, superseded
        }
        if !m.kept_suffix {
            self.locs.clear();
        }
        if m.index == base {
            match base_term {
                Some(t) if t != m.term => {
                    return Err(format!(
                        "snapshot marker ({}, {}) disagrees with base term {t}",
                        m.index, m.term
                    ))
                }
                _ => self.base = Some((base, Some(m.term))),
            }
        } else if m.index <= self.last() {
            let t = self.locs[(m.index - base - 1) as usize].term;
            if t != m.term {
                return Err(format!(
                    "snapshot marker ({}, {}) kept a log whose term there is {t}",
                    m.index, m.term
                ));
            }
            self.locs.drain(..(m.index - base) as usize);
            self.base = Some((m.index, Some(m.term)));
        } else {
            self.locs.clear();
            self.base = Some((m.index, Some(m.term)));
        }
        Ok(())
    }
}

impl<D: Disk> Store<D> {
    /// Creates a new node's data directory with its bootstrap configuration
    /// (stored as the snapshot at index 0, so
    /// `initial_state().snapshot_meta.membership` returns it; a node that
    /// will join an existing cluster passes an empty one), then opens it.
    ///
    /// Refuses a directory that already has an identity. Leftovers of an
    /// interrupted bootstrap (no identity yet) are removed first. The
    /// identity file is written last: it is the commit point.
    pub fn bootstrap(
        disk: D,
        dir: impl Into<PathBuf>,
        cluster_id: u64,
        node_id: u64,
        membership: Membership,
        config: StoreConfig,
    ) -> Result<Self, OpenError> {
        let dir = dir.into();
        config.validate().map_err(OpenError::InvalidConfig)?;
        if node_id == 0 {
            return Err(OpenError::InvalidConfig("node id 0 is reserved".into()));
        }
        membership
            .check()
            .map_err(|e| OpenError::InvalidConfig(format!("membership: {e}")))?;
        disk.create_dir_all(&dir)
            .map_err(open_io("create dir", &dir))?;
        if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
            disk.sync_dir(parent)
                .map_err(open_io("fsync dir", parent))?;
        }
        let names = disk.list_dir(&dir).map_err(open_io("list", &dir))?;
        if names.iter().any(|n| n == IDENTITY_FILE) {
            let (cluster_id, node_id) = read_identity(&disk, &dir)?;
            return Err(OpenError::AlreadyInitialized {
                dir,
                cluster_id,
                node_id,
            });
        }
        for name in &names {
            if name.ends_with(TMP_SUFFIX)
                || parse_segment_name(name).is_some()
                || parse_snapshot_name(name).is_some()
            {
                let p = dir.join(name);
                disk.remove_file(&p).map_err(open_io("remove", &p))?;
            }
        }
        let map = |(op, path, source)| OpenError::Io { op, path, source };
        let snapshot = Snapshot {
            meta: SnapshotMeta {
                last_index: 0,
                last_term: 0,
                membership,
            },
            data: Bytes::new(),
        };
        write_snapshot_file(&disk, &dir, &snapshot).map_err(map)?;
        let preamble = segment_preamble(cluster_id, node_id, 1, 1, (0, 0), &HardState::default());
        write_file_durably(&disk, &dir, &dir.join(segment_name(1, 1)), &[&preamble])
            .map_err(map)?;
        let identity = record::encode_identity(cluster_id, node_id);
        write_file_durably(&disk, &dir, &dir.join(IDENTITY_FILE), &[&identity]).map_err(map)?;
        Self::open(disk, dir, cluster_id, node_id, config)
    }

    /// Opens the directory if it has an identity, else bootstraps it.
    pub fn open_or_bootstrap(
        disk: D,
        dir: impl Into<PathBuf>,
        cluster_id: u64,
        node_id: u64,
        membership: Membership,
        config: StoreConfig,
    ) -> Result<Self, OpenError> {
        let dir = dir.into();
        let initialized = disk
            .list_dir(&dir)
            .map(|names| names.iter().any(|n| n == IDENTITY_FILE))
            .unwrap_or(false);
        if initialized {
            Self::open(disk, dir, cluster_id, node_id, config)
        } else {
            Self::bootstrap(disk, dir, cluster_id, node_id, membership, config)
        }
    }

    /// Opens an existing data directory and recovers its state: verifies
    /// the identity, replays every segment (checking every record's CRC),
    /// cuts off a torn record at the very end of the last segment, and loads
    /// the snapshot the WAL refers to. Any other damage is refused with
    /// [`OpenError::Corrupt`] naming the file and offset; in that case
    /// nothing on disk was changed.
    pub fn open(
        disk: D,
        dir: impl Into<PathBuf>,
        cluster_id: u64,
        node_id: u64,
        config: StoreConfig,
    ) -> Result<Self, OpenError> {
        let dir = dir.into();
        config.validate().map_err(OpenError::InvalidConfig)?;
        let names = match disk.list_dir(&dir) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(OpenError::NotInitialized { dir })
            }
            Err(e) => return Err(open_io("list", &dir)(e)),
        };
        if !names.iter().any(|n| n == IDENTITY_FILE) {
            return Err(OpenError::NotInitialized { dir });
        }
        let (found_cluster, found_node) = read_identity(&disk, &dir)?;
        if found_cluster != cluster_id {
            return Err(OpenError::WrongCluster {
                dir,
                expected: cluster_id,
                found: found_cluster,
            });
        }
        if found_node != node_id {
            return Err(OpenError::WrongNode {
                dir,
                expected: node_id,
                found: found_node,
            });
        }

        let mut report = RecoveryReport::default();
        let mut to_remove = Vec::new();
        let mut seg_names = Vec::new();
        let mut snap_names = BTreeMap::new();
        for name in &names {
            if name.ends_with(TMP_SUFFIX) {
                to_remove.push(dir.join(name));
            } else if name.ends_with(SEGMENT_SUFFIX) {
                let Some((seq, first)) = parse_segment_name(name) else {
                    return Err(corrupt(dir.join(name), 0, "unrecognized segment file name"));
                };
                seg_names.push((seq, first, dir.join(name)));
            } else if name.ends_with(SNAP_SUFFIX) {
                let Some(key) = parse_snapshot_name(name) else {
                    return Err(corrupt(
                        dir.join(name),
                        0,
                        "unrecognized snapshot file name",
                    ));
                };
                snap_names.insert(key, dir.join(name));
            }
            // Other files are not ours and are left alone.
        }
        seg_names.sort();
        if seg_names.is_empty() {
            return Err(corrupt(dir.clone(), 0, "no WAL segment file"));
        }
        for w in seg_names.windows(2) {
            if w[1].0 != w[0].0 + 1 {
                return Err(corrupt(
                    w[1].2.clone(),
                    0,
                    format!("segment {} is missing before this one", w[0].0 + 1),
                ));
            }
        }
        if seg_names.last().map_or(0, |s| s.0) > u64::from(u32::MAX) {
            return Err(corrupt(dir.clone(), 0, "segment sequence number overflow"));
        }

        // Replay.
        let mut replay = Replay {
            base: None,
            locs: VecDeque::new(),
            hard_state: None,
        };
        let mut segments = BTreeMap::new();
        let mut torn: Option<(u64, u64)> = None; // (seq, offset)
        let seg_count = seg_names.len();
        let mut buf = Vec::new();
        for (i, (seq, first_index, path)) in seg_names.into_iter().enumerate() {
            let is_last = i + 1 == seg_count;
            let file = disk.open(&path).map_err(open_io("open", &path))?;
            read_all_into(&file, &mut buf).map_err(open_io("read", &path))?;
            report.bytes_scanned += buf.len() as u64;
            let mut off = 0usize;
            let mut max_entry_index = 0;
            while off < buf.len() {
                let (ty, payload, next) = match record::parse_record(&buf, off) {
                    Parsed::Record { ty, payload, next } => (ty, payload, next),
                    // Only the last segment can end in a write that was
                    // never completed (rotation fsyncs the previous one).
                    // It is torn, not damaged, if nothing valid follows and
                    // it was cut short (the header is intact but the payload
                    // runs past the end) or reads as never-written zeros.
                    Parsed::Incomplete | Parsed::Bad(_)
                        if is_last
                            && off > 0
                            && record::find_valid_record_after(&buf, off).is_none()
                            && (matches!(record::parse_record(&buf, off), Parsed::Incomplete)
                                || record::looks_torn(&buf, off)) =>
                    {
                        // Nothing valid follows: the tail of a write that
                        // was never completed (and so never fsynced).
                        torn = Some((seq, off as u64));
                        report.torn_tail =
                            Some((path.clone(), off as u64, (buf.len() - off) as u64));
                        break;
                    }
                    Parsed::Incomplete => {
                        return Err(corrupt(path, off as u64, "record runs past end of file"))
                    }
                    Parsed::Bad(why) => return Err(corrupt(path, off as u64, why)),
                };
                report.records += 1;
                let at = |e: String| corrupt(path.clone(), off as u64, e);
                if (off == 0) != (ty == RecordType::SegmentHeader) {
                    return Err(at("segment header missing or misplaced".into()));
                }
                match ty {
                    RecordType::SegmentHeader => {
                        let h: SegmentHeader = record::decode(payload).map_err(at)?;
                        let want = SegmentHeader {
                            magic: record::SEGMENT_MAGIC,
                            version: record::FORMAT_VERSION,
                            cluster_id,
                            node_id,
                            seq,
                            first_index,
                        };
                        if h != want {
                            return Err(corrupt(
                                path,
                                off as u64,
                                format!("segment header {h:?} does not match {want:?}"),
                            ));
                        }
                    }
                    RecordType::Entry => {
                        let (term, index) = record::decode_entry_head(payload).map_err(at)?;
                        let loc = Loc {
                            term,
                            seq: seq as u32,
                            offset: u32::try_from(off)
                                .map_err(|_| at("segment over 4 GiB".into()))?,
                            len: (next - off) as u32,
                        };
                        replay.entry(index, loc).map_err(at)?;
                        max_entry_index = max_entry_index.max(index);
                    }
                    RecordType::HardState => {
                        replay.hard_state = Some(record::decode_hard_state(payload).map_err(at)?);
                    }
                    RecordType::SnapshotMarker => {
                        let m: SnapshotMarker = record::decode(payload).map_err(at)?;
                        replay.marker(m).map_err(at)?;
                    }
                }
                off = next;
            }
            segments.insert(
                seq,
                Segment {
                    seq,
                    path,
                    file: Arc::new(file),
                    len: off as u64,
                    max_entry_index,
                },
            );
        }
        drop(buf);
        report.segments = seg_count;
        let first_seg_path = segments.values().next().map(|s| s.path.clone());
        let last_seg_path = segments.values().next_back().map(|s| s.path.clone());
        let first_seg_path = first_seg_path.expect("at least one segment");
        let last_seg_path = last_seg_path.expect("at least one segment");
        let Some((base_index, base_term)) = replay.base else {
            return Err(corrupt(first_seg_path, 0, "no snapshot marker in the WAL"));
        };
        let Some(base_term) = base_term else {
            return Err(corrupt(
                first_seg_path,
                0,
                format!(
                    "entries up to index {base_index} are missing and no snapshot covers them \
                     (a segment file was lost)"
                ),
            ));
        };
        let Some(hard_state) = replay.hard_state else {
            return Err(corrupt(
                first_seg_path,
                0,
                "no hard state record in the WAL",
            ));
        };
        let last_index = replay.last();
        if hard_state.commit > last_index {
            return Err(corrupt(
                last_seg_path,
                0,
                format!(
                    "hard state commit {} is beyond the last entry {last_index}",
                    hard_state.commit
                ),
            ));
        }

        // The snapshot the WAL builds on.
        let Some(snapshot_path) = snap_names.remove(&(base_index, base_term)) else {
            return Err(corrupt(
                dir.join(snapshot_name(base_index, base_term)),
                0,
                "snapshot file referenced by the WAL is missing",
            ));
        };
        let snap_file = disk
            .open(&snapshot_path)
            .map_err(open_io("open", &snapshot_path))?;
        let bytes = read_all(&snap_file).map_err(open_io("read", &snapshot_path))?;
        let (meta, data) = record::decode_snapshot(Bytes::from(bytes))
            .map_err(|(off, why)| corrupt(snapshot_path.clone(), off, why))?;
        if (meta.last_index, meta.last_term) != (base_index, base_term) {
            return Err(corrupt(
                snapshot_path,
                record::SNAP_HEADER_BYTES as u64,
                "snapshot metadata does not match its file name",
            ));
        }
        // Snapshots not referenced by the WAL: older ones whose removal did
        // not complete, or a newer one whose install did not commit.
        to_remove.extend(snap_names.into_values());

        // Everything verified: now repair and clean up.
        if let Some((seq, off)) = torn {
            let seg = &segments[&seq];
            seg.file
                .set_len(off)
                .map_err(open_io("truncate", &seg.path))?;
            seg.file.sync_data().map_err(open_io("fsync", &seg.path))?;
        }
        if !to_remove.is_empty() {
            for p in &to_remove {
                disk.remove_file(p).map_err(open_io("remove", p))?;
            }
            disk.sync_dir(&dir).map_err(open_io("fsync dir", &dir))?;
        }
        report.removed = to_remove;

        let mut inner = Inner {
            snapshot: Snapshot { meta, data },
            snapshot_path,
            locs: replay.locs,
            cache: VecDeque::new(),
            cache_bytes: 0,
            hard_state,
            segments,
            written_seq: 0,
            cleanup_after_seq: None,
            obsolete_snapshots: Vec::new(),
        };
        fill_cache(&mut inner, config.cache_bytes_max).map_err(|e| match e {
            StorageError::Fatal(reason) => corrupt(dir.clone(), 0, reason),
            other => corrupt(dir.clone(), 0, other.to_string()),
        })?;
        inner.validate();
        Ok(Store {
            disk,
            dir,
            config,
            cluster_id,
            node_id,
            inner: Mutex::new(inner),
            writer: Mutex::new(Batch::default()),
            sync_state: Mutex::new(SyncState {
                synced_seq: 0,
                in_progress: false,
                waiters: 0,
            }),
            sync_done: Condvar::new(),
            failure: Mutex::new(None),
            snapshot_lock: Mutex::new(()),
            report,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn cluster_id(&self) -> u64 {
        self.cluster_id
    }

    pub fn node_id(&self) -> u64 {
        self.node_id
    }

    pub fn config(&self) -> &StoreConfig {
        &self.config
    }

    /// What recovery found when this store was opened.
    pub fn recovery_report(&self) -> &RecoveryReport {
        &self.report
    }

    /// The hard state as last written.
    pub fn hard_state(&self) -> HardState {
        lock(&self.inner).hard_state
    }

    /// Why the store stopped accepting writes, if it did.
    pub fn failure(&self) -> Option<String> {
        lock(&self.failure).clone()
    }

    /// Number of segment files.
    pub fn segment_count(&self) -> usize {
        lock(&self.inner).segments.len()
    }

    fn check_failed(&self) -> Result<(), WriteError> {
        match &*lock(&self.failure) {
            Some(reason) => Err(WriteError::Failed(reason.clone())),
            None => Ok(()),
        }
    }

    /// Records a fatal failure (the first one wins) and returns the error
    /// for this call.
    fn fail(&self, op: &'static str, path: PathBuf, source: io::Error) -> WriteError {
        let mut f = lock(&self.failure);
        if f.is_none() {
            *f = Some(format!("{op} {}: {source}", path.display()));
        }
        WriteError::Io { op, path, source }
    }

    /// Appends `entries` (contiguous, the first at most `last_index() + 1`),
    /// first dropping any stored entries from the first one's index on.
    /// Durable after the next [`Store::sync`].
    pub fn append(&self, entries: &[Entry]) -> Result<(), WriteError> {
        self.write(None, entries, None)
    }

    /// Records a new hard state. Durable after the next [`Store::sync`].
    /// Refuses a regression (lower term, another vote in the same term,
    /// lower commit) and a commit index past the log.
    pub fn set_hard_state(&self, hs: HardState) -> Result<(), WriteError> {
        self.write(None, &[], Some(hs))
    }

    /// Installs a snapshot received from the leader: its file is made
    /// durable first, then a marker in the WAL (durable after the next
    /// [`Store::sync`]) replaces the log it covers. Entries after it are
    /// kept only if the log has the snapshot's last entry; the commit index
    /// moves up to the snapshot's index.
    pub fn install_snapshot(&self, snapshot: &Snapshot) -> Result<(), WriteError> {
        self.write(Some(snapshot), &[], None)
    }

    /// Performs the writes of a [`Ready`] in the required order: snapshot,
    /// entries, hard state. Durable after the next [`Store::sync`].
    pub fn write_ready(&self, ready: &Ready) -> Result<(), WriteError> {
        self.write(ready.snapshot.as_ref(), &ready.entries, ready.hard_state)
    }

    /// [`Store::write_ready`] then [`Store::sync`]: on `Ok`, the Ready may be
    /// acknowledged with `on_persisted(ready.number)`.
    pub fn persist_ready(&self, ready: &Ready) -> Result<(), WriteError> {
        self.write_ready(ready)?;
        self.sync()
    }

    /// Snapshot, then entries, then hard state, validated as a whole before
    /// anything is written.
    ///
    /// The records go to the disk outside the lock readers take: only the
    /// writer lock is held during the `pwrite` (and during a segment
    /// rotation's fsyncs), and what was written becomes visible to readers
    /// in one step afterwards.
    pub fn write(
        &self,
        snapshot: Option<&Snapshot>,
        entries: &[Entry],
        hard_state: Option<HardState>,
    ) -> Result<(), WriteError> {
        if let Some(s) = snapshot {
            self.install(s)?;
        }
        if entries.is_empty() && hard_state.is_none() {
            return Ok(());
        }
        let mut batch = lock(&self.writer);
        let b = &mut *batch;
        // Only holders of the writer lock change the log, so what is
        // validated here still holds when the write is published.
        let (hard_state, truncate_from, mut app) = {
            let inner = lock(&self.inner);
            self.check_failed()?;
            self.validate_append(&inner, entries)?;
            let new_last = entries.last().map_or(inner.last_index(), |e| e.index);
            let hard_state = hard_state.filter(|hs| *hs != inner.hard_state);
            if let Some(hs) = hard_state {
                let cur = inner.hard_state;
                if hs.term < cur.term
                    || (hs.term == cur.term && cur.vote.is_some() && hs.vote != cur.vote)
                    || hs.commit < cur.commit
                {
                    return Err(WriteError::HardStateRegress {
                        current: cur,
                        new: hs,
                    });
                }
                if hs.commit > new_last {
                    return Err(WriteError::CommitBeyondLog {
                        commit: hs.commit,
                        last_index: new_last,
                    });
                }
            }
            let truncate_from = entries
                .first()
                .map(|e| e.index)
                .filter(|&i| i <= inner.last_index());
            (hard_state, truncate_from, Append::begin(&inner))
        };
        if entries.is_empty() && hard_state.is_none() {
            return Ok(()); // the hard state was already current
        }
        // Validated: from here on, only I/O can fail, and that is fatal.
        b.clear();
        for (pos, e) in entries.iter().enumerate() {
            b.push_entry(pos, e, app.current_mut());
            let cur = app.current();
            if cur.len + b.chunk_len >= self.config.segment_bytes_max {
                self.write_chunk(b, &mut app, entries)?;
                self.rotate(&mut app, e.index + 1)?;
            }
        }
        if let Some(hs) = hard_state {
            b.push_record(RecordType::HardState, &hs);
        }
        self.write_chunk(b, &mut app, entries)?;
        {
            let mut inner = lock(&self.inner);
            if let Some(index) = truncate_from {
                inner.truncate_from(index);
            }
            self.publish(&mut inner, b, app, entries);
            if let Some(hs) = hard_state {
                inner.hard_state = hs;
            }
            inner.validate();
        }
        b.trim();
        Ok(())
    }

    fn validate_append(&self, inner: &Inner<D::File>, entries: &[Entry]) -> Result<(), WriteError> {
        let Some(first) = entries.first() else {
            return Ok(());
        };
        for w in entries.windows(2) {
            if w[1].index != w[0].index + 1 {
                return Err(WriteError::NotContiguous {
                    prev: w[0].index,
                    index: w[1].index,
                });
            }
        }
        let last = inner.last_index();
        if first.index > last + 1 {
            return Err(WriteError::Gap {
                first: first.index,
                last,
            });
        }
        if first.index <= inner.base_index() {
            return Err(WriteError::Compacted {
                index: first.index,
                snapshot_index: inner.base_index(),
            });
        }
        let commit = inner.hard_state.commit;
        let new_last = entries[entries.len() - 1].index;
        if first.index <= last && new_last < commit {
            return Err(WriteError::TruncatesCommitted {
                from: new_last + 1,
                commit,
            });
        }
        for e in entries {
            let bytes = e.size_bytes();
            if bytes > self.config.entry_bytes_max {
                return Err(WriteError::EntryTooLarge {
                    index: e.index,
                    bytes,
                    max_bytes: self.config.entry_bytes_max,
                });
            }
            if e.index <= commit.min(last) && inner.term_at(e.index) != Some(e.term) {
                return Err(WriteError::ConflictsWithCommitted {
                    index: e.index,
                    term: e.term,
                    commit,
                });
            }
        }
        Ok(())
    }

    /// Path of segment `seq`, for error messages.
    fn segment_path(&self, seq: u64) -> PathBuf {
        let inner = lock(&self.inner);
        match inner.segments.get(&seq) {
            Some(s) => s.path.clone(),
            None => self.dir.join(format!("{seq:020}-*{SEGMENT_SUFFIX}")),
        }
    }

    /// Writes the batch's pending chunk at the end of the current segment
    /// (one `pwrite`, or one `pwritev` when large payloads are written in
    /// place). Called with the writer lock only: readers go on meanwhile.
    fn write_chunk(
        &self,
        b: &mut Batch,
        app: &mut Append<D::File>,
        entries: &[Entry],
    ) -> Result<(), WriteError> {
        if b.chunk_len == 0 {
            return Ok(());
        }
        let cur = app.current_mut();
        let result = if b.splices.is_empty() {
            cur.file.write_all_at(&b.buf, cur.len)
        } else {
            let mut parts = Vec::with_capacity(2 * b.splices.len() + 1);
            let mut from = 0;
            for &(at, pos) in &b.splices {
                parts.push(IoSlice::new(&b.buf[from..at]));
                // push_entry spliced exactly the entries that have one.
                let payload = record::payload_in_place(&entries[pos])
                    .expect("a spliced entry has its payload in place");
                parts.push(IoSlice::new(payload));
                from = at;
            }
            parts.push(IoSlice::new(&b.buf[from..]));
            cur.file.write_all_vectored_at(&mut parts, cur.len)
        };
        let seq = cur.seq;
        if let Err(e) = result {
            b.clear_chunk();
            let path = app
                .started
                .iter()
                .find(|(s, _)| s.seq == seq)
                .map(|(_, p)| p.clone())
                .unwrap_or_else(|| self.segment_path(seq));
            return Err(self.fail("write", path, e));
        }
        cur.len += b.chunk_len;
        b.clear_chunk();
        Ok(())
    }

    /// Starts a new segment: the current one is fsynced first (so only the
    /// last segment can ever have a torn tail), the new one is written under
    /// a temporary name with its preamble, fsynced, renamed and the
    /// directory fsynced (so a segment file, once named, is whole). Called
    /// with the writer lock only; the new segment becomes visible when the
    /// write is published.
    fn rotate(&self, app: &mut Append<D::File>, first_index: LogIndex) -> Result<(), WriteError> {
        let (old_seq, old_file) = {
            let cur = app.current();
            (cur.seq, cur.file.clone())
        };
        if let Err(e) = old_file.sync_data() {
            let path = app
                .started
                .last()
                .map(|(_, p)| p.clone())
                .unwrap_or_else(|| self.segment_path(old_seq));
            return Err(self.fail("fsync", path, e));
        }
        let seq = old_seq + 1;
        if seq > u64::from(u32::MAX) {
            return Err(self.fail(
                "rotate",
                self.dir.clone(),
                io::Error::other("segment sequence number overflow"),
            ));
        }
        let path = self.dir.join(segment_name(seq, first_index));
        let preamble = segment_preamble(
            self.cluster_id,
            self.node_id,
            seq,
            first_index,
            app.base,
            &app.hard_state,
        );
        let file = write_file_durably(&self.disk, &self.dir, &path, &[&preamble])
            .map_err(|(op, p, e)| self.fail(op, p, e))?;
        app.started.push((
            Active {
                seq,
                file: Arc::new(file),
                len: preamble.len() as u64,
                max_entry_index: 0,
            },
            path,
        ));
        Ok(())
    }

    /// Makes what `app` wrote visible: segment lengths, segments it started,
    /// the entries' locations and cache. The caller holds the writer lock
    /// and `inner`, and applies its own changes (truncation before, hard
    /// state or snapshot after) in the same critical section.
    fn publish(
        &self,
        inner: &mut Inner<D::File>,
        b: &Batch,
        app: Append<D::File>,
        entries: &[Entry],
    ) {
        let first = app.first;
        let seg = inner
            .segments
            .get_mut(&first.seq)
            .expect("the active segment is never removed");
        seg.len = first.len;
        seg.max_entry_index = first.max_entry_index;
        for (a, path) in app.started {
            inner.segments.insert(
                a.seq,
                Segment {
                    seq: a.seq,
                    path,
                    file: a.file,
                    len: a.len,
                    max_entry_index: a.max_entry_index,
                },
            );
        }
        for &(pos, loc) in &b.locs {
            inner.locs.push_back(loc);
            inner.push_cache(&entries[pos], self.config.cache_bytes_max);
        }
        inner.written_seq += 1;
    }

    fn install(&self, snapshot: &Snapshot) -> Result<(), WriteError> {
        let _serial = lock(&self.snapshot_lock);
        let index = snapshot.meta.last_index;
        {
            let inner = lock(&self.inner);
            self.check_failed()?;
            if index <= inner.base_index() {
                return Err(WriteError::SnapshotNotNewer {
                    index,
                    current: inner.base_index(),
                });
            }
            snapshot
                .meta
                .membership
                .check()
                .map_err(WriteError::InvalidMembership)?;
            let kept = inner.term_at(index) == Some(snapshot.meta.last_term);
            if !kept && index < inner.hard_state.commit {
                return Err(WriteError::TruncatesCommitted {
                    from: index + 1,
                    commit: inner.hard_state.commit,
                });
            }
        }
        let path = write_snapshot_file(&self.disk, &self.dir, snapshot)
            .map_err(|(op, p, e)| self.fail(op, p, e))?;
        let mut batch = lock(&self.writer);
        let b = &mut *batch;
        let term = snapshot.meta.last_term;
        let (kept_suffix, new_hs, first_index, mut app) = {
            let inner = lock(&self.inner);
            self.check_failed()?;
            let kept_suffix = inner.term_at(index) == Some(term);
            if !kept_suffix && index < inner.hard_state.commit {
                // The log changed while the file was written (the install
                // serializes only with other snapshot operations).
                let commit = inner.hard_state.commit;
                drop(inner);
                self.disk
                    .remove_file(&path)
                    .map_err(|err| self.fail("remove", path.clone(), err))?;
                return Err(WriteError::TruncatesCommitted {
                    from: index + 1,
                    commit,
                });
            }
            let mut hs = inner.hard_state;
            let new_hs = (hs.commit < index).then(|| {
                hs.commit = index;
                hs
            });
            (
                kept_suffix,
                new_hs,
                inner.last_index() + 1,
                Append::begin(&inner),
            )
        };
        let marker = SnapshotMarker {
            index,
            term,
            kept_suffix,
        };
        b.clear();
        if app.current().len >= self.config.segment_bytes_max {
            self.rotate(&mut app, first_index)?;
        }
        b.push_record(RecordType::SnapshotMarker, &marker);
        if let Some(hs) = &new_hs {
            b.push_record(RecordType::HardState, hs);
        }
        self.write_chunk(b, &mut app, &[])?;
        let mut inner = lock(&self.inner);
        self.publish(&mut inner, b, app, &[]);
        if kept_suffix {
            inner.drop_prefix_through(index);
        } else {
            inner.clear_log();
        }
        inner.snapshot = snapshot.clone();
        let old = std::mem::replace(&mut inner.snapshot_path, path);
        inner.obsolete_snapshots.push(old);
        inner.cleanup_after_seq = Some(inner.written_seq);
        if let Some(hs) = new_hs {
            inner.hard_state = hs;
        }
        inner.validate();
        Ok(())
    }

    /// Records an application snapshot taken at `snapshot.meta.last_index`
    /// (which must be in the log with the same term), discards the log up to
    /// it and syncs. Then older snapshot files and the segments the snapshot
    /// covers are deleted. A snapshot not newer than the held one is ignored.
    pub fn compact(&self, snapshot: &Snapshot) -> Result<(), WriteError> {
        let serial = lock(&self.snapshot_lock);
        let index = snapshot.meta.last_index;
        let term = snapshot.meta.last_term;
        let check = |inner: &Inner<D::File>| -> Result<bool, WriteError> {
            if index <= inner.base_index() {
                return Ok(false);
            }
            if index > inner.last_index() {
                return Err(WriteError::SnapshotBeyondLog {
                    index,
                    last_index: inner.last_index(),
                });
            }
            let log_term = inner.term_at(index).expect("index within the log");
            if log_term != term {
                return Err(WriteError::SnapshotTermMismatch {
                    index,
                    term,
                    log_term,
                });
            }
            Ok(true)
        };
        {
            let inner = lock(&self.inner);
            self.check_failed()?;
            if !check(&inner)? {
                return Ok(());
            }
            snapshot
                .meta
                .membership
                .check()
                .map_err(WriteError::InvalidMembership)?;
        }
        let path = write_snapshot_file(&self.disk, &self.dir, snapshot)
            .map_err(|(op, p, e)| self.fail(op, p, e))?;
        {
            let mut batch = lock(&self.writer);
            let b = &mut *batch;
            let (first_index, mut app) = {
                let inner = lock(&self.inner);
                self.check_failed()?;
                // The log may have changed while the file was written.
                if let Err(e) = check(&inner).and_then(|ok| {
                    if ok {
                        Ok(())
                    } else {
                        Err(WriteError::SnapshotNotNewer {
                            index,
                            current: inner.base_index(),
                        })
                    }
                }) {
                    drop(inner);
                    self.disk
                        .remove_file(&path)
                        .map_err(|err| self.fail("remove", path.clone(), err))?;
                    return Err(e);
                }
                (inner.last_index() + 1, Append::begin(&inner))
            };
            let marker = SnapshotMarker {
                index,
                term,
                kept_suffix: true,
            };
            b.clear();
            if app.current().len >= self.config.segment_bytes_max {
                self.rotate(&mut app, first_index)?;
            }
            b.push_record(RecordType::SnapshotMarker, &marker);
            self.write_chunk(b, &mut app, &[])?;
            let mut inner = lock(&self.inner);
            self.publish(&mut inner, b, app, &[]);
            inner.drop_prefix_through(index);
            inner.snapshot = snapshot.clone();
            let old = std::mem::replace(&mut inner.snapshot_path, path);
            inner.obsolete_snapshots.push(old);
            inner.cleanup_after_seq = Some(inner.written_seq);
            inner.validate();
        }
        drop(serial);
        self.sync()
    }

    /// Group commit: makes everything written before the call durable with
    /// one `fdatasync` of the active segment. Concurrent callers share an
    /// fsync: while one runs, the others wait, and the next one covers all
    /// of them. An fsync failure is fatal: the store refuses all later
    /// writes (the kernel may already have dropped the unsynced data).
    pub fn sync(&self) -> Result<(), WriteError> {
        let target = lock(&self.inner).written_seq;
        {
            let mut s = lock(&self.sync_state);
            loop {
                self.check_failed()?;
                if s.synced_seq >= target {
                    return Ok(());
                }
                if !s.in_progress {
                    s.in_progress = true;
                    break;
                }
                s.waiters += 1;
                s = self.sync_done.wait(s).unwrap_or_else(|p| p.into_inner());
                s.waiters -= 1;
            }
        }
        // This thread leads one fsync covering everything written so far.
        // (Older segments were fsynced when they were rotated out.)
        let (seq, file, seg_seq) = {
            let inner = lock(&self.inner);
            let a = inner.active();
            (inner.written_seq, a.file.clone(), a.seq)
        };
        let result = file
            .sync_data()
            .map_err(|e| self.fail("fsync", self.segment_path(seg_seq), e));
        {
            let mut s = lock(&self.sync_state);
            s.in_progress = false;
            if result.is_ok() {
                s.synced_seq = s.synced_seq.max(seq);
            }
            // A notify is a system call even with nobody waiting.
            if s.waiters > 0 {
                self.sync_done.notify_all();
            }
        }
        result?;
        self.cleanup(seq)
    }
    /// Deletes what a durable snapshot made obsolete: older snapshot files
    /// and the prefix of segments whose entries it covers (never the active
    /// one). The deletions need no directory fsync: if lost in a crash,
    /// recovery ignores the leftovers and deletes them again.
    fn cleanup(&self, synced_seq: u64) -> Result<(), WriteError> {
        let doomed = {
            let mut inner = lock(&self.inner);
            match inner.cleanup_after_seq {
                Some(s) if s <= synced_seq => {}
                _ => return Ok(()),
            }
            inner.cleanup_after_seq = None;
            let mut doomed = std::mem::take(&mut inner.obsolete_snapshots);
            let base = inner.base_index();
            let active_seq = inner.active().seq;
            while let Some(first) = inner.segments.values().next() {
                if first.seq == active_seq || first.max_entry_index > base {
                    break;
                }
                let seq = first.seq;
                let seg = inner.segments.remove(&seq).expect("first segment exists");
                doomed.push(seg.path);
            }
            doomed
        };
        for path in doomed {
            self.disk
                .remove_file(&path)
                .map_err(|e| self.fail("remove", path.clone(), e))?;
        }
        Ok(())
    }
}

/// Reads records of consecutive entries from segment files.
fn read_entries<F: DiskFile>(
    plan: Vec<(Arc<F>, PathBuf, LogIndex, Loc)>,
) -> Result<Vec<Entry>, StorageError> {
    let mut out = Vec::with_capacity(plan.len());
    let mut i = 0;
    let mut buf = Vec::new();
    while i < plan.len() {
        // Coalesce records adjacent in the same segment into one read.
        let mut j = i + 1;
        while j < plan.len()
            && plan[j].3.seq == plan[j - 1].3.seq
            && plan[j].3.offset == plan[j - 1].3.offset + plan[j - 1].3.len
        {
            j += 1;
        }
        let start = plan[i].3.offset as u64;
        let end = plan[j - 1].3.offset as u64 + plan[j - 1].3.len as u64;
        buf.resize((end - start) as usize, 0);
        let (file, path) = (&plan[i].0, &plan[i].1);
        file.read_exact_at(&mut buf, start)
            .map_err(|e| StorageError::Fatal(format!("read {} at {start}: {e}", path.display())))?;
        for (_, path, index, loc) in &plan[i..j] {
            let off = (loc.offset as u64 - start) as usize;
            let bad = |why: String| {
                StorageError::Fatal(format!(
                    "corruption in {} at offset {}: {why}",
                    path.display(),
                    loc.offset
                ))
            };
            let (ty, payload) = record::parse_exact(&buf[off..off + loc.len as usize])
                .map_err(|w| bad(w.to_string()))?;
            if ty != RecordType::Entry {
                return Err(bad("not an entry record".into()));
            }
            let e = record::decode_entry(payload).map_err(bad)?;
            if e.index != *index || e.term != loc.term {
                return Err(bad(format!(
                    "expected entry {index} of term {}, found {} of term {}",
                    loc.term, e.index, e.term
                )));
            }
            out.push(e);
        }
        i = j;
    }
    Ok(out)
}

/// Loads the most recent entries into the cache after recovery.
fn fill_cache<F: DiskFile>(inner: &mut Inner<F>, cache_bytes_max: u64) -> Result<(), StorageError> {
    // Walk back while the records' sizes fit the budget (an estimate: record
    // length is close to Entry::size_bytes); push_cache trims exactly.
    let mut budget = 0u64;
    let mut n = 0usize;
    for loc in inner.locs.iter().rev() {
        budget += u64::from(loc.len);
        if budget > cache_bytes_max {
            break;
        }
        n += 1;
    }
    let first = inner.last_index() + 1 - n as u64;
    let base = inner.base_index();
    let mut segs: BTreeMap<u64, (Arc<F>, PathBuf)> = BTreeMap::new();
    for (seq, s) in &inner.segments {
        segs.insert(*seq, (s.file.clone(), s.path.clone()));
    }
    let plan: Vec<_> = (first..=inner.last_index())
        .map(|i| {
            let loc = inner.locs[(i - base - 1) as usize];
            let (f, p) = segs[&u64::from(loc.seq)].clone();
            (f, p, i, loc)
        })
        .collect();
    let entries = read_entries(plan)?;
    for e in &entries {
        inner.push_cache(e, cache_bytes_max);
    }
    Ok(())
}

fn corrupt(file: PathBuf, offset: u64, reason: impl Into<String>) -> OpenError {
    OpenError::Corrupt {
        file,
        offset,
        reason: reason.into(),
    }
}

fn read_identity<D: Disk>(disk: &D, dir: &Path) -> Result<(u64, u64), OpenError> {
    let path = dir.join(IDENTITY_FILE);
    let f = disk.open(&path).map_err(open_io("open", &path))?;
    let b = read_all(&f).map_err(open_io("read", &path))?;
    record::decode_identity(&b).map_err(|(off, why)| corrupt(path, off, why))
}

impl<D: Disk> LogStore for Store<D> {
    fn initial_state(&self) -> Result<InitialState, StorageError> {
        let inner = lock(&self.inner);
        Ok(InitialState {
            hard_state: inner.hard_state,
            snapshot_meta: inner.snapshot.meta.clone(),
        })
    }

    fn first_index(&self) -> LogIndex {
        lock(&self.inner).base_index() + 1
    }

    fn last_index(&self) -> LogIndex {
        lock(&self.inner).last_index()
    }

    fn term(&self, index: LogIndex) -> Result<Term, StorageError> {
        let inner = lock(&self.inner);
        if index < inner.base_index() {
            return Err(StorageError::Compacted);
        }
        inner.term_at(index).ok_or(StorageError::Unavailable)
    }

    fn entries(
        &self,
        lo: LogIndex,
        hi: LogIndex,
        max_bytes: u64,
    ) -> Result<Vec<Entry>, StorageError> {
        let mut out: Vec<Entry> = Vec::new();
        let mut total = 0u64;
        // Returns true once the size limit stops the scan.
        let take = |e: Entry, out: &mut Vec<Entry>, total: &mut u64| -> bool {
            *total += e.size_bytes();
            if !out.is_empty() && *total > max_bytes {
                return true;
            }
            out.push(e);
            false
        };
        let mut next = lo;
        loop {
            let inner = lock(&self.inner);
            if next < inner.base_index() + 1 {
                return if out.is_empty() {
                    Err(StorageError::Compacted)
                } else {
                    Ok(out) // compacted meanwhile: return the consistent prefix
                };
            }
            if hi > inner.last_index() + 1 {
                return if out.is_empty() {
                    Err(StorageError::Unavailable)
                } else {
                    Ok(out)
                };
            }
            if let Some(prev) = out.last() {
                // The log changed under us: stop at the consistent prefix.
                if inner.term_at(prev.index) != Some(prev.term) {
                    return Ok(out);
                }
            }
            if next >= hi {
                return Ok(out);
            }
            let cache_first = inner.cache_first_index();
            if next >= cache_first {
                let start = (next - cache_first) as usize;
                let end = (hi - cache_first) as usize;
                for e in inner.cache.range(start..end) {
                    if take(e.clone(), &mut out, &mut total) {
                        break;
                    }
                }
                return Ok(out);
            }
            // Plan reads from segment files up to the cache, bounded by an
            // estimate of the size limit: every entry counts at least
            // OVERHEAD_BYTES, and its record is at most ~32 bytes larger
            // than its data.
            let until = hi.min(cache_first);
            let count_max = (max_bytes.saturating_sub(total) / Entry::OVERHEAD_BYTES + 1) as usize;
            let base = inner.base_index();
            let mut plan = Vec::new();
            let mut est = total;
            for i in next..until {
                let loc = inner.locs[(i - base - 1) as usize];
                let seg = &inner.segments[&u64::from(loc.seq)];
                plan.push((seg.file.clone(), seg.path.clone(), i, loc));
                est += u64::from(loc.len).saturating_sub(32);
                if plan.len() >= count_max || est > max_bytes {
                    break;
                }
            }
            drop(inner);
            let n = plan.len() as u64;
            for e in read_entries(plan)? {
                if take(e, &mut out, &mut total) {
                    return Ok(out);
                }
            }
            next += n;
        }
    }

    fn snapshot(&self) -> Result<Snapshot, StorageError> {
        Ok(lock(&self.inner).snapshot.clone())
    }
}
