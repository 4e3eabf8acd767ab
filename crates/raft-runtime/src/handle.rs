//! [`RaftHandle`]: the application's async interface to a running node.

use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use raft_core::{LogIndex, MembershipChange, NodeId, Role, StateMachine, Term};
use serde::Serialize;
use tokio::sync::{mpsc, oneshot, watch};

use crate::addr::PeerAddr;
use crate::error::*;
use crate::metrics::Metrics;

pub use raft_host::{NodeStatus, PeerProgress};

pub(crate) struct Proposal<R> {
    pub(crate) data: Bytes,
    pub(crate) reply: oneshot::Sender<Result<R, ProposeError>>,
    pub(crate) start: Instant,
}

pub(crate) struct ReadRequest {
    pub(crate) consistency: ReadConsistency,
    pub(crate) reply: oneshot::Sender<Result<(), ReadError>>,
}

pub(crate) enum AdminRequest {
    ChangeMembership(
        Vec<MembershipChange>,
        oneshot::Sender<Result<LogIndex, MembershipError>>,
    ),
    Transfer(NodeId, oneshot::Sender<Result<(), TransferError>>),
    Status(oneshot::Sender<NodeStatus>),
    SetPeerAddr(NodeId, Option<PeerAddr>, oneshot::Sender<()>),
    Shutdown(oneshot::Sender<()>),
}

/// This node's role, term and known leader, as last published by the
/// driver (see [`RaftHandle::leader_watch`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct LeaderInfo {
    pub role: Role,
    pub term: Term,
    /// The leader this node knows of in `term` (itself when leading).
    pub leader: Option<NodeId>,
}

impl LeaderInfo {
    /// True while this node leads.
    pub fn is_leader(&self) -> bool {
        self.role == Role::Leader
    }
}

/// State shared between the driver and every handle.
#[derive(Debug)]
pub(crate) struct Shared {
    /// Set when the node stopped on a fatal error (before `stopped`).
    pub(crate) fatal: Mutex<Option<String>>,
    /// Published by the driver on every change of role, term or leader.
    pub(crate) leader: watch::Sender<LeaderInfo>,
    /// Becomes true once the driver task has ended, however it ended.
    pub(crate) stopped: watch::Sender<bool>,
}

impl Shared {
    pub(crate) fn new(leader: LeaderInfo) -> Self {
        Shared {
            fatal: Mutex::new(None),
            leader: watch::Sender::new(leader),
            stopped: watch::Sender::new(false),
        }
    }

