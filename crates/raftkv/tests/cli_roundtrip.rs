//! The CLI against a real 3-node cluster: every command's output, error
//! messages and exit codes.

mod cluster_common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::process::{Command, Output};
use std::time::Duration;

use cluster_common::{bin, free_port_endpoints, TestCluster};

fn run(endpoints: &str, args: &[&str]) -> Output {
    Command::new(bin())
        .args(args)
        .arg("--endpoints")
        .arg(endpoints)
        .env_remove("RAFTKV_ENDPOINTS")
        .output()
        .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).to_string()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

/// Runs a command that must succeed and returns its stdout.
fn ok(endpoints: &str, args: &[&str]) -> String {
    let o = run(endpoints, args);
    assert!(
        o.status.success(),
        "{args:?} failed: {}{}",
        stdout(&o),
        stderr(&o)
    );
    stdout(&o)
}

/// Runs a command that must fail with `code` and a one-line message
/// containing `needle`; returns stderr.
fn fails(endpoints: &str, args: &[&str], code: i32, needle: &str) -> String {
    let o = run(endpoints, args);
    let err = stderr(&o);
    assert_eq!(
        o.status.code(),
        Some(code),
        "{args:?}: stdout {} stderr {err}",
        stdout(&o)
    );
    assert!(err.contains(needle), "{args:?}: {err:?} lacks {needle:?}");
    assert!(err.starts_with("error: "), "{args:?}: {err:?}");
    err
}

