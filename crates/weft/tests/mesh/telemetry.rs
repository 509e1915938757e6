//! istio.io's Telemetry API access-logging tasks end to end on sleep → httpbin: Envoy access
//! logs turned on mesh-wide by a Telemetry resource (both sidecars log the 418 in Istio's TEXT
//! format), WorkloadMode (a CLIENT rule logs on the client sidecar only, a SERVER rule on the
//! server only), a CEL filter (`response.code >= 400`), live changes without restarting
//! anything, and an unknown provider named in `/debug/config_errors` while logging goes on.

use std::time::Duration;

use crate::netns::{Mesh, wait_for};
use crate::security::{HTTPBIN_URL, curl, security_mesh};

/// Writes a Telemetry resource and waits until every sidecar runs it.
fn apply(mesh: &Mesh, file: &str, name: &str, yaml: &str) {
    mesh.write_config(file, yaml);
    mesh.wait_applied("telemetry", name);
}

fn telemetry(name: &str, namespace: &str, access_logging: &str) -> String {
    format!(
        "apiVersion: telemetry.istio.io/v1alpha1\nkind: Telemetry\nmetadata: {{name: {name}, namespace: {namespace}}}\nspec:\n  accessLogging:\n{access_logging}"
    )
}

/// `curl sleep → httpbin<path>` with a request id to find its log lines by; the status.
fn request(mesh: &Mesh, path: &str, id: &str) -> u16 {
    let url = format!("{HTTPBIN_URL}{path}");
    curl(mesh, "sleep", &["-H", &format!("x-request-id: {id}"), &url]).0
}

/// The access-log lines of a request id in a sidecar's output.
fn logged(mesh: &Mesh, pod: &str, id: &str) -> Vec<String> {
    mesh.log(&format!("proxy-{pod}.log"))
        .lines()
        .filter(|l| l.contains(&format!("\"{id}\"")))
        .map(str::to_owned)
        .collect()
}

/// For lines that must not appear: give both sidecars time to write what they would.
fn settle() {
    std::thread::sleep(Duration::from_millis(1000));
}

/// The lines of a request id once at least one is there.
fn wait_logged(mesh: &Mesh, pod: &str, id: &str) -> Vec<String> {
    wait_for(
        Duration::from_secs(10),
        &format!("{id} in {pod}'s access log"),
        || !logged(mesh, pod, id).is_empty(),
    );
    logged(mesh, pod, id)
}

