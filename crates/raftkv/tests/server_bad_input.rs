//! Bad input against real `raftkv serve` processes: malformed requests,
//! unknown query parameters and body fields, oversized keys, values and
//! bodies, unknown routes, garbage on the peer port, invalid startup
//! configuration, a data directory in use; plus the connection limit. After
//! each bad request: a clear JSON error, and no data changed.

mod support;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::*;

/// Every key-value pair (as listed by the leader) and the leader's last log
/// index: if neither moved, no request changed anything.
fn data_state(c: &mut Cluster) -> (Value, u64) {
    let leader = c.leader();
    let list = c.request(leader, "GET", "/v1/kv?limit=1000", None);
    assert_eq!(list.status, 200, "{}", list.body);
    let last = c.status(leader)["last_index"].as_u64().unwrap();
    (list.json()["kvs"].clone(), last)
}

/// Waits until the leader's log stops growing (the founding members'
/// addresses are replicated right after the first election), so that any
/// later growth is caused by the test.
fn settle(c: &mut Cluster) {
    let leader = c.leader();
    let mut last = (0, Instant::now());
    wait_until(WAIT, "a quiet log", || {
        let st = c.status(leader);
        let idx = st["last_index"].as_u64().unwrap();
        let applied = st["applied_index"].as_u64().unwrap();
        if idx != last.0 || applied != idx {
            last = (idx, Instant::now());
            return None;
        }
        (last.1.elapsed() > Duration::from_millis(1500)).then_some(())
    });
}

