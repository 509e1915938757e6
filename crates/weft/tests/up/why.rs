//! `weft why` against a running `weft up` bookinfo: for Istio's request routing (jason to
//! reviews v2), its fault-injection task (an abort for jason on ratings), an
//! AuthorizationPolicy (only productpage may call reviews) and its JWT task (a token required
//! on details), and a TCP connection to tcp-echo, what `why` says the sidecars do is then what
//! a real request does.

use std::time::Duration;

use serde_json::Value;

use super::{ONE_MESH, Up, bookinfo_copy, wait_for, weft};

const POLICIES: &str = r#"apiVersion: security.istio.io/v1beta1
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

const TCP_ECHO: &str = r#"apiVersion: networking.istio.io/v1beta1
kind: ServiceEntry
metadata:
  name: tcp-echo
spec:
  hosts: [tcp-echo]
  location: MESH_INTERNAL
  resolution: STATIC
  ports:
  - {number: 9000, name: tcp, protocol: TCP}
  workloadSelector:
    labels: {app: tcp-echo}
---
apiVersion: networking.istio.io/v1beta1
kind: WorkloadEntry
metadata:
  name: tcp-echo
spec:
  address: 10.42.0.16
  labels: {app: tcp-echo, version: v1}
  serviceAccount: tcp-echo
"#;

/// `weft why -o json` from `from`, with headers.
fn why(from: &str, url: &str, headers: &[&str]) -> Value {
    let mut args = vec!["why", "--from", from, "-o", "json"];
    for h in headers {
        args.extend_from_slice(&["-H", h]);
    }
    args.push(url);
    let (ok, out) = weft(&args);
    assert!(ok, "weft {args:?}: {out}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

/// A real request from `pod`: the status code and the body.
fn request(pod: &str, url: &str, headers: &[&str]) -> (u16, String) {
    let mut args = vec![
        "exec",
        pod,
        "--",
        "curl",
        "-s",
        "-m",
        "10",
        "-w",
        "\n%{http_code}",
    ];
    for h in headers {
        args.extend_from_slice(&["-H", h]);
    }
    args.push(url);
    let (_, out) = weft(&args);
    let (body, code) = out.trim_end().rsplit_once('\n').unwrap_or(("", out.trim()));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

fn step<'a>(side: &'a Value, stage: &str) -> &'a str {
    side["explanation"]["steps"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["stage"] == stage))
        .and_then(|s| s["decision"].as_str())
        .unwrap_or_else(|| panic!("no {stage} step in {side:#}"))
}

/// The reviews version that answered, from the reviews JSON (v1: no ratings).
fn reviews_color(body: &str) -> Option<String> {
    let v: Value = serde_json::from_str(body).ok()?;
    Some(
        v["reviews"][0]["rating"]["color"]
            .as_str()
            .unwrap_or("none")
            .to_string(),
    )
}

