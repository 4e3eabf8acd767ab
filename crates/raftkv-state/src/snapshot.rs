//! Snapshot format and the state digest.
//!
//! A snapshot is a header followed by a body:
//!
//! | bytes | field                                          |
//! |-------|------------------------------------------------|
//! | 4     | magic `RKVS`                                   |
//! | 1     | format version ([`SNAPSHOT_FORMAT_VERSION`])   |
//! | 8     | body length, little endian                     |
//! | 4     | CRC32C of the body, little endian              |
//! | n     | body: postcard of `(applied_index, [(key, record)], [(client_id, session)])` |
//!
//! Keys and client ids are written in ascending order and the decoder
//! requires strictly ascending order, so every state has exactly one
//! encoding. The [digest](crate::KvStore::digest) is the FNV-1a hash of that
//! canonical body.

use std::collections::BTreeMap;

use bytes::Bytes;
use raft_core::LogIndex;
use serde::ser::Serializer;
use serde::{Deserialize, Serialize};

use crate::config::KvConfig;
use crate::store::{KvStore, Record, SessionRecord};

/// Leading bytes of every snapshot, to recognize a wrong file at once.
pub const SNAPSHOT_MAGIC: [u8; 4] = *b"RKVS";
/// Version of the snapshot layout; bump when it changes.
pub const SNAPSHOT_FORMAT_VERSION: u8 = 1;
const HEADER_BYTES: usize = 4 + 1 + 8 + 4;

/// Why a snapshot was refused by `restore`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotError {
    /// Shorter than the fixed header.
    #[error("snapshot of {len} bytes is shorter than its header")]
    TooShort { len: u64 },
    /// The first four bytes are not [`SNAPSHOT_MAGIC`]: not a raftkv snapshot.
    #[error("bad magic: not a raftkv-state snapshot")]
    BadMagic,
    /// A layout version this build cannot read.
    #[error("unsupported snapshot format version {version}")]
    UnsupportedVersion { version: u8 },
    /// The header's body length does not match the bytes that follow
    /// (truncated or padded).
    #[error("body length {declared} in header but {actual} bytes follow")]
    LengthMismatch { declared: u64, actual: u64 },
    /// The body does not match its CRC32C: corrupted.
    #[error("checksum mismatch: header says {expected:#010x}, body has {actual:#010x}")]
    ChecksumMismatch { expected: u32, actual: u32 },
    /// The body passed the checksum but is not valid postcard for the
    /// expected layout (a writer bug or a version mix-up).
    #[error("malformed body: {detail}")]
    Malformed { detail: String },
    /// The body decoded but breaks an invariant of the store.
    #[error("inconsistent state: {reason}")]
    Inconsistent { reason: &'static str },
}

/// Serializes a map's pairs as a sequence of tuples, in key order.
struct Pairs<'a, K, V>(&'a BTreeMap<K, V>);

impl<K: Serialize, V: Serialize> Serialize for Pairs<'_, K, V> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.0.iter())
    }
}

#[derive(Serialize)]
struct BodyRef<'a> {
    applied_index: LogIndex,
    data: Pairs<'a, Bytes, Record>,
    sessions: Pairs<'a, u64, SessionRecord>,
}

#[derive(Deserialize)]
struct Body {
    applied_index: LogIndex,
    data: Vec<(Bytes, Record)>,
    sessions: Vec<(u64, SessionRecord)>,
}

fn body_ref(store: &KvStore) -> BodyRef<'_> {
    BodyRef {
        applied_index: store.applied_index,
        data: Pairs(&store.data),
        sessions: Pairs(&store.sessions),
    }
}

/// Encodes the whole state.
pub(crate) fn encode(store: &KvStore) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_BYTES + store.data_bytes as usize + 64);
    out.extend_from_slice(&SNAPSHOT_MAGIC);
    out.push(SNAPSHOT_FORMAT_VERSION);
    // Body length and CRC, filled in once the body is written.
    out.extend_from_slice(&[0; 12]);
    // Serializing plain derived types into a Vec cannot fail: every sequence
    // has a known length and the Vec grows as needed.
    let mut out =
        postcard::to_extend(&body_ref(store), out).expect("postcard into a Vec cannot fail");
    let body_len = (out.len() - HEADER_BYTES) as u64;
    let crc = crc32c::crc32c(&out[HEADER_BYTES..]);
    out[5..13].copy_from_slice(&body_len.to_le_bytes());
    out[13..17].copy_from_slice(&crc.to_le_bytes());
    out
}

