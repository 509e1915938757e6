//! istio.io's "External Authorization" task end to end: `weft sample ext-authz` (Istio's
//! sample authorizer, HTTP on 8000 and gRPC on 9000) behind its own sidecar, MeshConfig
//! `extensionProviders` naming it, and CUSTOM AuthorizationPolicies on httpbin (HTTP, both
//! providers) and tcp-echo (TCP, the gRPC provider). Then the authorizer goes away:
//! `failOpen` lets requests through, `statusOnError` answers with its status.

use std::time::Duration;

use crate::netns::{Mesh, WEFT, wait_for};
use crate::security::{
    HTTPBIN_URL, TCP_ECHO, apply_policy, curl, security_mesh, service, sidecar, tcp_from, workload,
};

const EXT_AUTHZ: u8 = 14;

/// The task's providers, plus one failing open and one with a status on error.
const MESH_CONFIG: &str = r#"accessLogFile: /dev/stdout
extensionProviders:
- name: sample-ext-authz-grpc
  envoyExtAuthzGrpc:
    service: ext-authz.default.svc.cluster.local
    port: 9000
- name: sample-ext-authz-http
  envoyExtAuthzHttp:
    service: ext-authz.default.svc.cluster.local
    port: 8000
    includeRequestHeadersInCheck: ["x-ext-authz"]
    headersToUpstreamOnAllow: ["x-ext-authz-check-result"]
    headersToDownstreamOnDeny: ["x-ext-authz-check-result"]
- name: http-fail-open
  envoyExtAuthzHttp:
    service: ext-authz.default.svc.cluster.local
    port: 8000
    includeRequestHeadersInCheck: ["x-ext-authz"]
    failOpen: true
- name: grpc-status-on-error
  envoyExtAuthzGrpc:
    service: ext-authz.default.svc.cluster.local
    port: 9000
    statusOnError: "503"
"#;

fn custom(name: &str, app: &str, provider: &str, to: &str) -> String {
    format!(
        r#"apiVersion: security.istio.io/v1beta1
kind: AuthorizationPolicy
metadata:
  name: {name}
  namespace: default
spec:
  selector:
    matchLabels:
      app: {app}
  action: CUSTOM
  provider:
    name: {provider}
  rules:
  - to:
    - operation:
{to}"#
    )
}

/// The task's policy: httpbin's /headers is checked by `provider`.
fn on_headers(mesh: &Mesh, provider: &str) {
    let to = "        paths: [\"/headers\"]\n";
    apply_policy(
        mesh,
        "ext-authz",
        &custom("ext-authz", "httpbin", provider, to),
    );
}

/// `curl` from the sleep pod.
fn get(mesh: &Mesh, args: &[&str]) -> (u16, String) {
    curl(mesh, "sleep", args)
}

const DENY_BODY: &str =
    "denied by ext_authz for not found header `x-ext-authz: allow` in the request";

