//! Async HTTP client for the raftkv API, used by the CLI, `raftkv bench` and
//! the live status table of `raftkv cluster`.
//!
//! A [`Client`] holds a list of endpoints (`http://host:port`). Every request
//! goes to the *preferred* endpoint first (initially the first one; it moves
//! to whichever endpoint last answered, or to the leader a node names in an
//! error's `leader_hint`). The retry rules follow the server's error
//! contract (5xx answers are `not_applied` or `indeterminate`, with a
//! `reason`; see the server's `error.rs`):
//!
//! - **Connection refused / reset before the request was sent**: the next
//!   endpoint is tried at once. If every endpoint refused in one full pass,
//!   the request fails with [`ClientError::Unreachable`] (nothing is running:
//!   waiting would only delay the message the user needs).
//! - **Not a raftkv server** (the answer lacks the `x-raftkv-node` header,
//!   or an error body is not the contract's JSON): treated like a refused
//!   connection; if no endpoint is a raftkv server, the request fails with
//!   [`ClientError::NotRaftkv`].
//! - **`not_applied`** (nothing happened: no leader, not the leader,
//!   backpressure, a leader change...): retried, on the hinted leader's
//!   endpoint if there is a hint (learned from `GET /v1/members` when the id
//!   is not known yet), else on the next endpoint, with a growing pause
//!   until the retry deadline.
//! - **`indeterminate`** and transport failures after sending (timeouts, a
//!   connection lost): the request may have been applied. Reads, idempotent
//!   admin calls and writes with a session ([`Session`]: the server applies
//!   a `(client_id, seq)` once, so a retry cannot apply a write twice) are
//!   retried like `not_applied`; a write without a session fails with the
//!   error instead, and the caller must treat it as "maybe applied"
//!   ([`ClientError::is_indeterminate`]).
//!
//! Every other answer (404, 409, 400, 413) is returned as a typed error at
//! once.
//!
//! **TLS.** `https://` endpoints need [`ClientConfig::tls`] (the CA that
//! signed the servers' certificates, and a client certificate for servers
//! that require one; see [`tls_config`]); the server's certificate must be
//! valid for the endpoint's host. A TLS failure (a server certificate not
//! from the CA, a refused client certificate, a plain-HTTP server behind
//! an `https://` endpoint, or the server's `tls_required` answer to an
//! `http://` request) is [`ClientError::Tls`], naming the endpoint and
//! what to change; like a foreign answer, it moves on to the next endpoint,
//! and is the call's error if no endpoint did better.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// Default endpoints: the local cluster that `raftkv cluster` starts with its
/// defaults (3 nodes, base port 7700).
pub const DEFAULT_ENDPOINTS: &str =
    "http://127.0.0.1:7700,http://127.0.0.1:7701,http://127.0.0.1:7702";

/// Pause before the first retry after a `not_applied` answer without a
/// usable hint (or a retriable `indeterminate` one); doubles
/// up to [`RETRY_PAUSE_MAX`]. An election takes a few hundred milliseconds
/// with the default 100 ms tick, so 25 ms doubling to 400 ms finds the new
/// leader quickly without hammering the nodes.
const RETRY_PAUSE_MIN: Duration = Duration::from_millis(25);
const RETRY_PAUSE_MAX: Duration = Duration::from_millis(400);

/// Upper bound on endpoints, so a mistyped `--endpoints` list with thousands
/// of entries is refused instead of being dialled one by one.
pub const ENDPOINTS_MAX: usize = 64;

/// Upper bound on response bodies read into memory (a `ls` of 1000 keys with
/// 64 KiB values stays well under it; anything bigger is a broken server).
const RESPONSE_BYTES_MAX: usize = 256 * 1024 * 1024;

/// Settings of a [`Client`].
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// Endpoints, `http://host:port` (a missing scheme means `http://`).
    pub endpoints: Vec<String>,
    /// Timeout of one HTTP request (connect + send + answer).
    pub request_timeout: Duration,
    /// Timeout of one TCP connect: short, because a dead local node refuses
    /// at once and a blackholed one should not eat the whole request budget.
    pub connect_timeout: Duration,
    /// How long one call keeps retrying on `not_applied` answers and (when
    /// safe) on timeouts and `indeterminate` answers.
    pub retry_deadline: Duration,
    /// TLS settings for `https://` endpoints (see [`tls_config`]); `None`
    /// refuses `https://` endpoints.
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

impl ClientConfig {
    /// A configuration with the given endpoints and default timeouts
    /// (request 5 s, connect 1 s, retries for 10 s).
    pub fn new(endpoints: Vec<String>) -> ClientConfig {
        ClientConfig {
            endpoints,
            request_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(1),
            retry_deadline: Duration::from_secs(10),
            tls: None,
        }
    }
}

/// The TLS settings of a client: trust the CA certificate(s) in `ca`;
/// present `cert` (with its `key`) to servers that ask for a client
/// certificate. Files are PEM.
pub fn tls_config(
    ca: &Path,
    cert: Option<&Path>,
    key: Option<&Path>,
) -> Result<Arc<rustls::ClientConfig>, ClientError> {
    let pair = match (cert, key) {
        (Some(c), Some(k)) => Some((c, k)),
        (None, None) => None,
        _ => {
            return Err(ClientError::Invalid(
                "give --cert and --key together (the client certificate and its key)".into(),
            ))
        }
    };
    raft_runtime::tls::client_config_from_files(ca, pair)
        .map(Arc::new)
        .map_err(|e| ClientError::Invalid(format!("TLS: {e}")))
}

/// A key and its value with revisions, as the API returns it.
///
/// Keys and values are bytes: in JSON each is a string (`key`, `value`)
/// when it is UTF-8, else base64 (`key_b64`, `value_b64`); this type reads
/// and writes both forms. A keys-only listing leaves `value` empty.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "KeyValueJson", into = "KeyValueJson")]
pub struct KeyValue {
    pub key: Bytes,
    pub value: Bytes,
    pub create_revision: u64,
    pub mod_revision: u64,
    pub version: u64,
}

impl KeyValue {
    /// The key as text (invalid UTF-8 replaced: for display only).
    pub fn key_lossy(&self) -> std::borrow::Cow<'_, str> {
        String::from_utf8_lossy(&self.key)
    }

    /// The value as text (invalid UTF-8 replaced: for display only).
    pub fn value_lossy(&self) -> std::borrow::Cow<'_, str> {
        String::from_utf8_lossy(&self.value)
    }
}

/// [`KeyValue`]'s JSON form.
#[derive(Serialize, Deserialize)]
struct KeyValueJson {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    key_b64: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    value: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    value_b64: Option<String>,
    create_revision: u64,
    mod_revision: u64,
    version: u64,
}

