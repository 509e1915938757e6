//! Istio's merge of access logging (root → namespace → workload, per direction), the problems
//! reported, and the Envoy access loggers the providers become.

use std::collections::BTreeMap;
use std::path::Path;

use super::*;
use crate::registry::Registry;

fn resources(yaml: &str) -> Vec<Resource> {
    let (rs, problems) = weft_api::parse_documents(yaml, Path::new("telemetry.yaml"));
    assert!(problems.is_empty(), "{problems:?}");
    rs
}

fn mesh(yaml: &str) -> MeshConfig {
    weft_api::parse_mesh_config(yaml, Path::new("mesh.yaml")).expect("mesh config")
}

const MESH: &str = r#"
extensionProviders:
- name: otel
  envoyOtelAls:
    service: opentelemetry-collector.istio-system.svc.cluster.local
    port: 4317
- name: json-file
  envoyFileAccessLog:
    path: /var/log/access.json
    logFormat:
      labels: {code: "%RESPONSE_CODE%"}
- name: zipkin
  zipkin: {service: zipkin.istio-system.svc.cluster.local, port: 9411}
"#;

const COLLECTOR: &str = r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: collector, namespace: istio-system}
spec:
  hosts: [opentelemetry-collector.istio-system.svc.cluster.local]
  ports: [{number: 4317, name: grpc-otlp, protocol: GRPC}]
  resolution: DNS
"#;

fn index(yaml: &str, mesh_yaml: &str) -> Index {
    let rs = resources(&format!("{COLLECTOR}---\n{yaml}"));
    let registry = Registry::build(&rs, crate::push::DOMAIN_SUFFIX);
    Index::build(&rs, &mesh(mesh_yaml), &registry)
}

fn labels(app: &str) -> BTreeMap<String, String> {
    BTreeMap::from([("app".to_string(), app.to_string())])
}

fn names(l: Option<Logging>) -> Option<Vec<String>> {
    l.map(|l| l.providers.into_iter().map(|p| p.name).collect())
}

const LAYERS: &str = r#"
apiVersion: telemetry.istio.io/v1alpha1
kind: Telemetry
metadata: {name: mesh-default, namespace: istio-system}
spec:
  accessLogging:
  - providers: [{name: envoy}]
---
apiVersion: telemetry.istio.io/v1alpha1
kind: Telemetry
metadata: {name: quiet, namespace: quiet}
spec:
  accessLogging:
  - disabled: true
---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: sleep-logging, namespace: default}
spec:
  selector:
    matchLabels: {app: sleep}
  accessLogging:
  - providers: [{name: otel}]
    match: {mode: CLIENT}
  - filter: {expression: "response.code >= 400"}
"#;

#[test]
fn access_logging_merges_root_namespace_and_workload_per_direction() {
    let i = index(LAYERS, MESH);
    assert!(i.problems().is_empty(), "{:?}", i.problems());
    // The mesh default applies to both directions.
    for mode in [Mode::Client, Mode::Server] {
        assert_eq!(
            names(i.access_logging("default", &labels("httpbin"), mode)),
            Some(vec!["envoy".to_string()])
        );
    }
    // `disabled` removes the inherited provider: logging is explicitly off.
    assert_eq!(
        names(i.access_logging("quiet", &labels("x"), Mode::Server)),
        Some(vec![])
    );
    // The workload's CLIENT rule replaces the providers in scope: otel on the client side;
    // the server side keeps nothing from the root (not in scope any more).
    let client = i.access_logging("default", &labels("sleep"), Mode::Client);
    assert_eq!(
        client.as_ref().map(|l| l.filter.clone()),
        Some(Some("response.code >= 400".into()))
    );
    assert_eq!(names(client), Some(vec!["otel".to_string()]));
    assert_eq!(
        names(i.access_logging("default", &labels("sleep"), Mode::Server)),
        Some(vec![])
    );
    // Outbound listeners are shared by the proxies with the same applicable resources.
    assert_eq!(
        i.client_key("default", &labels("httpbin")),
        "istio-system/mesh-default"
    );
    assert_eq!(
        i.client_key("default", &labels("sleep")),
        "istio-system/mesh-default,default/sleep-logging"
    );
}

#[test]
fn without_telemetry_the_legacy_settings_or_the_default_providers_apply() {
    let i = index("", MESH);
    assert_eq!(
        i.access_logging("default", &labels("a"), Mode::Client),
        None
    );
    let with_default = format!("{MESH}defaultProviders:\n  accessLogging: [json-file]\n");
    let i = index("", &with_default);
    assert_eq!(
        names(i.access_logging("default", &labels("a"), Mode::Server)),
        Some(vec!["json-file".to_string()])
    );
}

