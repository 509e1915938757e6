//! The admission webhooks of `weft control` against a real API server: Istio's bookinfo
//! Deployments applied unchanged in a namespace labelled `istio-injection=enabled` get pods with
//! the injected `istio-init` and `istio-proxy` containers; a pod that opts out does not; a
//! namespace labelled `istio.io/rev=default` and pods that opt in by label elsewhere are
//! injected, through the webhook configurations `weft install` writes; an
//! invalid VirtualService is refused at `kubectl apply` with Weft's message. The control plane
//! writes its CA root into the webhook configurations' `caBundle` itself.

use std::time::Duration;

use crate::cluster::{Cluster, Control, SAMPLES, wait_for};
use crate::ports::free_port;

/// The webhook configurations of `weft install` (Istio's selectors), each webhook sent by URL
/// to `port` on loopback instead of to the `istiod` Service (there is no kube-proxy here).
pub(crate) fn configurations(port: u16) -> String {
    let install = weft_kube::install::InstallOptions {
        namespace: "istio-system".into(),
        image: "weft:test".into(),
    };
    let mut items: Vec<serde_json::Value> = weft_kube::install::objects(&install)
        .into_iter()
        .filter(|o| {
            o["kind"] == "MutatingWebhookConfiguration"
                || o["kind"] == "ValidatingWebhookConfiguration"
        })
        .collect();
    assert_eq!(items.len(), 2, "weft install's webhook configurations");
    for item in &mut items {
        let path = if item["kind"] == "MutatingWebhookConfiguration" {
            "inject"
        } else {
            "validate"
        };
        for hook in item["webhooks"].as_array_mut().expect("webhooks") {
            hook["clientConfig"] =
                serde_json::json!({"url": format!("https://127.0.0.1:{port}/{path}")});
        }
    }
    serde_json::json!({"apiVersion": "v1", "kind": "List", "items": items}).to_string()
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
                let hooks = c["webhooks"].as_array().cloned().unwrap_or_default();
                if !hooks.is_empty()
                    && hooks.iter().all(|h| {
                        h["clientConfig"]["caBundle"]
                            .as_str()
                            .is_some_and(|b| !b.is_empty())
                    })
                {
                    Ok(())
                } else {
                    Err(c.to_string())
                }
            },
        );
    }
}

/// The names of a pod's containers, in order.
fn container_names(pod: &serde_json::Value) -> Vec<&str> {
    pod["spec"]["containers"]
        .as_array()
        .expect("containers")
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect()
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
    // For the other selections below (made now: their default ServiceAccounts take a moment).
    cluster.kubectl(&["create", "namespace", "revved"]);
    cluster.kubectl(&["label", "namespace", "revved", "istio.io/rev=default"]);
    cluster.kubectl(&["create", "namespace", "unlabelled"]);
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
        let containers = container_names(p);
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

    // Istio's other selections: a namespace of the default revision (`istio.io/rev=default`),
    // and pods that opt in by label in a namespace with neither label.
    let injected = |ns: &str, name: &str, labels: &str| -> bool {
        cluster.kubectl_in(
            &["-n", ns, "apply", "-f", "-"],
            &format!(
                "apiVersion: v1
kind: Pod
metadata: {{name: {name}, labels: {{{labels}}}}}
spec: {{containers: [{{name: app, image: busybox}}]}}
"
            ),
        );
        let pod = cluster.json(&["-n", ns, "get", "pod", name]);
        container_names(&pod).contains(&"istio-proxy")
    };
    assert!(injected("revved", "in-revision", ""));
    assert!(!injected(
        "revved",
        "opted-out",
        "sidecar.istio.io/inject: \"false\""
    ));
    assert!(injected(
        "unlabelled",
        "by-revision",
        "istio.io/rev: default"
    ));
    assert!(injected(
        "unlabelled",
        "by-label",
        "sidecar.istio.io/inject: \"true\""
    ));
    assert!(!injected("unlabelled", "unasked", "app: x"));
    assert!(!injected(
        "unlabelled",
        "other-revision",
        "istio.io/rev: canary"
    ));

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
