//! `PUT /v1/kv/{key}` body `{"value": "v", "client_id": 7, "seq": 3}` →
//! 200 `{"revision", "create_revision", "version", "prev"}`.
//!
//! The value is `value` (a string) or `value_b64` (base64, any bytes),
//! exactly one; or, with `Content-Type: application/octet-stream`, the raw
//! body is the value (no JSON, so no session: retry such a put only after
//! reading the key back).
//!
//! `?prev=true` asks for the previous key-value in `prev`. With a
//! `client_id`/`seq` session, a retry of the same `seq` is not applied
//! again: it gets the first answer back (same revision, same version).

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::Bytes;
use raftkv_state::{Command, Response as KvResponse};
use serde::{Deserialize, Serialize};

use super::{binary, session, KvJson};
use crate::server::app::{App, Outcome, SharedApp};
use crate::server::error::{ApiError, Reason};
use crate::server::extract::{parse_json, KeyPath, LimitedBody, QueryParams, RequestInfo};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PutBody {
    value: Option<String>,
    value_b64: Option<String>,
    client_id: Option<u64>,
    seq: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PutQuery {
    #[serde(default)]
    prev: bool,
}

#[derive(Debug, Serialize)]
pub struct PutJson {
    revision: u64,
    create_revision: u64,
    version: u64,
    prev: Option<KvJson>,
}

pub async fn handle(
    State(app): State<SharedApp>,
    info: RequestInfo,
    KeyPath(key): KeyPath,
    QueryParams(query): QueryParams<PutQuery>,
    LimitedBody(body): LimitedBody,
) -> Result<Response, ApiError> {
    put(&app, &info, key, query, body).await
}

/// The value and session of a put's body: raw bytes, or JSON.
fn parse_body(info: &RequestInfo, body: &Bytes) -> Result<(Bytes, Option<(u64, u64)>), ApiError> {
    let raw = info
        .content_type
        .as_ref()
        .is_some_and(|ct| binary::is_raw_content_type(ct.as_bytes()));
    if raw {
        return Ok((body.clone(), None));
    }
    let req: PutBody = parse_json(body)?;
    let value = binary::one_of("value", req.value, req.value_b64)?.ok_or_else(|| {
        ApiError::BadRequest(
            "the value is required: give value (a string) or value_b64 (base64)".into(),
        )
    })?;
    Ok((value, session(req.client_id, req.seq)?))
}

/// The route's work once the request is taken apart (also called by the
/// direct path, see [`super::ApiService`]).
pub async fn put(
    app: &App,
    info: &RequestInfo,
    key: Bytes,
    query: PutQuery,
    body: Bytes,
) -> Result<Response, ApiError> {
    let (value, session) = parse_body(info, &body)?;
    let mut cmd = Command::put(key, value);
    if query.prev {
        cmd = cmd.with_prev_kv();
    }
    if let Some((client_id, seq)) = session {
        cmd = cmd.with_session(client_id, seq);
    }
    match app.write_kv(info, &body, cmd).await? {
        Outcome::Forwarded(r) => Ok(r),
        Outcome::Local(KvResponse::Put(p)) => Ok(Json(PutJson {
            revision: p.revision,
            create_revision: p.create_revision,
            version: p.version,
            prev: p.prev.as_ref().map(KvJson::from),
        })
        .into_response()),
        Outcome::Local(other) => Err(unexpected_kv(&other)),
    }
}

/// A key-value answer of the wrong kind: a bug, reported as 500.
pub(super) fn unexpected_kv(r: &KvResponse) -> ApiError {
    // Applied (the state machine answered), but the answer is unusable.
    ApiError::indeterminate(
        Reason::Internal,
        format!("unexpected key-value response: {r:?}"),
    )
}