#[test]
fn istio_access_logging_with_the_telemetry_api() {
    crate::netns::require_root();
    let mesh = security_mesh("");
    wait_for(Duration::from_secs(20), "httpbin through the mesh", || {
        request(&mesh, "/get", "warm-up") == 200
    });
    settle();
    assert!(
        logged(&mesh, "sleep", "warm-up").is_empty()
            && logged(&mesh, "httpbin", "warm-up").is_empty(),
        "no access log without accessLogFile or a Telemetry resource"
    );

    // The task: the built-in `envoy` provider mesh-wide (root namespace).
    apply(
        &mesh,
        "telemetry-mesh.yaml",
        "mesh-default.istio-system",
        &telemetry(
            "mesh-default",
            "istio-system",
            "  - providers: [{name: envoy}]\n",
        ),
    );
    assert_eq!(request(&mesh, "/status/418", "teapot-1"), 418);
    for pod in ["sleep", "httpbin"] {
        let lines = wait_logged(&mesh, pod, "teapot-1");
        assert_eq!(lines.len(), 1, "{pod}: {lines:?}");
        let line = &lines[0];
        assert!(
            line.starts_with('[')
                && line.contains("\"GET /status/418 HTTP/1.1\" 418 - via_upstream - \"-\" 0 ")
                && line.contains("\"httpbin:8000\""),
            "{pod}: not Istio's TEXT format: {line}"
        );
    }
    assert!(
        logged(&mesh, "sleep", "teapot-1")[0]
            .contains("outbound|8000||httpbin.default.svc.cluster.local")
    );
    assert!(logged(&mesh, "httpbin", "teapot-1")[0].contains("inbound|8000||"));

    // WorkloadMode, live (the mesh-wide rule, which covers both directions, is removed first:
    // as in istiod, a namespace's CLIENT rule leaves the mesh's rule in force on the server
    // side): CLIENT logs on sleep only, then SERVER on httpbin only.
    // (Waiting for the next resource covers the removal: the config that has it came later.)
    mesh.remove_config("telemetry-mesh.yaml");
    let mode = |m: &str| {
        telemetry(
            "ns-logging",
            "default",
            &format!("  - providers: [{{name: envoy}}]\n    match: {{mode: {m}}}\n"),
        )
    };
    apply(&mesh, "telemetry-ns.yaml", "ns-logging", &mode("CLIENT"));
    assert_eq!(request(&mesh, "/status/418", "client-only"), 418);
    assert_eq!(wait_logged(&mesh, "sleep", "client-only").len(), 1);
    settle();
    assert!(logged(&mesh, "httpbin", "client-only").is_empty());
    apply(&mesh, "telemetry-ns.yaml", "ns-logging", &mode("SERVER"));
    assert_eq!(request(&mesh, "/status/418", "server-only"), 418);
    assert_eq!(wait_logged(&mesh, "httpbin", "server-only").len(), 1);
    settle();
    assert!(logged(&mesh, "sleep", "server-only").is_empty());

    // A CEL filter: errors only.
    apply(
        &mesh,
        "telemetry-ns.yaml",
        "ns-logging",
        &telemetry(
            "ns-logging",
            "default",
            "  - providers: [{name: envoy}]\n    filter: {expression: \"response.code >= 400\"}\n",
        ),
    );
    assert_eq!(request(&mesh, "/status/418", "filtered-418"), 418);
    assert_eq!(request(&mesh, "/get", "filtered-200"), 200);
    // A later logged request: once it is written, so is anything before it.
    assert_eq!(request(&mesh, "/status/418", "filtered-marker"), 418);
    for pod in ["sleep", "httpbin"] {
        wait_logged(&mesh, pod, "filtered-marker");
        assert_eq!(logged(&mesh, pod, "filtered-418").len(), 1, "{pod}");
        assert!(logged(&mesh, pod, "filtered-200").is_empty(), "{pod}");
    }

    // An unknown provider is named with its resource and field; the known one keeps logging.
    apply(
        &mesh,
        "telemetry-ns.yaml",
        "ns-logging",
        &telemetry(
            "ns-logging",
            "default",
            "  - providers: [{name: envoy}, {name: nope}]\n",
        ),
    );
    let errors = mesh.debug("/debug/config_errors");
    assert!(
        errors.contains("Telemetry default/ns-logging")
            && errors.contains("spec.accessLogging[0].providers[1].name")
            && errors.contains("unknown provider \\\"nope\\\""),
        "{errors}"
    );
    assert_eq!(request(&mesh, "/get", "still-logged"), 200);
    assert_eq!(wait_logged(&mesh, "httpbin", "still-logged").len(), 1);

    // disabled: true turns it off for the namespace (the mesh default no longer applies).
    apply(
        &mesh,
        "telemetry-ns.yaml",
        "ns-logging",
        &telemetry("ns-logging", "default", "  - disabled: true\n"),
    );
    assert_eq!(request(&mesh, "/status/418", "disabled"), 418);
    settle();
    assert!(logged(&mesh, "sleep", "disabled").is_empty());
    assert!(logged(&mesh, "httpbin", "disabled").is_empty());
}

const COLLECTOR: u8 = 16;

/// The otel task's provider, with labels (attributes) beside Istio's default body.
const OTEL_MESH: &str = r#"extensionProviders:
- name: otel
  envoyOtelAls:
    service: opentelemetry-collector.istio-system.svc.cluster.local
    port: 4317
    logFormat:
      labels:
        status: "%RESPONSE_CODE%"
        upstream: "%UPSTREAM_CLUSTER%"
"#;

/// The real OpenTelemetry Collector (tools/otelcol, built by scripts/peers).
fn otelcol() -> String {
    let path = std::env::var("WEFT_OTELCOL").unwrap_or_default();
    assert!(
        !path.is_empty() && std::path::Path::new(&path).exists(),
        "WEFT_OTELCOL={path:?}: run the tests with ./scripts/test, which builds the \
         OpenTelemetry Collector (scripts/peers, needs Go)"
    );
    path
}

/// Starts the collector in its pod: OTLP gRPC on :4317, logs to `out` as OTLP JSON lines.
fn start_collector(mesh: &mut Mesh, out: &std::path::Path) {
    let config = mesh.dir.path().join("otelcol.yaml");
    std::fs::write(
        &config,
        format!(
            "receivers:\n  otlp:\n    protocols:\n      grpc:\n        endpoint: 0.0.0.0:4317\nexporters:\n  file:\n    path: {}\n    format: json\n    flush_interval: 100ms\nservice:\n  telemetry:\n    metrics:\n      level: none\n  pipelines:\n    logs:\n      receivers: [otlp]\n      exporters: [file]\n",
            out.display()
        ),
    )
    .expect("collector config");
    let bin = otelcol();
    let arg = format!("--config=file:{}", config.display());
    mesh.spawn("collector", "app", &[&bin, &arg]);
    let addr = mesh.ip(COLLECTOR);
    wait_for(Duration::from_secs(30), "the collector to listen", || {
        mesh.exec("sleep", &["nc", "-z", "-w", "1", &addr, "4317"])
            .status
            .success()
    });
}

