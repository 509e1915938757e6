//! Route tables: virtual hosts chosen by Host/:authority (exact, then suffix and prefix
//! wildcards, then `*`), routes in order (first match wins) by path prefix / exact path /
//! regex and headers, and their actions.

use crate::FastMap;
use std::sync::Arc;
use std::time::Duration;

use envoy_types::pb::envoy::config::route::v3 as route;
use envoy_types::pb::envoy::r#type::matcher::v3 as matcher;
use regex::Regex;

use super::filter::{Fraction, HeaderOps, PerRoute, RetryPolicy};
use crate::error::ProxyError;

#[derive(Debug, Clone)]
pub enum PathMatch {
    Prefix(String),
    Exact(String),
    Regex(Regex),
}

/// An Envoy `StringMatcher`, compiled.
#[derive(Debug, Clone)]
pub struct StrMatch {
    kind: StrKind,
    ignore_case: bool,
}

#[derive(Debug, Clone)]
enum StrKind {
    Exact(String),
    Prefix(String),
    Suffix(String),
    Contains(String),
    Regex(Regex),
}

impl StrMatch {
    pub fn compile(m: &matcher::StringMatcher, what: &str) -> Result<StrMatch, ProxyError> {
        use matcher::string_matcher::MatchPattern as P;
        let ic = m.ignore_case;
        let lower = |s: &str| {
            if ic {
                s.to_ascii_lowercase()
            } else {
                s.to_string()
            }
        };
        let kind = match &m.match_pattern {
            Some(P::Exact(s)) => StrKind::Exact(lower(s)),
            Some(P::Prefix(s)) => StrKind::Prefix(lower(s)),
            Some(P::Suffix(s)) => StrKind::Suffix(lower(s)),
            Some(P::Contains(s)) => StrKind::Contains(lower(s)),
            Some(P::SafeRegex(r)) => StrKind::Regex(regex(&r.regex, what)?),
            _ => {
                return Err(ProxyError::Config(format!(
                    "{what}: string matcher needs exact, prefix, suffix, contains or safe_regex"
                )));
            }
        };
        Ok(StrMatch {
            kind,
            ignore_case: ic,
        })
    }

    /// In words: `exact "jason"`, `prefix "/api", any case`.
    pub fn describe(&self) -> String {
        let (how, v) = match &self.kind {
            StrKind::Exact(e) => ("exact", e.as_str()),
            StrKind::Prefix(e) => ("prefix", e.as_str()),
            StrKind::Suffix(e) => ("suffix", e.as_str()),
            StrKind::Contains(e) => ("containing", e.as_str()),
            StrKind::Regex(r) => ("regex", r.as_str()),
        };
        let case = if self.ignore_case { ", any case" } else { "" };
        format!("{how} {v:?}{case}")
    }

    pub fn matches(&self, v: &str) -> bool {
        if self.ignore_case {
            // The pattern is stored lowercase: compare without lowercasing the value.
            let v = v.as_bytes();
            return match &self.kind {
                StrKind::Exact(e) => v.eq_ignore_ascii_case(e.as_bytes()),
                StrKind::Prefix(e) => {
                    v.len() >= e.len() && v[..e.len()].eq_ignore_ascii_case(e.as_bytes())
                }
                StrKind::Suffix(e) => {
                    v.len() >= e.len() && v[v.len() - e.len()..].eq_ignore_ascii_case(e.as_bytes())
                }
                StrKind::Contains(e) => {
                    e.is_empty()
                        || v.windows(e.len())
                            .any(|w| w.eq_ignore_ascii_case(e.as_bytes()))
                }
                StrKind::Regex(r) => std::str::from_utf8(v).is_ok_and(|v| r.is_match(v)),
            };
        }
        match &self.kind {
            StrKind::Exact(e) => v == e,
            StrKind::Prefix(e) => v.starts_with(e.as_str()),
            StrKind::Suffix(e) => v.ends_with(e.as_str()),
            StrKind::Contains(e) => v.contains(e.as_str()),
            StrKind::Regex(r) => r.is_match(v),
        }
    }
}

#[derive(Debug, Clone)]
pub enum HeaderMatch {
    Str(StrMatch),
    Present(bool),
}

