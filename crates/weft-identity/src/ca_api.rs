//! The Istio CA gRPC API, `istio.v1.auth.IstioCertificateService/CreateCertificate`:
//! a server ([`CaService`], for `weft control` on ports 15010/15012) and a client
//! ([`CaClient`], for `weft proxy`). Wire-compatible with istiod and pilot-agent.
//!
//! The identity of an issued certificate always comes from the caller (bearer credential or
//! client certificate, via an [`Authenticator`]), never from the CSR.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use rustls_pki_types::CertificateDer;
use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

use crate::ca::CertificateAuthority;
use crate::error::IdentityError;
use crate::manager::CertSource;
use crate::spiffe::SpiffeId;
use crate::tls::TlsConnInfo;

/// Generated protobuf and gRPC types of `istio.v1.auth`.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod pb {
    tonic::include_proto!("istio.v1.auth");
}

pub use pb::istio_certificate_service_client::IstioCertificateServiceClient;
pub use pb::istio_certificate_service_server::{
    IstioCertificateService, IstioCertificateServiceServer,
};
pub use pb::{IstioCertificateRequest, IstioCertificateResponse};

/// Default workload certificate lifetime (Istio `DEFAULT_WORKLOAD_CERT_TTL`).
pub const DEFAULT_WORKLOAD_CERT_TTL: Duration = Duration::from_secs(24 * 3600);
/// Longest workload certificate lifetime a caller may request (Istio `MAX_WORKLOAD_CERT_TTL`).
pub const MAX_WORKLOAD_CERT_TTL: Duration = Duration::from_secs(90 * 24 * 3600);

/// Decides who is calling the CA. Implemented by the control plane (bearer credential →
/// `WorkloadEntry` → service account, or a client certificate for renewals).
pub trait Authenticator: Send + Sync + 'static {
    /// Returns the identity to issue for, or a gRPC error (normally `Unauthenticated`); may
    /// ask another service (Kubernetes' TokenReview).
    fn authenticate(
        &self,
        metadata: &MetadataMap,
        peer_certs: Option<&[CertificateDer<'static>]>,
    ) -> impl std::future::Future<Output = Result<SpiffeId, Status>> + Send;
}

