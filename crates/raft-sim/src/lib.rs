//! raft-sim (work in progress).

pub mod linearizability;
