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
//!
//! ## TLS
//!
//! With a TLS acceptor (`--tls-*`) the port speaks only HTTPS. The TLS
//! handshake runs on the connection's own task (holding its permit), within
//! [`TLS_HANDSHAKE_TIMEOUT`]. Its first byte is peeked first: a TLS
//! connection starts with a handshake record (0x16), an HTTP request with a
//! letter. A plain-HTTP request is answered in plain HTTP, once, with 400
//! `tls_required`, the header `x-raftkv-tls-required: 1` and a message
//! naming the `https://` URL to use, then closed: a person with curl, or a
//! client configured with `http://`, learns what is wrong instead of seeing
//! a reset connection (nginx answers such requests the same way). Refused
//! connections are counted in `raftkv_http_tls_refused_total{reason}`.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use raft_runtime::tls::{handshake_reason, TLS_HANDSHAKE_BYTE};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
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

/// Longest a client may take to complete the TLS handshake (including
/// sending its first byte). A TLS client does it in one or two round trips.
pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The header of the answer to a plain-HTTP request on a TLS port.
pub const TLS_REQUIRED_HEADER: &str = "x-raftkv-tls-required";

/// The error code of that answer.
pub const TLS_REQUIRED_CODE: &str = "tls_required";

/// Largest request head read from a plain-HTTP request on a TLS port
/// before answering it.
const PLAIN_HEAD_BYTES_MAX: usize = 16 << 10;

/// Time given to a plain-HTTP client to send its request head, and then to
/// read the answer, on a TLS port.
const PLAIN_REFUSAL_TIMEOUT: Duration = Duration::from_secs(2);

