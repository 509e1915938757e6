//! `weft wait`'s side: polls the control plane's `/debug/config_distribution` until every
//! connected proxy has applied a resource's current content, it is refused, or time runs out.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};

use super::distribution::{Distribution, State};

/// Pause between two polls.
const POLL: Duration = Duration::from_millis(100);
/// Longest one request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

/// What to wait for and where to ask.
#[derive(Clone, Debug)]
pub struct WaitFor {
    /// The control plane's monitoring address, `host:port` (15014).
    pub control_plane: String,
    /// A kind as `istioctl` names it (`virtualservice`, `vs`, …).
    pub kind: String,
    pub namespace: String,
    pub name: String,
    pub timeout: Duration,
}

impl WaitFor {
    fn url(&self) -> String {
        format!(
            "http://{}/debug/config_distribution?resource={}/{}/{}",
            self.control_plane, self.kind, self.namespace, self.name
        )
    }
}

fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        source = inner.source();
    }
    s
}

async fn fetch(url: &str) -> Result<Distribution, String> {
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Empty<Bytes>>();
    let uri: http::Uri = url.parse().map_err(|e| format!("bad address {url}: {e}"))?;
    let resp = tokio::time::timeout(REQUEST_TIMEOUT, client.get(uri))
        .await
        .map_err(|_| "no answer within 2s".to_string())?
        .map_err(|e| chain(&e))?;
    let status = resp.status();
    let body = tokio::time::timeout(REQUEST_TIMEOUT, resp.into_body().collect())
        .await
        .map_err(|_| "no answer within 2s".to_string())?
        .map_err(|e| chain(&e))?
        .to_bytes();
    if !status.is_success() {
        return Err(format!(
            "HTTP {status} (is it a weft control of this version?): {}",
            String::from_utf8_lossy(&body).trim()
        ));
    }
    serde_json::from_slice(&body).map_err(|e| format!("unexpected answer: {e}"))
}

/// The line printed once a resource is applied.
pub fn success_line(d: &Distribution) -> String {
    let version = d.version.as_deref().unwrap_or("?");
    if d.proxies.is_empty() {
        format!(
            "{} is in force (version {version}); no proxies are connected",
            d.resource
        )
    } else {
        format!(
            "{} applied by {n}/{n} proxies (version {version})",
            d.resource,
            n = d.proxies.len()
        )
    }
}

/// Why a final state other than applied is a failure.
fn refusal(d: &Distribution) -> String {
    let mut s = match d.state {
        State::Skipped => format!("{} is not applied by Weft", d.resource),
        State::UnknownKind => d.message.clone().unwrap_or_default(),
        _ => format!("{} was rejected", d.resource),
    };
    for e in &d.errors {
        s.push_str("\n  ");
        s.push_str(e);
    }
    if d.state != State::UnknownKind
        && let Some(m) = &d.message
    {
        s.push_str("\n  ");
        s.push_str(m);
    }
    s
}

/// What was still missing when time ran out.
fn pending(d: &Distribution) -> String {
    match d.state {
        State::Loading => "the control plane has not read the latest config files yet".into(),
        State::NotFound => d.message.clone().unwrap_or_else(|| "not found".into()),
        _ => {
            let done = d.proxies.iter().filter(|p| p.synced).count();
            let mut s = format!(
                "version {} applied by {done}/{} proxies; waiting for:",
                d.version.as_deref().unwrap_or("?"),
                d.proxies.len()
            );
            for p in d.proxies.iter().filter(|p| !p.synced) {
                s.push_str(&format!("\n  {}: {}", p.proxy, p.waiting.join("; ")));
            }
            s
        }
    }
}

/// Polls until the resource is applied by every connected proxy (`Ok`: the line to print), or
/// refused, or `timeout` passes (`Err`: what went wrong or is missing).
pub async fn wait(w: &WaitFor) -> Result<String, String> {
    let url = w.url();
    let start = Instant::now();
    let mut last: Result<Distribution, String> = Err("no answer yet".into());
    loop {
        last = match fetch(&url).await {
            Ok(d) => Ok(d),
            // Keep the last answer when one poll fails (e.g. a restart).
            Err(e) if last.is_err() => Err(e),
            Err(_) => last,
        };
        if let Ok(d) = &last
            && d.state.is_final()
        {
            return if d.state == State::Applied {
                Ok(success_line(d))
            } else {
                Err(refusal(d))
            };
        }
        if start.elapsed() >= w.timeout {
            let what = format!("{}/{}.{}", w.kind, w.name, w.namespace);
            return Err(match last {
                Ok(d) => format!(
                    "timed out after {:?} waiting for {}: {}",
                    w.timeout,
                    d.resource,
                    pending(&d)
                ),
                Err(e) => format!(
                    "timed out after {:?} waiting for {what}: cannot ask the control plane at {}: {e}",
                    w.timeout, w.control_plane
                ),
            });
        }
        tokio::time::sleep(POLL.min(w.timeout.saturating_sub(start.elapsed()))).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::debug::distribution::ProxySync;

    fn d(state: State) -> Distribution {
        Distribution {
            resource: "VirtualService default/r".into(),
            state,
            version: Some("s/3".into()),
            source: None,
            errors: vec!["r.yaml:7: VirtualService default/r: spec.http[0].route: bad".into()],
            message: None,
            proxies: vec![
                ProxySync {
                    proxy: "sidecar~a".into(),
                    synced: true,
                    waiting: vec![],
                    rejected: vec![],
                },
                ProxySync {
                    proxy: "sidecar~b".into(),
                    synced: false,
                    waiting: vec!["RDS: version s/3 sent, not ACKed yet".into()],
                    rejected: vec![],
                },
            ],
        }
    }

    #[test]
    fn messages_say_what_is_missing_or_wrong() {
        let r = refusal(&d(State::Rejected));
        assert!(r.contains("was rejected") && r.contains("r.yaml:7"), "{r}");
        let p = pending(&d(State::Distributing));
        assert!(
            p.contains("applied by 1/2") && p.contains("sidecar~b: RDS: version s/3 sent"),
            "{p}"
        );
        let mut ok = d(State::Applied);
        assert_eq!(
            success_line(&ok),
            "VirtualService default/r applied by 2/2 proxies (version s/3)"
        );
        ok.proxies.clear();
        assert!(success_line(&ok).contains("no proxies are connected"));
    }

    #[tokio::test]
    async fn an_unreachable_control_plane_times_out_with_the_reason() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap_or(1);
        let w = WaitFor {
            control_plane: format!("127.0.0.1:{port}"),
            kind: "vs".into(),
            namespace: "default".into(),
            name: "r".into(),
            timeout: Duration::from_millis(300),
        };
        let err = wait(&w).await.unwrap_err();
        assert!(
            err.contains("timed out after 300ms") && err.contains("cannot ask the control plane"),
            "{err}"
        );
    }
}
