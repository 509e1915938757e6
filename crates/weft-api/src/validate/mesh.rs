//! MeshConfig validation (Istio `ValidateMeshConfig` and extension provider checks).

use std::collections::BTreeSet;

use crate::duration::Duration;
use crate::mesh::{AuthenticationPolicy, MeshConfig, MeshProxyConfig, Provider};
use crate::problem::FieldPath;
use crate::validate::Report;
use crate::validate::checks::{
    is_dns1123_label, validate_duration, validate_fqdn, validate_ip, validate_namespace_slash_host,
    validate_port, validate_proxy_address, validate_wildcard_domain,
};
use crate::validate::telemetry::validate_custom_tag;
use crate::validate::traffic::{validate_client_tls, validate_locality_lb};
use crate::validate::virtual_service::validate_retry;

const CONNECT_TIMEOUT_MAX: std::time::Duration = std::time::Duration::from_secs(30);
const DRAIN_MAX: std::time::Duration = std::time::Duration::from_secs(3600);

pub(crate) fn validate_mesh_config(r: &mut Report, m: &MeshConfig) {
    let p = FieldPath::root();
    r.check(
        &p.key("proxyListenPort"),
        validate_port(i64::from(m.proxy_listen_port)),
    );
    let ct = m.connect_timeout;
    match validate_duration(ct) {
        Err(e) => r.err(&p.key("connectTimeout"), e),
        Ok(()) if ct.get() > CONNECT_TIMEOUT_MAX => {
            r.err(
                &p.key("connectTimeout"),
                format!("connectTimeout {ct} must be at most 30s"),
            );
        }
        Ok(()) => {}
    }
    if !m
        .protocol_detection_timeout
        .get()
        .subsec_nanos()
        .is_multiple_of(1_000_000)
    {
        r.err(
            &p.key("protocolDetectionTimeout"),
            "only durations to ms precision are supported",
        );
    }
    validate_mesh_proxy_config(r, &p.key("defaultConfig"), &m.default_config);
    if let Some(l) = &m.locality_lb_setting {
        validate_locality_lb(r, &p.key("localityLbSetting"), l, true);
    }
    for (i, s) in m.service_settings.iter().enumerate() {
        for (j, h) in s.hosts.iter().enumerate() {
            r.check(
                &p.key("serviceSettings").idx(i).key("hosts").idx(j),
                validate_wildcard_domain(h),
            );
        }
    }
    r.check(
        &p.key("trustDomain"),
        validate_trust_domain(&m.trust_domain),
    );
    for (i, a) in m.trust_domain_aliases.iter().enumerate() {
        r.check(
            &p.key("trustDomainAliases").idx(i),
            validate_trust_domain(a),
        );
    }
    if let Some(rp) = &m.default_http_retry_policy {
        validate_retry(r, &p.key("defaultHttpRetryPolicy"), rp);
    }
    validate_extension_providers(r, &p.key("extensionProviders"), m);
}

/// Trust domains: dot-separated DNS labels, optional trailing dot.
pub(crate) fn validate_trust_domain(domain: &str) -> Result<(), String> {
    if domain.is_empty() {
        return Err("empty trust domain not allowed".into());
    }
    let parts: Vec<&str> = domain.split('.').collect();
    for (i, label) in parts.iter().enumerate() {
        if i == parts.len() - 1 && label.is_empty() {
            return Ok(());
        }
        if !is_dns1123_label(label) {
            return Err(format!("trust domain name {domain:?} invalid"));
        }
    }
    Ok(())
}

fn seconds_precision(d: Duration) -> bool {
    d.get().subsec_nanos() == 0
}