/// What a header matcher reads: a header, or one of HTTP/2's pseudo-headers (which Istio
/// uses for `method`, `authority` and `scheme` matches).
#[derive(Debug, Clone)]
pub enum HeaderKey {
    Header(http::HeaderName),
    Method,
    Authority,
    Scheme,
    Path,
}

#[derive(Debug, Clone)]
pub struct HeaderMatcher {
    pub key: HeaderKey,
    pub matcher: HeaderMatch,
    pub invert: bool,
}

#[derive(Debug, Clone)]
pub struct QueryMatcher {
    pub name: String,
    /// None: the parameter must be present.
    pub matcher: Option<StrMatch>,
}

impl HeaderMatcher {
    /// The value this matcher reads from the request.
    fn value<'r>(&self, req: &RequestInfo<'r>) -> Option<&'r str> {
        match &self.key {
            HeaderKey::Header(name) => req.headers.get(name).and_then(|v| v.to_str().ok()),
            HeaderKey::Method => Some(req.method),
            HeaderKey::Authority => Some(req.authority),
            HeaderKey::Scheme => Some(req.scheme),
            HeaderKey::Path => Some(req.path),
        }
    }

    fn matches(&self, req: &RequestInfo) -> bool {
        let m = match (&self.matcher, self.value(req)) {
            (HeaderMatch::Present(p), v) => v.is_some() == *p,
            (_, None) => false,
            (HeaderMatch::Str(s), Some(v)) => s.matches(v),
        };
        m != self.invert
    }
}

impl QueryMatcher {
    /// Whether the query string (without the `?`) satisfies this matcher.
    fn matches(&self, query: &str) -> bool {
        match query_param(query, &self.name) {
            None => false,
            Some(v) => self.matcher.as_ref().is_none_or(|m| m.matches(v)),
        }
    }
}

/// One destination of a weighted route.
#[derive(Debug, Clone)]
pub struct Weighted {
    pub cluster: Arc<str>,
    pub weight: u32,
    pub request_headers: HeaderOps,
    pub response_headers: HeaderOps,
}

/// A redirect answer (Envoy's RedirectAction).
#[derive(Debug, Clone)]
pub struct Redirect {
    pub scheme: Option<String>,
    pub host: Option<String>,
    pub port: Option<u16>,
    pub path: Option<String>,
    pub status: u16,
}

#[derive(Debug, Clone)]
pub enum Action {
    Cluster(Arc<str>),
    Weighted(Vec<Weighted>),
    Direct { status: u16, body: String },
    Redirect(Redirect),
}

/// What a consistent-hash route hashes on.
#[derive(Debug, Clone)]
pub enum HashOn {
    Header(http::HeaderName),
    /// A cookie; with a TTL the proxy sets it when the request lacks it.
    Cookie {
        name: String,
        path: String,
        ttl: Option<Duration>,
    },
    SourceIp,
    Query(String),
}

#[derive(Debug, Clone)]
pub struct Route {
    /// Shared: every request's access log entry names its route.
    pub name: Arc<str>,
    pub path: PathMatch,
    pub case_sensitive: bool,
    pub headers: Vec<HeaderMatcher>,
    pub query: Vec<QueryMatcher>,
    pub action: Action,
    /// Zero means no timeout (Istio's default for mesh routes).
    pub timeout: Duration,
    pub retry: Option<Arc<RetryPolicy>>,
    pub request_headers: HeaderOps,
    pub response_headers: HeaderOps,
    pub prefix_rewrite: Option<String>,
    pub host_rewrite: Option<String>,
    pub mirrors: Vec<(Arc<str>, Fraction)>,
    pub hash: Vec<HashOn>,
    pub per_filter: PerRoute,
    /// Istio's `block_all`/`allow_any` routes: the cluster telemetry names for them.
    pub fallthrough: Option<&'static str>,
}

#[derive(Debug, Clone)]
pub struct VirtualHost {
    pub name: String,
    pub domains: Vec<String>,
    pub routes: Vec<Route>,
}

#[derive(Debug, Clone)]
pub struct RouteTable {
    pub name: String,
    pub vhosts: Vec<VirtualHost>,
    /// Exact domains to their virtual host (the first that names one), so a request's
    /// lookup does not walk every domain of every service on the port.
    exact: FastMap<String, usize>,
    /// The wildcard domains and their virtual hosts, in order, but `*`.
    wildcards: Vec<(Wildcard, usize)>,
    /// The virtual host of the first `*` (every inbound route table's only domain).
    any: Option<usize>,
}

