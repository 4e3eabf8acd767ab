//! [`SimDisk`]: an in-memory, deterministic disk for crash and fault tests
//! and for the cluster simulator.
//!
//! Model (per file and per directory, POSIX's weakest promises):
//! - every file has its *durable* content and a list of operations (writes,
//!   length changes) made since its last successful `sync_data`;
//! - every directory has its durable entries and a list of entry operations
//!   (create, rename, remove) made since its last successful `sync_dir`;
//! - [`SimDisk::crash`] keeps, for each file and each directory, a random
//!   prefix of its pending operations (possibly none, possibly all), and
//!   tears the first operation it drops at a random byte, if it is a write.
//!   Everything else is lost. Handles opened before the crash fail with EIO;
//! - [`SimDisk::corrupt`] flips one bit of a file, durable content included;
//! - [`SimDisk::fail_next_writes`] and [`SimDisk::fail_next_syncs`] inject
//!   ENOSPC or EIO. A failed write may have written a prefix of its data (a
//!   short write). A failed sync forgets the pending operations for good,
//!   while reads still see them, as Linux does after an fsync error.
//!
//! Directories themselves are created durable, and renames must stay within
//! one directory (the store never needs more).
//!
//! Everything is kept in `BTreeMap`s and random choices come from one seeded
//! generator, so a run is reproducible from its seed.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::disk::{Disk, DiskFile};
use raft_core::rng::SplitMix64;

/// Linux's errno for "no space left on device".
const ENOSPC: i32 = 28;
/// Linux's errno for "input/output error".
const EIO: i32 = 5;

/// Which error an injected fault returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultKind {
    /// ENOSPC: the disk is full.
    NoSpace,
    /// EIO: the device failed.
    Io,
}

impl FaultKind {
    fn error(self) -> io::Error {
        match self {
            FaultKind::NoSpace => io::Error::from_raw_os_error(ENOSPC),
            FaultKind::Io => io::Error::from_raw_os_error(EIO),
        }
    }
}

/// The kind of a mutating operation, as reported to the operation hook.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SimOpKind {
    Write,
    SetLen,
    SyncData,
    Create,
    Rename,
    Remove,
    SyncDir,
}

/// A mutating operation that just completed (successfully or not).
#[derive(Clone, Debug)]
pub struct SimOp {
    /// Sequence number of the operation on this disk, from 0.
    pub number: u64,
    pub kind: SimOpKind,
    pub path: PathBuf,
}

/// Handed to the operation hook: makes crashed copies of the disk as it is
/// right after the operation.
pub struct CrashFork<'a> {
    state: &'a SimState,
}

impl CrashFork<'_> {
    /// An independent disk holding what would survive a crash right now; the
    /// random choices of the crash come from `seed`.
    pub fn crashed(&self, seed: u64) -> SimDisk {
        let mut copy = self.state.clone_without_hook(seed);
        copy.crash_in_place();
        SimDisk {
            state: Arc::new(Mutex::new(copy)),
        }
    }
}

/// Called after every mutating operation with the disk's lock held: it must
/// not use the disk it is installed on (it may use crashed forks freely).
pub type SimHook = Box<dyn FnMut(&SimOp, &CrashFork<'_>) + Send>;

/// The simulated disk. Cloning gives another handle to the same disk.
#[derive(Clone)]
pub struct SimDisk {
    state: Arc<Mutex<SimState>>,
}

impl std::fmt::Debug for SimDisk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = self.lock();
        f.debug_struct("SimDisk")
            .field("generation", &s.generation)
            .field("ops", &s.op_count)
            .field("files", &s.inodes.len())
            .finish()
    }
}

/// An unsynced file operation. A write's data is
/// `Inode::pending_data[start..start + len]` (one buffer per file, reused
/// from sync to sync, instead of an allocation per write).
#[derive(Clone, Copy, Debug)]
enum FileOp {
    Write {
        offset: u64,
        start: usize,
        len: usize,
    },
    SetLen(u64),
}