/// The bearer token of an `authorization: Bearer <token>` header, if present.
pub fn bearer_token(metadata: &MetadataMap) -> Option<&str> {
    let value = metadata.get("authorization")?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// The CA gRPC service.
pub struct CaService<A: Authenticator> {
    ca: Arc<CertificateAuthority>,
    auth: A,
    default_ttl: Duration,
    max_ttl: Duration,
}

impl<A: Authenticator> CaService<A> {
    /// A service issuing from `ca`; a request for 0 seconds gets `default_ttl`, more than
    /// `max_ttl` is refused.
    pub fn new(
        ca: Arc<CertificateAuthority>,
        auth: A,
        default_ttl: Duration,
        max_ttl: Duration,
    ) -> Self {
        Self {
            ca,
            auth,
            default_ttl,
            max_ttl,
        }
    }

    fn requested_ttl(&self, seconds: i64) -> Result<Duration, Status> {
        match u64::try_from(seconds) {
            Ok(0) => Ok(self.default_ttl),
            Ok(s) if Duration::from_secs(s) > self.max_ttl => {
                Err(Status::invalid_argument(format!(
                    "requested TTL {s}s is greater than the max allowed TTL {}s",
                    self.max_ttl.as_secs()
                )))
            }
            Ok(s) => Ok(Duration::from_secs(s)),
            Err(_) => Err(Status::invalid_argument(format!(
                "requested TTL {seconds}s is negative"
            ))),
        }
    }
}

/// Wraps a [`CaService`] in the generated tonic server.
pub fn ca_server<A: Authenticator>(
    svc: CaService<A>,
) -> IstioCertificateServiceServer<CaService<A>> {
    IstioCertificateServiceServer::new(svc)
}

#[tonic::async_trait]
impl<A: Authenticator> IstioCertificateService for CaService<A> {
    async fn create_certificate(
        &self,
        request: Request<IstioCertificateRequest>,
    ) -> Result<Response<IstioCertificateResponse>, Status> {
        let peer_certs = request
            .extensions()
            .get::<TlsConnInfo>()
            .and_then(|i| i.peer_certs.clone());
        let id = self
            .auth
            .authenticate(request.metadata(), peer_certs.as_deref().map(Vec::as_slice))
            .await?;
        let req = request.into_inner();
        let ttl = self.requested_ttl(req.validity_duration)?;
        let cert_chain = self.ca.sign_csr(&req.csr, &id, ttl).map_err(|e| match e {
            IdentityError::InvalidCsr(_) | IdentityError::InvalidTtl(_) => {
                tracing::warn!(%id, error = %e, "certificate request refused");
                Status::invalid_argument(e.to_string())
            }
            IdentityError::CsrIdentityMismatch { .. } => {
                tracing::warn!(%id, error = %e, "certificate request for another identity refused");
                Status::permission_denied(e.to_string())
            }
            other => {
                tracing::error!(%id, error = %other, "certificate signing failed");
                Status::internal(format!("CSR signing error ({other})"))
            }
        })?;
        tracing::info!(%id, ttl_secs = ttl.as_secs(), "issued workload certificate");
        Ok(Response::new(IstioCertificateResponse { cert_chain }))
    }
}

/// Client of the Istio CA API, authenticating with a bearer credential.
#[derive(Clone, Debug)]
pub struct CaClient {
    client: IstioCertificateServiceClient<Channel>,
    token: String,
}

impl CaClient {
    /// A client over `channel` sending `authorization: Bearer <token>`.
    pub fn new(channel: Channel, token: String) -> Self {
        Self {
            client: IstioCertificateServiceClient::new(channel),
            token,
        }
    }

    /// Sends a CSR and returns the chain `[leaf, intermediates…, root]`.
    pub async fn create_certificate(
        &self,
        csr_pem: &str,
        ttl: Duration,
    ) -> Result<Vec<String>, IdentityError> {
        let mut request = Request::new(IstioCertificateRequest {
            csr: csr_pem.to_string(),
            validity_duration: i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX),
            metadata: None,
        });
        let header = MetadataValue::try_from(format!("Bearer {}", self.token)).map_err(|_| {
            IdentityError::CredentialMalformed(
                "it contains characters not allowed in a gRPC header".to_string(),
            )
        })?;
        request.metadata_mut().insert("authorization", header);
        let response = self
            .client
            .clone()
            .create_certificate(request)
            .await
            .map_err(|s| IdentityError::CaRequest {
                code: s.code(),
                message: s.message().to_string(),
            })?;
        let chain = response.into_inner().cert_chain;
        if chain.is_empty() {
            return Err(IdentityError::InvalidCertificate(
                "the CA returned an empty certificate chain".to_string(),
            ));
        }
        Ok(chain)
    }
}

impl CertSource for CaClient {
    fn fetch(
        &self,
        csr_pem: String,
        ttl: Duration,
    ) -> BoxFuture<'static, Result<Vec<String>, IdentityError>> {
        let client = self.clone();
        Box::pin(async move { client.create_certificate(&csr_pem, ttl).await })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::svid::{Svid, generate_key_and_csr};
    use tokio_stream::wrappers::TcpListenerStream;

    /// Accepts exactly one bearer token, for one identity.
    struct OneToken;

    impl Authenticator for OneToken {
        fn authenticate(
            &self,
            metadata: &MetadataMap,
            peer_certs: Option<&[CertificateDer<'static>]>,
        ) -> impl std::future::Future<Output = Result<SpiffeId, Status>> + Send {
            assert!(peer_certs.is_none(), "plaintext test server");
            std::future::ready(match bearer_token(metadata) {
                Some("good-token") => SpiffeId::parse("spiffe://cluster.local/ns/prod/sa/api")
                    .map_err(|e| Status::internal(e.to_string())),
                Some(_) => Err(Status::unauthenticated("unknown credential")),
                None => Err(Status::unauthenticated("no credential")),
            })
        }
    }