/// A wildcard domain, compiled: what it matches, and its rank and length in Envoy's order of
/// preference (suffix over prefix over `*`, longer over shorter).
#[derive(Debug, Clone)]
struct Wildcard {
    kind: WildcardKind,
    rank: (u8, usize),
}

#[derive(Debug, Clone)]
enum WildcardKind {
    /// `*.foo.com`: the rest ends the host.
    Suffix(String),
    /// `foo.*`: the rest starts the host.
    Prefix(String),
    /// `*`: any host.
    Any,
}

impl Wildcard {
    /// `domain` as a wildcard, when it is one.
    fn parse(domain: &str) -> Option<Wildcard> {
        let (kind, rank) = if domain == "*" {
            (WildcardKind::Any, (0, 0))
        } else if let Some(suffix) = domain.strip_prefix('*') {
            (WildcardKind::Suffix(suffix.to_string()), (2, domain.len()))
        } else {
            let prefix = domain.strip_suffix('*')?;
            (WildcardKind::Prefix(prefix.to_string()), (1, domain.len()))
        };
        Some(Wildcard { kind, rank })
    }

    fn matches(&self, host: &str) -> bool {
        match &self.kind {
            WildcardKind::Suffix(s) => host.ends_with(s.as_str()),
            WildcardKind::Prefix(p) => host.starts_with(p.as_str()),
            WildcardKind::Any => true,
        }
    }
}

/// The parts of a request routes match on.
pub struct RequestInfo<'a> {
    pub method: &'a str,
    pub authority: &'a str,
    pub scheme: &'a str,
    /// Path with query.
    pub path: &'a str,
    pub headers: &'a http::HeaderMap,
}

pub(crate) fn regex(s: &str, what: &str) -> Result<Regex, ProxyError> {
    // Bounded: a pattern's compiled program and its DFA cache stay under 1 MiB each.
    regex::RegexBuilder::new(&format!("^(?:{s})$"))
        .size_limit(1 << 20)
        .dfa_size_limit(1 << 20)
        .build()
        .map_err(|e| ProxyError::Config(format!("{what}: bad regex {s:?}: {e}")))
}

/// What an Envoy `HeaderMatcher` named `name` reads (names are case-insensitive); None for a
/// name that is no header name.
pub fn header_key(name: &str) -> Option<HeaderKey> {
    Some(match name.to_ascii_lowercase().as_str() {
        ":method" => HeaderKey::Method,
        ":authority" | "host" => HeaderKey::Authority,
        ":scheme" => HeaderKey::Scheme,
        ":path" => HeaderKey::Path,
        n => HeaderKey::Header(http::HeaderName::from_bytes(n.as_bytes()).ok()?),
    })
}

fn header_matcher(h: &route::HeaderMatcher, what: &str) -> Result<HeaderMatcher, ProxyError> {
    use route::header_matcher::HeaderMatchSpecifier as S;
    let key = header_key(&h.name)
        .ok_or_else(|| ProxyError::Config(format!("{what}: bad header name {:?}", h.name)))?;
    let exact = |s: &str| matcher::StringMatcher {
        match_pattern: Some(matcher::string_matcher::MatchPattern::Exact(s.to_string())),
        ignore_case: false,
    };
    let pattern = |p: matcher::string_matcher::MatchPattern| matcher::StringMatcher {
        match_pattern: Some(p),
        ignore_case: false,
    };
    use matcher::string_matcher::MatchPattern as P;
    #[allow(deprecated)]
    let matcher = match &h.header_match_specifier {
        Some(S::ExactMatch(s)) => HeaderMatch::Str(StrMatch::compile(&exact(s), what)?),
        Some(S::PrefixMatch(s)) => {
            HeaderMatch::Str(StrMatch::compile(&pattern(P::Prefix(s.clone())), what)?)
        }
        Some(S::SuffixMatch(s)) => {
            HeaderMatch::Str(StrMatch::compile(&pattern(P::Suffix(s.clone())), what)?)
        }
        Some(S::SafeRegexMatch(r)) => {
            HeaderMatch::Str(StrMatch::compile(&pattern(P::SafeRegex(r.clone())), what)?)
        }
        Some(S::PresentMatch(p)) => HeaderMatch::Present(*p),
        Some(S::StringMatch(m)) => HeaderMatch::Str(StrMatch::compile(m, what)?),
        _ => HeaderMatch::Present(true),
    };
    Ok(HeaderMatcher {
        key,
        matcher,
        invert: h.invert_match,
    })
}

