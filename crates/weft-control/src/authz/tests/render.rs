//! proto3 JSON rendering of the filters the builder emits (the subset it uses), to compare
//! with istiod's golden YAML as JSON values: field names, oneof choices, enum names, omitted
//! defaults and the policy maps all have to match.

use envoy_types::pb::envoy::config::core::v3 as core;
use envoy_types::pb::envoy::config::listener::v3 as listener;
use envoy_types::pb::envoy::config::rbac::v3 as rbac;
use envoy_types::pb::envoy::config::route::v3 as route;
use envoy_types::pb::envoy::extensions::filters::http::ext_authz::v3 as http_ext;
use envoy_types::pb::envoy::extensions::filters::http::rbac::v3 as http_rbac;
use envoy_types::pb::envoy::extensions::filters::network::ext_authz::v3 as net_ext;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3 as hcm;
use envoy_types::pb::envoy::extensions::filters::network::rbac::v3 as net_rbac;
use envoy_types::pb::envoy::r#type::matcher::v3 as matcher;
use envoy_types::pb::google::protobuf;
use prost::{Message, Name};
use serde_json::{Value, json};
fn obj(pairs: Vec<(&str, Option<Value>)>) -> Value {
    Value::Object(
        pairs
            .into_iter()
            .filter_map(|(k, v)| v.map(|v| (k.to_string(), v)))
            .collect(),
    )
}

fn s(v: &str) -> Option<Value> {
    (!v.is_empty()).then(|| json!(v))
}

fn b(v: bool) -> Option<Value> {
    v.then_some(json!(true))
}

fn duration(d: &protobuf::Duration) -> Value {
    if d.nanos == 0 {
        return json!(format!("{}s", d.seconds));
    }
    let mut frac = format!("{:09}", d.nanos);
    while frac.len() > 3 && frac.ends_with("000") {
        frac.truncate(frac.len() - 3);
    }
    json!(format!("{}.{frac}s", d.seconds))
}

#[allow(deprecated)]
fn string_matcher(m: &matcher::StringMatcher) -> Value {
    use matcher::string_matcher::MatchPattern as P;
    let (k, v) = match &m.match_pattern {
        Some(P::Exact(x)) => ("exact", json!(x)),
        Some(P::Prefix(x)) => ("prefix", json!(x)),
        Some(P::Suffix(x)) => ("suffix", json!(x)),
        Some(P::Contains(x)) => ("contains", json!(x)),
        Some(P::SafeRegex(r)) => (
            "safeRegex",
            obj(vec![
                ("googleRe2", r.engine_type.as_ref().map(|_| json!({}))),
                ("regex", s(&r.regex)),
            ]),
        ),
        other => panic!("unexpected string matcher {other:?}"),
    };
    obj(vec![(k, Some(v)), ("ignoreCase", b(m.ignore_case))])
}

fn list_string(m: &Option<matcher::ListStringMatcher>) -> Option<Value> {
    m.as_ref()
        .map(|l| json!({"patterns": l.patterns.iter().map(string_matcher).collect::<Vec<_>>()}))
}

#[allow(deprecated)]
fn header(h: &route::HeaderMatcher) -> Value {
    use route::header_matcher::HeaderMatchSpecifier as S;
    let (k, v) = match &h.header_match_specifier {
        Some(S::ExactMatch(x)) => ("exactMatch", json!(x)),
        Some(S::PrefixMatch(x)) => ("prefixMatch", json!(x)),
        Some(S::SuffixMatch(x)) => ("suffixMatch", json!(x)),
        Some(S::PresentMatch(x)) => ("presentMatch", json!(x)),
        Some(S::StringMatch(m)) => ("stringMatch", string_matcher(m)),
        other => panic!("unexpected header matcher {other:?}"),
    };
    obj(vec![("name", s(&h.name)), (k, Some(v))])
}

fn value_matcher(v: &matcher::ValueMatcher) -> Value {
    use matcher::value_matcher::MatchPattern as P;
    match &v.match_pattern {
        Some(P::StringMatch(m)) => json!({"stringMatch": string_matcher(m)}),
        Some(P::ListMatch(l)) => match &l.match_pattern {
            Some(matcher::list_matcher::MatchPattern::OneOf(one)) => {
                json!({"listMatch": {"oneOf": value_matcher(one)}})
            }
            None => json!({"listMatch": {}}),
        },
        other => panic!("unexpected value matcher {other:?}"),
    }
}

fn metadata(m: &matcher::MetadataMatcher) -> Value {
    let path: Vec<Value> = m
        .path
        .iter()
        .map(|p| match &p.segment {
            Some(matcher::metadata_matcher::path_segment::Segment::Key(k)) => json!({"key": k}),
            None => json!({}),
        })
        .collect();
    obj(vec![
        ("filter", s(&m.filter)),
        ("path", Some(json!(path))),
        ("value", m.value.as_ref().map(value_matcher)),
    ])
}