/// The OTLP log records the collector wrote with this request id in their body.
fn exported(out: &std::path::Path, id: &str) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(out).unwrap_or_default();
    let mut records = Vec::new();
    for line in text.lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        for rl in v["resourceLogs"].as_array().into_iter().flatten() {
            for sl in rl["scopeLogs"].as_array().into_iter().flatten() {
                for r in sl["logRecords"].as_array().into_iter().flatten() {
                    if r["body"]["stringValue"]
                        .as_str()
                        .is_some_and(|b| b.contains(&format!("\"{id}\"")))
                    {
                        let mut r = r.clone();
                        r["resource"] = rl["resource"].clone();
                        records.push(r);
                    }
                }
            }
        }
    }
    records
}

fn attribute<'a>(v: &'a serde_json::Value, key: &str) -> Option<&'a str> {
    v["attributes"]
        .as_array()?
        .iter()
        .find(|kv| kv["key"] == key)?["value"]["stringValue"]
        .as_str()
}

#[test]
fn istio_opentelemetry_access_logging_to_a_real_collector() {
    crate::netns::require_root();
    let mut mesh = security_mesh(OTEL_MESH);
    let id = mesh.id;
    mesh.write_config(
        "collector.yaml",
        &format!(
            "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: opentelemetry-collector, namespace: istio-system}}\nspec:\n  hosts: [opentelemetry-collector.istio-system.svc.cluster.local]\n  addresses: [{vip}]\n  location: MESH_INTERNAL\n  resolution: STATIC\n  ports:\n  - {{number: 4317, name: grpc-otlp, protocol: GRPC}}\n  workloadSelector: {{labels: {{app: opentelemetry-collector}}}}\n---\napiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata:\n  name: opentelemetry-collector\n  namespace: istio-system\n  annotations: {{sidecar.istio.io/inject: \"false\"}}\nspec:\n  address: {ip}\n  labels: {{app: opentelemetry-collector}}\n",
            vip = Mesh::vip(id, 23),
            ip = mesh.ip(COLLECTOR)
        ),
    );
    mesh.add_pod("collector", COLLECTOR, None);
    let out = mesh.dir.path().join("otel-out.jsonl");
    start_collector(&mut mesh, &out);
    wait_for(Duration::from_secs(20), "httpbin through the mesh", || {
        request(&mesh, "/get", "warm-up") == 200
    });

    // The task's Telemetry: sleep's requests to the collector.
    let sleep_logging = |provider: &str| {
        format!(
            "apiVersion: telemetry.istio.io/v1alpha1\nkind: Telemetry\nmetadata: {{name: sleep-logging, namespace: default}}\nspec:\n  selector:\n    matchLabels: {{app: sleep}}\n  accessLogging:\n  - providers: [{{name: {provider}}}]\n"
        )
    };
    apply(
        &mesh,
        "telemetry-sleep.yaml",
        "sleep-logging",
        &sleep_logging("otel"),
    );
    assert_eq!(request(&mesh, "/status/418", "otel-418"), 418);
    wait_for(Duration::from_secs(10), "the 418 at the collector", || {
        !exported(&out, "otel-418").is_empty()
    });
    let records = exported(&out, "otel-418");
    assert_eq!(records.len(), 1, "only the client's line: {records:?}");
    let r = &records[0];
    let body = r["body"]["stringValue"].as_str().unwrap_or_default();
    assert!(
        body.contains("\"GET /status/418 HTTP/1.1\" 418 - via_upstream"),
        "not Istio's TEXT body: {body}"
    );
    assert_eq!(attribute(r, "status"), Some("418"));
    assert_eq!(
        attribute(r, "upstream"),
        Some("outbound|8000||httpbin.default.svc.cluster.local")
    );
    let resource = &r["resource"];
    assert_eq!(
        attribute(resource, "log_name"),
        Some("otel_envoy_accesslog")
    );
    assert!(
        attribute(resource, "node_name").is_some_and(|n| n.contains("sleep.default")),
        "{resource}"
    );

    // Live switch to the envoy provider and back: no restart, no failed request.
    apply(
        &mesh,
        "telemetry-sleep.yaml",
        "sleep-logging",
        &sleep_logging("envoy"),
    );
    assert_eq!(request(&mesh, "/status/418", "to-file"), 418);
    assert_eq!(wait_logged(&mesh, "sleep", "to-file").len(), 1);
    apply(
        &mesh,
        "telemetry-sleep.yaml",
        "sleep-logging",
        &sleep_logging("otel"),
    );
    assert_eq!(request(&mesh, "/status/418", "back-to-otel"), 418);
    wait_for(Duration::from_secs(10), "back at the collector", || {
        !exported(&out, "back-to-otel").is_empty()
    });
    assert!(exported(&out, "to-file").is_empty());

    // The collector goes away: requests are still served, the records dropped and counted;
    // when it returns the logs resume.
    mesh.signal("collector", "app", "KILL");
    wait_for(Duration::from_secs(10), "the collector to exit", || {
        mesh.exited("collector", "app")
    });
    for i in 0..20 {
        let id = format!("collector-down-{i}");
        assert_eq!(request(&mesh, "/status/418", &id), 418);
    }
    wait_for(Duration::from_secs(15), "the drops to be counted", || {
        mesh.stats("sleep").lines().any(|l| {
            l.starts_with("access_logs.open_telemetry_access_log.logs_dropped: ")
                && !l.ends_with(": 0")
        })
    });
    let out2 = mesh.dir.path().join("otel-out-2.jsonl");
    start_collector(&mut mesh, &out2);
    wait_for(Duration::from_secs(20), "the logs to resume", || {
        request(&mesh, "/status/418", "after-restart") == 418 && {
            std::thread::sleep(Duration::from_millis(1500));
            !exported(&out2, "after-restart").is_empty()
        }
    });
}

