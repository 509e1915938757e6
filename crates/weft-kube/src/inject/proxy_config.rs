//! The proxy config an injected pod runs with, worked out as Istio's injector does
//! (`EffectiveProxyConfig`): the mesh's `defaultConfig`, then the ProxyConfig resources of the
//! root namespace and of the pod's namespace, then the pod's `proxy.istio.io/config`
//! annotation (a ProxyConfig in YAML or JSON, merged field by field), then the ProxyConfig
//! resources whose selector matches the pod's labels (each overriding what it sets). ProxyConfig settings are read at
//! injection: a change applies to pods created after it, as in Istio.

use std::collections::BTreeMap;

use serde_json::Value;
use weft_api::{MeshConfig, MeshProxyConfig, Resource, Spec};

/// The annotation that overrides the proxy config of one pod.
pub const ANNOTATION: &str = "proxy.istio.io/config";

/// The effective proxy config; Err names the annotation and what is wrong with it.
pub fn effective(
    mesh: &MeshConfig,
    resources: &[Resource],
    namespace: &str,
    labels: &BTreeMap<String, String>,
    annotation: Option<&str>,
) -> Result<MeshProxyConfig, String> {
    let mut pc = mesh.default_config.clone();
    // Scopes: 0 the root namespace's, 1 the pod's namespace's, 2 those selecting the pod.
    let mut scoped: Vec<(u8, &Resource, &weft_api::ProxyConfig)> = resources
        .iter()
        .filter_map(|r| match &r.spec {
            Spec::ProxyConfig(p) => {
                let scope = match &p.selector {
                    Some(sel) if !sel.match_labels.is_empty() => {
                        let selected = r.meta.namespace == namespace
                            && sel
                                .match_labels
                                .iter()
                                .all(|(k, v)| labels.get(k) == Some(v));
                        selected.then_some(2)?
                    }
                    _ if r.meta.namespace == namespace => 1,
                    _ if r.meta.namespace == mesh.root_namespace => 0,
                    _ => return None,
                };
                Some((scope, r, p))
            }
            _ => None,
        })
        .collect();
    scoped.sort_by(|a, b| (a.0, &a.1.meta.name).cmp(&(b.0, &b.1.meta.name)));
    let apply = |pc: &mut MeshProxyConfig, p: &weft_api::ProxyConfig| {
        if let Some(c) = p.concurrency {
            pc.concurrency = Some(c);
        }
        pc.proxy_metadata.extend(p.environment_variables.clone());
        if p.image.is_some() {
            pc.image = p.image.clone();
        }
    };
    // Root namespace, then namespace.
    for (_, _, p) in scoped.iter().filter(|s| s.0 < 2) {
        apply(&mut pc, p);
    }
    // The annotation, then the workload's resources over it (Istio merges the annotation
    // "with lower priority than the workload-matching ProxyConfig CRs").
    if let Some(text) = annotation.filter(|t| !t.trim().is_empty()) {
        pc = annotated(pc, text)?;
    }
    for (_, _, p) in scoped.iter().filter(|s| s.0 == 2) {
        apply(&mut pc, p);
    }
    Ok(pc)
}

/// `pc` with the annotation's fields merged over it.
fn annotated(pc: MeshProxyConfig, text: &str) -> Result<MeshProxyConfig, String> {
    let overlay: Value = serde_saphyr::from_str(text)
        .map_err(|e| format!("annotation {ANNOTATION}: not YAML or JSON: {e}"))?;
    if !overlay.is_object() {
        return Err(format!(
            "annotation {ANNOTATION}: must be a ProxyConfig (a map of its fields), not {overlay}"
        ));
    }
    let mut base = serde_json::to_value(&pc)
        .map_err(|e| format!("cannot represent the mesh's defaultConfig: {e}"))?;
    merge(&mut base, overlay);
    serde_path_to_error::deserialize(base)
        .map_err(|e| format!("annotation {ANNOTATION}: field {}: {}", e.path(), e.inner()))
}

