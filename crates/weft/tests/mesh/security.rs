//! istio.io's security tasks end to end: AuthorizationPolicy on TCP traffic (tcp-echo), explicit
//! deny and dry run (httpbin), and the security properties a policy must hold: a denied
//! request never reaches the app, paths are normalized before they are matched, and headers a
//! client forges do not change who the policy sees. The policies are the tasks' own YAML (the
//! 1.14 pages), in namespace `default` instead of `foo`.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::netns::{Mesh, Sidecar, WEFT, next_id, wait_for};

pub(crate) const SLEEP: u8 = 10;
pub(crate) const HTTPBIN: u8 = 11;
pub(crate) const TCP_ECHO: u8 = 12;
pub(crate) const LEGACY: u8 = 13;

pub(crate) const HTTPBIN_URL: &str = "http://httpbin:8000";

pub(crate) fn service(id: u8, n: u8, name: &str, ports: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: {name}, namespace: default}}\nspec:\n  hosts: [{name}.default.svc.cluster.local]\n  addresses: [{vip}]\n  location: MESH_INTERNAL\n  resolution: STATIC\n  ports:\n{ports}  workloadSelector: {{labels: {{app: {name}}}}}\n",
        vip = Mesh::vip(id, n)
    )
}

pub(crate) fn workload(id: u8, name: &str, host: u8, app: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {{name: {name}, namespace: default}}\nspec:\n  address: 10.77.{id}.{host}\n  labels: {{app: {app}, version: v1}}\n  serviceAccount: {app}\n"
    )
}

pub(crate) fn sidecar(app: &str) -> Sidecar {
    Sidecar {
        workload: format!("default/{app}"),
        labels: BTreeMap::from([("app".into(), app.into()), ("version".into(), "v1".into())]),
        service_account: app.into(),
        cert_ttl: None,
        delta: false,
        ..Default::default()
    }
}

/// httpbin (port 8000) and tcp-echo (9000 `tcp`, 9001 `tcp-other`; 9002 is served but not
/// declared, as in Istio's tcp-echo sample), a sleep client with a sidecar, and a legacy
/// client without one.
pub(crate) fn security_mesh(mesh_config: &str) -> Mesh {
    let id = next_id();
    let config = vec![
        (
            "httpbin.yaml",
            service(
                id,
                20,
                "httpbin",
                "  - {number: 8000, name: http, protocol: HTTP}\n",
            ),
        ),
        (
            "tcp-echo.yaml",
            service(
                id,
                21,
                "tcp-echo",
                "  - {number: 9000, name: tcp, protocol: TCP}\n  - {number: 9001, name: tcp-other, protocol: TCP}\n",
            ),
        ),
        (
            "workloads.yaml",
            [
                workload(id, "httpbin", HTTPBIN, "httpbin"),
                workload(id, "tcp-echo", TCP_ECHO, "tcp-echo"),
                workload(id, "sleep", SLEEP, "sleep"),
            ]
            .join("---\n"),
        ),
    ];
    let hosts = format!(
        "{} httpbin.default.svc.cluster.local httpbin.default httpbin\n{} tcp-echo.default.svc.cluster.local tcp-echo.default tcp-echo\n",
        Mesh::vip(id, 20),
        Mesh::vip(id, 21)
    );
    let mut mesh = Mesh::new(id, &config, mesh_config, &hosts);
    mesh.add_pod("httpbin", HTTPBIN, Some(sidecar("httpbin")));
    mesh.start_command(
        "httpbin",
        &[
            WEFT,
            "sample",
            "echo",
            "--http-port",
            "8000",
            "--service",
            "httpbin",
            "--log-requests",
        ],
        "http://127.0.0.1:8000/healthz",
    );
    mesh.add_pod("tcp-echo", TCP_ECHO, Some(sidecar("tcp-echo")));
    mesh.start_command(
        "tcp-echo",
        &[
            WEFT,
            "sample",
            "echo",
            "--tcp-port",
            "9000,9001,9002",
            "--tcp-prefix",
            "hello",
        ],
        "http://127.0.0.1:8080/",
    );
    mesh.add_pod("sleep", SLEEP, Some(sidecar("sleep")));
    mesh.add_pod("legacy", LEGACY, None);
    mesh
}

