//! Encodings of the values stored in the engine's tables.
//!
//! Every stored value that carries client data starts with a CRC32C that
//! covers the record's *key* as well as the rest of the value. redb checks
//! its own page checksums only when it repairs a file after a crash (or when
//! asked to check the whole file), not on every read; the per-record CRC is
//! what lets every read notice a damaged record, and notice a record that
//! was moved under another key, instead of serving it. Integers are
//! little-endian and fixed-width: cheap to encode on the hot path and easy to
//! read in a hex dump.
//!
//! See ARCHITECTURE.md (raftkv-mvcc, "On-disk layout") for the tables.

use bytes::Bytes;
use raft_core::{LogIndex, Membership, Term};
use raftkv_state::{KeyValue, Response};
use serde::{Deserialize, Serialize};

/// First 8 bytes of the `format` meta record: a wrong file is recognized.
pub(crate) const FORMAT_MAGIC: [u8; 8] = *b"RKVMVCC1";
/// Layout version of the tables; bump (and migrate or refuse) on change.
/// 2: a `changes` record lists every key its revision wrote (1: one key).
pub(crate) const FORMAT_VERSION: u32 = 2;

const CRC_BYTES: usize = 4;
/// CRC + create + mod + version.
const CURRENT_HEADER_BYTES: usize = CRC_BYTES + 8 + 8 + 8;
/// CRC + kind + create + version.
const HISTORY_HEADER_BYTES: usize = CRC_BYTES + 1 + 8 + 8;
/// CRC + last_seq + last_used_index.
const SESSION_HEADER_BYTES: usize = CRC_BYTES + 8 + 8;

const KIND_PUT: u8 = 1;
const KIND_TOMBSTONE: u8 = 2;

/// Why a stored record could not be decoded: the file is damaged (or was
/// written by a buggy build). Always fatal for the store.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// Shorter than its fixed header.
    #[error("{table} record of {len} bytes is shorter than its header")]
    TooShort { table: &'static str, len: u64 },
    /// The CRC32C over key and value does not match.
    #[error(
        "{table} record fails its checksum (stored {stored:#010x}, computed {computed:#010x})"
    )]
    Checksum {
        table: &'static str,
        stored: u32,
        computed: u32,
    },
    /// The checksum matched but a field is impossible (unknown kind byte,
    /// undecodable response, revisions out of order).
    #[error("{table} record is malformed: {detail}")]
    Malformed { table: &'static str, detail: String },
}

fn crc_parts(parts: &[&[u8]]) -> u32 {
    parts.iter().fold(0, |crc, p| crc32c::crc32c_append(crc, p))
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(b)
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    let mut b = [0u8; 4];
    b.copy_from_slice(&bytes[at..at + 4]);
    u32::from_le_bytes(b)
}

fn check_crc(table: &'static str, prefix: &[&[u8]], value: &[u8]) -> Result<(), RecordError> {
    let stored = u32_at(value, 0);
    // No allocation: this runs for every record read, sent and received.
    let computed = crc32c::crc32c_append(crc_parts(prefix), &value[CRC_BYTES..]);
    if stored != computed {
        return Err(RecordError::Checksum {
            table,
            stored,
            computed,
        });
    }
    Ok(())
}

fn seal(prefix: &[&[u8]], mut out: Vec<u8>) -> Vec<u8> {
    let crc = crc32c::crc32c_append(crc_parts(prefix), &out[CRC_BYTES..]);
    out[..CRC_BYTES].copy_from_slice(&crc.to_le_bytes());
    out
}

/// The live version of a key (table `current`, keyed by the key).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct CurrentRecord {
    pub(crate) create_revision: LogIndex,
    pub(crate) mod_revision: LogIndex,
    pub(crate) version: u64,
    pub(crate) value: Bytes,
}

impl CurrentRecord {
    pub(crate) fn encode(
        key: &[u8],
        create: LogIndex,
        modr: LogIndex,
        version: u64,
        value: &[u8],
    ) -> Vec<u8> {
        let mut out = Vec::with_capacity(CURRENT_HEADER_BYTES + value.len());
        out.extend_from_slice(&[0; CRC_BYTES]);
        out.extend_from_slice(&create.to_le_bytes());
        out.extend_from_slice(&modr.to_le_bytes());
        out.extend_from_slice(&version.to_le_bytes());
        out.extend_from_slice(value);
        seal(&[key], out)
    }

