//! The Kubernetes config source: list+watch (kube-runtime's watcher: resumes from the last
//! resource version, lists again on 410 Gone, backs off on errors) of Services,
//! EndpointSlices, Pods, Nodes and Namespaces for the registry (MeshConfig `discoverySelectors`
//! pick the namespaces it is made from), and of the Istio kinds the API server serves, each
//! into a reflector store; the control plane reads the stores at each load.

use std::sync::{Arc, Mutex};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, ApiResource, DynamicObject};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource};
use tokio::sync::mpsc;
use weft_control::source::{Source, SourceSnapshot};

use crate::KubeError;
use crate::config;
use crate::registry::{self, Objects};
use crate::status;

type Notify = Arc<Mutex<Option<mpsc::UnboundedSender<()>>>>;

fn notify(n: &Notify) {
    if let Some(tx) = n.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
        let _ = tx.send(());
    }
}

/// An Istio kind the API server serves, and its store.
struct IstioKind {
    resource: ApiResource,
    store: Store<DynamicObject>,
}

/// Kubernetes as a config source: holds the latest state of everything it watches.
pub struct KubeSource {
    services: Store<Service>,
    slices: Store<EndpointSlice>,
    pods: Store<Pod>,
    nodes: Store<Node>,
    /// For MeshConfig `discoverySelectors` (namespaces by their labels).
    namespaces: Store<Namespace>,
    istio: Vec<IstioKind>,
    /// The ConfigMap `istio` of the control plane's namespace (key `mesh`: the MeshConfig).
    mesh: Store<ConfigMap>,
    mesh_origin: String,
    /// The last MeshConfig that parsed, kept while the ConfigMap holds a bad one.
    good_mesh: Mutex<Option<Arc<weft_api::MeshConfig>>>,
    notify: Notify,
    client: Client,
    /// The admission webhooks to serve, if any.
    webhook: Option<crate::webhook::WebhookOptions>,
}

/// The ConfigMap Istio keeps its MeshConfig in, in the control plane's namespace.
pub const MESH_CONFIGMAP: &str = "istio";

/// Runs a reflector for `api` into `writer` until the process ends; every event notifies.
fn reflect<K>(api: Api<K>, writer: reflector::store::Writer<K>, what: String, n: Notify)
where
    K: Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + Sync + 'static,
    K::DynamicType: Clone + Eq + std::hash::Hash + Send + Sync,
{
    reflect_with(api, watcher::Config::default(), writer, what, n);
}

/// As [`reflect`], with the watch's selectors.
fn reflect_with<K>(
    api: Api<K>,
    config: watcher::Config,
    writer: reflector::store::Writer<K>,
    what: String,
    n: Notify,
) where
    K: Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + Sync + 'static,
    K::DynamicType: Clone + Eq + std::hash::Hash + Send + Sync,
{
    let stream = reflector::reflector(writer, watcher(api, config)).default_backoff();
    tokio::spawn(async move {
        futures::pin_mut!(stream);
        let mut failing = false;
        while let Some(ev) = stream.next().await {
            match ev {
                Ok(_) => {
                    if failing {
                        tracing::info!(watch = %what, "watch resumed");
                        failing = false;
                    }
                    notify(&n);
                }
                Err(e) => {
                    if !failing {
                        tracing::warn!(watch = %what, error = %e, "watch failed; retrying with back-off (the last state stays in force)");
                    }
                    failing = true;
                }
            }
        }
    });
}

