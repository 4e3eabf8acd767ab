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

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Largest response head accepted.
const HEAD_BYTES_MAX: usize = 16 * 1024;
/// Largest response body accepted (the harness's values are tiny; a status
/// answer is a few hundred bytes).
const BODY_BYTES_MAX: usize = 1 << 20;

/// The header every raftkv answer carries (once the error-contract change
/// is in): the id of the node that answered, also when it relayed the
/// leader's answer to a forwarded request.
pub const NODE_HEADER: &str = "x-raftkv-node";

/// A complete answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    /// HTTP status.
    pub status: u16,
    /// `x-raftkv-node`, when present and numeric.
    pub node: Option<u64>,
    /// The body.
    pub body: Vec<u8>,
}

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
        read_answer(&mut stream).await
    };
    match tokio::time::timeout(timeout, exchange).await {
        Ok(Ok(reply)) => Ok(reply),
        Ok(Err(detail)) => Err(HttpError::NoAnswer(format!("{addr}: {detail}"))),
        Err(_) => Err(HttpError::NoAnswer(format!(
            "{addr}: no answer within {timeout:?}"
        ))),
    }
}

async fn read_answer(stream: &mut TcpStream) -> Result<Reply, String> {
    let mut buf = Vec::with_capacity(1024);
    let head_end = loop {
        if let Some(i) = find(&buf, b"\r\n\r\n") {
            break i + 4;
        }
        if buf.len() > HEAD_BYTES_MAX {
            return Err("response head too large".into());
        }
        if read_more(stream, &mut buf).await? == 0 {
            return Err("connection closed before the answer".into());
        }
    };
    let head = std::str::from_utf8(&buf[..head_end]).map_err(|_| "head is not UTF-8")?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let status: u16 = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad status line {status_line:?}"))?;
    let mut content_length = None;
    let mut chunked = false;
    let mut node = None;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            content_length = Some(
                value
                    .parse::<usize>()
                    .map_err(|_| format!("bad content-length {value:?}"))?,
            );
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.to_ascii_lowercase().contains("chunked");
        } else if name.eq_ignore_ascii_case(NODE_HEADER) {
            node = value.parse().ok();
        }
    }
    let mut rest = buf.split_off(head_end);
    let body = if chunked {
        read_chunked(stream, &mut rest).await?
    } else if let Some(n) = content_length {
        if n > BODY_BYTES_MAX {
            return Err(format!("body of {n} bytes is over the limit"));
        }
        while rest.len() < n {
            if read_more(stream, &mut rest).await? == 0 {
                return Err("connection closed mid-body".into());
            }
        }
        rest.truncate(n);
        rest
    } else {
        // No length: the body runs to the end of the connection.
        while read_more(stream, &mut rest).await? > 0 {
            if rest.len() > BODY_BYTES_MAX {
                return Err("body over the limit".into());
            }
        }
        rest
    };
    Ok(Reply { status, node, body })
}

async fn read_chunked(stream: &mut TcpStream, data: &mut Vec<u8>) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    let mut pos = 0;
    loop {
        let line_end = loop {
            if let Some(i) = find(&data[pos..], b"\r\n") {
                break pos + i;
            }
            if read_more(stream, data).await? == 0 {
                return Err("connection closed mid-chunk".into());
            }
        };
        let text = std::str::from_utf8(&data[pos..line_end]).map_err(|_| "bad chunk size")?;
        let text = text.split(';').next().unwrap_or("").trim();
        let size =
            usize::from_str_radix(text, 16).map_err(|_| format!("bad chunk size {text:?}"))?;
        if body.len() + size > BODY_BYTES_MAX {
            return Err("chunked body over the limit".into());
        }
        let start = line_end + 2;
        while data.len() < start + size + 2 {
            if read_more(stream, data).await? == 0 {
                return Err("connection closed mid-chunk".into());
            }
        }
        body.extend_from_slice(&data[start..start + size]);
        pos = start + size + 2;
        if size == 0 {
            return Ok(body);
        }
    }
}

async fn read_more(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Result<usize, String> {
    let mut chunk = [0u8; 8192];
    let n = stream
        .read(&mut chunk)
        .await
        .map_err(|e| format!("read: {e}"))?;
    buf.extend_from_slice(&chunk[..n]);
    Ok(n)
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    /// A server that answers each connection with the next canned bytes
    /// (None: accept, read the request, and never answer).
    async fn serve(answers: Vec<Option<&'static [u8]>>) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            for a in answers {
                let (mut s, _) = listener.accept().await.unwrap();
                let mut buf = Vec::new();
                while find(&buf, b"\r\n\r\n").is_none() {
                    let mut c = [0u8; 1024];
                    let n = s.read(&mut c).await.unwrap();
                    if n == 0 {
                        break;
                    }
                    buf.extend_from_slice(&c[..n]);
                }
                match a {
                    Some(bytes) => {
                        s.write_all(bytes).await.unwrap();
                    }
                    None => {
                        tokio::time::sleep(Duration::from_secs(2)).await;
                    }
                }
            }
        });
        addr
    }

    const SHORT: Duration = Duration::from_millis(300);

    #[tokio::test]
    async fn reads_status_node_header_and_both_body_framings() {
        let addr = serve(vec![
            Some(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nX-Raftkv-Node: 3\r\n\r\nhi"),
            Some(b"HTTP/1.1 503 Service Unavailable\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"),
        ])
        .await;
        let r = request(addr, "GET", "/x", None, SHORT, SHORT)
            .await
            .unwrap();
        assert_eq!(
            (r.status, r.node, r.body.as_slice()),
            (200, Some(3), &b"hi"[..])
        );
        let r = request(addr, "PUT", "/y", Some(b"{}"), SHORT, SHORT)
            .await
            .unwrap();
        assert_eq!(
            (r.status, r.node, r.body.as_slice()),
            (503, None, &b"abcde"[..])
        );
    }

    #[tokio::test]
    async fn refused_is_not_sent_and_silence_is_no_answer() {
        let dead = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let e = request(dead, "GET", "/", None, SHORT, SHORT)
            .await
            .unwrap_err();
        assert!(matches!(e, HttpError::NotSent(_)), "{e}");
        let silent = serve(vec![None, Some(b"garbage\r\n\r\n")]).await;
        let e = request(silent, "PUT", "/k", Some(b"{}"), SHORT, SHORT)
            .await
            .unwrap_err();
        assert!(matches!(e, HttpError::NoAnswer(_)), "{e}");
        let e = request(silent, "GET", "/", None, SHORT, SHORT)
            .await
            .unwrap_err();
        assert!(matches!(e, HttpError::NoAnswer(_)), "{e}");
    }
}
