//! raftkv: a replicated key-value server on Raft, its CLI, a local cluster
//! launcher and a load generator.

pub mod bench;
pub mod certs;
pub mod cli;
pub mod client;
pub mod cluster;
pub mod server;
pub mod version;