    pub(crate) fn decode(key: &[u8], bytes: &[u8]) -> Result<CurrentRecord, RecordError> {
        let (create_revision, mod_revision, version) = Self::check(key, bytes)?;
        Ok(CurrentRecord {
            create_revision,
            mod_revision,
            version,
            value: Bytes::copy_from_slice(&bytes[CURRENT_HEADER_BYTES..]),
        })
    }

    /// Checks a stored record without copying its value; returns its
    /// create revision, mod revision and version. The value is
    /// `bytes[CURRENT_HEADER_BYTES..]`.
    pub(crate) fn check(
        key: &[u8],
        bytes: &[u8],
    ) -> Result<(LogIndex, LogIndex, u64), RecordError> {
        const T: &str = "current";
        if bytes.len() < CURRENT_HEADER_BYTES {
            return Err(RecordError::TooShort {
                table: T,
                len: bytes.len() as u64,
            });
        }
        check_crc(T, &[key], bytes)?;
        let (create, modr, version) = (u64_at(bytes, 4), u64_at(bytes, 12), u64_at(bytes, 20));
        if create == 0 || create > modr || version == 0 {
            return Err(RecordError::Malformed {
                table: T,
                detail: format!("create {create} mod {modr} version {version}"),
            });
        }
        Ok((create, modr, version))
    }

    /// Length of the value of a stored record of `len` bytes.
    pub(crate) fn value_len(len: usize) -> usize {
        len.saturating_sub(CURRENT_HEADER_BYTES)
    }

    pub(crate) fn to_kv(&self, key: &[u8]) -> KeyValue {
        KeyValue {
            key: Bytes::copy_from_slice(key),
            value: self.value.clone(),
            create_revision: self.create_revision,
            mod_revision: self.mod_revision,
            version: self.version,
        }
    }
}

/// A superseded version of a key, or the tombstone of a delete (table
/// `history`, keyed by `(key, mod_revision)`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum HistoryRecord {
    /// The key had this value from `mod_revision` (the table key) until the
    /// next version.
    Put {
        create_revision: LogIndex,
        version: u64,
        value: Bytes,
    },
    /// The key was deleted at `mod_revision`.
    Tombstone,
}

impl HistoryRecord {
    pub(crate) fn encode_put(
        key: &[u8],
        rev: LogIndex,
        create: LogIndex,
        version: u64,
        value: &[u8],
    ) -> Vec<u8> {
        let mut out = Vec::with_capacity(HISTORY_HEADER_BYTES + value.len());
        out.extend_from_slice(&[0; CRC_BYTES]);
        out.push(KIND_PUT);
        out.extend_from_slice(&create.to_le_bytes());
        out.extend_from_slice(&version.to_le_bytes());
        out.extend_from_slice(value);
        seal(&[key, &rev.to_be_bytes()], out)
    }

    pub(crate) fn encode_tombstone(key: &[u8], rev: LogIndex) -> Vec<u8> {
        let mut out = Vec::with_capacity(HISTORY_HEADER_BYTES);
        out.extend_from_slice(&[0; CRC_BYTES]);
        out.push(KIND_TOMBSTONE);
        out.extend_from_slice(&[0; 16]);
        seal(&[key, &rev.to_be_bytes()], out)
    }

    pub(crate) fn decode(
        key: &[u8],
        rev: LogIndex,
        bytes: &[u8],
    ) -> Result<HistoryRecord, RecordError> {
        let (create_revision, version, put) = Self::check(key, rev, bytes)?;
        Ok(if put {
            HistoryRecord::Put {
                create_revision,
                version,
                value: Bytes::copy_from_slice(&bytes[HISTORY_HEADER_BYTES..]),
            }
        } else {
            HistoryRecord::Tombstone
        })
    }

