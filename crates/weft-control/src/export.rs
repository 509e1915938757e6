//! Istio's `exportTo`: which namespaces see a service (a ServiceEntry's `exportTo`, a Kubernetes
//! Service's `networking.istio.io/exportTo` annotation), a VirtualService or a DestinationRule,
//! with MeshConfig's `default*ExportTo` when the resource names none.

use std::collections::BTreeSet;

use crate::registry::{Registry, Service};

/// Whether a resource of `resource_ns` exported to `export_to` (empty: to `default`, the mesh's
/// default for its kind; both empty: everyone) is visible in `proxy_ns`: `*` everyone (whatever
/// else is listed), `~` no one, `.` its own namespace, else the namespaces named.
pub fn exported_to(
    export_to: &[String],
    default: &[String],
    resource_ns: &str,
    proxy_ns: &str,
) -> bool {
    let list = effective(export_to, default);
    if public(list) {
        return true;
    }
    if list.iter().any(|e| e == "~") {
        return false;
    }
    list.iter()
        .any(|e| (e == "." && resource_ns == proxy_ns) || e == proxy_ns)
}

/// A resource's `exportTo`, else the mesh's default for its kind.
pub fn effective<'a>(export_to: &'a [String], default: &'a [String]) -> &'a [String] {
    if export_to.is_empty() {
        default
    } else {
        export_to
    }
}

/// Whether an `exportTo` list (as in force: [`effective`]) exports to every namespace: it is
/// empty or names `*`.
pub fn public(list: &[String]) -> bool {
    list.is_empty() || list.iter().any(|e| e == "*")
}

/// Where a resource of `namespace` is visible, as scopes: `["*"]` for everyone, else the
/// namespaces (`.` read as its own; `~`, no one, stays as written and matches no namespace).
pub fn scopes(export_to: &[String], default: &[String], namespace: &str) -> Vec<String> {
    let list = effective(export_to, default);
    if public(list) {
        return vec!["*".into()];
    }
    list.iter()
        .map(|e| {
            if e == "." {
                namespace.to_string()
            } else {
                e.clone()
            }
        })
        .collect()
}

/// The services' visibility for one push: which namespaces see a set of services of their own
/// (a service exported to `.` or to named namespaces), so that proxies elsewhere, which all see
/// the same public services, can share what is generated from them.
#[derive(Debug, Clone, Default)]
pub struct ServiceExports {
    /// `meshConfig.defaultServiceExportTo`.
    default: Vec<String>,
    /// The namespaces a non-public service is exported to.
    distinct: BTreeSet<String>,
    /// The namespaces that define a host another namespace defines too: their proxies use
    /// their own namespace's service of that host, others the first visible one.
    shared: BTreeSet<String>,
}

impl ServiceExports {
    pub fn build(registry: &Registry, default: &[String]) -> ServiceExports {
        let mut distinct = BTreeSet::new();
        for svc in &registry.services {
            let scopes = scopes(&svc.export_to, default, &svc.namespace);
            // Public services, and those exported to no one, are the same for every namespace.
            if scopes != ["*"] && !scopes.iter().any(|e| e == "~") {
                distinct.extend(scopes);
            }
        }
        ServiceExports {
            default: default.to_vec(),
            distinct,
            shared: registry.namespaces_sharing_hosts(),
        }
    }

    /// Whether `svc` is visible to proxies in `namespace`.
    pub fn visible(&self, svc: &Service, namespace: &str) -> bool {
        exported_to(&svc.export_to, &self.default, &svc.namespace, namespace)
    }

