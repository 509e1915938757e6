//! pilot-agent's Prometheus metrics merge. Istio's injector points a pod's
//! `prometheus.io/{scrape,port,path}` annotations at the sidecar's status port
//! (`15020/stats/prometheus`) and hands the app's own annotations to the proxy as JSON in
//! `ISTIO_PROMETHEUS_ANNOTATIONS`; the status port then answers with the proxy's metrics followed
//! by the app's, scraped from `localhost:<port><path>` at that moment, so that a Prometheus
//! scraping by the annotations gets both. An app that cannot be scraped leaves its part out (the
//! proxy's metrics are still served), with a warning.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use serde::Deserialize;

use crate::error::ProxyError;

/// The largest app exposition merged (a larger one is left out, with a warning).
const MAX_BODY: usize = 16 << 20;
/// How long a scrape of the app may take when Prometheus does not say
/// (`X-Prometheus-Scrape-Timeout-Seconds`); Prometheus's own default scrape timeout.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// Where the app serves its metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppMetrics {
    pub port: u16,
    pub path: String,
}

/// The injector's JSON: the app's annotations as written (each may be empty).
#[derive(Debug, Default, Deserialize)]
struct Annotations {
    #[serde(default)]
    port: String,
    #[serde(default)]
    path: String,
}

/// Parses `ISTIO_PROMETHEUS_ANNOTATIONS` as pilot-agent does (path `/metrics` and port 80 when
/// unset); an empty value means no app metrics to merge. JSON that is not the injector's, or a
/// port equal to the status port (it would scrape itself), is refused, as by pilot-agent; a port
/// that is not a number (the pod's own annotation) only leaves the app's metrics out, with a
/// warning, where pilot-agent's scrapes of it would fail.
pub fn parse(json: &str, status_port: u16) -> Result<Option<AppMetrics>, ProxyError> {
    if json.trim().is_empty() {
        return Ok(None);
    }
    let bad = |why: String| {
        ProxyError::Config(format!(
            "ISTIO_PROMETHEUS_ANNOTATIONS (--prometheus-annotations): {why}"
        ))
    };
    let a: Annotations = serde_json::from_str(json).map_err(|e| {
        bad(format!(
            "not the injector's JSON ({{\"port\": …, \"path\": …}}): {e}"
        ))
    })?;
    let port = if a.port.is_empty() { "80" } else { &a.port };
    let Ok(port) = port.parse::<u16>() else {
        tracing::warn!(
            port,
            "the pod's prometheus.io/port is not a port number: its metrics are not merged"
        );
        return Ok(None);
    };
    if port == status_port {
        return Err(bad(format!(
            "the app's metrics port {port} is the status port, which would scrape itself; check \
             that the pod's prometheus.io/port annotation is not {port} or that it was not injected twice"
        )));
    }
    let path = if a.path.is_empty() {
        "/metrics".to_string()
    } else if a.path.starts_with('/') {
        a.path
    } else {
        format!("/{}", a.path)
    };
    Ok(Some(AppMetrics { port, path }))
}

/// The scrape timeout Prometheus asks for, else the default.
pub fn timeout(headers: &http::HeaderMap) -> Duration {
    headers
        .get("x-prometheus-scrape-timeout-seconds")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s > 0.0)
        .map_or(DEFAULT_TIMEOUT, |s| Duration::from_secs_f64(s.min(300.0)))
}

/// Scrapes the app's metrics now: its exposition, or why it could not be had.
pub async fn scrape(m: &AppMetrics, timeout: Duration) -> Result<Bytes, String> {
    let url = format!("http://localhost:{}{}", m.port, m.path);
    tokio::time::timeout(timeout, get(m.port, &m.path))
        .await
        .unwrap_or_else(|_| Err(format!("no answer within {timeout:?}")))
        .map_err(|why| format!("scraping the app's metrics at {url}: {why}"))
}