/// Bytes from a `name`/`name_b64` pair of JSON fields.
fn field_bytes(name: &str, text: Option<String>, b64: Option<String>) -> Result<Bytes, String> {
    match (text, b64) {
        (Some(t), _) => Ok(Bytes::from(t)),
        (None, Some(b)) => base64::engine::general_purpose::STANDARD
            .decode(b)
            .map(Bytes::from)
            .map_err(|e| format!("{name}_b64 is not base64: {e}")),
        (None, None) => Ok(Bytes::new()),
    }
}

/// The JSON form of bytes: `(Some(text), None)` if UTF-8, else base64.
fn bytes_field(bytes: &[u8]) -> (Option<String>, Option<String>) {
    match std::str::from_utf8(bytes) {
        Ok(s) => (Some(s.to_string()), None),
        Err(_) => (
            None,
            Some(base64::engine::general_purpose::STANDARD.encode(bytes)),
        ),
    }
}

impl TryFrom<KeyValueJson> for KeyValue {
    type Error = String;

    fn try_from(j: KeyValueJson) -> Result<Self, String> {
        if j.key.is_none() && j.key_b64.is_none() {
            return Err("a key-value without key or key_b64".into());
        }
        Ok(KeyValue {
            key: field_bytes("key", j.key, j.key_b64)?,
            value: field_bytes("value", j.value, j.value_b64)?,
            create_revision: j.create_revision,
            mod_revision: j.mod_revision,
            version: j.version,
        })
    }
}

impl From<KeyValue> for KeyValueJson {
    fn from(kv: KeyValue) -> Self {
        let (key, key_b64) = bytes_field(&kv.key);
        let (value, value_b64) = bytes_field(&kv.value);
        KeyValueJson {
            key,
            key_b64,
            value,
            value_b64,
            create_revision: kv.create_revision,
            mod_revision: kv.mod_revision,
            version: kv.version,
        }
    }
}

/// Answer to a put.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PutResponse {
    pub revision: u64,
    #[serde(default)]
    pub create_revision: u64,
    #[serde(default)]
    pub version: u64,
    #[serde(default)]
    pub prev: Option<KeyValue>,
}

/// Answer to a delete of an existing key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeleteResponse {
    pub revision: u64,
    #[serde(default)]
    pub deleted: bool,
    #[serde(default)]
    pub prev: Option<KeyValue>,
}

/// Answer to a successful compare-and-swap.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CasResponse {
    pub succeeded: bool,
    pub revision: u64,
}

/// Answer to a list.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListResponse {
    /// Empty for a `count_only` listing.
    #[serde(default)]
    pub kvs: Vec<KeyValue>,
    #[serde(default)]
    pub more: bool,
    #[serde(default)]
    pub revision: u64,
    /// While `more`: the cursor, the last key this answer covered (pass it
    /// as [`ListRequest::after`]). In JSON `next`, or `next_b64` when it is
    /// not UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_b64: Option<String>,
    /// `count_only`: the number of keys counted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u64>,
}

impl ListResponse {
    /// The cursor's bytes (see [`ListResponse::next`]).
    pub fn next_key(&self) -> Result<Option<Bytes>, ClientError> {
        match (&self.next, &self.next_b64) {
            (Some(t), _) => Ok(Some(Bytes::from(t.clone()))),
            (None, Some(b)) => field_bytes("next", None, Some(b.clone()))
                .map(Some)
                .map_err(|e| ClientError::Invalid(format!("bad answer: {e}"))),
            (None, None) => Ok(None),
        }
    }
}

/// One `GET /v1/kv` request: the range, the page size and the options.
#[derive(Clone, Debug, Default)]
pub struct ListRequest {
    /// Keys starting with this (empty: any key).
    pub prefix: Bytes,
    /// Keys at or after this.
    pub start: Option<Bytes>,
    /// Keys before this (exclusive).
    pub range_end: Option<Bytes>,
    /// Keys strictly after this (the previous page's `next`).
    pub after: Option<Bytes>,
    /// At most this many keys (`1..=`[`LIST_PAGE_MAX`]); `None` for
    /// `count_only`.
    pub limit: Option<u64>,
    pub keys_only: bool,
    pub count_only: bool,
    pub consistency: Consistency,
}

/// Largest page the server answers: the state machine's `list_limit_max`
/// (one constant for both sides).
pub const LIST_PAGE_MAX: u64 = 1000;

/// Read consistency of a get or list.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Consistency {
    /// Confirmed with a quorum (ReadIndex): sees every write acknowledged
    /// before the read started.
    #[default]
    Linearizable,
    /// Served by the leader under its lease: linearizable while clocks
    /// drift less than the lease margin.
    Lease,
    /// Served by whichever node answers, possibly behind.
    Stale,
}

impl Consistency {
    /// The query parameter value.
    pub fn as_str(self) -> &'static str {
        match self {
            Consistency::Linearizable => "linearizable",
            Consistency::Lease => "lease",
            Consistency::Stale => "stale",
        }
    }
}

/// The condition of a compare-and-swap.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CasCondition {
    /// The key must hold exactly this value.
    Value(String),
    /// The key must be absent.
    Absent,
    /// The key's `mod_revision` must be this (0 also means absent).
    ModRevision(u64),
}

/// What a compare-and-swap does when its condition holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CasAction {
    /// Set the key to this value.
    Put(String),
    /// Delete the key.
    Delete,
}

/// Membership as `GET /v1/status` reports it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusMembers {
    #[serde(default)]
    pub voters: Vec<u64>,
    #[serde(default)]
    pub voters_outgoing: Vec<u64>,
    #[serde(default)]
    pub learners: Vec<u64>,
}

/// Replication progress of one peer, as a leader reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerStatus {
    pub id: u64,
    #[serde(default)]
    pub match_index: u64,
    #[serde(default)]
    pub next_index: u64,
    #[serde(default)]
    pub state: String,
}

/// `GET /v1/status` of one node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStatus {
    pub id: u64,
    pub role: String,
    pub term: u64,
    pub leader: Option<u64>,
    pub commit_index: u64,
    pub applied_index: u64,
    pub last_index: u64,
    #[serde(default)]
    pub snapshot_index: u64,
    #[serde(default)]
    pub members: StatusMembers,
    #[serde(default)]
    pub peers: Vec<PeerStatus>,
}

/// One member of the cluster, as `GET /v1/members` reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub id: u64,
    pub role: String,
    pub peer_addr: String,
    pub client_addr: String,
}

#[derive(Deserialize)]
struct MembersBody {
    members: Vec<Member>,
}

/// The header every raftkv answer carries: the id of the node that
/// answered.
pub use crate::server::routes::NODE_HEADER;

