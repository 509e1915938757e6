//! Traffic management end to end: VirtualService routes and DestinationRule subsets applied
//! live to a client sidecar, checked by what a real client (curl) sees and by the sidecars'
//! metrics.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::netns::{Mesh, Sidecar, next_id, wait_for};
use crate::{CLIENT, SERVER, SERVER2, hosts, metric_lines, server_config};

const URL: &str = "http://server.default.svc.cluster.local:8080";

pub(crate) fn v2_workload(id: u8) -> String {
    format!(
        r#"apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: server-v2, namespace: default}}
spec:
  address: 10.77.{id}.{SERVER2}
  labels: {{app: server, version: v2}}
  serviceAccount: server
"#
    )
}

pub(crate) const SUBSETS: &str = r#"apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: server, namespace: default}
spec:
  host: server
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
"#;

fn sidecar(workload: &str, app: &str, version: &str) -> Sidecar {
    Sidecar {
        workload: format!("default/{workload}"),
        labels: BTreeMap::from([
            ("app".into(), app.into()),
            ("version".into(), version.into()),
        ]),
        service_account: if app == "server" { "server" } else { "client" }.into(),
        cert_ttl: None,
        delta: false,
        ..Default::default()
    }
}

fn virtual_service(http: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: server, namespace: default}}\nspec:\n  hosts: [server]\n  http:\n{http}"
    )
}

/// The pods that answered `n` GETs of `path` sent on one connection (`extra` curl args).
fn answers(mesh: &Mesh, path: &str, n: usize, extra: &[&str]) -> Vec<String> {
    let url = format!("{URL}{path}");
    let mut args: Vec<&str> = vec!["-s", "-m", "30"];
    args.extend_from_slice(extra);
    for _ in 0..n {
        args.push(&url);
    }
    let out = mesh.curl_from(mesh.ns("client"), &args);
    let text = String::from_utf8_lossy(&out.stdout);
    // Each answer is one JSON object naming its pod.
    text.match_indices("\"pod\": \"")
        .map(|(i, m)| {
            let rest = &text[i + m.len()..];
            rest[..rest.find('"').unwrap_or(0)].to_string()
        })
        .collect()
}

/// (status, body, seconds) of one request from the client pod.
fn request(mesh: &Mesh, path: &str, extra: &[&str]) -> (u16, String, f64) {
    let url = format!("{URL}{path}");
    let mut args = vec!["-s", "-m", "20", "-w", "\n%{http_code} %{time_total}"];
    args.extend_from_slice(extra);
    args.push(&url);
    let out = mesh.curl_from(mesh.ns("client"), &args);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, tail) = text.rsplit_once('\n').unwrap_or(("", "0 0"));
    let mut it = tail.split_whitespace();
    let code = it.next().and_then(|c| c.parse().ok()).unwrap_or(0);
    let secs = it.next().and_then(|c| c.parse().ok()).unwrap_or(0.0);
    (code, body.to_string(), secs)
}