/// GET `path` from the app on localhost: 127.0.0.1, else ::1 (as `localhost` resolves in a
/// pod, without a resolver call).
async fn get(port: u16, path: &str) -> Result<Bytes, String> {
    let v4 = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let (tcp, addr) = match tokio::net::TcpStream::connect(v4).await {
        Ok(tcp) => (tcp, v4),
        Err(e4) => {
            let v6 = SocketAddr::from((Ipv6Addr::LOCALHOST, port));
            let tcp = tokio::net::TcpStream::connect(v6)
                .await
                .map_err(|e6| format!("cannot connect: {e4} (IPv4), {e6} (IPv6)"))?;
            (tcp, v6)
        }
    };
    let req = hyper::Request::get(path)
        .header(hyper::header::HOST, addr.to_string())
        .header(hyper::header::ACCEPT, "text/plain;version=0.0.4")
        .body(Empty::<Bytes>::new())
        .map_err(|e| e.to_string())?;
    let resp = crate::probe::send_one(tcp, req)
        .await
        .map_err(|e| e.to_string())?;
    if resp.status() != http::StatusCode::OK {
        return Err(format!("status {}", resp.status()));
    }
    let body = Limited::new(resp.into_body(), MAX_BODY)
        .collect()
        .await
        .map_err(|e| format!("reading the body (at most {MAX_BODY} bytes): {e}"))?;
    Ok(body.to_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_injectors_json_parses_with_pilot_agents_defaults() {
        assert_eq!(parse("", 15020).unwrap(), None);
        assert_eq!(
            parse(r#"{"scrape":"true","path":"/stats","port":"9080"}"#, 15020).unwrap(),
            Some(AppMetrics {
                port: 9080,
                path: "/stats".into()
            })
        );
        assert_eq!(
            parse(r#"{"scrape":"true","path":"","port":""}"#, 15020).unwrap(),
            Some(AppMetrics {
                port: 80,
                path: "/metrics".into()
            })
        );
        let err = parse(r#"{"port":"15020"}"#, 15020).unwrap_err().to_string();
        assert!(err.contains("status port"), "{err}");
        assert_eq!(parse(r#"{"port":"http"}"#, 15020).unwrap(), None);
        assert!(parse("{", 15020).is_err());
    }

    #[test]
    fn the_timeout_is_prometheus_s_when_it_says() {
        let mut h = http::HeaderMap::new();
        assert_eq!(timeout(&h), DEFAULT_TIMEOUT);
        h.insert(
            "x-prometheus-scrape-timeout-seconds",
            http::HeaderValue::from_static("2.5"),
        );
        assert_eq!(timeout(&h), Duration::from_millis(2500));
        h.insert(
            "x-prometheus-scrape-timeout-seconds",
            http::HeaderValue::from_static("soon"),
        );
        assert_eq!(timeout(&h), DEFAULT_TIMEOUT);
    }

    #[tokio::test]
    async fn the_apps_exposition_is_fetched_and_failures_say_why() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(|req: hyper::Request<_>| async move {
                        let (status, body) = if req.uri().path() == "/metrics" {
                            (200, "app_requests_total 7\n")
                        } else {
                            (404, "")
                        };
                        Ok::<_, std::convert::Infallible>(
                            hyper::Response::builder()
                                .status(status)
                                .body(http_body_util::Full::new(Bytes::from(body)))
                                .unwrap(),
                        )
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(tcp), svc)
                        .await;
                });
            }
        });
        let m = AppMetrics {
            port,
            path: "/metrics".into(),
        };
        let body = scrape(&m, Duration::from_secs(5)).await.unwrap();
        assert_eq!(&body[..], b"app_requests_total 7\n");
        let missing = AppMetrics {
            port,
            path: "/nothing".into(),
        };
        let err = scrape(&missing, Duration::from_secs(5)).await.unwrap_err();
        assert!(
            err.contains("status 404") && err.contains("/nothing"),
            "{err}"
        );
    }
}
