//! Workload certificate rotation (pilot-agent / ztunnel style).
//!
//! [`IdentityManager`] asks a [`CertSource`] (normally the Istio CA API through [`CaClient`])
//! for a certificate at start, with a fresh key each time, and again at 50% of the lifetime
//! (Istio's `SECRET_GRACE_PERIOD_RATIO`). On failure it keeps the current identity and retries
//! with jittered exponential backoff. The current identity is published on a
//! `tokio::sync::watch` channel; other sources (an SDS client for SPIRE) can publish on the
//! same channel through an [`IdentityStore`].
//!
//! [`CaClient`]: crate::ca_api::CaClient

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures::future::BoxFuture;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::error::IdentityError;
use crate::svid::{Svid, TrustBundle, generate_key_and_csr};

/// First retry delay after a failed fetch.
pub const BACKOFF_INITIAL: Duration = Duration::from_millis(200);
/// Longest retry delay.
pub const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// Shortest delay between two successful fetches, whatever the certificate says.
pub const MIN_REFRESH_DELAY: Duration = Duration::from_millis(100);

/// Something that turns a CSR into a certificate chain `[leaf, intermediates…, root]`.
pub trait CertSource: Send + Sync + 'static {
    /// Requests a certificate for `csr_pem` valid for `ttl`.
    fn fetch(
        &self,
        csr_pem: String,
        ttl: Duration,
    ) -> BoxFuture<'static, Result<Vec<String>, IdentityError>>;
}

/// A workload's current identity: its SVID and the roots it trusts.
#[derive(Clone, Debug)]
pub struct Identity {
    /// Certificate chain and key.
    pub svid: Svid,
    /// Trusted roots for verifying peers.
    pub bundle: TrustBundle,
}

impl Identity {
    /// Builds an identity from a CA response and the CSR's key.
    pub fn from_chain_pems(
        chain: &[String],
        key: rustls_pki_types::PrivateKeyDer<'static>,
    ) -> Result<Self, IdentityError> {
        Ok(Self {
            bundle: TrustBundle::from_chain_pems(chain)?,
            svid: Svid::from_chain_pems(chain, key)?,
        })
    }
}

/// When to renew a certificate: halfway through its lifetime.
pub fn refresh_at(not_before: SystemTime, not_after: SystemTime) -> SystemTime {
    let life = not_after.duration_since(not_before).unwrap_or_default();
    not_before + life / 2
}

/// How long to wait before renewing, given the current time: until [`refresh_at`], or, when
/// that is already past (certificates are back-dated for clock skew, or the clock jumped),
/// half of the remaining lifetime; never less than [`MIN_REFRESH_DELAY`].
pub fn refresh_delay(not_before: SystemTime, not_after: SystemTime, now: SystemTime) -> Duration {
    let delay = match refresh_at(not_before, not_after).duration_since(now) {
        Ok(d) if !d.is_zero() => d,
        _ => not_after.duration_since(now).unwrap_or_default() / 2,
    };
    delay.max(MIN_REFRESH_DELAY)
}

/// Exponential backoff with jitter: each delay is drawn from `[d/2, d]`, `d` doubling from
/// `initial` up to `max`.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    /// A backoff starting at `initial` and capped at `max`.
    pub fn new(initial: Duration, max: Duration) -> Self {
        Self {
            initial,
            max,
            next: initial,
        }
    }

    /// The next delay (jittered); doubles the base for the following call.
    pub fn next_delay(&mut self) -> Duration {
        let base = self.next;
        self.next = (base * 2).min(self.max);
        let mut b = [0u8; 4];
        let frac = match aws_lc_rs::rand::fill(&mut b) {
            Ok(()) => f64::from(u32::from_le_bytes(b)) / f64::from(u32::MAX),
            Err(_) => 1.0,
        };
        base.mul_f64(0.5 + 0.5 * frac)
    }

    /// Back to the initial delay after a success.
    pub fn reset(&mut self) {
        self.next = self.initial;
    }
}

/// The publishing side of the identity channel. Clone it to let another source (e.g. an SDS
/// client talking to SPIRE) publish identities.
#[derive(Clone, Debug)]
pub struct IdentityStore {
    tx: watch::Sender<Option<Arc<Identity>>>,
    /// The source's last failure, cleared by the next identity (for readiness messages).
    error: Arc<std::sync::Mutex<Option<String>>>,
}

impl IdentityStore {
    /// A store with no identity yet, and a receiver for it.
    pub fn new() -> (Self, watch::Receiver<Option<Arc<Identity>>>) {
        let (tx, rx) = watch::channel(None);
        (
            Self {
                tx,
                error: Arc::default(),
            },
            rx,
        )
    }

