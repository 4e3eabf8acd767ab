//! The leader is killed with SIGKILL under a write load: a new leader is
//! elected, writes continue, and every write acknowledged before, during
//! and after is readable afterwards (also on the restarted old leader).

mod cluster_common;

use std::time::Duration;

use cluster_common::{assert_all_present, client_for, TestCluster, WriteLoad};
use raftkv::client::Consistency;

#[tokio::test]
async fn leader_sigkill_under_write_load_loses_no_acknowledged_write() {
    let mut tc = TestCluster::start(3, 0, &[]).await;
    let client = tc.client();
    let load = WriteLoad::start(&client, 4, "lk/");
    load.wait_progress(50, Duration::from_secs(20)).await;

    let (old_leader, old_term) = tc.wait_for_leader(Duration::from_secs(10)).await;
    let before_kill = load.count();
    assert!(tc.cluster.kill(old_leader));
    let (new_leader, new_term) = tc
        .wait_for_leader_where(Duration::from_secs(20), |id, _| id != old_leader)
        .await;
    assert_ne!(new_leader, old_leader);
    assert!(new_term > old_term, "term {new_term} after {old_term}");
    // Writes continue on the two survivors.
    load.wait_progress(50, Duration::from_secs(20)).await;
    assert!(load.count() >= before_kill + 50);

    // The old leader comes back as a follower and catches up.
    tc.cluster.start_node(old_leader).unwrap();
    load.wait_progress(30, Duration::from_secs(20)).await;
    let errors = load.errors.lock().unwrap().clone();
    let acked = load.stop().await;
    let leader_status = tc.status(new_leader).await.expect("leader answers");
    let caught_up = tc
        .wait_applied(
            old_leader,
            leader_status.commit_index,
            Duration::from_secs(20),
        )
        .await;
    assert_ne!(caught_up.role, "leader");

    eprintln!(
        "leader {old_leader} (term {old_term}) killed after {before_kill} writes; node {new_leader} led term {new_term}; \
         {} writes acknowledged; failed attempts {:?}",
        acked.len(),
        errors
    );
    assert_all_present(&client, &acked).await;
    // And the restarted node holds them too (stale reads on it alone).
    let old = client_for(vec![tc.cluster.manifest().endpoint(old_leader)]);
    for (k, v) in acked.iter().step_by(7) {
        let kv = old.get(k, Consistency::Stale).await.unwrap();
        assert_eq!(&kv.value, v, "{k} on the restarted node");
    }
}