    async fn start_server() -> (Channel, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let ca =
            Arc::new(CertificateAuthority::load_or_create(dir.path(), "cluster.local").unwrap());
        let svc = CaService::new(
            ca,
            OneToken,
            DEFAULT_WORKLOAD_CERT_TTL,
            Duration::from_secs(48 * 3600),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(ca_server(svc))
                .serve_with_incoming(TcpListenerStream::new(listener)),
        );
        let channel = Channel::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        (channel, dir)
    }

    #[test]
    fn bearer_token_parsing() {
        let mut md = MetadataMap::new();
        assert_eq!(bearer_token(&md), None);
        md.insert("authorization", "Bearer abc".parse().unwrap());
        assert_eq!(bearer_token(&md), Some("abc"));
        md.insert("authorization", "bearer  xyz ".parse().unwrap());
        assert_eq!(bearer_token(&md), Some("xyz"));
        md.insert("authorization", "Basic abc".parse().unwrap());
        assert_eq!(bearer_token(&md), None);
        md.insert("authorization", "Bearer ".parse().unwrap());
        assert_eq!(bearer_token(&md), None);
    }

    #[tokio::test]
    async fn create_certificate_end_to_end() {
        let (channel, _dir) = start_server().await;

        // Valid credential: a chain for the caller's identity.
        let client = CaClient::new(channel.clone(), "good-token".to_string());
        let (key, csr) = generate_key_and_csr().unwrap();
        let chain = client
            .create_certificate(&csr, Duration::from_secs(3600))
            .await
            .unwrap();
        assert_eq!(chain.len(), 2);
        crate::ca::tests::verify_chain(&chain).unwrap();
        let svid = Svid::from_chain_pems(&chain, key).unwrap();
        assert_eq!(svid.id.to_string(), "spiffe://cluster.local/ns/prod/sa/api");
        assert_eq!(svid.lifetime().as_secs(), 3600 + 60);

        // validity_duration 0: the default 24h.
        let (key, csr) = generate_key_and_csr().unwrap();
        let chain = client
            .create_certificate(&csr, Duration::ZERO)
            .await
            .unwrap();
        let svid = Svid::from_chain_pems(&chain, key).unwrap();
        assert_eq!(svid.lifetime().as_secs(), 24 * 3600 + 60);

        // More than the max TTL: InvalidArgument like Istio.
        let err = client
            .create_certificate(&csr, Duration::from_secs(49 * 3600))
            .await
            .unwrap_err();
        assert!(
            matches!(&err, IdentityError::CaRequest { code: tonic::Code::InvalidArgument, message } if message.contains("max allowed TTL")),
            "{err}"
        );

        // A bad CSR: InvalidArgument.
        let err = client
            .create_certificate("not a csr", Duration::from_secs(60))
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                IdentityError::CaRequest {
                    code: tonic::Code::InvalidArgument,
                    ..
                }
            ),
            "{err}"
        );

        // A CSR for another identity: PermissionDenied.
        let other = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = rcgen::CertificateParams::new(vec![]).unwrap();
        params.subject_alt_names.push(rcgen::SanType::URI(
            "spiffe://cluster.local/ns/prod/sa/admin"
                .try_into()
                .unwrap(),
        ));
        let foreign = params.serialize_request(&other).unwrap().pem().unwrap();
        let err = client
            .create_certificate(&foreign, Duration::from_secs(60))
            .await
            .unwrap_err();
        assert!(
            matches!(&err, IdentityError::CaRequest { code: tonic::Code::PermissionDenied, message } if message.contains("sa/admin")),
            "{err}"
        );

        // Wrong credential: Unauthenticated, through the CertSource interface too.
        let bad = CaClient::new(channel, "stolen".to_string());
        let err = bad
            .fetch(csr.clone(), Duration::from_secs(60))
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                IdentityError::CaRequest {
                    code: tonic::Code::Unauthenticated,
                    ..
                }
            ),
            "{err}"
        );
    }
}
