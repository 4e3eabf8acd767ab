//! The driver task: the tokio shell around a [`raft_host::NodeHost`]. It
//! takes inputs from the clock, the transport, the handles and the writer
//! thread, feeds them to the host, and carries out the host's outputs:
//! messages to the transport, writes to the writer thread (or done on this
//! task when that is cheaper), answers to the callers' channels. The order
//! that makes it safe is the host's contract (crates/raft-host/src/lib.rs);
//! nothing here decides durability or acknowledgement.

use std::sync::{mpsc as std_mpsc, Arc};
use std::time::Instant;

use raft_core::{LogIndex, Role, SoftState};
use raft_host::{Caller, Event, HostCounters, Merger, NodeHost, WriteBatch, WriteOp};
use tokio::sync::{mpsc, oneshot};
use tracing::{error, info, warn, Instrument};

use crate::config::RuntimeConfig;
use crate::error::*;
use crate::handle::*;
use crate::metrics::Metrics;
use crate::storage::RaftStorage;
use crate::transport::{Inbound, IncomingSnapshot, Transport};

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

/// What the writer thread (and the checkpoint and snapshot-stream tasks)
/// report back.
pub(crate) enum WriterEvent {
    /// Every write up to Ready `number` is durable.
    Persisted { number: u64 },
    /// The log is compacted up to `index`.
    Compacted { index: LogIndex },
    /// A storage call failed; the writer has stopped.
    Failed(String),
    /// The state machine's checkpoint is done (the durable applied index)
    /// or failed.
    Checkpointed(Result<LogIndex, String>),
    /// The snapshot stream to `to` ended (sent, or failed and logged).
    /// (`complete`: its last frame was written.)
    SnapshotSent {
        to: raft_core::NodeId,
        complete: bool,
    },
    /// A streamed snapshot is durable beside the live state: the leader's
    /// message, its data the sink's descriptor.
    SnapshotReceived(raft_core::Message),
    /// An incoming snapshot stream failed (logged).
    ReceiveEnded,
}

/// How long a received snapshot may wait for the engine to install it
/// before another stream may replace it (the engine refused it, e.g. a
/// newer leader had already caught this node up).
const STAGED_SNAPSHOT_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// A proposal's or membership change's caller, waiting on its channel.
enum ProposalCaller<R> {
    Propose {
        reply: oneshot::Sender<Result<R, ProposeError>>,
        start: Instant,
    },
    Membership {
        reply: oneshot::Sender<Result<LogIndex, MembershipError>>,
    },
}

impl<R> Caller for ProposalCaller<R> {
    fn is_gone(&self) -> bool {
        match self {
            ProposalCaller::Propose { reply, .. } => reply.is_closed(),
            ProposalCaller::Membership { reply } => reply.is_closed(),
        }
    }
}

/// A read's caller.
struct ReadCaller(oneshot::Sender<Result<(), ReadError>>);

impl Caller for ReadCaller {
    fn is_gone(&self) -> bool {
        self.0.is_closed()
    }
}

/// The proposal error a membership caller sees for a failed change.
fn membership_error(e: ProposeError) -> MembershipError {
    match e {
        ProposeError::Dropped => MembershipError::Dropped,
        ProposeError::ShuttingDown => MembershipError::ShuttingDown,
        ProposeError::Fatal(f) => MembershipError::Fatal(f),
        // Indeterminate (a snapshot covered it) and anything else: unknown.
        _ => MembershipError::Timeout,
    }
}

/// The metric label of a proposal error.
fn propose_reason(e: &ProposeError) -> &'static str {
    match e {
        ProposeError::NotLeader { .. } => "not_leader",
        ProposeError::TransferInProgress { .. } => "transfer",
        ProposeError::TooLarge { .. } => "too_large",
        ProposeError::Backpressure => "backpressure",
        ProposeError::Dropped => "dropped",
        ProposeError::Indeterminate => "indeterminate",
        ProposeError::Timeout => "timeout",
        ProposeError::ShuttingDown => "shutting_down",
        ProposeError::Fatal(_) => "storage",
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
        Stop::Fatal(e.0)
    }
}

