//! A collector's span queue: finished spans wait on a bounded queue (a full queue drops and
//! counts, never waits) for a task that sends them in batches — at most every second or per
//! 100 spans — to the collector's cluster through the proxy's own pools. A failed report is
//! counted and its spans dropped; the next batch tries again, so reporting resumes when the
//! collector comes back. Counters are Envoy's tracer stats under `tracing.zipkin.*` or
//! `tracing.opentelemetry.*`: `spans_sent`, `spans_dropped`, `reports_failed`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::sync::mpsc;

use super::Span;
use crate::Proxy;
use crate::snapshot::tracing::Collector;

/// Spans queued per collector before new ones are dropped.
const QUEUE: usize = 4096;
const FLUSH_INTERVAL: Duration = Duration::from_secs(1);
const FLUSH_SPANS: usize = 100;
/// How long one report may take.
pub(super) const REPORT_TIMEOUT: Duration = Duration::from_secs(5);

/// One collector's queue.
#[derive(Debug)]
pub struct Reporter {
    tx: mpsc::Sender<Span>,
    dropped: Arc<AtomicU64>,
}

impl Reporter {
    /// Starts the collector's report task on the current runtime.
    pub fn start(proxy: Weak<Proxy>, collector: Collector) -> Self {
        let prefix = match collector {
            Collector::Zipkin { .. } => "tracing.zipkin",
            Collector::Otlp { .. } => "tracing.opentelemetry",
        };
        let c = |n: &str| crate::snapshot::counter::counter(&format!("{prefix}.{n}"));
        let (tx, rx) = mpsc::channel(QUEUE);
        let dropped = c("spans_dropped");
        let task = Task {
            proxy,
            collector,
            sent: c("spans_sent"),
            dropped: dropped.clone(),
            failed: c("reports_failed"),
        };
        tokio::spawn(task.run(rx));
        Reporter { tx, dropped }
    }

    /// Queues a span; a full queue drops it (counted).
    pub fn send(&self, span: Span) {
        if self.tx.try_send(span).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

struct Task {
    proxy: Weak<Proxy>,
    collector: Collector,
    sent: Arc<AtomicU64>,
    dropped: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
}

impl Task {
    async fn run(self, mut rx: mpsc::Receiver<Span>) {
        while let Some(first) = rx.recv().await {
            let batch =
                crate::batch::collect(&mut rx, first, FLUSH_INTERVAL, FLUSH_SPANS, |_| 1).await;
            let n = batch.len() as u64;
            match self.report(batch).await {
                Ok(()) => {
                    self.sent.fetch_add(n, Ordering::Relaxed);
                }
                Err(e) => {
                    self.failed.fetch_add(1, Ordering::Relaxed);
                    self.dropped.fetch_add(n, Ordering::Relaxed);
                    tracing::debug!(cluster = %self.collector.cluster(), spans = n, error = %e, "span report failed; spans dropped");
                }
            }
        }
    }

    async fn report(&self, spans: Vec<Span>) -> Result<(), String> {
        let Some(proxy) = self.proxy.upgrade() else {
            return Err("the proxy is gone".into());
        };
        let cluster_name = self.collector.cluster();
        let Some(cluster) = proxy.snapshot.load().clusters.get(cluster_name).cloned() else {
            return Err(format!("cluster {cluster_name} does not exist"));
        };
        match &self.collector {
            Collector::Zipkin {
                hostname, endpoint, ..
            } => super::zipkin::post(&proxy, &cluster, hostname, endpoint, &spans).await,
            Collector::Otlp { authority, .. } => {
                super::otlp::export(&proxy, cluster, authority, spans).await
            }
        }
    }
}
