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
