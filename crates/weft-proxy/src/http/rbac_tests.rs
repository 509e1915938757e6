//! The HCM with Istio's inbound authz filters, end to end in process: listener protos as
//! istiod 1.14 shapes them compiled into a snapshot, requests served over an in-memory stream.

#![allow(deprecated)]

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use envoy_types::pb::envoy::config::core::v3 as core;
use envoy_types::pb::envoy::config::listener::v3 as listener;
use envoy_types::pb::envoy::config::rbac::v3 as rbac;
use envoy_types::pb::envoy::config::route::v3 as route;
use envoy_types::pb::envoy::extensions::filters::http::rbac::v3 as http_rbac;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3 as hcm;
use envoy_types::pb::envoy::r#type::matcher::v3 as m;
use envoy_types::pb::google::protobuf;
use http_body_util::{BodyExt, Full};
use prost::Message;

use crate::conn::ConnInfo;
use crate::snapshot::{Direction, NetworkFilter, Raw, Snapshot};

fn any<T: Message + prost::Name>(msg: &T) -> protobuf::Any {
    protobuf::Any {
        type_url: T::type_url(),
        value: msg.encode_to_vec(),
    }
}

fn http_filter(name: &str, cfg: Option<protobuf::Any>) -> hcm::HttpFilter {
    hcm::HttpFilter {
        name: name.into(),
        config_type: cfg.map(hcm::http_filter::ConfigType::TypedConfig),
        ..Default::default()
    }
}

fn method(v: &str) -> rbac::Permission {
    rbac::Permission {
        rule: Some(rbac::permission::Rule::Header(route::HeaderMatcher {
            name: ":method".into(),
            header_match_specifier: Some(route::header_matcher::HeaderMatchSpecifier::ExactMatch(
                v.into(),
            )),
            ..Default::default()
        })),
    }
}

fn path_prefix(v: &str) -> rbac::Permission {
    rbac::Permission {
        rule: Some(rbac::permission::Rule::UrlPath(m::PathMatcher {
            rule: Some(m::path_matcher::Rule::Path(m::StringMatcher {
                match_pattern: Some(m::string_matcher::MatchPattern::Prefix(v.into())),
                ignore_case: false,
            })),
        })),
    }
}

fn anyone() -> rbac::Principal {
    rbac::Principal {
        identifier: Some(rbac::principal::Identifier::Any(true)),
    }
}

fn rbac_filter(action: rbac::rbac::Action, id: &str, perm: rbac::Permission) -> hcm::HttpFilter {
    let rules = rbac::Rbac {
        action: action as i32,
        policies: [(
            id.to_string(),
            rbac::Policy {
                permissions: vec![perm],
                principals: vec![anyone()],
                ..Default::default()
            },
        )]
        .into(),
        ..Default::default()
    };
    http_filter(
        "envoy.filters.http.rbac",
        Some(any(&http_rbac::Rbac {
            rules: Some(rules),
            shadow_rules_stat_prefix: "istio_dry_run_allow_".into(),
            ..Default::default()
        })),
    )
}

/// An inbound HTTP listener: DENY `/admin*`, ALLOW GET, a direct 200 `ok` behind them.
fn inbound(filters: Vec<hcm::HttpFilter>, normalize: bool) -> listener::Listener {
    let routes = route::RouteConfiguration {
        name: "inbound|8080||".into(),
        virtual_hosts: vec![route::VirtualHost {
            name: "inbound|http|8080".into(),
            domains: vec!["*".into()],
            routes: vec![route::Route {
                name: "default".into(),
                r#match: Some(route::RouteMatch {
                    path_specifier: Some(route::route_match::PathSpecifier::Prefix("/".into())),
                    ..Default::default()
                }),
                action: Some(route::route::Action::DirectResponse(
                    route::DirectResponseAction {
                        status: 200,
                        body: Some(core::DataSource {
                            specifier: Some(core::data_source::Specifier::InlineString(
                                "ok".into(),
                            )),
                            ..Default::default()
                        }),
                        ..Default::default()
                    },
                )),
                ..Default::default()
            }],
            ..Default::default()
        }],
        ..Default::default()
    };
    let cfg = hcm::HttpConnectionManager {
        stat_prefix: "inbound_0.0.0.0_28080".into(),
        http_filters: filters,
        route_specifier: Some(hcm::http_connection_manager::RouteSpecifier::RouteConfig(
            routes,
        )),
        normalize_path: Some(protobuf::BoolValue { value: normalize }),
        forward_client_cert_details:
            hcm::http_connection_manager::ForwardClientCertDetails::AppendForward as i32,
        ..Default::default()
    };
    listener::Listener {
        name: "virtualInbound".into(),
        address: Some(core::Address {
            address: Some(core::address::Address::SocketAddress(core::SocketAddress {
                address: "0.0.0.0".into(),
                port_specifier: Some(core::socket_address::PortSpecifier::PortValue(15006)),
                ..Default::default()
            })),
        }),
        filter_chains: vec![listener::FilterChain {
            name: "0.0.0.0_8080".into(),
            filters: vec![listener::Filter {
                name: "envoy.filters.network.http_connection_manager".into(),
                config_type: Some(listener::filter::ConfigType::TypedConfig(any(&cfg))),
            }],
            ..Default::default()
        }],
        ..Default::default()
    }
}

