//! What a leader knows about each follower's log, and how much it may send.
//!
//! A follower is in one of three states (as in etcd-raft):
//! - **Probe**: the leader does not know where the logs diverge; it sends
//!   one AppendEntries at a time and waits for the answer (or the next
//!   heartbeat response) before sending another.
//! - **Replicate**: the logs match up to `match_index`; the leader streams
//!   entries optimistically, bounded by [`Inflights`].
//! - **Snapshot**: the follower needs entries the leader has compacted; a
//!   snapshot is being streamed in chunks and nothing else is sent.

use std::collections::VecDeque;

use bytes::Bytes;

use crate::types::{LogIndex, Nanos, Snapshot};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProgressState {
    Probe,
    Replicate,
    Snapshot,
}

/// AppendEntries messages sent but not yet acknowledged, bounded in count
/// and bytes so one slow follower cannot make the leader buffer without
/// limit.
#[derive(Clone, Debug)]
pub struct Inflights {
    /// (last index carried by the message, bytes of its entries)
    msgs: VecDeque<(LogIndex, u64)>,
    bytes: u64,
    max_msgs: usize,
    max_bytes: u64,
}

impl Inflights {
    pub fn new(max_msgs: usize, max_bytes: u64) -> Self {
        Inflights {
            msgs: VecDeque::new(),
            bytes: 0,
            max_msgs,
            max_bytes,
        }
    }

    pub fn is_full(&self) -> bool {
        self.msgs.len() >= self.max_msgs || self.bytes >= self.max_bytes
    }

    pub fn add(&mut self, last_index: LogIndex, bytes: u64) {
        debug_assert!(self.msgs.back().is_none_or(|(i, _)| *i < last_index));
        self.msgs.push_back((last_index, bytes));
        self.bytes += bytes;
    }

    /// Frees every message whose entries are all acknowledged.
    pub fn free_to(&mut self, index: LogIndex) {
        while let Some(&(last, bytes)) = self.msgs.front() {
            if last > index {
                break;
            }
            self.msgs.pop_front();
            self.bytes -= bytes;
        }
    }

    pub fn reset(&mut self) {
        self.msgs.clear();
        self.bytes = 0;
    }

    pub fn len(&self) -> usize {
        self.msgs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.msgs.is_empty()
    }
}

/// A snapshot being streamed to one follower.
#[derive(Clone, Debug)]
pub struct SnapshotSend {
    pub snapshot: Snapshot,
    /// Offset of the next chunk to send.
    pub next_offset: u64,
    /// Tick at which the last chunk was sent, for retransmission.
    pub sent_tick: u64,
}

impl SnapshotSend {
    pub fn chunk(&self, chunk_bytes: u64) -> (u64, Bytes, bool) {
        let total = self.snapshot.data.len() as u64;
        let start = self.next_offset.min(total);
        let end = (start + chunk_bytes).min(total);
        let data = self.snapshot.data.slice(start as usize..end as usize);
        (start, data, end == total)
    }
}

/// The leader's view of one follower.
#[derive(Clone, Debug)]
pub struct Progress {
    /// Highest index known to be replicated (and durable) on the follower.
    pub match_index: LogIndex,
    /// Next index to send.
    pub next_index: LogIndex,
    pub state: ProgressState,
    /// In Probe: a message is outstanding; wait for its answer.
    pub probe_sent: bool,
    pub inflights: Inflights,
    /// Heard from since the last CheckQuorum round.
    pub recent_active: bool,
    /// `recent_active` as the last round ended: with it, "heard from in
    /// this round or the last" never flickers to false at a round's start.
    pub active_last_round: bool,
    /// Clock reading when the leader last heard from the follower (for
    /// CheckQuorum on the clock).
    pub heard_nanos: Nanos,
    /// Highest heartbeat round the follower acknowledged in this term.
    pub acked_round: u64,
    /// Tick at which `match_index` last advanced (to detect lost appends).
    pub progress_tick: u64,
    /// The snapshot being sent, in the Snapshot state.
    pub snapshot: Option<SnapshotSend>,
}

