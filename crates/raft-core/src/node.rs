//! [`RawNode`]: the engine's state and its public input/output surface.
//! The protocol's concerns live in sibling modules, each an `impl` block on
//! `RawNode`: election, replication, snapshot, membership_change, transfer,
//! read.

use std::collections::{BTreeMap, VecDeque};

use bytes::Bytes;

use crate::config::{Config, ConfigError};
use crate::error::*;
use crate::log::RaftLog;
use crate::message::{Message, MessageBody};
use crate::progress::{Progress, ProgressState};
use crate::ready::{MembershipChange, ReadState, Ready};
use crate::rng::SplitMix64;
use crate::storage::{LogStore, StorageError};
use crate::types::*;

/// Why [`RawNode::new`] failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NewError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The stored state could not be read or makes no sense.
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// Identifies a proposal: it succeeded if the entry applied at `index` has
/// `term`; if another entry is applied at `index`, it was lost to a leader
/// change and may be retried.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ProposalId {
    pub term: Term,
    pub index: LogIndex,
}

/// A snapshot of what the engine knows, for status pages and tests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    pub id: NodeId,
    pub role: Role,
    pub term: Term,
    pub vote: Option<NodeId>,
    pub leader: Option<NodeId>,
    pub commit_index: LogIndex,
    pub applied_index: LogIndex,
    pub last_index: LogIndex,
    pub persisted_index: LogIndex,
    pub snapshot_index: LogIndex,
    pub membership: Membership,
    /// Per follower (leader only): (id, match index, next index, state).
    pub progress: Vec<PeerStatus>,
    /// Leadership transfer target, if one is under way.
    pub transfer_target: Option<NodeId>,
    /// Ticks since the election timer was last reset (a follower resets it
    /// when it hears from its leader or grants a vote). Read-only, for
    /// status pages that show the timer running down.
    pub election_elapsed_ticks: u32,
    /// The randomized timeout (in `[election_timeout_ticks,
    /// 2 * election_timeout_ticks)`) that `election_elapsed_ticks` counts
    /// toward: a follower or candidate campaigns when it gets there.
    pub election_timeout_ticks: u32,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerStatus {
    pub id: NodeId,
    pub match_index: LogIndex,
    pub next_index: LogIndex,
    pub state: ProgressState,
    /// Heard from in this CheckQuorum round (an election timeout) or the
    /// last one: the follower is alive and talking to this leader.
    pub active: bool,
}

/// Counters of dropped or refused input, for metrics.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    pub messages_stepped: u64,
    pub messages_dropped: u64,
    pub elections_started: u64,
    pub elections_won: u64,
    pub proposals: u64,
}

/// A read waiting for a quorum to confirm this leader's leadership.
#[derive(Clone, Debug)]
pub(crate) struct PendingRead {
    pub(crate) ctx: Bytes,
    pub(crate) index: LogIndex,
    /// The heartbeat round whose acknowledgement by a quorum confirms it.
    pub(crate) round: u64,
    /// The follower that forwarded it, or `None` for a local read.
    pub(crate) from: Option<NodeId>,
}

/// When a heartbeat round was broadcast.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RoundSent {
    pub(crate) round: u64,
    /// The tick count then (used only by the planted bug `LeaseInTicks`).
    pub(crate) tick: u64,
    /// The clock then: the latest reading observed before the round left,
    /// so never later than the real send (which keeps the lease on the
    /// safe side).
    pub(crate) nanos: Nanos,
}

/// A snapshot being received in chunks.
#[derive(Clone, Debug)]
pub(crate) struct IncomingSnapshot {
    pub(crate) meta: SnapshotMeta,
    pub(crate) total_bytes: u64,
    pub(crate) data: Vec<u8>,
}

/// The writes of one Ready that are not yet acknowledged.
#[derive(Clone, Copy, Debug)]
struct Outstanding {
    number: u64,
    /// Last entry written (index, term).
    last_entry: Option<(LogIndex, Term)>,
    /// Index of the snapshot installed.
    snapshot_index: Option<LogIndex>,
}

/// Which campaign to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CampaignKind {
    PreElection,
    Election,
    /// Triggered by TimeoutNow: skip pre-vote, ask voters to ignore leases.
    Transfer,
}

/// One node's Raft engine. See the crate documentation for the contract.
pub struct RawNode<S: LogStore> {
    pub(crate) cfg: Config,
    pub(crate) id: NodeId,
    pub(crate) term: Term,
    pub(crate) vote: Option<NodeId>,
    pub(crate) role: Role,
    pub(crate) leader: Option<NodeId>,
    pub(crate) log: RaftLog<S>,

