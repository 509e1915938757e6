//! Proxyless gRPC: the resource form gRPC's xDS client understands, as Istio's `grpc`
//! generator serves it. Listeners are API listeners named `<host>:<port>` whose HCM points at
//! the RDS table `outbound|<port>||<host>`; clusters are EDS clusters named as Istio names them.

use std::collections::BTreeSet;

use envoy_types::pb::envoy::config::cluster::v3 as cluster;
use envoy_types::pb::envoy::config::listener::v3 as listener;
use envoy_types::pb::envoy::config::route::v3 as route;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3 as hcm;
use weft_xds::NamedResource;

use crate::envoy;
use crate::push::PushContext;
use crate::registry::Service;
use crate::sidecar::{ProxyView, cluster_name, parse_cluster_name};

/// Resolves a gRPC target `host:port` (FQDN, `name.ns`, or short name in `proxy_ns`) to a
/// service exported to `proxy_ns`.
fn lookup<'a>(push: &'a PushContext, target: &str, proxy_ns: &str) -> Option<(&'a Service, u16)> {
    let (host, port) = target.rsplit_once(':')?;
    let port: u16 = port.parse().ok()?;
    let fqdn = if host.contains('.') && host.split('.').count() > 2 {
        host.to_string()
    } else {
        weft_api::resolve_host(host, proxy_ns, crate::push::DOMAIN_SUFFIX)
    };
    let svc = push.exported_service(&fqdn, proxy_ns)?;
    svc.port(port)?;
    Some((svc.as_ref(), port))
}

pub fn listeners(push: &PushContext, proxy_ns: &str, names: &[String]) -> Vec<NamedResource> {
    let mut out = Vec::new();
    for name in names {
        let Some((svc, port)) = lookup(push, name, proxy_ns) else {
            continue;
        };
        let rds = cluster_name("outbound", port, "", &svc.hostname);
        let hcm = hcm::HttpConnectionManager {
            stat_prefix: name.clone(),
            // gRPC's xDS client runs fault injection (gRFC A33) and the router.
            http_filters: vec![
                hcm::HttpFilter {
                    name: crate::sidecar::http_route::FAULT_FILTER.into(),
                    config_type: Some(hcm::http_filter::ConfigType::TypedConfig(envoy::any(
                        &envoy_types::pb::envoy::extensions::filters::http::fault::v3::HttpFault::default(),
                    ))),
                    ..Default::default()
                },
                hcm::HttpFilter {
                    name: "envoy.filters.http.router".into(),
                    config_type: Some(hcm::http_filter::ConfigType::TypedConfig(envoy::any(
                        &envoy_types::pb::envoy::extensions::filters::http::router::v3::Router::default(
                        ),
                    ))),
                    ..Default::default()
                },
            ],
            route_specifier: Some(hcm::http_connection_manager::RouteSpecifier::Rds(
                hcm::Rds {
                    config_source: Some(envoy::ads_source()),
                    route_config_name: rds,
                },
            )),
            ..Default::default()
        };
        let l = listener::Listener {
            name: name.clone(),
            address: Some(envoy::socket_address(
                &svc.vips
                    .first()
                    .map(|v| v.to_string())
                    .unwrap_or_else(|| "0.0.0.0".into()),
                port as u32,
            )),
            api_listener: Some(listener::ApiListener {
                api_listener: Some(envoy::any(&hcm)),
            }),
            ..Default::default()
        };
        out.push(NamedResource::new(name.clone(), envoy::any(&l)));
    }
    out
}

/// Route tables `outbound|<port>||<host>`: the service's VirtualService routes in the form
/// gRPC supports (header matches, weighted clusters, timeouts as max stream duration, retries,
/// fault injection, hash policies), else the default route.
pub fn routes(view: &ProxyView, names: &[String]) -> Vec<NamedResource> {
    let mut out = Vec::new();
    for name in names {
        let Some(("outbound", port, _, host)) = parse_cluster_name(name) else {
            continue;
        };
        let Some(svc) = view.push.exported_service(host, &view.node.namespace) else {
            continue;
        };
        let mut domains = vec![svc.hostname.clone(), format!("{}:{port}", svc.hostname)];
        let suffix = format!(".{}.svc.{}", svc.namespace, crate::push::DOMAIN_SUFFIX);
        if let Some(short) = svc.hostname.strip_suffix(&suffix) {
            for d in [short.to_string(), format!("{short}.{}", svc.namespace)] {
                domains.push(format!("{d}:{port}"));
                domains.push(d);
            }
        }
        let rc = route::RouteConfiguration {
            name: name.clone(),
            virtual_hosts: vec![route::VirtualHost {
                name: format!("{}:{port}", svc.hostname),
                domains,
                routes: crate::sidecar::service_routes(view, svc, port, true),
                ..Default::default()
            }],
            ..Default::default()
        };
        out.push(NamedResource::new(name.clone(), envoy::any(&rc)));
    }
    out
}

/// EDS clusters by Istio's names (subsets included), with the DestinationRule's load
/// balancer (round robin or ring hash, which gRPC supports); the rule is the one that applies
/// to this client, as for sidecars.
pub fn clusters(view: &ProxyView, names: &[String]) -> Vec<NamedResource> {
    let wanted: BTreeSet<&str> = names.iter().map(String::as_str).collect();
    let mut out = Vec::new();
    for svc in view.visible_services() {
        let subsets = crate::destination::subsets_for(view, svc);
        for sp in &svc.ports {
            let subset_names = std::iter::once("").chain(subsets.iter().map(|s| s.name.as_str()));
            for subset in subset_names {
                let name = cluster_name("outbound", sp.number, subset, &svc.hostname);
                if !wanted.is_empty() && !wanted.contains(name.as_str()) {
                    continue;
                }
                let mut c = cluster::Cluster {
                    name: name.clone(),
                    cluster_discovery_type: Some(cluster::cluster::ClusterDiscoveryType::Type(
                        cluster::cluster::DiscoveryType::Eds as i32,
                    )),
                    eds_cluster_config: Some(cluster::cluster::EdsClusterConfig {
                        eds_config: Some(envoy::ads_source()),
                        service_name: name.clone(),
                    }),
                    lb_policy: cluster::cluster::LbPolicy::RoundRobin as i32,
                    ..Default::default()
                };
                let policy = crate::destination::policy_for(view, svc, sp.number, subset);
                if let Some(lb) = policy
                    .load_balancer
                    .as_ref()
                    .filter(|lb| lb.consistent_hash.is_some())
                {
                    crate::sidecar::traffic_policy::load_balancer(&mut c, lb);
                }
                out.push(NamedResource::new(name, envoy::any(&c)));
            }
        }
    }
    out
}

/// EDS for gRPC clients is the sidecar form (same cluster names, same endpoints).
pub fn endpoints(view: &ProxyView, names: &[String]) -> Vec<NamedResource> {
    crate::sidecar::endpoints(view, names)
}
