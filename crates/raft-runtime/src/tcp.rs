//! Peer transport over TCP.
//!
//! - **Outbound:** one task and one connection per peer. Messages for a peer
//!   go into its bounded queue (`peer_queue_msgs`); a full queue drops the
//!   message and counts it (Raft retransmits), so a slow or dead peer never
//!   blocks the driver or the other peers. The task writes whatever queued
//!   up as one batch (up to `write_batch_bytes_max`), and reconnects with
//!   exponential backoff (`reconnect_backoff_min` doubling up to
//!   `reconnect_backoff_max`), dropping messages that queue while it is
//!   disconnected, since they would be stale. A write that does not finish
//!   within `write_timeout` drops the connection.
//! - **Inbound:** one listener; one task per accepted connection (at most
//!   `inbound_connections_max`). The first frame must be a [`Hello`] from a
//!   node of the same cluster addressed to this node, within
//!   `handshake_timeout`; otherwise the connection is closed with a log
//!   line. Any frame that fails to decode, is oversized (checked from the
//!   length prefix before allocating), fails its CRC, or carries a message
//!   not from the handshaken peer closes that connection. Nothing here
//!   panics on input.
//! - **Nodes not (yet) in the peer map** are accepted by default
//!   (`accept_unknown_peers`). A node being added to the cluster learns the
//!   members' addresses before they learn its own (which arrives through
//!   the log, after the membership change): refusing it made it back off
//!   (up to `reconnect_backoff_max`) and delayed its first
//!   acknowledgements. Refusing bought no safety: the handshake is
//!   authenticated by the cluster id alone, so any process that can reach
//!   the port can claim a known id just as well. The engine decides what a
//!   message from a non-member may do (nothing disruptive: PreVote and
//!   CheckQuorum keep a removed node from deposing a healthy leader). Set
//!   it to false to refuse handshakes from nodes without an address here.
//! - **Reconnecting at once.** A peer's back-off is reset, and a waiting
//!   reconnect happens at once, when the peer's address is (re)set with
//!   [`Transport::set_peer_addr`] (even to the same address), and when that
//!   peer completes a handshake on our listener: either is fresh evidence
//!   that it is up, so waiting out a back-off grown while it was down or
//!   not yet started would only delay replication.
//! - **Addresses** are [`PeerAddr`]s: an IP, or a host name looked up
//!   again at every connect attempt (within `connect_timeout`; every
//!   address it resolves to is tried in order), so a peer that comes back
//!   under the same name with a new IP is reached at the next reconnect.
//! - Connections are one-way: a node reads only from connections others
//!   opened to it, and writes only to connections it opened.
//! - **TLS** (`tls`, off by default): every connection is mutual TLS
//!   against the cluster CA, and each side checks that the other's
//!   certificate names the node it is (or claims to be): see
//!   [`crate::tls`]. A connection that is not TLS, a certificate of
//!   another CA, none, or one naming another node is refused, logged
//!   (WARN) and counted in `raft_peer_tls_refused_total{reason}`, on the
//!   listener's side for the connecting node's certificate and on the
//!   dialer's side for the listener's. The TLS handshake (and the peek at
//!   its first byte) counts against `handshake_timeout`. Certificates
//!   reloaded with [`crate::tls::TlsCerts::reload`] apply to every new
//!   connection.
//!
//! - **Snapshots** of durable state machines are streamed on a connection
//!   of their own (a Hello, then `SnapshotChunk` frames, then one
//!   `SnapshotEnd`), so megabytes of state never queue in front of a
//!   heartbeat. The reader forwards the frames through a bounded queue
//!   to the driver's receiver (backpressure reaches the sender through
//!   TCP); at most [`INCOMING_SNAPSHOTS_QUEUED_MAX`] streams wait for the
//!   driver, more are refused. A chunk must fit in `max_frame_bytes`.
//!
//! Without TLS there is no authentication beyond the cluster id and no
//! encryption: run it on a trusted network.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use raft_core::{Message, NodeId};
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch, Notify, Semaphore};
use tokio::task::{JoinHandle, JoinSet};
use tracing::{debug, info, warn, Instrument};

use crate::addr::PeerAddr;
use crate::config::ConfigError;
use crate::frame::{encode_frame, read_frame, FrameError, Hello, WireFrame};
use crate::metrics::{Metrics, PeerLabel};
use crate::tls::{handshake_reason, names_node, peer_name, PeerTls, TLS_HANDSHAKE_BYTE};
use crate::transport::{inbound_channel, Inbound, Transport};
use crate::transport::{
    IncomingSnapshot, SnapshotFrame, INCOMING_SNAPSHOTS_QUEUED_MAX, SNAPSHOT_FRAMES_QUEUED_MAX,
};

