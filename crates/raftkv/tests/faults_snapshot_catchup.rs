//! A follower is stopped long enough that the leader compacts its log past
//! the follower's last entry; on restart the follower catches up through a
//! snapshot (the leader no longer has the entries it lacks).

mod cluster_common;

use std::time::{Duration, Instant};

use cluster_common::{assert_all_present, client_for, TestCluster, WriteLoad};
use raftkv::client::Consistency;

/// Value of the Prometheus counter `name` (any suffix, e.g. `_total`).
async fn counter(endpoint: &str, name: &str) -> f64 {
    let text = reqwest::get(format!("{endpoint}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .filter(|l| !l.starts_with('#') && l.starts_with(name))
        .filter_map(|l| l.split_whitespace().last()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test]
async fn stopped_follower_catches_up_through_a_snapshot() {
    let mut tc = TestCluster::start(3, 0, &["--snapshot-entries", "100"]).await;
    let client = tc.client();
    let (leader, _) = tc.wait_for_leader(Duration::from_secs(10)).await;
    let follower = (1..=3).find(|id| *id != leader).unwrap();

    // Some history on every node, then the follower goes down gracefully.
    let load = WriteLoad::start(&client, 4, "s1/");
    load.wait_progress(30, Duration::from_secs(20)).await;
    let acked1 = load.stop().await;
    let leader_commit = tc.status(leader).await.unwrap().commit_index;
    tc.wait_applied(follower, leader_commit, Duration::from_secs(10))
        .await;
    let before = tc.status(follower).await.unwrap();
    assert!(
        tc.cluster.stop(follower, Duration::from_secs(10)).is_some(),
        "follower exits on SIGTERM"
    );
    let follower_ep = tc.cluster.manifest().endpoint(follower);

    // Write until the leader's snapshot is past everything the follower has.
    let load = WriteLoad::start(&client, 8, "s2/");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let s = tc.status(leader).await.expect("leader answers");
        if s.snapshot_index > before.last_index + 1 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "leader never compacted past {}: {s:?}",
            before.last_index
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Keep the load on while the follower restarts and catches up.
    tc.cluster.start_node(follower).unwrap();
    load.wait_progress(50, Duration::from_secs(20)).await;
    let acked2 = load.stop().await;
    let leader_status = tc.status(leader).await.unwrap();
    let after = tc
        .wait_applied(
            follower,
            leader_status.commit_index,
            Duration::from_secs(30),
        )
        .await;
    eprintln!(
        "follower {follower} stopped at last index {}; leader snapshot {}; follower now snapshot {} applied {}; {} + {} writes",
        before.last_index,
        leader_status.snapshot_index,
        after.snapshot_index,
        after.applied_index,
        acked1.len(),
        acked2.len()
    );
    assert!(
        after.snapshot_index > before.last_index,
        "the follower's state comes from a snapshot past its old log: before {before:?}, after {after:?}"
    );
    assert!(
        counter(&follower_ep, "raft_snapshots_installed").await >= 1.0,
        "the follower installed a snapshot from the leader"
    );

    // Everything acknowledged is readable through the cluster, and the
    // caught-up follower holds it too.
    assert_all_present(&client, &acked1).await;
    assert_all_present(&client, &acked2).await;
    let on_follower = client_for(vec![follower_ep]);
    for (k, v) in acked1.iter().chain(acked2.iter()).step_by(5) {
        assert_eq!(
            &on_follower.get(k, Consistency::Stale).await.unwrap().value,
            v,
            "{k}"
        );
    }
}
