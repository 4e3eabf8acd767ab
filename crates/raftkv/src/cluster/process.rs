//! Starting, stopping and killing the `raftkv serve` processes of a local
//! cluster. Used by `raftkv cluster` and by the process tests.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::certs::{self, CertDir};

/// Offset of the peer ports from the client ports (contract: node i serves
/// clients on `base + i - 1` and peers on `base + 100 + i - 1`).
pub const PEER_PORT_OFFSET: u16 = 100;

/// Most nodes one local cluster may have: the port scheme gives each node
/// one of 100 client ports below the peer range.
pub const NODES_MAX: u64 = 99;

/// File in the data dir that pins the cluster's identity and layout.
pub const MANIFEST_FILE: &str = "cluster.json";

/// How a node process is stopped gently before SIGKILL.
pub const STOP_GRACE_DEFAULT: Duration = Duration::from_secs(10);

/// The identity and layout of a local cluster, stored in
/// `<data-dir>/cluster.json` on first start so every later start uses the
/// same cluster id and ports.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// The cluster id passed to every node (`--cluster-id`).
    pub cluster_id: u64,
    /// Founding voters: ids 1..=nodes.
    pub nodes: u64,
    /// Client port of node 1.
    pub base_port: u16,
}

impl Manifest {
    /// Checks the layout fits the port scheme.
    pub fn validate(&self) -> Result<(), String> {
        if self.nodes == 0 || self.nodes > NODES_MAX {
            return Err(format!(
                "--nodes must be between 1 and {NODES_MAX}, not {}",
                self.nodes
            ));
        }
        let top = u32::from(self.base_port) + u32::from(PEER_PORT_OFFSET) + NODES_MAX as u32;
        if self.base_port < 1024 || top > u32::from(u16::MAX) {
            return Err(format!(
                "--base-port {} leaves no room for the peer ports (base+{PEER_PORT_OFFSET}..): use 1024..={}",
                self.base_port,
                u16::MAX as u32 - u32::from(PEER_PORT_OFFSET) - NODES_MAX as u32
            ));
        }
        Ok(())
    }

    /// Client port of node `id` (ids from 1; ids past `nodes` are nodes
    /// added later, numbered on).
    pub fn client_port(&self, id: u64) -> u16 {
        debug_assert!((1..=NODES_MAX).contains(&id));
        // validate() keeps base + 100 + 99 within u16.
        self.base_port + (id as u16 - 1)
    }

    /// Peer port of node `id`.
    pub fn peer_port(&self, id: u64) -> u16 {
        self.client_port(id) + PEER_PORT_OFFSET
    }

    /// `127.0.0.1:PORT` of node `id`'s client API.
    pub fn client_addr(&self, id: u64) -> String {
        format!("127.0.0.1:{}", self.client_port(id))
    }

    /// `127.0.0.1:PORT` of node `id`'s peer transport.
    pub fn peer_addr(&self, id: u64) -> String {
        format!("127.0.0.1:{}", self.peer_port(id))
    }

    /// `http://127.0.0.1:PORT` of node `id`.
    pub fn endpoint(&self, id: u64) -> String {
        format!("http://{}", self.client_addr(id))
    }

    /// Endpoints of the founding voters.
    pub fn endpoints(&self) -> Vec<String> {
        (1..=self.nodes).map(|id| self.endpoint(id)).collect()
    }

    /// `--peers` value: `1=127.0.0.1:7800,...`.
    pub fn peers_flag(&self) -> String {
        join_ids(self.nodes, |id| self.peer_addr(id))
    }

    /// `--clients` value: `1=127.0.0.1:7700,...`.
    pub fn clients_flag(&self) -> String {
        join_ids(self.nodes, |id| self.client_addr(id))
    }
}

fn join_ids(nodes: u64, addr: impl Fn(u64) -> String) -> String {
    (1..=nodes)
        .map(|id| format!("{id}={}", addr(id)))
        .collect::<Vec<_>>()
        .join(",")
}

