//! What a running `weft up` has created, kept in `/run/weft/up.json` so that `weft down`,
//! `weft status` and `weft exec` find it, and so that a later `weft up` can remove what a
//! crashed (or `kill -9`ed) one left behind.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use rustix::process::{Pid, Signal};
use serde::{Deserialize, Serialize};

use crate::error::UpError;
use crate::net;

pub const STATE_DIR: &str = "/run/weft";
pub const STATE_FILE: &str = "/run/weft/up.json";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PodState {
    pub name: String,
    pub ns: String,
    pub ip: Ipv4Addr,
    pub sidecar: bool,
    pub identity: Option<String>,
    /// Process groups of its proxy and app.
    pub proxy_group: Option<i32>,
    pub app_group: Option<i32>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct State {
    /// The `weft up` process.
    pub pid: i32,
    pub dir: PathBuf,
    pub node_ip: Ipv4Addr,
    pub log_dir: PathBuf,
    pub pods: Vec<PodState>,
    /// Every namespace created (pods and the node).
    pub namespaces: Vec<String>,
    /// Process groups of the processes started (control plane, proxies, apps).
    pub groups: Vec<i32>,
}

impl State {
    pub fn path() -> PathBuf {
        PathBuf::from(STATE_FILE)
    }

    pub fn load() -> Result<Option<State>, UpError> {
        match std::fs::read_to_string(STATE_FILE) {
            Ok(text) => Ok(serde_json::from_str(&text).ok()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(UpError::Read {
                path: Self::path(),
                source,
            }),
        }
    }

    pub fn save(&self) -> Result<(), UpError> {
        std::fs::create_dir_all(STATE_DIR)?;
        let tmp = Path::new(STATE_DIR).join(".up.json.tmp");
        std::fs::write(
            &tmp,
            serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?,
        )?;
        std::fs::rename(&tmp, STATE_FILE)?;
        Ok(())
    }

    pub fn pod(&self, name: &str) -> Result<&PodState, UpError> {
        self.pods
            .iter()
            .find(|p| p.name == name)
            .ok_or_else(|| UpError::NoPod(name.to_string()))
    }

    /// Whether the `weft up` that wrote this state is still running.
    pub fn owner_alive(&self) -> bool {
        is_weft(self.pid)
    }

    /// Stops every recorded process group and removes every recorded namespace and hosts
    /// file, then the state file. Safe to run twice.
    pub fn clean(&self) {
        for &g in &self.groups {
            if let Some(pid) = Pid::from_raw(g) {
                let _ = rustix::process::kill_process_group(pid, Signal::KILL);
            }
        }
        for ns in &self.namespaces {
            net::delete(ns);
        }
        // SPIRE's data (keys, datastore) belongs to this run only.
        let _ = std::fs::remove_dir_all(crate::spire::SPIRE_DIR);
        let _ = std::fs::remove_file(STATE_FILE);
    }
}

/// True when process (group leader) `pid` is alive.
pub fn alive(pid: i32) -> bool {
    Pid::from_raw(pid).is_some_and(|p| rustix::process::test_kill_process(p).is_ok())
}

/// True when `pid` is a live `weft` process.
pub fn is_weft(pid: i32) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|c| {
            c.split(|b| *b == 0)
                .next()
                .is_some_and(|argv0| argv0.ends_with(b"weft"))
        })
        .unwrap_or(false)
}

/// Removes what a previous `weft up` left behind, or refuses if it is still running.
pub fn clear_stale() -> Result<(), UpError> {
    let Some(old) = State::load()? else {
        // No state file: still remove namespaces that only weft up creates.
        for ns in net::namespaces()
            .iter()
            .filter(|n| n.as_str() == net::NODE_NS)
        {
            net::delete(ns);
        }
        return Ok(());
    };
    if old.pid != std::process::id() as i32 && old.owner_alive() {
        return Err(UpError::Running {
            pid: old.pid,
            dir: old.dir.clone(),
        });
    }
    tracing::info!(
        pid = old.pid,
        "removing what a previous weft up left behind"
    );
    old.clean();
    Ok(())
}
