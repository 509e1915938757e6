//! Istio metadata exchange: node metadata and the `x-envoy-peer-metadata` header.
//!
//! The header value is the standard base64 of a deterministically serialized
//! `google.protobuf.Struct` whose keys are Istio's node metadata keys (`NAME`, `NAMESPACE`,
//! `LABELS`, ...), which is what Istio's metadata-exchange filter sends.

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::DecodePaddingMode;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use prost::Message as _;
use prost_types::value::Kind;
use prost_types::{ListValue, Struct, Value};

use crate::error::TelemetryError;
use crate::labels::{APP_LABEL, CANONICAL_NAME_LABEL, CANONICAL_REVISION_LABEL, VERSION_LABEL};

/// Header carrying the base64 peer metadata.
pub const PEER_METADATA_HEADER: &str = "x-envoy-peer-metadata";
/// Header carrying the peer's node ID (`sidecar~<ip>~<pod>.<ns>~<ns>.svc.<domain>`).
pub const PEER_METADATA_ID_HEADER: &str = "x-envoy-peer-metadata-id";
/// ALPN protocol announcing TCP metadata exchange.
pub const PEER_EXCHANGE_ALPN: &str = "istio-peer-exchange";

/// The pod labels Istio's metadata exchange propagates (see [`NodeMetadata::exchange_subset`]).
pub const EXCHANGED_LABELS: [&str; 4] = [
    APP_LABEL,
    VERSION_LABEL,
    CANONICAL_NAME_LABEL,
    CANONICAL_REVISION_LABEL,
];

const NAME: &str = "NAME";
const NAMESPACE: &str = "NAMESPACE";
const LABELS: &str = "LABELS";
const SERVICE_ACCOUNT: &str = "SERVICE_ACCOUNT";
const WORKLOAD_NAME: &str = "WORKLOAD_NAME";
const CLUSTER_ID: &str = "CLUSTER_ID";
const MESH_ID: &str = "MESH_ID";
const APP_CONTAINERS: &str = "APP_CONTAINERS";
const INSTANCE_IPS: &str = "INSTANCE_IPS";
const OWNER: &str = "OWNER";
const ISTIO_VERSION: &str = "ISTIO_VERSION";
const PLATFORM_METADATA: &str = "PLATFORM_METADATA";

/// Istio node metadata (the subset used for telemetry and peer identification).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeMetadata {
    /// `NAME`: pod / workload instance name.
    pub name: String,
    /// `NAMESPACE`.
    pub namespace: String,
    /// `LABELS`: pod labels.
    pub labels: BTreeMap<String, String>,
    /// `SERVICE_ACCOUNT`.
    pub service_account: String,
    /// `WORKLOAD_NAME`: e.g. the Deployment name.
    pub workload_name: String,
    /// `CLUSTER_ID`.
    pub cluster_id: String,
    /// `MESH_ID`.
    pub mesh_id: String,
    /// `APP_CONTAINERS` (sent as a comma-separated string, like Istio).
    pub app_containers: Vec<String>,
    /// `INSTANCE_IPS` (sent as a comma-separated string, like Istio).
    pub instance_ips: Vec<String>,
    /// `OWNER`: e.g. `kubernetes://apis/apps/v1/namespaces/default/deployments/reviews-v1`.
    pub owner: String,
    /// `ISTIO_VERSION`.
    pub istio_version: String,
    /// `PLATFORM_METADATA`.
    pub platform_metadata: BTreeMap<String, String>,
}

fn string_value(s: &str) -> Value {
    Value {
        kind: Some(Kind::StringValue(s.to_owned())),
    }
}

fn struct_value(map: &BTreeMap<String, String>) -> Value {
    Value {
        kind: Some(Kind::StructValue(Struct {
            fields: map
                .iter()
                .map(|(k, v)| (k.clone(), string_value(v)))
                .collect(),
        })),
    }
}

fn as_string(value: &Value) -> String {
    match &value.kind {
        Some(Kind::StringValue(s)) => s.clone(),
        Some(Kind::NumberValue(n)) => n.to_string(),
        Some(Kind::BoolValue(b)) => b.to_string(),
        _ => String::new(),
    }
}

fn as_string_map(value: &Value) -> BTreeMap<String, String> {
    match &value.kind {
        Some(Kind::StructValue(s)) => s
            .fields
            .iter()
            .map(|(k, v)| (k.clone(), as_string(v)))
            .collect(),
        _ => BTreeMap::new(),
    }
}

/// Accepts both Istio encodings of a string list: a comma-separated string or a ListValue.
fn as_string_list(value: &Value) -> Vec<String> {
    match &value.kind {
        Some(Kind::StringValue(s)) => s
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect(),
        Some(Kind::ListValue(ListValue { values })) => values
            .iter()
            .map(as_string)
            .filter(|s| !s.is_empty())
            .collect(),
        _ => Vec::new(),
    }
}

