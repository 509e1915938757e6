//! What the data path knows about one downstream connection.

use std::net::SocketAddr;
use std::sync::Arc;

use crate::snapshot::Direction;

#[derive(Debug, Clone)]
pub struct ConnInfo {
    pub direction: Direction,
    /// The captured connection's original destination (`%DOWNSTREAM_LOCAL_ADDRESS%`).
    pub original_dst: SocketAddr,
    pub remote: SocketAddr,
    /// The peer's SPIFFE ID when the connection is mTLS.
    pub peer_principal: Option<Arc<str>>,
    /// The peer certificate's details, kept at the handshake when the chain's HCM forwards
    /// them in `x-forwarded-client-cert`.
    pub peer_cert: Option<Arc<PeerCert>>,
    /// SNI of the downstream TLS handshake.
    pub sni: Option<Arc<str>>,
    /// Negotiated ALPN on the downstream TLS connection.
    pub alpn: Option<Vec<u8>>,
}

impl ConnInfo {
    /// The proxy's own outbound calls (to a collector, an authorizer): no downstream behind
    /// them.
    pub fn local_call() -> ConnInfo {
        let unspecified = SocketAddr::from(([0, 0, 0, 0], 0));
        ConnInfo {
            direction: Direction::Outbound,
            original_dst: unspecified,
            remote: unspecified,
            peer_principal: None,
            peer_cert: None,
            sni: None,
            alpn: None,
        }
    }
}

/// What `x-forwarded-client-cert` says about a downstream peer certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerCert {
    /// Hex SHA-256 of the certificate's DER.
    pub sha256: String,
    /// The subject, RFC 2253 (`CN=…,O=…`); empty for Istio's workload certificates.
    pub subject: String,
    /// The first URI SAN.
    pub uri: Option<String>,
    pub dns: Vec<String>,
}

impl PeerCert {
    /// Reads the leaf certificate (DER); None when it does not parse.
    pub fn from_der(der: &[u8]) -> Option<PeerCert> {
        use x509_parser::extensions::GeneralName;
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, der);
        let sha256 = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
        let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
        let mut rdns: Vec<String> = cert
            .subject()
            .iter()
            .map(|rdn| {
                rdn.iter()
                    .map(|a| {
                        let key = x509_parser::objects::oid2abbrev(
                            a.attr_type(),
                            x509_parser::objects::oid_registry(),
                        )
                        .map(str::to_owned)
                        .unwrap_or_else(|_| a.attr_type().to_id_string());
                        format!("{key}={}", a.as_str().unwrap_or(""))
                    })
                    .collect::<Vec<_>>()
                    .join("+")
            })
            .collect();
        rdns.reverse();
        let (mut uri, mut dns) = (None, Vec::new());
        if let Ok(Some(san)) = cert.subject_alternative_name() {
            for name in &san.value.general_names {
                match name {
                    GeneralName::URI(u) if uri.is_none() => uri = Some(u.to_string()),
                    GeneralName::DNSName(d) => dns.push(d.to_string()),
                    _ => {}
                }
            }
        }
        Some(PeerCert {
            sha256,
            subject: rdns.join(","),
            uri,
            dns,
        })
    }
}

impl ConnInfo {
    pub fn mtls(&self) -> bool {
        self.peer_principal.is_some()
    }
}
