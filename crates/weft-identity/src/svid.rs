//! X.509 SVIDs (workload certificate + key) and trust bundles, and key/CSR generation.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::{CertificateParams, DistinguishedName, KeyPair, PKCS_ECDSA_P256_SHA256};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::FromDer;

use crate::error::IdentityError;
use crate::spiffe::{SPIFFE_PREFIX, SpiffeId};

/// A workload's X.509 SVID: certificate chain (leaf first, no root) and private key.
#[derive(Clone)]
pub struct Svid {
    /// The SPIFFE ID in the leaf's URI SAN.
    pub id: SpiffeId,
    /// Leaf first, then intermediates; the root is in the [`TrustBundle`].
    pub chain: Vec<CertificateDer<'static>>,
    /// The private key of the leaf (shared, never written to disk).
    pub key: Arc<PrivateKeyDer<'static>>,
    /// Start of the leaf's validity.
    pub not_before: SystemTime,
    /// End of the leaf's validity.
    pub not_after: SystemTime,
}

impl std::fmt::Debug for Svid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Svid")
            .field("id", &self.id.to_string())
            .field("chain_len", &self.chain.len())
            .field("not_before", &self.not_before)
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

/// Root certificates trusted for peer verification.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TrustBundle {
    /// DER roots.
    pub roots: Vec<CertificateDer<'static>>,
}

impl TrustBundle {
    /// Parses every certificate in a PEM bundle (e.g. `root-cert.pem`).
    pub fn from_pem(pem: &str) -> Result<Self, IdentityError> {
        let roots = pem_certs(pem)?;
        if roots.is_empty() {
            return Err(IdentityError::InvalidCertificate(
                "the trust bundle contains no CERTIFICATE block".to_string(),
            ));
        }
        Ok(Self { roots })
    }

    /// The bundle of a CA response `[leaf, intermediates…, root]`: the certificates of the
    /// last element.
    pub fn from_chain_pems(chain: &[String]) -> Result<Self, IdentityError> {
        split_chain(chain).map(|(_, roots)| Self { roots })
    }
}

/// Generates an ECDSA P-256 key (kept in memory) and a PEM CSR for it. The CSR carries no
/// names: the CA takes the identity from the caller's credential.
pub fn generate_key_and_csr() -> Result<(PrivateKeyDer<'static>, String), IdentityError> {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    let csr = params.serialize_request(&key)?.pem()?;
    let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    Ok((der, csr))
}

impl Svid {
    /// Builds an SVID from a CA response `[leaf, intermediates…, root]` and the key the CSR
    /// was made with. Fails if the leaf has no Istio-form SPIFFE URI SAN or does not match the key.
    pub fn from_chain_pems(
        chain: &[String],
        key: PrivateKeyDer<'static>,
    ) -> Result<Self, IdentityError> {
        let (certs, _) = split_chain(chain)?;
        let leaf_der = &certs[0];
        let leaf = parse_cert(leaf_der)?;
        let id = spiffe_uris(&leaf)
            .into_iter()
            .find_map(|u| SpiffeId::parse(u).ok())
            .ok_or_else(|| {
                IdentityError::InvalidCertificate(
                    "the leaf certificate has no spiffe://<td>/ns/<ns>/sa/<sa> URI SAN".to_string(),
                )
            })?;
        let not_before = unix_to_system(leaf.validity().not_before.timestamp());
        let not_after = unix_to_system(leaf.validity().not_after.timestamp());
        let provider = rustls::crypto::aws_lc_rs::default_provider();
        let signing_key = provider
            .key_provider
            .load_private_key(key.clone_key())
            .map_err(|e| IdentityError::InvalidCertificate(format!("unusable private key: {e}")))?;
        let public = signing_key.public_key().ok_or_else(|| {
            IdentityError::InvalidCertificate("cannot derive the public key".to_string())
        })?;
        if public.as_ref() != leaf.public_key().raw {
            return Err(IdentityError::InvalidCertificate(
                "the certificate returned by the CA is for another key than the CSR's".to_string(),
            ));
        }
        Ok(Self {
            id,
            chain: certs,
            key: Arc::new(key),
            not_before,
            not_after,
        })
    }

    /// The certificate lifetime.
    pub fn lifetime(&self) -> Duration {
        self.not_after
            .duration_since(self.not_before)
            .unwrap_or_default()
    }
}

