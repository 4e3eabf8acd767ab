//! The store on raft-storage's [`Disk`] seam (feature `sim`): the same code
//! on the real filesystem ([`raft_storage::RealDisk`]) or on the simulator's
//! [`raft_storage::SimDisk`], whose crashes lose or tear unsynced writes and
//! whose injected faults fail writes and fsyncs.
//!
//! Why here and not in raft-storage: the backend implements a redb trait,
//! and redb needs a newer Rust than the rest of the workspace; raft-storage
//! is under everything and must not pull it in. This crate already depends
//! on redb, so it takes raft-storage as an optional dependency instead.
//!
//! What a crash leaves: redb writes the pages of a commit made without
//! fsync (every [`MvccStore::apply_batch`](crate::MvccStore::apply_batch)) into the file, but it switches
//! its on-disk header only in a durable commit (a
//! [`MvccStore::checkpoint`](crate::MvccStore::checkpoint)). Recovery reads the header, so a reopened
//! store is at the last checkpoint that completed, or at the one in progress
//! when the crash came (if its header write survived), never at a commit
//! made without fsync. The tests check the weaker promise the host relies
//! on: reopened applied index >= the durable applied index before the crash,
//! and the data equals a replay of the log up to the reopened index.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use raft_storage::{Disk, DiskFile};
use redb::{BackendError, StorageBackend};

/// A redb [`StorageBackend`] over one file of a [`Disk`]. Every call maps
/// to one call of the file: reads, writes and `sync_data` with the disk's
/// own durability rules; an error (a failed fsync included) is returned to
/// redb, which fails the commit, and the store stops (a failed fsync is
/// never retried: the disk may have dropped the data).
pub struct DiskBackend<F: DiskFile> {
    file: F,
    path: PathBuf,
}

impl<F: DiskFile> DiskBackend<F> {
    /// The backend over an open file (`path` names it in errors).
    pub fn new(file: F, path: impl Into<PathBuf>) -> DiskBackend<F> {
        DiskBackend {
            file,
            path: path.into(),
        }
    }
}

impl<F: DiskFile> fmt::Debug for DiskBackend<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DiskBackend")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl<F: DiskFile> StorageBackend for DiskBackend<F> {
    fn len(&self) -> Result<u64, BackendError> {
        Ok(self.file.size()?)
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), BackendError> {
        Ok(self.file.read_exact_at(out, offset)?)
    }

    fn set_len(&self, len: u64) -> Result<(), BackendError> {
        Ok(self.file.set_len(len)?)
    }

    fn sync_data(&self) -> Result<(), BackendError> {
        Ok(self.file.sync_data()?)
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), BackendError> {
        Ok(self.file.write_all_at(data, offset)?)
    }
}

/// A backend behind a box, so that a store can create backends on a disk
/// whose type it does not name.
pub(crate) struct DynBackend(Box<dyn StorageBackend>);

impl fmt::Debug for DynBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl StorageBackend for DynBackend {
    fn len(&self) -> Result<u64, BackendError> {
        self.0.len()
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), BackendError> {
        self.0.read(offset, out)
    }

    fn set_len(&self, len: u64) -> Result<(), BackendError> {
        self.0.set_len(len)
    }

    fn sync_data(&self) -> Result<(), BackendError> {
        self.0.sync_data()
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), BackendError> {
        self.0.write(offset, data)
    }

    fn close(&self) -> Result<(), BackendError> {
        self.0.close()
    }
}

/// What a store on a disk needs of it, object-safe.
pub(crate) trait DiskOps: Send + Sync + 'static {
    /// Opens (or with `create`, creates or truncates) `path` as a backend.
    fn backend(&self, path: &Path, create: bool) -> io::Result<DynBackend>;
    fn exists(&self, path: &Path) -> io::Result<bool>;
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    fn remove_if_exists(&self, path: &Path) -> io::Result<()>;
    /// fsyncs the directory holding `file`.
    fn sync_parent(&self, file: &Path) -> io::Result<()>;
}

impl<D: Disk> DiskOps for D {
    fn backend(&self, path: &Path, create: bool) -> io::Result<DynBackend> {
        let file = if create {
            self.create(path)?
        } else {
            self.open(path)?
        };
        Ok(DynBackend(Box::new(DiskBackend::new(file, path))))
    }

    fn exists(&self, path: &Path) -> io::Result<bool> {
        match self.open(path) {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        Disk::rename(self, from, to)
    }

    fn remove_if_exists(&self, path: &Path) -> io::Result<()> {
        match self.remove_file(path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    fn sync_parent(&self, file: &Path) -> io::Result<()> {
        let dir = match file.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        self.sync_dir(dir)
    }
}

/// A shared handle on the disk of a store.
pub(crate) type SharedDisk = Arc<dyn DiskOps>;
