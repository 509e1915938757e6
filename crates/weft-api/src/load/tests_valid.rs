//! Istio documentation examples that must load cleanly, with their parsed values checked.

use std::path::Path;
use std::time::Duration as StdDuration;

use crate::common::ClientTlsMode;
use crate::load::{parse_documents, parse_mesh_config};
use crate::mesh::{MeshTlsProtocol, Provider};
use crate::meta::{Kind, Resource, Spec};
use crate::networking::{Location, Resolution};
use crate::security::{AuthorizationAction, MtlsMode};
use crate::telemetry::WorkloadMode;

fn load_ok(yaml: &str) -> Vec<Resource> {
    let (res, probs) = parse_documents(yaml, Path::new("ok.yaml"));
    assert!(probs.is_empty(), "unexpected problems: {:#?}", probs);
    res
}

const DESTINATION_RULE_ALL: &str = r#"
apiVersion: networking.istio.io/v1alpha3
kind: DestinationRule
metadata:
  name: productpage
spec:
  host: productpage
  subsets:
  - name: v1
    labels:
      version: v1
---
apiVersion: networking.istio.io/v1alpha3
kind: DestinationRule
metadata:
  name: reviews
spec:
  host: reviews
  subsets:
  - name: v1
    labels:
      version: v1
  - name: v2
    labels:
      version: v2
  - name: v3
    labels:
      version: v3
---
apiVersion: networking.istio.io/v1alpha3
kind: DestinationRule
metadata:
  name: ratings
spec:
  host: ratings
  subsets:
  - name: v1
    labels:
      version: v1
  - name: v2
    labels:
      version: v2
  - name: v2-mysql
    labels:
      version: v2-mysql
  - name: v2-mysql-vm
    labels:
      version: v2-mysql-vm
---
apiVersion: networking.istio.io/v1alpha3
kind: DestinationRule
metadata:
  name: details
spec:
  host: details
  subsets:
  - name: v1
    labels:
      version: v1
  - name: v2
    labels:
      version: v2
---
"#;

#[test]
fn bookinfo_destination_rule_all() {
    let res = load_ok(DESTINATION_RULE_ALL);
    assert_eq!(res.len(), 4);
    let names: Vec<&str> = res.iter().map(|r| r.meta.name.as_str()).collect();
    assert_eq!(names, ["productpage", "reviews", "ratings", "details"]);
    assert!(res.iter().all(|r| r.kind() == Kind::DestinationRule));
    assert_eq!(res[0].meta.namespace, "default");
    assert_eq!(res[0].source.line, 2);
    assert_eq!(res[1].source.line, 13);
    let Spec::DestinationRule(dr) = &res[2].spec else {
        panic!("{:?}", res[2].spec)
    };
    assert_eq!(dr.host, "ratings");
    assert_eq!(dr.subsets.len(), 4);
    assert_eq!(dr.subsets[3].name, "v2-mysql-vm");
    assert_eq!(dr.subsets[3].labels["version"], "v2-mysql-vm");
}

#[test]
fn reviews_test_v2_header_match() {
    let res = load_ok(
        r#"
apiVersion: networking.istio.io/v1alpha3
kind: VirtualService
metadata:
  name: reviews
spec:
  hosts:
    - reviews
  http:
  - match:
    - headers:
        end-user:
          exact: jason
    route:
    - destination:
        host: reviews
        subset: v2
  - route:
    - destination:
        host: reviews
        subset: v1
"#,
    );
    let Spec::VirtualService(vs) = &res[0].spec else {
        panic!()
    };
    assert_eq!(vs.hosts, ["reviews"]);
    assert_eq!(vs.http.len(), 2);
    let m = &vs.http[0].match_[0].headers["end-user"];
    assert_eq!(
        m.matcher(),
        Some(crate::common::StringMatcher::Exact("jason"))
    );
    let d = vs.http[1].route[0].destination.as_ref().unwrap();
    assert_eq!((d.host.as_str(), d.subset.as_str()), ("reviews", "v1"));
    assert_eq!(vs.http[1].route[0].weight, 0);
}

