//! [`NodeHost`]: one raft-core node with everything between the engine and
//! the outside world that decides durability and acknowledgement. The
//! contract is in the crate docs.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, RwLock, RwLockWriteGuard};

use bytes::Bytes;
use raft_core::{
    Entry, EntryPayload, HardState, LogIndex, LogStore, Membership, MembershipChange, Message,
    MessageBody, Nanos, NodeId, ProposalId, RawNode, Ready, Role, Snapshot, SnapshotMeta,
    SoftState, StateMachine, StepError, Term,
};
use tracing::{debug, info};

use crate::config::HostConfig;
use crate::error::*;
use crate::status::{NodeStatus, PeerProgress};

/// Every this many ticks, forget waiters whose caller gave up.
const PRUNE_INTERVAL_TICKS: u64 = 10;

/// Someone waiting for an answer: a proposal's or a read's caller. The host
/// keeps it until it answers with an [`Event`], and hands it back.
pub trait Caller {
    /// True once the caller stopped waiting (its request timed out): the
    /// host may forget it, so abandoned requests (e.g. on a leader that
    /// lost its quorum) do not fill the tables. Never true by default.
    fn is_gone(&self) -> bool {
        false
    }
}

impl Caller for () {}
impl Caller for u64 {}

/// Work for the shell's disk, in the order handed out.
#[derive(Debug)]
pub enum WriteOp {
    /// Write one Ready's state; report it with
    /// [`NodeHost::handle_durable`] once it (and every earlier write) is
    /// durable.
    Write(WriteBatch),
    /// Record this application snapshot (taken at `meta.last_index`, an
    /// index already durable in the log) and discard the log up to it;
    /// report with [`NodeHost::handle_compacted`]. Only after every write
    /// handed out before it.
    Compact(Snapshot),
    /// Durable state machines: call `StateMachine::checkpoint` (under the
    /// state machine's read lock, off the host's thread: it may flush and
    /// fsync for a while) and report with [`NodeHost::handle_checkpointed`].
    /// The host applies nothing until then.
    Checkpoint,
}

/// Most bytes of committed entries the host queues while a checkpoint runs;
/// past it, it takes no more Readies until the checkpoint is done (so a
/// slow disk slows the node instead of growing memory).
const APPLY_QUEUE_BYTES_MAX: u64 = 64 << 20;

/// How many `snapshot_keep_ticks_max` windows a due compaction may wait
/// for a follower catching up by snapshot (see `maybe_snapshot`): bounds
/// the log's growth when a follower never finishes.
const SNAPSHOT_CATCH_UP_WAIT_FACTOR: u64 = 20;

/// The writes of one Ready: snapshot, then entries, then hard state.
#[derive(Clone, Debug)]
pub struct WriteBatch {
    /// The Ready's number: what [`NodeHost::handle_durable`] reports.
    pub number: u64,
    /// A snapshot from the leader: install it, replacing the log it covers.
    pub snapshot: Option<Snapshot>,
    /// Entries to append; an entry at an index already stored replaces that
    /// entry and everything after it.
    pub entries: Vec<Entry>,
    /// The hard state to record (after the entries).
    pub hard_state: Option<HardState>,
    /// Whether this write must be fsynced before it counts as durable
    /// (`raft_core::Ready::must_sync`: false when its only change is a
    /// commit index advance, which nothing relies on being durable).
    pub sync: bool,
}

impl WriteBatch {
    /// True if there is nothing to write (the batch only orders the
    /// messages that wait for the writes before it).
    pub fn is_empty(&self) -> bool {
        self.snapshot.is_none() && self.entries.is_empty() && self.hard_state.is_none()
    }
}

/// An answer for a caller, or news for the shell.
#[derive(Debug)]
pub enum Event<R, P, Q> {
    /// The entry of a proposal (or membership change) was applied, with the
    /// state machine's response.
    Applied {
        caller: P,
        index: LogIndex,
        term: Term,
        response: R,
    },
    /// A proposal (or membership change) the engine accepted will not be
    /// answered with `Applied`: `Dropped` (certainly not applied),
    /// `Indeterminate` (a snapshot covered it), `ShuttingDown` or `Fatal`.
    ProposalFailed { caller: P, error: ProposeError },
    /// The read may be served now from the state machine: it has applied
    /// `index`, the read point.
    ReadReady { caller: Q, index: LogIndex },
    /// The read cannot be served (`Dropped`: leadership changed before it
    /// was confirmed; `ShuttingDown`, `Fatal`).
    ReadFailed { caller: Q, error: ReadError },
    /// Role, term or known leader changed.
    SoftState(SoftState),
}

/// How a read was registered by [`NodeHost::handle_read`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadPath {
    /// Answered at once from whatever is applied.
    Stale,
    /// Confirmed by the leader's lease (in `term`), no round trip.
    Lease { term: Term },
    /// Waiting for a ReadIndex round.
    Quorum,
}

/// Cumulative counts for the shell's metrics.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HostCounters {
    pub entries_committed: u64,
    pub entries_applied: u64,
    pub snapshots_taken: u64,
    pub snapshots_installed: u64,
    pub membership_changes: u64,
}

/// A write handed out, waiting for durability.
struct InFlight {
    number: u64,
    snapshot: Option<Snapshot>,
    persisted_messages: Vec<Message>,
}

/// A snapshot taken, not yet handed out for compaction.
struct PendingSnapshot {
    snapshot: Snapshot,
    taken_at_tick: u64,
}

/// A caller waiting for the entry at some index.
struct Waiter<P> {
    term: Term,
    caller: P,
}