fn query_matcher(q: &route::QueryParameterMatcher, what: &str) -> Result<QueryMatcher, ProxyError> {
    use route::query_parameter_matcher::QueryParameterMatchSpecifier as Q;
    Ok(QueryMatcher {
        name: q.name.clone(),
        matcher: match &q.query_parameter_match_specifier {
            Some(Q::StringMatch(m)) => Some(StrMatch::compile(m, what)?),
            _ => None,
        },
    })
}

fn dur(d: &envoy_types::pb::google::protobuf::Duration) -> Duration {
    Duration::new(d.seconds.max(0) as u64, d.nanos.max(0) as u32)
}

fn redirect(r: &route::RedirectAction) -> Redirect {
    use route::redirect_action::{
        PathRewriteSpecifier as P, RedirectResponseCode as C, SchemeRewriteSpecifier as S,
    };
    let status = match C::try_from(r.response_code).unwrap_or(C::MovedPermanently) {
        C::MovedPermanently => 301,
        C::Found => 302,
        C::SeeOther => 303,
        C::TemporaryRedirect => 307,
        C::PermanentRedirect => 308,
    };
    Redirect {
        scheme: match &r.scheme_rewrite_specifier {
            Some(S::SchemeRedirect(s)) => Some(s.clone()),
            Some(S::HttpsRedirect(true)) => Some("https".into()),
            _ => None,
        },
        host: Some(r.host_redirect.clone()).filter(|h| !h.is_empty()),
        port: u16::try_from(r.port_redirect).ok().filter(|p| *p != 0),
        path: match &r.path_rewrite_specifier {
            Some(P::PathRedirect(p)) => Some(p.clone()),
            _ => None,
        },
        status,
    }
}

fn hash_policy(
    h: &route::route_action::HashPolicy,
    what: &str,
) -> Result<Option<HashOn>, ProxyError> {
    use route::route_action::hash_policy::PolicySpecifier as S;
    Ok(match &h.policy_specifier {
        Some(S::Header(hd)) => Some(HashOn::Header(
            http::HeaderName::from_bytes(hd.header_name.as_bytes()).map_err(|_| {
                ProxyError::Config(format!(
                    "{what}: hash policy: bad header {:?}",
                    hd.header_name
                ))
            })?,
        )),
        Some(S::Cookie(c)) => Some(HashOn::Cookie {
            name: c.name.clone(),
            path: c.path.clone(),
            ttl: c.ttl.as_ref().map(dur),
        }),
        Some(S::ConnectionProperties(p)) if p.source_ip => Some(HashOn::SourceIp),
        Some(S::QueryParameter(q)) => Some(HashOn::Query(q.name.clone())),
        _ => None,
    })
}

fn route_action(ra: &route::RouteAction, r: &mut Route, what: &str) -> Result<(), ProxyError> {
    use route::route_action::ClusterSpecifier as C;
    r.action = match &ra.cluster_specifier {
        Some(C::Cluster(c)) => Action::Cluster(c.as_str().into()),
        Some(C::WeightedClusters(w)) => Action::Weighted(
            w.clusters
                .iter()
                .map(|c| {
                    Ok(Weighted {
                        cluster: c.name.as_str().into(),
                        weight: c.weight.as_ref().map(|w| w.value).unwrap_or(0),
                        request_headers: HeaderOps::compile(
                            &c.request_headers_to_add,
                            &c.request_headers_to_remove,
                            what,
                        )?,
                        response_headers: HeaderOps::compile(
                            &c.response_headers_to_add,
                            &c.response_headers_to_remove,
                            what,
                        )?,
                    })
                })
                .collect::<Result<_, ProxyError>>()?,
        ),
        _ => {
            return Err(ProxyError::Config(format!(
                "{what}: route action needs cluster or weighted_clusters"
            )));
        }
    };
    if let Some(rp) = &ra.retry_policy {
        r.retry = Some(Arc::new(RetryPolicy::compile(rp, what)?));
    }
    r.timeout = ra
        .timeout
        .as_ref()
        .map(dur)
        .unwrap_or(Duration::from_secs(15));
    r.prefix_rewrite = Some(ra.prefix_rewrite.clone()).filter(|p| !p.is_empty());
    use route::route_action::HostRewriteSpecifier as H;
    r.host_rewrite = match &ra.host_rewrite_specifier {
        Some(H::HostRewriteLiteral(h)) if !h.is_empty() => Some(h.clone()),
        _ => None,
    };
    r.mirrors = ra
        .request_mirror_policies
        .iter()
        .map(|m| {
            (
                Arc::from(m.cluster.as_str()),
                Fraction::from_envoy(
                    m.runtime_fraction
                        .as_ref()
                        .and_then(|f| f.default_value.as_ref()),
                ),
            )
        })
        .collect();
    r.hash = ra
        .hash_policy
        .iter()
        .map(|h| hash_policy(h, what))
        .collect::<Result<Vec<_>, _>>()?
        .into_iter()
        .flatten()
        .collect();
    Ok(())
}

