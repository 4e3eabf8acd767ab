//! TLS with real `raftkv serve` processes, the real CLI and `raftkv
//! cluster --tls`, on loopback: a node of another CA is refused (and
//! counted) while the nodes of the cluster CA elect and commit; a client
//! whose scheme does not match the port gets a clear error; the CLI
//! verifies the server (and shows its own certificate when asked); SIGHUP
//! reloads the certificates and keeps them when a file is bad.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use raftkv::certs::{self, CertDir};
use raftkv::cluster::{free_base_port, PEER_PORT_OFFSET};

const RAFTKV: &str = env!("CARGO_BIN_EXE_raftkv");
/// Process start plus an election in a debug build on 2 busy cores.
const WAIT: Duration = Duration::from_secs(30);
const CLUSTER_ID: u64 = 77;

/// One `raftkv serve` process, killed when dropped.
struct Node {
    child: Child,
    log: PathBuf,
    client_port: u16,
}

impl Node {
    /// Starts node `id` of a `nodes`-node cluster on ports from `base`, with
    /// `extra` flags; waits for its "serving" line.
    fn start(dir: &Path, base: u16, nodes: u64, id: u64, extra: &[String]) -> Node {
        let list = |offset: u16| {
            (1..=nodes)
                .map(|i| format!("{i}=127.0.0.1:{}", base + offset + i as u16 - 1))
                .collect::<Vec<_>>()
                .join(",")
        };
        let log = dir.join(format!("node-{id}.log"));
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new(RAFTKV)
            .args(["serve", "--id", &id.to_string()])
            .args(["--cluster-id", &CLUSTER_ID.to_string()])
            .args(["--peers", &list(PEER_PORT_OFFSET), "--clients", &list(0)])
            .arg("--data-dir")
            .arg(dir.join(format!("data-{id}")))
            .args(["--tick-ms", "50", "--log-level", "info"])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap();
        let node = Node {
            child,
            log,
            client_port: base + id as u16 - 1,
        };
        node.wait_log("serving clients on https://", WAIT);
        node
    }

