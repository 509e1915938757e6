//! The istio.io traffic-management tasks on Istio's bookinfo, end to end: request routing,
//! fault injection (delay and abort), traffic shifting and request timeouts, with Istio's own
//! sample YAML (release 1.14) applied unchanged, checked by what a user sees — the product
//! page, fetched by a client pod through the mesh, with and without jason signed in.
//!
//! One mesh serves all the tasks, one after the other, as a user would run them on one
//! cluster: each task starts by applying its own starting config, as its page says.

use std::collections::BTreeMap;
use std::fmt;
use std::time::{Duration, Instant};

use crate::metric_lines;
use crate::netns::{Mesh, Sidecar, WEFT, next_id, wait_for};

const CLIENT: u8 = 10;

/// The bookinfo workloads of examples/bookinfo/workloads.yaml: (WorkloadEntry and pod name,
/// app, version, host in the test subnet).
const WORKLOADS: [(&str, &str, &str, u8); 6] = [
    ("productpage", "productpage", "v1", 20),
    ("details", "details", "v1", 21),
    ("reviews-v1", "reviews", "v1", 22),
    ("reviews-v2", "reviews", "v2", 23),
    ("reviews-v3", "reviews", "v3", 24),
    ("ratings", "ratings", "v1", 25),
];

/// The bookinfo services of examples/bookinfo/services.yaml; service `i` has VIP 10.78.<id>.(10+i).
const SERVICES: [&str; 4] = ["productpage", "details", "reviews", "ratings"];

pub(crate) const URL: &str = "http://productpage:9080/productpage";

const REVIEWS_UNAVAILABLE: &str = "Sorry, product reviews are currently unavailable for this book.";
const RATINGS_UNAVAILABLE: &str = "Ratings service is currently unavailable";

/// How long a config change may take to show on the page (the poll itself may take a few
/// seconds per page load while a delay is in force).
const APPLY_LIMIT: Duration = Duration::from_secs(60);

fn vip(id: u8, service: usize) -> String {
    Mesh::vip(id, 10 + service as u8)
}

/// examples/bookinfo/services.yaml with a VIP per service (`addresses`).
fn services(id: u8) -> String {
    SERVICES
        .iter()
        .enumerate()
        .map(|(i, name)| {
            format!(
                r#"apiVersion: networking.istio.io/v1beta1
kind: ServiceEntry
metadata:
  name: {name}
  namespace: default
spec:
  hosts: [{name}]
  addresses: [{vip}]
  location: MESH_INTERNAL
  resolution: STATIC
  ports:
  - {{number: 9080, name: http, protocol: HTTP}}
  workloadSelector:
    labels: {{app: {name}}}
"#,
                vip = vip(id, i)
            )
        })
        .collect::<Vec<_>>()
        .join("---\n")
}

fn workload_entry(id: u8, name: &str, app: &str, version: &str, host: u8, sa: &str) -> String {
    format!(
        r#"apiVersion: networking.istio.io/v1beta1
kind: WorkloadEntry
metadata:
  name: {name}
  namespace: default
spec:
  address: 10.77.{id}.{host}
  labels: {{app: {app}, version: {version}}}
  serviceAccount: {sa}
"#
    )
}

/// examples/bookinfo/workloads.yaml in the test subnet, and the client's workload.
fn workloads(id: u8) -> String {
    let mut docs: Vec<String> = WORKLOADS
        .iter()
        .map(|(name, app, version, host)| {
            workload_entry(id, name, app, version, *host, &format!("bookinfo-{app}"))
        })
        .collect();
    docs.push(workload_entry(
        id, "client", "client", "v1", CLIENT, "client",
    ));
    docs.join("---\n")
}

/// Every pod resolves each service's short name, `name.default` and FQDN to its VIP.
fn hosts(id: u8) -> String {
    SERVICES
        .iter()
        .enumerate()
        .map(|(i, name)| {
            format!(
                "{} {name}.default.svc.cluster.local {name}.default {name}\n",
                vip(id, i)
            )
        })
        .collect()
}

fn sidecar(workload: &str, app: &str, version: &str, sa: &str) -> Sidecar {
    Sidecar {
        workload: format!("default/{workload}"),
        labels: BTreeMap::from([
            ("app".into(), app.into()),
            ("version".into(), version.into()),
        ]),
        service_account: sa.into(),
        cert_ttl: None,
        delta: false,
        ..Default::default()
    }
}

