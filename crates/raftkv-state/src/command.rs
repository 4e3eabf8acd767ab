//! Commands proposed through the log and the responses applying them yields,
//! with their versioned binary encoding.
//!
//! Wire format of both [`Command`] and [`Response`]: one format-version byte
//! ([`FORMAT_VERSION`]) followed by the value in `postcard`. Every type here
//! is also `serde`-serializable so the HTTP server can map it to JSON.

use bytes::Bytes;
use raft_core::LogIndex;
use serde::{Deserialize, Serialize};

use crate::config::KvConfig;

/// Version byte leading every encoded [`Command`] and [`Response`]. Bump it
/// (and keep decoding the old one) when the encoding changes, so that a
/// mixed-version cluster rejects what it cannot read instead of misreading.
pub const FORMAT_VERSION: u8 = 1;

/// A client's session: the server proposes `(client_id, seq)` with each write
/// so that a retried write is applied exactly once. A client issues its
/// writes with strictly increasing `seq`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ClientSession {
    /// Chosen by the client, unique among live clients (a random u64).
    pub client_id: u64,
    /// The write's sequence number within the client.
    pub seq: u64,
}

/// A command, the payload of an `EntryPayload::Normal` entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Changes the store; deduplicated by its session if it has one.
    Write(WriteCommand),
    /// Reads through the log (linearizable by construction; the simulator
    /// uses these). Reads change nothing and are never deduplicated.
    Read(ReadCommand),
}

/// A write and the session it belongs to, if any.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriteCommand {
    /// `None`: not deduplicated (at-least-once if the client retries).
    pub session: Option<ClientSession>,
    pub op: WriteOp,
}

/// The write operations.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum WriteOp {
    /// Sets `key` to `value`, creating it if absent.
    Put {
        key: Bytes,
        value: Bytes,
        /// Return the previous key-value in the response.
        prev_kv: bool,
    },
    /// Removes `key` if present.
    Delete {
        key: Bytes,
        /// Return the removed key-value in the response.
        prev_kv: bool,
    },
    /// If `condition` holds for `key`'s current state, performs `action`.
    CompareAndSwap {
        key: Bytes,
        condition: Condition,
        action: CasAction,
    },
}

/// What a compare-and-swap compares.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Condition {
    /// The key does not exist.
    Absent,
    /// The key exists and its value is exactly this.
    ValueEquals(Bytes),
    /// The key's modification revision is this. An absent key has
    /// modification revision 0 (no entry has index 0), so
    /// `ModRevisionEquals(0)` means "absent".
    ModRevisionEquals(LogIndex),
}

/// What a successful compare-and-swap does.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CasAction {
    /// Sets the key to this value.
    Put(Bytes),
    /// Removes the key (a no-op if it is absent).
    Delete,
}

/// The read operations.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReadCommand {
    /// The key's current key-value, if any.
    Get { key: Bytes },
    /// Up to `limit` keys starting with `prefix` (empty prefix: every key),
    /// in ascending byte order. `1 <= limit <= list_limit_max`.
    ///
    /// `start` and `end` narrow it to the range `[start, end)` (etcd's
    /// `key`/`range_end`); `None` leaves that side open. Paging is `start`
    /// set just past the last key of the previous page (that key followed by
    /// a 0 byte). Each bound is at most `key_bytes_max + 1` bytes, so the
    /// bound just past any storable key can be expressed.
    List {
        prefix: Bytes,
        limit: u64,
        start: Option<Bytes>,
        end: Option<Bytes>,
    },
}

/// Where a [`ReadCommand::List`] scan begins: the later of `prefix` and
/// `start` (every key in the range is at or after both).
pub fn list_scan_start<'a>(prefix: &'a [u8], start: Option<&'a [u8]>) -> &'a [u8] {
    match start {
        Some(s) if s > prefix => s,
        _ => prefix,
    }
}

/// Whether `key`, met in an ascending scan from [`list_scan_start`], is
/// still in the listing; the first key that is not ends the scan (every
/// later key is past the prefix or at/after `end` too).
pub fn list_includes(key: &[u8], prefix: &[u8], end: Option<&[u8]>) -> bool {
    key.starts_with(prefix) && end.is_none_or(|e| key < e)
}