/// Loads `<data_dir>/cluster.json`, or creates it with a fresh random
/// cluster id. `nodes` / `base_port` given explicitly must match a stored
/// manifest: the founding membership is fixed once the cluster exists.
pub fn load_or_create_manifest(
    data_dir: &Path,
    nodes: Option<u64>,
    base_port: Option<u16>,
) -> anyhow::Result<(Manifest, bool)> {
    let path = data_dir.join(MANIFEST_FILE);
    match fs::read(&path) {
        Ok(bytes) => {
            let manifest: Manifest = serde_json::from_slice(&bytes).map_err(|e| {
                anyhow::anyhow!(
                    "{} is damaged ({e}); fix it or use another --data-dir",
                    path.display()
                )
            })?;
            manifest
                .validate()
                .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
            if let Some(n) = nodes {
                if n != manifest.nodes {
                    anyhow::bail!(
                        "{} holds a {}-node cluster; it cannot restart with --nodes {n} \
                         (use `raftkv member add` to grow it, or another --data-dir)",
                        data_dir.display(),
                        manifest.nodes
                    );
                }
            }
            if let Some(p) = base_port {
                if p != manifest.base_port {
                    anyhow::bail!(
                        "{} holds a cluster on base port {}; its nodes know each other by those \
                         ports, so it cannot restart with --base-port {p} (use another --data-dir)",
                        data_dir.display(),
                        manifest.base_port
                    );
                }
            }
            Ok((manifest, false))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let manifest = Manifest {
                // Zero is avoided so an unset id can never match.
                cluster_id: crate::client::random_u64().max(1),
                nodes: nodes.unwrap_or(3),
                base_port: base_port.unwrap_or(7700),
            };
            manifest.validate().map_err(|e| anyhow::anyhow!(e))?;
            fs::create_dir_all(data_dir)
                .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", data_dir.display()))?;
            write_atomically(&path, &serde_json::to_vec_pretty(&manifest)?)?;
            Ok((manifest, true))
        }
        Err(e) => Err(anyhow::anyhow!("cannot read {}: {e}", path.display())),
    }
}

fn write_atomically(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let tmp = path.with_extension("json.tmp");
    let mut f =
        File::create(&tmp).map_err(|e| anyhow::anyhow!("cannot write {}: {e}", tmp.display()))?;
    f.write_all(bytes)?;
    f.sync_all()?;
    fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        // Make the rename durable; a failure here only risks re-creating
        // the manifest, which the nodes' own metadata would then refuse.
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
    }
    Ok(())
}

/// Whether `port` on 127.0.0.1 can be bound right now.
pub fn port_is_free(port: u16) -> bool {
    TcpListener::bind(SocketAddrV4::new(Ipv4Addr::LOCALHOST, port)).is_ok()
}

/// A base port whose client and peer ports for `nodes` nodes are all free
/// (for tests: random, then checked; a race with another process that
/// binds in between is possible and shows as a startup error).
pub fn free_base_port(nodes: u64) -> u16 {
    loop {
        let r = crate::client::random_u64();
        // Below Linux's ephemeral range (32768..), so outgoing connections
        // never hold one of these ports.
        let base = 10_000 + (r % 22_000) as u16;
        if (1..=nodes).all(|i| {
            port_is_free(base + i as u16 - 1)
                && port_is_free(base + PEER_PORT_OFFSET + i as u16 - 1)
        }) {
            return base;
        }
    }
}

/// One node process we started.
#[derive(Debug)]
struct NodeProc {
    child: Child,
    started: Instant,
}

/// The server processes of one local cluster.
///
/// Children are started in their own process group (a Ctrl-C at the
/// terminal reaches only the launcher, which stops them in order) and with
/// a parent-death signal (SIGTERM) so they never outlive a launcher that was
/// killed. The parent-death signal fires when the *thread* that spawned the
/// child exits: call the start methods from a long-lived thread (the main
/// thread, or a test's thread).
#[derive(Debug)]
pub struct LocalCluster {
    manifest: Manifest,
    data_dir: PathBuf,
    exe: PathBuf,
    extra_args: Vec<String>,
    procs: BTreeMap<u64, NodeProc>,
    /// With TLS: the certificates (node i gets `node-<i>.pem`, made from
    /// the CA there if missing).
    tls: Option<CertDir>,
}

