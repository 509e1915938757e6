//! VirtualService HTTP routes → Envoy routes, as istiod translates them
//! (`pilot/pkg/networking/core/v1alpha3/route/route.go`): one Envoy route per match (a route
//! without matches matches everything), matches filtered by port, gateway, source labels and
//! source namespace for this proxy, weighted destinations as `outbound|port|subset|host`
//! clusters, and the route's timeout, retries, fault, mirror, rewrite, redirect, CORS and
//! header operations.

use std::collections::BTreeMap;
use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3 as core;
use envoy_types::pb::envoy::config::route::v3 as route;
use envoy_types::pb::envoy::extensions::filters::common::fault::v3 as common_fault;
use envoy_types::pb::envoy::extensions::filters::http::cors::v3 as cors;
use envoy_types::pb::envoy::extensions::filters::http::fault::v3 as fault;
use envoy_types::pb::envoy::r#type::matcher::v3 as matcher;
use envoy_types::pb::envoy::r#type::v3 as types;
use weft_api::common::{Destination, HttpRetry, Percent, StringMatch, StringMatcher};
use weft_api::networking::{
    HeaderOperations, HttpFaultInjection, HttpMatchRequest, HttpRoute, SimpleLb,
};

use super::ProxyView;
use super::route::default_retry_policy;
use crate::envoy;
use crate::push::DOMAIN_SUFFIX;
use crate::virtual_service::Bound;

/// Envoy's names of the HTTP filters whose per-route config Istio sets.
pub const FAULT_FILTER: &str = "envoy.filters.http.fault";
pub const CORS_FILTER: &str = "envoy.filters.http.cors";

/// What one translation needs besides the route itself.
pub struct Ctx<'a, 'b> {
    pub view: &'a ProxyView<'b>,
    /// The listener / route-table port.
    pub port: u16,
    pub bound: &'a Bound<'a>,
    /// Proxyless gRPC form (gRPC's xDS client supports a subset; no CORS, no mirror).
    pub grpc: bool,
}

impl Ctx<'_, '_> {
    fn vs_namespace(&self) -> &str {
        &self.bound.resource.meta.namespace
    }
}

/// The Envoy routes of the bound VirtualService for this proxy and port, in order.
pub fn routes(ctx: &Ctx) -> Vec<route::Route> {
    let mut out = Vec::new();
    for r in &ctx.bound.http {
        if r.match_.is_empty() {
            out.push(translate(ctx, r, None));
            continue;
        }
        for m in &r.match_ {
            if applies(ctx, m) {
                out.push(translate(ctx, r, Some(m)));
            }
        }
    }
    out
}

/// Whether a match can apply to this proxy's traffic on this port (Istio drops the others).
fn applies(ctx: &Ctx, m: &HttpMatchRequest) -> bool {
    if m.port != 0 && m.port != ctx.port as u32 {
        return false;
    }
    if !m.gateways.is_empty() && !m.gateways.iter().any(|g| g == "mesh") {
        return false;
    }
    if !m.source_namespace.is_empty() && m.source_namespace != ctx.view.node.namespace {
        return false;
    }
    if !m.source_labels.is_empty() {
        let labels = ctx.view.labels();
        if !m
            .source_labels
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v))
        {
            return false;
        }
    }
    true
}

fn string_matcher(sm: &StringMatch, ignore_case: bool) -> Option<matcher::StringMatcher> {
    use matcher::string_matcher::MatchPattern as P;
    let pattern = match sm.matcher()? {
        StringMatcher::Exact(s) => P::Exact(s.to_string()),
        StringMatcher::Prefix(s) => P::Prefix(s.to_string()),
        StringMatcher::Regex(s) => P::SafeRegex(regex(s)),
    };
    Some(matcher::StringMatcher {
        match_pattern: Some(pattern),
        ignore_case,
    })
}

fn regex(s: &str) -> matcher::RegexMatcher {
    matcher::RegexMatcher {
        regex: s.to_string(),
        ..Default::default()
    }
}

fn header_matcher(name: &str, sm: &StringMatch, invert: bool) -> route::HeaderMatcher {
    use route::header_matcher::HeaderMatchSpecifier as S;
    route::HeaderMatcher {
        name: name.to_ascii_lowercase(),
        header_match_specifier: Some(match string_matcher(sm, false) {
            Some(m) => S::StringMatch(m),
            None => S::PresentMatch(true),
        }),
        invert_match: invert,
        ..Default::default()
    }
}

