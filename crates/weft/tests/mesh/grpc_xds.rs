//! Proxyless gRPC traffic management end to end: a real gRPC client (grpcio's xDS resolver,
//! no sidecar, `GENERATOR: grpc`) fetches its listeners, routes, clusters and endpoints from
//! `weft control` and follows VirtualServices and a DestinationRule applied live: subsets,
//! weighted clusters, header matches, fault injection (gRFC A33), timeouts (A31), retries
//! (A44) and ring hash (A42). The two servers have no sidecar either: what the client does is
//! gRPC's own doing, checked by the status codes it sees and the calls each server counts.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use crate::netns::{Mesh, next_id, wait_for};
use crate::traffic::{SUBSETS, v2_workload};
use crate::{GRPC_CLIENT, SERVER, SERVER2, hosts, server_config};

const TARGET: &str = "xds:///server.default.svc.cluster.local:50051";
const APPS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/mesh/apps.py");

/// gRPC status codes.
const OK: i64 = 0;
const DEADLINE_EXCEEDED: i64 = 4;
const PERMISSION_DENIED: i64 = 7;
const INTERNAL: i64 = 13;
const UNAVAILABLE: i64 = 14;

fn virtual_service(http: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: server, namespace: default}}\nspec:\n  hosts: [server]\n  http:\n{http}"
    )
}

/// One call as the client saw it: status code, the server that answered, duration.
#[derive(Debug, Clone)]
struct Call {
    code: i64,
    pod: Option<String>,
    ms: f64,
    details: String,
}

struct Client<'a> {
    mesh: &'a Mesh,
    bootstrap: PathBuf,
}

impl Client<'_> {
    /// `n` calls on one channel (`apps.py xds-calls`; `args`: options and metadata).
    fn calls(&self, n: usize, args: &[&str]) -> Vec<Call> {
        let env = format!("GRPC_XDS_BOOTSTRAP={}", self.bootstrap.display());
        let n = n.to_string();
        let mut argv = vec!["env", &env, "python3", APPS, "xds-calls", TARGET, &n];
        argv.extend_from_slice(args);
        let out = self.mesh.exec("grpc", &argv);
        let stdout = String::from_utf8_lossy(&out.stdout);
        let calls: Vec<Call> = stdout
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .map(|v| Call {
                code: v["code"].as_i64().unwrap_or(-1),
                pod: v["pod"].as_str().map(str::to_string),
                ms: v["ms"].as_f64().unwrap_or(0.0),
                details: v["details"].as_str().unwrap_or_default().to_string(),
            })
            .collect();
        assert_eq!(
            calls.len().to_string(),
            n,
            "xds-calls {args:?}: {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        calls
    }

    fn one(&self, args: &[&str]) -> Call {
        self.calls(1, args).remove(0)
    }

    /// Which servers answered `n` calls (errors count as "error").
    fn answers(&self, n: usize, args: &[&str]) -> BTreeMap<String, usize> {
        let mut out = BTreeMap::new();
        for c in self.calls(n, args) {
            let key = match (c.code, c.pod) {
                (OK, Some(pod)) => pod,
                _ => "error".to_string(),
            };
            *out.entry(key).or_default() += 1;
        }
        out
    }
}

/// The gRPC calls a server app has served so far (asked on its own loopback).
fn served(mesh: &Mesh, pod: &str) -> u64 {
    let out = mesh.exec(pod, &["curl", "-s", "-m", "5", "http://127.0.0.1:8080/"]);
    serde_json::from_slice::<serde_json::Value>(&out.stdout).expect("server JSON")["grpc_calls"]
        .as_u64()
        .expect("grpc_calls")
}

fn served_both(mesh: &Mesh) -> (u64, u64) {
    (served(mesh, "v1"), served(mesh, "v2"))
}

/// Applies a VirtualService and waits until `ready` says the client runs it.
fn apply(mesh: &Mesh, http: &str, what: &str, ready: impl FnMut() -> bool) {
    mesh.write_config("vs.yaml", &virtual_service(http));
    wait_for(Duration::from_secs(20), what, ready);
}

fn only(pod: &str, n: usize) -> BTreeMap<String, usize> {
    BTreeMap::from([(pod.to_string(), n)])
}

