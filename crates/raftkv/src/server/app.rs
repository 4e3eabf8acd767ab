//! The state every request handler shares, and the two paths every
//! key-value request takes: [`App::write_kv`] (propose through the log, or
//! forward to the leader) and [`App::read_kv`] (wait for a read point, or
//! forward to the leader).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use axum::response::Response as HttpResponse;
use bytes::Bytes;
use prometheus_client::registry::Registry;
use raft_core::NodeId;
use raft_runtime::{PeerAddr, ProposeError, RaftHandle, ReadConsistency, ReadError};
use raftkv_state::{Command, KvConfig, Response};

use super::config::ServerConfig;
use super::error::{ApiError, Reason};
use super::extract::RequestInfo;
use super::forward;
use super::isolate::Isolation;
use super::metrics::HttpMetrics;
use super::state::{KvRead, ServerCommand, ServerResponse, ServerState};

/// Shared by every handler (behind an `Arc`).
pub struct App {
    pub cfg: ServerConfig,
    pub raft: RaftHandle<ServerState>,
    /// The key-value limits every replica applies (from the flags).
    pub kv_config: KvConfig,
    /// Client used to forward requests to the leader.
    pub http: reqwest::Client,
    pub metrics: HttpMetrics,
    /// The runtime's and the HTTP metrics, rendered by `/metrics`.
    pub registry: Registry,
    /// Makes the ids of requests that arrive without an `x-request-id`.
    pub request_ids: RequestIds,
    /// The dashboard's "isolate" switch (in the message path only with
    /// `--dashboard-controls`).
    pub isolation: Isolation,
}

/// Request ids for requests that arrive without one:
/// `<node id>-<start time, hex microseconds>-<counter>`, unique across the
/// cluster's nodes and across restarts of this one.
pub struct RequestIds {
    prefix: String,
    next: AtomicU64,
}

impl RequestIds {
    pub fn new(node: NodeId) -> RequestIds {
        let started = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_micros())
            .unwrap_or(0);
        RequestIds {
            prefix: format!("{node}-{started:x}-"),
            next: AtomicU64::new(1),
        }
    }

    /// The next id.
    pub fn next(&self) -> String {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        format!("{}{n}", self.prefix)
    }
}

/// The handlers' state type.
pub type SharedApp = Arc<App>;

/// Either this node answered, or the leader did (and its response is
/// relayed as is).
pub enum Outcome<T> {
    Local(T),
    Forwarded(HttpResponse),
}

impl App {
    /// True while this node leads (the runtime's leader watch: no round
    /// trip).
    pub fn is_leader(&self) -> bool {
        self.raft.leader_info().is_leader()
    }

    /// Where member `id` serves clients: the replicated address book, else
    /// the founding `--clients` list.
    pub fn client_addr(&self, id: NodeId) -> Option<PeerAddr> {
        let sm = self
            .raft
            .state_machine()
            .read()
            // Readers cannot leave the state half-updated; see the runtime.
            .unwrap_or_else(|e| e.into_inner());
        sm.members()
            .get(&id)
            .map(|a| a.client_addr.clone())
            .or_else(|| self.cfg.clients.get(&id).cloned())
    }

    /// Proposes a server command and waits until it is applied here.
    pub async fn propose(&self, cmd: &ServerCommand) -> Result<ServerResponse, ProposeError> {
        self.raft.propose(cmd.encode()).await
    }

    /// Checks `cmd` against the limits, proposes it and returns the store's
    /// answer; on a follower, forwards the original request to the leader.
    ///
    /// Forwarding happens only on `NotLeader`, which the runtime returns
    /// before appending anything, so a forwarded write can never also be
    /// applied through this node.
    pub async fn write_kv(
        &self,
        info: &RequestInfo,
        body: &Bytes,
        cmd: Command,
    ) -> Result<Outcome<Response>, ApiError> {
        cmd.check(&self.kv_config)?;
        match self.propose(&ServerCommand::Kv(cmd)).await {
            Ok(ServerResponse::Kv(Response::Rejected(e))) => Err(e.into()),
            Ok(ServerResponse::Kv(r)) => Ok(Outcome::Local(r)),
            Ok(other) => Err(unexpected(&other)),
            Err(ProposeError::NotLeader { leader_hint }) => {
                forward::to_leader(self, info, body, leader_hint)
                    .await
                    .map(Outcome::Forwarded)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Runs `f` on the store once a read at `consistency` is allowed here.
    ///
    /// - `stale`: at once, on whatever this node has applied.
    /// - `linearizable` (default) and `lease`: on the leader only; a
    ///   follower forwards the request to the leader (the contract keeps
    ///   every linearizable answer on the leader, so a client sees one
    ///   behaviour whichever node it asks).
    pub async fn read_kv<R>(
        &self,
        info: &RequestInfo,
        consistency: ReadConsistency,
        f: impl FnOnce(KvRead<'_>) -> R,
    ) -> Result<Outcome<R>, ApiError> {
        if consistency == ReadConsistency::Stale {
            let r = self.raft.read_with(consistency, |s| f(s.kv())).await?;
            return Ok(Outcome::Local(r));
        }
        if !self.is_leader() {
            // Not leading: forward to the leader this node knows of (the
            // runtime's leader watch, no round trip to the driver).
            let leader = self.raft.current_leader();
            if leader != Some(self.cfg.id) {
                return forward::to_leader(self, info, &Bytes::new(), leader)
                    .await
                    .map(Outcome::Forwarded);
            }
        }
        match self.raft.read_with(consistency, |s| f(s.kv())).await {
            Ok(r) => Ok(Outcome::Local(r)),
            // Lost leadership between the check and the read.
            Err(ReadError::NotLeader { leader_hint }) => {
                forward::to_leader(self, info, &Bytes::new(), leader_hint)
                    .await
                    .map(Outcome::Forwarded)
            }
            Err(e) => Err(e.into()),
        }
    }
}

/// A response of the wrong kind for the command: a bug, reported as 500.
/// The command was applied (the state machine answered), so the request's
/// effect is unknown to the client.
pub fn unexpected(r: &ServerResponse) -> ApiError {
    ApiError::indeterminate(
        Reason::Internal,
        format!("unexpected state machine response: {r:?}"),
    )
}
