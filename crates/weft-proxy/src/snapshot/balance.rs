//! Load balancing and passive health: Envoy's ROUND_ROBIN, LEAST_REQUEST (power of two
//! choices), RANDOM and RING_HASH over a cluster's endpoints, and outlier detection
//! (consecutive 5xx / gateway errors eject a host for a time that grows with each ejection,
//! within maxEjectionPercent; healthy_panic_threshold as Istio's minHealthPercent).

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use envoy_types::pb::envoy::config::cluster::v3::{Cluster as XCluster, OutlierDetection, cluster};

/// How a cluster picks an endpoint.
#[derive(Debug, Clone)]
pub enum Lb {
    RoundRobin,
    LeastRequest,
    Random,
    /// A ring of (hash, endpoint index), sorted by hash.
    RingHash(Arc<Vec<(u64, usize)>>),
}

impl Lb {
    pub fn compile(c: &XCluster, weights: &[(SocketAddr, u32)]) -> Lb {
        use cluster::LbPolicy as P;
        match P::try_from(c.lb_policy).unwrap_or(P::RoundRobin) {
            P::LeastRequest => Lb::LeastRequest,
            P::Random => Lb::Random,
            P::RingHash | P::Maglev => {
                let min = match &c.lb_config {
                    Some(cluster::LbConfig::RingHashLbConfig(r)) => r
                        .minimum_ring_size
                        .as_ref()
                        .map(|v| v.value)
                        .unwrap_or(1024),
                    _ => 1024,
                };
                Lb::RingHash(Arc::new(ring(weights, min.clamp(1, 1 << 20) as usize)))
            }
            _ => Lb::RoundRobin,
        }
    }
}

/// A stable 64-bit hash (the same input hashes the same in every proxy and run).
pub fn hash64(data: &[u8]) -> u64 {
    #[allow(deprecated)]
    let mut h = std::hash::SipHasher::new_with_keys(0x5745_4654, 0x7269_6e67);
    data.hash(&mut h);
    h.finish()
}

/// Envoy's ring: each endpoint gets a share of `size` points in proportion to its weight.
fn ring(weights: &[(SocketAddr, u32)], size: usize) -> Vec<(u64, usize)> {
    let total: u64 = weights.iter().map(|(_, w)| *w as u64).sum();
    if total == 0 {
        return Vec::new();
    }
    let mut out = Vec::with_capacity(size + weights.len());
    for (i, (addr, w)) in weights.iter().enumerate() {
        let points = ((size as u64 * *w as u64).div_ceil(total)).max(1);
        for p in 0..points {
            out.push((hash64(format!("{addr}_{p}").as_bytes()), i));
        }
    }
    out.sort_unstable();
    out
}

/// The endpoint index a hash lands on.
pub fn ring_lookup(ring: &[(u64, usize)], h: u64) -> Option<usize> {
    if ring.is_empty() {
        return None;
    }
    let i = ring.partition_point(|(k, _)| *k < h);
    Some(ring[i % ring.len()].1)
}

/// What one upstream host carries across config updates: requests in flight and its outlier
/// state.
#[derive(Debug, Default)]
pub struct HostState {
    pub active: AtomicU32,
    consecutive_5xx: AtomicU32,
    consecutive_gateway: AtomicU32,
    /// Milliseconds since the proxy's epoch until which the host is ejected (0: not).
    ejected_until: AtomicU64,
    /// Envoy's ejection multiplier.
    ejections: AtomicU32,
    last_ejected: AtomicU64,
    /// When the host joined the cluster (ms since the proxy's epoch); 0 for hosts that were
    /// there when the cluster was created, which never go through slow start.
    joined: AtomicU64,
}

