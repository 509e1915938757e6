//! Envoy's OpenTelemetry access logger (`envoy.access_loggers.open_telemetry`, Istio's
//! `envoyOtelAls` provider): log records go on a bounded queue (a full queue drops and counts,
//! never waits) to a task that batches them — flushed every second or at 16 KiB, Envoy's
//! defaults — into `opentelemetry.proto.collector.logs.v1.LogsService/Export` calls to the
//! collector's cluster through the proxy's own pools. A failed export is counted and its batch
//! dropped, as Envoy does; the next batch tries again, so the logs resume when the collector
//! comes back.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::logs::v1::logs_service_client::LogsServiceClient;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message;
use tokio::sync::mpsc;

use crate::Proxy;
use crate::conn::ConnInfo;
use crate::http::grpc::ClusterChannel;

/// Records queued per logger before new ones are dropped.
const QUEUE: usize = 4096;
/// Envoy's `buffer_flush_interval` and `buffer_size_bytes` defaults.
const FLUSH_INTERVAL: Duration = Duration::from_secs(1);
const FLUSH_BYTES: usize = 16 * 1024;
/// How long one export may take.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(5);

/// Where one logger sends: the collector's cluster, the call's authority and the `log_name`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Target {
    pub cluster: String,
    pub authority: String,
    pub log_name: String,
}

/// The counters of one logger (Envoy's `access_logs.open_telemetry_access_log.*`).
#[derive(Debug)]
struct Counters {
    written: Arc<AtomicU64>,
    dropped: Arc<AtomicU64>,
    export_errors: Arc<AtomicU64>,
}

impl Counters {
    fn new() -> Counters {
        let c = |n: &str| {
            crate::snapshot::counter::counter(&format!("access_logs.open_telemetry_access_log.{n}"))
        };
        Counters {
            written: c("logs_written"),
            dropped: c("logs_dropped"),
            export_errors: c("export_errors"),
        }
    }
}

/// One logger's queue.
#[derive(Debug)]
pub struct OtlpLogs {
    tx: mpsc::Sender<LogRecord>,
    counters: Counters,
}

/// A string attribute.
pub fn string_kv(key: &str, value: String) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value)),
        }),
        ..Default::default()
    }
}

impl OtlpLogs {
    /// Starts the logger's export task on the current runtime.
    pub fn start(
        proxy: Weak<Proxy>,
        target: Target,
        node_id: String,
        node_cluster: String,
    ) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        let resource = Resource {
            attributes: vec![
                string_kv("log_name", target.log_name.clone()),
                string_kv("zone_name", String::new()),
                string_kv("cluster_name", node_cluster),
                string_kv("node_name", node_id),
            ],
            ..Default::default()
        };
        let counters = Counters::new();
        let task = Exporter {
            proxy,
            target,
            resource,
            written: counters.written.clone(),
            dropped: counters.dropped.clone(),
            export_errors: counters.export_errors.clone(),
        };
        tokio::spawn(task.run(rx));
        OtlpLogs { tx, counters }
    }

    /// Queues a record; a full queue drops it (counted).
    pub fn send(&self, record: LogRecord) {
        if self.tx.try_send(record).is_err() {
            self.counters.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

struct Exporter {
    proxy: Weak<Proxy>,
    target: Target,
    resource: Resource,
    written: Arc<AtomicU64>,
    dropped: Arc<AtomicU64>,
    export_errors: Arc<AtomicU64>,
}

impl Exporter {
    async fn run(self, mut rx: mpsc::Receiver<LogRecord>) {
        while let Some(first) = rx.recv().await {
            let batch = crate::batch::collect(
                &mut rx,
                first,
                FLUSH_INTERVAL,
                FLUSH_BYTES,
                LogRecord::encoded_len,
            )
            .await;
            let n = batch.len() as u64;
            match self.export(batch).await {
                Ok(()) => {
                    self.written.fetch_add(n, Ordering::Relaxed);
                }
                Err(e) => {
                    self.export_errors.fetch_add(1, Ordering::Relaxed);
                    self.dropped.fetch_add(n, Ordering::Relaxed);
                    tracing::debug!(cluster = %self.target.cluster, records = n, error = %e, "OpenTelemetry access log export failed; batch dropped");
                }
            }
        }
    }

    async fn export(&self, records: Vec<LogRecord>) -> Result<(), String> {
        let Some(proxy) = self.proxy.upgrade() else {
            return Err("the proxy is gone".into());
        };
        let Some(cluster) = proxy
            .snapshot
            .load()
            .clusters
            .get(&self.target.cluster)
            .cloned()
        else {
            return Err(format!("cluster {} does not exist", self.target.cluster));
        };
        let channel = ClusterChannel {
            proxy: proxy.clone(),
            conn: Arc::new(ConnInfo::local_call()),
            cluster,
            authority: self.target.authority.as_str().into(),
        };
        let request = ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                resource: Some(self.resource.clone()),
                scope_logs: vec![ScopeLogs {
                    log_records: records,
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        let mut client = LogsServiceClient::new(channel);
        let call = client.export(request);
        match tokio::time::timeout(EXPORT_TIMEOUT, call).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(status)) => Err(status.to_string()),
            Err(_) => Err(format!("no answer within {EXPORT_TIMEOUT:?}")),
        }
    }
}
