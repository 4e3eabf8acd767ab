//! `POST /v1/kv/{key}/cas` body
//! `{"expected_value": "old" | null, "expected_mod_revision": 12,
//!   "value": "new" | null, "client_id": 7, "seq": 5}`
//! → 200 `{"succeeded": true, "revision": 14}`, or 409 `cas_mismatch` with
//! the key's current state in `"current"`.
//!
//! Exactly one of `expected_value` (`null`: the key must be absent) and
//! `expected_mod_revision` (`0` also means absent). `"value": null` deletes
//! the key on success; `value` must be present (a missing field would
//! otherwise silently mean "delete").
//!
//! Binary values: `expected_value_b64` and `value_b64` (base64) stand for
//! `expected_value` and `value` (give one of each pair).

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::Bytes;
use raftkv_state::{CasAction, Command, Condition, Response as KvResponse};
use serde::{Deserialize, Deserializer};
use serde_json::json;

use super::kv_put::unexpected_kv;
use super::{binary, session, KvJson};
use crate::server::app::{Outcome, SharedApp};
use crate::server::error::ApiError;
use crate::server::extract::{parse_json, KeyPath, LimitedBody, NoQuery, QueryParams, RequestInfo};

/// `Some(None)` for an explicit `null`, `None` for a missing field.
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CasBody {
    #[serde(default, deserialize_with = "present")]
    expected_value: Option<Option<String>>,
    expected_value_b64: Option<String>,
    expected_mod_revision: Option<u64>,
    #[serde(default, deserialize_with = "present")]
    value: Option<Option<String>>,
    value_b64: Option<String>,
    client_id: Option<u64>,
    seq: Option<u64>,
}

fn both(name: &str) -> ApiError {
    ApiError::BadRequest(format!("give {name} or {name}_b64, not both"))
}

pub async fn handle(
    State(app): State<SharedApp>,
    info: RequestInfo,
    KeyPath(key): KeyPath,
    _: QueryParams<NoQuery>,
    LimitedBody(body): LimitedBody,
) -> Result<Response, ApiError> {
    let req: CasBody = parse_json(&body)?;
    // `*_b64` stands for the plain field holding a string: fold it in.
    let expected_value = match (req.expected_value, req.expected_value_b64) {
        (Some(_), Some(_)) => return Err(both("expected_value")),
        (None, Some(b)) => Some(Some(binary::decode_b64("expected_value_b64", &b)?)),
        (v, None) => v.map(|v| v.map(Bytes::from)),
    };
    let value = match (req.value, req.value_b64) {
        (Some(_), Some(_)) => return Err(both("value")),
        (None, Some(b)) => Some(Some(binary::decode_b64("value_b64", &b)?)),
        (v, None) => v.map(|v| v.map(Bytes::from)),
    };
    let condition = match (expected_value, req.expected_mod_revision) {
        (Some(None), None) => Condition::Absent,
        (Some(Some(v)), None) => Condition::ValueEquals(v),
        (None, Some(rev)) => Condition::ModRevisionEquals(rev),
        _ => return Err(ApiError::BadRequest(
            "give exactly one of expected_value (or expected_value_b64) and expected_mod_revision"
                .into(),
        )),
    };
    let action = match value {
        Some(Some(v)) => CasAction::Put(v),
        Some(None) => CasAction::Delete,
        None => {
            return Err(ApiError::BadRequest(
                "value is required (a string, value_b64, or null to delete the key)".into(),
            ))
        }
    };
    let mut cmd = Command::cas(key, condition, action);
    if let Some((client_id, seq)) = session(req.client_id, req.seq)? {
        cmd = cmd.with_session(client_id, seq);
    }
    match app.write_kv(&info, &body, cmd).await? {
        Outcome::Forwarded(r) => Ok(r),
        Outcome::Local(KvResponse::CompareAndSwap(c)) if c.succeeded => {
            Ok(Json(json!({"succeeded": true, "revision": c.revision})).into_response())
        }
        Outcome::Local(KvResponse::CompareAndSwap(c)) => {
            let current = c.current.as_ref().map(KvJson::from);
            let message = match &current {
                Some(kv) => format!(
                    "condition failed: the key is at mod_revision {}",
                    kv.mod_revision
                ),
                None => "condition failed: the key does not exist".to_string(),
            };
            let body = json!({
                "error": {
                    "code": "cas_mismatch",
                    "reason": null,
                    "message": message,
                    "leader_hint": null,
                },
                "current": current,
            });
            Ok((StatusCode::CONFLICT, Json(body)).into_response())
        }
        Outcome::Local(other) => Err(unexpected_kv(&other)),
    }
}
