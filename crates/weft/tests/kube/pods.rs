//! Istio's bookinfo on Kubernetes, end to end: its manifest and the sleep sample applied
//! unchanged in a namespace labelled for injection, every pod injected by `weft control`'s
//! webhook and run (by the test's kubelet) with the injected `istio-init` and `istio-proxy`
//! commands in a network namespace of its own; the sidecars get their certificates from the
//! CA with the pods' real ServiceAccount tokens. `curl` in the sleep pod loads the product page
//! through the chain over mTLS with the bookinfo service accounts' SPIFFE IDs; Istio's
//! networking samples applied with kubectl change the routing live; endpoints scaled, made
//! unready and deleted reach the sidecars (times printed, not asserted).

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::cluster::{Cluster, Control, SAMPLES, wait_for};
use crate::kubelet::{IMAGE, Kubelet};
use crate::netns::{Mesh, next_id, ns_exec};

const NS: &str = "bookinfo";
const SAMPLES_CURRENT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../../shared/istio/samples-current"
);

/// Bookinfo's images stand in for by `weft sample bookinfo`, by the pod's app and version.
fn stand_in(pod: &Value, c: &Value) -> Option<Vec<String>> {
    let image = c["image"].as_str().unwrap_or_default();
    if !image.contains("examples-bookinfo-") {
        return None;
    }
    let labels = &pod["metadata"]["labels"];
    let app = labels["app"].as_str().expect("app label");
    let version = labels["version"].as_str().expect("version label");
    let mut argv: Vec<String> = [
        crate::netns::WEFT,
        "sample",
        "bookinfo",
        app,
        "--version",
        version,
    ]
    .map(String::from)
    .to_vec();
    if app == "reviews" {
        argv.extend(["--pod".into(), pod["metadata"]["name"].as_str()?.into()]);
    }
    Some(argv)
}

fn pods(cluster: &Cluster) -> Vec<Value> {
    cluster.json(&["-n", NS, "get", "pods"])["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn pod_named<'a>(pods: &'a [Value], prefix: &str) -> &'a Value {
    pods.iter()
        .find(|p| {
            p["metadata"]["name"]
                .as_str()
                .is_some_and(|n| n.starts_with(prefix))
        })
        .unwrap_or_else(|| panic!("no pod {prefix}*"))
}

/// The services' cluster IPs as `/etc/hosts` lines (what cluster DNS would answer).
fn hosts(cluster: &Cluster) -> String {
    let svcs = cluster.json(&["-n", NS, "get", "services"]);
    let mut text = String::new();
    for s in svcs["items"].as_array().into_iter().flatten() {
        let name = s["metadata"]["name"].as_str().unwrap_or_default();
        let ip = s["spec"]["clusterIP"].as_str().unwrap_or_default();
        text.push_str(&format!(
            "{ip} {name} {name}.{NS} {name}.{NS}.svc {name}.{NS}.svc.cluster.local\n"
        ));
    }
    text
}

/// The product page as the sleep pod loads it: (status, body).
fn page(mesh: &Mesh, sleep: &str) -> (u16, String) {
    mesh.curl(sleep, "http://productpage:9080/productpage")
}

/// What the page shows where the reviews are: "none", "black", "red" or "broken".
fn stars(page: &(u16, String)) -> &'static str {
    let b = &page.1;
    if page.0 != 200
        || !b.contains("Book Details")
        || !b.contains("<h4 class=\"text-center text-primary\">Book Reviews</h4>")
    {
        return "broken";
    }
    match (
        b.contains("<font color=\"black\">"),
        b.contains("<font color=\"red\">"),
    ) {
        (false, false) if !b.contains("glyphicon-star") => "none",
        (true, false) => "black",
        (false, true) => "red",
        _ => "broken",
    }
}

/// Waits until `streak` page loads in a row show `want`.
fn wait_for_stars(mesh: &Mesh, sleep: &str, want: &str, streak: usize) {
    let mut run = 0;
    let mut last = String::new();
    wait_for(
        &format!("{streak} pages in a row with {want} stars"),
        Duration::from_secs(60),
        || {
            let p = page(mesh, sleep);
            let shown = stars(&p);
            if shown == want {
                run += 1;
            } else {
                run = 0;
                last = format!(
                    "{shown}: {} {}",
                    p.0,
                    p.1.chars().take(300).collect::<String>()
                );
            }
            if run >= streak {
                Ok(())
            } else {
                Err(last.clone())
            }
        },
    );
}