/// The codes of a 5xx answer: the request certainly had no effect, or it
/// may or may not have been applied.
pub use crate::server::error::{INDETERMINATE, NOT_APPLIED};

/// The error body every non-2xx raftkv answer carries. `code` and `message`
/// are required: a body without them did not come from raftkv.
#[derive(Clone, Debug, Deserialize)]
struct ErrorBody {
    error: ErrorDetail,
    #[serde(default)]
    current: Option<KeyValue>,
}

#[derive(Clone, Debug, Deserialize)]
struct ErrorDetail {
    code: String,
    message: String,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    leader_hint: Option<u64>,
}

/// Why a call failed.
#[derive(Clone, Debug, thiserror::Error)]
pub enum ClientError {
    /// No endpoint accepted a connection in a full pass over the list.
    #[error("no node reachable at {} — is the cluster running? start it with `raftkv cluster`", .endpoints.join(", "))]
    Unreachable {
        /// Every endpoint tried.
        endpoints: Vec<String>,
    },
    /// The key does not exist (404 key_not_found).
    #[error("key not found: {key}")]
    KeyNotFound {
        /// The key asked for.
        key: String,
    },
    /// The compare-and-swap condition did not hold (409 cas_mismatch).
    #[error("compare-and-swap failed: {}", describe_current(.current))]
    CasMismatch {
        /// The key's current value, `None` if absent.
        current: Option<Box<KeyValue>>,
    },
    /// The endpoint answered, but not as a raftkv server does (no
    /// `x-raftkv-node` header, or an error body not in the contract's
    /// shape): a wrong port, or another service.
    #[error("{endpoint} is not a raftkv server (it answered {status} {content_type})")]
    NotRaftkv {
        /// The endpoint that answered.
        endpoint: String,
        /// Its HTTP status.
        status: u16,
        /// Its content type (`no content type` if it sent none).
        content_type: String,
    },
    /// The server answered with an error status and code.
    #[error("{message} ({}, HTTP {status} from {endpoint})", describe_code(.code, .reason.as_deref()))]
    Api {
        /// HTTP status.
        status: u16,
        /// Machine-readable code (`bad_request`, `too_large`,
        /// `not_applied`, `indeterminate`...).
        code: String,
        /// For 5xx answers, the specific cause (`no_leader`, `timeout`...).
        reason: Option<String>,
        /// The server's message.
        message: String,
        /// The leader the node named, if any.
        leader_hint: Option<u64>,
        /// Which endpoint answered.
        endpoint: String,
    },
    /// The request timed out or the connection broke after it was sent:
    /// a write may or may not have been applied.
    #[error("no answer from {endpoint} within the timeout (the request may or may not have been applied): {detail}")]
    Ambiguous {
        /// The endpoint the request went to.
        endpoint: String,
        /// What the transport said.
        detail: String,
    },
    /// The answer could not be decoded.
    #[error("unexpected answer from {endpoint}: {detail}")]
    BadResponse {
        /// The endpoint that answered.
        endpoint: String,
        /// What was wrong with it.
        detail: String,
    },
    /// TLS failed, or the endpoint's scheme does not match the server:
    /// nothing was applied. `problem` says what to change.
    #[error("{endpoint}: {problem}")]
    Tls {
        /// The endpoint.
        endpoint: String,
        /// What went wrong and what to do about it.
        problem: String,
    },
    /// The request was refused before sending (bad endpoint, empty key...).
    #[error("{0}")]
    Invalid(String),
}

fn describe_code(code: &str, reason: Option<&str>) -> String {
    match reason {
        Some(r) => format!("{code}: {r}"),
        None => code.to_string(),
    }
}

fn describe_current(current: &Option<Box<KeyValue>>) -> String {
    match current {
        None => "the key is absent".to_string(),
        Some(kv) => format!(
            "current value {:?} (mod_revision {}, version {})",
            kv.value_lossy(),
            kv.mod_revision,
            kv.version
        ),
    }
}

impl ClientError {
    /// A short, stable name of the error kind, for counting (bench) and
    /// scripts: `unreachable`, `not_raftkv`, `key_not_found`,
    /// `cas_mismatch`, the server's code for API errors (with the reason of
    /// a 5xx: `not_applied:no_leader`, `indeterminate:timeout`),
    /// `ambiguous`, `bad_response`, `invalid`.
    pub fn kind(&self) -> String {
        match self {
            ClientError::Unreachable { .. } => "unreachable".into(),
            ClientError::NotRaftkv { .. } => "not_raftkv".into(),
            ClientError::KeyNotFound { .. } => "key_not_found".into(),
            ClientError::CasMismatch { .. } => "cas_mismatch".into(),
            ClientError::Api { code, reason, .. } => match reason {
                Some(r) => format!("{code}:{r}"),
                None => code.clone(),
            },
            ClientError::Ambiguous { .. } => "ambiguous".into(),
            ClientError::BadResponse { .. } => "bad_response".into(),
            ClientError::Tls { .. } => "tls".into(),
            ClientError::Invalid(_) => "invalid".into(),
        }
    }

    /// The `reason` of a 5xx answer (`no_leader`, `timeout`...), if this is
    /// one.
    pub fn reason(&self) -> Option<&str> {
        match self {
            ClientError::Api { reason, .. } => reason.as_deref(),
            _ => None,
        }
    }

    /// True if the request may or may not have been applied: the server
    /// said `indeterminate`, or the answer was lost after the request was
    /// sent. Every other error means the request had no effect (or, for
    /// 404 and 409 answers, exactly the effect the error describes).
    pub fn is_indeterminate(&self) -> bool {
        match self {
            ClientError::Ambiguous { .. } => true,
            ClientError::Api { code, .. } => code == INDETERMINATE,
            _ => false,
        }
    }
}

/// Percent-encodes one URL path segment: every byte but the RFC 3986
/// unreserved characters, so `/`, `?`, `#`, `%` and spaces in keys survive.
pub fn encode_path_segment(s: &str) -> String {
    encode_path_bytes(s.as_bytes())
}

/// [`encode_path_segment`] for any bytes (`0xFF` is `%FF`).
pub fn encode_path_bytes(s: &[u8]) -> String {
    let mut out = String::with_capacity(s.len());
    for &b in s {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push('%');
            out.push(char::from(b"0123456789ABCDEF"[usize::from(b >> 4)]));
            out.push(char::from(b"0123456789ABCDEF"[usize::from(b & 0xf)]));
        }
    }
    out
}

