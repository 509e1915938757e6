//! The mesh certificate authority (istiod's Citadel role).
//!
//! Two ways to get a signing key, like Istio:
//! * [`CertificateAuthority::load_or_create`]: a self-signed ECDSA P-256 root kept in the
//!   control plane's state dir (`root-cert.pem`, `ca-key.pem`), created on first start
//!   (Istio's `istio-ca-secret`: subject `O=<trust domain>`, 10 years, CA).
//! * [`CertificateAuthority::from_plugin_dir`]: Istio's plug-in `cacerts` layout
//!   (`ca-cert.pem`, `ca-key.pem`, `root-cert.pem`, `cert-chain.pem`).
//!
//! Workload certificates carry only the caller's SPIFFE ID as URI SAN; from the CSR only the
//! public key is used.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, PublicKeyData, SanType, SerialNumber,
    SubjectPublicKeyInfo,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, CertificateSigningRequestDer};
use x509_parser::certificate::X509Certificate;
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::prelude::FromDer;

use crate::error::IdentityError;
use crate::spiffe::SpiffeId;

/// Root certificate file (state dir and plug-in dir).
pub const ROOT_CERT_FILE: &str = "root-cert.pem";
/// CA signing key file (state dir and plug-in dir).
pub const CA_KEY_FILE: &str = "ca-key.pem";
/// Plug-in CA signing certificate.
pub const CA_CERT_FILE: &str = "ca-cert.pem";
/// Plug-in CA chain from the signing certificate up to the root.
pub const CERT_CHAIN_FILE: &str = "cert-chain.pem";
/// Lifetime of the self-signed root (Istio `CITADEL_SELF_SIGNED_CA_CERT_TTL`, 10 years).
pub const SELF_SIGNED_ROOT_TTL: Duration = Duration::from_secs(3650 * 24 * 3600);
/// Longest workload certificate the CA issues (Istio `MAX_WORKLOAD_CERT_TTL`, 90 days).
pub const MAX_CERT_TTL: Duration = Duration::from_secs(90 * 24 * 3600);
/// Certificates are valid from this long before issuance, to tolerate clock skew.
pub const CLOCK_SKEW: Duration = Duration::from_secs(60);

/// A certificate authority that signs workload certificates.
pub struct CertificateAuthority {
    trust_domain: String,
    issuer: Issuer<'static, KeyPair>,
    /// PEMs appended after each issued leaf: intermediates (signing cert first), then the root file.
    chain_pems: Vec<String>,
    root_pem: String,
    roots: Vec<CertificateDer<'static>>,
}

impl std::fmt::Debug for CertificateAuthority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertificateAuthority")
            .field("trust_domain", &self.trust_domain)
            .field("chain_len", &self.chain_pems.len())
            .finish_non_exhaustive()
    }
}

impl CertificateAuthority {
    /// Loads the self-signed root CA from `state_dir`, creating it on first start.
    pub fn load_or_create(state_dir: &Path, trust_domain: &str) -> Result<Self, IdentityError> {
        let cert_path = state_dir.join(ROOT_CERT_FILE);
        let key_path = state_dir.join(CA_KEY_FILE);
        match (cert_path.exists(), key_path.exists()) {
            (true, true) => Self::load_self_signed(&cert_path, &key_path, trust_domain),
            (false, false) => Self::create_self_signed(state_dir, trust_domain),
            (true, false) => Err(IdentityError::ca_file(
                key_path,
                format!(
                    "missing while {ROOT_CERT_FILE} exists; restore it, or delete {ROOT_CERT_FILE} too to create a new root (every workload then needs a new certificate)"
                ),
            )),
            (false, true) => Err(IdentityError::ca_file(
                cert_path,
                format!(
                    "missing while {CA_KEY_FILE} exists; restore it, or delete {CA_KEY_FILE} too to create a new root (every workload then needs a new certificate)"
                ),
            )),
        }
    }