impl LocalCluster {
    /// A cluster of `manifest`'s layout with data under `data_dir`, run
    /// with the `raftkv` executable `exe` and `extra_args` appended to every
    /// `raftkv serve` command line. Starts nothing.
    pub fn new(
        manifest: Manifest,
        data_dir: PathBuf,
        exe: PathBuf,
        extra_args: Vec<String>,
    ) -> LocalCluster {
        LocalCluster {
            manifest,
            data_dir,
            exe,
            extra_args,
            procs: BTreeMap::new(),
            tls: None,
        }
    }

    /// Runs every node with TLS, with the certificates in `dir` (see
    /// [`crate::certs`]; a node without a certificate there gets one from
    /// the CA when it starts).
    pub fn with_tls(mut self, dir: CertDir) -> LocalCluster {
        self.tls = Some(dir);
        self
    }

    /// The certificates, if the nodes run with TLS.
    pub fn tls(&self) -> Option<&CertDir> {
        self.tls.as_ref()
    }

    /// `https` with TLS, else `http`.
    pub fn scheme(&self) -> &'static str {
        if self.tls.is_some() {
            "https"
        } else {
            "http"
        }
    }

    /// Node `id`'s client endpoint (`http://` or `https://`).
    pub fn endpoint(&self, id: u64) -> String {
        format!("{}://{}", self.scheme(), self.manifest.client_addr(id))
    }

    /// The founding voters' endpoints.
    pub fn endpoints(&self) -> Vec<String> {
        (1..=self.manifest.nodes)
            .map(|id| self.endpoint(id))
            .collect()
    }

    /// The TLS settings of a client of this cluster: its CA, and its client
    /// certificate (for nodes run with `--tls-client-auth`).
    pub fn client_tls(&self) -> anyhow::Result<Option<std::sync::Arc<rustls::ClientConfig>>> {
        let Some(dir) = &self.tls else {
            return Ok(None);
        };
        let config = crate::client::tls_config(
            &dir.ca_cert(),
            Some(&dir.client_cert()),
            Some(&dir.client_key()),
        )?;
        Ok(Some(config))
    }

    /// The layout.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Node `id`'s data directory.
    pub fn node_dir(&self, id: u64) -> PathBuf {
        self.data_dir.join(format!("node-{id}"))
    }

    /// Node `id`'s log file (the server's stdout and stderr).
    pub fn log_path(&self, id: u64) -> PathBuf {
        self.node_dir(id).join("server.log")
    }

    /// Checks that every founding node's ports are free.
    pub fn check_ports(&self) -> anyhow::Result<()> {
        for id in 1..=self.manifest.nodes {
            for port in [self.manifest.client_port(id), self.manifest.peer_port(id)] {
                if !port_is_free(port) {
                    anyhow::bail!(
                        "port {port} on 127.0.0.1 is in use (is a raftkv cluster already running? \
                         stop it, or pick other ports with --base-port)"
                    );
                }
            }
        }
        Ok(())
    }

    /// Starts every founding node that is not running.
    pub fn start_all(&mut self) -> anyhow::Result<()> {
        for id in 1..=self.manifest.nodes {
            if !self.is_running(id) {
                self.start_node(id)?;
            }
        }
        Ok(())
    }

    /// Starts founding node `id` (1..=nodes), or, for a larger id, a node
    /// that waits to be added (`--join`).
    pub fn start_node(&mut self, id: u64) -> anyhow::Result<()> {
        self.spawn(id, id > self.manifest.nodes)
    }

    fn spawn(&mut self, id: u64, join: bool) -> anyhow::Result<()> {
        if id == 0 || id > NODES_MAX {
            anyhow::bail!("node id {id} is outside 1..={NODES_MAX}");
        }
        if self.is_running(id) {
            anyhow::bail!("node {id} is already running");
        }
        let dir = self.node_dir(id);
        fs::create_dir_all(&dir)
            .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", dir.display()))?;
        let log_path = self.log_path(id);
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|e| anyhow::anyhow!("cannot open {}: {e}", log_path.display()))?;
        let log_err = log.try_clone()?;
        let m = &self.manifest;
        let mut cmd = Command::new(&self.exe);
        cmd.arg("serve")
            .arg("--id")
            .arg(id.to_string())
            .arg("--cluster-id")
            .arg(m.cluster_id.to_string())
            .arg("--data-dir")
            .arg(&dir)
            .arg("--listen-client")
            .arg(m.client_addr(id))
            .arg("--listen-peer")
            .arg(m.peer_addr(id))
            .arg("--peers")
            .arg(m.peers_flag())
            .arg("--clients")
            .arg(m.clients_flag());
        if join {
            cmd.arg("--join");
        }
        if let Some(tls) = &self.tls {
            certs::ensure_node(tls, id)
                .map_err(|e| anyhow::anyhow!("cannot make node {id}'s certificate: {e}"))?;
            cmd.args(tls.serve_flags(id));
        }
        cmd.args(&self.extra_args)
            // The log is a file: no terminal colour codes in it.
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log_err))
            .process_group(0);
        // SAFETY: prctl is async-signal-safe and touches no memory of the
        // parent; the closure runs in the child between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM, 0, 0, 0);
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .map_err(|e| anyhow::anyhow!("cannot start {} serve: {e}", self.exe.display()))?;
        self.procs.insert(
            id,
            NodeProc {
                child,
                started: Instant::now(),
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

    /// Ids of the running node processes.
    pub fn running(&mut self) -> Vec<u64> {
        let ids: Vec<u64> = self.procs.keys().copied().collect();
        ids.into_iter().filter(|id| self.is_running(*id)).collect()
    }

    /// Node processes that exited by themselves since the last call, with
    /// their exit status and how long they ran.
    pub fn reap_exited(&mut self) -> Vec<(u64, ExitStatus, Duration)> {
        let mut out = Vec::new();
        let ids: Vec<u64> = self.procs.keys().copied().collect();
        for id in ids {
            let Some(p) = self.procs.get_mut(&id) else {
                continue;
            };
            if let Ok(Some(status)) = p.child.try_wait() {
                out.push((id, status, p.started.elapsed()));
                self.procs.remove(&id);
            }
        }
        out
    }

    /// The pid of node `id`, if running.
    pub fn pid(&self, id: u64) -> Option<u32> {
        self.procs.get(&id).map(|p| p.child.id())
    }

    /// Sends `signal` to node `id` (no wait). False if it is not running.
    pub fn signal(&mut self, id: u64, signal: i32) -> bool {
        if !self.is_running(id) {
            return false;
        }
        let Some(pid) = self.pid(id) else {
            return false;
        };
        let Ok(pid) = libc::pid_t::try_from(pid) else {
            return false;
        };
        // SAFETY: kill(2) has no memory-safety preconditions; the pid is our
        // unreaped child, so it cannot have been recycled for another process.
        unsafe { libc::kill(pid, signal) == 0 }
    }

    /// Kills node `id` with SIGKILL and reaps it. False if it was not running.
    pub fn kill(&mut self, id: u64) -> bool {
        let Some(mut p) = self.procs.remove(&id) else {
            return false;
        };
        let _ = p.child.kill();
        let _ = p.child.wait();
        true
    }

    /// Pauses node `id` (SIGSTOP) or resumes it (SIGCONT).
    pub fn pause(&mut self, id: u64, paused: bool) -> bool {
        self.signal(id, if paused { libc::SIGSTOP } else { libc::SIGCONT })
    }

    /// Stops node `id`: SIGTERM, then SIGKILL after `grace`. Returns its
    /// exit status (None if it had to be killed or was not running).
    pub fn stop(&mut self, id: u64, grace: Duration) -> Option<ExitStatus> {
        self.stop_many(&[id], grace)
            .into_iter()
            .next()
            .and_then(|(_, s)| s)
    }

    /// Stops every running node concurrently (SIGTERM all, wait up to
    /// `grace`, SIGKILL the rest). Returns each node's exit status, None for
    /// the ones that had to be killed.
    pub fn stop_all(&mut self, grace: Duration) -> Vec<(u64, Option<ExitStatus>)> {
        let ids = self.running();
        self.stop_many(&ids, grace)
    }

    fn stop_many(&mut self, ids: &[u64], grace: Duration) -> Vec<(u64, Option<ExitStatus>)> {
        let ids: Vec<u64> = ids
            .iter()
            .copied()
            .filter(|id| self.signal(*id, libc::SIGTERM))
            .collect();
        // A stopped (SIGSTOP) process cannot act on SIGTERM until resumed.
        for id in &ids {
            self.signal(*id, libc::SIGCONT);
        }
        let deadline = Instant::now() + grace;
        let mut results = Vec::new();
        let mut pending = ids;
        while !pending.is_empty() {
            pending.retain(|id| {
                let Some(p) = self.procs.get_mut(id) else {
                    return false;
                };
                match p.child.try_wait() {
                    Ok(Some(status)) => {
                        results.push((*id, Some(status)));
                        false
                    }
                    Ok(None) => true,
                    Err(_) => {
                        results.push((*id, None));
                        false
                    }
                }
            });
            for id in &results {
                self.procs.remove(&id.0);
            }
            if pending.is_empty() {
                break;
            }
            if Instant::now() >= deadline {
                for id in pending.drain(..) {
                    self.kill(id);
                    results.push((id, None));
                }
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        results
    }

    /// The last `lines` lines of node `id`'s log (for error messages).
    pub fn log_tail(&self, id: u64, lines: usize) -> String {
        log_tail(&self.log_path(id), lines)
    }
}

impl Drop for LocalCluster {
    /// Never leave processes behind: whatever still runs is killed.
    fn drop(&mut self) {
        let ids: Vec<u64> = self.procs.keys().copied().collect();
        for id in ids {
            self.kill(id);
        }
    }
}

/// The last `lines` lines of a file (at most its last 64 KiB are read).
pub fn log_tail(path: &Path, lines: usize) -> String {
    const TAIL_BYTES_MAX: u64 = 64 * 1024;
    let Ok(mut f) = File::open(path) else {
        return String::new();
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = f.seek(SeekFrom::Start(len.saturating_sub(TAIL_BYTES_MAX)));
    let mut buf = Vec::new();
    let _ = f.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf);
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_scheme_follows_the_contract() {
        let m = Manifest {
            cluster_id: 9,
            nodes: 3,
            base_port: 7700,
        };
        m.validate().unwrap();
        assert_eq!(m.client_addr(1), "127.0.0.1:7700");
        assert_eq!(m.peer_addr(3), "127.0.0.1:7802");
        assert_eq!(
            m.peers_flag(),
            "1=127.0.0.1:7800,2=127.0.0.1:7801,3=127.0.0.1:7802"
        );
        assert_eq!(
            m.clients_flag(),
            "1=127.0.0.1:7700,2=127.0.0.1:7701,3=127.0.0.1:7702"
        );
        assert!(Manifest {
            nodes: 0,
            ..m.clone()
        }
        .validate()
        .is_err());
        assert!(Manifest {
            nodes: 100,
            ..m.clone()
        }
        .validate()
        .is_err());
        assert!(Manifest {
            base_port: 65500,
            ..m.clone()
        }
        .validate()
        .is_err());
        assert!(Manifest { base_port: 80, ..m }.validate().is_err());
    }

    #[test]
    fn manifest_is_stable_and_guards_the_layout() {
        let dir = tempfile::tempdir().unwrap();
        let (m1, created) = load_or_create_manifest(dir.path(), None, Some(9000)).unwrap();
        assert!(created);
        assert_eq!((m1.nodes, m1.base_port), (3, 9000));
        let (m2, created) = load_or_create_manifest(dir.path(), None, None).unwrap();
        assert!(!created);
        assert_eq!(m1, m2);
        let e = load_or_create_manifest(dir.path(), Some(5), None).unwrap_err();
        assert!(e.to_string().contains("3-node"), "{e}");
        assert!(load_or_create_manifest(dir.path(), None, Some(9100)).is_err());
        fs::write(dir.path().join(MANIFEST_FILE), b"{garbage").unwrap();
        let e = load_or_create_manifest(dir.path(), None, None).unwrap_err();
        assert!(e.to_string().contains("damaged"), "{e}");
    }

    #[test]
    fn log_tail_keeps_the_last_lines() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("log");
        fs::write(&p, "a\nb\nc\n").unwrap();
        assert_eq!(log_tail(&p, 2), "b\nc");
        assert_eq!(log_tail(&dir.path().join("missing"), 2), "");
    }
}
