//! What a kubelet would do for the pods of these tests, done by the test itself: give a pod a
//! network namespace on the mesh bridge (its IP), bind it to the node, mount its volumes
//! (emptyDir and optional secrets as empty directories, ConfigMaps, the downward API, projected
//! ServiceAccount tokens asked of the API server with the volume's audience and lifetime),
//! expand `$(VAR)` in arguments from the container's env (fieldRefs read from the pod), run its
//! init containers to completion, then its containers in order, each one's postStart exec hook
//! to its end before the next (the `weft:test` image runs the `weft` under test, as the
//! container's `runAsUser`), and report it Running and, once its readiness probes answer,
//! Ready. Images other than Weft's are replaced by the stand-in the test names.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;

use crate::cluster::{Cluster, wait_for};
use crate::netns::{Mesh, WEFT, ns_exec};

/// The image `weft control --proxy-image` names in these tests: the `weft` binary under test.
pub const IMAGE: &str = "weft:test";

pub struct Kubelet {
    pub node: String,
    next_host: u8,
    /// The postStart hooks run: (pod/container, their output).
    pub hooks: Vec<(String, String)>,
}

/// A container's process: what to run and as whom.
struct Process {
    name: String,
    argv: Vec<String>,
    uid: Option<u32>,
    env: Vec<(String, String)>,
}

impl Kubelet {
    /// A kubelet for Node `node` (created here), giving pods the addresses from
    /// 10.77.<id>.`first_host` on.
    pub fn new(cluster: &Cluster, node: &str, first_host: u8) -> Kubelet {
        cluster.add_node(node, "region-a", "zone-a");
        Kubelet {
            node: node.to_string(),
            next_host: first_host,
            hooks: Vec::new(),
        }
    }

