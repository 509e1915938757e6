use std::path::Path;
use std::sync::Arc;

use prost::Message;

use super::super::SidecarNode;
use super::l4::cidr_range;
use super::*;
use crate::push::PushContext;

const CONFIG: &str = r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: tcp-echo, namespace: default}
spec:
  hosts: [tcp-echo.default.svc.cluster.local]
  addresses: [10.78.0.20]
  location: MESH_INTERNAL
  resolution: STATIC
  ports:
  - {number: 9000, name: tcp, protocol: TCP}
  - {number: 9443, name: tls, protocol: TLS}
  workloadSelector: {labels: {app: tcp-echo}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: tcp-echo-v1, namespace: default}
spec: {address: 10.77.0.11, labels: {app: tcp-echo, version: v1}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: tcp-echo-v2, namespace: default}
spec: {address: 10.77.0.13, labels: {app: tcp-echo, version: v2}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: sleep, namespace: default}
spec: {address: 10.77.0.10, labels: {app: sleep}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: canary, namespace: default}
spec: {address: 10.77.0.14, labels: {app: sleep, track: canary}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: tcp-echo-destination, namespace: default}
spec:
  host: tcp-echo
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
"#;

const V1: &str = "outbound|9000|v1|tcp-echo.default.svc.cluster.local";
const V2: &str = "outbound|9000|v2|tcp-echo.default.svc.cluster.local";
const ALL: &str = "outbound|9000||tcp-echo.default.svc.cluster.local";
const TLS_V1: &str = "outbound|9443|v1|tcp-echo.default.svc.cluster.local";
const TLS_V2: &str = "outbound|9443|v2|tcp-echo.default.svc.cluster.local";
const TLS_ALL: &str = "outbound|9443||tcp-echo.default.svc.cluster.local";

fn push(vs: &str) -> PushContext {
    let text = format!("{CONFIG}\n---\n{vs}");
    let (resources, problems) = weft_api::parse_documents(&text, Path::new("test.yaml"));
    assert!(problems.is_empty(), "{problems:?}");
    PushContext::new(
        "v1".into(),
        Arc::new(weft_api::MeshConfig::default()),
        Arc::new(resources),
    )
}

fn view<'a>(push: &'a PushContext, name: &str, ns: &str) -> ProxyView<'a> {
    let id = format!("sidecar~10.77.0.99~{name}.{ns}~{ns}.svc.cluster.local");
    ProxyView::new(push, SidecarNode::parse(&id).expect("node id"))
}

/// The listener as this proxy gets it (shared or per client).
fn listener(v: &ProxyView, name: &str) -> listener::Listener {
    let all = super::super::listeners(v);
    let r = all
        .iter()
        .find(|r| r.name() == name)
        .unwrap_or_else(|| panic!("{name} missing"));
    listener::Listener::decode(r.resource().value.as_slice()).expect("decode")
}

/// Each chain as (server names, prefixes, stat prefix, clusters with weights).
type ChainView = (Vec<String>, Vec<String>, String, Vec<(String, u32)>);

fn chains(l: &listener::Listener) -> Vec<ChainView> {
    l.filter_chains
        .iter()
        .map(|c| {
            let m = c.filter_chain_match.clone().unwrap_or_default();
            let Some(listener::filter::ConfigType::TypedConfig(any)) = &c.filters[0].config_type
            else {
                panic!("no typed config")
            };
            let t = tcp::TcpProxy::decode(any.value.as_slice()).expect("tcp proxy");
            let clusters = match t.cluster_specifier {
                Some(tcp::tcp_proxy::ClusterSpecifier::Cluster(c)) => vec![(c, 1)],
                Some(tcp::tcp_proxy::ClusterSpecifier::WeightedClusters(w)) => {
                    w.clusters.into_iter().map(|c| (c.name, c.weight)).collect()
                }
                None => Vec::new(),
            };
            (
                m.server_names,
                m.prefix_ranges
                    .iter()
                    .map(|r| {
                        format!(
                            "{}/{}",
                            r.address_prefix,
                            r.prefix_len.as_ref().map(|p| p.value).unwrap_or(0)
                        )
                    })
                    .collect(),
                t.stat_prefix,
                clusters,
            )
        })
        .collect()
}