/// Writes an AuthorizationPolicy and waits until every sidecar runs it.
pub(crate) fn apply_policy(mesh: &Mesh, name: &str, yaml: &str) {
    mesh.write_config(&format!("authz-{name}.yaml"), yaml);
    mesh.wait_applied("authorizationpolicy", name);
}

/// The task's check: `echo "port N" | nc <target> N`, the answer line ("" when refused).
pub(crate) fn tcp(mesh: &Mesh, target: &str, port: u16) -> String {
    tcp_from(mesh, "sleep", target, port)
}

/// [`tcp`] from `pod`.
pub(crate) fn tcp_from(mesh: &Mesh, pod: &str, target: &str, port: u16) -> String {
    let script = format!("echo 'port {port}' | nc -N -w 3 {target} {port}");
    let out = mesh.exec(pod, &["sh", "-c", &script]);
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The answers on 9000 and 9001 (the service) and 9002 (the pod IP).
fn tcp_all(mesh: &Mesh) -> [String; 3] {
    let pod_ip = mesh.ip(TCP_ECHO);
    [
        tcp(mesh, "tcp-echo", 9000),
        tcp(mesh, "tcp-echo", 9001),
        tcp(mesh, &pod_ip, 9002),
    ]
}

fn tcp_policy(action: &str, operation: &str) -> String {
    format!(
        r#"apiVersion: security.istio.io/v1beta1
kind: AuthorizationPolicy
metadata:
  name: tcp-policy
  namespace: default
spec:
  selector:
    matchLabels:
      app: tcp-echo
  action: {action}
  rules:
  - to:
    - operation:
{operation}"#
    )
}

#[test]
fn istio_authorization_for_tcp_traffic() {
    crate::netns::require_root();
    let mesh = security_mesh("");
    let open = || {
        [
            "hello port 9000".to_string(),
            "hello port 9001".to_string(),
            "hello port 9002".to_string(),
        ]
    };
    wait_for(
        Duration::from_secs(20),
        "tcp-echo on its three ports",
        || tcp_all(&mesh) == open(),
    );
    let refused = String::new;

    // ALLOW ports 9000 and 9001: 9002 (the pod IP, a port no service declares) is refused.
    apply_policy(
        &mesh,
        "tcp-policy",
        &tcp_policy("ALLOW", "       ports: [\"9000\", \"9001\"]\n"),
    );
    assert_eq!(
        tcp_all(&mesh),
        [
            "hello port 9000".to_string(),
            "hello port 9001".to_string(),
            refused()
        ]
    );

    // ALLOW with an HTTP-only field (methods) on TCP: the rule never matches, all refused.
    apply_policy(
        &mesh,
        "tcp-policy",
        &tcp_policy(
            "ALLOW",
            "       methods: [\"GET\"]\n       ports: [\"9000\"]\n",
        ),
    );
    assert_eq!(tcp_all(&mesh), [refused(), refused(), refused()]);

    // DENY with an HTTP-only field: the field is dropped, the DENY covers every connection.
    apply_policy(
        &mesh,
        "tcp-policy",
        &tcp_policy("DENY", "       methods: [\"GET\"]\n"),
    );
    assert_eq!(tcp_all(&mesh)[..2], [refused(), refused()]);

    // DENY GET on port 9000: 9000 refused, 9001 served.
    apply_policy(
        &mesh,
        "tcp-policy",
        &tcp_policy(
            "DENY",
            "       methods: [\"GET\"]\n       ports: [\"9000\"]\n",
        ),
    );
    assert_eq!(tcp(&mesh, "tcp-echo", 9000), refused());
    assert_eq!(tcp(&mesh, "tcp-echo", 9001), "hello port 9001");

    // Removing the policy opens everything again.
    mesh.remove_config("authz-tcp-policy.yaml");
    wait_for(Duration::from_secs(20), "the policy to be gone", || {
        tcp_all(&mesh) == open()
    });
}

/// `curl` from `pod` with `args`: (status, body).
pub(crate) fn curl(mesh: &Mesh, pod: &str, args: &[&str]) -> (u16, String) {
    let mut argv = vec!["-s", "-m", "10", "-w", "\n%{http_code}"];
    argv.extend_from_slice(args);
    let out = mesh.curl_from(mesh.ns(pod), &argv);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

pub(crate) fn code(mesh: &Mesh, args: &[&str]) -> u16 {
    curl(mesh, "sleep", args).0
}

const DENY_METHOD_GET: &str = r#"apiVersion: security.istio.io/v1beta1
kind: AuthorizationPolicy
metadata:
  name: deny-method-get
  namespace: default
spec:
  selector:
    matchLabels:
      app: httpbin
  action: DENY
  rules:
  - to:
    - operation:
        methods: ["GET"]
"#;

#[test]
fn istio_explicit_deny_and_dry_run() {
    crate::netns::require_root();
    let mesh = security_mesh("accessLogFile: /dev/stdout\n");
    let get = format!("{HTTPBIN_URL}/get");
    let post = format!("{HTTPBIN_URL}/post");
    let ip = format!("{HTTPBIN_URL}/ip");
    wait_for(Duration::from_secs(20), "httpbin through the mesh", || {
        code(&mesh, &[&get]) == 200
    });

    // deny-method-get: GET denied, POST allowed.
    apply_policy(&mesh, "deny-method-get", DENY_METHOD_GET);
    let (status, body) = curl(&mesh, "sleep", &[&get]);
    assert_eq!((status, body.as_str()), (403, "RBAC: access denied"));
    assert_eq!(code(&mesh, &["-X", "POST", &post]), 200);
    // The denied request never reached the app.
    let probe = format!("{HTTPBIN_URL}/get?never-reaches-the-app");
    assert_eq!(code(&mesh, &[&probe]), 403);
    assert!(
        !mesh
            .log("app-httpbin.log")
            .contains("never-reaches-the-app"),
        "a denied request reached httpbin"
    );
    let denial = "rbac_access_denied_matched_policy[ns[default]-policy[deny-method-get]-rule[0]]";
    let log = mesh.wait_log("proxy-httpbin.log", denial);
    assert!(log.contains(denial), "{log}");

    // Unless x-token is admin.
    apply_policy(
        &mesh,
        "deny-method-get",
        &DENY_METHOD_GET.replace(
            "        methods: [\"GET\"]\n",
            "        methods: [\"GET\"]\n    when:\n    - key: request.headers[x-token]\n      notValues: [\"admin\"]\n",
        ),
    );
    assert_eq!(code(&mesh, &["-H", "x-token: admin", &get]), 200);
    assert_eq!(code(&mesh, &["-H", "x-token: guest", &get]), 403);

    // allow-path-ip: with an ALLOW policy, only /ip is allowed, and the DENY still applies.
    apply_policy(
        &mesh,
        "allow-path-ip",
        r#"apiVersion: security.istio.io/v1beta1
kind: AuthorizationPolicy
metadata:
  name: allow-path-ip
  namespace: default
spec:
  selector:
    matchLabels:
      app: httpbin
  action: ALLOW
  rules:
  - to:
    - operation:
        paths: ["/ip"]
"#,
    );
    assert_eq!(code(&mesh, &["-H", "x-token: guest", &ip]), 403);
    assert_eq!(code(&mesh, &["-H", "x-token: admin", &ip]), 200);
    assert_eq!(code(&mesh, &["-H", "x-token: admin", &get]), 403);
    mesh.remove_config("authz-allow-path-ip.yaml");
    mesh.remove_config("authz-deny-method-get.yaml");
    wait_for(Duration::from_secs(20), "the policies to be gone", || {
        code(&mesh, &[&get]) == 200
    });

    // Dry run: a DENY marked `istio.io/dry-run: "true"` denies nothing, and says so.
    let dry = |flag: &str| {
        format!(
            r#"apiVersion: security.istio.io/v1beta1
kind: AuthorizationPolicy
metadata:
  name: deny-path-headers
  namespace: default
  annotations:
    "istio.io/dry-run": "{flag}"
spec:
  selector:
    matchLabels:
      app: httpbin
  action: DENY
  rules:
  - to:
    - operation:
        paths: ["/headers"]
"#
        )
    };
    apply_policy(&mesh, "deny-path-headers", &dry("true"));
    let headers = format!("{HTTPBIN_URL}/headers");
    for _ in 0..20 {
        assert_eq!(code(&mesh, &[&headers]), 200);
    }
    let stats = mesh.stats("httpbin");
    let shadow_denied: u64 = stats
        .lines()
        .filter(|l| l.contains("istio_dry_run_deny_") && l.contains("shadow_denied"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum();
    assert!(shadow_denied >= 20, "dry-run denials not counted:\n{stats}");
    apply_policy(&mesh, "deny-path-headers", &dry("false"));
    assert_eq!(code(&mesh, &[&headers]), 403);
}

#[test]
fn paths_are_normalized_before_policies_match_them() {
    crate::netns::require_root();
    let mesh = security_mesh("");
    let url = |path: &str| format!("{HTTPBIN_URL}{path}");
    wait_for(Duration::from_secs(20), "httpbin through the mesh", || {
        code(&mesh, &[&url("/admin")]) == 200
    });
    apply_policy(
        &mesh,
        "deny-admin",
        r#"apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: deny-admin
  namespace: default
spec:
  selector:
    matchLabels:
      app: httpbin
  action: DENY
  rules:
  - to:
    - operation:
        paths: ["/admin"]
"#,
    );
    let as_is = |path: &str| code(&mesh, &["--path-as-is", &url(path)]);
    // The default normalization (BASE): dot segments and escaped unreserved characters.
    for path in [
        "/admin",
        "/%61dmin",
        "/x/../admin",
        "/./admin",
        "/admin?x=1",
    ] {
        assert_eq!(as_is(path), 403, "{path} reached /admin");
    }
    assert_eq!(as_is("/administrator"), 200);
    // Slashes are merged only with MERGE_SLASHES, as in Istio.
    assert_eq!(as_is("//admin"), 200);
    std::fs::write(
        &mesh.mesh_file,
        "pathNormalization:\n  normalization: MERGE_SLASHES\n",
    )
    .expect("mesh config");
    wait_for(Duration::from_secs(20), "MERGE_SLASHES to apply", || {
        as_is("//admin") == 403
    });
    // Escaped slashes are decoded only with DECODE_AND_MERGE_SLASHES.
    assert_eq!(as_is("/x%2F..%2Fadmin"), 200);
    std::fs::write(
        &mesh.mesh_file,
        "pathNormalization:\n  normalization: DECODE_AND_MERGE_SLASHES\n",
    )
    .expect("mesh config");
    wait_for(
        Duration::from_secs(20),
        "DECODE_AND_MERGE_SLASHES to apply",
        || as_is("/x%2F..%2Fadmin") == 403,
    );
}

#[test]
fn forged_identity_headers_do_not_change_the_principal() {
    crate::netns::require_root();
    let mesh = security_mesh("");
    let headers = format!("http://{}:8000/headers", mesh.ip(HTTPBIN));
    wait_for(Duration::from_secs(20), "httpbin from both clients", || {
        code(&mesh, &[&format!("{HTTPBIN_URL}/headers")]) == 200
            && curl(&mesh, "legacy", &[&headers]).0 == 200
    });
    // Only sleep's service account may call httpbin.
    apply_policy(
        &mesh,
        "allow-sleep",
        r#"apiVersion: security.istio.io/v1beta1
kind: AuthorizationPolicy
metadata:
  name: allow-sleep
  namespace: default
spec:
  selector:
    matchLabels:
      app: httpbin
  action: ALLOW
  rules:
  - from:
    - source:
        principals: ["cluster.local/ns/default/sa/sleep"]
        namespaces: ["default"]
"#,
    );
    assert_eq!(code(&mesh, &[&format!("{HTTPBIN_URL}/headers")]), 200);
    // The legacy client (plaintext, no sidecar) claims sleep's identity in every header it
    // can: still denied.
    let forged = "By=spiffe://cluster.local/ns/default/sa/httpbin;URI=spiffe://cluster.local/ns/default/sa/sleep";
    let (status, _) = curl(
        &mesh,
        "legacy",
        &[
            "-H",
            &format!("x-forwarded-client-cert: {forged}"),
            "-H",
            "x-envoy-peer-metadata-id: sidecar~10.0.0.1~sleep.default~default.svc.cluster.local",
            "-H",
            "x-envoy-peer-metadata: Cg0KB05BTUVTUEFDRRICGgA=",
            &headers,
        ],
    );
    assert_eq!(status, 403);
    // Allowed again for everyone: the forged XFCC never reaches the app.
    mesh.remove_config("authz-allow-sleep.yaml");
    wait_for(Duration::from_secs(20), "the policy to be gone", || {
        curl(&mesh, "legacy", &[&headers]).0 == 200
    });
    let (_, body) = curl(
        &mesh,
        "legacy",
        &[
            "-H",
            &format!("x-forwarded-client-cert: {forged}"),
            &headers,
        ],
    );
    assert!(
        !body
            .to_ascii_lowercase()
            .contains("x-forwarded-client-cert"),
        "a forged XFCC reached the app: {body}"
    );
}

/// A file of Istio's JWT samples (`security/tools/jwt/samples`).
pub(crate) fn istio_jwt(file: &str) -> String {
    let path = format!(
        "{}{file}",
        concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/istio/jwt/")
    );
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read Istio's JWT sample {path}: {e}"))
        .trim()
        .to_string()
}

#[test]
fn istio_authorization_with_jwt() {
    crate::netns::require_root();
    let jwks = istio_jwt("jwks.json");
    let demo = istio_jwt("demo.jwt");
    let groups = istio_jwt("groups-scope.jwt");
    let mesh = security_mesh("");
    let headers = format!("{HTTPBIN_URL}/headers");
    wait_for(Duration::from_secs(20), "httpbin through the mesh", || {
        code(&mesh, &[&headers]) == 200
    });
    let bearer = |t: &str| format!("Authorization: Bearer {t}");

    // The task's RequestAuthentication, with Istio's key set inline (`jwks` instead of the
    // task's jwksUri on GitHub).
    mesh.write_config(
        "ra-jwt-example.yaml",
        &format!(
            r#"apiVersion: security.istio.io/v1beta1
kind: RequestAuthentication
metadata:
  name: jwt-example
  namespace: default
spec:
  selector:
    matchLabels:
      app: httpbin
  jwtRules:
  - issuer: "testing@secure.istio.io"
    jwks: '{jwks}'
"#
        ),
    );
    mesh.wait_applied("requestauthentication", "jwt-example");
    let (status, body) = curl(&mesh, "sleep", &["-H", &bearer("invalidToken"), &headers]);
    assert_eq!(
        (status, body.as_str()),
        (
            401,
            "Jwt is not in the form of Header.Payload.Signature with two dots and 3 sections"
        )
    );
    // A token with one byte of its signature changed.
    let mut tampered = demo.clone();
    let last = tampered
        .pop()
        .map_or('A', |c| if c == 'A' { 'B' } else { 'A' });
    tampered.push(last);
    let (status, body) = curl(&mesh, "sleep", &["-H", &bearer(&tampered), &headers]);
    assert_eq!((status, body.as_str()), (401, "Jwt verification fails"));
    assert_eq!(code(&mesh, &[&headers]), 200, "no token passes");
    let (status, body) = curl(&mesh, "sleep", &["-H", &bearer(&demo), &headers]);
    assert_eq!(status, 200, "{body}");
    assert!(
        !body.to_ascii_lowercase().contains("authorization"),
        "the verified token is removed before the app: {body}"
    );

    // require-jwt: a token from the issuer for its subject is required.
    let require = |when: &str| {
        format!(
            r#"apiVersion: security.istio.io/v1beta1
kind: AuthorizationPolicy
metadata:
  name: require-jwt
  namespace: default
spec:
  selector:
    matchLabels:
      app: httpbin
  action: ALLOW
  rules:
  - from:
    - source:
       requestPrincipals: ["testing@secure.istio.io/testing@secure.istio.io"]
{when}"#
        )
    };
    apply_policy(&mesh, "require-jwt", &require(""));
    assert_eq!(code(&mesh, &["-H", &bearer(&demo), &headers]), 200);
    assert_eq!(code(&mesh, &[&headers]), 403);

    // And the groups claim must hold group1: groups-scope.jwt has it, demo.jwt does not.
    apply_policy(
        &mesh,
        "require-jwt",
        &require("    when:\n    - key: request.auth.claims[groups]\n      values: [\"group1\"]\n"),
    );
    assert_eq!(code(&mesh, &["-H", &bearer(&groups), &headers]), 200);
    assert_eq!(code(&mesh, &["-H", &bearer(&demo), &headers]), 403);
}
