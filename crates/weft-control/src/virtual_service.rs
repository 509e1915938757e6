//! Which VirtualService applies to a service, as istiod picks it for sidecars: bound to the
//! `mesh` gateway, exported to the proxy's namespace, exact host before wildcard, the first in
//! config order when several claim one host (istioctl's IST0109; Istio merges only for
//! gateways), and `delegate` routes replaced by the delegate's routes.

use weft_api::networking::{HttpMatchRequest, HttpRoute, VirtualService};
use weft_api::{Resource, Spec};

use crate::export::exported_to;
use crate::push::DOMAIN_SUFFIX;

/// True when the VirtualService applies to sidecars (its gateways are unset or name `mesh`).
fn bound_to_mesh(vs: &VirtualService) -> bool {
    vs.gateways.is_empty() || vs.gateways.iter().any(|g| g == "mesh")
}

/// A VirtualService chosen for a host, with the routes it contributes (delegates expanded).
#[derive(Debug, Clone)]
pub struct Bound<'a> {
    pub resource: &'a Resource,
    pub vs: &'a VirtualService,
    pub http: Vec<HttpRoute>,
}

impl Bound<'_> {
    /// Istio's route metadata reference to the VirtualService.
    pub fn config_path(&self) -> String {
        format!(
            "/apis/networking.istio.io/v1alpha3/namespaces/{}/virtual-service/{}",
            self.resource.meta.namespace, self.resource.meta.name
        )
    }
}

/// The VirtualService that routes `hostname` for proxies in `proxy_ns` (among those exported
/// to it, `default_export` the mesh's `defaultVirtualServiceExportTo`): an exact host match
/// first, then the longest wildcard that covers it; the first in config order on a tie.
pub fn for_host<'a>(
    resources: &'a [Resource],
    default_export: &[String],
    hostname: &str,
    proxy_ns: &str,
) -> Option<Bound<'a>> {
    let mut best: Option<(usize, &'a Resource, &'a VirtualService)> = None;
    for r in resources {
        let Spec::VirtualService(vs) = &r.spec else {
            continue;
        };
        if vs.hosts.is_empty()
            || !bound_to_mesh(vs)
            || !exported_to(&vs.export_to, default_export, &r.meta.namespace, proxy_ns)
        {
            continue;
        }
        for h in &vs.hosts {
            let full = weft_api::resolve_host(h, &r.meta.namespace, DOMAIN_SUFFIX);
            // Exact beats any wildcard; a longer wildcard beats a shorter one.
            let score = if full == hostname {
                usize::MAX
            } else if weft_api::host::is_wildcard(&full)
                && (full == "*" || hostname.ends_with(&full[1..]))
            {
                full.len()
            } else {
                continue;
            };
            if best.is_none_or(|(s, _, _)| score > s) {
                best = Some((score, r, vs));
            }
        }
    }
    let (_, resource, vs) = best?;
    Some(Bound {
        resource,
        vs,
        http: expand_delegates(resources, vs, &resource.meta.namespace),
    })
}

/// The HTTP routes of `vs` with each `delegate` route replaced by the delegate
/// VirtualService's routes, their matches merged with the parent's (Istio's
/// `mergeHTTPRoutes`: each child match is narrowed by each parent match). One level deep, as
/// Istio allows.
fn expand_delegates(resources: &[Resource], vs: &VirtualService, ns: &str) -> Vec<HttpRoute> {
    let mut out = Vec::with_capacity(vs.http.len());
    for route in &vs.http {
        let Some(d) = &route.delegate else {
            out.push(route.clone());
            continue;
        };
        let dns = if d.namespace.is_empty() {
            ns
        } else {
            d.namespace.as_str()
        };
        let child = resources.iter().find_map(|r| match &r.spec {
            Spec::VirtualService(c)
                if r.meta.name == d.name && r.meta.namespace == dns && c.hosts.is_empty() =>
            {
                Some(c)
            }
            _ => None,
        });
        let Some(child) = child else {
            tracing::warn!(
                delegate = %format!("{dns}/{}", d.name),
                "VirtualService delegate not found (or it has hosts); its routes are skipped"
            );
            continue;
        };
        for c in &child.http {
            if c.delegate.is_some() {
                continue;
            }
            let mut merged = c.clone();
            merged.match_ = merge_matches(&route.match_, &c.match_);
            if !route.match_.is_empty() && merged.match_.is_empty() {
                // No child match lies within the parent's: the route can never match.
                continue;
            }
            out.push(merged);
        }
    }
    out
}

