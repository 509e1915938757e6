//! The proxy's telemetry context: its own node metadata (sent to peers in
//! `x-envoy-peer-metadata`), the Istio metrics registry, and the access-log sinks.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use http::HeaderValue;
use weft_telemetry::{
    AccessLogSink, Metrics, NodeMetadata, Parties, PeerInfo, Reporter, SecurityPolicy, ServiceInfo,
    TcpLabels,
};

pub struct Telemetry {
    pub metrics: Metrics,
    node: NodeMetadata,
    /// This workload as a peer (source on the client side, destination on the server side);
    /// its principal follows the certificate the CA issued.
    me: arc_swap::ArcSwap<PeerInfo>,
    pub peer_header: HeaderValue,
    pub peer_id_header: HeaderValue,
    /// File sinks by path; a path that could not be opened keeps the time of the failure, and
    /// is tried again only after [`REOPEN_AFTER`].
    sinks: Mutex<HashMap<String, Result<Arc<AccessLogSink>, std::time::Instant>>>,
    /// Span reporters, by collector, started on first use.
    reporters: Mutex<HashMap<crate::snapshot::tracing::Collector, Arc<crate::spans::Reporter>>>,
    /// OpenTelemetry access loggers, by target, started on first use.
    otlp: Mutex<HashMap<crate::otlp::Target, Arc<crate::otlp::OtlpLogs>>>,
    node_id: String,
    /// Envoy's `--service-cluster` (`<workload>.<namespace>`).
    node_cluster: String,
}

impl Telemetry {
    pub fn new(node: NodeMetadata, node_id: &str, node_cluster: &str, principal: &str) -> Self {
        let me = arc_swap::ArcSwap::from_pointee(PeerInfo::from_metadata(&node, principal));
        let peer_header =
            HeaderValue::from_str(&weft_telemetry::encode_peer_header(&node.exchange_subset()))
                .unwrap_or_else(|_| HeaderValue::from_static(""));
        let peer_id_header =
            HeaderValue::from_str(node_id).unwrap_or_else(|_| HeaderValue::from_static(""));
        Telemetry {
            metrics: Metrics::new(),
            node,
            me,
            peer_header,
            peer_id_header,
            sinks: Mutex::default(),
            otlp: Mutex::default(),
            reporters: Mutex::default(),
            node_id: node_id.to_string(),
            node_cluster: node_cluster.to_string(),
        }
    }

    /// This workload as a peer (shared: one reference count per request, not one per label).
    pub fn me(&self) -> Arc<PeerInfo> {
        self.me.load_full()
    }

    /// Records the principal of a newly issued certificate.
    pub fn set_principal(&self, principal: &str) {
        self.me.store(std::sync::Arc::new(PeerInfo::from_metadata(
            &self.node, principal,
        )));
    }

    /// The node id (`sidecar~<ip>~<pod>.<ns>~<ns>.svc.cluster.local`).
    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// Envoy's `--service-cluster` (`<workload>.<namespace>`): the service name of its spans.
    pub fn node_cluster(&self) -> &str {
        &self.node_cluster
    }

    /// The span reporter of `collector`, started on first use (on the calling runtime).
    pub fn reporter(
        &self,
        proxy: &Arc<crate::Proxy>,
        collector: &crate::snapshot::tracing::Collector,
    ) -> Arc<crate::spans::Reporter> {
        let mut map = match self.reporters.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        map.entry(collector.clone())
            .or_insert_with(|| {
                Arc::new(crate::spans::Reporter::start(
                    Arc::downgrade(proxy),
                    collector.clone(),
                ))
            })
            .clone()
    }

    /// The OpenTelemetry logger of `target`, started on first use (on the calling runtime).
    pub fn otlp(
        &self,
        proxy: &Arc<crate::Proxy>,
        target: &crate::otlp::Target,
    ) -> Arc<crate::otlp::OtlpLogs> {
        let mut map = match self.otlp.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        map.entry(target.clone())
            .or_insert_with(|| {
                Arc::new(crate::otlp::OtlpLogs::start(
                    Arc::downgrade(proxy),
                    target.clone(),
                    self.node_id.clone(),
                    self.node_cluster.clone(),
                ))
            })
            .clone()
    }

