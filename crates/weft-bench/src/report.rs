//! The xDS load report: Serialize for `--json`, Display as small markdown tables.

use std::fmt;
use std::time::Duration;

use serde::Serialize;

/// Nearest-rank percentiles of a set of latencies, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Percentiles {
    /// Number of latencies.
    pub samples: usize,
    /// Median.
    pub p50_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Largest.
    pub max_ms: f64,
}

impl Percentiles {
    /// Percentiles of `values`; `None` when there are none.
    pub fn of(values: &[Duration]) -> Option<Self> {
        if values.is_empty() {
            return None;
        }
        let mut v = values.to_vec();
        v.sort_unstable();
        let rank = |p: f64| {
            let i = ((p / 100.0) * v.len() as f64).ceil() as usize;
            ms(v[i.clamp(1, v.len()) - 1])
        };
        Some(Percentiles {
            samples: v.len(),
            p50_ms: rank(50.0),
            p99_ms: rank(99.0),
            max_ms: ms(v[v.len() - 1]),
        })
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Responses received by the whole fleet, per xDS type.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct TypeCounts {
    /// Cluster responses.
    pub cds: u64,
    /// ClusterLoadAssignment responses.
    pub eds: u64,
    /// Listener responses.
    pub lds: u64,
    /// RouteConfiguration responses.
    pub rds: u64,
}

impl TypeCounts {
    /// Counts from `[CDS, EDS, LDS, RDS]`.
    pub fn from_array(c: [u64; 4]) -> Self {
        TypeCounts {
            cds: c[0],
            eds: c[1],
            lds: c[2],
            rds: c[3],
        }
    }

    /// `after - before`, per type.
    pub fn delta(before: [u64; 4], after: [u64; 4]) -> Self {
        Self::from_array(std::array::from_fn(|i| after[i].saturating_sub(before[i])))
    }
}

impl fmt::Display for TypeCounts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}/{}", self.cds, self.eds, self.lds, self.rds)
    }
}

/// The initial sync of the fleet.
#[derive(Debug, Clone, Serialize)]
pub struct InitialSync {
    /// Proxies that received CDS, EDS, LDS and RDS.
    pub synced: usize,
    /// Per proxy, from starting its ADS client to having all four types.
    pub per_proxy: Option<Percentiles>,
    /// From starting the first client to the last proxy synced, seconds.
    pub all_synced_s: f64,
    /// Clusters per proxy (of the first proxy).
    pub clusters: usize,
    /// ClusterLoadAssignments per proxy.
    pub cluster_load_assignments: usize,
    /// Listeners per proxy.
    pub listeners: usize,
    /// Route tables per proxy.
    pub route_tables: usize,
    /// Resource bytes received by the whole fleet during the initial sync.
    pub bytes: u64,
    /// Responses received by the fleet during the initial sync.
    pub responses: TypeCounts,
}

/// One timed config change.
#[derive(Debug, Clone, Serialize)]
pub struct ChangeResult {
    /// What was changed.
    pub change: String,
    /// The xDS type whose update was timed (CDS or EDS).
    pub xds_type: String,
    /// Proxies that received the change.
    pub converged: usize,
    /// Proxies that had not received it when the wait ended.
    pub missed: usize,
    /// From writing the file to each proxy receiving the update.
    pub latency: Option<Percentiles>,
    /// Resource bytes received by the fleet until the pushes settled.
    pub bytes: u64,
    /// Responses received by the fleet until the pushes settled.
    pub responses: TypeCounts,
}