/// The endpoints `pod`'s sidecar holds for `cluster` (Envoy's `/clusters` text).
fn sidecar_endpoints(mesh: &Mesh, pod: &str, cluster: &str) -> Vec<String> {
    let out = ns_exec(
        mesh.ns(pod),
        &["curl", "-s", "-m", "2", "http://127.0.0.1:15000/clusters"],
    );
    let mut eps: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.strip_prefix(&format!("{cluster}::")))
        .filter_map(|l| l.split("::").next())
        .filter(|a| a.parse::<std::net::SocketAddr>().is_ok())
        .map(str::to_string)
        .collect();
    eps.sort();
    eps.dedup();
    eps
}

/// Polls until `f` holds of productpage's endpoints of `cluster`; returns how long it took.
fn time_until(
    mesh: &Mesh,
    from: &str,
    cluster: &str,
    what: &str,
    f: impl Fn(&[String]) -> bool,
) -> Duration {
    let start = Instant::now();
    loop {
        let eps = sidecar_endpoints(mesh, from, cluster);
        if f(&eps) {
            let took = start.elapsed();
            eprintln!("  {what}: {} ms", took.as_millis());
            return took;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{what}: not seen by {from}'s sidecar within 30 s; {cluster} has {eps:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn kubectl_apply_file(cluster: &Cluster, file: &str) {
    cluster.kubectl(&["-n", NS, "apply", "-f", file]);
}

#[test]
fn bookinfo_runs_injected_over_mtls_and_follows_the_cluster() {
    let id = next_id();
    let mut mesh = Mesh::bridge(id, "");
    let cluster = Cluster::up_in(Some(&mesh.bridge_ns));
    cluster.install_crds();
    let control_plane = format!("{}:15012", mesh.ip(1));
    let control = Control::start_with(
        &cluster,
        &[
            "--injected-control-plane",
            &control_plane,
            "--proxy-image",
            IMAGE,
        ],
    );
    crate::webhook::register(&cluster, &control, 15017);
    let mut kubelet = Kubelet::new(&cluster, "node-1", 10);
    cluster.kubectl(&["create", "namespace", NS]);
    cluster.kubectl(&["label", "namespace", NS, "istio-injection=enabled"]);
    kubectl_apply_file(
        &cluster,
        &format!("{SAMPLES}/bookinfo/platform/kube/bookinfo.yaml"),
    );
    kubectl_apply_file(&cluster, &format!("{SAMPLES}/sleep/sleep.yaml"));
    let mut all = Vec::new();
    wait_for("seven pods", Duration::from_secs(60), || {
        all = pods(&cluster);
        if all.len() == 7 {
            Ok(())
        } else {
            Err(format!("{} pods", all.len()))
        }
    });
    mesh.hosts = hosts(&cluster);
    let mut names = Vec::new();
    for p in &all {
        assert_eq!(
            p["spec"]["containers"]
                .as_array()
                .and_then(|c| c.last())
                .map(|c| c["name"].clone()),
            Some("istio-proxy".into()),
            "{p}"
        );
        // The sidecar reaches the control plane's TLS port, verifying it with the CA root
        // from ConfigMap istio-ca-root-cert.
        let proxy_args = p["spec"]["containers"]
            .as_array()
            .and_then(|c| c.last())
            .map(|c| c["args"].to_string())
            .unwrap_or_default();
        assert!(
            proxy_args.contains(&format!("\"{control_plane}\""))
                && proxy_args
                    .contains("\"--control-plane-root\",\"/var/run/secrets/istio/root-cert.pem\""),
            "{proxy_args}"
        );
        let name = kubelet.run(&cluster, &mut mesh, NS, p, &stand_in);
        let log = mesh.log(&format!("istio-proxy-{name}.log"));
        assert!(
            log.contains(&format!("https://{control_plane}")),
            "{name}'s sidecar: {log}"
        );
        names.push(name);
    }
    let sleep = names
        .iter()
        .find(|n| n.starts_with("sleep-"))
        .expect("sleep pod")
        .clone();

    // The page through the chain (sleep → productpage → details, reviews → ratings), three
    // reviews versions round robin until routing is configured.
    let mut seen = std::collections::BTreeSet::new();
    wait_for(
        "pages from all three reviews versions",
        Duration::from_secs(60),
        || {
            let p = page(&mesh, &sleep);
            seen.insert(stars(&p));
            if ["none", "black", "red"].iter().all(|s| seen.contains(s)) {
                Ok(())
            } else {
                Err(format!("{seen:?}; last {} {}", p.0, p.1))
            }
        },
    );
    assert!(!seen.contains("broken"), "{seen:?}");
    // mTLS between the bookinfo service accounts' SPIFFE IDs, as the destination sidecars saw.
    let td = "spiffe://cluster.local/ns/bookinfo/sa";
    let all = pods(&cluster);
    for (pod, source, dest) in [
        ("productpage", "sleep", "bookinfo-productpage"),
        ("details", "bookinfo-productpage", "bookinfo-details"),
        ("reviews-v2", "bookinfo-productpage", "bookinfo-reviews"),
        ("ratings", "bookinfo-reviews", "bookinfo-ratings"),
    ] {
        let name = pod_named(&all, pod)["metadata"]["name"]
            .as_str()
            .expect("name")
            .to_string();
        let metrics = ns_exec(
            mesh.ns(&name),
            &[
                "curl",
                "-s",
                "-m",
                "5",
                "http://127.0.0.1:15090/stats/prometheus",
            ],
        );
        let metrics = String::from_utf8_lossy(&metrics.stdout);
        let needles = [
            "reporter=\"destination\"".to_string(),
            format!("source_principal=\"{td}/{source}\""),
            format!("destination_principal=\"{td}/{dest}\""),
            "connection_security_policy=\"mutual_tls\"".to_string(),
            "response_code=\"200\"".to_string(),
        ];
        assert!(
            metrics
                .lines()
                .any(|l| l.starts_with("istio_requests_total{")
                    && needles.iter().all(|n| l.contains(n.as_str()))),
            "{pod}: no istio_requests_total with {needles:?}:\n{}",
            metrics
                .lines()
                .filter(|l| l.starts_with("istio_requests_total{"))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }

    // Istio's networking samples with kubectl: 1.14's v1alpha3 all-v1, then today's v1
    // reviews-v3.
    kubectl_apply_file(
        &cluster,
        &format!("{SAMPLES}/bookinfo/networking/destination-rule-all.yaml"),
    );
    kubectl_apply_file(
        &cluster,
        &format!("{SAMPLES}/bookinfo/networking/virtual-service-all-v1.yaml"),
    );
    wait_for_stars(&mesh, &sleep, "none", 10);
    kubectl_apply_file(
        &cluster,
        &format!("{SAMPLES_CURRENT}/bookinfo/networking/virtual-service-reviews-v3.yaml"),
    );
    wait_for_stars(&mesh, &sleep, "red", 10);

    // Endpoints: the reviews-v3 pod made unready, ready again, a second replica added,
    // the first deleted, as productpage's sidecar sees its v3 subset.
    let productpage = names
        .iter()
        .find(|n| n.starts_with("productpage-"))
        .expect("productpage pod")
        .clone();
    let v3_cluster = "outbound|9080|v3|reviews.bookinfo.svc.cluster.local";
    let v3 = pod_named(&all, "reviews-v3").clone();
    let v3_name = v3["metadata"]["name"].as_str().expect("name").to_string();
    let v3_ip = v3["status"]["podIP"].as_str().expect("pod IP").to_string();
    let v3_ep = format!("{v3_ip}:9080");
    assert_eq!(
        sidecar_endpoints(&mesh, &productpage, v3_cluster),
        vec![v3_ep.clone()]
    );
    cluster.set_pod_status(NS, &v3_name, &v3_ip, false);
    time_until(&mesh, &productpage, v3_cluster, "reviews-v3 unready", |e| {
        e.is_empty()
    });
    cluster.set_pod_status(NS, &v3_name, &v3_ip, true);
    time_until(
        &mesh,
        &productpage,
        v3_cluster,
        "reviews-v3 ready again",
        |e| e == [v3_ep.clone()],
    );
    cluster.kubectl(&[
        "-n",
        NS,
        "scale",
        "deployment",
        "reviews-v3",
        "--replicas=2",
    ]);
    let mut added = Value::Null;
    wait_for("a second reviews-v3 pod", Duration::from_secs(60), || {
        let now = pods(&cluster);
        match now.iter().find(|p| {
            p["metadata"]["name"]
                .as_str()
                .is_some_and(|n| n.starts_with("reviews-v3") && n != v3_name)
        }) {
            Some(p) => {
                added = p.clone();
                Ok(())
            }
            None => Err(format!("{} pods", now.len())),
        }
    });
    let added_name = kubelet.run(&cluster, &mut mesh, NS, &added, &stand_in);
    let added_ip = cluster.json(&["-n", NS, "get", "pod", &added_name])["status"]["podIP"]
        .as_str()
        .expect("pod IP")
        .to_string();
    time_until(
        &mesh,
        &productpage,
        v3_cluster,
        "reviews-v3 scaled to 2",
        |e| e.len() == 2 && e.contains(&format!("{added_ip}:9080")),
    );
    cluster.kubectl(&["-n", NS, "delete", "pod", &v3_name, "--wait=false"]);
    time_until(
        &mesh,
        &productpage,
        v3_cluster,
        "reviews-v3 pod deleted",
        |e| e == [format!("{added_ip}:9080")],
    );
    wait_for_stars(&mesh, &sleep, "red", 5);

    // Service exportTo: details exported to another namespace alone leaves productpage's
    // sidecar; exported to its own (`.`) it comes back.
    let details = "outbound|9080||details.bookinfo.svc.cluster.local";
    assert!(!sidecar_endpoints(&mesh, &productpage, details).is_empty());
    let export = |to: &str| {
        cluster.kubectl(&[
            "-n",
            NS,
            "annotate",
            "--overwrite",
            "service",
            "details",
            &format!("networking.istio.io/exportTo={to}"),
        ]);
    };
    export("elsewhere");
    time_until(
        &mesh,
        &productpage,
        details,
        "details exported elsewhere",
        |e| e.is_empty(),
    );
    export(".");
    time_until(&mesh, &productpage, details, "details exported to .", |e| {
        !e.is_empty()
    });

    // A pod whose proxy config comes from a ProxyConfig resource and its annotation, with
    // probes on its app, under STRICT mTLS.
    cluster.kubectl_in(&["-n", NS, "apply", "-f", "-"], WEB_CONFIG);
    // Read at injection: the control plane holds it before the pod is created.
    control.wait(
        "/debug/configz",
        "the web ProxyConfig",
        Duration::from_secs(10),
        |c| {
            c["resources"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|r| r["kind"] == "ProxyConfig" && r["metadata"]["name"] == "web")
        },
    );
    cluster.kubectl_in(&["-n", NS, "apply", "-f", "-"], WEB_POD);
    let mut web = Value::Null;
    wait_for("the web pod", Duration::from_secs(30), || {
        web = cluster.json(&["-n", NS, "get", "pod", "web"]);
        if web["spec"]["containers"].as_array().map(Vec::len) == Some(2) {
            Ok(())
        } else {
            Err(web.to_string())
        }
    });
    let containers = &web["spec"]["containers"];
    assert_eq!(
        containers[0]["name"], "istio-proxy",
        "hold: the sidecar first"
    );
    let args = containers[0]["args"].to_string();
    assert!(args.contains(r#""--concurrency","1""#), "{args}");
    assert_eq!(
        containers[1]["readinessProbe"]["httpGet"],
        serde_json::json!({"path": "/app-health/web/readyz", "port": 15020, "scheme": "HTTP"})
    );
    assert_eq!(
        containers[1]["livenessProbe"]["httpGet"]["path"],
        "/app-health/web/livez"
    );
    // The kubelet runs the sidecar, its postStart `weft proxy-wait`, then the app, and calls
    // the pod ready once the app's probe passes through the sidecar.
    let web_name = kubelet.run(&cluster, &mut mesh, NS, &web, &stand_in);
    let hook = kubelet
        .hooks
        .iter()
        .find(|(who, _)| who == "web/istio-proxy")
        .map(|(_, out)| out.clone());
    assert!(
        hook.as_deref()
            .is_some_and(|o| o.contains("the sidecar is ready")),
        "{hook:?}"
    );
    let web_ip = mesh.ip_of(&web_name);
    let curl_node = |url: &str| {
        let out = ns_exec(
            &mesh.bridge_ns,
            &[
                "curl",
                "-s",
                "-m",
                "3",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                url,
            ],
        );
        (
            String::from_utf8_lossy(&out.stdout).trim().to_string(),
            out.status.code(),
        )
    };
    let from_node = |url: &str| curl_node(url).0;
    // Plaintext to the app's port is refused under STRICT (the sidecar closes the connection,
    // not a timeout); its probes pass at the status port.
    let (code, exit) = curl_node(&format!("http://{web_ip}:8080/status/200"));
    assert!(
        code == "000" && exit.is_some_and(|e| e != 0 && e != 28),
        "plaintext under STRICT: {code} exit {exit:?}"
    );
    assert_eq!(
        from_node(&format!("http://{web_ip}:15020/app-health/web/readyz")),
        "200"
    );
    assert_eq!(
        from_node(&format!("http://{web_ip}:15020/app-health/web/livez")),
        "200"
    );
    assert_eq!(
        from_node(&format!("http://{web_ip}:15020/app-health/other/readyz")),
        "404"
    );
    // A failing probe's answer comes back through the sidecar.
    assert_eq!(
        from_node(&format!("http://{web_ip}:15020/app-health/web/startupz")),
        "503"
    );
    // Prometheus metrics merge: the pod's annotations point at the sidecar, which serves its
    // own metrics and then the app's, scraped from localhost:8080/headers as it answers.
    let annotations = &web["metadata"]["annotations"];
    assert_eq!(annotations["prometheus.io/port"], "15020");
    assert_eq!(annotations["prometheus.io/path"], "/stats/prometheus");
    let merged = ns_exec(
        &mesh.bridge_ns,
        &[
            "curl",
            "-s",
            "-m",
            "5",
            &format!("http://{web_ip}:15020/stats/prometheus"),
        ],
    );
    let merged = String::from_utf8_lossy(&merged.stdout).into_owned();
    // (The echo app answers /headers with the request's headers, as pretty JSON.)
    let app = merged.find(r#""host": "127.0.0.1:8080""#);
    let proxy = merged.find("# TYPE envoy_cluster_");
    assert!(
        proxy.is_some() && app.is_some() && proxy < app,
        "the proxy's metrics, then the app's: …{}\nsidecar: {}",
        &merged[merged.len().saturating_sub(400)..],
        mesh.log(&format!("istio-proxy-{web_name}.log"))
            .lines()
            .filter(|l| l.contains("metrics") || l.contains("ERROR"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    // Envoy's own port stays the proxy's alone.
    let own = ns_exec(
        &mesh.bridge_ns,
        &[
            "curl",
            "-s",
            "-m",
            "5",
            &format!("http://{web_ip}:15090/stats/prometheus"),
        ],
    );
    let own = String::from_utf8_lossy(&own.stdout);
    assert!(own.contains("# TYPE envoy_cluster_") && !own.contains("127.0.0.1:8080"));
    // A pod whose annotation cannot be read is refused at creation, with the field named.
    let refused = cluster
        .try_kubectl(
            &["-n", NS, "apply", "-f", "-"],
            "apiVersion: v1
kind: Pod
metadata:
  name: odd
  annotations: {proxy.istio.io/config: 'concurrency: lots'}
spec: {containers: [{name: app, image: weft:test}]}
",
        )
        .expect_err("refused");
    assert!(
        refused.contains("proxy.istio.io/config") && refused.contains("concurrency"),
        "{refused}"
    );
}

/// A workload of our own: its ProxyConfig and STRICT mTLS, ...
const WEB_CONFIG: &str = "apiVersion: networking.istio.io/v1beta1
kind: ProxyConfig
metadata: {name: web}
spec:
  selector: {matchLabels: {app: web}}
  concurrency: 1
---
apiVersion: security.istio.io/v1beta1
kind: PeerAuthentication
metadata: {name: web}
spec:
  selector: {matchLabels: {app: web}}
  mtls: {mode: STRICT}
";

/// ... and a pod with probes that asks for the sidecar to start first.
const WEB_POD: &str = "apiVersion: v1
kind: Pod
metadata:
  name: web
  labels: {app: web}
  annotations:
    proxy.istio.io/config: '{holdApplicationUntilProxyStarts: true}'
    # The app's metrics (the echo app's /headers stands in for an exposition): merged by the
    # sidecar into what Prometheus scrapes.
    prometheus.io/scrape: 'true'
    prometheus.io/port: '8080'
    prometheus.io/path: /headers
spec:
  containers:
  - name: web
    image: weft:test
    args: [sample, echo, --http-port, '8080']
    ports: [{name: http, containerPort: 8080}]
    readinessProbe: {httpGet: {path: /status/200, port: http, httpHeaders: [{name: Host, value: web.example}]}, periodSeconds: 1}
    livenessProbe: {tcpSocket: {port: 8080}}
    # Fails, to see a failure come back through the sidecar (the test's kubelet runs the
    # readiness probes only).
    startupProbe: {httpGet: {path: /status/503, port: 8080}}
";
