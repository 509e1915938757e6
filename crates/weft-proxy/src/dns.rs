//! The resolver of STRICT_DNS and LOGICAL_DNS clusters (ServiceEntry `resolution: DNS` and
//! `DNS_ROUND_ROBIN`): the host names their endpoints name are looked up with hickory (the
//! pod's `/etc/resolv.conf` and `/etc/hosts`, IPv4 as istiod asks), again when the answer's
//! TTL runs out (with `respect_dns_ttl`; never sooner than Envoy's 5 s `dns_min_refresh_rate`,
//! never later than the cluster's `dns_refresh_rate`, the hosts file's answers being valid for
//! a day), else every `dns_refresh_rate`. Changed answers are handed to the config handler,
//! which recompiles the snapshot, as an EDS update would. A failed lookup keeps the previous
//! answer (as Envoy does) and is retried; a name that does not exist has no addresses, and its
//! cluster answers 503 with `UH` (no healthy upstream) rather than hanging. Runs on the xDS
//! thread: lookups never touch the data path.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use envoy_types::pb::envoy::config::cluster::v3::cluster::{ClusterDiscoveryType, DiscoveryType};
use futures::future::BoxFuture;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::snapshot::{DnsAnswers, Raw, dns_endpoint};

/// Envoy's `dns_refresh_rate` default.
pub const DEFAULT_REFRESH: Duration = Duration::from_secs(5);
/// Envoy's `dns_min_refresh_rate`: the shortest TTL-driven refresh.
pub const MIN_REFRESH: Duration = Duration::from_secs(5);
/// How long one lookup may take.
pub const LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);

/// How often to look a host up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refresh {
    /// The cluster's `dns_refresh_rate` (the shortest among the clusters naming the host).
    pub rate: Duration,
    /// `respect_dns_ttl`.
    pub respect_ttl: bool,
}

/// The host names to resolve and how often.
pub type Targets = BTreeMap<String, Refresh>;

/// The host names the DNS clusters of `raw` name.
pub fn targets(raw: &Raw) -> Targets {
    let mut out: Targets = BTreeMap::new();
    for c in raw.clusters.values() {
        let Some(ClusterDiscoveryType::Type(t)) = c.cluster_discovery_type else {
            continue;
        };
        if !matches!(
            DiscoveryType::try_from(t),
            Ok(DiscoveryType::StrictDns | DiscoveryType::LogicalDns)
        ) {
            continue;
        }
        #[allow(deprecated)] // the fields istiod 1.14 sets
        let refresh = Refresh {
            rate: c
                .dns_refresh_rate
                .as_ref()
                .map(|d| Duration::new(d.seconds.max(0) as u64, d.nanos.max(0) as u32))
                .filter(|d| !d.is_zero())
                .unwrap_or(DEFAULT_REFRESH),
            respect_ttl: c.respect_dns_ttl,
        };
        let hosts = c
            .load_assignment
            .iter()
            .flat_map(|a| &a.endpoints)
            .flat_map(|l| &l.lb_endpoints)
            .filter_map(|e| match &e.host_identifier {
                Some(envoy_types::pb::envoy::config::endpoint::v3::lb_endpoint::HostIdentifier::Endpoint(ep)) => {
                    dns_endpoint(ep.address.as_ref()).map(|(h, _)| h)
                }
                _ => None,
            })
            .filter(|h| h.parse::<IpAddr>().is_err());
        for host in hosts {
            out.entry(host.to_string())
                .and_modify(|r| {
                    r.rate = r.rate.min(refresh.rate);
                    r.respect_ttl |= refresh.respect_ttl;
                })
                .or_insert(refresh);
        }
    }
    out
}

/// Why a lookup gave no answer (the previous one is kept).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DnsError {
    #[error(
        "cannot resolve {host}: {reason}; check the pod's /etc/resolv.conf and its nameservers"
    )]
    Lookup { host: String, reason: String },
    #[error("no answer for {host} within {timeout:?}; check the pod's nameservers")]
    Timeout { host: String, timeout: Duration },
    #[error("cannot set up the resolver: {0}")]
    Setup(String),
}

/// A lookup's outcome: the addresses (empty when the name does not exist) and how long they
/// are valid; Err for a failure (timeout, no server), which keeps the previous answer.
pub type Answer = Result<(Vec<IpAddr>, Duration), DnsError>;

/// Looks host names up.
pub trait Lookup: Send + Sync + 'static {
    fn lookup(&self, host: String) -> BoxFuture<'static, Answer>;
}

/// hickory with the pod's system configuration, read again for every lookup so that edits of
/// `/etc/hosts` and `/etc/resolv.conf` apply.
pub struct SystemLookup;

