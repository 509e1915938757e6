//! Istio's own bookinfo networking samples translated as istiod translates them.

use std::path::Path;
use std::sync::Arc;

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::route::v3 as route;
use envoy_types::pb::envoy::extensions::filters::http::fault::v3 as fault;
use prost::Message;

use crate::push::PushContext;
use crate::sidecar::{ProxyView, SidecarNode};

const EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/bookinfo");
const SAMPLES: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../../shared/istio/samples/bookinfo/networking"
);

fn read(path: &str) -> String {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{path}: {e} (Istio's samples are in ../shared/istio)"))
}

/// The bookinfo example's services and workloads with Istio's files added unchanged.
fn push(samples: &[&str], extra: &str) -> PushContext {
    let mut text = String::new();
    for f in ["services.yaml", "workloads.yaml"] {
        text.push_str(&read(&format!("{EXAMPLE}/{f}")));
        text.push_str("\n---\n");
    }
    // `extra` first: rules for one host are merged, the first one's trafficPolicy applies.
    text.push_str(extra);
    text.push_str("\n---\n");
    text.push_str(&read(&format!("{SAMPLES}/destination-rule-all.yaml")));
    for s in samples {
        text.push_str("\n---\n");
        text.push_str(&read(&format!("{SAMPLES}/{s}")));
    }
    let (resources, problems) = weft_api::parse_documents(&text, Path::new("bookinfo.yaml"));
    assert!(problems.is_empty(), "{problems:?}");
    PushContext::new("v1".into(), Arc::default(), Arc::new(resources))
}

fn view<'a>(push: &'a PushContext, name: &str) -> ProxyView<'a> {
    let id = format!("sidecar~10.42.0.9~{name}.default~default.svc.cluster.local");
    ProxyView::new(push, SidecarNode::parse(&id).expect("node id"))
}

fn vhost_routes(push: &PushContext, proxy: &str, host: &str) -> Vec<route::Route> {
    let rs = crate::sidecar::routes(&view(push, proxy), &["9080".to_string()]);
    let rc = route::RouteConfiguration::decode(rs[0].resource().value.as_slice()).unwrap();
    rc.virtual_hosts
        .into_iter()
        .find(|v| v.name == format!("{host}.default.svc.cluster.local:9080"))
        .expect("virtual host")
        .routes
}

fn cluster(r: &route::Route) -> String {
    match &r.action {
        Some(route::route::Action::Route(ra)) => match &ra.cluster_specifier {
            Some(route::route_action::ClusterSpecifier::Cluster(c)) => c.clone(),
            other => panic!("{other:?}"),
        },
        other => panic!("{other:?}"),
    }
}

#[test]
fn request_routing_by_end_user_header() {
    let p = push(&["virtual-service-reviews-test-v2.yaml"], "");
    let routes = vhost_routes(&p, "productpage", "reviews");
    assert_eq!(routes.len(), 2);
    let m = routes[0].r#match.as_ref().unwrap();
    assert_eq!(m.headers[0].name, "end-user");
    assert_eq!(
        cluster(&routes[0]),
        "outbound|9080|v2|reviews.default.svc.cluster.local"
    );
    assert_eq!(
        cluster(&routes[1]),
        "outbound|9080|v1|reviews.default.svc.cluster.local"
    );
    // Services without a VirtualService keep Istio's default route.
    let d = vhost_routes(&p, "productpage", "details");
    assert_eq!(d[0].name, "default");
    assert_eq!(
        cluster(&d[0]),
        "outbound|9080||details.default.svc.cluster.local"
    );
}

#[test]
fn fault_abort_is_per_route_filter_config() {
    let p = push(&["virtual-service-ratings-test-abort.yaml"], "");
    let routes = vhost_routes(&p, "reviews-v2", "ratings");
    let any = &routes[0].typed_per_filter_config[super::FAULT_FILTER];
    let f = fault::HttpFault::decode(any.value.as_slice()).unwrap();
    let abort = f.abort.unwrap();
    assert_eq!(
        abort.error_type,
        Some(fault::fault_abort::ErrorType::HttpStatus(500))
    );
    assert_eq!(abort.percentage.unwrap().numerator, 1_000_000);
    assert!(
        !routes[1]
            .typed_per_filter_config
            .contains_key(super::FAULT_FILTER)
    );
}

#[test]
fn traffic_shifting_is_weighted_clusters() {
    let p = push(&["virtual-service-reviews-50-v3.yaml"], "");
    let routes = vhost_routes(&p, "productpage", "reviews");
    let Some(route::route::Action::Route(ra)) = &routes[0].action else {
        panic!()
    };
    let Some(route::route_action::ClusterSpecifier::WeightedClusters(w)) = &ra.cluster_specifier
    else {
        panic!("{ra:?}")
    };
    let got: Vec<_> = w
        .clusters
        .iter()
        .map(|c| (c.name.as_str(), c.weight.as_ref().unwrap().value))
        .collect();
    assert_eq!(
        got,
        [
            ("outbound|9080|v1|reviews.default.svc.cluster.local", 50),
            ("outbound|9080|v3|reviews.default.svc.cluster.local", 50)
        ]
    );
    // Istio's default retry policy when the route sets none; no timeout.
    let rp = ra.retry_policy.as_ref().unwrap();
    assert_eq!(rp.num_retries.as_ref().unwrap().value, 2);
    assert_eq!(ra.timeout.as_ref().unwrap().seconds, 0);
}

