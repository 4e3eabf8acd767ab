//! The dashboard in a real browser: headless Chromium (Debian's
//! `chromium` package), driven over the DevTools protocol, against a real
//! `raftkv cluster` (three `raftkv serve` processes and the launcher, whose
//! control endpoint the kill and restart buttons reach).
//!
//! The page must load with no console error, no uncaught exception and no
//! failed or refused load (a CDN link would be refused by the page's
//! Content-Security-Policy and show here), then:
//!
//! 1. show three nodes and exactly one leader, the one the nodes name;
//! 2. if node 1 (whose port serves the page) leads, hand leadership to
//!    node 2 with its "Make leader" button (so the kill below does not take
//!    the page's own server down);
//! 3. kill the leader with its "Kill" button: the page shows it down and a
//!    new leader (the one the surviving nodes name), and the newest
//!    election's cause is the kill;
//! 4. restart it with "Restart": three nodes up again;
//! 5. isolate the leader with "Isolate": another node wins, the cause is
//!    the isolation; "Heal" brings the node back as a follower;
//! 6. refuse a file that is not a trace, then load a simulator trace
//!    (`tests/fixtures/raft-sim-seed7-3nodes.json`, written by `raft-sim
//!    replay --seed 7 --nodes 3 --steps 3000 --profile elections --faults
//!    crash,partition,transfer,pause --json FILE`) through the file input
//!    and step through it: three nodes, a leader at the first election,
//!    every election of the trace listed at its end; then back to live.
//!
//! Screenshots of each stage go to `target/tmp/dashboard-screenshots/`.
//! Skipped with a message when no Chromium is installed (`CHROMIUM` names
//! one explicitly). About 25 s.

mod support;

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{json, Value};
use support::{http_request, loopback, RAFTKV};
use tungstenite::stream::MaybeTlsStream;
use tungstenite::{Message, WebSocket};

/// The Chromium to run, if any.
fn find_chromium() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("CHROMIUM") {
        return Some(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH")?;
    for dir in std::env::split_paths(&path) {
        for name in ["chromium", "chromium-browser", "google-chrome"] {
            let p = dir.join(name);
            if p.is_file() {
                return Some(p);
            }
        }
    }
    None
}

fn screenshot_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("dashboard-screenshots");
    std::fs::create_dir_all(&dir).expect("create the screenshot directory");
    dir
}

// ----------------------------------------------------------------------
// The cluster: `raftkv cluster`, stopped with SIGTERM (it stops its nodes).
// ----------------------------------------------------------------------

struct Launcher {
    child: Child,
    base_port: u16,
    _dir: tempfile::TempDir,
}

impl Launcher {
    fn start() -> Launcher {
        let dir = tempfile::tempdir().expect("temp dir");
        let base_port = raftkv::cluster::free_base_port(3);
        let child = Command::new(RAFTKV)
            .args(["cluster", "--plain", "--refresh", "200ms", "--data-dir"])
            .arg(dir.path().join("data"))
            .args(["--base-port", &base_port.to_string()])
            // Fast elections: a debug build on a busy machine still copes.
            .args(["--", "--tick-ms", "50"])
            .stdin(Stdio::null())
            .stdout(Stdio::from(
                std::fs::File::create(dir.path().join("launcher.log")).expect("log file"),
            ))
            .stderr(Stdio::null())
            .spawn()
            .expect("start raftkv cluster");
        Launcher {
            child,
            base_port,
            _dir: dir,
        }
    }

    fn addr(&self, id: u64) -> SocketAddr {
        loopback(self.base_port + id as u16 - 1)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("launcher.log")).unwrap_or_default()
    }

    /// The leader the running nodes agree on (each node that answers names
    /// it, and it says it leads).
    fn agreed_leader(&self, ids: &[u64]) -> Option<u64> {
        let mut leader = None;
        for &id in ids {
            let st = http_request(self.addr(id), "GET", "/v1/status", None).ok()?;
            if st.status != 200 {
                return None;
            }
            let st = st.json();
            let named = st["leader"].as_u64()?;
            if leader.is_some_and(|l| l != named) || (named == id && st["role"] != "leader") {
                return None;
            }
            leader = Some(named);
        }
        leader
    }
}

