//! `raftkv bench --fill N`: the statistics of a fill, per decile.
//!
//! A fill writes keys `0..N` once each, handed out in order to the
//! clients, so key `k` is written about when `k/N` of the data is in. The
//! question a fill answers is whether the cluster slows down as its state
//! grows: so the writes are split into ten deciles by key (key `k` falls
//! in decile `k * 10 / N`) and each decile gets its own latency histogram,
//! throughput and count of slow requests, and the last decile is compared
//! with the first.
//!
//! Slow requests (over [`SLOW_US`]) are also listed with their wall-clock
//! start (up to [`SLOW_LISTED_MAX`] of them), so they can be matched with
//! the servers' logs (checkpoints, compactions, elections).

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;
use serde::Serialize;

use super::new_histogram;

/// Deciles of a fill.
pub const DECILES: usize = 10;
/// A request slower than this (microseconds) is "slow": counted per decile
/// and listed.
pub const SLOW_US: u64 = 100_000;
/// Most slow requests listed (in memory and in the JSON): enough to match
/// every stall of a run with the logs, bounded if everything is slow.
pub const SLOW_LISTED_MAX: usize = 10_000;

/// The decile of key `key` of a fill of `n` keys (`key < n`).
pub fn decile_of(key: u64, n: u64) -> usize {
    // u128: key * 10 overflows u64 only near 2^60 keys, but costs nothing.
    let d = (u128::from(key) * DECILES as u128 / u128::from(n.max(1))) as usize;
    d.min(DECILES - 1)
}

/// The keys of decile `d` of a fill of `n` keys: `start..end`.
pub fn decile_keys(d: usize, n: u64) -> (u64, u64) {
    // The smallest key whose decile is >= d: ceil(d * n / 10).
    let first = |d: usize| -> u64 {
        let x = d as u128 * u128::from(n);
        x.div_ceil(DECILES as u128) as u64
    };
    (first(d), if d + 1 >= DECILES { n } else { first(d + 1) })
}

/// One slow request of the fill.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SlowRequest {
    pub key: u64,
    /// When it was sent, milliseconds since the Unix epoch.
    pub start_unix_ms: u64,
    pub latency_ms: f64,
}

/// What one decile's writes did.
struct DecileRecorder {
    latencies: Histogram<u64>,
    /// The earliest start and latest end of a successful write.
    first_start: Option<Instant>,
    last_end: Option<Instant>,
    slow: u64,
}

impl DecileRecorder {
    fn new() -> Self {
        DecileRecorder {
            latencies: new_histogram(),
            first_start: None,
            last_end: None,
            slow: 0,
        }
    }
}

/// Records the writes of a fill; one per client, merged at the end.
pub struct FillRecorder {
    n: u64,
    deciles: Vec<DecileRecorder>,
    slow_listed: Vec<SlowRequest>,
    /// Slow requests beyond the listed ones.
    slow_unlisted: u64,
    /// Keys given up after every attempt failed.
    keys_failed: u64,
}

impl FillRecorder {
    /// A recorder for a fill of `n` keys.
    pub fn new(n: u64) -> Self {
        FillRecorder {
            n,
            deciles: (0..DECILES).map(|_| DecileRecorder::new()).collect(),
            slow_listed: Vec::new(),
            slow_unlisted: 0,
            keys_failed: 0,
        }
    }

    /// A successful write of `key`, sent at `start` (and at `start_wall`
    /// on the wall clock), answered at `end`.
    pub fn record(&mut self, key: u64, start: Instant, start_wall: SystemTime, end: Instant) {
        let us = end
            .saturating_duration_since(start)
            .as_micros()
            .min(u128::from(super::LATENCY_US_MAX)) as u64;
        let d = &mut self.deciles[decile_of(key, self.n)];
        d.latencies.saturating_record(us.max(1));
        d.first_start = Some(d.first_start.map_or(start, |t| t.min(start)));
        d.last_end = Some(d.last_end.map_or(end, |t| t.max(end)));
        if us > SLOW_US {
            d.slow += 1;
            self.note_slow(SlowRequest {
                key,
                start_unix_ms: start_wall
                    .duration_since(UNIX_EPOCH)
                    .unwrap_or(Duration::ZERO)
                    .as_millis() as u64,
                latency_ms: us as f64 / 1000.0,
            });
        }
    }

