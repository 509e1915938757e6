//! Config sources beside the directory: a platform such as Kubernetes (`weft-kube`) gives Istio
//! resources (its custom resources), their problems and its own registry ([`Platform`]); the
//! config store merges what it holds with the directory's at each load.

use std::sync::Arc;

use tokio::sync::mpsc;
use weft_api::{MeshConfig, Resource};

use crate::registry::Platform;

/// What a source holds at one moment.
#[derive(Debug, Clone, Default)]
pub struct SourceSnapshot {
    /// Istio resources, each with its origin in `source.file` (e.g.
    /// `kubernetes:virtualservices.networking.istio.io/default/reviews`).
    pub resources: Vec<Resource>,
    /// Problems of the objects left out, one line each, as the directory's.
    pub problems: Vec<String>,
    /// The platform's services, endpoints and workloads.
    pub platform: Arc<Platform>,
    /// The mesh config the platform keeps (Istio: ConfigMap `istio`, key `mesh`), if any; it
    /// takes the place of `--mesh-config`'s.
    pub mesh: Option<Arc<MeshConfig>>,
}

/// A source of config watched beside the directory.
pub trait Source: Send + Sync + 'static {
    /// What the source holds now.
    fn snapshot(&self) -> SourceSnapshot;

    /// From now on, sends on `changed` after every change (the source watches on its own
    /// and holds its initial state before it is handed to the control plane).
    fn notify(&self, changed: mpsc::UnboundedSender<()>);

    /// How the CA tells whose a bearer token is, when the platform knows (Kubernetes'
    /// TokenReview).
    fn token_reviewer(&self) -> Option<Arc<dyn crate::ca::TokenReviewer>> {
        None
    }

    /// Servers the platform needs beside xDS (Kubernetes' admission webhooks), given the
    /// control plane's CA and its current push context (the mesh config and resources in
    /// force); the control plane runs them on its runtime.
    fn servers(
        &self,
        ca: Arc<weft_identity::CertificateAuthority>,
        push: Arc<arc_swap::ArcSwap<crate::push::PushContext>>,
    ) -> Vec<ServerFuture> {
        let _ = (ca, push);
        Vec::new()
    }
}

/// A server a source runs (it ends only with the process).
pub type ServerFuture = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;