/// A key with its value and revisions, as returned to clients.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyValue {
    pub key: Bytes,
    pub value: Bytes,
    /// Log index of the write that created the key (since it was last absent).
    pub create_revision: LogIndex,
    /// Log index of the write that last changed the key.
    pub mod_revision: LogIndex,
    /// Number of writes since creation; 1 right after creation.
    pub version: u64,
}

/// What applying a command (or an entry) returns.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    Put(PutResponse),
    Delete(DeleteResponse),
    CompareAndSwap(CasResponse),
    Get(GetResponse),
    List(ListResponse),
    /// The command was refused; it changed nothing (but a write's session
    /// still records the refusal, so a retry gets the same answer).
    Rejected(CommandError),
    /// A blank or membership entry: nothing to answer.
    Noop,
    /// The entry's index is at or below the applied index: it was already
    /// applied (or covered by a restored snapshot) and is ignored.
    AlreadyApplied {
        applied_index: LogIndex,
    },
}

/// Answer to [`WriteOp::Put`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PutResponse {
    /// Log index of this write: the key's new `mod_revision`.
    pub revision: LogIndex,
    /// The key's `create_revision` after the write.
    pub create_revision: LogIndex,
    /// The key's `version` after the write.
    pub version: u64,
    /// The previous key-value, if asked for (`prev_kv`) and the key existed.
    pub prev: Option<KeyValue>,
}

/// Answer to [`WriteOp::Delete`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeleteResponse {
    /// Log index of this write.
    pub revision: LogIndex,
    /// Whether the key existed (and so was removed).
    pub deleted: bool,
    /// The removed key-value, if asked for (`prev_kv`) and the key existed.
    pub prev: Option<KeyValue>,
}

/// Answer to [`WriteOp::CompareAndSwap`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CasResponse {
    /// Log index of this command.
    pub revision: LogIndex,
    /// Whether the condition held and the action was performed.
    pub succeeded: bool,
    /// On success: the key after the action (`None` if deleted or still
    /// absent). On mismatch: the key's current state that failed the
    /// condition (`None` if absent), so the client can retry at once.
    pub current: Option<KeyValue>,
}

/// Answer to [`ReadCommand::Get`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GetResponse {
    /// The applied index the read observed.
    pub revision: LogIndex,
    pub kv: Option<KeyValue>,
}

/// Answer to [`ReadCommand::List`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListResponse {
    /// The applied index the read observed.
    pub revision: LogIndex,
    /// In ascending key order.
    pub kvs: Vec<KeyValue>,
    /// More keys with the prefix exist beyond the limit.
    pub more: bool,
}

/// Why a command was refused. Decided identically on every replica.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum CommandError {
    /// The entry's bytes are not a command this version understands.
    #[error("undecodable command: {0}")]
    Undecodable(DecodeError),
    /// Keys must not be empty (they would have no HTTP path).
    #[error("empty key")]
    EmptyKey,
    /// The key (or list prefix) is longer than `key_bytes_max`.
    #[error("key of {len} bytes exceeds the limit of {max} bytes")]
    KeyTooLarge { len: u64, max: u64 },
    /// The value (or a CAS compared value) is longer than `value_bytes_max`.
    #[error("value of {len} bytes exceeds the limit of {max} bytes")]
    ValueTooLarge { len: u64, max: u64 },
    /// A list limit of 0 or above `list_limit_max`.
    #[error("list limit {limit} is outside 1..={max}")]
    ListLimitOutOfRange { limit: u64, max: u64 },
    /// The session already applied a later write; this one is an old retry
    /// whose answer is no longer kept. It was not applied.
    #[error("stale sequence {seq} for client {client_id} (latest applied {latest_seq})")]
    StaleSequence {
        client_id: u64,
        seq: u64,
        latest_seq: u64,
    },
    /// A list's `start` or `end` is longer than `key_bytes_max + 1`.
    /// (Last, so that the encoding of the variants before it is unchanged.)
    #[error("list range bound of {len} bytes exceeds the limit of {max} bytes")]
    RangeBoundTooLarge { len: u64, max: u64 },
}