fn epoch() -> Instant {
    static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

fn now_ms() -> u64 {
    epoch().elapsed().as_millis() as u64 + 1
}

impl HostState {
    pub fn ejected(&self) -> bool {
        self.ejected_until.load(Ordering::Acquire) > now_ms()
    }

    /// The share of its weight the host gets while in slow start (Envoy's
    /// `max(min_weight_percent, (time_in_window / window) ^ (1 / aggression))`), or None once
    /// it is out of it.
    pub fn slow_start_factor(&self, s: &SlowStart) -> Option<f64> {
        self.slow_start_factor_at(s, now_ms())
    }

    fn slow_start_factor_at(&self, s: &SlowStart, now: u64) -> Option<f64> {
        let joined = self.joined.load(Ordering::Acquire);
        if joined == 0 {
            return None;
        }
        let window = s.window.as_millis() as u64;
        let since = now.saturating_sub(joined);
        if since >= window {
            return None;
        }
        let f = (since as f64 / window.max(1) as f64).powf(1.0 / s.aggression);
        Some(f.max(s.min_weight_percent / 100.0))
    }
}

/// Envoy's slow start (`slow_start_config` of the round-robin and least-request policies,
/// Istio's `warmupDurationSecs`): a host that joins the cluster gets a weight growing over the
/// window.
#[derive(Debug, Clone, PartialEq)]
pub struct SlowStart {
    pub window: Duration,
    pub aggression: f64,
    pub min_weight_percent: f64,
}

impl SlowStart {
    pub fn compile(c: &XCluster) -> Option<SlowStart> {
        let cfg = match &c.lb_config {
            Some(cluster::LbConfig::RoundRobinLbConfig(r)) => r.slow_start_config.as_ref(),
            Some(cluster::LbConfig::LeastRequestLbConfig(l)) => l.slow_start_config.as_ref(),
            _ => None,
        }?;
        let w = cfg.slow_start_window.as_ref()?;
        let window = Duration::new(w.seconds.max(0) as u64, w.nanos.max(0) as u32);
        if window.is_zero() {
            return None;
        }
        Some(SlowStart {
            window,
            aggression: cfg
                .aggression
                .as_ref()
                .map(|a| a.default_value)
                .filter(|a| *a > 0.0)
                .unwrap_or(1.0),
            min_weight_percent: cfg
                .min_weight_percent
                .as_ref()
                .map(|p| p.value)
                .filter(|p| *p > 0.0)
                .unwrap_or(10.0)
                .min(100.0),
        })
    }
}

/// The hosts of a cluster by address, kept across updates (so counters survive EDS changes).
#[derive(Debug, Default)]
pub struct Hosts(Mutex<HashMap<SocketAddr, Arc<HostState>>>);

impl Hosts {
    /// The state of each address, new ones created; hosts no longer listed are forgotten.
    pub fn refresh(&self, addrs: &[SocketAddr]) -> Vec<Arc<HostState>> {
        let mut map = match self.0.lock() {
            Ok(m) => m,
            Err(p) => p.into_inner(),
        };
        // Hosts of a cluster's first endpoint list are there from the start; later ones join.
        let joined = if map.is_empty() { 0 } else { now_ms() };
        let out: Vec<_> = addrs
            .iter()
            .map(|a| {
                map.entry(*a)
                    .or_insert_with(|| {
                        Arc::new(HostState {
                            joined: AtomicU64::new(joined),
                            ..Default::default()
                        })
                    })
                    .clone()
            })
            .collect();
        map.retain(|a, _| addrs.contains(a));
        out
    }
}

/// Outlier detection settings (Envoy's defaults where unset).
#[derive(Debug, Clone, PartialEq)]
pub struct Outlier {
    pub consecutive_5xx: Option<u32>,
    pub consecutive_gateway: Option<u32>,
    pub interval: Duration,
    pub base_ejection: Duration,
    pub max_ejection_percent: u32,
    /// Below this share of healthy hosts, route to all (panic); 0 disables.
    pub panic_threshold: f64,
}

impl Outlier {
    pub fn compile(c: &XCluster) -> Option<Outlier> {
        let od: &OutlierDetection = c.outlier_detection.as_ref()?;
        let d = |v: &Option<envoy_types::pb::google::protobuf::Duration>, def: u64| {
            v.as_ref()
                .map(|d| Duration::new(d.seconds.max(0) as u64, d.nanos.max(0) as u32))
                .unwrap_or(Duration::from_millis(def))
        };
        let enforced = |n: &Option<envoy_types::pb::google::protobuf::UInt32Value>,
                        e: &Option<envoy_types::pb::google::protobuf::UInt32Value>,
                        default_n: Option<u32>| {
            let enforcing = e.as_ref().map(|v| v.value).unwrap_or(100);
            if enforcing == 0 {
                return None;
            }
            n.as_ref().map(|v| v.value).or(default_n).filter(|n| *n > 0)
        };
        Some(Outlier {
            consecutive_5xx: enforced(&od.consecutive_5xx, &od.enforcing_consecutive_5xx, Some(5)),
            // Envoy enforces gateway failures only when told (default enforcing 0).
            consecutive_gateway: if od.enforcing_consecutive_gateway_failure.is_some() {
                enforced(
                    &od.consecutive_gateway_failure,
                    &od.enforcing_consecutive_gateway_failure,
                    Some(5),
                )
            } else {
                None
            },
            interval: d(&od.interval, 10_000),
            base_ejection: d(&od.base_ejection_time, 30_000),
            max_ejection_percent: od
                .max_ejection_percent
                .as_ref()
                .map(|v| v.value)
                .unwrap_or(10)
                .min(100),
            panic_threshold: c
                .common_lb_config
                .as_ref()
                .and_then(|l| l.healthy_panic_threshold.as_ref())
                .map(|p| p.value)
                .unwrap_or(50.0),
        })
    }

    /// Records one result from `host`: a status (or None for a local-origin failure, which
    /// counts as a gateway error as Envoy does unless split). Returns true when the host got
    /// ejected.
    pub fn record(&self, host: &HostState, all: &[Arc<HostState>], status: Option<u16>) -> bool {
        let status = status.unwrap_or(503);
        if status < 500 {
            host.consecutive_5xx.store(0, Ordering::Relaxed);
            host.consecutive_gateway.store(0, Ordering::Relaxed);
            return false;
        }
        let n5 = host.consecutive_5xx.fetch_add(1, Ordering::AcqRel) + 1;
        let gw = matches!(status, 502..=504);
        let ng = if gw {
            host.consecutive_gateway.fetch_add(1, Ordering::AcqRel) + 1
        } else {
            host.consecutive_gateway.store(0, Ordering::Relaxed);
            0
        };
        let trip = self.consecutive_5xx.is_some_and(|t| n5 >= t)
            || self.consecutive_gateway.is_some_and(|t| gw && ng >= t);
        if !trip || host.ejected() {
            return false;
        }
        let ejected = all.iter().filter(|h| h.ejected()).count();
        // Envoy ejects while the ejected share is below the maximum (so one host at least).
        if all.is_empty() || (ejected * 100 / all.len()) as u32 >= self.max_ejection_percent {
            return false;
        }
        let now = now_ms();
        // The multiplier grows with each ejection and shrinks by one for each interval the
        // host stayed in since its last ejection.
        let since = now.saturating_sub(host.last_ejected.load(Ordering::Acquire));
        let healthy_intervals = (since / self.interval.as_millis().max(1) as u64) as u32;
        let prior = host.ejections.load(Ordering::Acquire);
        let mult = prior.saturating_sub(healthy_intervals) + 1;
        host.ejections.store(mult, Ordering::Release);
        host.last_ejected.store(now, Ordering::Release);
        let until = now + self.base_ejection.as_millis() as u64 * mult as u64;
        host.ejected_until.store(until, Ordering::Release);
        host.consecutive_5xx.store(0, Ordering::Relaxed);
        host.consecutive_gateway.store(0, Ordering::Relaxed);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn od(n5: u32, max_pct: u32) -> Outlier {
        Outlier {
            consecutive_5xx: Some(n5),
            consecutive_gateway: None,
            interval: Duration::from_secs(10),
            base_ejection: Duration::from_secs(30),
            max_ejection_percent: max_pct,
            panic_threshold: 0.0,
        }
    }

    #[test]
    fn consecutive_errors_eject_within_the_maximum() {
        let hosts: Vec<Arc<HostState>> = (0..3).map(|_| Arc::default()).collect();
        let o = od(2, 50);
        assert!(!o.record(&hosts[0], &hosts, Some(503)));
        assert!(
            !o.record(&hosts[0], &hosts, Some(200)),
            "a success resets the count"
        );
        assert!(!o.record(&hosts[0], &hosts, Some(500)));
        assert!(
            o.record(&hosts[0], &hosts, None),
            "a connect failure counts"
        );
        assert!(hosts[0].ejected());
        // 1 of 3 ejected is 33% < 50%: one more may go; then 66% ≥ 50%: no third.
        o.record(&hosts[1], &hosts, Some(502));
        assert!(o.record(&hosts[1], &hosts, Some(502)));
        o.record(&hosts[2], &hosts, Some(502));
        assert!(!o.record(&hosts[2], &hosts, Some(502)));
        assert!(!hosts[2].ejected());
    }

    #[test]
    fn ejection_time_grows() {
        let hosts: Vec<Arc<HostState>> = vec![Arc::default(), Arc::default()];
        let mut o = od(1, 100);
        o.base_ejection = Duration::from_millis(40);
        assert!(o.record(&hosts[0], &hosts, Some(500)));
        let first = hosts[0].ejected_until.load(Ordering::Acquire) - now_ms();
        hosts[0].ejected_until.store(0, Ordering::Release);
        assert!(o.record(&hosts[0], &hosts, Some(500)));
        let second = hosts[0].ejected_until.load(Ordering::Acquire) - now_ms();
        assert!(second > first + 20, "{first} ms then {second} ms");
    }

    #[test]
    fn ring_is_stable_and_weighted() {
        let a: SocketAddr = "10.0.0.1:80".parse().unwrap();
        let b: SocketAddr = "10.0.0.2:80".parse().unwrap();
        let r = ring(&[(a, 1), (b, 3)], 1024);
        let same = ring(&[(a, 1), (b, 3)], 1024);
        assert_eq!(r, same);
        let on_b = (0..4000u32)
            .filter(|i| ring_lookup(&r, hash64(&i.to_be_bytes())) == Some(1))
            .count();
        assert!((2400..3600).contains(&on_b), "{on_b}");
        let k = hash64(b"jason");
        assert_eq!(ring_lookup(&r, k), ring_lookup(&same, k));
    }

    /// The factor of a host that joined at 1 ms, `ms` later.
    fn factor_after(s: &SlowStart, ms: u64) -> Option<f64> {
        let h = HostState {
            joined: AtomicU64::new(1),
            ..Default::default()
        };
        h.slow_start_factor_at(s, 1 + ms)
    }

    #[test]
    fn slow_start_grows_the_weight_over_the_window() {
        let s = SlowStart {
            window: Duration::from_secs(100),
            aggression: 1.0,
            min_weight_percent: 10.0,
        };
        assert_eq!(factor_after(&s, 50_000), Some(0.5));
        assert_eq!(factor_after(&s, 0), Some(0.1), "the minimum");
        assert_eq!(factor_after(&s, 5_000), Some(0.1), "still the minimum");
        assert_eq!(factor_after(&s, 100_000), None, "past the window");
        assert_eq!(
            HostState::default().slow_start_factor_at(&s, 50_000),
            None,
            "there from the start"
        );
        let steep = SlowStart {
            aggression: 2.0,
            ..s.clone()
        };
        assert_eq!(factor_after(&steep, 25_000), Some(0.5), "sqrt(0.25)");
    }

    #[test]
    fn hosts_of_the_first_list_do_not_warm_up_later_ones_do() {
        let hosts = Hosts::default();
        let a: SocketAddr = "10.0.0.1:80".parse().unwrap();
        let b: SocketAddr = "10.0.0.2:80".parse().unwrap();
        let first = hosts.refresh(&[a]);
        assert_eq!(first[0].joined.load(Ordering::Relaxed), 0);
        let second = hosts.refresh(&[a, b]);
        assert!(Arc::ptr_eq(&first[0], &second[0]), "kept across updates");
        assert_eq!(second[0].joined.load(Ordering::Relaxed), 0);
        assert!(second[1].joined.load(Ordering::Relaxed) > 0, "b joined");
    }
}
