//! `weft wait` end to end: it returns once the sidecar has applied a VirtualService (its
//! /config_dump shows the route right after), and fails at once, naming the file and field,
//! when the control plane refuses the VirtualService.

use std::time::{Duration, Instant};

use crate::netns::{Mesh, WEFT, next_id};
use crate::{CLIENT, hosts, server_config, sidecar};

fn virtual_service(route: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: server, namespace: default}}\nspec:\n  hosts: [server]\n  http:\n  - {route}\n"
    )
}

/// `weft wait …` in the control plane's pod: (exit code, stdout, stderr).
fn weft_wait(mesh: &Mesh, args: &[&str]) -> (i32, String, String) {
    let cp = format!("{}:15014", mesh.cp.ip);
    let mut argv = vec![WEFT, "wait", "--control-plane", &cp, "--timeout", "20s"];
    argv.extend_from_slice(args);
    let out = crate::netns::ns_exec(&mesh.cp.ns, &argv);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn config_dump(mesh: &Mesh) -> String {
    let out = mesh.curl_from(
        mesh.ns("client"),
        &["-s", "-m", "5", "http://127.0.0.1:15000/config_dump"],
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn weft_wait_returns_once_the_sidecar_has_the_route_and_fails_fast_on_a_bad_one() {
    let id = next_id();
    let mut mesh = Mesh::new(id, &server_config(id, true), "", &hosts(id));
    mesh.add_pod(
        "client",
        CLIENT,
        Some(sidecar("client", "client", "client")),
    );

    for (timeout, ms) in [("7.777s", 7777), ("3.333s", 3333)] {
        mesh.write_config(
            "vs.yaml",
            &virtual_service(&format!(
                "timeout: {timeout}\n    route: [{{destination: {{host: server}}}}]"
            )),
        );
        let (code, stdout, stderr) = weft_wait(&mesh, &["virtualservice", "server.default"]);
        assert_eq!(code, 0, "stdout: {stdout}\nstderr: {stderr}");
        assert!(
            stdout.starts_with("VirtualService default/server applied by 1/1 proxies (version "),
            "{stdout}"
        );
        let dump = config_dump(&mesh);
        assert!(
            dump.contains(&format!("\"timeout_ms\": {ms}")),
            "right after weft wait, the sidecar lacks the {timeout} route: {dump}"
        );
    }

    // A WorkloadEntry that only adds an endpoint is pushed for endpoints alone (the proxies'
    // listeners, clusters and routes are not regenerated): waiting on it still returns.
    for addr in ["10.250.0.7", "10.250.0.8"] {
        mesh.write_config(
            "extra.yaml",
            &format!(
                "apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {{name: extra, namespace: default}}\nspec: {{address: {addr}, labels: {{app: server}}, serviceAccount: server}}\n"
            ),
        );
        let (code, stdout, stderr) = weft_wait(&mesh, &["workloadentry", "extra.default"]);
        assert_eq!(code, 0, "stdout: {stdout}\nstderr: {stderr}");
        assert!(stdout.contains("applied by 1/1 proxies"), "{stdout}");
    }
    mesh.remove_config("extra.yaml");

    // Short kind name and -n work too; nothing changed, so it returns at once.
    let (code, stdout, stderr) = weft_wait(&mesh, &["vs", "server", "-n", "default"]);
    assert_eq!(code, 0, "stdout: {stdout}\nstderr: {stderr}");

    // A VirtualService the control plane refuses: fails fast, naming the file and field.
    mesh.write_config(
        "vs.yaml",
        &virtual_service("route: [{destination: {host: server}, wieght: 50}]"),
    );
    let started = Instant::now();
    let (code, stdout, stderr) = weft_wait(&mesh, &["virtualservice", "server.default"]);
    assert_eq!(code, 1, "stdout: {stdout}\nstderr: {stderr}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
    assert!(
        stderr.contains("VirtualService default/server was rejected")
            && stderr.contains("vs.yaml:")
            && stderr.contains("wieght"),
        "{stderr}"
    );
    // The last good route stays in force.
    assert!(config_dump(&mesh).contains("\"timeout_ms\": 3333"));
}
