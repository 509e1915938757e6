//! Outbound route tables, one per HTTP port (named `<port>` as Istio names them), with a
//! virtual host per service reachable on that port and Istio's `allow_any` / `block_all` host.

use std::time::Duration;

use envoy_types::pb::envoy::config::route::v3 as route;
use weft_xds::NamedResource;

use super::{PASSTHROUGH_CLUSTER, ProxyView};
use crate::envoy;
use crate::registry::Service;

/// Istio's default retry policy (`route/retry/retry.go: DefaultPolicy`).
pub fn default_retry_policy() -> route::RetryPolicy {
    route::RetryPolicy {
        retry_on: "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes"
            .into(),
        num_retries: Some(envoy::u32v(2)),
        retriable_status_codes: vec![503],
        retry_host_predicate: vec![route::retry_policy::RetryHostPredicate {
            name: "envoy.retry_host_predicates.previous_hosts".into(),
            ..Default::default()
        }],
        host_selection_retry_max_attempts: 5,
        ..Default::default()
    }
}

/// The names a service answers to from a proxy in `proxy_ns`: Istio's domain list
/// (FQDN, `name.ns`, `name.ns.svc`, the short name in the same namespace, the VIPs), each
/// with and without `:port`.
pub fn domains(svc: &Service, port: u16, proxy_ns: &str) -> Vec<String> {
    let mut names = svc.names(proxy_ns);
    names.extend(svc.vips.iter().map(|v| v.to_string()));
    let mut out = Vec::with_capacity(names.len() * 2);
    for n in names {
        out.push(format!("{n}:{port}"));
        out.push(n);
    }
    out
}

fn route_to(cluster: String, name: &str) -> route::Route {
    route::Route {
        name: name.into(),
        r#match: Some(route::RouteMatch {
            path_specifier: Some(route::route_match::PathSpecifier::Prefix("/".into())),
            ..Default::default()
        }),
        action: Some(route::route::Action::Route(route::RouteAction {
            cluster_specifier: Some(route::route_action::ClusterSpecifier::Cluster(cluster)),
            timeout: Some(envoy::duration(Duration::ZERO)),
            retry_policy: Some(default_retry_policy()),
            ..Default::default()
        })),
        ..Default::default()
    }
}

/// The routes of a service's virtual host: its VirtualService's, else Istio's default route
/// to the whole service (also when the VirtualService has no HTTP route for this port).
pub fn service_routes(view: &ProxyView, svc: &Service, port: u16, grpc: bool) -> Vec<route::Route> {
    let bound = crate::virtual_service::for_host(
        &view.push.resources,
        &view.push.mesh.default_virtual_service_export_to,
        &svc.hostname,
        &view.node.namespace,
    );
    if let Some(bound) = &bound {
        let routes = super::http_route::routes(&super::http_route::Ctx {
            view,
            port,
            bound,
            grpc,
        });
        if !routes.is_empty() {
            return routes;
        }
    }
    vec![route_to(
        super::cluster_name("outbound", port, "", &svc.hostname),
        "default",
    )]
}

pub fn build(view: &ProxyView, names: &[String]) -> Vec<NamedResource> {
    let mut out = Vec::new();
    for name in names {
        let Ok(port) = name.parse::<u16>() else {
            continue;
        };
        let mut vhosts = Vec::new();
        for svc in view.visible_services() {
            let Some(sp) = svc.port(port) else { continue };
            if !sp.protocol.is_http() {
                continue;
            }
            vhosts.push(route::VirtualHost {
                name: format!("{}:{port}", svc.hostname),
                domains: domains(svc, port, &view.node.namespace),
                routes: service_routes(view, svc, port, false),
                ..Default::default()
            });
        }
        let registry_only = view.registry_only();
        vhosts.push(if registry_only {
            route::VirtualHost {
                name: "block_all".into(),
                domains: vec!["*".into()],
                routes: vec![route::Route {
                    name: "block_all".into(),
                    r#match: Some(route::RouteMatch {
                        path_specifier: Some(route::route_match::PathSpecifier::Prefix("/".into())),
                        ..Default::default()
                    }),
                    action: Some(route::route::Action::DirectResponse(
                        route::DirectResponseAction {
                            status: 502,
                            ..Default::default()
                        },
                    )),
                    ..Default::default()
                }],
                ..Default::default()
            }
        } else {
            route::VirtualHost {
                name: "allow_any".into(),
                domains: vec!["*".into()],
                routes: vec![route_to(PASSTHROUGH_CLUSTER.into(), "allow_any")],
                ..Default::default()
            }
        });
        let rc = route::RouteConfiguration {
            name: name.clone(),
            virtual_hosts: vhosts,
            validate_clusters: Some(envoy::boolv(false)),
            ..Default::default()
        };
        out.push(NamedResource::new(name.clone(), envoy::any(&rc)));
    }
    out
}