/// The endpoint churn phase.
#[derive(Debug, Clone, Serialize)]
pub struct ChurnResult {
    /// Endpoint address changes written (one every 100 ms).
    pub writes: usize,
    /// From the first write to the last proxy receiving the last one, seconds.
    pub seconds: f64,
    /// EDS responses per proxy during the phase (mean).
    pub eds_pushes_per_proxy: f64,
    /// EDS responses per proxy per second.
    pub push_rate_per_s: f64,
    /// For every (proxy, write): from the write to the proxy having it or a later one.
    pub lag: Option<Percentiles>,
    /// Proxies that never received the last write.
    pub undelivered: usize,
    /// Resource bytes received by the fleet during the phase.
    pub bytes: u64,
    /// Responses received by the fleet during the phase.
    pub responses: TypeCounts,
}

/// CPU seconds of a process per phase.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct PhaseCpu {
    /// Writing the fleet until the control plane served it.
    pub load_s: f64,
    /// Initial sync of all proxies.
    pub initial_sync_s: f64,
    /// The timed changes.
    pub changes_s: f64,
    /// The churn phase.
    pub churn_s: f64,
    /// The whole run.
    pub total_s: f64,
}

/// CPU and memory of a process during the run.
#[derive(Debug, Clone, Serialize)]
pub struct ProcessUsage {
    /// Its pid.
    pub pid: u32,
    /// CPU seconds per phase.
    pub cpu: PhaseCpu,
    /// Largest resident set size sampled during the run (every 200 ms), MiB.
    pub rss_peak_mib: f64,
    /// Resident set size at the end, MiB.
    pub rss_end_mib: f64,
    /// The kernel's peak resident set size of the process's life (VmHWM), MiB.
    pub rss_hwm_mib: f64,
}

/// What `run_xds_load` measured.
#[derive(Debug, Clone, Serialize)]
pub struct XdsLoadReport {
    /// The control plane address.
    pub control_plane: String,
    /// Where the fleet lived: `directory` (ServiceEntries and WorkloadEntries in the config
    /// directory) or `kubernetes` (Services and Pods in a cluster).
    pub source: String,
    /// Simulated proxies.
    pub proxies: usize,
    /// The proxies used incremental (delta) xDS.
    pub delta: bool,
    /// Generated services.
    pub services: usize,
    /// WorkloadEntries per service.
    pub endpoints_per_service: usize,
    /// Namespaces the services are spread over.
    pub namespaces: usize,
    /// Resources written to the config directory.
    pub resources_written: usize,
    /// CPUs available to this process (the fleet and the control plane share them).
    pub cores: usize,
    /// From writing the fleet to the control plane serving it, seconds.
    pub config_load_s: f64,
    /// The initial sync.
    pub initial: InitialSync,
    /// The timed changes, in order.
    pub changes: Vec<ChangeResult>,
    /// Convergence over all proxies and changes.
    pub convergence: Option<Percentiles>,
    /// The churn phase (absent with `--churn-seconds 0`).
    pub churn: Option<ChurnResult>,
    /// Resource bytes received by the fleet over the run.
    pub bytes_total: u64,
    /// Proxies whose ADS stream ended at least once (they reconnect with backoff).
    pub stream_errors: usize,
    /// The most common reason a stream ended, if any did.
    pub stream_error: Option<String>,
    /// The control plane's CPU and memory, with `--control-pid`.
    pub control: Option<ProcessUsage>,
    /// The fleet's own CPU and memory (this process).
    pub fleet: ProcessUsage,
}

impl XdsLoadReport {
    /// The report as pretty JSON (`json`) or markdown.
    pub fn render(&self, json: bool) -> Result<String, crate::BenchError> {
        if json {
            Ok(serde_json::to_string_pretty(self)?)
        } else {
            Ok(self.to_string())
        }
    }
}

struct Pct<'a>(&'a Option<Percentiles>);

impl fmt::Display for Pct<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(p) => write!(
                f,
                "{} / {} / {} ms",
                Ms(p.p50_ms),
                Ms(p.p99_ms),
                Ms(p.max_ms)
            ),
            None => f.write_str("-"),
        }
    }
}

struct Ms(f64);

impl fmt::Display for Ms {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 >= 10.0 {
            write!(f, "{:.0}", self.0)
        } else {
            write!(f, "{:.1}", self.0)
        }
    }
}

