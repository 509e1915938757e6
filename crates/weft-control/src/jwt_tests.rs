use std::path::Path;
use std::sync::Arc;

use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::http_filter::ConfigType;
use jwt::jwt_requirement::RequiresType as R;
use prost::Message;

use super::*;
use crate::sidecar::SidecarNode;

const JWKS: &str = r#"{"keys":[{"kty":"oct","k":"c2VjcmV0"}]}"#;

fn resources(yaml: &str) -> Vec<Resource> {
    let (rs, problems) = weft_api::parse_documents(yaml, Path::new("t.yaml"));
    assert!(problems.is_empty(), "{problems:?}");
    rs
}

fn push(yaml: &str) -> PushContext {
    let mesh = weft_api::parse_mesh_config("{}", Path::new("mesh.yaml")).expect("mesh");
    PushContext::new("v1".into(), Arc::new(mesh), Arc::new(resources(yaml)))
}

const WORKLOAD: &str = r#"
apiVersion: networking.istio.io/v1beta1
kind: WorkloadEntry
metadata: {name: httpbin, namespace: foo}
spec:
  address: 10.77.0.20
  labels: {app: httpbin, version: v1}
  serviceAccount: httpbin
"#;

fn ra(ns: &str, name: &str, selector: &str, issuers: &[&str]) -> String {
    let rules: String = issuers
        .iter()
        .map(|i| format!("  - issuer: {i}\n    jwks: '{JWKS}'\n"))
        .collect();
    format!(
        "---\napiVersion: security.istio.io/v1beta1\nkind: RequestAuthentication\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n{selector}  jwtRules:\n{rules}"
    )
}

fn filters(p: &PushContext) -> Vec<hcm::HttpFilter> {
    let id = "sidecar~10.77.0.20~httpbin.foo~foo.svc.cluster.local";
    let view = ProxyView::new(p, SidecarNode::parse(id).expect("node id"));
    http_filters(&view)
}

fn decode<T: Message + Default>(f: &hcm::HttpFilter, type_url: &str) -> T {
    let Some(ConfigType::TypedConfig(any)) = &f.config_type else {
        panic!("{} has no typed config", f.name)
    };
    assert_eq!(any.type_url, type_url);
    T::decode(any.value.as_slice()).expect("decodes")
}

