//! `raftkv bench` against a real cluster: it runs, reports, writes JSON,
//! and what it wrote is really in the store.

mod cluster_common;

use std::process::Command;

use cluster_common::{bin, free_port_endpoints, TestCluster};
use raftkv::client::Consistency;

#[tokio::test]
async fn bench_reports_latency_and_throughput_as_text_and_json() {
    let tc = TestCluster::start(3, 0, &[]).await;
    let json_path = tc.dir.path().join("bench.json");
    let out = Command::new(bin())
        .args([
            "bench",
            "--clients",
            "4",
            "--duration",
            "2s",
            "--value-size",
            "32",
        ])
        .args([
            "--read-ratio",
            "0.5",
            "--keys",
            "50",
            "--prefill",
            "--key-prefix",
            "b/",
        ])
        .arg("--json")
        .arg(&json_path)
        .arg("--endpoints")
        .arg(tc.endpoints_flag())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    for needle in ["writes", "reads", "p50", "p99.9", "ops/s", "errors  none"] {
        assert!(
            stdout.contains(needle),
            "{needle:?} missing from:\n{stdout}"
        );
    }
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&json_path).unwrap()).unwrap();
    let writes = report["writes"]["count"].as_u64().unwrap();
    let reads = report["reads"]["count"].as_u64().unwrap();
    assert!(writes > 0 && reads > 0, "{report}");
    // Prefilled: every read found its key.
    assert_eq!(report["read_misses"], 0, "{report}");
    assert_eq!(report["clients"], 4);
    let p50 = report["writes"]["p50_us"].as_u64().unwrap();
    let p99 = report["writes"]["p99_us"].as_u64().unwrap();
    assert!(p50 > 0 && p50 <= p99, "{report}");
    assert!(report["errors"].as_object().unwrap().is_empty(), "{report}");

    // The bench's values are in the store: 32 lowercase letters.
    let kv = tc
        .client()
        .get("b/0", Consistency::Linearizable)
        .await
        .unwrap();
    assert_eq!(kv.value.len(), 32);
    assert!(kv.version >= 1);
}

#[test]
fn bench_without_a_cluster_fails_clearly() {
    let out = Command::new(bin())
        .args(["bench", "--duration", "1s", "--endpoints"])
        .arg(free_port_endpoints(1).join(","))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no node reachable"), "{stderr}");
    let out = Command::new(bin())
        .args(["bench", "--read-ratio", "1.5"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--read-ratio must be between 0.0 and 1.0")
    );
}
