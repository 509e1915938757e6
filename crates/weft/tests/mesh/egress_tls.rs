//! istio.io's "Egress TLS Origination" task and Istio 1.14's auto-SNI and auto SAN validation,
//! against an "internet" pod: nginx serving `a.internet.test` (the default server) and
//! `b.internet.test` on 443 by SNI and `m.internet.test` on 8443 requiring a client
//! certificate, all with certificates from a test CA. The ServiceEntries have
//! `resolution: DNS`, as in the task: the names resolve to the internet pod, for the app and
//! for its sidecar. The app calls `http://<name>/`; the sidecar originates TLS as the
//! DestinationRule says. `weft control` runs with istiod's
//! `ENABLE_AUTO_SNI` and `VERIFY_CERTIFICATE_AT_CLIENT` off (1.14's defaults), then on.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use crate::netns::{Mesh, next_id, wait_for};
use crate::security::{SLEEP, sidecar, workload};

const INTERNET: u8 = 40;
const NAMES: [&str; 4] = [
    "a.internet.test",
    "b.internet.test",
    "c.internet.test",
    "m.internet.test",
];

/// The test CA, a server certificate per name (SAN: the name) and a client certificate, in a
/// directory the sidecar (uid 1337) can read.
fn certificates(dir: &Path) {
    crate::pki::ca(dir, "weft-test-internet-ca");
    for name in ["a", "b", "m"] {
        crate::pki::leaf(
            dir,
            name,
            name,
            &format!("subjectAltName=DNS:{name}.internet.test\nextendedKeyUsage=serverAuth\n"),
        );
    }
    crate::pki::leaf(dir, "client", "client", "extendedKeyUsage=clientAuth\n");
    for e in std::fs::read_dir(dir).expect("dir") {
        let p = e.expect("entry").path();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    }
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
}

fn nginx_conf(dir: &Path) -> String {
    let d = dir.display();
    let server = |listen: &str, name: &str, cert: &str, extra: &str, body: &str| {
        format!(
            "  server {{\n    listen {listen};\n    server_name {name};\n    ssl_certificate {d}/{cert}.pem;\n    ssl_certificate_key {d}/{cert}.key;\n{extra}    location / {{ return 200 \"{body}\\n\"; }}\n  }}\n"
        )
    };
    format!(
        "user root;\ndaemon off;\npid {d}/nginx.pid;\nerror_log {d}/nginx-error.log;\nevents {{}}\nhttp {{\n  access_log off;\n  client_body_temp_path {d}/tmp;\n  proxy_temp_path {d}/tmp;\n  fastcgi_temp_path {d}/tmp;\n  uwsgi_temp_path {d}/tmp;\n  scgi_temp_path {d}/tmp;\n  server {{\n    listen 80;\n    location / {{ return 301 https://$host$request_uri; }}\n  }}\n{}{}{}}}\n",
        server(
            "443 ssl default_server",
            "a.internet.test",
            "a",
            "",
            "a sni=$ssl_server_name"
        ),
        server(
            "443 ssl",
            "b.internet.test",
            "b",
            "",
            "b sni=$ssl_server_name"
        ),
        server(
            "8443 ssl",
            "m.internet.test",
            "m",
            &format!("    ssl_verify_client on;\n    ssl_client_certificate {d}/ca.pem;\n"),
            "mutual client=$ssl_client_s_dn"
        ),
    )
}

/// The ServiceEntries, as istio.io's task has them: each name on port 80 with `resolution: DNS`
/// (the sidecar resolves the name itself, to the internet pod), to the pod's `target` port
/// (nginx's plain port 80 when None), `m` to 8443.
fn service_entries(target: Option<u16>) -> String {
    NAMES
        .iter()
        .map(|host| {
            let target = match (*host, target) {
                ("m.internet.test", Some(_)) => ", targetPort: 8443".to_string(),
                (_, Some(t)) => format!(", targetPort: {t}"),
                (_, None) => String::new(),
            };
            format!(
                "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: {name}, namespace: default}}\nspec:\n  hosts: [{host}]\n  location: MESH_EXTERNAL\n  resolution: DNS\n  ports:\n  - {{number: 80, name: http-port, protocol: HTTP{target}}}\n",
                name = host.replace('.', "-"),
            )
        })
        .collect::<Vec<_>>()
        .join("---\n")
}

/// A DestinationRule originating TLS on port 80 (the task's `portLevelSettings`).
fn destination_rule(host: &str, tls: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: {name}, namespace: default}}\nspec:\n  host: {host}\n  trafficPolicy:\n    portLevelSettings:\n    - port: {{number: 80}}\n      tls: {tls}\n",
        name = host.replace('.', "-")
    )
}

fn get(mesh: &Mesh, host: &str) -> (u16, String) {
    mesh.curl("sleep", &format!("http://{host}/"))
}

fn restart_control(mesh: &mut Mesh, args: &[&str]) {
    mesh.stop_control();
    mesh.control_args = args.iter().map(|s| s.to_string()).collect();
    mesh.start_control();
}

