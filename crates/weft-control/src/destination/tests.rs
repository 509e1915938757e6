//! DestinationRule lookup per proxy as istiod 1.14 does it, shown on the bookinfo example with
//! Istio's own DestinationRule samples.

use std::path::Path;
use std::sync::Arc;

use arc_swap::ArcSwap;
use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use prost::Message;
use weft_api::networking::SimpleLb;
use weft_xds::{Generator, NamedResource, ProxyInfo, Subscription};

use super::*;
use crate::generator::MeshGenerator;
use crate::push::PushContext;
use crate::sidecar::SidecarNode;

const EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/bookinfo");
const SAMPLES: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../../shared/istio/samples/bookinfo/networking"
);
const REVIEWS: &str = "outbound|9080||reviews.default.svc.cluster.local";
const REVIEWS_V1: &str = "outbound|9080|v1|reviews.default.svc.cluster.local";

fn read(path: &str) -> String {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{path}: {e} (Istio's samples are in ../shared/istio)"))
}

/// One of Istio's bookinfo networking samples, unchanged.
fn sample(name: &str) -> String {
    read(&format!("{SAMPLES}/{name}"))
}

/// Istio's `destination-rule-reviews.yaml` (RANDOM, subsets v1-v3) with a `spec` line added.
fn reviews_rule(extra_spec: &str) -> String {
    sample("destination-rule-reviews.yaml").replace("spec:\n", &format!("spec:\n{extra_spec}"))
}

fn rule(name: &str, ns: &str, spec: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1beta1\nkind: DestinationRule\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n{spec}"
    )
}

fn resources(docs: &[&str]) -> Arc<Vec<weft_api::Resource>> {
    let mut text = String::new();
    for f in ["services.yaml", "workloads.yaml"] {
        text.push_str(&read(&format!("{EXAMPLE}/{f}")));
        text.push_str("\n---\n");
    }
    text.push_str(&docs.join("\n---\n"));
    let (resources, problems) = weft_api::parse_documents(&text, Path::new("bookinfo.yaml"));
    assert!(problems.is_empty(), "{problems:?}");
    Arc::new(resources)
}

/// The bookinfo services and workloads (all in `default`) with `docs` added, in that order.
fn bookinfo(docs: &[&str], mesh: &str) -> PushContext {
    let mesh = weft_api::parse_mesh_config(mesh, Path::new("mesh.yaml")).expect("mesh");
    PushContext::new("v1".into(), Arc::new(mesh), resources(docs))
}

fn node_id(name: &str, ns: &str) -> String {
    format!("sidecar~10.42.9.9~{name}.{ns}~{ns}.svc.cluster.local")
}

/// A proxy: a bookinfo workload when `name` is one in `default`, else one without labels.
fn view<'a>(push: &'a PushContext, name: &str, ns: &str) -> ProxyView<'a> {
    ProxyView::new(
        push,
        SidecarNode::parse(&node_id(name, ns)).expect("node id"),
    )
}

fn service(push: &PushContext, name: &str) -> Arc<Service> {
    push.registry
        .service(&format!("{name}.default.svc.cluster.local"))
        .expect("bookinfo service")
        .clone()
}

fn subset_names(v: &ProxyView, svc: &Service) -> Vec<String> {
    subsets_for(v, svc).into_iter().map(|s| s.name).collect()
}

fn lb(v: &ProxyView, svc: &Service) -> Option<SimpleLb> {
    policy_for(v, svc, 9080, "")
        .load_balancer
        .and_then(|l| l.simple)
}

fn find<'a>(rs: &'a [NamedResource], name: &str) -> &'a NamedResource {
    rs.iter()
        .find(|r| r.name() == name)
        .unwrap_or_else(|| panic!("{name} missing"))
}

#[test]
fn port_and_subset_policies_override_the_rule() {
    let yaml = r#"
apiVersion: networking.istio.io/v1beta1
kind: ServiceEntry
metadata: {name: httpbin, namespace: default}
spec:
  hosts: [httpbin.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 8000, name: http, protocol: HTTP}, {number: 9000, name: tcp, protocol: TCP}]
---
apiVersion: networking.istio.io/v1beta1
kind: DestinationRule
metadata: {name: httpbin, namespace: default}
spec:
  host: httpbin
  trafficPolicy:
    loadBalancer: {simple: RANDOM}
    connectionPool: {tcp: {maxConnections: 1}}
    portLevelSettings:
    - port: {number: 9000}
      loadBalancer: {simple: LEAST_REQUEST}
  subsets:
  - name: v2
    labels: {version: v2}
    trafficPolicy:
      connectionPool: {tcp: {maxConnections: 7}}
