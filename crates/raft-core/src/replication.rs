//! Log replication (Raft §5.3), commitment (§5.4.2, Figure 8), heartbeats
//! and CheckQuorum.

use crate::bugs::Bug;
use crate::error::StepError;
use crate::message::{AppendOutcome, AppendRequest, AppendResponse, MessageBody};
use crate::node::{RawNode, RoundSent};
use crate::progress::ProgressState;
use crate::quorum::{joint_value, joint_vote, VoteResult};
use crate::storage::{LogStore, StorageError};
use crate::types::{Entry, EntryPayload, LogIndex, Nanos, NodeId, Role, Term};

/// Most recent heartbeat rounds remembered for lease reads; older rounds
/// only matter if a quorum has not answered for this many heartbeats, and
/// then the lease is void anyway.
const ROUNDS_SENT_MAX: usize = 1024;

impl<S: LogStore> RawNode<S> {
    /// Leader tick: heartbeats, CheckQuorum, transfer timeout, retransmission.
    pub(crate) fn tick_leader(&mut self) {
        self.heartbeat_elapsed += 1;
        self.election_elapsed += 1;
        if self.election_elapsed >= self.cfg.election_timeout_ticks {
            self.election_elapsed = 0;
            if self.cfg.check_quorum && !self.quorum_active() {
                // Cut off from a quorum: stop claiming leadership so clients
                // go elsewhere (and lease reads stop).
                let term = self.term;
                self.become_follower(term, None);
                return;
            }
            for p in self.progress.values_mut() {
                p.active_last_round = p.recent_active;
                p.recent_active = false;
            }
        }
        if self.transfer.is_some() {
            self.transfer_elapsed += 1;
            if self.transfer_elapsed >= self.cfg.election_timeout_ticks {
                // The target did not take over in time: resume service.
                self.transfer = None;
                self.transfer_elapsed = 0;
            }
        }
        if self.heartbeat_elapsed >= self.cfg.heartbeat_interval_ticks {
            self.heartbeat_elapsed = 0;
            self.broadcast_heartbeat();
        }
        if let Err(e) = self.retransmit() {
            self.fatal.get_or_insert(e);
        }
    }

    /// Records a clock reading; a leader that finds it heard from no quorum
    /// for an election timeout of clock time steps down (CheckQuorum on the
    /// clock: after a pause the ticks it missed never come, the clock's
    /// time does).
    pub(crate) fn observe_clock_inner(&mut self, now: Nanos) {
        if now <= self.now_nanos {
            return;
        }
        self.now_nanos = now;
        if self.role == Role::Leader
            && self.cfg.check_quorum
            && !self.bug(Bug::LeaseInTicks)
            && now - self.quorum_heard_nanos() >= self.cfg.election_timeout_nanos()
        {
            let term = self.term;
            self.become_follower(term, None);
        }
    }

    /// The latest clock reading by which a quorum (self included, heard
    /// now) had been heard from.
    fn quorum_heard_nanos(&self) -> Nanos {
        joint_value(&self.membership, |id| {
            if id == self.id {
                self.now_nanos
            } else {
                self.progress.get(&id).map_or(0, |p| p.heard_nanos)
            }
        })
    }

    /// True if a quorum (self included) was heard from in this round.
    fn quorum_active(&self) -> bool {
        joint_vote(&self.membership, |id| {
            if id == self.id {
                Some(true)
            } else {
                Some(self.progress.get(&id).is_some_and(|p| p.recent_active))
            }
        }) == VoteResult::Won
    }

    /// Recovers from lost messages: an append stream that made no progress
    /// for a while falls back to probing; a snapshot chunk is resent.
    fn retransmit(&mut self) -> Result<(), StorageError> {
        let last = self.log.last_index();
        let stall_ticks = u64::from(
            (2 * self.cfg.heartbeat_interval_ticks).max(self.cfg.election_timeout_ticks / 2),
        );
        let now = self.now_tick;
        let mut resend_snapshot = Vec::new();
        for (&id, p) in self.progress.iter_mut() {
            match p.state {
                ProgressState::Replicate
                    if p.match_index < last
                        && !p.inflights.is_empty()
                        && now - p.progress_tick >= stall_ticks =>
                {
                    p.become_probe();
                    self.broadcast_pending = true;
                }
                ProgressState::Snapshot => {
                    let sent = p.snapshot.as_ref().map_or(0, |s| s.sent_tick);
                    if now - sent >= u64::from(self.cfg.election_timeout_ticks) {
                        resend_snapshot.push(id);
                    }
                }
                _ => {}
            }
        }
        for id in resend_snapshot {
            self.send_snapshot_chunk(id);
        }
        Ok(())
    }

