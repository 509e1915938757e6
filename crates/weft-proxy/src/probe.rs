//! pilot-agent's application probes. Under STRICT mTLS the kubelet's plaintext probes to the
//! app's port would be refused by the sidecar, so Istio's injector rewrites a container's HTTP
//! and TCP probes to `GET /app-health/<container>/<readyz|livez|startupz>` on the status port
//! (15020) and hands the originals to the proxy as JSON in `ISTIO_KUBE_APP_PROBERS`. The
//! status port runs the original probe against the app at the pod's IP, from 127.0.0.6 (the
//! source the capture rules let through to the app unredirected), and answers with the app's
//! HTTP status, or 200 when a TCP probe connects; 500 when the app cannot be reached in time.
//! As Istio's agent, it dials the pod IP whatever the probe's `host` says, sends the probe's
//! `Host` header when it has one, and does not verify an HTTPS app's certificate (neither does
//! the kubelet).

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Empty;
use serde::Deserialize;

use crate::error::ProxyError;

/// The source address of the probes (Envoy's inbound passthrough source in Istio).
const PROBE_SOURCE: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 6));

/// The probes by path (`/app-health/reviews/readyz` → the original probe).
pub type AppProbers = BTreeMap<String, AppProbe>;

/// One original probe, as Kubernetes writes a probe's handler (only what the agent runs).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AppProbe {
    pub http_get: Option<HttpGet>,
    pub tcp_socket: Option<TcpSocket>,
    /// Default 1 s, as the kubelet's.
    pub timeout_seconds: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpGet {
    #[serde(default)]
    pub path: String,
    pub port: Port,
    /// Not dialled (the pod IP is, as by Istio's agent).
    pub host: Option<String>,
    /// HTTP (default) or HTTPS.
    pub scheme: Option<String>,
    #[serde(default)]
    pub http_headers: Vec<Header>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Header {
    pub name: String,
    pub value: String,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TcpSocket {
    pub port: Port,
    /// Not dialled (the pod IP is, as by Istio's agent).
    pub host: Option<String>,
}

/// A port number, written as a number or a string holding one (Kubernetes' IntOrString, with
/// names already resolved by the injector).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Port(pub u16);

impl<'de> Deserialize<'de> for Port {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Number(u16),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Number(n) => Ok(Port(n)),
            Raw::Text(s) => s.parse().map(Port).map_err(|_| {
                serde::de::Error::custom(format!(
                    "port {s:?} is not a number (the injector resolves named ports)"
                ))
            }),
        }
    }
}

/// Parses `ISTIO_KUBE_APP_PROBERS`; an empty value means none.
pub fn parse(json: &str) -> Result<AppProbers, ProxyError> {
    if json.trim().is_empty() {
        return Ok(AppProbers::new());
    }
    let probers: AppProbers = serde_json::from_str(json).map_err(|e| {
        ProxyError::Config(format!(
            "ISTIO_KUBE_APP_PROBERS (--app-probers) is not the injector's probe JSON: {e}"
        ))
    })?;
    for (path, p) in &probers {
        if !path.starts_with("/app-health/") {
            return Err(ProxyError::Config(format!(
                "ISTIO_KUBE_APP_PROBERS: probe path {path:?} must start with /app-health/"
            )));
        }
        if p.http_get.is_none() == p.tcp_socket.is_none() {
            return Err(ProxyError::Config(format!(
                "ISTIO_KUBE_APP_PROBERS: probe {path} needs exactly one of httpGet and tcpSocket"
            )));
        }
        if let Some(h) = &p.http_get
            && h.scheme.as_deref().is_some_and(|s| {
                !s.eq_ignore_ascii_case("http") && !s.eq_ignore_ascii_case("https")
            })
        {
            return Err(ProxyError::Config(format!(
                "ISTIO_KUBE_APP_PROBERS: probe {path} has scheme {:?}; HTTP or HTTPS",
                h.scheme.as_deref().unwrap_or_default()
            )));
        }
    }
    Ok(probers)
}