fn route_match(m: Option<&HttpMatchRequest>) -> route::RouteMatch {
    use route::route_match::PathSpecifier as P;
    let Some(m) = m else {
        return route::RouteMatch {
            path_specifier: Some(P::Prefix("/".into())),
            ..Default::default()
        };
    };
    let path = match m.uri.as_ref().and_then(|u| u.matcher()) {
        Some(StringMatcher::Exact(s)) => P::Path(s.to_string()),
        Some(StringMatcher::Prefix(s)) => P::Prefix(s.to_string()),
        Some(StringMatcher::Regex(s)) => P::SafeRegex(regex(s)),
        None => P::Prefix("/".into()),
    };
    let mut headers = Vec::new();
    for (name, sm) in [
        (":scheme", &m.scheme),
        (":method", &m.method),
        (":authority", &m.authority),
    ] {
        if let Some(sm) = sm {
            headers.push(header_matcher(name, sm, false));
        }
    }
    headers.extend(m.headers.iter().map(|(k, v)| header_matcher(k, v, false)));
    headers.extend(
        m.without_headers
            .iter()
            .map(|(k, v)| header_matcher(k, v, true)),
    );
    let query_parameters = m
        .query_params
        .iter()
        .map(|(name, sm)| {
            use route::query_parameter_matcher::QueryParameterMatchSpecifier as Q;
            route::QueryParameterMatcher {
                name: name.clone(),
                query_parameter_match_specifier: Some(match string_matcher(sm, false) {
                    Some(m) => Q::StringMatch(m),
                    None => Q::PresentMatch(true),
                }),
            }
        })
        .collect();
    route::RouteMatch {
        path_specifier: Some(path),
        case_sensitive: m.ignore_uri_case.then(|| envoy::boolv(false)),
        headers,
        query_parameters,
        ..Default::default()
    }
}

/// The cluster a destination names: the host resolved against the VirtualService's
/// namespace; the port given, else the service's only port, else the listener port.
pub fn destination_cluster(ctx: &Ctx, d: &Destination) -> String {
    let host = weft_api::resolve_host(&d.host, ctx.vs_namespace(), DOMAIN_SUFFIX);
    let port = match &d.port {
        Some(p) if p.number != 0 => p.number as u16,
        _ => match ctx.view.service(&host) {
            Some(svc) if svc.ports.len() == 1 => svc.ports[0].number,
            _ => ctx.port,
        },
    };
    super::cluster_name("outbound", port, &d.subset, &host)
}

fn percent(p: Option<&Percent>) -> types::FractionalPercent {
    // Istio: percentages are sent with a denominator of one million.
    let value = p.map(|p| p.value).unwrap_or(100.0).clamp(0.0, 100.0);
    types::FractionalPercent {
        numerator: (value * 10_000.0).round() as u32,
        denominator: types::fractional_percent::DenominatorType::Million as i32,
    }
}

/// Istio's retry policy: none when `attempts` is 0, the default when unset, `retryOn`
/// integers as retriable status codes.
pub fn retry_policy(r: Option<&HttpRetry>) -> Option<route::RetryPolicy> {
    let Some(r) = r else {
        return Some(default_retry_policy());
    };
    if r.attempts <= 0 {
        return None;
    }
    let mut p = default_retry_policy();
    p.num_retries = Some(envoy::u32v(r.attempts as u32));
    if !r.retry_on.trim().is_empty() {
        let mut on = Vec::new();
        let mut codes = Vec::new();
        for token in r
            .retry_on
            .split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
        {
            match token.parse::<u32>() {
                Ok(code) => codes.push(code),
                Err(_) => on.push(token.to_string()),
            }
        }
        if !codes.is_empty() && !on.iter().any(|t| t == "retriable-status-codes") {
            on.push("retriable-status-codes".into());
        }
        p.retry_on = on.join(",");
        p.retriable_status_codes = codes;
    }
    if let Some(t) = r.per_try_timeout.filter(|t| !t.is_zero()) {
        p.per_try_timeout = Some(envoy::duration(t.get()));
    }
    Some(p)
}

/// gRPC status names (as a VirtualService may write them) to codes.
fn grpc_code(name: &str) -> Option<u32> {
    const NAMES: [&str; 17] = [
        "OK",
        "CANCELLED",
        "UNKNOWN",
        "INVALID_ARGUMENT",
        "DEADLINE_EXCEEDED",
        "NOT_FOUND",
        "ALREADY_EXISTS",
        "PERMISSION_DENIED",
        "RESOURCE_EXHAUSTED",
        "FAILED_PRECONDITION",
        "ABORTED",
        "OUT_OF_RANGE",
        "UNIMPLEMENTED",
        "INTERNAL",
        "UNAVAILABLE",
        "DATA_LOSS",
        "UNAUTHENTICATED",
    ];
    name.parse().ok().or_else(|| {
        NAMES
            .iter()
            .position(|n| n.eq_ignore_ascii_case(name))
            .map(|i| i as u32)
    })
}

