//! The workload identity from an SDS server (Envoy's `SecretDiscoveryService/StreamSecrets`
//! over a unix socket), as Envoy gets it from a SPIRE agent in Istio 1.14: when
//! `/var/run/secrets/workload-spiffe-uds/socket` is served, the certificate (`default`) and
//! the trust bundle (`ROOTCA`) come from it and the Istio CA is never asked.
//!
//! [`run`] keeps one stream open, asks for both secrets, ACKs what it can use and NACKs
//! (with the reason) what it cannot, follows the sets the server pushes (a SPIRE agent sends
//! the whole set at each rotation), and publishes each complete identity to an
//! [`IdentityStore`]. When the server refuses (a SPIRE agent answers `InvalidArgument` until
//! it has an entry for the caller) or goes away, the current identity stays and the stream is
//! reopened with backoff; the store records why for readiness messages.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3::{DataSource, Node, data_source};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    CertificateValidationContext, Secret, SpiffeCertValidatorConfig, TlsCertificate, secret,
};
use envoy_types::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use envoy_types::pb::envoy::service::secret::v3::secret_discovery_service_client::SecretDiscoveryServiceClient;
use envoy_types::pb::google::rpc::Status as RpcStatus;
use prost::Message;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::error::IdentityError;
use crate::manager::{BACKOFF_INITIAL, Backoff, Identity, IdentityStore};
use crate::svid::{Svid, TrustBundle};

/// Where Istio (and the SPIRE CSI driver) mount the SDS socket of the workload identity
/// provider; pilot-agent's `WorkloadIdentitySocketPath`.
pub const WORKLOAD_SPIFFE_UDS: &str = "/var/run/secrets/workload-spiffe-uds/socket";
/// The workload certificate's secret name (Istio's `default`).
pub const DEFAULT_CERT: &str = "default";
/// The trust bundle's secret name (Istio's `ROOTCA`).
pub const ROOT_CA: &str = "ROOTCA";
/// The type URL of SDS resources.
pub const SECRET_TYPE: &str =
    "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret";
/// The type URL of Envoy's SPIFFE certificate validator configuration.
pub const SPIFFE_VALIDATOR_TYPE: &str =
    "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.SPIFFECertValidatorConfig";
/// The name of Envoy's SPIFFE certificate validator extension.
pub const SPIFFE_VALIDATOR: &str = "envoy.tls.cert_validator.spiffe";
/// Longest delay between two attempts to (re)open the stream: the server is local.
pub const SDS_BACKOFF_MAX: Duration = Duration::from_secs(10);

/// Where the SDS server is and who asks.
#[derive(Clone, Debug)]
pub struct SdsConfig {
    /// The unix socket of the SDS server.
    pub socket: PathBuf,
    /// The node sent on the first request of each stream (its id and cluster).
    pub node: Node,
}

/// Whether something accepts connections on the unix socket at `path` now.
pub async fn is_served(path: &Path) -> bool {
    tokio::net::UnixStream::connect(path).await.is_ok()
}

/// Follows the SDS server for ever, publishing identities to `store`.
pub async fn run(config: SdsConfig, store: IdentityStore) {
    let mut backoff = Backoff::new(BACKOFF_INITIAL, SDS_BACKOFF_MAX);
    let mut held = Held::default();
    loop {
        let error = match session(&config, &store, &mut held, &mut backoff).await {
            Ok(()) => IdentityError::SdsStreamClosed {
                socket: config.socket.clone(),
            },
            Err(e) => e,
        };
        let delay = backoff.next_delay();
        let source = format!("the SDS server at {}", config.socket.display());
        crate::manager::report_failure(&store, &error.to_string(), delay, &source);
        tokio::time::sleep(delay).await;
    }
}

/// The secrets accepted so far (kept across streams).
#[derive(Default)]
struct Held {
    svid: Option<Svid>,
    bundle: Option<TrustBundle>,
}