impl FileOp {
    fn apply(&self, pending_data: &[u8], content: &mut Vec<u8>) {
        match *self {
            FileOp::Write { offset, start, len } => {
                write_into(content, offset, &pending_data[start..start + len])
            }
            FileOp::SetLen(len) => content.resize(len as usize, 0),
        }
    }
}

fn write_into(content: &mut Vec<u8>, offset: u64, data: &[u8]) {
    let offset = offset as usize;
    if offset == content.len() {
        // An append (the WAL's usual write): no zero-filling first.
        content.extend_from_slice(data);
        return;
    }
    let end = offset + data.len();
    if content.len() < end {
        content.resize(end, 0);
    }
    content[offset..end].copy_from_slice(data);
}

#[derive(Clone, Debug, Default)]
struct Inode {
    /// What reads see.
    data: Vec<u8>,
    /// What survives a crash for sure.
    durable: Vec<u8>,
    /// Operations since the last successful sync, in order.
    pending: Vec<FileOp>,
    /// The data of the pending writes, one after the other.
    pending_data: Vec<u8>,
}

impl Inode {
    /// Records an unsynced write of `data` at `offset` (after applying it
    /// to what reads see).
    fn push_write(&mut self, offset: u64, data: &[u8]) {
        write_into(&mut self.data, offset, data);
        let start = self.pending_data.len();
        self.pending_data.extend_from_slice(data);
        self.pending.push(FileOp::Write {
            offset,
            start,
            len: data.len(),
        });
    }

    /// Forgets the pending operations (keeping the buffers' memory).
    fn clear_pending(&mut self) {
        self.pending.clear();
        self.pending_data.clear();
    }
}

#[derive(Clone, Debug)]
enum DirOp {
    Link(String, u64),
    Unlink(String),
    Rename(String, String),
}

impl DirOp {
    fn apply(&self, entries: &mut BTreeMap<String, u64>) {
        match self {
            DirOp::Link(name, ino) => {
                entries.insert(name.clone(), *ino);
            }
            DirOp::Unlink(name) => {
                entries.remove(name);
            }
            DirOp::Rename(from, to) => {
                if let Some(ino) = entries.remove(from) {
                    entries.insert(to.clone(), ino);
                }
            }
        }
    }
}

#[derive(Clone, Debug, Default)]
struct SimDir {
    live: BTreeMap<String, u64>,
    durable: BTreeMap<String, u64>,
    pending: Vec<DirOp>,
}

/// raft-core's SplitMix64, so a seed means the same everywhere.
#[derive(Clone, Debug)]
struct Rng(SplitMix64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0.next_u64()
    }

    /// Uniform in `0..=max`.
    fn upto(&mut self, max: u64) -> u64 {
        if max == u64::MAX {
            return self.next();
        }
        self.next() % (max + 1)
    }
}

struct SimState {
    rng: Rng,
    /// Bumped by every crash; handles of an older generation fail.
    generation: u64,
    next_inode: u64,
    inodes: BTreeMap<u64, Inode>,
    dirs: BTreeMap<PathBuf, SimDir>,
    fail_writes: (u64, FaultKind),
    fail_syncs: (u64, FaultKind),
    op_count: u64,
    hook: Option<SimHook>,
}

impl SimState {
    fn clone_without_hook(&self, seed: u64) -> SimState {
        SimState {
            rng: Rng(SplitMix64::new(seed)),
            generation: self.generation,
            next_inode: self.next_inode,
            inodes: self.inodes.clone(),
            dirs: self.dirs.clone(),
            fail_writes: (0, FaultKind::Io),
            fail_syncs: (0, FaultKind::Io),
            op_count: 0,
            hook: None,
        }
    }