/// Envoy's HTTPFault for a VirtualService fault.
pub fn http_fault(f: &HttpFaultInjection) -> fault::HttpFault {
    let delay = f.delay.as_ref().and_then(|d| {
        let fixed = d.fixed_delay?;
        let pct = match (&d.percentage, d.percent) {
            (Some(p), _) => percent(Some(p)),
            (None, n) if n > 0 => percent(Some(&Percent { value: n as f64 })),
            _ => percent(None),
        };
        Some(common_fault::FaultDelay {
            percentage: Some(pct),
            fault_delay_secifier: Some(common_fault::fault_delay::FaultDelaySecifier::FixedDelay(
                envoy::duration(fixed.get()),
            )),
        })
    });
    let abort = f.abort.as_ref().and_then(|a| {
        use fault::fault_abort::ErrorType;
        let error_type = if let Some(s) = a.http_status {
            ErrorType::HttpStatus(s as u32)
        } else if let Some(g) = a.grpc_status.as_deref().and_then(grpc_code) {
            ErrorType::GrpcStatus(g)
        } else {
            return None;
        };
        Some(fault::FaultAbort {
            percentage: Some(percent(a.percentage.as_ref())),
            error_type: Some(error_type),
            ..Default::default()
        })
    });
    fault::HttpFault {
        delay,
        abort,
        ..Default::default()
    }
}

fn header_ops(ops: Option<&HeaderOperations>) -> (Vec<core::HeaderValueOption>, Vec<String>) {
    let Some(ops) = ops else {
        return (Vec::new(), Vec::new());
    };
    use core::header_value_option::HeaderAppendAction as A;
    let mut add = Vec::new();
    for (map, action) in [
        (&ops.set, A::OverwriteIfExistsOrAdd),
        (&ops.add, A::AppendIfExistsOrAdd),
    ] {
        for (k, v) in map {
            add.push(core::HeaderValueOption {
                header: Some(core::HeaderValue {
                    key: k.to_ascii_lowercase(),
                    value: v.clone(),
                    ..Default::default()
                }),
                append_action: action as i32,
                ..Default::default()
            });
        }
    }
    (
        add,
        ops.remove.iter().map(|h| h.to_ascii_lowercase()).collect(),
    )
}

fn cors_policy(c: &weft_api::networking::CorsPolicy) -> cors::CorsPolicy {
    let mut origins: Vec<matcher::StringMatcher> = c
        .allow_origins
        .iter()
        .filter_map(|o| string_matcher(o, false))
        .collect();
    origins.extend(c.allow_origin.iter().map(|o| envoy::exact_matcher(o)));
    cors::CorsPolicy {
        allow_origin_string_match: origins,
        allow_methods: c.allow_methods.join(","),
        allow_headers: c.allow_headers.join(","),
        expose_headers: c.expose_headers.join(","),
        max_age: c
            .max_age
            .map(|d| d.get().as_secs().to_string())
            .unwrap_or_default(),
        allow_credentials: c.allow_credentials.map(envoy::boolv),
        ..Default::default()
    }
}

/// The hash policy of a consistent-hash DestinationRule for the route's destination.
fn hash_policy(ctx: &Ctx, cluster: &str) -> Vec<route::route_action::HashPolicy> {
    use route::route_action::hash_policy::{self as hp, PolicySpecifier as S};
    let Some((_, port, subset, host)) = super::parse_cluster_name(cluster) else {
        return Vec::new();
    };
    let Some(svc) = ctx.view.service(host) else {
        return Vec::new();
    };
    let policy = crate::destination::policy_for(ctx.view, svc, port, subset);
    let Some(ch) = policy
        .load_balancer
        .as_ref()
        .filter(|lb| lb.simple.is_none_or(|s| s == SimpleLb::Unspecified))
        .and_then(|lb| lb.consistent_hash.as_ref())
    else {
        return Vec::new();
    };
    let spec = if let Some(h) = &ch.http_header_name {
        S::Header(hp::Header {
            header_name: h.to_ascii_lowercase(),
            ..Default::default()
        })
    } else if let Some(c) = &ch.http_cookie {
        S::Cookie(hp::Cookie {
            name: c.name.clone(),
            path: c.path.clone(),
            ttl: c.ttl.map(|t| envoy::duration(t.get())),
            ..Default::default()
        })
    } else if ch.use_source_ip == Some(true) {
        S::ConnectionProperties(hp::ConnectionProperties { source_ip: true })
    } else if let Some(q) = &ch.http_query_parameter_name {
        S::QueryParameter(hp::QueryParameter { name: q.clone() })
    } else {
        return Vec::new();
    };
    vec![route::route_action::HashPolicy {
        policy_specifier: Some(spec),
        ..Default::default()
    }]
}