    /// Starts a new heartbeat round and sends an empty AppendEntries to
    /// every follower (the seed's "Send Heartbeat").
    pub(crate) fn broadcast_heartbeat(&mut self) {
        self.round += 1;
        self.round_sent.push_back(RoundSent {
            round: self.round,
            tick: self.now_tick,
            nanos: self.now_nanos,
        });
        if self.round_sent.len() > ROUNDS_SENT_MAX {
            self.round_sent.pop_front();
        }
        self.read_round_requested = false;
        let peers: Vec<NodeId> = self.progress.keys().copied().collect();
        for to in peers {
            self.send_heartbeat(to);
        }
        self.advance_reads();
    }

    fn send_heartbeat(&mut self, to: NodeId) {
        let Some(p) = self.progress.get(&to) else {
            return;
        };
        // Probe at what we know matches, so a heartbeat never fails the
        // consistency check because appends are still in flight. If that
        // point is compacted, (0, 0) works: the follower answers with its
        // commit index, below which logs always match.
        let (prev, prev_term) = match self.log.term_opt(p.match_index) {
            Ok(Some(t)) => (p.match_index, t),
            _ => (0, 0),
        };
        let body = MessageBody::AppendRequest(AppendRequest {
            prev_log_index: prev,
            prev_log_term: prev_term,
            entries: Vec::new(),
            leader_commit: self.log.committed,
            round: self.round,
        });
        self.send(to, body);
    }

    /// Sends what `ready` deferred: new entries and commit index to every
    /// follower, and a heartbeat round if a read asked for one. Deferring
    /// lets many proposals share one AppendEntries per follower.
    pub(crate) fn flush_broadcasts(&mut self) -> Result<(), StorageError> {
        if self.read_round_requested {
            self.broadcast_heartbeat();
        }
        if self.broadcast_pending || self.commit_broadcast_pending {
            let allow_empty = self.commit_broadcast_pending;
            self.broadcast_pending = false;
            self.commit_broadcast_pending = false;
            let peers: Vec<NodeId> = self.progress.keys().copied().collect();
            for to in peers {
                self.send_append(to, allow_empty)?;
            }
        }
        Ok(())
    }

    /// Sends entries from the follower's next index, as many messages as
    /// flow control allows. With `allow_empty`, sends an empty append if
    /// there is nothing new (to carry the commit index or probe).
    pub(crate) fn send_append(
        &mut self,
        to: NodeId,
        allow_empty: bool,
    ) -> Result<(), StorageError> {
        let mut allow_empty = allow_empty;
        loop {
            let last = self.log.last_index();
            let Some(p) = self.progress.get(&to) else {
                return Ok(());
            };
            if p.is_paused() {
                return Ok(());
            }
            let next = p.next_index;
            if next > last && !allow_empty {
                return Ok(());
            }
            let prev = next - 1;
            let Some(prev_term) = self.log.term_opt(prev)? else {
                // The follower needs entries we compacted.
                return self.start_snapshot(to);
            };
            let entries = match self.log.entries(next, last + 1, self.cfg.max_append_bytes) {
                Ok(e) => e,
                Err(StorageError::Compacted) => return self.start_snapshot(to),
                Err(e) => return Err(e),
            };
            let bytes: u64 = entries.iter().map(Entry::size_bytes).sum();
            let sent_last = entries.last().map_or(prev, |e| e.index);
            let had_entries = !entries.is_empty();
            let now = self.now_tick;
            let p = self.progress.get_mut(&to).expect("checked above");
            if p.state == ProgressState::Replicate && p.inflights.is_empty() {
                // The stall timer runs from the moment something is in flight.
                p.progress_tick = now;
            }
            p.on_sent(sent_last, bytes);
            let body = MessageBody::AppendRequest(AppendRequest {
                prev_log_index: prev,
                prev_log_term: prev_term,
                entries,
                leader_commit: self.log.committed,
                round: self.round,
            });
            self.send(to, body);
            allow_empty = false;
            let p = self.progress.get(&to).expect("checked above");
            if !had_entries || p.state != ProgressState::Replicate {
                return Ok(());
            }
        }
    }

