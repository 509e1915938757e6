//! xDS v3 resource type URLs, subscriptions and resource hashing.

use std::collections::BTreeSet;
use std::sync::Arc;

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
/// NDS: Istio's `istio.networking.nds.v1.NameTable` (the sidecar's DNS proxy).
pub const NAME_TABLE: &str = crate::istio::NAME_TABLE_TYPE_URL;
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
        NAME_TABLE => "NDS",
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

/// A resource with its name, packed as `Any`, and the digest of its content.
///
/// Cheap to clone (one reference count): the control plane builds each resource once per push
/// and every stream that sends it shares the same bytes. Two resources with equal names and
/// digests have the same content, which is how streams tell what changed.
#[derive(Clone)]
pub struct NamedResource(Arc<ResourceInner>);

struct ResourceInner {
    name: String,
    resource: Any,
    digest: Digest,
}

impl NamedResource {
    /// Packs `resource` under `name`, hashing its content once.
    pub fn new(name: impl Into<String>, resource: Any) -> Self {
        let mut ctx = digest::Context::new(&digest::SHA256);
        ctx.update(resource.type_url.as_bytes());
        ctx.update(&[0]);
        ctx.update(&resource.value);
        NamedResource(Arc::new(ResourceInner {
            name: name.into(),
            resource,
            digest: to_digest(ctx.finish()),
        }))
    }

    /// Resource name (listener, cluster, route configuration, cluster load assignment or secret
    /// name).
    pub fn name(&self) -> &str {
        &self.0.name
    }

    /// The packed resource.
    pub fn resource(&self) -> &Any {
        &self.0.resource
    }

    /// SHA-256 of the type URL and the encoded bytes.
    pub fn digest(&self) -> &Digest {
        &self.0.digest
    }

    /// Per-resource version of the delta protocol: 16 hex digits of the digest.
    pub fn version(&self) -> String {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut out = String::with_capacity(16);
        for b in &self.0.digest[..8] {
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0xf)]));
        }
        out
    }

    /// Whether both have the same name and content (the same allocation, or equal digests).
    pub fn same(&self, other: &NamedResource) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
            || (self.0.digest == other.0.digest && self.0.name == other.0.name)
    }
}

impl PartialEq for NamedResource {
    fn eq(&self, other: &Self) -> bool {
        self.same(other)
    }
}

impl std::fmt::Debug for NamedResource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NamedResource")
            .field("name", &self.0.name)
            .field("type_url", &self.0.resource.type_url)
            .field("bytes", &self.0.resource.value.len())
            .finish()
    }
}

/// What a client subscribed to for one type.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Subscription {
    /// All resources of the type.
    Wildcard,
    /// Only these names (shared: streams keep and report a subscription without copying it).
    Names(Arc<BTreeSet<String>>),
}

/// Whether a state-of-the-world `resource_names` list (strings, or the bytes received) asks
/// for every resource: it names `*`, or is empty for a wildcard type.
fn names_mean_all<N: AsRef<[u8]>>(type_url: &str, names: &[N]) -> bool {
    names.iter().any(|n| n.as_ref() == b"*") || (names.is_empty() && is_wildcard_type(type_url))
}

impl Subscription {
    /// Interprets a state-of-the-world `resource_names` list: `*` or (for wildcard types) an empty
    /// list means all resources.
    pub fn from_names(type_url: &str, names: &[String]) -> Self {
        if names_mean_all(type_url, names) {
            Subscription::Wildcard
        } else {
            Subscription::Names(Arc::new(names.iter().cloned().collect()))
        }
    }

    /// [`Subscription::from_names`] taking the list (a decoded request's names, kept as they
    /// are rather than copied).
    pub fn from_owned_names(type_url: &str, names: Vec<String>) -> Self {
        if names_mean_all(type_url, &names) {
            Subscription::Wildcard
        } else {
            Subscription::Names(Arc::new(names.into_iter().collect()))
        }
    }

    /// Whether a state-of-the-world `resource_names` list (as strings, or as the bytes
    /// received) asks for exactly this subscription; cheap (no allocation) for the usual request
    /// that repeats the names already held.
    pub fn same_as_names<N: AsRef<[u8]>>(&self, type_url: &str, names: &[N]) -> bool {
        let wildcard = names_mean_all(type_url, names);
        match self {
            Subscription::Wildcard => wildcard,
            Subscription::Names(_) if wildcard => false,
            Subscription::Names(set) => {
                // The usual ACK repeats the held names in order: equal to the sorted set
                // element by element means the same set (one pass; no separate sortedness
                // check, whose comparisons of long, prefix-sharing names cost as much again).
                if names.len() == set.len()
                    && names
                        .iter()
                        .zip(set.iter())
                        .all(|(a, b)| a.as_ref() == b.as_bytes())
                {
                    return true;
                }
                // Else the same set in another order or with repeats.
                let mut sorted: Vec<&[u8]> = names.iter().map(AsRef::as_ref).collect();
                sorted.sort_unstable();
                sorted.dedup();
                sorted.len() == set.len()
                    && sorted
                        .iter()
                        .zip(set.iter())
                        .all(|(a, b)| *a == b.as_bytes())
            }
        }
    }