/// A connection that lived this long resets the reconnect backoff; a peer
/// that accepts and at once closes (e.g. refuses our handshake) keeps it.
const STABLE_CONNECTION: Duration = Duration::from_secs(1);
/// A read buffer grown beyond this by one large frame is released after it.
const READ_BUFFER_KEEP_BYTES: usize = 1 << 20;
/// Bytes an inbound connection reads from its socket at a time.
const READ_BUFFER_BYTES: usize = 64 << 10;

/// Configuration of the TCP transport.
#[derive(Clone, Debug)]
pub struct TcpConfig {
    /// Peers with another cluster id are refused.
    pub cluster_id: u64,
    pub node_id: NodeId,
    /// Where to listen for peers (port 0 picks a free port).
    pub listen_addr: SocketAddr,
    /// Known peers and their addresses (this node may be listed; it is
    /// skipped); a host name is resolved at every connect. Update at
    /// runtime with [`Transport::set_peer_addr`].
    pub peers: BTreeMap<NodeId, PeerAddr>,
    /// Largest frame accepted or sent, in bytes. Must exceed the engine's
    /// `max_append_bytes` and `snapshot_chunk_bytes` plus overhead.
    pub max_frame_bytes: u32,
    /// Capacity of each peer's outbound queue, in messages.
    pub peer_queue_msgs: usize,
    /// A batch written to a peer stops growing at this many bytes.
    pub write_batch_bytes_max: usize,
    /// Capacity of the queue from the transport into the driver.
    pub inbound_queue_max: usize,
    /// Accept handshakes (of this cluster, addressed to this node) from
    /// nodes that have no address in `peers`: see the module docs for why
    /// this is the default.
    pub accept_unknown_peers: bool,
    /// Most simultaneous inbound connections.
    pub inbound_connections_max: usize,
    pub connect_timeout: Duration,
    pub handshake_timeout: Duration,
    pub write_timeout: Duration,
    pub reconnect_backoff_min: Duration,
    pub reconnect_backoff_max: Duration,
    /// Mutual TLS for every peer connection; `None` (the default) is plain
    /// TCP. The certificate must name this node ([`peer_name`]).
    pub tls: Option<PeerTls>,
}

impl TcpConfig {
    pub fn new(cluster_id: u64, node_id: NodeId, listen_addr: SocketAddr) -> Self {
        TcpConfig {
            cluster_id,
            node_id,
            listen_addr,
            peers: BTreeMap::new(),
            max_frame_bytes: 64 << 20,
            peer_queue_msgs: 4096,
            write_batch_bytes_max: 1 << 20,
            inbound_queue_max: 8192,
            accept_unknown_peers: true,
            inbound_connections_max: 256,
            connect_timeout: Duration::from_secs(1),
            handshake_timeout: Duration::from_secs(5),
            write_timeout: Duration::from_secs(5),
            reconnect_backoff_min: Duration::from_millis(20),
            reconnect_backoff_max: Duration::from_secs(2),
            tls: None,
        }
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.node_id == 0 {
            return Err(ConfigError::Zero("node_id"));
        }
        let min_frame = 64 << 10;
        if self.max_frame_bytes < min_frame {
            return Err(ConfigError::OutOfRange {
                name: "max_frame_bytes",
                value: u64::from(self.max_frame_bytes),
                min: u64::from(min_frame),
                max: u64::from(u32::MAX),
            });
        }
        for (name, v) in [
            ("peer_queue_msgs", self.peer_queue_msgs),
            ("write_batch_bytes_max", self.write_batch_bytes_max),
            ("inbound_queue_max", self.inbound_queue_max),
            ("inbound_connections_max", self.inbound_connections_max),
        ] {
            if v == 0 {
                return Err(ConfigError::Zero(name));
            }
        }
        for (name, d) in [
            ("connect_timeout", self.connect_timeout),
            ("handshake_timeout", self.handshake_timeout),
            ("write_timeout", self.write_timeout),
            ("reconnect_backoff_min", self.reconnect_backoff_min),
        ] {
            if d.is_zero() {
                return Err(ConfigError::Zero(name));
            }
        }
        if let Some(tls) = &self.tls {
            let expected = peer_name(self.node_id);
            if tls.certs().identity() != Some(expected.as_str()) {
                return Err(ConfigError::TlsIdentity {
                    expected,
                    found: tls.certs().identity().unwrap_or("no name").to_string(),
                });
            }
        }
        Ok(())
    }
}