/// The series of a metric family in a sidecar's scrape (`name{...} value` lines).
fn series(mesh: &Mesh, pod: &str, family: &str) -> Vec<String> {
    mesh.metrics(pod)
        .lines()
        .filter(|l| l.starts_with(&format!("{family}{{")))
        .map(str::to_owned)
        .collect()
}

#[test]
fn istio_metric_overrides_with_the_telemetry_api() {
    crate::netns::require_root();
    let mesh = security_mesh("");
    // Before any request: REQUEST_COUNT gets `request_host` and loses `response_flags`;
    // REQUEST_DURATION is disabled on the server side.
    let overrides = |extra: &str| {
        format!(
            "apiVersion: telemetry.istio.io/v1alpha1\nkind: Telemetry\nmetadata: {{name: mesh-default, namespace: istio-system}}\nspec:\n  metrics:\n  - providers: [{{name: prometheus}}]\n    overrides:\n    - match: {{metric: REQUEST_COUNT, mode: CLIENT_AND_SERVER}}\n      tagOverrides:\n        request_host: {{value: \"request.host\"}}\n        response_flags: {{operation: REMOVE}}\n{extra}"
        )
    };
    apply(
        &mesh,
        "telemetry-metrics.yaml",
        "mesh-default.istio-system",
        &overrides("    - match: {metric: REQUEST_DURATION, mode: SERVER}\n      disabled: true\n"),
    );
    wait_for(Duration::from_secs(20), "httpbin through the mesh", || {
        request(&mesh, "/status/418", "metrics-1") == 418
    });
    for pod in ["sleep", "httpbin"] {
        let count = series(&mesh, pod, "istio_requests_total");
        assert!(!count.is_empty(), "{pod}: no istio_requests_total");
        for line in &count {
            assert!(
                line.contains("request_host=\"httpbin:8000\"") && !line.contains("response_flags="),
                "{pod}: {line}"
            );
        }
        // The other families keep Istio's standard labels.
        let bytes = series(&mesh, pod, "istio_request_bytes_count");
        assert!(
            bytes
                .iter()
                .all(|l| l.contains("response_flags=\"-\"") && !l.contains("request_host")),
            "{pod}: {bytes:?}"
        );
    }
    // Disabled on the server only.
    assert!(
        series(
            &mesh,
            "httpbin",
            "istio_request_duration_milliseconds_count"
        )
        .is_empty()
    );
    assert!(!series(&mesh, "sleep", "istio_request_duration_milliseconds_count").is_empty());

    // Live: the override changes; the next requests are recorded under the new label set.
    apply(
        &mesh,
        "telemetry-metrics.yaml",
        "mesh-default.istio-system",
        &overrides(""),
    );
    assert_eq!(request(&mesh, "/status/418", "metrics-2"), 418);
    assert!(
        !series(
            &mesh,
            "httpbin",
            "istio_request_duration_milliseconds_count"
        )
        .is_empty()
    );
}
