//! The dashboard's routes without a browser, on real `raftkv serve`
//! processes: the embedded page and assets, `/v1/dashboard` and
//! `/v1/dashboard/node`, the controls (isolate and heal on the nodes; kill
//! and restart through `raftkv cluster`'s control endpoint), and their
//! refusals of bad input (unknown query parameters and fields, unknown
//! actions, controls that are off, kill without a launcher).

mod support;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::*;

fn control(c: &Cluster, via: u64, node: u64, action: &str) -> HttpResponse {
    let body = json!({"node": node, "action": action}).to_string();
    c.request(via, "POST", "/v1/dev/control", Some(&body))
}

/// Node `id`'s own dashboard entry.
fn node_json(c: &Cluster, id: u64) -> Value {
    let r = c.request(id, "GET", "/v1/dashboard/node", None);
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()
}

#[test]
fn the_page_and_its_files_come_from_the_binary() {
    let c = Cluster::start(1);
    let page = c.request(1, "GET", "/", None);
    assert_eq!(page.status, 200, "{}", page.body);
    assert_eq!(
        page.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    assert!(page.body.contains(r#"<script src="/dashboard/app.js""#));
    assert!(page.body.contains(r#"href="/dashboard/style.css""#));
    // Only this node may provide scripts, styles and data.
    let csp = page.header("content-security-policy").expect("a CSP");
    assert!(csp.contains("default-src 'self'"), "{csp}");
    assert!(
        !page.body.contains("http://") && !page.body.contains("https://"),
        "the page must load nothing from elsewhere"
    );
    let js = c.request(1, "GET", "/dashboard/app.js", None);
    assert_eq!(js.status, 200);
    assert_eq!(
        js.header("content-type"),
        Some("text/javascript; charset=utf-8")
    );
    assert!(js.body.contains("/v1/dashboard"));
    let css = c.request(1, "GET", "/dashboard/style.css", None);
    assert_eq!(css.status, 200);
    assert_eq!(css.header("content-type"), Some("text/css; charset=utf-8"));
    // Every answer carries the node's header, errors are the API's JSON.
    assert_eq!(css.header("x-raftkv-node"), Some("1"));
    let missing = c.request(1, "GET", "/dashboard/secret.txt", None);
    assert_eq!(missing.status, 404);
    assert_eq!(missing.error_code(), "not_found");
    let wrong = c.request(1, "POST", "/", Some("{}"));
    assert_eq!(wrong.status, 405, "{}", wrong.body);
    // Unknown query parameters are refused everywhere, as on every route.
    for path in [
        "/?x=1",
        "/dashboard/app.js?v=2",
        "/v1/dashboard?verbose=true",
        "/v1/dashboard/node?x",
    ] {
        let r = c.request(1, "GET", path, None);
        assert_eq!(r.status, 400, "{path}: {}", r.body);
        assert_eq!(r.error_code(), "bad_request", "{path}");
    }
    // A body on a GET route without one is refused too.
    let r = c.request(1, "GET", "/v1/dashboard", Some(r#"{"x": 1}"#));
    assert_eq!(r.status, 400, "{}", r.body);
}

#[test]
fn controls_are_off_unless_asked_for() {
    let mut c = Cluster::start(1);
    c.leader();
    let r = control(&c, 1, 1, "isolate");
    assert_eq!(r.status, 404, "{}", r.body);
    assert!(r.body.contains("--dashboard-controls"), "{}", r.body);
    let me = node_json(&c, 1);
    assert_eq!(me["controls"], false);
    assert_eq!(me["isolated"], false);
    let all = c.request(1, "GET", "/v1/dashboard", None).json();
    assert_eq!(all["controls"], false);
    assert_eq!(all["launcher"], false);
}

#[test]
fn the_cluster_view_isolation_and_bad_control_requests() {
    let mut c = Cluster::start_with(ClusterOptions {
        extra_args: vec!["--dashboard-controls".into()],
        ..ClusterOptions::default()
    });
    let leader = c.leader();
    let followers: Vec<u64> = [1, 2, 3].into_iter().filter(|i| *i != leader).collect();
    let (f1, f2) = (followers[0], followers[1]);
    // Some traffic, so the leader has sent messages to every follower.
    let w = c.put(leader, "k", "v");
    assert_eq!(w.status, 200, "{}", w.body);

    // The view from a follower: every node, fetched by that follower.
    let all = c.request(f1, "GET", "/v1/dashboard", None).json();
    assert_eq!(all["served_by"], f1);
    assert_eq!(all["controls"], true);
    assert_eq!(all["launcher"], false);
    let nodes = all["nodes"].as_array().expect("nodes");
    assert_eq!(nodes.len(), 3, "{all:#}");
    let leaders: Vec<u64> = nodes
        .iter()
        .filter(|n| n["node"]["status"]["role"] == "leader")
        .map(|n| n["id"].as_u64().unwrap())
        .collect();
    assert_eq!(leaders, [leader], "{all:#}");
    // Every node reports its election timer: a randomized timeout of at
    // least the configured minimum, and how far it has run.
    for n in nodes {
        let s = &n["node"]["status"];
        let timeout = s["election_timeout_ticks"].as_u64().expect("timer timeout");
        let elapsed = s["election_elapsed_ticks"].as_u64().expect("timer elapsed");
        assert!(timeout >= 2, "{all:#}");
        // A follower hearing heartbeats never reaches its timeout.
        if n["id"] != leader {
            assert!(elapsed < timeout, "{all:#}");
        }
    }
    let l = nodes.iter().find(|n| n["id"] == leader).unwrap();
    for f in &followers {
        let sent = l["node"]["counters"]["messages_sent"][f.to_string()]
            .as_u64()
            .unwrap_or(0);
        assert!(sent > 0, "leader sent nothing to {f}: {all:#}");
        let progress = l["node"]["status"]["peers"]
            .as_array()
            .and_then(|p| p.iter().find(|p| p["id"] == *f))
            .unwrap_or_else(|| panic!("no progress for {f}: {all:#}"));
        assert!(progress["match_index"].as_u64() > Some(0), "{all:#}");
    }

    // Bad control requests change nothing and say why.
    for (body, says) in [
        (r#"{"node": 1, "action": "explode"}"#, "explode"),
        (r#"{"node": 1, "action": "isolate", "now": true}"#, "now"),
        (r#"{"node": 0, "action": "isolate"}"#, "reserved"),
        (r#"{"action": "isolate"}"#, "node"),
        ("", "JSON body"),
    ] {
        let r = c.request(f1, "POST", "/v1/dev/control", Some(body));
        assert_eq!(r.status, 400, "{body}: {}", r.body);
        assert_eq!(r.error_code(), "bad_request");
        assert!(r.body.contains(says), "{body}: {}", r.body);
    }
    let r = c.request(f1, "POST", "/v1/dev/control?node=1", Some("{}"));
    assert_eq!(r.status, 400, "{}", r.body);
    let r = control(&c, f1, leader, "kill");
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("--launcher-url"), "{}", r.body);
    assert_eq!(c.running().len(), 3, "nothing was killed");
    assert_eq!(node_json(&c, leader)["isolated"], false);

    // Isolate the leader, asked of a follower (relayed to the leader): the
    // two others elect a new leader among themselves.
    let r = control(&c, f1, leader, "isolate");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json(), json!({"node": leader, "isolated": true}));
    let new_leader = wait_until(WAIT, "a new leader without the isolated one", || {
        let a = c.request(f1, "GET", "/v1/status", None).json();
        let b = c.request(f2, "GET", "/v1/status", None).json();
        let l = a["leader"].as_u64()?;
        (l != leader && b["leader"].as_u64() == Some(l)).then_some(l)
    });
    assert!(followers.contains(&new_leader));
    let cut = node_json(&c, leader);
    assert_eq!(cut["isolated"], true);
    let dropped_in = cut["counters"]["isolated_dropped_in"].as_u64().unwrap_or(0);
    assert!(
        dropped_in > 0,
        "the new leader's messages are dropped: {cut:#}"
    );
    assert!(
        cut["counters"]["isolated_dropped_out"]
            .as_u64()
            .unwrap_or(0)
            > 0,
        "{cut:#}"
    );
    // Writes go on through the majority (forwarded over HTTP, which the
    // isolation does not cut).
    let w = c.put(f1, "after", "isolation");
    assert_eq!(w.status, 200, "{}", w.body);

    // Heal it (asked of the node itself): it rejoins as a follower of the
    // new leader and catches up.
    let r = control(&c, leader, leader, "heal");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json(), json!({"node": leader, "isolated": false}));
    wait_until(WAIT, "the healed node to follow the new leader", || {
        let st = c.request(leader, "GET", "/v1/status", None).json();
        (st["role"] == "follower" && st["leader"].as_u64() == Some(new_leader)).then_some(())
    });
    let idx = w.json()["revision"].as_u64().expect("revision");
    c.wait_applied(leader, idx);

    // A member that does not answer is listed with the reason.
    c.kill(f2);
    let all = c.request(f1, "GET", "/v1/dashboard", None).json();
    let gone = all["nodes"]
        .as_array()
        .and_then(|ns| ns.iter().find(|n| n["id"] == f2))
        .cloned()
        .unwrap_or_default();
    assert_eq!(gone["node"], Value::Null, "{all:#}");
    assert_eq!(gone["error"], "not listening", "{all:#}");
}

/// `raftkv cluster` with its control endpoint: kill and restart through
/// any node, refusals of impossible requests, the endpoint's own checks.
#[test]
fn the_launcher_kills_and_restarts_on_request() {
    let dir = tempfile::tempdir().expect("temp dir");
    let base = raftkv::cluster::free_base_port(3);
    let log = dir.path().join("launcher.log");
    let child = Command::new(RAFTKV)
        .args(["cluster", "--plain", "--refresh", "100ms", "--data-dir"])
        .arg(dir.path().join("data"))
        .args(["--base-port", &base.to_string(), "--", "--tick-ms", "25"])
        .stdin(Stdio::null())
        .stdout(Stdio::from(std::fs::File::create(&log).expect("log")))
        .stderr(Stdio::null())
        .spawn()
        .expect("start raftkv cluster");
    let launcher = StopOnDrop(child);
    let addr = |id: u64| loopback(base + id as u16 - 1);
    let up = |id: u64| {
        http_request(addr(id), "GET", "/v1/status", None)
            .map(|r| r.status == 200)
            .unwrap_or(false)
    };
    wait_until(WAIT, "the cluster serving", || {
        (1..=3).all(up).then_some(())
    });
    let send = |via: u64, body: &str| {
        http_request(addr(via), "POST", "/v1/dev/control", Some(body)).expect("request")
    };

    let r = send(1, r#"{"node": 3, "action": "kill"}"#);
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.contains("killed node 3"), "{}", r.body);
    wait_until(WAIT, "node 3 down", || (!up(3)).then_some(()));
    let r = send(2, r#"{"node": 3, "action": "kill"}"#);
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("not running"), "{}", r.body);
    let r = send(1, r#"{"node": 9, "action": "restart"}"#);
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("no node 9"), "{}", r.body);
    let r = send(1, r#"{"node": 3, "action": "restart"}"#);
    assert_eq!(r.status, 200, "{}", r.body);
    wait_until(WAIT, "node 3 back", || up(3).then_some(()));
    let r = send(1, r#"{"node": 3, "action": "restart"}"#);
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("already running"), "{}", r.body);

    // The launcher's endpoint itself (its address is in the banner).
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let url = text
        .split("launcher control endpoint: http://")
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .unwrap_or_else(|| panic!("no control endpoint in the banner:\n{text}"));
    let ctl: std::net::SocketAddr = url.parse().expect("control address");
    assert!(ctl.ip().is_loopback(), "{ctl}");
    for (path, body, status) in [
        (
            "/v1/control",
            r#"{"node": 2, "action": "kill", "x": 1}"#,
            400,
        ),
        ("/v1/control?now=1", r#"{"node": 2, "action": "kill"}"#, 400),
        ("/v1/control", r#"{"node": 2, "action": "isolate"}"#, 400),
        ("/v1/other", "{}", 404),
    ] {
        let r = http_request(ctl, "POST", path, Some(body)).expect("control endpoint");
        assert_eq!(r.status, status, "{path} {body}: {}", r.body);
        assert!(r.json()["error"]["code"].is_string(), "{}", r.body);
    }
    assert!(up(2), "no refused request killed anything");
    drop(launcher);
}

/// Stops `raftkv cluster` with SIGTERM (it stops its nodes), then SIGKILL.
struct StopOnDrop(Child);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        if let Ok(pid) = libc::pid_t::try_from(self.0.id()) {
            // SAFETY: kill(2) has no memory-safety preconditions; the pid is
            // our unreaped child.
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if matches!(self.0.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
