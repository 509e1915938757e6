//! DestinationRule lookups used by the generators: the rule for a service, its subsets, and
//! the traffic policy for one port and subset merged as istiod merges it (the rule's policy,
//! overridden by its `portLevelSettings` for the port, then by the subset's policy and the
//! subset's own port-level settings).

use std::collections::BTreeMap;

use weft_api::Spec;
use weft_api::common::ClientTlsSettings;
use weft_api::networking::{
    ConnectionPoolSettings, DestinationRule, LoadBalancerSettings, OutlierDetection, TrafficPolicy,
};

use crate::push::{DOMAIN_SUFFIX, PushContext};
use crate::registry::Service;

/// A DestinationRule subset for one service.
#[derive(Debug, Clone, PartialEq)]
pub struct Subset {
    pub name: String,
    pub labels: BTreeMap<String, String>,
}

/// The DestinationRule for `svc`: one in the service's namespace wins over one elsewhere, as
/// Istio's lookup does; rules for the same host are not merged (the first in config order wins).
pub fn rule_for<'a>(push: &'a PushContext, svc: &Service) -> Option<&'a DestinationRule> {
    let mut best: Option<(bool, &DestinationRule)> = None;
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
        best = Some((local, dr));
    }
    best.map(|(_, dr)| dr)
}

/// The subsets the DestinationRule defines for `svc`.
pub fn subsets_for(push: &PushContext, svc: &Service) -> Vec<Subset> {
    rule_for(push, svc)
        .map(|dr| {
            dr.subsets
                .iter()
                .map(|s| Subset {
                    name: s.name.clone(),
                    labels: s.labels.clone(),
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The traffic policy in force for one port and subset of a service.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Policy {
    pub load_balancer: Option<LoadBalancerSettings>,
    pub connection_pool: Option<ConnectionPoolSettings>,
    pub outlier_detection: Option<OutlierDetection>,
    pub tls: Option<ClientTlsSettings>,
}

impl Policy {
    /// Fields set in `tp` (and in its port-level settings for `port`) replace ours.
    fn overlay(&mut self, tp: &TrafficPolicy, port: u16) {
        self.set(
            &tp.load_balancer,
            &tp.connection_pool,
            &tp.outlier_detection,
            &tp.tls,
        );
        if let Some(pl) = tp
            .port_level_settings
            .iter()
            .find(|p| p.port.as_ref().is_some_and(|s| s.number == port as u32))
        {
            self.set(
                &pl.load_balancer,
                &pl.connection_pool,
                &pl.outlier_detection,
                &pl.tls,
            );
        }
    }

    fn set(
        &mut self,
        lb: &Option<LoadBalancerSettings>,
        pool: &Option<ConnectionPoolSettings>,
        od: &Option<OutlierDetection>,
        tls: &Option<ClientTlsSettings>,
    ) {
        if lb.is_some() {
            self.load_balancer = lb.clone();
        }
        if pool.is_some() {
            self.connection_pool = pool.clone();
        }
        if od.is_some() {
            self.outlier_detection = od.clone();
        }
        if tls.is_some() {
            self.tls = tls.clone();
        }
    }
}

/// The merged traffic policy for `svc` on `port`, for `subset` ("" for the whole service).
pub fn policy_for(push: &PushContext, svc: &Service, port: u16, subset: &str) -> Policy {
    let mut policy = Policy::default();
    let Some(dr) = rule_for(push, svc) else {
        return policy;
    };
    if let Some(tp) = &dr.traffic_policy {
        policy.overlay(tp, port);
    }
    if !subset.is_empty()
        && let Some(tp) = dr
            .subsets
            .iter()
            .find(|s| s.name == subset)
            .and_then(|s| s.traffic_policy.as_ref())
    {
        policy.overlay(tp, port);
    }
    policy
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::sync::Arc;

    use super::*;

    #[test]
    fn port_and_subset_policies_override_the_rule() {
        let yaml = r#"
apiVersion: networking.istio.io/v1beta1
kind: ServiceEntry
metadata: {name: httpbin, namespace: default}
spec:
  hosts: [httpbin.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 8000, name: http, protocol: HTTP}, {number: 9000, name: tcp, protocol: TCP}]
---
apiVersion: networking.istio.io/v1beta1
kind: DestinationRule
metadata: {name: httpbin, namespace: default}
spec:
  host: httpbin
  trafficPolicy:
    loadBalancer: {simple: RANDOM}
    connectionPool: {tcp: {maxConnections: 1}}
    portLevelSettings:
    - port: {number: 9000}
      loadBalancer: {simple: LEAST_REQUEST}
  subsets:
  - name: v2
    labels: {version: v2}
    trafficPolicy:
      connectionPool: {tcp: {maxConnections: 7}}
"#;
        let (rs, problems) = weft_api::parse_documents(yaml, Path::new("t.yaml"));
        assert!(problems.is_empty(), "{problems:?}");
        let push = PushContext::new("1".into(), Arc::default(), Arc::new(rs));
        let svc = push
            .registry
            .service("httpbin.default.svc.cluster.local")
            .unwrap()
            .clone();
        let simple = |p: &Policy| p.load_balancer.as_ref().and_then(|l| l.simple);
        let max_conn = |p: &Policy| {
            p.connection_pool
                .as_ref()
                .and_then(|c| c.tcp.as_ref())
                .map(|t| t.max_connections)
        };
        let p = policy_for(&push, &svc, 8000, "");
        assert_eq!(simple(&p), Some(weft_api::networking::SimpleLb::Random));
        assert_eq!(max_conn(&p), Some(1));
        let p = policy_for(&push, &svc, 9000, "");
        assert_eq!(
            simple(&p),
            Some(weft_api::networking::SimpleLb::LeastRequest)
        );
        let p = policy_for(&push, &svc, 8000, "v2");
        assert_eq!(max_conn(&p), Some(7));
        assert_eq!(simple(&p), Some(weft_api::networking::SimpleLb::Random));
        assert_eq!(subsets_for(&push, &svc).len(), 1);
    }
}
