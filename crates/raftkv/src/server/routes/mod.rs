//! The HTTP routes, one file per route (or per resource), and the router
//! that ties them together with two cross-cutting layers:
//!
//! - **request timeout**: every request (body upload and answer included)
//!   must finish within `--request-timeout-ms`, else 504 with reason
//!   `timeout`: `not_applied` for a `GET`, `indeterminate` for anything
//!   else (a proposal the cancelled handler made may still commit);
//! - **metrics**: count and time every request by its route pattern.
//!
//! and [`ApiService`] around both the router and the direct `PUT` path,
//! which stamps every response with `x-raftkv-node` (this node's id) and
//! `x-request-id` (the request's, else a generated one, which the request
//! also carries from then on, so a forward passes it along).
//!
//! Handlers return `Result<Response, ApiError>`; every error, including
//! bad paths, bad query strings, unknown routes and wrong methods, leaves
//! as the contract's JSON error object (see `error.rs`).

use std::borrow::Cow;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::time::Instant;

use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{HeaderValue, Method, Uri};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::Router;
use bytes::Bytes;
use hyper::body::Incoming;
use raft_runtime::ReadConsistency;
use serde::Deserialize;
use tower::ServiceExt;

use super::app::{App, SharedApp};
use super::error::{ApiError, Reason};
use super::extract::{
    key_from_path, read_limited_body, RequestInfo, FORWARDED_HEADER, REQUEST_ID_HEADER,
};
use super::forward::FORWARDED_TO_HEADER;
use super::metrics::{RequestLabels, RouteLabel};

pub mod binary;
pub mod dashboard;
pub mod dev_control;
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
mod version;

pub use binary::KvJson;

// The route patterns, named once: the router is built from them and the
// metrics label each request with one of them (a static string, so
// labelling a request allocates nothing).
const KV_LIST: &str = "/v1/kv";
/// Every key route: the key is the rest of the path, slashes included
/// (`/v1/kv/a/b/c` is the key `a/b/c`); a `POST` is the compare-and-swap
/// `/v1/kv/{key}/cas` (see `extract::KeyPath`). Metrics name it by the
/// labels below, as before it became one pattern.
const KV_KEY_PATTERN: &str = "/v1/kv/{*key}";
const KV_KEY: &str = "/v1/kv/{key}";
const KV_CAS: &str = "/v1/kv/{key}/cas";
const STATUS: &str = "/v1/status";
const MEMBERS: &str = "/v1/members";
const MEMBER: &str = "/v1/members/{id}";
const MEMBER_PROMOTE: &str = "/v1/members/{id}/promote";
const LEADER_TRANSFER: &str = "/v1/leader/transfer";
const METRICS: &str = "/metrics";
const HEALTHZ: &str = "/healthz";
const READYZ: &str = "/readyz";
const VERSION: &str = "/version";
const DASHBOARD_PAGE: &str = "/";
const DASHBOARD_ASSET: &str = "/dashboard/{file}";
const DASHBOARD: &str = "/v1/dashboard";
const DASHBOARD_NODE: &str = "/v1/dashboard/node";
const DEV_CONTROL: &str = "/v1/dev/control";
const ROUTES: [&str; 17] = [
    KV_LIST,
    KV_KEY,
    KV_CAS,
    STATUS,
    MEMBERS,
    MEMBER,
    MEMBER_PROMOTE,
    LEADER_TRANSFER,
    METRICS,
    HEALTHZ,
    READYZ,
    VERSION,
    DASHBOARD_PAGE,
    DASHBOARD_ASSET,
    DASHBOARD,
    DASHBOARD_NODE,
    DEV_CONTROL,
];

/// Builds the router of the client API.
pub fn router(app: SharedApp) -> Router {
    Router::new()
        .route(KV_LIST, get(kv_list::handle))
        .route(
            KV_KEY_PATTERN,
            put(kv_put::handle)
                .get(kv_get::handle)
                .delete(kv_delete::handle)
                .post(kv_cas::handle),
        )
        .route(STATUS, get(status::handle))
        .route(MEMBERS, get(members::list).post(members::add))
        .route(MEMBER, axum::routing::delete(members::remove))
        .route(MEMBER_PROMOTE, post(members::promote))
        .route(LEADER_TRANSFER, post(leader_transfer::handle))
        .route(METRICS, get(metrics::handle))
        .route(HEALTHZ, get(health::healthz))
        .route(READYZ, get(health::readyz))
        .route(VERSION, get(version::handle))
        .route(DASHBOARD_PAGE, get(dashboard::page))
        .route(DASHBOARD_ASSET, get(dashboard::asset))
        .route(DASHBOARD, get(dashboard::cluster))
        .route(DASHBOARD_NODE, get(dashboard::node))
        .route(DEV_CONTROL, post(dev_control::handle))
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
    let route = route_label(
        req.extensions()
            .get::<MatchedPath>()
            .map(MatchedPath::as_str),
        req.method(),
    );
    let method = method_label(req.method());
    observed(&app, method, route, next.run(req)).await
}