fn compile_route(r: &route::Route, what: &str) -> Result<Route, ProxyError> {
    let m = r.r#match.clone().unwrap_or_default();
    use route::route_match::PathSpecifier as P;
    let path = match m.path_specifier {
        Some(P::Prefix(p)) => PathMatch::Prefix(p),
        Some(P::Path(p)) => PathMatch::Exact(p),
        Some(P::SafeRegex(r)) => PathMatch::Regex(regex(&r.regex, what)?),
        Some(P::PathSeparatedPrefix(p)) => PathMatch::Prefix(p),
        _ => PathMatch::Prefix(String::new()),
    };
    let mut out = Route {
        fallthrough: match r.name.as_str() {
            "block_all" => Some("BlackHoleCluster"),
            "allow_any" => Some("PassthroughCluster"),
            _ => None,
        },
        name: r.name.as_str().into(),
        path,
        case_sensitive: m.case_sensitive.as_ref().is_none_or(|b| b.value),
        headers: m
            .headers
            .iter()
            .map(|h| header_matcher(h, what))
            .collect::<Result<Vec<_>, _>>()?,
        query: m
            .query_parameters
            .iter()
            .map(|q| query_matcher(q, what))
            .collect::<Result<Vec<_>, _>>()?,
        action: Action::Direct {
            status: 404,
            body: String::new(),
        },
        timeout: Duration::ZERO,
        retry: None,
        request_headers: HeaderOps::compile(
            &r.request_headers_to_add,
            &r.request_headers_to_remove,
            what,
        )?,
        response_headers: HeaderOps::compile(
            &r.response_headers_to_add,
            &r.response_headers_to_remove,
            what,
        )?,
        prefix_rewrite: None,
        host_rewrite: None,
        mirrors: Vec::new(),
        hash: Vec::new(),
        per_filter: PerRoute::compile(&r.typed_per_filter_config, what)?,
    };
    match &r.action {
        Some(route::route::Action::Route(ra)) => route_action(ra, &mut out, what)?,
        Some(route::route::Action::DirectResponse(d)) => {
            let body = match d.body.as_ref().and_then(|b| b.specifier.as_ref()) {
                Some(
                    envoy_types::pb::envoy::config::core::v3::data_source::Specifier::InlineString(
                        s,
                    ),
                ) => s.clone(),
                _ => String::new(),
            };
            out.action = Action::Direct {
                status: d.status as u16,
                body,
            };
        }
        Some(route::route::Action::Redirect(rd)) => out.action = Action::Redirect(redirect(rd)),
        _ => {
            return Err(ProxyError::Config(format!(
                "{what}: only route, redirect and direct_response actions are supported"
            )));
        }
    }
    Ok(out)
}

pub fn compile(rc: &route::RouteConfiguration) -> Result<RouteTable, ProxyError> {
    let mut vhosts = Vec::new();
    for vh in &rc.virtual_hosts {
        let mut routes = Vec::new();
        for (i, r) in vh.routes.iter().enumerate() {
            let what = format!(
                "route config {}: virtual host {}: routes[{i}]",
                rc.name, vh.name
            );
            routes.push(compile_route(r, &what)?);
        }
        vhosts.push(VirtualHost {
            name: vh.name.clone(),
            domains: vh.domains.iter().map(|d| d.to_ascii_lowercase()).collect(),
            routes,
        });
    }
    let mut exact = FastMap::default();
    let mut wildcards = Vec::new();
    let mut any = None;
    for (i, vh) in vhosts.iter().enumerate() {
        for d in &vh.domains {
            match Wildcard::parse(d) {
                Some(Wildcard {
                    kind: WildcardKind::Any,
                    ..
                }) => {
                    any = any.or(Some(i));
                }
                Some(w) => wildcards.push((w, i)),
                None => {
                    exact.entry(d.clone()).or_insert(i);
                }
            }
        }
    }
    Ok(RouteTable {
        name: rc.name.clone(),
        vhosts,
        exact,
        wildcards,
        any,
    })
}

