//! SPIRE as the workload identity provider (Istio 1.14): real `spire-server` and
//! `spire-agent` v1.13.3 on loopback and unix sockets (join-token node attestation, the unix
//! workload attestor), one registration entry per pod in Istio's SPIFFE ID form, told apart by
//! a supplementary group per pod (every sidecar runs as uid 1337). Sidecars take their
//! certificate and trust bundle from the agent's socket over Envoy's SDS API.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::netns::{Mesh, Sidecar, next_id, wait_for};
use crate::ports::free_port;

/// A SPIRE server and one agent for a trust domain.
pub struct Spire {
    pub trust_domain: String,
    dir: tempfile::TempDir,
    server: Child,
    agent: Option<Child>,
    /// The agent's alias, parent of every workload entry.
    pub agent_id: String,
}

fn binary(var: &str) -> String {
    let path = std::env::var(var).unwrap_or_default();
    assert!(
        !path.is_empty() && Path::new(&path).is_file(),
        "{var}={path:?}: run the tests with ./scripts/test, which builds SPIRE v1.13.3 \
         (scripts/peers, tools/spire) and exports {var}"
    );
    path
}

fn spawn(argv: &[&str], log: &Path) -> Child {
    let file = std::fs::File::create(log).expect("log");
    let err = file.try_clone().expect("log");
    Command::new(argv[0])
        .args(&argv[1..])
        .stdin(Stdio::null())
        .stdout(file)
        .stderr(err)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {argv:?}: {e}"))
}