    fn crash_in_place(&mut self) {
        for inode in self.inodes.values_mut() {
            let n = inode.pending.len() as u64;
            let keep = self.rng.upto(n) as usize;
            for op in &inode.pending[..keep] {
                op.apply(&inode.pending_data, &mut inode.durable);
            }
            if let Some(&FileOp::Write { offset, start, len }) = inode.pending.get(keep) {
                let torn = self.rng.upto(len as u64) as usize;
                if torn > 0 {
                    let data = &inode.pending_data[start..start + torn];
                    write_into(&mut inode.durable, offset, data);
                }
            }
            inode.clear_pending();
            inode.data = inode.durable.clone();
        }
        for dir in self.dirs.values_mut() {
            let n = dir.pending.len() as u64;
            let keep = self.rng.upto(n) as usize;
            for op in &dir.pending[..keep] {
                op.apply(&mut dir.durable);
            }
            dir.pending.clear();
            dir.live = dir.durable.clone();
        }
        // Files no directory names any more are gone.
        let linked: std::collections::BTreeSet<u64> = self
            .dirs
            .values()
            .flat_map(|d| d.live.values().copied())
            .collect();
        self.inodes.retain(|ino, _| linked.contains(ino));
        self.generation += 1;
    }

    fn split(path: &Path) -> io::Result<(PathBuf, String)> {
        let parent = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "bad file name"))?;
        Ok((parent, name.to_string()))
    }

    fn dir_mut(&mut self, dir: &Path) -> io::Result<&mut SimDir> {
        let bytes = dir.as_os_str().as_encoded_bytes();
        let exact = self
            .dirs
            .keys()
            .position(|k| k.as_os_str().as_encoded_bytes() == bytes);
        match exact {
            Some(i) => self.dirs.values_mut().nth(i),
            None => self.dirs.get_mut(dir),
        }
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no such directory"))
    }

    /// Like [`split`](Self::split), without copying.
    fn split_ref(path: &Path) -> io::Result<(&Path, &str)> {
        // Fast path for the plain `dir/name` the store uses: the parent is
        // the same directory (component for component) and the name is the
        // same as `Path::parent` and `Path::file_name` give, without their
        // component parsing. Anything unusual takes the slow path.
        if let Some(s) = path.to_str() {
            if let Some((dir, name)) = s.rsplit_once('/') {
                if !dir.is_empty() && !name.is_empty() && name != "." && name != ".." {
                    return Ok((Path::new(dir), name));
                }
            }
        }
        let parent = path.parent().unwrap_or(Path::new(""));
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "bad file name"))?;
        Ok((parent, name))
    }

    /// The directory `dir`. Directories are few and usually named exactly
    /// as they were created, so a byte comparison finds them before the
    /// component-wise search of the map.
    fn dir(&self, dir: &Path) -> Option<&SimDir> {
        let bytes = dir.as_os_str().as_encoded_bytes();
        self.dirs
            .iter()
            .find(|(k, _)| k.as_os_str().as_encoded_bytes() == bytes)
            .map(|(_, d)| d)
            .or_else(|| self.dirs.get(dir))
    }

    fn lookup(&self, path: &Path) -> io::Result<u64> {
        let (dir, name) = Self::split_ref(path)?;
        self.dir(dir)
            .and_then(|d| d.live.get(name))
            .copied()
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no such file"))
    }

    /// Consumes one injected write fault, if any.
    fn write_fault(&mut self) -> Option<FaultKind> {
        if self.fail_writes.0 > 0 {
            self.fail_writes.0 -= 1;
            Some(self.fail_writes.1)
        } else {
            None
        }
    }

    fn sync_fault(&mut self) -> Option<FaultKind> {
        if self.fail_syncs.0 > 0 {
            self.fail_syncs.0 -= 1;
            Some(self.fail_syncs.1)
        } else {
            None
        }
    }

    fn after_op(&mut self, kind: SimOpKind, path: &Path) {
        let number = self.op_count;
        self.op_count += 1;
        if let Some(mut hook) = self.hook.take() {
            let op = SimOp {
                number,
                kind,
                path: path.to_path_buf(),
            };
            hook(&op, &CrashFork { state: self });
            self.hook = Some(hook);
        }
    }
}

