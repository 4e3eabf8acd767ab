//! Framing of WAL records, and the small fixed files (snapshot, identity).
//!
//! A WAL record is a 16-byte header followed by a payload:
//!
//! ```text
//! offset size field
//!      0    4 payload length in bytes, u32 little-endian
//!      4    1 record type (1 segment header, 2 entry, 3 hard state, 4 snapshot marker)
//!      5    3 reserved, zero
//!      8    4 CRC32C of the payload, u32 little-endian
//!     12    4 CRC32C of bytes 0..12 (the header itself), u32 little-endian
//!     16    n payload: the postcard encoding of the record's value
//! ```
//!
//! The header has its own checksum so that a damaged length is told apart
//! from a payload that was cut short by a crash.

use bytes::Bytes;
use raft_core::{Entry, EntryPayload, HardState, SnapshotMeta};
use serde::{Deserialize, Serialize};

/// Size of a record header.
pub(crate) const RECORD_HEADER_BYTES: usize = 16;
/// Largest payload a record may carry. Anything claiming more is damage,
/// not data: it bounds what a scan trusts before checking the CRC.
pub(crate) const RECORD_PAYLOAD_BYTES_MAX: u32 = 512 << 20;

/// "RKVWAL01" as a little-endian u64: first field of every segment header.
pub(crate) const SEGMENT_MAGIC: u64 = u64::from_le_bytes(*b"RKVWAL01");
pub(crate) const FORMAT_VERSION: u32 = 1;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum RecordType {
    SegmentHeader = 1,
    Entry = 2,
    HardState = 3,
    SnapshotMarker = 4,
}

impl RecordType {
    fn from_u8(b: u8) -> Option<RecordType> {
        Some(match b {
            1 => RecordType::SegmentHeader,
            2 => RecordType::Entry,
            3 => RecordType::HardState,
            4 => RecordType::SnapshotMarker,
            _ => return None,
        })
    }
}

/// First record of every segment file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SegmentHeader {
    pub magic: u64,
    pub version: u32,
    pub cluster_id: u64,
    pub node_id: u64,
    /// Sequence number of the segment; also in its file name.
    pub seq: u64,
    /// The log's last index + 1 when the segment was started; also in its
    /// file name. Informational: entries carry their own index.
    pub first_index: u64,
}

/// Records that the log's prefix up to `index` is now held by the snapshot
/// `(index, term)`. Written after the snapshot file is durable: it is the
/// commit point of an install or a compaction.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SnapshotMarker {
    pub index: u64,
    pub term: u64,
    /// Whether the entries after `index` were kept (the log matched the
    /// snapshot at `index`) or discarded.
    pub kept_suffix: bool,
}

/// Appends one framed record to `buf`. Fails only if the value cannot be
/// encoded (which for our types means it is too large).
pub(crate) fn encode_record<T: Serialize>(
    buf: &mut Vec<u8>,
    ty: RecordType,
    value: &T,
) -> Result<usize, String> {
    let start = buf.len();
    buf.extend_from_slice(&[0u8; RECORD_HEADER_BYTES]);
    *buf = postcard::to_extend(value, std::mem::take(buf)).map_err(|e| e.to_string())?;
    let payload_len = buf.len() - start - RECORD_HEADER_BYTES;
    if payload_len > RECORD_PAYLOAD_BYTES_MAX as usize {
        buf.truncate(start);
        return Err(format!(
            "record of {payload_len} bytes exceeds the limit of {RECORD_PAYLOAD_BYTES_MAX}"
        ));
    }
    buf[start..start + 4].copy_from_slice(&(payload_len as u32).to_le_bytes());
    buf[start + 4] = ty as u8;
    let payload_crc = crc32c::crc32c(&buf[start + RECORD_HEADER_BYTES..]);
    buf[start + 8..start + 12].copy_from_slice(&payload_crc.to_le_bytes());
    let header_crc = crc32c::crc32c(&buf[start..start + 12]);
    buf[start + 12..start + 16].copy_from_slice(&header_crc.to_le_bytes());
    Ok(buf.len() - start)
}