/// One raft-core node hosted: see the crate docs for the contract.
pub struct NodeHost<S: LogStore, SM: StateMachine, P: Caller, Q: Caller> {
    cfg: HostConfig,
    node: RawNode<S>,
    sm: Arc<RwLock<SM>>,
    /// Outputs, in the order produced.
    transmits: VecDeque<Message>,
    writes: VecDeque<WriteOp>,
    events: VecDeque<Event<SM::Response, P, Q>>,
    /// Writes handed out (or queued in `writes`) and not yet durable.
    inflight: VecDeque<InFlight>,
    waiters: BTreeMap<LogIndex, Waiter<P>>,
    next_read_ctx: u64,
    /// Reads waiting for the engine to confirm a read index, by context.
    reads_unconfirmed: HashMap<u64, Q>,
    /// Confirmed reads waiting for `applied >= index`.
    reads_waiting: BTreeMap<LogIndex, Vec<Q>>,
    reads_waiting_count: usize,
    /// The state machine's applied index, the term of that entry, and the
    /// configuration in force there (for snapshot metadata).
    applied: LogIndex,
    applied_term: Term,
    applied_membership: Membership,
    /// Index of the latest snapshot (taken or installed) and the bytes
    /// applied since, for the snapshot trigger.
    snapshot_index: LogIndex,
    applied_bytes_since_snapshot: u64,
    /// A compaction was handed out and not yet reported done.
    compacting: bool,
    /// A snapshot taken and held for `snapshot_keep_entries` more entries.
    pending_snapshot: Option<PendingSnapshot>,
    /// The state machine keeps its own state durable (see raft-core's
    /// `state_machine` docs): checkpoints instead of snapshots, and
    /// snapshots for followers are streamed by the shell.
    durable: bool,
    /// A checkpoint handed out and not yet reported: the metadata of the
    /// index it makes durable (the applied index when it was handed out).
    checkpointing: Option<SnapshotMeta>,
    /// Committed entries waiting for a checkpoint to finish, and their size.
    apply_queue: VecDeque<Entry>,
    apply_queue_bytes: u64,
    /// Durable state machines: snapshot messages the engine wants sent,
    /// for the shell to stream (see [`NodeHost::poll_snapshot_send`]).
    snapshot_sends: VecDeque<Message>,
    soft: SoftState,
    commit: LogIndex,
    ticks: u64,
    counters: HostCounters,
    /// Set on the first fatal error: every later input is refused with it.
    fatal: Option<String>,
    #[cfg(feature = "planted-bugs")]
    bugs: crate::bugs::HostBugs,
}

