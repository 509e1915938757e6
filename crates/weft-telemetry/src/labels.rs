//! Istio's standard Prometheus label sets, interned label values and peer identity.

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Deref;
use std::sync::{Arc, LazyLock};

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};

use crate::peer::NodeMetadata;

/// Label key holding the canonical service name (highest precedence).
pub const CANONICAL_NAME_LABEL: &str = "service.istio.io/canonical-name";
/// Label key holding the canonical revision (highest precedence).
pub const CANONICAL_REVISION_LABEL: &str = "service.istio.io/canonical-revision";
/// Kubernetes recommended name label (second precedence for the canonical service).
pub const K8S_NAME_LABEL: &str = "app.kubernetes.io/name";
/// Kubernetes recommended version label (second precedence for the canonical revision).
pub const K8S_VERSION_LABEL: &str = "app.kubernetes.io/version";
/// Istio's classic `app` label.
pub const APP_LABEL: &str = "app";
/// Istio's classic `version` label.
pub const VERSION_LABEL: &str = "version";

/// A cheap-to-clone, immutable Prometheus label value (`Arc<str>`).
///
/// Build label values once (per peer, per route, per cluster) and clone them into label sets;
/// cloning only bumps a reference count.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Label(Arc<str>);

macro_rules! static_label {
    ($(#[$doc:meta] $fn_name:ident => $value:literal;)*) => {
        $(
            #[$doc]
            pub fn $fn_name() -> Label {
                static VALUE: LazyLock<Label> = LazyLock::new(|| Label(Arc::from($value)));
                VALUE.clone()
            }
        )*
    };
}

impl Label {
    /// Creates a label value, allocating once.
    pub fn new(value: &str) -> Self {
        Label(Arc::from(value))
    }

    /// Creates a label value, substituting `"unknown"` (Istio's fallback) when `value` is empty.
    pub fn or_unknown(value: &str) -> Self {
        if value.is_empty() {
            Label::unknown()
        } else {
            Label::new(value)
        }
    }

    /// The label value as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The shared backing string.
    pub fn as_arc(&self) -> &Arc<str> {
        &self.0
    }

    static_label! {
        /// `"unknown"`, Istio's value for missing peer information.
        unknown => "unknown";
        /// `"-"`, the response flags value when no flag is set.
        no_flags => "-";
        /// `""`, used for `grpc_response_status` on non-gRPC requests.
        empty => "";
        /// `"latest"`, the default canonical revision.
        latest => "latest";
    }

    /// The interned decimal form of an HTTP status code (no allocation for 0..=599).
    pub fn status_code(code: u16) -> Label {
        static CODES: LazyLock<Vec<Label>> =
            LazyLock::new(|| (0..600u16).map(|c| Label::new(&c.to_string())).collect());
        match CODES.get(usize::from(code)) {
            Some(label) => label.clone(),
            None => Label::new(&code.to_string()),
        }
    }

    /// The interned decimal form of a gRPC status code (no allocation for 0..=16).
    pub fn grpc_status(code: u32) -> Label {
        static CODES: LazyLock<Vec<Label>> =
            LazyLock::new(|| (0..17u32).map(|c| Label::new(&c.to_string())).collect());
        match usize::try_from(code).ok().and_then(|i| CODES.get(i)) {
            Some(label) => label.clone(),
            None => Label::new(&code.to_string()),
        }
    }
}

impl Deref for Label {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for Label {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Label {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for Label {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for Label {
    fn from(value: &str) -> Self {
        Label::new(value)
    }
}

impl From<String> for Label {
    fn from(value: String) -> Self {
        Label(Arc::from(value))
    }
}

impl From<Arc<str>> for Label {
    fn from(value: Arc<str>) -> Self {
        Label(value)
    }
}

impl EncodeLabelValue for Label {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), fmt::Error> {
        EncodeLabelValue::encode(&self.as_str(), encoder)
    }
}

/// Which proxy reports the metric (`reporter` label).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reporter {
    /// Client sidecar or gateway.
    Source,
    /// Server sidecar.
    Destination,
}

impl Reporter {
    /// The interned label value (`"source"` / `"destination"`).
    pub fn label(self) -> Label {
        static SOURCE: LazyLock<Label> = LazyLock::new(|| Label::new("source"));
        static DESTINATION: LazyLock<Label> = LazyLock::new(|| Label::new("destination"));
        match self {
            Reporter::Source => SOURCE.clone(),
            Reporter::Destination => DESTINATION.clone(),
        }
    }
}

/// The `request_protocol` label.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// HTTP/1.x or HTTP/2 (non-gRPC).
    Http,
    /// gRPC (content-type `application/grpc*`).
    Grpc,
    /// Raw TCP.
    Tcp,
}

impl Protocol {
    /// The interned label value (`"http"`, `"grpc"`, `"tcp"`).
    pub fn label(self) -> Label {
        static HTTP: LazyLock<Label> = LazyLock::new(|| Label::new("http"));
        static GRPC: LazyLock<Label> = LazyLock::new(|| Label::new("grpc"));
        static TCP: LazyLock<Label> = LazyLock::new(|| Label::new("tcp"));
        match self {
            Protocol::Http => HTTP.clone(),
            Protocol::Grpc => GRPC.clone(),
            Protocol::Tcp => TCP.clone(),
        }
    }
}

/// The `connection_security_policy` label.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SecurityPolicy {
    /// Mutual TLS was used (destination reporter).
    MutualTls,
    /// Plaintext (destination reporter).
    None,
    /// Not known (always the case for the source reporter).
    Unknown,
}

impl SecurityPolicy {
    /// The interned label value (`"mutual_tls"`, `"none"`, `"unknown"`).
    pub fn label(self) -> Label {
        static MTLS: LazyLock<Label> = LazyLock::new(|| Label::new("mutual_tls"));
        static NONE: LazyLock<Label> = LazyLock::new(|| Label::new("none"));
        match self {
            SecurityPolicy::MutualTls => MTLS.clone(),
            SecurityPolicy::None => NONE.clone(),
            SecurityPolicy::Unknown => Label::unknown(),
        }
    }
}

/// Identity of one side of a request, as used in the `source_*` / `destination_*` labels.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PeerInfo {
    /// Workload name (Deployment, etc.).
    pub workload: Label,
    /// Workload namespace.
    pub namespace: Label,
    /// Peer principal, e.g. `spiffe://cluster.local/ns/default/sa/sleep`.
    pub principal: Label,
    /// Value of the `app` label.
    pub app: Label,
    /// Value of the `version` label.
    pub version: Label,
    /// Canonical service.
    pub canonical_service: Label,
    /// Canonical revision.
    pub canonical_revision: Label,
    /// Cluster ID.
    pub cluster: Label,
}

