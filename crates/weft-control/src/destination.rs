//! DestinationRule lookups used by the generators, per proxy as istiod 1.14 makes them: which
//! rule applies to a service for a proxy ([`Index`], [`Scope`]), its subsets, and the traffic
//! policy for one port and subset merged as istiod merges it (the rule's policy, overridden by
//! its `portLevelSettings` for the port, then by the subset's policy and the subset's own
//! port-level settings).

mod index;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

use weft_api::common::ClientTlsSettings;
use weft_api::networking::{
    ConnectionPoolSettings, DestinationRule, LoadBalancerSettings, OutlierDetection, TrafficPolicy,
};

pub use index::{Index, Inputs, Scope};

use crate::registry::Service;
use crate::sidecar::ProxyView;

/// A DestinationRule subset for one service.
#[derive(Debug, Clone, PartialEq)]
pub struct Subset {
    pub name: String,
    pub labels: BTreeMap<String, String>,
}

/// The DestinationRule that applies to `svc` for this proxy: a rule of the proxy's own
/// namespace (one whose `workloadSelector` matches the proxy first), else one the service's
/// namespace exports to the proxy's, else one the root namespace exports to it; rules for one
/// host in one namespace merged, the most specific host winning.
pub fn rule_for<'p>(view: &ProxyView<'p>, svc: &Service) -> Option<&'p DestinationRule> {
    view.push
        .destination_rules
        .resolve(&view.destination_scope, svc)
        .map(|e| e.rule.as_ref())
}

/// Istio's `istio.config` path of the DestinationRule that applies to `svc` for this proxy
/// (`/apis/networking.istio.io/v1alpha3/namespaces/NS/destination-rule/NAME`), which
/// istioctl's `proxy-config cluster` shows as `NAME.NS`.
pub fn rule_config_path(view: &ProxyView, svc: &Service) -> Option<String> {
    let e = view
        .push
        .destination_rules
        .resolve(&view.destination_scope, svc)?;
    Some(format!(
        "/apis/networking.istio.io/v1alpha3/namespaces/{}/destination-rule/{}",
        e.namespace, e.name
    ))
}

/// The subsets the DestinationRule defines for `svc`, for this proxy.
pub fn subsets_for(view: &ProxyView, svc: &Service) -> Vec<Subset> {
    rule_for(view, svc)
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

/// The labels of one subset of `svc` for this proxy (the first subset of that name).
pub fn subset_labels(
    view: &ProxyView,
    svc: &Service,
    subset: &str,
) -> Option<BTreeMap<String, String>> {
    rule_for(view, svc)?
        .subsets
        .iter()
        .find(|s| s.name == subset)
        .map(|s| s.labels.clone())
}

/// What the ClusterLoadAssignment of `cluster` depends on for this proxy: the cluster name;
/// `~` when the proxy does not see the service; the namespace of the service it uses when
/// several define the host; and for a subset cluster the subset's labels (`!` when the proxy's
/// rule has no such subset). Proxies with the same key get the same assignment.
pub fn endpoints_key(view: &ProxyView, cluster: &str) -> String {
    let Some((_, _, subset, host)) = crate::sidecar::parse_cluster_name(cluster) else {
        return cluster.to_string();
    };
    let Some(svc) = view.service(host) else {
        return format!("{cluster}~");
    };
    let mut key = cluster.to_string();
    if view.push.registry.shared_host(host) {
        key.push('@');
        key.push_str(&svc.namespace);
    }
    if subset.is_empty() {
        return key;
    }
    match subset_labels(view, svc, subset) {
        None => key.push('!'),
        Some(labels) => {
            let labels: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
            key.push('#');
            key.push_str(&labels.join(","));
        }
    }
    key
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
pub fn policy_for(view: &ProxyView, svc: &Service, port: u16, subset: &str) -> Policy {
    let mut policy = Policy::default();
    let Some(dr) = rule_for(view, svc) else {
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