    pub(crate) fn handle_append_request(
        &mut self,
        from: NodeId,
        req: AppendRequest,
    ) -> Result<(), StepError> {
        self.validate_append(from, &req)?;
        self.follow_leader(from)?;

        let round = req.round;
        let commit = self.log.committed;
        let (mut prev, mut prev_term, mut entries) =
            (req.prev_log_index, req.prev_log_term, req.entries);
        if prev < commit {
            // Everything up to our commit index matches the leader's log
            // (Leader Completeness), so skip that part of the request.
            let skip = (commit - prev) as usize;
            if skip >= entries.len() {
                self.respond_append(
                    from,
                    AppendOutcome::Success {
                        match_index: commit,
                    },
                    round,
                    true,
                );
                return Ok(());
            }
            entries.drain(..skip);
            prev = commit;
            prev_term = self.log.term(commit)?;
        }
        if !self.log.matches(prev, prev_term)? {
            let outcome = self.conflict_hint(prev)?;
            // A rejection promises nothing durable: send it right away.
            self.respond_append(from, outcome, round, false);
            return Ok(());
        }
        let last_new = prev + entries.len() as u64;
        // Find the first entry that is not already in the log. Entries that
        // match are kept: a delayed, shorter append must never truncate
        // entries that a later append already delivered.
        let mut conflict = None;
        for e in &entries {
            if !self.log.matches(e.index, e.term)? {
                conflict = Some(e.index);
                break;
            }
        }
        if let Some(at) = conflict {
            let start = (at - prev - 1) as usize;
            self.log.truncate_and_append(&entries[start..]);
            self.configs.retain(|(i, _)| *i < at);
            for e in &entries[start..] {
                if let EntryPayload::Membership(m) = &e.payload {
                    self.configs.push((e.index, m.clone()));
                }
            }
            self.refresh_membership();
        } else if self.bug(Bug::TruncateOnHeartbeat) && entries.is_empty() {
            self.log.truncate_after(prev.max(self.log.committed));
            let keep = self.log.last_index();
            self.configs.retain(|(i, _)| *i <= keep);
            self.refresh_membership();
        }
        self.commit_to(req.leader_commit.min(last_new));
        self.respond_append(
            from,
            AppendOutcome::Success {
                match_index: last_new,
            },
            round,
            true,
        );
        Ok(())
    }

    /// Accepts `from` as the leader of the current term, on a valid
    /// AppendEntries or InstallSnapshot: a candidate steps down (§5.2), and
    /// the election timer restarts.
    pub(crate) fn follow_leader(&mut self, from: NodeId) -> Result<(), StepError> {
        if self.role == Role::Leader {
            // Two leaders in one term cannot happen in correct Raft; refuse
            // rather than corrupt our log with the other one's entries.
            return Err(StepError::Malformed {
                from,
                reason: "leader message from another leader of the same term",
            });
        }
        if self.role != Role::Follower {
            let term = self.term;
            self.become_follower(term, Some(from));
        }
        self.leader = Some(from);
        self.election_elapsed = 0;
        self.leader_contact_tick = Some(self.now_tick);
        Ok(())
    }

    /// Rejects nonsense: non-contiguous entries, terms going backwards or
    /// beyond the message's term, invalid configurations.
    fn validate_append(&self, from: NodeId, req: &AppendRequest) -> Result<(), StepError> {
        let mut prev_term: Term = req.prev_log_term;
        self.check_step(
            req.prev_log_term <= self.term,
            from,
            "prev_log_term beyond message term",
        )?;
        for (i, e) in req.entries.iter().enumerate() {
            self.check_step(
                e.index == req.prev_log_index + 1 + i as u64,
                from,
                "entries not contiguous",
            )?;
            self.check_step(
                e.term >= prev_term && e.term <= self.term,
                from,
                "entry terms out of order",
            )?;
            if let EntryPayload::Membership(m) = &e.payload {
                self.check_step(m.check().is_ok(), from, "invalid configuration entry")?;
            }
            prev_term = e.term;
        }
        Ok(())
    }

    /// The hint of thesis §5.3: the term we hold at `prev` and the first
    /// index of that term, or our log's end if it is shorter.
    fn conflict_hint(&self, prev: LogIndex) -> Result<AppendOutcome, StorageError> {
        let last = self.log.last_index();
        if prev > last {
            return Ok(AppendOutcome::Conflict {
                prev_log_index: prev,
                conflict_term: None,
                conflict_index: last + 1,
            });
        }
        let term = self.log.term(prev)?;
        let floor = self.log.committed + 1;
        let mut first = prev;
        while first > floor && self.log.term_opt(first - 1)? == Some(term) {
            first -= 1;
        }
        Ok(AppendOutcome::Conflict {
            prev_log_index: prev,
            conflict_term: Some(term),
            conflict_index: first,
        })
    }

    fn respond_append(
        &mut self,
        to: NodeId,
        outcome: AppendOutcome,
        round: u64,
        after_persist: bool,
    ) {
        let body = MessageBody::AppendResponse(AppendResponse { outcome, round });
        if after_persist {
            // "I have these entries" must be true on disk before it is said.
            self.send_after_persist(to, body);
        } else {
            self.send(to, body);
        }
    }

