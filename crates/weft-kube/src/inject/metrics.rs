//! Istio's Prometheus metrics merge at injection (`applyPrometheusMerge`): unless the pod says
//! `prometheus.io/scrape: "false"` or merging is off (the pod's
//! `prometheus.istio.io/merge-metrics` annotation, else MeshConfig `enablePrometheusMerge`,
//! default on), the pod's `prometheus.io/{scrape,port,path}` annotations are pointed at the
//! sidecar's status port (`15020/stats/prometheus`) and the app's own go to the sidecar as JSON
//! in `ISTIO_PROMETHEUS_ANNOTATIONS`, which serves both (weft-proxy's app_metrics.rs).

use k8s_openapi::api::core::v1::Pod;
use serde_json::json;
use weft_api::go_bool;

use super::probe::STATUS_PORT;

/// The pod annotation that turns merging on or off for the pod.
pub const MERGE_ANNOTATION: &str = "prometheus.istio.io/merge-metrics";
/// The sidecar's environment variable with the app's annotations.
pub const ENV: &str = "ISTIO_PROMETHEUS_ANNOTATIONS";

const SCRAPE: &str = "prometheus.io/scrape";
const PORT: &str = "prometheus.io/port";
const PATH: &str = "prometheus.io/path";

/// What the merge does to a pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Merge {
    /// The annotations to set (scrape, port, path).
    pub annotations: [(&'static str, String); 3],
    /// `ISTIO_PROMETHEUS_ANNOTATIONS` for the sidecar, when the pod had any of the annotations.
    pub env: Option<String>,
}

/// The merge for `pod`, or `None` when its annotations are left as they are: scraping turned
/// off by the pod, merging turned off, or the pod already pointing at the status port (injected
/// before, or set so by its owner).
pub fn merge(pod: &Pod, mesh_enabled: bool) -> Option<Merge> {
    let annotations = pod.metadata.annotations.as_ref();
    let get = |k: &str| annotations.and_then(|a| a.get(k)).map(String::as_str);
    if get(SCRAPE).and_then(go_bool) == Some(false) {
        return None;
    }
    let enabled = get(MERGE_ANNOTATION)
        .and_then(go_bool)
        .unwrap_or(mesh_enabled);
    if !enabled {
        return None;
    }
    let status_port = STATUS_PORT.to_string();
    if get(PORT) == Some(status_port.as_str()) {
        return None;
    }
    let (scrape, port, path) = (get(SCRAPE), get(PORT), get(PATH));
    let env = (scrape.is_some() || port.is_some() || path.is_some()).then(|| {
        json!({
            "scrape": scrape.unwrap_or_default(),
            "path": path.unwrap_or_default(),
            "port": port.unwrap_or_default(),
        })
        .to_string()
    });
    Some(Merge {
        annotations: [
            (SCRAPE, "true".into()),
            (PORT, status_port),
            (PATH, "/stats/prometheus".into()),
        ],
        env,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(annotations: serde_json::Value) -> Pod {
        serde_json::from_value(
            json!({"metadata": {"name": "a", "annotations": annotations},
                                      "spec": {"containers": [{"name": "app"}]}}),
        )
        .expect("pod")
    }

    #[test]
    fn merged_as_istios_injector_merges() {
        // No annotations: pointed at the sidecar, nothing of the app's to scrape.
        let m = merge(&pod(json!({})), true).expect("merged");
        assert_eq!(m.env, None);
        assert_eq!(m.annotations[1], (PORT, "15020".to_string()));
        assert_eq!(m.annotations[2], (PATH, "/stats/prometheus".to_string()));
        // The app's own: kept for the sidecar.
        let m = merge(
            &pod(json!({SCRAPE: "true", PORT: "9080", PATH: "/stats"})),
            true,
        )
        .expect("merged");
        let env: serde_json::Value = serde_json::from_str(&m.env.expect("env")).unwrap();
        assert_eq!(
            env,
            json!({"scrape": "true", "port": "9080", "path": "/stats"})
        );
        // Off: by the pod's scrape annotation, by the mesh, by the pod's merge annotation.
        assert_eq!(merge(&pod(json!({SCRAPE: "false"})), true), None);
        assert_eq!(merge(&pod(json!({})), false), None);
        assert_eq!(merge(&pod(json!({MERGE_ANNOTATION: "f"})), true), None);
        assert!(merge(&pod(json!({MERGE_ANNOTATION: "true"})), false).is_some());
        // An unreadable merge annotation leaves the mesh's choice.
        assert!(merge(&pod(json!({MERGE_ANNOTATION: "maybe"})), true).is_some());
        // Already at the status port: left alone.
        assert_eq!(merge(&pod(json!({PORT: "15020"})), true), None);
    }
}
