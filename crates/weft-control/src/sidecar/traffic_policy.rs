//! DestinationRule traffic policy → Envoy cluster fields, as istiod's cluster builder applies
//! them: load balancer, circuit breakers (connectionPool), HTTP protocol options, TCP
//! keepalive, outlier detection and upstream TLS.

use envoy_types::pb::envoy::config::cluster::v3 as cluster;
use envoy_types::pb::envoy::config::core::v3 as core;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3 as tls;
use envoy_types::pb::envoy::r#type::v3 as types;
use weft_api::common::{ClientTlsMode, ClientTlsSettings};
use weft_api::networking::{
    ConnectionPoolSettings, LoadBalancerSettings, OutlierDetection, SimpleLb,
};

use crate::destination::Policy;
use crate::envoy;

/// Istio's default circuit-breaker thresholds: everything at u32::MAX, remaining tracked.
pub fn default_thresholds() -> cluster::circuit_breakers::Thresholds {
    cluster::circuit_breakers::Thresholds {
        max_connections: Some(envoy::u32v(u32::MAX)),
        max_pending_requests: Some(envoy::u32v(u32::MAX)),
        max_requests: Some(envoy::u32v(u32::MAX)),
        max_retries: Some(envoy::u32v(u32::MAX)),
        track_remaining: true,
        ..Default::default()
    }
}

/// Applies the load balancer settings.
pub fn load_balancer(c: &mut cluster::Cluster, lb: &LoadBalancerSettings) {
    use cluster::cluster::LbPolicy;
    if let Some(ch) = &lb.consistent_hash {
        c.lb_policy = LbPolicy::RingHash as i32;
        c.lb_config = Some(cluster::cluster::LbConfig::RingHashLbConfig(
            cluster::cluster::RingHashLbConfig {
                minimum_ring_size: Some(envoy::u64v(if ch.minimum_ring_size == 0 {
                    1024
                } else {
                    ch.minimum_ring_size
                })),
                ..Default::default()
            },
        ));
        return;
    }
    c.lb_policy = match lb.simple.unwrap_or_default() {
        SimpleLb::LeastConn | SimpleLb::LeastRequest => LbPolicy::LeastRequest,
        SimpleLb::Random => LbPolicy::Random,
        SimpleLb::Passthrough => {
            c.cluster_discovery_type = Some(cluster::cluster::ClusterDiscoveryType::Type(
                cluster::cluster::DiscoveryType::OriginalDst as i32,
            ));
            c.eds_cluster_config = None;
            LbPolicy::ClusterProvided
        }
        SimpleLb::RoundRobin | SimpleLb::Unspecified => LbPolicy::RoundRobin,
    } as i32;
    if let Some(w) = lb.warmup_duration_secs.filter(|w| !w.is_zero()) {
        let slow_start_config = Some(cluster::cluster::SlowStartConfig {
            slow_start_window: Some(envoy::duration(w.get())),
            ..Default::default()
        });
        use cluster::cluster::LbConfig;
        if c.lb_policy == LbPolicy::RoundRobin as i32 {
            c.lb_config = Some(LbConfig::RoundRobinLbConfig(
                cluster::cluster::RoundRobinLbConfig { slow_start_config },
            ));
        } else if c.lb_policy == LbPolicy::LeastRequest as i32 {
            c.lb_config = Some(LbConfig::LeastRequestLbConfig(
                cluster::cluster::LeastRequestLbConfig {
                    slow_start_config,
                    ..Default::default()
                },
            ));
        }
    }
}

/// Positive values of Istio's int32 limits (0 means unset).
fn limit(v: i32) -> Option<u32> {
    (v > 0).then_some(v as u32)
}

/// Applies connectionPool: thresholds, connect timeout, keepalive and the HTTP options.
fn connection_pool(
    c: &mut cluster::Cluster,
    pool: &ConnectionPoolSettings,
    http: &mut core::HttpProtocolOptions,
) {
    let th = &mut c
        .circuit_breakers
        .get_or_insert_with(Default::default)
        .thresholds;
    if th.is_empty() {
        th.push(default_thresholds());
    }
    let t = &mut th[0];
    if let Some(tcp) = &pool.tcp {
        if let Some(n) = limit(tcp.max_connections) {
            t.max_connections = Some(envoy::u32v(n));
        }
        if let Some(d) = tcp.connect_timeout.filter(|d| !d.is_zero()) {
            c.connect_timeout = Some(envoy::duration(d.get()));
        }
        if let Some(ka) = &tcp.tcp_keepalive {
            c.upstream_connection_options = Some(cluster::UpstreamConnectionOptions {
                tcp_keepalive: Some(core::TcpKeepalive {
                    keepalive_probes: (ka.probes > 0).then(|| envoy::u32v(ka.probes)),
                    keepalive_time: ka.time.map(|d| envoy::u32v(d.get().as_secs() as u32)),
                    keepalive_interval: ka.interval.map(|d| envoy::u32v(d.get().as_secs() as u32)),
                }),
                ..Default::default()
            });
        }
    }
    if let Some(h) = &pool.http {
        if let Some(n) = limit(h.http1_max_pending_requests) {
            t.max_pending_requests = Some(envoy::u32v(n));
        }
        if let Some(n) = limit(h.http2_max_requests) {
            t.max_requests = Some(envoy::u32v(n));
        }
        if let Some(n) = limit(h.max_retries) {
            t.max_retries = Some(envoy::u32v(n));
        }
        if let Some(n) = limit(h.max_requests_per_connection) {
            http.max_requests_per_connection = Some(envoy::u32v(n));
        }
        if let Some(d) = h.idle_timeout.filter(|d| !d.is_zero()) {
            http.idle_timeout = Some(envoy::duration(d.get()));
        }
    }
}

