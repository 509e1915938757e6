//! DestinationRule and traffic policy validation (Istio `ValidateDestinationRule`).

use std::collections::BTreeSet;

use crate::common::{ClientTlsMode, ClientTlsSettings, LocalityLoadBalancerSetting};
use crate::networking::{
    ConnectionPoolSettings, DestinationRule, H2UpgradePolicy, LoadBalancerSettings,
    OutlierDetection, TrafficPolicy,
};
use crate::problem::FieldPath;
use crate::validate::Report;
use crate::validate::checks::{
    validate_duration, validate_export_to, validate_labels, validate_localities, validate_percent,
    validate_port, validate_wildcard_domain, validate_workload_selector,
};
use crate::validate::virtual_service::validate_subset_name;

pub(crate) fn validate_destination_rule(
    r: &mut Report,
    p: &FieldPath,
    dr: &DestinationRule,
    namespace: &str,
) {
    if dr.host.is_empty() {
        r.err(
            &p.key("host"),
            "host is required, e.g. reviews or reviews.default.svc.cluster.local",
        );
    } else {
        r.check(&p.key("host"), validate_wildcard_domain(&dr.host));
    }
    if let Some(tp) = &dr.traffic_policy {
        validate_traffic_policy(r, &p.key("trafficPolicy"), tp);
    }
    let mut names = BTreeSet::new();
    for (i, s) in dr.subsets.iter().enumerate() {
        let sp = p.key("subsets").idx(i);
        r.check(&sp.key("name"), validate_subset_name(&s.name));
        if !s.name.is_empty() && !names.insert(s.name.as_str()) {
            r.err(
                &sp.key("name"),
                format!(
                    "duplicate subset name {:?}; subset names must be unique",
                    s.name
                ),
            );
        }
        if s.labels.is_empty() {
            r.err(
                &sp.key("labels"),
                "subset labels must not be empty; they select the subset's endpoints",
            );
        }
        validate_labels(r, &sp.key("labels"), &s.labels);
        if let Some(tp) = &s.traffic_policy {
            validate_traffic_policy(r, &sp.key("trafficPolicy"), tp);
        }
    }
    validate_export_to(
        r,
        &p.key("exportTo"),
        namespace,
        &dr.export_to,
        false,
        dr.workload_selector.is_some(),
    );
    validate_workload_selector(r, &p.key("workloadSelector"), dr.workload_selector.as_ref());
}

pub(crate) fn validate_traffic_policy(r: &mut Report, p: &FieldPath, tp: &TrafficPolicy) {
    if tp.outlier_detection.is_none()
        && tp.connection_pool.is_none()
        && tp.load_balancer.is_none()
        && tp.tls.is_none()
        && tp.port_level_settings.is_empty()
        && tp.tunnel.is_none()
    {
        r.err(p, "traffic policy must have at least one field");
        return;
    }
    if let Some(o) = &tp.outlier_detection {
        validate_outlier_detection(r, &p.key("outlierDetection"), o);
    }
    if let Some(c) = &tp.connection_pool {
        validate_connection_pool(r, &p.key("connectionPool"), c);
    }
    if let Some(lb) = &tp.load_balancer {
        validate_load_balancer(
            r,
            &p.key("loadBalancer"),
            lb,
            tp.outlier_detection.is_some(),
        );
    }
    if let Some(t) = &tp.tls {
        validate_client_tls(r, &p.key("tls"), t);
    }
    if let Some(t) = &tp.tunnel {
        let tp2 = p.key("tunnel");
        if t.protocol != "CONNECT" && t.protocol != "POST" && !t.protocol.is_empty() {
            r.err(
                &tp2.key("protocol"),
                format!("tunnel protocol {:?} must be CONNECT or POST", t.protocol),
            );
        }
        if t.target_host.is_empty() {
            r.err(&tp2.key("targetHost"), "tunnel targetHost is required");
        }
        r.check(
            &tp2.key("targetPort"),
            validate_port(i64::from(t.target_port)),
        );
    }
    for (i, pl) in tp.port_level_settings.iter().enumerate() {
        let pp = p.key("portLevelSettings").idx(i);
        match &pl.port {
            None => r.err(&pp.key("port"), "portLevelSettings entry must have a port"),
            Some(port) => r.check(
                &pp.key("port").key("number"),
                validate_port(i64::from(port.number)),
            ),
        }
        if pl.outlier_detection.is_none()
            && pl.connection_pool.is_none()
            && pl.load_balancer.is_none()
            && pl.tls.is_none()
        {
            r.err(&pp, "port traffic policy must have at least one field");
            continue;
        }
        if let Some(o) = &pl.outlier_detection {
            validate_outlier_detection(r, &pp.key("outlierDetection"), o);
        }
        if let Some(c) = &pl.connection_pool {
            validate_connection_pool(r, &pp.key("connectionPool"), c);
        }
        if let Some(lb) = &pl.load_balancer {
            validate_load_balancer(
                r,
                &pp.key("loadBalancer"),
                lb,
                pl.outlier_detection.is_some(),
            );
        }
        if let Some(t) = &pl.tls {
            validate_client_tls(r, &pp.key("tls"), t);
        }
    }
}

