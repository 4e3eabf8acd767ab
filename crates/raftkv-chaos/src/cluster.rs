//! The `raftkv serve` processes: start (in a namespace or on loopback),
//! SIGKILL, SIGSTOP/SIGCONT, restart, and status polling.

use std::collections::BTreeMap;
use std::fs::{self, OpenOptions};
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde::Deserialize;

use crate::http;
use crate::net::{Netns, NETNS_CLIENT_PORT, NETNS_PEER_PORT};

/// Election timeout of `raftkv serve`, in ticks (raft-core's default
/// `Config::election_timeout_ticks`; each node draws its timeout from
/// `[10, 20)` ticks). With [`TICK_MS`] that is 0.5 to 1 s.
pub const ELECTION_TIMEOUT_TICKS: u64 = 10;

/// The tick the harness runs its nodes with (`--tick-ms`): the same as the
/// workspace's process tests, so elections take 0.5-1 s.
pub const TICK_MS: u64 = 50;

/// Why a node could not be started or signalled.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// Spawning failed.
    #[error("cannot start node {id} ({bin}): {source}")]
    Spawn {
        id: u64,
        bin: String,
        source: std::io::Error,
    },
    /// Creating the data directory or log failed.
    #[error("cannot prepare {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    /// No free loopback ports could be found.
    #[error("no free loopback ports: {0}")]
    Ports(std::io::Error),
}

/// Where one node listens and how the harness reaches it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeAddrs {
    /// `--listen-client`.
    pub listen_client: SocketAddr,
    /// `--listen-peer`, also its entry in `--peers`.
    pub peer: SocketAddr,
    /// Its entry in `--clients` (where other nodes forward to).
    pub advertised_client: SocketAddr,
    /// Where the harness's clients connect.
    pub harness_client: SocketAddr,
    /// The namespace it runs in (`None`: loopback).
    pub netns: Option<String>,
}

/// Addresses for `nodes` nodes on 127.0.0.1, on ports that were free a
/// moment ago (bound, then released).
pub fn loopback_layout(nodes: u64) -> Result<Vec<NodeAddrs>, ClusterError> {
    let listeners = (0..2 * nodes)
        .map(|_| TcpListener::bind((Ipv4Addr::LOCALHOST, 0)))
        .collect::<Result<Vec<_>, _>>()
        .map_err(ClusterError::Ports)?;
    let addrs = listeners
        .iter()
        .map(|l| l.local_addr())
        .collect::<Result<Vec<_>, _>>()
        .map_err(ClusterError::Ports)?;
    Ok((0..nodes as usize)
        .map(|i| NodeAddrs {
            listen_client: addrs[2 * i],
            peer: addrs[2 * i + 1],
            advertised_client: addrs[2 * i],
            harness_client: addrs[2 * i],
            netns: None,
        })
        .collect())
}

/// Addresses for the nodes of `net`: each listens for clients on every
/// interface of its namespace, is reached by peers (and forwarded requests)
/// over the bridge and by the harness over its client link.
pub fn netns_layout(net: &Netns, nodes: u64) -> Vec<NodeAddrs> {
    (1..=nodes)
        .map(|id| NodeAddrs {
            listen_client: SocketAddr::from((Ipv4Addr::UNSPECIFIED, NETNS_CLIENT_PORT)),
            peer: net.peer_addr(id, NETNS_PEER_PORT),
            advertised_client: net.peer_addr(id, NETNS_CLIENT_PORT),
            harness_client: net.client_addr(id),
            netns: Some(net.ns_name(id)),
        })
        .collect()
}

/// A running node process.
#[derive(Debug)]
struct Proc {
    child: Child,
    stopped: bool,
}

/// The node processes of one run.
///
/// Children run in their own process group (a Ctrl-C at the terminal
/// reaches only the harness, which tears down in order) with SIGKILL as
/// their parent-death signal, which fires when the *thread* that spawned
/// them exits: call the start methods from a thread that lives as long as
/// the cluster (a tokio worker or the main thread, never a blocking-pool
/// thread). Dropping the cluster SIGKILLs every node.
#[derive(Debug)]
pub struct Cluster {
    bin: PathBuf,
    dir: PathBuf,
    cluster_id: u64,
    addrs: Vec<NodeAddrs>,
    procs: BTreeMap<u64, Proc>,
}

