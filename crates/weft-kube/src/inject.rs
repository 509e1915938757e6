//! Sidecar injection as Istio's injector decides and writes it: which pods get a sidecar
//! (the namespace's `istio-injection=enabled` or `istio.io/rev` label, overridden by the pod's
//! `sidecar.istio.io/inject` label, then annotation; never host-network pods or pods already
//! injected), and the JSON patch that adds the `istio-init` init container (`weft iptables`
//! with the pod's `traffic.sidecar.istio.io/*` annotations) and the `istio-proxy` container
//! (`weft proxy` as uid 1337, its ServiceAccount token for the audience `istio-ca`, ports and
//! readiness as Istio's), the volumes, and Istio's labels and status annotation. The proxy
//! config in force for the pod (proxy_config.rs) sets its concurrency, drain time and
//! environment, and with `holdApplicationUntilProxyStarts` puts the sidecar first with a
//! postStart hook that waits for it; the app's probes go through the sidecar (probe.rs).

pub mod metrics;
pub mod probe;
pub mod proxy_config;

use k8s_openapi::api::core::v1::Pod;
use serde_json::{Value, json};
use weft_api::MeshProxyConfig;

/// The label or annotation a pod opts in or out with.
pub const INJECT: &str = "sidecar.istio.io/inject";
/// The annotation an injected pod carries.
pub const STATUS: &str = "sidecar.istio.io/status";

/// What the injected containers need to know.
#[derive(Debug, Clone)]
pub struct InjectOptions {
    /// The image with the `weft` binary.
    pub image: String,
    /// The control plane's TLS xDS and CA address (`istiod.istio-system.svc:15012`).
    pub control_plane: String,
    /// The name its certificate is verified for (`istiod.istio-system.svc`).
    pub control_plane_name: String,
}

/// Where the CA root is mounted in the sidecar (Istio's path), from ConfigMap
/// `istio-ca-root-cert`.
const ROOT_CERT_DIR: &str = "/var/run/secrets/istio";

/// Namespaces Istio never injects into.
const IGNORED_NAMESPACES: [&str; 2] = ["kube-system", "kube-public"];

/// Whether a pod the webhook configuration sent (its namespace and object selectors chose it)
/// gets a sidecar, as Istio's injector decides with its default policy `enabled`: not in
/// kube-system or kube-public, not with the host's network, not twice; the pod's
/// `sidecar.istio.io/inject` label, else annotation, says no with any value but
/// y/yes/true/on (empty: the default, yes).
pub fn should_inject(namespace: &str, pod: &Pod) -> bool {
    let spec = pod.spec.as_ref();
    if IGNORED_NAMESPACES.contains(&namespace) || spec.and_then(|s| s.host_network) == Some(true) {
        return false;
    }
    let meta = &pod.metadata;
    if meta
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key(STATUS))
        || spec.is_some_and(|s| s.containers.iter().any(|c| c.name == "istio-proxy"))
    {
        return false;
    }
    let said = meta
        .labels
        .as_ref()
        .and_then(|l| l.get(INJECT))
        .or_else(|| meta.annotations.as_ref().and_then(|a| a.get(INJECT)));
    match said.map(|v| v.to_ascii_lowercase()) {
        None => true,
        Some(v) => matches!(v.as_str(), "" | "y" | "yes" | "true" | "on"),
    }
}

fn annotation<'a>(pod: &'a Pod, key: &str) -> Option<&'a str> {
    pod.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(key))
        .map(String::as_str)
}

/// `weft iptables` arguments from the pod's capture annotations (Istio's defaults otherwise).
pub fn iptables_args(pod: &Pod) -> Vec<String> {
    let a = |k: &str| annotation(pod, &format!("traffic.sidecar.istio.io/{k}"));
    let mut exclude_inbound = "15090,15021,15020".to_string();
    if let Some(more) = a("excludeInboundPorts").filter(|s| !s.is_empty()) {
        exclude_inbound = format!("{exclude_inbound},{more}");
    }
    let mut args = vec![
        "iptables".to_string(),
        "-p".into(),
        "15001".into(),
        "-z".into(),
        "15006".into(),
        "-u".into(),
        "1337".into(),
        "-g".into(),
        "1337".into(),
        "-i".into(),
        a("includeOutboundIPRanges").unwrap_or("*").into(),
        "-x".into(),
        a("excludeOutboundIPRanges").unwrap_or("").into(),
        "-b".into(),
        a("includeInboundPorts").unwrap_or("*").into(),
        "-d".into(),
        exclude_inbound,
    ];
    if let Some(o) = a("excludeOutboundPorts").filter(|s| !s.is_empty()) {
        args.extend(["-o".into(), o.into()]);
    }
    if let Some(q) = a("includeOutboundPorts").filter(|s| !s.is_empty()) {
        args.extend(["-q".into(), q.into()]);
    }
    args
}