fn to(clusters: &[(&str, u32)]) -> Vec<(String, u32)> {
    clusters.iter().map(|(c, w)| (c.to_string(), *w)).collect()
}

fn vs(spec: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: tcp-echo, namespace: default}}\nspec:\n  hosts: [tcp-echo]\n{spec}"
    )
}

#[test]
fn without_a_virtual_service_the_port_goes_to_its_cluster() {
    let p = push("");
    let v = view(&p, "sleep", "default");
    let l = listener(&v, "10.78.0.20_9000");
    assert!(l.listener_filters.is_empty());
    assert!(l.filter_chains[0].filter_chain_match.is_none());
    assert_eq!(
        chains(&l),
        vec![(vec![], vec![], ALL.into(), to(&[(ALL, 1)]))]
    );
    let l = listener(&v, "10.78.0.20_9443");
    assert!(l.listener_filters.is_empty());
    assert_eq!(
        chains(&l),
        vec![(vec![], vec![], TLS_ALL.into(), to(&[(TLS_ALL, 1)]))]
    );
    assert!(client_dependent(&p).is_empty());
}

#[test]
fn the_tcp_traffic_shifting_task_splits_by_weight() {
    // istio.io's tcp-echo-20-v2.yaml, mesh-internal: bound to the service, not a gateway.
    let p = push(&vs(
        "  tcp:\n  - match: [{port: 9000}]\n    route:\n    - {destination: {host: tcp-echo, port: {number: 9000}, subset: v1}, weight: 80}\n    - {destination: {host: tcp-echo, port: {number: 9000}, subset: v2}, weight: 20}\n",
    ));
    let v = view(&p, "sleep", "default");
    assert_eq!(
        chains(&listener(&v, "10.78.0.20_9000")),
        vec![(
            vec![],
            vec![],
            "tcp-echo.default".into(),
            to(&[(V1, 80), (V2, 20)])
        )]
    );
    // Nothing depends on the client: the listener is in the shared set.
    assert!(client_dependent(&p).is_empty());
    let shared = shared(&v, &BTreeSet::new());
    assert!(shared.iter().any(|r| r.name() == "10.78.0.20_9000"));
    // A match on another port does not apply; the TLS port ignores tcp routes.
    let p = push(&vs(
        "  tcp:\n  - match: [{port: 9001}]\n    route: [{destination: {host: tcp-echo, subset: v2}}]\n  - route: [{destination: {host: tcp-echo, port: {number: 9000}, subset: v1}}]\n",
    ));
    let v = view(&p, "sleep", "default");
    assert_eq!(
        chains(&listener(&v, "10.78.0.20_9000")),
        vec![(vec![], vec![], V1.into(), to(&[(V1, 1)]))]
    );
    assert_eq!(
        chains(&listener(&v, "10.78.0.20_9443"))[0].3,
        to(&[(TLS_ALL, 1)])
    );
}

#[test]
fn source_labels_and_namespace_decide_per_client() {
    let p = push(&vs(
        "  tcp:\n  - match: [{port: 9000, sourceLabels: {track: canary}}]\n    route: [{destination: {host: tcp-echo, subset: v2}}]\n  - match: [{sourceNamespace: other}]\n    route: [{destination: {host: tcp-echo, subset: v2}, weight: 50}, {destination: {host: tcp-echo, subset: v1}, weight: 50}]\n  - route: [{destination: {host: tcp-echo, subset: v1}}]\n",
    ));
    let dependent = client_dependent(&p);
    assert_eq!(
        dependent,
        BTreeSet::from(["tcp-echo.default.svc.cluster.local".to_string()])
    );
    let sleep = view(&p, "sleep", "default");
    let canary = view(&p, "canary", "default");
    let other = view(&p, "sleep", "other");
    // Not in the shared set; built per client.
    assert!(
        !shared(&sleep, &dependent)
            .iter()
            .any(|r| r.name() == "10.78.0.20_9000")
    );
    // The canary client matches the first route, the others fall through.
    assert_eq!(
        chains(&listener(&canary, "10.78.0.20_9000")),
        vec![(vec![], vec![], V2.into(), to(&[(V2, 1)]))]
    );
    assert_eq!(
        chains(&listener(&sleep, "10.78.0.20_9000")),
        vec![(vec![], vec![], V1.into(), to(&[(V1, 1)]))]
    );
    assert_eq!(
        chains(&listener(&other, "10.78.0.20_9000"))[0].3,
        to(&[(V2, 50), (V1, 50)])
    );
    // The keys tell the three apart; two proxies alike share one.
    let keys = [client_key(&sleep), client_key(&canary), client_key(&other)];
    assert_eq!(keys, ["default|0", "default|1", "other|0"]);
    let sleep2 = view(&p, "tcp-echo-v1", "default");
    assert_eq!(client_key(&sleep2), keys[0]);
}

