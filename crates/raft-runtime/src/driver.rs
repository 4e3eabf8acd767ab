//! The driver task: owns the [`RawNode`], feeds it inputs, and handles its
//! Readies in the order the engine's contract requires. See the crate docs.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{mpsc as std_mpsc, Arc, RwLock, RwLockWriteGuard};
use std::time::Instant;

use bytes::Bytes;
use raft_core::{
    Entry, EntryPayload, HardState, LogIndex, LogStore, Membership, Message, RawNode, Ready, Role,
    Snapshot, SnapshotMeta, SoftState, StateMachine, StepError, Term,
};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, error, info, warn, Instrument};

use crate::config::RuntimeConfig;
use crate::error::*;
use crate::handle::*;
use crate::metrics::Metrics;
use crate::storage::{RaftStorage, WriteParts};
use crate::transport::{Inbound, Transport};

/// Most inbound peer messages stepped before the driver looks at its other
/// inputs and the Ready again: keeps one chatty peer from starving the loop.
const INBOUND_BATCH_MAX: usize = 256;
/// Most reads drained per loop iteration.
const READ_BATCH_MAX: usize = 1024;
/// Every this many ticks, forget waiters whose caller gave up (timed out).
const PRUNE_INTERVAL_TICKS: u64 = 10;

/// Work for the writer thread, in Ready order.
pub(crate) enum WriteOp {
    Write(WriteBatch),
    Compact(Snapshot),
}

pub(crate) struct WriteBatch {
    number: u64,
    snapshot: Option<Snapshot>,
    entries: Vec<Entry>,
    hard_state: Option<HardState>,
}

/// What the writer thread reports back.
pub(crate) enum WriterEvent {
    /// Every Ready up to `number` is durable.
    Persisted { number: u64 },
    /// The log is compacted up to `index`.
    Compacted { index: LogIndex },
    /// A storage call failed; the writer has stopped.
    Failed(String),
}

/// A Ready handed to the writer, waiting for durability.
struct InFlight {
    number: u64,
    snapshot: Option<Snapshot>,
    persisted_messages: Vec<Message>,
}

/// A caller waiting for an entry to be applied.
enum Waiter<R> {
    Proposal {
        term: Term,
        reply: oneshot::Sender<Result<R, ProposeError>>,
        start: Instant,
    },
    Membership {
        term: Term,
        reply: oneshot::Sender<Result<LogIndex, MembershipError>>,
    },
}

impl<R> Waiter<R> {
    fn is_closed(&self) -> bool {
        match self {
            Waiter::Proposal { reply, .. } => reply.is_closed(),
            Waiter::Membership { reply, .. } => reply.is_closed(),
        }
    }

    /// The entry at its index is not the one proposed.
    fn dropped(self, indeterminate: bool) {
        match self {
            Waiter::Proposal { reply, .. } => {
                let _ = reply.send(Err(if indeterminate {
                    ProposeError::Indeterminate
                } else {
                    ProposeError::Dropped
                }));
            }
            Waiter::Membership { reply, .. } => {
                let _ = reply.send(Err(if indeterminate {
                    MembershipError::Timeout
                } else {
                    MembershipError::Dropped
                }));
            }
        }
    }

    fn fail(self, fatal: Option<&str>) {
        match self {
            Waiter::Proposal { reply, .. } => {
                let _ = reply.send(Err(match fatal {
                    Some(f) => ProposeError::Fatal(f.to_string()),
                    None => ProposeError::ShuttingDown,
                }));
            }
            Waiter::Membership { reply, .. } => {
                let _ = reply.send(Err(match fatal {
                    Some(f) => MembershipError::Fatal(f.to_string()),
                    None => MembershipError::ShuttingDown,
                }));
            }
        }
    }
}

/// Why the loop ends.
enum Stop {
    Fatal(String),
    Shutdown(oneshot::Sender<()>),
}

impl From<StorageFailure> for Stop {
    fn from(e: StorageFailure) -> Self {
        Stop::Fatal(e.to_string())
    }
}

impl From<raft_core::StorageError> for Stop {
    fn from(e: raft_core::StorageError) -> Self {
        Stop::Fatal(format!("engine storage read failed: {e}"))
    }
}

/// One input, taken by the select in `run`.
enum Input<R> {
    Writer(WriterEvent),
    Tick,
    Peer(Message),
    Propose(Proposal<R>),
    Read(ReadRequest),
    Admin(AdminRequest),
}