impl KubeSource {
    /// Starts the watches and waits for their first lists. Istio kinds the API server does
    /// not serve (their CRDs not installed) are named in the log and left out. The MeshConfig
    /// comes from the ConfigMap `istio` (key `mesh`) in `namespace`, the control plane's.
    pub async fn start(client: Client, namespace: &str) -> Result<KubeSource, KubeError> {
        let n: Notify = Arc::default();
        let (mesh, w) = reflector::store();
        reflect_with(
            Api::<ConfigMap>::namespaced(client.clone(), namespace),
            watcher::Config::default().fields(&format!("metadata.name={MESH_CONFIGMAP}")),
            w,
            format!("configmap {namespace}/{MESH_CONFIGMAP}"),
            n.clone(),
        );
        let (services, w) = reflector::store();
        reflect(
            Api::<Service>::all(client.clone()),
            w,
            "services".into(),
            n.clone(),
        );
        let (slices, w) = reflector::store();
        reflect(
            Api::<EndpointSlice>::all(client.clone()),
            w,
            "endpointslices".into(),
            n.clone(),
        );
        let (pods, w) = reflector::store();
        reflect(Api::<Pod>::all(client.clone()), w, "pods".into(), n.clone());
        let (nodes, w) = reflector::store();
        reflect(
            Api::<Node>::all(client.clone()),
            w,
            "nodes".into(),
            n.clone(),
        );

        let (namespaces, w) = reflector::store();
        reflect(
            Api::<Namespace>::all(client.clone()),
            w,
            "namespaces".into(),
            n.clone(),
        );

        let discovery = kube::Discovery::new(client.clone())
            .filter(&config::GROUPS)
            .run()
            .await
            .map_err(|source| KubeError::Discovery { source })?;
        let mut istio = Vec::new();
        for (group, kind) in config::KINDS {
            let found = discovery
                .groups()
                .find(|g| g.name() == group)
                .and_then(|g| served_kind(g, kind));
            let Some((resource, _caps)) = found else {
                tracing::warn!(
                    kind = %format!("{kind}.{group}"),
                    "the API server does not serve this Istio kind (CRD not installed: `weft install`); its resources are not read"
                );
                continue;
            };
            let api = Api::<DynamicObject>::all_with(client.clone(), &resource);
            let writer = reflector::store::Writer::new(resource.clone());
            let store = writer.as_reader();
            let what = format!("{}.{}", resource.plural, resource.group);
            reflect(api, writer, what, n.clone());
            istio.push(IstioKind { resource, store });
        }

        let wait = async {
            services.wait_until_ready().await?;
            slices.wait_until_ready().await?;
            pods.wait_until_ready().await?;
            nodes.wait_until_ready().await?;
            namespaces.wait_until_ready().await?;
            mesh.wait_until_ready().await?;
            for k in &istio {
                k.store.wait_until_ready().await?;
            }
            Ok::<_, reflector::store::WriterDropped>(())
        };
        wait.await.map_err(|_| KubeError::WatchEnded)?;
        tracing::info!(
            istio_kinds = istio.len(),
            services = services.len(),
            pods = pods.len(),
            "Kubernetes watches synced"
        );
        Ok(KubeSource {
            services,
            slices,
            pods,
            nodes,
            namespaces,
            istio,
            mesh,
            mesh_origin: format!("kubernetes:configmaps/{namespace}/{MESH_CONFIGMAP}"),
            good_mesh: Mutex::default(),
            notify: n,
            client,
            webhook: None,
        })
    }
}

impl KubeSource {
    /// Serves the admission webhooks (sidecar injection, validation) too.
    pub fn with_webhook(mut self, o: crate::webhook::WebhookOptions) -> Self {
        self.webhook = Some(o);
        self
    }

    /// The MeshConfig of the ConfigMap, if there is one with a `mesh` key. A bad one is a
    /// problem, and the last good one stays in force.
    fn mesh_config(&self, problems: &mut Vec<String>) -> Option<Arc<weft_api::MeshConfig>> {
        let cm = self
            .mesh
            .state()
            .into_iter()
            .find(|c| c.metadata.name.as_deref() == Some(MESH_CONFIGMAP))?;
        let text = cm.data.as_ref()?.get("mesh")?;
        let mut good = self.good_mesh.lock().unwrap_or_else(|p| p.into_inner());
        match weft_api::parse_mesh_config(text, std::path::Path::new(&self.mesh_origin)) {
            Ok(m) => {
                let m = Arc::new(m);
                *good = Some(m.clone());
                Some(m)
            }
            Err(ps) => {
                problems.extend(ps.iter().map(|p| p.to_string()));
                good.clone()
            }
        }
    }
}