"#;
    let (rs, problems) = weft_api::parse_documents(yaml, Path::new("t.yaml"));
    assert!(problems.is_empty(), "{problems:?}");
    let push = PushContext::new("1".into(), Arc::default(), Arc::new(rs));
    let v = view(&push, "client", "default");
    let svc = push
        .registry
        .service("httpbin.default.svc.cluster.local")
        .unwrap()
        .clone();
    let simple = |p: &Policy| p.load_balancer.as_ref().and_then(|l| l.simple);
    let max_conn = |p: &Policy| {
        p.connection_pool
            .as_ref()
            .and_then(|c| c.tcp.as_ref())
            .map(|t| t.max_connections)
    };
    let p = policy_for(&v, &svc, 8000, "");
    assert_eq!(simple(&p), Some(SimpleLb::Random));
    assert_eq!(max_conn(&p), Some(1));
    let p = policy_for(&v, &svc, 9000, "");
    assert_eq!(simple(&p), Some(SimpleLb::LeastRequest));
    let p = policy_for(&v, &svc, 8000, "v2");
    assert_eq!(max_conn(&p), Some(7));
    assert_eq!(simple(&p), Some(SimpleLb::Random));
    assert_eq!(subsets_for(&v, &svc).len(), 1);
}

#[test]
fn the_proxy_namespace_then_the_service_namespace_then_the_root_namespace() {
    let root = rule(
        "reviews-root",
        "istio-system",
        "  host: reviews.default.svc.cluster.local\n  subsets: [{name: root, labels: {version: v1}}]\n",
    );
    let frontend = rule(
        "reviews",
        "frontend",
        "  host: reviews.default.svc.cluster.local\n  subsets: [{name: frontend, labels: {version: v2}}]\n",
    );
    let other = rule(
        "reviews",
        "other",
        "  host: reviews.default.svc.cluster.local\n  exportTo: ['*']\n  subsets: [{name: other, labels: {version: v3}}]\n",
    );
    let all = sample("destination-rule-all.yaml");
    let p = bookinfo(&[&all, &root, &frontend, &other], "");
    let reviews = service(&p, "reviews");
    let sample_subsets = ["v1", "v2", "v3"];
    // A rule in the proxy's own namespace comes first.
    assert_eq!(
        subset_names(&view(&p, "web", "frontend"), &reviews),
        ["frontend"]
    );
    assert_eq!(subset_names(&view(&p, "web", "other"), &reviews), ["other"]);
    assert_eq!(
        subset_names(&view(&p, "productpage", "default"), &reviews),
        sample_subsets
    );
    // Elsewhere the service's namespace's exported rule, before the root namespace's; a third
    // namespace's rule is not looked at, though exported to all.
    assert_eq!(
        subset_names(&view(&p, "web", "elsewhere"), &reviews),
        sample_subsets
    );
    // In the root namespace only its private rules come first.
    assert_eq!(
        subset_names(&view(&p, "gateway", "istio-system"), &reviews),
        sample_subsets
    );
    // Without the service namespace's rule, the root namespace's.
    let p = bookinfo(&[&root, &frontend, &other], "");
    let reviews = service(&p, "reviews");
    assert_eq!(
        subset_names(&view(&p, "web", "elsewhere"), &reviews),
        ["root"]
    );
    assert_eq!(
        subset_names(&view(&p, "productpage", "default"), &reviews),
        ["root"]
    );
    assert_eq!(
        subset_names(&view(&p, "web", "frontend"), &reviews),
        ["frontend"]
    );
}

