use std::path::Path;
use std::sync::Arc;

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3 as tls;
use prost::Message;

use super::*;

const CONFIG: &str = r#"
apiVersion: networking.istio.io/v1beta1
kind: ServiceEntry
metadata: {name: server, namespace: default}
spec:
  hosts: [server.default.svc.cluster.local]
  addresses: [10.78.0.10]
  location: MESH_INTERNAL
  resolution: STATIC
  ports:
  - {number: 8080, name: http, protocol: HTTP}
  - {number: 9000, name: tcp-echo, protocol: TCP, targetPort: 9001}
  workloadSelector: {labels: {app: server}}
---
apiVersion: networking.istio.io/v1beta1
kind: ServiceEntry
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews]
  location: MESH_INTERNAL
  resolution: STATIC
  ports:
  - {number: 9080, name: http, protocol: HTTP}
  workloadSelector: {labels: {app: reviews}}
---
apiVersion: networking.istio.io/v1beta1
kind: WorkloadEntry
metadata: {name: server-v1, namespace: default}
spec:
  address: 10.77.0.11
  labels: {app: server, version: v1}
  serviceAccount: server
  ports: {http: 18080}
---
apiVersion: networking.istio.io/v1beta1
kind: WorkloadEntry
metadata: {name: reviews-v2, namespace: default}
spec:
  address: 10.77.0.12
  labels: {app: reviews, version: v2}
  serviceAccount: bookinfo-reviews
---
apiVersion: networking.istio.io/v1beta1
kind: WorkloadEntry
metadata: {name: client, namespace: default}
spec:
  address: 10.77.0.10
  labels: {app: client}
  serviceAccount: client
---
apiVersion: networking.istio.io/v1beta1
kind: DestinationRule
metadata: {name: reviews, namespace: default}
spec:
  host: reviews
  subsets:
  - {name: v2, labels: {version: v2}}
  - {name: v3, labels: {version: v3}}
"#;

fn push(extra: &str, mesh: &str) -> PushContext {
    let text = format!("{CONFIG}\n---\n{extra}");
    let (resources, problems) = weft_api::parse_documents(&text, Path::new("test.yaml"));
    assert!(problems.is_empty(), "{problems:?}");
    let mesh = weft_api::parse_mesh_config(mesh, Path::new("mesh.yaml")).expect("mesh");
    PushContext::new("v1".into(), Arc::new(mesh), Arc::new(resources))
}

fn view<'a>(push: &'a PushContext, name: &str, ip: &str) -> ProxyView<'a> {
    let id = format!("sidecar~{ip}~{name}.default~default.svc.cluster.local");
    ProxyView::new(push, SidecarNode::parse(&id).expect("node id"))
}

fn decode<T: Message + Default>(r: &NamedResource) -> T {
    T::decode(r.resource().value.as_slice()).expect("decode")
}

fn find<'a>(rs: &'a [NamedResource], name: &str) -> &'a NamedResource {
    rs.iter().find(|r| r.name() == name).unwrap_or_else(|| {
        panic!(
            "{name} not in {:?}",
            rs.iter().map(|r| r.name()).collect::<Vec<_>>()
        )
    })
}

/// The `address:port` of every endpoint of an assignment.
fn socket_addresses(cla: &ClusterLoadAssignment) -> Vec<String> {
    use envoy_types::pb::envoy::config::core::v3::address::Address;
    use envoy_types::pb::envoy::config::core::v3::socket_address::PortSpecifier;
    use envoy_types::pb::envoy::config::endpoint::v3::lb_endpoint::HostIdentifier;
    cla.endpoints
        .iter()
        .flat_map(|l| &l.lb_endpoints)
        .filter_map(|e| match &e.host_identifier {
            Some(HostIdentifier::Endpoint(ep)) => match ep.address.as_ref()?.address.as_ref()? {
                Address::SocketAddress(sa) => match sa.port_specifier {
                    Some(PortSpecifier::PortValue(p)) => Some(format!("{}:{p}", sa.address)),
                    _ => None,
                },
                _ => None,
            },
            _ => None,
        })
        .collect()
}