impl Lookup for SystemLookup {
    fn lookup(&self, host: String) -> BoxFuture<'static, Answer> {
        Box::pin(async move {
            use hickory_resolver::config::{LookupIpStrategy, ResolveHosts, ResolverConfig};
            use hickory_resolver::net::runtime::TokioRuntimeProvider;
            let provider = TokioRuntimeProvider::default();
            // No nameserver configured: the hosts file alone.
            let mut builder =
                hickory_resolver::TokioResolver::builder_tokio().unwrap_or_else(|e| {
                    tracing::debug!(error = %e, "cannot read /etc/resolv.conf; resolving from /etc/hosts only");
                    hickory_resolver::TokioResolver::builder_with_config(
                        ResolverConfig::from_parts(None, vec![], vec![]),
                        provider,
                    )
                });
            let opts = builder.options_mut();
            opts.ip_strategy = LookupIpStrategy::Ipv4Only;
            opts.use_hosts_file = ResolveHosts::Always;
            opts.timeout = Duration::from_secs(2);
            opts.attempts = 2;
            let resolver = builder
                .build()
                .map_err(|e| DnsError::Setup(e.to_string()))?;
            match resolver.lookup_ip(host.as_str()).await {
                Ok(found) => {
                    let ttl = found
                        .valid_until()
                        .saturating_duration_since(std::time::Instant::now());
                    Ok((found.iter().collect(), ttl))
                }
                Err(e) if e.is_no_records_found() || e.is_nx_domain() => {
                    Ok((Vec::new(), Duration::ZERO))
                }
                Err(e) => Err(DnsError::Lookup {
                    host,
                    reason: e.to_string(),
                }),
            }
        })
    }
}

/// When to look again after `answer`.
pub fn next_lookup(refresh: Refresh, answer: &Answer) -> Duration {
    match answer {
        Ok((_, ttl)) if refresh.respect_ttl => {
            (*ttl).clamp(MIN_REFRESH, refresh.rate.max(MIN_REFRESH))
        }
        _ => refresh.rate,
    }
}