impl PeerInfo {
    /// A peer about which nothing is known: every field `"unknown"` except
    /// `canonical_revision`, which is `"latest"` as in Istio.
    pub fn unknown() -> Self {
        PeerInfo {
            workload: Label::unknown(),
            namespace: Label::unknown(),
            principal: Label::unknown(),
            app: Label::unknown(),
            version: Label::unknown(),
            canonical_service: Label::unknown(),
            canonical_revision: Label::latest(),
            cluster: Label::unknown(),
        }
    }

    /// [`PeerInfo::unknown`], shared: requests that know nothing of a peer hold one value.
    pub fn unknown_shared() -> Arc<PeerInfo> {
        static VALUE: LazyLock<Arc<PeerInfo>> = LazyLock::new(|| Arc::new(PeerInfo::unknown()));
        VALUE.clone()
    }

    /// Builds the peer identity from exchanged (or local) node metadata and the principal
    /// authenticated by mTLS (empty when none). Empty values become `"unknown"`.
    pub fn from_metadata(metadata: &NodeMetadata, principal: &str) -> Self {
        let labels = &metadata.labels;
        let label = |key: &str| Label::or_unknown(labels.get(key).map_or("", String::as_str));
        PeerInfo {
            workload: Label::or_unknown(&metadata.workload_name),
            namespace: Label::or_unknown(&metadata.namespace),
            principal: Label::or_unknown(principal),
            app: label(APP_LABEL),
            version: label(VERSION_LABEL),
            canonical_service: Label::or_unknown(&canonical_service(
                labels,
                &metadata.workload_name,
            )),
            canonical_revision: Label::or_unknown(&canonical_revision(labels)),
            cluster: Label::or_unknown(&metadata.cluster_id),
        }
    }
}

