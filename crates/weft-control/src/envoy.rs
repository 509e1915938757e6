//! Small builders for the Envoy v3 protobufs the generators emit, so the generators read as
//! "what Istio generates" rather than as protobuf plumbing.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3 as core;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3 as tls;
use envoy_types::pb::envoy::r#type::matcher::v3 as matcher;
use envoy_types::pb::google::protobuf;
use prost::{Message, Name};

/// The SDS resource holding the workload certificate and key (Istio's `default`).
pub const SDS_DEFAULT: &str = "default";
/// The SDS resource holding the trust bundle (Istio's `ROOTCA`).
pub const SDS_ROOT: &str = "ROOTCA";
/// The SDS cluster name a sidecar's bootstrap defines (Istio's `sds-grpc`).
pub const SDS_CLUSTER: &str = "sds-grpc";

/// Istio's ALPN tokens.
pub mod alpn {
    pub const ISTIO: &str = "istio";
    pub const PEER_EXCHANGE: &str = "istio-peer-exchange";
    pub const ISTIO_HTTP10: &str = "istio-http/1.0";
    pub const ISTIO_HTTP11: &str = "istio-http/1.1";
    pub const ISTIO_H2: &str = "istio-h2";
    pub const H2: &str = "h2";
    pub const HTTP11: &str = "http/1.1";
    pub const HTTP10: &str = "http/1.0";
    pub const H2C: &str = "h2c";
}

/// Packs a message into an `Any` with its Envoy type URL.
pub fn any<T: Message + Name>(msg: &T) -> protobuf::Any {
    protobuf::Any {
        type_url: T::type_url(),
        value: msg.encode_to_vec(),
    }
}

pub fn duration(d: Duration) -> protobuf::Duration {
    protobuf::Duration {
        seconds: d.as_secs() as i64,
        nanos: d.subsec_nanos() as i32,
    }
}

pub fn u32v(v: u32) -> protobuf::UInt32Value {
    protobuf::UInt32Value { value: v }
}

pub fn u64v(v: u64) -> protobuf::UInt64Value {
    protobuf::UInt64Value { value: v }
}

pub fn boolv(v: bool) -> protobuf::BoolValue {
    protobuf::BoolValue { value: v }
}

pub fn socket_address(ip: &str, port: u32) -> core::Address {
    core::Address {
        address: Some(core::address::Address::SocketAddress(core::SocketAddress {
            address: ip.to_string(),
            port_specifier: Some(core::socket_address::PortSpecifier::PortValue(port)),
            ..Default::default()
        })),
    }
}

/// An `ads: {}` config source, as Istio uses for RDS and EDS.
pub fn ads_source() -> core::ConfigSource {
    core::ConfigSource {
        resource_api_version: core::ApiVersion::V3 as i32,
        config_source_specifier: Some(core::config_source::ConfigSourceSpecifier::Ads(
            core::AggregatedConfigSource {},
        )),
        ..Default::default()
    }
}

/// `CidrRange` for one address (/32 or /128).
pub fn host_cidr(ip: IpAddr) -> core::CidrRange {
    core::CidrRange {
        address_prefix: ip.to_string(),
        prefix_len: Some(u32v(if ip.is_ipv4() { 32 } else { 128 })),
    }
}

/// A protobuf `Struct` from string pairs.
pub fn string_struct<'a>(pairs: impl IntoIterator<Item = (&'a str, String)>) -> protobuf::Struct {
    protobuf::Struct {
        fields: pairs
            .into_iter()
            .map(|(k, v)| (k.to_string(), string_value(v)))
            .collect(),
    }
}

pub fn string_value(v: String) -> protobuf::Value {
    protobuf::Value {
        kind: Some(protobuf::value::Kind::StringValue(v)),
    }
}

pub fn struct_value(s: protobuf::Struct) -> protobuf::Value {
    protobuf::Value {
        kind: Some(protobuf::value::Kind::StructValue(s)),
    }
}

pub fn list_value(values: Vec<protobuf::Value>) -> protobuf::Value {
    protobuf::Value {
        kind: Some(protobuf::value::Kind::ListValue(protobuf::ListValue {
            values,
        })),
    }
}

pub fn metadata(filters: Vec<(&str, protobuf::Struct)>) -> core::Metadata {
    core::Metadata {
        filter_metadata: filters
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect::<HashMap<_, _>>(),
        ..Default::default()
    }
}

