//! The app probe rewrite of Istio's injector: each HTTP (HTTP or HTTPS) and TCP readiness,
//! liveness and startup probe of the pod's containers is pointed at the sidecar's status port,
//! `GET :15020/app-health/<container>/<readyz|livez|startupz>`, and the original goes to the
//! proxy in `ISTIO_KUBE_APP_PROBERS`, which runs it against the app (weft-proxy's probe.rs).
//! Under STRICT mTLS the kubelet's plaintext probe would otherwise be refused by the sidecar.
//! Off with the pod annotation `sidecar.istio.io/rewriteAppHTTPProbers` set to a false value as Go
//! reads one (`false`, `0`, `f`, …). Exec probes need no rewrite; gRPC probes are left as they are
//! (the proxy does not run them).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, Pod, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::{Value, json};

/// The pod annotation that turns the rewrite off.
pub const ANNOTATION: &str = "sidecar.istio.io/rewriteAppHTTPProbers";

/// The sidecar's status port, where the rewritten probes go.
pub const STATUS_PORT: i32 = 15020;

/// The JSON patch operations that rewrite the probes, and the probers for the proxy (path →
/// original handler and timeout); both empty when nothing is rewritten.
pub fn rewrite(pod: &Pod) -> (Vec<Value>, BTreeMap<String, Value>) {
    let mut ops = Vec::new();
    let mut probers = BTreeMap::new();
    let off = pod
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(ANNOTATION))
        .is_some_and(|v| weft_api::go_bool(v) == Some(false));
    let Some(spec) = pod.spec.as_ref().filter(|_| !off) else {
        return (ops, probers);
    };
    for (i, c) in spec.containers.iter().enumerate() {
        for (field, probe, kind) in [
            ("readinessProbe", &c.readiness_probe, "readyz"),
            ("livenessProbe", &c.liveness_probe, "livez"),
            ("startupProbe", &c.startup_probe, "startupz"),
        ] {
            let Some(probe) = probe else { continue };
            let Some(original) = original(c, probe) else {
                continue;
            };
            let path = format!("/app-health/{}/{kind}", c.name);
            let mut rewritten = serde_json::to_value(probe).unwrap_or_else(|_| json!({}));
            if let Some(obj) = rewritten.as_object_mut() {
                obj.remove("tcpSocket");
                obj.insert(
                    "httpGet".into(),
                    json!({"path": path, "port": STATUS_PORT, "scheme": "HTTP"}),
                );
            }
            ops.push(json!({"op": "add", "path": format!("/spec/containers/{i}/{field}"), "value": rewritten}));
            probers.insert(path, original);
        }
    }
    (ops, probers)
}

/// The handler the proxy runs in place of the kubelet (named ports resolved), or None when the
/// probe is not rewritten.
fn original(c: &Container, probe: &Probe) -> Option<Value> {
    let port = |p: &IntOrString| -> Option<i32> {
        match p {
            IntOrString::Int(n) => Some(*n),
            IntOrString::String(name) => c
                .ports
                .iter()
                .flatten()
                .find(|cp| cp.name.as_deref() == Some(name.as_str()))
                .map(|cp| cp.container_port)
                .or_else(|| name.parse().ok()),
        }
    };
    let timeout = probe.timeout_seconds.unwrap_or(1);
    if let Some(h) = &probe.http_get {
        let scheme = match h.scheme.as_deref() {
            None => "HTTP",
            Some(s) if s.eq_ignore_ascii_case("http") => "HTTP",
            Some(s) if s.eq_ignore_ascii_case("https") => "HTTPS",
            Some(_) => return None,
        };
        let port = port(&h.port)?;
        if port == STATUS_PORT {
            return None;
        }
        let mut get = json!({"path": h.path.clone().unwrap_or_else(|| "/".into()), "port": port, "scheme": scheme});
        if let Some(host) = &h.host {
            get["host"] = json!(host);
        }
        if let Some(headers) = &h.http_headers {
            get["httpHeaders"] = serde_json::to_value(headers).unwrap_or_else(|_| json!([]));
        }
        return Some(json!({"httpGet": get, "timeoutSeconds": timeout}));
    }
    if let Some(t) = &probe.tcp_socket {
        let mut tcp = json!({"port": port(&t.port)?});
        if let Some(host) = &t.host {
            tcp["host"] = json!(host);
        }
        return Some(json!({"tcpSocket": tcp, "timeoutSeconds": timeout}));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_and_tcp_probes_go_to_the_status_port() {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "web"},
            "spec": {"containers": [
                {"name": "web", "ports": [{"name": "http", "containerPort": 8080}],
                 "readinessProbe": {"httpGet": {"path": "/ready", "port": "http",
                    "httpHeaders": [{"name": "Host", "value": "web.example"}]}, "periodSeconds": 3},
                 "livenessProbe": {"tcpSocket": {"port": 8080}, "timeoutSeconds": 2},
                 "startupProbe": {"exec": {"command": ["true"]}}},
                {"name": "tls", "readinessProbe": {"httpGet": {"path": "/", "port": 8443, "scheme": "HTTPS"}}},
            ]}
        }))
        .expect("pod");
        let (ops, probers) = rewrite(&pod);
        assert_eq!(ops.len(), 3, "{ops:?}");
        assert_eq!(ops[0]["path"], "/spec/containers/0/readinessProbe");
        assert_eq!(
            ops[0]["value"],
            json!({"httpGet": {"path": "/app-health/web/readyz", "port": 15020, "scheme": "HTTP"}, "periodSeconds": 3})
        );
        assert_eq!(ops[1]["value"]["httpGet"]["path"], "/app-health/web/livez");
        assert!(ops[1]["value"].get("tcpSocket").is_none());
        assert_eq!(ops[1]["value"]["timeoutSeconds"], 2);
        assert_eq!(
            probers["/app-health/web/readyz"],
            json!({"httpGet": {"path": "/ready", "port": 8080, "scheme": "HTTP",
                "httpHeaders": [{"name": "Host", "value": "web.example"}]}, "timeoutSeconds": 1})
        );
        assert_eq!(
            probers["/app-health/web/livez"],
            json!({"tcpSocket": {"port": 8080}, "timeoutSeconds": 2})
        );
        // HTTPS: through the sidecar too, which probes the app over TLS.
        assert_eq!(ops[2]["path"], "/spec/containers/1/readinessProbe");
        assert_eq!(
            probers["/app-health/tls/readyz"]["httpGet"]["scheme"],
            "HTTPS"
        );
        // Off by annotation, with Go's false values.
        for no in ["false", "0", "f", "False"] {
            let mut off = pod.clone();
            off.metadata.annotations = Some([(ANNOTATION.to_string(), no.to_string())].into());
            assert!(rewrite(&off).0.is_empty(), "{no}");
        }
        let mut on = pod.clone();
        on.metadata.annotations = Some([(ANNOTATION.to_string(), "true".to_string())].into());
        assert_eq!(rewrite(&on).0.len(), 3);
    }
}
