//! Manifests for a cluster: Istio's CustomResourceDefinitions for the kinds Weft applies, with
//! the versions Istio serves (v1alpha3/v1beta1/v1 for networking, v1beta1/v1 for security,
//! v1alpha1/v1 for telemetry; one schema for all, as Istio's CRDs convert by relabelling).
//! The spec is preserved as written: Weft's own validation (the same as `weft validate`)
//! names bad fields in the control plane's log and problems.

use crate::config::KINDS;

/// The plural resource name of an Istio kind (`ServiceEntry` → `serviceentries`).
pub fn plural(kind: &str) -> String {
    let lower = kind.to_ascii_lowercase();
    if let Some(stem) = lower.strip_suffix('y') {
        format!("{stem}ies")
    } else {
        format!("{lower}s")
    }
}

/// istioctl's short names.
fn short_names(kind: &str) -> &'static [&'static str] {
    match kind {
        "VirtualService" => &["vs"],
        "DestinationRule" => &["dr"],
        "ServiceEntry" => &["se"],
        "WorkloadEntry" => &["we"],
        "Gateway" => &["gw"],
        "PeerAuthentication" => &["pa"],
        "RequestAuthentication" => &["ra"],
        "AuthorizationPolicy" => &["ap"],
        _ => &[],
    }
}

/// Versions served per kind, the storage one last.
fn versions(group: &str, kind: &str) -> &'static [&'static str] {
    match (group, kind) {
        (_, "ProxyConfig") => &["v1beta1"],
        ("networking.istio.io", _) => &["v1alpha3", "v1beta1", "v1"],
        ("security.istio.io", _) => &["v1beta1", "v1"],
        _ => &["v1alpha1", "v1"],
    }
}

/// The CustomResourceDefinitions, one YAML document each.
pub fn crds() -> String {
    let mut out = String::new();
    for (group, kind) in KINDS {
        let plural = plural(kind);
        let vs = versions(group, kind);
        let short = short_names(kind);
        out.push_str(&format!(
            "apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: {plural}.{group}
  labels: {{app.kubernetes.io/part-of: weft}}
spec:
  group: {group}
  scope: Namespaced
  names:
    kind: {kind}
    listKind: {kind}List
    plural: {plural}
    singular: {singular}
    shortNames: [{short}]
    categories: [istio-io, {category}]
  versions:
",
            singular = kind.to_ascii_lowercase(),
            short = short.join(", "),
            category = group.split('.').next().unwrap_or_default().to_string() + "-istio-io",
        ));
        for (i, v) in vs.iter().enumerate() {
            out.push_str(&format!(
                "  - name: {v}
    served: true
    storage: {storage}
    subresources: {{status: {{}}}}
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec: {{type: object, x-kubernetes-preserve-unknown-fields: true}}
          status: {{type: object, x-kubernetes-preserve-unknown-fields: true}}
",
                storage = i + 1 == vs.len(),
            ));
        }
        out.push_str("---\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plurals_as_istio_names_them() {
        assert_eq!(plural("ServiceEntry"), "serviceentries");
        assert_eq!(plural("AuthorizationPolicy"), "authorizationpolicies");
        assert_eq!(plural("Telemetry"), "telemetries");
        assert_eq!(plural("VirtualService"), "virtualservices");
        assert_eq!(plural("Sidecar"), "sidecars");
    }

    #[test]
    fn one_crd_per_kind_with_one_storage_version() {
        let yaml = crds();
        let docs: Vec<&str> = yaml.split("---\n").filter(|d| !d.is_empty()).collect();
        assert_eq!(docs.len(), KINDS.len());
        for d in docs {
            let v: serde_json::Value = serde_saphyr::from_str(d).expect("valid YAML");
            let versions = v["spec"]["versions"].as_array().expect("versions");
            assert_eq!(
                versions.iter().filter(|v| v["storage"] == true).count(),
                1,
                "{d}"
            );
        }
    }
}
