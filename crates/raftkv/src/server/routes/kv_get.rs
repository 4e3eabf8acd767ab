//! `GET /v1/kv/{key}?consistency=linearizable|lease|stale` → 200 KV, or 404
//! `key_not_found`.
//!
//! The KV's `key` and `value` are strings when they are UTF-8, else
//! `key_b64`/`value_b64` (see `binary`). With `Accept:
//! application/octet-stream` the answer is the value's bytes as they are,
//! with the key's revisions in the `x-raftkv-create-revision`,
//! `x-raftkv-mod-revision` and `x-raftkv-version` headers.

use axum::extract::State;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::Json;
use raftkv_state::{KeyValue, ReadCommand};
use serde::Deserialize;

use super::binary::{self, CREATE_REVISION_HEADER, MOD_REVISION_HEADER, VERSION_HEADER};
use super::{Consistency, KvJson};
use crate::server::app::{Outcome, SharedApp};
use crate::server::error::ApiError;
use crate::server::extract::{KeyPath, NoBody, QueryParams, RequestInfo};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GetQuery {
    #[serde(default)]
    consistency: Consistency,
}

pub async fn handle(
    State(app): State<SharedApp>,
    info: RequestInfo,
    KeyPath(key): KeyPath,
    QueryParams(query): QueryParams<GetQuery>,
    _: NoBody,
) -> Result<Response, ApiError> {
    // Same limits as a write: a key that could never be stored is refused.
    ReadCommand::Get { key: key.clone() }.check(&app.kv_config)?;
    let raw = info
        .accept
        .as_ref()
        .is_some_and(|a| binary::accepts_raw(a.as_bytes()));
    let found = app
        .read_kv(&info, query.consistency.into(), |kv| kv.get(&key))
        .await?;
    match found {
        Outcome::Forwarded(r) => Ok(r),
        Outcome::Local(Ok(Some(kv))) if raw => Ok(raw_answer(kv)),
        Outcome::Local(Ok(Some(kv))) => Ok(Json(KvJson::from(&kv)).into_response()),
        Outcome::Local(Ok(None)) => Err(ApiError::KeyNotFound),
        Outcome::Local(Err(e)) => Err(e.into()),
    }
}

/// The value's bytes, its revisions in headers.
fn raw_answer(kv: KeyValue) -> Response {
    let mut r = kv.value.into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(binary::OCTET_STREAM),
    );
    h.insert(
        CREATE_REVISION_HEADER,
        HeaderValue::from(kv.create_revision),
    );
    h.insert(MOD_REVISION_HEADER, HeaderValue::from(kv.mod_revision));
    h.insert(VERSION_HEADER, HeaderValue::from(kv.version));
    r
}