    fn note_slow(&mut self, s: SlowRequest) {
        if self.slow_listed.len() < SLOW_LISTED_MAX {
            self.slow_listed.push(s);
        } else {
            self.slow_unlisted += 1;
        }
    }

    /// A key whose every attempt failed (it is missing from the data).
    pub fn key_failed(&mut self) {
        self.keys_failed += 1;
    }

    /// Adds another client's records (of the same fill).
    pub fn merge(&mut self, other: FillRecorder) {
        for (mine, theirs) in self.deciles.iter_mut().zip(other.deciles) {
            // Same bounds on both sides: adding cannot fail.
            let _ = mine.latencies.add(&theirs.latencies);
            mine.first_start = match (mine.first_start, theirs.first_start) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            mine.last_end = match (mine.last_end, theirs.last_end) {
                (Some(a), Some(b)) => Some(a.max(b)),
                (a, b) => a.or(b),
            };
            mine.slow += theirs.slow;
        }
        for s in other.slow_listed {
            self.note_slow(s);
        }
        self.slow_unlisted += other.slow_unlisted;
        self.keys_failed += other.keys_failed;
    }

    /// The report, `elapsed` the whole fill's time.
    pub fn report(mut self, elapsed: Duration) -> FillReport {
        let n = self.n;
        let deciles: Vec<DecileStats> = self
            .deciles
            .iter()
            .enumerate()
            .map(|(i, d)| {
                let (key_start, key_end) = decile_keys(i, n);
                let secs = match (d.first_start, d.last_end) {
                    (Some(a), Some(b)) => b.saturating_duration_since(a).as_secs_f64(),
                    _ => 0.0,
                };
                let h = &d.latencies;
                DecileStats {
                    decile: i,
                    key_start,
                    key_end,
                    count: h.len(),
                    secs,
                    throughput_per_sec: if secs > 0.0 {
                        h.len() as f64 / secs
                    } else {
                        0.0
                    },
                    p50_us: h.value_at_quantile(0.50),
                    p99_us: h.value_at_quantile(0.99),
                    p999_us: h.value_at_quantile(0.999),
                    max_us: h.max(),
                    over_100ms: d.slow,
                }
            })
            .collect();
        let ratio = |last: f64, first: f64| if first > 0.0 { last / first } else { 0.0 };
        let (first, last) = (&deciles[0], &deciles[DECILES - 1]);
        let mut all = new_histogram();
        for d in &self.deciles {
            let _ = all.add(&d.latencies);
        }
        self.slow_listed.sort_by_key(|s| s.start_unix_ms);
        FillReport {
            keys: n,
            secs: elapsed.as_secs_f64(),
            throughput_per_sec: all.len() as f64 / elapsed.as_secs_f64().max(1e-9),
            p50_us: all.value_at_quantile(0.50),
            p99_us: all.value_at_quantile(0.99),
            p999_us: all.value_at_quantile(0.999),
            max_us: all.max(),
            over_100ms: deciles.iter().map(|d| d.over_100ms).sum(),
            keys_failed: self.keys_failed,
            last_vs_first_throughput: ratio(last.throughput_per_sec, first.throughput_per_sec),
            last_vs_first_p999: ratio(last.p999_us as f64, first.p999_us as f64),
            deciles,
            slow_requests: self.slow_listed,
            slow_requests_unlisted: self.slow_unlisted,
            errors: Default::default(),
        }
    }
}