#[test]
fn ratings_delay_and_abort() {
    let res = load_ok(
        r#"
apiVersion: networking.istio.io/v1beta1
kind: VirtualService
metadata:
  name: ratings
spec:
  hosts:
  - ratings
  http:
  - match:
    - headers:
        end-user:
          exact: jason
    fault:
      delay:
        percentage:
          value: 100.0
        fixedDelay: 7s
    route:
    - destination:
        host: ratings
        subset: v1
  - route:
    - destination:
        host: ratings
        subset: v1
---
apiVersion: networking.istio.io/v1alpha3
kind: VirtualService
metadata:
  name: ratings-abort
spec:
  hosts:
  - ratings
  http:
  - match:
    - headers:
        end-user:
          exact: jason
    fault:
      abort:
        percentage:
          value: 100
        httpStatus: 500
    route:
    - destination:
        host: ratings
        subset: v1
"#,
    );
    assert_eq!(res[0].api_version, "networking.istio.io/v1beta1");
    let Spec::VirtualService(vs) = &res[0].spec else {
        panic!()
    };
    let delay = vs.http[0].fault.as_ref().unwrap().delay.as_ref().unwrap();
    assert_eq!(delay.fixed_delay.unwrap().get(), StdDuration::from_secs(7));
    assert_eq!(delay.percentage.unwrap().value, 100.0);
    let Spec::VirtualService(vs) = &res[1].spec else {
        panic!()
    };
    let abort = vs.http[0].fault.as_ref().unwrap().abort.as_ref().unwrap();
    assert_eq!(abort.http_status, Some(500));
    assert_eq!(abort.percentage.unwrap().value, 100.0);
}

#[test]
fn reviews_50_50_and_timeout_retries() {
    let res = load_ok(
        r#"
apiVersion: networking.istio.io/v1alpha3
kind: VirtualService
metadata:
  name: reviews
spec:
  hosts:
    - reviews
  http:
  - route:
    - destination:
        host: reviews
        subset: v1
      weight: 50
    - destination:
        host: reviews
        subset: v3
      weight: 50
    timeout: 0.5s
    retries:
      attempts: 3
      perTryTimeout: 2s
      retryOn: gateway-error,connect-failure,refused-stream,503
"#,
    );
    let Spec::VirtualService(vs) = &res[0].spec else {
        panic!()
    };
    let weights: Vec<i32> = vs.http[0].route.iter().map(|r| r.weight).collect();
    assert_eq!(weights, [50, 50]);
    assert_eq!(
        vs.http[0].timeout.unwrap().get(),
        StdDuration::from_millis(500)
    );
    assert_eq!(vs.http[0].retries.as_ref().unwrap().attempts, 3);
}

#[test]
fn httpbin_circuit_breaker() {
    let res = load_ok(
        r#"
apiVersion: networking.istio.io/v1alpha3
kind: DestinationRule
metadata:
  name: httpbin
spec:
  host: httpbin
  trafficPolicy:
    connectionPool:
      tcp:
        maxConnections: 1
      http:
        http1MaxPendingRequests: 1
        maxRequestsPerConnection: 1
    outlierDetection:
      consecutive5xxErrors: 1
      interval: 1s
      baseEjectionTime: 3m
      maxEjectionPercent: 100
"#,
    );
    let Spec::DestinationRule(dr) = &res[0].spec else {
        panic!()
    };
    let tp = dr.traffic_policy.as_ref().unwrap();
    let pool = tp.connection_pool.as_ref().unwrap();
    assert_eq!(pool.tcp.as_ref().unwrap().max_connections, 1);
    assert_eq!(pool.http.as_ref().unwrap().http1_max_pending_requests, 1);
    assert_eq!(pool.http.as_ref().unwrap().max_requests_per_connection, 1);
    let od = tp.outlier_detection.as_ref().unwrap();
    assert_eq!(od.consecutive_5xx_errors, Some(1));
    assert_eq!(
        od.base_ejection_time.unwrap().get(),
        StdDuration::from_secs(180)
    );
    assert_eq!(od.max_ejection_percent, 100);
}

