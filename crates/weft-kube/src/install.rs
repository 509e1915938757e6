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

/// What `weft install` is asked for.
#[derive(Debug, Clone)]
pub struct InstallOptions {
    /// The control plane's namespace (Istio's `istio-system`).
    pub namespace: String,
    /// The image with the `weft` binary.
    pub image: String,
}

/// Everything a cluster needs to run Weft's control plane, in apply order: the namespace,
/// Istio's CRDs, the control plane's ServiceAccount and its least-privilege RBAC (read the
/// registry and Istio's kinds, write their status, review tokens, publish the CA root in a
/// ConfigMap per namespace, keep its webhook configurations' CA bundle), the MeshConfig as ConfigMap `istio` (key `mesh`, Istio's defaults), and the
/// Deployment and Service `istiod` (15010 xDS and CA, 15012 the same over TLS, 15014
/// monitoring), named as Istio's so that proxies find it where they look.
pub fn manifests(o: &InstallOptions) -> String {
    let ns = &o.namespace;
    let image = &o.image;
    let injectors = injector_webhooks(ns);
    let mut out = format!(
        "apiVersion: v1
kind: Namespace
metadata:
  name: {ns}
  labels: {{app.kubernetes.io/part-of: weft}}
---
"
    );
    out.push_str(&crds());
    out.push_str(&format!(
        "apiVersion: v1
kind: ServiceAccount
metadata:
  name: weft-control
  namespace: {ns}
  labels: {{app.kubernetes.io/part-of: weft}}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: weft-control-{ns}
  labels: {{app.kubernetes.io/part-of: weft}}
rules:
- apiGroups: [\"\"]
  resources: [services, pods, nodes]
  verbs: [get, list, watch]
- apiGroups: [discovery.k8s.io]
  resources: [endpointslices]
  verbs: [get, list, watch]
- apiGroups: [networking.istio.io, security.istio.io, telemetry.istio.io]
  resources: [\"*\"]
  verbs: [get, list, watch]
- apiGroups: [networking.istio.io, security.istio.io, telemetry.istio.io]
  resources: [\"*/status\"]
  verbs: [get, patch, update]
- apiGroups: [authentication.k8s.io]
  resources: [tokenreviews]
  verbs: [create]
- apiGroups: [\"\"]
  resources: [namespaces]
  verbs: [get, list, watch]
- apiGroups: [\"\"]
  resources: [configmaps]
  verbs: [get, list, watch, create, patch, update]
- apiGroups: [admissionregistration.k8s.io]
  resources: [mutatingwebhookconfigurations]
  resourceNames: [istio-sidecar-injector]
  verbs: [get, update]
- apiGroups: [admissionregistration.k8s.io]
  resources: [validatingwebhookconfigurations]
  resourceNames: [istio-validator-{ns}]
  verbs: [get, update]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: weft-control-{ns}
  labels: {{app.kubernetes.io/part-of: weft}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: weft-control-{ns}}}
subjects:
- {{kind: ServiceAccount, name: weft-control, namespace: {ns}}}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata:
  name: weft-control
  namespace: {ns}
  labels: {{app.kubernetes.io/part-of: weft}}
rules:
- apiGroups: [\"\"]
  resources: [secrets]
  resourceNames: [cacerts, istio-ca-secret]
  verbs: [get]
- apiGroups: [\"\"]
  resources: [secrets]
  verbs: [create]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata:
  name: weft-control
  namespace: {ns}
  labels: {{app.kubernetes.io/part-of: weft}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: weft-control}}
subjects:
- {{kind: ServiceAccount, name: weft-control, namespace: {ns}}}
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: istio
  namespace: {ns}
  labels: {{app.kubernetes.io/part-of: weft}}
data:
  mesh: |
    trustDomain: cluster.local
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: istiod
  namespace: {ns}
  labels: {{app: istiod, app.kubernetes.io/part-of: weft}}
spec:
  replicas: 1
  selector:
    matchLabels: {{app: istiod}}
  template:
    metadata:
      labels: {{app: istiod, sidecar.istio.io/inject: \"false\"}}
    spec:
      serviceAccountName: weft-control
      containers:
      - name: discovery
        image: {image}
        args: [control, --kube, --state-dir, /var/lib/weft]
        env:
        - name: POD_NAMESPACE
          valueFrom: {{fieldRef: {{fieldPath: metadata.namespace}}}}
        ports:
        - {{name: grpc-xds, containerPort: 15010}}
        - {{name: https-dns, containerPort: 15012}}
        - {{name: http-monitoring, containerPort: 15014}}
        - {{name: https-webhook, containerPort: 15017}}
        readinessProbe:
          httpGet: {{path: /ready, port: 15014}}
          periodSeconds: 3
        securityContext:
          runAsUser: 1337
          runAsGroup: 1337
          runAsNonRoot: true
          allowPrivilegeEscalation: false
          readOnlyRootFilesystem: true
          capabilities: {{drop: [ALL]}}
        volumeMounts:
        - {{name: state, mountPath: /var/lib/weft}}
      volumes:
      - {{name: state, emptyDir: {{}}}}
---
apiVersion: v1
kind: Service
metadata:
  name: istiod
  namespace: {ns}
  labels: {{app: istiod, app.kubernetes.io/part-of: weft}}
spec:
  selector: {{app: istiod}}
  ports:
  - {{name: grpc-xds, port: 15010}}
  - {{name: https-dns, port: 15012}}
  - {{name: http-monitoring, port: 15014}}
  - {{name: https-webhook, port: 443, targetPort: 15017}}
---
apiVersion: admissionregistration.k8s.io/v1
kind: MutatingWebhookConfiguration
metadata:
  name: istio-sidecar-injector
  labels: {{app.kubernetes.io/part-of: weft}}
{injectors}---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingWebhookConfiguration
metadata:
  name: istio-validator-{ns}
  labels: {{app.kubernetes.io/part-of: weft}}
webhooks:
- name: validation.istio.io
  admissionReviewVersions: [v1]
  sideEffects: None
  failurePolicy: Ignore
  clientConfig:
    service: {{name: istiod, namespace: {ns}, path: /validate, port: 443}}
  rules:
  - operations: [CREATE, UPDATE]
    apiGroups: [networking.istio.io, security.istio.io, telemetry.istio.io]
    apiVersions: [\"*\"]
    resources: [\"*\"]
---
"
    ));
    out
}

/// The sidecar injector's webhooks as Istio installs them for its default revision, so a
/// namespace or pod is selected by the labels Istio's users set: the namespace's
/// `istio-injection=enabled` or `istio.io/rev=default`, or the pod's `sidecar.istio.io/inject:
/// "true"` or `istio.io/rev: default` in a namespace with neither label; a pod labelled
/// `sidecar.istio.io/inject: "false"` is never sent. The injector then decides as
/// [`crate::inject::should_inject`] says.
fn injector_webhooks(ns: &str) -> String {
    const NO_OPT_OUT: &str = "{key: sidecar.istio.io/inject, operator: NotIn, values: [\"false\"]}";
    const DEFAULT_REV: &str = "{key: istio.io/rev, operator: In, values: [default]}";
    const NO_REV: &str = "{key: istio.io/rev, operator: DoesNotExist}";
    const NO_INJECTION_LABEL: &str = "{key: istio-injection, operator: DoesNotExist}";
    let webhooks: [(&str, &[&str], &[&str]); 4] = [
        (
            "rev.namespace.",
            &[DEFAULT_REV, NO_INJECTION_LABEL],
            &[NO_OPT_OUT],
        ),
        (
            "rev.object.",
            &[NO_REV, NO_INJECTION_LABEL],
            &[NO_OPT_OUT, DEFAULT_REV],
        ),
        (
            "namespace.",
            &["{key: istio-injection, operator: In, values: [enabled]}"],
            &[NO_OPT_OUT],
        ),
        (
            "object.",
            &[NO_INJECTION_LABEL, NO_REV],
            &[
                "{key: sidecar.istio.io/inject, operator: In, values: [\"true\"]}",
                NO_REV,
            ],
        ),
    ];
    let mut out = String::from("webhooks:\n");
    for (prefix, namespaces, objects) in webhooks {
        out.push_str(&format!(
            "- name: {prefix}sidecar-injector.istio.io
  admissionReviewVersions: [v1]
  sideEffects: None
  failurePolicy: Fail
  reinvocationPolicy: Never
  clientConfig:
    service: {{name: istiod, namespace: {ns}, path: /inject, port: 443}}
  rules:
  - {{operations: [CREATE], apiGroups: [\"\"], apiVersions: [v1], resources: [pods]}}
  namespaceSelector:
    matchExpressions: [{}]
  objectSelector:
    matchExpressions: [{}]
",
            namespaces.join(", "),
            objects.join(", ")
        ));
    }
    out
}

/// The objects of [`manifests`] as JSON, in apply order.
pub fn objects(o: &InstallOptions) -> Vec<serde_json::Value> {
    // Our own YAML: it parses (a unit test holds it to that).
    serde_saphyr::from_multiple::<serde_json::Value>(&manifests(o))
        .unwrap_or_default()
        .into_iter()
        .filter(|v| !v.is_null())
        .collect()
}

/// Deletes what [`manifests`] creates, in reverse order (those already gone are skipped);
/// returns `Kind/name` of each deleted object.
pub async fn uninstall(
    client: kube::Client,
    o: &InstallOptions,
) -> Result<Vec<String>, crate::KubeError> {
    use kube::api::{Api, DeleteParams, DynamicObject, GroupVersionKind};
    let mut deleted = Vec::new();
    for obj in objects(o).iter().rev() {
        let (Some(api_version), Some(kind), Some(name)) = (
            obj["apiVersion"].as_str(),
            obj["kind"].as_str(),
            obj["metadata"]["name"].as_str(),
        ) else {
            continue;
        };
        let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
        let gvk = GroupVersionKind::gvk(group, version, kind);
        let (resource, caps) = kube::discovery::pinned_kind(&client, &gvk)
            .await
            .map_err(|source| crate::KubeError::Discovery { source })?;
        let api: Api<DynamicObject> = match obj["metadata"]["namespace"].as_str() {
            Some(ns) if caps.scope == kube::discovery::Scope::Namespaced => {
                Api::namespaced_with(client.clone(), ns, &resource)
            }
            _ => Api::all_with(client.clone(), &resource),
        };
        match api.delete(name, &DeleteParams::background()).await {
            Ok(_) => deleted.push(format!("{kind}/{name}")),
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(source) => {
                return Err(crate::KubeError::Delete {
                    what: format!("{kind}/{name}"),
                    source,
                });
            }
        }
    }
    Ok(deleted)
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
    fn the_install_parses_and_names_its_namespace_everywhere() {
        let o = InstallOptions {
            namespace: "weft-system".into(),
            image: "weft:test".into(),
        };
        let objs = objects(&o);
        let kinds: Vec<&str> = objs.iter().filter_map(|v| v["kind"].as_str()).collect();
        assert_eq!(kinds[0], "Namespace");
        assert_eq!(
            kinds
                .iter()
                .filter(|k| **k == "CustomResourceDefinition")
                .count(),
            KINDS.len()
        );
        for k in [
            "ServiceAccount",
            "ClusterRole",
            "ConfigMap",
            "Deployment",
            "Service",
        ] {
            assert!(kinds.contains(&k), "{k} missing: {kinds:?}");
        }
        for v in &objs {
            if let Some(ns) = v["metadata"]["namespace"].as_str() {
                assert_eq!(ns, "weft-system", "{v}");
            }
        }
        let deploy = objs
            .iter()
            .find(|v| v["kind"] == "Deployment")
            .expect("deployment");
        assert_eq!(
            deploy["spec"]["template"]["spec"]["containers"][0]["image"],
            "weft:test"
        );
    }

    #[test]
    fn the_injector_selects_as_istios_default_revision() {
        let o = InstallOptions {
            namespace: "istio-system".into(),
            image: "weft:test".into(),
        };
        let objs = objects(&o);
        let injector = objs
            .iter()
            .find(|v| v["kind"] == "MutatingWebhookConfiguration")
            .expect("injector");
        let expr = |e: &serde_json::Value| {
            let values: Vec<&str> = e["values"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|v| v.as_str())
                .collect();
            format!(
                "{} {} {}",
                e["key"].as_str().unwrap_or_default(),
                e["operator"].as_str().unwrap_or_default(),
                values.join(",")
            )
            .trim()
            .to_string()
        };
        let hooks: Vec<(String, Vec<String>, Vec<String>)> = injector["webhooks"]
            .as_array()
            .expect("webhooks")
            .iter()
            .map(|w| {
                let of = |sel: &str| -> Vec<String> {
                    w[sel]["matchExpressions"]
                        .as_array()
                        .expect("expressions")
                        .iter()
                        .map(expr)
                        .collect()
                };
                assert_eq!(w["clientConfig"]["service"]["path"], "/inject");
                assert_eq!(w["failurePolicy"], "Fail");
                (
                    w["name"].as_str().unwrap_or_default().to_string(),
                    of("namespaceSelector"),
                    of("objectSelector"),
                )
            })
            .collect();
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(
            hooks,
            [
                (
                    "rev.namespace.sidecar-injector.istio.io".to_string(),
                    s(&["istio.io/rev In default", "istio-injection DoesNotExist"]),
                    s(&["sidecar.istio.io/inject NotIn false"]),
                ),
                (
                    "rev.object.sidecar-injector.istio.io".to_string(),
                    s(&["istio.io/rev DoesNotExist", "istio-injection DoesNotExist"]),
                    s(&[
                        "sidecar.istio.io/inject NotIn false",
                        "istio.io/rev In default"
                    ]),
                ),
                (
                    "namespace.sidecar-injector.istio.io".to_string(),
                    s(&["istio-injection In enabled"]),
                    s(&["sidecar.istio.io/inject NotIn false"]),
                ),
                (
                    "object.sidecar-injector.istio.io".to_string(),
                    s(&["istio-injection DoesNotExist", "istio.io/rev DoesNotExist"]),
                    s(&[
                        "sidecar.istio.io/inject In true",
                        "istio.io/rev DoesNotExist"
                    ]),
                ),
            ]
        );
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