    pub(crate) fn fatal(&self) -> Option<String> {
        // Poisoning cannot corrupt an Option<String>; read through it.
        self.fatal.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// The application's handle to a running node: cheap to clone, `Send`.
///
/// Reads: [`read`](Self::read) returns once this node's state machine may
/// serve a read at the required consistency; the caller then reads the state
/// machine through [`state_machine`](Self::state_machine) (an
/// `Arc<RwLock<SM>>` the driver write-locks only while applying a batch of
/// entries) or uses [`read_with`](Self::read_with), which does both.
pub struct RaftHandle<SM: StateMachine> {
    pub(crate) id: NodeId,
    pub(crate) proposals: mpsc::Sender<Proposal<SM::Response>>,
    pub(crate) reads: mpsc::Sender<ReadRequest>,
    pub(crate) admin: mpsc::Sender<AdminRequest>,
    pub(crate) sm: Arc<RwLock<SM>>,
    pub(crate) metrics: Metrics,
    pub(crate) shared: Arc<Shared>,
    pub(crate) propose_timeout: Duration,
    pub(crate) read_timeout: Duration,
    pub(crate) admin_timeout: Duration,
}

impl<SM: StateMachine> Clone for RaftHandle<SM> {
    fn clone(&self) -> Self {
        RaftHandle {
            id: self.id,
            proposals: self.proposals.clone(),
            reads: self.reads.clone(),
            admin: self.admin.clone(),
            sm: self.sm.clone(),
            metrics: self.metrics.clone(),
            shared: self.shared.clone(),
            propose_timeout: self.propose_timeout,
            read_timeout: self.read_timeout,
            admin_timeout: self.admin_timeout,
        }
    }
}

impl<SM> RaftHandle<SM>
where
    SM: StateMachine + Send + Sync + 'static,
    SM::Response: Send + 'static,
{
    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// The node's metrics (render with [`Metrics::render`]).
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The state machine the driver applies to. Take the read lock only
    /// briefly: the driver needs the write lock to apply entries.
    pub fn state_machine(&self) -> &Arc<RwLock<SM>> {
        &self.sm
    }

    /// Why the node stopped, if it stopped on a fatal error.
    pub fn fatal_error(&self) -> Option<String> {
        self.shared.fatal()
    }

    /// True once the driver task has ended (shut down or fatal).
    pub fn is_stopped(&self) -> bool {
        *self.shared.stopped.borrow() || self.admin.is_closed()
    }

    /// Resolves once the driver task has ended, however it ended (graceful
    /// shutdown, fatal error, or a panic); at once if it already had.
    /// Returns the fatal error's reason, or `None` after a graceful
    /// shutdown. Cheap: no polling, any number of waiters.
    pub async fn stopped(&self) -> Option<String> {
        let mut rx = self.shared.stopped.subscribe();
        // The sender lives in `shared`, which this handle keeps alive, so
        // `wait_for` cannot fail; treat a failure as stopped anyway.
        let _ = rx.wait_for(|s| *s).await;
        self.shared.fatal()
    }

    /// A receiver of this node's role, term and known leader, updated by the
    /// driver whenever one of them changes (no round trip to the driver).
    /// After the driver stops it shows no leader.
    pub fn leader_watch(&self) -> watch::Receiver<LeaderInfo> {
        self.shared.leader.subscribe()
    }

    /// This node's role, term and known leader right now (see
    /// [`leader_watch`](Self::leader_watch)).
    pub fn leader_info(&self) -> LeaderInfo {
        *self.shared.leader.borrow()
    }

    /// The leader this node currently knows of, if any (itself when it
    /// leads). A hint, as always in Raft: it may have been deposed already.
    pub fn current_leader(&self) -> Option<NodeId> {
        self.shared.leader.borrow().leader
    }

    /// Proposes `command` and waits until it is applied; returns the state
    /// machine's response. Many concurrent proposals are batched into one
    /// append. Fails fast with `Backpressure` when the queue is full.
    pub async fn propose(&self, command: Bytes) -> Result<SM::Response, ProposeError> {
        let (tx, rx) = oneshot::channel();
        let p = Proposal {
            data: command,
            reply: tx,
            start: Instant::now(),
        };
        match self.proposals.try_send(p) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => return Err(ProposeError::Backpressure),
            Err(mpsc::error::TrySendError::Closed(_)) => {
                return Err(self.gone_err(ProposeError::Fatal, ProposeError::ShuttingDown))
            }
        }
        match tokio::time::timeout(self.propose_timeout, rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(self.gone_err(ProposeError::Fatal, ProposeError::ShuttingDown)),
            Err(_) => Err(ProposeError::Timeout),
        }
    }

    /// Waits until this node's state machine may serve a read with the given
    /// consistency. After `Ok`, read the state machine.
    pub async fn read(&self, consistency: ReadConsistency) -> Result<(), ReadError> {
        if consistency == ReadConsistency::Stale {
            if self.is_stopped() {
                return Err(self.gone_err(ReadError::Fatal, ReadError::ShuttingDown));
            }
            return Ok(());
        }
        let (tx, rx) = oneshot::channel();
        let r = ReadRequest {
            consistency,
            reply: tx,
        };
        match self.reads.try_send(r) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => return Err(ReadError::Backpressure),
            Err(mpsc::error::TrySendError::Closed(_)) => {
                return Err(self.gone_err(ReadError::Fatal, ReadError::ShuttingDown))
            }
        }
        match tokio::time::timeout(self.read_timeout, rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(self.gone_err(ReadError::Fatal, ReadError::ShuttingDown)),
            Err(_) => Err(ReadError::Timeout),
        }
    }

    /// [`read`](Self::read), then runs `f` on the state machine under its
    /// read lock.
    pub async fn read_with<R>(
        &self,
        consistency: ReadConsistency,
        f: impl FnOnce(&SM) -> R,
    ) -> Result<R, ReadError> {
        self.read(consistency).await?;
        let guard = self.sm_read();
        Ok(f(&guard))
    }

    fn sm_read(&self) -> RwLockReadGuard<'_, SM> {
        // A poisoned lock means a reader panicked; readers cannot mutate the
        // state machine, so its state is intact.
        self.sm.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Proposes a membership change (joint consensus) and waits until the
    /// change is applied; returns the index of its log entry. Remember to
    /// tell every node a new member's address with
    /// [`set_peer_addr`](Self::set_peer_addr) first.
    pub async fn change_membership(
        &self,
        changes: Vec<MembershipChange>,
    ) -> Result<LogIndex, MembershipError> {
        let (tx, rx) = oneshot::channel();
        self.admin_send(AdminRequest::ChangeMembership(changes, tx))
            .await
            .map_err(|e| {
                self.node_err(
                    e,
                    MembershipError::Fatal,
                    MembershipError::ShuttingDown,
                    MembershipError::Timeout,
                )
            })?;
        match tokio::time::timeout(self.admin_timeout, rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(self.gone_err(MembershipError::Fatal, MembershipError::ShuttingDown)),
            Err(_) => Err(MembershipError::Timeout),
        }
    }

