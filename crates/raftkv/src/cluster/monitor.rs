//! The running part of `raftkv cluster`: start the nodes, wait until they
//! serve, show the live table, kill and restart leaders on request, stop
//! everything on Ctrl-C / SIGTERM / `--duration`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use tokio::signal::unix::{signal, SignalKind};

use super::control::{self, ControlCall};
use super::{ClusterArgs, LocalCluster};
use crate::client::{Client, ClientConfig, NodeStatus};
use crate::server::routes::dev_control::Action;
use crate::server::ApiError;

/// Lines of a node's log shown when it fails to start or dies.
const LOG_TAIL_LINES: usize = 15;

/// In plain mode a status line is printed on every change and at least this
/// often, so a log of the run shows progress.
const PLAIN_STATUS_EVERY: Duration = Duration::from_secs(5);

/// What the launcher knows of one node at one refresh.
#[derive(Clone, Debug, PartialEq, Eq)]
enum NodeView {
    /// Answered `/v1/status`.
    Up(NodeStatus),
    /// Process running but no answer (starting, or overloaded).
    NoAnswer(String),
    /// Killed by `--kill-leader-every`, restarting at the given time.
    Killed { restart_at: Instant },
    /// Killed from the dashboard: down until the dashboard restarts it.
    Stopped,
    /// Exited by itself.
    Exited(String),
}

impl NodeView {
    /// The part of the view whose change is worth a line in plain mode.
    fn summary(&self) -> String {
        match self {
            NodeView::Up(s) => format!("{}(t{})", role_of(s), s.term),
            NodeView::NoAnswer(_) => "no-answer".into(),
            NodeView::Killed { .. } | NodeView::Stopped => "killed".into(),
            NodeView::Exited(_) => "exited".into(),
        }
    }
}

fn role_of(s: &NodeStatus) -> String {
    if s.role == "follower" && s.members.learners.contains(&s.id) {
        "learner".into()
    } else {
        s.role.clone()
    }
}

struct Monitor {
    cluster: LocalCluster,
    args: ClusterArgs,
    client: Client,
    started: Instant,
    tty: bool,
    /// Lines of the table drawn last (TTY mode), to redraw over them.
    drawn_lines: usize,
    views: BTreeMap<u64, NodeView>,
    leader: Option<(u64, u64)>,
    /// A kill whose failover is not yet seen: (node, when).
    pending_failover: Option<(u64, Instant)>,
    next_kill: Option<Instant>,
    kills: u64,
    last_plain_summary: String,
    last_plain_at: Instant,
    /// The dashboard's kill and restart requests (`--dashboard-controls`).
    control: Option<tokio::sync::mpsc::Receiver<ControlCall>>,
}

/// Runs the cluster until a signal or the duration ends.
pub(super) async fn run(
    cluster: LocalCluster,
    args: ClusterArgs,
    created: bool,
    control: Option<std::net::TcpListener>,
) -> anyhow::Result<ExitCode> {
    // Signal handlers first, so a Ctrl-C during startup still stops the
    // children we already started.
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sigint = signal(SignalKind::interrupt())?;
    let control_addr = control.as_ref().and_then(|l| l.local_addr().ok());
    let mut config = ClientConfig::new(cluster.endpoints());
    config.request_timeout = args.refresh.max(Duration::from_millis(500));
    config.connect_timeout = Duration::from_millis(200);
    config.retry_deadline = Duration::ZERO;
    config.tls = cluster.client_tls()?;
    let client = Client::new(config)?;
    let tty = !args.plain && std::io::stdout().is_terminal();
    let mut mon = Monitor {
        cluster,
        next_kill: None,
        args,
        client,
        started: Instant::now(),
        tty,
        drawn_lines: 0,
        views: BTreeMap::new(),
        leader: None,
        pending_failover: None,
        kills: 0,
        last_plain_summary: String::new(),
        last_plain_at: Instant::now(),
        control: control.map(control::serve).transpose()?,
    };
    mon.print_banner(created);
    if let Some(addr) = control_addr {
        println!("  launcher control endpoint: http://{addr}/v1/control (the dashboard's kill and restart)");
    }
    let started = tokio::select! {
        r = mon.start() => r,
        _ = sigint.recv() => Err(anyhow::anyhow!("interrupted while starting")),
        _ = sigterm.recv() => Err(anyhow::anyhow!("terminated while starting")),
    };
    if let Err(e) = started {
        mon.shutdown();
        return Err(e);
    }
    mon.print_usage();
    mon.next_kill = mon
        .args
        .kill_leader_every
        .map(|every| Instant::now() + every);
    let deadline = mon.args.duration.map(|d| Instant::now() + d);
    let reason = loop {
        mon.refresh().await;
        let sleep = tokio::time::sleep(mon.args.refresh);
        let call = tokio::select! {
            _ = sleep => None,
            call = next_call(&mut mon.control) => Some(call),
            _ = sigint.recv() => break "Ctrl-C",
            _ = sigterm.recv() => break "SIGTERM",
        };
        if let Some(call) = call {
            let answer = mon.on_control(call.request.node, call.request.action);
            // The asker may have given up; nothing to do then.
            let _ = call.reply.send(answer);
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            break "--duration elapsed";
        }
    };
    // Keep the last table on screen: the next lines go below it.
    mon.drawn_lines = 0;
    mon.event(&format!("{reason}: stopping the cluster"));
    mon.shutdown();
    Ok(ExitCode::SUCCESS)
}