/// Normalizes one endpoint: trims, adds `http://` when there is no scheme,
/// drops a trailing `/`. Refuses empty strings and schemes other than
/// `http` and `https`.
pub fn normalize_endpoint(raw: &str) -> Result<String, ClientError> {
    let s = raw.trim().trim_end_matches('/');
    if s.is_empty() {
        return Err(ClientError::Invalid(
            "empty endpoint in the endpoint list".into(),
        ));
    }
    let url = if s.contains("://") {
        s.to_string()
    } else {
        format!("http://{s}")
    };
    if !url.starts_with("http://") && !url.starts_with("https://") {
        return Err(ClientError::Invalid(format!(
            "endpoint {raw:?}: only http:// and https:// endpoints are supported"
        )));
    }
    let parsed = reqwest::Url::parse(&url)
        .map_err(|e| ClientError::Invalid(format!("endpoint {raw:?} is not a valid URL: {e}")))?;
    if parsed.host_str().is_none() || parsed.port_or_known_default().is_none() {
        return Err(ClientError::Invalid(format!(
            "endpoint {raw:?} has no host or port"
        )));
    }
    if parsed.path() != "/" || parsed.query().is_some() {
        return Err(ClientError::Invalid(format!(
            "endpoint {raw:?} must be scheme://host:port without a path"
        )));
    }
    Ok(url)
}

/// Parses a comma-separated endpoint list.
pub fn parse_endpoints(list: &str) -> Result<Vec<String>, ClientError> {
    let endpoints = list
        .split(',')
        .filter(|s| !s.trim().is_empty())
        .map(normalize_endpoint)
        .collect::<Result<Vec<_>, _>>()?;
    if endpoints.is_empty() {
        return Err(ClientError::Invalid("the endpoint list is empty".into()));
    }
    if endpoints.len() > ENDPOINTS_MAX {
        return Err(ClientError::Invalid(format!(
            "{} endpoints given; at most {ENDPOINTS_MAX} are supported",
            endpoints.len()
        )));
    }
    Ok(endpoints)
}

/// The body of a write, serialized; sessions are attached per attempt.
#[derive(Clone, Debug)]
enum Body {
    None,
    Json(serde_json::Map<String, serde_json::Value>),
}

/// One request, described so it can be re-sent to another endpoint.
#[derive(Clone, Debug)]
struct Request {
    method: reqwest::Method,
    /// Path and query, starting with `/`.
    path: String,
    body: Body,
    /// Safe to send again after an ambiguous failure (reads, sessioned
    /// writes, idempotent admin calls).
    retry_ambiguous: bool,
    /// Retry 5xx answers on other endpoints; false for per-node status
    /// polls.
    follow_leader: bool,
}

/// How one attempt ended.
enum Attempt {
    /// 2xx with its body.
    Ok(bytes::Bytes),
    /// Non-2xx with the parsed error body.
    Status(u16, ErrorBody),
    /// Could not connect: nothing was sent.
    ConnectFailed,
    /// Something that is not raftkv answered.
    Foreign { status: u16, content_type: String },
    /// Refused before anything was applied, for a reason that applies to
    /// this endpoint (TLS): try the others, report it if none does better.
    Refused(ClientError),
    /// Sent, then no complete answer.
    Ambiguous(String),
}

struct Inner {
    http: reqwest::Client,
    endpoints: Vec<String>,
    preferred: AtomicUsize,
    /// Node id -> client endpoint, learned from `GET /v1/members` and from
    /// status answers, to follow leader hints.
    by_id: Mutex<HashMap<u64, String>>,
    retry_deadline: Duration,
    /// `http` or `https`: the scheme of the first endpoint, used for the
    /// client addresses learned from the cluster.
    scheme: &'static str,
}

/// The raftkv API client. Cheap to clone (shares one connection pool).
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("endpoints", &self.inner.endpoints)
            .finish()
    }
}

impl Client {
    /// Builds a client; fails on an invalid endpoint list.
    pub fn new(config: ClientConfig) -> Result<Client, ClientError> {
        if config.endpoints.is_empty() {
            return Err(ClientError::Invalid("the endpoint list is empty".into()));
        }
        let endpoints = config
            .endpoints
            .iter()
            .map(|e| normalize_endpoint(e))
            .collect::<Result<Vec<_>, _>>()?;
        let https = endpoints.iter().any(|e| e.starts_with("https://"));
        if https && config.tls.is_none() {
            return Err(ClientError::Invalid(
                "https:// endpoints need the CA that signed the servers' certificates: pass --ca FILE (or set RAFTKV_CA)"
                    .into(),
            ));
        }
        let scheme = if endpoints[0].starts_with("https://") {
            "https"
        } else {
            "http"
        };
        let mut builder = reqwest::Client::builder();
        if let Some(tls) = &config.tls {
            builder = builder.use_preconfigured_tls((**tls).clone());
        }
        let http = builder
            .timeout(config.request_timeout)
            .connect_timeout(config.connect_timeout)
            .tcp_nodelay(true)
            // Local cluster: no proxy may sit between us and 127.0.0.1.
            .no_proxy()
            // Idle connections are cheap locally; 1024 covers the bench's
            // largest client count against one leader.
            .pool_max_idle_per_host(1024)
            .build()
            .map_err(|e| ClientError::Invalid(format!("cannot build the HTTP client: {e}")))?;
        Ok(Client {
            inner: Arc::new(Inner {
                http,
                endpoints,
                preferred: AtomicUsize::new(0),
                by_id: Mutex::new(HashMap::new()),
                retry_deadline: config.retry_deadline,
                scheme,
            }),
        })
    }

    /// The endpoints this client knows, normalized.
    pub fn endpoints(&self) -> &[String] {
        &self.inner.endpoints
    }

    /// The endpoint requests go to first.
    pub fn preferred_endpoint(&self) -> String {
        let i = self.inner.preferred.load(Ordering::Relaxed) % self.inner.endpoints.len();
        self.inner.endpoints[i].clone()
    }

    /// Makes `endpoint` the first one tried if it is in the list.
    pub fn prefer(&self, endpoint: &str) {
        if let Some(i) = self.inner.endpoints.iter().position(|e| e == endpoint) {
            self.inner.preferred.store(i, Ordering::Relaxed);
        }
    }

    /// Starts a session: writes through it are applied exactly once even
    /// when retried. `client_id` must be unique among live clients.
    pub fn session(&self, client_id: u64) -> Session {
        Session {
            client: self.clone(),
            client_id,
            next_seq: 1,
        }
    }

    /// Starts a session with a random client id.
    pub fn random_session(&self) -> Session {
        self.session(random_u64() | 1)
    }

    // ---- key-value ----

    /// Sets `key` to `value` (no session: an ambiguous failure is returned,
    /// not retried).
    pub async fn put(&self, key: &str, value: &str) -> Result<PutResponse, ClientError> {
        self.put_with(key, value, None).await
    }