    /// The file sink of `path`, opened on first use. A path that cannot be opened is logged
    /// once and tried again every [`REOPEN_AFTER`], not per request; the entries meanwhile are
    /// counted in `access_logs.file.open_failures_dropped`.
    pub fn sink(&self, path: &str) -> Option<Arc<AccessLogSink>> {
        let mut sinks = self.sinks.lock().ok()?;
        match sinks.get(path) {
            Some(Ok(s)) => return Some(s.clone()),
            Some(Err(at)) if at.elapsed() < REOPEN_AFTER => {
                crate::snapshot::counter::counter("access_logs.file.open_failures_dropped")
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                return None;
            }
            _ => {}
        }
        match AccessLogSink::open(path) {
            Ok(s) => {
                let s = Arc::new(s);
                sinks.insert(path.to_string(), Ok(s.clone()));
                Some(s)
            }
            Err(e) => {
                tracing::error!(path, error = %e, retry_in_secs = REOPEN_AFTER.as_secs(), "cannot open the access log; requests are not logged there");
                sinks.insert(path.to_string(), Err(std::time::Instant::now()));
                None
            }
        }
    }
}

/// How long a file access log that could not be opened is left before it is tried again.
const REOPEN_AFTER: std::time::Duration = std::time::Duration::from_secs(30);

/// The `destination_service*` labels of passthrough or blackhole traffic: the cluster's name,
/// and the Host (HTTP) or "unknown" (TCP) as the service.
pub fn passthrough_service(name: &str, authority: Option<&str>) -> ServiceInfo {
    ServiceInfo {
        fqdn: weft_telemetry::Label::or_unknown(authority.unwrap_or_default()),
        name: weft_telemetry::Label::new(name),
        namespace: weft_telemetry::Label::unknown(),
    }
}

pub fn service_info(meta: Option<&Arc<ServiceInfo>>, fallback_host: &str) -> Arc<ServiceInfo> {
    match meta {
        Some(m) => m.clone(),
        None if !fallback_host.is_empty() => Arc::new(ServiceInfo::from_host(fallback_host)),
        None => ServiceInfo::unknown_shared(),
    }
}

/// The service a connection's SNI names (Istio's `outbound_.<port>_.<subset>_.<host>`): what
/// the server side reports when the cluster names none.
pub fn sni_service(sni: Option<&str>) -> Option<Arc<ServiceInfo>> {
    crate::http::sni_host(sni).map(|host| service_info(None, host))
}

/// Envoy's response flags as logged and labelled: `-` when there are none.
pub fn flags_text(flags: &str) -> &str {
    if flags.is_empty() { "-" } else { flags }
}

/// The `response_flags` label (the shared `-` when there are none).
pub fn flags_label(flags: &str) -> weft_telemetry::Label {
    match flags_text(flags) {
        "-" => weft_telemetry::Label::no_flags(),
        f => weft_telemetry::Label::new(f),
    }
}

pub fn tcp_labels(
    reporter: Reporter,
    source: &PeerInfo,
    destination: &PeerInfo,
    service: &ServiceInfo,
    security: SecurityPolicy,
    flags: &str,
) -> TcpLabels {
    let parties = Parties {
        reporter,
        source,
        destination,
        service,
        security_policy: security,
    };
    TcpLabels::new(&parties, flags_label(flags))
}

/// What a peer's SPIFFE principal tells about it when no metadata was exchanged (TCP):
/// its namespace, and the principal itself.
pub fn peer_from_principal(principal: &str) -> PeerInfo {
    let mut p = PeerInfo::unknown();
    if principal.is_empty() {
        return p;
    }
    p.principal = weft_telemetry::Label::new(principal);
    if let Ok(id) = weft_identity::SpiffeId::parse(principal) {
        p.namespace = weft_telemetry::Label::new(&id.namespace);
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unopenable_access_log_is_not_retried_per_request() {
        let t = Telemetry::new(
            NodeMetadata::default(),
            "id",
            "app.ns",
            "spiffe://td/ns/ns/sa/a",
        );
        let path = "/nonexistent-weft-dir/access.log";
        let dropped = || {
            crate::snapshot::counter::counter("access_logs.file.open_failures_dropped")
                .load(std::sync::atomic::Ordering::Relaxed)
        };
        assert!(t.sink(path).is_none());
        let before = dropped();
        for _ in 0..3 {
            assert!(t.sink(path).is_none());
        }
        assert_eq!(dropped() - before, 3, "counted, not reopened");
        let dir = tempfile::tempdir().unwrap();
        let ok = dir.path().join("access.log");
        assert!(t.sink(ok.to_str().unwrap()).is_some());
    }
}
