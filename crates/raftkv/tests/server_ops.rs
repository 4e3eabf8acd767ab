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

/// Every line of a `--log-format json` log, parsed; panics on a line that
/// is not a JSON object with string `timestamp`, `level`, `target` and
/// `message`.
fn json_lines(log: &str) -> Vec<Value> {
    log.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let v: Value = serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("not JSON ({e}): {l}\nwhole log:\n{log}"));
            for field in ["timestamp", "level", "target", "message"] {
                assert!(v[field].is_string(), "no string `{field}` in {l}");
            }
            v
        })
        .collect()
}

#[test]
fn json_logs_are_one_flat_object_per_line() {
    let mut c = Cluster::start_with(ClusterOptions {
        nodes: 1,
        extra_args: vec!["--log-format".into(), "json".into()],
        ..ClusterOptions::default()
    });
    let leader = c.leader();
    assert_eq!(c.put(leader, "k", "v").status, 200);
    assert!(c.terminate(1).success());
    let log = c.log(1);
    let lines = json_lines(&log);
    // Startup facts are fields of their own, not Debug dumps.
    let open = lines
        .iter()
        .find(|v| v["message"] == "data directory open")
        .unwrap_or_else(|| panic!("no `data directory open` line:\n{log}"));
    assert!(open["segments"].is_u64(), "{open}");
    assert!(open["records"].is_u64(), "{open}");
    assert_eq!(open["node"], 1, "{open}");
    assert!(
        !log.contains("RecoveryReport") && !log.contains("Some("),
        "Debug-formatted values in the log:\n{log}"
    );
    let leader_line = lines
        .iter()
        .find(|v| v["message"] == "leader changed")
        .unwrap_or_else(|| panic!("no `leader changed` line:\n{log}"));
    assert_eq!(leader_line["leader"], 1, "{leader_line}");
    assert!(
        lines.iter().any(|v| v["level"] == "INFO"
            && v["target"] == "raftkv::server::node"
            && v["message"].as_str().unwrap().contains(SERVING_LINE)),
        "no serving line:\n{log}"
    );
}

#[test]
fn unknown_log_format_is_a_startup_error() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("node-1");
    let (status, stderr) = run_to_exit(&[
        "serve".into(),
        "--id".into(),
        "1".into(),
        "--peers".into(),
        "1=127.0.0.1:1".into(),
        "--listen-client".into(),
        "127.0.0.1:2".into(),
        "--data-dir".into(),
        data.display().to_string(),
        "--log-format".into(),
        "yaml".into(),
    ]);
    assert!(!status.success());
    assert!(
        stderr.contains("--log-format: `yaml` is not a log format; use text or json"),
        "{stderr}"
    );
    assert!(!data.exists(), "the data directory was created");
}

/// The access log lines (target `raftkv::access`) of a JSON log.
fn access_lines(log: &str) -> Vec<Value> {
    json_lines(log)
        .into_iter()
        .filter(|v| v["target"] == "raftkv::access")
        .collect()
}

fn with_request_id<'a>(lines: &'a [Value], id: &str) -> Vec<&'a Value> {
    lines.iter().filter(|v| v["request_id"] == id).collect()
}

