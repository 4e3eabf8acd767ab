//! Starting one node (storage, transport, Raft driver, HTTP server), the
//! background tasks that keep it wired together, and stopping it.
//!
//! Startup order, each step failing with a clear message and nothing left
//! half-started:
//!
//! 0. with `--tls-*`, load and check the certificates (key matches, chains
//!    to the CA, names `raft-node-<id>`); then
//!    lock the data directory (`LOCK`, see [`super::lock`]) before anything
//!    else touches it; a directory another process holds is refused with
//!    the holder's pid, and nothing in it is changed;
//! 1. open (or bootstrap) the data directory; a directory of another
//!    cluster or node is refused;
//! 2. bind the client listener, then start the peer transport (binds the
//!    peer port), so a port in use is reported before anything runs;
//! 3. start the Raft driver over the store, the transport and a fresh
//!    [`ServerState`] (restored from the latest snapshot by the driver);
//! 4. spawn the background tasks, print the "serving" line, serve HTTP.
//!
//! With TLS, SIGHUP reloads the certificate, key and CA files: new client
//! and peer connections, and forwarded requests, use them; a reload that
//! fails is logged and changes nothing.
//!
//! Shutdown (SIGTERM, Ctrl-C, or the driver stopping on a fatal error):
//! stop accepting, drain HTTP connections, then stop the driver, which
//! finishes queued disk writes before returning.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use raft_core::{Membership, NodeId};
use raft_runtime::tls::peer_name;
use raft_runtime::{
    Metrics, PeerAddr, PeerTls, RaftHandle, RuntimeConfig, TcpConfig, TcpTransport, TlsCerts,
};
use raft_storage::{OpenError, RealDisk, Store, StoreConfig};
use raftkv_mvcc::MvccOptions;
use raftkv_state::KvConfig;
use tokio::sync::watch;
use tracing::{error, info, warn};

use super::app::{App, RequestIds};
use super::config::StateEngine;
use super::config::{LogFormat, ServerConfig};
use super::isolate::Isolation;
use super::listener::{self, ListenerLimits};
use super::lock::lock_data_dir;
use super::metrics::HttpMetrics;
use super::routes;
use super::state::{AddressBook, MemberAddrs, MemberOp, ServerCommand, ServerState};

/// The durable key-value state's directory inside the data directory (the
/// Raft log's files are beside it, and raft-storage leaves it alone).
pub const STATE_DIR: &str = "kv";
/// The durable key-value state's engine file in [`STATE_DIR`].
pub const STATE_FILE: &str = "state.redb";

/// How long shutdown waits for open HTTP connections to finish.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
/// A keep-alive connection idle this long is closed (frees its slot).
const IDLE_TIMEOUT_MIN: Duration = Duration::from_secs(30);
/// How often the founding-address task looks for missing addresses.
const RECONCILE_INTERVAL: Duration = Duration::from_secs(1);
/// Per-entry overhead allowed on top of key and value in a command.
const COMMAND_OVERHEAD_BYTES: u64 = 4096;

