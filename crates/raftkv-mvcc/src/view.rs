//! Consistent read views: every read of the store goes through one.

use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use raft_core::LogIndex;
use raftkv_state::{
    CommandError, GetResponse, KeyValue, KvConfig, ListResponse, ReadCommand, Response, SessionInfo,
};
use redb::{
    Database, ReadOnlyTable, ReadTransaction, ReadableDatabase, ReadableTable,
    ReadableTableMetadata,
};
use serde::{Deserialize, Serialize};

use crate::codec::{decode_change, CurrentRecord, HistoryRecord, SessionRecord, StateRecord};
use crate::error::{Fault, ReadError};
use crate::store::{catch, DbHandle};
use crate::tables::{
    corrupt, engine, get_at, get_current, list_current, CHANGES, CURRENT, HISTORY, META,
    META_STATE, SESSIONS, SESSION_LRU,
};

/// One change of a key, as [`ReadView::history`] returns it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyEvent {
    /// The revision (log index) of the write.
    pub revision: LogIndex,
    pub kind: EventKind,
}

/// What a write did to a key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventKind {
    /// The key took this value (with its revisions and version).
    Put(KeyValue),
    /// The key was deleted.
    Delete,
}

/// A page of a key's history.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyHistory {
    /// The applied index the read observed.
    pub revision: LogIndex,
    /// Oldest readable revision at the time of the read.
    pub compact_revision: LogIndex,
    /// In ascending revision order.
    pub events: Vec<KeyEvent>,
    /// More events exist beyond the limit.
    pub more: bool,
}

/// What [`ReadView::verify`] counted (everything it counted was checked).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct VerifyReport {
    pub keys: u64,
    pub history_records: u64,
    pub changes: u64,
    pub sessions: u64,
    /// Bytes of stored values read.
    pub bytes: u64,
}

/// A consistent view of the store as of one committed transaction. Reads
/// through it never block, and are never blocked by, applying entries. It
/// keeps the engine open (and the pages it sees allocated) while it lives.
pub struct ReadView {
    // Field order is drop order: tables before the transaction, the
    // transaction before the database.
    pub(crate) current: ReadOnlyTable<&'static [u8], &'static [u8]>,
    pub(crate) history: ReadOnlyTable<(&'static [u8], u64), &'static [u8]>,
    pub(crate) txn: ReadTransaction,
    pub(crate) state: StateRecord,
    pub(crate) file: PathBuf,
    pub(crate) config: KvConfig,
    _db: DbHandle,
}

impl ReadView {
    pub(crate) fn new(
        db: Arc<Database>,
        file: PathBuf,
        config: KvConfig,
    ) -> Result<ReadView, Fault> {
        let txn = db.begin_read().map_err(engine(&file))?;
        let meta = txn.open_table(META).map_err(engine(&file))?;
        let state = {
            let guard = meta
                .get(META_STATE)
                .map_err(engine(&file))?
                .ok_or_else(|| Fault::Corrupt {
                    file: file.clone(),
                    detail: "the state record is missing".into(),
                })?;
            StateRecord::decode(guard.value()).map_err(corrupt(&file))?
        };
        drop(meta);
        Ok(ReadView {
            current: txn.open_table(CURRENT).map_err(engine(&file))?,
            history: txn.open_table(HISTORY).map_err(engine(&file))?,
            txn,
            state,
            file,
            config,
            _db: DbHandle::from_arc(db),
        })
    }

    /// The file this view reads.
    pub fn path(&self) -> &Path {
        &self.file
    }

    /// Applied index, term, membership, compact revision of this view.
    pub fn state(&self) -> &StateRecord {
        &self.state
    }

    /// Number of live keys.
    pub fn len(&self) -> Result<u64, Fault> {
        catch(&self.file, || self.len_inner())
    }

    fn len_inner(&self) -> Result<u64, Fault> {
        self.current.len().map_err(engine(&self.file))
    }

    pub fn is_empty(&self) -> Result<bool, Fault> {
        Ok(self.len()? == 0)
    }

    fn check_key(&self, key: &[u8]) -> Result<(), ReadError> {
        ReadCommand::Get {
            key: Bytes::copy_from_slice(key),
        }
        .check(&self.config)
        .map_err(ReadError::Rejected)
    }