    fn create_self_signed(state_dir: &Path, trust_domain: &str) -> Result<Self, IdentityError> {
        fs::create_dir_all(state_dir)
            .map_err(|e| IdentityError::io("create directory", state_dir, e))?;
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, trust_domain);
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - CLOCK_SKEW;
        params.not_after = now + SELF_SIGNED_ROOT_TTL;
        params.serial_number = Some(random_serial()?);
        let cert = params.self_signed(&key)?;
        let root_pem = cert.pem();
        write_file(
            &state_dir.join(CA_KEY_FILE),
            key.serialize_pem().as_bytes(),
            0o600,
        )?;
        write_file(&state_dir.join(ROOT_CERT_FILE), root_pem.as_bytes(), 0o644)?;
        tracing::info!(
            trust_domain,
            dir = %state_dir.display(),
            "created self-signed root CA"
        );
        Ok(Self {
            trust_domain: trust_domain.to_string(),
            issuer: Issuer::new(params, key),
            chain_pems: vec![root_pem.clone()],
            root_pem,
            roots: vec![cert.der().clone()],
        })
    }

    fn load_self_signed(
        cert_path: &Path,
        key_path: &Path,
        trust_domain: &str,
    ) -> Result<Self, IdentityError> {
        warn_if_key_readable(key_path);
        let key = read_key(key_path)?;
        let root_pem = read_text(cert_path)?;
        let roots = parse_certs(cert_path, &root_pem)?;
        let root = &roots[0];
        let parsed = parse_x509(cert_path, root)?;
        check_key_matches(&key, &parsed, key_path, cert_path)?;
        check_is_ca(&parsed, cert_path)?;
        check_not_expired(&parsed, cert_path)?;
        let org_matches = parsed
            .subject()
            .iter_organization()
            .any(|o| o.as_str().ok() == Some(trust_domain));
        if !org_matches {
            tracing::warn!(
                trust_domain,
                file = %cert_path.display(),
                "the stored root CA was created for another trust domain; it still signs certificates for {trust_domain}"
            );
        }
        let issuer = Issuer::from_ca_cert_der(root, key)?;
        tracing::info!(trust_domain, file = %cert_path.display(), "loaded self-signed root CA");
        Ok(Self {
            trust_domain: trust_domain.to_string(),
            issuer,
            chain_pems: vec![root_pem.clone()],
            root_pem,
            roots,
        })
    }

    /// Loads Istio's plug-in CA layout (`cacerts` secret mounted as a directory) and checks
    /// that `ca-key.pem` matches `ca-cert.pem` and that `ca-cert.pem` chains to `root-cert.pem`
    /// through `cert-chain.pem`.
    pub fn from_plugin_dir(dir: &Path, trust_domain: &str) -> Result<Self, IdentityError> {
        let ca_cert_path = dir.join(CA_CERT_FILE);
        let key_path = dir.join(CA_KEY_FILE);
        let root_path = dir.join(ROOT_CERT_FILE);
        let chain_path = dir.join(CERT_CHAIN_FILE);

        let ca_certs = parse_certs(&ca_cert_path, &read_text(&ca_cert_path)?)?;
        let ca_der = &ca_certs[0];
        let key = read_key(&key_path)?;
        let root_pem = read_text(&root_path)?;
        let roots = parse_certs(&root_path, &root_pem)?;
        let chain = parse_certs(&chain_path, &read_text(&chain_path)?)?;

        let ca = parse_x509(&ca_cert_path, ca_der)?;
        check_key_matches(&key, &ca, &key_path, &ca_cert_path)?;
        check_is_ca(&ca, &ca_cert_path)?;
        check_not_expired(&ca, &ca_cert_path)?;

        if chain[0] != *ca_der {
            return Err(IdentityError::ca_file(
                chain_path,
                format!("must start with the certificate in {CA_CERT_FILE}"),
            ));
        }
        // Intermediates above the signing cert, without any copy of a root at the end.
        let mut path: Vec<CertificateDer<'static>> = chain;
        while path.len() > 1 && path.last().is_some_and(|c| roots.contains(c)) {
            path.pop();
        }
        let parsed_path = path
            .iter()
            .map(|c| parse_x509(&chain_path, c))
            .collect::<Result<Vec<_>, _>>()?;
        for (i, pair) in parsed_path.windows(2).enumerate() {
            if !signed_by(&pair[0], &pair[1]) {
                return Err(IdentityError::ca_file(
                    &chain_path,
                    format!(
                        "certificate {} ({}) is not signed by certificate {} ({}); order it from {CA_CERT_FILE} up to the root",
                        i + 1,
                        pair[0].subject(),
                        i + 2,
                        pair[1].subject()
                    ),
                ));
            }
        }
        let top = parsed_path.last().unwrap_or(&ca);
        let parsed_roots = roots
            .iter()
            .map(|r| parse_x509(&root_path, r))
            .collect::<Result<Vec<_>, _>>()?;
        let top_is_root = path.last().is_some_and(|c| roots.contains(c));
        if !top_is_root && !parsed_roots.iter().any(|r| signed_by(top, r)) {
            return Err(IdentityError::ca_file(
                &ca_cert_path,
                format!(
                    "does not chain to {ROOT_CERT_FILE}: {} (issuer {}) is not signed by any certificate in {}",
                    top.subject(),
                    top.issuer(),
                    root_path.display()
                ),
            ));
        }

        let mut chain_pems: Vec<String> = Vec::new();
        if !top_is_root {
            for der in &path {
                chain_pems.push(der_to_pem(der));
            }
        }
        chain_pems.push(root_pem.clone());
        let issuer = Issuer::from_ca_cert_der(ca_der, key)?;
        tracing::info!(
            dir = %dir.display(),
            signing_cert = %ca.subject(),
            "loaded plug-in CA"
        );
        Ok(Self {
            trust_domain: trust_domain.to_string(),
            issuer,
            chain_pems,
            root_pem,
            roots,
        })
    }

    /// The mesh trust domain this CA issues identities for.
    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }

    /// The root certificate(s) PEM (`root-cert.pem`), as distributed to workloads.
    pub fn root_pem(&self) -> String {
        self.root_pem.clone()
    }

    /// The root certificate(s) in DER.
    pub fn roots(&self) -> &[CertificateDer<'static>] {
        &self.roots
    }

    /// Signs a workload CSR: verifies its signature, takes only its public key and issues a
    /// leaf for `id` valid for `ttl` (capped at [`MAX_CERT_TTL`]). Returns
    /// `[leaf, intermediates…, root]` PEMs like Istio.
    pub fn sign_csr(
        &self,
        csr_pem: &str,
        id: &SpiffeId,
        ttl: Duration,
    ) -> Result<Vec<String>, IdentityError> {
        let (public_key, requested) = csr_public_key(csr_pem)?;
        // The identity comes from the caller. A CSR that names another identity is refused
        // rather than silently given the caller's (DNS names and subject are ignored).
        let caller = id.to_string();
        if let Some(other) = requested.iter().find(|u| **u != caller) {
            return Err(IdentityError::CsrIdentityMismatch {
                requested: other.clone(),
                caller,
            });
        }
        let uri = rcgen::string::Ia5String::try_from(id.to_string())?;
        let leaf = self.issue(
            &public_key,
            vec![SanType::URI(uri)],
            vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ],
            ttl,
        )?;
        Ok(self.with_chain(leaf))
    }

    /// Issues a leaf for `public_key` with the given SANs and EKUs; returns its PEM.
    pub(crate) fn issue(
        &self,
        public_key: &impl PublicKeyData,
        sans: Vec<SanType>,
        ekus: Vec<ExtendedKeyUsagePurpose>,
        ttl: Duration,
    ) -> Result<String, IdentityError> {
        if ttl.is_zero() {
            return Err(IdentityError::InvalidTtl(
                "the requested lifetime is zero".to_string(),
            ));
        }
        let ttl = ttl.min(MAX_CERT_TTL);
        let ttl =
            time::Duration::try_from(ttl).map_err(|e| IdentityError::InvalidTtl(e.to_string()))?;
        let now = time::OffsetDateTime::now_utc();
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params.subject_alt_names = sans;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = ekus;
        params.not_before = now - CLOCK_SKEW;
        params.not_after = now + ttl;
        params.serial_number = Some(random_serial()?);
        params.use_authority_key_identifier_extension = true;
        Ok(params.signed_by(public_key, &self.issuer)?.pem())
    }

    pub(crate) fn with_chain(&self, leaf_pem: String) -> Vec<String> {
        let mut out = Vec::with_capacity(1 + self.chain_pems.len());
        out.push(leaf_pem);
        out.extend(self.chain_pems.iter().cloned());
        out
    }
}