/// Runs a node until shutdown. `Ok(SUCCESS)` after a clean stop,
/// `Ok(FAILURE)` if the driver stopped on a fatal error.
pub async fn run(cfg: ServerConfig) -> anyhow::Result<ExitCode> {
    let id = cfg.id;
    // Certificates first: a wrong file is a startup error before anything
    // is touched.
    let certs = match &cfg.tls {
        Some(tls) => Some(
            TlsCerts::load(tls.files.clone(), Some(peer_name(id))).context(
                "cannot use the TLS certificates (--tls-cert, --tls-key, --tls-ca; \
                     `raftkv certs init` makes a CA and node certificates)",
            )?,
        ),
        None => None,
    };
    // 0. The data directory's lock, held until this function returns (after
    //    the driver stopped and its writer finished).
    let dir_lock = {
        let dir = cfg.data_dir.clone();
        tokio::task::spawn_blocking(move || lock_data_dir(&dir))
            .await
            .context("lock task panicked")??
    };
    // 1. Storage.
    let membership = if cfg.join {
        Membership::default()
    } else {
        Membership::new_voters(cfg.peers.keys().copied())
    };
    let store = {
        let (dir, cluster_id) = (cfg.data_dir.clone(), cfg.cluster_id);
        tokio::task::spawn_blocking(move || {
            Store::open_or_bootstrap(
                RealDisk,
                dir,
                cluster_id,
                id,
                membership,
                StoreConfig::default(),
            )
        })
        .await
        .context("storage task panicked")?
        .map_err(|e| open_error(&cfg, e))?
    };
    // Each field on its own (no Debug structs: JSON logs stay flat).
    let report = store.recovery_report();
    info!(
        node = id,
        dir = %cfg.data_dir.display(),
        segments = report.segments,
        bytes_scanned = report.bytes_scanned,
        records = report.records,
        torn_tail = report.torn_tail.is_some(),
        removed_files = report.removed.len(),
        "data directory open"
    );
    if let Some((file, offset, cut)) = &report.torn_tail {
        warn!(
            file = %file.display(),
            offset,
            bytes_cut = cut,
            "the log ended in a record never completely written (not synced before a crash); cut it off"
        );
    }
    for file in &report.removed {
        info!(file = %file.display(), "removed a leftover file");
    }

    // 2. Listeners.
    let client_listener = listener::bind(listen_addr(&cfg.listen_client).await?)
        .await
        .with_context(|| format!("cannot listen for clients on {}", cfg.listen_client))?;
    let client_addr = client_listener.local_addr()?;
    let kv_config = KvConfig {
        key_bytes_max: cfg.max_key_bytes,
        value_bytes_max: cfg.max_value_bytes,
        ..KvConfig::default()
    };
    kv_config.validate().context("invalid key-value limits")?;
    let entry_bytes_max =
        (1u64 << 20).max(cfg.max_key_bytes + cfg.max_value_bytes + COMMAND_OVERHEAD_BYTES);
    let raft_metrics = Metrics::new();
    let mut tcp = TcpConfig::new(cfg.cluster_id, id, listen_addr(&cfg.listen_peer).await?);
    tcp.peers = cfg.peers.clone();
    if let Some(certs) = &certs {
        tcp.tls = Some(PeerTls::new(certs.clone()).context("cannot configure peer TLS")?);
    }
    if cfg.join {
        // The transport accepts connections only from peers it knows, so a
        // joining node must know every current member before the leader
        // reaches out, including members added after the founding ones.
        for (peer, addr) in discover_peers(&cfg, certs.as_ref()).await {
            if peer != id {
                tcp.peers.insert(peer, addr);
            }
        }
    }
    // A frame must hold a full append batch of the largest entries.
    tcp.max_frame_bytes =
        u32::try_from((64u64 << 20).max(2 * entry_bytes_max + (1 << 20))).unwrap_or(u32::MAX);
    let inbound_queue_max = tcp.inbound_queue_max;
    let (transport, inbound) = TcpTransport::start(tcp, raft_metrics.clone())
        .await
        .with_context(|| format!("cannot listen for peers on {}", cfg.listen_peer))?;
    let peer_addr = transport.local_addr();

    // 3. The Raft driver.
    let mut rc = RuntimeConfig::new(id);
    rc.tick_interval = cfg.tick;
    rc.propose_timeout = cfg.request_timeout;
    rc.read_timeout = cfg.request_timeout;
    rc.admin_timeout = cfg.request_timeout;
    rc.raft.max_entry_bytes = entry_bytes_max;
    rc.raft.max_append_bytes = rc.raft.max_append_bytes.max(entry_bytes_max);
    rc.snapshot_trigger_entries = cfg.snapshot_entries;
    let (state, book) = match cfg.state_engine {
        StateEngine::Memory => {
            ServerState::new(kv_config.clone()).context("invalid key-value limits")?
        }
        StateEngine::Durable => {
            // Checkpoints by entries or by bytes applied, whichever comes
            // first: the bytes bound each checkpoint's flush whatever the
            // value size.
            rc.snapshot_trigger_bytes = cfg.checkpoint_bytes;
            let dir = cfg.data_dir.join(STATE_DIR);
            let file = dir.join(STATE_FILE);
            let kv_config = kv_config.clone();
            tokio::task::spawn_blocking(move || {
                std::fs::create_dir_all(&dir)
                    .with_context(|| format!("cannot create {}", dir.display()))?;
                ServerState::open_durable(&file, kv_config, MvccOptions::default())
                    .with_context(|| format!("cannot open the key-value state {}", file.display()))
            })
            .await
            .context("state open task panicked")??
        }
    };
    info!(
        node = id,
        engine = ?cfg.state_engine,
        applied_index = raft_core::StateMachine::applied_index(&state),
        "key-value state open"
    );
    let isolation = Isolation::new();
    let raft = if cfg.dashboard_controls {
        // The dashboard's "isolate" needs a switch in the message path.
        let (transport, inbound) = isolation.wrap(transport, inbound, inbound_queue_max);
        raft_runtime::start(
            rc,
            Arc::new(store),
            state,
            transport,
            inbound,
            raft_metrics.clone(),
        )
    } else {
        raft_runtime::start(
            rc,
            Arc::new(store),
            state,
            transport,
            inbound,
            raft_metrics.clone(),
        )
    }
    .context("cannot start the Raft node")?;

    // 4. Background tasks and HTTP.
    let http_metrics = HttpMetrics::new();
    let mut registry = prometheus_client::registry::Registry::default();
    raft_metrics.register(&mut registry);
    http_metrics.register(&mut registry);
    // Forwarding to the leader: over HTTPS with TLS on, presenting this
    // node's certificate (the leader may require client certificates).
    let http = http_client(certs.as_ref(), cfg.request_timeout)
        .context("cannot build the forwarding HTTP client")?;
    let tls_acceptor = match (&certs, &cfg.tls) {
        (Some(certs), Some(tls)) => {
            let mut server = certs
                .server_config(tls.client_auth)
                .context("cannot configure the client API's TLS")?;
            // The API speaks HTTP/1.1 only.
            server.alpn_protocols = vec![b"http/1.1".to_vec()];
            Some(tokio_rustls::TlsAcceptor::from(Arc::new(server)))
        }
        _ => None,
    };
    let limits = ListenerLimits {
        max_connections: cfg.max_connections,
        idle_timeout: IDLE_TIMEOUT_MIN.max(cfg.request_timeout),
        drain_timeout: DRAIN_TIMEOUT,
    };
    let app = Arc::new(App {
        cfg: cfg.clone(),
        raft: raft.clone(),
        kv_config,
        http,
        metrics: http_metrics.clone(),
        registry,
        request_ids: RequestIds::new(id),
        isolation,
    });
    let (stop_tx, stop_rx) = watch::channel(false);
    let (fatal_tx, fatal_rx) = watch::channel(None::<String>);
    let mut tasks = vec![
        tokio::spawn(sync_addresses(raft.clone(), book, stop_rx.clone())),
        tokio::spawn(reconcile_founding_addresses(app.clone(), stop_rx.clone())),
        tokio::spawn(watch_fatal(raft.clone(), fatal_tx, stop_rx.clone())),
    ];
    if let Some(certs) = &certs {
        // Before the "serving" line, like the other handlers: a SIGHUP sent
        // right after it must not kill the node (SIGHUP's default action).
        let hangups = hangup_signal().context("cannot install the SIGHUP handler")?;
        tasks.push(tokio::spawn(reload_on_sighup(
            hangups,
            certs.clone(),
            http_metrics.clone(),
            stop_rx.clone(),
        )));
    }

    // Install the signal handlers before announcing readiness, so that a
    // SIGTERM sent right after the "serving" line is never fatal.
    let signals = Signals::install().context("cannot install signal handlers")?;
    // In JSON mode stderr holds only JSON lines, so the announcement is the
    // log line's message (same words, which scripts wait for); in text mode
    // it is also printed plainly, whatever the log filter.
    let tls_note = match &cfg.tls {
        Some(t) if t.client_auth => ", TLS with client certificates",
        Some(_) => ", TLS",
        None => "",
    };
    let serving = format!(
        "raftkv node {id} serving clients on {}://{client_addr} (peers on {peer_addr}{tls_note})",
        cfg.scheme()
    );
    if cfg.log_format == LogFormat::Text {
        eprintln!("{serving}");
        info!(node = id, %client_addr, %peer_addr, join = cfg.join, "serving");
    } else {
        info!(node = id, %client_addr, %peer_addr, join = cfg.join, "{serving}");
    }

    listener::run(
        client_listener,
        routes::ApiService::new(app),
        limits,
        http_metrics,
        tls_acceptor,
        shutdown_signal(signals, fatal_rx.clone()),
    )
    .await;

    // Stop the helpers, then the driver (it finishes queued disk writes).
    let _ = stop_tx.send(true);
    for t in tasks {
        let _ = t.await;
    }
    let fatal = fatal_rx.borrow().clone();
    if let Err(e) = raft.shutdown().await {
        warn!(error = %e, "raft node did not stop cleanly");
    }
    // Only now may another process take the directory.
    drop(dir_lock);
    match fatal {
        Some(reason) => {
            error!(%reason, "node stopped on a fatal error");
            if cfg.log_format == LogFormat::Text {
                eprintln!("error: raftkv node {id} stopped on a fatal error: {reason}");
            }
            Ok(ExitCode::FAILURE)
        }
        None => {
            info!(node = id, "stopped");
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// The address to bind for a `--listen-*` setting: the literal IP, or what
/// the name resolves to now (a listener binds once): its first IPv4
/// address if it has one (`localhost` often resolves to `::1` first, but
/// most clients and peers try IPv4 too), else its first address.
async fn listen_addr(addr: &PeerAddr) -> anyhow::Result<SocketAddr> {
    let found = addr
        .resolve()
        .await
        .with_context(|| format!("cannot resolve the listen address {addr}"))?;
    found
        .iter()
        .find(|a| a.is_ipv4())
        .or_else(|| found.first())
        .copied()
        .with_context(|| format!("{addr} resolves to no address"))
}

/// An HTTP client for talking to other nodes' client APIs: with TLS, it
/// verifies them against the cluster CA and presents this node's
/// certificate (both reloaded on SIGHUP).
fn http_client(
    certs: Option<&Arc<TlsCerts>>,
    timeout: Duration,
) -> anyhow::Result<reqwest::Client> {
    let mut builder = reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(Duration::from_secs(1));
    if let Some(certs) = certs {
        builder = builder.use_preconfigured_tls(certs.client_config()?);
    }
    Ok(builder.build()?)
}

/// Reloads the certificates on every SIGHUP until stopped.
async fn reload_on_sighup(
    mut hangups: Hangups,
    certs: Arc<TlsCerts>,
    metrics: HttpMetrics,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            () = hangups.recv() => {}
            () = stopped(&mut stop) => return,
        }
        let files = certs.files().clone();
        let certs = certs.clone();
        // Reading files: off the async threads.
        let result = tokio::task::spawn_blocking(move || certs.reload()).await;
        match result {
            Ok(Ok(())) => {
                metrics.tls_reloaded(true);
                info!(cert = %files.cert.display(), key = %files.key.display(), ca = %files.ca.display(),
                    "SIGHUP: TLS certificates reloaded; new connections use them");
            }
            Ok(Err(e)) => {
                metrics.tls_reloaded(false);
                error!(error = %e, "SIGHUP: TLS certificates not reloaded; still using the previous ones");
            }
            Err(e) => {
                metrics.tls_reloaded(false);
                error!(error = %e, "SIGHUP: the reload task failed; still using the previous certificates");
            }
        }
    }
}

/// SIGHUP, as a stream.
struct Hangups {
    #[cfg(unix)]
    signal: tokio::signal::unix::Signal,
}

fn hangup_signal() -> std::io::Result<Hangups> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Hangups {
            signal: signal(SignalKind::hangup())?,
        })
    }
    #[cfg(not(unix))]
    Ok(Hangups {})
}

