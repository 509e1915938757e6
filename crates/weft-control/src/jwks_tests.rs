use std::net::SocketAddr;
use std::path::Path as FsPath;

use http_body_util::Full;
use hyper::service::service_fn;

use super::*;

fn istio_jwks() -> String {
    let path = format!(
        "{}/../../../shared/istio/jwt/jwks.json",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

type Reply = Arc<Mutex<(u16, String)>>;

/// A JWKS server: `/.well-known/openid-configuration` points at `/jwks.json`, anything else
/// answers what `reply` holds.
async fn server(tls: Option<Arc<rustls::ServerConfig>>) -> (SocketAddr, Reply) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let reply: Reply = Arc::new(Mutex::new((200, istio_jwks())));
    let r = reply.clone();
    let scheme = if tls.is_some() { "https" } else { "http" };
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let r = r.clone();
            let tls = tls.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let (status, body) = if req.uri().path() == OPENID_SUFFIX {
                        (
                            200,
                            format!(r#"{{"jwks_uri": "{scheme}://{addr}/jwks.json"}}"#),
                        )
                    } else {
                        r.lock().expect("lock").clone()
                    };
                    async move {
                        http::Response::builder()
                            .status(status)
                            .body(Full::new(Bytes::from(body)))
                    }
                });
                let io: Box<dyn Io> = match tls {
                    Some(cfg) => match tokio_rustls::TlsAcceptor::from(cfg).accept(tcp).await {
                        Ok(s) => Box::new(s),
                        Err(_) => return,
                    },
                    None => Box::new(tcp),
                };
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(io), svc)
                    .await;
            });
        }
    });
    (addr, reply)
}

fn fast() -> Intervals {
    Intervals {
        refresh: Duration::from_millis(100),
        on_failure: Duration::from_millis(50),
        max_on_failure: Duration::from_millis(200),
        timeout: Duration::from_secs(2),
    }
}

fn request_authentication(issuer: &str, uri: &str) -> Vec<Resource> {
    let yaml = format!(
        "apiVersion: security.istio.io/v1beta1
kind: RequestAuthentication
metadata: {{name: jwt-example, namespace: foo}}
spec:
  jwtRules:
  - issuer: {issuer}
    jwks: ''
    jwksUri: '{uri}'
"
    );
    let (rs, problems) = weft_api::parse_documents(&yaml, FsPath::new("ra.yaml"));
    assert!(problems.is_empty(), "{problems:?}");
    rs
}

async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    for _ in 0..200 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("timed out waiting for {what}");
}

const ISS: &str = "testing@secure.istio.io";

#[tokio::test]
async fn fetched_keys_push_and_survive_failed_refreshes() {
    let (addr, reply) = server(None).await;
    let uri = format!("http://{addr}/jwks.json");
    let r = Arc::new(JwksResolver::with_cas(Vec::new(), fast()));
    let (tx, mut rx) = mpsc::unbounded_channel();
    r.set_trigger(tx);
    assert_eq!(r.jwks_for(ISS, &uri), fake_jwks(&uri), "fake until fetched");
    r.sync(&request_authentication(ISS, &uri));
    tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .expect("a push is triggered")
        .expect("channel open");
    assert!(r.take_dirty());
    assert_eq!(r.jwks_for(ISS, &uri), istio_jwks());
    assert!(r.problems().is_empty());

    *reply.lock().expect("lock") = (500, "boom".into());
    eventually("the failure is reported", || !r.problems().is_empty()).await;
    let problems = r.problems();
    assert_eq!(problems.len(), 1);
    let p = &problems[0];
    assert!(
        p.starts_with("RequestAuthentication foo/jwt-example: jwtRules[0].jwksUri: "),
        "{p}"
    );
    assert!(p.contains("status 500, message \"boom\""), "{p}");
    assert!(p.contains("the keys fetched last stay in force"), "{p}");
    assert_eq!(r.jwks_for(ISS, &uri), istio_jwks(), "last good keys kept");

    *reply.lock().expect("lock") = (200, "<html>not a jwks</html>".into());
    eventually("an invalid body is a failure", || {
        r.problems()
            .iter()
            .any(|p| p.contains("not a usable JWKS: Jwks is an invalid JSON"))
    })
    .await;
    assert_eq!(r.jwks_for(ISS, &uri), istio_jwks());

    *reply.lock().expect("lock") = (200, istio_jwks());
    eventually("recovery clears the problem", || r.problems().is_empty()).await;
    assert!(!r.take_dirty(), "same keys: no push");
    assert!(r.fetch_success.load(Ordering::Relaxed) >= 2);
    assert!(r.fetch_fail.load(Ordering::Relaxed) >= 2);

    // The rule goes away: so do its entry and problems.
    r.sync(&[]);
    assert!(r.lock().is_empty());
}

