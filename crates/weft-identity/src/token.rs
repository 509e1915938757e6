//! Per-workload credentials for workloads that run off Kubernetes.
//!
//! On Kubernetes, Istio's CA authenticates a proxy by its service-account token (TokenReview).
//! Weft also runs workloads registered as `WorkloadEntry` objects without a Kubernetes API, so
//! the control plane issues its own bearer credential per workload:
//!
//! ```text
//! weft1.<base64url(json {"ns": <namespace>, "wl": <WorkloadEntry name>, "iat": <unix seconds>})>.<base64url(HMAC-SHA256(key, "weft1." + payload))>
//! ```
//!
//! * The key is 32 random bytes in the control plane's state dir (`token-key`, mode 0600),
//!   created on first start. Anyone holding it can mint credentials: protect it like `ca-key.pem`.
//! * The credential names a workload, not an identity: the CA looks the `WorkloadEntry` up and
//!   issues the certificate for its service account, so moving a workload to another service
//!   account takes effect without re-issuing credentials.
//! * There is no expiry (like a bootstrap secret). Revoke one workload by deleting its
//!   `WorkloadEntry`; revoke all by deleting `token-key` (every workload then needs a new one).
//! * The credential travels as `authorization: Bearer <credential>` on the CA and xDS calls,
//!   which must therefore use TLS outside the pod/host.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use aws_lc_rs::hmac;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};

use crate::ca::write_file;
use crate::error::IdentityError;

/// File name of the HMAC key in the state dir.
pub const TOKEN_KEY_FILE: &str = "token-key";
/// Version prefix of every credential.
pub const TOKEN_PREFIX: &str = "weft1";
const KEY_LEN: usize = 32;

/// The workload a credential was issued for.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct WorkloadRef {
    /// Namespace of the `WorkloadEntry`.
    pub namespace: String,
    /// Name of the `WorkloadEntry`.
    pub name: String,
}

#[derive(Serialize, Deserialize)]
struct Payload {
    ns: String,
    wl: String,
    iat: u64,
}

/// Issues and verifies workload credentials with the control plane's HMAC key.
pub struct TokenAuthority {
    key: hmac::Key,
}

impl std::fmt::Debug for TokenAuthority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenAuthority").finish_non_exhaustive()
    }
}

impl TokenAuthority {
    /// Loads `<state_dir>/token-key`, creating a new random key on first start.
    pub fn load_or_create(state_dir: &Path) -> Result<Self, IdentityError> {
        let path = state_dir.join(TOKEN_KEY_FILE);
        let bytes = if path.exists() {
            let bytes = std::fs::read(&path).map_err(|e| IdentityError::io("read", &path, e))?;
            if bytes.len() != KEY_LEN {
                return Err(IdentityError::ca_file(
                    &path,
                    format!(
                        "must hold exactly {KEY_LEN} bytes but has {}; restore it from backup, or delete it to create a new key (every workload credential must then be re-issued)",
                        bytes.len()
                    ),
                ));
            }
            bytes
        } else {
            std::fs::create_dir_all(state_dir)
                .map_err(|e| IdentityError::io("create directory", state_dir, e))?;
            let mut bytes = vec![0u8; KEY_LEN];
            aws_lc_rs::rand::fill(&mut bytes)
                .map_err(|_| IdentityError::Crypto("system random generator failed".into()))?;
            write_file(&path, &bytes, 0o600)?;
            tracing::info!(file = %path.display(), "created workload credential key");
            bytes
        };
        Ok(Self::from_key_bytes(&bytes))
    }

    /// Builds an authority from raw key bytes (tests, or keys held elsewhere).
    pub fn from_key_bytes(key: &[u8]) -> Self {
        Self {
            key: hmac::Key::new(hmac::HMAC_SHA256, key),
        }
    }

    /// Issues a credential for the `WorkloadEntry` `namespace/workload`.
    pub fn issue(&self, namespace: &str, workload: &str) -> String {
        let iat = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let payload = Payload {
            ns: namespace.to_string(),
            wl: workload.to_string(),
            iat,
        };
        // Serializing a struct of strings and an integer cannot fail.
        let json = serde_json::to_vec(&payload).unwrap_or_default();
        let signed = format!("{TOKEN_PREFIX}.{}", URL_SAFE_NO_PAD.encode(json));
        let tag = hmac::sign(&self.key, signed.as_bytes());
        format!("{signed}.{}", URL_SAFE_NO_PAD.encode(tag.as_ref()))
    }