#[test]
fn node_ids_parse_as_istio_writes_them() {
    let n = SidecarNode::parse("sidecar~10.0.0.1~reviews-v1.bookinfo~bookinfo.svc.cluster.local")
        .unwrap();
    assert_eq!(
        (n.ip.as_str(), n.name.as_str(), n.namespace.as_str()),
        ("10.0.0.1", "reviews-v1", "bookinfo")
    );
    assert!(SidecarNode::parse("nonsense").is_none());
}

#[test]
fn clusters_have_istio_names_sni_and_auto_mtls() {
    let p = push("", "");
    let v = view(&p, "client", "10.77.0.10");
    let cs = clusters(&v);
    let c: Cluster = decode(find(&cs, "outbound|8080||server.default.svc.cluster.local"));
    assert_eq!(c.transport_socket_matches.len(), 2);
    let m = &c.transport_socket_matches[0];
    assert_eq!(m.name, "tlsMode-istio");
    let Some(envoy_types::pb::envoy::config::core::v3::transport_socket::ConfigType::TypedConfig(
        any,
    )) = m
        .transport_socket
        .as_ref()
        .and_then(|t| t.config_type.clone())
    else {
        panic!("no tls config")
    };
    let utc = tls::UpstreamTlsContext::decode(any.value.as_slice()).unwrap();
    assert_eq!(
        utc.sni,
        "outbound_.8080_._.server.default.svc.cluster.local"
    );
    let common = utc.common_tls_context.unwrap();
    assert_eq!(common.tls_certificate_sds_secret_configs[0].name, "default");
    let Some(tls::common_tls_context::ValidationContextType::CombinedValidationContext(cvc)) =
        common.validation_context_type
    else {
        panic!("no validation context")
    };
    assert_eq!(
        cvc.validation_context_sds_secret_config.unwrap().name,
        "ROOTCA"
    );
    let sans: Vec<String> = cvc
        .default_validation_context
        .unwrap()
        .match_typed_subject_alt_names
        .iter()
        .filter_map(|m| match m.matcher.as_ref()?.match_pattern.as_ref()? {
            envoy_types::pb::envoy::r#type::matcher::v3::string_matcher::MatchPattern::Exact(s) => {
                Some(s.clone())
            }
            _ => None,
        })
        .collect();
    assert_eq!(
        sans,
        vec!["spiffe://cluster.local/ns/default/sa/server".to_string()]
    );
    // Subsets from the DestinationRule; Istio's reserved clusters.
    for name in [
        "outbound|9080|v2|reviews.default.svc.cluster.local",
        "outbound|9080|v3|reviews.default.svc.cluster.local",
        "PassthroughCluster",
        "BlackHoleCluster",
        "InboundPassthroughClusterIpv4",
    ] {
        find(&cs, name);
    }
    // The client serves nothing, so it has no inbound clusters.
    assert!(!cs.iter().any(|c| c.name().starts_with("inbound|")));
    // The server has inbound clusters for its endpoint ports (WorkloadEntry port, targetPort).
    let sv = view(&p, "server-v1", "10.77.0.11");
    let scs = clusters(&sv);
    find(&scs, "inbound|18080||");
    find(&scs, "inbound|9001||");
}

