//! The etcd-grade parts of the key-value API against a 3-node cluster of
//! real `raftkv serve` processes: binary keys and values (base64 JSON
//! fields, raw bodies), keys with slashes in the path, and range listings
//! with paging. Bad input is a 4xx that changes nothing.

mod support;

use serde_json::{json, Value};
use support::*;

fn rev(v: &Value) -> u64 {
    v["revision"]
        .as_u64()
        .unwrap_or_else(|| panic!("no revision in {v}"))
}

/// A request with any body bytes and exactly these headers.
fn send(
    c: &Cluster,
    id: u64,
    method: &str,
    path: &str,
    body: &[u8],
    headers: &[(&str, &str)],
) -> HttpResponse {
    bytes_request(c.addr(id), method, path, body, headers)
        .unwrap_or_else(|e| panic!("{method} {path} on node {id}: {e}"))
}

const RAW: (&str, &str) = ("Content-Type", "application/octet-stream");
const ACCEPT_RAW: (&str, &str) = ("Accept", "application/octet-stream");
const JSON: (&str, &str) = ("Content-Type", "application/json");

#[test]
fn binary_keys_and_values_round_trip_unmangled() {
    let mut c = Cluster::start(3);
    let leader = c.leader();
    let follower = c.followers()[0];

    // A raw body, sent to a follower (forwarded with its content type).
    let value: &[u8] = b"\x00\xff\xfe binary \x80";
    let r = send(&c, follower, "PUT", "/v1/kv/blob", value, &[RAW]);
    assert_eq!(r.status, 200, "{}", r.body);
    let r1 = rev(&r.json());
    assert_eq!(
        r.json(),
        json!({"revision": r1, "create_revision": r1, "version": 1, "prev": null})
    );

    // Plain JSON GET: not UTF-8, so `value_b64` instead of `value`.
    for id in [leader, follower] {
        let g = c.get(id, "blob");
        assert_eq!(g.status, 200, "{}", g.body);
        assert_eq!(
            g.json(),
            json!({"key": "blob", "value_b64": "AP/+IGJpbmFyeSCA",
                   "create_revision": r1, "mod_revision": r1, "version": 1}),
            "node {id}"
        );
    }
    // Raw GET (through a follower too): the exact bytes, revisions in
    // headers.
    for id in [leader, follower] {
        let g = send(&c, id, "GET", "/v1/kv/blob", b"", &[ACCEPT_RAW]);
        assert_eq!(g.status, 200, "{}", g.body);
        assert_eq!(g.raw_body, value, "node {id}");
        assert_eq!(g.header("content-type"), Some("application/octet-stream"));
        assert_eq!(
            g.header("x-raftkv-mod-revision"),
            Some(r1.to_string().as_str())
        );
        assert_eq!(
            g.header("x-raftkv-create-revision"),
            Some(r1.to_string().as_str())
        );
        assert_eq!(g.header("x-raftkv-version"), Some("1"));
    }
    // A raw GET of a missing key is still a JSON 404.
    let g = send(&c, leader, "GET", "/v1/kv/nope", b"", &[ACCEPT_RAW]);
    assert_eq!((g.status, g.error_code().as_str()), (404, "key_not_found"));

    // value_b64 in JSON, a non-UTF-8 key in the path (%FF).
    let r = send(
        &c,
        follower,
        "PUT",
        "/v1/kv/k%FF",
        br#"{"value_b64":"gAE="}"#,
        &[JSON],
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let r2 = rev(&r.json());
    let g = c.request(leader, "GET", "/v1/kv/k%FF", None);
    assert_eq!(
        g.json(),
        json!({"key_b64": "a/8=", "value_b64": "gAE=",
               "create_revision": r2, "mod_revision": r2, "version": 1})
    );
    // A UTF-8 value given as base64 comes back as a string.
    let r = c.request(leader, "PUT", "/v1/kv/t", Some(r#"{"value_b64":"aGk="}"#));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(c.get(leader, "t").json()["value"], "hi");

    // CAS with base64 on both sides, then a binary prev on delete.
    let r = c.request(
        leader,
        "POST",
        "/v1/kv/k%FF/cas",
        Some(r#"{"expected_value_b64":"gAE=","value_b64":"/w=="}"#),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let r3 = rev(&r.json());
    assert_eq!(r.json(), json!({"succeeded": true, "revision": r3}));
    let r = c.request(
        leader,
        "POST",
        "/v1/kv/k%FF/cas",
        Some(r#"{"expected_value_b64":"gAE=","value":"x"}"#),
    );
    assert_eq!(r.status, 409, "{}", r.body);
    assert_eq!(r.json()["current"]["value_b64"], "/w==");
    let r = c.request(leader, "DELETE", "/v1/kv/k%FF", None);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["prev"]["key_b64"], "a/8=");
    assert_eq!(r.json()["prev"]["value_b64"], "/w==");

    // Bad input: 400, and nothing changes.
    let before = c.get(leader, "blob").json();
    for (body, message) in [
        (
            r#"{"value":"a","value_b64":"YQ=="}"#,
            "give value or value_b64, not both",
        ),
        (
            r#"{"value_b64":"not base64!"}"#,
            "value_b64 is not valid base64",
        ),
        (r#"{"value_b64":"YQ"}"#, "value_b64 is not valid base64"),
        (
            r#"{}"#,
            "the value is required: give value (a string) or value_b64 (base64)",
        ),
        (
            r#"{"value":"a","value_hex":"61"}"#,
            "unknown field `value_hex`",
        ),
    ] {
        let r = send(&c, follower, "PUT", "/v1/kv/blob", body.as_bytes(), &[JSON]);
        assert_eq!(r.status, 400, "{body}: {}", r.body);
        let m = r.json()["error"]["message"].as_str().unwrap().to_string();
        assert!(m.contains(message), "{body}: {m:?} lacks {message:?}");
    }
    let r = c.request(
        leader,
        "POST",
        "/v1/kv/blob/cas",
        Some(r#"{"expected_value":"a","expected_value_b64":"YQ==","value":"b"}"#),
    );
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(
        r.json()["error"]["message"],
        "give expected_value or expected_value_b64, not both"
    );
    // A raw body must not carry query parameters the route lacks.
    let r = send(&c, leader, "PUT", "/v1/kv/blob?encoding=raw", b"x", &[RAW]);
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(c.get(leader, "blob").json(), before);
}

#[test]
fn keys_with_slashes_need_no_escaping() {
    let mut c = Cluster::start(3);
    let leader = c.leader();
    let follower = c.followers()[0];

    // `/v1/kv/a/b/c` is the key `a/b/c`, forwarded from a follower too.
    let r = c.request(follower, "PUT", "/v1/kv/a/b/c", Some(r#"{"value":"1"}"#));
    assert_eq!(r.status, 200, "{}", r.body);
    let r1 = rev(&r.json());
    let expect = json!({"key": "a/b/c", "value": "1",
                        "create_revision": r1, "mod_revision": r1, "version": 1});
    // The same key, with and without escaping, on every node.
    for id in 1..=3 {
        assert_eq!(
            c.request(id, "GET", "/v1/kv/a/b/c", None).json(),
            expect,
            "{id}"
        );
        assert_eq!(
            c.request(id, "GET", "/v1/kv/a%2Fb%2Fc", None).json(),
            expect,
            "{id}"
        );
        assert_eq!(
            c.request(id, "GET", "/v1/kv/a/b%2Fc", None).json(),
            expect,
            "{id}"
        );
    }
    // A key ending in `/cas` is an ordinary key for PUT, GET and DELETE;
    // POST .../cas is the compare-and-swap of the key before the last
    // `/cas`.
    let r = c.request(leader, "PUT", "/v1/kv/a/cas", Some(r#"{"value":"2"}"#));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        c.request(leader, "GET", "/v1/kv/a%2Fcas", None).json()["value"],
        "2"
    );
    let r = c.request(
        follower,
        "POST",
        "/v1/kv/a/b/c/cas",
        Some(r#"{"expected_value":"1","value":"3"}"#),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(c.get(leader, "a/b/c").json()["value"], "3");
    let r = c.request(
        leader,
        "POST",
        "/v1/kv/a/cas/cas",
        Some(r#"{"expected_value":"2","value":"4"}"#),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(c.get(leader, "a/cas").json()["value"], "4");
    // The old form with an escaped key still works.
    let r = c.request(
        leader,
        "POST",
        "/v1/kv/a%2Fb%2Fc/cas",
        Some(r#"{"expected_value":"3","value":"5"}"#),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(c.get(leader, "a/b/c").json()["value"], "5");
    let r = c.request(leader, "DELETE", "/v1/kv/a/b/c", None);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(c.get(leader, "a/b/c").status, 404);

    // Bad paths: nothing changes.
    let before = c.get(leader, "a/cas").json();
    // POST without /cas is not a route.
    let r = c.request(
        leader,
        "POST",
        "/v1/kv/a",
        Some(r#"{"expected_value":"4","value":"x"}"#),
    );
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (404, "not_found"),
        "{}",
        r.body
    );
    assert_eq!(
        r.json()["error"]["message"],
        "no route for POST /v1/kv/a: compare-and-swap is POST /v1/kv/{key}/cas"
    );
    // An escaped `/cas` belongs to the key (which does not exist here).
    let r = c.request(
        leader,
        "POST",
        "/v1/kv/a%2Fcas",
        Some(r#"{"expected_value":"4","value":"x"}"#),
    );
    assert_eq!(r.status, 404, "{}", r.body);
    // No key at all.
    let r = c.request(leader, "PUT", "/v1/kv/", Some(r#"{"value":"x"}"#));
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (404, "not_found"),
        "{}",
        r.body
    );
    let r = c.request(
        leader,
        "POST",
        "/v1/kv/cas",
        Some(r#"{"expected_value":"4","value":"x"}"#),
    );
    assert_eq!(r.status, 404, "{}", r.body);
    assert_eq!(c.get(leader, "a/cas").json(), before);

    // Metrics keep their labels: key routes and CAS counted apart.
    let m = c.request(leader, "GET", "/metrics", None).body;
    assert!(
        m.lines().any(|l| l.contains("method=\"POST\"")
            && l.contains("route=\"/v1/kv/{key}/cas\"")
            && l.contains("status=\"200\"")),
        "{m}"
    );
    assert!(
        m.lines().any(|l| l.contains("method=\"PUT\"")
            && l.contains("route=\"/v1/kv/{key}\"")
            && l.contains("status=\"200\"")),
        "{m}"
    );
}

/// The keys of a listing's answer, in order.
fn keys(v: &Value) -> Vec<String> {
    v["kvs"]
        .as_array()
        .unwrap_or_else(|| panic!("no kvs in {v}"))
        .iter()
        .map(|kv| kv["key"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn ranges_page_count_and_refuse_bad_parameters() {
    let mut c = Cluster::start(3);
    let leader = c.leader();
    let follower = c.followers()[0];
    for k in ["a", "a/1", "a/2", "a/3", "a/4", "b", "c"] {
        let r = c.put(leader, k, &format!("v-{k}"));
        assert_eq!(r.status, 200, "{}", r.body);
    }
    let r = send(&c, leader, "PUT", "/v1/kv/z%FF", b"\x01\xfe", &[RAW]);
    assert_eq!(r.status, 200, "{}", r.body);
    let last = rev(&r.json());
    c.wait_applied(follower, last);

    // [start, range_end), on a follower (forwarded) and stale (local).
    for path in [
        "/v1/kv?start=a%2F1&range_end=b",
        "/v1/kv?start=a/1&range_end=b&consistency=stale",
    ] {
        let r = c.request(follower, "GET", path, None);
        assert_eq!(r.status, 200, "{path}: {}", r.body);
        assert_eq!(keys(&r.json()), ["a/1", "a/2", "a/3", "a/4"], "{path}");
        assert_eq!(r.json()["more"], false);
        assert!(r.json().get("next").is_none(), "{}", r.body);
    }
    // Paging with the cursor: limit 2 over the prefix a/.
    let r = c.request(leader, "GET", "/v1/kv?prefix=a/&limit=2", None);
    let page = r.json();
    assert_eq!(keys(&page), ["a/1", "a/2"]);
    assert_eq!(
        (page["more"].clone(), page["next"].clone()),
        (json!(true), json!("a/2"))
    );
    let r = c.request(leader, "GET", "/v1/kv?prefix=a/&limit=2&after=a/2", None);
    let page = r.json();
    assert_eq!(keys(&page), ["a/3", "a/4"]);
    // Exactly at the end: no more, no next.
    assert_eq!(page["more"], false, "{page}");
    assert!(page.get("next").is_none(), "{page}");
    // keys_only: no values.
    let r = c.request(
        leader,
        "GET",
        "/v1/kv?prefix=a/&limit=1&keys_only=true",
        None,
    );
    let v = r.json();
    assert_eq!(
        v["kvs"][0].as_object().unwrap().keys().collect::<Vec<_>>(),
        ["create_revision", "key", "mod_revision", "version"]
    );
    assert_eq!(v["next"], "a/1");
    // count_only: the whole range, exact.
    let count = |q: &str| {
        let r = c.request(follower, "GET", &format!("/v1/kv?count_only=true{q}"), None);
        assert_eq!(r.status, 200, "{q}: {}", r.body);
        let v = r.json();
        assert_eq!(v["more"], false, "{v}");
        assert!(v.get("kvs").is_none(), "{v}");
        v["count"].as_u64().unwrap()
    };
    assert_eq!(count(""), 8);
    assert_eq!(count("&prefix=a"), 5);
    assert_eq!(count("&prefix=a/&after=a/2"), 2);
    assert_eq!(count("&start=b&range_end=c"), 1);
    // Byte order: z\xff sorts after zz.
    assert_eq!(count("&start=zz"), 1);
    assert_eq!(count("&start=z%FF%00"), 0);
    // A binary last key comes back as next_b64, and is a valid cursor.
    let r = c.request(leader, "GET", "/v1/kv?start=c&limit=1", None);
    assert_eq!(r.json()["next"], "c");
    let r = c.request(leader, "GET", "/v1/kv?after=c&limit=1", None);
    assert_eq!(r.json()["kvs"][0]["key_b64"], "ev8=");
    assert_eq!(r.json()["kvs"][0]["value_b64"], "Af4=");
    assert_eq!(r.json()["more"], false);
    let r = c.request(leader, "GET", "/v1/kv?start=b&limit=2", None);
    assert_eq!(r.json()["next"], "c");
    let r = c.request(
        leader,
        "GET",
        "/v1/kv?prefix=z&range_end=z%FF%00&limit=1",
        None,
    );
    assert_eq!(r.json()["kvs"][0]["key_b64"], "ev8=", "{}", r.body);

    // Bad parameters: 400 with a clear message; nothing changes.
    let before = c.request(leader, "GET", "/v1/kv?limit=1000", None).json()["kvs"].clone();
    for (query, message) in [
        ("limit=1001", "list limit 1001 is outside 1..=1000"),
        ("limit=0", "list limit 0 is outside 1..=1000"),
        ("count_only=true&limit=5", "count_only counts the whole range: limit does not apply to it"),
        ("count_only=true&keys_only=true", "give keys_only or count_only, not both"),
        ("cursor=a", "unknown query parameter \"cursor\"; accepted: prefix, start, range_end, after, limit, keys_only, count_only, consistency"),
        ("keys_only=maybe", "invalid query parameters"),
        ("prefix=a&prefix=b", "invalid query parameters"),
    ] {
        let r = c.request(leader, "GET", &format!("/v1/kv?{query}"), None);
        assert_eq!(r.status, 400, "{query}: {}", r.body);
        let m = r.json()["error"]["message"].as_str().unwrap().to_string();
        assert!(m.contains(message), "{query}: {m:?} lacks {message:?}");
    }
    // A bound longer than any key plus one byte: 413 like a long key.
    let long = "k".repeat(1026);
    let r = c.request(leader, "GET", &format!("/v1/kv?start={long}"), None);
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (413, "too_large"),
        "{}",
        r.body
    );
    let after_long = "k".repeat(1025);
    let r = c.request(leader, "GET", &format!("/v1/kv?after={after_long}"), None);
    assert_eq!(r.status, 413, "{}", r.body);
    assert_eq!(
        c.request(leader, "GET", "/v1/kv?limit=1000", None).json()["kvs"],
        before
    );
}
