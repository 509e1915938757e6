//! A simulated sidecar: an ADS handler that subscribes as Envoy does (CDS and LDS wildcard, EDS
//! for the EDS clusters CDS named, RDS for the route tables LDS named) and records, per type, how
//! many responses came, their version, size and arrival time. It decodes only cluster names,
//! route names and the endpoints of the few clusters the benchmark watches.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use weft_xds::Handler;
use weft_xds::client::Update;
use weft_xds::types::{CLUSTER, ENDPOINT, LISTENER, ROUTE};

use crate::lite;

/// The four types a sidecar subscribes to, in Envoy's order.
pub(crate) const TYPES: [&str; 4] = [CLUSTER, ENDPOINT, LISTENER, ROUTE];
pub(crate) const CDS: usize = 0;
pub(crate) const EDS: usize = 1;
pub(crate) const LDS: usize = 2;
pub(crate) const RDS: usize = 3;

fn type_index(type_url: &str) -> Option<usize> {
    TYPES.iter().position(|t| *t == type_url)
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Clusters whose content the benchmark follows, by index.
#[derive(Debug, Default, Clone)]
pub(crate) struct Watches {
    /// EDS clusters whose endpoint addresses are recorded when they change.
    pub eds: Vec<String>,
    /// CDS clusters whose first appearance is recorded.
    pub cds: Vec<String>,
}

impl Watches {
    fn add(list: &mut Vec<String>, name: String) -> u32 {
        let i = list.iter().position(|n| *n == name).unwrap_or_else(|| {
            list.push(name);
            list.len() - 1
        });
        i as u32
    }

    pub(crate) fn eds(&mut self, cluster: String) -> u32 {
        Self::add(&mut self.eds, cluster)
    }

    pub(crate) fn cds(&mut self, cluster: String) -> u32 {
        Self::add(&mut self.cds, cluster)
    }
}

/// State shared by every simulated proxy of a run.
pub(crate) struct Shared {
    /// Time zero of the run; every recorded time is relative to it.
    pub start: Instant,
    /// Encoded resource bytes received by all proxies.
    pub bytes: AtomicU64,
    /// Responses received by all proxies, per type (CDS, EDS, LDS, RDS).
    pub responses: [AtomicU64; 4],
    /// Nanoseconds since `start` of the latest response to any proxy.
    last_rx_ns: AtomicU64,
    eds_watch: HashMap<String, u32>,
    cds_watch: HashMap<String, u32>,
    /// The latest EDS and RDS name lists, shared by proxies that have the same one.
    eds_names: Mutex<Arc<Vec<String>>>,
    rds_names: Mutex<Arc<Vec<String>>>,
}

impl Shared {
    pub(crate) fn new(watches: &Watches) -> Self {
        let index = |v: &[String]| {
            v.iter()
                .enumerate()
                .map(|(i, n)| (n.clone(), i as u32))
                .collect()
        };
        Shared {
            start: Instant::now(),
            bytes: AtomicU64::new(0),
            responses: Default::default(),
            last_rx_ns: AtomicU64::new(0),
            eds_watch: index(&watches.eds),
            cds_watch: index(&watches.cds),
            eds_names: Mutex::default(),
            rds_names: Mutex::default(),
        }
    }

    /// Time since the run started.
    pub(crate) fn now(&self) -> Duration {
        self.start.elapsed()
    }

    /// Responses received by all proxies so far, per type.
    pub(crate) fn response_counts(&self) -> [u64; 4] {
        std::array::from_fn(|i| self.responses[i].load(Ordering::Relaxed))
    }

    /// Encoded resource bytes received by all proxies so far.
    pub(crate) fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    /// When the latest response to any proxy arrived.
    pub(crate) fn last_rx(&self) -> Duration {
        Duration::from_nanos(self.last_rx_ns.load(Ordering::Relaxed))
    }

    fn intern(slot: &Mutex<Arc<Vec<String>>>, names: Vec<String>) -> Arc<Vec<String>> {
        let mut latest = lock(slot);
        if **latest != names {
            *latest = Arc::new(names);
        }
        latest.clone()
    }
}

/// What one type's responses looked like at one proxy.
#[derive(Debug, Default, Clone)]
pub(crate) struct TypeRecord {
    pub responses: u64,
    pub version: String,
    pub resources: usize,
    pub bytes: u64,
}

/// A change of a watched EDS cluster's endpoints, as seen by one proxy.
#[derive(Debug, Clone)]
pub(crate) struct EdsObservation {
    pub at: Duration,
    pub cluster: u32,
    pub addresses: Vec<String>,
}

/// Everything one simulated proxy recorded.
#[derive(Debug, Default)]
pub(crate) struct ProxyRecord {
    /// When its ADS client was started.
    pub started: Duration,
    /// When it had CDS, EDS, LDS and RDS (EDS and RDS only if it had names to ask for).
    pub synced: Option<Duration>,
    pub types: [TypeRecord; 4],
    eds_names: Arc<Vec<String>>,
    rds_names: Arc<Vec<String>>,
    /// Cluster → the EDS name it subscribes to; listener → the route tables it names.
    clusters: BTreeMap<String, Option<String>>,
    listeners: BTreeMap<String, BTreeSet<String>>,
    current: HashMap<u32, Vec<String>>,
    pub eds_log: Vec<EdsObservation>,
    pub cds_seen: HashMap<u32, Duration>,
    pub last_at: Duration,
}

impl ProxyRecord {
    pub(crate) fn new(started: Duration) -> Self {
        ProxyRecord {
            started,
            ..Default::default()
        }
    }

    /// Arrival of the first update of watched EDS cluster `cluster` at or after `since` whose
    /// addresses satisfy `pred`.
    pub(crate) fn first_eds(
        &self,
        cluster: u32,
        since: Duration,
        pred: impl Fn(&[String]) -> bool,
    ) -> Option<Duration> {
        self.eds_log
            .iter()
            .find(|o| o.cluster == cluster && o.at >= since && pred(&o.addresses))
            .map(|o| o.at)
    }

    /// The current addresses of watched EDS cluster `cluster`.
    pub(crate) fn eds_now(&self, cluster: u32) -> Option<&[String]> {
        self.current.get(&cluster).map(Vec::as_slice)
    }
}

/// The ADS handler of one simulated proxy.
pub(crate) struct SimProxy {
    pub record: Arc<Mutex<ProxyRecord>>,
    pub shared: Arc<Shared>,
}

fn decode_error(kind: &str, e: prost::DecodeError) -> String {
    format!("cannot decode {kind}: {e}")
}

impl Handler for SimProxy {
    fn on_response(&mut self, type_url: &str, update: Update) -> Result<(), String> {
        let Some(ti) = type_index(type_url) else {
            return Err(format!("the benchmark proxy does not handle {type_url}"));
        };
        let shared = &*self.shared;
        let resources = &update.resources;
        let bytes: u64 = resources.iter().map(|r| r.value.len() as u64).sum();
        let mut clusters = Vec::new();
        let mut listeners = Vec::new();
        let mut observed: Vec<(u32, Vec<String>)> = Vec::new();
        let mut cds_hits: Vec<u32> = Vec::new();
        match ti {
            CDS => {
                for r in resources {
                    let (name, eds) =
                        lite::cluster(&r.value).map_err(|e| decode_error("Cluster", e))?;
                    if let Some(&i) = shared.cds_watch.get(&name) {
                        cds_hits.push(i);
                    }
                    clusters.push((name, eds));
                }
            }
            LDS => {
                for r in resources {
                    let mut routes = BTreeSet::new();
                    let name = lite::listener_routes(&r.value, &mut routes)
                        .map_err(|e| decode_error("Listener", e))?;
                    listeners.push((name, routes));
                }
            }
            EDS if !shared.eds_watch.is_empty() => {
                for r in resources {
                    let name = lite::cla_name(&r.value)
                        .map_err(|e| decode_error("ClusterLoadAssignment", e))?;
                    if let Some(&i) = shared.eds_watch.get(&name) {
                        let addrs = lite::cla_addresses(&r.value)
                            .map_err(|e| decode_error("ClusterLoadAssignment", e))?;
                        observed.push((i, addrs));
                    }
                }
            }
            _ => {}
        }

        let at = shared.now();
        shared.bytes.fetch_add(bytes, Ordering::Relaxed);
        shared.responses[ti].fetch_add(1, Ordering::Relaxed);
        shared
            .last_rx_ns
            .fetch_max(at.as_nanos() as u64, Ordering::Relaxed);

        let mut rec = lock(&self.record);
        let rec = &mut *rec;
        rec.last_at = at;
        let t = &mut rec.types[ti];
        t.responses += 1;
        t.resources = resources.len();
        t.bytes += bytes;
        if t.version != update.version {
            t.version = update.version.clone();
        }
        match ti {
            CDS => {
                update.merge_into(&mut rec.clusters, clusters);
                t.resources = rec.clusters.len();
                let mut names: Vec<String> = rec.clusters.values().flatten().cloned().collect();
                names.sort();
                names.dedup();
                rec.eds_names = Shared::intern(&shared.eds_names, names);
            }
            LDS => {
                update.merge_into(&mut rec.listeners, listeners);
                t.resources = rec.listeners.len();
                let names: BTreeSet<&String> = rec.listeners.values().flatten().collect();
                let names = names.into_iter().cloned().collect();
                rec.rds_names = Shared::intern(&shared.rds_names, names);
            }
            _ => {}
        }
        for i in cds_hits {
            rec.cds_seen.entry(i).or_insert(at);
        }
        for (cluster, addresses) in observed {
            if rec.current.get(&cluster) != Some(&addresses) {
                rec.current.insert(cluster, addresses.clone());
                rec.eds_log.push(EdsObservation {
                    at,
                    cluster,
                    addresses,
                });
            }
        }
        if rec.synced.is_none() {
            let has = |i: usize| rec.types[i].responses > 0;
            if has(CDS)
                && has(LDS)
                && (has(EDS) || rec.eds_names.is_empty())
                && (has(RDS) || rec.rds_names.is_empty())
            {
                rec.synced = Some(at);
            }
        }
        Ok(())
    }

    fn subscriptions(&self) -> Vec<(String, Vec<String>)> {
        let rec = lock(&self.record);
        vec![
            (CLUSTER.to_string(), Vec::new()),
            (ENDPOINT.to_string(), rec.eds_names.to_vec()),
            (LISTENER.to_string(), Vec::new()),
            (ROUTE.to_string(), rec.rds_names.to_vec()),
        ]
    }
}

#[cfg(test)]
mod tests {
    use prost::Message;
    use weft_xds::pb::envoy::config::cluster::v3 as cluster;
    use weft_xds::pb::envoy::config::core::v3 as core;
    use weft_xds::pb::envoy::config::endpoint::v3 as endpoint;

    use weft_xds::pb::google::protobuf::Any;

    use super::*;

    /// A state-of-the-world response.
    fn sotw(type_url: &str, version: &str, resources: Vec<Any>) -> Update {
        Update::state_of_the_world(type_url, version.into(), resources)
    }

    fn any(type_url: &str, value: Vec<u8>) -> Any {
        Any {
            type_url: type_url.into(),
            value,
        }
    }

    fn eds_cluster(name: &str) -> Any {
        any(
            CLUSTER,
            cluster::Cluster {
                name: name.into(),
                cluster_discovery_type: Some(cluster::cluster::ClusterDiscoveryType::Type(
                    cluster::cluster::DiscoveryType::Eds as i32,
                )),
                ..Default::default()
            }
            .encode_to_vec(),
        )
    }

    fn cla(name: &str, ips: &[&str]) -> Any {
        let lb = ips
            .iter()
            .map(|ip| endpoint::LbEndpoint {
                host_identifier: Some(endpoint::lb_endpoint::HostIdentifier::Endpoint(
                    endpoint::Endpoint {
                        address: Some(core::Address {
                            address: Some(core::address::Address::SocketAddress(
                                core::SocketAddress {
                                    address: ip.to_string(),
                                    ..Default::default()
                                },
                            )),
                        }),
                        ..Default::default()
                    },
                )),
                ..Default::default()
            })
            .collect();
        any(
            ENDPOINT,
            endpoint::ClusterLoadAssignment {
                cluster_name: name.into(),
                endpoints: vec![endpoint::LocalityLbEndpoints {
                    lb_endpoints: lb,
                    ..Default::default()
                }],
                ..Default::default()
            }
            .encode_to_vec(),
        )
    }

    #[test]
    fn follows_cds_with_eds_and_records_watched_clusters() {
        let mut w = Watches::default();
        let a = w.eds("a".into());
        let c = w.cds("c".into());
        assert_eq!(w.eds("a".into()), a, "watches are deduplicated");
        let shared = Arc::new(Shared::new(&w));
        let record = Arc::new(Mutex::new(ProxyRecord::new(shared.now())));
        let mut p = SimProxy {
            record: record.clone(),
            shared: shared.clone(),
        };
        assert_eq!(p.subscriptions()[1].1, Vec::<String>::new());
        p.on_response(
            CLUSTER,
            sotw(CLUSTER, "v1", vec![eds_cluster("b"), eds_cluster("a")]),
        )
        .unwrap();
        assert_eq!(p.subscriptions()[1].1, ["a", "b"]);
        assert!(lock(&record).cds_seen.is_empty());
        p.on_response(
            ENDPOINT,
            sotw(
                ENDPOINT,
                "v1",
                vec![cla("a", &["10.0.0.1"]), cla("b", &["10.0.0.9"])],
            ),
        )
        .unwrap();
        // Same addresses again: not a new observation.
        p.on_response(
            ENDPOINT,
            sotw(ENDPOINT, "v2", vec![cla("a", &["10.0.0.1"])]),
        )
        .unwrap();
        p.on_response(
            ENDPOINT,
            sotw(ENDPOINT, "v3", vec![cla("a", &["10.0.0.2", "10.0.0.1"])]),
        )
        .unwrap();
        p.on_response(
            CLUSTER,
            sotw(CLUSTER, "v3", vec![eds_cluster("a"), eds_cluster("c")]),
        )
        .unwrap();
        // No listeners and no routes asked for: synced without RDS.
        p.on_response(LISTENER, sotw(LISTENER, "v3", vec![]))
            .unwrap();
        let rec = lock(&record);
        assert!(rec.synced.is_some());
        assert_eq!(rec.types[EDS].responses, 3);
        assert_eq!(rec.types[EDS].version, "v3");
        assert_eq!(rec.types[CDS].resources, 2);
        assert_eq!(rec.eds_log.len(), 2);
        assert_eq!(rec.eds_now(a).unwrap(), ["10.0.0.1", "10.0.0.2"]);
        let t = rec
            .first_eds(a, Duration::ZERO, |ips| {
                ips.contains(&"10.0.0.2".to_string())
            })
            .unwrap();
        assert_eq!(t, rec.eds_log[1].at);
        assert!(rec.cds_seen.contains_key(&c));
        assert!(shared.bytes.load(Ordering::Relaxed) > 0);
        assert_eq!(shared.response_counts(), [2, 3, 1, 0]);
        drop(rec);
        assert!(
            p.on_response(
                "type.googleapis.com/x",
                sotw("type.googleapis.com/x", "v", vec![])
            )
            .is_err()
        );
        assert!(
            p.on_response(
                CLUSTER,
                sotw(CLUSTER, "v4", vec![any(CLUSTER, vec![0x0a, 0xff])])
            )
            .is_err(),
            "undecodable clusters are NACKed"
        );
    }

    #[test]
    fn delta_responses_keep_what_they_leave_out() {
        let shared = Arc::new(Shared::new(&Watches::default()));
        let record = Arc::new(Mutex::new(ProxyRecord::new(shared.now())));
        let mut p = SimProxy {
            record: record.clone(),
            shared,
        };
        let delta = |resources: Vec<Any>, removed: &[&str]| {
            Update::delta(
                "v".into(),
                resources,
                removed.iter().map(|s| s.to_string()).collect(),
            )
        };
        p.on_response(
            CLUSTER,
            delta(vec![eds_cluster("a"), eds_cluster("b")], &[]),
        )
        .unwrap();
        p.on_response(CLUSTER, delta(vec![eds_cluster("c")], &[]))
            .unwrap();
        assert_eq!(p.subscriptions()[1].1, ["a", "b", "c"]);
        p.on_response(CLUSTER, delta(vec![], &["b"])).unwrap();
        assert_eq!(p.subscriptions()[1].1, ["a", "c"]);
        assert_eq!(lock(&record).types[CDS].resources, 2);
    }
}
