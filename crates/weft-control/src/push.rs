//! The push context: one immutable, versioned view of everything the generators read.

use std::collections::BTreeSet;
use std::sync::Arc;

use weft_api::{MeshConfig, Resource};

use crate::authz;
use crate::destination;
use crate::registry::{Platform, Registry};

/// The DNS suffix of service host names.
pub const DOMAIN_SUFFIX: &str = "cluster.local";

/// Everything a push reads, built once per config change and shared by all streams.
#[derive(Debug)]
pub struct PushContext {
    pub version: String,
    pub mesh: Arc<MeshConfig>,
    pub resources: Arc<Vec<Resource>>,
    /// The platform registry's part (Kubernetes Services, EndpointSlices, Pods), if any.
    pub platform: Arc<Platform>,
    pub registry: Registry,
    /// Which namespaces see which services (`exportTo`).
    pub service_exports: crate::export::ServiceExports,
    /// The DestinationRules, indexed as istiod indexes them for per-proxy lookups.
    pub destination_rules: destination::Index,
    /// The AuthorizationPolicies and ext-authz providers, with the filters built per workload.
    pub authz: authz::Index,
    /// The Telemetry resources, merged per proxy and direction.
    pub telemetry: crate::telemetry::Index,
    /// The JWKS resolver (shared by the pushes of a running control plane; see `with_jwks`).
    pub jwks: Arc<crate::jwks::JwksResolver>,
    /// istiod's feature flags that change the translation.
    pub features: Features,
}

/// istiod's feature flags (its environment variables) that change the translation, with 1.14's
/// defaults (all off).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Features {
    /// `ENABLE_AUTO_SNI`: a SIMPLE or MUTUAL DestinationRule without `sni` sends the request's
    /// host as the SNI (Envoy's `auto_sni`).
    pub enable_auto_sni: bool,
    /// `VERIFY_CERTIFICATE_AT_CLIENT`: a SIMPLE or MUTUAL DestinationRule without
    /// `caCertificates` verifies the server against the system's trust store and, with
    /// `ENABLE_AUTO_SNI` and no `subjectAltNames`, against the request's host (Envoy's
    /// `auto_san_validation`).
    pub verify_certificate_at_client: bool,
}

impl PushContext {
    pub fn new(version: String, mesh: Arc<MeshConfig>, resources: Arc<Vec<Resource>>) -> Self {
        Self::with_platform(version, mesh, resources, Arc::default())
    }

    /// A push context whose registry has a platform's (Kubernetes') services and workloads too.
    pub fn with_platform(
        version: String,
        mesh: Arc<MeshConfig>,
        resources: Arc<Vec<Resource>>,
        platform: Arc<Platform>,
    ) -> Self {
        let registry = Registry::build_with(&resources, &platform, DOMAIN_SUFFIX);
        let destination_rules = destination::Index::build(&resources, &mesh, &registry);
        let authz = authz::Index::build(&resources, &mesh, &registry);
        let telemetry = crate::telemetry::Index::build(&resources, &mesh, &registry);
        let service_exports =
            crate::export::ServiceExports::build(&registry, &mesh.default_service_export_to);
        PushContext {
            version,
            mesh,
            resources,
            platform,
            registry,
            service_exports,
            destination_rules,
            authz,
            telemetry,
            jwks: Default::default(),
            features: Features::default(),
        }
    }

    /// Translates with istiod's feature flags `features`.
    pub fn with_features(mut self, features: Features) -> Self {
        self.features = features;
        self
    }

    /// Uses the control plane's JWKS resolver, registering this config's `jwksUri` rules with
    /// it (fetches of new ones start at once, in the background).
    pub fn with_jwks(mut self, jwks: Arc<crate::jwks::JwksResolver>) -> Self {
        jwks.sync(&self.resources);
        self.jwks = jwks;
        self
    }

    pub fn trust_domain(&self) -> &str {
        &self.mesh.trust_domain
    }

    pub fn root_namespace(&self) -> &str {
        &self.mesh.root_namespace
    }

    /// The service of `hostname` that a client in `namespace` without a Sidecar scope
    /// (proxyless gRPC) uses: among those exported to it, its own namespace's, else the first.
    pub fn exported_service(
        &self,
        hostname: &str,
        namespace: &str,
    ) -> Option<&Arc<crate::registry::Service>> {
        self.registry.service_for(hostname, namespace, |s| {
            self.service_exports.visible(s, namespace)
        })
    }

