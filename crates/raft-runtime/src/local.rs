//! An in-process transport: nodes exchange messages through bounded tokio
//! channels, with links that can be cut. For tests and for experimenting
//! without sockets; the TCP transport is in [`crate::tcp`].

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
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
    /// Bumped (under the lock) by every change of `Inner`: transports keep
    /// the routes they looked up until it moves, instead of taking the lock
    /// and cloning a sender per message.
    version: Arc<AtomicU64>,
}

impl LocalNetwork {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Only plain map updates happen under the lock.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes the lock to change the wiring; every transport's cached routes
    /// are stale from here on.
    fn lock_for_change(&self) -> MutexGuard<'_, Inner> {
        let g = self.lock();
        self.version.fetch_add(1, Ordering::Release);
        g
    }

    /// Registers node `id` (replacing an earlier registration, as after a
    /// restart) and returns its transport and inbound queue.
    pub fn join(&self, id: NodeId, capacity: usize, metrics: Metrics) -> (LocalTransport, Inbound) {
        let (tx, rx) = inbound_channel(capacity);
        let (snap_tx, snap_rx) = mpsc::channel(INCOMING_SNAPSHOTS_QUEUED_MAX);
        {
            let mut g = self.lock_for_change();
            g.nodes.insert(id, tx);
            g.snapshots.insert(id, snap_tx);
        }
        (
            LocalTransport {
                id,
                incoming_snapshots: Some(snap_rx),
                net: self.clone(),
                metrics,
                routes: BTreeMap::new(),
                routes_version: None,
            },
            rx,
        )
    }

    /// Cuts both directions between `a` and `b`.
    pub fn cut(&self, a: NodeId, b: NodeId) {
        let mut g = self.lock_for_change();
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
        self.lock_for_change().cut.clear();
    }
}

/// Where messages to one peer go, as last looked up.
struct Route {
    /// `None` while the peer is unknown or the link is cut.
    sender: Option<mpsc::Sender<Message>>,
    /// The peer's `messages_sent` counter (a lookup formats the label and
    /// takes the family's lock: per message, that showed in the in-process
    /// benchmark's profile).
    sent: prometheus_client::metrics::counter::Counter,
}

/// One node's end of a [`LocalNetwork`].
pub struct LocalTransport {
    id: NodeId,
    incoming_snapshots: Option<mpsc::Receiver<IncomingSnapshot>>,
    net: LocalNetwork,
    metrics: Metrics,
    /// Routes looked up at `routes_version` of the network.
    routes: BTreeMap<NodeId, Route>,
    routes_version: Option<u64>,
}

impl LocalTransport {
    fn route(&mut self, to: NodeId) -> &Route {
        let version = self.net.version.load(Ordering::Acquire);
        if self.routes_version != Some(version) {
            // The wiring changed (a node joined or left, a link was cut or
            // healed): look everything up again.
            self.routes.clear();
            self.routes_version = Some(version);
        }
        let (id, net, metrics) = (self.id, &self.net, &self.metrics);
        self.routes.entry(to).or_insert_with(|| {
            let g = net.lock();
            let sender = if g.cut.contains(&(id, to)) {
                None
            } else {
                g.nodes.get(&to).cloned()
            };
            Route {
                sender,
                sent: metrics
                    .messages_sent
                    .get_or_create(&PeerLabel::new(to))
                    .clone(),
            }
        })
    }
}

impl Transport for LocalTransport {
    fn send(&mut self, msg: Message) {
        let to = msg.to;
        let route = self.route(to);
        let sent = match &route.sender {
            Some(t) => t.try_send(msg).is_ok(),
            None => false,
        };
        if sent {
            route.sent.inc();
        } else {
            self.metrics.drop_for(to);
        }
    }

    fn shutdown(&mut self) {
        self.routes.clear();
        let mut g = self.net.lock_for_change();
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