#[tokio::test]
async fn cli_round_trip_against_a_running_cluster() {
    let tc = TestCluster::start(3, 0, &[]).await;
    let ep = tc.endpoints_flag();
    let ep = ep.as_str();

    // put / get / overwrite
    assert!(ok(ep, &["put", "greeting", "hello"]).starts_with("OK (revision "));
    assert_eq!(ok(ep, &["get", "greeting"]), "hello\n");
    ok(ep, &["put", "greeting", "hello again"]);
    assert_eq!(
        ok(ep, &["get", "greeting", "--consistency", "lease"]),
        "hello again\n"
    );
    let kv: serde_json::Value =
        serde_json::from_str(&ok(ep, &["get", "greeting", "--json"])).unwrap();
    assert_eq!(kv["key"], "greeting");
    assert_eq!(kv["value"], "hello again");
    assert_eq!(kv["version"], 2);
    let mod_revision = kv["mod_revision"].as_u64().unwrap();

    // keys needing escapes survive the round trip
    ok(ep, &["put", "dir/a b?c#%", "odd"]);
    assert_eq!(ok(ep, &["get", "dir/a b?c#%"]), "odd\n");

    // stale reads on one follower-or-leader endpoint only
    let single = tc.endpoints()[2].clone();
    // a stale read may lag; the linearizable write above is committed, so
    // retry briefly until this node applied it.
    let mut seen = String::new();
    for _ in 0..100 {
        seen = stdout(&run(
            &single,
            &["get", "greeting", "--consistency", "stale"],
        ));
        if seen == "hello again\n" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(seen, "hello again\n");

    // missing keys: exit 3 and a clear message
    fails(ep, &["get", "nope"], 3, "error: key not found: nope");
    fails(ep, &["del", "nope"], 3, "key not found: nope");

    // cas on value, on absence, on revision; mismatch exits 4
    ok(
        ep,
        &[
            "cas",
            "greeting",
            "--expected-value",
            "hello again",
            "--value",
            "swapped",
        ],
    );
    assert_eq!(ok(ep, &["get", "greeting"]), "swapped\n");
    let err = fails(
        ep,
        &[
            "cas",
            "greeting",
            "--expected-value",
            "hello again",
            "--value",
            "x",
        ],
        4,
        "compare-and-swap failed",
    );
    assert!(
        err.contains("swapped"),
        "mismatch shows the current value: {err}"
    );
    fails(
        ep,
        &["cas", "greeting", "--expected-absent", "--value", "x"],
        4,
        "compare-and-swap failed",
    );
    ok(ep, &["cas", "fresh", "--expected-absent", "--value", "new"]);
    assert_eq!(ok(ep, &["get", "fresh"]), "new\n");
    fails(
        ep,
        &[
            "cas",
            "greeting",
            "--expected-mod-revision",
            &mod_revision.to_string(),
            "--value",
            "x",
        ],
        4,
        "compare-and-swap failed",
    );
    let kv: serde_json::Value =
        serde_json::from_str(&ok(ep, &["get", "greeting", "--json"])).unwrap();
    let rev = kv["mod_revision"].as_u64().unwrap().to_string();
    ok(
        ep,
        &[
            "cas",
            "greeting",
            "--expected-mod-revision",
            &rev,
            "--delete",
        ],
    );
    fails(ep, &["get", "greeting"], 3, "key not found");
    // usage errors are clap's (exit 2)
    let o = run(ep, &["cas", "k", "--expected-absent"]);
    assert_eq!(o.status.code(), Some(2));

    // del
    ok(ep, &["put", "gone", "soon"]);
    assert!(ok(ep, &["del", "gone"]).contains("deleted gone"));
    fails(ep, &["get", "gone"], 3, "key not found");

    // ls with prefix and limit
    for i in 0..5 {
        ok(ep, &["put", &format!("list/{i}"), &format!("v{i}")]);
    }
    let out = ok(ep, &["ls", "--prefix", "list/"]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines,
        vec![
            "list/0\tv0",
            "list/1\tv1",
            "list/2\tv2",
            "list/3\tv3",
            "list/4\tv4"
        ]
    );
    let o = run(
        ep,
        &["ls", "--prefix", "list/", "--limit", "2", "--keys-only"],
    );
    assert!(o.status.success());
    assert_eq!(stdout(&o), "list/0\nlist/1\n");
    assert!(stderr(&o).contains("more keys"), "{}", stderr(&o));
    let json: serde_json::Value =
        serde_json::from_str(&ok(ep, &["ls", "--prefix", "list/", "--json"])).unwrap();
    assert_eq!(json["kvs"].as_array().unwrap().len(), 5);
    assert_eq!(json["more"], false);

    // bad input: empty key, oversized value (server 413)
    fails(ep, &["put", "", "v"], 1, "key must not be empty");
    let big = "x".repeat(70_000);
    fails(ep, &["put", "big", &big], 1, "too_large");

    // status --json: every node, one leader, all agree
    let json: serde_json::Value = serde_json::from_str(&ok(ep, &["status", "--json"])).unwrap();
    let rows = json.as_array().unwrap();
    assert_eq!(rows.len(), 3);
    let leaders: Vec<&serde_json::Value> = rows
        .iter()
        .filter(|r| r["status"]["role"] == "leader")
        .collect();
    assert_eq!(leaders.len(), 1, "{json}");
    let leader_id = leaders[0]["status"]["id"].as_u64().unwrap();
    for r in rows {
        assert_eq!(r["status"]["leader"].as_u64(), Some(leader_id), "{json}");
    }
    // the table names every endpoint
    let table = ok(ep, &["status"]);
    for e in tc.endpoints() {
        assert!(table.contains(&e), "{table}");
    }
    assert!(table.contains("leader"));

    // member list
    let out = ok(ep, &["member", "list"]);
    assert_eq!(out.lines().count(), 4, "{out}");
    let json: serde_json::Value =
        serde_json::from_str(&ok(ep, &["member", "list", "--json"])).unwrap();
    assert_eq!(json["members"].as_array().unwrap().len(), 3);

    // leader transfer to another node, then status shows it
    let target = if leader_id == 1 { 2 } else { 1 };
    let out = ok(ep, &["leader", "transfer", &target.to_string()]);
    assert_eq!(out.trim(), format!("node {target} is the leader"));
    tc.wait_for_leader_where(std::time::Duration::from_secs(10), |id, _| id == target)
        .await;

    // a partly dead endpoint list still works; status marks the dead one
    let dead = free_port_endpoints(1).pop().unwrap();
    let mixed = format!("{dead},{ep}");
    assert_eq!(ok(&mixed, &["get", "fresh"]), "new\n");
    let json: serde_json::Value = serde_json::from_str(&ok(&mixed, &["status", "--json"])).unwrap();
    assert_eq!(json[0]["error"], "unreachable", "{json}");

    // so does one with something else listening on one of its ports
    let web = not_raftkv(HTML_404);
    let mixed = format!("{web},{ep}");
    assert_eq!(ok(&mixed, &["get", "fresh"]), "new\n");
    assert!(ok(&mixed, &["put", "via-mixed", "ok"]).starts_with("OK"));
    let table = ok(&mixed, &["status"]);
    let web_row = table.lines().find(|l| l.starts_with(&web)).unwrap();
    assert!(
        web_row.contains("not a raftkv server (it answered 404 text/html)"),
        "{table}"
    );
}

/// A page a web server might answer any unknown path with.
const HTML_404: &str =
    "HTTP/1.1 404 Not Found\r\nContent-Type: text/html\r\nContent-Length: 48\r\n\
     Connection: close\r\n\r\n<html><body><h1>404 Not Found</h1></body></html>";
/// A web server's home page.
const HTML_200: &str =
    "HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: 33\r\n\
     Connection: close\r\n\r\n<html><body>welcome</body></html>";
/// Claims to be raftkv (the header) but answers errors in another shape.
const IMPOSTOR_404: &str = "HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\n\
     x-raftkv-node: 1\r\nContent-Length: 22\r\nConnection: close\r\n\r\n{\"detail\":\"not found\"}";

/// Starts a tiny HTTP server that is not raftkv: it answers every request
/// with `response` and closes the connection. Returns its endpoint.
fn not_raftkv(response: &'static str) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { continue };
            let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
            // Read the whole request (head and body), so closing the
            // socket does not reset the connection under the answer.
            let mut req = Vec::new();
            let mut buf = [0u8; 4096];
            let complete = |req: &[u8]| {
                let Some(end) = req.windows(4).position(|w| w == b"\r\n\r\n") else {
                    return false;
                };
                let head = String::from_utf8_lossy(&req[..end]).to_ascii_lowercase();
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0);
                req.len() >= end + 4 + len
            };
            while !complete(&req) {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => req.extend_from_slice(&buf[..n]),
                }
            }
            let _ = s.write_all(response.as_bytes());
            let _ = s.shutdown(std::net::Shutdown::Write);
        }
    });
    endpoint
}