#[test]
fn endpoints_use_workload_ports_and_subsets() {
    let p = push("", "");
    let v = view(&p, "client", "10.77.0.10");
    let eps = endpoints(
        &v,
        &[
            "outbound|8080||server.default.svc.cluster.local".to_string(),
            "outbound|9000||server.default.svc.cluster.local".to_string(),
            "outbound|9080|v2|reviews.default.svc.cluster.local".to_string(),
            "outbound|9080|v3|reviews.default.svc.cluster.local".to_string(),
        ],
    );
    let addr = |cla: &ClusterLoadAssignment| socket_addresses(cla);
    assert_eq!(addr(&decode(&eps[0])), vec!["10.77.0.11:18080"]);
    assert_eq!(addr(&decode(&eps[1])), vec!["10.77.0.11:9001"]);
    assert_eq!(addr(&decode(&eps[2])), vec!["10.77.0.12:9080"]);
    assert!(addr(&decode(&eps[3])).is_empty(), "no v3 workload exists");
}

#[test]
fn name_table_lists_addressed_services() {
    let p = push(
        r#"apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: ext, namespace: default}
spec:
  hosts: [api.example.com]
  location: MESH_EXTERNAL
  resolution: DNS
  ports: [{number: 443, name: https, protocol: TLS}]
"#,
        "",
    );
    let v = view(&p, "client", "10.77.0.10");
    let t = nds::name_table(&v, false);
    let server = &t.table["server.default.svc.cluster.local"];
    assert_eq!(server.ips, ["10.78.0.10"]);
    assert_eq!(
        (
            server.registry.as_str(),
            server.shortname.as_str(),
            server.namespace.as_str()
        ),
        ("Kubernetes", "server", "default")
    );
    assert!(
        !t.table.contains_key("api.example.com"),
        "no address without auto-allocation"
    );
    let t = nds::name_table(&v, true);
    let ext = &t.table["api.example.com"];
    assert!(ext.ips[0].starts_with("240.240."), "{ext:?}");
    assert_eq!(ext.registry, "External");
    // Deterministic bytes: an unchanged table is no change.
    let a = nds::resources(&v, true);
    let b = nds::resources(&v, true);
    assert_eq!(a[0].resource().value, b[0].resource().value);
}

#[test]
fn a_sidecar_resource_scopes_what_the_proxy_gets() {
    let p = push(
        r#"apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: client, namespace: default}
spec:
  workloadSelector: {labels: {app: client}}
  egress: [{hosts: ["./server.default.svc.cluster.local"]}]
  outboundTrafficPolicy: {mode: REGISTRY_ONLY}
"#,
        "",
    );
    let names = |rs: &[NamedResource]| rs.iter().map(|r| r.name().to_string()).collect::<Vec<_>>();
    let client = view(&p, "client", "10.77.0.10");
    assert_eq!(client.sidecar_key(), "default/client");
    let cs = names(&clusters(&client));
    assert!(
        cs.contains(&"outbound|8080||server.default.svc.cluster.local".to_string()),
        "{cs:?}"
    );
    assert!(!cs.iter().any(|c| c.contains("reviews")), "{cs:?}");
    let rc: RouteConfiguration = decode(&routes(&client, &["8080".to_string()])[0]);
    let vhosts: Vec<&str> = rc.virtual_hosts.iter().map(|v| v.name.as_str()).collect();
    assert_eq!(
        vhosts,
        ["server.default.svc.cluster.local:8080", "block_all"]
    );
    // A proxy the Sidecar does not select keeps everything and the mesh's ALLOW_ANY.
    let server = view(&p, "server-v1", "10.77.0.11");
    assert_eq!(server.sidecar_key(), "");
    assert!(
        names(&clusters(&server))
            .iter()
            .any(|c| c.contains("reviews"))
    );
    let rc: RouteConfiguration = decode(&routes(&server, &["8080".to_string()])[0]);
    assert_eq!(
        rc.virtual_hosts.last().map(|v| v.name.as_str()),
        Some("allow_any")
    );
}

