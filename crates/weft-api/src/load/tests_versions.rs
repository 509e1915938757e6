//! API versions (Istio's current v1 beside v1alpha3/v1beta1/v1alpha1) and the documents that
//! are read but not applied (Kubernetes kinds, Istio kinds Weft does not implement).

use std::path::Path;

use crate::load::{Parsed, parse_documents, parse_documents_with_notes};
use crate::meta::{Kind, Spec};
use crate::note::Skip;

/// One spec per kind, exercising a few fields of its schema.
const SPECS: &[(Kind, &str)] = &[
    (
        Kind::VirtualService,
        r#"
  hosts: [reviews]
  http:
  - match:
    - headers: {end-user: {exact: jason}}
    route:
    - destination: {host: reviews, subset: v2}
  - route:
    - destination: {host: reviews, subset: v1}
      weight: 80
    - destination: {host: reviews, subset: v3}
      weight: 20
    timeout: 2s"#,
    ),
    (
        Kind::DestinationRule,
        r#"
  host: reviews
  trafficPolicy:
    tls: {mode: ISTIO_MUTUAL}
    connectionPool: {tcp: {maxConnections: 100}}
  subsets:
  - name: v1
    labels: {version: v1}"#,
    ),
    (
        Kind::Gateway,
        r#"
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: ["*"]"#,
    ),
    (
        Kind::ServiceEntry,
        r#"
  hosts: [api.example.com]
  ports:
  - {number: 443, name: https, protocol: TLS}
  resolution: DNS
  location: MESH_EXTERNAL"#,
    ),
    (
        Kind::WorkloadEntry,
        r#"
  address: 10.0.0.7
  labels: {app: ratings, version: v1}
  serviceAccount: bookinfo-ratings"#,
    ),
    (
        Kind::Sidecar,
        r#"
  workloadSelector: {labels: {app: ratings}}
  egress:
  - hosts: ["./*", "istio-system/*"]"#,
    ),
    (
        Kind::PeerAuthentication,
        r#"
  selector: {matchLabels: {app: ratings}}
  mtls: {mode: STRICT}
  portLevelMtls:
    9080: {mode: PERMISSIVE}"#,
    ),
    (
        Kind::AuthorizationPolicy,
        r#"
  selector: {matchLabels: {app: ratings}}
  action: ALLOW
  rules:
  - from:
    - source: {principals: ["cluster.local/ns/default/sa/bookinfo-reviews"]}
    to:
    - operation: {methods: [GET]}"#,
    ),
    (
        Kind::RequestAuthentication,
        r#"
  selector: {matchLabels: {app: httpbin}}
  jwtRules:
  - issuer: testing@secure.istio.io
    jwksUri: https://raw.githubusercontent.com/istio/istio/release-1.14/security/tools/jwt/samples/jwks.json"#,
    ),
    (
        Kind::Telemetry,
        r#"
  selector: {matchLabels: {app: sleep}}
  accessLogging:
  - providers:
    - name: envoy
  tracing:
  - randomSamplingPercentage: 10.0"#,
    ),
];

fn doc(api_version: &str, kind: impl std::fmt::Display, spec: &str) -> String {
    format!(
        "apiVersion: {api_version}\nkind: {kind}\nmetadata:\n  name: x\n  namespace: bookinfo\nspec:{spec}\n"
    )
}

fn parsed(yaml: &str) -> Parsed {
    parse_documents_with_notes(yaml, Path::new("v.yaml"))
}

fn spec_of(kind: Kind) -> &'static str {
    SPECS
        .iter()
        .find(|(k, _)| *k == kind)
        .map(|(_, s)| *s)
        .unwrap_or_else(|| panic!("no spec for {kind}"))
}

/// Loads `kind` under `api_version`, expecting one resource and nothing else.
fn load_one(api_version: &str, kind: Kind) -> Spec {
    let p = parsed(&doc(api_version, kind, spec_of(kind)));
    assert!(
        p.problems.is_empty(),
        "{api_version} {kind}: {:#?}",
        p.problems
    );
    assert!(p.notes.is_empty(), "{api_version} {kind}: {:#?}", p.notes);
    assert_eq!(p.resources.len(), 1, "{api_version} {kind}");
    let r = &p.resources[0];
    assert_eq!(r.api_version, api_version);
    assert_eq!(r.kind(), kind);
    r.spec.clone()
}

