//! Snapshots (Raft §7): streaming the leader's latest snapshot to a follower
//! that needs compacted entries, in bounded chunks, and receiving one.

use bytes::Bytes;

use crate::error::StepError;
use crate::message::{MessageBody, SnapshotRequest, SnapshotResponse};
use crate::node::{IncomingSnapshot, RawNode};
use crate::progress::ProgressState;
use crate::storage::{LogStore, StorageError};
use crate::types::{NodeId, Role, Snapshot};

impl<S: LogStore> RawNode<S> {
    /// Switches `to` to the Snapshot state and sends the first chunk.
    pub(crate) fn start_snapshot(&mut self, to: NodeId) -> Result<(), StorageError> {
        let snapshot = self.log.store.snapshot()?;
        let now = self.now_tick;
        let Some(p) = self.progress.get_mut(&to) else {
            return Ok(());
        };
        p.become_snapshot(snapshot, now);
        self.send_snapshot_chunk(to);
        Ok(())
    }

    /// (Re)sends the chunk at the follower's next offset.
    pub(crate) fn send_snapshot_chunk(&mut self, to: NodeId) {
        let chunk_bytes = self.cfg.snapshot_chunk_bytes;
        let now = self.now_tick;
        let Some(send) = self.progress.get_mut(&to).and_then(|p| p.snapshot.as_mut()) else {
            return;
        };
        let (offset, data, done) = send.chunk(chunk_bytes);
        send.sent_tick = now;
        let body = MessageBody::SnapshotRequest(SnapshotRequest {
            meta: send.snapshot.meta.clone(),
            total_bytes: send.snapshot.data.len() as u64,
            offset,
            data,
            done,
        });
        self.send(to, body);
    }

    pub(crate) fn handle_snapshot_response(
        &mut self,
        from: NodeId,
        resp: SnapshotResponse,
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
        let sending = p
            .snapshot
            .as_ref()
            .map(|s| (s.snapshot.meta.last_index, s.snapshot.data.len() as u64));
        match resp {
            SnapshotResponse::Installed { last_index } => {
                if last_index > last {
                    return Err(StepError::Malformed {
                        from,
                        reason: "installed a snapshot beyond the leader's log",
                    });
                }
                p.maybe_update(last_index, now);
                if p.state == ProgressState::Snapshot {
                    p.become_probe();
                }
                self.send_append(from, true)?;
            }
            SnapshotResponse::Accepted {
                last_index,
                next_offset,
            }
            | SnapshotResponse::Rejected {
                last_index,
                next_offset,
            } => {
                let Some((index, total)) = sending else {
                    return Ok(());
                };
                if last_index != index {
                    return Ok(()); // about another snapshot
                }
                if next_offset > total {
                    return Err(StepError::Malformed {
                        from,
                        reason: "snapshot offset beyond its length",
                    });
                }
                if let Some(s) = p.snapshot.as_mut() {
                    s.next_offset = next_offset;
                }
                self.send_snapshot_chunk(from);
            }
        }
        Ok(())
    }

    pub(crate) fn handle_snapshot_request(
        &mut self,
        from: NodeId,
        req: SnapshotRequest,
    ) -> Result<(), StepError> {
        let len = req.data.len() as u64;
        let well_formed = req.meta.membership.check().is_ok()
            && req.meta.last_term <= self.term
            && req.total_bytes <= self.cfg.max_snapshot_bytes
            && req
                .offset
                .checked_add(len)
                .is_some_and(|end| end <= req.total_bytes)
            && (!req.done || req.offset + len == req.total_bytes);
        if !well_formed {
            return Err(StepError::Malformed {
                from,
                reason: "inconsistent snapshot chunk",
            });
        }
        self.follow_leader(from)?;
        let index = req.meta.last_index;
        if index <= self.log.committed {
            // We already hold everything it covers.
            self.incoming_snapshot = None;
            let committed = self.log.committed;
            self.send_after_persist(
                from,
                MessageBody::SnapshotResponse(SnapshotResponse::Installed {
                    last_index: committed,
                }),
            );
            return Ok(());
        }
        let same = self
            .incoming_snapshot
            .as_ref()
            .is_some_and(|s| s.meta == req.meta && s.total_bytes == req.total_bytes);
        if req.offset == 0 {
            self.incoming_snapshot = Some(IncomingSnapshot {
                meta: req.meta.clone(),
                total_bytes: req.total_bytes,
                data: Vec::new(),
            });
        } else if !(same
            && self
                .incoming_snapshot
                .as_ref()
                .is_some_and(|s| s.data.len() as u64 == req.offset))
        {
            // Out of order or for another snapshot: say where to resume.
            let next_offset = if same {
                self.incoming_snapshot
                    .as_ref()
                    .map_or(0, |s| s.data.len() as u64)
            } else {
                0
            };
            self.send(
                from,
                MessageBody::SnapshotResponse(SnapshotResponse::Rejected {
                    last_index: index,
                    next_offset,
                }),
            );
            return Ok(());
        }
        let incoming = self.incoming_snapshot.as_mut().expect("set above");
        incoming.data.extend_from_slice(&req.data);
        if !req.done {
            let next_offset = incoming.data.len() as u64;
            self.send(
                from,
                MessageBody::SnapshotResponse(SnapshotResponse::Accepted {
                    last_index: index,
                    next_offset,
                }),
            );
            return Ok(());
        }
        let incoming = self.incoming_snapshot.take().expect("set above");
        let snapshot = Snapshot {
            meta: incoming.meta,
            data: Bytes::from(incoming.data),
        };
        if self.log.matches(index, snapshot.meta.last_term)? {
            // Our log already contains the snapshot's last entry, so it
            // contains everything before it too: just commit up to it.
            self.commit_to(index);
        } else {
            self.configs = vec![(index, snapshot.meta.membership.clone())];
            self.log.restore(snapshot);
            self.refresh_membership();
        }
        self.send_after_persist(
            from,
            MessageBody::SnapshotResponse(SnapshotResponse::Installed { last_index: index }),
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests;
