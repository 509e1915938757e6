//! `weft up` end to end on the bookinfo example: all pods ready, the call chain through the
//! sidecars, mTLS in the metrics, a live edit, `weft down` leaving nothing behind, and a clean
//! start after `kill -9`. Needs root (CI runs as root).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const WEFT: &str = env!("CARGO_BIN_EXE_weft");

#[path = "up/dashboard.rs"]
mod dashboard;
#[path = "up/operate.rs"]
mod operate;
// Free loopback ports, shared with the mesh and kube tests.
#[path = "mesh/ports.rs"]
mod ports;
#[path = "up/why.rs"]
mod why;

fn example() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/bookinfo")
}

fn weft(args: &[&str]) -> (bool, String) {
    let out = Command::new(WEFT)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run weft");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn wait_for(limit: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while start.elapsed() < limit {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("timed out after {limit:?} waiting for {what}");
}

struct Up {
    child: Child,
    log: PathBuf,
}

impl Up {
    fn start(dir: &Path, log: PathBuf, state: &Path) -> Up {
        let file = std::fs::File::create(&log).expect("log");
        let child = Command::new(WEFT)
            .arg("up")
            .arg(dir)
            .arg("--state-dir")
            .arg(state)
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("log"))
            .stderr(file)
            .spawn()
            .expect("weft up");
        let up = Up { child, log };
        wait_for(
            Duration::from_secs(60),
            "weft up to report the mesh up",
            || {
                let out = up.output();
                out.contains("mesh ready") || out.contains("mesh up:")
            },
        );
        up
    }

    fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("===== weft up output\n{}", self.output());
            for entry in std::fs::read_dir("/run/weft/logs")
                .into_iter()
                .flatten()
                .flatten()
            {
                let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(15).collect();
                eprintln!("===== {}", entry.path().display());
                for l in tail.into_iter().rev() {
                    eprintln!("{l}");
                }
            }
        }
        let _ = weft(&["down"]);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn netns_list() -> String {
    let out = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn curl(pod: &str, url: &str, args: &[&str]) -> (bool, String) {
    let mut cmd = vec!["exec", pod, "--", "curl", "-sf", "-m", "10"];
    cmd.extend_from_slice(args);
    cmd.push(url);
    weft(&cmd)
}

/// The product page, fetched in the productpage pod through its sidecar.
fn product_page(args: &[&str]) -> (bool, String) {
    curl("productpage", "http://productpage:9080/productpage", args)
}

/// The reviews version behind a product page, as bookinfo shows it: v1 no stars, v2 black
/// stars, v3 red stars (`None` when the page has no reviews).
fn reviews_version(page: &str) -> Option<&'static str> {
    if !page.contains("Book Reviews") {
        None
    } else if page.contains(r#"<font color="red">"#) {
        Some("v3")
    } else if page.contains(r#"<font color="black">"#) {
        Some("v2")
    } else if !page.contains("glyphicon-star") {
        Some("v1")
    } else {
        None
    }
}

const TELEMETRY: &str = "telemetry: {prometheus: true, jaeger: true, collector: true}\n";

/// The address `weft up` printed for a tool's page (`<title>: http://<addr> …`).
fn tool_url(out: &str, title: &str) -> String {
    out.lines()
        .find_map(|l| l.strip_prefix(&format!("{title}: ")))
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("weft up did not say where {title} is: {out}"))
        .to_string()
}

