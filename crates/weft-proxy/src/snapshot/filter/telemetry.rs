//! The filters Weft may skip because it implements them natively or they only observe:
//! Istio's telemetry (metadata exchange, stats, gRPC stats, ALPN override). They are recognised
//! by their type, and a Wasm filter only when it is one of Istio's built-in null-VM plugins:
//! a Wasm module could do anything, including deny requests, so any other one is refused.

use envoy_types::pb::envoy::config::core::v3 as core;
use envoy_types::pb::envoy::extensions::wasm::v3 as wasm;
use envoy_types::pb::google::protobuf;
use prost::Message;

/// Istio's null-VM plugins (1.14): stats and metadata exchange.
const NULL_VM_PLUGINS: [&str; 2] = ["envoy.wasm.stats", "envoy.wasm.metadata_exchange"];
const NULL_VM: &str = "envoy.wasm.runtime.null";

const HTTP_TYPES: [&str; 5] = [
    "envoy.extensions.filters.http.grpc_stats.v3.FilterConfig",
    "istio.envoy.config.filter.http.alpn.v2alpha1.FilterConfig",
    // Istio's native (non-Wasm) telemetry filters of later releases.
    "io.istio.http.peer_metadata.Config",
    "istio.envoy.config.filter.http.metadata_exchange.v2alpha1.FilterConfig",
    "stats.PluginConfig",
];
const NETWORK_TYPES: [&str; 3] = [
    "envoy.tcp.metadataexchange.config.MetadataExchange",
    "envoy.extensions.filters.network.metadata_exchange.v3.MetadataExchange",
    "stats.PluginConfig",
];
const HTTP_WASM: &str = "envoy.extensions.filters.http.wasm.v3.Wasm";
const NETWORK_WASM: &str = "envoy.extensions.filters.network.wasm.v3.Wasm";

/// Names of the telemetry filters, for filters sent without a config.
const NAMES: [&str; 6] = [
    "istio.metadata_exchange",
    "istio.stats",
    "envoy.filters.http.grpc_stats",
    "istio.alpn",
    "envoy.filters.network.metadata_exchange",
    "envoy.filters.network.wasm",
];

/// `udpa.type.v1.TypedStruct` / `xds.type.v3.TypedStruct`: a config as JSON.
#[derive(Clone, PartialEq, prost::Message)]
struct TypedStruct {
    #[prost(string, tag = "1")]
    type_url: String,
    #[prost(message, optional, tag = "2")]
    value: Option<protobuf::Struct>,
}

/// The short type name of a type URL (`type.googleapis.com/a.b.C` → `a.b.C`).
pub fn type_name(type_url: &str) -> &str {
    type_url.rsplit_once('/').map_or(type_url, |(_, t)| t)
}

fn field<'a>(s: &'a protobuf::Struct, key: &str) -> Option<&'a protobuf::value::Kind> {
    s.fields.get(key)?.kind.as_ref()
}

fn strct<'a>(s: &'a protobuf::Struct, key: &str) -> Option<&'a protobuf::Struct> {
    match field(s, key)? {
        protobuf::value::Kind::StructValue(v) => Some(v),
        _ => None,
    }
}

fn string<'a>(s: &'a protobuf::Struct, key: &str) -> Option<&'a str> {
    match field(s, key)? {
        protobuf::value::Kind::StringValue(v) => Some(v),
        _ => None,
    }
}

/// A Wasm config given as JSON: `config.vm_config.{runtime, code.local.inline_string}`.
fn null_vm_json(value: &protobuf::Struct) -> bool {
    let Some(vm) = strct(value, "config").and_then(|c| strct(c, "vm_config")) else {
        return false;
    };
    let code = strct(vm, "code")
        .and_then(|c| strct(c, "local"))
        .and_then(|l| string(l, "inline_string"));
    string(vm, "runtime") == Some(NULL_VM) && code.is_some_and(|c| NULL_VM_PLUGINS.contains(&c))
}