impl Spire {
    /// Starts a server for `trust_domain` and an agent attested with a join token. With
    /// `all_bundles`, the agent's `ROOTCA` holds every bundle the workload may use (its own and
    /// the federated ones, Istio's SPIRE federation setting); else only its own.
    pub fn start(trust_domain: &str, all_bundles: bool) -> Spire {
        let dir = tempfile::tempdir().expect("temp dir");
        // The sidecars (uid 1337) reach the agent's socket under this directory.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod");
        let d = dir.path().display().to_string();
        let port = free_port();
        std::fs::write(
            dir.path().join("server.conf"),
            format!(
                r#"server {{
  bind_address = "127.0.0.1"
  bind_port = "{port}"
  socket_path = "{d}/server.sock"
  trust_domain = "{trust_domain}"
  data_dir = "{d}/server"
  log_level = "INFO"
  default_x509_svid_ttl = "1h"
}}
plugins {{
  DataStore "sql" {{
    plugin_data {{
      database_type = "sqlite3"
      connection_string = "{d}/server/datastore.sqlite3"
    }}
  }}
  NodeAttestor "join_token" {{
    plugin_data {{}}
  }}
  KeyManager "memory" {{
    plugin_data {{}}
  }}
}}
"#
            ),
        )
        .expect("server.conf");
        let server = spawn(
            &[
                &binary("WEFT_SPIRE_SERVER"),
                "run",
                "-config",
                &format!("{d}/server.conf"),
            ],
            &dir.path().join("server.log"),
        );
        let mut spire = Spire {
            trust_domain: trust_domain.to_string(),
            dir,
            server,
            agent: None,
            agent_id: format!("spiffe://{trust_domain}/weft-test/node"),
        };
        wait_for(Duration::from_secs(30), "the SPIRE server", || {
            spire.server_cli(&["healthcheck"]).status.success()
        });
        let bundle = spire.server_ok(&["bundle", "show"]);
        std::fs::write(spire.path("bundle.pem"), bundle).expect("bundle.pem");
        let out = spire.server_ok(&["token", "generate", "-spiffeID", &spire.agent_id.clone()]);
        let token = out
            .trim()
            .strip_prefix("Token:")
            .unwrap_or_else(|| panic!("token generate said {out:?}"))
            .trim()
            .to_string();
        let sds = if all_bundles {
            "  sds {\n    default_svid_name = \"default\"\n    default_bundle_name = \"null\"\n    default_all_bundles_name = \"ROOTCA\"\n  }\n"
        } else {
            ""
        };
        std::fs::write(
            spire.path("agent.conf"),
            format!(
                r#"agent {{
  data_dir = "{d}/agent"
  log_level = "DEBUG"
  server_address = "127.0.0.1"
  server_port = "{port}"
  socket_path = "{d}/agent.sock"
  trust_bundle_path = "{d}/bundle.pem"
  trust_domain = "{trust_domain}"
{sds}}}
plugins {{
  NodeAttestor "join_token" {{
    plugin_data {{}}
  }}
  KeyManager "memory" {{
    plugin_data {{}}
  }}
  WorkloadAttestor "unix" {{
    plugin_data {{}}
  }}
}}
"#
            ),
        )
        .expect("agent.conf");
        spire.agent = Some(spawn(
            &[
                &binary("WEFT_SPIRE_AGENT"),
                "run",
                "-config",
                &format!("{d}/agent.conf"),
                "-joinToken",
                &token,
            ],
            &spire.path("agent.log"),
        ));
        let socket = spire.socket().display().to_string();
        wait_for(Duration::from_secs(30), "the SPIRE agent", || {
            Command::new(binary("WEFT_SPIRE_AGENT"))
                .args(["healthcheck", "-socketPath", &socket])
                .output()
                .is_ok_and(|o| o.status.success())
        });
        spire
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The agent's Workload API (and SDS) socket.
    pub fn socket(&self) -> PathBuf {
        self.path("agent.sock")
    }

    pub fn server_cli(&self, args: &[&str]) -> Output {
        let socket = self.path("server.sock");
        Command::new(binary("WEFT_SPIRE_SERVER"))
            .args(&args[..1])
            .args(["-socketPath", &socket.display().to_string()])
            .args(&args[1..])
            .stdin(Stdio::null())
            .output()
            .expect("spire-server")
    }

    fn server_ok(&self, args: &[&str]) -> String {
        // Sub-commands come first: `entry create -socketPath … -spiffeID …`.
        let (cmd, rest) = args.split_at(if args.len() > 1 && !args[1].starts_with('-') {
            2
        } else {
            1
        });
        let socket = self.path("server.sock");
        let out = Command::new(binary("WEFT_SPIRE_SERVER"))
            .args(cmd)
            .args(["-socketPath", &socket.display().to_string()])
            .args(rest)
            .stdin(Stdio::null())
            .output()
            .expect("spire-server");
        assert!(
            out.status.success(),
            "spire-server {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Registers a workload: `spiffe://<td>/ns/<ns>/sa/<sa>` for uid 1337 with supplementary
    /// group `gid`, under the entry id `entry`.
    pub fn register(&self, entry: &str, ns: &str, sa: &str, gid: u32, ttl_secs: Option<u32>) {
        let ttl = ttl_secs.map(|t| t.to_string());
        let extra: Vec<&str> = ttl
            .iter()
            .flat_map(|t| ["-x509SVIDTTL", t.as_str()])
            .collect();
        self.entry("create", entry, ns, sa, gid, &extra);
    }

    /// Lets entry `entry` (registered as by [`Spire::register`]) use `other`'s bundle.
    pub fn federate_entry(&self, entry: &str, ns: &str, sa: &str, gid: u32, other: &str) {
        let fed = format!("spiffe://{other}");
        self.entry("update", entry, ns, sa, gid, &["-federatesWith", &fed]);
    }

    /// `entry create|update` for a pod's entry, with `extra` arguments.
    fn entry(&self, op: &str, entry: &str, ns: &str, sa: &str, gid: u32, extra: &[&str]) {
        let id = format!("spiffe://{}/ns/{ns}/sa/{sa}", self.trust_domain);
        let gid = format!("unix:supplementary_gid:{gid}");
        let mut args = vec![
            "entry",
            op,
            "-entryID",
            entry,
            "-parentID",
            &self.agent_id,
            "-spiffeID",
            &id,
            "-selector",
            "unix:uid:1337",
            "-selector",
            &gid,
        ];
        args.extend_from_slice(extra);
        self.server_ok(&args);
    }

    /// This trust domain's bundle in SPIFFE format, for `bundle set` on another server.
    pub fn bundle_spiffe(&self) -> String {
        self.server_ok(&["bundle", "show", "-format", "spiffe"])
    }

    /// Trusts `other`'s bundle (static federation).
    pub fn set_bundle(&self, other: &Spire) {
        let file = self.path(&format!("{}.bundle", other.trust_domain));
        std::fs::write(&file, other.bundle_spiffe()).expect("bundle");
        let id = format!("spiffe://{}", other.trust_domain);
        self.server_ok(&[
            "bundle",
            "set",
            "-format",
            "spiffe",
            "-id",
            &id,
            "-path",
            &file.display().to_string(),
        ]);
    }

    /// The serial number (lowercase hex) of the trust domain's root.
    pub fn root_serial(&self) -> String {
        let out = Command::new("openssl")
            .args(["x509", "-noout", "-serial", "-in"])
            .arg(self.path("bundle.pem"))
            .output()
            .expect("openssl");
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .trim_start_matches("serial=")
            .to_ascii_lowercase()
    }

    pub fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.path(name)).unwrap_or_default()
    }
}

impl Drop for Spire {
    fn drop(&mut self) {
        if let Some(mut a) = self.agent.take() {
            let _ = a.kill();
            let _ = a.wait();
        }
        let _ = self.server.kill();
        let _ = self.server.wait();
    }
}

