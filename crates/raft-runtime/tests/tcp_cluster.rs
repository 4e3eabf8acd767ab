//! Clusters of 3 and 5 nodes over real loopback TCP.

mod common;

use bytes::Bytes;
use common::*;
use raft_runtime::ReadConsistency;

fn snapshotting_config(id: u64) -> raft_runtime::RuntimeConfig {
    let mut c = test_config(id);
    c.snapshot_trigger_entries = 20;
    c.snapshot_keep_entries = 5;
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_survive_leader_shutdown_and_catch_up_restarted_node() {
    init_tracing();
    let mut c = TcpCluster::start(mem_stores(3), test_config).await;
    let leader = c.leader().await;
    for i in 0..30u32 {
        c.propose(format!("a{i}")).await;
    }
    // Shut the leader down: the others elect a new one and keep going.
    c.stop(leader).await;
    let new_leader = c.leader().await;
    assert_ne!(new_leader, leader);
    let mut last = 0;
    for i in 0..30u32 {
        last = c.propose(format!("b{i}")).await;
    }
    // The old leader restarts as a follower and catches up.
    c.restart(leader).await;
    c.wait_applied(last).await;
    let items = c.assert_same_items();
    assert_eq!(items.len(), 60);
    assert_eq!(items[0], Bytes::from("a0"));
    assert_eq!(items[59], Bytes::from("b29"));
    // Linearizable read on the restarted node.
    let h = c.handle(leader);
    h.read(ReadConsistency::Linearizable).await.unwrap();
    let st = h.status().await.unwrap();
    assert!(st.applied_index >= last);
    assert_eq!(st.membership.voters.len(), 3);
    // Metrics are being recorded and render as Prometheus text.
    let text = c.handle(new_leader).metrics().render();
    assert!(text.contains("raft_proposals_total"), "{text}");
    assert!(text.contains("raft_fsync_latency_seconds_bucket"));
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_nodes_replicate_with_two_down() {
    init_tracing();
    let mut c = TcpCluster::start(mem_stores(5), test_config).await;
    let leader = c.leader().await;
    let followers: Vec<u64> = (1..=5).filter(|&i| i != leader).take(2).collect();
    for i in 0..10u32 {
        c.propose(format!("x{i}")).await;
    }
    for &f in &followers {
        c.stop(f).await;
    }
    let mut last = 0;
    for i in 0..20u32 {
        last = c.propose(format!("y{i}")).await;
    }
    for &f in &followers {
        c.restart(f).await;
    }
    c.wait_applied(last).await;
    assert_eq!(c.assert_same_items().len(), 30);
    let st = c.handle(c.leader().await).status().await.unwrap();
    assert_eq!(st.peers.len(), 4);
    for p in &st.peers {
        assert!(p.match_index >= last, "peer {} at {}", p.id, p.match_index);
    }
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follower_behind_compaction_installs_snapshot() {
    init_tracing();
    let mut c = TcpCluster::start(mem_stores(3), snapshotting_config).await;
    let leader = c.leader().await;
    let lagging = (1..=3).find(|&i| i != leader).unwrap();
    c.stop(lagging).await;
    let mut last = 0;
    for i in 0..60u32 {
        last = c.propose(format!("s{i}")).await;
    }
    // The leader compacted past everything the lagging node has.
    let leader_now = c.leader().await;
    let st = c.handle(leader_now).status().await.unwrap();
    assert!(
        st.snapshot_index >= 20,
        "leader snapshot at {}",
        st.snapshot_index
    );
    c.restart(lagging).await;
    c.wait_applied(last).await;
    let m = &c.nodes[&lagging].metrics;
    assert!(
        m.snapshots_installed.get() >= 1,
        "no snapshot was installed"
    );
    assert_eq!(c.assert_same_items().len(), 60);
    // And it keeps replicating normally afterwards.
    let next = c.propose("after").await;
    c.wait_applied(next).await;
    assert_eq!(c.assert_same_items().len(), 61);
    // A restart of the lagging node restores from its own snapshot.
    c.stop(lagging).await;
    c.restart(lagging).await;
    c.wait_applied(next).await;
    assert_eq!(c.assert_same_items().len(), 61);
    c.shutdown().await;
}

/// The log keeps `snapshot_keep_entries` entries after a compaction, so a
/// follower lagging by fewer than that catches up from the log, without a
/// snapshot, although the leader compacted meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_keeps_a_tail_for_slightly_lagging_followers() {
    init_tracing();
    fn config(id: u64) -> raft_runtime::RuntimeConfig {
        let mut c = test_config(id);
        c.snapshot_trigger_entries = 20;
        c.snapshot_keep_entries = 30;
        c
    }
    let mut c = TcpCluster::start(mem_stores(3), config).await;
    let leader = c.leader().await;
    let mut last = 0;
    for i in 0..60u32 {
        last = c.propose(format!("a{i}")).await;
    }
    c.wait_applied(last).await;
    let lagging = (1..=3).find(|&i| i != leader).unwrap();
    c.stop(lagging).await;
    // 25 entries behind: fewer than the 30 kept. Without the tail, the
    // leader (snapshot every 20) would have compacted past the follower.
    for i in 0..25u32 {
        last = c.propose(format!("b{i}")).await;
    }
    let leader_now = c.leader().await;
    let st = c.handle(leader_now).status().await.unwrap();
    assert!(
        st.snapshot_index >= 20,
        "leader compacted: snapshot at {}",
        st.snapshot_index
    );
    assert!(
        st.applied_index >= st.snapshot_index + 30,
        "the log keeps 30 entries after the snapshot: applied {}, snapshot {}",
        st.applied_index,
        st.snapshot_index
    );
    c.restart(lagging).await;
    c.wait_applied(last).await;
    assert_eq!(c.assert_same_items().len(), 85);
    assert_eq!(
        c.nodes[&lagging].metrics.snapshots_installed.get(),
        0,
        "caught up from the log"
    );
    c.shutdown().await;
}
