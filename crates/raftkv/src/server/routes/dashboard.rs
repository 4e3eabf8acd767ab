//! The live dashboard, served by every node:
//!
//! - `GET /` → the page (`crates/raftkv/src/dashboard/index.html`), and
//!   `GET /dashboard/{file}` its script and style sheet: plain files
//!   compiled into the binary with `include_str!`, no build step, nothing
//!   loaded from elsewhere (the page's Content-Security-Policy allows only
//!   this node as a source, so a stray CDN link would fail loudly);
//! - `GET /v1/dashboard/node` → this node alone: its status (role, term,
//!   leader, vote, indexes, per-follower progress), its counters (messages
//!   sent to each peer, elections started and won, leader changes...),
//!   whether it is isolated, whether its controls are on;
//! - `GET /v1/dashboard` → what the page polls: every member's
//!   `/v1/dashboard/node`, fetched by this node (its own answered
//!   locally), so the page talks to one origin only (a browser would
//!   refuse to read answers from the other nodes' ports) and keeps working
//!   from a container's published port, where the other nodes' addresses
//!   are compose service names the browser cannot resolve. A member that
//!   does not answer within [`NODE_FETCH_TIMEOUT`] is listed with the
//!   error.
//!
//! The page computes rates (messages per second between each pair of
//! nodes) from the differences between two polls of the counters, and
//! infers each election's cause from what it saw before (the old leader
//! killed, stopped answering, isolated, or handing over).

use std::collections::BTreeMap;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;
use raft_core::NodeId;
use raft_runtime::metrics::PeerLabel;
use raft_runtime::{PeerAddr, PeerProgress};
use serde::{Deserialize, Serialize};

use super::status::MembershipJson;
use crate::server::app::{App, SharedApp};
use crate::server::error::ApiError;
use crate::server::extract::{NoBody, NoQuery, QueryParams};

/// How long `/v1/dashboard` waits for another member's answer. The page
/// polls about twice a second; a stopped (SIGSTOP) node must not stall it
/// for the full request timeout.
pub const NODE_FETCH_TIMEOUT: Duration = Duration::from_millis(800);
/// Largest answer accepted from another member's `/v1/dashboard/node`.
const NODE_ANSWER_BYTES_MAX: usize = 1 << 20;

const INDEX_HTML: &str = include_str!("../../dashboard/index.html");
const APP_JS: &str = include_str!("../../dashboard/app.js");
const STYLE_CSS: &str = include_str!("../../dashboard/style.css");

/// Only this node may provide scripts, styles and data; images may be
/// inline (`data:`) for the favicon. Nothing is framed.
const CSP: &str = "default-src 'self'; img-src 'self' data:; object-src 'none'; \
                   base-uri 'none'; frame-ancestors 'none'";

/// `GET /`.
pub async fn page(_: QueryParams<NoQuery>, _: NoBody) -> Response {
    asset_response("text/html; charset=utf-8", INDEX_HTML)
}

/// `GET /dashboard/{file}`: `app.js` or `style.css`.
pub async fn asset(
    Path(file): Path<String>,
    _: QueryParams<NoQuery>,
    _: NoBody,
) -> Result<Response, ApiError> {
    match file.as_str() {
        "app.js" => Ok(asset_response("text/javascript; charset=utf-8", APP_JS)),
        "style.css" => Ok(asset_response("text/css; charset=utf-8", STYLE_CSS)),
        _ => Err(ApiError::NotFound(format!(
            "no dashboard file {file} (there are app.js and style.css)"
        ))),
    }
}

fn asset_response(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            // A new binary serves new files: never run a stale script.
            (header::CACHE_CONTROL, "no-cache"),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        body,
    )
        .into_response()
}

/// One node's status, as `/v1/status` has it plus what the page needs.
#[derive(Debug, Serialize, Deserialize)]
pub struct NodeStatusJson {
    pub role: String,
    pub term: u64,
    pub vote: Option<NodeId>,
    pub leader: Option<NodeId>,
    pub commit_index: u64,
    pub applied_index: u64,
    pub last_index: u64,
    pub persisted_index: u64,
    pub snapshot_index: u64,
    pub members: MembershipJson,
    /// Per follower (on the leader): match and next index, state.
    pub peers: Vec<PeerJson>,
    pub transfer_target: Option<NodeId>,
    /// Election timer: ticks since its last reset, and the randomized
    /// timeout it counts towards (the page draws it as a ring).
    pub election_elapsed_ticks: u32,
    pub election_timeout_ticks: u32,
    pub pending_proposals: usize,
    pub pending_reads: usize,
}