/// Why bytes could not be decoded as a [`Command`] or [`Response`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum DecodeError {
    /// No bytes at all (not even the version byte).
    #[error("empty input")]
    Empty,
    /// The leading format-version byte is not one this build reads.
    #[error("unsupported format version {version}")]
    UnsupportedVersion { version: u8 },
    /// The body is not valid postcard for the expected type.
    #[error("malformed body: {detail}")]
    Malformed { detail: String },
    /// A valid value followed by extra bytes (the encoding is canonical, so
    /// this is corruption or a mismatched type).
    #[error("{count} trailing bytes after the value")]
    TrailingBytes { count: u64 },
}

/// Encodes `value` as version byte + postcard.
fn encode_versioned<T: Serialize>(value: &T) -> Vec<u8> {
    encode_versioned_after(value, Vec::new())
}

/// Appends the version byte and `value` to `out`.
fn encode_versioned_after<T: Serialize>(value: &T, mut out: Vec<u8>) -> Vec<u8> {
    out.push(FORMAT_VERSION);
    // Serializing into a Vec cannot fail for these types: they are plain
    // derived structs and enums with no maps of unknown length, and a Vec
    // grows as needed.
    postcard::to_extend(value, out).expect("postcard into a Vec cannot fail")
}

fn decode_versioned<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T, DecodeError> {
    let (&version, body) = bytes.split_first().ok_or(DecodeError::Empty)?;
    if version != FORMAT_VERSION {
        return Err(DecodeError::UnsupportedVersion { version });
    }
    let (value, rest) =
        postcard::take_from_bytes::<T>(body).map_err(|e| DecodeError::Malformed {
            detail: e.to_string(),
        })?;
    if !rest.is_empty() {
        return Err(DecodeError::TrailingBytes {
            count: rest.len() as u64,
        });
    }
    Ok(value)
}

impl Command {
    /// A put without a session.
    pub fn put(key: impl Into<Bytes>, value: impl Into<Bytes>) -> Command {
        Command::Write(WriteCommand {
            session: None,
            op: WriteOp::Put {
                key: key.into(),
                value: value.into(),
                prev_kv: false,
            },
        })
    }

    /// A delete without a session.
    pub fn delete(key: impl Into<Bytes>) -> Command {
        Command::Write(WriteCommand {
            session: None,
            op: WriteOp::Delete {
                key: key.into(),
                prev_kv: false,
            },
        })
    }

    /// A compare-and-swap without a session.
    pub fn cas(key: impl Into<Bytes>, condition: Condition, action: CasAction) -> Command {
        Command::Write(WriteCommand {
            session: None,
            op: WriteOp::CompareAndSwap {
                key: key.into(),
                condition,
                action,
            },
        })
    }

    /// A read of one key through the log.
    pub fn get(key: impl Into<Bytes>) -> Command {
        Command::Read(ReadCommand::Get { key: key.into() })
    }

    /// A prefix listing through the log.
    pub fn list(prefix: impl Into<Bytes>, limit: u64) -> Command {
        Command::Read(ReadCommand::list(prefix, limit))
    }

    /// Attaches a session to a write. Reads carry no session (they change
    /// nothing, so retrying them is harmless); on a read this returns the
    /// command unchanged.
    pub fn with_session(self, client_id: u64, seq: u64) -> Command {
        match self {
            Command::Write(w) => Command::Write(WriteCommand {
                session: Some(ClientSession { client_id, seq }),
                op: w.op,
            }),
            read => read,
        }
    }

    /// Asks a put or delete to return the previous key-value; other
    /// commands are returned unchanged.
    pub fn with_prev_kv(mut self) -> Command {
        if let Command::Write(WriteCommand {
            op: WriteOp::Put { prev_kv, .. } | WriteOp::Delete { prev_kv, .. },
            ..
        }) = &mut self
        {
            *prev_kv = true;
        }
        self
    }

    /// The entry payload bytes: [`FORMAT_VERSION`] then postcard.
    pub fn encode(&self) -> Bytes {
        Bytes::from(encode_versioned(self))
    }

    /// Appends [`Command::encode`]'s output to `out` and returns it (for a
    /// caller that wraps the command in an envelope: one buffer, no copy).
    pub fn encode_after(&self, out: Vec<u8>) -> Vec<u8> {
        encode_versioned_after(self, out)
    }

    /// Decodes [`Command::encode`]'s output. Never panics on any input.
    pub fn decode(bytes: &[u8]) -> Result<Command, DecodeError> {
        decode_versioned(bytes)
    }

