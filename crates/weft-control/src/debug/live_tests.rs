//! `weft control` in-process with two ADS clients (state of the world and delta): what
//! `/debug/config_distribution` and [`super::wait::wait`] say, checked against what the clients
//! hold when they say it.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prost::Message;
use weft_xds::pb::envoy::config::core::v3::Node;
use weft_xds::pb::envoy::config::route::v3::{RouteConfiguration, route::Action};
use weft_xds::pb::google::protobuf::{Any, Struct, Value, value::Kind};
use weft_xds::types::{CLUSTER, ENDPOINT, LISTENER, ROUTE};
use weft_xds::{AdsClientConfig, ClientState, Handler, client::Update};

use super::distribution::{Distribution, State};
use super::wait::{WaitFor, wait};

const SERVICE: &str = "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: server, namespace: default}
spec:
  hosts: [server.default.svc.cluster.local]
  addresses: [10.96.0.10]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 8080, name: http, protocol: HTTP}]
  workloadSelector: {labels: {app: server}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: server-v1, namespace: default}
spec: {address: 10.0.0.1, labels: {app: server}, serviceAccount: server}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: client, namespace: default}
spec: {address: 10.0.0.2, labels: {app: client}, serviceAccount: client}
";

fn virtual_service(route: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: server, namespace: default}}\nspec:\n  hosts: [server]\n  http:\n  - {route}\n"
    )
}

fn text(s: &str) -> Value {
    Value {
        kind: Some(Kind::StringValue(s.into())),
    }
}

fn node(id: &str) -> Node {
    let fields = [
        ("NAME", text("client")),
        ("NAMESPACE", text("default")),
        ("WORKLOAD_NAME", text("client")),
        ("SERVICE_ACCOUNT", text("client")),
        (
            "LABELS",
            Value {
                kind: Some(Kind::StructValue(Struct {
                    fields: [("app".to_string(), text("client"))].into(),
                })),
            },
        ),
    ];
    Node {
        id: id.into(),
        cluster: "client.default".into(),
        metadata: Some(Struct {
            fields: fields
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
        }),
        ..Default::default()
    }
}

/// What a client holds: per type, resources by name (as `Any`), ACKed or not.
type Held = Arc<Mutex<BTreeMap<String, BTreeMap<String, Any>>>>;

/// Holds what it accepts; rejects route tables that mention `nack-me`. A slow one takes
/// 300 ms to apply a route table (and only then ACKs it).
struct Client {
    held: Held,
    slow: bool,
}

fn resource_name(type_url: &str, any: &Any) -> String {
    use weft_xds::pb::envoy::config::{cluster::v3::Cluster, listener::v3::Listener};
    match type_url {
        LISTENER => Listener::decode(any.value.as_slice()).map(|l| l.name),
        CLUSTER => Cluster::decode(any.value.as_slice()).map(|c| c.name),
        ROUTE => RouteConfiguration::decode(any.value.as_slice()).map(|r| r.name),
        _ => Ok(String::new()),
    }
    .unwrap_or_default()
}

impl Handler for Client {
    fn on_response(&mut self, type_url: &str, update: Update) -> Result<(), String> {
        if type_url == ROUTE
            && update
                .resources
                .iter()
                .any(|r| r.value.windows(7).any(|w| w == b"nack-me"))
        {
            return Err("route header value nack-me refused".into());
        }
        if self.slow && type_url == ROUTE {
            std::thread::sleep(Duration::from_millis(300));
        }
        let decoded: Vec<(String, Any)> = update
            .resources
            .iter()
            .map(|r| (resource_name(type_url, r), r.clone()))
            .collect();
        let mut held = self.held.lock().map_err(|e| e.to_string())?;
        update.merge_into(held.entry(type_url.to_string()).or_default(), decoded);
        Ok(())
    }

    fn subscriptions(&self) -> Vec<(String, Vec<String>)> {
        vec![
            (CLUSTER.into(), vec![]),
            (ENDPOINT.into(), vec![]),
            (LISTENER.into(), vec![]),
            (ROUTE.into(), vec!["8080".into()]),
        ]
    }
}

/// The timeouts (ms) of the routes of table 8080 a client holds.
fn route_timeouts(held: &Held) -> Vec<u64> {
    let held = held.lock().map(|h| h.clone()).unwrap_or_default();
    let Some(table) = held.get(ROUTE).and_then(|t| t.get("8080")) else {
        return Vec::new();
    };
    let Ok(rc) = RouteConfiguration::decode(table.value.as_slice()) else {
        return Vec::new();
    };
    rc.virtual_hosts
        .iter()
        .flat_map(|v| v.routes.iter())
        .filter_map(|r| match &r.action {
            Some(Action::Route(a)) => a
                .timeout
                .as_ref()
                .map(|t| t.seconds as u64 * 1000 + t.nanos as u64 / 1_000_000),
            _ => None,
        })
        .collect()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn write(dir: &Path, name: &str, yaml: &str) {
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, yaml).expect("write");
    std::fs::rename(&tmp, dir.join(name)).expect("rename");
}

async fn get(monitoring: &str, resource: &str) -> Option<Distribution> {
    let url = format!("http://{monitoring}/debug/config_distribution?resource={resource}");
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Empty<bytes::Bytes>>();
    let resp = client.get(url.parse().ok()?).await.ok()?;
    let body = http_body_util::BodyExt::collect(resp.into_body())
        .await
        .ok()?
        .to_bytes();
    serde_json::from_slice(&body).ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 3)]