    /// Reads `key`; [`ClientError::KeyNotFound`] if absent.
    pub async fn get(&self, key: &str, consistency: Consistency) -> Result<KeyValue, ClientError> {
        check_key(key)?;
        let req = Request {
            method: reqwest::Method::GET,
            path: format!(
                "/v1/kv/{}?consistency={}",
                encode_path_segment(key),
                consistency.as_str()
            ),
            body: Body::None,
            retry_ambiguous: true,
            follow_leader: true,
        };
        match self.call(&req).await {
            Err(ClientError::Api { code, .. }) if code == "key_not_found" => {
                Err(ClientError::KeyNotFound {
                    key: key.to_string(),
                })
            }
            other => decode(other),
        }
    }

    /// Deletes `key`; [`ClientError::KeyNotFound`] if absent.
    pub async fn delete(&self, key: &str) -> Result<DeleteResponse, ClientError> {
        self.delete_with(key, None).await
    }

    /// Compare-and-swap.
    pub async fn cas(
        &self,
        key: &str,
        condition: &CasCondition,
        action: &CasAction,
    ) -> Result<CasResponse, ClientError> {
        self.cas_with(key, condition, action, None).await
    }

    /// Lists keys starting with `prefix`, at most `limit`.
    pub async fn list(
        &self,
        prefix: &str,
        limit: u64,
        consistency: Consistency,
    ) -> Result<ListResponse, ClientError> {
        self.list_range(&ListRequest {
            prefix: Bytes::copy_from_slice(prefix.as_bytes()),
            limit: Some(limit),
            consistency,
            ..ListRequest::default()
        })
        .await
    }

    /// One page of a listing (see [`ListRequest`]).
    pub async fn list_range(&self, list: &ListRequest) -> Result<ListResponse, ClientError> {
        let mut path = format!(
            "/v1/kv?prefix={}&consistency={}",
            encode_path_bytes(&list.prefix),
            list.consistency.as_str()
        );
        for (name, value) in [
            ("start", &list.start),
            ("range_end", &list.range_end),
            ("after", &list.after),
        ] {
            if let Some(v) = value {
                path.push_str(&format!("&{name}={}", encode_path_bytes(v)));
            }
        }
        if let Some(limit) = list.limit {
            path.push_str(&format!("&limit={limit}"));
        }
        if list.keys_only {
            path.push_str("&keys_only=true");
        }
        if list.count_only {
            path.push_str("&count_only=true");
        }
        let req = Request {
            method: reqwest::Method::GET,
            path,
            body: Body::None,
            retry_ambiguous: true,
            follow_leader: true,
        };
        decode(self.call(&req).await)
    }

    /// Sets `key` to `value`, both any bytes (no session).
    pub async fn put_bytes(&self, key: &[u8], value: &[u8]) -> Result<PutResponse, ClientError> {
        self.put_with(key, value, None).await
    }

    async fn put_with(
        &self,
        key: impl AsRef<[u8]>,
        value: impl AsRef<[u8]>,
        session: Option<(u64, u64)>,
    ) -> Result<PutResponse, ClientError> {
        let key = key.as_ref();
        if key.is_empty() {
            return Err(ClientError::Invalid("the key must not be empty".into()));
        }
        let mut body = serde_json::Map::new();
        match bytes_field(value.as_ref()) {
            (Some(text), _) => body.insert("value".into(), text.into()),
            (None, b64) => body.insert("value_b64".into(), b64.unwrap_or_default().into()),
        };
        add_session(&mut body, session);
        let req = Request {
            method: reqwest::Method::PUT,
            path: format!("/v1/kv/{}", encode_path_bytes(key)),
            body: Body::Json(body),
            retry_ambiguous: session.is_some(),
            follow_leader: true,
        };
        decode(self.call(&req).await)
    }

    async fn delete_with(
        &self,
        key: &str,
        session: Option<(u64, u64)>,
    ) -> Result<DeleteResponse, ClientError> {
        check_key(key)?;
        let mut body = serde_json::Map::new();
        add_session(&mut body, session);
        let req = Request {
            method: reqwest::Method::DELETE,
            path: format!("/v1/kv/{}", encode_path_segment(key)),
            body: if body.is_empty() {
                Body::None
            } else {
                Body::Json(body)
            },
            retry_ambiguous: session.is_some(),
            follow_leader: true,
        };
        match self.call(&req).await {
            Err(ClientError::Api { code, .. }) if code == "key_not_found" => {
                Err(ClientError::KeyNotFound {
                    key: key.to_string(),
                })
            }
            other => decode(other),
        }
    }

    async fn cas_with(
        &self,
        key: &str,
        condition: &CasCondition,
        action: &CasAction,
        session: Option<(u64, u64)>,
    ) -> Result<CasResponse, ClientError> {
        check_key(key)?;
        let mut body = serde_json::Map::new();
        match condition {
            CasCondition::Value(v) => {
                body.insert("expected_value".into(), v.as_str().into());
            }
            CasCondition::Absent => {
                body.insert("expected_value".into(), serde_json::Value::Null);
            }
            CasCondition::ModRevision(r) => {
                body.insert("expected_mod_revision".into(), (*r).into());
            }
        }
        match action {
            CasAction::Put(v) => body.insert("value".into(), v.as_str().into()),
            CasAction::Delete => body.insert("value".into(), serde_json::Value::Null),
        };
        add_session(&mut body, session);
        let req = Request {
            method: reqwest::Method::POST,
            path: format!("/v1/kv/{}/cas", encode_path_segment(key)),
            body: Body::Json(body),
            retry_ambiguous: session.is_some(),
            follow_leader: true,
        };
        decode(self.call(&req).await)
    }

    // ---- cluster ----

    /// `GET /v1/status` of one endpoint, no retries, no failover: the
    /// status of *that* node.
    pub async fn status_of(&self, endpoint: &str) -> Result<NodeStatus, ClientError> {
        let req = Request {
            method: reqwest::Method::GET,
            path: "/v1/status".into(),
            body: Body::None,
            retry_ambiguous: false,
            follow_leader: false,
        };
        let status: NodeStatus = decode(self.call_at(endpoint, &req).await)?;
        self.learn(status.id, endpoint);
        Ok(status)
    }

    /// `GET /version` of one endpoint, no retries, no failover: what *that*
    /// node runs.
    pub async fn version_of(
        &self,
        endpoint: &str,
    ) -> Result<crate::version::BuildInfo, ClientError> {
        let req = Request {
            method: reqwest::Method::GET,
            path: "/version".into(),
            body: Body::None,
            retry_ambiguous: false,
            follow_leader: false,
        };
        decode(self.call_at(endpoint, &req).await)
    }

