//! The batching of the exporters that run off the request path (OpenTelemetry logs, spans):
//! after the first item, more are taken until the batch is full or the flush interval ends.

use std::time::Duration;

use tokio::sync::mpsc;

/// The batch that starts with `first`: items from `rx` until their summed `weight` reaches
/// `limit`, `interval` has passed, or the channel closes (the caller sends what it has).
pub async fn collect<T>(
    rx: &mut mpsc::Receiver<T>,
    first: T,
    interval: Duration,
    limit: usize,
    weight: impl Fn(&T) -> usize,
) -> Vec<T> {
    let mut size = weight(&first);
    let mut batch = vec![first];
    let deadline = tokio::time::Instant::now() + interval;
    while size < limit {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(item)) => {
                size += weight(&item);
                batch.push(item);
            }
            Ok(None) | Err(_) => break,
        }
    }
    batch
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_batch_ends_when_full_or_when_the_interval_ends() {
        let (tx, mut rx) = mpsc::channel(16);
        for i in 1..=5 {
            tx.send(i).await.unwrap();
        }
        let full = collect(&mut rx, 0, Duration::from_secs(60), 3, |_| 1).await;
        assert_eq!(full, [0, 1, 2]);
        let rest = collect(&mut rx, 9, Duration::from_millis(20), 100, |_| 1).await;
        assert_eq!(rest, [9, 3, 4, 5]);
    }
}