/// Entry payloads at least this large are not copied into the encoding
/// buffer: the record's head is encoded there and the payload is handed to
/// the kernel in place (a vectored write). Below it a copy costs less than
/// another iovec, and the number of iovecs of a write stays bounded by the
/// number of large entries.
pub(crate) const PAYLOAD_IN_PLACE_BYTES_MIN: usize = 4 << 10;

/// The payload bytes [`encode_entry_record`] leaves out of the buffer, if any.
pub(crate) fn payload_in_place(entry: &Entry) -> Option<&[u8]> {
    match &entry.payload {
        EntryPayload::Normal(data) if data.len() >= PAYLOAD_IN_PLACE_BYTES_MIN => Some(data),
        _ => None,
    }
}

/// Appends an entry record to `buf` and returns its length in the file.
///
/// If the entry carries a payload of [`PAYLOAD_IN_PLACE_BYTES_MIN`] bytes or
/// more, only the record's header and the start of its encoding (term,
/// index, payload kind and length) are appended, and the payload bytes are
/// returned too: the record is the new bytes of `buf` immediately followed
/// by them. Either way the bytes are exactly those of [`encode_record`].
pub(crate) fn encode_entry_record<'e>(
    buf: &mut Vec<u8>,
    entry: &'e Entry,
) -> Result<(usize, Option<&'e [u8]>), String> {
    let Some(data) = payload_in_place(entry) else {
        return encode_record(buf, RecordType::Entry, entry).map(|n| (n, None));
    };
    let start = buf.len();
    buf.extend_from_slice(&[0u8; RECORD_HEADER_BYTES]);
    // The encoding of the entry with an empty payload ends with the payload
    // as a postcard byte string: a varint length (here the single byte 0),
    // then the bytes. Put the real length there; the bytes follow in the file.
    let head = Entry {
        term: entry.term,
        index: entry.index,
        payload: EntryPayload::Normal(Bytes::new()),
    };
    *buf = postcard::to_extend(&head, std::mem::take(buf)).map_err(|e| e.to_string())?;
    let empty_len = buf.pop();
    debug_assert_eq!(
        empty_len,
        Some(0),
        "postcard encodes an empty byte string as 0"
    );
    // A usize encodes as the same varint as a byte string's length.
    *buf = postcard::to_extend(&data.len(), std::mem::take(buf)).map_err(|e| e.to_string())?;
    let payload_len = buf.len() - start - RECORD_HEADER_BYTES + data.len();
    if payload_len > RECORD_PAYLOAD_BYTES_MAX as usize {
        buf.truncate(start);
        return Err(format!(
            "record of {payload_len} bytes exceeds the limit of {RECORD_PAYLOAD_BYTES_MAX}"
        ));
    }
    buf[start..start + 4].copy_from_slice(&(payload_len as u32).to_le_bytes());
    buf[start + 4] = RecordType::Entry as u8;
    let payload_crc =
        crc32c::crc32c_append(crc32c::crc32c(&buf[start + RECORD_HEADER_BYTES..]), data);
    buf[start + 8..start + 12].copy_from_slice(&payload_crc.to_le_bytes());
    let header_crc = crc32c::crc32c(&buf[start..start + 12]);
    buf[start + 12..start + 16].copy_from_slice(&header_crc.to_le_bytes());
    Ok((RECORD_HEADER_BYTES + payload_len, Some(data)))
}

/// What is found at an offset of a segment's bytes.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Parsed<'a> {
    /// A valid record; the next one starts at `next`.
    Record {
        ty: RecordType,
        payload: &'a [u8],
        next: usize,
    },
    /// The header or payload runs past the end of the bytes.
    Incomplete,
    /// The bytes are not a valid record.
    Bad(&'static str),
}