/// The destination service of a request (`destination_service*` labels).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ServiceInfo {
    /// FQDN, e.g. `details.default.svc.cluster.local`.
    pub fqdn: Label,
    /// Short name, e.g. `details`.
    pub name: Label,
    /// Namespace, e.g. `default`.
    pub namespace: Label,
}

impl ServiceInfo {
    /// An unknown destination service (all `"unknown"`).
    pub fn unknown() -> Self {
        ServiceInfo {
            fqdn: Label::unknown(),
            name: Label::unknown(),
            namespace: Label::unknown(),
        }
    }

    /// [`ServiceInfo::unknown`], shared.
    pub fn unknown_shared() -> Arc<ServiceInfo> {
        static VALUE: LazyLock<Arc<ServiceInfo>> =
            LazyLock::new(|| Arc::new(ServiceInfo::unknown()));
        VALUE.clone()
    }

    /// Builds the labels from a host name. For `<name>.<ns>.svc.<domain>` the name and
    /// namespace are split out; other hosts (e.g. ServiceEntry hosts) use the host as name
    /// and `"unknown"` as namespace, like Istio.
    pub fn from_host(host: &str) -> Self {
        let mut parts = host.splitn(4, '.');
        let (name, ns, svc) = (parts.next(), parts.next(), parts.next());
        match (name, ns, svc) {
            (Some(name), Some(ns), Some("svc")) if !name.is_empty() && !ns.is_empty() => {
                ServiceInfo {
                    fqdn: Label::new(host),
                    name: Label::new(name),
                    namespace: Label::new(ns),
                }
            }
            _ => ServiceInfo {
                fqdn: Label::or_unknown(host),
                name: Label::or_unknown(host),
                namespace: Label::unknown(),
            },
        }
    }
}

/// The parts of a label set that are fixed for a connection / route / peer pair.
#[derive(Clone, Copy, Debug)]
pub struct Parties<'a> {
    /// Which proxy reports.
    pub reporter: Reporter,
    /// The client.
    pub source: &'a PeerInfo,
    /// The server.
    pub destination: &'a PeerInfo,
    /// The destination service.
    pub service: &'a ServiceInfo,
    /// mTLS or not.
    pub security_policy: SecurityPolicy,
}

/// Labels of `istio_requests_total` and the request histograms, in Istio's order.
#[derive(Clone, Hash, PartialEq, Eq, Debug, EncodeLabelSet)]
pub struct RequestLabels {
    /// `source` or `destination`.
    pub reporter: Label,
    /// Client workload.
    pub source_workload: Label,
    /// Client canonical service.
    pub source_canonical_service: Label,
    /// Client canonical revision.
    pub source_canonical_revision: Label,
    /// Client namespace.
    pub source_workload_namespace: Label,
    /// Client principal.
    pub source_principal: Label,
    /// Client `app` label.
    pub source_app: Label,
    /// Client `version` label.
    pub source_version: Label,
    /// Client cluster.
    pub source_cluster: Label,
    /// Server workload.
    pub destination_workload: Label,
    /// Server namespace.
    pub destination_workload_namespace: Label,
    /// Server principal.
    pub destination_principal: Label,
    /// Server `app` label.
    pub destination_app: Label,
    /// Server `version` label.
    pub destination_version: Label,
    /// Destination service FQDN.
    pub destination_service: Label,
    /// Destination service short name.
    pub destination_service_name: Label,
    /// Destination service namespace.
    pub destination_service_namespace: Label,
    /// Server canonical service.
    pub destination_canonical_service: Label,
    /// Server canonical revision.
    pub destination_canonical_revision: Label,
    /// Server cluster.
    pub destination_cluster: Label,
    /// `http` or `grpc`.
    pub request_protocol: Label,
    /// HTTP status code.
    pub response_code: Label,
    /// gRPC status (empty for plain HTTP).
    pub grpc_response_status: Label,
    /// Envoy response flags (`-` if none).
    pub response_flags: Label,
    /// `mutual_tls`, `none` or `unknown`.
    pub connection_security_policy: Label,
}