/// Every version a kind is served under yields the same spec as its oldest version.
fn same_schema_under(kind: Kind, versions: &[&str]) {
    let first = load_one(versions[0], kind);
    for v in &versions[1..] {
        assert_eq!(load_one(v, kind), first, "{kind} under {v}");
    }
}

#[test]
fn networking_v1_serves_the_networking_kinds() {
    for kind in [
        Kind::VirtualService,
        Kind::DestinationRule,
        Kind::Gateway,
        Kind::ServiceEntry,
        Kind::WorkloadEntry,
        Kind::Sidecar,
    ] {
        assert_eq!(kind.group(), "networking.istio.io");
        same_schema_under(
            kind,
            &[
                "networking.istio.io/v1alpha3",
                "networking.istio.io/v1beta1",
                "networking.istio.io/v1",
            ],
        );
    }
    // WorkloadGroup is served under v1 too; Weft does not implement it, so it is named in a
    // warning rather than refused.
    let p = parsed(&doc(
        "networking.istio.io/v1",
        "WorkloadGroup",
        "\n  template: {serviceAccount: vm}",
    ));
    assert!(p.problems.is_empty() && p.resources.is_empty(), "{p:#?}");
    assert_eq!(p.notes.len(), 1);
    assert_eq!(p.notes[0].skip, Skip::UnsupportedIstio);
    assert_eq!(
        p.notes[0].to_string(),
        "v.yaml:2: warning: WorkloadGroup bookinfo/x: networking.istio.io/v1 WorkloadGroup is not supported by Weft; skipped, it will not be applied"
    );
}

#[test]
fn security_v1_serves_the_security_kinds() {
    for kind in [
        Kind::AuthorizationPolicy,
        Kind::PeerAuthentication,
        Kind::RequestAuthentication,
    ] {
        assert_eq!(kind.group(), "security.istio.io");
        same_schema_under(kind, &["security.istio.io/v1beta1", "security.istio.io/v1"]);
    }
}

#[test]
fn telemetry_v1_serves_telemetry() {
    assert_eq!(Kind::Telemetry.group(), "telemetry.istio.io");
    same_schema_under(
        Kind::Telemetry,
        &["telemetry.istio.io/v1alpha1", "telemetry.istio.io/v1"],
    );
}

#[test]
fn every_kind_has_a_spec_here_and_loads_under_every_served_version() {
    for kind in Kind::ALL {
        if kind == Kind::ProxyConfig {
            continue;
        }
        let versions = kind.api_versions();
        assert!(
            versions.iter().any(|v| v.ends_with("/v1")),
            "{kind} lacks v1: {versions:?}"
        );
        same_schema_under(kind, versions);
    }
}

#[test]
fn v1_resources_are_validated_like_the_older_versions() {
    let spec = "\n  hosts: [reviews]\n  http:\n  - route:\n    - destination: {host: reviews, subset: v1}\n      weight: 60\n    - destination: {host: reviews, subset: v3}\n      weight: 60";
    let mut seen = Vec::new();
    for v in [
        "networking.istio.io/v1alpha3",
        "networking.istio.io/v1beta1",
        "networking.istio.io/v1",
    ] {
        let (res, probs) = parse_documents(&doc(v, "VirtualService", spec), Path::new("v.yaml"));
        assert!(res.is_empty(), "{v}");
        assert_eq!(probs.len(), 1, "{v}: {probs:#?}");
        seen.push(probs[0].to_string());
    }
    assert!(
        seen[2].starts_with(
            "v.yaml:13: VirtualService bookinfo/x: spec.http[0].route[1].weight: total destination weight 120 != 100"
        ),
        "{}",
        seen[2]
    );
    assert!(seen.iter().all(|s| *s == seen[0]), "{seen:#?}");

    // An unknown field is as much an error under v1.
    let (_, probs) = parse_documents(
        &doc(
            "security.istio.io/v1",
            "PeerAuthentication",
            "\n  mtls: {mode: STRICT}\n  mtl: {}",
        ),
        Path::new("v.yaml"),
    );
    assert_eq!(probs.len(), 1, "{probs:#?}");
    assert_eq!((probs[0].field.as_str(), probs[0].line), ("spec.mtl", 8));
    assert!(
        probs[0].message.contains("unknown field `mtl`"),
        "{}",
        probs[0]
    );
}