impl Drop for Launcher {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("launcher output:\n{}", self.log());
        }
        if let Ok(pid) = libc::pid_t::try_from(self.child.id()) {
            // SAFETY: kill(2) has no memory-safety preconditions; the pid is
            // our unreaped child.
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ----------------------------------------------------------------------
// The browser, over the DevTools protocol.
// ----------------------------------------------------------------------

struct Browser {
    child: Child,
    ws: WebSocket<MaybeTlsStream<TcpStream>>,
    next_id: u64,
    /// Console errors, uncaught exceptions and error log entries seen.
    problems: Vec<String>,
    _profile: tempfile::TempDir,
    /// Chromium's stderr, for a failing test's message.
    stderr: Arc<Mutex<String>>,
}

impl Browser {
    fn launch(chromium: &PathBuf) -> Browser {
        let profile = tempfile::tempdir().expect("temp dir");
        let mut child = Command::new(chromium)
            .args([
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-extensions",
                "--disable-background-networking",
                "--remote-debugging-port=0",
                "--window-size=1300,1000",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            // Its own process group: the drop kills the browser's helper
            // processes with it.
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", chromium.display()));
        // "DevTools listening on ws://127.0.0.1:PORT/devtools/browser/ID".
        let stderr = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let pipe = child.stderr.take().expect("piped stderr");
        let sink = stderr.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                if let Some(url) = line.split("DevTools listening on ").nth(1) {
                    let _ = tx.send(url.trim().to_string());
                }
                let mut s = sink.lock().unwrap();
                if s.len() < 64 << 10 {
                    s.push_str(&line);
                    s.push('\n');
                }
            }
        });
        let browser_url = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(url) => url,
            Err(_) => {
                let _ = child.kill();
                panic!(
                    "chromium did not start its DevTools endpoint within 30 s:\n{}",
                    stderr.lock().unwrap()
                );
            }
        };
        // A fresh page target, asked of the browser endpoint; then talk to
        // the page directly (its endpoint is /devtools/page/<target id>).
        let page_url = {
            let (mut browser, _) =
                tungstenite::connect(browser_url.as_str()).expect("connect to the browser");
            let msg =
                json!({"id": 1, "method": "Target.createTarget", "params": {"url": "about:blank"}});
            browser
                .send(Message::text(msg.to_string()))
                .expect("send Target.createTarget");
            let target = loop {
                let Message::Text(text) = browser.read().expect("Target.createTarget answer")
                else {
                    continue;
                };
                let v: Value = serde_json::from_str(&text).expect("DevTools sends JSON");
                if v["id"] == 1 {
                    break v["result"]["targetId"]
                        .as_str()
                        .unwrap_or_else(|| panic!("no target id in {v}"))
                        .to_string();
                }
            };
            let _ = browser.close(None);
            let base = browser_url
                .split("/devtools/")
                .next()
                .expect("split always yields one part");
            format!("{base}/devtools/page/{target}")
        };
        let (ws, _) = tungstenite::connect(page_url.as_str()).expect("connect to the page target");
        if let MaybeTlsStream::Plain(s) = ws.get_ref() {
            s.set_read_timeout(Some(Duration::from_secs(30)))
                .expect("read timeout");
        }
        let mut b = Browser {
            child,
            ws,
            next_id: 1,
            problems: Vec::new(),
            _profile: profile,
            stderr,
        };
        for domain in ["Runtime.enable", "Log.enable", "Page.enable"] {
            b.call(domain, json!({}));
        }
        b
    }

    /// Sends a command and returns its result, noting events on the way.
    fn call(&mut self, method: &str, params: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        let msg = json!({"id": id, "method": method, "params": params}).to_string();
        self.ws
            .send(Message::text(msg))
            .unwrap_or_else(|e| panic!("{method}: send: {e}"));
        loop {
            let frame = self
                .ws
                .read()
                .unwrap_or_else(|e| panic!("{method}: no answer: {e}"));
            let Message::Text(text) = frame else { continue };
            let v: Value = serde_json::from_str(&text).expect("DevTools sends JSON");
            if v["id"] == id {
                if let Some(err) = v.get("error") {
                    panic!("{method} failed: {err}");
                }
                return v["result"].clone();
            }
            self.note_event(&v);
        }
    }

    fn note_event(&mut self, v: &Value) {
        let p = &v["params"];
        match v["method"].as_str() {
            Some("Runtime.exceptionThrown") => self.problems.push(format!(
                "uncaught exception: {}",
                p["exceptionDetails"]["exception"]["description"]
                    .as_str()
                    .unwrap_or_else(|| p["exceptionDetails"]["text"].as_str().unwrap_or("?"))
            )),
            Some("Runtime.consoleAPICalled")
                if matches!(p["type"].as_str(), Some("error" | "assert")) =>
            {
                self.problems
                    .push(format!("console.{}: {}", p["type"], p["args"]))
            }
            Some("Log.entryAdded") if p["entry"]["level"] == "error" => {
                self.problems.push(format!(
                    "log error ({}): {} {}",
                    p["entry"]["source"], p["entry"]["text"], p["entry"]["url"]
                ))
            }
            _ => {}
        }
    }

    /// Evaluates `expr` in the page and returns its value.
    fn eval(&mut self, expr: &str) -> Value {
        let r = self.call(
            "Runtime.evaluate",
            json!({"expression": expr, "returnByValue": true, "awaitPromise": true}),
        );
        if let Some(e) = r.get("exceptionDetails") {
            panic!("evaluating {expr}: {e}");
        }
        r["result"]["value"].clone()
    }

    /// What the page shows, in a shape the test can check.
    fn state(&mut self) -> Value {
        let text = self.eval(STATE_JS);
        match text.as_str() {
            Some(t) => serde_json::from_str(t).expect("state JSON"),
            None => Value::Null,
        }
    }

    /// Waits until `ok(state)`; panics with the last state after `timeout`.
    fn wait(&mut self, timeout: Duration, what: &str, ok: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let st = self.state();
            if ok(&st) {
                return st;
            }
            assert!(
                Instant::now() < deadline,
                "timed out after {timeout:?} waiting for the page to show {what}; it shows:\n{st:#}"
            );
            std::thread::sleep(Duration::from_millis(150));
        }
    }

    fn click(&mut self, action: &str, node: u64) {
        let clicked = self.eval(&format!(
            "(() => {{ const b = document.querySelector('button[data-action=\"{action}\"][data-node=\"{node}\"]');
               if (!b || b.disabled || b.hidden) return false; b.click(); return true; }})()"
        ));
        assert_eq!(
            clicked,
            json!(true),
            "no enabled {action} button for node {node}"
        );
    }

    /// Chooses `path` in the file input `selector` (as a user would; the
    /// page gets its `change` event).
    fn set_file(&mut self, selector: &str, path: &std::path::Path) {
        let doc = self.call("DOM.getDocument", json!({}));
        let found = self.call(
            "DOM.querySelector",
            json!({"nodeId": doc["root"]["nodeId"], "selector": selector}),
        );
        self.call(
            "DOM.setFileInputFiles",
            json!({"files": [path], "nodeId": found["nodeId"]}),
        );
    }

    fn screenshot(&mut self, name: &str) -> PathBuf {
        let r = self.call("Page.captureScreenshot", json!({"format": "png"}));
        let png = base64::engine::general_purpose::STANDARD
            .decode(r["data"].as_str().expect("screenshot data"))
            .expect("base64 PNG");
        assert!(png.starts_with(b"\x89PNG"), "not a PNG");
        let path = screenshot_dir().join(name);
        std::fs::write(&path, png).expect("write screenshot");
        path
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("chromium stderr:\n{}", self.stderr.lock().unwrap());
        }
        let _ = self.ws.close(None);
        if let Ok(pid) = libc::pid_t::try_from(self.child.id()) {
            // SAFETY: kill(2) has no memory-safety preconditions; the group
            // is the one we created for the browser (its leader is our
            // unreaped child, so the id is not reused).
            unsafe { libc::kill(-pid, libc::SIGKILL) };
        }
        let _ = self.child.wait();
    }
}

