//! xDS v3 resource type URLs, subscriptions and resource hashing.

use std::collections::BTreeSet;

use aws_lc_rs::digest;
use serde::Serialize;

use crate::pb::google::protobuf::Any;

/// LDS: `envoy.config.listener.v3.Listener`.
pub const LISTENER: &str = "type.googleapis.com/envoy.config.listener.v3.Listener";
/// RDS: `envoy.config.route.v3.RouteConfiguration`.
pub const ROUTE: &str = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration";
/// CDS: `envoy.config.cluster.v3.Cluster`.
pub const CLUSTER: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
/// EDS: `envoy.config.endpoint.v3.ClusterLoadAssignment`.
pub const ENDPOINT: &str = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment";
/// SDS: `envoy.extensions.transport_sockets.tls.v3.Secret`.
pub const SECRET: &str = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret";
/// ECDS: `envoy.config.core.v3.TypedExtensionConfig`.
pub const EXTENSION_CONFIG: &str = "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig";

/// Short name of a type URL for logs ("LDS", "RDS", "CDS", "EDS", "SDS", "ECDS"); other URLs are
/// returned unchanged.
pub fn short_name(type_url: &str) -> &str {
    match type_url {
        LISTENER => "LDS",
        ROUTE => "RDS",
        CLUSTER => "CDS",
        ENDPOINT => "EDS",
        SECRET => "SDS",
        EXTENSION_CONFIG => "ECDS",
        other => other,
    }
}

/// Whether an empty name list means "all resources" for this type (as istiod's
/// `IsWildcardTypeURL`): true for LDS, CDS and unknown types, false for EDS, RDS, SDS and ECDS.
pub fn is_wildcard_type(type_url: &str) -> bool {
    !matches!(type_url, ENDPOINT | ROUTE | SECRET | EXTENSION_CONFIG)
}

/// Order in which Envoy subscribes at startup: CDS, EDS, LDS, RDS, then everything else.
pub fn subscription_rank(type_url: &str) -> u8 {
    match type_url {
        CLUSTER => 0,
        ENDPOINT => 1,
        LISTENER => 2,
        ROUTE => 3,
        SECRET => 4,
        _ => 5,
    }
}

/// A resource with its name, packed as `Any`.
#[derive(Clone, Debug, PartialEq)]
pub struct NamedResource {
    /// Resource name (listener, cluster, route configuration, cluster load assignment or secret name).
    pub name: String,
    /// The packed resource.
    pub resource: Any,
}

/// What a client subscribed to for one type.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Subscription {
    /// All resources of the type.
    Wildcard,
    /// Only these names.
    Names(BTreeSet<String>),
}

impl Subscription {
    /// Interprets a state-of-the-world `resource_names` list: `*` or (for wildcard types) an empty
    /// list means all resources.
    pub fn from_names(type_url: &str, names: &[String]) -> Self {
        if names.iter().any(|n| n == "*") || (names.is_empty() && is_wildcard_type(type_url)) {
            Subscription::Wildcard
        } else {
            Subscription::Names(names.iter().cloned().collect())
        }
    }

    /// True for [`Subscription::Wildcard`].
    pub fn is_wildcard(&self) -> bool {
        matches!(self, Subscription::Wildcard)
    }

    /// Whether a resource with this name is covered by the subscription.
    pub fn contains(&self, name: &str) -> bool {
        match self {
            Subscription::Wildcard => true,
            Subscription::Names(names) => names.contains(name),
        }
    }
}

/// SHA-256 digest.
pub(crate) type Digest = [u8; 32];

/// Digest of a sorted list of resources (name, type URL and bytes of each).
pub(crate) fn digest_resources(resources: &[NamedResource]) -> Digest {
    let mut ctx = digest::Context::new(&digest::SHA256);
    for r in resources {
        for part in [
            r.name.as_bytes(),
            r.resource.type_url.as_bytes(),
            &r.resource.value,
        ] {
            ctx.update(&(part.len() as u64).to_be_bytes());
            ctx.update(part);
        }
    }
    to_digest(ctx.finish())
}

/// Per-resource version used by the delta protocol: 16 hex digits of the SHA-256 of the resource.
pub(crate) fn resource_version(resource: &Any) -> String {
    let mut ctx = digest::Context::new(&digest::SHA256);
    ctx.update(resource.type_url.as_bytes());
    ctx.update(&[0]);
    ctx.update(&resource.value);
    to_digest(ctx.finish())[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn to_digest(d: digest::Digest) -> Digest {
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// Sorts by name and keeps only resources the subscription covers (the first of duplicate names).
pub(crate) fn normalize(
    mut resources: Vec<NamedResource>,
    sub: &Subscription,
) -> Vec<NamedResource> {
    resources.retain(|r| sub.contains(&r.name));
    resources.sort_by(|a, b| a.name.cmp(&b.name));
    resources.dedup_by(|a, b| a.name == b.name);
    resources
}

#[cfg(test)]
mod tests {
    use super::*;

    fn res(name: &str, value: &[u8]) -> NamedResource {
        NamedResource {
            name: name.into(),
            resource: Any {
                type_url: CLUSTER.into(),
                value: value.to_vec(),
            },
        }
    }

    #[test]
    fn wildcard_rules() {
        assert!(Subscription::from_names(CLUSTER, &[]).is_wildcard());
        assert!(Subscription::from_names(LISTENER, &[]).is_wildcard());
        assert!(!Subscription::from_names(ENDPOINT, &[]).is_wildcard());
        assert!(!Subscription::from_names(ROUTE, &[]).is_wildcard());
        assert!(Subscription::from_names(ENDPOINT, &["*".into()]).is_wildcard());
        let s = Subscription::from_names(ENDPOINT, &["a".into()]);
        assert!(s.contains("a") && !s.contains("b"));
        assert_eq!(short_name(ENDPOINT), "EDS");
        assert_eq!(short_name("x"), "x");
    }

    #[test]
    fn digest_and_normalize() {
        let a = vec![res("b", b"2"), res("a", b"1"), res("c", b"3")];
        let sub = Subscription::Names(["a".to_string(), "b".to_string()].into());
        let n = normalize(a.clone(), &sub);
        assert_eq!(
            n.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(),
            ["a", "b"]
        );
        let reordered = normalize(vec![res("a", b"1"), res("b", b"2")], &sub);
        assert_eq!(digest_resources(&n), digest_resources(&reordered));
        let changed = normalize(vec![res("a", b"1"), res("b", b"x")], &sub);
        assert_ne!(digest_resources(&n), digest_resources(&changed));
        // Length-prefixing keeps name/value boundaries distinct.
        assert_ne!(
            digest_resources(&[res("ab", b"")]),
            digest_resources(&[res("a", b"b")])
        );
        assert_eq!(resource_version(&res("a", b"1").resource).len(), 16);
        assert_ne!(
            resource_version(&res("a", b"1").resource),
            resource_version(&res("a", b"2").resource)
        );
    }
}
