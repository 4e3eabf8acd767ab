//! The driver task: owns the [`RawNode`], feeds it inputs, and handles its
//! Readies in the order the engine's contract requires. See the crate docs.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{mpsc as std_mpsc, Arc, RwLock, RwLockWriteGuard};
use std::time::Instant;

use bytes::Bytes;
use raft_core::{
    Entry, EntryPayload, HardState, LogIndex, LogStore, Membership, MembershipChange, Message,
    NodeId, RawNode, Ready, Role, Snapshot, SnapshotMeta, SoftState, StateMachine, StepError, Term,
};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, error, info, warn, Instrument};

use crate::config::RuntimeConfig;
use crate::error::*;
use crate::handle::*;
use crate::metrics::Metrics;
use crate::storage::{RaftStorage, WriteParts};
use crate::transport::{Inbound, Transport};

/// Most inbound peer messages stepped in one turn of the loop (before the
/// Ready is taken): keeps one chatty peer from starving the loop.
const INBOUND_BATCH_MAX: usize = 256;
/// Most reads taken in one turn of the loop.
const READ_BATCH_MAX: usize = 1024;
/// Most yields to the scheduler in one turn while proposals keep arriving
/// (see `Driver::turn`). With 64 HTTP clients on a 3-node cluster, going
/// from one yield to up to four raised the entries per AppendEntries from
/// 8 to 12.5 and cut the servers' CPU per write by about 8%; sixteen added
/// latency at 256 clients without a clear gain.
const PROPOSAL_YIELDS_MAX: usize = 4;
/// Every this many ticks, forget waiters whose caller gave up (timed out).
const PRUNE_INTERVAL_TICKS: u64 = 10;

/// How many inputs of each kind one turn of the loop may still take.
struct Budget {
    inbound_left: usize,
    proposals_left: usize,
    reads_left: usize,
    admin_left: usize,
    /// Proposals the engine accepted this turn (so the driver leads and
    /// more may be on their way: worth a yield before the Ready).
    proposals_accepted: usize,
}

impl Budget {
    fn new(cfg: &RuntimeConfig) -> Self {
        Budget {
            inbound_left: INBOUND_BATCH_MAX,
            proposals_left: cfg.proposal_batch_max,
            reads_left: READ_BATCH_MAX,
            // Admin requests are rare and cheap, except shutdown which ends
            // the loop anyway.
            admin_left: cfg.admin_queue_max,
            proposals_accepted: 0,
        }
    }
}

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
    /// Whether this Ready needs an fsync before it counts as persisted
    /// (`raft_core::Ready::must_sync`: false when its only write is a
    /// commit index advance, which nothing relies on being durable).
    sync: bool,
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