#[test]
fn dns_resolved_service_entries_become_dns_clusters() {
    let p = push(
        r#"apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: ext, namespace: default}
spec:
  hosts: [api.example.com]
  location: MESH_EXTERNAL
  resolution: DNS
  ports: [{number: 443, name: https, protocol: TLS}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: rr, namespace: default}
spec:
  hosts: [rr.example.com]
  location: MESH_EXTERNAL
  resolution: DNS_ROUND_ROBIN
  ports: [{number: 80, name: http, protocol: HTTP}]
  endpoints:
  - {address: one.example.net, ports: {http: 8080}, weight: 3}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: passthrough, namespace: default}
spec:
  hosts: [pass.example.com]
  addresses: [192.0.2.99]
  location: MESH_EXTERNAL
  resolution: NONE
  ports: [{number: 80, name: http, protocol: HTTP}]
"#,
        "dnsRefreshRate: 5s\n",
    );
    let v = view(&p, "client", "10.77.0.10");
    let cs = clusters(&v);
    let hosts = |c: &Cluster| {
        c.load_assignment
            .as_ref()
            .map(socket_addresses)
            .unwrap_or_default()
    };
    use envoy_types::pb::envoy::config::cluster::v3::cluster::{
        ClusterDiscoveryType, DiscoveryType,
    };
    let ext: Cluster = decode(find(&cs, "outbound|443||api.example.com"));
    assert_eq!(
        ext.cluster_discovery_type,
        Some(ClusterDiscoveryType::Type(DiscoveryType::StrictDns as i32))
    );
    assert!(ext.eds_cluster_config.is_none());
    assert_eq!(hosts(&ext), ["api.example.com:443"]);
    #[allow(deprecated)]
    {
        assert!(ext.respect_dns_ttl);
        assert_eq!(ext.dns_refresh_rate.as_ref().map(|d| d.seconds), Some(5));
    }
    let rr: Cluster = decode(find(&cs, "outbound|80||rr.example.com"));
    assert_eq!(
        rr.cluster_discovery_type,
        Some(ClusterDiscoveryType::Type(DiscoveryType::LogicalDns as i32))
    );
    assert_eq!(hosts(&rr), ["one.example.net:8080"]);
    // No EDS for them.
    assert!(endpoints(&v, &["outbound|443||api.example.com".to_string()]).is_empty());
    // resolution NONE: the original destination.
    let pass: Cluster = decode(find(&cs, "outbound|80||pass.example.com"));
    assert_eq!(
        pass.cluster_discovery_type,
        Some(ClusterDiscoveryType::Type(
            DiscoveryType::OriginalDst as i32
        ))
    );
    assert!(pass.eds_cluster_config.is_none());
    // The TLS port of a service without addresses: `0.0.0.0_443`, a chain for its host
    // as SNI, then Istio's fallthrough to the PassthroughCluster.
    let ls = listeners(&v);
    let l: Listener = decode(find(&ls, "0.0.0.0_443"));
    let names: Vec<Vec<String>> = l
        .filter_chains
        .iter()
        .map(|c| {
            c.filter_chain_match
                .clone()
                .unwrap_or_default()
                .server_names
        })
        .collect();
    assert_eq!(names, [vec!["api.example.com".to_string()], vec![]]);
    let fallthrough = l.filter_chains[1].filters.last().and_then(|f| match &f.config_type {
            Some(envoy_types::pb::envoy::config::listener::v3::filter::ConfigType::TypedConfig(a)) => {
                envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::TcpProxy::decode(a.value.as_slice()).ok()
            }
            _ => None,
        });
    assert_eq!(
        fallthrough.map(|t| t.stat_prefix).as_deref(),
        Some("PassthroughCluster")
    );
}

fn inbound_chains(p: &PushContext) -> Vec<(Option<u32>, String, Vec<String>, bool)> {
    let v = view(p, "server-v1", "10.77.0.11");
    let ls = listeners(&v);
    let l: Listener = decode(find(&ls, VIRTUAL_INBOUND));
    l.filter_chains
        .iter()
        .map(|c| {
            let m = c.filter_chain_match.clone().unwrap_or_default();
            (
                m.destination_port.map(|p| p.value),
                m.transport_protocol,
                m.application_protocols,
                c.transport_socket
                    .as_ref()
                    .is_some_and(|t| t.name == "envoy.transport_sockets.tls"),
            )
        })
        .collect()
}

