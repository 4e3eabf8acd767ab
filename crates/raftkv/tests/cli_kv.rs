//! The CLI's key-value commands against a real 3-node cluster: transparent
//! paging past the server's page limit, ranges and counts, exact outputs,
//! and bad input refused with a clear message and exit code.

mod cluster_common;

use std::process::{Command, Output, Stdio};

use cluster_common::{bin, TestCluster};
use raftkv::client::{Client, ClientConfig};

fn run(endpoints: &str, args: &[&str]) -> Output {
    Command::new(bin())
        .args(args)
        .arg("--endpoints")
        .arg(endpoints)
        .env_remove("RAFTKV_ENDPOINTS")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).to_string()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

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

/// Runs a command that must fail with `code`, printing nothing on stdout
/// and a message containing `needle` on stderr.
fn fails(endpoints: &str, args: &[&str], code: i32, needle: &str) {
    let o = run(endpoints, args);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(code), "{args:?}: {err}");
    assert!(err.contains(needle), "{args:?}: {err:?} lacks {needle:?}");
    assert_eq!(stdout(&o), "", "{args:?}");
}

#[tokio::test]
async fn ls_pages_past_the_server_limit_and_counts_ranges() {
    let tc = TestCluster::start(3, 0, &[]).await;
    let ep = tc.endpoints_flag();
    let ep = ep.as_str();
    let client = Client::new(ClientConfig::new(tc.endpoints())).unwrap();
    // 2,500 keys: more than two server pages of 1,000.
    let n = 2500;
    let mut session = client.random_session();
    for i in 0..n {
        session
            .put(&format!("p/{i:05}"), &format!("{i}"))
            .await
            .unwrap();
    }
    session.put("q", "outside").await.unwrap();
    let key = |i: usize| format!("p/{i:05}");

    // --limit 0: every key, in order, across three pages.
    let out = ok(ep, &["ls", "--prefix", "p/", "--limit", "0", "--keys-only"]);
    let want: String = (0..n).map(|i| key(i) + "\n").collect();
    assert_eq!(out, want);
    // A limit above one page: exactly that many, then where to resume.
    let o = run(
        ep,
        &["ls", "--prefix", "p/", "--limit", "1500", "--keys-only"],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let want: String = (0..1500).map(|i| key(i) + "\n").collect();
    assert_eq!(stdout(&o), want);
    assert_eq!(
        stderr(&o),
        "(more keys follow; raise --limit, or continue with --after \"p/01499\")\n"
    );
    // ... and resuming there lists the rest.
    let out = ok(
        ep,
        &[
            "ls",
            "--prefix",
            "p/",
            "--after",
            "p/01499",
            "--limit",
            "0",
            "--keys-only",
        ],
    );
    let want: String = (1500..n).map(|i| key(i) + "\n").collect();
    assert_eq!(out, want);
    // JSON: one document, even across pages.
    let json: serde_json::Value = serde_json::from_str(&ok(
        ep,
        &["ls", "--prefix", "p/", "--limit", "1200", "--json"],
    ))
    .unwrap();
    let kvs = json["kvs"].as_array().unwrap();
    assert_eq!(kvs.len(), 1200);
    assert_eq!(kvs[1199]["key"], "p/01199");
    assert_eq!(kvs[1199]["value"], "1199");
    assert_eq!(json["more"], true);
    assert_eq!(json["next"], "p/01199");
    // A range [start, range_end) with values.
    assert_eq!(
        ok(ep, &["ls", "--start", "p/00998", "--range-end", "p/01001"]),
        "p/00998\t998\np/00999\t999\np/01000\t1000\n"
    );
    // Counts: the whole store, a prefix, a range, across pages.
    assert_eq!(ok(ep, &["ls", "--count-only"]), format!("{}\n", n + 1));
    assert_eq!(
        ok(ep, &["ls", "--count-only", "--prefix", "p/"]),
        format!("{n}\n")
    );
    assert_eq!(
        ok(
            ep,
            &[
                "ls",
                "--count-only",
                "--start",
                "p/00100",
                "--range-end",
                "p/02100"
            ]
        ),
        "2000\n"
    );
    let json: serde_json::Value =
        serde_json::from_str(&ok(ep, &["ls", "--count-only", "--prefix", "q", "--json"])).unwrap();
    assert_eq!(json["count"], 1);

    // Bad input: clap refuses (exit 2), nothing printed on stdout.
    fails(
        ep,
        &["ls", "--count-only", "--limit", "5"],
        2,
        "cannot be used with",
    );
    fails(
        ep,
        &["ls", "--count-only", "--keys-only"],
        2,
        "cannot be used with",
    );
    fails(ep, &["ls", "--limit", "lots"], 2, "invalid value 'lots' for '--limit <LIMIT>'");
    // The server refuses a bound longer than a key (+1): exit 1, its message.
    let long = "k".repeat(1100);
    fails(
        ep,
        &["ls", "--start", &long],
        1,
        "list range bound of 1100 bytes exceeds the limit of 1025 bytes",
    );
}