    /// Checks a stored record without copying its value; returns create
    /// revision, version and whether it is a put (else a tombstone).
    pub(crate) fn check(
        key: &[u8],
        rev: LogIndex,
        bytes: &[u8],
    ) -> Result<(LogIndex, u64, bool), RecordError> {
        const T: &str = "history";
        if bytes.len() < HISTORY_HEADER_BYTES {
            return Err(RecordError::TooShort {
                table: T,
                len: bytes.len() as u64,
            });
        }
        check_crc(T, &[key, &rev.to_be_bytes()], bytes)?;
        let create_revision = u64_at(bytes, 5);
        let version = u64_at(bytes, 13);
        match bytes[4] {
            KIND_PUT if create_revision != 0 && create_revision <= rev && version != 0 => {
                Ok((create_revision, version, true))
            }
            KIND_TOMBSTONE if bytes.len() == HISTORY_HEADER_BYTES => Ok((0, 0, false)),
            kind => Err(RecordError::Malformed {
                table: T,
                detail: format!(
                    "kind {kind}, create {create_revision}, version {version} at revision {rev}"
                ),
            }),
        }
    }
}

/// Table `changes`: the keys a revision wrote (the revision-ordered log of
/// changes that compaction walks and a watch replays). One record per
/// revision; a command that changes several keys (a transaction, a
/// delete-range, a lease's revoke) lists them all, each once, in the order
/// it changed them: CRC, then for each key its length (u32) and its bytes.
pub(crate) fn encode_change<K: AsRef<[u8]>>(rev: LogIndex, keys: &[K]) -> Vec<u8> {
    let len: usize = keys.iter().map(|k| 4 + k.as_ref().len()).sum();
    let mut out = Vec::with_capacity(CRC_BYTES + len);
    out.extend_from_slice(&[0; CRC_BYTES]);
    for key in keys {
        let key = key.as_ref();
        // A key is at most `key_bytes_max` (far below 4 GiB): the cast is exact.
        out.extend_from_slice(&(key.len() as u32).to_le_bytes());
        out.extend_from_slice(key);
    }
    seal(&[&rev.to_le_bytes()], out)
}

/// The keys of a `changes` record, checked (CRC over the revision too, at
/// least one key, lengths that fit exactly).
pub(crate) fn decode_change(rev: LogIndex, bytes: &[u8]) -> Result<Vec<&[u8]>, RecordError> {
    const T: &str = "changes";
    if bytes.len() <= CRC_BYTES {
        return Err(RecordError::TooShort {
            table: T,
            len: bytes.len() as u64,
        });
    }
    check_crc(T, &[&rev.to_le_bytes()], bytes)?;
    let mut rest = &bytes[CRC_BYTES..];
    let mut keys = Vec::new();
    while !rest.is_empty() {
        let malformed = |detail: String| RecordError::Malformed { table: T, detail };
        if rest.len() < 4 {
            return Err(malformed(format!(
                "{} bytes left, a key length needs 4",
                rest.len()
            )));
        }
        let len = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        rest = &rest[4..];
        if len > rest.len() {
            return Err(malformed(format!(
                "key of {len} bytes, {} left",
                rest.len()
            )));
        }
        keys.push(&rest[..len]);
        rest = &rest[len..];
    }
    Ok(keys)
}

/// A client session (table `sessions`, keyed by client id).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct SessionRecord {
    pub(crate) last_seq: u64,
    pub(crate) last_used_index: LogIndex,
    pub(crate) response: Response,
}

impl SessionRecord {
    pub(crate) fn encode(&self, client_id: u64) -> Vec<u8> {
        let mut out = Vec::with_capacity(SESSION_HEADER_BYTES + 64);
        out.extend_from_slice(&[0; CRC_BYTES]);
        out.extend_from_slice(&self.last_seq.to_le_bytes());
        out.extend_from_slice(&self.last_used_index.to_le_bytes());
        let out = self.response_encode_after(out);
        seal(&[&client_id.to_le_bytes()], out)
    }

    fn response_encode_after(&self, mut out: Vec<u8>) -> Vec<u8> {
        out.extend_from_slice(&self.response.encode());
        out
    }

