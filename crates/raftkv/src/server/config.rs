//! Turning flags, environment variables and an optional TOML file into one
//! checked [`ServerConfig`].
//!
//! Precedence, highest first: a command-line flag, its `RAFTKV_<FLAG>`
//! environment variable (clap reads both into [`ServeArgs`]), the key of the
//! same name in `--config FILE.toml`, the built-in default. Every error
//! names the setting and what was wrong with it; nothing is started until
//! the whole configuration is valid.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use raft_core::NodeId;
use raft_runtime::{PeerAddr, TlsFiles};
use serde::Deserialize;

use super::ServeArgs;

/// Default `--max-key-bytes`.
pub const DEFAULT_MAX_KEY_BYTES: u64 = 1024;
/// Default `--max-value-bytes`.
pub const DEFAULT_MAX_VALUE_BYTES: u64 = 65_536;
/// Default `--max-body-bytes`.
pub const DEFAULT_MAX_BODY_BYTES: u64 = 1_048_576;
/// Default `--max-connections`.
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;
/// Default `--request-timeout-ms`.
pub const DEFAULT_REQUEST_TIMEOUT_MS: u64 = 5000;
/// Default `--tick-ms`.
pub const DEFAULT_TICK_MS: u64 = 100;
/// Default `--snapshot-entries`.
pub const DEFAULT_SNAPSHOT_ENTRIES: u64 = 10_000;
/// Default `--cluster-id`.
pub const DEFAULT_CLUSTER_ID: u64 = 1;
/// Largest `--max-connections`: each connection costs a task and buffers,
/// and the process's file descriptor limit is usually 1024 to 1M.
pub const MAX_CONNECTIONS_CEILING: usize = 1 << 20;
/// Largest `--request-timeout-ms` (one hour): a longer timeout only keeps
/// a dead request's resources.
pub const REQUEST_TIMEOUT_MS_CEILING: u64 = 3_600_000;
/// Largest `--tick-ms` (ten seconds: elections would take minutes).
pub const TICK_MS_CEILING: u64 = 10_000;
/// Largest `--max-body-bytes` (64 MiB, the largest log entry we allow).
pub const BODY_BYTES_CEILING: u64 = 64 << 20;
/// Largest `--config` file read, in bytes.
pub const CONFIG_FILE_BYTES_MAX: u64 = 1 << 20;

/// A fully resolved and validated server configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerConfig {
    pub id: NodeId,
    pub cluster_id: u64,
    pub data_dir: PathBuf,
    /// Where to listen for clients; a host name is resolved once, when
    /// binding.
    pub listen_client: PeerAddr,
    /// Where to listen for peers (resolved when binding).
    pub listen_peer: PeerAddr,
    /// Founding voters' peer addresses (for a joining node: the members it
    /// should accept connections from), as given: host names are resolved
    /// at every connect.
    pub peers: BTreeMap<NodeId, PeerAddr>,
    /// Founding voters' client addresses (for forwarding to the leader).
    pub clients: BTreeMap<NodeId, PeerAddr>,
    /// Start with an empty configuration and wait to be added.
    pub join: bool,
    pub max_key_bytes: u64,
    pub max_value_bytes: u64,
    pub max_body_bytes: u64,
    pub max_connections: usize,
    pub request_timeout: Duration,
    pub tick: Duration,
    pub snapshot_entries: u64,
    /// Where the key-value state lives.
    pub state_engine: StateEngine,
    /// Durable engine: bytes of applied entries between checkpoints.
    pub checkpoint_bytes: u64,
    /// A tracing filter (`info`, `raftkv=debug,raft_runtime=info`, ...);
    /// `None`: use `RUST_LOG`, else `info`.
    pub log_level: Option<String>,
    pub log_format: LogFormat,
    /// One log line per HTTP request (target `raftkv::access`).
    pub access_log: bool,
    /// The dashboard's buttons and `POST /v1/dev/control`.
    pub dashboard_controls: bool,
    /// The launcher's control endpoint (`host:port`), for kill and restart.
    pub launcher: Option<PeerAddr>,
    /// TLS for clients and peers; `None`: plain HTTP and TCP.
    pub tls: Option<ServerTls>,
}

