//! Invalid documents: exact field paths, lines and the `file:line:` problem text.

use std::path::{Path, PathBuf};

use crate::load::{load_paths, parse_documents, parse_mesh_config};
use crate::problem::Problem;

/// Parses `yaml`, expecting no resources back and exactly one problem.
fn one_problem(yaml: &str) -> Problem {
    let (res, probs) = parse_documents(yaml, Path::new("bad.yaml"));
    assert!(
        res.is_empty(),
        "resource should have been rejected: {res:?}"
    );
    assert_eq!(probs.len(), 1, "{probs:#?}");
    probs.into_iter().next().unwrap()
}

fn assert_problem(p: &Problem, field: &str, line: usize, msg_part: &str) {
    assert_eq!(p.field, field, "{p}");
    assert_eq!(p.line, line, "{p}");
    assert!(
        p.message.contains(msg_part),
        "message {:?} lacks {:?}",
        p.message,
        msg_part
    );
}

#[test]
fn weights_must_sum_to_100() {
    let p = one_problem(
        r#"apiVersion: networking.istio.io/v1alpha3
kind: VirtualService
metadata:
  name: reviews
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {host: reviews, subset: v1}
      weight: 60
    - destination: {host: reviews, subset: v3}
      weight: 60
"#,
    );
    assert_problem(
        &p,
        "spec.http[0].route[1].weight",
        12,
        "total destination weight 120 != 100",
    );
    assert!(
        p.to_string()
            .starts_with("bad.yaml:12: VirtualService default/reviews: spec.http[0].route[1].weight: total destination weight 120 != 100"),
        "{p}"
    );
}

#[test]
fn weight_above_100() {
    let p = one_problem(
        r#"apiVersion: networking.istio.io/v1alpha3
kind: VirtualService
metadata: {name: reviews, namespace: bookinfo}
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {host: reviews}
      weight: 101
"#,
    );
    assert_problem(
        &p,
        "spec.http[0].route[0].weight",
        9,
        "percentage 101 is not in range 0..100",
    );
}

#[test]
fn unknown_field_names_its_path() {
    let p = one_problem(
        r#"apiVersion: networking.istio.io/v1alpha3
kind: VirtualService
metadata:
  name: reviews
spec:
  hosts:
  - reviews
  http:
  - rout:
    - destination:
        host: reviews
"#,
    );
    assert_problem(&p, "spec.http[0].rout", 9, "unknown field `rout`");
    assert!(
        p.to_string().starts_with(
            "bad.yaml:9: VirtualService default/reviews: spec.http[0].rout: unknown field `rout`"
        ),
        "{p}"
    );
}

#[test]
fn wrong_type_names_its_path() {
    let p = one_problem(
        r#"apiVersion: networking.istio.io/v1alpha3
kind: VirtualService
metadata:
  name: reviews
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {host: reviews, subset: v1}
      weight: "abc"
"#,
    );
    assert_problem(
        &p,
        "spec.http[0].route[0].weight",
        10,
        "invalid type: string \"abc\"",
    );
}

#[test]
fn bad_enum_value() {
    let p = one_problem(
        r#"apiVersion: security.istio.io/v1beta1
kind: PeerAuthentication
metadata:
  name: default
  namespace: foo
spec:
  mtls:
    mode: STRICTT
"#,
    );
    assert_problem(&p, "spec.mtls.mode", 8, "unknown variant `STRICTT`");
    assert!(
        p.to_string()
            .starts_with("bad.yaml:8: PeerAuthentication foo/default: spec.mtls.mode:"),
        "{p}"
    );
}

#[test]
fn bad_regex() {
    let p = one_problem(
        r#"apiVersion: networking.istio.io/v1alpha3
kind: VirtualService
metadata:
  name: productpage
spec:
  hosts: [productpage]
  http:
  - match:
    - uri:
        regex: "/api/(v1|v2"
    route:
    - destination: {host: productpage}
"#,
    );
    assert_problem(&p, "spec.http[0].match[0].uri.regex", 10, "invalid regex");
}

#[test]
fn string_match_with_two_kinds() {
    let p = one_problem(
        r#"apiVersion: networking.istio.io/v1alpha3
kind: VirtualService
metadata:
  name: productpage
spec:
  hosts: [productpage]
  http:
  - match:
    - uri: {exact: /a, prefix: /b}
    route:
    - destination: {host: productpage}
"#,
    );
    assert_problem(
        &p,
        "spec.http[0].match[0].uri",
        9,
        "only one of exact, prefix or regex",
    );
}

