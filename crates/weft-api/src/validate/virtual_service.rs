//! VirtualService validation (Istio `ValidateVirtualService` and `validateHTTPRoute`).

use std::collections::BTreeMap;
use std::net::IpAddr;

use crate::common::{Destination, HttpRetry, StringMatch};
use crate::host;
use crate::networking::{
    CorsPolicy, HeaderOperations, Headers, HttpFaultInjection, HttpMatchRequest, HttpRedirect,
    HttpRoute, HttpRouteDestination, RouteDestination, TcpRoute, TlsRoute, VirtualService,
};
use crate::problem::FieldPath;
use crate::validate::Report;
use crate::validate::checks::{
    MatchArity, is_dns1123_label, validate_duration, validate_gateway_names,
    validate_header_authority_op, validate_header_host_op, validate_header_op,
    validate_header_value, validate_ip_subnet, validate_labels, validate_match_header_name,
    validate_percent, validate_percentage, validate_port, validate_string_match,
    validate_wildcard_domain,
};

const JWT_CLAIM_HEADER_PREFIX: &str = "@request.auth.claims";

pub(crate) fn validate_virtual_service(
    r: &mut Report,
    p: &FieldPath,
    vs: &VirtualService,
    namespace: &str,
) {
    let is_delegate = vs.hosts.is_empty();
    if is_delegate {
        if !vs.gateways.is_empty() {
            r.err(
                &p.key("gateways"),
                "delegate virtual service must have no gateways specified",
            );
        }
        if !vs.tls.is_empty() {
            r.err(
                &p.key("tls"),
                "delegate virtual service must have no tls route specified",
            );
        }
        if !vs.tcp.is_empty() {
            r.err(
                &p.key("tcp"),
                "delegate virtual service must have no tcp route specified",
            );
        }
    }

    let applies_to_mesh = vs.gateways.is_empty() || vs.gateways.iter().any(|g| g == "mesh");
    let applies_to_gateway = vs.gateways.iter().any(|g| g != "mesh");
    validate_gateway_names(
        r,
        &p.key("gateways"),
        &vs.gateways
            .iter()
            .filter(|g| *g != "mesh")
            .cloned()
            .collect::<Vec<_>>(),
    );

    if !applies_to_gateway {
        for (i, http) in vs.http.iter().enumerate() {
            for (j, m) in http.match_.iter().enumerate() {
                let mp = p.key("http").idx(i).key("match").idx(j);
                for (field, map) in [
                    ("headers", &m.headers),
                    ("withoutHeaders", &m.without_headers),
                ] {
                    for key in map
                        .keys()
                        .filter(|k| k.starts_with(JWT_CLAIM_HEADER_PREFIX))
                    {
                        r.err(
                            &mp.key(field).key(key.as_str()),
                            format!("JWT claim based routing (key: {key}) is only supported for gateway; add a gateway to spec.gateways"),
                        );
                    }
                }
            }
        }
    }

    let mut all_hosts_valid = true;
    for (i, h) in vs.hosts.iter().enumerate() {
        let hp = p.key("hosts").idx(i);
        if let Err(e) = validate_wildcard_domain(h) {
            if h.parse::<IpAddr>().is_err() {
                r.err(&hp, e);
                all_hosts_valid = false;
            }
        } else if applies_to_mesh && h == "*" {
            r.err(
                &hp,
                "wildcard host * is not allowed for virtual services bound to the mesh gateway",
            );
            all_hosts_valid = false;
        }
    }
    if all_hosts_valid {
        for i in 0..vs.hosts.len() {
            for j in i + 1..vs.hosts.len() {
                if host::matches(&vs.hosts[i], &vs.hosts[j]) {
                    r.err(
                        &p.key("hosts").idx(j),
                        format!(
                            "duplicate hosts in virtual service: {} & {}",
                            vs.hosts[i], vs.hosts[j]
                        ),
                    );
                }
            }
        }
    }

    if vs.http.is_empty() && vs.tcp.is_empty() && vs.tls.is_empty() {
        r.err(p, "http, tcp or tls must be provided in virtual service");
    }
    for (i, route) in vs.http.iter().enumerate() {
        validate_http_route(r, &p.key("http").idx(i), route, is_delegate);
    }
    for (i, route) in vs.tls.iter().enumerate() {
        validate_tls_route(r, &p.key("tls").idx(i), route, vs);
    }
    for (i, route) in vs.tcp.iter().enumerate() {
        validate_tcp_route(r, &p.key("tcp").idx(i), route);
    }
    crate::validate::checks::validate_export_to(
        r,
        &p.key("exportTo"),
        namespace,
        &vs.export_to,
        false,
        false,
    );
}