/// One of Istio's bookinfo networking samples, as shipped.
fn istio_sample(file: &str) -> String {
    let path = format!(
        "{}{file}",
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../../shared/istio/samples/bookinfo/networking/"
        )
    );
    std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "cannot read Istio's bookinfo sample {path}: {e}. These tests apply Istio's own YAML \
             (release 1.14) from /work/shared/istio/samples/bookinfo/networking/"
        )
    })
}

/// The objects of a (multi-document) YAML text: (kind, name, the document as written).
fn objects(yaml: &str) -> Vec<(String, String, String)> {
    let mut docs = vec![String::new()];
    for line in yaml.lines() {
        if line.trim_end() == "---" {
            docs.push(String::new());
        } else if let Some(doc) = docs.last_mut() {
            doc.push_str(line);
            doc.push('\n');
        }
    }
    docs.into_iter()
        .filter(|doc| {
            doc.lines()
                .any(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        })
        .map(|doc| {
            let kind = doc
                .lines()
                .find_map(|l| l.strip_prefix("kind:"))
                .map(|k| k.trim().to_string())
                .unwrap_or_else(|| panic!("a document without kind:\n{doc}"));
            let name = doc
                .lines()
                .skip_while(|l| !l.starts_with("metadata:"))
                .skip(1)
                .take_while(|l| l.starts_with(' '))
                .find_map(|l| l.trim().strip_prefix("name:"))
                .map(|n| n.trim().to_string())
                .unwrap_or_else(|| panic!("a document without metadata.name:\n{doc}"));
            (kind, name, doc)
        })
        .collect()
}

/// `kubectl apply -f`: each object replaces the object of the same kind and name. The config
/// directory holds one file per object, each document exactly as written in `yaml`.
fn kubectl_apply(mesh: &Mesh, what: &str, yaml: &str) {
    let objects = objects(yaml);
    assert!(!objects.is_empty(), "{what} has no objects");
    for (kind, name, doc) in &objects {
        mesh.write_config(&format!("{}-{name}.yaml", kind.to_lowercase()), doc);
    }
    let names: Vec<String> = objects.iter().map(|(k, n, _)| format!("{k}/{n}")).collect();
    eprintln!("kubectl apply -f {what}: {}", names.join(", "));
}

fn apply_sample(mesh: &Mesh, file: &str) {
    kubectl_apply(mesh, file, &istio_sample(file));
}

/// The control plane reports no problem with the config in force.
fn assert_config_accepted(mesh: &Mesh) {
    let errors = mesh.debug("/debug/config_errors");
    assert_eq!(errors.trim(), "[]", "config errors");
}

/// One load of the product page from the client pod.
pub(crate) struct Page {
    pub(crate) code: u16,
    body: String,
    secs: f64,
}

impl fmt::Display for Page {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "HTTP {} after {:.3} s, showing {:?}:\n{}",
            self.code,
            self.secs,
            self.shown(),
            self.body
        )
    }
}

/// What the product page shows in place of the reviews' stars.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shown {
    /// Reviews without stars (reviews v1).
    NoStars,
    /// Black stars (reviews v2).
    BlackStars,
    /// Red stars (reviews v3).
    RedStars,
    /// Reviews with "Ratings service is currently unavailable" instead of stars (v2 or v3
    /// when ratings fails).
    RatingsUnavailable,
    /// "Sorry, product reviews are currently unavailable for this book."
    ReviewsUnavailable,
    /// Anything else: an error status, details missing, a mix.
    Broken,
}

impl Page {
    fn shown(&self) -> Shown {
        let b = &self.body;
        if self.code != 200
            || !b.contains("<h4 class=\"text-center text-primary\">Book Details</h4>")
        {
            return Shown::Broken;
        }
        let reviews_ok = b.contains("<h4 class=\"text-center text-primary\">Book Reviews</h4>");
        let sorry = b.contains(REVIEWS_UNAVAILABLE);
        let stars = b.contains("glyphicon-star");
        let black = b.contains("<font color=\"black\">");
        let red = b.contains("<font color=\"red\">");
        let ratings_down = b.contains(RATINGS_UNAVAILABLE);
        match (reviews_ok, sorry, stars, black, red, ratings_down) {
            (false, true, false, false, false, false) => Shown::ReviewsUnavailable,
            (true, false, false, false, false, false) => Shown::NoStars,
            (true, false, true, true, false, false) => Shown::BlackStars,
            (true, false, true, false, true, false) => Shown::RedStars,
            (true, false, false, false, false, true) => Shown::RatingsUnavailable,
            _ => Shown::Broken,
        }
    }
}