#[test]
fn uppercase_header_name() {
    let p = one_problem(
        r#"apiVersion: networking.istio.io/v1alpha3
kind: VirtualService
metadata:
  name: reviews
spec:
  hosts: [reviews]
  http:
  - match:
    - headers:
        End-User: {exact: jason}
    route:
    - destination: {host: reviews}
"#,
    );
    assert_problem(
        &p,
        "spec.http[0].match[0].headers.End-User",
        10,
        "must be lowercase",
    );
}

#[test]
fn bad_duration() {
    let p = one_problem(
        r#"apiVersion: networking.istio.io/v1alpha3
kind: VirtualService
metadata:
  name: ratings
spec:
  hosts: [ratings]
  http:
  - fault:
      delay:
        percentage: {value: 100}
        fixedDelay: 7x
    route:
    - destination: {host: ratings}
"#,
    );
    assert_problem(
        &p,
        "spec.http[0].fault.delay.fixedDelay",
        11,
        "unknown unit \"x\"",
    );
}

#[test]
fn negative_duration() {
    let p = one_problem(
        r#"apiVersion: networking.istio.io/v1alpha3
kind: DestinationRule
metadata:
  name: httpbin
spec:
  host: httpbin
  trafficPolicy:
    outlierDetection:
      interval: -1s
"#,
    );
    assert_problem(
        &p,
        "spec.trafficPolicy.outlierDetection.interval",
        9,
        "negative duration",
    );
}

#[test]
fn missing_destination_rule_host() {
    let p = one_problem(
        r#"apiVersion: networking.istio.io/v1alpha3
kind: DestinationRule
metadata:
  name: reviews
spec:
  subsets:
  - name: v1
    labels: {version: v1}
"#,
    );
    assert_problem(&p, "spec.host", 5, "host is required");
}

#[test]
fn missing_route_destination_host() {
    let p = one_problem(
        r#"apiVersion: networking.istio.io/v1alpha3
kind: VirtualService
metadata:
  name: reviews
spec:
  hosts: [reviews]
  http:
  - route:
    - destination:
        subset: v1
"#,
    );
    assert_problem(
        &p,
        "spec.http[0].route[0].destination.host",
        9,
        "empty domain name not allowed",
    );
}

#[test]
fn http_route_needs_an_action() {
    let p = one_problem(
        r#"apiVersion: networking.istio.io/v1alpha3
kind: VirtualService
metadata:
  name: reviews
spec:
  hosts: [reviews]
  http:
  - name: nothing
    timeout: 1s
"#,
    );
    assert_problem(&p, "spec.http[0]", 8, "one of route, redirect or delegate");
}

#[test]
fn service_entry_port_70000() {
    let p = one_problem(
        r#"apiVersion: networking.istio.io/v1alpha3
kind: ServiceEntry
metadata:
  name: external
spec:
  hosts: [api.example.com]
  ports:
  - number: 70000
    name: https
    protocol: HTTPS
  resolution: DNS
"#,
    );
    assert_problem(
        &p,
        "spec.ports[0].number",
        8,
        "port number 70000 must be in the range 1..65535",
    );
}

#[test]
fn service_entry_bad_cidr_and_duplicate_port_name() {
    let (res, probs) = parse_documents(
        r#"apiVersion: networking.istio.io/v1alpha3
kind: ServiceEntry
metadata:
  name: external
spec:
  hosts: [db.example.com]
  addresses: [10.0.0.0/33]
  ports:
  - {number: 5432, name: tcp, protocol: TCP}
  - {number: 5433, name: tcp, protocol: TCP}
  resolution: STATIC
  endpoints:
  - address: 10.1.1.1
"#,
        Path::new("bad.yaml"),
    );
    assert!(res.is_empty());
    let fields: Vec<(&str, usize)> = probs.iter().map(|p| (p.field.as_str(), p.line)).collect();
    assert!(fields.contains(&("spec.addresses[0]", 7)), "{probs:#?}");
    assert!(fields.contains(&("spec.ports[1].name", 10)), "{probs:#?}");
    assert_eq!(probs.len(), 2, "{probs:#?}");
}

#[test]
fn service_entry_endpoints_with_resolution_none() {
    let p = one_problem(
        r#"apiVersion: networking.istio.io/v1alpha3
kind: ServiceEntry
metadata:
  name: external
spec:
  hosts: [db.example.com]
  ports:
  - {number: 5432, name: tcp, protocol: TCP}
  endpoints:
  - address: 10.1.1.1
"#,
    );
    assert_problem(&p, "spec.endpoints", 9, "resolution type NONE");
}