impl RequestLabels {
    /// Builds the label set of one HTTP/gRPC request. `grpc_status` is `None` for plain HTTP
    /// (Istio then reports `grpc_response_status=""`); `response_flags` should be
    /// [`Label::no_flags`] when no flag is set.
    pub fn new(
        parties: &Parties<'_>,
        protocol: Protocol,
        response_code: u16,
        grpc_status: Option<u32>,
        response_flags: Label,
    ) -> Self {
        let (src, dst, svc) = (parties.source, parties.destination, parties.service);
        RequestLabels {
            reporter: parties.reporter.label(),
            source_workload: src.workload.clone(),
            source_canonical_service: src.canonical_service.clone(),
            source_canonical_revision: src.canonical_revision.clone(),
            source_workload_namespace: src.namespace.clone(),
            source_principal: src.principal.clone(),
            source_app: src.app.clone(),
            source_version: src.version.clone(),
            source_cluster: src.cluster.clone(),
            destination_workload: dst.workload.clone(),
            destination_workload_namespace: dst.namespace.clone(),
            destination_principal: dst.principal.clone(),
            destination_app: dst.app.clone(),
            destination_version: dst.version.clone(),
            destination_service: svc.fqdn.clone(),
            destination_service_name: svc.name.clone(),
            destination_service_namespace: svc.namespace.clone(),
            destination_canonical_service: dst.canonical_service.clone(),
            destination_canonical_revision: dst.canonical_revision.clone(),
            destination_cluster: dst.cluster.clone(),
            request_protocol: protocol.label(),
            response_code: Label::status_code(response_code),
            grpc_response_status: grpc_status.map_or_else(Label::empty, Label::grpc_status),
            response_flags,
            connection_security_policy: parties.security_policy.label(),
        }
    }
}

/// Labels of the `istio_tcp_*` metrics, in Istio's order (`request_protocol="tcp"`).
#[derive(Clone, Hash, PartialEq, Eq, Debug, EncodeLabelSet)]
pub struct TcpLabels {
    /// `source` or `destination`.
    pub reporter: Label,
    /// Client workload.
    pub source_workload: Label,
    /// Client canonical service.
    pub source_canonical_service: Label,
    /// Client canonical revision.
    pub source_canonical_revision: Label,
    /// Client namespace.
    pub source_workload_namespace: Label,
    /// Client principal.
    pub source_principal: Label,
    /// Client `app` label.
    pub source_app: Label,
    /// Client `version` label.
    pub source_version: Label,
    /// Client cluster.
    pub source_cluster: Label,
    /// Server workload.
    pub destination_workload: Label,
    /// Server namespace.
    pub destination_workload_namespace: Label,
    /// Server principal.
    pub destination_principal: Label,
    /// Server `app` label.
    pub destination_app: Label,
    /// Server `version` label.
    pub destination_version: Label,
    /// Destination service FQDN.
    pub destination_service: Label,
    /// Destination service short name.
    pub destination_service_name: Label,
    /// Destination service namespace.
    pub destination_service_namespace: Label,
    /// Server canonical service.
    pub destination_canonical_service: Label,
    /// Server canonical revision.
    pub destination_canonical_revision: Label,
    /// Server cluster.
    pub destination_cluster: Label,
    /// Always `tcp`.
    pub request_protocol: Label,
    /// Envoy response flags (`-` if none).
    pub response_flags: Label,
    /// `mutual_tls`, `none` or `unknown`.
    pub connection_security_policy: Label,
}

