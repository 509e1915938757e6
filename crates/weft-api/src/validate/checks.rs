//! Field-level checks shared by the resource validators (ports of Istio's helpers).

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::LazyLock;

use regex::Regex;

use crate::common::{StringMatch, WorkloadSelector};
use crate::duration::Duration;
use crate::problem::FieldPath;
use crate::validate::Report;

const DNS1123_LABEL_MAX: usize = 63;
const DNS1123_LABEL: &str = "[a-zA-Z0-9](?:[-a-zA-Z0-9]*[a-zA-Z0-9])?";
/// Largest compiled program accepted for user regexes (Envoy's RE2 limit is comparable).
pub(crate) const REGEX_SIZE_LIMIT: usize = 1 << 20;
/// Largest regex source accepted (Istio's limit).
const REGEX_MAX_LEN: usize = 1024;

fn re(pattern: &str) -> Regex {
    // The patterns are compile-time constants covered by tests; a failure is a programming error.
    Regex::new(pattern).unwrap_or_else(|e| panic!("built-in regex {pattern:?} is invalid: {e}"))
}

static DNS1123_LABEL_RE: LazyLock<Regex> = LazyLock::new(|| re(&format!("^{DNS1123_LABEL}$")));
static WILDCARD_LABEL_RE: LazyLock<Regex> =
    LazyLock::new(|| re(&format!(r"^(\*|(\*|\*-)?{DNS1123_LABEL})$")));
static QUALIFIED_NAME: &str = "(?:[A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]";
static TAG_KEY_RE: LazyLock<Regex> = LazyLock::new(|| {
    re(&format!(
        r"^({DNS1123_LABEL}(?:\.{DNS1123_LABEL})*/)?({QUALIFIED_NAME})$"
    ))
});
static LABEL_VALUE_RE: LazyLock<Regex> = LazyLock::new(|| re(&format!("^({QUALIFIED_NAME})?$")));

/// RFC 1123 label (letters of either case, digits, inner dashes; ≤ 63 characters).
pub(crate) fn is_dns1123_label(v: &str) -> bool {
    v.len() <= DNS1123_LABEL_MAX && DNS1123_LABEL_RE.is_match(v)
}

/// A DNS label optionally prefixed by `*` / `*-`, or `*` alone.
pub(crate) fn is_wildcard_dns1123_label(v: &str) -> bool {
    v.len() <= DNS1123_LABEL_MAX && WILDCARD_LABEL_RE.is_match(v)
}

/// Kubernetes object name rules (lowercase DNS-1123 subdomain).
pub(crate) fn validate_object_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 253
        && name
            .split('.')
            .all(|l| is_dns1123_label(l) && !l.chars().any(|c| c.is_ascii_uppercase()));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid name {name:?}: use lowercase letters, digits, '-' and '.', starting and ending with a letter or digit"
        ))
    }
}

/// Kubernetes namespace rules (lowercase DNS-1123 label).
pub(crate) fn validate_namespace_name(ns: &str) -> Result<(), String> {
    if is_dns1123_label(ns) && !ns.chars().any(|c| c.is_ascii_uppercase()) {
        Ok(())
    } else {
        Err(format!(
            "invalid namespace {ns:?}: use lowercase letters, digits and '-' (at most 63 characters)"
        ))
    }
}

/// Port number in 1..=65535.
pub(crate) fn validate_port(port: i64) -> Result<(), String> {
    if (1..=65535).contains(&port) {
        Ok(())
    } else {
        Err(format!("port number {port} must be in the range 1..65535"))
    }
}

fn dns1123_preconditions(name: &str) -> Result<(), String> {
    if name.len() > 255 {
        return Err(format!("domain name {name:?} too long (max 255)"));
    }
    if name.is_empty() {
        return Err("empty domain name not allowed".into());
    }
    Ok(())
}

fn validate_dns1123_labels(domain: &str) -> Result<(), String> {
    let parts: Vec<&str> = domain.split('.').collect();
    let tld = parts.last().copied().unwrap_or_default();
    if !tld.is_empty() && tld.chars().all(|c| c.is_ascii_digit()) {
        return Err(format!(
            "domain name {domain:?} invalid (top level domain {tld:?} cannot be all-numeric)"
        ));
    }
    for (i, label) in parts.iter().enumerate() {
        if i == parts.len() - 1 && label.is_empty() {
            return Ok(());
        }
        if !is_dns1123_label(label) {
            return Err(format!(
                "domain name {domain:?} invalid (label {label:?} invalid)"
            ));
        }
    }
    Ok(())
}