    fn endpoint(&self) -> String {
        format!("https://127.0.0.1:{}", self.client_port)
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the log contains `needle` `times` times.
    fn wait_log_count(&self, needle: &str, times: usize, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while self.log_text().matches(needle).count() < times {
            assert!(
                Instant::now() < deadline,
                "no {needle:?} (x{times}) in the log within {timeout:?}:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn wait_log(&self, needle: &str, timeout: Duration) {
        self.wait_log_count(needle, 1, timeout);
    }

    fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own unreaped child.
        unsafe {
            libc::kill(self.child.id() as i32, sig);
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `serve` flags of a node with these files.
fn tls_flags(cert: &Path, key: &Path, ca: &Path) -> Vec<String> {
    vec![
        "--tls-cert".into(),
        cert.display().to_string(),
        "--tls-key".into(),
        key.display().to_string(),
        "--tls-ca".into(),
        ca.display().to_string(),
    ]
}

/// Runs the CLI; returns (exit code, stdout, stderr).
fn cli(args: &[&str], env: &[(&str, &Path)]) -> (i32, String, String) {
    let mut cmd = Command::new(RAFTKV);
    cmd.args(args)
        .env_remove("RAFTKV_CA")
        .env_remove("RAFTKV_CERT")
        .env_remove("RAFTKV_KEY")
        .env_remove("RAFTKV_ENDPOINTS");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// `GET /metrics` over HTTPS, trusting `ca`.
async fn metrics(endpoint: &str, ca: &Path) -> String {
    let tls = raftkv::client::tls_config(ca, None, None).unwrap();
    let http = reqwest::Client::builder()
        .use_preconfigured_tls((*tls).clone())
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    http.get(format!("{endpoint}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// The sum of a counter's samples in a Prometheus text page.
fn counter(page: &str, name: &str) -> u64 {
    page.lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_of_another_ca_is_refused_while_the_cluster_commits() {
    let dir = tempfile::tempdir().unwrap();
    let good = certs::init(&dir.path().join("good"), 3, &[], false).unwrap();
    let other = certs::init(&dir.path().join("other"), 3, &[], false).unwrap();
    let base = free_base_port(3);
    let node = |id: u64, c: &CertDir| {
        Node::start(
            dir.path(),
            base,
            3,
            id,
            &tls_flags(&c.node_cert(id), &c.node_key(id), &c.ca_cert()),
        )
    };
    let n1 = node(1, &good);
    let n2 = node(2, &good);
    // Node 3 holds a certificate of another CA (and trusts only that CA).
    let n3 = node(3, &other);

    // Nodes 1 and 2 are a majority: they elect a leader and commit.
    let endpoints = format!("{},{}", n1.endpoint(), n2.endpoint());
    let ca = good.ca_cert();
    let (code, _, err) = cli(
        &[
            "put",
            "k",
            "v",
            "--endpoints",
            &endpoints,
            "--ca",
            p(&ca),
            "--retry-for",
            "30s",
        ],
        &[],
    );
    assert_eq!(code, 0, "{err}\n{}", n1.log_text());
    let (code, out, err) = cli(
        &["get", "k", "--endpoints", &n2.endpoint(), "--ca", p(&ca)],
        &[],
    );
    assert_eq!((code, out.trim()), (0, "v"), "{err}");

    // Node 1 refused node 3 (which dialed it: the refusal of its client
    // certificate is node 3's own verdict on node 1's certificate, seen
    // as an alert) and node 3's server certificate (when dialing it).
    let deadline = Instant::now() + WAIT;
    loop {
        let page = metrics(&n1.endpoint(), &ca).await;
        if counter(&page, "raft_peer_tls_refused_total") >= 2 {
            assert!(page.contains("reason=\"untrusted_certificate\""), "{page}");
            break;
        }
        assert!(Instant::now() < deadline, "no refusal counted:\n{page}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        n1.log_text().contains("TLS handshake with the peer failed"),
        "{}",
        n1.log_text()
    );
    // Node 3 never joined: it knows no leader, and it counts refusals too.
    let (code, out, err) = cli(
        &[
            "status",
            "--json",
            "--endpoints",
            &n3.endpoint(),
            "--ca",
            p(&other.ca_cert()),
        ],
        &[],
    );
    assert_eq!(code, 0, "{err}");
    let rows: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        rows[0]["status"]["leader"],
        serde_json::Value::Null,
        "{out}"
    );
    let page = metrics(&n3.endpoint(), &other.ca_cert()).await;
    assert!(counter(&page, "raft_peer_tls_refused_total") >= 1, "{page}");
    // And the cluster's CA does not vouch for node 3's client API either.
    let (code, _, err) = cli(
        &["status", "--endpoints", &n3.endpoint(), "--ca", p(&ca)],
        &[],
    );
    assert_eq!(code, 7, "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_of_the_wrong_scheme_gets_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let c = certs::init(&dir.path().join("certs"), 1, &[], false).unwrap();
    let base = free_base_port(1);
    let tls = Node::start(
        dir.path(),
        base,
        1,
        1,
        &tls_flags(&c.node_cert(1), &c.node_key(1), &c.ca_cert()),
    );
    let port = tls.client_port;

    // The CLI with http:// (or no scheme) on the TLS port.
    for endpoint in [
        format!("http://127.0.0.1:{port}"),
        format!("127.0.0.1:{port}"),
    ] {
        let (code, _, err) = cli(&["get", "k", "--endpoints", &endpoint], &[]);
        assert_eq!(code, 7, "{err}");
        assert!(
            err.contains(&format!("speaks TLS; use https://127.0.0.1:{port}")),
            "{err}"
        );
    }

    // curl-like: one plain request, one plain answer naming the https URL.
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET /v1/kv/k?consistency=stale HTTP/1.1\r\nHost: localhost:{port}\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 400 "), "{answer}");
    assert!(answer.contains("x-raftkv-tls-required: 1"), "{answer}");
    let body: serde_json::Value =
        serde_json::from_str(answer.split("\r\n\r\n").nth(1).unwrap()).unwrap();
    assert_eq!(body["error"]["code"], "tls_required");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains(&format!(
            "use https://localhost:{port}/v1/kv/k?consistency=stale"
        )),
        "{message}"
    );
    let page = metrics(&tls.endpoint(), &c.ca_cert()).await;
    assert!(
        page.contains("raftkv_http_tls_refused_total{reason=\"plain_http\"} 3"),
        "{page}"
    );

    // The other way round: https:// to a plain server.
    let plain_base = free_base_port(1);
    let plain_dir = dir.path().join("plain");
    std::fs::create_dir_all(&plain_dir).unwrap();
    let mut child = Command::new(RAFTKV)
        .args(["serve", "--id", "1"])
        .args([
            "--peers",
            &format!("1=127.0.0.1:{}", plain_base + PEER_PORT_OFFSET),
        ])
        .args(["--clients", &format!("1=127.0.0.1:{plain_base}")])
        .arg("--data-dir")
        .arg(plain_dir.join("data"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    while !rx
        .recv_timeout(WAIT)
        .unwrap()
        .contains("serving clients on http://")
    {}
    let (code, _, err) = cli(
        &[
            "get",
            "k",
            "--endpoints",
            &format!("https://127.0.0.1:{plain_base}"),
            "--ca",
            p(&c.ca_cert()),
        ],
        &[],
    );
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(code, 7, "{err}");
    assert!(
        err.contains(&format!(
            "does not speak TLS (it answered in plain text); use http://127.0.0.1:{plain_base}"
        )),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_verifies_the_server_and_shows_its_certificate_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    let c = certs::init(&dir.path().join("certs"), 1, &[], false).unwrap();
    let other = certs::init(&dir.path().join("other"), 1, &[], false).unwrap();
    let base = free_base_port(1);
    let mut flags = tls_flags(&c.node_cert(1), &c.node_key(1), &c.ca_cert());
    flags.push("--tls-client-auth".into());
    let n = Node::start(dir.path(), base, 1, 1, &flags);
    let ep = n.endpoint();
    let (ca, cert, key) = (c.ca_cert(), c.client_cert(), c.client_key());
    let with = |extra: &[&str]| {
        let mut a = vec![
            "put",
            "k",
            "v",
            "--endpoints",
            ep.as_str(),
            "--retry-for",
            "20s",
        ];
        a.extend_from_slice(extra);
        cli(&a, &[])
    };

    // A server certificate the given CA did not sign.
    let (code, _, err) = with(&["--ca", p(&other.ca_cert())]);
    assert_eq!(code, 7, "{err}");
    assert!(
        err.contains("not signed by the CA given with --ca"),
        "{err}"
    );
    // No CA at all for an https:// endpoint.
    let (code, _, err) = with(&[]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("pass --ca FILE"), "{err}");
    // The right CA, but the server wants a client certificate...
    let (code, _, err) = with(&["--ca", p(&ca)]);
    assert_eq!(code, 7, "{err}");
    assert!(err.contains("requires a client certificate"), "{err}");
    // ...of its CA.
    let (code, _, err) = with(&[
        "--ca",
        p(&ca),
        "--cert",
        p(&other.client_cert()),
        "--key",
        p(&other.client_key()),
    ]);
    assert_eq!(code, 7, "{err}");
    assert!(err.contains("refused our client certificate"), "{err}");
    n.wait_log("client TLS certificate refused", WAIT);
    // All of it right: the write goes through, flags or environment.
    let (code, _, err) = with(&["--ca", p(&ca), "--cert", p(&cert), "--key", p(&key)]);
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = cli(
        &["get", "k", "--endpoints", &ep],
        &[
            ("RAFTKV_CA", &ca),
            ("RAFTKV_CERT", &cert),
            ("RAFTKV_KEY", &key),
        ],
    );
    assert_eq!((code, out.trim()), (0, "v"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_certificates_and_keeps_them_when_a_file_is_bad() {
    let dir = tempfile::tempdir().unwrap();
    let first = certs::init(&dir.path().join("first"), 1, &[], false).unwrap();
    let second = certs::init(&dir.path().join("second"), 1, &[], false).unwrap();
    // The node reads copies, which the test replaces.
    let live = dir.path().join("live");
    std::fs::create_dir_all(&live).unwrap();
    let (cert, key, ca) = (
        live.join("node.pem"),
        live.join("node.key"),
        live.join("ca.pem"),
    );
    let install = |c: &CertDir| {
        std::fs::copy(c.node_cert(1), &cert).unwrap();
        std::fs::copy(c.node_key(1), &key).unwrap();
        std::fs::copy(c.ca_cert(), &ca).unwrap();
    };
    install(&first);
    let n = Node::start(
        dir.path(),
        free_base_port(1),
        1,
        1,
        &tls_flags(&cert, &key, &ca),
    );
    let ep = n.endpoint();
    let status = |c: &CertDir| {
        cli(
            &["status", "--endpoints", &ep, "--ca", p(&c.ca_cert())],
            &[],
        )
        .0
    };
    assert_eq!(status(&first), 0);
    assert_eq!(status(&second), 7);

    // New files, then SIGHUP: new connections get the new certificate.
    install(&second);
    n.signal(libc::SIGHUP);
    n.wait_log("TLS certificates reloaded", WAIT);
    assert_eq!(status(&second), 0);
    assert_eq!(status(&first), 7);

    // A bad key: the reload is refused and the certificates stay.
    std::fs::write(&key, "garbage").unwrap();
    n.signal(libc::SIGHUP);
    n.wait_log("TLS certificates not reloaded", WAIT);
    assert_eq!(status(&second), 0);
    let page = metrics(&ep, &second.ca_cert()).await;
    assert!(
        page.contains("raftkv_tls_reloads_total{result=\"ok\"} 1"),
        "{page}"
    );
    assert!(
        page.contains("raftkv_tls_reloads_total{result=\"failed\"} 1"),
        "{page}"
    );
    // Still running: SIGHUP did not stop it.
    assert!(n.log_text().contains("no PRIVATE KEY"), "{}", n.log_text());
    let mut n = n;
    assert!(n.child.try_wait().unwrap().is_none());
}

#[test]
fn raftkv_cluster_tls_runs_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let base = free_base_port(3);
    let mut child = Command::new(RAFTKV)
        .args(["cluster", "--tls", "--plain", "--nodes", "3"])
        .args(["--base-port", &base.to_string()])
        .arg("--data-dir")
        .arg(&data)
        .args(["--", "--tick-ms", "50"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    struct Kill(Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let stdout = child.stdout.take().unwrap();
    let mut child = Kill(child);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut seen = Vec::new();
    let deadline = Instant::now() + WAIT;
    while !seen.iter().any(|l: &String| l.contains("is the leader")) {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(l) => seen.push(l),
            Err(_) => panic!("no leader within {WAIT:?}:\n{}", seen.join("\n")),
        }
    }
    let text = seen.join("\n");
    // The banner gives https endpoints and the CA for the CLI.
    let ca = data.join("tls").join("ca.pem");
    let endpoints: Vec<String> = (0..3)
        .map(|i| format!("https://127.0.0.1:{}", base + i))
        .collect();
    assert!(
        text.contains(&format!("export RAFTKV_ENDPOINTS={}", endpoints.join(","))),
        "{text}"
    );
    assert!(
        text.contains(&format!("export RAFTKV_CA={}", ca.display())),
        "{text}"
    );
    let env = [("RAFTKV_CA", ca.as_path())];
    let (code, _, err) = cli(
        &[
            "put",
            "greeting",
            "hello",
            "--endpoints",
            &endpoints.join(","),
        ],
        &env,
    );
    assert_eq!(code, 0, "{err}");
    // Read through node 3 alone: a linearizable read it forwards to the
    // leader over HTTPS if it follows.
    let (code, out, err) = cli(&["get", "greeting", "--endpoints", &endpoints[2]], &env);
    assert_eq!((code, out.trim()), (0, "hello"), "{err}");
    // The load generator's lean HTTP/1 client speaks TLS too.
    let report = dir.path().join("bench.json");
    let (code, _, err) = cli(
        &[
            "bench",
            "--clients",
            "2",
            "--duration",
            "1s",
            "--read-ratio",
            "0.5",
            "--json",
            p(&report),
            "--endpoints",
            &endpoints.join(","),
        ],
        &env,
    );
    assert_eq!(code, 0, "{err}");
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    assert!(report["writes"]["count"].as_u64().unwrap() > 0, "{report}");
    assert!(report["reads"]["count"].as_u64().unwrap() > 0, "{report}");
    assert_eq!(report["errors"], serde_json::json!({}), "{report}");
    // Every node serves TLS to clients and peers.
    for id in 1..=3 {
        let log =
            std::fs::read_to_string(data.join(format!("node-{id}")).join("server.log")).unwrap();
        assert!(log.contains("serving clients on https://"), "{log}");
        assert!(log.contains(", TLS)"), "{log}");
    }
    // The certificate keys are private.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(data.join("tls").join("node-1.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    // Stops cleanly.
    // SAFETY: kill(2) on our own unreaped child.
    unsafe {
        libc::kill(child.0.id() as i32, libc::SIGTERM);
    }
    let deadline = Instant::now() + WAIT;
    let status = loop {
        if let Some(s) = child.0.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "the launcher did not stop");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status}");
}

/// Certificates a node cannot use stop it at startup, with the file and
/// the reason named, before it touches its data directory.
#[test]
fn a_node_refuses_to_start_with_certificates_it_cannot_use() {
    let dir = tempfile::tempdir().unwrap();
    let c = certs::init(&dir.path().join("certs"), 2, &[], false).unwrap();
    let other = certs::init(&dir.path().join("other"), 1, &[], false).unwrap();
    let missing = dir.path().join("missing.key");
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            tls_flags(&c.node_cert(2), &c.node_key(2), &c.ca_cert()),
            "does not name raft-node-1",
        ),
        (
            tls_flags(&c.node_cert(1), &c.node_key(2), &c.ca_cert()),
            "does not belong to the certificate",
        ),
        (
            tls_flags(&c.node_cert(1), &missing, &c.ca_cert()),
            "cannot read the private key",
        ),
        (
            tls_flags(&c.node_cert(1), &c.node_key(1), &other.ca_cert()),
            "does not verify against the CA",
        ),
        (
            vec!["--tls-cert".into(), p(&c.node_cert(1)).into()],
            "give --tls-cert, --tls-key and --tls-ca together",
        ),
    ];
    for (flags, needle) in cases {
        let data = dir.path().join("data");
        let out = Command::new(RAFTKV)
            .args([
                "serve",
                "--id",
                "1",
                "--peers",
                "1=127.0.0.1:1",
                "--clients",
                "1=127.0.0.1:2",
            ])
            .arg("--data-dir")
            .arg(&data)
            .args(&flags)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{flags:?} started");
        assert!(err.contains(needle), "{flags:?}: {err}");
        assert!(!data.exists(), "{flags:?} touched the data directory");
    }
}
