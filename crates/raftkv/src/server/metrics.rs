//! HTTP-level metrics, rendered by `GET /metrics` next to the runtime's
//! `raft_*` metrics in one Prometheus text page.

use std::borrow::Cow;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// Labels of one answered request.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub method: &'static str,
    /// The matched route pattern (`/v1/kv/{key}`), never the raw path, so
    /// the number of label sets stays bounded whatever clients send.
    pub route: Cow<'static, str>,
    pub status: u16,
}

/// Label of a latency series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabel {
    pub route: Cow<'static, str>,
}

fn latency_histogram() -> Histogram {
    // 50 µs .. ~52 s in 21 doubling buckets.
    Histogram::new(exponential_buckets(50e-6, 2.0, 21))
}

/// Every HTTP metric; cheap to clone (each metric is an `Arc` inside).
#[derive(Clone, Debug)]
pub struct HttpMetrics {
    /// Requests answered, by method, route and status.
    pub requests: Family<RequestLabels, Counter>,
    /// Time to answer, by route, in seconds.
    pub request_duration_seconds: Family<RouteLabel, Histogram, fn() -> Histogram>,
    /// Requests this node forwarded to the leader.
    pub forwarded: Counter,
    /// Client connections open now.
    pub connections_open: Gauge,
    /// Keys in the store (refreshed when rendering).
    pub keys: Gauge,
    /// Bytes of keys and values in the store (refreshed when rendering).
    pub data_bytes: Gauge,
    /// Client sessions held (refreshed when rendering).
    pub sessions: Gauge,
}

impl Default for HttpMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl HttpMetrics {
    pub fn new() -> Self {
        HttpMetrics {
            requests: Family::default(),
            request_duration_seconds: Family::new_with_constructor(latency_histogram),
            forwarded: Counter::default(),
            connections_open: Gauge::default(),
            keys: Gauge::default(),
            data_bytes: Gauge::default(),
            sessions: Gauge::default(),
        }
    }

    /// Registers every metric under the `raftkv_` prefix.
    pub fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("raftkv");
        r.register(
            "http_requests",
            "HTTP requests answered",
            self.requests.clone(),
        );
        r.register(
            "http_request_duration_seconds",
            "Time to answer an HTTP request",
            self.request_duration_seconds.clone(),
        );
        r.register(
            "forwarded_requests",
            "Requests forwarded to the leader",
            self.forwarded.clone(),
        );
        r.register(
            "http_connections_open",
            "Client connections open",
            self.connections_open.clone(),
        );
        r.register("keys", "Keys in the store", self.keys.clone());
        r.register(
            "data_bytes",
            "Bytes of keys and values in the store",
            self.data_bytes.clone(),
        );
        r.register("sessions", "Client sessions held", self.sessions.clone());
    }
}

/// Renders a registry in the Prometheus text format.
pub fn render(registry: &Registry) -> String {
    let mut out = String::new();
    if prometheus_client::encoding::text::encode(&mut out, registry).is_err() {
        // Writing into a String cannot fail; keep the function total anyway.
        out.push_str("# encoding failed\n");
    }
    out
}
