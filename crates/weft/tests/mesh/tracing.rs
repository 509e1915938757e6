//! istio.io's distributed tracing task on bookinfo, against a real Jaeger (v1.75.0, built by
//! scripts/peers) receiving Zipkin spans: with the Telemetry API's `zipkin` provider at 100%,
//! one request to productpage is one trace with a CLIENT and a SERVER span for every hop
//! (client → productpage → details and reviews → ratings), each hop the child of the one before;
//! at 0% no new trace is made while the headers still propagate. Then the Telemetry switches
//! live to an `opentelemetry` provider (OTLP over gRPC to Jaeger's port 4317, W3C
//! `traceparent` propagation) and the same full trace arrives that way.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde_json::Value;

use crate::bookinfo::bookinfo_mesh_with;
use crate::netns::{Mesh, wait_for};

const JAEGER: u8 = 30;

const MESH_CONFIG: &str = "extensionProviders:\n- name: zipkin\n  zipkin: {service: zipkin.istio-system.svc.cluster.local, port: 9411}\n- name: otel-tracing\n  opentelemetry: {service: jaeger-collector.istio-system.svc.cluster.local, port: 4317}\n";

fn jaeger_bin() -> String {
    let path = std::env::var("WEFT_JAEGER").unwrap_or_default();
    assert!(
        !path.is_empty() && std::path::Path::new(&path).exists(),
        "WEFT_JAEGER={path:?}: run the tests with ./scripts/test, which builds Jaeger \
         (scripts/peers, needs Go)"
    );
    path
}

/// The mesh-wide Telemetry: `provider` at `sampling`%, with a literal tag `test: <provider>`.
fn telemetry(provider: &str, sampling: u32) -> String {
    format!(
        "apiVersion: telemetry.istio.io/v1alpha1\nkind: Telemetry\nmetadata: {{name: mesh-default, namespace: istio-system}}\nspec:\n  tracing:\n  - providers: [{{name: {provider}}}]\n    randomSamplingPercentage: {sampling}\n    customTags:\n      test: {{literal: {{value: {provider}}}}}\n"
    )
}

/// Jaeger's traces of a service (its query API).
fn traces(mesh: &Mesh, service: &str) -> Vec<Value> {
    let url = format!(
        "http://{}:16686/api/traces?service={service}&limit=1000&lookback=1h",
        mesh.ip(JAEGER)
    );
    let out = mesh.curl_from(mesh.ns("client"), &["-s", "-m", "5", &url]);
    serde_json::from_slice::<Value>(&out.stdout)
        .ok()
        .and_then(|v| v["data"].as_array().cloned())
        .unwrap_or_default()
}

/// A span as (service, kind, span id, parent span id).
fn spans(trace: &Value) -> Vec<(String, String, String, Option<String>)> {
    let processes = &trace["processes"];
    trace["spans"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| {
            let service = processes[s["processID"].as_str().unwrap_or_default()]["serviceName"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            let kind = s["tags"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|t| t["key"] == "span.kind")
                .and_then(|t| t["value"].as_str())
                .unwrap_or_default()
                .to_string();
            let parent = s["references"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|r| r["refType"] == "CHILD_OF")
                .and_then(|r| r["spanID"].as_str())
                .map(str::to_owned);
            (
                service,
                kind,
                s["spanID"].as_str().unwrap_or_default().to_string(),
                parent,
            )
        })
        .collect()
}

fn tag<'a>(trace: &'a Value, key: &str) -> Vec<&'a str> {
    trace["spans"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|s| s["tags"].as_array().into_iter().flatten())
        .filter(|t| t["key"] == key)
        .filter_map(|t| t["value"].as_str())
        .collect()
}

/// The product page's status code, loaded from the client pod.
fn page(mesh: &Mesh) -> u16 {
    crate::bookinfo::page(mesh, None).code
}

/// Loads the page until Jaeger holds a trace through every service whose spans carry the tag
/// `test: <provider>` (reviews v1 does not call ratings, so some pages do not reach it).
fn full_trace(mesh: &Mesh, provider: &str) -> Value {
    let want: BTreeSet<&str> = [
        "client.default",
        "productpage.default",
        "details.default",
        "reviews.default",
        "ratings.default",
    ]
    .into();
    let services = format!("http://{}:16686/api/services", mesh.ip(JAEGER));
    let diagnostics = || {
        let stats = mesh
            .stats("productpage")
            .lines()
            .filter(|l| l.starts_with("tracing."))
            .collect::<Vec<_>>()
            .join("; ");
        let known = mesh.curl_from(mesh.ns("client"), &["-s", "-m", "2", &services]);
        format!(
            "productpage sidecar: [{stats}]; Jaeger's services: {}",
            String::from_utf8_lossy(&known.stdout)
        )
    };
    let mut found: Option<Value> = None;
    wait_for(
        Duration::from_secs(60),
        &format!("a {provider} trace through every service"),
        || {
            assert_eq!(page(mesh), 200);
            std::thread::sleep(Duration::from_millis(1500));
            found = traces(mesh, "productpage.default").into_iter().find(|t| {
                let services: BTreeSet<String> = spans(t).into_iter().map(|s| s.0).collect();
                want.iter().all(|w| services.contains(*w))
                    && tag(t, "test").iter().all(|v| *v == provider)
            });
            if found.is_none() {
                eprintln!("no full {provider} trace yet: {}", diagnostics());
            }
            found.is_some()
        },
    );
    found.unwrap_or_default()
}

