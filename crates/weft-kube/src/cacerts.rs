//! The control plane's CA on Kubernetes, kept where istiod keeps it: the plug-in Secret
//! `cacerts` of the control plane's namespace (`ca-cert.pem`, `ca-key.pem`, `root-cert.pem`,
//! `cert-chain.pem`, as Istio's "plug in CA certificates" task creates it) when it exists;
//! otherwise the self-signed root in Secret `istio-ca-secret` (`ca-cert.pem`, `ca-key.pem`),
//! created on the first start, so that a restarted or second control plane signs with the same
//! root and the workloads' certificates stay trusted. The material is written into the state
//! directory in the layout `weft_identity::CertificateAuthority` loads. When the namespace does
//! not exist (a control plane run from outside the cluster) the root stays in the state
//! directory, with a warning.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ObjectMeta, PostParams};
use weft_identity::ca::{CA_CERT_FILE, CA_KEY_FILE, CERT_CHAIN_FILE, ROOT_CERT_FILE};

use crate::KubeError;

/// Istio's plug-in CA Secret.
pub const PLUGIN_SECRET: &str = "cacerts";
/// Istio's self-signed CA Secret.
pub const SELF_SIGNED_SECRET: &str = "istio-ca-secret";

/// Where the CA comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CaMaterial {
    /// The `cacerts` Secret, written to this plug-in directory.
    Plugin(PathBuf),
    /// The self-signed root of `istio-ca-secret`, written into the state directory (where
    /// `CertificateAuthority::load_or_create` finds it).
    SelfSigned,
}

/// Reads (or, for the self-signed root, creates) the CA material; `trust_domain` names a root
/// made here.
pub async fn prepare(
    client: &kube::Client,
    namespace: &str,
    state_dir: &Path,
    trust_domain: &str,
) -> Result<CaMaterial, KubeError> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let read = |name: &'static str| {
        let secrets = secrets.clone();
        async move {
            secrets
                .get_opt(name)
                .await
                .map_err(|source| KubeError::Secret {
                    what: format!("read Secret {namespace}/{name}"),
                    source,
                })
        }
    };
    let write_err = |path: &Path, e: std::io::Error| KubeError::CaFile {
        path: path.display().to_string(),
        reason: e.to_string(),
    };
    if let Some(s) = read(PLUGIN_SECRET).await? {
        let data = data(&s);
        let dir = state_dir.join(PLUGIN_SECRET);
        std::fs::create_dir_all(&dir).map_err(|e| write_err(&dir, e))?;
        for file in [CA_CERT_FILE, CA_KEY_FILE, ROOT_CERT_FILE, CERT_CHAIN_FILE] {
            let value = data.get(file).ok_or_else(|| KubeError::CaSecret {
                secret: format!("{namespace}/{PLUGIN_SECRET}"),
                reason: format!(
                    "has no key {file} (it needs ca-cert.pem, ca-key.pem, root-cert.pem and cert-chain.pem, as Istio's plug-in CA)"
                ),
            })?;
            write(&dir.join(file), value).map_err(|e| write_err(&dir.join(file), e))?;
        }
        tracing::info!(secret = %format!("{namespace}/{PLUGIN_SECRET}"), "CA: plug-in certificates");
        return Ok(CaMaterial::Plugin(dir));
    }
    // A create that loses a race to another replica reads the winner's root; bounded, should
    // the API server keep answering "exists" to the create and "absent" to the read.
    for _attempt in 0..5 {
        if let Some(s) = read(SELF_SIGNED_SECRET).await? {
            let data = data(&s);
            let secret = format!("{namespace}/{SELF_SIGNED_SECRET}");
            let (Some(cert), Some(key)) = (data.get(CA_CERT_FILE), data.get(CA_KEY_FILE)) else {
                return Err(KubeError::CaSecret {
                    secret,
                    reason: format!(
                        "has no {CA_CERT_FILE} or no {CA_KEY_FILE}; delete it to have a new root made (every workload then needs a new certificate)"
                    ),
                });
            };
            std::fs::create_dir_all(state_dir).map_err(|e| write_err(state_dir, e))?;
            for (file, value) in [(ROOT_CERT_FILE, cert), (CA_KEY_FILE, key)] {
                let path = state_dir.join(file);
                write(&path, value).map_err(|e| write_err(&path, e))?;
            }
            tracing::info!(secret = %secret, "CA: self-signed root kept in the cluster");
            return Ok(CaMaterial::SelfSigned);
        }
        // First start: a new root (or the one this state directory already holds), stored
        // for the next start and the other replicas; another replica may have been first.
        weft_identity::CertificateAuthority::load_or_create(state_dir, trust_domain).map_err(
            |e| KubeError::CaFile {
                path: state_dir.display().to_string(),
                reason: e.to_string(),
            },
        )?;
        let file = |name: &str| {
            let path = state_dir.join(name);
            std::fs::read(&path).map_err(|e| write_err(&path, e))
        };
        let secret = Secret {
            metadata: ObjectMeta {
                name: Some(SELF_SIGNED_SECRET.into()),
                namespace: Some(namespace.into()),
                ..Default::default()
            },
            type_: Some("istio.io/ca-root".into()),
            data: Some(BTreeMap::from([
                (CA_CERT_FILE.to_string(), ByteString(file(ROOT_CERT_FILE)?)),
                (CA_KEY_FILE.to_string(), ByteString(file(CA_KEY_FILE)?)),
            ])),
            ..Default::default()
        };
        match secrets.create(&PostParams::default(), &secret).await {
            Ok(_) => {
                tracing::info!(secret = %format!("{namespace}/{SELF_SIGNED_SECRET}"), "CA: self-signed root stored in the cluster");
                return Ok(CaMaterial::SelfSigned);
            }
            Err(kube::Error::Api(e)) if e.code == 409 => {
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                continue;
            }
            Err(kube::Error::Api(e)) if e.code == 404 => {
                // A control plane run from outside the cluster, for a namespace that does not
                // exist there: the root stays in the state directory only.
                tracing::warn!(
                    namespace,
                    dir = %state_dir.display(),
                    "CA: namespace {namespace} does not exist, so the self-signed root is kept only in the state directory (create the namespace, or run `weft install`, to keep it in Secret {SELF_SIGNED_SECRET})"
                );
                return Ok(CaMaterial::SelfSigned);
            }
            Err(source) => {
                return Err(KubeError::Secret {
                    what: format!("create Secret {namespace}/{SELF_SIGNED_SECRET}"),
                    source,
                });
            }
        }
    }
    Err(KubeError::CaSecret {
        secret: format!("{namespace}/{SELF_SIGNED_SECRET}"),
        reason: "could not be created (it exists) nor read (it does not) after 5 attempts; check the API server".into(),
    })
}

fn data(s: &Secret) -> BTreeMap<String, Vec<u8>> {
    s.data
        .iter()
        .flatten()
        .filter(|(_, v)| !v.0.is_empty())
        .map(|(k, v)| (k.clone(), v.0.clone()))
        .collect()
}

/// Writes a file readable by its owner only (keys among them), an existing one included.
fn write(path: &Path, value: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    f.write_all(value)
}
