//! Hostile input on a node's peer port: garbage, truncated frames,
//! oversized frames, wrong cluster id, unknown node, undecodable payloads,
//! impersonation. Every bad connection is closed; the node keeps serving.

mod common;

use std::time::Duration;

use common::*;
use raft_core::{Message, MessageBody};
use raft_runtime::frame::{encode_frame, Hello, WireFrame, FRAME_VERSION};
use raft_runtime::metrics::ReasonLabel;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const MAX: u32 = 64 << 20;

fn hello(cluster_id: u64, from: u64, to: u64) -> Vec<u8> {
    let mut out = Vec::new();
    encode_frame(
        &WireFrame::Hello(Hello {
            cluster_id,
            from,
            to,
        }),
        MAX,
        &mut out,
    )
    .unwrap();
    out
}

/// Sends `bytes` and expects the node to close the connection.
async fn expect_closed(addr: std::net::SocketAddr, bytes: &[u8]) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    // The node may close before reading everything; ignore write errors.
    let _ = s.write_all(bytes).await;
    let mut buf = [0u8; 16];
    let r = tokio::time::timeout(Duration::from_secs(3), s.read(&mut buf)).await;
    match r {
        Ok(Ok(0)) | Ok(Err(_)) => {}
        Ok(Ok(n)) => panic!("node answered {n} bytes"),
        Err(_) => panic!("node kept a bad connection open"),
    }
}

fn refused(c: &TcpCluster<raft_runtime::MemStore>, id: u64, reason: &str) -> u64 {
    c.nodes[&id]
        .metrics
        .connections_refused
        .get(&ReasonLabel {
            reason: reason.into(),
        })
        .map_or(0, |c| c.get())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_peers_are_refused_and_the_node_keeps_serving() {
    init_tracing();
    let c = TcpCluster::start(mem_stores(3), test_config).await;
    let leader = c.leader().await;
    c.propose("before").await;
    let addr = c.nodes[&leader].addr;
    let peer = (1..=3).find(|&i| i != leader).unwrap();
    let third = (1..=3).find(|&i| i != leader && i != peer).unwrap();

    // Garbage that is not even a frame.
    expect_closed(addr, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
    // Wrong cluster id.
    expect_closed(addr, &hello(0xBAD, peer, leader)).await;
    assert_eq!(refused(&c, leader, "wrong_cluster"), 1);
    // Unknown node id.
    expect_closed(addr, &hello(CLUSTER_ID, 99, leader)).await;
    assert_eq!(refused(&c, leader, "unknown_peer"), 1);
    // Addressed to another node.
    expect_closed(addr, &hello(CLUSTER_ID, peer, 42)).await;
    assert_eq!(refused(&c, leader, "wrong_node"), 1);
    // A message before any handshake.
    let mut m = Vec::new();
    let msg = Message {
        from: peer,
        to: leader,
        term: 1,
        body: MessageBody::TimeoutNow,
    };
    encode_frame(&WireFrame::Message(msg.clone()), MAX, &mut m).unwrap();
    expect_closed(addr, &m).await;
    assert_eq!(refused(&c, leader, "no_handshake"), 1);
    // Oversized frame after a good handshake: refused from the prefix.
    let mut b = hello(CLUSTER_ID, peer, leader);
    b.extend_from_slice(&(MAX + 1).to_le_bytes());
    b.extend_from_slice(&[0u8; 64]);
    expect_closed(addr, &b).await;
    // Valid CRC around an undecodable payload.
    let mut b = hello(CLUSTER_ID, peer, leader);
    let mut body = vec![FRAME_VERSION];
    body.extend_from_slice(&[0xEE; 40]);
    let crc = crc32c::crc32c(&body);
    b.extend_from_slice(&((body.len() + 4) as u32).to_le_bytes());
    b.extend_from_slice(&body);
    b.extend_from_slice(&crc.to_le_bytes());
    expect_closed(addr, &b).await;
    // Corrupted CRC.
    let mut b = hello(CLUSTER_ID, peer, leader);
    let mut f = Vec::new();
    encode_frame(&WireFrame::Message(msg.clone()), MAX, &mut f).unwrap();
    let n = f.len();
    f[n - 1] ^= 0xFF;
    b.extend_from_slice(&f);
    expect_closed(addr, &b).await;
    assert!(
        refused(&c, leader, "bad_frame") >= 4,
        "garbage, oversized, undecodable, crc"
    );
    // Impersonation: handshake as one peer, message from another.
    let mut b = hello(CLUSTER_ID, peer, leader);
    let mut f = Vec::new();
    let forged = Message {
        from: third,
        ..msg.clone()
    };
    encode_frame(&WireFrame::Message(forged), MAX, &mut f).unwrap();
    b.extend_from_slice(&f);
    expect_closed(addr, &b).await;
    assert_eq!(refused(&c, leader, "misaddressed"), 1);
    // Truncated frame, then the peer hangs up mid-frame.
    {
        let mut s = TcpStream::connect(addr).await.unwrap();
        let mut b = hello(CLUSTER_ID, peer, leader);
        b.extend_from_slice(&f[..f.len() / 2]);
        s.write_all(&b).await.unwrap();
        drop(s);
    }
    // Many connections at once that never say anything do not block peers.
    let mut idle = Vec::new();
    for _ in 0..20 {
        idle.push(TcpStream::connect(addr).await.unwrap());
    }

    // The cluster still serves, with the same leader.
    let mut last = 0;
    for i in 0..20u32 {
        last = c.propose(format!("after{i}")).await;
    }
    c.wait_applied(last).await;
    assert_eq!(c.assert_same_items().len(), 21);
    let st = c.handle(leader).status().await.unwrap();
    assert_eq!(st.role, raft_core::Role::Leader);
    drop(idle);
    c.shutdown().await;
}
