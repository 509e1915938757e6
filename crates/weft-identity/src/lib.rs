#![forbid(unsafe_code)]
//! Workload identity for Weft: SPIFFE IDs, the mesh CA (Istio's self-signed or plug-in
//! `cacerts` layout), the Istio CA gRPC API (`istio.v1.auth.IstioCertificateService`),
//! the per-workload credential used off Kubernetes, key/CSR generation, certificate
//! rotation, the SDS client that takes the identity from a SPIRE agent instead, and rustls
//! configurations that authenticate peers by SPIFFE ID.

pub mod ca;
pub mod ca_api;
pub mod error;
pub mod jwt;
pub mod manager;
pub mod sds;
pub mod spiffe;
pub mod svid;
pub mod tls;
pub mod token;

pub use ca::CertificateAuthority;
pub use ca_api::{
    Authenticator, CaClient, CaService, IstioCertificateServiceClient,
    IstioCertificateServiceServer, bearer_token, ca_server,
};
pub use error::IdentityError;
pub use manager::{CertSource, Identity, IdentityManager, IdentityStore, refresh_at};
pub use sds::{SdsConfig, WORKLOAD_SPIFFE_UDS};
pub use spiffe::SpiffeId;
pub use svid::{CertInfo, Svid, TrustBundle, describe, generate_key_and_csr};
pub use tls::{
    ClientTlsOptions, LiveIdentity, OriginationOptions, ServerTlsOptions, SpiffeClientVerifier,
    SpiffeServerVerifier, TlsConnInfo, TlsServerStream, TlsVersion, client_config,
    origination_client_config, peer_spiffe_id, root_client_config, server_config,
    serving_cert_for_control_plane,
};
pub use token::{TokenAuthority, WorkloadRef};