#[derive(PartialEq, Eq, Clone, Copy)]
enum RouteType {
    Independent,
    Root,
    Delegate,
}

fn validate_http_route(r: &mut Report, p: &FieldPath, http: &HttpRoute, in_delegate_vs: bool) {
    let rt = if in_delegate_vs {
        RouteType::Delegate
    } else if http.delegate.is_some() {
        RouteType::Root
    } else {
        RouteType::Independent
    };

    // Exactly one of route / redirect / delegate.
    if rt == RouteType::Root {
        if http.redirect.is_some() {
            r.err(
                &p.key("redirect"),
                "an HTTP route with delegate must not specify redirect",
            );
        }
        if !http.route.is_empty() {
            r.err(
                &p.key("route"),
                "an HTTP route with delegate must not specify route",
            );
        }
    } else {
        if rt == RouteType::Delegate && http.delegate.is_some() {
            r.err(
                &p.key("delegate"),
                "delegate HTTP route cannot contain delegate",
            );
        }
        if http.redirect.is_some() {
            if !http.route.is_empty() {
                r.err(
                    &p.key("redirect"),
                    "HTTP route cannot contain both route and redirect",
                );
            }
            if http.fault.is_some() {
                r.err(
                    &p.key("fault"),
                    "HTTP route cannot contain both fault and redirect",
                );
            }
            if http.rewrite.is_some() {
                r.err(
                    &p.key("rewrite"),
                    "HTTP route rule cannot contain both rewrite and redirect",
                );
            }
        } else if http.route.is_empty() {
            r.err(p, "HTTP route needs one of route, redirect or delegate");
        }
    }

    for (i, m) in http.match_.iter().enumerate() {
        validate_http_match(r, &p.key("match").idx(i), m, rt);
    }

    if let Some(h) = &http.headers {
        validate_headers(r, &p.key("headers"), h, validate_header_authority_op);
    }
    if let Some(c) = &http.cors_policy {
        validate_cors(r, &p.key("corsPolicy"), c);
    }
    if let Some(f) = &http.fault {
        validate_fault(r, &p.key("fault"), f);
    }
    if let Some(v) = http.mirror_percent
        && v > 100
    {
        r.err(
            &p.key("mirrorPercent"),
            format!("mirrorPercent must have a max value of 100 (it has {v})"),
        );
    }
    if let Some(mp) = &http.mirror_percentage {
        if mp.value > 100.0 {
            r.err(
                &p.key("mirrorPercentage").key("value"),
                format!(
                    "mirrorPercentage must have a max value of 100 (it has {})",
                    mp.value
                ),
            );
        }
        if mp.value < 0.0 {
            r.err(
                &p.key("mirrorPercentage").key("value"),
                format!(
                    "mirrorPercentage must have a min value of 0 (it has {})",
                    mp.value
                ),
            );
        }
    }
    if let Some(m) = &http.mirror {
        validate_destination(r, &p.key("mirror"), m);
    }
    if let Some(rd) = &http.redirect {
        validate_redirect(r, &p.key("redirect"), rd);
    }
    if let Some(rt) = &http.retries {
        validate_retry(r, &p.key("retries"), rt);
    }
    if let Some(rw) = &http.rewrite
        && rw.uri.is_empty()
        && rw.authority.is_empty()
    {
        r.err(
            &p.key("rewrite"),
            "rewrite must specify uri, authority, or both",
        );
    }
    validate_authority_rewrite(r, p, http);
    validate_http_route_destinations(r, &p.key("route"), &http.route);
    if let Some(t) = http.timeout
        && !t.is_zero()
    {
        r.check(&p.key("timeout"), validate_duration(t));
    }
}