#[test]
fn destination_subnets_become_prefix_ranges_in_route_order() {
    let p = push(&vs(
        "  tcp:\n  - match: [{destinationSubnets: [10.78.0.0/16]}, {destinationSubnets: [10.1.2.3]}]\n    route: [{destination: {host: tcp-echo, subset: v2}}]\n  - match: [{destinationSubnets: [10.1.2.3, 10.78.0.0/16]}]\n    route: [{destination: {host: tcp-echo, subset: v1}}]\n  - match: [{destinationSubnets: [10.0.0.0/8]}]\n    route: [{destination: {host: tcp-echo, subset: v1}}]\n",
    ));
    let v = view(&p, "sleep", "default");
    assert_eq!(
        chains(&listener(&v, "10.78.0.20_9000")),
        vec![
            (
                vec![],
                vec!["10.1.2.3/32".into(), "10.78.0.0/16".into()],
                V2.into(),
                to(&[(V2, 1)])
            ),
            // The second route repeats the first's prefixes: never reached, dropped.
            (vec![], vec!["10.0.0.0/8".into()], V1.into(), to(&[(V1, 1)])),
            // No catch-all route: the service's own cluster for other destinations.
            (vec![], vec![], ALL.into(), to(&[(ALL, 1)])),
        ]
    );
    // A catch-all before the subnets ends the list.
    let p = push(&vs(
        "  tcp:\n  - route: [{destination: {host: tcp-echo, subset: v1}}]\n  - match: [{destinationSubnets: [10.0.0.0/8]}]\n    route: [{destination: {host: tcp-echo, subset: v2}}]\n",
    ));
    let v = view(&p, "sleep", "default");
    assert_eq!(chains(&listener(&v, "10.78.0.20_9000")).len(), 1);
}

#[test]
fn tls_routes_match_sni_with_the_tls_inspector() {
    let p = push(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: tcp-echo, namespace: default}\nspec:\n  hosts: [tcp-echo, \"*.example.com\"]\n  tls:\n  - match: [{port: 9443, sniHosts: [two.example.com], sourceLabels: {track: canary}}]\n    route: [{destination: {host: tcp-echo, subset: v1}}]\n  - match: [{port: 9443, sniHosts: [Two.example.com]}]\n    route: [{destination: {host: tcp-echo, subset: v2}}]\n  - match: [{sniHosts: [two.example.com]}, {sniHosts: [\"*.example.com\"], destinationSubnets: [10.78.0.0/24]}]\n    route: [{destination: {host: tcp-echo, subset: v1}, weight: 90}, {destination: {host: tcp-echo, subset: v2}, weight: 10}]\n  - match: [{port: 9000, sniHosts: [two.example.com]}]\n    route: [{destination: {host: tcp-echo, subset: v2}}]\n  tcp:\n  - route: [{destination: {host: tcp-echo, subset: v2}}]\n",
    );
    let sleep = view(&p, "sleep", "default");
    let l = listener(&sleep, "10.78.0.20_9443");
    assert_eq!(
        l.listener_filters
            .iter()
            .map(|f| f.name.as_str())
            .collect::<Vec<_>>(),
        ["envoy.filters.listener.tls_inspector"]
    );
    assert_eq!(
        chains(&l),
        vec![
            (
                vec!["two.example.com".into()],
                vec![],
                TLS_V2.into(),
                to(&[(TLS_V2, 1)])
            ),
            // {sniHosts: [two.example.com]} again: dropped (first match wins).
            (
                vec!["*.example.com".into()],
                vec!["10.78.0.0/24".into()],
                "tcp-echo.default".into(),
                to(&[(TLS_V1, 90), (TLS_V2, 10)])
            ),
        ]
    );
    // The canary client's first match is the sourceLabels one.
    let canary = view(&p, "canary", "default");
    assert_eq!(
        chains(&listener(&canary, "10.78.0.20_9443"))[0].3,
        to(&[(TLS_V1, 1)])
    );
    // The TCP port takes the tcp route; tls routes don't apply there.
    assert_eq!(
        chains(&listener(&sleep, "10.78.0.20_9000")),
        vec![(
            vec![],
            vec![],
            "outbound|9000|v2|tcp-echo.default.svc.cluster.local".into(),
            to(&[(V2, 1)])
        )]
    );
    assert!(
        listener(&sleep, "10.78.0.20_9000")
            .listener_filters
            .is_empty()
    );
}

