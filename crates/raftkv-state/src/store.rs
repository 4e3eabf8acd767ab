//! The store itself: data, sessions, applying entries, reads.

use std::collections::{btree_map, BTreeMap};
use std::ops::Bound;

use bytes::Bytes;
use raft_core::{Entry, EntryPayload, LogIndex, StateMachine};
use serde::{Deserialize, Serialize};

use crate::command::{list_includes, list_scan_start};
use crate::command::{
    CasAction, CasResponse, ClientSession, Command, CommandError, Condition, DeleteResponse,
    GetResponse, KeyValue, ListResponse, PutResponse, ReadCommand, Response, WriteCommand, WriteOp,
};
use crate::config::{KvConfig, KvConfigError};
use crate::snapshot::{self, SnapshotError};

/// A key's stored state (the key itself is the map key).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Record {
    pub(crate) value: Bytes,
    pub(crate) create_revision: LogIndex,
    pub(crate) mod_revision: LogIndex,
    pub(crate) version: u64,
}

impl Record {
    fn to_kv(&self, key: &Bytes) -> KeyValue {
        KeyValue {
            key: key.clone(),
            value: self.value.clone(),
            create_revision: self.create_revision,
            mod_revision: self.mod_revision,
            version: self.version,
        }
    }
}

/// A client session's state: the last write applied for it and its answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SessionRecord {
    pub(crate) last_seq: u64,
    /// Log index of the last entry that used the session (for expiry and
    /// LRU eviction). Unique across sessions: an entry uses one session.
    pub(crate) last_used_index: LogIndex,
    /// The answer to `last_seq`, returned again to a retry.
    pub(crate) response: Response,
}

/// What the store knows about a client session (for tests and metrics).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionInfo {
    /// Highest sequence number applied for the client.
    pub last_seq: u64,
    /// Log index of the last entry that used the session.
    pub last_used_index: LogIndex,
}

/// Fatal errors of the state machine: not the command's fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StateError {
    /// The driver skipped entries: applying `entry_index` now would leave the
    /// entries in between unapplied and the replica diverged. A driver bug.
    #[error("entry {entry_index} applied after {applied_index}: entries skipped")]
    IndexGap {
        applied_index: LogIndex,
        entry_index: LogIndex,
    },
    /// A snapshot given to `restore` is invalid; the state was not changed.
    #[error("invalid snapshot: {0}")]
    Snapshot(#[from] SnapshotError),
}

/// The replicated key-value store. See the crate documentation.
#[derive(Clone, Debug)]
pub struct KvStore {
    pub(crate) config: KvConfig,
    pub(crate) applied_index: LogIndex,
    pub(crate) data: BTreeMap<Bytes, Record>,
    pub(crate) sessions: BTreeMap<u64, SessionRecord>,
    /// `last_used_index -> client_id`, the eviction order (oldest first).
    /// Derived from `sessions`; rebuilt on restore, never serialized.
    pub(crate) session_lru: BTreeMap<LogIndex, u64>,
    /// Sum of key and value lengths, in bytes. Derived, for metrics.
    pub(crate) data_bytes: u64,
}

impl KvStore {
    /// An empty store (applied index 0).
    pub fn new(config: KvConfig) -> Result<KvStore, KvConfigError> {
        config.validate()?;
        Ok(KvStore {
            config,
            applied_index: 0,
            data: BTreeMap::new(),
            sessions: BTreeMap::new(),
            session_lru: BTreeMap::new(),
            data_bytes: 0,
        })
    }

    pub fn config(&self) -> &KvConfig {
        &self.config
    }