/// One input, taken by the select in `run`.
enum Input<R> {
    Writer(WriterEvent),
    Tick,
    Peer(raft_core::Message),
    Propose(Proposal<R>),
    Read(ReadRequest),
    Admin(AdminRequest),
    Snapshot(IncomingSnapshot),
}

struct Receivers<R> {
    events: mpsc::UnboundedReceiver<WriterEvent>,
    inbound: Inbound,
    proposals: mpsc::Receiver<Proposal<R>>,
    reads: mpsc::Receiver<ReadRequest>,
    admin: mpsc::Receiver<AdminRequest>,
    /// Snapshot streams from peers (transports that stream them).
    incoming_snapshots: Option<mpsc::Receiver<IncomingSnapshot>>,
}

type Host<St, SM> =
    NodeHost<Arc<St>, SM, ProposalCaller<<SM as raft_core::StateMachine>::Response>, ReadCaller>;

struct Driver<St: RaftStorage, SM: raft_core::StateMachine, T: Transport> {
    cfg: RuntimeConfig,
    /// Origin of the engine's clock readings.
    clock_origin: Instant,
    host: Host<St, SM>,
    /// The same store the engine reads, for writes done on this task.
    storage: Arc<St>,
    transport: T,
    metrics: Metrics,
    shared: Arc<Shared>,
    writer_tx: Option<std_mpsc::SyncSender<WriteOp>>,
    writer_thread: Option<std::thread::JoinHandle<()>>,
    /// Counts already added to the metrics.
    counters: raft_core::Counters,
    host_counters: HostCounters,
    /// For the checkpoint and snapshot-stream tasks' reports.
    events_tx: mpsc::UnboundedSender<WriterEvent>,
    /// Peers a snapshot is being streamed to (one stream per peer).
    streams_out: std::collections::BTreeSet<raft_core::NodeId>,
    /// When a whole stream last went to each peer: the follower needs a
    /// while to finish writing and install it, and refuses new streams
    /// meanwhile, so the engine's resends wait `STAGED_SNAPSHOT_WAIT`
    /// instead of each opening a stream to be refused.
    streams_sent: std::collections::BTreeMap<raft_core::NodeId, Instant>,
    /// An incoming stream is being received.
    receiving: bool,
    /// A received snapshot handed to the host, with when, and the host's
    /// install count then: no other stream is taken until it is installed
    /// or `STAGED_SNAPSHOT_WAIT` passed (the sink keeps one received state).
    staged: Option<(Instant, u64)>,
    /// Proposals accepted by the last turn that accepted any (see `turn`).
    last_batch_proposals: usize,
}

