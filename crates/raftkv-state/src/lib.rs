//! raftkv-state: the deterministic key-value state machine that every raftkv
//! replica (the real server and the simulator's nodes alike) runs on top of
//! `raft-core`.
//!
//! # Design
//!
//! **Determinism.** [`KvStore`] implements [`raft_core::StateMachine`]. Its
//! state after applying entries `1..=n` is a pure function of those entries
//! and the [`KvConfig`]: ordered `BTreeMap`s only (also what makes prefix
//! listing cheap), no clock, no randomness, no hash-map iteration. Anything
//! time-like is counted in log indexes.
//!
//! **Commands.** The server proposes a [`Command`] encoded with
//! [`Command::encode`] (a format-version byte, then `postcard`) as the bytes
//! of an `EntryPayload::Normal`. Writes ([`WriteOp`]): put, delete, and
//! compare-and-swap whose [`Condition`] is on the current value, on absence,
//! or on the key's modification revision, and whose [`CasAction`] puts or
//! deletes. Reads ([`ReadCommand`]): get and list-by-prefix, which the
//! simulator sends through the log; the server serves reads locally with
//! [`KvStore::execute_read`], [`KvStore::get`] and [`KvStore::list`], the
//! same code. Every type is `serde`-serializable, to map to HTTP/JSON.
//!
//! **Revisions.** The revision of a write is the log index of the entry that
//! applied it: unique, monotonic and identical on every replica without any
//! extra counter. Each key carries `create_revision` (index of the write that
//! created it since it was last absent), `mod_revision` (index of the last
//! write) and `version` (writes since creation, 1 on creation). An absent key
//! has modification revision 0, so `ModRevisionEquals(0)` means "absent".
//!
//! **Answers.** Applying an entry returns a [`Response`]. Commands that break
//! a limit, or bytes that do not decode, are answered with
//! [`Response::Rejected`] and a typed [`CommandError`], change nothing, and
//! still advance the applied index on every replica alike. A CAS mismatch is
//! not an error: [`CasResponse`] says `succeeded: false` and carries the
//! current key-value so the client can retry at once.
//!
//! **Exactly-once writes.** A write may carry a [`ClientSession`]
//! `(client_id, seq)`. The store keeps, per client, the highest `seq` applied
//! and its response. A write with that same `seq` is a retry: the recorded
//! response is returned and nothing is applied. A lower `seq` is answered
//! with [`CommandError::StaleSequence`] and not applied. A higher `seq` (or
//! an unknown client) is applied and recorded, refusals included, so a retry
//! of a refused write is refused again identically. The store does not
//! compare a retry's payload with the original's: reusing a `seq` for a
//! different write returns the first write's answer. Reads carry no session.
//!
//! **Session expiry** is deterministic: a session last used by entry `L` is
//! evicted before entry `L + session_ttl_entries + 1` is applied (every
//! applied entry counts, blank and membership entries too), and when a new
//! session would exceed `sessions_max` the least recently used one (lowest
//! last-use index, which is unique because an entry uses one session) is
//! evicted. A retry arriving after its session was evicted cannot be told
//! from a new client and is applied again, so the TTL must exceed how long
//! clients retry. Memory is bounded by `sessions_max` cached responses, each
//! at most one key-value pair (`key_bytes_max + value_bytes_max`).
//!
//! **Applying entries.** Blank and membership entries only advance the
//! applied index. Entries at or below the applied index are **ignored**
//! ([`Response::AlreadyApplied`], nothing changes), so a driver that replays
//! from an older point after restoring a snapshot never applies an entry
//! twice; an entry that would skip indexes is a fatal
//! [`StateError::IndexGap`].
//!
//! **Snapshots** ([`snapshot`] module) hold the applied index, every key and
//! every session (with its cached response) behind a magic, a format version,
//! a length and a CRC32C. `restore` checks all of it plus every invariant
//! ([`KvStore::validate`]) on a decoded copy before replacing the state, so a
//! bad snapshot changes nothing. The encoding is canonical (sorted, strictly
//! ascending on decode), and [`KvStore::digest`] is the FNV-1a hash of it,
//! streamed without allocating: two replicas that applied the same entries
//! have the same digest, which the simulator compares cheaply.
//!
//! **Limits** ([`KvConfig`]): key and prefix size, value size, list limit,
//! number of sessions, session TTL. [`Command::check`] is what the server
//! calls before proposing and what the store calls when applying. All
//! replicas must share one configuration, since it decides what is refused.
//!
//! ```
//! use raft_core::{Entry, EntryPayload, StateMachine};
//! use raftkv_state::{Command, KvConfig, KvStore, Response};
//!
//! let mut store = KvStore::new(KvConfig::default()).unwrap();
//! let cmd = Command::put("greeting", "hello").with_session(42, 1);
//! let entry = Entry { term: 1, index: 1, payload: EntryPayload::Normal(cmd.encode()) };
//! let Response::Put(put) = store.apply(&entry).unwrap() else { panic!() };
//! assert_eq!((put.revision, put.version), (1, 1));
//! assert_eq!(store.get(b"greeting").unwrap().value, "hello");
//! ```

mod command;
mod config;
pub mod snapshot;
mod store;

pub use command::{list_includes, list_scan_start};
pub use command::{
    CasAction, CasResponse, ClientSession, Command, CommandError, Condition, DecodeError,
    DeleteResponse, GetResponse, KeyValue, ListResponse, PutResponse, ReadCommand, Response,
    WriteCommand, WriteOp, FORMAT_VERSION,
};
pub use config::{KvConfig, KvConfigError, ITEM_BYTES_CEILING};
pub use snapshot::SnapshotError;
pub use store::{KvStore, SessionInfo, StateError};