/// The sum of `istio_requests_total` lines in `pod`'s metrics that contain every needle.
fn requests_total(mesh: &Mesh, pod: &str, needles: &[&str]) -> u64 {
    metric_lines(&mesh.metrics(pod), "istio_requests_total")
        .into_iter()
        .filter(|l| needles.iter().all(|n| l.contains(n)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// Applies a VirtualService and waits until `ready` says the client sidecar runs it.
fn apply(mesh: &Mesh, http: &str, what: &str, ready: impl FnMut() -> bool) {
    mesh.write_config("vs.yaml", &virtual_service(http));
    wait_for(Duration::from_secs(20), what, ready);
}

#[test]
fn virtual_service_routes_shift_fault_time_out_retry_and_mirror() {
    crate::netns::require_root();
    let id = next_id();
    let mut config = server_config(id, true);
    config.push(("server-v2.yaml", v2_workload(id)));
    config.push(("dr.yaml", SUBSETS.to_string()));
    let mut mesh = Mesh::new(id, &config, "", &hosts(id));
    mesh.add_pod("server", SERVER, Some(sidecar("server-v1", "server", "v1")));
    mesh.start_app("server");
    mesh.add_pod(
        "server2",
        SERVER2,
        Some(sidecar("server-v2", "server", "v2")),
    );
    mesh.start_app("server2");
    mesh.add_pod("client", CLIENT, Some(sidecar("client", "client", "v1")));

    // Request routing (the bookinfo task's shape): jason to v2, everyone else to v1.
    apply(
        &mesh,
        "  - match: [{headers: {end-user: {exact: jason}}}]\n    route: [{destination: {host: server, subset: v2}}]\n  - route: [{destination: {host: server, subset: v1}}]\n",
        "the header route to reach the client sidecar",
        || answers(&mesh, "/", 1, &["-H", "end-user: jason"]) == ["server2"],
    );
    assert!(
        answers(&mesh, "/", 20, &["-H", "end-user: jason"])
            .iter()
            .all(|p| p == "server2")
    );
    let others = answers(&mesh, "/", 20, &["-H", "end-user: someone"]);
    assert_eq!(others.len(), 20);
    assert!(others.iter().all(|p| p == "server"), "{others:?}");

    // Traffic shifting: 50/50. 400 draws: v1's count lies in [140, 260] unless the split is
    // off (binomial sd = 10, so a fair split leaves that range with odds of about 1e-9).
    apply(
        &mesh,
        "  - route:\n    - {destination: {host: server, subset: v1}, weight: 50}\n    - {destination: {host: server, subset: v2}, weight: 50}\n",
        "the 50/50 split",
        || {
            let a = answers(&mesh, "/", 20, &[]);
            a.iter().any(|p| p == "server") && a.iter().any(|p| p == "server2")
        },
    );
    let a = answers(&mesh, "/", 400, &[]);
    assert_eq!(a.len(), 400);
    let v1 = a.iter().filter(|p| *p == "server").count();
    assert!((140..=260).contains(&v1), "v1 got {v1} of 400");

    // Fault injection: abort 500 for every request; the client sidecar reports flag FI.
    apply(
        &mesh,
        "  - fault: {abort: {httpStatus: 500, percentage: {value: 100}}}\n    route: [{destination: {host: server, subset: v1}}]\n",
        "the abort fault",
        || request(&mesh, "/", &[]).0 == 500,
    );
    let (code, body, _) = request(&mesh, "/", &[]);
    assert_eq!((code, body.as_str()), (500, "fault filter abort"));
    assert!(
        requests_total(
            &mesh,
            "client",
            &[
                "reporter=\"source\"",
                "response_code=\"500\"",
                "response_flags=\"FI\""
            ]
        ) > 0
    );

    // Delay 1 s for jason only.
    apply(
        &mesh,
        "  - match: [{headers: {end-user: {exact: jason}}}]\n    fault: {delay: {fixedDelay: 1s, percentage: {value: 100}}}\n    route: [{destination: {host: server, subset: v1}}]\n  - route: [{destination: {host: server, subset: v1}}]\n",
        "the delay fault",
        || request(&mesh, "/", &["-H", "end-user: jason"]).2 >= 1.0,
    );
    let (code, _, secs) = request(&mesh, "/", &["-H", "end-user: jason"]);
    assert!(code == 200 && secs >= 1.0, "{code} after {secs} s");
    let (code, _, secs) = request(&mesh, "/", &[]);
    assert!(code == 200 && secs < 0.9, "{code} after {secs} s");

    // Request timeout: the app takes 2 s, the route allows 0.5 s → 504 in about 0.5 s.
    apply(
        &mesh,
        "  - timeout: 0.5s\n    route: [{destination: {host: server, subset: v1}}]\n",
        "the route timeout",
        || request(&mesh, "/delay/2", &[]).0 == 504,
    );
    let started = Instant::now();
    let (code, body, _) = request(&mesh, "/delay/2", &[]);
    assert_eq!((code, body.as_str()), (504, "upstream request timeout"));
    assert!(started.elapsed() < Duration::from_millis(1500));

    // Retries: 2 more attempts on 5xx, so the server sees 3 requests for one call and the
    // client's request ends with URX.
    apply(
        &mesh,
        "  - retries: {attempts: 2, retryOn: 5xx, perTryTimeout: 2s}\n    route: [{destination: {host: server, subset: v1}}]\n",
        "the retry policy",
        || {
            // Done once the 503 below is logged with URX (the new route answered it).
            request(&mesh, "/status/503", &[]).0 == 503
                && requests_total(&mesh, "client", &["response_flags=\"URX\""]) > 0
        },
    );
    let before = requests_total(
        &mesh,
        "server",
        &["reporter=\"destination\"", "response_code=\"503\""],
    );
    assert_eq!(request(&mesh, "/status/503", &[]).0, 503);
    wait_for(
        Duration::from_secs(5),
        "three attempts at the server",
        || {
            requests_total(
                &mesh,
                "server",
                &["reporter=\"destination\"", "response_code=\"503\""],
            ) == before + 3
        },
    );

    // Mirroring: v1 answers; v2 gets a copy of every request (Host `-shadow`).
    let mirrored = |m: &Mesh| requests_total(m, "server2", &["reporter=\"destination\""]);
    apply(
        &mesh,
        "  - route: [{destination: {host: server, subset: v1}, weight: 100}]\n    mirror: {host: server, subset: v2}\n    mirrorPercentage: {value: 100}\n",
        "the mirror",
        || {
            let before = mirrored(&mesh);
            answers(&mesh, "/", 1, &[]) == ["server"] && mirrored(&mesh) > before
        },
    );
    let before = mirrored(&mesh);
    let a = answers(&mesh, "/", 10, &[]);
    assert!(a.len() == 10 && a.iter().all(|p| p == "server"), "{a:?}");
    wait_for(
        Duration::from_secs(5),
        "ten mirrored requests at v2",
        || mirrored(&mesh) == before + 10,
    );

    // Redirect and header operations.
    apply(
        &mesh,
        "  - match: [{uri: {prefix: /old}}]\n    redirect: {uri: /new, redirectCode: 302}\n  - headers:\n      request: {set: {x-weft-route: on}}\n      response: {add: {x-weft-seen: yes}}\n    route: [{destination: {host: server, subset: v1}}]\n",
        "the redirect",
        || request(&mesh, "/old", &[]).0 == 302,
    );
    let out = mesh.curl_from(
        mesh.ns("client"),
        &["-s", "-i", "-m", "10", &format!("{URL}/old")],
    );
    let head = String::from_utf8_lossy(&out.stdout).to_ascii_lowercase();
    assert!(
        head.contains("location: http://server.default.svc.cluster.local:8080/new"),
        "{head}"
    );
    let out = mesh.curl_from(
        mesh.ns("client"),
        &["-s", "-i", "-m", "10", &format!("{URL}/x")],
    );
    let text = String::from_utf8_lossy(&out.stdout).to_ascii_lowercase();
    assert!(text.contains("x-weft-seen: yes"), "{text}");
    assert!(text.contains("\"x-weft-route\": \"on\""), "{text}");

    // Circuit breaking (the istio.io task's DestinationRule): one connection, one pending
    // request, one request per connection. Three clients at once overflow: 503 with UO, and
    // Envoy's upstream_rq_pending_overflow counts them.
    mesh.write_config(
        "dr.yaml",
        &SUBSETS.replace(
            "  subsets:",
            "  trafficPolicy:\n    connectionPool:\n      tcp: {maxConnections: 1}\n      http: {http1MaxPendingRequests: 1, maxRequestsPerConnection: 1}\n  subsets:",
        ),
    );
    let admin = |path: &str| {
        let out = mesh.curl_from(
            mesh.ns("client"),
            &["-s", "-m", "5", &format!("http://127.0.0.1:15000{path}")],
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    wait_for(Duration::from_secs(20), "the circuit breaker", || {
        admin("/clusters").contains(
            "outbound|8080|v1|server.default.svc.cluster.local::default_priority::max_connections::1\n",
        )
    });
    let load = mesh.exec(
        "client",
        &[
            env!("CARGO_BIN_EXE_weft"),
            "sample",
            "load",
            "-c",
            "3",
            "-n",
            "60",
            "-qps",
            "0",
            &format!("{URL}/delay/0.05"),
        ],
    );
    let report = String::from_utf8_lossy(&load.stdout).into_owned();
    assert!(report.contains("Code 200 : "), "{report}");
    assert!(report.contains("Code 503 : "), "{report}");
    let stats = admin("/stats");
    let overflow: u64 = stats
        .lines()
        .find_map(|l| {
            l.strip_prefix(
                "cluster.outbound|8080|v1|server.default.svc.cluster.local.upstream_rq_pending_overflow: ",
            )
        })
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    assert!(overflow > 0, "{stats}");
    assert!(
        requests_total(
            &mesh,
            "client",
            &["response_code=\"503\"", "response_flags=\"UO\""]
        ) > 0
    );

    // Consistent hashing on a header: one user always reaches the same pod; users spread.
    mesh.write_config(
        "dr.yaml",
        &SUBSETS.replace(
            "  subsets:",
            "  trafficPolicy:\n    loadBalancer:\n      consistentHash: {httpHeaderName: x-user}\n    outlierDetection: {consecutive5xxErrors: 2, interval: 1s, baseEjectionTime: 30s, maxEjectionPercent: 100}\n  subsets:",
        ),
    );
    apply(
        &mesh,
        "  - route: [{destination: {host: server}}]\n",
        "the consistent-hash route to the whole service",
        || admin("/config_dump").contains("x-user") && answers(&mesh, "/", 1, &[]).len() == 1,
    );
    let mut seen = std::collections::BTreeSet::new();
    for user in 0..16 {
        let header = format!("x-user: user-{user}");
        let a = answers(&mesh, "/", 8, &["-H", &header]);
        assert_eq!(a.len(), 8);
        assert!(a.iter().all(|p| *p == a[0]), "user-{user} moved: {a:?}");
        seen.insert(a[0].clone());
    }
    assert_eq!(seen.len(), 2, "16 users all hashed to {seen:?}");

    // Outlier detection: v2's app dies, its sidecar answers 503; two in a row eject it, and
    // every request then goes to v1 (the default retry policy hides the 503s from the client).
    mesh.signal("server2", "app", "KILL");
    let server2 = format!("{}:8080", mesh.ip(SERVER2));
    wait_for(Duration::from_secs(20), "v2 to be ejected", || {
        answers(&mesh, "/", 4, &[]);
        admin("/clusters").contains(&format!(
            "outbound|8080||server.default.svc.cluster.local::{server2}::health_flags::/failed_outlier_check"
        ))
    });
    let a = answers(&mesh, "/", 20, &[]);
    assert!(a.len() == 20 && a.iter().all(|p| p == "server"), "{a:?}");
    assert!(admin("/stats").contains(
        "cluster.outbound|8080||server.default.svc.cluster.local.outlier_detection.ejections_active: 1\n"
    ));
}