fn cidr(c: &core::CidrRange) -> Value {
    obj(vec![
        ("addressPrefix", s(&c.address_prefix)),
        ("prefixLen", c.prefix_len.as_ref().map(|l| json!(l.value))),
    ])
}

#[allow(deprecated)]
fn permission(p: &rbac::Permission) -> Value {
    use rbac::permission::Rule as R;
    let set = |rules: &[rbac::Permission]| json!({"rules": rules.iter().map(permission).collect::<Vec<_>>()});
    match &p.rule {
        Some(R::AndRules(x)) => json!({"andRules": set(&x.rules)}),
        Some(R::OrRules(x)) => json!({"orRules": set(&x.rules)}),
        Some(R::Any(x)) => json!({"any": x}),
        Some(R::NotRule(x)) => json!({"notRule": permission(x)}),
        Some(R::Header(h)) => json!({"header": header(h)}),
        Some(R::UrlPath(m)) => match &m.rule {
            Some(matcher::path_matcher::Rule::Path(sm)) => {
                json!({"urlPath": {"path": string_matcher(sm)}})
            }
            None => json!({"urlPath": {}}),
        },
        Some(R::DestinationIp(c)) => json!({"destinationIp": cidr(c)}),
        Some(R::DestinationPort(x)) => json!({"destinationPort": x}),
        Some(R::RequestedServerName(m)) => json!({"requestedServerName": string_matcher(m)}),
        Some(R::Metadata(m)) => json!({"metadata": metadata(m)}),
        other => panic!("unexpected permission {other:?}"),
    }
}

#[allow(deprecated)]
fn principal(p: &rbac::Principal) -> Value {
    use rbac::principal::Identifier as I;
    let set =
        |ids: &[rbac::Principal]| json!({"ids": ids.iter().map(principal).collect::<Vec<_>>()});
    match &p.identifier {
        Some(I::AndIds(x)) => json!({"andIds": set(&x.ids)}),
        Some(I::OrIds(x)) => json!({"orIds": set(&x.ids)}),
        Some(I::Any(x)) => json!({"any": x}),
        Some(I::NotId(x)) => json!({"notId": principal(x)}),
        Some(I::Authenticated(a)) => json!({"authenticated": obj(vec![(
            "principalName",
            a.principal_name.as_ref().map(string_matcher)
        )])}),
        Some(I::DirectRemoteIp(c)) => json!({"directRemoteIp": cidr(c)}),
        Some(I::RemoteIp(c)) => json!({"remoteIp": cidr(c)}),
        Some(I::Header(h)) => json!({"header": header(h)}),
        Some(I::Metadata(m)) => json!({"metadata": metadata(m)}),
        other => panic!("unexpected principal {other:?}"),
    }
}

fn rbac_rules(r: &rbac::Rbac) -> Value {
    let action = match rbac::rbac::Action::try_from(r.action) {
        Ok(rbac::rbac::Action::Allow) => None,
        Ok(a) => Some(json!(a.as_str_name())),
        Err(_) => panic!("bad action {}", r.action),
    };
    let policies: serde_json::Map<String, Value> = r
        .policies
        .iter()
        .map(|(k, p)| {
            (
                k.clone(),
                json!({
                    "permissions": p.permissions.iter().map(permission).collect::<Vec<_>>(),
                    "principals": p.principals.iter().map(principal).collect::<Vec<_>>(),
                }),
            )
        })
        .collect();
    obj(vec![
        ("action", action),
        (
            "policies",
            (!policies.is_empty()).then_some(Value::Object(policies)),
        ),
    ])
}

fn grpc_service(g: &core::GrpcService) -> Value {
    let envoy_grpc = match &g.target_specifier {
        Some(core::grpc_service::TargetSpecifier::EnvoyGrpc(e)) => obj(vec![
            ("authority", s(&e.authority)),
            ("clusterName", s(&e.cluster_name)),
        ]),
        other => panic!("unexpected grpc target {other:?}"),
    };
    obj(vec![
        ("envoyGrpc", Some(envoy_grpc)),
        ("timeout", g.timeout.as_ref().map(duration)),
    ])
}

fn transport(v: i32) -> Option<Value> {
    (v == core::ApiVersion::V3 as i32).then(|| json!("V3"))
}

