//! An in-process transport: nodes exchange messages through bounded tokio
//! channels, with links that can be cut. For tests and for experimenting
//! without sockets; the TCP transport is in [`crate::tcp`].

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};

use raft_core::{Message, NodeId};
use tokio::sync::mpsc;

use crate::metrics::{Metrics, PeerLabel};
use crate::transport::{
    inbound_channel, Inbound, IncomingSnapshot, SnapshotFrame, Transport,
    INCOMING_SNAPSHOTS_QUEUED_MAX,
};

#[derive(Default)]
struct Inner {
    nodes: BTreeMap<NodeId, mpsc::Sender<Message>>,
    snapshots: BTreeMap<NodeId, mpsc::Sender<IncomingSnapshot>>,
    /// Directed links that drop everything.
    cut: BTreeSet<(NodeId, NodeId)>,
}

/// The shared "wire" between in-process nodes.
#[derive(Clone, Default)]
pub struct LocalNetwork {
    inner: Arc<Mutex<Inner>>,
}

impl LocalNetwork {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Only plain map updates happen under the lock.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers node `id` (replacing an earlier registration, as after a
    /// restart) and returns its transport and inbound queue.
    pub fn join(&self, id: NodeId, capacity: usize, metrics: Metrics) -> (LocalTransport, Inbound) {
        let (tx, rx) = inbound_channel(capacity);
        let (snap_tx, snap_rx) = mpsc::channel(INCOMING_SNAPSHOTS_QUEUED_MAX);
        {
            let mut g = self.lock();
            g.nodes.insert(id, tx);
            g.snapshots.insert(id, snap_tx);
        }
        (
            LocalTransport {
                id,
                incoming_snapshots: Some(snap_rx),
                net: self.clone(),
                metrics,
                sent: std::collections::BTreeMap::new(),
            },
            rx,
        )
    }

    /// Cuts both directions between `a` and `b`.
    pub fn cut(&self, a: NodeId, b: NodeId) {
        let mut g = self.lock();
        g.cut.insert((a, b));
        g.cut.insert((b, a));
    }

    /// Cuts `id` off from every registered node.
    pub fn isolate(&self, id: NodeId) {
        let others: Vec<NodeId> = self.lock().nodes.keys().copied().collect();
        for o in others.into_iter().filter(|&o| o != id) {
            self.cut(id, o);
        }
    }

    /// Restores every link.
    pub fn heal(&self) {
        self.lock().cut.clear();
    }
}

/// One node's end of a [`LocalNetwork`].
pub struct LocalTransport {
    id: NodeId,
    incoming_snapshots: Option<mpsc::Receiver<IncomingSnapshot>>,
    net: LocalNetwork,
    metrics: Metrics,
    /// Each peer's `messages_sent` counter, looked up once (a lookup
    /// formats the label and takes the family's lock: per message, that
    /// showed in the in-process benchmark's profile).
    sent: std::collections::BTreeMap<NodeId, prometheus_client::metrics::counter::Counter>,
}

impl Transport for LocalTransport {
    fn send(&mut self, msg: Message) {
        let to = msg.to;
        let target = {
            let g = self.net.lock();
            if g.cut.contains(&(self.id, to)) {
                None
            } else {
                g.nodes.get(&to).cloned()
            }
        };
        let sent = match target {
            Some(t) => t.try_send(msg).is_ok(),
            None => false,
        };
        match sent {
            true => {
                let metrics = &self.metrics;
                self.sent
                    .entry(to)
                    .or_insert_with(|| {
                        metrics
                            .messages_sent
                            .get_or_create(&PeerLabel::new(to))
                            .clone()
                    })
                    .inc();
            }
            false => self.metrics.drop_for(to),
        }
    }

    fn shutdown(&mut self) {
        let mut g = self.net.lock();
        // Only unregister our own registration: a restarted node with the
        // same id may already have replaced it.
        if g.nodes.get(&self.id).is_some_and(|s| s.is_closed()) {
            g.nodes.remove(&self.id);
        }
        if g.snapshots.get(&self.id).is_some_and(|s| s.is_closed()) {
            g.snapshots.remove(&self.id);
        }
    }

    /// Hands the frames' receiver itself to the peer (a cut link refuses
    /// the stream; a cut made during a stream does not stop it).
    fn send_snapshot(&mut self, to: NodeId, frames: mpsc::Receiver<SnapshotFrame>) {
        let target = {
            let g = self.net.lock();
            if g.cut.contains(&(self.id, to)) {
                None
            } else {
                g.snapshots.get(&to).cloned()
            }
        };
        if let Some(t) = target {
            let _ = t.try_send(IncomingSnapshot {
                from: self.id,
                frames,
            });
        }
    }

    fn take_incoming_snapshots(&mut self) -> Option<mpsc::Receiver<IncomingSnapshot>> {
        self.incoming_snapshots.take()
    }

    fn streams_snapshots(&self) -> bool {
        true
    }
}
