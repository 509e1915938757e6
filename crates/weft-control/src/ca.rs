//! Who is asking for a certificate: off Kubernetes, the caller presents the credential that
//! `weft control token` issued for its WorkloadEntry (`authorization: Bearer weft1.…`); the
//! identity is the WorkloadEntry's service account in its namespace. On Kubernetes, any other
//! bearer token is the pod's ServiceAccount token, which a [`TokenReviewer`] (the API server's
//! TokenReview) turns into a namespace and service account. Never what the CSR says.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use arc_swap::ArcSwap;
use tonic::Status;
use weft_identity::{SpiffeId, TokenAuthority};

use crate::push::PushContext;

/// A Kubernetes service account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceAccount {
    pub namespace: String,
    pub name: String,
}

/// Tells whose a bearer token is (Kubernetes: a TokenReview for the audience `istio-ca`).
pub trait TokenReviewer: Send + Sync + 'static {
    fn review(
        &self,
        token: &str,
    ) -> Pin<Box<dyn Future<Output = Result<ServiceAccount, Status>> + Send + 'static>>;
}

/// The prefix of the credentials `weft control token` issues.
const WEFT_CREDENTIAL_PREFIX: &str = "weft1.";

#[derive(Clone)]
pub struct WorkloadAuthenticator {
    pub tokens: Arc<TokenAuthority>,
    pub push: Arc<ArcSwap<PushContext>>,
    /// For bearer tokens that are not Weft credentials (Kubernetes ServiceAccount tokens).
    pub reviewer: Option<Arc<dyn TokenReviewer>>,
}

impl WorkloadAuthenticator {
    /// The SPIFFE ID a credential stands for.
    pub fn identity_for_token(&self, token: &str) -> Result<SpiffeId, Status> {
        let wl = self
            .tokens
            .verify(token)
            .map_err(|e| Status::unauthenticated(format!("credential refused: {e}")))?;
        let push = self.push.load();
        let Some(w) = push.registry.workload(&wl.namespace, &wl.name) else {
            return Err(Status::permission_denied(format!(
                "credential is for workload {}/{}, but no WorkloadEntry {}/{} exists; add it to the config directory",
                wl.namespace, wl.name, wl.namespace, wl.name
            )));
        };
        SpiffeId::new(push.trust_domain(), &w.namespace, &w.service_account).map_err(|e| {
            Status::internal(format!(
                "cannot form the SPIFFE ID of {}/{}: {e}",
                wl.namespace, wl.name
            ))
        })
    }
}

impl weft_identity::Authenticator for WorkloadAuthenticator {
    fn authenticate(
        &self,
        metadata: &tonic::metadata::MetadataMap,
        _peer_certs: Option<&[rustls_pki_types::CertificateDer<'static>]>,
    ) -> impl Future<Output = Result<SpiffeId, Status>> + Send {
        let token = weft_identity::bearer_token(metadata).map(str::to_string);
        let this = self.clone();
        async move {
            let token = token.ok_or_else(|| {
                tracing::warn!("certificate request without a credential refused");
                Status::unauthenticated(
                    "no credential: send `authorization: Bearer <token>` (weft proxy --token-file: a credential from `weft control token`, or on Kubernetes the pod's ServiceAccount token for audience istio-ca)",
                )
            })?;
            let result = match &this.reviewer {
                Some(reviewer) if !token.starts_with(WEFT_CREDENTIAL_PREFIX) => {
                    let sa = reviewer.review(&token).await;
                    sa.and_then(|sa| {
                        let push = this.push.load();
                        SpiffeId::new(push.trust_domain(), &sa.namespace, &sa.name).map_err(|e| {
                            Status::internal(format!(
                                "cannot form the SPIFFE ID of service account {}/{}: {e}",
                                sa.namespace, sa.name
                            ))
                        })
                    })
                }
                _ => this.identity_for_token(&token),
            };
            result.inspect_err(|status| {
                tracing::warn!(reason = %status.message(), "certificate request refused");
            })
        }
    }
}