/// The next dashboard request; never, without the controls.
async fn next_call(control: &mut Option<tokio::sync::mpsc::Receiver<ControlCall>>) -> ControlCall {
    match control {
        Some(rx) => match rx.recv().await {
            Some(call) => call,
            // The endpoint stopped: no more requests.
            None => std::future::pending().await,
        },
        None => std::future::pending().await,
    }
}

impl Monitor {
    /// Carries out a dashboard request: kill or restart node `id`.
    fn on_control(&mut self, id: u64, action: Action) -> Result<serde_json::Value, ApiError> {
        let known =
            (1..=self.cluster.manifest().nodes).contains(&id) || self.views.contains_key(&id);
        if !known {
            return Err(ApiError::BadRequest(format!(
                "this cluster has no node {id} (nodes 1 to {})",
                self.cluster.manifest().nodes
            )));
        }
        let message =
            match action {
                Action::Kill => {
                    if !self.cluster.kill(id) {
                        return Err(ApiError::BadRequest(format!("node {id} is not running")));
                    }
                    self.views.insert(id, NodeView::Stopped);
                    if self.leader.is_some_and(|(l, _)| l == id) {
                        self.pending_failover = Some((id, Instant::now()));
                        self.leader = None;
                    }
                    format!("killed node {id} with SIGKILL (dashboard)")
                }
                Action::Restart => {
                    if self.cluster.is_running(id) {
                        return Err(ApiError::BadRequest(format!(
                            "node {id} is already running"
                        )));
                    }
                    self.cluster.start_node(id).map_err(|e| {
                        ApiError::BadRequest(format!("cannot restart node {id}: {e:#}"))
                    })?;
                    self.views
                        .insert(id, NodeView::NoAnswer("restarting".into()));
                    format!("restarted node {id} (dashboard)")
                }
                Action::Isolate | Action::Heal => return Err(ApiError::BadRequest(
                    "isolate and heal are done by the node itself: POST /v1/dev/control to a node"
                        .into(),
                )),
            };
        self.event(&message);
        Ok(serde_json::json!({"node": id, "action": action, "message": message}))
    }

    fn elapsed(&self) -> String {
        format!("[{:>7.1}s]", self.started.elapsed().as_secs_f64())
    }

    fn print_banner(&self, created: bool) {
        let m = self.cluster.manifest();
        println!(
            "raftkv local cluster: {} nodes, cluster id {}, data in {} ({})",
            m.nodes,
            m.cluster_id,
            self.cluster.data_dir().display(),
            if created {
                "new"
            } else {
                "restarting from its data"
            }
        );
        for id in 1..=m.nodes {
            println!(
                "  node {id}: {}   (peers on {}, log {})",
                self.cluster.endpoint(id),
                m.peer_addr(id),
                self.cluster.log_path(id).display()
            );
        }
        if let Some(tls) = self.cluster.tls() {
            println!(
                "  TLS: HTTPS for clients, mutual TLS between peers; CA {} (for the CLI: --ca or RAFTKV_CA), certificates in {}",
                tls.ca_cert().display(),
                tls.dir().display()
            );
        }
        let _ = std::io::stdout().flush();
    }

