//! Telemetry validation (Istio `ValidateTelemetry`).

use crate::problem::FieldPath;
use crate::telemetry::{CustomTag, ProviderRef, TagOperation, Telemetry};
use crate::validate::Report;
use crate::validate::checks::validate_workload_selector;

pub(crate) fn validate_telemetry(r: &mut Report, p: &FieldPath, t: &Telemetry) {
    validate_workload_selector(r, &p.key("selector"), t.selector.as_ref());
    for (i, m) in t.metrics.iter().enumerate() {
        let mp = p.key("metrics").idx(i);
        validate_providers(r, &mp.key("providers"), &m.providers);
        for (j, o) in m.overrides.iter().enumerate() {
            let op = mp.key("overrides").idx(j);
            for (name, to) in &o.tag_overrides {
                let tp = op.key("tagOverrides").key(name.as_str());
                if name.is_empty() {
                    r.err(&tp, "tagOverrides name may not be empty");
                } else if !crate::telemetry::is_label_name(name) {
                    r.err(
                        &tp,
                        "a tag name must be a Prometheus label name ([a-zA-Z_][a-zA-Z0-9_]*, not `le`, not starting with `__`)",
                    );
                }
                match to.operation {
                    TagOperation::Upsert if !to.value.is_empty() => {
                        r.check(&tp.key("value"), check_cel_syntax(&to.value));
                    }
                    TagOperation::Upsert => {
                        r.err(
                            &tp.key("value"),
                            "tagOverrides.value must be set when operation is UPSERT",
                        );
                    }
                    TagOperation::Remove if !to.value.is_empty() => {
                        r.err(
                            &tp.key("value"),
                            "tagOverrides.value may only be set when operation is UPSERT",
                        );
                    }
                    _ => {}
                }
            }
            if let Some(sel) = &o.match_ {
                let sp = op.key("match");
                if sel.metric.is_some() && sel.custom_metric.is_some() {
                    r.err(&sp, "set only one of metric or customMetric");
                }
                if sel.custom_metric.as_deref() == Some("") {
                    r.err(&sp.key("customMetric"), "customMetric may not be empty");
                }
            }
        }
    }
    for (i, tr) in t.tracing.iter().enumerate() {
        let tp = p.key("tracing").idx(i);
        validate_providers(r, &tp.key("providers"), &tr.providers);
        if let Some(pct) = tr.random_sampling_percentage
            && !(0.0..=100.0).contains(&pct)
        {
            r.err(
                &tp.key("randomSamplingPercentage"),
                "randomSamplingPercentage must be in range [0.0, 100.0]",
            );
        }
        for (name, tag) in &tr.custom_tags {
            validate_custom_tag(r, &tp.key("customTags").key(name.as_str()), name, tag);
        }
    }
    for (i, al) in t.access_logging.iter().enumerate() {
        let ap = p.key("accessLogging").idx(i);
        validate_providers(r, &ap.key("providers"), &al.providers);
        if let Some(f) = &al.filter {
            r.check(
                &ap.key("filter").key("expression"),
                check_cel_syntax(&f.expression),
            );
        }
    }
}

fn validate_providers(r: &mut Report, p: &FieldPath, providers: &[ProviderRef]) {
    for (i, pr) in providers.iter().enumerate() {
        if pr.name.is_empty() {
            r.err(&p.idx(i).key("name"), "providers.name may not be empty");
        }
    }
}

/// Custom tags: one of literal / environment / header, each with its required field.
pub(crate) fn validate_custom_tag(r: &mut Report, p: &FieldPath, name: &str, tag: &CustomTag) {
    if name.is_empty() {
        r.err(p, "tag name may not be empty");
    }
    let set = [
        tag.literal.is_some(),
        tag.environment.is_some(),
        tag.header.is_some(),
    ]
    .iter()
    .filter(|b| **b)
    .count();
    if set != 1 {
        r.err(
            p,
            "custom tag must set exactly one of literal, environment or header",
        );
    }
    if let Some(l) = &tag.literal
        && l.value.is_empty()
    {
        r.err(
            &p.key("literal").key("value"),
            "literal tag value may not be empty",
        );
    }
    if let Some(h) = &tag.header
        && h.name.is_empty()
    {
        r.err(
            &p.key("header").key("name"),
            "header tag name may not be empty",
        );
    }
    if let Some(e) = &tag.environment
        && e.name.is_empty()
    {
        r.err(
            &p.key("environment").key("name"),
            "environment tag name may not be empty",
        );
    }
}

/// A CEL expression must parse (the `cel` crate's parser, as the proxy compiles it).
pub(crate) fn check_cel_syntax(expr: &str) -> Result<(), String> {
    if expr.trim().is_empty() {
        return Err(
            "must be a CEL expression such as response.code >= 400; found an empty one".into(),
        );
    }
    cel::Program::compile(expr).map(|_| ()).map_err(|e| {
        format!(
            "must be a valid CEL expression: {expr:?}: {}",
            one_line(&e.to_string())
        )
    })
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cel_syntax() {
        assert!(check_cel_syntax("response.code >= 400").is_ok());
        assert!(
            check_cel_syntax("connection.mtls && request.url_path.contains('v1beta3')").is_ok()
        );
        assert!(check_cel_syntax("request.headers['x-a'] == \"b)\"").is_ok());
        assert!(check_cel_syntax("").is_err());
        assert!(check_cel_syntax("size(request.path").is_err());
        assert!(check_cel_syntax("a == 'b").is_err());
        assert!(check_cel_syntax("a)").is_err());
    }
}