fn null_vm_proto(bytes: &[u8]) -> bool {
    #[derive(Clone, PartialEq, prost::Message)]
    struct WasmFilter {
        #[prost(message, optional, tag = "1")]
        config: Option<wasm::PluginConfig>,
    }
    let Ok(w) = WasmFilter::decode(bytes) else {
        return false;
    };
    let Some(wasm::plugin_config::Vm::VmConfig(vm)) = w.config.and_then(|c| c.vm) else {
        return false;
    };
    let code = vm.code.and_then(|c| match c.specifier {
        Some(core::async_data_source::Specifier::Local(d)) => match d.specifier {
            Some(core::data_source::Specifier::InlineString(s)) => Some(s),
            _ => None,
        },
        _ => None,
    });
    vm.runtime == NULL_VM && code.is_some_and(|c| NULL_VM_PLUGINS.contains(&c.as_str()))
}

/// The JSON configuration of Istio's stats plugin (`istio.stats`: a null-VM Wasm filter running
/// `envoy.wasm.stats`, its `configuration` a `StringValue`), when `any` is one that carries
/// metric overrides.
fn stats_plugin_json(any: &protobuf::Any, wasm_type: &str) -> Option<String> {
    if type_name(&any.type_url) != wasm_type || !null_vm_proto(&any.value) {
        return None;
    }
    #[derive(Clone, PartialEq, prost::Message)]
    struct WasmFilter {
        #[prost(message, optional, tag = "1")]
        config: Option<wasm::PluginConfig>,
    }
    let config = WasmFilter::decode(any.value.as_slice()).ok()?.config?;
    let wasm::plugin_config::Vm::VmConfig(vm) = config.vm?;
    let vm_code = vm.code?;
    let is_stats = matches!(
        vm_code.specifier,
        Some(core::async_data_source::Specifier::Local(core::DataSource {
            specifier: Some(core::data_source::Specifier::InlineString(ref c)),
            ..
        })) if c == "envoy.wasm.stats"
    );
    let configuration = config.configuration?;
    if !is_stats
        || !configuration
            .type_url
            .ends_with("google.protobuf.StringValue")
    {
        return None;
    }
    let json = protobuf::StringValue::decode(configuration.value.as_slice())
        .ok()?
        .value;
    (!json.trim().is_empty()).then_some(json)
}

/// The metric overrides an HTTP `istio.stats` filter carries (None: not one, or none).
pub fn http_stats_overrides(any: Option<&protobuf::Any>) -> Option<String> {
    stats_plugin_json(any?, HTTP_WASM)
}

/// The metric overrides a network `istio.stats` filter carries.
pub fn network_stats_overrides(any: Option<&protobuf::Any>) -> Option<String> {
    stats_plugin_json(any?, NETWORK_WASM)
}

fn harmless(any: Option<&protobuf::Any>, name: &str, types: &[&str], wasm_type: &str) -> bool {
    let Some(any) = any else {
        return NAMES.contains(&name);
    };
    let t = type_name(&any.type_url);
    if types.contains(&t) {
        return true;
    }
    if t == wasm_type {
        return null_vm_proto(&any.value);
    }
    if t == "udpa.type.v1.TypedStruct" || t == "xds.type.v3.TypedStruct" {
        let Ok(ts) = TypedStruct::decode(any.value.as_slice()) else {
            return false;
        };
        let inner = type_name(&ts.type_url);
        if types.contains(&inner) {
            return true;
        }
        return inner == wasm_type && ts.value.as_ref().is_some_and(null_vm_json);
    }
    false
}

/// Whether an HTTP filter is one of Istio's telemetry filters.
pub fn harmless_http(name: &str, any: Option<&protobuf::Any>) -> bool {
    harmless(any, name, &HTTP_TYPES, HTTP_WASM)
}

