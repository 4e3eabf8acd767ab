//! `GET /v1/kv/{key}?consistency=linearizable|lease|stale` → 200 KV, or 404
//! `key_not_found`.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::Bytes;
use raftkv_state::ReadCommand;
use serde::Deserialize;

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
    let key = Bytes::from(key);
    // Same limits as a write: a key that could never be stored is refused.
    ReadCommand::Get { key: key.clone() }.check(&app.kv_config)?;
    let found = app
        .read_kv(&info, query.consistency.into(), |kv| kv.get(&key))
        .await?;
    match found {
        Outcome::Forwarded(r) => Ok(r),
        Outcome::Local(Ok(Some(kv))) => Ok(Json(KvJson::from(&kv)).into_response()),
        Outcome::Local(Ok(None)) => Err(ApiError::KeyNotFound),
        Outcome::Local(Err(e)) => Err(e.into()),
    }
}
