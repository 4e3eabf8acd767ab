//! Leader election (Raft §5.2, §5.4.1) with PreVote (thesis §9.6) and the
//! vote guard of CheckQuorum.

use crate::bugs::Bug;
use crate::error::StepError;
use crate::message::{MessageBody, VoteRequest, VoteResponse};
use crate::node::{CampaignKind, RawNode};
use crate::quorum::{joint_vote, VoteResult};
use crate::storage::{LogStore, StorageError};
use crate::types::{NodeId, Role, Term};

impl<S: LogStore> RawNode<S> {
    /// Follower / candidate tick: start an election once the randomized
    /// timeout passes without hearing from a leader (the seed's
    /// `weatherDo()` comparing the last heartbeat with a threshold).
    pub(crate) fn tick_election(&mut self) {
        self.election_elapsed += 1;
        if self.is_promotable() && self.election_elapsed >= self.randomized_election_timeout {
            self.election_elapsed = 0;
            let kind = if self.cfg.pre_vote {
                CampaignKind::PreElection
            } else {
                CampaignKind::Election
            };
            // `tick` cannot return an error; a storage failure is kept and
            // reported by the next `ready`.
            if let Err(e) = self.campaign_with(kind) {
                self.fatal.get_or_insert(e);
            }
        }
    }

    /// Runs a (pre-)election: bump the term and vote for itself (real
    /// election only), then ask every voter in parallel.
    pub(crate) fn campaign_with(&mut self, kind: CampaignKind) -> Result<(), StorageError> {
        let pre_vote = kind == CampaignKind::PreElection;
        let vote_term: Term = if pre_vote {
            self.become_pre_candidate();
            self.term + 1
        } else {
            self.become_candidate();
            self.counters.elections_started += 1;
            self.term
        };
        self.votes.insert(self.id, true);
        if self.poll() == VoteResult::Won {
            // A single-voter cluster wins on its own vote.
            return if pre_vote {
                self.campaign_with(CampaignKind::Election)
            } else {
                self.become_leader()
            };
        }
        let last_log_index = self.log.last_index();
        let last_log_term = self.log.last_term()?;
        let voters: Vec<NodeId> = self
            .membership
            .voters
            .union(&self.membership.voters_outgoing)
            .copied()
            .filter(|&v| v != self.id)
            .collect();
        for to in voters {
            let body = MessageBody::VoteRequest(VoteRequest {
                pre_vote,
                last_log_index,
                last_log_term,
                transfer: kind == CampaignKind::Transfer,
            });
            let msg = crate::message::Message {
                from: self.id,
                to,
                term: vote_term,
                body,
            };
            if pre_vote || self.bug(Bug::ForgetVote) {
                // Nothing durable changed for a pre-vote.
                self.msgs.push(msg);
            } else {
                // Our own vote and new term must be durable before we ask.
                self.persisted_msgs.push(msg);
            }
        }
        Ok(())
    }

    fn poll(&self) -> VoteResult {
        joint_vote(&self.membership, |id| self.votes.get(&id).copied())
    }

    pub(crate) fn handle_vote_request(
        &mut self,
        from: NodeId,
        term: Term,
        req: VoteRequest,
    ) -> Result<(), StepError> {
        // At most one vote per term; a pre-vote for a future term may be
        // granted regardless of our current vote since it binds nothing.
        // A new vote is also withheld while a leader's lease may be relying
        // on this node (checked in `step` for higher terms; here for a
        // candidate of the term this node just learned without a leader).
        let can_vote = self.vote == Some(from)
            || ((self.vote.is_none() && self.leader.is_none())
                || (req.pre_vote && term > self.term))
                && (req.transfer || !self.in_leader_lease());
        let up_to_date = self.bug(Bug::VoteWithoutUpToDateCheck)
            || (req.last_log_term, req.last_log_index)
                >= (self.log.last_term()?, self.log.last_index());
        let granted = can_vote && up_to_date;
        if req.pre_vote {
            // A granted pre-vote answers with the requested term so the
            // pre-candidate can count it without changing its own.
            let resp_term = if granted { term } else { self.term };
            self.msgs.push(crate::message::Message {
                from: self.id,
                to: from,
                term: resp_term,
                body: MessageBody::VoteResponse(VoteResponse {
                    pre_vote: true,
                    granted,
                }),
            });
            return Ok(());
        }
        let body = MessageBody::VoteResponse(VoteResponse {
            pre_vote: false,
            granted,
        });
        if granted {
            self.vote = Some(from);
            self.reset_election_timer();
            if self.bug(Bug::ForgetVote) {
                self.send(from, body);
            } else {
                // The vote must be durable before the candidate hears of it.
                self.send_after_persist(from, body);
            }
        } else {
            self.send(from, body);
        }
        Ok(())
    }

    pub(crate) fn handle_vote_response(
        &mut self,
        from: NodeId,
        term: Term,
        resp: VoteResponse,
    ) -> Result<(), StepError> {
        let expected = match self.role {
            Role::PreCandidate if resp.pre_vote => term == self.term + 1 || !resp.granted,
            Role::Candidate if !resp.pre_vote => term == self.term,
            _ => false,
        };
        if !expected || !self.membership.is_voter(from) {
            return Ok(());
        }
        self.votes.entry(from).or_insert(resp.granted);
        match self.poll() {
            VoteResult::Won if self.role == Role::PreCandidate => {
                self.campaign_with(CampaignKind::Election)?
            }
            VoteResult::Won => self.become_leader()?,
            VoteResult::Lost => {
                // Split vote or refused: wait for a fresh random timeout.
                let term = self.term;
                self.become_follower(term, None);
            }
            VoteResult::Pending => {}
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