    /// Hands leadership to `to` and waits until this node sees `to` lead.
    pub async fn transfer_leadership(&self, to: NodeId) -> Result<(), TransferError> {
        let deadline = Instant::now() + self.admin_timeout;
        let (tx, rx) = oneshot::channel();
        let conv = |e| {
            self.node_err(
                e,
                TransferError::Fatal,
                TransferError::ShuttingDown,
                TransferError::Timeout,
            )
        };
        self.admin_send(AdminRequest::Transfer(to, tx))
            .await
            .map_err(conv)?;
        match tokio::time::timeout(self.admin_timeout, rx).await {
            Ok(Ok(r)) => r?,
            Ok(Err(_)) => {
                return Err(self.gone_err(TransferError::Fatal, TransferError::ShuttingDown))
            }
            Err(_) => return Err(TransferError::Timeout),
        }
        // Wait for the leader watch to show `to` (no polling), or the node
        // to stop, or the deadline.
        let mut watch = self.leader_watch();
        let deadline = tokio::time::Instant::from_std(deadline);
        tokio::select! {
            seen = tokio::time::timeout_at(deadline, watch.wait_for(|l| l.leader == Some(to))) => {
                match seen {
                    Ok(Ok(_)) => Ok(()),
                    // The sender lives in `shared`, which we hold.
                    Ok(Err(_)) | Err(_) => Err(TransferError::Timeout),
                }
            }
            _ = self.stopped() => {
                Err(self.gone_err(TransferError::Fatal, TransferError::ShuttingDown))
            }
        }
    }

    /// The node's current status.
    pub async fn status(&self) -> Result<NodeStatus, NodeError> {
        let (tx, rx) = oneshot::channel();
        self.admin_send(AdminRequest::Status(tx)).await?;
        self.admin_wait(rx).await
    }

    /// Sets or forgets a peer's network address (for membership changes).
    /// Setting an address, even the one already known, also makes the TCP
    /// transport reconnect to that peer at once if it is backing off.
    pub async fn set_peer_addr(&self, id: NodeId, addr: Option<PeerAddr>) -> Result<(), NodeError> {
        let (tx, rx) = oneshot::channel();
        self.admin_send(AdminRequest::SetPeerAddr(id, addr, tx))
            .await?;
        self.admin_wait(rx).await
    }

    /// Stops the node gracefully: pending requests fail with
    /// `ShuttingDown`, queued writes are finished, connections are closed.
    /// Returns once the driver has stopped and the transport has closed
    /// (its listening port is free again), at once if it already had.
    pub async fn shutdown(&self) -> Result<(), NodeError> {
        let (tx, rx) = oneshot::channel();
        match self.admin_send(AdminRequest::Shutdown(tx)).await {
            Ok(()) => {}
            Err(NodeError::ShuttingDown) => return Ok(()),
            Err(e) => return Err(e),
        }
        match tokio::time::timeout(self.admin_timeout, rx).await {
            Ok(_) => match self.shared.fatal() {
                Some(f) => Err(NodeError::Fatal(f)),
                None => Ok(()),
            },
            Err(_) => Err(NodeError::Timeout),
        }
    }

    async fn admin_send(&self, req: AdminRequest) -> Result<(), NodeError> {
        match tokio::time::timeout(self.admin_timeout, self.admin.send(req)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(self.gone_err(NodeError::Fatal, NodeError::ShuttingDown)),
            Err(_) => Err(NodeError::Timeout),
        }
    }

    async fn admin_wait<R>(&self, rx: oneshot::Receiver<R>) -> Result<R, NodeError> {
        match tokio::time::timeout(self.admin_timeout, rx).await {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(_)) => Err(self.gone_err(NodeError::Fatal, NodeError::ShuttingDown)),
            Err(_) => Err(NodeError::Timeout),
        }
    }

    /// The error for "the driver is gone": fatal if it died, else shutting down.
    fn gone_err<E>(&self, fatal: impl FnOnce(String) -> E, down: E) -> E {
        match self.shared.fatal() {
            Some(reason) => fatal(reason),
            None => down,
        }
    }

    fn node_err<E>(&self, e: NodeError, fatal: impl FnOnce(String) -> E, down: E, timeout: E) -> E {
        match e {
            NodeError::Fatal(r) => fatal(r),
            NodeError::ShuttingDown => down,
            NodeError::Timeout => timeout,
        }
    }
}