    /// The latest configuration in the log (effective once appended).
    pub(crate) membership: Membership,
    /// Index of the entry that set `membership` (snapshot index if it came
    /// from the snapshot).
    pub(crate) membership_index: LogIndex,
    /// Configuration entries above the last committed one, oldest first,
    /// preceded by the latest committed one, so that a truncation of the log
    /// can roll the configuration back.
    pub(crate) configs: Vec<(LogIndex, Membership)>,

    /// Leader only: one entry per member other than this node.
    pub(crate) progress: BTreeMap<NodeId, Progress>,
    /// Candidate / pre-candidate only: votes received.
    pub(crate) votes: BTreeMap<NodeId, bool>,

    pub(crate) now_tick: u64,
    /// The latest clock reading the driver gave (never decreases).
    pub(crate) now_nanos: Nanos,
    /// When this node last accepted a message from a leader (of any term):
    /// the start of its vote guard (see [`RawNode::in_leader_lease`]). Kept
    /// across term changes on purpose: a term learned from, say, a refused
    /// pre-vote must not release a promise made to an earlier leader whose
    /// lease reads count on it. A restarted node starts guarded (tick 0).
    pub(crate) leader_contact_tick: Option<u64>,
    pub(crate) election_elapsed: u32,
    pub(crate) heartbeat_elapsed: u32,
    pub(crate) randomized_election_timeout: u32,
    pub(crate) rng: SplitMix64,

    /// Leadership transfer target and ticks since it began.
    pub(crate) transfer: Option<NodeId>,
    pub(crate) transfer_elapsed: u32,
    /// This leader sent TimeoutNow in its current term. A TimeoutNow can be
    /// delayed arbitrarily and its campaign bypasses the followers' lease
    /// guard, so from then on this term's lease proves nothing: lease reads
    /// are refused for the rest of the term (ReadIndex stays available).
    pub(crate) timeout_now_sent: bool,

    /// Heartbeat round: incremented on every heartbeat broadcast.
    pub(crate) round: u64,
    /// When each recent round was broadcast (for leases), oldest first.
    pub(crate) round_sent: VecDeque<RoundSent>,
    /// A read is waiting for a fresh round to be broadcast.
    pub(crate) read_round_requested: bool,
    pub(crate) pending_reads: VecDeque<PendingRead>,
    /// Reads that arrived before this leader committed an entry of its term.
    pub(crate) reads_before_commit: VecDeque<PendingRead>,

    /// Leader: (index, bytes) of proposed entries above the commit index.
    pub(crate) uncommitted: VecDeque<(LogIndex, u64)>,
    pub(crate) uncommitted_bytes: u64,
    /// Leader: new entries or commit index to broadcast at the next `ready`.
    pub(crate) broadcast_pending: bool,
    pub(crate) commit_broadcast_pending: bool,

    pub(crate) incoming_snapshot: Option<IncomingSnapshot>,

    // Output buffers, drained by `ready`.
    pub(crate) msgs: Vec<Message>,
    pub(crate) persisted_msgs: Vec<Message>,
    pub(crate) read_states: Vec<ReadState>,
    pub(crate) dropped_reads: Vec<Bytes>,
    prev_soft: SoftState,
    prev_hard: HardState,
    ready_number: u64,
    /// Readies handed out whose writes are not yet acknowledged:
    /// (number, last entry written, snapshot index installed).
    outstanding: VecDeque<Outstanding>,

    pub(crate) counters: Counters,
    /// A storage failure met where no error could be returned (in `tick`);
    /// reported by the next `ready`. Fatal.
    pub(crate) fatal: Option<StorageError>,
    #[cfg(feature = "planted-bugs")]
    pub(crate) bugs: crate::bugs::PlantedBugs,
}

