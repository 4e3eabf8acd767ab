//! The exclusive lock on a node's data directory.
//!
//! Two `raftkv serve` processes on one data directory would both append to
//! the same write-ahead log and corrupt it. So before anything else touches
//! the directory (the storage's bootstrap included), the server locks the
//! file `LOCK` in it with an exclusive advisory lock (`flock` on Unix,
//! through [`File::try_lock`]) and holds it for the life of the process;
//! the operating system releases it when the process exits, however it
//! exits (a `kill -9` too), so a stale lock is impossible.
//!
//! The holder writes its pid into the file after locking, so a second
//! process can say who holds it. The pid is informational only: the lock is
//! what counts, and the file itself is never removed (removing a lock file
//! while another process opens it is a classic race). A process that finds
//! the directory locked changes nothing in it: it opens `LOCK` without
//! truncating it, fails to lock, reads the pid and exits.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// The lock file's name in the data directory. raft-storage ignores files
/// it does not know, so the lock lives next to the WAL.
pub const LOCK_FILE: &str = "LOCK";

/// Why the data directory could not be locked.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another process holds the lock.
    #[error(
        "data directory {} is in use by another raftkv process ({}); stop it first",
        .dir.display(),
        describe_holder(*.pid)
    )]
    InUse {
        dir: PathBuf,
        /// The holder's pid as written in the lock file, if readable.
        pid: Option<u32>,
    },
    /// The directory or the lock file could not be created, opened, locked
    /// or written.
    #[error("cannot {op} {}: {source}", .path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

fn describe_holder(pid: Option<u32>) -> String {
    match pid {
        Some(pid) => format!("pid {pid}"),
        None => "pid unknown".to_string(),
    }
}

/// The held lock; dropping it (or the process exiting) releases it.
#[derive(Debug)]
pub struct DataDirLock {
    // Held only for its lock: the OS releases the lock when it is closed.
    _file: File,
    path: PathBuf,
}

impl DataDirLock {
    /// The lock file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Creates `dir` if needed and takes the exclusive lock on `dir/LOCK`
/// without waiting; writes this process's pid into it.
pub fn lock_data_dir(dir: &Path) -> Result<DataDirLock, LockError> {
    let io_err = |op: &'static str, path: &Path| {
        let path = path.to_path_buf();
        move |source| LockError::Io { op, path, source }
    };
    std::fs::create_dir_all(dir).map_err(io_err("create data directory", dir))?;
    let path = dir.join(LOCK_FILE);
    // No truncation: a process that loses the race must leave the
    // holder's pid (and everything else) as it found it.
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(io_err("open lock file", &path))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => {
            return Err(LockError::InUse {
                dir: dir.to_path_buf(),
                pid: read_pid(&mut file),
            })
        }
        Err(TryLockError::Error(e)) => return Err(io_err("lock", &path)(e)),
    }
    // Ours now: replace whatever pid a previous holder left.
    file.set_len(0)
        .and_then(|()| file.seek(SeekFrom::Start(0)))
        .and_then(|_| writeln!(file, "{}", std::process::id()))
        .map_err(io_err("write the pid to", &path))?;
    Ok(DataDirLock { _file: file, path })
}

/// The pid a holder wrote, if the file holds one (it may be empty for a
/// moment between the holder's lock and its write).
fn read_pid(file: &mut File) -> Option<u32> {
    let mut text = String::new();
    file.read_to_string(&mut text).ok()?;
    text.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_is_refused_with_the_holders_pid_and_changes_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("node-1");
        let held = lock_data_dir(&dir).unwrap();
        let content = std::fs::read_to_string(held.path()).unwrap();
        assert_eq!(content, format!("{}\n", std::process::id()));

        // flock locks belong to the open file description, so a second
        // open in the same process conflicts like another process would.
        let err = lock_data_dir(&dir).unwrap_err();
        assert!(
            matches!(&err, LockError::InUse { pid: Some(p), .. } if *p == std::process::id()),
            "{err:?}"
        );
        let msg = err.to_string();
        assert!(
            msg.contains("is in use by another raftkv process (pid "),
            "{msg}"
        );
        assert!(msg.contains("stop it first"), "{msg}");
        assert_eq!(std::fs::read_to_string(held.path()).unwrap(), content);

        // Released on drop: the next holder rewrites the pid.
        drop(held);
        std::fs::write(dir.join(LOCK_FILE), "stale 99999999\n").unwrap();
        let again = lock_data_dir(&dir).unwrap();
        assert_eq!(std::fs::read_to_string(again.path()).unwrap(), content);
    }

    #[test]
    fn an_unreadable_pid_is_reported_as_unknown() {
        let tmp = tempfile::tempdir().unwrap();
        let held = lock_data_dir(tmp.path()).unwrap();
        std::fs::write(held.path(), "").unwrap();
        let err = lock_data_dir(tmp.path()).unwrap_err();
        assert!(err.to_string().contains("(pid unknown)"), "{err}");
    }
}
