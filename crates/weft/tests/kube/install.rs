//! `weft install`: its manifests apply (server-side dry run first, then for real), the control
//! plane's ServiceAccount may do what it needs and no more, a control plane running with that
//! ServiceAccount's token serves the cluster and writes resource status, and `weft uninstall`
//! removes it all.

use std::process::Command;
use std::time::Duration;

use crate::cluster::{Cluster, Control, wait_for};

const WEFT: &str = env!("CARGO_BIN_EXE_weft");

fn weft(args: &[&str]) -> String {
    let out = Command::new(WEFT).args(args).output().expect("weft");
    assert!(
        out.status.success(),
        "weft {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn install_runs_with_least_privilege_and_uninstall_removes_it() {
    let cluster = Cluster::up();
    let manifests = weft(&["install", "--image", "weft:test"]);
    // The namespace first (a server-side dry run does not create it for what follows).
    cluster.kubectl(&["create", "namespace", "istio-system"]);
    let dry = cluster.kubectl_in(&["apply", "--dry-run=server", "-f", "-"], &manifests);
    assert!(
        dry.contains("deployment.apps/istiod created (server dry run)"),
        "{dry}"
    );
    cluster.kubectl_in(&["apply", "-f", "-"], &manifests);
    cluster.wait_crds_established();

    // What the control plane's ServiceAccount may do.
    let sa = "system:serviceaccount:istio-system:weft-control";
    let can = |verb: &str, what: &str, ns: &str| {
        let (resource, sub) = what.split_once('/').unwrap_or((what, ""));
        let sub = format!("--subresource={sub}");
        let mut args = vec!["auth", "can-i", verb, resource, "-n", ns, "--as", sa];
        if what.contains('/') {
            args.push(&sub);
        }
        cluster
            .try_kubectl(&args, "")
            .is_ok_and(|o| o.trim() == "yes")
    };
    for (verb, what) in [
        ("watch", "endpointslices.discovery.k8s.io"),
        ("list", "pods"),
        ("list", "virtualservices.networking.istio.io"),
        ("patch", "virtualservices.networking.istio.io/status"),
        ("create", "tokenreviews.authentication.k8s.io"),
        ("create", "configmaps"),
        ("watch", "namespaces"),
    ] {
        assert!(can(verb, what, "default"), "{sa} may not {verb} {what}");
    }
    // The CA's Secrets in its own namespace, by name, and no other Secret.
    let can_named = |verb: &str, what: &str| {
        cluster
            .try_kubectl(
                &[
                    "auth",
                    "can-i",
                    verb,
                    what,
                    "-n",
                    "istio-system",
                    "--as",
                    sa,
                ],
                "",
            )
            .is_ok_and(|o| o.trim() == "yes")
    };
    assert!(can_named("get", "secrets/cacerts"));
    assert!(can_named("get", "secrets/istio-ca-secret"));
    assert!(can_named("create", "secrets"));
    assert!(!can_named("get", "secrets/other"));
    assert!(!can_named("list", "secrets"));
    for (verb, what) in [
        ("delete", "pods"),
        ("create", "virtualservices.networking.istio.io"),
        ("get", "secrets"),
        ("delete", "configmaps"),
        ("update", "services"),
    ] {
        assert!(
            !can(verb, what, "default"),
            "{sa} may {verb} {what}: more than it needs"
        );
    }

    // A control plane with only that ServiceAccount's token: it reads the cluster and writes
    // status.
    let token = cluster.kubectl(&["-n", "istio-system", "create", "token", "weft-control"]);
    let admin = std::fs::read_to_string(&cluster.kubeconfig).expect("kubeconfig");
    let admin_token = admin
        .lines()
        .find_map(|l| l.trim().strip_prefix("token: "))
        .expect("the admin token")
        .to_string();
    let limited = Cluster::with_kubeconfig(&cluster, &admin.replace(&admin_token, token.trim()));
    cluster.kubectl_in(
        &["apply", "-f", "-"],
        "apiVersion: v1
kind: Service
metadata: {name: web, namespace: default}
spec: {ports: [{name: http, port: 80}], selector: {app: web}}
---
apiVersion: networking.istio.io/v1beta1
kind: VirtualService
metadata: {name: web, namespace: default}
spec: {hosts: [web], http: [{route: [{destination: {host: web}}], retries: {attempts: -1}}]}
",
    );
    let control = Control::start(&limited);
    control.wait(
        "/debug/registryz",
        "the web service",
        Duration::from_secs(60),
        |r| {
            r["services"].as_array().is_some_and(|s| {
                s.iter()
                    .any(|s| s["hostname"] == "web.default.svc.cluster.local")
            })
        },
    );
    wait_for(
        "the status written with the installed RBAC",
        Duration::from_secs(10),
        || {
            let vs = cluster.json(&[
                "-n",
                "default",
                "get",
                "virtualservices.networking.istio.io",
                "web",
            ]);
            if vs["status"]["validationMessages"][0]["level"] == "ERROR" {
                Ok(())
            } else {
                Err(format!("{}\n{}", vs["status"], control.log()))
            }
        },
    );
    drop(control);

    let out = weft(&[
        "uninstall",
        "--kubeconfig",
        cluster.kubeconfig.to_str().expect("path"),
    ]);
    assert!(out.contains("deleted Deployment/istiod"), "{out}");
    assert!(
        out.contains("deleted CustomResourceDefinition/virtualservices.networking.istio.io"),
        "{out}"
    );
    // A CRD goes once the API server has removed its objects.
    wait_for("the CRDs gone", Duration::from_secs(60), || {
        let crds = cluster.kubectl(&["get", "crd", "-o", "name"]);
        if crds.contains("istio.io") {
            Err(crds)
        } else {
            Ok(())
        }
    });
    assert!(
        cluster
            .try_kubectl(&["-n", "istio-system", "get", "deployment", "istiod"], "")
            .is_err()
    );
}