/// A fully-qualified (or short) domain name without wildcards.
pub(crate) fn validate_fqdn(fqdn: &str) -> Result<(), String> {
    dns1123_preconditions(fqdn)?;
    validate_dns1123_labels(fqdn)
}

/// A domain name that may start with a `*` wildcard label (`*.example.com`, `*`).
pub(crate) fn validate_wildcard_domain(domain: &str) -> Result<(), String> {
    dns1123_preconditions(domain)?;
    let (first, rest) = match domain.split_once('.') {
        Some((f, r)) => (f, Some(r)),
        None => (domain, None),
    };
    if !is_wildcard_dns1123_label(first) {
        return Err(format!(
            "domain name {domain:?} invalid (label {first:?} invalid); wildcards are only allowed as a leading \"*.\""
        ));
    }
    match rest {
        Some(r) => validate_dns1123_labels(r),
        None => Ok(()),
    }
}

/// An IP address.
pub(crate) fn validate_ip(addr: &str) -> Result<(), String> {
    addr.parse::<IpAddr>()
        .map(|_| ())
        .map_err(|_| format!("{addr} is not a valid IP address"))
}

/// An IP address or CIDR block.
pub(crate) fn validate_ip_subnet(subnet: &str) -> Result<(), String> {
    if subnet.matches('/').count() == 1 {
        parse_cidr(subnet).map(|_| ())
    } else {
        validate_ip(subnet)
    }
}

/// Parses a CIDR like Go's `net.ParseCIDR` (host bits may be set).
pub(crate) fn parse_cidr(s: &str) -> Result<ipnet::IpNet, String> {
    s.parse::<ipnet::IpNet>()
        .map_err(|_| format!("{s} is not a valid CIDR block"))
}

/// A list of IPs or CIDRs (AuthorizationPolicy `ipBlocks`, `source.ip` values).
pub(crate) fn validate_ips(r: &mut Report, path: &FieldPath, ips: &[String]) {
    for (i, v) in ips.iter().enumerate() {
        let res = if v.contains('/') {
            parse_cidr(v)
                .map(|_| ())
                .map_err(|_| format!("bad CIDR range ({v})"))
        } else {
            validate_ip(v).map_err(|_| format!("bad IP address ({v})"))
        };
        r.check(&path.idx(i), res);
    }
}

/// A Unix socket path (after the `unix://` prefix).
pub(crate) fn validate_unix_address(addr: &str) -> Result<(), String> {
    if addr.is_empty() {
        return Err("unix address must not be empty".into());
    }
    if addr.starts_with('@') {
        return Ok(());
    }
    if !addr.starts_with('/') || addr.ends_with('/') {
        return Err(format!("{addr} is not an absolute path to a file"));
    }
    Ok(())
}

/// A `host:port` address with a valid port and a hostname or IP.
pub(crate) fn validate_proxy_address(addr: &str) -> Result<(), String> {
    let (host, port) = split_host_port(addr)?;
    let port: i64 = port
        .parse()
        .map_err(|_| format!("port ({port}) is not a number"))?;
    validate_port(port)?;
    if validate_fqdn(host).is_err() && host.parse::<IpAddr>().is_err() {
        return Err(format!("{host:?} is not a valid hostname or an IP address"));
    }
    Ok(())
}

/// Splits `host:port` / `[v6]:port` like Go's `net.SplitHostPort`.
pub(crate) fn split_host_port(addr: &str) -> Result<(&str, &str), String> {
    if let Some(rest) = addr.strip_prefix('[') {
        let (host, after) = rest
            .split_once(']')
            .ok_or_else(|| format!("address {addr}: missing ']'"))?;
        let port = after
            .strip_prefix(':')
            .ok_or_else(|| format!("address {addr}: missing port"))?;
        return Ok((host, port));
    }
    let (host, port) = addr
        .rsplit_once(':')
        .ok_or_else(|| format!("address {addr}: missing port in address"))?;
    if host.contains(':') {
        return Err(format!("address {addr}: too many colons"));
    }
    Ok((host, port))
}

/// Label map keys and values (Istio `labels.Instance.Validate`).
pub(crate) fn validate_labels(r: &mut Report, path: &FieldPath, labels: &BTreeMap<String, String>) {
    for (k, v) in labels {
        validate_label(r, &path.key(k.as_str()), k, v);
    }
}

