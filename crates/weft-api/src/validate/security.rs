//! PeerAuthentication, AuthorizationPolicy and RequestAuthentication validation.

use crate::problem::FieldPath;
use crate::security::{
    AuthorizationAction, AuthorizationPolicy, JwtRule, Operation, PeerAuthentication,
    RequestAuthentication, Source,
};
use crate::validate::Report;
use crate::validate::checks::{validate_ips, validate_workload_selector};

pub(crate) fn validate_peer_authentication(r: &mut Report, p: &FieldPath, pa: &PeerAuthentication) {
    let empty_selector = pa
        .selector
        .as_ref()
        .is_none_or(|s| s.match_labels.is_empty());
    if empty_selector && !pa.port_level_mtls.is_empty() {
        r.err(
            &p.key("portLevelMtls"),
            "mesh/namespace peer authentication cannot have port level mTLS; add a selector or remove portLevelMtls",
        );
    }
    for port in pa.port_level_mtls.keys() {
        if *port == 0 || *port > 65535 {
            r.err(
                &p.key("portLevelMtls").key(port.to_string()),
                format!("port number {port} must be in the range 1..65535"),
            );
        }
    }
    validate_workload_selector(r, &p.key("selector"), pa.selector.as_ref());
}

fn check_empty_values(r: &mut Report, p: &FieldPath, field: &str, values: &[String]) {
    for (i, v) in values.iter().enumerate() {
        if v.is_empty() {
            r.err(
                &p.key(field).idx(i),
                format!("empty value not allowed, found in {field}"),
            );
        }
    }
}

fn validate_ports(r: &mut Report, p: &FieldPath, ports: &[String]) {
    for (i, port) in ports.iter().enumerate() {
        if !port.parse::<u32>().is_ok_and(|n| n <= 65535) {
            r.err(
                &p.idx(i),
                format!("bad port ({port}): must be a number in 0..65535"),
            );
        }
    }
}

