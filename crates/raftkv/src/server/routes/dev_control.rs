//! `POST /v1/dev/control` body `{"node": 2, "action": "kill" | "restart" |
//! "isolate" | "heal"}`: the dashboard's buttons. Only with
//! `--dashboard-controls` (which `raftkv cluster` sets); otherwise the route
//! answers 404 as if it did not exist, saying how to turn it on.
//!
//! - `isolate` / `heal` cut the node off its peers or reconnect it (see
//!   `server/isolate.rs`). Asked of another node, this node relays the
//!   request to that node's client address (one hop: a relayed request
//!   naming a third node is refused).
//! - `kill` / `restart` need the process's parent: they are relayed to the
//!   launcher's control endpoint (`--launcher-url`, set by `raftkv
//!   cluster`), which sends SIGKILL or starts the node again. Without a
//!   launcher they are a 400 saying so.
//!
//! The relayed answer (status and JSON body) is passed back unchanged. A
//! relay that could not connect changed nothing (503
//! `not_applied`/`forward_failed`); one whose answer was lost may have
//! acted (503 `indeterminate`/`forward_failed`).

use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use raft_core::NodeId;
use raft_runtime::PeerAddr;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::dashboard::read_bounded;
use crate::server::app::SharedApp;
use crate::server::error::{ApiError, Reason};
use crate::server::extract::{
    parse_json, LimitedBody, NoQuery, QueryParams, RequestInfo, FORWARDED_HEADER,
};

/// Largest relayed answer, in bytes (they are a few dozen).
const RELAY_ANSWER_BYTES_MAX: usize = 64 << 10;

/// What a button asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// SIGKILL the node's process (launcher).
    Kill,
    /// Start a killed node again (launcher).
    Restart,
    /// Cut the node off its peers.
    Isolate,
    /// Reconnect an isolated node.
    Heal,
}

/// The request body, shared with the launcher's control endpoint.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ControlRequest {
    pub node: NodeId,
    pub action: Action,
}

pub async fn handle(
    State(app): State<SharedApp>,
    info: RequestInfo,
    _: QueryParams<NoQuery>,
    LimitedBody(body): LimitedBody,
) -> Result<Response, ApiError> {
    if !app.cfg.dashboard_controls {
        return Err(ApiError::NotFound(
            "the dashboard controls are off on this node (start it with --dashboard-controls, \
             as `raftkv cluster` does)"
                .into(),
        ));
    }
    let req: ControlRequest = parse_json(&body)?;
    if req.node == 0 {
        return Err(ApiError::BadRequest("node id 0 is reserved".into()));
    }
    match req.action {
        Action::Isolate | Action::Heal if req.node == app.cfg.id => {
            let cut = req.action == Action::Isolate;
            app.isolation.set(cut);
            tracing::warn!(
                node = app.cfg.id,
                isolated = cut,
                "dashboard control: {}",
                if cut {
                    "cut off from every peer"
                } else {
                    "reconnected to the peers"
                }
            );
            Ok(Json(json!({"node": req.node, "isolated": cut})).into_response())
        }
        Action::Isolate | Action::Heal => {
            if info.forwarded {
                return Err(ApiError::BadRequest(format!(
                    "this is node {}, not node {}; a relayed control request is not relayed again",
                    app.cfg.id, req.node
                )));
            }
            let Some(addr) = app.client_addr(req.node) else {
                return Err(ApiError::NotFound(format!(
                    "node {} has no known client address",
                    req.node
                )));
            };
            relay(&app, &addr, "/v1/dev/control", &body).await
        }
        Action::Kill | Action::Restart => {
            let Some(launcher) = &app.cfg.launcher else {
                return Err(ApiError::BadRequest(
                    "kill and restart need the launcher that started the node (`raftkv cluster`); \
                     this node was started without --launcher-url"
                        .into(),
                ));
            };
            relay(&app, launcher, "/v1/control", &body).await
        }
    }
}

/// POSTs `body` to `http://{addr}{path}` and passes the answer back.
async fn relay(
    app: &SharedApp,
    addr: &PeerAddr,
    path: &str,
    body: &bytes::Bytes,
) -> Result<Response, ApiError> {
    let url = format!("http://{addr}{path}");
    let resp = app
        .http
        .post(&url)
        .header(FORWARDED_HEADER, "1")
        .header(header::CONTENT_TYPE, "application/json")
        .body(body.clone())
        .send()
        .await
        .map_err(|e| {
            let why = format!("relaying to {url}: {}", crate::client::error_chain(&e));
            if e.is_connect() {
                ApiError::not_applied(Reason::ForwardFailed, why)
            } else {
                ApiError::indeterminate(Reason::ForwardFailed, why)
            }
        })?;
    let status = StatusCode::from_u16(resp.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    let bytes = read_bounded(resp, RELAY_ANSWER_BYTES_MAX)
        .await
        .map_err(|e| {
            ApiError::indeterminate(Reason::ForwardFailed, format!("relaying to {url}: {e}"))
        })?;
    let mut out = (status, bytes).into_response();
    out.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Ok(out)
}
