//! # raftkv-chaos
//!
//! A Jepsen-style fault test of a real raftkv cluster: three `raftkv serve`
//! processes, each in its own network namespace (or on loopback when
//! namespaces are not available), concurrent clients doing put / get / cas
//! / delete with every read consistency, a nemesis that SIGKILLs, pauses
//! (SIGSTOP) and isolates nodes (mostly the leader) on a schedule drawn
//! from a seed, and at the end a per-key linearizability check of the
//! recorded history with raft-sim's checker, plus "every value seen was
//! written" and "no acknowledged write lost".
//!
//! | module | what |
//! |---|---|
//! | [`run`] | one run from start to verdict |
//! | [`net`] | namespaces, bridge and links; isolate / heal; stale cleanup |
//! | [`cluster`] | the node processes; status polling |
//! | [`nemesis`] | scenarios, the seeded fault schedule, injecting and healing |
//! | [`workload`] | clients and probers |
//! | [`client`] | one request and how its answer is classified |
//! | [`http`] | the one-connection-per-request HTTP client |
//! | [`history`] | operation and fault records |
//! | [`check`] | the checks and their explanations |
//! | [`report`] | summaries, recovery times, text and JSON |
//! | [`locate`] | finding or building the `raftkv` binary |

pub mod check;
pub mod client;
pub mod cluster;
pub mod history;
pub mod http;
pub mod locate;
pub mod nemesis;
pub mod net;
pub mod report;
pub mod run;
pub mod workload;

pub use check::{CheckReport, Verdict};
pub use nemesis::Scenario;
pub use report::{RunSummary, Totals};
pub use run::{run_once, NetChoice, RunConfig, RunError};
