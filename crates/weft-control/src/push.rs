//! The push context: one immutable, versioned view of everything the generators read.

use std::sync::Arc;

use weft_api::{MeshConfig, Resource};

use crate::authz;
use crate::destination;
use crate::registry::Registry;

/// The DNS suffix of service host names.
pub const DOMAIN_SUFFIX: &str = "cluster.local";

/// Everything a push reads, built once per config change and shared by all streams.
#[derive(Debug)]
pub struct PushContext {
    pub version: String,
    pub mesh: Arc<MeshConfig>,
    pub resources: Arc<Vec<Resource>>,
    pub registry: Registry,
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
        let registry = Registry::build(&resources, DOMAIN_SUFFIX);
        let destination_rules = destination::Index::build(&resources, &mesh, &registry);
        let authz = authz::Index::build(&resources, &mesh, &registry);
        let telemetry = crate::telemetry::Index::build(&resources, &mesh, &registry);
        PushContext {
            version,
            mesh,
            resources,
            registry,
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
}