impl TcpLabels {
    /// Builds the label set of one TCP connection.
    pub fn new(parties: &Parties<'_>, response_flags: Label) -> Self {
        let (src, dst, svc) = (parties.source, parties.destination, parties.service);
        TcpLabels {
            reporter: parties.reporter.label(),
            source_workload: src.workload.clone(),
            source_canonical_service: src.canonical_service.clone(),
            source_canonical_revision: src.canonical_revision.clone(),
            source_workload_namespace: src.namespace.clone(),
            source_principal: src.principal.clone(),
            source_app: src.app.clone(),
            source_version: src.version.clone(),
            source_cluster: src.cluster.clone(),
            destination_workload: dst.workload.clone(),
            destination_workload_namespace: dst.namespace.clone(),
            destination_principal: dst.principal.clone(),
            destination_app: dst.app.clone(),
            destination_version: dst.version.clone(),
            destination_service: svc.fqdn.clone(),
            destination_service_name: svc.name.clone(),
            destination_service_namespace: svc.namespace.clone(),
            destination_canonical_service: dst.canonical_service.clone(),
            destination_canonical_revision: dst.canonical_revision.clone(),
            destination_cluster: dst.cluster.clone(),
            request_protocol: Protocol::Tcp.label(),
            response_flags,
            connection_security_policy: parties.security_policy.label(),
        }
    }
}

/// Istio's canonical service of a workload: `service.istio.io/canonical-name` >
/// `app.kubernetes.io/name` > `app` > the workload name.
pub fn canonical_service(labels: &BTreeMap<String, String>, workload_name: &str) -> String {
    [CANONICAL_NAME_LABEL, K8S_NAME_LABEL, APP_LABEL]
        .iter()
        .find_map(|key| labels.get(*key).filter(|v| !v.is_empty()))
        .map_or_else(|| workload_name.to_owned(), Clone::clone)
}