#[test]
fn tcp_echo_gateway_dr_vs() {
    let res = load_ok(
        r#"
apiVersion: networking.istio.io/v1alpha3
kind: Gateway
metadata:
  name: tcp-echo-gateway
spec:
  selector:
    istio: ingressgateway
  servers:
  - port:
      number: 31400
      name: tcp
      protocol: TCP
    hosts:
    - "*"
---
apiVersion: networking.istio.io/v1alpha3
kind: DestinationRule
metadata:
  name: tcp-echo-destination
spec:
  host: tcp-echo
  subsets:
  - name: v1
    labels:
      version: v1
  - name: v2
    labels:
      version: v2
---
apiVersion: networking.istio.io/v1alpha3
kind: VirtualService
metadata:
  name: tcp-echo
spec:
  hosts:
  - "*"
  gateways:
  - tcp-echo-gateway
  tcp:
  - match:
    - port: 31400
    route:
    - destination:
        host: tcp-echo
        port:
          number: 9000
        subset: v1
      weight: 80
    - destination:
        host: tcp-echo
        port:
          number: 9000
        subset: v2
      weight: 20
"#,
    );
    assert_eq!(res.len(), 3);
    let Spec::Gateway(gw) = &res[0].spec else {
        panic!()
    };
    assert_eq!(gw.selector["istio"], "ingressgateway");
    assert_eq!(gw.servers[0].port.as_ref().unwrap().number, 31400);
    let Spec::VirtualService(vs) = &res[2].spec else {
        panic!()
    };
    assert_eq!(vs.tcp[0].match_[0].port, 31400);
    assert_eq!(vs.tcp[0].route[1].weight, 20);
    assert_eq!(
        vs.tcp[0].route[0]
            .destination
            .as_ref()
            .unwrap()
            .port
            .as_ref()
            .unwrap()
            .number,
        9000
    );
}

#[test]
fn peer_authentication_strict_and_port_level() {
    let res = load_ok(
        r#"
apiVersion: security.istio.io/v1beta1
kind: PeerAuthentication
metadata:
  name: default
  namespace: foo
spec:
  mtls:
    mode: STRICT
---
apiVersion: security.istio.io/v1beta1
kind: PeerAuthentication
metadata:
  name: finance
  namespace: foo
spec:
  selector:
    matchLabels:
      app: finance
  mtls:
    mode: STRICT
  portLevelMtls:
    8080:
      mode: DISABLE
"#,
    );
    let Spec::PeerAuthentication(pa) = &res[0].spec else {
        panic!()
    };
    assert_eq!(pa.mtls.as_ref().unwrap().mode, MtlsMode::Strict);
    assert_eq!(res[0].meta.namespace, "foo");
    let Spec::PeerAuthentication(pa) = &res[1].spec else {
        panic!()
    };
    assert_eq!(pa.port_level_mtls[&8080].mode, MtlsMode::Disable);
    assert_eq!(pa.selector.as_ref().unwrap().match_labels["app"], "finance");
    assert!(crate::validate(&res).is_empty());
}