fn typed_config(any: &protobuf::Any) -> Value {
    let bytes = any.value.as_slice();
    let mut body = if any.type_url == http_rbac::Rbac::type_url() {
        let c = http_rbac::Rbac::decode(bytes).expect("http rbac");
        obj(vec![
            ("rules", c.rules.as_ref().map(rbac_rules)),
            ("shadowRules", c.shadow_rules.as_ref().map(rbac_rules)),
            ("shadowRulesStatPrefix", s(&c.shadow_rules_stat_prefix)),
        ])
    } else if any.type_url == net_rbac::Rbac::type_url() {
        let c = net_rbac::Rbac::decode(bytes).expect("network rbac");
        obj(vec![
            ("rules", c.rules.as_ref().map(rbac_rules)),
            ("shadowRules", c.shadow_rules.as_ref().map(rbac_rules)),
            ("shadowRulesStatPrefix", s(&c.shadow_rules_stat_prefix)),
            ("statPrefix", s(&c.stat_prefix)),
        ])
    } else if any.type_url == http_ext::ExtAuthz::type_url() {
        ext_authz_http(&http_ext::ExtAuthz::decode(bytes).expect("ext_authz"))
    } else if any.type_url == net_ext::ExtAuthz::type_url() {
        let c = net_ext::ExtAuthz::decode(bytes).expect("network ext_authz");
        obj(vec![
            ("failureModeAllow", b(c.failure_mode_allow)),
            (
                "filterEnabledMetadata",
                c.filter_enabled_metadata.as_ref().map(metadata),
            ),
            ("grpcService", c.grpc_service.as_ref().map(grpc_service)),
            ("statPrefix", s(&c.stat_prefix)),
            ("transportApiVersion", transport(c.transport_api_version)),
        ])
    } else {
        panic!("unexpected filter config {}", any.type_url)
    };
    if let Value::Object(m) = &mut body {
        m.insert("@type".into(), json!(any.type_url));
    }
    body
}

#[allow(deprecated)]
fn ext_authz_http(c: &http_ext::ExtAuthz) -> Value {
    let service = match &c.services {
        Some(http_ext::ext_authz::Services::HttpService(h)) => {
            let uri = h.server_uri.as_ref().map(|u| {
                let cluster = match &u.http_upstream_type {
                    Some(core::http_uri::HttpUpstreamType::Cluster(c)) => s(c),
                    None => None,
                };
                obj(vec![
                    ("cluster", cluster),
                    ("timeout", u.timeout.as_ref().map(duration)),
                    ("uri", s(&u.uri)),
                ])
            });
            let request = h.authorization_request.as_ref().map(|r| {
                let add: Vec<Value> = r
                    .headers_to_add
                    .iter()
                    .map(|h| json!({"key": h.key, "value": h.value}))
                    .collect();
                obj(vec![
                    ("allowedHeaders", list_string(&r.allowed_headers)),
                    ("headersToAdd", (!add.is_empty()).then(|| json!(add))),
                ])
            });
            let response = h.authorization_response.as_ref().map(|r| {
                obj(vec![
                    (
                        "allowedClientHeaders",
                        list_string(&r.allowed_client_headers),
                    ),
                    (
                        "allowedClientHeadersOnSuccess",
                        list_string(&r.allowed_client_headers_on_success),
                    ),
                    (
                        "allowedUpstreamHeaders",
                        list_string(&r.allowed_upstream_headers),
                    ),
                ])
            });
            (
                "httpService",
                obj(vec![
                    ("authorizationRequest", request),
                    ("authorizationResponse", response),
                    ("pathPrefix", s(&h.path_prefix)),
                    ("serverUri", uri),
                ]),
            )
        }
        Some(http_ext::ext_authz::Services::GrpcService(g)) => ("grpcService", grpc_service(g)),
        None => panic!("ext_authz without a service"),
    };
    let status = c.status_on_error.as_ref().map(|st| {
        let name = envoy_types::pb::envoy::r#type::v3::StatusCode::try_from(st.code)
            .map(|c| c.as_str_name().to_string())
            .unwrap_or_else(|_| st.code.to_string());
        json!({"code": name})
    });
    let body = c.with_request_body.as_ref().map(|w| {
        obj(vec![
            ("allowPartialMessage", b(w.allow_partial_message)),
            (
                "maxRequestBytes",
                (w.max_request_bytes != 0).then(|| json!(w.max_request_bytes)),
            ),
            ("packAsBytes", b(w.pack_as_bytes)),
        ])
    });
    obj(vec![
        ("failureModeAllow", b(c.failure_mode_allow)),
        (
            "filterEnabledMetadata",
            c.filter_enabled_metadata.as_ref().map(metadata),
        ),
        (service.0, Some(service.1)),
        ("statusOnError", status),
        ("transportApiVersion", transport(c.transport_api_version)),
        ("withRequestBody", body),
    ])
}

pub fn render_http(f: &hcm::HttpFilter) -> Value {
    let Some(hcm::http_filter::ConfigType::TypedConfig(any)) = &f.config_type else {
        panic!("{} has no typed config", f.name)
    };
    json!({"name": f.name, "typedConfig": typed_config(any)})
}

pub fn render_tcp(f: &listener::Filter) -> Value {
    let Some(listener::filter::ConfigType::TypedConfig(any)) = &f.config_type else {
        panic!("{} has no typed config", f.name)
    };
    json!({"name": f.name, "typedConfig": typed_config(any)})
}
