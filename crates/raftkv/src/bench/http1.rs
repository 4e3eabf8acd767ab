//! A minimal HTTP/1.1 keep-alive connection for the bench's hot path.
//!
//! The bench shares the machine with the cluster it measures, so every
//! microsecond of client CPU is taken from the servers. The general client
//! (reqwest + hyper) costs about 60 µs of CPU per request here; this one
//! writes a pre-formatted request with one syscall and parses only the
//! status line, `Content-Length` and `Transfer-Encoding`, which is all the
//! raftkv server's answers need. Anything else it cannot parse is an error.
//!
//! With a TLS configuration ([`Conn::with_tls`]) the connection is HTTPS
//! (rustls, verifying the server's certificate for the host of the
//! address); the request is then written and flushed through the TLS
//! record layer, one record per request.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

/// Largest response head (status line + headers) accepted.
const HEAD_BYTES_MAX: usize = 16 * 1024;
/// Largest response body accepted (values are at most a few MiB).
const BODY_BYTES_MAX: usize = 64 * 1024 * 1024;

/// The header naming the node that answered (see the server's error
/// contract).
pub const NODE_HEADER: &str = "x-raftkv-node";

/// One answer: status, the answering node and the body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    /// `x-raftkv-node`, when present and numeric.
    pub node: Option<u64>,
    pub body: Vec<u8>,
}

/// How the end of a body without a length is found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// A kept-alive connection: no length means no body.
    KeepAlive,
    /// A `connection: close` request: the body runs to the end of the
    /// connection.
    Close,
}

/// Why a request failed at the transport level.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// Could not connect (nothing was sent).
    #[error("connect to {addr}: {source}")]
    Connect { addr: String, source: io::Error },
    /// Sent (maybe), no complete answer: outcome unknown.
    #[error("connection to {addr} failed mid-request: {detail}")]
    Broken { addr: String, detail: String },
    /// No complete answer within the timeout.
    #[error("no answer from {addr} within {timeout:?}")]
    Timeout { addr: String, timeout: Duration },
    /// The TLS handshake failed (nothing was sent).
    #[error("TLS with {addr}: {detail}")]
    Tls { addr: String, detail: String },
}

/// A plain or TLS connection.
enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// A keep-alive connection to one `host:port`, reconnecting on demand.
pub struct Conn {
    addr: String,
    stream: Option<Stream>,
    tls: Option<TlsConnector>,
    out: Vec<u8>,
    buf: Vec<u8>,
    timeout: Duration,
}

impl Conn {
    /// A connection to `addr` (`host:port`), opened on first use.
    pub fn new(addr: String, timeout: Duration) -> Conn {
        Conn::with_tls(addr, timeout, None)
    }

    /// A connection to `addr`, over TLS with `tls` if given.
    pub fn with_tls(
        addr: String,
        timeout: Duration,
        tls: Option<Arc<rustls::ClientConfig>>,
    ) -> Conn {
        Conn {
            addr,
            stream: None,
            tls: tls.map(TlsConnector::from),
            out: Vec::with_capacity(512),
            buf: Vec::with_capacity(4096),
            timeout,
        }
    }

    /// The per-request timeout.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The address this connection goes to.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Sends one request and reads its answer. On any error the
    /// connection is dropped (the next request reconnects).
    pub async fn request(
        &mut self,
        method: &str,
        path: &str,
        body: &[u8],
    ) -> Result<Answer, TransportError> {
        let timeout = self.timeout;
        match tokio::time::timeout(timeout, self.request_inner(method, path, body)).await {
            Ok(Ok(a)) => Ok(a),
            Ok(Err(e)) => {
                self.stream = None;
                Err(e)
            }
            Err(_) => {
                self.stream = None;
                Err(TransportError::Timeout {
                    addr: self.addr.clone(),
                    timeout,
                })
            }
        }
    }

    async fn request_inner(
        &mut self,
        method: &str,
        path: &str,
        body: &[u8],
    ) -> Result<Answer, TransportError> {
        let fresh = self.stream.is_none();
        if fresh {
            let s =
                TcpStream::connect(&self.addr)
                    .await
                    .map_err(|source| TransportError::Connect {
                        addr: self.addr.clone(),
                        source,
                    })?;
            let _ = s.set_nodelay(true);
            let stream = match &self.tls {
                None => Stream::Plain(s),
                Some(connector) => {
                    let tls_err = |detail: String| TransportError::Tls {
                        addr: self.addr.clone(),
                        detail,
                    };
                    let name = server_name(&self.addr)
                        .ok_or_else(|| tls_err(format!("`{}` has no host to verify", self.addr)))?;
                    let s = connector
                        .connect(name, s)
                        .await
                        .map_err(|e| tls_err(e.to_string()))?;
                    Stream::Tls(Box::new(s))
                }
            };
            self.stream = Some(stream);
        }
        self.out.clear();
        self.out.extend_from_slice(method.as_bytes());
        self.out.push(b' ');
        self.out.extend_from_slice(path.as_bytes());
        self.out.extend_from_slice(b" HTTP/1.1\r\nhost: ");
        self.out.extend_from_slice(self.addr.as_bytes());
        if !body.is_empty() {
            self.out
                .extend_from_slice(b"\r\ncontent-type: application/json\r\ncontent-length: ");
            self.out
                .extend_from_slice(body.len().to_string().as_bytes());
        }
        self.out.extend_from_slice(b"\r\n\r\n");
        self.out.extend_from_slice(body);
        let addr = self.addr.clone();
        let broken = |detail: String| TransportError::Broken {
            addr: addr.clone(),
            detail,
        };
        // Held: set just above or by an earlier successful request.
        let Some(stream) = self.stream.as_mut() else {
            return Err(broken("no connection".into()));
        };
        stream
            .write_all(&self.out)
            .await
            .map_err(|e| broken(e.to_string()))?;
        // TLS keeps written bytes in its record buffer until flushed.
        stream.flush().await.map_err(|e| broken(e.to_string()))?;
        read_answer(stream, &mut self.buf, Framing::KeepAlive)
            .await
            .map_err(broken)
    }
}