#[test]
fn permissive_strict_and_disable_chains() {
    let p = push("", "");
    let chains = inbound_chains(&p);
    let port = |n: u32| {
        chains
            .iter()
            .filter(|c| c.0 == Some(n))
            .cloned()
            .collect::<Vec<_>>()
    };
    // PERMISSIVE HTTP port: mTLS with Istio's ALPNs, and plaintext.
    let http = port(18080);
    assert_eq!(http.len(), 2);
    assert!(http[0].1 == "tls" && http[0].3 && http[0].2.contains(&"istio-http/1.1".to_string()));
    assert!(http[1].1 == "raw_buffer" && !http[1].3);
    // PERMISSIVE TCP port: mTLS, plaintext, TLS passthrough.
    let tcp = port(9001);
    assert_eq!(tcp.len(), 3);
    assert_eq!(
        tcp[0].2,
        vec!["istio-peer-exchange".to_string(), "istio".to_string()]
    );

    let strict = push(
        "apiVersion: security.istio.io/v1beta1\nkind: PeerAuthentication\nmetadata: {name: default, namespace: istio-system}\nspec: {mtls: {mode: STRICT}}\n",
        "",
    );
    let chains = inbound_chains(&strict);
    assert!(
        chains.iter().all(|c| c.1 == "tls" && c.3),
        "STRICT has only mTLS chains: {chains:?}"
    );

    // Workload policy overrides the mesh; portLevelMtls overrides the workload mode.
    let mixed = push(
        "apiVersion: security.istio.io/v1beta1\nkind: PeerAuthentication\nmetadata: {name: default, namespace: istio-system}\nspec: {mtls: {mode: STRICT}}\n---\napiVersion: security.istio.io/v1beta1\nkind: PeerAuthentication\nmetadata: {name: server, namespace: default}\nspec:\n  selector: {matchLabels: {app: server}}\n  mtls: {mode: UNSET}\n  portLevelMtls:\n    18080: {mode: DISABLE}\n",
        "",
    );
    let chains = inbound_chains(&mixed);
    let http: Vec<_> = chains.iter().filter(|c| c.0 == Some(18080)).collect();
    assert_eq!(http.len(), 1);
    assert!(
        !http[0].3 && http[0].1.is_empty(),
        "DISABLE is plaintext only: {http:?}"
    );
    assert!(
        chains.iter().filter(|c| c.0 == Some(9001)).all(|c| c.3),
        "UNSET inherits STRICT"
    );
}

#[test]
fn min_tls_version_goes_into_inbound_tls() {
    let p = push("", "meshMTLS:\n  minProtocolVersion: TLSV1_3\n");
    let v = view(&p, "server-v1", "10.77.0.11");
    let l: Listener = decode(find(&listeners(&v), VIRTUAL_INBOUND));
    let ts = l.filter_chains[0].transport_socket.clone().unwrap();
    let Some(envoy_types::pb::envoy::config::core::v3::transport_socket::ConfigType::TypedConfig(
        any,
    )) = ts.config_type
    else {
        panic!()
    };
    let dtc = tls::DownstreamTlsContext::decode(any.value.as_slice()).unwrap();
    assert!(dtc.require_client_certificate.unwrap().value);
    let params = dtc.common_tls_context.unwrap().tls_params.unwrap();
    assert_eq!(
        params.tls_minimum_protocol_version,
        tls::tls_parameters::TlsProtocol::TlSv13 as i32
    );
}

