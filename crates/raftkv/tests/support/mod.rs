//! Process-level test harness: real `raftkv serve` processes on 127.0.0.1.
//!
//! ```text
//! let mut c = Cluster::start(3);                 // 3 nodes, random free ports, temp dirs
//! let leader = c.leader();                       // waits until every node agrees
//! let r = c.put(leader, "k", "v");               // HttpResponse { status, body }
//! assert_eq!(r.status, 200, "{}", r.body);
//! c.kill(leader);                                // SIGKILL (kill -9)
//! let new_leader = c.leader();
//! c.restart(leader);                             // same id, ports, data dir
//! c.wait_applied(leader, r.json()["revision"].as_u64().unwrap());
//! ```
//!
//! - Every node's stderr goes to `<temp>/node-<id>.log`; when a test
//!   panics, dropping the [`Cluster`] prints every node's log (the last
//!   [`LOG_TAIL_BYTES`] of each), then kills every process.
//! - The HTTP helpers speak HTTP/1.1 over `std::net::TcpStream` with
//!   `Connection: close`: no async runtime, no client library, so a test
//!   can also send arbitrary bytes ([`raw_request`]).
//! - Ports: all ports of a cluster are reserved together by binding port 0
//!   and released just before the processes start; a collision with another
//!   process is possible but rare (startup then fails with "address in
//!   use" in the node's log).
//! - Functions panic with a diagnostic on failure (this is test code).
//!
//! Used by `tests/server_*.rs` and by the fault tests.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The `raftkv` binary under test.
pub const RAFTKV: &str = env!("CARGO_BIN_EXE_raftkv");
/// How long [`Cluster::leader`] and friends wait by default. Generous: in
/// debug builds on 2 busy cores a process start plus an election can take
/// a few seconds.
pub const WAIT: Duration = Duration::from_secs(30);
/// What a node prints to stderr once it accepts requests.
pub const SERVING_LINE: &str = "serving clients on http://";
/// How much of each node's log a failing test prints.
pub const LOG_TAIL_BYTES: usize = 16 * 1024;
/// Timeout of one HTTP request made by the helpers.
pub const HTTP_TIMEOUT: Duration = Duration::from_secs(15);

/// Options of a test cluster. `Default` gives fast elections (25 ms ticks)
/// and the server's default limits.
#[derive(Clone, Debug)]
pub struct ClusterOptions {
    /// Number of founding voters (ids 1..=nodes).
    pub nodes: usize,
    pub cluster_id: u64,
    /// `--tick-ms`: elections take 10 to 20 ticks.
    pub tick_ms: u64,
    /// `--request-timeout-ms`.
    pub request_timeout_ms: u64,
    /// `--snapshot-entries`.
    pub snapshot_entries: u64,
    /// `--log-level`.
    pub log_level: String,
    /// More arguments for every node (e.g. `["--max-key-bytes", "16"]`).
    pub extra_args: Vec<String>,
    /// Give the nodes their addresses as `HOST:PORT` with this host name
    /// (e.g. `localhost`) instead of `127.0.0.1:PORT`; the helpers still
    /// connect to 127.0.0.1.
    pub host: Option<String>,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        ClusterOptions {
            nodes: 3,
            cluster_id: 7,
            tick_ms: 25,
            request_timeout_ms: 5000,
            snapshot_entries: 10_000,
            log_level: "info".into(),
            extra_args: Vec::new(),
            host: None,
        }
    }
}

/// One node of a [`Cluster`].
#[derive(Debug)]
pub struct Node {
    pub id: u64,
    pub client_addr: SocketAddr,
    pub peer_addr: SocketAddr,
    pub data_dir: PathBuf,
    pub log_path: PathBuf,
    /// Full `raftkv serve ...` arguments, reused by [`Cluster::restart`].
    pub args: Vec<String>,
    child: Option<Child>,
    /// "serving" lines in the log before the latest start.
    serving_lines_before: usize,
}

impl Node {
    /// True while the process runs.
    pub fn is_running(&mut self) -> bool {
        match &mut self.child {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.client_addr)
    }