/// A snapshot taken, not yet handed to the writer.
struct PendingSnapshot {
    snapshot: Snapshot,
    taken_at_tick: u64,
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

/// Publishes "stopped" (and no leader) when the driver task ends, however it
/// ends: dropped at the end of `run`, or during a panic's unwinding.
struct StoppedGuard(Arc<Shared>);

impl Drop for StoppedGuard {
    fn drop(&mut self) {
        self.0.leader.send_modify(|l| {
            l.role = Role::Follower;
            l.leader = None;
        });
        self.0.stopped.send_replace(true);
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
    /// Origin of the engine's clock readings.
    clock_origin: Instant,
    node: RawNode<Arc<St>>,
    /// The same store the engine reads, for writes done on this task.
    storage: Arc<St>,
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
    /// A snapshot taken and waiting for `snapshot_keep_entries` more
    /// entries before the log is compacted up to it (see `maybe_snapshot`).
    pending_snapshot: Option<PendingSnapshot>,
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
    // The engine measures leases and CheckQuorum on the clock in units of
    // this driver's tick.
    raft_cfg.tick_interval_nanos = u64::try_from(cfg.tick_interval.as_nanos()).unwrap_or(u64::MAX);
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
    let shared = Arc::new(Shared::new(LeaderInfo {
        role: soft.role,
        term: soft.term,
        leader: soft.leader,
    }));
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
    };
    let driver = Driver {
        counters: node.counters().clone(),
        node,
        clock_origin: Instant::now(),
        storage,
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
        pending_snapshot: None,
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
///
/// Consecutive Readies of one group are also merged into one storage write
/// when that changes nothing (see [`Merged`]): one `pwrite` instead of one
/// per Ready. The group is synced only if one of its Readies needs it (see
/// `raft_core::Ready::must_sync`); every earlier group was synced (or needed none) before
/// this one started, so acknowledging the group acknowledges everything.
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
        let mut must_sync = false;
        let mut wrote = false;
        let mut compactions = Vec::new();
        let mut merged = Merged::default();
        for op in ops {
            match op {
                WriteOp::Write(b) => {
                    last_number = Some(b.number);
                    if b.snapshot.is_none() && b.entries.is_empty() && b.hard_state.is_none() {
                        continue; // only ordering its persisted messages
                    }
                    must_sync |= b.sync;
                    wrote = true;
                    metrics.readies_written.inc();
                    if let Err(e) = merged.add(b, &*storage) {
                        return fail(e);
                    }
                }
                WriteOp::Compact(s) => compactions.push(s),
            }
        }
        if let Err(e) = merged.flush(&*storage) {
            return fail(e);
        }
        if must_sync {
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
        } else if wrote {
            metrics.syncs_skipped.inc();
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

/// Consecutive Readies of one write group folded into one
/// [`RaftStorage::write`].
///
/// A Ready joins the pending write unless it carries a snapshot, or its
/// first entry does not directly follow the pending entries (a conflicting
/// suffix being replaced): then the pending write goes first. Folding keeps
/// the order of every entry, and keeps only the newest hard state, written
/// after all the entries. That changes nothing that can be observed: the
/// whole group becomes durable at the same fsync (or, for commit-only hard
/// states, at a later one), and no hard state's commit index ever points
/// past entries that are kept (committed entries are never replaced).
#[derive(Default)]
struct Merged {
    snapshot: Option<Snapshot>,
    entries: Vec<Entry>,
    hard_state: Option<HardState>,
}

impl Merged {
    fn add<St: RaftStorage>(&mut self, b: WriteBatch, storage: &St) -> Result<(), StorageFailure> {
        let follows = match (self.entries.last(), b.entries.first()) {
            (Some(last), Some(first)) => first.index == last.index + 1,
            _ => true,
        };
        if b.snapshot.is_some() || !follows {
            self.flush(storage)?;
        }
        if b.snapshot.is_some() {
            self.snapshot = b.snapshot;
        }
        if self.entries.is_empty() {
            self.entries = b.entries;
        } else {
            self.entries.extend(b.entries);
        }
        if b.hard_state.is_some() {
            self.hard_state = b.hard_state;
        }
        Ok(())
    }

    fn flush<St: RaftStorage>(&mut self, storage: &St) -> Result<(), StorageFailure> {
        if self.snapshot.is_none() && self.entries.is_empty() && self.hard_state.is_none() {
            return Ok(());
        }
        let m = std::mem::take(self);
        storage.write(WriteParts {
            snapshot: m.snapshot.as_ref(),
            entries: &m.entries,
            hard_state: m.hard_state,
        })
    }
}

/// `1,2,3` (empty for none): node ids as one log field, not a Debug set.
fn id_list(ids: &std::collections::BTreeSet<NodeId>) -> String {
    ids.iter()
        .map(|id| id.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

/// `add_voter 4, remove 2`: membership changes as one log field.
fn describe_changes(changes: &[MembershipChange]) -> String {
    changes
        .iter()
        .map(|c| match c {
            MembershipChange::AddVoter(id) => format!("add_voter {id}"),
            MembershipChange::AddLearner(id) => format!("add_learner {id}"),
            MembershipChange::Remove(id) => format!("remove {id}"),
        })
        .collect::<Vec<_>>()
        .join(", ")
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
    /// The monotonic clock as the engine reads it: nanoseconds since the
    /// driver started (`Instant` never goes back; it keeps running while
    /// the process is stopped).
    fn clock_nanos(&self) -> raft_core::Nanos {
        u64::try_from(self.clock_origin.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    async fn run(mut self, mut rx: Receivers<SM::Response>) {
        // Tells every handle that the driver is gone when this task ends,
        // even by a panic.
        let _stopped = StoppedGuard(self.shared.clone());
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
            if let Err(stop) = self.turn(input, &mut rx).await {
                break stop;
            }
        };
        match stop {
            Stop::Fatal(reason) => {
                self.stop_fatal(reason);
                self.transport.closed().await;
            }
            Stop::Shutdown(reply) => {
                self.stop_graceful().await;
                let _ = reply.send(());
            }
        }
    }

    /// One turn of the loop: the input that woke the driver, then everything
    /// else already queued, then the Readies.
    ///
    /// Batching: every input queued by now goes into the same Ready, so
    /// concurrent proposals share one append, one AppendEntries per follower
    /// and one write. Proposals from an application (e.g. HTTP handlers on
    /// other tasks) arrive one by one, so when this turn accepted proposals,
    /// the driver yields to the scheduler before taking the Ready: the
    /// tasks that are runnable now (woken by the same I/O poll) get to
    /// enqueue theirs, and they join this batch. It yields again while the
    /// last yield brought more proposals, at most [`PROPOSAL_YIELDS_MAX`]
    /// times: under load the handlers' tasks run in several rounds (two
    /// workers, each with its own queue), and one yield caught only the
    /// first. Each yield costs one trip through the run queue (microseconds
    /// when idle: tokio polls the I/O driver without blocking and resumes
    /// the driver), far below an fsync; at low load the first yield finds
    /// nothing and the Ready goes at once. Readies are never held back
    /// while the writer is busy: the leader's AppendEntries must leave at
    /// once to overlap its own fsync.
    async fn turn(
        &mut self,
        input: Input<SM::Response>,
        rx: &mut Receivers<SM::Response>,
    ) -> Result<(), Stop> {
        let mut budget = Budget::new(&self.cfg);
        // The clock first: after a pause (SIGSTOP, a starved runtime) the
        // ticks missed never come, but the engine must see the time that
        // passed before it handles anything (a leader cut off meanwhile
        // steps down here).
        self.node.observe_clock(self.clock_nanos());
        self.handle_input(input, rx, &mut budget)?;
        self.drain(rx, &mut budget)?;
        let mut yields = 0;
        while budget.proposals_accepted > 0
            && budget.proposals_left > 0
            && yields < PROPOSAL_YIELDS_MAX
        {
            let before = budget.proposals_accepted;
            tokio::task::yield_now().await;
            self.drain(rx, &mut budget)?;
            yields += 1;
            if budget.proposals_accepted == before {
                break; // nothing more is on its way
            }
        }
        self.process_readies()
    }

    /// Takes every input already queued, without waiting, within `budget`
    /// (so one flooded queue cannot keep the driver from its Ready, its
    /// ticks and the writer's acknowledgements).
    fn drain(&mut self, rx: &mut Receivers<SM::Response>, budget: &mut Budget) -> Result<(), Stop> {
        while let Ok(ev) = rx.events.try_recv() {
            self.on_writer_event(ev)?;
        }
        while budget.admin_left > 0 {
            let Ok(a) = rx.admin.try_recv() else { break };
            budget.admin_left -= 1;
            self.on_admin(a)?;
        }
        while budget.inbound_left > 0 {
            let Ok(m) = rx.inbound.try_recv() else { break };
            budget.inbound_left -= 1;
            self.step(m)?;
        }
        while budget.proposals_left > 0 {
            let Ok(p) = rx.proposals.try_recv() else {
                break;
            };
            budget.proposals_left -= 1;
            if self.on_propose(p) {
                budget.proposals_accepted += 1;
            }
        }
        while budget.reads_left > 0 {
            let Ok(r) = rx.reads.try_recv() else { break };
            budget.reads_left -= 1;
            self.on_read(r);
        }
        Ok(())
    }

    fn handle_input(
        &mut self,
        input: Input<SM::Response>,
        rx: &mut Receivers<SM::Response>,
        budget: &mut Budget,
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
                budget.inbound_left -= 1;
                self.step(m)?;
            }
            Input::Propose(p) => {
                budget.proposals_left -= 1;
                if self.on_propose(p) {
                    budget.proposals_accepted += 1;
                }
            }
            Input::Read(r) => {
                budget.reads_left -= 1;
                self.on_read(r);
            }
            Input::Admin(a) => {
                budget.admin_left -= 1;
                self.on_admin(a)?;
            }
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

    /// Hands one proposal to the engine; true if it was appended.
    fn on_propose(&mut self, p: Proposal<SM::Response>) -> bool {
        if self.waiters.len() >= self.cfg.pending_proposals_max {
            self.metrics.proposal_failed("backpressure");
            let _ = p.reply.send(Err(ProposeError::Backpressure));
            return false;
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
                true
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
                false
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
            // Read the clock now, after the read arrived: a lease checked
            // against an older reading could outlive a pause.
            ReadConsistency::Lease => match self.node.lease_read(bytes.clone(), self.clock_nanos())
            {
                // No valid lease (just elected, or woken from a pause past
                // it): confirm leadership with a heartbeat round instead.
                Err(raft_core::ReadError::NoLease) => self.node.read_index(bytes),
                res => res,
            },
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
                    // Only lease_read answers NoLease, and that became a
                    // ReadIndex above; were it ever to reach here, the read
                    // was simply not served: retry.
                    raft_core::ReadError::NoLease => ReadError::Dropped,
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
                        info!(
                            changes = %describe_changes(&changes),
                            index = id.index,
                            "membership change proposed"
                        );
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
                match &addr {
                    Some(a) => info!(peer = id, addr = %a, "peer address updated"),
                    None => info!(peer = id, "peer address removed"),
                }
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
            WriterEvent::Persisted { number } => self.on_persisted(number)?,
            WriterEvent::Compacted { index } => {
                self.compacting = false;
                self.metrics.snapshots_taken.inc();
                info!(index, "log compacted after snapshot");
            }
            WriterEvent::Failed(reason) => return Err(Stop::Fatal(reason)),
        }
        Ok(())
    }

    /// Every Ready up to `number` is durable: restore the snapshots they
    /// installed, tell the engine, then send the messages that promised
    /// them.
    fn on_persisted(&mut self, number: u64) -> Result<(), Stop> {
        let mut msgs = Vec::new();
        while self.inflight.front().is_some_and(|f| f.number <= number) {
            let Some(f) = self.inflight.pop_front() else {
                break;
            };
            if let Some(snap) = f.snapshot {
                // Durable in storage now; restore the state machine before
                // telling the engine (which then counts the snapshot as
                // applied).
                self.restore_snapshot(snap)?;
            }
            msgs.extend(f.persisted_messages);
        }
        self.node.on_persisted(number)?;
        // Only now: votes and acknowledgements promise what is durable.
        for m in msgs {
            self.transport.send(m);
        }
        Ok(())
    }

    /// Writes one Ready on this task instead of the writer thread, when
    /// that is cheaper and keeps the order: nothing is queued for the
    /// writer (so this write cannot overtake one), no compaction runs, and
    /// the write needs no fsync (a commit-index-only Ready) or the store's
    /// fsync is a no-op. Then it is durable (or needs not be) on return:
    /// no hand-over to the writer thread and no wake-up back, which at low
    /// load was most of the runtime's CPU per write (issue 10).
    fn try_write_inline(&mut self, must_sync: bool, parts: WriteParts<'_>) -> Result<bool, Stop> {
        let cheap = !must_sync || self.storage.sync_is_noop();
        if !cheap || !self.inflight.is_empty() || self.compacting {
            return Ok(false);
        }
        if parts.snapshot.is_some() || !parts.entries.is_empty() || parts.hard_state.is_some() {
            self.storage.write(parts)?;
            self.metrics.readies_written.inc();
            if must_sync {
                self.storage.sync()?;
                self.metrics.syncs.inc();
            } else {
                self.metrics.syncs_skipped.inc();
            }
        }
        Ok(true)
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
        if self
            .pending_snapshot
            .as_ref()
            .is_some_and(|p| p.snapshot.meta.last_index <= index)
        {
            // The leader's snapshot covers it; the store would ignore it.
            self.pending_snapshot = None;
        }
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
        // 2. Writes go to the writer thread in Ready order (or are done here
        // when that is cheaper, see `try_write_inline`); 3. their persisted
        // messages wait in `inflight` until durable.
        if must_write {
            let parts = WriteParts {
                snapshot: rd.snapshot.as_ref(),
                entries: &rd.entries,
                hard_state: rd.hard_state,
            };
            if self.try_write_inline(rd.must_sync, parts)? {
                self.inflight.push_back(InFlight {
                    number: rd.number,
                    snapshot: rd.snapshot,
                    persisted_messages: rd.persisted_messages,
                });
                self.on_persisted(rd.number)?;
            } else {
                let Some(tx) = &self.writer_tx else {
                    return Err(Stop::Fatal("writer thread stopped".into()));
                };
                // The engine says whether this Ready promises anything that
                // must survive a crash (a commit-index-only hard state does
                // not).
                let op = WriteOp::Write(WriteBatch {
                    number: rd.number,
                    snapshot: rd.snapshot.clone(),
                    entries: rd.entries,
                    hard_state: rd.hard_state,
                    sync: rd.must_sync,
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
            // `leader` is absent while none is known.
            info!(term = ss.term, leader = ss.leader, "leader changed");
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
        self.shared.leader.send_replace(LeaderInfo {
            role: ss.role,
            term: ss.term,
            leader: ss.leader,
        });
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
            if let EntryPayload::Membership(m) = &e.payload {
                info!(
                    index = e.index,
                    voters = %id_list(&m.voters),
                    voters_outgoing = %id_list(&m.voters_outgoing),
                    learners = %id_list(&m.learners),
                    "membership change applied"
                );
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
        self.metrics.entries_applied.inc_by(entries.len() as u64);
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

    /// Takes a snapshot when the trigger fires, and hands it to the writer
    /// (which compacts the log up to it) once `snapshot_keep_entries` more
    /// entries were applied or `snapshot_keep_ticks_max` ticks passed.
    ///
    /// Why the wait: the store discards the log up to the snapshot's index
    /// and the engine needs the log to start right after its snapshot, so
    /// the only way to keep a tail of entries after a compaction is to
    /// compact at an older snapshot. A follower lagging by less than the
    /// tail then catches up from the log instead of receiving the whole
    /// snapshot. The price: one serialized snapshot is held in memory until
    /// then (bounded in time by the ticks), and a restart replays up to
    /// `snapshot_keep_entries` more entries.
    fn maybe_snapshot(&mut self) -> Result<(), Stop> {
        if let Some(pending) = &self.pending_snapshot {
            let index = pending.snapshot.meta.last_index;
            let due = self.applied >= index.saturating_add(self.cfg.snapshot_keep_entries)
                || self.ticks.saturating_sub(pending.taken_at_tick)
                    >= self.cfg.snapshot_keep_ticks_max;
            if due && !self.compacting {
                if let Some(p) = self.pending_snapshot.take() {
                    self.send_compaction(p.snapshot)?;
                }
            }
            // One snapshot at a time: the next is taken after this one.
            return Ok(());
        }
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
        if self.writer_tx.is_none() {
            return Ok(());
        }
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
            keep_entries = self.cfg.snapshot_keep_entries,
            "taking snapshot"
        );
        self.snapshot_index = self.applied;
        self.applied_bytes_since_snapshot = 0;
        if self.cfg.snapshot_keep_entries == 0 {
            self.send_compaction(snapshot)
        } else {
            self.pending_snapshot = Some(PendingSnapshot {
                snapshot,
                taken_at_tick: self.ticks,
            });
            Ok(())
        }
    }

    fn send_compaction(&mut self, snapshot: Snapshot) -> Result<(), Stop> {
        let Some(tx) = &self.writer_tx else {
            return Ok(());
        };
        debug!(
            index = snapshot.meta.last_index,
            applied = self.applied,
            "compacting the log"
        );
        if tx.try_send(WriteOp::Compact(snapshot)).is_err() {
            return Err(Stop::Fatal("writer thread stopped".into()));
        }
        self.compacting = true;
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
        self.transport.closed().await;
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

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use raft_core::{InitialState, StorageError};

    use super::*;
    use crate::storage::MemStore;

    fn entry(index: LogIndex) -> Entry {
        Entry {
            term: 1,
            index,
            payload: EntryPayload::Normal(Bytes::from_static(b"x")),
        }
    }

    fn hs(term: Term, vote: Option<u64>, commit: LogIndex) -> HardState {
        HardState { term, vote, commit }
    }

    /// One `write` call: snapshot index, entry indexes, hard state.
    type Recorded = (Option<LogIndex>, Vec<LogIndex>, Option<HardState>);

    /// Records each `write` call.
    #[derive(Default)]
    struct Recorder {
        store: MemStore,
        writes: Mutex<Vec<Recorded>>,
    }

    impl LogStore for Recorder {
        fn initial_state(&self) -> Result<InitialState, StorageError> {
            self.store.initial_state()
        }
        fn first_index(&self) -> LogIndex {
            self.store.first_index()
        }
        fn last_index(&self) -> LogIndex {
            self.store.last_index()
        }
        fn term(&self, index: LogIndex) -> Result<Term, StorageError> {
            self.store.term(index)
        }
        fn entries(
            &self,
            lo: LogIndex,
            hi: LogIndex,
            max: u64,
        ) -> Result<Vec<Entry>, StorageError> {
            self.store.entries(lo, hi, max)
        }
        fn snapshot(&self) -> Result<Snapshot, StorageError> {
            self.store.snapshot()
        }
    }

    impl RaftStorage for Recorder {
        fn write(&self, parts: WriteParts<'_>) -> Result<(), StorageFailure> {
            self.writes.lock().unwrap().push((
                parts.snapshot.map(|s| s.meta.last_index),
                parts.entries.iter().map(|e| e.index).collect(),
                parts.hard_state,
            ));
            Ok(())
        }
        fn sync(&self) -> Result<(), StorageFailure> {
            Ok(())
        }
        fn compact(&self, _: Snapshot) -> Result<(), StorageFailure> {
            Ok(())
        }
    }

    fn batch(
        snapshot: Option<LogIndex>,
        entries: &[LogIndex],
        hard_state: Option<HardState>,
    ) -> WriteBatch {
        WriteBatch {
            number: 0,
            snapshot: snapshot.map(|i| Snapshot {
                meta: SnapshotMeta {
                    last_index: i,
                    last_term: 1,
                    membership: Membership::new_voters([1]),
                },
                data: Bytes::new(),
            }),
            entries: entries.iter().map(|&i| entry(i)).collect(),
            hard_state,
            sync: true,
        }
    }

    #[test]
    fn consecutive_readies_fold_into_one_write_in_order() {
        let r = Recorder::default();
        let mut m = Merged::default();
        m.add(batch(None, &[1, 2], Some(hs(1, Some(1), 0))), &r)
            .unwrap();
        m.add(batch(None, &[], Some(hs(1, Some(1), 2))), &r)
            .unwrap();
        m.add(batch(None, &[3], None), &r).unwrap();
        m.add(batch(None, &[4, 5], Some(hs(1, Some(1), 3))), &r)
            .unwrap();
        assert!(
            r.writes.lock().unwrap().is_empty(),
            "nothing written before flush"
        );
        m.flush(&r).unwrap();
        m.flush(&r).unwrap(); // nothing left: no empty write
        assert_eq!(
            *r.writes.lock().unwrap(),
            vec![(None, vec![1, 2, 3, 4, 5], Some(hs(1, Some(1), 3)))]
        );
    }

    #[test]
    fn a_replaced_suffix_or_a_snapshot_starts_a_new_write() {
        let r = Recorder::default();
        let mut m = Merged::default();
        m.add(batch(None, &[4, 5, 6], None), &r).unwrap();
        // A conflicting suffix from index 5: the earlier write goes first.
        m.add(batch(None, &[5], Some(hs(2, None, 4))), &r).unwrap();
        // A snapshot from the leader: written separately, in order.
        m.add(batch(Some(10), &[], Some(hs(2, None, 10))), &r)
            .unwrap();
        m.add(batch(None, &[11], None), &r).unwrap();
        m.flush(&r).unwrap();
        assert_eq!(
            *r.writes.lock().unwrap(),
            vec![
                (None, vec![4, 5, 6], None),
                (None, vec![5], Some(hs(2, None, 4))),
                (Some(10), vec![11], Some(hs(2, None, 10))),
            ]
        );
    }
}
