//! A small mesh on one machine for end-to-end tests: a bridge in its own network namespace,
//! one namespace per pod (veth on the bridge, loopback up, default route), the control plane
//! in a pod of its own, and pods with Istio's iptables capture and `weft proxy` as uid 1337.
//! Everything is removed on drop. Only namespaces the test creates are touched.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

pub const WEFT: &str = env!("CARGO_BIN_EXE_weft");

static NEXT_ID: AtomicU8 = AtomicU8::new(0);

fn run(cmd: &[&str]) -> Output {
    Command::new(cmd[0])
        .args(&cmd[1..])
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

fn must(cmd: &[&str]) {
    let out = run(cmd);
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A fresh mesh id (subnets 10.77.<id>.0/24 and 10.78.<id>.0/24); also checks for root.
pub fn next_id() -> u8 {
    require_root();
    NEXT_ID.fetch_add(1, Ordering::SeqCst) + (std::process::id() % 50) as u8 * 4 + 10
}

/// Fails the test with a clear message when it cannot create network namespaces.
pub fn require_root() {
    let uid = run(&["id", "-u"]);
    let uid = String::from_utf8_lossy(&uid.stdout).trim().to_string();
    assert_eq!(
        uid, "0",
        "the end-to-end tests create network namespaces and iptables rules: run them as root (CI does)"
    );
}

#[derive(Default)]
pub struct Sidecar {
    pub workload: String,
    pub labels: BTreeMap<String, String>,
    pub service_account: String,
    pub cert_ttl: Option<String>,
    /// `--delta-xds`: incremental xDS instead of state of the world.
    pub delta: bool,
    /// `--sds-socket`: a SPIRE agent's socket (else a path nothing serves, so the CA is used).
    pub sds_socket: Option<PathBuf>,
    /// Supplementary groups of the proxy process (uid 1337), which tell pods apart to a SPIRE
    /// agent's unix workload attestor.
    pub groups: Vec<u32>,
    /// Istio's DNS capture and auto-allocation (`ISTIO_META_DNS_CAPTURE`,
    /// `ISTIO_META_DNS_AUTO_ALLOCATE`): the pod's resolv.conf names the node as its
    /// nameserver, and DNS to it is captured to the sidecar.
    pub dns_capture: bool,
    /// More `weft proxy` arguments (limits, say).
    pub extra_args: Vec<String>,
}

pub struct Pod {
    pub ns: String,
    pub ip: String,
    procs: Vec<(String, Child)>,
}

pub struct Mesh {
    pub id: u8,
    pub dir: tempfile::TempDir,
    pub config_dir: PathBuf,
    pub mesh_file: PathBuf,
    /// The namespace holding the bridge (the pods' gateway, 10.77.<id>.1).
    pub bridge_ns: String,
    pub cp: Pod,
    pub pods: BTreeMap<String, Pod>,
    /// `/etc/hosts` of the pods made from now on (beside localhost).
    pub hosts: String,
    veths: u8,
    /// Extra arguments of `weft control` (taken by the next [`Mesh::start_control`]).
    pub control_args: Vec<String>,
}

impl Mesh {
    /// Subnet of this mesh's pods: 10.77.<id>.0/24.
    pub fn ip(&self, host: u8) -> String {
        format!("10.77.{}.{host}", self.id)
    }

    /// A VIP for services: 10.78.<id>.<n>.
    pub fn vip(id: u8, n: u8) -> String {
        format!("10.78.{id}.{n}")
    }

    /// Creates the bridge and the control-plane pod, writes the config files and starts
    /// `weft control`. `config` is a list of (file name, YAML).
    pub fn new(id: u8, config: &[(&str, String)], mesh_config: &str, hosts: &str) -> Mesh {
        let mut mesh = Mesh::bridge(id, hosts);
        for (name, yaml) in config {
            std::fs::write(mesh.config_dir.join(name), yaml).expect("write config");
        }
        std::fs::write(&mesh.mesh_file, mesh_config).expect("write mesh config");
        mesh.cp = mesh.make_pod("cp", 2);
        mesh.start_control();
        mesh
    }

    /// Only the bridge, in namespace [`Mesh::bridge_ns`] at 10.77.<id>.1: no control plane,
    /// no pods. `hosts` is what the pods made later see in `/etc/hosts` (beside localhost).
    pub fn bridge(id: u8, hosts: &str) -> Mesh {
        let dir = tempfile::tempdir().expect("temp dir");
        let config_dir = dir.path().join("config");
        std::fs::create_dir_all(&config_dir).expect("config dir");
        let mesh_file = dir.path().join("mesh.yaml");
        let bridge_ns = format!("w{id}-br");
        let _ = run(&["ip", "netns", "del", &bridge_ns]);
        must(&["ip", "netns", "add", &bridge_ns]);
        must(&[
            "ip", "netns", "exec", &bridge_ns, "ip", "link", "set", "lo", "up",
        ]);
        must(&[
            "ip", "netns", "exec", &bridge_ns, "ip", "link", "add", "br0", "type", "bridge",
        ]);
        must(&[
            "ip", "netns", "exec", &bridge_ns, "ip", "link", "set", "br0", "up",
        ]);
        let gw = format!("10.77.{id}.1/24");
        must(&[
            "ip", "netns", "exec", &bridge_ns, "ip", "addr", "add", &gw, "dev", "br0",
        ]);
        let cp = Pod {
            ns: String::new(),
            ip: String::new(),
            procs: Vec::new(),
        };
        Mesh {
            id,
            dir,
            config_dir,
            mesh_file,
            bridge_ns,
            cp,
            pods: BTreeMap::new(),
            hosts: hosts.to_string(),
            veths: 0,
            control_args: Vec::new(),
        }
    }

    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    pub fn control_addr(&self) -> String {
        format!("{}:15010", self.cp.ip)
    }

    pub fn start_control(&mut self) {
        let log = self.dir.path().join("control.log");
        let state = self.state_dir();
        let mut argv = vec![
            WEFT,
            "control",
            "--config-dir",
            self.config_dir.to_str().unwrap_or_default(),
            "--mesh-config",
            self.mesh_file.to_str().unwrap_or_default(),
            "--state-dir",
            state.to_str().unwrap_or_default(),
        ];
        argv.extend(self.control_args.iter().map(String::as_str));
        let child = spawn_logged(&self.cp.ns, None, &argv, &log);
        self.cp.procs.push(("control".into(), child));
        let addr = format!("http://{}:15014/ready", self.cp.ip);
        wait_for(
            Duration::from_secs(20),
            "the control plane to listen",
            || {
                self.curl_from(&self.cp.ns, &["-sf", "-m", "1", &addr])
                    .status
                    .success()
            },
        );
    }

    pub fn stop_control(&mut self) {
        for (_, mut c) in self.cp.procs.drain(..) {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn make_pod(&mut self, name: &str, host: u8) -> Pod {
        let ns = format!("w{}-{name}", self.id);
        let ip = self.ip(host);
        self.veths += 1;
        let veth = format!("w{}v{}", self.id, self.veths);
        let _ = run(&["ip", "netns", "del", &ns]);
        must(&["ip", "netns", "add", &ns]);
        must(&["ip", "netns", "exec", &ns, "ip", "link", "set", "lo", "up"]);
        must(&[
            "ip", "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &ns,
        ]);
        must(&["ip", "link", "set", &veth, "netns", &self.bridge_ns]);
        must(&[
            "ip",
            "-n",
            &self.bridge_ns,
            "link",
            "set",
            &veth,
            "master",
            "br0",
        ]);
        must(&["ip", "-n", &self.bridge_ns, "link", "set", &veth, "up"]);
        let cidr = format!("{ip}/24");
        must(&[
            "ip", "netns", "exec", &ns, "ip", "addr", "add", &cidr, "dev", "eth0",
        ]);
        must(&[
            "ip", "netns", "exec", &ns, "ip", "link", "set", "eth0", "up",
        ]);
        let gw = self.ip(1);
        must(&[
            "ip", "netns", "exec", &ns, "ip", "route", "add", "default", "via", &gw,
        ]);
        let etc = PathBuf::from("/etc/netns").join(&ns);
        std::fs::create_dir_all(&etc).expect("/etc/netns");
        std::fs::write(
            etc.join("hosts"),
            format!("127.0.0.1 localhost\n{}", self.hosts),
        )
        .expect("hosts");
        Pod {
            ns,
            ip,
            procs: Vec::new(),
        }
    }

    /// Adds a pod; with a sidecar, installs capture, starts `weft proxy` (uid 1337) and waits
    /// for it to be ready.
    pub fn add_pod(&mut self, name: &str, host: u8, sidecar: Option<Sidecar>) {
        let with_sidecar = sidecar.is_some();
        self.add_pod_nowait(name, host, sidecar);
        if with_sidecar {
            wait_for(
                Duration::from_secs(20),
                &format!("the sidecar of {name} to be ready"),
                || self.ready(name),
            );
        }
    }

    /// Whether a pod's sidecar answers 200 on :15021/healthz/ready.
    pub fn ready(&self, pod: &str) -> bool {
        self.curl_from(
            self.ns(pod),
            &["-sf", "-m", "1", "http://127.0.0.1:15021/healthz/ready"],
        )
        .status
        .success()
    }

    /// Like [`Mesh::add_pod`] without waiting for the sidecar.
    pub fn add_pod_nowait(&mut self, name: &str, host: u8, sidecar: Option<Sidecar>) {
        let mut pod = self.make_pod(name, host);
        if let Some(sc) = sidecar {
            let mut capture = vec![WEFT, "iptables"];
            if sc.dns_capture {
                std::fs::write(
                    PathBuf::from("/etc/netns").join(&pod.ns).join("resolv.conf"),
                    format!(
                        "nameserver {}\nsearch {wns}.svc.cluster.local svc.cluster.local cluster.local\noptions ndots:5\n",
                        self.ip(1),
                        wns = sc.workload.split('/').next().unwrap_or("default")
                    ),
                )
                .expect("resolv.conf");
                capture.push("--redirect-dns");
            }
            let out = ns_exec(&pod.ns, &capture);
            assert!(
                out.status.success(),
                "weft iptables: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let (wns, wname) = sc.workload.split_once('/').expect("ns/name");
            let token = Command::new(WEFT)
                .args(["control", "token", "--state-dir"])
                .arg(self.state_dir())
                .args(["--workload", &sc.workload])
                .output()
                .expect("weft control token");
            assert!(token.status.success());
            let token_file = self.dir.path().join(format!("{wns}-{wname}.token"));
            std::fs::write(&token_file, &token.stdout).expect("token file");
            let mut args: Vec<String> = vec![
                WEFT.into(),
                "proxy".into(),
                "--control-plane".into(),
                self.control_addr(),
                "--workload".into(),
                sc.workload.clone(),
                "--token-file".into(),
                token_file.to_string_lossy().into_owned(),
                "--pod-ip".into(),
                pod.ip.clone(),
                "--service-account".into(),
                sc.service_account.clone(),
                "--termination-drain".into(),
                "1s".into(),
            ];
            for (k, v) in &sc.labels {
                args.push("--label".into());
                args.push(format!("{k}={v}"));
            }
            if sc.delta {
                args.push("--delta-xds".into());
            }
            if let Some(ttl) = &sc.cert_ttl {
                args.push("--cert-ttl".into());
                args.push(ttl.clone());
            }
            let sds = sc
                .sds_socket
                .clone()
                .unwrap_or_else(|| self.dir.path().join("no-sds.sock"));
            args.push("--sds-socket".into());
            args.push(sds.to_string_lossy().into_owned());
            if sc.dns_capture {
                args.push("--dns-capture".into());
                args.push("--dns-auto-allocate".into());
            }
            args.extend(sc.extra_args.iter().cloned());
            let argv: Vec<&str> = args.iter().map(String::as_str).collect();
            let log = self.dir.path().join(format!("proxy-{name}.log"));
            let child = spawn_logged_as(&pod.ns, Some(1337), &sc.groups, &argv, &log);
            pod.procs.push(("proxy".into(), child));
        }
        self.pods.insert(name.to_string(), pod);
    }

    /// A pod without a sidecar or any process yet (its namespace, veth and address); returns
    /// its address. (The Kubernetes tests' kubelet runs the pod's containers.)
    #[allow(dead_code)]
    pub fn add_bare_pod(&mut self, name: &str, host: u8) -> String {
        let pod = self.make_pod(name, host);
        let ip = pod.ip.clone();
        self.pods.insert(name.to_string(), pod);
        ip
    }

    /// Starts `argv` in a pod as process `role` (output in `<role>-<pod>.log`), as `uid`
    /// (its group the same) when given, with `env` added; without waiting.
    #[allow(dead_code)]
    pub fn spawn_user(
        &mut self,
        pod: &str,
        role: &str,
        uid: Option<u32>,
        argv: &[&str],
        env: &[(String, String)],
    ) {
        let p = self.pods.get_mut(pod).expect("pod");
        let log = self.dir.path().join(format!("{role}-{pod}.log"));
        let child = spawn_logged_env(&p.ns, uid, &[], argv, env, &log);
        p.procs.push((role.into(), child));
    }

    /// Starts the test app (`apps.py server <pod>`) in a pod.
    pub fn start_app(&mut self, pod: &str) {
        let p = self.pods.get_mut(pod).expect("pod");
        let log = self.dir.path().join(format!("app-{pod}.log"));
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/mesh/apps.py");
        let child = spawn_logged(
            &p.ns,
            None,
            &[
                "python3",
                script.to_str().unwrap_or_default(),
                "server",
                pod,
            ],
            &log,
        );
        p.procs.push(("app".into(), child));
        let ns = p.ns.clone();
        let url = format!("http://{}:8080/", self.pods[pod].ip);
        // Reach the app directly on its own loopback path (not captured: uid root to 127.0.0.1).
        wait_for(
            Duration::from_secs(20),
            &format!("the app in {pod}"),
            || {
                self.curl_from(
                    &ns,
                    &[
                        "-s",
                        "-o",
                        "/dev/null",
                        "-m",
                        "1",
                        &url.replace(&self.pods[pod].ip, "127.0.0.1"),
                    ],
                )
                .status
                .success()
            },
        );
    }

    /// `weft wait <kind> <name>` from the control plane's pod: returns once every connected
    /// sidecar runs the resource's current content (or knows it is gone).
    pub fn wait_applied(&self, kind: &str, name: &str) {
        let cp = format!("{}:15014", self.cp.ip);
        let out = ns_exec(
            &self.cp.ns,
            &[
                WEFT,
                "wait",
                "--control-plane",
                &cp,
                "--timeout",
                "30s",
                kind,
                name,
            ],
        );
        assert!(
            out.status.success(),
            "weft wait {kind} {name}: {} {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Writes a gRPC xDS bootstrap for a proxyless client at `host` (node `grpc-client`,
    /// namespace default) pointing at the control plane; returns its path.
    pub fn grpc_bootstrap(&self, host: u8) -> PathBuf {
        let path = self.dir.path().join("xds-bootstrap.json");
        std::fs::write(
            &path,
            format!(
                r#"{{"xds_servers": [{{"server_uri": "{}", "channel_creds": [{{"type": "insecure"}}], "server_features": ["xds_v3"]}}],
  "node": {{"id": "sidecar~{}~grpc-client.default~default.svc.cluster.local", "metadata": {{"GENERATOR": "grpc", "NAMESPACE": "default"}}}}}}"#,
                self.control_addr(),
                self.ip(host)
            ),
        )
        .expect("bootstrap");
        path
    }

    /// A log file once it contains `needle` (access-log lines are written a moment after the
    /// response), or as it is after 10 s.
    pub fn wait_log(&self, name: &str, needle: &str) -> String {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let log = self.log(name);
            if log.contains(needle) || std::time::Instant::now() > deadline {
                return log;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Starts `argv` in a pod as process `role` (output in `<role>-<pod>.log`), without waiting.
    pub fn spawn(&mut self, pod: &str, role: &str, argv: &[&str]) {
        let p = self.pods.get_mut(pod).expect("pod");
        let log = self.dir.path().join(format!("{role}-{pod}.log"));
        let child = spawn_logged(&p.ns, None, argv, &log);
        p.procs.push((role.into(), child));
    }

    /// Starts `argv` as a pod's app (role "app", output in `app-<pod>.log`) and waits until
    /// `ready_url`, fetched from inside the pod (e.g. `http://127.0.0.1:9080/health`), answers.
    pub fn start_command(&mut self, pod: &str, argv: &[&str], ready_url: &str) {
        let p = self.pods.get_mut(pod).expect("pod");
        let log = self.dir.path().join(format!("app-{pod}.log"));
        let child = spawn_logged(&p.ns, None, argv, &log);
        p.procs.push(("app".into(), child));
        let ns = p.ns.clone();
        wait_for(
            Duration::from_secs(20),
            &format!("{argv:?} in {pod} to answer {ready_url}"),
            || {
                self.curl_from(&ns, &["-s", "-o", "/dev/null", "-m", "1", ready_url])
                    .status
                    .success()
            },
        );
    }

    /// Sends a signal (e.g. "TERM") to a pod's process ("proxy" or "app"); returns its pid.
    pub fn signal(&self, pod: &str, role: &str, sig: &str) -> u32 {
        let (_, child) = self.pods[pod]
            .procs
            .iter()
            .find(|(r, _)| r == role)
            .expect("process");
        let pid = child.id();
        must(&["kill", &format!("-{sig}"), &pid.to_string()]);
        pid
    }

    /// The pid of a pod's process ("proxy" or "app").
    pub fn pid(&self, pod: &str, role: &str) -> u32 {
        self.pods[pod]
            .procs
            .iter()
            .find(|(r, _)| r == role)
            .expect("process")
            .1
            .id()
    }

    /// Whether a pod's process has exited.
    pub fn exited(&mut self, pod: &str, role: &str) -> bool {
        let p = self.pods.get_mut(pod).expect("pod");
        let (_, child) = p
            .procs
            .iter_mut()
            .find(|(r, _)| r == role)
            .expect("process");
        child.try_wait().ok().flatten().is_some()
    }

    /// A pod's address.
    #[allow(dead_code)]
    pub fn ip_of(&self, pod: &str) -> String {
        self.pods[pod].ip.clone()
    }

    pub fn ns(&self, pod: &str) -> &str {
        &self.pods[pod].ns
    }

    pub fn curl_from(&self, ns: &str, args: &[&str]) -> Output {
        let mut argv = vec!["curl"];
        argv.extend_from_slice(args);
        ns_exec(ns, &argv)
    }

    /// `curl` in a pod; returns (status code or 0, body).
    pub fn curl(&self, pod: &str, url: &str) -> (u16, String) {
        let out = self.curl_from(
            self.ns(pod),
            &["-s", "-m", "10", "-w", "\n%{http_code}", url],
        );
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
        (code.trim().parse().unwrap_or(0), body.to_string())
    }

    pub fn exec(&self, pod: &str, argv: &[&str]) -> Output {
        ns_exec(self.ns(pod), argv)
    }

    /// Prometheus text from a pod's sidecar.
    pub fn metrics(&self, pod: &str) -> String {
        let out = self.curl_from(
            self.ns(pod),
            &["-s", "-m", "5", "http://127.0.0.1:15090/stats/prometheus"],
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// A sidecar's Envoy-style counters (`:15000/stats`).
    pub fn stats(&self, pod: &str) -> String {
        let out = self.curl_from(
            self.ns(pod),
            &["-s", "-m", "5", "http://127.0.0.1:15000/stats"],
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn debug(&self, path: &str) -> String {
        let url = format!("http://{}:15014{path}", self.cp.ip);
        let out = self.curl_from(&self.cp.ns, &["-s", "-m", "5", &url]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn write_config(&self, name: &str, yaml: &str) {
        let tmp = self.config_dir.join(format!(".{name}.tmp"));
        std::fs::write(&tmp, yaml).expect("write");
        std::fs::rename(&tmp, self.config_dir.join(name)).expect("rename");
    }

    /// Deletes a config file, as `kubectl delete -f` would the resources in it.
    pub fn remove_config(&self, name: &str) {
        std::fs::remove_file(self.config_dir.join(name)).expect("remove config file");
    }

    pub fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default()
    }
}

impl Drop for Mesh {
    fn drop(&mut self) {
        let mut pods: Vec<Pod> = std::mem::take(&mut self.pods).into_values().collect();
        pods.push(std::mem::replace(
            &mut self.cp,
            Pod {
                ns: String::new(),
                ip: String::new(),
                procs: Vec::new(),
            },
        ));
        for mut p in pods {
            for (_, c) in p.procs.iter_mut() {
                let _ = c.kill();
                let _ = c.wait();
            }
            if !p.ns.is_empty() {
                let _ = run(&["ip", "netns", "del", &p.ns]);
                let _ = std::fs::remove_dir_all(PathBuf::from("/etc/netns").join(&p.ns));
            }
        }
        let _ = run(&["ip", "netns", "del", &self.bridge_ns]);
        if std::thread::panicking() {
            // Keep the logs of a failed test visible.
            for entry in std::fs::read_dir(self.dir.path())
                .into_iter()
                .flatten()
                .flatten()
            {
                let path = entry.path();
                if path.extension().and_then(|e| e.to_str()) == Some("log") {
                    let text = std::fs::read_to_string(&path).unwrap_or_default();
                    let tail: Vec<&str> = text.lines().rev().take(40).collect();
                    eprintln!("===== {} (last 40 lines)", path.display());
                    for l in tail.into_iter().rev() {
                        eprintln!("{l}");
                    }
                }
            }
        }
    }
}

pub fn ns_exec(ns: &str, argv: &[&str]) -> Output {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", ns])
        .args(argv)
        .stdin(Stdio::null());
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {argv:?} in {ns}: {e}"))
}

fn spawn_logged(ns: &str, uid: Option<u32>, argv: &[&str], log: &Path) -> Child {
    spawn_logged_as(ns, uid, &[], argv, log)
}

fn spawn_logged_as(ns: &str, uid: Option<u32>, groups: &[u32], argv: &[&str], log: &Path) -> Child {
    spawn_logged_env(ns, uid, groups, argv, &[], log)
}

fn spawn_logged_env(
    ns: &str,
    uid: Option<u32>,
    groups: &[u32],
    argv: &[&str],
    env: &[(String, String)],
    log: &Path,
) -> Child {
    let file = std::fs::File::create(log).expect("log file");
    let err = file.try_clone().expect("log file");
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", ns]);
    if let Some(uid) = uid {
        cmd.args([
            "setpriv",
            "--reuid",
            &uid.to_string(),
            "--regid",
            &uid.to_string(),
        ]);
        if groups.is_empty() {
            cmd.arg("--clear-groups");
        } else {
            let list: Vec<String> = groups.iter().map(u32::to_string).collect();
            cmd.args(["--groups", &list.join(",")]);
        }
    }
    cmd.args(argv)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .env("WEFT_LOG", "info,weft_proxy=debug")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(file)
        .stderr(err);
    cmd.spawn()
        .unwrap_or_else(|e| panic!("cannot start {argv:?}: {e}"))
}

/// Polls `f` until it returns true, failing the test after `limit`.
pub fn wait_for(limit: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while start.elapsed() < limit {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("timed out after {limit:?} waiting for {what}");
}
