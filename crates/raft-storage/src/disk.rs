//! The disk seam: every file operation the store performs goes through
//! [`Disk`] and [`DiskFile`], so that the same code runs on the real
//! filesystem ([`RealDisk`]) and on the deterministic simulated disk
//! ([`SimDisk`](crate::SimDisk)) that can lose, tear and corrupt writes.
//!
//! The contract is POSIX's, and deliberately the weakest useful one:
//! - data written with [`DiskFile::write_all_at`] (or
//!   [`DiskFile::write_all_vectored_at`]) or a length change with
//!   [`DiskFile::set_len`] is durable only after [`DiskFile::sync_data`]
//!   returns `Ok`;
//! - creating, renaming or removing a directory entry is durable only after
//!   [`Disk::sync_dir`] on its directory returns `Ok`;
//! - a failed `sync_data` may have dropped the unsynced data for good (the
//!   kernel marks the pages clean): callers must treat it as fatal.

use std::fs::{self, File, OpenOptions};
use std::io::{self, IoSlice};
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
    /// Writes the concatenation of `bufs` at `offset`: the same effect (and
    /// the same durability and tearing rules) as one
    /// [`write_all_at`](DiskFile::write_all_at) of it, but the parts need
    /// not be copied together first. `bufs` may be modified (advanced past
    /// what a partial write took). The default concatenates and writes once.
    fn write_all_vectored_at(&self, bufs: &mut [IoSlice<'_>], offset: u64) -> io::Result<()> {
        let total = bufs.iter().map(|b| b.len()).sum();
        let mut all = Vec::with_capacity(total);
        for b in bufs.iter() {
            all.extend_from_slice(b);
        }
        self.write_all_at(&all, offset)
    }
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

/// Most iovecs one `pwritev` accepts (Linux's `UIO_MAXIOV`).
#[cfg(all(target_os = "linux", target_pointer_width = "64"))]
const IOV_MAX: usize = 1024;

#[cfg(all(target_os = "linux", target_pointer_width = "64"))]
extern "C" {
    // From the C library std already links. On 64-bit Linux `off_t` is i64.
    fn pwritev(
        fd: std::ffi::c_int,
        iov: *const IoSlice<'_>,
        iovcnt: std::ffi::c_int,
        offset: i64,
    ) -> isize;
}

/// `pwritev` until everything is written (std's `write_vectored_at` is not
/// stable yet). One system call for up to [`IOV_MAX`] parts, so a record's
/// payload goes from the caller's buffer to the page cache without an
/// intermediate copy.
#[cfg(all(target_os = "linux", target_pointer_width = "64"))]
fn pwritev_all(file: &File, mut bufs: &mut [IoSlice<'_>], mut offset: u64) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    // Skip leading empty parts so that a zero return always means "no
    // progress" rather than "nothing was asked".
    IoSlice::advance_slices(&mut bufs, 0);
    while !bufs.is_empty() {
        let count = bufs.len().min(IOV_MAX);
        let pos =
            i64::try_from(offset).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        // SAFETY: std documents `IoSlice` as ABI-compatible with `struct
        // iovec` on Unix; `bufs[..count]` are valid, initialized slices that
        // outlive the call, `count` fits a c_int (at most IOV_MAX), and the
        // descriptor belongs to `file`, which is open for the whole call.
        let n = unsafe {
            pwritev(
                file.as_raw_fd(),
                bufs.as_ptr(),
                count as std::ffi::c_int,
                pos,
            )
        };
        if n < 0 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(err);
        }
        if n == 0 {
            return Err(io::Error::from(io::ErrorKind::WriteZero));
        }
        // n > 0 and at most the bytes offered, so the casts are lossless.
        offset += n as u64;
        IoSlice::advance_slices(&mut bufs, n as usize);
    }
    Ok(())
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

    #[cfg(all(target_os = "linux", target_pointer_width = "64"))]
    fn write_all_vectored_at(&self, bufs: &mut [IoSlice<'_>], offset: u64) -> io::Result<()> {
        pwritev_all(&self.0, bufs, offset)
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.0.set_len(len)
    }

    fn sync_data(&self) -> io::Result<()> {
        self.0.sync_data()
    }
}