    fn check_revision(&self, revision: LogIndex) -> Result<(), ReadError> {
        if revision > self.state.applied_index {
            return Err(ReadError::FutureRevision {
                requested: revision,
                applied_index: self.state.applied_index,
            });
        }
        if revision < self.state.compact_revision {
            return Err(ReadError::Compacted {
                requested: revision,
                compact_revision: self.state.compact_revision,
            });
        }
        Ok(())
    }

    /// The key's live version (what [`raftkv_state::KvStore::get`] returns).
    pub fn get(&self, key: &[u8]) -> Result<Option<KeyValue>, ReadError> {
        catch(&self.file, || self.get_inner(key))
    }

    fn get_inner(&self, key: &[u8]) -> Result<Option<KeyValue>, ReadError> {
        self.check_key(key)?;
        Ok(get_current(&self.current, key, &self.file)?.map(|r| r.to_kv(key)))
    }

    /// The key as it was right after the entry at `revision` applied.
    /// `compact_revision <= revision <= applied_index`, else
    /// [`ReadError::Compacted`] / [`ReadError::FutureRevision`].
    pub fn get_at(&self, key: &[u8], revision: LogIndex) -> Result<Option<KeyValue>, ReadError> {
        catch(&self.file, || self.get_at_inner(key, revision))
    }

    fn get_at_inner(&self, key: &[u8], revision: LogIndex) -> Result<Option<KeyValue>, ReadError> {
        self.check_key(key)?;
        self.check_revision(revision)?;
        Ok(get_at(
            &self.current,
            &self.history,
            key,
            revision,
            &self.file,
        )?)
    }

    /// Up to `limit` live keys with `prefix`, ascending, checked like a
    /// [`ReadCommand::List`].
    pub fn list(&self, prefix: &[u8], limit: u64) -> Result<ListResponse, ReadError> {
        catch(&self.file, || self.list_inner(prefix, limit))
    }

    fn list_inner(&self, prefix: &[u8], limit: u64) -> Result<ListResponse, ReadError> {
        ReadCommand::list(Bytes::copy_from_slice(prefix), limit).check(&self.config)?;
        Ok(list_current(
            &self.current,
            prefix,
            limit,
            None,
            None,
            self.state.applied_index,
            &self.file,
        )?)
    }

    /// The key's changes at revisions `>= from_revision`, ascending, at most
    /// `limit` (`1..=list_limit_max`). `from_revision` below the compact
    /// revision is [`ReadError::Compacted`]: the changes before it are gone.
    pub fn history(
        &self,
        key: &[u8],
        from_revision: LogIndex,
        limit: u64,
    ) -> Result<KeyHistory, ReadError> {
        catch(&self.file, || self.history_inner(key, from_revision, limit))
    }

    fn history_inner(
        &self,
        key: &[u8],
        from_revision: LogIndex,
        limit: u64,
    ) -> Result<KeyHistory, ReadError> {
        self.check_key(key)?;
        if limit == 0 || limit > self.config.list_limit_max {
            return Err(ReadError::Rejected(CommandError::ListLimitOutOfRange {
                limit,
                max: self.config.list_limit_max,
            }));
        }
        if from_revision < self.state.compact_revision {
            return Err(ReadError::Compacted {
                requested: from_revision,
                compact_revision: self.state.compact_revision,
            });
        }
        let file = &self.file;
        let mut events = Vec::new();
        let mut more = false;
        let range = self
            .history
            .range((
                Bound::Included((key, from_revision)),
                Bound::Included((key, u64::MAX)),
            ))
            .map_err(engine(file))?;
        for item in range {
            let (k, v) = item.map_err(engine(file))?;
            let (_, rev) = k.value();
            if events.len() as u64 == limit {
                more = true;
                break;
            }
            let kind = match HistoryRecord::decode(key, rev, v.value()).map_err(corrupt(file))? {
                HistoryRecord::Put {
                    create_revision,
                    version,
                    value,
                } => EventKind::Put(KeyValue {
                    key: Bytes::copy_from_slice(key),
                    value,
                    create_revision,
                    mod_revision: rev,
                    version,
                }),
                HistoryRecord::Tombstone => EventKind::Delete,
            };
            events.push(KeyEvent {
                revision: rev,
                kind,
            });
        }
        if !more {
            if let Some(cur) = get_current(&self.current, key, file)? {
                if cur.mod_revision >= from_revision {
                    if events.len() as u64 == limit {
                        more = true;
                    } else {
                        events.push(KeyEvent {
                            revision: cur.mod_revision,
                            kind: EventKind::Put(cur.to_kv(key)),
                        });
                    }
                }
            }
        }
        Ok(KeyHistory {
            revision: self.state.applied_index,
            compact_revision: self.state.compact_revision,
            events,
            more,
        })
    }

