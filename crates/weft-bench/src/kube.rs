//! The fleet as a Kubernetes cluster holds it, for `weft bench xds --kubeconfig`: each service
//! a Service (selecting its pods by `app`, ports http 8080 and tcp 9000) with its
//! ServiceAccount, each workload a Pod bound to one Node and reported Running and Ready at its
//! address, as a kubelet would; the controller manager makes the EndpointSlices. The timed
//! changes are the directory's, made through the API server (a pod added, a Service with a pod
//! added, a pod relabelled to another service), and the churned workload is a pod replaced by
//! one at the next address every write (a pod's IP never changes).

use std::collections::BTreeMap;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Namespace, Node, Pod, Service, ServiceAccount};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::json;

use crate::error::BenchError;
use crate::fleet::{FleetLayout, HTTP_PORT, TCP_PORT};

/// The Node every bench pod is bound to.
const NODE: &str = "bench-node";
/// API requests in flight while the fleet is created.
const IN_FLIGHT: usize = 32;

/// A workload to run as a pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PodSpec {
    pub name: String,
    pub namespace: String,
    pub address: String,
    pub app: String,
    pub version: String,
    pub service_account: String,
}

/// The cluster the fleet lives in.
#[derive(Clone)]
pub(crate) struct KubeFleet {
    client: kube::Client,
}

fn api_err(what: String) -> impl FnOnce(kube::Error) -> BenchError {
    move |source| BenchError::Kube { what, source }
}

/// Create, or leave alone when it exists.
async fn create<K>(api: &Api<K>, obj: &K, what: String) -> Result<(), BenchError>
where
    K: kube::Resource + Clone + std::fmt::Debug + serde::Serialize + serde::de::DeserializeOwned,
{
    match api.create(&PostParams::default(), obj).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
        Err(e) => Err(api_err(what)(e)),
    }
}

fn from_json<K: serde::de::DeserializeOwned>(v: serde_json::Value) -> Result<K, BenchError> {
    serde_json::from_value(v).map_err(BenchError::Json)
}

impl KubeFleet {
    pub(crate) async fn connect(kubeconfig: &std::path::Path) -> Result<Self, BenchError> {
        let client = weft_kube::client(Some(kubeconfig)).await.map_err(|e| {
            BenchError::InvalidArgs(format!("--kubeconfig {}: {e}", kubeconfig.display()))
        })?;
        Ok(KubeFleet { client })
    }

    /// Creates the namespaces, the Node, and every service and workload of `layout`, in a
    /// cluster that holds no fleet yet (a leftover churned pod or workload would be taken for
    /// this run's).
    pub(crate) async fn create_fleet(&self, layout: &FleetLayout) -> Result<(), BenchError> {
        let nodes: Api<Node> = Api::all(self.client.clone());
        if nodes
            .get_opt(NODE)
            .await
            .map_err(api_err(format!("read Node {NODE}")))?
            .is_some()
        {
            return Err(BenchError::InvalidArgs(format!(
                "the cluster already holds a bench fleet (Node {NODE}); run each --kubeconfig bench on a fresh cluster (scripts/kube-cluster down, then up)"
            )));
        }
        let namespaces: std::collections::BTreeSet<&str> = layout
            .services
            .iter()
            .map(|s| s.namespace.as_str())
            .collect();
        for ns in namespaces {
            let api: Api<Namespace> = Api::all(self.client.clone());
            create(
                &api,
                &from_json(json!({"metadata": {"name": ns}}))?,
                format!("create Namespace {ns}"),
            )
            .await?;
        }
        create(
            &nodes,
            &from_json(json!({"metadata": {"name": NODE, "labels": {
                "topology.kubernetes.io/region": "bench", "topology.kubernetes.io/zone": "bench-a"}}}))?,
            format!("create Node {NODE}"),
        )
        .await?;
        futures::stream::iter(layout.services.iter().map(|s| {
            let this = self.clone();
            async move { this.service(&s.name, &s.namespace).await }
        }))
        .buffer_unordered(IN_FLIGHT)
        .try_collect::<Vec<()>>()
        .await?;
        futures::stream::iter(layout.workloads.iter().map(|w| {
            let this = self.clone();
            // `svc-<i>-<j>`: version `v<j>`, as the directory's WorkloadEntries.
            let j = w.name.rsplit('-').next().unwrap_or("0");
            let spec = PodSpec {
                name: w.name.clone(),
                namespace: w.namespace.clone(),
                address: w.address.to_string(),
                app: layout.services[w.service].name.clone(),
                version: format!("v{j}"),
                service_account: w.service_account.clone(),
            };
            async move { this.pod(&spec).await }
        }))
        .buffer_unordered(IN_FLIGHT)
        .try_collect::<Vec<()>>()
        .await?;
        tracing::info!(
            services = layout.services.len(),
            pods = layout.workloads.len(),
            "fleet created in the cluster"
        );
        Ok(())
    }

