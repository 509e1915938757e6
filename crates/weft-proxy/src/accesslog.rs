//! Writing an access-log entry to the loggers of an HCM or TCP proxy: each logger's filter
//! first (a CEL filter only costs where one is configured), then a line to its file sink or a
//! record to its OpenTelemetry logger. Neither waits: both queue and drop when full.

use std::sync::Arc;
use std::time::UNIX_EPOCH;

use opentelemetry_proto::tonic::common::v1::{AnyValue, any_value};
use opentelemetry_proto::tonic::logs::v1::LogRecord;
use weft_telemetry::{AccessLogEntry, CelInput};

use crate::Proxy;
use crate::snapshot::accesslog::OtelLog;
use crate::snapshot::{AccessLogConfig, AccessLogFormat, LogSink};

/// What the loggers read besides the entry: header lookups for the formats, and what a CEL
/// filter may look at.
pub struct LogInput<'a> {
    pub req: &'a dyn Fn(&str) -> Option<String>,
    pub resp: &'a dyn Fn(&str) -> Option<String>,
    pub cel: CelInput<'a>,
}

impl LogInput<'_> {
    /// A TCP connection's: no headers.
    pub fn tcp(mtls: bool) -> LogInput<'static> {
        LogInput {
            req: &|_| None,
            resp: &|_| None,
            cel: CelInput {
                mtls,
                ..Default::default()
            },
        }
    }
}

pub fn write(
    proxy: &Arc<Proxy>,
    logs: &[Arc<AccessLogConfig>],
    entry: &AccessLogEntry,
    input: &LogInput<'_>,
) {
    for l in logs {
        if let Some(f) = &l.filter
            && !f.matches(entry, &input.cel)
        {
            continue;
        }
        match &l.sink {
            LogSink::File { path, format } => {
                let Some(sink) = proxy.telemetry.sink(path) else {
                    continue;
                };
                let mut line = String::with_capacity(384);
                match format {
                    AccessLogFormat::Text(f) => {
                        f.render_into(entry, input.req, input.resp, &mut line)
                    }
                    AccessLogFormat::Json(f) => {
                        f.render_into(entry, input.req, input.resp, &mut line)
                    }
                }
                sink.log(line);
            }
            LogSink::Otel(o) => o
                .logger
                .get_or_init(|| proxy.telemetry.otlp(proxy, &o.target))
                .send(record(o, entry, input)),
        }
    }
}

fn text(s: String) -> Option<AnyValue> {
    Some(AnyValue {
        value: Some(any_value::Value::StringValue(s)),
    })
}

/// Envoy's record: the start time, the formatted body and attributes.
fn record(o: &OtelLog, entry: &AccessLogEntry, input: &LogInput<'_>) -> LogRecord {
    let render = |f: &weft_telemetry::CompiledFormat| {
        let mut s = String::new();
        f.render_into(entry, input.req, input.resp, &mut s);
        s
    };
    let time = entry
        .start_time
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    LogRecord {
        time_unix_nano: time,
        body: text(render(&o.body)),
        attributes: o
            .attributes
            .iter()
            .map(|(k, f)| crate::otlp::string_kv(k, render(f)))
            .collect(),
        ..Default::default()
    }
}