fn validate_label(r: &mut Report, p: &FieldPath, k: &str, v: &str) {
    match TAG_KEY_RE.captures(k) {
        None => r.err(p, format!("invalid label key {k:?}")),
        Some(c) => {
            if c.get(1).is_some_and(|m| m.as_str().len() - 1 > 253) {
                r.err(
                    p,
                    format!("invalid label key {k:?} (DNS prefix is too long)"),
                );
            }
            if c.get(2)
                .is_some_and(|m| m.as_str().len() > DNS1123_LABEL_MAX)
            {
                r.err(p, format!("invalid label key {k:?} (name is too long)"));
            }
        }
    }
    if !LABEL_VALUE_RE.is_match(v) || v.len() > DNS1123_LABEL_MAX {
        r.err(
            p,
            format!(
                "invalid label value {v:?}: use at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit"
            ),
        );
    }
}

/// `selector.matchLabels`: no empty keys, no wildcards, valid label syntax.
pub(crate) fn validate_workload_selector(
    r: &mut Report,
    path: &FieldPath,
    sel: Option<&WorkloadSelector>,
) {
    if let Some(sel) = sel {
        let p = path.key("matchLabels");
        selector_labels(r, &p, &sel.match_labels);
    }
}

/// Selector label maps (`matchLabels`, `workloadSelector.labels`).
pub(crate) fn selector_labels(r: &mut Report, p: &FieldPath, labels: &BTreeMap<String, String>) {
    for (k, v) in labels {
        let kp = p.key(k.as_str());
        if k.is_empty() {
            r.err(
                &kp,
                format!("empty key is not supported in selector: \"={v}\""),
            );
        } else if k.contains('*') || v.contains('*') {
            r.err(
                &kp,
                format!("wildcard is not supported in selector: \"{k}={v}\""),
            );
        } else {
            validate_label(r, &kp, k, v);
        }
    }
}

/// Durations Istio requires to be ≥ 1ms with millisecond precision.
pub(crate) fn validate_duration(d: Duration) -> Result<(), String> {
    let d = d.get();
    if d < std::time::Duration::from_millis(1) {
        return Err("duration must be at least 1ms".into());
    }
    if !d.subsec_nanos().is_multiple_of(1_000_000) {
        return Err("only durations to ms precision are supported".into());
    }
    Ok(())
}

/// Integer percentage 0..=100.
pub(crate) fn validate_percent(v: i64) -> Result<(), String> {
    if (0..=100).contains(&v) {
        Ok(())
    } else {
        Err(format!("percentage {v} is not in range 0..100"))
    }
}

/// Fractional percentage: 0, or 0.0001..=100.
pub(crate) fn validate_percentage(v: f64) -> Result<(), String> {
    if !(0.0..=100.0).contains(&v) || (v > 0.0 && v < 0.0001) {
        Err(format!(
            "percentage {v} is neither 0.0, nor in range [0.0001, 100.0]"
        ))
    } else {
        Ok(())
    }
}

/// Compiles a user regex with Weft's size limit.
pub(crate) fn compile_regex(pattern: &str) -> Result<Regex, String> {
    if pattern.len() > REGEX_MAX_LEN {
        return Err(format!(
            "regex is too large ({} bytes); the maximum is {REGEX_MAX_LEN}",
            pattern.len()
        ));
    }
    regex::RegexBuilder::new(pattern)
        .size_limit(REGEX_SIZE_LIMIT)
        .build()
        .map_err(|e| {
            format!("invalid regex {pattern:?}: {e}; Istio uses RE2 syntax (https://github.com/google/re2/wiki/Syntax)")
        })
}

/// How many matchers a StringMatch position may carry.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum MatchArity {
    /// Exactly one of exact/prefix/regex.
    ExactlyOne,
    /// Zero (presence check) or one.
    AtMostOne,
}

/// Checks a StringMatch: arity, non-empty regex that compiles.
pub(crate) fn validate_string_match(
    r: &mut Report,
    path: &FieldPath,
    m: &StringMatch,
    arity: MatchArity,
) {
    let n = m.count_set();
    if n > 1 {
        r.err(path, "set only one of exact, prefix or regex");
    } else if n == 0 && arity == MatchArity::ExactlyOne {
        r.err(path, "set one of exact, prefix or regex");
    }
    if let Some(re) = &m.regex {
        if re.is_empty() {
            r.err(&path.key("regex"), "regex string match should not be empty");
        } else if let Err(e) = compile_regex(re) {
            r.err(&path.key("regex"), e);
        }
    }
}

