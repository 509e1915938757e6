//! Istio's egress tasks in their mesh-internal form: ServiceEntries with `resolution: DNS` and
//! `DNS_ROUND_ROBIN` resolved by the sidecar (answers from the pod's hosts file, followed when
//! it changes; a name that does not resolve is a 503 `UH`), and the outbound traffic policy:
//! ALLOW_ANY (PassthroughCluster), then REGISTRY_ONLY (BlackHoleCluster: 502 for HTTP, the
//! connection closed for TCP) with the ServiceEntry'd hosts still reachable; then a Sidecar
//! resource that imports one host and sets its own outbound traffic policy.

use std::time::Duration;

use crate::netns::{Mesh, next_id, wait_for};
use crate::security::{SLEEP, sidecar, workload};

const POD: &str = "sleep";
const INET1: u8 = 40;
const INET2: u8 = 41;

fn service_entries() -> String {
    let se = |name: &str, host: &str, resolution: &str, extra: &str| {
        format!(
            "---\napiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: {name}, namespace: default}}\nspec:\n  hosts: [{host}]\n  location: MESH_EXTERNAL\n  resolution: {resolution}\n  ports:\n  - {{number: 8080, name: http, protocol: HTTP}}\n{extra}"
        )
    };
    [
        se("api", "api.internet.test", "DNS", ""),
        se("multi", "multi.internet.test", "DNS", ""),
        se(
            "rr",
            "rr.internet.test",
            "DNS_ROUND_ROBIN",
            "  endpoints:\n  - address: multi.internet.test\n",
        ),
        se("nowhere", "nowhere.internet.test", "DNS", ""),
    ]
    .concat()
}

/// The hosts file of the client pod: `api` on one internet pod, `multi` on both (the second
/// pod's address first, so that "the first answer" is not "the lowest address").
fn hosts(id: u8, api: u8) -> String {
    format!(
        "127.0.0.1 localhost\n10.77.{id}.{api} api.internet.test\n10.77.{id}.{INET2} multi.internet.test\n10.77.{id}.{INET1} multi.internet.test\n10.77.{id}.{INET1} rr.internet.test\n"
    )
}

fn pod_of(body: &str) -> String {
    serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["pod"].as_str().map(str::to_string))
        .unwrap_or_else(|| format!("<{body}>"))
}

fn metric_has(mesh: &Mesh, pod: &str, needles: &[&str]) -> bool {
    mesh.metrics(pod)
        .lines()
        .any(|l| l.starts_with("istio_requests_total") && needles.iter().all(|n| l.contains(n)))
}

