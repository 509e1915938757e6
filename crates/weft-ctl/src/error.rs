//! Errors of the operator tools, each saying what to do.

/// What went wrong talking to the mesh or reading what it answered.
#[derive(Debug, thiserror::Error)]
pub enum CtlError {
    #[error(
        "the running `weft up` mesh is reachable from its namespaces only: run this as root (sudo), or pass --control-plane / --admin addresses"
    )]
    NeedRoot,
    #[error("cannot read the running mesh's state: {0}")]
    Up(#[from] weft_up::error::UpError),
    #[error("no pod {pod:?} in the running mesh; its pods are: {}", known.join(", "))]
    NoSuchPod { pod: String, known: Vec<String> },
    #[error("pod {0:?} runs without a sidecar: it has no proxy to ask")]
    NoSidecar(String),
    #[error("name a pod: one of {}", .0.join(", "))]
    PodRequired(Vec<String>),
    #[error("cannot enter network namespace {ns}: {reason}")]
    Namespace { ns: String, reason: String },
    #[error("cannot reach {url}: {reason}; is the process running, and is the address right?")]
    Connect { url: String, reason: String },
    #[error("{what} answered {status}: {}", body.trim())]
    Status {
        what: String,
        status: u16,
        body: String,
    },
    #[error("{what} is not what was expected: {reason}")]
    Decode { what: String, reason: String },
    #[error("{0}")]
    Usage(String),
    #[error("cannot read {path}: {reason}")]
    Read { path: String, reason: String },
}

impl From<weft_xds::dump::DumpError> for CtlError {
    fn from(e: weft_xds::dump::DumpError) -> Self {
        CtlError::Decode {
            what: "the config dump".into(),
            reason: e.to_string(),
        }
    }
}
