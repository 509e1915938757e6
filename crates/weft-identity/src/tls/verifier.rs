//! SPIFFE peer verifiers: webpki chain verification against the live trust bundle, then
//! the URI SAN rule. No DNS-name checks.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, OtherError, SignatureScheme,
};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

use super::LiveIdentity;
use crate::error::IdentityError;
use crate::spiffe::SPIFFE_PREFIX;
use crate::svid::{parse_cert, spiffe_uris};

pub(super) fn other_error(e: IdentityError) -> rustls::Error {
    rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(e))))
}

pub(super) fn pki_error(e: webpki::Error) -> rustls::Error {
    use webpki::Error as E;
    let ce = match e {
        E::BadDer | E::BadDerTime | E::TrailingData(_) => CertificateError::BadEncoding,
        E::CertNotValidYet { time, not_before } => {
            CertificateError::NotValidYetContext { time, not_before }
        }
        E::CertExpired { time, not_after } => CertificateError::ExpiredContext { time, not_after },
        E::InvalidCertValidity => CertificateError::Expired,
        E::UnknownIssuer => CertificateError::UnknownIssuer,
        E::InvalidSignatureForPublicKey => CertificateError::BadSignature,
        E::RequiredEkuNotFoundContext(_) => CertificateError::InvalidPurpose,
        other => CertificateError::Other(OtherError(Arc::new(other))),
    };
    rustls::Error::InvalidCertificate(ce)
}

/// Verifies `end_entity` + `intermediates` against the current bundle for `usage`, then
/// the URI SAN.
fn verify_peer(
    live: &LiveIdentity,
    end_entity: &CertificateDer<'_>,
    intermediates: &[CertificateDer<'_>],
    now: UnixTime,
    usage: webpki::KeyUsage,
    expected_ids: &[String],
    trust_domains: &[String],
) -> Result<(), rustls::Error> {
    let anchors = live.anchors()?;
    let parsed = parse_cert(end_entity.as_ref()).map_err(other_error)?;
    let uris = spiffe_uris(&parsed);
    // An X.509-SVID has exactly one SPIFFE ID: with several, a federated CA could add a local
    // identity beside its own and be verified with its own domain's roots.
    if uris.len() > 1 {
        return Err(other_error(IdentityError::PeerIdentity(format!(
            "the peer certificate has {} spiffe:// URI SANs ({uris:?}); an SVID has exactly one",
            uris.len()
        ))));
    }
    // With per-domain bundles (the SPIFFE validator), the peer's own trust domain picks the
    // roots, and being listed there is what admits a federated domain.
    let (roots, trust_domains) = if anchors.domains.is_empty() {
        (anchors.all.as_slice(), trust_domains)
    } else {
        let domain = uris.first().and_then(|u| trust_domain_of(u)).unwrap_or("");
        let roots = anchors.domains.get(domain).ok_or_else(|| {
            other_error(IdentityError::PeerIdentity(format!(
                "peer {uris:?} is from trust domain {domain:?}, which the trust bundle does not \
                 include (federate that domain with this one to accept it)"
            )))
        })?;
        (roots.as_slice(), &[][..])
    };
    let algs = live.provider.signature_verification_algorithms.all;
    let cert = webpki::EndEntityCert::try_from(end_entity).map_err(pki_error)?;
    cert.verify_for_usage(algs, roots, intermediates, now, usage, None, None)
        .map_err(pki_error)?;
    check_identity(&uris, expected_ids, trust_domains)
        .map_err(|m| other_error(IdentityError::PeerIdentity(m)))
}

/// The trust domain of a `spiffe://` URI.
fn trust_domain_of(uri: &str) -> Option<&str> {
    let rest = uri.strip_prefix(SPIFFE_PREFIX)?;
    Some(rest.split_once('/').map_or(rest, |(td, _)| td))
}

/// The URI SAN rule: one of `expected` (exact), else within one of `trust_domains`, else any
/// SPIFFE ID.
fn check_identity(
    uris: &[&str],
    expected: &[String],
    trust_domains: &[String],
) -> Result<(), String> {
    if uris.is_empty() {
        return Err("the peer certificate has no spiffe:// URI SAN".to_string());
    }
    if !expected.is_empty() {
        if uris.iter().any(|u| expected.iter().any(|e| e == u)) {
            return Ok(());
        }
        return Err(format!(
            "peer is {uris:?} but one of {expected:?} was expected (check the destination's service accounts)"
        ));
    }
    if trust_domains.is_empty() {
        return Ok(());
    }
    let in_domain = |u: &&str| {
        trust_domains.iter().any(|td| {
            u.strip_prefix(SPIFFE_PREFIX)
                .and_then(|rest| rest.strip_prefix(td.as_str()))
                .is_some_and(|rest| rest.starts_with('/'))
        })
    };
    if uris.iter().any(in_domain) {
        Ok(())
    } else {
        Err(format!(
            "peer {uris:?} is not in trust domain(s) {trust_domains:?} (add it to trustDomainAliases to accept it)"
        ))
    }
}

/// Client-side verifier: server chain against the current bundle, then its SPIFFE ID.
#[derive(Debug)]
pub struct SpiffeServerVerifier {
    live: Arc<LiveIdentity>,
    expected_ids: Vec<String>,
    trust_domains: Vec<String>,
    algs: WebPkiSupportedAlgorithms,
}

impl SpiffeServerVerifier {
    /// Accepts servers whose URI SAN is in `expected_ids` (empty: any ID, restricted to
    /// `trust_domains` when that is not empty).
    pub fn new(
        live: Arc<LiveIdentity>,
        expected_ids: Vec<String>,
        trust_domains: Vec<String>,
    ) -> Self {
        Self {
            algs: live.provider.signature_verification_algorithms,
            live,
            expected_ids,
            trust_domains,
        }
    }
}

impl ServerCertVerifier for SpiffeServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        verify_peer(
            &self.live,
            end_entity,
            intermediates,
            now,
            webpki::KeyUsage::server_auth(),
            &self.expected_ids,
            &self.trust_domains,
        )?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algs.supported_schemes()
    }
}