    /// The process id while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }
}

/// A cluster of `raftkv serve` processes with temporary data directories.
pub struct Cluster {
    pub opts: ClusterOptions,
    pub nodes: BTreeMap<u64, Node>,
    /// Root of the data directories and logs; removed when the cluster is
    /// dropped, unless the test is failing (then kept for a post-mortem).
    dir: Option<tempfile::TempDir>,
}

impl Cluster {
    /// The directory holding every node's data directory (`node-<id>`) and
    /// log (`node-<id>.log`).
    pub fn root(&self) -> &Path {
        self.dir.as_ref().expect("dir is set until drop").path()
    }

    /// Starts `n` founding voters with default options and waits until each
    /// printed its "serving" line (not until a leader is elected: see
    /// [`Cluster::leader`]).
    pub fn start(n: usize) -> Cluster {
        Self::start_with(ClusterOptions {
            nodes: n,
            ..ClusterOptions::default()
        })
    }

    /// Starts a cluster with `opts`.
    pub fn start_with(opts: ClusterOptions) -> Cluster {
        let dir = tempfile::Builder::new()
            .prefix("raftkv-test-")
            .tempdir()
            .expect("create temp dir");
        let ports = free_ports(2 * opts.nodes);
        let ids: Vec<u64> = (1..=opts.nodes as u64).collect();
        let client: BTreeMap<u64, SocketAddr> = ids
            .iter()
            .map(|&i| (i, loopback(ports[i as usize - 1])))
            .collect();
        let peer: BTreeMap<u64, SocketAddr> = ids
            .iter()
            .map(|&i| (i, loopback(ports[opts.nodes + i as usize - 1])))
            .collect();
        let mut c = Cluster {
            opts,
            nodes: BTreeMap::new(),
            dir: Some(dir),
        };
        let peers = c.addr_list(&peer);
        let clients = c.addr_list(&client);
        for &id in &ids {
            let mut args = c.base_args(id, client[&id], peer[&id]);
            args.extend([
                "--peers".into(),
                peers.clone(),
                "--clients".into(),
                clients.clone(),
            ]);
            c.insert_node(id, client[&id], peer[&id], args);
        }
        for &id in &ids {
            c.spawn(id);
        }
        for &id in &ids {
            c.wait_serving(id);
        }
        c
    }

    /// How the nodes are told `addr`: as is, or `host:port` with
    /// [`ClusterOptions::host`].
    pub fn show(&self, addr: SocketAddr) -> String {
        match &self.opts.host {
            Some(h) => format!("{h}:{}", addr.port()),
            None => addr.to_string(),
        }
    }

    /// `1=ADDR,2=...` with [`Cluster::show`].
    pub fn addr_list(&self, addrs: &BTreeMap<u64, SocketAddr>) -> String {
        addrs
            .iter()
            .map(|(id, a)| format!("{id}={}", self.show(*a)))
            .collect::<Vec<_>>()
            .join(",")
    }

    fn base_args(&self, id: u64, client: SocketAddr, peer: SocketAddr) -> Vec<String> {
        let mut args: Vec<String> = vec![
            "serve".into(),
            "--id".into(),
            id.to_string(),
            "--cluster-id".into(),
            self.opts.cluster_id.to_string(),
            "--data-dir".into(),
            self.root().join(format!("node-{id}")).display().to_string(),
            "--listen-client".into(),
            self.show(client),
            "--listen-peer".into(),
            self.show(peer),
            "--tick-ms".into(),
            self.opts.tick_ms.to_string(),
            "--request-timeout-ms".into(),
            self.opts.request_timeout_ms.to_string(),
            "--snapshot-entries".into(),
            self.opts.snapshot_entries.to_string(),
            "--log-level".into(),
            self.opts.log_level.clone(),
        ];
        args.extend(self.opts.extra_args.iter().cloned());
        args
    }