impl<S: LogStore> RawNode<S> {
    /// Creates the engine from its configuration and the durable state in
    /// `store`. The node starts as a follower (Raft §5.2), with the hard
    /// state, snapshot and configuration it finds.
    pub fn new(cfg: Config, store: S) -> Result<Self, NewError> {
        cfg.validate()?;
        let init = store.initial_state()?;
        let hs = init.hard_state;
        let snap = init.snapshot_meta;
        let last = store.last_index();
        if store.first_index() != snap.last_index + 1 {
            return Err(StorageError::Fatal(format!(
                "first index {} does not follow snapshot index {}",
                store.first_index(),
                snap.last_index
            ))
            .into());
        }
        if hs.commit > last {
            return Err(StorageError::Fatal(format!(
                "commit index {} beyond last index {last}",
                hs.commit
            ))
            .into());
        }
        if hs.vote == Some(0) {
            return Err(StorageError::Fatal("vote for reserved node id 0".into()).into());
        }
        // The application applies only committed entries, so what it has
        // applied is committed: a durable state machine can be ahead of
        // the stored commit index (a checkpoint made durable after a
        // commit index written without fsync, which a crash lost).
        let commit = hs.commit.max(snap.last_index).max(cfg.applied.min(last));
        let applied = cfg.applied.clamp(snap.last_index, commit);
        let mut rng = SplitMix64::new(cfg.rng_seed);
        let timeout = rng.range(cfg.election_timeout_ticks, 2 * cfg.election_timeout_ticks);
        let mut node = RawNode {
            id: cfg.id,
            term: hs.term,
            vote: hs.vote,
            role: Role::Follower,
            leader: None,
            log: RaftLog::new(store, commit, applied),
            membership: snap.membership.clone(),
            membership_index: snap.last_index,
            configs: vec![(snap.last_index, snap.membership)],
            progress: BTreeMap::new(),
            votes: BTreeMap::new(),
            now_tick: 0,
            now_nanos: 0,
            // A node restarting with state may have acknowledged a leader's
            // heartbeat just before it went down; it keeps the promise for
            // one election timeout. A fresh node has promised nothing.
            leader_contact_tick: (hs.term > 0).then_some(0),
            election_elapsed: 0,
            heartbeat_elapsed: 0,
            randomized_election_timeout: timeout,
            rng,
            transfer: None,
            transfer_elapsed: 0,
            timeout_now_sent: false,
            round: 0,
            round_sent: VecDeque::new(),
            read_round_requested: false,
            pending_reads: VecDeque::new(),
            reads_before_commit: VecDeque::new(),
            uncommitted: VecDeque::new(),
            uncommitted_bytes: 0,
            broadcast_pending: false,
            commit_broadcast_pending: false,
            incoming_snapshot: None,
            msgs: Vec::new(),
            persisted_msgs: Vec::new(),
            read_states: Vec::new(),
            dropped_reads: Vec::new(),
            prev_soft: SoftState {
                role: Role::Follower,
                leader: None,
                term: hs.term,
            },
            prev_hard: HardState {
                term: hs.term,
                vote: hs.vote,
                commit,
            },
            ready_number: 0,
            outstanding: VecDeque::new(),
            counters: Counters::default(),
            fatal: None,
            #[cfg(feature = "planted-bugs")]
            bugs: cfg_bugs(),
            cfg,
        };
        // Configuration entries after the snapshot take effect on append, so
        // the configuration in force is the last one in the log.
        let mut next = node.log.first_index();
        while next <= last {
            let batch = node.log.entries(next, last + 1, 4 << 20)?;
            for e in &batch {
                if let EntryPayload::Membership(m) = &e.payload {
                    node.configs.push((e.index, m.clone()));
                }
            }
            next = batch.last().map_or(last + 1, |e| e.index + 1);
        }
        // Raft keeps the current term at or above the last entry's term.
        // A crash can break that on disk: a write torn at a random byte
        // keeps the entries of a new term (they come first) and loses the
        // hard state that raised the term. Raise it again (a term may always
        // grow; there is no vote in it yet), or this node would take a stale
        // leader's entries over ones of a later term (simulator seed 252186).
        let last_term = node.log.last_term()?;
        if last_term > node.term {
            node.term = last_term;
            node.vote = None;
        }
        node.refresh_membership();
        node.prune_configs();
        node.check_invariants();
        Ok(node)
    }

    // ------------------------------------------------------------------
    // Inputs
    // ------------------------------------------------------------------

    /// Advances logical time by one tick. Drives election timeouts,
    /// heartbeats, CheckQuorum, transfer timeouts and retransmissions.
    pub fn tick(&mut self) {
        self.now_tick += 1;
        if self.role == Role::Leader {
            self.tick_leader();
        } else {
            self.tick_election();
        }
        self.check_invariants();
    }

    /// The driver's monotonic clock reads `now` ([`Nanos`]). Call it with a
    /// fresh reading before each batch of other inputs (a reading older
    /// than the last one is ignored). Ticks say that time passed as the
    /// driver counts it, and a stopped or starved process loses ticks; the
    /// clock does not. A leader that finds it heard from no quorum for an
    /// election timeout of clock time steps down here at once (CheckQuorum
    /// on waking from a pause), rather than an election timeout of ticks
    /// later.
    pub fn observe_clock(&mut self, now: Nanos) {
        self.observe_clock_inner(now);
        self.check_invariants();
    }

    /// Feeds one message from another node.
    ///
    /// Errors other than [`StepError::Storage`] mean the message was dropped
    /// and changed nothing; `Storage` is fatal.
    pub fn step(&mut self, msg: Message) -> Result<(), StepError> {
        let res = self.step_inner(msg);
        match &res {
            Ok(()) => self.counters.messages_stepped += 1,
            Err(_) => self.counters.messages_dropped += 1,
        }
        self.check_invariants();
        res
    }