/// Merges `over` into `base` as a protobuf merge does: maps field by field, anything else
/// replaced.
fn merge(base: &mut Value, over: Value) {
    match (base, over) {
        (Value::Object(b), Value::Object(o)) => {
            for (k, v) in o {
                match b.get_mut(&k) {
                    Some(slot) if slot.is_object() && v.is_object() => merge(slot, v),
                    _ => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (b, o) => *b = o,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proxy_config(ns: &str, name: &str, yaml: &str) -> Resource {
        let doc = format!(
            "apiVersion: networking.istio.io/v1beta1\nkind: ProxyConfig\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n{yaml}"
        );
        let (mut res, problems) =
            weft_api::parse_documents(&doc, std::path::Path::new("test.yaml"));
        assert!(problems.is_empty(), "{problems:?}");
        res.remove(0)
    }

    #[test]
    fn mesh_then_root_namespace_then_namespace_then_annotation_then_workload() {
        let mut mesh = MeshConfig::default();
        mesh.default_config.concurrency = Some(2);
        mesh.default_config
            .proxy_metadata
            .insert("A".into(), "mesh".into());
        let resources = vec![
            proxy_config(
                "istio-system",
                "root",
                "  concurrency: 3\n  environmentVariables: {A: root, B: root}\n",
            ),
            proxy_config("bookinfo", "ns", "  concurrency: 4\n"),
            proxy_config(
                "bookinfo",
                "reviews",
                "  selector: {matchLabels: {app: reviews}}\n  environmentVariables: {B: workload}\n",
            ),
            proxy_config("other", "elsewhere", "  concurrency: 9\n"),
        ];
        let labels: BTreeMap<String, String> = [("app".to_string(), "reviews".to_string())].into();
        let pc = effective(&mesh, &resources, "bookinfo", &labels, None).expect("effective");
        assert_eq!(pc.concurrency, Some(4));
        assert_eq!(pc.proxy_metadata["A"], "root");
        assert_eq!(pc.proxy_metadata["B"], "workload");
        // Another app in the namespace: not the workload's.
        let pc = effective(&mesh, &resources, "bookinfo", &BTreeMap::new(), None).expect("ok");
        assert_eq!(pc.proxy_metadata["B"], "root");
        // The annotation last, merged: its map entries beside the others.
        let pc = effective(
            &mesh,
            &resources,
            "bookinfo",
            &labels,
            Some("concurrency: 1\nholdApplicationUntilProxyStarts: true\nproxyMetadata: {C: pod}\nterminationDrainDuration: 7s\n"),
        )
        .expect("annotated");
        assert_eq!(pc.concurrency, Some(1));
        assert!(pc.hold_application());
        assert_eq!(pc.proxy_metadata["A"], "root");
        assert_eq!(pc.proxy_metadata["C"], "pod");
        // A workload's resource beats the annotation where both set a field.
        let mut with_workload = resources.clone();
        with_workload.push(proxy_config(
            "bookinfo",
            "reviews-threads",
            "  selector: {matchLabels: {app: reviews}}\n  concurrency: 6\n",
        ));
        let over = effective(
            &mesh,
            &with_workload,
            "bookinfo",
            &labels,
            Some("concurrency: 1\nproxyMetadata: {B: pod}\n"),
        )
        .expect("annotated");
        assert_eq!(over.concurrency, Some(6));
        assert_eq!(over.proxy_metadata["B"], "workload");
        assert_eq!(pc.termination_drain_duration.to_string(), "7s");
        // JSON as well.
        let pc = effective(
            &mesh,
            &[],
            "bookinfo",
            &labels,
            Some(r#"{"holdApplicationUntilProxyStarts": true}"#),
        )
        .expect("json");
        assert!(pc.hold_application());
        assert_eq!(pc.concurrency, Some(2));
    }

    #[test]
    fn a_bad_annotation_is_named() {
        let mesh = MeshConfig::default();
        for (bad, says) in [
            ("concurrency: lots", "concurrency"),
            (
                "holdApplicationUntilProxyStart: true",
                "holdApplicationUntilProxyStart",
            ),
            ("- 1", "must be a ProxyConfig"),
        ] {
            let e = effective(&mesh, &[], "ns", &BTreeMap::new(), Some(bad)).expect_err(bad);
            assert!(e.contains(ANNOTATION) && e.contains(says), "{bad}: {e}");
        }
    }
}