impl Hangups {
    async fn recv(&mut self) {
        #[cfg(unix)]
        {
            if self.signal.recv().await.is_none() {
                std::future::pending::<()>().await;
            }
        }
        #[cfg(not(unix))]
        std::future::pending::<()>().await
    }
}

/// Asks the `--clients` endpoints for the current members' peer addresses
/// (`GET /v1/members`), best effort: the first answer wins; unreachable
/// endpoints are skipped (the `--peers` list still applies).
async fn discover_peers(
    cfg: &ServerConfig,
    certs: Option<&Arc<TlsCerts>>,
) -> BTreeMap<NodeId, PeerAddr> {
    #[derive(serde::Deserialize)]
    struct Member {
        id: NodeId,
        peer_addr: Option<PeerAddr>,
    }
    #[derive(serde::Deserialize)]
    struct Members {
        members: Vec<Member>,
    }
    let http = match http_client(certs, Duration::from_secs(2)) {
        Ok(h) => h,
        Err(e) => {
            warn!(error = %e, "cannot build an HTTP client to discover the cluster's peers");
            return BTreeMap::new();
        }
    };
    for (node, addr) in &cfg.clients {
        if *node == cfg.id {
            continue;
        }
        let url = format!("{}://{addr}/v1/members", cfg.scheme());
        match http.get(&url).send().await {
            Ok(r) if r.status().is_success() => match r.json::<Members>().await {
                Ok(m) => {
                    let found: BTreeMap<NodeId, PeerAddr> = m
                        .members
                        .into_iter()
                        .filter_map(|m| Some((m.id, m.peer_addr?)))
                        .collect();
                    info!(from = %addr, members = %addr_list(&found), "discovered the cluster's peers");
                    return found;
                }
                Err(e) => warn!(%url, error = %e, "unreadable member list"),
            },
            Ok(r) => warn!(%url, status = %r.status(), "member list refused"),
            Err(e) => warn!(%url, error = %e, "cannot ask for the member list"),
        }
    }
    BTreeMap::new()
}

