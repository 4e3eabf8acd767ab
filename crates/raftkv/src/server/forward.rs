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
//!   `not_applied`/`not_leader` with its leader hint instead. Two nodes that briefly
//!   disagree about who leads therefore cannot bounce a request around.
//! - The leader's answer (status and JSON body) is relayed unchanged, with
//!   `x-raftkv-forwarded-to: <leader id>`; the request's `x-request-id`
//!   goes along.
//! - If forwarding fails, the error says whether the request can have had
//!   an effect: a connection that could not be made sent nothing
//!   (`not_applied`/`forward_failed`); a write whose request went out but
//!   whose answer did not come back (a broken connection, a timeout) may
//!   have been applied by the leader (`indeterminate`/`forward_failed`, or
//!   `indeterminate`/`timeout`), exactly as if the client had talked to the
//!   leader itself. A read changes nothing, so its failures are always
//!   `not_applied`.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use raft_core::NodeId;

use super::app::App;
use super::error::{ApiError, Reason};
use super::extract::{RequestInfo, FORWARDED_HEADER, REQUEST_ID_HEADER};
use super::routes::binary::RAW_HEADERS;
use crate::client::error_chain;

/// Names, on a relayed answer, the leader that produced it.
pub const FORWARDED_TO_HEADER: &str = "x-raftkv-forwarded-to";

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
        return Err(ApiError::no_leader());
    };
    if leader == app.cfg.id {
        // The runtime named this node leader yet refused: a transition in
        // progress. Let the client retry rather than loop on ourselves.
        return Err(ApiError::not_applied(
            Reason::LeaderChanged,
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
    let read = info.is_read();
    // After the request went out: a write's fate is unknown, a read's is not.
    let lost = |reason: Reason, message: String| {
        let e = if read {
            ApiError::not_applied(reason, message)
        } else {
            ApiError::indeterminate(reason, message)
        };
        e.with_hint(Some(leader))
    };
    let url = format!("{}://{addr}{}", app.cfg.scheme(), info.path_and_query());
    let mut req = app
        .http
        .request(info.method.clone(), &url)
        .header(FORWARDED_HEADER, "1");
    if let Some(id) = &info.request_id {
        req = req.header(REQUEST_ID_HEADER, id.clone());
    }
    if let Some(accept) = &info.accept {
        req = req.header(header::ACCEPT, accept.clone());
    }
    if !body.is_empty() {
        // The type chooses between a JSON and a raw body: pass it on.
        let content_type = info
            .content_type
            .clone()
            .unwrap_or_else(|| HeaderValue::from_static("application/json"));
        req = req
            .header(header::CONTENT_TYPE, content_type)
            .body(body.clone());
    }
    let resp = req.send().await.map_err(|e| {
        if e.is_connect() {
            // No connection, so no request: nothing can have happened.
            ApiError::not_applied(
                Reason::ForwardFailed,
                format!(
                    "could not connect to the leader (node {leader} at {addr}): {}",
                    error_chain(&e)
                ),
            )
            .with_hint(Some(leader))
        } else if e.is_timeout() {
            lost(
                Reason::Timeout,
                format!(
                    "the leader (node {leader} at {addr}) did not answer in time{}",
                    if read { "" } else { "; the write may or may not have been applied" }
                ),
            )
        } else {
            lost(
                Reason::ForwardFailed,
                format!(
                    "forwarding to the leader (node {leader} at {addr}) failed after sending the request: {}",
                    error_chain(&e)
                ),
            )
        }
    })?;
    let status = StatusCode::from_u16(resp.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    let content_type = resp.headers().get(reqwest::header::CONTENT_TYPE).cloned();
    // A raw GET's revisions travel in headers: relay them too.
    let raw_headers: Vec<(&'static str, HeaderValue)> = RAW_HEADERS
        .iter()
        .filter_map(|name| {
            let v = resp.headers().get(*name)?;
            Some((*name, HeaderValue::from_bytes(v.as_bytes()).ok()?))
        })
        .collect();
    if resp
        .content_length()
        .is_some_and(|n| n > FORWARD_RESPONSE_BYTES_MAX as u64)
    {
        return Err(lost(
            Reason::ForwardFailed,
            format!("the leader's answer is over {FORWARD_RESPONSE_BYTES_MAX} bytes"),
        ));
    }
    let bytes = resp.bytes().await.map_err(|e| {
        lost(
            Reason::ForwardFailed,
            format!(
                "reading the leader's answer (node {leader} at {addr}) failed: {}",
                error_chain(&e)
            ),
        )
    })?;
    let mut out = (status, bytes).into_response();
    if let Some(ct) = content_type.and_then(|v| HeaderValue::from_bytes(v.as_bytes()).ok()) {
        out.headers_mut().insert(header::CONTENT_TYPE, ct);
    }
    for (name, value) in raw_headers {
        out.headers_mut().insert(name, value);
    }
    out.headers_mut()
        .insert(FORWARDED_TO_HEADER, HeaderValue::from(leader));
    Ok(out)
}