#[test]
fn dns_resolution_and_outbound_traffic_policy() {
    let id = next_id();
    let files = vec![
        ("services.yaml", service_entries()),
        ("sleep.yaml", workload(id, POD, SLEEP, POD)),
    ];
    let mut mesh = Mesh::new(id, &files, "dnsRefreshRate: 1s\n", "");
    mesh.add_pod("inet1", INET1, None);
    mesh.start_app("inet1");
    mesh.add_pod("inet2", INET2, None);
    mesh.start_app("inet2");
    mesh.add_pod(POD, SLEEP, Some(sidecar(POD)));
    let hosts_file = format!("/etc/netns/{}/hosts", mesh.ns(POD));
    std::fs::write(&hosts_file, hosts(id, INET1)).expect("hosts");

    // DNS: the sidecar resolves api.internet.test itself, through the ServiceEntry's cluster.
    let api = "http://api.internet.test:8080/get";
    let mut last = (0, String::new());
    wait_for(
        Duration::from_secs(15),
        "api.internet.test through its cluster",
        || {
            last = mesh.curl(POD, api);
            last.0 == 200
                && metric_has(
                    &mesh,
                    POD,
                    &[
                        "destination_service=\"api.internet.test\"",
                        "response_code=\"200\"",
                    ],
                )
        },
    );
    assert_eq!(pod_of(&last.1), "inet1");
    let clusters = mesh.exec(POD, &["curl", "-s", "http://127.0.0.1:15000/clusters"]);
    let clusters = String::from_utf8_lossy(&clusters.stdout).into_owned();
    assert!(
        clusters.contains(&format!(
            "outbound|8080||api.internet.test::10.77.{id}.{INET1}:8080"
        )),
        "{clusters}"
    );

    // The answer changes (the hosts file now names the second pod): followed within the
    // refresh (the 5 s floor of TTL-driven refreshes).
    std::fs::write(&hosts_file, hosts(id, INET2)).expect("hosts");
    wait_for(Duration::from_secs(20), "the new DNS answer", || {
        pod_of(&mesh.curl(POD, api).1) == "inet2"
    });

    // DNS: every address of the name; DNS_ROUND_ROBIN: the first only.
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..20 {
        seen.insert(pod_of(
            &mesh.curl(POD, "http://multi.internet.test:8080/").1,
        ));
    }
    assert_eq!(
        seen.len(),
        2,
        "STRICT_DNS balances over both addresses: {seen:?}"
    );
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..10 {
        seen.insert(pod_of(&mesh.curl(POD, "http://rr.internet.test:8080/").1));
    }
    assert_eq!(
        seen.into_iter().collect::<Vec<_>>(),
        ["inet2"],
        "LOGICAL_DNS uses the first address of the answer"
    );

    // A name that does not resolve: 503 with UH at once, not a hang.
    let resolve = format!("nowhere.internet.test:8080:10.77.{id}.{INET1}");
    let start = std::time::Instant::now();
    let out = mesh.exec(
        POD,
        &[
            "curl",
            "-s",
            "-m",
            "10",
            "-w",
            "\n%{http_code}",
            "--resolve",
            &resolve,
            "http://nowhere.internet.test:8080/",
        ],
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        text.ends_with("\n503") && text.contains("no healthy upstream"),
        "{text}"
    );
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
    assert!(
        metric_has(
            &mesh,
            POD,
            &[
                "destination_service=\"nowhere.internet.test\"",
                "response_flags=\"UH\""
            ]
        ),
        "{}",
        mesh.metrics(POD)
    );

    // ALLOW_ANY (the default): an address outside the registry goes out as it is.
    let direct = format!("http://10.77.{id}.{INET1}:8080/");
    let (code, body) = mesh.curl(POD, &direct);
    assert_eq!((code, pod_of(&body).as_str()), (200, "inet1"), "{body}");
    assert!(
        metric_has(
            &mesh,
            POD,
            &[
                "destination_service_name=\"PassthroughCluster\"",
                "response_code=\"200\""
            ]
        ),
        "{}",
        mesh.metrics(POD)
    );
    let echo = |mesh: &Mesh| {
        let cmd = format!("printf hello | nc -q 2 -w 5 10.77.{id}.{INET1} 9000");
        String::from_utf8_lossy(&mesh.exec(POD, &["sh", "-c", &cmd]).stdout).into_owned()
    };
    assert_eq!(echo(&mesh), "hello");

    // REGISTRY_ONLY: the same request is a 502 from BlackHoleCluster, TCP is closed, and the
    // ServiceEntry'd host still answers.
    std::fs::write(
        &mesh.mesh_file,
        "dnsRefreshRate: 1s\noutboundTrafficPolicy: {mode: REGISTRY_ONLY}\n",
    )
    .expect("mesh.yaml");
    wait_for(Duration::from_secs(15), "REGISTRY_ONLY", || {
        mesh.curl(POD, &direct).0 == 502
    });
    assert!(
        metric_has(
            &mesh,
            POD,
            &[
                "destination_service_name=\"BlackHoleCluster\"",
                "response_code=\"502\""
            ]
        ),
        "{}",
        mesh.metrics(POD)
    );
    assert_eq!(echo(&mesh), "", "TCP to an unknown destination is closed");
    let (code, body) = mesh.curl(POD, api);
    assert_eq!((code, pod_of(&body).as_str()), (200, "inet2"), "{body}");

    // Adding a ServiceEntry for the address makes it reachable again.
    mesh.write_config(
        "direct.yaml",
        &format!(
            "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: direct, namespace: default}}\nspec:\n  hosts: [inet1.internet.test]\n  addresses: [10.77.{id}.{INET1}]\n  location: MESH_EXTERNAL\n  resolution: NONE\n  ports:\n  - {{number: 8080, name: http, protocol: HTTP}}\n  - {{number: 9000, name: tcp, protocol: TCP}}\n"
        ),
    );
    wait_for(
        Duration::from_secs(15),
        "the ServiceEntry for the address",
        || mesh.curl(POD, &direct).0 == 200,
    );
    assert_eq!(echo(&mesh), "hello");
}