/// `1=127.0.0.1:7800,2=...`, as the flags take it (for log fields).
fn addr_list<A: std::fmt::Display>(addrs: &BTreeMap<NodeId, A>) -> String {
    addrs
        .iter()
        .map(|(id, a)| format!("{id}={a}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// A clear startup error for a data directory that cannot be used.
fn open_error(cfg: &ServerConfig, e: OpenError) -> anyhow::Error {
    let dir = cfg.data_dir.display();
    match e {
        OpenError::WrongCluster { found, expected, .. } => anyhow::anyhow!(
            "data directory {dir} belongs to cluster {found}, but this node was started with --cluster-id {expected}; \
             point --data-dir at this node's own directory (or an empty one)"
        ),
        OpenError::WrongNode { found, expected, .. } => anyhow::anyhow!(
            "data directory {dir} belongs to node {found}, but this node was started with --id {expected}; \
             point --data-dir at this node's own directory (or an empty one)"
        ),
        other => anyhow::Error::new(other).context(format!("cannot open data directory {dir}")),
    }
}

/// The process's SIGTERM and SIGINT (Ctrl-C) streams. Installing them
/// replaces the default action (immediate exit) with a graceful shutdown.
struct Signals {
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> std::io::Result<Signals> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            Ok(Signals {
                terminate: signal(SignalKind::terminate())?,
                interrupt: signal(SignalKind::interrupt())?,
            })
        }
        #[cfg(not(unix))]
        Ok(Signals {})
    }

    async fn recv(mut self) -> &'static str {
        #[cfg(unix)]
        {
            tokio::select! {
                _ = self.terminate.recv() => "SIGTERM",
                _ = self.interrupt.recv() => "Ctrl-C",
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
            "Ctrl-C"
        }
    }
}

/// Completes on SIGTERM, Ctrl-C (SIGINT), or when the driver stops on a
/// fatal error.
async fn shutdown_signal(signals: Signals, mut fatal: watch::Receiver<Option<String>>) {
    let fatal = async {
        // Resolves once a reason is recorded (or the sender is gone).
        let _ = fatal.wait_for(Option::is_some).await;
    };
    tokio::select! {
        which = signals.recv() => info!("{which} received; shutting down"),
        () = fatal => error!("the Raft node stopped; shutting down"),
    }
}

/// Waits for a stop request.
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// Hands the replicated address book to the transport.
///
/// The state machine publishes the whole book after each change (it cannot
/// call the driver itself: it runs inside it). This task diffs it against
/// what it told the transport so far and calls `set_peer_addr` for every
/// new, moved or removed member. Founding peers from `--peers` were given to
/// the transport at start and are only touched if the book changes them.
async fn sync_addresses(
    raft: RaftHandle<ServerState>,
    mut book: AddressBook,
    mut stop: watch::Receiver<bool>,
) {
    let mut told: BTreeMap<NodeId, PeerAddr> = BTreeMap::new();
    loop {
        let current: BTreeMap<NodeId, PeerAddr> = book
            .borrow_and_update()
            .iter()
            .map(|(id, a)| (*id, a.peer_addr.clone()))
            .collect();
        let mut failed = false;
        for (id, addr) in &current {
            if told.get(id) != Some(addr) {
                match raft.set_peer_addr(*id, Some(addr.clone())).await {
                    Ok(()) => {
                        info!(peer = id, %addr, "peer address set");
                        told.insert(*id, addr.clone());
                    }
                    Err(e) => {
                        warn!(peer = id, error = %e, "cannot set peer address; will retry");
                        failed = true;
                    }
                }
            }
        }
        let gone: Vec<NodeId> = told
            .keys()
            .filter(|id| !current.contains_key(id))
            .copied()
            .collect();
        for id in gone {
            match raft.set_peer_addr(id, None).await {
                Ok(()) => {
                    info!(peer = id, "peer address forgotten");
                    told.remove(&id);
                }
                Err(e) => {
                    warn!(peer = id, error = %e, "cannot forget peer address; will retry");
                    failed = true;
                }
            }
        }
        if raft.is_stopped() {
            return;
        }
        if failed {
            tokio::select! {
                () = tokio::time::sleep(Duration::from_millis(100)) => continue,
                () = stopped(&mut stop) => return,
            }
        }
        tokio::select! {
            changed = book.changed() => if changed.is_err() { return },
            () = stopped(&mut stop) => return,
        }
    }
}

/// Puts the founding members' addresses (from `--peers`/`--clients`) into
/// the replicated address book.
///
/// Every node is started with the founding list, but a node added later
/// only learns addresses from the log. So whenever this node leads, it
/// proposes a `MemberOp::Set` for each current member that the book lacks
/// and whose two addresses the flags give. It only fills gaps: it never
/// overwrites an entry, and never adds one for a node that is no longer a
/// member (removal changes the configuration first, then the book).
async fn reconcile_founding_addresses(app: Arc<App>, mut stop: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(RECONCILE_INTERVAL) => {}
            () = stopped(&mut stop) => return,
        }
        if app.raft.is_stopped() {
            return;
        }
        if !app.is_leader() {
            continue;
        }
        let Ok(st) = app.raft.status().await else {
            continue;
        };
        let missing: Vec<(NodeId, MemberAddrs)> = {
            let sm = app
                .raft
                .state_machine()
                .read()
                // Readers cannot leave the state half-updated; see the runtime.
                .unwrap_or_else(|e| e.into_inner());
            st.membership
                .members()
                .into_iter()
                .filter(|id| !sm.members().contains_key(id))
                .filter_map(|id| {
                    let own = |a: &PeerAddr| (id == app.cfg.id).then(|| a.clone());
                    let peer_addr = app
                        .cfg
                        .peers
                        .get(&id)
                        .cloned()
                        .or_else(|| own(&app.cfg.listen_peer))?;
                    let client_addr = app
                        .cfg
                        .clients
                        .get(&id)
                        .cloned()
                        .or_else(|| own(&app.cfg.listen_client))?;
                    Some((
                        id,
                        MemberAddrs {
                            peer_addr,
                            client_addr,
                        },
                    ))
                })
                .collect()
        };
        for (id, addrs) in missing {
            let cmd = ServerCommand::Members(MemberOp::Set {
                id,
                addrs: addrs.clone(),
            });
            match app.propose(&cmd).await {
                Ok(_) => info!(
                    node = id,
                    peer_addr = %addrs.peer_addr,
                    client_addr = %addrs.client_addr,
                    "founding member's addresses replicated"
                ),
                Err(e) => {
                    warn!(node = id, error = %e, "cannot replicate founding addresses yet");
                    break;
                }
            }
        }
    }
}

/// Notices the driver stopping on its own (a fatal storage or state machine
/// error) and records why, which triggers shutdown.
async fn watch_fatal(
    raft: RaftHandle<ServerState>,
    fatal: watch::Sender<Option<String>>,
    mut stop: watch::Receiver<bool>,
) {
    tokio::select! {
        // A requested stop first: the driver then stops because we asked.
        biased;
        () = stopped(&mut stop) => {}
        reason = raft.stopped() => {
            let reason =
                reason.unwrap_or_else(|| "the Raft driver stopped unexpectedly".to_string());
            fatal.send_replace(Some(reason));
        }
    }
}