    /// Checks the command against the limits. The server calls this before
    /// proposing; [`KvStore`](crate::KvStore) calls it again when applying,
    /// so that every replica refuses the same commands.
    pub fn check(&self, config: &KvConfig) -> Result<(), CommandError> {
        match self {
            Command::Write(w) => w.op.check(config),
            Command::Read(r) => r.check(config),
        }
    }
}

fn check_key(key: &[u8], config: &KvConfig) -> Result<(), CommandError> {
    if key.is_empty() {
        return Err(CommandError::EmptyKey);
    }
    check_prefix(key, config)
}

fn check_prefix(prefix: &[u8], config: &KvConfig) -> Result<(), CommandError> {
    let len = prefix.len() as u64;
    if len > config.key_bytes_max {
        return Err(CommandError::KeyTooLarge {
            len,
            max: config.key_bytes_max,
        });
    }
    Ok(())
}

fn check_value(value: &[u8], config: &KvConfig) -> Result<(), CommandError> {
    let len = value.len() as u64;
    if len > config.value_bytes_max {
        return Err(CommandError::ValueTooLarge {
            len,
            max: config.value_bytes_max,
        });
    }
    Ok(())
}

impl WriteOp {
    /// The key the write touches.
    pub fn key(&self) -> &Bytes {
        match self {
            WriteOp::Put { key, .. }
            | WriteOp::Delete { key, .. }
            | WriteOp::CompareAndSwap { key, .. } => key,
        }
    }

    /// Checks the write against the limits (see [`Command::check`]).
    pub fn check(&self, config: &KvConfig) -> Result<(), CommandError> {
        check_key(self.key(), config)?;
        match self {
            WriteOp::Put { value, .. } => check_value(value, config),
            WriteOp::Delete { .. } => Ok(()),
            WriteOp::CompareAndSwap {
                condition, action, ..
            } => {
                if let Condition::ValueEquals(expected) = condition {
                    check_value(expected, config)?;
                }
                if let CasAction::Put(value) = action {
                    check_value(value, config)?;
                }
                Ok(())
            }
        }
    }
}

impl ReadCommand {
    /// A prefix listing without range bounds.
    pub fn list(prefix: impl Into<Bytes>, limit: u64) -> ReadCommand {
        ReadCommand::List {
            prefix: prefix.into(),
            limit,
            start: None,
            end: None,
        }
    }

    /// Checks the read against the limits (see [`Command::check`]).
    pub fn check(&self, config: &KvConfig) -> Result<(), CommandError> {
        match self {
            ReadCommand::Get { key } => check_key(key, config),
            ReadCommand::List {
                prefix,
                limit,
                start,
                end,
            } => {
                check_prefix(prefix, config)?;
                // `key_bytes_max` is at most ITEM_BYTES_CEILING: no overflow.
                let bound_max = config.key_bytes_max + 1;
                for bound in [start, end].into_iter().flatten() {
                    let len = bound.len() as u64;
                    if len > bound_max {
                        return Err(CommandError::RangeBoundTooLarge {
                            len,
                            max: bound_max,
                        });
                    }
                }
                if *limit == 0 || *limit > config.list_limit_max {
                    return Err(CommandError::ListLimitOutOfRange {
                        limit: *limit,
                        max: config.list_limit_max,
                    });
                }
                Ok(())
            }
        }
    }
}

impl Response {
    /// [`FORMAT_VERSION`] then postcard; for forwarding a write's answer
    /// from the leader to the follower that received the request.
    pub fn encode(&self) -> Vec<u8> {
        encode_versioned(self)
    }