/// A CLIENT and a SERVER span per hop, each server span the child of a client span.
fn assert_hops(trace: &Value) {
    let spans = spans(trace);
    let kinds: BTreeMap<(String, String), usize> =
        spans
            .iter()
            .fold(BTreeMap::new(), |mut m, (svc, kind, _, _)| {
                *m.entry((svc.clone(), kind.clone())).or_default() += 1;
                m
            });
    for (svc, kind) in [
        ("client.default", "client"),
        ("productpage.default", "server"),
        ("productpage.default", "client"),
        ("details.default", "server"),
        ("reviews.default", "server"),
        ("reviews.default", "client"),
        ("ratings.default", "server"),
    ] {
        assert!(
            kinds.contains_key(&(svc.to_string(), kind.to_string())),
            "no {kind} span of {svc}: {kinds:?}"
        );
    }
    let by_id: BTreeMap<&str, (&str, &str)> = spans
        .iter()
        .map(|(svc, kind, id, _)| (id.as_str(), (svc.as_str(), kind.as_str())))
        .collect();
    for (svc, kind, _, parent) in &spans {
        if kind == "server" {
            let p = parent.as_deref().and_then(|p| by_id.get(p));
            assert!(
                matches!(p, Some((_, "client"))),
                "server span of {svc} is not a client span's child: {parent:?}"
            );
        }
    }
    assert!(
        tag(trace, "http.status_code").contains(&"200")
            && tag(trace, "upstream_cluster")
                .contains(&"outbound|9080||details.default.svc.cluster.local"),
        "span tags: {trace}"
    );
}

#[test]
fn istio_distributed_tracing_on_bookinfo_with_jaeger() {
    crate::netns::require_root();
    let jaeger = jaeger_bin();
    let mut mesh = bookinfo_mesh_with(MESH_CONFIG);
    let id = mesh.id;
    mesh.write_config(
        "zipkin.yaml",
        &format!(
            "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: zipkin, namespace: istio-system}}\nspec:\n  hosts: [zipkin.istio-system.svc.cluster.local]\n  addresses: [{vip}]\n  location: MESH_INTERNAL\n  resolution: STATIC\n  ports:\n  - {{number: 9411, name: http-zipkin, protocol: HTTP}}\n  workloadSelector: {{labels: {{app: jaeger}}}}\n---\napiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: jaeger-collector, namespace: istio-system}}\nspec:\n  hosts: [jaeger-collector.istio-system.svc.cluster.local]\n  addresses: [{vip2}]\n  location: MESH_INTERNAL\n  resolution: STATIC\n  ports:\n  - {{number: 4317, name: grpc-otlp, protocol: GRPC}}\n  workloadSelector: {{labels: {{app: jaeger}}}}\n---\napiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata:\n  name: jaeger\n  namespace: istio-system\n  annotations: {{sidecar.istio.io/inject: \"false\"}}\nspec:\n  address: {ip}\n  labels: {{app: jaeger}}\n",
            vip = Mesh::vip(id, 30),
            vip2 = Mesh::vip(id, 31),
            ip = mesh.ip(JAEGER)
        ),
    );
    mesh.add_pod("jaeger", JAEGER, None);
    let run = format!("JAEGER_LISTEN_HOST=0.0.0.0 exec {jaeger}");
    mesh.spawn("jaeger", "app", &["sh", "-c", &run]);
    let services = format!("http://{}:16686/api/services", mesh.ip(JAEGER));
    wait_for(Duration::from_secs(30), "Jaeger's query API", || {
        mesh.curl_from(mesh.ns("client"), &["-sf", "-m", "2", &services])
            .status
            .success()
    });

    // Zipkin at 100%: a full trace, B3 propagated.
    mesh.write_config("telemetry.yaml", &telemetry("zipkin", 100));
    mesh.wait_applied("telemetry", "mesh-default.istio-system");
    let trace = full_trace(&mesh, "zipkin");
    assert_hops(&trace);

    // 0%: no new trace, while the pages still load.
    mesh.write_config("telemetry.yaml", &telemetry("zipkin", 0));
    mesh.wait_applied("telemetry", "mesh-default.istio-system");
    std::thread::sleep(Duration::from_millis(1500));
    let before = traces(&mesh, "productpage.default").len();
    for _ in 0..10 {
        assert_eq!(page(&mesh), 200);
    }
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(traces(&mesh, "productpage.default").len(), before);

    // Live switch to OpenTelemetry at 100% while pages load: none fails, and a full trace
    // arrives over OTLP, each hop's span the child of the one before through `traceparent`.
    let loading = std::sync::atomic::AtomicBool::new(true);
    let codes = std::thread::scope(|s| {
        let load = s.spawn(|| {
            let mut codes = Vec::new();
            while loading.load(std::sync::atomic::Ordering::Relaxed) {
                codes.push(page(&mesh));
            }
            codes
        });
        mesh.write_config("telemetry.yaml", &telemetry("otel-tracing", 100));
        mesh.wait_applied("telemetry", "mesh-default.istio-system");
        std::thread::sleep(Duration::from_millis(500));
        loading.store(false, std::sync::atomic::Ordering::Relaxed);
        load.join().unwrap_or_default()
    });
    assert!(
        !codes.is_empty() && codes.iter().all(|c| *c == 200),
        "pages during the switch: {codes:?}"
    );
    let trace = full_trace(&mesh, "otel-tracing");
    assert_hops(&trace);
    let stats = mesh.stats("productpage");
    assert!(
        stats
            .lines()
            .any(|l| l.starts_with("tracing.opentelemetry.spans_sent: ") && !l.ends_with(" 0")),
        "{stats}"
    );
}
