//! The disk seam: every file operation the store performs goes through
//! [`Disk`] and [`DiskFile`], so that the same code runs on the real
//! filesystem ([`RealDisk`]) and on the deterministic simulated disk
//! ([`SimDisk`](crate::SimDisk)) that can lose, tear and corrupt writes.
//!
//! The contract is POSIX's, and deliberately the weakest useful one:
//! - data written with [`DiskFile::write_all_at`] or a length change with
//!   [`DiskFile::set_len`] is durable only after [`DiskFile::sync_data`]
//!   returns `Ok`;
//! - creating, renaming or removing a directory entry is durable only after
//!   [`Disk::sync_dir`] on its directory returns `Ok`;
//! - a failed `sync_data` may have dropped the unsynced data for good (the
//!   kernel marks the pages clean): callers must treat it as fatal.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

/// A filesystem: opens files and changes directory entries.
pub trait Disk: Send + Sync + 'static {
    /// An open file handle. Positional I/O only, so one handle can be shared
    /// by a reader and the writer without a seek cursor.
    type File: DiskFile;

    /// Creates `dir` and its parents if missing.
    fn create_dir_all(&self, dir: &Path) -> io::Result<()>;
    /// Opens an existing file for reading and writing.
    fn open(&self, path: &Path) -> io::Result<Self::File>;
    /// Creates a file (truncating it if it exists) for reading and writing.
    fn create(&self, path: &Path) -> io::Result<Self::File>;
    /// Atomically replaces `to` with `from` (same directory).
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Removes a file.
    fn remove_file(&self, path: &Path) -> io::Result<()>;
    /// Names (not paths) of the entries of `dir`, sorted.
    fn list_dir(&self, dir: &Path) -> io::Result<Vec<String>>;
    /// Makes creations, renames and removals in `dir` durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
}

/// An open file.
pub trait DiskFile: Send + Sync + 'static {
    /// Current length in bytes.
    fn size(&self) -> io::Result<u64>;
    /// Fills `buf` from `offset`; fails with `UnexpectedEof` past the end.
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
    /// Writes all of `buf` at `offset`, growing the file if needed.
    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()>;
    /// Truncates or extends (with zeros) the file to `len` bytes.
    fn set_len(&self, len: u64) -> io::Result<()>;
    /// `fdatasync`: makes the file's data and length durable.
    fn sync_data(&self) -> io::Result<()>;
}

/// The real filesystem through `std::fs`.
#[derive(Clone, Copy, Debug, Default)]
pub struct RealDisk;

/// A file of the real filesystem.
#[derive(Debug)]
pub struct RealFile(File);

impl Disk for RealDisk {
    type File = RealFile;

    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        fs::create_dir_all(dir)
    }

    fn open(&self, path: &Path) -> io::Result<RealFile> {
        OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map(RealFile)
    }

    fn create(&self, path: &Path) -> io::Result<RealFile> {
        OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)
            .map(RealFile)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        fs::rename(from, to)
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        fs::remove_file(path)
    }

    fn list_dir(&self, dir: &Path) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in fs::read_dir(dir)? {
            let entry = entry?;
            if let Ok(name) = entry.file_name().into_string() {
                names.push(name);
            }
            // Names that are not UTF-8 cannot be ours; they are ignored.
        }
        names.sort();
        Ok(names)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        // On Linux, fsync on a directory descriptor opened read-only makes
        // its entries durable.
        File::open(dir)?.sync_all()
    }
}

impl DiskFile for RealFile {
    fn size(&self) -> io::Result<u64> {
        Ok(self.0.metadata()?.len())
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        FileExt::read_exact_at(&self.0, buf, offset)
    }

    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        FileExt::write_all_at(&self.0, buf, offset)
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.0.set_len(len)
    }

    fn sync_data(&self) -> io::Result<()> {
        self.0.sync_data()
    }
}
