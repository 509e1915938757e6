use super::*;

fn analyze_yaml(files: &[(&str, &str)]) -> (Analysis, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tmp");
    for (name, text) in files {
        std::fs::write(dir.path().join(name), text).expect("write");
    }
    let input = Input::load(&[dir.path().to_path_buf()], None);
    (analyze(&input), dir)
}

fn lines(a: &Analysis) -> Vec<String> {
    a.messages.iter().map(Message::line).collect()
}

const SERVICES: &str = r#"apiVersion: networking.istio.io/v1beta1
kind: ServiceEntry
metadata:
  name: reviews
spec:
  hosts: [reviews.default.svc.cluster.local]
  ports:
  - {number: 9080, name: http, protocol: HTTP}
  resolution: STATIC
  location: MESH_INTERNAL
---
apiVersion: networking.istio.io/v1beta1
kind: DestinationRule
metadata:
  name: reviews
spec:
  host: reviews
  subsets:
  - name: v1
    labels: {version: v1}
"#;

#[test]
fn referenced_hosts_subsets_and_gateways() {
    let vs = r#"apiVersion: networking.istio.io/v1beta1
kind: VirtualService
metadata:
  name: reviews
spec:
  hosts: [reviews]
  gateways: [mesh, bogus-gateway]
  http:
  - name: a
    route:
    - destination:
        host: reviews
        subset: v4
  - name: b
    route:
    - destination:
        host: ratings
  - name: c
    route:
    - destination:
        host: reviews
        port: {number: 9999}
"#;
    let (a, dir) = analyze_yaml(&[("services.yaml", SERVICES), ("vs.yaml", vs)]);
    let file = dir.path().join("vs.yaml");
    let l = lines(&a);
    let want = [
        format!(
            "Error [IST0101] (VirtualService default/reviews {}:13) Referenced host+subset in destinationrule not found: \"reviews+v4\"",
            file.display()
        ),
        format!(
            "Error [IST0101] (VirtualService default/reviews {}:17) Referenced host not found: \"ratings\"",
            file.display()
        ),
        format!(
            "Error [IST0101] (VirtualService default/reviews {}:7) Referenced gateway not found: \"bogus-gateway\"",
            file.display()
        ),
        format!(
            "Error [IST0101] (VirtualService default/reviews {}:22) Referenced host:port not found: \"reviews:9999\"",
            file.display()
        ),
    ];
    for w in &want {
        assert!(l.contains(w), "missing {w}\nin {l:#?}");
    }
    assert_eq!(l.len(), want.len(), "{l:#?}");
    let (out, err, code) = report(&a, Format::Log, Level::Error, Level::Info, "x");
    assert_eq!(code, 79);
    assert!(
        out.lines().count() == 4 && err.contains("Analyzers found issues"),
        "{err}"
    );
    let (json, _, code) = report(&a, Format::Json, Level::Error, Level::Info, "x");
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&json).expect("json");
    assert_eq!(v[0]["code"], "IST0101");
    assert_eq!(
        v[0]["documentationUrl"],
        "https://istio.io/v1.14/docs/reference/config/analysis/ist0101/?ref=istioctl-analyze"
    );
    assert_eq!(v[0]["origin"], "VirtualService default/reviews");
}

#[test]
fn clean_config_has_no_messages() {
    let vs = r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {host: reviews, subset: v1}
"#;
    let (a, _dir) = analyze_yaml(&[("services.yaml", SERVICES), ("vs.yaml", vs)]);
    assert!(a.messages.is_empty(), "{:#?}", lines(&a));
    let (out, err, code) = report(
        &a,
        Format::Log,
        Level::Error,
        Level::Info,
        "namespace: default",
    );
    assert_eq!((out.as_str(), code), ("\n", 0));
    assert_eq!(
        err,
        "\u{2714} No validation issues found when analyzing namespace: default.\n"
    );
}

