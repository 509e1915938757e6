//! istio.io's "TCP Traffic Shifting" task, mesh-internal: tcp-echo v1 and v2 (`weft sample
//! echo --tcp-prefix one|two`, Istio's tcp-echo-server) behind sidecars, a client pod with a
//! sidecar sending lines with `nc`, Istio's DestinationRule and the task's VirtualService with
//! the gateway removed (all to v1, then 80/20). Then what the task does not cover: a `tcp`
//! match on `sourceLabels` (a second client goes to v2), `destinationSubnets`, and `tls` routes
//! on SNI (`openssl s_client -servername`) to an `openssl s_server` in each version's pod.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::netns::{Mesh, Sidecar, WEFT, next_id, wait_for};

const SLEEP: u8 = 10;
const V1: u8 = 11;
const V2: u8 = 13;
const CANARY: u8 = 14;

const HOST: &str = "tcp-echo.default.svc.cluster.local";

/// The Service of Istio's tcp-echo-services.yaml as a ServiceEntry (port 9000 `tcp`; the TLS
/// port 9443 is ours, for the SNI routes), and the workloads of the four pods.
fn config(id: u8) -> Vec<(&'static str, String)> {
    let vip = Mesh::vip(id, 20);
    let services = format!(
        r#"apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: tcp-echo, namespace: default}}
spec:
  hosts: [{HOST}]
  addresses: [{vip}]
  location: MESH_INTERNAL
  resolution: STATIC
  ports:
  - {{number: 9000, name: tcp, protocol: TCP}}
  - {{number: 9443, name: tls, protocol: TLS}}
  workloadSelector:
    labels: {{app: tcp-echo}}
"#
    );
    let workload = |name: &str, host: u8, labels: &str, sa: &str| {
        format!(
            "apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {{name: {name}, namespace: default}}\nspec:\n  address: 10.77.{id}.{host}\n  labels: {{{labels}}}\n  serviceAccount: {sa}\n"
        )
    };
    let workloads = [
        workload("tcp-echo-v1", V1, "app: tcp-echo, version: v1", "tcp-echo"),
        workload("tcp-echo-v2", V2, "app: tcp-echo, version: v2", "tcp-echo"),
        workload("sleep", SLEEP, "app: sleep", "sleep"),
        workload("sleep-canary", CANARY, "app: sleep, track: canary", "sleep"),
    ]
    .join("---\n");
    vec![
        ("services.yaml", services),
        ("workloads.yaml", workloads),
        ("dr.yaml", DESTINATION_RULE.to_string()),
    ]
}

/// Istio's samples/tcp-echo/tcp-echo-all-v1.yaml DestinationRule (namespace added).
const DESTINATION_RULE: &str = r#"apiVersion: networking.istio.io/v1alpha3
kind: DestinationRule
metadata:
  name: tcp-echo-destination
  namespace: default
spec:
  host: tcp-echo
  subsets:
  - name: v1
    labels:
      version: v1
  - name: v2
    labels:
      version: v2
"#;

/// The task's VirtualService (tcp-echo-all-v1.yaml / tcp-echo-20-v2.yaml) made mesh-internal:
/// `hosts: [tcp-echo]` instead of `"*"`, no `gateways`, and the match on the service port
/// 9000 instead of the ingress gateway's 31400. `tcp` is the list of routes.
fn virtual_service(tcp: &str) -> String {
    format!(
        r#"apiVersion: networking.istio.io/v1alpha3
kind: VirtualService
metadata:
  name: tcp-echo
  namespace: default
spec:
  hosts:
  - tcp-echo
  tcp:
{tcp}"#
    )
}

fn destination(subset: &str, weight: Option<u32>) -> String {
    let mut d = format!(
        "    - destination:\n        host: tcp-echo\n        port:\n          number: 9000\n        subset: {subset}\n"
    );
    if let Some(w) = weight {
        d.push_str(&format!("      weight: {w}\n"));
    }
    d
}

/// tcp-echo-all-v1.yaml, mesh-internal.
fn all_v1() -> String {
    virtual_service(&format!(
        "  - match:\n    - port: 9000\n    route:\n{}",
        destination("v1", None)
    ))
}

/// tcp-echo-20-v2.yaml, mesh-internal.
fn shift_20_v2() -> String {
    virtual_service(&format!(
        "  - match:\n    - port: 9000\n    route:\n{}{}",
        destination("v1", Some(80)),
        destination("v2", Some(20))
    ))
}

fn sidecar(workload: &str, labels: &[(&str, &str)], sa: &str) -> Sidecar {
    Sidecar {
        workload: format!("default/{workload}"),
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<BTreeMap<_, _>>(),
        service_account: sa.into(),
        cert_ttl: None,
        delta: false,
        ..Default::default()
    }
}