fn sds(name: &str) -> tls::SdsSecretConfig {
    tls::SdsSecretConfig {
        name: name.to_string(),
        sds_config: Some(core::ConfigSource {
            resource_api_version: core::ApiVersion::V3 as i32,
            initial_fetch_timeout: Some(duration(Duration::ZERO)),
            config_source_specifier: Some(
                core::config_source::ConfigSourceSpecifier::ApiConfigSource(
                    core::ApiConfigSource {
                        api_type: core::api_config_source::ApiType::Grpc as i32,
                        transport_api_version: core::ApiVersion::V3 as i32,
                        set_node_on_first_message_only: true,
                        grpc_services: vec![core::GrpcService {
                            target_specifier: Some(core::grpc_service::TargetSpecifier::EnvoyGrpc(
                                core::grpc_service::EnvoyGrpc {
                                    cluster_name: SDS_CLUSTER.to_string(),
                                    ..Default::default()
                                },
                            )),
                            ..Default::default()
                        }],
                        ..Default::default()
                    },
                ),
            ),
            ..Default::default()
        }),
    }
}

pub fn exact_matcher(s: &str) -> matcher::StringMatcher {
    matcher::StringMatcher {
        match_pattern: Some(matcher::string_matcher::MatchPattern::Exact(s.to_string())),
        ..Default::default()
    }
}

pub fn prefix_matcher(s: &str) -> matcher::StringMatcher {
    matcher::StringMatcher {
        match_pattern: Some(matcher::string_matcher::MatchPattern::Prefix(s.to_string())),
        ..Default::default()
    }
}

/// A `CommonTlsContext` with Istio's SDS certificate (`default`) and root (`ROOTCA`) and the
/// given SAN matchers for the peer.
pub fn common_tls(alpn: &[&str], sans: Vec<tls::SubjectAltNameMatcher>) -> tls::CommonTlsContext {
    tls::CommonTlsContext {
        alpn_protocols: alpn.iter().map(|s| s.to_string()).collect(),
        tls_certificate_sds_secret_configs: vec![sds(SDS_DEFAULT)],
        validation_context_type: Some(
            tls::common_tls_context::ValidationContextType::CombinedValidationContext(
                tls::common_tls_context::CombinedCertificateValidationContext {
                    default_validation_context: Some(tls::CertificateValidationContext {
                        match_typed_subject_alt_names: sans,
                        ..Default::default()
                    }),
                    validation_context_sds_secret_config: Some(sds(SDS_ROOT)),
                    ..Default::default()
                },
            ),
        ),
        ..Default::default()
    }
}

/// A URI SAN matcher (`spiffe://…`).
pub fn uri_san(m: matcher::StringMatcher) -> tls::SubjectAltNameMatcher {
    tls::SubjectAltNameMatcher {
        san_type: tls::subject_alt_name_matcher::SanType::Uri as i32,
        matcher: Some(m),
        ..Default::default()
    }
}

/// A DNS SAN matcher (non-mesh TLS origination: `subjectAltNames`).
pub fn dns_san(m: matcher::StringMatcher) -> tls::SubjectAltNameMatcher {
    tls::SubjectAltNameMatcher {
        san_type: tls::subject_alt_name_matcher::SanType::Dns as i32,
        matcher: Some(m),
        ..Default::default()
    }
}

/// `TlsParameters` with the given minimum version (TLS 1.3 maximum, as Istio).
pub fn tls_params(min_v13: bool) -> tls::TlsParameters {
    use tls::tls_parameters::TlsProtocol;
    tls::TlsParameters {
        tls_minimum_protocol_version: if min_v13 {
            TlsProtocol::TlSv13 as i32
        } else {
            TlsProtocol::TlSv12 as i32
        },
        tls_maximum_protocol_version: TlsProtocol::TlSv13 as i32,
        ..Default::default()
    }
}

pub fn transport_socket<T: Message + Name>(name: &str, cfg: &T) -> core::TransportSocket {
    core::TransportSocket {
        name: name.to_string(),
        config_type: Some(core::transport_socket::ConfigType::TypedConfig(any(cfg))),
    }
}

pub fn raw_buffer() -> core::TransportSocket {
    transport_socket(
        "envoy.transport_sockets.raw_buffer",
        &envoy_types::pb::envoy::extensions::transport_sockets::raw_buffer::v3::RawBuffer {},
    )
}