/// Runs `answer` under the request timeout, then counts and times the
/// request under `method` and `route`: what [`observe`] does for the
/// router, shared with the direct path.
async fn observed(
    app: &App,
    method: &'static str,
    route: Cow<'static, str>,
    answer: impl Future<Output = Response>,
) -> Response {
    let start = Instant::now();
    let timeout = app.cfg.request_timeout;
    let response = match tokio::time::timeout(timeout, answer).await {
        Ok(r) => r,
        // Dropping the handler's future cancels it; a proposal it made may
        // still commit (the runtime cannot take it back), so a write's
        // outcome is unknown. A read changed nothing.
        Err(_) if method == "GET" || method == "HEAD" => ApiError::not_applied(
            Reason::Timeout,
            format!("no answer within {} ms", timeout.as_millis()),
        )
        .into_response(),
        Err(_) => ApiError::indeterminate(
            Reason::Timeout,
            format!(
                "no answer within {} ms; the outcome is unknown (the request may or may not have been applied)",
                timeout.as_millis()
            ),
        )
        .into_response(),
    };
    let labels = RequestLabels {
        method,
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

/// The client API as the hyper service each connection runs.
///
/// `PUT /v1/kv/{key}` without a query string, the request a write-heavy
/// load consists of, takes a direct path: the same extractor logic, the
/// same handler, the same timeout and the same metrics as through the
/// router, without the router's per-request work (matching, boxing and
/// cloning the route's service, the middleware's boxed `Next`, path
/// parameters in request extensions), which cost about a tenth of a
/// leader's CPU per write. Everything else, and any PUT the direct path
/// is not sure to answer exactly as the router would (a query string, a
/// key that does not percent-decode to UTF-8), goes through the router.
#[derive(Clone)]
pub struct ApiService {
    router: Router,
    app: SharedApp,
    /// `x-raftkv-node` of every response: this node's id.
    node: HeaderValue,
}

/// Header naming the node that answered the client.
pub const NODE_HEADER: &str = "x-raftkv-node";

impl ApiService {
    pub fn new(app: SharedApp) -> ApiService {
        ApiService {
            router: router(app.clone()),
            node: HeaderValue::from(app.cfg.id),
            app,
        }
    }
}

/// Sets the two headers every response carries.
fn stamp(mut response: Response, node: HeaderValue, request_id: HeaderValue) -> Response {
    let headers = response.headers_mut();
    headers.insert(NODE_HEADER, node);
    headers.insert(REQUEST_ID_HEADER, request_id);
    response
}

type ApiFuture = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

impl hyper::service::Service<axum::http::Request<Incoming>> for ApiService {
    type Response = Response;
    type Error = Infallible;
    type Future = ApiFuture;

    fn call(&self, mut req: axum::http::Request<Incoming>) -> ApiFuture {
        let request_id = match req.headers().get(REQUEST_ID_HEADER) {
            Some(id) => id.clone(),
            None => {
                // Digits, letters and dashes: always a valid header value.
                let id = HeaderValue::try_from(self.app.request_ids.next())
                    .unwrap_or_else(|_| HeaderValue::from_static("unknown"));
                req.headers_mut().insert(REQUEST_ID_HEADER, id.clone());
                id
            }
        };
        let node = self.node.clone();
        // Nothing is noted for a line that would be filtered out anyway.
        let access = (self.app.cfg.access_log
            && tracing::enabled!(target: ACCESS_TARGET, tracing::Level::INFO))
        .then(|| Access::new(&req, self.app.cfg.id));
        match direct_put_key(req.method(), req.uri()) {
            Some(key) => {
                let app = self.app.clone();
                Box::pin(async move {
                    let answer = direct_put(&app, req, key);
                    let response = observed(&app, "PUT", Cow::Borrowed(KV_KEY), answer).await;
                    if let Some(a) = access {
                        a.log(&response, &request_id);
                    }
                    Ok(stamp(response, node, request_id))
                })
            }
            None => {
                let routed = self.router.clone().oneshot(req);
                Box::pin(async move {
                    let response = routed.await?;
                    if let Some(a) = access {
                        a.log(&response, &request_id);
                    }
                    Ok(stamp(response, node, request_id))
                })
            }
        }
    }
}

/// Target of the access log's events (`--log-level
/// info,raftkv::access=off` filters them out, as `--access-log false` does).
pub const ACCESS_TARGET: &str = "raftkv::access";

/// What the access log line says about a request, noted when it arrives.
struct Access {
    start: Instant,
    method: Method,
    /// The path without the query string.
    path: String,
    node: u64,
    /// It arrived from a follower that forwarded it (`x-raftkv-forwarded`).
    from_follower: bool,
}

impl Access {
    fn new<B>(req: &axum::http::Request<B>, node: u64) -> Access {
        Access {
            start: Instant::now(),
            method: req.method().clone(),
            path: req.uri().path().to_string(),
            node,
            from_follower: req.headers().contains_key(FORWARDED_HEADER),
        }
    }

    /// One INFO line under [`ACCESS_TARGET`]: method, path, status,
    /// latency in microseconds, request id, this node, whether it came from
    /// a follower, and whether (and to whom) this node forwarded it.
    fn log(self, response: &Response, request_id: &HeaderValue) {
        let latency_us = u64::try_from(self.start.elapsed().as_micros()).unwrap_or(u64::MAX);
        let forwarded_to = response
            .headers()
            .get(FORWARDED_TO_HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        tracing::info!(
            target: ACCESS_TARGET,
            method = %self.method,
            path = %self.path,
            status = response.status().as_u16(),
            latency_us,
            request_id = %String::from_utf8_lossy(request_id.as_bytes()),
            node = self.node,
            from_follower = self.from_follower,
            forwarded = forwarded_to.is_some(),
            forwarded_to,
            "request"
        );
    }
}

/// The key of a request the direct path answers: `PUT /v1/kv/{key}` with
/// no query string and one non-empty path segment after `/v1/kv/`,
/// percent-decoded to bytes as [`KeyPath`](super::extract::KeyPath) does;
/// else `None` (the router then answers, keys with slashes included).
fn direct_put_key(method: &Method, uri: &Uri) -> Option<Bytes> {
    if method != Method::PUT || uri.query().is_some() {
        return None;
    }
    let segment = uri.path().strip_prefix("/v1/kv/")?;
    if segment.is_empty() || segment.contains('/') {
        return None;
    }
    key_from_path(method, uri.path()).ok()
}

/// `kv_put::handle` for a request [`direct_put_key`] accepted: its
/// extractors in the same order (the request info; the key and the empty
/// query cannot fail; then the body).
async fn direct_put(app: &SharedApp, req: axum::http::Request<Incoming>, key: Bytes) -> Response {
    let (parts, body) = req.into_parts();
    let info = RequestInfo::from_parts(&parts);
    let answer = match read_limited_body(&parts.headers, body, app.cfg.max_body_bytes).await {
        Ok(body) => kv_put::put(app, &info, key, kv_put::PutQuery::default(), body).await,
        Err(e) => Err(e),
    };
    answer.into_response()
}

/// Bounded label values: the standard methods, else "other".
fn method_label(m: &Method) -> &'static str {
    match *m {
        Method::GET => "GET",
        Method::PUT => "PUT",
        Method::POST => "POST",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        _ => "other",
    }
}

/// The matched route pattern, else "unmatched" (bounded label values).
/// The key routes keep their labels of old: `/v1/kv/{key}`, and
/// `/v1/kv/{key}/cas` for a `POST`.
fn route_label(pattern: Option<&str>, method: &Method) -> Cow<'static, str> {
    let Some(pattern) = pattern else {
        return Cow::Borrowed("unmatched");
    };
    if pattern == KV_KEY_PATTERN {
        return Cow::Borrowed(if method == Method::POST {
            KV_CAS
        } else {
            KV_KEY
        });
    }
    match ROUTES.iter().find(|r| **r == pattern) {
        Some(r) => Cow::Borrowed(r),
        // Every route is in ROUTES; a pattern that is not still gets its
        // own (bounded) label.
        None => Cow::Owned(pattern.to_string()),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn key(method: Method, uri: &str) -> Option<Bytes> {
        direct_put_key(&method, &uri.parse().unwrap())
    }

    #[test]
    fn only_plain_key_puts_take_the_direct_path() {
        assert_eq!(key(Method::PUT, "/v1/kv/a"), Some("a".into()));
        assert_eq!(
            key(Method::PUT, "/v1/kv/bench%2F17"),
            Some("bench/17".into())
        );
        assert_eq!(key(Method::PUT, "/v1/kv/%C3%A9"), Some("é".into()));
        // Everything else is the router's.
        assert_eq!(key(Method::GET, "/v1/kv/a"), None);
        assert_eq!(key(Method::POST, "/v1/kv/a"), None);
        assert_eq!(key(Method::PUT, "/v1/kv/a?prev=true"), None);
        assert_eq!(key(Method::PUT, "/v1/kv/a?"), None);
        assert_eq!(key(Method::PUT, "/v1/kv/"), None);
        assert_eq!(key(Method::PUT, "/v1/kv"), None);
        assert_eq!(key(Method::PUT, "/v1/kv/a/cas"), None);
        assert_eq!(key(Method::PUT, "/v1/kv/a/"), None);
        assert_eq!(key(Method::PUT, "/v1/kv//a"), None);
        assert_eq!(key(Method::PUT, "/v1/%6Bv/a"), None);
        // Any bytes: the key is not required to be UTF-8.
        assert_eq!(
            key(Method::PUT, "/v1/kv/%FF"),
            Some(Bytes::from_static(b"\xff"))
        );
    }

    #[test]
    fn route_labels_are_the_patterns() {
        for r in ROUTES {
            assert!(matches!(route_label(Some(r), &Method::GET), Cow::Borrowed(p) if p == r));
        }
        assert_eq!(route_label(Some(KV_KEY_PATTERN), &Method::PUT), KV_KEY);
        assert_eq!(route_label(Some(KV_KEY_PATTERN), &Method::POST), KV_CAS);
        assert_eq!(route_label(Some("/v9/other"), &Method::GET), "/v9/other");
        assert_eq!(route_label(None, &Method::GET), "unmatched");
    }
}