    /// Proposes an application command. Only the leader accepts it; the
    /// returned id tells which log position it took.
    pub fn propose(&mut self, data: Bytes) -> Result<ProposalId, ProposeError> {
        let size = data.len() as u64;
        if size > self.cfg.max_entry_bytes {
            return Err(ProposeError::TooLarge {
                bytes: size,
                max_bytes: self.cfg.max_entry_bytes,
            });
        }
        let res = self.propose_payload(EntryPayload::Normal(data));
        self.check_invariants();
        res
    }

    /// Starts a linearizable read (thesis §6.4). The leader confirms its
    /// leadership with a heartbeat round; a follower forwards the request to
    /// the leader. When safe, a [`ReadState`] with `ctx` appears in a Ready;
    /// serve the read once the state machine has applied its index.
    pub fn read_index(&mut self, ctx: Bytes) -> Result<(), ReadError> {
        let res = self.read_index_inner(ctx);
        self.check_invariants();
        res
    }

    /// Serves a read from the leader's lease without a heartbeat round.
    /// `now` must be a clock reading taken after the read arrived. The
    /// lease runs on the clock, from the send of the heartbeat round a
    /// quorum acknowledged, never on ticks (a paused process keeps its
    /// ticks but not its lease). Relies on CheckQuorum's vote guard and on
    /// clocks drifting by less than `Config::lease_drift_ticks` per
    /// election timeout. The ReadState is emitted immediately or the call
    /// fails with `NoLease` (fall back to [`RawNode::read_index`]).
    pub fn lease_read(&mut self, ctx: Bytes, now: Nanos) -> Result<(), ReadError> {
        self.observe_clock_inner(now);
        let res = self.lease_read_inner(ctx);
        self.check_invariants();
        res
    }

    /// Hands leadership to `to` (thesis §3.10): proposals are refused
    /// meanwhile; abandoned after an election timeout.
    pub fn transfer_leadership(&mut self, to: NodeId) -> Result<(), TransferError> {
        let res = self.transfer_leadership_inner(to);
        self.check_invariants();
        res
    }

    /// Proposes a membership change through joint consensus.
    pub fn change_membership(
        &mut self,
        changes: &[MembershipChange],
    ) -> Result<ProposalId, MembershipError> {
        let res = self.change_membership_inner(changes);
        self.check_invariants();
        res
    }

    /// Starts an election now (tests, or bootstrapping a one-node cluster
    /// without waiting for the timer). Ignored on leaders and non-voters.
    pub fn campaign(&mut self) -> Result<(), StorageError> {
        if self.role != Role::Leader && self.is_promotable() {
            let kind = if self.cfg.pre_vote {
                CampaignKind::PreElection
            } else {
                CampaignKind::Election
            };
            self.campaign_with(kind)?;
        }
        self.check_invariants();
        Ok(())
    }

    // ------------------------------------------------------------------
    // Outputs
    // ------------------------------------------------------------------

    /// True if [`ready`](Self::ready) would return something.
    pub fn has_ready(&self) -> bool {
        self.soft_state() != self.prev_soft
            || self.hard_state() != self.prev_hard
            || self.log.has_unemitted()
            || !self.msgs.is_empty()
            || !self.persisted_msgs.is_empty()
            || self.log.has_applicable()
            || !self.read_states.is_empty()
            || !self.dropped_reads.is_empty()
            || (self.role == Role::Leader
                && (self.broadcast_pending
                    || self.commit_broadcast_pending
                    || self.read_round_requested))
    }

    /// Collects everything the driver must do now. See the crate docs for
    /// how to handle each part.
    pub fn ready(&mut self) -> Result<Ready, StorageError> {
        if let Some(e) = &self.fatal {
            return Err(e.clone());
        }
        if self.role == Role::Leader {
            self.flush_broadcasts()?;
        }
        let mut rd = Ready::default();
        let soft = self.soft_state();
        if soft != self.prev_soft {
            rd.soft_state = Some(soft);
            self.prev_soft = soft;
        }
        if let Some(s) = &self.log.pending_snapshot {
            if !self.log.snapshot_emitted {
                rd.snapshot = Some(s.clone());
                self.log.snapshot_emitted = true;
            }
        }
        rd.entries = self.log.take_unemitted();
        let hard = self.hard_state();
        if hard != self.prev_hard {
            rd.must_sync = hard.term != self.prev_hard.term || hard.vote != self.prev_hard.vote;
            rd.hard_state = Some(hard);
            self.prev_hard = hard;
        }
        rd.must_sync |= rd.snapshot.is_some() || !rd.entries.is_empty();
        rd.messages = std::mem::take(&mut self.msgs);
        rd.persisted_messages = std::mem::take(&mut self.persisted_msgs);
        let uncommitted = self.bug(crate::bugs::Bug::ApplyBeforeCommit);
        rd.committed_entries = self
            .log
            .take_applicable(self.cfg.max_apply_bytes_per_ready, uncommitted)?;
        rd.read_states = std::mem::take(&mut self.read_states);
        rd.dropped_reads = std::mem::take(&mut self.dropped_reads);
        self.ready_number += 1;
        rd.number = self.ready_number;
        if rd.must_persist() || !rd.persisted_messages.is_empty() {
            self.outstanding.push_back(Outstanding {
                number: rd.number,
                last_entry: rd.entries.last().map(|e| (e.index, e.term)),
                snapshot_index: rd.snapshot.as_ref().map(|s| s.meta.last_index),
            });
        }
        self.check_invariants();
        Ok(rd)
    }