/// Loads the product page from the client pod, signed in as `user` (the `session` cookie
/// productpage's login sets) or anonymously.
pub(crate) fn page(mesh: &Mesh, user: Option<&str>) -> Page {
    let cookie = user.map(|u| format!("session={u}"));
    let mut args = vec!["-s", "-m", "20", "-w", "\n%{http_code} %{time_total}"];
    if let Some(c) = &cookie {
        args.extend(["-b", c.as_str()]);
    }
    args.push(URL);
    let out = mesh.curl_from(mesh.ns("client"), &args);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, tail) = text.rsplit_once('\n').unwrap_or(("", "0 0"));
    let mut it = tail.split_whitespace();
    Page {
        code: it.next().and_then(|c| c.parse().ok()).unwrap_or(0),
        secs: it.next().and_then(|s| s.parse().ok()).unwrap_or(0.0),
        body: body.to_string(),
    }
}

/// Asserts that `n` page loads as `user` all show `want`.
fn assert_pages(mesh: &Mesh, user: Option<&str>, n: usize, want: Shown) {
    for i in 0..n {
        let p = page(mesh, user);
        assert_eq!(
            p.shown(),
            want,
            "page load {} of {n} as {user:?}: {p}",
            i + 1
        );
    }
}

/// Waits until `streak` page loads in a row as `user` show `want`.
fn wait_for_pages(mesh: &Mesh, user: Option<&str>, want: Shown, streak: usize, what: &str) {
    let start = Instant::now();
    let mut run = 0;
    wait_for(APPLY_LIMIT, what, || {
        if page(mesh, user).shown() == want {
            run += 1;
        } else {
            run = 0;
        }
        run >= streak
    });
    eprintln!("  {what}: {:.1} s", start.elapsed().as_secs_f64());
}

