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
        }
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
