//! Running raftkv like a service (issue 13), against real `raftkv serve`
//! processes: `/version` and `raftkv version`, the build-info and process
//! metrics.

mod support;

use std::process::Command;

use raftkv::version::BuildInfo;
use serde_json::Value;
use support::*;

/// Value of the sample `name` (a line `name VALUE` or `name{...} VALUE`).
fn sample(metrics: &str, name: &str) -> Option<f64> {
    metrics.lines().find_map(|l| {
        let rest = l.strip_prefix(name)?;
        let value = if rest.starts_with('{') {
            rest.split_once("} ")?.1
        } else {
            rest.strip_prefix(' ')?
        };
        value.trim().parse().ok()
    })
}

#[test]
fn version_route_cli_and_build_and_process_metrics() {
    let mut c = Cluster::start(1);
    c.leader();
    let build = BuildInfo::current();
    // The test is compiled in the same build as the server: same revision.
    if let Ok(out) = Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .output()
    {
        if out.status.success() {
            let head = String::from_utf8_lossy(&out.stdout).trim().to_string();
            assert_eq!(build.revision, head, "build.rs recorded another revision");
        }
    }

    let r = c.request(1, "GET", "/version", None);
    assert_eq!(r.status, 200, "{}", r.body);
    let v: Value = r.json();
    assert_eq!(v, serde_json::to_value(&build).unwrap(), "{}", r.body);
    assert_eq!(v["version"], env!("CARGO_PKG_VERSION"));
    assert!(
        matches!(v["profile"].as_str(), Some("debug" | "release")),
        "{v}"
    );
    assert!(v["rustc"].as_str().unwrap().starts_with("rustc "), "{v}");
    // No parameters taken, none ignored.
    let bad = c.request(1, "GET", "/version?verbose=1", None);
    assert_eq!(bad.status, 400, "{}", bad.body);

    // The CLI: its own build, then the server's.
    let endpoint = c.nodes[&1].endpoint();
    let out = Command::new(RAFTKV)
        .args(["version", "--endpoints", &endpoint])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    assert_eq!(lines[0], format!("raftkv {}", build.one_line()));
    assert_eq!(lines[1], format!("{endpoint} {}", build.one_line()));
    // Without --endpoints it asks nobody; an unreachable server is exit 5.
    let out = Command::new(RAFTKV).arg("version").output().unwrap();
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 1);
    let dead = format!("http://{}", loopback(free_ports(1)[0]));
    let out = Command::new(RAFTKV)
        .args(["version", "--endpoints", &dead, "--timeout", "1s"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(5), "{out:?}");

    // Metrics: build info, and process metrics that are plausible.
    let m = c.request(1, "GET", "/metrics", None).body;
    let info = format!(
        "raftkv_build_info{{version=\"{}\",revision=\"{}\"}} 1",
        build.version,
        build.revision_label()
    );
    assert!(m.lines().any(|l| l == info), "no `{info}` in:\n{m}");
    let rss = sample(&m, "process_resident_memory_bytes").expect("rss");
    assert!(rss > 1e6, "rss {rss}");
    let fds = sample(&m, "process_open_fds").expect("fds");
    assert!(fds >= 5.0, "fds {fds}"); // stdio, two listeners, the WAL...
    let start = sample(&m, "process_start_time_seconds").expect("start time");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(
        start <= now + 1.0 && start > now - 600.0,
        "start {start}, now {now}"
    );
    let cpu = sample(&m, "process_cpu_seconds_total").expect("cpu");
    assert!(cpu > 0.0, "cpu {cpu}");
}
