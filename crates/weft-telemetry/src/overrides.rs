//! Telemetry API metric overrides as Istio's stats plugin takes them (`istio.stats`
//! configuration: `{"metrics": [{"name", "dimensions", "tags_to_remove", "drop"}]}`): per standard
//! metric, drop it, remove labels, or add/replace labels whose values are CEL expressions over
//! the request's attributes (`request.host`, `string(destination.port)`, …; a failed evaluation
//! gives `unknown`, as the plugin does). Overridden series are encoded with their own label set;
//! the others keep the standard one untouched.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelSetEncoder};

use crate::accesslog::{AccessLogEntry, CelInput};
use crate::error::TelemetryError;
use crate::labels::{Label, RequestLabels, TcpLabels};

/// Istio's standard metrics, by the stats plugin's names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StandardMetric {
    RequestCount,
    RequestDuration,
    RequestSize,
    ResponseSize,
    GrpcRequestMessages,
    GrpcResponseMessages,
    TcpOpened,
    TcpClosed,
    TcpSent,
    TcpReceived,
}

impl StandardMetric {
    pub const ALL: [StandardMetric; 10] = [
        StandardMetric::RequestCount,
        StandardMetric::RequestDuration,
        StandardMetric::RequestSize,
        StandardMetric::ResponseSize,
        StandardMetric::GrpcRequestMessages,
        StandardMetric::GrpcResponseMessages,
        StandardMetric::TcpOpened,
        StandardMetric::TcpClosed,
        StandardMetric::TcpSent,
        StandardMetric::TcpReceived,
    ];

    /// The stats plugin's name (`istio_` + this is the Prometheus name).
    pub fn plugin_name(self) -> &'static str {
        match self {
            StandardMetric::RequestCount => "requests_total",
            StandardMetric::RequestDuration => "request_duration_milliseconds",
            StandardMetric::RequestSize => "request_bytes",
            StandardMetric::ResponseSize => "response_bytes",
            StandardMetric::GrpcRequestMessages => "request_messages_total",
            StandardMetric::GrpcResponseMessages => "response_messages_total",
            StandardMetric::TcpOpened => "tcp_connections_opened_total",
            StandardMetric::TcpClosed => "tcp_connections_closed_total",
            StandardMetric::TcpSent => "tcp_sent_bytes_total",
            StandardMetric::TcpReceived => "tcp_received_bytes_total",
        }
    }

    fn from_plugin_name(name: &str) -> Option<StandardMetric> {
        StandardMetric::ALL
            .into_iter()
            .find(|m| m.plugin_name() == name)
    }
}

/// A label value computed per request.
pub struct TagValue {
    expression: String,
    program: cel::Program,
}

impl fmt::Debug for TagValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("TagValue").field(&self.expression).finish()
    }
}

impl TagValue {
    fn eval(&self, cx: &cel::Context<'_, '_>) -> String {
        use cel::Value;
        match self.program.execute(cx) {
            Ok(Value::String(s)) => s.to_string(),
            Ok(Value::Int(i)) => i.to_string(),
            Ok(Value::UInt(u)) => u.to_string(),
            Ok(Value::Bool(b)) => b.to_string(),
            _ => "unknown".to_string(),
        }
    }
}

/// What one metric's series become.
#[derive(Debug, Default)]
pub struct MetricRule {
    pub drop: bool,
    /// Labels removed.
    pub remove: Vec<String>,
    /// Labels added or replaced, in name order.
    pub upsert: Vec<(Arc<str>, TagValue)>,
}

/// The overrides of one listener direction.
#[derive(Debug, Default)]
pub struct MetricOverrides {
    rules: HashMap<StandardMetric, MetricRule>,
}

#[derive(serde::Deserialize)]
struct PluginConfig {
    #[serde(default)]
    metrics: Vec<PluginMetric>,
}

#[derive(serde::Deserialize)]
struct PluginMetric {
    #[serde(default)]
    name: String,
    #[serde(default)]
    dimensions: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    tags_to_remove: Vec<String>,
    #[serde(default)]
    drop: bool,
}

/// The values of the upserted labels of one request, per metric (in rule order).
#[derive(Debug, Default, Clone, PartialEq, Eq, Hash)]
pub struct TagValues(Vec<(StandardMetric, Vec<String>)>);

impl MetricOverrides {
    /// Parses the stats plugin's JSON configuration.
    pub fn from_plugin_json(json: &str) -> Result<MetricOverrides, TelemetryError> {
        let bad = |reason: String| TelemetryError::StatsConfig { reason };
        let cfg: PluginConfig = serde_json::from_str(json)
            .map_err(|e| bad(format!("not the stats plugin's JSON: {e}")))?;
        let mut rules = HashMap::new();
        for m in cfg.metrics {
            let metric = StandardMetric::from_plugin_name(&m.name).ok_or_else(|| {
                bad(format!(
                    "metric {:?} is not one of Istio's standard metrics (custom metrics are not \
                     supported)",
                    m.name
                ))
            })?;
            let mut upsert = Vec::new();
            for (tag, expression) in m.dimensions {
                if !is_label_name(&tag) {
                    return Err(bad(format!(
                        "tag {tag:?} of {} is not a Prometheus label name ([a-zA-Z_][a-zA-Z0-9_]*, \
                         not `le`, not starting with `__`)",
                        m.name
                    )));
                }
                let program = cel::Program::compile(&expression).map_err(|e| {
                    bad(format!(
                        "tag {tag} of {}: {expression:?} is not a valid CEL expression ({})",
                        m.name,
                        e.to_string()
                            .split_whitespace()
                            .collect::<Vec<_>>()
                            .join(" ")
                    ))
                })?;
                upsert.push((
                    Arc::from(tag.as_str()),
                    TagValue {
                        expression,
                        program,
                    },
                ));
            }
            rules.insert(
                metric,
                MetricRule {
                    drop: m.drop,
                    remove: m.tags_to_remove,
                    upsert,
                },
            );
        }
        Ok(MetricOverrides { rules })
    }

