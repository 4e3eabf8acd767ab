//! A loopback TCP cluster on the real storage engine (fsync on), with a
//! restart that reopens the data directory from disk.

mod common;

use std::path::Path;
use std::sync::Arc;

use common::*;
use raft_core::Membership;
use raft_storage::{RealDisk, Store, StoreConfig};

fn open(dir: &Path, id: u64) -> Arc<Store<RealDisk>> {
    let cfg = StoreConfig {
        segment_bytes_max: 64 << 10, // small segments so compaction deletes some
        ..StoreConfig::default()
    };
    Arc::new(
        Store::open_or_bootstrap(
            RealDisk,
            dir.join(format!("n{id}")),
            CLUSTER_ID,
            id,
            Membership::new_voters(1..=3),
            cfg,
        )
        .unwrap(),
    )
}

fn config(id: u64) -> raft_runtime::RuntimeConfig {
    let mut c = test_config(id);
    c.snapshot_trigger_entries = 50;
    c.snapshot_keep_entries = 10;
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_disk_cluster_restarts_from_its_directory() {
    init_tracing();
    let tmp = tempfile::tempdir().unwrap();
    let stores = (1..=3).map(|id| open(tmp.path(), id)).collect();
    let mut c = TcpCluster::start(stores, config).await;
    let leader = c.leader().await;
    let follower = (1..=3).find(|&i| i != leader).unwrap();
    for i in 0..40u32 {
        c.propose(format!("p{i}")).await;
    }
    c.stop(follower).await;
    let mut last = 0;
    for i in 0..80u32 {
        last = c.propose(format!("q{i}")).await;
    }
    // Reopen the stopped follower's directory: it recovers from disk and
    // catches up (by snapshot: the leader compacted past its log).
    c.replace_store(follower, open(tmp.path(), follower));
    c.restart(follower).await;
    c.wait_applied(last).await;
    assert_eq!(c.assert_same_items().len(), 120);
    // Full restart of every node from disk: nothing is lost or applied twice.
    for id in 1..=3 {
        c.stop(id).await;
    }
    for id in 1..=3 {
        c.replace_store(id, open(tmp.path(), id));
        c.restart(id).await;
    }
    let next = c.propose("after-restart").await;
    c.wait_applied(next).await;
    let items = c.assert_same_items();
    assert_eq!(items.len(), 121);
    assert_eq!(items[120], bytes::Bytes::from("after-restart"));
    let st = c.handle(c.leader().await).status().await.unwrap();
    assert!(st.snapshot_index >= 50, "snapshot at {}", st.snapshot_index);
    c.shutdown().await;
}
