//! Leadership transfer (thesis §3.10): the leader stops taking proposals,
//! brings the target up to date, then tells it to campaign at once with
//! TimeoutNow. Abandoned after an election timeout.

use crate::error::{StepError, TransferError};
use crate::message::MessageBody;
use crate::node::{CampaignKind, RawNode};
use crate::storage::LogStore;
use crate::types::{NodeId, Role};

impl<S: LogStore> RawNode<S> {
    pub(crate) fn transfer_leadership_inner(&mut self, to: NodeId) -> Result<(), TransferError> {
        if self.role != Role::Leader {
            return Err(TransferError::NotLeader {
                leader_hint: self.leader,
            });
        }
        if to == self.id {
            return Err(TransferError::AlreadyLeader);
        }
        if !self.membership.is_voter(to) {
            return Err(TransferError::NotVoter(to));
        }
        if self.transfer != Some(to) {
            // A repeated request re-sends but does not extend the deadline.
            self.transfer = Some(to);
            self.transfer_elapsed = 0;
        }
        let caught_up = self
            .progress
            .get(&to)
            .is_some_and(|p| p.match_index == self.log.last_index());
        if caught_up {
            self.send_timeout_now(to);
        } else {
            // Resend from what is known to match rather than wait for the
            // stall timer: whatever is in flight may have been lost, and the
            // transfer has only an election timeout to finish.
            if let Some(p) = self.progress.get_mut(&to) {
                if p.state == crate::progress::ProgressState::Replicate {
                    p.become_probe();
                }
            }
            self.send_append(to, true)?;
        }
        Ok(())
    }

    /// Tells `to` to campaign now. Voids this term's lease (see
    /// `timeout_now_sent`).
    pub(crate) fn send_timeout_now(&mut self, to: NodeId) {
        self.timeout_now_sent = true;
        self.send(to, MessageBody::TimeoutNow);
    }

    pub(crate) fn handle_timeout_now(&mut self, _from: NodeId) -> Result<(), StepError> {
        if self.role == Role::Leader || !self.is_promotable() {
            return Ok(());
        }
        self.campaign_with(CampaignKind::Transfer)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests;