fn validate_outlier_detection(r: &mut Report, p: &FieldPath, o: &OutlierDetection) {
    if let Some(d) = o.base_ejection_time {
        r.check(&p.key("baseEjectionTime"), validate_duration(d));
    }
    if let Some(d) = o.interval {
        r.check(&p.key("interval"), validate_duration(d));
    }
    if !o.split_external_local_origin_errors && o.consecutive_local_origin_failures.unwrap_or(0) > 0
    {
        r.err(
            &p.key("consecutiveLocalOriginFailures"),
            "consecutiveLocalOriginFailures is set but splitExternalLocalOriginErrors is false; set it to true",
        );
    }
    r.check(
        &p.key("maxEjectionPercent"),
        validate_percent(i64::from(o.max_ejection_percent)),
    );
    r.check(
        &p.key("minHealthPercent"),
        validate_percent(i64::from(o.min_health_percent)),
    );
}

fn validate_connection_pool(r: &mut Report, p: &FieldPath, c: &ConnectionPoolSettings) {
    if c.http.is_none() && c.tcp.is_none() {
        r.err(p, "connection pool must have at least one field");
        return;
    }
    if let Some(h) = &c.http {
        let hp = p.key("http");
        for (field, v) in [
            ("http1MaxPendingRequests", h.http1_max_pending_requests),
            ("http2MaxRequests", h.http2_max_requests),
            ("maxRequestsPerConnection", h.max_requests_per_connection),
            ("maxRetries", h.max_retries),
        ] {
            if v < 0 {
                r.err(&hp.key(field), format!("{field} must be non-negative"));
            }
        }
        if let Some(d) = h.idle_timeout {
            r.check(&hp.key("idleTimeout"), validate_duration(d));
        }
        if h.h2_upgrade_policy == H2UpgradePolicy::Upgrade && h.use_client_protocol {
            r.err(
                &hp.key("useClientProtocol"),
                "useClientProtocol must not be true when h2UpgradePolicy is UPGRADE",
            );
        }
    }
    if let Some(t) = &c.tcp {
        let tp = p.key("tcp");
        if t.max_connections < 0 {
            r.err(
                &tp.key("maxConnections"),
                "maxConnections must be non-negative",
            );
        }
        if let Some(d) = t.connect_timeout {
            r.check(&tp.key("connectTimeout"), validate_duration(d));
        }
    }
}