/// Writes a VirtualService file and waits until every sidecar runs it.
fn apply(mesh: &Mesh, file: &str, name: &str, yaml: &str) {
    mesh.write_config(file, yaml);
    mesh.wait_applied("virtualservice", name);
}

/// The task's client loop: `n` connections from `pod`, one line each, through `nc`; the
/// answers in order ("one hello 3", "two hello 4", …).
fn send_lines(mesh: &Mesh, pod: &str, n: usize) -> Vec<String> {
    let script =
        format!("for i in $(seq 1 {n}); do printf 'hello %d\\n' $i | nc -N -w 5 {HOST} 9000; done");
    let out = mesh.exec(pod, &["sh", "-c", &script]);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

/// (answers from v1, from v2) over `n` connections; every connection must be answered.
fn versions(mesh: &Mesh, pod: &str, n: usize) -> (usize, usize) {
    let answers = send_lines(mesh, pod, n);
    assert_eq!(answers.len(), n, "{pod}: {answers:?}");
    let one = answers
        .iter()
        .filter(|a| a.starts_with("one hello "))
        .count();
    let two = answers
        .iter()
        .filter(|a| a.starts_with("two hello "))
        .count();
    assert_eq!(one + two, n, "{pod}: {answers:?}");
    (one, two)
}

/// A self-signed certificate for `cn` in the mesh's directory: (cert, key).
fn certificate(mesh: &Mesh, cn: &str) -> (String, String) {
    let dir = mesh.dir.path();
    let (crt, key) = (dir.join(format!("{cn}.crt")), dir.join(format!("{cn}.key")));
    let out = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "1",
            "-subj",
        ])
        .arg(format!("/CN={cn}"))
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&crt)
        .output()
        .expect("openssl req");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let s = |p: &Path| p.to_string_lossy().into_owned();
    (s(&crt), s(&key))
}

/// What `openssl s_client` prints about the server certificate it got (`CN=one`), or "none"
/// when the handshake did not get that far.
fn tls_subject(mesh: &Mesh, pod: &str, target: &str, servername: Option<&str>) -> String {
    let sni = match servername {
        Some(name) => format!("-servername {name}"),
        None => "-noservername".into(),
    };
    let cmd = format!("echo | timeout 10 openssl s_client -connect {target} {sni} 2>&1");
    let out = mesh.exec(pod, &["sh", "-c", &cmd]);
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|l| l.strip_prefix("subject="))
        .map(|s| s.replace(' ', ""))
        .unwrap_or_else(|| "none".into())
}

