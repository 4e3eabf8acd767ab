//! Forwarding a request from a follower to the leader.
//!
//! **Why forward rather than redirect.** A redirect (307 + `Location`) makes
//! every client implement retries against a new host and leaks the
//! cluster's internal addresses into client code; forwarding keeps the
//! "talk to any node" promise of `raftkv put` and curl alike, at the cost
//! of one extra hop inside the cluster.
//!
//! **Rules.**
//! - Only requests this node cannot serve are forwarded: writes and member
//!   or transfer operations the runtime refused with `NotLeader` (nothing
//!   was appended), and linearizable or lease reads on a non-leader.
//! - One hop: the forwarded request carries `x-raftkv-forwarded: 1`, and a
//!   node never forwards a request that carries it; it answers 503
//!   `not_leader` with its leader hint instead. Two nodes that briefly
//!   disagree about who leads therefore cannot bounce a request around.
//! - The leader's answer (status and JSON body) is relayed unchanged.
//! - If the leader cannot be reached: 503 `unavailable` with the hint; if
//!   it does not answer in time: 504 `timeout` (a write's outcome is then
//!   unknown, exactly as if the client had talked to the leader itself).

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use raft_core::NodeId;

use super::app::App;
use super::error::ApiError;
use super::extract::{RequestInfo, FORWARDED_HEADER};

/// Largest leader answer relayed, in bytes. The largest legitimate answer is
/// a list of `list_limit_max` key-values; this keeps a misbehaving peer from
/// making this node buffer without bound.
pub const FORWARD_RESPONSE_BYTES_MAX: usize = 256 << 20;

/// Replays the request on the leader `hint` and relays its answer.
pub async fn to_leader(
    app: &App,
    info: &RequestInfo,
    body: &Bytes,
    hint: Option<NodeId>,
) -> Result<Response, ApiError> {
    let Some(leader) = hint else {
        return Err(ApiError::NoLeader);
    };
    if leader == app.cfg.id {
        // The runtime named this node leader yet refused: a transition in
        // progress. Let the client retry rather than loop on ourselves.
        return Err(ApiError::unavailable(
            "leadership is changing; retry shortly",
        ));
    }
    if info.forwarded {
        return Err(ApiError::not_leader(
            leader,
            "request already forwarded once",
        ));
    }
    let Some(addr) = app.client_addr(leader) else {
        return Err(ApiError::not_leader(
            leader,
            "its client address is unknown here",
        ));
    };
    app.metrics.forwarded.inc();
    let url = format!("http://{addr}{}", info.path_and_query());
    let mut req = app
        .http
        .request(info.method.clone(), &url)
        .header(FORWARDED_HEADER, "1");
    if !body.is_empty() {
        req = req
            .header(header::CONTENT_TYPE, "application/json")
            .body(body.clone());
    }
    let resp = req.send().await.map_err(|e| {
        if e.is_timeout() {
            ApiError::Timeout(format!(
                "the leader (node {leader} at {addr}) did not answer in time"
            ))
        } else {
            ApiError::Unavailable {
                message: format!("could not reach the leader (node {leader} at {addr}): {e}"),
                leader_hint: Some(leader),
            }
        }
    })?;
    let status = StatusCode::from_u16(resp.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    let content_type = resp.headers().get(reqwest::header::CONTENT_TYPE).cloned();
    if resp
        .content_length()
        .is_some_and(|n| n > FORWARD_RESPONSE_BYTES_MAX as u64)
    {
        return Err(ApiError::Internal(format!(
            "the leader's answer is over {FORWARD_RESPONSE_BYTES_MAX} bytes"
        )));
    }
    let bytes = resp.bytes().await.map_err(|e| ApiError::Unavailable {
        message: format!("reading the leader's answer failed: {e}"),
        leader_hint: Some(leader),
    })?;
    let mut out = (status, bytes).into_response();
    if let Some(ct) = content_type.and_then(|v| HeaderValue::from_bytes(v.as_bytes()).ok()) {
        out.headers_mut().insert(header::CONTENT_TYPE, ct);
    }
    Ok(out)
}