    fn insert_node(&mut self, id: u64, client: SocketAddr, peer: SocketAddr, args: Vec<String>) {
        let node = Node {
            id,
            client_addr: client,
            peer_addr: peer,
            data_dir: self.root().join(format!("node-{id}")),
            log_path: self.root().join(format!("node-{id}.log")),
            args,
            child: None,
            serving_lines_before: 0,
        };
        self.nodes.insert(id, node);
    }

    /// Starts a new node `id` with `--join` on fresh ports, knowing every
    /// current member's addresses; it is not a member until added with
    /// `POST /v1/members` (see [`Cluster::add_member`]). Waits until it serves.
    pub fn spawn_joiner(&mut self, id: u64) -> &Node {
        self.spawn_joiner_inner(id, true)
    }

    /// Like [`Cluster::spawn_joiner`], but passes only `--clients`: the
    /// node discovers the members' peer addresses from them.
    pub fn spawn_joiner_discovering(&mut self, id: u64) -> &Node {
        self.spawn_joiner_inner(id, false)
    }

    fn spawn_joiner_inner(&mut self, id: u64, with_peers: bool) -> &Node {
        assert!(!self.nodes.contains_key(&id), "node {id} exists");
        let ports = free_ports(2);
        let (client, peer) = (loopback(ports[0]), loopback(ports[1]));
        let peers: BTreeMap<u64, SocketAddr> =
            self.nodes.values().map(|n| (n.id, n.peer_addr)).collect();
        let clients: BTreeMap<u64, SocketAddr> =
            self.nodes.values().map(|n| (n.id, n.client_addr)).collect();
        let mut args = self.base_args(id, client, peer);
        args.extend([
            "--join".into(),
            "--clients".into(),
            self.addr_list(&clients),
        ]);
        if with_peers {
            args.extend(["--peers".into(), self.addr_list(&peers)]);
        }
        self.insert_node(id, client, peer, args);
        self.spawn(id);
        self.wait_serving(id);
        &self.nodes[&id]
    }

    /// `POST /v1/members` for node `id` (already spawned) with `role`
    /// ("learner" or "voter"), sent to node `via`.
    pub fn add_member(&self, via: u64, id: u64, role: &str) -> HttpResponse {
        let n = &self.nodes[&id];
        let body = serde_json::json!({
            "id": id,
            "peer_addr": self.show(n.peer_addr),
            "client_addr": self.show(n.client_addr),
            "role": role,
        });
        self.request(via, "POST", "/v1/members", Some(&body.to_string()))
    }