/// One decile of a fill.
#[derive(Debug, Clone, Serialize)]
pub struct DecileStats {
    /// 0 (the first tenth of the keys) to 9.
    pub decile: usize,
    /// Its keys: `key_start..key_end`.
    pub key_start: u64,
    pub key_end: u64,
    /// Successful writes.
    pub count: u64,
    /// From the first write's start to the last one's end.
    pub secs: f64,
    pub throughput_per_sec: f64,
    pub p50_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
    /// Writes slower than 100 ms.
    pub over_100ms: u64,
}

/// What `--fill` reports (also in the JSON, as `fill`).
#[derive(Debug, Clone, Serialize)]
pub struct FillReport {
    pub keys: u64,
    pub secs: f64,
    pub throughput_per_sec: f64,
    pub p50_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
    pub over_100ms: u64,
    /// Keys whose every attempt failed.
    pub keys_failed: u64,
    /// Last decile's throughput / first decile's (1.0: no slowdown).
    pub last_vs_first_throughput: f64,
    /// Last decile's p99.9 / first decile's (1.0: no slowdown).
    pub last_vs_first_p999: f64,
    pub deciles: Vec<DecileStats>,
    /// Writes slower than 100 ms, by start time (at most
    /// [`SLOW_LISTED_MAX`]).
    pub slow_requests: Vec<SlowRequest>,
    /// Slow writes not listed (beyond the limit).
    pub slow_requests_unlisted: u64,
    /// Failed attempts by kind (as in the bench's `errors`); a failed
    /// write was tried again.
    pub errors: std::collections::BTreeMap<String, u64>,
}

fn ms(us: u64) -> String {
    format!("{:.1}", us as f64 / 1000.0)
}