#[test]
fn service_entry_unknown_protocol_and_wildcard_in_middle() {
    let (_, probs) = parse_documents(
        r#"apiVersion: networking.istio.io/v1alpha3
kind: ServiceEntry
metadata:
  name: external
spec:
  hosts: ["foo.*.com"]
  ports:
  - {number: 80, name: web, protocol: SPDY}
  resolution: NONE
"#,
        Path::new("bad.yaml"),
    );
    let fields: Vec<&str> = probs.iter().map(|p| p.field.as_str()).collect();
    assert_eq!(
        fields,
        ["spec.hosts[0]", "spec.ports[0].protocol"],
        "{probs:#?}"
    );
}

#[test]
fn authorization_policy_bad_cidr() {
    let p = one_problem(
        r#"apiVersion: security.istio.io/v1beta1
kind: AuthorizationPolicy
metadata:
  name: deny-range
  namespace: foo
spec:
  action: DENY
  rules:
  - from:
    - source:
        ipBlocks: ["1.2.3.4/40"]
"#,
    );
    assert_problem(
        &p,
        "spec.rules[0].from[0].source.ipBlocks[0]",
        11,
        "bad CIDR range (1.2.3.4/40)",
    );
}

#[test]
fn port_level_mtls_without_selector() {
    let p = one_problem(
        r#"apiVersion: security.istio.io/v1beta1
kind: PeerAuthentication
metadata:
  name: default
  namespace: foo
spec:
  mtls:
    mode: STRICT
  portLevelMtls:
    8080:
      mode: DISABLE
"#,
    );
    assert_problem(&p, "spec.portLevelMtls", 9, "cannot have port level mTLS");
    assert!(
        p.to_string().starts_with(
            "bad.yaml:9: PeerAuthentication foo/default: spec.portLevelMtls: mesh/namespace"
        ),
        "{p}"
    );
}

#[test]
fn custom_action_without_provider() {
    let p = one_problem(
        r#"apiVersion: security.istio.io/v1beta1
kind: AuthorizationPolicy
metadata:
  name: ext-authz
  namespace: foo
spec:
  action: CUSTOM
  rules:
  - to:
    - operation:
        paths: ["/headers"]
"#,
    );
    // `provider` is absent, so the problem points at the closest existing node (spec).
    assert_problem(
        &p,
        "spec.provider",
        6,
        "CUSTOM action requires `provider.name`",
    );
}

#[test]
fn provider_without_custom_action() {
    let p = one_problem(
        r#"apiVersion: security.istio.io/v1beta1
kind: AuthorizationPolicy
metadata:
  name: ext-authz
spec:
  action: DENY
  provider: {name: my-authz}
  rules: [{}]
"#,
    );
    assert_problem(&p, "spec.provider", 7, "only be used with action CUSTOM");
}

#[test]
fn unknown_when_key_and_empty_value() {
    let (_, probs) = parse_documents(
        r#"apiVersion: security.istio.io/v1beta1
kind: AuthorizationPolicy
metadata:
  name: cond
spec:
  rules:
  - when:
    - key: request.weird
      values: ["x"]
    - key: source.namespace
      values: [""]
"#,
        Path::new("bad.yaml"),
    );
    let fields: Vec<(&str, usize)> = probs.iter().map(|p| (p.field.as_str(), p.line)).collect();
    assert_eq!(
        fields,
        [
            ("spec.rules[0].when[0].values", 9),
            ("spec.rules[0].when[1].values[0]", 11)
        ],
        "{probs:#?}"
    );
    assert!(
        probs[0]
            .message
            .contains("unknown attribute: request.weird")
    );
}

#[test]
fn telemetry_sampling_and_provider_name() {
    let (_, probs) = parse_documents(
        r#"apiVersion: telemetry.istio.io/v1alpha1
kind: Telemetry
metadata:
  name: mesh-default
  namespace: istio-system
spec:
  tracing:
  - randomSamplingPercentage: 150
    providers:
    - name: ""
"#,
        Path::new("bad.yaml"),
    );
    let fields: Vec<(&str, usize)> = probs.iter().map(|p| (p.field.as_str(), p.line)).collect();
    assert_eq!(
        fields,
        [
            ("spec.tracing[0].providers[0].name", 10),
            ("spec.tracing[0].randomSamplingPercentage", 8)
        ],
        "{probs:#?}"
    );
}