    pub(crate) fn handle_append_response(
        &mut self,
        from: NodeId,
        resp: AppendResponse,
    ) -> Result<(), StepError> {
        if self.role != Role::Leader {
            return Ok(());
        }
        let last = self.log.last_index();
        let now = self.now_tick;
        let heard = self.now_nanos;
        let Some(p) = self.progress.get_mut(&from) else {
            return Err(StepError::UnknownPeer(from));
        };
        p.recent_active = true;
        p.heard_nanos = heard;
        p.acked_round = p.acked_round.max(resp.round.min(self.round));
        match resp.outcome {
            AppendOutcome::Success { match_index } => {
                if match_index > last {
                    return Err(StepError::Malformed {
                        from,
                        reason: "acknowledged an index beyond the leader's log",
                    });
                }
                if p.maybe_update(match_index, now) {
                    match p.state {
                        ProgressState::Probe => p.become_replicate(),
                        ProgressState::Snapshot => {
                            let snap = p
                                .snapshot
                                .as_ref()
                                .map_or(0, |s| s.snapshot.meta.last_index);
                            if p.match_index >= snap {
                                p.become_probe();
                            }
                        }
                        ProgressState::Replicate => p.inflights.free_to(match_index),
                    }
                    self.maybe_commit()?;
                    if self.transfer == Some(from) && match_index == self.log.last_index() {
                        self.send_timeout_now(from);
                    }
                } else if p.state == ProgressState::Probe {
                    p.probe_sent = false;
                }
                self.send_append(from, false)?;
            }
            AppendOutcome::Conflict {
                prev_log_index,
                conflict_term,
                conflict_index,
            } => {
                if prev_log_index <= p.match_index || prev_log_index > last {
                    // Stale: answers a message from before we learned more.
                    return Ok(());
                }
                let match_index = p.match_index;
                let mut next = match conflict_term {
                    Some(t) => match self.last_index_of_term(t, prev_log_index)? {
                        Some(i) => i + 1,
                        None => conflict_index,
                    },
                    None => conflict_index,
                };
                next = next.clamp(match_index + 1, prev_log_index);
                let p = self.progress.get_mut(&from).expect("checked above");
                p.become_probe();
                p.next_index = next;
                self.send_append(from, true)?;
            }
            AppendOutcome::StaleTerm => {}
        }
        self.advance_reads();
        Ok(())
    }

    /// Last index at or below `at` whose term is `term`, if the log has one.
    fn last_index_of_term(
        &self,
        term: Term,
        at: LogIndex,
    ) -> Result<Option<LogIndex>, StorageError> {
        let mut i = at.min(self.log.last_index());
        loop {
            match self.log.term_opt(i)? {
                Some(t) if t == term => return Ok(Some(i)),
                Some(t) if t > term && i > 0 => i -= 1,
                _ => return Ok(None),
            }
        }
    }

    /// Advances the commit index to what a quorum holds durably, but only
    /// through an entry of the current term (Figure 8).
    pub(crate) fn maybe_commit(&mut self) -> Result<bool, StorageError> {
        let persisted = self.log.persisted;
        let index = joint_value(&self.membership, |id| {
            if id == self.id {
                persisted
            } else {
                self.progress.get(&id).map_or(0, |p| p.match_index)
            }
        });
        if index <= self.log.committed || index == u64::MAX {
            return Ok(false);
        }
        if self.log.term(index)? != self.term && !self.bug(Bug::CommitEarlierTerm) {
            return Ok(false);
        }
        self.commit_to(index);
        // Followers learn the new commit index with the next AppendEntries
        // or heartbeat (both carry it), not from an empty append of its
        // own: at low load that extra round (two follower turns and two
        // acknowledgements per write, which carry nothing new) was about a
        // third of the runtime's CPU per write (issue 10). Nothing waits on
        // a follower's commit index: the leader answers proposals, and a
        // follower's ReadIndex read waits for a heartbeat round, which
        // carries the commit index to it before the read point comes back.
        // An idle follower applies at most one heartbeat interval late.
        Ok(true)
    }

    /// Raises the commit index (never lowers it) and runs what depends on it.
    pub(crate) fn commit_to(&mut self, index: LogIndex) {
        if index <= self.log.committed {
            return;
        }
        debug_assert!(index <= self.log.last_index());
        self.log.committed = index;
        self.prune_configs();
        if self.role == Role::Leader {
            while let Some(&(i, bytes)) = self.uncommitted.front() {
                if i > index {
                    break;
                }
                self.uncommitted.pop_front();
                self.uncommitted_bytes -= bytes;
            }
            self.on_leader_commit();
        }
    }
}

#[cfg(test)]
pub(crate) mod tests;