/// Starts a node: opens a [`NodeHost`] over `storage` (restoring the state
/// machine from the latest snapshot; the engine hands out the rest of the
/// log for replay, so nothing is applied twice), spawns the writer thread
/// and the driver task. Must be called inside a tokio runtime.
///
/// `state_machine` must be fresh (applied index 0): it is restored here.
pub fn start<SM, St, T>(
    cfg: RuntimeConfig,
    storage: Arc<St>,
    state_machine: SM,
    transport: T,
    inbound: Inbound,
    metrics: Metrics,
) -> Result<RaftHandle<SM>, StartError>
where
    SM: raft_core::StateMachine + Send + Sync + 'static,
    SM::Response: Send + 'static,
    St: RaftStorage,
    T: Transport,
{
    cfg.validate()?;
    let id = cfg.id();
    let host: Host<St, SM> = NodeHost::open(cfg.host_config(), storage.clone(), state_machine)?;
    let soft = host.soft_state();
    let s = host.status();
    info!(
        node = id,
        term = soft.term,
        commit = s.commit_index,
        snapshot_index = s.snapshot_index,
        last_index = s.last_index,
        "raft node starting"
    );

    // Writer queue: at most `inflight_writes_max` writes plus one
    // compaction are ever queued, so `try_send` into it cannot fail on a
    // full queue.
    let (writer_tx, writer_rx) = std_mpsc::sync_channel(cfg.inflight_writes_max + 1);
    // Unbounded, but bounded in practice: one event per write group and
    // compaction, and those are bounded by the writer queue above.
    let (events_tx, events_rx) = mpsc::unbounded_channel();
    let task_events = events_tx.clone();
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
        sm: host.state_machine().clone(),
        metrics: metrics.clone(),
        shared: shared.clone(),
        propose_timeout: cfg.propose_timeout,
        read_timeout: cfg.read_timeout,
        admin_timeout: cfg.admin_timeout,
    };
    let mut transport = transport;
    let incoming_snapshots = transport.take_incoming_snapshots();
    let driver = Driver {
        events_tx: task_events,
        streams_out: Default::default(),
        streams_sent: Default::default(),
        receiving: false,
        staged: None,
        counters: host.raft().counters().clone(),
        host_counters: host.counters().clone(),
        host,
        clock_origin: Instant::now(),
        storage,
        transport,
        metrics,
        shared,
        writer_tx: Some(writer_tx),
        writer_thread: Some(writer_thread),
        cfg,
        last_batch_proposals: 0,
    };
    let rx = Receivers {
        events: events_rx,
        inbound,
        proposals: prop_rx,
        reads: read_rx,
        admin: admin_rx,
        incoming_snapshots,
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
/// when that changes nothing (see [`raft_host::merge`]): one `pwrite` instead of one
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
        let mut merged = Merger::default();
        let mut write = |parts: raft_host::WriteParts<'_>| storage.write(parts);
        for op in ops {
            match op {
                WriteOp::Write(b) => {
                    last_number = Some(b.number);
                    if b.is_empty() {
                        continue; // only ordering its persisted messages
                    }
                    must_sync |= b.sync;
                    wrote = true;
                    metrics.readies_written.inc();
                    if let Err(e) = merged.add(b, &mut write) {
                        return fail(e);
                    }
                }
                WriteOp::Compact(s) => compactions.push(s),
                // Checkpoints run on their own task, never on this thread:
                // a flush of the state machine must not hold up the log.
                WriteOp::Checkpoint => {}
            }
        }
        if let Err(e) = merged.flush(&mut write) {
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

impl<St, SM, T> Driver<St, SM, T>
where
    St: RaftStorage,
    SM: raft_core::StateMachine + Send + Sync + 'static,
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
                Some(s) = async {
                    match &mut rx.incoming_snapshots {
                        Some(r) => r.recv().await,
                        None => std::future::pending().await,
                    }
                } => Input::Snapshot(s),
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
    /// else already queued, then the host's outputs.
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
    /// the driver), far below an fsync; a lone caller (nothing else in
    /// flight, last batch of one) gets no yield at all, its Ready goes at
    /// once. Readies are never held back
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
        self.host.observe_clock(self.clock_nanos());
        self.handle_input(input, rx, &mut budget)?;
        self.drain(rx, &mut budget)?;
        // A lone caller (its proposal is the only one waiting, and the last
        // batch held one too) has nobody to share the Ready with: a yield
        // would only cost a trip through the scheduler (a poll of the I/O
        // driver, a syscall) per write. Other proposals in flight, or a
        // last batch of several, mean concurrent callers: worth waiting for.
        let concurrent = budget.proposals_accepted > 0
            && (self.host.pending_proposals() > budget.proposals_accepted
                || self.last_batch_proposals > 1);
        let mut yields = 0;
        while concurrent
            && budget.proposals_accepted > 0
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
        if budget.proposals_accepted > 0 {
            self.last_batch_proposals = budget.proposals_accepted;
        }
        self.carry_out()
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
            self.host.handle_message(m)?;
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
            Input::Tick => self.host.handle_tick(),
            Input::Peer(m) => {
                budget.inbound_left -= 1;
                self.host.handle_message(m)?;
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
            Input::Snapshot(s) => self.on_incoming_snapshot(s),
        }
        Ok(())
    }

    /// Hands one proposal to the host; true if it was appended.
    fn on_propose(&mut self, p: Proposal<SM::Response>) -> bool {
        let caller = ProposalCaller::Propose {
            reply: p.reply,
            start: p.start,
        };
        match self.host.handle_propose(p.data, caller) {
            Ok(_) => {
                self.metrics.proposals.inc();
                true
            }
            Err((caller, err)) => {
                self.answer_failed(caller, err);
                false
            }
        }
    }

    fn on_read(&mut self, r: ReadRequest) {
        // Read the clock now, after the read arrived: a lease checked
        // against an older reading could outlive a pause.
        let now = self.clock_nanos();
        if let Err((caller, err)) = self
            .host
            .handle_read(r.consistency, ReadCaller(r.reply), now)
        {
            let _ = caller.0.send(Err(err));
        }
    }

    fn on_admin(&mut self, a: AdminRequest) -> Result<(), Stop> {
        match a {
            AdminRequest::ChangeMembership(changes, reply) => {
                let caller = ProposalCaller::Membership { reply };
                if let Err((ProposalCaller::Membership { reply }, err)) =
                    self.host.handle_change_membership(&changes, caller)
                {
                    let _ = reply.send(Err(err));
                }
            }
            AdminRequest::Transfer(to, reply) => {
                let _ = reply.send(self.host.handle_transfer(to));
            }
            AdminRequest::Status(reply) => {
                let _ = reply.send(self.host.status());
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
        // A storage failure met while handling the request is fatal.
        match self.host.fatal_error() {
            Some(f) => Err(Stop::Fatal(f.to_string())),
            None => Ok(()),
        }
    }

    fn on_writer_event(&mut self, ev: WriterEvent) -> Result<(), Stop> {
        match ev {
            WriterEvent::Persisted { number } => self.host.handle_durable(number)?,
            WriterEvent::Compacted { index } => self.host.handle_compacted(index),
            WriterEvent::Failed(reason) => return Err(Stop::Fatal(reason)),
            WriterEvent::Checkpointed(result) => {
                if let Ok(index) = &result {
                    self.metrics.checkpoints.inc();
                    tracing::debug!(index, "checkpoint done");
                }
                self.host.handle_checkpointed(result)?;
            }
            WriterEvent::SnapshotSent { to, complete } => {
                self.streams_out.remove(&to);
                if complete {
                    self.streams_sent.insert(to, Instant::now());
                }
            }
            WriterEvent::SnapshotReceived(m) => {
                self.receiving = false;
                self.staged = Some((Instant::now(), self.host.counters().snapshots_installed));
                self.host.handle_snapshot_received(m)?;
            }
            WriterEvent::ReceiveEnded => self.receiving = false,
        }
        Ok(())
    }

    /// Takes a snapshot stream from a peer, unless one is being received or
    /// a received one waits to be installed (its sink holds one received
    /// state at a time). A refused stream is dropped: the sender sees it
    /// closed, and the leader retries.
    fn on_incoming_snapshot(&mut self, s: IncomingSnapshot) {
        if let Some((at, installs)) = self.staged {
            if self.host.counters().snapshots_installed > installs
                || at.elapsed() >= STAGED_SNAPSHOT_WAIT
            {
                self.staged = None;
            }
        }
        if self.receiving || self.staged.is_some() {
            tracing::debug!(peer = s.from, "snapshot stream refused: one is in progress");
            return;
        }
        self.receiving = true;
        crate::stream::spawn_receiver(self.host.state_machine().clone(), s, self.events_tx.clone());
    }

    /// Starts streaming a snapshot to `m.to` unless one is already going.
    fn start_snapshot_stream(&mut self, m: raft_core::Message) {
        if !self.transport.streams_snapshots() {
            warn!(
                peer = m.to,
                "a follower needs a snapshot but this transport cannot stream one"
            );
            return;
        }
        if self
            .streams_sent
            .get(&m.to)
            .is_some_and(|at| at.elapsed() < STAGED_SNAPSHOT_WAIT)
        {
            return; // the follower is still installing the last one
        }
        if !self.streams_out.insert(m.to) {
            return; // the engine's resend while a stream runs
        }
        let to = m.to;
        let frames = crate::stream::spawn_sender(
            self.host.state_machine().clone(),
            m,
            self.events_tx.clone(),
        );
        self.transport.send_snapshot(to, frames);
    }

    /// Runs the state machine's checkpoint on the blocking pool, under the
    /// read lock (reads go on; the host applies nothing until it reports).
    fn start_checkpoint(&mut self) {
        let sm = self.host.state_machine().clone();
        let events = self.events_tx.clone();
        let seconds = self.metrics.checkpoint_seconds.clone();
        tokio::task::spawn_blocking(move || {
            let started = Instant::now();
            let result = sm
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .checkpoint()
                .map_err(|e| e.to_string());
            let elapsed = started.elapsed();
            if result.is_ok() {
                seconds.observe(elapsed.as_secs_f64());
            }
            tracing::debug!(elapsed_ms = elapsed.as_millis() as u64, "checkpoint");
            let _ = events.send(WriterEvent::Checkpointed(result));
        });
    }

    /// Carries out what the inputs produced: the host's Readies become
    /// messages on the transport, writes (on the writer thread, or here
    /// when that is cheaper: see `try_write_inline`) and answers to
    /// callers. A write done here is durable at once, which can release
    /// more output: loop until none is.
    fn carry_out(&mut self) -> Result<(), Stop> {
        loop {
            self.host.process()?;
            for m in self.host.drain_transmits() {
                self.transport.send(m);
            }
            while let Some(m) = self.host.poll_snapshot_send() {
                self.start_snapshot_stream(m);
            }
            let mut wrote_inline = false;
            while let Some(op) = self.host.poll_write() {
                match op {
                    WriteOp::Write(b) => {
                        if self.try_write_inline(&b)? {
                            self.host.handle_durable(b.number)?;
                            wrote_inline = true;
                        } else {
                            self.hand_to_writer(WriteOp::Write(b))?;
                        }
                    }
                    op @ WriteOp::Compact(_) => self.hand_to_writer(op)?,
                    WriteOp::Checkpoint => self.start_checkpoint(),
                }
            }
            self.deliver_events();
            if !wrote_inline {
                break;
            }
        }
        self.sync_counters();
        Ok(())
    }

    fn hand_to_writer(&mut self, op: WriteOp) -> Result<(), Stop> {
        let Some(tx) = &self.writer_tx else {
            return Err(Stop::Fatal("writer thread stopped".into()));
        };
        if tx.try_send(op).is_err() {
            // Full cannot happen (see the queue's capacity); so the writer
            // died and its Failed event is on its way.
            return Err(Stop::Fatal("writer thread stopped".into()));
        }
        Ok(())
    }

    /// Writes one Ready on this task instead of the writer thread, when
    /// that is cheaper and keeps the order: nothing else is in flight at
    /// the writer (so this write cannot overtake one), no compaction runs,
    /// and the write needs no fsync (a commit-index-only Ready) or the
    /// store's fsync is a no-op. Then it is durable (or needs not be) on
    /// return: no hand-over to the writer thread and no wake-up back, which
    /// at low load was most of the runtime's CPU per write (issue 10).
    fn try_write_inline(&mut self, b: &WriteBatch) -> Result<bool, Stop> {
        let cheap = !b.sync || self.storage.sync_is_noop();
        // `inflight_writes` counts this write too.
        if !cheap || self.host.inflight_writes() > 1 || self.host.is_compacting() {
            return Ok(false);
        }
        if !b.is_empty() {
            self.storage.write(raft_host::WriteParts {
                snapshot: b.snapshot.as_ref(),
                entries: &b.entries,
                hard_state: b.hard_state,
            })?;
            self.metrics.readies_written.inc();
            if b.sync {
                self.storage.sync()?;
                self.metrics.syncs.inc();
            } else {
                self.metrics.syncs_skipped.inc();
            }
        }
        Ok(true)
    }

    /// Answers callers and publishes role changes.
    fn deliver_events(&mut self) {
        while let Some(ev) = self.host.poll_event() {
            match ev {
                Event::Applied {
                    caller,
                    index,
                    response,
                    ..
                } => match caller {
                    ProposalCaller::Propose { reply, start } => {
                        self.metrics
                            .commit_latency_seconds
                            .observe(start.elapsed().as_secs_f64());
                        let _ = reply.send(Ok(response));
                    }
                    ProposalCaller::Membership { reply } => {
                        let _ = reply.send(Ok(index));
                    }
                },
                Event::ProposalFailed { caller, error } => self.answer_failed(caller, error),
                Event::ReadReady { caller, .. } => {
                    let _ = caller.0.send(Ok(()));
                }
                Event::ReadFailed { caller, error } => {
                    let _ = caller.0.send(Err(error));
                }
                Event::SoftState(ss) => self.on_soft_state(ss),
            }
        }
    }

    fn answer_failed(&self, caller: ProposalCaller<SM::Response>, err: ProposeError) {
        match caller {
            ProposalCaller::Propose { reply, .. } => {
                self.metrics.proposal_failed(propose_reason(&err));
                let _ = reply.send(Err(err));
            }
            ProposalCaller::Membership { reply } => {
                let _ = reply.send(Err(membership_error(err)));
            }
        }
    }

    fn on_soft_state(&mut self, ss: SoftState) {
        let old = *self.shared.leader.borrow();
        if ss.term != old.term {
            self.metrics.term.set(ss.term as i64);
        }
        if ss.leader != old.leader {
            self.metrics.leader_changes.inc();
        }
        if ss.role != old.role {
            self.metrics
                .is_leader
                .set(i64::from(ss.role == Role::Leader));
        }
        self.shared.leader.send_replace(LeaderInfo {
            role: ss.role,
            term: ss.term,
            leader: ss.leader,
        });
    }

    /// Adds what the engine and the host counted since last time to the
    /// metrics.
    fn sync_counters(&mut self) {
        let c = self.host.raft().counters();
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
        if c != &self.counters {
            self.counters = c.clone();
        }
        let h = self.host.counters();
        let old = &self.host_counters;
        if h != old {
            let m = &self.metrics;
            m.entries_committed
                .inc_by(h.entries_committed - old.entries_committed);
            m.entries_applied
                .inc_by(h.entries_applied - old.entries_applied);
            m.snapshots_taken
                .inc_by(h.snapshots_taken - old.snapshots_taken);
            m.snapshots_installed
                .inc_by(h.snapshots_installed - old.snapshots_installed);
            m.membership_changes
                .inc_by(h.membership_changes - old.membership_changes);
            self.host_counters = h.clone();
        }
    }

    fn stop_fatal(&mut self, reason: String) {
        error!(%reason, "raft node stopped on a fatal error");
        *self.shared.fatal.lock().unwrap_or_else(|e| e.into_inner()) = Some(reason.clone());
        self.host.shut_down(Some(reason));
        self.deliver_events();
        self.transport.shutdown();
        // Nothing else is written: the writer exits when its queue closes.
        self.writer_tx = None;
    }

    async fn stop_graceful(&mut self) {
        info!("raft node shutting down");
        self.host.shut_down(None);
        self.deliver_events();
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