/// The page's state as JSON text: mode, polls, leader, one entry per node
/// card and per election.
const STATE_JS: &str = r#"JSON.stringify((() => {
  const d = window.__dashboard;
  if (!d) return null;
  const banner = document.querySelector('#banner');
  return {
    mode: d.mode, polls: d.polls, pollErrors: d.pollErrors, leader: d.leader,
    nodes: [...document.querySelectorAll('#nodes .node')].map((n) => ({
      id: Number(n.dataset.id), role: n.dataset.role, up: n.dataset.up === 'true',
      isolated: n.dataset.isolated === 'true' })),
    elections: [...document.querySelectorAll('#elections li')].map((li) => ({
      term: Number(li.dataset.term), winner: Number(li.dataset.winner),
      cause: li.dataset.cause, text: li.textContent })),
    summary: document.querySelector('#summary').textContent,
    position: document.querySelector('#trace-position').textContent,
    banner: banner.hidden ? null : banner.textContent,
  };
})())"#;

fn leaders(st: &Value) -> Vec<u64> {
    st["nodes"]
        .as_array()
        .map(|ns| {
            ns.iter()
                .filter(|n| n["up"] == true && n["role"] == "leader")
                .filter_map(|n| n["id"].as_u64())
                .collect()
        })
        .unwrap_or_default()
}