    /// A subscription to these names.
    pub fn names<S: Into<String>>(names: impl IntoIterator<Item = S>) -> Self {
        Subscription::Names(Arc::new(names.into_iter().map(Into::into).collect()))
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
pub type Digest = [u8; 32];

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
    if !resources.is_sorted_by(|a, b| a.name() <= b.name()) {
        resources.sort_by(|a, b| a.name().cmp(b.name()));
    }
    resources.dedup_by(|a, b| a.name() == b.name());
    if let Subscription::Names(names) = sub {
        // Both sorted: one walk instead of a lookup per resource.
        let mut wanted = names.iter().peekable();
        resources.retain(|r| {
            while wanted.next_if(|n| n.as_str() < r.name()).is_some() {}
            wanted.peek().is_some_and(|n| n.as_str() == r.name())
        });
    }
    resources
}

#[cfg(test)]
mod tests {
    use super::*;

    fn res(name: &str, value: &[u8]) -> NamedResource {
        crate::testutil::raw_resource(name, value)
    }

    #[test]
    fn wildcard_rules() {
        assert!(Subscription::from_names(CLUSTER, &[]).is_wildcard());
        assert!(Subscription::from_names(LISTENER, &[]).is_wildcard());
        assert!(!Subscription::from_names(ENDPOINT, &[]).is_wildcard());
        assert!(!Subscription::from_names(ROUTE, &[]).is_wildcard());
        assert!(Subscription::from_names(ENDPOINT, &["*".into()]).is_wildcard());
        let s = Subscription::from_names(ENDPOINT, &["a".into()]);
        let names = |n: &[&str]| n.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let ab = Subscription::names(["a", "b"]);
        assert!(ab.same_as_names(ENDPOINT, &names(&["a", "b"])));
        assert!(ab.same_as_names(ENDPOINT, &names(&["b", "a", "b"])));
        assert!(!ab.same_as_names(ENDPOINT, &names(&["a"])));
        assert!(!ab.same_as_names(ENDPOINT, &names(&["a", "c"])));
        assert!(!ab.same_as_names(ENDPOINT, &names(&["a", "b", "*"])));
        let none: &[String] = &[];
        assert!(Subscription::Wildcard.same_as_names(CLUSTER, none));
        assert!(!Subscription::Wildcard.same_as_names(ENDPOINT, none));
        // The same, as the bytes a request carries.
        let raw = |v: &[&'static str]| -> Vec<bytes::Bytes> {
            v.iter()
                .map(|n| bytes::Bytes::from_static(n.as_bytes()))
                .collect()
        };
        assert!(ab.same_as_names(ENDPOINT, &raw(&["a", "b"])));
        assert!(ab.same_as_names(ENDPOINT, &raw(&["b", "a"])));
        assert!(!ab.same_as_names(ENDPOINT, &raw(&["a", "c"])));
        assert!(!ab.same_as_names(ENDPOINT, &raw(&["*"])));
        assert!(s.contains("a") && !s.contains("b"));
        assert_eq!(short_name(ENDPOINT), "EDS");
        assert_eq!(short_name("x"), "x");
    }

    #[test]
    fn digest_and_normalize() {
        let a = vec![res("b", b"2"), res("a", b"1"), res("c", b"3")];
        let sub = Subscription::names(["a", "b"]);
        let n = normalize(a.clone(), &sub);
        assert_eq!(n.iter().map(|r| r.name()).collect::<Vec<_>>(), ["a", "b"]);
        // Same name and bytes built twice: the same content; other bytes or names: not.
        assert!(res("a", b"1").same(&n[0]));
        assert!(!res("a", b"x").same(&n[0]));
        assert!(!res("z", b"1").same(&n[0]));
        assert_eq!(n[0].version().len(), 16);
        let hex: String = n[0].digest()[..8]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(n[0].version(), hex);
        assert_ne!(res("a", b"1").version(), res("a", b"2").version());
        let other_type = NamedResource::new(
            "a",
            Any {
                type_url: ENDPOINT.into(),
                value: b"1".to_vec(),
            },
        );
        assert!(!other_type.same(&n[0]));
    }
}