fn assert_error(r: &HttpResponse, status: u16, code: &str) {
    assert_eq!(r.status, status, "{}", r.body);
    let err = &r.json()["error"];
    assert_eq!(err["code"], code, "{}", r.body);
    assert!(
        err["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{}",
        r.body
    );
}

/// A cluster with small limits: keys of 16 bytes, values of 64, bodies of
/// 256.
fn small_limits_cluster() -> Cluster {
    Cluster::start_with(ClusterOptions {
        extra_args: [
            "--max-key-bytes",
            "16",
            "--max-value-bytes",
            "64",
            "--max-body-bytes",
            "256",
        ]
        .map(String::from)
        .to_vec(),
        ..ClusterOptions::default()
    })
}

#[test]
fn bad_requests_get_clear_errors_and_change_nothing() {
    let mut c = small_limits_cluster();
    let leader = c.leader();
    let follower = c.followers()[0];
    assert_eq!(c.put(leader, "keep", "original").status, 200);
    settle(&mut c);
    let before = data_state(&mut c);

    for node in [leader, follower] {
        let bad_json = [
            ("PUT", "/v1/kv/keep", r#"{"value": "#),
            ("PUT", "/v1/kv/keep", r#"{"valu": "x"}"#),
            ("PUT", "/v1/kv/keep", r#"{"value": 5}"#),
            ("PUT", "/v1/kv/keep", r#"["value"]"#),
            ("PUT", "/v1/kv/keep", ""),
            ("PUT", "/v1/kv/keep", r#"{"value":"x","client_id":1}"#),
            ("PUT", "/v1/kv/keep?prev=maybe", r#"{"value":"x"}"#),
            (
                "POST",
                "/v1/kv/keep/cas",
                r#"{"expected_value":"a","expected_mod_revision":1,"value":"x"}"#,
            ),
            ("POST", "/v1/kv/keep/cas", r#"{"value":"x"}"#),
            (
                "POST",
                "/v1/kv/keep/cas",
                r#"{"expected_value":"original"}"#,
            ),
            ("DELETE", "/v1/kv/keep", "{not json"),
            ("GET", "/v1/kv?limit=0", ""),
            ("GET", "/v1/kv?limit=many", ""),
            ("GET", "/v1/kv/keep?consistency=eventual", ""),
            // (A key that is not UTF-8, `/v1/kv/%FF%FE`, is a valid key
            // since keys are bytes: see server_kv_api.rs.)
            (
                "POST",
                "/v1/members",
                r#"{"id":9,"peer_addr":"nowhere","client_addr":"127.0.0.1:1"}"#,
            ),
            (
                "POST",
                "/v1/members",
                r#"{"id":0,"peer_addr":"127.0.0.1:2","client_addr":"127.0.0.1:1"}"#,
            ),
            ("DELETE", "/v1/members/abc", ""),
            ("POST", "/v1/leader/transfer", r#"{"to":"two"}"#),
        ];
        for (method, path, body) in bad_json {
            let r = c.request(node, method, path, Some(body));
            assert_error(&r, 400, "bad_request");
        }

        // Over the limits: 413 too_large, decided before anything is
        // proposed.
        let long_key = "k".repeat(17);
        let r = c.put(node, &long_key, "v");
        assert_error(&r, 413, "too_large");
        assert!(r.body.contains("17 bytes"), "{}", r.body);
        assert_error(&c.get(node, &long_key), 413, "too_large");
        assert_error(&c.put(node, "keep", &"v".repeat(65)), 413, "too_large");
        let cas = json!({"expected_value": "v".repeat(65), "value": "x"}).to_string();
        assert_error(
            &c.request(node, "POST", "/v1/kv/keep/cas", Some(&cas)),
            413,
            "too_large",
        );
        // A body over --max-body-bytes, declared...
        let big = json!({"value": "v", "padding": "p".repeat(300)}).to_string();
        assert_error(
            &c.request(node, "PUT", "/v1/kv/keep", Some(&big)),
            413,
            "too_large",
        );
        // ...and chunked, without a declared length.
        let chunk = "a".repeat(200);
        let req = format!(
            "PUT /v1/kv/keep HTTP/1.1\r\nHost: x\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n\
             {:x}\r\n{chunk}\r\n{:x}\r\n{chunk}\r\n0\r\n\r\n",
            chunk.len(),
            chunk.len()
        );
        let r = parse_response(&raw_request(c.addr(node), req.as_bytes()).unwrap()).unwrap();
        assert_error(&r, 413, "too_large");

        // Unknown routes and methods.
        let r = c.request(node, "GET", "/v2/kv/keep", None);
        assert_error(&r, 404, "not_found");
        assert_eq!(r.json()["error"]["leader_hint"], Value::Null);
        assert_error(
            &c.request(node, "GET", "/nothing-here", None),
            404,
            "not_found",
        );
        assert_error(
            &c.request(node, "PATCH", "/v1/kv/keep", Some("{}")),
            405,
            "bad_request",
        );

        // Not HTTP at all: the connection is answered 400 or closed, and
        // the node keeps serving.
        let _ = raw_request(c.addr(node), b"\x00\x01garbage\r\n\r\n\xff\xfe");
        assert_eq!(c.request(node, "GET", "/healthz", None).status, 200);
    }

    settle(&mut c);
    assert_eq!(data_state(&mut c), before, "a bad request changed data");
    assert_eq!(c.get(follower, "keep").json()["value"], "original");
}

/// Every route, each with a request it accepts: (method, path, body).
const EVERY_ROUTE: [(&str, &str, &str); 14] = [
    ("GET", "/v1/kv", ""),
    ("GET", "/v1/kv/keep", ""),
    ("PUT", "/v1/kv/keep", r#"{"value":"x"}"#),
    ("DELETE", "/v1/kv/keep", ""),
    (
        "POST",
        "/v1/kv/keep/cas",
        r#"{"expected_value":"a","value":"b"}"#,
    ),
    ("GET", "/v1/status", ""),
    ("GET", "/v1/members", ""),
    (
        "POST",
        "/v1/members",
        r#"{"id":9,"peer_addr":"127.0.0.1:2","client_addr":"127.0.0.1:1"}"#,
    ),
    ("DELETE", "/v1/members/9", ""),
    ("POST", "/v1/members/9/promote", ""),
    ("POST", "/v1/leader/transfer", r#"{"to":1}"#),
    ("GET", "/metrics", ""),
    ("GET", "/healthz", ""),
    ("GET", "/readyz", ""),
];

/// Asserts a 400 whose message contains `needle`.
fn assert_refused(r: &HttpResponse, needle: &str, what: &str) {
    assert_error(r, 400, "bad_request");
    let message = r.json()["error"]["message"].as_str().unwrap().to_string();
    assert!(
        message.contains(needle),
        "{what}: {message:?} lacks {needle:?}"
    );
}

#[test]
fn unknown_query_parameters_and_body_fields_are_refused_on_every_route() {
    let mut c = Cluster::start(3);
    let leader = c.leader();
    let follower = c.followers()[0];
    assert_eq!(c.put(leader, "keep", "original").status, 200);
    settle(&mut c);
    let before = data_state(&mut c);

    for node in [leader, follower] {
        // Features raftkv does not have are refused, not silently ignored.
        let cases: [(&str, &str, &str, &str); 8] = [
            (
                "GET",
                "/v1/kv/keep?revision=9",
                "",
                r#"unknown query parameter "revision"; accepted: consistency"#,
            ),
            (
                "PUT",
                "/v1/kv/keep?ttl=5",
                r#"{"value":"v"}"#,
                r#"unknown query parameter "ttl"; accepted: prev"#,
            ),
            (
                "PUT",
                "/v1/kv/keep",
                r#"{"value":"v","ttl":5}"#,
                "unknown field `ttl`, expected one of `value`, `value_b64`, `client_id`, `seq`",
            ),
            (
                "GET",
                "/v1/kv/keep?watch=true",
                "",
                r#"unknown query parameter "watch"; accepted: consistency"#,
            ),
            (
                "GET",
                "/v1/kv/keep?index=5&wait=2s",
                "",
                r#"unknown query parameters "index", "wait"; accepted: consistency"#,
            ),
            (
                "GET",
                "/v1/kv?prefix=a&start_after=b",
                "",
                r#"unknown query parameter "start_after"; accepted: prefix, start, range_end, after, limit, keys_only, count_only, consistency"#,
            ),
            (
                "GET",
                // etcd's name for `start` is not an alias here.
                "/v1/kv?key=a&range_end=z",
                "",
                r#"unknown query parameter "key"; accepted: prefix, start, range_end, after, limit, keys_only, count_only, consistency"#,
            ),
            (
                "POST",
                "/v1/kv/keep/cas",
                r#"{"expected_value":"original","value":"x","lease":3}"#,
                "unknown field `lease`",
            ),
        ];
        for (method, path, body, needle) in cases {
            let r = c.request(node, method, path, Some(body));
            assert_refused(&r, needle, &format!("{method} {path} {body} on {node}"));
        }

        // Every route refuses an unknown query parameter, and says which
        // ones it takes (none, for most).
        for (method, path, body) in EVERY_ROUTE {
            let sep = if path.contains('?') { '&' } else { '?' };
            let r = c.request(node, method, &format!("{path}{sep}bogus=1"), Some(body));
            assert_refused(
                &r,
                r#"unknown query parameter "bogus""#,
                &format!("{method} {path}"),
            );
        }

        // Unknown body fields, and bodies where a route takes none.
        let bodies = [
            (
                "DELETE",
                "/v1/kv/keep",
                r#"{"client_id":1,"seq":1,"recursive":true}"#,
                "unknown field `recursive`",
            ),
            (
                "POST",
                "/v1/members",
                r#"{"id":9,"peer_addr":"127.0.0.1:2","client_addr":"127.0.0.1:1","weight":2}"#,
                "unknown field `weight`",
            ),
            (
                "POST",
                "/v1/leader/transfer",
                r#"{"to":1,"force":true}"#,
                "unknown field `force`",
            ),
            (
                "POST",
                "/v1/members/9/promote",
                r#"{"force":true}"#,
                "takes no request body",
            ),
            (
                "DELETE",
                "/v1/members/9",
                r#"{"force":true}"#,
                "takes no request body",
            ),
            (
                "GET",
                "/v1/kv/keep",
                r#"{"revision":9}"#,
                "takes no request body",
            ),
            ("GET", "/v1/status", "not json", "takes no request body"),
        ];
        for (method, path, body, needle) in bodies {
            let r = c.request(node, method, path, Some(body));
            assert_refused(&r, needle, &format!("{method} {path} {body} on {node}"));
        }
        // An empty object is no input at all: accepted.
        let r = c.request(node, "GET", "/v1/status", Some("{}"));
        assert_eq!(r.status, 200, "{}", r.body);
    }

    settle(&mut c);
    assert_eq!(data_state(&mut c), before, "a refused request changed data");
    assert_eq!(c.get(follower, "keep").json()["value"], "original");
}

/// The value of the `raftkv_http_requests_total` series with these labels
/// in a `/metrics` page (0 if absent).
fn requests_counted(metrics: &str, method: &str, route: &str, status: u16) -> u64 {
    let series = format!(
        "raftkv_http_requests_total{{method=\"{method}\",route=\"{route}\",status=\"{status}\"}} "
    );
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&series))
        .map(|v| v.trim().parse().unwrap())
        .unwrap_or(0)
}

/// `PUT /v1/kv/{key}` without a query string takes the server's direct
/// path; with `?prev=false` (same meaning) it goes through the router. The
/// two must answer every request identically and count it under the same
/// metric labels.
#[test]
fn the_direct_put_path_answers_exactly_like_the_router() {
    let mut c = small_limits_cluster();
    let leader = c.leader();
    let follower = c.followers()[0];
    let metrics_before = c.request(leader, "GET", "/metrics", None).body;
    let big = json!({"value": "v", "padding": "p".repeat(300)}).to_string();
    let long_value = json!({"value": "v".repeat(65)}).to_string();
    let failing: [(&str, &str); 11] = [
        ("k", r#"{"value": "#),
        ("k", r#"{"valu": "x"}"#),
        // Unknown fields are refused, not ignored, on both paths.
        ("k", r#"{"value":"v","ttl":5}"#),
        ("k", r#"{"value":"v","lease":7,"client_id":1,"seq":1}"#),
        ("k", r#"{"value": 5}"#),
        ("k", ""),
        ("k", r#"{"value":"x","client_id":1}"#),
        ("k", r#"{"value":"x","seq":1}"#),
        ("k", &long_value),
        ("k", &big),
        ("kkkkkkkkkkkkkkkkk", r#"{"value":"x"}"#),
    ];
    let mut direct_errors = 0;
    for node in [leader, follower] {
        for (key, body) in failing {
            let direct = c.request(node, "PUT", &format!("/v1/kv/{key}"), Some(body));
            let routed = c.request(node, "PUT", &format!("/v1/kv/{key}?prev=false"), Some(body));
            assert!(direct.status >= 400, "{key} {body}: {}", direct.body);
            assert_eq!(direct.status, routed.status, "{key} {body}");
            assert_eq!(direct.json(), routed.json(), "{key} {body}");
            for h in ["content-type", "x-raftkv-node"] {
                assert_eq!(direct.header(h), routed.header(h), "{h}: {key} {body}");
            }
            assert_eq!(direct.header("x-raftkv-node"), Some(&*node.to_string()));
            assert!(
                direct.header("x-request-id").is_some() && routed.header("x-request-id").is_some()
            );
            if node == leader && direct.status == 400 {
                direct_errors += 1;
            }
        }
        // Writes (the follower's are forwarded): the same answers, revisions
        // aside, and the key percent-decoded the same way.
        // A key that is not UTF-8 (%FF%FE) is a key like any other.
        for (i, key) in ["plain", "a%2Fb", "%C3%A9t%C3%A9", "%FF%FE"]
            .into_iter()
            .enumerate()
        {
            let body =
                json!({"value": format!("v{i}"), "client_id": 9 + node, "seq": 1 + i}).to_string();
            let direct = c.request(node, "PUT", &format!("/v1/kv/{key}"), Some(&body));
            let routed = c.request(
                node,
                "PUT",
                &format!("/v1/kv/{key}?prev=false"),
                Some(&body),
            );
            assert_eq!(
                (direct.status, routed.status),
                (200, 200),
                "{}",
                direct.body
            );
            let (d, r) = (direct.json(), routed.json());
            // The retry through the router is answered from the session:
            // the same write, not applied again.
            assert_eq!(d, r, "{key}");
            for h in ["content-type", "x-raftkv-node", "x-raftkv-forwarded-to"] {
                assert_eq!(direct.header(h), routed.header(h), "{h}: {key}");
            }
        }
    }
    let g = c.get(leader, "a/b");
    assert_eq!(g.status, 200, "{}", g.body);
    assert_eq!(g.json()["value"], "v1");
    assert_eq!(c.get(leader, "été").json()["value"], "v2");

    // Both paths count under the route pattern.
    let metrics = c.request(leader, "GET", "/metrics", None).body;
    let counted = |status| {
        requests_counted(&metrics, "PUT", "/v1/kv/{key}", status)
            - requests_counted(&metrics_before, "PUT", "/v1/kv/{key}", status)
    };
    // Every 400 on the leader, both paths.
    assert_eq!(counted(400), 2 * direct_errors, "\n{metrics}");
    assert!(counted(413) >= 6, "\n{metrics}");
    assert!(counted(200) >= 6, "\n{metrics}");
}

#[test]
fn garbage_on_the_peer_port_is_refused_and_the_node_keeps_serving() {
    let mut c = Cluster::start(3);
    let leader = c.leader();
    let follower = c.followers()[0];
    for node in [leader, follower] {
        let peer = c.nodes[&node].peer_addr;
        let payloads: Vec<Vec<u8>> = vec![
            b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
            // A length prefix claiming 4 GiB.
            vec![0xff, 0xff, 0xff, 0xff, 1, 2, 3, 4],
            (0..4096u32)
                .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
                .collect(),
            vec![0; 64],
        ];
        for p in payloads {
            let mut s = TcpStream::connect(peer).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let _ = s.write_all(&p);
            // The node closes the connection (EOF or reset) rather than
            // waiting for more.
            let mut buf = [0u8; 64];
            let _ = s.read(&mut buf);
        }
        let m = c.request(node, "GET", "/metrics", None).body;
        assert!(
            m.lines()
                .any(|l| l.starts_with("raft_connections_refused_total{")),
            "no refused connection counted on node {node}:\n{m}"
        );
    }
    // The cluster still replicates to and through both nodes.
    let w = c.put(follower, "after-garbage", "ok");
    assert_eq!(w.status, 200, "{}", w.body);
    let idx = w.json()["revision"].as_u64().unwrap();
    for id in 1..=3 {
        c.wait_applied(id, idx);
    }
    assert_eq!(c.leader(), leader, "garbage caused an election");
}

#[test]
fn connection_limit_makes_extra_connections_wait() {
    let mut c = Cluster::start_with(ClusterOptions {
        nodes: 1,
        extra_args: vec!["--max-connections".into(), "2".into()],
        ..ClusterOptions::default()
    });
    c.leader();
    let addr = c.addr(1);
    // Two idle connections take both slots.
    let hold1 = TcpStream::connect(addr).unwrap();
    let hold2 = TcpStream::connect(addr).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    // A third connects (the kernel queues it) but is not served...
    let mut third = TcpStream::connect(addr).unwrap();
    third
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    third
        .set_read_timeout(Some(Duration::from_millis(800)))
        .unwrap();
    let mut buf = Vec::new();
    let err = third.read_to_end(&mut buf).unwrap_err();
    assert!(
        matches!(
            err.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ),
        "{err}"
    );
    assert!(buf.is_empty(), "served over the limit: {buf:?}");
    // ...until a slot frees up.
    drop(hold1);
    third
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    third.read_to_end(&mut buf).unwrap();
    let r = parse_response(&buf).unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    drop(hold2);
    // Both slots free again: normal requests work.
    assert_eq!(c.request(1, "GET", "/healthz", None).status, 200);
}

#[test]
fn a_write_that_cannot_commit_times_out_with_504() {
    let mut c = Cluster::start_with(ClusterOptions {
        // Elections after 1 to 2 s, so the leader cannot notice it lost
        // its quorum before the 400 ms request timeout.
        tick_ms: 100,
        request_timeout_ms: 400,
        ..ClusterOptions::default()
    });
    let leader = c.leader();
    for f in c.followers() {
        c.kill(f);
    }
    let start = Instant::now();
    let r = c.put(leader, "stuck", "v");
    // The proposal was appended: it may yet commit. The client cannot know.
    assert_error(&r, 504, "indeterminate");
    assert_eq!(r.error_reason().as_deref(), Some("timeout"), "{}", r.body);
    assert!(r.body.contains("unknown"), "{}", r.body);
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "{:?}",
        start.elapsed()
    );
}

/// `raftkv serve` arguments for a one-node cluster.
fn single_node_args(id: u64, cluster: u64, dir: &str, client: u16, peer: u16) -> Vec<String> {
    [
        "serve",
        "--id",
        &id.to_string(),
        "--cluster-id",
        &cluster.to_string(),
        "--data-dir",
        dir,
        "--peers",
        &format!("{id}=127.0.0.1:{peer}"),
        "--clients",
        &format!("{id}=127.0.0.1:{client}"),
    ]
    .map(String::from)
    .to_vec()
}

fn assert_startup_error(args: &[String], needle: &str) {
    let (status, stderr) = run_to_exit(args);
    assert!(!status.success(), "{args:?} started: {stderr}");
    assert!(
        stderr.contains(needle),
        "{args:?}: stderr lacks {needle:?}:\n{stderr}"
    );
    assert!(
        !stderr.contains(SERVING_LINE),
        "{args:?} served before failing:\n{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{args:?} panicked:\n{stderr}");
}

#[test]
fn invalid_startup_configuration_is_refused() {
    let p = free_ports(4);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("n").display().to_string();
    let base = |extra: &[&str]| {
        let mut a: Vec<String> = ["serve", "--id", "1", "--data-dir", &d]
            .map(String::from)
            .to_vec();
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    };
    let peers_dup = format!("1=127.0.0.1:{},1=127.0.0.1:{}", p[0], p[1]);
    let clients = format!("1=127.0.0.1:{}", p[2]);
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            base(&["--peers", &peers_dup, "--clients", &clients]),
            "duplicate node id 1",
        ),
        (
            base(&["--peers", "1=127.0.0.1:99999", "--clients", &clients]),
            "not a HOST:PORT or IP:PORT address",
        ),
        (
            // Host names are accepted (`localhost:PORT`); a malformed one
            // is not.
            base(&[
                "--peers",
                &format!("1=local host:{}", p[0]),
                "--clients",
                &clients,
            ]),
            "not a HOST:PORT or IP:PORT address",
        ),
        (
            base(&[
                "--peers",
                &format!("2=127.0.0.1:{}", p[0]),
                "--clients",
                &clients,
            ]),
            "not in --peers",
        ),
        (base(&["--clients", &clients]), "--peers"),
        (
            base(&[
                "--peers",
                &format!("1=127.0.0.1:{}", p[0]),
                "--clients",
                &clients,
                "--max-connections",
                "0",
            ]),
            "--max-connections",
        ),
        (
            ["serve", "--id", "abc", "--peers", "1=127.0.0.1:1"]
                .map(String::from)
                .to_vec(),
            "invalid value 'abc'",
        ),
        (
            base(&[
                "--peers",
                &format!("1=127.0.0.1:{}", p[0]),
                "--listen-client",
                "127.0.0.1",
            ]),
            "--listen-client",
        ),
        (
            base(&[
                "--peers",
                &format!("1=127.0.0.1:{}", p[0]),
                "--clients",
                &clients,
                "--config",
                "/nonexistent/raftkv.toml",
            ]),
            "cannot read config file",
        ),
    ];
    for (args, needle) in cases {
        assert_startup_error(&args, needle);
    }
    // None of these created a data directory.
    assert!(!dir.path().join("n").exists());

    // A port already in use.
    let busy = TcpListener::bind("127.0.0.1:0").unwrap();
    let busy_port = busy.local_addr().unwrap().port();
    assert_startup_error(
        &single_node_args(1, 7, &d, busy_port, p[3]),
        "cannot listen for clients",
    );
}

#[test]
fn a_data_directory_of_another_node_or_cluster_is_refused_and_left_intact() {
    let mut c = Cluster::start(1);
    c.leader();
    let w = c.put(1, "precious", "data");
    assert_eq!(w.status, 200, "{}", w.body);
    assert!(c.terminate(1).success());
    let dir = c.nodes[&1].data_dir.display().to_string();
    let p = free_ports(2);
    // Same directory, another node id.
    assert_startup_error(
        &single_node_args(2, c.opts.cluster_id, &dir, p[0], p[1]),
        "belongs to node 1",
    );
    // Same directory and node id, another cluster id.
    assert_startup_error(
        &single_node_args(1, 99, &dir, p[0], p[1]),
        &format!("belongs to cluster {}", c.opts.cluster_id),
    );
    // The rightful owner still finds its data.
    c.restart(1);
    c.leader();
    assert_eq!(c.get(1, "precious").json()["value"], "data");
}

/// Every file under `dir` with its bytes.
fn dir_contents(dir: &std::path::Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    let mut out = std::collections::BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let name = path.strip_prefix(dir).unwrap().display().to_string();
                out.insert(name, std::fs::read(&path).unwrap());
            }
        }
    }
    out
}

#[test]
fn a_data_directory_in_use_is_refused_and_left_untouched() {
    let mut c = Cluster::start(1);
    c.leader();
    let w = c.put(1, "mine", "v1");
    assert_eq!(w.status, 200, "{}", w.body);
    settle(&mut c);
    let data_dir = c.nodes[&1].data_dir.clone();
    let dir = data_dir.display().to_string();
    let pid = c.nodes[&1].pid().unwrap();
    let before = dir_contents(&data_dir);
    assert_eq!(
        String::from_utf8_lossy(&before["LOCK"]).trim(),
        pid.to_string(),
        "the holder's pid is in the lock file"
    );

    // A second server on the same directory, same identity, other ports.
    let p = free_ports(2);
    assert_startup_error(
        &single_node_args(1, c.opts.cluster_id, &dir, p[0], p[1]),
        &format!(
            "data directory {dir} is in use by another raftkv process (pid {pid}); stop it first"
        ),
    );
    // It changed nothing in the directory.
    assert_eq!(dir_contents(&data_dir), before);

    // The first one still serves, from the same files.
    assert_eq!(c.get(1, "mine").json()["value"], "v1");
    let w = c.put(1, "mine", "v2");
    assert_eq!(w.status, 200, "{}", w.body);
    assert_eq!(c.get(1, "mine").json()["value"], "v2");

    // Once it is gone, the directory is free again.
    assert!(c.terminate(1).success());
    c.restart(1);
    c.leader();
    assert_eq!(c.get(1, "mine").json()["value"], "v2");
}

#[test]
fn config_file_and_environment_with_flag_precedence() {
    let p = free_ports(2);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("node.toml");
    std::fs::write(
        &file,
        format!(
            "id = 1\ncluster_id = 3\ndata_dir = {:?}\nmax_key_bytes = 4096\ntick_ms = 25\n\
             [peers]\n1 = \"127.0.0.1:{}\"\n[clients]\n1 = \"127.0.0.1:{}\"\n",
            dir.path().join("data").display().to_string(),
            p[0],
            p[1]
        ),
    )
    .unwrap();
    let log = dir.path().join("log");
    let mut child = Command::new(RAFTKV)
        .args(["serve", "--config", &file.display().to_string()])
        // The environment beats the file (4096) ...
        .env("RAFTKV_MAX_KEY_BYTES", "8")
        // ... and a flag beats the environment.
        .env("RAFTKV_LOG_LEVEL", "not a valid filter [")
        .args(["--log-level", "info"])
        .stdout(Stdio::null())
        .stderr(Stdio::from(std::fs::File::create(&log).unwrap()))
        .spawn()
        .unwrap();
    let addr = loopback(p[1]);
    let ok = wait_until(WAIT, "a leader on the configured node", || {
        if let Ok(Some(s)) = child.try_wait() {
            panic!("exited {s}: {}", std::fs::read_to_string(&log).unwrap());
        }
        let r = http_request(addr, "GET", "/readyz", None).ok()?;
        (r.status == 200).then_some(r)
    });
    assert_eq!(ok.json()["leader"], 1);
    let small = http_request(addr, "PUT", "/v1/kv/eightkey", Some(r#"{"value":"v"}"#)).unwrap();
    assert_eq!(small.status, 200, "{}", small.body);
    let big = http_request(addr, "PUT", "/v1/kv/ninekeyss", Some(r#"{"value":"v"}"#)).unwrap();
    assert_eq!(big.status, 413, "{}", big.body);
    let _ = child.kill();
    let _ = child.wait();
    assert!(std::fs::read_to_string(&log)
        .unwrap()
        .contains("serving clients on http://127.0.0.1"));
}