#[test]
fn why_agrees_with_real_requests() {
    let _one = ONE_MESH.lock().unwrap_or_else(|e| e.into_inner());
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = bookinfo_copy(tmp.path());
    let sample = |name: &str| {
        let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../../shared/istio/samples/bookinfo/networking")
            .join(name);
        std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
    };
    std::fs::write(
        dir.join("vs-reviews.yaml"),
        sample("virtual-service-reviews-test-v2.yaml"),
    )
    .expect("vs");
    std::fs::write(dir.join("policies.yaml"), POLICIES).expect("policies");
    // A TCP service beside bookinfo: Istio's tcp-echo (Weft's echo sample in its form).
    std::fs::write(dir.join("tcp-echo.yaml"), TCP_ECHO).expect("tcp-echo");
    let mut plan = std::fs::read_to_string(dir.join("weft.yaml")).expect("weft.yaml");
    plan.push_str(
        "- workload: default/tcp-echo\n  command: [weft, sample, echo, --tcp-port, \"9000\", --tcp-prefix, hello]\n",
    );
    std::fs::write(dir.join("weft.yaml"), plan).expect("weft.yaml");
    let up = Up::start(&dir, tmp.path().join("up.log"), &tmp.path().join("state"));
    let _ = &up;
    let reviews = "http://reviews:9080/reviews/0";
    let jason = "end-user: jason";
    wait_for(Duration::from_secs(30), "reviews routed", || {
        request("productpage", reviews, &[jason]).0 == 200
    });

    // Request routing: jason to v2, over mTLS, allowed by the viewer policy.
    let w = why("productpage", reviews, &[jason]);
    assert_eq!(
        w["client"]["explanation"]["clusters"][0][0],
        "outbound|9080|v2|reviews.default.svc.cluster.local",
        "{w:#}"
    );
    assert_eq!(w["server"]["pod"], "reviews-v2", "{w:#}");
    assert!(
        w["client"]["explanation"]["endpoints"][0]["tls"]
            .as_str()
            .is_some_and(|t| t.starts_with("mTLS")),
        "{w:#}"
    );
    assert!(
        step(&w["server"], "RBAC")
            .contains("allowed: ALLOW policy ns[default]-policy[viewer]-rule[0]"),
        "{w:#}"
    );
    let endpoint = w["client"]["explanation"]["endpoints"][0]["address"]
        .as_str()
        .unwrap_or_default();
    assert_eq!(
        w["verdict"].as_str(),
        Some(format!("reaches reviews-v2's app at {endpoint}").as_str()),
        "{w:#}"
    );
    let (code, body) = request("productpage", reviews, &[jason]);
    assert_eq!(
        (code, reviews_color(&body).as_deref()),
        (200, Some("black")),
        "v2 answers: {body}"
    );
    // Everyone else: v1, and the route before it is named as not matching.
    let w = why("productpage", reviews, &[]);
    assert_eq!(w["server"]["pod"], "reviews-v1", "{w:#}");
    let route = w["client"]["explanation"]["steps"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["stage"] == "route"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(
        route["details"][0],
        "route #0 does not match: header end-user: none, wanted exact \"jason\"",
        "{w:#}"
    );
    let (code, body) = request("productpage", reviews, &[]);
    assert_eq!(
        (code, reviews_color(&body).as_deref()),
        (200, Some("none")),
        "v1 answers: {body}"
    );

    // Authorization: ratings may not call reviews; why names the decision, curl gets 403.
    let w = why("ratings", reviews, &[]);
    assert_eq!(w["server"]["explanation"]["outcome"], "denied", "{w:#}");
    assert_eq!(w["server"]["explanation"]["status"], 403, "{w:#}");
    assert!(
        step(&w["server"], "RBAC").contains("none of the 1 ALLOW policies matches"),
        "{w:#}"
    );
    assert_eq!(request("ratings", reviews, &[]).0, 403);

    // Fault injection (Istio's task, its YAML unchanged): jason's ratings calls abort 500 in
    // the client's sidecar; why says so once the config has arrived, and curl sees it.
    std::fs::write(
        dir.join("vs-ratings.yaml"),
        sample("virtual-service-ratings-test-abort.yaml"),
    )
    .expect("abort");
    let ratings = "http://ratings:9080/ratings/0";
    let mut last = Value::Null;
    wait_for(Duration::from_secs(20), "why sees the abort", || {
        last = why("reviews-v2", ratings, &[jason]);
        last["client"]["explanation"]["outcome"] == "answered"
    });
    assert_eq!(last["client"]["explanation"]["status"], 500, "{last:#}");
    assert!(
        step(&last["client"], "fault").contains("abort with HTTP 500 for 100% of requests"),
        "{last:#}"
    );
    assert!(last["server"].is_null(), "{last:#}");
    assert_eq!(request("reviews-v2", ratings, &[jason]).0, 500);
    let w = why("reviews-v2", ratings, &[]);
    assert_eq!(w["server"]["pod"], "ratings", "{w:#}");
    assert_eq!(request("reviews-v2", ratings, &[]).0, 200);

    // Istio's JWT task on details (its key set and tokens unchanged, the keys inline): the
    // proxy's own jwt_authn verifies the probe's token, istio_authn makes the request
    // principal, and RBAC decides on it, as for the real requests.
    let jwt = |name: &str| {
        let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../../shared/istio/jwt")
            .join(name);
        std::fs::read_to_string(&p)
            .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
            .trim()
            .to_string()
    };
    std::fs::write(
        dir.join("jwt.yaml"),
        format!(
            r#"apiVersion: security.istio.io/v1beta1
kind: RequestAuthentication
metadata:
  name: jwt-example
spec:
  selector:
    matchLabels: {{app: details}}
  jwtRules:
  - issuer: "testing@secure.istio.io"
    jwks: '{}'
---
apiVersion: security.istio.io/v1beta1
kind: AuthorizationPolicy
metadata:
  name: require-jwt
spec:
  selector:
    matchLabels: {{app: details}}
  action: ALLOW
  rules:
  - from:
    - source:
        requestPrincipals: ["testing@secure.istio.io/testing@secure.istio.io"]
"#,
            jwt("jwks.json")
        ),
    )
    .expect("jwt policies");
    let details = "http://details:9080/details/0";
    let token = format!("Authorization: Bearer {}", jwt("demo.jwt"));
    let mut last = Value::Null;
    wait_for(Duration::from_secs(20), "why sees the JWT policy", || {
        last = why("productpage", details, &[]);
        last["server"]["explanation"]["status"] == 403
    });
    assert!(
        step(&last["server"], "RBAC").contains("none of the 1 ALLOW policies matches"),
        "{last:#}"
    );
    assert_eq!(request("productpage", details, &[]).0, 403);
    let w = why(
        "productpage",
        details,
        &["Authorization: Bearer invalidToken"],
    );
    assert_eq!(w["server"]["explanation"]["status"], 401, "{w:#}");
    assert!(
        step(&w["server"], "JWT").contains("Jwt is not in the form of Header.Payload.Signature"),
        "{w:#}"
    );
    assert_eq!(
        request(
            "productpage",
            details,
            &["Authorization: Bearer invalidToken"]
        )
        .0,
        401
    );
    let w = why("productpage", details, &[&token]);
    assert_eq!(
        step(&w["server"], "request principal"),
        "testing@secure.istio.io/testing@secure.istio.io",
        "{w:#}"
    );
    assert!(
        step(&w["server"], "RBAC").contains("allowed: ALLOW policy"),
        "{w:#}"
    );
    assert_eq!(w["server"]["explanation"]["outcome"], "forwarded", "{w:#}");
    assert_eq!(request("productpage", details, &[&token]).0, 200);

    // A TCP connection: the client's tcp_proxy to tcp-echo's cluster, over mTLS, and the
    // server's chain; nc then gets tcp-echo's answer through both sidecars.
    let w = why("productpage", "tcp://tcp-echo:9000", &[]);
    assert_eq!(
        w["client"]["explanation"]["clusters"][0][0],
        "outbound|9000||tcp-echo.default.svc.cluster.local",
        "{w:#}"
    );
    assert!(
        step(&w["client"], "tcp proxy").contains("outbound|9000||tcp-echo"),
        "{w:#}"
    );
    assert_eq!(
        w["client"]["explanation"]["endpoints"][0]["mtls"], true,
        "{w:#}"
    );
    assert_eq!(w["server"]["pod"], "tcp-echo", "{w:#}");
    assert!(
        w["verdict"]
            .as_str()
            .is_some_and(|v| v.starts_with("reaches tcp-echo's app")),
        "{w:#}"
    );
    let (_, echoed) = weft(&[
        "exec",
        "productpage",
        "--",
        "sh",
        "-c",
        "echo world | nc -N -w 3 tcp-echo 9000",
    ]);
    assert!(echoed.contains("hello world"), "{echoed}");

    // The text form, and the errors an operator can make.
    let (ok, text) = weft(&["why", "--from", "productpage", "-H", jason, reviews]);
    assert!(ok, "{text}");
    for want in [
        "productpage (outbound):",
        "reviews-v2 (inbound):",
        "=> reaches reviews-v2's app at",
    ] {
        assert!(text.contains(want), "missing {want:?} in\n{text}");
    }
    let (ok, err) = weft(&["why", "--from", "productpage", "http://nosuch:9080/"]);
    assert!(
        !ok && err.contains("\"nosuch\" does not resolve in pod productpage"),
        "{err}"
    );
    let (ok, err) = weft(&["why", "--from", "nopod", reviews]);
    assert!(!ok && err.contains("no pod \"nopod\""), "{err}");
}