/// The sum of the `istio_requests_total` series of `pod`'s sidecar that contain every needle.
fn requests_total(mesh: &Mesh, pod: &str, needles: &[&str]) -> u64 {
    metric_lines(&mesh.metrics(pod), "istio_requests_total{")
        .into_iter()
        .filter(|l| needles.iter().all(|n| l.contains(n)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// The bookinfo mesh (with the access log on stdout).
fn bookinfo_mesh() -> Mesh {
    bookinfo_mesh_with("accessLogFile: /dev/stdout\n")
}

/// The bookinfo mesh: the six workloads with sidecars and Weft's bookinfo apps, and a client
/// pod with a sidecar, under `mesh_config`.
pub(crate) fn bookinfo_mesh_with(mesh_config: &str) -> Mesh {
    let id = next_id();
    let config = vec![
        ("services.yaml", services(id)),
        ("workloads.yaml", workloads(id)),
    ];
    let mut mesh = Mesh::new(id, &config, mesh_config, &hosts(id));
    for (name, app, version, host) in WORKLOADS {
        let sa = format!("bookinfo-{app}");
        mesh.add_pod(name, host, Some(sidecar(name, app, version, &sa)));
        let mut argv = vec![WEFT, "sample", "bookinfo", app, "--version", version];
        if app == "reviews" {
            argv.extend(["--pod", name]);
        }
        mesh.start_command(name, &argv, "http://127.0.0.1:9080/health");
    }
    mesh.add_pod(
        "client",
        CLIENT,
        Some(sidecar("client", "client", "v1", "client")),
    );
    mesh
}

#[test]
fn istio_traffic_management_tasks_on_bookinfo() {
    crate::netns::require_root();
    // Fail before building the mesh when Istio's samples are missing.
    for file in [
        "destination-rule-all.yaml",
        "virtual-service-all-v1.yaml",
        "virtual-service-reviews-test-v2.yaml",
        "virtual-service-ratings-test-delay.yaml",
        "virtual-service-ratings-test-abort.yaml",
        "virtual-service-reviews-50-v3.yaml",
        "virtual-service-reviews-v3.yaml",
    ] {
        istio_sample(file);
    }
    let started = Instant::now();
    let mesh = bookinfo_mesh();
    eprintln!(
        "bookinfo mesh up in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    // Without routing config, reviews is balanced over v1, v2 and v3: every kind of page shows
    // up, so "no stars" below means the routing works, not that stars are missing.
    let mut seen = std::collections::BTreeSet::new();
    wait_for(
        Duration::from_secs(30),
        "pages from reviews v1, v2 and v3",
        || {
            let shown = page(&mesh, None).shown();
            if matches!(shown, Shown::NoStars | Shown::BlackStars | Shown::RedStars) {
                seen.insert(format!("{shown:?}"));
            }
            seen.len() == 3
        },
    );

    // ---- Request routing (istio.io/v1.14/docs/tasks/traffic-management/request-routing).
    let task = Instant::now();
    apply_sample(&mesh, "destination-rule-all.yaml");
    apply_sample(&mesh, "virtual-service-all-v1.yaml");
    // Before the config, a page without stars comes one time in three: ten in a row happen
    // by chance with odds of (1/3)^10 ≈ 2e-5.
    wait_for_pages(&mesh, None, Shown::NoStars, 10, "all-v1 to show no stars");
    assert_config_accepted(&mesh);
    assert_pages(&mesh, None, 10, Shown::NoStars);
    // jason too is served by v1 until the next rule.
    assert_pages(&mesh, Some("jason"), 1, Shown::NoStars);

    apply_sample(&mesh, "virtual-service-reviews-test-v2.yaml");
    wait_for_pages(
        &mesh,
        Some("jason"),
        Shown::BlackStars,
        1,
        "jason to see black stars",
    );
    assert_config_accepted(&mesh);
    assert_pages(&mesh, Some("jason"), 10, Shown::BlackStars);
    assert_pages(&mesh, None, 10, Shown::NoStars);
    eprintln!("request routing: {:.1} s", task.elapsed().as_secs_f64());

    // ---- Fault injection (tasks/traffic-management/fault-injection): its starting config,
    // then a 7 s delay between reviews v2 and ratings for jason.
    let task = Instant::now();
    apply_sample(&mesh, "virtual-service-all-v1.yaml");
    apply_sample(&mesh, "virtual-service-reviews-test-v2.yaml");
    apply_sample(&mesh, "virtual-service-ratings-test-delay.yaml");
    wait_for_pages(
        &mesh,
        Some("jason"),
        Shown::ReviewsUnavailable,
        1,
        "the delay to take reviews away from jason",
    );
    assert_config_accepted(&mesh);
    // productpage gives reviews 3 s and tries twice: the page comes after about 6 s, without
    // the reviews (reviews v2 would wait 10 s for ratings).
    let p = page(&mesh, Some("jason"));
    assert_eq!(
        p.shown(),
        Shown::ReviewsUnavailable,
        "jason under the delay: {p}"
    );
    assert!(
        (5.0..8.5).contains(&p.secs),
        "jason's page under the 7 s delay should take about 6 s: {p}"
    );
    eprintln!("  jason's page under the 7 s delay: {:.2} s", p.secs);
    // Everyone else: reviews v1, which does not call ratings: fast, no stars.
    for _ in 0..5 {
        let p = page(&mesh, None);
        assert_eq!(p.shown(), Shown::NoStars, "anonymous under the delay: {p}");
        assert!(p.secs < 1.0, "anonymous page under the delay is slow: {p}");
    }

    // An HTTP abort (500) between reviews v2 and ratings for jason.
    apply_sample(&mesh, "virtual-service-ratings-test-abort.yaml");
    wait_for_pages(
        &mesh,
        Some("jason"),
        Shown::RatingsUnavailable,
        1,
        "the abort to take ratings away from jason",
    );
    assert_config_accepted(&mesh);
    for _ in 0..5 {
        let p = page(&mesh, Some("jason"));
        assert_eq!(
            p.shown(),
            Shown::RatingsUnavailable,
            "jason under the abort: {p}"
        );
        assert!(p.secs < 1.0, "the abort should answer at once: {p}");
    }
    assert_pages(&mesh, None, 5, Shown::NoStars);
    // reviews v2's sidecar answered the calls to ratings itself: 500 with flag FI (the
    // labels naming the destination are checked at the end).
    let aborted = requests_total(
        &mesh,
        "reviews-v2",
        &[
            "reporter=\"source\"",
            "response_code=\"500\"",
            "response_flags=\"FI\"",
        ],
    );
    assert!(
        aborted >= 5,
        "reviews-v2's sidecar reports {aborted} aborted calls:\n{}",
        metric_lines(&mesh.metrics("reviews-v2"), "istio_requests_total{").join("\n")
    );
    eprintln!("fault injection: {:.1} s", task.elapsed().as_secs_f64());

    // ---- Traffic shifting (tasks/traffic-management/traffic-shifting).
    let task = Instant::now();
    apply_sample(&mesh, "virtual-service-all-v1.yaml");
    // jason's page changes from "ratings unavailable" (v2, aborted) to v1's.
    wait_for_pages(
        &mesh,
        Some("jason"),
        Shown::NoStars,
        1,
        "all-v1 to route jason to v1",
    );
    assert_config_accepted(&mesh);
    assert_pages(&mesh, None, 10, Shown::NoStars);

    apply_sample(&mesh, "virtual-service-reviews-50-v3.yaml");
    wait_for_pages(
        &mesh,
        None,
        Shown::RedStars,
        1,
        "the 50/50 split to show red stars",
    );
    assert_config_accepted(&mesh);
    // 100 loads, each red with probability 1/2: the count of red pages is Binomial(100, 0.5),
    // mean 50, standard deviation 5. 30..=70 is ±4 sd: a fair split leaves it with odds of
    // about 3e-5, while a split that ignores the weights (all v1, all v3) or a 90/10 one
    // cannot stay inside.
    let mut red = 0;
    for i in 0..100 {
        let p = page(&mesh, None);
        match p.shown() {
            Shown::RedStars => red += 1,
            Shown::NoStars => {}
            _ => panic!("page load {} of 100 under reviews-50-v3: {p}", i + 1),
        }
    }
    eprintln!("  reviews-50-v3: {red} of 100 pages with red stars");
    assert!(
        (30..=70).contains(&red),
        "reviews-50-v3: {red} of 100 pages with red stars"
    );

    apply_sample(&mesh, "virtual-service-reviews-v3.yaml");
    // Under 50/50, twenty red pages in a row come by chance with odds of 2^-20 ≈ 1e-6.
    wait_for_pages(
        &mesh,
        None,
        Shown::RedStars,
        20,
        "reviews-v3 to show red stars only",
    );
    assert_config_accepted(&mesh);
    assert_pages(&mesh, None, 20, Shown::RedStars);
    eprintln!("traffic shifting: {:.1} s", task.elapsed().as_secs_f64());

    // ---- Request timeouts (tasks/traffic-management/request-timeouts): the task's YAML is
    // inline on its page.
    let task = Instant::now();
    apply_sample(&mesh, "virtual-service-all-v1.yaml");
    wait_for_pages(&mesh, None, Shown::NoStars, 1, "all-v1 after reviews-v3");
    kubectl_apply(
        &mesh,
        "- (reviews to v2)",
        r#"apiVersion: networking.istio.io/v1alpha3
kind: VirtualService
metadata:
  name: reviews
spec:
  hosts:
    - reviews
  http:
  - route:
    - destination:
        host: reviews
        subset: v2
"#,
    );
    wait_for_pages(&mesh, None, Shown::BlackStars, 1, "reviews v2 for everyone");
    kubectl_apply(
        &mesh,
        "- (ratings delayed 2 s)",
        r#"apiVersion: networking.istio.io/v1alpha3
kind: VirtualService
metadata:
  name: ratings
spec:
  hosts:
  - ratings
  http:
  - fault:
      delay:
        percentage:
          value: 100
        fixedDelay: 2s
    route:
    - destination:
        host: ratings
        subset: v1
"#,
    );
    wait_for(APPLY_LIMIT, "the 2 s delay on ratings", || {
        page(&mesh, None).secs >= 2.0
    });
    assert_config_accepted(&mesh);
    // The page still has its stars, after about 2 s.
    for _ in 0..3 {
        let p = page(&mesh, None);
        assert_eq!(p.shown(), Shown::BlackStars, "ratings delayed 2 s: {p}");
        assert!(
            (2.0..3.0).contains(&p.secs),
            "with ratings delayed 2 s the page should take about 2 s: {p}"
        );
        eprintln!("  page with ratings delayed 2 s: {:.2} s", p.secs);
    }

    kubectl_apply(
        &mesh,
        "- (reviews with a 0.5 s timeout)",
        r#"apiVersion: networking.istio.io/v1alpha3
kind: VirtualService
metadata:
  name: reviews
spec:
  hosts:
  - reviews
  http:
  - route:
    - destination:
        host: reviews
        subset: v2
    timeout: 0.5s
"#,
    );
    wait_for_pages(
        &mesh,
        None,
        Shown::ReviewsUnavailable,
        1,
        "the 0.5 s timeout to take reviews away",
    );
    assert_config_accepted(&mesh);
    let timed_out = |m: &Mesh| {
        requests_total(
            m,
            "productpage",
            &[
                "reporter=\"source\"",
                "destination_service=\"reviews.default.svc.cluster.local\"",
                "response_code=\"504\"",
                "response_flags=\"UT\"",
            ],
        )
    };
    for _ in 0..3 {
        let before = timed_out(&mesh);
        // productpage's sidecar answers 504 after 0.5 s, productpage tries once more: the
        // page comes after about 1 s, without the reviews.
        let p = page(&mesh, None);
        assert_eq!(
            p.shown(),
            Shown::ReviewsUnavailable,
            "reviews timeout 0.5 s: {p}"
        );
        assert!(
            (0.9..2.5).contains(&p.secs),
            "with the 0.5 s timeout the page should take about 1 s (two tries): {p}"
        );
        eprintln!("  page with the 0.5 s reviews timeout: {:.2} s", p.secs);
        wait_for(
            Duration::from_secs(5),
            "productpage's sidecar to report two timed-out calls (504 UT) to reviews",
            || timed_out(&mesh) == before + 2,
        );
    }
    eprintln!("request timeouts: {:.1} s", task.elapsed().as_secs_f64());

    eprintln!("all tasks: {:.1} s", started.elapsed().as_secs_f64());

    // The telemetry of the aborts, checked last so that the tasks above run whatever it says.
    // Envoy's connection manager resolves the route, and with it the upstream cluster, before
    // the fault filter answers: the access log names the cluster (%UPSTREAM_CLUSTER%) and
    // Istio's stats take destination_service from the cluster's name, so an aborted call
    // still names the service it was meant for.
    let log = mesh.wait_log(
        "proxy-reviews-v2.log",
        "\"GET /ratings/0 HTTP/1.1\" 500 FI fault_filter_abort",
    );
    let abort_lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("\"GET /ratings/0 HTTP/1.1\" 500 FI fault_filter_abort"))
        .collect();
    assert!(
        !abort_lines.is_empty(),
        "no aborted call in reviews-v2's access log:\n{log}"
    );
    for line in &abort_lines {
        assert!(
            line.contains(" outbound|9080|v1|ratings.default.svc.cluster.local "),
            "the access log line of an aborted call should name its upstream cluster: {line}"
        );
    }
    let aborted_to_ratings = requests_total(
        &mesh,
        "reviews-v2",
        &[
            "reporter=\"source\"",
            "destination_service=\"ratings.default.svc.cluster.local\"",
            "response_code=\"500\"",
            "response_flags=\"FI\"",
        ],
    );
    let aborted = requests_total(
        &mesh,
        "reviews-v2",
        &["reporter=\"source\"", "response_flags=\"FI\""],
    );
    assert_eq!(
        aborted_to_ratings,
        aborted,
        "the aborted calls should be reported against ratings.default.svc.cluster.local:\n{}",
        metric_lines(&mesh.metrics("reviews-v2"), "istio_requests_total{").join("\n")
    );
}

/// An AuthorizationPolicy of istio.io's "Authorization for HTTP traffic" task (1.14), as the
/// page writes it: ALLOW GET on the workload `app`, from `principal` when given.
fn viewer_policy(name: &str, app: &str, principal: Option<&str>) -> String {
    let from = principal.map_or(String::new(), |p| {
        format!("  - from:\n    - source:\n        principals: [\"{p}\"]\n    to:\n")
    });
    let to = if from.is_empty() { "  - to:\n" } else { "" };
    format!(
        r#"apiVersion: "security.istio.io/v1beta1"
kind: "AuthorizationPolicy"
metadata:
  name: "{name}"
  namespace: default
spec:
  selector:
    matchLabels:
      app: {app}
  action: ALLOW
  rules:
{from}{to}    - operation:
        methods: ["GET"]
"#
    )
}

#[test]
fn istio_authorization_for_http_traffic_on_bookinfo() {
    crate::netns::require_root();
    istio_sample("destination-rule-all.yaml");
    istio_sample("virtual-service-reviews-v3.yaml");
    let mesh = bookinfo_mesh();
    // As the task's test does: reviews v3 (red stars, which need ratings).
    apply_sample(&mesh, "destination-rule-all.yaml");
    apply_sample(&mesh, "virtual-service-reviews-v3.yaml");
    wait_for_pages(&mesh, None, Shown::RedStars, 3, "reviews v3 with red stars");

    // allow-nothing: every workload of the namespace denies everything.
    mesh.write_config(
        "authz-allow-nothing.yaml",
        "apiVersion: security.istio.io/v1beta1\nkind: AuthorizationPolicy\nmetadata:\n  name: allow-nothing\n  namespace: default\nspec:\n  {}\n",
    );
    wait_for(
        APPLY_LIMIT,
        "allow-nothing to deny the product page",
        || page(&mesh, None).code == 403,
    );
    assert_config_accepted(&mesh);
    let p = page(&mesh, None);
    assert_eq!((p.code, p.body.as_str()), (403, "RBAC: access denied"));
    // The denial is productpage's sidecar's, visible in its metrics and access log.
    wait_for(
        Duration::from_secs(10),
        "the 403 in productpage's metrics",
        || {
            requests_total(
                &mesh,
                "productpage",
                &["reporter=\"destination\"", "response_code=\"403\""],
            ) > 0
        },
    );
    let log = mesh.wait_log(
        "proxy-productpage.log",
        " 403 - rbac_access_denied_matched_policy[none] ",
    );
    assert!(
        log.lines()
            .any(|l| l.contains(" 403 - rbac_access_denied_matched_policy[none] ")),
        "productpage's access log has no RBAC denial:\n{log}"
    );

    // productpage-viewer: GET on productpage; details and reviews still deny it.
    mesh.write_config(
        "authz-productpage-viewer.yaml",
        &viewer_policy("productpage-viewer", "productpage", None),
    );
    wait_for(
        APPLY_LIMIT,
        "productpage-viewer to let the page load",
        || page(&mesh, None).code == 200,
    );
    let p = page(&mesh, None);
    assert!(
        p.body.contains("Error fetching product details!")
            && p.body.contains(REVIEWS_UNAVAILABLE)
            && p.body.contains("William Shakespeare"),
        "{p}"
    );
    // Only GET: a POST to productpage is denied.
    let out = mesh.curl_from(
        mesh.ns("client"),
        &[
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-X",
            "POST",
            URL,
        ],
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "403");

    // details-viewer and reviews-viewer: GET from productpage's service account.
    let productpage_sa = "cluster.local/ns/default/sa/bookinfo-productpage";
    mesh.write_config(
        "authz-details-viewer.yaml",
        &viewer_policy("details-viewer", "details", Some(productpage_sa)),
    );
    mesh.write_config(
        "authz-reviews-viewer.yaml",
        &viewer_policy("reviews-viewer", "reviews", Some(productpage_sa)),
    );
    wait_for_pages(
        &mesh,
        None,
        Shown::RatingsUnavailable,
        3,
        "details and reviews to show, ratings still denied",
    );
    let p = page(&mesh, None);
    assert!(p.body.contains("PublisherA"), "{p}");
    // The client's own identity is not productpage's: it is denied at details directly.
    let out = mesh.curl_from(
        mesh.ns("client"),
        &[
            "-s",
            "-w",
            "\n%{http_code}",
            "http://details:9080/details/0",
        ],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.ends_with("\n403"), "{text}");

    // ratings-viewer: GET from reviews' service account: red stars again.
    mesh.write_config(
        "authz-ratings-viewer.yaml",
        &viewer_policy(
            "ratings-viewer",
            "ratings",
            Some("cluster.local/ns/default/sa/bookinfo-reviews"),
        ),
    );
    wait_for_pages(&mesh, None, Shown::RedStars, 3, "ratings to show stars");
    assert_config_accepted(&mesh);

    // Removing allow-nothing changes nothing for the workloads with their own ALLOW policies.
    mesh.remove_config("authz-allow-nothing.yaml");
    assert_pages(&mesh, None, 3, Shown::RedStars);
}