#[test]
fn kinds_istio_does_not_serve_under_v1_are_refused() {
    let p = parsed(&doc("networking.istio.io/v1", "ProxyConfig", " {}"));
    assert!(p.resources.is_empty() && p.notes.is_empty());
    assert_eq!(p.problems.len(), 1);
    assert_eq!(
        p.problems[0].to_string(),
        "v.yaml:1: ProxyConfig bookinfo/x: apiVersion: apiVersion \"networking.istio.io/v1\" does not serve kind ProxyConfig; use networking.istio.io/v1beta1"
    );

    let p = parsed(&doc("networking.istio.io/v1", "EnvoyFilter", " {}"));
    assert!(p.resources.is_empty() && p.notes.is_empty());
    assert_eq!(p.problems.len(), 1);
    assert_eq!(
        p.problems[0].to_string(),
        "v.yaml:1: EnvoyFilter bookinfo/x: apiVersion: apiVersion \"networking.istio.io/v1\" does not serve kind EnvoyFilter; use networking.istio.io/v1alpha3"
    );

    // A v1 of a group that has none.
    let p = parsed(&doc("telemetry.istio.io/v2", "Telemetry", " {}"));
    assert_eq!(p.problems.len(), 1);
    assert!(
        p.problems[0].message.ends_with(
            "does not serve kind Telemetry; use telemetry.istio.io/v1alpha1 or telemetry.istio.io/v1"
        ),
        "{}",
        p.problems[0]
    );
}

const MIXED: &str = r#"apiVersion: v1
kind: Service
metadata:
  name: details
  labels: {app: details}
spec:
  ports:
  - port: 9080
    name: http
  selector: {app: details}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: details}
spec:
  host: details
  subsets:
  - {name: v1, labels: {version: v1}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: details-v1, namespace: bookinfo}
spec:
  replicas: 1
---
apiVersion: networking.istio.io/v1alpha3
kind: EnvoyFilter
metadata:
  name: filter-ratelimit
  namespace: istio-system
spec:
  configPatches: []
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: httpbin-gateway}
spec:
  gatewayClassName: istio
---
apiVersion: v1
kind: ConfigMap
metadata: {name: c}
data: {a: b}
"#;

#[test]
fn kubernetes_and_unsupported_kinds_are_notes_and_the_rest_loads() {
    let p = parsed(MIXED);
    assert!(p.problems.is_empty(), "{:#?}", p.problems);
    assert_eq!(p.resources.len(), 1);
    assert_eq!(p.resources[0].kind(), Kind::DestinationRule);
    assert_eq!(p.resources[0].api_version, "networking.istio.io/v1");
    let notes: Vec<String> = p.notes.iter().map(ToString::to_string).collect();
    assert_eq!(
        notes,
        [
            "v.yaml:2: note: Service details: not an Istio resource (v1); skipped",
            "v.yaml:21: note: Deployment bookinfo/details-v1: not an Istio resource (apps/v1); skipped",
            "v.yaml:27: warning: EnvoyFilter istio-system/filter-ratelimit: networking.istio.io/v1alpha3 EnvoyFilter is not supported by Weft; skipped, it will not be applied",
            "v.yaml:35: warning: Gateway httpbin-gateway: the Kubernetes Gateway API (gateway.networking.k8s.io/v1) is not supported by Weft; skipped, it will not be applied (use an Istio Gateway and VirtualService)",
            "v.yaml:41: note: ConfigMap c: not an Istio resource (v1); skipped",
        ]
    );
    let warnings: Vec<bool> = p.notes.iter().map(|n| n.is_warning()).collect();
    assert_eq!(warnings, [false, false, true, true, false]);

    // The plain form drops the notes and keeps the file loadable: no problems, one resource.
    let (res, probs) = parse_documents(MIXED, Path::new("v.yaml"));
    assert_eq!((res.len(), probs.len()), (1, 0));
}