impl NodeMetadata {
    /// Converts to a `google.protobuf.Struct` with Istio's keys; empty fields are omitted.
    pub fn to_struct(&self) -> Struct {
        let mut fields = BTreeMap::new();
        let mut put = |key: &str, value: &str| {
            if !value.is_empty() {
                fields.insert(key.to_owned(), string_value(value));
            }
        };
        put(NAME, &self.name);
        put(NAMESPACE, &self.namespace);
        put(SERVICE_ACCOUNT, &self.service_account);
        put(WORKLOAD_NAME, &self.workload_name);
        put(CLUSTER_ID, &self.cluster_id);
        put(MESH_ID, &self.mesh_id);
        put(OWNER, &self.owner);
        put(ISTIO_VERSION, &self.istio_version);
        put(APP_CONTAINERS, &self.app_containers.join(","));
        put(INSTANCE_IPS, &self.instance_ips.join(","));
        if !self.labels.is_empty() {
            fields.insert(LABELS.to_owned(), struct_value(&self.labels));
        }
        if !self.platform_metadata.is_empty() {
            fields.insert(
                PLATFORM_METADATA.to_owned(),
                struct_value(&self.platform_metadata),
            );
        }
        Struct { fields }
    }

    /// Reads Istio's keys from a `Struct`; unknown keys are ignored and values of an
    /// unexpected type are treated as empty, like Istio's proxy does.
    pub fn from_struct(s: &Struct) -> Self {
        let mut md = NodeMetadata::default();
        for (key, value) in &s.fields {
            match key.as_str() {
                NAME => md.name = as_string(value),
                NAMESPACE => md.namespace = as_string(value),
                SERVICE_ACCOUNT => md.service_account = as_string(value),
                WORKLOAD_NAME => md.workload_name = as_string(value),
                CLUSTER_ID => md.cluster_id = as_string(value),
                MESH_ID => md.mesh_id = as_string(value),
                OWNER => md.owner = as_string(value),
                ISTIO_VERSION => md.istio_version = as_string(value),
                APP_CONTAINERS => md.app_containers = as_string_list(value),
                INSTANCE_IPS => md.instance_ips = as_string_list(value),
                LABELS => md.labels = as_string_map(value),
                PLATFORM_METADATA => md.platform_metadata = as_string_map(value),
                _ => {}
            }
        }
        md
    }

    /// The part of the metadata Istio's HTTP metadata exchange sends: `NAME`, `NAMESPACE`,
    /// `OWNER`, `WORKLOAD_NAME`, `ISTIO_VERSION`, `MESH_ID`, `CLUSTER_ID` and the
    /// [`EXCHANGED_LABELS`]. Encode this (once, at startup) to keep the header small.
    pub fn exchange_subset(&self) -> NodeMetadata {
        NodeMetadata {
            name: self.name.clone(),
            namespace: self.namespace.clone(),
            owner: self.owner.clone(),
            workload_name: self.workload_name.clone(),
            istio_version: self.istio_version.clone(),
            mesh_id: self.mesh_id.clone(),
            cluster_id: self.cluster_id.clone(),
            labels: self
                .labels
                .iter()
                .filter(|(k, _)| EXCHANGED_LABELS.contains(&k.as_str()))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            ..NodeMetadata::default()
        }
    }
}

/// Encodes node metadata as the `x-envoy-peer-metadata` header value (standard base64 of the
/// protobuf-encoded Struct; map keys sorted, i.e. deterministic serialization).
pub fn encode_peer_header(metadata: &NodeMetadata) -> String {
    STANDARD.encode(metadata.to_struct().encode_to_vec())
}

/// Decodes an `x-envoy-peer-metadata` header value. Padding is optional and surrounding
/// whitespace is ignored; unknown keys are ignored.
pub fn decode_peer_header(value: &str) -> Result<NodeMetadata, TelemetryError> {
    const LENIENT: GeneralPurpose = GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
    );
    let bytes = LENIENT.decode(value.trim())?;
    let s = Struct::decode(bytes.as_slice())?;
    Ok(NodeMetadata::from_struct(&s))
}

