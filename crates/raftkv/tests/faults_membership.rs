//! Membership changes under load: a learner is added, catches up, is
//! promoted; an old voter is removed; leadership moves to the new node.
//! Meanwhile a register checker asserts reads stay linearizable (a read
//! sees at least every write acknowledged before it started) across the
//! leader change, and every acknowledged write survives.

mod cluster_common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cluster_common::{assert_all_present, TestCluster, WriteLoad};
use raftkv::client::{Client, Consistency};

/// One writer increments register `reg`; readers check each linearizable
/// read returns a value between the highest write acknowledged before the
/// read began and the highest write begun before the read ended.
struct RegisterChecker {
    stop: Arc<AtomicBool>,
    reads: Arc<AtomicU64>,
    violations: Arc<Mutex<Vec<String>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl RegisterChecker {
    fn start(client: &Client, readers: usize) -> RegisterChecker {
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(AtomicU64::new(0));
        let begun = Arc::new(AtomicU64::new(0));
        let reads = Arc::new(AtomicU64::new(0));
        let violations = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        {
            let (client, stop, acked, begun) =
                (client.clone(), stop.clone(), acked.clone(), begun.clone());
            tasks.push(tokio::spawn(async move {
                let mut session = client.random_session();
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    begun.fetch_max(n, Ordering::SeqCst);
                    if session.put("reg", &n.to_string()).await.is_ok() {
                        acked.fetch_max(n, Ordering::SeqCst);
                    } else {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            }));
        }
        for _ in 0..readers {
            let (client, stop, acked, begun) =
                (client.clone(), stop.clone(), acked.clone(), begun.clone());
            let (reads, violations) = (reads.clone(), violations.clone());
            tasks.push(tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let floor = acked.load(Ordering::SeqCst);
                    match client.get("reg", Consistency::Linearizable).await {
                        Ok(kv) => {
                            let ceiling = begun.load(Ordering::SeqCst);
                            let v: u64 = kv.value_lossy().parse().unwrap();
                            if v < floor || v > ceiling {
                                violations
                                    .lock()
                                    .unwrap()
                                    .push(format!("read {v} outside [{floor}, {ceiling}]"));
                            }
                            reads.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                    }
                }
            }));
        }
        RegisterChecker {
            stop,
            reads,
            violations,
            tasks,
        }
    }

    async fn wait_reads(&self, n: u64, timeout: Duration) {
        let start = self.reads.load(Ordering::Relaxed);
        let deadline = Instant::now() + timeout;
        while self.reads.load(Ordering::Relaxed) < start + n {
            assert!(Instant::now() < deadline, "linearizable reads stalled");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn stop(self) -> Vec<String> {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            t.await.unwrap();
        }
        let v = self.violations.lock().unwrap().clone();
        v
    }
}

#[tokio::test]
async fn add_learner_promote_remove_voter_and_transfer_under_load() {
    let mut tc = TestCluster::start(3, 1, &[]).await;
    let client = tc.client();
    let m = tc.cluster.manifest().clone();
    client.put("reg", "0").await.unwrap();
    let load = WriteLoad::start(&client, 4, "mb/");
    let checker = RegisterChecker::start(&client, 2);
    load.wait_progress(30, Duration::from_secs(20)).await;
    checker.wait_reads(10, Duration::from_secs(20)).await;

    // Add node 4 as a learner; it catches up.
    tc.cluster.start_node(4).unwrap();
    let members = client
        .add_member(4, &m.peer_addr(4), &m.client_addr(4), true)
        .await
        .unwrap();
    assert!(
        members.iter().any(|x| x.id == 4 && x.role == "learner"),
        "{members:?}"
    );
    load.wait_progress(30, Duration::from_secs(20)).await;
    let (leader, _) = tc.wait_for_leader(Duration::from_secs(10)).await;
    let commit = tc.status(leader).await.unwrap().commit_index;
    let s4 = tc.wait_applied(4, commit, Duration::from_secs(30)).await;
    assert!(s4.members.learners.contains(&4), "{s4:?}");

    // Promote it.
    client.promote_member(4).await.unwrap();
    let members = client.members().await.unwrap();
    assert!(
        members.iter().any(|x| x.id == 4 && x.role == "voter"),
        "{members:?}"
    );

    // Remove an old voter that is not the leader, and stop it.
    let (leader, _) = tc.wait_for_leader(Duration::from_secs(10)).await;
    let removed = (1..=3).find(|id| *id != leader).unwrap();
    client.remove_member(removed).await.unwrap();
    // Stopped before the check: the removed node itself may never learn
    // that its removal committed, and the client could ask it.
    tc.cluster.stop(removed, Duration::from_secs(10));
    let members = client.members().await.unwrap();
    assert!(!members.iter().any(|x| x.id == removed), "{members:?}");
    load.wait_progress(30, Duration::from_secs(20)).await;

    // Hand leadership to the new node while reads and writes go on.
    let reads_before = checker.reads.load(Ordering::Relaxed);
    assert_eq!(client.transfer_leader(4).await.unwrap(), 4);
    let (now_leader, _) = tc
        .wait_for_leader_where(Duration::from_secs(20), |id, _| id == 4)
        .await;
    assert_eq!(now_leader, 4);
    checker.wait_reads(20, Duration::from_secs(20)).await;
    load.wait_progress(30, Duration::from_secs(20)).await;
    assert!(checker.reads.load(Ordering::Relaxed) > reads_before);

    let checker_reads = checker.reads.load(Ordering::Relaxed);
    let violations = checker.stop().await;
    let acked = load.stop().await;
    assert!(
        violations.is_empty(),
        "non-linearizable reads: {violations:?}"
    );
    eprintln!(
        "removed node {removed}; {checker_reads} register reads checked ({reads_before} before the transfer); {} writes",
        acked.len()
    );
    let s = tc.status(4).await.unwrap();
    let mut voters = s.members.voters.clone();
    voters.sort_unstable();
    let mut expected: Vec<u64> = (1..=4).filter(|id| *id != removed).collect();
    expected.sort_unstable();
    assert_eq!(voters, expected, "{s:?}");
    assert!(s.members.learners.is_empty());
    assert_all_present(&client, &acked).await;
}