const SLEEP_GID: u32 = 20_001;
const HTTPBIN_GID: u32 = 20_002;
const STRANGER_GID: u32 = 20_003;
const FOREIGN_GID: u32 = 20_004;

fn services(id: u8) -> String {
    format!(
        r#"apiVersion: networking.istio.io/v1beta1
kind: ServiceEntry
metadata:
  name: httpbin
  namespace: default
spec:
  hosts: [httpbin.default.svc.cluster.local]
  addresses: [{vip}]
  location: MESH_INTERNAL
  resolution: STATIC
  ports:
  - {{number: 8080, name: http, protocol: HTTP}}
  workloadSelector:
    labels: {{app: httpbin}}
---
apiVersion: security.istio.io/v1beta1
kind: PeerAuthentication
metadata:
  name: default
  namespace: istio-system
spec:
  mtls: {{mode: STRICT}}
"#,
        vip = Mesh::vip(id, 10)
    )
}

fn workload(id: u8, name: &str, host: u8, sa: &str) -> String {
    format!(
        r#"apiVersion: networking.istio.io/v1beta1
kind: WorkloadEntry
metadata:
  name: {name}
  namespace: default
spec:
  address: 10.77.{id}.{host}
  labels: {{app: {name}}}
  serviceAccount: {sa}
"#
    )
}

fn sidecar(name: &str, sa: &str, socket: &Path, gid: u32) -> Sidecar {
    Sidecar {
        workload: format!("default/{name}"),
        labels: [("app".to_string(), name.to_string())].into(),
        service_account: sa.into(),
        sds_socket: Some(socket.to_path_buf()),
        groups: vec![gid],
        ..Default::default()
    }
}

const URL: &str = "http://httpbin.default.svc.cluster.local:8080/hello";