struct PeerLink {
    tx: mpsc::Sender<Message>,
    addr: watch::Sender<PeerAddr>,
    task: JoinHandle<()>,
}

/// Peers with an address, shared with the listener: the handshake check
/// (when unknown peers are refused) and each peer's *kick*, which makes its
/// outbound task reconnect now, with the back-off reset.
type Known = Arc<RwLock<BTreeMap<NodeId, Arc<Notify>>>>;

/// The TCP transport. Dropping it (or `shutdown`) stops every task.
pub struct TcpTransport {
    cfg: Arc<TcpConfig>,
    local_addr: SocketAddr,
    known: Known,
    peers: HashMap<NodeId, PeerLink>,
    listener: Option<JoinHandle<()>>,
    /// Tasks aborted by `shutdown`, awaited by `closed`.
    stopping: Vec<JoinHandle<()>>,
    metrics: Metrics,
    /// Snapshot streams arriving, until the driver takes them.
    incoming_snapshots: Option<mpsc::Receiver<IncomingSnapshot>>,
    /// Outgoing snapshot streams (aborted by `shutdown`).
    snapshot_tasks: Vec<JoinHandle<()>>,
}

impl TcpTransport {
    /// Binds the listener and connects to the configured peers. Returns the
    /// transport (for the driver) and the inbound queue (for the driver).
    pub async fn start(cfg: TcpConfig, metrics: Metrics) -> io::Result<(TcpTransport, Inbound)> {
        cfg.validate()
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let listener = TcpListener::bind(cfg.listen_addr).await?;
        let local_addr = listener.local_addr()?;
        let (inbound_tx, inbound_rx) = inbound_channel(cfg.inbound_queue_max);
        let (snapshots_tx, snapshots_rx) = mpsc::channel(INCOMING_SNAPSHOTS_QUEUED_MAX);
        let peers_init = cfg.peers.clone();
        let cfg = Arc::new(cfg);
        let known = Arc::new(RwLock::new(BTreeMap::new()));
        let listen_task = tokio::spawn(
            accept_loop(
                listener,
                cfg.clone(),
                known.clone(),
                InboundQueues {
                    messages: inbound_tx,
                    snapshots: snapshots_tx,
                },
                metrics.clone(),
            )
            .instrument(tracing::info_span!("raft_listener", node = cfg.node_id)),
        );
        info!(node = cfg.node_id, %local_addr, "peer transport listening");
        let mut t = TcpTransport {
            cfg,
            local_addr,
            known,
            peers: HashMap::new(),
            listener: Some(listen_task),
            stopping: Vec::new(),
            metrics,
            incoming_snapshots: Some(snapshots_rx),
            snapshot_tasks: Vec::new(),
        };
        for (id, addr) in peers_init {
            t.set_peer_addr(id, Some(addr));
        }
        Ok((t, inbound_rx))
    }

    /// The address the listener is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    fn known_write(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<NodeId, Arc<Notify>>> {
        // Only map updates happen under this lock; poisoning cannot leave it
        // half-updated.
        self.known.write().unwrap_or_else(|e| e.into_inner())
    }
}

impl Transport for TcpTransport {
    fn send(&mut self, msg: Message) {
        let to = msg.to;
        match self.peers.get(&to) {
            Some(link) => {
                if link.tx.try_send(msg).is_err() {
                    self.metrics.drop_for(to);
                }
            }
            None => self.metrics.drop_for(to),
        }
    }

    fn set_peer_addr(&mut self, id: NodeId, addr: Option<PeerAddr>) {
        if id == self.cfg.node_id || id == 0 {
            return;
        }
        match addr {
            Some(addr) => {
                let kick = self
                    .known_write()
                    .entry(id)
                    .or_insert_with(|| Arc::new(Notify::new()))
                    .clone();
                if let Some(link) = self.peers.get(&id) {
                    if *link.addr.borrow() != addr {
                        // The task reconnects to the new address at once.
                        link.addr.send_replace(addr);
                    } else {
                        // Same address: reconnect now if backing off.
                        kick.notify_one();
                    }
                    return;
                }
                let (tx, rx) = mpsc::channel(self.cfg.peer_queue_msgs);
                let (addr_tx, addr_rx) = watch::channel(addr);
                let task = tokio::spawn(
                    peer_loop(
                        self.cfg.clone(),
                        id,
                        rx,
                        addr_rx,
                        kick,
                        self.metrics.clone(),
                    )
                    .instrument(tracing::info_span!(
                        "raft_peer",
                        node = self.cfg.node_id,
                        peer = id
                    )),
                );
                self.peers.insert(
                    id,
                    PeerLink {
                        tx,
                        addr: addr_tx,
                        task,
                    },
                );
            }
            None => {
                self.known_write().remove(&id);
                if let Some(link) = self.peers.remove(&id) {
                    link.task.abort();
                }
            }
        }
    }