/// The canonical service name and revision Istio labels a pod with (telemetry's rules; the
/// workload's name is the Deployment's, from the pod's generated name, else the pod's).
fn canonical(pod: &Pod) -> (String, String) {
    let labels = pod.metadata.labels.clone().unwrap_or_default();
    let workload = pod
        .metadata
        .generate_name
        .as_deref()
        .map(|g| {
            // `reviews-v1-54778d4dc4-` → `reviews-v1`: the Deployment's name.
            let g = g.trim_end_matches('-');
            g.rsplit_once('-')
                .map_or(g, |(deployment, _)| deployment)
                .to_string()
        })
        .or_else(|| pod.metadata.name.clone())
        .unwrap_or_default();
    (
        weft_telemetry::labels::canonical_service(&labels, &workload),
        weft_telemetry::labels::canonical_revision(&labels),
    )
}

/// JSON Pointer escaping of a map key.
fn escape(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

/// The JSON patch (RFC 6902) that injects the sidecar into `pod`, which runs with the proxy
/// config `pc`.
pub fn patch(
    pod: &Pod,
    o: &InjectOptions,
    pc: &MeshProxyConfig,
    merge_metrics: bool,
) -> Vec<Value> {
    let init = json!({
        "name": "istio-init",
        "image": o.image,
        "args": iptables_args(pod),
        "securityContext": {
            "runAsUser": 0, "runAsGroup": 0, "runAsNonRoot": false, "privileged": false,
            "allowPrivilegeEscalation": false, "readOnlyRootFilesystem": false,
            "capabilities": {"add": ["NET_ADMIN", "NET_RAW"], "drop": ["ALL"]},
        },
    });
    let field = |name: &str, path: &str| json!({"name": name, "valueFrom": {"fieldRef": {"fieldPath": path}}});
    let mut args: Vec<String> = [
        "proxy",
        "--control-plane",
        o.control_plane.as_str(),
        "--workload",
        "$(POD_NAMESPACE)/$(POD_NAME)",
        "--token-file",
        "/var/run/secrets/tokens/istio-token",
        "--pod-ip",
        "$(INSTANCE_IP)",
        "--service-account",
        "$(SERVICE_ACCOUNT)",
        "--control-plane-name",
        o.control_plane_name.as_str(),
    ]
    .map(String::from)
    .to_vec();
    args.extend([
        "--control-plane-root".into(),
        format!("{ROOT_CERT_DIR}/root-cert.pem"),
    ]);
    if let Some(c) = pc.concurrency {
        args.extend(["--concurrency".into(), c.max(0).to_string()]);
    }
    args.extend([
        "--termination-drain".into(),
        pc.termination_drain_duration.to_string(),
    ]);
    let mut env = vec![
        field("POD_NAME", "metadata.name"),
        field("POD_NAMESPACE", "metadata.namespace"),
        field("INSTANCE_IP", "status.podIP"),
        field("SERVICE_ACCOUNT", "spec.serviceAccountName"),
    ];
    // proxyMetadata: the agent's environment (ISTIO_META_DNS_CAPTURE, ISTIO_DELTA_XDS, …).
    for (k, v) in &pc.proxy_metadata {
        env.push(json!({"name": k, "value": v}));
    }
    let metrics = metrics::merge(pod, merge_metrics);
    if let Some(app) = metrics.as_ref().and_then(|m| m.env.clone()) {
        env.push(json!({"name": metrics::ENV, "value": app}));
    }
    let (probe_ops, probers) = probe::rewrite(pod);
    if !probers.is_empty() {
        env.push(json!({"name": "ISTIO_KUBE_APP_PROBERS", "value": Value::from(serde_json::Map::from_iter(probers)).to_string()}));
    }
    let mut proxy = json!({
        "name": "istio-proxy",
        "image": o.image,
        "args": args,
        "env": env,
        "ports": [{"name": "http-envoy-prom", "containerPort": 15090, "protocol": "TCP"}],
        "readinessProbe": {
            "httpGet": {"path": "/healthz/ready", "port": 15021},
            "initialDelaySeconds": 1, "periodSeconds": 2, "timeoutSeconds": 3, "failureThreshold": 30,
        },
        "securityContext": {
            "runAsUser": 1337, "runAsGroup": 1337, "runAsNonRoot": true, "privileged": false,
            "allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true,
            "capabilities": {"drop": ["ALL"]},
        },
        "volumeMounts": [
            {"name": "istio-token", "mountPath": "/var/run/secrets/tokens"},
            {"name": "istio-envoy", "mountPath": "/etc/istio/proxy"},
            {"name": "istiod-ca-cert", "mountPath": ROOT_CERT_DIR},
        ],
    });
    let volumes = [
        json!({"name": "istio-envoy", "emptyDir": {"medium": "Memory"}}),
        json!({"name": "istio-token", "projected": {"sources": [{"serviceAccountToken": {
            "audience": "istio-ca", "expirationSeconds": 43200, "path": "istio-token"}}]}}),
        json!({"name": "istiod-ca-cert", "configMap": {"name": crate::rootcert::CONFIGMAP}}),
    ];
    let spec = pod.spec.as_ref();
    // The probes first: their paths count the containers as the pod has them.
    let mut ops = probe_ops;
    // Arrays: created when absent, appended to otherwise.
    let append = |ops: &mut Vec<Value>, path: &str, present: bool, items: &[Value]| {
        if present {
            for item in items {
                ops.push(json!({"op": "add", "path": format!("{path}/-"), "value": item}));
            }
        } else {
            ops.push(json!({"op": "add", "path": path, "value": items}));
        }
    };
    append(
        &mut ops,
        "/spec/initContainers",
        spec.is_some_and(|s| s.init_containers.is_some()),
        &[init],
    );
    if pc.hold_application() {
        // Istio's holdApplicationUntilProxyStarts: the sidecar first, and the kubelet starts
        // the next container only once its postStart hook (`pilot-agent wait`) returns.
        proxy["lifecycle"] = json!({"postStart": {"exec": {"command": ["weft", "proxy-wait"]}}});
        ops.push(json!({"op": "add", "path": "/spec/containers/0", "value": proxy}));
    } else {
        append(&mut ops, "/spec/containers", true, &[proxy]);
    }
    append(
        &mut ops,
        "/spec/volumes",
        spec.is_some_and(|s| s.volumes.is_some()),
        &volumes,
    );
    let (name, revision) = canonical(pod);
    let labels = [
        ("security.istio.io/tlsMode", "istio".to_string()),
        ("service.istio.io/canonical-name", name),
        ("service.istio.io/canonical-revision", revision),
    ];
    let status = json!({
        "initContainers": ["istio-init"],
        "containers": ["istio-proxy"],
        "volumes": ["istio-envoy", "istio-token", "istiod-ca-cert"],
    })
    .to_string();
    let mut annotations = vec![(STATUS, status)];
    if let Some(m) = metrics {
        annotations.extend(m.annotations);
    }
    for (map, entries, present) in [
        ("labels", &labels[..], pod.metadata.labels.is_some()),
        (
            "annotations",
            &annotations[..],
            pod.metadata.annotations.is_some(),
        ),
    ] {
        if !present {
            ops.push(json!({"op": "add", "path": format!("/metadata/{map}"), "value": {}}));
        }
        for (k, v) in entries {
            ops.push(
                json!({"op": "add", "path": format!("/metadata/{map}/{}", escape(k)), "value": v}),
            );
        }
    }
    ops
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(json: Value) -> Pod {
        serde_json::from_value(json).expect("pod")
    }

    #[test]
    fn who_gets_a_sidecar() {
        let plain =
            pod(json!({"metadata": {"name": "a"}, "spec": {"containers": [{"name": "app"}]}}));
        assert!(should_inject("default", &plain));
        assert!(!should_inject("kube-system", &plain));
        // The pod's label beats its annotation; any value but y/yes/true/on says no.
        let opt_out = pod(
            json!({"metadata": {"name": "a", "labels": {INJECT: "false"}, "annotations": {INJECT: "true"}},
                                 "spec": {"containers": [{"name": "app"}]}}),
        );
        assert!(!should_inject("default", &opt_out));
        let odd = pod(
            json!({"metadata": {"name": "a", "annotations": {INJECT: "enabled"}},
                             "spec": {"containers": [{"name": "app"}]}}),
        );
        assert!(!should_inject("default", &odd));
        let opt_in = pod(json!({"metadata": {"name": "a", "labels": {INJECT: "Yes"}},
                                "spec": {"containers": [{"name": "app"}]}}));
        assert!(should_inject("default", &opt_in));
        // Never host network, never twice.
        let host = pod(
            json!({"metadata": {"name": "a"}, "spec": {"hostNetwork": true, "containers": [{"name": "app"}]}}),
        );
        assert!(!should_inject("default", &host));
        let done = pod(
            json!({"metadata": {"name": "a"}, "spec": {"containers": [{"name": "app"}, {"name": "istio-proxy"}]}}),
        );
        assert!(!should_inject("default", &done));
    }

    #[test]
    fn capture_follows_the_pods_annotations() {
        let p = pod(json!({"metadata": {"name": "a", "annotations": {
            "traffic.sidecar.istio.io/excludeOutboundPorts": "5432",
            "traffic.sidecar.istio.io/includeOutboundIPRanges": "10.96.0.0/12",
            "traffic.sidecar.istio.io/excludeInboundPorts": "9999"}},
            "spec": {"containers": [{"name": "app"}]}}));
        let args = iptables_args(&p).join(" ");
        assert_eq!(
            args,
            "iptables -p 15001 -z 15006 -u 1337 -g 1337 -i 10.96.0.0/12 -x  -b * -d 15090,15021,15020,9999 -o 5432"
        );
    }

    #[test]
    fn the_patch_adds_istios_containers_volumes_labels_and_status() {
        let p = pod(
            json!({"metadata": {"name": "reviews-v1-x", "generateName": "reviews-v1-54778d4dc4-",
                                        "labels": {"app": "reviews", "version": "v1"}},
                           "spec": {"serviceAccountName": "bookinfo-reviews", "containers": [{"name": "reviews"}]}}),
        );
        let o = InjectOptions {
            image: "weft:test".into(),
            control_plane: "istiod.istio-system.svc:15012".into(),
            control_plane_name: "istiod.istio-system.svc".into(),
        };
        let ops = patch(&p, &o, &MeshProxyConfig::default(), true);
        // Applied to the pod, the patch gives what the API server would store.
        let mut doc = serde_json::to_value(&p).expect("json");
        for op in &ops {
            apply(&mut doc, op);
        }
        let spec = &doc["spec"];
        assert_eq!(spec["initContainers"][0]["name"], "istio-init");
        assert_eq!(spec["containers"][0]["name"], "reviews");
        let proxy = &spec["containers"][1];
        assert_eq!(proxy["name"], "istio-proxy");
        assert_eq!(proxy["securityContext"]["runAsUser"], 1337);
        assert_eq!(proxy["readinessProbe"]["httpGet"]["port"], 15021);
        assert!(
            proxy["args"]
                .as_array()
                .expect("args")
                .contains(&json!("istiod.istio-system.svc:15012"))
        );
        assert_eq!(
            spec["volumes"][1]["projected"]["sources"][0]["serviceAccountToken"]["audience"],
            "istio-ca"
        );
        let added = &doc["metadata"]["labels"];
        assert_eq!(added["security.istio.io/tlsMode"], "istio");
        assert_eq!(added["service.istio.io/canonical-name"], "reviews");
        assert_eq!(added["service.istio.io/canonical-revision"], "v1");
        assert!(
            doc["metadata"]["annotations"][STATUS]
                .as_str()
                .is_some_and(|s| s.contains("istio-proxy"))
        );
        // Prometheus is pointed at the sidecar (no app annotations: nothing of the app's).
        assert_eq!(
            doc["metadata"]["annotations"]["prometheus.io/port"],
            "15020"
        );
        assert_eq!(
            doc["metadata"]["annotations"]["prometheus.io/path"],
            "/stats/prometheus"
        );
        assert!(
            !proxy["env"]
                .as_array()
                .expect("env")
                .iter()
                .any(|e| e["name"] == metrics::ENV)
        );
        // Injected once: not again.
        let injected: Pod = serde_json::from_value(doc).expect("pod");
        assert!(!should_inject("default", &injected));

        // An app with its own metrics: the sidecar gets them to merge; with merging off the
        // pod's annotations stay as written.
        let mut p = p;
        p.metadata.annotations = Some(
            [
                ("prometheus.io/scrape", "true"),
                ("prometheus.io/port", "9080"),
            ]
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .into(),
        );
        for (enabled, port, env) in [
            (
                true,
                "15020",
                Some(json!({"scrape": "true", "port": "9080", "path": ""})),
            ),
            (false, "9080", None),
        ] {
            let mut doc = serde_json::to_value(&p).expect("json");
            for op in &patch(&p, &o, &MeshProxyConfig::default(), enabled) {
                apply(&mut doc, op);
            }
            assert_eq!(doc["metadata"]["annotations"]["prometheus.io/port"], port);
            let got = doc["spec"]["containers"][1]["env"]
                .as_array()
                .expect("env")
                .iter()
                .find(|e| e["name"] == metrics::ENV)
                .map(|e| {
                    serde_json::from_str::<Value>(e["value"].as_str().unwrap_or_default())
                        .expect("JSON")
                });
            assert_eq!(got, env);
        }
    }

    #[test]
    fn the_proxy_config_shapes_the_sidecar_and_probes_go_through_it() {
        let p = pod(
            json!({"metadata": {"name": "web", "labels": {"app": "web"}},
            "spec": {"containers": [{"name": "web", "readinessProbe": {"httpGet": {"path": "/ready", "port": 8080}}}]}}),
        );
        let o = InjectOptions {
            image: "weft:test".into(),
            control_plane: "istiod.istio-system.svc:15012".into(),
            control_plane_name: "istiod.istio-system.svc".into(),
        };
        let mut pc = MeshProxyConfig {
            concurrency: Some(0),
            hold_application_until_proxy_starts: Some(true),
            ..MeshProxyConfig::default()
        };
        pc.proxy_metadata
            .insert("ISTIO_META_DNS_CAPTURE".into(), "true".into());
        let mut doc = serde_json::to_value(&p).expect("json");
        for op in &patch(&p, &o, &pc, true) {
            apply(&mut doc, op);
        }
        let containers = &doc["spec"]["containers"];
        // The sidecar first, waited for; the app's probe at the status port.
        assert_eq!(containers[0]["name"], "istio-proxy");
        assert_eq!(
            containers[0]["lifecycle"]["postStart"]["exec"]["command"],
            json!(["weft", "proxy-wait"])
        );
        assert_eq!(containers[1]["name"], "web");
        assert_eq!(
            containers[1]["readinessProbe"]["httpGet"],
            json!({"path": "/app-health/web/readyz", "port": 15020, "scheme": "HTTP"})
        );
        let args: Vec<&str> = containers[0]["args"]
            .as_array()
            .expect("args")
            .iter()
            .filter_map(Value::as_str)
            .collect();
        assert!(
            args.windows(2).any(|w| w == ["--concurrency", "0"]),
            "{args:?}"
        );
        assert!(
            args.windows(2).any(|w| w == ["--termination-drain", "5s"]),
            "{args:?}"
        );
        let env = containers[0]["env"].as_array().expect("env");
        let var = |k: &str| {
            env.iter()
                .find(|e| e["name"] == k)
                .map(|e| e["value"].clone())
        };
        assert_eq!(var("ISTIO_META_DNS_CAPTURE"), Some(json!("true")));
        let probers: Value = serde_json::from_str(
            var("ISTIO_KUBE_APP_PROBERS")
                .and_then(|v| v.as_str().map(str::to_string))
                .as_deref()
                .unwrap_or("{}"),
        )
        .expect("probers JSON");
        assert_eq!(probers["/app-health/web/readyz"]["httpGet"]["port"], 8080);
    }

    /// A small RFC 6902 `add` (all the injector emits), for the test.
    fn apply(doc: &mut Value, op: &Value) {
        assert_eq!(op["op"], "add");
        let path = op["path"].as_str().expect("path");
        let mut parts: Vec<String> = path
            .split('/')
            .skip(1)
            .map(|p| p.replace("~1", "/").replace("~0", "~"))
            .collect();
        let last = parts.pop().expect("last");
        let mut at = doc;
        for p in parts {
            at = if let Ok(i) = p.parse::<usize>() {
                &mut at[i]
            } else {
                &mut at[p.as_str()]
            };
        }
        let value = op["value"].clone();
        if last == "-" {
            at.as_array_mut().expect("array").push(value);
        } else if let (Some(list), Ok(i)) = (at.as_array_mut(), last.parse::<usize>()) {
            list.insert(i, value);
        } else {
            at[last.as_str()] = value;
        }
    }
}