    /// Index of the last applied entry (also [`StateMachine::applied_index`]).
    pub fn applied_index(&self) -> LogIndex {
        self.applied_index
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.data.len()
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// Sum of the lengths of all keys and values, in bytes.
    pub fn data_bytes(&self) -> u64 {
        self.data_bytes
    }

    /// Number of client sessions held.
    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    /// A client's session, if the store still holds it.
    pub fn session(&self, client_id: u64) -> Option<SessionInfo> {
        self.sessions.get(&client_id).map(|s| SessionInfo {
            last_seq: s.last_seq,
            last_used_index: s.last_used_index,
        })
    }

    /// The key's current state (a local read: as fresh as the applied index).
    pub fn get(&self, key: &[u8]) -> Option<KeyValue> {
        self.data
            .get_key_value(key)
            .map(|(key, record)| record.to_kv(key))
    }

    /// Up to `limit` keys with `prefix`, ascending (a local read). The limit
    /// and prefix are checked like a [`ReadCommand::List`]'s.
    pub fn list(&self, prefix: &[u8], limit: u64) -> Result<ListResponse, CommandError> {
        let read = ReadCommand::list(Bytes::copy_from_slice(prefix), limit);
        read.check(&self.config)?;
        Ok(self.list_unchecked(prefix, limit, None, None))
    }

    /// A checked [`ReadCommand::List`] (see it for `start` and `end`).
    fn list_unchecked(
        &self,
        prefix: &[u8],
        limit: u64,
        start: Option<&[u8]>,
        end: Option<&[u8]>,
    ) -> ListResponse {
        let from = list_scan_start(prefix, start);
        let mut matching = self
            .data
            .range::<[u8], _>((Bound::Included(from), Bound::Unbounded))
            .take_while(|(key, _)| list_includes(key, prefix, end));
        let mut kvs = Vec::new();
        // `limit <= list_limit_max` was checked, so this loop is bounded.
        for (key, record) in matching.by_ref() {
            kvs.push(record.to_kv(key));
            if kvs.len() as u64 == limit {
                break;
            }
        }
        let more = matching.next().is_some();
        ListResponse {
            revision: self.applied_index,
            kvs,
            more,
        }
    }

    /// Runs a read against the current state, exactly as applying it through
    /// the log would (the server uses this for ReadIndex and lease reads).
    pub fn execute_read(&self, read: &ReadCommand) -> Response {
        if let Err(e) = read.check(&self.config) {
            return Response::Rejected(e);
        }
        match read {
            ReadCommand::Get { key } => Response::Get(GetResponse {
                revision: self.applied_index,
                kv: self.get(key),
            }),
            ReadCommand::List {
                prefix,
                limit,
                start,
                end,
            } => Response::List(self.list_unchecked(
                prefix,
                *limit,
                start.as_deref(),
                end.as_deref(),
            )),
        }
    }

    /// Applies one entry; see [`StateMachine::apply`] on this type.
    fn apply_entry(&mut self, entry: &Entry) -> Result<Response, StateError> {
        let index = entry.index;
        if index <= self.applied_index {
            // Already applied, or covered by a restored snapshot: applying it
            // again would break exactly-once, so it is ignored.
            return Ok(Response::AlreadyApplied {
                applied_index: self.applied_index,
            });
        }
        if index != self.applied_index + 1 {
            return Err(StateError::IndexGap {
                applied_index: self.applied_index,
                entry_index: index,
            });
        }
        self.applied_index = index;
        // Every applied entry counts towards session expiry, whatever it is.
        self.expire_sessions(index);
        let response = match &entry.payload {
            EntryPayload::Blank | EntryPayload::Membership(_) => Response::Noop,
            EntryPayload::Normal(bytes) => match Command::decode(bytes) {
                Err(e) => Response::Rejected(CommandError::Undecodable(e)),
                Ok(Command::Read(read)) => self.execute_read(&read),
                Ok(Command::Write(write)) => self.apply_write_command(write, index),
            },
        };
        debug_assert_eq!(self.sessions.len(), self.session_lru.len());
        debug_assert!(self.sessions.len() as u64 <= self.config.sessions_max);
        Ok(response)
    }

    /// Evicts every session not used in the last `session_ttl_entries`
    /// entries before `index`: one last used at `L` survives up to and
    /// including entry `L + session_ttl_entries`.
    fn expire_sessions(&mut self, index: LogIndex) {
        while let Some((&last_used, &client_id)) = self.session_lru.first_key_value() {
            if last_used.saturating_add(self.config.session_ttl_entries) >= index {
                break;
            }
            self.session_lru.remove(&last_used);
            self.sessions.remove(&client_id);
        }
    }

    fn apply_write_command(&mut self, write: WriteCommand, index: LogIndex) -> Response {
        let Some(ClientSession { client_id, seq }) = write.session else {
            return self.apply_write(&write.op, index);
        };
        if let Some(session) = self.sessions.get_mut(&client_id) {
            // Any use keeps the session alive, retries included.
            let removed = self.session_lru.remove(&session.last_used_index);
            debug_assert_eq!(removed, Some(client_id));
            session.last_used_index = index;
            self.session_lru.insert(index, client_id);
            if seq == session.last_seq {
                // A retry of the last write: answer it again, apply nothing.
                return session.response.clone();
            }
            if seq < session.last_seq {
                return Response::Rejected(CommandError::StaleSequence {
                    client_id,
                    seq,
                    latest_seq: session.last_seq,
                });
            }
        }
        let response = self.apply_write(&write.op, index);
        let record = SessionRecord {
            last_seq: seq,
            last_used_index: index,
            response: response.clone(),
        };
        if self.sessions.insert(client_id, record).is_none() {
            self.session_lru.insert(index, client_id);
            // Over the cap: evict the least recently used. The session just
            // inserted has the highest index, so it is never the one evicted.
            while self.sessions.len() as u64 > self.config.sessions_max {
                let Some((_, oldest)) = self.session_lru.pop_first() else {
                    break;
                };
                self.sessions.remove(&oldest);
            }
        }
        response
    }

    fn apply_write(&mut self, op: &WriteOp, index: LogIndex) -> Response {
        if let Err(e) = op.check(&self.config) {
            return Response::Rejected(e);
        }
        match op {
            WriteOp::Put {
                key,
                value,
                prev_kv,
            } => {
                // One search of the map (a put is the most common command,
                // and on a large store each search is a chain of cache
                // misses); the stored key is kept, as `insert` would.
                let (create_revision, version, prev) = match self.data.entry(key.clone()) {
                    btree_map::Entry::Occupied(mut slot) => {
                        let old = slot.get_mut();
                        let prev = prev_kv.then(|| old.to_kv(key));
                        self.data_bytes -= old.value.len() as u64;
                        self.data_bytes += value.len() as u64;
                        old.value = value.clone();
                        old.mod_revision = index;
                        old.version += 1;
                        (old.create_revision, old.version, prev)
                    }
                    btree_map::Entry::Vacant(slot) => {
                        self.data_bytes += (key.len() + value.len()) as u64;
                        slot.insert(Record {
                            value: value.clone(),
                            create_revision: index,
                            mod_revision: index,
                            version: 1,
                        });
                        (index, 1, None)
                    }
                };
                Response::Put(PutResponse {
                    revision: index,
                    create_revision,
                    version,
                    prev,
                })
            }
            WriteOp::Delete { key, prev_kv } => {
                let removed = self.remove(key);
                Response::Delete(DeleteResponse {
                    revision: index,
                    deleted: removed.is_some(),
                    prev: removed.filter(|_| *prev_kv),
                })
            }
            WriteOp::CompareAndSwap {
                key,
                condition,
                action,
            } => {
                let current = self.data.get(key);
                let holds = match (condition, current) {
                    (Condition::Absent, current) => current.is_none(),
                    (Condition::ValueEquals(expected), Some(record)) => record.value == expected,
                    (Condition::ValueEquals(_), None) => false,
                    (Condition::ModRevisionEquals(rev), current) => {
                        current.map_or(0, |r| r.mod_revision) == *rev
                    }
                };
                if !holds {
                    return Response::CompareAndSwap(CasResponse {
                        revision: index,
                        succeeded: false,
                        current: current.map(|r| r.to_kv(key)),
                    });
                }
                let current_meta = current.map(|r| (r.create_revision, r.version));
                let current = match action {
                    CasAction::Put(value) => {
                        let (create_revision, version) = match current_meta {
                            Some((create_revision, version)) => (create_revision, version + 1),
                            None => (index, 1),
                        };
                        self.insert(key, value, create_revision, version, index);
                        self.get(key)
                    }
                    CasAction::Delete => {
                        self.remove(key);
                        None
                    }
                };
                Response::CompareAndSwap(CasResponse {
                    revision: index,
                    succeeded: true,
                    current,
                })
            }
        }
    }

    fn insert(
        &mut self,
        key: &Bytes,
        value: &Bytes,
        create_revision: LogIndex,
        version: u64,
        index: LogIndex,
    ) {
        let record = Record {
            value: value.clone(),
            create_revision,
            mod_revision: index,
            version,
        };
        self.data_bytes += value.len() as u64;
        match self.data.insert(key.clone(), record) {
            Some(old) => self.data_bytes -= old.value.len() as u64,
            None => self.data_bytes += key.len() as u64,
        }
    }

    fn remove(&mut self, key: &Bytes) -> Option<KeyValue> {
        let (key, record) = self.data.remove_entry(key)?;
        self.data_bytes -= (key.len() + record.value.len()) as u64;
        Some(record.to_kv(&key))
    }

    /// Checks every invariant of the state; `O(n)`. Called on restore and
    /// by tests; returns the first violation found.
    pub fn validate(&self) -> Result<(), &'static str> {
        let mut data_bytes = 0u64;
        for (key, r) in &self.data {
            if key.is_empty() {
                return Err("empty key");
            }
            if r.create_revision == 0 || r.create_revision > r.mod_revision {
                return Err("create_revision not in 1..=mod_revision");
            }
            if r.mod_revision > self.applied_index {
                return Err("mod_revision above the applied index");
            }
            // Each write has its own index, so a key cannot have been written
            // more often than there are entries since its creation.
            if r.version == 0 || r.version > r.mod_revision - r.create_revision + 1 {
                return Err("version inconsistent with revisions");
            }
            data_bytes += (key.len() + r.value.len()) as u64;
        }
        if data_bytes != self.data_bytes {
            return Err("data_bytes does not match the data");
        }
        if self.sessions.len() != self.session_lru.len() {
            return Err("session LRU index does not match the sessions");
        }
        for (client_id, s) in &self.sessions {
            if s.last_used_index == 0 || s.last_used_index > self.applied_index {
                return Err("session last used outside 1..=applied index");
            }
            if self.session_lru.get(&s.last_used_index) != Some(client_id) {
                return Err("session LRU index does not match the sessions");
            }
        }
        Ok(())
    }

