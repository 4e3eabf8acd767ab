//! Snapshot streams over the TCP transport: frames arrive in order and
//! whole on a connection of their own while the message stream keeps
//! flowing; a stream cut short reaches the receiver as a broken stream;
//! snapshot frames on a message connection close it.

use std::time::Duration;

use bytes::Bytes;
use raft_core::{Message, MessageBody, SnapshotMeta, SnapshotRequest};
use raft_runtime::frame::{encode_frame, Hello, WireFrame};
use raft_runtime::{
    Metrics, PeerAddr, SnapshotFrame, TcpConfig, TcpTransport, Transport,
    SNAPSHOT_FRAMES_QUEUED_MAX,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

async fn pair() -> (
    TcpTransport,
    raft_runtime::Inbound,
    TcpTransport,
    raft_runtime::Inbound,
) {
    let a_cfg = TcpConfig::new(7, 1, "127.0.0.1:0".parse().unwrap());
    let b_cfg = TcpConfig::new(7, 2, "127.0.0.1:0".parse().unwrap());
    let (mut a, a_in) = TcpTransport::start(a_cfg, Metrics::new()).await.unwrap();
    let (mut b, b_in) = TcpTransport::start(b_cfg, Metrics::new()).await.unwrap();
    a.set_peer_addr(2, Some(PeerAddr::from(b.local_addr())));
    b.set_peer_addr(1, Some(PeerAddr::from(a.local_addr())));
    (a, a_in, b, b_in)
}

fn snapshot_message() -> Message {
    Message {
        from: 1,
        to: 2,
        term: 3,
        body: MessageBody::SnapshotRequest(SnapshotRequest {
            meta: SnapshotMeta {
                last_index: 42,
                last_term: 3,
                membership: raft_core::Membership::new_voters([1, 2]),
            },
            total_bytes: 0,
            offset: 0,
            data: Bytes::new(),
            done: true,
        }),
    }
}

fn heartbeat(term: u64) -> Message {
    Message {
        from: 1,
        to: 2,
        term,
        body: MessageBody::ReadIndexRequest(raft_core::ReadIndexRequest {
            ctx: Bytes::from_static(b"ctx"),
        }),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_arrives_whole_beside_the_message_stream() {
    let (mut a, _a_in, mut b, mut b_in) = pair().await;
    let mut incoming = b.take_incoming_snapshots().expect("TCP streams snapshots");
    assert!(b.take_incoming_snapshots().is_none(), "taken once");
    let (tx, rx) = mpsc::channel(SNAPSHOT_FRAMES_QUEUED_MAX);
    a.send_snapshot(2, rx);
    // 24 chunks of 256 KiB with distinct contents, produced while
    // messages flow on the other connection.
    let producer = tokio::spawn(async move {
        for i in 0..24u8 {
            let chunk = Bytes::from(vec![i; 256 << 10]);
            tx.send(SnapshotFrame::Chunk(chunk)).await.unwrap();
        }
        tx.send(SnapshotFrame::End(snapshot_message()))
            .await
            .unwrap();
    });
    let mut stream = tokio::time::timeout(Duration::from_secs(10), incoming.recv())
        .await
        .expect("a stream arrives")
        .expect("open");
    assert_eq!(stream.from, 1);
    for t in 0..5 {
        a.send(heartbeat(t));
    }
    let mut chunks = 0u8;
    loop {
        match tokio::time::timeout(Duration::from_secs(10), stream.frames.recv())
            .await
            .expect("frames keep coming")
        {
            Some(SnapshotFrame::Chunk(c)) => {
                assert_eq!(c.len(), 256 << 10);
                assert!(
                    c.iter().all(|&x| x == chunks),
                    "chunk {chunks} out of order or damaged"
                );
                chunks += 1;
            }
            Some(SnapshotFrame::End(m)) => {
                assert_eq!(m, snapshot_message());
                break;
            }
            None => panic!("stream broke off after {chunks} chunks"),
        }
    }
    assert_eq!(chunks, 24);
    producer.await.unwrap();
    // The messages went their own way.
    for t in 0..5 {
        let m = tokio::time::timeout(Duration::from_secs(5), b_in.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(m.term, t);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_cut_short_arrives_broken() {
    let (mut a, _a_in, mut b, _b_in) = pair().await;
    let mut incoming = b.take_incoming_snapshots().unwrap();
    let (tx, rx) = mpsc::channel(SNAPSHOT_FRAMES_QUEUED_MAX);
    a.send_snapshot(2, rx);
    tx.send(SnapshotFrame::Chunk(Bytes::from_static(b"part")))
        .await
        .unwrap();
    drop(tx); // the reader stopped before the end
    let mut stream = tokio::time::timeout(Duration::from_secs(10), incoming.recv())
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(
        stream.frames.recv().await,
        Some(SnapshotFrame::Chunk(c)) if &c[..] == b"part"
    ));
    let end = tokio::time::timeout(Duration::from_secs(10), stream.frames.recv())
        .await
        .expect("the break is seen");
    assert!(end.is_none(), "a broken stream ends without its message");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_frames_on_a_message_connection_close_it() {
    let (_a, _a_in, mut b, _b_in) = pair().await;
    let mut incoming = b.take_incoming_snapshots().unwrap();
    let mut bytes = Vec::new();
    encode_frame(
        &WireFrame::Hello(Hello {
            cluster_id: 7,
            from: 1,
            to: 2,
        }),
        1 << 20,
        &mut bytes,
    )
    .unwrap();
    encode_frame(&WireFrame::Message(heartbeat(1)), 1 << 20, &mut bytes).unwrap();
    encode_frame(
        &WireFrame::SnapshotChunk(Bytes::from_static(b"x")),
        1 << 20,
        &mut bytes,
    )
    .unwrap();
    let mut s = tokio::net::TcpStream::connect(b.local_addr())
        .await
        .unwrap();
    s.write_all(&bytes).await.unwrap();
    let mut buf = [0u8; 8];
    let r = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .expect("closed in time");
    assert!(matches!(r, Ok(0) | Err(_)), "connection kept open");
    assert!(incoming.try_recv().is_err(), "no stream was started");
}