fn names(r: &jwt::JwtRequirement) -> String {
    match &r.requires_type {
        Some(R::ProviderName(n)) => n.clone(),
        Some(R::AllowMissing(_)) => "allow_missing".into(),
        Some(R::RequiresAny(l)) => format!(
            "any[{}]",
            l.requirements
                .iter()
                .map(names)
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Some(R::RequiresAll(l)) => format!(
            "all[{}]",
            l.requirements
                .iter()
                .map(names)
                .collect::<Vec<_>>()
                .join(", ")
        ),
        other => format!("{other:?}"),
    }
}

fn requirement(cfg: &jwt::JwtAuthentication) -> String {
    assert_eq!(cfg.rules.len(), 1);
    let rule = &cfg.rules[0];
    assert_eq!(
        rule.r#match.as_ref().and_then(|m| m.path_specifier.clone()),
        Some(route::route_match::PathSpecifier::Prefix("/".into()))
    );
    match &rule.requirement_type {
        Some(jwt::requirement_rule::RequirementType::Requires(r)) => names(r),
        other => panic!("{other:?}"),
    }
}

#[test]
fn selection_is_namespace_then_root_with_label_subsets_sorted_by_issuer() {
    let yaml = [
        ra(
            "foo",
            "b",
            "  selector: {matchLabels: {app: httpbin}}\n",
            &["z-iss", "m-iss"],
        ),
        ra("foo", "a", "", &["k-iss"]),
        ra(
            "foo",
            "other",
            "  selector: {matchLabels: {app: other}}\n",
            &["no-1"],
        ),
        ra("bar", "elsewhere", "", &["no-2"]),
        ra("istio-system", "mesh", "", &["a-iss"]),
        ra(
            "istio-system",
            "mesh-sel",
            "  selector: {matchLabels: {version: v1}}\n",
            &["b-iss"],
        ),
        ra(
            "istio-system",
            "mesh-no",
            "  selector: {matchLabels: {version: v2}}\n",
            &["no-3"],
        ),
    ]
    .concat();
    let rs = resources(&yaml);
    let labels: BTreeMap<String, String> = [("app", "httpbin"), ("version", "v1")]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let rules = rules_for(&rs, "istio-system", "foo", &labels);
    let got: Vec<(&str, &str, usize)> = rules
        .iter()
        .map(|r| (r.rule.issuer.as_str(), r.name, r.index))
        .collect();
    assert_eq!(
        got,
        vec![
            ("a-iss", "mesh", 0),
            ("b-iss", "mesh-sel", 0),
            ("k-iss", "a", 0),
            ("m-iss", "b", 1),
            ("z-iss", "b", 0),
        ]
    );
    // A workload in the root namespace scans it once.
    assert_eq!(
        rules_for(&rs, "istio-system", "istio-system", &labels).len(),
        2
    );
}

#[test]
fn no_request_authentication_no_filters() {
    let p = push(&format!("{WORKLOAD}{}", ra("bar", "x", "", &["iss"])));
    assert!(filters(&p).is_empty());
}

#[test]
fn one_rule_as_istiod_builds_it() {
    let yaml = format!(
        "{WORKLOAD}---
apiVersion: security.istio.io/v1beta1
kind: RequestAuthentication
metadata: {{name: jwt-example, namespace: foo}}
spec:
  selector: {{matchLabels: {{app: httpbin}}}}
  jwtRules:
  - issuer: testing@secure.istio.io
    audiences: [a, b]
    jwks: '{JWKS}'
    fromHeaders: [{{name: x-jwt, prefix: 'Token '}}]
    fromParams: [tok]
    outputPayloadToHeader: x-jwt-payload
    forwardOriginalToken: true
"
    );
    let p = push(&yaml);
    let f = filters(&p);
    assert_eq!(
        f.iter().map(|f| f.name.as_str()).collect::<Vec<_>>(),
        ["envoy.filters.http.jwt_authn", "istio_authn"]
    );
    let cfg: jwt::JwtAuthentication = decode(
        &f[0],
        "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication",
    );
    assert!(cfg.bypass_cors_preflight);
    assert_eq!(requirement(&cfg), "any[origins-0, allow_missing]");
    let p0 = &cfg.providers["origins-0"];
    assert_eq!(p0.issuer, "testing@secure.istio.io");
    assert_eq!(p0.audiences, ["a", "b"]);
    assert!(p0.forward);
    assert_eq!(p0.forward_payload_header, "x-jwt-payload");
    assert_eq!(p0.payload_in_metadata, "testing@secure.istio.io");
    assert_eq!(p0.from_headers.len(), 1);
    assert_eq!(p0.from_headers[0].name, "x-jwt");
    assert_eq!(p0.from_headers[0].value_prefix, "Token ");
    assert_eq!(p0.from_params, ["tok"]);
    assert_eq!(p0.clock_skew_seconds, 0, "Envoy's default 60 s");
    let Some(jwt::jwt_provider::JwksSourceSpecifier::LocalJwks(ds)) = &p0.jwks_source_specifier
    else {
        panic!("local jwks")
    };
    assert_eq!(
        ds.specifier,
        Some(core::data_source::Specifier::InlineString(JWKS.into()))
    );
    let authn: istio::FilterConfig = decode(&f[1], istio::AUTHN_FILTER_TYPE_URL);
    let policy = authn.policy.expect("policy");
    assert_eq!(policy.origins.len(), 1);
    assert_eq!(
        policy.origins[0].jwt.as_ref().map(|j| j.issuer.as_str()),
        Some("testing@secure.istio.io")
    );
    assert!(policy.origin_is_optional);
    assert_eq!(
        policy.principal_binding,
        istio::PrincipalBinding::UseOrigin as i32
    );
    assert!(authn.skip_validate_trust_domain);
    assert!(authn.disable_clear_route_cache);
}

#[test]
fn several_rules_use_the_or_of_providers_and_the_and_of_optionals() {
    let yaml = format!(
        "{WORKLOAD}{}{}",
        ra("foo", "one", "", &["iss-b"]),
        ra("istio-system", "two", "", &["iss-a", "iss-c"])
    );
    let p = push(&yaml);
    let f = filters(&p);
    let cfg: jwt::JwtAuthentication = decode(
        &f[0],
        "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication",
    );
    assert_eq!(
        requirement(&cfg),
        "any[origins-0, origins-1, origins-2, all[any[origins-0, allow_missing], any[origins-1, allow_missing], any[origins-2, allow_missing]]]"
    );
    let issuers: Vec<&str> = (0..3)
        .map(|i| cfg.providers[&format!("origins-{i}")].issuer.as_str())
        .collect();
    assert_eq!(issuers, ["iss-a", "iss-b", "iss-c"]);
    let authn: istio::FilterConfig = decode(&f[1], istio::AUTHN_FILTER_TYPE_URL);
    let origins: Vec<String> = authn
        .policy
        .expect("policy")
        .origins
        .into_iter()
        .filter_map(|o| o.jwt.map(|j| j.issuer))
        .collect();
    assert_eq!(origins, ["iss-a", "iss-b", "iss-c"]);
}

#[test]
fn an_unfetched_jwks_uri_gets_istiods_fake_jwks() {
    let yaml = format!(
        "{WORKLOAD}---
apiVersion: security.istio.io/v1beta1
kind: RequestAuthentication
metadata: {{name: remote, namespace: foo}}
spec:
  jwtRules:
  - issuer: testing@secure.istio.io
    jwksUri: https://example.invalid/jwks.json
"
    );
    let p = push(&yaml);
    let f = filters(&p);
    let cfg: jwt::JwtAuthentication = decode(
        &f[0],
        "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication",
    );
    let Some(jwt::jwt_provider::JwksSourceSpecifier::LocalJwks(ds)) =
        &cfg.providers["origins-0"].jwks_source_specifier
    else {
        panic!("local jwks")
    };
    // Byte-identical to istiod's CreateFakeJwks.
    assert_eq!(
        ds.specifier,
        Some(core::data_source::Specifier::InlineString(
            r#"{"keys":[ {"e":"AQAB","kid":"abc","kty":"RSA","n":"RXJyb3ItSXN0aW9kRmFpbGVkVG9GZXRjaEp3a3NVcmktaHR0cHM6Ly9leGFtcGxlLmludmFsaWQvandrcy5qc29u"}]}"#
                .into()
        ))
    );
}
