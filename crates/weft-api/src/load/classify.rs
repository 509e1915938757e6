//! What an apiVersion / kind pair names: a kind Weft reads, a kind Istio applies that Weft does
//! not, or something that is not Istio configuration at all.

use crate::meta::Kind;
use crate::note::Skip;

/// Istio kinds Weft does not implement, with the apiVersions Istio's CRDs serve them under.
const ISTIO_UNSUPPORTED: &[(&str, &[&str])] = &[
    ("EnvoyFilter", &["networking.istio.io/v1alpha3"]),
    (
        "WorkloadGroup",
        &[
            "networking.istio.io/v1alpha3",
            "networking.istio.io/v1beta1",
            "networking.istio.io/v1",
        ],
    ),
    ("WasmPlugin", &["extensions.istio.io/v1alpha1"]),
    ("IstioOperator", &["install.istio.io/v1alpha1"]),
];

/// The class of a document, from its apiVersion and kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Class {
    /// A kind Weft reads (the apiVersion is checked against [`Kind::api_versions`] later).
    Weft(Kind),
    /// A kind Istio serves and Weft does not implement, under an apiVersion Istio does not
    /// serve it at: an error, as `kubectl apply` would refuse it.
    UnservedVersion(&'static [&'static str]),
    /// An unknown kind in an Istio API group (a typo, or a kind Istio no longer serves).
    UnknownIstioKind(String),
    /// Read, not applied.
    Skipped(Skip),
}

/// The API group of an apiVersion (`""` for the Kubernetes core group, `v1`).
pub(crate) fn group_of(api_version: &str) -> &str {
    api_version.split_once('/').map_or("", |(g, _)| g)
}

fn is_istio_group(group: &str) -> bool {
    group == "istio.io" || group.ends_with(".istio.io")
}

/// Classifies a document by its apiVersion and kind, both as written.
pub(crate) fn classify(api_version: &str, kind: &str) -> Class {
    let group = group_of(api_version);
    // The Gateway API has its own `Gateway`: decide by group before by kind name.
    if group == "gateway.networking.k8s.io" {
        return Class::Skipped(Skip::GatewayApi);
    }
    if group == "networking.k8s.io" && kind == "Ingress" {
        return Class::Skipped(Skip::Ingress);
    }
    if let Some(k) = Kind::from_name(kind) {
        return Class::Weft(k);
    }
    if let Some((_, served)) = ISTIO_UNSUPPORTED.iter().find(|(k, _)| *k == kind) {
        let served: &'static [&'static str] = served;
        if served.contains(&api_version) {
            let skip = if kind == "IstioOperator" {
                Skip::IstioOperator
            } else {
                Skip::UnsupportedIstio
            };
            return Class::Skipped(skip);
        }
        if is_istio_group(group) {
            return Class::UnservedVersion(served);
        }
    }
    if is_istio_group(group) {
        return Class::UnknownIstioKind(group.to_owned());
    }
    if group.is_empty() && kind == "List" {
        return Class::Skipped(Skip::List);
    }
    Class::Skipped(Skip::NotIstio)
}

/// The kinds Istio serves in `group` (Weft's and the unsupported ones), sorted.
pub(crate) fn istio_kinds_in(group: &str) -> Vec<&'static str> {
    let mut kinds: Vec<&'static str> = Kind::ALL
        .iter()
        .filter(|k| k.group() == group)
        .map(|k| k.as_str())
        .chain(
            ISTIO_UNSUPPORTED
                .iter()
                .filter(|(_, served)| served.iter().any(|v| group_of(v) == group))
                .map(|(k, _)| *k),
        )
        .collect();
    kinds.sort_unstable();
    kinds
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes() {
        use Class::*;
        let cases: &[(&str, &str, Class)] = &[
            (
                "networking.istio.io/v1",
                "VirtualService",
                Weft(Kind::VirtualService),
            ),
            // Wrong versions of Weft's kinds are reported by the caller, with the served list.
            ("v1", "VirtualService", Weft(Kind::VirtualService)),
            (
                "networking.istio.io/v1alpha3",
                "EnvoyFilter",
                Skipped(Skip::UnsupportedIstio),
            ),
            (
                "networking.istio.io/v1",
                "EnvoyFilter",
                UnservedVersion(&["networking.istio.io/v1alpha3"]),
            ),
            (
                "networking.istio.io/v1",
                "WorkloadGroup",
                Skipped(Skip::UnsupportedIstio),
            ),
            (
                "extensions.istio.io/v1alpha1",
                "WasmPlugin",
                Skipped(Skip::UnsupportedIstio),
            ),
            (
                "install.istio.io/v1alpha1",
                "IstioOperator",
                Skipped(Skip::IstioOperator),
            ),
            (
                "networking.istio.io/v1alpha3",
                "VirtualServce",
                UnknownIstioKind("networking.istio.io".into()),
            ),
            (
                "authentication.istio.io/v1alpha1",
                "Policy",
                UnknownIstioKind("authentication.istio.io".into()),
            ),
            (
                "gateway.networking.k8s.io/v1",
                "Gateway",
                Skipped(Skip::GatewayApi),
            ),
            (
                "gateway.networking.k8s.io/v1alpha2",
                "TCPRoute",
                Skipped(Skip::GatewayApi),
            ),
            ("networking.k8s.io/v1", "Ingress", Skipped(Skip::Ingress)),
            (
                "networking.k8s.io/v1",
                "NetworkPolicy",
                Skipped(Skip::NotIstio),
            ),
            ("v1", "List", Skipped(Skip::List)),
            ("v1", "Service", Skipped(Skip::NotIstio)),
            ("apps/v1", "Deployment", Skipped(Skip::NotIstio)),
            (
                "certmanager.k8s.io/v1alpha1",
                "Certificate",
                Skipped(Skip::NotIstio),
            ),
        ];
        for (av, kind, want) in cases {
            assert_eq!(&classify(av, kind), want, "{av} {kind}");
        }
    }

    #[test]
    fn kinds_per_group() {
        assert_eq!(
            istio_kinds_in("networking.istio.io"),
            [
                "DestinationRule",
                "EnvoyFilter",
                "Gateway",
                "ProxyConfig",
                "ServiceEntry",
                "Sidecar",
                "VirtualService",
                "WorkloadEntry",
                "WorkloadGroup"
            ]
        );
        assert_eq!(
            istio_kinds_in("security.istio.io"),
            [
                "AuthorizationPolicy",
                "PeerAuthentication",
                "RequestAuthentication"
            ]
        );
        assert_eq!(istio_kinds_in("telemetry.istio.io"), ["Telemetry"]);
        assert!(istio_kinds_in("authentication.istio.io").is_empty());
    }
}