/// `--tls-cert`, `--tls-key`, `--tls-ca`, `--tls-client-auth`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerTls {
    /// This node's certificate, key and the cluster CA.
    pub files: TlsFiles,
    /// Clients must present a certificate from the CA.
    pub client_auth: bool,
}

impl ServerConfig {
    /// The URL scheme of this node's client API and of its peers' (every
    /// node of a cluster runs with TLS or none does): `https` or `http`.
    pub fn scheme(&self) -> &'static str {
        if self.tls.is_some() {
            "https"
        } else {
            "http"
        }
    }
}

/// `--state-engine`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum StateEngine {
    /// A redb file (raftkv-mvcc), checkpointed; the default.
    #[default]
    Durable,
    /// In memory, snapshotted whole.
    Memory,
}

impl StateEngine {
    /// Parses `durable` or `memory` (case-insensitive).
    pub fn parse(text: &str) -> Result<StateEngine, ConfigError> {
        match text.trim().to_ascii_lowercase().as_str() {
            "durable" => Ok(StateEngine::Durable),
            "memory" => Ok(StateEngine::Memory),
            _ => Err(invalid(
                "--state-engine",
                format!("`{text}` is not a state engine; use durable or memory"),
            )),
        }
    }
}

/// Default `--checkpoint-bytes`: small enough that one checkpoint's flush
/// stays short, large enough that checkpoints are rare at full speed.
pub const DEFAULT_CHECKPOINT_BYTES: u64 = 16 << 20;

/// `--log-format`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines (the default).
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

impl LogFormat {
    /// Parses `text` or `json` (case-insensitive); anything else is an
    /// error naming the setting and the accepted values.
    pub fn parse(text: &str) -> Result<LogFormat, ConfigError> {
        match text.trim().to_ascii_lowercase().as_str() {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            _ => Err(invalid(
                "--log-format",
                format!("`{text}` is not a log format; use text or json"),
            )),
        }
    }

    /// The flag's value: `text` or `json`.
    pub fn as_str(self) -> &'static str {
        match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        }
    }
}

/// Why the configuration was refused. Every variant names the setting.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A required setting is missing.
    #[error("{0} is required")]
    Missing(&'static str),
    /// A value could not be parsed.
    #[error("{setting}: {message}")]
    Invalid {
        setting: &'static str,
        message: String,
    },
    /// `--config` could not be read.
    #[error("cannot read config file {path}: {source}")]
    FileRead {
        path: PathBuf,
        source: std::io::Error,
    },
    /// `--config` is not valid TOML for this server.
    #[error("config file {path}: {message}")]
    FileParse { path: PathBuf, message: String },
}

fn invalid(setting: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        setting,
        message: message.into(),
    }
}

/// The keys a `--config` TOML file may hold: the flags' names in snake case.
/// Unknown keys are refused, so a typo is an error rather than silently
/// ignored.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub id: Option<u64>,
    pub cluster_id: Option<u64>,
    pub data_dir: Option<PathBuf>,
    pub listen_client: Option<String>,
    pub listen_peer: Option<String>,
    pub peers: Option<AddrList>,
    pub clients: Option<AddrList>,
    pub join: Option<bool>,
    pub max_key_bytes: Option<u64>,
    pub max_value_bytes: Option<u64>,
    pub max_body_bytes: Option<u64>,
    pub max_connections: Option<usize>,
    pub request_timeout_ms: Option<u64>,
    pub tick_ms: Option<u64>,
    pub snapshot_entries: Option<u64>,
    pub state_engine: Option<String>,
    pub checkpoint_bytes: Option<u64>,
    pub log_level: Option<String>,
    pub log_format: Option<String>,
    pub access_log: Option<bool>,
    pub dashboard_controls: Option<bool>,
    pub launcher_url: Option<String>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub tls_ca: Option<PathBuf>,
    pub tls_client_auth: Option<bool>,
}