#[test]
fn workload_entry_requires_address_and_valid_ports() {
    let (_, probs) = parse_documents(
        r#"apiVersion: networking.istio.io/v1alpha3
kind: WorkloadEntry
metadata:
  name: vm1
spec:
  labels: {app: x}
---
apiVersion: networking.istio.io/v1alpha3
kind: WorkloadEntry
metadata:
  name: vm2
spec:
  address: 10.0.0.2
  ports:
    http: 70000
"#,
        Path::new("bad.yaml"),
    );
    let fields: Vec<(&str, usize)> = probs.iter().map(|p| (p.field.as_str(), p.line)).collect();
    assert_eq!(
        fields,
        [("spec.address", 5), ("spec.ports.http", 15)],
        "{probs:#?}"
    );
}

#[test]
fn gateway_requires_selector_and_hosts() {
    let (_, probs) = parse_documents(
        r#"apiVersion: networking.istio.io/v1alpha3
kind: Gateway
metadata:
  name: gw
spec:
  servers:
  - port: {number: 443, name: https, protocol: HTTPS}
    hosts: []
"#,
        Path::new("bad.yaml"),
    );
    let fields: Vec<&str> = probs.iter().map(|p| p.field.as_str()).collect();
    assert_eq!(
        fields,
        [
            "spec.selector",
            "spec.servers[0].hosts",
            "spec.servers[0].tls"
        ],
        "{probs:#?}"
    );
}

#[test]
fn sidecar_egress_host_format() {
    let p = one_problem(
        r#"apiVersion: networking.istio.io/v1alpha3
kind: Sidecar
metadata:
  name: default
spec:
  egress:
  - hosts:
    - "./*"
    - "reviews.default.svc.cluster.local"
"#,
    );
    assert_problem(
        &p,
        "spec.egress[0].hosts[1]",
        9,
        "must be of form namespace/dnsName",
    );
}

#[test]
fn destination_rule_subset_rules() {
    let (_, probs) = parse_documents(
        r#"apiVersion: networking.istio.io/v1alpha3
kind: DestinationRule
metadata:
  name: reviews
spec:
  host: reviews
  subsets:
  - name: v1
    labels: {version: v1}
  - name: v1
    labels: {}
"#,
        Path::new("bad.yaml"),
    );
    let fields: Vec<(&str, usize)> = probs.iter().map(|p| (p.field.as_str(), p.line)).collect();
    assert_eq!(
        fields,
        [("spec.subsets[1].name", 10), ("spec.subsets[1].labels", 11)],
        "{probs:#?}"
    );
}

#[test]
fn wrong_api_version_and_unknown_kind() {
    let (res, probs) = parse_documents(
        r#"apiVersion: security.istio.io/v1beta1
kind: VirtualService
metadata: {name: x}
spec: {}
---
apiVersion: networking.istio.io/v1alpha3
kind: ProxyConfig
metadata: {name: y}
spec: {}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: z}
data: {a: b}
"#,
        Path::new("bad.yaml"),
    );
    assert!(res.is_empty());
    // The ConfigMap is a Kubernetes kind: skipped (a note from parse_documents_with_notes),
    // not a problem.
    assert_eq!(probs.len(), 2, "{probs:#?}");
    assert_eq!((probs[0].field.as_str(), probs[0].line), ("apiVersion", 1));
    assert!(
        probs[0].message.contains(
            "use networking.istio.io/v1alpha3, networking.istio.io/v1beta1 or networking.istio.io/v1"
        ),
        "{}",
        probs[0]
    );
    assert_eq!(
        (probs[1].field.as_str(), probs[1].line),
        ("apiVersion", 6),
        "{probs:#?}"
    );
}

#[test]
fn unknown_kind_with_known_envelope() {
    let p = one_problem(
        "apiVersion: networking.istio.io/v1alpha3\nkind: VirtualServce\nmetadata: {name: f}\nspec: {}\n",
    );
    assert_eq!((p.field.as_str(), p.line), ("kind", 2));
    // An unknown kind has no Kind prefix in the text.
    assert!(
        p.to_string()
            .starts_with("bad.yaml:2: kind: unknown kind \"VirtualServce\" in networking.istio.io"),
        "{p}"
    );
}

#[test]
fn unknown_kind_without_api_version_and_bad_envelope() {
    // Without an apiVersion nothing says what the document is: the envelope is checked.
    let p = one_problem("kind: Nope\nmetadata: {name: z}\n");
    assert_eq!((p.field.as_str(), p.line), ("apiVersion", 1), "{p}");
    let p = one_problem(
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: z}\ndata: {a: b}\n",
    );
    assert!(
        p.to_string()
            .starts_with("bad.yaml:4: AuthorizationPolicy default/z: data: unknown field `data`"),
        "{p}"
    );
}