    /// `GET /healthz` of one endpoint: true when it answered 200.
    pub async fn healthy(&self, endpoint: &str) -> bool {
        let req = Request {
            method: reqwest::Method::GET,
            path: "/healthz".into(),
            body: Body::None,
            retry_ambiguous: false,
            follow_leader: false,
        };
        self.call_at(endpoint, &req).await.is_ok()
    }

    /// `GET /v1/members` from any reachable node.
    pub async fn members(&self) -> Result<Vec<Member>, ClientError> {
        let req = Request {
            method: reqwest::Method::GET,
            path: "/v1/members".into(),
            body: Body::None,
            retry_ambiguous: true,
            follow_leader: true,
        };
        let body: MembersBody = decode(self.call(&req).await)?;
        for m in &body.members {
            self.learn(m.id, &format!("http://{}", m.client_addr));
        }
        Ok(body.members)
    }

    /// Adds a member (as learner or voter); promoting an existing learner
    /// when `learner` is false and `id` is a learner.
    pub async fn add_member(
        &self,
        id: u64,
        peer_addr: &str,
        client_addr: &str,
        learner: bool,
    ) -> Result<Vec<Member>, ClientError> {
        let mut body = serde_json::Map::new();
        body.insert("id".into(), id.into());
        body.insert("peer_addr".into(), peer_addr.into());
        body.insert("client_addr".into(), client_addr.into());
        body.insert(
            "role".into(),
            if learner { "learner" } else { "voter" }.into(),
        );
        let req = Request {
            method: reqwest::Method::POST,
            path: "/v1/members".into(),
            body: Body::Json(body),
            // Adding the same member twice is refused or a no-op: safe.
            retry_ambiguous: true,
            follow_leader: true,
        };
        let body: MembersBody = decode(self.call(&req).await)?;
        Ok(body.members)
    }

    /// Promotes learner `id` to voter.
    pub async fn promote_member(&self, id: u64) -> Result<(), ClientError> {
        let req = Request {
            method: reqwest::Method::POST,
            path: format!("/v1/members/{id}/promote"),
            body: Body::None,
            retry_ambiguous: true,
            follow_leader: true,
        };
        self.call(&req).await.map(|_| ())
    }

    /// Removes member `id`.
    pub async fn remove_member(&self, id: u64) -> Result<(), ClientError> {
        let req = Request {
            method: reqwest::Method::DELETE,
            path: format!("/v1/members/{id}"),
            body: Body::None,
            retry_ambiguous: true,
            follow_leader: true,
        };
        self.call(&req).await.map(|_| ())
    }

    /// Transfers leadership to `to`; returns the new leader.
    pub async fn transfer_leader(&self, to: u64) -> Result<u64, ClientError> {
        #[derive(Deserialize)]
        struct Answer {
            leader: u64,
        }
        let mut body = serde_json::Map::new();
        body.insert("to".into(), to.into());
        let req = Request {
            method: reqwest::Method::POST,
            path: "/v1/leader/transfer".into(),
            body: Body::Json(body),
            retry_ambiguous: true,
            follow_leader: true,
        };
        let answer: Answer = decode(self.call(&req).await)?;
        if let Some(ep) = self.endpoint_of(answer.leader) {
            self.prefer(&ep);
        }
        Ok(answer.leader)
    }

    /// Asks every endpoint for its status and makes the leader (by the
    /// highest term seen) the preferred endpoint. Returns its id, if any.
    pub async fn find_leader(&self) -> Option<u64> {
        let mut best: Option<(u64, u64)> = None; // (term, id)
        for ep in self.inner.endpoints.clone() {
            if let Ok(s) = self.status_of(&ep).await {
                if s.role == "leader" && best.is_none_or(|(t, _)| s.term > t) {
                    best = Some((s.term, s.id));
                    self.prefer(&ep);
                }
            }
        }
        best.map(|(_, id)| id)
    }

    // ---- plumbing ----

    fn learn(&self, id: u64, endpoint: &str) {
        if let Ok(mut map) = self.inner.by_id.lock() {
            map.insert(id, endpoint.to_string());
        }
    }

    fn endpoint_of(&self, id: u64) -> Option<String> {
        self.inner
            .by_id
            .lock()
            .ok()
            .and_then(|m| m.get(&id).cloned())
    }

    /// Sends `req` with failover and retries (see the module docs).
    async fn call(&self, req: &Request) -> Result<bytes::Bytes, ClientError> {
        let n = self.inner.endpoints.len();
        let deadline = Instant::now() + self.inner.retry_deadline;
        let mut pause = RETRY_PAUSE_MIN;
        let mut index = self.inner.preferred.load(Ordering::Relaxed) % n;
        // An endpoint outside the list (a hinted leader learned from the
        // membership), tried once before going back to the list.
        let mut detour: Option<String> = None;
        // Endpoints in a row that refused or are not raftkv servers.
        let mut refused_in_a_row = 0usize;
        let mut foreign: Option<ClientError> = None;
        let mut last_error: Option<ClientError>;
        loop {
            let endpoint = detour
                .take()
                .unwrap_or_else(|| self.inner.endpoints[index].clone());
            let outcome = self.attempt(&endpoint, req).await;
            match outcome {
                Attempt::Ok(body) => {
                    self.prefer(&endpoint);
                    return Ok(body);
                }
                Attempt::ConnectFailed | Attempt::Foreign { .. } | Attempt::Refused(_) => {
                    match outcome {
                        Attempt::Foreign {
                            status,
                            content_type,
                        } => {
                            foreign.get_or_insert(ClientError::NotRaftkv {
                                endpoint: endpoint.clone(),
                                status,
                                content_type,
                            });
                        }
                        Attempt::Refused(e) => {
                            foreign.get_or_insert(e);
                        }
                        _ => {}
                    }
                    refused_in_a_row += 1;
                    if refused_in_a_row >= n {
                        return Err(foreign.unwrap_or_else(|| ClientError::Unreachable {
                            endpoints: self.inner.endpoints.clone(),
                        }));
                    }
                    index = (index + 1) % n;
                    continue;
                }
                Attempt::Ambiguous(detail) => {
                    refused_in_a_row = 0;
                    let err = ClientError::Ambiguous {
                        endpoint: endpoint.clone(),
                        detail,
                    };
                    if !req.retry_ambiguous || !req.follow_leader {
                        return Err(err);
                    }
                    last_error = Some(err);
                    index = (index + 1) % n;
                }
                Attempt::Status(status, body) => {
                    refused_in_a_row = 0;
                    let err = api_error(status, body, &endpoint);
                    let retry = match &err {
                        ClientError::Api { code, .. } if code == NOT_APPLIED => true,
                        ClientError::Api { code, .. } if code == INDETERMINATE => {
                            req.retry_ambiguous
                        }
                        _ => false,
                    };
                    if !retry || !req.follow_leader {
                        return Err(err);
                    }
                    let hint = match &err {
                        ClientError::Api { leader_hint, .. } => *leader_hint,
                        _ => None,
                    };
                    last_error = Some(err);
                    let mut moved = false;
                    if let Some(leader) = hint {
                        let known = match self.endpoint_of(leader) {
                            Some(ep) => Some(ep),
                            None => {
                                // Learn the hinted leader's address; errors
                                // here just mean we rotate instead.
                                self.learn_members_from(&endpoint).await;
                                self.endpoint_of(leader)
                            }
                        };
                        if let Some(ep) = known {
                            if ep != endpoint {
                                match self.inner.endpoints.iter().position(|e| *e == ep) {
                                    Some(i) => index = i,
                                    None => detour = Some(ep),
                                }
                                moved = true;
                            }
                        }
                    }
                    if !moved {
                        index = (index + 1) % n;
                    }
                }
            }
            // Pause before the retry: short when following a fresh hint.
            let now = Instant::now();
            if now >= deadline {
                return Err(last_error.or(foreign).unwrap_or(ClientError::Unreachable {
                    endpoints: self.inner.endpoints.clone(),
                }));
            }
            tokio::time::sleep(pause.min(deadline - now)).await;
            pause = (pause * 2).min(RETRY_PAUSE_MAX);
        }
    }

