//! Metric overrides → Istio's `istio.stats` filters (the null-VM Wasm stats plugin with its JSON
//! configuration, `root_id` `stats_outbound` / `stats_inbound`), as istiod 1.14 writes them:
//! before the router in an HCM, before the TCP proxy in a TCP chain. Without overrides there is
//! no filter and the sidecar records Istio's standard metrics as they are.

use envoy_types::pb::envoy::config::core::v3 as core;
use envoy_types::pb::envoy::config::listener::v3 as listener;
use envoy_types::pb::envoy::extensions::filters::http::wasm::v3 as http_wasm;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3 as hcm;
use envoy_types::pb::envoy::extensions::filters::network::wasm::v3 as net_wasm;
use envoy_types::pb::envoy::extensions::wasm::v3 as wasm;
use envoy_types::pb::google::protobuf;

use super::Mode;
use crate::envoy;
use crate::sidecar::ProxyView;

pub const STATS_FILTER: &str = "istio.stats";

fn plugin(json: String, mode: Mode, tcp: bool) -> wasm::PluginConfig {
    let root_id = match mode {
        Mode::Client => "stats_outbound",
        Mode::Server => "stats_inbound",
    };
    wasm::PluginConfig {
        root_id: root_id.into(),
        vm: Some(wasm::plugin_config::Vm::VmConfig(wasm::VmConfig {
            vm_id: if tcp {
                format!("tcp_{root_id}")
            } else {
                root_id.to_string()
            },
            runtime: "envoy.wasm.runtime.null".into(),
            code: Some(core::AsyncDataSource {
                specifier: Some(core::async_data_source::Specifier::Local(
                    core::DataSource {
                        specifier: Some(core::data_source::Specifier::InlineString(
                            "envoy.wasm.stats".into(),
                        )),
                        ..Default::default()
                    },
                )),
            }),
            ..Default::default()
        })),
        configuration: Some(envoy::any(&protobuf::StringValue { value: json })),
        ..Default::default()
    }
}

fn overrides(view: &ProxyView, mode: Mode) -> Option<String> {
    let labels = view.labels();
    view.push
        .telemetry
        .metric_overrides(&view.node.namespace, &labels, mode)
}

/// The HCM's `istio.stats` filter, when overrides apply.
pub fn http_filter(view: &ProxyView, mode: Mode) -> Option<hcm::HttpFilter> {
    let json = overrides(view, mode)?;
    Some(hcm::HttpFilter {
        name: STATS_FILTER.into(),
        config_type: Some(hcm::http_filter::ConfigType::TypedConfig(envoy::any(
            &http_wasm::Wasm {
                config: Some(plugin(json, mode, false)),
            },
        ))),
        ..Default::default()
    })
}

/// The TCP chain's `istio.stats` filter, when overrides apply.
pub fn network_filter(view: &ProxyView, mode: Mode) -> Option<listener::Filter> {
    let json = overrides(view, mode)?;
    Some(listener::Filter {
        name: STATS_FILTER.into(),
        config_type: Some(listener::filter::ConfigType::TypedConfig(envoy::any(
            &net_wasm::Wasm {
                config: Some(plugin(json, mode, true)),
            },
        ))),
    })
}
