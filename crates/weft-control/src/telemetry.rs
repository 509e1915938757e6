//! The Telemetry API (`telemetry.istio.io` v1alpha1 and v1) as istiod 1.14 applies it
//! (`pilot/pkg/model/telemetry.go`): a proxy takes the mesh-wide resource (the root namespace's
//! selector-less one), its namespace's selector-less one and the first of its namespace's whose
//! selector its labels match, in that order, each overriding the one before. Access logging is
//! computed per direction: CLIENT for the outbound listeners, SERVER for the inbound one. The
//! Envoy access loggers it becomes are built in `telemetry/accesslog.rs`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use weft_api::mesh::{ExtensionProvider, Provider};
use weft_api::telemetry::{AccessLogging, IstioMetric, TagOperation, Telemetry, WorkloadMode};
use weft_api::{MeshConfig, Problem, Resource, Spec};

pub mod accesslog;
pub mod stats;
pub mod tracing;

/// Which listeners a telemetry rule is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Outbound listeners (the client side of a request).
    Client,
    /// The inbound listener (the server side).
    Server,
}

impl Mode {
    fn selected_by(self, m: Option<&weft_api::telemetry::ModeSelector>) -> bool {
        match m.map_or(WorkloadMode::ClientAndServer, |m| m.mode) {
            WorkloadMode::ClientAndServer => true,
            WorkloadMode::Client => self == Mode::Client,
            WorkloadMode::Server => self == Mode::Server,
        }
    }
}

/// Istio's standard metrics, by the stats plugin's names.
const ALL_METRICS: [(IstioMetric, &str); 10] = [
    (IstioMetric::RequestCount, "requests_total"),
    (
        IstioMetric::RequestDuration,
        "request_duration_milliseconds",
    ),
    (IstioMetric::RequestSize, "request_bytes"),
    (IstioMetric::ResponseSize, "response_bytes"),
    (
        IstioMetric::TcpOpenedConnections,
        "tcp_connections_opened_total",
    ),
    (
        IstioMetric::TcpClosedConnections,
        "tcp_connections_closed_total",
    ),
    (IstioMetric::TcpSentBytes, "tcp_sent_bytes_total"),
    (IstioMetric::TcpReceivedBytes, "tcp_received_bytes_total"),
    (IstioMetric::GrpcRequestMessages, "request_messages_total"),
    (IstioMetric::GrpcResponseMessages, "response_messages_total"),
];

#[derive(Debug)]
struct Named {
    namespace: String,
    name: String,
    spec: Telemetry,
}

/// The access logging of one proxy in one direction: the providers to log to, sorted by name
/// as istiod emits them, and the CEL filter every one of them applies.
#[derive(Debug, Clone, PartialEq)]
pub struct Logging {
    pub providers: Vec<ExtensionProvider>,
    pub filter: Option<String>,
}

/// The tracing of one proxy in one direction.
#[derive(Debug, Clone, PartialEq)]
pub struct Tracing {
    /// The provider's name (None: no provider, no spans).
    pub provider: Option<String>,
    /// `randomSamplingPercentage`; None: MeshConfig's `defaultConfig.tracing.sampling`.
    pub sampling: Option<f64>,
    pub disable_span_reporting: bool,
    pub custom_tags: BTreeMap<String, weft_api::telemetry::CustomTag>,
}

/// The Telemetry resources of a push, by namespace.
#[derive(Debug, Default)]
pub struct Index {
    root_namespace: String,
    /// Per namespace, the resources in config order.
    by_namespace: HashMap<String, Vec<Arc<Named>>>,
    default_logging: Vec<String>,
    default_metrics: Vec<String>,
    default_tracing: Option<String>,
    providers: BTreeMap<String, ExtensionProvider>,
    problems: Vec<Problem>,
}

/// Whether a provider can be an access logger here.
fn logging_kind(p: &Provider) -> Result<(), String> {
    match p {
        Provider::EnvoyFileAccessLog(_) | Provider::EnvoyOtelAls(_) => Ok(()),
        Provider::EnvoyHttpAls(_) | Provider::EnvoyTcpAls(_) => Err(format!(
            "{} (Envoy's gRPC access log service) is not supported by Weft; use envoyOtelAls \
             or envoyFileAccessLog",
            p.type_name()
        )),
        other => Err(format!(
            "a {} provider is not an access-log provider; use envoyFileAccessLog (e.g. the \
             built-in \"envoy\") or envoyOtelAls",
            other.type_name()
        )),
    }
}