    /// Sends `req` to one endpoint only, mapping failures to errors.
    async fn call_at(&self, endpoint: &str, req: &Request) -> Result<bytes::Bytes, ClientError> {
        match self.attempt(endpoint, req).await {
            Attempt::Ok(body) => Ok(body),
            Attempt::ConnectFailed => Err(ClientError::Unreachable {
                endpoints: vec![endpoint.to_string()],
            }),
            Attempt::Foreign {
                status,
                content_type,
            } => Err(ClientError::NotRaftkv {
                endpoint: endpoint.to_string(),
                status,
                content_type,
            }),
            Attempt::Ambiguous(detail) => Err(ClientError::Ambiguous {
                endpoint: endpoint.to_string(),
                detail,
            }),
            Attempt::Refused(e) => Err(e),
            Attempt::Status(status, body) => Err(api_error(status, body, endpoint)),
        }
    }

    /// The endpoint of a node's client address (`host:port`, as the member
    /// list gives it), with this client's scheme.
    pub fn endpoint_for(&self, client_addr: &str) -> String {
        format!("{}://{client_addr}", self.inner.scheme)
    }

    async fn learn_members_from(&self, endpoint: &str) {
        let req = Request {
            method: reqwest::Method::GET,
            path: "/v1/members".into(),
            body: Body::None,
            retry_ambiguous: false,
            follow_leader: false,
        };
        if let Ok(bytes) = self.call_at(endpoint, &req).await {
            if let Ok(body) = serde_json::from_slice::<MembersBody>(&bytes) {
                for m in body.members {
                    self.learn(m.id, &self.endpoint_for(&m.client_addr));
                }
            }
        }
    }

    async fn attempt(&self, endpoint: &str, req: &Request) -> Attempt {
        let url = format!("{endpoint}{}", req.path);
        let mut builder = self.inner.http.request(req.method.clone(), &url);
        if let Body::Json(map) = &req.body {
            builder = builder.json(map);
        }
        let response = match builder.send().await {
            Ok(r) => r,
            Err(e) => {
                if let Some(problem) = tls_problem(&e, endpoint) {
                    // The server refused the handshake or we refused its
                    // certificate: nothing reached the API.
                    return Attempt::Refused(ClientError::Tls {
                        endpoint: endpoint.to_string(),
                        problem,
                    });
                }
                return if e.is_connect() {
                    Attempt::ConnectFailed
                } else {
                    Attempt::Ambiguous(error_chain(&e))
                };
            }
        };
        let status = response.status().as_u16();
        let content_type = || {
            response
                .headers()
                .get(reqwest::header::CONTENT_TYPE)
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                .unwrap_or_else(|| "no content type".to_string())
        };
        if response.headers().contains_key(TLS_REQUIRED_HEADER) {
            let https = endpoint.replacen("http://", "https://", 1);
            return Attempt::Refused(ClientError::Tls {
                endpoint: endpoint.to_string(),
                problem: format!(
                    "the server at {endpoint} speaks TLS; use {https} (with --ca FILE, the CA that signed its certificate)"
                ),
            });
        }
        if !response.headers().contains_key(NODE_HEADER) {
            // Not raftkv: do not even read what it sent.
            return Attempt::Foreign {
                status,
                content_type: content_type(),
            };
        }
        let content_type = content_type();
        if let Some(len) = response.content_length() {
            if len > RESPONSE_BYTES_MAX as u64 {
                return Attempt::Ambiguous(format!("answer of {len} bytes is over the limit"));
            }
        }
        let body = match response.bytes().await {
            Ok(b) => b,
            Err(e) => return Attempt::Ambiguous(error_chain(&e)),
        };
        if (200..300).contains(&status) {
            return Attempt::Ok(body);
        }
        match serde_json::from_slice::<ErrorBody>(&body) {
            Ok(parsed) => Attempt::Status(status, parsed),
            // raftkv answers every error with its JSON error object.
            Err(_) => Attempt::Foreign {
                status,
                content_type,
            },
        }
    }
}

/// A client with an exactly-once session: writes carry `(client_id, seq)`
/// and are retried safely after ambiguous failures. One write at a time
/// (`&mut self`): the server refuses a sequence number lower than the last
/// one it applied for the client, so concurrent writes must use separate
/// sessions.
#[derive(Debug)]
pub struct Session {
    client: Client,
    client_id: u64,
    next_seq: u64,
}

impl Session {
    /// The client id of this session.
    pub fn client_id(&self) -> u64 {
        self.client_id
    }

    /// The underlying client (for reads).
    pub fn client(&self) -> &Client {
        &self.client
    }

    fn next(&mut self) -> Option<(u64, u64)> {
        let seq = self.next_seq;
        self.next_seq += 1;
        Some((self.client_id, seq))
    }

    /// Sets `key` to `value`, exactly once.
    pub async fn put(&mut self, key: &str, value: &str) -> Result<PutResponse, ClientError> {
        let s = self.next();
        self.client.put_with(key, value, s).await
    }

    /// Sets `key` to `value`, both any bytes, exactly once.
    pub async fn put_bytes(
        &mut self,
        key: &[u8],
        value: &[u8],
    ) -> Result<PutResponse, ClientError> {
        let s = self.next();
        self.client.put_with(key, value, s).await
    }