impl Cluster {
    /// A cluster of `addrs.len()` nodes (ids from 1) run with `bin`, data
    /// and logs under `dir`. Starts nothing.
    pub fn new(bin: PathBuf, dir: PathBuf, cluster_id: u64, addrs: Vec<NodeAddrs>) -> Cluster {
        Cluster {
            bin,
            dir,
            cluster_id,
            addrs,
            procs: BTreeMap::new(),
        }
    }

    /// Node ids.
    pub fn ids(&self) -> Vec<u64> {
        (1..=self.addrs.len() as u64).collect()
    }

    /// Where the harness reaches node `id`.
    pub fn client_addr(&self, id: u64) -> SocketAddr {
        self.addrs[(id - 1) as usize].harness_client
    }

    /// Every node's harness address, index `id - 1`.
    pub fn client_addrs(&self) -> Vec<SocketAddr> {
        self.addrs.iter().map(|a| a.harness_client).collect()
    }

    /// Node `id`'s log file.
    pub fn log_path(&self, id: u64) -> PathBuf {
        self.node_dir(id).join("server.log")
    }

    fn node_dir(&self, id: u64) -> PathBuf {
        self.dir.join(format!("node-{id}"))
    }

    /// Starts every node.
    pub fn start_all(&mut self) -> Result<(), ClusterError> {
        for id in self.ids() {
            self.start(id)?;
        }
        Ok(())
    }

    /// Starts node `id` (from its existing data directory, if any).
    pub fn start(&mut self, id: u64) -> Result<(), ClusterError> {
        let dir = self.node_dir(id);
        let io = |path: &Path| {
            let path = path.display().to_string();
            move |source| ClusterError::Io { path, source }
        };
        fs::create_dir_all(&dir).map_err(io(&dir))?;
        let log_path = self.log_path(id);
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(io(&log_path))?;
        let log_err = log.try_clone().map_err(io(&log_path))?;
        let me = &self.addrs[(id - 1) as usize];
        let list = |f: fn(&NodeAddrs) -> SocketAddr| {
            self.addrs
                .iter()
                .enumerate()
                .map(|(i, a)| format!("{}={}", i + 1, f(a)))
                .collect::<Vec<_>>()
                .join(",")
        };
        let serve_args = [
            "serve".to_string(),
            "--id".into(),
            id.to_string(),
            "--cluster-id".into(),
            self.cluster_id.to_string(),
            "--data-dir".into(),
            dir.join("data").display().to_string(),
            "--listen-client".into(),
            me.listen_client.to_string(),
            "--listen-peer".into(),
            me.peer.to_string(),
            "--peers".into(),
            list(|a| a.peer),
            "--clients".into(),
            list(|a| a.advertised_client),
            "--tick-ms".into(),
            TICK_MS.to_string(),
            "--log-level".into(),
            "info".into(),
        ];
        let mut cmd = match &me.netns {
            // `ip netns exec` enters the namespace and execs the server:
            // the child's pid is the server's.
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(&self.bin);
                c
            }
            None => Command::new(&self.bin),
        };
        cmd.args(&serve_args)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log_err))
            .process_group(0);
        // SAFETY: prctl is async-signal-safe and touches no memory of the
        // parent; the closure runs in the child between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0);
                Ok(())
            });
        }
        let child = cmd.spawn().map_err(|source| ClusterError::Spawn {
            id,
            bin: self.bin.display().to_string(),
            source,
        })?;
        self.procs.insert(
            id,
            Proc {
                child,
                stopped: false,
            },
        );
        Ok(())
    }

    /// Whether node `id`'s process is alive (reaps it if it exited).
    pub fn is_running(&mut self, id: u64) -> bool {
        match self.procs.get_mut(&id) {
            None => false,
            Some(p) => match p.child.try_wait() {
                Ok(None) => true,
                _ => {
                    self.procs.remove(&id);
                    false
                }
            },
        }
    }

    fn signal(&mut self, id: u64, signal: i32) -> bool {
        if !self.is_running(id) {
            return false;
        }
        let Some(pid) = self
            .procs
            .get(&id)
            .and_then(|p| libc::pid_t::try_from(p.child.id()).ok())
        else {
            return false;
        };
        // SAFETY: kill(2) has no memory-safety preconditions; the pid is our
        // unreaped child, so it cannot have been recycled.
        unsafe { libc::kill(pid, signal) == 0 }
    }

    /// SIGKILLs node `id` and reaps it. False if it was not running.
    pub fn kill(&mut self, id: u64) -> bool {
        if !self.signal(id, libc::SIGKILL) {
            return false;
        }
        if let Some(mut p) = self.procs.remove(&id) {
            let _ = p.child.wait();
        }
        true
    }

    /// SIGSTOPs node `id`.
    pub fn pause(&mut self, id: u64) -> bool {
        let ok = self.signal(id, libc::SIGSTOP);
        if let Some(p) = self.procs.get_mut(&id) {
            p.stopped |= ok;
        }
        ok
    }

    /// SIGCONTs node `id`.
    pub fn resume(&mut self, id: u64) -> bool {
        let ok = self.signal(id, libc::SIGCONT);
        if let Some(p) = self.procs.get_mut(&id) {
            p.stopped &= !ok;
        }
        ok
    }

    /// Brings every node back: SIGCONT to stopped ones, a restart for dead
    /// ones. Returns the ids restarted.
    pub fn heal_all(&mut self) -> Result<Vec<u64>, ClusterError> {
        let mut restarted = Vec::new();
        for id in self.ids() {
            if self.is_running(id) {
                self.resume(id);
            } else {
                self.start(id)?;
                restarted.push(id);
            }
        }
        Ok(restarted)
    }

    /// SIGKILLs every node (SIGKILL also ends a stopped process).
    pub fn kill_all(&mut self) {
        for id in self.ids() {
            self.kill(id);
        }
    }

    /// The last `lines` lines of node `id`'s log.
    pub fn log_tail(&self, id: u64, lines: usize) -> String {
        let text = fs::read(self.log_path(id)).unwrap_or_default();
        let text = String::from_utf8_lossy(&text);
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.kill_all();
    }
}

