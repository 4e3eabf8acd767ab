//! Shared test helpers: a trivial state machine and cluster plumbing.
#![allow(dead_code)]

use std::time::{Duration, Instant};

use bytes::Bytes;
use raft_core::{Entry, EntryPayload, LogIndex, NodeId, StateMachine};
use raft_runtime::{RaftHandle, RuntimeConfig};

/// Append-only list of applied commands. `apply` returns the index.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ListSm {
    pub applied: LogIndex,
    pub items: Vec<Bytes>,
}

#[derive(Debug, thiserror::Error)]
#[error("list state machine: {0}")]
pub struct ListSmError(String);

impl StateMachine for ListSm {
    type Response = LogIndex;
    type Error = ListSmError;

    fn apply(&mut self, entry: &Entry) -> Result<LogIndex, ListSmError> {
        if entry.index != self.applied + 1 {
            return Err(ListSmError(format!(
                "applied {} then got {}",
                self.applied, entry.index
            )));
        }
        self.applied = entry.index;
        if let EntryPayload::Normal(d) = &entry.payload {
            self.items.push(d.clone());
        }
        Ok(entry.index)
    }

    fn applied_index(&self) -> LogIndex {
        self.applied
    }

    fn snapshot(&self) -> Result<Vec<u8>, ListSmError> {
        let items: Vec<Vec<u8>> = self.items.iter().map(|b| b.to_vec()).collect();
        postcard::to_allocvec(&(self.applied, items)).map_err(|e| ListSmError(e.to_string()))
    }

    fn restore(&mut self, data: &[u8]) -> Result<(), ListSmError> {
        let (applied, items): (LogIndex, Vec<Vec<u8>>) =
            postcard::from_bytes(data).map_err(|e| ListSmError(e.to_string()))?;
        self.applied = applied;
        self.items = items.into_iter().map(Bytes::from).collect();
        Ok(())
    }
}

/// Fast timing for tests: 10 ms ticks, elections after 100..200 ms.
pub fn test_config(id: NodeId) -> RuntimeConfig {
    let mut cfg = RuntimeConfig::new(id);
    cfg.tick_interval = Duration::from_millis(10);
    cfg.propose_timeout = Duration::from_secs(5);
    cfg.read_timeout = Duration::from_secs(5);
    cfg.admin_timeout = Duration::from_secs(5);
    cfg
}

pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_test_writer()
        .try_init();
}