fn certs(mesh: &Mesh, pod: &str) -> serde_json::Value {
    let out = mesh.curl_from(
        mesh.ns(pod),
        &["-s", "-m", "5", "http://127.0.0.1:15000/certs"],
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "/certs of {pod}: {e}: {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

fn leaf_serial(mesh: &Mesh, pod: &str) -> String {
    certs(mesh, pod)["certificates"][0]["cert_chain"][0]["serial_number"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

fn ready_text(mesh: &Mesh, pod: &str) -> String {
    let out = mesh.curl_from(
        mesh.ns(pod),
        &["-s", "-m", "2", "http://127.0.0.1:15021/healthz/ready"],
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn spire_issues_the_mesh_identities_through_sds() {
    let spire = Spire::start("cluster.local", true);
    spire.register("sleep", "default", "sleep", SLEEP_GID, None);
    // httpbin's SVIDs live 20 s: the agent rotates them while traffic runs.
    spire.register("httpbin", "default", "httpbin", HTTPBIN_GID, Some(20));

    let id = next_id();
    let files = vec![
        ("services.yaml", services(id)),
        ("httpbin.yaml", workload(id, "httpbin", 11, "httpbin")),
        ("sleep.yaml", workload(id, "sleep", 10, "sleep")),
        ("stranger.yaml", workload(id, "stranger", 12, "stranger")),
    ];
    let hosts = format!(
        "{} httpbin.default.svc.cluster.local httpbin\n",
        Mesh::vip(id, 10)
    );
    let mut mesh = Mesh::new(id, &files, "", &hosts);
    let socket = spire.socket();
    mesh.add_pod(
        "httpbin",
        11,
        Some(sidecar("httpbin", "httpbin", &socket, HTTPBIN_GID)),
    );
    mesh.start_app("httpbin");
    mesh.add_pod(
        "sleep",
        10,
        Some(sidecar("sleep", "sleep", &socket, SLEEP_GID)),
    );

    // The sidecars chose SDS, and hold SPIRE's SVIDs under SPIRE's root.
    let log = mesh.log("proxy-sleep.log");
    assert!(log.contains("workload SDS socket found"), "{log}");
    assert!(
        !log.contains("workload certificate issued"),
        "the CA was asked: {log}"
    );
    let sleep_certs = certs(&mesh, "sleep");
    let cert = &sleep_certs["certificates"][0];
    assert_eq!(
        cert["cert_chain"][0]["subject_alt_names"][0]["uri"],
        "spiffe://cluster.local/ns/default/sa/sleep",
        "{sleep_certs}"
    );
    assert_eq!(
        cert["ca_cert"][0]["serial_number"]
            .as_str()
            .unwrap_or_default(),
        spire.root_serial(),
        "the trust bundle is SPIRE's: {sleep_certs}"
    );

    // mTLS between them, and the server sees the SPIRE-issued principal.
    let (code, body) = mesh.curl("sleep", URL);
    assert_eq!(code, 200, "{body}");
    let metrics = mesh.metrics("httpbin");
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("istio_requests_total")
                && l.contains("source_principal=\"spiffe://cluster.local/ns/default/sa/sleep\"")
                && l.contains("connection_security_policy=\"mutual_tls\"")),
        "{metrics}"
    );

    // Rotation under load: requests for 25 s while httpbin's 20 s SVID is replaced.
    let first = leaf_serial(&mesh, "httpbin");
    let mut serials = vec![first.clone()];
    let start = Instant::now();
    let mut sent = 0;
    let mut failed = Vec::new();
    while start.elapsed() < Duration::from_secs(25) {
        let (code, body) = mesh.curl("sleep", URL);
        sent += 1;
        if code != 200 {
            failed.push(format!("{code} {body}"));
        }
        let s = leaf_serial(&mesh, "httpbin");
        if serials.last() != Some(&s) {
            serials.push(s);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        failed.is_empty(),
        "{} of {sent} failed: {failed:?}",
        failed.len()
    );
    assert!(
        serials.len() >= 2,
        "httpbin's 20 s SVID was not rotated in 25 s: {serials:?}\n{}\n{}",
        mesh.log("proxy-httpbin.log"),
        spire.log("agent.log")
    );
    let log = mesh.log("proxy-httpbin.log");
    assert!(
        log.contains("workload certificate and trust bundle from the SDS server"),
        "{log}"
    );

    // A pod SPIRE has no entry for never becomes ready, says why, and gets no traffic through.
    mesh.add_pod_nowait(
        "stranger",
        12,
        Some(sidecar("stranger", "stranger", &socket, STRANGER_GID)),
    );
    std::thread::sleep(Duration::from_secs(6));
    assert!(!mesh.ready("stranger"));
    let why = ready_text(&mesh, "stranger");
    assert!(
        why.contains("no workload certificate yet from the SDS server")
            && why.contains("not authorized"),
        "{why}"
    );
    let (code, _) = mesh.curl("stranger", URL);
    assert_ne!(code, 200, "no SVID, no mTLS");
    drop(mesh);
    drop(spire);
}

#[test]
fn a_foreign_trust_domain_is_refused_until_federated() {
    let home = Spire::start("cluster.local", true);
    let abroad = Spire::start("other.org", true);
    home.register("httpbin", "default", "httpbin", HTTPBIN_GID, None);
    abroad.register("foreign", "default", "foreign", FOREIGN_GID, None);

    let id = next_id();
    let files = vec![
        ("services.yaml", services(id)),
        ("httpbin.yaml", workload(id, "httpbin", 11, "httpbin")),
        ("foreign.yaml", workload(id, "foreign", 13, "foreign")),
    ];
    let hosts = format!(
        "{} httpbin.default.svc.cluster.local httpbin\n",
        Mesh::vip(id, 10)
    );
    let mut mesh = Mesh::new(id, &files, "", &hosts);
    mesh.add_pod(
        "httpbin",
        11,
        Some(sidecar("httpbin", "httpbin", &home.socket(), HTTPBIN_GID)),
    );
    mesh.start_app("httpbin");
    mesh.add_pod(
        "foreign",
        13,
        Some(sidecar("foreign", "foreign", &abroad.socket(), FOREIGN_GID)),
    );
    let foreign = certs(&mesh, "foreign");
    assert_eq!(
        foreign["certificates"][0]["cert_chain"][0]["subject_alt_names"][0]["uri"],
        "spiffe://other.org/ns/default/sa/foreign",
        "{foreign}"
    );

    // Each side's bundle holds only its own domain: the handshake fails.
    let (code, body) = mesh.curl("foreign", URL);
    assert_eq!(code, 503, "{body}");

    // Federate both ways: bundles exchanged, entries allowed to use them.
    home.set_bundle(&abroad);
    abroad.set_bundle(&home);
    home.federate_entry("httpbin", "default", "httpbin", HTTPBIN_GID, "other.org");
    abroad.federate_entry(
        "foreign",
        "default",
        "foreign",
        FOREIGN_GID,
        "cluster.local",
    );
    let mut last = (0, String::new());
    wait_for(
        Duration::from_secs(40),
        "federation to reach both sidecars",
        || {
            last = mesh.curl("foreign", URL);
            last.0 == 200
        },
    );
    let metrics = mesh.metrics("httpbin");
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("istio_requests_total")
                && l.contains("source_principal=\"spiffe://other.org/ns/default/sa/foreign\"")
                && l.contains("response_code=\"200\"")),
        "{metrics}"
    );
    let domains: Vec<String> = certs(&mesh, "httpbin")["certificates"][0]["ca_cert"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|c| c["path"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    assert!(
        domains.iter().any(|p| p.contains("trust domain other.org")),
        "{domains:?}"
    );
    drop(mesh);
    drop(home);
    drop(abroad);
}
