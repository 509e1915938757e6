//! The builder: selection, each field's matchers, TCP handling per action, dry run, trust domains and CUSTOM
//! providers (errors ⇒ deny-all and a reported problem).

use std::collections::BTreeMap;
use std::path::Path;

use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3 as hcm;
use prost::Message;
use serde_json::{Value, json};
use weft_api::MeshConfig;

use super::*;

mod render;

use render::{render_http, render_tcp};

pub(super) fn resources(yaml: &str) -> Vec<weft_api::Resource> {
    let (rs, problems) = weft_api::parse_documents(yaml, Path::new("in.yaml"));
    assert!(problems.is_empty(), "{problems:?}");
    rs
}

pub(super) fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

// ---------------------------------------------------------------------------------------------
// Selection

const SELECTION: &str = r#"
apiVersion: security.istio.io/v1beta1
kind: AuthorizationPolicy
metadata: {name: mesh-wide, namespace: istio-system}
spec: {}
---
apiVersion: security.istio.io/v1beta1
kind: AuthorizationPolicy
metadata: {name: mesh-httpbin, namespace: istio-system}
spec:
  selector: {matchLabels: {app: httpbin}}
  action: DENY
  rules: [{to: [{operation: {methods: [DELETE]}}]}]
---
apiVersion: security.istio.io/v1beta1
kind: AuthorizationPolicy
metadata: {name: ns-wide, namespace: foo}
spec:
  action: AUDIT
  rules: [{}]
---
apiVersion: security.istio.io/v1beta1
kind: AuthorizationPolicy
metadata: {name: v1-only, namespace: foo}
spec:
  selector: {matchLabels: {app: httpbin, version: v1}}
  rules: [{}]
---
apiVersion: security.istio.io/v1beta1
kind: AuthorizationPolicy
metadata: {name: other-ns, namespace: bar}
spec:
  rules: [{}]
"#;