fn validate_http_match(r: &mut Report, p: &FieldPath, m: &HttpMatchRequest, rt: RouteType) {
    let maps: [(&str, &BTreeMap<String, StringMatch>); 3] = [
        ("headers", &m.headers),
        ("withoutHeaders", &m.without_headers),
        ("queryParams", &m.query_params),
    ];
    for (field, map) in maps {
        for (name, sm) in map {
            let kp = p.key(field).key(name.as_str());
            if field != "queryParams" {
                r.check(&kp, validate_match_header_name(name));
            }
            validate_string_match(r, &kp, sm, MatchArity::AtMostOne);
            if rt != RouteType::Independent && sm.regex.is_some() {
                r.err(
                    &kp,
                    format!("{field} match {name} does not support regex match for delegating"),
                );
            }
        }
    }
    let singles = [
        ("uri", &m.uri),
        ("scheme", &m.scheme),
        ("method", &m.method),
        ("authority", &m.authority),
    ];
    for (field, sm) in singles {
        if let Some(sm) = sm {
            validate_string_match(r, &p.key(field), sm, MatchArity::ExactlyOne);
            if rt != RouteType::Independent && sm.regex.is_some() {
                r.err(
                    &p.key(field),
                    format!("{field} match does not support regex match for delegating"),
                );
            }
        }
    }
    if m.port != 0 {
        r.check(&p.key("port"), validate_port(i64::from(m.port)));
    }
    validate_labels(r, &p.key("sourceLabels"), &m.source_labels);
    validate_gateway_names(r, &p.key("gateways"), &m.gateways);
    if !m.source_namespace.is_empty() && !is_dns1123_label(&m.source_namespace) {
        r.err(
            &p.key("sourceNamespace"),
            format!("sourceNamespace match {} is invalid", m.source_namespace),
        );
    }
}

type HeaderNameCheck = fn(&str) -> Result<(), String>;

fn validate_header_ops(
    r: &mut Report,
    p: &FieldPath,
    ops: &HeaderOperations,
    set_add_check: HeaderNameCheck,
) {
    for (field, map) in [("set", &ops.set), ("add", &ops.add)] {
        for (name, value) in map {
            let kp = p.key(field).key(name.as_str());
            r.check(&kp, set_add_check(name));
            r.check(&kp, validate_header_value(value));
        }
    }
    for (i, name) in ops.remove.iter().enumerate() {
        r.check(&p.key("remove").idx(i), validate_header_op(name));
    }
}

fn validate_headers(r: &mut Report, p: &FieldPath, h: &Headers, request_check: HeaderNameCheck) {
    if let Some(req) = &h.request {
        validate_header_ops(r, &p.key("request"), req, request_check);
    }
    if let Some(resp) = &h.response {
        validate_header_ops(r, &p.key("response"), resp, validate_header_op);
    }
}

fn validate_authority_rewrite(r: &mut Report, p: &FieldPath, http: &HttpRoute) {
    let mut current = http
        .rewrite
        .as_ref()
        .map(|rw| rw.authority.clone())
        .unwrap_or_default();
    let Some(req) = http.headers.as_ref().and_then(|h| h.request.as_ref()) else {
        return;
    };
    for (field, map) in [("set", &req.set), ("add", &req.add)] {
        for (k, v) in map {
            if !(k.eq_ignore_ascii_case(":authority") || k.eq_ignore_ascii_case("host")) {
                continue;
            }
            if !current.is_empty() {
                r.err(
                    &p.key("headers").key("request").key(field).key(k.as_str()),
                    format!("authority header cannot be set multiple times: have {current:?}, attempting to set {v:?}"),
                );
                return;
            }
            current = v.clone();
        }
    }
}