    /// When this push differs from `old` in endpoints alone, as far as proxies can tell — the
    /// same resources but for WorkloadEntries and ServiceEntry `endpoints`, every service with
    /// the same ports, addresses, SAN list (its endpoints' service accounts) and DNS endpoints —
    /// the workloads (`<name>.<namespace>`) that changed, came or went: only the assignments
    /// change for proxies, except for those workloads' own proxies, whose inbound side and
    /// label-selected config may change (istiod's incremental EDS push). None: a full push.
    pub fn endpoints_push_since(&self, old: &PushContext) -> Option<BTreeSet<String>> {
        if self.mesh != old.mesh
            || self.features != old.features
            || !crate::debounce::endpoints_only(&old.resources, &self.resources)
            || !old.platform.alike_but_endpoints(&self.platform)
            || self.registry.services.len() != old.registry.services.len()
        {
            return None;
        }
        let td = self.trust_domain();
        let services_alike = old
            .registry
            .services
            .iter()
            .zip(&self.registry.services)
            .all(|(a, b)| {
                Arc::ptr_eq(a, b)
                    || (a.hostname == b.hostname
                        && a.namespace == b.namespace
                        && a.vips == b.vips
                        && a.ports == b.ports
                        && a.dns_endpoints == b.dns_endpoints
                        && a.service_accounts(td) == b.service_accounts(td))
            });
        if !services_alike {
            return None;
        }
        let (old_w, new_w) = (&old.registry.workloads, &self.registry.workloads);
        // Workloads whose services changed (a Service's selector or EndpointSlice moved them)
        // have their own proxies' inbound side to change, as those whose entry changed.
        let (old_m, new_m) = (old.registry.memberships(), self.registry.memberships());
        let moved = old_m
            .iter()
            .filter(|(k, hosts)| new_m.get(*k) != Some(*hosts))
            .chain(new_m.iter().filter(|(k, _)| !old_m.contains_key(*k)))
            .map(|((ns, name), _)| format!("{name}.{ns}"));
        let changed = old_w
            .iter()
            .filter(|(k, w)| new_w.get(*k).is_none_or(|n| n != *w))
            .chain(new_w.iter().filter(|(k, _)| !old_w.contains_key(*k)))
            .map(|((ns, name), _)| format!("{name}.{ns}"))
            .chain(moved)
            .collect();
        Some(changed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn push(wes: &str) -> PushContext {
        let yaml = format!(
            "apiVersion: networking.istio.io/v1beta1
kind: ServiceEntry
metadata: {{name: s, namespace: ns}}
spec:
  hosts: [s.example]
  ports: [{{number: 80, name: http, protocol: HTTP}}]
  location: MESH_INTERNAL
  resolution: STATIC
  workloadSelector: {{labels: {{app: s}}}}
{wes}"
        );
        let (res, problems) = weft_api::parse_documents(&yaml, std::path::Path::new("t.yaml"));
        assert!(problems.is_empty(), "{problems:?}");
        PushContext::new("v".into(), Arc::default(), Arc::new(res))
    }

    fn we(name: &str, addr: &str, sa: &str) -> String {
        format!(
            "---
apiVersion: networking.istio.io/v1beta1
kind: WorkloadEntry
metadata: {{name: {name}, namespace: ns}}
spec: {{address: {addr}, labels: {{app: s}}, serviceAccount: {sa}}}
"
        )
    }

    /// A platform service with the workloads `eps` as its endpoints.
    fn platform_service(host: &str, eps: &[(&str, &str)]) -> crate::registry::Service {
        crate::registry::Service {
            hostname: format!("{host}.ns.svc.cluster.local"),
            namespace: "ns".into(),
            name: host.into(),
            vips: vec![],
            auto_vip: false,
            ports: vec![],
            mesh_internal: true,
            subject_alt_names: vec![],
            endpoints: eps
                .iter()
                .map(|(w, ip)| crate::registry::Endpoint {
                    address: ip.parse().expect("ip"),
                    ports: Default::default(),
                    labels: Default::default(),
                    namespace: "ns".into(),
                    workload: Some(w.to_string()),
                    service_account: Some("sa".into()),
                    network: String::new(),
                    locality: String::new(),
                    weight: 1,
                    tls_mode: "istio".into(),
                })
                .collect(),
            unready_endpoints: vec![],
            resolution: weft_api::networking::Resolution::Static,
            dns_endpoints: vec![],
            export_to: vec![],
        }
    }

    #[test]
    fn a_pod_moved_between_services_gets_its_own_config_again() {
        let ctx = |a: &[(&str, &str)], b: &[(&str, &str)]| {
            PushContext::with_platform(
                "v".into(),
                Arc::default(),
                Arc::default(),
                Arc::new(Platform {
                    services: vec![platform_service("a", a), platform_service("b", b)],
                    workloads: vec![],
                }),
            )
        };
        let old = ctx(&[("p1", "10.0.0.1")], &[("p2", "10.0.0.2")]);
        // A Service's selector now picks p1 instead of p2: the same pods, other services.
        let new = ctx(&[("p2", "10.0.0.2")], &[("p1", "10.0.0.1")]);
        assert_eq!(
            new.endpoints_push_since(&old),
            Some(["p1.ns".to_string(), "p2.ns".to_string()].into())
        );
    }

    #[test]
    fn endpoint_moves_push_assignments_and_the_moved_workloads_own_config() {
        let old = push(&(we("a", "10.0.0.1", "sa") + &we("b", "10.0.0.2", "sa")));
        // b moved, c came: the rest of the mesh only needs the assignment.
        let moved = push(
            &(we("a", "10.0.0.1", "sa") + &we("b", "10.0.0.9", "sa") + &we("c", "10.0.0.3", "sa")),
        );
        assert_eq!(
            moved.endpoints_push_since(&old),
            Some(["b.ns".to_string(), "c.ns".to_string()].into())
        );
        // A workload gone.
        let gone = push(&we("a", "10.0.0.1", "sa"));
        assert_eq!(
            gone.endpoints_push_since(&old),
            Some(["b.ns".to_string()].into())
        );
        // A new service account changes the clusters' SAN lists: a full push.
        let sa = push(&(we("a", "10.0.0.1", "sa") + &we("b", "10.0.0.2", "other")));
        assert_eq!(sa.endpoints_push_since(&old), None);
        // So does a changed mesh config.
        let mesh = MeshConfig {
            trust_domain: "other.domain".into(),
            ..Default::default()
        };
        let meshed = PushContext::new("v".into(), Arc::new(mesh), old.resources.clone());
        assert_eq!(meshed.endpoints_push_since(&old), None);
    }
}