/// Istio's canonical revision of a workload: `service.istio.io/canonical-revision` >
/// `app.kubernetes.io/version` > `version` > `"latest"`.
pub fn canonical_revision(labels: &BTreeMap<String, String>) -> String {
    [CANONICAL_REVISION_LABEL, K8S_VERSION_LABEL, VERSION_LABEL]
        .iter()
        .find_map(|key| labels.get(*key).filter(|v| !v.is_empty()))
        .map_or_else(|| "latest".to_owned(), Clone::clone)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn canonical_service_precedence() {
        let all = map(&[
            (CANONICAL_NAME_LABEL, "canon"),
            (K8S_NAME_LABEL, "k8s"),
            (APP_LABEL, "app"),
        ]);
        assert_eq!(canonical_service(&all, "wl"), "canon");
        let no_canon = map(&[(K8S_NAME_LABEL, "k8s"), (APP_LABEL, "app")]);
        assert_eq!(canonical_service(&no_canon, "wl"), "k8s");
        assert_eq!(canonical_service(&map(&[(APP_LABEL, "app")]), "wl"), "app");
        assert_eq!(canonical_service(&map(&[]), "wl"), "wl");
        // Empty values do not win.
        let empty = map(&[(CANONICAL_NAME_LABEL, ""), (APP_LABEL, "app")]);
        assert_eq!(canonical_service(&empty, "wl"), "app");
    }

    #[test]
    fn canonical_revision_precedence() {
        let all = map(&[
            (CANONICAL_REVISION_LABEL, "r1"),
            (K8S_VERSION_LABEL, "r2"),
            (VERSION_LABEL, "r3"),
        ]);
        assert_eq!(canonical_revision(&all), "r1");
        let two = map(&[(K8S_VERSION_LABEL, "r2"), (VERSION_LABEL, "r3")]);
        assert_eq!(canonical_revision(&two), "r2");
        assert_eq!(canonical_revision(&map(&[(VERSION_LABEL, "r3")])), "r3");
        assert_eq!(canonical_revision(&map(&[])), "latest");
    }

    #[test]
    fn peer_info_from_metadata_fills_unknown() {
        let md = NodeMetadata {
            workload_name: "reviews-v1".into(),
            namespace: "default".into(),
            labels: map(&[(APP_LABEL, "reviews"), (VERSION_LABEL, "v1")]),
            cluster_id: "Kubernetes".into(),
            ..NodeMetadata::default()
        };
        let p = PeerInfo::from_metadata(&md, "");
        assert_eq!(p.workload.as_str(), "reviews-v1");
        assert_eq!(p.namespace.as_str(), "default");
        assert_eq!(p.principal.as_str(), "unknown");
        assert_eq!(p.app.as_str(), "reviews");
        assert_eq!(p.version.as_str(), "v1");
        assert_eq!(p.canonical_service.as_str(), "reviews");
        assert_eq!(p.canonical_revision.as_str(), "v1");
        assert_eq!(p.cluster.as_str(), "Kubernetes");

        let empty = PeerInfo::from_metadata(&NodeMetadata::default(), "spiffe://td/ns/a/sa/b");
        assert_eq!(empty.principal.as_str(), "spiffe://td/ns/a/sa/b");
        assert_eq!(empty.workload.as_str(), "unknown");
        assert_eq!(empty.canonical_service.as_str(), "unknown");
        assert_eq!(empty.canonical_revision.as_str(), "latest");
        assert_eq!(PeerInfo::unknown().canonical_revision.as_str(), "latest");
    }

    #[test]
    fn interned_values_share_storage() {
        assert!(Arc::ptr_eq(
            Label::status_code(200).as_arc(),
            Label::status_code(200).as_arc()
        ));
        assert_eq!(Label::status_code(418).as_str(), "418");
        assert_eq!(Label::status_code(1000).as_str(), "1000");
        assert_eq!(Label::grpc_status(14).as_str(), "14");
        assert_eq!(Label::grpc_status(99).as_str(), "99");
        assert!(Arc::ptr_eq(
            Label::unknown().as_arc(),
            Label::unknown().as_arc()
        ));
    }

    #[test]
    fn service_info_from_host() {
        let s = ServiceInfo::from_host("details.default.svc.cluster.local");
        assert_eq!(
            (s.fqdn.as_str(), s.name.as_str(), s.namespace.as_str()),
            ("details.default.svc.cluster.local", "details", "default")
        );
        let e = ServiceInfo::from_host("httpbin.org");
        assert_eq!(
            (e.fqdn.as_str(), e.name.as_str(), e.namespace.as_str()),
            ("httpbin.org", "httpbin.org", "unknown")
        );
    }

    #[test]
    fn request_labels_from_parties() {
        let src = PeerInfo::unknown();
        let dst = PeerInfo {
            workload: "details-v1".into(),
            ..PeerInfo::unknown()
        };
        let svc = ServiceInfo::from_host("details.default.svc.cluster.local");
        let parties = Parties {
            reporter: Reporter::Destination,
            source: &src,
            destination: &dst,
            service: &svc,
            security_policy: SecurityPolicy::MutualTls,
        };
        let http = RequestLabels::new(&parties, Protocol::Http, 200, None, Label::no_flags());
        assert_eq!(http.reporter.as_str(), "destination");
        assert_eq!(http.destination_workload.as_str(), "details-v1");
        assert_eq!(http.response_code.as_str(), "200");
        assert_eq!(http.grpc_response_status.as_str(), "");
        assert_eq!(http.response_flags.as_str(), "-");
        assert_eq!(http.connection_security_policy.as_str(), "mutual_tls");
        let grpc = RequestLabels::new(&parties, Protocol::Grpc, 200, Some(0), Label::no_flags());
        assert_eq!(grpc.request_protocol.as_str(), "grpc");
        assert_eq!(grpc.grpc_response_status.as_str(), "0");
        let tcp = TcpLabels::new(&parties, Label::new("UF"));
        assert_eq!(tcp.request_protocol.as_str(), "tcp");
        assert_eq!(tcp.response_flags.as_str(), "UF");
        assert_eq!(SecurityPolicy::None.label().as_str(), "none");
        assert_eq!(SecurityPolicy::Unknown.label().as_str(), "unknown");
        assert_eq!(Reporter::Source.label().as_str(), "source");
    }
}
