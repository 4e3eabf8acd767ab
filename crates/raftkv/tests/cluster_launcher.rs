//! `raftkv cluster` as a user runs it: starts, elects, serves, stops
//! cleanly on Ctrl-C, restarts the same cluster from its data, kills and
//! restarts leaders on a timer without losing acknowledged writes.

mod cluster_common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use cluster_common::{assert_all_present, bin, client_for, TestCluster, WriteLoad};
use raftkv::client::Consistency;
use raftkv::cluster::{free_base_port, load_or_create_manifest, port_is_free, LocalCluster};

/// A running `raftkv cluster` with its stdout collected line by line.
struct Launcher {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Launcher {
    fn start(data_dir: &Path, base: u16, extra: &[&str]) -> Launcher {
        let mut child = Command::new(bin())
            .arg("cluster")
            .arg("--nodes")
            .arg("3")
            .arg("--base-port")
            .arg(base.to_string())
            .arg("--data-dir")
            .arg(data_dir)
            .args(extra)
            .arg("--")
            .args(cluster_common::TEST_SERVE_ARGS)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Launcher {
            child,
            lines: rx,
            seen: Vec::new(),
        }
    }

    /// Waits for a stdout line containing `needle`; returns it.
    fn wait_line(&mut self, needle: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(l) = self.seen.iter().find(|l| l.contains(needle)) {
                return l.clone();
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => self.seen.push(line),
                Err(_) => panic!(
                    "no line with {needle:?} within {timeout:?}; output so far:\n{}",
                    self.seen.join("\n")
                ),
            }
        }
    }

    /// Waits for the process to exit; returns its status and all output.
    fn wait_exit(mut self, timeout: Duration) -> (std::process::ExitStatus, String, String) {
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                panic!(
                    "raftkv cluster did not exit within {timeout:?}:\n{}",
                    self.seen.join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(2)) {
            self.seen.push(line);
        }
        let mut err = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            use std::io::Read;
            let _ = e.read_to_string(&mut err);
        }
        (status, self.seen.join("\n"), err)
    }

    fn signal(&self, sig: i32) {
        // SAFETY: plain kill(2) on our own unreaped child.
        unsafe {
            libc::kill(self.child.id() as i32, sig);
        }
    }
}

impl Drop for Launcher {
    /// A failed test must not leave a cluster running: SIGKILL the
    /// launcher; its nodes follow through their parent-death signal.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn all_ports_free(base: u16) -> bool {
    (0..3).all(|i| port_is_free(base + i) && port_is_free(base + 100 + i))
}

#[tokio::test]
async fn cluster_starts_elects_serves_stops_and_restarts_from_its_data() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let base = free_base_port(3);
    let endpoints: Vec<String> = (0..3)
        .map(|i| format!("http://127.0.0.1:{}", base + i))
        .collect();

    // First run: new cluster; stopped with SIGINT, as Ctrl-C would.
    let mut l = Launcher::start(&data, base, &["--plain"]);
    l.wait_line(
        &format!("node 1: http://127.0.0.1:{base}"),
        Duration::from_secs(10),
    );
    l.wait_line("(new)", Duration::from_secs(1));
    l.wait_line("The cluster is serving", Duration::from_secs(30));
    l.wait_line("raftkv put greeting hello", Duration::from_secs(1));
    l.wait_line(
        &format!("export RAFTKV_ENDPOINTS={}", endpoints.join(",")),
        Duration::from_secs(1),
    );
    l.wait_line("curl -X PUT", Duration::from_secs(1));
    let leader_line = l.wait_line(" is the leader (term ", Duration::from_secs(30));
    assert!(leader_line.contains("node "), "{leader_line}");
    let client = client_for(endpoints.clone());
    client.put("greeting", "hello").await.unwrap();
    assert_eq!(
        client
            .get("greeting", Consistency::Linearizable)
            .await
            .unwrap()
            .value,
        "hello"
    );
    let cluster_id = std::fs::read_to_string(data.join("cluster.json")).unwrap();
    for i in 1..=3 {
        assert!(data.join(format!("node-{i}/server.log")).exists());
    }
    l.signal(libc::SIGINT);
    let (status, out, err) = l.wait_exit(Duration::from_secs(30));
    assert!(status.success(), "exit {status}: {out}\n{err}");
    assert!(out.contains("Ctrl-C: stopping the cluster"), "{out}");
    assert!(out.contains("cluster stopped; data kept in"), "{out}");
    assert!(all_ports_free(base), "every node process is gone");

    // Second run: same data dir, no layout flags: restarts the same
    // cluster, the key is still there; --duration ends it by itself.
    let mut l = Launcher::start(&data, base, &["--plain", "--duration", "3s"]);
    l.wait_line("restarting from its data", Duration::from_secs(10));
    l.wait_line(" is the leader (term ", Duration::from_secs(30));
    assert_eq!(
        client
            .get("greeting", Consistency::Linearizable)
            .await
            .unwrap()
            .value,
        "hello"
    );
    let (status, out, err) = l.wait_exit(Duration::from_secs(40));
    assert!(status.success(), "exit {status}: {out}\n{err}");
    assert!(
        out.contains("--duration elapsed: stopping the cluster"),
        "{out}"
    );
    assert_eq!(
        std::fs::read_to_string(data.join("cluster.json")).unwrap(),
        cluster_id
    );
    assert!(all_ports_free(base));

    // A different layout on the same data is refused with a clear error.
    let o = Command::new(bin())
        .args(["cluster", "--nodes", "5", "--data-dir"])
        .arg(&data)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("holds a 3-node cluster"), "{err}");
}

