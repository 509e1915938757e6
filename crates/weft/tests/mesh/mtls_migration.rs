//! istio.io's "Mutual TLS Migration" task end to end: httpbin and sleep in namespaces foo and
//! bar with sidecars and in legacy without; every sleep calls every httpbin. PERMISSIVE (the
//! default) lets all of them through; STRICT in foo refuses legacy's plaintext to foo only; a
//! mesh-wide STRICT (root namespace) refuses it to foo and bar, while the sidecars still reach
//! legacy in plaintext (auto mTLS).

use std::collections::BTreeMap;
use std::time::Duration;

use crate::netns::{Mesh, Sidecar, WEFT, next_id, wait_for};

const NAMESPACES: [&str; 3] = ["foo", "bar", "legacy"];

fn httpbin_host(ns: &str) -> u8 {
    20 + NAMESPACES.iter().position(|n| *n == ns).unwrap_or(0) as u8
}

fn sleep_host(ns: &str) -> u8 {
    30 + NAMESPACES.iter().position(|n| *n == ns).unwrap_or(0) as u8
}

fn sidecar(ns: &str, app: &str) -> Option<Sidecar> {
    (ns != "legacy").then(|| Sidecar {
        workload: format!("{ns}/{app}"),
        labels: BTreeMap::from([("app".into(), app.into()), ("version".into(), "v1".into())]),
        service_account: app.into(),
        cert_ttl: None,
        delta: false,
        ..Default::default()
    })
}

fn migration_mesh() -> Mesh {
    let id = next_id();
    let mut config = Vec::new();
    let mut hosts = String::new();
    for (i, ns) in NAMESPACES.iter().enumerate() {
        let vip = Mesh::vip(id, 20 + i as u8);
        // Legacy workloads have no sidecar: Istio's endpoints without `tlsMode: istio`.
        let inject = if *ns == "legacy" {
            "\n  annotations: {sidecar.istio.io/inject: \"false\"}"
        } else {
            ""
        };
        config.push((
            format!("{ns}.yaml"),
            format!(
                "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: httpbin, namespace: {ns}}}\nspec:\n  hosts: [httpbin.{ns}.svc.cluster.local]\n  addresses: [{vip}]\n  location: MESH_INTERNAL\n  resolution: STATIC\n  ports:\n  - {{number: 8000, name: http, protocol: HTTP}}\n  workloadSelector: {{labels: {{app: httpbin}}}}\n---\napiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata:\n  name: httpbin\n  namespace: {ns}{inject}\nspec:\n  address: 10.77.{id}.{h}\n  labels: {{app: httpbin, version: v1}}\n  serviceAccount: httpbin\n---\napiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata:\n  name: sleep\n  namespace: {ns}{inject}\nspec:\n  address: 10.77.{id}.{s}\n  labels: {{app: sleep, version: v1}}\n  serviceAccount: sleep\n",
                h = httpbin_host(ns),
                s = sleep_host(ns),
            ),
        ));
        hosts.push_str(&format!(
            "{vip} httpbin.{ns}.svc.cluster.local httpbin.{ns}\n"
        ));
    }
    let config: Vec<(&str, String)> = config
        .iter()
        .map(|(n, y)| (n.as_str(), y.clone()))
        .collect();
    let mut mesh = Mesh::new(id, &config, "", &hosts);
    for ns in NAMESPACES {
        let pod = format!("{ns}-httpbin");
        mesh.add_pod(&pod, httpbin_host(ns), sidecar(ns, "httpbin"));
        mesh.start_command(
            &pod,
            &[
                WEFT,
                "sample",
                "echo",
                "--http-port",
                "8000",
                "--service",
                "httpbin",
            ],
            "http://127.0.0.1:8000/healthz",
        );
        mesh.add_pod(&format!("{ns}-sleep"), sleep_host(ns), sidecar(ns, "sleep"));
    }
    mesh
}

/// `sleep.<from>` → `httpbin.<to>:8000/ip`: the HTTP code, 0 when the connection failed.
/// Sidecar'd clients use the service name; legacy has no capture and calls the pod, as
/// kube-proxy would route its service address.
fn code(mesh: &Mesh, from: &str, to: &str) -> u16 {
    let url = if from == "legacy" {
        format!("http://{}:8000/ip", mesh.ip(httpbin_host(to)))
    } else {
        format!("http://httpbin.{to}:8000/ip")
    };
    mesh.curl(&format!("{from}-sleep"), &url).0
}

/// The task's table: (from, to) → code.
fn matrix(mesh: &Mesh) -> Vec<(String, String, u16)> {
    let mut out = Vec::new();
    for from in NAMESPACES {
        for to in NAMESPACES {
            out.push((from.to_string(), to.to_string(), code(mesh, from, to)));
        }
    }
    out
}

fn expected(refused: &[(&str, &str)]) -> Vec<(String, String, u16)> {
    let mut out = Vec::new();
    for from in NAMESPACES {
        for to in NAMESPACES {
            let c = if refused.contains(&(from, to)) {
                0
            } else {
                200
            };
            out.push((from.to_string(), to.to_string(), c));
        }
    }
    out
}

fn strict(ns: &str) -> String {
    format!(
        "apiVersion: security.istio.io/v1beta1\nkind: PeerAuthentication\nmetadata:\n  name: default\n  namespace: {ns}\nspec:\n  mtls:\n    mode: STRICT\n"
    )
}

#[test]
fn istio_mutual_tls_migration() {
    crate::netns::require_root();
    let mesh = migration_mesh();
    wait_for(
        Duration::from_secs(30),
        "every sleep to reach every httpbin",
        || matrix(&mesh) == expected(&[]),
    );

    // STRICT in foo: only legacy → foo is refused.
    mesh.write_config("pa-foo.yaml", &strict("foo"));
    wait_for(Duration::from_secs(20), "STRICT in foo", || {
        code(&mesh, "legacy", "foo") == 0
    });
    assert_eq!(matrix(&mesh), expected(&[("legacy", "foo")]));

    // STRICT mesh-wide (the root namespace): legacy reaches neither foo nor bar; the sidecars
    // still call legacy in plaintext.
    mesh.write_config("pa-mesh.yaml", &strict("istio-system"));
    wait_for(Duration::from_secs(20), "STRICT mesh-wide", || {
        code(&mesh, "legacy", "bar") == 0
    });
    assert_eq!(
        matrix(&mesh),
        expected(&[("legacy", "foo"), ("legacy", "bar")])
    );

    // Removing both: PERMISSIVE again.
    mesh.remove_config("pa-foo.yaml");
    mesh.remove_config("pa-mesh.yaml");
    wait_for(Duration::from_secs(20), "PERMISSIVE again", || {
        matrix(&mesh) == expected(&[])
    });
}
