//! The durable key-value state (`<data-dir>/kv/state.redb`) against real
//! `raftkv serve` processes: a node killed with SIGKILL reopens at its last
//! checkpoint and replays only the log after it; a damaged state file is
//! refused with an error naming it, and a damaged record is never served.

mod support;

use std::process::Command;
use std::time::Duration;

use support::*;

fn one_node(snapshot_entries: u64) -> Cluster {
    Cluster::start_with(ClusterOptions {
        nodes: 1,
        snapshot_entries,
        ..ClusterOptions::default()
    })
}

fn state_file(c: &Cluster, id: u64) -> std::path::PathBuf {
    c.nodes[&id].data_dir.join("kv").join("state.redb")
}

/// The `applied_index` of the last "key-value state open" line in the log.
fn opened_at(log: &str) -> u64 {
    let line = log
        .lines()
        .rev()
        .find(|l| l.contains("key-value state open"))
        .expect("an open line");
    line.split_whitespace()
        .find_map(|w| w.strip_prefix("applied_index="))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no applied_index in {line}"))
}

#[test]
fn a_killed_node_reopens_at_its_checkpoint_and_replays_the_rest() {
    let mut c = one_node(50);
    c.leader();
    for i in 0..120 {
        assert_eq!(c.put(1, &format!("k{i}"), &format!("v{i}")).status, 200);
    }
    assert!(
        state_file(&c, 1).exists(),
        "the state lives in kv/state.redb"
    );
    let applied = c.status(1)["applied_index"].as_u64().unwrap();
    c.kill(1);
    c.restart(1);
    c.leader();
    let log = c.log(1);
    let at = opened_at(&log);
    // Opened at a checkpoint (every 50 entries), not at 0 and not past
    // what was applied.
    assert!(
        at >= 100 && at <= applied,
        "opened at {at}, applied {applied}"
    );
    for i in 0..120 {
        let r = c.get(1, &format!("k{i}"));
        assert_eq!(r.status, 200, "k{i}: {}", r.body);
        assert_eq!(r.json()["value"], format!("v{i}"));
    }
}

#[test]
fn a_damaged_state_file_is_refused_naming_it() {
    let mut c = one_node(10_000);
    c.leader();
    assert_eq!(c.put(1, "a", "1").status, 200);
    assert!(c.terminate(1).success());
    let file = state_file(&c, 1);
    // Overwrite the engine's header page: not a store any more.
    let mut bytes = std::fs::read(&file).unwrap();
    for b in bytes.iter_mut().take(512) {
        *b = 0x5a;
    }
    std::fs::write(&file, &bytes).unwrap();
    let out = Command::new(RAFTKV)
        .args(&c.nodes[&1].args)
        .output()
        .expect("run raftkv serve");
    assert!(!out.status.success(), "served a damaged state file");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&*file.to_string_lossy()),
        "the error names the file: {stderr}"
    );
}

#[test]
fn a_damaged_record_is_never_served() {
    let mut c = one_node(10_000);
    c.leader();
    let marker = "damaged-value-marker-0123456789";
    assert_eq!(c.put(1, "victim", marker).status, 200);
    assert_eq!(c.put(1, "other", "fine").status, 200);
    assert!(c.terminate(1).success());
    let file = state_file(&c, 1);
    let mut bytes = std::fs::read(&file).unwrap();
    // Every copy (the live record, a session's cached answer, pages redb
    // has not reused yet).
    let copies: Vec<usize> = bytes
        .windows(marker.len())
        .enumerate()
        .filter(|(_, w)| *w == marker.as_bytes())
        .map(|(i, _)| i)
        .collect();
    assert!(!copies.is_empty(), "the value is stored in the file");
    for at in copies {
        bytes[at + 3] ^= 0x01;
    }
    std::fs::write(&file, &bytes).unwrap();
    c.restart(1);
    // Either the damage is found at once (the node stops) or when the
    // record is read: never the damaged value, always an error.
    let r = c.try_request(1, "GET", "/v1/kv/victim?consistency=stale", None);
    if let Ok(r) = r {
        assert_ne!(r.status, 200, "served a damaged record: {}", r.body);
        assert!(r.status >= 500, "{}", r.body);
        assert!(
            r.body.contains("state.redb"),
            "the error names the file: {}",
            r.body
        );
    }
    // The node finds the damage when it reads the record (the read above,
    // or applying the new term's first entry, whose session bookkeeping
    // reads the table): it stops, and says which file is damaged.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let log = c.log(1);
        if log.contains("state.redb is corrupt") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the log names the damaged file:\n{log}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