/// A follower's progress, as its leader sees it.
#[derive(Debug, Serialize, Deserialize)]
pub struct PeerJson {
    pub id: NodeId,
    pub match_index: u64,
    pub next_index: u64,
    /// `Probe`, `Replicate` or `Snapshot`.
    pub state: String,
}

impl From<PeerProgress> for PeerJson {
    fn from(p: PeerProgress) -> Self {
        PeerJson {
            id: p.id,
            match_index: p.match_index,
            next_index: p.next_index,
            state: p.state,
        }
    }
}

/// One node's counters since it started (the page turns them into rates).
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct CountersJson {
    /// Raft messages written to each peer's connection, by peer id.
    pub messages_sent: BTreeMap<NodeId, u64>,
    /// Raft messages dropped for each peer (queue full, not connected).
    pub messages_dropped: BTreeMap<NodeId, u64>,
    /// Raft messages received from all peers.
    pub messages_received: u64,
    /// Elections and pre-elections this node started.
    pub elections_started: u64,
    pub elections_won: u64,
    /// Times this node saw the leader change.
    pub leader_changes: u64,
    pub entries_committed: u64,
    pub proposals: u64,
    /// Messages the isolation switch dropped: (outgoing, incoming).
    pub isolated_dropped_out: u64,
    pub isolated_dropped_in: u64,
}

/// `GET /v1/dashboard/node`.
#[derive(Debug, Serialize, Deserialize)]
pub struct NodeJson {
    pub id: NodeId,
    pub status: NodeStatusJson,
    pub counters: CountersJson,
    /// Cut off its peers by the dashboard's "isolate".
    pub isolated: bool,
    /// `--dashboard-controls`.
    pub controls: bool,
    /// Kill and restart are possible (a launcher started this node).
    pub launcher: bool,
    /// `--tick-ms`: elections take 10 to 20 ticks.
    pub tick_ms: u64,
}

/// One member in `GET /v1/dashboard`.
#[derive(Debug, Serialize)]
pub struct MemberView {
    pub id: NodeId,
    pub client_addr: Option<PeerAddr>,
    /// Its `/v1/dashboard/node`, if it answered.
    pub node: Option<NodeJson>,
    /// Why not, if it did not.
    pub error: Option<String>,
}

/// `GET /v1/dashboard`.
#[derive(Debug, Serialize)]
pub struct ClusterJson {
    /// The node that fetched this (the page's origin).
    pub served_by: NodeId,
    pub controls: bool,
    pub launcher: bool,
    pub tick_ms: u64,
    pub nodes: Vec<MemberView>,
}

/// This node's view, straight from the runtime.
pub async fn local_node(app: &App) -> Result<NodeJson, ApiError> {
    let st = app.raft.status().await?;
    let m = app.raft.metrics();
    let per_peer = |family: &prometheus_client::metrics::family::Family<
        PeerLabel,
        prometheus_client::metrics::counter::Counter,
    >| {
        st.membership
            .members()
            .into_iter()
            .filter(|id| *id != st.id)
            .map(|id| (id, family.get_or_create(&PeerLabel::new(id)).get()))
            .collect::<BTreeMap<_, _>>()
    };
    let (dropped_out, dropped_in) = app.isolation.dropped();
    Ok(NodeJson {
        id: st.id,
        counters: CountersJson {
            messages_sent: per_peer(&m.messages_sent),
            messages_dropped: per_peer(&m.messages_dropped),
            messages_received: m.messages_received.get(),
            elections_started: m.elections_started.get(),
            elections_won: m.elections_won.get(),
            leader_changes: m.leader_changes.get(),
            entries_committed: m.entries_committed.get(),
            proposals: m.proposals.get(),
            isolated_dropped_out: dropped_out,
            isolated_dropped_in: dropped_in,
        },
        status: NodeStatusJson {
            role: st.role.to_string(),
            term: st.term,
            vote: st.vote,
            leader: st.leader,
            commit_index: st.commit_index,
            applied_index: st.applied_index,
            last_index: st.last_index,
            persisted_index: st.persisted_index,
            snapshot_index: st.snapshot_index,
            members: MembershipJson::from(&st.membership),
            peers: st.peers.into_iter().map(PeerJson::from).collect(),
            transfer_target: st.transfer_target,
            election_elapsed_ticks: st.election_elapsed_ticks,
            election_timeout_ticks: st.election_timeout_ticks,
            pending_proposals: st.pending_proposals,
            pending_reads: st.pending_reads,
        },
        isolated: app.isolation.is_cut(),
        controls: app.cfg.dashboard_controls,
        launcher: app.cfg.launcher.is_some(),
        tick_ms: u64::try_from(app.cfg.tick.as_millis()).unwrap_or(u64::MAX),
    })
}