#[test]
fn other_documents_that_are_not_applied() {
    let p = parsed(
        "swagger: \"2.0\"\ninfo: {title: BookInfo API}\n---\napiVersion: v1\nkind: List\nitems:\n- apiVersion: networking.istio.io/v1\n  kind: VirtualService\n---\napiVersion: install.istio.io/v1alpha1\nkind: IstioOperator\nmetadata: {namespace: istio-system}\nspec: {meshConfig: {}}\n---\napiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: gateway}\n---\napiVersion: extensions.istio.io/v1alpha1\nkind: WasmPlugin\nmetadata: {name: w}\n",
    );
    assert!(p.problems.is_empty() && p.resources.is_empty(), "{p:#?}");
    let got: Vec<(usize, &str, Skip, bool)> = p
        .notes
        .iter()
        .map(|n| (n.line, n.kind.as_str(), n.skip, n.is_warning()))
        .collect();
    assert_eq!(
        got,
        [
            (1, "", Skip::NotAResource, false),
            (5, "List", Skip::List, true),
            (11, "IstioOperator", Skip::IstioOperator, true),
            (16, "Ingress", Skip::Ingress, true),
            (20, "WasmPlugin", Skip::UnsupportedIstio, true),
        ]
    );
}

#[test]
fn broken_istio_documents_are_still_errors() {
    // A typo in an Istio kind is not a skipped kind.
    let p = parsed(
        "apiVersion: networking.istio.io/v1\nkind: VirtualServce\nmetadata: {name: r}\nspec: {}\n",
    );
    assert!(p.notes.is_empty());
    assert_eq!(p.problems.len(), 1);
    assert_eq!(
        p.problems[0].to_string(),
        "v.yaml:2: kind: unknown kind \"VirtualServce\" in networking.istio.io; its kinds are DestinationRule, EnvoyFilter, Gateway, ProxyConfig, ServiceEntry, Sidecar, VirtualService, WorkloadEntry, WorkloadGroup"
    );
    // Groups Istio no longer serves.
    let p = parsed(
        "apiVersion: authentication.istio.io/v1alpha1\nkind: Policy\nmetadata: {name: p}\nspec: {}\n",
    );
    assert_eq!(p.problems.len(), 1);
    assert!(
        p.problems[0]
            .to_string()
            .starts_with("v.yaml:2: kind: unknown kind \"Policy\": Istio serves no API group authentication.istio.io; supported kinds are ServiceEntry,"),
        "{}",
        p.problems[0]
    );
    // A resource missing apiVersion and kind is not mistaken for a non-resource document.
    let p = parsed("metadata: {name: r}\nspec:\n  hosts: [a]\n");
    assert!(p.notes.is_empty());
    assert_eq!(p.problems.len(), 1);
    assert_eq!(p.problems[0].field, "apiVersion");
    assert!(
        p.problems[0]
            .message
            .contains("missing required field `apiVersion`")
    );
    // A Weft kind under a non-Istio apiVersion is refused, not skipped.
    let p = parsed("apiVersion: v1\nkind: VirtualService\nmetadata: {name: r}\nspec: {}\n");
    assert!(p.notes.is_empty());
    assert_eq!(p.problems.len(), 1);
    assert_eq!(
        p.problems[0].to_string(),
        "v.yaml:1: VirtualService default/r: apiVersion: apiVersion \"v1\" does not serve kind VirtualService; use networking.istio.io/v1alpha3, networking.istio.io/v1beta1 or networking.istio.io/v1"
    );
}

#[test]
fn load_paths_with_notes_names_files() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.yaml"), MIXED).unwrap();
    std::fs::write(dir.path().join("b.yaml"), "kind: [").unwrap();
    let p = crate::load::load_paths_with_notes(&[dir.path().to_path_buf()]);
    assert_eq!(p.resources.len(), 1);
    assert_eq!(p.notes.len(), 5);
    assert!(p.notes.iter().all(|n| n.file == dir.path().join("a.yaml")));
    assert_eq!(p.problems.len(), 1);
    assert_eq!(p.problems[0].file, dir.path().join("b.yaml"));
}
