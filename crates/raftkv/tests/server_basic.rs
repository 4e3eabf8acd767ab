//! A 3-node cluster of real `raftkv serve` processes: every route's round
//! trip with exact JSON, forwarding from followers, status/members shapes,
//! health, metrics, exactly-once sessions, membership and leadership
//! transfer, graceful shutdown.

mod support;

use serde_json::{json, Value};
use support::*;

/// The KV object the API returns.
fn kv(key: &str, value: &str, create: u64, modr: u64, version: u64) -> Value {
    json!({"key": key, "value": value, "create_revision": create, "mod_revision": modr, "version": version})
}

fn rev(v: &Value, field: &str) -> u64 {
    v[field]
        .as_u64()
        .unwrap_or_else(|| panic!("no {field} in {v}"))
}

#[test]
fn kv_round_trips_forwarding_status_members_health_metrics() {
    let mut c = Cluster::start(3);
    let leader = c.leader();
    let followers = c.followers();
    let (f1, f2) = (followers[0], followers[1]);

    // Health on every node; readiness once each has caught up.
    for id in 1..=3 {
        let h = c.request(id, "GET", "/healthz", None);
        assert_eq!(h.status, 200, "{}", h.body);
        wait_until(WAIT, "readyz", || {
            (c.request(id, "GET", "/readyz", None).status == 200).then_some(())
        });
    }

    // A write sent to a follower is forwarded to the leader.
    let r = c.put(f1, "greeting", "hello");
    assert_eq!(r.status, 200, "{}", r.body);
    let put = r.json();
    let r1 = rev(&put, "revision");
    assert_eq!(
        put,
        json!({"revision": r1, "create_revision": r1, "version": 1, "prev": null})
    );
    // Readable everywhere: linearizable reads (followers forward them) and,
    // once applied, stale local reads.
    for id in 1..=3 {
        let g = c.get(id, "greeting");
        assert_eq!(g.status, 200, "node {id}: {}", g.body);
        assert_eq!(g.json(), kv("greeting", "hello", r1, r1, 1), "node {id}");
        c.wait_applied(id, r1);
        let s = c.request(id, "GET", "/v1/kv/greeting?consistency=stale", None);
        assert_eq!(
            s.json(),
            kv("greeting", "hello", r1, r1, 1),
            "stale on {id}"
        );
    }
    let l = c.request(leader, "GET", "/v1/kv/greeting?consistency=lease", None);
    assert_eq!(l.status, 200, "{}", l.body);
    assert_eq!(l.json(), kv("greeting", "hello", r1, r1, 1));

    // Overwrite with ?prev=true, through the other follower.
    let r = c.request(
        f2,
        "PUT",
        "/v1/kv/greeting?prev=true",
        Some(r#"{"value":"bonjour"}"#),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let r2 = rev(&r.json(), "revision");
    assert!(r2 > r1);
    assert_eq!(
        r.json(),
        json!({"revision": r2, "create_revision": r1, "version": 2,
               "prev": kv("greeting", "hello", r1, r1, 1)})
    );

    // Compare-and-swap: a mismatch is 409 with the current pair.
    let m = c.request(
        f1,
        "POST",
        "/v1/kv/greeting/cas",
        Some(r#"{"expected_value":"hello","value":"hi"}"#),
    );
    assert_eq!(m.status, 409, "{}", m.body);
    assert_eq!(m.error_code(), "cas_mismatch");
    assert_eq!(m.json()["current"], kv("greeting", "bonjour", r1, r2, 2));
    // On the modification revision: succeeds.
    let ok = c.request(
        leader,
        "POST",
        "/v1/kv/greeting/cas",
        Some(&json!({"expected_mod_revision": r2, "value": "salut"}).to_string()),
    );
    assert_eq!(ok.status, 200, "{}", ok.body);
    let r3 = rev(&ok.json(), "revision");
    assert_eq!(ok.json(), json!({"succeeded": true, "revision": r3}));
    assert_eq!(
        c.get(f2, "greeting").json(),
        kv("greeting", "salut", r1, r3, 3)
    );
    // "Must be absent": creates a new key; a second time it mismatches
    // with the pair it created.
    let body = r#"{"expected_value":null,"value":"1"}"#;
    let created = c.request(f2, "POST", "/v1/kv/counter/cas", Some(body));
    assert_eq!(created.status, 200, "{}", created.body);
    let r4 = rev(&created.json(), "revision");
    let again = c.request(f2, "POST", "/v1/kv/counter/cas", Some(body));
    assert_eq!(again.status, 409, "{}", again.body);
    assert_eq!(again.json()["current"], kv("counter", "1", r4, r4, 1));
    // `value: null` deletes on success.
    let del = c.request(
        f1,
        "POST",
        "/v1/kv/counter/cas",
        Some(r#"{"expected_value":"1","value":null}"#),
    );
    assert_eq!(del.status, 200, "{}", del.body);
    assert_eq!(c.get(leader, "counter").status, 404);

    // A key that needs percent-encoding round-trips.
    let odd = "dir/sub key?&é";
    let r = c.put(f1, odd, "odd value \"quoted\"");
    assert_eq!(r.status, 200, "{}", r.body);
    let r5 = rev(&r.json(), "revision");
    assert_eq!(
        c.get(f2, odd).json(),
        kv(odd, "odd value \"quoted\"", r5, r5, 1)
    );

    // Listing by prefix, with a limit and `more`.
    let mut revs = Vec::new();
    for i in 0..3 {
        let r = c.put(leader, &format!("list/{i}"), &format!("v{i}"));
        assert_eq!(r.status, 200, "{}", r.body);
        revs.push(rev(&r.json(), "revision"));
    }
    let all = c.request(f1, "GET", "/v1/kv?prefix=list%2F", None);
    assert_eq!(all.status, 200, "{}", all.body);
    let all = all.json();
    assert_eq!(
        all["kvs"],
        json!([
            kv("list/0", "v0", revs[0], revs[0], 1),
            kv("list/1", "v1", revs[1], revs[1], 1),
            kv("list/2", "v2", revs[2], revs[2], 1),
        ])
    );
    assert_eq!(all["more"], false);
    assert!(rev(&all, "revision") >= revs[2]);
    let some = c
        .request(f2, "GET", "/v1/kv?prefix=list/&limit=2", None)
        .json();
    assert_eq!(some["kvs"].as_array().unwrap().len(), 2);
    assert_eq!(some["more"], true);
    let everything = c.request(leader, "GET", "/v1/kv", None).json();
    let keys: Vec<&str> = everything["kvs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["key"].as_str().unwrap())
        .collect();
    assert_eq!(keys, vec![odd, "greeting", "list/0", "list/1", "list/2"]);

    // Delete (from a follower): 200 with the removed pair, then 404.
    let d = c.delete(f2, "list/1");
    assert_eq!(d.status, 200, "{}", d.body);
    let r6 = rev(&d.json(), "revision");
    assert_eq!(
        d.json(),
        json!({"revision": r6, "deleted": true, "prev": kv("list/1", "v1", revs[1], revs[1], 1)})
    );
    let d = c.delete(f2, "list/1");
    assert_eq!(d.status, 404, "{}", d.body);
    assert_eq!(d.error_code(), "key_not_found");
    let g = c.get(f1, "list/1");
    assert_eq!(g.status, 404);
    assert_eq!(
        g.json(),
        json!({"error": {
            "code": "key_not_found",
            "reason": null,
            "message": "key not found",
            "leader_hint": null,
        }})
    );

    // Status: the contract's shape on every node.
    for id in 1..=3 {
        let st = c.status(id);
        assert_eq!(st["id"], id);
        assert_eq!(st["leader"], leader);
        let role = if id == leader { "leader" } else { "follower" };
        assert_eq!(st["role"], role, "{st}");
        assert!(rev(&st, "term") >= 1);
        for f in [
            "commit_index",
            "applied_index",
            "last_index",
            "snapshot_index",
        ] {
            assert!(st[f].is_u64(), "{f} in {st}");
        }
        assert!(rev(&st, "applied_index") <= rev(&st, "commit_index"));
        assert_eq!(
            st["members"],
            json!({"voters": [1, 2, 3], "voters_outgoing": [], "learners": []})
        );
        let peers = st["peers"].as_array().unwrap();
        if id == leader {
            let ids: Vec<u64> = peers.iter().map(|p| p["id"].as_u64().unwrap()).collect();
            assert_eq!(ids, followers, "{st}");
            for p in peers {
                assert!(rev(p, "match_index") >= r6, "{p}");
                assert!(rev(p, "next_index") > rev(p, "match_index"));
                assert!(p["state"].is_string());
            }
        } else {
            assert!(peers.is_empty(), "{st}");
        }
    }

    // Members: every voter with the addresses it was started with.
    let members = c.request(f1, "GET", "/v1/members", None);
    assert_eq!(members.status, 200, "{}", members.body);
    let expected: Vec<Value> = (1..=3)
        .map(|id| {
            let n = &c.nodes[&id];
            json!({"id": id, "role": "voter", "peer_addr": n.peer_addr.to_string(),
                   "client_addr": n.client_addr.to_string()})
        })
        .collect();
    assert_eq!(members.json(), json!({ "members": expected }));

    // Metrics: the runtime's and the HTTP layer's, and proof that the
    // followers forwarded (rather than redirected) writes.
    let m = c.request(leader, "GET", "/metrics", None);
    assert_eq!(m.status, 200);
    assert!(m.header("content-type").is_some_and(|t| t.contains("text")));
    for needle in [
        "raft_proposals_total",
        "raft_fsync_latency_seconds_bucket",
        "raft_is_leader 1",
        "raftkv_http_requests_total{method=\"PUT\",route=\"/v1/kv/{key}\",status=\"200\"}",
        "raftkv_http_request_duration_seconds_bucket",
        "raftkv_keys 4",
    ] {
        assert!(
            m.body.contains(needle),
            "metrics lack {needle}:\n{}",
            m.body
        );
    }
    let fm = c.request(f1, "GET", "/metrics", None).body;
    let forwarded: u64 = fm
        .lines()
        .find_map(|l| l.strip_prefix("raftkv_forwarded_requests_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no forwarded counter in\n{fm}"));
    assert!(forwarded >= 3, "follower forwarded {forwarded} requests");

    // One hop only: a request already forwarded is not forwarded again.
    let body = r#"{"value":"no"}"#;
    let req = format!(
        "PUT /v1/kv/bounced HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\
         x-raftkv-forwarded: 1\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let raw = raw_request(c.addr(f1), req.as_bytes()).unwrap();
    let r = parse_response(&raw).unwrap();
    assert_eq!(r.status, 503, "{}", r.body);
    // Refused before anything was proposed: safe to retry at the leader.
    assert_eq!(r.error_code(), "not_applied");
    assert_eq!(r.error_reason().as_deref(), Some("not_leader"));
    assert_eq!(r.json()["error"]["leader_hint"], leader);
    assert_eq!(c.get(leader, "bounced").status, 404, "nothing was written");
}

#[test]
fn retried_writes_with_one_session_apply_once() {
    let mut c = Cluster::start(3);
    let leader = c.leader();
    let follower = c.followers()[0];
    let put = |node: u64, value: &str, seq: u64| {
        c.request(
            node,
            "PUT",
            "/v1/kv/acct",
            Some(&json!({"value": value, "client_id": 42, "seq": seq}).to_string()),
        )
    };

    let first = put(leader, "100", 1);
    assert_eq!(first.status, 200, "{}", first.body);
    let r1 = rev(&first.json(), "revision");
    // The same (client, seq) again — even with another value, even through
    // a follower — is a retry: same answer, nothing applied.
    for node in [leader, follower, leader] {
        let retry = put(node, "999", 1);
        assert_eq!(retry.status, 200, "{}", retry.body);
        assert_eq!(retry.json(), first.json(), "retry via node {node}");
    }
    assert_eq!(c.get(follower, "acct").json(), kv("acct", "100", r1, r1, 1));

    // The next sequence number applies.
    let second = put(follower, "150", 2);
    assert_eq!(second.status, 200, "{}", second.body);
    let r2 = rev(&second.json(), "revision");
    assert_eq!(
        second.json(),
        json!({"revision": r2, "create_revision": r1, "version": 2, "prev": null})
    );
    // An older sequence number is refused and changes nothing.
    let stale = put(leader, "1", 1);
    assert_eq!(stale.status, 400, "{}", stale.body);
    assert_eq!(stale.error_code(), "bad_request");
    assert!(stale.body.contains("stale sequence"), "{}", stale.body);
    assert_eq!(c.get(leader, "acct").json(), kv("acct", "150", r1, r2, 2));

    // A retried compare-and-swap succeeds again with the same revision even
    // though its condition no longer holds.
    let cas =
        json!({"expected_value": "150", "value": "175", "client_id": 42, "seq": 3}).to_string();
    let a = c.request(follower, "POST", "/v1/kv/acct/cas", Some(&cas));
    assert_eq!(a.status, 200, "{}", a.body);
    let b = c.request(leader, "POST", "/v1/kv/acct/cas", Some(&cas));
    assert_eq!(b.json(), a.json());
    let r3 = rev(&a.json(), "revision");
    assert_eq!(c.get(leader, "acct").json(), kv("acct", "175", r1, r3, 3));

    // A retried delete answers like the first one (not 404).
    let del = json!({"client_id": 42, "seq": 4}).to_string();
    let d1 = c.request(leader, "DELETE", "/v1/kv/acct", Some(&del));
    assert_eq!(d1.status, 200, "{}", d1.body);
    let d2 = c.request(follower, "DELETE", "/v1/kv/acct", Some(&del));
    assert_eq!(d2.status, 200, "{}", d2.body);
    assert_eq!(d2.json(), d1.json());
    // A write without a session is applied each time.
    let p1 = c.put(leader, "plain", "x").json();
    let p2 = c.put(leader, "plain", "x").json();
    assert_eq!(
        (p1["version"].as_u64(), p2["version"].as_u64()),
        (Some(1), Some(2))
    );
}

#[test]
fn members_and_leadership_transfer() {
    let mut c = Cluster::start(3);
    let leader = c.leader();
    let follower = c.followers()[0];
    let w = c.put(leader, "before", "1");
    assert_eq!(w.status, 200, "{}", w.body);

    // Add node 4 as a learner through a follower (forwarded). It is given
    // only the client addresses and discovers the peers from them.
    c.spawn_joiner_discovering(4);
    assert!(
        c.log(4).contains("discovered the cluster's peers"),
        "{}",
        c.log(4)
    );
    let add = c.add_member(follower, 4, "learner");
    assert_eq!(add.status, 200, "{}", add.body);
    let four = add.json()["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == 4)
        .cloned()
        .unwrap_or_else(|| panic!("node 4 not listed: {}", add.body));
    assert_eq!(four["role"], "learner");
    assert_eq!(four["peer_addr"], c.nodes[&4].peer_addr.to_string());
    // The learner receives the log: a stale read on it sees the data.
    let w = c.put(follower, "after-learner", "2");
    let idx = rev(&w.json(), "revision");
    c.wait_applied(4, idx);
    let s = c.request(4, "GET", "/v1/kv/after-learner?consistency=stale", None);
    assert_eq!(s.status, 200, "{}", s.body);
    assert_eq!(s.json()["value"], "2");

    // Promote it (retrying while the core says it lags), then it votes.
    let promoted = wait_until(WAIT, "promotion", || {
        let r = c.request(follower, "POST", "/v1/members/4/promote", None);
        match r.status {
            200 => Some(r),
            503 => None,
            _ => panic!("promote: {} {}", r.status, r.body),
        }
    });
    assert!(
        promoted.body.contains(r#""id":4,"role":"voter""#),
        "{}",
        promoted.body
    );
    let st = c.status(leader);
    assert_eq!(st["members"]["voters"], json!([1, 2, 3, 4]));
    // Every node, the new one included, lists node 4's addresses.
    for id in 1..=4 {
        let m = c.request(id, "GET", "/v1/members", None).json();
        let n4 = m["members"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["id"] == 4)
            .cloned()
            .unwrap_or_else(|| panic!("node {id} does not list node 4: {m}"));
        assert_eq!(n4["client_addr"], c.nodes[&4].client_addr.to_string());
    }

    // Leadership transfer to node 4 (sent to a follower: forwarded). The
    // transfer may time out (504) while node 4's connections to the other
    // nodes are still in their reconnect back-off (they refused its
    // handshake until they had applied its address); a client retries.
    let t = wait_until(WAIT, "a leadership transfer", || {
        let r = c.request(follower, "POST", "/v1/leader/transfer", Some(r#"{"to":4}"#));
        match r.status {
            200 => Some(r),
            503 | 504 => None,
            _ => panic!("transfer: {} {}", r.status, r.body),
        }
    });
    assert_eq!(t.json(), json!({"leader": 4}));
    assert_eq!(c.leader(), 4);
    // The new leader serves linearizable reads of old data, and forwards
    // from the old leader work towards it.
    assert_eq!(c.get(leader, "before").json()["value"], "1");
    let w = c.put(leader, "after-transfer", "3");
    assert_eq!(w.status, 200, "{}", w.body);

    // Remove an original voter (through the old leader: forwarded).
    let removed = c.request(leader, "DELETE", &format!("/v1/members/{follower}"), None);
    assert_eq!(removed.status, 200, "{}", removed.body);
    let ids: Vec<u64> = removed.json()["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_u64().unwrap())
        .collect();
    assert!(!ids.contains(&follower), "{}", removed.body);
    assert_eq!(ids.len(), 3);
    c.kill(follower);
    let w = c.put(4, "after-remove", "4");
    assert_eq!(w.status, 200, "{}", w.body);
    // Removing it again is refused clearly.
    let again = c.request(4, "DELETE", &format!("/v1/members/{follower}"), None);
    assert_eq!(again.status, 400, "{}", again.body);
}

#[test]
fn sigterm_stops_gracefully_and_restart_catches_up() {
    let mut c = Cluster::start(3);
    let leader = c.leader();
    let follower = c.followers()[0];
    let status = c.terminate(follower);
    assert!(status.success(), "exit status {status}");
    assert!(c.log(follower).contains("stopped"), "{}", c.log(follower));
    // The other two keep serving.
    let w = c.put(leader, "while-down", "x");
    assert_eq!(w.status, 200, "{}", w.body);
    let idx = rev(&w.json(), "revision");
    // Restarted from its data directory, it catches up.
    c.restart(follower);
    c.wait_applied(follower, idx);
    let s = c.request(follower, "GET", "/v1/kv/while-down?consistency=stale", None);
    assert_eq!(s.status, 200, "{}", s.body);
    assert_eq!(s.json()["value"], "x");
}
