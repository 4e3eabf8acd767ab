//! Counters and histograms of one node, in a `prometheus-client` registry.
//! [`Metrics`] is cheap to clone (every metric is an `Arc` inside) and is
//! shared by the driver, its writer thread and the transport.

use std::fmt::Write as _;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// Label set naming a peer.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PeerLabel {
    /// The peer's node id, or "unknown" for messages to unknown nodes.
    pub peer: String,
}

impl PeerLabel {
    pub fn new(id: u64) -> Self {
        PeerLabel {
            peer: id.to_string(),
        }
    }
}

/// Label set naming a reason.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: String,
}

fn latency_histogram() -> Histogram {
    // 10 µs .. ~10 s in 21 doubling buckets.
    Histogram::new(exponential_buckets(10e-6, 2.0, 21))
}

/// Every metric the runtime records.
#[derive(Clone, Debug)]
pub struct Metrics {
    /// Proposals accepted by the engine (appended).
    pub proposals: Counter,
    /// Proposals that failed, by reason.
    pub proposals_failed: Family<ReasonLabel, Counter>,
    /// Entries committed (commit index advances).
    pub entries_committed: Counter,
    /// Entries applied to the state machine.
    pub entries_applied: Counter,
    /// Readies written (one `write` call each).
    pub readies_written: Counter,
    /// fsyncs (one per group of Readies).
    pub syncs: Counter,
    /// Groups of Readies written without an fsync: their only writes were
    /// commit index advances, which need not be durable (see the crate docs).
    pub syncs_skipped: Counter,
    /// Time to write one group of Readies, before the sync, in seconds.
    pub append_latency_seconds: Histogram,
    /// Time of one sync, in seconds.
    pub fsync_latency_seconds: Histogram,
    /// From proposal to applied, on the leader, in seconds.
    pub commit_latency_seconds: Histogram,
    /// Messages written to a peer's connection.
    pub messages_sent: Family<PeerLabel, Counter>,
    /// Messages dropped for a peer (queue full, not connected, unknown).
    pub messages_dropped: Family<PeerLabel, Counter>,
    /// Messages received from peers and handed to the driver.
    pub messages_received: Counter,
    /// Inbound messages dropped because the driver's queue was full.
    pub messages_received_dropped: Counter,
    /// Connections or frames refused (bad handshake, undecodable frame, ...).
    pub connections_refused: Family<ReasonLabel, Counter>,
    /// Peer connections whose TLS failed, either way, by reason
    /// (`untrusted_certificate`, `no_certificate`, `refused_by_peer`,
    /// `not_tls`, `identity`, `timeout`, `handshake_failed`): a node
    /// of another CA, a node without TLS, a certificate naming another
    /// node. See [`crate::tls::handshake_reason`].
    pub peer_tls_refused: Family<ReasonLabel, Counter>,
    /// Elections (and pre-elections) this node started.
    pub elections_started: Counter,
    /// Elections this node won.
    pub elections_won: Counter,
    /// Times the known leader changed.
    pub leader_changes: Counter,
    /// Current term.
    pub term: Gauge,
    /// 1 while this node leads, else 0.
    pub is_leader: Gauge,
    /// Snapshots taken locally (log compactions).
    pub snapshots_taken: Counter,
    /// Snapshots installed from a leader.
    pub snapshots_installed: Counter,
    /// Durable state machines: checkpoints completed.
    pub checkpoints: Counter,
    /// Durable state machines: time of one checkpoint, in seconds (the
    /// host applies nothing meanwhile, so it bounds write stalls).
    pub checkpoint_seconds: Histogram,
    /// Membership changes applied.
    pub membership_changes: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        Metrics {
            proposals: Counter::default(),
            proposals_failed: Family::default(),
            entries_committed: Counter::default(),
            entries_applied: Counter::default(),
            readies_written: Counter::default(),
            syncs: Counter::default(),
            syncs_skipped: Counter::default(),
            append_latency_seconds: latency_histogram(),
            fsync_latency_seconds: latency_histogram(),
            commit_latency_seconds: latency_histogram(),
            messages_sent: Family::default(),
            messages_dropped: Family::default(),
            messages_received: Counter::default(),
            messages_received_dropped: Counter::default(),
            connections_refused: Family::default(),
            peer_tls_refused: Family::default(),
            elections_started: Counter::default(),
            elections_won: Counter::default(),
            leader_changes: Counter::default(),
            term: Gauge::default(),
            is_leader: Gauge::default(),
            snapshots_taken: Counter::default(),
            snapshots_installed: Counter::default(),
            checkpoints: Counter::default(),
            checkpoint_seconds: latency_histogram(),
            membership_changes: Counter::default(),
        }
    }

    /// Registers every metric into `registry` (names prefixed `raft_`), so a
    /// server can expose them next to its own.
    pub fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("raft");
        r.register("proposals", "Proposals appended", self.proposals.clone());
        r.register(
            "proposals_failed",
            "Proposals failed, by reason",
            self.proposals_failed.clone(),
        );
        r.register(
            "entries_committed",
            "Entries committed",
            self.entries_committed.clone(),
        );
        r.register(
            "entries_applied",
            "Entries applied to the state machine",
            self.entries_applied.clone(),
        );
        r.register(
            "readies_written",
            "Readies written to storage",
            self.readies_written.clone(),
        );
        r.register("syncs", "Storage syncs (group commits)", self.syncs.clone());
        r.register(
            "syncs_skipped",
            "Write groups that needed no sync (commit index advances only)",
            self.syncs_skipped.clone(),
        );
        r.register(
            "append_latency_seconds",
            "Time to write one group of Readies before syncing",
            self.append_latency_seconds.clone(),
        );
        r.register(
            "fsync_latency_seconds",
            "Time of one storage sync",
            self.fsync_latency_seconds.clone(),
        );
        r.register(
            "commit_latency_seconds",
            "Time from proposal to applied, on the leader",
            self.commit_latency_seconds.clone(),
        );
        r.register(
            "messages_sent",
            "Messages written to peers",
            self.messages_sent.clone(),
        );
        r.register(
            "messages_dropped",
            "Messages dropped for peers",
            self.messages_dropped.clone(),
        );
        r.register(
            "messages_received",
            "Messages received from peers",
            self.messages_received.clone(),
        );
        r.register(
            "messages_received_dropped",
            "Messages dropped because the driver lagged",
            self.messages_received_dropped.clone(),
        );
        r.register(
            "connections_refused",
            "Peer connections closed for bad input",
            self.connections_refused.clone(),
        );
        r.register(
            "peer_tls_refused",
            "Peer connections refused by TLS (either direction), by reason",
            self.peer_tls_refused.clone(),
        );
        r.register(
            "elections_started",
            "Elections started",
            self.elections_started.clone(),
        );
        r.register("elections_won", "Elections won", self.elections_won.clone());
        r.register(
            "leader_changes",
            "Changes of the known leader",
            self.leader_changes.clone(),
        );
        r.register("term", "Current term", self.term.clone());
        r.register("is_leader", "1 while leading", self.is_leader.clone());
        r.register(
            "snapshots_taken",
            "Local snapshots taken",
            self.snapshots_taken.clone(),
        );
        r.register(
            "snapshots_installed",
            "Snapshots installed from a leader",
            self.snapshots_installed.clone(),
        );
        r.register(
            "checkpoints",
            "Durable state machine checkpoints completed",
            self.checkpoints.clone(),
        );
        r.register(
            "checkpoint_seconds",
            "Time of one durable state machine checkpoint",
            self.checkpoint_seconds.clone(),
        );
        r.register(
            "membership_changes",
            "Membership changes applied",
            self.membership_changes.clone(),
        );
    }

    /// Renders every metric in the Prometheus / OpenMetrics text format.
    pub fn render(&self) -> String {
        let mut registry = Registry::default();
        self.register(&mut registry);
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &registry).is_err() {
            // Writing to a String cannot fail; keep the function total anyway.
            let _ = writeln!(out, "# encoding failed");
        }
        out
    }

    pub(crate) fn drop_for(&self, peer: u64) {
        self.messages_dropped
            .get_or_create(&PeerLabel::new(peer))
            .inc();
    }

    pub(crate) fn refused(&self, reason: &str) {
        self.connections_refused
            .get_or_create(&ReasonLabel {
                reason: reason.to_string(),
            })
            .inc();
    }

    pub(crate) fn tls_refused(&self, reason: &str) {
        self.peer_tls_refused
            .get_or_create(&ReasonLabel {
                reason: reason.to_string(),
            })
            .inc();
    }

    pub(crate) fn proposal_failed(&self, reason: &str) {
        self.proposals_failed
            .get_or_create(&ReasonLabel {
                reason: reason.to_string(),
            })
            .inc();
    }
}
