//! The handle's errors. Those a caller sees for proposals, reads,
//! membership changes and transfers are decided by the host layer and
//! re-exported from raft-host (the simulator's clients see exactly the
//! same); this module adds the runtime's own: [`NodeError`] and
//! [`StartError`].

pub use raft_host::{
    MembershipError, OpenError, ProposeError, ReadConsistency, ReadError, StorageFailure,
    TransferError,
};

/// Why `status`, `set_peer_addr` or `shutdown` failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NodeError {
    /// The driver did not answer within the timeout (it is overloaded).
    #[error("timed out waiting for the node")]
    Timeout,
    /// The node is shutting down or stopped.
    #[error("node is shutting down")]
    ShuttingDown,
    /// The node stopped on a fatal error.
    #[error("node stopped: {0}")]
    Fatal(String),
}

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// The stored state could not be opened (see [`OpenError`]).
    #[error(transparent)]
    Open(#[from] OpenError),
    /// Binding the peer listener failed.
    #[error("transport: {0}")]
    Io(#[from] std::io::Error),
}