#[test]
fn mesh_hosts_ineffective_matches_and_tls() {
    let files = r#"apiVersion: networking.istio.io/v1beta1
kind: VirtualService
metadata:
  name: a
spec:
  hosts: [reviews]
  http:
  - match:
    - uri: {prefix: /api}
    route:
    - destination: {host: reviews}
  - match:
    - uri: {prefix: /api}
    route:
    - destination: {host: reviews}
  - name: later
    match:
    - uri: {prefix: /api/v2}
    route:
    - destination: {host: reviews}
---
apiVersion: networking.istio.io/v1beta1
kind: VirtualService
metadata:
  name: b
spec:
  hosts: [reviews.default.svc.cluster.local]
  http:
  - route:
    - destination: {host: reviews}
---
apiVersion: networking.istio.io/v1beta1
kind: DestinationRule
metadata:
  name: db
spec:
  host: reviews
  trafficPolicy:
    tls: {mode: SIMPLE}
    portLevelSettings:
    - port: {number: 443}
      tls: {mode: MUTUAL, clientCertificate: /c.pem, privateKey: /k.pem}
---
apiVersion: networking.istio.io/v1beta1
kind: DestinationRule
metadata:
  name: plain
  namespace: other
spec:
  host: reviews.default.svc.cluster.local
  trafficPolicy:
    tls: {mode: DISABLE}
---
apiVersion: security.istio.io/v1beta1
kind: PeerAuthentication
metadata:
  name: strict
spec:
  mtls: {mode: STRICT}
"#;
    let (a, _dir) = analyze_yaml(&[("services.yaml", SERVICES), ("x.yaml", files)]);
    let texts: Vec<String> = a
        .messages
        .iter()
        .map(|m| format!("{} {}", m.code, m.text))
        .collect();
    let has = |s: &str| texts.iter().any(|t| t == s);
    assert!(
        has(
            "IST0109 The VirtualServices default/a,default/b associated with mesh gateway define the same host */reviews.default.svc.cluster.local which can lead to undefined behavior. This can be fixed by merging the conflicting VirtualServices into a single resource."
        ),
        "{texts:#?}"
    );
    assert!(
        has(
            "IST0131 VirtualService rule #1 match #0 is not used (duplicate/overlapping match in rule #0)."
        ),
        "{texts:#?}"
    );
    assert!(
        has(
            "IST0131 VirtualService rule \"later\" match #0 of prefix /api/v2 is not used (duplicate/overlapping match in rule #0 of prefix /api on #0)."
        ),
        "{texts:#?}"
    );
    assert!(
        has(
            "IST0128 DestinationRule default/db in namespace default has TLS mode set to SIMPLE but no caCertificates are set to validate server identity for host: reviews.default.svc.cluster.local"
        ),
        "{texts:#?}"
    );
    assert!(
        has(
            "IST0129 DestinationRule default/db in namespace default has TLS mode set to MUTUAL but no caCertificates are set to validate server identity for host: reviews.default.svc.cluster.local at port number:443"
        ),
        "{texts:#?}"
    );
    assert!(
        has(
            "IST0113 A DestinationRule and Policy are in conflict with regards to mTLS for host reviews.default.svc.cluster.local. The DestinationRule \"other/plain\" specifies that mTLS must be false but the Policy object \"default/strict\" specifies STRICT."
        ),
        "{texts:#?}"
    );
    // Errors first, then warnings, then info.
    let levels: Vec<Level> = a.messages.iter().map(|m| m.level).collect();
    let mut sorted = levels.clone();
    sorted.sort();
    assert_eq!(levels, sorted);
}