    /// Runs a read exactly as applying it through the log would (what
    /// [`raftkv_state::KvStore::execute_read`] answers).
    pub fn execute_read(&self, read: &ReadCommand) -> Result<Response, ReadError> {
        catch(&self.file, || self.execute_read_inner(read))
    }

    fn execute_read_inner(&self, read: &ReadCommand) -> Result<Response, ReadError> {
        if let Err(e) = read.check(&self.config) {
            return Ok(Response::Rejected(e));
        }
        Ok(match read {
            ReadCommand::Get { key } => Response::Get(GetResponse {
                revision: self.state.applied_index,
                kv: get_current(&self.current, key, &self.file)?.map(|r| r.to_kv(key)),
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
                self.state.applied_index,
                &self.file,
            )?),
        })
    }

    /// A client's session, if the store still holds it.
    pub fn session(&self, client_id: u64) -> Result<Option<SessionInfo>, Fault> {
        catch(&self.file, || self.session_inner(client_id))
    }

    fn session_inner(&self, client_id: u64) -> Result<Option<SessionInfo>, Fault> {
        let sessions = self.txn.open_table(SESSIONS).map_err(engine(&self.file))?;
        let Some(guard) = sessions.get(client_id).map_err(engine(&self.file))? else {
            return Ok(None);
        };
        let s = SessionRecord::decode(client_id, guard.value()).map_err(corrupt(&self.file))?;
        Ok(Some(SessionInfo {
            last_seq: s.last_seq,
            last_used_index: s.last_used_index,
        }))
    }

    /// Number of client sessions held.
    pub fn session_count(&self) -> Result<u64, Fault> {
        catch(&self.file, || self.session_count_inner())
    }

    fn session_count_inner(&self) -> Result<u64, Fault> {
        let sessions = self.txn.open_table(SESSIONS).map_err(engine(&self.file))?;
        sessions.len().map_err(engine(&self.file))
    }

    /// The same 64-bit digest as [`raftkv_state::KvStore::digest`] for the
    /// same applied entries: FNV-1a over the bytes of KvStore's snapshot
    /// body (postcard of applied index, live keys with value and revisions,
    /// sessions with their cached answers), computed by streaming the
    /// tables. History and compaction are not part of it (KvStore has
    /// neither). `O(n)`; for tests and the simulator.
    pub fn digest(&self) -> Result<u64, Fault> {
        catch(&self.file, || self.digest_inner())
    }

    fn digest_inner(&self) -> Result<u64, Fault> {
        let file = &self.file;
        let mut h = Fnv::new();
        h.varint(self.state.applied_index);
        h.varint(self.current.len().map_err(engine(file))?);
        for item in self.current.range(..).map_err(engine(file))? {
            let (k, v) = item.map_err(engine(file))?;
            let key = k.value();
            let r = CurrentRecord::decode(key, v.value()).map_err(corrupt(file))?;
            h.bytes(key);
            h.bytes(&r.value);
            h.varint(r.create_revision);
            h.varint(r.mod_revision);
            h.varint(r.version);
        }
        let sessions = self.txn.open_table(SESSIONS).map_err(engine(file))?;
        h.varint(sessions.len().map_err(engine(file))?);
        for item in sessions.range(..).map_err(engine(file))? {
            let (k, v) = item.map_err(engine(file))?;
            let client_id = k.value();
            let s = SessionRecord::decode(client_id, v.value()).map_err(corrupt(file))?;
            h.varint(client_id);
            h.varint(s.last_seq);
            h.varint(s.last_used_index);
            h.raw(SessionRecord::response_postcard(v.value()));
        }
        Ok(h.0)
    }

