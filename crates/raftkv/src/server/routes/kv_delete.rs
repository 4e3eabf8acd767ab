//! `DELETE /v1/kv/{key}` (optional body `{"client_id": 7, "seq": 4}`) → 200
//! `{"revision", "deleted": true, "prev": KV}`, or 404 `key_not_found` if
//! the key did not exist (nothing changed, though the delete still took a
//! log position).

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use raftkv_state::{Command, Response as KvResponse};
use serde::{Deserialize, Serialize};

use super::kv_put::unexpected_kv;
use super::{session, KvJson};
use crate::server::app::{Outcome, SharedApp};
use crate::server::error::ApiError;
use crate::server::extract::{
    parse_optional_json, KeyPath, LimitedBody, NoQuery, QueryParams, RequestInfo,
};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeleteBody {
    client_id: Option<u64>,
    seq: Option<u64>,
}

#[derive(Debug, Serialize)]
pub struct DeleteJson {
    revision: u64,
    deleted: bool,
    prev: Option<KvJson>,
}

pub async fn handle(
    State(app): State<SharedApp>,
    info: RequestInfo,
    KeyPath(key): KeyPath,
    _: QueryParams<NoQuery>,
    LimitedBody(body): LimitedBody,
) -> Result<Response, ApiError> {
    let req: DeleteBody = parse_optional_json(&body)?;
    // Always ask for the removed pair: it is small and tells the client
    // what it deleted.
    let mut cmd = Command::delete(key).with_prev_kv();
    if let Some((client_id, seq)) = session(req.client_id, req.seq)? {
        cmd = cmd.with_session(client_id, seq);
    }
    match app.write_kv(&info, &body, cmd).await? {
        Outcome::Forwarded(r) => Ok(r),
        Outcome::Local(KvResponse::Delete(d)) if d.deleted => Ok(Json(DeleteJson {
            revision: d.revision,
            deleted: true,
            prev: d.prev.as_ref().map(KvJson::from),
        })
        .into_response()),
        Outcome::Local(KvResponse::Delete(_)) => Err(ApiError::KeyNotFound),
        Outcome::Local(other) => Err(unexpected_kv(&other)),
    }
}