/// Builds an Envoy node ID as Istio does: `<kind>~<ip>~<pod>.<ns>~<ns>.svc.<domain>`
/// (`kind` is `sidecar` or `router`); this is the `x-envoy-peer-metadata-id` value.
pub fn node_id(kind: &str, ip: &str, pod: &str, namespace: &str, cluster_domain: &str) -> String {
    format!("{kind}~{ip}~{pod}.{namespace}~{namespace}.svc.{cluster_domain}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> NodeMetadata {
        NodeMetadata {
            name: "reviews-v1-5b4d6f7c9-abcde".into(),
            namespace: "default".into(),
            labels: [
                ("app", "reviews"),
                ("version", "v1"),
                ("service.istio.io/canonical-name", "reviews"),
                ("service.istio.io/canonical-revision", "v1"),
                ("pod-template-hash", "5b4d6f7c9"),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect(),
            service_account: "bookinfo-reviews".into(),
            workload_name: "reviews-v1".into(),
            cluster_id: "Kubernetes".into(),
            mesh_id: "cluster.local".into(),
            app_containers: vec!["reviews".into()],
            instance_ips: vec!["10.44.1.23".into(), "fe80::1".into()],
            owner: "kubernetes://apis/apps/v1/namespaces/default/deployments/reviews-v1".into(),
            istio_version: "1.14.6".into(),
            platform_metadata: BTreeMap::new(),
        }
    }

    #[test]
    fn round_trip() {
        let md = sample();
        let header = encode_peer_header(&md);
        assert!(
            header
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"+/=".contains(&b))
        );
        assert_eq!(decode_peer_header(&header).unwrap(), md);
        // Deterministic encoding.
        assert_eq!(encode_peer_header(&md), header);
    }

    #[test]
    fn decodes_manually_built_struct_with_unknown_keys_and_lists() {
        let mut labels = BTreeMap::new();
        labels.insert("app".to_owned(), string_value("ratings"));
        let fields: BTreeMap<String, Value> = [
            ("NAME".to_owned(), string_value("ratings-v1-abc")),
            ("NAMESPACE".to_owned(), string_value("bookinfo")),
            ("WORKLOAD_NAME".to_owned(), string_value("ratings-v1")),
            (
                "LABELS".to_owned(),
                Value {
                    kind: Some(Kind::StructValue(Struct { fields: labels })),
                },
            ),
            (
                "INSTANCE_IPS".to_owned(),
                Value {
                    kind: Some(Kind::ListValue(ListValue {
                        values: vec![string_value("10.0.0.7")],
                    })),
                },
            ),
            ("APP_CONTAINERS".to_owned(), string_value("ratings,helper")),
            ("UNKNOWN_KEY".to_owned(), string_value("ignored")),
            (
                "CLUSTER_ID".to_owned(),
                Value {
                    kind: Some(Kind::BoolValue(true)),
                },
            ),
        ]
        .into_iter()
        .collect();
        let bytes = Struct { fields }.encode_to_vec();
        let header = STANDARD.encode(&bytes);
        let md = decode_peer_header(&header).unwrap();
        assert_eq!(md.name, "ratings-v1-abc");
        assert_eq!(md.namespace, "bookinfo");
        assert_eq!(md.workload_name, "ratings-v1");
        assert_eq!(md.labels.get("app").map(String::as_str), Some("ratings"));
        assert_eq!(md.instance_ips, vec!["10.0.0.7".to_owned()]);
        assert_eq!(
            md.app_containers,
            vec!["ratings".to_owned(), "helper".to_owned()]
        );
        assert_eq!(md.cluster_id, "true");
        // Unpadded form is accepted too.
        let unpadded = header.trim_end_matches('=');
        assert_eq!(decode_peer_header(unpadded).unwrap(), md);
    }

    #[test]
    fn encoded_struct_has_istio_keys() {
        let s = sample().to_struct();
        let keys: Vec<&str> = s.fields.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "APP_CONTAINERS",
                "CLUSTER_ID",
                "INSTANCE_IPS",
                "ISTIO_VERSION",
                "LABELS",
                "MESH_ID",
                "NAME",
                "NAMESPACE",
                "OWNER",
                "SERVICE_ACCOUNT",
                "WORKLOAD_NAME"
            ]
        );
        assert_eq!(
            s.fields.get("INSTANCE_IPS").map(as_string).as_deref(),
            Some("10.44.1.23,fe80::1")
        );
        assert!(matches!(
            s.fields.get("LABELS").and_then(|v| v.kind.as_ref()),
            Some(Kind::StructValue(_))
        ));
    }

    #[test]
    fn exchange_subset_keeps_istio_fields() {
        let sub = sample().exchange_subset();
        assert_eq!(sub.labels.len(), 4);
        assert!(!sub.labels.contains_key("pod-template-hash"));
        assert!(sub.service_account.is_empty() && sub.instance_ips.is_empty());
        assert_eq!(sub.workload_name, "reviews-v1");
        assert_eq!(sub.owner, sample().owner);
    }

    #[test]
    fn rejects_garbage() {
        assert!(matches!(
            decode_peer_header("!!!not base64!!!"),
            Err(TelemetryError::PeerHeaderBase64(_))
        ));
        // Valid base64 but not a Struct (field 1 with wire type varint is invalid for a map).
        let bogus = STANDARD.encode([0x0a, 0xff, 0xff]);
        assert!(matches!(
            decode_peer_header(&bogus),
            Err(TelemetryError::PeerHeaderProto(_))
        ));
    }

    #[test]
    fn node_id_format() {
        assert_eq!(
            node_id(
                "sidecar",
                "10.44.1.23",
                "sleep-abc",
                "default",
                "cluster.local"
            ),
            "sidecar~10.44.1.23~sleep-abc.default~default.svc.cluster.local"
        );
    }
}