    pub(crate) fn decode(client_id: u64, bytes: &[u8]) -> Result<SessionRecord, RecordError> {
        const T: &str = "sessions";
        if bytes.len() < SESSION_HEADER_BYTES {
            return Err(RecordError::TooShort {
                table: T,
                len: bytes.len() as u64,
            });
        }
        check_crc(T, &[&client_id.to_le_bytes()], bytes)?;
        let response = Response::decode(&bytes[SESSION_HEADER_BYTES..]).map_err(|e| {
            RecordError::Malformed {
                table: T,
                detail: e.to_string(),
            }
        })?;
        Ok(SessionRecord {
            last_seq: u64_at(bytes, 4),
            last_used_index: u64_at(bytes, 12),
            response,
        })
    }

    /// The postcard bytes of the response, as KvStore's snapshot body holds
    /// them (the stored form minus its format-version byte).
    pub(crate) fn response_postcard(bytes: &[u8]) -> &[u8] {
        &bytes[SESSION_HEADER_BYTES + 1..]
    }
}

/// The `state` meta record: everything about the store that is not a key or
/// a session, rewritten by every transaction that applies entries.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateRecord {
    /// Index of the last applied entry (0: nothing applied).
    pub applied_index: LogIndex,
    /// Term of that entry (0 with index 0).
    pub applied_term: Term,
    /// The configuration of the last membership entry applied, or the one a
    /// snapshot carried; `None` until either happened (the bootstrap
    /// configuration, which the host knows, is then in force).
    pub membership: Option<Membership>,
    /// Reads below this revision are refused; history below it may be
    /// physically removed.
    pub compact_revision: LogIndex,
    /// Sum of the lengths of the live keys and values, in bytes.
    pub data_bytes: u64,
}

impl StateRecord {
    pub(crate) fn empty() -> StateRecord {
        StateRecord {
            applied_index: 0,
            applied_term: 0,
            membership: None,
            compact_revision: 0,
            data_bytes: 0,
        }
    }

    pub(crate) fn encode(&self) -> Vec<u8> {
        let out = vec![0; CRC_BYTES];
        // Serializing a plain derived struct into a Vec cannot fail.
        let out = postcard::to_extend(self, out).expect("postcard into a Vec cannot fail");
        seal(&[b"state"], out)
    }

    pub(crate) fn decode(bytes: &[u8]) -> Result<StateRecord, RecordError> {
        const T: &str = "meta";
        if bytes.len() < CRC_BYTES {
            return Err(RecordError::TooShort {
                table: T,
                len: bytes.len() as u64,
            });
        }
        check_crc(T, &[b"state"], bytes)?;
        let (state, rest) =
            postcard::take_from_bytes::<StateRecord>(&bytes[CRC_BYTES..]).map_err(|e| {
                RecordError::Malformed {
                    table: T,
                    detail: e.to_string(),
                }
            })?;
        if !rest.is_empty() || state.compact_revision > state.applied_index {
            return Err(RecordError::Malformed {
                table: T,
                detail: "trailing bytes or compact revision above applied index".into(),
            });
        }
        Ok(state)
    }
}

/// Largest application record ([`crate::MvccStore::apply_batch_with_app`]),
/// in bytes: it is held in memory, sent whole in a snapshot header, and
/// meant for small host state (an address book), not data.
pub const APP_BYTES_MAX: usize = 64 * 1024;

/// The `app` meta record: CRC32C (over `"app"` and the blob), then the
/// blob. Kept apart from the `state` record, which every applied batch
/// rewrites, so that the blob is written only when the host changes it.
pub(crate) fn encode_app(blob: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(CRC_BYTES + blob.len());
    out.extend_from_slice(&[0; CRC_BYTES]);
    out.extend_from_slice(blob);
    seal(&[b"app"], out)
}

/// Checks and strips the `app` meta record.
pub(crate) fn decode_app(bytes: &[u8]) -> Result<&[u8], RecordError> {
    const T: &str = "meta";
    if bytes.len() < CRC_BYTES {
        return Err(RecordError::TooShort {
            table: T,
            len: bytes.len() as u64,
        });
    }
    check_crc(T, &[b"app"], bytes)?;
    let blob = &bytes[CRC_BYTES..];
    if blob.len() > APP_BYTES_MAX {
        return Err(RecordError::Malformed {
            table: T,
            detail: format!(
                "application record of {} bytes exceeds {APP_BYTES_MAX}",
                blob.len()
            ),
        });
    }
    Ok(blob)
}