#[test]
fn timeouts_retries_and_source_labels() {
    let p = push(
        &[],
        r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews]
  http:
  - match: [{sourceLabels: {app: productpage}}]
    timeout: 0.5s
    retries: {attempts: 3, perTryTimeout: 0.2s, retryOn: "gateway-error,409"}
    route: [{destination: {host: reviews, subset: v2}}]
  - retries: {attempts: 0}
    route: [{destination: {host: reviews, subset: v1}}]
"#,
    );
    let routes = vhost_routes(&p, "productpage", "reviews");
    assert_eq!(routes.len(), 2, "productpage matches the sourceLabels");
    let Some(route::route::Action::Route(ra)) = &routes[0].action else {
        panic!()
    };
    assert_eq!(ra.timeout.as_ref().unwrap().nanos, 500_000_000);
    let rp = ra.retry_policy.as_ref().unwrap();
    assert_eq!(rp.retry_on, "gateway-error,retriable-status-codes");
    assert_eq!(rp.retriable_status_codes, [409]);
    assert_eq!(rp.num_retries.as_ref().unwrap().value, 3);
    let Some(route::route::Action::Route(ra)) = &routes[1].action else {
        panic!()
    };
    assert!(ra.retry_policy.is_none(), "attempts: 0 disables retries");
    // reviews itself does not match the sourceLabels: only the second route.
    assert_eq!(vhost_routes(&p, "reviews-v1", "reviews").len(), 1);
    assert_ne!(
        super::source_key(&view(&p, "productpage")),
        super::source_key(&view(&p, "reviews-v1"))
    );
}

#[test]
fn destination_rule_policies_land_on_clusters() {
    let p = push(
        &[],
        r#"apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: details-cb, namespace: default}
spec:
  host: details
  trafficPolicy:
    connectionPool:
      tcp: {maxConnections: 1}
      http: {http1MaxPendingRequests: 1, maxRequestsPerConnection: 1}
    outlierDetection: {consecutive5xxErrors: 1, interval: 1s, baseEjectionTime: 3m, maxEjectionPercent: 100}
    tls: {mode: ISTIO_MUTUAL}
"#,
    );
    let cs = crate::sidecar::clusters(&view(&p, "productpage"));
    let c = cs
        .iter()
        .find(|c| c.name() == "outbound|9080||details.default.svc.cluster.local")
        .unwrap();
    let c = Cluster::decode(c.resource().value.as_slice()).unwrap();
    let t = &c.circuit_breakers.as_ref().unwrap().thresholds[0];
    assert_eq!(t.max_connections.as_ref().unwrap().value, 1);
    assert_eq!(t.max_pending_requests.as_ref().unwrap().value, 1);
    assert_eq!(t.max_requests.as_ref().unwrap().value, u32::MAX);
    let od = c.outlier_detection.as_ref().unwrap();
    assert_eq!(od.consecutive_5xx.as_ref().unwrap().value, 1);
    assert_eq!(od.base_ejection_time.as_ref().unwrap().seconds, 180);
    // ISTIO_MUTUAL is a hard setting: one TLS transport socket, no plaintext fallback.
    assert!(c.transport_socket_matches.is_empty());
    assert_eq!(
        c.transport_socket.as_ref().unwrap().name,
        "envoy.transport_sockets.tls"
    );
}

/// The gRPC form of a route table (what `weft control` serves proxyless gRPC clients).
fn grpc_routes(push: &PushContext, proxy: &str, host: &str) -> Vec<route::Route> {
    let name = format!("outbound|9080||{host}.default.svc.cluster.local");
    let rs = crate::grpcgen::routes(&view(push, proxy), &[name]);
    let rc = route::RouteConfiguration::decode(rs[0].resource().value.as_slice()).unwrap();
    rc.virtual_hosts.into_iter().next().expect("vhost").routes
}

fn hash_headers(r: &route::Route) -> Vec<String> {
    use route::route_action::hash_policy::PolicySpecifier;
    let Some(route::route::Action::Route(ra)) = &r.action else {
        panic!("{r:?}")
    };
    ra.hash_policy
        .iter()
        .map(|h| match &h.policy_specifier {
            Some(PolicySpecifier::Header(h)) => h.header_name.clone(),
            other => panic!("{other:?}"),
        })
        .collect()
}

#[test]
fn grpc_weighted_routes_carry_the_ring_hash_policy() {
    // reviews with consistent hashing on a header, behind a 50/50 split of two subsets.
    let p = push(
        &["virtual-service-reviews-50-v3.yaml"],
        r#"apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews-hash, namespace: default}
spec:
  host: reviews
  trafficPolicy:
    loadBalancer:
      consistentHash: {httpHeaderName: X-User}
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v3, labels: {version: v3}}
"#,
    );
    // gRPC's ring hash needs the hash policy on the route (gRFC A42); istiod puts every
    // weighted destination's there, once here as both name the same header.
    let routes = grpc_routes(&p, "productpage", "reviews");
    assert_eq!(hash_headers(&routes[0]), ["x-user"]);
    // The sidecar form is unchanged.
    let routes = vhost_routes(&p, "productpage", "reviews");
    assert!(hash_headers(&routes[0]).is_empty());
    // Without consistent hashing, no hash policy in either form.
    let p = push(&["virtual-service-reviews-50-v3.yaml"], "");
    assert!(hash_headers(&grpc_routes(&p, "productpage", "reviews")[0]).is_empty());
}
