//! Where the tools find the mesh: the running `weft up` (its control plane from the node
//! namespace, each proxy's admin port from inside its pod's namespace; needs root), or the
//! addresses given on the command line (a `weft control` debug port, a proxy admin port).

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use weft_up::state::{PodState, State};

use crate::error::CtlError;

/// The admin port of a proxy, inside its pod.
const ADMIN: &str = "127.0.0.1:15000";
const TIMEOUT: Duration = Duration::from_secs(5);

/// How to reach the control plane and the proxies.
#[derive(Debug, Clone)]
pub enum Mesh {
    /// The mesh `weft up` runs on this machine.
    Up(Box<State>),
    /// Explicit addresses: the control plane's debug port and one proxy's admin port.
    Direct { control: String, admin: String },
}

/// What the command line said about addresses.
#[derive(Debug, Clone, Default)]
pub struct Addresses {
    /// `--control-plane HOST:PORT` (the monitoring/debug port, Istio 15014).
    pub control_plane: Option<String>,
    /// `--admin HOST:PORT` (a proxy's admin port, 15000).
    pub admin: Option<String>,
}

/// One HTTP answer.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub body: Bytes,
}

impl Answer {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

impl Mesh {
    /// The running `weft up` unless addresses are given; then those (defaults 127.0.0.1:15014
    /// and 127.0.0.1:15000).
    pub fn find(addrs: &Addresses) -> Result<Mesh, CtlError> {
        if addrs.control_plane.is_none()
            && addrs.admin.is_none()
            && let Some(st) = State::load()?.filter(|s| s.owner_alive())
        {
            weft_up::up::require_root().map_err(|_| CtlError::NeedRoot)?;
            return Ok(Mesh::Up(Box::new(st)));
        }
        Ok(Mesh::Direct {
            control: addrs
                .control_plane
                .clone()
                .unwrap_or_else(|| "127.0.0.1:15014".into()),
            admin: addrs.admin.clone().unwrap_or_else(|| ADMIN.into()),
        })
    }

    /// The pods of the running `weft up` (none for direct addresses).
    pub fn pods(&self) -> &[PodState] {
        match self {
            Mesh::Up(st) => &st.pods,
            Mesh::Direct { .. } => &[],
        }
    }

    /// A pod of the running `weft up` by its name, or `NAME.NAMESPACE` as istioctl users
    /// write it.
    pub fn pod(&self, name: &str) -> Result<&PodState, CtlError> {
        let Mesh::Up(st) = self else {
            return Err(CtlError::Usage(format!(
                "pod {name:?}: pods are known only from a running `weft up` mesh (with --control-plane/--admin addresses, leave the pod out)"
            )));
        };
        let short = name.rsplit_once('.').map_or(name, |(n, _)| n);
        st.pods
            .iter()
            .find(|p| p.name == name)
            .or_else(|| st.pods.iter().find(|p| p.name == short))
            .ok_or_else(|| CtlError::NoSuchPod {
                pod: name.to_string(),
                known: st.pods.iter().map(|p| p.name.clone()).collect(),
            })
    }

    /// Fails with what to do when `what` needs the running `weft up` mesh (its pods).
    pub fn require_up(&self, what: &str) -> Result<&State, CtlError> {
        match self {
            Mesh::Up(st) => Ok(st),
            Mesh::Direct { .. } => Err(CtlError::Usage(format!(
                "{what} needs the running `weft up` mesh (its pods and their addresses); without one, use proxy-config with --admin"
            ))),
        }
    }

    /// The control plane's address, as the tools print it.
    pub fn control_addr(&self) -> String {
        match self {
            Mesh::Up(st) => format!("{}:15014", st.node_ip),
            Mesh::Direct { control, .. } => control.clone(),
        }
    }

