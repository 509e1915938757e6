//! `weft up`'s SPIRE switch: SPIRE issues every sidecar's identity, as in Istio 1.14 with
//! SPIRE as the workload identity provider.
//!
//! ```yaml
//! spire:
//!   enabled: true
//!   binaries: {server: /usr/local/bin/spire-server, agent: /usr/local/bin/spire-agent}   # optional
//! ```
//!
//! A SPIRE server and agent run in the node namespace (server on its loopback, join-token
//! node attestation, the unix workload attestor; data and sockets in `/run/weft/spire`).
//! Every pod with a sidecar gets a registration entry `spiffe://<trust domain>/ns/<ns>/sa/<sa>`
//! selected by uid 1337 and a supplementary group of its own, which its proxy runs with; the
//! proxy takes its certificate from the agent's socket over Envoy's SDS API. The control
//! plane's CA issues nothing. Binaries: the `binaries:` entries, else `$WEFT_SPIRE_SERVER` /
//! `$WEFT_SPIRE_AGENT` (scripts/peers' output), else `spire-server` / `spire-agent` on PATH.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde::Deserialize;

use crate::error::UpError;
use crate::procs::{Proc, Role, find_binary};

/// Where SPIRE's configuration, data and sockets live while the mesh runs.
pub const SPIRE_DIR: &str = "/run/weft/spire";
/// The first supplementary group given to the sidecars (one per pod, upwards).
pub const GID_BASE: u32 = 30_000;
/// The agent's alias, parent of every workload entry.
const NODE_ALIAS: &str = "weft-up/node";

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SpireFile {
    #[serde(default)]
    pub enabled: bool,
    #[serde(default)]
    pub binaries: SpireBinaries,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SpireBinaries {
    pub server: Option<PathBuf>,
    pub agent: Option<PathBuf>,
}

/// The SPIRE programs to run.
#[derive(Debug, Clone, PartialEq)]
pub struct Binaries {
    pub server: PathBuf,
    pub agent: PathBuf,
}

/// The binaries when the switch is on; an error saying what to install when they are missing
/// (the mesh would otherwise run on the control plane's CA, which is not what was asked).
pub fn resolve(s: &SpireFile, file: &Path) -> Result<Option<Binaries>, UpError> {
    if !s.enabled {
        return Ok(None);
    }
    let mut found = Vec::new();
    for (key, given, var, name) in [
        (
            "server",
            s.binaries.server.as_ref(),
            "WEFT_SPIRE_SERVER",
            "spire-server",
        ),
        (
            "agent",
            s.binaries.agent.as_ref(),
            "WEFT_SPIRE_AGENT",
            "spire-agent",
        ),
    ] {
        let field = format!("spire.binaries.{key}");
        let path = find_binary(given, Some(var), &[name], file, &field)?.ok_or_else(|| {
            UpError::Spec {
                file: file.to_path_buf(),
                field: "spire.enabled".into(),
                message: format!(
                    "SPIRE is switched on but {name} is not installed (looked for ${var}, then \
                     {name} on PATH). Install SPIRE v1.13.3 (https://spiffe.io/downloads/), or build \
                     it with scripts/peers in Weft's source tree and export what it prints, or set \
                     {field}; or switch SPIRE off to use the control plane's CA"
                ),
            }
        })?;
        found.push(path);
    }
    let agent = found.pop().unwrap_or_default();
    let server = found.pop().unwrap_or_default();
    Ok(Some(Binaries { server, agent }))
}

/// A running SPIRE server and agent.
pub struct Spire {
    bins: Binaries,
    dir: PathBuf,
    trust_domain: String,
    agent_id: String,
}

fn cli(program: &Path, args: &[&str]) -> Result<String, UpError> {
    let shown = format!("{} {}", program.display(), args.join(" "));
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| UpError::Command {
            cmd: shown.clone(),
            reason: e.to_string(),
        })?;
    if !out.status.success() {
        return Err(UpError::Command {
            cmd: shown,
            reason: format!(
                "{} {}",
                String::from_utf8_lossy(&out.stdout).trim(),
                String::from_utf8_lossy(&out.stderr).trim()
            )
            .trim()
            .to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn wait_healthy(program: &Path, socket: &Path, what: &str, log: &Path) -> Result<(), UpError> {
    let socket = socket.to_string_lossy();
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if cli(program, &["healthcheck", "-socketPath", &socket]).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    Err(UpError::Timeout {
        what: what.into(),
        secs: 30,
        log: log.to_path_buf(),
    })
}

impl Spire {
    /// Starts the server and the agent in network namespace `ns`; their processes go to `procs`.
    pub fn start(
        bins: &Binaries,
        trust_domain: &str,
        ns: &str,
        log_dir: &Path,
        procs: &mut Vec<Proc>,
    ) -> Result<Spire, UpError> {
        let dir = PathBuf::from(SPIRE_DIR);
        if dir.exists() {
            std::fs::remove_dir_all(&dir)?;
        }
        // The sidecars (uid 1337) reach the agent's socket in here; the server's admin socket
        // and both data directories (keys, datastore) are root's alone.
        for (sub, mode) in [("", 0o755), ("server", 0o700), ("agent", 0o700)] {
            let path = dir.join(sub);
            std::fs::create_dir_all(&path)?;
            rustix::fs::chmod(&path, rustix::fs::Mode::from_raw_mode(mode))
                .map_err(std::io::Error::from)?;
        }
        let d = dir.display();
        let port = 8081;
        std::fs::write(
            dir.join("server").join("server.conf"),
            format!(
                "server {{\n  bind_address = \"127.0.0.1\"\n  bind_port = \"{port}\"\n  socket_path = \"{d}/server/api.sock\"\n  trust_domain = \"{trust_domain}\"\n  data_dir = \"{d}/server/data\"\n  log_level = \"INFO\"\n}}\nplugins {{\n  DataStore \"sql\" {{\n    plugin_data {{\n      database_type = \"sqlite3\"\n      connection_string = \"{d}/server/data/datastore.sqlite3\"\n    }}\n  }}\n  NodeAttestor \"join_token\" {{\n    plugin_data {{}}\n  }}\n  KeyManager \"memory\" {{\n    plugin_data {{}}\n  }}\n}}\n"
            ),
        )?;
        let server_log = log_dir.join("spire-server.log");
        let server = Proc::spawn(
            "node",
            Role::SpireServer,
            ns,
            None,
            &[
                bins.server.to_string_lossy().into_owned(),
                "run".into(),
                "-config".into(),
                format!("{d}/server/server.conf"),
            ],
            &BTreeMap::new(),
            &server_log,
        )?;
        procs.push(server);
        let server_socket = dir.join("server").join("api.sock");
        wait_healthy(
            &bins.server,
            &server_socket,
            "the SPIRE server",
            &server_log,
        )?;
        let spire = Spire {
            bins: bins.clone(),
            dir: dir.clone(),
            trust_domain: trust_domain.to_string(),
            agent_id: format!("spiffe://{trust_domain}/{NODE_ALIAS}"),
        };
        let bundle = spire.server(&["bundle", "show"])?;
        std::fs::write(dir.join("bundle.pem"), bundle)?;
        let out = spire.server(&["token", "generate", "-spiffeID", &spire.agent_id])?;
        let token = out
            .trim()
            .strip_prefix("Token:")
            .map(str::trim)
            .ok_or_else(|| UpError::Command {
                cmd: "spire-server token generate".into(),
                reason: format!("unexpected output {out:?}"),
            })?
            .to_string();
        std::fs::write(
            dir.join("agent").join("agent.conf"),
            format!(
                "agent {{\n  data_dir = \"{d}/agent/data\"\n  log_level = \"INFO\"\n  server_address = \"127.0.0.1\"\n  server_port = \"{port}\"\n  socket_path = \"{d}/agent.sock\"\n  trust_bundle_path = \"{d}/bundle.pem\"\n  trust_domain = \"{trust_domain}\"\n}}\nplugins {{\n  NodeAttestor \"join_token\" {{\n    plugin_data {{}}\n  }}\n  KeyManager \"memory\" {{\n    plugin_data {{}}\n  }}\n  WorkloadAttestor \"unix\" {{\n    plugin_data {{}}\n  }}\n}}\n"
            ),
        )?;
        let agent_log = log_dir.join("spire-agent.log");
        let agent = Proc::spawn(
            "node",
            Role::SpireAgent,
            ns,
            None,
            &[
                bins.agent.to_string_lossy().into_owned(),
                "run".into(),
                "-config".into(),
                format!("{d}/agent/agent.conf"),
                "-joinToken".into(),
                token,
            ],
            &BTreeMap::new(),
            &agent_log,
        )?;
        procs.push(agent);
        wait_healthy(&bins.agent, &spire.socket(), "the SPIRE agent", &agent_log)?;
        Ok(spire)
    }

    /// The agent's Workload API and SDS socket.
    pub fn socket(&self) -> PathBuf {
        self.dir.join("agent.sock")
    }

    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }

    fn server(&self, args: &[&str]) -> Result<String, UpError> {
        let socket = self
            .dir
            .join("server")
            .join("api.sock")
            .to_string_lossy()
            .into_owned();
        let mut all: Vec<&str> = args[..2.min(args.len())].to_vec();
        all.extend(["-socketPath", &socket]);
        all.extend(&args[2.min(args.len())..]);
        cli(&self.bins.server, &all)
    }

    /// Registers pod `name`: its proxy runs as uid 1337 with supplementary group `gid`.
    pub fn register(
        &self,
        name: &str,
        namespace: &str,
        sa: &str,
        gid: u32,
    ) -> Result<String, UpError> {
        let id = format!("spiffe://{}/ns/{namespace}/sa/{sa}", self.trust_domain);
        let gid = format!("unix:supplementary_gid:{gid}");
        self.server(&[
            "entry",
            "create",
            "-entryID",
            name,
            "-parentID",
            &self.agent_id,
            "-spiffeID",
            &id,
            "-selector",
            "unix:uid:1337",
            "-selector",
            &gid,
        ])?;
        Ok(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn switch_and_binaries() {
        let file = Path::new("/x/weft.yaml");
        assert_eq!(resolve(&SpireFile::default(), file).unwrap(), None);
        let dir = tempfile::tempdir().unwrap();
        let missing = SpireFile {
            enabled: true,
            binaries: SpireBinaries {
                server: Some(dir.path().join("nope")),
                agent: None,
            },
        };
        let err = resolve(&missing, file).unwrap_err().to_string();
        assert!(
            err.contains("spire.binaries.server") && err.contains("not an executable"),
            "{err}"
        );
        let exe = |name: &str| {
            let p = dir.path().join(name);
            std::fs::write(&p, "#!/bin/sh\n").unwrap();
            rustix::fs::chmod(&p, rustix::fs::Mode::from_raw_mode(0o755)).unwrap();
            p
        };
        let given = SpireFile {
            enabled: true,
            binaries: SpireBinaries {
                server: Some(exe("s")),
                agent: Some(exe("a")),
            },
        };
        assert_eq!(
            resolve(&given, file).unwrap(),
            Some(Binaries {
                server: dir.path().join("s"),
                agent: dir.path().join("a"),
            })
        );
    }
}