/// Parses the record at `off`.
pub(crate) fn parse_record(buf: &[u8], off: usize) -> Parsed<'_> {
    let Some(hdr) = buf.get(off..off + RECORD_HEADER_BYTES) else {
        return Parsed::Incomplete;
    };
    let u32_at = |o: usize| u32::from_le_bytes(hdr[o..o + 4].try_into().expect("4 bytes"));
    if crc32c::crc32c(&hdr[0..12]) != u32_at(12) {
        return Parsed::Bad("header checksum mismatch");
    }
    let len = u32_at(0);
    let Some(ty) = RecordType::from_u8(hdr[4]) else {
        return Parsed::Bad("unknown record type");
    };
    if hdr[5..8] != [0, 0, 0] {
        return Parsed::Bad("reserved header bytes are not zero");
    }
    if len > RECORD_PAYLOAD_BYTES_MAX {
        return Parsed::Bad("record length over the limit");
    }
    let start = off + RECORD_HEADER_BYTES;
    let end = start + len as usize;
    let Some(payload) = buf.get(start..end) else {
        // The header is intact: the payload was cut short.
        return Parsed::Incomplete;
    };
    if crc32c::crc32c(payload) != u32_at(8) {
        return Parsed::Bad("payload checksum mismatch");
    }
    Parsed::Record {
        ty,
        payload,
        next: end,
    }
}

/// Sector size assumed by [`looks_torn`]: devices write whole sectors.
const SECTOR_BYTES: usize = 512;

/// True if the damaged bytes from `from` to the end look like a write that
/// did not reach the disk completely rather than like flipped bits: a whole
/// sector of them reads as zeros (never written), or all of them do.
pub(crate) fn looks_torn(buf: &[u8], from: usize) -> bool {
    let tail = &buf[from.min(buf.len())..];
    if tail.iter().all(|&b| b == 0) {
        return true;
    }
    let mut s = from.div_ceil(SECTOR_BYTES) * SECTOR_BYTES;
    while s + SECTOR_BYTES <= buf.len() {
        if buf[s..s + SECTOR_BYTES].iter().all(|&b| b == 0) {
            return true;
        }
        s += SECTOR_BYTES;
    }
    false
}

/// Checks a record already located (for reads served from segment files).
pub(crate) fn parse_exact(buf: &[u8]) -> Result<(RecordType, &[u8]), &'static str> {
    match parse_record(buf, 0) {
        Parsed::Record { ty, payload, next } if next == buf.len() => Ok((ty, payload)),
        Parsed::Record { .. } => Err("record length changed"),
        Parsed::Incomplete => Err("record truncated"),
        Parsed::Bad(why) => Err(why),
    }
}

/// Offset of the first valid record that starts after `from`, if any.
/// Used to tell a torn tail (nothing valid after the damage) from damage in
/// the middle of data (valid records follow).
pub(crate) fn find_valid_record_after(buf: &[u8], from: usize) -> Option<usize> {
    let last_start = buf.len().checked_sub(RECORD_HEADER_BYTES)?;
    (from + 1..=last_start).find(|&off| {
        // Cheap filters first; the CRCs run only on plausible headers.
        RecordType::from_u8(buf[off + 4]).is_some()
            && buf[off + 5..off + 8] == [0, 0, 0]
            && matches!(parse_record(buf, off), Parsed::Record { .. })
    })
}

pub(crate) fn decode<'a, T: Deserialize<'a>>(payload: &'a [u8]) -> Result<T, String> {
    postcard::from_bytes(payload).map_err(|e| e.to_string())
}

/// Term and index of an entry record without decoding its payload.
pub(crate) fn decode_entry_head(payload: &[u8]) -> Result<(u64, u64), String> {
    // `Entry` encodes as its fields in order: term, index, payload.
    postcard::take_from_bytes::<(u64, u64)>(payload)
        .map(|(head, _)| head)
        .map_err(|e| e.to_string())
}