#[test]
fn export_to_limits_which_namespaces_see_a_rule() {
    let cds_has_subsets = |p: &PushContext, name: &str, ns: &str| {
        crate::sidecar::clusters(&view(p, name, ns))
            .iter()
            .any(|c| c.name() == REVIEWS_V1)
    };
    // `.`: the sample's reviews rule is for its own namespace only.
    let p = bookinfo(&[&reviews_rule("  exportTo: [\".\"]\n")], "");
    let reviews = service(&p, "reviews");
    assert_eq!(
        lb(&view(&p, "productpage", "default"), &reviews),
        Some(SimpleLb::Random)
    );
    assert!(cds_has_subsets(&p, "productpage", "default"));
    assert_eq!(lb(&view(&p, "web", "frontend"), &reviews), None);
    assert!(subset_names(&view(&p, "web", "frontend"), &reviews).is_empty());
    assert!(!cds_has_subsets(&p, "web", "frontend"));
    // A named namespace sees it; as istiod indexes such a rule as exported only, not even the
    // rule's own namespace does.
    let p = bookinfo(&[&reviews_rule("  exportTo: [frontend]\n")], "");
    let reviews = service(&p, "reviews");
    assert_eq!(
        lb(&view(&p, "web", "frontend"), &reviews),
        Some(SimpleLb::Random)
    );
    assert_eq!(lb(&view(&p, "web", "elsewhere"), &reviews), None);
    assert_eq!(lb(&view(&p, "productpage", "default"), &reviews), None);
    // A private rule of the root namespace applies to the root namespace's proxies only.
    let root_private = rule(
        "reviews",
        "istio-system",
        "  host: reviews.default.svc.cluster.local\n  exportTo: [\".\"]\n  trafficPolicy: {loadBalancer: {simple: LEAST_REQUEST}}\n",
    );
    let p = bookinfo(&[&root_private], "");
    let reviews = service(&p, "reviews");
    assert_eq!(
        lb(&view(&p, "gateway", "istio-system"), &reviews),
        Some(SimpleLb::LeastRequest)
    );
    assert_eq!(lb(&view(&p, "productpage", "default"), &reviews), None);
    // The mesh's defaultDestinationRuleExportTo applies to rules without exportTo.
    let p = bookinfo(
        &[&reviews_rule("")],
        "defaultDestinationRuleExportTo: [\".\"]\n",
    );
    let reviews = service(&p, "reviews");
    assert_eq!(
        lb(&view(&p, "productpage", "default"), &reviews),
        Some(SimpleLb::Random)
    );
    assert_eq!(lb(&view(&p, "web", "frontend"), &reviews), None);
}

#[test]
fn rules_for_one_host_in_one_namespace_are_merged() {
    // destination-rule-all.yaml has reviews' subsets and no policy; destination-rule-reviews.yaml
    // (renamed to coexist) the same subsets and RANDOM; a third rule a duplicate v1, a v4 and
    // LEAST_REQUEST.
    let all = sample("destination-rule-all.yaml");
    let lb_rule = sample("destination-rule-reviews.yaml")
        .replace("  name: reviews\nspec:", "  name: reviews-lb\nspec:");
    let more = rule(
        "reviews-more",
        "default",
        "  host: reviews\n  trafficPolicy: {loadBalancer: {simple: LEAST_REQUEST}}\n  subsets:\n  - {name: v1, labels: {version: v9}}\n  - {name: v4, labels: {version: v4}}\n",
    );
    let p = bookinfo(&[&all, &lb_rule, &more], "");
    let reviews = service(&p, "reviews");
    for v in [
        view(&p, "productpage", "default"),
        view(&p, "web", "frontend"),
    ] {
        // Subsets appended, a duplicate name keeps the first; the first policy given wins.
        assert_eq!(subset_names(&v, &reviews), ["v1", "v2", "v3", "v4"]);
        assert_eq!(
            subset_labels(&v, &reviews, "v1"),
            Some([("version".to_string(), "v1".to_string())].into())
        );
        assert_eq!(lb(&v, &reviews), Some(SimpleLb::Random));
    }
    // The host's exportTo is the first one given: the rule without one becomes visible only
    // where the second rule is exported (to the other namespaces; its own namespace merges the
    // rules visible in it).
    let p = bookinfo(
        &[
            &all,
            &lb_rule.replace("spec:\n", "spec:\n  exportTo: [frontend]\n"),
        ],
        "",
    );
    let reviews = service(&p, "reviews");
    let frontend = view(&p, "web", "frontend");
    assert_eq!(lb(&frontend, &reviews), Some(SimpleLb::Random));
    assert_eq!(subset_names(&frontend, &reviews), ["v1", "v2", "v3"]);
    assert!(subset_names(&view(&p, "web", "elsewhere"), &reviews).is_empty());
    let productpage = view(&p, "productpage", "default");
    assert_eq!(lb(&productpage, &reviews), None);
    assert_eq!(subset_names(&productpage, &reviews), ["v1", "v2", "v3"]);
}

