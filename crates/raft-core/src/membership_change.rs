//! Membership changes by joint consensus (thesis §4.3).
//!
//! A change that alters the voter set goes through a joint configuration
//! C(old,new), in which every decision needs both majorities; once it
//! commits, the leader appends C(new) by itself. A change of learners only
//! needs no joint phase. Configurations take effect when appended (on every
//! node), so a truncated configuration entry rolls the node back to the one
//! before it.

use crate::bugs::Bug;
use crate::error::MembershipError;
use crate::node::{ProposalId, RawNode};
use crate::ready::MembershipChange;
use crate::storage::LogStore;
use crate::types::{EntryPayload, Membership, NodeId, Role};

impl<S: LogStore> RawNode<S> {
    pub(crate) fn change_membership_inner(
        &mut self,
        changes: &[MembershipChange],
    ) -> Result<ProposalId, MembershipError> {
        if self.role != Role::Leader {
            return Err(MembershipError::NotLeader {
                leader_hint: self.leader,
            });
        }
        if self.transfer.is_some() {
            return Err(MembershipError::TransferInProgress);
        }
        if self.membership_index > self.log.committed || self.membership.is_joint() {
            return Err(MembershipError::ChangeInProgress);
        }
        if changes.is_empty() {
            return Err(MembershipError::Invalid("no change given"));
        }
        let old = self.membership.clone();
        let mut voters = old.voters.clone();
        let mut learners = old.learners.clone();
        let last = self.log.last_index();
        for change in changes {
            match *change {
                MembershipChange::AddVoter(id) => {
                    check_id(id)?;
                    if learners.remove(&id) {
                        // Promotion: only once the learner has (nearly) caught
                        // up, so the new quorum does not stall on it.
                        let matched = self.progress.get(&id).map_or(0, |p| p.match_index);
                        let lag_entries = last.saturating_sub(matched);
                        if lag_entries > self.cfg.max_promotion_lag_entries {
                            return Err(MembershipError::LearnerLagging { id, lag_entries });
                        }
                    }
                    voters.insert(id);
                }
                MembershipChange::AddLearner(id) => {
                    check_id(id)?;
                    if voters.contains(&id) {
                        return Err(MembershipError::Invalid(
                            "demoting a voter to learner is not supported; remove it first",
                        ));
                    }
                    learners.insert(id);
                }
                MembershipChange::Remove(id) => {
                    if !voters.remove(&id) && !learners.remove(&id) {
                        return Err(MembershipError::Invalid(
                            "removing a node that is not a member",
                        ));
                    }
                }
            }
        }
        if voters.is_empty() {
            return Err(MembershipError::Invalid("the change would leave no voters"));
        }
        let new = if voters == old.voters {
            Membership {
                voters,
                voters_outgoing: Default::default(),
                learners,
            }
        } else {
            Membership {
                voters,
                voters_outgoing: old.voters.clone(),
                learners,
            }
        };
        if new == old {
            return Err(MembershipError::Invalid("the change changes nothing"));
        }
        let index = self.append_entry_as_leader(EntryPayload::Membership(new));
        if self.bug(Bug::LeaveJointEarly) {
            self.maybe_leave_joint();
        }
        Ok(ProposalId {
            term: self.term,
            index,
        })
    }

    /// Makes the last configuration in the log the one in force, and (as
    /// leader) tracks exactly its members.
    pub(crate) fn refresh_membership(&mut self) {
        let (index, m) = self
            .configs
            .last()
            .expect("configs always holds the base configuration");
        let config_index = *index;
        if *index != self.membership_index || *m != self.membership {
            self.membership = m.clone();
            self.membership_index = *index;
        }
        if self.role == Role::Leader {
            let membership = &self.membership;
            self.progress.retain(|&id, _| membership.contains(id));
            // A member new to this configuration is sent the log from the
            // configuration entry that added it: the next broadcast carries
            // that entry to it (and its refusal starts the probe back to
            // where its log ends). Started after it, it would hear nothing
            // until some later entry.
            let next = config_index.clamp(1, self.log.last_index() + 1);
            self.track_members(next);
        }
    }

    /// Forgets configurations that can no longer be rolled back to: keeps
    /// the latest committed one and every one above the commit index.
    pub(crate) fn prune_configs(&mut self) {
        let committed = self.log.committed;
        let keep_from = self
            .configs
            .iter()
            .rposition(|(i, _)| *i <= committed)
            .unwrap_or(0);
        self.configs.drain(..keep_from);
    }

    /// Leader work after the commit index moved: leave a committed joint
    /// configuration, step down if the committed configuration removed us,
    /// and release reads that waited for the first commit of this term.
    pub(crate) fn on_leader_commit(&mut self) {
        self.maybe_leave_joint();
        if self.membership_index <= self.log.committed
            && !self.membership.is_voter(self.id)
            && self.role == Role::Leader
        {
            // Removed (thesis §4.2.2): hand over quickly to the most
            // up-to-date voter, then stop leading.
            let best = self
                .progress
                .iter()
                .filter(|(id, _)| self.membership.is_voter(**id))
                .max_by_key(|(id, p)| (p.match_index, std::cmp::Reverse(**id)))
                .map(|(id, _)| *id);
            if let Some(to) = best {
                self.send_timeout_now(to);
            }
            let term = self.term;
            self.become_follower(term, None);
            return;
        }
        self.release_reads_after_commit();
    }

    fn maybe_leave_joint(&mut self) {
        let committed =
            self.membership_index <= self.log.committed || self.bug(Bug::LeaveJointEarly);
        if self.role == Role::Leader && self.membership.is_joint() && committed {
            let leave = Membership {
                voters: self.membership.voters.clone(),
                voters_outgoing: Default::default(),
                learners: self.membership.learners.clone(),
            };
            self.append_entry_as_leader(EntryPayload::Membership(leave));
        }
    }
}

fn check_id(id: NodeId) -> Result<(), MembershipError> {
    if id == 0 {
        Err(MembershipError::Invalid("node id 0 is reserved"))
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests;