impl RouteTable {
    /// Envoy's virtual host selection: exact domain, then the longest suffix wildcard
    /// (`*.foo.com`), then the longest prefix wildcard (`foo.*`), then `*`.
    pub fn vhost(&self, authority: &str) -> Option<&VirtualHost> {
        if self.exact.is_empty() && self.wildcards.is_empty() {
            return self.any.and_then(|i| self.vhosts.get(i));
        }
        // Domains are compiled in lower case.
        let host = if authority.bytes().any(|b| b.is_ascii_uppercase()) {
            std::borrow::Cow::Owned(authority.to_ascii_lowercase())
        } else {
            std::borrow::Cow::Borrowed(authority)
        };
        if let Some(&i) = self.exact.get(&*host) {
            return self.vhosts.get(i);
        }
        // The best-ranked match; the first of equals.
        let mut best: Option<&(Wildcard, usize)> = None;
        for w in self.wildcards.iter().filter(|(w, _)| w.matches(&host)) {
            if best.is_none_or(|(b, _)| w.0.rank > b.rank) {
                best = Some(w);
            }
        }
        best.map(|(_, i)| *i)
            .or(self.any)
            .and_then(|i| self.vhosts.get(i))
    }
}

/// The value of query parameter `name` in `query` (raw, not percent-decoded).
fn query_param<'a>(query: &'a str, name: &str) -> Option<&'a str> {
    query.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        (k == name).then_some(v)
    })
}

impl Route {
    pub fn matches(&self, req: &RequestInfo) -> bool {
        let (path_only, query) = req.path.split_once('?').unwrap_or((req.path, ""));
        self.path_matches(path_only)
            && self.headers.iter().all(|h| h.matches(req))
            && self.query.iter().all(|q| q.matches(query))
    }

    /// The first condition of this route `req` fails, in words (`None`: the route matches).
    /// For `weft why`; the same checks as [`Self::matches`].
    pub fn mismatch(&self, req: &RequestInfo) -> Option<String> {
        let (path_only, query) = req.path.split_once('?').unwrap_or((req.path, ""));
        if !self.path_matches(path_only) {
            let (how, p) = match &self.path {
                PathMatch::Prefix(p) => ("prefix", p.as_str()),
                PathMatch::Exact(p) => ("exact", p.as_str()),
                PathMatch::Regex(r) => ("regex", r.as_str()),
            };
            let case = if self.case_sensitive {
                ""
            } else {
                ", any case"
            };
            return Some(format!("path {path_only:?} is not {how} {p:?}{case}"));
        }
        if let Some(h) = self.headers.iter().find(|h| !h.matches(req)) {
            let name = match &h.key {
                HeaderKey::Header(n) => n.as_str(),
                HeaderKey::Method => ":method",
                HeaderKey::Authority => ":authority",
                HeaderKey::Scheme => ":scheme",
                HeaderKey::Path => ":path",
            };
            let want = match &h.matcher {
                HeaderMatch::Present(true) => "present".to_string(),
                HeaderMatch::Present(false) => "absent".to_string(),
                HeaderMatch::Str(m) => m.describe(),
            };
            let not = if h.invert { "not " } else { "" };
            return Some(format!(
                "header {name}: {}, wanted {not}{want}",
                h.value(req)
                    .map_or_else(|| "none".to_string(), |v| format!("{v:?}"))
            ));
        }
        if let Some(q) = self.query.iter().find(|q| !q.matches(query)) {
            return Some(format!(
                "query parameter {}: wanted {}",
                q.name,
                q.matcher
                    .as_ref()
                    .map_or("present".into(), StrMatch::describe)
            ));
        }
        None
    }

