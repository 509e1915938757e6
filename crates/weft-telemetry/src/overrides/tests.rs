//! The stats plugin's overrides on standard label sets.

use std::time::SystemTime;

use super::*;
use crate::labels::{Parties, PeerInfo, Reporter, SecurityPolicy, ServiceInfo};

fn labels() -> RequestLabels {
    let peer = PeerInfo::unknown();
    let service = ServiceInfo::from_host("httpbin.default.svc.cluster.local");
    RequestLabels::new(
        &Parties {
            reporter: Reporter::Source,
            source: &peer,
            destination: &peer,
            service: &service,
            security_policy: SecurityPolicy::Unknown,
        },
        crate::labels::Protocol::Http,
        418,
        None,
        Label::new("-"),
    )
}

fn encode(s: &Series<RequestLabels>) -> String {
    use prometheus_client::metrics::counter::Counter;
    use prometheus_client::metrics::family::Family;
    let family = Family::<Series<RequestLabels>, Counter>::default();
    family.get_or_create(s).inc();
    let mut r = prometheus_client::registry::Registry::default();
    r.register("istio_requests", "", family);
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, &r).unwrap();
    out
}

#[test]
fn the_task_adds_request_host_and_removes_response_flags() {
    let ov = MetricOverrides::from_plugin_json(
        r#"{"metrics":[{"name":"requests_total","dimensions":{"request_host":"request.host"},"tags_to_remove":["response_flags"]},{"name":"request_bytes","drop":true}]}"#,
    )
    .unwrap();
    assert!(ov.needs_attributes());
    let mut e = AccessLogEntry::new(SystemTime::now());
    e.method = Some("GET".into());
    e.authority = Some("httpbin:8000".into());
    let values = ov.evaluate(&e, &CelInput::default());
    let s = ov
        .series(StandardMetric::RequestCount, &labels(), &values)
        .unwrap();
    let text = encode(&s);
    assert!(text.contains("request_host=\"httpbin:8000\""), "{text}");
    assert!(!text.contains("response_flags"), "{text}");
    assert!(text.contains("response_code=\"418\""), "{text}");
    // Dropped, and untouched.
    assert!(
        ov.series(StandardMetric::RequestSize, &labels(), &values)
            .is_none()
    );
    assert!(matches!(
        ov.series(StandardMetric::RequestDuration, &labels(), &values),
        Some(Series::Standard(_))
    ));
}

#[test]
fn failed_tag_expressions_give_unknown_and_bad_configs_are_refused() {
    let ov = MetricOverrides::from_plugin_json(
        r#"{"metrics":[{"name":"requests_total","dimensions":{"response_code":"request.headers['absent']","port":"string(destination.port)"}}]}"#,
    )
    .unwrap();
    let mut e = AccessLogEntry::new(SystemTime::now());
    e.method = Some("GET".into());
    e.downstream_local_address = Some("10.0.0.2:8000".parse().unwrap());
    let values = ov.evaluate(&e, &CelInput::default());
    let text = encode(
        &ov.series(StandardMetric::RequestCount, &labels(), &values)
            .unwrap(),
    );
    assert!(
        text.contains("response_code=\"unknown\""),
        "replaced: {text}"
    );
    assert!(text.contains("port=\"8000\""), "{text}");

    for bad in [
        r#"{"metrics":[{"name":"my_metric"}]}"#,
        r#"{"metrics":[{"name":"requests_total","dimensions":{"a":"request.host =="}}]}"#,
        r#"{"metrics":[{"name":"requests_total","dimensions":{"my-tag":"request.host"}}]}"#,
        r#"{"metrics":[{"name":"requests_total","dimensions":{"le":"request.host"}}]}"#,
        "not json",
    ] {
        let e = MetricOverrides::from_plugin_json(bad)
            .unwrap_err()
            .to_string();
        assert!(e.contains("metric overrides"), "{e}");
    }
}
