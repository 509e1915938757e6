//! Per-worker tallies and the load generator's report.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;
use tracing::warn;

/// Highest latency the histogram tracks exactly (one hour, in microseconds); longer ones
/// are counted at this value.
const MAX_MICROS: u64 = 3_600_000_000;

/// Why a request got no answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FailureKind {
    /// The connection (TCP or the HTTP/2 handshake) could not be set up.
    Connect,
    /// No complete answer within `--timeout`.
    Timeout,
    /// Anything else: reset, protocol error, body error.
    Other,
}

/// Requests that got no answer, by cause.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ErrorCounts {
    /// The connection could not be set up.
    pub connect: u64,
    /// No complete answer within `--timeout`.
    pub timeout: u64,
    /// Reset, protocol or body errors.
    pub other: u64,
}

impl ErrorCounts {
    /// All failed requests.
    pub fn total(&self) -> u64 {
        self.connect + self.timeout + self.other
    }
}

/// Latency of answered requests in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct LatencySummary {
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Slowest.
    pub max: f64,
    /// Mean.
    pub mean: f64,
}

/// What one load run measured. `Display` gives the one-line human summary, `Serialize`
/// the `--json` form.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LoadReport {
    /// The target URL.
    pub url: String,
    /// The requested rate in requests per second; `None` for a closed loop.
    pub target_rate: Option<f64>,
    /// Requests finished: answered plus failed.
    pub total: u64,
    /// Wall time from the first scheduled send to the last finished request, in seconds.
    pub duration_secs: f64,
    /// Achieved rate: `total / duration_secs`.
    pub rate: f64,
    /// Answers by HTTP status code.
    pub statuses: BTreeMap<u16, u64>,
    /// Requests without an answer, by cause.
    pub errors: ErrorCounts,
    /// The last failure's text, if any request failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// Latency of answered requests; with a target rate it is measured from each request's
    /// scheduled send time, so queueing behind slow answers counts (no coordinated omission).
    pub latency_ms: LatencySummary,
    /// Response body bytes received.
    pub bytes: u64,
    /// Connections (workers) asked for.
    pub connections: usize,
    /// Connections opened; more than `connections` when servers closed them (fortio's
    /// "Sockets used").
    pub sockets: u64,
}

impl LoadReport {
    /// Answers with this status code.
    pub fn count(&self, status: u16) -> u64 {
        self.statuses.get(&status).copied().unwrap_or(0)
    }

    /// Requests that got an answer (any status).
    pub fn answered(&self) -> u64 {
        self.statuses.values().sum()
    }
}

fn ms(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}ms")
    } else if v >= 1.0 {
        format!("{v:.1}ms")
    } else {
        format!("{v:.2}ms")
    }
}

impl fmt::Display for LoadReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.statuses.is_empty() {
            f.write_str("no answers")?;
        } else {
            let codes: Vec<String> = self
                .statuses
                .iter()
                .map(|(code, n)| format!("{code}: {n}"))
                .collect();
            f.write_str(&codes.join("  "))?;
            let l = &self.latency_ms;
            write!(
                f,
                " | p50 {} p90 {} p99 {} max {}",
                ms(l.p50),
                ms(l.p90),
                ms(l.p99),
                ms(l.max)
            )?;
        }
        write!(f, " | {:.1} req/s", self.rate)?;
        if let Some(target) = self.target_rate {
            write!(f, " (target {target})")?;
        }
        write!(f, " over {:.1}s", self.duration_secs)?;
        // fortio's lines: requests by code, -1 for those without an answer.
        let total = self.total.max(1) as f64;
        let failed = self.errors.total();
        let codes = (failed > 0)
            .then_some((-1i32, failed))
            .into_iter()
            .chain(self.statuses.iter().map(|(c, n)| (i32::from(*c), *n)));
        for (code, n) in codes {
            write!(f, "\nCode {code} : {n} ({:.1} %)", n as f64 * 100.0 / total)?;
        }
        write!(
            f,
            "\nSockets used: {} (for perfect keepalive, would be {})",
            self.sockets, self.connections
        )?;
        let e = &self.errors;
        if e.total() > 0 {
            write!(
                f,
                "\nerrors: connect {}, timeout {}, other {}",
                e.connect, e.timeout, e.other
            )?;
            if let Some(last) = &self.last_error {
                write!(f, " (last: {last})")?;
            }
        }
        Ok(())
    }
}

/// One worker's tallies, merged into the report at the end.
pub(crate) struct Stats {
    hist: Histogram<u64>,
    statuses: BTreeMap<u16, u64>,
    errors: ErrorCounts,
    last_error: Option<String>,
    bytes: u64,
    sockets: u64,
}

impl Stats {
    pub(crate) fn new() -> Stats {
        Stats {
            // Constant, valid bounds: 1µs..1h at 3 significant digits.
            hist: Histogram::new_with_bounds(1, MAX_MICROS, 3)
                .expect("constant histogram bounds are valid"),
            statuses: BTreeMap::new(),
            errors: ErrorCounts::default(),
            last_error: None,
            bytes: 0,
            sockets: 0,
        }
    }

    /// A connection was opened.
    pub(crate) fn connected(&mut self) {
        self.sockets += 1;
    }