pub(crate) fn decode_entry(payload: &[u8]) -> Result<Entry, String> {
    decode(payload)
}

pub(crate) fn decode_hard_state(payload: &[u8]) -> Result<HardState, String> {
    decode(payload)
}

// ---------------------------------------------------------------------------
// Snapshot files.
//
// offset          size      field
// 0               8         magic "RKVSNAP1"
// 8               4         format version, u32 LE
// 12              4         meta length m, u32 LE
// 16              8         data length d, u64 LE
// 24              4         CRC32C of bytes 0..24 followed by the meta
// 28              m         meta: postcard SnapshotMeta
// 28+m            d         data
// 28+m+d          4         CRC32C of the data
// ---------------------------------------------------------------------------

const SNAP_MAGIC: &[u8; 8] = b"RKVSNAP1";
pub(crate) const SNAP_HEADER_BYTES: usize = 28;
/// Bound on the encoded metadata (a membership of many thousands of nodes
/// still fits); anything larger is damage.
const SNAP_META_BYTES_MAX: u32 = 16 << 20;

/// Header and metadata of a snapshot file; the data and a trailer follow.
pub(crate) fn encode_snapshot_head(meta: &SnapshotMeta, data: &[u8]) -> Vec<u8> {
    // Encoding a SnapshotMeta into a Vec cannot fail: it has no maps with
    // non-string keys or other constructs postcard rejects.
    let meta_bytes = postcard::to_allocvec(meta).expect("SnapshotMeta always encodes");
    let mut head = Vec::with_capacity(SNAP_HEADER_BYTES + meta_bytes.len());
    head.extend_from_slice(SNAP_MAGIC);
    head.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    head.extend_from_slice(&(meta_bytes.len() as u32).to_le_bytes());
    head.extend_from_slice(&(data.len() as u64).to_le_bytes());
    let crc = crc32c::crc32c_append(crc32c::crc32c(&head), &meta_bytes);
    head.extend_from_slice(&crc.to_le_bytes());
    head.extend_from_slice(&meta_bytes);
    head
}

pub(crate) fn snapshot_trailer(data: &[u8]) -> [u8; 4] {
    crc32c::crc32c(data).to_le_bytes()
}

/// Decodes a whole snapshot file. On damage, returns the offset of the
/// first field found wrong and why.
pub(crate) fn decode_snapshot(file: Bytes) -> Result<(SnapshotMeta, Bytes), (u64, String)> {
    let bad = |off: usize, why: &str| Err((off as u64, why.to_string()));
    if file.len() < SNAP_HEADER_BYTES {
        return bad(file.len(), "file shorter than a snapshot header");
    }
    if &file[0..8] != SNAP_MAGIC {
        return bad(0, "bad magic");
    }
    let u32_at = |o: usize| u32::from_le_bytes(file[o..o + 4].try_into().expect("4 bytes"));
    let version = u32_at(8);
    let meta_len = u32_at(12);
    let data_len = u64::from_le_bytes(file[16..24].try_into().expect("8 bytes"));
    if meta_len > SNAP_META_BYTES_MAX {
        return bad(12, "metadata length over the limit");
    }
    let meta_end = SNAP_HEADER_BYTES + meta_len as usize;
    let expected_len = (meta_end as u64)
        .checked_add(data_len)
        .and_then(|l| l.checked_add(4));
    if expected_len != Some(file.len() as u64) {
        // Check the header CRC first when possible: a flipped length bit is
        // damage to the header, not a short file.
        if file.len() >= meta_end {
            let crc = crc32c::crc32c_append(crc32c::crc32c(&file[0..24]), &file[28..meta_end]);
            if crc != u32_at(24) {
                return bad(24, "header checksum mismatch");
            }
        }
        return bad(16, "file length does not match the header");
    }
    let crc = crc32c::crc32c_append(crc32c::crc32c(&file[0..24]), &file[28..meta_end]);
    if crc != u32_at(24) {
        return bad(24, "header checksum mismatch");
    }
    if version != FORMAT_VERSION {
        return bad(8, "unsupported format version");
    }
    let data_end = file.len() - 4;
    if crc32c::crc32c(&file[meta_end..data_end]) != u32_at(data_end) {
        return bad(data_end, "data checksum mismatch");
    }
    let meta: SnapshotMeta = match postcard::from_bytes(&file[28..meta_end]) {
        Ok(m) => m,
        Err(_) => return bad(28, "metadata does not decode"),
    };
    Ok((meta, file.slice(meta_end..data_end)))
}