    /// What the services visible in `namespace` depend on: the namespace when a non-public
    /// service is exported to it or it defines a host another namespace defines too, else
    /// nothing (it sees the public services alone, the same as every such namespace).
    pub fn key<'a>(&self, namespace: &'a str) -> &'a str {
        if self.distinct.contains(namespace) || self.shared.contains(namespace) {
            namespace
        } else {
            ""
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    /// A generator serving `yaml` (which must parse cleanly) under `mesh`.
    fn generator(yaml: &str, mesh: weft_api::MeshConfig) -> crate::generator::MeshGenerator {
        let (resources, problems) = weft_api::parse_documents(yaml, std::path::Path::new("t.yaml"));
        assert!(problems.is_empty(), "{problems:?}");
        crate::generator::MeshGenerator::new(Arc::new(arc_swap::ArcSwap::from_pointee(
            crate::push::PushContext::new("1".into(), Arc::new(mesh), Arc::new(resources)),
        )))
    }

    /// Whether any of the generated resources mentions `text` in its encoding.
    fn mentions(generated: &weft_xds::Generated, text: &str) -> bool {
        generated.resources.iter().any(|r| {
            r.resource()
                .value
                .windows(text.len())
                .any(|w| w == text.as_bytes())
        })
    }

    /// A sidecar in namespace `ns`.
    fn proxy_in(ns: &str) -> weft_xds::ProxyInfo {
        weft_xds::ProxyInfo {
            id: format!("sidecar~10.0.0.9~p.{ns}~{ns}.svc.cluster.local"),
            cluster: String::new(),
            metadata: serde_json::json!({}),
            peer_addr: None,
            conn_id: 1,
        }
    }

    #[test]
    fn export_to_follows_istio() {
        assert!(exported_to(&[], &[], "a", "b"));
        assert!(exported_to(&[], &s(&["*"]), "a", "b"));
        assert!(!exported_to(&[], &s(&["."]), "a", "b"));
        assert!(exported_to(&[], &s(&["."]), "a", "a"));
        assert!(exported_to(&s(&["*"]), &s(&["."]), "a", "b"));
        assert!(exported_to(&s(&["."]), &[], "a", "a"));
        assert!(!exported_to(&s(&["."]), &[], "a", "b"));
        assert!(exported_to(&s(&["b"]), &[], "a", "b"));
        assert!(exported_to(&s(&[".", "c"]), &[], "a", "c"));
        assert!(!exported_to(&s(&["b"]), &[], "a", "a"));
        assert!(!exported_to(&s(&["~"]), &[], "a", "a"));
        assert!(exported_to(&s(&["*", "b"]), &[], "a", "z"));
    }

    fn svc(host: &str, ns: &str, export_to: &[&str]) -> Arc<Service> {
        Arc::new(Service {
            hostname: host.into(),
            namespace: ns.into(),
            name: host.into(),
            vips: Vec::new(),
            auto_vip: true,
            ports: Vec::new(),
            mesh_internal: true,
            subject_alt_names: Vec::new(),
            endpoints: Vec::new(),
            unready_endpoints: Vec::new(),
            resolution: weft_api::networking::Resolution::Static,
            dns_endpoints: Vec::new(),
            export_to: s(export_to),
        })
    }

    #[test]
    fn namespaces_with_a_private_view_have_their_own_key() {
        let services = [
            svc("pub", "a", &[]),
            svc("private", "a", &["."]),
            svc("to-c", "b", &["c"]),
            svc("none", "d", &["~"]),
        ];
        let registry = Registry::build_with(
            &[],
            &crate::registry::Platform {
                services: services.iter().map(|x| (**x).clone()).collect(),
                workloads: Vec::new(),
            },
            crate::push::DOMAIN_SUFFIX,
        );
        let e = ServiceExports::build(&registry, &s(&["*"]));
        assert_eq!(e.key("a"), "a");
        assert_eq!(e.key("b"), "");
        assert_eq!(e.key("c"), "c");
        assert_eq!(e.key("d"), "");
        assert_eq!(e.key("z"), "");
        let seen = |ns: &str| -> Vec<&str> {
            services
                .iter()
                .filter(|x| e.visible(x, ns))
                .map(|x| x.hostname.as_str())
                .collect()
        };
        assert_eq!(seen("a"), ["pub", "private"]);
        assert_eq!(seen("b"), ["pub"]);
        assert_eq!(seen("c"), ["pub", "to-c"]);
        assert_eq!(seen("d"), ["pub"]);
        assert_eq!(seen("z"), ["pub"]);

        // With the mesh default `.`, each namespace sees its own services and the public ones.
        let e = ServiceExports::build(&registry, &s(&["."]));
        assert_eq!(e.key("a"), "a");
        assert_eq!(e.key("b"), "");
        assert!(!e.visible(&services[0], "b"));
        assert!(e.visible(&services[0], "a"));
    }

    /// Proxies of one push in different namespaces get the services exported to them, through
    /// the generator's shared resources (a private service must not leak through the cache).
    #[test]
    fn the_generator_gives_each_namespace_its_services() {
        use weft_xds::{Generator, Subscription};

        let entry = |name: &str, ns: &str, export: &str| {
            format!(
                "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n  hosts: [{name}.{ns}.svc.cluster.local]\n  location: MESH_INTERNAL\n  resolution: STATIC\n  ports: [{{number: 80, name: http}}]\n  endpoints: [{{address: 10.1.0.1}}]\n{export}---\n"
            )
        };
        let yaml = [
            entry("public", "a", ""),
            entry("private", "a", "  exportTo: [\".\"]\n"),
            entry("to-c", "b", "  exportTo: [c]\n"),
            entry("hidden", "b", "  exportTo: [\"~\"]\n"),
        ]
        .concat();
        let g = generator(&yaml, weft_api::MeshConfig::default());
        let seen = |ns: &str, type_url: &str| -> Vec<String> {
            let proxy = proxy_in(ns);
            let sub = if type_url == weft_xds::types::ROUTE {
                Subscription::names(["80"])
            } else {
                Subscription::Wildcard
            };
            let generated = g.generate(&proxy, type_url, &sub).unwrap();
            let mut hosts: Vec<String> = ["public", "private", "to-c", "hidden"]
                .iter()
                .filter(|h| mentions(&generated, &format!("{h}.")))
                .map(|h| h.to_string())
                .collect();
            hosts.sort();
            hosts
        };
        // Twice each, in an order where every namespace follows another's cached resources.
        for _ in 0..2 {
            for ty in [weft_xds::types::CLUSTER, weft_xds::types::ROUTE] {
                assert_eq!(seen("z", ty), ["public"], "{ty}");
                assert_eq!(seen("a", ty), ["private", "public"], "{ty}");
                assert_eq!(seen("b", ty), ["public"], "{ty}");
                assert_eq!(seen("c", ty), ["public", "to-c"], "{ty}");
            }
        }
        // The mesh default `.`: what names no exportTo stays in its namespace.
        let mesh = weft_api::MeshConfig {
            default_service_export_to: vec![".".into()],
            ..Default::default()
        };
        let g2 = generator(&yaml, mesh);
        let clusters = |ns: &str| -> Vec<String> {
            g2.generate(
                &proxy_in(ns),
                weft_xds::types::CLUSTER,
                &Subscription::Wildcard,
            )
            .unwrap()
            .resources
            .iter()
            .filter(|r| r.name().starts_with("outbound|80||"))
            .map(|r| r.name().to_string())
            .collect()
        };
        assert_eq!(
            clusters("a"),
            [
                "outbound|80||private.a.svc.cluster.local",
                "outbound|80||public.a.svc.cluster.local"
            ]
        );
        assert!(clusters("b").is_empty(), "{:?}", clusters("b"));
        assert_eq!(clusters("c"), ["outbound|80||to-c.b.svc.cluster.local"]);
    }

    /// Two namespaces define the same host: each proxy gets one cluster for it, with its own
    /// namespace's endpoints, or the first visible namespace's (also from shared caches).
    #[test]
    fn a_host_defined_in_two_namespaces_is_each_proxys_own() {
        use weft_xds::{Generator, Subscription};

        const CLUSTER: &str = "outbound|80||api.example.com";
        let entry = |ns: &str, ip: &str, export: &str| {
            format!(
                "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: api, namespace: {ns}}}\nspec:\n  hosts: [api.example.com]\n  location: MESH_EXTERNAL\n  resolution: STATIC\n  ports: [{{number: 80, name: http}}]\n  endpoints: [{{address: {ip}}}]\n{export}---\n"
            )
        };
        // The clusters of the host, and the addresses in its assignment.
        let seen = |g: &crate::generator::MeshGenerator, ns: &str| -> (usize, Vec<&str>) {
            let clusters = g
                .generate(
                    &proxy_in(ns),
                    weft_xds::types::CLUSTER,
                    &Subscription::Wildcard,
                )
                .unwrap()
                .resources
                .iter()
                .filter(|r| r.name() == CLUSTER)
                .count();
            let eds = g
                .generate(
                    &proxy_in(ns),
                    weft_xds::types::ENDPOINT,
                    &Subscription::names([CLUSTER]),
                )
                .unwrap();
            let ips = ["10.1.0.1", "10.2.0.2"]
                .into_iter()
                .filter(|ip| mentions(&eds, ip))
                .collect();
            (clusters, ips)
        };
        let g = generator(
            &[entry("a", "10.1.0.1", ""), entry("b", "10.2.0.2", "")].concat(),
            weft_api::MeshConfig::default(),
        );
        for _ in 0..2 {
            assert_eq!(seen(&g, "b"), (1, vec!["10.2.0.2"]));
            assert_eq!(seen(&g, "a"), (1, vec!["10.1.0.1"]));
            assert_eq!(seen(&g, "c"), (1, vec!["10.1.0.1"]));
        }
        // a's kept to itself: elsewhere b's is the one seen.
        let g = generator(
            &[
                entry("a", "10.1.0.1", "  exportTo: [\".\"]\n"),
                entry("b", "10.2.0.2", ""),
            ]
            .concat(),
            weft_api::MeshConfig::default(),
        );
        for _ in 0..2 {
            assert_eq!(seen(&g, "a"), (1, vec!["10.1.0.1"]));
            assert_eq!(seen(&g, "c"), (1, vec!["10.2.0.2"]));
            assert_eq!(seen(&g, "b"), (1, vec!["10.2.0.2"]));
        }
    }
}
