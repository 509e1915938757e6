//! The CA root published to every namespace as istiod publishes it: ConfigMap
//! `istio-ca-root-cert`, key `root-cert.pem`, in each namespace that is not terminating, written
//! when missing or different (a watch of the namespaces and of those ConfigMaps says when to
//! look again).

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};

/// The ConfigMap's name and key, Istio's.
pub const CONFIGMAP: &str = "istio-ca-root-cert";
pub const KEY: &str = "root-cert.pem";

/// The namespaces whose ConfigMap is missing or holds another root.
pub fn stale(namespaces: &[Arc<Namespace>], maps: &[Arc<ConfigMap>], root: &str) -> Vec<String> {
    let current: BTreeMap<&str, Option<&String>> = maps
        .iter()
        .filter(|m| m.metadata.name.as_deref() == Some(CONFIGMAP))
        .filter_map(|m| {
            Some((
                m.metadata.namespace.as_deref()?,
                m.data.as_ref().and_then(|d| d.get(KEY)),
            ))
        })
        .collect();
    namespaces
        .iter()
        .filter(|n| {
            n.status.as_ref().and_then(|s| s.phase.as_deref()) != Some("Terminating")
                && n.metadata.deletion_timestamp.is_none()
        })
        .filter_map(|n| n.metadata.name.clone())
        .filter(|n| {
            current
                .get(n.as_str())
                .copied()
                .flatten()
                .map(String::as_str)
                != Some(root)
        })
        .collect()
}

/// Keeps every namespace's ConfigMap current until the process ends.
pub async fn publish(client: kube::Client, root: String) {
    let (namespaces, w) = reflector::store::<Namespace>();
    let (maps, wm) = reflector::store::<ConfigMap>();
    let changed = Arc::new(tokio::sync::Notify::new());
    let ns_stream = reflector::reflector(
        w,
        watcher(
            Api::<Namespace>::all(client.clone()),
            watcher::Config::default(),
        ),
    )
    .default_backoff();
    let map_stream = reflector::reflector(
        wm,
        watcher(
            Api::<ConfigMap>::all(client.clone()),
            watcher::Config::default().fields(&format!("metadata.name={CONFIGMAP}")),
        ),
    )
    .default_backoff();
    let streams: [futures::stream::BoxStream<'static, ()>; 2] = [
        ns_stream.map(|_| ()).boxed(),
        map_stream.map(|_| ()).boxed(),
    ];
    for stream in streams {
        let changed = changed.clone();
        tokio::spawn(async move {
            futures::pin_mut!(stream);
            while stream.next().await.is_some() {
                changed.notify_one();
            }
        });
    }
    if namespaces.wait_until_ready().await.is_err() || maps.wait_until_ready().await.is_err() {
        return;
    }
    loop {
        reconcile(&client, &namespaces, &maps, &root).await;
        changed.notified().await;
    }
}

async fn reconcile(
    client: &kube::Client,
    namespaces: &Store<Namespace>,
    maps: &Store<ConfigMap>,
    root: &str,
) {
    for ns in stale(&namespaces.state(), &maps.state(), root) {
        let cm = serde_json::json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": CONFIGMAP, "namespace": ns, "labels": {"istio.io/config": "true"}},
            "data": {KEY: root},
        });
        let api: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
        let params = PatchParams::apply("weft-control").force();
        if let Err(e) = api.patch(CONFIGMAP, &params, &Patch::Apply(&cm)).await {
            let hint = match &e {
                kube::Error::Api(s) if s.code == 403 => {
                    "; grant the control plane create and patch on configmaps"
                }
                _ => "",
            };
            tracing::warn!(namespace = %ns, error = %e, "cannot publish the CA root as ConfigMap {CONFIGMAP}{hint}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ns(name: &str, phase: &str) -> Arc<Namespace> {
        Arc::new(
            serde_json::from_value(
                serde_json::json!({"metadata": {"name": name}, "status": {"phase": phase}}),
            )
            .expect("namespace"),
        )
    }

    fn cm(ns: &str, root: &str) -> Arc<ConfigMap> {
        Arc::new(
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": CONFIGMAP, "namespace": ns}, "data": {KEY: root}}))
            .expect("configmap"),
        )
    }

    #[test]
    fn missing_and_outdated_roots_are_written_terminating_namespaces_left() {
        let namespaces = [
            ns("a", "Active"),
            ns("b", "Active"),
            ns("c", "Active"),
            ns("gone", "Terminating"),
        ];
        let maps = [cm("a", "ROOT"), cm("b", "OLD")];
        assert_eq!(stale(&namespaces, &maps, "ROOT"), ["b", "c"]);
    }
}