/// Parses a PEM CSR, verifies its self-signature and returns its public key and the URI SANs
/// it asks for.
fn csr_public_key(csr_pem: &str) -> Result<(SubjectPublicKeyInfo, Vec<String>), IdentityError> {
    let der = CertificateSigningRequestDer::from_pem_slice(csr_pem.as_bytes())
        .map_err(|e| IdentityError::InvalidCsr(format!("not a PEM CERTIFICATE REQUEST: {e}")))?;
    let (_, csr) = X509CertificationRequest::from_der(der.as_ref())
        .map_err(|e| IdentityError::InvalidCsr(format!("cannot parse: {e}")))?;
    csr.verify_signature()
        .map_err(|e| IdentityError::InvalidCsr(format!("signature does not verify: {e}")))?;
    let mut uris = Vec::new();
    for ext in csr.requested_extensions().into_iter().flatten() {
        if let x509_parser::extensions::ParsedExtension::SubjectAlternativeName(san) = ext {
            for name in &san.general_names {
                if let x509_parser::extensions::GeneralName::URI(u) = name {
                    uris.push(u.to_string());
                }
            }
        }
    }
    let key = SubjectPublicKeyInfo::from_der(csr.certification_request_info.subject_pki.raw)
        .map_err(|e| IdentityError::InvalidCsr(format!("unsupported public key: {e}")))?;
    Ok((key, uris))
}

