//! The HTTP request path: raw bytes arrive on a connection to the sidecar's inbound listener
//! (15006), whose configuration `weft control` generated for httpbin from Istio resources
//! (PERMISSIVE mTLS, a RequestAuthentication with Istio's sample JWKS, ALLOW and DENY
//! AuthorizationPolicies), and the app behind it records what reaches it. Properties beyond
//! "no panic": the proxy finishes a connection once its client has closed (no hang), and no
//! request whose path the DENY policy names reaches the app, nor one the ALLOW policy does
//! not admit (the app sees the path the proxy checked: normalised, no dot segments).
#![no_main]

use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use weft_proxy::fuzzing::Inbound;
use weft_proxy::snapshot::{Raw, Snapshot};
use weft_xds::{Generator, ProxyInfo, Subscription, types};

const JWKS: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../shared/istio/jwt/jwks.json"
));

fn config(port: u16) -> String {
    let jwks = serde_json::to_string(JWKS.trim()).expect("a JSON string");
    format!(
        r#"apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: httpbin, namespace: foo}}
spec:
  hosts: [httpbin.foo.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: {port}, name: http, protocol: HTTP}}]
  workloadSelector: {{labels: {{app: httpbin}}}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: httpbin, namespace: foo}}
spec: {{address: 10.0.0.5, labels: {{app: httpbin}}, serviceAccount: httpbin}}
---
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {{name: jwt, namespace: foo}}
spec:
  selector: {{matchLabels: {{app: httpbin}}}}
  jwtRules:
  - issuer: testing@secure.istio.io
    jwks: {jwks}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: deny-admin, namespace: foo}}
spec:
  selector: {{matchLabels: {{app: httpbin}}}}
  action: DENY
  rules: [{{to: [{{operation: {{paths: ["/admin", "/admin/*"]}}}}]}}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: allow, namespace: foo}}
spec:
  selector: {{matchLabels: {{app: httpbin}}}}
  action: ALLOW
  rules:
  - to: [{{operation: {{methods: [GET, HEAD], paths: ["/status/*", "/headers", "/admin/*"]}}}}]
  - to: [{{operation: {{methods: [POST], paths: ["/post"]}}}}]
    when: [{{key: "request.headers[x-user]", values: [jason]}}]
  - to: [{{operation: {{paths: ["/secure/*"]}}}}]
    from: [{{source: {{requestPrincipals: ["testing@secure.istio.io/*"]}}}}]
"#
    )
}

/// What `weft control` sends httpbin's sidecar (its inbound listener and clusters), compiled
/// by the proxy.
fn snapshot(port: u16) -> Snapshot {
    let (resources, problems) = weft_api::parse_documents(&config(port), Path::new("fuzz.yaml"));
    assert!(problems.is_empty(), "{problems:?}");
    let push = weft_control::push::PushContext::new(
        "1".into(),
        Arc::new(weft_api::MeshConfig::default()),
        Arc::new(resources),
    );
    let generator = weft_control::generator::MeshGenerator::new(Arc::new(
        arc_swap::ArcSwap::from_pointee(push),
    ));
    let proxy = ProxyInfo {
        id: "sidecar~10.0.0.5~httpbin.foo~foo.svc.cluster.local".into(),
        cluster: String::new(),
        metadata: serde_json::json!({}),
        peer_addr: None,
        conn_id: 1,
    };
    let mut raw = Raw::default();
    let get = |type_url: &str| {
        generator
            .generate(&proxy, type_url, &Subscription::Wildcard)
            .expect("generated")
            .resources
    };
    for r in get(types::LISTENER) {
        let l: envoy_types::pb::envoy::config::listener::v3::Listener =
            prost::Message::decode(r.resource().value.as_slice()).expect("a Listener");
        if l.name == weft_proxy::VIRTUAL_INBOUND {
            raw.listeners.insert(l.name.clone(), l);
        }
    }
    for r in get(types::CLUSTER) {
        let c: envoy_types::pb::envoy::config::cluster::v3::Cluster =
            prost::Message::decode(r.resource().value.as_slice()).expect("a Cluster");
        if c.name.starts_with("inbound|") {
            raw.clusters.insert(c.name.clone(), c);
        }
    }
    assert!(!raw.listeners.is_empty() && !raw.clusters.is_empty());
    let live = Arc::new(weft_identity::LiveIdentity::new());
    let tls = weft_proxy::tls::TlsFactory::new(live, "cluster.local".into());
    Snapshot::compile(raw, &tls, &Snapshot::default())
        .expect("the proxy takes the generated config")
}

fn harness() -> &'static Inbound {
    static H: OnceLock<Inbound> = OnceLock::new();
    H.get_or_init(|| Inbound::new(snapshot).expect("the harness starts"))
}

/// The path as the app saw it, without its query.
fn path_of(path_and_query: &str) -> &str {
    path_and_query.split('?').next().unwrap_or_default()
}

fuzz_target!(|data: &[u8]| {
    let h = harness();
    let served = h.serve(data, Duration::from_secs(5));
    assert!(
        served.finished,
        "the proxy did not finish a connection within 5 s of its client closing"
    );
    for (method, pq) in h.take_received() {
        let path = path_of(&pq);
        assert!(
            path != "/admin" && !path.starts_with("/admin/"),
            "a path the DENY policy names reached the app: {method} {pq}"
        );
        assert!(
            !path.split('/').any(|seg| seg == ".." || seg == "."),
            "the app saw a path with dot segments (not the one the proxy checked): {pq}"
        );
        let allowed = (matches!(method.as_str(), "GET" | "HEAD")
            && (path.starts_with("/status/") || path == "/headers"))
            || (method == "POST" && path == "/post")
            || path.starts_with("/secure/");
        assert!(
            allowed,
            "a request no ALLOW rule admits reached the app: {method} {pq}"
        );
    }
});