// ---------------------------------------------------------------------------
// Identity file: magic "RKVIDNT1", version u32, cluster id u64, node id u64,
// CRC32C of the preceding 28 bytes. 32 bytes in all.
// ---------------------------------------------------------------------------

const ID_MAGIC: &[u8; 8] = b"RKVIDNT1";
pub(crate) const IDENTITY_BYTES: usize = 32;

pub(crate) fn encode_identity(cluster_id: u64, node_id: u64) -> Vec<u8> {
    let mut b = Vec::with_capacity(IDENTITY_BYTES);
    b.extend_from_slice(ID_MAGIC);
    b.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    b.extend_from_slice(&cluster_id.to_le_bytes());
    b.extend_from_slice(&node_id.to_le_bytes());
    let crc = crc32c::crc32c(&b);
    b.extend_from_slice(&crc.to_le_bytes());
    b
}

/// `(cluster_id, node_id)` from an identity file.
pub(crate) fn decode_identity(b: &[u8]) -> Result<(u64, u64), (u64, &'static str)> {
    if b.len() != IDENTITY_BYTES {
        return Err((b.len() as u64, "identity file has the wrong length"));
    }
    if &b[0..8] != ID_MAGIC {
        return Err((0, "bad magic"));
    }
    let crc = u32::from_le_bytes(b[28..32].try_into().expect("4 bytes"));
    if crc32c::crc32c(&b[0..28]) != crc {
        return Err((28, "checksum mismatch"));
    }
    if u32::from_le_bytes(b[8..12].try_into().expect("4 bytes")) != FORMAT_VERSION {
        return Err((8, "unsupported format version"));
    }
    let cluster = u64::from_le_bytes(b[12..20].try_into().expect("8 bytes"));
    let node = u64::from_le_bytes(b[20..28].try_into().expect("8 bytes"));
    Ok((cluster, node))
}

#[cfg(test)]
mod tests {
    use super::*;
    use raft_core::EntryPayload;

    #[test]
    fn entry_round_trip_and_head() {
        let e = Entry {
            term: 300,
            index: 1 << 40,
            payload: EntryPayload::Normal(Bytes::from_static(b"xyz")),
        };
        let mut buf = vec![9u8; 3];
        let n = encode_record(&mut buf, RecordType::Entry, &e).unwrap();
        assert_eq!(buf.len(), 3 + n);
        let Parsed::Record { ty, payload, next } = parse_record(&buf, 3) else {
            panic!("valid record not parsed")
        };
        assert_eq!((ty, next), (RecordType::Entry, buf.len()));
        assert_eq!(decode_entry(payload).unwrap(), e);
        assert_eq!(decode_entry_head(payload).unwrap(), (300, 1 << 40));
    }

