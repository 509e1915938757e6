//! Envoy-named counters of the filters compiled into snapshots (the RBAC filters'
//! `http.<prefix>.rbac.allowed`, `tcp.rbac.denied`…). A counter lives as long as the process,
//! keyed by its name, so that a configuration update keeps counting where the previous one left
//! off, as Envoy's stats do.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

fn registry() -> &'static Mutex<BTreeMap<String, Arc<AtomicU64>>> {
    static COUNTERS: OnceLock<Mutex<BTreeMap<String, Arc<AtomicU64>>>> = OnceLock::new();
    COUNTERS.get_or_init(Mutex::default)
}

/// The counter called `name`, made on first use.
pub fn counter(name: &str) -> Arc<AtomicU64> {
    let mut map = match registry().lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    };
    map.entry(name.to_string()).or_default().clone()
}

/// Every counter, by name.
pub fn all() -> Vec<(String, u64)> {
    let map = match registry().lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    };
    map.iter()
        .map(|(k, v)| (k.clone(), v.load(Ordering::Relaxed)))
        .collect()
}

/// Envoy's `/stats` lines: `<name>: <value>`.
pub fn stats_text(out: &mut String) {
    for (name, v) in all() {
        let _ = writeln!(out, "{name}: {v}");
    }
}

fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

/// The Prometheus series of a counter after Istio's tag extraction for RBAC
/// (`authz_enforce_result`, `authz_dry_run_action`, `authz_dry_run_result`).
fn prometheus_series(name: &str) -> (String, String) {
    if let Some((base, stat)) = name.rsplit_once(".rbac.") {
        let base = format!("envoy_{}_rbac", sanitize(base));
        if stat == "allowed" || stat == "denied" {
            return (base, format!("authz_enforce_result=\"{stat}\""));
        }
        for action in ["allow", "deny"] {
            for result in ["allowed", "denied"] {
                if stat == format!("istio_dry_run_{action}_shadow_{result}") {
                    return (
                        base,
                        format!(
                            "authz_dry_run_action=\"{action}\",authz_dry_run_result=\"{result}\""
                        ),
                    );
                }
            }
        }
    }
    (format!("envoy_{}", sanitize(name)), String::new())
}

/// The counters in Prometheus text form.
pub fn prometheus_text(out: &mut String) {
    let mut families: BTreeMap<String, Vec<(String, u64)>> = BTreeMap::new();
    for (name, v) in all() {
        let (family, labels) = prometheus_series(&name);
        families.entry(family).or_default().push((labels, v));
    }
    for (family, series) in families {
        let _ = writeln!(out, "# TYPE {family} counter");
        for (labels, v) in series {
            if labels.is_empty() {
                let _ = writeln!(out, "{family} {v}");
            } else {
                let _ = writeln!(out, "{family}{{{labels}}} {v}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rbac_counters_get_istio_tags() {
        assert_eq!(
            prometheus_series("http.inbound_0.0.0.0_80.rbac.allowed"),
            (
                "envoy_http_inbound_0_0_0_0_80_rbac".into(),
                "authz_enforce_result=\"allowed\"".into()
            )
        );
        assert_eq!(
            prometheus_series("http.inbound_0.0.0.0_80.rbac.istio_dry_run_deny_shadow_denied"),
            (
                "envoy_http_inbound_0_0_0_0_80_rbac".into(),
                "authz_dry_run_action=\"deny\",authz_dry_run_result=\"denied\"".into()
            )
        );
        assert_eq!(
            prometheus_series("tcp.rbac.denied"),
            (
                "envoy_tcp_rbac".into(),
                "authz_enforce_result=\"denied\"".into()
            )
        );
        assert_eq!(
            prometheus_series("tcp.rbac.istio_ext_authz_shadow_allowed"),
            (
                "envoy_tcp_rbac_istio_ext_authz_shadow_allowed".into(),
                String::new()
            )
        );
        let c = counter("test.counter.rbac.denied");
        c.fetch_add(2, Ordering::Relaxed);
        let mut text = String::new();
        prometheus_text(&mut text);
        assert!(
            text.contains("envoy_test_counter_rbac{authz_enforce_result=\"denied\"} 2"),
            "{text}"
        );
        let mut text = String::new();
        stats_text(&mut text);
        assert!(text.contains("test.counter.rbac.denied: 2"), "{text}");
    }
}