    fn shutdown(&mut self) {
        if let Some(l) = self.listener.take() {
            l.abort(); // drops its JoinSet, which aborts every inbound task
            self.stopping.push(l);
        }
        for (_, link) in self.peers.drain() {
            link.task.abort();
            self.stopping.push(link.task);
        }
        for t in self.snapshot_tasks.drain(..) {
            t.abort();
            self.stopping.push(t);
        }
    }

    /// Streams on a new connection to the peer's current address.
    fn send_snapshot(&mut self, to: NodeId, frames: mpsc::Receiver<SnapshotFrame>) {
        self.snapshot_tasks.retain(|t| !t.is_finished());
        let Some(link) = self.peers.get(&to) else {
            debug!(peer = to, "snapshot for a peer without an address dropped");
            return;
        };
        let addr = link.addr.borrow().clone();
        let (cfg, metrics) = (self.cfg.clone(), self.metrics.clone());
        let task = tokio::spawn(
            async move {
                if let Err(e) = stream_snapshot(&cfg, to, &addr, frames, &metrics).await {
                    warn!(%addr, error = %e, "snapshot stream to the peer failed");
                }
            }
            .instrument(tracing::info_span!(
                "raft_snapshot_out",
                node = self.cfg.node_id,
                peer = to
            )),
        );
        self.snapshot_tasks.push(task);
    }

    fn take_incoming_snapshots(&mut self) -> Option<mpsc::Receiver<IncomingSnapshot>> {
        self.incoming_snapshots.take()
    }

    fn streams_snapshots(&self) -> bool {
        true
    }

    /// Waits until the tasks stopped by `shutdown` are gone, so the listening
    /// port is free again when the driver reports itself stopped.
    fn closed(&mut self) -> impl std::future::Future<Output = ()> + Send + '_ {
        let tasks = std::mem::take(&mut self.stopping);
        async move {
            for t in tasks {
                // Cancelled (the normal case) or finished; nothing to report.
                let _ = t.await;
            }
        }
    }
}

impl Drop for TcpTransport {
    fn drop(&mut self) {
        self.shutdown();
    }
}

async fn accept_loop(
    listener: TcpListener,
    cfg: Arc<TcpConfig>,
    known: Known,
    inbound: InboundQueues,
    metrics: Metrics,
) {
    let slots = Arc::new(Semaphore::new(cfg.inbound_connections_max));
    let mut conns = JoinSet::new();
    loop {
        while conns.try_join_next().is_some() {}
        let (stream, remote) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                // E.g. out of file descriptors: back off instead of spinning.
                warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            warn!(%remote, "too many inbound peer connections; closing");
            metrics.refused("too_many_connections");
            continue;
        };
        let (cfg, known, inbound, metrics) =
            (cfg.clone(), known.clone(), inbound.clone(), metrics.clone());
        conns.spawn(async move {
            match &cfg.tls {
                None => serve_inbound(stream, remote, None, &cfg, &known, &inbound, &metrics).await,
                Some(tls) => {
                    if let Some((stream, cert)) =
                        accept_tls(tls, stream, remote, &cfg, &metrics).await
                    {
                        let cert = Some(cert);
                        serve_inbound(stream, remote, cert, &cfg, &known, &inbound, &metrics).await;
                    }
                }
            }
            drop(permit);
        });
    }
}

