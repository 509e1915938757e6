#![forbid(unsafe_code)]
//! `weft up`: a whole mesh on one machine in one command — pods as network namespaces on a
//! bridge, Istio's capture, a sidecar per pod, the control plane on the directory, live status —
//! and `weft status`, `weft exec`, `weft down` beside it.

pub mod error;
pub mod forward;
pub mod net;
pub mod procs;
pub mod spec;
pub mod spire;
pub mod state;
pub mod status;
pub mod telemetry;
pub mod up;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

pub use error::UpError;
pub use up::{UpOptions, up};

use state::State;

/// `weft down`: stops a running `weft up` (it removes its own state), or removes what a dead
/// one left behind.
pub fn down() -> Result<String, UpError> {
    up::require_root()?;
    let Some(st) = State::load()? else {
        // Nothing recorded; still remove a node namespace left by a crash before the first save.
        state::clear_stale()?;
        return Ok("no mesh is running".into());
    };
    if st.owner_alive() {
        if let Some(pid) = rustix::process::Pid::from_raw(st.pid) {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(15) && State::path().exists() {
            std::thread::sleep(Duration::from_millis(100));
        }
        if !State::path().exists() {
            return Ok(format!("stopped the mesh of {}", st.dir.display()));
        }
        if let Some(pid) = rustix::process::Pid::from_raw(st.pid) {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
        }
    }
    st.clean();
    Ok(format!(
        "removed the mesh of {} (its weft up was not running)",
        st.dir.display()
    ))
}

/// `weft status`: the pods and per-service traffic, once (two scrapes a second apart).
pub fn status() -> Result<String, UpError> {
    up::require_root()?;
    let st = State::load()?.ok_or_else(|| UpError::NotRunning(State::path()))?;
    let pods: Vec<_> = st
        .pods
        .iter()
        .map(|p| (p.name.clone(), p.ip, p.sidecar))
        .collect();
    let node_ip = st.node_ip;
    let (first, second) = status::in_node_ns(move || {
        Box::pin(async move {
            let a = status::observe(node_ip, &pods).await;
            tokio::time::sleep(Duration::from_secs(1)).await;
            let b = status::observe(node_ip, &pods).await;
            (a, b)
        })
    })?;
    let secs = match (first.at, second.at) {
        (Some(a), Some(b)) => b.duration_since(a).as_secs_f64(),
        _ => 1.0,
    };
    let rates: BTreeMap<_, _> = second
        .totals
        .iter()
        .map(|(svc, t)| {
            (
                svc.clone(),
                status::rates(&first.totals.get(svc).cloned().unwrap_or_default(), t, secs),
            )
        })
        .collect();
    let modes = up::load(&st.dir)
        .map(|(plan, snap)| up::mtls_modes(&plan, &snap))
        .unwrap_or_default();
    let rows: Vec<status::PodRow> = st
        .pods
        .iter()
        .map(|p| status::PodRow {
            name: p.name.clone(),
            ip: p.ip,
            proxy: if !p.sidecar {
                "none".into()
            } else if second.proxies_ready.get(&p.name) == Some(&true) {
                "ready".into()
            } else if p.proxy_group.is_some_and(state::alive) {
                "starting".into()
            } else {
                "restarting".into()
            },
            app: match p.app_group {
                Some(g) if state::alive(g) => "running".into(),
                Some(_) => "exited".into(),
                None => "-".into(),
            },
            identity: p.identity.clone().unwrap_or_else(|| "-".into()),
            mtls: if p.sidecar {
                modes
                    .get(&p.name)
                    .cloned()
                    .unwrap_or_else(|| "sidecar".into())
            } else {
                "off (no sidecar)".into()
            },
        })
        .collect();
    let title = format!(
        "mesh of {} (weft up pid {}{}), control plane {}",
        st.dir.display(),
        st.pid,
        if st.owner_alive() {
            ""
        } else {
            ", not running"
        },
        if second.control_ready {
            "ready"
        } else {
            "not ready"
        }
    );
    Ok(status::render(&title, &rows, &rates, &[]))
}

/// `weft exec POD -- CMD...`: runs a command inside a pod's network namespace (with its hosts
/// file); replaces this process.
pub fn exec(pod: &str, cmd: &[String]) -> Result<std::convert::Infallible, UpError> {
    up::require_root()?;
    let st = State::load()?.ok_or_else(|| UpError::NotRunning(State::path()))?;
    let p = st.pod(pod)?;
    let err = std::os::unix::process::CommandExt::exec(
        std::process::Command::new("ip")
            .args(["netns", "exec", &p.ns])
            .args(cmd),
    );
    Err(UpError::Command {
        cmd: cmd.join(" "),
        reason: err.to_string(),
    })
}
