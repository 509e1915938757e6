//! Test certificates made with the openssl CLI: a P-256 CA and leaves it signs.

use std::path::Path;
use std::process::Command;

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A self-signed CA in `dir` (ca.pem, ca.key) named `cn`.
pub(crate) fn ca(dir: &Path, cn: &str) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-subj",
            &format!("/CN={cn}"),
            "-days",
            "2",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
    );
}

/// A certificate `<stem>.pem` with key `<stem>.key` for subject `cn`, signed by the CA of
/// [`ca`], with the X.509v3 extensions `ext` (openssl extfile lines).
pub(crate) fn leaf(dir: &Path, stem: &str, cn: &str, ext: &str) {
    leaf_signed_by(dir, stem, cn, ext, "ca", "2");
}

/// [`leaf`] signed by the CA `<ca>.pem` / `<ca>.key` in `dir`, valid for `days` (negative:
/// already expired).
pub(crate) fn leaf_signed_by(dir: &Path, stem: &str, cn: &str, ext: &str, ca: &str, days: &str) {
    let (ca_pem, ca_key) = (format!("{ca}.pem"), format!("{ca}.key"));
    let (key, csr, pem, extfile) = (
        format!("{stem}.key"),
        format!("{stem}.csr"),
        format!("{stem}.pem"),
        format!("{stem}.ext"),
    );
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            &key,
            "-out",
            &csr,
            "-subj",
            &format!("/CN={cn}"),
        ],
    );
    std::fs::write(dir.join(&extfile), ext).expect("ext file");
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            &ca_pem,
            "-CAkey",
            &ca_key,
            "-CAcreateserial",
            "-out",
            &pem,
            "-days",
            days,
            "-extfile",
            &extfile,
        ],
    );
}