/// The certificates and nginx config of the internet pod, in a directory of their own.
fn internet_files(prefix: &str) -> tempfile::TempDir {
    let certs = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .expect("certs dir");
    let dir = certs.path();
    certificates(dir);
    std::fs::create_dir_all(dir.join("tmp")).expect("tmp");
    std::fs::write(dir.join("nginx.conf"), nginx_conf(dir)).expect("nginx.conf");
    certs
}

/// The internet pod (no sidecar) with nginx on the files of [`internet_files`].
fn start_internet(mesh: &mut Mesh, dir: &Path) {
    mesh.add_pod("internet", INTERNET, None);
    let conf = dir.join("nginx.conf");
    mesh.start_command(
        "internet",
        &["nginx", "-c", conf.to_str().unwrap_or_default()],
        "http://127.0.0.1:80/",
    );
}

#[test]
fn istio_egress_tls_origination_with_auto_sni_and_auto_san_validation() {
    crate::netns::require_root();
    let id = next_id();
    let certs = internet_files("weft-egress-");
    let dir = certs.path();
    let ip = format!("10.77.{id}.{INTERNET}");
    // The names resolve to the internet pod, for the app and for its sidecar alike.
    let hosts: String = NAMES.iter().map(|h| format!("{ip} {h}\n")).collect();
    let mut mesh = Mesh::new(
        id,
        &[
            ("sleep.yaml", workload(id, "sleep", SLEEP, "sleep")),
            ("internet.yaml", service_entries(None)),
        ],
        "accessLogFile: /dev/stdout\n",
        &hosts,
    );
    start_internet(&mut mesh, dir);
    mesh.add_pod("sleep", SLEEP, Some(sidecar("sleep")));

    // The task's starting point: http://<name>/ answers with the site's redirect to HTTPS.
    wait_for(Duration::from_secs(20), "the redirect", || {
        get(&mesh, "a.internet.test").0 == 301
    });

    // TLS origination on port 80 (to the servers' 443 and 8443): one clean 200.
    let ca = dir.join("ca.pem");
    let ca = ca.to_str().unwrap_or_default();
    let simple = format!("{{mode: SIMPLE, caCertificates: {ca}}}");
    mesh.write_config("internet.yaml", &service_entries(Some(443)));
    for host in &NAMES[..3] {
        mesh.write_config(&format!("dr-{host}.yaml"), &destination_rule(host, &simple));
    }
    // Without auto-SNI (1.14's default) no SNI is sent (nginx then presents the default
    // server's certificate and picks the server block by Host).
    wait_for(Duration::from_secs(20), "TLS origination", || {
        get(&mesh, "a.internet.test") == (200, "a sni=\n".into())
    });
    assert_eq!(get(&mesh, "b.internet.test"), (200, "b sni=\n".into()));

    // ENABLE_AUTO_SNI: the request's host is the SNI, so each name gets its own server.
    restart_control(&mut mesh, &["--enable-auto-sni", "true"]);
    wait_for(Duration::from_secs(40), "auto SNI", || {
        get(&mesh, "b.internet.test") == (200, "b sni=b.internet.test\n".into())
    });
    assert_eq!(
        get(&mesh, "a.internet.test"),
        (200, "a sni=a.internet.test\n".into())
    );
    // Without SAN validation, a name the server has no certificate for still gets through.
    assert_eq!(
        get(&mesh, "c.internet.test"),
        (200, "a sni=c.internet.test\n".into())
    );

    // VERIFY_CERTIFICATE_AT_CLIENT too: the certificate must be valid for the request's host.
    restart_control(
        &mut mesh,
        &[
            "--enable-auto-sni",
            "true",
            "--verify-certificate-at-client",
            "true",
        ],
    );
    wait_for(Duration::from_secs(40), "auto SAN validation", || {
        get(&mesh, "c.internet.test").0 == 503
    });
    assert_eq!(
        get(&mesh, "b.internet.test"),
        (200, "b sni=b.internet.test\n".into())
    );
    let refused_line = |log: &str| {
        log.lines()
            .rev()
            .find(|l| {
                l.contains("\"c.internet.test\"")
                    && l.contains(" 503 ")
                    && l.contains("{connection_failure}")
            })
            .map(str::to_owned)
    };
    wait_for(
        Duration::from_secs(5),
        "the refusal in the access log",
        || refused_line(&mesh.log("proxy-sleep.log")).is_some(),
    );
    let refused = refused_line(&mesh.log("proxy-sleep.log")).unwrap_or_default();
    assert!(
        refused.contains("TLS_error") && refused.contains("NotValidForName"),
        "no transport failure reason: {refused}"
    );
    // Without caCertificates the system's trust store decides: the test CA is not in it.
    mesh.write_config(
        "dr-b.internet.test.yaml",
        &destination_rule("b.internet.test", "{mode: SIMPLE}"),
    );
    wait_for(Duration::from_secs(20), "the system trust store", || {
        get(&mesh, "b.internet.test").0 == 503
    });

    // MUTUAL: m requires a client certificate from the test CA. SIMPLE first: refused by
    // nginx (400); then MUTUAL with the DestinationRule's client certificate files.
    mesh.write_config(
        "dr-m.internet.test.yaml",
        &destination_rule("m.internet.test", &simple),
    );
    wait_for(
        Duration::from_secs(20),
        "m without a client certificate",
        || get(&mesh, "m.internet.test").0 == 400,
    );
    let (cert, key) = (dir.join("client.pem"), dir.join("client.key"));
    mesh.write_config(
        "dr-m.internet.test.yaml",
        &destination_rule(
            "m.internet.test",
            &format!(
                "{{mode: MUTUAL, caCertificates: {ca}, clientCertificate: {}, privateKey: {}}}",
                cert.display(),
                key.display()
            ),
        ),
    );
    wait_for(Duration::from_secs(20), "MUTUAL origination", || {
        get(&mesh, "m.internet.test") == (200, "mutual client=CN=client\n".into())
    });
}