impl Progress {
    pub fn new(
        next_index: LogIndex,
        max_msgs: usize,
        max_bytes: u64,
        now_tick: u64,
        now_nanos: Nanos,
    ) -> Self {
        Progress {
            match_index: 0,
            next_index,
            state: ProgressState::Probe,
            probe_sent: false,
            inflights: Inflights::new(max_msgs, max_bytes),
            recent_active: true,
            active_last_round: true,
            heard_nanos: now_nanos,
            acked_round: 0,
            progress_tick: now_tick,
            snapshot: None,
        }
    }

    /// True if nothing more may be sent right now.
    pub fn is_paused(&self) -> bool {
        match self.state {
            ProgressState::Probe => self.probe_sent,
            ProgressState::Replicate => self.inflights.is_full(),
            ProgressState::Snapshot => true,
        }
    }

    pub fn become_probe(&mut self) {
        // After a snapshot, resume right after it; otherwise after what matches.
        let after_snapshot = self.snapshot.take().map(|s| s.snapshot.meta.last_index);
        self.state = ProgressState::Probe;
        self.probe_sent = false;
        self.inflights.reset();
        self.next_index = after_snapshot.unwrap_or(0).max(self.match_index) + 1;
    }

    pub fn become_replicate(&mut self) {
        self.state = ProgressState::Replicate;
        self.probe_sent = false;
        self.snapshot = None;
        self.inflights.reset();
        self.next_index = self.match_index + 1;
    }

    pub fn become_snapshot(&mut self, snapshot: Snapshot, now_tick: u64) {
        self.state = ProgressState::Snapshot;
        self.probe_sent = false;
        self.inflights.reset();
        self.snapshot = Some(SnapshotSend {
            snapshot,
            next_offset: 0,
            sent_tick: now_tick,
        });
    }

    /// Records that the follower holds everything up to `index`. Returns
    /// true if that is news.
    pub fn maybe_update(&mut self, index: LogIndex, now_tick: u64) -> bool {
        let updated = index > self.match_index;
        if updated {
            self.match_index = index;
            self.probe_sent = false;
            self.progress_tick = now_tick;
        }
        self.next_index = self.next_index.max(index + 1);
        updated
    }

    /// Accounts for an AppendEntries just sent whose last entry is
    /// `last_index` (with `bytes` of entries).
    pub fn on_sent(&mut self, last_index: LogIndex, bytes: u64) {
        match self.state {
            ProgressState::Replicate => {
                if last_index >= self.next_index {
                    self.next_index = last_index + 1;
                    self.inflights.add(last_index, bytes);
                }
            }
            ProgressState::Probe => self.probe_sent = true,
            ProgressState::Snapshot => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inflights_bound_by_count_and_bytes() {
        let mut f = Inflights::new(3, 100);
        f.add(1, 10);
        f.add(2, 10);
        assert!(!f.is_full());
        f.add(3, 10);
        assert!(f.is_full());
        f.free_to(1);
        assert!(!f.is_full());
        assert_eq!(f.len(), 2);
        f.add(10, 90);
        assert!(f.is_full(), "110 bytes exceed the 100 byte bound");
        f.free_to(9);
        assert_eq!(f.len(), 1);
        f.free_to(10);
        assert!(f.is_empty());
    }

    #[test]
    fn replicate_advances_next_optimistically_and_probe_pauses() {
        let mut p = Progress::new(5, 2, 1000, 0, 0);
        assert_eq!(p.state, ProgressState::Probe);
        p.on_sent(7, 10);
        assert!(p.is_paused());
        assert!(p.maybe_update(7, 1));
        assert!(!p.is_paused());
        p.become_replicate();
        assert_eq!(p.next_index, 8);
        p.on_sent(9, 10);
        p.on_sent(12, 10);
        assert_eq!(p.next_index, 13);
        assert!(p.is_paused(), "two messages in flight is the bound");
        p.maybe_update(9, 2);
        p.inflights.free_to(9);
        assert!(!p.is_paused());
    }
}
