//! The driver over the in-process transport and in-memory storage.

mod common;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use raft_core::Membership;
use raft_runtime::local::LocalNetwork;
use raft_runtime::{start, MemStore, Metrics, RaftHandle, ReadConsistency};

fn start_cluster(n: u64) -> (LocalNetwork, Vec<RaftHandle<ListSm>>) {
    let net = LocalNetwork::new();
    let membership = Membership::new_voters(1..=n);
    let handles = (1..=n)
        .map(|id| {
            let cfg = test_config(id);
            let metrics = Metrics::new();
            let (t, inbound) = net.join(id, cfg.inbound_queue_max, metrics.clone());
            let store = Arc::new(MemStore::new(membership.clone()));
            start(cfg, store, ListSm::default(), t, inbound, metrics).unwrap()
        })
        .collect();
    (net, handles)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_elect_replicate_and_read() {
    init_tracing();
    let (_net, hs) = start_cluster(3);
    let refs: Vec<_> = hs.iter().collect();
    let leader = wait_for(Duration::from_secs(5), "a leader", || agreed_leader(&refs)).await;
    let lh = &hs[(leader - 1) as usize];
    // Concurrent proposals, batched by the driver.
    let mut tasks = Vec::new();
    for i in 0..100u32 {
        let h = lh.clone();
        tasks.push(tokio::spawn(async move {
            h.propose(Bytes::from(i.to_be_bytes().to_vec())).await
        }));
    }
    let mut indexes = Vec::new();
    for t in tasks {
        indexes.push(t.await.unwrap().expect("proposal applied"));
    }
    indexes.sort_unstable();
    indexes.dedup();
    assert_eq!(indexes.len(), 100, "each proposal got its own index");
    // A follower refuses proposals with a hint.
    let follower = hs.iter().find(|h| h.id() != leader).unwrap();
    match follower.propose(Bytes::from_static(b"x")).await {
        Err(raft_runtime::ProposeError::NotLeader { leader_hint }) => {
            assert_eq!(leader_hint, Some(leader))
        }
        other => panic!("expected NotLeader, got {other:?}"),
    }
    // Linearizable read on a follower sees everything committed.
    follower.read(ReadConsistency::Linearizable).await.unwrap();
    assert_eq!(items(follower).len(), 100);
    assert_eq!(items(follower), items(lh));
    lh.read(ReadConsistency::Lease).await.unwrap();
    for h in &hs {
        h.shutdown().await.unwrap();
    }
    assert!(matches!(
        lh.propose(Bytes::from_static(b"late")).await,
        Err(raft_runtime::ProposeError::ShuttingDown)
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_a_node_then_transfer_leadership_to_it() {
    use raft_core::MembershipChange;
    init_tracing();
    let (net, mut hs) = start_cluster(3);
    let refs: Vec<_> = hs.iter().collect();
    let leader = wait_for(Duration::from_secs(5), "a leader", || agreed_leader(&refs)).await;
    let lh = hs[(leader - 1) as usize].clone();
    for i in 0..10u32 {
        lh.propose(Bytes::from(format!("m{i}"))).await.unwrap();
    }
    // Node 4 starts empty and learns the configuration from the leader.
    let cfg = test_config(4);
    let metrics = Metrics::new();
    let (t, inbound) = net.join(4, cfg.inbound_queue_max, metrics.clone());
    let store = Arc::new(MemStore::new(Membership::default()));
    let h4 = start(cfg, store, ListSm::default(), t, inbound, metrics).unwrap();
    hs.push(h4.clone());
    lh.change_membership(vec![MembershipChange::AddLearner(4)])
        .await
        .unwrap();
    wait_for(Duration::from_secs(5), "learner catch-up", || async {
        (applied(&h4) >= 11).then_some(())
    })
    .await;
    lh.change_membership(vec![MembershipChange::AddVoter(4)])
        .await
        .unwrap();
    // The joint configuration is left automatically; wait for it.
    wait_for(Duration::from_secs(5), "simple configuration", || async {
        let st = lh.status().await.ok()?;
        (!st.membership.is_joint() && st.membership.voters.contains(&4)).then_some(())
    })
    .await;
    // A second change while one is pending is refused, an invalid one too.
    let bad = lh
        .change_membership(vec![
            MembershipChange::Remove(leader),
            MembershipChange::AddVoter(0),
        ])
        .await;
    assert!(bad.is_err(), "{bad:?}");
    lh.transfer_leadership(4).await.unwrap();
    assert_eq!(h4.status().await.unwrap().role, raft_core::Role::Leader);
    let idx = h4.propose(Bytes::from_static(b"from-4")).await.unwrap();
    for h in &hs {
        wait_for(Duration::from_secs(5), "replication", || async {
            (applied(h) >= idx).then_some(())
        })
        .await;
        assert_eq!(items(h), items(&h4));
    }
    assert!(matches!(
        lh.propose(Bytes::from_static(b"x")).await,
        Err(raft_runtime::ProposeError::NotLeader {
            leader_hint: Some(4)
        })
    ));
    for h in &hs {
        h.shutdown().await.unwrap();
    }
}

/// A commit index advance is written without an fsync of its own: with one
/// proposal at a time, every node syncs about once per proposal (for the
/// entry), not twice (entry, then the commit index that follows it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commit_index_advances_need_no_fsync_of_their_own() {
    init_tracing();
    let (_net, hs) = start_cluster(3);
    let refs: Vec<_> = hs.iter().collect();
    let leader = wait_for(Duration::from_secs(5), "a leader", || agreed_leader(&refs)).await;
    let lh = &hs[(leader - 1) as usize];
    let mut last = lh.propose(Bytes::from_static(b"warm-up")).await.unwrap();
    wait_for(
        Duration::from_secs(5),
        "warm-up applied everywhere",
        || async { hs.iter().all(|h| applied(h) >= last).then_some(()) },
    )
    .await;
    let syncs = |h: &RaftHandle<ListSm>| (h.metrics().syncs.get(), h.metrics().syncs_skipped.get());
    let before: Vec<_> = hs.iter().map(syncs).collect();
    const N: u64 = 40;
    for i in 0..N {
        last = lh.propose(Bytes::from(format!("p{i}"))).await.unwrap();
    }
    wait_for(Duration::from_secs(5), "all applied everywhere", || async {
        hs.iter().all(|h| applied(h) >= last).then_some(())
    })
    .await;
    for (h, (s0, k0)) in hs.iter().zip(before) {
        let (s1, k1) = syncs(h);
        let (synced, skipped) = (s1 - s0, k1 - k0);
        // Slack for the odd group that holds an entry and a commit at once.
        assert!(
            synced <= N + 2,
            "node {}: {synced} fsyncs for {N} proposals",
            h.id()
        );
        // Only the leader is paced by the proposals (each waits for the
        // previous one to apply); a lagging follower may rightly fold
        // several appends into one fsync.
        if h.id() == leader {
            assert!(
                synced >= N / 2,
                "leader {}: only {synced} fsyncs for {N} proposals",
                h.id()
            );
        }
        if h.id() == leader {
            assert!(
                skipped >= 1,
                "leader {}: no commit-only write group",
                h.id()
            );
        }
    }
    for h in &hs {
        h.shutdown().await.unwrap();
    }
}

/// The leader watch follows elections without a round trip to the driver,
/// and `stopped` resolves when a node shuts down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_watch_follows_elections_and_stopped_resolves() {
    init_tracing();
    let (_net, hs) = start_cluster(3);
    let refs: Vec<_> = hs.iter().collect();
    let leader = wait_for(Duration::from_secs(5), "a leader", || agreed_leader(&refs)).await;
    let term = hs[(leader - 1) as usize].status().await.unwrap().term;
    for h in &hs {
        let mut w = h.leader_watch();
        let info = *tokio::time::timeout(
            Duration::from_secs(5),
            w.wait_for(|l| l.leader == Some(leader)),
        )
        .await
        .expect("every node learns the leader")
        .unwrap();
        assert_eq!(info.is_leader(), h.id() == leader);
        assert!(info.term >= term);
        assert_eq!(h.current_leader(), Some(leader));
        assert!(!h.is_stopped());
    }
    // Nothing stopped yet: `stopped` is still pending.
    let lh = hs[(leader - 1) as usize].clone();
    assert!(
        tokio::time::timeout(Duration::from_millis(50), lh.stopped())
            .await
            .is_err()
    );
    let waiter = tokio::spawn({
        let lh = lh.clone();
        async move { lh.stopped().await }
    });
    lh.shutdown().await.unwrap();
    let reason = tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .expect("stopped resolves on shutdown")
        .unwrap();
    assert_eq!(reason, None, "a graceful shutdown has no fatal reason");
    assert!(lh.is_stopped());
    assert_eq!(lh.current_leader(), None);
    assert!(!lh.leader_info().is_leader());
    // The others elect a new leader and their watches show it.
    let rest: Vec<_> = hs.iter().filter(|h| h.id() != leader).collect();
    for h in &rest {
        let mut w = h.leader_watch();
        let info = *tokio::time::timeout(
            Duration::from_secs(10),
            w.wait_for(|l| l.leader.is_some_and(|l| l != leader)),
        )
        .await
        .expect("a new leader")
        .unwrap();
        assert!(info.term > term);
    }
    for h in rest {
        h.shutdown().await.unwrap();
    }
}

/// A snapshot held back for `snapshot_keep_entries` is still compacted
/// after `snapshot_keep_ticks_max` ticks when the writes stop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_snapshot_is_compacted_after_its_tick_bound() {
    init_tracing();
    let net = LocalNetwork::new();
    let membership = Membership::new_voters(1..=1);
    let mut cfg = test_config(1);
    cfg.snapshot_trigger_entries = 20;
    cfg.snapshot_keep_entries = 1_000_000;
    cfg.snapshot_keep_ticks_max = 20; // 200 ms at 10 ms ticks
    let metrics = Metrics::new();
    let (t, inbound) = net.join(1, cfg.inbound_queue_max, metrics.clone());
    let store = Arc::new(MemStore::new(membership));
    let h = start(cfg, store, ListSm::default(), t, inbound, metrics).unwrap();
    let refs = [&h];
    wait_for(Duration::from_secs(5), "a leader", || agreed_leader(&refs)).await;
    for i in 0..25u32 {
        h.propose(Bytes::from(format!("p{i}"))).await.unwrap();
    }
    // Far fewer than the entries to keep were applied after it: only the
    // tick bound can release it.
    let at = wait_for(Duration::from_secs(10), "the held snapshot", || async {
        let s = h.status().await.unwrap().snapshot_index;
        (s > 0).then_some(s)
    })
    .await;
    assert!(at >= 20, "snapshot at {at}");
    // The metrics catch up at the end of the driver's turn, which may come
    // after the status answer that showed the compaction.
    wait_for(Duration::from_secs(5), "the compaction counted", || async {
        (h.metrics().snapshots_taken.get() >= 1).then_some(())
    })
    .await;
    assert_eq!(h.metrics().snapshots_taken.get(), 1);
    h.shutdown().await.unwrap();
}