    /// The driver made the writes of every Ready up to `number` durable
    /// (snapshot installed and state machine restored, entries appended,
    /// hard state written, all synced). Send those Readies'
    /// `persisted_messages` after this.
    pub fn on_persisted(&mut self, number: u64) -> Result<(), StorageError> {
        while let Some(&w) = self.outstanding.front() {
            if w.number > number {
                break;
            }
            self.outstanding.pop_front();
            if let Some(idx) = w.snapshot_index {
                self.log.snapshot_stable(idx);
            }
            if let Some((idx, term)) = w.last_entry {
                self.log.stable_to(idx, term)?;
            }
        }
        if self.role == Role::Leader {
            // The leader's own vote for an index counts only once durable.
            self.maybe_commit()?;
        }
        self.check_invariants();
        Ok(())
    }

    /// The application applied every committed entry up to `index`.
    pub fn on_applied(&mut self, index: LogIndex) {
        debug_assert!(
            index <= self.log.applying,
            "applied beyond what was handed out"
        );
        self.log.applied = self.log.applied.max(index.min(self.log.applying));
        self.check_invariants();
    }

    // ------------------------------------------------------------------
    // Queries
    // ------------------------------------------------------------------

    pub fn id(&self) -> NodeId {
        self.id
    }
    pub fn role(&self) -> Role {
        self.role
    }
    pub fn term(&self) -> Term {
        self.term
    }
    pub fn leader(&self) -> Option<NodeId> {
        self.leader
    }
    pub fn commit_index(&self) -> LogIndex {
        self.log.committed
    }
    pub fn applied_index(&self) -> LogIndex {
        self.log.applied
    }
    pub fn last_index(&self) -> LogIndex {
        self.log.last_index()
    }
    pub fn membership(&self) -> &Membership {
        &self.membership
    }
    pub fn counters(&self) -> &Counters {
        &self.counters
    }
    pub fn config(&self) -> &Config {
        &self.cfg
    }
    /// The storage the engine reads from (for the driver's writes).
    pub fn store(&self) -> &S {
        &self.log.store
    }
    pub fn store_mut(&mut self) -> &mut S {
        &mut self.log.store
    }

    pub fn hard_state(&self) -> HardState {
        HardState {
            term: self.term,
            // The planted bug `ForgetVote` never makes the vote durable.
            vote: if self.bug(crate::bugs::Bug::ForgetVote) {
                None
            } else {
                self.vote
            },
            commit: self.log.committed,
        }
    }

    pub fn soft_state(&self) -> SoftState {
        SoftState {
            role: self.role,
            leader: self.leader,
            term: self.term,
        }
    }

    pub fn status(&self) -> Status {
        Status {
            id: self.id,
            role: self.role,
            term: self.term,
            vote: self.vote,
            leader: self.leader,
            commit_index: self.log.committed,
            applied_index: self.log.applied,
            last_index: self.log.last_index(),
            persisted_index: self.log.persisted,
            snapshot_index: self.log.snapshot_index(),
            membership: self.membership.clone(),
            progress: self
                .progress
                .iter()
                .map(|(&id, p)| PeerStatus {
                    id,
                    match_index: p.match_index,
                    next_index: p.next_index,
                    state: p.state,
                    active: p.recent_active || p.active_last_round,
                })
                .collect(),
            transfer_target: self.transfer,
            election_elapsed_ticks: self.election_elapsed,
            election_timeout_ticks: self.randomized_election_timeout,
        }
    }

