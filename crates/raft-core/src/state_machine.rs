//! The application's side of the contract: a deterministic state machine
//! that applies committed commands in log order.

use crate::types::{Entry, LogIndex};

/// A replicated state machine. Every replica applies the same entries in the
/// same order and so reaches the same state; implementations must therefore
/// be deterministic: no clocks, no randomness, no iteration over unordered
/// hash maps into results.
pub trait StateMachine {
    /// What applying a command returns to the client that proposed it.
    type Response;
    /// Applying failed in a way that is not the command's fault (fatal).
    type Error: std::error::Error + Send + Sync + 'static;

    /// Applies one committed entry. Blank and membership entries are passed
    /// too (so the state machine can track the applied index); they return
    /// a response nobody waits for.
    fn apply(&mut self, entry: &Entry) -> Result<Self::Response, Self::Error>;

    /// Index of the last applied entry.
    fn applied_index(&self) -> LogIndex;

    /// Serializes the whole state (including the applied index).
    fn snapshot(&self) -> Result<Vec<u8>, Self::Error>;

    /// Replaces the whole state with a snapshot's.
    fn restore(&mut self, data: &[u8]) -> Result<(), Self::Error>;
}
