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
use crate::push::Features;

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

/// Istio's SDS name for the proxy's system trust store (`caCertificates: system`).
pub const SYSTEM_ROOTS: &str = "file-root:system";

/// A non-mesh TLS origination context (SIMPLE / MUTUAL) from file paths, as istiod 1.14 builds
/// it: the DestinationRule's `sni` as given (none when unset); with `VERIFY_CERTIFICATE_AT_CLIENT`
/// and no `caCertificates`, the system's trust store (Istio's SDS resource `file-root:system`);
/// without `subjectAltNames`, the ServiceEntry's; the names are verified only when there is a
/// CA to verify the chain with (without one Istio sends an empty validation context).
fn origination(
    t: &ClientTlsSettings,
    se_sans: &[String],
    features: Features,
) -> tls::UpstreamTlsContext {
    let file = |path: &str| core::DataSource {
        specifier: Some(core::data_source::Specifier::Filename(path.to_string())),
        ..Default::default()
    };
    let names = if t.subject_alt_names.is_empty() {
        se_sans
    } else {
        t.subject_alt_names.as_slice()
    };
    let sans = names
        .iter()
        .map(|s| envoy::dns_san(envoy::exact_matcher(s)))
        .collect::<Vec<_>>();
    let trust_chain_verification = if t.insecure_skip_verify == Some(true) {
        tls::certificate_validation_context::TrustChainVerification::AcceptUntrusted as i32
    } else {
        0
    };
    let mut common = tls::CommonTlsContext::default();
    use tls::common_tls_context::{CombinedCertificateValidationContext, ValidationContextType};
    common.validation_context_type = Some(if !t.ca_certificates.is_empty() {
        ValidationContextType::ValidationContext(tls::CertificateValidationContext {
            trusted_ca: Some(file(&t.ca_certificates)),
            match_typed_subject_alt_names: sans,
            trust_chain_verification,
            ..Default::default()
        })
    } else if features.verify_certificate_at_client {
        ValidationContextType::CombinedValidationContext(CombinedCertificateValidationContext {
            default_validation_context: Some(tls::CertificateValidationContext {
                match_typed_subject_alt_names: sans,
                trust_chain_verification,
                ..Default::default()
            }),
            validation_context_sds_secret_config: Some(tls::SdsSecretConfig {
                name: SYSTEM_ROOTS.into(),
                sds_config: Some(envoy::ads_source()),
            }),
            ..Default::default()
        })
    } else {
        ValidationContextType::ValidationContext(Default::default())
    });
    if t.mode == ClientTlsMode::Mutual {
        common.tls_certificates = vec![tls::TlsCertificate {
            certificate_chain: Some(file(&t.client_certificate)),
            private_key: Some(file(&t.private_key)),
            ..Default::default()
        }];
    }
    tls::UpstreamTlsContext {
        common_tls_context: Some(common),
        sni: t.sni.clone(),
        ..Default::default()
    }
}

/// istiod's `setAutoSniAndAutoSanValidation`: with `ENABLE_AUTO_SNI`, a rule without `sni`
/// gets `auto_sni`, and with `VERIFY_CERTIFICATE_AT_CLIENT` too, a rule without
/// `subjectAltNames` gets `auto_san_validation` (both in the cluster's HTTP protocol options).
fn auto_sni(
    t: &ClientTlsSettings,
    features: Features,
) -> Option<core::UpstreamHttpProtocolOptions> {
    if !features.enable_auto_sni {
        return None;
    }
    let auto_sni = t.sni.is_empty();
    let auto_san_validation =
        features.verify_certificate_at_client && t.subject_alt_names.is_empty();
    (auto_sni || auto_san_validation).then(|| core::UpstreamHttpProtocolOptions {
        auto_sni,
        auto_san_validation,
        ..Default::default()
    })
}

/// Everything of `policy` that lands on the cluster. `istio_mutual` builds the mesh mTLS
/// context; `se_sans` are the service's `subjectAltNames`. Returns the cluster's upstream HTTP
/// protocol options (auto SNI and SAN validation), if any.
pub fn apply(
    c: &mut cluster::Cluster,
    policy: &Policy,
    http: &mut core::HttpProtocolOptions,
    se_sans: &[String],
    features: Features,
    istio_mutual: impl FnOnce() -> tls::UpstreamTlsContext,
) -> Option<core::UpstreamHttpProtocolOptions> {
    if let Some(lb) = &policy.load_balancer {
        load_balancer(c, lb);
    }
    if let Some(pool) = &policy.connection_pool {
        connection_pool(c, pool, http);
    }
    if let Some(od) = &policy.outlier_detection {
        outlier_detection(c, od);
    }
    let t = policy.tls.as_ref()?;
    // An explicit mode is a hard setting: no auto-mTLS fallback to plaintext.
    c.transport_socket_matches.clear();
    let (socket, upstream_http) = match t.mode {
        ClientTlsMode::Disable => (None, None),
        ClientTlsMode::IstioMutual => (
            Some(envoy::transport_socket(
                "envoy.transport_sockets.tls",
                &istio_mutual(),
            )),
            None,
        ),
        ClientTlsMode::Simple | ClientTlsMode::Mutual => (
            Some(envoy::transport_socket(
                "envoy.transport_sockets.tls",
                &origination(t, se_sans, features),
            )),
            auto_sni(t, features),
        ),
    };
    c.transport_socket = socket;
    upstream_http
}

