//! PeerAuthentication: the effective mTLS mode of a workload's port, with Istio's precedence
//! (workload selector > namespace-wide > root-namespace mesh-wide; UNSET inherits; default
//! PERMISSIVE; portLevelMtls only on selector policies).

use std::collections::BTreeMap;

use weft_api::security::MtlsMode as ApiMode;
use weft_api::{PeerAuthentication, Resource, Spec};

/// The resolved inbound mTLS mode of one port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum MtlsMode {
    Disable,
    Permissive,
    Strict,
}

impl MtlsMode {
    pub fn as_str(self) -> &'static str {
        match self {
            MtlsMode::Disable => "DISABLE",
            MtlsMode::Permissive => "PERMISSIVE",
            MtlsMode::Strict => "STRICT",
        }
    }
}

fn resolve(mode: ApiMode) -> Option<MtlsMode> {
    match mode {
        ApiMode::Unset => None,
        ApiMode::Disable => Some(MtlsMode::Disable),
        ApiMode::Permissive => Some(MtlsMode::Permissive),
        ApiMode::Strict => Some(MtlsMode::Strict),
    }
}

/// The PeerAuthentications that apply to one workload, most specific first.
pub struct PolicyChain<'a> {
    workload: Option<&'a PeerAuthentication>,
    namespace: Option<&'a PeerAuthentication>,
    mesh: Option<&'a PeerAuthentication>,
}

impl<'a> PolicyChain<'a> {
    /// Finds the policies for a workload in `namespace` with `labels`. When several match at
    /// one level Istio takes the oldest; off Kubernetes there is no creation time, so the first
    /// by name wins (resources arrive sorted by file and name).
    pub fn for_workload(
        resources: &'a [Resource],
        root_namespace: &str,
        namespace: &str,
        labels: &BTreeMap<String, String>,
    ) -> Self {
        let mut chain = PolicyChain {
            workload: None,
            namespace: None,
            mesh: None,
        };
        let mut pas: Vec<(&Resource, &PeerAuthentication)> = resources
            .iter()
            .filter_map(|r| match &r.spec {
                Spec::PeerAuthentication(pa) => Some((r, pa)),
                _ => None,
            })
            .collect();
        pas.sort_by(|a, b| a.0.meta.name.cmp(&b.0.meta.name));
        for (r, pa) in pas {
            let selector = pa.selector.as_ref().filter(|s| !s.match_labels.is_empty());
            if r.meta.namespace == namespace {
                match selector {
                    Some(sel) => {
                        if chain.workload.is_none()
                            && sel
                                .match_labels
                                .iter()
                                .all(|(k, v)| labels.get(k) == Some(v))
                        {
                            chain.workload = Some(pa);
                        }
                    }
                    None => {
                        if chain.namespace.is_none() {
                            chain.namespace = Some(pa);
                        }
                    }
                }
            }
            if r.meta.namespace == root_namespace && selector.is_none() && chain.mesh.is_none() {
                chain.mesh = Some(pa);
            }
        }
        chain
    }

    /// The policies in force, mesh-wide first, then the namespace's, then the workload's.
    pub fn applied(&self) -> impl Iterator<Item = &'a PeerAuthentication> + use<'a> {
        [self.mesh, self.namespace, self.workload]
            .into_iter()
            .flatten()
    }

    /// The workload-selector policy in force (the only level whose portLevelMtls counts).
    pub fn workload_policy(&self) -> Option<&'a PeerAuthentication> {
        self.workload
    }

    /// The workload-level mode (used for ports without a portLevelMtls entry and for the
    /// passthrough chains).
    pub fn workload_mode(&self) -> MtlsMode {
        [self.workload, self.namespace, self.mesh]
            .into_iter()
            .flatten()
            .find_map(|pa| pa.mtls.as_ref().and_then(|m| resolve(m.mode)))
            .unwrap_or(MtlsMode::Permissive)
    }

    /// The mode of one target (container) port.
    pub fn port_mode(&self, port: u16) -> MtlsMode {
        if let Some(pa) = self.workload
            && let Some(m) = pa.port_level_mtls.get(&(port as u32))
            && let Some(mode) = resolve(m.mode)
        {
            return mode;
        }
        self.workload_mode()
    }
}