    fn print_usage(&self) {
        let m = self.cluster.manifest();
        let endpoints = self.cluster.endpoints().join(",");
        let default = endpoints == crate::client::DEFAULT_ENDPOINTS;
        let ep = self.cluster.endpoint(1);
        println!();
        println!("The cluster is serving. Try, in another terminal:");
        if !default {
            println!("  export RAFTKV_ENDPOINTS={endpoints}");
        }
        // With TLS, curl needs the CA too (its own flag, not our variable).
        let mut curl = "curl".to_string();
        if let Some(tls) = self.cluster.tls() {
            let ca = tls.ca_cert();
            println!("  export RAFTKV_CA={}", ca.display());
            curl = format!("curl --cacert {}", ca.display());
        }
        println!("  raftkv put greeting hello");
        println!("  raftkv get greeting");
        println!("  raftkv status");
        println!("  {curl} -X PUT {ep}/v1/kv/greeting -d '{{\"value\": \"hello\"}}'");
        println!("  {curl} {}/v1/kv/greeting", self.cluster.endpoint(m.nodes));
        println!("  raftkv bench --clients 16 --duration 10s");
        println!(
            "Dashboard: {ep}/ (any node){}",
            if self.args.dashboard_controls {
                "; its kill, restart, isolate and transfer buttons are on \
                 (--dashboard-controls false turns them off)"
            } else {
                ""
            }
        );
        println!("Ctrl-C stops every node; the data stays in {} and the same command restarts the cluster.", self.cluster.data_dir().display());
        if let Some(every) = self.args.kill_leader_every {
            println!(
                "The leader is killed with SIGKILL every {:?} and restarted {:?} later.",
                every, self.args.restart_after
            );
        }
        println!();
        let _ = std::io::stdout().flush();
    }