#[test]
fn unknown_and_unusable_providers_are_named() {
    let i = index(
        r#"
apiVersion: telemetry.istio.io/v1alpha1
kind: Telemetry
metadata: {name: bad, namespace: default}
spec:
  accessLogging:
  - providers: [{name: nope}, {name: zipkin}, {name: envoy}]
"#,
        MESH,
    );
    let text: Vec<String> = i.problems().iter().map(|p| p.to_string()).collect();
    assert_eq!(text.len(), 2, "{text:?}");
    assert!(
        text[0].contains("Telemetry default/bad")
            && text[0].contains("spec.accessLogging[0].providers[0].name")
            && text[0].contains("unknown provider \"nope\""),
        "{text:?}"
    );
    assert!(
        text[1].contains("providers[1].name") && text[1].contains("not an access-log provider"),
        "{text:?}"
    );
    // The usable one still logs.
    assert_eq!(
        names(i.access_logging("default", &labels("a"), Mode::Client)),
        Some(vec!["envoy".to_string()])
    );
    // An envoyOtelAls provider whose service is not in the registry is named too.
    let rs = resources(
        "apiVersion: telemetry.istio.io/v1alpha1\nkind: Telemetry\nmetadata: {name: t, namespace: default}\nspec:\n  accessLogging:\n  - providers: [{name: otel}]\n",
    );
    let i = Index::build(&rs, &mesh(MESH), &Registry::default());
    let text = i.problems()[0].to_string();
    assert!(
        text.contains("envoyOtelAls") && text.contains("could not find service"),
        "{text}"
    );
}

#[test]
fn metric_overrides_merge_in_order_per_direction() {
    let i = index(
        r#"
apiVersion: telemetry.istio.io/v1alpha1
kind: Telemetry
metadata: {name: mesh-default, namespace: istio-system}
spec:
  metrics:
  - providers: [{name: prometheus}]
    overrides:
    - match: {metric: REQUEST_COUNT}
      tagOverrides:
        request_host: {value: request.host}
        response_flags: {operation: REMOVE}
---
apiVersion: telemetry.istio.io/v1alpha1
kind: Telemetry
metadata: {name: ns, namespace: default}
spec:
  metrics:
  - overrides:
    - match: {metric: REQUEST_DURATION, mode: SERVER}
      disabled: true
    - match: {metric: REQUEST_COUNT, mode: CLIENT}
      tagOverrides:
        response_flags: {value: response.flags}
    - match: {customMetric: my_metric}
      disabled: true
"#,
        MESH,
    );
    let json = |mode| {
        i.metric_overrides("default", &labels("a"), mode)
            .map(|s| serde_json::from_str::<serde_json::Value>(&s).unwrap())
    };
    assert_eq!(
        json(Mode::Server),
        Some(serde_json::json!({"metrics": [
            {"name": "request_duration_milliseconds", "drop": true},
            {"name": "requests_total", "dimensions": {"request_host": "request.host"},
             "tags_to_remove": ["response_flags"]},
        ]}))
    );
    // The namespace's CLIENT rule upserts the tag the mesh removed.
    assert_eq!(
        json(Mode::Client),
        Some(serde_json::json!({"metrics": [
            {"name": "requests_total",
             "dimensions": {"request_host": "request.host", "response_flags": "response.flags"}},
        ]}))
    );
    // Another namespace: only the mesh's.
    assert!(json(Mode::Client).is_some());
    assert_eq!(
        i.metric_overrides("other", &labels("a"), Mode::Server)
            .map(|s| s.contains("drop")),
        Some(false)
    );
    // Without Telemetry metrics, nothing.
    assert_eq!(
        index("", MESH).metric_overrides("default", &labels("a"), Mode::Client),
        None
    );
    // The custom metric is named.
    let text: Vec<String> = i.problems().iter().map(|p| p.to_string()).collect();
    assert!(
        text.iter().any(
            |t| t.contains("spec.metrics[0].overrides[2].match.customMetric")
                && t.contains("my_metric")
        ),
        "{text:?}"
    );
}

#[test]
fn tracing_fields_override_one_by_one() {
    let mesh_yaml = format!("{MESH}defaultProviders:\n  tracing: [zipkin]\n");
    let i = index(
        r#"
apiVersion: telemetry.istio.io/v1alpha1
kind: Telemetry
metadata: {name: mesh-default, namespace: istio-system}
spec:
  tracing:
  - randomSamplingPercentage: 10
    customTags: {a: {literal: {value: "1"}}}
---
apiVersion: telemetry.istio.io/v1alpha1
kind: Telemetry
metadata: {name: ns, namespace: default}
spec:
  tracing:
  - match: {mode: SERVER}
    randomSamplingPercentage: 100
  - match: {mode: CLIENT}
    disableSpanReporting: true
"#,
        &mesh_yaml,
    );
    let server = i.tracing("default", &labels("a"), Mode::Server).unwrap();
    assert_eq!(
        server.provider.as_deref(),
        Some("zipkin"),
        "the default provider"
    );
    assert_eq!(server.sampling, Some(100.0));
    assert!(!server.disable_span_reporting);
    assert_eq!(server.custom_tags.len(), 1, "kept from the mesh rule");
    let client = i.tracing("default", &labels("a"), Mode::Client).unwrap();
    assert_eq!(client.sampling, Some(10.0));
    assert!(client.disable_span_reporting);
    // Without any Telemetry tracing nor default provider: MeshConfig's legacy settings.
    assert_eq!(
        index("", MESH).tracing("default", &labels("a"), Mode::Client),
        None
    );
}