/// Splits a CA response into (leaf + intermediates, roots). The last element holds the root(s);
/// a single element must hold at least two certificates (its last one is the root). Copies of
/// a root at the end of the chain are dropped.
fn split_chain(
    chain: &[String],
) -> Result<(Vec<CertificateDer<'static>>, Vec<CertificateDer<'static>>), IdentityError> {
    let (mut certs, roots) = match chain {
        [] => {
            return Err(IdentityError::InvalidCertificate(
                "the CA returned an empty certificate chain".to_string(),
            ));
        }
        [only] => {
            let mut certs = pem_certs(only)?;
            if certs.len() < 2 {
                return Err(IdentityError::InvalidCertificate(
                    "the CA returned only a leaf certificate; no root to trust".to_string(),
                ));
            }
            let root = certs.pop().into_iter().collect();
            (certs, root)
        }
        [init @ .., last] => {
            let mut certs = Vec::new();
            for pem in init {
                certs.extend(pem_certs(pem)?);
            }
            (certs, pem_certs(last)?)
        }
    };
    while certs.len() > 1 && certs.last().is_some_and(|c| roots.contains(c)) {
        certs.pop();
    }
    if certs.is_empty() || roots.is_empty() {
        return Err(IdentityError::InvalidCertificate(
            "the certificate chain has no leaf or no root certificate".to_string(),
        ));
    }
    Ok((certs, roots))
}

fn pem_certs(pem: &str) -> Result<Vec<CertificateDer<'static>>, IdentityError> {
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| IdentityError::InvalidCertificate(format!("invalid PEM: {e}")))
}

pub(crate) fn parse_cert<'a>(der: &'a [u8]) -> Result<X509Certificate<'a>, IdentityError> {
    X509Certificate::from_der(der)
        .map(|(_, c)| c)
        .map_err(|e| IdentityError::InvalidCertificate(format!("cannot parse certificate: {e}")))
}

/// All `spiffe://` URI SANs of a certificate.
pub(crate) fn spiffe_uris<'a>(cert: &X509Certificate<'a>) -> Vec<&'a str> {
    let Ok(Some(san)) = cert.subject_alternative_name() else {
        return Vec::new();
    };
    san.value
        .general_names
        .iter()
        .filter_map(|n| match n {
            GeneralName::URI(u) if u.starts_with(SPIFFE_PREFIX) => Some(*u),
            _ => None,
        })
        .collect()
}

fn unix_to_system(ts: i64) -> SystemTime {
    if ts >= 0 {
        UNIX_EPOCH + Duration::from_secs(ts.unsigned_abs())
    } else {
        UNIX_EPOCH - Duration::from_secs(ts.unsigned_abs())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ca::CertificateAuthority;

    #[test]
    fn svid_from_ca_chain() {
        let dir = tempfile::tempdir().unwrap();
        let ca = CertificateAuthority::load_or_create(dir.path(), "cluster.local").unwrap();
        let id = SpiffeId::parse("spiffe://cluster.local/ns/default/sa/sleep").unwrap();
        let (key, csr) = generate_key_and_csr().unwrap();
        let chain = ca.sign_csr(&csr, &id, Duration::from_secs(3600)).unwrap();
        let svid = Svid::from_chain_pems(&chain, key).unwrap();
        assert_eq!(svid.id, id);
        assert_eq!(
            svid.chain.len(),
            1,
            "the root is not part of the SVID chain"
        );
        let life = svid.lifetime().as_secs();
        assert!((3600 + 60 - 2..=3600 + 60 + 2).contains(&life), "{life}");
        let bundle = TrustBundle::from_chain_pems(&chain).unwrap();
        assert_eq!(bundle.roots, ca.roots());
        assert_eq!(TrustBundle::from_pem(&ca.root_pem()).unwrap(), bundle);

        // A key other than the CSR's is refused.
        let (other_key, _) = generate_key_and_csr().unwrap();
        let err = Svid::from_chain_pems(&chain, other_key).unwrap_err();
        assert!(err.to_string().contains("another key"), "{err}");
        // A lone leaf has no root.
        let (key, _) = generate_key_and_csr().unwrap();
        assert!(Svid::from_chain_pems(&chain[..1], key).is_err());
    }

    #[test]
    fn csr_is_ecdsa_p256_and_self_signed() {
        let (_key, csr) = generate_key_and_csr().unwrap();
        let der =
            rustls_pki_types::CertificateSigningRequestDer::from_pem_slice(csr.as_bytes()).unwrap();
        let (_, req) =
            x509_parser::certification_request::X509CertificationRequest::from_der(der.as_ref())
                .unwrap();
        req.verify_signature().unwrap();
        assert_eq!(
            req.signature_algorithm.algorithm,
            x509_parser::oid_registry::OID_SIG_ECDSA_WITH_SHA256
        );
    }
}
