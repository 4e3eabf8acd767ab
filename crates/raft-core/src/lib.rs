//! raft-core: the Raft protocol as a deterministic, IO-free state machine.
//! (The full driver contract is documented on `RawNode`; under construction.)

pub mod config;
pub mod error;
pub mod message;
pub mod ready;
pub mod state_machine;
pub mod storage;
pub mod types;

pub use config::{Config, ConfigError};
pub use error::*;
pub use message::*;
pub use ready::{MembershipChange, ReadState, Ready};
pub use state_machine::StateMachine;
pub use storage::{InitialState, LogStore, MemStorage, StorageError};
pub use types::*;