#[test]
fn cluster_refuses_ports_in_use() {
    let dir = tempfile::tempdir().unwrap();
    let base = free_base_port(3);
    let _busy = std::net::TcpListener::bind(("127.0.0.1", base + 101)).unwrap();
    let o = Command::new(bin())
        .args(["cluster", "--base-port", &base.to_string(), "--data-dir"])
        .arg(dir.path().join("d"))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains(&format!("port {} on 127.0.0.1 is in use", base + 101)),
        "{err}"
    );
}

#[tokio::test]
async fn kill_leader_every_shows_failovers_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let base = free_base_port(3);
    let endpoints: Vec<String> = (0..3)
        .map(|i| format!("http://127.0.0.1:{}", base + i))
        .collect();
    let mut l = Launcher::start(
        &data,
        base,
        &[
            "--plain",
            "--kill-leader-every",
            "3s",
            "--restart-after",
            "1s",
            "--duration",
            "11s",
        ],
    );
    l.wait_line("The cluster is serving", Duration::from_secs(30));
    let client = client_for(endpoints.clone());
    let load = WriteLoad::start(&client, 4, "k/");
    let killed = l.wait_line("killed the leader, node ", Duration::from_secs(20));
    let failover = l.wait_line("was killed", Duration::from_secs(20));
    assert!(failover.contains("is the leader"), "{failover}");
    l.wait_line("restarted node ", Duration::from_secs(10));
    load.wait_progress(20, Duration::from_secs(20)).await;
    let (status, out, err) = l.wait_exit(Duration::from_secs(60));
    let acked = load.stop().await;
    assert!(status.success(), "exit {status}: {out}\n{err}");
    assert!(killed.contains("with SIGKILL"), "{killed}");
    assert!(!acked.is_empty());

    // Bring the same cluster back (as the launcher would) and read every
    // acknowledged write.
    let (manifest, created) = load_or_create_manifest(&data, None, None).unwrap();
    assert!(!created);
    let args = cluster_common::TEST_SERVE_ARGS
        .iter()
        .map(|s| s.to_string())
        .collect();
    let mut cluster = LocalCluster::new(manifest, data.clone(), bin(), args);
    cluster.start_all().unwrap();
    let mut tc = TestCluster { cluster, dir };
    tc.wait_for_leader(Duration::from_secs(30)).await;
    assert_all_present(&client, &acked).await;
    tc.cluster.stop_all(Duration::from_secs(10));
}

#[test]
fn nodes_do_not_outlive_a_killed_launcher() {
    let dir = tempfile::tempdir().unwrap();
    let base = free_base_port(3);
    let mut l = Launcher::start(&dir.path().join("data"), base, &["--plain"]);
    l.wait_line("The cluster is serving", Duration::from_secs(30));
    assert!(!all_ports_free(base));
    // SIGKILL: no chance to stop the children; their parent-death signal
    // (SIGTERM) must make them exit by themselves.
    l.signal(libc::SIGKILL);
    let (status, _, _) = l.wait_exit(Duration::from_secs(10));
    assert!(!status.success());
    let deadline = Instant::now() + Duration::from_secs(20);
    while !all_ports_free(base) {
        assert!(
            Instant::now() < deadline,
            "node processes outlived the launcher"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn log_format_reaches_every_node_and_a_bad_one_is_refused_first() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let base = free_base_port(3);
    let mut l = Launcher::start(
        &data,
        base,
        &["--plain", "--duration", "3s", "--log-format", "json"],
    );
    l.wait_line(" is the leader (term ", Duration::from_secs(30));
    let (status, out, err) = l.wait_exit(Duration::from_secs(40));
    assert!(status.success(), "exit {status}: {out}\n{err}");
    for id in 1..=3 {
        let log = std::fs::read_to_string(data.join(format!("node-{id}/server.log"))).unwrap();
        let mut lines = 0;
        for line in log.lines().filter(|l| !l.trim().is_empty()) {
            let v: serde_json::Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("node {id}: not JSON ({e}): {line}"));
            assert!(v["level"].is_string() && v["message"].is_string(), "{line}");
            lines += 1;
        }
        assert!(lines > 3, "node {id} logged {lines} lines:\n{log}");
    }

    // A bad format is refused before anything is created or started.
    let fresh = dir.path().join("fresh");
    let o = Command::new(bin())
        .args(["cluster", "--log-format", "xml", "--data-dir"])
        .arg(&fresh)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("`xml` is not a log format"), "{err}");
    assert!(!fresh.exists());
}
