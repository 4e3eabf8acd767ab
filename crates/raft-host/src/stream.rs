//! The two rewrites of a streamed snapshot's message (durable state
//! machines), shared by every shell so the simulator proves what the
//! driver does: the leader's message ends the stream with the metadata of
//! what the chunks cover; the follower steps it with the sink's
//! descriptor as its data.

use bytes::Bytes;
use raft_core::{Message, MessageBody, SnapshotMeta, SourceMeta};

/// Why a stream's message cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum StreamMessageError {
    /// The message handed out for streaming is not a snapshot message.
    #[error("not a snapshot message")]
    NotSnapshot,
    /// The message says another index or term than the chunks cover.
    #[error("the stream covers {covers_index}@{covers_term} but its message says {index}@{term}")]
    Mismatch {
        covers_index: u64,
        covers_term: u64,
        index: u64,
        term: u64,
    },
}

/// Leader side: sets the engine's snapshot message (from
/// `NodeHost::poll_snapshot_send`) to end a stream covering `covers`: its
/// metadata what the chunks hold (at or after what the engine asked for:
/// the applied index when the view opened; a state that never applied a
/// membership entry has the configuration the engine's message names),
/// no data.
pub fn end_of_stream(m: &mut Message, covers: &SourceMeta) -> Result<(), StreamMessageError> {
    let MessageBody::SnapshotRequest(req) = &mut m.body else {
        return Err(StreamMessageError::NotSnapshot);
    };
    req.meta = SnapshotMeta {
        last_index: covers.last_index,
        last_term: covers.last_term,
        membership: covers
            .membership
            .clone()
            .unwrap_or_else(|| req.meta.membership.clone()),
    };
    req.total_bytes = 0;
    req.offset = 0;
    req.data = Bytes::new();
    req.done = true;
    Ok(())
}

/// Follower side: checks that the message ending a stream names what the
/// sink received, and makes it the message to hand to
/// `NodeHost::handle_snapshot_received` (its data the sink's descriptor).
pub fn received(
    m: &mut Message,
    covers: &SourceMeta,
    descriptor: Bytes,
) -> Result<(), StreamMessageError> {
    let MessageBody::SnapshotRequest(req) = &mut m.body else {
        return Err(StreamMessageError::NotSnapshot);
    };
    if req.meta.last_index != covers.last_index || req.meta.last_term != covers.last_term {
        return Err(StreamMessageError::Mismatch {
            covers_index: covers.last_index,
            covers_term: covers.last_term,
            index: req.meta.last_index,
            term: req.meta.last_term,
        });
    }
    req.total_bytes = descriptor.len() as u64;
    req.offset = 0;
    req.data = descriptor;
    req.done = true;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use raft_core::{Membership, SnapshotRequest};

    fn msg() -> Message {
        Message {
            from: 1,
            to: 2,
            term: 4,
            body: MessageBody::SnapshotRequest(SnapshotRequest {
                meta: SnapshotMeta {
                    last_index: 10,
                    last_term: 2,
                    membership: Membership::new_voters([1, 2]),
                },
                total_bytes: 0,
                offset: 0,
                data: Bytes::new(),
                done: true,
            }),
        }
    }

    #[test]
    fn the_stream_ends_with_what_it_covers_and_arrives_with_the_descriptor() {
        let covers = SourceMeta {
            last_index: 25,
            last_term: 3,
            membership: None,
        };
        let mut m = msg();
        end_of_stream(&mut m, &covers).unwrap();
        let MessageBody::SnapshotRequest(req) = &m.body else {
            unreachable!()
        };
        assert_eq!((req.meta.last_index, req.meta.last_term), (25, 3));
        assert_eq!(req.meta.membership, Membership::new_voters([1, 2]));
        received(&mut m, &covers, Bytes::from_static(b"desc")).unwrap();
        let MessageBody::SnapshotRequest(req) = &m.body else {
            unreachable!()
        };
        assert_eq!(
            (&req.data[..], req.total_bytes, req.done),
            (&b"desc"[..], 4, true)
        );
        let other = SourceMeta {
            last_index: 26,
            ..covers
        };
        assert!(matches!(
            received(&mut m, &other, Bytes::new()),
            Err(StreamMessageError::Mismatch { .. })
        ));
    }
}