#[test]
fn authorization_policies() {
    let res = load_ok(
        r#"
apiVersion: security.istio.io/v1beta1
kind: AuthorizationPolicy
metadata:
  name: allow-nothing
  namespace: default
spec:
  {}
---
apiVersion: security.istio.io/v1beta1
kind: AuthorizationPolicy
metadata:
  name: "productpage-viewer"
  namespace: default
spec:
  selector:
    matchLabels:
      app: productpage
  action: ALLOW
  rules:
  - to:
    - operation:
        methods: ["GET"]
---
apiVersion: security.istio.io/v1beta1
kind: AuthorizationPolicy
metadata:
  name: details-viewer
  namespace: default
spec:
  selector:
    matchLabels:
      app: details
  action: ALLOW
  rules:
  - from:
    - source:
        principals: ["cluster.local/ns/default/sa/bookinfo-productpage"]
    to:
    - operation:
        methods: ["GET"]
---
apiVersion: security.istio.io/v1beta1
kind: AuthorizationPolicy
metadata:
  name: tcp-policy
  namespace: foo
spec:
  selector:
    matchLabels:
      app: tcp-echo
  action: DENY
  rules:
  - to:
    - operation:
        methods: ["GET"]
        ports: ["9000"]
    when:
    - key: source.ip
      values: ["10.0.0.0/8", "192.168.1.1"]
    - key: request.headers[x-token]
      notValues: ["guest"]
"#,
    );
    assert_eq!(res.len(), 4);
    let Spec::AuthorizationPolicy(nothing) = &res[0].spec else {
        panic!()
    };
    assert!(nothing.rules.is_empty() && nothing.selector.is_none());
    assert_eq!(nothing.action, AuthorizationAction::Allow);
    let Spec::AuthorizationPolicy(viewer) = &res[1].spec else {
        panic!()
    };
    assert_eq!(
        viewer.rules[0].to[0].operation.as_ref().unwrap().methods,
        ["GET"]
    );
    let Spec::AuthorizationPolicy(details) = &res[2].spec else {
        panic!()
    };
    let src = details.rules[0].from[0].source.as_ref().unwrap();
    assert_eq!(
        src.principals,
        ["cluster.local/ns/default/sa/bookinfo-productpage"]
    );
    let Spec::AuthorizationPolicy(tcp) = &res[3].spec else {
        panic!()
    };
    assert_eq!(tcp.action, AuthorizationAction::Deny);
    assert_eq!(tcp.rules[0].when[1].not_values, ["guest"]);
}

#[test]
fn custom_authorization_with_provider() {
    let res = load_ok(
        r#"
apiVersion: security.istio.io/v1beta1
kind: AuthorizationPolicy
metadata:
  name: ext-authz
  namespace: foo
spec:
  selector:
    matchLabels:
      app: httpbin
  action: CUSTOM
  provider:
    name: sample-ext-authz-grpc
  rules:
  - to:
    - operation:
        paths: ["/headers"]
"#,
    );
    let Spec::AuthorizationPolicy(ap) = &res[0].spec else {
        panic!()
    };
    assert_eq!(ap.provider.as_ref().unwrap().name, "sample-ext-authz-grpc");
}

#[test]
fn request_authentication_with_jwks() {
    let res = load_ok(
        r#"
apiVersion: security.istio.io/v1beta1
kind: RequestAuthentication
metadata:
  name: "jwt-example"
  namespace: foo
spec:
  selector:
    matchLabels:
      app: httpbin
  jwtRules:
  - issuer: "testing@secure.istio.io"
    jwksUri: "https://raw.githubusercontent.com/istio/istio/release-1.14/security/tools/jwt/samples/jwks.json"
  - issuer: "inline@secure.istio.io"
    jwks: '{"keys":[{"e":"AQAB","kid":"DHFbpoIUqrY8t2zpA2qXfCmr5VO5ZEr4RzHU_-envvQ","kty":"RSA","n":"xAE7eB6qugXyCAG3yhh7pkDkT65pHymX-P7KfIupjf59vsdo91bSP9C8H07pSAGQO1MV_xFj9VswgsCg4R6otmg5PV2He95lZdHtOcU5DXIg_pbhLdKXbi66GlVeK6ABZOUW3WYtnNHD-91gVuoeJT_DwtGGcp4ignkgXfkiEm4sw-4sfb4qdt5oLbyVpmW6x9cfa7vs2WTfURiCrBoUqgBo_-4WTiULmmHSGZHOjzwa8WtrtOQGsAFjIbno85jp6MnGGGZPYZbDAa_b3y5u-YpW7ypZrvD8BgtKVjgtQgZhLAGezMt0ua3DRrWnKqTZ0BJ_EyxOGuHJrLsn00fnMQ"}]}'
    fromHeaders:
    - name: x-jwt-assertion
      prefix: "Bearer "
    forwardOriginalToken: true
"#,
    );
    let Spec::RequestAuthentication(ra) = &res[0].spec else {
        panic!()
    };
    assert_eq!(ra.jwt_rules.len(), 2);
    assert!(ra.jwt_rules[0].jwks_uri.ends_with("jwks.json"));
    assert!(ra.jwt_rules[1].jwks.contains("\"kty\":\"RSA\""));
    assert_eq!(ra.jwt_rules[1].from_headers[0].prefix, "Bearer ");
    assert!(ra.jwt_rules[1].forward_original_token);
}

