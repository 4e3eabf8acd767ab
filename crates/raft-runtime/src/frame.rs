//! The wire format between peers.
//!
//! ```text
//! frame   = len:u32-le  body[len]
//! body    = version:u8  payload  crc:u32-le
//! payload = postcard(WireFrame)
//! crc     = CRC32C of version and payload
//! ```
//!
//! `len` is checked against the configured maximum *before* anything is
//! allocated. The first frame on a connection is a [`Hello`].

use raft_core::{Message, NodeId};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt};

/// Version byte of every frame written by this build.
pub const FRAME_VERSION: u8 = 1;
/// Bytes of a frame besides the payload: version byte and CRC.
const BODY_OVERHEAD_BYTES: usize = 1 + 4;

/// Handshake: who is calling, in which cluster, whom it wants.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    pub cluster_id: u64,
    pub from: NodeId,
    pub to: NodeId,
}

/// What a frame carries.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum WireFrame {
    Hello(Hello),
    Message(Message),
    /// A chunk of a streamed snapshot (durable state machines), on a
    /// connection of its own: after the Hello, only snapshot frames.
    SnapshotChunk(bytes::Bytes),
    /// The end of a streamed snapshot: the leader's snapshot message.
    SnapshotEnd(Message),
}

/// Why a frame could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The connection failed or closed (also mid-frame: a truncated frame).
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// The length prefix exceeds the maximum frame size.
    #[error("frame of {bytes} bytes exceeds the limit of {max_bytes}")]
    TooLarge { bytes: u64, max_bytes: u64 },
    /// The length prefix is too small to hold a version byte and a CRC.
    #[error("frame of {0} bytes is too short")]
    TooShort(u32),
    /// A version this build does not speak.
    #[error("unsupported frame version {0}")]
    Version(u8),
    /// The CRC does not match: corrupted in transit or not our protocol.
    #[error("frame checksum mismatch")]
    Checksum,
    /// The payload does not decode.
    #[error("undecodable frame: {0}")]
    Decode(postcard::Error),
    /// The frame could not be encoded.
    #[error("unencodable frame: {0}")]
    Encode(postcard::Error),
}

/// Appends one encoded frame to `out`. Fails (appending nothing) if the
/// frame would exceed `max_frame_bytes`.
pub fn encode_frame(
    frame: &WireFrame,
    max_frame_bytes: u32,
    out: &mut Vec<u8>,
) -> Result<(), FrameError> {
    let start = out.len();
    out.extend_from_slice(&[0; 4]);
    out.push(FRAME_VERSION);
    let out_taken = std::mem::take(out);
    let mut buf = match postcard::to_extend(frame, out_taken) {
        Ok(b) => b,
        Err(e) => return Err(FrameError::Encode(e)),
    };
    let body_len = buf.len() - start - 4 + 4; // version + payload + crc
    if body_len as u64 > u64::from(max_frame_bytes) {
        buf.truncate(start);
        *out = buf;
        return Err(FrameError::TooLarge {
            bytes: body_len as u64,
            max_bytes: u64::from(max_frame_bytes),
        });
    }
    let crc = crc32c::crc32c(&buf[start + 4..]);
    buf.extend_from_slice(&crc.to_le_bytes());
    // Cannot truncate: body_len <= max_frame_bytes, a u32.
    buf[start..start + 4].copy_from_slice(&(body_len as u32).to_le_bytes());
    *out = buf;
    Ok(())
}

/// Reads one frame, reusing `buf` for its body.
pub async fn read_frame<R: AsyncRead + Unpin>(
    r: &mut R,
    max_frame_bytes: u32,
    buf: &mut Vec<u8>,
) -> Result<WireFrame, FrameError> {
    let len = r.read_u32_le().await?;
    if len > max_frame_bytes {
        return Err(FrameError::TooLarge {
            bytes: u64::from(len),
            max_bytes: u64::from(max_frame_bytes),
        });
    }
    if (len as usize) < BODY_OVERHEAD_BYTES {
        return Err(FrameError::TooShort(len));
    }
    buf.clear();
    buf.resize(len as usize, 0);
    r.read_exact(buf).await?;
    let (body, crc) = buf.split_at(buf.len() - 4);
    let crc = u32::from_le_bytes([crc[0], crc[1], crc[2], crc[3]]);
    if crc32c::crc32c(body) != crc {
        return Err(FrameError::Checksum);
    }
    if body[0] != FRAME_VERSION {
        return Err(FrameError::Version(body[0]));
    }
    postcard::from_bytes(&body[1..]).map_err(FrameError::Decode)
}