/// Whether `child` names `parent` as issuer and carries a valid signature by its key.
fn signed_by(child: &X509Certificate<'_>, parent: &X509Certificate<'_>) -> bool {
    child.issuer() == parent.subject() && child.verify_signature(Some(parent.public_key())).is_ok()
}

fn random_serial() -> Result<SerialNumber, IdentityError> {
    let mut bytes = [0u8; 16];
    aws_lc_rs::rand::fill(&mut bytes)
        .map_err(|_| IdentityError::Crypto("system random generator failed".to_string()))?;
    // Positive and with a non-zero leading byte, so the encoding is always 16 bytes.
    bytes[0] = (bytes[0] & 0x7f) | 0x01;
    Ok(SerialNumber::from_slice(&bytes))
}

pub(crate) fn der_to_pem(der: &CertificateDer<'_>) -> String {
    pem_encode("CERTIFICATE", der.as_ref())
}

/// PEM with `label` (`CERTIFICATE`, `PRIVATE KEY`, …) around base64 lines of 64.
pub(crate) fn pem_encode(label: &str, der: &[u8]) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = String::with_capacity(b64.len() + 64);
    out.push_str(&format!("-----BEGIN {label}-----\n"));
    for line in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

fn read_text(path: &Path) -> Result<String, IdentityError> {
    fs::read_to_string(path).map_err(|e| IdentityError::io("read", path, e))
}

fn read_key(path: &Path) -> Result<KeyPair, IdentityError> {
    let pem = read_text(path)?;
    KeyPair::from_pem(&pem).map_err(|e| {
        IdentityError::ca_file(
            path,
            format!("not a usable unencrypted private key (PKCS#8, SEC1 or PKCS#1 PEM): {e}"),
        )
    })
}

fn parse_certs(path: &Path, pem: &str) -> Result<Vec<CertificateDer<'static>>, IdentityError> {
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| IdentityError::ca_file(path, format!("invalid PEM: {e}")))?;
    if certs.is_empty() {
        return Err(IdentityError::ca_file(
            path,
            "contains no CERTIFICATE block",
        ));
    }
    Ok(certs)
}

