//! Prometheus (Debian's package) scraping the sidecars (`:15090/stats/prometheus`) and the
//! control plane (`:15014/metrics`), as an Istio user runs it: after sleep → httpbin traffic,
//! a PromQL query over `istio_requests_total` by destination service returns what the traffic
//! produced.

use std::time::Duration;

use serde_json::Value;

use crate::netns::{Mesh, wait_for};
use crate::security::{HTTPBIN, HTTPBIN_URL, SLEEP, curl, security_mesh};

const PROMETHEUS: u8 = 17;

fn query(mesh: &Mesh, promql: &str) -> Vec<Value> {
    let url = format!("http://{}:9090/api/v1/query", mesh.ip(PROMETHEUS));
    let out = mesh.curl_from(
        mesh.ns("prometheus"),
        &[
            "-s",
            "-m",
            "5",
            "-G",
            &url,
            "--data-urlencode",
            &format!("query={promql}"),
        ],
    );
    serde_json::from_slice::<Value>(&out.stdout)
        .ok()
        .and_then(|v| v["data"]["result"].as_array().cloned())
        .unwrap_or_default()
}

#[test]
fn prometheus_scrapes_the_mesh() {
    crate::netns::require_root();
    let mut mesh = security_mesh("");
    mesh.add_pod("prometheus", PROMETHEUS, None);
    let dir = mesh.dir.path().join("prometheus");
    std::fs::create_dir_all(&dir).expect("prometheus dir");
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global: {{scrape_interval: 1s, evaluation_interval: 1s}}\nscrape_configs:\n- job_name: envoy-stats\n  metrics_path: /stats/prometheus\n  static_configs:\n  - targets: [\"{}:15090\", \"{}:15090\"]\n- job_name: istiod\n  static_configs:\n  - targets: [\"{}:15014\"]\n",
            mesh.ip(SLEEP),
            mesh.ip(HTTPBIN),
            mesh.cp.ip
        ),
    )
    .expect("prometheus.yml");
    let config_arg = format!("--config.file={}", config.display());
    let storage = format!("--storage.tsdb.path={}", dir.join("data").display());
    mesh.spawn(
        "prometheus",
        "app",
        &[
            "prometheus",
            &config_arg,
            &storage,
            "--web.listen-address=0.0.0.0:9090",
        ],
    );
    wait_for(Duration::from_secs(30), "every target up", || {
        query(&mesh, "up == 1").len() == 3
    });

    let n = 17;
    for i in 0..n {
        let url = format!(
            "{HTTPBIN_URL}/status/{}",
            if i % 2 == 0 { 200 } else { 418 }
        );
        let code = curl(&mesh, "sleep", &[&url]).0;
        assert!(code == 200 || code == 418, "{code}");
    }
    let promql = "sum by (destination_service) (istio_requests_total{reporter=\"destination\"})";
    wait_for(
        Duration::from_secs(30),
        "the requests in Prometheus",
        || {
            query(&mesh, promql).iter().any(|r| {
                r["metric"]["destination_service"] == "httpbin.default.svc.cluster.local"
                    && r["value"][1]
                        .as_str()
                        .and_then(|v| v.parse::<f64>().ok())
                        .is_some_and(|v| v >= f64::from(n))
            })
        },
    );
    // By response code, as the Istio dashboards query it (the client sidecar's series may come
    // a scrape later).
    let by_code = "sum by (response_code) (istio_requests_total{reporter=\"source\",destination_service_name=\"httpbin\"})";
    wait_for(
        Duration::from_secs(30),
        "both response codes from the client side",
        || {
            let result = query(&mesh, by_code);
            let codes: Vec<&str> = result
                .iter()
                .filter_map(|r| r["metric"]["response_code"].as_str())
                .collect();
            codes.contains(&"200") && codes.contains(&"418")
        },
    );
    // The control plane's own metrics.
    assert!(
        !query(&mesh, "pilot_xds{job=\"istiod\"}").is_empty(),
        "no pilot_xds from the control plane"
    );
}