/// Server-side verifier: a client certificate is required, its chain must verify against the
/// current bundle and its URI SAN must be in an accepted trust domain.
#[derive(Debug)]
pub struct SpiffeClientVerifier {
    live: Arc<LiveIdentity>,
    trust_domains: Vec<String>,
    algs: WebPkiSupportedAlgorithms,
}

impl SpiffeClientVerifier {
    /// Accepts clients in `trust_domains` (empty: any SPIFFE ID that chains to the bundle).
    pub fn new(live: Arc<LiveIdentity>, trust_domains: Vec<String>) -> Self {
        Self {
            algs: live.provider.signature_verification_algorithms,
            live,
            trust_domains,
        }
    }
}

impl ClientCertVerifier for SpiffeClientVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        verify_peer(
            &self.live,
            end_entity,
            intermediates,
            now,
            webpki::KeyUsage::client_auth(),
            &[],
            &self.trust_domains,
        )?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algs.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_rule() {
        let uris = ["spiffe://cluster.local/ns/a/sa/b"];
        assert!(check_identity(&uris, &[], &[]).is_ok());
        assert!(check_identity(&[], &[], &[]).is_err());
        assert!(check_identity(&uris, &["spiffe://cluster.local/ns/a/sa/b".into()], &[]).is_ok());
        assert!(check_identity(&uris, &["spiffe://cluster.local/ns/a/sa/c".into()], &[]).is_err());
        assert!(check_identity(&uris, &[], &["cluster.local".into()]).is_ok());
        // Prefix match is on whole trust domains.
        assert!(check_identity(&uris, &[], &["cluster.loc".into()]).is_err());
        assert!(check_identity(&uris, &[], &["other".into(), "cluster.local".into()]).is_ok());
        assert_eq!(trust_domain_of(uris[0]), Some("cluster.local"));
        assert_eq!(trust_domain_of("spiffe://td"), Some("td"));
        assert_eq!(trust_domain_of("https://td/x"), None);
    }
}