/// The TLS handshake of an inbound connection: refuses (logs and counts)
/// a connection that does not start with a TLS handshake, and any
/// handshake that fails (rustls has checked the client certificate against
/// the CA). Returns the stream and the client's certificate.
async fn accept_tls(
    tls: &PeerTls,
    stream: TcpStream,
    remote: SocketAddr,
    cfg: &TcpConfig,
    metrics: &Metrics,
) -> Option<(
    tokio_rustls::server::TlsStream<TcpStream>,
    CertificateDer<'static>,
)> {
    let deadline = tokio::time::Instant::now() + cfg.handshake_timeout;
    let timed_out = || {
        warn!(%remote, "no TLS handshake from the peer in time; closing");
        metrics.tls_refused("timeout");
    };
    // A plain-TCP node sends a length prefix, never 0x16 first: say so
    // plainly instead of logging a TLS parse error.
    let mut first = [0u8; 1];
    match tokio::time::timeout_at(deadline, stream.peek(&mut first)).await {
        Ok(Ok(1..)) if first[0] == TLS_HANDSHAKE_BYTE => {}
        Ok(Ok(1..)) => {
            warn!(%remote, "peer connection without TLS refused: this node's peer port requires TLS (does the other node run without TLS?)");
            metrics.tls_refused("not_tls");
            return None;
        }
        Ok(Ok(_)) => {
            debug!(%remote, "peer closed the connection before the TLS handshake");
            return None;
        }
        Ok(Err(e)) => {
            debug!(%remote, error = %e, "peer connection failed before the TLS handshake");
            return None;
        }
        Err(_) => {
            timed_out();
            return None;
        }
    }
    let stream = match tokio::time::timeout_at(deadline, tls.acceptor.accept(stream)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            let reason = handshake_reason(&e);
            warn!(%remote, reason, error = %e,
                "peer TLS handshake failed (a certificate not signed by the cluster CA, or none?); connection refused");
            metrics.tls_refused(reason);
            return None;
        }
        Err(_) => {
            timed_out();
            return None;
        }
    };
    // The verifier makes a certificate mandatory; be total anyway.
    let Some(cert) = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.clone().into_owned())
    else {
        warn!(%remote, "peer presented no TLS certificate; connection refused");
        metrics.tls_refused("no_certificate");
        return None;
    };
    Some((stream, cert))
}

/// Reads one inbound connection until it closes or misbehaves. `peer_cert`
/// is the TLS client certificate, when TLS is on: it must name the node the
/// handshake frame claims to be.
async fn serve_inbound<S: AsyncRead + Unpin>(
    stream: S,
    remote: SocketAddr,
    peer_cert: Option<CertificateDer<'static>>,
    cfg: &TcpConfig,
    known: &RwLock<BTreeMap<NodeId, Arc<Notify>>>,
    queues: &InboundQueues,
    metrics: &Metrics,
) {
    let inbound = &queues.messages;
    let max = cfg.max_frame_bytes;
    let mut buf = Vec::new();
    // Frames are read through a buffer: one `recv` takes every frame that
    // arrived (a length prefix, then the body, then the next prefix),
    // instead of three system calls per frame (prefix, body, and a prefix
    // read that finds nothing yet). A frame larger than the buffer is read
    // into `buf` directly.
    let mut stream = BufReader::with_capacity(READ_BUFFER_BYTES, stream);
    let hello = match tokio::time::timeout(
        cfg.handshake_timeout,
        read_frame(&mut stream, max, &mut buf),
    )
    .await
    {
        Ok(Ok(WireFrame::Hello(h))) => h,
        Ok(Ok(WireFrame::Message(_) | WireFrame::SnapshotChunk(_) | WireFrame::SnapshotEnd(_))) => {
            warn!(%remote, "peer connection did not start with a handshake; closing");
            metrics.refused("no_handshake");
            return;
        }
        Ok(Err(e)) => {
            warn!(%remote, error = %e, "bad handshake frame; closing");
            metrics.refused("bad_frame");
            return;
        }
        Err(_) => {
            warn!(%remote, "no handshake in time; closing");
            metrics.refused("handshake_timeout");
            return;
        }
    };
    if hello.cluster_id != cfg.cluster_id {
        warn!(%remote, cluster_id = hello.cluster_id, from = hello.from,
            "peer from another cluster refused");
        metrics.refused("wrong_cluster");
        return;
    }
    if hello.to != cfg.node_id {
        warn!(%remote, to = hello.to, from = hello.from, "handshake for another node refused");
        metrics.refused("wrong_node");
        return;
    }
    if let Some(cert) = &peer_cert {
        if !names_node(cert, hello.from) {
            warn!(%remote, from = hello.from, expected = %peer_name(hello.from),
                "peer's TLS certificate does not name the node it claims to be; refused");
            metrics.tls_refused("identity");
            return;
        }
    }
    // Only map updates happen under this lock; poisoning cannot leave it
    // half-updated.
    let kick = known
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .get(&hello.from)
        .cloned();
    match kick {
        // The peer is up: if our connection to it is backing off, retry now.
        Some(kick) => kick.notify_one(),
        None if cfg.accept_unknown_peers => {
            debug!(%remote, from = hello.from, "handshake from a node without an address here");
        }
        None => {
            warn!(%remote, from = hello.from, "handshake from unknown node refused");
            metrics.refused("unknown_peer");
            return;
        }
    }
    debug!(%remote, from = hello.from, "peer connected");
    let mut messages = 0u64;
    loop {
        let frame = read_frame(&mut stream, max, &mut buf).await;
        if buf.capacity() > READ_BUFFER_KEEP_BYTES {
            buf = Vec::new();
        }
        match frame {
            Ok(WireFrame::Message(m)) => {
                if m.from != hello.from || m.to != cfg.node_id {
                    warn!(%remote, from = m.from, to = m.to, peer = hello.from,
                        "message not from the handshaken peer; closing");
                    metrics.refused("misaddressed");
                    return;
                }
                messages += 1;
                match inbound.try_send(m) {
                    Ok(()) => {
                        metrics.messages_received.inc();
                    }
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        metrics.messages_received_dropped.inc();
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => return,
                };
            }
            Ok(WireFrame::Hello(_)) => {
                warn!(%remote, peer = hello.from, "second handshake; closing");
                metrics.refused("duplicate_handshake");
                return;
            }
            Ok(first @ (WireFrame::SnapshotChunk(_) | WireFrame::SnapshotEnd(_))) => {
                if messages > 0 {
                    warn!(%remote, peer = hello.from, "snapshot frame on a message connection; closing");
                    metrics.refused("bad_frame");
                    return;
                }
                return serve_snapshot(stream, remote, hello.from, first, cfg, queues, metrics)
                    .await;
            }
            Err(FrameError::Io(e)) if e.kind() == io::ErrorKind::UnexpectedEof => {
                debug!(%remote, peer = hello.from, "peer closed the connection");
                return;
            }
            Err(e) => {
                warn!(%remote, peer = hello.from, error = %e, "bad frame; closing connection");
                metrics.refused("bad_frame");
                return;
            }
        }
    }
}