#[test]
fn proxyless_grpc_follows_virtual_services_and_destination_rules() {
    let id = next_id();
    let mut config = server_config(id, false);
    config.push(("server-v2.yaml", v2_workload(id)));
    config.push(("dr.yaml", SUBSETS.to_string()));
    let mut mesh = Mesh::new(id, &config, "", &hosts(id));
    mesh.add_pod("v1", SERVER, None);
    mesh.start_app("v1");
    mesh.add_pod("v2", SERVER2, None);
    mesh.start_app("v2");
    mesh.add_pod("grpc", GRPC_CLIENT, None);
    let bootstrap = mesh.grpc_bootstrap(GRPC_CLIENT);
    let client = Client {
        mesh: &mesh,
        bootstrap,
    };

    // No VirtualService: the default route to the whole service, round robin over both.
    // (A fresh channel sends everything to the first server it is connected to until the
    // other one is: 20 calls can all land on one of them, hence the retry.)
    wait_for(
        Duration::from_secs(10),
        "both servers to answer without errors",
        || {
            let a = client.answers(20, &[]);
            a.len() == 2 && !a.contains_key("error")
        },
    );

    // A channel that stays open follows a route change (RDS update, new subset cluster over
    // CDS and EDS) without a failed call: all traffic to v2 while it calls every 100 ms.
    let live = std::thread::scope(|s| {
        let before = served_both(&mesh);
        let running = s.spawn(|| client.calls(80, &["--interval", "0.1"]));
        wait_for(Duration::from_secs(20), "the live client's calls", || {
            let now = served_both(&mesh);
            now.0 + now.1 >= before.0 + before.1 + 5
        });
        mesh.write_config(
            "vs.yaml",
            &virtual_service("  - route: [{destination: {host: server, subset: v2}}]\n"),
        );
        running.join().expect("live client")
    });
    assert!(live.iter().all(|c| c.code == OK), "{live:?}");
    let first_v2_only = live
        .iter()
        .rposition(|c| c.pod.as_deref() != Some("v2"))
        .map_or(0, |i| i + 1);
    assert!(
        first_v2_only > 0 && first_v2_only <= 60,
        "the open channel did not move to v2 (or started there): {live:?}"
    );
    eprintln!("live switch: all calls on v2 from call {first_v2_only} of 80");

    // Traffic shifting: 50/50 weighted clusters. 400 draws: v1's count lies in [140, 260]
    // unless the split is off (binomial sd = 10, so a fair split leaves that range with odds
    // of about 1e-9).
    apply(
        &mesh,
        "  - route:\n    - {destination: {host: server, subset: v1}, weight: 50}\n    - {destination: {host: server, subset: v2}, weight: 50}\n",
        "the 50/50 split",
        || client.answers(20, &[]).len() == 2,
    );
    let a = client.answers(400, &[]);
    let v1 = a.get("v1").copied().unwrap_or(0);
    assert_eq!(a.get("error"), None, "{a:?}");
    assert!((140..=260).contains(&v1), "v1 got {v1} of 400: {a:?}");
    eprintln!("50/50 split over 400 calls: {a:?}");

    // Header match on gRPC metadata: jason to v2, everyone else to v1.
    apply(
        &mesh,
        "  - match: [{headers: {x-user: {exact: jason}}}]\n    route: [{destination: {host: server, subset: v2}}]\n  - route: [{destination: {host: server, subset: v1}}]\n",
        "the header route",
        || {
            client.answers(8, &["x-user=jason"]) == only("v2", 8)
                && client.answers(8, &[]) == only("v1", 8)
        },
    );
    assert_eq!(client.answers(20, &["x-user=jason"]), only("v2", 20));
    assert_eq!(client.answers(20, &["x-user=someone"]), only("v1", 20));
    assert_eq!(client.answers(20, &[]), only("v1", 20));

    // Fault injection, abort: HTTP 503 for every call, which gRPC's fault filter turns into
    // status UNAVAILABLE (14); no call reaches a server. (Istio 1.14's validation refuses
    // `grpcStatus` aborts, "not supported yet", and so does Weft's.)
    apply(
        &mesh,
        "  - fault: {abort: {httpStatus: 503, percentage: {value: 100}}}\n    route: [{destination: {host: server, subset: v1}}]\n",
        "the abort fault",
        || client.one(&[]).code == UNAVAILABLE,
    );
    let before = served_both(&mesh);
    let calls = client.calls(20, &[]);
    assert!(calls.iter().all(|c| c.code == UNAVAILABLE), "{calls:?}");
    eprintln!("aborted call: {:?}", calls[0]);
    assert_eq!(
        served_both(&mesh),
        before,
        "an aborted call reached a server"
    );

    // An abort for jason only, HTTP 403, which gRPC maps to PERMISSION_DENIED (7).
    apply(
        &mesh,
        "  - match: [{headers: {x-user: {exact: jason}}}]\n    fault: {abort: {httpStatus: 403, percentage: {value: 100}}}\n    route: [{destination: {host: server, subset: v2}}]\n  - route: [{destination: {host: server, subset: v1}}]\n",
        "the 403 abort for jason",
        || client.one(&[]).code == OK && client.one(&["x-user=jason"]).code == PERMISSION_DENIED,
    );
    let before = served_both(&mesh);
    let calls = client.calls(10, &["x-user=jason"]);
    assert!(
        calls.iter().all(|c| c.code == PERMISSION_DENIED),
        "{calls:?}"
    );
    assert_eq!(
        served_both(&mesh),
        before,
        "an aborted call reached a server"
    );
    assert_eq!(client.answers(10, &[]), only("v1", 10));

    // Half the calls aborted: 200 draws, aborts in [60, 140] (sd about 7).
    apply(
        &mesh,
        "  - fault: {abort: {httpStatus: 503, percentage: {value: 50}}}\n    route: [{destination: {host: server, subset: v1}}]\n",
        "the 50% abort",
        || {
            let a = client.answers(20, &[]);
            a.contains_key("error") && a.contains_key("v1")
        },
    );
    let a = client.answers(200, &[]);
    let aborted = a.get("error").copied().unwrap_or(0);
    assert!((60..=140).contains(&aborted), "{aborted} of 200 aborted");
    assert_eq!(a.get("v1").copied().unwrap_or(0) + aborted, 200, "{a:?}");

    // Fault injection, delay: 1 s before every call, which then succeeds.
    apply(
        &mesh,
        "  - fault: {delay: {fixedDelay: 1s, percentage: {value: 100}}}\n    route: [{destination: {host: server, subset: v1}}]\n",
        "the delay fault",
        || client.one(&[]).ms >= 1000.0,
    );
    let calls = client.calls(2, &[]);
    assert!(
        calls
            .iter()
            .all(|c| c.code == OK && c.ms >= 1000.0 && c.ms < 3000.0),
        "{calls:?}"
    );

    // A 6 s delay under a 3 s route timeout (max_stream_duration, gRFC A31), with an
    // application deadline of 20 s: DEADLINE_EXCEEDED at the route timeout, and the call never
    // reaches the server. grpcio cuts timeouts from xDS (or any service config) short by a
    // constant of 1 to 2 s per process (grpc/grpc#34547, still in 1.85), so the call ends
    // between 1 and 3 s: well before the delay or the application's deadline would end it.
    let ended_by_route_timeout =
        |c: &Call| c.code == DEADLINE_EXCEEDED && c.ms >= 900.0 && c.ms < 3500.0;
    apply(
        &mesh,
        "  - timeout: 3s\n    fault: {delay: {fixedDelay: 6s, percentage: {value: 100}}}\n    route: [{destination: {host: server, subset: v1}}]\n",
        "the timeout over the delay",
        || client.one(&["--deadline", "20"]).code == DEADLINE_EXCEEDED,
    );
    let before = served_both(&mesh);
    let calls = client.calls(2, &["--deadline", "20"]);
    assert!(calls.iter().all(ended_by_route_timeout), "{calls:?}");
    assert_eq!(
        served_both(&mesh),
        before,
        "a delayed call reached a server"
    );

    // The route timeout alone: the server takes 6 s, the route allows 3 s.
    apply(
        &mesh,
        "  - timeout: 3s\n    route: [{destination: {host: server, subset: v1}}]\n",
        "the route timeout",
        || client.one(&[]).code == OK,
    );
    let calls = client.calls(2, &["--deadline", "20", "x-sleep=6"]);
    assert!(calls.iter().all(ended_by_route_timeout), "{calls:?}");
    assert_eq!(client.answers(5, &["x-sleep=0.1"]), only("v1", 5));

    // Retries: 3 more attempts on UNAVAILABLE, so v1 serves 4 calls for one that fails.
    apply(
        &mesh,
        "  - retries: {attempts: 3, retryOn: unavailable}\n    route: [{destination: {host: server, subset: v1}}]\n",
        "the retry policy",
        || {
            let before = served(&mesh, "v1");
            client.one(&["x-fail=UNAVAILABLE"]).code == UNAVAILABLE
                && served(&mesh, "v1") == before + 4
        },
    );
    let before = served(&mesh, "v1");
    let call = client.one(&["x-fail=UNAVAILABLE"]);
    assert_eq!(call.code, UNAVAILABLE, "{call:?}");
    assert_eq!(call.details, "failed as asked");
    assert_eq!(served(&mesh, "v1"), before + 4, "attempts at v1");
    // A status not in retryOn is not retried.
    let before = served(&mesh, "v1");
    assert_eq!(client.one(&["x-fail=INTERNAL"]).code, INTERNAL);
    assert_eq!(served(&mesh, "v1"), before + 1);
    // `attempts: 0`: no retries at all.
    apply(
        &mesh,
        "  - retries: {attempts: 0}\n    route: [{destination: {host: server, subset: v1}}]\n",
        "no retries",
        || {
            let before = served(&mesh, "v1");
            client.one(&["x-fail=UNAVAILABLE"]).code == UNAVAILABLE
                && served(&mesh, "v1") == before + 1
        },
    );

    // Ring hash (consistentHash on a header): a user always reaches the same server, and 24
    // users spread over both (all on one with odds of 2^-23).
    mesh.write_config(
        "dr.yaml",
        &SUBSETS.replace(
            "  subsets:",
            "  trafficPolicy:\n    loadBalancer:\n      consistentHash: {httpHeaderName: x-user}\n  subsets:",
        ),
    );
    let users = 24;
    let ring = |per_user: usize| {
        let calls = client.calls(
            users * per_user,
            &["--cycle", &users.to_string(), "x-user=user-{k}"],
        );
        let mut by_user: BTreeMap<usize, Vec<String>> = BTreeMap::new();
        for (i, c) in calls.into_iter().enumerate() {
            by_user
                .entry(i % users)
                .or_default()
                .push(c.pod.unwrap_or_else(|| format!("error {}", c.code)));
        }
        by_user
    };
    let hashed = |by_user: &BTreeMap<usize, Vec<String>>| {
        let sticky = by_user.values().all(|p| p.iter().all(|x| *x == p[0]));
        let v1_users = by_user.values().filter(|p| p[0] == "v1").count();
        sticky && v1_users > 0 && v1_users < users
    };
    apply(
        &mesh,
        "  - route: [{destination: {host: server}}]\n",
        "the ring-hash route to the whole service",
        || hashed(&ring(6)),
    );
    let by_user = ring(6);
    assert!(hashed(&by_user), "{by_user:?}");
    let v1_users = by_user.values().filter(|p| p[0] == "v1").count();
    eprintln!("ring hash: {v1_users} of {users} users on v1, each always on the same server");

    // Ring hash behind a weighted split: 99% to the whole service (ring hash over v1 and v2),
    // 1% to subset v1. The route must carry the hash policy for the weighted destinations
    // (istiod does), else gRPC hashes each call at random. A user hashed to v2 then reaches v1
    // only on the 1% draw: at most 2 of its 8 calls leave its server (odds of 3 or more
    // about 6e-5 per user); without the hash policy every user would land on both about
    // evenly (all 24 users within 2 of 8 with odds of about 1e-13).
    apply(
        &mesh,
        "  - route: [{destination: {host: server, subset: v2}}]\n",
        "all traffic to v2",
        || client.answers(8, &[]) == only("v2", 8),
    );
    apply(
        &mesh,
        "  - route:\n    - {destination: {host: server}, weight: 99}\n    - {destination: {host: server, subset: v1}, weight: 1}\n",
        "the weighted ring-hash route",
        || ring(2).values().flatten().any(|p| p == "v1"),
    );
    let by_user = ring(8);
    let mut majority_v1 = 0;
    for (user, pods) in &by_user {
        let v1 = pods.iter().filter(|p| *p == "v1").count();
        let v2 = pods.iter().filter(|p| *p == "v2").count();
        assert_eq!(v1 + v2, 8, "user-{user}: {pods:?}");
        assert!(
            v1.min(v2) <= 2,
            "user-{user} is not hashed behind the weighted route: {pods:?}"
        );
        majority_v1 += usize::from(v1 > v2);
    }
    assert!(
        majority_v1 > 0 && majority_v1 < users,
        "all users hashed to one server: {by_user:?}"
    );

    // The client accepted everything it was sent.
    let log = mesh.log("control.log");
    assert!(
        !log.contains("xDS NACK"),
        "the gRPC client NACKed:\n{}",
        log.lines()
            .filter(|l| l.contains("NACK"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}