    /// Starts every node and waits until each answers `/healthz`.
    async fn start(&mut self) -> anyhow::Result<()> {
        self.cluster.start_all()?;
        let deadline = Instant::now() + self.args.start_timeout;
        let nodes = self.cluster.manifest().nodes;
        let mut ready = vec![false; nodes as usize];
        loop {
            if let Some((id, status, ran)) = self.cluster.reap_exited().into_iter().next() {
                anyhow::bail!(
                    "node {id} exited during startup ({status}, after {:.1}s); last lines of {}:\n{}",
                    ran.as_secs_f64(),
                    self.cluster.log_path(id).display(),
                    self.cluster.log_tail(id, LOG_TAIL_LINES)
                );
            }
            for id in 1..=nodes {
                let slot = &mut ready[(id - 1) as usize];
                if !*slot {
                    *slot = self.client.healthy(&self.cluster.endpoint(id)).await;
                }
            }
            if ready.iter().all(|r| *r) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                let waiting: Vec<String> = ready
                    .iter()
                    .enumerate()
                    .filter(|(_, r)| !**r)
                    .map(|(i, _)| (i + 1).to_string())
                    .collect();
                anyhow::bail!(
                    "node(s) {} did not start serving within {:?}; see their server.log under {}",
                    waiting.join(", "),
                    self.args.start_timeout,
                    self.cluster.data_dir().display()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// One refresh: reap, poll, kill/restart, report, draw.
    async fn refresh(&mut self) {
        let nodes = self.cluster.manifest().nodes;
        // Restarts that are due.
        let due: Vec<u64> = self
            .views
            .iter()
            .filter_map(|(id, v)| match v {
                NodeView::Killed { restart_at } if Instant::now() >= *restart_at => Some(*id),
                _ => None,
            })
            .collect();
        for id in due {
            match self.cluster.start_node(id) {
                Ok(()) => {
                    self.views
                        .insert(id, NodeView::NoAnswer("restarting".into()));
                    self.event(&format!("restarted node {id}"));
                }
                Err(e) => {
                    self.views
                        .insert(id, NodeView::Exited(format!("restart failed: {e}")));
                    self.event(&format!("could not restart node {id}: {e:#}"));
                }
            }
        }
        for (id, status, _) in self.cluster.reap_exited() {
            self.views.insert(id, NodeView::Exited(status.to_string()));
            let tail = self.cluster.log_tail(id, LOG_TAIL_LINES);
            self.event(&format!(
                "node {id} exited by itself ({status}); last lines of {}:\n{tail}",
                self.cluster.log_path(id).display()
            ));
        }
        // Poll every running node concurrently.
        let endpoints: Vec<(u64, String)> = (1..=nodes)
            .filter(|id| {
                !matches!(
                    self.views.get(id),
                    Some(NodeView::Killed { .. } | NodeView::Stopped | NodeView::Exited(_))
                )
            })
            .map(|id| (id, self.cluster.endpoint(id)))
            .collect();
        let mut set = tokio::task::JoinSet::new();
        for (id, ep) in endpoints {
            let client = self.client.clone();
            set.spawn(async move { (id, client.status_of(&ep).await) });
        }
        while let Some(joined) = set.join_next().await {
            let Ok((id, result)) = joined else { continue };
            let view = match result {
                Ok(s) => NodeView::Up(s),
                Err(e) => NodeView::NoAnswer(match e {
                    crate::client::ClientError::Unreachable { .. } => "not listening".into(),
                    crate::client::ClientError::NotRaftkv {
                        status,
                        content_type,
                        ..
                    } => format!("another program answers on its port: {status} {content_type}"),
                    // `not_applied:timeout`, `indeterminate:fatal`...
                    other => other.kind(),
                }),
            };
            self.views.insert(id, view);
        }
        self.track_leader();
        self.maybe_kill_leader();
        self.draw();
    }

    /// The leader: a node that says it leads, in the highest such term.
    fn current_leader(&self) -> Option<(u64, u64)> {
        self.views
            .values()
            .filter_map(|v| match v {
                NodeView::Up(s) if s.role == "leader" => Some((s.id, s.term)),
                _ => None,
            })
            .max_by_key(|(_, term)| *term)
    }

    fn track_leader(&mut self) {
        let now = self.current_leader();
        if now == self.leader {
            return;
        }
        match now {
            Some((id, term)) => {
                let mut line = format!("node {id} is the leader (term {term})");
                if let Some((killed, at)) = self.pending_failover.take() {
                    let _ = write!(
                        line,
                        ", {:.2}s after node {killed} was killed",
                        at.elapsed().as_secs_f64()
                    );
                }
                self.event(&line);
            }
            None => {
                if let Some((id, term)) = self.leader {
                    self.event(&format!("no leader (node {id} led term {term})"));
                }
            }
        }
        self.leader = now;
    }

    fn maybe_kill_leader(&mut self) {
        let (Some(every), Some(at)) = (self.args.kill_leader_every, self.next_kill) else {
            return;
        };
        if Instant::now() < at {
            return;
        }
        // Only one node down at a time, so the cluster keeps a quorum.
        let any_down = self
            .views
            .values()
            .any(|v| matches!(v, NodeView::Killed { .. } | NodeView::Stopped));
        let Some((id, term)) = self.leader else {
            return;
        };
        if any_down {
            return;
        }
        if self.cluster.kill(id) {
            self.kills += 1;
            let restart_at = Instant::now() + self.args.restart_after;
            self.views.insert(id, NodeView::Killed { restart_at });
            self.pending_failover = Some((id, Instant::now()));
            self.event(&format!(
                "killed the leader, node {id} (term {term}), with SIGKILL; restarting it in {:.1}s",
                self.args.restart_after.as_secs_f64()
            ));
            self.leader = None;
        }
        self.next_kill = Some(Instant::now() + every);
    }

    /// Prints a timestamped event line (above the table in TTY mode).
    fn event(&mut self, text: &str) {
        let mut out = std::io::stdout().lock();
        if self.tty && self.drawn_lines > 0 {
            // Erase the table; it is redrawn below the event.
            let _ = write!(out, "\x1b[{}A\r\x1b[J", self.drawn_lines);
            self.drawn_lines = 0;
        }
        let _ = writeln!(out, "{} {text}", self.elapsed());
        let _ = out.flush();
    }

    fn draw(&mut self) {
        if self.tty {
            // Lines longer than the terminal would wrap and break the
            // cursor-up redraw: cut them to its width.
            let width = terminal_width()
                .unwrap_or(usize::MAX)
                .saturating_sub(1)
                .max(20);
            let table: String = self
                .table()
                .lines()
                .map(|l| format!("{}\n", l.chars().take(width).collect::<String>()))
                .collect();
            let mut out = std::io::stdout().lock();
            if self.drawn_lines > 0 {
                let _ = write!(out, "\x1b[{}A\r\x1b[J", self.drawn_lines);
            }
            let _ = write!(out, "{table}");
            let _ = out.flush();
            self.drawn_lines = table.lines().count();
        } else {
            let summary: Vec<String> = self
                .views
                .iter()
                .map(|(id, v)| format!("{id}={}", v.summary()))
                .collect();
            let summary = summary.join(" ");
            if summary != self.last_plain_summary
                || self.last_plain_at.elapsed() >= PLAIN_STATUS_EVERY
            {
                let commit = self
                    .views
                    .values()
                    .filter_map(|v| match v {
                        NodeView::Up(s) => Some(s.commit_index),
                        _ => None,
                    })
                    .max()
                    .unwrap_or(0);
                let line = format!("{} status: {summary} commit={commit}", self.elapsed());
                println!("{line}");
                let _ = std::io::stdout().flush();
                self.last_plain_summary = summary;
                self.last_plain_at = Instant::now();
            }
        }
    }

    /// The table: one line per node. The client port stands for the
    /// endpoint (the banner lists them) so a line fits 80 columns.
    fn table(&mut self) -> String {
        let m = self.cluster.manifest().clone();
        let mut out = String::new();
        let leader = match self.leader {
            Some((id, term)) => format!("node {id} (term {term})"),
            None => "none".into(),
        };
        let _ = writeln!(
            out,
            "{} leader: {leader}   kills: {}   Ctrl-C to stop",
            self.elapsed(),
            self.kills
        );
        let _ = writeln!(
            out,
            "  {:>4} {:>6} {:>7}  {:<13} {:>5} {:>6} {:>9} {:>9} {:>9}",
            "NODE", "PORT", "PID", "ROLE", "TERM", "LEADER", "COMMIT", "APPLIED", "LAST"
        );
        for id in 1..=m.nodes {
            let pid = self
                .cluster
                .pid(id)
                .map(|p| p.to_string())
                .unwrap_or_else(|| "-".into());
            let port = m.client_port(id);
            let prefix = format!("  {id:>4} {port:>6} {pid:>7}  ");
            let _ = match self.views.get(&id) {
                Some(NodeView::Up(s)) => writeln!(
                    out,
                    "{prefix}{:<13} {:>5} {:>6} {:>9} {:>9} {:>9}",
                    role_of(s),
                    s.term,
                    s.leader
                        .map(|l| l.to_string())
                        .unwrap_or_else(|| "-".into()),
                    s.commit_index,
                    s.applied_index,
                    s.last_index
                ),
                Some(NodeView::NoAnswer(why)) => writeln!(out, "{prefix}no answer ({why})"),
                Some(NodeView::Killed { restart_at }) => writeln!(
                    out,
                    "{prefix}DOWN: killed, restarting in {:.1}s",
                    restart_at
                        .saturating_duration_since(Instant::now())
                        .as_secs_f64()
                ),
                Some(NodeView::Stopped) => {
                    writeln!(out, "{prefix}DOWN: killed from the dashboard")
                }
                Some(NodeView::Exited(why)) => writeln!(out, "{prefix}DOWN: exited ({why})"),
                None => writeln!(out, "{prefix}starting"),
            };
        }
        out
    }

    /// Stops every node: SIGTERM, wait, SIGKILL after the grace period.
    fn shutdown(&mut self) {
        if self.tty && self.drawn_lines > 0 {
            // Leave the last table on screen.
            self.drawn_lines = 0;
        }
        let running = self.cluster.running();
        if running.is_empty() {
            return;
        }
        println!(
            "stopping {} node(s) (SIGTERM, SIGKILL after {:?})...",
            running.len(),
            self.args.stop_grace
        );
        let results = self.cluster.stop_all(self.args.stop_grace);
        for (id, status) in results {
            match status {
                Some(s) if s.success() => println!("  node {id} stopped"),
                Some(s) => println!(
                    "  node {id} stopped ({s}); see {}",
                    self.cluster.log_path(id).display()
                ),
                None => println!("  node {id} did not stop in time: killed with SIGKILL"),
            }
        }
        println!(
            "cluster stopped; data kept in {} (run the same command to restart it)",
            self.cluster.data_dir().display()
        );
        let _ = std::io::stdout().flush();
    }
}

/// Columns of the terminal on stdout, if it is one.
fn terminal_width() -> Option<usize> {
    let mut ws = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes one `winsize` into the pointer we pass,
    // which points at a live, properly aligned local.
    let rc = unsafe { libc::ioctl(libc::STDOUT_FILENO, libc::TIOCGWINSZ, &mut ws) };
    (rc == 0 && ws.ws_col > 0).then_some(usize::from(ws.ws_col))
}