    /// Verifies a credential (constant-time) and returns the workload it names.
    pub fn verify(&self, token: &str) -> Result<WorkloadRef, IdentityError> {
        let malformed = |what: &str| IdentityError::CredentialMalformed(what.to_string());
        let mut parts = token.trim().split('.');
        let (Some(prefix), Some(payload), Some(sig), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(malformed("it must have three dot-separated parts"));
        };
        if prefix != TOKEN_PREFIX {
            return Err(malformed("unknown version prefix"));
        }
        let sig = URL_SAFE_NO_PAD
            .decode(sig)
            .map_err(|_| malformed("the signature is not base64url"))?;
        let signed = &token.trim()[..prefix.len() + 1 + payload.len()];
        hmac::verify(&self.key, signed.as_bytes(), &sig)
            .map_err(|_| IdentityError::CredentialSignature)?;
        let json = URL_SAFE_NO_PAD
            .decode(payload)
            .map_err(|_| malformed("the payload is not base64url"))?;
        let payload: Payload = serde_json::from_slice(&json)
            .map_err(|_| malformed("the payload is not valid JSON"))?;
        if payload.ns.is_empty() || payload.wl.is_empty() {
            return Err(malformed("the namespace or workload name is empty"));
        }
        Ok(WorkloadRef {
            namespace: payload.ns,
            name: payload.wl,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issue_and_verify() {
        let dir = tempfile::tempdir().unwrap();
        let ta = TokenAuthority::load_or_create(dir.path()).unwrap();
        let token = ta.issue("prod", "vm-1");
        assert!(token.starts_with("weft1."));
        assert_eq!(
            ta.verify(&token).unwrap(),
            WorkloadRef {
                namespace: "prod".into(),
                name: "vm-1".into()
            }
        );
        // The key persists with mode 0600 and is reused.
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(dir.path().join(TOKEN_KEY_FILE))
                .unwrap()
                .permissions(),
        );
        assert_eq!(mode & 0o777, 0o600);
        let again = TokenAuthority::load_or_create(dir.path()).unwrap();
        assert_eq!(again.verify(&token).unwrap().name, "vm-1");
    }

    #[test]
    fn tampered_and_foreign_tokens_are_refused() {
        let ta = TokenAuthority::from_key_bytes(&[7u8; 32]);
        let other = TokenAuthority::from_key_bytes(&[8u8; 32]);
        let token = ta.issue("prod", "vm-1");

        let err = other.verify(&token).unwrap_err();
        assert!(matches!(err, IdentityError::CredentialSignature));
        assert!(err.to_string().contains("another control plane"));

        // Swap the payload for one naming another workload, keep the signature.
        let forged_payload = URL_SAFE_NO_PAD.encode(br#"{"ns":"prod","wl":"admin","iat":0}"#);
        let sig = token.rsplit('.').next().unwrap();
        let forged = format!("weft1.{forged_payload}.{sig}");
        assert!(matches!(
            ta.verify(&forged),
            Err(IdentityError::CredentialSignature)
        ));

        // Flip one signature character.
        let mut bytes = token.clone().into_bytes();
        let last = bytes.len() - 2;
        bytes[last] = if bytes[last] == b'A' { b'B' } else { b'A' };
        let flipped = String::from_utf8(bytes).unwrap();
        assert!(ta.verify(&flipped).is_err());

        for bad in [
            "",
            "weft1",
            "weft1.a",
            "weft2.a.b",
            "weft1.a.b.c",
            "weft1.abc.%%%",
        ] {
            assert!(
                matches!(ta.verify(bad), Err(IdentityError::CredentialMalformed(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn wrong_size_key_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(TOKEN_KEY_FILE), b"short").unwrap();
        let err = TokenAuthority::load_or_create(dir.path()).unwrap_err();
        assert!(err.to_string().contains("token-key"), "{err}");
    }
}