    fn path_matches(&self, path_only: &str) -> bool {
        match &self.path {
            PathMatch::Prefix(p) => {
                if self.case_sensitive {
                    path_only.starts_with(p.as_str())
                } else {
                    path_only.len() >= p.len()
                        && path_only.is_char_boundary(p.len())
                        && path_only[..p.len()].eq_ignore_ascii_case(p)
                }
            }
            PathMatch::Exact(p) => {
                if self.case_sensitive {
                    path_only == p
                } else {
                    path_only.eq_ignore_ascii_case(p)
                }
            }
            PathMatch::Regex(r) => r.is_match(path_only),
        }
    }

    /// The cluster for this request and, for a weighted route, the destination picked (by a
    /// random draw over the weights).
    pub fn target(&self) -> Option<(Arc<str>, Option<&Weighted>)> {
        match &self.action {
            Action::Cluster(c) => Some((c.clone(), None)),
            Action::Weighted(ws) => {
                let total: u32 = ws.iter().map(|w| w.weight).sum();
                if total == 0 {
                    return ws.first().map(|w| (w.cluster.clone(), Some(w)));
                }
                let mut n = rand::random::<u32>() % total;
                for w in ws {
                    if n < w.weight {
                        return Some((w.cluster.clone(), Some(w)));
                    }
                    n -= w.weight;
                }
                ws.last().map(|w| (w.cluster.clone(), Some(w)))
            }
            Action::Direct { .. } | Action::Redirect(_) => None,
        }
    }

