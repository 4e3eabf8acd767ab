//! HTTP-level metrics, rendered by `GET /metrics` next to the runtime's
//! `raft_*` metrics in one Prometheus text page, plus what a service is
//! expected to export: `raftkv_build_info{version,revision} 1` and the
//! standard `process_*` metrics (read from `/proc/self` at each scrape).

use std::borrow::Cow;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
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

/// Labels of `raftkv_build_info`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BuildLabels {
    pub version: String,
    /// The short git revision, `-dirty` appended for a dirty tree.
    pub revision: String,
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
    /// Always 1, labelled with this binary's version and revision (the
    /// Prometheus convention for joining build facts onto other series).
    pub build_info: Family<BuildLabels, Gauge>,
    /// Client connections refused on a TLS port, by reason (`plain_http`,
    /// `untrusted_certificate`, `no_certificate`, `refused_by_peer`,
    /// `timeout`, ...).
    pub tls_refused: Family<ReasonLabel, Counter>,
    /// Certificate reloads (SIGHUP), by result (`ok`, `failed`).
    pub tls_reloads: Family<ResultLabel, Counter>,
}

/// Label naming a reason.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: &'static str,
}

/// Label naming a result.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    pub result: &'static str,
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
            build_info: Family::default(),
            tls_refused: Family::default(),
            tls_reloads: Family::default(),
        }
    }

    /// Counts a client connection refused on the TLS port.
    pub fn tls_refused(&self, reason: &'static str) {
        self.tls_refused
            .get_or_create(&ReasonLabel { reason })
            .inc();
    }

    /// Counts a certificate reload.
    pub fn tls_reloaded(&self, ok: bool) {
        let result = if ok { "ok" } else { "failed" };
        self.tls_reloads
            .get_or_create(&ResultLabel { result })
            .inc();
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
        r.register(
            "http_tls_refused",
            "Client connections refused on the TLS port, by reason",
            self.tls_refused.clone(),
        );
        r.register(
            "tls_reloads",
            "Certificate reloads (SIGHUP), by result",
            self.tls_reloads.clone(),
        );
        let build = crate::version::BuildInfo::current();
        self.build_info
            .get_or_create(&BuildLabels {
                version: build.version.clone(),
                revision: build.revision_label(),
            })
            .set(1);
        r.register(
            "build_info",
            "Always 1; labelled with the version and git revision of this binary",
            self.build_info.clone(),
        );
        // Unprefixed: `process_*` is the name every Prometheus client uses.
        registry.register_collector(Box::new(ProcessCollector));
    }
}

/// The standard `process_*` metrics of this process, read from
/// `/proc/self` at each scrape (nothing runs between scrapes). Where
/// `/proc` is missing (not Linux) or unreadable, a metric is left out
/// rather than reported wrong.
#[derive(Debug)]
pub struct ProcessCollector;

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(p) = ProcessStats::read() else {
            return Ok(());
        };
        let cpu = ConstCounter::new(p.cpu_seconds);
        cpu.encode(encoder.encode_descriptor(
            "process_cpu_seconds",
            "Total user and system CPU time spent in seconds",
            None,
            cpu.metric_type(),
        )?)?;
        let gauges: [(&str, &str, Option<f64>); 3] = [
            (
                "process_resident_memory_bytes",
                "Resident memory size in bytes",
                Some(p.resident_bytes),
            ),
            (
                "process_start_time_seconds",
                "Start time of the process since unix epoch in seconds",
                p.start_time_seconds,
            ),
            (
                "process_open_fds",
                "Number of open file descriptors",
                p.open_fds,
            ),
        ];
        for (name, help, value) in gauges {
            if let Some(v) = value {
                let g = ConstGauge::new(v);
                g.encode(encoder.encode_descriptor(name, help, None, g.metric_type())?)?;
            }
        }
        Ok(())
    }
}

/// One reading of `/proc/self`.
#[derive(Debug, Clone, PartialEq)]
pub struct ProcessStats {
    pub cpu_seconds: f64,
    pub resident_bytes: f64,
    /// `None` if `/proc/stat` has no boot time.
    pub start_time_seconds: Option<f64>,
    /// `None` if `/proc/self/fd` cannot be listed.
    pub open_fds: Option<f64>,
}

impl ProcessStats {
    /// Reads this process's statistics; `None` without a usable `/proc`.
    pub fn read() -> Option<ProcessStats> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        // SAFETY: sysconf has no preconditions; it only reads a constant.
        let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        // SAFETY: as above.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        if ticks <= 0 || page <= 0 {
            return None;
        }
        let boot_time = std::fs::read_to_string("/proc/stat")
            .ok()
            .and_then(|s| parse_boot_time(&s));
        let open_fds = std::fs::read_dir("/proc/self/fd")
            // Minus one: the directory handle this listing opened.
            .map(|d| d.count().saturating_sub(1) as f64)
            .ok();
        let mut p = parse_stat(&stat, ticks as f64, page as f64, boot_time)?;
        p.open_fds = open_fds;
        Some(p)
    }
}

/// `btime` of `/proc/stat`: the boot time, in seconds since the epoch.
fn parse_boot_time(proc_stat: &str) -> Option<f64> {
    proc_stat
        .lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse().ok())
}

/// Parses `/proc/self/stat` (see proc(5)). The command name (field 2) is
/// in parentheses and may hold spaces and parentheses itself, so fields
/// are counted after its last `)`.
fn parse_stat(stat: &str, ticks: f64, page: f64, boot_time: Option<f64>) -> Option<ProcessStats> {
    let rest = &stat[stat.rfind(')')? + 1..];
    // rest starts at field 3 (state): field n is rest's index n - 3.
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| -> Option<f64> { fields.get(n - 3)?.parse().ok() };
    let (utime, stime) = (field(14)?, field(15)?);
    let start_ticks = field(22)?;
    let rss_pages = field(24)?;
    Some(ProcessStats {
        cpu_seconds: (utime + stime) / ticks,
        resident_bytes: rss_pages * page,
        start_time_seconds: boot_time.map(|b| b + start_ticks / ticks),
        open_fds: None,
    })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_stat_fields_are_counted_after_the_command_name() {
        // A command name with a space and a parenthesis, as proc(5) allows.
        let stat = "4242 (raft kv) x) S 1 4242 4242 0 -1 4194304 100 0 0 0 \
                    250 50 0 0 20 0 9 0 1000 123456789 300 18446744073709551615";
        let p = parse_stat(stat, 100.0, 4096.0, Some(1_700_000_000.0)).unwrap();
        assert_eq!(p.cpu_seconds, 3.0);
        assert_eq!(p.resident_bytes, 300.0 * 4096.0);
        assert_eq!(p.start_time_seconds, Some(1_700_000_010.0));
        assert_eq!(parse_stat("garbage", 100.0, 4096.0, None), None);
        assert_eq!(parse_stat("1 (x) S 1 2", 100.0, 4096.0, None), None);
        assert_eq!(
            parse_boot_time("cpu 1 2 3\nbtime 1700000000\nprocesses 5\n"),
            Some(1_700_000_000.0)
        );
        assert_eq!(parse_boot_time("cpu 1 2 3\n"), None);
    }

    #[test]
    fn this_process_has_stats() {
        let p = ProcessStats::read().expect("/proc is available on Linux");
        assert!(p.resident_bytes > 0.0);
        assert!(p.open_fds.is_some_and(|n| n >= 3.0), "{p:?}");
        assert!(p.start_time_seconds.is_some_and(|t| t > 1.5e9), "{p:?}");
    }
}
