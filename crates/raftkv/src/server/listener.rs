//! The HTTP accept loop: connection limit, per-connection tasks, graceful
//! shutdown.
//!
//! The shape follows tokio's mini-redis: [`run`] takes a bound listener and
//! a `shutdown` future, accepts until the future completes, then stops
//! accepting and lets the open connections finish what they are doing.
//!
//! ## Limiting connections
//!
//! Every connection holds one permit of a semaphore of `max_connections`
//! permits, taken **before** `accept`. When all permits are out, the loop
//! simply stops accepting: new connections wait in the kernel's listen
//! backlog (itself bounded) until a connection closes and returns its
//! permit. This is backpressure rather than refusal: the server never
//! spends a task or a buffer on a connection it cannot serve, and a client
//! sees a slow connect instead of an error. (Answering 503 would require
//! accepting and parsing the request first, which is the work the limit is
//! there to bound.)
//!
//! An idle keep-alive connection would hold its permit forever, so HTTP/1's
//! header-read timeout is set: a connection that does not send a complete
//! request head within `idle_timeout` (counted from when the server starts
//! waiting for one, including between keep-alive requests) is closed.
//!
//! ## Graceful shutdown
//!
//! Each connection is registered with a [`GracefulShutdown`] watcher. On
//! shutdown the listener is dropped (new connections are refused), then
//! every connection is told to finish its in-flight request and close
//! (HTTP/1 stops keep-alive), and we wait up to `drain_timeout` for them.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tracing::{debug, info, warn};

use super::metrics::HttpMetrics;
use super::routes::ApiService;

/// Limits of the accept loop.
#[derive(Clone, Copy, Debug)]
pub struct ListenerLimits {
    /// Most connections served at once.
    pub max_connections: usize,
    /// A connection that sends no complete request head for this long is
    /// closed (frees its permit).
    pub idle_timeout: Duration,
    /// How long shutdown waits for open connections to finish.
    pub drain_timeout: Duration,
}

/// Longest back-off after a failed `accept` (e.g. out of file descriptors):
/// retrying at once would spin the CPU while the condition lasts.
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// Serves `service` on `listener` until `shutdown` completes, then drains.
pub async fn run(
    listener: TcpListener,
    service: ApiService,
    limits: ListenerLimits,
    metrics: HttpMetrics,
    shutdown: impl Future<Output = ()>,
) {
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = GracefulShutdown::new();
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.idle_timeout)
        .keep_alive(true);
    tokio::pin!(shutdown);
    let mut backoff = Duration::from_millis(5);

    loop {
        // 1. Wait for a free slot (or shutdown). Taking the permit first
        //    is what turns the limit into backpressure on `accept`.
        let permit = tokio::select! {
            permit = permits.clone().acquire_owned() => match permit {
                Ok(p) => p,
                // The semaphore is never closed; stop serving if it were.
                Err(_) => break,
            },
            () = &mut shutdown => break,
        };
        // 2. Accept one connection (or shutdown).
        let (stream, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => {
                    backoff = Duration::from_millis(5);
                    conn
                }
                Err(e) => {
                    warn!(error = %e, "accept failed; backing off");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(ACCEPT_BACKOFF_MAX);
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // Small requests and responses: do not wait to fill a segment.
        let _ = stream.set_nodelay(true);
        // 3. Serve it on its own task; the permit goes back when the task
        //    ends, whatever way the connection ended.
        let conn = builder.serve_connection(TokioIo::new(stream), service.clone());
        let conn = graceful.watch(conn);
        let metrics = metrics.clone();
        tokio::spawn(async move {
            metrics.connections_open.inc();
            if let Err(e) = conn.await {
                debug!(%remote, error = %e, "connection ended with an error");
            }
            metrics.connections_open.dec();
            drop(permit);
        });
    }

    // Stop accepting: close the listening socket first, so clients fail
    // fast instead of queueing in a backlog nobody will read.
    drop(listener);
    info!("HTTP server draining open connections");
    tokio::select! {
        () = graceful.shutdown() => info!("HTTP connections drained"),
        () = tokio::time::sleep(limits.drain_timeout) => {
            warn!(timeout_ms = limits.drain_timeout.as_millis() as u64, "connections still open after the drain timeout; closing them");
        }
    }
}

/// Binds `addr` for the client API.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}
