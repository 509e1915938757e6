//! istiod's JWKS resolver (`pilot/pkg/model/jwks_resolver.go`): the control plane fetches the
//! `jwksUri` of every RequestAuthentication rule (OpenID discovery from the issuer when it is
//! empty) and sends the keys inline, so proxies never call out.
//!
//! - Cached per (issuer, uri); fetched over HTTPS (system bundle, `/cacerts/extra.pem` and
//!   `weft control --jwks-ca`) or HTTP, 5 s timeout; a body that is not a usable JWKS is a
//!   failure.
//! - Unlike istiod, the first fetch never blocks the push: until it succeeds the proxies get
//!   istiod's fake JWKS (every token fails, token-less requests pass), then a push follows.
//! - Refreshed every 20 minutes; after a failure 1 minute, doubling up to 60 minutes; a
//!   failure keeps the last good keys. A changed key set (compared with keys sorted by `kid`)
//!   triggers a push.
//! - Each failure is a problem at `/debug/config_errors` naming the RequestAuthentication and
//!   `jwtRules[i].jwksUri`, until a fetch succeeds.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::rt::TokioIo;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::sync::mpsc;
use weft_api::{Resource, Spec};

/// The system CA bundle.
pub const SYSTEM_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";
/// istiod's extra CA file.
pub const ISTIO_EXTRA_CA: &str = "/cacerts/extra.pem";
const OPENID_SUFFIX: &str = "/.well-known/openid-configuration";
const MAX_BODY: usize = 1 << 20;
const MAX_REDIRECTS: usize = 5;

