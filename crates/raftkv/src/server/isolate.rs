//! Cutting this node off its peers on request: the dashboard's "isolate"
//! button (`POST /v1/dev/control`, only with `--dashboard-controls`).
//!
//! A real partition needs the OS (network namespaces, firewall rules: what
//! raftkv-chaos does as root). A local cluster on 127.0.0.1 has neither, so
//! the node cuts itself off where Raft messages enter and leave it: between
//! the driver and the TCP transport. While cut, every message the driver
//! sends is dropped before the transport sees it, and every message the
//! transport receives is dropped before the driver sees it. TCP
//! connections stay up (peers see no error, their messages just go
//! nowhere, as with a link that drops packets), and the HTTP API still
//! answers, so a reader watches an isolated leader keep claiming to lead
//! until it learns otherwise, as in raftkv-chaos's isolation.
//!
//! Without `--dashboard-controls` none of this is in the path: the driver
//! talks to the TCP transport directly (no extra task or queue hop per
//! inbound message).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use raft_core::{Message, NodeId};
use raft_runtime::{
    inbound_channel, Inbound, IncomingSnapshot, PeerAddr, SnapshotFrame, Transport,
    INCOMING_SNAPSHOTS_QUEUED_MAX,
};
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;

/// Whether this node is cut off, and what that dropped. Cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct Isolation {
    inner: Arc<IsolationInner>,
}

#[derive(Debug, Default)]
struct IsolationInner {
    cut: AtomicBool,
    dropped_out: AtomicU64,
    dropped_in: AtomicU64,
}

impl Isolation {
    pub fn new() -> Isolation {
        Isolation::default()
    }

    /// Cuts the node off its peers (`true`) or reconnects it (`false`).
    pub fn set(&self, cut: bool) {
        self.inner.cut.store(cut, Ordering::Relaxed);
    }

    pub fn is_cut(&self) -> bool {
        self.inner.cut.load(Ordering::Relaxed)
    }

    /// Messages dropped so far: (outgoing, incoming).
    pub fn dropped(&self) -> (u64, u64) {
        (
            self.inner.dropped_out.load(Ordering::Relaxed),
            self.inner.dropped_in.load(Ordering::Relaxed),
        )
    }

    /// Puts the switch between the driver and `transport`/`inbound`.
    /// `inbound_capacity` bounds the new queue into the driver (use the
    /// transport's own inbound bound; a full queue drops, as the transport
    /// does). Must be called inside a tokio runtime (it spawns the inbound
    /// filter, which ends when the transport closes its queue).
    pub fn wrap<T: Transport>(
        &self,
        transport: T,
        mut inbound: Inbound,
        inbound_capacity: usize,
    ) -> (IsolatingTransport<T>, Inbound) {
        let (tx, rx) = inbound_channel(inbound_capacity);
        let me = self.clone();
        tokio::spawn(async move {
            while let Some(msg) = inbound.recv().await {
                if me.is_cut() {
                    me.inner.dropped_in.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                match tx.try_send(msg) {
                    Ok(()) => {}
                    // The driver lags: drop, as the transport would.
                    Err(TrySendError::Full(_)) => {}
                    Err(TrySendError::Closed(_)) => return,
                }
            }
        });
        (
            IsolatingTransport {
                inner: transport,
                isolation: self.clone(),
            },
            rx,
        )
    }
}

/// A transport that drops every outgoing message while its node is cut off.
pub struct IsolatingTransport<T> {
    inner: T,
    isolation: Isolation,
}

impl<T: Transport> Transport for IsolatingTransport<T> {
    fn send(&mut self, msg: Message) {
        if self.isolation.is_cut() {
            self.isolation
                .inner
                .dropped_out
                .fetch_add(1, Ordering::Relaxed);
            return;
        }
        self.inner.send(msg);
    }

    fn set_peer_addr(&mut self, id: NodeId, addr: Option<PeerAddr>) {
        self.inner.set_peer_addr(id, addr);
    }

    fn shutdown(&mut self) {
        self.inner.shutdown();
    }

    fn closed(&mut self) -> impl std::future::Future<Output = ()> + Send + '_ {
        self.inner.closed()
    }

    /// A cut-off node streams no snapshot (the frames are dropped, the
    /// producer stops), and takes none (a stream arriving while it is cut
    /// off is dropped whole; one already running finishes).
    fn send_snapshot(&mut self, to: NodeId, frames: mpsc::Receiver<SnapshotFrame>) {
        if !self.isolation.is_cut() {
            self.inner.send_snapshot(to, frames);
        }
    }

    fn take_incoming_snapshots(&mut self) -> Option<mpsc::Receiver<IncomingSnapshot>> {
        let mut inner = self.inner.take_incoming_snapshots()?;
        let (tx, rx) = mpsc::channel(INCOMING_SNAPSHOTS_QUEUED_MAX);
        let me = self.isolation.clone();
        tokio::spawn(async move {
            while let Some(stream) = inner.recv().await {
                if me.is_cut() {
                    continue;
                }
                if let Err(TrySendError::Closed(_)) = tx.try_send(stream) {
                    return;
                }
            }
        });
        Some(rx)
    }

    fn streams_snapshots(&self) -> bool {
        self.inner.streams_snapshots()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use raft_core::MessageBody;

    /// A transport that records what reaches it.
    struct Recorder(Arc<std::sync::Mutex<Vec<Message>>>);

    impl Transport for Recorder {
        fn send(&mut self, msg: Message) {
            self.0.lock().unwrap().push(msg);
        }
    }

    fn msg(from: NodeId, to: NodeId) -> Message {
        Message {
            from,
            to,
            term: 1,
            body: MessageBody::TimeoutNow,
        }
    }

    #[tokio::test]
    async fn a_cut_node_neither_sends_nor_receives() {
        let sent = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (peer_tx, inbound) = inbound_channel(8);
        let iso = Isolation::new();
        let (mut t, mut rx) = iso.wrap(Recorder(sent.clone()), inbound, 8);

        t.send(msg(1, 2));
        peer_tx.send(msg(2, 1)).await.unwrap();
        assert_eq!(rx.recv().await.map(|m| m.from), Some(2));
        assert_eq!(sent.lock().unwrap().len(), 1);

        iso.set(true);
        t.send(msg(1, 2));
        peer_tx.send(msg(3, 1)).await.unwrap();
        // Healed after the inbound message was dropped: the next one passes.
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        iso.set(false);
        peer_tx.send(msg(2, 1)).await.unwrap();
        assert_eq!(rx.recv().await.map(|m| m.from), Some(2));
        assert_eq!(sent.lock().unwrap().len(), 1, "nothing sent while cut");
        assert_eq!(iso.dropped(), (1, 1));

        // The filter ends with the transport's queue, closing the driver's.
        drop(peer_tx);
        assert!(rx.recv().await.is_none());
    }
}
