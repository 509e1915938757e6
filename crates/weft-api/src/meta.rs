//! The Kubernetes-style envelope around every resource: apiVersion, kind, metadata, spec.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};

use crate::networking::{
    DestinationRule, Gateway, ProxyConfig, ServiceEntry, Sidecar, VirtualService, WorkloadEntry,
};
use crate::security::{AuthorizationPolicy, PeerAuthentication, RequestAuthentication};
use crate::telemetry::Telemetry;

/// API group `networking.istio.io`, version v1alpha3.
pub const NETWORKING_V1ALPHA3: &str = "networking.istio.io/v1alpha3";
/// API group `networking.istio.io`, version v1beta1.
pub const NETWORKING_V1BETA1: &str = "networking.istio.io/v1beta1";
/// API group `networking.istio.io`, version v1 (Istio 1.22 and later; same schema as v1beta1).
pub const NETWORKING_V1: &str = "networking.istio.io/v1";
/// API group `security.istio.io`, version v1beta1.
pub const SECURITY_V1BETA1: &str = "security.istio.io/v1beta1";
/// API group `security.istio.io`, version v1 (Istio 1.22 and later; same schema as v1beta1).
pub const SECURITY_V1: &str = "security.istio.io/v1";
/// API group `telemetry.istio.io`, version v1alpha1.
pub const TELEMETRY_V1ALPHA1: &str = "telemetry.istio.io/v1alpha1";
/// API group `telemetry.istio.io`, version v1 (Istio 1.22 and later; same schema as v1alpha1).
pub const TELEMETRY_V1: &str = "telemetry.istio.io/v1";

/// Resource metadata (the subset Weft uses).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ObjectMeta {
    /// Resource name.
    pub name: String,
    /// Namespace (default `default`).
    pub namespace: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Annotations.
    pub annotations: BTreeMap<String, String>,
}

/// A boolean as Go's `strconv.ParseBool` reads it, as Istio reads its boolean annotations and
/// fields written as strings (`1`, `t`, `true`, `TRUE`, `True`, and the same for false).
pub fn go_bool(v: &str) -> Option<bool> {
    match v {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// Where a resource came from.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Source {
    /// File path.
    pub file: PathBuf,
    /// 1-based line where the document starts.
    pub line: usize,
}

/// Resource kinds Weft understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Kind {
    /// `networking.istio.io` ServiceEntry.
    ServiceEntry,
    /// `networking.istio.io` WorkloadEntry.
    WorkloadEntry,
    /// `networking.istio.io` VirtualService.
    VirtualService,
    /// `networking.istio.io` DestinationRule.
    DestinationRule,
    /// `networking.istio.io` Sidecar.
    Sidecar,
    /// `networking.istio.io` Gateway.
    Gateway,
    /// `security.istio.io` PeerAuthentication.
    PeerAuthentication,
    /// `security.istio.io` AuthorizationPolicy.
    AuthorizationPolicy,
    /// `security.istio.io` RequestAuthentication.
    RequestAuthentication,
    /// `telemetry.istio.io` Telemetry.
    Telemetry,
    /// `networking.istio.io/v1beta1` ProxyConfig.
    ProxyConfig,
}

impl Kind {
    /// All kinds.
    pub const ALL: [Kind; 11] = [
        Kind::ServiceEntry,
        Kind::WorkloadEntry,
        Kind::VirtualService,
        Kind::DestinationRule,
        Kind::Sidecar,
        Kind::Gateway,
        Kind::PeerAuthentication,
        Kind::AuthorizationPolicy,
        Kind::RequestAuthentication,
        Kind::Telemetry,
        Kind::ProxyConfig,
    ];

