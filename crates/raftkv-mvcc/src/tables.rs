//! Table definitions and the read logic shared by write transactions (reads
//! through the log, the current value a write replaces) and read views.

use std::ops::Bound;
use std::path::Path;

use bytes::Bytes;
use raft_core::LogIndex;
use raftkv_state::{KeyValue, ListResponse};
use redb::{ReadableTable, TableDefinition};

use crate::codec::{CurrentRecord, HistoryRecord, RecordError};
use crate::error::Fault;

/// `"format"` → magic + layout version; `"state"` → [`crate::StateRecord`];
/// `"app"` → the host's application record (see `codec::encode_app`).
pub(crate) const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
/// key → the live version ([`CurrentRecord`]).
pub(crate) const CURRENT: TableDefinition<&[u8], &[u8]> = TableDefinition::new("current");
/// (key, mod_revision) → a superseded version or a tombstone.
pub(crate) const HISTORY: TableDefinition<(&[u8], u64), &[u8]> = TableDefinition::new("history");
/// revision → the key that revision wrote.
pub(crate) const CHANGES: TableDefinition<u64, &[u8]> = TableDefinition::new("changes");
/// client id → session ([`crate::codec::SessionRecord`]).
pub(crate) const SESSIONS: TableDefinition<u64, &[u8]> = TableDefinition::new("sessions");
/// last-used index → client id: the sessions in eviction order.
pub(crate) const SESSION_LRU: TableDefinition<u64, u64> = TableDefinition::new("session_lru");

pub(crate) const META_FORMAT: &str = "format";
pub(crate) const META_STATE: &str = "state";
/// The host's application record (absent: empty).
pub(crate) const META_APP: &str = "app";

/// Wraps a redb error with the file name.
pub(crate) fn engine<E: Into<redb::Error>>(file: &Path) -> impl FnOnce(E) -> Fault + '_ {
    move |e| Fault::Engine {
        file: file.to_path_buf(),
        source: e.into(),
    }
}

/// Wraps a record decoding error with the file name.
pub(crate) fn corrupt(file: &Path) -> impl FnOnce(RecordError) -> Fault + '_ {
    move |e| Fault::Corrupt {
        file: file.to_path_buf(),
        detail: e.to_string(),
    }
}

/// The live version of `key`.
pub(crate) fn get_current<T>(
    table: &T,
    key: &[u8],
    file: &Path,
) -> Result<Option<CurrentRecord>, Fault>
where
    T: ReadableTable<&'static [u8], &'static [u8]>,
{
    let Some(guard) = table.get(key).map_err(engine(file))? else {
        return Ok(None);
    };
    CurrentRecord::decode(key, guard.value())
        .map(Some)
        .map_err(corrupt(file))
}

/// The newest history record of `key` at a revision in `range` (`None`:
/// there is none), with that revision.
pub(crate) fn last_history_in<T>(
    table: &T,
    key: &[u8],
    below_or_at: Bound<LogIndex>,
    file: &Path,
) -> Result<Option<(LogIndex, HistoryRecord)>, Fault>
where
    T: ReadableTable<(&'static [u8], u64), &'static [u8]>,
{
    let upper = match below_or_at {
        Bound::Included(r) => Bound::Included((key, r)),
        Bound::Excluded(r) => Bound::Excluded((key, r)),
        Bound::Unbounded => Bound::Included((key, u64::MAX)),
    };
    let mut range = table
        .range((Bound::Included((key, 0u64)), upper))
        .map_err(engine(file))?;
    let Some(item) = range.next_back() else {
        return Ok(None);
    };
    let (k, v) = item.map_err(engine(file))?;
    let (stored_key, rev) = k.value();
    if stored_key != key {
        return Err(Fault::Corrupt {
            file: file.to_path_buf(),
            detail: "history range returned another key".into(),
        });
    }
    let record = HistoryRecord::decode(key, rev, v.value()).map_err(corrupt(file))?;
    Ok(Some((rev, record)))
}

/// `key` as of `revision` (the caller checked compaction and the applied
/// index): the live version if it was written at or before `revision`,
/// else the newest history record at or before it.
pub(crate) fn get_at<C, H>(
    current: &C,
    history: &H,
    key: &[u8],
    revision: LogIndex,
    file: &Path,
) -> Result<Option<KeyValue>, Fault>
where
    C: ReadableTable<&'static [u8], &'static [u8]>,
    H: ReadableTable<(&'static [u8], u64), &'static [u8]>,
{
    if let Some(cur) = get_current(current, key, file)? {
        if cur.mod_revision <= revision {
            return Ok(Some(cur.to_kv(key)));
        }
    }
    Ok(
        match last_history_in(history, key, Bound::Included(revision), file)? {
            Some((
                mod_revision,
                HistoryRecord::Put {
                    create_revision,
                    version,
                    value,
                },
            )) => Some(KeyValue {
                key: Bytes::copy_from_slice(key),
                value,
                create_revision,
                mod_revision,
                version,
            }),
            Some((_, HistoryRecord::Tombstone)) | None => None,
        },
    )
}

/// Up to `limit` live keys with `prefix` in `[start, end)`, ascending, as
/// KvStore lists them (the same scan start and stop rule, from
/// `raftkv_state`).
pub(crate) fn list_current<T>(
    table: &T,
    prefix: &[u8],
    limit: u64,
    start: Option<&[u8]>,
    end: Option<&[u8]>,
    revision: LogIndex,
    file: &Path,
) -> Result<ListResponse, Fault>
where
    T: ReadableTable<&'static [u8], &'static [u8]>,
{
    let from = raftkv_state::list_scan_start(prefix, start);
    let mut range = table
        .range((Bound::Included(from), Bound::Unbounded))
        .map_err(engine(file))?;
    let mut kvs = Vec::new();
    let mut more = false;
    // `limit <= list_limit_max` was checked by the caller: bounded.
    for item in range.by_ref() {
        let (k, v) = item.map_err(engine(file))?;
        let key = k.value();
        if !raftkv_state::list_includes(key, prefix, end) {
            break;
        }
        if kvs.len() as u64 == limit {
            more = true;
            break;
        }
        let record = CurrentRecord::decode(key, v.value()).map_err(corrupt(file))?;
        kvs.push(record.to_kv(key));
    }
    Ok(ListResponse {
        revision,
        kvs,
        more,
    })
}