    pub(crate) fn answer(&mut self, status: u16, latency: Duration, bytes: u64) {
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.hist.saturating_record(micros.clamp(1, MAX_MICROS));
        *self.statuses.entry(status).or_default() += 1;
        self.bytes += bytes;
    }

    pub(crate) fn failure(&mut self, kind: FailureKind, text: String) {
        match kind {
            FailureKind::Connect => self.errors.connect += 1,
            FailureKind::Timeout => self.errors.timeout += 1,
            FailureKind::Other => self.errors.other += 1,
        }
        self.last_error = Some(text);
    }

    pub(crate) fn merge(&mut self, other: Stats) {
        if let Err(e) = self.hist.add(&other.hist) {
            warn!(error = %e, "cannot merge latency histograms");
        }
        for (code, n) in other.statuses {
            *self.statuses.entry(code).or_default() += n;
        }
        self.errors.connect += other.errors.connect;
        self.errors.timeout += other.errors.timeout;
        self.errors.other += other.errors.other;
        if other.last_error.is_some() {
            self.last_error = other.last_error;
        }
        self.bytes += other.bytes;
        self.sockets += other.sockets;
    }

    pub(crate) fn report(
        self,
        url: String,
        target_rate: Option<f64>,
        connections: usize,
        elapsed: Duration,
    ) -> LoadReport {
        let total = self.statuses.values().sum::<u64>() + self.errors.total();
        let secs = elapsed.as_secs_f64();
        let q = |p: f64| self.hist.value_at_quantile(p) as f64 / 1000.0;
        let latency_ms = if self.hist.is_empty() {
            LatencySummary::default()
        } else {
            LatencySummary {
                p50: q(0.50),
                p90: q(0.90),
                p99: q(0.99),
                max: self.hist.max() as f64 / 1000.0,
                mean: self.hist.mean() / 1000.0,
            }
        };
        LoadReport {
            url,
            target_rate,
            total,
            duration_secs: secs,
            rate: if secs > 0.0 { total as f64 / secs } else { 0.0 },
            statuses: self.statuses,
            errors: self.errors,
            last_error: self.last_error,
            latency_ms,
            bytes: self.bytes,
            connections,
            sockets: self.sockets,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> LoadReport {
        let mut a = Stats::new();
        let mut b = Stats::new();
        for i in 1..=980u64 {
            a.answer(200, Duration::from_micros(i * 10), 100);
        }
        for _ in 0..20 {
            b.answer(503, Duration::from_millis(9), 10);
        }
        a.connected();
        b.connected();
        b.connected();
        a.merge(b);
        a.report("http://x/".into(), Some(100.0), 2, Duration::from_secs(10))
    }

    #[test]
    fn merged_stats_add_up() {
        let r = sample();
        assert_eq!(r.total, 1000);
        assert_eq!(r.count(200), 980);
        assert_eq!(r.count(503), 20);
        assert_eq!(r.count(404), 0);
        assert_eq!(r.answered(), 1000);
        assert_eq!(r.bytes, 98_000 + 200);
        assert!((r.rate - 100.0).abs() < 1e-9);
        assert!((r.latency_ms.max - 9.8).abs() < 0.01, "{:?}", r.latency_ms);
        assert!(
            r.latency_ms.p50 > 4.0 && r.latency_ms.p50 < 5.5,
            "{:?}",
            r.latency_ms
        );
        assert!(r.latency_ms.p50 <= r.latency_ms.p90 && r.latency_ms.p90 <= r.latency_ms.p99);
    }

    #[test]
    fn display_has_a_summary_and_fortio_code_lines() {
        let text = sample().to_string();
        assert_eq!(
            text,
            "200: 980  503: 20 | p50 5.0ms p90 9.0ms p99 9.7ms max 9.8ms | 100.0 req/s (target 100) over 10.0s\n\
             Code 200 : 980 (98.0 %)\n\
             Code 503 : 20 (2.0 %)\n\
             Sockets used: 3 (for perfect keepalive, would be 2)"
        );
    }

    #[test]
    fn display_lists_errors() {
        let mut s = Stats::new();
        s.failure(FailureKind::Connect, "connection refused".into());
        s.failure(FailureKind::Timeout, "timed out after 1s".into());
        let r = s.report("http://x/".into(), None, 1, Duration::from_secs(2));
        assert_eq!(r.total, 2);
        assert_eq!(
            r.to_string(),
            "no answers | 1.0 req/s over 2.0s\n\
             Code -1 : 2 (100.0 %)\n\
             Sockets used: 0 (for perfect keepalive, would be 1)\n\
             errors: connect 1, timeout 1, other 0 (last: timed out after 1s)"
        );
    }

    #[test]
    fn json_has_the_fields() {
        let v = serde_json::to_value(sample()).unwrap();
        assert_eq!(v["statuses"]["200"], 980);
        assert_eq!(v["errors"]["connect"], 0);
        assert_eq!(v["sockets"], 3);
        assert_eq!(v["connections"], 2);
        assert_eq!(v["target_rate"], 100.0);
        assert!(v["latency_ms"]["p99"].as_f64().unwrap() > 0.0);
        assert!(v.get("last_error").is_none());
    }
}