/// Header names used in matches: non-empty and lowercase.
pub(crate) fn validate_match_header_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("header name cannot be empty".into());
    }
    if name.chars().any(|c| c.is_ascii_uppercase()) {
        return Err(format!("header name {name:?} must be lowercase"));
    }
    Ok(())
}

/// Header value templates: `%` must be paired.
pub(crate) fn validate_header_value(value: &str) -> Result<(), String> {
    if !value.matches('%').count().is_multiple_of(2) {
        return Err(
            "single % not allowed; escape it as %% or enclose an Envoy variable in a pair of %"
                .into(),
        );
    }
    Ok(())
}

fn is_internal_header(k: &str) -> bool {
    k.starts_with(':') || k.eq_ignore_ascii_case("host")
}

/// Header names for request set/add on an HTTP route (`:authority` / `host` allowed).
pub(crate) fn validate_header_authority_op(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("header name cannot be empty".into());
    }
    let authority = name.eq_ignore_ascii_case(":authority") || name.eq_ignore_ascii_case("host");
    if is_internal_header(name) && !authority {
        return Err(format!(
            "invalid header {name:?}: header cannot have \":\" prefix"
        ));
    }
    Ok(())
}

/// Header names for request set/add on a route destination (`host` allowed).
pub(crate) fn validate_header_host_op(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("header name cannot be empty".into());
    }
    if is_internal_header(name) && !name.eq_ignore_ascii_case("host") {
        return Err(format!(
            "invalid header {name:?}: header cannot have \":\" prefix"
        ));
    }
    Ok(())
}

/// Header names for removal and response operations.
pub(crate) fn validate_header_op(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("header name cannot be empty".into());
    }
    if name.eq_ignore_ascii_case("host") {
        return Err(format!("invalid header {name:?}: cannot set Host header"));
    }
    if is_internal_header(name) {
        return Err(format!(
            "invalid header {name:?}: header cannot have \":\" prefix"
        ));
    }
    Ok(())
}

/// Port names: DNS-1123 labels.
pub(crate) fn validate_port_name(name: &str) -> Result<(), String> {
    if is_dns1123_label(name) {
        Ok(())
    } else {
        Err(format!(
            "invalid port name {name:?}: use letters, digits and '-' (at most 63 characters)"
        ))
    }
}

/// Port protocols: empty (sniffing) or a known protocol name.
pub(crate) fn validate_protocol(p: &str) -> Result<(), String> {
    if !p.is_empty()
        && crate::protocol::Protocol::from_istio_name(p) == crate::protocol::Protocol::Unsupported
    {
        return Err(format!(
            "unsupported protocol {p:?}; use one of HTTP, HTTPS, HTTP2, GRPC, GRPC-WEB, TCP, TLS, MONGO, REDIS, MYSQL, UDP"
        ));
    }
    Ok(())
}

/// `exportTo` entries: `.`, `*`, `~` (ServiceEntry only) or namespace names, without duplicates.
pub(crate) fn validate_export_to(
    r: &mut Report,
    path: &FieldPath,
    namespace: &str,
    export_to: &[String],
    is_service_entry: bool,
    dr_with_selector: bool,
) {
    if export_to.is_empty() {
        return;
    }
    let mut seen: BTreeSet<String> = BTreeSet::new();
    for (i, e) in export_to.iter().enumerate() {
        let p = path.idx(i);
        let key = if e == "." {
            namespace.to_owned()
        } else {
            e.clone()
        };
        if seen.contains(&key) {
            if key != *e {
                r.err(
                    &p,
                    format!("duplicate entries in exportTo: . and current namespace {namespace}"),
                );
            } else {
                r.err(&p, format!("duplicate entries in exportTo for entry {e}"));
            }
            continue;
        }
        if e == "~" {
            if is_service_entry {
                seen.insert(key);
            } else {
                r.err(&p, "exportTo \"~\" is only allowed in ServiceEntry");
            }
            continue;
        }
        if key == "*" || is_dns1123_label(&key) {
            seen.insert(key);
        } else {
            r.err(
                &p,
                format!("invalid exportTo value {e:?}: use \".\", \"*\" or a namespace name"),
            );
        }
    }
    if dr_with_selector && !seen.is_empty() {
        if seen.contains(namespace) {
            if seen.len() > 1 {
                r.err(path, "destination rule with workload selector cannot have multiple entries in exportTo");
            }
        } else {
            r.err(path, "destination rule with workload selector cannot have exportTo beyond current namespace");
        }
    }
    if seen.contains("*") && export_to.len() > 1 {
        r.err(
            path,
            "cannot have both public (*) and non-public exportTo values for a resource",
        );
    }
    if seen.contains("~") && export_to.len() > 1 {
        r.err(
            path,
            "cannot export service entry to no one (~) and someone",
        );
    }
}