#[cfg(test)]
mod tests {
    use super::*;
    use raft_core::{AppendRequest, Entry, EntryPayload, MessageBody};

    fn msg() -> Message {
        Message {
            from: 1,
            to: 2,
            term: 3,
            body: MessageBody::AppendRequest(AppendRequest {
                prev_log_index: 4,
                prev_log_term: 2,
                entries: vec![Entry {
                    term: 3,
                    index: 5,
                    payload: EntryPayload::Normal(bytes::Bytes::from_static(b"hello")),
                }],
                leader_commit: 4,
                round: 7,
            }),
        }
    }

    #[tokio::test]
    async fn round_trip_several_frames() {
        let mut out = Vec::new();
        let hello = WireFrame::Hello(Hello {
            cluster_id: 9,
            from: 1,
            to: 2,
        });
        encode_frame(&hello, 1 << 20, &mut out).unwrap();
        encode_frame(&WireFrame::Message(msg()), 1 << 20, &mut out).unwrap();
        let mut r = &out[..];
        let mut buf = Vec::new();
        assert_eq!(read_frame(&mut r, 1 << 20, &mut buf).await.unwrap(), hello);
        assert_eq!(
            read_frame(&mut r, 1 << 20, &mut buf).await.unwrap(),
            WireFrame::Message(msg())
        );
        assert!(matches!(
            read_frame(&mut r, 1 << 20, &mut buf).await,
            Err(FrameError::Io(_))
        ));
    }

    #[tokio::test]
    async fn rejects_bad_frames() {
        let mut good = Vec::new();
        encode_frame(&WireFrame::Message(msg()), 1 << 20, &mut good).unwrap();
        let mut buf = Vec::new();
        // Oversized length prefix: refused before allocating.
        let big = u32::MAX.to_le_bytes();
        assert!(matches!(
            read_frame(&mut &big[..], 1 << 20, &mut buf).await,
            Err(FrameError::TooLarge { .. })
        ));
        assert!(buf.capacity() < 1 << 20);
        // Truncated.
        assert!(matches!(
            read_frame(&mut &good[..good.len() - 1], 1 << 20, &mut buf).await,
            Err(FrameError::Io(_))
        ));
        // Flipped payload byte.
        let mut bad = good.clone();
        bad[10] ^= 0xff;
        assert!(matches!(
            read_frame(&mut &bad[..], 1 << 20, &mut buf).await,
            Err(FrameError::Checksum)
        ));
        // Wrong version with a valid CRC.
        let mut v = good.clone();
        v[4] = 99;
        let n = v.len();
        let crc = crc32c::crc32c(&v[4..n - 4]);
        v[n - 4..].copy_from_slice(&crc.to_le_bytes());
        assert!(matches!(
            read_frame(&mut &v[..], 1 << 20, &mut buf).await,
            Err(FrameError::Version(99))
        ));
        // Too short.
        let short = 2u32.to_le_bytes();
        assert!(matches!(
            read_frame(&mut &short[..], 1 << 20, &mut buf).await,
            Err(FrameError::TooShort(2))
        ));
        // Valid CRC over garbage payload: a decode error, not a panic.
        let mut g = vec![0u8; 4];
        g.push(FRAME_VERSION);
        g.extend_from_slice(&[0xff; 16]);
        let crc = crc32c::crc32c(&g[4..]);
        g.extend_from_slice(&crc.to_le_bytes());
        let len = (g.len() - 4) as u32;
        g[..4].copy_from_slice(&len.to_le_bytes());
        assert!(matches!(
            read_frame(&mut &g[..], 1 << 20, &mut buf).await,
            Err(FrameError::Decode(_))
        ));
        // Encoding refuses frames beyond the limit, appending nothing.
        let mut out = vec![1, 2, 3];
        assert!(matches!(
            encode_frame(&WireFrame::Message(msg()), 8, &mut out),
            Err(FrameError::TooLarge { .. })
        ));
        assert_eq!(out, vec![1, 2, 3]);
    }
}