impl Index {
    pub fn build(
        resources: &[Resource],
        mesh: &MeshConfig,
        registry: &crate::registry::Registry,
    ) -> Index {
        let providers: BTreeMap<String, ExtensionProvider> = mesh
            .extension_providers
            .iter()
            .map(|p| (p.name.clone(), p.clone()))
            .collect();
        let mut by_namespace: HashMap<String, Vec<Arc<Named>>> = HashMap::new();
        let mut problems = Vec::new();
        for r in resources {
            let Spec::Telemetry(t) = &r.spec else {
                continue;
            };
            for (i, al) in t.access_logging.iter().enumerate() {
                for (j, p) in al.providers.iter().enumerate() {
                    let field = format!("spec.accessLogging[{i}].providers[{j}].name");
                    let why = match providers.get(&p.name) {
                        None => Some(format!(
                            "unknown provider {:?}; MeshConfig extensionProviders has [{}]; \
                             this provider is skipped",
                            p.name,
                            providers.keys().cloned().collect::<Vec<_>>().join(" ")
                        )),
                        Some(ep) => match (&ep.provider, logging_kind(&ep.provider)) {
                            (_, Err(e)) => Some(format!("provider {:?}: {e}; it is skipped", p.name)),
                            (Provider::EnvoyOtelAls(o), Ok(())) => registry
                                .lookup_cluster(&o.service, o.port)
                                .err()
                                .map(|e| {
                                    format!(
                                        "provider {:?} (envoyOtelAls): {e}; no OpenTelemetry access \
                                         log is sent until the service exists",
                                        p.name
                                    )
                                }),
                            _ => None,
                        },
                    };
                    if let Some(why) = why {
                        problems.push(r.problem(&field, why));
                    }
                }
            }
            for (i, tr) in t.tracing.iter().enumerate() {
                for (j, p) in tr.providers.iter().enumerate() {
                    let field = format!("spec.tracing[{i}].providers[{j}].name");
                    let why = match providers.get(&p.name).map(|ep| &ep.provider) {
                        None => Some(format!(
                            "unknown provider {:?}; MeshConfig extensionProviders has [{}]",
                            p.name,
                            providers.keys().cloned().collect::<Vec<_>>().join(" ")
                        )),
                        Some(Provider::Zipkin(z)) => {
                            registry.lookup_cluster(&z.service, z.port).err().map(|e| {
                                format!("provider {:?} (zipkin): {e}; no spans are sent", p.name)
                            })
                        }
                        Some(Provider::Opentelemetry(o)) => {
                            registry.lookup_cluster(&o.service, o.port).err().map(|e| {
                                format!(
                                    "provider {:?} (opentelemetry): {e}; no spans are sent",
                                    p.name
                                )
                            })
                        }
                        Some(other) => Some(format!(
                            "provider {:?} is a {} provider; Weft traces with zipkin and \
                             opentelemetry providers",
                            p.name,
                            other.type_name()
                        )),
                    };
                    if let Some(why) = why {
                        problems.push(r.problem(&field, why));
                    }
                }
            }
            for (i, m) in t.metrics.iter().enumerate() {
                for (j, o) in m.overrides.iter().enumerate() {
                    if let Some(c) = o.match_.as_ref().and_then(|s| s.custom_metric.as_ref())
                        && !ALL_METRICS.iter().any(|(_, n)| n == c)
                    {
                        problems.push(r.problem(
                            &format!("spec.metrics[{i}].overrides[{j}].match.customMetric"),
                            format!(
                                "{c:?} is not one of Istio's standard metrics ({}); Weft has no \
                                 custom metrics, so this override is skipped",
                                ALL_METRICS.map(|(_, n)| n).join(", ")
                            ),
                        ));
                    }
                }
            }
            by_namespace
                .entry(r.meta.namespace.clone())
                .or_default()
                .push(Arc::new(Named {
                    namespace: r.meta.namespace.clone(),
                    name: r.meta.name.clone(),
                    spec: t.clone(),
                }));
        }
        Index {
            root_namespace: mesh.root_namespace.clone(),
            by_namespace,
            default_logging: mesh.default_providers.access_logging.clone(),
            default_metrics: mesh.default_providers.metrics.clone(),
            default_tracing: mesh.default_providers.tracing.first().cloned(),
            providers,
            problems,
        }
    }

    /// Problems found while indexing (shown at `/debug/config_errors`).
    pub fn problems(&self) -> &[Problem] {
        &self.problems
    }