fn validate_mesh_proxy_config(r: &mut Report, p: &FieldPath, c: &MeshProxyConfig) {
    if c.config_path.is_empty() {
        r.err(&p.key("configPath"), "config path must be set");
    }
    if c.binary_path.is_empty() {
        r.err(&p.key("binaryPath"), "binary path must be set");
    }
    match (&c.service_cluster, c.tracing_service_name) {
        (Some(_), Some(_)) => r.err(p, "set only one of serviceCluster or tracingServiceName"),
        (Some(sc), None) if sc.is_empty() => r.err(
            &p.key("serviceCluster"),
            "service cluster must be specified",
        ),
        (None, None) => r.err(
            p,
            "one of serviceCluster or tracingServiceName must be specified",
        ),
        _ => {}
    }
    let drain = c.drain_duration;
    let parent = c.parent_shutdown_duration;
    let mut ok = true;
    if let Err(e) = validate_duration(drain) {
        r.err(
            &p.key("drainDuration"),
            format!("invalid drain duration: {e}"),
        );
        ok = false;
    }
    if let Err(e) = validate_duration(parent) {
        r.err(
            &p.key("parentShutdownDuration"),
            format!("invalid parent shutdown duration: {e}"),
        );
        ok = false;
    }
    if ok {
        if !seconds_precision(drain) {
            r.err(
                &p.key("drainDuration"),
                "drain time only supports durations to seconds precision",
            );
        }
        if !seconds_precision(parent) {
            r.err(
                &p.key("parentShutdownDuration"),
                "parent shutdown time only supports durations to seconds precision",
            );
        }
        if parent <= drain {
            r.err(
                &p.key("parentShutdownDuration"),
                format!("parent shutdown time {parent} must be greater than drain time {drain}"),
            );
        }
        if drain.get() > DRAIN_MAX {
            r.err(
                &p.key("drainDuration"),
                format!("drain time {drain} must be <1h"),
            );
        }
        if parent.get() > DRAIN_MAX {
            r.err(
                &p.key("parentShutdownDuration"),
                format!("parent shutdown time {parent} must be <1h"),
            );
        }
    }
    if c.discovery_address.is_empty() {
        r.err(
            &p.key("discoveryAddress"),
            "discovery address must be set to the proxy discovery service",
        );
    } else if let Err(e) = validate_proxy_address(&c.discovery_address) {
        r.err(
            &p.key("discoveryAddress"),
            format!("invalid discovery address: {e}"),
        );
    }
    if let Some(t) = &c.tracing {
        let tp = p.key("tracing");
        let tracers = [
            t.zipkin.is_some(),
            t.lightstep.is_some(),
            t.datadog.is_some(),
            t.stackdriver.is_some(),
            t.open_census_agent.is_some(),
        ];
        if tracers.iter().filter(|b| **b).count() > 1 {
            r.err(
                &tp,
                "set only one tracer (zipkin, lightstep, datadog, stackdriver or openCensusAgent)",
            );
        }
        if let Some(z) = &t.zipkin {
            r.check(
                &tp.key("zipkin").key("address"),
                validate_proxy_address(&z.address.replacen("$(HOST_IP)", "127.0.0.1", 1)),
            );
        }
        if let Some(d) = &t.datadog {
            r.check(
                &tp.key("datadog").key("address"),
                validate_proxy_address(&d.address.replacen("$(HOST_IP)", "127.0.0.1", 1)),
            );
        }
        if let Some(l) = &t.lightstep {
            r.check(
                &tp.key("lightstep").key("address"),
                validate_proxy_address(&l.address),
            );
            if l.access_token.is_empty() {
                r.err(
                    &tp.key("lightstep").key("accessToken"),
                    "access token is required",
                );
            }
        }
        if let Some(tls) = &t.tls_settings {
            validate_client_tls(r, &tp.key("tlsSettings"), tls);
        }
        for (name, tag) in &t.custom_tags {
            validate_custom_tag(r, &tp.key("customTags").key(name.as_str()), name, tag);
        }
    }
    if !c.statsd_udp_address.is_empty() {
        r.check(
            &p.key("statsdUdpAddress"),
            validate_proxy_address(&c.statsd_udp_address),
        );
    }
    if !c.envoy_metrics_service_address.is_empty() {
        r.check(
            &p.key("envoyMetricsServiceAddress"),
            validate_proxy_address(&c.envoy_metrics_service_address),
        );
    }
    for (field, svc) in [
        ("envoyMetricsService", &c.envoy_metrics_service),
        ("envoyAccessLogService", &c.envoy_access_log_service),
    ] {
        if let Some(s) = svc
            && !s.address.is_empty()
        {
            r.check(
                &p.key(field).key("address"),
                validate_proxy_address(&s.address),
            );
        }
    }
    r.check(
        &p.key("proxyAdminPort"),
        validate_port(i64::from(c.proxy_admin_port)),
    );
    if c.control_plane_auth_policy == AuthenticationPolicy::Inherit {
        r.err(
            &p.key("controlPlaneAuthPolicy"),
            "unrecognized control plane auth policy INHERIT; use NONE or MUTUAL_TLS",
        );
    }
    r.check(
        &p.key("statusPort"),
        validate_port(i64::from(c.status_port)),
    );
    if c.concurrency.is_some_and(|n| n < 0) {
        r.err(
            &p.key("concurrency"),
            "concurrency must be greater than or equal to 0",
        );
    }
    if let Some(pkp) = &c.private_key_provider {
        let pp = p.key("privateKeyProvider");
        match &pkp.cryptomb {
            None => r.err(
                &pp,
                "private key provider configuration is required (cryptomb)",
            ),
            Some(cm) => match cm.poll_delay {
                None => r.err(
                    &pp.key("cryptomb").key("pollDelay"),
                    "pollDelay is required",
                ),
                Some(d) if d.is_zero() => r.err(
                    &pp.key("cryptomb").key("pollDelay"),
                    "pollDelay must be non zero",
                ),
                Some(_) => {}
            },
        }
    }
}

