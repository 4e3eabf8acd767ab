//! `POST /v1/leader/transfer` body `{"to": 2}` → 200 `{"leader": 2}` once
//! node 2 leads (or 504 `indeterminate`/`timeout`: the target may still
//! take over). Runs on the leader; a follower forwards.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use raft_runtime::TransferError;
use serde::Deserialize;
use serde_json::json;

use super::members::ensure_leader;
use crate::server::app::SharedApp;
use crate::server::error::ApiError;
use crate::server::extract::{parse_json, LimitedBody, NoQuery, QueryParams, RequestInfo};
use crate::server::forward;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransferBody {
    to: u64,
}

pub async fn handle(
    State(app): State<SharedApp>,
    info: RequestInfo,
    _: QueryParams<NoQuery>,
    LimitedBody(body): LimitedBody,
) -> Result<Response, ApiError> {
    let req: TransferBody = parse_json(&body)?;
    if req.to == 0 {
        return Err(ApiError::BadRequest("node id 0 is reserved".into()));
    }
    if let Some(forwarded) = ensure_leader(&app, &info, &body).await? {
        return Ok(forwarded);
    }
    if req.to == app.cfg.id {
        // Already the leader: nothing to hand over.
        return Ok(Json(json!({"leader": req.to})).into_response());
    }
    match app.raft.transfer_leadership(req.to).await {
        Ok(()) | Err(TransferError::AlreadyLeader) => {
            Ok(Json(json!({"leader": req.to})).into_response())
        }
        Err(TransferError::NotLeader { leader_hint }) => {
            forward::to_leader(&app, &info, &body, leader_hint).await
        }
        Err(e) => Err(e.into()),
    }
}
