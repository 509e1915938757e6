//! Istio's custom resources as the control plane reads them: the kinds Weft applies, found in
//! the API server's discovery (the version it prefers for each, which it converts every stored
//! version to), and each object turned into a Weft resource through the same parser and
//! validation as the directory's YAML, with the object named in place of a file.

use std::path::Path;

use kube::api::DynamicObject;
use weft_api::{Parsed, Resource};

/// (API group, kind) of every Istio resource Weft applies.
pub const KINDS: [(&str, &str); 11] = [
    ("networking.istio.io", "VirtualService"),
    ("networking.istio.io", "DestinationRule"),
    ("networking.istio.io", "ServiceEntry"),
    ("networking.istio.io", "WorkloadEntry"),
    ("networking.istio.io", "Gateway"),
    ("networking.istio.io", "Sidecar"),
    ("networking.istio.io", "ProxyConfig"),
    ("security.istio.io", "PeerAuthentication"),
    ("security.istio.io", "AuthorizationPolicy"),
    ("security.istio.io", "RequestAuthentication"),
    ("telemetry.istio.io", "Telemetry"),
];

/// The groups of [`KINDS`].
pub const GROUPS: [&str; 3] = [
    "networking.istio.io",
    "security.istio.io",
    "telemetry.istio.io",
];

/// Where an object comes from, as problems name it in place of a file:
/// `kubernetes:<plural>.<group>/<namespace>/<name>`.
pub fn origin(plural: &str, group: &str, obj: &DynamicObject) -> String {
    format!(
        "kubernetes:{plural}.{group}/{}/{}",
        obj.metadata.namespace.as_deref().unwrap_or_default(),
        obj.metadata.name.as_deref().unwrap_or_default()
    )
}

/// Parses one object (its apiVersion, kind, name, namespace, labels, annotations and spec;
/// the server's own metadata and the status are not the resource's).
pub fn parse(api_version: &str, kind: &str, origin: &str, obj: &DynamicObject) -> Parsed {
    let doc = serde_json::json!({
        "apiVersion": api_version,
        "kind": kind,
        "metadata": {
            "name": obj.metadata.name,
            "namespace": obj.metadata.namespace,
            "labels": obj.metadata.labels.clone().unwrap_or_default(),
            "annotations": obj.metadata.annotations.clone().unwrap_or_default(),
        },
        "spec": obj.data.get("spec").cloned().unwrap_or(serde_json::Value::Object(Default::default())),
    });
    // JSON is YAML: the directory's parser reads it with the same checks.
    weft_api::parse_documents_with_notes(&doc.to_string(), Path::new(origin))
}

/// The resources of a parse, or its problems as lines.
pub fn outcome(parsed: &Parsed) -> Result<Vec<Resource>, Vec<String>> {
    if parsed.problems.is_empty() {
        Ok(parsed.resources.clone())
    } else {
        Err(parsed.problems.iter().map(|p| p.to_string()).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(json: serde_json::Value) -> DynamicObject {
        serde_json::from_value(json).expect("object")
    }

    #[test]
    fn objects_parse_as_the_directory_yaml_does() {
        let vs = object(serde_json::json!({
            "apiVersion": "networking.istio.io/v1",
            "kind": "VirtualService",
            "metadata": {"name": "reviews", "namespace": "default", "resourceVersion": "7",
                         "uid": "u", "managedFields": [{"manager": "kubectl"}]},
            "spec": {"hosts": ["reviews"], "http": [{"route": [{"destination": {"host": "reviews", "subset": "v1"}}]}]},
            "status": {"observedGeneration": 1}
        }));
        let o = origin("virtualservices", "networking.istio.io", &vs);
        assert_eq!(
            o,
            "kubernetes:virtualservices.networking.istio.io/default/reviews"
        );
        let parsed = parse("networking.istio.io/v1", "VirtualService", &o, &vs);
        let rs = outcome(&parsed).expect("valid");
        assert_eq!(rs.len(), 1);
        assert_eq!(rs[0].meta.name, "reviews");
        assert_eq!(rs[0].meta.namespace, "default");

        let bad = object(serde_json::json!({
            "apiVersion": "networking.istio.io/v1",
            "kind": "VirtualService",
            "metadata": {"name": "bad", "namespace": "default"},
            "spec": {"hosts": ["reviews"], "http": [{"timeout": "soon", "route": [{"destination": {"host": "reviews"}}]}]}
        }));
        let o = origin("virtualservices", "networking.istio.io", &bad);
        let problems = outcome(&parse("networking.istio.io/v1", "VirtualService", &o, &bad))
            .expect_err("invalid");
        assert!(
            problems[0].starts_with("kubernetes:virtualservices.networking.istio.io/default/bad:")
                && problems[0].contains("timeout"),
            "{problems:?}"
        );
    }

    #[test]
    fn an_unknown_version_or_field_is_named() {
        let vs = object(serde_json::json!({
            "apiVersion": "networking.istio.io/v2",
            "kind": "VirtualService",
            "metadata": {"name": "next", "namespace": "default"},
            "spec": {"hosts": ["reviews"], "hostz": ["x"]}
        }));
        let o = origin("virtualservices", "networking.istio.io", &vs);
        let problems = outcome(&parse("networking.istio.io/v2", "VirtualService", &o, &vs))
            .expect_err("unknown version");
        assert!(
            problems
                .iter()
                .any(|p| p.contains("networking.istio.io/v2")),
            "{problems:?}"
        );
        let problems = outcome(&parse("networking.istio.io/v1", "VirtualService", &o, &vs))
            .expect_err("unknown field");
        assert!(problems.iter().any(|p| p.contains("hostz")), "{problems:?}");
    }
}