    /// A Service selecting `app: name` and its ServiceAccount.
    pub(crate) async fn service(&self, name: &str, namespace: &str) -> Result<(), BenchError> {
        let sas: Api<ServiceAccount> = Api::namespaced(self.client.clone(), namespace);
        create(
            &sas,
            &from_json(json!({"metadata": {"name": name}}))?,
            format!("create ServiceAccount {namespace}/{name}"),
        )
        .await?;
        let svcs: Api<Service> = Api::namespaced(self.client.clone(), namespace);
        create(
            &svcs,
            &from_json(json!({
                "metadata": {"name": name},
                "spec": {"selector": {"app": name}, "ports": [
                    {"name": "http", "port": HTTP_PORT, "protocol": "TCP"},
                    {"name": "tcp", "port": TCP_PORT, "protocol": "TCP"},
                ]},
            }))?,
            format!("create Service {namespace}/{name}"),
        )
        .await
    }

    /// The pod of a workload, Running and Ready at its address; an existing one gets the
    /// spec's labels (its address cannot change).
    pub(crate) async fn pod(&self, p: &PodSpec) -> Result<(), BenchError> {
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &p.namespace);
        let what = format!("write Pod {}/{}", p.namespace, p.name);
        let labels = BTreeMap::from([("app", p.app.as_str()), ("version", p.version.as_str())]);
        let pod: Pod = from_json(json!({
            "metadata": {"name": p.name, "labels": labels},
            "spec": {
                "nodeName": NODE,
                "serviceAccountName": p.service_account,
                "automountServiceAccountToken": false,
                "containers": [{"name": "app", "image": "bench"}],
            },
        }))?;
        match pods.create(&PostParams::default(), &pod).await {
            Ok(_) => {}
            // It exists (a relabel): new labels, same address.
            Err(kube::Error::Api(e)) if e.code == 409 => {
                pods.patch(
                    &p.name,
                    &PatchParams::default(),
                    &Patch::Merge(json!({"metadata": {"labels": labels}})),
                )
                .await
                .map_err(api_err(what))?;
                return Ok(());
            }
            Err(e) => return Err(api_err(what)(e)),
        }
        let status = json!({"status": {
            "phase": "Running",
            "podIP": p.address,
            "podIPs": [{"ip": p.address}],
            "conditions": [{"type": "Ready", "status": "True"}],
        }});
        pods.patch_status(&p.name, &PatchParams::default(), &Patch::Merge(status))
            .await
            .map_err(api_err(what))?;
        Ok(())
    }

    /// Deletes a pod at once (no kubelet to wait for).
    pub(crate) async fn delete_pod(&self, namespace: &str, name: &str) -> Result<(), BenchError> {
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
        match pods
            .delete(name, &DeleteParams::default().grace_period(0))
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
            Err(e) => Err(api_err(format!("delete Pod {namespace}/{name}"))(e)),
        }
    }
}