fn host_get(url: &str) -> String {
    let out = Command::new("curl")
        .args(["-s", "-m", "5", url])
        .output()
        .expect("curl");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn app_log(pod: &str) -> String {
    std::fs::read_to_string(format!("/run/weft/logs/{pod}-app.log")).unwrap_or_default()
}

/// One `weft up` at a time on this machine.
static ONE_MESH: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// A copy of the bookinfo example in `tmp`.
fn bookinfo_copy(tmp: &Path) -> PathBuf {
    let dir = tmp.join("bookinfo");
    std::fs::create_dir_all(&dir).expect("dir");
    for entry in std::fs::read_dir(example()).expect("example") {
        let entry = entry.expect("entry");
        std::fs::copy(entry.path(), dir.join(entry.file_name())).expect("copy");
    }
    dir
}

#[test]
fn bookinfo_with_spire_issuing_the_identities() {
    let _one = ONE_MESH.lock().unwrap_or_else(|e| e.into_inner());
    for var in ["WEFT_SPIRE_SERVER", "WEFT_SPIRE_AGENT"] {
        let path = std::env::var(var).unwrap_or_default();
        assert!(
            !path.is_empty() && Path::new(&path).exists(),
            "{var}={path:?}: run the tests with ./scripts/test, which builds SPIRE"
        );
    }
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = bookinfo_copy(tmp.path());
    let spec = std::fs::read_to_string(dir.join("weft.yaml")).expect("weft.yaml");

    // Switched on with a binary that does not exist: refused, naming the field.
    let missing = format!(
        "{spec}spire: {{enabled: true, binaries: {{server: /nonexistent/spire-server}}}}\n"
    );
    std::fs::write(dir.join("weft.yaml"), missing).expect("weft.yaml");
    let (ok, out) = weft(&[
        "up",
        &dir.to_string_lossy(),
        "--state-dir",
        &tmp.path().join("s").to_string_lossy(),
    ]);
    assert!(!ok && out.contains("spire.binaries.server"), "{out}");

    std::fs::write(
        dir.join("weft.yaml"),
        format!("{spec}spire: {{enabled: true}}\n"),
    )
    .expect("weft.yaml");
    let up = Up::start(&dir, tmp.path().join("up.log"), &tmp.path().join("state"));
    let out = up.output();
    assert!(out.contains("mesh ready: 6 pods"), "{out}");
    assert!(
        out.contains("SPIRE server and agent ready (trust domain cluster.local"),
        "{out}"
    );
    assert!(
        out.contains("spiffe://cluster.local/ns/default/sa/bookinfo-productpage (SPIRE)"),
        "{out}"
    );
    let (ok, page) = product_page(&[]);
    assert!(
        ok && page.contains("Book Details") && page.contains("Book Reviews"),
        "{page}"
    );

    // The sidecars hold SPIRE's SVIDs, under SPIRE's root, and the CA issued nothing.
    let (ok, certs) = weft(&[
        "exec",
        "productpage",
        "--",
        "curl",
        "-s",
        "http://127.0.0.1:15000/certs",
    ]);
    assert!(ok, "{certs}");
    let serial = Command::new("openssl")
        .args([
            "x509",
            "-noout",
            "-serial",
            "-in",
            "/run/weft/spire/bundle.pem",
        ])
        .output()
        .expect("openssl");
    let serial = String::from_utf8_lossy(&serial.stdout)
        .trim()
        .trim_start_matches("serial=")
        .to_ascii_lowercase();
    // Leading zeros are not significant (openssl and the proxy each may print one).
    let serial = serial.trim_start_matches('0');
    let listed = certs
        .split("\"serial_number\": \"")
        .skip(1)
        .filter_map(|s| s.split('"').next())
        .any(|s| s.trim_start_matches('0') == serial);
    assert!(!serial.is_empty() && listed, "{serial} {certs}");
    assert!(
        certs.contains("spiffe://cluster.local/ns/default/sa/bookinfo-productpage"),
        "{certs}"
    );
    let proxy_log =
        std::fs::read_to_string("/run/weft/logs/productpage-proxy.log").unwrap_or_default();
    assert!(
        proxy_log.contains("workload SDS socket found"),
        "{proxy_log}"
    );
    drop(up);
    assert!(
        !Path::new("/run/weft/spire").exists(),
        "SPIRE's data is removed with the mesh"
    );
}

#[test]
fn bookinfo_comes_up_changes_live_and_goes_away_cleanly() {
    let _one = ONE_MESH.lock().unwrap_or_else(|e| e.into_inner());
    let uid = Command::new("id").arg("-u").output().expect("id");
    assert_eq!(
        String::from_utf8_lossy(&uid.stdout).trim(),
        "0",
        "weft up creates network namespaces: run the tests as root (CI does)"
    );
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = bookinfo_copy(tmp.path());
    // As in Istio, MeshConfig's proxyMetadata becomes the sidecars' environment: this mesh runs
    // its sidecars on incremental xDS.
    std::fs::write(
        dir.join("mesh.yaml"),
        "defaultConfig:\n  proxyMetadata:\n    ISTIO_DELTA_XDS: \"true\"\n",
    )
    .expect("mesh.yaml");
    let state = tmp.path().join("state");
    // The telemetry switch: Prometheus (Debian's), Jaeger and the OpenTelemetry Collector
    // (scripts/peers builds them; ./scripts/test exports where) beside the mesh.
    for var in ["WEFT_JAEGER", "WEFT_OTELCOL"] {
        let path = std::env::var(var).unwrap_or_default();
        assert!(
            !path.is_empty() && Path::new(&path).exists(),
            "{var}={path:?}: run the tests with ./scripts/test, which builds the telemetry peers"
        );
    }
    let spec = std::fs::read_to_string(dir.join("weft.yaml")).expect("weft.yaml");
    std::fs::write(dir.join("weft.yaml"), format!("{spec}{TELEMETRY}")).expect("weft.yaml");

    // A directory with an invalid resource is refused before anything starts, naming the
    // file, the resource and the field.
    let bad = tmp.path().join("bad");
    std::fs::create_dir_all(&bad).expect("dir");
    for entry in std::fs::read_dir(&dir).expect("dir") {
        let entry = entry.expect("entry");
        std::fs::copy(entry.path(), bad.join(entry.file_name())).expect("copy");
    }
    let w = std::fs::read_to_string(bad.join("workloads.yaml")).expect("read");
    std::fs::write(
        bad.join("workloads.yaml"),
        w.replace(
            "serviceAccount: bookinfo-ratings",
            "serviceAcount: bookinfo-ratings",
        ),
    )
    .expect("write");
    let (ok, out) = weft(&[
        "up",
        &bad.to_string_lossy(),
        "--state-dir",
        &state.to_string_lossy(),
    ]);
    assert!(!ok, "{out}");
    assert!(
        out.contains("workloads.yaml")
            && out.contains("WorkloadEntry default/ratings")
            && out.contains("spec.serviceAcount"),
        "{out}"
    );
    assert!(
        !netns_list().contains("weft-"),
        "nothing may start for an invalid directory"
    );

    let up = Up::start(&dir, tmp.path().join("up.log"), &state);

    // The chain: productpage → details, reviews (→ ratings for v2 and v3), as bookinfo's page
    // shows it: the book details, and the reviews with stars from ratings (v2 black, v3 red).
    let mut versions = std::collections::BTreeSet::new();
    let mut saw_ratings = false;
    for _ in 0..30 {
        let (ok, page) = product_page(&[]);
        assert!(ok, "productpage failed: {page}");
        assert!(
            page.contains("<dt>Type:</dt>paperback") && page.contains("<dt>Pages:</dt>200"),
            "details through the sidecars: {page}"
        );
        assert!(
            !page.contains("Ratings service is currently unavailable"),
            "ratings through the sidecars: {page}"
        );
        let v = reviews_version(&page)
            .unwrap_or_else(|| panic!("reviews through the sidecars: {page}"));
        if v != "v1" {
            // Stars are ratings' answer.
            saw_ratings = true;
        }
        versions.insert(v);
        if versions.len() == 3 && saw_ratings {
            break;
        }
    }
    assert_eq!(
        versions.len(),
        3,
        "round robin over reviews v1..v3: {versions:?}"
    );
    let proxy_log =
        std::fs::read_to_string("/run/weft/logs/productpage-proxy.log").unwrap_or_default();
    assert!(
        proxy_log.lines().any(
            |l| l.contains("ADS stream to the control plane established")
                && l.contains("delta")
                && l.contains("true")
        ),
        "the sidecar did not use delta xDS: {proxy_log}"
    );
    assert!(saw_ratings);
    // Each app logs the requests it served; a signed-in user reaches reviews as end-user.
    assert!(
        app_log("productpage")
            .lines()
            .any(|l| l.starts_with("productpage GET /productpage ") && l.contains(" 200 host=")),
        "productpage log: {}",
        app_log("productpage")
    );
    assert!(
        app_log("ratings")
            .lines()
            .any(|l| l.starts_with("ratings GET /ratings/0 ") && l.contains(" 200 host=")),
        "ratings log: {}",
        app_log("ratings")
    );
    let (ok, page) = product_page(&["-b", "session=jason"]);
    assert!(
        ok && page.contains(r#"jason ( <a href="logout">sign out</a> )"#),
        "{page}"
    );
    assert!(
        ["reviews-v1", "reviews-v2", "reviews-v3"]
            .iter()
            .any(|pod| app_log(pod).contains(" end-user=jason ")),
        "end-user did not reach reviews"
    );

    // The server sidecars saw mutual TLS with the callers' identities.
    let (_, metrics) = weft(&[
        "exec",
        "ratings",
        "--",
        "curl",
        "-s",
        "http://127.0.0.1:15090/stats/prometheus",
    ]);
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("istio_requests_total{")
                && l.contains(
                    r#"source_principal="spiffe://cluster.local/ns/default/sa/bookinfo-reviews""#
                )
                && l.contains(r#"connection_security_policy="mutual_tls""#)),
        "{metrics}"
    );
    let (ok, status) = weft(&["status"]);
    assert!(
        ok && status.contains("productpage") && status.contains("ready"),
        "{status}"
    );

    // The telemetry tools, opened from the host: Prometheus has the mesh's requests by
    // destination service, Jaeger the traces of the pages (sampling 100%, OTLP), and the
    // collector's file the sidecars' access logs (provider otel, the default it was given).
    let out = up.output();
    let prometheus = tool_url(&out, "Prometheus");
    let jaeger = tool_url(&out, "Jaeger");
    assert!(
        out.contains("OpenTelemetry Collector: ")
            && out.contains("/run/weft/telemetry/otel-collector/logs.json"),
        "{out}"
    );
    wait_for(
        Duration::from_secs(30),
        "Prometheus to have productpage's requests",
        || {
            let q = format!(
                "{prometheus}/api/v1/query?query=sum(istio_requests_total)%20by%20(destination_service)"
            );
            host_get(&q)
                .contains("\"destination_service\":\"productpage.default.svc.cluster.local\"")
        },
    );
    wait_for(
        Duration::from_secs(30),
        "a trace of productpage in Jaeger",
        || {
            let _ = product_page(&[]);
            let traces = host_get(&format!(
                "{jaeger}/api/traces?service=productpage.default&limit=20&lookback=1h"
            ));
            traces.contains("\"serviceName\":\"reviews.default\"")
        },
    );
    wait_for(
        Duration::from_secs(15),
        "the collector to write productpage's access log",
        || {
            std::fs::read_to_string("/run/weft/telemetry/otel-collector/logs.json")
                .unwrap_or_default()
                .contains("GET /productpage HTTP/1.1")
        },
    );
    // The user's mesh.yaml goes on to the control plane with the providers added.
    let merged = std::fs::read_to_string("/run/weft/telemetry/mesh.yaml").expect("mesh");
    assert!(
        merged.contains("ISTIO_DELTA_XDS") && merged.contains("otel-tracing"),
        "{merged}"
    );

    // A live edit: reviews-v1 leaves the reviews service; traffic follows within seconds.
    let workloads = dir.join("workloads.yaml");
    let text = std::fs::read_to_string(&workloads).expect("read");
    let edited = text.replace(
        "labels: {app: reviews, version: v1}",
        "labels: {app: reviews-retired, version: v1}",
    );
    assert_ne!(text, edited);
    std::fs::write(&workloads, edited).expect("write");
    wait_for(
        Duration::from_secs(10),
        "reviews-v1 to stop getting traffic",
        || {
            (0..12).all(|_| {
                let (_, page) = product_page(&[]);
                reviews_version(&page).is_some_and(|v| v != "v1")
            })
        },
    );

    // weft down leaves no namespace, link, process or hosts file behind.
    let (ok, out) = weft(&["down"]);
    assert!(ok, "{out}");
    drop(up);
    let ns = netns_list();
    assert!(!ns.contains("weft-"), "namespaces left: {ns}");
    assert!(!Path::new("/etc/netns/weft-productpage").exists());
    assert!(!Path::new("/run/weft/up.json").exists());
    // This mesh's processes: its control plane (on the copied directory), its proxies (pointed at
    // the node address) and its apps. (Other weft processes on the machine are not its.)
    let pattern = format!(
        "{}|--control-plane 10.42.0.1:15010|sample bookinfo (productpage|details|reviews|ratings)|/run/weft/telemetry/|{}",
        dir.display(),
        std::env::var("WEFT_JAEGER").unwrap_or_default()
    );
    let procs = Command::new("pgrep")
        .args(["-fa", &pattern])
        .output()
        .expect("pgrep");
    assert!(
        procs.stdout.is_empty(),
        "processes left: {}",
        String::from_utf8_lossy(&procs.stdout)
    );

    // After kill -9, the next weft up removes the leftovers and starts cleanly.
    let mut first = Up::start(&dir, tmp.path().join("up2.log"), &state);
    let _ = first.child.kill();
    let _ = first.child.wait();
    assert!(
        netns_list().contains("weft-node"),
        "the killed weft up left its namespaces (as expected)"
    );
    // The second run also has an app that exits: its pod is shown failed with its last output,
    // and the rest of the mesh keeps running.
    let weft_yaml = dir.join("weft.yaml");
    let spec = std::fs::read_to_string(&weft_yaml)
        .expect("weft.yaml")
        .replace(TELEMETRY, "");
    let broken = spec.replace(
        r#"command: [weft, sample, bookinfo, details]"#,
        r#"command: [sh, -c, "echo details cannot start; exit 3"]"#,
    );
    assert_ne!(spec, broken);
    std::fs::write(&weft_yaml, broken).expect("write");
    let second = Up::start(&dir, tmp.path().join("up3.log"), &state);
    let out = second.output();
    assert!(
        out.contains("removing what a previous weft up left behind"),
        "{out}"
    );
    assert!(out.contains("mesh up: 6 pods, 1 failed (details)"), "{out}");
    assert!(
        out.contains("pod details: app exited") && out.contains("details cannot start"),
        "{out}"
    );
    let (ok, page) = product_page(&[]);
    assert!(ok, "{page}");
    assert!(
        page.contains("Error fetching product details!")
            && page.contains("Sorry, product details are currently unavailable for this book."),
        "details is down: {page}"
    );
    assert!(
        page.contains("Book Reviews"),
        "reviews still answers: {page}"
    );
    std::mem::forget(first);
    drop(second);
    assert!(!netns_list().contains("weft-"));
}