#[test]
fn outbound_listeners_and_routes() {
    let p = push("", "");
    let v = view(&p, "client", "10.77.0.10");
    let ls = listeners(&v);
    find(&ls, VIRTUAL_OUTBOUND);
    find(&ls, "0.0.0.0_8080");
    find(&ls, "0.0.0.0_9080");
    find(&ls, "10.78.0.10_9000");
    let rs = routes(&v, &["8080".to_string(), "9080".to_string()]);
    let rc: RouteConfiguration = decode(find(&rs, "9080"));
    let vh = &rc.virtual_hosts[0];
    assert_eq!(vh.name, "reviews.default.svc.cluster.local:9080");
    for d in [
        "reviews",
        "reviews:9080",
        "reviews.default",
        "reviews.default.svc.cluster.local:9080",
    ] {
        assert!(
            vh.domains.contains(&d.to_string()),
            "{d} missing from {:?}",
            vh.domains
        );
    }
    // The auto-allocated VIP (240.240.0.0/16) is a domain too.
    assert!(
        vh.domains.iter().any(|d| d.starts_with("240.240.")),
        "{:?}",
        vh.domains
    );
    assert_eq!(rc.virtual_hosts.last().unwrap().name, "allow_any");
    let blocked = push("", "outboundTrafficPolicy: {mode: REGISTRY_ONLY}\n");
    let v = view(&blocked, "client", "10.77.0.10");
    let rc: RouteConfiguration = decode(find(&routes(&v, &["8080".to_string()]), "8080"));
    assert_eq!(rc.virtual_hosts.last().unwrap().name, "block_all");
}

#[test]
fn access_log_follows_mesh_config() {
    let p = push("", "accessLogFile: /dev/stdout\naccessLogEncoding: JSON\n");
    let v = view(&p, "client", "10.77.0.10");
    let l: Listener = decode(find(&listeners(&v), "0.0.0.0_8080"));
    let f = &l.filter_chains[0].filters[0];
    let Some(envoy_types::pb::envoy::config::listener::v3::filter::ConfigType::TypedConfig(any)) =
        &f.config_type
    else {
        panic!()
    };
    let h = envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::HttpConnectionManager::decode(
            any.value.as_slice(),
        )
        .unwrap();
    assert_eq!(h.access_log.len(), 1);
    assert_eq!(h.access_log[0].name, "envoy.access_loggers.file");
    let none = push("", "");
    let v = view(&none, "client", "10.77.0.10");
    let l: Listener = decode(find(&listeners(&v), "0.0.0.0_8080"));
    let Some(envoy_types::pb::envoy::config::listener::v3::filter::ConfigType::TypedConfig(any)) =
        &l.filter_chains[0].filters[0].config_type
    else {
        panic!()
    };
    let h = envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::HttpConnectionManager::decode(
            any.value.as_slice(),
        )
        .unwrap();
    assert!(h.access_log.is_empty());
}

fn hcm_of(l: &Listener) -> envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::HttpConnectionManager{
    let Some(envoy_types::pb::envoy::config::listener::v3::filter::ConfigType::TypedConfig(any)) =
        &l.filter_chains[0].filters[0].config_type
    else {
        panic!("no typed config")
    };
    Message::decode(any.value.as_slice()).expect("hcm")
}

