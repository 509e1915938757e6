//! The access loggers of an HCM or TCP proxy, compiled: Envoy's file logger
//! (`envoy.access_loggers.file`: text or JSON format) and OpenTelemetry logger
//! (`envoy.access_loggers.open_telemetry`: text body, formatted attributes), each with its
//! `AccessLogFilter` (the CEL extension filter a Telemetry resource's `filter.expression`
//! becomes, response flags, status codes, and/or combinations). A logger or filter Weft does not
//! run refuses the listener (NACK) rather than logging something else than was asked.

use std::sync::Arc;

use envoy_types::pb::envoy::config::accesslog::v3 as accesslog;
use envoy_types::pb::envoy::config::core::v3 as core;
use envoy_types::pb::envoy::extensions::access_loggers::file::v3 as file_log;
use envoy_types::pb::envoy::extensions::access_loggers::filters::cel::v3 as cel;
use envoy_types::pb::envoy::extensions::access_loggers::open_telemetry::v3 as otel;
use envoy_types::pb::google::protobuf;
use envoy_types::pb::opentelemetry::proto::common::v1 as otlp_common;
use prost::Message;
use weft_telemetry::{CelFilter, CompiledFormat, CompiledJsonFormat};

use crate::error::ProxyError;

#[derive(Debug)]
pub enum AccessLogFormat {
    Text(CompiledFormat),
    Json(CompiledJsonFormat),
}

#[derive(Debug)]
pub enum LogSink {
    /// A file (or `/dev/stdout`), one formatted line per entry.
    File {
        path: String,
        format: AccessLogFormat,
    },
    /// OTLP log records to a collector.
    Otel(OtelLog),
}

#[derive(Debug)]
pub struct OtelLog {
    pub target: crate::otlp::Target,
    /// The record's body (a text format).
    pub body: CompiledFormat,
    /// The record's attributes: key → text format.
    pub attributes: Vec<(String, CompiledFormat)>,
    /// The proxy's logger of `target`, taken once (the proxy keeps one per target across
    /// configs), so a request does not look it up.
    pub logger: std::sync::OnceLock<Arc<crate::otlp::OtlpLogs>>,
}

/// Envoy's `AccessLogFilter`, as far as Weft runs it.
#[derive(Debug)]
pub enum LogFilter {
    Cel(CelFilter),
    /// Any of these response flags (all flags when empty).
    ResponseFlags(Vec<String>),
    /// The response code compared with a value.
    StatusCode(accesslog::comparison_filter::Op, u16),
    And(Vec<LogFilter>),
    Or(Vec<LogFilter>),
}

#[derive(Debug)]
pub struct AccessLogConfig {
    pub name: String,
    pub sink: LogSink,
    pub filter: Option<LogFilter>,
}

impl AccessLogConfig {
    /// What `/config_dump` shows: the path, or `otel:<cluster>`.
    pub fn describe(&self) -> String {
        match &self.sink {
            LogSink::File { path, .. } => path.clone(),
            LogSink::Otel(o) => format!("otel:{}", o.target.cluster),
        }
    }
}

impl LogFilter {
    /// Whether an entry passes.
    pub fn matches(
        &self,
        entry: &weft_telemetry::AccessLogEntry,
        input: &weft_telemetry::CelInput<'_>,
    ) -> bool {
        match self {
            LogFilter::Cel(f) => f.matches(entry, input),
            LogFilter::ResponseFlags(flags) => {
                let set = entry.response_flags.as_ref();
                if set.is_empty() || set == "-" {
                    return false;
                }
                flags.is_empty() || set.split(',').any(|f| flags.iter().any(|w| w == f))
            }
            LogFilter::StatusCode(op, value) => {
                use accesslog::comparison_filter::Op;
                let c = entry.response_code;
                match op {
                    Op::Eq => c == *value,
                    Op::Ne => c != *value,
                    Op::Ge => c >= *value,
                    Op::Le => c <= *value,
                }
            }
            LogFilter::And(fs) => fs.iter().all(|f| f.matches(entry, input)),
            LogFilter::Or(fs) => fs.iter().any(|f| f.matches(entry, input)),
        }
    }
}

