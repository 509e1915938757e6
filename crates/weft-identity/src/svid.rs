//! X.509 SVIDs (workload certificate + key) and trust bundles, and key/CSR generation.

use std::collections::BTreeMap;
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
    /// DER roots (with per-domain bundles, all of them).
    pub roots: Vec<CertificateDer<'static>>,
    /// Bundles per SPIFFE trust domain (Envoy's SPIFFE certificate validator, as a SPIRE
    /// agent sends it): a peer is verified with its own trust domain's roots only, and a peer
    /// from a domain not listed is refused. Empty: every root is trusted for any domain.
    pub domains: BTreeMap<String, Vec<CertificateDer<'static>>>,
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
        Ok(Self {
            roots,
            domains: BTreeMap::new(),
        })
    }

    /// A bundle per trust domain (name, PEM roots), as Envoy's SPIFFE certificate validator
    /// lists them.
    pub fn from_domain_pems<'a>(
        domains: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<Self, IdentityError> {
        let mut bundle = Self::default();
        for (name, pem) in domains {
            let roots = pem_certs(pem)?;
            if roots.is_empty() {
                return Err(IdentityError::InvalidCertificate(format!(
                    "the trust bundle of trust domain {name:?} contains no CERTIFICATE block"
                )));
            }
            bundle.roots.extend(roots.iter().cloned());
            bundle.domains.insert(name.to_string(), roots);
        }
        if bundle.domains.is_empty() {
            return Err(IdentityError::InvalidCertificate(
                "the SPIFFE validator names no trust domain".to_string(),
            ));
        }
        Ok(bundle)
    }

    /// The bundle of a CA response `[leaf, intermediates…, root]`: the certificates of the
    /// last element.
    pub fn from_chain_pems(chain: &[String]) -> Result<Self, IdentityError> {
        split_chain(chain).map(|(_, roots)| Self {
            roots,
            domains: BTreeMap::new(),
        })
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
        Self::from_certs(certs, key)
    }

    /// Builds an SVID from a PEM chain (leaf first, then intermediates, no root) and a PEM
    /// private key (PKCS#8, SEC1 or PKCS#1), as an SDS server such as a SPIRE agent sends them.
    pub fn from_pems(chain_pem: &str, key_pem: &str) -> Result<Self, IdentityError> {
        let certs = pem_certs(chain_pem)?;
        let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|e| {
            IdentityError::InvalidCertificate(format!("the private key is not usable PEM: {e}"))
        })?;
        Self::from_certs(certs, key)
    }

    fn from_certs(
        certs: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> Result<Self, IdentityError> {
        let leaf_der = certs.first().ok_or_else(|| {
            IdentityError::InvalidCertificate(
                "the certificate chain contains no CERTIFICATE block".to_string(),
            )
        })?;
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
                "the certificate is for another key than the private key given with it".to_string(),
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

/// A serial number as Envoy and openssl print it: the magnitude's bytes, two hex digits each.
fn serial_hex(serial: &x509_parser::num_bigint::BigUint) -> String {
    use std::fmt::Write;
    serial
        .to_bytes_be()
        .iter()
        .fold(String::new(), |mut out, b| {
            let _ = write!(out, "{b:02x}");
            out
        })
}

/// What an operator needs to know of a certificate (Envoy's `/certs` fields).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertInfo {
    /// Serial number, lowercase hex, two digits a byte as Envoy prints it (`BN_bn2hex`, as
    /// `openssl x509 -serial`): a leading zero digit is kept.
    pub serial_number: String,
    /// URI SANs (SPIFFE IDs).
    pub uris: Vec<String>,
    /// DNS SANs.
    pub dns_names: Vec<String>,
    /// Start of validity, RFC 3339 (UTC).
    pub valid_from: String,
    /// End of validity, RFC 3339 (UTC).
    pub expiration_time: String,
    /// Whole days until expiry (negative once expired).
    pub days_until_expiration: i64,
}

/// Describes a DER certificate for admin pages and diagnostics.
pub fn describe(der: &CertificateDer<'_>) -> Result<CertInfo, IdentityError> {
    let cert = parse_cert(der.as_ref())?;
    let mut uris = Vec::new();
    let mut dns_names = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                GeneralName::URI(u) => uris.push(u.to_string()),
                GeneralName::DNSName(d) => dns_names.push(d.to_string()),
                _ => {}
            }
        }
    }
    let rfc3339 = |t: i64| {
        time::OffsetDateTime::from_unix_timestamp(t)
            .ok()
            .and_then(|t| {
                t.format(&time::format_description::well_known::Rfc3339)
                    .ok()
            })
            .unwrap_or_default()
    };
    let not_before = cert.validity().not_before.timestamp();
    let not_after = cert.validity().not_after.timestamp();
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    Ok(CertInfo {
        serial_number: serial_hex(&cert.serial),
        uris,
        dns_names,
        valid_from: rfc3339(not_before),
        expiration_time: rfc3339(not_after),
        days_until_expiration: (not_after - now).div_euclid(86_400),
    })
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
        // The SDS form: a PEM chain without the root and a PEM PKCS#8 key.
        let (key, csr) = generate_key_and_csr().unwrap();
        let chain = ca.sign_csr(&csr, &id, Duration::from_secs(3600)).unwrap();
        let key_pem = crate::ca::pem_encode("PRIVATE KEY", key.secret_der());
        let sds = Svid::from_pems(&chain[0], &key_pem).unwrap();
        assert_eq!(sds.id, id);
        assert_eq!(sds.chain.len(), 1);
        assert!(Svid::from_pems("", &key_pem).is_err());
        assert!(Svid::from_pems(&chain[0], "not a key").is_err());
        let bundle =
            TrustBundle::from_domain_pems([("cluster.local", ca.root_pem().as_str())]).unwrap();
        assert_eq!(bundle.roots, ca.roots());
        assert_eq!(bundle.domains["cluster.local"], ca.roots());
        assert!(TrustBundle::from_domain_pems([("x", "")]).is_err());
        assert!(TrustBundle::from_domain_pems([]).is_err());
        let info = describe(&sds.chain[0]).unwrap();
        assert_eq!(info.uris, [id.to_string()]);
        assert!(!info.serial_number.is_empty() && !info.serial_number.contains(':'));
        assert_eq!(info.serial_number.len() % 2, 0, "{}", info.serial_number);
        let leading_zero = x509_parser::num_bigint::BigUint::from_bytes_be(&[0x06, 0x75, 0xb5]);
        assert_eq!(serial_hex(&leading_zero), "0675b5");
        assert_eq!(info.days_until_expiration, 0);
        assert!(
            info.expiration_time.ends_with('Z'),
            "{}",
            info.expiration_time
        );
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