    /// Publishes a new current identity.
    pub fn set(&self, identity: Arc<Identity>) {
        self.tx.send_replace(Some(identity));
        if let Ok(mut e) = self.error.lock() {
            *e = None;
        }
    }

    /// Records why the source could not give an identity (kept until the next one).
    pub fn set_error(&self, error: impl Into<String>) {
        if let Ok(mut e) = self.error.lock() {
            *e = Some(error.into());
        }
    }

    /// The source's last failure since the last identity, if any.
    pub fn last_error(&self) -> Option<String> {
        self.error.lock().ok().and_then(|e| e.clone())
    }

    /// The current identity, if any.
    pub fn current(&self) -> Option<Arc<Identity>> {
        self.tx.borrow().clone()
    }

    /// Another receiver for the identity channel.
    pub fn subscribe(&self) -> watch::Receiver<Option<Arc<Identity>>> {
        self.tx.subscribe()
    }
}

/// Handle of the rotation task; dropping it stops the rotation.
#[derive(Debug)]
pub struct IdentityManager {
    store: IdentityStore,
    task: JoinHandle<()>,
}

impl IdentityManager {
    /// Spawns the rotation task on the current tokio runtime. `ttl` is the requested lifetime.
    pub fn spawn(
        source: Arc<dyn CertSource>,
        ttl: Duration,
    ) -> (Self, watch::Receiver<Option<Arc<Identity>>>) {
        let (store, rx) = IdentityStore::new();
        let task = tokio::spawn(rotate(source, ttl, store.clone()));
        (Self { store, task }, rx)
    }

    /// The store the manager publishes to (also usable by other sources).
    pub fn store(&self) -> IdentityStore {
        self.store.clone()
    }

    /// The current identity, if any.
    pub fn current(&self) -> Option<Arc<Identity>> {
        self.store.current()
    }
}

impl Drop for IdentityManager {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn fetch_identity(source: &dyn CertSource, ttl: Duration) -> Result<Identity, IdentityError> {
    let (key, csr) = generate_key_and_csr()?;
    let chain = source.fetch(csr, ttl).await?;
    Identity::from_chain_pems(&chain, key)
}

/// Records and logs why a source gave no certificate: whether the current one still serves,
/// has expired, or there is none yet. `source` names it for the logs ("the CA", …).
pub(crate) fn report_failure(store: &IdentityStore, error: &str, delay: Duration, source: &str) {
    store.set_error(error);
    let retry_in_ms = delay.as_millis() as u64;
    match store.current() {
        Some(cur) if cur.svid.not_after <= SystemTime::now() => tracing::error!(
            %error, retry_in_ms, id = %cur.svid.id, source,
            "workload certificate expired and no new one came; mTLS fails until one does"
        ),
        Some(_) => tracing::warn!(
            %error, retry_in_ms, source,
            "workload certificate renewal failed; keeping the current certificate"
        ),
        None => {
            tracing::warn!(%error, retry_in_ms, source, "cannot get a workload certificate yet")
        }
    }
}

async fn rotate(source: Arc<dyn CertSource>, ttl: Duration, store: IdentityStore) {
    let mut backoff = Backoff::new(BACKOFF_INITIAL, BACKOFF_MAX);
    loop {
        let delay = match fetch_identity(source.as_ref(), ttl).await {
            Ok(identity) => {
                backoff.reset();
                let svid = &identity.svid;
                let delay = refresh_delay(svid.not_before, svid.not_after, SystemTime::now());
                tracing::info!(
                    id = %svid.id,
                    lifetime_secs = svid.lifetime().as_secs(),
                    refresh_in_secs = delay.as_secs_f64(),
                    "workload certificate issued"
                );
                store.set(Arc::new(identity));
                delay
            }
            Err(error) => {
                let delay = backoff.next_delay();
                report_failure(&store, &error.to_string(), delay, "the CA");
                delay
            }
        };
        tokio::time::sleep(delay).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ca::CertificateAuthority;
    use crate::spiffe::SpiffeId;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    #[test]
    fn refresh_policy() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let day = Duration::from_secs(86_400);
        assert_eq!(refresh_at(t0, t0 + day), t0 + day / 2);
        // Inverted validity: renew right away.
        assert_eq!(refresh_at(t0 + day, t0), t0 + day);
        // Normal case: wait until halfway.
        assert_eq!(refresh_delay(t0, t0 + day, t0), day / 2);
        assert_eq!(
            refresh_delay(t0, t0 + day, t0 + Duration::from_secs(3600)),
            day / 2 - Duration::from_secs(3600)
        );
        // Back-dated short certificate (not_before 60s ago, 2s left): half of what is left.
        let now = t0 + Duration::from_secs(60);
        assert_eq!(
            refresh_delay(t0, now + Duration::from_secs(2), now),
            Duration::from_secs(1)
        );
        // Expired: the floor.
        assert_eq!(refresh_delay(t0, t0 + day, t0 + 2 * day), MIN_REFRESH_DELAY);
    }

    #[test]
    fn backoff_doubles_with_jitter_and_caps() {
        let mut b = Backoff::new(Duration::from_millis(200), Duration::from_secs(30));
        let mut base = Duration::from_millis(200);
        for _ in 0..12 {
            let d = b.next_delay();
            assert!(
                d >= base / 2 && d <= base,
                "{d:?} not in [{:?}, {base:?}]",
                base / 2
            );
            base = (base * 2).min(Duration::from_secs(30));
        }
        assert_eq!(base, Duration::from_secs(30));
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(200));
    }