#[test]
fn export_to_and_gateways_limit_which_virtual_services_apply() {
    let p = push(&format!(
        "{}---\n{}",
        vs("  exportTo: [.]\n  tcp:\n  - route: [{destination: {host: tcp-echo, subset: v2}}]\n"),
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: gw, namespace: default}\nspec:\n  hosts: [\"*\"]\n  gateways: [tcp-echo-gateway]\n  tcp:\n  - route: [{destination: {host: tcp-echo, subset: v1}}]\n",
    ));
    assert_eq!(client_dependent(&p).len(), 1);
    let here = view(&p, "sleep", "default");
    let there = view(&p, "sleep", "elsewhere");
    assert_eq!(
        chains(&listener(&here, "10.78.0.20_9000"))[0].3,
        to(&[(V2, 1)])
    );
    assert_eq!(
        chains(&listener(&there, "10.78.0.20_9000"))[0].3,
        to(&[(ALL, 1)])
    );
}

#[test]
fn cidr_ranges_follow_istio() {
    let r = |s: &str| {
        cidr_range(s).map(|c| {
            format!(
                "{}/{}",
                c.address_prefix,
                c.prefix_len.map(|p| p.value).unwrap_or(0)
            )
        })
    };
    assert_eq!(r("10.0.0.1").as_deref(), Some("10.0.0.1/32"));
    assert_eq!(r("10.0.0.0/8").as_deref(), Some("10.0.0.0/8"));
    assert_eq!(r("2001:db8::/32").as_deref(), Some("2001:db8::/32"));
    assert_eq!(r("0.0.0.0/0"), None);
    assert_eq!(r("nonsense"), None);
}

// ---------------------------------------------------------------------------------------------
// Authorization on the inbound chains, path normalization and XFCC on the HCMs

const SECURED: &str = r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: httpbin, namespace: foo}
spec:
  hosts: [httpbin.foo.svc.cluster.local]
  addresses: [10.78.0.30]
  location: MESH_INTERNAL
  resolution: STATIC
  ports:
  - {number: 8000, name: http, protocol: HTTP}
  - {number: 9000, name: tcp, protocol: TCP}
  workloadSelector: {labels: {app: httpbin}}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: ext-authz, namespace: foo}
spec:
  hosts: [ext-authz.foo.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 9000, name: grpc, protocol: GRPC}]
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: httpbin, namespace: foo}
spec: {address: 10.77.0.30, labels: {app: httpbin}}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: allow-get, namespace: foo}
spec:
  selector: {matchLabels: {app: httpbin}}
  rules: [{to: [{operation: {methods: [GET]}}]}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-admin, namespace: foo}
spec:
  action: DENY
  rules: [{to: [{operation: {paths: [/admin]}}]}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: audit-all, namespace: istio-system}
spec:
  action: AUDIT
  rules: [{}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: ext-authz, namespace: foo}
spec:
  selector: {matchLabels: {app: httpbin}}
  action: CUSTOM
  provider: {name: grpc}
  rules: [{to: [{operation: {paths: [/headers]}}]}]
"#;

fn secured_push(mesh_yaml: &str) -> PushContext {
    let (resources, problems) = weft_api::parse_documents(SECURED, Path::new("test.yaml"));
    assert!(problems.is_empty(), "{problems:?}");
    let mesh = format!(
        "extensionProviders:\n- name: grpc\n  envoyExtAuthzGrpc: {{service: ext-authz.foo.svc.cluster.local, port: \"9000\"}}\n{mesh_yaml}"
    );
    let mesh = weft_api::parse_mesh_config(&mesh, Path::new("mesh.yaml"))
        .unwrap_or_else(|p| panic!("{p:?}"));
    let push = PushContext::new("v1".into(), Arc::new(mesh), Arc::new(resources));
    assert!(
        push.authz.problems().is_empty(),
        "{:?}",
        push.authz.problems()
    );
    push
}