/// istiod's stand-in when it cannot fetch a JWKS: a key no token matches.
pub fn fake_jwks(uri: &str) -> String {
    let n =
        weft_identity::jwt::base64url(format!("Error-IstiodFailedToFetchJwksUri-{uri}").as_bytes());
    format!(r#"{{"keys":[ {{"e":"AQAB","kid":"abc","kty":"RSA","n":"{n}"}}]}}"#)
}

/// Refresh timing (istiod's `PILOT_JWT_PUB_KEY_REFRESH_INTERVAL` and failure back-off).
#[derive(Debug, Clone, Copy)]
pub struct Intervals {
    pub refresh: Duration,
    pub on_failure: Duration,
    pub max_on_failure: Duration,
    pub timeout: Duration,
}

impl Default for Intervals {
    fn default() -> Self {
        Intervals {
            refresh: Duration::from_secs(20 * 60),
            on_failure: Duration::from_secs(60),
            max_on_failure: Duration::from_secs(60 * 60),
            timeout: Duration::from_secs(5),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum JwksCaError {
    #[error(
        "cannot read the JWKS CA file {path}: {reason}; --jwks-ca takes a PEM file of CA certificates"
    )]
    Read { path: PathBuf, reason: String },
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct Key {
    issuer: String,
    uri: String,
}

#[derive(Debug, Default)]
struct Entry {
    /// The last JWKS fetched successfully.
    keys: Option<String>,
    /// The last fetch's error, until one succeeds.
    error: Option<String>,
    /// `RequestAuthentication ns/name: jwtRules[i].jwksUri` for each rule using it.
    users: BTreeSet<String>,
    task: Option<tokio::task::AbortHandle>,
}

/// The resolver, shared by every push context of a running control plane.
pub struct JwksResolver {
    entries: Mutex<HashMap<Key, Entry>>,
    extra_cas: Vec<CertificateDer<'static>>,
    tls: OnceLock<Arc<rustls::ClientConfig>>,
    trigger: Mutex<Option<mpsc::UnboundedSender<()>>>,
    dirty: AtomicBool,
    intervals: Intervals,
    pub fetch_success: AtomicU64,
    pub fetch_fail: AtomicU64,
}

impl std::fmt::Debug for JwksResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwksResolver")
            .field("entries", &self.lock().len())
            .finish_non_exhaustive()
    }
}

impl Default for JwksResolver {
    fn default() -> Self {
        JwksResolver::with_cas(Vec::new(), Intervals::default())
    }
}

fn read_cas(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let pem = std::fs::read(path).map_err(|e| e.to_string())?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    if certs.is_empty() {
        return Err("no certificate in it".into());
    }
    Ok(certs)
}

impl JwksResolver {
    /// A resolver trusting the system bundle, istiod's `/cacerts/extra.pem` when present, and
    /// the CA certificates of `extra_ca` (`--jwks-ca`).
    pub fn new(extra_ca: Option<&Path>) -> Result<Self, JwksCaError> {
        let cas = match extra_ca {
            Some(path) => read_cas(path).map_err(|reason| JwksCaError::Read {
                path: path.to_path_buf(),
                reason,
            })?,
            None => Vec::new(),
        };
        Ok(JwksResolver::with_cas(cas, Intervals::default()))
    }

    /// A resolver with explicit trust and timing (tests).
    pub fn with_cas(extra_cas: Vec<CertificateDer<'static>>, intervals: Intervals) -> Self {
        JwksResolver {
            entries: Mutex::new(HashMap::new()),
            extra_cas,
            tls: OnceLock::new(),
            trigger: Mutex::new(None),
            dirty: AtomicBool::new(false),
            intervals,
            fetch_success: AtomicU64::new(0),
            fetch_fail: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Entry>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Where to signal that a key set changed (the push loop's channel). Signals at once when a
    /// change is already pending.
    pub fn set_trigger(&self, tx: mpsc::UnboundedSender<()>) {
        if self.dirty.load(Ordering::SeqCst) {
            let _ = tx.send(());
        }
        *self.trigger.lock().unwrap_or_else(|p| p.into_inner()) = Some(tx);
    }

    /// Whether a key set changed since the last call (the push loop pushes when it did).
    pub fn take_dirty(&self) -> bool {
        self.dirty.swap(false, Ordering::SeqCst)
    }

    /// Registers the `jwksUri` rules of every RequestAuthentication in `resources` (starting the
    /// fetch of new ones when a tokio runtime is running) and forgets the ones no longer used.
    pub fn sync(self: &Arc<Self>, resources: &[Resource]) {
        let mut wanted: BTreeMap<Key, BTreeSet<String>> = BTreeMap::new();
        for r in resources {
            let Spec::RequestAuthentication(ra) = &r.spec else {
                continue;
            };
            for (i, rule) in ra.jwt_rules.iter().enumerate() {
                if !rule.jwks.is_empty() {
                    continue;
                }
                wanted
                    .entry(Key {
                        issuer: rule.issuer.clone(),
                        uri: rule.jwks_uri.clone(),
                    })
                    .or_default()
                    .insert(format!(
                        "RequestAuthentication {}/{}: jwtRules[{i}].jwksUri",
                        r.meta.namespace, r.meta.name
                    ));
            }
        }
        let mut entries = self.lock();
        entries.retain(|k, e| {
            let keep = wanted.contains_key(k);
            if !keep && let Some(t) = e.task.take() {
                t.abort();
            }
            keep
        });
        for (key, users) in wanted {
            let e = entries.entry(key.clone()).or_default();
            e.users = users;
            if e.task.is_none() {
                e.task = self.spawn(key);
            }
        }
    }

    /// The JWKS to inline for (issuer, uri): the last keys fetched, or istiod's fake JWKS.
    pub fn jwks_for(self: &Arc<Self>, issuer: &str, uri: &str) -> String {
        let key = Key {
            issuer: issuer.to_string(),
            uri: uri.to_string(),
        };
        let mut entries = self.lock();
        let e = entries.entry(key.clone()).or_default();
        if e.task.is_none() {
            e.task = self.spawn(key);
        }
        e.keys.clone().unwrap_or_else(|| fake_jwks(uri))
    }

    /// The current fetch failures, one line per rule that uses the failing (issuer, uri).
    pub fn problems(&self) -> Vec<String> {
        let entries = self.lock();
        let mut out = Vec::new();
        for (key, e) in entries.iter() {
            let Some(err) = &e.error else { continue };
            let from = if key.uri.is_empty() {
                format!(
                    "by OpenID discovery from {}{OPENID_SUFFIX} (jwksUri is empty)",
                    key.issuer
                )
            } else {
                format!("from {}", key.uri)
            };
            let consequence = if e.keys.is_some() {
                "the keys fetched last stay in force"
            } else {
                "every token of this issuer is rejected (401) until a fetch succeeds"
            };
            for user in &e.users {
                out.push(format!(
                    "{user}: cannot fetch the JWKS of issuer {:?} {from}: {err}; {consequence}",
                    key.issuer
                ));
            }
        }
        out.sort();
        out
    }

    fn spawn(self: &Arc<Self>, key: Key) -> Option<tokio::task::AbortHandle> {
        let rt = tokio::runtime::Handle::try_current().ok()?;
        let me = Arc::downgrade(self);
        Some(rt.spawn(refresh_loop(me, key)).abort_handle())
    }

    fn tls(&self) -> Arc<rustls::ClientConfig> {
        self.tls
            .get_or_init(|| {
                let mut roots = rustls::RootCertStore::empty();
                for path in [SYSTEM_BUNDLE, ISTIO_EXTRA_CA] {
                    if let Ok(certs) = read_cas(Path::new(path)) {
                        let (_, bad) = roots.add_parsable_certificates(certs);
                        if bad > 0 {
                            tracing::debug!(path, bad, "CA certificates skipped");
                        }
                    }
                }
                roots.add_parsable_certificates(self.extra_cas.iter().cloned());
                let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
                    rustls::crypto::aws_lc_rs::default_provider(),
                ))
                .with_safe_default_protocol_versions()
                .unwrap_or_else(|_| {
                    rustls::ClientConfig::builder_with_provider(Arc::new(
                        rustls::crypto::aws_lc_rs::default_provider(),
                    ))
                    .with_protocol_versions(&[&rustls::version::TLS13])
                    .expect("TLS 1.3 is supported by aws-lc-rs")
                });
                Arc::new(builder.with_root_certificates(roots).with_no_client_auth())
            })
            .clone()
    }

    /// Records a fetch result; returns the delay before the next one.
    fn record(&self, key: &Key, result: Result<String, String>, failures: &mut u32) -> Duration {
        let mut entries = self.lock();
        let Some(e) = entries.get_mut(key) else {
            return self.intervals.refresh;
        };
        match result {
            Ok(body) => {
                self.fetch_success.fetch_add(1, Ordering::Relaxed);
                *failures = 0;
                let changed = e.keys.as_deref().is_none_or(|old| !same_keys(old, &body));
                if e.error.take().is_some() {
                    tracing::info!(issuer = %key.issuer, uri = %key.uri, "JWKS fetched again");
                }
                e.keys = Some(body);
                if changed {
                    tracing::info!(issuer = %key.issuer, uri = %key.uri, "JWKS changed; pushing");
                    self.dirty.store(true, Ordering::SeqCst);
                    if let Some(tx) = &*self.trigger.lock().unwrap_or_else(|p| p.into_inner()) {
                        let _ = tx.send(());
                    }
                }
                self.intervals.refresh
            }
            Err(err) => {
                self.fetch_fail.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(issuer = %key.issuer, uri = %key.uri, error = %err,
                    kept_last_keys = e.keys.is_some(), "JWKS fetch failed");
                e.error = Some(err);
                *failures += 1;
                let factor = 1u32 << (*failures - 1).min(16);
                self.intervals
                    .on_failure
                    .saturating_mul(factor)
                    .min(self.intervals.max_on_failure)
            }
        }
    }
}

async fn refresh_loop(me: std::sync::Weak<JwksResolver>, key: Key) {
    let mut failures = 0u32;
    loop {
        let Some(r) = me.upgrade() else { return };
        let (tls, timeout) = (r.tls(), r.intervals.timeout);
        drop(r);
        let result = fetch_jwks(&tls, &key.issuer, &key.uri, timeout).await;
        let Some(r) = me.upgrade() else { return };
        let delay = r.record(&key, result, &mut failures);
        drop(r);
        tokio::time::sleep(delay).await;
    }
}

/// Whether two JWKS documents hold the same keys (compared sorted by `kid`, as istiod does).
fn same_keys(a: &str, b: &str) -> bool {
    fn sorted(s: &str) -> Option<Vec<serde_json::Value>> {
        let v: serde_json::Value = serde_json::from_str(s).ok()?;
        let mut keys = v.get("keys")?.as_array()?.clone();
        keys.sort_by(|x, y| {
            let kid =
                |v: &serde_json::Value| v.get("kid").and_then(|k| k.as_str()).map(String::from);
            kid(x).cmp(&kid(y))
        });
        Some(keys)
    }
    match (sorted(a), sorted(b)) {
        (Some(x), Some(y)) => x == y,
        _ => a == b,
    }
}

/// Fetches and checks the JWKS of `issuer` at `uri` (OpenID discovery when empty).
pub async fn fetch_jwks(
    tls: &Arc<rustls::ClientConfig>,
    issuer: &str,
    uri: &str,
    timeout: Duration,
) -> Result<String, String> {
    let uri = if uri.is_empty() {
        let url = format!("{}{OPENID_SUFFIX}", issuer.trim_end_matches('/'));
        let body = get(tls, &url, timeout).await?;
        let doc: serde_json::Value = serde_json::from_slice(&body)
            .map_err(|e| format!("OpenID discovery document {url} is not JSON: {e}"))?;
        match doc.get("jwks_uri").and_then(|u| u.as_str()) {
            Some(u) => u.to_string(),
            None => {
                return Err(format!(
                    "invalid jwks_uri {} in openID discovery configuration {url}",
                    doc.get("jwks_uri").unwrap_or(&serde_json::Value::Null)
                ));
            }
        }
    } else {
        uri.to_string()
    };
    let body = get(tls, &uri, timeout).await?;
    let text = String::from_utf8(body).map_err(|_| "the response is not UTF-8 text".to_string())?;
    weft_identity::jwt::Jwks::parse(&text)
        .map_err(|status| format!("the response is not a usable JWKS: {status}"))?;
    Ok(text)
}

/// GET `url` (following up to 5 redirects) within `timeout`; non-2xx is an error.
async fn get(
    tls: &Arc<rustls::ClientConfig>,
    url: &str,
    timeout: Duration,
) -> Result<Vec<u8>, String> {
    match tokio::time::timeout(timeout, get_following(tls, url)).await {
        Ok(r) => r,
        Err(_) => Err(format!("GET {url}: no response within {timeout:?}")),
    }
}

async fn get_following(tls: &Arc<rustls::ClientConfig>, url: &str) -> Result<Vec<u8>, String> {
    let mut url = url.to_string();
    for _ in 0..=MAX_REDIRECTS {
        match get_once(tls, &url).await? {
            Fetched::Body(b) => return Ok(b),
            Fetched::Redirect(next) => url = next,
        }
    }
    Err(format!("GET {url}: more than {MAX_REDIRECTS} redirects"))
}

enum Fetched {
    Body(Vec<u8>),
    Redirect(String),
}

trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Io for T {}

async fn get_once(tls: &Arc<rustls::ClientConfig>, url: &str) -> Result<Fetched, String> {
    let uri: http::Uri = url
        .parse()
        .map_err(|e| format!("{url:?} is not a URL: {e}"))?;
    let https = match uri.scheme_str() {
        Some(s) if s.eq_ignore_ascii_case("https") => true,
        Some(s) if s.eq_ignore_ascii_case("http") => false,
        _ => {
            return Err(format!(
                "{url:?}: only http:// and https:// URLs can be fetched"
            ));
        }
    };
    let authority = uri
        .authority()
        .ok_or_else(|| format!("{url:?} has no host"))?
        .clone();
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let port = authority.port_u16().unwrap_or(if https { 443 } else { 80 });
    let tcp = tokio::net::TcpStream::connect((host.as_str(), port))
        .await
        .map_err(|e| format!("GET {url}: cannot connect to {host}:{port}: {e}"))?;
    let io: Box<dyn Io> = if https {
        let name = ServerName::try_from(host.clone())
            .map_err(|_| format!("{url:?}: {host:?} is not a valid TLS server name"))?;
        let stream = tokio_rustls::TlsConnector::from(tls.clone())
            .connect(name, tcp)
            .await
            .map_err(|e| format!("GET {url}: TLS handshake with {host}:{port} failed: {e}"))?;
        Box::new(stream)
    } else {
        Box::new(tcp)
    };
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| format!("GET {url}: {e}"))?;
    let conn = tokio::spawn(conn);
    let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let req = http::Request::get(path)
        .header(http::header::HOST, authority.as_str())
        .header(http::header::USER_AGENT, "weft-control")
        .header(http::header::ACCEPT, "application/json")
        .body(Empty::<Bytes>::new())
        .map_err(|e| format!("GET {url}: {e}"))?;
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| format!("GET {url}: {e}"))?;
    let status = resp.status();
    if status.is_redirection()
        && let Some(loc) = resp
            .headers()
            .get(http::header::LOCATION)
            .and_then(|l| l.to_str().ok())
    {
        conn.abort();
        let next = if loc.starts_with('/') {
            format!(
                "{}://{}{loc}",
                uri.scheme_str().unwrap_or("http"),
                authority
            )
        } else {
            loc.to_string()
        };
        return Ok(Fetched::Redirect(next));
    }
    let body = Limited::new(resp.into_body(), MAX_BODY)
        .collect()
        .await
        .map_err(|e| format!("GET {url}: reading the body: {e}"))?
        .to_bytes();
    conn.abort();
    if !status.is_success() {
        let mut message = format!("{:?}", String::from_utf8_lossy(&body));
        if message.len() > 100 {
            let mut cut = 100;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
            message.push_str("(truncated)");
        }
        return Err(format!(
            "GET {url}: status {}, message {message}",
            status.as_u16()
        ));
    }
    Ok(Fetched::Body(body.to_vec()))
}

#[cfg(test)]
#[path = "jwks_tests.rs"]
mod tests;