fn redirect(r: &weft_api::networking::HttpRedirect) -> route::RedirectAction {
    use route::redirect_action::{
        PathRewriteSpecifier, RedirectResponseCode as C, SchemeRewriteSpecifier,
    };
    let code = match r.redirect_code {
        302 => C::Found,
        303 => C::SeeOther,
        307 => C::TemporaryRedirect,
        308 => C::PermanentRedirect,
        _ => C::MovedPermanently,
    };
    route::RedirectAction {
        host_redirect: r.authority.clone(),
        port_redirect: r.port.unwrap_or(0),
        scheme_rewrite_specifier: (!r.scheme.is_empty())
            .then(|| SchemeRewriteSpecifier::SchemeRedirect(r.scheme.clone())),
        path_rewrite_specifier: (!r.uri.is_empty())
            .then(|| PathRewriteSpecifier::PathRedirect(r.uri.clone())),
        response_code: code as i32,
        ..Default::default()
    }
}

fn route_name(r: &HttpRoute, m: Option<&HttpMatchRequest>) -> String {
    match m.map(|m| m.name.as_str()).filter(|n| !n.is_empty()) {
        Some(mn) if !r.name.is_empty() => format!("{}.{mn}", r.name),
        Some(mn) => mn.to_string(),
        None => r.name.clone(),
    }
}

fn translate(ctx: &Ctx, r: &HttpRoute, m: Option<&HttpMatchRequest>) -> route::Route {
    let mut out = route::Route {
        name: route_name(r, m),
        r#match: Some(route_match(m)),
        metadata: Some(envoy::metadata(vec![(
            "istio",
            envoy::string_struct([("config", ctx.bound.config_path())]),
        )])),
        ..Default::default()
    };
    let (add, remove) = header_ops(r.headers.as_ref().and_then(|h| h.request.as_ref()));
    out.request_headers_to_add = add;
    out.request_headers_to_remove = remove;
    let (add, remove) = header_ops(r.headers.as_ref().and_then(|h| h.response.as_ref()));
    out.response_headers_to_add = add;
    out.response_headers_to_remove = remove;
    if let Some(f) = &r.fault {
        out.typed_per_filter_config
            .insert(FAULT_FILTER.into(), envoy::any(&http_fault(f)));
    }
    if let Some(c) = r.cors_policy.as_ref().filter(|_| !ctx.grpc) {
        out.typed_per_filter_config
            .insert(CORS_FILTER.into(), envoy::any(&cors_policy(c)));
    }
    if let Some(rd) = &r.redirect {
        out.action = Some(route::route::Action::Redirect(redirect(rd)));
        return out;
    }
    out.action = Some(route::route::Action::Route(route_action(ctx, r)));
    out
}