/// Runs `probe` against the app at `pod_ip`: the HTTP status to answer, and why it failed.
pub async fn run(probe: &AppProbe, pod_ip: IpAddr) -> (u16, String) {
    let timeout = Duration::from_secs(probe.timeout_seconds.unwrap_or(1).max(1));
    let result = match (&probe.http_get, &probe.tcp_socket) {
        (Some(h), _) => {
            let addr = SocketAddr::new(pod_ip, h.port.0);
            tokio::time::timeout(timeout, http_get(h, addr))
                .await
                .unwrap_or_else(|_| Err(format!("no answer from {addr} within {timeout:?}")))
        }
        (None, Some(t)) => {
            let addr = SocketAddr::new(pod_ip, t.port.0);
            crate::socket::connect(addr, Some(PROBE_SOURCE), timeout, None)
                .await
                .map(|_| 200)
                .map_err(|e| format!("cannot connect to {addr}: {e}"))
        }
        (None, None) => Err("the probe has no handler".into()),
    };
    match result {
        Ok(code) => (code, String::new()),
        Err(why) => (500, why),
    }
}

async fn http_get(h: &HttpGet, addr: SocketAddr) -> Result<u16, String> {
    let tcp = crate::socket::connect(addr, Some(PROBE_SOURCE), Duration::from_secs(60), None)
        .await
        .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
    let https = h
        .scheme
        .as_deref()
        .is_some_and(|s| s.eq_ignore_ascii_case("https"));
    if !https {
        return request(h, addr, tcp).await;
    }
    // The app's certificate is not verified, as by the kubelet and Istio's agent.
    let config = weft_identity::origination_client_config(&weft_identity::OriginationOptions {
        alpn: vec![b"http/1.1".to_vec()],
        ..Default::default()
    })
    .map_err(|e| format!("TLS to {addr}: {e}"))?;
    let tls = tokio_rustls::TlsConnector::from(config)
        .connect(
            rustls_pki_types::ServerName::IpAddress(addr.ip().into()),
            tcp,
        )
        .await
        .map_err(|e| format!("TLS to {addr}: {e}"))?;
    request(h, addr, tls).await
}

/// Sends the probe's GET over `io`; the app's status.
async fn request<S>(h: &HttpGet, addr: SocketAddr, io: S) -> Result<u16, String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let path = if h.path.starts_with('/') {
        h.path.clone()
    } else {
        format!("/{}", h.path)
    };
    let mut req = hyper::Request::get(path)
        .body(Empty::<Bytes>::new())
        .map_err(|e| format!("probe request: {e}"))?;
    let headers = req.headers_mut();
    headers.insert(
        hyper::header::USER_AGENT,
        hyper::header::HeaderValue::from_static("kube-probe/1.36"),
    );
    let host = addr.to_string();
    if let Ok(v) = hyper::header::HeaderValue::from_str(&host) {
        headers.insert(hyper::header::HOST, v);
    }
    // The probe's headers replace the defaults (its Host among them).
    for header in &h.http_headers {
        let name = hyper::header::HeaderName::from_bytes(header.name.as_bytes())
            .map_err(|e| format!("probe header {:?}: {e}", header.name))?;
        let value = hyper::header::HeaderValue::from_str(&header.value)
            .map_err(|e| format!("probe header {}: {e}", header.name))?;
        headers.insert(name, value);
    }
    let resp = send_one(io, req)
        .await
        .map_err(|e| format!("{addr}: {e}"))?;
    Ok(resp.status().as_u16())
}

