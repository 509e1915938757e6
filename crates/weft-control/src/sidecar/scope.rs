//! The `Sidecar` resource that applies to a proxy, as istiod picks it: in the proxy's
//! namespace the one whose `workloadSelector` matches its labels, else the namespace's one
//! without a selector, else the root namespace's one without a selector (the mesh default).
//! Its `egress[].hosts` (`namespace/dnsName`: `*`, `.` for the proxy's own namespace, `~` for
//! none; a host, `*.suffix` or `*`) limit the services whose clusters, listeners and routes the
//! proxy gets (no egress: all of them); its `outboundTrafficPolicy` replaces the mesh's.

use std::collections::BTreeMap;

use weft_api::networking::OutboundTrafficMode;
use weft_api::{Resource, Spec};

use crate::registry::Service;

/// What a Sidecar resource changes for the proxies it applies to.
#[derive(Debug, Clone, PartialEq)]
pub struct SidecarScope {
    /// `namespace/name` of the Sidecar: proxies with equal keys share generated resources.
    pub key: String,
    /// The egress hosts as (namespace pattern, host pattern); empty imports everything.
    hosts: Vec<(String, String)>,
    /// `outboundTrafficPolicy.mode`, when the Sidecar sets one.
    pub outbound_mode: Option<OutboundTrafficMode>,
}

impl SidecarScope {
    /// The Sidecar for a proxy in `namespace` with `labels`.
    pub fn for_proxy(
        resources: &[Resource],
        root_namespace: &str,
        namespace: &str,
        labels: &BTreeMap<String, String>,
    ) -> Option<SidecarScope> {
        let sidecars = || {
            resources.iter().filter_map(|r| match &r.spec {
                Spec::Sidecar(sc) => Some((r, sc)),
                _ => None,
            })
        };
        let selected = sidecars().find(|(r, sc)| {
            r.meta.namespace == namespace
                && sc.workload_selector.as_ref().is_some_and(|sel| {
                    !sel.labels.is_empty()
                        && sel.labels.iter().all(|(k, v)| labels.get(k) == Some(v))
                })
        });
        let chosen = selected
            .or_else(|| {
                sidecars()
                    .find(|(r, sc)| r.meta.namespace == namespace && sc.workload_selector.is_none())
            })
            .or_else(|| {
                sidecars().find(|(r, sc)| {
                    r.meta.namespace == root_namespace && sc.workload_selector.is_none()
                })
            })?;
        let (r, sc) = chosen;
        let hosts = sc
            .egress
            .iter()
            .flat_map(|e| &e.hosts)
            .filter_map(|h| h.split_once('/'))
            .map(|(ns, host)| (ns.to_string(), host.to_ascii_lowercase()))
            .collect();
        Some(SidecarScope {
            key: format!("{}/{}", r.meta.namespace, r.meta.name),
            hosts,
            outbound_mode: sc.outbound_traffic_policy.as_ref().map(|p| p.mode),
        })
    }

    /// Whether the proxy (in `proxy_ns`) imports `svc`.
    pub fn imports(&self, svc: &Service, proxy_ns: &str) -> bool {
        if self.hosts.is_empty() {
            return true;
        }
        self.hosts.iter().any(|(ns, host)| {
            let ns_ok = match ns.as_str() {
                "*" => true,
                "~" => false,
                "." => svc.namespace == proxy_ns,
                other => svc.namespace == other,
            };
            ns_ok && (host == "*" || weft_api::host::matches(host, &svc.hostname))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resources(yaml: &str) -> Vec<Resource> {
        let (r, problems) = weft_api::parse_documents(yaml, std::path::Path::new("t.yaml"));
        assert!(problems.is_empty(), "{problems:?}");
        r
    }

    fn svc(host: &str, ns: &str) -> Service {
        let r = resources(&format!(
            "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: s, namespace: {ns}}}\nspec:\n  hosts: [{host}]\n  location: MESH_INTERNAL\n  resolution: STATIC\n  ports: [{{number: 80, name: http}}]\n"
        ));
        let reg = crate::registry::Registry::build(&r, "cluster.local");
        reg.services[0].as_ref().clone()
    }

    #[test]
    fn selection_and_imports() {
        let r = resources(
            r#"apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: default, namespace: istio-system}
spec:
  egress: [{hosts: ["./*", "istio-system/*"]}]
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: ns-wide, namespace: shop}
spec:
  outboundTrafficPolicy: {mode: REGISTRY_ONLY}
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: cart, namespace: shop}
spec:
  workloadSelector: {labels: {app: cart}}
  egress: [{hosts: ["*/*.example.com", "~/*"]}]
  outboundTrafficPolicy: {mode: ALLOW_ANY}
"#,
        );
        let labels = |app: &str| BTreeMap::from([("app".to_string(), app.to_string())]);
        let cart = SidecarScope::for_proxy(&r, "istio-system", "shop", &labels("cart")).unwrap();
        assert_eq!(cart.key, "shop/cart");
        assert_eq!(cart.outbound_mode, Some(OutboundTrafficMode::AllowAny));
        assert!(cart.imports(&svc("api.example.com", "ext"), "shop"));
        assert!(!cart.imports(&svc("reviews.shop.svc.cluster.local", "shop"), "shop"));
        let other = SidecarScope::for_proxy(&r, "istio-system", "shop", &labels("web")).unwrap();
        assert_eq!(other.key, "shop/ns-wide");
        assert_eq!(other.outbound_mode, Some(OutboundTrafficMode::RegistryOnly));
        assert!(
            other.imports(&svc("anything.example.org", "far"), "shop"),
            "no egress: all"
        );
        let mesh_default =
            SidecarScope::for_proxy(&r, "istio-system", "books", &labels("web")).unwrap();
        assert_eq!(mesh_default.key, "istio-system/default");
        assert_eq!(mesh_default.outbound_mode, None);
        // "." is the proxy's namespace, not the Sidecar's.
        assert!(mesh_default.imports(&svc("reviews.books.svc.cluster.local", "books"), "books"));
        assert!(mesh_default.imports(
            &svc("zipkin.istio-system.svc.cluster.local", "istio-system"),
            "books"
        ));
        assert!(!mesh_default.imports(&svc("cart.shop.svc.cluster.local", "shop"), "books"));
        assert!(SidecarScope::for_proxy(&[], "istio-system", "books", &labels("web")).is_none());
    }
}
