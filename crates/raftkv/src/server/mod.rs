//! `raftkv serve`: one node of a replicated key-value store.
//!
//! # Map of the module
//!
//! | file            | what it does                                                   |
//! |-----------------|----------------------------------------------------------------|
//! | `config.rs`     | flags + `RAFTKV_*` env + TOML file + defaults → [`ServerConfig`] |
//! | `node.rs`       | startup order, background tasks, shutdown                      |
//! | `state.rs`      | [`ServerState`]: the replicated state machine (key-value store + member addresses) |
//! | `listener.rs`   | accept loop: connection limit, graceful drain                  |
//! | `lock.rs`       | the exclusive lock on the data directory (`LOCK`)              |
//! | `routes/`       | one file per route, the router, timeout and metrics layers    |
//! | `app.rs`        | shared handler state; the write path and the read path        |
//! | `forward.rs`    | follower → leader forwarding (one hop)                         |
//! | `isolate.rs`    | the dashboard's "isolate" switch between the driver and the transport |
//! | `extract.rs`    | extractors that answer bad input with JSON errors             |
//! | `error.rs`      | [`ApiError`]: the error contract (codes, reasons, statuses) and the runtime error mapping |
//! | `metrics.rs`    | HTTP metrics next to the runtime's; build info; `process_*`   |
//!
//! # A request's life
//!
//! `PUT /v1/kv/k` on a follower: the accept loop hands the connection to
//! hyper; [`routes::ApiService`] notes the request id (or makes one) and
//! will stamp it and this node's id on the answer; the router matches the
//! route; the timeout layer starts the clock;
//! the extractors read the key, the query (refusing parameters the route
//! does not take) and at most `--max-body-bytes` of body; the handler builds a [`raftkv_state::Command`], checks it against
//! the key and value limits (413), and proposes it. The runtime answers
//! `NotLeader { leader_hint: 2 }` without appending anything, so the handler
//! replays the request to node 2's client address with
//! `x-raftkv-forwarded: 1` and relays node 2's answer. On node 2 the same
//! handler proposes; the entry commits once a majority has it durably on
//! disk; the driver applies it to [`ServerState`]; the proposal resolves
//! with the store's answer, which becomes the JSON body.
//!
//! # Consistency of reads
//!
//! `GET` defaults to linearizable: the leader confirms it still leads with
//! a heartbeat round (ReadIndex) and waits until it has applied up to the
//! commit index it saw, then reads its store. `consistency=lease` skips the
//! round trip while the leader's lease is valid (relies on bounded clock
//! drift). Both run on the leader; followers forward them. `stale` reads
//! whatever the node has applied, on any node, without coordination.

pub mod app;
pub mod config;
pub mod error;
pub mod extract;
pub mod forward;
pub mod isolate;
pub mod listener;
pub mod lock;
pub mod metrics;
pub mod node;
pub mod routes;
pub mod state;

use std::path::PathBuf;
use std::process::ExitCode;

pub use config::{ConfigError, LogFormat, ServerConfig, ServerTls};
pub use error::ApiError;
pub use state::{MemberAddrs, MemberOp, ServerCommand, ServerResponse, ServerState};