    /// Decodes [`Response::encode`]'s output. Never panics on any input.
    pub fn decode(bytes: &[u8]) -> Result<Response, DecodeError> {
        decode_versioned(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_round_trip() {
        let cmds = [
            Command::put("a", "1").with_session(7, 3).with_prev_kv(),
            Command::delete("a"),
            Command::cas("k", Condition::ValueEquals("x".into()), CasAction::Delete),
            Command::cas(
                "k",
                Condition::ModRevisionEquals(9),
                CasAction::Put("v".into()),
            ),
            Command::get("g"),
            Command::list("p", 10),
        ];
        for c in cmds {
            let bytes = c.encode();
            assert_eq!(bytes[0], FORMAT_VERSION);
            assert_eq!(Command::decode(&bytes).unwrap(), c);
            // After a prefix: the prefix, then exactly the same bytes.
            let after = c.encode_after(vec![0xAB, 0xCD]);
            assert_eq!(after[..2], [0xAB, 0xCD]);
            assert_eq!(after[2..], bytes[..]);
        }
    }

    #[test]
    fn with_session_and_prev_kv_ignore_reads() {
        assert_eq!(Command::get("a").with_session(1, 1), Command::get("a"));
        assert_eq!(Command::list("a", 1).with_prev_kv(), Command::list("a", 1));
        let Command::Write(w) = Command::delete("a").with_session(4, 5).with_prev_kv() else {
            panic!("delete is a write");
        };
        assert_eq!(
            w.session,
            Some(ClientSession {
                client_id: 4,
                seq: 5
            })
        );
        assert_eq!(
            w.op,
            WriteOp::Delete {
                key: "a".into(),
                prev_kv: true
            }
        );
    }

    #[test]
    fn decode_errors_are_typed() {
        assert_eq!(Command::decode(&[]), Err(DecodeError::Empty));
        assert_eq!(
            Command::decode(&[9, 0, 0]),
            Err(DecodeError::UnsupportedVersion { version: 9 })
        );
        // Version ok, enum discriminant 200 is no variant.
        assert!(matches!(
            Command::decode(&[FORMAT_VERSION, 200]),
            Err(DecodeError::Malformed { .. })
        ));
        // Version ok, body truncated.
        let full = Command::put("key", "value").encode();
        assert!(matches!(
            Command::decode(&full[..full.len() - 1]),
            Err(DecodeError::Malformed { .. })
        ));
        // A valid command followed by junk.
        let mut extra = full.to_vec();
        extra.extend_from_slice(&[1, 2]);
        assert_eq!(
            Command::decode(&extra),
            Err(DecodeError::TrailingBytes { count: 2 })
        );
        // A length prefix claiming far more bytes than there are.
        let huge = [FORMAT_VERSION, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0x0f];
        assert!(matches!(
            Command::decode(&huge),
            Err(DecodeError::Malformed { .. })
        ));
    }

    #[test]
    fn response_round_trip() {
        let r = Response::Rejected(CommandError::StaleSequence {
            client_id: 1,
            seq: 2,
            latest_seq: 3,
        });
        assert_eq!(Response::decode(&r.encode()).unwrap(), r);
        assert_eq!(Response::decode(&[]), Err(DecodeError::Empty));
    }

    #[test]
    fn check_limits() {
        let config = KvConfig {
            key_bytes_max: 3,
            value_bytes_max: 4,
            list_limit_max: 5,
            ..KvConfig::default()
        };
        assert_eq!(Command::put("abc", "1234").check(&config), Ok(()));
        assert_eq!(
            Command::put("abcd", "1").check(&config),
            Err(CommandError::KeyTooLarge { len: 4, max: 3 })
        );
        assert_eq!(
            Command::put("a", "12345").check(&config),
            Err(CommandError::ValueTooLarge { len: 5, max: 4 })
        );
        assert_eq!(
            Command::delete("").check(&config),
            Err(CommandError::EmptyKey)
        );
        assert_eq!(Command::get("").check(&config), Err(CommandError::EmptyKey));
        assert_eq!(
            Command::cas(
                "a",
                Condition::ValueEquals("12345".into()),
                CasAction::Delete
            )
            .check(&config),
            Err(CommandError::ValueTooLarge { len: 5, max: 4 })
        );
        assert_eq!(
            Command::cas("a", Condition::Absent, CasAction::Put("12345".into())).check(&config),
            Err(CommandError::ValueTooLarge { len: 5, max: 4 })
        );
        assert_eq!(Command::list("", 5).check(&config), Ok(()));
        assert_eq!(
            Command::list("", 0).check(&config),
            Err(CommandError::ListLimitOutOfRange { limit: 0, max: 5 })
        );
        assert_eq!(
            Command::list("", 6).check(&config),
            Err(CommandError::ListLimitOutOfRange { limit: 6, max: 5 })
        );
        assert_eq!(
            Command::list("abcd", 1).check(&config),
            Err(CommandError::KeyTooLarge { len: 4, max: 3 })
        );
    }
}
