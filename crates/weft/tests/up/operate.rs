//! The operator tools against a running `weft up` bookinfo: `proxy-status` (the table, the
//! diff, a proxy cut off from the control plane going STALE and back), `proxy-config` (each
//! table checked against the config applied), `describe` and `analyze`, as an operator runs
//! them, in istioctl's formats.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use super::{ONE_MESH, Up, bookinfo_copy, product_page, wait_for, weft};

/// Istio's sample, unchanged: jason to reviews v2, everyone else to v1.
fn istio_sample(name: &str) -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/istio/samples/bookinfo/networking")
        .join(name);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

const POLICIES: &str = r#"apiVersion: security.istio.io/v1beta1
kind: PeerAuthentication
metadata:
  name: reviews-strict
spec:
  selector:
    matchLabels: {app: reviews}
  mtls: {mode: STRICT}
---
apiVersion: security.istio.io/v1beta1
kind: AuthorizationPolicy
metadata:
  name: viewer
spec:
  selector:
    matchLabels: {app: reviews}
  action: ALLOW
  rules:
  - from:
    - source: {principals: ["cluster.local/ns/default/sa/bookinfo-productpage"]}
"#;

/// Cells of a table row (columns are separated by at least two spaces).
fn cells(line: &str) -> Vec<&str> {
    line.split("  ")
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .collect()
}

fn row_of<'a>(table: &'a str, first: &str) -> Vec<&'a str> {
    table
        .lines()
        .map(cells)
        .find(|c| c.first() == Some(&first))
        .unwrap_or_else(|| panic!("no row {first:?} in\n{table}"))
}

fn ns_iptables(ns: &str, args: &[&str]) {
    let st = Command::new("ip")
        .args(["netns", "exec", ns, "iptables"])
        .args(args)
        .status()
        .expect("iptables");
    assert!(st.success(), "iptables {args:?} in {ns}");
}