const SUPPORTED_METHODS: &[&str] = &[
    "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "CONNECT", "OPTIONS", "TRACE",
];

fn validate_cors(r: &mut Report, p: &FieldPath, c: &CorsPolicy) {
    for (i, o) in c.allow_origins.iter().enumerate() {
        validate_string_match(r, &p.key("allowOrigins").idx(i), o, MatchArity::ExactlyOne);
    }
    for (i, m) in c.allow_methods.iter().enumerate() {
        if !SUPPORTED_METHODS.contains(&m.as_str()) {
            r.err(
                &p.key("allowMethods").idx(i),
                format!("{m:?} is not a supported HTTP method"),
            );
        }
    }
    for (field, list) in [
        ("allowHeaders", &c.allow_headers),
        ("exposeHeaders", &c.expose_headers),
    ] {
        for (i, h) in list.iter().enumerate() {
            if h.is_empty() {
                r.err(&p.key(field).idx(i), "header name cannot be empty");
            }
        }
    }
    if let Some(d) = c.max_age {
        r.check(&p.key("maxAge"), validate_duration(d));
        if d.get().subsec_nanos() > 0 {
            r.err(
                &p.key("maxAge"),
                "maxAge duration is accurate only to seconds precision",
            );
        }
    }
}

fn validate_fault(r: &mut Report, p: &FieldPath, f: &HttpFaultInjection) {
    if f.abort.is_none() && f.delay.is_none() {
        r.err(p, "HTTP fault injection must have an abort and/or a delay");
    }
    if let Some(a) = &f.abort {
        let ap = p.key("abort");
        if let Some(pct) = &a.percentage {
            r.check(
                &ap.key("percentage").key("value"),
                validate_percentage(pct.value),
            );
        }
        let set = [
            a.http_status.is_some(),
            a.grpc_status.is_some(),
            a.http2_error.is_some(),
        ]
        .iter()
        .filter(|b| **b)
        .count();
        if set > 1 {
            r.err(&ap, "set only one of httpStatus, grpcStatus or http2Error");
        }
        if a.grpc_status.is_some() {
            r.err(
                &ap.key("grpcStatus"),
                "gRPC abort fault injection not supported yet; use httpStatus",
            );
        }
        if a.http2_error.is_some() {
            r.err(
                &ap.key("http2Error"),
                "HTTP/2 abort fault injection not supported yet; use httpStatus",
            );
        }
        match a.http_status {
            Some(s) if !(200..=600).contains(&s) => {
                r.err(
                    &ap.key("httpStatus"),
                    format!("HTTP status {s} is not in range 200-599"),
                );
            }
            None if set == 0 => r.err(&ap, "abort requires httpStatus"),
            _ => {}
        }
    }
    if let Some(d) = &f.delay {
        let dp = p.key("delay");
        if let Some(pct) = &d.percentage {
            r.check(
                &dp.key("percentage").key("value"),
                validate_percentage(pct.value),
            );
        }
        if d.percent != 0 {
            r.check(&dp.key("percent"), validate_percent(i64::from(d.percent)));
        }
        if d.fixed_delay.is_some() && d.exponential_delay.is_some() {
            r.err(&dp, "set only one of fixedDelay or exponentialDelay");
        }
        match (d.fixed_delay, d.exponential_delay) {
            (Some(fd), _) => r.check(&dp.key("fixedDelay"), validate_duration(fd)),
            (None, Some(ed)) => {
                r.check(&dp.key("exponentialDelay"), validate_duration(ed));
                r.err(
                    &dp.key("exponentialDelay"),
                    "exponentialDelay not supported yet; use fixedDelay",
                );
            }
            (None, None) => r.err(&dp, "delay requires fixedDelay"),
        }
    }
}

