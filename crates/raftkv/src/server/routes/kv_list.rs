//! `GET /v1/kv?prefix=p&limit=100&consistency=...` → 200
//! `{"kvs": [KV...], "more": false, "revision": 14}`; keys ascending,
//! `more` says keys with the prefix remain beyond `limit`, `revision` is the
//! applied index the listing observed.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::Bytes;
use raftkv_state::ReadCommand;
use serde::{Deserialize, Serialize};

use super::{Consistency, KvJson};
use crate::server::app::{Outcome, SharedApp};
use crate::server::error::ApiError;
use crate::server::extract::{NoBody, QueryParams, RequestInfo};

/// Default `limit`.
pub const LIST_LIMIT_DEFAULT: u64 = 100;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    #[serde(default)]
    prefix: String,
    limit: Option<u64>,
    #[serde(default)]
    consistency: Consistency,
}

#[derive(Debug, Serialize)]
pub struct ListJson {
    kvs: Vec<KvJson>,
    more: bool,
    revision: u64,
}

pub async fn handle(
    State(app): State<SharedApp>,
    info: RequestInfo,
    QueryParams(query): QueryParams<ListQuery>,
    _: NoBody,
) -> Result<Response, ApiError> {
    let prefix = Bytes::from(query.prefix);
    let limit = query.limit.unwrap_or(LIST_LIMIT_DEFAULT);
    ReadCommand::List {
        prefix: prefix.clone(),
        limit,
    }
    .check(&app.kv_config)?;
    let listed = app
        .read_kv(&info, query.consistency.into(), |kv| {
            kv.list(&prefix, limit)
        })
        .await?;
    match listed {
        Outcome::Forwarded(r) => Ok(r),
        Outcome::Local(list) => {
            let list = list?;
            Ok(Json(ListJson {
                kvs: list.kvs.iter().map(KvJson::from).collect(),
                more: list.more,
                revision: list.revision,
            })
            .into_response())
        }
    }
}
