//! The Docker image and the compose cluster, for real: builds the image
//! with `scripts/docker-image.sh` from the debug binary cargo just built
//! (a release build would add minutes; the script proves the same image
//! recipe either way), brings up the repository's `docker-compose.yml`
//! under a project name of its own, and then
//!
//! 1. waits for one leader that every node names (the nodes find each
//!    other by compose service name: `n1:7800`, ... resolved in the
//!    container, so host-name resolution inside the image is exercised);
//! 2. writes keys through node 1;
//! 3. stops the leader's container (`docker-compose stop`, SIGTERM), writes
//!    more keys through a survivor (a new leader must be elected first);
//! 4. starts the container again (same volume, maybe a new IP and host
//!    port);
//! 5. checks every key on every node: first a stale read on each node
//!    until it has caught up (so the restarted node really holds the data
//!    itself), then a linearizable read through each node;
//! 6. tears everything down (`down -v`, the image too), also when a step
//!    panics, and checks that no container, network or volume of the
//!    project is left.
//!
//! Skipped, with a message saying why, where no Docker engine answers or
//! `docker-compose` is missing. Takes about 20-30 s.

mod support;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use support::{encode_key, http_request, HttpResponse, RAFTKV};

/// The repository root (the compose file and the script live there).
fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Why this machine cannot run the test, if it cannot.
fn docker_missing() -> Option<String> {
    let ran = |cmd: &str, args: &[&str]| {
        Command::new(cmd)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("`{cmd}` cannot run: {e}"))
            .and_then(|o| {
                if o.status.success() {
                    Ok(())
                } else {
                    Err(format!(
                        "`{cmd} {}` failed: {}",
                        args.join(" "),
                        String::from_utf8_lossy(&o.stderr).trim()
                    ))
                }
            })
    };
    ran("docker", &["info"])
        .and_then(|()| ran("docker-compose", &["version"]))
        .err()
}

/// Runs a command and returns its output; panics with stderr if it fails.
fn run(cmd: &mut Command) -> Output {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// One compose project with its own image tag; torn down when dropped.
struct Project {
    name: String,
    image: String,
    torn_down: bool,
}

impl Project {
    fn new() -> Project {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        // Compose project names: lowercase letters, digits, dashes.
        let name = format!("raftkvtest-{}-{nanos}", std::process::id());
        Project {
            image: format!("raftkv:{name}"),
            name,
            torn_down: false,
        }
    }

    /// `docker-compose -p NAME -f docker-compose.yml ...` with this
    /// project's image and random host ports (an empty port variable
    /// leaves the choice to Docker, so parallel runs never collide).
    fn compose(&self) -> Command {
        let mut c = Command::new("docker-compose");
        c.current_dir(repo_root())
            .args(["-p", &self.name, "-f", "docker-compose.yml"])
            .env("RAFTKV_IMAGE", &self.image)
            .env("RAFTKV_N1_PORT", "")
            .env("RAFTKV_N2_PORT", "")
            .env("RAFTKV_N3_PORT", "");
        c
    }

    /// The host address node `id`'s client port is published on.
    fn addr(&self, id: u64) -> SocketAddr {
        let out = run(self.compose().args(["port", &format!("n{id}"), "7700"]));
        let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
        text.parse()
            .unwrap_or_else(|e| panic!("`docker-compose port n{id} 7700` said {text:?}: {e}"))
    }

    fn logs(&self) -> String {
        self.compose()
            .args(["logs", "--no-color", "--tail", "40"])
            .stdin(Stdio::null())
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    }

    /// Removes the containers, network, volumes and image. Idempotent.
    fn tear_down(&mut self) {
        if self.torn_down {
            return;
        }
        self.torn_down = true;
        let _ = self
            .compose()
            .args(["down", "-v", "--remove-orphans", "--timeout", "5"])
            .stdin(Stdio::null())
            .output();
        let _ = Command::new("docker")
            .args(["rmi", "-f", &self.image])
            .stdin(Stdio::null())
            .output();
    }

    /// What of the project is still there (containers, networks, volumes).
    fn leftovers(&self) -> String {
        let label = format!("label=com.docker.compose.project={}", self.name);
        let mut found = String::new();
        for what in [
            &["ps", "-aq", "--filter"][..],
            &["network", "ls", "-q", "--filter"][..],
            &["volume", "ls", "-q", "--filter"][..],
        ] {
            let out = run(Command::new("docker").args(what).arg(&label));
            found.push_str(String::from_utf8_lossy(&out.stdout).trim());
        }
        found
    }
}

impl Drop for Project {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("compose logs of {}:\n{}", self.name, self.logs());
        }
        self.tear_down();
    }
}

fn request(addr: SocketAddr, method: &str, path: &str, body: Option<&str>) -> Option<HttpResponse> {
    http_request(addr, method, path, body).ok()
}

