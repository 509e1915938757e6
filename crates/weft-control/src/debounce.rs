//! When a push goes out. Istio's debounce: a change waits for `after` of quiet
//! (PILOT_DEBOUNCE_AFTER, 100 ms), at most `max` (PILOT_DEBOUNCE_MAX, 10 s), so a burst of edits
//! becomes one push. Changes that only move endpoints (istiod's incremental EDS pushes) wait at
//! most `max_endpoints`: under endpoint churn (one change every 100 ms, as pods come and go in a
//! busy cluster) the quiet never comes, and holding every endpoint change for the 10-s maximum
//! leaves proxies seconds behind. Whether the pending changes move endpoints only is known once
//! they are read, so at `max_endpoints` the caller reads them (`peek`) and says.

use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;
use weft_api::{Resource, Spec};

/// The debounce settings, with Istio's defaults.
#[derive(Debug, Clone, Copy)]
pub struct Debounce {
    /// Quiet time before a push.
    pub after: Duration,
    /// Longest a push waits while changes keep coming.
    pub max: Duration,
    /// Longest a change of endpoints alone waits while changes keep coming.
    pub max_endpoints: Duration,
}

impl Default for Debounce {
    fn default() -> Self {
        Debounce {
            after: Duration::from_millis(100),
            max: Duration::from_secs(10),
            max_endpoints: Duration::from_millis(250),
        }
    }
}

/// How a debounce ended.
#[derive(Debug, PartialEq)]
pub enum Settled<T> {
    /// Quiet came, the maximum passed or the senders are gone: read the config and push.
    Push,
    /// At `max_endpoints`, `peek` read the pending changes and found endpoints alone: push these.
    Peeked(T),
}

impl Debounce {
    /// Called after a first change was received: waits for more until the push should go out.
    /// `peek` is asked once, at `max_endpoints`, for the pending config when it changes endpoints
    /// only (None: something else changed, so the push waits for quiet or `max`).
    pub async fn settle<T>(
        &self,
        rx: &mut mpsc::UnboundedReceiver<()>,
        mut peek: impl FnMut() -> Option<T>,
    ) -> Settled<T> {
        let started = Instant::now();
        let endpoints_due = started + self.max_endpoints.min(self.max);
        let mut peeked = false;
        let mut last = started;
        loop {
            let quiet = tokio::time::sleep_until(last + self.after);
            let endpoints = tokio::time::sleep_until(endpoints_due);
            tokio::select! {
                biased;
                _ = endpoints, if !peeked => {
                    peeked = true;
                    if let Some(pending) = peek() {
                        return Settled::Peeked(pending);
                    }
                }
                more = rx.recv() => {
                    if more.is_none() || started.elapsed() >= self.max {
                        return Settled::Push;
                    }
                    last = Instant::now();
                }
                _ = quiet => return Settled::Push,
            }
        }
    }
}

