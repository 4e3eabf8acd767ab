//! The launcher's control endpoint: how the dashboard's "kill" and
//! "restart" buttons reach the processes.
//!
//! A node cannot restart itself once killed, so the launcher, which owns
//! the processes, listens on `127.0.0.1:<free port>` and every node it
//! starts gets `--dashboard-controls --launcher-url http://127.0.0.1:PORT`.
//! A button's `POST /v1/dev/control` on any node is relayed here as
//!
//! ```text
//! POST /v1/control  {"node": 2, "action": "kill" | "restart"}
//! ```
//!
//! and answered `{"node": 2, "action": "kill", "message": "..."}`, or an
//! error in the API's JSON shape (400 for a node that is not running, is
//! already running or does not exist; 404 for other paths). Unknown
//! fields and query parameters are refused as everywhere else.
//!
//! The HTTP side only parses and queues; the monitor loop (which owns the
//! [`super::LocalCluster`]) carries each request out between two refreshes
//! and answers through a oneshot channel, so processes are touched from
//! one place only.

use std::net::{Ipv4Addr, SocketAddr, TcpListener};

use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};

use crate::server::extract::{parse_json, NoQuery, QueryParams};
use crate::server::routes::dev_control::ControlRequest;
use crate::server::ApiError;

/// Largest request body, in bytes (a request is a few dozen).
const BODY_BYTES_MAX: usize = 4096;
/// Requests waiting for the monitor loop; more are refused (503).
const QUEUE_MAX: usize = 16;

/// One request for the monitor loop, and where its answer goes.
pub struct ControlCall {
    pub request: ControlRequest,
    pub reply: oneshot::Sender<Result<Value, ApiError>>,
}

/// Binds the control port: 127.0.0.1 only (it can kill nodes), a free
/// port. Called before the nodes start, since they are told its address.
pub fn bind() -> std::io::Result<TcpListener> {
    let listener = TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))?;
    listener.set_nonblocking(true)?;
    Ok(listener)
}

/// Serves the endpoint on `listener` (from [`bind`]) until the runtime
/// stops; requests come out of the returned queue.
pub fn serve(listener: TcpListener) -> std::io::Result<mpsc::Receiver<ControlCall>> {
    let listener = tokio::net::TcpListener::from_std(listener)?;
    let (tx, rx) = mpsc::channel(QUEUE_MAX);
    let router = Router::new()
        .route("/v1/control", post(control))
        .fallback(not_found)
        .with_state(tx);
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, router).await {
            eprintln!("the launcher's control endpoint stopped: {e}");
        }
    });
    Ok(rx)
}

async fn control(
    State(queue): State<mpsc::Sender<ControlCall>>,
    _: QueryParams<NoQuery>,
    req: Request,
) -> Response {
    answer(queue, req)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

async fn answer(queue: mpsc::Sender<ControlCall>, req: Request) -> Result<Response, ApiError> {
    let body = axum::body::to_bytes(req.into_body(), BODY_BYTES_MAX)
        .await
        .map_err(|_| ApiError::TooLarge(format!("request body over {BODY_BYTES_MAX} bytes")))?;
    let request: ControlRequest = parse_json(&body)?;
    let (reply, answer) = oneshot::channel();
    queue
        .try_send(ControlCall { request, reply })
        .map_err(|_| {
            ApiError::not_applied(
                crate::server::error::Reason::Backpressure,
                "the launcher is busy; retry shortly",
            )
        })?;
    let value = answer.await.map_err(|_| {
        ApiError::indeterminate(
            crate::server::error::Reason::ShuttingDown,
            "the launcher is stopping",
        )
    })??;
    Ok(Json(value).into_response())
}

async fn not_found(req: Request) -> ApiError {
    ApiError::NotFound(format!(
        "no route for {} {} (the launcher serves POST /v1/control)",
        req.method(),
        req.uri().path()
    ))
}