    /// A fake CA that issues short certificates and can be switched to fail.
    struct FakeSource {
        ca: CertificateAuthority,
        id: SpiffeId,
        failing: AtomicBool,
        calls: AtomicUsize,
    }

    impl CertSource for Arc<FakeSource> {
        fn fetch(
            &self,
            csr_pem: String,
            ttl: Duration,
        ) -> BoxFuture<'static, Result<Vec<String>, IdentityError>> {
            let this = self.clone();
            Box::pin(async move {
                this.calls.fetch_add(1, Ordering::SeqCst);
                if this.failing.load(Ordering::SeqCst) {
                    return Err(IdentityError::CaRequest {
                        code: tonic::Code::Unavailable,
                        message: "fake CA down".into(),
                    });
                }
                this.ca.sign_csr(&csr_pem, &this.id, ttl)
            })
        }
    }

    #[tokio::test]
    async fn renews_before_expiry_and_survives_failures() {
        let dir = tempfile::tempdir().unwrap();
        let fake = Arc::new(FakeSource {
            ca: CertificateAuthority::load_or_create(dir.path(), "cluster.local").unwrap(),
            id: SpiffeId::parse("spiffe://cluster.local/ns/default/sa/sleep").unwrap(),
            failing: AtomicBool::new(false),
            calls: AtomicUsize::new(0),
        });
        let (mgr, mut rx) = IdentityManager::spawn(Arc::new(fake.clone()), Duration::from_secs(2));

        rx.changed().await.unwrap();
        let first = rx.borrow_and_update().clone().unwrap();
        assert_eq!(first.svid.id, fake.id);

        // The 2-second certificate is replaced before it expires.
        tokio::time::timeout(Duration::from_secs(3), rx.changed())
            .await
            .expect("renewed in time")
            .unwrap();
        let second = rx.borrow_and_update().clone().unwrap();
        assert_ne!(second.svid.chain[0], first.svid.chain[0]);
        assert!(
            SystemTime::now() < first.svid.not_after,
            "renewed before expiry"
        );

        // The CA goes down: the current identity stays, retries continue.
        fake.failing.store(true, Ordering::SeqCst);
        let calls_before = fake.calls.load(Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(2500)).await;
        assert!(
            fake.calls.load(Ordering::SeqCst) >= calls_before + 2,
            "retries"
        );
        let kept = mgr.current().unwrap();
        assert_eq!(
            kept.svid.chain[0], second.svid.chain[0],
            "old identity kept"
        );
        assert!(
            !rx.has_changed().unwrap(),
            "nothing published while failing"
        );

        // Back up: a fresh certificate arrives.
        fake.failing.store(false, Ordering::SeqCst);
        let before = mgr.current().unwrap().svid.chain[0].clone();
        tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                rx.changed().await.unwrap();
                if rx.borrow_and_update().as_ref().unwrap().svid.chain[0] != before {
                    break;
                }
            }
        })
        .await
        .expect("recovered after the CA came back");
    }

    #[tokio::test]
    async fn external_source_can_publish() {
        let (store, mut rx) = IdentityStore::new();
        assert!(store.current().is_none());
        let dir = tempfile::tempdir().unwrap();
        let ca = CertificateAuthority::load_or_create(dir.path(), "cluster.local").unwrap();
        let id = SpiffeId::parse("spiffe://cluster.local/ns/a/sa/b").unwrap();
        let (key, csr) = generate_key_and_csr().unwrap();
        let chain = ca.sign_csr(&csr, &id, Duration::from_secs(60)).unwrap();
        store.set(Arc::new(Identity::from_chain_pems(&chain, key).unwrap()));
        rx.changed().await.unwrap();
        assert_eq!(rx.borrow().as_ref().unwrap().svid.id, id);
        assert_eq!(store.subscribe().borrow().as_ref().unwrap().svid.id, id);
    }
}