fn typed(f: &listener::Filter) -> &envoy_types::pb::google::protobuf::Any {
    match &f.config_type {
        Some(listener::filter::ConfigType::TypedConfig(any)) => any,
        _ => panic!("{} has no typed config", f.name),
    }
}

fn hcm_of(chain: &listener::FilterChain) -> hcm::HttpConnectionManager {
    let f = chain
        .filters
        .iter()
        .find(|f| f.name == "envoy.filters.network.http_connection_manager")
        .unwrap_or_else(|| panic!("{} has no HCM", chain.name));
    hcm::HttpConnectionManager::decode(typed(f).value.as_slice()).expect("hcm")
}

/// An HTTP filter as `name` or `name(ACTION)` for the RBAC filters' enforced rules
/// (`name(shadow)` when only shadow rules are set).
fn http_filter_names(h: &hcm::HttpConnectionManager) -> Vec<String> {
    use envoy_types::pb::envoy::extensions::filters::http::rbac::v3::Rbac;
    h.http_filters
        .iter()
        .map(|f| {
            let Some(hcm::http_filter::ConfigType::TypedConfig(any)) = &f.config_type else {
                return f.name.clone();
            };
            if f.name != "envoy.filters.http.rbac" {
                return f.name.clone();
            }
            let r = Rbac::decode(any.value.as_slice()).expect("rbac");
            match r.rules {
                Some(rules) => format!("{}({})", f.name, action_name(rules.action)),
                None => format!("{}(shadow)", f.name),
            }
        })
        .collect()
}

fn action_name(a: i32) -> &'static str {
    use envoy_types::pb::envoy::config::rbac::v3::rbac::Action;
    Action::try_from(a).map_or("?", |a| a.as_str_name())
}

fn network_filter_names(chain: &listener::FilterChain) -> Vec<String> {
    use envoy_types::pb::envoy::extensions::filters::network::rbac::v3::Rbac;
    chain
        .filters
        .iter()
        .map(|f| {
            if f.name != "envoy.filters.network.rbac" {
                return f.name.clone();
            }
            let r = Rbac::decode(typed(f).value.as_slice()).expect("rbac");
            match r.rules {
                Some(rules) => format!("{}({})", f.name, action_name(rules.action)),
                None => format!("{}(shadow)", f.name),
            }
        })
        .collect()
}