fn route_action(ctx: &Ctx, r: &HttpRoute) -> route::RouteAction {
    use route::route_action::ClusterSpecifier as C;
    let dests: Vec<_> = r
        .route
        .iter()
        .filter_map(|d| d.destination.as_ref().map(|dest| (d, dest)))
        .collect();
    let mut action = route::RouteAction {
        timeout: Some(envoy::duration(
            r.timeout.map(|t| t.get()).unwrap_or(Duration::ZERO),
        )),
        retry_policy: retry_policy(r.retries.as_ref()),
        ..Default::default()
    };
    if ctx.grpc
        && let Some(t) = r.timeout.filter(|t| !t.is_zero())
    {
        // gRPC's xDS client reads the timeout from max_stream_duration.
        action.max_stream_duration = Some(route::route_action::MaxStreamDuration {
            max_stream_duration: Some(envoy::duration(t.get())),
            grpc_timeout_header_max: Some(envoy::duration(t.get())),
            ..Default::default()
        });
    }
    if dests.len() == 1 || dests.iter().filter(|(d, _)| d.weight > 0).count() <= 1 {
        // One destination (or one with weight): a plain cluster.
        let (d, dest) = dests
            .iter()
            .find(|(d, _)| d.weight > 0)
            .or(dests.first())
            .copied()
            .map(|(d, dest)| (Some(d), dest.clone()))
            .unwrap_or((None, Destination::default()));
        let cluster = destination_cluster(ctx, &dest);
        action.hash_policy = hash_policy(ctx, &cluster);
        action.cluster_specifier = Some(C::Cluster(cluster));
        if let Some(d) = d {
            merge_destination_headers(&mut action, d.headers.as_ref());
        }
    } else {
        let clusters = dests
            .iter()
            .filter(|(d, _)| d.weight > 0)
            .map(|(d, dest)| {
                let (add, remove) = header_ops(d.headers.as_ref().and_then(|h| h.request.as_ref()));
                let (radd, rremove) =
                    header_ops(d.headers.as_ref().and_then(|h| h.response.as_ref()));
                route::weighted_cluster::ClusterWeight {
                    name: destination_cluster(ctx, dest),
                    weight: Some(envoy::u32v(d.weight as u32)),
                    request_headers_to_add: add,
                    request_headers_to_remove: remove,
                    response_headers_to_add: radd,
                    response_headers_to_remove: rremove,
                    ..Default::default()
                }
            })
            .collect();
        if ctx.grpc {
            // As istiod does: the hash policy of every weighted destination with a
            // consistent-hash DestinationRule (without it gRPC's ring hash hashes at random).
            // Kept to the gRPC form: the sidecar form is unchanged.
            for (_, dest) in dests.iter().filter(|(d, _)| d.weight > 0) {
                for hp in hash_policy(ctx, &destination_cluster(ctx, dest)) {
                    if !action.hash_policy.contains(&hp) {
                        action.hash_policy.push(hp);
                    }
                }
            }
        }
        action.cluster_specifier = Some(C::WeightedClusters(route::WeightedCluster {
            clusters,
            ..Default::default()
        }));
    }
    if let Some(rw) = &r.rewrite {
        if !rw.uri.is_empty() {
            action.prefix_rewrite = rw.uri.clone();
        }
        if !rw.authority.is_empty() {
            action.host_rewrite_specifier = Some(
                route::route_action::HostRewriteSpecifier::HostRewriteLiteral(rw.authority.clone()),
            );
        }
    }
    if let Some(mirror) = r.mirror.as_ref().filter(|_| !ctx.grpc) {
        let pct = match (&r.mirror_percentage, r.mirror_percent) {
            (Some(p), _) => percent(Some(p)),
            (None, Some(n)) => percent(Some(&Percent { value: n as f64 })),
            (None, None) => percent(None),
        };
        action.request_mirror_policies = vec![route::route_action::RequestMirrorPolicy {
            cluster: destination_cluster(ctx, mirror),
            runtime_fraction: Some(core::RuntimeFractionalPercent {
                default_value: Some(pct),
                ..Default::default()
            }),
            ..Default::default()
        }];
    }
    action
}

/// A single destination's header operations apply to the whole route (Istio folds them in).
fn merge_destination_headers(
    action: &mut route::RouteAction,
    headers: Option<&weft_api::networking::Headers>,
) {
    // RouteAction carries no header operations; the caller's Route does. Keep them on the
    // action's weighted form instead: one cluster with weight 100.
    let Some(h) = headers else { return };
    let (add, remove) = header_ops(h.request.as_ref());
    let (radd, rremove) = header_ops(h.response.as_ref());
    if add.is_empty() && remove.is_empty() && radd.is_empty() && rremove.is_empty() {
        return;
    }
    let Some(route::route_action::ClusterSpecifier::Cluster(name)) =
        action.cluster_specifier.take()
    else {
        return;
    };
    action.cluster_specifier = Some(route::route_action::ClusterSpecifier::WeightedClusters(
        route::WeightedCluster {
            clusters: vec![route::weighted_cluster::ClusterWeight {
                name,
                weight: Some(envoy::u32v(100)),
                request_headers_to_add: add,
                request_headers_to_remove: remove,
                response_headers_to_add: radd,
                response_headers_to_remove: rremove,
                ..Default::default()
            }],
            ..Default::default()
        },
    ));
}

/// The part of a route table that depends on the proxy itself: which of the VirtualService
/// matches with `sourceLabels` its labels satisfy (one digit each, in config order). Proxies of
/// a namespace with the same key share their route tables.
pub fn source_key(view: &ProxyView) -> String {
    let mut key = String::new();
    let mut labels: Option<BTreeMap<String, String>> = None;
    for r in view.push.resources.iter() {
        let weft_api::Spec::VirtualService(vs) = &r.spec else {
            continue;
        };
        for m in vs.http.iter().flat_map(|h| &h.match_) {
            if m.source_labels.is_empty() {
                continue;
            }
            let labels = labels.get_or_insert_with(|| view.labels());
            let ok = m
                .source_labels
                .iter()
                .all(|(k, v)| labels.get(k) == Some(v));
            key.push(if ok { '1' } else { '0' });
        }
    }
    key
}

#[cfg(test)]
mod tests;
