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
    fails(
        ep,
        &["ls", "--limit", "lots"],
        2,
        "invalid value 'lots' for '--limit <LIMIT>'",
    );
    // The server refuses a bound longer than a key (+1): exit 1, its message.
    let long = "k".repeat(1100);
    fails(
        ep,
        &["ls", "--start", &long],
        1,
        "list range bound of 1100 bytes exceeds the limit of 1025 bytes",
    );
}

/// Runs a command with `input` on its stdin.
fn run_with_stdin(endpoints: &str, args: &[&str], input: &[u8]) -> Output {
    use std::io::Write;
    let mut child = Command::new(bin())
        .args(args)
        .arg("--endpoints")
        .arg(endpoints)
        .env_remove("RAFTKV_ENDPOINTS")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    child.wait_with_output().unwrap()
}

/// A JSON document from a command's stdout.
fn json_of(endpoints: &str, args: &[&str]) -> serde_json::Value {
    let out = ok(endpoints, args);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?}: {e}: {out}"))
}

#[tokio::test]
async fn put_reads_stdin_and_files_and_every_command_writes_out_three_ways() {
    let tc = TestCluster::start(3, 0, &[]).await;
    let ep = tc.endpoints_flag();
    let ep = ep.as_str();

    // put KEY with the value on stdin: any bytes, exactly.
    let binary: &[u8] = b"\x00\xffbin\nary\x80";
    let o = run_with_stdin(ep, &["put", "bin"], binary);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).starts_with("OK (revision "), "{}", stdout(&o));
    let o = run(ep, &["get", "bin"]);
    assert_eq!(o.stdout, [binary, b"\n"].concat());
    let kv = json_of(ep, &["get", "bin", "-w", "json"]);
    assert_eq!(kv["key"], "bin");
    assert_eq!(kv["value_b64"], "AP9iaW4KYXJ5gA==");
    assert!(kv.get("value").is_none(), "{kv}");
    // --file.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v.txt");
    std::fs::write(&path, "from a file").unwrap();
    ok(ep, &["put", "f/1", "--file", path.to_str().unwrap()]);
    assert_eq!(ok(ep, &["get", "f/1"]), "from a file\n");

    // -w on put, get, del, cas: exact output.
    let put = json_of(ep, &["put", "w", "one", "-w", "json"]);
    let r1 = put["revision"].as_u64().unwrap();
    assert_eq!(
        put,
        serde_json::json!({"revision": r1, "create_revision": r1, "version": 1, "prev": null})
    );
    let out = ok(ep, &["put", "w", "two", "--write-out", "table"]);
    let r2 = json_of(ep, &["get", "w", "-w", "json"])["mod_revision"]
        .as_u64()
        .unwrap();
    assert!(r2 > r1);
    assert_eq!(
        out,
        format!("REVISION  CREATE_REVISION  VERSION\n{r2:<8}  {r1:<15}  2\n")
    );
    assert_eq!(
        ok(ep, &["get", "w", "-w", "table"]),
        format!(
            "KEY  VALUE  CREATE_REVISION  MOD_REVISION  VERSION\nw    two    {r1:<15}  {r2:<12}  2\n"
        )
    );
    // `--json` is still `-w json`.
    assert_eq!(json_of(ep, &["get", "w", "--json"])["value"], "two");
    let cas = json_of(
        ep,
        &[
            "cas",
            "w",
            "--expected-value",
            "two",
            "--value",
            "three",
            "-w",
            "json",
        ],
    );
    let r3 = cas["revision"].as_u64().unwrap();
    assert!(r3 > r2);
    assert_eq!(cas, serde_json::json!({"succeeded": true, "revision": r3}));
    assert_eq!(
        ok(
            ep,
            &[
                "cas",
                "w",
                "--expected-mod-revision",
                &r3.to_string(),
                "--value",
                "4",
                "-w",
                "table"
            ]
        ),
        format!(
            "SUCCEEDED  REVISION\ntrue       {}\n",
            json_of(ep, &["get", "w", "-w", "json"])["mod_revision"]
        )
    );
    let del = json_of(ep, &["del", "w", "-w", "json"]);
    assert_eq!(del["deleted"], true);
    assert_eq!(del["prev"]["value"], "4");
    assert!(del["revision"].as_u64().unwrap() > r3 + 1, "{del}");

    // ls in a table, and a count in each format.
    ok(ep, &["put", "f/2", "second"]);
    let out = ok(ep, &["ls", "--prefix", "f/", "-w", "table"]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    assert!(
        lines[0].starts_with("KEY  VALUE        CREATE_REVISION"),
        "{out}"
    );
    assert!(lines[1].starts_with("f/1  from a file  "), "{out}");
    assert!(lines[2].starts_with("f/2  second       "), "{out}");
    assert_eq!(ok(ep, &["ls", "--prefix", "f/", "--count-only"]), "2\n");
    let count = json_of(ep, &["ls", "--prefix", "f/", "--count-only", "-w", "json"]);
    assert_eq!(count["count"], 2);
    let out = ok(ep, &["ls", "--prefix", "f/", "--count-only", "-w", "table"]);
    assert!(out.starts_with("COUNT  REVISION\n2      "), "{out}");

    // status and member list: simple is one comma-separated line per node.
    let out = ok(ep, &["status", "-w", "simple"]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    for (line, endpoint) in lines.iter().zip(tc.endpoints()) {
        let fields: Vec<&str> = line.split(", ").collect();
        assert_eq!(fields.len(), 8, "{line}");
        assert_eq!(fields[0], endpoint);
        assert!(["leader", "follower"].contains(&fields[2]), "{line}");
    }
    assert!(ok(ep, &["status"]).starts_with("ENDPOINT"));
    let out = ok(ep, &["member", "list", "-w", "simple"]);
    assert_eq!(out.lines().count(), 3, "{out}");
    assert!(out.lines().all(|l| l.split(", ").count() == 4), "{out}");
    assert_eq!(
        json_of(ep, &["member", "list", "-w", "json"])["members"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
    // version: the CLI's build and each server's.
    let o = Command::new(bin())
        .args(["version", "-w", "json", "--endpoints", &tc.endpoints()[0]])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["client"]["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(v["servers"][0]["endpoint"], tc.endpoints()[0]);
    assert_eq!(
        v["servers"][0]["build"]["version"],
        env!("CARGO_PKG_VERSION")
    );
    let o = Command::new(bin())
        .args(["version", "-w", "table"])
        .output()
        .unwrap();
    let out = stdout(&o);
    assert!(out.starts_with("ENDPOINT    VERSION  REVISION"), "{out}");
    assert!(
        out.lines().nth(1).unwrap().starts_with("(this cli)  "),
        "{out}"
    );

    // Bad input: a clear message, an exit code, nothing stored.
    fails(
        ep,
        &["put", "x", "v", "--file", "/nonexistent"],
        2,
        "cannot be used with",
    );
    fails(
        ep,
        &["put", "x", "--file", "/nonexistent/v"],
        1,
        "cannot read /nonexistent/v",
    );
    fails(ep, &["get", "w", "-w", "yaml"], 2, "invalid value 'yaml'");
    fails(ep, &["get", "x"], 3, "key not found");
    // Over the server's value limit, from stdin: the server's 413.
    let o = run_with_stdin(ep, &["put", "x"], &vec![b'v'; 70_000]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("too_large"), "{}", stderr(&o));
    fails(ep, &["get", "x"], 3, "key not found");
}

#[test]
fn completion_scripts_and_the_man_page() {
    for (shell, marker) in [
        ("bash", "complete -F _raftkv"),
        ("zsh", "#compdef raftkv"),
        ("fish", "complete -c raftkv"),
    ] {
        let o = Command::new(bin())
            .args(["completion", shell])
            .output()
            .unwrap();
        assert!(o.status.success(), "{shell}: {}", stderr(&o));
        let script = stdout(&o);
        assert!(script.contains(marker), "{shell}: no {marker:?}");
        // Subcommands and their flags are in it.
        for word in ["put", "ls", "write-out", "count-only"] {
            assert!(script.contains(word), "{shell} lacks {word}");
        }
    }
    let o = Command::new(bin())
        .args(["completion", "tcsh"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("invalid value 'tcsh'"),
        "{}",
        stderr(&o)
    );
    let o = Command::new(bin()).arg("man").output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let page = stdout(&o);
    assert!(page.contains(".TH raftkv 1"), "{page}");
    assert!(page.contains("replicated key\\-value store"), "{page}");
    assert!(page.contains("completion"), "{page}");
}
