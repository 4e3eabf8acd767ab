//! A peer given by host name is looked up again at every reconnect: when
//! the name moves to another IP (a container restarted with a new
//! address), the next connection goes to the new IP.
//!
//! The name's address is changed for real, through the system resolver:
//! the test re-runs itself in a private mount namespace (`unshare -m`, as
//! root) with its own `/etc/hosts` bind-mounted over the real one, so
//! rewriting that file moves the name for this process only. Where that is
//! not possible (not root, no `unshare`), it says so and passes without
//! checking anything.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{init_tracing, CLUSTER_ID};
use raft_core::{Message, MessageBody};
use raft_runtime::{Metrics, PeerAddr, TcpConfig, TcpTransport, Transport};
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;

/// Set in the re-run child: the hosts file it may rewrite.
const HOSTS_ENV: &str = "RAFT_TEST_HOSTS_FILE";
/// The name whose address moves.
const NAME: &str = "raft-test-moving-peer";

fn write_hosts(path: &Path, ip: &str) {
    // Rewritten in place (same inode): the bind mount shows the file, not
    // the name, so a rename would not be seen.
    std::fs::write(path, format!("127.0.0.1 localhost\n{ip} {NAME}\n")).unwrap();
}

#[test]
fn a_host_name_is_resolved_again_at_every_reconnect() {
    if let Ok(hosts) = std::env::var(HOSTS_ENV) {
        return in_private_namespace(Path::new(&hosts));
    }
    let root = is_root();
    if !root || Command::new("unshare").arg("--help").output().is_err() {
        eprintln!("SKIPPED: needs root and unshare(1) to give the test its own /etc/hosts");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let hosts = dir.path().join("hosts");
    write_hosts(&hosts, "127.0.0.2");
    let exe = std::env::current_exe().unwrap();
    let out = Command::new("unshare")
        .args(["-m", "sh", "-c", "mount --bind \"$0\" /etc/hosts && exec \"$1\" --exact \"$2\" --nocapture --test-threads 1"])
        .arg(&hosts)
        .arg(&exe)
        .arg("a_host_name_is_resolved_again_at_every_reconnect")
        .env(HOSTS_ENV, &hosts)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if !out.status.success() && text.contains("mount") && text.contains("ermission") {
        eprintln!("SKIPPED: cannot bind-mount /etc/hosts here: {text}");
        return;
    }
    assert!(out.status.success(), "child failed:\n{text}");
    assert!(text.contains("1 passed"), "child ran no test:\n{text}");
}

/// Root, from `/proc/self/status` (no libc dependency for one check).
fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

/// The test proper, in the child with its own `/etc/hosts`.
fn in_private_namespace(hosts: &Path) {
    init_tracing();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        // The resolver sees the file: the name is at 127.0.0.2.
        let found: Vec<SocketAddr> = tokio::net::lookup_host((NAME, 1)).await.unwrap().collect();
        assert_eq!(found, vec!["127.0.0.2:1".parse().unwrap()]);
        // Two listeners on one port, at the name's old and new address.
        let old = TcpListener::bind("127.0.0.2:0").await.unwrap();
        let port = old.local_addr().unwrap().port();
        let new = TcpListener::bind(("127.0.0.3", port)).await.unwrap();

        let mut cfg = TcpConfig::new(CLUSTER_ID, 1, "127.0.0.1:0".parse().unwrap());
        cfg.peers.insert(2, PeerAddr::Host(NAME.into(), port));
        cfg.reconnect_backoff_max = Duration::from_millis(50);
        let (mut t, _inbound) = TcpTransport::start(cfg, Metrics::new()).await.unwrap();
        let probe = Message {
            from: 1,
            to: 2,
            term: 1,
            body: MessageBody::TimeoutNow,
        };

        // The first connection goes to the old address.
        t.send(probe.clone());
        let (mut conn, _) = tokio::time::timeout(Duration::from_secs(10), old.accept())
            .await
            .expect("connected to the name's first address")
            .unwrap();
        let mut buf = [0u8; 64];
        assert!(conn.read(&mut buf).await.unwrap() > 0, "nothing sent");

        // The name moves; the old peer goes away (connection and port).
        write_hosts(hosts, "127.0.0.3");
        drop(conn);
        drop(old);
        // The transport notices on its next write, reconnects, and must
        // look the name up again to find the new address.
        let accepted = async {
            loop {
                t.send(probe.clone());
                tokio::select! {
                    r = new.accept() => return r.unwrap(),
                    () = tokio::time::sleep(Duration::from_millis(20)) => {}
                }
            }
        };
        let (mut conn, from) = tokio::time::timeout(Duration::from_secs(10), accepted)
            .await
            .expect("reconnected to the name's new address");
        assert_eq!(from.ip().to_string(), "127.0.0.1");
        assert!(conn.read(&mut buf).await.unwrap() > 0, "nothing sent");
        t.shutdown();
        t.closed().await;
    });
}