impl Source for KubeSource {
    fn snapshot(&self) -> SourceSnapshot {
        let mut problems = Vec::new();
        let mesh = self.mesh_config(&mut problems);
        let (mut services, mut slices, mut pods, nodes) = (
            self.services.state(),
            self.slices.state(),
            self.pods.state(),
            self.nodes.state(),
        );
        // MeshConfig discoverySelectors: only the selected namespaces' Services, EndpointSlices
        // and Pods make the registry (Istio's discovery scope); none: every namespace.
        if let Some(m) = mesh.as_ref().filter(|m| !m.discovery_selectors.is_empty()) {
            let selected: std::collections::HashSet<String> = self
                .namespaces
                .state()
                .iter()
                .filter(|ns| {
                    let labels = ns.metadata.labels.clone().unwrap_or_default();
                    m.discovery_selectors.iter().any(|sel| sel.matches(&labels))
                })
                .filter_map(|ns| ns.metadata.name.clone())
                .collect();
            let keep = |ns: &Option<String>| ns.as_ref().is_some_and(|n| selected.contains(n));
            services.retain(|o| keep(&o.metadata.namespace));
            slices.retain(|o| keep(&o.metadata.namespace));
            pods.retain(|o| keep(&o.metadata.namespace));
        }
        let platform = registry::build(
            &Objects {
                services: &services,
                slices: &slices,
                pods: &pods,
                nodes: &nodes,
            },
            weft_control::push::DOMAIN_SUFFIX,
        );
        let mut resources = Vec::new();
        for k in &self.istio {
            let mut objects = k.store.state();
            objects.sort_by(|a, b| {
                (&a.metadata.namespace, &a.metadata.name)
                    .cmp(&(&b.metadata.namespace, &b.metadata.name))
            });
            for obj in objects {
                let origin = config::origin(&k.resource.plural, &k.resource.group, &obj);
                let parsed =
                    config::parse(&k.resource.api_version, &k.resource.kind, &origin, &obj);
                let own = match config::outcome(&parsed) {
                    Ok(rs) => {
                        resources.extend(rs);
                        Vec::new()
                    }
                    Err(ps) => {
                        problems.extend(ps.iter().cloned());
                        ps
                    }
                };
                // The validation result in the object's status (status.rs), off this thread.
                if let Some(status) = status::desired(&obj, &own)
                    && let Ok(rt) = tokio::runtime::Handle::try_current()
                    && let (Some(ns), Some(name)) =
                        (obj.metadata.namespace.clone(), obj.metadata.name.clone())
                {
                    rt.spawn(status::write(
                        self.client.clone(),
                        k.resource.clone(),
                        ns,
                        name,
                        status,
                    ));
                }
            }
        }
        SourceSnapshot {
            resources,
            mesh,
            problems,
            platform: Arc::new(platform),
        }
    }

    fn notify(&self, changed: mpsc::UnboundedSender<()>) {
        *self.notify.lock().unwrap_or_else(|p| p.into_inner()) = Some(changed);
    }

    fn servers(
        &self,
        ca: Arc<weft_identity::CertificateAuthority>,
        push: Arc<arc_swap::ArcSwap<weft_control::push::PushContext>>,
    ) -> Vec<weft_control::source::ServerFuture> {
        let mut servers: Vec<weft_control::source::ServerFuture> = vec![Box::pin(
            crate::rootcert::publish(self.client.clone(), ca.root_pem()),
        )];
        if let Some(o) = self.webhook.clone() {
            servers.push(Box::pin(crate::webhook::serve(
                self.client.clone(),
                o,
                ca,
                push,
            )));
        }
        servers
    }

    fn token_reviewer(&self) -> Option<Arc<dyn weft_control::ca::TokenReviewer>> {
        Some(Arc::new(crate::tokenreview::KubeTokenReviewer::new(
            self.client.clone(),
        )))
    }
}

/// The version a kind is read at: the group's preferred version when Weft reads it there, else
/// the first served version Weft reads (ProxyConfig is served at v1beta1 only, while its group
/// prefers v1); when the API server serves the kind only at versions Weft does not know, the
/// preferred one, whose objects then each get a problem naming their apiVersion (status and
/// log).
fn served_kind(
    group: &kube::discovery::ApiGroup,
    kind: &str,
) -> Option<(
    kube::discovery::ApiResource,
    kube::discovery::ApiCapabilities,
)> {
    let known = |version: &str| {
        weft_api::Kind::from_name(kind).is_some_and(|k| {
            k.api_versions()
                .contains(&format!("{}/{version}", group.name()).as_str())
        })
    };
    let serving = |version: &str| {
        group
            .versioned_resources(version)
            .into_iter()
            .find(|(ar, _)| ar.kind == kind)
    };
    let preferred = group.preferred_version_or_latest();
    if known(preferred)
        && let Some(found) = serving(preferred)
    {
        return Some(found);
    }
    group
        .versions()
        .filter(|v| known(v))
        .find_map(serving)
        .or_else(|| {
            let found = serving(preferred)
                .or_else(|| group.versions().find_map(serving))?;
            tracing::warn!(
                kind = %format!("{kind}.{}", group.name()),
                version = %found.0.version,
                "the API server serves this Istio kind only at versions Weft does not read; each object gets a problem in its status"
            );
            Some(found)
        })
}
