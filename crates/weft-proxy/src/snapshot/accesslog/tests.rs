//! Loggers and filters as istiod writes them for Telemetry resources.

use std::time::SystemTime;

use envoy_types::pb::envoy::config::core::v3 as core;
use envoy_types::pb::envoy::extensions::access_loggers::grpc::v3 as grpc_log;
use weft_telemetry::{AccessLogEntry, CelInput};

use super::*;

fn any<M: Message + prost::Name>(m: &M) -> protobuf::Any {
    protobuf::Any {
        type_url: M::type_url(),
        value: m.encode_to_vec(),
    }
}

fn cel_filter(expression: &str) -> accesslog::AccessLogFilter {
    accesslog::AccessLogFilter {
        filter_specifier: Some(
            accesslog::access_log_filter::FilterSpecifier::ExtensionFilter(
                accesslog::ExtensionFilter {
                    name: "envoy.access_loggers.extension_filters.cel".into(),
                    config_type: Some(accesslog::extension_filter::ConfigType::TypedConfig(any(
                        &cel::ExpressionFilter {
                            expression: expression.into(),
                            ..Default::default()
                        },
                    ))),
                },
            ),
        ),
    }
}

fn file_logger(filter: Option<accesslog::AccessLogFilter>) -> accesslog::AccessLog {
    accesslog::AccessLog {
        name: "envoy.access_loggers.file".into(),
        filter,
        config_type: Some(accesslog::access_log::ConfigType::TypedConfig(any(
            &file_log::FileAccessLog {
                path: "/dev/stdout".into(),
                ..Default::default()
            },
        ))),
    }
}

fn entry(code: u16) -> AccessLogEntry {
    let mut e = AccessLogEntry::new(SystemTime::now());
    e.method = Some("GET".into());
    e.path = Some("/status/418".into());
    e.response_code = code;
    e
}

#[test]
fn a_cel_filter_decides_which_entries_are_logged() {
    let logs = access_logs(
        &[file_logger(Some(cel_filter("response.code >= 400")))],
        "l",
    )
    .unwrap();
    let f = logs[0].filter.as_ref().expect("filter");
    let none = CelInput::default();
    assert!(f.matches(&entry(418), &none));
    assert!(!f.matches(&entry(200), &none));
    assert!(matches!(&logs[0].sink, LogSink::File { path, .. } if path == "/dev/stdout"));

    // A filter that does not compile refuses the listener, naming the logger.
    let e = access_logs(
        &[file_logger(Some(cel_filter("response.code >= (400")))],
        "listener x",
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("listener x") && e.contains("envoy.access_loggers.file") && e.contains("CEL"),
        "{e}"
    );
}

#[test]
fn response_flag_status_and_combined_filters() {
    use accesslog::access_log_filter::FilterSpecifier as F;
    let flags = accesslog::AccessLogFilter {
        filter_specifier: Some(F::ResponseFlagFilter(accesslog::ResponseFlagFilter {
            flags: vec!["NR".into()],
        })),
    };
    let code = accesslog::AccessLogFilter {
        filter_specifier: Some(F::StatusCodeFilter(accesslog::StatusCodeFilter {
            comparison: Some(accesslog::ComparisonFilter {
                op: accesslog::comparison_filter::Op::Ge as i32,
                value: Some(core::RuntimeUInt32 {
                    default_value: 404,
                    ..Default::default()
                }),
            }),
        })),
    };
    let both = accesslog::AccessLogFilter {
        filter_specifier: Some(F::AndFilter(accesslog::AndFilter {
            filters: vec![flags, code],
        })),
    };
    let logs = access_logs(&[file_logger(Some(both))], "l").unwrap();
    let f = logs[0].filter.as_ref().unwrap();
    let none = CelInput::default();
    let mut nr = entry(404);
    nr.response_flags = "NR".into();
    assert!(f.matches(&nr, &none));
    assert!(!f.matches(&entry(404), &none), "no flag");
    let mut uh = entry(503);
    uh.response_flags = "UH".into();
    assert!(!f.matches(&uh, &none), "another flag");
}

#[test]
fn the_open_telemetry_logger_as_istio_writes_it() {
    #[allow(deprecated)]
    let cfg = otel::OpenTelemetryAccessLogConfig {
        common_config: Some(grpc_log::CommonGrpcAccessLogConfig {
            log_name: "otel_envoy_accesslog".into(),
            grpc_service: Some(core::GrpcService {
                target_specifier: Some(core::grpc_service::TargetSpecifier::EnvoyGrpc(
                    core::grpc_service::EnvoyGrpc {
                        cluster_name: "outbound|4317||collector.istio-system.svc.cluster.local"
                            .into(),
                        authority: "collector.istio-system.svc.cluster.local".into(),
                        ..Default::default()
                    },
                )),
                ..Default::default()
            }),
            ..Default::default()
        }),
        body: Some(otlp_common::AnyValue {
            value: Some(otlp_common::any_value::Value::StringValue(
                "%REQ(:METHOD)% %RESPONSE_CODE%".into(),
            )),
        }),
        attributes: Some(otlp_common::KeyValueList {
            values: vec![otlp_common::KeyValue {
                key: "code".into(),
                value: Some(otlp_common::AnyValue {
                    value: Some(otlp_common::any_value::Value::StringValue(
                        "%RESPONSE_CODE%".into(),
                    )),
                }),
                ..Default::default()
            }],
        }),
        ..Default::default()
    };
    let log = accesslog::AccessLog {
        name: "envoy.access_loggers.open_telemetry".into(),
        config_type: Some(accesslog::access_log::ConfigType::TypedConfig(any(&cfg))),
        ..Default::default()
    };
    let logs = access_logs(&[log], "l").unwrap();
    let LogSink::Otel(o) = &logs[0].sink else {
        panic!("not otel")
    };
    assert_eq!(
        o.target.cluster,
        "outbound|4317||collector.istio-system.svc.cluster.local"
    );
    assert_eq!(
        o.target.authority,
        "collector.istio-system.svc.cluster.local"
    );
    assert_eq!(o.target.log_name, "otel_envoy_accesslog");
    let mut body = String::new();
    let none = |_: &str| None;
    o.body.render_into(&entry(418), &none, &none, &mut body);
    assert_eq!(body, "GET 418");
    assert_eq!(o.attributes.len(), 1);
    assert_eq!(
        logs[0].describe(),
        "otel:outbound|4317||collector.istio-system.svc.cluster.local"
    );
}

#[test]
fn unknown_loggers_are_refused() {
    let log = accesslog::AccessLog {
        name: "envoy.access_loggers.http_grpc".into(),
        config_type: Some(accesslog::access_log::ConfigType::TypedConfig(any(
            &grpc_log::HttpGrpcAccessLogConfig::default(),
        ))),
        ..Default::default()
    };
    let e = access_logs(&[log], "listener y").unwrap_err().to_string();
    assert!(
        e.contains("listener y")
            && e.contains("HttpGrpcAccessLogConfig")
            && e.contains("not supported"),
        "{e}"
    );
}