    /// Deletes `key`, exactly once.
    pub async fn delete(&mut self, key: &str) -> Result<DeleteResponse, ClientError> {
        let s = self.next();
        self.client.delete_with(key, s).await
    }

    /// Compare-and-swap, exactly once.
    pub async fn cas(
        &mut self,
        key: &str,
        condition: &CasCondition,
        action: &CasAction,
    ) -> Result<CasResponse, ClientError> {
        let s = self.next();
        self.client.cas_with(key, condition, action, s).await
    }
}

fn add_session(body: &mut serde_json::Map<String, serde_json::Value>, session: Option<(u64, u64)>) {
    if let Some((client_id, seq)) = session {
        body.insert("client_id".into(), client_id.into());
        body.insert("seq".into(), seq.into());
    }
}

fn check_key(key: &str) -> Result<(), ClientError> {
    if key.is_empty() {
        return Err(ClientError::Invalid("the key must not be empty".into()));
    }
    Ok(())
}

fn api_error(status: u16, body: ErrorBody, endpoint: &str) -> ClientError {
    if status == 409 && body.error.code == "cas_mismatch" {
        return ClientError::CasMismatch {
            current: body.current.map(Box::new),
        };
    }
    let message = if body.error.message.is_empty() {
        format!("HTTP {status}")
    } else {
        body.error.message
    };
    ClientError::Api {
        status,
        code: body.error.code,
        reason: body.error.reason,
        message,
        leader_hint: body.error.leader_hint,
        endpoint: endpoint.to_string(),
    }
}

fn decode<T: serde::de::DeserializeOwned>(
    result: Result<bytes::Bytes, ClientError>,
) -> Result<T, ClientError> {
    let bytes = result?;
    serde_json::from_slice(&bytes).map_err(|e| ClientError::BadResponse {
        endpoint: String::new(),
        detail: format!(
            "{e}: {}",
            String::from_utf8_lossy(&bytes[..bytes.len().min(200)])
        ),
    })
}

/// The header of a TLS port's answer to a plain-HTTP request.
pub use crate::server::listener::TLS_REQUIRED_HEADER;

/// What went wrong with TLS in a failed request, in words that say what to
/// change; `None` if the failure was not about TLS.
fn tls_problem(e: &reqwest::Error, endpoint: &str) -> Option<String> {
    use rustls::{AlertDescription, CertificateError, Error as TlsErr};
    let https = endpoint.starts_with("https://");
    // rustls' error sits inside an io::Error somewhere in the chain, and
    // io::Error's `source()` skips what it wraps: look inside each one.
    let mut found: Option<&TlsErr> = None;
    let mut eof_in_handshake = false;
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = current {
        if let Some(t) = err.downcast_ref::<TlsErr>() {
            found = Some(t);
            break;
        }
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            if let Some(t) = raft_runtime::tls::rustls_error(io) {
                found = Some(t);
                break;
            }
            // tokio-rustls' words for a peer that closed mid-handshake.
            eof_in_handshake |= io.to_string().contains("tls handshake eof");
        }
        current = err.source();
    }
    let plain = endpoint.replacen("https://", "http://", 1);
    let problem = match found {
        Some(TlsErr::InvalidCertificate(
            CertificateError::UnknownIssuer | CertificateError::BadSignature,
        )) => "the server's certificate is not signed by the CA given with --ca (or RAFTKV_CA); use the CA of the cluster's certificates".to_string(),
        Some(TlsErr::InvalidCertificate(
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
        )) => "the server's certificate is not valid for the host of this endpoint; use a name or IP it carries (`raftkv certs init` certificates carry localhost, 127.0.0.1 and --hosts)".to_string(),
        Some(TlsErr::InvalidCertificate(other)) => {
            format!("the server's certificate was refused: {other}")
        }
        Some(TlsErr::AlertReceived(AlertDescription::CertificateRequired)) => {
            "the server requires a client certificate: pass --cert FILE --key FILE (or RAFTKV_CERT, RAFTKV_KEY)".to_string()
        }
        Some(TlsErr::AlertReceived(
            a @ (AlertDescription::BadCertificate
            | AlertDescription::UnknownCA
            | AlertDescription::CertificateExpired
            | AlertDescription::CertificateUnknown
            | AlertDescription::AccessDenied
            | AlertDescription::UnsupportedCertificate),
        )) => format!(
            "the server refused our client certificate ({a:?}): it must be signed by the server's CA (--cert, --key)"
        ),
        Some(TlsErr::InvalidMessage(_)) if https => format!(
            "the server does not speak TLS (it answered in plain text); use {plain}"
        ),
        Some(other) => format!("TLS failed: {other}"),
        None if https && eof_in_handshake => format!(
            "the server closed the connection during the TLS handshake; does it speak TLS (else use {plain})?"
        ),
        None => return None,
    };
    Some(problem)
}

/// The error and its sources on one line (reqwest's top-level message alone
/// says only "error sending request"). Also the server's forwarding path.
pub(crate) fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        let text = inner.to_string();
        if !s.contains(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        source = inner.source();
    }
    s
}

/// A random u64 from the standard library's per-process random hash keys
/// mixed with the time and pid (no extra dependency; not cryptographic).
pub fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.write_u32(std::process::id());
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cli_pages_by_the_servers_list_limit() {
        assert_eq!(
            LIST_PAGE_MAX,
            raftkv_state::KvConfig::default().list_limit_max
        );
    }

    #[test]
    fn path_segments_are_percent_encoded() {
        assert_eq!(encode_path_segment("abc-1.2_~"), "abc-1.2_~");
        assert_eq!(encode_path_segment("a/b c?d#%"), "a%2Fb%20c%3Fd%23%25");
        assert_eq!(encode_path_segment("é"), "%C3%A9");
    }

    #[test]
    fn endpoints_are_normalized_and_checked() {
        assert_eq!(
            normalize_endpoint("127.0.0.1:7700").unwrap(),
            "http://127.0.0.1:7700"
        );
        assert_eq!(normalize_endpoint(" http://h:1/ ").unwrap(), "http://h:1");
        assert_eq!(normalize_endpoint("https://h:1/").unwrap(), "https://h:1");
        assert!(normalize_endpoint("ftp://h:1").is_err());
        assert!(normalize_endpoint("http://h:1/x").is_err());
        assert!(normalize_endpoint("").is_err());
        assert!(parse_endpoints(",,").is_err());
        assert_eq!(parse_endpoints("a:1,b:2").unwrap().len(), 2);
    }

    #[test]
    fn random_ids_differ() {
        assert_ne!(random_u64(), random_u64());
    }
}
