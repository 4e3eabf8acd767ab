//! The HTTP routes, one file per route (or per resource), and the router
//! that ties them together with two cross-cutting layers:
//!
//! - **request timeout**: every request (body upload and answer included)
//!   must finish within `--request-timeout-ms`, else 504 `timeout`;
//! - **metrics**: count and time every request by its route pattern.
//!
//! Handlers return `Result<Response, ApiError>`; every error, including
//! bad paths, bad query strings, unknown routes and wrong methods, leaves
//! as the contract's JSON error object.

use std::time::Instant;

use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::Method;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::Router;
use raft_runtime::ReadConsistency;
use raftkv_state::KeyValue;
use serde::{Deserialize, Serialize};

use super::app::SharedApp;
use super::error::ApiError;
use super::metrics::{RequestLabels, RouteLabel};

mod health;
mod kv_cas;
mod kv_delete;
mod kv_get;
mod kv_list;
mod kv_put;
mod leader_transfer;
mod members;
mod metrics;
mod status;

/// Builds the router of the client API.
pub fn router(app: SharedApp) -> Router {
    Router::new()
        .route("/v1/kv", get(kv_list::handle))
        .route(
            "/v1/kv/{key}",
            put(kv_put::handle)
                .get(kv_get::handle)
                .delete(kv_delete::handle),
        )
        .route("/v1/kv/{key}/cas", post(kv_cas::handle))
        .route("/v1/status", get(status::handle))
        .route("/v1/members", get(members::list).post(members::add))
        .route("/v1/members/{id}", axum::routing::delete(members::remove))
        .route("/v1/members/{id}/promote", post(members::promote))
        .route("/v1/leader/transfer", post(leader_transfer::handle))
        .route("/metrics", get(metrics::handle))
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        // Bodies are limited by our own extractor (`LimitedBody`), which
        // answers 413 in JSON; axum's default 2 MiB limit would answer in
        // plain text and with a different limit.
        .layer(DefaultBodyLimit::disable())
        .layer(middleware::from_fn_with_state(app.clone(), observe))
        .with_state(app)
}

/// Applies the request timeout and records the request's metrics.
async fn observe(State(app): State<SharedApp>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_string())
        .unwrap_or_else(|| "unmatched".to_string());
    let method = req.method().clone();
    let start = Instant::now();
    let timeout = app.cfg.request_timeout;
    let response = match tokio::time::timeout(timeout, next.run(req)).await {
        Ok(r) => r,
        // Dropping the handler's future cancels it; a proposal it made may
        // still commit (the runtime cannot take it back), so the message
        // says the outcome is unknown.
        Err(_) => ApiError::Timeout(format!(
            "no answer within {} ms (for a write, the outcome is unknown)",
            timeout.as_millis()
        ))
        .into_response(),
    };
    let labels = RequestLabels {
        method: method_label(&method),
        route: route.clone(),
        status: response.status().as_u16(),
    };
    app.metrics.requests.get_or_create(&labels).inc();
    app.metrics
        .request_duration_seconds
        .get_or_create(&RouteLabel { route })
        .observe(start.elapsed().as_secs_f64());
    response
}

/// Bounded label values: the standard methods, else "other".
fn method_label(m: &Method) -> String {
    match *m {
        Method::GET | Method::PUT | Method::POST | Method::DELETE | Method::HEAD => m.to_string(),
        _ => "other".to_string(),
    }
}

async fn not_found(req: Request) -> ApiError {
    ApiError::NotFound(format!(
        "no route for {} {}",
        req.method(),
        req.uri().path()
    ))
}

async fn method_not_allowed(req: Request) -> ApiError {
    ApiError::MethodNotAllowed(format!(
        "method {} is not allowed on {}",
        req.method(),
        req.uri().path()
    ))
}

/// A key-value pair as JSON: `{"key", "value", "create_revision",
/// "mod_revision", "version"}`. Keys and values only ever enter through
/// this API as UTF-8 strings, so the lossy conversion never replaces
/// anything in practice.
#[derive(Debug, Serialize)]
pub struct KvJson {
    pub key: String,
    pub value: String,
    pub create_revision: u64,
    pub mod_revision: u64,
    pub version: u64,
}

impl From<&KeyValue> for KvJson {
    fn from(kv: &KeyValue) -> Self {
        KvJson {
            key: String::from_utf8_lossy(&kv.key).into_owned(),
            value: String::from_utf8_lossy(&kv.value).into_owned(),
            create_revision: kv.create_revision,
            mod_revision: kv.mod_revision,
            version: kv.version,
        }
    }
}

/// `?consistency=linearizable|lease|stale`.
#[derive(Clone, Copy, Debug, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Consistency {
    #[default]
    Linearizable,
    Lease,
    Stale,
}

impl From<Consistency> for ReadConsistency {
    fn from(c: Consistency) -> Self {
        match c {
            Consistency::Linearizable => ReadConsistency::Linearizable,
            Consistency::Lease => ReadConsistency::Lease,
            Consistency::Stale => ReadConsistency::Stale,
        }
    }
}

/// The optional exactly-once session of a write: both fields or neither.
pub fn session(client_id: Option<u64>, seq: Option<u64>) -> Result<Option<(u64, u64)>, ApiError> {
    match (client_id, seq) {
        (Some(c), Some(s)) => Ok(Some((c, s))),
        (None, None) => Ok(None),
        _ => Err(ApiError::BadRequest(
            "client_id and seq go together: give both or neither".into(),
        )),
    }
}
