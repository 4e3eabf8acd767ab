//! Hostile input on a node's peer port: garbage, truncated frames,
//! oversized frames, wrong cluster id, undecodable payloads, impersonation.
//! Every bad connection is closed; the node keeps serving. Also: nodes
//! without an address here (accepted by default, refused if configured),
//! reconnecting without waiting out the back-off, and a port that is free
//! again once the transport says it is closed.

mod common;

use std::time::Duration;

use std::net::SocketAddr;

use common::*;
use raft_core::{Message, MessageBody};
use raft_runtime::frame::{encode_frame, Hello, WireFrame, FRAME_VERSION};
use raft_runtime::metrics::{PeerLabel, ReasonLabel};
use raft_runtime::{Inbound, Metrics, TcpConfig, TcpTransport, Transport};
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
    // A node of this cluster with no address here is accepted (see
    // `TcpConfig::accept_unknown_peers`); its messages reach the engine,
    // which lets a non-member disturb nothing.
    let mut stranger = TcpStream::connect(addr).await.unwrap();
    let mut b = hello(CLUSTER_ID, 99, leader);
    encode_frame(
        &WireFrame::Message(Message {
            from: 99,
            to: leader,
            term: 1_000,
            body: MessageBody::TimeoutNow,
        }),
        MAX,
        &mut b,
    )
    .unwrap();
    stranger.write_all(&b).await.unwrap();
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
    assert_eq!(refused(&c, leader, "unknown_peer"), 0);
    drop(idle);
    drop(stranger);
    c.shutdown().await;
}

fn probe(from: u64, to: u64) -> Message {
    Message {
        from,
        to,
        term: 1,
        body: MessageBody::TimeoutNow,
    }
}

async fn transport(
    id: u64,
    addr: SocketAddr,
    peers: &[(u64, SocketAddr)],
    tweak: impl FnOnce(&mut TcpConfig),
) -> (TcpTransport, Inbound, Metrics) {
    let mut cfg = TcpConfig::new(CLUSTER_ID, id, addr);
    cfg.peers = peers.iter().map(|&(i, a)| (i, a.into())).collect();
    tweak(&mut cfg);
    let metrics = Metrics::new();
    let (t, inbound) = TcpTransport::start(cfg, metrics.clone()).await.unwrap();
    (t, inbound, metrics)
}

/// Sends `msg` through `t` every 20 ms until `inbound` receives a message
/// from its sender, or `within` passes.
async fn delivered(
    t: &mut TcpTransport,
    inbound: &mut Inbound,
    msg: Message,
    within: Duration,
) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    while tokio::time::Instant::now() < deadline {
        t.send(msg.clone());
        if let Ok(Some(m)) = tokio::time::timeout(Duration::from_millis(20), inbound.recv()).await {
            assert_eq!((m.from, m.to), (msg.from, msg.to));
            return true;
        }
    }
    false
}

fn dropped_for(m: &Metrics, peer: u64) -> u64 {
    m.messages_dropped
        .get(&PeerLabel::new(peer))
        .map_or(0, |c| c.get())
}

/// A free port on 127.0.0.1 (bound, then released).
fn free_addr() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_without_an_address_here_are_accepted_unless_configured_not_to_be() {
    init_tracing();
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    // Default: node 1 knows nobody, node 2 knows node 1; 2 reaches 1.
    let (t1, mut in1, m1) = transport(1, any, &[], |_| {}).await;
    let (mut t2, _in2, _) = transport(2, any, &[(1, t1.local_addr())], |_| {}).await;
    assert!(delivered(&mut t2, &mut in1, probe(2, 1), Duration::from_secs(10)).await);
    assert_eq!(
        m1.connections_refused
            .get(&ReasonLabel {
                reason: "unknown_peer".into()
            })
            .map_or(0, |c| c.get()),
        0
    );

    // Refusing: node 3 knows nobody and refuses strangers.
    let (t3, mut in3, m3) = transport(3, any, &[], |c| c.accept_unknown_peers = false).await;
    let (mut t4, _in4, _) = transport(4, any, &[(3, t3.local_addr())], |c| {
        c.reconnect_backoff_max = Duration::from_millis(50);
    })
    .await;
    assert!(!delivered(&mut t4, &mut in3, probe(4, 3), Duration::from_millis(500)).await);
    let refusals = m3
        .connections_refused
        .get(&ReasonLabel {
            reason: "unknown_peer".into(),
        })
        .map_or(0, |c| c.get());
    assert!(refusals >= 1, "refused {refusals} times");
}

/// With a back-off far longer than the test may wait, a peer that comes up
/// later is still reached at once: when it connects to us, and when its
/// address is set again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_comes_up_is_reached_without_waiting_out_the_backoff() {
    init_tracing();
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let long = |c: &mut TcpConfig| {
        c.reconnect_backoff_min = Duration::from_secs(600);
        c.reconnect_backoff_max = Duration::from_secs(600);
    };
    for kick_by_set_peer_addr in [false, true] {
        let down = free_addr();
        let (mut t1, _in1, m1) = transport(1, any, &[(2, down)], long).await;
        // Node 2 is down: node 1's first connect fails and it backs off
        // (messages queued meanwhile are dropped and counted).
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while dropped_for(&m1, 2) == 0 {
            assert!(tokio::time::Instant::now() < deadline, "never backed off");
            t1.send(probe(1, 2));
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // Node 2 comes up on that address.
        let (mut t2, mut in2, _) = if kick_by_set_peer_addr {
            let peers = [];
            let r = transport(2, down, &peers, long).await;
            t1.set_peer_addr(2, Some(down.into()));
            r
        } else {
            // It knows node 1 and connects to it: evidence that it is up.
            let (mut t2, in2, m2) = transport(2, down, &[(1, t1.local_addr())], long).await;
            t2.send(probe(2, 1));
            (t2, in2, m2)
        };
        assert!(
            delivered(&mut t1, &mut in2, probe(1, 2), Duration::from_secs(10)).await,
            "node 1 waited out its back-off (kick by set_peer_addr: {kick_by_set_peer_addr})"
        );
        t1.shutdown();
        t1.closed().await;
        t2.shutdown();
        t2.closed().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_port_is_free_once_the_transport_is_closed() {
    init_tracing();
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let (mut t, _in, _) = transport(1, any, &[], |_| {}).await;
    let addr = t.local_addr();
    for _ in 0..20 {
        t.shutdown();
        t.closed().await;
        // Rebinding at once must work (a restarted node reuses its port).
        let (t2, _in2, _) = transport(1, addr, &[], |_| {}).await;
        t = t2;
    }
}