/// `GET /v1/status` of one node (the fields the harness uses).
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct NodeStatus {
    pub id: u64,
    pub role: String,
    pub term: u64,
    pub leader: Option<u64>,
    #[serde(default)]
    pub commit_index: u64,
    #[serde(default)]
    pub applied_index: u64,
}

/// Node status with a short timeout (`None`: no answer).
pub async fn status(addr: SocketAddr, timeout: Duration) -> Option<NodeStatus> {
    let reply = http::request(addr, "GET", "/v1/status", None, timeout, timeout)
        .await
        .ok()?;
    if reply.status != 200 {
        return None;
    }
    serde_json::from_slice(&reply.body).ok()
}

/// Every node's status, asked concurrently (index `id - 1`).
pub async fn statuses(addrs: &[SocketAddr], timeout: Duration) -> Vec<Option<NodeStatus>> {
    let mut tasks = Vec::new();
    for &a in addrs {
        tasks.push(tokio::spawn(status(a, timeout)));
    }
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.ok().flatten());
    }
    out
}

/// The node that says it leads, with the highest term among those that do.
pub async fn leader(addrs: &[SocketAddr], timeout: Duration) -> Option<u64> {
    statuses(addrs, timeout)
        .await
        .into_iter()
        .flatten()
        .filter(|s| s.role == "leader")
        .max_by_key(|s| s.term)
        .map(|s| s.id)
}

/// Waits until every node answers, one leads, all name it in the same term
/// and all have applied the leader's commit index. Returns the leader, or
/// `None` after `timeout`.
pub async fn wait_settled(addrs: &[SocketAddr], timeout: Duration) -> Option<u64> {
    let deadline = Instant::now() + timeout;
    loop {
        let all = statuses(addrs, Duration::from_millis(500)).await;
        if all.iter().all(Option::is_some) {
            let all: Vec<NodeStatus> = all.into_iter().flatten().collect();
            if let Some(l) = all.iter().find(|s| s.role == "leader") {
                let agreed = all.iter().all(|s| {
                    s.leader == Some(l.id) && s.term == l.term && s.applied_index >= l.commit_index
                });
                if agreed {
                    return Some(l.id);
                }
            }
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until some node leads (by its own status). `None` after `timeout`.
pub async fn wait_leader(addrs: &[SocketAddr], timeout: Duration) -> Option<u64> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(l) = leader(addrs, Duration::from_millis(500)).await {
            return Some(l);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_layout_gives_distinct_ports() {
        let l = loopback_layout(3).unwrap();
        assert_eq!(l.len(), 3);
        let mut ports: Vec<u16> = l
            .iter()
            .flat_map(|a| [a.listen_client.port(), a.peer.port()])
            .collect();
        ports.sort_unstable();
        ports.dedup();
        assert_eq!(ports.len(), 6);
        assert!(l
            .iter()
            .all(|a| a.netns.is_none() && a.harness_client == a.listen_client));
    }
}