fn names(ps: &[Arc<Policy>]) -> Vec<String> {
    ps.iter()
        .map(|p| format!("{}/{}", p.namespace, p.name))
        .collect()
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn selection_by_root_namespace_namespace_and_label_subset() {
    let rs = resources(SELECTION);
    let index = Index::build(&rs, &MeshConfig::default(), &Registry::default());
    // httpbin v1 in foo: root policies (with and without a selector), its namespace's, and the
    // selector whose labels are a subset of its own.
    let sel = index.select(
        "foo",
        &labels(&[("app", "httpbin"), ("version", "v1"), ("x", "y")]),
    );
    assert_eq!(names(&sel.allow), ["istio-system/mesh-wide", "foo/v1-only"]);
    assert_eq!(names(&sel.deny), ["istio-system/mesh-httpbin"]);
    assert_eq!(names(&sel.audit), ["foo/ns-wide"]);
    assert!(sel.custom.is_empty());
    // v2: the v1 selector is not a subset of its labels.
    let sel = index.select("foo", &labels(&[("app", "httpbin"), ("version", "v2")]));
    assert_eq!(names(&sel.allow), ["istio-system/mesh-wide"]);
    // Another namespace: only the root namespace's policies and its own.
    let sel = index.select("bar", &labels(&[("app", "sleep")]));
    assert_eq!(
        names(&sel.allow),
        ["istio-system/mesh-wide", "bar/other-ns"]
    );
    assert!(sel.deny.is_empty() && sel.audit.is_empty());
    // A proxy in the root namespace does not get its policies twice.
    let sel = index.select("istio-system", &labels(&[("app", "httpbin")]));
    assert_eq!(names(&sel.allow), ["istio-system/mesh-wide"]);
    assert_eq!(names(&sel.deny), ["istio-system/mesh-httpbin"]);
    // A custom root namespace.
    let mesh = MeshConfig {
        root_namespace: "foo".into(),
        ..MeshConfig::default()
    };
    let index = Index::build(&rs, &mesh, &Registry::default());
    let sel = index.select("bar", &labels(&[("app", "httpbin"), ("version", "v1")]));
    assert_eq!(names(&sel.allow), ["foo/v1-only", "bar/other-ns"]);
    assert_eq!(names(&sel.audit), ["foo/ns-wide"]);
    // Filters are built once per (namespace, labels) within a push.
    let a = index.filters("bar", &labels(&[("app", "a")]));
    let b = index.filters("bar", &labels(&[("app", "a")]));
    assert!(Arc::ptr_eq(&a, &b));
}

// ---------------------------------------------------------------------------------------------
// One field at a time

/// The single policy of the ALLOW (or other) bucket built for `rule` (YAML of one rule).
fn one_policy(action: &str, rule: &str, tcp: bool) -> Option<Value> {
    let yaml = format!(
        "apiVersion: security.istio.io/v1beta1\nkind: AuthorizationPolicy\nmetadata: {{name: p, namespace: foo}}\nspec:\n  action: {action}\n  rules:\n  - {rule}\n"
    );
    let rs = resources(&yaml);
    let index = Index::build(&rs, &MeshConfig::default(), &Registry::default());
    let built = index.build_filters(&index.select("foo", &BTreeMap::new()));
    let cfg = if tcp {
        render_tcp(&built.tcp[0])
    } else {
        render_http(&built.http[0])
    };
    let p = &cfg["typedConfig"]["rules"]["policies"]["ns[foo]-policy[p]-rule[0]"];
    (!p.is_null()).then(|| p.clone())
}

fn first_permission(p: &Value) -> Value {
    p["permissions"][0]["andRules"]["rules"][0].clone()
}

fn first_principal(p: &Value) -> Value {
    p["principals"][0]["andIds"]["ids"][0].clone()
}

#[test]
fn operation_fields_with_exact_prefix_suffix_and_presence() {
    let p = one_policy(
        "ALLOW",
        r#"{to: [{operation: {methods: ["GET", "P*", "*T", "*"]}}]}"#,
        false,
    )
    .expect("policy");
    assert_eq!(
        first_permission(&p),
        json!({"orRules": {"rules": [
            {"header": {"name": ":method", "exactMatch": "GET"}},
            {"header": {"name": ":method", "prefixMatch": "P"}},
            {"header": {"name": ":method", "suffixMatch": "T"}},
            {"header": {"name": ":method", "presentMatch": true}},
        ]}})
    );
    let p = one_policy(
        "ALLOW",
        r#"{to: [{operation: {notHosts: ["Example.com:8000", "*.example.com"]}}]}"#,
        false,
    )
    .expect("policy");
    assert_eq!(
        first_permission(&p),
        json!({"notRule": {"orRules": {"rules": [
            {"header": {"name": ":authority", "stringMatch": {"exact": "Example.com:8000", "ignoreCase": true}}},
            {"header": {"name": ":authority", "stringMatch": {"suffix": ".example.com", "ignoreCase": true}}},
        ]}}})
    );
    let p = one_policy(
        "ALLOW",
        r#"{to: [{operation: {paths: ["/admin", "/api/*", "*.png", "*"], ports: ["8080"]}}]}"#,
        false,
    )
    .expect("policy");
    let rules = &p["permissions"][0]["andRules"]["rules"];
    assert_eq!(
        rules[0],
        json!({"orRules": {"rules": [
            {"urlPath": {"path": {"exact": "/admin"}}},
            {"urlPath": {"path": {"prefix": "/api/"}}},
            {"urlPath": {"path": {"suffix": ".png"}}},
            {"urlPath": {"path": {"safeRegex": {"googleRe2": {}, "regex": ".+"}}}},
        ]}})
    );
    assert_eq!(
        rules[1],
        json!({"orRules": {"rules": [{"destinationPort": 8080}]}})
    );
}

#[test]
fn source_fields_and_when_conditions() {
    let p = one_policy(
        "ALLOW",
        r#"{from: [{source: {principals: ["cluster.local/ns/default/sa/sleep", "*/sa/sleep", "cluster.local/*"], namespaces: ["foo", "prod-*"], ipBlocks: ["10.0.0.0/8", "10.1.2.3"], notRemoteIpBlocks: ["2001:db8::/32"]}}]}"#,
        false,
    )
    .expect("policy");
    let ids = &p["principals"][0]["andIds"]["ids"];
    assert_eq!(
        ids[0],
        json!({"orIds": {"ids": [
            {"authenticated": {"principalName": {"exact": "spiffe://cluster.local/ns/default/sa/sleep"}}},
            {"authenticated": {"principalName": {"safeRegex": {"googleRe2": {}, "regex": "spiffe://.*/sa/sleep"}}}},
            {"authenticated": {"principalName": {"prefix": "spiffe://cluster.local/"}}},
        ]}})
    );
    assert_eq!(
        ids[1],
        json!({"orIds": {"ids": [
            {"authenticated": {"principalName": {"safeRegex": {"googleRe2": {}, "regex": ".*/ns/foo/.*"}}}},
            {"authenticated": {"principalName": {"safeRegex": {"googleRe2": {}, "regex": ".*/ns/prod-.*/.*"}}}},
        ]}})
    );
    assert_eq!(
        ids[2],
        json!({"notId": {"orIds": {"ids": [{"remoteIp": {"addressPrefix": "2001:db8::", "prefixLen": 32}}]}}})
    );
    assert_eq!(
        ids[3],
        json!({"orIds": {"ids": [
            {"directRemoteIp": {"addressPrefix": "10.0.0.0", "prefixLen": 8}},
            {"directRemoteIp": {"addressPrefix": "10.1.2.3", "prefixLen": 32}},
        ]}})
    );
    let p = one_policy(
        "ALLOW",
        r#"{when: [{key: "request.auth.claims[groups]", values: ["group1"]}, {key: "request.auth.claims[nested][key]", notValues: ["*x"]}, {key: "request.headers[x-token]", notValues: ["admin"]}, {key: "request.auth.principal", values: ["iss/*"]}, {key: "connection.sni", values: ["*.local"]}]}"#,
        false,
    )
    .expect("policy");
    let ids = &p["principals"][0]["andIds"]["ids"];
    assert_eq!(
        ids[0],
        json!({"orIds": {"ids": [{"metadata": {"filter": "istio_authn",
            "path": [{"key": "request.auth.claims"}, {"key": "groups"}],
            "value": {"listMatch": {"oneOf": {"stringMatch": {"exact": "group1"}}}}}}]}})
    );
    assert_eq!(
        ids[1]["notId"]["orIds"]["ids"][0]["metadata"]["path"],
        json!([{"key": "request.auth.claims"}, {"key": "nested"}, {"key": "key"}])
    );
    assert_eq!(
        ids[2],
        json!({"notId": {"orIds": {"ids": [{"header": {"name": "x-token", "exactMatch": "admin"}}]}}})
    );
    assert_eq!(
        ids[3],
        json!({"orIds": {"ids": [{"metadata": {"filter": "istio_authn",
            "path": [{"key": "request.auth.principal"}],
            "value": {"stringMatch": {"prefix": "iss/"}}}}]}})
    );
    assert_eq!(
        first_permission(&p),
        json!({"orRules": {"rules": [{"requestedServerName": {"suffix": ".local"}}]}})
    );
}

#[test]
fn nested_claim_keys_and_cidrs_as_istiod() {
    assert_eq!(
        super::matcher::names_in_nested_brackets("[a][b][c]").ok(),
        Some(vec!["a", "b", "c"])
    );
    assert_eq!(
        super::matcher::names_in_nested_brackets("[a.b]").ok(),
        Some(vec!["a.b"])
    );
    assert_eq!(
        super::matcher::names_in_nested_brackets("[a[b]]").ok(),
        Some(vec!["a[b]"])
    );
    assert!(super::matcher::names_in_nested_brackets("a]").is_err());
    let c = super::matcher::cidr("192.168.10.7/24").expect("cidr");
    assert_eq!(
        (c.address_prefix.as_str(), c.prefix_len.map(|l| l.value)),
        ("192.168.10.7", Some(24))
    );
    assert!(super::matcher::cidr("10.0.0.0/33").is_err());
    assert!(super::matcher::cidr("nope").is_err());
    assert_eq!(
        super::matcher::cidr("::1").map(|c| c.prefix_len.map(|l| l.value)),
        Ok(Some(128))
    );
}

// ---------------------------------------------------------------------------------------------
// TCP: HTTP-only fields per action (the istio.io authz-tcp task)

#[test]
fn tcp_allow_drops_rules_with_http_fields_and_deny_broadens() {
    // a. ALLOW ports 9000, 9001: kept.
    let p = one_policy(
        "ALLOW",
        r#"{to: [{operation: {ports: ["9000", "9001"]}}]}"#,
        true,
    )
    .expect("kept");
    assert_eq!(
        first_permission(&p),
        json!({"orRules": {"rules": [{"destinationPort": 9000}, {"destinationPort": 9001}]}})
    );
    // b. ALLOW GET on 9000: the rule is dropped, the ALLOW filter stays with no policy (deny all).
    assert!(
        one_policy(
            "ALLOW",
            r#"{to: [{operation: {methods: ["GET"], ports: ["9000"]}}]}"#,
            true
        )
        .is_none()
    );
    let yaml = "apiVersion: security.istio.io/v1beta1\nkind: AuthorizationPolicy\nmetadata: {name: p, namespace: foo}\nspec:\n  rules: [{to: [{operation: {methods: [GET]}}]}]\n";
    let rs = resources(yaml);
    let index = Index::build(&rs, &MeshConfig::default(), &Registry::default());
    let built = index.build_filters(&index.select("foo", &BTreeMap::new()));
    assert_eq!(render_tcp(&built.tcp[0])["typedConfig"]["rules"], json!({}));
    // On HTTP the same rule is kept.
    assert!(render_http(&built.http[0])["typedConfig"]["rules"]["policies"].is_object());
    // c. DENY GET: broadened to everything.
    let p = one_policy("DENY", r#"{to: [{operation: {methods: ["GET"]}}]}"#, true).expect("kept");
    assert_eq!(first_permission(&p), json!({"any": true}));
    assert_eq!(first_principal(&p), json!({"any": true}));
    // d. DENY GET on 9000: everything to 9000.
    let p = one_policy(
        "DENY",
        r#"{to: [{operation: {methods: ["GET"], ports: ["9000"]}}]}"#,
        true,
    )
    .expect("kept");
    assert_eq!(
        p["permissions"][0]["andRules"]["rules"],
        json!([{"orRules": {"rules": [{"destinationPort": 9000}]}}])
    );
    // AUDIT broadens like DENY; notValues of HTTP-only keys are dropped too.
    let p = one_policy(
        "AUDIT",
        r#"{from: [{source: {notRequestPrincipals: ["*"]}}]}"#,
        true,
    )
    .expect("kept");
    assert_eq!(first_principal(&p), json!({"any": true}));
    // An ALLOW rule whose `when` reads a header is dropped on TCP.
    assert!(
        one_policy(
            "ALLOW",
            r#"{when: [{key: "request.headers[x]", values: ["a"]}]}"#,
            true
        )
        .is_none()
    );
}

// ---------------------------------------------------------------------------------------------
// Dry run

#[test]
fn dry_run_annotation_is_parsed_as_go_parse_bool() {
    for (v, dry) in [
        ("true", true),
        ("1", true),
        ("T", true),
        ("False", false),
        ("0", false),
    ] {
        assert_eq!(weft_api::go_bool(v), Some(dry), "{v}");
    }
    assert_eq!(weft_api::go_bool("yes"), None);
    let yaml = "apiVersion: security.istio.io/v1beta1\nkind: AuthorizationPolicy\nmetadata:\n  name: deny-path-headers\n  namespace: foo\n  annotations: {\"istio.io/dry-run\": \"yes\"}\nspec:\n  action: DENY\n  rules: [{to: [{operation: {paths: [/headers]}}]}]\n";
    let rs = resources(yaml);
    let index = Index::build(&rs, &MeshConfig::default(), &Registry::default());
    // Not a boolean: enforced, and reported naming the annotation.
    let built = index.build_filters(&index.select("foo", &BTreeMap::new()));
    let cfg = render_http(&built.http[0]);
    assert!(
        cfg["typedConfig"]["rules"]["policies"]["ns[foo]-policy[deny-path-headers]-rule[0]"]
            .is_object()
    );
    assert_eq!(index.problems().len(), 1);
    let text = index.problems()[0].to_string();
    assert!(
        text.contains(
            "AuthorizationPolicy foo/deny-path-headers: metadata.annotations[istio.io/dry-run]"
        ),
        "{text}"
    );
    // "true": shadow rules only, deny stat prefix (the dry-run task's metric tags).
    let rs = resources(&yaml.replace("\"yes\"", "\"true\""));
    let index = Index::build(&rs, &MeshConfig::default(), &Registry::default());
    let built = index.build_filters(&index.select("foo", &BTreeMap::new()));
    let cfg = &render_http(&built.http[0])["typedConfig"];
    assert!(cfg["rules"].is_null());
    assert_eq!(cfg["shadowRules"]["action"], json!("DENY"));
    assert_eq!(cfg["shadowRulesStatPrefix"], json!("istio_dry_run_deny_"));
}

// ---------------------------------------------------------------------------------------------
// Trust domains (design §1.6)

#[test]
fn trust_domain_aliases_expand_principals() {
    let tds = strings(&["new-td", "old-td"]);
    // authz-td-migration: old-td principal allowed under both trust domains.
    assert_eq!(
        trust_domain::expand(&strings(&["old-td/ns/sleep-allow/sa/sleep"]), &tds),
        [
            "new-td/ns/sleep-allow/sa/sleep",
            "old-td/ns/sleep-allow/sa/sleep"
        ]
    );
    // cluster.local stands for the local trust domain and its aliases.
    assert_eq!(
        trust_domain::expand(&strings(&["cluster.local/ns/a/sa/b"]), &tds),
        ["new-td/ns/a/sa/b", "old-td/ns/a/sa/b"]
    );
    // Foreign trust domains, `*` trust domains and non-SPIFFE forms are kept.
    for kept in ["other/ns/a/sa/b", "*/ns/a/sa/b", "sa/b", "*"] {
        assert_eq!(trust_domain::expand(&strings(&[kept]), &tds), [kept]);
    }
    // A `*` pattern matching several trust domains is kept once.
    assert_eq!(
        trust_domain::expand(&strings(&["*-td/ns/a/sa/b"]), &tds),
        ["*-td/ns/a/sa/b"]
    );
    // Through the builder, with the mesh's trust domain and aliases.
    let mesh = MeshConfig {
        trust_domain: "new-td".into(),
        trust_domain_aliases: strings(&["old-td"]),
        ..MeshConfig::default()
    };
    let yaml = "apiVersion: security.istio.io/v1beta1\nkind: AuthorizationPolicy\nmetadata: {name: p, namespace: foo}\nspec:\n  rules: [{from: [{source: {principals: [old-td/ns/sleep-allow/sa/sleep]}}]}]\n";
    let rs = resources(yaml);
    let index = Index::build(&rs, &mesh, &Registry::default());
    let built = index.build_filters(&index.select("foo", &BTreeMap::new()));
    let cfg = render_http(&built.http[0]);
    let p = &cfg["typedConfig"]["rules"]["policies"]["ns[foo]-policy[p]-rule[0]"];
    assert_eq!(
        first_principal(p),
        json!({"orIds": {"ids": [
            {"authenticated": {"principalName": {"exact": "spiffe://new-td/ns/sleep-allow/sa/sleep"}}},
            {"authenticated": {"principalName": {"exact": "spiffe://old-td/ns/sleep-allow/sa/sleep"}}},
        ]}})
    );
}

// ---------------------------------------------------------------------------------------------
// CUSTOM

const EXT_AUTHZ_SERVICE: &str = "apiVersion: networking.istio.io/v1beta1\nkind: ServiceEntry\nmetadata: {name: ext-authz, namespace: foo}\nspec:\n  hosts: [ext-authz.foo.svc.cluster.local]\n  location: MESH_INTERNAL\n  resolution: STATIC\n  ports: [{number: 8000, name: http, protocol: HTTP}, {number: 9000, name: grpc, protocol: GRPC}]\n";

fn custom_policy(name: &str, provider: &str) -> String {
    format!(
        "apiVersion: security.istio.io/v1beta1\nkind: AuthorizationPolicy\nmetadata: {{name: {name}, namespace: foo}}\nspec:\n  selector: {{matchLabels: {{app: httpbin}}}}\n  action: CUSTOM\n  provider: {{name: {provider}}}\n  rules: [{{to: [{{operation: {{paths: [/headers]}}}}]}}]\n"
    )
}

/// The istio.io authz-custom task's mesh config (ports quoted as the task writes them).
fn task_mesh() -> MeshConfig {
    let yaml = r#"
extensionProviders:
- name: "sample-ext-authz-grpc"
  envoyExtAuthzGrpc: {service: "ext-authz.foo.svc.cluster.local", port: "9000"}
- name: "sample-ext-authz-http"
  envoyExtAuthzHttp: {service: "ext-authz.foo.svc.cluster.local", port: "8000", includeRequestHeadersInCheck: ["x-ext-authz"]}
"#;
    weft_api::parse_mesh_config(yaml, Path::new("mesh.yaml")).unwrap_or_else(|p| panic!("{p:?}"))
}

fn custom_index(policies: &str, mesh: &MeshConfig, with_service: bool) -> Index {
    let mut text = policies.to_string();
    if with_service {
        text.push_str("---\n");
        text.push_str(EXT_AUTHZ_SERVICE);
    }
    text.push_str("---\napiVersion: networking.istio.io/v1beta1\nkind: WorkloadEntry\nmetadata: {name: httpbin, namespace: foo}\nspec: {address: 10.0.0.5, labels: {app: httpbin}}\n");
    let rs = resources(&text);
    let registry = Registry::build(&rs, crate::push::DOMAIN_SUFFIX);
    Index::build(&rs, mesh, &registry)
}

fn custom_filters(index: &Index) -> AuthzFilters {
    index.build_filters(&index.select("foo", &labels(&[("app", "httpbin")])))
}

fn filter_names(http: &[hcm::HttpFilter]) -> Vec<&str> {
    http.iter().map(|f| f.name.as_str()).collect()
}

fn deny_all(v: &Value) {
    assert_eq!(
        v["typedConfig"]["rules"],
        json!({"action": "DENY", "policies": {DENY_ALL_POLICY: {
            "permissions": [{"any": true}], "principals": [{"any": true}]}}})
    );
}

#[test]
fn custom_grpc_provider_gets_http_and_network_ext_authz() {
    let index = custom_index(
        &custom_policy("ext-authz", "sample-ext-authz-grpc"),
        &task_mesh(),
        true,
    );
    assert!(index.problems().is_empty(), "{:?}", index.problems());
    let f = custom_filters(&index);
    assert_eq!(
        filter_names(&f.custom_http),
        ["envoy.filters.http.rbac", "envoy.filters.http.ext_authz"]
    );
    let shadow = render_http(&f.custom_http[0]);
    assert!(shadow["typedConfig"]["shadowRules"]["policies"]
        ["istio-ext-authz-ns[foo]-policy[ext-authz]-rule[0]"]
        .is_object());
    assert_eq!(
        shadow["typedConfig"]["shadowRulesStatPrefix"],
        json!("istio_ext_authz_")
    );
    let ext = render_http(&f.custom_http[1]);
    assert_eq!(
        ext["typedConfig"]["grpcService"],
        json!({"envoyGrpc": {"clusterName": "outbound|9000||ext-authz.foo.svc.cluster.local",
            "authority": "outbound_.9000_._.ext-authz.foo.svc.cluster.local"}, "timeout": "600s"})
    );
    let names: Vec<&str> = f.custom_tcp.iter().map(|x| x.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "envoy.filters.network.rbac",
            "envoy.filters.network.ext_authz"
        ]
    );
    // The TCP trigger drops the HTTP-only path (built as DENY): every connection is checked.
    let tcp = render_tcp(&f.custom_tcp[0]);
    let p = &tcp["typedConfig"]["shadowRules"]["policies"]["istio-ext-authz-ns[foo]-policy[ext-authz]-rule[0]"];
    assert_eq!(first_permission(p), json!({"any": true}));
    assert!(f.http.is_empty() && f.tcp.is_empty());
}

#[test]
fn custom_http_provider_has_no_tcp_filter() {
    let index = custom_index(
        &custom_policy("ext-authz", "sample-ext-authz-http"),
        &task_mesh(),
        true,
    );
    let f = custom_filters(&index);
    assert_eq!(f.custom_http.len(), 2);
    let ext = render_http(&f.custom_http[1]);
    assert_eq!(
        ext["typedConfig"]["httpService"],
        json!({"serverUri": {"uri": "http://ext-authz.foo.svc.cluster.local",
            "cluster": "outbound|8000||ext-authz.foo.svc.cluster.local", "timeout": "600s"},
            "authorizationRequest": {"allowedHeaders": {"patterns": [{"exact": "x-ext-authz", "ignoreCase": true}]}}})
    );
    assert!(f.custom_tcp.is_empty());
}

#[test]
fn bad_custom_providers_deny_everything_and_are_reported() {
    // Unknown provider.
    let index = custom_index(&custom_policy("ext-authz", "nope"), &task_mesh(), true);
    let f = custom_filters(&index);
    assert_eq!(filter_names(&f.custom_http), ["envoy.filters.http.rbac"]);
    deny_all(&render_http(&f.custom_http[0]));
    deny_all(&render_tcp(&f.custom_tcp[0]));
    assert_eq!(
        render_tcp(&f.custom_tcp[0])["typedConfig"]["statPrefix"],
        json!("tcp.")
    );
    let text = index.problems()[0].to_string();
    assert!(
        text.contains("AuthorizationPolicy foo/ext-authz: spec.provider.name: available providers are [sample-ext-authz-grpc sample-ext-authz-http] but found \"nope\""),
        "{text}"
    );
    // The provider's service is not in the registry.
    let index = custom_index(
        &custom_policy("ext-authz", "sample-ext-authz-grpc"),
        &task_mesh(),
        false,
    );
    deny_all(&render_http(&custom_filters(&index).custom_http[0]));
    let text = index.problems()[0].to_string();
    assert!(
        text.contains("spec.provider.name")
            && text.contains("could not find service ext-authz.foo.svc.cluster.local"),
        "{text}"
    );
    // Two providers on one workload.
    let two = format!(
        "{}---\n{}",
        custom_policy("a", "sample-ext-authz-grpc"),
        custom_policy("b", "sample-ext-authz-http")
    );
    let index = custom_index(&two, &task_mesh(), true);
    deny_all(&render_http(&custom_filters(&index).custom_http[0]));
    let text: Vec<String> = index.problems().iter().map(|p| p.to_string()).collect();
    assert_eq!(text.len(), 1, "{text:?}");
    assert!(
        text[0].contains("AuthorizationPolicy foo/b: spec.provider.name: workload foo/httpbin is selected by CUSTOM policies [foo/a, foo/b]: only 1 provider can be used per workload"),
        "{text:?}"
    );
    // A bare host found in two namespaces is ambiguous.
    let other = EXT_AUTHZ_SERVICE.replace("namespace: foo", "namespace: bar");
    let text = format!(
        "{}---\n{other}",
        custom_policy("ext-authz", "sample-ext-authz-grpc")
    );
    let index = custom_index(&text, &task_mesh(), true);
    deny_all(&render_http(&custom_filters(&index).custom_http[0]));
    assert!(
        index.problems()[0]
            .to_string()
            .contains("found ext-authz.foo.svc.cluster.local in multiple namespaces [bar foo]")
    );
}

#[test]
fn equal_configs_encode_to_equal_bytes() {
    // Several policies in one RBAC map: the encoding must not depend on HashMap order.
    let rs = resources(SELECTION);
    let bytes = || {
        let index = Index::build(&rs, &MeshConfig::default(), &Registry::default());
        let f = index
            .build_filters(&index.select("foo", &labels(&[("app", "httpbin"), ("version", "v1")])));
        f.http.iter().map(|x| x.encode_to_vec()).collect::<Vec<_>>()
    };
    let first = bytes();
    for _ in 0..5 {
        assert_eq!(bytes(), first);
    }
}