    /// The kind's name as written in YAML.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::ServiceEntry => "ServiceEntry",
            Kind::WorkloadEntry => "WorkloadEntry",
            Kind::VirtualService => "VirtualService",
            Kind::DestinationRule => "DestinationRule",
            Kind::Sidecar => "Sidecar",
            Kind::Gateway => "Gateway",
            Kind::PeerAuthentication => "PeerAuthentication",
            Kind::AuthorizationPolicy => "AuthorizationPolicy",
            Kind::RequestAuthentication => "RequestAuthentication",
            Kind::Telemetry => "Telemetry",
            Kind::ProxyConfig => "ProxyConfig",
        }
    }

    /// Parses a YAML kind name.
    pub fn from_name(name: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == name)
    }

    /// The apiVersions this kind is served under, as Istio's CRDs serve them: every version
    /// of a kind has the same schema. ProxyConfig has no v1.
    pub fn api_versions(self) -> &'static [&'static str] {
        match self {
            Kind::ServiceEntry
            | Kind::WorkloadEntry
            | Kind::VirtualService
            | Kind::DestinationRule
            | Kind::Sidecar
            | Kind::Gateway => &[NETWORKING_V1ALPHA3, NETWORKING_V1BETA1, NETWORKING_V1],
            Kind::ProxyConfig => &[NETWORKING_V1BETA1],
            Kind::PeerAuthentication | Kind::AuthorizationPolicy | Kind::RequestAuthentication => {
                &[SECURITY_V1BETA1, SECURITY_V1]
            }
            Kind::Telemetry => &[TELEMETRY_V1ALPHA1, TELEMETRY_V1],
        }
    }

    /// The API group of this kind (`networking.istio.io`, …).
    pub fn group(self) -> &'static str {
        match self {
            Kind::ServiceEntry
            | Kind::WorkloadEntry
            | Kind::VirtualService
            | Kind::DestinationRule
            | Kind::Sidecar
            | Kind::Gateway
            | Kind::ProxyConfig => "networking.istio.io",
            Kind::PeerAuthentication | Kind::AuthorizationPolicy | Kind::RequestAuthentication => {
                "security.istio.io"
            }
            Kind::Telemetry => "telemetry.istio.io",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A typed resource spec.
// Variants are unboxed on purpose: the control plane matches on them directly and specs
// live in a `Vec<Resource>`, so the size difference costs little.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Spec {
    /// ServiceEntry spec.
    ServiceEntry(ServiceEntry),
    /// WorkloadEntry spec.
    WorkloadEntry(WorkloadEntry),
    /// VirtualService spec.
    VirtualService(VirtualService),
    /// DestinationRule spec.
    DestinationRule(DestinationRule),
    /// Sidecar spec.
    Sidecar(Sidecar),
    /// Gateway spec.
    Gateway(Gateway),
    /// PeerAuthentication spec.
    PeerAuthentication(PeerAuthentication),
    /// AuthorizationPolicy spec.
    AuthorizationPolicy(AuthorizationPolicy),
    /// RequestAuthentication spec.
    RequestAuthentication(RequestAuthentication),
    /// Telemetry spec.
    Telemetry(Telemetry),
    /// ProxyConfig spec.
    ProxyConfig(ProxyConfig),
}

impl Spec {
    /// The kind of this spec.
    pub fn kind(&self) -> Kind {
        match self {
            Spec::ServiceEntry(_) => Kind::ServiceEntry,
            Spec::WorkloadEntry(_) => Kind::WorkloadEntry,
            Spec::VirtualService(_) => Kind::VirtualService,
            Spec::DestinationRule(_) => Kind::DestinationRule,
            Spec::Sidecar(_) => Kind::Sidecar,
            Spec::Gateway(_) => Kind::Gateway,
            Spec::PeerAuthentication(_) => Kind::PeerAuthentication,
            Spec::AuthorizationPolicy(_) => Kind::AuthorizationPolicy,
            Spec::RequestAuthentication(_) => Kind::RequestAuthentication,
            Spec::Telemetry(_) => Kind::Telemetry,
            Spec::ProxyConfig(_) => Kind::ProxyConfig,
        }
    }