fn parse_x509<'a>(
    path: &Path,
    der: &'a CertificateDer<'_>,
) -> Result<X509Certificate<'a>, IdentityError> {
    X509Certificate::from_der(der.as_ref())
        .map(|(_, c)| c)
        .map_err(|e| IdentityError::ca_file(path, format!("cannot parse certificate: {e}")))
}

fn check_key_matches(
    key: &KeyPair,
    cert: &X509Certificate<'_>,
    key_path: &Path,
    cert_path: &Path,
) -> Result<(), IdentityError> {
    if key.der_bytes() != cert.public_key().subject_public_key.data.as_ref() {
        return Err(IdentityError::ca_file(
            key_path,
            format!(
                "does not match the certificate in {}; install the key that belongs to that certificate",
                cert_path.display()
            ),
        ));
    }
    Ok(())
}

fn check_is_ca(cert: &X509Certificate<'_>, path: &Path) -> Result<(), IdentityError> {
    let is_ca = cert
        .basic_constraints()
        .ok()
        .flatten()
        .is_some_and(|bc| bc.value.ca);
    if !is_ca {
        return Err(IdentityError::ca_file(
            path,
            "is not a CA certificate (basicConstraints CA:TRUE missing)",
        ));
    }
    Ok(())
}

fn check_not_expired(cert: &X509Certificate<'_>, path: &Path) -> Result<(), IdentityError> {
    if !cert.validity().is_valid() {
        return Err(IdentityError::ca_file(
            path,
            format!(
                "is not valid now (valid from {} to {}); install a current CA certificate",
                cert.validity().not_before,
                cert.validity().not_after
            ),
        ));
    }
    Ok(())
}

fn warn_if_key_readable(path: &Path) {
    if let Ok(meta) = fs::metadata(path)
        && meta.permissions().mode() & 0o077 != 0
    {
        tracing::warn!(
            file = %path.display(),
            mode = format!("{:o}", meta.permissions().mode() & 0o777),
            "CA key is readable by other users; run chmod 600 on it"
        );
    }
}