    /// GET on the control plane's debug port.
    pub fn control(&self, path: &str) -> Result<Answer, CtlError> {
        let url = format!("http://{}{path}", self.control_addr());
        match self {
            Mesh::Up(_) => in_ns(weft_up::net::NODE_NS, http::Method::GET, url, Bytes::new()),
            Mesh::Direct { .. } => run(http::Method::GET, url, Bytes::new()),
        }
    }

    /// A request to a proxy's admin port: the pod's (a `weft up` pod name) or the `--admin`
    /// address.
    pub fn admin(
        &self,
        pod: Option<&str>,
        method: http::Method,
        path: &str,
    ) -> Result<Answer, CtlError> {
        self.admin_with(pod, method, path, Bytes::new())
    }

    /// [`Self::admin`] with a request body.
    pub fn admin_with(
        &self,
        pod: Option<&str>,
        method: http::Method,
        path: &str,
        body: Bytes,
    ) -> Result<Answer, CtlError> {
        match (self, pod) {
            (Mesh::Up(_), Some(pod)) => {
                let p = self.pod(pod)?;
                if !p.sidecar {
                    return Err(CtlError::NoSidecar(p.name.clone()));
                }
                in_ns(&p.ns, method, format!("http://{ADMIN}{path}"), body)
            }
            (Mesh::Up(st), None) => Err(CtlError::PodRequired(
                st.pods
                    .iter()
                    .filter(|p| p.sidecar)
                    .map(|p| p.name.clone())
                    .collect(),
            )),
            (Mesh::Direct { admin, .. }, _) => run(method, format!("http://{admin}{path}"), body),
        }
    }

    /// GET on a proxy's admin port that must answer 200.
    pub fn admin_ok(&self, pod: Option<&str>, path: &str) -> Result<Bytes, CtlError> {
        let a = self.admin(pod, http::Method::GET, path)?;
        if a.status != 200 {
            return Err(CtlError::Status {
                what: format!("the proxy's {path}"),
                status: a.status,
                body: a.text(),
            });
        }
        Ok(a.body)
    }

    /// GET on the control plane that must answer 200.
    pub fn control_ok(&self, path: &str) -> Result<Bytes, CtlError> {
        let a = self.control(path)?;
        if a.status != 200 {
            return Err(CtlError::Status {
                what: format!("the control plane's {path}"),
                status: a.status,
                body: a.text(),
            });
        }
        Ok(a.body)
    }
}

fn in_ns(ns: &str, method: http::Method, url: String, body: Bytes) -> Result<Answer, CtlError> {
    let ns_name = ns.to_string();
    weft_up::status::in_netns(ns, move || Box::pin(request(method, url, body))).map_err(|e| {
        CtlError::Namespace {
            ns: ns_name,
            reason: e.to_string(),
        }
    })?
}

fn run(method: http::Method, url: String, body: Bytes) -> Result<Answer, CtlError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CtlError::Connect {
            url: url.clone(),
            reason: e.to_string(),
        })?
        .block_on(request(method, url, body))
}

async fn request(method: http::Method, url: String, body: Bytes) -> Result<Answer, CtlError> {
    let fail = |reason: String| CtlError::Connect {
        url: url.clone(),
        reason,
    };
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Full<Bytes>>();
    // A bad address is the user's to fix, not a connection failure.
    let req = http::Request::builder()
        .method(method)
        .uri(&url)
        .body(Full::new(body))
        .map_err(|e| {
            CtlError::Usage(format!(
                "{url} is not a usable address ({e}): give HOST:PORT, e.g. 127.0.0.1:15000"
            ))
        })?;
    let resp = tokio::time::timeout(TIMEOUT, client.request(req))
        .await
        .map_err(|_| fail("no answer within 5 s".into()))?
        .map_err(|e| fail(e.to_string()))?;
    let status = resp.status().as_u16();
    let body = tokio::time::timeout(TIMEOUT, resp.into_body().collect())
        .await
        .map_err(|_| fail("the body did not arrive within 5 s".into()))?
        .map_err(|e| fail(e.to_string()))?
        .to_bytes();
    Ok(Answer { status, body })
}