struct Receivers<R> {
    events: mpsc::UnboundedReceiver<WriterEvent>,
    inbound: Inbound,
    proposals: mpsc::Receiver<Proposal<R>>,
    reads: mpsc::Receiver<ReadRequest>,
    admin: mpsc::Receiver<AdminRequest>,
}

struct Driver<St: RaftStorage, SM: StateMachine, T: Transport> {
    cfg: RuntimeConfig,
    node: RawNode<Arc<St>>,
    sm: Arc<RwLock<SM>>,
    transport: T,
    metrics: Metrics,
    shared: Arc<Shared>,
    writer_tx: Option<std_mpsc::SyncSender<WriteOp>>,
    writer_thread: Option<std::thread::JoinHandle<()>>,
    inflight: VecDeque<InFlight>,
    waiters: BTreeMap<LogIndex, Waiter<SM::Response>>,
    next_read_ctx: u64,
    /// Reads waiting for the engine to confirm a read index, by context.
    reads_unconfirmed: HashMap<u64, oneshot::Sender<Result<(), ReadError>>>,
    /// Confirmed reads waiting for `applied >= index`.
    reads_waiting: BTreeMap<LogIndex, Vec<oneshot::Sender<Result<(), ReadError>>>>,
    reads_waiting_count: usize,
    /// The state machine's applied index, term of that entry, and the
    /// configuration in force there (for snapshot metadata).
    applied: LogIndex,
    applied_term: Term,
    applied_membership: Membership,
    /// Index of the latest snapshot (taken or installed) and what was
    /// applied since, for the snapshot trigger.
    snapshot_index: LogIndex,
    applied_bytes_since_snapshot: u64,
    compacting: bool,
    soft: SoftState,
    commit: LogIndex,
    counters: raft_core::Counters,
    ticks: u64,
}

/// Starts a node: restores the state machine from `storage`'s latest
/// snapshot, starts the engine with `applied` = that snapshot's index (the
/// engine hands out the rest of the log for replay, so nothing is applied
/// twice), spawns the writer thread and the driver task. Must be called
/// inside a tokio runtime.
///
/// `state_machine` must be fresh (applied index 0): it is restored here.
pub fn start<SM, St, T>(
    cfg: RuntimeConfig,
    storage: Arc<St>,
    mut state_machine: SM,
    transport: T,
    inbound: Inbound,
    metrics: Metrics,
) -> Result<RaftHandle<SM>, StartError>
where
    SM: StateMachine + Send + Sync + 'static,
    SM::Response: Send + 'static,
    St: RaftStorage,
    T: Transport,
{
    cfg.validate()?;
    let id = cfg.id();
    let snapshot = storage.snapshot().map_err(StorageFailure::from)?;
    let snap_index = snapshot.meta.last_index;
    if snap_index > 0 {
        state_machine
            .restore(&snapshot.data)
            .map_err(|e| StartError::Restore(e.to_string()))?;
    }
    let applied = state_machine.applied_index();
    if applied != snap_index {
        return Err(StartError::StateMachineMismatch {
            applied,
            snapshot: snap_index,
        });
    }
    let mut raft_cfg = cfg.raft.clone();
    raft_cfg.applied = applied;
    let node = RawNode::new(raft_cfg, storage.clone())?;
    let soft = node.soft_state();
    let commit = node.commit_index();
    info!(
        node = id,
        term = soft.term,
        commit,
        snapshot_index = snap_index,
        last_index = node.last_index(),
        "raft node starting"
    );

    // Writer queue: at most `inflight_writes_max` Readies plus one
    // compaction are ever queued, so `try_send` into it cannot fail on a
    // full queue.
    let (writer_tx, writer_rx) = std_mpsc::sync_channel(cfg.inflight_writes_max + 1);
    // Unbounded, but bounded in practice: one event per write group and
    // compaction, and those are bounded by the writer queue above.
    let (events_tx, events_rx) = mpsc::unbounded_channel();
    let writer_thread = {
        let storage = storage.clone();
        let metrics = metrics.clone();
        let batch_max = cfg.write_batch_max;
        std::thread::Builder::new()
            .name(format!("raft-writer-{id}"))
            .spawn(move || writer_loop(storage, writer_rx, events_tx, metrics, batch_max))?
    };

    let (prop_tx, prop_rx) = mpsc::channel(cfg.proposal_queue_max);
    let (read_tx, read_rx) = mpsc::channel(cfg.read_queue_max);
    let (admin_tx, admin_rx) = mpsc::channel(cfg.admin_queue_max);
    let sm = Arc::new(RwLock::new(state_machine));
    let shared = Arc::new(Shared::default());
    metrics.term.set(soft.term as i64);
    let handle = RaftHandle {
        id,
        proposals: prop_tx,
        reads: read_tx,
        admin: admin_tx,
        sm: sm.clone(),
        metrics: metrics.clone(),
        shared: shared.clone(),
        propose_timeout: cfg.propose_timeout,
        read_timeout: cfg.read_timeout,
        admin_timeout: cfg.admin_timeout,
        tick_interval: cfg.tick_interval,
    };
    let driver = Driver {
        counters: node.counters().clone(),
        node,
        sm,
        transport,
        metrics,
        shared,
        writer_tx: Some(writer_tx),
        writer_thread: Some(writer_thread),
        inflight: VecDeque::new(),
        waiters: BTreeMap::new(),
        next_read_ctx: 1,
        reads_unconfirmed: HashMap::new(),
        reads_waiting: BTreeMap::new(),
        reads_waiting_count: 0,
        applied,
        applied_term: snapshot.meta.last_term,
        applied_membership: snapshot.meta.membership.clone(),
        snapshot_index: snap_index,
        applied_bytes_since_snapshot: 0,
        compacting: false,
        soft,
        commit,
        ticks: 0,
        cfg,
    };
    let rx = Receivers {
        events: events_rx,
        inbound,
        proposals: prop_rx,
        reads: read_rx,
        admin: admin_rx,
    };
    tokio::spawn(
        driver
            .run(rx)
            .instrument(tracing::info_span!("raft", node = id)),
    );
    Ok(handle)
}

