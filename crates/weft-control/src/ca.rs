//! Who is asking for a certificate: off Kubernetes, the caller presents the credential that
//! `weft control token` issued for its WorkloadEntry (`authorization: Bearer weft1.…`); the
//! identity is the WorkloadEntry's service account in its namespace, never what the CSR says.

use std::sync::Arc;

use arc_swap::ArcSwap;
use tonic::Status;
use weft_identity::{SpiffeId, TokenAuthority};

use crate::push::PushContext;

#[derive(Clone)]
pub struct WorkloadAuthenticator {
    pub tokens: Arc<TokenAuthority>,
    pub push: Arc<ArcSwap<PushContext>>,
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
    ) -> Result<SpiffeId, Status> {
        let token = weft_identity::bearer_token(metadata).ok_or_else(|| {
            tracing::warn!("certificate request without a credential refused");
            Status::unauthenticated(
                "no credential: send `authorization: Bearer <token>` (weft proxy --token-file; issue one with `weft control token`)",
            )
        })?;
        self.identity_for_token(token).inspect_err(|status| {
            tracing::warn!(reason = %status.message(), "certificate request refused");
        })
    }
}