/// Whether `new` differs from `old` in endpoints alone: WorkloadEntries and the `endpoints` of
/// ServiceEntries, every other resource the same and in the same order (where in a file it is
/// written aside).
pub fn endpoints_only(old: &[Resource], new: &[Resource]) -> bool {
    let rest = |r: &&Resource| !matches!(r.spec, Spec::WorkloadEntry(_));
    let mut old = old.iter().filter(rest);
    let mut new = new.iter().filter(rest);
    loop {
        match (old.next(), new.next()) {
            (None, None) => return true,
            (Some(a), Some(b)) => {
                let same = a.meta == b.meta
                    && a.api_version == b.api_version
                    && match (&a.spec, &b.spec) {
                        (Spec::ServiceEntry(x), Spec::ServiceEntry(y)) => {
                            x.hosts == y.hosts
                                && x.addresses == y.addresses
                                && x.ports == y.ports
                                && x.location == y.location
                                && x.resolution == y.resolution
                                && x.workload_selector == y.workload_selector
                                && x.export_to == y.export_to
                                && x.subject_alt_names == y.subject_alt_names
                        }
                        (x, y) => x == y,
                    };
                if !same {
                    return false;
                }
            }
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> Vec<Resource> {
        let (res, problems) = weft_api::parse_documents(yaml, std::path::Path::new("t.yaml"));
        assert!(problems.is_empty(), "{problems:?}");
        res
    }

    const SE: &str = "apiVersion: networking.istio.io/v1beta1
kind: ServiceEntry
metadata: {name: a, namespace: ns}
spec:
  hosts: [a.example]
  ports: [{number: 80, name: http, protocol: HTTP}]
  location: MESH_INTERNAL
  resolution: STATIC
  endpoints: [{address: ADDR}]
";
    const WE: &str = "---
apiVersion: networking.istio.io/v1beta1
kind: WorkloadEntry
metadata: {name: w, namespace: ns}
spec: {address: ADDR, labels: {app: a}}
";
    const VS: &str = "---
apiVersion: networking.istio.io/v1beta1
kind: VirtualService
metadata: {name: v, namespace: ns}
spec:
  hosts: [a.example]
  http: [{timeout: TIMEOUT, route: [{destination: {host: a.example}}]}]
";

    #[test]
    fn endpoint_moves_are_told_from_other_changes() {
        let doc = |se: &str, we: &str, t: &str| {
            parse(&format!(
                "{}{}{}",
                SE.replace("ADDR", se),
                WE.replace("ADDR", we),
                VS.replace("TIMEOUT", t)
            ))
        };
        let base = doc("10.0.0.1", "10.0.0.2", "1s");
        assert!(endpoints_only(&base, &doc("10.0.0.9", "10.0.0.2", "1s")));
        assert!(endpoints_only(&base, &doc("10.0.0.1", "10.0.0.9", "1s")));
        assert!(endpoints_only(&base, &base));
        assert!(!endpoints_only(&base, &doc("10.0.0.1", "10.0.0.2", "2s")));
        // A WorkloadEntry added or removed is an endpoint change; a service removed is not.
        let no_we = parse(&format!(
            "{}{}",
            SE.replace("ADDR", "10.0.0.1"),
            VS.replace("TIMEOUT", "1s")
        ));
        assert!(endpoints_only(&base, &no_we));
        let no_se = parse(&VS.replace("TIMEOUT", "1s"));
        assert!(!endpoints_only(&base, &no_se));
        // The service's own fields are not endpoints.
        let mut ported = base.clone();
        if let Spec::ServiceEntry(se) = &mut ported[0].spec {
            se.hosts.push("b.example".into());
        }
        assert!(!endpoints_only(&base, &ported));
    }

    fn debounce() -> Debounce {
        Debounce {
            after: Duration::from_millis(100),
            max: Duration::from_secs(10),
            max_endpoints: Duration::from_millis(250),
        }
    }

    /// Sends a change every `every` until `until` has passed.
    fn churn(every: Duration, until: Duration) -> mpsc::UnboundedReceiver<()> {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let start = Instant::now();
            while start.elapsed() < until {
                tokio::time::sleep(every).await;
                if tx.send(()).is_err() {
                    return;
                }
            }
            // Keep the channel open past the test's horizon.
            tokio::time::sleep(Duration::from_secs(3600)).await;
            drop(tx);
        });
        rx
    }

    #[tokio::test(start_paused = true)]
    async fn quiet_ends_a_burst() {
        let mut rx = churn(Duration::from_millis(30), Duration::from_millis(150));
        let start = Instant::now();
        let out = debounce().settle(&mut rx, || None::<()>).await;
        assert_eq!(out, Settled::Push);
        let waited = start.elapsed();
        // The last change came at ~150 ms, then 100 ms of quiet.
        assert!(
            waited >= Duration::from_millis(250) && waited < Duration::from_millis(300),
            "{waited:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn endpoint_churn_is_pushed_at_its_maximum() {
        let mut rx = churn(Duration::from_millis(90), Duration::from_secs(60));
        let start = Instant::now();
        let mut asked = 0;
        let out = debounce()
            .settle(&mut rx, || {
                asked += 1;
                Some("endpoints")
            })
            .await;
        assert_eq!(out, Settled::Peeked("endpoints"));
        assert_eq!(asked, 1);
        assert_eq!(start.elapsed(), Duration::from_millis(250));
    }

    #[tokio::test(start_paused = true)]
    async fn other_churn_waits_for_the_maximum() {
        let mut rx = churn(Duration::from_millis(90), Duration::from_secs(60));
        let start = Instant::now();
        let mut asked = 0;
        let out = debounce()
            .settle(&mut rx, || {
                asked += 1;
                None::<()>
            })
            .await;
        assert_eq!(out, Settled::Push);
        assert_eq!(asked, 1, "the pending config is read once per debounce");
        let waited = start.elapsed();
        assert!(
            waited >= Duration::from_secs(10) && waited < Duration::from_millis(10_100),
            "{waited:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn closed_channel_ends_the_wait() {
        let (tx, mut rx) = mpsc::unbounded_channel::<()>();
        drop(tx);
        let start = Instant::now();
        assert_eq!(
            debounce().settle(&mut rx, || None::<()>).await,
            Settled::Push
        );
        assert_eq!(start.elapsed(), Duration::ZERO);
    }
}