    fn spawn(&mut self, id: u64) {
        let before = self.count_in_log(id, SERVING_LINE);
        let node = self.nodes.get_mut(&id).expect("known node");
        node.serving_lines_before = before;
        assert!(node.child.is_none(), "node {id} already running");
        let log = File::options()
            .create(true)
            .append(true)
            .open(&node.log_path)
            .expect("open log file");
        let child = Command::new(RAFTKV)
            .args(&node.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("spawn raftkv");
        node.child = Some(child);
    }

    /// Waits until node `id`'s log shows the "serving" line of its latest
    /// start; panics (with its log) if it exits or takes longer than [`WAIT`].
    pub fn wait_serving(&mut self, id: u64) {
        let deadline = Instant::now() + WAIT;
        // The log is appended to across restarts: wait for one more
        // "serving" line than there was before this start.
        let expected = self.nodes[&id].serving_lines_before + 1;
        loop {
            if self.count_in_log(id, SERVING_LINE) >= expected
                && self.nodes.get_mut(&id).is_some_and(Node::is_running)
            {
                return;
            }
            let node = self.nodes.get_mut(&id).expect("known node");
            if let Some(status) = node
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!(
                    "node {id} exited with {status} before serving; log:\n{}",
                    self.log(id)
                );
            }
            if Instant::now() > deadline {
                panic!(
                    "node {id} not serving after {WAIT:?}; log:\n{}",
                    self.log(id)
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn count_in_log(&self, id: u64, needle: &str) -> usize {
        std::fs::read_to_string(&self.nodes[&id].log_path)
            .map(|s| s.matches(needle).count())
            .unwrap_or(0)
    }

    /// Node `id`'s whole log so far (its stderr, across restarts).
    pub fn log(&self, id: u64) -> String {
        std::fs::read_to_string(&self.nodes[&id].log_path).unwrap_or_default()
    }

    /// Prints the tail of every node's log to stderr.
    pub fn dump_logs(&self) {
        for id in self.nodes.keys() {
            let log = self.log(*id);
            let tail = &log[floor_char_boundary(&log, log.len().saturating_sub(LOG_TAIL_BYTES))..];
            eprintln!(
                "===== node {id} log (last {} bytes) =====\n{tail}",
                tail.len()
            );
        }
    }

    /// The ids of the nodes whose process runs.
    pub fn running(&mut self) -> Vec<u64> {
        self.nodes
            .iter_mut()
            .filter_map(|(id, n)| n.is_running().then_some(*id))
            .collect()
    }

    /// Waits until every running node reports the same leader, and that
    /// leader reports itself leader; returns its id. Panics after [`WAIT`].
    pub fn leader(&mut self) -> u64 {
        self.leader_within(WAIT)
    }

    /// [`Cluster::leader`] with another timeout.
    pub fn leader_within(&mut self, timeout: Duration) -> u64 {
        let deadline = Instant::now() + timeout;
        loop {
            let why = match self.agreed_leader() {
                Ok(l) => return l,
                Err(why) => why,
            };
            if Instant::now() > deadline {
                self.dump_logs();
                panic!("no agreed leader after {timeout:?}: {why}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn agreed_leader(&mut self) -> Result<u64, String> {
        let mut leader = None;
        for id in self.running() {
            let st = self
                .try_request(id, "GET", "/v1/status", None)
                .map_err(|e| format!("node {id}: {e}"))?;
            if st.status != 200 {
                return Err(format!("node {id}: status {}", st.body));
            }
            let l = st.json()["leader"]
                .as_u64()
                .ok_or_else(|| format!("node {id} knows no leader"))?;
            if *leader.get_or_insert(l) != l {
                return Err(format!("nodes disagree: {leader:?} vs {l} at node {id}"));
            }
        }
        let l = leader.ok_or("no running node")?;
        let st = self
            .try_request(l, "GET", "/v1/status", None)
            .map_err(|e| format!("leader {l}: {e}"))?;
        if st.json()["role"] != "leader" {
            return Err(format!("node {l} is named leader but says {}", st.body));
        }
        Ok(l)
    }

    /// Running nodes other than the current leader.
    pub fn followers(&mut self) -> Vec<u64> {
        let l = self.leader();
        self.running().into_iter().filter(|&i| i != l).collect()
    }

    /// Waits until node `id` has applied at least `index`.
    pub fn wait_applied(&self, id: u64, index: u64) {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Ok(r) = self.try_request(id, "GET", "/v1/status", None) {
                if r.status == 200 && r.json()["applied_index"].as_u64() >= Some(index) {
                    return;
                }
            }
            if Instant::now() > deadline {
                self.dump_logs();
                panic!("node {id} did not apply index {index} within {WAIT:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills node `id` with SIGKILL (`kill -9`) and reaps it.
    pub fn kill(&mut self, id: u64) {
        let node = self.nodes.get_mut(&id).expect("known node");
        let mut child = node
            .child
            .take()
            .unwrap_or_else(|| panic!("node {id} not running"));
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Sends SIGTERM to node `id` and waits (up to [`WAIT`]) for it to exit;
    /// returns its exit status. Panics if it does not exit.
    pub fn terminate(&mut self, id: u64) -> ExitStatus {
        let node = self.nodes.get_mut(&id).expect("known node");
        let mut child = node
            .child
            .take()
            .unwrap_or_else(|| panic!("node {id} not running"));
        let status = Command::new("sh")
            .args(["-c", &format!("kill -TERM {}", child.id())])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM failed");
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(s) = child.try_wait().expect("wait") {
                return s;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "node {id} ignored SIGTERM for {WAIT:?}; log:\n{}",
                    self.log(id)
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops (SIGSTOP) or resumes (SIGCONT) node `id`'s process: a paused
    /// node keeps its sockets open (the kernel still accepts connections
    /// and buffers requests) but answers nothing.
    pub fn pause(&mut self, id: u64, paused: bool) {
        let pid = self.nodes[&id]
            .pid()
            .unwrap_or_else(|| panic!("node {id} not running"));
        let signal = if paused { "-STOP" } else { "-CONT" };
        let status = Command::new("kill")
            .args([signal, &pid.to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill {signal} {pid} failed");
    }

    /// Starts node `id` again with the same arguments (ports, data dir) and
    /// waits until it serves.
    pub fn restart(&mut self, id: u64) {
        self.spawn(id);
        self.wait_serving(id);
    }

    /// The client address of node `id`.
    pub fn addr(&self, id: u64) -> SocketAddr {
        self.nodes[&id].client_addr
    }

    /// An HTTP request to node `id`; panics (with the cluster's logs) if
    /// the connection fails.
    pub fn request(&self, id: u64, method: &str, path: &str, body: Option<&str>) -> HttpResponse {
        match self.try_request(id, method, path, body) {
            Ok(r) => r,
            Err(e) => {
                self.dump_logs();
                panic!("{method} {path} on node {id}: {e}");
            }
        }
    }

    /// An HTTP request to node `id`.
    pub fn try_request(
        &self,
        id: u64,
        method: &str,
        path: &str,
        body: Option<&str>,
    ) -> std::io::Result<HttpResponse> {
        http_request(self.addr(id), method, path, body)
    }

    /// `PUT /v1/kv/{key}` with `{"value": value}`.
    pub fn put(&self, id: u64, key: &str, value: &str) -> HttpResponse {
        let body = serde_json::json!({ "value": value }).to_string();
        self.request(
            id,
            "PUT",
            &format!("/v1/kv/{}", encode_key(key)),
            Some(&body),
        )
    }

    /// `GET /v1/kv/{key}` (linearizable).
    pub fn get(&self, id: u64, key: &str) -> HttpResponse {
        self.request(id, "GET", &format!("/v1/kv/{}", encode_key(key)), None)
    }

    /// `DELETE /v1/kv/{key}`.
    pub fn delete(&self, id: u64, key: &str) -> HttpResponse {
        self.request(id, "DELETE", &format!("/v1/kv/{}", encode_key(key)), None)
    }

    /// `GET /v1/status` as JSON (panics unless 200).
    pub fn status(&self, id: u64) -> Value {
        let r = self.request(id, "GET", "/v1/status", None);
        assert_eq!(r.status, 200, "status of node {id}: {}", r.body);
        r.json()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.dump_logs();
            if let Some(dir) = self.dir.take() {
                eprintln!(
                    "test failed; data and logs kept under {}",
                    dir.keep().display()
                );
            }
        }
        for node in self.nodes.values_mut() {
            if let Some(mut c) = node.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

/// An HTTP response: status and body text.
#[derive(Clone, Debug)]
pub struct HttpResponse {
    pub status: u16,
    /// Header names lowercased.
    pub headers: Vec<(String, String)>,
    pub body: String,
    /// The body's bytes as received (`body` is their lossy UTF-8 reading).
    pub raw_body: Vec<u8>,
}

impl HttpResponse {
    /// The body as JSON; panics with the body if it is not JSON.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| {
            panic!(
                "not JSON ({e}): status {} body {:?}",
                self.status, self.body
            )
        })
    }

    /// The `error.code` of a JSON error body.
    pub fn error_code(&self) -> String {
        self.json()["error"]["code"]
            .as_str()
            .unwrap_or_else(|| panic!("no error code in {}", self.body))
            .to_string()
    }

    /// The `error.reason` of a JSON error body (`None` for 4xx answers).
    pub fn error_reason(&self) -> Option<String> {
        self.json()["error"]["reason"].as_str().map(str::to_string)
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// One HTTP/1.1 request with `Connection: close`.
pub fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> std::io::Result<HttpResponse> {
    http_request_with(addr, method, path, body, &[])
}

/// [`http_request`] with more request headers.
pub fn http_request_with(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&str>,
    headers: &[(&str, &str)],
) -> std::io::Result<HttpResponse> {
    let body = body.unwrap_or("");
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        req.push_str(&format!("{name}: {value}\r\n"));
    }
    if !body.is_empty() {
        req.push_str("Content-Type: application/json\r\n");
    }
    req.push_str("\r\n");
    req.push_str(body);
    let raw = raw_request(addr, req.as_bytes())?;
    parse_response(&raw)
}

/// One HTTP/1.1 request with a body of any bytes and exactly the given
/// headers (no `Content-Type` is added).
pub fn bytes_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: &[u8],
    headers: &[(&str, &str)],
) -> std::io::Result<HttpResponse> {
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    )
    .into_bytes();
    for (name, value) in headers {
        req.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
    }
    req.extend_from_slice(b"\r\n");
    req.extend_from_slice(body);
    let raw = raw_request(addr, &req)?;
    parse_response(&raw)
}

/// Sends `bytes` as is and returns everything the server sends back until
/// it closes the connection (or [`HTTP_TIMEOUT`] passes).
pub fn raw_request(addr: SocketAddr, bytes: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(HTTP_TIMEOUT))?;
    s.set_write_timeout(Some(HTTP_TIMEOUT))?;
    s.write_all(bytes)?;
    let mut out = Vec::new();
    s.read_to_end(&mut out)?;
    Ok(out)
}

/// Parses a raw HTTP/1.1 response (content-length, chunked, or until EOF).
pub fn parse_response(raw: &[u8]) -> std::io::Result<HttpResponse> {
    let bad = |m: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, m.to_string());
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| {
            bad(&format!(
                "no header end in {:?}",
                String::from_utf8_lossy(raw)
            ))
        })?;
    let head = std::str::from_utf8(&raw[..split]).map_err(|_| bad("non-UTF-8 head"))?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().ok_or_else(|| bad("empty response"))?;
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad(&format!("bad status line {status_line:?}")))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    let chunked = headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"));
    if chunked {
        body = dechunk(&body).ok_or_else(|| bad("bad chunked body"))?;
    } else if let Some((_, len)) = headers.iter().find(|(k, _)| k == "content-length") {
        let len: usize = len.parse().map_err(|_| bad("bad content-length"))?;
        body.truncate(len);
    }
    Ok(HttpResponse {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
        raw_body: body,
    })
}

fn dechunk(mut b: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = b.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&b[..line_end]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        b = &b[line_end + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(b.get(..size)?);
        b = b.get(size + 2..)?;
    }
}

/// Percent-encodes a key for the URL path (everything but unreserved
/// characters).
pub fn encode_key(key: &str) -> String {
    let mut out = String::new();
    for b in key.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Reserves `n` distinct free loopback ports (bound together, then freed).
pub fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind port 0"))
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().expect("local addr").port())
        .collect()
}

pub fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// `1=127.0.0.1:7800,2=...`.
pub fn addr_list(addrs: &BTreeMap<u64, SocketAddr>) -> String {
    addrs
        .iter()
        .map(|(id, a)| format!("{id}={a}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// Runs `raftkv` with `args` to completion (for startup-error tests);
/// returns its exit status and stderr. Panics if it runs longer than
/// [`WAIT`] (it is then killed).
pub fn run_to_exit(args: &[String]) -> (ExitStatus, String) {
    let dir = tempfile::tempdir().expect("temp dir");
    let err_path = dir.path().join("stderr");
    let mut child = Command::new(RAFTKV)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(File::create(&err_path).expect("stderr file")))
        .spawn()
        .expect("spawn raftkv");
    let deadline = Instant::now() + WAIT;
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "raftkv {args:?} still running after {WAIT:?}; stderr:\n{}",
                std::fs::read_to_string(&err_path).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    (
        status,
        std::fs::read_to_string(&err_path).unwrap_or_default(),
    )
}

/// Polls `f` every 20 ms until it returns `Some`, or panics with `what`
/// after `timeout`.
pub fn wait_until<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(t) = f() {
            return t;
        }
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    while i > 0 && !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}