fn validate_load_balancer(
    r: &mut Report,
    p: &FieldPath,
    lb: &LoadBalancerSettings,
    has_outlier: bool,
) {
    if lb.simple.is_some() && lb.consistent_hash.is_some() {
        r.err(p, "set only one of simple or consistentHash");
    }
    if let Some(ch) = &lb.consistent_hash {
        let cp = p.key("consistentHash");
        let keys = [
            ch.http_header_name.is_some(),
            ch.http_cookie.is_some(),
            ch.use_source_ip.is_some(),
            ch.http_query_parameter_name.is_some(),
        ];
        if keys.iter().filter(|b| **b).count() > 1 {
            r.err(
                &cp,
                "set only one of httpHeaderName, httpCookie, useSourceIp or httpQueryParameterName",
            );
        }
        if let Some(c) = &ch.http_cookie {
            if c.name.is_empty() {
                r.err(
                    &cp.key("httpCookie").key("name"),
                    "name required for httpCookie",
                );
            }
            if c.ttl.is_none() {
                r.err(
                    &cp.key("httpCookie").key("ttl"),
                    "ttl required for httpCookie",
                );
            }
        }
    }
    if let Some(l) = &lb.locality_lb_setting {
        validate_locality_lb(r, &p.key("localityLbSetting"), l, has_outlier);
    }
}

/// Locality load balancing rules (distribute vs failover, weights, locality syntax).
pub(crate) fn validate_locality_lb(
    r: &mut Report,
    p: &FieldPath,
    lb: &LocalityLoadBalancerSetting,
    _has_outlier: bool,
) {
    if !lb.distribute.is_empty() && !lb.failover.is_empty() {
        r.err(
            p,
            "can not simultaneously specify 'distribute' and 'failover'",
        );
        return;
    }
    let mut src: Vec<&str> = Vec::new();
    for (i, d) in lb.distribute.iter().enumerate() {
        let dp = p.key("distribute").idx(i);
        src.push(d.from.as_str());
        let mut total: u64 = 0;
        for (loc, w) in &d.to {
            if *w == 0 || *w > 100 {
                r.err(
                    &dp.key("to").key(loc.as_str()),
                    "locality weight must be in range [1, 100]",
                );
                return;
            }
            total += u64::from(*w);
        }
        if total != 100 {
            r.err(
                &dp.key("to"),
                format!("total locality weight {total} != 100"),
            );
            return;
        }
        let dest: Vec<&str> = d.to.keys().map(String::as_str).collect();
        r.check(&dp.key("to"), validate_localities(&dest));
    }
    r.check(&p.key("distribute"), validate_localities(&src));
    for (i, f) in lb.failover.iter().enumerate() {
        let fp = p.key("failover").idx(i);
        if f.from == f.to {
            r.err(
                &fp,
                "locality lb failover settings must specify different regions",
            );
        }
        if f.from.contains('/') || f.to.contains('/') {
            r.err(&fp, "locality lb failover only specify region");
        }
        if f.from.contains('*') || f.to.contains('*') {
            r.err(
                &fp,
                "locality lb failover region should not contain '*' wildcard",
            );
        }
    }
}

/// Client TLS settings (certificates required for MUTUAL unless credentialName is used).
pub(crate) fn validate_client_tls(r: &mut Report, p: &FieldPath, t: &ClientTlsSettings) {
    let simple_or_mutual = matches!(t.mode, ClientTlsMode::Simple | ClientTlsMode::Mutual);
    if simple_or_mutual && !t.credential_name.is_empty() {
        if !t.client_certificate.is_empty()
            || !t.ca_certificates.is_empty()
            || !t.private_key.is_empty()
        {
            r.err(
                &p.key("credentialName"),
                "cannot specify client certificates or CA certificate if credentialName is set",
            );
        }
        return;
    }
    if t.mode == ClientTlsMode::Mutual {
        if t.client_certificate.is_empty() {
            r.err(
                &p.key("clientCertificate"),
                "client certificate required for mutual tls",
            );
        }
        if t.private_key.is_empty() {
            r.err(&p.key("privateKey"), "private key required for mutual tls");
        }
    }
}