impl SimDisk {
    /// An empty disk whose random choices (tears, short writes) derive from
    /// `seed`.
    pub fn new(seed: u64) -> Self {
        SimDisk {
            state: Arc::new(Mutex::new(SimState {
                rng: Rng(SplitMix64::new(seed)),
                generation: 0,
                next_inode: 1,
                inodes: BTreeMap::new(),
                dirs: BTreeMap::new(),
                fail_writes: (0, FaultKind::Io),
                fail_syncs: (0, FaultKind::Io),
                op_count: 0,
                hook: None,
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, SimState> {
        // A panic while holding the lock (a failing test assertion in a
        // hook) poisons it; the state itself is still consistent.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Simulates a power failure: keeps a random prefix of each file's and
    /// each directory's unsynced operations, tearing the next write, and
    /// invalidates every open handle.
    pub fn crash(&self) {
        self.lock().crash_in_place();
    }

    /// Like [`SimDisk::crash`] but on an independent copy; this disk is
    /// untouched.
    pub fn crashed_copy(&self, seed: u64) -> SimDisk {
        CrashFork {
            state: &self.lock(),
        }
        .crashed(seed)
    }

    /// Flips bit `bit` (0..8) of the byte at `offset` of the file at `path`,
    /// in what reads see and in what survives a crash.
    pub fn corrupt(&self, path: &Path, offset: u64, bit: u8) -> io::Result<()> {
        let mut s = self.lock();
        let ino = s.lookup(path)?;
        let inode = s
            .inodes
            .get_mut(&ino)
            .expect("directory names a live inode");
        let mask = 1u8 << (bit % 8);
        let off = offset as usize;
        if off >= inode.data.len() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "offset past end of file",
            ));
        }
        inode.data[off] ^= mask;
        if off < inode.durable.len() {
            inode.durable[off] ^= mask;
        }
        Ok(())
    }

    /// The next `count` mutating operations other than syncs (writes, length
    /// changes, creations, renames, removals) fail with `kind`.
    pub fn fail_next_writes(&self, count: u64, kind: FaultKind) {
        self.lock().fail_writes = (count, kind);
    }

    /// The next `count` syncs (`sync_data`, `sync_dir`) fail with `kind`.
    pub fn fail_next_syncs(&self, count: u64, kind: FaultKind) {
        self.lock().fail_syncs = (count, kind);
    }

    /// Installs (or with `None` removes) a hook called after every mutating
    /// operation. See [`SimHook`].
    pub fn set_hook(&self, hook: Option<SimHook>) {
        self.lock().hook = hook;
    }

    /// Number of mutating operations so far.
    pub fn op_count(&self) -> u64 {
        self.lock().op_count
    }

    /// The content of a file as reads see it.
    pub fn read_file(&self, path: &Path) -> io::Result<Vec<u8>> {
        let s = self.lock();
        let ino = s.lookup(path)?;
        Ok(s.inodes[&ino].data.clone())
    }

    /// Total bytes held by all files.
    pub fn used_bytes(&self) -> u64 {
        self.lock()
            .inodes
            .values()
            .map(|i| i.data.len() as u64)
            .sum()
    }
}

/// A handle to a file of a [`SimDisk`].
pub struct SimFile {
    state: Arc<Mutex<SimState>>,
    inode: u64,
    generation: u64,
    path: PathBuf,
}

impl SimFile {
    fn lock(&self) -> io::Result<MutexGuard<'_, SimState>> {
        let s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if s.generation != self.generation {
            return Err(io::Error::other("stale handle: the disk crashed"));
        }
        if !s.inodes.contains_key(&self.inode) {
            return Err(io::Error::from_raw_os_error(EIO));
        }
        Ok(s)
    }
}

impl Disk for SimDisk {
    type File = SimFile;

    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        let mut s = self.lock();
        let mut p = PathBuf::new();
        for c in dir.components() {
            p.push(c);
            s.dirs.entry(p.clone()).or_default();
        }
        Ok(())
    }

    fn open(&self, path: &Path) -> io::Result<SimFile> {
        let s = self.lock();
        let ino = s.lookup(path)?;
        Ok(SimFile {
            state: self.state.clone(),
            inode: ino,
            generation: s.generation,
            path: path.to_path_buf(),
        })
    }

    fn create(&self, path: &Path) -> io::Result<SimFile> {
        let mut s = self.lock();
        let (dir, name) = SimState::split(path)?;
        s.dir_mut(&dir)?;
        let result = if let Some(kind) = s.write_fault() {
            Err(kind.error())
        } else if let Ok(ino) = s.lookup(path) {
            // O_TRUNC on an existing file: a length change, not a new entry.
            let inode = s.inodes.get_mut(&ino).expect("linked inode exists");
            inode.data.clear();
            inode.pending.push(FileOp::SetLen(0));
            Ok(ino)
        } else {
            let ino = s.next_inode;
            s.next_inode += 1;
            s.inodes.insert(ino, Inode::default());
            let d = s.dir_mut(&dir)?;
            d.live.insert(name.clone(), ino);
            d.pending.push(DirOp::Link(name, ino));
            Ok(ino)
        };
        s.after_op(SimOpKind::Create, path);
        let ino = result?;
        Ok(SimFile {
            state: self.state.clone(),
            inode: ino,
            generation: s.generation,
            path: path.to_path_buf(),
        })
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut s = self.lock();
        let (dir, from_name) = SimState::split(from)?;
        let (to_dir, to_name) = SimState::split(to)?;
        if dir != to_dir {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "SimDisk renames only within a directory",
            ));
        }
        let result = if let Some(kind) = s.write_fault() {
            Err(kind.error())
        } else {
            s.lookup(from).and_then(|ino| {
                let d = s.dir_mut(&dir)?;
                d.live.remove(&from_name);
                d.live.insert(to_name.clone(), ino);
                d.pending.push(DirOp::Rename(from_name, to_name));
                Ok(())
            })
        };
        s.after_op(SimOpKind::Rename, to);
        result
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        let mut s = self.lock();
        let (dir, name) = SimState::split(path)?;
        let result = if let Some(kind) = s.write_fault() {
            Err(kind.error())
        } else {
            s.lookup(path).and_then(|_| {
                let d = s.dir_mut(&dir)?;
                d.live.remove(&name);
                d.pending.push(DirOp::Unlink(name));
                Ok(())
            })
        };
        // The inode stays until a crash collects it (open handles keep it
        // alive, as on a real filesystem).
        s.after_op(SimOpKind::Remove, path);
        result
    }

    fn list_dir(&self, dir: &Path) -> io::Result<Vec<String>> {
        let s = self.lock();
        let d = s
            .dir(dir)
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no such directory"))?;
        // BTreeMap keys are already sorted.
        Ok(d.live.keys().cloned().collect())
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut s = self.lock();
        let fault = s.sync_fault();
        let result = match s.dir_mut(dir) {
            Err(e) => Err(e),
            Ok(d) => {
                if let Some(kind) = fault {
                    // The pending entry changes will never be made durable.
                    d.pending.clear();
                    Err(kind.error())
                } else {
                    for op in std::mem::take(&mut d.pending) {
                        op.apply(&mut d.durable);
                    }
                    Ok(())
                }
            }
        };
        s.after_op(SimOpKind::SyncDir, dir);
        result
    }
}

