//! Every node is killed with SIGKILL at once in the middle of a write
//! load; after a restart every acknowledged write is present.

mod cluster_common;

use std::time::Duration;

use cluster_common::{assert_all_present, TestCluster, WriteLoad};

#[tokio::test]
async fn whole_cluster_sigkill_then_restart_keeps_every_acknowledged_write() {
    let mut tc = TestCluster::start(3, 0, &[]).await;
    let client = tc.client();
    let load = WriteLoad::start(&client, 8, "wk/");
    load.wait_progress(200, Duration::from_secs(30)).await;
    // Kill all three while writes are in flight.
    for id in 1..=3 {
        assert!(tc.cluster.kill(id));
    }
    let acked = load.stop().await;
    assert!(acked.len() >= 200);

    tc.cluster.start_all().unwrap();
    tc.wait_for_leader(Duration::from_secs(30)).await;
    assert_all_present(&client, &acked).await;

    // And once more, killing right after the restart's first writes.
    let load = WriteLoad::start(&client, 4, "wk2/");
    load.wait_progress(50, Duration::from_secs(20)).await;
    for id in 1..=3 {
        tc.cluster.kill(id);
    }
    let acked2 = load.stop().await;
    tc.cluster.start_all().unwrap();
    tc.wait_for_leader(Duration::from_secs(30)).await;
    assert_all_present(&client, &acked).await;
    assert_all_present(&client, &acked2).await;
    eprintln!(
        "{} + {} acknowledged writes survived two whole-cluster SIGKILLs",
        acked.len(),
        acked2.len()
    );
}