#[test]
fn kubernetes_resources_and_gateways() {
    let files = r#"apiVersion: v1
kind: Namespace
metadata:
  name: shop
---
apiVersion: v1
kind: Namespace
metadata:
  name: meshed
  labels: {istio-injection: enabled}
---
apiVersion: v1
kind: Service
metadata:
  name: web
  annotations:
    sidecar.istio.io/inject: "true"
    networking.istio.io/bogus: "x"
spec:
  selector: {app: ingress}
  ports:
  - {name: http-web, port: 80}
  - {name: web, port: 8080, targetPort: 9090}
  - {name: dns, port: 53, protocol: UDP}
---
apiVersion: v1
kind: Pod
metadata:
  name: ingress
  labels: {app: ingress}
spec:
  containers: [{name: c, image: x}]
---
apiVersion: networking.istio.io/v1beta1
kind: Gateway
metadata:
  name: one
spec:
  selector: {app: ingress}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: ["*.example.com"]
  - port: {number: 8443, name: https, protocol: HTTP}
    hosts: ["a.example.com"]
---
apiVersion: networking.istio.io/v1beta1
kind: Gateway
metadata:
  name: two
spec:
  selector: {app: ingress}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: ["shop.example.com"]
---
apiVersion: networking.istio.io/v1beta1
kind: Gateway
metadata:
  name: nobody
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: ["*"]
"#;
    let (a, _dir) = analyze_yaml(&[("k.yaml", files)]);
    let texts: Vec<String> = a
        .messages
        .iter()
        .map(|m| format!("{} ({}) {}", m.code, m.origin.friendly(), m.text))
        .collect();
    let has = |s: &str| texts.iter().any(|t| t == s);
    assert!(
        has(
            "IST0102 (Namespace shop) The namespace is not enabled for Istio injection. Run 'kubectl label namespace shop istio-injection=enabled' to enable it, or 'kubectl label namespace shop istio-injection=disabled' to explicitly mark it as not needing injection."
        ),
        "{texts:#?}"
    );
    assert!(
        !texts.iter().any(|t| t.contains("Namespace meshed")),
        "{texts:#?}"
    );
    assert!(
        has("IST0108 (Service default/web) Unknown annotation: networking.istio.io/bogus"),
        "{texts:#?}"
    );
    assert!(
        !texts.iter().any(|t| t.contains("sidecar.istio.io/inject")),
        "{texts:#?}"
    );
    assert!(
        has(
            "IST0118 (Service default/web) Port name web (port: 8080, targetPort: 9090) doesn't follow the naming convention of Istio port."
        ),
        "{texts:#?}"
    );
    assert!(
        has(
            "IST0104 (Gateway default/one) The gateway refers to a port that is not exposed on the workload (pod selector app=ingress; port 8443)"
        ),
        "{texts:#?}"
    );
    assert!(
        has(
            "IST0145 (Gateway default/one) Conflict with gateways default/two (workload selector app=ingress, port 80, hosts *.example.com)."
        ),
        "{texts:#?}"
    );
    assert!(
        has(
            "IST0145 (Gateway default/two) Conflict with gateways default/one (workload selector app=ingress, port 80, hosts shop.example.com)."
        ),
        "{texts:#?}"
    );
    assert!(
        has(
            "IST0101 (Gateway default/nobody) Referenced selector not found: \"istio=ingressgateway\""
        ),
        "{texts:#?}"
    );
}

#[test]
fn schema_errors_and_suppression() {
    let files = r#"apiVersion: networking.istio.io/v1beta1
kind: VirtualService
metadata:
  name: bad
spec:
  hosts: [reviews]
---
apiVersion: networking.istio.io/v1beta1
kind: VirtualService
metadata:
  name: quiet
  annotations:
    galley.istio.io/analyze-suppress: IST0101
spec:
  hosts: [nowhere]
  http:
  - route:
    - destination: {host: nowhere}
"#;
    let (a, _dir) = analyze_yaml(&[("x.yaml", files)]);
    let l = lines(&a);
    assert_eq!(l.len(), 1, "{l:#?}");
    assert!(
        l[0].starts_with("Error [IST0106] (VirtualService default/bad ")
            && l[0].contains("Schema validation error: "),
        "{l:#?}"
    );
}