/// Polls `f` every 100 ms until it returns `Some`; panics after `timeout`.
fn wait_for<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(t) = f() {
            return t;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The leader every node in `addrs` names, once they agree and it says so.
fn agreed_leader(addrs: &[(u64, SocketAddr)]) -> Option<u64> {
    let mut leader = None;
    for (id, addr) in addrs {
        let st = request(*addr, "GET", "/v1/status", None)?;
        if st.status != 200 {
            return None;
        }
        let st = st.json();
        let named = st["leader"].as_u64()?;
        if leader.is_some_and(|l| l != named) {
            return None;
        }
        if named == *id && st["role"] != "leader" {
            return None;
        }
        leader = Some(named);
    }
    leader
}

/// Writes `key=value` through `addr`, retrying answers that say the write
/// did not happen or may not have (a put of the same value is idempotent),
/// e.g. while an election is under way.
fn put(addr: SocketAddr, key: &str, value: &str) {
    let body = format!("{{\"value\":\"{value}\"}}");
    let path = format!("/v1/kv/{}", encode_key(key));
    wait_for(Duration::from_secs(20), &format!("put {key}"), || {
        request(addr, "PUT", &path, Some(&body)).filter(|r| r.status == 200)
    });
}

/// The value of `key` read at `addr` with `consistency`, if it answers.
fn get(addr: SocketAddr, key: &str, consistency: &str) -> Option<String> {
    let path = format!("/v1/kv/{}?consistency={consistency}", encode_key(key));
    let r = request(addr, "GET", &path, None)?;
    (r.status == 200).then(|| r.json()["value"].as_str().map(str::to_string))?
}

#[test]
fn compose_cluster_survives_a_stopped_container() {
    if let Some(why) = docker_missing() {
        eprintln!("SKIPPED compose_cluster_survives_a_stopped_container: {why}");
        return;
    }
    let started = Instant::now();
    let mut project = Project::new();

    // The image, from the debug binary cargo built for this test.
    run(
        Command::new(repo_root().join("scripts/docker-image.sh")).args([
            "--binary",
            RAFTKV,
            "--tag",
            &project.image,
        ]),
    );
    run(project.compose().args(["up", "-d"]));
    let ids = [1u64, 2, 3];
    let mut addrs: Vec<(u64, SocketAddr)> = ids.iter().map(|&id| (id, project.addr(id))).collect();

    let leader = wait_for(
        Duration::from_secs(30),
        "a leader all nodes agree on",
        || agreed_leader(&addrs),
    );
    // The members are known by their service names, as the compose file
    // gives them: resolving those is what let the nodes elect a leader.
    let members = request(addrs[0].1, "GET", "/v1/members", None).expect("members");
    let members = members.json();
    for id in ids {
        let m = members["members"]
            .as_array()
            .and_then(|ms| ms.iter().find(|m| m["id"] == id))
            .unwrap_or_else(|| panic!("node {id} missing from {members}"));
        assert_eq!(m["peer_addr"], format!("n{id}:7800"), "{members}");
    }

    let mut expected: Vec<(String, String)> = Vec::new();
    for i in 0..10 {
        let (k, v) = (format!("before/{i}"), format!("v{i}"));
        put(addrs[0].1, &k, &v);
        expected.push((k, v));
    }

    // Stop the leader's container; the survivors elect a new leader and
    // take writes.
    run(project
        .compose()
        .args(["stop", "--timeout", "5", &format!("n{leader}")]));
    let survivors: Vec<(u64, SocketAddr)> = addrs
        .iter()
        .copied()
        .filter(|(id, _)| *id != leader)
        .collect();
    let new_leader = wait_for(Duration::from_secs(30), "a new leader", || {
        agreed_leader(&survivors).filter(|l| *l != leader)
    });
    for i in 0..10 {
        let (k, v) = (format!("after/{i}"), format!("w{i}"));
        put(survivors[0].1, &k, &v);
        expected.push((k, v));
    }

    // Back up, from its volume; its host port may have changed.
    run(project.compose().args(["start", &format!("n{leader}")]));
    for slot in addrs.iter_mut() {
        if slot.0 == leader {
            slot.1 = project.addr(leader);
        }
    }

    // Every node holds every key itself (stale reads are local)...
    for (id, addr) in &addrs {
        wait_for(
            Duration::from_secs(30),
            &format!("node {id} to hold every key"),
            || {
                expected
                    .iter()
                    .all(|(k, v)| get(*addr, k, "stale").as_deref() == Some(v.as_str()))
                    .then_some(())
            },
        );
    }
    // ...and answers linearizable reads with the same values.
    for (id, addr) in &addrs {
        for (k, v) in &expected {
            let got = wait_for(
                Duration::from_secs(10),
                &format!("a linearizable read of {k} at node {id}"),
                || get(*addr, k, "linearizable"),
            );
            assert_eq!(&got, v, "node {id}, key {k}");
        }
    }
    eprintln!(
        "compose cluster: leader {leader} stopped, node {new_leader} took over, {} keys on 3 nodes; {:.1}s",
        expected.len(),
        started.elapsed().as_secs_f64()
    );

    project.tear_down();
    let left = project.leftovers();
    assert!(left.is_empty(), "left behind by {}: {left}", project.name);
}