/// Sends `req` as the one request of a new HTTP/1.1 connection over `io` (driven by a task of
/// its own, closed when the response is done with): the status port's calls to the app.
pub(crate) async fn send_one<S>(
    io: S,
    req: hyper::Request<Empty<Bytes>>,
) -> Result<hyper::Response<hyper::body::Incoming>, hyper::Error>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut send, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(io)).await?;
    tokio::spawn(conn);
    send.send_request(req).await
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[test]
    fn the_injectors_json_parses_and_bad_json_is_named() {
        let p = parse(
            r#"{"/app-health/web/readyz": {"httpGet": {"path": "/ready", "port": 8080, "scheme": "HTTP",
                 "httpHeaders": [{"name": "Host", "value": "web.example"}]}, "timeoutSeconds": 3},
                "/app-health/web/livez": {"tcpSocket": {"port": "8080"}}}"#,
        )
        .expect("parses");
        assert_eq!(p.len(), 2);
        assert_eq!(p["/app-health/web/readyz"].timeout_seconds, Some(3));
        assert_eq!(
            p["/app-health/web/livez"]
                .tcp_socket
                .as_ref()
                .map(|t| t.port),
            Some(Port(8080))
        );
        assert!(parse("").expect("empty").is_empty());
        for (bad, says) in [
            ("{", "ISTIO_KUBE_APP_PROBERS"),
            (r#"{"/x": {"tcpSocket": {"port": 1}}}"#, "/app-health/"),
            (r#"{"/app-health/a/readyz": {}}"#, "exactly one"),
            (
                r#"{"/app-health/a/readyz": {"httpGet": {"port": "http"}}}"#,
                "named ports",
            ),
            (
                r#"{"/app-health/a/readyz": {"httpGet": {"port": 1, "scheme": "FTP"}}}"#,
                "HTTP or HTTPS",
            ),
        ] {
            let e = parse(bad).expect_err(bad).to_string();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }

    #[tokio::test]
    async fn probes_report_the_apps_answer() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let mut buf = [0u8; 1024];
                let n = s.read(&mut buf).await.unwrap_or(0);
                let req = String::from_utf8_lossy(&buf[..n]).to_string();
                // One Host header, the probe's.
                let hosts = req.to_ascii_lowercase().matches("\r\nhost:").count();
                let code = if req.starts_with("GET /ok ")
                    && req.contains("x-probe: yes")
                    && hosts == 1
                    && req.contains("web.example")
                {
                    "200 OK"
                } else {
                    "503 Service Unavailable"
                };
                let _ = s
                    .write_all(format!("HTTP/1.1 {code}\r\ncontent-length: 0\r\n\r\n").as_bytes())
                    .await;
            }
        });
        let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let http = |path: &str| AppProbe {
            http_get: Some(HttpGet {
                path: path.into(),
                port: Port(port),
                host: None,
                scheme: None,
                http_headers: vec![
                    Header {
                        name: "x-probe".into(),
                        value: "yes".into(),
                    },
                    Header {
                        name: "Host".into(),
                        value: "web.example".into(),
                    },
                ],
            }),
            tcp_socket: None,
            timeout_seconds: None,
        };
        assert_eq!(run(&http("/ok"), ip).await.0, 200);
        assert_eq!(run(&http("/sick"), ip).await.0, 503);
        let tcp = |port| AppProbe {
            http_get: None,
            tcp_socket: Some(TcpSocket {
                port: Port(port),
                host: None,
            }),
            timeout_seconds: Some(1),
        };
        assert_eq!(run(&tcp(port), ip).await.0, 200);
        // Nothing listens on the port the listener held before it was dropped.
        let closed = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("port")
            .port();
        let (code, why) = run(&tcp(closed), ip).await;
        assert_eq!(code, 500, "{why}");
        assert!(why.contains("cannot connect"), "{why}");
    }

    #[tokio::test]
    async fn https_probes_do_not_verify_the_apps_certificate() {
        use rustls_pki_types::pem::PemObject;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        // A certificate from a CA the prober has never heard of.
        let dir = tempfile::tempdir().expect("dir");
        let ca = weft_identity::CertificateAuthority::load_or_create(dir.path(), "cluster.local")
            .expect("CA");
        let (chain, key) = weft_identity::serving_cert_for_control_plane(
            &ca,
            &["app.example".to_string()],
            Duration::from_secs(3600),
        )
        .expect("cert");
        let certs = chain
            .iter()
            .map(|p| rustls_pki_types::CertificateDer::from_pem_slice(p.as_bytes()).expect("pem"))
            .collect();
        let key = rustls_pki_types::PrivateKeyDer::from_pem_slice(key.as_bytes()).expect("key");
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .expect("server config");
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        tokio::spawn(async move {
            while let Ok((s, _)) = listener.accept().await {
                let Ok(mut tls) = acceptor.accept(s).await else {
                    continue;
                };
                let mut buf = [0u8; 1024];
                let n = tls.read(&mut buf).await.unwrap_or(0);
                let ok = String::from_utf8_lossy(&buf[..n]).starts_with("GET /healthz ");
                let code = if ok {
                    "204 No Content"
                } else {
                    "404 Not Found"
                };
                let _ = tls
                    .write_all(format!("HTTP/1.1 {code}\r\ncontent-length: 0\r\n\r\n").as_bytes())
                    .await;
                let _ = tls.shutdown().await;
            }
        });
        let probe = AppProbe {
            http_get: Some(HttpGet {
                path: "/healthz".into(),
                port: Port(port),
                host: Some("ignored.example".into()),
                scheme: Some("HTTPS".into()),
                http_headers: Vec::new(),
            }),
            tcp_socket: None,
            timeout_seconds: Some(2),
        };
        let (code, why) = run(&probe, IpAddr::V4(Ipv4Addr::LOCALHOST)).await;
        assert_eq!(code, 204, "{why}");
    }
}
