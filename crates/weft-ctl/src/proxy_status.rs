//! `weft proxy-status [POD]`: istioctl's sync table from the control plane's `/debug/syncz`,
//! and for one pod the difference between what the control plane would send it now and what
//! its proxy holds (both as Envoy `ConfigDump`s).

use std::collections::BTreeMap;
use std::fmt::Write;

use serde::Deserialize;
use weft_xds::dump::{Difference, Resources};
use weft_xds::types;

use crate::error::CtlError;
use crate::table;
use crate::target::Mesh;

/// One stream in `/debug/syncz` (the fields the table needs).
#[derive(Debug, Clone, Deserialize)]
pub struct Stream {
    pub proxy_id: String,
    pub conn_id: u64,
    #[serde(default)]
    pub user_agent: String,
    #[serde(default)]
    pub metadata: serde_json::Value,
    #[serde(default)]
    pub types: BTreeMap<String, TypeState>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct TypeState {
    pub last_sent: Option<Sent>,
    pub last_acked_version: Option<String>,
    pub last_nack: Option<Nack>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Sent {
    pub version: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Nack {
    pub version: String,
    pub message: String,
}

/// istioctl's state of one type: NOT SENT (nothing sent), SYNCED (the last response sent is
/// the one ACKed), STALE (sent and not ACKed yet, or refused), `STALE (Never Acknowledged)`.
pub fn state(t: Option<&TypeState>) -> &'static str {
    match t {
        None => "NOT SENT",
        Some(t) => match (&t.last_sent, &t.last_acked_version) {
            (None, _) => "NOT SENT",
            (Some(s), Some(a)) if &s.version == a => "SYNCED",
            (Some(_), None) => "STALE (Never Acknowledged)",
            _ => "STALE",
        },
    }
}

/// `sidecar~10.0.0.1~productpage.default~default.svc.cluster.local` → `productpage.default`.
pub fn display_name(proxy_id: &str) -> &str {
    proxy_id.split('~').nth(2).unwrap_or(proxy_id)
}

/// The connected streams (the newest per proxy), sorted by name.
pub fn streams(mesh: &Mesh) -> Result<Vec<Stream>, CtlError> {
    let body = mesh.control_ok("/debug/syncz")?;
    let all: Vec<Stream> = serde_json::from_slice(&body).map_err(|e| CtlError::Decode {
        what: "the control plane's /debug/syncz".into(),
        reason: e.to_string(),
    })?;
    let mut newest: BTreeMap<String, Stream> = BTreeMap::new();
    for s in all {
        if newest
            .get(&s.proxy_id)
            .is_none_or(|old| old.conn_id < s.conn_id)
        {
            newest.insert(s.proxy_id.clone(), s);
        }
    }
    let mut out: Vec<Stream> = newest.into_values().collect();
    out.sort_by(|a, b| display_name(&a.proxy_id).cmp(display_name(&b.proxy_id)));
    Ok(out)
}

/// The table with istioctl 1.14's columns (NAME, CLUSTER, CDS, LDS, EDS, RDS, ECDS, ISTIOD,
/// VERSION), then ACKED (the config version the proxy applied last, CDS's), and the control
/// plane's version under it.
pub fn render(streams: &[Stream], control: &str, control_version: &str) -> String {
    let rows: Vec<Vec<String>> = streams
        .iter()
        .map(|s| {
            let st = |t: &str| state(s.types.get(t)).to_string();
            let acked = [types::CLUSTER, types::LISTENER]
                .iter()
                .find_map(|t| s.types.get(*t)?.last_acked_version.clone())
                .unwrap_or_else(|| "-".into());
            let cluster = s.metadata["CLUSTER_ID"]
                .as_str()
                .filter(|c| !c.is_empty())
                .unwrap_or("Kubernetes")
                .to_string();
            vec![
                display_name(&s.proxy_id).to_string(),
                cluster,
                st(types::CLUSTER),
                st(types::LISTENER),
                st(types::ENDPOINT),
                st(types::ROUTE),
                st(types::EXTENSION_CONFIG),
                control.to_string(),
                if s.user_agent.is_empty() {
                    "-".into()
                } else {
                    s.user_agent.clone()
                },
                acked,
            ]
        })
        .collect();
    let mut out = table::render(
        &[
            "NAME", "CLUSTER", "CDS", "LDS", "EDS", "RDS", "ECDS", "ISTIOD", "VERSION", "ACKED",
        ],
        &rows,
        5,
    );
    let _ = writeln!(out, "\ncontrol plane config version: {control_version}");
    for s in streams {
        for (t, ts) in &s.types {
            // A refusal the proxy has since got past (a later version ACKed) is history.
            let current = ts.last_sent.as_ref().map(|sent| &sent.version);
            if let Some(n) = ts
                .last_nack
                .as_ref()
                .filter(|n| Some(&n.version) == current && state(Some(ts)) != "SYNCED")
            {
                let _ = writeln!(
                    out,
                    "{} refused {} version {}: {}",
                    display_name(&s.proxy_id),
                    types::short_name(t),
                    n.version,
                    n.message
                );
            }
        }
    }
    out
}

/// The control plane's current config version (`/debug/configz`).
pub fn control_version(mesh: &Mesh) -> Result<String, CtlError> {
    let body = mesh.control_ok("/debug/configz")?;
    let v: serde_json::Value = serde_json::from_slice(&body).map_err(|e| CtlError::Decode {
        what: "the control plane's /debug/configz".into(),
        reason: e.to_string(),
    })?;
    Ok(v["version"].as_str().unwrap_or("-").to_string())
}

/// The diff for one pod, istioctl's way: a line per type, `Clusters Match` or
/// `Clusters Don't Match` followed by the resources that differ.
pub fn render_diff(want: &Resources, held: &Resources) -> (String, bool) {
    let mut out = String::new();
    let diff = want.diff(held);
    let same = diff.values().all(Vec::is_empty);
    for (t, title) in [
        (types::CLUSTER, "Clusters"),
        (types::LISTENER, "Listeners"),
        (types::ROUTE, "Routes"),
        (types::ENDPOINT, "Endpoints"),
    ] {
        let d = &diff[t];
        let held_version = held.versions.get(t).map(String::as_str).unwrap_or("none");
        if d.is_empty() {
            let _ = writeln!(out, "{title} Match (version {held_version})");
            continue;
        }
        let want_version = want.versions.get(t).map(String::as_str).unwrap_or("none");
        let _ = writeln!(
            out,
            "{title} Don't Match (the proxy holds version {held_version}, the control plane would send {want_version})"
        );
        for x in d {
            let _ = match x {
                Difference::Missing(n) => writeln!(
                    out,
                    "  - {n}: sent by the control plane, not held by the proxy"
                ),
                Difference::Extra(n) => writeln!(out, "  + {n}: held by the proxy, no longer sent"),
                Difference::Changed(n) => writeln!(out, "  ~ {n}: the proxy holds other content"),
            };
        }
    }
    (out, same)
}

/// `weft proxy-status POD`: both dumps, then the diff.
pub fn pod_diff(mesh: &Mesh, pod: Option<&str>) -> Result<(String, bool), CtlError> {
    let held = Resources::from_config_dump(&mesh.admin_ok(pod, "/config_dump?format=proto")?)?;
    let id = held.node.id.clone();
    let want = Resources::from_config_dump(
        &mesh.control_ok(&format!("/debug/config_dump?proxyID={id}&format=proto"))?,
    )?;
    let (diff, synced) = render_diff(&want, &held);
    Ok((format!("{}\n{diff}", display_name(&id)), synced))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(sent: Option<&str>, acked: Option<&str>) -> TypeState {
        TypeState {
            last_sent: sent.map(|v| Sent { version: v.into() }),
            last_acked_version: acked.map(String::from),
            last_nack: None,
        }
    }

    #[test]
    fn states_as_istioctl_names_them() {
        assert_eq!(state(None), "NOT SENT");
        assert_eq!(state(Some(&ts(None, None))), "NOT SENT");
        assert_eq!(state(Some(&ts(Some("v2"), Some("v2")))), "SYNCED");
        assert_eq!(state(Some(&ts(Some("v3"), Some("v2")))), "STALE");
        assert_eq!(
            state(Some(&ts(Some("v3"), None))),
            "STALE (Never Acknowledged)"
        );
    }

    #[test]
    fn table_rows_and_nacks() {
        let mut s = Stream {
            proxy_id: "sidecar~10.0.0.2~reviews-v1.default~default.svc.cluster.local".into(),
            conn_id: 1,
            user_agent: "weft/0.1.0".into(),
            metadata: serde_json::json!({"CLUSTER_ID": "Kubernetes"}),
            types: BTreeMap::new(),
        };
        s.types
            .insert(types::CLUSTER.into(), ts(Some("v2"), Some("v2")));
        let mut lds = ts(Some("v2"), Some("v1"));
        lds.last_nack = Some(Nack {
            version: "v2".into(),
            message: "listener x: bad".into(),
        });
        s.types.insert(types::LISTENER.into(), lds);
        let out = render(std::slice::from_ref(&s), "10.0.0.1:15014", "v2");
        let row = out.lines().nth(1).expect("row");
        let cells: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(
            &cells[..4],
            &["reviews-v1.default", "Kubernetes", "SYNCED", "STALE"]
        );
        assert_eq!(
            &cells[4..10],
            &["NOT", "SENT", "NOT", "SENT", "NOT", "SENT"]
        );
        assert!(
            row.contains("weft/0.1.0") && row.trim_end().ends_with("v2"),
            "{out}"
        );
        assert!(
            out.contains("reviews-v1.default refused LDS version v2: listener x: bad"),
            "{out}"
        );
        assert!(out.contains("control plane config version: v2"), "{out}");

        // Once a later version is ACKed, the old refusal is no longer printed.
        let mut healed = s.clone();
        let lds = healed.types.get_mut(types::LISTENER).expect("lds");
        lds.last_sent = Some(Sent {
            version: "v3".into(),
        });
        lds.last_acked_version = Some("v3".into());
        let out = render(&[healed], "10.0.0.1:15014", "v3");
        assert!(!out.contains("refused"), "{out}");
    }

    #[test]
    fn diff_names_each_resource() {
        let mut want = Resources::default();
        want.clusters.insert(
            "outbound|9080||ratings.default.svc.cluster.local".into(),
            Default::default(),
        );
        let held = Resources::default();
        let (out, same) = render_diff(&want, &held);
        assert!(!same);
        assert!(out.contains("Clusters Don't Match"), "{out}");
        assert!(
            out.contains(
                "  - outbound|9080||ratings.default.svc.cluster.local: sent by the control plane"
            ),
            "{out}"
        );
        assert!(out.contains("Listeners Match"), "{out}");
    }
}