/// The `format` meta record.
pub(crate) fn encode_format() -> Vec<u8> {
    let mut out = FORMAT_MAGIC.to_vec();
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out
}

/// Checks the `format` meta record; the error says what was found.
pub(crate) fn check_format(bytes: &[u8]) -> Result<(), String> {
    if bytes.len() != 12 || bytes[..8] != FORMAT_MAGIC {
        return Err("not a raftkv-mvcc store (bad format magic)".into());
    }
    let version = u32_at(bytes, 8);
    if version != FORMAT_VERSION {
        return Err(format!(
            "layout version {version}, this build reads {FORMAT_VERSION}"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn current_round_trip_and_checksum_covers_key() {
        let bytes = CurrentRecord::encode(b"k", 3, 7, 2, b"value");
        let r = CurrentRecord::decode(b"k", &bytes).unwrap();
        assert_eq!((r.create_revision, r.mod_revision, r.version), (3, 7, 2));
        assert_eq!(&r.value[..], b"value");
        // The same bytes under another key are refused: a record moved by a
        // damaged page is not served as that key's value.
        assert!(matches!(
            CurrentRecord::decode(b"j", &bytes),
            Err(RecordError::Checksum { .. })
        ));
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x01;
            assert!(CurrentRecord::decode(b"k", &bad).is_err(), "flip at {i}");
        }
        assert!(matches!(
            CurrentRecord::decode(b"k", &bytes[..10]),
            Err(RecordError::TooShort { .. })
        ));
    }

    #[test]
    fn history_round_trip() {
        let put = HistoryRecord::encode_put(b"k", 9, 4, 3, b"old");
        assert_eq!(
            HistoryRecord::decode(b"k", 9, &put).unwrap(),
            HistoryRecord::Put {
                create_revision: 4,
                version: 3,
                value: Bytes::from_static(b"old")
            }
        );
        // Same record read at another revision: refused.
        assert!(HistoryRecord::decode(b"k", 8, &put).is_err());
        let tomb = HistoryRecord::encode_tombstone(b"k", 10);
        assert_eq!(
            HistoryRecord::decode(b"k", 10, &tomb).unwrap(),
            HistoryRecord::Tombstone
        );
    }

    #[test]
    fn session_and_state_round_trip() {
        let s = SessionRecord {
            last_seq: 5,
            last_used_index: 11,
            response: Response::Noop,
        };
        let bytes = s.encode(42);
        assert_eq!(SessionRecord::decode(42, &bytes).unwrap(), s);
        assert!(SessionRecord::decode(43, &bytes).is_err());
        let st = StateRecord {
            applied_index: 9,
            applied_term: 2,
            membership: Some(Membership::new_voters([1, 2, 3])),
            compact_revision: 4,
            data_bytes: 100,
        };
        assert_eq!(StateRecord::decode(&st.encode()).unwrap(), st);
        let c = encode_change(7, &[b"key".as_slice()]);
        assert_eq!(decode_change(7, &c).unwrap(), vec![b"key".as_slice()]);
        assert!(decode_change(8, &c).is_err());
        let several = encode_change(9, &[b"a".as_slice(), b"", b"ccc"]);
        assert_eq!(
            decode_change(9, &several).unwrap(),
            vec![b"a".as_slice(), b"", b"ccc"]
        );
        // A length running past the end is refused, not read past.
        let bad = seal(&[&9u64.to_le_bytes()], vec![0, 0, 0, 0, 200, 0, 0, 0, b'a']);
        assert!(matches!(
            decode_change(9, &bad),
            Err(RecordError::Malformed { .. })
        ));
        assert!(check_format(&encode_format()).is_ok());
        let app = encode_app(b"peers");
        assert_eq!(decode_app(&app).unwrap(), b"peers");
        for i in 0..app.len() {
            let mut bad = app.clone();
            bad[i] ^= 0x10;
            assert!(decode_app(&bad).is_err(), "flip at {i}");
        }
        assert!(
            check_format(b"RKVMVCC1\x01\0\0\0").is_err(),
            "layout 1 is refused"
        );
        assert!(check_format(b"RKVMVCC1\x03\0\0\0").is_err());
    }
}