fn source_fields(s: &Source) -> [(&'static str, &Vec<String>); 10] {
    [
        ("principals", &s.principals),
        ("notPrincipals", &s.not_principals),
        ("requestPrincipals", &s.request_principals),
        ("notRequestPrincipals", &s.not_request_principals),
        ("namespaces", &s.namespaces),
        ("notNamespaces", &s.not_namespaces),
        ("ipBlocks", &s.ip_blocks),
        ("notIpBlocks", &s.not_ip_blocks),
        ("remoteIpBlocks", &s.remote_ip_blocks),
        ("notRemoteIpBlocks", &s.not_remote_ip_blocks),
    ]
}

fn operation_fields(o: &Operation) -> [(&'static str, &Vec<String>); 8] {
    [
        ("hosts", &o.hosts),
        ("notHosts", &o.not_hosts),
        ("ports", &o.ports),
        ("notPorts", &o.not_ports),
        ("methods", &o.methods),
        ("notMethods", &o.not_methods),
        ("paths", &o.paths),
        ("notPaths", &o.not_paths),
    ]
}

/// Validates a `when` key and its values (Istio `security.ValidateAttribute`).
fn validate_attribute(r: &mut Report, p: &FieldPath, key: &str, values: &[String]) {
    let map_key_ok = |k: &str| -> Result<(), String> {
        let open = k.find('[');
        match open {
            Some(o) if k.ends_with(']') && o > 0 && o < k.len() - 2 => Ok(()),
            _ => Err(format!("bad key ({k}): should have format a[b]")),
        }
    };
    let res = if key.starts_with("request.headers") {
        map_key_ok(key)
    } else if key == "source.ip" || key == "remote.ip" || key == "destination.ip" {
        validate_ips(r, p, values);
        Ok(())
    } else if key == "destination.port" {
        validate_ports(r, p, values);
        Ok(())
    } else if matches!(
        key,
        "source.namespace"
            | "source.principal"
            | "request.auth.principal"
            | "request.auth.audiences"
            | "request.auth.presenter"
            | "connection.sni"
    ) {
        Ok(())
    } else if key.starts_with("request.auth.claims")
        || key.starts_with("experimental.envoy.filters.")
    {
        map_key_ok(key)
    } else if key == "destination.namespace" {
        Err(format!(
            "attribute {key} is replaced by the metadata.namespace"
        ))
    } else if key.starts_with("destination.labels") {
        Err(format!(
            "attribute {key} is replaced by the workload selector"
        ))
    } else if key == "destination.name" || key == "destination.user" {
        Err(format!(
            "deprecated attribute {key}: only supported in v1alpha1"
        ))
    } else {
        Err(format!(
            "unknown attribute: {key}; supported keys are request.headers[<name>], source.ip, remote.ip, \
             source.namespace, source.principal, request.auth.principal, request.auth.audiences, \
             request.auth.presenter, request.auth.claims[<name>], destination.ip, destination.port, connection.sni"
        ))
    };
    if let Err(e) = res {
        r.err(p, e);
    }
}

pub(crate) fn validate_authorization_policy(
    r: &mut Report,
    p: &FieldPath,
    ap: &AuthorizationPolicy,
) {
    validate_workload_selector(r, &p.key("selector"), ap.selector.as_ref());

    if ap.action == AuthorizationAction::Custom {
        if ap.rules.is_empty() {
            r.err(
                &p.key("rules"),
                "CUSTOM action without `rules` is meaningless as it will never be triggered, \
                 add an empty rule `{}` if you want it be triggered for every request",
            );
        }
        if ap.provider.as_ref().is_none_or(|pr| pr.name.is_empty()) {
            r.err(
                &p.key("provider"),
                "CUSTOM action requires `provider.name` naming an extension provider from meshConfig.extensionProviders",
            );
        }
        for (i, rule) in ap.rules.iter().enumerate() {
            let rp = p.key("rules").idx(i);
            for (j, from) in rule.from.iter().enumerate() {
                let Some(src) = &from.source else { continue };
                let sp = rp.key("from").idx(j).key("source");
                for (field, list) in &source_fields(src)[..6] {
                    if !list.is_empty() {
                        r.err(
                            &sp.key(*field),
                            format!("{field} is currently not supported with CUSTOM action"),
                        );
                    }
                }
            }
            for (j, cond) in rule.when.iter().enumerate() {
                if cond.key == "source.namespace"
                    || cond.key == "source.principal"
                    || cond.key.starts_with("request.auth.")
                {
                    r.err(
                        &rp.key("when").idx(j).key("key"),
                        format!("{} is currently not supported with CUSTOM action", cond.key),
                    );
                }
            }
        }
    } else if ap.provider.is_some() {
        let action = match ap.action {
            AuthorizationAction::Allow => "ALLOW",
            AuthorizationAction::Deny => "DENY",
            AuthorizationAction::Audit => "AUDIT",
            AuthorizationAction::Custom => "CUSTOM",
        };
        r.err(
            &p.key("provider"),
            format!("`provider` must only be used with action CUSTOM, found {action}"),
        );
    }

    if ap.action == AuthorizationAction::Deny && ap.rules.is_empty() {
        r.err(
            &p.key("rules"),
            "DENY action without `rules` is meaningless as it will never be triggered, \
             add an empty rule `{}` if you want it be triggered for every request",
        );
    }

    for (i, rule) in ap.rules.iter().enumerate() {
        let rp = p.key("rules").idx(i);
        for (j, from) in rule.from.iter().enumerate() {
            let fp = rp.key("from").idx(j);
            let Some(src) = &from.source else {
                r.err(
                    &fp.key("source"),
                    format!("`from.source` must not be nil, found at rule {i}"),
                );
                continue;
            };
            let sp = fp.key("source");
            let fields = source_fields(src);
            if fields.iter().all(|(_, l)| l.is_empty()) {
                r.err(
                    &sp,
                    format!("`from.source` must not be empty, found at rule {i}"),
                );
            }
            for (field, list) in fields {
                check_empty_values(r, &sp, field, list);
            }
            for (field, list) in [
                ("ipBlocks", &src.ip_blocks),
                ("notIpBlocks", &src.not_ip_blocks),
                ("remoteIpBlocks", &src.remote_ip_blocks),
                ("notRemoteIpBlocks", &src.not_remote_ip_blocks),
            ] {
                validate_ips(r, &sp.key(field), list);
            }
        }
        for (j, to) in rule.to.iter().enumerate() {
            let tp = rp.key("to").idx(j);
            let Some(op) = &to.operation else {
                r.err(
                    &tp.key("operation"),
                    format!("`to.operation` must not be nil, found at rule {i}"),
                );
                continue;
            };
            let op_path = tp.key("operation");
            let fields = operation_fields(op);
            if fields.iter().all(|(_, l)| l.is_empty()) {
                r.err(
                    &op_path,
                    format!("`to.operation` must not be empty, found at rule {i}"),
                );
            }
            validate_ports(r, &op_path.key("ports"), &op.ports);
            validate_ports(r, &op_path.key("notPorts"), &op.not_ports);
            for (field, list) in fields {
                check_empty_values(r, &op_path, field, list);
            }
        }
        for (j, cond) in rule.when.iter().enumerate() {
            let cp = rp.key("when").idx(j);
            if cond.key.is_empty() {
                r.err(&cp.key("key"), "`key` must not be empty");
                continue;
            }
            if cond.values.is_empty() && cond.not_values.is_empty() {
                r.err(
                    &cp,
                    format!(
                        "at least one of `values` or `notValues` must be set for key {}",
                        cond.key
                    ),
                );
                continue;
            }
            check_empty_values(r, &cp, "values", &cond.values);
            check_empty_values(r, &cp, "notValues", &cond.not_values);
            if !cond.values.is_empty() {
                validate_attribute(r, &cp.key("values"), &cond.key, &cond.values);
            }
            if !cond.not_values.is_empty() {
                validate_attribute(r, &cp.key("notValues"), &cond.key, &cond.not_values);
            }
        }
    }
}

pub(crate) fn validate_request_authentication(
    r: &mut Report,
    p: &FieldPath,
    ra: &RequestAuthentication,
) {
    validate_workload_selector(r, &p.key("selector"), ra.selector.as_ref());
    for (i, rule) in ra.jwt_rules.iter().enumerate() {
        validate_jwt_rule(r, &p.key("jwtRules").idx(i), rule);
    }
}

fn validate_jwt_rule(r: &mut Report, p: &FieldPath, rule: &JwtRule) {
    if rule.issuer.is_empty() {
        r.err(&p.key("issuer"), "issuer must be set");
    }
    for (i, a) in rule.audiences.iter().enumerate() {
        if a.is_empty() {
            r.err(
                &p.key("audiences").idx(i),
                "audience must be non-empty string",
            );
        }
    }
    if !rule.jwks_uri.is_empty() {
        r.check(&p.key("jwksUri"), validate_jwks_uri(&rule.jwks_uri));
    }
    if !rule.jwks.is_empty() {
        r.check(&p.key("jwks"), validate_jwks(&rule.jwks));
    }
    for (i, h) in rule.from_headers.iter().enumerate() {
        if h.name.is_empty() {
            r.err(
                &p.key("fromHeaders").idx(i).key("name"),
                "location header name must be non-empty string",
            );
        }
    }
    for (i, q) in rule.from_params.iter().enumerate() {
        if q.is_empty() {
            r.err(
                &p.key("fromParams").idx(i),
                "location query must be non-empty string",
            );
        }
    }
}

/// `jwksUri` must be an http(s) URL with an optional numeric port.
fn validate_jwks_uri(uri: &str) -> Result<(), String> {
    let (scheme, rest) = uri
        .split_once("://")
        .ok_or_else(|| format!("jwksUri {uri:?} must be an http:// or https:// URL"))?;
    if scheme != "http" && scheme != "https" {
        return Err(format!(
            "URI scheme {scheme:?} is not supported; use http or https"
        ));
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, hp)| hp);
    if host_port.is_empty() {
        return Err(format!("jwksUri {uri:?} has no host"));
    }
    let port = if let Some(v6) = host_port.strip_prefix('[') {
        v6.split_once(']')
            .map(|(_, after)| after.trim_start_matches(':'))
    } else {
        host_port.split_once(':').map(|(_, p)| p)
    };
    if let Some(port) = port
        && !port.is_empty()
        && port.parse::<u16>().is_err()
    {
        return Err(format!("jwksUri {uri:?} has an invalid port {port:?}"));
    }
    Ok(())
}

/// Inline `jwks` must be a JSON Web Key Set (`{"keys": [...]}`) or a single JWK, each key with
/// the members its `kty` requires (RFC 7518 §6: RSA `n` and `e`, EC `crv`, `x` and `y`, OKP
/// `crv` and `x`, oct `k`), as the JWK parser istiod validates with refuses them.
fn validate_jwks(jwks: &str) -> Result<(), String> {
    let v: serde_json::Value =
        serde_json::from_str(jwks).map_err(|e| format!("jwks parse error: {e}"))?;
    let check = |i: usize, k: &serde_json::Value| -> Result<(), String> {
        let Some(kty) = k.get("kty").and_then(serde_json::Value::as_str) else {
            return Err(format!("jwks parse error: key {i} needs a \"kty\" string"));
        };
        let required: &[&str] = match kty {
            "RSA" => &["n", "e"],
            "EC" => &["crv", "x", "y"],
            "OKP" => &["crv", "x"],
            "oct" => &["k"],
            other => {
                return Err(format!(
                    "jwks parse error: key {i}: unsupported \"kty\" {other:?} (RSA, EC, OKP or oct)"
                ));
            }
        };
        match required
            .iter()
            .find(|m| !k.get(**m).is_some_and(serde_json::Value::is_string))
        {
            Some(m) => Err(format!(
                "jwks parse error: key {i} ({kty}) needs a {m:?} string member"
            )),
            None => Ok(()),
        }
    };
    match v.get("keys") {
        Some(serde_json::Value::Array(keys)) => {
            keys.iter().enumerate().try_for_each(|(i, k)| check(i, k))
        }
        Some(_) => Err("jwks parse error: \"keys\" must be an array".into()),
        None if v.get("kty").is_some() => check(0, &v),
        None => Err("jwks parse error: expected a JSON Web Key Set {\"keys\": [...]}".into()),
    }
}
