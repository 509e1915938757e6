//! Errors of `weft up`.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum UpError {
    #[error(
        "weft up needs root: it creates network namespaces, veth pairs and a bridge (CAP_NET_ADMIN), installs \
         iptables capture rules in each pod, and runs each sidecar as uid 1337. Run it with sudo."
    )]
    NotRoot,
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: {field}: {message}", file.display())]
    Spec {
        file: PathBuf,
        field: String,
        message: String,
    },
    #[error("the directory has invalid resources; fix them and run again:\n{0}")]
    Invalid(String),
    #[error("{cmd} failed: {reason}")]
    Command { cmd: String, reason: String },
    #[error("another weft up is running (pid {pid}, directory {dir}); stop it with `weft down`")]
    Running { pid: i32, dir: PathBuf },
    #[error("no mesh is running (no {0}); start one with `weft up DIR`")]
    NotRunning(PathBuf),
    #[error("no pod named {0:?}; `weft status` lists the pods")]
    NoPod(String),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("control plane: {0}")]
    Control(#[from] weft_control::ControlError),
    #[error("identity: {0}")]
    Identity(#[from] weft_identity::IdentityError),
    #[error("{what} did not become ready within {secs}s; see {log}")]
    Timeout {
        what: String,
        secs: u64,
        log: PathBuf,
    },
}
