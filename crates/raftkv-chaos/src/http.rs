//! A one-request-per-connection HTTP/1.1 client, written for the harness.
//!
//! Why not the workspace's reqwest client: the history needs to know
//! exactly whether a request could have reached the server. Here every
//! request opens a fresh connection, so the two phases are cleanly apart:
//! a failed or timed-out *connect* means nothing was sent (the operation
//! certainly did not happen), while any failure after the first byte was
//! written means the outcome is unknown. A kept-alive connection would blur
//! that (a server that closed an idle connection looks like a request lost
//! in flight).

use std::net::SocketAddr;
use std::time::Duration;

use raftkv::bench::http1::{read_answer, Framing};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// A complete answer: status, the answering node (`x-raftkv-node`) and
/// the body. The response reader is the load generator's
/// (`raftkv::bench::http1`), with close-delimited framing.
pub use raftkv::bench::http1::{Answer as Reply, NODE_HEADER};

/// Why there is no answer.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HttpError {
    /// The connection could not be opened (refused, unreachable, connect
    /// timeout): not one byte of the request left this process.
    #[error("not sent: {0}")]
    NotSent(String),
    /// The request was (maybe partly) sent and no complete answer came back
    /// in time: the server may or may not have acted on it.
    #[error("no complete answer: {0}")]
    NoAnswer(String),
}

/// Sends one request to `addr` on a fresh connection and reads the answer.
/// `connect_timeout` bounds the connect; `timeout` bounds the rest.
pub async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&[u8]>,
    connect_timeout: Duration,
    timeout: Duration,
) -> Result<Reply, HttpError> {
    let mut stream = match tokio::time::timeout(connect_timeout, TcpStream::connect(addr)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return Err(HttpError::NotSent(format!("connect {addr}: {e}"))),
        Err(_) => {
            return Err(HttpError::NotSent(format!(
                "connect {addr}: no answer within {connect_timeout:?}"
            )))
        }
    };
    let _ = stream.set_nodelay(true);
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(
        format!("{method} {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n").as_bytes(),
    );
    if let Some(b) = body {
        out.extend_from_slice(
            format!(
                "content-type: application/json\r\ncontent-length: {}\r\n",
                b.len()
            )
            .as_bytes(),
        );
    }
    out.extend_from_slice(b"\r\n");
    if let Some(b) = body {
        out.extend_from_slice(b);
    }
    let exchange = async {
        stream
            .write_all(&out)
            .await
            .map_err(|e| format!("write: {e}"))?;
        let mut buf = Vec::with_capacity(1024);
        read_answer(&mut stream, &mut buf, Framing::Close).await
    };
    match tokio::time::timeout(timeout, exchange).await {
        Ok(Ok(reply)) => Ok(reply),
        Ok(Err(detail)) => Err(HttpError::NoAnswer(format!("{addr}: {detail}"))),
        Err(_) => Err(HttpError::NoAnswer(format!(
            "{addr}: no answer within {timeout:?}"
        ))),
    }
}