#[test]
fn telemetry_access_logs_follow_the_workload_and_direction() {
    use envoy_types::pb::envoy::config::accesslog::v3 as accesslog;
    use envoy_types::pb::envoy::extensions::access_loggers::filters::cel::v3 as cel;
    use envoy_types::pb::envoy::extensions::access_loggers::open_telemetry::v3 as otel;
    let p = push(
        r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: collector, namespace: istio-system}
spec:
  hosts: [collector.istio-system.svc.cluster.local]
  ports: [{number: 4317, name: grpc, protocol: GRPC}]
  resolution: DNS
---
apiVersion: telemetry.istio.io/v1alpha1
kind: Telemetry
metadata: {name: client-logging, namespace: default}
spec:
  selector: {matchLabels: {app: client}}
  accessLogging:
  - providers: [{name: otel}]
    match: {mode: CLIENT}
    filter: {expression: "response.code >= 400"}
"#,
        "accessLogFile: /dev/stdout\nextensionProviders:\n- name: otel\n  envoyOtelAls: {service: collector.istio-system.svc.cluster.local, port: 4317, logFormat: {labels: {b: \"%RESPONSE_CODE%\", a: \"%PROTOCOL%\"}}}\n",
    );
    // The client's outbound HCM logs to the collector, filtered.
    let client = view(&p, "client", "10.77.0.10");
    let h = hcm_of(&decode(find(&listeners(&client), "0.0.0.0_8080")));
    assert_eq!(h.access_log.len(), 1);
    let log = &h.access_log[0];
    assert_eq!(log.name, "envoy.access_loggers.open_telemetry");
    let Some(accesslog::access_log::ConfigType::TypedConfig(any)) = &log.config_type else {
        panic!()
    };
    let cfg = otel::OpenTelemetryAccessLogConfig::decode(any.value.as_slice()).unwrap();
    #[allow(deprecated)]
    let common = cfg.common_config.unwrap();
    assert_eq!(common.log_name, "otel_envoy_accesslog");
    let keys: Vec<String> = cfg
        .attributes
        .unwrap()
        .values
        .into_iter()
        .map(|kv| kv.key)
        .collect();
    assert_eq!(keys, ["a", "b"], "attributes sorted by key");
    let Some(envoy_types::pb::envoy::config::core::v3::grpc_service::TargetSpecifier::EnvoyGrpc(g)) =
        common.grpc_service.unwrap().target_specifier
    else {
        panic!()
    };
    assert_eq!(
        g.cluster_name,
        "outbound|4317||collector.istio-system.svc.cluster.local"
    );
    let Some(accesslog::access_log_filter::FilterSpecifier::ExtensionFilter(f)) =
        log.filter.clone().unwrap().filter_specifier
    else {
        panic!()
    };
    assert_eq!(f.name, "envoy.access_loggers.extension_filters.cel");
    let Some(accesslog::extension_filter::ConfigType::TypedConfig(any)) = f.config_type else {
        panic!()
    };
    assert_eq!(
        cel::ExpressionFilter::decode(any.value.as_slice())
            .unwrap()
            .expression,
        "response.code >= 400"
    );
    // Its inbound side: the Telemetry resource applies (no SERVER rule), so nothing.
    let inbound: Listener = decode(find(&listeners(&client), "virtualInbound"));
    for f in inbound.filter_chains.iter().flat_map(|c| c.filters.iter()) {
        use envoy_types::pb::envoy::config::listener::v3::filter::ConfigType;
        use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::HttpConnectionManager;
        if let Some(ConfigType::TypedConfig(a)) = &f.config_type
            && a.type_url.ends_with("HttpConnectionManager")
        {
            let h = HttpConnectionManager::decode(a.value.as_slice()).unwrap();
            assert!(h.access_log.is_empty(), "inbound logs: {:?}", h.access_log);
        }
    }
    // Another workload keeps the legacy accessLogFile.
    let server = view(&p, "server-v1", "10.77.0.11");
    let h = hcm_of(&decode(find(&listeners(&server), "0.0.0.0_8080")));
    assert_eq!(h.access_log.len(), 1);
    assert_eq!(h.access_log[0].name, "envoy.access_loggers.file");
    assert_ne!(
        crate::sidecar::telemetry_key(&client),
        crate::sidecar::telemetry_key(&server),
        "the two proxies must not share outbound listeners"
    );
}