fn filter(f: &accesslog::AccessLogFilter, what: &str) -> Result<LogFilter, ProxyError> {
    use accesslog::access_log_filter::FilterSpecifier as F;
    let err = |m: String| ProxyError::Config(format!("{what}: access log filter: {m}"));
    match &f.filter_specifier {
        Some(F::ExtensionFilter(x)) => {
            let Some(accesslog::extension_filter::ConfigType::TypedConfig(any)) = &x.config_type
            else {
                return Err(err(format!("{} has no typed_config", x.name)));
            };
            if !any.type_url.ends_with("filters.cel.v3.ExpressionFilter") {
                return Err(err(format!(
                    "extension filter {} ({}) is not supported; refused",
                    x.name, any.type_url
                )));
            }
            let e = cel::ExpressionFilter::decode(any.value.as_slice())
                .map_err(|e| err(e.to_string()))?;
            Ok(LogFilter::Cel(
                CelFilter::compile(&e.expression).map_err(|e| err(e.to_string()))?,
            ))
        }
        Some(F::ResponseFlagFilter(r)) => Ok(LogFilter::ResponseFlags(r.flags.clone())),
        Some(F::StatusCodeFilter(s)) => {
            use accesslog::comparison_filter::Op;
            let c = s.comparison.clone().unwrap_or_default();
            let value = c
                .value
                .as_ref()
                .and_then(|v| u16::try_from(v.default_value).ok())
                .unwrap_or(0);
            Ok(LogFilter::StatusCode(
                Op::try_from(c.op).unwrap_or(Op::Eq),
                value,
            ))
        }
        Some(F::AndFilter(a)) => Ok(LogFilter::And(
            a.filters
                .iter()
                .map(|f| filter(f, what))
                .collect::<Result<_, _>>()?,
        )),
        Some(F::OrFilter(o)) => Ok(LogFilter::Or(
            o.filters
                .iter()
                .map(|f| filter(f, what))
                .collect::<Result<_, _>>()?,
        )),
        Some(other) => Err(err(format!("{other:?} is not supported; refused"))),
        None => Err(err("empty filter".into())),
    }
}

fn compile_text(s: &str, what: &str) -> Result<CompiledFormat, ProxyError> {
    CompiledFormat::compile(s)
        .map_err(|e| ProxyError::Config(format!("{what}: access_log format: {e}")))
}