    /// Reads and checks every record of every table: checksums, revisions
    /// within the applied index, the data size, the session index. `O(n)`:
    /// for tests, a receiver, or an operator's check.
    pub fn verify(&self) -> Result<VerifyReport, Fault> {
        catch(&self.file, || self.verify_inner())
    }

    fn verify_inner(&self) -> Result<VerifyReport, Fault> {
        let file = &self.file;
        let bad = |detail: String| Fault::Corrupt {
            file: file.clone(),
            detail,
        };
        let applied = self.state.applied_index;
        let mut report = VerifyReport::default();
        let mut data_bytes = 0u64;
        for item in self.current.range(..).map_err(engine(file))? {
            let (k, v) = item.map_err(engine(file))?;
            let key = k.value();
            let r = CurrentRecord::decode(key, v.value()).map_err(corrupt(file))?;
            if r.mod_revision > applied {
                return Err(bad(format!(
                    "a key's revision {} > applied {applied}",
                    r.mod_revision
                )));
            }
            data_bytes += (key.len() + r.value.len()) as u64;
            report.keys += 1;
            report.bytes += v.value().len() as u64;
        }
        if data_bytes != self.state.data_bytes {
            return Err(bad(format!(
                "live data is {data_bytes} bytes, the state record says {}",
                self.state.data_bytes
            )));
        }
        for item in self.history.range(..).map_err(engine(file))? {
            let (k, v) = item.map_err(engine(file))?;
            let (key, rev) = k.value();
            HistoryRecord::decode(key, rev, v.value()).map_err(corrupt(file))?;
            if rev > applied {
                return Err(bad(format!("history revision {rev} > applied {applied}")));
            }
            report.history_records += 1;
            report.bytes += v.value().len() as u64;
        }
        let changes = self.txn.open_table(CHANGES).map_err(engine(file))?;
        for item in changes.range(..).map_err(engine(file))? {
            let (k, v) = item.map_err(engine(file))?;
            let rev = k.value();
            decode_change(rev, v.value()).map_err(corrupt(file))?;
            if rev > applied {
                return Err(bad(format!("change revision {rev} > applied {applied}")));
            }
            report.changes += 1;
        }
        let sessions = self.txn.open_table(SESSIONS).map_err(engine(file))?;
        let lru = self.txn.open_table(SESSION_LRU).map_err(engine(file))?;
        for item in sessions.range(..).map_err(engine(file))? {
            let (k, v) = item.map_err(engine(file))?;
            let client_id = k.value();
            let s = SessionRecord::decode(client_id, v.value()).map_err(corrupt(file))?;
            if s.last_used_index == 0 || s.last_used_index > applied {
                return Err(bad(format!(
                    "session {client_id} last used outside 1..={applied}"
                )));
            }
            let indexed = lru
                .get(s.last_used_index)
                .map_err(engine(file))?
                .map(|g| g.value());
            if indexed != Some(client_id) {
                return Err(bad(format!(
                    "session {client_id} missing from the eviction index"
                )));
            }
            report.sessions += 1;
        }
        if lru.len().map_err(engine(file))? != report.sessions {
            return Err(bad(
                "the eviction index has entries without a session".into()
            ));
        }
        Ok(report)
    }
}

/// FNV-1a fed with postcard's encoding of the values, written by hand so
/// the tables can be streamed (postcard itself needs the whole value).
struct Fnv(u64);

impl Fnv {
    fn new() -> Fnv {
        Fnv(0xcbf2_9ce4_8422_2325)
    }

    fn byte(&mut self, b: u8) {
        self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
    }

    fn raw(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.byte(b);
        }
    }

    /// postcard's unsigned varint (LEB128).
    fn varint(&mut self, mut v: u64) {
        loop {
            let low = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                self.byte(low);
                return;
            }
            self.byte(low | 0x80);
        }
    }

    /// postcard's byte string: varint length, then the bytes.
    fn bytes(&mut self, bytes: &[u8]) {
        self.varint(bytes.len() as u64);
        self.raw(bytes);
    }
}