    /// `applicableTelemetries`: root, namespace, workload (each optional), in that order.
    fn applicable(&self, namespace: &str, labels: &BTreeMap<String, String>) -> Vec<&Named> {
        let selector_less = |ns: &str| {
            self.by_namespace.get(ns).and_then(|v| {
                v.iter().find(|t| {
                    t.spec
                        .selector
                        .as_ref()
                        .is_none_or(|s| s.match_labels.is_empty())
                })
            })
        };
        let mut out: Vec<&Named> = Vec::new();
        if let Some(t) = selector_less(&self.root_namespace) {
            out.push(t);
        }
        if namespace != self.root_namespace
            && let Some(t) = selector_less(namespace)
        {
            out.push(t);
        }
        if let Some(t) = self.by_namespace.get(namespace).and_then(|v| {
            v.iter().find(|t| {
                t.spec.selector.as_ref().is_some_and(|s| {
                    !s.match_labels.is_empty()
                        && s.match_labels.iter().all(|(k, v)| labels.get(k) == Some(v))
                })
            })
        }) {
            out.push(t);
        }
        out
    }

    /// `AccessLogging(proxy, class)`: None when neither a Telemetry resource nor
    /// `defaultProviders.accessLogging` says anything (the legacy `accessLogFile` applies);
    /// otherwise the providers (possibly none: logging turned off) and the filter.
    pub fn access_logging(
        &self,
        namespace: &str,
        labels: &BTreeMap<String, String>,
        mode: Mode,
    ) -> Option<Logging> {
        let logs: Vec<&AccessLogging> = self
            .applicable(namespace, labels)
            .into_iter()
            .flat_map(|t| t.spec.access_logging.iter())
            .collect();
        if logs.is_empty() && self.default_logging.is_empty() {
            return None;
        }
        let names = |l: &AccessLogging| -> Vec<String> {
            l.providers.iter().map(|p| p.name.clone()).collect()
        };
        // The filter and the providers in scope: the last set, whatever the direction.
        let mut filter = None;
        let mut in_scope: Vec<String> = self.default_logging.clone();
        for l in &logs {
            let n = names(l);
            if !n.is_empty() {
                in_scope = n;
            }
            if let Some(f) = &l.filter {
                filter = Some(f.expression.clone());
            }
        }
        let in_scope: BTreeSet<String> = in_scope.into_iter().collect();
        let mut chosen: BTreeSet<String> = self.default_logging.iter().cloned().collect();
        let mut parent = self.default_logging.clone();
        for l in &logs {
            if !mode.selected_by(l.match_.as_ref()) {
                continue;
            }
            let mut n = names(l);
            if n.is_empty() {
                n = parent.clone();
            }
            parent = n.clone();
            for p in n {
                if !in_scope.contains(&p) {
                    continue;
                }
                if l.disabled == Some(true) {
                    chosen.remove(&p);
                } else {
                    chosen.insert(p);
                }
            }
        }
        let providers = chosen
            .iter()
            .filter_map(|name| self.providers.get(name))
            .filter(|p| logging_kind(&p.provider).is_ok())
            .cloned()
            .collect();
        Some(Logging { providers, filter })
    }