fn request(
    node: Option<Node>,
    version: &str,
    nonce: &str,
    error: Option<String>,
) -> DiscoveryRequest {
    DiscoveryRequest {
        version_info: version.to_string(),
        node,
        resource_names: vec![DEFAULT_CERT.to_string(), ROOT_CA.to_string()],
        type_url: SECRET_TYPE.to_string(),
        response_nonce: nonce.to_string(),
        error_detail: error.map(|message| RpcStatus {
            code: tonic::Code::InvalidArgument as i32,
            message,
            details: Vec::new(),
        }),
        ..Default::default()
    }
}

async fn session(
    config: &SdsConfig,
    store: &IdentityStore,
    held: &mut Held,
    backoff: &mut Backoff,
) -> Result<(), IdentityError> {
    let socket = &config.socket;
    let closed = || IdentityError::SdsStreamClosed {
        socket: socket.clone(),
    };
    let channel =
        weft_xds::connect_unix(socket)
            .await
            .map_err(|source| IdentityError::SdsConnect {
                socket: socket.clone(),
                source,
            })?;
    let mut client = SecretDiscoveryServiceClient::new(channel);
    let (tx, rx) = mpsc::channel(4);
    let first = request(Some(config.node.clone()), "", "", None);
    tx.send(first).await.map_err(|_| closed())?;
    let mut responses = client
        .stream_secrets(ReceiverStream::new(rx))
        .await
        .map_err(|s| refused(socket, &s))?
        .into_inner();
    let mut accepted = String::new();
    loop {
        let resp = match responses.message().await {
            Ok(Some(resp)) => resp,
            Ok(None) => return Ok(()),
            Err(status) => return Err(refused(socket, &status)),
        };
        let reply = match apply(&resp, held) {
            Ok(identity) => {
                accepted.clone_from(&resp.version_info);
                if let Some(identity) = identity {
                    let svid = &identity.svid;
                    tracing::info!(
                        id = %svid.id,
                        lifetime_secs = svid.lifetime().as_secs(),
                        trust_domains = ?identity.bundle.domains.keys().collect::<Vec<_>>(),
                        version = %resp.version_info,
                        "workload certificate and trust bundle from the SDS server"
                    );
                    store.set(Arc::new(identity));
                    backoff.reset();
                }
                request(None, &accepted, &resp.nonce, None)
            }
            Err(error) => {
                tracing::error!(socket = %socket.display(), version = %resp.version_info, %error,
                    "rejecting secrets from the SDS server; keeping the current ones");
                store.set_error(error.to_string());
                request(None, &accepted, &resp.nonce, Some(error.to_string()))
            }
        };
        tx.send(reply).await.map_err(|_| closed())?;
    }
}

fn refused(socket: &Path, status: &tonic::Status) -> IdentityError {
    IdentityError::SdsRefused {
        socket: socket.to_path_buf(),
        code: status.code(),
        message: status.message().to_string(),
    }
}

/// Takes what a response carries into `held`; returns the identity to publish when the
/// certificate and bundle are both known and something changed. Nothing is taken from a
/// response with an unusable secret.
fn apply(resp: &DiscoveryResponse, held: &mut Held) -> Result<Option<Identity>, IdentityError> {
    read_secrets(resp, held).map_err(IdentityError::SdsSecret)
}