fn file_format(f: &file_log::FileAccessLog, what: &str) -> Result<AccessLogFormat, ProxyError> {
    use core::substitution_format_string::Format;
    use file_log::file_access_log::AccessLogFormat as F;
    let json = |s: &protobuf::Struct| -> Result<AccessLogFormat, ProxyError> {
        let pairs: Vec<(String, String)> = s
            .fields
            .iter()
            .filter_map(|(k, v)| match &v.kind {
                Some(protobuf::value::Kind::StringValue(op)) => Some((k.clone(), op.clone())),
                _ => None,
            })
            .collect();
        CompiledJsonFormat::from_pairs(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .map(AccessLogFormat::Json)
            .map_err(|e| ProxyError::Config(format!("{what}: access_log json_format: {e}")))
    };
    let default = || compile_text(crate::DEFAULT_LOG_FORMAT, what).map(AccessLogFormat::Text);
    match &f.access_log_format {
        Some(F::LogFormat(sfs)) => match &sfs.format {
            Some(Format::TextFormatSource(ds)) => match &ds.specifier {
                Some(core::data_source::Specifier::InlineString(s)) => {
                    Ok(AccessLogFormat::Text(compile_text(s, what)?))
                }
                _ => default(),
            },
            #[allow(deprecated)]
            Some(Format::TextFormat(s)) => Ok(AccessLogFormat::Text(compile_text(s, what)?)),
            Some(Format::JsonFormat(s)) => json(s),
            None => default(),
        },
        #[allow(deprecated)]
        Some(F::Format(s)) => Ok(AccessLogFormat::Text(compile_text(s, what)?)),
        #[allow(deprecated)]
        Some(F::JsonFormat(s)) | Some(F::TypedJsonFormat(s)) => json(s),
        None => default(),
    }
}

fn any_string(v: Option<&otlp_common::AnyValue>) -> Option<&str> {
    match v.and_then(|v| v.value.as_ref()) {
        Some(otlp_common::any_value::Value::StringValue(s)) => Some(s),
        _ => None,
    }
}

fn otel_log(c: &otel::OpenTelemetryAccessLogConfig, what: &str) -> Result<OtelLog, ProxyError> {
    use core::grpc_service::TargetSpecifier;
    #[allow(deprecated)]
    let common = c.common_config.clone().unwrap_or_default();
    let grpc = c.grpc_service.clone().or(common.grpc_service);
    let Some(TargetSpecifier::EnvoyGrpc(g)) = grpc.and_then(|g| g.target_specifier) else {
        return Err(ProxyError::Config(format!(
            "{what}: OpenTelemetry access log: only envoy_grpc (a cluster) is supported; refused"
        )));
    };
    let log_name = if c.log_name.is_empty() {
        common.log_name
    } else {
        c.log_name.clone()
    };
    let body = match any_string(c.body.as_ref()) {
        Some(s) => compile_text(s, what)?,
        None if c.body.is_none() => compile_text("", what)?,
        None => {
            return Err(ProxyError::Config(format!(
                "{what}: OpenTelemetry access log: only a string body is supported; refused"
            )));
        }
    };
    let mut attributes = Vec::new();
    for kv in c.attributes.iter().flat_map(|a| a.values.iter()) {
        let Some(s) = any_string(kv.value.as_ref()) else {
            return Err(ProxyError::Config(format!(
                "{what}: OpenTelemetry access log attribute {}: only string values are supported; refused",
                kv.key
            )));
        };
        attributes.push((kv.key.clone(), compile_text(s, what)?));
    }
    Ok(OtelLog {
        target: crate::otlp::Target {
            authority: if g.authority.is_empty() {
                g.cluster_name.clone()
            } else {
                g.authority.clone()
            },
            cluster: g.cluster_name,
            log_name,
        },
        body,
        attributes,
        logger: std::sync::OnceLock::new(),
    })
}

pub fn access_logs(
    logs: &[accesslog::AccessLog],
    what: &str,
) -> Result<Vec<Arc<AccessLogConfig>>, ProxyError> {
    let mut out = Vec::new();
    for l in logs {
        let lwhat = format!("{what}: access_log {}", l.name);
        let Some(accesslog::access_log::ConfigType::TypedConfig(any)) = &l.config_type else {
            return Err(ProxyError::Config(format!(
                "{lwhat}: no typed_config; refused"
            )));
        };
        let sink = if any.type_url.ends_with("file.v3.FileAccessLog") {
            let f = file_log::FileAccessLog::decode(any.value.as_slice())
                .map_err(|e| ProxyError::Config(format!("{lwhat}: {e}")))?;
            LogSink::File {
                format: file_format(&f, &lwhat)?,
                path: f.path,
            }
        } else if any
            .type_url
            .ends_with("open_telemetry.v3.OpenTelemetryAccessLogConfig")
        {
            let c = otel::OpenTelemetryAccessLogConfig::decode(any.value.as_slice())
                .map_err(|e| ProxyError::Config(format!("{lwhat}: {e}")))?;
            LogSink::Otel(otel_log(&c, &lwhat)?)
        } else {
            return Err(ProxyError::Config(format!(
                "{lwhat}: access logger type {} is not supported; refused",
                any.type_url
            )));
        };
        let filter = match &l.filter {
            Some(f) => Some(filter(f, &lwhat)?),
            None => None,
        };
        out.push(Arc::new(AccessLogConfig {
            name: l.name.clone(),
            sink,
            filter,
        }));
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