/// The writer thread: writes Readies in order, folds every Ready that queued
/// up meanwhile into one sync (group commit), then acknowledges the last.
fn writer_loop<St: RaftStorage>(
    storage: Arc<St>,
    rx: std_mpsc::Receiver<WriteOp>,
    events: mpsc::UnboundedSender<WriterEvent>,
    metrics: Metrics,
    batch_max: usize,
) {
    let fail = |e: StorageFailure| {
        let _ = events.send(WriterEvent::Failed(e.to_string()));
    };
    while let Ok(first) = rx.recv() {
        let mut ops = vec![first];
        while ops.len() < batch_max {
            match rx.try_recv() {
                Ok(op) => ops.push(op),
                Err(_) => break,
            }
        }
        let started = Instant::now();
        let mut last_number = None;
        let mut wrote = false;
        let mut compactions = Vec::new();
        for op in ops {
            match op {
                WriteOp::Write(b) => {
                    if b.snapshot.is_some() || !b.entries.is_empty() || b.hard_state.is_some() {
                        let parts = WriteParts {
                            snapshot: b.snapshot.as_ref(),
                            entries: &b.entries,
                            hard_state: b.hard_state,
                        };
                        if let Err(e) = storage.write(parts) {
                            return fail(e);
                        }
                        wrote = true;
                        metrics.readies_written.inc();
                    }
                    last_number = Some(b.number);
                }
                WriteOp::Compact(s) => compactions.push(s),
            }
        }
        if wrote {
            let synced = Instant::now();
            metrics
                .append_latency_seconds
                .observe((synced - started).as_secs_f64());
            if let Err(e) = storage.sync() {
                return fail(e);
            }
            metrics
                .fsync_latency_seconds
                .observe(synced.elapsed().as_secs_f64());
            metrics.syncs.inc();
        }
        if let Some(number) = last_number {
            if events.send(WriterEvent::Persisted { number }).is_err() {
                return; // the driver is gone
            }
        }
        // After the sync: a compaction only covers applied (so durable)
        // entries, but keeping it behind the sync makes that obvious.
        for s in compactions {
            let index = s.meta.last_index;
            if let Err(e) = storage.compact(s) {
                return fail(e);
            }
            if events.send(WriterEvent::Compacted { index }).is_err() {
                return;
            }
        }
    }
}

fn read_ctx(ctx: &Bytes) -> Option<u64> {
    let arr: [u8; 8] = ctx.as_ref().try_into().ok()?;
    Some(u64::from_be_bytes(arr))
}