#[test]
fn operator_tools_on_bookinfo() {
    let _one = ONE_MESH.lock().unwrap_or_else(|e| e.into_inner());
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = bookinfo_copy(tmp.path());
    std::fs::write(
        dir.join("vs-reviews.yaml"),
        istio_sample("virtual-service-reviews-test-v2.yaml"),
    )
    .expect("vs");
    std::fs::write(dir.join("policies.yaml"), POLICIES).expect("policies");
    let up = Up::start(&dir, tmp.path().join("up.log"), &tmp.path().join("state"));
    let _ = &up;

    // proxy-status: istioctl 1.14's columns; every proxy SYNCED on CDS, LDS, EDS and RDS.
    let mut table = String::new();
    wait_for(Duration::from_secs(30), "every proxy SYNCED", || {
        let (ok, out) = weft(&["proxy-status"]);
        table = out;
        ok && [
            "productpage",
            "details",
            "ratings",
            "reviews-v1",
            "reviews-v2",
            "reviews-v3",
        ]
        .iter()
        .all(|p| {
            table.lines().any(|l| {
                let c = cells(l);
                c.first() == Some(&format!("{p}.default").as_str())
                    && c[2..6] == ["SYNCED", "SYNCED", "SYNCED", "SYNCED"]
            })
        })
    });
    assert_eq!(
        cells(table.lines().next().unwrap_or_default()),
        vec![
            "NAME", "CLUSTER", "CDS", "LDS", "EDS", "RDS", "ECDS", "ISTIOD", "VERSION", "ACKED"
        ],
        "{table}"
    );
    let row = row_of(&table, "productpage.default");
    assert_eq!(row[6], "NOT SENT", "{table}");
    assert!(row[8].starts_with("weft/"), "{table}");
    let version = table
        .lines()
        .find_map(|l| l.strip_prefix("control plane config version: "))
        .unwrap_or_else(|| panic!("{table}"))
        .to_string();
    assert_eq!(row[9], version, "{table}");

    // proxy-status POD: the control plane's config for the pod against the proxy's.
    let (ok, diff) = weft(&["proxy-status", "productpage"]);
    assert!(ok, "{diff}");
    for t in ["Clusters", "Listeners", "Routes", "Endpoints"] {
        assert!(diff.contains(&format!("{t} Match")), "{diff}");
    }

    // A proxy cut off from the control plane keeps its config; a change it cannot receive
    // shows as STALE and as the clusters that differ; reconnected, it catches up.
    let node_ip = {
        let st: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string("/run/weft/up.json").expect("state"))
                .expect("state json");
        st["node_ip"].as_str().expect("node_ip").to_string()
    };
    let cut_out = [
        "OUTPUT",
        "-d",
        &node_ip,
        "-p",
        "tcp",
        "-m",
        "multiport",
        "--dports",
        "15010,15012",
        "-j",
        "DROP",
    ];
    let cut_in = [
        "INPUT",
        "-s",
        &node_ip,
        "-p",
        "tcp",
        "-m",
        "multiport",
        "--sports",
        "15010,15012",
        "-j",
        "DROP",
    ];
    for rule in [&cut_out, &cut_in] {
        let insert: Vec<&str> = std::iter::once("-I").chain(rule.iter().copied()).collect();
        ns_iptables("weft-details", &insert);
    }
    std::fs::write(
        dir.join("se-extra.yaml"),
        "apiVersion: networking.istio.io/v1beta1\nkind: ServiceEntry\nmetadata:\n  name: extra\nspec:\n  hosts: [extra.example.com]\n  ports: [{number: 80, name: http, protocol: HTTP}]\n  resolution: STATIC\n  endpoints: [{address: 10.9.9.9}]\n",
    )
    .expect("se");
    let mut diff = String::new();
    wait_for(
        Duration::from_secs(20),
        "the cut-off proxy to differ",
        || {
            let (ok, out) = weft(&["proxy-status", "details"]);
            diff = out;
            !ok && diff.contains(
            "  - outbound|80||extra.example.com: sent by the control plane, not held by the proxy",
        )
        },
    );
    assert!(diff.contains("Clusters Don't Match"), "{diff}");
    let table = weft(&["proxy-status"]).1;
    assert!(
        row_of(&table, "details.default")[2].starts_with("STALE"),
        "{table}"
    );
    assert_eq!(row_of(&table, "ratings.default")[2], "SYNCED", "{table}");
    for rule in [&cut_out, &cut_in] {
        let delete: Vec<&str> = std::iter::once("-D").chain(rule.iter().copied()).collect();
        ns_iptables("weft-details", &delete);
    }
    wait_for(Duration::from_secs(60), "details SYNCED again", || {
        let (ok, out) = weft(&["proxy-status", "details"]);
        ok && out.contains("Clusters Match")
    });

    // proxy-config, each table from the proxy's own config.
    let (ok, clusters) = weft(&["proxy-config", "cluster", "productpage"]);
    assert!(ok, "{clusters}");
    assert_eq!(
        row_of(&clusters, "reviews.default.svc.cluster.local"),
        vec![
            "reviews.default.svc.cluster.local",
            "9080",
            "-",
            "outbound",
            "EDS",
            "reviews.default"
        ],
        "{clusters}"
    );
    assert!(
        clusters.lines().map(cells).any(|c| c
            == [
                "reviews.default.svc.cluster.local",
                "9080",
                "v2",
                "outbound",
                "EDS",
                "reviews.default"
            ]),
        "{clusters}"
    );
    assert_eq!(
        row_of(&clusters, "BlackHoleCluster"),
        vec!["BlackHoleCluster", "-", "-", "-", "STATIC"],
        "{clusters}"
    );
    let (_, only) = weft(&[
        "pc",
        "cluster",
        "productpage",
        "--fqdn",
        "ratings",
        "--subset",
        "v1",
    ]);
    assert_eq!(only.lines().count(), 2, "{only}");
    let (_, json) = weft(&[
        "pc",
        "cluster",
        "productpage",
        "--fqdn",
        "ratings",
        "-o",
        "json",
    ]);
    let v: serde_json::Value =
        serde_json::from_str(&json).unwrap_or_else(|e| panic!("{e}: {json}"));
    assert_eq!(v.as_array().map(Vec::len), Some(2), "{json}");

    let (_, listeners) = weft(&["pc", "listener", "productpage", "--port", "9080"]);
    assert!(
        listeners
            .lines()
            .any(|l| cells(l).last() == Some(&"Route: 9080")),
        "{listeners}"
    );
    let (_, routes) = weft(&["pc", "route", "productpage", "--name", "9080"]);
    assert!(
        routes
            .lines()
            .map(cells)
            .any(|c| c.first() == Some(&"9080") && c.last() == Some(&"reviews.default")),
        "the route from the VirtualService names it: {routes}"
    );
    let (_, eps) = weft(&[
        "pc",
        "endpoint",
        "productpage",
        "--cluster",
        "outbound|9080|v1|reviews.default.svc.cluster.local",
    ]);
    let rows: Vec<Vec<&str>> = eps.lines().skip(1).map(cells).collect();
    assert_eq!(rows.len(), 1, "{eps}");
    assert_eq!(
        rows[0][1..],
        [
            "HEALTHY",
            "OK",
            "outbound|9080|v1|reviews.default.svc.cluster.local"
        ],
        "{eps}"
    );
    let (_, secrets) = weft(&["pc", "secret", "productpage"]);
    let default = row_of(&secrets, "default");
    assert_eq!(default[1..4], ["Cert Chain", "ACTIVE", "true"], "{secrets}");
    assert_eq!(
        row_of(&secrets, "ROOTCA")[1..4],
        ["CA", "ACTIVE", "true"],
        "{secrets}"
    );
    let (_, certs) = weft(&[
        "exec",
        "productpage",
        "--",
        "curl",
        "-s",
        "http://127.0.0.1:15000/certs",
    ]);
    let certs: serde_json::Value = serde_json::from_str(&certs).expect("certs");
    let serial = certs["certificates"][0]["cert_chain"][0]["serial_number"]
        .as_str()
        .unwrap_or_default();
    // istioctl 1.14 prints the serial in decimal; Envoy's /certs in hex (Weft's CA issues
    // 128-bit serials).
    let decimal = u128::from_str_radix(serial, 16).map(|n| n.to_string());
    assert_eq!(decimal.as_deref(), Ok(default[4]), "{secrets} vs {certs}");
    let (ok, logs) = weft(&[
        "pc",
        "log",
        "productpage",
        "--level",
        "weft_proxy:debug,warning",
    ]);
    assert!(ok && logs.starts_with("active loggers:\n"), "{logs}");
    assert!(
        logs.contains("  weft_proxy: debug") && logs.contains("  default: warn"),
        "{logs}"
    );
    let (_, logs) = weft(&["pc", "log", "productpage"]);
    assert!(
        logs.contains("  weft_proxy: debug"),
        "the level stays: {logs}"
    );
    weft(&["pc", "log", "productpage", "--level", "info"]);

    // describe: what applies to reviews-v1, and what a request then does agrees with it.
    let (ok, d) = weft(&["describe", "pod", "reviews-v1"]);
    assert!(ok, "{d}");
    for want in [
        "Pod: reviews-v1",
        "Service: reviews",
        "   Port: http 9080/HTTP targets pod port 9080",
        "DestinationRule: reviews for \"reviews\"",
        "   Matching subsets: v1",
        "      (Non-matching subsets v2,v3)",
        "VirtualService: reviews",
        "      Route to non-matching subset v2 for (when headers are end-user=jason)",
        "RBAC policies: ns[default]-policy[viewer]-rule[0]",
        "   Workload mTLS mode: STRICT",
        "Applied PeerAuthentication:\n   reviews-strict.default",
        "Applied AuthorizationPolicy:\n   viewer.default (ALLOW)",
    ] {
        assert!(d.contains(want), "missing {want:?} in\n{d}");
    }
    let (ok, page) = product_page(&[]);
    assert!(
        ok && page.contains("Book Reviews") && !page.contains("glyphicon-star"),
        "v1 for everyone but jason: {page}"
    );
    let (ok, d) = weft(&["describe", "svc", "reviews"]);
    assert!(ok && d.contains("   Matching subsets: v1,v2,v3"), "{d}");

    // analyze: the mesh's own directory is clean; a VirtualService to a subset no
    // DestinationRule defines is IST0101 with its file and line, exit 79.
    let (ok, out) = weft(&["analyze"]);
    assert!(
        ok && out.contains("\u{2714} No validation issues found"),
        "{out}"
    );
    let bad = tmp.path().join("bad");
    std::fs::create_dir_all(&bad).expect("bad");
    for f in ["services.yaml", "destination-rule-all.yaml"] {
        std::fs::copy(dir.join(f), bad.join(f)).expect("copy");
    }
    std::fs::write(
        bad.join("vs.yaml"),
        istio_sample("virtual-service-reviews-v3.yaml").replace("subset: v3", "subset: v4"),
    )
    .expect("vs");
    let out = Command::new(env!("CARGO_BIN_EXE_weft"))
        .arg("analyze")
        .arg(&bad)
        .output()
        .expect("analyze");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(79), "{stdout}");
    assert!(
        stdout.contains(&format!(
            "Error [IST0101] (VirtualService default/reviews {}:",
            bad.join("vs.yaml").display()
        )) && stdout
            .contains("Referenced host+subset in destinationrule not found: \"reviews+v4\""),
        "{stdout}"
    );
}