/// Gateway references: `ns/name`, `mesh`, or a legacy FQDN / short name.
pub(crate) fn validate_gateway_names(r: &mut Report, path: &FieldPath, names: &[String]) {
    for (i, g) in names.iter().enumerate() {
        let p = path.idx(i);
        match g.split_once('/') {
            None => r.check(&p, validate_fqdn(g)),
            Some((ns, name)) => {
                if ns.is_empty() || name.is_empty() {
                    r.err(&p, "config namespace and gateway name cannot be empty");
                }
                if !is_dns1123_label(ns) {
                    r.err(&p, format!("invalid value for namespace: {ns:?}"));
                }
                if !is_dns1123_label(name) {
                    r.err(&p, format!("invalid value for gateway name: {name:?}"));
                }
            }
        }
    }
}

fn validate_gateway_or_sidecar_host_part(hostname: &str, is_gateway: bool) -> Vec<String> {
    let mut errs = Vec::new();
    if hostname != "*" && !hostname.contains('.') {
        errs.push(format!(
            "short names (non FQDN) are not allowed: {hostname:?}"
        ));
    }
    if let Err(e) = validate_wildcard_domain(hostname)
        && (!is_gateway || hostname.parse::<IpAddr>().is_err())
    {
        errs.push(e);
    }
    errs
}

/// Sidecar egress / Gateway server hosts: `namespace/dnsName` (gateways also accept bare hosts).
pub(crate) fn validate_namespace_slash_host(hostname: &str, is_gateway: bool) -> Vec<String> {
    let Some((ns, host)) = hostname.split_once('/') else {
        if is_gateway {
            return validate_gateway_or_sidecar_host_part(hostname, true);
        }
        return vec![format!(
            "host {hostname:?} must be of form namespace/dnsName, e.g. \"./*\" or \"istio-system/*\""
        )];
    };
    let mut errs = Vec::new();
    if ns.is_empty() || host.is_empty() {
        errs.push("config namespace and dnsName in host entry cannot be empty".into());
    }
    let special: &[&str] = if is_gateway {
        &["*", "."]
    } else {
        &["*", ".", "~"]
    };
    if !special.contains(&ns) && !is_dns1123_label(ns) {
        let what = if is_gateway { "gateway" } else { "sidecar" };
        errs.push(format!("invalid namespace value {ns:?} in {what}"));
    }
    errs.extend(validate_gateway_or_sidecar_host_part(host, is_gateway));
    errs
}