#[test]
fn tcp_traffic_shifting_source_labels_subnets_and_sni() {
    crate::netns::require_root();
    let id = next_id();
    let vip = Mesh::vip(id, 20);
    let hosts = format!("{vip} {HOST} tcp-echo.default tcp-echo\n");
    let mut mesh = Mesh::new(id, &config(id), "", &hosts);
    for (pod, host, version, prefix) in [
        ("tcp-echo-v1", V1, "v1", "one"),
        ("tcp-echo-v2", V2, "v2", "two"),
    ] {
        mesh.add_pod(
            pod,
            host,
            Some(sidecar(
                pod,
                &[("app", "tcp-echo"), ("version", version)],
                "tcp-echo",
            )),
        );
        mesh.start_command(
            pod,
            &[
                WEFT,
                "sample",
                "echo",
                "--tcp-port",
                "9000",
                "--tcp-prefix",
                prefix,
            ],
            "http://127.0.0.1:8080/",
        );
    }
    mesh.add_pod(
        "sleep",
        SLEEP,
        Some(sidecar("sleep", &[("app", "sleep")], "sleep")),
    );
    mesh.add_pod(
        "canary",
        CANARY,
        Some(sidecar(
            "sleep-canary",
            &[("app", "sleep"), ("track", "canary")],
            "sleep",
        )),
    );

    // Before any VirtualService: the service's cluster, both versions.
    wait_for(
        Duration::from_secs(20),
        "tcp-echo through the sidecars",
        || {
            send_lines(&mesh, "sleep", 1)
                .first()
                .is_some_and(|a| a.ends_with(" hello 1"))
        },
    );

    // Step 1 of the task: all TCP traffic to v1.
    apply(&mesh, "vs.yaml", "tcp-echo", &all_v1());
    assert_eq!(versions(&mesh, "sleep", 20), (20, 0));

    // Step 2: 20% to v2. Over 200 connections v2's count is binomial (n=200, p=0.2: mean 40,
    // sd 5.66); [15, 65] is ±4.4 sd, left by a right split with odds of about 1e-5, while a
    // split that ignored the weights (0, 100 or 200) is far outside.
    apply(&mesh, "vs.yaml", "tcp-echo", &shift_20_v2());
    let (one, two) = versions(&mesh, "sleep", 200);
    eprintln!("80/20: v1 answered {one}, v2 {two} of 200 connections");
    assert!(
        (15..=65).contains(&two),
        "v2 answered {two} of 200 connections (v1 {one}); expected about 40"
    );

    // sourceLabels: the canary client (track=canary) goes to v2, everyone else to v1. The
    // listener is built per client; both clients run it after the wait.
    let canary_first = format!(
        "  - match:\n    - port: 9000\n      sourceLabels:\n        track: canary\n    route:\n{}  - match:\n    - port: 9000\n    route:\n{}",
        destination("v2", None),
        destination("v1", None)
    );
    apply(
        &mesh,
        "vs.yaml",
        "tcp-echo",
        &virtual_service(&canary_first),
    );
    assert_eq!(versions(&mesh, "canary", 20), (0, 20));
    assert_eq!(versions(&mesh, "sleep", 20), (20, 0));

    // destinationSubnets: a route for a subnet the VIP is not in does not apply; one for the
    // VIP's /24 does (the sidecar checks the connection's original destination).
    let subnets = |subnet: &str| {
        virtual_service(&format!(
            "  - match:\n    - destinationSubnets: [{subnet}]\n    route:\n{}  - route:\n{}",
            destination("v2", None),
            destination("v1", None)
        ))
    };
    apply(&mesh, "vs.yaml", "tcp-echo", &subnets("10.99.0.0/16"));
    assert_eq!(versions(&mesh, "sleep", 10), (10, 0));
    apply(
        &mesh,
        "vs.yaml",
        "tcp-echo",
        &subnets(&format!("10.78.{id}.0/24")),
    );
    assert_eq!(versions(&mesh, "sleep", 10), (0, 10));
    assert_eq!(versions(&mesh, "canary", 10), (0, 10));

    // TLS routes on the TLS port: an openssl s_server in each version's pod, each with its
    // own certificate (CN=one, CN=two); the client sidecar reads the SNI of the ClientHello
    // and routes on it without terminating TLS. (start_command's readiness URL is the echo
    // server's, already up; the TLS server is waited for below.)
    for (pod, cn) in [("tcp-echo-v1", "one"), ("tcp-echo-v2", "two")] {
        let (crt, key) = certificate(&mesh, cn);
        mesh.start_command(
            pod,
            &[
                "openssl", "s_server", "-4", "-accept", "9443", "-cert", &crt, "-key", &key, "-www",
            ],
            "http://127.0.0.1:8080/",
        );
        wait_for(
            Duration::from_secs(20),
            &format!("s_server in {pod}"),
            || tls_subject(&mesh, pod, "127.0.0.1:9443", Some("x")) == format!("CN={cn}"),
        );
    }
    let target = format!("{HOST}:9443");
    // No tls route yet: the service's cluster, either version, whatever the name.
    let plain = tls_subject(&mesh, "sleep", &target, Some("two.example.com"));
    assert!(plain == "CN=one" || plain == "CN=two", "{plain}");
    apply(
        &mesh,
        "vs-tls.yaml",
        "tcp-echo-tls",
        r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: tcp-echo-tls
  namespace: default
spec:
  hosts: [tcp-echo, "*.example.com"]
  tls:
  - match:
    - port: 9443
      sniHosts: [two.example.com]
    route:
    - destination: {host: tcp-echo, subset: v2, port: {number: 9443}}
  - match:
    - port: 9443
      sniHosts: ["*.example.com"]
    route:
    - destination: {host: tcp-echo, subset: v1, port: {number: 9443}}
"#,
    );
    for _ in 0..5 {
        assert_eq!(
            tls_subject(&mesh, "sleep", &target, Some("two.example.com")),
            "CN=two"
        );
        assert_eq!(
            tls_subject(&mesh, "sleep", &target, Some("one.example.com")),
            "CN=one"
        );
    }
    // The wildcard covers deeper names; a name no route names, or none at all, matches no
    // filter chain and the sidecar closes the connection (as Envoy does).
    assert_eq!(
        tls_subject(&mesh, "sleep", &target, Some("a.b.example.com")),
        "CN=one"
    );
    assert_eq!(
        tls_subject(&mesh, "sleep", &target, Some("two.example.org")),
        "none"
    );
    assert_eq!(tls_subject(&mesh, "sleep", &target, None), "none");
    // The TCP port's routes are untouched by the tls routes.
    assert_eq!(versions(&mesh, "sleep", 10), (0, 10));
}
