//! A real Kubernetes control plane for a test (scripts/kube-cluster: etcd, kube-apiserver and
//! kube-controller-manager v1.36.3 on loopback, built by scripts/peers), kubectl against it,
//! and `weft control` reading it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::ports::free_port;

const WEFT: &str = env!("CARGO_BIN_EXE_weft");
const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
/// Istio's own samples, beside the repository.
pub const SAMPLES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/istio/samples");

fn peer(var: &str) -> String {
    let path = std::env::var(var).unwrap_or_default();
    assert!(
        !path.is_empty() && Path::new(&path).is_file(),
        "{var}={path:?}: run the tests with ./scripts/test, which builds Kubernetes v1.36.3 \
         (scripts/peers, tools/kube) and exports {var}"
    );
    path
}

pub struct Cluster {
    dir: tempfile::TempDir,
    pub kubeconfig: PathBuf,
    /// Whether dropping it stops the cluster (not for a view with other credentials).
    owner: bool,
    /// The network namespace it runs in (its loopback), with kubectl and `weft control`;
    /// None for the host's.
    pub netns: Option<String>,
}

/// `program`, run in network namespace `netns` when there is one.
fn command_in(netns: Option<&str>, program: &str) -> Command {
    match netns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns, program]);
            c
        }
        None => Command::new(program),
    }
}

impl Cluster {
    pub fn up() -> Cluster {
        Cluster::up_in(None)
    }

    /// A cluster on the loopback of network namespace `netns` (the pods' node in the tests
    /// that run pods: their gateway reaches it there).
    pub fn up_in(netns: Option<&str>) -> Cluster {
        for v in [
            "WEFT_ETCD",
            "WEFT_KUBE_APISERVER",
            "WEFT_KUBE_CONTROLLER_MANAGER",
            "WEFT_KUBECTL",
        ] {
            peer(v);
        }
        let dir = tempfile::tempdir().expect("temp dir");
        let out = command_in(netns, &format!("{ROOT}/scripts/kube-cluster"))
            .arg("up")
            .arg(dir.path())
            .output()
            .expect("run scripts/kube-cluster");
        assert!(
            out.status.success(),
            "scripts/kube-cluster up failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        Cluster {
            kubeconfig: dir.path().join("kubeconfig"),
            dir,
            owner: true,
            netns: netns.map(str::to_string),
        }
    }