/// pilot-agent's DNS proxy: with DNS capture the pod's queries to its nameserver reach the
/// sidecar, which answers mesh names from the control plane's name table (NDS) — full, short
/// and `name.ns` forms — and, with auto-allocation, gives a ServiceEntry without addresses one
/// from 240.240.0.0/16 that routes. Nothing is in the pod's hosts file.
#[test]
fn the_sidecar_answers_dns_for_mesh_names() {
    use crate::security::{HTTPBIN, service};
    let id = next_id();
    let external = format!(
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: api, namespace: default}}\nspec:\n  hosts: [api.internet.test]\n  location: MESH_EXTERNAL\n  resolution: STATIC\n  ports:\n  - {{number: 8080, name: http, protocol: HTTP}}\n  endpoints:\n  - address: 10.77.{id}.{INET1}\n"
    );
    let files = vec![
        (
            "httpbin.yaml",
            service(
                id,
                20,
                "httpbin",
                "  - {number: 8000, name: http, protocol: HTTP, targetPort: 8080}\n",
            ),
        ),
        (
            "httpbin-we.yaml",
            workload(id, "httpbin", HTTPBIN, "httpbin"),
        ),
        ("sleep.yaml", workload(id, POD, SLEEP, POD)),
        ("external.yaml", external),
    ];
    let mut mesh = Mesh::new(id, &files, "", "");
    mesh.add_pod("inet1", INET1, None);
    mesh.start_app("inet1");
    mesh.add_pod("httpbin", HTTPBIN, Some(sidecar("httpbin")));
    mesh.start_app("httpbin");
    let mut sc = sidecar(POD);
    sc.dns_capture = true;
    mesh.add_pod(POD, SLEEP, Some(sc));

    let lookup = |name: &str| {
        let out = mesh.exec(POD, &["getent", "ahostsv4", name]);
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .to_string()
    };
    let vip = Mesh::vip(id, 20);
    let mut last = String::new();
    wait_for(Duration::from_secs(15), "the DNS proxy's answer", || {
        last = lookup("httpbin.default.svc.cluster.local");
        last == vip
    });
    assert_eq!(
        lookup("httpbin"),
        vip,
        "the short name, through the search path"
    );
    assert_eq!(lookup("httpbin.default"), vip);
    let log = mesh.log("proxy-sleep.log");
    assert!(log.contains("DNS proxy listening"), "{log}");

    // The names route: the service by its short name, the ServiceEntry by its allocated VIP.
    let (code, body) = mesh.curl(POD, "http://httpbin:8000/get");
    assert_eq!((code, pod_of(&body).as_str()), (200, "httpbin"), "{body}");
    let allocated = lookup("api.internet.test");
    assert!(
        allocated.starts_with("240.240."),
        "auto-allocated: {allocated:?}"
    );
    let (code, body) = mesh.curl(POD, "http://api.internet.test:8080/get");
    assert_eq!((code, pod_of(&body).as_str()), (200, "inet1"), "{body}");

    // The table follows the config: a new service resolves once pushed.
    mesh.write_config(
        "more.yaml",
        &service(
            id,
            21,
            "ratings",
            "  - {number: 9080, name: http, protocol: HTTP}\n",
        ),
    );
    wait_for(
        Duration::from_secs(15),
        "a new service in the name table",
        || lookup("ratings.default.svc.cluster.local") == Mesh::vip(id, 21),
    );
}