/// Where inbound connections deliver: messages to the driver's inbound
/// queue, snapshot streams to the driver's snapshot queue.
#[derive(Clone)]
struct InboundQueues {
    messages: mpsc::Sender<Message>,
    snapshots: mpsc::Sender<IncomingSnapshot>,
}

/// Reads one snapshot stream (the rest of an inbound connection whose
/// first frame after the Hello was `first`) into a new stream for the
/// driver. Refused (closed) if the driver has too many waiting.
async fn serve_snapshot<S: AsyncRead + Unpin>(
    mut stream: BufReader<S>,
    remote: SocketAddr,
    from: NodeId,
    first: WireFrame,
    cfg: &TcpConfig,
    queues: &InboundQueues,
    metrics: &Metrics,
) {
    let (tx, rx) = mpsc::channel(SNAPSHOT_FRAMES_QUEUED_MAX);
    if queues
        .snapshots
        .try_send(IncomingSnapshot { from, frames: rx })
        .is_err()
    {
        debug!(%remote, peer = from, "snapshot stream refused: the driver has enough waiting");
        return;
    }
    let max = cfg.max_frame_bytes;
    let mut buf = Vec::new();
    let mut next = Some(first);
    loop {
        let frame = match next.take() {
            Some(f) => f,
            None => match read_frame(&mut stream, max, &mut buf).await {
                Ok(f) => f,
                Err(e) => {
                    debug!(%remote, peer = from, error = %e, "snapshot stream broke off");
                    return; // dropping `tx` tells the receiver
                }
            },
        };
        let (frame, last) = match frame {
            WireFrame::SnapshotChunk(c) => (SnapshotFrame::Chunk(c), false),
            WireFrame::SnapshotEnd(m) => {
                if m.from != from || m.to != cfg.node_id {
                    warn!(%remote, peer = from, "snapshot stream ended with a misaddressed message; closing");
                    metrics.refused("misaddressed");
                    return;
                }
                (SnapshotFrame::End(m), true)
            }
            WireFrame::Hello(_) | WireFrame::Message(_) => {
                warn!(%remote, peer = from, "message frame on a snapshot connection; closing");
                metrics.refused("bad_frame");
                return;
            }
        };
        // Waits while the receiver writes: backpressure to the sender. A
        // receiver stuck past the write timeout ends the stream.
        match tokio::time::timeout(cfg.write_timeout * 4, tx.send(frame)).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return, // the receiver gave up
            Err(_) => {
                warn!(%remote, peer = from, "snapshot receiver stalled; closing the stream");
                return;
            }
        }
        if last {
            return;
        }
    }
}

