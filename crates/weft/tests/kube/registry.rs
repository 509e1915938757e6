//! `weft control --kubeconfig`: Istio's bookinfo manifest applied unchanged becomes the
//! registry (Services, EndpointSlices with the pods' labels and service accounts), Istio's
//! networking samples applied with kubectl are in force, a bad VirtualService is named with its
//! field while the rest stays, and endpoints follow pod readiness.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::cluster::{Cluster, Control, SAMPLES, wait_for};

fn service<'a>(registry: &'a serde_json::Value, host: &str) -> Option<&'a serde_json::Value> {
    registry["services"]
        .as_array()?
        .iter()
        .find(|s| s["hostname"] == host)
}

fn endpoint_ips(registry: &serde_json::Value, host: &str) -> Vec<String> {
    let mut ips: Vec<String> = service(registry, host)
        .and_then(|s| s["endpoints"].as_array())
        .into_iter()
        .flatten()
        .filter_map(|e| e["address"].as_str().map(String::from))
        .collect();
    ips.sort();
    ips
}

#[test]
fn bookinfo_from_its_kubernetes_manifest() {
    let cluster = Cluster::up();
    cluster.install_crds();
    cluster.kubectl(&[
        "apply",
        "-f",
        &format!("{SAMPLES}/bookinfo/platform/kube/bookinfo.yaml"),
    ]);
    // The controllers make the pods of the six Deployments; no scheduler or kubelet runs them,
    // so each is bound to a node and marked running and ready here, with an address of its own.
    let mut pods: BTreeMap<String, String> = BTreeMap::new();
    let start = std::time::Instant::now();
    while pods.len() < 6 {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the Deployments' pods did not appear: {pods:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
        let list = cluster.json(&["-n", "default", "get", "pods"]);
        for p in list["items"].as_array().into_iter().flatten() {
            let name = p["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            let n = pods.len() + 10;
            pods.entry(name).or_insert_with(|| format!("10.244.0.{n}"));
        }
    }
    cluster.add_node("node-1", "eu", "eu-1");
    for (pod, ip) in &pods {
        cluster.bind("default", pod, "node-1");
        cluster.set_pod_status("default", pod, ip, true);
    }

    let control = Control::start(&cluster);
    let reviews = "reviews.default.svc.cluster.local";
    control.wait(
        "/debug/registryz",
        "three reviews endpoints and one productpage endpoint",
        Duration::from_secs(60),
        |r| {
            endpoint_ips(r, reviews).len() == 3
                && endpoint_ips(r, "productpage.default.svc.cluster.local").len() == 1
        },
    );
    let registry = control.debug("/debug/registryz").expect("registry");
    let svc = service(&registry, reviews).expect("reviews");
    assert_eq!(svc["ports"][0]["number"], 9080);
    assert_eq!(svc["ports"][0]["name"], "http");
    let mut versions: Vec<&str> = svc["endpoints"]
        .as_array()
        .expect("endpoints")
        .iter()
        .map(|e| {
            assert_eq!(e["service_account"], "bookinfo-reviews", "{e}");
            assert_eq!(e["locality"], "eu/eu-1", "{e}");
            assert_eq!(e["ports"]["http"], 9080, "{e}");
            assert!(
                e["workload"]
                    .as_str()
                    .is_some_and(|w| w.starts_with("reviews-v")),
                "{e}"
            );
            e["labels"]["version"].as_str().unwrap_or_default()
        })
        .collect();
    versions.sort();
    assert_eq!(versions, ["v1", "v2", "v3"]);
    // Every pod is a workload its proxy can find itself by.
    let workloads = registry["workloads"].as_array().expect("workloads");
    assert_eq!(workloads.len(), 6, "{workloads:?}");

    // Istio's networking samples, as written, with kubectl.
    for sample in ["destination-rule-all.yaml", "virtual-service-all-v1.yaml"] {
        cluster.kubectl(&[
            "apply",
            "-f",
            &format!("{SAMPLES}/bookinfo/networking/{sample}"),
        ]);
    }
    control.wait(
        "/debug/configz",
        "the reviews VirtualService and DestinationRule",
        Duration::from_secs(10),
        |c| {
            let kinds: Vec<(String, String)> = c["resources"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|r| {
                    (
                        r["kind"].as_str().unwrap_or_default().to_string(),
                        r["metadata"]["name"]
                            .as_str()
                            .unwrap_or_default()
                            .to_string(),
                    )
                })
                .collect();
            kinds.contains(&("VirtualService".into(), "reviews".into()))
                && kinds.contains(&("DestinationRule".into(), "reviews".into()))
        },
    );

    // A VirtualService the API server stores (the CRD keeps the spec as written) but Istio
    // refuses: named with its object and field; what was in force stays.
    cluster.kubectl_in(
        &["apply", "-f", "-"],
        "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: broken, namespace: default}
spec:
  hosts: [ratings]
  http:
  - timeout: soon
    route: [{destination: {host: ratings}}]
",
    );
    control.wait(
        "/debug/config_errors",
        "the broken VirtualService's problem",
        Duration::from_secs(10),
        |e| {
            e.as_array().into_iter().flatten().any(|p| {
                p.as_str().is_some_and(|p| {
                    p.starts_with("kubernetes:virtualservices.networking.istio.io/default/broken:")
                        && p.contains("timeout")
                })
            })
        },
    );
    // ... and in its status, as istiod writes its analysis.
    wait_for(
        "the broken VirtualService's status",
        Duration::from_secs(10),
        || {
            let vs = cluster.json(&[
                "-n",
                "default",
                "get",
                "virtualservices.networking.istio.io",
                "broken",
            ]);
            let msg = &vs["status"]["validationMessages"][0];
            let found = msg["level"] == "ERROR"
                && msg["description"]
                    .as_str()
                    .is_some_and(|d| d.contains("timeout"));
            if found {
                Ok(())
            } else {
                Err(vs["status"].to_string())
            }
        },
    );
    let config = control.debug("/debug/configz").expect("configz");
    assert!(
        config["resources"]
            .as_array()
            .expect("resources")
            .iter()
            .any(|r| r["kind"] == "VirtualService" && r["metadata"]["name"] == "reviews"),
        "the good VirtualService stays in force"
    );

    // A reviews pod turns unready, then ready again: the registry follows.
    let (v2, v2_ip) = pods
        .iter()
        .find(|(p, _)| p.starts_with("reviews-v2"))
        .expect("reviews-v2 pod");
    cluster.set_pod_status("default", v2, v2_ip, false);
    let took = control.wait(
        "/debug/registryz",
        "reviews-v2 out of the endpoints",
        Duration::from_secs(10),
        |r| endpoint_ips(r, reviews).len() == 2 && !endpoint_ips(r, reviews).contains(v2_ip),
    );
    eprintln!("unready pod left the endpoints after {took:?}");
    cluster.set_pod_status("default", v2, v2_ip, true);
    control.wait(
        "/debug/registryz",
        "reviews-v2 back in the endpoints",
        Duration::from_secs(10),
        |r| endpoint_ips(r, reviews).contains(v2_ip),
    );

    // The API server restarts: nothing the control plane holds is lost meanwhile, and its
    // watches resume (a change made after the restart arrives).
    cluster.restart_apiserver();
    let registry = control.debug("/debug/registryz").expect("registry");
    assert_eq!(endpoint_ips(&registry, reviews).len(), 3, "{registry}");
    cluster.set_pod_status("default", v2, v2_ip, false);
    let took = control.wait(
        "/debug/registryz",
        "a change after the API server's restart",
        Duration::from_secs(60),
        |r| !endpoint_ips(r, reviews).contains(v2_ip),
    );
    eprintln!("after the API server's restart, a change arrived in {took:?}");

    // MeshConfig discoverySelectors: only the namespaces they select make the registry.
    cluster.kubectl_in(
        &["apply", "-f", "-"],
        "apiVersion: v1
kind: Namespace
metadata: {name: istio-system}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: istio, namespace: istio-system}
data:
  mesh: |
    discoverySelectors:
    - matchLabels: {mesh: weft}
",
    );
    control.wait(
        "/debug/registryz",
        "default's services out of the discovery scope",
        Duration::from_secs(30),
        |r| service(r, reviews).is_none(),
    );
    cluster.kubectl(&["label", "namespace", "default", "mesh=weft"]);
    control.wait(
        "/debug/registryz",
        "default's services back once it is labelled",
        Duration::from_secs(30),
        |r| endpoint_ips(r, reviews).len() == 2,
    );
}