    /// The cluster for this request (weighted clusters pick by a random draw).
    pub fn cluster(&self) -> Option<Arc<str>> {
        self.target().map(|(c, _)| c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vh(name: &str, domains: &[&str]) -> route::VirtualHost {
        route::VirtualHost {
            name: name.into(),
            domains: domains.iter().map(|d| d.to_string()).collect(),
            routes: vec![route::Route {
                name: "default".into(),
                r#match: Some(route::RouteMatch {
                    path_specifier: Some(route::route_match::PathSpecifier::Prefix("/".into())),
                    ..Default::default()
                }),
                action: Some(route::route::Action::Route(route::RouteAction {
                    cluster_specifier: Some(route::route_action::ClusterSpecifier::Cluster(
                        format!("c-{name}"),
                    )),
                    ..Default::default()
                })),
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    #[test]
    fn virtual_host_selection_follows_envoy() {
        let rc = route::RouteConfiguration {
            name: "8080".into(),
            virtual_hosts: vec![
                vh(
                    "exact",
                    &["server.default.svc.cluster.local:8080", "server"],
                ),
                vh("suffix", &["*.example.com"]),
                vh("prefix", &["api.*"]),
                vh("any", &["*"]),
                // A domain already named: the first virtual host keeps it.
                vh("again", &["server", "b.example.com"]),
            ],
            ..Default::default()
        };
        let t = compile(&rc).unwrap();
        assert_eq!(
            t.vhost("server.default.svc.cluster.local:8080")
                .unwrap()
                .name,
            "exact"
        );
        assert_eq!(t.vhost("SERVER").unwrap().name, "exact", "case-insensitive");
        assert_eq!(t.vhost("a.example.com").unwrap().name, "suffix");
        assert_eq!(t.vhost("api.other").unwrap().name, "prefix");
        assert_eq!(t.vhost("unknown").unwrap().name, "any");
        // An exact domain beats a wildcard, whichever comes first.
        assert_eq!(t.vhost("b.example.com").unwrap().name, "again");

        // Only `*` (an inbound table), twice: the first; without one, no virtual host.
        let rc = route::RouteConfiguration {
            name: "inbound".into(),
            virtual_hosts: vec![vh("first", &["*"]), vh("second", &["*"])],
            ..Default::default()
        };
        assert_eq!(compile(&rc).unwrap().vhost("Any:80").unwrap().name, "first");
        let rc = route::RouteConfiguration {
            name: "none".into(),
            virtual_hosts: vec![vh("suffix", &["*.example.com"])],
            ..Default::default()
        };
        assert!(compile(&rc).unwrap().vhost("other").is_none());
    }

    fn req<'a>(path: &'a str, headers: &'a http::HeaderMap) -> RequestInfo<'a> {
        RequestInfo {
            method: "GET",
            authority: "reviews:9080",
            scheme: "http",
            path,
            headers,
        }
    }

    #[test]
    fn routes_match_path_and_headers_in_order() {
        let mut v = vh("x", &["*"]);
        v.routes.insert(
            0,
            route::Route {
                name: "jason".into(),
                r#match: Some(route::RouteMatch {
                    path_specifier: Some(route::route_match::PathSpecifier::Prefix("/".into())),
                    headers: vec![route::HeaderMatcher {
                        name: "end-user".into(),
                        header_match_specifier: Some(
                            route::header_matcher::HeaderMatchSpecifier::StringMatch(
                                matcher::StringMatcher {
                                    match_pattern: Some(
                                        matcher::string_matcher::MatchPattern::Exact(
                                            "jason".into(),
                                        ),
                                    ),
                                    ..Default::default()
                                },
                            ),
                        ),
                        ..Default::default()
                    }],
                    ..Default::default()
                }),
                action: Some(route::route::Action::Route(route::RouteAction {
                    cluster_specifier: Some(
                        route::route_action::ClusterSpecifier::WeightedClusters(
                            route::WeightedCluster {
                                clusters: vec![route::weighted_cluster::ClusterWeight {
                                    name: "v2".into(),
                                    weight: Some(envoy_types::pb::google::protobuf::UInt32Value {
                                        value: 100,
                                    }),
                                    ..Default::default()
                                }],
                                ..Default::default()
                            },
                        ),
                    ),
                    retry_policy: Some(route::RetryPolicy {
                        retry_on: "connect-failure,refused-stream".into(),
                        num_retries: Some(envoy_types::pb::google::protobuf::UInt32Value {
                            value: 2,
                        }),
                        ..Default::default()
                    }),
                    ..Default::default()
                })),
                ..Default::default()
            },
        );
        let rc = route::RouteConfiguration {
            name: "r".into(),
            virtual_hosts: vec![v],
            ..Default::default()
        };
        let t = compile(&rc).unwrap();
        let vh = t.vhost("any").unwrap();
        let mut h = http::HeaderMap::new();
        h.insert("end-user", http::HeaderValue::from_static("jason"));
        let r = vh
            .routes
            .iter()
            .find(|r| r.matches(&req("/productpage", &h)))
            .unwrap();
        assert_eq!(&*r.name, "jason");
        assert_eq!(r.cluster().as_deref(), Some("v2"));
        let retry = r.retry.as_ref().unwrap();
        assert_eq!(retry.num_retries, 2);
        assert!(retry.on.connect_failure && retry.on.refused_stream && !retry.on.five_xx);
        assert_eq!(retry.on.conditions(), "connect-failure,refused-stream");
        // `weft why` names the condition a route fails, with the same checks as `matches`.
        let jason = &vh.routes[0];
        assert_eq!(jason.mismatch(&req("/productpage", &h)), None);
        assert_eq!(
            jason
                .mismatch(&req("/productpage", &http::HeaderMap::new()))
                .as_deref(),
            Some("header end-user: none, wanted exact \"jason\"")
        );
        let mut other = http::HeaderMap::new();
        other.insert("end-user", http::HeaderValue::from_static("bob"));
        assert_eq!(
            jason.mismatch(&req("/", &other)).as_deref(),
            Some("header end-user: \"bob\", wanted exact \"jason\"")
        );
        let r = vh
            .routes
            .iter()
            .find(|r| r.matches(&req("/productpage?x=1", &http::HeaderMap::new())))
            .unwrap();
        assert_eq!(&*r.name, "default");
        assert!(r.retry.is_none());
        assert_eq!(
            r.timeout,
            Duration::from_secs(15),
            "Envoy's default route timeout when unset"
        );
    }

    #[test]
    fn bad_regex_is_a_config_error_naming_the_route() {
        let mut v = vh("x", &["*"]);
        v.routes[0].r#match = Some(route::RouteMatch {
            path_specifier: Some(route::route_match::PathSpecifier::SafeRegex(
                matcher::RegexMatcher {
                    regex: "(".into(),
                    ..Default::default()
                },
            )),
            ..Default::default()
        });
        let rc = route::RouteConfiguration {
            name: "r".into(),
            virtual_hosts: vec![v],
            ..Default::default()
        };
        let e = compile(&rc).unwrap_err().to_string();
        assert!(
            e.contains("route config r") && e.contains("virtual host x") && e.contains("regex"),
            "{e}"
        );
    }
}