#[test]
fn istio_external_authorization() {
    crate::netns::require_root();
    let mut mesh = security_mesh(MESH_CONFIG);
    let id = mesh.id;
    mesh.write_config(
        "ext-authz.yaml",
        &[
            service(
                id,
                22,
                "ext-authz",
                "  - {number: 8000, name: http, protocol: HTTP}\n  - {number: 9000, name: grpc, protocol: GRPC}\n",
            ),
            workload(id, "ext-authz", EXT_AUTHZ, "ext-authz"),
        ]
        .join("---\n"),
    );
    mesh.add_pod("ext-authz", EXT_AUTHZ, Some(sidecar("ext-authz")));
    mesh.start_command(
        "ext-authz",
        &[
            WEFT,
            "sample",
            "ext-authz",
            "--allow-service-account",
            "sleep",
        ],
        "http://127.0.0.1:8000/",
    );
    let headers = format!("{HTTPBIN_URL}/headers");
    let ip = format!("{HTTPBIN_URL}/ip");
    wait_for(Duration::from_secs(20), "httpbin through the mesh", || {
        get(&mesh, &[&headers]).0 == 200
    });

    // The HTTP provider on /headers: allowed with `x-ext-authz: allow`, the authorizer's
    // verdict header forwarded upstream; denied otherwise with the authorizer's body and the
    // header it may send downstream; /ip is not asked about.
    on_headers(&mesh, "sample-ext-authz-http");
    let (status, body) = get(&mesh, &["-H", "x-ext-authz: deny", &headers]);
    assert_eq!((status, body.as_str()), (403, DENY_BODY));
    let (status, body) = get(&mesh, &["-H", "x-ext-authz: allow", &headers]);
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains("x-ext-authz-check-result") && body.contains("allowed"),
        "the allowed request lacks the authorizer's header upstream: {body}"
    );
    let (status, head) = get(
        &mesh,
        &[
            "-D",
            "-",
            "-o",
            "/dev/null",
            "-H",
            "x-ext-authz: no",
            &headers,
        ],
    );
    assert_eq!(status, 403);
    assert!(
        head.to_ascii_lowercase()
            .contains("x-ext-authz-check-result: denied"),
        "{head}"
    );
    assert_eq!(get(&mesh, &["-H", "x-ext-authz: deny", &ip]).0, 200);
    let authorizer = mesh.log("app-ext-authz.log");
    assert!(
        authorizer.contains("[HTTP][denied]") && authorizer.contains("[HTTP][allowed]"),
        "{authorizer}"
    );
    let proxy = mesh.wait_log("proxy-httpbin.log", "ext_authz_denied");
    assert!(
        proxy.contains("UAEX") && proxy.contains("ext_authz_denied"),
        "the denial is not in the access log: {proxy}"
    );

    // The gRPC provider: the same decisions over envoy.service.auth.v3.Authorization/Check.
    on_headers(&mesh, "sample-ext-authz-grpc");
    let (status, body) = get(&mesh, &["-H", "x-ext-authz: deny", &headers]);
    assert_eq!((status, body.as_str()), (403, DENY_BODY));
    let (status, body) = get(&mesh, &["-H", "x-ext-authz: allow", &headers]);
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains("grpc-additional-header-override-value"),
        "the gRPC authorizer's OK headers did not reach the upstream: {body}"
    );
    let authorizer = mesh.log("app-ext-authz.log");
    assert!(
        authorizer.contains("[gRPCv3][denied]") && authorizer.contains("[gRPCv3][allowed]"),
        "{authorizer}"
    );

    // TCP: the gRPC provider on tcp-echo's port 9000. Without an HTTP header to look at, the
    // sample allows the source principal of service account `sleep`: sleep gets through, a
    // plaintext client without identity does not; 9001 is not asked about.
    apply_policy(
        &mesh,
        "ext-authz-tcp",
        &custom(
            "ext-authz-tcp",
            "tcp-echo",
            "sample-ext-authz-grpc",
            "        ports: [\"9000\"]\n",
        ),
    );
    let tcp_echo = mesh.ip(TCP_ECHO);
    assert_eq!(
        tcp_from(&mesh, "sleep", "tcp-echo", 9000),
        "hello port 9000"
    );
    assert_eq!(tcp_from(&mesh, "legacy", &tcp_echo, 9000), "");
    assert_eq!(
        tcp_from(&mesh, "legacy", &tcp_echo, 9001),
        "hello port 9001"
    );

    // The authorizer goes away.
    mesh.signal("ext-authz", "app", "KILL");
    wait_for(Duration::from_secs(10), "the authorizer to exit", || {
        mesh.exited("ext-authz", "app")
    });
    // statusOnError: every checked request gets the status.
    on_headers(&mesh, "grpc-status-on-error");
    assert_eq!(get(&mesh, &["-H", "x-ext-authz: allow", &headers]).0, 503);
    assert_eq!(get(&mesh, &[&ip]).0, 200);
    // failOpen: checked requests pass, whatever they carry.
    on_headers(&mesh, "http-fail-open");
    assert_eq!(get(&mesh, &["-H", "x-ext-authz: deny", &headers]).0, 200);
    // The task's default (neither): fail closed with 403.
    on_headers(&mesh, "sample-ext-authz-http");
    assert_eq!(get(&mesh, &["-H", "x-ext-authz: allow", &headers]).0, 403);
    // TCP fails closed too: sleep's connection to 9000 is now refused.
    assert_eq!(tcp_from(&mesh, "sleep", "tcp-echo", 9000), "");
}