#[test]
fn telemetry_otel_access_logging() {
    let res = load_ok(
        r#"
apiVersion: telemetry.istio.io/v1alpha1
kind: Telemetry
metadata:
  name: sleep-logging
spec:
  selector:
    matchLabels:
      app: sleep
  accessLogging:
  - providers:
    - name: otel
    match:
      mode: CLIENT
    filter:
      expression: response.code >= 400
  tracing:
  - randomSamplingPercentage: 10.5
    customTags:
      env:
        literal:
          value: prod
  metrics:
  - providers:
    - name: prometheus
    overrides:
    - match:
        metric: REQUEST_COUNT
        mode: SERVER
      tagOverrides:
        request_host:
          value: request.host
        response_flags:
          operation: REMOVE
"#,
    );
    let Spec::Telemetry(t) = &res[0].spec else {
        panic!()
    };
    let al = &t.access_logging[0];
    assert_eq!(al.providers[0].name, "otel");
    assert_eq!(al.match_.as_ref().unwrap().mode, WorkloadMode::Client);
    assert_eq!(
        al.filter.as_ref().unwrap().expression,
        "response.code >= 400"
    );
    assert_eq!(t.tracing[0].random_sampling_percentage, Some(10.5));
    assert_eq!(t.metrics[0].overrides[0].tag_overrides.len(), 2);
}

#[test]
fn service_entry_mesh_internal_static_with_selector() {
    let res = load_ok(
        r#"
apiVersion: networking.istio.io/v1alpha3
kind: ServiceEntry
metadata:
  name: details-svc
spec:
  hosts:
  - details.bookinfo.com
  location: MESH_INTERNAL
  ports:
  - number: 80
    name: http
    protocol: HTTP
    targetPort: 8080
  resolution: STATIC
  workloadSelector:
    labels:
      app: details-legacy
---
apiVersion: networking.istio.io/v1alpha3
kind: ServiceEntry
metadata:
  name: edition-cnn-com
spec:
  hosts:
  - edition.cnn.com
  ports:
  - number: 80
    name: http-port
    protocol: HTTP
    targetPort: 443
  - number: 443
    name: https-port
    protocol: HTTPS
  resolution: DNS
"#,
    );
    let Spec::ServiceEntry(se) = &res[0].spec else {
        panic!()
    };
    assert_eq!(se.location, Location::MeshInternal);
    assert_eq!(se.resolution, Resolution::Static);
    assert_eq!(se.ports[0].target_port, 8080);
    assert_eq!(
        se.workload_selector.as_ref().unwrap().labels["app"],
        "details-legacy"
    );
    let Spec::ServiceEntry(cnn) = &res[1].spec else {
        panic!()
    };
    assert_eq!(cnn.location, Location::MeshExternal);
    assert_eq!(cnn.resolution, Resolution::Dns);
}

#[test]
fn workload_entry_vm() {
    let res = load_ok(
        r#"
apiVersion: networking.istio.io/v1beta1
kind: WorkloadEntry
metadata:
  name: details-svc
  namespace: bookinfo
  uid: 2b1a3b4c-1111-2222-3333-444455556666
  resourceVersion: "12345"
  creationTimestamp: "2022-05-24T00:00:00Z"
  generation: 3
spec:
  serviceAccount: details-legacy
  address: 2.2.2.2
  labels:
    app: details-legacy
    instance-id: vm1
  locality: us-central1/us-central1-a
  network: vm-us-east
  ports:
    http: 8080
status:
  conditions:
  - type: Healthy
    status: "True"
"#,
    );
    let Spec::WorkloadEntry(we) = &res[0].spec else {
        panic!()
    };
    assert_eq!(we.address, "2.2.2.2");
    assert_eq!(we.service_account, "details-legacy");
    assert_eq!(we.locality, "us-central1/us-central1-a");
    assert_eq!(we.network, "vm-us-east");
    assert_eq!(we.ports["http"], 8080);
    assert_eq!(res[0].meta.namespace, "bookinfo");
}