impl DiskFile for SimFile {
    fn size(&self) -> io::Result<u64> {
        let s = self.lock()?;
        Ok(s.inodes[&self.inode].data.len() as u64)
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let s = self.lock()?;
        let data = &s.inodes[&self.inode].data;
        let start = offset as usize;
        let end = start
            .checked_add(buf.len())
            .ok_or_else(|| io::Error::from(io::ErrorKind::UnexpectedEof))?;
        if end > data.len() {
            return Err(io::Error::from(io::ErrorKind::UnexpectedEof));
        }
        buf.copy_from_slice(&data[start..end]);
        Ok(())
    }

    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        let mut s = self.lock()?;
        let result = match s.write_fault() {
            Some(kind) => {
                // A full disk may accept part of the write first.
                let part = if kind == FaultKind::NoSpace {
                    s.rng.upto(buf.len() as u64) as usize
                } else {
                    0
                };
                if part > 0 {
                    let inode = s.inodes.get_mut(&self.inode).expect("checked by lock()");
                    inode.push_write(offset, &buf[..part]);
                }
                Err(kind.error())
            }
            None => {
                let inode = s.inodes.get_mut(&self.inode).expect("checked by lock()");
                inode.push_write(offset, buf);
                Ok(())
            }
        };
        s.after_op(SimOpKind::Write, &self.path);
        result
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        let mut s = self.lock()?;
        let result = match s.write_fault() {
            Some(kind) => Err(kind.error()),
            None => {
                let inode = s.inodes.get_mut(&self.inode).expect("checked by lock()");
                inode.data.resize(len as usize, 0);
                inode.pending.push(FileOp::SetLen(len));
                Ok(())
            }
        };
        s.after_op(SimOpKind::SetLen, &self.path);
        result
    }

    fn sync_data(&self) -> io::Result<()> {
        let mut s = self.lock()?;
        let fault = s.sync_fault();
        let inode = s.inodes.get_mut(&self.inode).expect("checked by lock()");
        let result = match fault {
            Some(kind) => {
                // fsyncgate: the kernel drops the dirty pages' error state;
                // the data stays readable but will never be written.
                inode.clear_pending();
                Err(kind.error())
            }
            None => {
                for op in &inode.pending {
                    op.apply(&inode.pending_data, &mut inode.durable);
                }
                inode.clear_pending();
                Ok(())
            }
        };
        s.after_op(SimOpKind::SyncData, &self.path);
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn synced_data_survives_unsynced_may_not() {
        let disk = SimDisk::new(1);
        let dir = Path::new("/d");
        disk.create_dir_all(dir).unwrap();
        let f = disk.create(&dir.join("a")).unwrap();
        f.write_all_at(b"hello", 0).unwrap();
        f.sync_data().unwrap();
        disk.sync_dir(dir).unwrap();
        f.write_all_at(b" world", 5).unwrap();
        disk.crash();
        let data = disk.read_file(&dir.join("a")).unwrap();
        assert!(data.starts_with(b"hello"));
        assert!(b"hello world".starts_with(&data));
        assert!(f.size().is_err(), "old handles are stale after a crash");
    }

    #[test]
    fn unsynced_create_can_vanish_and_crash_is_deterministic() {
        let mut vanished = 0;
        for seed in 0..32 {
            let run = |seed| {
                let disk = SimDisk::new(seed);
                disk.create_dir_all(Path::new("/d")).unwrap();
                let f = disk.create(Path::new("/d/x")).unwrap();
                f.write_all_at(&[7u8; 100], 0).unwrap();
                f.sync_data().unwrap();
                disk.crash();
                disk.read_file(Path::new("/d/x")).ok()
            };
            let a = run(seed);
            assert_eq!(a, run(seed));
            match a {
                None => vanished += 1,
                Some(data) => assert_eq!(data, vec![7u8; 100]),
            }
        }
        assert!(vanished > 0 && vanished < 32);
    }

    #[test]
    fn failed_sync_loses_the_data_for_good() {
        let disk = SimDisk::new(3);
        disk.create_dir_all(Path::new("/d")).unwrap();
        let f = disk.create(Path::new("/d/x")).unwrap();
        f.sync_data().unwrap();
        disk.sync_dir(Path::new("/d")).unwrap();
        f.write_all_at(b"abc", 0).unwrap();
        disk.fail_next_syncs(1, FaultKind::Io);
        assert_eq!(f.sync_data().unwrap_err().raw_os_error(), Some(EIO));
        f.sync_data().unwrap();
        disk.crash();
        assert_eq!(disk.read_file(Path::new("/d/x")).unwrap(), b"");
    }

    #[test]
    fn corrupt_flips_one_bit() {
        let disk = SimDisk::new(3);
        disk.create_dir_all(Path::new("/d")).unwrap();
        let f = disk.create(Path::new("/d/x")).unwrap();
        f.write_all_at(&[0u8; 4], 0).unwrap();
        disk.corrupt(Path::new("/d/x"), 2, 3).unwrap();
        assert_eq!(disk.read_file(Path::new("/d/x")).unwrap(), [0, 0, 8, 0]);
    }
}