/// Connects to `peer` at `addr` and writes the snapshot's frames.
async fn stream_snapshot(
    cfg: &TcpConfig,
    peer: NodeId,
    addr: &PeerAddr,
    frames: mpsc::Receiver<SnapshotFrame>,
    metrics: &Metrics,
) -> io::Result<()> {
    let stream = match tokio::time::timeout(cfg.connect_timeout, connect(addr)).await {
        Ok(s) => s?,
        Err(_) => return Err(io::Error::new(io::ErrorKind::TimedOut, "connect timed out")),
    };
    match &cfg.tls {
        None => write_snapshot(cfg, peer, stream, frames, metrics).await,
        Some(tls) => {
            let stream = connect_tls(tls, cfg, peer, stream).await?;
            write_snapshot(cfg, peer, stream, frames, metrics).await
        }
    }
}

async fn write_snapshot<S: AsyncWrite + Unpin>(
    cfg: &TcpConfig,
    peer: NodeId,
    mut stream: S,
    mut frames: mpsc::Receiver<SnapshotFrame>,
    metrics: &Metrics,
) -> io::Result<()> {
    let mut buf = Vec::with_capacity(64 << 10);
    let hello = WireFrame::Hello(Hello {
        cluster_id: cfg.cluster_id,
        from: cfg.node_id,
        to: peer,
    });
    encode_frame(&hello, cfg.max_frame_bytes, &mut buf).map_err(io::Error::other)?;
    write_timed(cfg, &mut stream, &buf).await?;
    loop {
        let (frame, last) = match frames.recv().await {
            Some(SnapshotFrame::Chunk(c)) => (WireFrame::SnapshotChunk(c), false),
            Some(SnapshotFrame::End(m)) => (WireFrame::SnapshotEnd(m), true),
            None => {
                return Err(io::Error::other(
                    "the snapshot's reader stopped before its end",
                ))
            }
        };
        buf.clear();
        encode_frame(&frame, cfg.max_frame_bytes, &mut buf).map_err(io::Error::other)?;
        write_timed(cfg, &mut stream, &buf).await?;
        if last {
            metrics
                .messages_sent
                .get_or_create(&PeerLabel::new(peer))
                .inc();
            return stream.shutdown().await;
        }
    }
}

/// Keeps one outbound connection to `peer` and writes its queue to it.
async fn peer_loop(
    cfg: Arc<TcpConfig>,
    peer: NodeId,
    mut rx: mpsc::Receiver<Message>,
    mut addr_rx: watch::Receiver<PeerAddr>,
    kick: Arc<Notify>,
    metrics: Metrics,
) {
    let backoff_max = cfg.reconnect_backoff_max.max(cfg.reconnect_backoff_min);
    let mut backoff = cfg.reconnect_backoff_min;
    // The last TLS failure logged at WARN: the same one again (every
    // reconnect, while a peer has the wrong certificate) goes to DEBUG.
    let mut tls_failure: Option<String> = None;
    loop {
        let addr = addr_rx.borrow_and_update().clone();
        // A host name is looked up again at every attempt (see `addr.rs`);
        // the lookup counts against the connect timeout.
        let connected = match tokio::time::timeout(cfg.connect_timeout, connect(&addr)).await {
            Ok(Ok(s)) => Some(s),
            Ok(Err(e)) => {
                debug!(%addr, error = %e, "connect failed");
                None
            }
            Err(_) => {
                debug!(%addr, "connect timed out");
                None
            }
        };
        if let Some(stream) = connected {
            let since = Instant::now();
            debug!(%addr, "connected to peer");
            // Small frames (heartbeats, acknowledgements): do not wait to
            // fill a segment.
            let _ = stream.set_nodelay(true);
            let ended = match &cfg.tls {
                None => Some(write_loop(&cfg, peer, stream, &mut rx, &mut addr_rx, &metrics).await),
                Some(tls) => match connect_tls(tls, &cfg, peer, stream).await {
                    Ok(stream) => {
                        tls_failure = None;
                        Some(write_loop(&cfg, peer, stream, &mut rx, &mut addr_rx, &metrics).await)
                    }
                    Err(e) => {
                        let reason = handshake_reason(&e);
                        metrics.tls_refused(reason);
                        let text = e.to_string();
                        if tls_failure.as_deref() != Some(text.as_str()) {
                            warn!(%addr, reason, error = %text, expected = %peer_name(peer),
                                "TLS handshake with the peer failed (its certificate is not from the cluster CA, or does not name it?); retrying with back-off");
                            tls_failure = Some(text);
                        } else {
                            debug!(%addr, reason, error = %text, "TLS handshake with the peer failed again");
                        }
                        None
                    }
                },
            };
            match ended {
                Some(Ok(End::QueueClosed)) => return, // the transport shut down
                Some(Ok(End::AddressChanged)) => {
                    backoff = cfg.reconnect_backoff_min;
                    continue; // connect to the new address now
                }
                Some(Err(e)) => debug!(%addr, error = %e, "peer connection lost"),
                None => {}
            }
            if since.elapsed() >= STABLE_CONNECTION {
                backoff = cfg.reconnect_backoff_min;
            }
        }
        // Back off, dropping what queues meanwhile: it would be stale. A new
        // address or a kick (fresh evidence that the peer is up) ends the
        // wait and resets the back-off.
        let sleep = tokio::time::sleep(backoff);
        tokio::pin!(sleep);
        let mut reset = false;
        loop {
            tokio::select! {
                _ = &mut sleep => break,
                m = rx.recv() => match m {
                    Some(_) => metrics.drop_for(peer),
                    None => return,
                },
                changed = addr_rx.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    reset = true;
                    break;
                }
                () = kick.notified() => {
                    debug!("peer is up; reconnecting now");
                    reset = true;
                    break;
                }
            }
        }
        backoff = if reset {
            cfg.reconnect_backoff_min
        } else {
            (backoff * 2).min(backoff_max)
        };
    }
}