    /// Checks every invariant of the node's state; returns the first one
    /// broken. Called after every input in debug builds.
    pub fn validate(&self) -> Result<(), String> {
        self.log
            .validate(self.bug(crate::bugs::Bug::ApplyBeforeCommit))?;
        self.membership.check().map_err(|e| e.to_string())?;
        if self.vote == Some(0) || self.leader == Some(0) {
            return Err("node id 0 used as vote or leader".into());
        }
        if let Ok(last_term) = self.log.last_term() {
            if last_term > self.term {
                return Err(format!(
                    "last entry's term {last_term} is above the current term {}",
                    self.term
                ));
            }
        }
        if self.term < self.prev_hard.term {
            return Err(format!(
                "term went back from {} to {}",
                self.prev_hard.term, self.term
            ));
        }
        if self.log.committed < self.prev_hard.commit {
            return Err(format!(
                "commit went back from {} to {}",
                self.prev_hard.commit, self.log.committed
            ));
        }
        match self.role {
            Role::Leader => {
                if self.leader != Some(self.id) || self.vote != Some(self.id) {
                    return Err("leader has not voted for itself or does not know it leads".into());
                }
                // One walk over the progress map (its ids copied to the
                // stack when there are up to 16), then the same checks in
                // the same order as with lookups: this runs after every
                // input.
                let last = self.log.last_index();
                let mut ids = [0; 16];
                let mut n = 0;
                let mut broken = None;
                for (&id, p) in &self.progress {
                    if let Some(slot) = ids.get_mut(n) {
                        *slot = id;
                    }
                    n += 1;
                    if broken.is_none() && (p.match_index > last || p.next_index <= p.match_index) {
                        broken = Some((id, p.match_index, p.next_index));
                    }
                }
                let ids = ids.get(..n);
                let m = &self.membership;
                for set in [&m.voters, &m.voters_outgoing, &m.learners] {
                    for &member in set {
                        let tracked = match ids {
                            Some(ids) => ids.contains(&member),
                            None => self.progress.contains_key(&member),
                        };
                        if member != self.id && !tracked {
                            return Err(format!("leader tracks no progress for member {member}"));
                        }
                    }
                }
                if let Some((id, m, n)) = broken {
                    return Err(format!("progress of {id}: match {m} next {n} last {last}"));
                }
            }
            Role::Candidate => {
                if self.vote != Some(self.id) {
                    return Err("candidate has not voted for itself".into());
                }
            }
            Role::Follower | Role::PreCandidate => {}
        }
        if self.role != Role::Leader && !self.progress.is_empty() {
            return Err("non-leader tracks progress".into());
        }
        Ok(())
    }

    #[inline]
    pub(crate) fn check_invariants(&self) {
        #[cfg(debug_assertions)]
        if let Err(e) = self.validate() {
            panic!("node {} broke an invariant: {e}", self.id);
        }
    }

    // ------------------------------------------------------------------
    // Shared machinery
    // ------------------------------------------------------------------

    /// A voter of the configuration in force may campaign; learners and
    /// removed nodes never do.
    pub(crate) fn is_promotable(&self) -> bool {
        self.membership.is_voter(self.id)
    }

    pub(crate) fn reset_election_timer(&mut self) {
        self.election_elapsed = 0;
        self.randomized_election_timeout = self.rng.range(
            self.cfg.election_timeout_ticks,
            2 * self.cfg.election_timeout_ticks,
        );
    }

    /// Common reset when the term or role changes.
    fn reset(&mut self, term: Term) {
        if term != self.term {
            debug_assert!(term > self.term);
            self.term = term;
            self.vote = None;
        }
        self.leader = None;
        self.reset_election_timer();
        self.heartbeat_elapsed = 0;
        self.votes.clear();
        self.progress.clear();
        self.transfer = None;
        self.transfer_elapsed = 0;
        self.timeout_now_sent = false;
        self.uncommitted.clear();
        self.uncommitted_bytes = 0;
        self.broadcast_pending = false;
        self.commit_broadcast_pending = false;
        self.read_round_requested = false;
        self.round_sent.clear();
        // Reads waiting for this node's leadership can no longer complete.
        for r in self
            .pending_reads
            .drain(..)
            .chain(self.reads_before_commit.drain(..))
        {
            match r.from {
                None => self.dropped_reads.push(r.ctx),
                Some(to) => self.msgs.push(Message {
                    from: self.id,
                    to,
                    term,
                    body: MessageBody::ReadIndexResponse(crate::message::ReadIndexResponse {
                        ctx: r.ctx,
                        index: None,
                    }),
                }),
            }
        }
    }

    pub(crate) fn become_follower(&mut self, term: Term, leader: Option<NodeId>) {
        self.reset(term);
        self.role = Role::Follower;
        self.leader = leader;
    }

    pub(crate) fn become_pre_candidate(&mut self) {
        // Does not bump the term or touch the vote (thesis §9.6).
        self.votes.clear();
        self.progress.clear();
        self.role = Role::PreCandidate;
        self.leader = None;
        self.reset_election_timer();
    }

    pub(crate) fn become_candidate(&mut self) {
        self.reset(self.term + 1);
        self.vote = Some(self.id);
        self.role = Role::Candidate;
    }