impl<St, SM, T> Driver<St, SM, T>
where
    St: RaftStorage,
    SM: StateMachine + Send + Sync + 'static,
    SM::Response: Send + 'static,
    T: Transport,
{
    async fn run(mut self, mut rx: Receivers<SM::Response>) {
        let mut ticker = tokio::time::interval(self.cfg.tick_interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let stop = loop {
            // Writer acknowledgements first: they unblock sends and applies.
            let input = tokio::select! {
                biased;
                Some(ev) = rx.events.recv() => Input::Writer(ev),
                _ = ticker.tick() => Input::Tick,
                Some(a) = rx.admin.recv() => Input::Admin(a),
                Some(m) = rx.inbound.recv() => Input::Peer(m),
                Some(p) = rx.proposals.recv() => Input::Propose(p),
                Some(r) = rx.reads.recv() => Input::Read(r),
            };
            if let Err(stop) = self.handle_input(input, &mut rx) {
                break stop;
            }
            if let Err(stop) = self.process_readies() {
                break stop;
            }
        };
        match stop {
            Stop::Fatal(reason) => self.stop_fatal(reason),
            Stop::Shutdown(reply) => {
                self.stop_graceful().await;
                let _ = reply.send(());
            }
        }
    }

    fn handle_input(
        &mut self,
        input: Input<SM::Response>,
        rx: &mut Receivers<SM::Response>,
    ) -> Result<(), Stop> {
        match input {
            Input::Writer(ev) => {
                self.on_writer_event(ev)?;
                while let Ok(ev) = rx.events.try_recv() {
                    self.on_writer_event(ev)?;
                }
            }
            Input::Tick => {
                self.node.tick();
                self.ticks += 1;
                if self.ticks.is_multiple_of(PRUNE_INTERVAL_TICKS) {
                    self.prune_abandoned();
                }
            }
            Input::Peer(m) => {
                self.step(m)?;
                for _ in 1..INBOUND_BATCH_MAX {
                    match rx.inbound.try_recv() {
                        Ok(m) => self.step(m)?,
                        Err(_) => break,
                    }
                }
            }
            Input::Propose(p) => {
                // Drain what queued up: one Ready, one append for all.
                self.on_propose(p);
                for _ in 1..self.cfg.proposal_batch_max {
                    match rx.proposals.try_recv() {
                        Ok(p) => self.on_propose(p),
                        Err(_) => break,
                    }
                }
            }
            Input::Read(r) => {
                self.on_read(r);
                for _ in 1..READ_BATCH_MAX {
                    match rx.reads.try_recv() {
                        Ok(r) => self.on_read(r),
                        Err(_) => break,
                    }
                }
            }
            Input::Admin(a) => self.on_admin(a)?,
        }
        Ok(())
    }

    fn step(&mut self, m: Message) -> Result<(), Stop> {
        let (from, kind) = (m.from, m.kind());
        match self.node.step(m) {
            Ok(()) => Ok(()),
            Err(StepError::Storage(e)) => Err(e.into()),
            Err(e) => {
                debug!(from, kind, error = %e, "message dropped");
                Ok(())
            }
        }
    }

    fn on_propose(&mut self, p: Proposal<SM::Response>) {
        if self.waiters.len() >= self.cfg.pending_proposals_max {
            self.metrics.proposal_failed("backpressure");
            let _ = p.reply.send(Err(ProposeError::Backpressure));
            return;
        }
        match self.node.propose(p.data) {
            Ok(id) => {
                self.metrics.proposals.inc();
                self.add_waiter(
                    id.index,
                    Waiter::Proposal {
                        term: id.term,
                        reply: p.reply,
                        start: p.start,
                    },
                );
            }
            Err(e) => {
                let (reason, err) = match e {
                    raft_core::ProposeError::NotLeader { leader_hint } => {
                        ("not_leader", ProposeError::NotLeader { leader_hint })
                    }
                    raft_core::ProposeError::TransferInProgress { to } => {
                        ("transfer", ProposeError::TransferInProgress { to })
                    }
                    raft_core::ProposeError::TooLarge { bytes, max_bytes } => {
                        ("too_large", ProposeError::TooLarge { bytes, max_bytes })
                    }
                    raft_core::ProposeError::Backpressure => {
                        ("backpressure", ProposeError::Backpressure)
                    }
                    // Proposing only reads the in-memory log; a storage error
                    // here will resurface (fatally) at the next Ready.
                    raft_core::ProposeError::Storage(e) => {
                        ("storage", ProposeError::Fatal(e.to_string()))
                    }
                };
                self.metrics.proposal_failed(reason);
                let _ = p.reply.send(Err(err));
            }
        }
    }

    fn add_waiter(&mut self, index: LogIndex, w: Waiter<SM::Response>) {
        // An older waiter at the same index proposed an entry that this
        // node's log no longer holds (it was truncated and the index reused).
        if let Some(old) = self.waiters.insert(index, w) {
            old.dropped(false);
        }
    }

    fn on_read(&mut self, r: ReadRequest) {
        let pending = self.reads_unconfirmed.len() + self.reads_waiting_count;
        if r.consistency == ReadConsistency::Stale {
            let _ = r.reply.send(Ok(()));
            return;
        }
        if pending >= self.cfg.pending_reads_max {
            let _ = r.reply.send(Err(ReadError::Backpressure));
            return;
        }
        let ctx = self.next_read_ctx;
        self.next_read_ctx += 1;
        let bytes = Bytes::copy_from_slice(&ctx.to_be_bytes());
        let res = match r.consistency {
            ReadConsistency::Lease => self.node.lease_read(bytes),
            _ => self.node.read_index(bytes),
        };
        match res {
            Ok(()) => {
                self.reads_unconfirmed.insert(ctx, r.reply);
            }
            Err(e) => {
                let err = match e {
                    raft_core::ReadError::NoLeader => ReadError::NoLeader,
                    raft_core::ReadError::NotLeader { leader_hint } => {
                        ReadError::NotLeader { leader_hint }
                    }
                    raft_core::ReadError::Backpressure => ReadError::Backpressure,
                    raft_core::ReadError::NoLease => ReadError::NoLease,
                };
                let _ = r.reply.send(Err(err));
            }
        }
    }

    fn on_admin(&mut self, a: AdminRequest) -> Result<(), Stop> {
        match a {
            AdminRequest::ChangeMembership(changes, reply) => {
                match self.node.change_membership(&changes) {
                    Ok(id) => {
                        info!(?changes, index = id.index, "membership change proposed");
                        self.add_waiter(
                            id.index,
                            Waiter::Membership {
                                term: id.term,
                                reply,
                            },
                        );
                    }
                    Err(e) => {
                        use raft_core::MembershipError as E;
                        let err = match e {
                            E::NotLeader { leader_hint } => {
                                MembershipError::NotLeader { leader_hint }
                            }
                            E::ChangeInProgress => MembershipError::ChangeInProgress,
                            E::Invalid(s) => MembershipError::Invalid(s.to_string()),
                            E::LearnerLagging { id, lag_entries } => {
                                MembershipError::LearnerLagging { id, lag_entries }
                            }
                            E::TransferInProgress => MembershipError::TransferInProgress,
                            E::Storage(e) => return Err(e.into()),
                        };
                        let _ = reply.send(Err(err));
                    }
                }
            }
            AdminRequest::Transfer(to, reply) => {
                use raft_core::TransferError as E;
                let res = match self.node.transfer_leadership(to) {
                    Ok(()) => {
                        info!(to, "leadership transfer started");
                        Ok(())
                    }
                    Err(E::NotLeader { leader_hint }) => {
                        Err(TransferError::NotLeader { leader_hint })
                    }
                    Err(E::NotVoter(id)) => Err(TransferError::NotVoter(id)),
                    Err(E::AlreadyLeader) => Err(TransferError::AlreadyLeader),
                    Err(E::Storage(e)) => return Err(e.into()),
                };
                let _ = reply.send(res);
            }
            AdminRequest::Status(reply) => {
                let _ = reply.send(self.status());
            }
            AdminRequest::SetPeerAddr(id, addr, reply) => {
                info!(peer = id, ?addr, "peer address updated");
                self.transport.set_peer_addr(id, addr);
                let _ = reply.send(());
            }
            AdminRequest::Shutdown(reply) => return Err(Stop::Shutdown(reply)),
        }
        Ok(())
    }

    fn status(&self) -> NodeStatus {
        let s = self.node.status();
        NodeStatus {
            id: s.id,
            role: s.role,
            term: s.term,
            vote: s.vote,
            leader: s.leader,
            commit_index: s.commit_index,
            applied_index: self.applied,
            last_index: s.last_index,
            persisted_index: s.persisted_index,
            snapshot_index: s.snapshot_index,
            membership: s.membership,
            peers: s
                .progress
                .iter()
                .map(|p| PeerProgress {
                    id: p.id,
                    match_index: p.match_index,
                    next_index: p.next_index,
                    state: format!("{:?}", p.state),
                })
                .collect(),
            transfer_target: s.transfer_target,
            inflight_writes: self.inflight.len(),
            pending_proposals: self.waiters.len(),
            pending_reads: self.reads_unconfirmed.len() + self.reads_waiting_count,
        }
    }

    fn on_writer_event(&mut self, ev: WriterEvent) -> Result<(), Stop> {
        match ev {
            WriterEvent::Persisted { number } => {
                let mut msgs = Vec::new();
                while self.inflight.front().is_some_and(|f| f.number <= number) {
                    let Some(f) = self.inflight.pop_front() else {
                        break;
                    };
                    if let Some(snap) = f.snapshot {
                        // Durable in storage now; restore the state machine
                        // before telling the engine (which then counts the
                        // snapshot as applied).
                        self.restore_snapshot(snap)?;
                    }
                    msgs.extend(f.persisted_messages);
                }
                self.node.on_persisted(number)?;
                // Only now: votes and acknowledgements promise what is durable.
                for m in msgs {
                    self.transport.send(m);
                }
            }
            WriterEvent::Compacted { index } => {
                self.compacting = false;
                self.metrics.snapshots_taken.inc();
                info!(index, "log compacted after snapshot");
            }
            WriterEvent::Failed(reason) => return Err(Stop::Fatal(reason)),
        }
        Ok(())
    }

    fn sm_write(&self) -> RwLockWriteGuard<'_, SM> {
        // Poisoned only if a reader panicked while holding the lock; readers
        // cannot mutate, so the state machine is intact.
        self.sm.write().unwrap_or_else(|e| e.into_inner())
    }

    fn restore_snapshot(&mut self, snap: Snapshot) -> Result<(), Stop> {
        let index = snap.meta.last_index;
        {
            let mut sm = self.sm_write();
            sm.restore(&snap.data)
                .map_err(|e| Stop::Fatal(format!("state machine restore failed: {e}")))?;
            if sm.applied_index() != index {
                return Err(Stop::Fatal(format!(
                    "state machine restored to index {} from a snapshot at {index}",
                    sm.applied_index()
                )));
            }
        }
        info!(
            index,
            term = snap.meta.last_term,
            bytes = snap.data.len(),
            "snapshot installed from leader"
        );
        self.metrics.snapshots_installed.inc();
        self.applied = self.applied.max(index);
        self.applied_term = snap.meta.last_term;
        self.applied_membership = snap.meta.membership;
        self.snapshot_index = index;
        self.applied_bytes_since_snapshot = 0;
        // Proposals at or below the snapshot: we cannot see which entry won.
        while let Some(e) = self.waiters.first_entry() {
            if *e.key() > index {
                break;
            }
            e.remove().dropped(true);
        }
        self.serve_reads();
        Ok(())
    }

    fn process_readies(&mut self) -> Result<(), Stop> {
        while self.inflight.len() < self.cfg.inflight_writes_max && self.node.has_ready() {
            let rd = self.node.ready()?;
            self.handle_ready(rd)?;
        }
        self.sync_counters();
        self.maybe_snapshot()
    }

    fn handle_ready(&mut self, rd: Ready) -> Result<(), Stop> {
        if let Some(ss) = rd.soft_state {
            self.on_soft_state(ss);
        }
        let must_write = rd.must_persist() || !rd.persisted_messages.is_empty();
        // 1. Messages that depend on nothing unwritten: send at once.
        for m in rd.messages {
            self.transport.send(m);
        }
        if let Some(hs) = rd.hard_state {
            if hs.commit > self.commit {
                self.metrics
                    .entries_committed
                    .inc_by(hs.commit - self.commit);
                self.commit = hs.commit;
            }
        }
        // 2. Writes go to the writer thread in Ready order; 3. their
        // persisted messages wait in `inflight` for the ack.
        if must_write {
            let Some(tx) = &self.writer_tx else {
                return Err(Stop::Fatal("writer thread stopped".into()));
            };
            let op = WriteOp::Write(WriteBatch {
                number: rd.number,
                snapshot: rd.snapshot.clone(),
                entries: rd.entries,
                hard_state: rd.hard_state,
            });
            if tx.try_send(op).is_err() {
                // Full cannot happen (see the queue's capacity); so the
                // writer died and its Failed event is on its way.
                return Err(Stop::Fatal("writer thread stopped".into()));
            }
            self.inflight.push_back(InFlight {
                number: rd.number,
                snapshot: rd.snapshot,
                persisted_messages: rd.persisted_messages,
            });
        }
        // 4. Committed entries are durable locally: apply now.
        self.apply(rd.committed_entries)?;
        // 5. Reads.
        for rs in rd.read_states {
            let Some(reply) = read_ctx(&rs.ctx).and_then(|c| self.reads_unconfirmed.remove(&c))
            else {
                continue;
            };
            if rs.index <= self.applied {
                let _ = reply.send(Ok(()));
            } else {
                self.reads_waiting.entry(rs.index).or_default().push(reply);
                self.reads_waiting_count += 1;
            }
        }
        for ctx in rd.dropped_reads {
            if let Some(reply) = read_ctx(&ctx).and_then(|c| self.reads_unconfirmed.remove(&c)) {
                let _ = reply.send(Err(ReadError::Dropped));
            }
        }
        Ok(())
    }

    fn on_soft_state(&mut self, ss: SoftState) {
        let old = self.soft;
        if ss.term != old.term {
            info!(from = old.term, to = ss.term, "term changed");
            self.metrics.term.set(ss.term as i64);
        }
        if ss.leader != old.leader {
            info!(term = ss.term, leader = ?ss.leader, "leader changed");
            self.metrics.leader_changes.inc();
        }
        if ss.role != old.role {
            match ss.role {
                Role::Leader => info!(term = ss.term, "became leader"),
                Role::Candidate => info!(term = ss.term, "election started"),
                Role::PreCandidate => debug!(term = ss.term, "pre-election started"),
                Role::Follower => info!(term = ss.term, "became follower"),
            }
            self.metrics
                .is_leader
                .set(i64::from(ss.role == Role::Leader));
        }
        self.soft = ss;
    }

    fn apply(&mut self, entries: Vec<Entry>) -> Result<(), Stop> {
        let Some(last) = entries.last().map(|e| e.index) else {
            return Ok(());
        };
        let sm_lock = self.sm.clone();
        // Poisoned only by a panicking reader; see `sm_write`.
        let mut sm = sm_lock.write().unwrap_or_else(|e| e.into_inner());
        for e in &entries {
            assert_eq!(
                e.index,
                self.applied + 1,
                "engine handed out entry {} after applied {}",
                e.index,
                self.applied
            );
            let resp = sm.apply(e).map_err(|err| {
                Stop::Fatal(format!("state machine apply of {} failed: {err}", e.index))
            })?;
            self.applied = e.index;
            self.applied_term = e.term;
            self.applied_bytes_since_snapshot += e.size_bytes();
            self.metrics.entries_applied.inc();
            if let EntryPayload::Membership(m) = &e.payload {
                info!(index = e.index, membership = ?m, "membership change applied");
                self.metrics.membership_changes.inc();
                self.applied_membership = m.clone();
            }
            let mut resp = Some(resp);
            while let Some(w) = self.waiters.first_entry() {
                if *w.key() > e.index {
                    break;
                }
                let at = *w.key();
                let w = w.remove();
                if at < e.index {
                    // Cannot happen: every index is applied in turn. Be safe.
                    w.dropped(true);
                    continue;
                }
                match w {
                    Waiter::Proposal { term, reply, start } => {
                        if term == e.term {
                            self.metrics
                                .commit_latency_seconds
                                .observe(start.elapsed().as_secs_f64());
                            if let Some(r) = resp.take() {
                                let _ = reply.send(Ok(r));
                            }
                        } else {
                            self.metrics.proposal_failed("dropped");
                            let _ = reply.send(Err(ProposeError::Dropped));
                        }
                    }
                    Waiter::Membership { term, reply } => {
                        let _ = reply.send(if term == e.term {
                            Ok(e.index)
                        } else {
                            Err(MembershipError::Dropped)
                        });
                    }
                }
            }
        }
        drop(sm);
        self.node.on_applied(last);
        self.serve_reads();
        Ok(())
    }

    fn serve_reads(&mut self) {
        while let Some(e) = self.reads_waiting.first_entry() {
            if *e.key() > self.applied {
                break;
            }
            for reply in e.remove() {
                self.reads_waiting_count -= 1;
                let _ = reply.send(Ok(()));
            }
        }
    }

    fn sync_counters(&mut self) {
        let c = self.node.counters();
        let started = c
            .elections_started
            .saturating_sub(self.counters.elections_started);
        let won = c.elections_won.saturating_sub(self.counters.elections_won);
        if started > 0 {
            self.metrics.elections_started.inc_by(started);
        }
        if won > 0 {
            self.metrics.elections_won.inc_by(won);
        }
        self.counters = c.clone();
    }

    fn maybe_snapshot(&mut self) -> Result<(), Stop> {
        if self.compacting || self.applied <= self.snapshot_index {
            return Ok(());
        }
        let entries = self.applied - self.snapshot_index;
        let by_entries =
            self.cfg.snapshot_trigger_entries > 0 && entries >= self.cfg.snapshot_trigger_entries;
        let by_bytes = self.cfg.snapshot_trigger_bytes > 0
            && self.applied_bytes_since_snapshot >= self.cfg.snapshot_trigger_bytes;
        if !(by_entries || by_bytes) {
            return Ok(());
        }
        let Some(tx) = &self.writer_tx else {
            return Ok(());
        };
        let data = {
            let sm = self.sm.read().unwrap_or_else(|e| e.into_inner());
            debug_assert_eq!(sm.applied_index(), self.applied);
            sm.snapshot()
                .map_err(|e| Stop::Fatal(format!("state machine snapshot failed: {e}")))?
        };
        let snapshot = Snapshot {
            meta: SnapshotMeta {
                last_index: self.applied,
                last_term: self.applied_term,
                membership: self.applied_membership.clone(),
            },
            data: Bytes::from(data),
        };
        info!(
            index = self.applied,
            bytes = snapshot.data.len(),
            entries,
            "taking snapshot"
        );
        if tx.try_send(WriteOp::Compact(snapshot)).is_err() {
            return Err(Stop::Fatal("writer thread stopped".into()));
        }
        self.compacting = true;
        self.snapshot_index = self.applied;
        self.applied_bytes_since_snapshot = 0;
        Ok(())
    }

    /// Forgets waiters whose callers gave up, so abandoned requests (e.g. on
    /// a leader that lost its quorum) do not fill the tables.
    fn prune_abandoned(&mut self) {
        self.waiters.retain(|_, w| !w.is_closed());
        self.reads_unconfirmed.retain(|_, r| !r.is_closed());
        let mut count = 0;
        self.reads_waiting.retain(|_, v| {
            v.retain(|r| !r.is_closed());
            count += v.len();
            !v.is_empty()
        });
        self.reads_waiting_count = count;
    }

    fn fail_all(&mut self, fatal: Option<&str>) {
        for (_, w) in std::mem::take(&mut self.waiters) {
            w.fail(fatal);
        }
        let err = || match fatal {
            Some(f) => ReadError::Fatal(f.to_string()),
            None => ReadError::ShuttingDown,
        };
        for (_, r) in self.reads_unconfirmed.drain() {
            let _ = r.send(Err(err()));
        }
        for (_, v) in std::mem::take(&mut self.reads_waiting) {
            for r in v {
                let _ = r.send(Err(err()));
            }
        }
        self.reads_waiting_count = 0;
    }

    fn stop_fatal(&mut self, reason: String) {
        error!(%reason, "raft node stopped on a fatal error");
        *self.shared.fatal.lock().unwrap_or_else(|e| e.into_inner()) = Some(reason.clone());
        self.fail_all(Some(&reason));
        self.transport.shutdown();
        // Nothing else is written: the writer exits when its queue closes.
        self.writer_tx = None;
    }

    async fn stop_graceful(&mut self) {
        info!("raft node shutting down");
        self.fail_all(None);
        self.transport.shutdown();
        // Let the writer finish what is queued (durability for its own sake;
        // nothing more is acknowledged), then join it off the runtime.
        self.writer_tx = None;
        if let Some(t) = self.writer_thread.take() {
            let joined = tokio::task::spawn_blocking(move || t.join()).await;
            if !matches!(joined, Ok(Ok(()))) {
                warn!("writer thread ended abnormally");
            }
        }
        info!("raft node stopped");
    }
}