/// Arguments of `raftkv serve`. Every flag can also be given as the
/// environment variable `RAFTKV_<FLAG>` or as the snake_case key of a
/// `--config` TOML file; a flag beats its variable, which beats the file,
/// which beats the default.
#[derive(clap::Args, Debug, Default, Clone)]
pub struct ServeArgs {
    /// This node's id (non-zero).
    #[arg(long, env = "RAFTKV_ID")]
    pub id: Option<u64>,
    /// The cluster's id; a data directory or peer of another cluster is
    /// refused [default: 1].
    #[arg(long, env = "RAFTKV_CLUSTER_ID")]
    pub cluster_id: Option<u64>,
    /// This node's data directory [default: raftkv-data/node-<id>].
    #[arg(long, env = "RAFTKV_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// HTTP client API address, IP:PORT or HOST:PORT (resolved when
    /// binding) [default: this node's --clients entry].
    #[arg(long, env = "RAFTKV_LISTEN_CLIENT")]
    pub listen_client: Option<String>,
    /// Raft peer address, IP:PORT or HOST:PORT (resolved when binding)
    /// [default: this node's --peers entry].
    #[arg(long, env = "RAFTKV_LISTEN_PEER")]
    pub listen_peer: Option<String>,
    /// The founding voters' peer addresses, `1=127.0.0.1:7800,2=node2:7800`,
    /// including this node; host names are resolved at every connect. With
    /// --join: the current members' addresses.
    #[arg(long, env = "RAFTKV_PEERS")]
    pub peers: Option<String>,
    /// The founding voters' client addresses, `1=127.0.0.1:7700,2=...`,
    /// used to forward requests to the leader.
    #[arg(long, env = "RAFTKV_CLIENTS")]
    pub clients: Option<String>,
    /// Start with an empty configuration and wait to be added with
    /// `POST /v1/members`.
    #[arg(
        long,
        env = "RAFTKV_JOIN",
        num_args = 0..=1,
        default_missing_value = "true",
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    pub join: Option<bool>,
    /// A TOML file with the same settings (snake_case keys).
    #[arg(long, env = "RAFTKV_CONFIG")]
    pub config: Option<PathBuf>,
    /// Largest key, in bytes [default: 1024]. Same on every node.
    #[arg(long, env = "RAFTKV_MAX_KEY_BYTES")]
    pub max_key_bytes: Option<u64>,
    /// Largest value, in bytes [default: 65536]. Same on every node.
    #[arg(long, env = "RAFTKV_MAX_VALUE_BYTES")]
    pub max_value_bytes: Option<u64>,
    /// Largest request body, in bytes [default: 1048576].
    #[arg(long, env = "RAFTKV_MAX_BODY_BYTES")]
    pub max_body_bytes: Option<u64>,
    /// Most client connections served at once [default: 1024].
    #[arg(long, env = "RAFTKV_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    /// A request not answered within this is answered 504 (reason
    /// `timeout`) [default: 5000].
    #[arg(long, env = "RAFTKV_REQUEST_TIMEOUT_MS")]
    pub request_timeout_ms: Option<u64>,
    /// Raft tick length; elections take 10 to 20 ticks [default: 100].
    #[arg(long, env = "RAFTKV_TICK_MS")]
    pub tick_ms: Option<u64>,
    /// Snapshot (durable engine: checkpoint) and compact the log every
    /// this many entries; 0 never [default: 10000].
    #[arg(long, env = "RAFTKV_SNAPSHOT_ENTRIES")]
    pub snapshot_entries: Option<u64>,
    /// Where the key-value state lives: `durable` (a redb file in the data
    /// directory, checkpointed; restarts do not reload the data) or
    /// `memory` (in RAM, snapshotted whole) [default: durable]. Every node
    /// of a cluster must use the same engine.
    #[arg(long, env = "RAFTKV_STATE_ENGINE")]
    pub state_engine: Option<String>,
    /// Durable engine: make the applied state durable (a checkpoint) and
    /// compact the log up to it every this many bytes of applied entries
    /// [default: 16777216].
    #[arg(long, env = "RAFTKV_CHECKPOINT_BYTES")]
    pub checkpoint_bytes: Option<u64>,
    /// Log filter (`info`, `debug`, `raftkv=debug,raft_runtime=info`)
    /// [default: $RUST_LOG, else info]. Logs go to stderr.
    #[arg(long, env = "RAFTKV_LOG_LEVEL")]
    pub log_level: Option<String>,
    /// Log line format: `text` (for a person at a terminal) or `json` (one
    /// object per line with `timestamp`, `level`, `target`, `message` and
    /// the event's fields, for a log shipper) [default: text].
    #[arg(long, env = "RAFTKV_LOG_FORMAT")]
    pub log_format: Option<String>,
    /// One INFO line per HTTP request (target `raftkv::access`: method,
    /// path, status, latency, request id, node, forwarding) [default:
    /// false]. Off by default, as etcd and Consul keep their request logs
    /// off: at tens of thousands of writes per second a line per request
    /// costs more CPU and disk than the write itself. `--access-log` (or
    /// `--access-log true`) turns it on, to follow requests by their
    /// `x-request-id`.
    #[arg(
        long,
        env = "RAFTKV_ACCESS_LOG",
        num_args = 0..=1,
        default_missing_value = "true",
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    pub access_log: Option<bool>,
    /// The dashboard's buttons (kill, restart, isolate, transfer) and the
    /// `POST /v1/dev/control` route behind them [default: false; `raftkv
    /// cluster` turns them on]. For a test or demo cluster only: anyone who
    /// can reach the client port can then cut this node off its peers.
    #[arg(
        long,
        env = "RAFTKV_DASHBOARD_CONTROLS",
        num_args = 0..=1,
        default_missing_value = "true",
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    pub dashboard_controls: Option<bool>,
    /// Where kill and restart requests go: the control endpoint of the
    /// `raftkv cluster` that started this node (`http://127.0.0.1:PORT`;
    /// set by the launcher). Needs --dashboard-controls.
    #[arg(long, env = "RAFTKV_LAUNCHER_URL")]
    pub launcher_url: Option<String>,
    /// This node's certificate chain (PEM). With --tls-key and --tls-ca,
    /// the client port speaks only HTTPS and peers use mutual TLS; the
    /// certificate must chain to the CA and name `raft-node-<id>` (`raftkv
    /// certs init` makes such certificates). SIGHUP reloads the three
    /// files.
    #[arg(long, env = "RAFTKV_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM).
    #[arg(long, env = "RAFTKV_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// The cluster's CA certificate (PEM): peers' certificates must chain
    /// to it, and so must clients' with --tls-client-auth.
    #[arg(long, env = "RAFTKV_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
    /// Require a client certificate signed by --tls-ca on the client API
    /// [default: false].
    #[arg(
        long,
        env = "RAFTKV_TLS_CLIENT_AUTH",
        num_args = 0..=1,
        default_missing_value = "true",
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    pub tls_client_auth: Option<bool>,
}

/// Entry point of `raftkv serve`: resolves the configuration, starts
/// logging and a tokio runtime, and runs the node until it is stopped.
pub fn main(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let cfg = config::resolve(&args)?;
    init_logging(cfg.log_level.as_deref(), cfg.log_format);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("raftkv-serve")
        .build()?;
    runtime.block_on(node::run(cfg))
}

/// Logs to stderr; the filter is `--log-level`, else `RUST_LOG`, else
/// `info`; the format is `--log-format`.
fn init_logging(level: Option<&str>, format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = match level {
        // Validated in `config::resolve`.
        Some(l) => EnvFilter::try_new(l).unwrap_or_else(|_| EnvFilter::new("info")),
        None => EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
    };
    // `try_init` fails only if a subscriber is already set (e.g. in tests).
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder
            // Colour codes only for a person at a terminal, not in log files.
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .try_init(),
        // One JSON object per line: `timestamp`, `level`, `target`, and the
        // event's fields (`message` among them) at the top level, where log
        // shippers look for them; the enclosing span, if any, under `span`.
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_span_list(false)
            .try_init(),
    };
}