/// Writes `data` to `path` atomically (temp file + rename) with the given mode.
pub(crate) fn write_file(path: &Path, data: &[u8], mode: u32) -> Result<(), IdentityError> {
    let tmp: PathBuf = path.with_extension("tmp");
    let _ = fs::remove_file(&tmp);
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .map_err(|e| IdentityError::io("create", &tmp, e))?;
    f.write_all(data)
        .and_then(|()| f.sync_all())
        .map_err(|e| IdentityError::io("write", &tmp, e))?;
    fs::rename(&tmp, path).map_err(|e| IdentityError::io("rename into place", path, e))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use rustls_pki_types::UnixTime;
    use x509_parser::extensions::GeneralName;

    pub(crate) fn spiffe(s: &str) -> SpiffeId {
        SpiffeId::parse(s).unwrap()
    }

    /// Verifies `chain` (`[leaf, intermediates…, root]` PEMs) with webpki for client auth.
    pub(crate) fn verify_chain(chain: &[String]) -> Result<(), webpki::Error> {
        let certs: Vec<CertificateDer<'static>> = chain
            .iter()
            .flat_map(|p| CertificateDer::pem_slice_iter(p.as_bytes()).map(Result::unwrap))
            .collect();
        let root = certs.last().unwrap().clone();
        let anchor = webpki::anchor_from_trusted_cert(&root).unwrap();
        let leaf = webpki::EndEntityCert::try_from(&certs[0]).unwrap();
        let algs = rustls::crypto::aws_lc_rs::default_provider().signature_verification_algorithms;
        leaf.verify_for_usage(
            algs.all,
            &[anchor],
            &certs[1..certs.len() - 1],
            UnixTime::now(),
            webpki::KeyUsage::client_auth(),
            None,
            None,
        )
        .map(|_| ())
    }

    fn pem(label: &str, der: &[u8]) -> String {
        der_to_pem(&CertificateDer::from(der.to_vec())).replace("CERTIFICATE", label)
    }

    fn leaf_of(chain: &[String]) -> CertificateDer<'static> {
        CertificateDer::from_pem_slice(chain[0].as_bytes()).unwrap()
    }

    #[test]
    fn self_signed_create_and_reload() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let ca = CertificateAuthority::load_or_create(&state, "cluster.local").unwrap();
        assert_eq!(ca.trust_domain(), "cluster.local");
        let key_mode = fs::metadata(state.join(CA_KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(key_mode & 0o777, 0o600);

        let root = ca.roots()[0].clone();
        let (_, x) = X509Certificate::from_der(root.as_ref()).unwrap();
        assert!(x.is_ca());
        assert_eq!(
            x.subject()
                .iter_organization()
                .next()
                .unwrap()
                .as_str()
                .unwrap(),
            "cluster.local"
        );
        let ku = x.key_usage().unwrap().unwrap().value;
        assert!(ku.key_cert_sign() && ku.crl_sign());
        let years = (x.validity().not_after.timestamp() - x.validity().not_before.timestamp())
            / (365 * 86_400);
        assert_eq!(years, 10);

        let again = CertificateAuthority::load_or_create(&state, "cluster.local").unwrap();
        assert_eq!(again.root_pem(), ca.root_pem());
        // The reloaded CA signs with the same key: its leaves verify against the first root.
        let (_, csr) = crate::svid::generate_key_and_csr().unwrap();
        let chain = again
            .sign_csr(
                &csr,
                &spiffe("spiffe://cluster.local/ns/a/sa/b"),
                Duration::from_secs(60),
            )
            .unwrap();
        assert_eq!(chain.last().unwrap(), &ca.root_pem());
        verify_chain(&chain).unwrap();

        fs::remove_file(state.join(CA_KEY_FILE)).unwrap();
        let err = CertificateAuthority::load_or_create(&state, "cluster.local").unwrap_err();
        assert!(err.to_string().contains("ca-key.pem"), "{err}");
    }

    #[test]
    fn sign_csr_uses_caller_identity_only() {
        let dir = tempfile::tempdir().unwrap();
        let ca = CertificateAuthority::load_or_create(dir.path(), "cluster.local").unwrap();
        let id = spiffe("spiffe://cluster.local/ns/default/sa/sleep");
        // A CSR asking for someone else's identity is refused.
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = CertificateParams::new(vec!["evil.example.com".to_string()]).unwrap();
        params.subject_alt_names.push(SanType::URI(
            "spiffe://cluster.local/ns/istio-system/sa/istiod"
                .try_into()
                .unwrap(),
        ));
        let csr = params.serialize_request(&key).unwrap().pem().unwrap();
        let err = ca
            .sign_csr(&csr, &id, Duration::from_secs(3600))
            .unwrap_err();
        assert!(
            matches!(&err, IdentityError::CsrIdentityMismatch { requested, .. } if requested.ends_with("sa/istiod")),
            "{err}"
        );
        // Asking for its own identity is fine too.
        let mut own = CertificateParams::new(vec![]).unwrap();
        own.subject_alt_names
            .push(SanType::URI(id.to_string().as_str().try_into().unwrap()));
        let csr = own.serialize_request(&key).unwrap().pem().unwrap();
        assert!(ca.sign_csr(&csr, &id, Duration::from_secs(3600)).is_ok());

        // A CSR with a DNS name and a subject gets the caller's identity and nothing else.
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = CertificateParams::new(vec!["evil.example.com".to_string()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, "admin");
        let csr = params.serialize_request(&key).unwrap().pem().unwrap();

        let ttl = Duration::from_secs(3600);
        let chain = ca.sign_csr(&csr, &id, ttl).unwrap();
        assert_eq!(chain.len(), 2, "[leaf, root]");
        verify_chain(&chain).unwrap();

        let leaf = leaf_of(&chain);
        let (_, x) = X509Certificate::from_der(leaf.as_ref()).unwrap();
        let names = &x
            .subject_alternative_name()
            .unwrap()
            .unwrap()
            .value
            .general_names;
        assert_eq!(
            names,
            &vec![GeneralName::URI(
                "spiffe://cluster.local/ns/default/sa/sleep"
            )]
        );
        assert_eq!(x.subject().iter().count(), 0, "empty subject like Istio");
        assert!(!x.is_ca());
        assert_eq!(
            x.public_key().subject_public_key.data.as_ref(),
            key.der_bytes(),
            "the CSR's public key"
        );
        let ku = x.key_usage().unwrap().unwrap().value;
        assert!(ku.digital_signature() && ku.key_encipherment() && !ku.key_cert_sign());
        let eku = x.extended_key_usage().unwrap().unwrap().value;
        assert!(eku.server_auth && eku.client_auth);
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let nb = x.validity().not_before.timestamp();
        let na = x.validity().not_after.timestamp();
        assert!((now - 62..=now - 58).contains(&nb), "backdated one minute");
        assert!((now + 3598..=now + 3602).contains(&na), "TTL honoured");

        // Serials are random.
        let chain2 = ca.sign_csr(&csr, &id, ttl).unwrap();
        let leaf2 = leaf_of(&chain2);
        let (_, x2) = X509Certificate::from_der(leaf2.as_ref()).unwrap();
        assert_ne!(x.serial, x2.serial);

        // TTL is capped at 90 days and must not be zero.
        let long = ca
            .sign_csr(&csr, &id, Duration::from_secs(365 * 86_400))
            .unwrap();
        let long_leaf = leaf_of(&long);
        let (_, xl) = X509Certificate::from_der(long_leaf.as_ref()).unwrap();
        let life = xl.validity().not_after.timestamp() - now;
        assert!((life - MAX_CERT_TTL.as_secs() as i64).abs() <= 2, "{life}");
        assert!(matches!(
            ca.sign_csr(&csr, &id, Duration::ZERO),
            Err(IdentityError::InvalidTtl(_))
        ));
    }

    #[test]
    fn sign_csr_rejects_bad_csrs_and_accepts_rsa() {
        let dir = tempfile::tempdir().unwrap();
        let ca = CertificateAuthority::load_or_create(dir.path(), "cluster.local").unwrap();
        let id = spiffe("spiffe://cluster.local/ns/default/sa/sleep");
        let ttl = Duration::from_secs(60);

        let (_, csr) = crate::svid::generate_key_and_csr().unwrap();
        let mut der = CertificateSigningRequestDer::from_pem_slice(csr.as_bytes())
            .unwrap()
            .as_ref()
            .to_vec();
        let n = der.len();
        der[n - 3] ^= 0x55; // inside the signature
        let tampered = pem("CERTIFICATE REQUEST", &der);
        let err = ca.sign_csr(&tampered, &id, ttl).unwrap_err();
        assert!(matches!(err, IdentityError::InvalidCsr(_)), "{err}");
        assert!(matches!(
            ca.sign_csr("garbage", &id, ttl),
            Err(IdentityError::InvalidCsr(_))
        ));

        // Istio agents default to RSA 2048 keys.
        let rsa =
            KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_2048).unwrap();
        let csr = CertificateParams::default()
            .serialize_request(&rsa)
            .unwrap()
            .pem()
            .unwrap();
        let chain = ca.sign_csr(&csr, &id, ttl).unwrap();
        verify_chain(&chain).unwrap();
    }

    /// Writes an Istio `cacerts` layout: root → intermediate (ca-cert) with cert-chain = [ca, root].
    fn write_plugin_layout(dir: &Path) -> (KeyPair, String) {
        let root_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let mut root_params = CertificateParams::default();
        root_params.distinguished_name = DistinguishedName::new();
        root_params
            .distinguished_name
            .push(DnType::OrganizationName, "Istio");
        root_params
            .distinguished_name
            .push(DnType::CommonName, "Root CA");
        root_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        root_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let root_cert = root_params.self_signed(&root_key).unwrap();
        let root_issuer = Issuer::new(root_params, root_key);

        let ca_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let mut ca_params = CertificateParams::default();
        ca_params.distinguished_name = DistinguishedName::new();
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "Intermediate CA cluster1");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        ca_params.use_authority_key_identifier_extension = true;
        let ca_cert = ca_params.signed_by(&ca_key, &root_issuer).unwrap();

        fs::write(dir.join(ROOT_CERT_FILE), root_cert.pem()).unwrap();
        fs::write(dir.join(CA_CERT_FILE), ca_cert.pem()).unwrap();
        fs::write(dir.join(CA_KEY_FILE), ca_key.serialize_pem()).unwrap();
        fs::write(
            dir.join(CERT_CHAIN_FILE),
            format!("{}{}", ca_cert.pem(), root_cert.pem()),
        )
        .unwrap();
        (ca_key, ca_cert.pem())
    }

    #[test]
    fn plugin_ca_issues_through_intermediate() {
        let dir = tempfile::tempdir().unwrap();
        let (_, ca_pem) = write_plugin_layout(dir.path());
        let ca = CertificateAuthority::from_plugin_dir(dir.path(), "cluster.local").unwrap();
        let (_, csr) = crate::svid::generate_key_and_csr().unwrap();
        let id = spiffe("spiffe://cluster.local/ns/default/sa/sleep");
        let chain = ca.sign_csr(&csr, &id, Duration::from_secs(600)).unwrap();
        assert_eq!(chain.len(), 3, "[leaf, intermediate, root]");
        assert_eq!(
            CertificateDer::from_pem_slice(chain[1].as_bytes()).unwrap(),
            CertificateDer::from_pem_slice(ca_pem.as_bytes()).unwrap()
        );
        assert_eq!(
            chain[2],
            fs::read_to_string(dir.path().join(ROOT_CERT_FILE)).unwrap()
        );
        verify_chain(&chain).unwrap();
        // Without the intermediate the leaf does not verify: it was signed by ca-key.pem.
        assert!(verify_chain(&[chain[0].clone(), chain[2].clone()]).is_err());
    }

    #[test]
    fn plugin_ca_refuses_mismatches_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        write_plugin_layout(dir.path());
        let other = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        fs::write(dir.path().join(CA_KEY_FILE), other.serialize_pem()).unwrap();
        let err = CertificateAuthority::from_plugin_dir(dir.path(), "cluster.local").unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("ca-key.pem") && msg.contains("does not match"),
            "{msg}"
        );

        // A different root: ca-cert.pem does not chain to root-cert.pem.
        let dir2 = tempfile::tempdir().unwrap();
        write_plugin_layout(dir2.path());
        fs::copy(
            dir.path().join(ROOT_CERT_FILE),
            dir2.path().join(ROOT_CERT_FILE),
        )
        .unwrap();
        let chain_only_ca = fs::read_to_string(dir2.path().join(CA_CERT_FILE)).unwrap();
        fs::write(dir2.path().join(CERT_CHAIN_FILE), chain_only_ca).unwrap();
        let err = CertificateAuthority::from_plugin_dir(dir2.path(), "cluster.local").unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("ca-cert.pem") && msg.contains("root-cert.pem"),
            "{msg}"
        );

        // Missing files are named.
        let dir3 = tempfile::tempdir().unwrap();
        write_plugin_layout(dir3.path());
        fs::remove_file(dir3.path().join(CERT_CHAIN_FILE)).unwrap();
        let err = CertificateAuthority::from_plugin_dir(dir3.path(), "cluster.local").unwrap_err();
        assert!(err.to_string().contains("cert-chain.pem"), "{err}");

        // A chain that does not start with ca-cert.pem.
        let dir4 = tempfile::tempdir().unwrap();
        write_plugin_layout(dir4.path());
        let root = fs::read_to_string(dir4.path().join(ROOT_CERT_FILE)).unwrap();
        fs::write(dir4.path().join(CERT_CHAIN_FILE), root).unwrap();
        let err = CertificateAuthority::from_plugin_dir(dir4.path(), "cluster.local").unwrap_err();
        assert!(err.to_string().contains("cert-chain.pem"), "{err}");
    }
}