/// Decodes and validates a snapshot into a new store with `config`.
pub(crate) fn decode(bytes: &[u8], config: KvConfig) -> Result<KvStore, SnapshotError> {
    if bytes.len() < HEADER_BYTES {
        return Err(SnapshotError::TooShort {
            len: bytes.len() as u64,
        });
    }
    let (header, body) = bytes.split_at(HEADER_BYTES);
    if header[0..4] != SNAPSHOT_MAGIC {
        return Err(SnapshotError::BadMagic);
    }
    if header[4] != SNAPSHOT_FORMAT_VERSION {
        return Err(SnapshotError::UnsupportedVersion { version: header[4] });
    }
    let mut len_bytes = [0u8; 8];
    len_bytes.copy_from_slice(&header[5..13]);
    let declared = u64::from_le_bytes(len_bytes);
    if declared != body.len() as u64 {
        return Err(SnapshotError::LengthMismatch {
            declared,
            actual: body.len() as u64,
        });
    }
    let mut crc_bytes = [0u8; 4];
    crc_bytes.copy_from_slice(&header[13..17]);
    let expected = u32::from_le_bytes(crc_bytes);
    let actual = crc32c::crc32c(body);
    if expected != actual {
        return Err(SnapshotError::ChecksumMismatch { expected, actual });
    }
    let (decoded, rest) =
        postcard::take_from_bytes::<Body>(body).map_err(|e| SnapshotError::Malformed {
            detail: e.to_string(),
        })?;
    if !rest.is_empty() {
        return Err(SnapshotError::Malformed {
            detail: format!("{} trailing bytes after the body", rest.len()),
        });
    }
    build(decoded, config)
}

fn build(body: Body, config: KvConfig) -> Result<KvStore, SnapshotError> {
    let inconsistent = |reason| SnapshotError::Inconsistent { reason };
    if !body.data.windows(2).all(|w| w[0].0 < w[1].0) {
        return Err(inconsistent("keys not strictly ascending"));
    }
    if !body.sessions.windows(2).all(|w| w[0].0 < w[1].0) {
        return Err(inconsistent("client ids not strictly ascending"));
    }
    let mut session_lru = BTreeMap::new();
    for (client_id, session) in &body.sessions {
        if session_lru
            .insert(session.last_used_index, *client_id)
            .is_some()
        {
            return Err(inconsistent("two sessions last used by the same entry"));
        }
    }
    let data_bytes = body
        .data
        .iter()
        .map(|(k, r)| (k.len() + r.value.len()) as u64)
        .sum();
    let store = KvStore {
        config,
        applied_index: body.applied_index,
        data: body.data.into_iter().collect(),
        sessions: body.sessions.into_iter().collect(),
        session_lru,
        data_bytes,
    };
    store.validate().map_err(inconsistent)?;
    Ok(store)
}

/// A postcard output that feeds the bytes to FNV-1a instead of storing them.
struct Fnv64(u64);

impl postcard::ser_flavors::Flavor for Fnv64 {
    type Output = u64;

    fn try_push(&mut self, byte: u8) -> postcard::Result<()> {
        self.0 = (self.0 ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3);
        Ok(())
    }

    fn finalize(self) -> postcard::Result<u64> {
        Ok(self.0)
    }
}

/// FNV-1a over the canonical snapshot body.
pub(crate) fn digest(store: &KvStore) -> u64 {
    // Cannot fail: the flavor never refuses a byte and every sequence has a
    // known length.
    postcard::serialize_with_flavor(&body_ref(store), Fnv64(0xcbf2_9ce4_8422_2325))
        .expect("hashing a serialization cannot fail")
}