/// `peers` / `clients` in a file: the flag's string
/// (`"1=127.0.0.1:7800,2=..."`) or a table (`[peers]` `1 = "127.0.0.1:7800"`).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum AddrList {
    Text(String),
    Table(BTreeMap<String, String>),
}

impl AddrList {
    fn into_text(self) -> String {
        match self {
            AddrList::Text(s) => s,
            AddrList::Table(t) => t
                .into_iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(","),
        }
    }
}

/// Reads and parses a `--config` file.
pub fn read_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let read_err = |source| ConfigError::FileRead {
        path: path.to_path_buf(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(read_err)?;
    if meta.len() > CONFIG_FILE_BYTES_MAX {
        return Err(ConfigError::FileParse {
            path: path.to_path_buf(),
            message: format!(
                "{} bytes; a config file is at most {CONFIG_FILE_BYTES_MAX}",
                meta.len()
            ),
        });
    }
    let text = std::fs::read_to_string(path).map_err(read_err)?;
    toml::from_str(&text).map_err(|e| ConfigError::FileParse {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

/// Parses an `IP:PORT` or `HOST:PORT` address (see [`PeerAddr`]). Names
/// are kept as given and resolved when connecting (or binding), not here.
pub fn parse_addr(setting: &'static str, text: &str) -> Result<PeerAddr, ConfigError> {
    text.parse()
        .map_err(|e: raft_runtime::AddrParseError| invalid(setting, e.to_string()))
}

/// Parses `1=127.0.0.1:7800,2=node2:7800`: ids must be non-zero and
/// unique, addresses valid and unique (as written).
pub fn parse_addr_list(
    setting: &'static str,
    text: &str,
) -> Result<BTreeMap<NodeId, PeerAddr>, ConfigError> {
    let mut out = BTreeMap::new();
    for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (id, addr) = item.split_once('=').ok_or_else(|| {
            invalid(
                setting,
                format!("`{item}` is not ID=HOST:PORT (for example 1=127.0.0.1:7800)"),
            )
        })?;
        let id: NodeId = id
            .trim()
            .parse()
            .map_err(|_| invalid(setting, format!("`{id}` is not a node id (a number)")))?;
        if id == 0 {
            return Err(invalid(setting, "node id 0 is reserved"));
        }
        let addr: PeerAddr = addr
            .parse()
            .map_err(|e| invalid(setting, format!("node {id}: {e}")))?;
        if let Some((other, _)) = out.iter().find(|(_, a)| **a == addr) {
            return Err(invalid(
                setting,
                format!("nodes {other} and {id} have the same address {addr}"),
            ));
        }
        if out.insert(id, addr).is_some() {
            return Err(invalid(setting, format!("duplicate node id {id}")));
        }
    }
    Ok(out)
}

/// Resolves flags/env (already merged by clap into `args`), the optional
/// file and defaults into a checked configuration.
pub fn resolve(args: &ServeArgs) -> Result<ServerConfig, ConfigError> {
    let file = match &args.config {
        Some(path) => read_file(path)?,
        None => FileConfig::default(),
    };
    resolve_with_file(args, file)
}

/// [`resolve`] with the file already parsed (for tests).
pub fn resolve_with_file(args: &ServeArgs, file: FileConfig) -> Result<ServerConfig, ConfigError> {
    let id = args.id.or(file.id).ok_or(ConfigError::Missing("--id"))?;
    if id == 0 {
        return Err(invalid("--id", "node id 0 is reserved"));
    }
    let cluster_id = args
        .cluster_id
        .or(file.cluster_id)
        .unwrap_or(DEFAULT_CLUSTER_ID);
    let join = args.join.or(file.join).unwrap_or(false);
    let peers_text = args
        .peers
        .clone()
        .or(file.peers.map(AddrList::into_text))
        .unwrap_or_default();
    let clients_text = args
        .clients
        .clone()
        .or(file.clients.map(AddrList::into_text))
        .unwrap_or_default();
    let peers = parse_addr_list("--peers", &peers_text)?;
    let clients = parse_addr_list("--clients", &clients_text)?;
    if !join {
        if peers.is_empty() {
            return Err(invalid(
                "--peers",
                "list every founding voter as ID=HOST:PORT (or pass --join to join an existing cluster)",
            ));
        }
        if !peers.contains_key(&id) {
            return Err(invalid(
                "--peers",
                format!("this node's id {id} is not in --peers (pass --join to join an existing cluster)"),
            ));
        }
    }
    if join && peers.is_empty() && clients.is_empty() {
        return Err(invalid(
            "--join",
            "give the current members' --peers and/or --clients addresses: this node accepts \
             connections only from peers it knows",
        ));
    }
    let extra_client = clients
        .keys()
        .find(|c| !peers.is_empty() && !peers.contains_key(c) && **c != id);
    if let Some(extra) = extra_client {
        return Err(invalid(
            "--clients",
            format!("node {extra} is not in --peers"),
        ));
    }
    let listen_peer = match args.listen_peer.as_deref().or(file.listen_peer.as_deref()) {
        Some(text) => parse_addr("--listen-peer", text)?,
        None => peers.get(&id).cloned().ok_or(ConfigError::Missing(
            "--listen-peer (this node is not in --peers)",
        ))?,
    };
    let listen_client = match args
        .listen_client
        .as_deref()
        .or(file.listen_client.as_deref())
    {
        Some(text) => parse_addr("--listen-client", text)?,
        None => clients.get(&id).cloned().ok_or(ConfigError::Missing(
            "--listen-client (this node is not in --clients)",
        ))?,
    };
    if listen_peer == listen_client {
        return Err(invalid(
            "--listen-client",
            format!("{listen_client} is also the peer address; use two ports"),
        ));
    }
    let data_dir = args
        .data_dir
        .clone()
        .or(file.data_dir)
        .unwrap_or_else(|| PathBuf::from(format!("raftkv-data/node-{id}")));
    let max_key_bytes = args
        .max_key_bytes
        .or(file.max_key_bytes)
        .unwrap_or(DEFAULT_MAX_KEY_BYTES);
    let max_value_bytes = args
        .max_value_bytes
        .or(file.max_value_bytes)
        .unwrap_or(DEFAULT_MAX_VALUE_BYTES);
    let max_body_bytes = args
        .max_body_bytes
        .or(file.max_body_bytes)
        .unwrap_or(DEFAULT_MAX_BODY_BYTES);
    let max_connections = args
        .max_connections
        .or(file.max_connections)
        .unwrap_or(DEFAULT_MAX_CONNECTIONS);
    let request_timeout_ms = args
        .request_timeout_ms
        .or(file.request_timeout_ms)
        .unwrap_or(DEFAULT_REQUEST_TIMEOUT_MS);
    let tick_ms = args.tick_ms.or(file.tick_ms).unwrap_or(DEFAULT_TICK_MS);
    let snapshot_entries = args
        .snapshot_entries
        .or(file.snapshot_entries)
        .unwrap_or(DEFAULT_SNAPSHOT_ENTRIES);
    let state_engine = match args
        .state_engine
        .as_deref()
        .or(file.state_engine.as_deref())
    {
        Some(text) => StateEngine::parse(text)?,
        None => StateEngine::default(),
    };
    let checkpoint_bytes = args
        .checkpoint_bytes
        .or(file.checkpoint_bytes)
        .unwrap_or(DEFAULT_CHECKPOINT_BYTES);
    check_range("--checkpoint-bytes", checkpoint_bytes, 1 << 20, 1 << 40)?;
    let ceiling = raftkv_state::ITEM_BYTES_CEILING;
    check_range("--max-key-bytes", max_key_bytes, 1, ceiling)?;
    check_range("--max-value-bytes", max_value_bytes, 1, ceiling)?;
    check_range("--max-body-bytes", max_body_bytes, 1, BODY_BYTES_CEILING)?;
    check_range(
        "--max-connections",
        max_connections as u64,
        1,
        MAX_CONNECTIONS_CEILING as u64,
    )?;
    check_range(
        "--request-timeout-ms",
        request_timeout_ms,
        1,
        REQUEST_TIMEOUT_MS_CEILING,
    )?;
    check_range("--tick-ms", tick_ms, 1, TICK_MS_CEILING)?;
    let log_level = args.log_level.clone().or(file.log_level);
    if let Some(level) = &log_level {
        tracing_subscriber::EnvFilter::try_new(level)
            .map_err(|e| invalid("--log-level", format!("`{level}`: {e}")))?;
    }
    let log_format = match args.log_format.as_deref().or(file.log_format.as_deref()) {
        Some(text) => LogFormat::parse(text)?,
        None => LogFormat::default(),
    };
    let dashboard_controls = args
        .dashboard_controls
        .or(file.dashboard_controls)
        .unwrap_or(false);
    let launcher = match args
        .launcher_url
        .as_deref()
        .or(file.launcher_url.as_deref())
    {
        Some(url) => Some(parse_launcher_url(url, dashboard_controls)?),
        None => None,
    };
    let tls = resolve_tls(
        args.tls_cert.clone().or(file.tls_cert),
        args.tls_key.clone().or(file.tls_key),
        args.tls_ca.clone().or(file.tls_ca),
        args.tls_client_auth
            .or(file.tls_client_auth)
            .unwrap_or(false),
    )?;
    Ok(ServerConfig {
        id,
        cluster_id,
        data_dir,
        listen_client,
        listen_peer,
        peers,
        clients,
        join,
        max_key_bytes,
        max_value_bytes,
        max_body_bytes,
        max_connections,
        request_timeout: Duration::from_millis(request_timeout_ms),
        tick: Duration::from_millis(tick_ms),
        snapshot_entries,
        state_engine,
        checkpoint_bytes,
        log_level,
        log_format,
        access_log: args.access_log.or(file.access_log).unwrap_or(false),
        dashboard_controls,
        launcher,
        tls,
    })
}

/// `--launcher-url http://HOST:PORT` (a trailing `/` allowed): plain HTTP,
/// no path, and only with the controls on (it serves nothing else).
fn parse_launcher_url(url: &str, controls: bool) -> Result<PeerAddr, ConfigError> {
    const SETTING: &str = "--launcher-url";
    if !controls {
        return Err(invalid(
            SETTING,
            "kill and restart are dashboard controls: give --dashboard-controls too",
        ));
    }
    let rest = url.trim().strip_prefix("http://").ok_or_else(|| {
        invalid(
            SETTING,
            format!("`{url}` is not http://HOST:PORT (the launcher's control endpoint)"),
        )
    })?;
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.contains('/') {
        return Err(invalid(
            SETTING,
            format!("`{url}` has a path; give only http://HOST:PORT"),
        ));
    }
    parse_addr(SETTING, rest)
}

/// The three TLS files come together or not at all; the files themselves
/// are read (and checked) when the node starts.
fn resolve_tls(
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    ca: Option<PathBuf>,
    client_auth: bool,
) -> Result<Option<ServerTls>, ConfigError> {
    match (cert, key, ca) {
        (None, None, None) => {
            if client_auth {
                return Err(invalid(
                    "--tls-client-auth",
                    "needs TLS: give --tls-cert, --tls-key and --tls-ca",
                ));
            }
            Ok(None)
        }
        (Some(cert), Some(key), Some(ca)) => Ok(Some(ServerTls {
            files: TlsFiles { cert, key, ca },
            client_auth,
        })),
        (cert, key, ca) => {
            let missing: Vec<&str> = [
                ("--tls-cert", cert.is_none()),
                ("--tls-key", key.is_none()),
                ("--tls-ca", ca.is_none()),
            ]
            .iter()
            .filter(|(_, m)| *m)
            .map(|(n, _)| *n)
            .collect();
            Err(invalid(
                "--tls-cert",
                format!(
                    "give --tls-cert, --tls-key and --tls-ca together (missing {})",
                    missing.join(", ")
                ),
            ))
        }
    }
}

fn check_range(setting: &'static str, value: u64, min: u64, max: u64) -> Result<(), ConfigError> {
    if value < min || value > max {
        return Err(invalid(
            setting,
            format!("{value} is outside the allowed range {min}..={max}"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(id: u64, peers: &str, clients: &str) -> ServeArgs {
        ServeArgs {
            id: Some(id),
            peers: Some(peers.into()),
            clients: Some(clients.into()),
            ..ServeArgs::default()
        }
    }

    const PEERS: &str = "1=127.0.0.1:7800,2=127.0.0.1:7801,3=127.0.0.1:7802";
    const CLIENTS: &str = "1=127.0.0.1:7700,2=127.0.0.1:7701,3=127.0.0.1:7702";

    #[test]
    fn defaults_and_own_addresses_from_the_lists() {
        let c = resolve_with_file(&args(2, PEERS, CLIENTS), FileConfig::default()).unwrap();
        assert_eq!(c.listen_peer, "127.0.0.1:7801".parse().unwrap());
        assert_eq!(c.listen_client, "127.0.0.1:7701".parse().unwrap());
        assert_eq!(c.peers.len(), 3);
        assert_eq!(c.max_key_bytes, DEFAULT_MAX_KEY_BYTES);
        assert_eq!(c.request_timeout, Duration::from_secs(5));
        assert_eq!(c.data_dir, PathBuf::from("raftkv-data/node-2"));
        assert!(!c.join);
    }

    #[test]
    fn flag_beats_file_beats_default() {
        let file: FileConfig = toml::from_str(
            "id = 9\nmax_key_bytes = 10\ntick_ms = 50\n[peers]\n1 = \"127.0.0.1:7800\"\n2 = \"127.0.0.1:7801\"\n",
        )
        .unwrap();
        let mut a = ServeArgs {
            id: Some(1),
            max_key_bytes: Some(20),
            listen_client: Some("127.0.0.1:7700".into()),
            ..ServeArgs::default()
        };
        let c = resolve_with_file(&a, file).unwrap();
        assert_eq!(
            (c.id, c.max_key_bytes, c.tick),
            (1, 20, Duration::from_millis(50))
        );
        assert_eq!(c.peers.len(), 2);
        a.max_key_bytes = None;
        let file: FileConfig =
            toml::from_str("peers = \"1=127.0.0.1:7800\"\nmax_key_bytes = 10").unwrap();
        assert_eq!(resolve_with_file(&a, file).unwrap().max_key_bytes, 10);
    }

    #[test]
    fn bad_configurations_are_refused_with_the_setting_named() {
        let cases: Vec<(ServeArgs, &str)> = vec![
            (
                args(1, "1=127.0.0.1:7800,1=127.0.0.1:7801", CLIENTS),
                "duplicate node id 1",
            ),
            (
                args(1, "1=127.0.0.1:7800,2=localhost:x", CLIENTS),
                "--peers: node 2: `localhost:x` is not a HOST:PORT or IP:PORT address",
            ),
            (
                args(1, "1=127.0.0.1:7800,2=bad host:1", CLIENTS),
                "not a HOST:PORT",
            ),
            (args(1, "1=127.0.0.1:7800,2=localhost", CLIENTS), "no :PORT"),
            (
                args(1, "1=node1:7800,2=NODE1:7800", CLIENTS),
                "same address",
            ),
            (
                ServeArgs {
                    listen_client: Some("::1:7700".into()),
                    ..args(1, PEERS, CLIENTS)
                },
                "--listen-client: `::1:7700`",
            ),
            (args(4, PEERS, CLIENTS), "not in --peers"),
            (
                args(1, "1=127.0.0.1:7800,2=127.0.0.1:7800", CLIENTS),
                "same address",
            ),
            (
                args(1, "1=127.0.0.1:7800,zero", CLIENTS),
                "not ID=HOST:PORT",
            ),
            (args(1, "0=127.0.0.1:7800", CLIENTS), "reserved"),
            (args(0, PEERS, CLIENTS), "reserved"),
            (
                args(1, PEERS, "1=127.0.0.1:7700,9=127.0.0.1:7709"),
                "node 9 is not in --peers",
            ),
            (
                ServeArgs {
                    max_connections: Some(0),
                    ..args(1, PEERS, CLIENTS)
                },
                "--max-connections",
            ),
            (
                ServeArgs {
                    tick_ms: Some(0),
                    ..args(1, PEERS, CLIENTS)
                },
                "--tick-ms",
            ),
            (
                ServeArgs {
                    listen_client: Some("127.0.0.1:7800".into()),
                    ..args(1, PEERS, CLIENTS)
                },
                "use two ports",
            ),
            (
                ServeArgs {
                    log_level: Some("info,=[".into()),
                    ..args(1, PEERS, CLIENTS)
                },
                "--log-level",
            ),
            (
                ServeArgs {
                    id: None,
                    ..args(1, PEERS, CLIENTS)
                },
                "--id is required",
            ),
            (
                ServeArgs {
                    log_format: Some("xml".into()),
                    ..args(1, PEERS, CLIENTS)
                },
                "--log-format: `xml` is not a log format; use text or json",
            ),
            (
                ServeArgs {
                    tls_cert: Some("n.pem".into()),
                    tls_ca: Some("ca.pem".into()),
                    ..args(1, PEERS, CLIENTS)
                },
                "give --tls-cert, --tls-key and --tls-ca together (missing --tls-key)",
            ),
            (
                ServeArgs {
                    tls_client_auth: Some(true),
                    ..args(1, PEERS, CLIENTS)
                },
                "--tls-client-auth: needs TLS",
            ),
        ];
        for (a, needle) in cases {
            let err = resolve_with_file(&a, FileConfig::default())
                .unwrap_err()
                .to_string();
            assert!(err.contains(needle), "`{err}` lacks `{needle}` for {a:?}");
        }
    }

    #[test]
    fn join_needs_no_self_entry_but_needs_listen_addresses() {
        let a = ServeArgs {
            join: Some(true),
            ..args(4, PEERS, CLIENTS)
        };
        let err = resolve_with_file(&a, FileConfig::default()).unwrap_err();
        assert!(err.to_string().contains("--listen-peer"), "{err}");
        let a = ServeArgs {
            listen_peer: Some("127.0.0.1:7803".into()),
            listen_client: Some("127.0.0.1:7703".into()),
            ..a
        };
        let c = resolve_with_file(&a, FileConfig::default()).unwrap();
        assert!(c.join);
        assert!(!c.peers.contains_key(&4));
        // --clients alone is enough (the peers are discovered from them)...
        let only_clients = ServeArgs {
            peers: None,
            ..a.clone()
        };
        assert!(resolve_with_file(&only_clients, FileConfig::default())
            .unwrap()
            .peers
            .is_empty());
        // ...but a joining node must be told something about the cluster.
        let nothing = ServeArgs {
            clients: None,
            ..only_clients
        };
        let err = resolve_with_file(&nothing, FileConfig::default()).unwrap_err();
        assert!(err.to_string().contains("--join"), "{err}");
    }

    #[test]
    fn log_format_flag_beats_file_beats_default() {
        let a = args(1, PEERS, CLIENTS);
        let c = resolve_with_file(&a, FileConfig::default()).unwrap();
        assert_eq!(c.log_format, LogFormat::Text);
        assert!(!c.access_log);
        let file: FileConfig = toml::from_str("access_log = true").unwrap();
        assert!(resolve_with_file(&a, file).unwrap().access_log);
        let file: FileConfig = toml::from_str("log_format = \"json\"").unwrap();
        let c = resolve_with_file(&a, file).unwrap();
        assert_eq!(c.log_format, LogFormat::Json);
        let file: FileConfig = toml::from_str("log_format = \"json\"").unwrap();
        let flag = ServeArgs {
            log_format: Some("TEXT".into()),
            ..a
        };
        assert_eq!(
            resolve_with_file(&flag, file).unwrap().log_format,
            LogFormat::Text
        );
    }

    #[test]
    fn dashboard_controls_are_off_by_default_and_the_launcher_needs_them() {
        let a = args(1, PEERS, CLIENTS);
        let c = resolve_with_file(&a, FileConfig::default()).unwrap();
        assert!(!c.dashboard_controls);
        assert_eq!(c.launcher, None);
        let on = ServeArgs {
            dashboard_controls: Some(true),
            launcher_url: Some("http://127.0.0.1:9000/".into()),
            ..a.clone()
        };
        let c = resolve_with_file(&on, FileConfig::default()).unwrap();
        assert!(c.dashboard_controls);
        assert_eq!(c.launcher, Some("127.0.0.1:9000".parse().unwrap()));
        let file: FileConfig = toml::from_str("dashboard_controls = true").unwrap();
        assert!(resolve_with_file(&a, file).unwrap().dashboard_controls);
        for (controls, url, says) in [
            (None, "http://127.0.0.1:9000", "--dashboard-controls"),
            (Some(true), "https://127.0.0.1:9000", "http://HOST:PORT"),
            (Some(true), "http://127.0.0.1:9000/x", "path"),
            (Some(true), "http://127.0.0.1", "PORT"),
        ] {
            let bad = ServeArgs {
                dashboard_controls: controls,
                launcher_url: Some(url.into()),
                ..a.clone()
            };
            let err = resolve_with_file(&bad, FileConfig::default()).unwrap_err();
            let text = err.to_string();
            assert!(
                text.contains("--launcher-url") && text.contains(says),
                "{url}: {text}"
            );
        }
    }

    #[test]
    fn host_names_are_kept_as_given() {
        let c = resolve_with_file(
            &args(
                2,
                "1=node1:7800,2=localhost:7801,3=10.0.0.3:7800",
                "1=node1:7700,2=localhost:7701,3=10.0.0.3:7700",
            ),
            FileConfig::default(),
        )
        .unwrap();
        assert_eq!(c.listen_peer, PeerAddr::Host("localhost".into(), 7801));
        assert_eq!(c.peers[&1].to_string(), "node1:7800");
        assert_eq!(
            c.clients[&3],
            PeerAddr::Ip("10.0.0.3:7700".parse().unwrap())
        );
    }

    #[test]
    fn tls_files_come_from_flags_or_file() {
        let a = args(1, PEERS, CLIENTS);
        let c = resolve_with_file(&a, FileConfig::default()).unwrap();
        assert_eq!((c.scheme(), c.tls), ("http", None));
        let file: FileConfig = toml::from_str(
            "tls_cert = \"n1.pem\"\ntls_key = \"n1.key\"\ntls_ca = \"ca.pem\"\ntls_client_auth = true",
        )
        .unwrap();
        let flag = ServeArgs {
            tls_cert: Some("other.pem".into()),
            ..a
        };
        let c = resolve_with_file(&flag, file).unwrap();
        assert_eq!(c.scheme(), "https");
        let tls = c.tls.unwrap();
        assert_eq!(tls.files.cert, PathBuf::from("other.pem"));
        assert_eq!(tls.files.key, PathBuf::from("n1.key"));
        assert!(tls.client_auth);
    }

    #[test]
    fn unknown_file_keys_are_refused() {
        let err = toml::from_str::<FileConfig>("max_keys_bytes = 3").unwrap_err();
        assert!(err.to_string().contains("max_keys_bytes"), "{err}");
    }
}