fn istio_filters() -> Vec<hcm::HttpFilter> {
    use rbac::rbac::Action as A;
    vec![
        http_filter(
            "istio.alpn",
            Some(protobuf::Any {
                type_url:
                    "type.googleapis.com/istio.envoy.config.filter.http.alpn.v2alpha1.FilterConfig"
                        .into(),
                value: Vec::new(),
            }),
        ),
        rbac_filter(
            A::Deny,
            "ns[foo]-policy[deny-admin]-rule[0]",
            path_prefix("/admin"),
        ),
        rbac_filter(A::Allow, "ns[foo]-policy[get]-rule[0]", method("GET")),
        http_filter("envoy.filters.http.router", None),
    ]
}

fn compile(l: listener::Listener) -> Result<Snapshot, crate::ProxyError> {
    let live = Arc::new(weft_identity::LiveIdentity::new());
    let factory = crate::tls::TlsFactory::new(live, "cluster.local".into());
    let mut raw = Raw::default();
    raw.listeners.insert(l.name.clone(), l);
    Snapshot::compile(raw, &factory, &Snapshot::default())
}

async fn send(snap: Arc<Snapshot>, method: &str, path: &str) -> (u16, String) {
    let NetworkFilter::Http(h) = &snap.listeners["virtualInbound"].chains[0].filter else {
        panic!("not an HCM");
    };
    let h = h.clone();
    let proxy = crate::test_proxy(Snapshot::default());
    let (client, server) = tokio::io::duplex(64 * 1024);
    let conn = ConnInfo {
        direction: Direction::Inbound,
        original_dst: "10.0.0.2:8080".parse().unwrap(),
        remote: "10.0.0.1:40000".parse().unwrap(),
        peer_principal: None,
        peer_cert: None,
        sni: None,
        alpn: None,
    };
    tokio::spawn(super::serve(server, conn, h, proxy));
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(client))
            .await
            .unwrap();
    tokio::spawn(conn);
    let req = http::Request::builder()
        .method(method)
        .uri(path)
        .header("host", "httpbin.foo:8000")
        .header("x-forwarded-client-cert", "URI=spiffe://forged")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(5), sender.send_request(req))
        .await
        .unwrap()
        .unwrap();
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test]
async fn istio_authz_chain_with_path_normalization() {
    let snap = Arc::new(compile(inbound(istio_filters(), true)).unwrap());
    let ok = (200, "ok".to_string());
    let denied = (403, "RBAC: access denied".to_string());
    for (method, path, want) in [
        ("GET", "/get", ok.clone()),
        ("GET", "/get?x=/admin", ok.clone()),
        ("POST", "/get", denied.clone()),
        ("GET", "/admin", denied.clone()),
        ("GET", "/%61dmin", denied.clone()),
        ("GET", "/admin/../admin", denied.clone()),
        ("GET", "/./admin", denied.clone()),
        ("GET", "/x/%2e%2e/admin/x", denied.clone()),
        // Only MERGE_SLASHES would fold this one.
        ("GET", "//admin", ok.clone()),
        ("GET", "/a%00", (400, "Bad Request".to_string())),
    ] {
        assert_eq!(
            send(snap.clone(), method, path).await,
            want,
            "{method} {path}"
        );
    }
    let stats: std::collections::HashMap<String, u64> =
        crate::snapshot::counter::all().into_iter().collect();
    assert!(
        stats["http.inbound_0.0.0.0_28080.rbac.denied"] >= 6,
        "{stats:?}"
    );
    // Without normalization the encoded and dotted forms get through (NONE).
    let snap = Arc::new(compile(inbound(istio_filters(), false)).unwrap());
    assert_eq!(send(snap.clone(), "GET", "/%61dmin").await, ok);
    assert_eq!(send(snap, "GET", "/admin/../admin").await, denied);
}

