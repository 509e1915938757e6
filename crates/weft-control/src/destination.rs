//! DestinationRule lookups used by the generators.

use std::collections::BTreeMap;

use weft_api::Spec;

use crate::push::{DOMAIN_SUFFIX, PushContext};
use crate::registry::Service;

/// A DestinationRule subset for one service.
#[derive(Debug, Clone, PartialEq)]
pub struct Subset {
    pub name: String,
    pub labels: BTreeMap<String, String>,
}

/// The subsets DestinationRules define for `svc` (a DR in the service's namespace wins over one
/// elsewhere, as Istio's lookup does; rules for the same host are not merged).
pub fn subsets_for(push: &PushContext, svc: &Service) -> Vec<Subset> {
    let mut best: Option<(bool, Vec<Subset>)> = None;
    for r in push.resources.iter() {
        let Spec::DestinationRule(dr) = &r.spec else {
            continue;
        };
        if weft_api::resolve_host(&dr.host, &r.meta.namespace, DOMAIN_SUFFIX) != svc.hostname {
            continue;
        }
        let local = r.meta.namespace == svc.namespace;
        if best.as_ref().is_some_and(|(l, _)| *l || !local) {
            continue;
        }
        let subsets = dr
            .subsets
            .iter()
            .map(|s| Subset {
                name: s.name.clone(),
                labels: s.labels.clone(),
            })
            .collect();
        best = Some((local, subsets));
    }
    best.map(|(_, s)| s).unwrap_or_default()
}