fn node(st: &Value, id: u64) -> &Value {
    st["nodes"]
        .as_array()
        .and_then(|ns| ns.iter().find(|n| n["id"] == id))
        .unwrap_or(&Value::Null)
}

fn three_up_one_leader(st: &Value) -> bool {
    st["polls"].as_u64().unwrap_or(0) >= 2
        && st["nodes"].as_array().is_some_and(|ns| {
            ns.len() == 3 && ns.iter().all(|n| n["up"] == true && n["isolated"] == false)
        })
        && leaders(st).len() == 1
}

/// The newest election the page lists.
fn newest_election(st: &Value) -> Value {
    st["elections"]
        .as_array()
        .and_then(|e| e.first())
        .cloned()
        .unwrap_or(Value::Null)
}

/// The number of events of a `raft-sim replay --json` trace, and of
/// elections won in it (a node's role event naming itself leader, once per
/// leader and term), counted here independently of the page's loader.
fn trace_counts(path: &std::path::Path) -> (usize, usize) {
    let doc: Value =
        serde_json::from_str(&std::fs::read_to_string(path).expect("trace")).expect("JSON");
    let timeline = doc["timeline"].as_array().expect("timeline");
    let mut current = None;
    let mut won = 0;
    for e in timeline {
        let w = &e["what"];
        if w["type"] == "role" && w["leader"] == w["node"] {
            let this = (w["node"].as_u64(), w["term"].as_u64());
            if current != Some(this) {
                won += 1;
                current = Some(this);
            }
        }
    }
    (timeline.len(), won)
}