    /// Deserializes a spec of `kind` from JSON, reporting the failing field path.
    pub(crate) fn from_json(
        kind: Kind,
        value: serde_json::Value,
    ) -> Result<Spec, serde_path_to_error::Error<serde_json::Error>> {
        fn de<T: serde::de::DeserializeOwned>(
            v: serde_json::Value,
        ) -> Result<T, serde_path_to_error::Error<serde_json::Error>> {
            serde_path_to_error::deserialize(v)
        }
        Ok(match kind {
            Kind::ServiceEntry => Spec::ServiceEntry(de(value)?),
            Kind::WorkloadEntry => Spec::WorkloadEntry(de(value)?),
            Kind::VirtualService => Spec::VirtualService(de(value)?),
            Kind::DestinationRule => Spec::DestinationRule(de(value)?),
            Kind::Sidecar => Spec::Sidecar(de(value)?),
            Kind::Gateway => Spec::Gateway(de(value)?),
            Kind::PeerAuthentication => Spec::PeerAuthentication(de(value)?),
            Kind::AuthorizationPolicy => Spec::AuthorizationPolicy(de(value)?),
            Kind::RequestAuthentication => Spec::RequestAuthentication(de(value)?),
            Kind::Telemetry => Spec::Telemetry(de(value)?),
            Kind::ProxyConfig => Spec::ProxyConfig(de(value)?),
        })
    }
}

/// One loaded resource. Serializes as `{apiVersion, kind, metadata, spec, source}`.
#[derive(Debug, Clone, PartialEq)]
pub struct Resource {
    /// apiVersion as written.
    pub api_version: String,
    /// Metadata.
    pub meta: ObjectMeta,
    /// Typed spec.
    pub spec: Spec,
    /// Where it came from.
    pub source: Source,
}

impl Serialize for Resource {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut st = s.serialize_struct("Resource", 5)?;
        st.serialize_field("apiVersion", &self.api_version)?;
        st.serialize_field("kind", self.kind().as_str())?;
        st.serialize_field("metadata", &self.meta)?;
        st.serialize_field("spec", &self.spec)?;
        st.serialize_field("source", &self.source)?;
        st.end()
    }
}

impl Resource {
    /// The resource kind.
    pub fn kind(&self) -> Kind {
        self.spec.kind()
    }

    /// A problem the translation of this resource found at `field` (e.g.
    /// `spec.accessLogging[0].providers[0].name`), reported with its file and line.
    pub fn problem(&self, field: &str, message: String) -> crate::Problem {
        crate::Problem {
            file: self.source.file.clone(),
            line: self.source.line,
            kind: Some(self.kind().as_str().to_string()),
            namespace: Some(self.meta.namespace.clone()),
            name: Some(self.meta.name.clone()),
            field: field.to_string(),
            message,
        }
    }

    /// `namespace/name`.
    pub fn key(&self) -> String {
        format!("{}/{}", self.meta.namespace, self.meta.name)
    }
}

/// The document envelope as written in YAML.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct RawEnvelope {
    pub api_version: String,
    pub kind: String,
    pub metadata: RawMeta,
    #[serde(default)]
    pub spec: Option<serde_json::Value>,
    #[serde(default)]
    #[allow(dead_code)]
    pub status: Option<IgnoredAny>,
}

/// Metadata as written; server-populated Kubernetes fields are accepted and ignored.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[allow(dead_code)]
pub(crate) struct RawMeta {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub namespace: Option<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    #[serde(default)]
    uid: Option<IgnoredAny>,
    #[serde(default)]
    resource_version: Option<IgnoredAny>,
    #[serde(default)]
    creation_timestamp: Option<IgnoredAny>,
    #[serde(default)]
    generation: Option<IgnoredAny>,
    #[serde(default)]
    generate_name: Option<IgnoredAny>,
    #[serde(default)]
    managed_fields: Option<IgnoredAny>,
    #[serde(default)]
    owner_references: Option<IgnoredAny>,
    #[serde(default)]
    finalizers: Option<IgnoredAny>,
    #[serde(default)]
    deletion_timestamp: Option<IgnoredAny>,
    #[serde(default)]
    deletion_grace_period_seconds: Option<IgnoredAny>,
    #[serde(default)]
    self_link: Option<IgnoredAny>,
    #[serde(default)]
    cluster_name: Option<IgnoredAny>,
}