#[tokio::test]
async fn an_unreachable_uri_names_the_rule_and_keeps_the_fake_jwks() {
    let dead = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = dead.local_addr().expect("addr");
    drop(dead);
    let uri = format!("http://{addr}/jwks.json");
    let r = Arc::new(JwksResolver::with_cas(Vec::new(), fast()));
    r.sync(&request_authentication(ISS, &uri));
    eventually("the failure", || !r.problems().is_empty()).await;
    let p = &r.problems()[0];
    assert!(p.contains("jwtRules[0].jwksUri"), "{p}");
    assert!(p.contains("cannot connect"), "{p}");
    assert!(p.contains("rejected (401) until a fetch succeeds"), "{p}");
    assert_eq!(r.jwks_for(ISS, &uri), fake_jwks(&uri));
    assert!(!r.take_dirty());
}

#[tokio::test]
async fn openid_discovery_when_jwks_uri_is_empty() {
    let (addr, _reply) = server(None).await;
    let issuer = format!("http://{addr}");
    let r = Arc::new(JwksResolver::with_cas(Vec::new(), fast()));
    r.sync(&request_authentication(&issuer, ""));
    eventually("discovered keys", || {
        r.jwks_for(&issuer, "") == istio_jwks()
    })
    .await;
}

#[tokio::test]
async fn https_trusts_the_extra_ca_only_when_given() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = weft_identity::CertificateAuthority::load_or_create(dir.path(), "cluster.local")
        .expect("ca");
    let cfg = crate::tls::server_config(
        &ca,
        &["localhost".to_string(), "127.0.0.1".to_string()],
        Duration::from_secs(3600),
    )
    .expect("server config");
    let mut cfg = (*cfg).clone();
    cfg.alpn_protocols.clear();
    let (addr, _reply) = server(Some(Arc::new(cfg))).await;
    let uri = format!("https://{addr}/jwks.json");

    let untrusted = JwksResolver::with_cas(Vec::new(), fast());
    let err = fetch_jwks(&untrusted.tls(), ISS, &uri, Duration::from_secs(2))
        .await
        .expect_err("unknown CA");
    assert!(err.contains("TLS handshake"), "{err}");

    let ca_file = dir.path().join("extra.pem");
    std::fs::write(&ca_file, ca.root_pem()).expect("write");
    let trusted = JwksResolver::new(Some(&ca_file)).expect("reads the CA");
    let body = fetch_jwks(&trusted.tls(), ISS, &uri, Duration::from_secs(2))
        .await
        .expect("fetched over HTTPS");
    assert_eq!(body, istio_jwks());

    let missing = JwksResolver::new(Some(FsPath::new("/nonexistent/ca.pem")))
        .map(|_| ())
        .expect_err("missing file");
    assert!(missing.to_string().contains("--jwks-ca"), "{missing}");
}

#[test]
fn key_sets_compare_sorted_by_kid() {
    let a = r#"{"keys":[{"kid":"1","k":"a"},{"kid":"2","k":"b"}]}"#;
    let b = r#"{"keys":[{"kid":"2","k":"b"},{"kid":"1","k":"a"}]}"#;
    let c = r#"{"keys":[{"kid":"2","k":"c"},{"kid":"1","k":"a"}]}"#;
    assert!(same_keys(a, b));
    assert!(!same_keys(a, c));
}

#[test]
fn without_a_runtime_nothing_is_fetched() {
    let r = Arc::new(JwksResolver::default());
    r.sync(&request_authentication(ISS, "https://x/jwks.json"));
    assert_eq!(
        r.jwks_for(ISS, "https://x/jwks.json"),
        fake_jwks("https://x/jwks.json")
    );
    assert!(r.problems().is_empty());
}