fn read_ctx(ctx: &Bytes) -> Option<u64> {
    let arr: [u8; 8] = ctx.as_ref().try_into().ok()?;
    Some(u64::from_be_bytes(arr))
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

impl<S, SM, P, Q> NodeHost<S, SM, P, Q>
where
    S: LogStore,
    SM: StateMachine,
    P: Caller,
    Q: Caller,
{
    /// Opens a node: restores the state machine from `storage`'s latest
    /// snapshot and starts the engine with `applied` = that snapshot's
    /// index (the engine hands out the rest of the committed log for
    /// replay, so nothing is applied twice).
    ///
    /// `state_machine` must be fresh (applied index 0): it is restored here.
    pub fn open(cfg: HostConfig, storage: S, mut state_machine: SM) -> Result<Self, OpenError> {
        let snapshot = storage.snapshot().map_err(StorageFailure::from)?;
        let snap_index = snapshot.meta.last_index;
        let durable = state_machine.durable_applied_index().is_some();
        let (applied, applied_term, applied_membership) = if durable {
            // The state machine holds its state as of its last checkpoint;
            // the log was compacted no further. The log is ahead only if a
            // snapshot from the leader was recorded and the crash came
            // before the state machine switched to it: switch now.
            if snap_index > state_machine.applied_index() {
                state_machine
                    .restore(&snapshot.data)
                    .map_err(|e| OpenError::Restore(e.to_string()))?;
            }
            let applied = state_machine.applied_index();
            if applied < snap_index || applied > storage.last_index().max(snap_index) {
                return Err(OpenError::StateMachineMismatch {
                    applied,
                    snapshot: snap_index,
                });
            }
            let (term, membership) = state_machine.applied_meta();
            // No membership entry applied: the snapshot's (which, with no
            // snapshot, is the bootstrap configuration).
            let membership = membership.unwrap_or_else(|| snapshot.meta.membership.clone());
            (applied, term, membership)
        } else {
            if snap_index > 0 {
                state_machine
                    .restore(&snapshot.data)
                    .map_err(|e| OpenError::Restore(e.to_string()))?;
            }
            let applied = state_machine.applied_index();
            if applied != snap_index {
                return Err(OpenError::StateMachineMismatch {
                    applied,
                    snapshot: snap_index,
                });
            }
            (
                applied,
                snapshot.meta.last_term,
                snapshot.meta.membership.clone(),
            )
        };
        let mut raft_cfg = cfg.raft.clone();
        raft_cfg.applied = applied;
        let node = RawNode::new(raft_cfg, storage)?;
        let soft = node.soft_state();
        let commit = node.commit_index();
        Ok(NodeHost {
            node,
            sm: Arc::new(RwLock::new(state_machine)),
            transmits: VecDeque::new(),
            writes: VecDeque::new(),
            events: VecDeque::new(),
            inflight: VecDeque::new(),
            waiters: BTreeMap::new(),
            next_read_ctx: cfg.read_ctx_start,
            reads_unconfirmed: HashMap::new(),
            reads_waiting: BTreeMap::new(),
            reads_waiting_count: 0,
            applied,
            applied_term,
            applied_membership,
            // Durable: the trigger counts from the checkpoint.
            snapshot_index: applied,
            applied_bytes_since_snapshot: 0,
            compacting: false,
            pending_snapshot: None,
            durable,
            checkpointing: None,
            apply_queue: VecDeque::new(),
            apply_queue_bytes: 0,
            snapshot_sends: VecDeque::new(),
            soft,
            commit,
            ticks: 0,
            counters: HostCounters::default(),
            fatal: None,
            #[cfg(feature = "planted-bugs")]
            bugs: Default::default(),
            cfg,
        })
    }

    // ------------------------------------------------------------------
    // Inputs
    // ------------------------------------------------------------------

    /// A reading of the monotonic clock (see raft-core's
    /// `RawNode::observe_clock`). Call before each batch of inputs.
    pub fn observe_clock(&mut self, now: Nanos) {
        self.node.observe_clock(now);
    }

    /// One tick of logical time.
    pub fn handle_tick(&mut self) {
        self.node.tick();
        self.ticks += 1;
        if self.ticks.is_multiple_of(PRUNE_INTERVAL_TICKS) {
            self.prune_gone();
        }
    }

    /// A message from a peer. Bad messages are dropped (and counted by the
    /// engine); only a storage failure is an error, and it is fatal.
    pub fn handle_message(&mut self, m: Message) -> Result<(), StorageFailure> {
        self.check_fatal()?;
        if self.durable && matches!(m.body, MessageBody::SnapshotRequest(_)) {
            // With a durable state machine a snapshot's data travels beside
            // the message stream, and the message arrives through
            // `handle_snapshot_received` once the data is here. One on the
            // message stream carries no data to install: drop it.
            debug!(
                from = m.from,
                "snapshot message without streamed data dropped"
            );
            return Ok(());
        }
        self.step(m)
    }

    /// Steps `m` into the engine: a bad message is dropped (and counted by
    /// the engine); a storage failure is fatal.
    fn step(&mut self, m: Message) -> Result<(), StorageFailure> {
        let (from, kind) = (m.from, m.kind());
        match self.node.step(m) {
            Ok(()) => Ok(()),
            Err(StepError::Storage(e)) => Err(self.set_fatal(format!("engine storage read: {e}"))),
            Err(e) => {
                debug!(from, kind, error = %e, "message dropped");
                Ok(())
            }
        }
    }

    /// Proposes `data` for `caller`. On success the caller is answered
    /// later by [`Event::Applied`] or [`Event::ProposalFailed`]; on refusal
    /// nothing was appended and the caller comes back with the error.
    pub fn handle_propose(
        &mut self,
        data: Bytes,
        caller: P,
    ) -> Result<ProposalId, (P, ProposeError)> {
        if let Some(f) = &self.fatal {
            return Err((caller, ProposeError::Fatal(f.clone())));
        }
        if self.waiters.len() >= self.cfg.pending_proposals_max {
            return Err((caller, ProposeError::Backpressure));
        }
        match self.node.propose(data) {
            Ok(id) => {
                self.add_waiter(id, caller);
                Ok(id)
            }
            Err(e) => Err((
                caller,
                match e {
                    raft_core::ProposeError::NotLeader { leader_hint } => {
                        ProposeError::NotLeader { leader_hint }
                    }
                    raft_core::ProposeError::TransferInProgress { to } => {
                        ProposeError::TransferInProgress { to }
                    }
                    raft_core::ProposeError::TooLarge { bytes, max_bytes } => {
                        ProposeError::TooLarge { bytes, max_bytes }
                    }
                    raft_core::ProposeError::Backpressure => ProposeError::Backpressure,
                    raft_core::ProposeError::Storage(e) => {
                        ProposeError::Fatal(self.set_fatal(format!("engine storage read: {e}")).0)
                    }
                },
            )),
        }
    }

    /// Proposes a membership change for `caller`, answered like a proposal
    /// (the response is the state machine's for the membership entry).
    pub fn handle_change_membership(
        &mut self,
        changes: &[MembershipChange],
        caller: P,
    ) -> Result<ProposalId, (P, MembershipError)> {
        if let Some(f) = &self.fatal {
            return Err((caller, MembershipError::Fatal(f.clone())));
        }
        match self.node.change_membership(changes) {
            Ok(id) => {
                info!(
                    changes = %describe_changes(changes),
                    index = id.index,
                    "membership change proposed"
                );
                self.add_waiter(id, caller);
                Ok(id)
            }
            Err(e) => {
                use raft_core::MembershipError as E;
                let err = match e {
                    E::NotLeader { leader_hint } => MembershipError::NotLeader { leader_hint },
                    E::ChangeInProgress => MembershipError::ChangeInProgress,
                    E::Invalid(s) => MembershipError::Invalid(s.to_string()),
                    E::LearnerLagging { id, lag_entries } => {
                        MembershipError::LearnerLagging { id, lag_entries }
                    }
                    E::TransferInProgress => MembershipError::TransferInProgress,
                    E::Storage(e) => MembershipError::Fatal(
                        self.set_fatal(format!("engine storage read: {e}")).0,
                    ),
                };
                Err((caller, err))
            }
        }
    }

    /// Starts handing leadership to `to`.
    pub fn handle_transfer(&mut self, to: NodeId) -> Result<(), TransferError> {
        if let Some(f) = &self.fatal {
            return Err(TransferError::Fatal(f.clone()));
        }
        use raft_core::TransferError as E;
        match self.node.transfer_leadership(to) {
            Ok(()) => {
                info!(to, "leadership transfer started");
                Ok(())
            }
            Err(E::NotLeader { leader_hint }) => Err(TransferError::NotLeader { leader_hint }),
            Err(E::NotVoter(id)) => Err(TransferError::NotVoter(id)),
            Err(E::AlreadyLeader) => Err(TransferError::AlreadyLeader),
            Err(E::Storage(e)) => Err(TransferError::Fatal(
                self.set_fatal(format!("engine storage read: {e}")).0,
            )),
        }
    }

    /// Registers a read for `caller` at `consistency`; `now` must be read
    /// after the read arrived (a lease checked against an older reading
    /// could outlive a pause). Answered by [`Event::ReadReady`] or
    /// [`Event::ReadFailed`]; a refusal comes back at once.
    pub fn handle_read(
        &mut self,
        consistency: ReadConsistency,
        caller: Q,
        now: Nanos,
    ) -> Result<ReadPath, (Q, ReadError)> {
        if let Some(f) = &self.fatal {
            return Err((caller, ReadError::Fatal(f.clone())));
        }
        if consistency == ReadConsistency::Stale {
            self.events.push_back(Event::ReadReady {
                caller,
                index: self.applied,
            });
            return Ok(ReadPath::Stale);
        }
        if self.pending_reads() >= self.cfg.pending_reads_max {
            return Err((caller, ReadError::Backpressure));
        }
        let ctx = self.next_read_ctx;
        self.next_read_ctx = self.next_read_ctx.wrapping_add(1);
        let bytes = Bytes::copy_from_slice(&ctx.to_be_bytes());
        let mut path = ReadPath::Quorum;
        let res = match consistency {
            ReadConsistency::Lease => match self.node.lease_read(bytes.clone(), now) {
                // No valid lease (just elected, or woken from a pause past
                // it): confirm leadership with a heartbeat round instead.
                Err(raft_core::ReadError::NoLease) => self.node.read_index(bytes),
                Ok(()) => {
                    path = ReadPath::Lease {
                        term: self.node.term(),
                    };
                    Ok(())
                }
                res => res,
            },
            _ => self.node.read_index(bytes),
        };
        match res {
            Ok(()) => {
                self.reads_unconfirmed.insert(ctx, caller);
                Ok(path)
            }
            Err(e) => Err((
                caller,
                match e {
                    raft_core::ReadError::NoLeader => ReadError::NoLeader,
                    raft_core::ReadError::NotLeader { leader_hint } => {
                        ReadError::NotLeader { leader_hint }
                    }
                    raft_core::ReadError::Backpressure => ReadError::Backpressure,
                    // Only lease_read answers NoLease, and that became a
                    // ReadIndex above; were it ever to reach here, the read
                    // was simply not served: retry.
                    raft_core::ReadError::NoLease => ReadError::Dropped,
                },
            )),
        }
    }

    /// Every write up to Ready `number` is durable (synced where its
    /// `sync` asked for it): installs the snapshots they carried into the
    /// state machine, tells the engine, and releases the messages that
    /// promised them (votes, append acknowledgements) to
    /// [`poll_transmit`](Self::poll_transmit).
    pub fn handle_durable(&mut self, number: u64) -> Result<(), StorageFailure> {
        self.check_fatal()?;
        let mut msgs = Vec::new();
        while self.inflight.front().is_some_and(|f| f.number <= number) {
            let Some(f) = self.inflight.pop_front() else {
                break;
            };
            if let Some(snap) = f.snapshot {
                // Durable in storage now; restore the state machine before
                // telling the engine (which then counts it as applied).
                self.restore_snapshot(snap)?;
            }
            if msgs.is_empty() {
                msgs = f.persisted_messages;
            } else {
                msgs.extend(f.persisted_messages);
            }
        }
        if let Err(e) = self.node.on_persisted(number) {
            return Err(self.set_fatal(format!("engine storage read: {e}")));
        }
        // Only now: votes and acknowledgements promise what is durable.
        self.transmits.extend(msgs);
        Ok(())
    }

    /// Durable state machines: the shell received a streamed snapshot into
    /// the state machine's sink. `m` is the leader's snapshot message, its
    /// metadata set to what the stream covers and its data to the sink's
    /// descriptor (see raft-core's `SnapshotSink::finish`). The engine
    /// decides whether to install it, as for any snapshot message.
    pub fn handle_snapshot_received(&mut self, m: Message) -> Result<(), StorageFailure> {
        self.check_fatal()?;
        if !self.durable {
            debug!(
                from = m.from,
                "streamed snapshot for an in-memory state machine dropped"
            );
            return Ok(());
        }
        self.step(m)
    }

    /// The checkpoint handed out is done (`Ok(durable applied index)`) or
    /// failed (fatal: the state machine's disk cannot be trusted). Applying
    /// resumes; the log may be compacted up to the checkpoint once
    /// `snapshot_keep_entries` more entries are applied.
    pub fn handle_checkpointed(
        &mut self,
        result: Result<LogIndex, String>,
    ) -> Result<(), StorageFailure> {
        let Some(meta) = self.checkpointing.take() else {
            return Err(self.set_fatal("checkpoint reported with none handed out".into()));
        };
        let index = match result {
            Ok(index) => index,
            Err(e) => return Err(self.set_fatal(format!("state machine checkpoint failed: {e}"))),
        };
        if self.snapshot_index > meta.last_index {
            // A snapshot from the leader replaced the state meanwhile (its
            // install is durable and the log was reset to it): nothing to
            // compact for this checkpoint.
        } else if index != meta.last_index {
            return Err(self.set_fatal(format!(
                "state machine checkpointed index {index}, expected {}",
                meta.last_index
            )));
        } else {
            info!(index, "state machine checkpoint durable");
            // Compacted by `maybe_snapshot` once the keep policy allows. An
            // older one still waiting stays: it comes due first (replacing
            // it would restart the wait at every checkpoint, and with
            // checkpoints more frequent than the keep window nothing would
            // ever be compacted).
            if self.pending_snapshot.is_none() {
                self.pending_snapshot = Some(PendingSnapshot {
                    snapshot: Snapshot {
                        meta,
                        data: Bytes::new(),
                    },
                    taken_at_tick: self.ticks,
                });
            }
        }
        // Apply what waited for the checkpoint.
        let queued: Vec<Entry> = self.apply_queue.drain(..).collect();
        self.apply_queue_bytes = 0;
        self.apply(queued)
    }

    /// The compaction handed out last is done: the log starts after `index`.
    pub fn handle_compacted(&mut self, index: LogIndex) {
        self.compacting = false;
        self.counters.snapshots_taken += 1;
        info!(index, "log compacted after snapshot");
    }

    /// Takes the Readies the inputs produced (while fewer than
    /// `inflight_writes_max` writes are in flight), applies what committed,
    /// answers reads, and takes a snapshot when due. Call after every batch
    /// of inputs and after [`handle_durable`](Self::handle_durable), then
    /// drain the `poll_*` queues.
    pub fn process(&mut self) -> Result<(), StorageFailure> {
        self.check_fatal()?;
        while self.inflight.len() < self.cfg.inflight_writes_max
            && self.apply_queue_bytes < APPLY_QUEUE_BYTES_MAX
            && self.node.has_ready()
        {
            let rd = match self.node.ready() {
                Ok(rd) => rd,
                Err(e) => return Err(self.set_fatal(format!("engine storage read: {e}"))),
            };
            self.handle_ready(rd)?;
        }
        self.maybe_snapshot()
    }

    /// Stops the node: every caller still waiting is answered with
    /// `ShuttingDown` (or `Fatal(reason)`), through the event queue.
    pub fn shut_down(&mut self, fatal: Option<String>) {
        if let Some(f) = &fatal {
            self.fatal.get_or_insert_with(|| f.clone());
        }
        for (_, w) in std::mem::take(&mut self.waiters) {
            self.events.push_back(Event::ProposalFailed {
                caller: w.caller,
                error: match &fatal {
                    Some(f) => ProposeError::Fatal(f.clone()),
                    None => ProposeError::ShuttingDown,
                },
            });
        }
        let err = || match &fatal {
            Some(f) => ReadError::Fatal(f.clone()),
            None => ReadError::ShuttingDown,
        };
        for (_, caller) in self.reads_unconfirmed.drain() {
            self.events.push_back(Event::ReadFailed {
                caller,
                error: err(),
            });
        }
        for (_, v) in std::mem::take(&mut self.reads_waiting) {
            for caller in v {
                self.events.push_back(Event::ReadFailed {
                    caller,
                    error: err(),
                });
            }
        }
        self.reads_waiting_count = 0;
    }

    // ------------------------------------------------------------------
    // Outputs
    // ------------------------------------------------------------------

    /// The next message to send. Send every one, in order, at once: what
    /// needed durability was held back until `handle_durable`.
    pub fn poll_transmit(&mut self) -> Option<Message> {
        self.transmits.pop_front()
    }

    /// Every message to send (as `poll_transmit` one by one).
    pub fn drain_transmits(&mut self) -> std::collections::vec_deque::Drain<'_, Message> {
        self.transmits.drain(..)
    }

    /// The next disk operation, in the order they must be done.
    pub fn poll_write(&mut self) -> Option<WriteOp> {
        self.writes.pop_front()
    }

    /// Durable state machines: the next snapshot the engine wants sent to a
    /// follower. The shell streams the state machine's
    /// `snapshot_source()` to `m.to` beside the message stream, then
    /// delivers `m` with its metadata set to what the stream covers (the
    /// source's index, term and membership, falling back to `m`'s
    /// membership), and the receiver hands it to
    /// [`handle_snapshot_received`](Self::handle_snapshot_received). The
    /// engine resends while no answer comes: a shell streaming to `m.to`
    /// already ignores the repeats.
    pub fn poll_snapshot_send(&mut self) -> Option<Message> {
        self.snapshot_sends.pop_front()
    }

    /// The next answer or notice.
    pub fn poll_event(&mut self) -> Option<Event<SM::Response, P, Q>> {
        self.events.pop_front()
    }

    // ------------------------------------------------------------------
    // Inspection
    // ------------------------------------------------------------------

    /// The engine (read-only: inputs go through the host).
    pub fn raft(&self) -> &RawNode<S> {
        &self.node
    }

    /// The log store the engine reads. The shell writes to it (it is the
    /// shell's disk); through `&mut` only a shell that owns it exclusively
    /// (the simulator's in-memory store).
    pub fn store(&self) -> &S {
        self.node.store()
    }

    /// See [`store`](Self::store).
    pub fn store_mut(&mut self) -> &mut S {
        self.node.store_mut()
    }

    /// The state machine the host applies to. Take the read lock only
    /// briefly: the host needs the write lock to apply.
    pub fn state_machine(&self) -> &Arc<RwLock<SM>> {
        &self.sm
    }

    /// The commit index as of the last Ready taken: what the writes handed
    /// out so far say. The engine's own (`raft().commit_index()`) can be
    /// ahead of it while the host holds Readies back (`inflight_writes_max`
    /// reached): the entries that commit covers may not be handed out yet.
    pub fn committed(&self) -> LogIndex {
        self.commit
    }

    /// Index of the last entry applied to the state machine.
    pub fn applied_index(&self) -> LogIndex {
        self.applied
    }

    /// Role, term and known leader.
    pub fn soft_state(&self) -> SoftState {
        self.soft
    }

    /// Writes handed out (or waiting in the queue) and not yet durable.
    pub fn inflight_writes(&self) -> usize {
        self.inflight.len()
    }

    /// A compaction is handed out and not reported done.
    pub fn is_compacting(&self) -> bool {
        self.compacting
    }

    /// Ticks handled since open.
    pub fn ticks(&self) -> u64 {
        self.ticks
    }

    /// Cumulative counts for metrics.
    pub fn counters(&self) -> &HostCounters {
        &self.counters
    }

    /// The first fatal error, if the node failed.
    pub fn fatal_error(&self) -> Option<&str> {
        self.fatal.as_deref()
    }

    /// Proposals and membership changes waiting to be applied.
    pub fn pending_proposals(&self) -> usize {
        self.waiters.len()
    }

    /// Reads waiting for a read point.
    pub fn pending_reads(&self) -> usize {
        self.reads_unconfirmed.len() + self.reads_waiting_count
    }

    /// What this node knows about itself and the cluster.
    pub fn status(&self) -> NodeStatus {
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
            election_elapsed_ticks: s.election_elapsed_ticks,
            election_timeout_ticks: s.election_timeout_ticks,
            inflight_writes: self.inflight.len(),
            pending_proposals: self.waiters.len(),
            pending_reads: self.pending_reads(),
        }
    }

    /// Checks the host's invariants (and the engine's): run by the
    /// simulator after every input.
    pub fn validate(&self) -> Result<(), String> {
        self.node.validate()?;
        if self.applied != self.node.applied_index() && self.inflight.is_empty() {
            // The engine learns `applied` at the end of each apply batch
            // and from snapshots once durable; with nothing in flight the
            // two agree.
            return Err(format!(
                "host applied {} but engine applied {}",
                self.applied,
                self.node.applied_index()
            ));
        }
        if self.applied > self.node.commit_index() {
            return Err(format!(
                "applied {} beyond commit {}",
                self.applied,
                self.node.commit_index()
            ));
        }
        if self.inflight.len() > self.cfg.inflight_writes_max {
            return Err(format!(
                "{} writes in flight, limit {}",
                self.inflight.len(),
                self.cfg.inflight_writes_max
            ));
        }
        if !self.apply_queue.is_empty() && self.checkpointing.is_none() {
            return Err("entries queued for applying with no checkpoint running".into());
        }
        if let Some(first) = self.apply_queue.front() {
            if first.index != self.applied + 1 {
                return Err(format!(
                    "queued entries start at {} after applied {}",
                    first.index, self.applied
                ));
            }
        }
        if let Some(c) = &self.checkpointing {
            if c.last_index > self.applied {
                return Err(format!(
                    "checkpoint at {} beyond applied {}",
                    c.last_index, self.applied
                ));
            }
        }
        let waiting: usize = self.reads_waiting.values().map(Vec::len).sum();
        if waiting != self.reads_waiting_count {
            return Err(format!(
                "reads_waiting_count {} but {waiting} reads wait",
                self.reads_waiting_count
            ));
        }
        if let Some((&index, _)) = self.reads_waiting.first_key_value() {
            if index <= self.applied {
                return Err(format!(
                    "a read at {index} still waits with applied {}",
                    self.applied
                ));
            }
        }
        Ok(())
    }

    /// Switches a host bug on (tests only).
    #[cfg(feature = "planted-bugs")]
    pub fn plant_host_bug(&mut self, bug: crate::HostBug) {
        self.bugs.on |= 1 << bug as u8;
    }

    /// Switches one of raft-core's protocol bugs on (tests only).
    #[cfg(feature = "planted-bugs")]
    pub fn plant_core_bug(&mut self, bug: raft_core::Bug) {
        self.node.plant_bug(bug);
    }

    // ------------------------------------------------------------------
    // Internals
    // ------------------------------------------------------------------

    /// `HostBug::ApplyUncommitted`: applies the entries just appended to
    /// the log that directly follow what the state machine holds, and
    /// answers their proposals, before they commit.
    #[cfg(feature = "planted-bugs")]
    fn apply_speculatively(&mut self, entries: &[Entry]) -> Result<(), StorageFailure> {
        let sm_lock = self.sm.clone();
        let mut sm = sm_lock.write().unwrap_or_else(|e| e.into_inner());
        for e in entries {
            if e.index != sm.applied_index() + 1 {
                continue;
            }
            let resp = match sm.apply(e) {
                Ok(r) => r,
                Err(err) => {
                    drop(sm);
                    return Err(self.set_fatal(format!("speculative apply failed: {err}")));
                }
            };
            self.bugs.speculated = e.index;
            self.answer(e, resp);
        }
        Ok(())
    }

    fn check_fatal(&self) -> Result<(), StorageFailure> {
        match &self.fatal {
            Some(f) => Err(StorageFailure(f.clone())),
            None => Ok(()),
        }
    }

    /// Records the first fatal error; returns it.
    fn set_fatal(&mut self, reason: String) -> StorageFailure {
        StorageFailure(self.fatal.get_or_insert(reason).clone())
    }

    fn add_waiter(&mut self, id: ProposalId, caller: P) {
        // An older waiter at the same index proposed an entry this node's
        // log no longer holds (it was truncated and the index reused).
        if let Some(old) = self.waiters.insert(
            id.index,
            Waiter {
                term: id.term,
                caller,
            },
        ) {
            self.events.push_back(Event::ProposalFailed {
                caller: old.caller,
                error: ProposeError::Dropped,
            });
        }
    }

    fn handle_ready(&mut self, rd: Ready) -> Result<(), StorageFailure> {
        if let Some(ss) = rd.soft_state {
            self.on_soft_state(ss);
        }
        let must_write = rd.must_persist() || !rd.persisted_messages.is_empty();
        // 1. Messages that depend on nothing unwritten: send at once (a
        // leader's AppendEntries overlap its own fsync). A durable state
        // machine's snapshots go to the shell's streamer instead.
        if self.durable {
            for m in rd.messages {
                if matches!(m.body, MessageBody::SnapshotRequest(_)) {
                    self.snapshot_sends.push_back(m);
                } else {
                    self.transmits.push_back(m);
                }
            }
        } else {
            self.transmits.extend(rd.messages);
        }
        if let Some(hs) = rd.hard_state {
            if hs.commit > self.commit {
                self.counters.entries_committed += hs.commit - self.commit;
                self.commit = hs.commit;
            }
        }
        // 2. The write goes out in Ready order; 3. the messages that promise
        // it wait in `inflight` until `handle_durable`.
        if must_write {
            #[cfg(feature = "planted-bugs")]
            let (early_persist, early_msgs) = (
                self.bugs.is_on(crate::HostBug::AckBeforeDurable) && rd.snapshot.is_none(),
                self.bugs.is_on(crate::HostBug::VoteBeforeDurable),
            );
            #[cfg(feature = "planted-bugs")]
            let speculative = self.bugs.is_on(crate::HostBug::ApplyUncommitted);
            #[cfg(feature = "planted-bugs")]
            if speculative {
                self.apply_speculatively(&rd.entries)?;
            }
            #[allow(unused_mut)]
            let mut persisted_messages = rd.persisted_messages;
            #[cfg(feature = "planted-bugs")]
            if early_msgs {
                // BUG: votes and acknowledgements leave before the write
                // they promise is durable.
                self.transmits
                    .extend(std::mem::take(&mut persisted_messages));
            }
            self.writes.push_back(WriteOp::Write(WriteBatch {
                number: rd.number,
                snapshot: rd.snapshot.clone(),
                entries: rd.entries,
                hard_state: rd.hard_state,
                sync: rd.must_sync,
            }));
            self.inflight.push_back(InFlight {
                number: rd.number,
                snapshot: rd.snapshot,
                persisted_messages,
            });
            #[cfg(feature = "planted-bugs")]
            if early_persist {
                // BUG: the engine counts this write durable (a leader counts
                // itself toward the quorum) as soon as it is handed out.
                if let Err(e) = self.node.on_persisted(rd.number) {
                    return Err(self.set_fatal(format!("engine storage read: {e}")));
                }
            }
        }
        // 4. Committed entries are durable locally: apply now.
        self.apply(rd.committed_entries)?;
        // 5. Reads confirmed at an index wait until it is applied.
        for rs in rd.read_states {
            let Some(caller) = read_ctx(&rs.ctx).and_then(|c| self.reads_unconfirmed.remove(&c))
            else {
                continue;
            };
            #[cfg(feature = "planted-bugs")]
            if self.bugs.is_on(crate::HostBug::ReadBeforeApplied) {
                // BUG: served at once, whatever is applied.
                self.events.push_back(Event::ReadReady {
                    caller,
                    index: rs.index,
                });
                continue;
            }
            if rs.index <= self.applied {
                self.events.push_back(Event::ReadReady {
                    caller,
                    index: rs.index,
                });
            } else {
                self.reads_waiting.entry(rs.index).or_default().push(caller);
                self.reads_waiting_count += 1;
            }
        }
        for ctx in rd.dropped_reads {
            if let Some(caller) = read_ctx(&ctx).and_then(|c| self.reads_unconfirmed.remove(&c)) {
                self.events.push_back(Event::ReadFailed {
                    caller,
                    error: ReadError::Dropped,
                });
            }
        }
        Ok(())
    }

    fn on_soft_state(&mut self, ss: SoftState) {
        let old = self.soft;
        if ss.term != old.term {
            info!(from = old.term, to = ss.term, "term changed");
        }
        if ss.leader != old.leader {
            // `leader` is absent while none is known.
            info!(term = ss.term, leader = ss.leader, "leader changed");
        }
        if ss.role != old.role {
            match ss.role {
                Role::Leader => info!(term = ss.term, "became leader"),
                Role::Candidate => info!(term = ss.term, "election started"),
                Role::PreCandidate => debug!(term = ss.term, "pre-election started"),
                Role::Follower => info!(term = ss.term, "became follower"),
            }
        }
        self.soft = ss;
        self.events.push_back(Event::SoftState(ss));
    }

    fn sm_write(&self) -> RwLockWriteGuard<'_, SM> {
        // Poisoned only if a reader panicked while holding the lock; readers
        // cannot mutate, so the state machine is intact.
        self.sm.write().unwrap_or_else(|e| e.into_inner())
    }

    fn apply(&mut self, entries: Vec<Entry>) -> Result<(), StorageFailure> {
        if entries.is_empty() {
            return Ok(());
        }
        if self.checkpointing.is_some() {
            // The state machine is flushing under its read lock; applying
            // would wait for it. Keep them (bounded: `process` takes no
            // more Readies past APPLY_QUEUE_BYTES_MAX).
            self.apply_queue_bytes += entries.iter().map(|e| e.size_bytes()).sum::<u64>();
            self.apply_queue.extend(entries);
            return Ok(());
        }
        #[allow(unused_mut)]
        let mut entries = entries;
        #[cfg(feature = "planted-bugs")]
        {
            // Applied (and answered) before it committed: the BUG.
            let speculated = self.bugs.speculated;
            if let Some(e) = entries.iter().rev().find(|e| e.index <= speculated) {
                self.applied = self.applied.max(e.index);
            }
            entries.retain(|e| e.index > speculated);
            if entries.is_empty() {
                return Ok(());
            }
        }
        let Some(last) = entries.last().map(|e| e.index) else {
            return Ok(());
        };
        assert_eq!(
            entries[0].index,
            self.applied + 1,
            "engine handed out entry {} after applied {}",
            entries[0].index,
            self.applied
        );
        debug_assert!(
            entries.windows(2).all(|w| w[1].index == w[0].index + 1),
            "engine handed out entries with a gap"
        );
        let sm_lock = self.sm.clone();
        // Poisoned only by a panicking reader; see `sm_write`.
        let mut sm = sm_lock.write().unwrap_or_else(|e| e.into_inner());
        let responses = match sm.apply_batch(&entries) {
            Ok(r) if r.len() == entries.len() => r,
            Ok(r) => {
                drop(sm);
                return Err(self.set_fatal(format!(
                    "state machine answered {} of {} entries",
                    r.len(),
                    entries.len()
                )));
            }
            Err(err) => {
                drop(sm);
                return Err(self.set_fatal(format!(
                    "state machine apply of {}..={last} failed: {err}",
                    entries[0].index
                )));
            }
        };
        drop(sm);
        for (e, resp) in entries.iter().zip(responses) {
            self.applied = e.index;
            self.applied_term = e.term;
            self.applied_bytes_since_snapshot += e.size_bytes();
            self.counters.entries_applied += 1;
            if let EntryPayload::Membership(m) = &e.payload {
                info!(
                    index = e.index,
                    voters = %id_list(&m.voters),
                    voters_outgoing = %id_list(&m.voters_outgoing),
                    learners = %id_list(&m.learners),
                    "membership change applied"
                );
                self.counters.membership_changes += 1;
                self.applied_membership = m.clone();
            }
            self.answer(e, resp);
        }
        self.node.on_applied(last);
        self.serve_reads();
        Ok(())
    }

    /// Answers the waiter at `e.index` (and any stale one below it) with
    /// the response of applying `e`.
    fn answer(&mut self, e: &Entry, resp: SM::Response) {
        let mut resp = Some(resp);
        while let Some(w) = self.waiters.first_entry() {
            if *w.key() > e.index {
                break;
            }
            let at = *w.key();
            let w = w.remove();
            if at < e.index || w.term != e.term {
                // Another entry took its index: never applied. (`at <
                // e.index` cannot happen, every index is applied in turn;
                // the answer is the same anyway.)
                self.events.push_back(Event::ProposalFailed {
                    caller: w.caller,
                    error: ProposeError::Dropped,
                });
                continue;
            }
            if let Some(response) = resp.take() {
                self.events.push_back(Event::Applied {
                    caller: w.caller,
                    index: e.index,
                    term: e.term,
                    response,
                });
            }
        }
    }

    fn restore_snapshot(&mut self, snap: Snapshot) -> Result<(), StorageFailure> {
        let index = snap.meta.last_index;
        {
            let mut sm = self.sm_write();
            if let Err(e) = sm.restore(&snap.data) {
                drop(sm);
                return Err(self.set_fatal(format!("state machine restore failed: {e}")));
            }
            if sm.applied_index() != index {
                let at = sm.applied_index();
                drop(sm);
                return Err(self.set_fatal(format!(
                    "state machine restored to index {at} from a snapshot at {index}"
                )));
            }
        }
        info!(
            index,
            term = snap.meta.last_term,
            bytes = snap.data.len(),
            "snapshot installed from leader"
        );
        self.counters.snapshots_installed += 1;
        // Every queued entry is at or below the snapshot (the engine
        // installs only snapshots beyond its commit index).
        debug_assert!(self.apply_queue.iter().all(|e| e.index <= index));
        self.apply_queue.clear();
        self.apply_queue_bytes = 0;
        self.applied = self.applied.max(index);
        self.applied_term = snap.meta.last_term;
        self.applied_membership = snap.meta.membership;
        self.snapshot_index = index;
        self.applied_bytes_since_snapshot = 0;
        #[cfg(feature = "planted-bugs")]
        {
            // The restored state replaced whatever was applied ahead.
            self.bugs.speculated = index;
        }
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
            let w = e.remove();
            self.events.push_back(Event::ProposalFailed {
                caller: w.caller,
                error: ProposeError::Indeterminate,
            });
        }
        self.serve_reads();
        Ok(())
    }

    fn serve_reads(&mut self) {
        while let Some(e) = self.reads_waiting.first_entry() {
            if *e.key() > self.applied {
                break;
            }
            let index = *e.key();
            for caller in e.remove() {
                self.reads_waiting_count -= 1;
                self.events.push_back(Event::ReadReady { caller, index });
            }
        }
    }

    /// Takes a snapshot when the trigger fires, and hands out its
    /// compaction once `snapshot_keep_entries` more entries were applied or
    /// `snapshot_keep_ticks_max` ticks passed.
    ///
    /// Why the wait: the store discards the log up to the snapshot's index
    /// and the engine needs the log to start right after its snapshot, so
    /// the only way to keep a tail of entries after a compaction is to
    /// compact at an older snapshot. A follower lagging by less than the
    /// tail then catches up from the log instead of receiving the whole
    /// snapshot. The price: one serialized snapshot is held in memory until
    /// then (bounded in time by the ticks), and a restart replays up to
    /// `snapshot_keep_entries` more entries.
    fn maybe_snapshot(&mut self) -> Result<(), StorageFailure> {
        if let Some(pending) = &self.pending_snapshot {
            let index = pending.snapshot.meta.last_index;
            let waited_ticks = self.ticks.saturating_sub(pending.taken_at_tick);
            let due = self.applied >= index.saturating_add(self.cfg.snapshot_keep_entries)
                || waited_ticks >= self.cfg.snapshot_keep_ticks_max;
            // A durable state machine's snapshot for a follower covers the
            // applied index when its stream started; compacting past that
            // while the stream runs (seconds to minutes for gigabytes)
            // would leave the follower a gap it can only fill with yet
            // another snapshot, for ever under load. The same holds just
            // after it: the follower installs the snapshot and then needs
            // the entries after it, and a live follower that fell behind
            // (a restart, a slow disk) needs the entries it has not got.
            // So wait while a follower catches up, by snapshot or from the
            // log, up to SNAPSHOT_CATCH_UP_WAIT_FACTOR keep windows.
            let catching_up = self.durable
                && due
                && waited_ticks
                    < self
                        .cfg
                        .snapshot_keep_ticks_max
                        .saturating_mul(SNAPSHOT_CATCH_UP_WAIT_FACTOR)
                && self.a_follower_catches_up(index);
            if due && !self.compacting && !catching_up {
                if let Some(p) = self.pending_snapshot.take() {
                    self.hand_out_compaction(p.snapshot);
                }
            }
            // One snapshot at a time: the next is taken after this one.
            // (A durable state machine's checkpoints cost no memory while
            // held; they may go on.)
            if !self.durable {
                return Ok(());
            }
        }
        if self.compacting || self.checkpointing.is_some() || self.applied <= self.snapshot_index {
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
        #[cfg(feature = "planted-bugs")]
        if self.bugs.speculated > self.applied {
            return Ok(()); // the state machine is ahead of `applied`
        }
        if self.durable {
            // The state is on disk already: make it durable and compact the
            // log up to it once the checkpoint is done.
            debug!(
                index = self.applied,
                entries, "checkpointing the state machine"
            );
            self.checkpointing = Some(SnapshotMeta {
                last_index: self.applied,
                last_term: self.applied_term,
                membership: self.applied_membership.clone(),
            });
            self.snapshot_index = self.applied;
            self.applied_bytes_since_snapshot = 0;
            self.writes.push_back(WriteOp::Checkpoint);
            return Ok(());
        }
        let data = {
            let sm = self.sm.read().unwrap_or_else(|e| e.into_inner());
            debug_assert_eq!(sm.applied_index(), self.applied);
            match sm.snapshot() {
                Ok(d) => d,
                Err(e) => {
                    drop(sm);
                    return Err(self.set_fatal(format!("state machine snapshot failed: {e}")));
                }
            }
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
        if self.cfg.snapshot_keep_entries == 0 || self.cfg.snapshot_keep_ticks_max == 0 {
            self.hand_out_compaction(snapshot);
        } else {
            self.pending_snapshot = Some(PendingSnapshot {
                snapshot,
                taken_at_tick: self.ticks,
            });
        }
        Ok(())
    }

    /// True while this node leads and a follower catches up: its progress
    /// is in the snapshot state (a snapshot is being sent to it), or it is
    /// alive (heard from within about an election timeout) and still needs
    /// entries a compaction up to `compact_index` would discard. A follower
    /// that is down does not hold the log: it will get a snapshot.
    fn a_follower_catches_up(&self, compact_index: LogIndex) -> bool {
        self.soft.role == Role::Leader
            && self.node.status().progress.iter().any(|p| {
                p.state == raft_core::ProgressState::Snapshot
                    || (p.active && p.match_index < compact_index)
            })
    }

    fn hand_out_compaction(&mut self, snapshot: Snapshot) {
        debug!(
            index = snapshot.meta.last_index,
            applied = self.applied,
            "compacting the log"
        );
        self.writes.push_back(WriteOp::Compact(snapshot));
        self.compacting = true;
    }

    /// Forgets callers that gave up.
    fn prune_gone(&mut self) {
        self.waiters.retain(|_, w| !w.caller.is_gone());
        self.reads_unconfirmed.retain(|_, r| !r.is_gone());
        let mut count = 0;
        self.reads_waiting.retain(|_, v| {
            v.retain(|r| !r.is_gone());
            count += v.len();
            !v.is_empty()
        });
        self.reads_waiting_count = count;
    }
}
