//! The push context: one immutable, versioned view of everything the generators read.

use std::sync::Arc;

use weft_api::{MeshConfig, Resource};

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
}

impl PushContext {
    pub fn new(version: String, mesh: Arc<MeshConfig>, resources: Arc<Vec<Resource>>) -> Self {
        let registry = Registry::build(&resources, DOMAIN_SUFFIX);
        let destination_rules = destination::Index::build(&resources, &mesh, &registry);
        PushContext {
            version,
            mesh,
            resources,
            registry,
            destination_rules,
        }
    }

    pub fn trust_domain(&self) -> &str {
        &self.mesh.trust_domain
    }

    pub fn root_namespace(&self) -> &str {
        &self.mesh.root_namespace
    }
}
