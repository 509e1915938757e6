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

/// Both sidecars write their lines once the response is done; give them a moment.
fn settle() {
    std::thread::sleep(Duration::from_millis(300));
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
    settle();
    for pod in ["sleep", "httpbin"] {
        let lines = logged(&mesh, pod, "teapot-1");
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
    settle();
    assert_eq!(logged(&mesh, "sleep", "client-only").len(), 1);
    assert!(logged(&mesh, "httpbin", "client-only").is_empty());
    apply(&mesh, "telemetry-ns.yaml", "ns-logging", &mode("SERVER"));
    assert_eq!(request(&mesh, "/status/418", "server-only"), 418);
    settle();
    assert!(logged(&mesh, "sleep", "server-only").is_empty());
    assert_eq!(logged(&mesh, "httpbin", "server-only").len(), 1);

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
    settle();
    for pod in ["sleep", "httpbin"] {
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
    settle();
    assert_eq!(logged(&mesh, "httpbin", "still-logged").len(), 1);

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