#[test]
fn proxyless_grpc_resources() {
    let p = push("", "");
    let ls = crate::grpcgen::listeners(
        &p,
        "default",
        &[
            "server.default.svc.cluster.local:8080".to_string(),
            "reviews:9080".to_string(),
        ],
    );
    assert_eq!(ls.len(), 2);
    let l: Listener = decode(&ls[0]);
    assert!(l.api_listener.is_some());
    let v = view(&p, "client", "10.77.0.10");
    let rs = crate::grpcgen::routes(
        &v,
        &["outbound|8080||server.default.svc.cluster.local".to_string()],
    );
    let rc: RouteConfiguration = decode(&rs[0]);
    assert!(
        rc.virtual_hosts[0]
            .domains
            .contains(&"server.default.svc.cluster.local:8080".to_string())
    );
    let cs = crate::grpcgen::clusters(
        &v,
        &["outbound|8080||server.default.svc.cluster.local".to_string()],
    );
    assert_eq!(cs.len(), 1);
}

#[test]
fn upstream_protocol_follows_h2_upgrade_policy_and_use_client_protocol() {
    use envoy_types::pb::envoy::extensions::upstreams::http::v3 as http_opts;
    use http_opts::http_protocol_options::{
        UpstreamProtocolOptions as U, explicit_http_config::ProtocolConfig as P,
    };
    const SERVER: &str = "outbound|8080||server.default.svc.cluster.local";
    let protocol = |extra: &str, mesh: &str, name: &str| -> &'static str {
        let p = push(extra, mesh);
        let v = view(&p, "client", "10.77.0.10");
        let c: Cluster = decode(find(&clusters(&v), name));
        let any = &c.typed_extension_protocol_options["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"];
        let o = http_opts::HttpProtocolOptions::decode(any.value.as_slice()).unwrap();
        match o.upstream_protocol_options {
            Some(U::ExplicitHttpConfig(e)) => match e.protocol_config {
                Some(P::HttpProtocolOptions(_)) => "h1",
                Some(P::Http2ProtocolOptions(_)) => "h2",
                _ => "other",
            },
            Some(U::UseDownstreamProtocolConfig(_)) => "downstream",
            _ => "other",
        }
    };
    let dr = |http: &str| {
        format!(
            "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: server, namespace: default}}\nspec:\n  host: server\n  trafficPolicy: {{connectionPool: {{http: {http}}}}}\n"
        )
    };
    // An HTTP port: HTTP/1.1 unless upgraded; the mesh-wide UPGRADE unless the rule opts out.
    assert_eq!(protocol("", "", SERVER), "h1");
    assert_eq!(
        protocol(&dr("{h2UpgradePolicy: UPGRADE}"), "", SERVER),
        "h2"
    );
    assert_eq!(protocol("", "h2UpgradePolicy: UPGRADE\n", SERVER), "h2");
    assert_eq!(
        protocol(
            &dr("{h2UpgradePolicy: DO_NOT_UPGRADE}"),
            "h2UpgradePolicy: UPGRADE\n",
            SERVER
        ),
        "h1"
    );
    assert_eq!(
        protocol(&dr("{useClientProtocol: true}"), "", SERVER),
        "downstream"
    );
    // The mesh's upgrade wins over useClientProtocol, as istiod applies it last.
    assert_eq!(
        protocol(
            &dr("{useClientProtocol: true}"),
            "h2UpgradePolicy: UPGRADE\n",
            SERVER
        ),
        "h2"
    );
    // The inbound side talks HTTP/1.1 to an HTTP app; the passthrough clusters keep the
    // client's protocol.
    let p = push("", "");
    let v = view(&p, "server-v1", "10.77.0.11");
    let c: Cluster = decode(find(&clusters(&v), "inbound|18080||"));
    let o = http_opts::HttpProtocolOptions::decode(
            c.typed_extension_protocol_options
                ["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]
                .value
                .as_slice(),
        )
        .unwrap();
    assert!(matches!(
        o.upstream_protocol_options,
        Some(U::ExplicitHttpConfig(ref e)) if matches!(e.protocol_config, Some(P::HttpProtocolOptions(_)))
    ));
    assert_eq!(protocol("", "", "PassthroughCluster"), "downstream");
}