pub(crate) fn validate_destination(r: &mut Report, p: &FieldPath, d: &Destination) {
    if d.host == "*" {
        r.err(
            &p.key("host"),
            format!("invalid destination host {}", d.host),
        );
    } else {
        r.check(&p.key("host"), validate_wildcard_domain(&d.host));
    }
    if !d.subset.is_empty() {
        r.check(&p.key("subset"), validate_subset_name(&d.subset));
    }
    if let Some(port) = &d.port {
        r.check(
            &p.key("port").key("number"),
            validate_port(i64::from(port.number)),
        );
    }
}

pub(crate) fn validate_subset_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("subset name cannot be empty".into());
    }
    if !is_dns1123_label(name) {
        return Err(format!("subset name is invalid: {name}"));
    }
    Ok(())
}

fn validate_redirect(r: &mut Report, p: &FieldPath, rd: &HttpRedirect) {
    if rd.uri.is_empty()
        && rd.authority.is_empty()
        && rd.port.is_none()
        && rd.derive_port.is_none()
        && rd.scheme.is_empty()
    {
        r.err(p, "redirect must specify uri, authority, scheme, or port");
    }
    if rd.port.is_some() && rd.derive_port.is_some() {
        r.err(p, "set only one of port or derivePort");
    }
    if rd.redirect_code != 0 && !(300..=399).contains(&rd.redirect_code) {
        r.err(
            &p.key("redirectCode"),
            format!(
                "{} is not a valid redirect code, must be 3xx",
                rd.redirect_code
            ),
        );
    }
    if !rd.scheme.is_empty() && rd.scheme != "http" && rd.scheme != "https" {
        r.err(
            &p.key("scheme"),
            "invalid redirect scheme, must be \"http\" or \"https\"",
        );
    }
    if let Some(port) = rd.port
        && port > 0
    {
        r.check(&p.key("port"), validate_port(i64::from(port)));
    }
}

const RETRY_ON_POLICIES: &[&str] = &[
    "5xx",
    "gateway-error",
    "reset",
    "connect-failure",
    "retriable-4xx",
    "refused-stream",
    "retriable-status-codes",
    "retriable-headers",
    "envoy-ratelimited",
    "cancelled",
    "deadline-exceeded",
    "internal",
    "resource-exhausted",
    "unavailable",
];

/// HTTP status codes Go's `http.StatusText` knows.
fn is_known_http_status(code: u16) -> bool {
    matches!(code,
        100..=103 | 200..=208 | 226 | 300..=305 | 307 | 308 | 400..=418 | 421..=426 | 428 | 429
        | 431 | 451 | 500..=508 | 510 | 511)
}

pub(crate) fn validate_retry(r: &mut Report, p: &FieldPath, rt: &HttpRetry) {
    if rt.attempts < 0 {
        r.err(&p.key("attempts"), "attempts cannot be negative");
    }
    if rt.attempts == 0
        && (rt.per_try_timeout.is_some()
            || !rt.retry_on.is_empty()
            || rt.retry_remote_localities.is_some())
    {
        r.err(
            &p.key("attempts"),
            "http retry policy configured when attempts are set to 0 (disabled)",
        );
    }
    if let Some(t) = rt.per_try_timeout {
        r.check(&p.key("perTryTimeout"), validate_duration(t));
    }
    if !rt.retry_on.is_empty() {
        for policy in rt.retry_on.split(',') {
            let is_status = policy.parse::<u16>().is_ok_and(is_known_http_status);
            if !is_status && !RETRY_ON_POLICIES.contains(&policy) {
                r.err(
                    &p.key("retryOn"),
                    format!("{policy:?} is not a valid retryOn policy"),
                );
            }
        }
    }
}

fn total_weight_check(r: &mut Report, p: &FieldPath, weights: &[i32]) {
    let total: i64 = weights.iter().map(|w| i64::from(*w)).sum();
    if weights.len() > 1 && total != 100 {
        let last = p.idx(weights.len() - 1).key("weight");
        r.err(&last, format!("total destination weight {total} != 100; weights of all destinations in a route must add up to 100"));
    }
}

