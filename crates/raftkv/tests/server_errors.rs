//! The error contract against real `raftkv serve` processes: every 5xx says
//! `not_applied` (certainly no effect) or `indeterminate` (may have been
//! applied) with a `reason`, and every answer names the node that gave it
//! and carries a request id.

mod support;

use std::time::Duration;

use support::*;

/// Asserts a 5xx with this status, code and reason.
fn assert_failure(r: &HttpResponse, status: u16, code: &str, reason: &str) {
    assert_eq!(r.status, status, "{}", r.body);
    assert_eq!(r.error_code(), code, "{}", r.body);
    assert_eq!(r.error_reason().as_deref(), Some(reason), "{}", r.body);
    let message = r.json()["error"]["message"]
        .as_str()
        .unwrap_or("")
        .to_string();
    assert!(!message.is_empty(), "{}", r.body);
}

#[test]
fn every_answer_names_its_node_and_carries_a_request_id() {
    let mut c = Cluster::start(3);
    let leader = c.leader();
    let follower = c.followers()[0];
    let mut seen_ids = Vec::new();
    for node in [leader, follower] {
        // Successes and errors alike, through the router and the direct PUT
        // path, without a request id of their own.
        let answers = [
            c.request(node, "GET", "/healthz", None),
            c.request(node, "GET", "/v2/nothing", None),
            c.request(node, "GET", "/v1/kv/absent?consistency=stale", None),
            c.request(node, "PUT", "/v1/kv/a", Some(r#"{"value":"x"}"#)),
            c.request(node, "PUT", "/v1/kv/a", Some("not json")),
            c.request(node, "PUT", "/v1/kv/a?prev=true", Some(r#"{"value":"y"}"#)),
        ];
        for r in answers {
            assert_eq!(r.header("x-raftkv-node"), Some(&*node.to_string()), "{r:?}");
            let id = r.header("x-request-id").unwrap_or_else(|| panic!("{r:?}"));
            assert!(id.starts_with(&format!("{node}-")), "generated here: {id}");
            seen_ids.push(id.to_string());
        }
    }
    let mut unique = seen_ids.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), seen_ids.len(), "ids repeat: {seen_ids:?}");

    // A client's own id is echoed, on the leader and through a forward; a
    // forwarded answer names the follower that answered and the leader
    // that produced it.
    let send = |node: u64, method: &str, path: &str, body: Option<&str>, id: &str| {
        http_request_with(c.addr(node), method, path, body, &[("x-request-id", id)]).unwrap()
    };
    let direct = send(
        leader,
        "PUT",
        "/v1/kv/b",
        Some(r#"{"value":"1"}"#),
        "my-id-1",
    );
    assert_eq!(direct.status, 200, "{}", direct.body);
    assert_eq!(direct.header("x-request-id"), Some("my-id-1"));
    assert_eq!(direct.header("x-raftkv-forwarded-to"), None);
    let forwarded = send(
        follower,
        "PUT",
        "/v1/kv/b",
        Some(r#"{"value":"2"}"#),
        "my-id-2",
    );
    assert_eq!(forwarded.status, 200, "{}", forwarded.body);
    assert_eq!(forwarded.header("x-request-id"), Some("my-id-2"));
    assert_eq!(
        forwarded.header("x-raftkv-node"),
        Some(&*follower.to_string())
    );
    assert_eq!(
        forwarded.header("x-raftkv-forwarded-to"),
        Some(&*leader.to_string())
    );
    let read = send(follower, "GET", "/v1/kv/b", None, "my-id-3");
    assert_eq!(read.json()["value"], "2");
    assert_eq!(read.header("x-request-id"), Some("my-id-3"));
    let refused = send(follower, "GET", "/v1/kv/b?bogus=1", None, "my-id-4");
    assert_eq!(refused.status, 400);
    assert_eq!(refused.header("x-request-id"), Some("my-id-4"));
}

#[test]
fn without_a_leader_everything_is_not_applied_no_leader() {
    let mut c = Cluster::start(3);
    let leader = c.leader();
    let followers = c.followers();
    for f in &followers {
        c.kill(*f);
    }
    // The lone leader steps down once it notices it lost its quorum.
    wait_until(WAIT, "the survivor to know no leader", || {
        c.status(leader)["leader"].is_null().then_some(())
    });
    let answers = [
        c.put(leader, "k", "v"),
        c.get(leader, "k"),
        c.request(
            leader,
            "POST",
            "/v1/kv/k/cas",
            Some(r#"{"expected_value":null,"value":"v"}"#),
        ),
        c.request(leader, "GET", "/readyz", None),
        c.request(leader, "POST", "/v1/leader/transfer", Some(r#"{"to":2}"#)),
    ];
    for r in &answers {
        assert_failure(r, 503, "not_applied", "no_leader");
        assert_eq!(r.json()["error"]["leader_hint"], serde_json::Value::Null);
    }
    // A stale read needs no leader.
    let stale = c.request(leader, "GET", "/v1/kv/k?consistency=stale", None);
    assert_eq!(stale.status, 404, "nothing was written: {}", stale.body);
}

#[test]
fn a_follower_that_cannot_connect_to_the_leader_answers_not_applied() {
    let mut c = Cluster::start_with(ClusterOptions {
        // Elections after 1 to 2 s: the followers keep naming the dead
        // leader long enough to try forwarding to it.
        tick_ms: 100,
        ..ClusterOptions::default()
    });
    let leader = c.leader();
    let follower = c.followers()[0];
    c.kill(leader);
    let w = c.put(follower, "never", "v");
    assert_failure(&w, 503, "not_applied", "forward_failed");
    assert_eq!(w.json()["error"]["leader_hint"], leader, "{}", w.body);
    let r = c.get(follower, "never");
    assert_failure(&r, 503, "not_applied", "forward_failed");

    // not_applied means it: the new leader has no such key.
    let new_leader = c.leader();
    assert_ne!(new_leader, leader);
    assert_eq!(c.get(new_leader, "never").status, 404);
}

#[test]
fn a_forward_whose_answer_never_comes_is_indeterminate_for_writes_only() {
    let mut c = Cluster::start_with(ClusterOptions {
        // Elections after 1 to 2 s, requests answered within 500 ms: the
        // followers still forward to the paused leader while we ask.
        tick_ms: 100,
        request_timeout_ms: 500,
        ..ClusterOptions::default()
    });
    let leader = c.leader();
    let follower = c.followers()[0];
    let addr = c.addr(follower);
    // A paused leader accepts the connection (the kernel does) and the
    // request, and never answers.
    c.pause(leader, true);
    let write = std::thread::spawn(move || {
        http_request(addr, "PUT", "/v1/kv/maybe", Some(r#"{"value":"v"}"#)).unwrap()
    });
    let read = std::thread::spawn(move || http_request(addr, "GET", "/v1/kv/maybe", None).unwrap());
    let (write, read) = (write.join().unwrap(), read.join().unwrap());
    c.pause(leader, false);
    // The write went out: the leader may still apply it when it wakes up.
    assert_failure(&write, 504, "indeterminate", "timeout");
    assert!(write.body.contains("may or may not"), "{}", write.body);
    // A read changes nothing, whatever became of it.
    assert_failure(&read, 504, "not_applied", "timeout");
    // The cluster recovers; every answer from now on is definite again.
    c.leader_within(Duration::from_secs(30));
}
