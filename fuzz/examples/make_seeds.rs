//! Writes the seeds of the targets whose inputs are binary, from the test data:
//! `cargo run --manifest-path fuzz/Cargo.toml --example make_seeds`.
//! - `xds_snapshot`: the Listeners, Clusters, RouteConfigurations and ClusterLoadAssignments
//!   `weft control` generates for productpage's sidecar from `examples/bookinfo` (the first
//!   byte names the type, as the target reads it);
//! - `peer_metadata`: the `x-envoy-peer-metadata` header productpage's sidecar sends.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use weft_xds::{Generator, ProxyInfo, Subscription, types};

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut store =
        weft_control::store::ConfigStore::new(root.join("../examples/bookinfo"), None);
    let snap = store.load().expect("examples/bookinfo loads");
    assert!(snap.problems.is_empty(), "{:?}", snap.problems);
    let push =
        weft_control::push::PushContext::new("1".into(), snap.mesh.clone(), snap.resources.clone());
    let generator =
        weft_control::generator::MeshGenerator::new(Arc::new(arc_swap::ArcSwap::from_pointee(push)));
    let proxy = ProxyInfo {
        id: "sidecar~10.42.0.10~productpage.default~default.svc.cluster.local".into(),
        cluster: String::new(),
        metadata: serde_json::json!({}),
        peer_addr: None,
        conn_id: 1,
    };
    let dir = root.join("corpus/xds_snapshot");
    std::fs::create_dir_all(&dir).expect("corpus dir");
    let mut written = 0;
    for (kind, type_url) in [
        (0u8, types::LISTENER),
        (1, types::CLUSTER),
        (2, types::ROUTE),
        (3, types::ENDPOINT),
    ] {
        let generated = generator
            .generate(&proxy, type_url, &Subscription::Wildcard)
            .expect("generated");
        for r in generated.resources {
            let name: String = r
                .name()
                .chars()
                .map(|c| if c.is_ascii_alphanumeric() || c == '.' { c } else { '_' })
                .collect();
            let mut bytes = vec![kind];
            bytes.extend_from_slice(&r.resource().value);
            std::fs::write(dir.join(format!("{kind}-{name}")), bytes).expect("seed written");
            written += 1;
        }
    }
    let md = weft_telemetry::NodeMetadata {
        name: "productpage".into(),
        namespace: "default".into(),
        labels: BTreeMap::from([
            ("app".to_string(), "productpage".to_string()),
            ("version".to_string(), "v1".to_string()),
        ]),
        service_account: "bookinfo-productpage".into(),
        workload_name: "productpage".into(),
        cluster_id: "Kubernetes".into(),
        mesh_id: "cluster.local".into(),
        app_containers: vec!["productpage".into()],
        instance_ips: vec!["10.42.0.10".into()],
        owner: "kubernetes://apis/apps/v1/namespaces/default/deployments/productpage-v1".into(),
        istio_version: "1.14.6".into(),
        platform_metadata: BTreeMap::new(),
    };
    let pm = root.join("corpus/peer_metadata");
    std::fs::create_dir_all(&pm).expect("corpus dir");
    std::fs::write(
        pm.join("productpage"),
        weft_telemetry::peer::encode_peer_header(&md),
    )
    .expect("seed written");
    println!("{written} xds_snapshot seeds, 1 peer_metadata seed");
}