async fn wait_returns_once_every_proxy_holds_the_change_and_fails_fast_on_refusals() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let config = tmp.path().join("config");
    std::fs::create_dir_all(&config).expect("config dir");
    write(&config, "services.yaml", SERVICE);
    let mut opts = crate::ControlOptions::new(config.clone());
    opts.state_dir = tmp.path().join("state");
    let (xds, tls, mon) = (free_port(), free_port(), free_port());
    opts.xds_addr = ([127, 0, 0, 1], xds).into();
    opts.xds_tls_addr = ([127, 0, 0, 1], tls).into();
    opts.monitoring_addr = ([127, 0, 0, 1], mon).into();
    let monitoring = format!("127.0.0.1:{mon}");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let control = tokio::spawn(crate::run(opts, async {
        let _ = stopped.await;
    }));

    let mut clients = Vec::new();
    for (id, delta) in [("sotw", false), ("delta", true)] {
        let held = Held::default();
        let config = AdsClientConfig {
            delta,
            backoff_initial: Duration::from_millis(100),
            ..AdsClientConfig::new(
                format!("http://127.0.0.1:{xds}"),
                node(&format!(
                    "sidecar~10.0.0.2~client-{id}.default~default.svc.cluster.local"
                )),
            )
        };
        let (tx, _) = tokio::sync::watch::channel(ClientState::default());
        let handler = Client {
            held: held.clone(),
            slow: !delta,
        };
        tokio::spawn(async move {
            let _ = weft_xds::run_ads_client(config, handler, tx).await;
        });
        clients.push(held);
    }

    let wait_for = |kind: &str, name: &str, secs: u64| WaitFor {
        control_plane: monitoring.clone(),
        kind: kind.into(),
        namespace: "default".into(),
        name: name.into(),
        timeout: Duration::from_secs(secs),
    };
    // Both proxies connected and synced.
    let mut synced = false;
    for _ in 0..100 {
        if let Some(d) = get(&monitoring, "ServiceEntry/default/server").await
            && d.state == State::Applied
            && d.proxies.len() == 2
        {
            synced = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(synced, "{:?}", get(&monitoring, "se/default/server").await);

    // A route change: right after wait returns, both proxies hold it.
    for timeout in ["7.777s", "3.333s"] {
        write(
            &config,
            "vs.yaml",
            &virtual_service(&format!(
                "timeout: {timeout}\n    route: [{{destination: {{host: server}}}}]"
            )),
        );
        let line = wait(&wait_for("vs", "server", 20)).await.expect("applied");
        assert!(
            line.starts_with("VirtualService default/server applied by 2/2 proxies (version "),
            "{line}"
        );
        let ms: u64 =
            (timeout.trim_end_matches('s').parse::<f64>().unwrap_or(0.0) * 1000.0).round() as u64;
        for held in &clients {
            assert!(
                route_timeouts(held).contains(&ms),
                "{ms}: {:?}",
                route_timeouts(held)
            );
        }
    }
    let d = get(&monitoring, "VirtualService/default/server")
        .await
        .expect("answer");
    assert_eq!(
        d.source.as_deref().map(|s| s.ends_with("vs.yaml:1")),
        Some(true),
        "{d:?}"
    );

    // A bad edit fails at once, naming the file and the field.
    write(
        &config,
        "vs.yaml",
        &virtual_service("route: [{destination: {host: server}, wieght: 5}]"),
    );
    let started = std::time::Instant::now();
    let err = wait(&wait_for("virtualservice", "server", 20))
        .await
        .expect_err("rejected");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert!(
        err.contains("was rejected") && err.contains("vs.yaml:") && err.contains("wieght"),
        "{err}"
    );

    // A config the proxies refuse fails at once too, with their message.
    write(
        &config,
        "vs.yaml",
        &virtual_service(
            "headers: {request: {set: {x-test: nack-me}}}\n    route: [{destination: {host: server}}]",
        ),
    );
    let err = wait(&wait_for("vs", "server", 20))
        .await
        .expect_err("NACKed");
    assert!(
        err.contains("was rejected")
            && err.contains("RDS: rejected version")
            && err.contains("nack-me refused"),
        "{err}"
    );

    // Nothing to wait for: times out saying so.
    let err = wait(&wait_for("dr", "nope", 1))
        .await
        .expect_err("not found");
    assert!(
        err.contains("timed out after 1s") && err.contains("no DestinationRule default/nope"),
        "{err}"
    );

    // Skipped kinds are named as such.
    write(
        &config,
        "filter.yaml",
        "apiVersion: networking.istio.io/v1alpha3\nkind: EnvoyFilter\nmetadata: {name: f, namespace: default}\nspec: {}\n",
    );
    let err = wait(&wait_for("envoyfilter", "f", 20))
        .await
        .expect_err("skipped");
    assert!(
        err.contains("EnvoyFilter default/f is not applied by Weft"),
        "{err}"
    );
    let skipped = get(&monitoring, "x").await;
    assert!(skipped.is_none(), "a bad query is not a distribution");

    let _ = stop.send(());
    let _ = control.await;
}