    /// Runs pod `pod` (as the API server has it, sidecar injected) of namespace `ns` in the
    /// mesh; `stand_in` gives the command for a container whose image is not Weft's (None:
    /// its own `command`). Returns once the pod is Ready.
    pub fn run(
        &mut self,
        cluster: &Cluster,
        mesh: &mut Mesh,
        ns: &str,
        pod: &Value,
        stand_in: &dyn Fn(&Value, &Value) -> Option<Vec<String>>,
    ) -> String {
        let name = pod["metadata"]["name"]
            .as_str()
            .expect("pod name")
            .to_string();
        let host = self.next_host;
        self.next_host += 1;
        let ip = mesh.add_bare_pod(&name, host);
        cluster.bind(ns, &name, &self.node);
        cluster.set_pod_status(ns, &name, &ip, false);

        let volumes = mount_volumes(cluster, mesh, ns, &name, pod);
        let spec = &pod["spec"];
        for c in spec["initContainers"].as_array().into_iter().flatten() {
            let p = process(c, pod, &ip, &volumes, stand_in);
            let argv: Vec<&str> = p.argv.iter().map(String::as_str).collect();
            let out = ns_exec(mesh.ns(&name), &argv);
            assert!(
                out.status.success(),
                "init container {} of {ns}/{name} ({argv:?}) failed: {}{}",
                p.name,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        for c in spec["containers"].as_array().into_iter().flatten() {
            let p = process(c, pod, &ip, &volumes, stand_in);
            let argv: Vec<&str> = p.argv.iter().map(String::as_str).collect();
            mesh.spawn_user(&name, &p.name, p.uid, &argv, &p.env);
            // A postStart exec hook runs to its end before the next container starts.
            let hook = &c["lifecycle"]["postStart"]["exec"]["command"];
            if let Some(cmd) = hook.as_array() {
                let mut argv: Vec<&str> = cmd.iter().filter_map(Value::as_str).collect();
                if argv.first() == Some(&"weft") && c["image"] == IMAGE {
                    argv[0] = WEFT;
                }
                let out = ns_exec(mesh.ns(&name), &argv);
                assert!(
                    out.status.success(),
                    "postStart hook {argv:?} of {ns}/{name} container {} failed: {}{}",
                    p.name,
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                );
                self.hooks.push((
                    format!("{name}/{}", p.name),
                    String::from_utf8_lossy(&out.stdout).into_owned(),
                ));
            }
        }
        // Readiness: each container's HTTP probe, from the node as a kubelet probes.
        for c in spec["containers"].as_array().into_iter().flatten() {
            let probe = &c["readinessProbe"]["httpGet"];
            if probe.is_null() {
                continue;
            }
            let url = format!(
                "http://{ip}:{}{}",
                probe["port"],
                probe["path"].as_str().unwrap_or("/")
            );
            wait_for(
                &format!("{ns}/{name} container {} ready at {url}", c["name"]),
                Duration::from_secs(30),
                || {
                    let out = ns_exec(&mesh.bridge_ns, &["curl", "-sf", "-m", "1", &url]);
                    if out.status.success() {
                        Ok(())
                    } else {
                        Err(mesh.log(&format!("{}-{name}.log", c["name"].as_str().unwrap_or(""))))
                    }
                },
            );
        }
        cluster.set_pod_status(ns, &name, &ip, true);
        name
    }
}

/// Mounts the pod's volumes as directories of its own; returns volume name → directory.
fn mount_volumes(
    cluster: &Cluster,
    mesh: &Mesh,
    ns: &str,
    pod_name: &str,
    pod: &Value,
) -> BTreeMap<String, String> {
    let mut dirs = BTreeMap::new();
    let root = mesh.dir.path().join("pods").join(pod_name);
    let sa = pod["spec"]["serviceAccountName"]
        .as_str()
        .unwrap_or("default");
    for v in pod["spec"]["volumes"].as_array().into_iter().flatten() {
        let vname = v["name"].as_str().expect("volume name");
        let dir = root.join(vname);
        std::fs::create_dir_all(&dir).expect("volume directory");
        if !v["projected"].is_null() {
            for source in v["projected"]["sources"].as_array().into_iter().flatten() {
                let t = &source["serviceAccountToken"];
                if !t.is_null() {
                    let duration = format!("{}s", t["expirationSeconds"].as_u64().unwrap_or(3600));
                    let mut args = vec!["-n", ns, "create", "token", sa, "--duration", &duration];
                    if let Some(aud) = t["audience"].as_str() {
                        args.extend(["--audience", aud]);
                    }
                    let token = cluster.kubectl(&args);
                    let file = dir.join(t["path"].as_str().expect("token path"));
                    std::fs::write(&file, token.trim()).expect("write token");
                } else if !source["configMap"].is_null() {
                    config_map(cluster, ns, &source["configMap"], &dir);
                } else if !source["downwardAPI"].is_null() {
                    for item in source["downwardAPI"]["items"]
                        .as_array()
                        .into_iter()
                        .flatten()
                    {
                        let path = item["fieldRef"]["fieldPath"].as_str().expect("fieldPath");
                        let value = pod
                            .pointer(&format!("/{}", path.replace('.', "/")))
                            .and_then(Value::as_str)
                            .unwrap_or_else(|| panic!("no {path} in the pod"));
                        std::fs::write(dir.join(item["path"].as_str().expect("path")), value)
                            .expect("write downward API file");
                    }
                } else {
                    panic!("the test kubelet cannot mount projected source {source}");
                }
            }
        } else if !v["configMap"].is_null() {
            config_map(cluster, ns, &v["configMap"], &dir);
        } else {
            assert!(
                !v["emptyDir"].is_null() || v["secret"]["optional"] == true,
                "the test kubelet mounts emptyDir, ConfigMaps, optional secrets and projected volumes only: {v}"
            );
        }
        // Readable by every container's user (the sidecar runs as 1337).
        let _ = std::process::Command::new("chmod")
            .args(["-R", "a+rX"])
            .arg(&root)
            .status();
        dirs.insert(vname.to_string(), dir.to_string_lossy().into_owned());
    }
    dirs
}

/// Writes a ConfigMap's keys (its `items` when listed) into `dir`; as a kubelet, waits for a
/// ConfigMap that is not there yet (the CA root is published into a new namespace a moment
/// after it appears).
fn config_map(cluster: &Cluster, ns: &str, source: &Value, dir: &std::path::Path) {
    let name = source["name"].as_str().expect("ConfigMap name");
    let mut cm = Value::Null;
    wait_for(
        &format!("ConfigMap {ns}/{name}"),
        Duration::from_secs(30),
        || {
            let out =
                cluster.try_kubectl(&["-n", ns, "get", "configmap", name, "-o", "json"], "")?;
            cm = serde_json::from_str(&out).map_err(|e| e.to_string())?;
            Ok(())
        },
    );
    let data = cm["data"].as_object().cloned().unwrap_or_default();
    let items: Vec<(String, String)> = match source["items"].as_array() {
        Some(items) => items
            .iter()
            .map(|i| {
                (
                    i["key"].as_str().unwrap_or_default().to_string(),
                    i["path"].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect(),
        None => data.keys().map(|k| (k.clone(), k.clone())).collect(),
    };
    for (key, path) in items {
        let value = data[&key].as_str().expect("ConfigMap value");
        std::fs::write(dir.join(path), value).expect("write ConfigMap file");
    }
}

/// A container's command line: env from the pod (fieldRefs) and literal values, `$(VAR)`
/// expanded, mount paths mapped to the volumes' directories.
fn process(
    c: &Value,
    pod: &Value,
    ip: &str,
    volumes: &BTreeMap<String, String>,
    stand_in: &dyn Fn(&Value, &Value) -> Option<Vec<String>>,
) -> Process {
    let name = c["name"].as_str().expect("container name").to_string();
    let mut env = Vec::new();
    for e in c["env"].as_array().into_iter().flatten() {
        let key = e["name"].as_str().expect("env name").to_string();
        let value = if let Some(v) = e["value"].as_str() {
            v.to_string()
        } else {
            match e["valueFrom"]["fieldRef"]["fieldPath"].as_str() {
                Some("status.podIP") => ip.to_string(),
                Some(path) => {
                    let pointer = format!("/{}", path.replace('.', "/"));
                    pod.pointer(&pointer)
                        .and_then(Value::as_str)
                        .unwrap_or_else(|| panic!("{name}: no {path} in the pod"))
                        .to_string()
                }
                None => panic!("{name}: the test kubelet does not resolve env {e}"),
            }
        };
        env.push((key, value));
    }
    let expand = |s: &str| {
        let mut s = s.to_string();
        for (k, v) in &env {
            s = s.replace(&format!("$({k})"), v);
        }
        for m in c["volumeMounts"].as_array().into_iter().flatten() {
            let (Some(path), Some(vol)) = (m["mountPath"].as_str(), m["name"].as_str()) else {
                continue;
            };
            if let (Some(rest), Some(dir)) = (s.strip_prefix(path), volumes.get(vol))
                && (rest.is_empty() || rest.starts_with('/'))
            {
                s = format!("{dir}{rest}");
            }
        }
        s
    };
    let strings = |v: &Value| -> Vec<String> {
        v.as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .map(expand)
            .collect()
    };
    let argv = if c["image"] == IMAGE {
        let mut argv = vec![WEFT.to_string()];
        argv.extend(strings(&c["args"]));
        argv
    } else if let Some(argv) = stand_in(pod, c) {
        argv
    } else {
        let mut argv = strings(&c["command"]);
        argv.extend(strings(&c["args"]));
        assert!(!argv.is_empty(), "{name}: no command and no stand-in");
        argv
    };
    let uid = c["securityContext"]["runAsUser"]
        .as_u64()
        .and_then(|u| u32::try_from(u).ok())
        .filter(|&u| u != 0);
    Process {
        name,
        argv,
        uid,
        env,
    }
}