    /// A deterministic 64-bit digest of the whole replicated state: applied
    /// index, every key with its value and revisions, every session with its
    /// cached answer. Two replicas that applied the same entries have the
    /// same digest; it is the FNV-1a hash of the snapshot body, computed
    /// without materializing it.
    pub fn digest(&self) -> u64 {
        snapshot::digest(self)
    }

    /// Replaces the state with a decoded and validated snapshot's.
    pub(crate) fn replace_from(&mut self, other: KvStore) {
        *self = other;
    }
}

impl StateMachine for KvStore {
    type Response = Response;
    type Error = StateError;

    /// Applies one committed entry.
    ///
    /// - Blank and membership entries only advance the applied index (and
    ///   age the sessions) and answer [`Response::Noop`].
    /// - Normal entries are decoded as a [`Command`] and applied; bytes that
    ///   do not decode are answered with
    ///   `Response::Rejected(CommandError::Undecodable(_))` and still advance
    ///   the applied index, identically on every replica.
    /// - An entry at or below the applied index is **ignored**: nothing
    ///   changes and the answer is [`Response::AlreadyApplied`]. A driver
    ///   replaying from an older point after restoring a snapshot is safe.
    /// - An entry beyond `applied_index + 1` is a fatal
    ///   [`StateError::IndexGap`] and changes nothing.
    fn apply(&mut self, entry: &Entry) -> Result<Response, StateError> {
        self.apply_entry(entry)
    }

    fn applied_index(&self) -> LogIndex {
        self.applied_index
    }

    /// See [`crate::snapshot`] for the format. Cannot fail.
    fn snapshot(&self) -> Result<Vec<u8>, StateError> {
        Ok(snapshot::encode(self))
    }

    /// Decodes, checks (magic, version, length, CRC32C, structure, every
    /// invariant of [`KvStore::validate`]) and only then replaces the state;
    /// on any error the state is unchanged. The store keeps its own config.
    fn restore(&mut self, data: &[u8]) -> Result<(), StateError> {
        let restored = snapshot::decode(data, self.config.clone())?;
        self.replace_from(restored);
        Ok(())
    }
}