/// `service` of an extension provider: FQDN, IP or `ns/host`.
fn validate_provider_service(service: &str) -> Vec<String> {
    if service.is_empty() {
        return vec!["service must not be empty".into()];
    }
    if service.contains('/') {
        return validate_namespace_slash_host(service, false);
    }
    if validate_fqdn(service).is_err() && validate_ip(service).is_err() {
        return vec![format!(
            "invalid service {service:?}: use a hostname, an IP or namespace/hostname"
        )];
    }
    Vec::new()
}

fn validate_service_port(r: &mut Report, p: &FieldPath, service: &str, port: u32) {
    for e in validate_provider_service(service) {
        r.err(&p.key("service"), e);
    }
    r.check(&p.key("port"), validate_port(i64::from(port)));
}

fn validate_status_on_error(r: &mut Report, p: &FieldPath, status: &str) {
    if status.is_empty() {
        return;
    }
    match status.parse::<u16>() {
        Ok(code) if (100..=599).contains(&code) => {}
        _ => r.err(
            &p.key("statusOnError"),
            format!("invalid statusOnError value {status:?}; use an HTTP status code such as 403"),
        ),
    }
}

fn validate_extension_providers(r: &mut Report, p: &FieldPath, m: &MeshConfig) {
    let mut names = BTreeSet::new();
    for (i, ep) in m.extension_providers.iter().enumerate() {
        let pp = p.idx(i);
        if ep.name.is_empty() {
            r.err(&pp.key("name"), "empty extension provider name");
        } else if !names.insert(ep.name.as_str()) {
            r.err(
                &pp.key("name"),
                format!("duplicate extension provider name {}", ep.name),
            );
        }
        let tp = pp.key(ep.provider.type_name());
        match &ep.provider {
            Provider::EnvoyExtAuthzHttp(h) => {
                validate_service_port(r, &tp, &h.service, h.port);
                validate_status_on_error(r, &tp, &h.status_on_error);
                if !h.path_prefix.is_empty() && !h.path_prefix.starts_with('/') {
                    r.err(
                        &tp.key("pathPrefix"),
                        format!(
                            "pathPrefix should begin with `/` but found {:?}",
                            h.path_prefix
                        ),
                    );
                }
            }
            Provider::EnvoyExtAuthzGrpc(g) => {
                validate_service_port(r, &tp, &g.service, g.port);
                validate_status_on_error(r, &tp, &g.status_on_error);
            }
            Provider::Zipkin(z) => validate_service_port(r, &tp, &z.service, z.port),
            Provider::Opentelemetry(o) => validate_service_port(r, &tp, &o.service, o.port),
            Provider::Datadog(d) => validate_service_port(r, &tp, &d.service, d.port),
            Provider::Opencensus(o) => validate_service_port(r, &tp, &o.service, o.port),
            Provider::Skywalking(s) => validate_service_port(r, &tp, &s.service, s.port),
            Provider::Lightstep(l) => {
                validate_service_port(r, &tp, &l.service, l.port);
                if l.access_token.is_empty() {
                    r.err(&tp.key("accessToken"), "access token is required");
                }
            }
            Provider::EnvoyHttpAls(a) => validate_service_port(r, &tp, &a.service, a.port),
            Provider::EnvoyTcpAls(a) => validate_service_port(r, &tp, &a.service, a.port),
            Provider::EnvoyOtelAls(a) => validate_service_port(r, &tp, &a.service, a.port),
            Provider::EnvoyFileAccessLog(f) => {
                if let Some(lf) = &f.log_format
                    && lf.text.is_some()
                    && lf.labels.is_some()
                {
                    r.err(&tp.key("logFormat"), "set only one of text or labels");
                }
            }
            Provider::Prometheus(_) | Provider::Stackdriver(_) => {}
        }
    }
}