#[test]
fn dashboard_shows_the_cluster_and_follows_a_failover() {
    let Some(chromium) = find_chromium() else {
        eprintln!(
            "SKIPPED dashboard_shows_the_cluster_and_follows_a_failover: no Chromium \
             (install Debian's `chromium` package, or set CHROMIUM=/path/to/chrome)"
        );
        return;
    };
    let started = Instant::now();
    let cluster = Launcher::start();
    let all = [1u64, 2, 3];
    let wait_agreed = |ids: &[u64], what: &str| {
        support::wait_until(Duration::from_secs(30), what, || cluster.agreed_leader(ids))
    };
    wait_agreed(&all, "the cluster to elect a leader");
    let mut b = Browser::launch(&chromium);
    let page = format!("http://{}/", cluster.addr(1));
    b.call("Page.navigate", json!({ "url": page }));

    // 1. Three nodes, one leader: the one the nodes name.
    let st = b.wait(
        Duration::from_secs(20),
        "three nodes up and one leader",
        three_up_one_leader,
    );
    let shown = leaders(&st)[0];
    assert_eq!(Some(shown), cluster.agreed_leader(&all), "{st:#}");
    assert_eq!(st["mode"], "live");
    b.screenshot("1-three-nodes.png");

    // 2. Keep node 1, the page's server, out of the kill: hand over.
    let mut leader = shown;
    if leader == 1 {
        b.click("transfer", 2);
        let st = b.wait(Duration::from_secs(20), "node 2 leading", |st| {
            leaders(st) == [2] && newest_election(st)["cause"] == "transfer"
        });
        leader = 2;
        assert_eq!(newest_election(&st)["winner"], 2, "{st:#}");
        b.screenshot("2-after-transfer.png");
    }

    // 3. Kill the leader: the page shows it down and a new leader.
    b.click("kill", leader);
    let st = b.wait(
        Duration::from_secs(20),
        "a new leader after the kill",
        |st| {
            let l = leaders(st);
            node(st, leader)["up"] == false && l.len() == 1 && l[0] != leader
        },
    );
    let new_leader = leaders(&st)[0];
    let survivors: Vec<u64> = all.iter().copied().filter(|id| *id != leader).collect();
    assert_eq!(
        wait_agreed(&survivors, "the survivors to agree on a leader"),
        new_leader,
        "the page's leader is not the cluster's"
    );
    let e = newest_election(&st);
    assert_eq!(e["winner"], new_leader, "{st:#}");
    assert_eq!(e["cause"], "killed", "{st:#}");
    b.screenshot("3-after-kill.png");

    // 4. Restart it.
    b.click("restart", leader);
    b.wait(
        Duration::from_secs(30),
        "all three nodes up again",
        three_up_one_leader,
    );

    // 5. Isolate the leader; another node wins; heal.
    let st = b.state();
    let isolated = leaders(&st)[0];
    b.click("isolate", isolated);
    let st = b.wait(
        Duration::from_secs(20),
        "a new leader after the isolation",
        |st| {
            node(st, isolated)["isolated"] == true
                && newest_election(st)["cause"] == "isolated"
                && leaders(st).iter().any(|l| *l != isolated)
        },
    );
    b.screenshot("4-isolated.png");
    assert_ne!(newest_election(&st)["winner"], isolated, "{st:#}");
    b.click("heal", isolated);
    b.wait(
        Duration::from_secs(20),
        "the healed node back as a follower",
        |st| three_up_one_leader(st) && node(st, isolated)["role"] == "follower",
    );

    // 6. A simulator trace in the same view, through the file input. A
    //    file that is not a trace is refused with a message first.
    b.set_file(
        "#trace-file",
        &PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml"),
    );
    let toast = b.eval("new Promise((ok) => setTimeout(() => ok(document.querySelector('.toast')?.textContent ?? ''), 300))");
    assert!(
        toast.as_str().is_some_and(|t| t.contains("not JSON")),
        "no refusal shown: {toast}"
    );
    assert_eq!(b.state()["mode"], "live");
    let fixture =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/raft-sim-seed7-3nodes.json");
    let (events, elections) = trace_counts(&fixture);
    b.set_file("#trace-file", &fixture);
    let st = b.wait(Duration::from_secs(10), "the trace loaded", |st| {
        st["mode"] == "trace"
    });
    assert!(
        st["position"]
            .as_str()
            .is_some_and(|p| p.starts_with(&format!("event 1 of {events} "))),
        "{st:#}"
    );
    assert_eq!(st["nodes"].as_array().map(Vec::len), Some(3), "{st:#}");
    // Step to the first election, then to the end.
    b.eval("document.querySelector('button[data-step=\"next-role\"]').click()");
    let st = b.state();
    assert_eq!(
        leaders(&st).len(),
        1,
        "a leader at the first LEADS event: {st:#}"
    );
    assert_eq!(st["elections"].as_array().map(Vec::len), Some(1), "{st:#}");
    b.screenshot("5-trace-first-election.png");
    b.eval("document.querySelector('button[data-step=\"last\"]').click()");
    let st = b.state();
    assert_eq!(
        st["elections"].as_array().map(Vec::len),
        Some(elections),
        "every LEADS of the trace listed: {st:#}"
    );
    assert!(
        st["position"]
            .as_str()
            .is_some_and(|p| p.starts_with(&format!("event {events} of {events} "))),
        "{st:#}"
    );
    b.screenshot("6-trace-end.png");
    // And back to the live cluster.
    b.eval("document.querySelector('#back-live').click()");
    b.wait(Duration::from_secs(10), "the live cluster again", |st| {
        st["mode"] == "live" && three_up_one_leader(st)
    });

    // No console error, exception or failed load all along.
    b.state();
    assert!(
        b.problems.is_empty(),
        "the page reported problems:\n{}",
        b.problems.join("\n")
    );
    eprintln!(
        "dashboard: leader {shown}, killed {leader} -> {new_leader}, isolated {isolated}; screenshots in {}; {:.1}s",
        screenshot_dir().display(),
        started.elapsed().as_secs_f64()
    );
}