#[test]
fn inbound_chains_carry_authorization_in_istio_order() {
    let p = secured_push("");
    let v = view(&p, "httpbin", "foo");
    let l = listener(&v, super::super::VIRTUAL_INBOUND);
    let http_chains: Vec<&listener::FilterChain> = l
        .filter_chains
        .iter()
        .filter(|c| c.name.ends_with("-http"))
        .collect();
    let tcp_chains: Vec<&listener::FilterChain> = l
        .filter_chains
        .iter()
        .filter(|c| c.name.ends_with("-tcp") || c.name.ends_with("-tls"))
        .collect();
    // Port 8000 and the passthrough chains (ports no service declares) both have HTTP chains.
    assert!(http_chains.iter().any(|c| c.name.starts_with("8000-")));
    assert!(
        http_chains
            .iter()
            .any(|c| c.name.starts_with("virtualInbound-"))
    );
    for c in &http_chains {
        let h = hcm_of(c);
        assert_eq!(
            http_filter_names(&h),
            [
                "envoy.filters.http.rbac(shadow)",
                "envoy.filters.http.ext_authz",
                "envoy.filters.http.rbac(LOG)",
                "envoy.filters.http.rbac(DENY)",
                "envoy.filters.http.rbac(ALLOW)",
                "envoy.filters.http.fault",
                "envoy.filters.http.cors",
                "envoy.filters.http.router",
            ],
            "{}",
            c.name
        );
        // HTTP chains get no network RBAC.
        assert_eq!(c.filters.len(), 1, "{}", c.name);
        assert_eq!(
            h.forward_client_cert_details,
            hcm::http_connection_manager::ForwardClientCertDetails::AppendForward as i32
        );
        let set = h.set_current_client_cert_details.expect("xfcc details");
        assert!(set.subject.is_some_and(|s| s.value) && set.uri && set.dns && !set.cert);
    }
    // Port 9000's chains and the TCP passthrough chains.
    assert!(tcp_chains.iter().any(|c| c.name.starts_with("9000-")));
    assert!(
        tcp_chains
            .iter()
            .any(|c| c.name.starts_with("virtualInbound-"))
    );
    for c in &tcp_chains {
        assert_eq!(
            network_filter_names(c),
            [
                "envoy.filters.network.rbac(shadow)",
                "envoy.filters.network.ext_authz",
                "envoy.filters.network.rbac(LOG)",
                "envoy.filters.network.rbac(DENY)",
                "envoy.filters.network.rbac(ALLOW)",
                "envoy.filters.network.tcp_proxy",
            ],
            "{}",
            c.name
        );
    }
    // A workload no policy selects (apart from the root namespace's AUDIT) in another namespace.
    let v = view(&p, "nobody", "bar");
    let l = listener(&v, super::super::VIRTUAL_INBOUND);
    let h = hcm_of(
        l.filter_chains
            .iter()
            .find(|c| c.name.ends_with("-http"))
            .expect("http chain"),
    );
    assert_eq!(
        http_filter_names(&h),
        [
            "envoy.filters.http.rbac(LOG)",
            "envoy.filters.http.fault",
            "envoy.filters.http.cors",
            "envoy.filters.http.router",
        ]
    );
}

#[test]
fn outbound_listeners_get_no_authorization_or_xfcc() {
    let p = secured_push("");
    let v = view(&p, "httpbin", "foo");
    let l = listener(&v, "0.0.0.0_8000");
    let h = hcm_of(&l.filter_chains[0]);
    assert_eq!(
        http_filter_names(&h),
        [
            "envoy.filters.http.fault",
            "envoy.filters.http.cors",
            "envoy.filters.http.router",
        ]
    );
    assert_eq!(h.forward_client_cert_details, 0);
    assert!(h.set_current_client_cert_details.is_none());
    let l = listener(&v, "10.78.0.30_9000");
    assert_eq!(
        network_filter_names(&l.filter_chains[0]),
        ["envoy.filters.network.tcp_proxy"]
    );
}

#[test]
fn path_normalization_follows_the_mesh_config_on_every_hcm() {
    use hcm::http_connection_manager::PathWithEscapedSlashesAction as Escaped;
    // mode → (normalize_path, merge_slashes, escaped slashes action)
    let cases = [
        ("", (true, false, Escaped::KeepUnchanged)),
        (
            "pathNormalization: {normalization: NONE}",
            (false, false, Escaped::KeepUnchanged),
        ),
        (
            "pathNormalization: {normalization: DEFAULT}",
            (true, false, Escaped::KeepUnchanged),
        ),
        (
            "pathNormalization: {normalization: BASE}",
            (true, false, Escaped::KeepUnchanged),
        ),
        (
            "pathNormalization: {normalization: MERGE_SLASHES}",
            (true, true, Escaped::KeepUnchanged),
        ),
        (
            "pathNormalization: {normalization: DECODE_AND_MERGE_SLASHES}",
            (true, true, Escaped::UnescapeAndForward),
        ),
    ];
    for (mesh, (normalize, merge, escaped)) in cases {
        let p = secured_push(mesh);
        let v = view(&p, "httpbin", "foo");
        let inbound = listener(&v, super::super::VIRTUAL_INBOUND);
        let outbound = listener(&v, "0.0.0.0_8000");
        let hcms = inbound
            .filter_chains
            .iter()
            .filter(|c| c.name.ends_with("-http"))
            .chain(outbound.filter_chains.iter())
            .map(hcm_of);
        for h in hcms {
            assert_eq!(
                (
                    h.normalize_path.map(|b| b.value),
                    h.merge_slashes,
                    h.path_with_escaped_slashes_action
                ),
                (Some(normalize), merge, escaped as i32),
                "{mesh:?} on {}",
                h.stat_prefix
            );
        }
    }
}