/// `GET /v1/dashboard/node`.
pub async fn node(
    State(app): State<SharedApp>,
    _: QueryParams<NoQuery>,
    _: NoBody,
) -> Result<Json<NodeJson>, ApiError> {
    local_node(&app).await.map(Json)
}

/// `GET /v1/dashboard`.
pub async fn cluster(
    State(app): State<SharedApp>,
    _: QueryParams<NoQuery>,
    _: NoBody,
) -> Result<Json<ClusterJson>, ApiError> {
    let me = local_node(&app).await?;
    // Every member this node knows of, and the founding ones (a founding
    // node that was removed still shows, so its state is not a mystery).
    let mut ids: Vec<NodeId> = me
        .status
        .members
        .voters
        .iter()
        .chain(&me.status.members.voters_outgoing)
        .chain(&me.status.members.learners)
        .chain(app.cfg.clients.keys())
        .copied()
        .collect();
    ids.sort_unstable();
    ids.dedup();
    let mut fetches = tokio::task::JoinSet::new();
    for id in ids.iter().copied().filter(|id| *id != app.cfg.id) {
        let addr = app.client_addr(id);
        let http = app.http.clone();
        let scheme = app.cfg.scheme();
        fetches.spawn(async move {
            let answer = match &addr {
                Some(a) => fetch_node(&http, scheme, a).await,
                None => Err("its client address is unknown here".to_string()),
            };
            (id, addr, answer)
        });
    }
    let mut views: BTreeMap<NodeId, MemberView> = BTreeMap::new();
    while let Some(joined) = fetches.join_next().await {
        // A fetch task only panics on a bug; leave that member out.
        let Ok((id, client_addr, answer)) = joined else {
            continue;
        };
        let (node, error) = match answer {
            Ok(n) => (Some(n), None),
            Err(e) => (None, Some(e)),
        };
        views.insert(
            id,
            MemberView {
                id,
                client_addr,
                node,
                error,
            },
        );
    }
    let (controls, launcher, tick_ms) = (me.controls, me.launcher, me.tick_ms);
    views.insert(
        app.cfg.id,
        MemberView {
            id: app.cfg.id,
            client_addr: app.client_addr(app.cfg.id),
            node: Some(me),
            error: None,
        },
    );
    Ok(Json(ClusterJson {
        served_by: app.cfg.id,
        controls,
        launcher,
        tick_ms,
        nodes: views.into_values().collect(),
    }))
}

/// Another member's `/v1/dashboard/node`, or why not.
/// `scheme`: this node's (`https` under TLS: every node of a cluster runs
/// with TLS or none does), as forwarding does.
async fn fetch_node(
    http: &reqwest::Client,
    scheme: &str,
    addr: &PeerAddr,
) -> Result<NodeJson, String> {
    let url = format!("{scheme}://{addr}/v1/dashboard/node");
    let resp = http
        .get(&url)
        .timeout(NODE_FETCH_TIMEOUT)
        .send()
        .await
        .map_err(|e| {
            if e.is_connect() {
                "not listening".to_string()
            } else if e.is_timeout() {
                format!("no answer within {} ms", NODE_FETCH_TIMEOUT.as_millis())
            } else {
                crate::client::error_chain(&e)
            }
        })?;
    let status = resp.status();
    let bytes = read_bounded(resp, NODE_ANSWER_BYTES_MAX).await?;
    if !status.is_success() {
        return Err(format!(
            "answered {status}: {}",
            String::from_utf8_lossy(&bytes[..bytes.len().min(200)])
        ));
    }
    serde_json::from_slice(&bytes).map_err(|e| format!("unreadable answer: {e}"))
}

/// The body of `resp`, refused past `max` bytes (counted as it arrives,
/// whatever `Content-Length` says).
pub async fn read_bounded(mut resp: reqwest::Response, max: usize) -> Result<Vec<u8>, String> {
    let too_large = || format!("answer over {max} bytes");
    if resp.content_length().is_some_and(|n| n > max as u64) {
        return Err(too_large());
    }
    let mut out = Vec::new();
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| crate::client::error_chain(&e))?
    {
        if out.len() + chunk.len() > max {
            return Err(too_large());
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}