/// The name a server's certificate must carry for `host:port` (an IP or a
/// DNS name; IPv6 in brackets).
fn server_name(addr: &str) -> Option<ServerName<'static>> {
    let (host, _port) = addr.rsplit_once(':')?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(host.to_string()).ok()
}

/// Reads one response from `stream`, using `buf` (which may hold nothing
/// from before: the server answers one request at a time). Every size is
/// bounded: the head by 16 KiB, the body by 64 MiB. Also the fault test's
/// client (raftkv-chaos), which opens a connection per request.
pub async fn read_answer<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut Vec<u8>,
    framing: Framing,
) -> Result<Answer, String> {
    buf.clear();
    let head_end = loop {
        if let Some(i) = find(buf, b"\r\n\r\n") {
            break i + 4;
        }
        if buf.len() > HEAD_BYTES_MAX {
            return Err("response head too large".into());
        }
        if read_more(stream, buf).await? == 0 {
            return Err("connection closed before the answer".into());
        }
    };
    let head = std::str::from_utf8(&buf[..head_end])
        .map_err(|_| "response head is not UTF-8".to_string())?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let status: u16 = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad status line {status_line:?}"))?;
    let mut content_length: Option<usize> = None;
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
                    .parse()
                    .map_err(|_| format!("bad content-length {value:?}"))?,
            );
        } else if name.eq_ignore_ascii_case("transfer-encoding")
            && value.to_ascii_lowercase().contains("chunked")
        {
            chunked = true;
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
    } else if framing == Framing::Close {
        while read_more(stream, &mut rest).await? > 0 {
            if rest.len() > BODY_BYTES_MAX {
                return Err("body over the limit".into());
            }
        }
        rest
    } else {
        Vec::new()
    };
    Ok(Answer { status, node, body })
}

async fn read_chunked<S: AsyncRead + Unpin>(
    stream: &mut S,
    data: &mut Vec<u8>,
) -> Result<Vec<u8>, String> {
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
        let size_text =
            std::str::from_utf8(&data[pos..line_end]).map_err(|_| "bad chunk size".to_string())?;
        let size_text = size_text.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_text, 16)
            .map_err(|_| format!("bad chunk size {size_text:?}"))?;
        if body.len() + size > BODY_BYTES_MAX {
            return Err("chunked body over the limit".into());
        }
        let start = line_end + 2;
        // The chunk, then its CRLF (for the last chunk: the final CRLF,
        // assuming no trailers, which this server never sends).
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

async fn read_more<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut Vec<u8>,
) -> Result<usize, String> {
    let mut chunk = [0u8; 8192];
    let n = stream.read(&mut chunk).await.map_err(|e| e.to_string())?;
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

    /// A one-connection server that answers each request with the next
    /// canned response.
    async fn serve(responses: Vec<&'static [u8]>) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            for r in responses {
                let mut buf = Vec::new();
                while find(&buf, b"\r\n\r\n").is_none() {
                    let mut c = [0u8; 1024];
                    let n = s.read(&mut c).await.unwrap();
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&c[..n]);
                }
                s.write_all(r).await.unwrap();
            }
        });
        addr
    }

    #[tokio::test]
    async fn parses_length_and_chunked_bodies_on_one_connection() {
        let addr = serve(vec![
            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nhi",
            b"HTTP/1.1 503 Service Unavailable\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
            b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n",
        ])
        .await;
        let mut c = Conn::new(addr, Duration::from_secs(5));
        let a = c.request("GET", "/x", b"").await.unwrap();
        assert_eq!((a.status, a.body.as_slice()), (200, &b"hi"[..]));
        let a = c.request("PUT", "/y", b"{}").await.unwrap();
        assert_eq!((a.status, a.body.as_slice()), (503, &b"abcde"[..]));
        let a = c.request("GET", "/z", b"").await.unwrap();
        assert_eq!((a.status, a.body.len()), (404, 0));
        // The server went away: the next request fails, not hangs.
        assert!(c.request("GET", "/w", b"").await.is_err());
    }

    #[test]
    fn server_names_come_from_the_host() {
        assert_eq!(
            server_name("127.0.0.1:7700"),
            Some(ServerName::IpAddress(
                std::net::IpAddr::from([127, 0, 0, 1]).into()
            ))
        );
        assert!(matches!(
            server_name("[::1]:7700"),
            Some(ServerName::IpAddress(_))
        ));
        assert!(matches!(
            server_name("localhost:7700"),
            Some(ServerName::DnsName(_))
        ));
        assert_eq!(server_name("no-port"), None);
    }

    #[tokio::test]
    async fn garbage_and_refusals_are_errors() {
        let addr = serve(vec![b"NOT HTTP\r\n\r\n"]).await;
        let mut c = Conn::new(addr, Duration::from_secs(5));
        assert!(matches!(
            c.request("GET", "/", b"").await,
            Err(TransportError::Broken { .. })
        ));
        let dead = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .to_string();
        let mut c = Conn::new(dead, Duration::from_secs(5));
        assert!(matches!(
            c.request("GET", "/", b"").await,
            Err(TransportError::Connect { .. })
        ));
    }
}