#[test]
fn sidecar_and_proxy_config() {
    let res = load_ok(
        r#"
apiVersion: networking.istio.io/v1beta1
kind: Sidecar
metadata:
  name: default
  namespace: bookinfo
spec:
  egress:
  - hosts:
    - "./*"
    - "istio-system/*"
  outboundTrafficPolicy:
    mode: REGISTRY_ONLY
---
apiVersion: networking.istio.io/v1beta1
kind: ProxyConfig
metadata:
  name: per-workload
  namespace: bookinfo
spec:
  selector:
    matchLabels:
      app: ratings
  concurrency: 0
  environmentVariables:
    ISTIO_META_DNS_CAPTURE: "true"
"#,
    );
    let Spec::Sidecar(sc) = &res[0].spec else {
        panic!()
    };
    assert_eq!(sc.egress[0].hosts, ["./*", "istio-system/*"]);
    let Spec::ProxyConfig(pc) = &res[1].spec else {
        panic!()
    };
    assert_eq!(pc.concurrency, Some(0));
}

#[test]
fn mesh_config_tls13_and_otel_provider() {
    let yaml = r#"
# mesh config (istio ConfigMap key "mesh")
accessLogFile: /dev/stdout
meshMTLS:
  minProtocolVersion: TLSV1_3
extensionProviders:
- name: otel
  envoyOtelAls:
    service: opentelemetry-collector.istio-system.svc.cluster.local
    port: 4317
- name: envoy
  envoyFileAccessLog:
    path: /dev/stderr
defaultProviders:
  accessLogging: [envoy, otel]
defaultConfig:
  holdApplicationUntilProxyStarts: true
  proxyMetadata:
    ISTIO_META_DNS_CAPTURE: "true"
trustDomainAliases: [old.example, cluster.local2]
"#;
    let mesh = parse_mesh_config(yaml, Path::new("mesh.yaml")).unwrap();
    assert_eq!(mesh.min_tls_version(), MeshTlsProtocol::TlsV1_3);
    assert_eq!(mesh.access_log_file, "/dev/stdout");
    let otel = mesh.extension_provider("otel").unwrap();
    let Provider::EnvoyOtelAls(o) = &otel.provider else {
        panic!("{otel:?}")
    };
    assert_eq!(o.port, 4317);
    assert_eq!(o.effective_log_name(), "otel_envoy_accesslog");
    // Built-ins are kept and user entries override them by name.
    assert!(mesh.extension_provider("prometheus").is_some());
    let Provider::EnvoyFileAccessLog(f) = &mesh.extension_provider("envoy").unwrap().provider
    else {
        panic!()
    };
    assert_eq!(f.path, "/dev/stderr");
    assert_eq!(mesh.extension_providers.len(), 4);
    assert_eq!(mesh.default_providers.access_logging, ["envoy", "otel"]);
    // defaultConfig overlays the proxy defaults.
    assert!(mesh.default_config.hold_application());
    assert_eq!(
        mesh.default_config.termination_drain_duration.get(),
        StdDuration::from_secs(5)
    );
    assert_eq!(
        mesh.default_config.discovery_address,
        "istiod.istio-system.svc:15012"
    );
    assert_eq!(
        mesh.default_config.proxy_metadata["ISTIO_META_DNS_CAPTURE"],
        "true"
    );
    // Untouched fields keep Istio defaults.
    assert_eq!(mesh.trust_domain, "cluster.local");
    assert_eq!(mesh.root_namespace, "istio-system");
    assert!(mesh.enable_auto_mtls);
    assert_eq!(mesh.connect_timeout.get(), StdDuration::from_secs(10));
    assert_eq!(
        mesh.trust_domains(),
        ["cluster.local", "cluster.local2", "old.example"]
    );
}

