//! Linearizable reads without writing to the log (thesis §6.4):
//! ReadIndex (confirm leadership with a heartbeat round), lease reads
//! (trust CheckQuorum's lease, bounded clock drift), and reads at followers
//! (ReadIndex forwarded to the leader).

use bytes::Bytes;

use crate::bugs::Bug;
use crate::error::ReadError;
use crate::message::{MessageBody, ReadIndexRequest, ReadIndexResponse};
use crate::node::{PendingRead, RawNode};
use crate::quorum::joint_value;
use crate::ready::ReadState;
use crate::storage::LogStore;
use crate::types::{NodeId, Role};

impl<S: LogStore> RawNode<S> {
    pub(crate) fn read_index_inner(&mut self, ctx: Bytes) -> Result<(), ReadError> {
        if self.role == Role::Leader {
            return self.leader_read(ctx, None);
        }
        match self.leader {
            Some(leader) => {
                self.send(
                    leader,
                    MessageBody::ReadIndexRequest(ReadIndexRequest { ctx }),
                );
                Ok(())
            }
            None => Err(ReadError::NoLeader),
        }
    }

    /// Registers a read on the leader (local, or forwarded by `from`).
    fn leader_read(&mut self, ctx: Bytes, from: Option<NodeId>) -> Result<(), ReadError> {
        if self.pending_reads.len() + self.reads_before_commit.len() >= self.cfg.max_pending_reads {
            return Err(ReadError::Backpressure);
        }
        if self.bug(Bug::ReadWithoutQuorum) {
            let index = self.log.committed;
            self.deliver_read(PendingRead {
                ctx,
                index,
                round: 0,
                from,
            });
            return Ok(());
        }
        let read = PendingRead {
            ctx,
            index: self.log.committed,
            round: self.round + 1,
            from,
        };
        if !self.committed_in_current_term() {
            // Until an entry of this term commits, the commit index may lag
            // what earlier leaders committed (thesis §6.4 step 1).
            self.reads_before_commit.push_back(read);
        } else {
            self.pending_reads.push_back(read);
            self.read_round_requested = true;
        }
        Ok(())
    }

    pub(crate) fn lease_read_inner(&mut self, ctx: Bytes) -> Result<(), ReadError> {
        if self.role != Role::Leader {
            return Err(ReadError::NotLeader {
                leader_hint: self.leader,
            });
        }
        if !self.cfg.check_quorum
            || self.transfer.is_some()
            || self.timeout_now_sent
            || !self.committed_in_current_term()
        {
            return Err(ReadError::NoLease);
        }
        let quorum_round = self.quorum_round();
        let Some(sent) = self.round_sent.iter().find(|r| r.round == quorum_round) else {
            return Err(ReadError::NoLease);
        };
        // Followers that acknowledged a heartbeat sent at `sent` refuse to
        // vote for anyone until an election timeout after receiving it, so
        // no other leader can exist before `sent + lease`. Measured on the
        // clock, read now: a process stopped past its lease loses ticks but
        // not time.
        let valid = if self.bug(Bug::LeaseInTicks) {
            let lease_ticks =
                u64::from(self.cfg.election_timeout_ticks - self.cfg.lease_drift_ticks);
            self.now_tick < sent.tick + lease_ticks
        } else {
            self.now_nanos < sent.nanos.saturating_add(self.cfg.lease_nanos())
        };
        if !valid {
            return Err(ReadError::NoLease);
        }
        let index = self.log.committed;
        self.read_states.push(ReadState { ctx, index });
        Ok(())
    }

    pub(crate) fn committed_in_current_term(&self) -> bool {
        self.log.term_opt(self.log.committed).ok().flatten() == Some(self.term)
    }

    /// The highest heartbeat round a quorum has acknowledged.
    fn quorum_round(&self) -> u64 {
        joint_value(&self.membership, |id| {
            if id == self.id {
                self.round
            } else {
                self.progress.get(&id).map_or(0, |p| p.acked_round)
            }
        })
    }

    /// Releases every pending read whose round a quorum acknowledged.
    pub(crate) fn advance_reads(&mut self) {
        if self.pending_reads.is_empty() {
            return;
        }
        let confirmed = self.quorum_round();
        while self
            .pending_reads
            .front()
            .is_some_and(|r| r.round <= confirmed)
        {
            let r = self.pending_reads.pop_front().expect("checked non-empty");
            self.deliver_read(r);
        }
    }

    fn deliver_read(&mut self, r: PendingRead) {
        match r.from {
            None => self.read_states.push(ReadState {
                ctx: r.ctx,
                index: r.index,
            }),
            Some(to) => self.send(
                to,
                MessageBody::ReadIndexResponse(ReadIndexResponse {
                    ctx: r.ctx,
                    index: Some(r.index),
                }),
            ),
        }
    }

    /// Called when the commit index moves on a leader: reads that waited for
    /// the first commit of this term now get that commit index.
    pub(crate) fn release_reads_after_commit(&mut self) {
        if self.reads_before_commit.is_empty() || !self.committed_in_current_term() {
            return;
        }
        let index = self.log.committed;
        let round = self.round + 1;
        for mut r in self.reads_before_commit.drain(..) {
            r.index = index;
            r.round = round;
            self.pending_reads.push_back(r);
        }
        self.read_round_requested = true;
    }

    pub(crate) fn handle_read_index_request(&mut self, from: NodeId, req: ReadIndexRequest) {
        let refused =
            self.role != Role::Leader || self.leader_read(req.ctx.clone(), Some(from)).is_err();
        if refused {
            self.send(
                from,
                MessageBody::ReadIndexResponse(ReadIndexResponse {
                    ctx: req.ctx,
                    index: None,
                }),
            );
        }
    }

    pub(crate) fn handle_read_index_response(&mut self, resp: ReadIndexResponse) {
        match resp.index {
            Some(index) => self.read_states.push(ReadState {
                ctx: resp.ctx,
                index,
            }),
            None => self.dropped_reads.push(resp.ctx),
        }
    }
}

#[cfg(test)]
mod tests;