#[test]
fn access_log_has_one_line_per_request_on_both_paths() {
    let mut c = Cluster::start_with(ClusterOptions {
        nodes: 3,
        extra_args: vec!["--log-format".into(), "json".into(), "--access-log".into()],
        ..ClusterOptions::default()
    });
    let leader = c.leader();
    let follower = c.followers()[0];
    // A plain PUT (the direct path) to a follower, which forwards it.
    let put = http_request_with(
        c.addr(follower),
        "PUT",
        "/v1/kv/greeting",
        Some(r#"{"value":"hello"}"#),
        &[("x-request-id", "access-put-1")],
    )
    .unwrap();
    assert_eq!(put.status, 200, "{}", put.body);
    // A routed request that fails: 404 on the leader.
    let get = http_request_with(
        c.addr(leader),
        "GET",
        "/v1/kv/absent?consistency=stale",
        None,
        &[("x-request-id", "access-get-2")],
    )
    .unwrap();
    assert_eq!(get.status, 404, "{}", get.body);

    // The events are written before the answer leaves, so they are in the
    // files by now.
    let on_follower = access_lines(&c.log(follower));
    let lines = with_request_id(&on_follower, "access-put-1");
    assert_eq!(lines.len(), 1, "{on_follower:#?}");
    let l = lines[0];
    assert_eq!(l["level"], "INFO");
    assert_eq!(l["method"], "PUT");
    assert_eq!(l["path"], "/v1/kv/greeting");
    assert_eq!(l["status"], 200);
    assert_eq!(l["node"], follower);
    assert_eq!(l["forwarded"], true);
    assert_eq!(l["forwarded_to"], leader);
    assert_eq!(l["from_follower"], false);
    assert!(l["latency_us"].as_u64().is_some_and(|us| us > 0), "{l}");

    let on_leader = access_lines(&c.log(leader));
    let lines = with_request_id(&on_leader, "access-put-1");
    assert_eq!(lines.len(), 1, "{on_leader:#?}");
    assert_eq!(lines[0]["from_follower"], true);
    assert_eq!(lines[0]["forwarded"], false);
    assert_eq!(lines[0]["node"], leader);
    let lines = with_request_id(&on_leader, "access-get-2");
    assert_eq!(lines.len(), 1, "{on_leader:#?}");
    assert_eq!(lines[0]["method"], "GET");
    assert_eq!(lines[0]["path"], "/v1/kv/absent");
    assert_eq!(lines[0]["status"], 404);
}

#[test]
fn access_log_is_off_by_default() {
    let mut c = Cluster::start_with(ClusterOptions {
        nodes: 1,
        extra_args: vec!["--log-format".into(), "json".into()],
        ..ClusterOptions::default()
    });
    let leader = c.leader();
    assert_eq!(c.put(leader, "k", "v").status, 200);
    assert_eq!(c.get(leader, "k").status, 200);
    let log = c.log(leader);
    // The log is there (JSON lines), without a single access line.
    assert!(json_lines(&log).len() > 3, "{log}");
    assert!(access_lines(&log).is_empty(), "{log}");
}

#[test]
fn peers_clients_and_members_can_be_host_names() {
    let mut c = Cluster::start_with(ClusterOptions {
        nodes: 3,
        host: Some("localhost".into()),
        ..ClusterOptions::default()
    });
    assert!(c.nodes[&1].args.iter().any(|a| a.contains("1=localhost:")));
    let leader = c.leader();
    let follower = c.followers()[0];
    // A write through a follower: forwarded to the leader's localhost:PORT.
    let r = c.put(follower, "host", "names");
    assert_eq!(r.status, 200, "{}", r.body);
    let rev = r.json()["revision"].as_u64().unwrap();
    for id in 1..=3 {
        c.wait_applied(id, rev);
        let g = c.request(id, "GET", "/v1/kv/host?consistency=stale", None);
        assert_eq!(g.json()["value"], "names", "node {id}: {}", g.body);
    }
    // The addresses are kept (and replicated) as given.
    let m = c.request(leader, "GET", "/v1/members", None).json();
    let peer = format!("localhost:{}", c.nodes[&2].peer_addr.port());
    let member2 = m["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == 2)
        .unwrap_or_else(|| panic!("{m}"));
    assert_eq!(member2["peer_addr"], peer.as_str(), "{m}");

    // A node added at runtime with host-name addresses (members format 2)
    // gets the log.
    c.spawn_joiner(4);
    let add = c.add_member(leader, 4, "learner");
    assert_eq!(add.status, 200, "{}", add.body);
    let r = c.put(leader, "after", "join");
    assert_eq!(r.status, 200, "{}", r.body);
    c.wait_applied(4, r.json()["revision"].as_u64().unwrap());
    let m = c.request(4, "GET", "/v1/members", None).json();
    assert!(
        m["members"]
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x["id"] == 4 && x["client_addr"].as_str().unwrap().starts_with("localhost:")),
        "{m}"
    );

    // The CLI with a host-name endpoint.
    let endpoint = format!("http://localhost:{}", c.addr(follower).port());
    let out = Command::new(RAFTKV)
        .args(["get", "host", "--endpoints", &endpoint])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "names");
}

#[test]
fn malformed_addresses_are_startup_errors() {
    for (flag, value, needle) in [
        (
            "--peers",
            "1=local host:7800",
            "--peers: node 1: `local host:7800` is not a HOST:PORT",
        ),
        ("--peers", "1=localhost", "no :PORT"),
        ("--peers", "1=::1:7800", "brackets"),
        ("--listen-client", "localhost:99999", "port"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("node-1");
        let mut args: Vec<String> = ["serve", "--id", "1", "--data-dir"]
            .map(String::from)
            .to_vec();
        args.push(data.display().to_string());
        if flag != "--peers" {
            args.extend(["--peers".into(), "1=localhost:7800".into()]);
        }
        args.extend([flag.to_string(), value.to_string()]);
        let (status, stderr) = run_to_exit(&args);
        assert!(!status.success(), "{flag} {value}");
        assert!(stderr.contains(needle), "{flag} {value}: {stderr}");
        assert!(
            !data.exists(),
            "{flag} {value}: the data directory was created"
        );
    }
}