fn validate_http_route_destinations(r: &mut Report, p: &FieldPath, dests: &[HttpRouteDestination]) {
    for (i, d) in dests.iter().enumerate() {
        let dp = p.idx(i);
        match &d.destination {
            Some(dest) => validate_destination(r, &dp.key("destination"), dest),
            None => r.err(&dp.key("destination"), "destination is required"),
        }
        if let Some(h) = &d.headers {
            validate_headers(r, &dp.key("headers"), h, validate_header_host_op);
        }
        r.check(&dp.key("weight"), validate_percent(i64::from(d.weight)));
    }
    let weights: Vec<i32> = dests.iter().map(|d| d.weight).collect();
    total_weight_check(r, p, &weights);
}

fn validate_route_destinations(r: &mut Report, p: &FieldPath, dests: &[RouteDestination]) {
    for (i, d) in dests.iter().enumerate() {
        let dp = p.idx(i);
        match &d.destination {
            Some(dest) => validate_destination(r, &dp.key("destination"), dest),
            None => r.err(&dp.key("destination"), "destination is required"),
        }
        r.check(&dp.key("weight"), validate_percent(i64::from(d.weight)));
    }
    let weights: Vec<i32> = dests.iter().map(|d| d.weight).collect();
    total_weight_check(r, p, &weights);
}

fn validate_tls_route(r: &mut Report, p: &FieldPath, tls: &TlsRoute, vs: &VirtualService) {
    if tls.match_.is_empty() {
        r.err(
            &p.key("match"),
            "TLS route must have at least one match condition",
        );
    }
    for (i, m) in tls.match_.iter().enumerate() {
        let mp = p.key("match").idx(i);
        if m.sni_hosts.is_empty() {
            r.err(
                &mp.key("sniHosts"),
                "TLS match must have at least one SNI host",
            );
        }
        for (j, sni) in m.sni_hosts.iter().enumerate() {
            let sp = mp.key("sniHosts").idx(j);
            if let Err(e) = validate_wildcard_domain(sni) {
                if sni.parse::<IpAddr>().is_err() {
                    r.err(&sp, e);
                }
                continue;
            }
            if !vs.hosts.iter().any(|h| host::subset_of(sni, h)) {
                r.err(&sp, format!(
                    "SNI host {sni:?} is not a compatible subset of any of the virtual service hosts: [{}]",
                    vs.hosts.join(", ")
                ));
            }
        }
        for (j, s) in m.destination_subnets.iter().enumerate() {
            r.check(&mp.key("destinationSubnets").idx(j), validate_ip_subnet(s));
        }
        if m.port != 0 {
            r.check(&mp.key("port"), validate_port(i64::from(m.port)));
        }
        validate_labels(r, &mp.key("sourceLabels"), &m.source_labels);
        validate_gateway_names(r, &mp.key("gateways"), &m.gateways);
    }
    if tls.route.is_empty() {
        r.err(&p.key("route"), "TLS route is required");
    }
    validate_route_destinations(r, &p.key("route"), &tls.route);
}

fn validate_tcp_route(r: &mut Report, p: &FieldPath, tcp: &TcpRoute) {
    for (i, m) in tcp.match_.iter().enumerate() {
        let mp = p.key("match").idx(i);
        for (j, s) in m.destination_subnets.iter().enumerate() {
            r.check(&mp.key("destinationSubnets").idx(j), validate_ip_subnet(s));
        }
        if m.port != 0 {
            r.check(&mp.key("port"), validate_port(i64::from(m.port)));
        }
        validate_labels(r, &mp.key("sourceLabels"), &m.source_labels);
        validate_gateway_names(r, &mp.key("gateways"), &m.gateways);
    }
    if tcp.route.is_empty() {
        r.err(&p.key("route"), "TCP route is required");
    }
    validate_route_destinations(r, &p.key("route"), &tcp.route);
}
