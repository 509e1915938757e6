//! The admission webhooks of `weft control` against a real API server: Istio's bookinfo
//! Deployments applied unchanged in a namespace labelled `istio-injection=enabled` get pods with
//! the injected `istio-init` and `istio-proxy` containers; a pod that opts out does not; an
//! invalid VirtualService is refused at `kubectl apply` with Weft's message. The control plane
//! writes its CA root into the webhook configurations' `caBundle` itself.

use std::time::Duration;

use crate::cluster::{Cluster, Control, SAMPLES, free_port, wait_for};

pub(crate) fn configurations(port: u16) -> String {
    format!(
        "apiVersion: admissionregistration.k8s.io/v1
kind: MutatingWebhookConfiguration
metadata: {{name: istio-sidecar-injector}}
webhooks:
- name: namespace.sidecar-injector.istio.io
  admissionReviewVersions: [v1]
  sideEffects: None
  failurePolicy: Fail
  clientConfig: {{url: \"https://127.0.0.1:{port}/inject\"}}
  rules: [{{operations: [CREATE], apiGroups: [\"\"], apiVersions: [v1], resources: [pods]}}]
  namespaceSelector: {{matchExpressions: [{{key: istio-injection, operator: In, values: [enabled]}}]}}
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingWebhookConfiguration
metadata: {{name: istio-validator-istio-system}}
webhooks:
- name: validation.istio.io
  admissionReviewVersions: [v1]
  sideEffects: None
  failurePolicy: Fail
  clientConfig: {{url: \"https://127.0.0.1:{port}/validate\"}}
  rules: [{{operations: [CREATE, UPDATE], apiGroups: [networking.istio.io, security.istio.io, telemetry.istio.io], apiVersions: [\"*\"], resources: [\"*\"]}}]
"
    )
}

/// Registers `control`'s webhooks on `port` (by URL on loopback) once they serve, created after
/// they started: the control plane trusts itself into the configurations' caBundle.
pub(crate) fn register(cluster: &Cluster, control: &Control, port: u16) {
    wait_for("the webhooks", Duration::from_secs(60), || {
        let log = control.log();
        if log.contains("serving the admission webhooks") {
            Ok(())
        } else {
            Err(log)
        }
    });
    cluster.kubectl_in(&["apply", "-f", "-"], &configurations(port));
    for (kind, name) in [
        ("mutatingwebhookconfiguration", "istio-sidecar-injector"),
        (
            "validatingwebhookconfiguration",
            "istio-validator-istio-system",
        ),
    ] {
        wait_for(
            &format!("{name}'s caBundle"),
            Duration::from_secs(60),
            || {
                let c = cluster.json(&["get", kind, name]);
                let bundle = &c["webhooks"][0]["clientConfig"]["caBundle"];
                if bundle.as_str().is_some_and(|b| !b.is_empty()) {
                    Ok(())
                } else {
                    Err(c.to_string())
                }
            },
        );
    }
}

#[test]
fn pods_get_sidecars_and_bad_resources_are_refused_at_apply() {
    let cluster = Cluster::up();
    cluster.install_crds();
    let port = free_port();
    let control = Control::start_with(
        &cluster,
        &[
            "--webhook-addr",
            &format!("127.0.0.1:{port}"),
            "--proxy-image",
            "weft:test",
        ],
    );
    register(&cluster, &control, port);

    cluster.kubectl(&["create", "namespace", "bookinfo"]);
    cluster.kubectl(&["label", "namespace", "bookinfo", "istio-injection=enabled"]);
    cluster.kubectl(&[
        "-n",
        "bookinfo",
        "apply",
        "-f",
        &format!("{SAMPLES}/bookinfo/platform/kube/bookinfo.yaml"),
    ]);
    let mut pods = serde_json::Value::Null;
    wait_for("bookinfo's six pods", Duration::from_secs(60), || {
        pods = cluster.json(&["-n", "bookinfo", "get", "pods"]);
        let n = pods["items"].as_array().map_or(0, Vec::len);
        if n == 6 {
            Ok(())
        } else {
            Err(format!("{n} pods"))
        }
    });
    for p in pods["items"].as_array().expect("pods") {
        let name = p["metadata"]["name"].as_str().unwrap_or_default();
        let containers: Vec<&str> = p["spec"]["containers"]
            .as_array()
            .expect("containers")
            .iter()
            .filter_map(|c| c["name"].as_str())
            .collect();
        assert_eq!(containers.len(), 2, "{name}: {containers:?}");
        assert_eq!(containers[1], "istio-proxy", "{name}");
        assert_eq!(
            p["spec"]["initContainers"][0]["name"], "istio-init",
            "{name}"
        );
        assert_eq!(
            p["spec"]["initContainers"][0]["image"], "weft:test",
            "{name}"
        );
        let proxy = &p["spec"]["containers"][1];
        let args: Vec<&str> = proxy["args"]
            .as_array()
            .expect("args")
            .iter()
            .filter_map(|a| a.as_str())
            .collect();
        assert!(
            args.contains(&"istiod.istio-system.svc:15012"),
            "{name}: {args:?}"
        );
        assert_eq!(proxy["securityContext"]["runAsUser"], 1337, "{name}");
        assert_eq!(
            p["metadata"]["labels"]["security.istio.io/tlsMode"], "istio",
            "{name}"
        );
        assert!(
            p["spec"]["serviceAccountName"]
                .as_str()
                .is_some_and(|s| s.starts_with("bookinfo-")),
            "{name}"
        );
    }
    // A pod that opts out keeps its own containers.
    cluster.kubectl_in(
        &["-n", "bookinfo", "apply", "-f", "-"],
        "apiVersion: v1
kind: Pod
metadata: {name: plain, labels: {sidecar.istio.io/inject: \"false\"}}
spec: {containers: [{name: app, image: busybox}]}
",
    );
    let plain = cluster.json(&["-n", "bookinfo", "get", "pod", "plain"]);
    assert_eq!(
        plain["spec"]["containers"].as_array().map(Vec::len),
        Some(1)
    );

    // Validation at apply: Weft's message, naming the object and field.
    let refused = cluster
        .try_kubectl(
            &["apply", "-f", "-"],
            "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: broken, namespace: default}
spec:
  hosts: [ratings]
  http: [{timeout: soon, route: [{destination: {host: ratings}}]}]
",
        )
        .expect_err("the validating webhook refuses it");
    assert!(
        refused.contains("denied the request")
            && refused.contains("kubernetes:virtualservices.networking.istio.io/default/broken")
            && refused.contains("timeout"),
        "{refused}\n{}",
        control.log()
    );
    cluster.kubectl_in(
        &["apply", "-f", "-"],
        "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: fine, namespace: default}
spec:
  hosts: [ratings]
  http: [{timeout: 2s, route: [{destination: {host: ratings}}]}]
",
    );
}