/// Prints the fill's per-decile table.
pub fn print_fill(r: &FillReport) {
    println!(
        "fill: {} keys in {:.1}s, {:.1} writes/s, p50 {} ms p99 {} ms p99.9 {} ms max {} ms, {} over 100 ms, {} keys failed",
        r.keys,
        r.secs,
        r.throughput_per_sec,
        ms(r.p50_us),
        ms(r.p99_us),
        ms(r.p999_us),
        ms(r.max_us),
        r.over_100ms,
        r.keys_failed
    );
    if !r.errors.is_empty() {
        let kinds: Vec<String> = r.errors.iter().map(|(k, v)| format!("{k}: {v}")).collect();
        println!("fill errors (retried): {}", kinds.join(", "));
    }
    println!(
        "{:<7} {:>21} {:>8} {:>10} {:>8} {:>8} {:>8} {:>9} {:>6}",
        "decile", "keys", "secs", "writes/s", "p50 ms", "p99 ms", "p99.9 ms", "max ms", ">100ms"
    );
    for d in &r.deciles {
        println!(
            "{:<7} {:>21} {:>8.1} {:>10.1} {:>8} {:>8} {:>8} {:>9} {:>6}",
            d.decile,
            format!("{}..{}", d.key_start, d.key_end),
            d.secs,
            d.throughput_per_sec,
            ms(d.p50_us),
            ms(d.p99_us),
            ms(d.p999_us),
            ms(d.max_us),
            d.over_100ms
        );
    }
    println!(
        "last decile vs first: throughput x{:.3}, p99.9 x{:.3}",
        r.last_vs_first_throughput, r.last_vs_first_p999
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_falls_in_the_decile_whose_range_holds_it() {
        for n in [1u64, 7, 10, 11, 99, 1000, 1_000_003] {
            let mut covered = 0;
            for d in 0..DECILES {
                let (start, end) = decile_keys(d, n);
                assert!(start <= end, "n={n} d={d}");
                covered += end - start;
                // Every key of small fills, the ends of large ones.
                let keys: Vec<u64> = if n <= 1000 {
                    (start..end).collect()
                } else {
                    vec![start, end - 1]
                };
                for k in keys {
                    assert_eq!(decile_of(k, n), d, "n={n} k={k}");
                }
            }
            assert_eq!(covered, n, "deciles of {n} keys cover them all once");
            if n >= DECILES as u64 {
                assert_eq!(decile_of(n - 1, n), DECILES - 1);
            }
        }
        assert_eq!(decile_keys(0, 1000), (0, 100));
        assert_eq!(decile_keys(9, 1000), (900, 1000));
        assert_eq!(decile_of(99, 1000), 0);
        assert_eq!(decile_of(100, 1000), 1);
    }

    /// Writes of decile `d` of a 1000-key fill: `count` of them, `gap`
    /// apart from `at`, each taking `latency`.
    fn write_decile(
        r: &mut FillRecorder,
        d: u64,
        count: u64,
        at: Instant,
        gap: Duration,
        latency: Duration,
    ) {
        for i in 0..count {
            let start = at + gap * i as u32;
            r.record(d * 100 + i, start, SystemTime::now(), start + latency);
        }
    }

    #[test]
    fn decile_throughput_latency_and_slow_writes() {
        let t0 = Instant::now();
        let mut a = FillRecorder::new(1000);
        let mut b = FillRecorder::new(1000);
        // Decile 0: 100 writes 10 ms apart, 1 ms each: 99 * 10 + 1 = 991 ms.
        write_decile(
            &mut a,
            0,
            100,
            t0,
            Duration::from_millis(10),
            Duration::from_millis(1),
        );
        // Decile 9: half the rate (20 ms apart), two of them slow, split
        // over two clients.
        let t9 = t0 + Duration::from_secs(10);
        write_decile(
            &mut b,
            9,
            98,
            t9,
            Duration::from_millis(20),
            Duration::from_millis(2),
        );
        a.record(998, t9, SystemTime::now(), t9 + Duration::from_millis(150));
        a.record(999, t9, SystemTime::now(), t9 + Duration::from_millis(250));
        a.key_failed();
        a.merge(b);
        let r = a.report(Duration::from_secs(20));
        let d0 = &r.deciles[0];
        assert_eq!(d0.count, 100);
        assert!((d0.secs - 0.991).abs() < 1e-6, "{}", d0.secs);
        assert!((d0.throughput_per_sec - 100.0 / 0.991).abs() < 1e-3);
        assert!((995..=1001).contains(&d0.p999_us), "{}", d0.p999_us);
        assert_eq!(d0.over_100ms, 0);
        let d9 = &r.deciles[9];
        assert_eq!(d9.count, 100);
        // From t9 to the last of the 98 (97 * 20 ms + 2 ms) = 1.942 s.
        assert!((d9.secs - 1.942).abs() < 1e-6, "{}", d9.secs);
        assert_eq!(d9.over_100ms, 2);
        assert!((249_000..=251_000).contains(&d9.max_us), "{}", d9.max_us);
        assert!(r.deciles[1..9]
            .iter()
            .all(|d| d.count == 0 && d.secs == 0.0));
        assert_eq!(r.over_100ms, 2);
        assert_eq!(r.keys_failed, 1);
        assert_eq!(r.slow_requests.len(), 2);
        assert!(r
            .slow_requests
            .iter()
            .any(|s| s.key == 999 && s.latency_ms == 250.0));
        let expected = (100.0 / 1.942) / (100.0 / 0.991);
        assert!((r.last_vs_first_throughput - expected).abs() < 1e-6);
        assert!(r.last_vs_first_p999 > 100.0, "{}", r.last_vs_first_p999);
        assert!((r.throughput_per_sec - 10.0).abs() < 1e-9);
    }

    #[test]
    fn slow_list_is_bounded() {
        let t0 = Instant::now();
        let mut r = FillRecorder::new(10);
        for i in 0..(SLOW_LISTED_MAX as u64 + 5) {
            r.record(
                i % 10,
                t0,
                SystemTime::now(),
                t0 + Duration::from_millis(101),
            );
        }
        let rep = r.report(Duration::from_secs(1));
        assert_eq!(rep.slow_requests.len(), SLOW_LISTED_MAX);
        assert_eq!(rep.slow_requests_unlisted, 5);
        assert_eq!(rep.over_100ms, SLOW_LISTED_MAX as u64 + 5);
    }
}