    pub fn rule(&self, m: StandardMetric) -> Option<&MetricRule> {
        self.rules.get(&m)
    }

    /// Whether some label value is computed from the request (so its attributes are needed).
    pub fn needs_attributes(&self) -> bool {
        self.rules.values().any(|r| !r.upsert.is_empty())
    }

    /// Evaluates the upserted labels of every rule for one request or connection.
    pub fn evaluate(&self, entry: &AccessLogEntry, input: &CelInput<'_>) -> TagValues {
        if !self.needs_attributes() {
            return TagValues::default();
        }
        let cx = crate::accesslog::cel_context(entry, input);
        let mut out: Vec<(StandardMetric, Vec<String>)> = self
            .rules
            .iter()
            .filter(|(_, r)| !r.upsert.is_empty())
            .map(|(m, r)| (*m, r.upsert.iter().map(|(_, v)| v.eval(&cx)).collect()))
            .collect();
        out.sort_by_key(|(m, _)| *m as u8);
        TagValues(out)
    }

    /// The series of `metric` for a standard label set: None when dropped.
    pub fn series<L: LabelPairs + Clone>(
        &self,
        metric: StandardMetric,
        labels: &L,
        values: &TagValues,
    ) -> Option<Series<L>> {
        let Some(rule) = self.rules.get(&metric) else {
            return Some(Series::Standard(labels.clone()));
        };
        if rule.drop {
            return None;
        }
        if rule.remove.is_empty() && rule.upsert.is_empty() {
            // Nothing changes: the standard series, not a second one with the same labels.
            return Some(Series::Standard(labels.clone()));
        }
        let computed = values
            .0
            .iter()
            .find(|(m, _)| *m == metric)
            .map(|(_, v)| v.as_slice())
            .unwrap_or_default();
        let mut pairs: Vec<(Arc<str>, Label)> = labels
            .pairs()
            .into_iter()
            .filter(|(name, _)| !rule.remove.iter().any(|r| r == name))
            .map(|(name, v)| (Arc::from(name), v.clone()))
            .collect();
        for (i, (name, _)) in rule.upsert.iter().enumerate() {
            let value = Label::new(computed.get(i).map_or("unknown", String::as_str));
            match pairs.iter_mut().find(|(n, _)| n == name) {
                Some(p) => p.1 = value,
                None => pairs.push((name.clone(), value)),
            }
        }
        Some(Series::Custom(pairs.into()))
    }
}

use weft_api::telemetry::is_label_name;

/// A standard label set's names and values, in Istio's order.
pub trait LabelPairs {
    fn pairs(&self) -> Vec<(&'static str, &Label)>;
}

macro_rules! label_pairs {
    ($t:ty { $($field:ident),* $(,)? }) => {
        impl LabelPairs for $t {
            fn pairs(&self) -> Vec<(&'static str, &Label)> {
                vec![$((stringify!($field), &self.$field)),*]
            }
        }
    };
}

label_pairs!(RequestLabels {
    reporter,
    source_workload,
    source_canonical_service,
    source_canonical_revision,
    source_workload_namespace,
    source_principal,
    source_app,
    source_version,
    source_cluster,
    destination_workload,
    destination_workload_namespace,
    destination_principal,
    destination_app,
    destination_version,
    destination_service,
    destination_service_name,
    destination_service_namespace,
    destination_canonical_service,
    destination_canonical_revision,
    destination_cluster,
    request_protocol,
    response_code,
    grpc_response_status,
    response_flags,
    connection_security_policy,
});

label_pairs!(TcpLabels {
    reporter,
    source_workload,
    source_canonical_service,
    source_canonical_revision,
    source_workload_namespace,
    source_principal,
    source_app,
    source_version,
    source_cluster,
    destination_workload,
    destination_workload_namespace,
    destination_principal,
    destination_app,
    destination_version,
    destination_service,
    destination_service_name,
    destination_service_namespace,
    destination_canonical_service,
    destination_canonical_revision,
    destination_cluster,
    request_protocol,
    response_flags,
    connection_security_policy,
});

/// One series' label set: the standard one, or the label set an override made.
#[derive(Clone, Hash, PartialEq, Eq, Debug)]
pub enum Series<L> {
    Standard(L),
    Custom(Arc<[(Arc<str>, Label)]>),
}

impl<L: EncodeLabelSet> EncodeLabelSet for Series<L> {
    fn encode(&self, encoder: &mut LabelSetEncoder) -> Result<(), fmt::Error> {
        match self {
            Series::Standard(l) => l.encode(encoder),
            Series::Custom(pairs) => {
                for (name, value) in pairs.iter() {
                    let mut label = encoder.encode_label();
                    let mut key = label.encode_label_key()?;
                    fmt::Write::write_str(&mut key, name)?;
                    let mut v = key.encode_label_value()?;
                    EncodeLabelValue::encode(value, &mut v)?;
                    v.finish()?;
                }
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests;