/// Locality lists: at most one trailing `*`, no empty parts, no overlaps.
pub(crate) fn validate_localities(localities: &[&str]) -> Result<(), String> {
    // region → zone → subzones; "*" marks a wildcard at that level.
    let mut seen: BTreeMap<String, BTreeMap<String, BTreeSet<String>>> = BTreeMap::new();
    for loc in localities {
        let stars = loc.matches('*').count();
        if stars > 1 || (stars == 1 && !loc.ends_with('*')) {
            return Err(format!(
                "locality {loc} wildcard '*' number can not exceed 1 and must be in the end"
            ));
        }
        if seen.contains_key("*") {
            return Err(format!(
                "locality {loc} overlap with previous specified ones"
            ));
        }
        let items: Vec<&str> = loc.splitn(3, '/').collect();
        if items.iter().any(|i| i.is_empty()) {
            return Err(format!(
                "locality {loc} must not contain empty region/zone/subzone info"
            ));
        }
        let overlap = || format!("locality {loc} overlap with previous specified ones");
        let region = items[0].to_owned();
        match items.len() {
            1 => {
                if seen.contains_key(&region) {
                    return Err(overlap());
                }
                seen.insert(
                    region,
                    BTreeMap::from([("*".into(), BTreeSet::from(["*".into()]))]),
                );
            }
            2 => {
                let zone = items[1].to_owned();
                let zones = seen.entry(region).or_default();
                if zones.contains_key("*") || zones.contains_key(&zone) {
                    return Err(overlap());
                }
                zones.insert(zone, BTreeSet::from(["*".into()]));
            }
            _ => {
                let zone = items[1].to_owned();
                let sub = items[2].to_owned();
                let zones = seen.entry(region).or_default();
                if zones.contains_key("*") {
                    return Err(overlap());
                }
                let subs = zones.entry(zone).or_default();
                if subs.contains("*") || subs.contains(&sub) {
                    return Err(overlap());
                }
                subs.insert(sub);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domains() {
        assert!(validate_wildcard_domain("*.example.com").is_ok());
        assert!(validate_wildcard_domain("*").is_ok());
        assert!(validate_wildcard_domain("reviews").is_ok());
        assert!(validate_wildcard_domain("reviews.default.svc.cluster.local").is_ok());
        assert!(validate_wildcard_domain("foo.*.com").is_err());
        assert!(validate_wildcard_domain("").is_err());
        assert!(validate_wildcard_domain("a..b").is_err());
        assert!(validate_wildcard_domain("example.123").is_err());
        assert!(validate_fqdn("istio.io.").is_ok());
        assert!(validate_fqdn("*.istio.io").is_err());
    }

    #[test]
    fn labels_and_names() {
        let mut r = Report::default();
        let mut m = BTreeMap::new();
        m.insert("app.kubernetes.io/name".to_string(), "reviews".to_string());
        m.insert("version".to_string(), "".to_string());
        validate_labels(&mut r, &FieldPath::root(), &m);
        assert!(r.items.is_empty(), "{:?}", r.items);
        m.insert("bad key!".into(), "v".into());
        m.insert("ok".into(), "-bad".into());
        validate_labels(&mut r, &FieldPath::root(), &m);
        assert_eq!(r.items.len(), 2);
        assert!(validate_object_name("reviews-v1.x").is_ok());
        assert!(validate_object_name("Reviews").is_err());
        assert!(validate_namespace_name("istio-system").is_ok());
        assert!(validate_namespace_name("a.b").is_err());
    }

    #[test]
    fn addresses() {
        assert!(validate_ip_subnet("10.0.0.0/8").is_ok());
        assert!(validate_ip_subnet("2001:db8::/32").is_ok());
        assert!(validate_ip_subnet("10.0.0.1").is_ok());
        assert!(validate_ip_subnet("10.0.0.0/33").is_err());
        assert!(validate_ip_subnet("10.0.0/8").is_err());
        assert!(validate_proxy_address("istiod.istio-system.svc:15012").is_ok());
        assert!(validate_proxy_address("[::1]:15012").is_ok());
        assert!(validate_proxy_address("istiod:0").is_err());
        assert!(validate_proxy_address("istiod").is_err());
        assert!(validate_unix_address("/var/run/x.sock").is_ok());
        assert!(validate_unix_address("relative").is_err());
    }

    #[test]
    fn durations_and_regexes() {
        assert!(validate_duration(Duration::from_millis(1)).is_ok());
        assert!(validate_duration(Duration::from_millis(0)).is_err());
        assert!(validate_duration(Duration(std::time::Duration::from_micros(1500))).is_err());
        assert!(compile_regex("^/api/v[0-9]+").is_ok());
        assert!(compile_regex("(unclosed").is_err());
        assert!(compile_regex(&"a".repeat(2000)).is_err());
    }

    #[test]
    fn localities() {
        assert!(validate_localities(&["us-east/zone1", "us-west/*"]).is_ok());
        assert!(validate_localities(&["us-east", "us-east/zone1"]).is_err());
        assert!(validate_localities(&["us-*/zone"]).is_err());
        assert!(validate_localities(&["us-east//z"]).is_err());
    }

    #[test]
    fn namespace_slash_hosts() {
        assert!(validate_namespace_slash_host("./*", false).is_empty());
        assert!(validate_namespace_slash_host("istio-system/*", false).is_empty());
        assert!(validate_namespace_slash_host("*/*.example.com", false).is_empty());
        assert!(
            !validate_namespace_slash_host("reviews.default.svc.cluster.local", false).is_empty()
        );
        assert!(!validate_namespace_slash_host("./reviews", false).is_empty());
        assert!(validate_namespace_slash_host("bookinfo.com", true).is_empty());
        assert!(validate_namespace_slash_host("10.0.0.1", true).is_empty());
        assert!(!validate_namespace_slash_host("10.0.0.1", false).is_empty());
    }
}