/// istio.io's "Accessing external services" HTTPS case: ServiceEntries with an HTTPS port and
/// `resolution: DNS`; the app speaks TLS itself and the sidecar routes the connection by its
/// SNI (a filter chain per name on `0.0.0.0_443`), untouched, to the name's own cluster. Under
/// REGISTRY_ONLY a name without a ServiceEntry is closed, with one it passes.
#[test]
fn tls_passthrough_by_sni_to_https_service_entries() {
    crate::netns::require_root();
    let id = next_id();
    let certs = internet_files("weft-passthrough-");
    let dir = certs.path();
    let ip = format!("10.77.{id}.{INTERNET}");
    let hosts: String = ["a", "b", "c"]
        .iter()
        .map(|n| format!("{ip} {n}.internet.test\n"))
        .collect();
    let https = |host: &str| {
        format!(
            "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: {name}, namespace: default}}\nspec:\n  hosts: [{host}]\n  location: MESH_EXTERNAL\n  resolution: DNS\n  ports:\n  - {{number: 443, name: https, protocol: HTTPS}}\n",
            name = host.replace('.', "-")
        )
    };
    let mut mesh = Mesh::new(
        id,
        &[
            ("sleep.yaml", workload(id, "sleep", SLEEP, "sleep")),
            ("a.yaml", https("a.internet.test")),
            ("b.yaml", https("b.internet.test")),
        ],
        "outboundTrafficPolicy: {mode: REGISTRY_ONLY}\n",
        &hosts,
    );
    start_internet(&mut mesh, dir);
    mesh.add_pod("sleep", SLEEP, Some(sidecar("sleep")));
    let ca = dir.join("ca.pem").display().to_string();
    let https_get = |mesh: &Mesh, host: &str| {
        let url = format!("https://{host}/");
        mesh.curl_from(
            mesh.ns("sleep"),
            &[
                "-s",
                "-m",
                "10",
                "--cacert",
                &ca,
                "-w",
                "\n%{http_code}",
                &url,
            ],
        )
    };
    let body = |out: std::process::Output| String::from_utf8_lossy(&out.stdout).into_owned();

    // Each name reaches its own nginx server, verified end to end by the app (the sidecar
    // does not terminate TLS), through its ServiceEntry's cluster.
    // The sidecar became ready only once its DNS clusters' names were resolved (Envoy's
    // initial warming), so the very first request already has its endpoints.
    assert_eq!(
        body(https_get(&mesh, "b.internet.test")),
        "b sni=b.internet.test\n\n200"
    );
    assert_eq!(
        body(https_get(&mesh, "a.internet.test")),
        "a sni=a.internet.test\n\n200"
    );
    let metrics = mesh.metrics("sleep");
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("istio_tcp_connections_opened_total")
                && l.contains("destination_service=\"b.internet.test\"")),
        "{metrics}"
    );

    // REGISTRY_ONLY: c.internet.test has no ServiceEntry, so its connection is closed.
    let out = https_get(&mesh, "c.internet.test");
    assert!(!out.status.success(), "{}", body(out));
    let metrics = mesh.metrics("sleep");
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("istio_tcp_connections_opened_total")
                && l.contains("destination_service_name=\"BlackHoleCluster\"")),
        "{metrics}"
    );
    // With one, it passes.
    // With one, it passes (nginx has no certificate for c, so the app skips verification:
    // the default server answers, having seen the SNI the sidecar left alone).
    mesh.write_config("c.yaml", &https("c.internet.test"));
    wait_for(
        Duration::from_secs(20),
        "c.internet.test with its ServiceEntry",
        || {
            let out = mesh.curl_from(
                mesh.ns("sleep"),
                &["-s", "-k", "-m", "10", "https://c.internet.test/"],
            );
            body(out) == "a sni=c.internet.test\n"
        },
    );
}