    #[test]
    fn entry_records_with_payload_in_place_match_the_plain_encoding() {
        let sizes = [
            0,
            1,
            100,
            PAYLOAD_IN_PLACE_BYTES_MIN - 1,
            PAYLOAD_IN_PLACE_BYTES_MIN,
            PAYLOAD_IN_PLACE_BYTES_MIN + 1,
            16383, // 2-byte varint length
            16384, // 3-byte varint length
            64 << 10,
            (2 << 20) + 3,
        ];
        let heads = [
            (0, 1),
            (1, 127),
            (128, 128),
            (300, 1 << 40),
            (u64::MAX, u64::MAX),
        ];
        for (i, &size) in sizes.iter().enumerate() {
            for &(term, index) in &heads {
                let data: Vec<u8> = (0..size).map(|b| (b * 7 + i) as u8).collect();
                let e = Entry {
                    term,
                    index,
                    payload: EntryPayload::Normal(Bytes::from(data.clone())),
                };
                let mut plain = vec![1u8, 2];
                let n_plain = encode_record(&mut plain, RecordType::Entry, &e).unwrap();
                let mut split = vec![1u8, 2];
                let (n, rest) = encode_entry_record(&mut split, &e).unwrap();
                assert_eq!(
                    rest.is_some(),
                    size >= PAYLOAD_IN_PLACE_BYTES_MIN,
                    "size {size}"
                );
                if let Some(rest) = rest {
                    assert_eq!(rest, &data[..]);
                    split.extend_from_slice(rest);
                }
                assert_eq!(
                    (n, &split),
                    (n_plain, &plain),
                    "size {size}, head {term} {index}"
                );
                let Parsed::Record { payload, .. } = parse_record(&split, 2) else {
                    panic!("record does not parse")
                };
                assert_eq!(decode_entry(payload).unwrap(), e);
            }
        }
        // Other payload kinds are always encoded whole.
        for payload in [
            EntryPayload::Blank,
            EntryPayload::Membership(raft_core::Membership::new_voters([1, 2])),
        ] {
            let e = Entry {
                term: 2,
                index: 9,
                payload,
            };
            let mut plain = Vec::new();
            encode_record(&mut plain, RecordType::Entry, &e).unwrap();
            let mut split = Vec::new();
            let (n, rest) = encode_entry_record(&mut split, &e).unwrap();
            assert_eq!((n, rest, &split), (plain.len(), None, &plain));
        }
    }

    #[test]
    fn every_bit_flip_is_caught_and_truncation_is_incomplete() {
        let mut buf = Vec::new();
        encode_record(&mut buf, RecordType::HardState, &HardState::default()).unwrap();
        for bit in 0..buf.len() * 8 {
            let mut b = buf.clone();
            b[bit / 8] ^= 1 << (bit % 8);
            assert!(matches!(parse_record(&b, 0), Parsed::Bad(_)), "bit {bit}");
        }
        for cut in 0..buf.len() {
            assert_eq!(parse_record(&buf[..cut], 0), Parsed::Incomplete);
        }
        assert_eq!(find_valid_record_after(&buf, 0), None);
        let mut two = buf.clone();
        two.extend_from_slice(&buf);
        assert_eq!(find_valid_record_after(&two, 0), Some(buf.len()));
    }

    #[test]
    fn snapshot_file_round_trip_and_damage() {
        let meta = SnapshotMeta {
            last_index: 7,
            last_term: 2,
            membership: raft_core::Membership::new_voters([1, 2, 3]),
        };
        let data = b"state machine".to_vec();
        let mut file = encode_snapshot_head(&meta, &data);
        file.extend_from_slice(&data);
        file.extend_from_slice(&snapshot_trailer(&data));
        let (m, d) = decode_snapshot(Bytes::from(file.clone())).unwrap();
        assert_eq!((m, &d[..]), (meta, &data[..]));
        for bit in 0..file.len() * 8 {
            let mut f = file.clone();
            f[bit / 8] ^= 1 << (bit % 8);
            assert!(decode_snapshot(Bytes::from(f)).is_err(), "bit {bit}");
        }
        assert!(decode_snapshot(Bytes::from(file[..file.len() - 1].to_vec())).is_err());
    }

    #[test]
    fn identity_round_trip_and_damage() {
        let b = encode_identity(11, 3);
        assert_eq!(decode_identity(&b), Ok((11, 3)));
        for bit in 0..b.len() * 8 {
            let mut c = b.clone();
            c[bit / 8] ^= 1 << (bit % 8);
            assert!(decode_identity(&c).is_err());
        }
    }
}