#[test]
fn mesh_config_json_roundtrip() {
    let mesh = parse_mesh_config(
        "extensionProviders:\n- name: authz\n  envoyExtAuthzGrpc: {service: ext-authz.foo.svc.cluster.local, port: 9000, timeout: 0.5s}\n",
        Path::new("mesh.yaml"),
    )
    .unwrap();
    let json = serde_json::to_value(&mesh).unwrap();
    assert_eq!(json["extensionProviders"][3]["name"], "authz");
    assert_eq!(
        json["extensionProviders"][3]["envoyExtAuthzGrpc"]["timeout"],
        "0.500s"
    );
    assert_eq!(json["meshMTLS"], serde_json::Value::Null);
    assert_eq!(json["defaultConfig"]["terminationDrainDuration"], "5s");
    let back: crate::mesh::MeshConfig = serde_json::from_value(json).unwrap();
    assert_eq!(back, mesh);
}

#[test]
fn empty_mesh_config_is_default() {
    let mesh = parse_mesh_config("", Path::new("mesh.yaml")).unwrap();
    assert_eq!(mesh, crate::mesh::MeshConfig::default());
    let mesh = parse_mesh_config("# only a comment\n", Path::new("mesh.yaml")).unwrap();
    assert_eq!(
        mesh.outbound_mode(),
        crate::networking::OutboundTrafficMode::AllowAny
    );
    assert!(mesh.locality_lb_enabled());
    assert_eq!(mesh.protocol_detection_timeout(), None);
    assert_eq!(mesh.default_config.effective_concurrency(), 2);
}

#[test]
fn dr_tls_and_json_roundtrip() {
    let res = load_ok(
        r#"
apiVersion: networking.istio.io/v1alpha3
kind: DestinationRule
metadata:
  name: cnn
  labels: {team: web}
  annotations: {note: "tls origination"}
spec:
  host: edition.cnn.com
  trafficPolicy:
    portLevelSettings:
    - port:
        number: 80
      tls:
        mode: SIMPLE
"#,
    );
    let Spec::DestinationRule(dr) = &res[0].spec else {
        panic!()
    };
    let pls = &dr.traffic_policy.as_ref().unwrap().port_level_settings[0];
    assert_eq!(pls.tls.as_ref().unwrap().mode, ClientTlsMode::Simple);
    assert_eq!(res[0].meta.labels["team"], "web");
    assert_eq!(res[0].meta.annotations["note"], "tls origination");
    // The spec serializes back to Istio's JSON field names and parses again.
    let json = serde_json::to_value(dr).unwrap();
    assert_eq!(
        json["trafficPolicy"]["portLevelSettings"][0]["tls"]["mode"],
        "SIMPLE"
    );
    let back: crate::networking::DestinationRule = serde_json::from_value(json).unwrap();
    assert_eq!(&back, dr);
}

#[test]
fn empty_documents_are_skipped() {
    let res = load_ok(
        "---\n# nothing here\n---\n\n---\napiVersion: security.istio.io/v1beta1\nkind: PeerAuthentication\nmetadata:\n  name: default\nspec:\n  mtls:\n    mode: PERMISSIVE\n---\n",
    );
    assert_eq!(res.len(), 1);
    assert_eq!(res[0].source.line, 6);
    assert_eq!(res[0].kind().to_string(), "PeerAuthentication");
    let json = serde_json::to_value(&res[0]).unwrap();
    assert_eq!(json["kind"], "PeerAuthentication");
    assert_eq!(json["apiVersion"], "security.istio.io/v1beta1");
    assert_eq!(json["metadata"]["namespace"], "default");
    assert_eq!(json["spec"]["mtls"]["mode"], "PERMISSIVE");
    assert_eq!(json["source"]["line"], 6);
}