/// Resolves the targets for ever, calling `apply` with the whole answer set each time an
/// answer changes (or a host stops being a target).
pub async fn run(
    lookup: Arc<dyn Lookup>,
    mut targets: watch::Receiver<Targets>,
    mut apply: impl FnMut(&DnsAnswers),
    warm: Arc<std::sync::atomic::AtomicBool>,
) {
    let mut answers: DnsAnswers = BTreeMap::new();
    let mut due: BTreeMap<String, Instant> = BTreeMap::new();
    // Hosts looked up at least once (answered or failed): once every target is, the clusters
    // are warm (Envoy's initial DNS resolution before the proxy is ready).
    let mut looked: BTreeSet<String> = BTreeSet::new();
    loop {
        let current = targets.borrow_and_update().clone();
        let now = Instant::now();
        let before = answers.len();
        answers.retain(|h, _| current.contains_key(h));
        due.retain(|h, _| current.contains_key(h));
        let changed = answers.len() != before;
        for host in current.keys() {
            due.entry(host.clone()).or_insert(now);
        }
        let ready: Vec<String> = due
            .iter()
            .filter(|(_, t)| **t <= now)
            .map(|(h, _)| h.clone())
            .collect();
        if changed {
            apply(&answers);
        }
        // Lookups run together; each answer applies as it comes, so a slow name does not hold
        // back the others.
        let mut pending: futures::stream::FuturesUnordered<_> = ready
            .into_iter()
            .map(|host| {
                let lookup = lookup.clone();
                async move {
                    let answer =
                        match tokio::time::timeout(LOOKUP_TIMEOUT, lookup.lookup(host.clone()))
                            .await
                        {
                            Ok(answer) => answer,
                            Err(_) => Err(DnsError::Timeout {
                                host: host.clone(),
                                timeout: LOOKUP_TIMEOUT,
                            }),
                        };
                    (host, answer)
                }
            })
            .collect();
        while let Some((host, answer)) = futures::StreamExt::next(&mut pending).await {
            let Some(refresh) = current.get(&host).copied() else {
                continue;
            };
            looked.insert(host.clone());
            due.insert(host.clone(), Instant::now() + next_lookup(refresh, &answer));
            match answer {
                Ok((ips, _)) => {
                    // The resolver's order (LOGICAL_DNS takes the first, so a rotating
                    // answer spreads clients), without duplicates.
                    let mut seen = BTreeSet::new();
                    let ips: Vec<IpAddr> = ips.into_iter().filter(|ip| seen.insert(*ip)).collect();
                    if answers.get(&host) != Some(&ips) {
                        tracing::info!(%host, addresses = ?ips, "DNS answer for a cluster endpoint");
                        answers.insert(host, ips);
                        apply(&answers);
                    }
                }
                Err(error) => {
                    tracing::warn!(%host, %error, "DNS lookup failed; keeping the previous answer");
                }
            }
        }
        if current.keys().all(|h| looked.contains(h)) {
            warm.store(true, std::sync::atomic::Ordering::Release);
        }
        let next = due.values().min().copied();
        tokio::select! {
            r = targets.changed() => if r.is_err() { return },
            _ = async {
                match next {
                    Some(t) => tokio::time::sleep_until(t).await,
                    None => std::future::pending().await,
                }
            } => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// Answers from a table the test edits; counts lookups per host.
    #[derive(Default)]
    struct Table {
        answers: Mutex<BTreeMap<String, Answer>>,
        calls: Mutex<BTreeMap<String, usize>>,
    }

    impl Lookup for Arc<Table> {
        fn lookup(&self, host: String) -> BoxFuture<'static, Answer> {
            *self.calls.lock().unwrap().entry(host.clone()).or_default() += 1;
            let a = self
                .answers
                .lock()
                .unwrap()
                .get(&host)
                .cloned()
                .unwrap_or(Ok((vec![], Duration::ZERO)));
            Box::pin(async move { a })
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn refresh_follows_ttl_within_bounds() {
        let ttl = Refresh {
            rate: Duration::from_secs(60),
            respect_ttl: true,
        };
        let ok = |secs| Ok((vec![ip("192.0.2.1")], Duration::from_secs(secs)));
        assert_eq!(next_lookup(ttl, &ok(30)), Duration::from_secs(30));
        assert_eq!(next_lookup(ttl, &ok(1)), MIN_REFRESH);
        // The hosts file's day-long answers: at most the refresh rate.
        assert_eq!(next_lookup(ttl, &ok(86_400)), Duration::from_secs(60));
        let failed = Err(DnsError::Timeout {
            host: "x".into(),
            timeout: LOOKUP_TIMEOUT,
        });
        assert_eq!(next_lookup(ttl, &failed), Duration::from_secs(60));
        let fixed = Refresh {
            rate: Duration::from_secs(7),
            respect_ttl: false,
        };
        assert_eq!(next_lookup(fixed, &ok(30)), Duration::from_secs(7));
    }

    #[tokio::test(start_paused = true)]
    async fn answers_follow_ttls_and_failures_keep_the_last_one() {
        let table = Arc::new(Table::default());
        let set = |h: &str, a: Answer| {
            table.answers.lock().unwrap().insert(h.to_string(), a);
        };
        set(
            "a.test",
            Ok((
                vec![ip("192.0.2.2"), ip("192.0.2.1"), ip("192.0.2.2")],
                Duration::from_secs(10),
            )),
        );
        set(
            "b.test",
            Ok((vec![ip("192.0.2.9")], Duration::from_secs(300))),
        );
        let refresh = Refresh {
            rate: Duration::from_secs(60),
            respect_ttl: true,
        };
        let (tx, rx) = watch::channel(Targets::from([
            ("a.test".to_string(), refresh),
            ("b.test".to_string(), refresh),
        ]));
        let (applied_tx, mut applied) = tokio::sync::mpsc::unbounded_channel();
        let warm = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let task = tokio::spawn(run(
            Arc::new(table.clone()),
            rx,
            move |a: &DnsAnswers| {
                let _ = applied_tx.send(a.clone());
            },
            warm.clone(),
        ));
        // Each answer applies as it comes: wait for the set with both.
        let mut first = applied.recv().await.unwrap();
        while first.len() < 2 {
            first = applied.recv().await.unwrap();
        }
        // The resolver's order is kept (LOGICAL_DNS uses the first), duplicates dropped.
        assert_eq!(first["a.test"], vec![ip("192.0.2.2"), ip("192.0.2.1")]);
        assert_eq!(first["b.test"], vec![ip("192.0.2.9")]);
        tokio::task::yield_now().await;
        assert!(
            warm.load(std::sync::atomic::Ordering::Acquire),
            "every target looked up once"
        );

        // a's 10 s TTL runs out: looked up again, its new answer applied; b (TTL 300 s,
        // refresh 60 s) is not due yet.
        set(
            "a.test",
            Ok((vec![ip("192.0.2.3")], Duration::from_secs(10))),
        );
        let second = applied.recv().await.unwrap();
        assert_eq!(second["a.test"], vec![ip("192.0.2.3")]);
        assert_eq!(table.calls.lock().unwrap()["b.test"], 1);

        // A failure keeps the answer (nothing applied); the name vanishing empties it.
        set(
            "a.test",
            Err(DnsError::Lookup {
                host: "a.test".into(),
                reason: "timeout".into(),
            }),
        );
        tokio::time::sleep(Duration::from_secs(25)).await;
        assert!(applied.try_recv().is_err(), "a failure changes nothing");
        assert!(table.calls.lock().unwrap()["a.test"] >= 3);
        set("a.test", Ok((vec![], Duration::ZERO)));
        let gone = applied.recv().await.unwrap();
        assert_eq!(gone["a.test"], Vec::<IpAddr>::new());
        assert!(
            table.calls.lock().unwrap()["b.test"] >= 2,
            "refreshed at 60 s at the latest"
        );

        // A host that stops being a target is dropped.
        tx.send_replace(Targets::from([("b.test".to_string(), refresh)]));
        let dropped = applied.recv().await.unwrap();
        assert!(!dropped.contains_key("a.test"));
        task.abort();
    }
}