/// Applies outlierDetection (Istio's `applyOutlierDetection`).
fn outlier_detection(c: &mut cluster::Cluster, od: &OutlierDetection) {
    let mut out = cluster::OutlierDetection::default();
    let enforcing = |n: u32| envoy::u32v(if n > 0 { 100 } else { 0 });
    if od.consecutive_errors > 0 {
        // Deprecated field: gateway errors, as Istio maps it.
        let n = od.consecutive_errors as u32;
        out.consecutive_gateway_failure = Some(envoy::u32v(n));
        out.enforcing_consecutive_gateway_failure = Some(enforcing(n));
        out.enforcing_consecutive_5xx = Some(envoy::u32v(0));
    }
    if let Some(n) = od.consecutive_5xx_errors {
        out.consecutive_5xx = Some(envoy::u32v(n));
        out.enforcing_consecutive_5xx = Some(enforcing(n));
    }
    if let Some(n) = od.consecutive_gateway_errors {
        out.consecutive_gateway_failure = Some(envoy::u32v(n));
        out.enforcing_consecutive_gateway_failure = Some(enforcing(n));
    }
    if od.split_external_local_origin_errors {
        out.split_external_local_origin_errors = true;
        if let Some(n) = od.consecutive_local_origin_failures {
            out.consecutive_local_origin_failure = Some(envoy::u32v(n));
            out.enforcing_consecutive_local_origin_failure = Some(enforcing(n));
        }
    }
    if let Some(d) = od.interval.filter(|d| !d.is_zero()) {
        out.interval = Some(envoy::duration(d.get()));
    }
    if let Some(d) = od.base_ejection_time.filter(|d| !d.is_zero()) {
        out.base_ejection_time = Some(envoy::duration(d.get()));
    }
    if od.max_ejection_percent > 0 {
        out.max_ejection_percent = Some(envoy::u32v(od.max_ejection_percent as u32));
    }
    c.outlier_detection = Some(out);
    if od.min_health_percent >= 0 {
        c.common_lb_config
            .get_or_insert_with(Default::default)
            .healthy_panic_threshold = Some(types::Percent {
            value: od.min_health_percent as f64,
        });
    }
}

/// A non-mesh TLS origination context (SIMPLE / MUTUAL) from file paths, as Istio's sidecar
/// reads them.
fn origination(t: &ClientTlsSettings, default_sni: &str) -> tls::UpstreamTlsContext {
    let file = |path: &str| core::DataSource {
        specifier: Some(core::data_source::Specifier::Filename(path.to_string())),
        ..Default::default()
    };
    let sans = t
        .subject_alt_names
        .iter()
        .map(|s| envoy::dns_san(envoy::exact_matcher(s)))
        .collect::<Vec<_>>();
    let mut common = tls::CommonTlsContext::default();
    if !t.ca_certificates.is_empty() || !sans.is_empty() {
        common.validation_context_type = Some(
            tls::common_tls_context::ValidationContextType::ValidationContext(
                tls::CertificateValidationContext {
                    trusted_ca: (!t.ca_certificates.is_empty()).then(|| file(&t.ca_certificates)),
                    match_typed_subject_alt_names: sans,
                    trust_chain_verification: if t.insecure_skip_verify == Some(true) {
                        tls::certificate_validation_context::TrustChainVerification::AcceptUntrusted
                            as i32
                    } else {
                        0
                    },
                    ..Default::default()
                },
            ),
        );
    }
    if t.mode == ClientTlsMode::Mutual {
        common.tls_certificates = vec![tls::TlsCertificate {
            certificate_chain: Some(file(&t.client_certificate)),
            private_key: Some(file(&t.private_key)),
            ..Default::default()
        }];
    }
    tls::UpstreamTlsContext {
        common_tls_context: Some(common),
        sni: if t.sni.is_empty() {
            default_sni.to_string()
        } else {
            t.sni.clone()
        },
        ..Default::default()
    }
}

/// Everything of `policy` that lands on the cluster. `istio_mutual` builds the mesh mTLS
/// context; `host` is the service host (the default SNI for origination).
pub fn apply(
    c: &mut cluster::Cluster,
    policy: &Policy,
    http: &mut core::HttpProtocolOptions,
    host: &str,
    istio_mutual: impl FnOnce() -> tls::UpstreamTlsContext,
) {
    if let Some(lb) = &policy.load_balancer {
        load_balancer(c, lb);
    }
    if let Some(pool) = &policy.connection_pool {
        connection_pool(c, pool, http);
    }
    if let Some(od) = &policy.outlier_detection {
        outlier_detection(c, od);
    }
    let Some(t) = &policy.tls else { return };
    // An explicit mode is a hard setting: no auto-mTLS fallback to plaintext.
    c.transport_socket_matches.clear();
    c.transport_socket = match t.mode {
        ClientTlsMode::Disable => None,
        ClientTlsMode::IstioMutual => Some(envoy::transport_socket(
            "envoy.transport_sockets.tls",
            &istio_mutual(),
        )),
        ClientTlsMode::Simple | ClientTlsMode::Mutual => Some(envoy::transport_socket(
            "envoy.transport_sockets.tls",
            &origination(t, host),
        )),
    };
}