#[test]
fn unknown_and_unusable_filters_refuse_the_listener() {
    for (name, type_url, want) in [
        (
            "envoy.filters.http.ext_authz",
            "envoy.extensions.filters.http.ext_authz.v3.ExtAuthz",
            "ext_authz needs a grpc_service or an http_service",
        ),
        (
            "envoy.filters.http.lua",
            "envoy.extensions.filters.http.lua.v3.Lua",
            "unknown HTTP filter type",
        ),
        (
            "istio.stats",
            "envoy.extensions.filters.http.wasm.v3.Wasm",
            "unknown HTTP filter type",
        ),
    ] {
        let mut filters = istio_filters();
        filters.insert(
            1,
            http_filter(
                name,
                Some(protobuf::Any {
                    type_url: format!("type.googleapis.com/{type_url}"),
                    value: Vec::new(),
                }),
            ),
        );
        let e = compile(inbound(filters, true)).unwrap_err().to_string();
        for part in ["listener virtualInbound", "0.0.0.0_8080", name, want] {
            assert!(e.contains(part), "{name}: {e}");
        }
    }
    // A security filter sent without config is refused too, never skipped.
    let mut filters = istio_filters();
    filters.insert(0, http_filter("envoy.filters.http.rbac", None));
    assert!(compile(inbound(filters, true)).is_err());
    // Several RBAC filters keep their order.
    let snap = compile(inbound(istio_filters(), true)).unwrap();
    let NetworkFilter::Http(h) = &snap.listeners["virtualInbound"].chains[0].filter else {
        panic!()
    };
    use crate::snapshot::filter::HttpFilter as F;
    let kinds: Vec<&str> = h
        .filters
        .iter()
        .map(|f| match f {
            F::Rbac(r)
                if r.enforce
                    .as_ref()
                    .is_some_and(|e| e.action == crate::snapshot::rbac::Action::Deny) =>
            {
                "deny"
            }
            F::Rbac(_) => "allow",
            F::Router => "router",
            _ => "other",
        })
        .collect();
    assert_eq!(kinds, ["deny", "allow", "router"]);
    assert!(h.path.normalize);
    assert_eq!(h.xfcc.mode, crate::snapshot::XfccMode::AppendForward);
}

#[test]
fn unknown_network_filters_refuse_the_listener() {
    let mut l = inbound(istio_filters(), true);
    l.filter_chains[0].filters.insert(
        0,
        listener::Filter {
            name: "envoy.filters.network.ext_authz".into(),
            config_type: Some(listener::filter::ConfigType::TypedConfig(protobuf::Any {
                type_url:
                    "type.googleapis.com/envoy.extensions.filters.network.ext_authz.v3.ExtAuthz"
                        .into(),
                value: Vec::new(),
            })),
        },
    );
    let e = compile(l).unwrap_err().to_string();
    assert!(
        e.contains("envoy.filters.network.ext_authz") && e.contains("0.0.0.0_8080"),
        "{e}"
    );
    let mut l = inbound(istio_filters(), true);
    l.filter_chains[0].filters.insert(
        0,
        listener::Filter {
            name: "envoy.filters.network.redis_proxy".into(),
            config_type: None,
        },
    );
    assert!(compile(l).is_err());
    // Istio's TCP metadata exchange is skipped.
    let mut l = inbound(istio_filters(), true);
    l.filter_chains[0].filters.insert(
        0,
        listener::Filter {
            name: "istio.metadata_exchange".into(),
            config_type: Some(listener::filter::ConfigType::TypedConfig(protobuf::Any {
                type_url: "type.googleapis.com/envoy.tcp.metadataexchange.config.MetadataExchange"
                    .into(),
                value: Vec::new(),
            })),
        },
    );
    assert!(compile(l).is_ok());
}