/// Polls `f` until it returns `Some` or `timeout` passes.
pub async fn wait_for<T>(
    timeout: Duration,
    what: &str,
    mut f: impl AsyncFnMut() -> Option<T>,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The leader id if `handles` agree on one leader that also says it leads.
pub async fn agreed_leader(handles: &[&RaftHandle<ListSm>]) -> Option<NodeId> {
    for h in handles {
        let st = h.status().await.ok()?;
        if st.role == raft_core::Role::Leader {
            return Some(st.id);
        }
    }
    None
}

/// Proposes `data` at whichever node leads, retrying on NotLeader/Dropped.
pub async fn propose_anywhere(handles: &[&RaftHandle<ListSm>], data: Bytes) -> LogIndex {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        for h in handles {
            match h.propose(data.clone()).await {
                Ok(i) => return i,
                Err(_) => continue,
            }
        }
        assert!(Instant::now() < deadline, "no node accepted the proposal");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub fn items(h: &RaftHandle<ListSm>) -> Vec<Bytes> {
    h.state_machine().read().unwrap().items.clone()
}

pub fn applied(h: &RaftHandle<ListSm>) -> LogIndex {
    h.state_machine().read().unwrap().applied
}

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use raft_runtime::{MemStore, Metrics, RaftStorage, TcpConfig, TcpTransport, Transport};

pub const CLUSTER_ID: u64 = 0xC1A5_7E12;

/// One node of a loopback TCP cluster; storage survives restarts.
pub struct TcpNode<St> {
    pub id: NodeId,
    pub addr: SocketAddr,
    pub store: Arc<St>,
    pub metrics: Metrics,
    pub handle: Option<RaftHandle<ListSm>>,
}

/// An in-process cluster over real loopback TCP.
pub struct TcpCluster<St> {
    pub nodes: BTreeMap<NodeId, TcpNode<St>>,
    pub make_config: fn(NodeId) -> RuntimeConfig,
}

fn tcp_config(id: NodeId, addr: SocketAddr) -> TcpConfig {
    let mut c = TcpConfig::new(CLUSTER_ID, id, addr);
    c.reconnect_backoff_max = Duration::from_millis(200);
    c
}

impl<St: RaftStorage> TcpCluster<St> {
    /// Starts nodes `1..=stores.len()` on 127.0.0.1 port 0.
    pub async fn start(stores: Vec<Arc<St>>, make_config: fn(NodeId) -> RuntimeConfig) -> Self {
        let mut transports = Vec::new();
        for (i, store) in stores.into_iter().enumerate() {
            let id = i as NodeId + 1;
            let metrics = Metrics::new();
            let (t, inbound) = TcpTransport::start(
                tcp_config(id, "127.0.0.1:0".parse().unwrap()),
                metrics.clone(),
            )
            .await
            .unwrap();
            transports.push((id, store, metrics, t, inbound));
        }
        let addrs: BTreeMap<NodeId, SocketAddr> = transports
            .iter()
            .map(|(id, _, _, t, _)| (*id, t.local_addr()))
            .collect();
        let mut nodes = BTreeMap::new();
        for (id, store, metrics, mut t, inbound) in transports {
            for (&p, &a) in &addrs {
                t.set_peer_addr(p, Some(a.into()));
            }
            let handle = raft_runtime::start(
                make_config(id),
                store.clone(),
                ListSm::default(),
                t,
                inbound,
                metrics.clone(),
            )
            .unwrap();
            nodes.insert(
                id,
                TcpNode {
                    id,
                    addr: addrs[&id],
                    store,
                    metrics,
                    handle: Some(handle),
                },
            );
        }
        TcpCluster { nodes, make_config }
    }

    pub fn handle(&self, id: NodeId) -> &RaftHandle<ListSm> {
        self.nodes[&id].handle.as_ref().expect("node is running")
    }

    pub fn running(&self) -> Vec<&RaftHandle<ListSm>> {
        self.nodes
            .values()
            .filter_map(|n| n.handle.as_ref())
            .collect()
    }

    pub async fn leader(&self) -> NodeId {
        let running = self.running();
        wait_for(Duration::from_secs(10), "a leader", || {
            agreed_leader(&running)
        })
        .await
    }

    /// Graceful stop; storage is kept.
    pub async fn stop(&mut self, id: NodeId) {
        let n = self.nodes.get_mut(&id).unwrap();
        if let Some(h) = n.handle.take() {
            h.shutdown().await.unwrap();
        }
    }

    /// Replaces a stopped node's storage (e.g. reopened from its directory).
    pub fn replace_store(&mut self, id: NodeId, store: Arc<St>) {
        let n = self.nodes.get_mut(&id).unwrap();
        assert!(n.handle.is_none());
        n.store = store;
    }

    /// Restarts a stopped node from its storage, on the same port.
    pub async fn restart(&mut self, id: NodeId) {
        let addrs: BTreeMap<NodeId, SocketAddr> =
            self.nodes.values().map(|n| (n.id, n.addr)).collect();
        let n = self.nodes.get_mut(&id).unwrap();
        assert!(n.handle.is_none());
        n.metrics = Metrics::new();
        let (mut t, inbound) = TcpTransport::start(tcp_config(id, n.addr), n.metrics.clone())
            .await
            .unwrap();
        for (&p, &a) in &addrs {
            t.set_peer_addr(p, Some(a.into()));
        }
        let h = raft_runtime::start(
            (self.make_config)(id),
            n.store.clone(),
            ListSm::default(),
            t,
            inbound,
            n.metrics.clone(),
        )
        .unwrap();
        n.handle = Some(h);
    }

    pub async fn propose(&self, data: impl Into<Bytes>) -> LogIndex {
        propose_anywhere(&self.running(), data.into()).await
    }

    /// Waits until every running node applied at least `index`.
    pub async fn wait_applied(&self, index: LogIndex) {
        for h in self.running() {
            wait_for(Duration::from_secs(15), "catch-up", || async {
                (applied(h) >= index).then_some(())
            })
            .await;
        }
    }

    /// Asserts every running node applied the same commands.
    pub fn assert_same_items(&self) -> Vec<Bytes> {
        let running = self.running();
        let first = items(running[0]);
        for h in &running[1..] {
            assert_eq!(items(h), first, "node {} diverged", h.id());
        }
        first
    }

    pub async fn shutdown(mut self) {
        let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
        for id in ids {
            self.stop(id).await;
        }
    }
}

pub fn mem_stores(n: u64) -> Vec<Arc<MemStore>> {
    let m = raft_core::Membership::new_voters(1..=n);
    (1..=n)
        .map(|_| Arc::new(MemStore::new(m.clone())))
        .collect()
}