/// Every (parent, child) pair of matches combined: the child's conditions added to the
/// parent's, a child URI must lie within the parent's prefix. An empty list matches all.
fn merge_matches(parent: &[HttpMatchRequest], child: &[HttpMatchRequest]) -> Vec<HttpMatchRequest> {
    if parent.is_empty() {
        return child.to_vec();
    }
    if child.is_empty() {
        return parent.to_vec();
    }
    let mut out = Vec::new();
    for p in parent {
        for c in child {
            let mut m = p.clone();
            if let Some(cu) = &c.uri {
                let within = match (p.uri.as_ref().and_then(|u| u.prefix.as_deref()), cu) {
                    (None, _) => true,
                    (Some(pp), cu) => cu
                        .exact
                        .as_deref()
                        .or(cu.prefix.as_deref())
                        .is_some_and(|s| s.starts_with(pp)),
                };
                if !within {
                    continue;
                }
                m.uri = Some(cu.clone());
            }
            for (field, value) in [
                (&mut m.scheme, &c.scheme),
                (&mut m.method, &c.method),
                (&mut m.authority, &c.authority),
            ] {
                if value.is_some() {
                    *field = value.clone();
                }
            }
            m.headers.extend(c.headers.clone());
            m.without_headers.extend(c.without_headers.clone());
            m.query_params.extend(c.query_params.clone());
            m.source_labels.extend(c.source_labels.clone());
            if c.port != 0 {
                m.port = c.port;
            }
            if !c.name.is_empty() {
                m.name = c.name.clone();
            }
            m.ignore_uri_case |= c.ignore_uri_case;
            out.push(m);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn load(yaml: &str) -> Vec<Resource> {
        let (rs, problems) = weft_api::parse_documents(yaml, Path::new("t.yaml"));
        assert!(problems.is_empty(), "{problems:?}");
        rs
    }

    #[test]
    fn exact_host_beats_wildcard_and_first_wins() {
        let rs = load(
            r#"
apiVersion: networking.istio.io/v1beta1
kind: VirtualService
metadata: {name: wild, namespace: default}
spec:
  hosts: ["*.default.svc.cluster.local"]
  http: [{route: [{destination: {host: a}}]}]
---
apiVersion: networking.istio.io/v1beta1
kind: VirtualService
metadata: {name: first, namespace: default}
spec:
  hosts: [reviews]
  http: [{route: [{destination: {host: reviews, subset: v1}}]}]
---
apiVersion: networking.istio.io/v1beta1
kind: VirtualService
metadata: {name: second, namespace: default}
spec:
  hosts: [reviews.default.svc.cluster.local]
  http: [{route: [{destination: {host: reviews, subset: v2}}]}]
---
apiVersion: networking.istio.io/v1beta1
kind: VirtualService
metadata: {name: private, namespace: other}
spec:
  hosts: [ratings.default.svc.cluster.local]
  exportTo: ["."]
  http: [{route: [{destination: {host: ratings.default.svc.cluster.local}}]}]
"#,
        );
        let b = for_host(&rs, &[], "reviews.default.svc.cluster.local", "default").unwrap();
        assert_eq!(b.resource.meta.name, "first");
        let b = for_host(&rs, &[], "details.default.svc.cluster.local", "default").unwrap();
        assert_eq!(b.resource.meta.name, "wild");
        // `private` is exported to its own namespace only: elsewhere the wildcard applies.
        let name = |ns| {
            for_host(&rs, &[], "ratings.default.svc.cluster.local", ns)
                .unwrap()
                .resource
                .meta
                .name
                .clone()
        };
        assert_eq!(name("default"), "wild");
        assert_eq!(name("other"), "private");
        assert!(for_host(&rs, &[], "ratings.other.svc.cluster.local", "default").is_none());
    }

    #[test]
    fn delegate_routes_are_merged_into_the_parent() {
        let rs = load(
            r#"
apiVersion: networking.istio.io/v1beta1
kind: VirtualService
metadata: {name: root, namespace: default}
spec:
  hosts: [reviews]
  http:
  - match: [{uri: {prefix: /api}, headers: {x-team: {exact: a}}}]
    delegate: {name: child}
  - route: [{destination: {host: reviews, subset: v1}}]
---
apiVersion: networking.istio.io/v1beta1
kind: VirtualService
metadata: {name: child, namespace: default}
spec:
  http:
  - match: [{uri: {prefix: /api/v2}}, {uri: {prefix: /other}}]
    route: [{destination: {host: reviews, subset: v2}}]
"#,
        );
        let b = for_host(&rs, &[], "reviews.default.svc.cluster.local", "default").unwrap();
        assert_eq!(b.http.len(), 2);
        let m = &b.http[0].match_;
        assert_eq!(
            m.len(),
            1,
            "the /other match lies outside the parent's /api"
        );
        assert_eq!(
            m[0].uri.as_ref().unwrap().prefix.as_deref(),
            Some("/api/v2")
        );
        assert_eq!(m[0].headers["x-team"].exact.as_deref(), Some("a"));
        assert_eq!(
            b.http[0].route[0].destination.as_ref().unwrap().subset,
            "v2"
        );
    }
}