/// Whether a network filter is one of Istio's telemetry filters.
pub fn harmless_network(name: &str, any: Option<&protobuf::Any>) -> bool {
    harmless(any, name, &NETWORK_TYPES, NETWORK_WASM)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(fields: Vec<(&str, protobuf::value::Kind)>) -> protobuf::Struct {
        protobuf::Struct {
            fields: fields
                .into_iter()
                .map(|(k, v)| (k.to_string(), protobuf::Value { kind: Some(v) }))
                .collect(),
        }
    }

    fn stats_typed_struct(code: &str, runtime: &str) -> protobuf::Any {
        use protobuf::value::Kind::{StringValue as S, StructValue as St};
        let vm = s(vec![
            ("runtime", S(runtime.into())),
            (
                "code",
                St(s(vec![(
                    "local",
                    St(s(vec![("inline_string", S(code.into()))])),
                )])),
            ),
        ]);
        let value = s(vec![(
            "config",
            St(s(vec![
                ("root_id", S("stats_inbound".into())),
                ("vm_config", St(vm)),
            ])),
        )]);
        protobuf::Any {
            type_url: "type.googleapis.com/udpa.type.v1.TypedStruct".into(),
            value: TypedStruct {
                type_url: format!("type.googleapis.com/{HTTP_WASM}"),
                value: Some(value),
            }
            .encode_to_vec(),
        }
    }

    #[test]
    fn only_istio_null_vm_plugins_pass() {
        assert!(harmless_http(
            "istio.stats",
            Some(&stats_typed_struct("envoy.wasm.stats", NULL_VM))
        ));
        assert!(harmless_http(
            "istio.metadata_exchange",
            Some(&stats_typed_struct("envoy.wasm.metadata_exchange", NULL_VM))
        ));
        // Same name, any other module: refused.
        assert!(!harmless_http(
            "istio.stats",
            Some(&stats_typed_struct("my.module", NULL_VM))
        ));
        assert!(!harmless_http(
            "istio.stats",
            Some(&stats_typed_struct(
                "envoy.wasm.stats",
                "envoy.wasm.runtime.v8"
            ))
        ));
        let wasm = |code: &str| protobuf::Any {
            type_url: format!("type.googleapis.com/{HTTP_WASM}"),
            value: envoy_types::pb::envoy::extensions::filters::http::wasm::v3::Wasm {
                config: Some(wasm::PluginConfig {
                    vm: Some(wasm::plugin_config::Vm::VmConfig(wasm::VmConfig {
                        runtime: NULL_VM.into(),
                        code: Some(core::AsyncDataSource {
                            specifier: Some(core::async_data_source::Specifier::Local(
                                core::DataSource {
                                    specifier: Some(core::data_source::Specifier::InlineString(
                                        code.into(),
                                    )),
                                    ..Default::default()
                                },
                            )),
                        }),
                        ..Default::default()
                    })),
                    ..Default::default()
                }),
            }
            .encode_to_vec(),
        };
        assert!(harmless_http(
            "istio.stats",
            Some(&wasm("envoy.wasm.stats"))
        ));
        assert!(!harmless_http("istio.stats", Some(&wasm("evil"))));
        let grpc_stats = protobuf::Any {
            type_url:
                "type.googleapis.com/envoy.extensions.filters.http.grpc_stats.v3.FilterConfig"
                    .into(),
            value: Vec::new(),
        };
        assert!(harmless_http(
            "envoy.filters.http.grpc_stats",
            Some(&grpc_stats)
        ));
        assert!(!harmless_network("x", Some(&grpc_stats)));
        let mx = protobuf::Any {
            type_url: "type.googleapis.com/envoy.tcp.metadataexchange.config.MetadataExchange"
                .into(),
            value: Vec::new(),
        };
        assert!(harmless_network("istio.metadata_exchange", Some(&mx)));
        assert!(harmless_http("istio.alpn", None));
        assert!(!harmless_http("envoy.filters.http.jwt_authn", None));
    }
}