#[test]
fn the_most_specific_host_wins_within_a_namespace() {
    let wide = rule(
        "mesh-wide",
        "default",
        "  host: '*.cluster.local'\n  trafficPolicy: {loadBalancer: {simple: RANDOM}}\n",
    );
    let narrow = rule(
        "default-services",
        "default",
        "  host: '*.default.svc.cluster.local'\n  trafficPolicy: {loadBalancer: {simple: LEAST_REQUEST}}\n",
    );
    let exact = rule(
        "ratings",
        "default",
        "  host: ratings\n  trafficPolicy: {loadBalancer: {simple: ROUND_ROBIN}}\n",
    );
    let p = bookinfo(&[&wide, &narrow, &exact], "");
    for v in [
        view(&p, "productpage", "default"),
        view(&p, "web", "elsewhere"),
    ] {
        assert_eq!(
            lb(&v, &service(&p, "reviews")),
            Some(SimpleLb::LeastRequest)
        );
        assert_eq!(lb(&v, &service(&p, "ratings")), Some(SimpleLb::RoundRobin));
    }
    // The proxy's namespace comes before specificity: its wildcard rule beats the service
    // namespace's exact one.
    let mine = rule(
        "everything",
        "frontend",
        "  host: '*'\n  trafficPolicy: {loadBalancer: {simple: RANDOM}}\n",
    );
    let p = bookinfo(&[&exact, &mine], "");
    assert_eq!(
        lb(&view(&p, "web", "frontend"), &service(&p, "ratings")),
        Some(SimpleLb::Random)
    );
    assert_eq!(
        lb(&view(&p, "web", "elsewhere"), &service(&p, "ratings")),
        Some(SimpleLb::RoundRobin)
    );
}

#[test]
fn a_workload_selector_scopes_a_rule_to_the_proxies_it_selects() {
    // The sample's reviews rule for everyone; LEAST_REQUEST and a canary v3 for productpage
    // only (such a rule is never exported: validation refuses an exportTo beyond its namespace).
    let for_productpage = rule(
        "reviews-productpage",
        "default",
        "  host: reviews\n  workloadSelector: {matchLabels: {app: productpage}}\n  trafficPolicy: {loadBalancer: {simple: LEAST_REQUEST}}\n  subsets:\n  - {name: v3, labels: {version: v3, track: canary}}\n  - {name: canary, labels: {track: canary}}\n",
    );
    let p = bookinfo(&[&reviews_rule(""), &for_productpage], "");
    let reviews = service(&p, "reviews");
    let productpage = view(&p, "productpage", "default");
    assert_eq!(lb(&productpage, &reviews), Some(SimpleLb::LeastRequest));
    assert_eq!(subset_names(&productpage, &reviews), ["v3", "canary"]);
    assert_eq!(
        subset_labels(&productpage, &reviews, "v3").map(|l| l.len()),
        Some(2)
    );
    // Other proxies get the rule without selector. Where istiod 1.14 merged the selector rule
    // into it (the rules visible in the namespace, not the exported ones), its new subset names
    // were appended.
    let ratings = view(&p, "ratings", "default");
    let web = view(&p, "web", "frontend");
    for v in [&ratings, &web] {
        assert_eq!(lb(v, &reviews), Some(SimpleLb::Random));
        assert_eq!(subset_labels(v, &reviews, "v3").map(|l| l.len()), Some(1));
    }
    assert_eq!(
        subset_names(&ratings, &reviews),
        ["v1", "v2", "v3", "canary"]
    );
    assert_eq!(subset_names(&web, &reviews), ["v1", "v2", "v3"]);
    // A selector in another namespace selects no one here.
    let elsewhere = rule(
        "reviews-web",
        "frontend",
        "  host: reviews.default.svc.cluster.local\n  workloadSelector: {matchLabels: {app: productpage}}\n  trafficPolicy: {loadBalancer: {simple: LEAST_REQUEST}}\n",
    );
    let p = bookinfo(&[&reviews_rule(""), &elsewhere], "");
    assert_eq!(
        lb(&view(&p, "productpage", "default"), &service(&p, "reviews")),
        Some(SimpleLb::Random)
    );
    // The selected proxies get a scope of their own, and so (for the appended subset) do the
    // namespace's other proxies; the other namespaces share one.
    let p = bookinfo(&[&reviews_rule(""), &for_productpage], "");
    let key = |name: &str, ns: &str| view(&p, name, ns).destination_scope.key().to_string();
    assert_eq!(key("productpage", "default"), "default|1");
    assert_eq!(key("ratings", "default"), "default|0");
    assert_eq!(key("web", "frontend"), "");
    assert_eq!(key("web", "elsewhere"), "");
    // Without the selector rule, the namespace's proxies see what everyone sees.
    let p = bookinfo(&[&reviews_rule("")], "");
    assert_eq!(view(&p, "ratings", "default").destination_scope.key(), "");
}

