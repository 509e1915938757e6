//! The CA's CSR handling: any DER as a CSR from a caller whose identity the CA knows is signed
//! or refused, never a panic; and what is signed names the caller and nobody else.
#![no_main]

use std::sync::OnceLock;
use std::time::Duration;

use base64::Engine;
use libfuzzer_sys::fuzz_target;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use weft_identity::{CertificateAuthority, SpiffeId};

fn ca() -> &'static CertificateAuthority {
    static CA: OnceLock<(tempfile::TempDir, CertificateAuthority)> = OnceLock::new();
    &CA.get_or_init(|| {
        let dir = tempfile::tempdir().expect("temp dir");
        let ca = CertificateAuthority::load_or_create(dir.path(), "cluster.local").expect("CA");
        (dir, ca)
    })
    .1
}

fuzz_target!(|data: &[u8]| {
    let b64 = base64::engine::general_purpose::STANDARD.encode(data);
    let pem =
        format!("-----BEGIN CERTIFICATE REQUEST-----\n{b64}\n-----END CERTIFICATE REQUEST-----\n");
    let caller = SpiffeId::parse("spiffe://cluster.local/ns/default/sa/sleep").expect("id");
    if let Ok(chain) = ca().sign_csr(&pem, &caller, Duration::from_secs(3600)) {
        let leaf = CertificateDer::from_pem_slice(chain[0].as_bytes()).expect("leaf PEM");
        let id = weft_identity::tls::peer_spiffe_id(&[leaf]).expect("a SPIFFE ID");
        assert_eq!(id, caller);
    }
});