fn read_secrets(resp: &DiscoveryResponse, held: &mut Held) -> Result<Option<Identity>, String> {
    let mut svid = None;
    let mut bundle = None;
    for any in &resp.resources {
        if any.type_url != SECRET_TYPE {
            return Err(format!("unexpected resource type {:?}", any.type_url));
        }
        let secret = Secret::decode(any.value.as_slice())
            .map_err(|e| format!("cannot decode a Secret: {e}"))?;
        match (secret.name.as_str(), &secret.r#type) {
            (DEFAULT_CERT, Some(secret::Type::TlsCertificate(tls))) => {
                svid = Some(svid_of(tls).map_err(|e| format!("secret {DEFAULT_CERT:?}: {e}"))?);
            }
            (ROOT_CA, Some(secret::Type::ValidationContext(vc))) => {
                bundle = Some(bundle_of(vc).map_err(|e| format!("secret {ROOT_CA:?}: {e}"))?);
            }
            (DEFAULT_CERT | ROOT_CA, _) => {
                return Err(format!(
                    "secret {:?} is not of the expected kind (a TLS certificate for {DEFAULT_CERT:?}, a validation context for {ROOT_CA:?})",
                    secret.name
                ));
            }
            // Other names (a SPIRE agent's federated bundles by trust domain) are not asked for.
            _ => {}
        }
    }
    let changed = svid.is_some() || bundle.is_some();
    let svid = svid.or_else(|| held.svid.clone());
    let bundle = bundle.or_else(|| held.bundle.clone());
    let result = match (&svid, &bundle) {
        (Some(svid), Some(bundle)) if changed => {
            let identity = Identity {
                svid: svid.clone(),
                bundle: bundle.clone(),
            };
            crate::tls::check_identity(&identity).map_err(|e| e.to_string())?;
            Some(identity)
        }
        _ => None,
    };
    // Only what is usable is kept.
    held.svid = svid;
    held.bundle = bundle;
    Ok(result)
}

fn svid_of(tls: &TlsCertificate) -> Result<Svid, String> {
    let chain = text(tls.certificate_chain.as_ref(), "certificate_chain")?;
    let key = text(tls.private_key.as_ref(), "private_key")?;
    Svid::from_pems(&chain, &key).map_err(|e| e.to_string())
}

fn bundle_of(vc: &CertificateValidationContext) -> Result<TrustBundle, String> {
    if let Some(custom) = &vc.custom_validator_config {
        if custom.name != SPIFFE_VALIDATOR {
            return Err(format!(
                "custom validator {:?} is not supported (only {SPIFFE_VALIDATOR})",
                custom.name
            ));
        }
        let config = custom
            .typed_config
            .as_ref()
            .filter(|a| a.type_url == SPIFFE_VALIDATOR_TYPE)
            .ok_or_else(|| format!("{SPIFFE_VALIDATOR} needs a SPIFFECertValidatorConfig"))?;
        let config = SpiffeCertValidatorConfig::decode(config.value.as_slice())
            .map_err(|e| format!("cannot decode the SPIFFECertValidatorConfig: {e}"))?;
        let domains = config
            .trust_domains
            .iter()
            .map(|td| {
                let pem = text(td.trust_bundle.as_ref(), "trust_bundle")?;
                Ok((td.name.clone(), pem))
            })
            .collect::<Result<Vec<_>, String>>()?;
        return TrustBundle::from_domain_pems(
            domains.iter().map(|(n, p)| (n.as_str(), p.as_str())),
        )
        .map_err(|e| e.to_string());
    }
    let pem = text(vc.trusted_ca.as_ref(), "trusted_ca")?;
    TrustBundle::from_pem(&pem).map_err(|e| e.to_string())
}

/// The text of an inline (or file) data source.
fn text(source: Option<&DataSource>, field: &str) -> Result<String, String> {
    use data_source::Specifier as S;
    match source.and_then(|s| s.specifier.as_ref()) {
        Some(S::InlineBytes(b)) => {
            String::from_utf8(b.clone()).map_err(|_| format!("{field} is not UTF-8 PEM"))
        }
        Some(S::InlineString(s)) => Ok(s.clone()),
        Some(S::Filename(path)) => {
            std::fs::read_to_string(path).map_err(|e| format!("{field}: cannot read {path}: {e}"))
        }
        Some(S::EnvironmentVariable(var)) => std::env::var(var)
            .map_err(|_| format!("{field}: environment variable {var} is not set")),
        None => Err(format!("{field} is missing")),
    }
}

#[cfg(test)]
#[path = "sds_tests.rs"]
mod tests;