#[test]
fn proxies_in_namespaces_with_different_rules_get_different_clusters() {
    let frontend = |version: &str| {
        rule(
            "reviews",
            "frontend",
            &format!(
                "  host: reviews.default.svc.cluster.local\n  trafficPolicy: {{loadBalancer: {{simple: LEAST_REQUEST}}}}\n  subsets: [{{name: v1, labels: {{version: {version}}}}}]\n"
            ),
        )
    };
    let all = sample("destination-rule-all.yaml");
    let ctx = |v: &str, docs: &[&str]| {
        Arc::new(PushContext::new(v.into(), Arc::default(), resources(docs)))
    };
    let first = ctx("1", &[&all, &frontend("v2")]);
    let push = Arc::new(ArcSwap::new(first.clone()));
    let g = MeshGenerator::new(push.clone());
    let info = |name: &str, ns: &str| ProxyInfo {
        id: node_id(name, ns),
        cluster: String::new(),
        metadata: serde_json::json!({}),
        peer_addr: None,
        conn_id: 1,
    };
    let generate = |name: &str, ns: &str, type_url: &str, sub: &Subscription| {
        g.generate(&info(name, ns), type_url, sub)
            .expect("generate")
            .resources
    };
    let cds = |name: &str, ns: &str| {
        generate(name, ns, weft_xds::types::CLUSTER, &Subscription::Wildcard)
    };
    let lb_policy = |r: &NamedResource| {
        Cluster::decode(r.resource().value.as_slice())
            .expect("cluster")
            .lb_policy
    };
    let (default, frontend_cds, elsewhere) = (
        cds("productpage", "default"),
        cds("web", "frontend"),
        cds("web", "elsewhere"),
    );
    use envoy_types::pb::envoy::config::cluster::v3::cluster::LbPolicy;
    assert_eq!(
        lb_policy(find(&frontend_cds, REVIEWS)),
        LbPolicy::LeastRequest as i32
    );
    assert_eq!(
        lb_policy(find(&default, REVIEWS)),
        LbPolicy::RoundRobin as i32
    );
    // The namespaces that see the same rules share one build of the clusters.
    assert!(find(&default, REVIEWS).same(find(&elsewhere, REVIEWS)));
    assert!(!find(&default, REVIEWS).same(find(&frontend_cds, REVIEWS)));
    // The subset clusters exist where a rule defines them, and their endpoints follow the
    // labels the proxy's rule gives the subset.
    assert!(
        !frontend_cds
            .iter()
            .any(|c| c.name() == "outbound|9080|v2|reviews.default.svc.cluster.local")
    );
    let v1_endpoint = |name: &str, ns: &str| {
        let eds = generate(
            name,
            ns,
            weft_xds::types::ENDPOINT,
            &Subscription::names([REVIEWS_V1]),
        );
        let cla = ClusterLoadAssignment::decode(find(&eds, REVIEWS_V1).resource().value.as_slice())
            .expect("assignment");
        format!("{:?}", cla.endpoints)
    };
    assert!(v1_endpoint("productpage", "default").contains("10.42.0.12"));
    assert!(v1_endpoint("web", "frontend").contains("10.42.0.13"));
    assert!(v1_endpoint("web", "elsewhere").contains("10.42.0.12"));
    // A change of the frontend's rule alone names the subset's assignment as changed; the same
    // config again changes nothing.
    g.changed_endpoints(&first);
    let second = ctx("2", &[&all, &frontend("v3")]);
    push.store(second.clone());
    assert!(g.changed_endpoints(&second).contains(REVIEWS_V1));
    assert!(v1_endpoint("web", "frontend").contains("10.42.0.14"));
    assert!(v1_endpoint("productpage", "default").contains("10.42.0.12"));
    let third = ctx("3", &[&all, &frontend("v3")]);
    push.store(third.clone());
    assert!(g.changed_endpoints(&third).is_empty());
}