#[test]
fn metadata_problems() {
    let (_, probs) = parse_documents(
        r#"apiVersion: networking.istio.io/v1alpha3
kind: Gateway
metadata:
  namespace: Bad_NS
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: ["*"]
---
apiVersion: networking.istio.io/v1alpha3
kind: Gateway
metadata:
  name: gw
  bogus: 1
spec: {}
"#,
        Path::new("bad.yaml"),
    );
    let fields: Vec<(&str, usize)> = probs.iter().map(|p| (p.field.as_str(), p.line)).collect();
    assert_eq!(
        fields,
        [
            ("metadata.name", 3),
            ("metadata.namespace", 4),
            ("metadata.bogus", 15)
        ],
        "{probs:#?}"
    );
}

#[test]
fn good_documents_survive_bad_neighbours() {
    let (res, probs) = parse_documents(
        r#"apiVersion: networking.istio.io/v1alpha3
kind: DestinationRule
metadata: {name: good}
spec:
  host: reviews
---
apiVersion: networking.istio.io/v1alpha3
kind: DestinationRule
metadata: {name: bad}
spec:
  host: reviews
  trafficPolicy: {}
---
- just
- a list
"#,
        Path::new("mixed.yaml"),
    );
    assert_eq!(res.len(), 1);
    assert_eq!(res[0].meta.name, "good");
    assert_eq!(probs.len(), 2, "{probs:#?}");
    assert_eq!(
        (probs[0].field.as_str(), probs[0].line),
        ("spec.trafficPolicy", 12)
    );
    assert_eq!(probs[1].line, 14);
    assert!(
        probs[1]
            .to_string()
            .starts_with("mixed.yaml:14: document must be a mapping"),
        "{}",
        probs[1]
    );
}

#[test]
fn yaml_syntax_error_has_line() {
    let (res, probs) = parse_documents(
        "apiVersion: v1\nkind: [unclosed\n",
        Path::new("syntax.yaml"),
    );
    assert!(res.is_empty());
    assert_eq!(probs.len(), 1);
    assert!(
        probs[0]
            .to_string()
            .starts_with("syntax.yaml:2: invalid YAML:"),
        "{}",
        probs[0]
    );
}

#[test]
fn mesh_config_problems_have_lines() {
    let err = parse_mesh_config(
        "trustDomain: example.org\nmeshMtls:\n  minProtocolVersion: TLSV1_3\n",
        Path::new("mesh.yaml"),
    )
    .unwrap_err();
    assert_eq!(err.len(), 1);
    assert_eq!(
        err[0].to_string().split(": ").take(2).collect::<Vec<_>>(),
        ["mesh.yaml:2", "meshMtls"]
    );
    let err = parse_mesh_config(
        "defaultConfig:\n  terminationDrainDuration: soon\n",
        Path::new("mesh.yaml"),
    )
    .unwrap_err();
    assert_eq!(
        (err[0].field.as_str(), err[0].line),
        ("defaultConfig.terminationDrainDuration", 2)
    );
    let err = parse_mesh_config(
        "connectTimeout: 45s\noutboundTrafficPolicy: {mode: BLOCK}\n",
        Path::new("mesh.yaml"),
    )
    .unwrap_err();
    assert_eq!(
        (err[0].field.as_str(), err[0].line),
        ("outboundTrafficPolicy.mode", 2)
    );
    let err = parse_mesh_config("connectTimeout: 45s\n", Path::new("mesh.yaml")).unwrap_err();
    assert_eq!((err[0].field.as_str(), err[0].line), ("connectTimeout", 1));
    let err = parse_mesh_config(
        "extensionProviders:\n- name: otel\n  envoyOtelAls: {service: collector.istio-system.svc.cluster.local}\n- name: both\n  zipkin: {}\n  prometheus: {}\n",
        Path::new("mesh.yaml"),
    )
    .unwrap_err();
    assert_eq!(
        (err[0].field.as_str(), err[0].line),
        ("extensionProviders[1]", 4),
        "{err:#?}"
    );
    assert!(
        err[0]
            .message
            .contains("several provider types (zipkin, prometheus)")
    );
}