    pub(crate) fn become_leader(&mut self) -> Result<(), StorageError> {
        debug_assert!(self.role == Role::Candidate);
        let term = self.term;
        self.reset(term);
        self.role = Role::Leader;
        self.leader = Some(self.id);
        self.counters.elections_won += 1;
        let last = self.log.last_index();
        self.track_members(last + 1);
        // Raft §8: a new leader commits a no-op of its own term, which also
        // commits everything before it (Figure 8).
        self.append_entry_as_leader(EntryPayload::Blank);
        Ok(())
    }

    /// Leader: starts tracking every member of the configuration in force
    /// that it does not track yet, from `next`.
    pub(crate) fn track_members(&mut self, next: LogIndex) {
        let RawNode {
            id,
            membership,
            progress,
            cfg,
            now_tick,
            now_nanos,
            ..
        } = self;
        for member in membership.member_ids() {
            if member != *id && !progress.contains_key(&member) {
                let p = Progress::new(
                    next,
                    cfg.max_inflight_msgs,
                    cfg.max_inflight_bytes,
                    *now_tick,
                    *now_nanos,
                );
                progress.insert(member, p);
            }
        }
    }

    pub(crate) fn propose_payload(
        &mut self,
        payload: EntryPayload,
    ) -> Result<ProposalId, ProposeError> {
        if self.role != Role::Leader {
            return Err(ProposeError::NotLeader {
                leader_hint: self.leader,
            });
        }
        if let Some(to) = self.transfer {
            return Err(ProposeError::TransferInProgress { to });
        }
        if self.uncommitted_bytes >= self.cfg.max_uncommitted_bytes {
            return Err(ProposeError::Backpressure);
        }
        self.counters.proposals += 1;
        let index = self.append_entry_as_leader(payload);
        Ok(ProposalId {
            term: self.term,
            index,
        })
    }

    /// Appends an entry to the leader's own log; it is sent at the next
    /// `ready`. Returns its index.
    pub(crate) fn append_entry_as_leader(&mut self, payload: EntryPayload) -> LogIndex {
        let index = self.log.last_index() + 1;
        let e = Entry {
            term: self.term,
            index,
            payload,
        };
        let bytes = e.size_bytes();
        self.uncommitted_bytes += bytes;
        self.uncommitted.push_back((index, bytes));
        let new_config = match &e.payload {
            EntryPayload::Membership(m) => Some(m.clone()),
            _ => None,
        };
        self.log.append(std::iter::once(e));
        if let Some(m) = new_config {
            // Configurations take effect when appended (thesis §4.1).
            self.configs.push((index, m));
            self.refresh_membership();
        }
        self.broadcast_pending = true;
        if self.single_voter_leader() {
            // Nobody else to wait for; commit follows once durable.
            self.commit_broadcast_pending = true;
        }
        index
    }

    /// The vote guard of CheckQuorum (etcd's "in lease"): a leader, or a
    /// node that heard from a leader of any term within the minimum election
    /// timeout, grants no (pre-)vote except to a leadership transfer. A
    /// leader's lease reads rely on the quorum that acknowledged it keeping
    /// this promise, whatever terms they learn in between.
    pub(crate) fn in_leader_lease(&self) -> bool {
        if !self.cfg.check_quorum || self.bug(crate::bugs::Bug::IgnoreLease) {
            return false;
        }
        self.role == Role::Leader
            || self
                .leader_contact_tick
                .is_some_and(|t| self.now_tick < t + u64::from(self.cfg.election_timeout_ticks))
    }

    fn single_voter_leader(&self) -> bool {
        self.membership.voters.len() <= 1 && self.membership.voters_outgoing.len() <= 1
    }

