//! Deliberately wrong host variants, for proving that raft-sim's checkers
//! catch bugs in the layer between the engine and the disk, network and
//! clients (the engine's own planted bugs are raft-core's `Bug`). The names
//! always exist so call sites compile in every build; only with the
//! `planted-bugs` feature can one be switched on
//! (`NodeHost::plant_host_bug`).

/// A switchable host bug.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum HostBug {
    /// Tell the engine a write is durable as soon as it is handed to the
    /// disk: a leader counts its own copy toward the quorum (and so
    /// acknowledges proposals) before its fsync.
    AckBeforeDurable = 0,
    /// Send the messages that promise a write (votes, append
    /// acknowledgements) as soon as it is handed to the disk.
    VoteBeforeDurable,
    /// Apply entries (and answer their proposals) as soon as they are in
    /// the local log, before they commit ("optimistic apply").
    ApplyUncommitted,
    /// Serve a read once its read index is confirmed, without waiting for
    /// the state machine to apply up to it.
    ReadBeforeApplied,
}

impl HostBug {
    pub const ALL: [HostBug; 4] = [
        HostBug::AckBeforeDurable,
        HostBug::VoteBeforeDurable,
        HostBug::ApplyUncommitted,
        HostBug::ReadBeforeApplied,
    ];
}

/// The host bugs switched on in one node, and the bugs' own state.
#[cfg(feature = "planted-bugs")]
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct HostBugs {
    pub(crate) on: u32,
    /// `ApplyUncommitted`: highest index applied ahead of its commit.
    pub(crate) speculated: raft_core::LogIndex,
}

#[cfg(feature = "planted-bugs")]
impl HostBugs {
    pub(crate) fn is_on(&self, bug: HostBug) -> bool {
        self.on & (1 << bug as u8) != 0
    }
}