#[test]
fn mesh_config_type_error_inside_provider() {
    let err = parse_mesh_config(
        "extensionProviders:\n- name: otel\n  envoyOtelAls:\n    service: collector.istio-system.svc.cluster.local\n    port: abc\n",
        Path::new("mesh.yaml"),
    )
    .unwrap_err();
    assert_eq!(
        (err[0].field.as_str(), err[0].line),
        ("extensionProviders[0].envoyOtelAls.port", 5),
        "{err:#?}"
    );
    assert!(
        err[0].to_string().starts_with(
            "mesh.yaml:5: extensionProviders[0].envoyOtelAls.port: invalid type: string \"abc\""
        ),
        "{}",
        err[0]
    );
}

#[test]
fn mesh_config_semantic_problem() {
    let err = parse_mesh_config(
        "extensionProviders:\n- name: otel\n  envoyOtelAls:\n    service: collector.istio-system.svc.cluster.local\n",
        Path::new("mesh.yaml"),
    )
    .unwrap_err();
    assert_eq!(
        (err[0].field.as_str(), err[0].line),
        ("extensionProviders[0].envoyOtelAls.port", 3),
        "{err:#?}"
    );
}

#[test]
fn load_paths_scans_directories_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let sub = dir.path().join("b-sub");
    std::fs::create_dir(&sub).unwrap();
    let pa = |name: &str| {
        format!(
            "apiVersion: security.istio.io/v1beta1\nkind: PeerAuthentication\nmetadata: {{name: {name}, namespace: {name}}}\nspec: {{}}\n"
        )
    };
    std::fs::write(dir.path().join("c.yml"), pa("c")).unwrap();
    std::fs::write(dir.path().join("a.yaml"), pa("a")).unwrap();
    std::fs::write(sub.join("b.yaml"), pa("b")).unwrap();
    std::fs::write(dir.path().join("notes.txt"), "not yaml: [").unwrap();
    std::fs::write(dir.path().join("d.yaml"), "kind: [").unwrap();
    let missing = PathBuf::from("/nonexistent/weft/config.yaml");
    let (res, probs) = load_paths(&[dir.path().to_path_buf(), missing.clone()]);
    let names: Vec<&str> = res.iter().map(|r| r.meta.name.as_str()).collect();
    assert_eq!(names, ["a", "b", "c"]);
    assert_eq!(res[1].source.file, sub.join("b.yaml"));
    assert_eq!(probs.len(), 2, "{probs:#?}");
    assert_eq!(probs[0].file, dir.path().join("d.yaml"));
    assert_eq!(probs[1].file, missing);
    assert!(probs[1].message.starts_with("cannot read file"));
}

#[test]
fn cross_resource_validation() {
    let (res, probs) = parse_documents(
        r#"apiVersion: security.istio.io/v1beta1
kind: PeerAuthentication
metadata: {name: default, namespace: foo}
spec: {mtls: {mode: STRICT}}
---
apiVersion: security.istio.io/v1beta1
kind: PeerAuthentication
metadata: {name: second, namespace: foo}
spec: {mtls: {mode: PERMISSIVE}}
---
apiVersion: security.istio.io/v1beta1
kind: PeerAuthentication
metadata: {name: default, namespace: foo}
spec: {selector: {matchLabels: {app: x}}}
---
apiVersion: security.istio.io/v1beta1
kind: PeerAuthentication
metadata: {name: default, namespace: bar}
spec: {}
"#,
        Path::new("x.yaml"),
    );
    assert!(probs.is_empty(), "{probs:#?}");
    let cross = crate::validate(&res);
    assert_eq!(cross.len(), 2, "{cross:#?}");
    assert_eq!(cross[0].line, 6);
    assert!(cross[0].to_string().starts_with("x.yaml:6: PeerAuthentication foo/second: spec: namespace foo already has a PeerAuthentication without selector (default at x.yaml:1)"), "{}", cross[0]);
    assert_eq!(cross[1].line, 11);
    assert!(
        cross[1]
            .message
            .starts_with("duplicate PeerAuthentication foo/default; first defined at x.yaml:1"),
        "{}",
        cross[1]
    );
}

#[test]
fn dns_round_robin_takes_one_endpoint_at_most() {
    let p = one_problem(
        r#"apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: rr, namespace: default}
spec:
  hosts: [rr.example.com]
  ports: [{number: 80, name: http, protocol: HTTP}]
  resolution: DNS_ROUND_ROBIN
  endpoints: [{address: a.example.com}, {address: b.example.com}]
"#,
    );
    assert_eq!(p.field, "spec.endpoints");
    assert!(p.message.contains("0 or 1 endpoint"), "{p:?}");
}