#[cfg(test)]
mod tests {
    use super::*;
    use tls::common_tls_context::ValidationContextType as V;

    fn simple(sni: &str, sans: &[&str], ca: &str) -> ClientTlsSettings {
        ClientTlsSettings {
            mode: ClientTlsMode::Simple,
            sni: sni.into(),
            subject_alt_names: sans.iter().map(|s| s.to_string()).collect(),
            ca_certificates: ca.into(),
            ..Default::default()
        }
    }

    fn sans(ctx: &tls::UpstreamTlsContext) -> Vec<String> {
        let vc = match ctx
            .common_tls_context
            .as_ref()
            .and_then(|c| c.validation_context_type.clone())
        {
            Some(V::ValidationContext(v)) => v,
            Some(V::CombinedValidationContext(c)) => c.default_validation_context.unwrap(),
            _ => return Vec::new(),
        };
        vc.match_typed_subject_alt_names
            .iter()
            .filter_map(|m| {
                match m.matcher.as_ref()?.match_pattern.as_ref()? {
                envoy_types::pb::envoy::r#type::matcher::v3::string_matcher::MatchPattern::Exact(
                    s,
                ) => Some(s.clone()),
                _ => None,
            }
            })
            .collect()
    }

    const OFF: Features = Features {
        enable_auto_sni: false,
        verify_certificate_at_client: false,
    };
    const SNI: Features = Features {
        enable_auto_sni: true,
        verify_certificate_at_client: false,
    };
    const BOTH: Features = Features {
        enable_auto_sni: true,
        verify_certificate_at_client: true,
    };

    #[test]
    fn origination_keeps_the_rules_sni_and_takes_the_service_entrys_names() {
        // No sni: none is sent (istiod does not default it); auto SNI is off in 1.14.
        let ctx = origination(&simple("", &[], "/ca.pem"), &["se.example.com".into()], OFF);
        assert_eq!(ctx.sni, "");
        assert_eq!(sans(&ctx), ["se.example.com"]);
        let ctx = origination(
            &simple("x.example.com", &["dr.example.com"], "/ca.pem"),
            &["se".into()],
            OFF,
        );
        assert_eq!(ctx.sni, "x.example.com");
        assert_eq!(sans(&ctx), ["dr.example.com"]);
        // No CA: an empty validation context (istiod verifies no names without one).
        let ctx = origination(&simple("", &["dr.example.com"], ""), &[], OFF);
        assert!(sans(&ctx).is_empty());
        // VERIFY_CERTIFICATE_AT_CLIENT without a CA: the system trust store.
        let ctx = origination(&simple("", &["dr.example.com"], ""), &[], BOTH);
        let Some(V::CombinedValidationContext(c)) = ctx
            .common_tls_context
            .as_ref()
            .and_then(|c| c.validation_context_type.clone())
        else {
            panic!("{ctx:?}")
        };
        assert_eq!(
            c.validation_context_sds_secret_config.unwrap().name,
            SYSTEM_ROOTS
        );
        assert_eq!(sans(&ctx), ["dr.example.com"]);
    }

    #[test]
    fn auto_sni_and_san_validation_follow_istiods_flags() {
        assert_eq!(auto_sni(&simple("", &[], ""), OFF), None);
        let o = auto_sni(&simple("", &[], ""), SNI).unwrap();
        assert!(o.auto_sni && !o.auto_san_validation);
        let o = auto_sni(&simple("", &[], ""), BOTH).unwrap();
        assert!(o.auto_sni && o.auto_san_validation);
        // An explicit sni wins; explicit names turn SAN validation off.
        let o = auto_sni(&simple("x", &[], ""), BOTH).unwrap();
        assert!(!o.auto_sni && o.auto_san_validation);
        assert_eq!(auto_sni(&simple("x", &["y"], ""), BOTH), None);
        // Only with ENABLE_AUTO_SNI (istiod returns early without it).
        let verify_only = Features {
            enable_auto_sni: false,
            verify_certificate_at_client: true,
        };
        assert_eq!(auto_sni(&simple("", &[], ""), verify_only), None);
    }
}