struct Bytes(u64);

impl fmt::Display for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0 as f64;
        if b >= 1024.0 * 1024.0 * 1024.0 {
            write!(f, "{:.2} GiB", b / (1024.0 * 1024.0 * 1024.0))
        } else if b >= 1024.0 * 1024.0 {
            write!(f, "{:.1} MiB", b / (1024.0 * 1024.0))
        } else {
            write!(f, "{:.1} KiB", b / 1024.0)
        }
    }
}

fn cpu_row(f: &mut fmt::Formatter<'_>, who: &str, u: &ProcessUsage) -> fmt::Result {
    let c = &u.cpu;
    writeln!(
        f,
        "| {who} CPU s, load / sync / changes / churn (total) | {:.2} / {:.2} / {:.2} / {:.2} ({:.2}) |",
        c.load_s, c.initial_sync_s, c.changes_s, c.churn_s, c.total_s
    )?;
    writeln!(
        f,
        "| {who} RSS peak / end (VmHWM), pid {} | {:.0} / {:.0} MiB ({:.0}) |",
        u.pid, u.rss_peak_mib, u.rss_end_mib, u.rss_hwm_mib
    )
}

impl fmt::Display for XdsLoadReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let i = &self.initial;
        writeln!(
            f,
            "## weft control under xDS load ({})\n",
            self.control_plane
        )?;
        writeln!(f, "| | |\n|---|---|")?;
        writeln!(
            f,
            "| fleet | {} proxies ({} xDS); {} services × {} endpoints in {} namespaces ({} resources, {}) |",
            self.proxies,
            if self.delta {
                "delta"
            } else {
                "state-of-the-world"
            },
            self.services,
            self.endpoints_per_service,
            self.namespaces,
            self.resources_written,
            self.source
        )?;
        writeln!(
            f,
            "| config load (fleet written → served) | {:.2} s |",
            self.config_load_s
        )?;
        writeln!(
            f,
            "| initial sync per proxy, p50 / p99 / max | {} |",
            Pct(&i.per_proxy)
        )?;
        writeln!(
            f,
            "| all proxies synced after | {:.2} s ({}/{}) |",
            i.all_synced_s, i.synced, self.proxies
        )?;
        writeln!(
            f,
            "| config per proxy | {} clusters, {} CLAs, {} listeners, {} route tables; {} |",
            i.clusters,
            i.cluster_load_assignments,
            i.listeners,
            i.route_tables,
            Bytes(i.bytes / self.proxies.max(1) as u64)
        )?;
        writeln!(
            f,
            "| initial responses, CDS/EDS/LDS/RDS | {} |",
            i.responses
        )?;
        let missed: usize = self.changes.iter().map(|c| c.missed).sum();
        writeln!(
            f,
            "| change convergence, p50 / p99 / max | {} ({} changes, {missed} missed) |",
            Pct(&self.convergence),
            self.changes.len()
        )?;
        if let Some(c) = &self.churn {
            writeln!(
                f,
                "| endpoint churn | {} writes in {:.1} s; {:.1} EDS pushes per proxy ({:.2}/s); responses {} |",
                c.writes, c.seconds, c.eds_pushes_per_proxy, c.push_rate_per_s, c.responses
            )?;
            writeln!(
                f,
                "| churn lag, p50 / p99 / max | {} ({} proxies missed the last write) |",
                Pct(&c.lag),
                c.undelivered
            )?;
        }
        let changes: u64 = self.changes.iter().map(|c| c.bytes).sum();
        let churn = self.churn.as_ref().map_or(0, |c| c.bytes);
        writeln!(
            f,
            "| bytes received by the fleet | {} (initial {}, changes {}, churn {}) |",
            Bytes(self.bytes_total),
            Bytes(i.bytes),
            Bytes(changes),
            Bytes(churn)
        )?;
        if let Some(c) = &self.control {
            cpu_row(f, "control plane", c)?;
        }
        cpu_row(f, "fleet", &self.fleet)?;
        match &self.stream_error {
            Some(e) => writeln!(
                f,
                "| proxies whose stream broke | {} (mostly: {}) |",
                self.stream_errors,
                e.chars().take(160).collect::<String>().replace('|', "/")
            )?,
            None => writeln!(f, "| proxies whose stream broke | {} |", self.stream_errors)?,
        }
        writeln!(
            f,
            "| cores (shared by fleet and control plane) | {} |",
            self.cores
        )?;
        if !self.changes.is_empty() {
            writeln!(
                f,
                "\n| # | change | timed | p50 / p99 / max | missed | responses C/E/L/R | bytes |\n|---|---|---|---|---|---|---|"
            )?;
            for (n, c) in self.changes.iter().enumerate() {
                writeln!(
                    f,
                    "| {n} | {} | {} | {} | {} | {} | {} |",
                    c.change,
                    c.xds_type,
                    Pct(&c.latency),
                    c.missed,
                    c.responses,
                    Bytes(c.bytes)
                )?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        assert_eq!(Percentiles::of(&[]), None);
        let v: Vec<Duration> = (1..=200).map(Duration::from_millis).collect();
        let p = Percentiles::of(&v).unwrap();
        assert_eq!(p.samples, 200);
        assert_eq!((p.p50_ms, p.p99_ms, p.max_ms), (100.0, 198.0, 200.0));
        let one = Percentiles::of(&[Duration::from_millis(7)]).unwrap();
        assert_eq!((one.p50_ms, one.p99_ms, one.max_ms), (7.0, 7.0, 7.0));
    }

    #[test]
    fn renders_markdown_and_json() {
        let usage = ProcessUsage {
            pid: 1,
            cpu: PhaseCpu::default(),
            rss_peak_mib: 10.0,
            rss_end_mib: 9.0,
            rss_hwm_mib: 11.0,
        };
        let r = XdsLoadReport {
            control_plane: "127.0.0.1:15010".into(),
            source: "directory".into(),
            proxies: 2,
            delta: true,
            services: 1,
            endpoints_per_service: 2,
            namespaces: 1,
            resources_written: 3,
            cores: 2,
            config_load_s: 0.5,
            initial: InitialSync {
                synced: 2,
                per_proxy: Percentiles::of(&[Duration::from_millis(5)]),
                all_synced_s: 0.1,
                clusters: 5,
                cluster_load_assignments: 2,
                listeners: 4,
                route_tables: 1,
                bytes: 4096,
                responses: TypeCounts::from_array([2, 2, 2, 2]),
            },
            changes: vec![ChangeResult {
                change: "add WorkloadEntry x".into(),
                xds_type: "EDS".into(),
                converged: 2,
                missed: 0,
                latency: Percentiles::of(&[Duration::from_millis(120)]),
                bytes: 100,
                responses: TypeCounts::from_array([0, 2, 0, 0]),
            }],
            convergence: Percentiles::of(&[Duration::from_millis(120)]),
            churn: None,
            bytes_total: 5000,
            stream_errors: 0,
            stream_error: None,
            control: Some(usage.clone()),
            fleet: usage,
        };
        let md = r.render(false).unwrap();
        assert!(md.contains("| initial sync per proxy, p50 / p99 / max | 5.0 / 5.0 / 5.0 ms |"));
        assert!(md.contains(
            "| 0 | add WorkloadEntry x | EDS | 120 / 120 / 120 ms | 0 | 0/2/0/0 | 0.1 KiB |"
        ));
        assert!(md.contains("control plane RSS"));
        let json: serde_json::Value = serde_json::from_str(&r.render(true).unwrap()).unwrap();
        assert_eq!(json["initial"]["clusters"], 5);
        assert_eq!(json["changes"][0]["latency"]["p50_ms"], 120.0);
    }
}