    /// Istio's metric overrides for one direction (`mergeMetrics` + `generateStatsConfig`):
    /// the stats plugin's JSON configuration, None when no override applies. Weft always
    /// records Istio's standard metrics (the `prometheus` provider); overrides of rules whose
    /// providers do not include it are someone else's.
    pub fn metric_overrides(
        &self,
        namespace: &str,
        labels: &BTreeMap<String, String>,
        mode: Mode,
    ) -> Option<String> {
        let metrics: Vec<&weft_api::telemetry::Metrics> = self
            .applicable(namespace, labels)
            .into_iter()
            .flat_map(|t| t.spec.metrics.iter())
            .collect();
        let mut in_scope: Vec<String> = self.default_metrics.clone();
        for m in &metrics {
            if !m.providers.is_empty() {
                in_scope = m.providers.iter().map(|p| p.name.clone()).collect();
            }
        }
        #[derive(Default)]
        struct Rule {
            drop: bool,
            upsert: BTreeMap<String, String>,
            remove: BTreeSet<String>,
        }
        let mut rules: BTreeMap<&'static str, Rule> = BTreeMap::new();
        for m in &metrics {
            let names: Vec<String> = if m.providers.is_empty() {
                in_scope.clone()
            } else {
                m.providers.iter().map(|p| p.name.clone()).collect()
            };
            if !names.is_empty() && !names.iter().any(|n| n == "prometheus") {
                continue;
            }
            for o in &m.overrides {
                let sel = o.match_.clone().unwrap_or_default();
                if !mode.selected_by(Some(&weft_api::telemetry::ModeSelector { mode: sel.mode })) {
                    continue;
                }
                let targets: Vec<&'static str> = match (&sel.custom_metric, sel.metric) {
                    // A custom metric is only one of the standard ones by its plugin name
                    // (others are named at /debug/config_errors).
                    (Some(c), _) => ALL_METRICS
                        .iter()
                        .filter(|(_, n)| n == c)
                        .map(|(_, n)| *n)
                        .collect(),
                    (None, None | Some(IstioMetric::AllMetrics)) => {
                        ALL_METRICS.iter().map(|(_, n)| *n).collect()
                    }
                    (None, Some(m)) => ALL_METRICS
                        .iter()
                        .filter(|(k, _)| *k == m)
                        .map(|(_, n)| *n)
                        .collect(),
                };
                for t in targets {
                    let r = rules.entry(t).or_default();
                    if let Some(d) = o.disabled {
                        r.drop = d;
                    }
                    for (tag, to) in &o.tag_overrides {
                        match to.operation {
                            TagOperation::Remove => {
                                r.upsert.remove(tag);
                                r.remove.insert(tag.clone());
                            }
                            TagOperation::Upsert => {
                                r.remove.remove(tag);
                                r.upsert.insert(tag.clone(), to.value.clone());
                            }
                        }
                    }
                }
            }
        }
        if rules.is_empty() {
            return None;
        }
        let metrics: Vec<serde_json::Value> = rules
            .into_iter()
            .map(|(name, r)| {
                let mut m = serde_json::Map::new();
                m.insert("name".into(), name.into());
                if r.drop {
                    m.insert("drop".into(), true.into());
                } else {
                    if !r.upsert.is_empty() {
                        m.insert("dimensions".into(), serde_json::json!(r.upsert));
                    }
                    if !r.remove.is_empty() {
                        m.insert("tags_to_remove".into(), serde_json::json!(r.remove));
                    }
                }
                serde_json::Value::Object(m)
            })
            .collect();
        Some(serde_json::json!({ "metrics": metrics }).to_string())
    }

    /// Tracing for one direction, merged as istiod 1.14 does (`Telemetries.Tracing`): each
    /// field of the most specific rule that sets it wins (the first provider named, sampling,
    /// `disableSpanReporting`, `customTags` as a whole); without a provider,
    /// `defaultProviders.tracing[0]`. None when no Telemetry resource has tracing and there is
    /// no default provider (MeshConfig's legacy tracing then applies, see
    /// `telemetry::tracing`).
    pub fn tracing(
        &self,
        namespace: &str,
        labels: &BTreeMap<String, String>,
        mode: Mode,
    ) -> Option<Tracing> {
        let rules: Vec<&weft_api::telemetry::Tracing> = self
            .applicable(namespace, labels)
            .into_iter()
            .flat_map(|t| t.spec.tracing.iter())
            .filter(|t| mode.selected_by(t.match_.as_ref()))
            .collect();
        if rules.is_empty() && self.default_tracing.is_none() {
            return None;
        }
        let mut out = Tracing {
            provider: self.default_tracing.clone(),
            sampling: None,
            disable_span_reporting: false,
            custom_tags: BTreeMap::new(),
        };
        for r in rules {
            if let Some(p) = r.providers.first() {
                out.provider = Some(p.name.clone());
            }
            if let Some(pct) = r.random_sampling_percentage {
                out.sampling = Some(pct);
            }
            if let Some(d) = r.disable_span_reporting {
                out.disable_span_reporting = d;
            }
            if !r.custom_tags.is_empty() {
                out.custom_tags = r.custom_tags.clone();
            }
        }
        Some(out)
    }

    /// The extension provider called `name`.
    pub fn provider(&self, name: &str) -> Option<&ExtensionProvider> {
        self.providers.get(name)
    }

    /// What a proxy's outbound (CLIENT) telemetry config depends on, for sharing the outbound
    /// listeners between the proxies that resolve alike: "" when no Telemetry resource applies.
    pub fn client_key(&self, namespace: &str, labels: &BTreeMap<String, String>) -> String {
        self.applicable(namespace, labels)
            .iter()
            .map(|t| format!("{}/{}", t.namespace, t.name))
            .collect::<Vec<_>>()
            .join(",")
    }
}

#[cfg(test)]
mod tests;
