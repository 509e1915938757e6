#![forbid(unsafe_code)]
//! Weft on Kubernetes: the control plane's Kubernetes config source — Istio's custom resources
//! and the registry from Services, EndpointSlices, Pods and Nodes, watched through the API
//! server ([`KubeSource`], fed to `weft_control::run_with`).

pub mod cacerts;
pub mod config;
pub mod inject;
pub mod install;
pub mod registry;
pub mod rootcert;
pub mod source;
pub mod status;
pub mod tokenreview;
pub mod webhook;

use std::path::Path;

pub use source::KubeSource;

/// What can go wrong talking to the API server.
#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    #[error(
        "cannot read the kubeconfig {path}: {source}; pass a readable --kubeconfig, or run in a pod with a service account"
    )]
    Kubeconfig {
        path: String,
        source: kube::config::KubeconfigError,
    },
    #[error(
        "cannot find the cluster: {source}; pass --kubeconfig, or run in a pod with a service account"
    )]
    Infer {
        source: kube::config::InferConfigError,
    },
    #[error("cannot make a client for the API server: {source}")]
    Client { source: kube::Error },
    #[error(
        "API discovery of Istio's groups failed: {source}; is the API server reachable and the caller allowed to list API groups?"
    )]
    Discovery { source: kube::Error },
    #[error("a watch ended before its first list; the control plane is shutting down")]
    WatchEnded,
    #[error("cannot delete {what}: {source}")]
    Delete { what: String, source: kube::Error },
    #[error(
        "cannot {what}: {source}; the control plane's service account needs get on Secrets cacerts and istio-ca-secret and create on Secrets in its namespace (weft install grants them)"
    )]
    Secret { what: String, source: kube::Error },
    #[error("Secret {secret} {reason}")]
    CaSecret { secret: String, reason: String },
    #[error("CA material at {path}: {reason}")]
    CaFile { path: String, reason: String },
}

/// A client for the cluster of `kubeconfig` (its current context), or, without one, the
/// in-cluster service account (or `$KUBECONFIG`, or `~/.kube/config`).
pub async fn client(kubeconfig: Option<&Path>) -> Result<kube::Client, KubeError> {
    let config = match kubeconfig {
        Some(path) => {
            let kc = kube::config::Kubeconfig::read_from(path).map_err(|source| {
                KubeError::Kubeconfig {
                    path: path.display().to_string(),
                    source,
                }
            })?;
            kube::Config::from_custom_kubeconfig(kc, &Default::default())
                .await
                .map_err(|source| KubeError::Kubeconfig {
                    path: path.display().to_string(),
                    source,
                })?
        }
        None => kube::Config::infer()
            .await
            .map_err(|source| KubeError::Infer { source })?,
    };
    kube::Client::try_from(config).map_err(|source| KubeError::Client { source })
}
