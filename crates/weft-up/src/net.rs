//! The pods' network: a node namespace holding the bridge and the control plane, and one
//! namespace per pod with a veth on the bridge, loopback up and a default route through the
//! node. Nothing is created in the host's own namespace; `/etc/netns/<ns>/hosts` gives each pod
//! the service names (`ip netns exec` bind-mounts it over `/etc/hosts`).

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use crate::error::UpError;

/// The namespace holding the bridge and the control plane.
pub const NODE_NS: &str = "weft-node";
const BRIDGE: &str = "weft0";

/// The network namespace of a pod.
pub fn pod_ns(pod: &str) -> String {
    format!("weft-{pod}")
}

pub fn run(args: &[&str]) -> Result<String, UpError> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| UpError::Command {
            cmd: args.join(" "),
            reason: format!("{e}; is iproute2 installed (apt-get install iproute2)?"),
        })?;
    if !out.status.success() {
        return Err(UpError::Command {
            cmd: args.join(" "),
            reason: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The network namespaces that exist now.
pub fn namespaces() -> Vec<String> {
    run(&["ip", "netns", "list"])
        .map(|s| {
            s.lines()
                .filter_map(|l| l.split_whitespace().next())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

fn hosts_dir(ns: &str) -> PathBuf {
    PathBuf::from("/etc/netns").join(ns)
}

/// The hosts file the processes of namespace `ns` see as `/etc/hosts`.
pub fn hosts_path(ns: &str) -> PathBuf {
    hosts_dir(ns).join("hosts")
}

/// Creates the node namespace with the bridge at `node_ip`.
pub fn create_node(node_ip: Ipv4Addr, prefix: u8) -> Result<(), UpError> {
    run(&["ip", "netns", "add", NODE_NS])?;
    run(&["ip", "-n", NODE_NS, "link", "set", "lo", "up"])?;
    run(&["ip", "-n", NODE_NS, "link", "add", BRIDGE, "type", "bridge"])?;
    run(&[
        "ip",
        "-n",
        NODE_NS,
        "addr",
        "add",
        &format!("{node_ip}/{prefix}"),
        "dev",
        BRIDGE,
    ])?;
    run(&["ip", "-n", NODE_NS, "link", "set", BRIDGE, "up"])?;
    std::fs::create_dir_all(hosts_dir(NODE_NS))?;
    Ok(())
}

/// Creates a pod's namespace, its veth on the bridge (index `n`), address and default route.
pub fn create_pod(
    pod: &str,
    n: usize,
    ip: Ipv4Addr,
    prefix: u8,
    gateway: Ipv4Addr,
) -> Result<(), UpError> {
    let ns = pod_ns(pod);
    let veth = format!("wv{n}");
    run(&["ip", "netns", "add", &ns])?;
    run(&["ip", "-n", &ns, "link", "set", "lo", "up"])?;
    // An app that opens a connection per call (bookinfo's productpage does) leaves a socket in
    // TIME_WAIT per call; at a few hundred calls a second the pod runs out of ports within a
    // minute and each connect() then searches for one. Reusing TIME_WAIT ports for outgoing
    // connections (safe with TCP timestamps) keeps it going.
    run(&[
        "ip",
        "netns",
        "exec",
        &ns,
        "sh",
        "-c",
        "echo 1 > /proc/sys/net/ipv4/tcp_tw_reuse",
    ])?;
    run(&[
        "ip", "-n", NODE_NS, "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns",
        &ns,
    ])?;
    run(&["ip", "-n", NODE_NS, "link", "set", &veth, "master", BRIDGE])?;
    run(&["ip", "-n", NODE_NS, "link", "set", &veth, "up"])?;
    run(&[
        "ip",
        "-n",
        &ns,
        "addr",
        "add",
        &format!("{ip}/{prefix}"),
        "dev",
        "eth0",
    ])?;
    run(&["ip", "-n", &ns, "link", "set", "eth0", "up"])?;
    run(&[
        "ip",
        "-n",
        &ns,
        "route",
        "add",
        "default",
        "via",
        &gateway.to_string(),
    ])?;
    std::fs::create_dir_all(hosts_dir(&ns))?;
    Ok(())
}

/// Writes a namespace's hosts file (atomically).
pub fn write_hosts(ns: &str, text: &str) -> Result<(), UpError> {
    let dir = hosts_dir(ns);
    std::fs::create_dir_all(&dir)?;
    let tmp = dir.join(".hosts.tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, dir.join("hosts"))?;
    Ok(())
}

/// Removes a namespace (its veth goes with it) and its hosts file; missing ones are fine.
pub fn delete(ns: &str) {
    if namespaces().iter().any(|n| n == ns)
        && let Err(e) = run(&["ip", "netns", "del", ns])
    {
        tracing::warn!(ns, error = %e, "cannot delete the namespace");
    }
    let _ = std::fs::remove_dir_all(hosts_dir(ns));
}

/// The hosts file of a pod in `namespace`: every service's VIP with its FQDN, `name.ns`,
/// `name.ns.svc` and, for services in the pod's own namespace, the short name.
pub fn hosts_file(registry: &weft_control::registry::Registry, namespace: &str) -> String {
    let mut out = String::from("127.0.0.1 localhost\n::1 localhost\n");
    for svc in &registry.services {
        let Some(vip) = svc.vips.first() else {
            continue;
        };
        let names = svc.names(namespace);
        out.push_str(&format!("{vip} {}\n", names.join(" ")));
    }
    out
}
