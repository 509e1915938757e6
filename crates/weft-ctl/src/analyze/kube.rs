//! Analyzers of the Kubernetes resources beside the Istio ones: IST0102 (a namespace not
//! enabled for injection), IST0108 (an unknown Istio annotation), IST0118 (a Service port
//! name outside Istio's naming convention).

use super::{Input, Level, Message, Origin};

/// Namespaces the analyzers leave alone, as istioctl does.
const SYSTEM_NAMESPACES: [&str; 5] = [
    "istio-system",
    "kube-system",
    "kube-public",
    "kube-node-lease",
    "local-path-storage",
];

pub(super) fn run(input: &Input, out: &mut Vec<Message>) {
    for ns in input.objects("Namespace") {
        if SYSTEM_NAMESPACES.contains(&ns.meta.name.as_str()) {
            continue;
        }
        let labels = &ns.meta.labels;
        if !labels.contains_key("istio-injection") && !labels.contains_key("istio.io/rev") {
            let n = &ns.meta.name;
            out.push(Message::new(
                "IST0102",
                Level::Info,
                format!(
                    "The namespace is not enabled for Istio injection. Run 'kubectl label namespace {n} istio-injection=enabled' to enable it, or 'kubectl label namespace {n} istio-injection=disabled' to explicitly mark it as not needing injection."
                ),
                &Origin::of_object(ns),
                Some("metadata"),
            ));
        }
    }
    for kind in ["Namespace", "Service", "Pod", "Deployment"] {
        for o in input.objects(kind) {
            for key in o.meta.annotations.keys() {
                if examined(key) && !super::annotations::known(key) {
                    out.push(Message::new(
                        "IST0108",
                        Level::Warning,
                        format!("Unknown annotation: {key}"),
                        &Origin::of_object(o),
                        Some("metadata.annotations"),
                    ));
                }
            }
        }
    }
    for svc in input.objects("Service") {
        if SYSTEM_NAMESPACES.contains(&svc.meta.namespace.as_str())
            || svc.meta.labels.contains_key("istio")
            || svc.meta.labels.get("release").is_some_and(|r| r == "istio")
            || svc.body["spec"]["type"].as_str() == Some("ExternalName")
        {
            continue;
        }
        let origin = Origin::of_object(svc);
        for (i, p) in svc.body["spec"]["ports"]
            .as_array()
            .into_iter()
            .flatten()
            .enumerate()
        {
            if p["protocol"].as_str() == Some("UDP") {
                continue;
            }
            let number = p["port"].as_u64().unwrap_or(0) as u32;
            let name = p["name"].as_str().unwrap_or_default();
            let protocol = weft_api::protocol_for_port(p["appProtocol"].as_str(), name, number);
            if protocol.is_unsupported() {
                // As the API server defaults it: the port itself when not written.
                let target = match &p["targetPort"] {
                    serde_json::Value::Number(n) => n.to_string(),
                    serde_json::Value::String(s) => s.clone(),
                    _ => number.to_string(),
                };
                out.push(Message::new(
                    "IST0118",
                    Level::Info,
                    format!(
                        "Port name {name} (port: {number}, targetPort: {target}) doesn't follow the naming convention of Istio port."
                    ),
                    &origin,
                    Some(&format!("spec.ports[{i}]")),
                ));
            }
        }
    }
}

/// istioctl examines `kubernetes.io/ingress.class` and the annotations whose text before the
/// first `/` ends in `istio.io`.
fn examined(key: &str) -> bool {
    key == "kubernetes.io/ingress.class"
        || key
            .split('/')
            .next()
            .is_some_and(|p| p.ends_with("istio.io"))
}