    /// The same cluster seen through another kubeconfig (other credentials).
    pub fn with_kubeconfig(cluster: &Cluster, kubeconfig: &str) -> Cluster {
        let dir = tempfile::tempdir_in(cluster.dir()).expect("temp dir");
        let path = dir.path().join("kubeconfig");
        std::fs::write(&path, kubeconfig).expect("write kubeconfig");
        Cluster {
            kubeconfig: path,
            dir,
            owner: false,
            netns: cluster.netns.clone(),
        }
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// `program`, run where the cluster runs.
    pub fn command(&self, program: &str) -> Command {
        command_in(self.netns.as_deref(), program)
    }

    /// Runs kubectl with `stdin`; Err(stderr) when it fails.
    pub fn try_kubectl(&self, args: &[&str], stdin: &str) -> Result<String, String> {
        let mut child = self
            .command(&peer("WEFT_KUBECTL"))
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("kubectl");
        use std::io::Write;
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(stdin.as_bytes())
            .expect("write kubectl's stdin");
        let out = child.wait_with_output().expect("kubectl output");
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    pub fn kubectl(&self, args: &[&str]) -> String {
        self.kubectl_in(args, "")
    }

    pub fn kubectl_in(&self, args: &[&str], stdin: &str) -> String {
        self.try_kubectl(args, stdin)
            .unwrap_or_else(|e| panic!("kubectl {args:?} failed: {e}"))
    }

    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut a = args.to_vec();
        a.extend(["-o", "json"]);
        serde_json::from_str(&self.kubectl(&a)).expect("kubectl JSON")
    }

    /// Applies Weft's Istio CRDs and waits until the API server serves them.
    pub fn install_crds(&self) {
        let crds = self.dir().join("crds.yaml");
        std::fs::write(&crds, weft_kube::install::crds()).expect("write CRDs");
        self.kubectl(&["apply", "-f", crds.to_str().expect("path")]);
        self.wait_crds_established();
    }

    pub fn wait_crds_established(&self) {
        self.kubectl(&[
            "wait",
            "--for",
            "condition=Established",
            "crd",
            "--all",
            "--timeout=60s",
        ]);
    }

    /// Stops kube-apiserver and starts it again (same flags, ports and etcd); returns once it
    /// is ready.
    pub fn restart_apiserver(&self) {
        let out = self
            .command(&format!("{ROOT}/scripts/kube-cluster"))
            .arg("restart-apiserver")
            .arg(self.dir.path())
            .output()
            .expect("run scripts/kube-cluster");
        assert!(
            out.status.success(),
            "scripts/kube-cluster restart-apiserver failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Creates a Node object (no kubelet behind it) in `region`/`zone`.
    pub fn add_node(&self, name: &str, region: &str, zone: &str) {
        self.kubectl_in(
            &["apply", "-f", "-"],
            &format!(
                "apiVersion: v1
kind: Node
metadata:
  name: {name}
  labels: {{topology.kubernetes.io/region: {region}, topology.kubernetes.io/zone: {zone}}}
"
            ),
        );
    }

    /// Binds a pod to a node, as the scheduler does.
    pub fn bind(&self, ns: &str, pod: &str, node: &str) {
        self.kubectl_in(
            &["create", "-f", "-"],
            &format!(
                "apiVersion: v1
kind: Binding
metadata: {{name: {pod}, namespace: {ns}}}
target: {{apiVersion: v1, kind: Node, name: {node}}}
"
            ),
        );
    }

    /// Marks a pod as a kubelet would once its containers run: Running, `ip`, Ready (or not).
    pub fn set_pod_status(&self, ns: &str, pod: &str, ip: &str, ready: bool) {
        let now = "2026-01-01T00:00:00Z";
        let patch = serde_json::json!({"status": {
            "phase": "Running",
            "podIP": ip,
            "podIPs": [{"ip": ip}],
            "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }, "lastTransitionTime": now}],
        }});
        self.kubectl(&[
            "-n",
            ns,
            "patch",
            "pod",
            pod,
            "--subresource=status",
            "--type=merge",
            "-p",
            &patch.to_string(),
        ]);
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if !self.owner {
            return;
        }
        let _ = self
            .command(&format!("{ROOT}/scripts/kube-cluster"))
            .arg("down")
            .arg(self.dir.path())
            .status();
    }
}

/// Polls `f` until it says Ok; after `timeout`, fails naming `what` and `f`'s last Err.
pub fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> Result<(), String>) {
    let start = Instant::now();
    loop {
        match f() {
            Ok(()) => return,
            Err(last) => assert!(
                start.elapsed() < timeout,
                "{what}: not within {timeout:?}; last: {last}"
            ),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `weft control --kubeconfig` on loopback ports (in a cluster's own network namespace, on
/// Istio's ports at every address of it).
pub struct Control {
    child: Child,
    pub monitoring: u16,
    /// The plaintext xDS and CA port.
    pub xds: u16,
    log: PathBuf,
    netns: Option<String>,
}

impl Control {
    pub fn start(cluster: &Cluster) -> Control {
        Control::start_with(cluster, &["--webhook-addr", ""])
    }

    /// With more flags.
    pub fn start_with(cluster: &Cluster, extra: &[&str]) -> Control {
        Control::start_in(cluster, "weft-control", extra)
    }

    /// With its state in directory `state` of the cluster's (a fresh one: a new replica).
    pub fn start_in(cluster: &Cluster, state: &str, extra: &[&str]) -> Control {
        let state = cluster.dir().join(state);
        let log = state.with_extension("log");
        let (ip, monitoring, xds, tls) = match cluster.netns {
            Some(_) => ("0.0.0.0", 15014, 15010, 15012),
            None => ("127.0.0.1", free_port(), free_port(), free_port()),
        };
        let child = cluster
            .command(WEFT)
            .arg("control")
            .arg("--kubeconfig")
            .arg(&cluster.kubeconfig)
            .arg("--state-dir")
            .arg(&state)
            .args(["--xds-addr", &format!("{ip}:{xds}")])
            .args(["--xds-tls-addr", &format!("{ip}:{tls}")])
            .args(["--monitoring-addr", &format!("{ip}:{monitoring}")])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("weft control");
        Control {
            child,
            monitoring,
            xds,
            log,
            netns: cluster.netns.clone(),
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// GET of a debug path, parsed as JSON; None while the port is not up.
    pub fn debug(&self, path: &str) -> Option<serde_json::Value> {
        let out = command_in(self.netns.as_deref(), "curl")
            .args(["-sf", "--max-time", "5"])
            .arg(format!("http://127.0.0.1:{}{path}", self.monitoring))
            .output()
            .ok()?;
        if !out.status.success() {
            return None;
        }
        serde_json::from_slice(&out.stdout).ok()
    }

    /// Polls until `f` holds of `path`'s JSON; returns how long it took.
    pub fn wait(
        &self,
        path: &str,
        what: &str,
        timeout: Duration,
        f: impl Fn(&serde_json::Value) -> bool,
    ) -> Duration {
        let start = Instant::now();
        loop {
            if let Some(v) = self.debug(path)
                && f(&v)
            {
                return start.elapsed();
            }
            assert!(
                start.elapsed() < timeout,
                "{what}: not seen at {path} within {timeout:?}; now {}\ncontrol plane log:\n{}",
                self.debug(path).map(|v| v.to_string()).unwrap_or_default(),
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Control {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