/// Resolves `addr` and connects to the first of its addresses that
/// accepts; the error is the last failure.
async fn connect(addr: &PeerAddr) -> io::Result<TcpStream> {
    let mut last = None;
    for a in addr.resolve().await? {
        match TcpStream::connect(a).await {
            Ok(s) => return Ok(s),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no address")))
}

/// The TLS handshake of an outbound connection: the peer's certificate
/// must chain to the CA and name `peer` (see [`crate::tls`]).
async fn connect_tls(
    tls: &PeerTls,
    cfg: &TcpConfig,
    peer: NodeId,
    stream: TcpStream,
) -> io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let name = ServerName::try_from(peer_name(peer))
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    match tokio::time::timeout(cfg.handshake_timeout, tls.connector.connect(name, stream)).await {
        Ok(r) => r,
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "TLS handshake with the peer timed out",
        )),
    }
}

/// Why [`write_loop`] ended without an I/O error.
enum End {
    /// The queue closed: the transport shut down.
    QueueClosed,
    /// The peer's address changed: reconnect there.
    AddressChanged,
}

/// Writes batches to one connection until it fails (`Err`), the address
/// changes, or the queue closes.
async fn write_loop<S: AsyncWrite + Unpin>(
    cfg: &TcpConfig,
    peer: NodeId,
    mut stream: S,
    rx: &mut mpsc::Receiver<Message>,
    addr_rx: &mut watch::Receiver<PeerAddr>,
    metrics: &Metrics,
) -> io::Result<End> {
    let mut buf = Vec::with_capacity(64 << 10);
    let hello = WireFrame::Hello(Hello {
        cluster_id: cfg.cluster_id,
        from: cfg.node_id,
        to: peer,
    });
    encode_frame(&hello, cfg.max_frame_bytes, &mut buf).map_err(io::Error::other)?;
    write_timed(cfg, &mut stream, &buf).await?;
    let sent = metrics
        .messages_sent
        .get_or_create(&PeerLabel::new(peer))
        .clone();
    loop {
        let first = tokio::select! {
            m = rx.recv() => match m {
                Some(m) => m,
                None => return Ok(End::QueueClosed),
            },
            _ = addr_rx.changed() => return Ok(End::AddressChanged),
        };
        buf.clear();
        let mut count = 0u64;
        let mut next = Some(first);
        while let Some(m) = next.take() {
            match encode_frame(&WireFrame::Message(m), cfg.max_frame_bytes, &mut buf) {
                Ok(()) => count += 1,
                Err(e) => {
                    warn!(error = %e, "message not sendable; dropped");
                    metrics.drop_for(peer);
                }
            }
            if buf.len() < cfg.write_batch_bytes_max {
                next = rx.try_recv().ok();
            }
        }
        write_timed(cfg, &mut stream, &buf).await?;
        sent.inc_by(count);
        if buf.capacity() > 4 * cfg.write_batch_bytes_max.max(64 << 10) {
            buf = Vec::with_capacity(64 << 10);
        }
    }
}

/// Writes `buf` and flushes it (a TLS stream holds written bytes in its
/// record buffer until flushed; for TCP the flush is free).
async fn write_timed<S: AsyncWrite + Unpin>(
    cfg: &TcpConfig,
    stream: &mut S,
    buf: &[u8],
) -> io::Result<()> {
    let write = async {
        stream.write_all(buf).await?;
        stream.flush().await
    };
    match tokio::time::timeout(cfg.write_timeout, write).await {
        Ok(r) => r,
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "write to peer timed out",
        )),
    }
}