    fn step_inner(&mut self, m: Message) -> Result<(), StepError> {
        if m.to != self.id {
            return Err(StepError::Misdelivered {
                to: m.to,
                me: self.id,
            });
        }
        if m.from == self.id || m.from == 0 {
            return Err(StepError::Malformed {
                from: m.from,
                reason: "message from self or from reserved id 0",
            });
        }
        if m.term > self.term {
            if let MessageBody::VoteRequest(req) = &m.body {
                // Leader lease (etcd's "in lease"): a follower that heard from
                // a leader within the minimum election timeout ignores vote
                // requests, so a node rejoining from a partition cannot
                // unseat a healthy leader. Transfers are exempt.
                if self.in_leader_lease() && !req.transfer {
                    return Ok(());
                }
            }
            match &m.body {
                // A pre-vote does not change anyone's term.
                MessageBody::VoteRequest(req) if req.pre_vote => {}
                MessageBody::VoteResponse(resp) if resp.pre_vote && resp.granted => {}
                MessageBody::AppendRequest(_)
                | MessageBody::SnapshotRequest(_)
                | MessageBody::TimeoutNow => self.become_follower(m.term, Some(m.from)),
                _ => self.become_follower(m.term, None),
            }
        } else if m.term < self.term && !self.bug(crate::bugs::Bug::AcceptStaleTerm) {
            match &m.body {
                // Tell a stale leader (or candidate's pre-vote) the current
                // term so it steps down; the seed's `success = false`.
                MessageBody::AppendRequest(_) | MessageBody::SnapshotRequest(_) => {
                    self.send(
                        m.from,
                        MessageBody::AppendResponse(crate::message::AppendResponse {
                            outcome: crate::message::AppendOutcome::StaleTerm,
                            round: 0,
                        }),
                    );
                }
                MessageBody::VoteRequest(req) if req.pre_vote => {
                    self.send(
                        m.from,
                        MessageBody::VoteResponse(crate::message::VoteResponse {
                            pre_vote: true,
                            granted: false,
                        }),
                    );
                }
                // A node stuck in an old term (say, removed from the
                // configuration) forwards reads to a leader that is gone:
                // refuse it with our term so it fails the read at once and
                // learns that time moved on.
                MessageBody::ReadIndexRequest(req) => {
                    self.send(
                        m.from,
                        MessageBody::ReadIndexResponse(crate::message::ReadIndexResponse {
                            ctx: req.ctx.clone(),
                            index: None,
                        }),
                    );
                }
                _ => {}
            }
            return Ok(());
        }

        let from = m.from;
        let term = m.term;
        match m.body {
            MessageBody::VoteRequest(req) => self.handle_vote_request(from, term, req)?,
            MessageBody::VoteResponse(resp) => self.handle_vote_response(from, term, resp)?,
            MessageBody::AppendRequest(req) => self.handle_append_request(from, req)?,
            MessageBody::AppendResponse(resp) => self.handle_append_response(from, resp)?,
            MessageBody::SnapshotRequest(req) => self.handle_snapshot_request(from, req)?,
            MessageBody::SnapshotResponse(resp) => self.handle_snapshot_response(from, resp)?,
            MessageBody::TimeoutNow => self.handle_timeout_now(from)?,
            MessageBody::ReadIndexRequest(req) => self.handle_read_index_request(from, req),
            MessageBody::ReadIndexResponse(resp) => self.handle_read_index_response(resp),
        }
        Ok(())
    }

    /// Queues a message that may leave immediately.
    pub(crate) fn send(&mut self, to: NodeId, body: MessageBody) {
        self.msgs.push(Message {
            from: self.id,
            to,
            term: self.term,
            body,
        });
    }

    /// Queues a message that may leave only once this Ready is durable.
    pub(crate) fn send_after_persist(&mut self, to: NodeId, body: MessageBody) {
        self.persisted_msgs.push(Message {
            from: self.id,
            to,
            term: self.term,
            body,
        });
    }

    /// True if a planted bug is switched on (always false without the
    /// `planted-bugs` feature, so the checks compile away).
    #[inline]
    pub(crate) fn bug(&self, _bug: crate::bugs::Bug) -> bool {
        #[cfg(feature = "planted-bugs")]
        {
            self.bugs.is_on(_bug)
        }
        #[cfg(not(feature = "planted-bugs"))]
        {
            false
        }
    }

    pub(crate) fn check_step(
        &self,
        ok: bool,
        from: NodeId,
        reason: &'static str,
    ) -> Result<(), StepError> {
        if ok {
            Ok(())
        } else {
            Err(StepError::Malformed { from, reason })
        }
    }
}

#[cfg(feature = "planted-bugs")]
fn cfg_bugs() -> crate::bugs::PlantedBugs {
    crate::bugs::PlantedBugs::default()
}

#[cfg(test)]
mod status_tests {
    use crate::testing::Cluster;

    /// The election timer in `status()` runs with ticks, stays within the
    /// randomized bounds, and restarts when a leader is heard from.
    #[test]
    fn status_shows_the_election_timer() {
        let mut c = Cluster::new(3, 7);
        let leader = c.run_until_leader(200).expect("a leader");
        let follower = (1..=3).find(|id| *id != leader).expect("a follower");
        c.deliver_all();
        let base = c.node(follower).cfg.election_timeout_ticks;
        let st = c.node(follower).status();
        assert!(
            (base..2 * base).contains(&st.election_timeout_ticks),
            "{st:?}"
        );
        assert!(
            st.election_elapsed_ticks < st.election_timeout_ticks,
            "{st:?}"
        );
        // Cut off from the leader, the follower's timer only grows.
        c.isolate(follower);
        let before = c.node(follower).status().election_elapsed_ticks;
        c.node_mut(follower).tick();
        c.node_mut(follower).tick();
        assert_eq!(c.node(follower).status().election_elapsed_ticks, before + 2);
    }
}