#[test]
fn a_server_that_is_not_raftkv_is_named_as_such() {
    for (response, answered) in [
        (HTML_404, "404 text/html"),
        (HTML_200, "200 text/html; charset=utf-8"),
        (IMPOSTOR_404, "404 application/json"),
    ] {
        let web = not_raftkv(response);
        let needle = format!("{web} is not a raftkv server (it answered {answered})");
        // Not "key not found" (exit 3), whatever the status.
        let err = fails(&web, &["get", "k"], 6, &needle);
        assert!(!err.contains("key not found"), "{err}");
        assert_eq!(err.lines().count(), 1, "one line: {err}");
        fails(&web, &["put", "k", "v"], 6, &needle);
        fails(&web, &["del", "k"], 6, &needle);
        fails(&web, &["member", "list"], 6, &needle);
        // status shows the endpoint for what it is, not its page.
        let o = run(&web, &["status"]);
        assert_eq!(o.status.code(), Some(6), "{}", stderr(&o));
        let table = stdout(&o);
        assert!(
            table.contains(&format!("not a raftkv server (it answered {answered})")),
            "{table}"
        );
        assert!(
            !table.contains("<html") && !table.contains("detail"),
            "{table}"
        );
    }
}

#[tokio::test]
async fn without_a_majority_the_cli_says_a_majority_must_run() {
    let mut tc = TestCluster::start(3, 0, &[]).await;
    let ep = tc.endpoints_flag();
    let (leader, _) = tc.wait_for_leader(Duration::from_secs(30)).await;
    let others: Vec<u64> = (1..=3).filter(|&id| id != leader).collect();
    for id in &others {
        assert!(tc.cluster.kill(*id));
    }
    // The survivor steps down once it notices it lost its quorum.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while tc.status(leader).await.and_then(|s| s.leader).is_some() {
        assert!(std::time::Instant::now() < deadline, "{}", tc.log_tails());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let majority = "a majority of the cluster's nodes must be running";
    for args in [
        &["get", "k", "--retry-for", "1s"][..],
        &["put", "k", "v", "--retry-for", "1s"][..],
        &["ls", "--retry-for", "1s"][..],
    ] {
        let err = fails(&ep, args, 1, majority);
        assert!(err.contains("no_leader"), "{err}");
    }
    // status still shows every node, and says why nothing works.
    let o = run(&ep, &["status"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains(majority), "{}", stderr(&o));
    assert_eq!(
        stdout(&o).matches("unreachable").count(),
        2,
        "{}",
        stdout(&o)
    );
}

#[test]
fn unreachable_endpoints_give_a_clear_error_and_exit_5() {
    let dead = free_port_endpoints(2).join(",");
    let err = fails(
        &dead,
        &["get", "k"],
        5,
        "no node reachable at http://127.0.0.1:",
    );
    assert!(
        err.contains("is the cluster running? start it with `raftkv cluster`"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    fails(&dead, &["put", "k", "v"], 5, "no node reachable");
    let o = run(&dead, &["status"]);
    assert_eq!(o.status.code(), Some(5));
    assert!(stdout(&o).contains("unreachable"));
    fails(
        "ftp://x",
        &["get", "k"],
        1,
        "only http:// and https:// endpoints",
    );
}