/// Serves `service` on `listener` until `shutdown` completes, then drains.
/// With `tls`, every connection must be TLS (see the module docs).
pub async fn run(
    listener: TcpListener,
    service: ApiService,
    limits: ListenerLimits,
    metrics: HttpMetrics,
    tls: Option<TlsAcceptor>,
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
        if let Some(acceptor) = &tls {
            // 3'. The TLS handshake and the connection on their own task.
            let (acceptor, builder, service, metrics) = (
                acceptor.clone(),
                builder.clone(),
                service.clone(),
                metrics.clone(),
            );
            let watcher = graceful.watcher();
            tokio::spawn(async move {
                metrics.connections_open.inc();
                if let Some(stream) = accept_tls(&acceptor, stream, remote, &metrics).await {
                    let conn = builder.serve_connection(TokioIo::new(stream), service);
                    if let Err(e) = watcher.watch(conn).await {
                        debug!(%remote, error = %e, "connection ended with an error");
                    }
                }
                metrics.connections_open.dec();
                drop(permit);
            });
            continue;
        }
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

/// The TLS handshake of a client connection, or the plain-HTTP refusal
/// (see the module docs). `None` when the connection is done with.
async fn accept_tls(
    acceptor: &TlsAcceptor,
    stream: TcpStream,
    remote: SocketAddr,
    metrics: &HttpMetrics,
) -> Option<tokio_rustls::server::TlsStream<TcpStream>> {
    let deadline = tokio::time::Instant::now() + TLS_HANDSHAKE_TIMEOUT;
    let mut first = [0u8; 1];
    match tokio::time::timeout_at(deadline, stream.peek(&mut first)).await {
        Ok(Ok(1..)) if first[0] == TLS_HANDSHAKE_BYTE => {}
        Ok(Ok(1..)) => {
            debug!(%remote, "plain HTTP on the TLS port; answering tls_required");
            metrics.tls_refused("plain_http");
            refuse_plain_http(stream).await;
            return None;
        }
        // Closed or failed before sending anything.
        Ok(_) => return None,
        Err(_) => {
            metrics.tls_refused("timeout");
            return None;
        }
    }
    match tokio::time::timeout_at(deadline, acceptor.accept(stream)).await {
        Ok(Ok(s)) => Some(s),
        Ok(Err(e)) => {
            let reason = handshake_reason(&e);
            metrics.tls_refused(reason);
            if matches!(reason, "untrusted_certificate" | "no_certificate") {
                // A client certificate refused (--tls-client-auth): an
                // authentication failure an operator wants to see.
                warn!(%remote, reason, error = %e, "client TLS certificate refused");
            } else {
                debug!(%remote, reason, error = %e, "client TLS handshake failed");
            }
            None
        }
        Err(_) => {
            metrics.tls_refused("timeout");
            None
        }
    }
}

/// Answers a plain-HTTP request on the TLS port with 400 `tls_required`.
/// The request head is read first (bounded), and the connection drained a
/// little after the answer: closing a socket with unread input resets it,
/// and the client might lose the answer.
async fn refuse_plain_http(mut stream: TcpStream) {
    let mut head = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    let read_head = async {
        while head.len() < PLAIN_HEAD_BYTES_MAX && !head.windows(4).any(|w| w == b"\r\n\r\n") {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => head.extend_from_slice(&chunk[..n]),
            }
        }
    };
    let _ = tokio::time::timeout(PLAIN_REFUSAL_TIMEOUT, read_head).await;
    let (host, path) = request_target(&head);
    let host = host.unwrap_or_else(|| {
        stream
            .local_addr()
            .map(|a| a.to_string())
            .unwrap_or_else(|_| "HOST:PORT".into())
    });
    let url = format!("https://{host}{}", path.unwrap_or_default());
    let body = serde_json::json!({
        "error": {
            "code": TLS_REQUIRED_CODE,
            "reason": null,
            "message": format!(
                "this raftkv server speaks TLS only: use {url} (and the cluster's CA: `--ca FILE` for raftkv, `--cacert FILE` for curl)"
            ),
            "leader_hint": null,
        }
    })
    .to_string();
    let answer = format!(
        "HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\n{TLS_REQUIRED_HEADER}: 1\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    let finish = async {
        stream.write_all(answer.as_bytes()).await?;
        stream.shutdown().await?;
        // Drain until the client closes (bounded): see above.
        let mut drained = 0usize;
        while drained < PLAIN_HEAD_BYTES_MAX * 4 {
            match stream.read(&mut chunk).await? {
                0 => break,
                n => drained += n,
            }
        }
        Ok::<(), std::io::Error>(())
    };
    let _ = tokio::time::timeout(PLAIN_REFUSAL_TIMEOUT, finish).await;
}

/// The `Host` header and the path of a request head, if readable; both
/// limited to printable characters, so the message cannot be used to
/// inject anything.
fn request_target(head: &[u8]) -> (Option<String>, Option<String>) {
    let text = String::from_utf8_lossy(head);
    let clean = |s: &str| -> Option<String> {
        let s = s.trim();
        (!s.is_empty() && s.len() <= 512 && s.bytes().all(|b| b.is_ascii_graphic()))
            .then(|| s.to_string())
    };
    let mut lines = text.split("\r\n");
    let path = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .filter(|p| p.starts_with('/'))
        .and_then(clean);
    let host = lines
        .take_while(|l| !l.is_empty())
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.trim().eq_ignore_ascii_case("host").then_some(value)
        })
        .and_then(clean);
    (host, path)
}

/// Binds `addr` for the client API.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_refusal_names_the_https_url_of_the_request() {
        let (host, path) = request_target(
            b"GET /v1/kv/a?x=1 HTTP/1.1\r\nAccept: */*\r\nhOsT: 127.0.0.1:7700\r\n\r\n",
        );
        assert_eq!(host.as_deref(), Some("127.0.0.1:7700"));
        assert_eq!(path.as_deref(), Some("/v1/kv/a?x=1"));
        // Nothing usable: the caller falls back to the local address.
        assert_eq!(request_target(b"\x01\x02garbage"), (None, None));
        let (host, _) = request_target(b"GET / HTTP/1.1\r\nHost: a b\"<\r\n\r\n");
        assert_eq!(host, None);
    }
}
