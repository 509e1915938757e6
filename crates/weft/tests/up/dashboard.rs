//! The live service graph `weft up` serves, in a real browser: Debian's Chromium driven
//! headless through chromedriver (WebDriver, with the fantoccini client). With load on
//! bookinfo, the page shows its edges with live figures and mTLS; clicking reviews shows its
//! pods, identities, routes and policies; a fault injected with a VirtualService turns the
//! productpage → details edge red and leaves the others green; a broken file shows up as a
//! validation error. A screenshot is kept in the test's target directory.

use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};

use super::{ONE_MESH, Up, WEFT, bookinfo_copy};
use crate::ports::free_port;

const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const CHROMIUM: &str = "/usr/bin/chromium";

const DETAILS_ABORT: &str = r#"apiVersion: networking.istio.io/v1beta1
kind: VirtualService
metadata:
  name: details
spec:
  hosts:
  - details
  http:
  - fault:
      abort:
        percentage:
          value: 100
        httpStatus: 500
    route:
    - destination:
        host: details
"#;

/// A child process killed when the test ends, pass or fail.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A child and everything in its process group, killed when the test ends.
struct Group(Child);

impl Drop for Group {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.0.id())])
            .status();
        let _ = self.0.wait();
    }
}

/// Polls `f` every 500 ms until it returns Some, or fails naming `what` and the last state.
async fn eventually<T, F, Fut>(limit: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let start = Instant::now();
    let mut last = String::new();
    while start.elapsed() < limit {
        match f().await {
            Ok(v) => return v,
            Err(e) => last = e,
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    panic!("timed out after {limit:?} waiting for {what}: {last}");
}

/// An edge's class and requests per second, as the page shows them.
async fn edge(c: &Client, id: &str) -> Result<(String, f64), String> {
    let e = c
        .find(Locator::Css(&format!("[data-edge=\"{id}\"]")))
        .await
        .map_err(|e| format!("no edge {id} on the page: {e}"))?;
    let class = e
        .attr("class")
        .await
        .map_err(|e| e.to_string())?
        .unwrap_or_default();
    let rps = e
        .attr("data-rps")
        .await
        .map_err(|e| e.to_string())?
        .and_then(|r| r.parse().ok())
        .unwrap_or(0.0);
    Ok((class, rps))
}

async fn text_of(c: &Client, css: &str) -> Result<String, String> {
    c.find(Locator::Css(css))
        .await
        .map_err(|e| format!("no {css}: {e}"))?
        .text()
        .await
        .map_err(|e| e.to_string())
}

#[test]
fn service_graph_in_a_real_browser() {
    let _one = ONE_MESH.lock().unwrap_or_else(|e| e.into_inner());
    for bin in [CHROMEDRIVER, CHROMIUM] {
        assert!(
            std::path::Path::new(bin).exists(),
            "{bin} is missing: install Debian's chromium and chromium-driver (.ci/run does)"
        );
    }
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = bookinfo_copy(tmp.path());
    let up = Up::start(&dir, tmp.path().join("up.log"), &tmp.path().join("state"));
    let url = up
        .output()
        .lines()
        .find_map(|l| l.strip_prefix("dashboard: the live service graph on "))
        .map(|u| u.trim().to_string())
        .unwrap_or_else(|| panic!("weft up did not announce its dashboard:\n{}", up.output()));

    // Load through the mesh: productpage's own page, from inside its pod.
    let _load = Killed(
        Command::new(WEFT)
            .args(["exec", "productpage", "--", WEFT, "sample", "load"])
            .args(["--url", "http://productpage:9080/productpage"])
            .args(["--rate", "10", "-c", "2", "--duration", "600s"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("load"),
    );

    let port = free_port();
    // In a process group of its own, so that the browsers it started go with it.
    let _driver = Group(
        Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .process_group(0)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver"),
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            serde_json::json!({
                "binary": CHROMIUM,
                // As root in CI: Chromium's sandbox needs a user namespace it cannot have.
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--window-size=1400,900"],
            }),
        );
        let c: Client = eventually(Duration::from_secs(20), "chromedriver", || {
            let caps = caps.clone();
            async move {
                ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
                    .capabilities(caps)
                    .connect(&format!("http://127.0.0.1:{port}"))
                    .await
                    .map_err(|e| e.to_string())
            }
        })
        .await;
        c.goto(&url).await.expect("open the dashboard");

        // bookinfo's edges with live figures, over mTLS.
        for id in [
            "productpage.default->details.default",
            "productpage.default->reviews.default",
            "reviews.default->ratings.default",
        ] {
            eventually(
                Duration::from_secs(30),
                &format!("edge {id} with traffic"),
                || async {
                    let (class, rps) = edge(&c, id).await?;
                    (rps > 0.0 && class.contains("ok"))
                        .then_some(())
                        .ok_or(format!("class {class:?}, {rps} rps"))
                },
            )
            .await;
        }
        let label = text_of(&c, "[data-edge=\"productpage.default->details.default\"] text")
            .await
            .expect("label");
        assert!(
            label.contains("rps") && label.contains("mTLS 100%"),
            "{label}"
        );

        // Clicking reviews: its pods, identities, routes and policies.
        c.find(Locator::Css("[data-node=\"reviews.default\"] circle"))
            .await
            .expect("reviews node")
            .click()
            .await
            .expect("click reviews");
        let details = eventually(Duration::from_secs(10), "reviews' details", || async {
            let t = text_of(&c, "#details").await?;
            t.contains("reviews.default")
                .then_some(t.clone())
                .ok_or(t)
        })
        .await;
        for want in [
            "reviews-v1",
            "reviews-v2",
            "reviews-v3",
            "spiffe://cluster.local/ns/default/sa/bookinfo-reviews",
            "DestinationRule reviews.default",
            "subset v2 (version=v2)",
        ] {
            assert!(details.contains(want), "missing {want:?} in\n{details}");
        }

        // A fault injected with a VirtualService turns that edge red; the others stay green.
        std::fs::write(dir.join("vs-details.yaml"), DETAILS_ABORT).expect("fault");
        eventually(
            Duration::from_secs(30),
            "productpage.default->details.default red",
            || async {
                let (class, _) = edge(&c, "productpage.default->details.default").await?;
                class
                    .contains("error")
                    .then_some(())
                    .ok_or(format!("class {class:?}"))
            },
        )
        .await;
        let stroke = c
            .find(Locator::Css("[data-edge=\"productpage.default->details.default\"] line"))
            .await
            .expect("line")
            .css_value("stroke")
            .await
            .expect("stroke");
        assert_eq!(stroke, "rgb(220, 38, 38)", "the edge is drawn red");
        let (class, _) = edge(&c, "productpage.default->reviews.default").await.expect("reviews edge");
        assert!(class.contains("ok"), "{class}");

        let shot = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard.png");
        std::fs::write(&shot, c.screenshot().await.expect("screenshot")).expect("save");
        println!("screenshot: {}", shot.display());

        // A broken file: the page lists the validation error (the last good config stays).
        std::fs::write(
            dir.join("broken.yaml"),
            "apiVersion: networking.istio.io/v1beta1\nkind: VirtualService\nmetadata:\n  name: broken\nspec:\n  http: []\n",
        )
        .expect("broken");
        c.refresh().await.expect("reload");
        eventually(Duration::from_secs(30), "the validation error", || async {
            let t = text_of(&c, "#config-errors").await?;
            t.contains("broken.yaml").then_some(()).ok_or(t)
        })
        .await;
        c.close().await.expect("close the browser");
    });

    // `weft dashboard` against the same control plane, run where the pods are reachable
    // (the node namespace): the same graph from its own scraper.
    let node_ip = up
        .output()
        .lines()
        .find_map(|l| l.strip_prefix("control plane ready on "))
        .and_then(|l| l.split(':').next())
        .map(str::to_string)
        .unwrap_or_else(|| panic!("no control plane address in\n{}", up.output()));
    let listen = format!("{node_ip}:20002");
    let _standalone = Killed(
        Command::new("ip")
            .args(["netns", "exec", "weft-node", WEFT, "dashboard"])
            .args(["--control-plane", &format!("{node_ip}:15014")])
            .args(["--listen", &listen])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("weft dashboard"),
    );
    let mut last = String::new();
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(30) {
        let out = Command::new("ip")
            .args(["netns", "exec", "weft-node", "curl", "-s", "-m", "2"])
            .arg(format!("http://{listen}/api/graph"))
            .output()
            .expect("curl");
        last = String::from_utf8_lossy(&out.stdout).into_owned();
        let graph: serde_json::Value = serde_json::from_str(&last).unwrap_or_default();
        let reviews_edge = graph["edges"].as_array().and_then(|edges| {
            edges
                .iter()
                .find(|e| e["id"] == "productpage.default->reviews.default")
        });
        if reviews_edge.is_some_and(|e| e["rps"].as_f64().unwrap_or(0.0) > 0.0) {
            return;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    panic!("weft dashboard never showed productpage -> reviews with traffic: {last}");
}
